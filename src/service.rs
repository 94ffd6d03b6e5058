//! The seam every front end is started and reloaded through.
//!
//! A service's life: `bind` (its sockets, nothing served, no journal or file opened), then
//! `start` (serve), any number of `reload`s, `shutdown`. The server binds every enabled
//! service first and starts one only when all binds succeeded, so a port conflict refuses
//! the start before any packet is answered or any lease written.
//!
//! Each service also declares its configuration keys ([`keys::tables`]) and whether each
//! applies live or at the next restart. A reload reports every key that changed since the
//! start and waits for a restart, by name: in the log, in `provbox reload`'s answer and in
//! `provbox_config_restart_pending{key}`. docs/operations.md's reload column is checked
//! against these declarations (`server::tests`).

pub(crate) mod fronts;
pub(crate) mod keys;

use std::sync::Arc;

use anyhow::Result;

use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::frontend::Context;
use crate::status::StatusBook;
use crate::supervisor::Supervisor;
pub(crate) use keys::Table;

/// A reload as the services see it.
pub(crate) struct Change<'a> {
    /// What the sockets were bound with: restart keys are compared with this.
    pub boot: &'a Config,
    /// What runs now (no service compares with it yet; the seam offers it).
    #[allow(dead_code)]
    pub old: &'a Config,
    pub new: &'a Config,
}

impl Change<'_> {
    /// The restart keys of `table` whose value differs from what the process started
    /// with. Keys of a service that is off both then and now are left out: they wait for
    /// nothing.
    pub(crate) fn pending(&self, table: &Table) -> Vec<&'static str> {
        if !(table.enabled)(self.boot) && !(table.enabled)(self.new) {
            return Vec::new();
        }
        table
            .keys
            .iter()
            .filter_map(|k| {
                let value = k.value?;
                (value(self.boot) != value(self.new)).then_some(k.name)
            })
            .collect()
    }
}

/// What a service made of a reload.
#[derive(Debug, PartialEq)]
pub(crate) enum Reloaded {
    /// Every changed key is in force; `restarted` names groups started again in place.
    Applied { restarted: Vec<&'static str> },
    /// Live keys applied; these keys take effect at the next restart.
    NeedsRestart(Vec<&'static str>),
    /// Nothing applied: the service keeps its old settings, for this reason.
    Invalid(String),
}

impl Reloaded {
    /// The usual answer of a service with a hook: the hook's verdict, then its restart keys.
    pub(crate) fn from_hook(result: Result<()>, change: &Change, table: &Table) -> Reloaded {
        if let Err(e) = result {
            return Reloaded::Invalid(format!("{e:#}"));
        }
        let pending = change.pending(table);
        if pending.is_empty() {
            Reloaded::Applied { restarted: vec![] }
        } else {
            Reloaded::NeedsRestart(pending)
        }
    }
}

/// What services are bound with: the shared context and what the server made for them
/// (metric families registered before the registry was shared, the status book).
pub(crate) struct Deps {
    pub ctx: Arc<Context>,
    /// The configuration the services are bound with; each front end is passed its section.
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub book: Arc<StatusBook>,
    pub tftp_metrics: Option<Arc<crate::tftp::TftpMetrics>>,
    pub dhcp_metrics: Option<Arc<crate::dhcp::DhcpMetrics>>,
    pub dns_metrics: Arc<crate::dns::DnsMetrics>,
    pub syslog_metrics: crate::syslog::Metrics,
}

/// One front end (or group of listeners) as the server drives it.
#[async_trait::async_trait]
pub(crate) trait Service: Send + Sync {
    /// Bind the sockets (adding a banner line each); serve nothing, open no journal or
    /// file. An error refuses the whole start.
    async fn bind(deps: &Deps, banner: &mut Vec<String>) -> Result<Self>
    where
        Self: Sized;

    /// The name in logs and metrics; also its key table's name.
    fn name(&self) -> &'static str;

    /// Serve on what `bind` bound. Every loop is spawned through `sup`.
    async fn start(&mut self, sup: &Arc<Supervisor>) -> Result<()>;

    /// Apply `change.new` as far as this service can without a restart.
    async fn reload(&self, change: &Change<'_>) -> Reloaded;

    /// Stop accepting; called after the process-wide shutdown token is cancelled. Tasks
    /// are joined by the supervisor afterwards.
    async fn shutdown(&self) {}
}
