//! Cisco: the SPA series (formerly Linksys/Sipura) and the 3PCC multiplatform phones
//! (`CP-8831-3PCC`). The syslog phrases are the defaults of their "Log … Msg" templates.

use super::{Job, LegacyTls, Notify, Outcome, Phrase, UaExample, UaFormat, Vendor, WebCommand};

/// Cisco/Linksys phones resync on `Event: resync` and reboot on `Event: reboot`.
pub(crate) const NOTIFY: Notify = Notify {
    resync: "resync",
    reboot: "reboot",
};

/// `http://<phone>/admin/resync[?url]`, `/admin/reboot`.
pub(crate) const WEB: WebCommand = WebCommand {
    resync: "/admin/resync",
    reboot: "/admin/reboot",
    // "Firmware Upgrade With a Browser Command": /admin/upgrade?<scheme>://<server>/<path>
    upgrade: "/admin/upgrade",
};

pub(crate) const VENDOR: Vendor = Vendor {
    name: "cisco",
    hints: &["cisco", "spa", "linksys", "cp-", "sipura"],
    user_agents: &[
        UaFormat {
            pattern: r"^Cisco-(?P<model>CP-[0-9A-Za-z]+(?:-[0-9A-Za-z]+)*)/(?P<version>[^\s(]+)\s*\((?P<mac>[0-9A-Fa-f]{12})\)",
            examples: &[UaExample {
                ua: "Cisco-CP-8831-3PCC/9.3.3 (00562b043615)",
                model: "CP-8831-3PCC",
                version: "9.3.3",
                mac: Some("00562b043615"),
                serial: None,
            }],
        },
        UaFormat {
            pattern: r"^Cisco/(?P<model>[A-Z]+[0-9][0-9A-Za-z]*)-(?P<version>[^\s(]+)\s*\((?P<mac>[0-9A-Fa-f]{12})\)(?:\((?P<serial>[0-9A-Za-z]+)\))?",
            examples: &[
                UaExample {
                    ua: "Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400FK)",
                    model: "SPA508G",
                    version: "7.4.4",
                    mac: Some("0002fdff2103"),
                    serial: Some("CBT141400FK"),
                },
                UaExample {
                    ua: "Cisco/SPA504G-7.6.2 (000E08AABBCC)",
                    model: "SPA504G",
                    version: "7.6.2",
                    mac: Some("000e08aabbcc"),
                    serial: None,
                },
            ],
        },
    ],
    syslog: &[
        Phrase {
            text: "requesting resync",
            job: Job::Resync,
            outcome: Outcome::Requested,
        },
        Phrase {
            text: "successful resync",
            job: Job::Resync,
            outcome: Outcome::Succeeded,
        },
        Phrase {
            text: "resync failed",
            job: Job::Resync,
            outcome: Outcome::Failed,
        },
        Phrase {
            text: "requesting upgrade",
            job: Job::Upgrade,
            outcome: Outcome::Requested,
        },
        Phrase {
            text: "successful upgrade",
            job: Job::Upgrade,
            outcome: Outcome::Succeeded,
        },
        Phrase {
            text: "upgrade failed",
            job: Job::Upgrade,
            outcome: Outcome::Failed,
        },
    ],
    notify: NOTIFY,
    web: Some(WEB),
    // SPA: `/spa$PSN.cfg`; 3PCC: `/$PSN.cfg`.
    factory_files: &["spa504g.cfg", "CP-8831-3PCC.cfg"],
    device_files: &["SEP00562B043615.cnf.xml", "00562b043615.xml"],
    // SPA and older 3PCC firmware: TLS 1.0, RSA key exchange, AES-CBC.
    legacy_tls: Some(LegacyTls {
        max_protocol: "tls1.0",
        ciphers: &["AES256-SHA", "AES128-SHA"],
    }),
    uploads: &[],
};

#[cfg(test)]
vendor_table_tests! {
    syslog: "SPA504G", &[
        ("Requesting resync", "resync_requested"),
        ("Successful resync", "resync_ok"),
        ("Resync failed", "resync_failed"),
        ("Requesting upgrade", "upgrade_requested"),
        ("Successful upgrade", "upgrade_ok"),
        ("Upgrade failed", "upgrade_failed"),
    ];
    notify:
        ("SPA504G", "resync", "reboot"),
        ("CP-8841-3PCC", "resync", "reboot"),
        ("Linksys SPA942", "resync", "reboot"),
}
