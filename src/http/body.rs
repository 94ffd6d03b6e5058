//! The response body every HTTP answer uses: sends a `Bytes` in bounded chunks, counts the
//! bytes and the in-flight gauge, and writes the access-log line when the response is done
//! (or abandoned), so the log shows what was really sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::metrics::{Metrics, OutcomeLabels, ProtoLabels, Protocol};

// Large enough that hyper hands the socket big writes; the mapping is not copied.
const CHUNK: usize = 4 << 20;

/// What the access log needs to know about one request.
pub struct Access {
    pub metrics: Arc<Metrics>,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub outcome: &'static str,
    pub user_agent: Option<String>,
    pub started: Instant,
    /// Told when the request is over (device status); `None` for admin answers.
    pub provisioner: Option<Arc<crate::devices::Provisioner>>,
    pub client_mac: Option<crate::devices::Mac>,
}

pub struct LoggedBody {
    data: Bytes,
    sent: u64,
    total: u64,
    access: Option<Access>,
    /// A body that arrives piece by piece (an event stream): sent as it comes, ended
    /// when the sender is dropped.
    stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl LoggedBody {
    /// A body sent as its pieces arrive on `rx` (no access-log line: admin answers).
    pub fn stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> LoggedBody {
        LoggedBody {
            data: Bytes::new(),
            sent: 0,
            total: 0,
            access: None,
            stream: Some(rx),
        }
    }

    pub fn new(data: Bytes, access: Option<Access>) -> LoggedBody {
        if let Some(a) = &access {
            a.metrics
                .in_flight
                .get_or_create(&ProtoLabels {
                    protocol: a.protocol,
                })
                .inc();
        }
        let total = data.len() as u64;
        LoggedBody {
            data,
            sent: 0,
            total,
            access,
            stream: None,
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            let Some(rx) = self.stream.as_mut() else {
                return Poll::Ready(None);
            };
            return match rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => {
                    self.sent += b.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(None) => {
                    self.stream = None;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        let n = self.data.len().min(CHUNK);
        let chunk = self.data.split_to(n);
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty() && self.stream.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.stream.is_some() {
            return SizeHint::default();
        }
        SizeHint::with_exact(self.data.len() as u64)
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let Some(a) = self.access.take() else { return };
        let m = &a.metrics;
        let proto = ProtoLabels {
            protocol: a.protocol,
        };
        m.in_flight.get_or_create(&proto).dec();
        m.sent_bytes.get_or_create(&proto).inc_by(self.sent);
        let secs = a.started.elapsed().as_secs_f64();
        m.duration.get_or_create(&proto).observe(secs);
        let outcome = if self.sent < self.total {
            "aborted"
        } else {
            a.outcome
        };
        m.requests
            .get_or_create(&OutcomeLabels {
                protocol: a.protocol,
                outcome,
            })
            .inc();
        if let Some(p) = &a.provisioner {
            p.transfer_done(&crate::devices::TransferDone {
                protocol: a.protocol,
                peer: a.peer,
                path: &a.path,
                user_agent: a.user_agent.as_deref(),
                client_mac: a.client_mac,
                bytes: self.sent,
                outcome,
            });
        }
        tracing::info!(
            target: "access",
            protocol = a.protocol.as_str(),
            peer = %a.peer,
            method = %a.method,
            path = %a.path,
            status = a.status,
            bytes = self.sent,
            ms = (secs * 1000.0).round() as u64,
            ua = a.user_agent.as_deref().unwrap_or("-"),
            outcome,
            "access"
        );
    }
}
