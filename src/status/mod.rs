//! Device status: one record per device joining what provbox sees (leases, transfers) and
//! what the phone says (syslog), folded into `seen → configured → upgraded → provisioned`
//! or `failed: reason`. Kept in memory for the dashboard, persisted in the store.
//!
//! The seam for other front ends is narrow: DHCP already reports leases through
//! `devices::Registry::lease_bound`, file front ends through `Provisioner::transfer_done`
//! (both reach [`StatusBook`] as a `devices::Observer`); the syslog receiver calls
//! [`StatusBook::phone_report`] / [`StatusBook::phone_line`].

pub mod record;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use anyhow::{Context as _, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as PromRegistry;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::devices::{LeaseInfo, Mac, Observer, Registry, TransferDone};
use crate::store::Store;
pub use record::{Action, Device, Event, PhoneEvent, PhoneReport, State, now_ms};

/// key (`00:0e:08:aa:bb:cc` or `ip:…`) → the record as JSON (readable with any redb tool,
/// and new fields do not need a migration).
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("status_devices");

/// How long changes gather before one commit writes them.
const PERSIST_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Devices kept; beyond that the one not heard from longest is forgotten.
pub const MAX_DEVICES: usize = 4096;
/// A full book forgets `MAX_DEVICES / EVICT_FRACTION` devices at once.
const EVICT_FRACTION: usize = 16;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// `provbox_devices{state}`, counted when scraped: counting on every event would walk
/// every record per lease or syslog line (it was most of the CPU under a DHCP storm).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    book: Arc<OnceLock<Weak<StatusBook>>>,
}

impl Metrics {
    pub fn register(reg: &mut PromRegistry) -> Metrics {
        let m = Metrics::default();
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
    /// Address → record key, learned from leases, syslog sources and transfers.
    by_ip: HashMap<IpAddr, String>,
}

pub struct StatusBook {
    inner: Mutex<Inner>,
    registry: Arc<Registry>,
    metrics: Metrics,
    /// Bumped on every change: the dashboard polls it.
    version: AtomicU64,
    /// Keys to write (or delete) in the store; `None` when running without one (tests).
    dirty: Option<mpsc::UnboundedSender<String>>,
    /// Told of every state change and lease event; set once hooks are configured.
    hooks: OnceLock<Arc<crate::hooks::Hooks>>,
}

/// What the dashboard and CLI need to reach a device.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: String,
    pub ip: IpAddr,
    pub vendor: Option<String>,
}

fn key_of(mac: Mac) -> String {
    mac.to_string()
}

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
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
        dirty: Option<mpsc::UnboundedSender<String>>,
    ) -> Arc<StatusBook> {
        let book = Arc::new(StatusBook {
            inner: Mutex::new(inner),
            registry,
            metrics,
            version: AtomicU64::new(1),
            dirty,
            hooks: OnceLock::new(),
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
        let mut inner = Inner::default();
        {
            let tx = store.db().begin_write().context("status: store")?;
            tx.open_table(DEVICES).context("status: store")?;
            tx.commit().context("status: store")?;
            let rx = store.db().begin_read().context("status: store")?;
            let table = rx.open_table(DEVICES).context("status: store")?;
            for row in table.iter().context("status: store")? {
                let (k, v) = row.context("status: store")?;
                match serde_json::from_slice::<Device>(v.value()) {
                    Ok(d) => {
                        if let Some(ip) = d.ip {
                            inner.by_ip.insert(ip, d.key.clone());
                        }
                        inner.devices.insert(k.value().to_string(), d);
                    }
                    Err(e) => {
                        tracing::warn!(key = k.value(), "status: unreadable record skipped: {e}")
                    }
                }
            }
        }
        let (send, recv) = mpsc::unbounded_channel();
        let book = StatusBook::new(inner, registry, metrics, Some(send));
        tracker.spawn(persist(book.clone(), store, recv, shutdown));
        Ok(book)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hooks hear of state changes from now on (set once; later calls are ignored).
    pub fn set_hooks(&self, h: Arc<crate::hooks::Hooks>) {
        let _ = self.hooks.set(h);
    }

    /// `d` was `before` (None: it is new): tell the hooks if its state moved. Only queues.
    fn announce(&self, d: &Device, before: Option<State>) {
        if before != Some(d.state)
            && let Some(h) = self.hooks.get()
        {
            h.publish(crate::hooks::Event::state(d, before));
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn changed(&self, keys: &[&str]) {
        self.version.fetch_add(1, Ordering::AcqRel);
        if let Some(tx) = &self.dirty {
            for k in keys {
                let _ = tx.send(k.to_string());
            }
        }
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

    /// The record for `mac`, folding in an address-only record for `ip` if there is one.
    fn device_for_mac<'a>(
        &self,
        inner: &'a mut Inner,
        mac: Mac,
        ip: Option<IpAddr>,
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
            inner.by_ip.insert(ip, key.clone());
            let orphan_key = ip_key(ip);
            if let Some(orphan) = inner.devices.remove(&orphan_key) {
                touched.push(orphan_key);
                inner.devices.get_mut(&key).unwrap().absorb(orphan);
            }
        }
        touched.push(key.clone());
        let d = inner.devices.get_mut(&key).unwrap();
        if ip.is_some() {
            d.ip = ip;
        }
        d
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
        let d = self.device_for_mac(&mut inner, mac, Some(ip), at, &mut touched);
        if let Some(v) = vendor_class {
            d.vendor_class = Some(v.to_string());
        }
        if let Some(h) = hostname {
            d.hostname = Some(h.to_string());
        }
        d.push_event(at, "lease", ip.to_string());
        self.announce(d, before);
        let keys: Vec<&str> = touched.iter().map(String::as_str).collect();
        self.changed(&keys);
    }

    /// A file request is over.
    pub fn transfer(&self, t: &TransferDone<'_>) {
        let at = now_ms();
        let ip = t.peer.ip();
        let mut inner = self.lock();
        let mut touched = Vec::new();
        // Strongest first: a verified certificate, our own lease, the phone naming itself
        // (Yealink User-Agents carry the MAC, per-device file names like SEP<mac>.cnf.xml
        // do), and last what an earlier line from that address told.
        let mac = t
            .client_mac
            .or_else(|| self.registry.by_ip(ip).map(|l| l.mac))
            .or_else(|| t.user_agent.and_then(Mac::find_in))
            .or_else(|| Mac::find_in(t.path.rsplit('/').next().unwrap_or("")))
            .or_else(|| self.key_for_ip(&inner, ip).0);
        let before = (inner.devices)
            .get(&mac.map(key_of).unwrap_or_else(|| ip_key(ip)))
            .map(|d| d.state);
        let d = match mac {
            Some(m) => self.device_for_mac(&mut inner, m, Some(ip), at, &mut touched),
            None => {
                let key = ip_key(ip);
                if !inner.devices.contains_key(&key) {
                    evict(&mut inner, &mut touched);
                    let mut d = Device::new(key.clone(), at);
                    d.ip = Some(ip);
                    inner.devices.insert(key.clone(), d);
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
        let keys: Vec<&str> = touched.iter().map(String::as_str).collect();
        self.changed(&keys);
    }

    /// A recognised provisioning line from the phone at `from`.
    pub fn phone_report(&self, from: IpAddr, r: &PhoneReport) {
        let at = now_ms();
        let mut inner = self.lock();
        let mut touched = Vec::new();
        let before = inner.devices.get(&key_of(r.mac)).map(|d| d.state);
        let d = self.device_for_mac(&mut inner, r.mac, Some(from), at, &mut touched);
        if let Some(m) = &r.model {
            d.model = Some(m.clone());
        }
        d.push_event(at, r.event.kind(), r.event.detail());
        d.on_phone(&r.event);
        self.announce(d, before);
        let keys: Vec<&str> = touched.iter().map(String::as_str).collect();
        self.changed(&keys);
    }

    /// Any other line from a phone: kept with the device if we can tell which one it is.
    /// Returns false when the sender is unknown (the line is not kept).
    pub fn phone_line(&self, from: IpAddr, mac: Option<Mac>, text: &str) -> bool {
        let at = now_ms();
        let mut inner = self.lock();
        let mut touched = Vec::new();
        let d = match mac {
            Some(m) => self.device_for_mac(&mut inner, m, Some(from), at, &mut touched),
            None => {
                let (_, key) = self.key_for_ip(&inner, from);
                match inner.devices.get_mut(&key) {
                    Some(d) => {
                        touched.push(key);
                        d
                    }
                    None => return false,
                }
            }
        };
        d.push_line(at, text);
        let keys: Vec<&str> = touched.iter().map(String::as_str).collect();
        self.changed(&keys);
        true
    }

    /// A note on the timeline from provbox itself (e.g. a resync was sent).
    pub fn note(&self, key: &str, kind: &str, detail: &str) {
        let mut inner = self.lock();
        if let Some(d) = inner.devices.get_mut(key) {
            d.push_event(now_ms(), kind, detail);
            self.changed(&[key]);
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

    /// Devices a resync goes to: `all`, a MAC or an address.
    pub fn targets(&self, what: &str) -> Vec<Target> {
        let pick = |d: &Device| {
            d.ip.map(|ip| Target {
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
    let gone: HashSet<String> = ages[..n].iter().map(|(_, k)| (*k).clone()).collect();
    for k in &gone {
        inner.devices.remove(k);
    }
    inner.by_ip.retain(|_, v| !gone.contains(v));
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
            h.publish(crate::hooks::Event::lease(
                crate::hooks::Kind::LeaseBound,
                ip,
                lease,
            ));
        }
    }

    fn lease_ended(&self, ip: IpAddr, lease: &LeaseInfo) {
        if let Some(h) = self.hooks.get() {
            h.publish(crate::hooks::Event::lease(
                crate::hooks::Kind::LeaseEnded,
                ip,
                lease,
            ));
        }
    }
}

/// Writes changed records in batches: one commit for everything that changed meanwhile,
/// off the async threads (a commit fsyncs).
async fn persist(
    book: Arc<StatusBook>,
    store: Arc<Store>,
    mut rx: mpsc::UnboundedReceiver<String>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let first = tokio::select! {
            k = rx.recv() => k,
            _ = shutdown.cancelled() => None,
        };
        // Gather for a moment: a bench of phones logging at once becomes one commit a
        // half second instead of one per line (each commit fsyncs). A crash loses at most
        // that half second of status, never the store.
        if first.is_some() {
            tokio::select! {
                _ = tokio::time::sleep(PERSIST_DELAY) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        let mut keys: HashSet<String> = first.into_iter().collect();
        while let Ok(k) = rx.try_recv() {
            keys.insert(k);
        }
        let stopping = keys.is_empty();
        if !keys.is_empty() {
            let rows: Vec<(String, Option<Vec<u8>>)> = {
                let inner = book.lock();
                keys.into_iter()
                    .map(|k| {
                        let v = inner
                            .devices
                            .get(&k)
                            .and_then(|d| serde_json::to_vec(d).ok());
                        (k, v)
                    })
                    .collect()
            };
            let store = store.clone();
            let r = tokio::task::spawn_blocking(move || -> Result<()> {
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
                Ok(())
            })
            .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("status: cannot save device records: {e:#}"),
                Err(e) => tracing::error!("status: save task failed: {e}"),
            }
        }
        if stopping || (shutdown.is_cancelled() && rx.is_empty()) {
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
                mac,
                hostname: None,
                vendor_class: Some("Cisco SPA504G".into()),
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
}
