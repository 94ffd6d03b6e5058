//! Binding every enabled service, then starting them all, reloading on a signal or a
//! change of the file, and shutting down gracefully.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::config::{Config, LogFormat};
use crate::control;
use crate::devices::{self, Provisioner};
pub use crate::frontend::Context;
use crate::metrics::{Metrics, Registers};
use crate::sdnotify::Notifier;
use crate::service::{Change, Deps, Reloaded, Service, fronts};
use crate::store::Store;
use crate::supervisor::Supervisor;

/// `provbox_config_restart_pending{key}`: 1 while a changed key waits for a restart.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: &'static str,
}

struct ReloadMetrics {
    pending: Family<KeyLabels, Gauge>,
}

impl ReloadMetrics {
    fn register(reg: &mut Registry) -> ReloadMetrics {
        ReloadMetrics {
            pending: reg.metric(
                "provbox_config_restart_pending",
                "1 for each configuration key changed since the start that takes effect only at the next restart",
            ),
        }
    }
}

/// What a reload did, for the log, `provbox reload` and the metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub restarted: Vec<&'static str>,
    /// Keys changed since the start that wait for a restart, sorted.
    pub pending: Vec<&'static str>,
    /// Services that kept their old settings, with the reason.
    pub failed: Vec<String>,
}

impl Verdict {
    /// `ok`, `restart_needed` or `partial` (a refused file is `invalid` before this).
    pub fn result(&self) -> &'static str {
        if !self.failed.is_empty() {
            "partial"
        } else if !self.pending.is_empty() {
            "restart_needed"
        } else {
            "ok"
        }
    }

    /// The answer `provbox reload` prints after the result word.
    pub fn text(&self) -> String {
        let mut parts = vec![format!(
            "restarted: {}",
            if self.restarted.is_empty() {
                "nothing".to_string()
            } else {
                self.restarted.join(", ")
            }
        )];
        if !self.pending.is_empty() {
            parts.push(format!("needs a restart: {}", self.pending.join(", ")));
        }
        let mut text = parts.join("; ");
        for f in &self.failed {
            text.push('\n');
            text.push_str(f);
        }
        text
    }
}

/// Ask every service to apply `change`; keys of services not running (and the process's
/// own) are compared from their tables.
async fn apply(services: &[Box<dyn Service>], change: &Change<'_>) -> Verdict {
    let mut v = Verdict::default();
    let mut pending = std::collections::BTreeSet::new();
    for s in services {
        match s.reload(change).await {
            Reloaded::Applied { restarted } => v.restarted.extend(restarted),
            Reloaded::NeedsRestart(keys) => pending.extend(keys),
            Reloaded::Invalid(e) => {
                tracing::error!("reload: {} kept its old settings: {e}", s.name());
                v.failed.push(format!("{}: {e}", s.name()));
            }
        }
    }
    for t in crate::service::keys::tables() {
        pending.extend(change.pending(&t));
    }
    v.pending = pending.into_iter().collect();
    v
}

/// SIGHUP, `provbox reload` or a change of the file: read and validate it again. A bad
/// file changes nothing; a good one is applied by each service as far as it can live, and
/// every key that waits for a restart is named.
#[allow(clippy::too_many_arguments)]
async fn reload(
    new: Result<Config, crate::confkit::ConfigErrors>,
    running: &mut Arc<Config>,
    boot: &Config,
    services: &[Box<dyn Service>],
    ctx: &Context,
    rm: &ReloadMetrics,
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
    let verdict = apply(
        services,
        &Change {
            boot,
            old: running,
            new: &new,
        },
    )
    .await;
    // Changes inotify cannot see (network filesystems, files changed while stopped).
    let catalog = ctx.provisioner.catalog().clone();
    let _ = tokio::task::spawn_blocking(move || catalog.rescan()).await;
    for t in crate::service::keys::tables() {
        for k in t.keys.iter().filter(|k| !k.live) {
            let on = verdict.pending.contains(&k.name);
            rm.pending
                .get_or_create(&KeyLabels { key: k.name })
                .set(on as i64);
        }
    }
    let result = verdict.result();
    ctx.metrics
        .config_reloads
        .get_or_create(&label(result))
        .inc();
    if !verdict.pending.is_empty() {
        tracing::warn!(
            keys = %verdict.pending.join(", "),
            "reload: changed since the start, each of these keys takes a restart to apply"
        );
    }
    tracing::info!(result, trigger = why, restarted = ?verdict.restarted, pending = ?verdict.pending, "configuration reloaded");
    control::write_status(&ctx.data_dir, generation, result, &verdict.text());
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
    let reload_metrics = ReloadMetrics::register(&mut registry);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let supervisor = Supervisor::new(&mut registry, shutdown.clone(), tracker.clone());
    let hook_metrics = crate::hooks::Metrics::register(&mut registry);
    let upload_metrics = crate::uploads::Metrics::register(&mut registry);
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
    // The shared store first: bindings, status and leases find it when they are built.
    if let Some(pg) = crate::store::open_shared(&cfg.store).await? {
        crate::certs::share_lab_ca(&pg, &cfg.data_dir.join("tls"))
            .await
            .context("store: sharing the lab CA")?;
        crate::store::digest::spawn(pg.clone(), catalog.clone(), shutdown.clone());
        if let Some(inv) = &cfg.devices.inventory {
            crate::store::inventory::spawn(pg, inv.value.clone(), shutdown.clone());
        }
    }
    let store = Store::open(&cfg.data_dir)?;
    let uploads = if cfg.uploads.enabled {
        let up = crate::uploads::Uploads::open(&cfg.data_dir, &cfg.uploads, upload_metrics)
            .with_context(|| {
                format!(
                    "uploads: cannot use {}",
                    crate::uploads::dir(&cfg.data_dir).display()
                )
            })?;
        Some(Arc::new(up))
    } else {
        None
    };
    let mut provisioner = Provisioner::new(catalog.clone(), devices).with_devices(
        &cfg.devices,
        Some(store.clone()),
        device_metrics,
    )?;
    if let Some(up) = &uploads {
        let stage = crate::uploads::readback::ReadBack(up.clone());
        provisioner = provisioner.with_stage("resolve", Box::new(stage));
    }
    let provisioner = Arc::new(provisioner);
    let ctx = Arc::new(Context {
        provisioner: provisioner.clone(),
        metrics: metrics.clone(),
        shutdown,
        tracker,
        data_dir: cfg.data_dir.clone(),
        store,
        uploads,
        supervisor: supervisor.clone(),
    });
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

    // Every enabled service binds its sockets first; nothing is served, no lease journal
    // or forward file opened, until all of them are bound: a half-started appliance is
    // worse than one that refuses to start.
    let deps = Deps {
        ctx: ctx.clone(),
        config: cfg.clone(),
        registry,
        book,
        tftp_metrics,
        dhcp_metrics,
        dns_metrics,
        syslog_metrics,
    };
    let mut services: Vec<Box<dyn Service>> = Vec::new();
    let web = fronts::WebGroup::bind(&deps, &mut banner).await?;
    let lab_ca_of = web.web.clone();
    services.push(Box::new(web));
    async fn bind<S: Service + 'static>(
        on: bool,
        deps: &Deps,
        banner: &mut Vec<String>,
        services: &mut Vec<Box<dyn Service>>,
    ) -> Result<()> {
        if on {
            services.push(Box::new(S::bind(deps, banner).await?));
        }
        Ok(())
    }
    let b = &mut banner;
    bind::<fronts::LegacyTls>(cfg.https_legacy.enabled, &deps, b, &mut services).await?;
    bind::<fronts::Tftp>(cfg.tftp.enabled, &deps, b, &mut services).await?;
    bind::<fronts::Syslog>(cfg.syslog.enabled, &deps, b, &mut services).await?;
    bind::<fronts::Dashboard>(cfg.dashboard.enabled, &deps, b, &mut services).await?;
    bind::<fronts::Dhcp>(cfg.dhcp.enabled, &deps, b, &mut services).await?;
    bind::<fronts::Dns>(cfg.dns.enabled, &deps, b, &mut services).await?;

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
    provisioner.watch_inventory(ctx.shutdown.clone());
    // Those whose start can still fail (zones, the lease journal, the forward file) first.
    for s in services.iter_mut().rev() {
        if let Err(e) = s.start(&supervisor).await {
            // Stop what already started before refusing.
            ctx.shutdown.cancel();
            supervisor.wait(cfg.shutdown_grace.0).await;
            return Err(e.context(format!("{}: cannot start", s.name())));
        }
    }
    // After DHCP restored its journal: leases it had are not news to a hook.
    match crate::hooks::Hooks::start(&cfg.hooks, hook_metrics, &ctx.shutdown, &ctx.tracker) {
        Ok(Some(h)) => deps.book.set_hooks(h),
        Ok(None) => {}
        Err(e) => {
            ctx.shutdown.cancel();
            supervisor.wait(cfg.shutdown_grace.0).await;
            return Err(e.context("hooks: cannot start"));
        }
    }
    supervisor.set_started();
    let _pid_file = control::PidFile::create(&cfg.data_dir)?;
    // The banner before the "ready" log line: whoever waits for that line finds it.
    let lab_ca = lab_ca_of.lab_ca.lock().unwrap().clone();
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
    let sup = supervisor.clone();
    notifier.spawn_watchdog(ctx.shutdown.clone(), move || sup.health());

    let mut running = cfg.clone();
    let mut generation = 0u64;
    let mut failure = None;
    loop {
        // The file is read once per trigger; what is compared is what is applied.
        let (why, text) = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            why = supervisor.failed() => {
                failure = Some(why);
                break;
            }
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
        reload(
            new,
            &mut running,
            &cfg,
            &services,
            &ctx,
            &reload_metrics,
            why,
            generation,
        )
        .await;
        notifier.ready();
    }
    notifier.stopping();
    let grace = running.shutdown_grace.0;
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: no new requests, finishing transfers"
    );
    ctx.shutdown.cancel();
    for s in &services {
        s.shutdown().await;
    }
    if !supervisor.wait(grace).await {
        tracing::warn!("grace period over, abandoning transfers still running");
    }
    if let Some(why) = failure {
        anyhow::bail!("stopped because a service failed: {why}");
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::keys::tables;

    /// docs/operations.md's reference table: (key, reload column) per row.
    fn documented() -> Vec<(String, String)> {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"),
        )
        .unwrap();
        let table = doc
            .split("| key | default | meaning | reload |")
            .nth(1)
            .expect("docs/operations.md has the configuration reference table");
        table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
                (
                    cells[0].trim().trim_matches('`').to_string(),
                    cells[cells.len() - 1].trim().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn the_reload_column_says_what_the_services_report() {
        let declared: std::collections::BTreeMap<&str, (bool, &str)> = tables()
            .iter()
            .flat_map(|t| t.keys.iter().map(|k| (k.name, (k.live, t.service))))
            .collect();
        let docs = documented();
        assert!(
            docs.len() > 50,
            "table not found whole: {} rows",
            docs.len()
        );
        let mut wrong = Vec::new();
        for (key, column) in &docs {
            let Some((live, service)) = declared.get(key.as_str()) else {
                wrong.push(format!(
                    "{key}: documented but no service declares it (src/service/keys.rs)"
                ));
                continue;
            };
            let says_live = column.starts_with("live");
            let says_restart = column.starts_with("restart");
            if !(says_live || says_restart) {
                wrong.push(format!(
                    "{key}: reload column `{column}`; expected `live…` or `restart…`"
                ));
            } else if says_live != *live {
                wrong.push(format!(
                    "{key}: docs say `{column}` but {service} declares it {}",
                    if *live { "live" } else { "restart" }
                ));
            }
        }
        for key in declared.keys() {
            if !docs.iter().any(|(k, _)| k == key) {
                wrong.push(format!("{key}: declared but missing from the docs table"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    fn parse(yaml: &str, dir: &std::path::Path) -> Config {
        Config::parse(yaml, &dir.join("config.yaml")).unwrap()
    }

    fn pending(boot: &Config, new: &Config) -> Vec<&'static str> {
        let change = Change {
            boot,
            old: boot,
            new,
        };
        let mut v: Vec<_> = tables().iter().flat_map(|t| change.pending(t)).collect();
        v.sort();
        v
    }

    #[test]
    fn restart_keys_compare_values_not_where_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let base = "catalog:\n  roots: [files]\ntftp:\n  enabled: true\n  listen: 127.0.0.1:0\n  max_transfers: 10\ndevices:\n  trust:\n    lease: false\nsyslog:\n  enabled: true\n  listen: 127.0.0.1:1514\n";
        let boot = parse(base, dir.path());
        // The same values, every line moved: nothing waits for a restart.
        let moved = parse(&format!("\n\n# moved\n{base}"), dir.path());
        assert_eq!(pending(&boot, &moved), Vec::<&str>::new());
        let changed = parse(
            &base
                .replace("max_transfers: 10", "max_transfers: 11")
                .replace("lease: false", "lease: true")
                .replace(
                    "  listen: 127.0.0.1:1514\n",
                    "  listen: 127.0.0.1:1514\n  forward_file: fwd.log\n",
                ),
            dir.path(),
        );
        assert_eq!(
            pending(&boot, &changed),
            vec![
                "devices.trust.lease",
                "syslog.forward_file",
                "tftp.max_transfers"
            ]
        );
        // Keys of a service that is off then and now wait for nothing.
        let off = parse(
            &base.replace(
                "enabled: true\n  listen: 127.0.0.1:0\n  max",
                "enabled: false\n  listen: 127.0.0.1:0\n  max",
            ),
            dir.path(),
        );
        let off2 = parse(
            &base
                .replace(
                    "enabled: true\n  listen: 127.0.0.1:0\n  max",
                    "enabled: false\n  listen: 127.0.0.1:0\n  max",
                )
                .replace("max_transfers: 10", "max_transfers: 12"),
            dir.path(),
        );
        assert_eq!(pending(&off, &off2), Vec::<&str>::new());
    }

    #[test]
    fn the_verdict_names_what_waits() {
        let v = Verdict {
            restarted: vec!["http"],
            pending: vec!["tftp.max_transfers"],
            failed: vec![],
        };
        assert_eq!(v.result(), "restart_needed");
        assert_eq!(
            v.text(),
            "restarted: http; needs a restart: tftp.max_transfers"
        );
        assert_eq!(Verdict::default().result(), "ok");
        assert_eq!(Verdict::default().text(), "restarted: nothing");
    }
}
