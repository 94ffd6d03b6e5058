//! DHCP: decode and the engine's decision for a sequence of messages (no sockets). Each
//! reply must scan as a DHCP packet, and each lease to store must read back from its
//! journal record exactly.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use provbox::dhcp::config::{Config, Settings};
use provbox::dhcp::store::{self, Change};
use provbox::dhcp::{self, wire};

const YAML: &str = r#"
enabled: true
interfaces: [br0]
options:
  - {code: 66, string: "http://198.18.0.1/"}
  - {code: 42, ip: 198.18.0.9}
option_sets:
  - {name: cisco, vendor_class: "Cisco SPA", options: [{code: 66, string: cisco}]}
  - {name: poly, mac_prefix: "00:04:f2", options: [{code: 160, string: "http://p/"}]}
subnets:
  - subnet: 198.18.0.0/24
    pools: ["198.18.0.100-198.18.0.103"]
    reservations:
      - {mac: "00:04:f2:00:00:01", address: 198.18.0.57, hostname: lobby}
  - subnet: 198.19.0.0/24
    pools: ["198.19.0.10-198.19.0.20"]
"#;

/// Messages in one input are separated by this (a seed is a few requests in a row).
const SEP: &[u8] = b"--next--";

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        let cfg: Config = serde_saphyr::from_str(YAML).expect("fuzz config parses");
        cfg.compile(&mut |f, _, _, m| panic!("{f}: {m}"))
            .expect("fuzz config compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let engine = dhcp::lab_engine(settings().clone(), true);
    let mut now = 1_900_000_000;
    for msg in split(data).take(16) {
        let Ok(out) = engine.handle(0, msg, now) else {
            now += 1;
            continue;
        };
        if let Some(r) = &out.reply {
            assert!(
                wire::scan(&r.bytes).is_some(),
                "our {} does not scan",
                r.kind
            );
            assert_eq!(r.bytes[0], 2);
        }
        for c in &out.changes {
            if let Change::Put(l) = c
                && let Some(rec) = store::encode(l)
            {
                assert_eq!(
                    store::decode(l.ip, &rec).as_ref(),
                    Some(l),
                    "lease record round trip"
                );
            }
        }
        now += 7;
        for e in engine.sweep(now) {
            let _ = e;
        }
    }
});

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                rest = Some(&r[i + SEP.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}
