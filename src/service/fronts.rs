//! The [`Service`] of each front end: a thin adapter over the front end's own `bind` and
//! `start`, holding what was bound until it is served.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::{Change, Deps, Reloaded, Service, keys};
use crate::config::Config;
use crate::frontend::{Context, ReloadFn};
use crate::status::StatusBook;
use crate::supervisor::Supervisor;
use crate::web::Web;

fn hook_result<C>(
    hook: &Option<ReloadFn<C>>,
    section: fn(&Config) -> &C,
    change: &Change,
    service: &str,
) -> Reloaded {
    let result = match hook {
        Some(h) => h(section(change.new)),
        None => Ok(()),
    };
    Reloaded::from_hook(result, change, &keys::table(service))
}

/// The sections the web group serves.
fn web_sections(c: &Config) -> crate::web::Sections<'_> {
    crate::web::Sections {
        http: &c.http,
        https: &c.https,
        metrics: &c.metrics,
    }
}

/// HTTP, HTTPS and the metrics listener: restartable groups (src/web.rs).
pub(crate) struct WebGroup {
    pub web: Arc<Web>,
}

#[async_trait::async_trait]
impl Service for WebGroup {
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<WebGroup> {
        let ctx = &deps.ctx;
        let web = Web::bind(
            ctx,
            web_sections(&deps.config),
            deps.registry.clone(),
            banner,
        )
        .await?;
        Ok(WebGroup { web })
    }

    fn name(&self) -> &'static str {
        "web"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        self.web.start().await;
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        let (failed, restarted) = self.web.apply(web_sections(change.new)).await;
        if failed.is_empty() {
            return Reloaded::Applied {
                restarted: restarted.iter().map(|k| k.name()).collect(),
            };
        }
        Reloaded::Invalid(
            failed
                .iter()
                .map(|(kind, e)| format!("{}: {e:#}", kind.name()))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// The OpenSSL door for old phones.
pub(crate) struct LegacyTls {
    ctx: Arc<Context>,
    listeners: Vec<crate::http::Listener>,
    hook: crate::tls_legacy::Reload,
}

#[async_trait::async_trait]
impl Service for LegacyTls {
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<LegacyTls> {
        let ctx = &deps.ctx;
        let c = &deps.config;
        let (listeners, hook) =
            crate::tls_legacy::bind(ctx, &c.https_legacy, &c.https, banner).await?;
        Ok(LegacyTls {
            ctx: ctx.clone(),
            listeners,
            hook,
        })
    }

    fn name(&self) -> &'static str {
        "https_legacy"
    }

    async fn start(&mut self, sup: &Arc<Supervisor>) -> Result<()> {
        for l in std::mem::take(&mut self.listeners) {
            let name = l.name.clone();
            let run = l.run(self.ctx.shutdown.clone(), self.ctx.tracker.clone());
            sup.spawn_once("https_legacy", name, run);
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        let result = (self.hook)(&change.new.https_legacy, &change.new.https);
        Reloaded::from_hook(result, change, &keys::table(self.name()))
    }
}

/// The bench dashboard.
pub(crate) struct Dashboard {
    ctx: Arc<Context>,
    listener: Option<crate::http::Listener>,
    handler: Arc<crate::dashboard::DashboardHandler>,
}

#[async_trait::async_trait]
impl Service for Dashboard {
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<Dashboard> {
        let (ctx, book) = (&deps.ctx, deps.book.clone());
        let d = &deps.config.dashboard;
        let upgrades = crate::upgrade::Upgrades::new(
            upgrade_settings(&deps.config),
            book.clone(),
            ctx.tracker.clone(),
            ctx.shutdown.clone(),
        );
        let api = Arc::new(crate::api::Api::new(
            book,
            ctx.provisioner.clone(),
            ctx.tracker.clone(),
            ctx.shutdown.clone(),
            upgrades,
        ));
        let (handler, listener) =
            crate::dashboard::bind(d, &ctx.data_dir, api, ctx.metrics.clone(), banner).await?;
        Ok(Dashboard {
            ctx: ctx.clone(),
            listener: Some(listener),
            handler,
        })
    }

    fn name(&self) -> &'static str {
        "dashboard"
    }

    async fn start(&mut self, sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(l) = self.listener.take() {
            let name = l.name.clone();
            let run = l.run(self.ctx.shutdown.clone(), self.ctx.tracker.clone());
            sup.spawn_once("dashboard", name, run);
            let (h, book) = (self.handler.api.history.clone(), self.handler.book.clone());
            let history = h.run(book, self.ctx.shutdown.clone());
            sup.spawn_once("dashboard", "history", history);
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        (self.handler.api.upgrades).reload(upgrade_settings(change.new));
        let applied = self
            .handler
            .reload(&change.new.dashboard, &self.ctx.data_dir);
        Reloaded::from_hook(applied, change, &keys::table(self.name()))
    }
}

/// TFTP.
pub(crate) struct Tftp {
    ctx: Arc<Context>,
    bound: Option<crate::tftp::Bound>,
}

#[async_trait::async_trait]
impl Service for Tftp {
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<Tftp> {
        let ctx = &deps.ctx;
        let metrics = deps
            .tftp_metrics
            .clone()
            .context("tftp: metrics not registered")?;
        let bound = crate::tftp::bind(&deps.config.tftp, metrics).await?;
        banner.push(format!("tftp   tftp://{}/", bound.local_addr()?));
        Ok(Tftp {
            ctx: ctx.clone(),
            bound: Some(bound),
        })
    }

    fn name(&self) -> &'static str {
        "tftp"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(b) = self.bound.take() {
            b.start(&self.ctx);
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        Reloaded::from_hook(Ok(()), change, &keys::table(self.name()))
    }
}

/// DHCP: binds its interfaces; opens the lease journal only when started.
pub(crate) struct Dhcp {
    ctx: Arc<Context>,
    bound: Option<crate::dhcp::Bound>,
    metrics: Arc<crate::dhcp::DhcpMetrics>,
    /// Whether provbox's DNS runs: DHCP option 6 names it then.
    dns_on: bool,
    hook: Option<ReloadFn<crate::dhcp::Config>>,
}

#[async_trait::async_trait]
impl Service for Dhcp {
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<Dhcp> {
        let ctx = &deps.ctx;
        let metrics = deps
            .dhcp_metrics
            .clone()
            .context("dhcp: metrics not registered")?;
        let bound = crate::dhcp::bind(&deps.config.dhcp, banner)?;
        Ok(Dhcp {
            ctx: ctx.clone(),
            bound: Some(bound),
            metrics,
            dns_on: deps.config.dns.enabled,
            hook: None,
        })
    }

    fn name(&self) -> &'static str {
        "dhcp"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(b) = self.bound.take() {
            self.hook = Some(crate::dhcp::start(
                b,
                &self.ctx,
                self.dns_on,
                self.metrics.clone(),
            )?);
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        hook_result(&self.hook, |c| &c.dhcp, change, self.name())
    }
}

/// DNS.
pub(crate) struct Dns {
    ctx: Arc<Context>,
    config: Arc<Config>,
    bound: Option<crate::dns::Bound>,
    metrics: Arc<crate::dns::DnsMetrics>,
    hook: Option<ReloadFn<crate::dns::Config>>,
}

#[async_trait::async_trait]
impl Service for Dns {
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<Dns> {
        let (ctx, metrics) = (&deps.ctx, deps.dns_metrics.clone());
        let bound = crate::dns::bind(&deps.config.dns, banner).await?;
        Ok(Dns {
            ctx: ctx.clone(),
            config: deps.config.clone(),
            bound: Some(bound),
            metrics,
            hook: None,
        })
    }

    fn name(&self) -> &'static str {
        "dns"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(b) = self.bound.take() {
            self.hook = Some(
                b.start(&self.ctx, &self.config.dns, self.metrics.clone())
                    .context("dns")?,
            );
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        hook_result(&self.hook, |c| &c.dns, change, self.name())
    }
}

/// The syslog receiver; opens `forward_file` only when started.
pub(crate) struct Syslog {
    ctx: Arc<Context>,
    config: Arc<Config>,
    bound: Option<crate::syslog::Bound>,
    book: Arc<StatusBook>,
    metrics: crate::syslog::Metrics,
}

#[async_trait::async_trait]
impl Service for Syslog {
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<Syslog> {
        let ctx = &deps.ctx;
        let (book, metrics) = (deps.book.clone(), deps.syslog_metrics.clone());
        let bound = crate::syslog::bind(&deps.config.syslog, banner).await?;
        Ok(Syslog {
            ctx: ctx.clone(),
            config: deps.config.clone(),
            bound: Some(bound),
            book,
            metrics,
        })
    }

    fn name(&self) -> &'static str {
        "syslog"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(b) = self.bound.take() {
            crate::syslog::start(
                b,
                &self.ctx,
                &self.config.syslog,
                self.book.clone(),
                self.metrics.clone(),
            )?;
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        Reloaded::from_hook(Ok(()), change, &keys::table(self.name()))
    }
}

/// What firmware pushes need of the configuration.
fn upgrade_settings(cfg: &Config) -> crate::upgrade::Settings {
    crate::upgrade::Settings {
        upgrade: cfg.upgrade.clone(),
        resync: cfg.dashboard.resync.clone(),
        http: cfg
            .http
            .enabled
            .then(|| cfg.http.listen.first().map(|l| l.value))
            .flatten(),
        tftp: cfg.tftp.enabled.then_some(cfg.tftp.listen.value),
        roots: cfg.catalog.roots.iter().map(|r| r.value.clone()).collect(),
    }
}
