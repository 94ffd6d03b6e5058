//! Starting the enabled front ends, waiting for a signal, and shutting down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::config::{Config, LogFormat};
use crate::control;
use crate::devices::{self, Provisioner};
use crate::metrics::Metrics;
use crate::sdnotify::Notifier;
use crate::store::Store;
use crate::web::Web;

/// A front end's way to apply a new, already validated configuration without a restart.
pub type ReloadFn = Box<dyn Fn(&Config) -> Result<()> + Send + Sync>;

/// Reload hooks, registered by front ends at start, run in order on every good reload.
#[derive(Default)]
pub struct Reloaders(std::sync::Mutex<Vec<(&'static str, ReloadFn)>>);

impl Reloaders {
    pub fn add(&self, name: &'static str, f: ReloadFn) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, f));
    }

    fn apply(&self, cfg: &Config) -> Vec<String> {
        let hooks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut failed = Vec::new();
        for (name, f) in hooks.iter() {
            if let Err(e) = f(cfg) {
                tracing::error!("reload: {name} kept its old settings: {e:#}");
                failed.push(name.to_string());
            }
        }
        failed
    }
}

/// What every front end is started with.
pub struct Context {
    pub provisioner: Arc<Provisioner>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    pub reloaders: Arc<Reloaders>,
}

/// SIGHUP, `provbox reload` or a change of the file: read and validate it again. A bad
/// file changes nothing; a good one restarts only the front ends whose settings changed.
async fn reload(
    new: Result<Config, crate::config::ConfigErrors>,
    running: &mut Arc<Config>,
    ctx: &Context,
    web: &Web,
    why: &str,
    generation: u64,
) {
    let label = |result: &'static str| crate::metrics::ResultLabels { result };
    let new = match new {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                trigger = why,
                "reload refused, the running configuration stays:\n{e}"
            );
            ctx.metrics
                .config_reloads
                .get_or_create(&label("invalid"))
                .inc();
            control::write_status(&ctx.data_dir, generation, "invalid", &e.to_string());
            return;
        }
    };
    let mut failed = Vec::new();
    let (web_failed, restarted) = web.apply(&new).await;
    for (kind, e) in web_failed {
        tracing::error!("reload: {} kept its old settings: {e:#}", kind.name());
        failed.push(format!("{}: {e:#}", kind.name()));
    }
    // Listeners of the other front ends: their own reload hooks decide what they can apply.
    let others = |c: &Config| {
        let mut v: Vec<String> = c
            .listeners()
            .iter()
            .filter(|l| {
                !["http.", "https.", "metrics."]
                    .iter()
                    .any(|p| l.field.starts_with(p))
            })
            .map(|l| format!("{} {}", l.field, l.addr.value))
            .collect();
        v.sort();
        v
    };
    if others(&new) != others(running) {
        tracing::warn!(
            "reload: listener changes outside HTTP(S)/metrics take effect at the next restart"
        );
    }
    if new.data_dir != running.data_dir {
        tracing::warn!("reload: data_dir changes take effect at the next restart");
    }
    failed.extend(ctx.reloaders.apply(&new));
    // Changes inotify cannot see (network filesystems, files changed while stopped).
    let catalog = ctx.provisioner.catalog().clone();
    let _ = tokio::task::spawn_blocking(move || catalog.rescan()).await;
    let result = if failed.is_empty() { "ok" } else { "partial" };
    ctx.metrics
        .config_reloads
        .get_or_create(&label(result))
        .inc();
    let restarted: Vec<&str> = restarted.iter().map(|k| k.name()).collect();
    tracing::info!(result, trigger = why, restarted = ?restarted, "configuration reloaded");
    let text = if failed.is_empty() {
        format!(
            "restarted: {}",
            if restarted.is_empty() {
                "nothing".to_string()
            } else {
                restarted.join(", ")
            }
        )
    } else {
        failed.join("\n")
    };
    control::write_status(&ctx.data_dir, generation, result, &text);
    *running = Arc::new(new);
}

pub fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PROVBOX_LOG")
        // hickory logs every query at info; provbox counts them in metrics instead.
        .unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "{},notify=warn,hickory_server=warn,hickory_proto=warn",
                cfg.log.level
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Bind a TCP listener, turning the common failures into advice.
pub async fn bind_tcp(field: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(field, addr, e))
}

pub fn bind_error(field: &str, addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another program listens there: `ss -lntup` shows which; change the port or stop it)"
        }
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; the shipped config uses high ports)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (no interface on this machine has that address)",
        _ => "",
    };
    anyhow::anyhow!("{field}: cannot listen on {addr}: {e}{hint}")
}

pub async fn run(cfg: Config, config_path: PathBuf) -> Result<()> {
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data_dir: cannot create {}", cfg.data_dir.display()))?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    // Front ends register their own metric families here, before the registry is shared.
    let device_metrics = devices::DeviceMetrics::register(&mut registry);
    let tftp_metrics = cfg
        .tftp
        .enabled
        .then(|| Arc::new(crate::tftp::register(&mut registry)));
    let status_metrics = crate::status::Metrics::register(&mut registry);
    let syslog_metrics = crate::syslog::Metrics::register(&mut registry);
    let dhcp_metrics = cfg
        .dhcp
        .enabled
        .then(|| crate::dhcp::register(&mut registry));
    let dns_metrics = Arc::new(crate::dns::register(&mut registry));
    let hook_metrics = crate::hooks::Metrics::register(&mut registry);
    let registry = Arc::new(registry);

    let roots: Vec<PathBuf> = cfg.catalog.roots.iter().map(|r| r.value.clone()).collect();
    let catalog = Catalog::open(
        &roots,
        cfg.catalog.case_insensitive,
        &cfg.data_dir,
        metrics.clone(),
    )?;
    catalog.start()?;
    let devices = Arc::new(devices::Registry::default());
    let store = Store::open(&cfg.data_dir)?;
    let provisioner = Arc::new(Provisioner::new(catalog.clone(), devices).with_devices(
        &cfg.devices,
        Some(store.clone()),
        device_metrics,
    )?);
    let ctx = Context {
        provisioner: provisioner.clone(),
        metrics: metrics.clone(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        data_dir: cfg.data_dir.clone(),
        store,
        config: cfg.clone(),
        reloaders: Arc::new(Reloaders::default()),
    };
    let ready = Arc::new(AtomicBool::new(false));
    // Device status: fed by leases and transfers (through the device registry), syslog.
    let book = crate::status::StatusBook::open(
        ctx.store.clone(),
        provisioner.registry().clone(),
        status_metrics,
        ctx.shutdown.clone(),
        &ctx.tracker,
    )?;
    provisioner.registry().set_observer(book.clone());
    let mut banner = Vec::new();

    // HTTP, HTTPS and the admin listener: bound now, restartable on reload (src/web.rs).
    let web = Web::bind(&ctx, &cfg, registry.clone(), ready.clone(), &mut banner).await?;
    // The legacy TLS door for old phones (off unless configured; restart to change).
    // Listeners outside the restartable web group (legacy TLS door, dashboard).
    let mut others = crate::tls_legacy::bind(&ctx, &mut banner).await?;

    // Front ends other than HTTP(S) bind and start here, each from its own module
    // (`crate::<proto>::start(&ctx, ...)`), adding their lines to `banner`.
    provisioner.watch_inventory(ctx.shutdown.clone());
    let tftp = match &tftp_metrics {
        Some(m) => {
            let bound = crate::tftp::bind(&cfg.tftp, m.clone()).await?;
            banner.push(format!("tftp   tftp://{}/", bound.local_addr()?));
            Some(bound)
        }
        None => None,
    };

    if cfg.syslog.enabled {
        crate::syslog::start(&ctx, book.clone(), syslog_metrics, &mut banner).await?;
    }
    if cfg.dashboard.enabled {
        let d = &cfg.dashboard;
        let socket = bind_tcp("dashboard.listen", d.listen.value).await?;
        banner.push(format!("dashboard http://{}/", socket.local_addr()?));
        let handler = Arc::new(crate::dashboard::DashboardHandler {
            book: book.clone(),
            settings: arc_swap::ArcSwap::from_pointee(crate::dashboard::Settings::from(d)),
            tracker: ctx.tracker.clone(),
        });
        let h = handler.clone();
        ctx.reloaders.add(
            "dashboard",
            Box::new(move |cfg: &Config| {
                h.settings
                    .store(Arc::new(crate::dashboard::Settings::from(&cfg.dashboard)));
                Ok(())
            }),
        );
        others.push(crate::http::Listener {
            name: format!("dashboard:{}", d.listen.value),
            socket,
            tls: None,
            limits: Default::default(),
            protocol: crate::metrics::Protocol::http,
            handler,
            metrics: metrics.clone(),
        });
    }

    if let Some(m) = dhcp_metrics {
        crate::dhcp::start(&ctx, m, &mut banner).await?;
    }
    // After DHCP restored its journal: leases it had are not news to a hook.
    let hooks = crate::hooks::Hooks::start(&cfg.hooks, hook_metrics, &ctx.shutdown, &ctx.tracker)?;
    if let Some(h) = hooks {
        book.set_hooks(h);
    }
    let dns = if cfg.dns.enabled {
        Some(crate::dns::bind(&cfg.dns, &mut banner).await?)
    } else {
        None
    };

    // Every socket is bound before anything is served: a half-started appliance is worse
    // than one that refuses to start.
    // Handlers first: a reload or stop sent right after READY=1 must not kill the process
    // with the default signal action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // What the file held when loaded, read before the watch starts so no edit is missed.
    let mut seen = Config::read(&config_path).ok();
    // A change of the config file reloads too; a broken watch only loses that convenience.
    let (_watcher, mut changed) = match control::watch_config(&config_path) {
        Ok((w, rx)) => (Some(w), rx),
        Err(e) => {
            tracing::warn!("config file changes will not be noticed (SIGHUP still works): {e:#}");
            (None, tokio::sync::mpsc::channel(1).1)
        }
    };
    web.start().await;
    for l in others {
        ctx.tracker
            .spawn(l.run(ctx.shutdown.clone(), ctx.tracker.clone()));
    }
    if let Some(t) = tftp {
        t.start(&ctx);
    }
    if let Some(dns) = dns {
        dns.start(&ctx, dns_metrics)?;
    }
    ready.store(true, Ordering::Release);
    let _pid_file = control::PidFile::create(&cfg.data_dir)?;
    // The banner before the "ready" log line: whoever waits for that line finds it.
    let lab_ca = web.lab_ca.lock().unwrap().clone();
    crate::banner::print(&cfg, &banner, lab_ca);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %cfg.data_dir.display(),
        files = catalog.file_count(),
        "provbox ready"
    );
    for line in &banner {
        tracing::info!("listening: {line}");
    }
    let notifier = Notifier::from_env();
    notifier.ready();
    notifier.spawn_watchdog(ctx.shutdown.clone());

    let mut running = cfg.clone();
    let mut generation = 0u64;
    loop {
        // The file is read once per trigger; what is compared is what is applied.
        let (why, text) = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => ("signal", Config::read(&config_path)),
            Some(()) = changed.recv() => {
                // Let the writer finish (editors write, truncate, rename in bursts).
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                while changed.try_recv().is_ok() {}
                match Config::read(&config_path) {
                    Ok(now) if Some(&now) != seen.as_ref() => ("file change", Ok(now)),
                    _ => continue,
                }
            }
        };
        seen = text.as_ref().ok().cloned();
        generation += 1;
        notifier.reloading();
        let new = text.and_then(|t| Config::parse(&t, &config_path));
        reload(new, &mut running, &ctx, &web, why, generation).await;
        notifier.ready();
    }
    notifier.stopping();
    let grace = running.shutdown_grace.0;
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: no new requests, finishing transfers"
    );
    ctx.shutdown.cancel();
    web.wait().await;
    ctx.tracker.close();
    if tokio::time::timeout(grace, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over, abandoning transfers still running");
    }
    tracing::info!("stopped");
    Ok(())
}
