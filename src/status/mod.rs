//! Device status: one record per device joining what provbox sees (leases, transfers) and
//! what the phone says (syslog), folded into `seen → configured → upgraded → provisioned`
//! or `failed: reason`. Kept in memory for the dashboard, persisted in the store.
//!
//! The seam for other front ends is narrow: DHCP already reports leases through
//! `devices::Registry::lease_bound`, file front ends through `Provisioner::transfer_done`
//! (both reach [`StatusBook`] as a `devices::Observer`); the syslog receiver calls
//! [`StatusBook::phone_report`] / [`StatusBook::phone_line`].
//!
//! Addresses come only from proof: our own DHCP lease or a verified client certificate
//! sets a device's address. A syslog line, a User-Agent or a path naming a MAC is only the
//! sender's word: it attaches to the device already proven at its source address, and a
//! claim that would move a proven device elsewhere, or speak for another device's proven
//! address, is refused (counted, and noted on the device's timeline). Resync targets and
//! the phones' admin credentials follow the address, so one spoofed line must not move it.

pub(crate) mod history;
pub(crate) mod record;
mod shared;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use anyhow::{Context as _, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as PromRegistry;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::devices::{LeaseInfo, Mac, Observer, Registry, TransferDone};
use crate::metrics::RefusalLabels;
use crate::metrics::Registers;
use crate::store::Store;

/// Who hears of state changes and lease events: the hooks (`hooks::Hooks`), set once at
/// start. A trait so the book, below the hooks, does not name them. Implementations only
/// queue: they are called with the book's state in hand.
pub trait Announce: Send + Sync {
    /// `d` entered its current state (`before`: its state until now, None when new).
    fn state_changed(&self, d: &Device, before: Option<State>);
    fn lease_bound(&self, ip: IpAddr, lease: &LeaseInfo);
    fn lease_ended(&self, ip: IpAddr, lease: &LeaseInfo);
    /// A configuration report's verdict on `d` (its timeline already says it).
    fn verification(&self, d: &Device, v: &crate::devices::verify::Verdict);
}
pub(crate) use record::{Action, Device, Event, PhoneEvent, PhoneReport, Proof, State, now_ms};

/// key (`00:0e:08:aa:bb:cc` or `ip:…`) → the record as JSON (readable with any redb tool,
/// and new fields do not need a migration).
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("status_devices");

/// How long changes gather before one commit writes them.
const PERSIST_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Devices kept; beyond that the one not heard from longest is forgotten.
pub(crate) const MAX_DEVICES: usize = 4096;
/// A full book forgets `MAX_DEVICES / EVICT_FRACTION` devices at once.
const EVICT_FRACTION: usize = 16;

/// Changed keys remembered one by one before the writer is simply told "write everything".
pub(crate) const MAX_DIRTY_KEYS: usize = 1024;
/// Records copied per lock hold when writing (the book's lock is never held to serialise).
const WRITE_CHUNK: usize = 256;
/// A refused claim is noted on the named device's timeline at most this often.
const REFUSAL_NOTE_EVERY_MS: u64 = 60_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// `provbox_devices{state}`, counted when scraped: counting on every event would walk
/// every record per lease or syslog line (it was most of the CPU under a DHCP storm).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    book: Arc<OnceLock<Weak<StatusBook>>>,
    /// Claims (syslog, User-Agent, path) that named a device the sender is not proven to be.
    pub claims_refused: Family<RefusalLabels, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut PromRegistry) -> Metrics {
        let m = Metrics {
            book: Arc::default(),
            claims_refused: reg.metric(
                "provbox_status_claims_refused",
                "Device claims (syslog lines, User-Agents, paths naming a MAC) refused because they contradict a proven address, by reason",
            ),
        };
        reg.register_collector(Box::new(m.clone()));
        m
    }
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(book) = self.book.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let counts = book.counts();
        let mut family = enc.encode_descriptor(
            "provbox_devices",
            "Devices known to the status book, by state",
            None,
            MetricType::Gauge,
        )?;
        for s in State::ALL {
            let n = counts.get(&s).copied().unwrap_or(0);
            ConstGauge::new(n).encode(family.encode_family(&StateLabels { state: s.as_str() })?)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Inner {
    devices: HashMap<String, Device>,
    /// Address → the one record whose `ip` it is. Each record appears at most once: an
    /// entry is removed when its record moves, is displaced or is forgotten.
    by_ip: HashMap<IpAddr, String>,
}

/// Keys waiting to be written. A bounded set: past [`MAX_DIRTY_KEYS`] it collapses into
/// "write everything", so nothing is lost, memory stays bounded and no producer waits.
#[derive(Default)]
struct Pending {
    keys: HashSet<String>,
    all: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.all && self.keys.is_empty()
    }
}

struct Dirty {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
}

impl Dirty {
    fn new() -> Dirty {
        Dirty {
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        {
            let mut p = self.lock();
            if !p.all {
                for k in keys {
                    if !p.keys.contains(k) {
                        p.keys.insert(k.to_string());
                    }
                    if p.keys.len() > MAX_DIRTY_KEYS {
                        p.keys = HashSet::new();
                        p.all = true;
                        break;
                    }
                }
            }
        }
        // Stores a wake-up when the writer is busy: it comes round again.
        self.wake.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }
}

pub struct StatusBook {
    inner: Mutex<Inner>,
    registry: Arc<Registry>,
    metrics: Metrics,
    /// Bumped on every change: the dashboard polls it.
    version: AtomicU64,
    /// Keys to write (or delete) in the store; `None` when running without one (tests).
    dirty: Option<Dirty>,
    /// Told of every state change and lease event; set once hooks are configured.
    hooks: OnceLock<Arc<dyn Announce>>,
    /// The keys of every change, for live subscribers (the API's event stream). A
    /// subscriber that falls [`CHANGE_QUEUE`] changes behind is told it lagged; nobody
    /// here ever waits for one.
    changes: tokio::sync::broadcast::Sender<Arc<[String]>>,
}

/// Changes a live subscriber may fall behind before it is dropped.
pub(crate) const CHANGE_QUEUE: usize = 256;

/// What the dashboard and CLI need to reach a device.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: String,
    pub ip: IpAddr,
    pub vendor: Option<String>,
}

impl Target {
    /// What to send this device to have it resync (or reboot): its MAC from its key when
    /// the key is one (an `ip:…` key has none), its vendor hint for the event.
    pub(crate) fn resync_request(&self, reboot: bool) -> crate::resync::Request {
        crate::resync::Request {
            ip: self.ip,
            mac_hex: self.key.parse::<Mac>().ok().map(|m| m.to_hex()),
            vendor: self.vendor.clone(),
            reboot,
        }
    }
}

fn key_of(mac: Mac) -> String {
    mac.to_string()
}

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

/// What a claim naming a MAC from a source address may do.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Neither the address nor the device is proven elsewhere: the device's own word,
    /// kept as such (an unproven address).
    Unproven,
    /// The address is proven to be this very device.
    Proven,
    /// The address is proven to be another device: the claim is refused, whatever came
    /// from there belongs to that device.
    OwnedBy(Mac),
    /// The device is proven at another address: the claim is refused.
    Refused,
}

impl StatusBook {
    /// A book without persistence (unit tests).
    pub fn in_memory(registry: Arc<Registry>, metrics: Metrics) -> Arc<StatusBook> {
        StatusBook::new(Inner::default(), registry, metrics, None)
    }

    fn new(
        inner: Inner,
        registry: Arc<Registry>,
        metrics: Metrics,
        dirty: Option<Dirty>,
    ) -> Arc<StatusBook> {
        let book = Arc::new(StatusBook {
            inner: Mutex::new(inner),
            registry,
            metrics,
            version: AtomicU64::new(1),
            dirty,
            hooks: OnceLock::new(),
            changes: tokio::sync::broadcast::channel(CHANGE_QUEUE).0,
        });
        // First book wins: one per process (tests make more, each with its own Metrics).
        let _ = book.metrics.book.set(Arc::downgrade(&book));
        book
    }

    /// Load the records from the store and start writing changes back on `tracker`.
    pub fn open(
        store: Arc<Store>,
        registry: Arc<Registry>,
        metrics: Metrics,
        shutdown: tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Result<Arc<StatusBook>> {
        let book = StatusBook::load(&store, registry, metrics)?;
        tracker.spawn(persist(book.clone(), store, shutdown));
        Ok(book)
    }

    /// The records in the store, as a book that remembers what changes (nothing writes
    /// them until [`StatusBook::write_pending`]).
    fn load(store: &Store, registry: Arc<Registry>, metrics: Metrics) -> Result<Arc<StatusBook>> {
        let mut inner = Inner::default();
        let tx = store.db().begin_write().context("status: store")?;
        tx.open_table(DEVICES).context("status: store")?;
        tx.commit().context("status: store")?;
        let rx = store.db().begin_read().context("status: store")?;
        let table = rx.open_table(DEVICES).context("status: store")?;
        for row in table.iter().context("status: store")? {
            let (k, v) = row.context("status: store")?;
            match serde_json::from_slice::<Device>(v.value()) {
                Ok(mut d) => {
                    if let Some(ip) = d.ip {
                        // One record per address (older stores could hold several).
                        if let Some(prev) = inner.by_ip.insert(ip, d.key.clone())
                            && let Some(p) = inner.devices.get_mut(&prev)
                        {
                            p.ip_proof = None;
                        }
                    } else {
                        d.ip_proof = None;
                    }
                    inner.devices.insert(k.value().to_string(), d);
                }
                Err(e) => {
                    tracing::warn!(key = k.value(), "status: unreadable record skipped: {e}")
                }
            }
        }
        Ok(StatusBook::new(
            inner,
            registry,
            metrics,
            Some(Dirty::new()),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hooks hear of state changes from now on (set once; later calls are ignored).
    pub fn set_hooks(&self, h: Arc<dyn Announce>) {
        let _ = self.hooks.set(h);
    }

    /// `d` was `before` (None: it is new): tell the hooks if its state moved. Only queues.
    fn announce(&self, d: &Device, before: Option<State>) {
        if before != Some(d.state)
            && let Some(h) = self.hooks.get()
        {
            h.state_changed(d, before);
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn changed(&self, keys: &[String]) {
        self.version.fetch_add(1, Ordering::AcqRel);
        if let Some(d) = &self.dirty {
            d.mark(keys.iter().map(String::as_str));
        }
        if self.changes.receiver_count() > 0 {
            // No receiver is no error: nobody is watching.
            let _ = self.changes.send(keys.into());
        }
    }

    /// The keys of every later change (a removed record's key too), as they happen.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<[String]>> {
        self.changes.subscribe()
    }

    /// Forget a device (a MAC, an address or a record key): its record, timeline and the
    /// address it was placed at go; the store row is deleted with the next write. The
    /// next thing heard from it starts a new record. Returns the key forgotten.
    pub fn forget(&self, key: &str) -> Option<String> {
        let mut inner = self.lock();
        let k = if inner.devices.contains_key(key) {
            key.to_string()
        } else {
            match key.parse::<Mac>() {
                Ok(m) => key_of(m),
                Err(_) => {
                    let ip = key.parse::<IpAddr>().ok()?;
                    inner.by_ip.get(&ip).cloned().unwrap_or_else(|| ip_key(ip))
                }
            }
        };
        let d = inner.devices.remove(&k)?;
        inner.by_ip.retain(|_, owner| *owner != k);
        drop(inner);
        tracing::info!(device = %k, ip = ?d.ip, "status: device forgotten");
        self.changed(std::slice::from_ref(&k));
        Some(k)
    }

    /// Devices per state, for the metrics scrape.
    fn counts(&self) -> HashMap<State, i64> {
        let inner = self.lock();
        let mut counts: HashMap<State, i64> = HashMap::new();
        for d in inner.devices.values() {
            *counts.entry(d.state).or_default() += 1;
        }
        counts
    }

    /// The address `d` is proven at right now: a lease while our registry still holds it
    /// for this MAC, a certificate's until something proves another.
    fn proven_ip(&self, d: &Device) -> Option<IpAddr> {
        let ip = d.ip?;
        match d.ip_proof? {
            Proof::ClientCert => Some(ip),
            Proof::Lease => {
                let mac: Mac = d.key.parse().ok()?;
                (self.registry.by_ip(ip)?.mac == mac).then_some(ip)
            }
        }
    }

    /// The device proven to be at `ip`: our lease there, else a certificate's record.
    fn proven_owner(&self, inner: &Inner, ip: IpAddr) -> Option<Mac> {
        if let Some(l) = self.registry.by_ip(ip) {
            return Some(l.mac);
        }
        let k = inner.by_ip.get(&ip)?;
        let d = inner.devices.get(k)?;
        (d.ip_proof == Some(Proof::ClientCert) && d.ip == Some(ip))
            .then(|| k.parse().ok())
            .flatten()
    }

    /// Judge a claim (`what`: a syslog line, a User-Agent, a path) from `from` naming `mac`;
    /// a refusal is counted, and noted on the named device's timeline now and then.
    fn judge(
        &self,
        inner: &mut Inner,
        mac: Mac,
        from: IpAddr,
        what: &str,
        at: u64,
        touched: &mut Vec<String>,
    ) -> Verdict {
        let (verdict, reason, detail) = match self.proven_owner(inner, from) {
            Some(o) if o == mac => return Verdict::Proven,
            Some(o) => (
                Verdict::OwnedBy(o),
                "address_proven_for_another_device",
                format!("{what} from {from} claimed this device, but {from} is proven to be {o}"),
            ),
            None => {
                let proven = inner
                    .devices
                    .get(&key_of(mac))
                    .and_then(|d| self.proven_ip(d));
                match proven {
                    Some(p) if p != from => (
                        Verdict::Refused,
                        "device_proven_elsewhere",
                        format!("{what} from {from} claimed this device, proven at {p}"),
                    ),
                    _ => return Verdict::Unproven,
                }
            }
        };
        self.metrics
            .claims_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
        let key = key_of(mac);
        match inner.devices.get_mut(&key) {
            Some(d) if at.saturating_sub(d.refusal_noted) >= REFUSAL_NOTE_EVERY_MS => {
                d.refusal_noted = at;
                // Not `push_event`: a refused claim is not the device being heard from.
                let last_seen = d.last_seen;
                d.push_event(at, "claim_refused", detail.clone());
                d.last_seen = last_seen;
                touched.push(key);
                tracing::warn!(device = %mac, %from, reason, "status: claim refused: {detail} (noted at most once a minute per device)");
            }
            _ => tracing::debug!(device = %mac, %from, reason, "status: claim refused: {detail}"),
        }
        verdict
    }

    /// The record for `mac` (made if new), placed at `ip` when given. `proof` says what
    /// placed it there; `None` is the device's own word, which keeps a proof the record
    /// already has for that same address. Callers judge claims first ([`Self::judge`]).
    fn device_for_mac<'a>(
        &self,
        inner: &'a mut Inner,
        mac: Mac,
        ip: Option<IpAddr>,
        proof: Option<Proof>,
        at: u64,
        touched: &mut Vec<String>,
    ) -> &'a mut Device {
        let key = key_of(mac);
        if !inner.devices.contains_key(&key) {
            evict(inner, touched);
            inner
                .devices
                .insert(key.clone(), Device::new(key.clone(), at));
        }
        if let Some(ip) = ip {
            let orphan_key = ip_key(ip);
            if let Some(orphan) = inner.devices.remove(&orphan_key) {
                touched.push(orphan_key);
                inner.devices.get_mut(&key).unwrap().absorb(orphan);
            }
            place(inner, &key, ip, proof, touched);
        }
        touched.push(key.clone());
        inner.devices.get_mut(&key).unwrap()
    }

    /// Who is at `ip`: our lease, then what we learned, else an address-only record.
    fn key_for_ip(&self, inner: &Inner, ip: IpAddr) -> (Option<Mac>, String) {
        if let Some(l) = self.registry.by_ip(ip) {
            return (Some(l.mac), key_of(l.mac));
        }
        match inner.by_ip.get(&ip) {
            Some(k) => (k.parse().ok(), k.clone()),
            None => (None, ip_key(ip)),
        }
    }

    pub fn lease_seen(
        &self,
        mac: Mac,
        ip: IpAddr,
        vendor_class: Option<&str>,
        hostname: Option<&str>,
    ) {
        let at = now_ms();
        let mut inner = self.lock();
        let mut touched = Vec::new();
        let before = inner.devices.get(&key_of(mac)).map(|d| d.state);
        let d = self.device_for_mac(
            &mut inner,
            mac,
            Some(ip),
            Some(Proof::Lease),
            at,
            &mut touched,
        );
        if let Some(v) = vendor_class {
            d.vendor_class = Some(v.to_string());
        }
        if let Some(h) = hostname {
            d.hostname = Some(h.to_string());
        }
        d.push_event(at, "lease", ip.to_string());
        self.announce(d, before);
        self.changed(&touched);
    }

    /// A file request is over.
    pub fn transfer(&self, t: &TransferDone<'_>) {
        let at = now_ms();
        let ip = t.peer.ip();
        let mut inner = self.lock();
        let mut touched = Vec::new();
        // Proof first: a verified certificate, our own lease. Then the phone naming itself
        // (Yealink User-Agents carry the MAC, per-device file names like SEP<mac>.cnf.xml
        // do), judged against what is proven; last what is known at that address.
        let proven = match t.client_mac {
            Some(m) => Some((m, Proof::ClientCert)),
            None => self.registry.by_ip(ip).map(|l| (l.mac, Proof::Lease)),
        };
        let claimed = || {
            t.user_agent
                .and_then(Mac::find_in)
                .map(|m| (m, "a User-Agent"))
                .or_else(|| {
                    Mac::find_in(t.path.rsplit('/').next().unwrap_or("")).map(|m| (m, "a path"))
                })
        };
        let mac = match (proven, claimed()) {
            (Some((m, p)), _) => Some((m, Some(p))),
            (None, Some((m, what))) => {
                match self.judge(&mut inner, m, ip, what, at, &mut touched) {
                    Verdict::Unproven | Verdict::Proven => Some((m, None)),
                    Verdict::OwnedBy(o) => Some((o, None)),
                    Verdict::Refused => None,
                }
            }
            (None, None) => None,
        };
        let mac = mac.or_else(|| self.key_for_ip(&inner, ip).0.map(|m| (m, None)));
        let before = (inner.devices)
            .get(&mac.map(|(m, _)| key_of(m)).unwrap_or_else(|| ip_key(ip)))
            .map(|d| d.state);
        let d = match mac {
            Some((m, proof)) => {
                self.device_for_mac(&mut inner, m, Some(ip), proof, at, &mut touched)
            }
            None => {
                let key = ip_key(ip);
                if !inner.devices.contains_key(&key) {
                    evict(&mut inner, &mut touched);
                    inner
                        .devices
                        .insert(key.clone(), Device::new(key.clone(), at));
                    place(&mut inner, &key, ip, None, &mut touched);
                }
                touched.push(key.clone());
                inner.devices.get_mut(&key).unwrap()
            }
        };
        if let Some(ua) = t.user_agent {
            d.user_agent = Some(ua.to_string());
        }
        let ok = record::transfer_ok(t.outcome);
        if ok {
            d.transfers += 1;
        }
        d.bytes += t.bytes;
        d.push_event(
            at,
            "transfer",
            format!(
                "{} {} {} bytes {}",
                t.protocol.as_str(),
                t.path,
                t.bytes,
                t.outcome
            ),
        );
        d.on_transfer(ok);
        self.announce(d, before);
        self.changed(&touched);
    }

    /// A recognised provisioning line from the phone at `from`. A report naming a device
    /// that `from` is not proven to be (or that is proven elsewhere) is refused.
    pub fn phone_report(&self, from: IpAddr, r: &PhoneReport) {
        let at = now_ms();
        let mut inner = self.lock();
        let mut touched = Vec::new();
        match self.judge(&mut inner, r.mac, from, "a syslog report", at, &mut touched) {
            Verdict::Unproven | Verdict::Proven => {
                let before = inner.devices.get(&key_of(r.mac)).map(|d| d.state);
                let d = self.device_for_mac(&mut inner, r.mac, Some(from), None, at, &mut touched);
                if let Some(m) = &r.model {
                    d.model = Some(m.clone());
                }
                d.push_event(at, r.event.kind(), r.event.detail());
                d.on_phone(&r.event);
                self.announce(d, before);
            }
            Verdict::OwnedBy(_) | Verdict::Refused => {}
        }
        self.changed(&touched);
    }

    /// Any other line from a phone: kept with the device if we can tell which one it is.
    /// A MAC in the line counts only as far as [`Self::judge`] allows; otherwise the line
    /// goes to whoever is known at `from`. Returns false when the sender is unknown (the
    /// line is not kept).
    pub fn phone_line(&self, from: IpAddr, mac: Option<Mac>, text: &str) -> bool {
        let at = now_ms();
        let mut inner = self.lock();
        let mut touched = Vec::new();
        let named = match mac {
            Some(m) => match self.judge(&mut inner, m, from, "a syslog line", at, &mut touched) {
                Verdict::Unproven | Verdict::Proven => Some(m),
                Verdict::OwnedBy(o) => Some(o),
                Verdict::Refused => None,
            },
            None => None,
        };
        let d = match named {
            Some(m) => self.device_for_mac(&mut inner, m, Some(from), None, at, &mut touched),
            None => {
                let (_, key) = self.key_for_ip(&inner, from);
                if !inner.devices.contains_key(&key) {
                    if !touched.is_empty() {
                        self.changed(&touched);
                    }
                    return false;
                }
                touched.push(key.clone());
                inner.devices.get_mut(&key).unwrap()
            }
        };
        d.push_line(at, text);
        self.changed(&touched);
        true
    }

    /// A note on the timeline from provbox itself (e.g. a resync was sent).
    pub fn note(&self, key: &str, kind: &str, detail: &str) {
        let mut inner = self.lock();
        if let Some(d) = inner.devices.get_mut(key) {
            d.push_event(now_ms(), kind, detail);
            self.changed(&[key.to_string()]);
        }
    }

    /// `f` applied to every device, in key order, under the lock (no copies of timelines).
    pub fn map<T>(&self, mut f: impl FnMut(&Device) -> T) -> Vec<T> {
        let inner = self.lock();
        let mut v: Vec<&Device> = inner.devices.values().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v.into_iter().map(&mut f).collect()
    }

    pub fn list(&self) -> Vec<Device> {
        let inner = self.lock();
        let mut v: Vec<Device> = inner.devices.values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    pub fn get(&self, key: &str) -> Option<Device> {
        let inner = self.lock();
        if let Some(d) = inner.devices.get(key) {
            return Some(d.clone());
        }
        let k = match key.parse::<Mac>() {
            Ok(m) => key_of(m),
            Err(_) => match key.parse::<IpAddr>() {
                Ok(ip) => inner.by_ip.get(&ip).cloned().unwrap_or_else(|| ip_key(ip)),
                Err(_) => return None,
            },
        };
        inner.devices.get(&k).cloned()
    }

    /// Where a resync for `d` goes: its current lease, else its last proven address (or,
    /// for a device never proven, the address it last spoke from), never an address our
    /// lease registry gives to another device.
    fn resync_address(&self, d: &Device) -> Option<IpAddr> {
        let ip = d.ip?;
        match self.registry.by_ip(ip) {
            Some(l) => (d.key.parse::<Mac>().ok() == Some(l.mac)).then_some(ip),
            None => Some(ip),
        }
    }

    /// Devices a resync goes to: `all`, a MAC or an address.
    pub fn targets(&self, what: &str) -> Vec<Target> {
        let pick = |d: &Device| {
            self.resync_address(d).map(|ip| Target {
                key: d.key.clone(),
                ip,
                vendor: d
                    .model
                    .clone()
                    .or_else(|| d.vendor_class.clone())
                    .or_else(|| d.user_agent.clone()),
            })
        };
        if what == "all" {
            // `map`, not `list`: no copy of every device's timeline.
            return self.map(pick).into_iter().flatten().collect();
        }
        self.get(what).as_ref().and_then(pick).into_iter().collect()
    }

    /// Write what changed since the last call: the records (copied a chunk at a time under
    /// the lock, serialised outside it) and deletions, in one commit. Returns the number
    /// of rows written or deleted.
    fn write_pending(&self, store: &Store) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let Some(dirty) = &self.dirty else {
            return Ok(Vec::new());
        };
        let pending = dirty.take();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = if pending.all {
            // Everything the book holds, and every stored row it no longer holds.
            let mut all: HashSet<String> = self.lock().devices.keys().cloned().collect();
            let rx = store.db().begin_read()?;
            let table = rx.open_table(DEVICES)?;
            for row in table.iter()? {
                all.insert(row?.0.value().to_string());
            }
            all.into_iter().collect()
        } else {
            pending.keys.into_iter().collect()
        };
        let mut rows: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(WRITE_CHUNK) {
            let copies: Vec<Option<Device>> = {
                let inner = self.lock();
                chunk
                    .iter()
                    .map(|k| inner.devices.get(k).cloned())
                    .collect()
            };
            for (k, d) in chunk.iter().zip(copies) {
                rows.push((k.clone(), d.and_then(|d| serde_json::to_vec(&d).ok())));
            }
        }
        let tx = store.db().begin_write()?;
        {
            let mut t = tx.open_table(DEVICES)?;
            for (k, v) in &rows {
                match v {
                    Some(v) => {
                        t.insert(k.as_str(), v.as_slice())?;
                    }
                    None => {
                        t.remove(k.as_str())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(rows)
    }

    /// A record another box wrote (`store.backend: postgres`): folded into ours, or taken
    /// as it is. Its address proves nothing here (the other box's lease is not in our
    /// registry), and it is not written back (the other box already did).
    pub fn merge_remote(&self, mut other: Device) {
        other.ip_proof = None;
        let mut inner = self.lock();
        let key = other.key.clone();
        // Records evicted to make room: deleted from the local store and announced like
        // any other change (the fleet's table keeps them).
        let mut evicted = Vec::new();
        match inner.devices.get_mut(&key) {
            Some(d) => merge_device(d, other),
            None => {
                evict(&mut inner, &mut evicted);
                if let Some(ip) = other.ip
                    && !inner.by_ip.contains_key(&ip)
                {
                    inner.by_ip.insert(ip, key.clone());
                }
                inner.devices.insert(key, other);
            }
        }
        drop(inner);
        self.changed(&evicted);
    }
}

/// Fold `other` (the same device, as another box knows it) into `d`: timelines joined
/// without repeats, the newer box's view of state and identity.
fn merge_device(d: &mut Device, other: Device) {
    let newer = other.last_seen > d.last_seen;
    if newer {
        d.state = other.state;
        d.reason = other.reason.clone();
        if other.ip.is_some() && d.ip_proof.is_none() {
            d.ip = other.ip;
        }
        for (mine, theirs) in [
            (&mut d.model, &other.model),
            (&mut d.vendor_class, &other.vendor_class),
            (&mut d.hostname, &other.hostname),
            (&mut d.user_agent, &other.user_agent),
        ] {
            if theirs.is_some() {
                *mine = theirs.clone();
            }
        }
    }
    d.first_seen = d.first_seen.min(other.first_seen);
    d.last_seen = d.last_seen.max(other.last_seen);
    d.transfers = d.transfers.max(other.transfers);
    d.bytes = d.bytes.max(other.bytes);
    let by_entry =
        |a: &Event, b: &Event| (a.at, &a.kind, &a.detail).cmp(&(b.at, &b.kind, &b.detail));
    let mine = std::mem::take(&mut d.events);
    d.events = record::merged(mine, other.events, by_entry, true, record::MAX_EVENTS);
    let by_line = |a: &record::Line, b: &record::Line| (a.at, &a.text).cmp(&(b.at, &b.text));
    let mine = std::mem::take(&mut d.lines);
    d.lines = record::merged(mine, other.lines, by_line, true, record::MAX_LINES);
}

/// Put record `key` at `ip` with `proof`, keeping `by_ip` to one entry per record: the
/// record's previous address is dropped from the index, and a record indexed at `ip`
/// before is no longer (nor proven there: the address is someone else's now).
fn place(
    inner: &mut Inner,
    key: &str,
    ip: IpAddr,
    proof: Option<Proof>,
    touched: &mut Vec<String>,
) {
    let Some(d) = inner.devices.get_mut(key) else {
        return;
    };
    let old = d.ip.replace(ip);
    d.ip_proof = match proof {
        Some(p) => Some(p),
        // The device's own word from where it is already placed keeps that proof.
        None if old == Some(ip) => d.ip_proof,
        None => None,
    };
    if let Some(old) = old
        && old != ip
        && inner.by_ip.get(&old).map(String::as_str) == Some(key)
    {
        inner.by_ip.remove(&old);
    }
    if let Some(prev) = inner.by_ip.insert(ip, key.to_string())
        && prev != key
        && let Some(p) = inner.devices.get_mut(&prev)
        && p.ip_proof.take().is_some()
    {
        // It keeps showing where it was last heard from, but proves nothing there now
        // (and a resync never follows an address our registry leases to another).
        touched.push(prev);
    }
}

/// When the book is full, forget the devices not heard from longest: a sixteenth of the
/// book at once, so a stream of new devices (a DHCP storm of fresh MACs) pays one walk of
/// the book per 256 newcomers instead of one per newcomer.
fn evict(inner: &mut Inner, touched: &mut Vec<String>) {
    if inner.devices.len() < MAX_DEVICES {
        return;
    }
    let mut ages: Vec<(u64, &String)> = inner
        .devices
        .iter()
        .map(|(k, d)| (d.last_seen, k))
        .collect();
    let n = (MAX_DEVICES / EVICT_FRACTION).min(ages.len());
    ages.select_nth_unstable(n - 1);
    let gone: Vec<String> = ages[..n].iter().map(|(_, k)| (*k).clone()).collect();
    for k in &gone {
        if let Some(d) = inner.devices.remove(k)
            && let Some(ip) = d.ip
            && inner.by_ip.get(&ip) == Some(k)
        {
            inner.by_ip.remove(&ip);
        }
    }
    touched.extend(gone);
}

impl Observer for StatusBook {
    fn lease_seen(&self, ip: IpAddr, lease: &LeaseInfo) {
        StatusBook::lease_seen(
            self,
            lease.mac,
            ip,
            lease.vendor_class.as_deref(),
            lease.hostname.as_deref(),
        );
    }

    fn transfer(&self, t: &TransferDone<'_>) {
        StatusBook::transfer(self, t);
    }

    fn lease_bound(&self, ip: IpAddr, lease: &LeaseInfo) {
        if let Some(h) = self.hooks.get() {
            h.lease_bound(ip, lease);
        }
    }

    fn lease_ended(&self, ip: IpAddr, lease: &LeaseInfo) {
        if let Some(h) = self.hooks.get() {
            h.lease_ended(ip, lease);
        }
    }

    fn note(&self, mac: Mac, kind: &str, detail: &str) {
        StatusBook::note(self, &key_of(mac), kind, detail);
    }

    fn verification(&self, mac: Mac, v: &crate::devices::verify::Verdict) {
        let at = now_ms();
        let mut touched = Vec::new();
        {
            let mut inner = self.lock();
            let d = self.device_for_mac(&mut inner, mac, None, None, at, &mut touched);
            let drift = match v {
                crate::devices::verify::Verdict::Drift { params, .. } => params.clone(),
                _ => Vec::new(),
            };
            // The timeline lists what differs: expected, then reported.
            let detail = drift.iter().fold(v.summary(), |s, p| {
                format!(
                    "{s}; {}: expected `{}`, reported `{}`",
                    p.name, p.expected, p.reported
                )
            });
            d.push_event(at, v.result(), detail);
            d.verification = Some(record::Verification {
                result: v.result().to_string(),
                summary: v.summary(),
                at,
                drift,
            });
            // Told under the lock, as `announce` tells state changes: no copy of the record.
            if let Some(h) = self.hooks.get() {
                h.verification(d, v);
            }
        }
        self.changed(&touched);
    }
}

/// Writes changed records in batches: one commit for everything that changed meanwhile,
/// off the async threads (a commit fsyncs).
async fn persist(
    book: Arc<StatusBook>,
    store: Arc<Store>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(dirty) = &book.dirty else {
        return;
    };
    // `store.backend: postgres`: what is saved here is also shared with the other boxes.
    let shared = crate::store::shared().map(|pg| shared::start(pg, book.clone(), &shutdown));
    loop {
        tokio::select! {
            _ = dirty.wake.notified() => {}
            _ = shutdown.cancelled() => {}
        }
        // Gather for a moment: a bench of phones logging at once becomes one commit a
        // half second instead of one per line (each commit fsyncs). A crash loses at most
        // that half second of status, never the store.
        if !shutdown.is_cancelled() {
            tokio::select! {
                _ = tokio::time::sleep(PERSIST_DELAY) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        let (b, s) = (book.clone(), store.clone());
        let mut failed = true;
        match tokio::task::spawn_blocking(move || b.write_pending(&s)).await {
            Ok(Ok(rows)) => {
                failed = false;
                if let Some(sh) = &shared {
                    sh.send(rows);
                }
            }
            Ok(Err(e)) => {
                tracing::error!("status: cannot save device records: {e:#}");
                // Nothing is forgotten: the next round writes everything.
                dirty.lock().all = true;
            }
            Err(e) => tracing::error!("status: save task failed: {e}"),
        }
        if shutdown.is_cancelled() && (failed || dirty.lock().is_empty()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Protocol;

    fn book() -> (Arc<StatusBook>, Arc<Registry>) {
        let reg = Arc::new(Registry::default());
        let b = StatusBook::in_memory(reg.clone(), Metrics::default());
        reg.set_observer(b.clone());
        (b, reg)
    }

    #[test]
    fn forget_drops_the_record_and_its_address_and_subscribers_hear_of_it() {
        let (b, _) = book();
        let mut rx = b.subscribe();
        let mac: Mac = "00:56:2b:04:36:15".parse().unwrap();
        b.lease_seen(mac, "198.18.0.7".parse().unwrap(), None, None);
        assert!(rx.try_recv().unwrap().contains(&mac.to_string()));
        assert!(b.get("198.18.0.7").is_some());
        assert_eq!(
            b.forget("00562b043615").as_deref(),
            Some("00:56:2b:04:36:15")
        );
        assert!(b.get(&mac.to_string()).is_none());
        assert!(
            b.get("198.18.0.7").is_none(),
            "the address index forgot it too"
        );
        assert_eq!(b.forget(&mac.to_string()), None);
        assert!(rx.try_recv().unwrap().contains(&mac.to_string()));
        // Heard from again: a new record.
        b.transfer(&fetch("198.18.0.7", "/a.cfg", "ok"));
        assert!(b.get("198.18.0.7").is_some());
    }

    /// Another box's copy of a device folds in without repeats, however often it comes
    /// (each box writes back records that already hold the other's events).
    #[test]
    fn a_remote_record_merges_once_and_its_address_proves_nothing_here() {
        let (b, _) = book();
        let mac: Mac = "00:0e:08:00:00:01".parse().unwrap();
        b.lease_seen(mac, "198.18.0.20".parse().unwrap(), None, None);
        let mut theirs = Device::new(key_of(mac), 1);
        theirs.push_event(now_ms() + 5, "resync_ok", "http://a/x.cfg");
        theirs.state = State::Provisioned;
        theirs.last_seen = now_ms() + 5;
        let v = b.version();
        for _ in 0..3 {
            b.merge_remote(theirs.clone());
        }
        assert!(b.version() > v, "the dashboard sees the change");
        let d = b.get(&key_of(mac)).unwrap();
        assert_eq!(d.state, State::Provisioned);
        assert_eq!(
            d.events.iter().filter(|e| e.kind == "resync_ok").count(),
            1,
            "{:?}",
            d.events
        );
        // A device only the other box knows arrives without a proof of its address.
        let other: Mac = "00:0e:08:00:00:02".parse().unwrap();
        let mut far = Device::new(key_of(other), 1);
        far.ip = Some("198.18.0.30".parse().unwrap());
        far.ip_proof = Some(Proof::Lease);
        b.merge_remote(far);
        let d = b.get(&key_of(other)).unwrap();
        assert_eq!(d.ip_proof, None);
        assert_eq!(b.get("198.18.0.30").unwrap().key, key_of(other));
    }

    fn fetch<'a>(peer: &str, path: &'a str, outcome: &'a str) -> TransferDone<'a> {
        TransferDone {
            protocol: Protocol::http,
            peer: format!("{peer}:40000").parse().unwrap(),
            path,
            user_agent: None,
            client_mac: None,
            bytes: 10,
            outcome,
        }
    }

    #[test]
    fn full_book_forgets_the_longest_silent_and_metrics_count_on_scrape() {
        let mut preg = PromRegistry::default();
        let metrics = Metrics::register(&mut preg);
        let b = StatusBook::in_memory(Arc::new(Registry::default()), metrics);
        let mac = |i: usize| Mac([2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        for i in 0..MAX_DEVICES {
            b.lease_seen(mac(i), ip, None, None);
        }
        assert_eq!(b.list().len(), MAX_DEVICES);
        std::thread::sleep(std::time::Duration::from_millis(3));
        b.lease_seen(mac(0), ip, None, None); // heard from again: newest of the old ones
        b.lease_seen(mac(MAX_DEVICES), ip, None, None);
        let left = b.list();
        assert_eq!(left.len(), MAX_DEVICES + 1 - MAX_DEVICES / EVICT_FRACTION);
        assert!(b.get(&mac(0).to_string()).is_some());
        assert!(b.get(&mac(MAX_DEVICES).to_string()).is_some());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &preg).unwrap();
        assert!(
            text.contains(&format!("provbox_devices{{state=\"seen\"}} {}", left.len())),
            "{text}"
        );
    }

    #[test]
    fn lease_then_fetch_then_report() {
        let (b, reg) = book();
        let mac: Mac = "00:0e:08:aa:bb:cc".parse().unwrap();
        let ip: IpAddr = "198.18.0.7".parse().unwrap();
        reg.lease_bound(
            ip,
            LeaseInfo {
                vendor_class: Some("Cisco SPA504G".into()),
                ..LeaseInfo::of(mac)
            },
        );
        b.transfer(&fetch("198.18.0.7", "/spa504g.cfg", "ok"));
        let d = b.get("00:0e:08:aa:bb:cc").unwrap();
        assert_eq!(d.state, State::Configured);
        assert_eq!(d.vendor_class.as_deref(), Some("Cisco SPA504G"));
        b.phone_report(
            ip,
            &PhoneReport {
                model: Some("SPA504G".into()),
                mac,
                event: PhoneEvent::Succeeded {
                    action: Action::Resync,
                    url: "http://x/spa504g.cfg".into(),
                    detail: None,
                },
            },
        );
        let d = b.get("000e08aabbcc").unwrap();
        assert_eq!(d.state, State::Provisioned);
        assert_eq!(d.events.len(), 3);
        assert_eq!(b.targets("all").len(), 1);
        assert_eq!(b.targets("198.18.0.7")[0].key, "00:0e:08:aa:bb:cc");
    }

    #[test]
    fn address_only_record_merges_when_mac_is_learned() {
        let (b, _) = book();
        b.transfer(&fetch("198.18.0.9", "/common.cfg", "ok"));
        assert!(b.get("ip:198.18.0.9").is_some());
        let mac: Mac = "00:15:65:11:22:33".parse().unwrap();
        assert!(!b.phone_line("198.18.0.10".parse().unwrap(), None, "unknown sender"));
        assert!(b.phone_line("198.18.0.9".parse().unwrap(), Some(mac), "hello"));
        assert!(b.get("ip:198.18.0.9").is_none());
        let d = b.get("00:15:65:11:22:33").unwrap();
        assert_eq!(d.state, State::Configured);
        assert_eq!(d.lines.len(), 1);
        // Now the address is known: a line without MAC lands on the same record.
        assert!(b.phone_line("198.18.0.9".parse().unwrap(), None, "again"));
        assert_eq!(b.get("00:15:65:11:22:33").unwrap().lines.len(), 2);
    }

    #[test]
    fn mac_from_file_name() {
        let (b, _) = book();
        b.transfer(&fetch(
            "198.18.0.11",
            "/SEP0004F2AABBCC.cnf.xml",
            "not_found",
        ));
        let d = b.get("00:04:f2:aa:bb:cc").unwrap();
        assert_eq!(d.state, State::Seen);
        assert_eq!(d.transfers, 0);
    }

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn leased(reg: &Registry, at: &str, m: &str) {
        reg.lease_bound(ip(at), LeaseInfo::of(mac(m)));
    }

    fn refused(b: &StatusBook, reason: &'static str) -> u64 {
        b.metrics
            .claims_refused
            .get_or_create(&RefusalLabels { reason })
            .get()
    }

    fn index_is_one_entry_per_record(b: &StatusBook) {
        let inner = b.lock();
        let mut keys = HashSet::new();
        for (ip, k) in &inner.by_ip {
            assert_eq!(inner.devices[k].ip, Some(*ip), "{k}");
            assert!(keys.insert(k), "{k} indexed twice");
        }
        // Only the indexed record may be proven at an address.
        for d in inner.devices.values() {
            if let (Some(ip), Some(_)) = (d.ip, d.ip_proof) {
                assert_eq!(inner.by_ip.get(&ip), Some(&d.key), "{}", d.key);
            }
        }
    }

    #[test]
    fn a_spoofed_claim_does_not_move_a_leased_device_and_is_noted_once_a_minute() {
        let (b, reg) = book();
        let phone = "00:0e:08:aa:bb:01";
        leased(&reg, "198.18.0.101", phone);
        let spoofer = ip("198.18.0.66");
        // A line from another host naming the phone, twice; a report; a User-Agent.
        assert!(!b.phone_line(spoofer, Some(mac(phone)), "hello from the phone"));
        assert!(!b.phone_line(spoofer, Some(mac(phone)), "again"));
        b.phone_report(
            spoofer,
            &PhoneReport {
                model: Some("SPA504G".into()),
                mac: mac(phone),
                event: PhoneEvent::Failed {
                    action: Action::Resync,
                    reason: "forged".into(),
                },
            },
        );
        let mut t = fetch("198.18.0.66", "/x.cfg", "ok");
        t.user_agent = Some("Yealink SIP-T46G 28.72.0.1 00:0e:08:aa:bb:01");
        b.transfer(&t);
        let d = b.get(phone).unwrap();
        assert_eq!(d.ip, Some(ip("198.18.0.101")));
        assert_eq!(d.ip_proof, Some(Proof::Lease));
        assert_eq!(d.state, State::Seen, "the forged report changed nothing");
        assert!(d.lines.is_empty());
        assert_eq!(refused(&b, "device_proven_elsewhere"), 4);
        let notes = d
            .events
            .iter()
            .filter(|e| e.kind == "claim_refused")
            .count();
        assert_eq!(notes, 1, "{:?}", d.events);
        // The transfer is kept, on the spoofer's own address.
        assert_eq!(b.get("ip:198.18.0.66").unwrap().transfers, 1);
        // Resync goes where the lease is.
        let t = b.targets(phone);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].ip, ip("198.18.0.101"));
        assert_eq!(b.targets("198.18.0.66")[0].key, "ip:198.18.0.66");
        // From the phone's own address, its line is its own; a line there naming another
        // MAC is the phone's too (the address is proven to be it).
        assert!(b.phone_line(ip("198.18.0.101"), Some(mac(phone)), "mine"));
        let other = "00:0e:08:aa:bb:02";
        assert!(b.phone_line(ip("198.18.0.101"), Some(mac(other)), "names another"));
        assert!(b.get(other).is_none());
        assert_eq!(b.get(phone).unwrap().lines.len(), 2);
        assert_eq!(refused(&b, "address_proven_for_another_device"), 1);
        index_is_one_entry_per_record(&b);
    }

    #[test]
    fn addresses_move_with_proof_and_the_index_keeps_one_entry_per_record() {
        let (b, reg) = book();
        let (m, n) = ("00:0e:08:aa:bb:01", "00:0e:08:aa:bb:02");
        leased(&reg, "198.18.0.101", m);
        reg.lease_ended(ip("198.18.0.101"));
        leased(&reg, "198.18.0.102", m);
        assert_eq!(b.get(m).unwrap().ip, Some(ip("198.18.0.102")));
        assert!(b.get("198.18.0.101").is_none(), "the old address is pruned");
        assert_eq!(b.get("198.18.0.102").unwrap().key, m);
        // Another device gets m's address: m is no longer there, nor a resync target.
        reg.lease_ended(ip("198.18.0.102"));
        leased(&reg, "198.18.0.102", n);
        assert_eq!(b.get(m).unwrap().ip_proof, None);
        assert!(b.targets(m).is_empty());
        assert_eq!(b.targets("198.18.0.102")[0].key, n);
        // A verified certificate proves an address too, and moves the device.
        let mut t = fetch("198.18.0.150", "/n.cfg", "ok");
        t.client_mac = Some(mac(m));
        b.transfer(&t);
        assert_eq!(b.get(m).unwrap().ip_proof, Some(Proof::ClientCert));
        assert!(!b.phone_line(ip("198.18.0.151"), Some(mac(m)), "spoof"));
        assert_eq!(b.get(m).unwrap().ip, Some(ip("198.18.0.150")));
        // An unproven device follows its own word, one index entry however many sources.
        let u = "00:15:65:00:00:01";
        for i in 0..1000u32 {
            let from = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            assert!(b.phone_line(from, Some(mac(u)), "x"));
        }
        assert_eq!(b.get(u).unwrap().ip, Some(ip("10.0.3.231")));
        assert_eq!(b.get(u).unwrap().ip_proof, None);
        assert_eq!(b.lock().by_ip.len(), 3);
        index_is_one_entry_per_record(&b);
        // The lease lapsed: its last proven address is still where a resync goes.
        reg.lease_ended(ip("198.18.0.102"));
        assert_eq!(b.targets(n)[0].ip, ip("198.18.0.102"));
    }

    fn stored(dir: &std::path::Path) -> Arc<Store> {
        Store::open(dir).unwrap()
    }

    /// A store in `dir` and a book loaded from it, with a device registry of its own.
    fn stored_book(dir: &std::path::Path) -> (Arc<Store>, Arc<StatusBook>) {
        let store = stored(dir);
        let b = StatusBook::load(&store, Arc::new(Registry::default()), Metrics::default());
        (store, b.unwrap())
    }

    /// The `i`th of many made-up MACs (02:00:00:00:…).
    fn numbered_mac(i: usize) -> Mac {
        Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8])
    }

    fn rows(store: &Store) -> HashSet<String> {
        let rx = store.db().begin_read().unwrap();
        let t = rx.open_table(DEVICES).unwrap();
        t.iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_string())
            .collect()
    }

    #[test]
    fn past_its_bound_the_writer_is_told_to_write_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = stored_book(dir.path());
        let m = numbered_mac;
        for i in 0..10 {
            b.lease_seen(m(i), IpAddr::from([10, 0, 0, i as u8]), None, None);
        }
        {
            let p = b.dirty.as_ref().unwrap().lock();
            assert_eq!((p.keys.len(), p.all), (10, false));
        }
        assert_eq!(b.write_pending(&store).unwrap().len(), 10);
        assert_eq!(b.write_pending(&store).unwrap().len(), 0, "nothing left");
        for i in 10..MAX_DIRTY_KEYS + 50 {
            b.lease_seen(
                m(i),
                IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
                None,
                None,
            );
        }
        {
            let p = b.dirty.as_ref().unwrap().lock();
            assert!(p.all && p.keys.is_empty(), "bounded: collapsed to one flag");
        }
        b.write_pending(&store).unwrap();
        assert_eq!(rows(&store).len(), MAX_DIRTY_KEYS + 50, "nothing was lost");
    }

    #[test]
    fn eviction_forgets_the_longest_silent_everywhere_including_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = stored_book(dir.path());
        let m = numbered_mac;
        let addr = |i: usize| IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
        for i in 0..MAX_DEVICES {
            b.lease_seen(m(i), addr(i), None, None);
        }
        // Heard from in reverse order: the highest numbers are the longest silent.
        for (k, d) in b.lock().devices.iter_mut() {
            let i = k.parse::<Mac>().unwrap().0;
            d.last_seen = 1_000_000 - ((i[4] as u64) << 8 | i[5] as u64);
        }
        b.write_pending(&store).unwrap();
        assert_eq!(rows(&store).len(), MAX_DEVICES);
        b.lease_seen(m(MAX_DEVICES), addr(MAX_DEVICES), None, None);
        let gone = MAX_DEVICES / EVICT_FRACTION;
        for i in 0..MAX_DEVICES - gone {
            assert!(b.get(&m(i).to_string()).is_some(), "{i} kept");
        }
        for i in MAX_DEVICES - gone..MAX_DEVICES {
            assert!(b.get(&m(i).to_string()).is_none(), "{i} forgotten");
            assert!(!b.lock().by_ip.contains_key(&addr(i)), "{i} unindexed");
        }
        index_is_one_entry_per_record(&b);
        b.write_pending(&store).unwrap();
        let left = rows(&store);
        assert_eq!(left.len(), MAX_DEVICES + 1 - gone);
        assert!(!left.contains(&m(MAX_DEVICES - 1).to_string()));
        assert!(left.contains(&m(MAX_DEVICES).to_string()));
    }

    #[test]
    fn a_restart_keeps_records_addresses_and_their_proof() {
        let dir = tempfile::tempdir().unwrap();
        let (m, n, u) = (
            "00:0e:08:aa:bb:01",
            "00:0e:08:aa:bb:02",
            "00:15:65:00:00:01",
        );
        {
            let store = stored(dir.path());
            let reg = Arc::new(Registry::default());
            let b = StatusBook::load(&store, reg.clone(), Metrics::default()).unwrap();
            reg.set_observer(b.clone());
            leased(&reg, "198.18.0.101", m);
            let mut t = fetch("198.18.0.150", "/n.cfg", "ok");
            t.client_mac = Some(mac(n));
            b.transfer(&t);
            assert!(b.phone_line(ip("10.0.0.9"), Some(mac(u)), "unproven"));
            b.write_pending(&store).unwrap();
        }
        let store = stored(dir.path());
        // DHCP restores its leases into the registry at start.
        let reg = Arc::new(Registry::default());
        let b = StatusBook::load(&store, reg.clone(), Metrics::default()).unwrap();
        leased(&reg, "198.18.0.101", m);
        let get = |k: &str| b.get(k).unwrap();
        assert_eq!(
            (get(m).ip, get(m).ip_proof),
            (Some(ip("198.18.0.101")), Some(Proof::Lease))
        );
        assert_eq!(get(n).ip_proof, Some(Proof::ClientCert));
        assert_eq!((get(u).ip, get(u).ip_proof), (Some(ip("10.0.0.9")), None));
        index_is_one_entry_per_record(&b);
        // Proof still holds after the restart.
        assert!(!b.phone_line(ip("198.18.0.66"), Some(mac(m)), "spoof"));
        assert!(!b.phone_line(ip("198.18.0.66"), Some(mac(n)), "spoof"));
        assert_eq!(get(m).ip, Some(ip("198.18.0.101")));
        assert_eq!(get(n).ip, Some(ip("198.18.0.150")));
        assert_eq!(b.targets(m)[0].ip, ip("198.18.0.101"));
    }
}
