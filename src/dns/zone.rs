//! Zone data built from the configuration: immutable once built, swapped whole on reload.
//! Answers are decided here (rotation and health filtering included); the handler only
//! turns them into messages.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NAPTR, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::config::{self, Config, MAX_CNAME_CHAIN, RecordConfig, Target};
use super::health::Health;
use crate::devices::Registry;

/// One address of a name, with the health state of its check (if it has one).
pub(super) struct Addr {
    pub record: Record,
    pub health: Option<Arc<Health>>,
}

/// The records of one name.
#[derive(Default)]
pub(super) struct Node {
    pub a: Vec<Addr>,
    pub aaaa: Vec<Addr>,
    /// An alias: its CNAME record and the target (then nothing else is set).
    pub alias: Option<(Record, LowerName)>,
    /// SRV, NAPTR, TXT and PTR records, answered by type in configured order.
    pub other: Vec<Record>,
    /// Advanced per answer so multi-address answers rotate.
    next: AtomicUsize,
}

pub(super) struct Zone {
    pub origin: LowerName,
    pub soa: Record,
    pub ns: Vec<Record>,
}

pub(super) struct LeaseDomain {
    pub origin: LowerName,
    pub name: Name,
    pub ttl: u32,
}

pub(super) struct ZoneData {
    /// Longest origin first, so the most specific zone wins.
    zones: Vec<Zone>,
    names: HashMap<LowerName, Node>,
    /// PTR records for configured addresses (first name listed with an address wins),
    /// answered whether or not a reverse zone is configured.
    reverse: HashMap<LowerName, Record>,
    /// Names that exist only as parents of configured names (NODATA, not NXDOMAIN).
    parents: HashSet<LowerName>,
    leases: Option<LeaseDomain>,
    pub forwarders: Vec<SocketAddr>,
    pub forward_timeout: Duration,
    /// Encoded answers of this generation (a reload starts with an empty one).
    pub cache: super::fastpath::Cache,
}

/// What to answer.
pub(super) enum Answer<'a> {
    /// Authoritative answer from a local zone.
    Local {
        rcode: ResponseCode,
        answers: Vec<&'a Record>,
        /// Answers made for this query (lease names).
        owned: Vec<Record>,
        authority: Vec<&'a Record>,
    },
    /// Not ours: forward, or refuse when no forwarders are configured.
    Outside,
}

fn ttl_secs(d: Duration) -> u32 {
    d.as_secs().min(i32::MAX as u64) as u32
}

fn make_zone(origin: &Name, nameserver: &Name, ttl: u32, serial: u32) -> Zone {
    let hostmaster = Name::from_ascii("hostmaster")
        .and_then(|h| h.append_domain(origin))
        .unwrap_or_else(|_| origin.clone());
    let soa = Record::from_rdata(
        origin.clone(),
        ttl,
        RData::SOA(SOA::new(
            nameserver.clone(),
            hostmaster,
            serial,
            3600,
            600,
            86400,
            ttl,
        )),
    );
    let ns = Record::from_rdata(origin.clone(), ttl, RData::NS(NS(nameserver.clone())));
    Zone {
        origin: LowerName::from(origin),
        soa,
        ns: vec![ns],
    }
}

impl ZoneData {
    /// Build from a validated configuration and the current health states.
    pub(super) fn build(
        cfg: &Config,
        health: &HashMap<Target, Arc<Health>>,
    ) -> anyhow::Result<ZoneData> {
        // The serial changes with every build, so secondaries (if any) notice a reload.
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let default_ttl = ttl_secs(cfg.ttl.0);
        let mut zones = Vec::new();
        let mut names: HashMap<LowerName, Node> = HashMap::new();
        let mut parents = HashSet::new();
        let mut reverse = HashMap::new();
        for z in &cfg.zones {
            let origin = config::zone_name(&z.name).map_err(anyhow::Error::msg)?;
            let ns = config::absolute(&z.nameserver, &origin).map_err(anyhow::Error::msg)?;
            zones.push(make_zone(&origin, &ns, default_ttl, serial));
            for r in &z.records {
                let name = config::absolute(&r.name, &origin).map_err(anyhow::Error::msg)?;
                let ttl = r.ttl.as_ref().map(|t| ttl_secs(t.0)).unwrap_or(default_ttl);
                let targets = r.targets();
                let health_of = |ip: IpAddr| {
                    targets
                        .iter()
                        .find(|t| t.ip == ip)
                        .and_then(|t| health.get(t).cloned())
                };
                let node = names.entry(LowerName::from(&name)).or_default();
                for a in &r.a {
                    node.a.push(Addr {
                        record: Record::from_rdata(name.clone(), ttl, RData::A(A(a.value))),
                        health: health_of(IpAddr::V4(a.value)),
                    });
                }
                for a in &r.aaaa {
                    node.aaaa.push(Addr {
                        record: Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(a.value))),
                        health: health_of(IpAddr::V6(a.value)),
                    });
                }
                other_records(r, &name, &origin, ttl, node)?;
                for ip in r.addresses() {
                    reverse
                        .entry(LowerName::from(Name::from(ip)))
                        .or_insert_with(|| {
                            Record::from_rdata(Name::from(ip), ttl, RData::PTR(PTR(name.clone())))
                        });
                }
                let mut p = name.base_name();
                while origin.zone_of(&p) && p != origin {
                    parents.insert(LowerName::from(&p));
                    p = p.base_name();
                }
            }
        }
        let leases = match &cfg.leases {
            Some(l) => {
                let name = config::zone_name(&l.domain).map_err(anyhow::Error::msg)?;
                let origin = LowerName::from(&name);
                if !zones.iter().any(|z| z.origin.zone_of(&origin)) {
                    let ns = Name::from_ascii("ns")?.append_domain(&name)?;
                    zones.push(make_zone(&name, &ns, default_ttl, serial));
                }
                Some(LeaseDomain {
                    origin,
                    name,
                    ttl: l.ttl.as_ref().map(|t| ttl_secs(t.0)).unwrap_or(default_ttl),
                })
            }
            None => None,
        };
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin.num_labels()));
        Ok(ZoneData {
            zones,
            names,
            reverse,
            parents,
            leases,
            forwarders: cfg.forwarders.iter().map(|f| f.value).collect(),
            forward_timeout: cfg.forward_timeout.0,
            cache: Default::default(),
        })
    }

    /// Whether the answer for `name` depends only on this zone data and health states:
    /// configured names and aliases that end at one (or outside the zones), or (with no
    /// forwarders) a REFUSED. Anything reaching a lease name is not.
    pub(super) fn cacheable(&self, name: &LowerName) -> bool {
        let mut n = name;
        for hop in 0..=MAX_CNAME_CHAIN {
            if let Some(node) = self.names.get(n) {
                match &node.alias {
                    Some((_, target)) => {
                        n = target;
                        continue;
                    }
                    None => return true,
                }
            }
            if self.reverse.contains_key(n) {
                return true;
            }
            if self.lease_ptr_ip(n).is_some()
                || self.leases.as_ref().is_some_and(|l| l.origin.zone_of(n))
            {
                return false;
            }
            // After an alias, a name outside the zones is not looked up: the CNAME alone.
            return hop > 0 || self.zone_for(n).is_some() || self.forwarders.is_empty();
        }
        true
    }

    /// Whether a query for `name` is answered here (cheap: decides whether a transport
    /// hands it to its own task for the upstream round trip).
    pub(super) fn is_local(&self, name: &LowerName, leases: &Registry) -> bool {
        self.zone_for(name).is_some()
            || self.reverse.contains_key(name)
            || self
                .lease_ptr_ip(name)
                .is_some_and(|ip| leases.hostname_label(ip).is_some())
    }

    fn zone_for(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|z| z.origin.zone_of(name))
    }

    /// The leased address a reverse name asks about, when lease names are on.
    fn lease_ptr_ip(&self, name: &LowerName) -> Option<IpAddr> {
        self.leases.as_ref()?;
        let net = Name::from(name).parse_arpa_name().ok()?;
        (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
    }

    /// The answer for `qname`: aliases are followed (at most [`MAX_CNAME_CHAIN`]) and their
    /// CNAME records come first, then what the last name has, so a phone asking for an
    /// alias gets the target's (rotating, healthy) addresses in the same answer.
    pub(super) fn lookup<'a>(
        &'a self,
        qname: &LowerName,
        qtype: RecordType,
        leases: &Registry,
    ) -> Answer<'a> {
        let mut chain: Vec<&'a Record> = Vec::new();
        let mut name = qname;
        if !matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            while chain.len() < MAX_CNAME_CHAIN
                && let Some((cname, target)) = self.names.get(name).and_then(|n| n.alias.as_ref())
            {
                chain.push(cname);
                name = target;
            }
        }
        let end = self.at(name, qtype, leases);
        if chain.is_empty() {
            return end;
        }
        match end {
            Answer::Local {
                rcode,
                answers,
                owned,
                authority,
            } => {
                chain.extend(answers);
                Answer::Local {
                    rcode,
                    answers: chain,
                    owned,
                    authority,
                }
            }
            // The target is not ours: the alias is the whole answer; the resolver goes on.
            Answer::Outside => Answer::Local {
                rcode: ResponseCode::NoError,
                answers: chain,
                owned: Vec::new(),
                authority: Vec::new(),
            },
        }
    }

    /// What one name (not followed further) answers.
    fn at<'a>(&'a self, qname: &LowerName, qtype: RecordType, leases: &Registry) -> Answer<'a> {
        let node = self.names.get(qname);
        if node.is_none() {
            if let Some(ptr) = self.reverse.get(qname) {
                let hit = matches!(qtype, RecordType::PTR | RecordType::ANY);
                return Answer::Local {
                    rcode: ResponseCode::NoError,
                    answers: if hit { vec![ptr] } else { Vec::new() },
                    owned: Vec::new(),
                    authority: Vec::new(),
                };
            }
            if let Some(ip) = self.lease_ptr_ip(qname) {
                match self.lease_ptr(qname, qtype, ip, leases) {
                    Answer::Outside => {}
                    found => return found,
                }
            }
        }
        let Some(zone) = self.zone_for(qname) else {
            return Answer::Outside;
        };
        let mut answers = Vec::new();
        let mut owned = Vec::new();
        let apex = *qname == zone.origin;
        if apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
            answers.push(&zone.soa);
        }
        if apex && matches!(qtype, RecordType::NS | RecordType::ANY) {
            answers.extend(zone.ns.iter());
        }
        if let Some(node) = node {
            if let Some((cname, _)) = &node.alias {
                // Asked for the CNAME itself (or ANY), or a chain cut at its limit.
                answers.push(cname);
            } else {
                // One turn per answer, shared by A and AAAA so both rotate.
                let turn = node.next.fetch_add(1, Ordering::Relaxed);
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    pick(&node.a, turn, &mut answers);
                }
                if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                    pick(&node.aaaa, turn, &mut answers);
                }
                answers.extend(
                    node.other
                        .iter()
                        .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype),
                );
            }
        } else if let Some(l) = &self.leases
            && l.origin.zone_of(qname)
            && !apex
            && let Some(ips) = lease_addresses(qname, l, leases)
        {
            for ip in ips {
                match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => owned.push(
                        Record::from_rdata(Name::from(qname), l.ttl, RData::A(A(v4))),
                    ),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => owned.push(
                        Record::from_rdata(Name::from(qname), l.ttl, RData::AAAA(AAAA(v6))),
                    ),
                    _ => {}
                }
            }
            return Answer::Local {
                rcode: ResponseCode::NoError,
                authority: if owned.is_empty() {
                    vec![&zone.soa]
                } else {
                    Vec::new()
                },
                answers,
                owned,
            };
        }
        let exists = apex
            || node.is_some()
            || self.parents.contains(qname)
            || self.leases.as_ref().is_some_and(|l| l.origin == *qname);
        let authority = if answers.is_empty() {
            // NODATA or NXDOMAIN: the SOA tells resolvers how long to cache the absence.
            vec![&zone.soa]
        } else {
            Vec::new()
        };
        Answer::Local {
            rcode: if exists {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            },
            answers,
            owned,
            authority,
        }
    }

    fn lease_ptr<'a>(
        &'a self,
        qname: &LowerName,
        qtype: RecordType,
        ip: IpAddr,
        leases: &Registry,
    ) -> Answer<'a> {
        let Some(l) = &self.leases else {
            return Answer::Outside;
        };
        let Some(host) = leases.hostname_label(ip) else {
            // Not a lease of ours: someone else's reverse zone.
            return Answer::Outside;
        };
        let mut owned = Vec::new();
        if matches!(qtype, RecordType::PTR | RecordType::ANY)
            && let Ok(target) = Name::from_ascii(&host).and_then(|h| h.append_domain(&l.name))
        {
            owned.push(Record::from_rdata(
                Name::from(qname),
                l.ttl,
                RData::PTR(PTR(target)),
            ));
        }
        Answer::Local {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            owned,
            authority: Vec::new(),
        }
    }
}

/// Healthy addresses in rotated order; all of them when none is healthy (a phone trying a
/// possibly dead server beats a phone with nothing to try).
fn pick<'a>(addrs: &'a [Addr], turn: usize, out: &mut Vec<&'a Record>) {
    if addrs.is_empty() {
        return;
    }
    let healthy = |a: &Addr| a.health.as_ref().is_none_or(|h| h.is_up());
    let up = addrs.iter().filter(|a| healthy(a)).count();
    let start = out.len();
    if up == 0 {
        out.extend(addrs.iter().map(|a| &a.record));
    } else {
        out.extend(addrs.iter().filter(|a| healthy(a)).map(|a| &a.record));
    }
    let n = out.len() - start;
    out[start..].rotate_left(turn % n);
}

/// The addresses leased under the first label of `qname` (one index lookup).
fn lease_addresses(qname: &LowerName, l: &LeaseDomain, leases: &Registry) -> Option<Vec<IpAddr>> {
    if qname.num_labels() != l.origin.num_labels() + 1 {
        return None;
    }
    let first = Name::from(qname).iter().next()?.to_ascii_lowercase();
    let ips = leases.by_hostname(std::str::from_utf8(&first).ok()?);
    (!ips.is_empty()).then_some(ips)
}

/// A record's CNAME, SRV, NAPTR, TXT and PTR data (validated already: names parse).
fn other_records(
    r: &RecordConfig,
    name: &Name,
    origin: &Name,
    ttl: u32,
    node: &mut Node,
) -> anyhow::Result<()> {
    let target = |s: &str| config::absolute(s, origin).map_err(anyhow::Error::msg);
    let rec = |data: RData| Record::from_rdata(name.clone(), ttl, data);
    if let Some(c) = &r.cname {
        let t = target(c)?;
        node.alias = Some((rec(RData::CNAME(CNAME(t.clone()))), LowerName::from(&t)));
    }
    for s in &r.srv {
        node.other.push(rec(RData::SRV(SRV::new(
            s.priority.value,
            s.weight.value,
            s.port.value,
            target(&s.target)?,
        ))));
    }
    for n in &r.naptr {
        let bytes = |s: &str| s.as_bytes().to_vec().into_boxed_slice();
        node.other.push(rec(RData::NAPTR(NAPTR::new(
            n.order.value,
            n.preference.value,
            bytes(&n.flags),
            bytes(&n.service),
            bytes(&n.regexp),
            target(&n.replacement)?,
        ))));
    }
    for t in &r.txt {
        // A character-string holds 255 bytes; longer text is several in one record.
        let parts: Vec<&[u8]> = if t.is_empty() {
            vec![&[]]
        } else {
            t.as_bytes().chunks(255).collect()
        };
        node.other.push(rec(RData::TXT(TXT::from_bytes(parts))));
    }
    for p in &r.ptr {
        node.other.push(rec(RData::PTR(PTR(target(p)?))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::registry::LeaseInfo;

    fn data(yaml: &str, health: &HashMap<Target, Arc<Health>>) -> ZoneData {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let cfg = crate::config::Config::parse(
            &format!("catalog:\n  roots: [files]\ndns:\n  enabled: true\n  listen: [\"127.0.0.1:5300\"]\n{yaml}"),
            &dir.path().join("config.yaml"),
        )
        .unwrap();
        ZoneData::build(&cfg.dns, health).unwrap()
    }

    /// The zones of `yaml` (no health checks) and an empty device registry.
    fn zone(yaml: &str) -> (ZoneData, Registry) {
        (data(yaml, &HashMap::new()), Registry::default())
    }

    /// The answer to `name`/`t`, as `ips` shows it.
    fn ask(d: &ZoneData, reg: &Registry, name: &str, t: RecordType) -> (ResponseCode, Vec<String>) {
        ips(&d.lookup(&ln(name), t, reg))
    }

    fn ln(s: &str) -> LowerName {
        s.parse().unwrap()
    }

    fn ips(a: &Answer<'_>) -> (ResponseCode, Vec<String>) {
        match a {
            Answer::Local {
                rcode,
                answers,
                owned,
                ..
            } => (
                *rcode,
                answers
                    .iter()
                    .copied()
                    .chain(owned.iter())
                    .map(|r| r.data.to_string())
                    .collect(),
            ),
            Answer::Outside => (ResponseCode::Refused, vec![]),
        }
    }

    const ZONE: &str = "  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [10.0.0.1, 10.0.0.2, 10.0.0.3]\n          check: { tcp: 80 }\n        - name: a.b\n          aaaa: [\"2001:db8::1\"]\n";

    #[test]
    fn answers_rotate() {
        let (d, reg) = zone(ZONE);
        let q = "PROV.lab.test.";
        let first = ask(&d, &reg, q, RecordType::A).1;
        let second = ask(&d, &reg, q, RecordType::A).1;
        assert_eq!(first, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(second, ["10.0.0.2", "10.0.0.3", "10.0.0.1"]);
    }

    #[test]
    fn unhealthy_left_out_unless_all_are() {
        let probe = |ip: &str| Target {
            ip: ip.parse().unwrap(),
            probe: config::Probe::Tcp(80),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 1,
        };
        let mut h = HashMap::new();
        let states: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|ip| {
                let s = Arc::new(Health::new());
                h.insert(probe(ip), s.clone());
                s
            })
            .collect();
        states[1].set(false);
        let d = data(ZONE, &h);
        let reg = Registry::default();
        let q = "prov.lab.test.";
        let mut got = ask(&d, &reg, q, RecordType::A).1;
        got.sort();
        assert_eq!(got, ["10.0.0.1", "10.0.0.3"]);
        for s in &states {
            s.set(false);
        }
        assert_eq!(ask(&d, &reg, q, RecordType::A).1.len(), 3);
    }

    #[test]
    fn nxdomain_nodata_and_outside() {
        let (d, reg) = zone(ZONE);
        assert_eq!(
            ask(&d, &reg, "nope.lab.test.", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(&d, &reg, "b.lab.test.", RecordType::A),
            (ResponseCode::NoError, vec![])
        );
        assert_eq!(
            ask(&d, &reg, "prov.lab.test.", RecordType::MX),
            (ResponseCode::NoError, vec![])
        );
        assert!(matches!(
            d.lookup(&ln("example.com."), RecordType::A, &reg),
            Answer::Outside
        ));
        assert_eq!(ask(&d, &reg, "lab.test.", RecordType::SOA).1.len(), 1);
        assert_eq!(
            ask(&d, &reg, "lab.test.", RecordType::NS).1,
            ["ns.lab.test."]
        );
    }

    #[test]
    fn lease_names_and_ptr() {
        let (d, reg) = zone(&format!("{ZONE}  leases:\n    domain: phones.lab.test\n"));
        for (ip, mac, hostname) in [
            ("198.18.0.57", "00:0e:08:aa:bb:cc", "SEP000E08AABBCC"),
            ("198.18.0.58", "00:0e:08:aa:bb:cd", "bad name"),
        ] {
            reg.lease_bound(
                ip.parse().unwrap(),
                LeaseInfo {
                    hostname: Some(hostname.into()),
                    ..LeaseInfo::of(mac.parse().unwrap())
                },
            );
        }
        let a = ask(&d, &reg, "sep000e08aabbcc.phones.lab.test.", RecordType::A);
        assert_eq!(a, (ResponseCode::NoError, vec!["198.18.0.57".to_string()]));
        let ptr = ask(&d, &reg, "57.0.18.198.in-addr.arpa.", RecordType::PTR);
        assert_eq!(ptr.1, ["sep000e08aabbcc.phones.lab.test."]);
        assert!(matches!(
            d.lookup(&ln("58.0.18.198.in-addr.arpa."), RecordType::PTR, &reg),
            Answer::Outside
        ));
        assert_eq!(
            ask(&d, &reg, "other.phones.lab.test.", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(&d, &reg, "phones.lab.test.", RecordType::A).0,
            ResponseCode::NoError
        );
        assert!(d.is_local(&ln("57.0.18.198.in-addr.arpa."), &reg));
        assert!(!d.is_local(&ln("58.0.18.199.in-addr.arpa."), &reg));
    }

    const SIP: &str = "  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [10.0.0.1, 10.0.0.2]\n        - name: sip\n          cname: pbx\n        - name: pbx\n          cname: prov\n        - name: away\n          cname: sip.example.org.\n        - name: _sip._udp\n          srv: [{ priority: 10, weight: 100, port: 5060, target: prov }]\n          txt: [\"hello\"]\n";

    #[test]
    fn aliases_are_followed_and_still_rotate() {
        let (d, reg) = zone(SIP);
        let q = "sip.lab.test.";
        let first = ask(&d, &reg, q, RecordType::A);
        assert_eq!(
            first,
            (
                ResponseCode::NoError,
                vec![
                    "pbx.lab.test.".to_string(),
                    "prov.lab.test.".into(),
                    "10.0.0.1".into(),
                    "10.0.0.2".into()
                ]
            )
        );
        assert_eq!(
            ask(&d, &reg, q, RecordType::A).1[2..],
            ["10.0.0.2", "10.0.0.1"]
        );
        assert_eq!(ask(&d, &reg, q, RecordType::CNAME).1, ["pbx.lab.test."]);
        // A target outside the zones: the alias alone, no lookup of the rest.
        assert_eq!(
            ask(&d, &reg, "away.lab.test.", RecordType::A),
            (ResponseCode::NoError, vec!["sip.example.org.".to_string()])
        );
        assert!(d.cacheable(&ln(q)));
        assert!(d.cacheable(&ln("away.lab.test.")));
    }

    #[test]
    fn srv_txt_and_ptr_for_configured_addresses() {
        let (d, reg) = zone(SIP);
        let q = "_sip._udp.lab.test.";
        assert_eq!(
            ask(&d, &reg, q, RecordType::SRV).1,
            ["10 100 5060 prov.lab.test."]
        );
        assert_eq!(ask(&d, &reg, q, RecordType::TXT).1, ["hello"]);
        assert_eq!(ask(&d, &reg, q, RecordType::A).1.len(), 0);
        assert_eq!(
            ask(&d, &reg, "2.0.0.10.in-addr.arpa.", RecordType::PTR).1,
            ["prov.lab.test."]
        );
        assert!(d.is_local(&ln("2.0.0.10.in-addr.arpa."), &reg));
        assert!(matches!(
            d.lookup(&ln("3.0.0.10.in-addr.arpa."), RecordType::PTR, &reg),
            Answer::Outside
        ));
    }
}
