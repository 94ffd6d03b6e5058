//! DHCP wire: the strict option scan, and the reply encoder fed what was scanned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provbox::dhcp::wire::{self, Header};

fuzz_target!(|data: &[u8]| {
    let Some(opts) = wire::scan(data) else {
        return;
    };
    for (code, _) in &opts {
        assert!(*code != 0 && *code != 255);
    }
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&data[28..44]);
    let h = Header {
        xid: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        flags: u16::from_be_bytes([data[10], data[11]]),
        ciaddr: [data[12], data[13], data[14], data[15]].into(),
        yiaddr: [198, 18, 0, 10].into(),
        siaddr: [0, 0, 0, 0].into(),
        giaddr: [data[24], data[25], data[26], data[27]].into(),
        htype: data[1],
        hlen: data[2],
        chaddr,
        sname: Vec::new(),
        file: Vec::new(),
    };
    // The first option essential, the rest extra, up to the client's size or 576.
    let max = match opts.iter().find(|(c, _)| *c == 57) {
        Some((_, v)) if v.len() == 2 => {
            usize::from(u16::from_be_bytes([v[0], v[1]])).max(wire::DEFAULT_MAX)
        }
        _ => wire::DEFAULT_MAX,
    };
    let (first, rest) = opts
        .split_first()
        .map(|(f, r)| (vec![f], r))
        .unwrap_or((vec![], &[]));
    let essential: Vec<(u8, &[u8])> = first.iter().map(|(c, d)| (*c, d.as_slice())).collect();
    let extra: Vec<(u8, &[u8])> = rest.iter().map(|(c, d)| (*c, d.as_slice())).collect();
    let (reply, left_out) = wire::encode(&h, &essential, &extra, max);
    assert!(reply.len() >= wire::BOOTP_MIN);
    assert_eq!(reply[0], 2);
    let got = wire::scan(&reply).expect("our own reply scans");
    let want: Vec<(u8, Vec<u8>)> = essential
        .iter()
        .chain(extra.iter().filter(|(c, _)| !left_out.contains(c)))
        .map(|(c, d)| (*c, d.to_vec()))
        .collect();
    assert_eq!(got, want);
    if left_out.len() < extra.len() {
        // An extra option went in: it fitted, and so did the END after it.
        assert!(reply.len() <= max.max(wire::BOOTP_MIN));
    }
});
