//! DHCP on the shared store (`store.backend: postgres`): the writer commits each batch of
//! lease changes in one PostgreSQL transaction, where one statement per lease decides
//! whether the address is still this client's to take (`Pg::commit_leases`); a refused
//! one is never ACKed and this box's table takes the database's row. A sync loop brings
//! the other boxes' leases into this box's table, so either box renews any lease.
//!
//! Outage: renewals of leases this box knows are ACKed once kept (bounded) in the outage
//! spool, a local journal synced before each ACK, until the database returns and has them;
//! nothing new is offered or granted (counted `store_unavailable`).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::engine::{Engine, EventKind, Reply};
use super::leases::{Lease, Share, State};
use super::store::{Change, Journal};
use super::{Job, WRITER_QUEUE, now};
use crate::limit::WarnGate;
use crate::store::postgres::Pg;

/// Changes ACKed while the database was away, kept for it. Past this (or when the spool
/// cannot be written), renewals are withheld too (the clients retry; nothing acknowledged
/// is dropped).
const PENDING_MAX: usize = 65_536;
/// How far back each sync reads again: sequence numbers are drawn before commit, so a
/// slower transaction can land a smaller one after a faster one was read.
const OVERLAP: i64 = 4096;
/// Every this many syncs, the whole table is read again.
const FULL_EVERY: u64 = 120;
/// Every this many syncs, this box says it is alive and learns which boxes are: a box
/// gone for `BOX_GONE_AFTER_S` gives its share of the pools back to the others.
const HEARTBEAT_EVERY: u64 = 4;

/// Say this box is alive and take its share of the pools among the live boxes.
pub(super) async fn heartbeat(pg: &Pg, engine: &Engine) {
    match pg.heartbeat().await {
        Ok(boxes) => engine.set_share(Share::among(&boxes, pg.box_name())),
        Err(e) => tracing::debug!("dhcp: store heartbeat: {e:#}"),
    }
}

pub(super) async fn writer<S, F>(
    mut rx: mpsc::Receiver<Job>,
    pg: Arc<Pg>,
    engine: Arc<Engine>,
    send: S,
    mut spool: Journal,
    spooled: Vec<Lease>,
) where
    S: Fn(Reply, usize) -> F,
    F: std::future::Future<Output = ()>,
{
    // What a crash during an outage left in the spool goes first.
    let mut pending: Vec<Change> = spooled.into_iter().map(Change::Put).collect();
    let warn = WarnGate::new(Duration::from_secs(10));
    loop {
        let first = if pending.is_empty() {
            rx.recv().await
        } else {
            // Something waits for the database: try again each second without traffic.
            tokio::select! {
                j = rx.recv() => j,
                _ = tokio::time::sleep(Duration::from_secs(1)) => Some(Job {
                    changes: Vec::new(),
                    events: Vec::new(),
                    reply: None,
                    done: None,
                }),
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < WRITER_QUEUE {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        commit(&pg, &engine, batch, &send, &mut pending, &mut spool, &warn).await;
    }
}

async fn commit<S, F>(
    pg: &Pg,
    engine: &Engine,
    batch: Vec<Job>,
    send: &S,
    pending: &mut Vec<Change>,
    spool: &mut Journal,
    warn: &WarnGate,
) where
    S: Fn(Reply, usize) -> F,
    F: std::future::Future<Output = ()>,
{
    let now = now();
    let flush = std::mem::take(pending);
    let nflush = flush.len();
    // Each change kept from the outage is its own job: one refused does not undo others.
    let jobs: Vec<&[Change]> = flush
        .iter()
        .map(std::slice::from_ref)
        .chain(batch.iter().map(|j| j.changes.as_slice()))
        .collect();
    let res = if jobs.iter().all(|j| j.is_empty()) {
        Ok(Default::default())
    } else {
        pg.commit_leases(&jobs, now).await
    };
    engine.metrics.journal_degraded.set(i64::from(!pg.is_up()));
    match res {
        Ok(c) => {
            if nflush > 0
                && let Err(e) = tokio::task::block_in_place(|| spool.clear())
            {
                // Harmless but for the disk: the next start writes them again.
                tracing::warn!("dhcp: cannot empty the outage spool: {e:#}");
            }
            let refused: HashSet<usize> = c.refused.iter().copied().collect();
            let lost = refused.iter().filter(|&&i| i < nflush).count();
            if lost > 0 {
                tracing::warn!(
                    changes = lost,
                    "dhcp: lease changes made while PostgreSQL was away were refused: another box holds those addresses now"
                );
            }
            if !c.refused_ips.is_empty() {
                // The database's rows win; an address with no row is free.
                let mut fix = c.truth;
                for &i in refused.iter().filter(|&&i| i >= nflush) {
                    for ch in &batch[i - nflush].changes {
                        if let Change::Put(l) = ch
                            && !fix.iter().any(|t| t.ip == l.ip)
                        {
                            fix.push(Lease {
                                state: State::Free,
                                ..l.clone()
                            });
                        }
                    }
                }
                engine.restore(fix, now);
            }
            for (i, j) in batch.into_iter().enumerate() {
                if refused.contains(&(i + nflush)) {
                    // Another box's client has it: no ACK; the client asks again and
                    // gets another address.
                    engine.metrics.drop_reason("lease_held_elsewhere");
                    if let Some(d) = j.done {
                        let _ = d.send(false);
                    }
                    continue;
                }
                j.committed(engine, send).await;
            }
        }
        Err(e) => {
            *pending = flush;
            // Renewals, and releases and declines (answered by nothing), may wait for the
            // database: kept in the spool, synced once for the batch before their ACKs
            // leave. A new address only the database may grant.
            let mut room = PENDING_MAX.saturating_sub(pending.len());
            let (mut kept, mut withheld) = (Vec::new(), Vec::new());
            for mut j in batch {
                // Not durable yet: an operator's release waiting on it hears so.
                if let Some(d) = j.done.take() {
                    let _ = d.send(false);
                }
                let renewal =
                    !j.events.is_empty() && j.events.iter().all(|e| e.kind == EventKind::Renewed);
                if (renewal || j.reply.is_none()) && j.changes.len() <= room {
                    room -= j.changes.len();
                    kept.push(j);
                } else {
                    withheld.push(j);
                }
            }
            let changes: Vec<Change> = kept.iter().flat_map(|j| j.changes.clone()).collect();
            if !changes.is_empty()
                && let Err(e) = tokio::task::block_in_place(|| spool.commit(&changes))
            {
                tracing::error!("dhcp: cannot spool renewals during the outage: {e:#}");
                withheld.append(&mut kept);
            } else {
                pending.extend(changes);
            }
            for j in kept {
                j.committed(engine, send).await;
            }
            // Undo what the engine noted so the client's retry is not taken for a renewal.
            let undo: Vec<Lease> = withheld
                .iter()
                .flat_map(|j| &j.changes)
                .filter_map(|c| match c {
                    Change::Put(l) if matches!(l.state, State::Bound { .. }) => Some(Lease {
                        state: State::Free,
                        ..l.clone()
                    }),
                    _ => None,
                })
                .collect();
            engine.restore(undo, now);
            for _ in &withheld {
                engine.metrics.drop_reason("store_unavailable");
            }
            if let Some(held) = warn.admit() {
                tracing::error!(
                    withheld = withheld.len(),
                    kept = pending.len(),
                    held_back = held,
                    "dhcp: PostgreSQL unreachable ({e:#}); renewals answered and kept, new leases withheld"
                );
            }
        }
    }
}

/// Bring the other boxes' lease rows into this box's table.
pub(super) async fn sync(
    pg: Arc<Pg>,
    engine: Arc<Engine>,
    mut last: i64,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut applied: HashMap<Ipv4Addr, i64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        if n.is_multiple_of(HEARTBEAT_EVERY) {
            heartbeat(&pg, &engine).await;
        }
        let (from, overlap) = if n.is_multiple_of(FULL_EVERY) {
            (0, 0)
        } else {
            (last, OVERLAP)
        };
        let Ok(rows) = pg.lease_changes(from, overlap).await else {
            continue;
        };
        let mut fresh = Vec::new();
        for (seq, l) in rows {
            last = last.max(seq);
            if applied.insert(l.ip, seq) != Some(seq) {
                fresh.push(l);
            }
        }
        if !fresh.is_empty() {
            tracing::debug!(leases = fresh.len(), "dhcp: leases from other boxes");
            engine.restore(fresh, now());
        }
    }
}
