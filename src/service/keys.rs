//! Which configuration key belongs to which service, and whether it applies live.
//!
//! A restart key carries how to read its value, so a reload can tell whether it changed
//! since the start. A new key in the schema needs a line here: `server::tests` compares
//! these tables with docs/operations.md's reload column, which `tests/suite/docs.rs`
//! compares with the parser.

use std::fmt::Debug;

use crate::config::Config;
use crate::confkit::At;

pub(crate) struct Key {
    pub name: &'static str,
    /// Applies on reload; otherwise waits for a restart.
    pub live: bool,
    /// How to read a restart key's value (compared as text).
    pub value: Option<fn(&Config) -> String>,
}

pub(crate) struct Table {
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

/// A restart key named by its path in `Config` and read through that path:
/// `restart!(d, tftp.enabled)` is `restart("tftp.enabled", |c| d(&c.tftp.enabled))`;
/// `at` reads a located value's `.value`, and `vals`/`opt` read lists and options.
macro_rules! restart {
    (at, $h:ident $(. $t:ident)*) => {
        restart(concat!(stringify!($h) $(, ".", stringify!($t))*), |c| {
            d(&c.$h $(.$t)*.value)
        })
    };
    ($f:ident, $h:ident $(. $t:ident)*) => {
        restart(concat!(stringify!($h) $(, ".", stringify!($t))*), |c| {
            $f(&c.$h $(.$t)*)
        })
    };
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
pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table {
            service: "process",
            enabled: always,
            keys: vec![
                restart!(d, data_dir),
                restart!(d, log.level),
                restart!(d, log.format),
                restart!(vals, catalog.roots),
                restart!(d, catalog.case_insensitive),
                live("shutdown_grace"),
                restart!(d, hooks),
                restart!(at, store.backend),
                restart!(opt, store.url),
                restart!(opt, store.password_file),
                restart!(opt, store.ca_file),
                restart!(at, store.pool_size),
                restart!(d, store.box_name),
            ],
        },
        Table {
            service: "devices",
            enabled: always,
            keys: vec![
                restart!(opt, devices.inventory),
                restart!(d, devices.trust.lease),
                restart!(d, devices.trust.user_agent),
                restart!(d, devices.trust.path),
                restart!(d, devices.trust.relay),
                restart!(d, devices.trust.http_auth),
                restart!(at, devices.http_auth.realm),
                restart!(opt, devices.http_auth.accounts),
                restart!(vals, devices.http_auth.digest),
                restart!(d, devices.http_auth.basic),
                restart!(at, devices.http_auth.nonce_lifetime),
                restart!(opt, devices.reports.path),
                restart!(vals, devices.private),
                restart!(d, devices.mac_in_path),
                restart!(at, devices.missing_variable),
                restart!(d, devices.encryption.enabled),
                restart!(d, devices.encryption.digest),
                restart!(d, devices.encryption.gzip),
                restart!(opt, devices.binding.init_prefix),
                restart!(at, devices.binding.profile),
                restart!(at, devices.binding.devices_per_pin),
                restart!(at, devices.binding.wrong_pins_budget),
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
                restart!(d, https.names),
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
                restart!(d, https_legacy.enabled),
                restart!(vals, https_legacy.listen),
                live("https_legacy.min_protocol"),
                live("https_legacy.ciphers"),
                live("https_legacy.cert"),
                live("https_legacy.key"),
                live("https_legacy.client_auth"),
                live("https_legacy.client_ca"),
                restart!(d, https_legacy.limits.max_connections),
                restart!(d, https_legacy.limits.header_timeout),
                restart!(d, https_legacy.limits.idle_timeout),
                restart!(d, https_legacy.limits.max_connections_per_ip),
                restart!(d, https_legacy.limits.write_timeout),
            ],
        },
        Table {
            service: "tftp",
            enabled: |c| c.tftp.enabled,
            keys: vec![
                restart!(d, tftp.enabled),
                restart!(at, tftp.listen),
                restart!(at, tftp.max_blksize),
                restart!(at, tftp.max_window),
                restart!(at, tftp.timeout),
                restart!(at, tftp.retries),
                restart!(at, tftp.max_transfers),
                restart!(at, tftp.max_timeout),
                restart!(at, tftp.max_transfers_per_ip),
            ],
        },
        Table {
            service: "dns",
            enabled: |c| c.dns.enabled,
            keys: vec![
                restart!(d, dns.enabled),
                restart!(vals, dns.listen),
                restart!(d, dns.tcp_limits.max_connections),
                restart!(d, dns.tcp_limits.max_connections_per_ip),
                restart!(d, dns.tcp_limits.idle_timeout),
                restart!(d, dns.tcp_limits.write_timeout),
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
                restart!(d, dhcp.enabled),
                restart!(vals, dhcp.interfaces),
                restart!(at, dhcp.port),
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
                live("dhcp.trusted_relays"),
            ],
        },
        Table {
            service: "syslog",
            enabled: |c| c.syslog.enabled,
            keys: vec![
                restart!(d, syslog.enabled),
                restart!(at, syslog.listen),
                restart!(opt, syslog.tcp_listen),
                restart!(opt, syslog.forward_file),
                restart!(at, syslog.forward_max),
                restart!(d, syslog.tcp_limits.max_connections),
                restart!(d, syslog.tcp_limits.max_connections_per_ip),
                restart!(d, syslog.tcp_limits.idle_timeout),
                restart!(d, syslog.tcp_limits.write_timeout),
            ],
        },
        Table {
            service: "dashboard",
            enabled: |c| c.dashboard.enabled,
            keys: vec![
                restart!(d, dashboard.enabled),
                restart!(at, dashboard.listen),
                live("dashboard.token"),
                live("dashboard.hosts"),
                live("dashboard.token_name"),
                live("dashboard.resync.method"),
                live("dashboard.resync.sip_port"),
                live("dashboard.resync.event"),
                live("dashboard.resync.http_url"),
                live("dashboard.resync.http_reboot_url"),
                live("dashboard.resync.http_user"),
                live("dashboard.resync.http_password"),
                live("upgrade.max_parallel"),
                live("upgrade.timeout"),
                live("upgrade.firmware"),
            ],
        },
        Table {
            service: "uploads",
            enabled: |c| c.uploads.enabled,
            keys: vec![
                restart!(d, uploads.enabled),
                restart!(d, uploads.tftp),
                restart("uploads.patterns", upload_patterns),
                restart!(at, uploads.max_file),
                restart!(at, uploads.max_device),
                restart!(at, uploads.max_total),
                restart!(at, uploads.log_rotate),
                restart!(at, uploads.log_keep),
            ],
        },
    ]
}

/// `uploads.patterns` as written, without lines.
fn upload_patterns(c: &Config) -> String {
    d(c.uploads
        .patterns
        .as_ref()
        .map(|v| v.iter().map(|a| &a.value).collect::<Vec<_>>()))
}

/// The table of one service.
pub(crate) fn table(service: &str) -> Table {
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
