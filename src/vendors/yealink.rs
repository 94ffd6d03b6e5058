//! Yealink: the T series (`SIP-T46G`). The User-Agent carries the MAC with colons.

use super::{CHECK_SYNC, LegacyTls, UaExample, UaFormat, Vendor};

pub(crate) const VENDOR: Vendor = Vendor {
    name: "yealink",
    hints: &["yealink"],
    user_agents: &[UaFormat {
        pattern: r"^Yealink\s+(?P<model>\S+)\s+(?P<version>[0-9][0-9.]*)\s+(?P<mac>(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})",
        examples: &[
            UaExample {
                ua: "Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37",
                model: "SIP-T46G",
                version: "28.72.0.1",
                mac: Some("0015654aa937"),
                serial: None,
            },
            UaExample {
                ua: "Yealink SIP-T21P_E2 52.84.0.15 80:5e:c0:11:22:33",
                model: "SIP-T21P_E2",
                version: "52.84.0.15",
                mac: Some("805ec0112233"),
                serial: None,
            },
        ],
    }],
    syslog: &[],
    notify: CHECK_SYNC,
    web: None,
    // `y0000000000NN.cfg` per model (28 = T46G); `$MAC.cfg` per device.
    factory_files: &["y000000000028.cfg"],
    device_files: &["001565aabbcc.cfg"],
    // T2x firmware before V80: TLS 1.0 with AES-CBC.
    legacy_tls: Some(LegacyTls {
        max_protocol: "tls1.0",
        ciphers: &["AES256-SHA", "AES128-SHA"],
    }),
    // Local settings changed on the phone (read back at the next boot), and its logs.
    uploads: &["$MA-local.cfg", "$MA-sys.log", "$MA-boot.log"],
};

/// Uploads that carry the phone's own parameters, compared with the profile it was served
/// (`verify`): `$MA-local.cfg`, the settings changed on the phone (web UI or keypad) that
/// it uploads when `static.auto_provision.custom.sync` is on and that win over the
/// provisioned ones at the next boot; each one that differs from the profile is drift.
pub(crate) const CONFIG_REPORTS: &[&str] = &["$MA-local.cfg"];

#[cfg(test)]
vendor_table_tests! {
    syslog: "SIP-T46G", &[];
    notify: ("Yealink SIP-T46G", "check-sync", "check-sync;reboot=true")
}
