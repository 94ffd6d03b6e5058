//! The DHCP decision path, top to bottom: parse → rate limit → pick the subnet → act on
//! the message type → build the reply. No I/O here: the result says what to persist, what
//! to announce after the commit, and what to send where.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::devices::Mac;
use crate::devices::registry::{LeaseInfo, Port, PortChange, Registry};

use super::config::{Mode, Reservation, Settings, Subnet};
use super::leases::{ClientKey, Excluded, Lease, Leases, Share, State};
use super::metrics::{DhcpMetrics, EventLabel, MessageLabels, SubnetLabels};
use super::options::{self, OptValue};
use super::socket::{CLIENT_PORT, Dest};
use super::store::Change;
use super::wire;
use crate::limit::WarnGate;

/// Message types (option 53).
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

/// The offer hold when fewer than a quarter of a pool's addresses are free: long enough
/// for a real client's REQUEST, short enough that a DISCOVER flood with made-up MACs
/// cannot keep the last addresses from the phones that need them.
/// Boxes sharing a store offer new addresses from their own share of the pool only
/// (docs/redundancy.md), so two never offer one address to two clients; a client whose
/// `secs` reached this (it has been asking that long) may have one from any share.
const SHARE_WAIT_SECS: u16 = 4;

pub const SHORT_OFFER_HOLD: Duration = Duration::from_secs(3);

fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        DISCOVER => "discover",
        REQUEST => "request",
        DECLINE => "decline",
        RELEASE => "release",
        INFORM => "inform",
        _ => return None,
    })
}

/// What the interface a message arrived on looks like.
#[derive(Debug, Clone)]
pub struct IfaceInfo {
    pub name: String,
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Granted,
    Renewed,
    Released,
    Declined,
    Expired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Granted => "granted",
            EventKind::Renewed => "renewed",
            EventKind::Released => "released",
            EventKind::Declined => "declined",
            EventKind::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub lease: Lease,
    pub now: u64,
    /// A first grant through a switch-port reservation: the port, for the timeline.
    pub circuit: Option<String>,
    /// A grant or renewal through a trusted relay's option 82: the port it came from,
    /// bound to the lease's MAC in the device registry.
    pub port: Option<Port>,
}

#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub dest: Dest,
    pub kind: &'static str,
}

/// The result of one message: persist `changes` (durably) before sending `reply` and
/// announcing `events`.
#[derive(Debug, Default)]
pub struct Outcome {
    pub reply: Option<Reply>,
    pub changes: Vec<Change>,
    pub events: Vec<Event>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One warning per interval for a refusal a flood can repeat, with a count of those held
/// back (every one is still counted in the metrics).
const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct Engine {
    /// Swapped whole on reload; each message works with one snapshot from start to end
    /// (subnet indexes and reservations stay consistent).
    policy: ArcSwap<Policy>,
    ifaces: Vec<IfaceInfo>,
    dns_on: bool,
    leases: Mutex<Leases>,
    buckets: Mutex<HashMap<Mac, Bucket>>,
    registry: Arc<Registry>,
    pub metrics: Arc<DhcpMetrics>,
    warn_exhausted: WarnGate,
    warn_mac_taken: WarnGate,
    warn_off_link: WarnGate,
}

/// What the configuration decides: subnets, pools, options, reservations, times.
pub struct Policy {
    pub settings: Settings,
    /// Per subnet: reserved addresses (never from the pool).
    reserved: Vec<HashSet<Ipv4Addr>>,
    /// Every address of ours (never handed out).
    own: Vec<Ipv4Addr>,
}

impl Policy {
    fn new(settings: Settings, ifaces: &[IfaceInfo]) -> Policy {
        let reserved = settings
            .subnets
            .iter()
            .map(|s| s.reservations.iter().map(|r| r.address).collect())
            .collect();
        let mut own: Vec<Ipv4Addr> = ifaces
            .iter()
            .flat_map(|i| i.addrs.iter().map(|a| a.0))
            .collect();
        own.extend(settings.subnets.iter().filter_map(|s| s.server_address));
        Policy {
            settings,
            reserved,
            own,
        }
    }

    fn excluded(&self, sidx: usize) -> Excluded<'_> {
        Excluded {
            server: &self.own,
            reserved: &self.reserved[sidx],
        }
    }
}

/// One message's decision context: the request, the policy snapshot it is decided under
/// (one per message, so a reload never mixes two configs), the subnet it falls in with our
/// server identifier there, and the device's reservation.
struct Turn<'a> {
    p: &'a Policy,
    req: &'a Req<'a>,
    sidx: usize,
    sid: Ipv4Addr,
    resv: Option<&'a Reservation>,
    /// The switch port a trusted relay named (option 82).
    port: Option<Port>,
}

impl Turn<'_> {
    fn subnet(&self) -> &Subnet {
        &self.p.settings.subnets[self.sidx]
    }

    /// May this client be given `ip` in this subnet: its reserved address, or a pool
    /// address free for it?
    fn grantable(&self, t: &Leases, ip: Ipv4Addr, now: u64) -> bool {
        let client = &self.req.client;
        match self.resv {
            Some(r) => r.address == ip && t.available_to(ip, client, now),
            None => t.usable(self.subnet(), &self.p.excluded(self.sidx), ip, client, now),
        }
    }
}

/// A parsed request: the fields the decision path needs.
struct Req<'a> {
    mtype: u8,
    xid: u32,
    secs: u16,
    flags: u16,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    chaddr: [u8; 16],
    mac: Mac,
    client: ClientKey,
    opts: &'a [(u8, Vec<u8>)],
}

impl Req<'_> {
    fn opt(&self, code: u8) -> Option<&[u8]> {
        self.opts
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d.as_slice())
    }
    fn ip_opt(&self, code: u8) -> Option<Ipv4Addr> {
        let d = self.opt(code)?;
        let b: [u8; 4] = d.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    }
    fn text(&self, code: u8) -> Option<String> {
        self.opt(code)
            .filter(|d| !d.is_empty())
            // Cut as the lease journal stores it, so a restart reads back what was served.
            .map(|d| super::store::cap_text(&String::from_utf8_lossy(d)).to_owned())
    }
    fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

impl Engine {
    pub fn new(
        settings: Settings,
        ifaces: Vec<IfaceInfo>,
        dns_on: bool,
        registry: Arc<Registry>,
        metrics: Arc<DhcpMetrics>,
    ) -> Engine {
        for s in &settings.subnets {
            metrics
                .pool_size
                .get_or_create(&SubnetLabels { subnet: s.cidr() })
                .set(s.pool_size() as i64);
        }
        Engine {
            policy: ArcSwap::from_pointee(Policy::new(settings, &ifaces)),
            ifaces,
            dns_on,
            leases: Mutex::new(Leases::default()),
            buckets: Mutex::new(HashMap::new()),
            registry,
            metrics,
            warn_exhausted: WarnGate::new(WARN_EVERY),
            warn_mac_taken: WarnGate::new(WARN_EVERY),
            warn_off_link: WarnGate::new(WARN_EVERY),
        }
    }

    /// The settings in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Apply new settings (same interfaces and port): new messages see them at once.
    /// Leases stay; one outside the new pools is NAKed at its next renewal and the client
    /// starts over.
    pub fn reload(&self, settings: Settings, now: u64) {
        let old = self.policy.load_full();
        for s in &old.settings.subnets {
            let l = SubnetLabels { subnet: s.cidr() };
            self.metrics.pool_size.remove(&l);
            self.metrics.pool_used.remove(&l);
        }
        for s in &settings.subnets {
            self.metrics
                .pool_size
                .get_or_create(&SubnetLabels { subnet: s.cidr() })
                .set(s.pool_size() as i64);
        }
        // Pools, reservations and our addresses may have changed: the free-address
        // indexes are rebuilt under the new policy.
        let mut t = self.table();
        self.policy
            .store(Arc::new(Policy::new(settings, &self.ifaces)));
        t.forget_pools();
        drop(t);
        self.update_gauges(now);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This box's share of the pools: boxes sharing the store came or went.
    pub fn set_share(&self, share: Share) {
        if self.table().set_share(share) {
            self.metrics.share_boxes.set(i64::from(share.of));
            tracing::info!(
                boxes = share.of,
                share = share.slot,
                "dhcp: the boxes sharing the store split the pools; new addresses come from this box's share first"
            );
        }
    }

    /// Take over leases read from the store; live ones are announced to the registry.
    pub fn restore(&self, list: Vec<Lease>, now: u64) -> usize {
        let mut t = self.table();
        let mut live = 0;
        for l in list {
            if matches!(l.state, State::Bound { .. }) && l.is_live(now) {
                self.registry
                    .lease_bound(std::net::IpAddr::V4(l.ip), info(&l));
                live += 1;
            }
            t.put(l);
        }
        drop(t);
        self.update_gauges(now);
        live
    }

    /// Expire leases whose time ran out; returns the events to announce. Also forgets
    /// rate buckets idle for a second: they have refilled, so a fresh one is the same
    /// (bounded memory under a flood of random MACs, without a walk on the packet path).
    pub fn sweep(&self, now: u64) -> Vec<Event> {
        let idle = std::time::Duration::from_secs(1);
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, v| v.last.elapsed() < idle);
        let ended = self.table().sweep(now);
        self.update_gauges(now);
        ended
            .into_iter()
            .map(|lease| Event {
                kind: EventKind::Expired,
                lease,
                now,
                circuit: None,
                port: None,
            })
            .collect()
    }

    pub fn update_gauges(&self, now: u64) {
        let p = self.policy.load();
        let t = self.table();
        let mut total = 0;
        for s in &p.settings.subnets {
            let n = t.active_in(s, now);
            total += n;
            self.metrics
                .pool_used
                .get_or_create(&SubnetLabels { subnet: s.cidr() })
                .set(n as i64);
        }
        self.metrics.leases_active.set(total as i64);
    }

    /// Move the lease gauges by one lease at `ip`, under the table lock that changed it, so
    /// they agree with the sweep's recount (also under that lock) at every moment: a full
    /// recount per ACK would cost O(leases).
    fn count(&self, p: &Policy, _table: &Leases, ip: Ipv4Addr, delta: i64) {
        if let Some(s) = p.settings.subnets.iter().find(|s| s.contains(ip)) {
            self.metrics
                .pool_used
                .get_or_create(&SubnetLabels { subnet: s.cidr() })
                .inc_by(delta);
            self.metrics.leases_active.inc_by(delta);
        }
    }

    /// Log, count and tell the device registry about a lease event (after its commit).
    pub fn announce(&self, e: &Event) {
        let l = &e.lease;
        let ip = std::net::IpAddr::V4(l.ip);
        match e.kind {
            EventKind::Granted | EventKind::Renewed => self.registry.lease_bound(ip, info(l)),
            _ => self.registry.lease_ended(ip),
        }
        if let Some(c) = &e.circuit {
            tracing::info!(%ip, mac = %l.mac, circuit = %c, "dhcp: switch port {c} bound to {}", l.mac);
        }
        if let (Some(port), EventKind::Granted | EventKind::Renewed) = (&e.port, e.kind) {
            // The slot → MAC binding, on the device's timeline (after lease_bound made
            // the device): nobody scanned this phone's MAC, the port named it. Told
            // when it changes, not on every renewal.
            let via = format!("lease {}, relay {}", l.ip, port.relay);
            match self.registry.port_bound(port, l.mac, ip) {
                PortChange::Same => {}
                PortChange::New => {
                    tracing::info!(%ip, mac = %l.mac, %port, "dhcp: port {port} -> {}", l.mac);
                    self.registry
                        .note(l.mac, "port", &format!("port {port} -> {} ({via})", l.mac));
                }
                PortChange::Replaced(old) => {
                    tracing::warn!(%ip, mac = %l.mac, %old, %port, "dhcp: port {port} -> {} (was {old})", l.mac);
                    self.registry.note(
                        l.mac,
                        "port",
                        &format!("port {port} -> {} (was {old}; {via})", l.mac),
                    );
                    self.registry.note(
                        old,
                        "port",
                        &format!("port {port}: a different device {} is there now", l.mac),
                    );
                }
            }
        }
        self.metrics
            .lease_events
            .get_or_create(&EventLabel {
                event: e.kind.as_str(),
            })
            .inc();
        let until = match l.state {
            State::Bound { expires } => expires.saturating_sub(e.now),
            State::Declined { until } => until.saturating_sub(e.now),
            _ => 0,
        };
        tracing::info!(
            event = e.kind.as_str(),
            ip = %l.ip,
            mac = %l.mac,
            hostname = l.hostname.as_deref().unwrap_or(""),
            vendor_class = l.vendor_class.as_deref().unwrap_or(""),
            secs = until,
            "dhcp lease {}",
            e.kind.as_str()
        );
    }

    fn rate_ok(&self, mac: Mac, rate: u32) -> bool {
        let rate = rate as f64;
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let e = b.entry(mac).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        e.tokens = (e.tokens + now.duration_since(e.last).as_secs_f64() * rate).min(rate);
        e.last = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Handle one datagram that arrived on interface `iface`. `Err` is the drop reason.
    pub fn handle(&self, iface: usize, buf: &[u8], now: u64) -> Result<Outcome, &'static str> {
        // The fixed header and a strict scan of every option length, both our own:
        // dhcproto's decoder panics on some options (152 with a length other than 4).
        let msg = wire::Fixed::parse(buf).ok_or("malformed")?;
        let opts = wire::scan(buf).ok_or("malformed")?;
        if msg.op != 1 {
            return Err("not_a_request");
        }
        if msg.htype != 1 || msg.hlen != 6 {
            return Err("unsupported_hardware");
        }
        let mtype = match opts.iter().find(|(c, _)| *c == 53) {
            Some((_, d)) if d.len() == 1 => d[0],
            _ => return Err("no_message_type"),
        };
        let name = type_name(mtype).ok_or("unexpected_message_type")?;
        self.metrics
            .received
            .get_or_create(&MessageLabels { message: name })
            .inc();
        let chaddr = msg.chaddr;
        let mac = Mac(chaddr[..6].try_into().expect("6 bytes"));
        let policy = self.policy.load_full();
        let p = &*policy;
        if !self.rate_ok(mac, p.settings.rate_per_mac) {
            return Err("rate_limited");
        }
        let client_id = opts
            .iter()
            .find(|(c, _)| *c == 61)
            .map(|(_, d)| d.as_slice());
        let req = Req {
            mtype,
            xid: msg.xid,
            secs: msg.secs,
            flags: msg.flags,
            ciaddr: msg.ciaddr,
            giaddr: msg.giaddr,
            chaddr,
            mac,
            client: ClientKey::new(client_id, &mac),
            opts: &opts,
        };
        let (sidx, sid) = self.subnet_for(p, iface, &req).ok_or("no_subnet")?;
        // Option 82 names the switch port only when a relay put it there (giaddr set);
        // from a client on the link it would be a claim anyone can make. With
        // `trusted_relays`, only those relays' ports count.
        let trusted = &p.settings.trusted_relays;
        let (circuit_id, remote_id) = match (req.giaddr.is_unspecified(), req.opt(82)) {
            (false, Some(d)) if trusted.is_empty() || trusted.contains(&req.giaddr) => {
                relay_agent_info(d)
            }
            _ => (None, None),
        };
        let port = (circuit_id.is_some() || remote_id.is_some()).then(|| Port {
            circuit: circuit_id.map(|c| String::from_utf8_lossy(c).into_owned()),
            remote_id: remote_id.map(|r| String::from_utf8_lossy(r).into_owned()),
            relay: req.giaddr,
        });
        let reservations = &p.settings.subnets[sidx].reservations;
        let resv = reservations
            .iter()
            .find(|r| match (&r.client_id, client_id) {
                (Some(want), Some(got)) => want.as_slice() == got,
                _ => false,
            })
            .or_else(|| reservations.iter().find(|r| r.mac == Some(mac)))
            .or_else(|| {
                let cid = circuit_id?;
                reservations.iter().find(|r| {
                    r.circuit
                        .as_ref()
                        .is_some_and(|c| c.matches(req.giaddr, cid, remote_id))
                })
            });
        let turn = Turn {
            p,
            req: &req,
            sidx,
            sid,
            resv,
            port,
        };
        if p.settings.mode == Mode::Proxy {
            return self.proxy(&turn, iface);
        }
        match mtype {
            DISCOVER => self.discover(&turn, now),
            REQUEST => self.request(&turn, now),
            DECLINE => self.decline(&turn, now),
            RELEASE => self.release(&turn, now),
            INFORM => self.inform(&turn, iface),
            _ => Err("unexpected_message_type"),
        }
    }

    /// Relayed: the subnet holding giaddr. Direct: a subnet holding an address of the
    /// receiving interface (the one holding ciaddr when there are several).
    fn subnet_for(&self, p: &Policy, iface: usize, req: &Req<'_>) -> Option<(usize, Ipv4Addr)> {
        let info = &self.ifaces[iface];
        let first_addr = info.addrs.first().map(|a| a.0);
        let subnets = &p.settings.subnets;
        let idx = if !req.giaddr.is_unspecified() {
            subnets.iter().position(|s| s.contains(req.giaddr))?
        } else {
            let attached: Vec<usize> = (0..subnets.len())
                .filter(|&i| info.addrs.iter().any(|a| subnets[i].contains(a.0)))
                .collect();
            attached
                .iter()
                .copied()
                .find(|&i| !req.ciaddr.is_unspecified() && subnets[i].contains(req.ciaddr))
                .or_else(|| attached.first().copied())?
        };
        let s = &subnets[idx];
        let sid = s
            .server_address
            .or_else(|| info.addrs.iter().map(|a| a.0).find(|a| s.contains(*a)))
            .or(first_addr)?;
        Some((idx, sid))
    }

    fn discover(&self, turn: &Turn<'_>, now: u64) -> Result<Outcome, &'static str> {
        let Turn {
            p, req, sidx, resv, ..
        } = *turn;
        let subnet = turn.subnet();
        let mut t = self.table();
        self.no_second_lease(&t, req, now)?;
        let ip = match resv {
            Some(r) => {
                if !t.available_to(r.address, &req.client, now) {
                    tracing::warn!(ip = %r.address, mac = %req.mac, "dhcp: reserved address is declined or in use by another client");
                    return Err("reserved_address_unavailable");
                }
                r.address
            }
            None => {
                let requested = req.ip_opt(50);
                // A client still asking after SHARE_WAIT_SECS found no box whose share
                // has room for it: any free address will do (RFC 3074's `secs` rule).
                let any = req.secs >= SHARE_WAIT_SECS;
                match t.pick(
                    sidx,
                    subnet,
                    &req.client,
                    requested,
                    &p.excluded(sidx),
                    any,
                    now,
                ) {
                    Some(ip) => ip,
                    None => {
                        if let Some(held) = self.warn_exhausted.admit() {
                            tracing::warn!(subnet = %subnet.cidr(), mac = %req.mac, held_back = held, "dhcp: pool exhausted, no offer");
                        }
                        return Err("pool_exhausted");
                    }
                }
            }
        };
        // A client still bound to this address keeps its lease state; others get a hold,
        // a short one when the pool is nearly full (see SHORT_OFFER_HOLD).
        let bound = t.bound_to(ip, &req.client, now);
        if !bound {
            let nearly_full = resv.is_none()
                && t.free_in(sidx)
                    .is_some_and(|free| free.saturating_mul(4) < subnet.pool_size());
            let hold = if nearly_full {
                p.settings.offer_hold.min(SHORT_OFFER_HOLD)
            } else {
                p.settings.offer_hold
            };
            t.put(self.lease(
                req,
                resv,
                ip,
                State::Offered {
                    until: now + hold.as_secs(),
                },
            ));
        }
        drop(t);
        Ok(Outcome {
            reply: Some(self.reply(turn, OFFER, Some(ip))),
            ..Default::default()
        })
    }

    /// A MAC that holds a live lease under one client id gets none under another: that
    /// is a second host using the first one's hardware address in `chaddr` (a lease
    /// recorded against the victim's MAC would "prove" the attacker to be the victim).
    fn no_second_lease(&self, t: &Leases, req: &Req<'_>, now: u64) -> Result<(), &'static str> {
        if !t.mac_leased_to_other(&req.mac, &req.client, now) {
            return Ok(());
        }
        if let Some(held) = self.warn_mac_taken.admit() {
            tracing::warn!(mac = %req.mac, held_back = held, "dhcp: a second client id asks for a lease with a MAC that holds a live lease; refused");
        }
        Err("mac_leased_to_other_client")
    }

    /// Proxy mode: options only, beside the site's own server. INFORM is answered as
    /// always; a DISCOVER from a client that takes address-less offers (PXE ROMs: option
    /// 60 in `proxy_offer_vendor_classes`) gets an OFFER with `yiaddr` 0, and its REQUEST
    /// naming us an ACK with `yiaddr` 0. Nothing else is answered: no address, no lease,
    /// no NAK, nothing journaled.
    fn proxy(&self, turn: &Turn<'_>, iface: usize) -> Result<Outcome, &'static str> {
        let req = turn.req;
        if req.mtype == INFORM {
            return self.inform(turn, iface);
        }
        let takes_offer = req.opt(60).is_some_and(|vc| {
            turn.p
                .settings
                .proxy_offer
                .iter()
                .any(|p| vc.starts_with(p))
        });
        let kind = match req.mtype {
            DISCOVER if takes_offer => OFFER,
            REQUEST if takes_offer && req.ip_opt(54) == Some(turn.sid) => ACK,
            DISCOVER | REQUEST => return Err("proxy_not_for_this_client"),
            _ => return Err("proxy_mode"),
        };
        Ok(Outcome {
            reply: Some(self.reply(turn, kind, None)),
            ..Default::default()
        })
    }

    /// DHCPINFORM: the client has an address and wants options. It is answered only when
    /// its `ciaddr` is on-link: in a configured subnet of the receiving interface (or of
    /// the relay's `giaddr`). Otherwise the ACK, sent to `ciaddr`, would let anyone aim
    /// provbox's replies at any host it can route to.
    fn inform(&self, turn: &Turn<'_>, iface: usize) -> Result<Outcome, &'static str> {
        let req = turn.req;
        let ciaddr = req.ciaddr;
        let subnets = &turn.p.settings.subnets;
        let on_link = !ciaddr.is_unspecified()
            && if req.giaddr.is_unspecified() {
                subnets.iter().any(|s| {
                    s.contains(ciaddr) && self.ifaces[iface].addrs.iter().any(|a| s.contains(a.0))
                })
            } else {
                turn.subnet().contains(ciaddr)
            };
        if !on_link {
            if let Some(held) = self.warn_off_link.admit() {
                tracing::warn!(mac = %req.mac, %ciaddr, iface = %self.ifaces[iface].name, held_back = held, "dhcp: INFORM from an address that is not on-link; not answered");
            }
            return Err("inform_off_link");
        }
        Ok(Outcome {
            reply: Some(self.reply(turn, ACK, None)),
            ..Default::default()
        })
    }

    fn lease(
        &self,
        req: &Req<'_>,
        resv: Option<&Reservation>,
        ip: Ipv4Addr,
        state: State,
    ) -> Lease {
        Lease {
            ip,
            client: req.client.clone(),
            mac: req.mac,
            hostname: resv
                .and_then(|r| r.hostname.clone())
                .or_else(|| req.text(12)),
            vendor_class: req.text(60),
            state,
        }
    }

    fn request(&self, turn: &Turn<'_>, now: u64) -> Result<Outcome, &'static str> {
        let Turn { req, sid, resv, .. } = *turn;
        let subnet = turn.subnet();
        let mut t = self.table();
        self.no_second_lease(&t, req, now)?;
        let selected_server = req.ip_opt(54);
        let (ip, nak_if_foreign) = match (selected_server, req.ip_opt(50)) {
            // SELECTING: answering an OFFER, ours or another server's.
            (Some(s), requested) => {
                if s != sid {
                    // The client took another server's offer: let ours go.
                    if let Some(l) = t.of_client(&req.client)
                        && matches!(l.state, State::Offered { .. })
                    {
                        let ip = l.ip;
                        t.remove(ip);
                    }
                    return Err("other_server_selected");
                }
                (requested.unwrap_or(req.ciaddr), true)
            }
            // INIT-REBOOT: the client asks to keep an address it remembers.
            (None, Some(requested)) => (requested, true),
            // RENEWING (unicast) or REBINDING (broadcast): ciaddr is in use.
            (None, None) if !req.ciaddr.is_unspecified() => (req.ciaddr, false),
            (None, None) => return Err("request_without_address"),
        };
        // Not authoritative (Kea's `authoritative: false`): a client this server holds no
        // lease or offer for may be another server's; it gets no NAK, only silence.
        let unknown = !turn.p.settings.authoritative && t.of_client(&req.client).is_none();
        if !subnet.contains(ip) {
            // Wrong network for this client: tell it to start over (RFC 2131 4.3.2), but a
            // rebinding client of some other server is none of our business.
            return if nak_if_foreign && unknown {
                Err("not_authoritative")
            } else if nak_if_foreign {
                Ok(self.nak(turn, "address not on this network"))
            } else {
                Err("not_our_subnet")
            };
        }
        if !turn.grantable(&t, ip, now) {
            drop(t);
            if unknown {
                return Err("not_authoritative");
            }
            return Ok(self.nak(turn, "address not available"));
        }
        let renewed = t.bound_to(ip, &req.client, now);
        let lease = self.lease(
            req,
            resv,
            ip,
            State::Bound {
                expires: now + subnet.lease.as_secs(),
            },
        );
        t.put(lease.clone());
        if !renewed {
            self.count(turn.p, &t, ip, 1);
        }
        drop(t);
        Ok(Outcome {
            reply: Some(self.reply(turn, ACK, Some(ip))),
            changes: vec![Change::Put(lease.clone())],
            events: vec![Event {
                kind: if renewed {
                    EventKind::Renewed
                } else {
                    EventKind::Granted
                },
                lease,
                now,
                circuit: resv
                    .and_then(|r| r.circuit.as_ref())
                    .filter(|_| !renewed)
                    .map(|c| c.describe()),
                port: turn.port.clone(),
            }],
        })
    }

    fn decline(&self, turn: &Turn<'_>, now: u64) -> Result<Outcome, &'static str> {
        let req = turn.req;
        let ip = req.ip_opt(50).ok_or("decline_without_address")?;
        let mut t = self.table();
        let mut l = match t.get(ip) {
            Some(l) if l.client == req.client => l.clone(),
            _ => return Err("decline_of_unknown_lease"),
        };
        let was_counted = matches!(l.state, State::Bound { .. }) && l.is_live(now);
        l.state = State::Declined {
            until: now + turn.p.settings.quarantine.as_secs(),
        };
        t.put(l.clone());
        if was_counted {
            self.count(turn.p, &t, ip, -1);
        }
        tracing::warn!(%ip, mac = %req.mac, "dhcp: client declined the address (another host uses it?); quarantined");
        Ok(Outcome {
            reply: None,
            changes: vec![Change::Put(l.clone())],
            events: vec![Event {
                kind: EventKind::Declined,
                lease: l,
                now,
                circuit: None,
                port: None,
            }],
        })
    }

    /// Every lease held (any state), by address.
    pub fn leases_now(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self.table().all().cloned().collect();
        v.sort_by_key(|l| l.ip);
        v
    }

    /// The operator released `ip` (API, CLI): the lease ends now, and the address is held
    /// out of the pool until the old holder's lease would have run out (the phone may use
    /// it till then; nobody else must get it), so its next renewal is NAKed and it starts
    /// over with another address. None when no lease is bound there.
    pub fn release_by_operator(&self, ip: Ipv4Addr, now: u64) -> Option<(Change, Event)> {
        let p = self.policy();
        let mut t = self.table();
        let mut l = t.get(ip)?.clone();
        let State::Bound { expires } = l.state else {
            return None;
        };
        if !l.is_live(now) {
            return None;
        }
        l.state = State::Declined {
            until: expires.max(now + 1),
        };
        t.put(l.clone());
        self.count(&p, &t, ip, -1);
        Some((
            Change::Put(l.clone()),
            Event {
                kind: EventKind::Released,
                lease: l,
                now,
                circuit: None,
                port: None,
            },
        ))
    }

    fn release(&self, turn: &Turn<'_>, now: u64) -> Result<Outcome, &'static str> {
        let req = turn.req;
        let ip = req.ciaddr;
        let mut t = self.table();
        let mut l = match t.get(ip) {
            Some(l) if l.client == req.client && matches!(l.state, State::Bound { .. }) => {
                l.clone()
            }
            _ => return Err("release_of_unknown_lease"),
        };
        let was_counted = l.is_live(now);
        l.state = State::Free;
        t.put(l.clone());
        if was_counted {
            self.count(turn.p, &t, ip, -1);
        }
        Ok(Outcome {
            reply: None,
            changes: vec![Change::Put(l.clone())],
            events: vec![Event {
                kind: EventKind::Released,
                lease: l,
                now,
                circuit: None,
                port: None,
            }],
        })
    }

    fn nak(&self, turn: &Turn<'_>, why: &str) -> Outcome {
        let req = turn.req;
        tracing::info!(mac = %req.mac, ciaddr = %req.ciaddr, requested = ?req.ip_opt(50), "dhcp NAK: {why}");
        let mut h = self.header(req);
        let relayed = !req.giaddr.is_unspecified();
        if relayed {
            // The relay must broadcast it: the client's address is not valid.
            h.flags |= 0x8000;
        }
        h.ciaddr = Ipv4Addr::UNSPECIFIED;
        let sidb = turn.sid.octets();
        let msg = why.as_bytes();
        let mut ess: Vec<(u8, &[u8])> = vec![(53, &[NAK]), (54, &sidb), (56, msg)];
        let r82 = req.opt(82).map(|d| d.to_vec());
        if let Some(r) = &r82 {
            ess.push((82, r));
        }
        let (bytes, _) = wire::encode(&h, &ess, &[], self.max_len(req));
        let dest = if relayed {
            Dest::To(req.giaddr, turn.p.settings.port)
        } else {
            Dest::Broadcast
        };
        Outcome {
            reply: Some(Reply {
                bytes,
                dest,
                kind: "nak",
            }),
            ..Default::default()
        }
    }

    fn header(&self, req: &Req<'_>) -> wire::Header {
        wire::Header {
            xid: req.xid,
            flags: req.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            htype: 1,
            hlen: 6,
            chaddr: req.chaddr,
            sname: Vec::new(),
            file: Vec::new(),
        }
    }

    /// Largest reply this client takes: option 57 (an IP datagram size) minus IP and UDP
    /// headers, never below what every client must accept, never above one Ethernet frame.
    fn max_len(&self, req: &Req<'_>) -> usize {
        let from_57 = req
            .opt(57)
            .and_then(|d| <[u8; 2]>::try_from(d).ok())
            .map(|b| u16::from_be_bytes(b) as usize)
            .map(|v| v.saturating_sub(28));
        from_57
            .unwrap_or(wire::DEFAULT_MAX)
            .clamp(wire::DEFAULT_MAX, 1500 - 28)
    }

    /// The configured options this device gets: global, subnet, matching option sets (in
    /// config order), reservation; later layers override earlier ones per code.
    pub fn options_for(
        &self,
        p: &Policy,
        sidx: usize,
        sid: Ipv4Addr,
        mac: &Mac,
        vendor_class: Option<&[u8]>,
        resv: Option<&Reservation>,
    ) -> Vec<OptValue> {
        let subnet: &Subnet = &p.settings.subnets[sidx];
        let mut out = p.settings.global.clone();
        options::merge(&mut out, &subnet.options);
        for set in &p.settings.sets {
            if set.matches(mac, vendor_class) {
                options::merge(&mut out, &set.options);
            }
        }
        if let Some(r) = resv {
            options::merge(&mut out, &r.options);
            if let Some(h) = &r.hostname
                && !out.iter().any(|o| o.code == 12)
            {
                out.push(OptValue::new(12, h.as_bytes().to_vec()));
            }
        }
        if subnet.dns_default && self.dns_on && !out.iter().any(|o| o.code == 6) {
            out.push(OptValue::new(6, sid.octets().to_vec()));
        }
        out
    }

    fn reply(&self, turn: &Turn<'_>, kind: u8, yiaddr: Option<Ipv4Addr>) -> Reply {
        let Turn {
            p,
            req,
            sidx,
            sid,
            resv,
            ..
        } = *turn;
        let subnet = turn.subnet();
        let mut h = self.header(req);
        let inform = req.mtype == INFORM;
        if inform || kind == ACK {
            h.ciaddr = req.ciaddr;
        }
        h.yiaddr = yiaddr.unwrap_or(Ipv4Addr::UNSPECIFIED);
        // A proxy reply (no address) carries no lease times; a PXE client recognises it
        // by option 60 "PXEClient" (PXE 2.1, as dnsmasq's proxy mode sends).
        let pxe =
            yiaddr.is_none() && !inform && req.opt(60).is_some_and(|v| v.starts_with(b"PXEClient"));
        let sidb = sid.octets();
        let lease = (subnet.lease.as_secs() as u32).to_be_bytes();
        let t1 = (subnet.renew.as_secs() as u32).to_be_bytes();
        let t2 = (subnet.rebind.as_secs() as u32).to_be_bytes();
        let mask = subnet.mask().to_be_bytes();
        let kindb = [kind];
        let mut ess: Vec<(u8, &[u8])> = vec![(53, &kindb), (54, &sidb)];
        if yiaddr.is_some() {
            ess.extend([(51, &lease[..]), (58, &t1[..]), (59, &t2[..])]);
        }
        if pxe {
            ess.push((60, b"PXEClient"));
        }
        ess.push((1, &mask));
        let r82 = req.opt(82).map(|d| d.to_vec());
        if let Some(r) = &r82 {
            ess.push((82, r));
        }
        let configured = self.options_for(p, sidx, sid, &req.mac, req.opt(60), resv);
        let chosen = options::select(&configured, req.opt(55));
        boot_fields(&mut h, &p.settings.boot, req, &configured);
        let extra: Vec<(u8, &[u8])> = chosen
            .iter()
            .filter(|o| o.code != 1)
            .map(|o| (o.code, o.data.as_slice()))
            .collect();
        let (bytes, left_out) = wire::encode(&h, &ess, &extra, self.max_len(req));
        if !left_out.is_empty() {
            tracing::warn!(mac = %req.mac, options = ?left_out, "dhcp: options left out, they do not fit the client's maximum message size");
        }
        let dest = if !req.giaddr.is_unspecified() {
            Dest::To(req.giaddr, p.settings.port)
        } else if !req.ciaddr.is_unspecified() {
            Dest::To(req.ciaddr, CLIENT_PORT)
        } else if req.broadcast() || inform || h.yiaddr.is_unspecified() {
            Dest::Broadcast
        } else {
            Dest::Hw(h.yiaddr, req.mac.0)
        };
        Reply {
            bytes,
            dest,
            kind: match kind {
                OFFER => "offer",
                ACK => "ack",
                _ => "nak",
            },
        }
    }
}

/// The header's boot-ROM fields: `dhcp.boot` first (option 93 picks the file), else
/// this device's options 66 (sname, and siaddr when it is an address) and 67 (file) when
/// the client did not ask for them in its request list (55), or sent none: a boot ROM
/// reads the header.
fn boot_fields(
    h: &mut wire::Header,
    boot: &super::config::Boot,
    req: &Req<'_>,
    configured: &[OptValue],
) {
    let unasked = |code: u8, max: usize| {
        if req.opt(55).is_some_and(|prl| prl.contains(&code)) {
            return None;
        }
        configured
            .iter()
            .find(|o| o.code == code)
            .map(|o| o.data.as_slice())
            .filter(|d| d.len() <= max && !d.contains(&0))
    };
    let arch = req
        .opt(93)
        .and_then(|d| d.get(..2))
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    let o66 = unasked(66, wire::SNAME_MAX);
    h.siaddr = boot
        .next_server
        .or_else(|| std::str::from_utf8(o66?).ok()?.parse().ok())
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    h.sname = boot
        .server_name
        .as_deref()
        .or(o66)
        .unwrap_or_default()
        .to_vec();
    h.file = boot
        .file_for(arch)
        .or_else(|| unasked(67, wire::FILE_MAX))
        .unwrap_or_default()
        .to_vec();
}

/// Circuit-id (sub-option 1) and remote-id (sub-option 2) of a relay agent information
/// option (82, RFC 3046); a malformed option yields neither.
pub fn relay_agent_info(d: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let (mut circuit, mut remote) = (None, None);
    let mut i = 0;
    while i < d.len() {
        let Some(&len) = d.get(i + 1) else {
            return (None, None);
        };
        let Some(v) = d.get(i + 2..i + 2 + len as usize) else {
            return (None, None);
        };
        match d[i] {
            1 => circuit = Some(v),
            2 => remote = Some(v),
            _ => {}
        }
        i += 2 + len as usize;
    }
    (circuit, remote)
}

fn info(l: &Lease) -> LeaseInfo {
    LeaseInfo {
        mac: l.mac,
        hostname: l.hostname.clone(),
        vendor_class: l.vendor_class.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(dns_on: bool) -> Engine {
        engine_with(dns_on, YAML)
    }

    const YAML: &str = r#"
enabled: true
interfaces: [br0]
options:
  - {code: 66, string: global}
  - {code: 42, ip: 198.18.0.9}
option_sets:
  - {name: cisco, vendor_class: "Cisco SPA", options: [{code: 66, string: cisco}]}
  - {name: poly, mac_prefix: "00:04:f2", options: [{code: 66, string: polycom}, {code: 160, string: "http://p/"}]}
subnets:
  - subnet: 198.18.0.0/24
    pools: ["198.18.0.100-198.18.0.110"]
    options: [{code: 42, ip: 198.18.0.1}]
    reservations:
      - {mac: "00:04:f2:00:00:01", address: 198.18.0.57, hostname: lobby, options: [{code: 66, string: mine}]}
"#;

    fn engine_with(dns_on: bool, yaml: &str) -> Engine {
        let cfg: super::super::Config = serde_saphyr::from_str(yaml).unwrap();
        let mut errs = Vec::new();
        let settings = cfg
            .compile(&mut |f, _, _, m| errs.push(format!("{f}: {m}")))
            .unwrap_or_else(|| panic!("{errs:?}"));
        crate::dhcp::lab_engine(settings, dns_on)
    }

    fn get(opts: &[OptValue], code: u8) -> Option<&[u8]> {
        opts.iter()
            .find(|o| o.code == code)
            .map(|o| o.data.as_slice())
    }

    #[test]
    fn option_layers_and_dns_default() {
        let e = engine(true);
        let p = e.policy();
        let sid: Ipv4Addr = "198.18.0.1".parse().unwrap();
        let plain = Mac([2, 0, 0, 0, 0, 1]);
        let o = e.options_for(&p, 0, sid, &plain, None, None);
        assert_eq!(get(&o, 66), Some(&b"global"[..]));
        // Subnet overrides global.
        assert_eq!(get(&o, 42), Some(&[198, 18, 0, 1][..]));
        // DNS on and no option 6 configured: our own address.
        assert_eq!(get(&o, 6), Some(&sid.octets()[..]));
        let o = e.options_for(&p, 0, sid, &plain, Some(b"Cisco SPA504G"), None);
        assert_eq!(get(&o, 66), Some(&b"cisco"[..]));
        let poly = Mac([0, 4, 0xf2, 1, 2, 3]);
        let o = e.options_for(&p, 0, sid, &poly, Some(b"Cisco SPA504G"), None);
        assert_eq!(get(&o, 66), Some(&b"polycom"[..]), "later set wins");
        assert_eq!(get(&o, 160), Some(&b"http://p/"[..]));
        let resv = &p.settings.subnets[0].reservations[0];
        let o = e.options_for(&p, 0, sid, &poly, None, Some(resv));
        assert_eq!(get(&o, 66), Some(&b"mine"[..]));
        assert_eq!(get(&o, 12), Some(&b"lobby"[..]));
        let off = engine(false);
        assert!(
            get(
                &off.options_for(&off.policy(), 0, sid, &plain, None, None),
                6
            )
            .is_none()
        );
    }

    #[test]
    fn discover_offers_from_pool_and_garbage_is_refused() {
        let e = engine(false);
        let mut b = vec![0u8; 236];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4] = 9;
        b[10] = 0x80;
        b[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        b.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 55, 2, 66, 1, 255]);
        let out = e.handle(0, &b, 1000).unwrap();
        let r = out.reply.unwrap();
        assert_eq!(r.kind, "offer");
        assert_eq!(r.dest, Dest::Broadcast);
        assert_eq!(&r.bytes[16..20], &[198, 18, 0, 100]);
        assert!(r.bytes.len() >= wire::BOOTP_MIN);
        assert!(out.changes.is_empty(), "offers are not persisted");
        assert_eq!(e.handle(0, &b[..120], 1000).unwrap_err(), "malformed");
        let mut nt = b.clone();
        nt[240] = 12;
        assert_eq!(e.handle(0, &nt, 1000).unwrap_err(), "no_message_type");
    }

    /// A request from MAC 02:00:00:00:01:`n` with the given option bytes (after 53).
    fn msg(mtype: u8, n: u8, ciaddr: [u8; 4], opts: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4] = n;
        b[10] = 0x80;
        b[12..16].copy_from_slice(&ciaddr);
        b[28..34].copy_from_slice(&[2, 0, 0, 0, 1, n]);
        b.extend_from_slice(&[99, 130, 83, 99, 53, 1, mtype]);
        b.extend_from_slice(opts);
        b.push(255);
        b
    }

    #[test]
    fn options_dhcproto_would_assert_on_are_just_options() {
        let e = engine(false);
        // 152 with lengths other than 4, and other odd lengths dhcproto types strictly.
        for (i, opt) in [
            &[152u8, 3, 1, 2, 3][..],
            &[152, 0],
            &[152, 7, 1, 2, 3, 4, 5, 6, 7],
            &[51, 2, 0, 1, 54, 3, 1, 2, 3, 1, 1, 9],
        ]
        .iter()
        .enumerate()
        {
            let out = e
                .handle(0, &msg(DISCOVER, i as u8, [0; 4], opt), 1000)
                .unwrap_or_else(|r| panic!("{opt:?}: {r}"));
            assert_eq!(out.reply.unwrap().kind, "offer", "{opt:?}");
        }
    }

    #[test]
    fn offers_are_held_briefly_when_the_pool_is_nearly_full() {
        let e = engine(false);
        let mut holds = Vec::new();
        for n in 0..11u8 {
            let out = e.handle(0, &msg(DISCOVER, n, [0; 4], &[]), 1000).unwrap();
            let r = out.reply.unwrap();
            let ip = Ipv4Addr::new(r.bytes[16], r.bytes[17], r.bytes[18], r.bytes[19]);
            match e.table().get(ip).unwrap().state {
                State::Offered { until } => holds.push(until - 1000),
                s => panic!("{s:?}"),
            }
        }
        // 11 addresses: below a quarter free (2 left) the hold is short.
        assert_eq!(holds[..9], [30; 9]);
        assert_eq!(holds[9..], [3, 3]);
        assert_eq!(
            e.handle(0, &msg(DISCOVER, 20, [0; 4], &[]), 1000)
                .unwrap_err(),
            "pool_exhausted"
        );
        // The short holds lapse first and serve the next client.
        e.sweep(1003);
        assert!(e.handle(0, &msg(DISCOVER, 20, [0; 4], &[]), 1003).is_ok());
    }

    #[test]
    fn a_mac_with_a_lease_gets_none_under_another_client_id() {
        let e = engine(false);
        let phone_id = [61u8, 7, 1, 2, 0, 0, 0, 1, 5];
        let offer = e
            .handle(0, &msg(DISCOVER, 5, [0; 4], &phone_id), 1000)
            .unwrap();
        let yi = offer.reply.unwrap().bytes[16..20].to_vec();
        let mut req = phone_id.to_vec();
        req.extend_from_slice(&[50, 4]);
        req.extend_from_slice(&yi);
        req.extend_from_slice(&[54, 4, 198, 18, 0, 1]);
        let ack = e.handle(0, &msg(REQUEST, 5, [0; 4], &req), 1000).unwrap();
        assert_eq!(ack.reply.unwrap().kind, "ack");
        // Same chaddr, another client id: neither an offer nor a lease.
        let evil = [61u8, 4, b'e', b'v', b'i', b'l'];
        assert_eq!(
            e.handle(0, &msg(DISCOVER, 5, [0; 4], &evil), 1000)
                .unwrap_err(),
            "mac_leased_to_other_client"
        );
        let mut req2 = evil.to_vec();
        req2.extend_from_slice(&[50, 4, 198, 18, 0, 109, 54, 4, 198, 18, 0, 1]);
        assert_eq!(
            e.handle(0, &msg(REQUEST, 5, [0; 4], &req2), 1000)
                .unwrap_err(),
            "mac_leased_to_other_client"
        );
        // The phone itself renews.
        let ack = e.handle(
            0,
            &msg(REQUEST, 5, yi.clone().try_into().unwrap(), &phone_id),
            1000,
        );
        assert_eq!(ack.unwrap().reply.unwrap().kind, "ack");
    }

    #[test]
    fn inform_is_answered_only_on_link() {
        let e = engine(false);
        let ok = e
            .handle(0, &msg(INFORM, 1, [198, 18, 0, 30], &[]), 1000)
            .unwrap();
        let r = ok.reply.unwrap();
        assert_eq!(
            r.dest,
            Dest::To("198.18.0.30".parse().unwrap(), CLIENT_PORT)
        );
        for ciaddr in [[10, 9, 8, 7], [0, 0, 0, 0], [198, 18, 1, 5]] {
            assert_eq!(
                e.handle(0, &msg(INFORM, 1, ciaddr, &[]), 1000).unwrap_err(),
                "inform_off_link",
                "{ciaddr:?}"
            );
        }
    }

    const PROXY: &str = r#"
enabled: true
interfaces: [br0]
mode: proxy
options:
  - {code: 66, string: prov.lab.test, force: true}
subnets:
  - subnet: 198.18.0.0/24
"#;

    #[test]
    fn proxy_mode_gives_options_never_an_address_nor_a_nak() {
        let e = engine_with(false, PROXY);
        // A plain client's DISCOVER and REQUEST (for the site server's offer) go unanswered.
        let req = [50u8, 4, 198, 18, 0, 77, 54, 4, 198, 18, 0, 254];
        for m in [msg(DISCOVER, 1, [0; 4], &[]), msg(REQUEST, 1, [0; 4], &req)] {
            assert_eq!(
                e.handle(0, &m, 1000).unwrap_err(),
                "proxy_not_for_this_client"
            );
        }
        // Even an INIT-REBOOT for an address outside every subnet: silence, no NAK.
        let reboot = [50u8, 4, 10, 1, 2, 3];
        assert!(
            e.handle(0, &msg(REQUEST, 1, [0; 4], &reboot), 1000)
                .is_err()
        );
        // A PXE client gets an address-less OFFER with the options and "PXEClient".
        let pxe = b"\x3c\x14PXEClient:Arch:00000";
        let out = e.handle(0, &msg(DISCOVER, 2, [0; 4], pxe), 1000).unwrap();
        let r = out.reply.unwrap();
        assert_eq!(r.kind, "offer");
        assert_eq!(&r.bytes[16..20], &[0, 0, 0, 0], "yiaddr");
        assert_eq!(r.dest, Dest::Broadcast);
        let opts = wire::scan(&r.bytes).unwrap();
        let o = |c: u8| opts.iter().find(|(k, _)| *k == c).map(|(_, d)| d.clone());
        assert_eq!(o(66).as_deref(), Some(&b"prov.lab.test"[..]));
        assert_eq!(o(60).as_deref(), Some(&b"PXEClient"[..]));
        assert!(o(51).is_none(), "no lease time");
        assert!(out.changes.is_empty() && out.events.is_empty());
        // Its REQUEST naming us: an address-less ACK.
        let mut sel = pxe.to_vec();
        sel.extend_from_slice(&[54, 4, 198, 18, 0, 1]);
        let ack = e.handle(0, &msg(REQUEST, 2, [0; 4], &sel), 1000).unwrap();
        let r = ack.reply.unwrap();
        assert_eq!((r.kind, &r.bytes[16..20]), ("ack", &[0u8, 0, 0, 0][..]));
        assert!(ack.changes.is_empty());
        // INFORM from an on-link address: options.
        let inf = e
            .handle(0, &msg(INFORM, 3, [198, 18, 0, 77], &[]), 1000)
            .unwrap();
        assert_eq!(inf.reply.unwrap().kind, "ack");
        assert_eq!(
            e.table()
                .of_client(&ClientKey::new(None, &Mac([2, 0, 0, 0, 1, 2])))
                .map(|l| l.ip),
            None
        );
    }

    #[test]
    fn proxy_mode_refuses_pools_and_reservations() {
        let yaml = format!("{PROXY}    pools: [\"198.18.0.100-198.18.0.110\"]\n");
        let cfg: super::super::Config = serde_saphyr::from_str(&yaml).unwrap();
        let mut errs = Vec::new();
        assert!(
            cfg.compile(&mut |f, _, _, m| errs.push(format!("{f}: {m}")))
                .is_none()
        );
        assert!(
            errs[0].contains("dhcp.subnets[0].pools") && errs[0].contains("proxy"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_non_authoritative_server_does_not_nak_a_client_it_does_not_know() {
        let quiet = engine_with(
            false,
            &YAML.replace(
                "interfaces: [br0]",
                "interfaces: [br0]\nauthoritative: false",
            ),
        );
        let loud = engine(false);
        // INIT-REBOOT for an address outside the pool, and one outside the subnet.
        for want in [[198u8, 18, 0, 200], [10, 0, 0, 5]] {
            let m = msg(
                REQUEST,
                9,
                [0; 4],
                &[50, 4, want[0], want[1], want[2], want[3]],
            );
            assert_eq!(loud.handle(0, &m, 1000).unwrap().reply.unwrap().kind, "nak");
            assert_eq!(quiet.handle(0, &m, 1000).unwrap_err(), "not_authoritative");
        }
        // A client it does know (holding its offer) is still told no.
        let offer = quiet
            .handle(0, &msg(DISCOVER, 9, [0; 4], &[]), 1000)
            .unwrap();
        assert_eq!(offer.reply.unwrap().kind, "offer");
        let m = msg(REQUEST, 9, [0; 4], &[50, 4, 198, 18, 0, 200]);
        assert_eq!(
            quiet.handle(0, &m, 1000).unwrap().reply.unwrap().kind,
            "nak"
        );
    }

    #[test]
    fn a_relayed_circuit_id_selects_the_port_reservation() {
        let yaml = YAML.replace(
            "    reservations:\n",
            "    reservations:\n      - {circuit: bench-3/port-12, remote_id: sw1, address: 198.18.0.62, hostname: slot12}\n",
        );
        let e = engine_with(false, &yaml);
        let o82 = |cid: &[u8], rid: &[u8]| {
            let mut v = vec![82u8, (4 + cid.len() + rid.len()) as u8, 1, cid.len() as u8];
            v.extend_from_slice(cid);
            v.extend_from_slice(&[2, rid.len() as u8]);
            v.extend_from_slice(rid);
            v
        };
        let relayed = |n: u8, opts: &[u8], giaddr: bool| {
            let mut b = msg(DISCOVER, n, [0; 4], opts);
            if giaddr {
                b[24..28].copy_from_slice(&[198, 18, 0, 2]);
            }
            b
        };
        let yi = |b: &[u8]| Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        let port12 = o82(b"bench-3/port-12", b"sw1");
        let r = e
            .handle(0, &relayed(1, &port12, true), 1000)
            .unwrap()
            .reply
            .unwrap();
        assert_eq!(yi(&r.bytes), Ipv4Addr::new(198, 18, 0, 62));
        // Another port, another switch's remote-id, or option 82 straight from a client:
        // the pool.
        for (n, b) in [
            (2, relayed(2, &o82(b"bench-3/port-13", b"sw1"), true)),
            (3, relayed(3, &o82(b"bench-3/port-12", b"sw2"), true)),
            (4, relayed(4, &port12, false)),
        ] {
            let r = e.handle(0, &b, 1000).unwrap().reply.unwrap();
            assert_ne!(yi(&r.bytes), Ipv4Addr::new(198, 18, 0, 62), "case {n}");
        }
        assert_eq!(
            relay_agent_info(&[1, 2, b'a', b'b', 2, 9]),
            (None, None),
            "truncated"
        );
    }

    #[test]
    fn a_port_binding_is_noted_on_the_devices_timeline() {
        let yaml = YAML.replace(
            "    reservations:\n",
            "    reservations:\n      - {circuit: bench-3/port-12, address: 198.18.0.62}\n",
        );
        let cfg: super::super::Config = serde_saphyr::from_str(&yaml).unwrap();
        let settings = cfg.compile(&mut |_, _, _, m| panic!("{m}")).unwrap();
        let reg = Arc::new(Registry::default());
        let book = crate::status::StatusBook::in_memory(reg.clone(), Default::default());
        reg.set_observer(book.clone());
        let e = Engine::new(
            settings,
            vec![IfaceInfo {
                name: "br0".into(),
                addrs: vec![("198.18.0.1".parse().unwrap(), 24)],
            }],
            false,
            reg,
            Arc::new(DhcpMetrics::default()),
        );
        let port = b"\x52\x11\x01\x0fbench-3/port-12";
        let relayed = |mtype: u8, extra: &[u8]| {
            let mut opts = port.to_vec();
            opts.extend_from_slice(extra);
            let mut b = msg(mtype, 7, [0; 4], &opts);
            b[24..28].copy_from_slice(&[198, 18, 0, 2]);
            b
        };
        e.handle(0, &relayed(DISCOVER, &[]), 1000).unwrap();
        let sel = [50u8, 4, 198, 18, 0, 62, 54, 4, 198, 18, 0, 1];
        let out = e.handle(0, &relayed(REQUEST, &sel), 1000).unwrap();
        assert_eq!(out.events[0].circuit.as_deref(), Some("bench-3/port-12"));
        for ev in &out.events {
            e.announce(ev);
        }
        let d = book
            .get("02:00:00:00:01:07")
            .expect("the device is on the book");
        let note = d
            .events
            .iter()
            .find(|n| n.kind == "port")
            .expect("a port note");
        assert_eq!(
            note.detail,
            "port bench-3/port-12 -> 02:00:00:00:01:07 (lease 198.18.0.62, relay 198.18.0.2)"
        );
        // A renewal is not a new binding: no second note.
        let renew = e
            .handle(0, &relayed(REQUEST, &[50, 4, 198, 18, 0, 62]), 1001)
            .unwrap();
        assert_eq!(renew.events[0].circuit, None);
        for ev in &renew.events {
            e.announce(ev);
        }
        let notes = |mac: &str| {
            book.get(mac)
                .map(|d| {
                    d.events
                        .iter()
                        .filter(|n| n.kind == "port")
                        .map(|n| n.detail.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        assert_eq!(notes("02:00:00:00:01:07").len(), 1);
        // Another phone on the same port (the first one's lease gone): both timelines say so.
        let mut release = relayed(RELEASE, &[]);
        release[12..16].copy_from_slice(&[198, 18, 0, 62]);
        e.handle(0, &release, 1002).unwrap();
        let other = |mtype: u8, extra: &[u8]| {
            let mut b = relayed(mtype, extra);
            b[28 + 5] = 8;
            b
        };
        e.handle(0, &other(DISCOVER, &[]), 1003).unwrap();
        let out = e.handle(0, &other(REQUEST, &sel), 1003).unwrap();
        for ev in &out.events {
            e.announce(ev);
        }
        assert_eq!(
            notes("02:00:00:00:01:08"),
            [
                "port bench-3/port-12 -> 02:00:00:00:01:08 (was 02:00:00:00:01:07; lease 198.18.0.62, relay 198.18.0.2)"
            ]
        );
        assert_eq!(
            notes("02:00:00:00:01:07").last().map(String::as_str),
            Some("port bench-3/port-12: a different device 02:00:00:00:01:08 is there now")
        );
    }

    #[test]
    fn option_82_counts_only_from_trusted_relays() {
        let yaml = YAML
            .replace("subnets:\n", "trusted_relays: [198.18.0.3]\nsubnets:\n")
            .replace(
                "    reservations:\n",
                "    reservations:\n      - {circuit: bench-3/port-12, address: 198.18.0.62}\n",
            );
        let e = engine_with(false, &yaml);
        let port = b"\x52\x11\x01\x0fbench-3/port-12";
        let relayed = |n: u8, mtype: u8, giaddr: [u8; 4], extra: &[u8]| {
            let mut opts = port.to_vec();
            opts.extend_from_slice(extra);
            let mut b = msg(mtype, n, [0; 4], &opts);
            b[24..28].copy_from_slice(&giaddr);
            b
        };
        let yi = |b: &[u8]| Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        // A relay not on the list: its option 82 is ignored (pool address, no port).
        let r = e
            .handle(0, &relayed(1, DISCOVER, [198, 18, 0, 2], &[]), 1000)
            .unwrap();
        assert_ne!(yi(&r.reply.unwrap().bytes), Ipv4Addr::new(198, 18, 0, 62));
        // The listed relay: the reservation, and grants and renewals carry the port.
        let r = e
            .handle(0, &relayed(2, DISCOVER, [198, 18, 0, 3], &[]), 1000)
            .unwrap();
        assert_eq!(yi(&r.reply.unwrap().bytes), Ipv4Addr::new(198, 18, 0, 62));
        let sel = [50u8, 4, 198, 18, 0, 62, 54, 4, 198, 18, 0, 1];
        let want = Port {
            circuit: Some("bench-3/port-12".into()),
            remote_id: None,
            relay: "198.18.0.3".parse().unwrap(),
        };
        for now in [1000, 1001] {
            let out = e
                .handle(0, &relayed(2, REQUEST, [198, 18, 0, 3], &sel), now)
                .unwrap();
            assert_eq!(out.events[0].port.as_ref(), Some(&want), "at {now}");
            e.announce(&out.events[0]);
        }
        let mac: Mac = "02:00:00:00:01:02".parse().unwrap();
        assert_eq!(
            e.registry.port_of(mac),
            Some((want, "198.18.0.62".parse().unwrap()))
        );
    }

    /// Options dhcproto debug-asserted on (a panic in the receive loop) are just options:
    /// the fuzzer's findings, 80, 81, 94 and 152-155 with other lengths than the RFCs give.
    #[test]
    fn options_the_fuzzer_found_dhcproto_asserting_on_are_just_options() {
        let e = engine(false);
        let odd: [&[u8]; 8] = [
            &[80, 1, 0],
            &[81, 1, 0],
            &[94, 5, 1, 2, 3, 4, 5],
            &[94, 1, 1],
            &[152, 2, 0, 0],
            &[153, 1, 0],
            &[154, 5, 0, 0, 0, 0, 0],
            &[155, 0],
        ];
        for (n, odd) in odd.into_iter().enumerate() {
            let mut b = vec![0u8; 236];
            b[..3].copy_from_slice(&[1, 1, 6]);
            b[4..8].copy_from_slice(&[0x12, 0x34, 0x56, n as u8]);
            b[28..34].copy_from_slice(&[2, 0, 0, 0, 1, n as u8]);
            b.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1]);
            b.extend_from_slice(odd);
            b.push(255);
            let r = e.handle(0, &b, 1000).unwrap().reply.unwrap();
            assert_eq!(r.kind, "offer", "{odd:?}");
            assert_eq!(&r.bytes[4..8], &[0x12, 0x34, 0x56, n as u8], "xid echoed");
            assert_eq!(&r.bytes[28..34], &[2, 0, 0, 0, 1, n as u8], "chaddr echoed");
        }
    }
}
