//! Opening a file inside a root without following any symlink, so what is published is
//! the regular file at that path beneath the root and nothing else: no symlink (inside or
//! out), no directory swapped for a symlink between a check and the open.
//!
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` does it in one call (Linux 5.6). Where
//! it is missing (ENOSYS) or filtered by a seccomp policy (EPERM), each component is
//! opened in turn with `O_NOFOLLOW` relative to the previous one, which refuses the same.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// `struct open_how` (linux/openat2.h); libc's is `non_exhaustive`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// Set once openat2 turned out to be unavailable, so later opens go straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Flags for the file itself: read-only, and non-blocking so a FIFO put in a root cannot
/// hang the watcher in `open` (regular files ignore it).
const FILE_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;

/// Open a root directory; files are then opened relative to it.
pub(super) fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: plain open(2) of a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `rel` (slash-separated, no `.`/`..`/empty components) beneath `root`.
/// A symlink anywhere on the way fails with ELOOP (or EXDEV/ENOTDIR).
pub(super) fn open(root: &OwnedFd, rel: &str) -> io::Result<File> {
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain relative path",
        ));
    }
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2(root.as_raw_fd(), rel) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    walk(root, rel)
}

/// Whether an open failed because a symlink was in the way.
pub(super) fn is_symlink_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR)
    )
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn openat2(dir: RawFd, rel: &str) -> io::Result<File> {
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: FILE_FLAGS as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: openat2(2) with a valid dir fd, a NUL-terminated path and a correctly sized
    // open_how; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd from the kernel, owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd as RawFd) })
}

/// The fallback: one `openat(O_NOFOLLOW)` per component.
fn walk(root: &OwnedFd, rel: &str) -> io::Result<File> {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut dir: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let c = cstr(part)?;
        let last = i + 1 == parts.len();
        let flags = if last {
            FILE_FLAGS | libc::O_NOFOLLOW
        } else {
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
        };
        let at = dir.as_ref().unwrap_or(root).as_raw_fd();
        // SAFETY: openat(2) relative to a dir fd we hold, NUL-terminated name.
        let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd from the kernel, owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if last {
            return Ok(File::from(owned));
        }
        dir = Some(owned);
    }
    unreachable!("a non-empty path has a last component")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(f: io::Result<File>) -> io::Result<String> {
        let mut s = String::new();
        f?.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn symlinks_anywhere_on_the_way_are_refused_by_both_methods() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.cfg"), "a").unwrap();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("sub/a.cfg", root.join("in")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("subdir")).unwrap();
        std::os::unix::fs::symlink(t.path(), root.join("up")).unwrap();
        let fd = open_root(&root).unwrap();
        for (name, how) in [
            ("openat2", openat2 as fn(RawFd, &str) -> io::Result<File>),
            ("walk", |d, r| {
                // SAFETY: borrowing the test's own root fd for the call only.
                let owned = unsafe { OwnedFd::from_raw_fd(libc::dup(d)) };
                walk(&owned, r)
            }),
        ] {
            let open = |rel: &str| how(fd.as_raw_fd(), rel);
            if name == "openat2"
                && matches!(
                    open("sub/a.cfg").map_err(|e| e.raw_os_error()),
                    Err(Some(libc::ENOSYS | libc::EPERM))
                )
            {
                continue;
            }
            assert_eq!(read(open("sub/a.cfg")).unwrap(), "a", "{name}");
            for bad in ["out", "in", "subdir/a.cfg", "up/secret"] {
                let e = read(open(bad)).unwrap_err();
                assert!(is_symlink_refusal(&e), "{name} {bad}: {e}");
            }
        }
        assert!(open(&fd, "../secret").is_err());
        assert!(open(&fd, "/etc/hostname").is_err());
        assert_eq!(read(open(&fd, "sub/a.cfg")).unwrap(), "a");
    }
}
