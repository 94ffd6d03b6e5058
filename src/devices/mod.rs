//! The device layer between the front ends and the catalog: who is asking, and what
//! bytes they may have. Every protocol calls [`Provisioner::fetch`] and nothing else.
//!
//! One request goes through one chain of stages ([`pipeline`]): normalise the path →
//! identify the requester ([`identity`]) → claim a PIN binding under the init prefix
//! ([`binding`]) → resolve a static file or template from the catalog ([`template`]) →
//! authorize per-device answers ([`access`]) and gather the device's variables
//! ([`inventory`]) → render → record the binding → encrypt with the device's key
//! ([`crypt`]). Public static files are answered at `authorize`, as the catalog has them.

pub mod access;
pub mod binding;
mod binding_pg;
pub mod config;
pub mod crypt;
pub(crate) mod desk;
pub mod identity;
pub mod inventory;
pub mod neighbour;
pub mod pipeline;
pub mod registry;
pub mod template;
pub(crate) mod verify;

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
use crate::metrics::{Protocol, Registers};
use crate::store::Store;

pub use config::Config;
pub use identity::{Identity, Source};
pub use inventory::{Inventory, Record};
pub use registry::{LeaseInfo, Mac, Port, PortChange, Registry};

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
    /// A note (`kind`, `detail`) on the timeline of the device with `mac`.
    fn note(&self, _mac: Mac, _kind: &str, _detail: &str) {}
    /// The device with `mac` reported its configuration: what the comparison found.
    fn verification(&self, _mac: Mac, _verdict: &crate::devices::verify::Verdict) {}
}

pub use crate::metrics::{OutcomeLabel, RefusalLabels, ResultLabels};
use binding::Bindings;

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
    /// The address the request reached (`$CA_URL`, `$HTTPS_BASE`), when the front end knows it.
    pub local: Option<SocketAddr>,
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    pub client: Option<&'a ClientIdentity>,
    /// HTTP(S) only: method, target and credentials (`http_auth`).
    pub http: Option<pipeline::httpauth::HttpFacts<'a>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: Source,
}

/// The device layer's own metric families.
#[derive(Clone, Default)]
pub struct DeviceMetrics {
    pub identity: Family<SourceLabels, Counter>,
    pub renders: Family<OutcomeLabel, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub bindings: Family<ResultLabels, Counter>,
    pub encrypted: Counter,
    pub inventory_reloads: Family<OutcomeLabel, Counter>,
    pub inventory_records: Gauge,
    pub http_auth: Family<ResultLabels, Counter>,
    pub verification: Family<ResultLabels, Gauge>,
}

impl DeviceMetrics {
    pub fn register(reg: &mut prometheus_client::registry::Registry) -> DeviceMetrics {
        DeviceMetrics {
            identity: reg.metric(
                "provbox_device_identity",
                "File requests by where the requester's MAC came from (client_cert, lease, user_agent, path, none)",
            ),
            renders: reg.metric(
                "provbox_device_renders",
                "Template renders by outcome (rendered, missing_variable, template_syntax)",
            ),
            refusals: reg.metric(
                "provbox_device_refusals",
                "Requests the device layer refused, by reason",
            ),
            bindings: reg.metric(
                "provbox_device_bindings",
                "Retail PIN binding attempts by result",
            ),
            encrypted: reg.metric(
                "provbox_device_encrypted",
                "Per-device responses encrypted with the device's key",
            ),
            inventory_reloads: reg.metric(
                "provbox_device_inventory_reloads",
                "Inventory file reads by outcome (ok, error: the previous inventory stays)",
            ),
            inventory_records: reg.metric(
                "provbox_device_inventory_records",
                "Records in the current inventory",
            ),
            http_auth: reg.metric(
                "provbox_http_auth",
                "HTTP credentials checks by result (ok, challenged, wrong_credentials, stale_nonce, replayed_nonce, malformed, throttled)",
            ),
            verification: reg.metric(
                "provbox_devices_verification",
                "Devices by their last configuration verification (verified, drift, unreadable)",
            ),
        }
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
    /// The stages every request goes through.
    chain: pipeline::Chain,
    /// The HTTPS listeners and CA the HTTPS bootstrap points phones at.
    pub bootstrap: pipeline::bootstrap::Bootstrap,
    /// HTTP Basic/Digest, with `devices.trust.http_auth`.
    http_auth: Option<pipeline::httpauth::HttpAuth>,
    /// The last profile rendered per device, for verification.
    pub served: crate::devices::verify::Served,
    verified: crate::devices::verify::Results,
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
            chain: pipeline::Chain::standard(),
            bootstrap: Default::default(),
            http_auth: None,
            served: Default::default(),
            verified: Default::default(),
        }
    }

    /// Check leases against `lookup` instead of the kernel's neighbour table (tests, and
    /// tools that run outside provbox's network namespace).
    pub fn with_neighbours(mut self, lookup: neighbour::Lookup) -> Provisioner {
        self.neighbours = lookup;
        self
    }

    /// Refuse a secret file (`key` names it) that lies inside a catalog root: anyone could
    /// download it.
    fn not_served(&self, key: &str, file: &std::path::Path) -> anyhow::Result<()> {
        let canon = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        if let Some(root) = self.catalog.roots().iter().find(|r| canon.starts_with(r)) {
            anyhow::bail!(
                "{key}: {} is inside the catalog root {}, so anyone could download it; move it out of the served roots",
                file.display(),
                root.display()
            );
        }
        Ok(())
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
            self.not_served("devices.inventory", inv)?;
            let loaded = Inventory::load(inv).map_err(|e| {
                anyhow::anyhow!("devices.inventory:\n{}", inventory::describe(inv, &e))
            })?;
            metrics.inventory_records.set(loaded.records.len() as i64);
            metrics
                .inventory_reloads
                .get_or_create(&OutcomeLabel { outcome: "ok" })
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
        self.http_auth = if cfg.trust.http_auth {
            if let Some(acc) = &cfg.http_auth.accounts {
                self.not_served("devices.http_auth.accounts", acc)?;
            }
            Some(pipeline::httpauth::HttpAuth::new(cfg)?)
        } else {
            None
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

    /// `devices.inventory`, when one is configured.
    pub fn inventory_path(&self) -> Option<&std::path::Path> {
        self.cfg.inventory.as_ref().map(|p| p.value.as_path())
    }

    /// Serve `inv` from the next request on (the API wrote it to the file just now; the
    /// file watch would find it too, a moment later).
    pub fn set_inventory(&self, inv: Inventory) {
        self.metrics.inventory_records.set(inv.records.len() as i64);
        self.inventory.store(Arc::new(inv));
    }

    /// The PIN bindings, when `devices.binding` is on.
    pub fn bindings(&self) -> Option<&Bindings> {
        self.bindings.as_ref()
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
                            .get_or_create(&OutcomeLabel { outcome: "ok" })
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
                            .get_or_create(&OutcomeLabel { outcome: "error" })
                            .inc();
                    }
                }
            }
        });
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

    /// The bytes this request should get, or why not: the request run through the
    /// device layer's stages ([`pipeline::Chain`]).
    pub fn fetch(&self, req: &FetchRequest<'_>) -> Result<Arc<Entry>, Refusal> {
        self.chain.run(self, req)
    }

    /// Who is asking and whether it is proven, as the pipeline's identifying stages find
    /// it ([`pipeline::Chain::prove`]): for uploads, which are not fetches.
    pub fn prove(&self, req: &FetchRequest<'_>) -> Result<Identity, Refusal> {
        self.chain.prove(self, req)
    }

    /// Add `stage` to the chain before the stage named `before` (uploads' read-back).
    pub fn with_stage(mut self, before: &str, stage: Box<dyn pipeline::Stage>) -> Provisioner {
        self.chain.insert_before(before, stage);
        self
    }

    /// The device a configuration report at `path` is from, when `path` is a report path.
    pub fn report_mac(&self, path: &str) -> Option<Mac> {
        self.cfg.reports.mac_of(path)
    }

    /// Who is asking, as `identify` (and `http_auth`) would prove it for a GET of `path`:
    /// the proven MAC, if any.
    pub fn proven(&self, req: &FetchRequest<'_>) -> Result<Mac, Refusal> {
        pipeline::prove(self, req)
    }

    /// `mac` reported `reported` (in `vendor`'s format): compare it with the profile last
    /// served to it, and tell the status book, the hooks and the gauge.
    pub fn verify_report(
        &self,
        mac: Mac,
        vendor: &str,
        reported: &[u8],
    ) -> crate::devices::verify::Verdict {
        let verdict = match self.served.last(mac) {
            Some(s) => crate::devices::verify::compare(vendor, &s.body, reported),
            None => crate::devices::verify::Verdict::Unreadable(
                "no profile was rendered for this device since provbox started".into(),
            ),
        };
        for (result, n) in self.verified.set(mac, verdict.result()) {
            self.metrics
                .verification
                .get_or_create(&ResultLabels { result })
                .set(n);
        }
        tracing::info!(%mac, vendor, result = verdict.result(), "configuration report: {}", verdict.summary());
        if let Some(o) = self.registry.observer() {
            o.verification(mac, &verdict);
        }
        verdict
    }

    /// `WWW-Authenticate` values for a 401 ([`Refusal::Unauthorized`]): empty when HTTP
    /// authentication is off.
    pub fn http_auth_challenges(&self, stale: bool) -> Vec<String> {
        self.http_auth
            .as_ref()
            .map(|a| a.challenges(stale))
            .unwrap_or_default()
    }

    /// Variables for rendering for device `mac` ([`pipeline::authorize::device_vars`]).
    #[cfg(test)]
    fn device_vars(
        &self,
        inv: &Inventory,
        mac: Mac,
        id: &Identity,
        account: Option<&Record>,
    ) -> std::collections::BTreeMap<String, String> {
        pipeline::authorize::device_vars(self, inv, mac, id, account)
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
    use crate::confkit::At;
    use config::Trust;
    use registry::LeaseInfo;
    use std::net::IpAddr;
    use std::path::Path;

    pub(super) struct Lab {
        _dir: tempfile::TempDir,
        pub(super) p: Provisioner,
    }

    impl Lab {
        /// A TFTP fetch of `path` from the leased address.
        fn tftp(&self, path: &str) -> Result<Arc<Entry>, Refusal> {
            get(&self.p, Protocol::tftp, LEASED, path)
        }
    }

    /// `text` written to `dir/name` (folders made on the way); its path.
    pub(super) fn written(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A temporary folder holding an inventory `name` with `text`, and the inventory's path.
    fn inventory(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let inv = written(d.path(), name, text);
        (d, inv)
    }

    pub(super) fn lab(cfg: impl FnOnce(&mut Config)) -> Lab {
        let (d, inv) = inventory(
            "inventory.csv",
            "device,extension,display_name,key\n00562b043615,1001,Alice,\n0015654aa937,1002,Bob,k3y\nCBT141400FK,1003,Serial,\n",
        );
        let root = d.path().join("files");
        for (name, text) in [
            (
                "cfg/$MA.xml.tmpl",
                "<device mac=\"$MAC\" ext=\"$extension\" name=\"$(display_name)\"/>\n",
            ),
            ("secret.cfg.tmpl", "pw=$sip_password\n"),
            ("SEP0015654AA937.cnf.xml", "static for b\n"),
            ("common.cfg", "for everyone\n"),
        ] {
            written(&root, name, text);
        }
        let cat = Catalog::for_tests(&[root], false, &d.path().join("data"));
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

    /// A lab whose leased address holds a lease for `mac`.
    fn leased_lab(mac: &str, cfg: impl FnOnce(&mut Config)) -> Lab {
        let l = lab(cfg);
        lease(&l.p, LEASED, mac);
        l
    }

    pub(super) const A: &str = "00562b043615";
    pub(super) const LEASED: &str = "198.18.0.57";

    pub(super) fn lease(p: &Provisioner, ip: &str, mac: &str) {
        p.registry()
            .lease_bound(ip.parse().unwrap(), LeaseInfo::of(mac.parse().unwrap()));
    }

    pub(super) fn get(
        p: &Provisioner,
        proto: Protocol,
        ip: &str,
        path: &str,
    ) -> Result<Arc<Entry>, Refusal> {
        let ip: IpAddr = ip.parse().unwrap();
        p.fetch(&FetchRequest {
            protocol: proto,
            peer: SocketAddr::new(ip, 40000),
            local: None,
            path,
            user_agent: None,
            client: None,
            http: None,
        })
    }

    #[test]
    fn tftp_from_a_leased_address_gets_that_leases_profile() {
        let l = leased_lab(A, |c| c.trust.lease = true);
        let e = l.tftp("cfg/00562b043615.xml").unwrap();
        assert_eq!(
            &e.body[..],
            b"<device mac=\"00:56:2b:04:36:15\" ext=\"1001\" name=\"Alice\"/>\n"
        );
        // Same bytes and ETag over HTTP, uppercase MAC too.
        let h = get(&l.p, Protocol::http, LEASED, "/cfg/00562B043615.xml").unwrap();
        assert_eq!((&h.body, &h.etag), (&e.body, &e.etag));
        // Another device's profile: refused, whoever asks for it.
        assert_eq!(
            l.tftp("cfg/0015654aa937.xml").unwrap_err(),
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
        assert_eq!(l.tftp("cfg/$MA.xml.tmpl").unwrap_err(), Refusal::NotFound);
        // The lease ends: the device is no longer proven.
        l.p.registry().lease_ended(LEASED.parse().unwrap());
        assert!(l.tftp("cfg/00562b043615.xml").is_err());
    }

    #[test]
    fn a_device_scanned_by_serial_is_found_through_its_user_agent() {
        let l = lab(|c| c.trust.user_agent = true);
        let e =
            l.p.fetch(&FetchRequest {
                protocol: Protocol::http,
                peer: "127.0.0.1:40000".parse().unwrap(),
                local: None,
                path: "/cfg/0002FDFF2103.xml",
                user_agent: Some("Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400FK)"),
                client: None,
                http: None,
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
    fn a_phone_on_a_relayed_port_gets_the_ports_inventory_row() {
        let (_inv_dir, inv) = inventory(
            "inventory.yaml",
            "devices:\n  - circuit: bench-3/port-12\n    extension: 1012\n    display_name: Slot 12\n",
        );
        let make = |relay: bool| {
            let Lab { _dir, p } = lab(|c| {
                c.trust.relay = relay;
                c.inventory = Some(At::new(inv.clone()));
            });
            // Relayed: the kernel shows no neighbour at a phone's address (the relay is).
            Lab {
                _dir,
                p: p.with_neighbours(Arc::new(|_| None)),
            }
        };
        let port = Port {
            circuit: Some("bench-3/port-12".into()),
            remote_id: None,
            relay: "198.18.1.1".parse().unwrap(),
        };
        let (slot, other) = ("198.18.1.12", "198.18.1.13");
        for trust in [true, false] {
            let l = make(trust);
            lease(&l.p, slot, "02:00:00:00:12:34");
            lease(&l.p, other, "02:00:00:00:12:35");
            l.p.registry().port_bound(
                &port,
                "02:00:00:00:12:34".parse().unwrap(),
                slot.parse().unwrap(),
            );
            let got = get(&l.p, Protocol::tftp, slot, "cfg/020000001234.xml");
            if trust {
                // Nobody scanned this MAC: the port's row renders.
                assert_eq!(
                    &got.unwrap().body[..],
                    b"<device mac=\"02:00:00:00:12:34\" ext=\"1012\" name=\"Slot 12\"/>\n"
                );
            } else {
                assert_eq!(got.unwrap_err(), Refusal::Forbidden("unproven_identity"));
            }
            // A relayed lease that came through no port proves nothing, trusted or not.
            assert_eq!(
                get(&l.p, Protocol::tftp, other, "cfg/020000001235.xml").unwrap_err(),
                Refusal::Forbidden("unproven_identity")
            );
            // The port's device, fetching from an address the port did not lease it:
            // not proven by the port.
            lease(&l.p, "198.18.1.14", "02:00:00:00:12:34");
            assert!(get(&l.p, Protocol::tftp, "198.18.1.14", "cfg/020000001234.xml").is_err());
        }
    }

    #[test]
    fn untrusted_lease_proves_nothing() {
        let l = leased_lab(A, |_| {});
        assert_eq!(
            l.tftp("cfg/00562b043615.xml").unwrap_err(),
            Refusal::Forbidden("unproven_identity")
        );
    }

    #[test]
    fn missing_variable_refuses_with_the_configured_status() {
        let l = leased_lab(A, |c| c.trust.lease = true);
        assert_eq!(l.tftp("secret.cfg").unwrap_err(), Refusal::NotFound);
        let l = leased_lab(A, |c| {
            c.trust.lease = true;
            c.missing_variable = At::new(403);
        });
        assert_eq!(
            l.tftp("secret.cfg").unwrap_err(),
            Refusal::Forbidden("missing_variable")
        );
    }

    #[test]
    fn per_device_static_file_is_encrypted_with_the_device_key() {
        let l = leased_lab("0015654aa937", |c| c.trust.lease = true);
        let e = l.tftp("SEP0015654AA937.cnf.xml").unwrap();
        assert_eq!(
            crypt::decrypt(&e.body, "k3y", config::Digest::Md5).unwrap(),
            b"static for b\n"
        );
        let again = get(&l.p, Protocol::https, LEASED, "SEP0015654AA937.cnf.xml").unwrap();
        assert_eq!(again.body, e.body);
    }

    #[test]
    fn a_serial_selects_only_a_record_without_a_mac_or_with_the_proven_one() {
        let (d, inv) = inventory(
            "inv.csv",
            "mac,serial,sip_password\n0015654aa937,CBT000VICTIM,victim-secret\n,CBT000SCANNED,scanned-secret\n",
        );
        let root = d.path().join("files");
        std::fs::create_dir_all(&root).unwrap();
        let cat = Catalog::for_tests(&[root], false, &d.path().join("data"));
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
