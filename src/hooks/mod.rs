//! Hooks: on device state changes and lease events, run a command or POST a webhook.
//!
//! Nothing on a request path waits for a hook. The status book (and, through it, the
//! device registry) hands each event to [`Hooks::publish`], which only `try_send`s it into
//! each interested hook's own bounded queue; a full queue drops the event and counts it.
//! Each hook drains its queue on its own task with at most `concurrency` runs at once.

pub(crate) mod command;
pub(crate) mod webhook;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context as _, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry as PromRegistry;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::confkit::{At, Dur, Problems};
use crate::devices::LeaseInfo;
use crate::limit::WarnGate;
use crate::metrics::Registers;
use crate::status::{Device, State, now_ms};

/// What a hook can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Seen,
    Configured,
    Upgraded,
    Provisioned,
    Failed,
    LeaseBound,
    LeaseEnded,
    /// A configuration report matched the served profile.
    Verified,
    /// A configuration report differed from the served profile.
    Drift,
}

impl Kind {
    pub(crate) const ALL: [Kind; 9] = [
        Kind::Seen,
        Kind::Configured,
        Kind::Upgraded,
        Kind::Provisioned,
        Kind::Failed,
        Kind::LeaseBound,
        Kind::LeaseEnded,
        Kind::Verified,
        Kind::Drift,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Seen => "seen",
            Kind::Configured => "configured",
            Kind::Upgraded => "upgraded",
            Kind::Provisioned => "provisioned",
            Kind::Failed => "failed",
            Kind::LeaseBound => "lease_bound",
            Kind::LeaseEnded => "lease_ended",
            Kind::Verified => "verified",
            Kind::Drift => "drift",
        }
    }

    fn of_state(s: State) -> Kind {
        match s {
            State::Seen => Kind::Seen,
            State::Configured => Kind::Configured,
            State::Upgraded => Kind::Upgraded,
            State::Provisioned => Kind::Provisioned,
            State::Failed => Kind::Failed,
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One event, as hooks get it: the JSON body of a webhook, a command's stdin.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub event: Kind,
    /// Unix milliseconds.
    pub at: u64,
    /// The status book's key: the MAC, or `ip:<address>` while no MAC is known.
    pub device: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<IpAddr>,
    pub state: Option<&'static str>,
    pub previous_state: Option<&'static str>,
    /// Why, for `failed`.
    pub reason: Option<String>,
    pub model: Option<String>,
    pub vendor_class: Option<String>,
    pub hostname: Option<String>,
}

impl Event {
    /// `d` entered its current state (`before`: its state until now, None when new).
    pub(crate) fn state(d: &Device, before: Option<State>) -> Event {
        Event {
            event: Kind::of_state(d.state),
            at: now_ms(),
            device: Some(d.key.clone()),
            mac: d.mac.clone(),
            ip: d.ip,
            state: Some(d.state.as_str()),
            previous_state: before.map(State::as_str),
            reason: d.reason.clone(),
            model: d.model.clone(),
            vendor_class: d.vendor_class.clone(),
            hostname: d.hostname.clone(),
        }
    }

    /// A configuration report's verdict on `d` (`reason`: the summary and what differs).
    /// An unreadable report is told as `drift`: nothing shows it applied what it got.
    pub(crate) fn verification(d: &Device, v: &crate::devices::verify::Verdict) -> Event {
        Event {
            event: if v.result() == "verified" {
                Kind::Verified
            } else {
                Kind::Drift
            },
            reason: d.events.back().map(|e| e.detail.clone()),
            ..Event::state(d, None)
        }
    }

    pub(crate) fn lease(kind: Kind, ip: IpAddr, l: &LeaseInfo) -> Event {
        Event {
            event: kind,
            at: now_ms(),
            device: Some(l.mac.to_string()),
            mac: Some(l.mac.to_string()),
            ip: Some(ip),
            state: None,
            previous_state: None,
            reason: None,
            model: None,
            vendor_class: l.vendor_class.clone(),
            hostname: l.hostname.clone(),
        }
    }

    /// The `PROVBOX_*` variables a command gets (absent fields: the variable is unset).
    pub(crate) fn env(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("PROVBOX_EVENT", Some(self.event.as_str().to_string())),
            ("PROVBOX_AT", Some(self.at.to_string())),
            ("PROVBOX_DEVICE", self.device.clone()),
            ("PROVBOX_MAC", self.mac.clone()),
            ("PROVBOX_IP", self.ip.map(|i| i.to_string())),
            ("PROVBOX_STATE", self.state.map(str::to_string)),
            (
                "PROVBOX_PREVIOUS_STATE",
                self.previous_state.map(str::to_string),
            ),
            ("PROVBOX_REASON", self.reason.clone()),
            ("PROVBOX_MODEL", self.model.clone()),
            ("PROVBOX_VENDOR_CLASS", self.vendor_class.clone()),
            ("PROVBOX_HOSTNAME", self.hostname.clone()),
        ]
    }
}

// ------------------------------------------------------------------ configuration

/// `hooks:`, a list; empty (the default) runs nothing.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(transparent)]
pub struct Config(pub Vec<HookConfig>);

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Names the hook in logs and in `provbox_hook_runs_total{hook}`.
    pub name: At<String>,
    /// Events this hook gets; empty or absent: all of them.
    #[serde(default)]
    pub events: Vec<At<String>>,
    /// Program and arguments, run without a shell.
    pub command: Option<At<Vec<String>>>,
    pub webhook: Option<WebhookConfig>,
    /// A command is killed (its whole process group) after this; a webhook attempt gives up.
    #[serde(default = "default_timeout")]
    pub timeout: At<Dur>,
    /// Runs of this hook at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: At<usize>,
    /// Events waiting for this hook; past it new events are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: At<usize>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` (plain HTTP; sign with a secret).
    pub url: At<String>,
    /// HMAC-SHA256 key for `X-Provbox-Signature`, inline...
    pub secret: Option<String>,
    /// ...or read from this file (trailing newline ignored).
    pub secret_file: Option<At<PathBuf>>,
    /// Further attempts after a failed one (connection error, timeout, 5xx, 408, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled each time, at most 60 s.
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
}

fn default_timeout() -> At<Dur> {
    At::new(Dur(Duration::from_secs(10)))
}
fn default_concurrency() -> At<usize> {
    At::new(1)
}
fn default_queue() -> At<usize> {
    At::new(256)
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Dur {
    Dur(Duration::from_secs(1))
}

impl Config {
    pub fn resolve_paths(&mut self, base: &Path) {
        for h in &mut self.0 {
            if let Some(w) = &mut h.webhook
                && let Some(f) = &mut w.secret_file
                && f.is_relative()
            {
                f.value = base.join(&f.value);
            }
            // A program named by a relative path is relative to the config file; a bare
            // name is looked up in PATH.
            if let Some(c) = &mut h.command
                && let Some(p) = c.value.first_mut()
                && p.contains('/')
                && !p.starts_with('/')
            {
                *p = base.join(&*p).to_string_lossy().into_owned();
            }
        }
    }

    pub fn validate(&self, p: &mut Problems) {
        let mut names = std::collections::HashSet::new();
        for (i, h) in self.0.iter().enumerate() {
            let f = |k: &str| format!("hooks[{i}].{k}");
            let ok_name = !h.name.is_empty()
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_name {
                p.add(
                    f("name"),
                    &h.name,
                    format!(
                        "`{}` is not a hook name; expected letters, digits, - and _",
                        h.name.value
                    ),
                );
            } else if !names.insert(h.name.value.clone()) {
                p.add(
                    f("name"),
                    &h.name,
                    format!(
                        "`{}` is used by an earlier hook; expected a unique name",
                        h.name.value
                    ),
                );
            }
            for (j, e) in h.events.iter().enumerate() {
                if Kind::parse(e).is_none() {
                    let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                    p.add(
                        format!("hooks[{i}].events[{j}]"),
                        e,
                        format!(
                            "`{}` is not an event; expected one of {}",
                            e.value,
                            all.join(", ")
                        ),
                    );
                }
            }
            match (&h.command, &h.webhook) {
                (Some(_), Some(_)) | (None, None) => p.add(
                    f("name"),
                    &h.name,
                    "needs exactly one of command and webhook",
                ),
                (Some(c), None) => {
                    if c.is_empty() || c[0].is_empty() {
                        p.add(
                            f("command"),
                            c,
                            "is empty; expected a program and its arguments, e.g. [/usr/local/bin/label, --printer, bench]",
                        );
                    } else if c[0].contains('/') && !Path::new(&c[0]).is_file() {
                        p.add(
                            f("command"),
                            c,
                            format!("{} is not a file; expected an executable program", c[0]),
                        );
                    }
                }
                (None, Some(w)) => {
                    if let Err(e) = webhook::parse_url(&w.url) {
                        p.add(f("webhook.url"), &w.url, e);
                    }
                    match (&w.secret, &w.secret_file) {
                        (Some(_), Some(s)) => p.add(
                            f("webhook.secret_file"),
                            s,
                            "is set with secret; expected one or the other",
                        ),
                        (None, Some(s)) if std::fs::read(&s.value).is_err() => p.add(
                            f("webhook.secret_file"),
                            s,
                            format!(
                                "{} cannot be read; expected a file holding the secret",
                                s.display()
                            ),
                        ),
                        _ => {}
                    }
                }
            }
            if h.timeout.0.is_zero() {
                p.add(f("timeout"), &h.timeout, "is 0; expected e.g. 10s");
            }
            for (key, n, max) in [
                ("concurrency", &h.concurrency, 64),
                ("queue", &h.queue, 100_000),
            ] {
                if !(1..=max).contains(&n.value) {
                    p.add(f(key), n, format!("is {}; expected 1 to {max}", n.value));
                }
            }
        }
    }
}

// ------------------------------------------------------------------ metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    hook: String,
    result: &'static str,
}

/// `provbox_hook_runs_total{hook,result}`: ok, failed, timeout, error (could not start),
/// dropped (its queue was full).
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    runs: Family<RunLabels, Counter>,
}

impl Metrics {
    pub(crate) fn register(reg: &mut PromRegistry) -> Metrics {
        Metrics {
            runs: reg.metric(
                "provbox_hook_runs",
                "Hook runs by hook and result (ok, failed, timeout, error, dropped)",
            ),
        }
    }

    fn count(&self, hook: &str, result: &'static str) {
        self.runs
            .get_or_create(&RunLabels {
                hook: hook.to_string(),
                result,
            })
            .inc();
    }
}

// ------------------------------------------------------------------ dispatch

/// How one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Failed,
    Timeout,
    /// Could not be started at all (missing program, bad address).
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

enum Action {
    Command(command::Command),
    Webhook(webhook::Webhook),
}

impl Action {
    async fn run(&self, ev: &Event, body: &[u8]) -> Outcome {
        match self {
            Action::Command(c) => c.run(ev, body).await,
            Action::Webhook(w) => w.run(ev, body).await,
        }
    }
}

struct Slot {
    name: String,
    /// None: every event.
    events: Option<Vec<Kind>>,
    tx: mpsc::Sender<Arc<Event>>,
    /// Drops since the last warning: one line per 10 s.
    dropped: WarnGate,
}

pub(crate) struct Hooks {
    slots: Vec<Slot>,
    metrics: Metrics,
}

impl Hooks {
    /// Start one task per configured hook; None when there are none.
    pub(crate) fn start(
        cfg: &Config,
        metrics: Metrics,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Option<Arc<Hooks>>> {
        if cfg.0.is_empty() {
            return Ok(None);
        }
        let mut slots = Vec::new();
        for h in &cfg.0 {
            let name = h.name.value.clone();
            let action = match (&h.command, &h.webhook) {
                (Some(c), _) => Action::Command(command::Command {
                    name: name.clone(),
                    argv: c.value.clone(),
                    timeout: h.timeout.0,
                }),
                (None, Some(w)) => {
                    let secret = match (&w.secret, &w.secret_file) {
                        (Some(s), _) => Some(s.as_bytes().to_vec()),
                        (None, Some(f)) => {
                            let mut s = std::fs::read(&f.value).with_context(|| {
                                format!("hooks: {name}: cannot read {}", f.display())
                            })?;
                            while s.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                                s.pop();
                            }
                            Some(s)
                        }
                        (None, None) => None,
                    };
                    Action::Webhook(webhook::Webhook {
                        name: name.clone(),
                        target: webhook::parse_url(&w.url).map_err(anyhow::Error::msg)?,
                        secret,
                        timeout: h.timeout.0,
                        retries: w.retries,
                        backoff: w.backoff.0,
                        seq: AtomicU64::new(0),
                    })
                }
                (None, None) => anyhow::bail!("hooks: {name}: neither command nor webhook"),
            };
            let (tx, rx) = mpsc::channel(h.queue.value);
            let events = (!h.events.is_empty())
                .then(|| h.events.iter().filter_map(|e| Kind::parse(e)).collect());
            tracker.spawn(drain(
                Arc::new(action),
                name.clone(),
                rx,
                h.concurrency.value,
                metrics.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
            tracing::info!(hook = %name, "hook ready");
            slots.push(Slot {
                name,
                events,
                tx,
                dropped: WarnGate::new(Duration::from_secs(10)),
            });
        }
        Ok(Some(Arc::new(Hooks { slots, metrics })))
    }

    /// Queue `ev` for every hook that wants it. Never waits.
    pub(crate) fn publish(&self, ev: Event) {
        let ev = Arc::new(ev);
        for s in &self.slots {
            if s.events.as_ref().is_some_and(|e| !e.contains(&ev.event)) {
                continue;
            }
            match s.tx.try_send(ev.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.count(&s.name, "dropped");
                    if let Some(held) = s.dropped.admit() {
                        // This one and those held back since the last warning.
                        tracing::warn!(
                            hook = %s.name,
                            dropped = held + 1,
                            "hook queue full: events dropped (the hook is slower than events arrive)"
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// Takes events off one hook's queue in order, running at most `concurrency` at once.
async fn drain(
    action: Arc<Action>,
    name: String,
    mut rx: mpsc::Receiver<Arc<Event>>,
    concurrency: usize,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    loop {
        let ev = tokio::select! {
            e = rx.recv() => e,
            _ = shutdown.cancelled() => None,
        };
        let Some(ev) = ev else { return };
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("never closed"),
            _ = shutdown.cancelled() => return,
        };
        let (action, name, metrics) = (action.clone(), name.clone(), metrics.clone());
        tracker.spawn(async move {
            let body = serde_json::to_vec(&*ev).unwrap_or_default();
            let outcome = action.run(&ev, &body).await;
            metrics.count(&name, outcome.as_str());
            tracing::debug!(hook = %name, event = ev.event.as_str(), result = outcome.as_str(), "hook ran");
            drop(permit);
        });
    }
}

/// The status book's events, published as hook events.
impl crate::status::Announce for Hooks {
    fn state_changed(&self, d: &Device, before: Option<State>) {
        self.publish(Event::state(d, before));
    }
    fn lease_bound(&self, ip: IpAddr, lease: &LeaseInfo) {
        self.publish(Event::lease(Kind::LeaseBound, ip, lease));
    }
    fn lease_ended(&self, ip: IpAddr, lease: &LeaseInfo) {
        self.publish(Event::lease(Kind::LeaseEnded, ip, lease));
    }
    fn verification(&self, d: &Device, v: &crate::devices::verify::Verdict) {
        self.publish(Event::verification(d, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(hooks: &str) -> Result<crate::config::Config, crate::confkit::ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let yaml = format!("catalog:\n  roots: [files]\nhooks:\n{hooks}");
        crate::config::Config::parse(&yaml, &dir.path().join("config.yaml"))
    }

    #[test]
    fn a_good_list_parses_with_defaults() {
        let c = parse(
            "  - name: label\n    events: [provisioned, lease_ended]\n    command: [true]\n  - name: tickets\n    webhook:\n      url: http://127.0.0.1:9/in\n      secret: x\n",
        )
        .unwrap();
        assert_eq!(c.hooks.0.len(), 2);
        assert_eq!(c.hooks.0[0].timeout.0, Duration::from_secs(10));
        assert_eq!(c.hooks.0[1].queue.value, 256);
        assert_eq!(c.hooks.0[1].webhook.as_ref().unwrap().retries, 3);
    }

    #[test]
    fn mistakes_name_the_field_and_line() {
        let err = parse(
            "  - name: a\n    events: [provisioned, installed]\n    command: [true]\n  - name: a\n    command: [true]\n    concurrency: 0\n  - name: c\n    webhook:\n      url: https://x/\n  - name: d\n",
        )
        .unwrap_err();
        let found: Vec<(String, usize)> = err.0.iter().map(|e| (e.field.clone(), e.line)).collect();
        assert_eq!(
            found,
            [
                ("hooks[0].events[1]".to_string(), 5),
                ("hooks[1].name".to_string(), 7),
                ("hooks[1].concurrency".to_string(), 9),
                ("hooks[2].webhook.url".to_string(), 12),
                ("hooks[3].name".to_string(), 13),
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("`installed` is not an event; expected one of seen,"),
            "{text}"
        );
        assert!(text.contains("https is not supported"), "{text}");
        assert!(
            text.contains("needs exactly one of command and webhook"),
            "{text}"
        );
    }
}
