//! Owns every service loop: each runs under a heartbeat, a panic is logged, counted and the
//! loop made again on the same socket after a back-off, and shutdown joins them all.
//!
//! Two kinds of loop:
//! - restartable ([`Supervisor::spawn_restartable`]): the loop is a closure over shared
//!   sockets and state (TFTP, DNS over UDP, syslog over UDP, DHCP receive and expiry), so a
//!   fresh one can be made after a panic;
//! - once ([`Supervisor::spawn_once`]): the loop owns something it cannot give back (a TCP
//!   listener moved into its accept loop, the DHCP writer's channel). A panic there ends the
//!   process with a non-zero status, and systemd starts a new one.
//!
//! More than [`MAX_PANICS`] panics in [`PANIC_WINDOW`] also end the process: a loop that
//! panics on every packet is better restarted whole than retried forever.
//!
//! Liveness: each loop beats about once a second while its task is being polled. `/readyz`
//! answers 503 naming any loop that is restarting or has not beaten for [`STALE`], and the
//! systemd watchdog is not fed meanwhile (so a wedged process is restarted).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Registers;
use futures_util::FutureExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a loop beats.
pub(crate) const BEAT: Duration = Duration::from_secs(1);
/// A loop that has not beaten for this long is reported stale.
pub(crate) const STALE: Duration = Duration::from_secs(5);
/// More panics than this within [`PANIC_WINDOW`] end the process.
pub(crate) const MAX_PANICS: usize = 5;
pub(crate) const PANIC_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) type LoopFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: &'static str,
}

struct Loop {
    service: &'static str,
    name: String,
    /// Milliseconds since the supervisor's epoch at the last beat.
    beat: Arc<AtomicU64>,
    restarting: Arc<AtomicBool>,
}

pub struct Supervisor {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    epoch: Instant,
    loops: Mutex<HashMap<u64, Loop>>,
    next_id: AtomicU64,
    panics: Mutex<VecDeque<Instant>>,
    restarts: Family<ServiceLabels, Counter>,
    started: AtomicBool,
    failed: CancellationToken,
    failure: Mutex<Option<String>>,
}

/// Removes a loop from the liveness table however its task ends (return, panic, abort).
struct Registered {
    sup: Arc<Supervisor>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sup
            .loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

impl Supervisor {
    pub fn new(
        registry: &mut Registry,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Supervisor> {
        let restarts: Family<ServiceLabels, Counter> = registry.metric(
            "provbox_service_restarts",
            "Service loops restarted after a panic, by service",
        );
        Arc::new(Supervisor {
            shutdown,
            tracker,
            epoch: Instant::now(),
            loops: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            panics: Mutex::new(VecDeque::new()),
            restarts,
            started: AtomicBool::new(false),
            failed: CancellationToken::new(),
            failure: Mutex::new(None),
        })
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Where connection and transfer tasks go, so shutdown waits for them too.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn register(self: &Arc<Self>, service: &'static str, name: String) -> (Registered, Loop) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let beat = Arc::new(AtomicU64::new(self.now_ms()));
        let restarting = Arc::new(AtomicBool::new(false));
        self.loops.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Loop {
                service,
                name: name.clone(),
                beat: beat.clone(),
                restarting: restarting.clone(),
            },
        );
        (
            Registered {
                sup: self.clone(),
                id,
            },
            Loop {
                service,
                name,
                beat,
                restarting,
            },
        )
    }

    /// Run `fut`, beating while its task is polled.
    async fn beating(&self, beat: &AtomicU64, fut: LoopFuture) {
        let mut fut = fut;
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut fut => return,
                _ = tick.tick() => beat.store(self.now_ms(), Ordering::Relaxed),
            }
        }
    }

    /// Counts a panic; false when there were too many for a restart to be worth it.
    fn count_panic(&self, service: &'static str) -> bool {
        self.restarts
            .get_or_create(&ServiceLabels { service })
            .inc();
        let mut p = self.panics.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        p.push_back(now);
        while p
            .front()
            .is_some_and(|t| now.duration_since(*t) > PANIC_WINDOW)
        {
            p.pop_front();
        }
        p.len() <= MAX_PANICS
    }

    /// Give up: the process shuts down and exits non-zero (systemd restarts it).
    pub fn fail(&self, why: String) {
        tracing::error!("{why}; stopping provbox so that it is started afresh");
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(why);
        self.failed.cancel();
    }

    /// Resolves when a loop could not be kept running; the reason.
    pub async fn failed(&self) -> String {
        self.failed.cancelled().await;
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// A loop `make` can build again over the same sockets after a panic.
    pub fn spawn_restartable(
        self: &Arc<Self>,
        service: &'static str,
        name: impl Into<String>,
        mut make: impl FnMut() -> LoopFuture + Send + 'static,
    ) {
        let sup = self.clone();
        let (guard, lp) = self.register(service, name.into());
        self.tracker.spawn(async move {
            let _guard = guard;
            let mut backoff = FIRST_BACKOFF;
            loop {
                let run = sup.beating(&lp.beat, make());
                match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(()) => return,
                    Err(p) => {
                        let text = panic_text(&*p);
                        tracing::error!(service, task = %lp.name, panic = %text, backoff_ms = backoff.as_millis() as u64, "service loop panicked; restarting it on the same socket");
                        if !sup.count_panic(service) {
                            sup.fail(format!(
                                "{service}: more than {MAX_PANICS} panics within {}s (last: {text})",
                                PANIC_WINDOW.as_secs()
                            ));
                            return;
                        }
                        lp.restarting.store(true, Ordering::Release);
                        tokio::select! {
                            _ = sup.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        lp.beat.store(sup.now_ms(), Ordering::Relaxed);
                        lp.restarting.store(false, Ordering::Release);
                        tracing::info!(service, task = %lp.name, "service loop restarted");
                    }
                }
            }
        });
    }

    /// A loop that cannot be made again; if it panics the process exits non-zero. The
    /// handle aborts it (an abort is an ordinary end, not a failure).
    pub fn spawn_once(
        self: &Arc<Self>,
        service: &'static str,
        name: impl Into<String>,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        let sup = self.clone();
        let (guard, lp) = self.register(service, name.into());
        self.tracker
            .spawn(async move {
                let _guard = guard;
                let run = sup.beating(&lp.beat, Box::pin(fut));
                if let Err(p) = AssertUnwindSafe(run).catch_unwind().await {
                    sup.count_panic(service);
                    sup.fail(format!(
                        "{service}: {} panicked and cannot be remade: {}",
                        lp.name,
                        panic_text(&*p)
                    ));
                }
            })
            .abort_handle()
    }

    /// Every service has started serving.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Ready: started, and every loop beating and not restarting. Else what is wrong.
    pub fn health(&self) -> Result<(), String> {
        self.health_at(self.now_ms())
    }

    fn health_at(&self, now: u64) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("stopping".into());
        }
        if !self.started.load(Ordering::Acquire) {
            return Err("starting".into());
        }
        let loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        let mut bad: Vec<String> = loops
            .values()
            .filter_map(|l| {
                if l.restarting.load(Ordering::Acquire) {
                    Some(format!("{}: {} is restarting", l.service, l.name))
                } else {
                    let age = now.saturating_sub(l.beat.load(Ordering::Relaxed));
                    (age > STALE.as_millis() as u64).then(|| {
                        format!("{}: {} has not run for {}s", l.service, l.name, age / 1000)
                    })
                }
            })
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        bad.sort();
        Err(bad.join("\n"))
    }

    /// After the shutdown token is cancelled: wait for every loop and task, at most `grace`.
    /// False when the grace period ran out.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup() -> Arc<Supervisor> {
        let mut reg = Registry::default();
        Supervisor::new(&mut reg, CancellationToken::new(), TaskTracker::new())
    }

    #[tokio::test]
    async fn a_panicking_loop_is_made_again_and_counted() {
        let s = sup();
        s.set_started();
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        s.spawn_restartable("test", "panics twice", move || {
            let r = r.clone();
            Box::pin(async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
                std::future::pending::<()>().await
            })
        });
        let start = Instant::now();
        while runs.load(Ordering::SeqCst) < 3 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            s.restarts
                .get_or_create(&ServiceLabels { service: "test" })
                .get(),
            2
        );
        assert!(s.health().is_ok(), "{:?}", s.health());
        assert!(!s.failed.is_cancelled());
    }

    #[tokio::test]
    async fn too_many_panics_or_a_panic_in_a_once_loop_fail_the_process() {
        let s = sup();
        s.spawn_restartable("test", "always panics", || {
            Box::pin(async { panic!("again") })
        });
        let why = tokio::time::timeout(Duration::from_secs(60), s.failed())
            .await
            .unwrap();
        assert!(why.contains("more than 5 panics"), "{why}");

        let s = sup();
        s.spawn_once("test", "accept", async { panic!("gone") });
        let why = tokio::time::timeout(Duration::from_secs(5), s.failed())
            .await
            .unwrap();
        assert!(
            why.contains("cannot be remade") && why.contains("gone"),
            "{why}"
        );
    }

    #[test]
    fn a_loop_that_stops_being_polled_is_reported_stale() {
        let s = sup();
        s.set_started();
        // A loop wedged outside the runtime beats no more: its last beat stays at 0.
        let (_guard, lp) = s.register("test", "wedged".into());
        lp.beat.store(0, Ordering::Relaxed);
        assert!(s.health_at(STALE.as_millis() as u64).is_ok());
        let e = s.health_at(STALE.as_millis() as u64 + 1000).unwrap_err();
        assert!(e.contains("test: wedged has not run"), "{e}");
    }
}
