//! DHCPv4 server: offers that point phones at provbox, leases that survive a crash.
//!
//! - `config`: YAML schema and the validated `Settings`.
//! - `options`: typed option values → wire bytes, layering, request-list selection.
//! - `leases`: the lease table and allocation (pure).
//! - `store`: the durable lease journal (format documented there and in docs/dhcp.md).
//! - `engine`: the decision path for each message.
//! - `wire`: strict option scan and the reply encoder.
//! - `socket`: per-interface sockets and reply delivery.
//!
//! Flow: one receive task per interface asks the engine what to do; replies that change a
//! lease go to one writer task that commits a batch of changes durably (group commit),
//! then sends those replies and announces the lease events. So an ACK never leaves before
//! its lease is on disk, and many clients at once share one fsync.

pub mod config;
pub mod engine;
pub mod leases;
pub mod metrics;
pub mod options;
pub mod socket;
pub mod store;
pub mod wire;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

pub use config::Config;
pub use metrics::DhcpMetrics;

use crate::server::Context;
use crate::service::ReloadFn;
use engine::{Engine, Event, IfaceInfo, Reply};
use metrics::MessageLabels;
use socket::Iface;
use store::Change;

pub fn register(reg: &mut Registry) -> Arc<DhcpMetrics> {
    Arc::new(DhcpMetrics::register(reg))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Work for the writer: persist `changes`, then send `reply` and announce `events`.
struct Job {
    changes: Vec<Change>,
    events: Vec<Event>,
    reply: Option<(Reply, usize)>,
}

/// The interfaces' sockets, bound; no lease journal opened and nothing answered yet.
pub struct Bound {
    settings: config::Settings,
    ifaces: Vec<Iface>,
}

/// Bind every configured interface. Errors here refuse the start before anything serves.
pub fn bind(ctx: &Context, banner: &mut Vec<String>) -> Result<Bound> {
    let cfg = &ctx.config.dhcp;
    let settings = cfg
        .compile(&mut |f, _, _, m| tracing::error!("{f}: {m}"))
        .ok_or_else(|| anyhow!("dhcp: invalid configuration"))?;
    let mut ifaces = Vec::new();
    for (i, name) in settings.interfaces.iter().enumerate() {
        let field = format!("dhcp.interfaces[{i}]");
        let sock = socket::bind(name, settings.port, &field)?;
        let addrs = socket::ipv4_addrs(name);
        if !settings
            .subnets
            .iter()
            .any(|s| addrs.iter().any(|a| s.contains(a.0)))
        {
            tracing::warn!(
                iface = %name,
                "dhcp: interface has no address in any configured subnet; it answers relayed requests only"
            );
        }
        banner.push(format!(
            "dhcp   udp/{} on {name} ({})",
            settings.port,
            addrs
                .iter()
                .map(|(a, p)| format!("{a}/{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        ifaces.push(Iface {
            name: name.clone(),
            addrs,
            socket: sock,
        });
    }
    Ok(Bound { settings, ifaces })
}

/// Open the lease journal, restore leases and serve (loops under the supervisor).
/// Returns the reload hook.
pub fn start(bound: Bound, ctx: &Context, metrics: Arc<DhcpMetrics>) -> Result<ReloadFn> {
    let Bound { settings, ifaces } = bound;
    let infos = ifaces
        .iter()
        .map(|i| IfaceInfo {
            name: i.name.clone(),
            addrs: i.addrs.clone(),
        })
        .collect();
    let engine = Arc::new(Engine::new(
        settings,
        infos,
        ctx.config.dns.enabled,
        ctx.provisioner.registry().clone(),
        metrics,
    ));
    let (journal, stored, bad) =
        store::Journal::open(&ctx.data_dir).context("dhcp: loading leases")?;
    if bad > 0 {
        tracing::warn!(records = bad, "dhcp: unreadable lease records skipped");
    }
    let total = stored.len();
    let live = engine.restore(stored, now());
    tracing::info!(stored = total, active = live, "dhcp: leases restored");

    let ifaces = Arc::new(ifaces);
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    // The writer owns its channel: it cannot be made again, so a panic there ends the
    // process (never an ACK without its lease on disk).
    ctx.supervisor.spawn_once(
        "dhcp",
        "dhcp lease writer",
        writer(
            rx,
            Arc::new(std::sync::Mutex::new(journal)),
            engine.clone(),
            ifaces.clone(),
        ),
    );
    for idx in 0..ifaces.len() {
        let (ifaces, engine, tx) = (ifaces.clone(), engine.clone(), tx.clone());
        let shutdown = ctx.shutdown.clone();
        let name = format!("dhcp receive {}", ifaces[idx].name);
        ctx.supervisor.spawn_restartable("dhcp", name, move || {
            Box::pin(receive(
                idx,
                ifaces.clone(),
                engine.clone(),
                tx.clone(),
                shutdown.clone(),
            ))
        });
    }
    // Expiry: leases whose time ran out are announced and their addresses reclaimed.
    let (e, sd) = (engine.clone(), ctx.shutdown.clone());
    ctx.supervisor
        .spawn_restartable("dhcp", "dhcp lease expiry", move || {
            let (e, sd) = (e.clone(), sd.clone());
            Box::pin(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tokio::select! {
                        _ = sd.cancelled() => break,
                        _ = tick.tick() => {
                            for ev in e.sweep(now()) {
                                e.announce(&ev);
                            }
                        }
                    }
                }
            })
        });

    // Reload: subnets, pools, options, reservations and times apply at once; the
    // sockets (interfaces, port) only at a restart (the reload names those keys).
    let (names, port) = (
        engine.policy().settings.interfaces.clone(),
        engine.policy().settings.port,
    );
    Ok(Box::new(move |cfg: &crate::config::Config| {
        if !cfg.dhcp.enabled {
            return Err(anyhow!(
                "dhcp.enabled: turning DHCP off takes a restart; it keeps serving meanwhile"
            ));
        }
        let mut problems = Vec::new();
        let new = cfg
            .dhcp
            .compile(&mut |f, _, _, m| problems.push(format!("{f}: {m}")))
            .ok_or_else(|| anyhow!("{}", problems.join("; ")))?;
        if new.interfaces != names || new.port != port {
            return Err(anyhow!(
                "dhcp.interfaces / dhcp.port changed: that takes a restart (the other \
                 DHCP settings were not applied either)"
            ));
        }
        engine.reload(new, now());
        tracing::info!("dhcp: settings reloaded");
        Ok(())
    }))
}

async fn receive(
    idx: usize,
    ifaces: Arc<Vec<Iface>>,
    engine: Arc<Engine>,
    tx: mpsc::UnboundedSender<Job>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let iface = &ifaces[idx];
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = iface.socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(iface = %iface.name, "dhcp: receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match engine.handle(idx, &buf[..n], now()) {
            Err(reason) => {
                tracing::debug!(iface = %iface.name, %peer, len = n, reason, "dhcp: message dropped");
                engine.metrics.drop_reason(reason);
            }
            Ok(out) if out.changes.is_empty() => {
                if let Some(r) = out.reply {
                    deliver(&engine, iface, r).await;
                }
            }
            Ok(out) => {
                let _ = tx.send(Job {
                    changes: out.changes,
                    events: out.events,
                    reply: out.reply.map(|r| (r, idx)),
                });
            }
        }
    }
}

async fn deliver(engine: &Engine, iface: &Iface, r: Reply) {
    match socket::send(iface, &r.bytes, r.dest).await {
        Ok(()) => {
            tracing::debug!(iface = %iface.name, dest = ?r.dest, kind = r.kind, "dhcp: reply sent");
            engine
                .metrics
                .sent
                .get_or_create(&MessageLabels { message: r.kind })
                .inc();
        }
        Err(e) => {
            tracing::warn!(iface = %iface.name, dest = ?r.dest, "dhcp: cannot send {}: {e}", r.kind);
            engine.metrics.drop_reason("send_failed");
        }
    }
}

/// Group commit: everything queued while the previous commit ran goes into the next one.
async fn writer(
    mut rx: mpsc::UnboundedReceiver<Job>,
    journal: Arc<std::sync::Mutex<store::Journal>>,
    engine: Arc<Engine>,
    ifaces: Arc<Vec<Iface>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let changes: Vec<Change> = batch
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.changes))
            .collect();
        let j = journal.clone();
        let res = tokio::task::spawn_blocking(move || {
            j.lock().unwrap_or_else(|e| e.into_inner()).commit(&changes)
        })
        .await;
        match res {
            Ok(Ok(())) => {
                for j in batch {
                    for ev in &j.events {
                        engine.announce(ev);
                    }
                    if let Some((r, idx)) = j.reply {
                        deliver(&engine, &ifaces[idx], r).await;
                    }
                }
            }
            Ok(Err(e)) => {
                // No ACK without a durable lease: the clients will retry.
                tracing::error!(
                    "dhcp: cannot store leases, {} replies withheld: {e:#}",
                    batch.len()
                );
                for _ in &batch {
                    engine.metrics.drop_reason("store_error");
                }
            }
            Err(e) => tracing::error!("dhcp: lease writer failed: {e}"),
        }
    }
}

/// `provbox leases`: the stored leases as a table.
pub fn print_leases(data_dir: &std::path::Path) -> Result<()> {
    let path = data_dir.join(store::FILE_NAME);
    if !path.exists() {
        println!(
            "no lease journal at {} (DHCP never ran here)",
            path.display()
        );
        return Ok(());
    }
    let contents = store::read(&path)?;
    let (mut list, bad) = contents.leases();
    list.sort_by_key(|l| l.ip);
    let now = now();
    println!(
        "{:<16} {:<18} {:<9} {:>10}  {:<20} VENDOR CLASS",
        "ADDRESS", "MAC", "STATE", "SECS LEFT", "HOSTNAME"
    );
    for l in &list {
        let (state, left) = match l.state {
            leases::State::Bound { expires } if expires > now => ("bound", expires - now),
            leases::State::Bound { .. } => ("expired", 0),
            leases::State::Free => ("free", 0),
            leases::State::Declined { until } => ("declined", until.saturating_sub(now)),
            leases::State::Offered { .. } => ("offered", 0),
        };
        println!(
            "{:<16} {:<18} {:<9} {:>10}  {:<20} {}",
            IpAddr::V4(l.ip),
            l.mac,
            state,
            left,
            l.hostname.as_deref().unwrap_or("-"),
            l.vendor_class.as_deref().unwrap_or("-")
        );
    }
    if bad > 0 {
        println!("({bad} unreadable records skipped)");
    }
    if contents.torn > 0 {
        println!(
            "({} bytes at the end are a record being written, or torn by a crash; not shown)",
            contents.torn
        );
    }
    Ok(())
}
