//! An I/O wrapper that fails a connection when it stops moving: no byte either way for the
//! idle timeout, or a write that has waited the write timeout for the peer to read. A
//! client that goes silent or stops reading cannot hold a connection slot forever.
//!
//! Progress only records the time (no timer is touched on the busy path); a timer is armed
//! when an operation has to wait, and each direction has its own, so a waiting read and a
//! waiting write in the same task (hyper polls both) never overwrite each other's deadline.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a connection may stand still.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// No byte read or written for this long: closed.
    pub idle: Duration,
    /// A write waiting this long without the peer taking a byte: closed.
    pub write: Duration,
}

pub struct Idle<T> {
    inner: T,
    timeouts: Timeouts,
    /// The last time a byte moved either way.
    last: Instant,
    /// Since when the current write has been waiting.
    write_since: Option<Instant>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Idle<T> {
    pub fn new(inner: T, timeouts: Timeouts) -> Self {
        Idle {
            inner,
            timeouts,
            last: Instant::now(),
            write_since: None,
            read_timer: None,
            write_timer: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

/// The wait of one direction: arm its timer for `deadline`; an error once that has passed.
fn wait<R>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
    what: &'static str,
) -> Poll<io::Result<R>> {
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if t.deadline() != deadline {
        t.as_mut().reset(deadline);
    }
    match t.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what))),
        Poll::Pending => Poll::Pending,
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = this.last + this.timeouts.idle;
                wait(&mut this.read_timer, deadline, cx, "idle timeout")
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Idle<T> {
    fn write_step<R>(
        &mut self,
        p: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        if p.is_ready() {
            self.write_since = None;
            self.last = Instant::now();
            return p;
        }
        let since = *self.write_since.get_or_insert_with(Instant::now);
        wait(
            &mut self.write_timer,
            since + self.timeouts.write,
            cx,
            "write timeout",
        )
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_step(p, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_step(p, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_step(p, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T: Timeouts = Timeouts {
        idle: Duration::from_millis(400),
        write: Duration::from_millis(150),
    };

    #[tokio::test]
    async fn a_silent_peer_is_cut_off_at_the_idle_timeout() {
        let (a, _b) = tokio::io::duplex(64);
        let mut a = Idle::new(a, T);
        let started = Instant::now();
        let e = a.read_u8().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= T.idle);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_off_at_the_write_timeout() {
        let (a, _b) = tokio::io::duplex(64);
        let mut a = Idle::new(a, T);
        let started = Instant::now();
        let e = a.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= T.write);
    }

    #[tokio::test]
    async fn bytes_moving_keep_a_connection_alive() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Idle::new(a, T);
        let writer = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(T.idle / 2).await;
                b.write_all(b"x").await.unwrap();
            }
        });
        for _ in 0..5 {
            assert_eq!(a.read_u8().await.unwrap(), b'x');
        }
        writer.await.unwrap();
    }
}
