//! DNS: the UDP query path without sockets (fast-path key and cache, hickory's parse, the
//! handler, the cache fill). Every answer must decode as a DNS message with our ID.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use provbox::devices::Registry;
use provbox::dns::offline::{Offline, Outcome};

const YAML: &str = r#"
enabled: true
ttl: 60s
zones:
  - name: lab.test
    records:
      - {name: prov, a: [198.18.0.1, 198.18.0.2, 198.18.0.3], aaaa: ["2001:db8::1"]}
      - {name: "@", a: [198.18.0.1]}
      - {name: tftp, a: [198.18.0.4]}
leases: {domain: phones.lab.test, ttl: 60s}
"#;

fn offline() -> &'static Offline {
    static O: OnceLock<Offline> = OnceLock::new();
    O.get_or_init(|| {
        let cfg = serde_saphyr::from_str(YAML).expect("fuzz dns config parses");
        Offline::new(cfg, Arc::new(Registry::default())).expect("zones build")
    })
}

fuzz_target!(|data: &[u8]| {
    // Twice: the second time the fast path may answer from what the first one taught it.
    for _ in 0..2 {
        match offline().query(data) {
            Outcome::Answered(a) | Outcome::Replayed(a) => check(data, &a),
            Outcome::Dropped => {}
        }
    }
});

fn check(query: &[u8], answer: &[u8]) {
    assert!(answer.len() >= 12, "answer shorter than a header");
    assert_eq!(answer[..2], query[..2], "answer with another ID");
    assert!(answer[2] & 0x80 != 0, "answer without QR");
    if let Err(e) = provbox::dns::offline::decode(answer) {
        panic!("our answer does not decode: {e}");
    }
}
