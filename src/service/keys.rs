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

impl Table {
    fn new(service: &'static str, enabled: fn(&Config) -> bool) -> Table {
        Table {
            service,
            enabled,
            keys: Vec::new(),
        }
    }

    /// Its keys, a section at a time.
    fn with<const N: usize>(mut self, sections: [Vec<Key>; N]) -> Table {
        self.keys = sections.into_iter().flatten().collect();
        self
    }
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

/// The keys of one section that apply live: `live!(dns: ttl, zones)` is
/// `[live("dns.ttl"), live("dns.zones")]`; a section may be two deep (`http.limits`), and
/// `live!(shutdown_grace)` is a top-level key.
macro_rules! live {
    ($a:ident . $b:ident : $($k:ident),+) => {
        vec![$(live(concat!(stringify!($a), ".", stringify!($b), ".", stringify!($k)))),+]
    };
    ($a:ident : $($k:ident),+) => {
        vec![$(live(concat!(stringify!($a), ".", stringify!($k)))),+]
    };
    ($($k:ident),+) => {
        vec![$(live(stringify!($k))),+]
    };
}

/// The restart keys of one section, each with how its value is read (`d`, `at`, `vals`,
/// `opt`, `opt_vals`): `restart!(tftp: d enabled, at listen)` is
/// `[restart("tftp.enabled", |c| d(&c.tftp.enabled)),
///   restart("tftp.listen", |c| at(&c.tftp.listen))]`;
/// a section may be two deep (`devices.trust`), and `restart!(d data_dir)` is a top-level
/// key.
macro_rules! restart {
    ($a:ident . $b:ident : $($f:ident $k:ident),+) => {
        vec![$(restart(
            concat!(stringify!($a), ".", stringify!($b), ".", stringify!($k)),
            |c| $f(&c.$a.$b.$k),
        )),+]
    };
    ($a:ident : $($f:ident $k:ident),+) => {
        vec![$(restart(concat!(stringify!($a), ".", stringify!($k)), |c| $f(&c.$a.$k))),+]
    };
    ($($f:ident $k:ident),+) => {
        vec![$(restart(stringify!($k), |c| $f(&c.$k))),+]
    };
}

fn d<T: Debug>(v: T) -> String {
    format!("{v:?}")
}

/// A located value without its line.
fn at<T: Debug>(v: &At<T>) -> String {
    d(&v.value)
}

/// The values of a list of located values, without their lines.
fn vals<T: Debug>(v: &[At<T>]) -> String {
    d(v.iter().map(|a| &a.value).collect::<Vec<_>>())
}

fn opt<T: Debug>(v: &Option<At<T>>) -> String {
    d(v.as_ref().map(|a| &a.value))
}

/// An optional list of located values, as written, without lines.
fn opt_vals<T: Debug>(v: &Option<Vec<At<T>>>) -> String {
    d(v.as_ref()
        .map(|v| v.iter().map(|a| &a.value).collect::<Vec<_>>()))
}

fn always(_: &Config) -> bool {
    true
}

/// Every service's table, the process's own settings first.
pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("process", always).with([
            restart!(d data_dir),
            restart!(log: d level, d format),
            restart!(catalog: vals roots, d case_insensitive),
            live!(shutdown_grace),
            restart!(d hooks),
            restart!(store:
                at backend, opt url, opt password_file, opt ca_file, at pool_size,
                d box_name
            ),
        ]),
        Table::new("devices", always).with([
            restart!(devices: opt inventory),
            restart!(devices.trust: d lease, d user_agent, d path, d relay, d http_auth),
            restart!(devices.http_auth:
                at realm, opt accounts, vals digest, d basic, at nonce_lifetime
            ),
            restart!(devices.reports: opt path),
            restart!(devices: vals private, d mac_in_path, at missing_variable),
            restart!(devices.encryption: d enabled, d digest, d gzip),
            restart!(devices.binding:
                opt init_prefix, at profile, at devices_per_pin, at wrong_pins_budget
            ),
        ]),
        Table::new("web", always).with([
            live!(http: enabled, listen),
            live!(http.limits:
                max_connections, header_timeout, idle_timeout, max_connections_per_ip,
                write_timeout
            ),
            live!(https: enabled, listen, cert, key, client_auth, client_ca, ca_cert),
            // Only read when the lab certificate is first made.
            restart!(https: d names),
            live!(https.limits:
                max_connections, header_timeout, idle_timeout, max_connections_per_ip,
                write_timeout
            ),
            live!(metrics: enabled, listen),
        ]),
        Table::new("https_legacy", |c| c.https_legacy.enabled).with([
            restart!(https_legacy: d enabled, vals listen),
            live!(https_legacy: min_protocol, ciphers, cert, key, client_auth, client_ca),
            restart!(https_legacy.limits:
                d max_connections, d header_timeout, d idle_timeout,
                d max_connections_per_ip, d write_timeout
            ),
        ]),
        Table::new("tftp", |c| c.tftp.enabled).with([restart!(tftp:
            d enabled, at listen, at max_blksize, at max_window, at timeout, at retries,
            at max_transfers, at max_timeout, at max_transfers_per_ip
        )]),
        Table::new("dns", |c| c.dns.enabled).with([
            restart!(dns: d enabled, vals listen),
            restart!(dns.tcp_limits:
                d max_connections, d max_connections_per_ip, d idle_timeout, d write_timeout
            ),
            live!(dns: ttl, zones, forwarders, forward_timeout),
            live!(dns.leases: domain, ttl),
        ]),
        Table::new("dhcp", |c| c.dhcp.enabled).with([
            restart!(dhcp: d enabled, vals interfaces, at port),
            live!(dhcp:
                rate_limit_per_mac, decline_quarantine, offer_hold, options, option_sets,
                subnets, mode, authoritative, proxy_offer_vendor_classes
            ),
            live!(dhcp.boot: next_server, server_name, file, by_arch),
            live!(dhcp: trusted_relays),
        ]),
        Table::new("syslog", |c| c.syslog.enabled).with([
            restart!(syslog:
                d enabled, at listen, opt tcp_listen, opt forward_file, at forward_max
            ),
            restart!(syslog.tcp_limits:
                d max_connections, d max_connections_per_ip, d idle_timeout, d write_timeout
            ),
        ]),
        Table::new("dashboard", |c| c.dashboard.enabled).with([
            restart!(dashboard: d enabled, at listen),
            live!(dashboard: token, hosts, token_name),
            live!(dashboard.resync:
                method, sip_port, event, http_url, http_reboot_url, http_user, http_password
            ),
            live!(upgrade: max_parallel, timeout, firmware),
        ]),
        Table::new("uploads", |c| c.uploads.enabled).with([restart!(uploads:
            d enabled, d tftp, opt_vals patterns, at max_file, at max_device, at max_total,
            at log_rotate, at log_keep
        )]),
    ]
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
