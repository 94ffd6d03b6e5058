//! Firmware pushes: the phone's web command `http://<phone>/admin/upgrade?<firmware URL>`
//! (the seed's "Firmware Upgrade With a Browser Command"), sent through `resync::web_get`
//! (the one outbound client, the same credentials rule), at most `upgrade.max_parallel`
//! phones at a time. Each phone's timeline then shows `upgrade_sent` → `upgrade_downloading`
//! (its transfer of that file, as TFTP/HTTP report it to the status book) → `upgraded` (its
//! `Successful upgrade` syslog line, or a new User-Agent) or `upgrade_failed` (its own
//! report, a refused command, or `upgrade.timeout`). A phone holds its slot until it is
//! done either way, so a bench never downloads more than N images at once.
//!
//! Used by the dashboard (`/api/v1/upgrades`, `/api/v1/devices/{mac}/upgrade`) and by
//! `provbox upgrade`, which goes through that same endpoint.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::confkit::{At, Dur, Problems};
use crate::resync;
use crate::status::{StatusBook, Target, now_ms};
use crate::vendors;

/// Runs kept for the dashboard (older ones are dropped).
const KEPT_RUNS: usize = 8;

/// Every key is optional: an unset one takes its value from [`Config::default`].
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Phones upgrading at once (`all`): a firmware image is megabytes over TFTP.
    pub max_parallel: At<usize>,
    /// How long a phone has from the command to its report before it counts as failed.
    pub timeout: Dur,
    /// Firmware file in the catalog per model (`CP-8831-3PCC`) or vendor (`cisco`); the
    /// model wins. `provbox upgrade --firmware` overrides it.
    pub firmware: BTreeMap<String, At<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_parallel: At::new(4),
            timeout: Dur(Duration::from_secs(900)),
            firmware: BTreeMap::new(),
        }
    }
}

impl Config {
    pub fn validate(&self, p: &mut Problems) {
        if !(1..=256).contains(&self.max_parallel.value) {
            p.add(
                "upgrade.max_parallel",
                &self.max_parallel,
                format!(
                    "is {}; expected 1 to 256 phones upgrading at once",
                    self.max_parallel.value
                ),
            );
        }
        if self.timeout.0 < Duration::from_secs(1) {
            p.add_at(
                "upgrade.timeout",
                0,
                0,
                "is under a second; expected how long a phone may take to download, flash and report, e.g. 15m",
            );
        }
        for (model, f) in &self.firmware {
            if let Err(why) = catalog_path(&f.value) {
                p.add(format!("upgrade.firmware.{model}"), f, why);
            }
        }
    }
}

/// A firmware file as a path inside the catalog: relative, no `..`, no empty parts.
/// Returned without a leading slash.
pub fn catalog_path(path: &str) -> Result<String, String> {
    let p = path.trim().trim_start_matches('/');
    if p.is_empty()
        || p.split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'))
        || p.chars().any(|c| c.is_control() || c == '?' || c == '#')
    {
        return Err(format!(
            "`{path}` is not a file in the catalog; expected a relative path such as firmware/cp-8831-sip.bin"
        ));
    }
    Ok(p.to_string())
}

/// What a run needs from the whole configuration (the facts of other sections, passed in
/// so this module reads no front end).
#[derive(Debug, Clone)]
pub struct Settings {
    pub upgrade: Config,
    /// Credentials and the command rule of `dashboard.resync`.
    pub resync: resync::Config,
    /// Where phones fetch files over HTTP (first `http.listen`), when HTTP is on.
    pub http: Option<SocketAddr>,
    /// Else over TFTP.
    pub tftp: Option<SocketAddr>,
    pub roots: Vec<PathBuf>,
}

impl Settings {
    /// The configured firmware for a device whose model/vendor hint is `hint`.
    fn firmware_for(&self, hint: Option<&str>) -> Option<String> {
        let fw = &self.upgrade.firmware;
        let hint = hint?;
        let by_model = fw
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(hint))
            .map(|(_, v)| v.value.clone());
        by_model.or_else(|| {
            let v = vendors::by_hint(hint)?;
            fw.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(v.name))
                .map(|(_, v)| v.value.clone())
        })
    }

    /// The firmware's URL as `phone` reaches this box: the listener's address, or, on an
    /// unspecified one, the address this host sends to the phone from.
    fn firmware_url(&self, path: &str, phone: IpAddr) -> Result<String, String> {
        let (scheme, listen, default_port) = match (self.http, self.tftp) {
            (Some(a), _) => ("http", a, 80),
            (None, Some(a)) => ("tftp", a, 69),
            (None, None) => {
                return Err(
                    "neither http nor tftp is enabled: the phone has nowhere to fetch firmware from"
                        .into(),
                );
            }
        };
        let ip = if listen.ip().is_unspecified() {
            source_towards(phone).ok_or_else(|| format!("no route to {phone}"))?
        } else {
            listen.ip()
        };
        let host = match ip {
            IpAddr::V4(v) => v.to_string(),
            IpAddr::V6(v) => format!("[{v}]"),
        };
        let port = if listen.port() == default_port {
            String::new()
        } else {
            format!(":{}", listen.port())
        };
        Ok(format!("{scheme}://{host}{port}/{path}"))
    }

    fn exists(&self, path: &str) -> bool {
        self.roots.iter().any(|r| r.join(path).is_file())
    }
}

/// The local address the kernel would send to `to` from (a connected UDP socket sends
/// nothing).
fn source_towards(to: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(to, 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Waiting,
    Sent,
    Downloading,
    Upgraded,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phone {
    pub key: String,
    pub ip: IpAddr,
    pub firmware: String,
    pub url: String,
    pub stage: Stage,
    pub detail: String,
    /// Unix ms of the last stage change.
    pub at: u64,
}

/// One `upgrade` request and its phones.
pub struct Run {
    pub id: u64,
    pub target: String,
    pub max_parallel: usize,
    pub started: u64,
    phones: Mutex<Vec<Phone>>,
    /// Devices `all` passed over: no firmware configured for their model or vendor.
    pub skipped: Vec<String>,
}

impl Run {
    fn set(&self, i: usize, stage: Stage, detail: impl Into<String>) {
        let mut p = self.phones.lock().unwrap_or_else(|e| e.into_inner());
        p[i].stage = stage;
        p[i].detail = detail.into();
        p[i].at = now_ms();
    }

    pub fn json(&self) -> serde_json::Value {
        let phones = self.phones.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = serde_json::Map::new();
        for s in [
            Stage::Waiting,
            Stage::Sent,
            Stage::Downloading,
            Stage::Upgraded,
            Stage::Failed,
        ] {
            let n = phones.iter().filter(|p| p.stage == s).count();
            counts.insert(
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                n.into(),
            );
        }
        let done = phones
            .iter()
            .all(|p| matches!(p.stage, Stage::Upgraded | Stage::Failed));
        json!({
            "id": self.id,
            "target": self.target,
            "max_parallel": self.max_parallel,
            "started": self.started,
            "done": done,
            "counts": counts,
            "phones": *phones,
            "skipped": self.skipped,
        })
    }
}

/// Why a run did not start.
#[derive(Debug)]
pub enum StartError {
    /// No device matches.
    NotFound(String),
    /// The request cannot work (no firmware known, a bad path).
    Invalid(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NotFound(s) | StartError::Invalid(s) => f.write_str(s),
        }
    }
}

/// The runs of this process.
pub struct Upgrades {
    book: Arc<StatusBook>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    settings: arc_swap::ArcSwap<Settings>,
    runs: Mutex<VecDeque<Arc<Run>>>,
    next: AtomicU64,
}

impl Upgrades {
    pub fn new(
        settings: Settings,
        book: Arc<StatusBook>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Upgrades> {
        Arc::new(Upgrades {
            book,
            tracker,
            shutdown,
            settings: arc_swap::ArcSwap::from_pointee(settings),
            runs: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
        })
    }

    /// New settings for the next run (a running one keeps its own).
    pub fn reload(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    /// Start upgrading `target` (`all`, a MAC or an address) to `firmware` (a catalog
    /// path), or to each device's configured firmware.
    pub fn start(&self, target: &str, firmware: Option<&str>) -> Result<Arc<Run>, StartError> {
        let settings = self.settings.load_full();
        let forced = match firmware {
            Some(f) => Some(catalog_path(f).map_err(StartError::Invalid)?),
            None => None,
        };
        let targets = self.book.targets(target);
        if targets.is_empty() {
            return Err(StartError::NotFound(format!(
                "no device with a known address matches `{target}`"
            )));
        }
        let mut phones = Vec::new();
        let mut plan: Vec<Target> = Vec::new();
        let mut skipped = Vec::new();
        for t in targets {
            let Some(fw) = forced
                .clone()
                .or_else(|| settings.firmware_for(t.vendor.as_deref()))
            else {
                if target != "all" {
                    return Err(StartError::Invalid(format!(
                        "no firmware is configured for {} ({}); set upgrade.firmware or give --firmware",
                        t.key,
                        t.vendor.as_deref().unwrap_or("model unknown")
                    )));
                }
                // `all` upgrades the phones it has firmware for; the others are named.
                tracing::info!(device = %t.key, "upgrade: no firmware configured; skipped");
                skipped.push(t.key);
                continue;
            };
            if !settings.exists(&fw) {
                return Err(StartError::Invalid(format!(
                    "`{fw}` is not in the catalog (catalog.roots)"
                )));
            }
            let url = settings
                .firmware_url(&fw, t.ip)
                .map_err(StartError::Invalid)?;
            phones.push(Phone {
                key: t.key.clone(),
                ip: t.ip,
                firmware: fw,
                url,
                stage: Stage::Waiting,
                detail: String::new(),
                at: now_ms(),
            });
            plan.push(t);
        }
        if phones.is_empty() {
            return Err(StartError::Invalid(
                "no device has firmware configured (upgrade.firmware); give --firmware".into(),
            ));
        }
        let n = settings.upgrade.max_parallel.value.max(1);
        let run = Arc::new(Run {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            target: target.to_string(),
            max_parallel: n,
            started: now_ms(),
            phones: Mutex::new(phones),
            skipped,
        });
        {
            let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            if runs.len() >= KEPT_RUNS {
                runs.pop_front();
            }
            runs.push_back(run.clone());
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(n));
        for (i, t) in plan.into_iter().enumerate() {
            let (run, book, slots) = (run.clone(), self.book.clone(), slots.clone());
            let (settings, shutdown) = (settings.clone(), self.shutdown.clone());
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = async {
                        let Ok(_slot) = slots.acquire_owned().await else { return };
                        one(&run, i, &t, &book, &settings).await;
                    } => {}
                }
            });
        }
        Ok(run)
    }

    /// Every kept run, newest last.
    pub fn json(&self) -> serde_json::Value {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        json!({"runs": runs.iter().map(|r| r.json()).collect::<Vec<_>>()})
    }
}

/// One phone: send the command, then follow its record until it reports or times out.
async fn one(run: &Run, i: usize, t: &Target, book: &StatusBook, s: &Settings) {
    let (url, fw) = {
        let p = run.phones.lock().unwrap_or_else(|e| e.into_inner());
        (p[i].url.clone(), p[i].firmware.clone())
    };
    let path = t
        .vendor
        .as_deref()
        .and_then(vendors::by_hint)
        .and_then(|v| v.web)
        .unwrap_or(vendors::cisco::WEB)
        .upgrade;
    let ip = match t.ip {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    };
    let command = format!("http://{ip}{path}?{url}");
    let req = t.resync_request(false);
    let ua_before = book.get(&t.key).and_then(|d| d.user_agent);
    // Subscribed before the command leaves, so no change of the phone's record is missed.
    let mut changes = book.subscribe();
    let ip_key = t.ip.to_string();
    let sent_at = now_ms();
    match resync::web_get(&s.resync, &req, &command).await {
        Ok(d) => {
            tracing::info!(device = %t.key, ip = %t.ip, "upgrade: {d}");
            book.note(&t.key, "upgrade_sent", &d);
            run.set(i, Stage::Sent, d);
        }
        Err(d) => {
            tracing::warn!(device = %t.key, ip = %t.ip, "upgrade: {d}");
            book.note(&t.key, "upgrade_failed", &d);
            run.set(i, Stage::Failed, d);
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + s.upgrade.timeout.0;
    let mut downloading = false;
    loop {
        // Look again only when this phone's record changed (a lagging feed: look anyway).
        let this_phone = async {
            loop {
                match changes.recv().await {
                    Ok(keys) if keys.iter().any(|k| *k == t.key || *k == ip_key) => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        };
        if tokio::time::timeout_at(deadline, this_phone).await.is_err() {
            let why = format!(
                "no report within {}s (upgrade.timeout)",
                s.upgrade.timeout.0.as_secs()
            );
            book.note(&t.key, "upgrade_failed", &why);
            run.set(i, Stage::Failed, why);
            return;
        }
        let Some(d) = book.get(&t.key).or_else(|| book.get(&t.ip.to_string())) else {
            continue;
        };
        let fresh = d.events.iter().filter(|e| e.at >= sent_at);
        let mut outcome = None;
        for e in fresh {
            match e.kind.as_str() {
                "transfer" if !downloading && is_transfer_of(&e.detail, &fw) => {
                    downloading = true;
                    book.note(&t.key, "upgrade_downloading", &e.detail);
                    run.set(i, Stage::Downloading, e.detail.clone());
                }
                "upgrade_ok" => outcome = Some((Stage::Upgraded, e.detail.clone())),
                // The phone's own report (ours is written only when this loop ends).
                "upgrade_failed" => outcome = Some((Stage::Failed, e.detail.clone())),
                _ => {}
            }
        }
        if outcome.is_none() && downloading && d.user_agent.is_some() && d.user_agent != ua_before {
            outcome = Some((
                Stage::Upgraded,
                format!("User-Agent now {}", d.user_agent.unwrap_or_default()),
            ));
        }
        if let Some((stage, detail)) = outcome {
            let kind = if stage == Stage::Upgraded {
                "upgraded"
            } else {
                "upgrade_failed"
            };
            book.note(&t.key, kind, &detail);
            run.set(i, stage, detail);
            return;
        }
    }
}

/// A status-book transfer event (`tftp /path 123 ok`) of the firmware file that went well.
fn is_transfer_of(detail: &str, firmware: &str) -> bool {
    let mut f = detail.split_whitespace();
    let (_proto, path) = (f.next(), f.next().unwrap_or(""));
    let outcome = detail.rsplit(' ').next().unwrap_or("");
    path.trim_start_matches('/').eq_ignore_ascii_case(firmware)
        && crate::status::record::transfer_ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_key_and_line() {
        let yaml = "catalog:\n  roots: [files]\nupgrade:\n  max_parallel: 0\n  firmware:\n    cisco: ../x.bin\n";
        let e = crate::config::Config::parse(yaml, std::path::Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml:4:17: upgrade.max_parallel: is 0; expected 1 to 256"),
            "{e}"
        );
        assert!(
            e.contains("upgrade.firmware.cisco: `../x.bin` is not a file in the catalog"),
            "{e}"
        );
    }

    #[test]
    fn firmware_paths_stay_in_the_catalog() {
        assert_eq!(catalog_path("/fw/a.bin").unwrap(), "fw/a.bin");
        for bad in ["", "../etc/passwd", "fw//a", "a?b", "fw/./a", "a\\b"] {
            assert!(catalog_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn firmware_by_model_then_vendor() {
        let mut upgrade = Config::default();
        upgrade
            .firmware
            .insert("cisco".into(), At::new("cisco.bin".into()));
        upgrade
            .firmware
            .insert("CP-8831-3PCC".into(), At::new("8831.bin".into()));
        let s = Settings {
            upgrade,
            resync: resync::Config::default(),
            http: Some("198.18.0.1:8080".parse().unwrap()),
            tftp: None,
            roots: vec![],
        };
        assert_eq!(s.firmware_for(Some("cp-8831-3pcc")).unwrap(), "8831.bin");
        assert_eq!(s.firmware_for(Some("SPA504G")).unwrap(), "cisco.bin");
        assert_eq!(s.firmware_for(Some("Yealink SIP-T46G")), None);
        assert_eq!(
            s.firmware_url("fw/a.bin", "198.18.0.7".parse().unwrap())
                .unwrap(),
            "http://198.18.0.1:8080/fw/a.bin"
        );
    }

    #[test]
    fn a_transfer_of_the_firmware_counts_when_it_went_well() {
        assert!(is_transfer_of("tftp /fw/a.bin 1234 ok", "fw/a.bin"));
        assert!(is_transfer_of("http fw/A.bin 1234 partial", "fw/a.bin"));
        assert!(!is_transfer_of("tftp /fw/a.bin 0 not_found", "fw/a.bin"));
        assert!(!is_transfer_of("tftp /fw/b.bin 1234 ok", "fw/a.bin"));
    }
}
