//! Bytes on the wire, all handled by provbox itself:
//! - the request's fixed header ([`Fixed::parse`]): dhcproto 0.15 decodes every option
//!   while reading the header, and panics (a `debug_assert`) on some it does not expect,
//!   e.g. option 152 with a length other than 4;
//! - a strict scan of the request's options (dhcproto stops silently at the first option it
//!   cannot parse; a truncated packet must be *dropped*, and option 82 must be echoed
//!   byte for byte), and
//! - the reply encoder: header, options in a deliberate order, RFC 3396 splitting of long
//!   options, the client's maximum message size (57), and padding to the 300-byte BOOTP
//!   minimum. dhcproto's encoder orders options by code and types 150 as one address.

use std::net::Ipv4Addr;

pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header before the magic cookie.
pub const HEADER: usize = 236;
/// Some BOOTP relays and old clients drop anything shorter (RFC 1542).
pub const BOOTP_MIN: usize = 300;
/// What every client must accept: a 576-byte IP datagram minus IP and UDP headers.
pub const DEFAULT_MAX: usize = 576 - 28;

/// The fixed BOOTP header fields of a request that the server reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    /// Seconds since the client began asking (RFC 2131 `secs`).
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
}

impl Fixed {
    /// `None` when the packet is shorter than the fixed header.
    pub fn parse(buf: &[u8]) -> Option<Fixed> {
        let h = buf.get(..HEADER)?;
        let ip = |i: usize| Ipv4Addr::new(h[i], h[i + 1], h[i + 2], h[i + 3]);
        Some(Fixed {
            op: h[0],
            htype: h[1],
            hlen: h[2],
            xid: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            secs: u16::from_be_bytes([h[8], h[9]]),
            flags: u16::from_be_bytes([h[10], h[11]]),
            ciaddr: ip(12),
            giaddr: ip(24),
            chaddr: h[28..44].try_into().expect("16 bytes"),
        })
    }
}

/// Options of a request in wire order; instances of one code are concatenated (RFC 3396).
/// `None` when the option area runs past the end of the packet or has no magic cookie.
pub fn scan(buf: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    if buf.len() < HEADER + 4 || buf[HEADER..HEADER + 4] != MAGIC {
        return None;
    }
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut i = HEADER + 4;
    while i < buf.len() {
        let code = buf[i];
        match code {
            0 => i += 1,
            255 => return Some(out),
            _ => {
                let len = *buf.get(i + 1)? as usize;
                let data = buf.get(i + 2..i + 2 + len)?;
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, d)) => d.extend_from_slice(data),
                    None => out.push((code, data.to_vec())),
                }
                i += 2 + len;
            }
        }
    }
    // No END option: accept (some clients omit it) as long as nothing was cut.
    Some(out)
}

/// The fixed fields of a reply.
#[derive(Debug, Clone)]
pub struct Header {
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub htype: u8,
    pub hlen: u8,
    pub chaddr: [u8; 16],
    /// Server host name (64 bytes, NUL-terminated when shorter); empty: all zero.
    pub sname: Vec<u8>,
    /// Boot file name (128 bytes, NUL-terminated when shorter); empty: all zero.
    pub file: Vec<u8>,
}

/// Longest `sname` / `file` that still leaves the terminating NUL.
pub const SNAME_MAX: usize = 63;
pub const FILE_MAX: usize = 127;

fn encoded_len(data_len: usize) -> usize {
    // Each started 255-byte chunk costs code + length.
    data_len + 2 * data_len.div_ceil(255).max(1)
}

/// Encode a BOOTREPLY. `essential` options always go in (they are small); `extra` ones
/// are added in order while they fit in `max_len`; the ones left out are returned.
pub fn encode(
    h: &Header,
    essential: &[(u8, &[u8])],
    extra: &[(u8, &[u8])],
    max_len: usize,
) -> (Vec<u8>, Vec<u8>) {
    let mut b = Vec::with_capacity(max_len.max(BOOTP_MIN));
    b.push(2); // BOOTREPLY
    b.push(h.htype);
    b.push(h.hlen);
    b.push(0); // hops
    b.extend_from_slice(&h.xid.to_be_bytes());
    b.extend_from_slice(&[0, 0]); // secs
    b.extend_from_slice(&h.flags.to_be_bytes());
    for a in [h.ciaddr, h.yiaddr, h.siaddr, h.giaddr] {
        b.extend_from_slice(&a.octets());
    }
    b.extend_from_slice(&h.chaddr);
    // sname at 44..108, file at 108..236; the caller keeps them short enough for a NUL.
    let sname = &h.sname[..h.sname.len().min(SNAME_MAX)];
    b.extend_from_slice(sname);
    b.resize(108, 0);
    let file = &h.file[..h.file.len().min(FILE_MAX)];
    b.extend_from_slice(file);
    b.resize(HEADER, 0);
    b.extend_from_slice(&MAGIC);
    let put = |b: &mut Vec<u8>, code: u8, data: &[u8]| {
        if data.is_empty() {
            b.extend_from_slice(&[code, 0]);
        }
        for chunk in data.chunks(255) {
            b.push(code);
            b.push(chunk.len() as u8);
            b.extend_from_slice(chunk);
        }
    };
    for (code, data) in essential {
        put(&mut b, *code, data);
    }
    let mut left_out = Vec::new();
    // Reserve one byte for END; the relay-agent echo (82) is among `essential`, last.
    for (code, data) in extra {
        if b.len() + encoded_len(data.len()) < max_len {
            put(&mut b, *code, data);
        } else {
            left_out.push(*code);
        }
    }
    b.push(255);
    if b.len() < BOOTP_MIN {
        b.resize(BOOTP_MIN, 0);
    }
    (b, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opts: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0] = 1;
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(opts);
        b
    }

    #[test]
    fn scan_concatenates_and_rejects_truncation() {
        let r = request(&[53, 1, 1, 0, 43, 2, 1, 2, 43, 1, 3, 255]);
        let o = scan(&r).unwrap();
        assert_eq!(o, vec![(53, vec![1]), (43, vec![1, 2, 3])]);
        assert!(scan(&request(&[53, 1, 1, 60, 10, b'a'])).is_none());
        assert!(scan(&r[..200]).is_none());
        let mut bad = r.clone();
        bad[HEADER] = 0;
        assert!(scan(&bad).is_none());
    }

    #[test]
    fn reply_is_padded_split_and_bounded() {
        let z = Ipv4Addr::UNSPECIFIED;
        let h = Header {
            xid: 7,
            flags: 0,
            ciaddr: z,
            yiaddr: z,
            siaddr: z,
            giaddr: z,
            htype: 1,
            hlen: 6,
            chaddr: [0; 16],
            sname: b"prov".to_vec(),
            file: vec![b'f'; 200],
        };
        let (b, left) = encode(&h, &[(53, &[2])], &[], DEFAULT_MAX);
        assert_eq!(b.len(), BOOTP_MIN);
        assert!(left.is_empty());
        assert_eq!(&b[240..244], &[53, 1, 2, 255]);
        // sname and file sit in their fields, cut to leave a NUL.
        assert_eq!(&b[44..49], b"prov\0");
        assert_eq!(&b[108..108 + FILE_MAX], &[b'f'; FILE_MAX][..]);
        assert_eq!(b[108 + FILE_MAX], 0);
        let f = Fixed::parse(&b).unwrap();
        assert_eq!((f.op, f.htype, f.hlen, f.xid), (2, 1, 6, 7));
        assert!(Fixed::parse(&b[..HEADER - 1]).is_none());
        // A 300-byte option is split into 255 + 45 (RFC 3396) and reassembles.
        let long = vec![b'a'; 300];
        let (b, left) = encode(&h, &[(53, &[2])], &[(66, &long)], 1400);
        assert!(left.is_empty());
        let o = scan(&{
            let mut r = b.clone();
            r[0] = 1;
            r
        })
        .unwrap();
        assert_eq!(o[1], (66, long.clone()));
        assert_eq!(b[243], 66);
        assert_eq!(b[244], 255);
        // Over the client's limit: the big option is left out, the message stays valid.
        let (b, left) = encode(&h, &[(53, &[2])], &[(66, &long), (3, &[1, 2, 3, 4])], 500);
        assert_eq!(left, vec![66]);
        assert!(b.len() <= 500);
        assert_eq!(&b[240..249], &[53, 1, 2, 3, 4, 1, 2, 3, 4]);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            xid: 7,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: [198, 18, 0, 10].into(),
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            htype: 1,
            hlen: 6,
            chaddr: [0; 16],
            sname: Vec::new(),
            file: Vec::new(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Options of any length (RFC 3396 splits the long ones) read back from our reply
        /// in the order given; the ones left out are exactly the ones missing, and a
        /// reply with an extra option in it fits the size asked for.
        #[test]
        fn options_round_trip_through_a_reply(
            opts in proptest::collection::btree_map(1u8..255, proptest::collection::vec(any::<u8>(), 0..700), 1..8),
            essential_n in 0usize..3,
            max in 300usize..1500,
        ) {
            let opts: Vec<(u8, Vec<u8>)> = opts.into_iter().collect();
            let split = essential_n.min(opts.len());
            let essential: Vec<(u8, &[u8])> = opts[..split].iter().map(|(c, d)| (*c, d.as_slice())).collect();
            let extra: Vec<(u8, &[u8])> = opts[split..].iter().map(|(c, d)| (*c, d.as_slice())).collect();
            let (b, left) = encode(&header(), &essential, &extra, max);
            let got = scan(&b).expect("our reply scans");
            let want: Vec<(u8, Vec<u8>)> = essential
                .iter()
                .chain(extra.iter().filter(|(c, _)| !left.contains(c)))
                .map(|(c, d)| (*c, d.to_vec()))
                .collect();
            prop_assert_eq!(got, want);
            prop_assert!(b.len() >= BOOTP_MIN);
            if left.len() < extra.len() {
                prop_assert!(b.len() <= max.max(BOOTP_MIN));
            }
        }

        /// Truncating a request anywhere inside an option makes the scan refuse it.
        #[test]
        fn a_cut_option_is_refused(data in proptest::collection::vec(any::<u8>(), 1..200), cut in 1usize..200) {
            let mut b = vec![0u8; HEADER];
            b.extend_from_slice(&MAGIC);
            b.push(43);
            b.push(data.len() as u8);
            b.extend_from_slice(&data);
            let cut = cut.min(data.len() + 1);
            prop_assert!(scan(&b[..b.len() - cut]).is_none());
            prop_assert_eq!(scan(&b), Some(vec![(43, data)]));
        }
    }
}
