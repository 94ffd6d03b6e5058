//! Grandstream: GXP/GRP phones. The User-Agent ends with `DevId` and the MAC.

use super::{CHECK_SYNC, UaExample, UaFormat, Vendor};

pub(crate) const VENDOR: Vendor = Vendor {
    name: "grandstream",
    hints: &["grandstream"],
    user_agents: &[UaFormat {
        pattern: r"^Grandstream\s+(?:Model\s+HW\s+)?(?P<model>\S+)(?:\s+V\S+)?\s+(?:SW\s+)?(?P<version>[0-9]\S*)\s+DevId\s+(?P<mac>[0-9A-Fa-f]{12})",
        examples: &[
            UaExample {
                ua: "Grandstream Model HW GXP2170 V2.4B SW 1.0.11.3 DevId c074ad2bd859",
                model: "GXP2170",
                version: "1.0.11.3",
                mac: Some("c074ad2bd859"),
                serial: None,
            },
            // Older firmware.
            UaExample {
                ua: "Grandstream GXP1625 1.0.4.128 DevId c074ad2bd85a",
                model: "GXP1625",
                version: "1.0.4.128",
                mac: Some("c074ad2bd85a"),
                serial: None,
            },
        ],
    }],
    syslog: &[],
    notify: CHECK_SYNC,
    web: None,
    // `cfg.xml` for every phone, `cfg$MAC.xml` (or binary `cfg$MAC`) per device.
    factory_files: &["cfg.xml"],
    device_files: &["cfgc074ad2bd859.xml", "cfgc074ad2bd859"],
    legacy_tls: None,
    uploads: &[],
};

#[cfg(test)]
vendor_table_tests! {
    syslog: "GXP2170", &[];
    notify: ("Grandstream GXP2170", "check-sync", "check-sync;reboot=true")
}
