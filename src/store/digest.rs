//! Catalog digests between boxes (`store.backend: postgres`): each box publishes what it
//! serves (path → sha256 of the published version) and reads back the paths whose digest
//! differs between boxes, for the dashboard to flag (a firmware rsync that did not finish
//! on one box). Hashes are kept per file version, so a tick costs a walk of the index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::postgres::Pg;
use crate::catalog::Catalog;

/// A path that differs: each box with its sha256 (`-`: the box does not have it).
pub(crate) type Difference = (String, Vec<(String, String)>);

static DIFFERENCES: Mutex<Vec<Difference>> = Mutex::new(Vec::new());

/// What the last tick found (empty without a shared store).
pub(crate) fn differences() -> Vec<Difference> {
    DIFFERENCES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

const EVERY: Duration = Duration::from_secs(3);

pub(crate) fn spawn(
    pg: Arc<Pg>,
    catalog: Arc<Catalog>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        // path -> (etag, sha256): hash a file again only when its version changed.
        let mut known: HashMap<String, (String, String)> = HashMap::new();
        let mut published: Option<Vec<(String, String)>> = None;
        loop {
            let mut now: Vec<(String, String)> = Vec::new();
            let mut seen = HashMap::new();
            for e in catalog.entries() {
                let sha = match known.get(&e.key) {
                    Some((etag, sha)) if *etag == e.etag => sha.clone(),
                    _ => {
                        let sha: String = Sha256::digest(&e.body)
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        sha
                    }
                };
                seen.insert(e.key.clone(), (e.etag.clone(), sha.clone()));
                now.push((e.key.clone(), sha));
            }
            known = seen;
            now.sort();
            if published.as_ref() != Some(&now) && pg.publish_digest(&now).await.is_ok() {
                published = Some(now);
            }
            if let Ok(d) = pg.digest_differences().await {
                if !d.is_empty() {
                    tracing::debug!(files = d.len(), "store: files differ between boxes");
                }
                *DIFFERENCES.lock().unwrap_or_else(|e| e.into_inner()) = d;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    });
}
