//! The `dns:` section: zones, names with their addresses and health checks, forwarders,
//! lease names. Validated once here; the rest of `dns` trusts it.
//!
//! A struct whose keys are all optional says `#[serde(default)]` once, with its defaults in
//! `impl Default`; one with a required key marks only its lists `default` (serde takes an
//! `Option` left out as `None`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_server::proto::rr::{LowerName, Name};
use serde::Deserialize;

use crate::acceptor::{Limits, TcpLimits, Timeouts};
use crate::confkit::{At, Dur, ListenerSpec, Problems, Transport};

/// More health-check targets than this is a configuration mistake, not a lab.
const MAX_CHECK_TARGETS: usize = 1024;
/// Aliases followed for one answer; a longer chain in the config is refused.
pub(super) const MAX_CNAME_CHAIN: usize = 8;
/// A TXT record's text; a longer one would not fit a UDP answer anyway.
const MAX_TXT: usize = 4000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    /// Each address is served on both UDP and TCP.
    pub listen: Vec<At<SocketAddr>>,
    /// TTL of records that do not set their own.
    pub ttl: At<Dur>,
    pub zones: Vec<ZoneConfig>,
    /// Upstream resolvers for names outside the local zones; empty: such names are REFUSED.
    pub forwarders: Vec<At<SocketAddr>>,
    pub forward_timeout: At<Dur>,
    /// DHCP clients' hostnames answered as `<hostname>.<domain>` (A and PTR).
    pub leases: Option<LeasesConfig>,
    /// Caps and timeouts of DNS over TCP; unset keys take [`TCP_DEFAULTS`].
    pub tcp_limits: TcpLimits,
}

/// DNS over TCP, per listen address: resolvers and `dig +tcp` need few connections and
/// answer at once, so a connection that stands still for seconds is closed.
pub(super) const TCP_DEFAULTS: Limits = Limits {
    max_connections: 256,
    max_connections_per_ip: 16,
    timeouts: Timeouts {
        idle: Duration::from_secs(10),
        write: Duration::from_secs(10),
    },
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: At<String>,
    /// The NS target (relative to the zone unless it ends with a dot).
    #[serde(default = "default_nameserver")]
    pub nameserver: At<String>,
    #[serde(default)]
    pub records: Vec<RecordConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Relative to the zone (`prov`), `@` for the zone itself, or absolute (`prov.lab.test.`).
    pub name: At<String>,
    #[serde(default)]
    pub a: Vec<At<Ipv4Addr>>,
    #[serde(default)]
    pub aaaa: Vec<At<Ipv6Addr>>,
    /// This name is an alias of another (`prov`, or absolute `prov.lab.test.`); it then
    /// has no other records.
    pub cname: Option<At<String>>,
    #[serde(default)]
    pub srv: Vec<SrvConfig>,
    #[serde(default)]
    pub naptr: Vec<NaptrConfig>,
    /// One TXT record per entry (longer than 255 bytes: split into 255-byte strings).
    #[serde(default)]
    pub txt: Vec<At<String>>,
    /// PTR targets of this (reverse) name. Configured addresses get PTR records without it.
    #[serde(default)]
    pub ptr: Vec<At<String>>,
    pub ttl: Option<At<Dur>>,
    pub check: Option<CheckConfig>,
}

/// `{ priority: 10, weight: 100, port: 5060, target: prov }` (RFC 2782).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrvConfig {
    pub priority: At<u16>,
    pub weight: At<u16>,
    pub port: At<u16>,
    /// Relative to the zone unless it ends with a dot; `.` means "no such service here".
    pub target: At<String>,
}

/// `{ order: 10, preference: 10, flags: S, service: "SIP+D2U", replacement: _sip._udp }`
/// (RFC 3403, as RFC 3263 uses it for SIP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaptrConfig {
    pub order: At<u16>,
    pub preference: At<u16>,
    #[serde(default)]
    pub flags: At<String>,
    #[serde(default)]
    pub service: At<String>,
    #[serde(default)]
    pub regexp: At<String>,
    #[serde(default = "default_replacement")]
    pub replacement: At<String>,
}

/// A health check run against every address of a name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    /// Healthy when a TCP connection to this port on the address succeeds.
    pub tcp: Option<At<u16>>,
    /// Healthy when `GET` of this URL, sent to the address, answers 2xx or 3xx.
    pub http: Option<At<String>>,
    pub interval: At<Dur>,
    pub timeout: At<Dur>,
    /// Consecutive failures before an address is left out.
    pub fall: At<u32>,
    /// Consecutive successes before it is offered again.
    pub rise: At<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesConfig {
    pub domain: At<String>,
    pub ttl: Option<At<Dur>>,
}

fn default_nameserver() -> At<String> {
    At::new("ns".into())
}
fn default_replacement() -> At<String> {
    At::new(".".into())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: vec![At::new(SocketAddr::from(([0, 0, 0, 0], 5300)))],
            ttl: At::new(Dur(Duration::from_secs(60))),
            zones: Vec::new(),
            forwarders: Vec::new(),
            forward_timeout: At::new(Dur(Duration::from_secs(2))),
            leases: None,
            tcp_limits: TcpLimits::default(),
        }
    }
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            tcp: None,
            http: None,
            interval: At::new(Dur(Duration::from_secs(5))),
            timeout: At::new(Dur(Duration::from_secs(1))),
            fall: At::new(2),
            rise: At::new(1),
        }
    }
}

/// What a health check does, per address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    Tcp(u16),
    Http {
        port: u16,
        host: String,
        path: String,
    },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp(p) => write!(f, "tcp:{p}"),
            Probe::Http { port, host, path } => write!(f, "http://{host}:{port}{path}"),
        }
    }
}

/// One address checked one way: the unit a checker task runs for. Two names sharing an
/// address and a check share the task and its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub ip: IpAddr,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

/// `http://host[:port]/path` → (host as a URL writes it, port, path), read by the same
/// parser the check's GET uses. Only plain HTTP: a check asks "is the server up", which
/// needs no certificate for the address it dials.
pub(super) fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    if !url.starts_with("http://") {
        return Err(format!(
            "`{url}` is not an http:// URL; expected e.g. http://prov.lab.test:8080/healthz"
        ));
    }
    let t = crate::http_client::Target::parse(url)?;
    Ok((t.host_in_url(), t.port, t.path_and_query))
}

/// `name` made absolute inside `zone` (`@` is the zone itself).
pub(super) fn absolute(name: &str, zone: &Name) -> Result<Name, String> {
    let bad = |e: &dyn std::fmt::Display| {
        format!("`{name}` is not a valid DNS name ({e}); expected e.g. prov or prov.lab.test.")
    };
    if name == "@" {
        return Ok(zone.clone());
    }
    if name.is_empty() || name.contains(' ') || name.contains("..") {
        return Err(bad(&"empty or malformed label"));
    }
    let n = Name::from_ascii(name).map_err(|e| bad(&e))?;
    if n.is_fqdn() {
        Ok(n)
    } else {
        n.append_domain(zone).map_err(|e| bad(&e))
    }
}

pub(super) fn zone_name(name: &str) -> Result<Name, String> {
    let trimmed = name.trim_end_matches('.');
    if trimmed.is_empty() || trimmed.contains(' ') || trimmed.contains("..") {
        return Err(format!(
            "`{name}` is not a valid zone name; expected e.g. lab.test"
        ));
    }
    let mut n = Name::from_ascii(trimmed)
        .map_err(|e| format!("`{name}` is not a valid zone name ({e}); expected e.g. lab.test"))?;
    n.set_fqdn(true);
    Ok(n)
}

impl CheckConfig {
    fn probe(&self) -> Option<Probe> {
        match (&self.tcp, &self.http) {
            (Some(p), None) => Some(Probe::Tcp(p.value)),
            (None, Some(u)) => parse_http_url(u)
                .ok()
                .map(|(host, port, path)| Probe::Http { port, host, path }),
            _ => None,
        }
    }
}

impl RecordConfig {
    /// The targets this record's check runs against, one per address.
    pub fn targets(&self) -> Vec<Target> {
        let Some(c) = &self.check else {
            return Vec::new();
        };
        let Some(probe) = c.probe() else {
            return Vec::new();
        };
        self.addresses()
            .map(|ip| Target {
                ip,
                probe: probe.clone(),
                interval: c.interval.0,
                timeout: c.timeout.0,
                fall: c.fall.value,
                rise: c.rise.value,
            })
            .collect()
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.a
            .iter()
            .map(|a| IpAddr::V4(a.value))
            .chain(self.aaaa.iter().map(|a| IpAddr::V6(a.value)))
    }
}

impl RecordConfig {
    fn has_data(&self) -> bool {
        !(self.a.is_empty()
            && self.aaaa.is_empty()
            && self.cname.is_none()
            && self.srv.is_empty()
            && self.naptr.is_empty()
            && self.txt.is_empty()
            && self.ptr.is_empty())
    }
}

impl Config {
    /// Checks across records: an alias or SRV target inside the zones must be a name with
    /// records (or a lease name), alias chains end within [`MAX_CNAME_CHAIN`] without a
    /// loop, and SRV targets are not aliases (RFC 2782).
    fn check_targets(
        &self,
        p: &mut Problems,
        records: &[(LowerName, &RecordConfig, String, Name)],
        zones: &[(Name, usize)],
    ) {
        let lease_zone = self
            .leases
            .as_ref()
            .and_then(|l| zone_name(&l.domain).ok())
            .map(|n| LowerName::from(&n));
        let defined: HashMap<&LowerName, &RecordConfig> =
            records.iter().map(|(n, r, _, _)| (n, *r)).collect();
        let mut aliases: HashMap<&LowerName, LowerName> = HashMap::new();
        for (n, r, _, origin) in records {
            if let Some(t) = r.cname.as_ref().and_then(|c| absolute(c, origin).ok()) {
                aliases.insert(n, LowerName::from(&t));
            }
        }
        // A name inside our zones that answers nothing (not a record, apex or lease name).
        let missing = |t: &LowerName| {
            !defined.contains_key(t)
                && !lease_zone.as_ref().is_some_and(|l| l.zone_of(t))
                && zones.iter().any(|(z, _)| {
                    let z = LowerName::from(z);
                    z.zone_of(t) && z != *t
                })
        };
        for (name, r, rf, origin) in records {
            if let (Some(c), Some(first)) = (&r.cname, aliases.get(name)) {
                let mut at = first.clone();
                let mut hops = 1;
                loop {
                    if at == *name {
                        p.add(
                            format!("{rf}.cname"),
                            c,
                            format!("the alias chain from {name} loops back to it; expected a chain ending at a name with records"),
                        );
                        break;
                    }
                    if hops > MAX_CNAME_CHAIN {
                        p.add(
                            format!("{rf}.cname"),
                            c,
                            format!("the alias chain from {name} is longer than {MAX_CNAME_CHAIN}; expected a shorter chain"),
                        );
                        break;
                    }
                    match aliases.get(&at) {
                        Some(next) => {
                            at = next.clone();
                            hops += 1;
                        }
                        None => {
                            if missing(&at) {
                                p.add(
                                    format!("{rf}.cname"),
                                    c,
                                    format!("{at} has no records here; expected a name with records (or one outside the zones)"),
                                );
                            }
                            break;
                        }
                    }
                }
            }
            for (i, s) in r.srv.iter().enumerate() {
                let Ok(t) = absolute(&s.target, origin) else {
                    continue;
                };
                let t = LowerName::from(&t);
                let f = format!("{rf}.srv[{i}].target");
                if aliases.contains_key(&t) {
                    p.add(
                        f,
                        &s.target,
                        format!("{t} is an alias (cname); expected the name that has the addresses (RFC 2782)"),
                    );
                } else if missing(&t) {
                    p.add(
                        f,
                        &s.target,
                        format!("{t} has no records here; expected a name with addresses (or one outside the zones)"),
                    );
                }
            }
        }
    }

    pub fn resolve_paths(&mut self, _base: &Path) {}

    /// Every health-check target of every record.
    pub fn targets(&self) -> Vec<Target> {
        let mut seen = HashSet::new();
        self.zones
            .iter()
            .flat_map(|z| z.records.iter())
            .flat_map(|r| r.targets())
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }

    pub fn validate(&self, p: &mut Problems) {
        if !self.enabled {
            return;
        }
        self.tcp_limits.validate("dns.tcp_limits", p);
        p.check_listen("dns.listen", self.enabled, &self.listen, "127.0.0.1:5300");
        check_ttl(p, "dns.ttl", &self.ttl);
        let mut zones_seen: Vec<(Name, usize)> = Vec::new();
        // Every valid record with its field path and zone, for the checks across records.
        let mut records = Vec::new();
        for (zi, z) in self.zones.iter().enumerate() {
            let zf = format!("dns.zones[{zi}]");
            let origin = match zone_name(&z.name) {
                Ok(n) => n,
                Err(e) => {
                    p.add(format!("{zf}.name"), &z.name, e);
                    continue;
                }
            };
            if let Some((_, line)) = zones_seen.iter().find(|(n, _)| *n == origin) {
                p.add(
                    format!("{zf}.name"),
                    &z.name,
                    format!(
                        "zone {origin} is already defined at line {line}; expected each zone once"
                    ),
                );
            }
            zones_seen.push((origin.clone(), z.name.line));
            if let Err(e) = absolute(&z.nameserver, &origin) {
                p.add(format!("{zf}.nameserver"), &z.nameserver, e);
            }
            let mut names: Vec<(Name, usize)> = Vec::new();
            for (ri, r) in z.records.iter().enumerate() {
                let rf = format!("{zf}.records[{ri}]");
                let name = match absolute(&r.name, &origin) {
                    Ok(n) => n,
                    Err(e) => {
                        p.add(format!("{rf}.name"), &r.name, e);
                        continue;
                    }
                };
                if !origin.zone_of(&name) {
                    p.add(
                        format!("{rf}.name"),
                        &r.name,
                        format!("{name} is outside zone {origin}; expected a name in the zone"),
                    );
                }
                if let Some((_, line)) = names.iter().find(|(n, _)| *n == name) {
                    p.add(
                        format!("{rf}.name"),
                        &r.name,
                        format!("{name} is already listed at line {line}; expected all records of a name in one entry"),
                    );
                }
                names.push((name.clone(), r.name.line));
                if !r.has_data() {
                    p.add(
                        format!("{rf}.name"),
                        &r.name,
                        "has no addresses or records; expected `a: [...]`, `aaaa`, `cname`, `srv`, `naptr`, `txt` or `ptr`",
                    );
                }
                check_record_data(p, &rf, r, &name, &origin);
                if let Some(t) = &r.ttl {
                    check_ttl(p, &format!("{rf}.ttl"), t);
                }
                if let Some(c) = &r.check {
                    check_check(p, &format!("{rf}.check"), c, &r.name);
                }
                records.push((LowerName::from(&name), r, rf, origin.clone()));
            }
        }
        self.check_targets(p, &records, &zones_seen);
        if let Some(l) = &self.leases {
            if let Err(e) = zone_name(&l.domain) {
                p.add("dns.leases.domain", &l.domain, e);
            }
            if let Some(t) = &l.ttl {
                check_ttl(p, "dns.leases.ttl", t);
            }
        }
        for (i, f) in self.forwarders.iter().enumerate() {
            let own = self.listen.iter().any(|l| {
                l.port() == f.port()
                    && (l.ip() == f.ip() || (l.ip().is_unspecified() && f.ip().is_loopback()))
            });
            if own {
                p.add(
                    format!("dns.forwarders[{i}]"),
                    f,
                    format!("{} is this server's own dns.listen address (a forwarding loop); expected another resolver", f.value),
                );
            }
            if f.port() == 0 || f.ip().is_unspecified() {
                p.add(
                    format!("dns.forwarders[{i}]"),
                    f,
                    format!(
                        "{} cannot be sent to; expected an address such as 192.0.2.53:53",
                        f.value
                    ),
                );
            }
        }
        if self.forward_timeout.0.is_zero() {
            p.add(
                "dns.forward_timeout",
                &self.forward_timeout,
                "is 0; expected e.g. 2s",
            );
        }
        let targets = self.targets().len();
        if targets > MAX_CHECK_TARGETS {
            p.add_at(
                "dns.zones",
                0,
                0,
                format!("{targets} health-check targets; expected at most {MAX_CHECK_TARGETS}"),
            );
        }
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, a) in self.listen.iter().enumerate() {
            for transport in [Transport::Udp, Transport::Tcp] {
                out.push(ListenerSpec::new(format!("dns.listen[{i}]"), transport, a));
            }
        }
        out
    }
}

/// Checks of one record's own data (each refusal names the field and its line).
fn check_record_data(p: &mut Problems, rf: &str, r: &RecordConfig, name: &Name, origin: &Name) {
    if let Some(c) = &r.cname {
        if let Err(e) = absolute(c, origin) {
            p.add(format!("{rf}.cname"), c, e);
        }
        let others = !r.a.is_empty()
            || !r.aaaa.is_empty()
            || !r.srv.is_empty()
            || !r.naptr.is_empty()
            || !r.txt.is_empty()
            || !r.ptr.is_empty();
        if others {
            p.add(
                format!("{rf}.cname"),
                c,
                format!("{name} is an alias, so it can have no other records; expected either `cname` or records"),
            );
        }
        if name == origin {
            p.add(
                format!("{rf}.cname"),
                c,
                format!("the zone apex {origin} cannot be an alias (it has SOA and NS); expected a name inside the zone"),
            );
        }
    }
    if !r.srv.is_empty() {
        let service = name.iter().take(2).all(|l| l.first() == Some(&b'_'));
        if !service || name.num_labels() < 3 {
            p.add(
                format!("{rf}.name"),
                &r.name,
                format!("{name} has SRV records but is not named _service._proto; expected e.g. _sip._udp"),
            );
        }
    }
    for (i, s) in r.srv.iter().enumerate() {
        let f = format!("{rf}.srv[{i}]");
        match absolute(&s.target, origin) {
            Err(e) => p.add(format!("{f}.target"), &s.target, e),
            Ok(t) if s.port.value == 0 && !t.is_root() => p.add(
                format!("{f}.port"),
                &s.port,
                "is 0; expected the service's port (or target `.` for no service here)",
            ),
            Ok(_) => {}
        }
    }
    for (i, n) in r.naptr.iter().enumerate() {
        let f = format!("{rf}.naptr[{i}]");
        if n.flags.len() > 255 || !n.flags.bytes().all(|b| b.is_ascii_alphanumeric()) {
            p.add(
                format!("{f}.flags"),
                &n.flags,
                "expected letters and digits only, e.g. S, A, U or P",
            );
        }
        for (k, v) in [("service", &n.service), ("regexp", &n.regexp)] {
            if v.len() > 255 {
                p.add(format!("{f}.{k}"), v, "is longer than 255 bytes");
            }
        }
        match absolute(&n.replacement, origin) {
            Err(e) => p.add(format!("{f}.replacement"), &n.replacement, e),
            Ok(t) if !t.is_root() && !n.regexp.is_empty() => p.add(
                format!("{f}.regexp"),
                &n.regexp,
                "is set with a replacement; expected one of them (RFC 3403), the other empty or `.`",
            ),
            Ok(_) => {}
        }
    }
    for (i, t) in r.txt.iter().enumerate() {
        if t.len() > MAX_TXT {
            p.add(
                format!("{rf}.txt[{i}]"),
                t,
                format!("is {} bytes; expected at most {MAX_TXT}", t.len()),
            );
        }
    }
    for (i, t) in r.ptr.iter().enumerate() {
        if let Err(e) = absolute(t, origin) {
            p.add(format!("{rf}.ptr[{i}]"), t, e);
        }
    }
}

fn check_ttl(p: &mut Problems, field: &str, t: &At<Dur>) {
    if t.0 > Duration::from_secs(i32::MAX as u64) {
        p.add(field, t, "is longer than 68 years; expected e.g. 60s or 1h");
    }
}

fn check_check(p: &mut Problems, field: &str, c: &CheckConfig, name: &At<String>) {
    match (&c.tcp, &c.http) {
        (None, None) => p.add(
            field,
            name,
            "names no check; expected `tcp: PORT` or `http: URL`",
        ),
        (Some(t), Some(_)) => p.add(
            field,
            t,
            "has both tcp and http; expected exactly one of them",
        ),
        (Some(t), None) if t.value == 0 => {
            p.add(format!("{field}.tcp"), t, "is 0; expected a port 1-65535")
        }
        (None, Some(u)) => {
            if let Err(e) = parse_http_url(u) {
                p.add(format!("{field}.http"), u, e);
            }
        }
        _ => {}
    }
    if c.interval.0 < Duration::from_millis(100) {
        p.add(
            format!("{field}.interval"),
            &c.interval,
            "is shorter than 100ms; expected e.g. 5s",
        );
    }
    if c.timeout.0.is_zero() || c.timeout.0 > c.interval.0 {
        p.add(
            format!("{field}.timeout"),
            &c.timeout,
            "must be more than 0 and at most the interval; expected e.g. 1s",
        );
    }
    for (k, v) in [("fall", &c.fall), ("rise", &c.rise)] {
        if v.value == 0 || v.value > 100 {
            p.add(format!("{field}.{k}"), v, "expected a count from 1 to 100");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        assert_eq!(
            parse_http_url("http://prov.lab.test:8080/healthz").unwrap(),
            ("prov.lab.test".into(), 8080, "/healthz".into())
        );
        assert_eq!(
            parse_http_url("http://h").unwrap(),
            ("h".into(), 80, "/".into())
        );
        assert!(parse_http_url("https://h/").is_err());
        assert!(parse_http_url("http://h:99999/").is_err());
        assert!(parse_http_url("http://:80/").is_err());
    }

    #[test]
    fn names_are_made_absolute() {
        let z = zone_name("lab.test").unwrap();
        assert_eq!(absolute("prov", &z).unwrap().to_string(), "prov.lab.test.");
        assert_eq!(absolute("@", &z).unwrap().to_string(), "lab.test.");
        assert_eq!(absolute("x.other.", &z).unwrap().to_string(), "x.other.");
        assert!(absolute("a..b", &z).is_err());
        assert!(zone_name("").is_err());
    }
}
