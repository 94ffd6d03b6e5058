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
use crate::devices::{self, Provisioner};
use crate::http::{self, AdminHandler, FileHandler};
use crate::metrics::{Metrics, Protocol};
use crate::store::Store;
use crate::tls;

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

/// SIGHUP: read and validate the file again; a bad file changes nothing.
fn reload(path: &std::path::Path, running: &Config, ctx: &Context) {
    let label = |result: &'static str| crate::metrics::ResultLabels { result };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, the running configuration stays:\n{e}");
            ctx.metrics
                .config_reloads
                .get_or_create(&label("invalid"))
                .inc();
            return;
        }
    };
    let listeners = |c: &Config| {
        let mut v: Vec<String> = c
            .listeners()
            .iter()
            .map(|l| format!("{} {}", l.field, l.addr.value))
            .collect();
        v.sort();
        v
    };
    if listeners(&new) != listeners(running) {
        tracing::warn!("reload: listener changes take effect at the next restart");
    }
    let failed = ctx.reloaders.apply(&new);
    let result = if failed.is_empty() { "ok" } else { "partial" };
    ctx.metrics
        .config_reloads
        .get_or_create(&label(result))
        .inc();
    tracing::info!(result, "configuration reloaded");
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
    let dns_metrics = Arc::new(crate::dns::register(&mut registry));
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
    let provisioner = Arc::new(Provisioner::new(catalog.clone(), devices));
    let ctx = Context {
        provisioner: provisioner.clone(),
        metrics: metrics.clone(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        data_dir: cfg.data_dir.clone(),
        store: Store::open(&cfg.data_dir)?,
        config: cfg.clone(),
        reloaders: Arc::new(Reloaders::default()),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let mut listeners = Vec::new();
    let mut banner = Vec::new();

    if cfg.http.enabled {
        let handler = Arc::new(FileHandler {
            provisioner: provisioner.clone(),
            metrics: metrics.clone(),
            protocol: Protocol::http,
        });
        for (i, a) in cfg.http.listen.iter().enumerate() {
            let field = format!("http.listen[{i}]");
            let socket = bind_tcp(&field, a.value).await?;
            banner.push(format!("http   http://{}/", socket.local_addr()?));
            listeners.push(http::Listener {
                name: format!("http:{}", a.value),
                socket,
                tls: None,
                limits: cfg.http.limits.clone(),
                protocol: Protocol::http,
                handler: handler.clone(),
                metrics: metrics.clone(),
            });
        }
    }
    if cfg.https.enabled {
        let files = match (&cfg.https.cert, &cfg.https.key) {
            (Some(c), Some(k)) => tls::TlsFiles {
                cert: c.value.clone(),
                key: k.value.clone(),
                client_auth: cfg.https.client_auth.value,
                client_ca: cfg.https.client_ca.as_ref().map(|p| p.value.clone()),
            },
            _ => {
                let dir = cfg.data_dir.join("tls");
                let lab = tls::LabCa::ensure(&dir, &tls::machine_names(&cfg.https.names))
                    .context("https: creating the lab certificate")?;
                tracing::info!(
                    ca = %lab.ca_cert.display(),
                    cert = %lab.server_cert.display(),
                    "https: no certificate configured; serving one from the lab CA (install the CA on phones that must trust it)"
                );
                tls::TlsFiles {
                    cert: lab.server_cert,
                    key: lab.server_key,
                    client_auth: cfg.https.client_auth.value,
                    client_ca: cfg.https.client_ca.as_ref().map(|p| p.value.clone()),
                }
            }
        };
        let reloading = tls::Reloading::new(files).context("https")?;
        reloading
            .clone()
            .watch(std::time::Duration::from_secs(2), ctx.shutdown.clone());
        let handler = Arc::new(FileHandler {
            provisioner: provisioner.clone(),
            metrics: metrics.clone(),
            protocol: Protocol::https,
        });
        for (i, a) in cfg.https.listen.iter().enumerate() {
            let field = format!("https.listen[{i}]");
            let socket = bind_tcp(&field, a.value).await?;
            banner.push(format!("https  https://{}/", socket.local_addr()?));
            listeners.push(http::Listener {
                name: format!("https:{}", a.value),
                socket,
                tls: Some(reloading.clone()),
                limits: cfg.https.limits.clone(),
                protocol: Protocol::https,
                handler: handler.clone(),
                metrics: metrics.clone(),
            });
        }
    }
    if cfg.metrics.enabled {
        let socket = bind_tcp("metrics.listen", cfg.metrics.listen.value).await?;
        banner.push(format!("metrics http://{}/metrics", socket.local_addr()?));
        listeners.push(http::Listener {
            name: format!("metrics:{}", cfg.metrics.listen.value),
            socket,
            tls: None,
            limits: Default::default(),
            protocol: Protocol::http,
            handler: Arc::new(AdminHandler {
                registry: registry.clone(),
                ready: ready.clone(),
            }),
            metrics: metrics.clone(),
        });
    }

    // Front ends other than HTTP(S) bind and start here, each from its own module
    // (`crate::<proto>::start(&ctx, ...)`), adding their lines to `banner`.
    let dns = if cfg.dns.enabled {
        Some(crate::dns::bind(&cfg.dns, &mut banner).await?)
    } else {
        None
    };

    // Every socket is bound before anything is served: a half-started appliance is worse
    // than one that refuses to start.
    let accept_loops = TaskTracker::new();
    for l in listeners {
        accept_loops.spawn(l.run(ctx.shutdown.clone(), ctx.tracker.clone()));
    }
    accept_loops.close();
    if let Some(dns) = dns {
        dns.start(&ctx, dns_metrics)?;
    }
    ready.store(true, Ordering::Release);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %cfg.data_dir.display(),
        files = catalog.file_count(),
        "provbox ready"
    );
    for line in &banner {
        tracing::info!("listening: {line}");
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&config_path, &cfg, &ctx),
        }
    }
    let grace = cfg.shutdown_grace.0;
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: no new requests, finishing transfers"
    );
    ctx.shutdown.cancel();
    accept_loops.wait().await;
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
