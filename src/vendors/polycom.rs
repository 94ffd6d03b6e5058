//! Polycom (Poly): SoundPoint IP and VVX. The provisioning User-Agent often has no MAC;
//! the lease, certificate or requested file name has to provide it.

use super::{CHECK_SYNC, LegacyTls, UaExample, UaFormat, Vendor};

pub(crate) const VENDOR: Vendor = Vendor {
    name: "polycom",
    hints: &["polycom"],
    user_agents: &[UaFormat {
        pattern: r"Polycom[A-Za-z]*-(?P<model>[A-Za-z]+_[0-9A-Za-z]+)-UA/(?P<version>[0-9][0-9A-Za-z.]*)(?:.*?\(SN:(?P<mac>[0-9A-Fa-f]{12})\))?",
        examples: &[
            UaExample {
                ua: "FileTransport PolycomVVX-VVX_400-UA/5.9.5.0614 Type/Application",
                model: "VVX_400",
                version: "5.9.5.0614",
                mac: None,
                serial: None,
            },
            UaExample {
                ua: "FileTransport PolycomVVX-VVX_410-UA/5.9.0.9373 (SN:64167f0a0b0c) Type/Application",
                model: "VVX_410",
                version: "5.9.0.9373",
                mac: Some("64167f0a0b0c"),
                serial: None,
            },
            UaExample {
                ua: "FileTransport PolycomSoundPointIP-SPIP_550-UA/4.0.15.1009 Type/Application",
                model: "SPIP_550",
                version: "4.0.15.1009",
                mac: None,
                serial: None,
            },
        ],
    }],
    syslog: &[],
    notify: CHECK_SYNC,
    web: None,
    // The master file `000000000000.cfg` (the all-zero MAC: every phone), then `$MAC.cfg`.
    factory_files: &["000000000000.cfg"],
    device_files: &["0004f2abcdef.cfg", "0004f2abcdef-phone.cfg"],
    // SoundPoint IP: TLS 1.0, RSA or DHE key exchange, AES-CBC.
    legacy_tls: Some(LegacyTls {
        max_protocol: "tls1.0",
        ciphers: &["DHE-RSA-AES256-SHA", "AES256-SHA"],
    }),
    // Logs, local overrides (read back at the next boot), call lists and directories.
    uploads: &[
        "$MA-app.log",
        "$MA-boot.log",
        "$MA-phone.cfg",
        "$MA-calls.xml",
        "$MA-directory.xml",
    ],
};

/// Uploads that carry the phone's own parameters, compared with the profile it was served
/// (`verify`): the override file the phone writes when its settings are changed on the
/// phone (menu or web UI) and reads back at boot; its parameters win over the served ones,
/// so each one that differs from the profile is drift. (Logs, call lists and directories
/// carry no parameters.)
pub(crate) const CONFIG_REPORTS: &[&str] = &["$MA-phone.cfg"];

#[cfg(test)]
vendor_table_tests! {
    syslog: "VVX_400", &[];
    notify: ("Polycom-VVX_400", "check-sync", "check-sync;reboot=true")
}
