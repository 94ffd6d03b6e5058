//! Publishing one file: a private, immutable copy that no later write can tear.
//!
//! The source, already open (see `beneath`), is copied from that descriptor into a file
//! of our own, checked unchanged across the copy by `fstat` on the same descriptor, and
//! memory-mapped. The snapshot file is created exclusively (`O_EXCL`, mode 0600, so no
//! one else's file or symlink can stand in for it), unlinked at once and mapped from the
//! handle that created it. Readers hold the mapping (through `Bytes`) for as long as a
//! transfer needs it, so every transfer sees exactly one version, the page cache keeps
//! memory bounded, and a crash leaves nothing behind but what start-up clears.

use std::fs::{self, File, Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;

/// What identifies one written version of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub len: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    pub(super) fn of(m: &Metadata) -> Stamp {
        Stamp {
            len: m.len(),
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SnapshotError {
    #[error("changed while being copied (still being written?)")]
    Unstable,
    #[error("not a regular file")]
    NotFile,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl SnapshotError {
    pub(super) fn reason(&self) -> &'static str {
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

pub(super) struct Snapshot {
    pub body: Bytes,
    pub stamp: Stamp,
    pub modified: SystemTime,
}

pub(super) struct Snapshotter {
    dir: PathBuf,
    seq: AtomicU64,
}

impl Snapshotter {
    /// Prepare (and empty) the snapshot directory: leftovers of a crash are never served.
    pub(super) fn new(dir: PathBuf) -> std::io::Result<Snapshotter> {
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        for e in fs::read_dir(&dir)? {
            let _ = fs::remove_file(e?.path());
        }
        Ok(Snapshotter {
            dir,
            seq: AtomicU64::new(0),
        })
    }

    /// Copy the open file `src`, whose `fstat` before the copy was `before`.
    pub(super) fn take(&self, src: &File, before: &Metadata) -> Result<Snapshot, SnapshotError> {
        if !before.is_file() {
            return Err(SnapshotError::NotFile);
        }
        let stamp = Stamp::of(before);
        let dst = self
            .dir
            .join(format!("{}.snap", self.seq.fetch_add(1, Ordering::Relaxed)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dst)?;
        // The name is not needed past this point: the handle is the snapshot.
        let _ = fs::remove_file(&dst);
        // std's copy between files uses copy_file_range / sendfile: no user-space buffer.
        let n = std::io::copy(&mut &*src, &mut file)?;
        let after = src.metadata()?;
        if Stamp::of(&after) != stamp || n != stamp.len {
            return Err(SnapshotError::Unstable);
        }
        let body = if stamp.len == 0 {
            Bytes::new()
        } else {
            // SAFETY: the file is private to this process (created exclusively, its name
            // already unlinked, the directory ours), so nothing truncates or rewrites it
            // under the map.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            Bytes::from_owner(crate::zerocopy::Mapped::new(map, file))
        };
        Ok(Snapshot {
            body,
            stamp,
            modified: before.modified()?,
        })
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
        let f = File::open(&src).unwrap();
        let snap = s.take(&f, &f.metadata().unwrap()).unwrap();
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
        let empty = File::open(d.path().join("empty")).unwrap();
        let m = empty.metadata().unwrap();
        assert_eq!(s.take(&empty, &m).unwrap().body.len(), 0);
        let dir = File::open(d.path()).unwrap();
        let m = dir.metadata().unwrap();
        assert!(matches!(s.take(&dir, &m), Err(SnapshotError::NotFile)));
    }

    #[test]
    fn the_snapshot_name_is_never_reused_or_followed() {
        // Something already at the next snapshot name (a planted symlink) is an error, not
        // a file to write through.
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("src"), b"body").unwrap();
        fs::write(d.path().join("victim"), b"keep").unwrap();
        let s = Snapshotter::new(d.path().join("s")).unwrap();
        std::os::unix::fs::symlink(d.path().join("victim"), d.path().join("s/0.snap")).unwrap();
        let f = File::open(d.path().join("src")).unwrap();
        let m = f.metadata().unwrap();
        assert!(s.take(&f, &m).is_err());
        assert_eq!(fs::read(d.path().join("victim")).unwrap(), b"keep");
        let snap = s.take(&f, &m).unwrap();
        assert_eq!(&snap.body[..], b"body");
    }
}
