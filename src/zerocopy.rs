//! Zero-copy sending of published files over plain TCP.
//!
//! hyper writes response bodies with `writev`, copying every byte from our memory map into
//! the socket; nginx uses `sendfile`, which does not. The catalog's snapshots are
//! immutable files mapped into memory, so a body slice handed to the socket can be
//! recognised as "bytes `off..off+len` of snapshot file F" and sent with `sendfile(2)`
//! instead. [`Mapped`] registers each mapping; [`SendfileStream`] is the TCP wrapper that
//! looks slices up. TLS cannot use it (bytes are encrypted in user space).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// start address → (length, fd) of every live snapshot mapping.
static REGIONS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());

/// Below this, a plain write is cheaper than the lookup and the extra syscall.
const MIN_SENDFILE: usize = 64 * 1024;

/// A read-only mapping of a snapshot file, kept with its file so the bytes can also be sent
/// by file offset. Used as the owner of the `Bytes` an `Entry` holds.
pub(crate) struct Mapped {
    map: memmap2::Mmap,
    file: File,
}

impl Mapped {
    pub(crate) fn new(map: memmap2::Mmap, file: File) -> Mapped {
        let m = Mapped { map, file };
        REGIONS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.map.as_ptr() as usize, (m.map.len(), m.file.as_raw_fd()));
        m
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Unregistered before the file closes, so no writer can see a stale fd.
        REGIONS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.map.as_ptr() as usize));
    }
}

/// The file and offset behind `slice`, if it lies wholly inside one snapshot mapping.
/// The caller must keep the slice's owner alive while it uses the fd (hyper does: it holds
/// the `Bytes` until the write returns).
fn locate(slice: &[u8]) -> Option<(RawFd, u64)> {
    locate_range(slice.as_ptr() as usize, slice.len())
}

fn locate_range(p: usize, len: usize) -> Option<(RawFd, u64)> {
    let slice_len = len;
    let regions = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let (&start, &(len, fd)) = regions.range(..=p).next_back()?;
    (p + slice_len <= start + len).then_some((fd, (p - start) as u64))
}

/// A TCP stream that sends snapshot-backed slices with `sendfile(2)`.
pub(crate) struct SendfileStream(pub TcpStream);

impl SendfileStream {
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        fd: RawFd,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        self.poll_syscall(cx, || {
            let mut off = offset as libc::off_t;
            // SAFETY: both fds are open (see `locate`); `off` is a valid pointer.
            unsafe { libc::sendfile(self.0.as_raw_fd(), fd, &mut off, len) }
        })
    }

    /// Runs one non-blocking write syscall (a byte count or -1) when the socket is writable,
    /// again after a spurious readiness.
    fn poll_syscall(
        &self,
        cx: &mut Context<'_>,
        mut call: impl FnMut() -> isize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let r = self.0.try_io(Interest::WRITABLE, || {
                let n = call();
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_send_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_syscall(cx, || {
            // SAFETY: a zeroed msghdr is valid; the iovecs outlive the call (IoSlice is
            // ABI-compatible with iovec).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            let flags = libc::MSG_MORE | libc::MSG_NOSIGNAL;
            // SAFETY: the fd is open for the life of `self`; `msg` points at live iovecs.
            unsafe { libc::sendmsg(self.0.as_raw_fd(), &msg, flags) }
        })
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let big = bufs
            .iter()
            .position(|b| b.len() >= MIN_SENDFILE && locate(b).is_some());
        match big {
            // Headers and small pieces first, the mapped slice on the next call. MSG_MORE
            // keeps them queued until the sendfile that follows, so the headers ride in the
            // body's first segment instead of a packet (and a wakeup) of their own, as
            // nginx's TCP_CORK does.
            Some(i) if i > 0 => this.poll_send_more(cx, &bufs[..i]),
            Some(_) => match locate(&bufs[0]) {
                Some((fd, off)) => this.poll_sendfile(cx, fd, off, bufs[0].len()),
                None => Pin::new(&mut this.0).poll_write_vectored(cx, bufs),
            },
            None => Pin::new(&mut this.0).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn slices_of_a_mapping_are_located() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 200_000]).unwrap();
        let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
        let bytes = bytes::Bytes::from_owner(Mapped::new(map, f));
        let slice = bytes.slice(1000..150_000);
        let (_, off) = locate(&slice).unwrap();
        assert_eq!(off, 1000);
        assert!(locate(&[1u8; 10]).is_none());
        // A slice running past the end of its mapping is not sent from the file.
        assert!(locate_range(bytes.as_ptr() as usize, 200_001).is_none());
        assert!(locate_range(bytes.as_ptr() as usize, 200_000).is_some());
    }
}
