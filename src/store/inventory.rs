//! The inventory on the shared store (`store.backend: postgres`): `provbox devices import`
//! on any box writes that box's inventory file as always; the box puts the new file in the
//! database and every other box writes it to its own `devices.inventory`, where the
//! inventory watcher loads it (or, if it is broken, logs it and keeps the previous one).
//! At start the database's copy wins over the local file. Last import wins.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::postgres::Pg;

const EVERY: Duration = Duration::from_secs(2);

pub(crate) fn spawn(pg: Arc<Pg>, path: PathBuf, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        // The body last agreed between this file and the database.
        let mut agreed: Option<String> = None;
        loop {
            let local = std::fs::read_to_string(&path).ok();
            if let Ok(remote) = pg.inventory().await {
                let local_changed = local.is_some() && local != agreed;
                match (remote, local) {
                    // Imported here (or a first box with a file): the fleet gets it.
                    (r, Some(l)) if local_changed && (agreed.is_some() || r.is_none()) => {
                        if pg.put_inventory(&l).await.is_ok() {
                            tracing::info!(file = %path.display(), "inventory: shared with the other boxes");
                            agreed = Some(l);
                        }
                    }
                    // Imported on another box (or this box starting): take it.
                    (Some(r), l) if Some(&r) != l.as_ref() => {
                        let tmp = path.with_extension("shared.tmp");
                        let wrote =
                            std::fs::write(&tmp, &r).and_then(|_| std::fs::rename(&tmp, &path));
                        match wrote {
                            Ok(()) => {
                                tracing::info!(file = %path.display(), "inventory: taken from the shared store");
                                agreed = Some(r);
                            }
                            Err(e) => {
                                tracing::warn!(file = %path.display(), "inventory: cannot write the shared copy: {e}")
                            }
                        }
                    }
                    (Some(r), _) => agreed = Some(r),
                    (None, _) => {}
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    });
}
