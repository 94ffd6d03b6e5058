//! The `tftp:` section of the configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::options::{DEFAULT_BLKSIZE, MAX_BLKSIZE};
use crate::confkit::{At, Dur, ListenerSpec, Problems, Transport};

/// Every key is optional: a missing one takes its value from [`Config::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    /// Where requests arrive. Each transfer then runs from its own port (a new TID).
    pub listen: At<SocketAddr>,
    /// Largest blksize granted (RFC 2348). 1468 fills a 1500-byte Ethernet frame without
    /// IP fragmentation; larger helps only on paths with a bigger MTU.
    pub max_blksize: At<u32>,
    /// Largest windowsize granted (RFC 7440): blocks sent before waiting for an ACK.
    pub max_window: At<u32>,
    /// Retransmission timeout when the client does not negotiate one.
    pub timeout: At<Dur>,
    /// Largest timeout a client may negotiate (RFC 2349). The OACK must echo the value
    /// asked for, so a larger one is not acknowledged and `timeout` applies instead: a
    /// client asking 255 s cannot hold a slot for 255 s per retransmission.
    pub max_timeout: At<Dur>,
    /// Retransmissions of the same packet before the transfer is abandoned.
    pub retries: At<u32>,
    /// Transfers running at once; further requests get ERROR 0 "server busy".
    pub max_transfers: At<usize>,
    /// Transfers running at once for one client address, so one host cannot take every
    /// slot; further requests from it get ERROR 0.
    pub max_transfers_per_ip: At<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: At::new(SocketAddr::from(([0, 0, 0, 0], 6969))),
            max_blksize: At::new(1468),
            max_window: At::new(64),
            timeout: At::new(Dur(Duration::from_secs(1))),
            max_timeout: At::new(Dur(Duration::from_secs(5))),
            retries: At::new(5),
            max_transfers: At::new(1000),
            max_transfers_per_ip: At::new(8),
        }
    }
}

impl Config {
    pub fn resolve_paths(&mut self, _base: &Path) {}

    pub fn validate(&self, p: &mut Problems) {
        let secs = Duration::from_secs;
        let (bs, w, mt) = (&self.max_blksize, &self.max_window, &self.max_timeout);
        let blksizes = DEFAULT_BLKSIZE as u32..=MAX_BLKSIZE as u32;
        p.check_range(
            "tftp.max_blksize",
            bs,
            blksizes,
            " (RFC 2348; 1468 suits Ethernet)",
        );
        p.check_range(
            "tftp.max_window",
            w,
            1..=65535,
            " (RFC 7440; 1 disables windowing)",
        );
        let timeouts = Duration::from_millis(100)..=secs(255);
        p.check_duration("tftp.timeout", &self.timeout, timeouts, "");
        // The timeout option counts whole seconds (RFC 2349: 1..=255).
        p.check_duration("tftp.max_timeout", mt, secs(1)..=secs(255), " (RFC 2349)");
        p.check_range("tftp.retries", &self.retries, 1..=100, "");
        p.check_not_zero("tftp.max_transfers", &self.max_transfers, "");
        let per_ip = &self.max_transfers_per_ip;
        p.check_not_zero("tftp.max_transfers_per_ip", per_ip, "");
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        vec![ListenerSpec::new(
            "tftp.listen",
            Transport::Udp,
            &self.listen,
        )]
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config as Root;

    fn parse(tftp: &str) -> Result<Root, crate::confkit::ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let yaml = format!("catalog:\n  roots: [files]\ntftp:\n{tftp}");
        Root::parse(&yaml, &dir.path().join("config.yaml"))
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("  enabled: true\n  listen: 127.0.0.1:6969\n  timeout: 500ms\n")
            .unwrap()
            .tftp;
        assert!(c.enabled);
        assert_eq!(c.max_blksize.value, 1468);
        assert_eq!(c.timeout.value.0.as_millis(), 500);
        assert_eq!(c.max_timeout.value.0.as_secs(), 5);
        assert_eq!(c.max_transfers_per_ip.value, 8);
        assert_eq!(c.listeners().len(), 1);
    }

    #[test]
    fn bad_values_name_field_and_line() {
        let err = parse(
            "  enabled: true\n  max_blksize: 70000\n  max_window: 0\n  timeout: 0s\n  retries: 0\n  max_transfers: 0\n  max_timeout: 300s\n  max_transfers_per_ip: 0\n",
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(
            fields,
            vec![
                ("tftp.max_blksize", 5),
                ("tftp.max_window", 6),
                ("tftp.timeout", 7),
                ("tftp.max_timeout", 10),
                ("tftp.retries", 8),
                ("tftp.max_transfers", 9),
                ("tftp.max_transfers_per_ip", 11)
            ]
        );
        assert!(err.to_string().contains("expected 512..=65464"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = parse("  enabled: true\n  blocksize: 1468\n").unwrap_err();
        assert_eq!(err.0[0].line, 5, "{err}");
    }
}
