//! TFTP wire format (RFC 1350, options RFC 2347): parsing what clients send and encoding
//! what the server sends. Pure functions over byte slices, so malformed input is tested
//! without sockets. Parsing never panics and never allocates more than the packet holds.

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// TFTP error codes (RFC 1350 section 5, RFC 2347 for 8).
pub mod code {
    pub const NOT_DEFINED: u16 = 0;
    pub const FILE_NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const ILLEGAL_OPERATION: u16 = 4;
    pub const OPTION_REFUSED: u16 = 8;
}

/// Transfer mode named in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    /// `mail` or anything else: refused, not malformed.
    Other(String),
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    /// Option names lower-cased, in the order sent; values as sent.
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: &'a [u8] },
    Ack(u16),
    Error { code: u16, message: String },
    Oack(Vec<(String, String)>),
}

/// Why a packet was dropped; the `reason` label of the malformed-packet counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its opcode needs.
    Truncated,
    /// Opcode outside 1..=6.
    BadOpcode,
    /// A string field without its terminating NUL.
    Unterminated,
    /// An option name with no value after it.
    OptionWithoutValue,
    /// Filename, mode or option not valid UTF-8 (RFC 1350 says netascii).
    NotText,
    /// An empty filename or mode.
    EmptyField,
}

impl Malformed {
    pub fn reason(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::BadOpcode => "bad_opcode",
            Malformed::Unterminated => "unterminated",
            Malformed::OptionWithoutValue => "option_without_value",
            Malformed::NotText => "not_text",
            Malformed::EmptyField => "empty_field",
        }
    }
}

/// Split NUL-terminated strings; the last one must be terminated too.
fn strings(mut rest: &[u8]) -> Result<Vec<&[u8]>, Malformed> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(Malformed::Unterminated)?;
        out.push(&rest[..nul]);
        rest = &rest[nul + 1..];
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, Malformed> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| Malformed::NotText)
}

fn request(body: &[u8]) -> Result<Request, Malformed> {
    let mut parts = strings(body)?;
    // Some boot ROMs pad requests with NULs: empty trailing strings are padding, not options.
    while parts.len() > 2 && parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    if parts.len() < 2 {
        return Err(Malformed::Unterminated);
    }
    if parts[0].is_empty() || parts[1].is_empty() {
        return Err(Malformed::EmptyField);
    }
    let filename = text(parts[0])?;
    let mode = match text(parts[1])?.to_ascii_lowercase().as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::Netascii,
        other => Mode::Other(other.to_string()),
    };
    let opts = &parts[2..];
    if opts.len() % 2 != 0 {
        return Err(Malformed::OptionWithoutValue);
    }
    let mut options = Vec::with_capacity(opts.len() / 2);
    for pair in opts.chunks_exact(2) {
        if pair[0].is_empty() {
            return Err(Malformed::EmptyField);
        }
        options.push((text(pair[0])?.to_ascii_lowercase(), text(pair[1])?));
    }
    Ok(Request {
        filename,
        mode,
        options,
    })
}

pub fn parse(buf: &[u8]) -> Result<Packet<'_>, Malformed> {
    if buf.len() < 2 {
        return Err(Malformed::Truncated);
    }
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    let body = &buf[2..];
    let block = || {
        if body.len() < 2 {
            Err(Malformed::Truncated)
        } else {
            Ok(u16::from_be_bytes([body[0], body[1]]))
        }
    };
    match op {
        RRQ => request(body).map(Packet::Rrq),
        WRQ => request(body).map(Packet::Wrq),
        DATA => Ok(Packet::Data {
            block: block()?,
            data: &body[2..],
        }),
        ACK => Ok(Packet::Ack(block()?)),
        ERROR => {
            let code = block()?;
            // Clients often omit the message's NUL: accept what is there.
            let msg = &body[2..];
            let msg = msg.split(|&b| b == 0).next().unwrap_or(&[]);
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(msg).into_owned(),
            })
        }
        OACK => {
            let parts = strings(body)?;
            if parts.len() % 2 != 0 {
                return Err(Malformed::OptionWithoutValue);
            }
            let mut v = Vec::new();
            for p in parts.chunks_exact(2) {
                v.push((text(p[0])?, text(p[1])?));
            }
            Ok(Packet::Oack(v))
        }
        _ => Err(Malformed::BadOpcode),
    }
}

/// The 4-byte DATA header; the payload is sent beside it (vectored), never copied in.
pub fn data_header(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, DATA as u8, b[0], b[1]]
}

pub fn ack(block: u16) -> Vec<u8> {
    let b = block.to_be_bytes();
    vec![0, ACK as u8, b[0], b[1]]
}

pub fn error(code: u16, message: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + message.len());
    v.extend_from_slice(&ERROR.to_be_bytes());
    v.extend_from_slice(&code.to_be_bytes());
    // A NUL inside would cut the message short on the client: drop such bytes.
    v.extend(message.bytes().filter(|&b| b != 0));
    v.push(0);
    v
}

pub fn oack(options: &[(String, String)]) -> Vec<u8> {
    let mut v = OACK.to_be_bytes().to_vec();
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

/// A request as a client sends it (tests and the benchmark's probes use it).
pub fn request_bytes(op: u16, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = op.to_be_bytes().to_vec();
    for s in [filename, mode] {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_with_options() {
        let b = request_bytes(
            RRQ,
            "/CP-8831.cfg",
            "OCTET",
            &[("BLKSIZE", "1468"), ("tsize", "0")],
        );
        let Packet::Rrq(r) = parse(&b).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(r.filename, "/CP-8831.cfg");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(
            r.options,
            vec![
                ("blksize".to_string(), "1468".to_string()),
                ("tsize".to_string(), "0".to_string())
            ]
        );
    }

    #[test]
    fn modes() {
        let p = |m| match parse(&request_bytes(RRQ, "f", m, &[])).unwrap() {
            Packet::Rrq(r) => r.mode,
            _ => unreachable!(),
        };
        assert_eq!(p("netascii"), Mode::Netascii);
        assert_eq!(p("NetAscii"), Mode::Netascii);
        assert_eq!(p("mail"), Mode::Other("mail".into()));
    }

    #[test]
    fn wrq_ack_data_error() {
        assert!(matches!(
            parse(&request_bytes(WRQ, "x", "octet", &[])),
            Ok(Packet::Wrq(_))
        ));
        assert_eq!(parse(&[0, 4, 0xff, 0xff]), Ok(Packet::Ack(65535)));
        assert_eq!(
            parse(&[0, 3, 0, 1, b'h', b'i']),
            Ok(Packet::Data {
                block: 1,
                data: b"hi"
            })
        );
        assert_eq!(
            parse(&[0, 5, 0, 8, b'n', b'o', 0]),
            Ok(Packet::Error {
                code: 8,
                message: "no".into()
            })
        );
        // No NUL after the message: still an error packet.
        assert_eq!(
            parse(&[0, 5, 0, 1, b'x']),
            Ok(Packet::Error {
                code: 1,
                message: "x".into()
            })
        );
    }

    #[test]
    fn padding_nuls_are_tolerated() {
        let mut b = request_bytes(RRQ, "f", "octet", &[("tsize", "0")]);
        b.extend_from_slice(&[0, 0, 0]);
        let Ok(Packet::Rrq(r)) = parse(&b) else {
            panic!()
        };
        assert_eq!(r.options.len(), 1);
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(&[]), Err(Malformed::Truncated));
        assert_eq!(parse(&[0]), Err(Malformed::Truncated));
        assert_eq!(parse(&[0, 4, 1]), Err(Malformed::Truncated));
        assert_eq!(parse(&[0, 3]), Err(Malformed::Truncated));
        assert_eq!(parse(&[0, 5, 0]), Err(Malformed::Truncated));
        assert_eq!(parse(&[0, 0, 1, 2]), Err(Malformed::BadOpcode));
        assert_eq!(parse(&[0, 9]), Err(Malformed::BadOpcode));
        assert_eq!(parse(&[0xff, 0xff, 0]), Err(Malformed::BadOpcode));
        // Filename without its NUL.
        assert_eq!(parse(b"\x00\x01abc"), Err(Malformed::Unterminated));
        // Filename but no mode.
        assert_eq!(parse(b"\x00\x01abc\x00"), Err(Malformed::Unterminated));
        // Mode without its NUL.
        assert_eq!(parse(b"\x00\x01abc\x00octet"), Err(Malformed::Unterminated));
        assert_eq!(parse(b"\x00\x01\x00octet\x00"), Err(Malformed::EmptyField));
        assert_eq!(
            parse(b"\x00\x01a\x00octet\x00blksize\x00"),
            Err(Malformed::OptionWithoutValue)
        );
        assert_eq!(
            parse(b"\x00\x01a\x00octet\x00blksize\x00512"),
            Err(Malformed::Unterminated)
        );
        assert_eq!(
            parse(b"\x00\x01\xff\xfe\x00octet\x00"),
            Err(Malformed::NotText)
        );
        assert_eq!(
            parse(b"\x00\x01a\x00octet\x00\x00512\x00"),
            Err(Malformed::EmptyField)
        );
    }

    #[test]
    fn every_prefix_of_a_request_parses_or_is_refused() {
        let b = request_bytes(RRQ, "dir/file.cfg", "octet", &[("blksize", "1468")]);
        for n in 0..b.len() {
            // Must not panic; a strict prefix is never a complete request with options.
            let _ = parse(&b[..n]);
        }
        assert!(parse(&b).is_ok());
    }

    #[test]
    fn encoders() {
        assert_eq!(data_header(0x1234), [0, 3, 0x12, 0x34]);
        assert_eq!(ack(7), vec![0, 4, 0, 7]);
        assert_eq!(
            error(1, "File not found"),
            b"\x00\x05\x00\x01File not found\x00"
        );
        assert_eq!(error(0, "a\0b"), b"\x00\x05\x00\x00ab\x00");
        let o = oack(&[("blksize".into(), "1468".into())]);
        assert_eq!(o, b"\x00\x06blksize\x001468\x00");
        assert_eq!(
            parse(&o),
            Ok(Packet::Oack(vec![("blksize".into(), "1468".into())]))
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = String> {
        "[^\u{0}]{1,24}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A request as a client sends it reads back field for field (option names
        /// lower-cased), and any bytes at all parse or are refused without a panic.
        #[test]
        fn requests_round_trip(
            file in field(),
            mode in prop_oneof![Just("octet"), Just("NetASCII"), Just("mail")],
            opts in proptest::collection::vec((field(), field()), 0..5),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let o: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let bytes = request_bytes(RRQ, &file, mode, &o);
            let Ok(Packet::Rrq(r)) = parse(&bytes) else {
                return Err(TestCaseError::fail(format!("not an RRQ: {bytes:?}")));
            };
            prop_assert_eq!(&r.filename, &file);
            let want_mode = match mode {
                "octet" => Mode::Octet,
                "NetASCII" => Mode::Netascii,
                m => Mode::Other(m.to_string()),
            };
            prop_assert_eq!(r.mode, want_mode);
            let want: Vec<(String, String)> =
                opts.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
            prop_assert_eq!(r.options, want);
            let _ = parse(&junk);
        }

        /// An OACK and an ERROR we send read back as sent.
        #[test]
        fn oack_and_error_round_trip(
            opts in proptest::collection::vec((field(), field()), 1..5),
            code in any::<u16>(),
            msg in "[^\u{0}]{0,40}",
        ) {
            let o = oack(&opts);
            prop_assert_eq!(parse(&o), Ok(Packet::Oack(opts.clone())));
            let e = error(code, &msg);
            prop_assert_eq!(parse(&e), Ok(Packet::Error { code, message: msg.clone() }));
        }
    }
}
