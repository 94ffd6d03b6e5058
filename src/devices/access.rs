//! Whose file is this, and may this requester have it.
//!
//! A path belongs to a device when it names a MAC (`SEP00562B043615.cnf.xml`, with
//! `devices.mac_in_path`), or lies under a `devices.private` prefix. Such a file, and
//! every rendered template, goes only to that device, and only when the requester's
//! identity is proven: a verified client certificate always proves it; a lease, the
//! User-Agent or the path prove it only when `devices.trust` says so.

use std::ops::Range;

use super::Mac;
use super::config::Config;
use super::identity::{Identity, mac_in_path};

/// Whose a request key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Anyone's (model files, firmware).
    Public,
    /// The device whose MAC the path names, and where.
    Device(Mac, Range<usize>),
    /// Under a private prefix without a MAC in it: only rendered templates, for the
    /// proven requester, are served from there.
    Private,
}

impl Owner {
    pub fn mac(&self) -> Option<Mac> {
        match self {
            Owner::Device(m, _) => Some(*m),
            _ => None,
        }
    }
    pub fn mac_range(&self) -> Option<Range<usize>> {
        match self {
            Owner::Device(_, r) => Some(r.clone()),
            _ => None,
        }
    }
}

pub fn owner_of(key: &str, cfg: &Config) -> Owner {
    let private = cfg.private.iter().any(|p| {
        let p = p.trim_matches('/').to_ascii_lowercase();
        let k = key.to_ascii_lowercase();
        !p.is_empty() && (k == p || k.starts_with(&format!("{p}/")))
    });
    let named = mac_in_path(key);
    match named {
        Some((m, r)) if cfg.mac_in_path || private => Owner::Device(m, r),
        _ if private => Owner::Private,
        _ => Owner::Public,
    }
}

/// The device a per-device response is for, if `id` may have it: `subject` is the MAC the
/// path names (or `None`: the requester's own). Errors are metric reason labels.
pub fn allow(id: &Identity, subject: Option<Mac>) -> Result<Mac, &'static str> {
    let Some(me) = id.mac else {
        return Err("unidentified");
    };
    if !id.proven {
        return Err(id.doubt.unwrap_or("unproven_identity"));
    }
    match subject {
        Some(s) if s != me => Err("other_device"),
        _ => Ok(me),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confkit::At;
    use crate::devices::identity::Source;

    fn id(mac: Option<&str>, proven: bool) -> Identity {
        Identity {
            mac: mac.map(|m| m.parse().unwrap()),
            source: Source::lease,
            proven,
            doubt: None,
            vendor: None,
            model: None,
            version: None,
            serial: None,
        }
    }

    #[test]
    fn owners() {
        let cfg = Config::default();
        assert_eq!(owner_of("CP-8831-3PCC.cfg", &cfg), Owner::Public);
        assert_eq!(owner_of("y000000000028.cfg", &cfg), Owner::Public);
        assert!(matches!(
            owner_of("SEP00562B043615.cnf.xml", &cfg),
            Owner::Device(..)
        ));
        assert_eq!(owner_of("devices/common.cfg", &cfg), Owner::Private);
        assert_eq!(owner_of("Devices/x", &cfg), Owner::Private);
        assert_eq!(owner_of("devicesx/y", &cfg), Owner::Public);
        let lax = Config {
            mac_in_path: false,
            private: vec![At::new("/staff/".into())],
            ..Config::default()
        };
        assert_eq!(owner_of("SEP00562B043615.cnf.xml", &lax), Owner::Public);
        assert!(matches!(
            owner_of("staff/00562b043615.cfg", &lax),
            Owner::Device(..)
        ));
    }

    #[test]
    fn only_the_proven_owner_gets_its_file() {
        let a: Mac = "00562b043615".parse().unwrap();
        let b: Mac = "0015654aa937".parse().unwrap();
        assert_eq!(allow(&id(Some("00562b043615"), true), Some(a)), Ok(a));
        assert_eq!(
            allow(&id(Some("00562b043615"), true), Some(b)),
            Err("other_device")
        );
        assert_eq!(
            allow(&id(Some("00562b043615"), false), Some(a)),
            Err("unproven_identity")
        );
        assert_eq!(allow(&id(None, false), Some(a)), Err("unidentified"));
        assert_eq!(allow(&id(Some("00562b043615"), true), None), Ok(a));
    }
}
