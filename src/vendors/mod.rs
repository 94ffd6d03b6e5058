//! What provbox knows about each phone vendor, as data: one file per vendor holding its
//! User-Agent formats, syslog phrases, SIP NOTIFY events, web commands, factory file
//! names, the hints that name it in a model or DHCP vendor class, and its TLS needs.
//!
//! `devices::identity` (User-Agents), `syslog::parse` (phrases) and `resync` (events)
//! read these tables and have no vendor branches of their own. Adding a vendor is one new
//! file here, its `mod` line and its entry in [`VENDORS`]; its table test comes with it.
//! This module imports nothing from the rest of the crate.

/// The table test of one vendor file: `tests::{user_agents, syslog_phrases, resync_event,
/// files_and_tls}` over its `VENDOR`, given the model its syslog lines carry, its phrase
/// examples and the (User-Agent, event, NOTIFY sent) cases of its resync.
#[cfg(test)]
macro_rules! vendor_table_tests {
    (
        syslog: $model:literal, $phrases:expr;
        notify: $(($ua:literal, $event:literal, $sent:literal)),+ $(,)?
    ) => {
        mod tests {
            use super::super::check;
            use super::VENDOR;

            #[test]
            fn user_agents() {
                check::user_agents(&VENDOR);
            }

            #[test]
            fn syslog_phrases() {
                check::syslog(&VENDOR, $model, $phrases);
            }

            #[test]
            fn resync_event() {
                $(check::notify(&VENDOR, $ua, $event, $sent);)+
            }

            #[test]
            fn files_and_tls() {
                check::files(&VENDOR);
                check::tls(&VENDOR);
            }
        }
    };
}

pub(crate) mod cisco;
pub(crate) mod grandstream;
pub(crate) mod polycom;
pub(crate) mod snom;
pub(crate) mod yealink;

/// Every vendor, in the order their User-Agent formats are tried and their hints are
/// matched (the first match wins; Cisco's short hints such as `spa` go first so they keep
/// deciding a NOTIFY event as they always did).
pub(crate) const VENDORS: &[&Vendor] = &[
    &cisco::VENDOR,
    &yealink::VENDOR,
    &polycom::VENDOR,
    &grandstream::VENDOR,
    &snom::VENDOR,
];

/// One vendor's knowledge. Some fields (factory and device file names, legacy TLS needs,
/// web commands) are knowledge only the table tests read so far, or nothing yet (`web`:
/// `resync` names `cisco::WEB` directly).
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct Vendor {
    /// Lowercase: the `vendor` an identity reports.
    pub name: &'static str,
    /// Lowercase substrings of a model, a DHCP vendor class (option 60) or a User-Agent
    /// that say a device is this vendor's.
    pub hints: &'static [&'static str],
    /// User-Agent formats, tried in order.
    pub user_agents: &'static [UaFormat],
    /// Phrases in the phone's provisioning syslog lines.
    pub syslog: &'static [Phrase],
    /// The SIP NOTIFY events that make the phone resync or reboot.
    pub notify: Notify,
    /// The phone's own web commands, where it has them.
    pub web: Option<WebCommand>,
    /// Files every phone of a model asks for before it has its own configuration: shared
    /// by many devices, so they name no MAC.
    pub factory_files: &'static [&'static str],
    /// Examples of per-device file names: they name the device's MAC.
    pub device_files: &'static [&'static str],
    /// What the oldest firmware needs from the `https_legacy` listener; `None` where no
    /// need beyond rustls (TLS 1.2 with ECDHE/GCM) is known.
    pub legacy_tls: Option<LegacyTls>,
    /// File names the phone writes back (HTTP PUT, TFTP WRQ), `$MA` standing for its MAC
    /// (12 hex digits): what `uploads.patterns` defaults to.
    pub uploads: &'static [&'static str],
}

/// One User-Agent format. `pattern` is a regex with named groups `model`, `version` and,
/// where the vendor sends them, `mac` and `serial`.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // the examples are for the table test
pub(crate) struct UaFormat {
    pub pattern: &'static str,
    /// Real User-Agents of this form and what they must parse to (the table test).
    pub examples: &'static [UaExample],
}

/// A User-Agent and what it says.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the table test
pub(crate) struct UaExample {
    pub ua: &'static str,
    pub model: &'static str,
    pub version: &'static str,
    /// 12 lowercase hex digits.
    pub mac: Option<&'static str>,
    pub serial: Option<&'static str>,
}

/// What a phone reports doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    Resync,
    Upgrade,
}

/// How far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `… Requesting resync $URL`: a URL follows.
    Requested,
    /// `… Successful resync $URL [-- $ERR]`: a URL and maybe a detail follow.
    Succeeded,
    /// `… Resync failed: $ERR`: the reason follows.
    Failed,
}

/// A syslog phrase, matched case-insensitively anywhere after `$PN $MAC --`.
#[derive(Debug)]
pub(crate) struct Phrase {
    /// Lowercase.
    pub text: &'static str,
    pub job: Job,
    pub outcome: Outcome,
}

/// SIP NOTIFY `Event:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notify {
    pub resync: &'static str,
    pub reboot: &'static str,
}

/// What most phones understand, and what an unknown device is sent.
pub(crate) const CHECK_SYNC: Notify = Notify {
    resync: "check-sync",
    reboot: "check-sync;reboot=true",
};

/// Paths of a phone's web commands (`http://<phone><path>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WebCommand {
    pub resync: &'static str,
    pub reboot: &'static str,
    /// Followed by `?<firmware URL>`.
    pub upgrade: &'static str,
}

/// TLS the legacy listener must offer for this vendor's oldest firmware.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the table test
pub(crate) struct LegacyTls {
    /// The newest protocol version that firmware speaks.
    pub max_protocol: &'static str,
    /// OpenSSL names of the suites it offers: the listener must share at least one.
    pub ciphers: &'static [&'static str],
}

/// The vendor a model, vendor class or User-Agent names, if any.
pub(crate) fn by_hint(text: &str) -> Option<&'static Vendor> {
    let lower = text.to_ascii_lowercase();
    VENDORS
        .iter()
        .copied()
        .find(|v| v.hints.iter().any(|h| lower.contains(h)))
}

/// Every syslog phrase of every vendor.
pub(crate) fn phrases() -> impl Iterator<Item = &'static Phrase> {
    VENDORS.iter().flat_map(|v| v.syslog.iter())
}

#[cfg(test)]
pub(crate) mod check {
    //! The table test every vendor runs on its own table.

    use super::*;
    use crate::devices::identity::{mac_in_path, parse_user_agent};
    use crate::status::PhoneEvent;

    /// Each User-Agent example parses to this vendor with its model, version, MAC and
    /// serial (so no earlier vendor's format swallows it).
    pub(crate) fn user_agents(v: &Vendor) {
        assert!(
            !v.user_agents.is_empty(),
            "{}: no User-Agent format",
            v.name
        );
        for f in v.user_agents {
            assert!(
                !f.examples.is_empty(),
                "{}: {} has no example",
                v.name,
                f.pattern
            );
            for e in f.examples {
                let u = parse_user_agent(e.ua).unwrap_or_else(|| panic!("not parsed: {}", e.ua));
                assert_eq!(u.vendor, v.name, "{}", e.ua);
                assert_eq!(u.model.as_deref(), Some(e.model), "{}", e.ua);
                assert_eq!(u.version.as_deref(), Some(e.version), "{}", e.ua);
                assert_eq!(u.mac.map(|m| m.to_hex()).as_deref(), e.mac, "{}", e.ua);
                assert_eq!(u.serial.as_deref(), e.serial, "{}", e.ua);
                // The User-Agent names the vendor for the NOTIFY choice too.
                assert_eq!(by_hint(e.ua).map(|x| x.name), Some(v.name), "{}", e.ua);
            }
        }
    }

    /// Each phrase, in the line form phones send, gives `expect` (pairs of phrase and
    /// event kind, covering the whole table).
    pub(crate) fn syslog(v: &Vendor, model: &str, expect: &[(&str, &str)]) {
        assert_eq!(
            v.syslog.len(),
            expect.len(),
            "{}: every phrase is tested",
            v.name
        );
        for (phrase, kind) in expect {
            assert!(
                v.syslog
                    .iter()
                    .any(|p| p.text == phrase.to_ascii_lowercase()),
                "{phrase} is in the table"
            );
            let line = format!("{model} 000e08aabbcc -- {phrase} http://198.18.0.1/a.cfg");
            let r = crate::syslog::parse::recognise(&line)
                .unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!(r.mac.to_hex(), "000e08aabbcc");
            assert_eq!(r.model.as_deref(), Some(model));
            assert_eq!(r.event.kind(), *kind, "{line}");
            if let PhoneEvent::Requested { url, .. } | PhoneEvent::Succeeded { url, .. } = &r.event
            {
                assert_eq!(url, "http://198.18.0.1/a.cfg");
            }
        }
    }

    /// `resync` sends this vendor's events when the model or vendor class names it.
    pub(crate) fn notify(v: &Vendor, model: &str, resync: &'static str, reboot: &'static str) {
        assert_eq!(v.notify, Notify { resync, reboot });
        let c = crate::resync::Config::default();
        assert_eq!(crate::resync::event_for(&c, Some(model), false), resync);
        assert_eq!(crate::resync::event_for(&c, Some(model), true), reboot);
    }

    /// Factory files are shared (no MAC in them, so served to anyone); device files name
    /// their device.
    pub(crate) fn files(v: &Vendor) {
        assert!(!v.factory_files.is_empty() && !v.device_files.is_empty());
        for u in v.uploads {
            assert_eq!(
                u.matches("$MA").count(),
                1,
                "{}: {u} names the phone once",
                v.name
            );
            assert!(
                !u.contains('/') && !u.starts_with('.'),
                "{}: {u} is a file name",
                v.name
            );
        }
        for f in v.factory_files {
            assert_eq!(mac_in_path(f), None, "{}: {f} is shared", v.name);
        }
        for f in v.device_files {
            assert!(mac_in_path(f).is_some(), "{}: {f} names a device", v.name);
        }
    }

    /// The legacy listener's default suites include one this vendor's old firmware offers.
    pub(crate) fn tls(v: &Vendor) {
        if let Some(t) = &v.legacy_tls {
            let ours: Vec<&str> = crate::tls_legacy::DEFAULT_CIPHERS.split(':').collect();
            assert!(
                t.ciphers.iter().any(|c| ours.contains(c)),
                "{}: none of {:?} in the legacy defaults",
                v.name,
                t.ciphers
            );
            // The listener's default oldest version is no newer than what the phone speaks.
            use crate::tls_legacy::MinProtocol;
            let speaks = match t.max_protocol {
                "tls1.0" => MinProtocol::Tls10,
                "tls1.1" => MinProtocol::Tls11,
                other => panic!("{}: {other} needs no legacy listener", v.name),
            };
            assert!(MinProtocol::default() as u8 <= speaks as u8, "{}", v.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_vendor_has_a_file() {
        let mut names: Vec<&str> = VENDORS.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VENDORS.len());
        assert_eq!(
            names,
            ["cisco", "grandstream", "polycom", "snom", "yealink"]
        );
        for v in VENDORS {
            assert!(v.hints.iter().all(|h| *h == h.to_ascii_lowercase()));
            assert!(
                v.syslog
                    .iter()
                    .all(|p| p.text == p.text.to_ascii_lowercase())
            );
        }
    }

    #[test]
    fn unknown_devices_get_check_sync() {
        assert!(by_hint("curl/8.5.0").is_none());
        let c = crate::resync::Config::default();
        assert_eq!(
            crate::resync::event_for(&c, Some("curl/8.5.0"), false),
            CHECK_SYNC.resync
        );
        assert_eq!(crate::resync::event_for(&c, None, true), CHECK_SYNC.reboot);
    }
}
