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
mod desk;
pub mod engine;
pub mod leases;
pub mod metrics;
pub mod options;
mod pg;
mod shared;
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

use crate::frontend::Context;
use crate::frontend::ReloadFn;
use engine::{Engine, Event, IfaceInfo, Reply};
use metrics::MessageLabels;
use socket::Iface;
use store::Change;

pub fn register(reg: &mut Registry) -> Arc<DhcpMetrics> {
    Arc::new(DhcpMetrics::register(reg))
}

/// An engine deciding for `settings` on one interface, `br0` at 198.18.0.1/24, with a device
/// registry and metrics of its own: what unit tests and the fuzz target drive without sockets.
#[doc(hidden)]
pub fn lab_engine(settings: config::Settings, dns_on: bool) -> Engine {
    Engine::new(
        settings,
        vec![IfaceInfo {
            name: "br0".into(),
            addrs: vec![("198.18.0.1".parse().unwrap(), 24)],
        }],
        dns_on,
        Arc::new(crate::devices::Registry::default()),
        Arc::new(DhcpMetrics::default()),
    )
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
    /// Told whether the changes are on disk (an operator's release waits for it).
    done: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl Job {
    /// The job's changes are durable: announce its events, tell a waiting release, reply.
    async fn committed<S, F>(self, engine: &Engine, send: &S)
    where
        S: Fn(Reply, usize) -> F,
        F: std::future::Future<Output = ()>,
    {
        for ev in &self.events {
            engine.announce(ev);
        }
        if let Some(d) = self.done {
            let _ = d.send(true);
        }
        if let Some((r, idx)) = self.reply {
            send(r, idx).await;
        }
    }
}

/// The interfaces' sockets, bound; no lease journal opened and nothing answered yet.
pub struct Bound {
    settings: config::Settings,
    ifaces: Vec<Iface>,
}

/// Bind every configured interface. Errors here refuse the start before anything serves.
pub fn bind(cfg: &Config, banner: &mut Vec<String>) -> Result<Bound> {
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
/// `dns_on`: whether provbox's own DNS runs (option 6 then names it). Returns the
/// reload hook.
pub fn start(
    bound: Bound,
    ctx: &Context,
    dns_on: bool,
    metrics: Arc<DhcpMetrics>,
) -> Result<ReloadFn<Config>> {
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
        dns_on,
        ctx.provisioner.registry().clone(),
        metrics,
    ));
    let shared = crate::store::shared();
    let (backing, stored) = open_backing(shared.clone(), &ctx.data_dir, &engine)?;
    let total = stored.len();
    let live = engine.restore(stored, now());
    tracing::info!(stored = total, active = live, "dhcp: leases restored");

    let ifaces = Arc::new(ifaces);
    let (tx, rx) = mpsc::channel::<Job>(WRITER_QUEUE);
    (ctx.provisioner.registry()).set_desk(Arc::new(desk::Desk::new(engine.clone(), tx.clone())));
    // The writer owns its channel: it cannot be made again, so a panic there ends the
    // process (never an ACK without its lease on disk).
    let (e, i) = (engine.clone(), ifaces.clone());
    let send = move |r, idx: usize| {
        let (e, i) = (e.clone(), i.clone());
        async move { deliver(&e, &i[idx], r).await }
    };
    match backing {
        Backing::Journal(journal) => {
            ctx.supervisor.spawn_once(
                "dhcp",
                "dhcp lease writer",
                writer(
                    rx,
                    Arc::new(std::sync::Mutex::new(journal)),
                    engine.clone(),
                    send,
                ),
            );
        }
        Backing::Shared {
            pg,
            spool,
            spooled,
            seq,
        } => {
            ctx.supervisor.spawn_once(
                "dhcp",
                "dhcp lease writer",
                shared::writer(rx, pg.clone(), engine.clone(), send, spool, spooled),
            );
            let (e, sd) = (engine.clone(), ctx.shutdown.clone());
            ctx.supervisor
                .spawn_restartable("dhcp", "dhcp lease sync", move || {
                    Box::pin(shared::sync(pg.clone(), e.clone(), seq, sd.clone()))
                });
        }
    }
    for idx in 0..ifaces.len() {
        let (ifaces, engine, tx) = (ifaces.clone(), engine.clone(), tx.clone());
        let (shutdown, shared) = (ctx.shutdown.clone(), shared.clone());
        let name = format!("dhcp receive {}", ifaces[idx].name);
        ctx.supervisor.spawn_restartable("dhcp", name, move || {
            Box::pin(receive(
                idx,
                ifaces.clone(),
                engine.clone(),
                tx.clone(),
                shutdown.clone(),
                shared.clone(),
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
    Ok(Box::new(move |cfg: &Config| {
        if !cfg.enabled {
            return Err(anyhow!(
                "dhcp.enabled: turning DHCP off takes a restart; it keeps serving meanwhile"
            ));
        }
        let mut problems = Vec::new();
        let new = cfg
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
    tx: mpsc::Sender<Job>,
    shutdown: tokio_util::sync::CancellationToken,
    shared: Option<Arc<crate::store::postgres::Pg>>,
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
            // The shared store is down: no new address is offered (it could not be
            // granted); renewals still are (see `shared::commit`).
            Ok(out)
                if out.reply.as_ref().is_some_and(|r| r.kind == "offer")
                    && shared.as_ref().is_some_and(|s| !s.is_up()) =>
            {
                engine.metrics.drop_reason("store_unavailable");
            }
            Ok(out) if out.changes.is_empty() => {
                if let Some(r) = out.reply {
                    deliver(&engine, iface, r).await;
                }
            }
            Ok(out) => {
                let job = Job {
                    changes: out.changes,
                    events: out.events,
                    reply: out.reply.map(|r| (r, idx)),
                    done: None,
                };
                queue(&tx, job, &engine);
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

/// Jobs waiting for the writer. Past this the writer is behind the disk: requests are
/// dropped (counted as `writer_busy`, never ACKed) and their clients retry.
const WRITER_QUEUE: usize = 1024;

/// Queue a job for the writer, or drop it (counted) when the queue is full.
fn queue(tx: &mpsc::Sender<Job>, job: Job, engine: &Engine) {
    if let Err(e) = tx.try_send(job) {
        let reason = match e {
            mpsc::error::TrySendError::Full(_) => "writer_busy",
            mpsc::error::TrySendError::Closed(_) => "store_error",
        };
        tracing::debug!(
            reason,
            "dhcp: lease writer queue refused a request; no reply"
        );
        engine.metrics.drop_reason(reason);
    }
}

/// Where this box's leases are kept.
enum Backing {
    /// The lease journal in `data_dir` (`store.backend: embedded`).
    Journal(store::Journal),
    /// The shared table (`store.backend: postgres`), with the outage spool and the renewals
    /// it still held at start, and the highest change number read.
    Shared {
        pg: Arc<crate::store::postgres::Pg>,
        spool: store::Journal,
        spooled: Vec<leases::Lease>,
        seq: i64,
    },
}

/// Open where the leases are kept; returns it with the leases to restore.
fn open_backing(
    shared: Option<Arc<crate::store::postgres::Pg>>,
    data_dir: &std::path::Path,
    engine: &Engine,
) -> Result<(Backing, Vec<leases::Lease>)> {
    let unreadable = |bad: usize| {
        if bad > 0 {
            tracing::warn!(records = bad, "dhcp: unreadable lease records skipped");
        }
    };
    let Some(pg) = shared else {
        let (journal, stored, bad) =
            store::Journal::open(data_dir).context("dhcp: loading leases")?;
        unreadable(bad);
        return Ok((Backing::Journal(journal), stored));
    };
    let (spool, spooled, bad) = store::Journal::open_file(data_dir.join(store::SPOOL_FILE_NAME))
        .context("dhcp: opening the outage spool")?;
    unreadable(bad);
    if !spooled.is_empty() {
        tracing::info!(
            leases = spooled.len(),
            "dhcp: renewals ACKed while PostgreSQL was away are written to it now"
        );
    }
    let (mut stored, seq) = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            // Join the boxes splitting the pools before the first offer.
            shared::heartbeat(&pg, engine).await;
            pg.leases().await
        })
    })
    .context("dhcp: loading leases from PostgreSQL")?;
    // The spooled renewals are newer than the rows they renew.
    stored.extend(spooled.iter().cloned());
    let backing = Backing::Shared {
        pg,
        spool,
        spooled,
        seq,
    };
    Ok((backing, stored))
}

/// Group commit: everything queued while the previous commit ran goes into the next one.
/// `send` delivers a reply on an interface (the sockets; a recorder in tests).
async fn writer<S, F>(
    mut rx: mpsc::Receiver<Job>,
    journal: Arc<std::sync::Mutex<store::Journal>>,
    engine: Arc<Engine>,
    send: S,
) where
    S: Fn(Reply, usize) -> F,
    F: std::future::Future<Output = ()>,
{
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < WRITER_QUEUE {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        commit_batch(&journal, &engine, batch, &send).await;
    }
}

/// Persist a batch; only when that succeeded, send its replies and announce its events.
async fn commit_batch<S, F>(
    journal: &Arc<std::sync::Mutex<store::Journal>>,
    engine: &Engine,
    mut batch: Vec<Job>,
    send: &S,
) where
    S: Fn(Reply, usize) -> F,
    F: std::future::Future<Output = ()>,
{
    let changes: Vec<Change> = batch
        .iter_mut()
        .flat_map(|j| std::mem::take(&mut j.changes))
        .collect();
    let j = journal.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut j = j.lock().unwrap_or_else(|e| e.into_inner());
        let r = j.commit(&changes);
        (r, j.degraded())
    })
    .await;
    match res {
        Ok((r, degraded)) => {
            engine.metrics.journal_degraded.set(i64::from(degraded));
            match r {
                Ok(()) => {
                    for j in batch {
                        j.committed(engine, send).await;
                    }
                }
                Err(e) => {
                    // No ACK without a durable lease: the clients will retry.
                    tracing::error!(
                        "dhcp: cannot store leases, {} replies withheld: {e:#}",
                        batch.len()
                    );
                    for _ in &batch {
                        engine.metrics.drop_reason("store_error");
                    }
                }
            }
        }
        Err(e) => tracing::error!("dhcp: lease writer failed: {e}"),
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
    let (list, bad) = contents.leases();
    print_table(list);
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

/// `provbox leases` with `store.backend: postgres`: the fleet's leases, from the database.
pub fn print_shared_leases(cfg: &crate::store::Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (list, _) = rt.block_on(async {
        let pg = crate::store::postgres::Pg::connect(cfg).await?;
        pg.leases().await
    })?;
    print_table(list);
    Ok(())
}

fn print_table(mut list: Vec<leases::Lease>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Mac;
    use leases::{ClientKey, Lease, State};
    use std::sync::Mutex;

    fn engine() -> Arc<Engine> {
        let yaml = "enabled: true\ninterfaces: [br0]\nsubnets:\n  - subnet: 198.18.0.0/24\n    pools: [\"198.18.0.100-198.18.0.110\"]\n";
        let cfg: Config = serde_saphyr::from_str(yaml).unwrap();
        let settings = cfg.compile(&mut |f, _, _, m| panic!("{f}: {m}")).unwrap();
        Arc::new(lab_engine(settings, false))
    }

    /// A job binding 198.18.0.`n`, whose reply is the one byte `n`.
    fn job(n: u8) -> Job {
        let mac = Mac([2, 0, 0, 0, 0, n]);
        let lease = Lease {
            ip: [198, 18, 0, n].into(),
            client: ClientKey::new(None, &mac),
            mac,
            hostname: None,
            vendor_class: None,
            state: State::Bound {
                expires: 1_900_000_000,
            },
        };
        Job {
            changes: vec![Change::Put(lease)],
            events: Vec::new(),
            done: None,
            reply: Some((
                Reply {
                    bytes: vec![n],
                    dest: socket::Dest::Broadcast,
                    kind: "ack",
                },
                0,
            )),
        }
    }

    fn dropped(e: &Engine, reason: &'static str) -> u64 {
        e.metrics
            .dropped
            .get_or_create(&metrics::RefusalLabels { reason })
            .get()
    }

    #[tokio::test]
    async fn no_ack_leaves_after_a_failed_sync_and_acks_resume_when_it_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _, _) = store::Journal::open(dir.path()).unwrap();
        let faults = journal.sync_faults.clone();
        let journal = Arc::new(Mutex::new(journal));
        let e = engine();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = sent.clone();
        let send = move |r: Reply, _| {
            s.lock().unwrap().push(r.bytes[0]);
            async {}
        };
        let degraded = |e: &Engine| e.metrics.journal_degraded.get();

        commit_batch(&journal, &e, vec![job(10)], &send).await;
        assert_eq!((sent.lock().unwrap().clone(), degraded(&e)), (vec![10], 0));

        // fdatasync fails: no ACK, and none while the journal cannot be made whole.
        faults.lock().unwrap().push_back(true);
        commit_batch(&journal, &e, vec![job(11), job(12)], &send).await;
        assert_eq!((sent.lock().unwrap().clone(), degraded(&e)), (vec![10], 1));
        // The rewrite's file syncs but its directory does not.
        faults.lock().unwrap().extend([false, true]);
        commit_batch(&journal, &e, vec![job(13)], &send).await;
        assert_eq!((sent.lock().unwrap().clone(), degraded(&e)), (vec![10], 1));
        assert_eq!(dropped(&e, "store_error"), 3);

        // Syncs work again: the journal is rewritten whole and ACKs resume.
        commit_batch(&journal, &e, vec![job(14)], &send).await;
        commit_batch(&journal, &e, vec![job(15)], &send).await;
        assert_eq!(
            (sent.lock().unwrap().clone(), degraded(&e)),
            (vec![10, 14, 15], 0)
        );
        drop(journal);
        let (_, got, _) = store::Journal::open(dir.path()).unwrap();
        for n in [10, 14, 15] {
            let ip: std::net::Ipv4Addr = [198, 18, 0, n].into();
            assert!(got.iter().any(|l| l.ip == ip), "ACKed {ip} is on disk");
        }
    }

    #[tokio::test]
    async fn a_full_writer_queue_drops_and_counts_and_never_acks() {
        let e = engine();
        let (tx, mut rx) = mpsc::channel::<Job>(WRITER_QUEUE);
        for _ in 0..WRITER_QUEUE {
            queue(&tx, job(20), &e);
        }
        queue(&tx, job(21), &e);
        assert_eq!(dropped(&e, "writer_busy"), 1);
        // What the writer will see: the queued jobs only.
        let mut n = 0;
        while let Ok(j) = rx.try_recv() {
            assert_eq!(j.reply.unwrap().0.bytes, vec![20]);
            n += 1;
        }
        assert_eq!(n, WRITER_QUEUE);
    }
}
