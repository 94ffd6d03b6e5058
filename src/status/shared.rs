//! Device records on the shared store (`store.backend: postgres`): each box writes the
//! records it changed and folds in those the others wrote, so every box's dashboard,
//! `/api/devices`, CSV and resync see the whole fleet.
//!
//! Outage: records waiting for the database are kept (the latest per device, bounded by
//! the book's own size) and written when it returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Device, MAX_DEVICES, StatusBook};
use crate::store::postgres::Pg;

/// How far back each read goes again (change numbers are drawn before commit).
const OVERLAP: i64 = 1024;
const READ_LIMIT: i64 = 2048;

pub(super) struct Sender {
    waiting: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Sender {
    /// Queue rows the local store just saved (deleted ones stay in the fleet's table:
    /// a box forgetting a device to bound its memory is not the fleet forgetting it).
    pub(super) fn send(&self, rows: Vec<(String, Option<Vec<u8>>)>) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in rows {
            if let Some(v) = v
                && (w.len() < 2 * MAX_DEVICES || w.contains_key(&k))
            {
                w.insert(k, v);
            }
        }
        drop(w);
        self.wake.notify_one();
    }
}

pub(super) fn start(
    pg: Arc<Pg>,
    book: Arc<StatusBook>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Sender {
    let waiting: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (w, n, p, sd) = (waiting.clone(), wake.clone(), pg.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = n.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = sd.cancelled() => {}
            }
            let batch: Vec<(String, Vec<u8>)> =
                std::mem::take(&mut *w.lock().unwrap_or_else(|e| e.into_inner()))
                    .into_iter()
                    .collect();
            if !batch.is_empty()
                && let Err(e) = p.put_devices(&batch).await
            {
                tracing::debug!("status: device records kept for PostgreSQL: {e:#}");
                let mut g = w.lock().unwrap_or_else(|e| e.into_inner());
                for (k, v) in batch {
                    // A newer copy queued meanwhile wins.
                    g.entry(k).or_insert(v);
                }
            }
            if sd.is_cancelled() {
                return;
            }
        }
    });
    let sd = shutdown.clone();
    tokio::spawn(async move {
        let mut applied: HashMap<String, i64> = HashMap::new();
        let mut last = 0i64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = sd.cancelled() => return,
            }
            let Ok(rows) = pg.devices_since(last, OVERLAP, READ_LIMIT).await else {
                continue;
            };
            for (seq, body) in rows {
                last = last.max(seq);
                let Ok(d) = serde_json::from_str::<Device>(&body) else {
                    continue;
                };
                if applied.get(&d.key) == Some(&seq) {
                    continue;
                }
                applied.insert(d.key.clone(), seq);
                if applied.len() > 4 * MAX_DEVICES {
                    applied.clear();
                }
                book.merge_remote(d);
            }
        }
    });
    Sender { waiting, wake }
}
