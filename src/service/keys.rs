//! Which configuration key belongs to which service, and whether it applies live.
//!
//! A restart key carries how to read its value, so a reload can tell whether it changed
//! since the start. A new key in the schema needs a line here: `server::tests` compares
//! these tables with docs/operations.md's reload column, which `tests/suite/docs.rs`
//! compares with the parser.

use std::fmt::Debug;

use crate::config::{At, Config};

pub struct Key {
    pub name: &'static str,
    /// Applies on reload; otherwise waits for a restart.
    pub live: bool,
    /// How to read a restart key's value (compared as text).
    pub value: Option<fn(&Config) -> String>,
}

pub struct Table {
    pub service: &'static str,
    /// Whether the service runs with this configuration.
    pub enabled: fn(&Config) -> bool,
    pub keys: Vec<Key>,
}

fn live(name: &'static str) -> Key {
    Key {
        name,
        live: true,
        value: None,
    }
}

fn restart(name: &'static str, value: fn(&Config) -> String) -> Key {
    Key {
        name,
        live: false,
        value: Some(value),
    }
}

fn d<T: Debug>(v: T) -> String {
    format!("{v:?}")
}

/// The values of a list of located values, without their lines.
fn vals<T: Debug>(v: &[At<T>]) -> String {
    d(v.iter().map(|a| &a.value).collect::<Vec<_>>())
}

fn opt<T: Debug>(v: &Option<At<T>>) -> String {
    d(v.as_ref().map(|a| &a.value))
}

fn always(_: &Config) -> bool {
    true
}

/// Every service's table, the process's own settings first.
pub fn tables() -> Vec<Table> {
    vec![
        Table {
            service: "process",
            enabled: always,
            keys: vec![
                restart("data_dir", |c| d(&c.data_dir)),
                restart("log.level", |c| d(&c.log.level)),
                restart("log.format", |c| d(c.log.format)),
                restart("catalog.roots", |c| vals(&c.catalog.roots)),
                restart("catalog.case_insensitive", |c| {
                    d(c.catalog.case_insensitive)
                }),
                live("shutdown_grace"),
                restart("hooks", |c| d(&c.hooks)),
            ],
        },
        Table {
            service: "devices",
            enabled: always,
            keys: vec![
                restart("devices.inventory", |c| opt(&c.devices.inventory)),
                restart("devices.trust.lease", |c| d(c.devices.trust.lease)),
                restart("devices.trust.user_agent", |c| {
                    d(c.devices.trust.user_agent)
                }),
                restart("devices.trust.path", |c| d(c.devices.trust.path)),
                restart("devices.private", |c| vals(&c.devices.private)),
                restart("devices.mac_in_path", |c| d(c.devices.mac_in_path)),
                restart("devices.missing_variable", |c| {
                    d(c.devices.missing_variable.value)
                }),
                restart("devices.encryption.enabled", |c| {
                    d(c.devices.encryption.enabled)
                }),
                restart("devices.encryption.digest", |c| {
                    d(c.devices.encryption.digest)
                }),
                restart("devices.encryption.gzip", |c| d(c.devices.encryption.gzip)),
                restart("devices.binding.init_prefix", |c| {
                    opt(&c.devices.binding.init_prefix)
                }),
                restart("devices.binding.profile", |c| {
                    d(&c.devices.binding.profile.value)
                }),
                restart("devices.binding.devices_per_pin", |c| {
                    d(c.devices.binding.devices_per_pin.value)
                }),
                restart("devices.binding.wrong_pins_budget", |c| {
                    d(c.devices.binding.wrong_pins_budget.value)
                }),
            ],
        },
        Table {
            service: "web",
            enabled: always,
            keys: vec![
                live("http.enabled"),
                live("http.listen"),
                live("http.limits.max_connections"),
                live("http.limits.header_timeout"),
                live("http.limits.idle_timeout"),
                live("http.limits.max_connections_per_ip"),
                live("http.limits.write_timeout"),
                live("https.enabled"),
                live("https.listen"),
                live("https.cert"),
                live("https.key"),
                live("https.client_auth"),
                live("https.client_ca"),
                live("https.ca_cert"),
                // Only read when the lab certificate is first made.
                restart("https.names", |c| d(&c.https.names)),
                live("https.limits.max_connections"),
                live("https.limits.header_timeout"),
                live("https.limits.idle_timeout"),
                live("https.limits.max_connections_per_ip"),
                live("https.limits.write_timeout"),
                live("metrics.enabled"),
                live("metrics.listen"),
            ],
        },
        Table {
            service: "https_legacy",
            enabled: |c| c.https_legacy.enabled,
            keys: vec![
                restart("https_legacy.enabled", |c| d(c.https_legacy.enabled)),
                restart("https_legacy.listen", |c| vals(&c.https_legacy.listen)),
                live("https_legacy.min_protocol"),
                live("https_legacy.ciphers"),
                live("https_legacy.cert"),
                live("https_legacy.key"),
                live("https_legacy.client_auth"),
                live("https_legacy.client_ca"),
                restart("https_legacy.limits.max_connections", |c| {
                    d(c.https_legacy.limits.max_connections)
                }),
                restart("https_legacy.limits.header_timeout", |c| {
                    d(c.https_legacy.limits.header_timeout)
                }),
                restart("https_legacy.limits.idle_timeout", |c| {
                    d(c.https_legacy.limits.idle_timeout)
                }),
                restart("https_legacy.limits.max_connections_per_ip", |c| {
                    d(c.https_legacy.limits.max_connections_per_ip)
                }),
                restart("https_legacy.limits.write_timeout", |c| {
                    d(c.https_legacy.limits.write_timeout)
                }),
            ],
        },
        Table {
            service: "tftp",
            enabled: |c| c.tftp.enabled,
            keys: vec![
                restart("tftp.enabled", |c| d(c.tftp.enabled)),
                restart("tftp.listen", |c| d(c.tftp.listen.value)),
                restart("tftp.max_blksize", |c| d(c.tftp.max_blksize.value)),
                restart("tftp.max_window", |c| d(c.tftp.max_window.value)),
                restart("tftp.timeout", |c| d(c.tftp.timeout.value)),
                restart("tftp.retries", |c| d(c.tftp.retries.value)),
                restart("tftp.max_transfers", |c| d(c.tftp.max_transfers.value)),
                restart("tftp.max_timeout", |c| d(c.tftp.max_timeout.value)),
                restart("tftp.max_transfers_per_ip", |c| {
                    d(c.tftp.max_transfers_per_ip.value)
                }),
            ],
        },
        Table {
            service: "dns",
            enabled: |c| c.dns.enabled,
            keys: vec![
                restart("dns.enabled", |c| d(c.dns.enabled)),
                restart("dns.listen", |c| vals(&c.dns.listen)),
                restart("dns.tcp_limits.max_connections", |c| {
                    d(c.dns.tcp_limits.max_connections)
                }),
                restart("dns.tcp_limits.max_connections_per_ip", |c| {
                    d(c.dns.tcp_limits.max_connections_per_ip)
                }),
                restart("dns.tcp_limits.idle_timeout", |c| {
                    d(c.dns.tcp_limits.idle_timeout)
                }),
                restart("dns.tcp_limits.write_timeout", |c| {
                    d(c.dns.tcp_limits.write_timeout)
                }),
                live("dns.ttl"),
                live("dns.zones"),
                live("dns.forwarders"),
                live("dns.forward_timeout"),
                live("dns.leases.domain"),
                live("dns.leases.ttl"),
            ],
        },
        Table {
            service: "dhcp",
            enabled: |c| c.dhcp.enabled,
            keys: vec![
                restart("dhcp.enabled", |c| d(c.dhcp.enabled)),
                restart("dhcp.interfaces", |c| vals(&c.dhcp.interfaces)),
                restart("dhcp.port", |c| d(c.dhcp.port.value)),
                live("dhcp.rate_limit_per_mac"),
                live("dhcp.decline_quarantine"),
                live("dhcp.offer_hold"),
                live("dhcp.options"),
                live("dhcp.option_sets"),
                live("dhcp.subnets"),
                live("dhcp.mode"),
                live("dhcp.authoritative"),
                live("dhcp.proxy_offer_vendor_classes"),
                live("dhcp.boot.next_server"),
                live("dhcp.boot.server_name"),
                live("dhcp.boot.file"),
                live("dhcp.boot.by_arch"),
            ],
        },
        Table {
            service: "syslog",
            enabled: |c| c.syslog.enabled,
            keys: vec![
                restart("syslog.enabled", |c| d(c.syslog.enabled)),
                restart("syslog.listen", |c| d(c.syslog.listen.value)),
                restart("syslog.tcp_listen", |c| opt(&c.syslog.tcp_listen)),
                restart("syslog.forward_file", |c| opt(&c.syslog.forward_file)),
                restart("syslog.forward_max", |c| d(c.syslog.forward_max.value)),
                restart("syslog.tcp_limits.max_connections", |c| {
                    d(c.syslog.tcp_limits.max_connections)
                }),
                restart("syslog.tcp_limits.max_connections_per_ip", |c| {
                    d(c.syslog.tcp_limits.max_connections_per_ip)
                }),
                restart("syslog.tcp_limits.idle_timeout", |c| {
                    d(c.syslog.tcp_limits.idle_timeout)
                }),
                restart("syslog.tcp_limits.write_timeout", |c| {
                    d(c.syslog.tcp_limits.write_timeout)
                }),
            ],
        },
        Table {
            service: "dashboard",
            enabled: |c| c.dashboard.enabled,
            keys: vec![
                restart("dashboard.enabled", |c| d(c.dashboard.enabled)),
                restart("dashboard.listen", |c| d(c.dashboard.listen.value)),
                live("dashboard.token"),
                live("dashboard.hosts"),
                live("dashboard.resync.method"),
                live("dashboard.resync.sip_port"),
                live("dashboard.resync.event"),
                live("dashboard.resync.http_url"),
                live("dashboard.resync.http_reboot_url"),
                live("dashboard.resync.http_user"),
                live("dashboard.resync.http_password"),
            ],
        },
    ]
}

/// The table of one service.
pub fn table(service: &str) -> Table {
    tables()
        .into_iter()
        .find(|t| t.service == service)
        .unwrap_or_else(|| panic!("no key table for service {service}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_declared_once() {
        let mut seen = std::collections::HashSet::new();
        for t in tables() {
            for k in &t.keys {
                assert!(seen.insert(k.name), "{} declared twice", k.name);
                assert_eq!(k.live, k.value.is_none(), "{}", k.name);
            }
        }
    }
}
