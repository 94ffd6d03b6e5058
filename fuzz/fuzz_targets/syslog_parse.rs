//! syslog: the line parser (RFC 5424, RFC 3164 and the phones' bare lines), and the
//! recogniser of the phones' resync and upgrade reports.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provbox::syslog::parse;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let m = parse::parse(&line);
    if let Some(p) = m.pri {
        assert!(p <= 191, "priority {p}");
    }
    for s in [&m.hostname, &m.app].into_iter().flatten() {
        assert!(!s.is_empty() && !s.contains(' '), "field {s:?}");
    }
    // What the parser returns is part of the line it was given.
    assert!(
        line.contains(m.msg.as_str()),
        "message {:?} not in the line",
        m.msg
    );
    // The phones' resync and upgrade reports, recognised anywhere in the message.
    let _ = parse::recognise(&m.msg);
});
