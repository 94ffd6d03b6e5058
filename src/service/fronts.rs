//! The [`Service`] of each front end: a thin adapter over the front end's own `bind` and
//! `start`, holding what was bound until it is served.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use prometheus_client::registry::Registry;

use super::{Change, ReloadFn, Reloaded, Service, keys};
use crate::server::{Context, bind_tcp};
use crate::status::StatusBook;
use crate::supervisor::Supervisor;
use crate::web::Web;

fn hook_result(hook: &Option<ReloadFn>, change: &Change, service: &str) -> Reloaded {
    let result = match hook {
        Some(h) => h(change.new),
        None => Ok(()),
    };
    Reloaded::from_hook(result, change, &keys::table(service))
}

/// HTTP, HTTPS and the metrics listener: restartable groups (src/web.rs).
pub struct WebGroup {
    pub web: Arc<Web>,
}

impl WebGroup {
    pub async fn bind(
        ctx: &Arc<Context>,
        registry: Arc<Registry>,
        banner: &mut Vec<String>,
    ) -> Result<WebGroup> {
        let web = Web::bind(ctx, &ctx.config, registry, banner).await?;
        Ok(WebGroup { web })
    }
}

#[async_trait::async_trait]
impl Service for WebGroup {
    fn name(&self) -> &'static str {
        "web"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        self.web.start().await;
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        let (failed, restarted) = self.web.apply(change.new).await;
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
pub struct LegacyTls {
    ctx: Arc<Context>,
    listeners: Vec<crate::http::Listener>,
    hook: Option<ReloadFn>,
}

impl LegacyTls {
    pub async fn bind(ctx: &Arc<Context>, banner: &mut Vec<String>) -> Result<LegacyTls> {
        let (listeners, hook) = crate::tls_legacy::bind(ctx, banner).await?;
        Ok(LegacyTls {
            ctx: ctx.clone(),
            listeners,
            hook: Some(hook),
        })
    }
}

#[async_trait::async_trait]
impl Service for LegacyTls {
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
        hook_result(&self.hook, change, self.name())
    }
}

/// The bench dashboard.
pub struct Dashboard {
    ctx: Arc<Context>,
    listener: Option<crate::http::Listener>,
    handler: Arc<crate::dashboard::DashboardHandler>,
}

impl Dashboard {
    pub async fn bind(
        ctx: &Arc<Context>,
        book: Arc<StatusBook>,
        banner: &mut Vec<String>,
    ) -> Result<Dashboard> {
        let d = &ctx.config.dashboard;
        let socket = bind_tcp("dashboard.listen", d.listen.value).await?;
        banner.push(format!("dashboard http://{}/", socket.local_addr()?));
        let handler = Arc::new(crate::dashboard::DashboardHandler {
            book,
            settings: arc_swap::ArcSwap::from_pointee(crate::dashboard::Settings::from(d)),
            tracker: ctx.tracker.clone(),
        });
        let listener = crate::http::Listener {
            name: format!("dashboard:{}", d.listen.value),
            socket,
            tls: None,
            limits: Default::default(),
            protocol: crate::metrics::Protocol::http,
            handler: handler.clone(),
            metrics: ctx.metrics.clone(),
        };
        Ok(Dashboard {
            ctx: ctx.clone(),
            listener: Some(listener),
            handler,
        })
    }
}

#[async_trait::async_trait]
impl Service for Dashboard {
    fn name(&self) -> &'static str {
        "dashboard"
    }

    async fn start(&mut self, sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(l) = self.listener.take() {
            let name = l.name.clone();
            let run = l.run(self.ctx.shutdown.clone(), self.ctx.tracker.clone());
            sup.spawn_once("dashboard", name, run);
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        self.handler
            .settings
            .store(Arc::new(crate::dashboard::Settings::from(
                &change.new.dashboard,
            )));
        Reloaded::from_hook(Ok(()), change, &keys::table(self.name()))
    }
}

/// TFTP.
pub struct Tftp {
    ctx: Arc<Context>,
    bound: Option<crate::tftp::Bound>,
}

impl Tftp {
    pub async fn bind(
        ctx: &Arc<Context>,
        metrics: Arc<crate::tftp::TftpMetrics>,
        banner: &mut Vec<String>,
    ) -> Result<Tftp> {
        let bound = crate::tftp::bind(&ctx.config.tftp, metrics).await?;
        banner.push(format!("tftp   tftp://{}/", bound.local_addr()?));
        Ok(Tftp {
            ctx: ctx.clone(),
            bound: Some(bound),
        })
    }
}

#[async_trait::async_trait]
impl Service for Tftp {
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
        hook_result(&None, change, self.name())
    }
}

/// DHCP: binds its interfaces; opens the lease journal only when started.
pub struct Dhcp {
    ctx: Arc<Context>,
    bound: Option<crate::dhcp::Bound>,
    metrics: Arc<crate::dhcp::DhcpMetrics>,
    hook: Option<ReloadFn>,
}

impl Dhcp {
    pub fn bind(
        ctx: &Arc<Context>,
        metrics: Arc<crate::dhcp::DhcpMetrics>,
        banner: &mut Vec<String>,
    ) -> Result<Dhcp> {
        let bound = crate::dhcp::bind(ctx, banner)?;
        Ok(Dhcp {
            ctx: ctx.clone(),
            bound: Some(bound),
            metrics,
            hook: None,
        })
    }
}

#[async_trait::async_trait]
impl Service for Dhcp {
    fn name(&self) -> &'static str {
        "dhcp"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(b) = self.bound.take() {
            self.hook = Some(b.start(&self.ctx, self.metrics.clone())?);
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        hook_result(&self.hook, change, self.name())
    }
}

/// DNS.
pub struct Dns {
    ctx: Arc<Context>,
    bound: Option<crate::dns::Bound>,
    metrics: Arc<crate::dns::DnsMetrics>,
    hook: Option<ReloadFn>,
}

impl Dns {
    pub async fn bind(
        ctx: &Arc<Context>,
        metrics: Arc<crate::dns::DnsMetrics>,
        banner: &mut Vec<String>,
    ) -> Result<Dns> {
        let bound = crate::dns::bind(&ctx.config.dns, banner).await?;
        Ok(Dns {
            ctx: ctx.clone(),
            bound: Some(bound),
            metrics,
            hook: None,
        })
    }
}

#[async_trait::async_trait]
impl Service for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(b) = self.bound.take() {
            self.hook = Some(b.start(&self.ctx, self.metrics.clone()).context("dns")?);
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        hook_result(&self.hook, change, self.name())
    }
}

/// The syslog receiver; opens `forward_file` only when started.
pub struct Syslog {
    ctx: Arc<Context>,
    bound: Option<crate::syslog::Bound>,
    book: Arc<StatusBook>,
    metrics: crate::syslog::Metrics,
}

impl Syslog {
    pub async fn bind(
        ctx: &Arc<Context>,
        book: Arc<StatusBook>,
        metrics: crate::syslog::Metrics,
        banner: &mut Vec<String>,
    ) -> Result<Syslog> {
        let bound = crate::syslog::bind(ctx, banner).await?;
        Ok(Syslog {
            ctx: ctx.clone(),
            bound: Some(bound),
            book,
            metrics,
        })
    }
}

#[async_trait::async_trait]
impl Service for Syslog {
    fn name(&self) -> &'static str {
        "syslog"
    }

    async fn start(&mut self, _sup: &Arc<Supervisor>) -> Result<()> {
        if let Some(b) = self.bound.take() {
            b.start(&self.ctx, self.book.clone(), self.metrics.clone())?;
        }
        Ok(())
    }

    async fn reload(&self, change: &Change<'_>) -> Reloaded {
        hook_result(&None, change, self.name())
    }
}
