//! Publishing one file: a private, immutable copy that no later write can tear.
//!
//! The source is copied into the data directory, checked to be unchanged across the copy,
//! memory-mapped and unlinked at once. Readers hold the mapping (through `Bytes`) for as
//! long as a transfer needs it, so every transfer sees exactly one version, the page cache
//! keeps memory bounded, and a crash leaves nothing behind but what start-up clears.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;

/// What identifies one written version of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    pub fn of(m: &Metadata) -> Stamp {
        Stamp {
            len: m.len(),
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("changed while being copied (still being written?)")]
    Unstable,
    #[error("not a regular file")]
    NotFile,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl SnapshotError {
    pub fn reason(&self) -> &'static str {
        match self {
            SnapshotError::Unstable => "unstable",
            SnapshotError::NotFile => "not_file",
            SnapshotError::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                "permission"
            }
            SnapshotError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => "vanished",
            SnapshotError::Io(_) => "io",
        }
    }
}

pub struct Snapshot {
    pub body: Bytes,
    pub stamp: Stamp,
    pub modified: SystemTime,
}

pub struct Snapshotter {
    dir: PathBuf,
    seq: AtomicU64,
}

impl Snapshotter {
    /// Prepare (and empty) the snapshot directory: leftovers of a crash are never served.
    pub fn new(dir: PathBuf) -> std::io::Result<Snapshotter> {
        fs::create_dir_all(&dir)?;
        for e in fs::read_dir(&dir)? {
            let _ = fs::remove_file(e?.path());
        }
        Ok(Snapshotter {
            dir,
            seq: AtomicU64::new(0),
        })
    }

    pub fn take(&self, src: &Path) -> Result<Snapshot, SnapshotError> {
        let before = fs::metadata(src)?;
        if !before.is_file() {
            return Err(SnapshotError::NotFile);
        }
        let stamp = Stamp::of(&before);
        let dst = self
            .dir
            .join(format!("{}.snap", self.seq.fetch_add(1, Ordering::Relaxed)));
        let copied = fs::copy(src, &dst);
        let result = (|| {
            let n = copied?;
            let after = fs::metadata(src)?;
            if Stamp::of(&after) != stamp || n != stamp.len {
                return Err(SnapshotError::Unstable);
            }
            let file = File::open(&dst)?;
            let body = if stamp.len == 0 {
                Bytes::new()
            } else {
                // SAFETY: the file is private to this process (its name is unlinked below and
                // the directory is ours), so nothing truncates or rewrites it under the map.
                let map = unsafe { memmap2::Mmap::map(&file)? };
                Bytes::from_owner(crate::zerocopy::Mapped::new(map, file))
            };
            Ok(Snapshot {
                body,
                stamp,
                modified: before.modified()?,
            })
        })();
        let _ = fs::remove_file(&dst);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_survives_source_rewrite_and_leaves_no_file() {
        let src_dir = tempfile::tempdir().unwrap();
        let snap_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("fw.bin");
        fs::write(&src, vec![1u8; 100_000]).unwrap();
        let s = Snapshotter::new(snap_dir.path().join("s")).unwrap();
        let snap = s.take(&src).unwrap();
        fs::write(&src, vec![2u8; 50]).unwrap();
        assert_eq!(snap.body.len(), 100_000);
        assert!(snap.body.iter().all(|&b| b == 1));
        assert_eq!(fs::read_dir(snap_dir.path().join("s")).unwrap().count(), 0);
    }

    #[test]
    fn empty_file_and_directory() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("empty"), b"").unwrap();
        let s = Snapshotter::new(d.path().join("s")).unwrap();
        assert_eq!(s.take(&d.path().join("empty")).unwrap().body.len(), 0);
        assert!(matches!(s.take(d.path()), Err(SnapshotError::NotFile)));
    }
}
