//! The file catalog: several roots served as one namespace, hot-reloaded, one whole
//! version per transfer. Protocol front ends only ever call [`Catalog::lookup`].

mod beneath;
pub mod path;
mod snapshot;
mod watch;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
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
    /// HTTP credentials are needed (missing or wrong): a 401 with the device layer's
    /// challenges; `stale` when only the nonce was too old.
    Unauthorized {
        stale: bool,
    },
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::BadPath(p) => p.reason(),
            Refusal::Forbidden(r) => r,
            Refusal::Unauthorized { .. } => "unauthorized",
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
    /// Each root opened once: every file is opened relative to it, never by full path.
    root_fds: Vec<OwnedFd>,
    case_insensitive: bool,
    index: ArcSwap<Index>,
    /// The watcher's working copy; readers never wait on it.
    staging: Mutex<Index>,
    snapshots: Snapshotter,
    metrics: Arc<Metrics>,
}

impl Catalog {
    /// Prepare the catalog (`start` scans and watches). Roots are canonicalised so event
    /// paths compare like with like; a root may itself be reached through a symlink, but
    /// nothing inside it is.
    pub fn open(
        roots: &[PathBuf],
        case_insensitive: bool,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Catalog>> {
        let mut canon = Vec::new();
        let mut root_fds = Vec::new();
        for r in roots {
            let c = r
                .canonicalize()
                .map_err(|e| anyhow::anyhow!("catalog root {}: {e}", r.display()))?;
            root_fds.push(
                beneath::open_root(&c)
                    .map_err(|e| anyhow::anyhow!("catalog root {}: {e}", r.display()))?,
            );
            canon.push(c);
        }
        let snapshots = Snapshotter::new(data_dir.join("snapshots"))
            .map_err(|e| anyhow::anyhow!("snapshot directory under {}: {e}", data_dir.display()))?;
        let empty = Index {
            roots: vec![Map::new(); canon.len()],
        };
        let cat = Arc::new(Catalog {
            roots: canon,
            root_fds,
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

    /// The current version of every published file (where roots share a name, the one a
    /// lookup finds), by key.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let index = self.index.load();
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Arc<Entry>> = Vec::new();
        for m in &index.roots {
            for (k, e) in m {
                if seen.insert(k.clone()) {
                    out.push(e.clone());
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
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
            Ok(m) if m.file_type().is_symlink() => {
                self.symlink_skipped(abs);
                self.withdraw(staging, r, &key)
            }
            Ok(_) => self.publish(staging, r, key, abs),
        }
    }

    /// Symlinks are never followed: not to a file, not to a directory, not even inside
    /// the root (one could reach a hidden file, another root, or be swapped between a
    /// check and the copy).
    fn symlink_skipped(&self, abs: &Path) {
        self.reload_error("symlink", abs, &"a symlink; symlinks are never served");
    }

    /// Open the file at `key` beneath its root (no symlink anywhere on the way), then
    /// publish a snapshot copied from that very descriptor.
    fn publish(&self, staging: &mut Index, r: usize, key: String, abs: &Path) -> bool {
        let map_key = self.map_key(&key);
        let opened = beneath::open(&self.root_fds[r], &key).and_then(|f| {
            let m = f.metadata()?;
            Ok((f, m))
        });
        let (file, before) = match opened {
            Ok(fm) => fm,
            Err(e) if beneath::is_symlink_refusal(&e) => {
                // Swapped for a symlink since the event: whatever was published goes.
                self.symlink_skipped(abs);
                return self.withdraw(staging, r, &key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.withdraw(staging, r, &key);
            }
            Err(e) => {
                let e = SnapshotError::Io(e);
                self.reload_error(e.reason(), abs, &e);
                return false;
            }
        };
        if !before.is_file() {
            return false;
        }
        // An unchanged file keeps its published version: no copy, same ETag.
        let stamp = Stamp::of(&before);
        let current = self.index.load();
        let known = staging.roots[r]
            .get(&map_key)
            .or_else(|| current.roots[r].get(&map_key))
            .filter(|e| e.stamp == stamp)
            .cloned();
        if let Some(e) = known {
            return staging.roots[r].insert(map_key, e).is_none();
        }
        match self.snapshots.take(&file, &before) {
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
            // The entry's own type (lstat): a symlink is skipped, never resolved.
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_symlink() {
                self.symlink_skipped(&abs);
            } else if ft.is_dir() {
                changed |= self.scan_dir(staging, r, &abs, depth + 1);
            } else if ft.is_file() {
                changed |= self.publish(staging, r, key, &abs);
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
impl Catalog {
    /// A catalog over `roots`, its published copies in `data`, counting into metrics of its
    /// own: not scanned yet (`start` or `rescan_all`).
    pub(crate) fn for_tests(
        roots: &[PathBuf],
        case_insensitive: bool,
        data: &Path,
    ) -> Arc<Catalog> {
        let m = Arc::new(Metrics::register(&mut Default::default()));
        Catalog::open(roots, case_insensitive, data, m).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(roots: &[PathBuf], ci: bool, data: &Path) -> Arc<Catalog> {
        let c = Catalog::for_tests(roots, ci, data);
        c.rescan_all();
        c
    }

    /// Write each `(name, contents)` below `dir`, making the folders on the way.
    fn files(dir: &Path, files: &[(&str, &str)]) {
        for (name, body) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
    }

    #[test]
    fn roots_form_one_namespace_in_order() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        files(
            t.path(),
            &[
                ("a/x.cfg", "from a"),
                ("b/x.cfg", "from b"),
                ("b/fw.bin", "fw"),
                ("a/sub/y.xml", "y"),
                ("a/.hidden", "h"),
                ("a/z.part", "p"),
            ],
        );
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
        files(&a, &[("SEP00562B043615.cnf.xml", "p")]);
        let c = catalog(&[a], true, &t.path().join("data"));
        assert!(c.lookup("/sep00562b043615.cnf.xml").is_ok());
        assert_eq!(
            c.lookup("/sep00562b043615.cnf.xml").unwrap().key,
            "SEP00562B043615.cnf.xml"
        );
    }

    #[test]
    fn symlinks_are_never_served_even_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        files(
            t.path(),
            &[
                ("secret", "s"),
                ("a/ok", "ok"),
                ("a/.hidden", "h"),
                ("a/sub/in.cfg", "in"),
            ],
        );
        std::os::unix::fs::symlink(t.path().join("secret"), a.join("leak")).unwrap();
        std::os::unix::fs::symlink(a.join("ok"), a.join("alias")).unwrap();
        std::os::unix::fs::symlink(".hidden", a.join("unhidden")).unwrap();
        std::os::unix::fs::symlink("sub", a.join("subalias")).unwrap();
        std::os::unix::fs::symlink(t.path(), a.join("up")).unwrap();
        let c = catalog(&[a], false, &t.path().join("data"));
        for name in ["leak", "alias", "unhidden", "subalias/in.cfg", "up/secret"] {
            assert_eq!(c.lookup(name).unwrap_err(), Refusal::NotFound, "{name}");
        }
        assert_eq!(&c.lookup("ok").unwrap().body[..], b"ok");
        assert_eq!(&c.lookup("sub/in.cfg").unwrap().body[..], b"in");
        assert_eq!(c.file_count(), 2);
    }

    /// A regular file and a symlink to a secret outside the root trade places (one atomic
    /// `renameat2(RENAME_EXCHANGE)`) over and over while both names are published: each
    /// publication must be the regular file's bytes or nothing, never the secret.
    #[test]
    fn symlink_swapped_in_during_publication_is_never_published() {
        use std::os::unix::ffi::OsStrExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        files(t.path(), &[("secret", "SECRET"), ("a/p.cfg", "public")]);
        std::os::unix::fs::symlink(t.path().join("secret"), a.join("swap.cfg")).unwrap();
        let c = catalog(std::slice::from_ref(&a), false, &t.path().join("data"));
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let x = std::ffi::CString::new(a.join("p.cfg").as_os_str().as_bytes()).unwrap();
            let y = std::ffi::CString::new(a.join("swap.cfg").as_os_str().as_bytes()).unwrap();
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                // Bounded even if the main loop never stops it.
                while !stop.load(Ordering::Relaxed) && swaps < 50_000_000 {
                    // SAFETY: renameat2 on two NUL-terminated paths in our temp dir.
                    let rc = unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            x.as_ptr(),
                            libc::AT_FDCWD,
                            y.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
                    swaps += 1;
                }
                swaps
            })
        };
        let mut published = 0;
        for round in 0..3000 {
            let mut staging = c.staging.lock().unwrap();
            for name in ["p.cfg", "swap.cfg"] {
                c.reconcile(&mut staging, &a.join(name));
            }
            c.swap(&staging);
            drop(staging);
            for name in ["p.cfg", "swap.cfg"] {
                if let Ok(e) = c.lookup(name) {
                    assert_ne!(
                        &e.body[..],
                        b"SECRET",
                        "round {round}: {name} published the secret"
                    );
                    assert_eq!(&e.body[..], b"public");
                    published += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(
            swaps > 0 && published > 0,
            "swaps {swaps}, published {published}"
        );
    }
}
