//! Snom: D series desk phones. The provisioning User-Agent is browser-like and carries the
//! MAC as its last word.

use super::{CHECK_SYNC, UaExample, UaFormat, Vendor};

pub(crate) const VENDOR: Vendor = Vendor {
    name: "snom",
    hints: &["snom"],
    user_agents: &[UaFormat {
        pattern: r"snom(?P<model>[0-9A-Za-z]+)-SIP\s+(?P<version>[0-9][0-9.]*)(?:.*?\b(?P<mac>[0-9A-Fa-f]{12})\b)?",
        examples: &[UaExample {
            ua: "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 010.1.33.33 000413922D24)",
            model: "D785",
            version: "10.1.33.33",
            mac: Some("000413922d24"),
            serial: None,
        }],
    }],
    syslog: &[],
    notify: CHECK_SYNC,
    web: None,
    // `snom$MODEL.htm` per model, `snom$MODEL-$MAC.htm` per device.
    factory_files: &["snomD785.htm"],
    device_files: &["snomD785-000413922D24.htm"],
    legacy_tls: None,
    uploads: &[],
};

#[cfg(test)]
vendor_table_tests! {
    syslog: "D785", &[];
    notify: ("snomD785", "check-sync", "check-sync;reboot=true")
}
