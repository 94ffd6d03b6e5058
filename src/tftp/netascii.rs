//! Netascii (RFC 1350 via RFC 764): line ends go out as CR LF and a bare CR as CR NUL.

use bytes::Bytes;

/// The body as a netascii client must receive it. Octet transfers never come here and
/// keep slicing the catalog's bytes; only netascii pays for one converted copy.
pub fn encode(body: &Bytes) -> Bytes {
    let extra = body.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    if extra == 0 {
        return body.clone();
    }
    let mut out = Vec::with_capacity(body.len() + extra);
    for &b in body.iter() {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            b => out.push(b),
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_line_ends_and_bare_cr() {
        let b = Bytes::from_static(b"a\nb\rc\r\n");
        assert_eq!(&encode(&b)[..], b"a\r\nb\r\0c\r\0\r\n");
    }

    #[test]
    fn text_without_line_ends_is_not_copied() {
        let b = Bytes::from_static(b"plain");
        let e = encode(&b);
        assert_eq!(e.as_ptr(), b.as_ptr());
    }
}
