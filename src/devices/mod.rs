//! The device layer between the front ends and the catalog: who is asking, and what
//! bytes they may have. Every protocol calls [`Provisioner::fetch`] and nothing else.
//!
//! One request goes: normalise the path → identify the requester ([`identity`]) → PIN
//! binding if the path is under the init prefix ([`binding`]) → static file or template
//! from the catalog ([`template`]) → access check for per-device answers ([`access`]) →
//! render with the device's inventory variables ([`inventory`]) → encrypt with the
//! device's key ([`crypt`]). Public static files take the short way: identify, look up,
//! return the catalog's own entry.

pub mod access;
pub mod binding;
pub mod config;
pub mod crypt;
pub mod identity;
pub mod inventory;
pub mod neighbour;
pub mod registry;
pub mod template;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest as _, Sha256};

use crate::catalog::{Catalog, Entry, Refusal};
use crate::metrics::Protocol;
use crate::store::Store;

pub use config::Config;
pub use identity::{Identity, Source};
pub use inventory::{Inventory, Record};
pub use registry::{LeaseInfo, Mac, Registry};

/// A finished (or refused, or abandoned) file request, as the front end saw it at the end:
/// what the device status book records. Every file front end reports each request once,
/// through [`Provisioner::transfer_done`].
#[derive(Debug, Clone)]
pub struct TransferDone<'a> {
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    /// A MAC from a verified client certificate.
    pub client_mac: Option<Mac>,
    pub bytes: u64,
    /// The access-log outcome: `ok`, `partial`, `not_modified`, `not_found`, `aborted`…
    pub outcome: &'a str,
}

/// Hears about devices as the front ends meet them (leases, transfers). Implemented by the
/// status book; kept as a trait so the device layer does not depend on it.
pub trait Observer: Send + Sync {
    fn lease_seen(&self, _ip: std::net::IpAddr, _lease: &LeaseInfo) {}
    fn transfer(&self, _t: &TransferDone<'_>) {}
    /// A lease newly ties `ip` to a MAC (a renewal of the same binding is not told).
    fn lease_bound(&self, _ip: std::net::IpAddr, _lease: &LeaseInfo) {}
    /// The lease on `ip` was released, declined or expired.
    fn lease_ended(&self, _ip: std::net::IpAddr, _lease: &LeaseInfo) {}
}

use access::Owner;
use binding::{Bindings, Bound};

/// A verified TLS client certificate, as the HTTPS listener saw it.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity {
    /// The subject as text (`CN=…, O=…`).
    pub subject: String,
    pub common_name: Option<String>,
    /// A MAC address found in the subject (phone certificates carry it).
    pub mac: Option<Mac>,
}

/// Everything a front end knows about one request.
#[derive(Debug, Clone)]
pub struct FetchRequest<'a> {
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    pub client: Option<&'a ClientIdentity>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The device layer's own metric families.
#[derive(Clone, Default)]
pub struct DeviceMetrics {
    pub identity: Family<SourceLabels, Counter>,
    pub renders: Family<OutcomeLabels, Counter>,
    pub refusals: Family<ReasonLabels, Counter>,
    pub bindings: Family<ResultLabels, Counter>,
    pub encrypted: Counter,
    pub inventory_reloads: Family<OutcomeLabels, Counter>,
    pub inventory_records: Gauge,
}

impl DeviceMetrics {
    pub fn register(reg: &mut prometheus_client::registry::Registry) -> DeviceMetrics {
        let m = DeviceMetrics::default();
        reg.register(
            "provbox_device_identity",
            "File requests by where the requester's MAC came from (client_cert, lease, user_agent, path, none)",
            m.identity.clone(),
        );
        reg.register(
            "provbox_device_renders",
            "Template renders by outcome (rendered, missing_variable, template_syntax)",
            m.renders.clone(),
        );
        reg.register(
            "provbox_device_refusals",
            "Requests the device layer refused, by reason",
            m.refusals.clone(),
        );
        reg.register(
            "provbox_device_bindings",
            "Retail PIN binding attempts by result",
            m.bindings.clone(),
        );
        reg.register(
            "provbox_device_encrypted",
            "Per-device responses encrypted with the device's key",
            m.encrypted.clone(),
        );
        reg.register(
            "provbox_device_inventory_reloads",
            "Inventory file reads by outcome (ok, error: the previous inventory stays)",
            m.inventory_reloads.clone(),
        );
        reg.register(
            "provbox_device_inventory_records",
            "Records in the current inventory",
            m.inventory_records.clone(),
        );
        m
    }
}

pub struct Provisioner {
    catalog: Arc<Catalog>,
    registry: Arc<Registry>,
    cfg: Config,
    inventory: ArcSwap<Inventory>,
    bindings: Option<Bindings>,
    metrics: DeviceMetrics,
    /// Where a lease's MAC is checked against the LAN (the kernel's neighbour table).
    neighbours: neighbour::Lookup,
}

impl Provisioner {
    /// A provisioner with the default device settings (per-device files protected, no
    /// inventory, no binding) and unregistered metrics: for tests and tools.
    pub fn new(catalog: Arc<Catalog>, registry: Arc<Registry>) -> Provisioner {
        Provisioner {
            catalog,
            registry,
            cfg: Config::default(),
            inventory: ArcSwap::from_pointee(Inventory::default()),
            bindings: None,
            metrics: DeviceMetrics::default(),
            neighbours: neighbour::kernel(),
        }
    }

    /// Check leases against `lookup` instead of the kernel's neighbour table (tests, and
    /// tools that run outside provbox's network namespace).
    pub fn with_neighbours(mut self, lookup: neighbour::Lookup) -> Provisioner {
        self.neighbours = lookup;
        self
    }

    /// Apply the `devices:` section: read the inventory (an invalid one refuses the start,
    /// naming its lines), and keep PIN bindings in `store`.
    pub fn with_devices(
        mut self,
        cfg: &Config,
        store: Option<Arc<Store>>,
        metrics: DeviceMetrics,
    ) -> anyhow::Result<Provisioner> {
        if let Some(inv) = &cfg.inventory {
            let canon = inv.canonicalize().unwrap_or_else(|_| inv.value.clone());
            if let Some(root) = self.catalog.roots().iter().find(|r| canon.starts_with(r)) {
                anyhow::bail!(
                    "devices.inventory: {} is inside the catalog root {}, so anyone could download it; move it out of the served roots",
                    inv.display(),
                    root.display()
                );
            }
            let loaded = Inventory::load(inv).map_err(|e| {
                anyhow::anyhow!("devices.inventory:\n{}", inventory::describe(inv, &e))
            })?;
            metrics.inventory_records.set(loaded.records.len() as i64);
            metrics
                .inventory_reloads
                .get_or_create(&OutcomeLabels { outcome: "ok" })
                .inc();
            tracing::info!(file = %inv.display(), records = loaded.records.len(), "inventory loaded");
            self.inventory = ArcSwap::from_pointee(loaded);
        }
        self.bindings = match (&cfg.binding.init_prefix, store) {
            (Some(prefix), Some(store)) => Some(Bindings::new(
                store,
                cfg.binding.devices_per_pin.value as usize,
                prefix,
                cfg.binding.wrong_pins_budget.value,
            )),
            (Some(_), None) => anyhow::bail!("devices.binding: PIN binding needs the store"),
            _ => None,
        };
        self.cfg = cfg.clone();
        self.metrics = metrics;
        Ok(self)
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.load_full()
    }

    /// Re-read the inventory when its file changes (polled: editors, `provbox devices
    /// import` and config management all replace files differently). A broken file is
    /// logged with its lines and counted; the previous inventory keeps serving.
    pub fn watch_inventory(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let Some(path) = self.cfg.inventory.as_ref().map(|p| p.value.clone()) else {
            return;
        };
        let this = self.clone();
        let stamp = |p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        tokio::spawn(async move {
            let mut last = stamp(&path);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
                match Inventory::load(&path) {
                    Ok(inv) => {
                        tracing::info!(file = %path.display(), records = inv.records.len(), "inventory reloaded");
                        this.metrics.inventory_records.set(inv.records.len() as i64);
                        this.metrics
                            .inventory_reloads
                            .get_or_create(&OutcomeLabels { outcome: "ok" })
                            .inc();
                        this.inventory.store(Arc::new(inv));
                    }
                    Err(e) => {
                        tracing::error!(
                            "inventory changed but cannot be used, keeping the previous one:\n{}",
                            inventory::describe(&path, &e)
                        );
                        this.metrics
                            .inventory_reloads
                            .get_or_create(&OutcomeLabels { outcome: "error" })
                            .inc();
                    }
                }
            }
        });
    }

    fn refuse(
        &self,
        req: &FetchRequest<'_>,
        id: &Identity,
        reason: &'static str,
        detail: &str,
    ) -> Refusal {
        self.metrics
            .refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
        tracing::info!(
            protocol = req.protocol.as_str(),
            peer = %req.peer,
            path = %self.log_path(req.path),
            mac = ?id.mac,
            source = ?id.source,
            reason,
            "device request refused: {detail}"
        );
        Refusal::Forbidden(reason)
    }

    /// `path` (as a client sent it) the way logs and timelines show it: a PIN request is
    /// shown as `/<init_prefix>/****` (a PIN is a credential; logs are read by more people
    /// than the inventory). Recognised exactly as `fetch` routes it: decoded, normalized,
    /// in any case.
    pub fn log_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        let Some(b) = &self.bindings else {
            return path.into();
        };
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        match crate::catalog::path::normalize(&decoded) {
            Ok(key) if b.route(&key).is_some_and(|rest| rest.len() > 1) => {
                format!("/{}/****", b.prefix()).into()
            }
            _ => path.into(),
        }
    }

    /// Front ends call this once per request when it is over (sent, refused or aborted).
    /// The observer never sees a PIN, whatever the front end passed.
    pub fn transfer_done(&self, t: &TransferDone<'_>) {
        if let Some(o) = self.registry.observer() {
            let path = self.log_path(t.path);
            o.transfer(&TransferDone { path: &path, ..*t });
        }
    }

    /// The bytes this request should get, or why not.
    pub fn fetch(&self, req: &FetchRequest<'_>) -> Result<Arc<Entry>, Refusal> {
        let key = crate::catalog::path::normalize(req.path)?;
        let owner = access::owner_of(&key, &self.cfg);
        let id = identity::identify(
            req.peer.ip(),
            req.user_agent,
            req.client,
            owner.mac(),
            &self.registry,
            &self.cfg.trust,
            &*self.neighbours,
        );
        self.metrics
            .identity
            .get_or_create(&SourceLabels { source: id.source })
            .inc();

        if let Some(rest) = self.bindings.as_ref().and_then(|b| b.route(&key)) {
            return self.bind(req, &id, rest);
        }
        if template::is_template(&key) {
            // Template sources show how profiles are built; never served as they are.
            return Err(Refusal::NotFound);
        }

        match self.catalog.lookup(&key) {
            Ok(entry) => match owner {
                Owner::Public => Ok(entry),
                Owner::Device(m, _) => {
                    let mac = access::allow(&id, Some(m))
                        .map_err(|r| self.refuse(req, &id, r, "per-device file"))?;
                    let inv = self.inventory.load();
                    let vars = self.device_vars(&inv, mac, &id, None);
                    self.maybe_encrypt(entry, &vars, mac, inv.modified)
                }
                Owner::Private => Err(self.refuse(
                    req,
                    &id,
                    "no_owner",
                    "a static file under a private prefix names no device",
                )),
            },
            Err(Refusal::NotFound) => {
                let tmpl = template::candidates(&key, owner.mac_range())
                    .iter()
                    .find_map(|c| self.catalog.lookup(c).ok())
                    .ok_or(Refusal::NotFound)?;
                let mac = access::allow(&id, owner.mac())
                    .map_err(|r| self.refuse(req, &id, r, "per-device profile"))?;
                let inv = self.inventory.load();
                let vars = self.device_vars(&inv, mac, &id, None);
                let body = self.render(req, &id, &tmpl, &vars)?;
                let modified = tmpl
                    .modified
                    .max(inv.modified.unwrap_or(SystemTime::UNIX_EPOCH));
                let entry = Arc::new(generated(key, Bytes::from(body), modified));
                self.maybe_encrypt(entry, &vars, mac, inv.modified)
            }
            Err(e) => Err(e),
        }
    }

    /// Variables for rendering for device `mac`: its macros, its bound account's
    /// variables, then its own inventory record's (which win). `account` is an account
    /// record to use instead of the bound one (the binding being made).
    fn device_vars(
        &self,
        inv: &Inventory,
        mac: Mac,
        id: &Identity,
        account: Option<&Record>,
    ) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        let bound_pin;
        let account = match account {
            Some(a) => Some(a),
            None => {
                bound_pin = self.bindings.as_ref().and_then(|b| b.pin_of(mac));
                bound_pin.as_deref().and_then(|p| inv.by_pin(p))
            }
        };
        if let Some(a) = account {
            v.extend(a.vars.iter().map(|(k, x)| (k.clone(), x.clone())));
        }
        // A serial is only what the User-Agent says: it selects a record that names no MAC
        // (one scanned by serial) or names this proven device, never another device's.
        let own = inv.by_mac(mac).or_else(|| {
            id.serial
                .as_deref()
                .and_then(|s| inv.by_serial(s))
                .filter(|r| r.mac.is_none_or(|m| m == mac))
        });
        if let Some(r) = own {
            v.extend(r.vars.iter().map(|(k, x)| (k.clone(), x.clone())));
        }
        let serial = own
            .and_then(|r| r.serial.clone())
            .or_else(|| id.serial.clone());
        let hex = mac.to_hex();
        v.insert("MAU".into(), hex.to_ascii_uppercase());
        v.insert("MA".into(), hex);
        v.insert("MAC".into(), mac.to_string());
        if let Some(pn) = &id.model {
            v.insert("PN".into(), pn.clone());
            if let Some(psn) = template::series(pn) {
                v.insert("PSN".into(), psn);
            }
        }
        if let Some(sw) = &id.version {
            v.insert("SWVER".into(), sw.clone());
        }
        if let Some(sn) = serial {
            v.insert("SN".into(), sn);
        }
        v
    }

    fn render(
        &self,
        req: &FetchRequest<'_>,
        id: &Identity,
        tmpl: &Entry,
        vars: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, Refusal> {
        let outcome = |o| {
            self.metrics
                .renders
                .get_or_create(&OutcomeLabels { outcome: o })
                .inc()
        };
        let Ok(text) = std::str::from_utf8(&tmpl.body) else {
            outcome("template_syntax");
            return Err(self.refuse(req, id, "template_syntax", "template is not UTF-8"));
        };
        let lookup = |n: &str| vars.get(n).map(|s| Cow::Borrowed(s.as_str()));
        match template::render(text, &lookup) {
            Ok(s) => {
                outcome("rendered");
                Ok(s.into_bytes())
            }
            Err(e) => {
                outcome(e.reason());
                let detail = format!("template {}: {e}", tmpl.key);
                let reason = e.reason();
                let refusal = self.refuse(req, id, reason, &detail);
                if self.cfg.missing_variable.value == 404 {
                    Err(Refusal::NotFound)
                } else {
                    Err(refusal)
                }
            }
        }
    }

    fn maybe_encrypt(
        &self,
        entry: Arc<Entry>,
        vars: &BTreeMap<String, String>,
        _mac: Mac,
        inv_modified: Option<SystemTime>,
    ) -> Result<Arc<Entry>, Refusal> {
        let Some(key) = vars.get("key").filter(|_| self.cfg.encryption.enabled) else {
            return Ok(entry);
        };
        let digest = match vars.get("digest").map(String::as_str) {
            Some("sha256") => config::Digest::Sha256,
            Some("md5") => config::Digest::Md5,
            _ => self.cfg.encryption.digest,
        };
        let body = crypt::encrypt(&entry.body, key, digest, self.cfg.encryption.gzip);
        self.metrics.encrypted.inc();
        let modified = entry
            .modified
            .max(inv_modified.unwrap_or(SystemTime::UNIX_EPOCH));
        Ok(Arc::new(generated(
            entry.key.clone(),
            Bytes::from(body),
            modified,
        )))
    }

    /// `GET <init_prefix>/<PIN>`: bind the proven requester to the PIN's account and answer
    /// the binding profile rendered for it. Render first, bind second: a broken profile
    /// binds nothing.
    fn bind(
        &self,
        req: &FetchRequest<'_>,
        id: &Identity,
        rest: &str,
    ) -> Result<Arc<Entry>, Refusal> {
        let count = |r: &'static str| {
            self.metrics
                .bindings
                .get_or_create(&ResultLabels { result: r })
                .inc()
        };
        let fail = |r: &'static str, detail: &str| {
            count(r);
            Err(self.refuse(req, id, r, detail))
        };
        let pin = rest.trim_start_matches('/');
        if pin.is_empty() || pin.contains('/') {
            return fail("pin_missing", "expected <init_prefix>/<PIN>");
        }
        let mac = match access::allow(id, None) {
            Ok(m) => m,
            Err(_) => {
                return fail(
                    "unidentified_device",
                    "PIN binding needs a device whose MAC is known and proven",
                );
            }
        };
        let Some(bindings) = &self.bindings else {
            return Err(Refusal::NotFound);
        };
        let ip = req.peer.ip();
        if let Err(t) = bindings.try_attempt(mac, ip) {
            let detail = match t {
                binding::Throttle::Guesser => {
                    "too many wrong PINs from this device or address; try again later"
                }
                binding::Throttle::Global => {
                    "devices.binding.wrong_pins_budget is used up for everyone; try again later"
                }
            };
            return fail(t.reason(), detail);
        }
        let inv = self.inventory.load();
        let Some(account) = inv.by_pin(pin) else {
            return fail("pin_unknown", "no account holds this PIN");
        };
        let profile = &self.cfg.binding.profile.value;
        let tmpl = match self.catalog.lookup(profile) {
            Ok(t) => t,
            Err(_) => {
                tracing::error!(profile = %profile, "devices.binding.profile is not in the catalog; nothing bound");
                return fail(
                    "binding_profile_missing",
                    "the binding profile template is missing",
                );
            }
        };
        let vars = self.device_vars(&inv, mac, id, Some(account));
        let body = self.render(req, id, &tmpl, &vars)?;
        match bindings.bind(pin, mac) {
            Ok(b) => {
                bindings.bound_ok(mac, ip);
                count(if b == Bound::New { "bound" } else { "again" });
                if b == Bound::New {
                    tracing::info!(mac = %mac, account = account.var("account").unwrap_or(""), "device bound to its account by PIN");
                }
            }
            Err(e) => {
                // Someone else's PIN, or a second one, stays counted as a guess.
                if let binding::BindRefusal::Store(s) = &e {
                    tracing::error!("binding store: {s}");
                }
                return fail(e.reason(), "PIN binding refused");
            }
        }
        let modified = tmpl
            .modified
            .max(inv.modified.unwrap_or(SystemTime::UNIX_EPOCH));
        let entry = Arc::new(generated(
            req.path.trim_start_matches('/').to_string(),
            Bytes::from(body),
            modified,
        ));
        self.maybe_encrypt(entry, &vars, mac, inv.modified)
    }
}

/// A per-request entry whose ETag is the content's hash: equal bytes, equal ETag, whichever
/// protocol or process made them.
fn generated(key: String, body: Bytes, modified: SystemTime) -> Entry {
    let h = Sha256::digest(&body);
    let hex: String = h[..12].iter().map(|b| format!("{b:02x}")).collect();
    Entry::generated(key, body, modified, format!("\"d-{hex}\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::At;
    use crate::metrics::Metrics;
    use config::Trust;
    use registry::LeaseInfo;
    use std::net::IpAddr;

    struct Lab {
        _dir: tempfile::TempDir,
        p: Provisioner,
    }

    fn lab(cfg: impl FnOnce(&mut Config)) -> Lab {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("files");
        std::fs::create_dir_all(root.join("cfg")).unwrap();
        std::fs::write(
            root.join("cfg/$MA.xml.tmpl"),
            "<device mac=\"$MAC\" ext=\"$extension\" name=\"$(display_name)\"/>\n",
        )
        .unwrap();
        std::fs::write(root.join("secret.cfg.tmpl"), "pw=$sip_password\n").unwrap();
        std::fs::write(root.join("SEP0015654AA937.cnf.xml"), "static for b\n").unwrap();
        std::fs::write(root.join("common.cfg"), "for everyone\n").unwrap();
        let inv = d.path().join("inventory.csv");
        std::fs::write(
            &inv,
            "device,extension,display_name,key\n00562b043615,1001,Alice,\n0015654aa937,1002,Bob,k3y\nCBT141400FK,1003,Serial,\n",
        )
        .unwrap();
        let m = Arc::new(Metrics::register(&mut Default::default()));
        let cat = Catalog::open(&[root], false, &d.path().join("data"), m).unwrap();
        cat.start().unwrap();
        let mut c = Config {
            inventory: Some(At::new(inv)),
            ..Config::default()
        };
        cfg(&mut c);
        let reg = Arc::new(Registry::default());
        // The LAN agrees with every lease (honest, directly attached phones).
        let lan = reg.clone();
        let p = Provisioner::new(cat, reg)
            .with_devices(&c, None, DeviceMetrics::default())
            .unwrap()
            .with_neighbours(Arc::new(move |ip| lan.by_ip(ip).map(|l| l.mac)));
        Lab { _dir: d, p }
    }

    const A: &str = "00562b043615";
    const LEASED: &str = "198.18.0.57";

    fn lease(p: &Provisioner, ip: &str, mac: &str) {
        p.registry().lease_bound(
            ip.parse().unwrap(),
            LeaseInfo {
                mac: mac.parse().unwrap(),
                hostname: None,
                vendor_class: None,
            },
        );
    }

    fn get(p: &Provisioner, proto: Protocol, ip: &str, path: &str) -> Result<Arc<Entry>, Refusal> {
        let ip: IpAddr = ip.parse().unwrap();
        p.fetch(&FetchRequest {
            protocol: proto,
            peer: SocketAddr::new(ip, 40000),
            path,
            user_agent: None,
            client: None,
        })
    }

    #[test]
    fn tftp_from_a_leased_address_gets_that_leases_profile() {
        let l = lab(|c| c.trust.lease = true);
        lease(&l.p, LEASED, A);
        let e = get(&l.p, Protocol::tftp, LEASED, "cfg/00562b043615.xml").unwrap();
        assert_eq!(
            &e.body[..],
            b"<device mac=\"00:56:2b:04:36:15\" ext=\"1001\" name=\"Alice\"/>\n"
        );
        // Same bytes and ETag over HTTP, uppercase MAC too.
        let h = get(&l.p, Protocol::http, LEASED, "/cfg/00562B043615.xml").unwrap();
        assert_eq!((&h.body, &h.etag), (&e.body, &e.etag));
        // Another device's profile: refused, whoever asks for it.
        assert_eq!(
            get(&l.p, Protocol::tftp, LEASED, "cfg/0015654aa937.xml").unwrap_err(),
            Refusal::Forbidden("other_device")
        );
        // No lease: nobody.
        assert_eq!(
            get(&l.p, Protocol::tftp, "198.18.0.58", "cfg/00562b043615.xml").unwrap_err(),
            Refusal::Forbidden("unproven_identity")
        );
        // Public files are untouched by all this.
        assert_eq!(
            &get(&l.p, Protocol::tftp, "198.18.0.58", "common.cfg")
                .unwrap()
                .body[..],
            b"for everyone\n"
        );
        // Templates are never served raw.
        assert_eq!(
            get(&l.p, Protocol::tftp, LEASED, "cfg/$MA.xml.tmpl").unwrap_err(),
            Refusal::NotFound
        );
        // The lease ends: the device is no longer proven.
        l.p.registry().lease_ended(LEASED.parse().unwrap());
        assert!(get(&l.p, Protocol::tftp, LEASED, "cfg/00562b043615.xml").is_err());
    }

    #[test]
    fn a_device_scanned_by_serial_is_found_through_its_user_agent() {
        let l = lab(|c| c.trust.user_agent = true);
        let e =
            l.p.fetch(&FetchRequest {
                protocol: Protocol::http,
                peer: "127.0.0.1:40000".parse().unwrap(),
                path: "/cfg/0002FDFF2103.xml",
                user_agent: Some("Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400FK)"),
                client: None,
            })
            .unwrap();
        assert_eq!(
            &e.body[..],
            b"<device mac=\"00:02:fd:ff:21:03\" ext=\"1003\" name=\"Serial\"/>\n"
        );
        let id = identity::identify(
            "127.0.0.1".parse().unwrap(),
            Some("Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400FK)"),
            None,
            None,
            l.p.registry(),
            &l.p.cfg.trust,
            &|_| None,
        );
        let vars =
            l.p.device_vars(&l.p.inventory(), id.mac.unwrap(), &id, None);
        assert_eq!(vars["SN"], "CBT141400FK");
        assert_eq!(vars["PN"], "SPA508G");
        assert_eq!(vars["PSN"], "508G");
        assert_eq!(vars["SWVER"], "7.4.4");
        assert_eq!(vars["MAU"], "0002FDFF2103");
    }

    #[test]
    fn untrusted_lease_proves_nothing() {
        let l = lab(|_| {});
        lease(&l.p, LEASED, A);
        assert_eq!(
            get(&l.p, Protocol::tftp, LEASED, "cfg/00562b043615.xml").unwrap_err(),
            Refusal::Forbidden("unproven_identity")
        );
    }

    #[test]
    fn missing_variable_refuses_with_the_configured_status() {
        let l = lab(|c| c.trust.lease = true);
        lease(&l.p, LEASED, A);
        assert_eq!(
            get(&l.p, Protocol::tftp, LEASED, "secret.cfg").unwrap_err(),
            Refusal::NotFound
        );
        let l = lab(|c| {
            c.trust.lease = true;
            c.missing_variable = At::new(403);
        });
        lease(&l.p, LEASED, A);
        assert_eq!(
            get(&l.p, Protocol::tftp, LEASED, "secret.cfg").unwrap_err(),
            Refusal::Forbidden("missing_variable")
        );
    }

    #[test]
    fn per_device_static_file_is_encrypted_with_the_device_key() {
        let l = lab(|c| c.trust.lease = true);
        lease(&l.p, LEASED, "0015654aa937");
        let e = get(&l.p, Protocol::tftp, LEASED, "SEP0015654AA937.cnf.xml").unwrap();
        assert_eq!(
            crypt::decrypt(&e.body, "k3y", config::Digest::Md5).unwrap(),
            b"static for b\n"
        );
        let again = get(&l.p, Protocol::https, LEASED, "SEP0015654AA937.cnf.xml").unwrap();
        assert_eq!(again.body, e.body);
    }

    #[test]
    fn a_serial_selects_only_a_record_without_a_mac_or_with_the_proven_one() {
        let d = tempfile::tempdir().unwrap();
        let inv = d.path().join("inv.csv");
        std::fs::write(
            &inv,
            "mac,serial,sip_password\n0015654aa937,CBT000VICTIM,victim-secret\n,CBT000SCANNED,scanned-secret\n",
        )
        .unwrap();
        let root = d.path().join("files");
        std::fs::create_dir_all(&root).unwrap();
        let m = Arc::new(Metrics::register(&mut Default::default()));
        let cat = Catalog::open(&[root], false, &d.path().join("data"), m).unwrap();
        let c = Config {
            inventory: Some(At::new(inv)),
            ..Config::default()
        };
        let p = Provisioner::new(cat, Arc::new(Registry::default()))
            .with_devices(&c, None, DeviceMetrics::default())
            .unwrap();
        let ua = |serial: &str| format!("Cisco/SPA508G-7.4.4 (0002FDFF2103)({serial})");
        let vars = |ua: &str| {
            let id = identity::identify(
                "127.0.0.1".parse().unwrap(),
                Some(ua),
                None,
                None,
                p.registry(),
                &Trust {
                    user_agent: true,
                    ..Default::default()
                },
                &|_| None,
            );
            p.device_vars(&p.inventory(), id.mac.unwrap(), &id, None)
        };
        // The victim's serial from another MAC: not the victim's record.
        let v = vars(&ua("CBT000VICTIM"));
        assert_eq!(v.get("sip_password"), None, "{v:?}");
        // A record scanned by serial alone is still found that way.
        let v = vars(&ua("cbt000scanned"));
        assert_eq!(v["sip_password"], "scanned-secret");
        // The victim itself, by its MAC.
        let v = vars("Cisco/SPA508G-7.4.4 (0015654AA937)(CBT000VICTIM)");
        assert_eq!(v["sip_password"], "victim-secret");
    }
}
