//! The file catalog: several roots served as one namespace, hot-reloaded, one whole
//! version per transfer. Protocol front ends only ever call [`Catalog::lookup`].

pub mod path;
mod snapshot;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;

pub use path::PathRefusal;
use snapshot::{SnapshotError, Snapshotter, Stamp};

use crate::metrics::{KindLabels, Metrics};

/// One published version of one file.
#[derive(Debug)]
pub struct Entry {
    /// The path as found on disk, relative to its root (`profiles/a.cfg`).
    pub key: String,
    pub body: Bytes,
    pub modified: SystemTime,
    /// Strong validator, stable across restarts for an unchanged file.
    pub etag: String,
    stamp: Stamp,
}

impl Entry {
    /// An entry whose bytes were made for one request (a rendered or encrypted profile).
    pub fn generated(key: String, body: Bytes, modified: SystemTime, etag: String) -> Entry {
        Entry {
            key,
            body,
            modified,
            etag,
            stamp: Stamp {
                len: 0,
                ino: 0,
                mtime_ns: 0,
                ctime_ns: 0,
            },
        }
    }
}

/// Why a request got no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    BadPath(PathRefusal),
    /// The device layer said no; the reason is a metric label.
    Forbidden(&'static str),
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::BadPath(p) => p.reason(),
            Refusal::Forbidden(r) => r,
        }
    }
}

impl From<PathRefusal> for Refusal {
    fn from(p: PathRefusal) -> Self {
        match p {
            // Hidden files are answered as if absent: their existence is not disclosed.
            PathRefusal::Hidden => Refusal::NotFound,
            p => Refusal::BadPath(p),
        }
    }
}

type Map = HashMap<String, Arc<Entry>>;

/// Per-root maps, looked up in configured order.
#[derive(Default, Clone)]
struct Index {
    roots: Vec<Map>,
}

pub struct Catalog {
    roots: Vec<PathBuf>,
    case_insensitive: bool,
    index: ArcSwap<Index>,
    /// The watcher's working copy; readers never wait on it.
    staging: Mutex<Index>,
    snapshots: Snapshotter,
    metrics: Arc<Metrics>,
}

impl Catalog {
    /// Scan every root and publish what is there. Roots are canonicalised so symlink
    /// checks compare like with like.
    pub fn open(
        roots: &[PathBuf],
        case_insensitive: bool,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Catalog>> {
        let mut canon = Vec::new();
        for r in roots {
            canon.push(
                r.canonicalize()
                    .map_err(|e| anyhow::anyhow!("catalog root {}: {e}", r.display()))?,
            );
        }
        let snapshots = Snapshotter::new(data_dir.join("snapshots"))
            .map_err(|e| anyhow::anyhow!("snapshot directory under {}: {e}", data_dir.display()))?;
        let empty = Index {
            roots: vec![Map::new(); canon.len()],
        };
        let cat = Arc::new(Catalog {
            roots: canon,
            case_insensitive,
            index: ArcSwap::from_pointee(empty.clone()),
            staging: Mutex::new(empty),
            snapshots,
            metrics,
        });
        Ok(cat)
    }

    /// Start watching, then scan (in that order, so no change falls between the two).
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        watch::spawn(self.clone())?;
        self.rescan_all();
        Ok(())
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Find the current version of a file for a request path from any protocol.
    pub fn lookup(&self, raw_path: &str) -> Result<Arc<Entry>, Refusal> {
        let key = path::normalize(raw_path)?;
        let key = self.map_key(&key);
        let index = self.index.load();
        index
            .roots
            .iter()
            .find_map(|m| m.get(&key).cloned())
            .ok_or(Refusal::NotFound)
    }

    pub fn file_count(&self) -> usize {
        let index = self.index.load();
        let mut keys: Vec<&String> = index.roots.iter().flat_map(|m| m.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.len()
    }

    fn map_key(&self, key: &str) -> String {
        if self.case_insensitive {
            key.to_lowercase()
        } else {
            key.to_string()
        }
    }

    /// The catalog key of an absolute path under root `r`, if it may be served.
    fn key_for(&self, r: usize, abs: &Path) -> Option<String> {
        let rel = abs.strip_prefix(&self.roots[r]).ok()?;
        let mut parts = Vec::new();
        for c in rel.components() {
            let s = c.as_os_str().to_str()?;
            if !path::is_servable_name(s) {
                return None;
            }
            parts.push(s);
        }
        if parts.is_empty() {
            return None;
        }
        Some(parts.join("/"))
    }

    fn root_of(&self, abs: &Path) -> Option<usize> {
        // The longest matching root wins when roots nest.
        self.roots
            .iter()
            .enumerate()
            .filter(|(_, r)| abs.starts_with(r))
            .max_by_key(|(_, r)| r.as_os_str().len())
            .map(|(i, _)| i)
    }

    fn reload_error(&self, kind: &'static str, path: &Path, detail: &dyn std::fmt::Display) {
        tracing::warn!(path = %path.display(), reason = kind, "not published: {detail}");
        self.metrics
            .catalog_reload_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Publish (or withdraw) whatever is now at `abs`. Returns whether the index changed.
    fn reconcile(&self, staging: &mut Index, abs: &Path) -> bool {
        let Some(r) = self.root_of(abs) else {
            return false;
        };
        let Some(key) = self.key_for(r, abs) else {
            return false;
        };
        match std::fs::symlink_metadata(abs) {
            Err(_) => self.withdraw(staging, r, &key),
            Ok(m) if m.is_dir() => {
                let mut changed = self.withdraw_prefix(staging, r, &key);
                changed |= self.scan_dir(staging, r, abs, 0);
                changed
            }
            Ok(m) => {
                if m.file_type().is_symlink() && !self.symlink_inside(r, abs) {
                    return self.withdraw(staging, r, &key);
                }
                match std::fs::metadata(abs) {
                    Ok(t) if t.is_dir() => self.scan_dir(staging, r, abs, 0),
                    _ => self.publish(staging, r, key, abs),
                }
            }
        }
    }

    fn symlink_inside(&self, r: usize, abs: &Path) -> bool {
        match abs.canonicalize() {
            Ok(target) if target.starts_with(&self.roots[r]) => true,
            Ok(target) => {
                self.reload_error(
                    "symlink_escape",
                    abs,
                    &format!("points outside its root, to {}", target.display()),
                );
                false
            }
            Err(e) => {
                self.reload_error("dangling_symlink", abs, &e);
                false
            }
        }
    }

    fn publish(&self, staging: &mut Index, r: usize, key: String, abs: &Path) -> bool {
        let map_key = self.map_key(&key);
        // An unchanged file keeps its published version: no copy, same ETag.
        if let Ok(m) = std::fs::metadata(abs) {
            let stamp = Stamp::of(&m);
            let current = self.index.load();
            let known = staging.roots[r]
                .get(&map_key)
                .or_else(|| current.roots[r].get(&map_key))
                .filter(|e| e.stamp == stamp)
                .cloned();
            if let Some(e) = known {
                return staging.roots[r].insert(map_key, e).is_none();
            }
        }
        match self.snapshots.take(abs) {
            Ok(snap) => {
                let etag = format!(
                    "\"{:x}-{:x}\"",
                    snap.stamp.len,
                    snap.stamp.mtime_ns as u128 & 0xffff_ffff_ffff_ffff
                );
                tracing::info!(file = %key, bytes = snap.body.len(), "published");
                self.metrics
                    .catalog_updates
                    .get_or_create(&KindLabels { kind: "published" })
                    .inc();
                staging.roots[r].insert(
                    map_key,
                    Arc::new(Entry {
                        key,
                        body: snap.body,
                        modified: snap.modified,
                        etag,
                        stamp: snap.stamp,
                    }),
                );
                true
            }
            Err(SnapshotError::NotFile) => false,
            Err(e) => {
                // The old version (if any) keeps being served; a later close or rename
                // publishes the new one.
                self.reload_error(e.reason(), abs, &e);
                false
            }
        }
    }

    fn withdraw(&self, staging: &mut Index, r: usize, key: &str) -> bool {
        let gone = staging.roots[r].remove(&self.map_key(key)).is_some();
        if gone {
            tracing::info!(file = %key, "withdrawn");
            self.metrics
                .catalog_updates
                .get_or_create(&KindLabels { kind: "withdrawn" })
                .inc();
        }
        gone | self.withdraw_prefix(staging, r, key)
    }

    fn withdraw_prefix(&self, staging: &mut Index, r: usize, dir_key: &str) -> bool {
        let prefix = format!("{}/", self.map_key(dir_key));
        let before = staging.roots[r].len();
        staging.roots[r].retain(|k, _| !k.starts_with(&prefix));
        before != staging.roots[r].len()
    }

    fn scan_dir(&self, staging: &mut Index, r: usize, dir: &Path, depth: usize) -> bool {
        if depth > 32 {
            self.reload_error("too_deep", dir, &"more than 32 directory levels");
            return false;
        }
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.reload_error("unreadable_dir", dir, &e);
                return false;
            }
        };
        let mut changed = false;
        for entry in rd.flatten() {
            let abs = entry.path();
            let Some(key) = self.key_for(r, &abs) else {
                continue;
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_symlink() && !self.symlink_inside(r, &abs) {
                continue;
            }
            match std::fs::metadata(&abs) {
                Ok(m) if m.is_dir() => changed |= self.scan_dir(staging, r, &abs, depth + 1),
                Ok(m) if m.is_file() => changed |= self.publish(staging, r, key, &abs),
                _ => {}
            }
        }
        changed
    }

    /// Re-read every root from disk now (on reload); unchanged files keep their version.
    pub fn rescan(&self) {
        tracing::info!("catalog: rescanning every root");
        self.rescan_all();
    }

    /// Rebuild every root from disk (start-up, and when the watcher lost events).
    fn rescan_all(&self) {
        let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Index {
            roots: vec![Map::new(); self.roots.len()],
        };
        for (r, root) in self.roots.iter().enumerate() {
            self.scan_dir(&mut fresh, r, root, 0);
        }
        *staging = fresh;
        self.swap(&staging);
    }

    fn swap(&self, staging: &Index) {
        self.index.store(Arc::new(staging.clone()));
        self.metrics.catalog_reloads.inc();
        self.metrics.catalog_files.set(self.file_count() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn catalog(roots: &[PathBuf], ci: bool, data: &Path) -> Arc<Catalog> {
        let m = Arc::new(Metrics::register(&mut Registry::default()));
        let c = Catalog::open(roots, ci, data, m).unwrap();
        c.rescan_all();
        c
    }

    #[test]
    fn roots_form_one_namespace_in_order() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("x.cfg"), "from a").unwrap();
        std::fs::write(b.join("x.cfg"), "from b").unwrap();
        std::fs::write(b.join("fw.bin"), "fw").unwrap();
        std::fs::write(a.join("sub/y.xml"), "y").unwrap();
        std::fs::write(a.join(".hidden"), "h").unwrap();
        std::fs::write(a.join("z.part"), "p").unwrap();
        let c = catalog(&[a, b], false, &t.path().join("data"));
        assert_eq!(&c.lookup("/x.cfg").unwrap().body[..], b"from a");
        assert_eq!(&c.lookup("fw.bin").unwrap().body[..], b"fw");
        assert_eq!(&c.lookup("/sub/y.xml").unwrap().body[..], b"y");
        assert_eq!(c.lookup("/.hidden").unwrap_err(), Refusal::NotFound);
        assert_eq!(c.lookup("/z.part").unwrap_err(), Refusal::NotFound);
        assert_eq!(c.lookup("/X.CFG").unwrap_err(), Refusal::NotFound);
        assert_eq!(
            c.lookup("/../x.cfg").unwrap_err(),
            Refusal::BadPath(PathRefusal::Traversal)
        );
        assert_eq!(c.file_count(), 3);
    }

    #[test]
    fn case_insensitive_lookup() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("SEP00562B043615.cnf.xml"), "p").unwrap();
        let c = catalog(&[a], true, &t.path().join("data"));
        assert!(c.lookup("/sep00562b043615.cnf.xml").is_ok());
        assert_eq!(
            c.lookup("/sep00562b043615.cnf.xml").unwrap().key,
            "SEP00562B043615.cnf.xml"
        );
    }

    #[test]
    fn symlink_leaving_root_is_not_served() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        std::fs::write(a.join("ok"), "ok").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), a.join("leak")).unwrap();
        std::os::unix::fs::symlink(a.join("ok"), a.join("alias")).unwrap();
        let c = catalog(&[a], false, &t.path().join("data"));
        assert_eq!(c.lookup("leak").unwrap_err(), Refusal::NotFound);
        assert_eq!(&c.lookup("alias").unwrap().body[..], b"ok");
    }
}
