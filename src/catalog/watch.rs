//! Hot reload: inotify events (through `notify`) drive `Catalog::reconcile`.
//!
//! A file is published when it is closed after writing or renamed into place, never on a
//! bare "modified" event: a half-written file is not offered, and the previous version
//! keeps being served until the new one is complete.
//!
//! Symlinks are not followed (notify follows them by default): a symlinked directory in a
//! root would otherwise be watched, and its outside files reported under the root's path.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use super::Catalog;

enum Work {
    Paths(Vec<PathBuf>),
    Rescan,
}

fn classify(ev: notify::Result<notify::Event>) -> Option<Work> {
    let ev = match ev {
        Ok(ev) => ev,
        // The kernel queue overflowed or the watch broke: trust nothing, rescan.
        Err(_) => return Some(Work::Rescan),
    };
    if ev.need_rescan() {
        return Some(Work::Rescan);
    }
    match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(_))
        | EventKind::Create(CreateKind::Folder)
        | EventKind::Remove(_) => Some(Work::Paths(ev.paths)),
        // Data writes, opens, reads, metadata: wait for the close.
        _ => None,
    }
}

pub(super) fn spawn(cat: Arc<Catalog>) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Work>();
    let mut watcher = notify::RecommendedWatcher::new(
        move |ev| {
            if let Some(w) = classify(ev) {
                let _ = tx.send(w);
            }
        },
        notify::Config::default().with_follow_symlinks(false),
    )?;
    for root in cat.roots() {
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", root.display()))?;
    }
    std::thread::Builder::new()
        .name("catalog-watch".into())
        .spawn(move || {
            let _watcher = watcher; // lives as long as the thread
            while let Ok(first) = rx.recv() {
                // Gather a short burst (a `cp -r`, an editor's save dance) into one swap.
                let mut paths = BTreeSet::new();
                let mut rescan = false;
                let mut take = |w: Work, paths: &mut BTreeSet<PathBuf>| match w {
                    Work::Paths(p) => paths.extend(p),
                    Work::Rescan => rescan = true,
                };
                take(first, &mut paths);
                let started = std::time::Instant::now();
                while started.elapsed() < Duration::from_millis(200)
                    && let Ok(w) = rx.recv_timeout(Duration::from_millis(20))
                {
                    take(w, &mut paths);
                    if paths.len() > 10_000 {
                        rescan = true;
                        break;
                    }
                }
                if rescan {
                    tracing::warn!("catalog: change events lost, rescanning every root");
                    cat.rescan_all();
                    continue;
                }
                let mut staging = cat.staging.lock().unwrap_or_else(|e| e.into_inner());
                let mut changed = false;
                for p in &paths {
                    changed |= cat.reconcile(&mut staging, p);
                }
                if changed {
                    cat.swap(&staging);
                }
            }
        })?;
    Ok(())
}
