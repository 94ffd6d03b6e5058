//! TFTP: packet decode, option negotiation of a request, and netascii conversion.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use provbox::tftp::netascii;
use provbox::tftp::options::{self, Limits};
use provbox::tftp::packet::{self, Mode, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = packet::parse(data) else {
        // Whatever it is, netascii must still convert it faithfully.
        check_netascii(data);
        return;
    };
    match p {
        Packet::Rrq(r) | Packet::Wrq(r) => {
            let mode = match &r.mode {
                Mode::Octet => "octet",
                Mode::Netascii => "netascii",
                Mode::Other(m) => m.as_str(),
            };
            let opts: Vec<(&str, &str)> = r
                .options
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            // What we would send as a client reads back as the same request.
            let again = packet::request_bytes(1, &r.filename, mode, &opts);
            match packet::parse(&again) {
                Ok(Packet::Rrq(r2)) => assert_eq!(r, r2),
                other => panic!("request did not round trip: {other:?}"),
            }
            let limits = Limits {
                max_blksize: 1468,
                max_window: 16,
                max_timeout: std::time::Duration::from_secs(5),
            };
            let n = options::negotiate(&r.options, limits, data.len() as u64 * 1000);
            if n.oack.iter().any(|(k, _)| k == "blksize") {
                assert!((options::MIN_BLKSIZE..=limits.max_blksize).contains(&n.blksize));
            } else {
                assert_eq!(n.blksize, options::DEFAULT_BLKSIZE);
            }
            assert!((1..=limits.max_window).contains(&n.windowsize));
            for (k, _) in &n.oack {
                assert!(r.options.iter().any(|(rk, _)| rk == k), "unasked {k}");
            }
            let _ = n.used().count();
            if !n.oack.is_empty() {
                match packet::parse(&packet::oack(&n.oack)) {
                    Ok(Packet::Oack(o)) => assert_eq!(o, n.oack),
                    other => panic!("oack did not round trip: {other:?}"),
                }
            }
        }
        Packet::Data { data: d, .. } => check_netascii(d),
        Packet::Error { code, message } => {
            let e = packet::error(code, &message);
            match packet::parse(&e) {
                Ok(Packet::Error {
                    code: c,
                    message: m,
                }) => {
                    assert_eq!(c, code);
                    assert_eq!(m, message.replace('\0', ""));
                }
                other => panic!("error did not round trip: {other:?}"),
            }
        }
        Packet::Ack(_) | Packet::Oack(_) => {}
    }
});

/// Every LF leaves as CR LF and every CR as CR NUL, nothing else changes.
fn check_netascii(data: &[u8]) {
    // The whole stream, converted in uneven blocks as a transfer would ask for it.
    let mut stream = netascii::Stream::new(Bytes::copy_from_slice(data));
    let len = stream.len() as usize;
    let mut out = Vec::with_capacity(len);
    let step = 1 + data.first().map_or(0, |b| usize::from(*b) % 512);
    while out.len() < len {
        let end = (out.len() + step).min(len);
        out.extend_from_slice(stream.block(out.len()..end));
    }
    let mut back = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'\r' => {
                match out.get(i + 1) {
                    Some(b'\n') => back.push(b'\n'),
                    Some(0) => back.push(b'\r'),
                    other => panic!("bare CR followed by {other:?}"),
                }
                i += 2;
            }
            b'\n' => panic!("LF without CR"),
            b => {
                back.push(b);
                i += 1;
            }
        }
    }
    assert_eq!(back, data);
}
