//! DHCP configuration: the YAML ("wire") form, and the validated form the server uses
//! ([`Settings`]), so nothing at run time re-checks config. Validation reports every
//! problem with its field and line through the same words `provbox check` prints.
//!
//! A struct whose keys are all optional says `#[serde(default)]` once, with its defaults in
//! `impl Default`; one with a required key marks only its lists `default` (serde takes an
//! `Option` left out as `None`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::confkit::{At, Dur, ListenerSpec, Problems, Transport};
use crate::devices::Mac;

use super::options::{self, OptValue};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    /// Interfaces answered on (SO_BINDTODEVICE); DHCP is never answered elsewhere.
    pub interfaces: Vec<At<String>>,
    /// UDP port the server listens on (67; clients are always answered on 68).
    pub port: At<u16>,
    /// Messages per second accepted from one MAC; more are dropped and counted.
    pub rate_limit_per_mac: At<u32>,
    /// How long a declined address is kept out of the pool.
    pub decline_quarantine: Dur,
    /// How long an offered address is held for the client that was offered it.
    pub offer_hold: Dur,
    /// Options for every subnet (subnet, option-set and reservation options override).
    pub options: Vec<OptionEntry>,
    /// Options for devices matched by vendor class (option 60) prefix or MAC prefix.
    pub option_sets: Vec<OptionSetConfig>,
    pub subnets: Vec<SubnetConfig>,
    /// BOOTP header fields for boot ROMs (PXE-era firmware, some phones).
    pub boot: BootConfig,
    /// `server` hands out addresses; `proxy` answers beside the site's own DHCP server
    /// with provisioning options only, never an address, never a NAK, never a lease.
    pub mode: Mode,
    /// Server mode: NAK a REQUEST for an address it cannot give even when the client
    /// holds no lease here (true, as Kea's default), or stay silent then (false).
    pub authoritative: bool,
    /// Proxy mode: clients whose vendor class (option 60) starts with one of these take
    /// an option-only OFFER (`yiaddr` 0) beside the site server's offer, as PXE ROMs do.
    /// Others get options only through DHCPINFORM: a plain client would take the
    /// address-less offer if it came first.
    pub proxy_offer_vendor_classes: Vec<String>,
    /// Relay agents whose option 82 (circuit-id, remote-id) names a switch port: a relayed
    /// message (`giaddr` set) counts its option 82 only when `giaddr` is listed here.
    /// Empty: any relay's. Never a client's own (unrelayed) option 82.
    pub trusted_relays: Vec<Ipv4Addr>,
}

/// What provbox is on the segment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Server,
    Proxy,
}

/// `siaddr`, `sname` and `file` of every reply. A field left unset falls back to the
/// device's option 66 (siaddr when it is an address, and sname) and 67 (file) when the
/// client did not ask for those options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// `siaddr`: the server a boot ROM fetches its file from.
    pub next_server: Option<Ipv4Addr>,
    /// `sname`, up to 63 bytes.
    pub server_name: Option<At<String>>,
    /// `file` when option 93 matches no `by_arch` entry, up to 127 bytes.
    pub file: Option<At<String>>,
    /// Client system architecture (option 93, RFC 4578: 0 BIOS, 7 x64 UEFI, ...) → file.
    pub by_arch: BTreeMap<u16, At<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            interfaces: Vec::new(),
            port: At::new(67),
            rate_limit_per_mac: At::new(20),
            decline_quarantine: Dur(Duration::from_secs(3600)),
            offer_hold: Dur(Duration::from_secs(30)),
            options: Vec::new(),
            option_sets: Vec::new(),
            subnets: Vec::new(),
            boot: BootConfig::default(),
            mode: Mode::Server,
            authoritative: true,
            proxy_offer_vendor_classes: vec!["PXEClient".into()],
            trusted_relays: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    /// `198.18.0.0/24`
    pub subnet: At<String>,
    /// Ranges handed out: `198.18.0.100-198.18.0.199`.
    #[serde(default)]
    pub pools: Vec<At<String>>,
    /// provbox's address on this subnet (server identifier). Default: the receiving
    /// interface's address in the subnet.
    pub server_address: Option<At<Ipv4Addr>>,
    pub router: Option<Ipv4Addr>,
    /// Option 6. Default: provbox's own address when `dns.enabled`.
    pub dns_servers: Option<Vec<Ipv4Addr>>,
    pub domain_name: Option<String>,
    /// Option 42.
    #[serde(default)]
    pub ntp_servers: Vec<Ipv4Addr>,
    /// Option 2, seconds east of UTC.
    pub time_offset: Option<i32>,
    #[serde(default = "default_lease")]
    pub lease_time: Dur,
    /// T1; default half the lease.
    pub renew_time: Option<Dur>,
    /// T2; default 7/8 of the lease.
    pub rebind_time: Option<Dur>,
    #[serde(default)]
    pub options: Vec<OptionEntry>,
    #[serde(default)]
    pub reservations: Vec<ReservationConfig>,
}

fn default_lease() -> Dur {
    Dur(Duration::from_secs(3600))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationConfig {
    pub mac: Option<At<String>>,
    /// Client identifier (option 61) as hex, e.g. `01:00:0e:08:12:34:56`.
    pub client_id: Option<At<String>>,
    /// Switch port: the relay agent's circuit-id (option 82 sub-option 1) as text, e.g.
    /// `bench-3/port-12`. Matched only on relayed messages (giaddr set).
    pub circuit: Option<At<String>>,
    /// With `circuit`: the relay's remote-id (option 82 sub-option 2) must also match.
    pub remote_id: Option<At<String>>,
    /// With `circuit`: the relay address (giaddr) must also match.
    pub relay: Option<Ipv4Addr>,
    pub address: At<Ipv4Addr>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub options: Vec<OptionEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSetConfig {
    pub name: At<String>,
    /// Matches when option 60 starts with this text (`CP-8831-3PCC`, `Polycom-`).
    pub vendor_class: Option<String>,
    /// Matches when the MAC starts with these bytes (`00:0e:08` = an OUI).
    pub mac_prefix: Option<At<String>>,
    #[serde(default)]
    pub options: Vec<OptionEntry>,
}

/// One option by code with exactly one typed value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionEntry {
    pub code: At<u8>,
    pub ip: Option<Ipv4Addr>,
    pub ips: Option<Vec<Ipv4Addr>>,
    pub string: Option<String>,
    pub hex: Option<String>,
    #[serde(rename = "u8")]
    pub v_u8: Option<u8>,
    #[serde(rename = "u16")]
    pub v_u16: Option<u16>,
    #[serde(rename = "u32")]
    pub v_u32: Option<u32>,
    #[serde(rename = "i32")]
    pub v_i32: Option<i32>,
    #[serde(rename = "bool")]
    pub v_bool: Option<bool>,
    /// Encapsulated sub-options (RFC 2132 8.4, e.g. option 43 vendor data): each one is
    /// `{code, <one typed value>}`, sent as code, length, value, in the order given.
    pub suboptions: Option<Vec<OptionEntry>>,
    /// Send even when the client's parameter request list (55) does not ask for it.
    #[serde(default)]
    pub force: bool,
}

// ---------------------------------------------------------------- validated form

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interfaces: Vec<String>,
    pub port: u16,
    pub rate_per_mac: u32,
    pub quarantine: Duration,
    pub offer_hold: Duration,
    pub global: Vec<OptValue>,
    pub sets: Vec<OptionSet>,
    pub subnets: Vec<Subnet>,
    pub boot: Boot,
    pub mode: Mode,
    pub authoritative: bool,
    /// Option 60 prefixes that get a proxy OFFER.
    pub proxy_offer: Vec<Vec<u8>>,
    /// `giaddr`s whose option 82 is believed (empty: every relay's).
    pub trusted_relays: Vec<Ipv4Addr>,
}

/// Validated [`BootConfig`]: bytes that fit their header fields.
#[derive(Debug, Clone, Default)]
pub struct Boot {
    pub next_server: Option<Ipv4Addr>,
    pub server_name: Option<Vec<u8>>,
    pub file: Option<Vec<u8>>,
    pub by_arch: Vec<(u16, Vec<u8>)>,
}

impl Boot {
    /// The boot file for a client of architecture `arch` (option 93's first type).
    pub fn file_for(&self, arch: Option<u16>) -> Option<&[u8]> {
        arch.and_then(|a| self.by_arch.iter().find(|(k, _)| *k == a))
            .map(|(_, f)| f.as_slice())
            .or(self.file.as_deref())
    }
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// Inclusive ranges as u32.
    pub pools: Vec<(u32, u32)>,
    pub server_address: Option<Ipv4Addr>,
    pub lease: Duration,
    pub renew: Duration,
    pub rebind: Duration,
    pub options: Vec<OptValue>,
    /// No option 6 configured: use our own address when DNS is on.
    pub dns_default: bool,
    pub reservations: Vec<Reservation>,
}

impl Subnet {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.pools.iter().any(|&(a, b)| a <= n && n <= b)
    }
    pub fn pool_size(&self) -> u64 {
        self.pools.iter().map(|&(a, b)| (b - a) as u64 + 1).sum()
    }
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub mac: Option<Mac>,
    pub client_id: Option<Vec<u8>>,
    pub circuit: Option<Circuit>,
    pub address: Ipv4Addr,
    pub hostname: Option<String>,
    pub options: Vec<OptValue>,
}

/// A switch port as a relay agent names it (option 82).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    pub circuit_id: Vec<u8>,
    pub remote_id: Option<Vec<u8>>,
    pub relay: Option<Ipv4Addr>,
}

impl Circuit {
    /// Does a relayed message (relay address `giaddr`, option 82 sub-options) come from
    /// this port?
    pub fn matches(&self, giaddr: Ipv4Addr, circuit_id: &[u8], remote_id: Option<&[u8]>) -> bool {
        self.circuit_id == circuit_id
            && self
                .remote_id
                .as_deref()
                .is_none_or(|want| remote_id == Some(want))
            && self.relay.is_none_or(|r| r == giaddr)
    }

    /// `bench-3/port-12` (remote-id and relay shown when configured), for logs and the
    /// device timeline.
    pub fn describe(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.circuit_id).into_owned();
        if let Some(r) = &self.remote_id {
            s.push_str(&format!(" remote-id {}", String::from_utf8_lossy(r)));
        }
        if let Some(g) = self.relay {
            s.push_str(&format!(" via {g}"));
        }
        s
    }
}

#[derive(Debug, Clone)]
pub struct OptionSet {
    pub name: String,
    pub vendor_class: Option<Vec<u8>>,
    pub mac_prefix: Option<Vec<u8>>,
    pub options: Vec<OptValue>,
}

impl OptionSet {
    pub fn matches(&self, mac: &Mac, vendor_class: Option<&[u8]>) -> bool {
        let vc_ok = match (&self.vendor_class, vendor_class) {
            (None, _) => true,
            (Some(p), Some(vc)) => vc.starts_with(p),
            (Some(_), None) => false,
        };
        let mac_ok = self
            .mac_prefix
            .as_ref()
            .is_none_or(|p| mac.0.starts_with(p));
        vc_ok && mac_ok
    }
}

/// Where validation reports a problem: (field, line, col, message).
pub type Report<'a> = dyn FnMut(String, usize, usize, String) + 'a;

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.trim().split_once('/')?;
    let ip: Ipv4Addr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok()?;
    (prefix <= 32).then_some((ip, prefix))
}

fn parse_range(s: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (a, b) = s.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | ' ' | '.'))
        .collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect()
}

fn compile_options(
    field: &str,
    list: &[OptionEntry],
    r: &mut dyn FnMut(String, usize, usize, String),
) -> Vec<OptValue> {
    let mut out: Vec<OptValue> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match options::from_entry(e) {
            Ok(v) => options::merge(&mut out, std::slice::from_ref(&v)),
            Err(msg) => r(f, e.code.line, e.code.col, msg),
        }
    }
    out
}

impl Config {
    pub fn resolve_paths(&mut self, _base: &Path) {}

    pub fn validate(&self, p: &mut Problems) {
        if !self.enabled {
            return;
        }
        let _ = self.compile(&mut |f, l, c, m| p.add_at(f, l, c, m));
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        let addr = At {
            value: SocketAddr::from(([0, 0, 0, 0], self.port.value)),
            line: self.port.line,
            col: self.port.col,
        };
        vec![ListenerSpec::new("dhcp.port", Transport::Udp, &addr)]
    }

    /// The validated settings, or `None` after reporting every problem.
    pub fn compile(&self, report: &mut Report<'_>) -> Option<Settings> {
        let mut count = 0usize;
        let mut r = |f: String, l: usize, c: usize, m: String| {
            count += 1;
            report(f, l, c, m)
        };
        if self.interfaces.is_empty() {
            r(
                "dhcp.interfaces".into(),
                0,
                0,
                "no interface; expected a list of interface names such as [eth1] (DHCP answers only there)".into(),
            );
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                r(
                    format!("dhcp.interfaces[{i}]"),
                    name.line,
                    name.col,
                    format!(
                        "`{}` is not an interface name; expected 1-15 characters",
                        name.value
                    ),
                );
            }
        }
        if self.subnets.is_empty() {
            r(
                "dhcp.subnets".into(),
                0,
                0,
                "no subnet; expected at least one with `subnet` and `pools`".into(),
            );
        }
        if self.rate_limit_per_mac.value == 0 {
            r(
                "dhcp.rate_limit_per_mac".into(),
                self.rate_limit_per_mac.line,
                self.rate_limit_per_mac.col,
                "is 0; expected at least 1 message per second".into(),
            );
        }
        if self.proxy_offer_vendor_classes.iter().any(|v| v.is_empty()) {
            // An empty prefix matches every client: plain clients would take an
            // address-less offer and end up with no address.
            r(
                "dhcp.proxy_offer_vendor_classes".into(),
                0,
                0,
                "holds an empty prefix; expected vendor class prefixes such as PXEClient".into(),
            );
        }
        let global = compile_options("dhcp.options", &self.options, &mut r);
        let mut sets = Vec::new();
        for (i, s) in self.option_sets.iter().enumerate() {
            let field = format!("dhcp.option_sets[{i}]");
            let mac_prefix = match &s.mac_prefix {
                None => None,
                Some(m) => match parse_hex(m) {
                    Some(b) if b.len() <= 6 => Some(b),
                    _ => {
                        r(
                            format!("{field}.mac_prefix"),
                            m.line,
                            m.col,
                            format!("`{}` is not a MAC prefix; expected e.g. 00:0e:08", m.value),
                        );
                        None
                    }
                },
            };
            if s.vendor_class.is_none() && s.mac_prefix.is_none() {
                r(
                    field.clone(),
                    s.name.line,
                    s.name.col,
                    "matches nothing; expected `vendor_class` and/or `mac_prefix`".into(),
                );
            }
            sets.push(OptionSet {
                name: s.name.value.clone(),
                vendor_class: s.vendor_class.as_ref().map(|v| v.as_bytes().to_vec()),
                mac_prefix,
                options: compile_options(&format!("{field}.options"), &s.options, &mut r),
            });
        }
        let mut subnets: Vec<Subnet> = Vec::new();
        for (i, s) in self.subnets.iter().enumerate() {
            if let Some(sn) = compile_subnet(i, s, self.mode, &mut r) {
                for (j, o) in subnets.iter().enumerate() {
                    if o.contains(sn.network) || sn.contains(o.network) {
                        r(
                            format!("dhcp.subnets[{i}].subnet"),
                            s.subnet.line,
                            s.subnet.col,
                            format!(
                                "{} overlaps dhcp.subnets[{j}] ({}); expected disjoint subnets",
                                sn.cidr(),
                                o.cidr()
                            ),
                        );
                    }
                }
                subnets.push(sn);
            }
        }
        let boot = compile_boot(&self.boot, &mut r);
        if count > 0 {
            return None;
        }
        Some(Settings {
            interfaces: self.interfaces.iter().map(|i| i.value.clone()).collect(),
            port: self.port.value,
            rate_per_mac: self.rate_limit_per_mac.value,
            quarantine: self.decline_quarantine.0,
            offer_hold: self.offer_hold.0,
            global,
            sets,
            subnets,
            boot,
            mode: self.mode,
            authoritative: self.authoritative,
            proxy_offer: self
                .proxy_offer_vendor_classes
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect(),
            trusted_relays: self.trusted_relays.clone(),
        })
    }
}

fn compile_boot(b: &BootConfig, r: &mut dyn FnMut(String, usize, usize, String)) -> Boot {
    let mut text = |field: String, v: &At<String>, max: usize| -> Option<Vec<u8>> {
        let len = v.value.len();
        if len == 0 || len > max || v.value.contains('\0') {
            r(
                field,
                v.line,
                v.col,
                format!(
                    "is {len} bytes long; expected 1 to {max} bytes without NUL (the header field is fixed)"
                ),
            );
            return None;
        }
        Some(v.value.as_bytes().to_vec())
    };
    Boot {
        next_server: b.next_server,
        server_name: b
            .server_name
            .as_ref()
            .and_then(|v| text("dhcp.boot.server_name".into(), v, super::wire::SNAME_MAX)),
        file: b
            .file
            .as_ref()
            .and_then(|v| text("dhcp.boot.file".into(), v, super::wire::FILE_MAX)),
        by_arch: b
            .by_arch
            .iter()
            .filter_map(|(arch, v)| {
                let f = text(
                    format!("dhcp.boot.by_arch.{arch}"),
                    v,
                    super::wire::FILE_MAX,
                )?;
                Some((*arch, f))
            })
            .collect(),
    }
}

fn compile_subnet(
    i: usize,
    s: &SubnetConfig,
    mode: Mode,
    r: &mut dyn FnMut(String, usize, usize, String),
) -> Option<Subnet> {
    let field = format!("dhcp.subnets[{i}]");
    let Some((net, prefix)) = parse_cidr(&s.subnet) else {
        r(
            format!("{field}.subnet"),
            s.subnet.line,
            s.subnet.col,
            format!(
                "`{}` is not a subnet; expected e.g. 198.18.0.0/24",
                s.subnet.value
            ),
        );
        return None;
    };
    if !(8..=30).contains(&prefix) {
        r(
            format!("{field}.subnet"),
            s.subnet.line,
            s.subnet.col,
            format!("/{prefix} is not usable; expected a prefix length from 8 to 30"),
        );
        return None;
    }
    let mut sn = Subnet {
        network: net,
        prefix,
        pools: Vec::new(),
        server_address: s.server_address.as_ref().map(|a| a.value),
        lease: s.lease_time.0,
        renew: Duration::ZERO,
        rebind: Duration::ZERO,
        options: Vec::new(),
        dns_default: s.dns_servers.is_none(),
        reservations: Vec::new(),
    };
    if u32::from(net) & !sn.mask() != 0 {
        r(
            format!("{field}.subnet"),
            s.subnet.line,
            s.subnet.col,
            format!(
                "{} has host bits set; expected the network address {}/{prefix}",
                s.subnet.value,
                Ipv4Addr::from(u32::from(net) & sn.mask())
            ),
        );
        return None;
    }
    let (mask, bcast) = (sn.mask(), sn.broadcast());
    let usable =
        move |ip: Ipv4Addr| u32::from(ip) & mask == u32::from(net) && ip != net && ip != bcast;
    if mode == Mode::Proxy {
        // The site's server owns the addresses: a pool or reservation here would be a
        // second server handing out the same segment.
        if let Some(p) = s.pools.first() {
            r(
                format!("{field}.pools"),
                p.line,
                p.col,
                "is set in proxy mode; expected none (dhcp.mode: proxy never hands out an address)"
                    .into(),
            );
        }
        if let Some(rs) = s.reservations.first() {
            r(
                format!("{field}.reservations"),
                rs.address.line,
                rs.address.col,
                "is set in proxy mode; expected none (dhcp.mode: proxy never hands out an address)"
                    .into(),
            );
        }
    } else if s.pools.is_empty() && s.reservations.is_empty() {
        r(
            format!("{field}.pools"),
            s.subnet.line,
            s.subnet.col,
            "no pool and no reservation; expected e.g. pools: [\"198.18.0.100-198.18.0.199\"]"
                .into(),
        );
    }
    for (j, p) in s.pools.iter().enumerate() {
        match parse_range(p) {
            Some((a, b)) if usable(a) && usable(b) && a <= b => {
                sn.pools.push((u32::from(a), u32::from(b)));
            }
            _ => r(
                format!("{field}.pools[{j}]"),
                p.line,
                p.col,
                format!(
                    "`{}` is not a range inside {}; expected FIRST-LAST of usable addresses in the subnet",
                    p.value,
                    sn.cidr()
                ),
            ),
        }
    }
    if let Some(a) = &s.server_address
        && !sn.contains(a.value)
    {
        r(
            format!("{field}.server_address"),
            a.line,
            a.col,
            format!(
                "{} is outside {}; expected an address in the subnet",
                a.value,
                sn.cidr()
            ),
        );
    }
    let lease = s.lease_time.0;
    if lease < Duration::from_secs(10) {
        r(
            format!("{field}.lease_time"),
            0,
            0,
            "is shorter than 10s; expected e.g. 1h".into(),
        );
    }
    sn.renew = s.renew_time.map(|d| d.0).unwrap_or(lease / 2);
    sn.rebind = s.rebind_time.map(|d| d.0).unwrap_or(lease * 7 / 8);
    if !(sn.renew <= sn.rebind && sn.rebind <= lease) {
        r(
            format!("{field}.renew_time"),
            0,
            0,
            "renew/rebind out of order; expected renew_time <= rebind_time <= lease_time".into(),
        );
    }
    // Named options first, so a generic `options` entry with the same code wins.
    let mut opts = Vec::new();
    if let Some(rt) = s.router {
        opts.push(OptValue::new(3, rt.octets().to_vec()));
    }
    if let Some(d) = &s.dns_servers {
        opts.push(OptValue::new(
            6,
            d.iter().flat_map(|a| a.octets()).collect(),
        ));
    }
    if let Some(d) = &s.domain_name {
        opts.push(OptValue::new(15, d.as_bytes().to_vec()));
    }
    if !s.ntp_servers.is_empty() {
        opts.push(OptValue::new(
            42,
            s.ntp_servers.iter().flat_map(|a| a.octets()).collect(),
        ));
    }
    if let Some(t) = s.time_offset {
        opts.push(OptValue::new(2, t.to_be_bytes().to_vec()));
    }
    let more = compile_options(&format!("{field}.options"), &s.options, &mut *r);
    options::merge(&mut opts, &more);
    sn.options = opts;
    for (j, rs) in s.reservations.iter().enumerate() {
        let rf = format!("{field}.reservations[{j}]");
        let mac = match &rs.mac {
            None => None,
            Some(m) => match m.parse::<Mac>() {
                Ok(m) => Some(m),
                Err(e) => {
                    r(format!("{rf}.mac"), m.line, m.col, e);
                    None
                }
            },
        };
        let client_id = match &rs.client_id {
            None => None,
            Some(c) => match parse_hex(c) {
                Some(b) => Some(b),
                None => {
                    r(
                        format!("{rf}.client_id"),
                        c.line,
                        c.col,
                        format!(
                            "`{}` is not hex; expected e.g. 01:00:0e:08:12:34:56",
                            c.value
                        ),
                    );
                    None
                }
            },
        };
        let text = |v: &At<String>, what: &str, r: &mut dyn FnMut(String, usize, usize, String)| {
            if v.value.is_empty() || v.value.len() > 255 {
                r(
                    format!("{rf}.{what}"),
                    v.line,
                    v.col,
                    format!("is {} bytes long; expected 1 to 255", v.value.len()),
                );
            }
            v.value.as_bytes().to_vec()
        };
        let circuit = match &rs.circuit {
            Some(c) => Some(Circuit {
                circuit_id: text(c, "circuit", &mut *r),
                remote_id: rs.remote_id.as_ref().map(|v| text(v, "remote_id", &mut *r)),
                relay: rs.relay,
            }),
            None => {
                if let Some(v) = &rs.remote_id {
                    r(
                        format!("{rf}.remote_id"),
                        v.line,
                        v.col,
                        "without `circuit`; expected it beside a circuit-id".into(),
                    );
                }
                if rs.relay.is_some() {
                    r(
                        format!("{rf}.relay"),
                        rs.address.line,
                        rs.address.col,
                        "without `circuit`; expected it beside a circuit-id".into(),
                    );
                }
                None
            }
        };
        if rs.mac.is_none() && rs.client_id.is_none() && circuit.is_none() {
            r(
                rf.clone(),
                rs.address.line,
                rs.address.col,
                "names no device; expected `mac`, `client_id` or `circuit`".into(),
            );
        }
        if let Some(c) = &circuit
            && let Some(prev) = sn
                .reservations
                .iter()
                .position(|p: &Reservation| p.circuit.as_ref() == Some(c))
        {
            r(
                format!("{rf}.circuit"),
                rs.address.line,
                rs.address.col,
                format!(
                    "`{}` is already reserved by {field}.reservations[{prev}]; expected one address per port",
                    c.describe()
                ),
            );
        }
        if !usable(rs.address.value) {
            r(
                format!("{rf}.address"),
                rs.address.line,
                rs.address.col,
                format!(
                    "{} is not a usable address in {}; expected a host address in the subnet",
                    rs.address.value,
                    sn.cidr()
                ),
            );
        }
        if let Some(prev) = sn
            .reservations
            .iter()
            .position(|p: &Reservation| p.address == rs.address.value)
        {
            r(
                format!("{rf}.address"),
                rs.address.line,
                rs.address.col,
                format!(
                    "{} is already reserved by {field}.reservations[{prev}]; expected one device per address",
                    rs.address.value
                ),
            );
        }
        sn.reservations.push(Reservation {
            mac,
            client_id,
            circuit,
            address: rs.address.value,
            hostname: rs.hostname.clone(),
            options: compile_options(&format!("{rf}.options"), &rs.options, &mut *r),
        });
    }
    Some(sn)
}
