//! UDP and TCP loops. They parse with hickory, hand each query to the [`Handler`] and
//! send what it encoded. Our own loops (rather than hickory's `Server`) so that every
//! dropped packet is counted with a reason, and so local answers are made in the receive
//! task with no task spawn or channel hop per query.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::MessageType;
use hickory_server::server::{Request, RequestHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;

use super::fastpath;
use super::handler::{Capture, Handler};
use crate::acceptor::{Acceptor, Idle};

/// Forwarded queries waiting for an upstream at once; more are dropped (and counted).
pub(super) const MAX_UPSTREAM_IN_FLIGHT: usize = 512;

/// Parse one query; `None` when it is dropped (counted with a reason).
fn parse(
    handler: &Handler,
    bytes: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Request> {
    let t = if protocol == Protocol::Udp {
        "udp"
    } else {
        "tcp"
    };
    let n = bytes.len();
    match Request::from_bytes(bytes, src, protocol) {
        Ok(r) if r.metadata.message_type == MessageType::Response => {
            // Never answer answers: that is how reflection loops start.
            handler.metrics.dropped(t, "not_a_query");
            tracing::debug!(%src, "dns: dropped a response sent to us");
            None
        }
        Ok(r) => Some(r),
        Err(e) => {
            let reason = if n < 12 { "short" } else { "malformed" };
            handler.metrics.dropped(t, reason);
            tracing::debug!(%src, bytes = n, error = %e, "dns: dropped a malformed packet");
            None
        }
    }
}

/// One of several receive tasks sharing a UDP socket.
pub(super) async fn serve_udp(
    socket: Arc<UdpSocket>,
    handler: Arc<Handler>,
    upstream_slots: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65535];
    loop {
        // `biased`: under load the packet is ready at once, and the shutdown future is then
        // never polled (polling it registers a waiter: a lock per packet).
        let (n, src) = tokio::select! {
            biased;
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: udp receive error");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        match answer_datagram(&handler, &buf[..n], src).await {
            Datagram::Replayed(bytes) => {
                send_udp(&socket, &handler, &bytes, src).await;
            }
            Datagram::Answered(bytes, learn) => {
                if send_udp(&socket, &handler, &bytes, src).await {
                    learn.fill(&bytes);
                }
            }
            Datagram::Upstream(request) => {
                let Ok(permit) = upstream_slots.clone().try_acquire_owned() else {
                    handler.metrics.dropped("udp", "upstream_busy");
                    continue;
                };
                let (socket, handler) = (socket.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Some(bytes) = answer(&handler, &request).await {
                        send_udp(&socket, &handler, &bytes, request.src()).await;
                    }
                    drop(permit);
                });
            }
            Datagram::Dropped => {}
        }
    }
}

/// What became of one datagram: the receive loop's whole decision for it, made without
/// socket I/O (so the fuzz target and property tests run this very code, via
/// [`super::offline`]).
pub(super) enum Datagram {
    /// Answered from the fast-path cache (counted): send it.
    Replayed(Vec<u8>),
    /// Answered by the handler in the receive task: send it, then `fill` the cache.
    Answered(Vec<u8>, Learn),
    /// For an upstream: answer it with [`answer`] off the receive task, under a slot.
    Upstream(Request),
    /// Dropped with a counted reason, or left unanswered by the handler.
    Dropped,
}

/// One UDP datagram from `src`, in the order the receive loop judges it: the source port,
/// the fast-path cache, hickory's parse, upstream or local, the handler's answer.
pub(super) async fn answer_datagram(handler: &Handler, bytes: &[u8], src: SocketAddr) -> Datagram {
    if src.port() == 0 {
        handler.metrics.dropped("udp", "bad_source");
        return Datagram::Dropped;
    }
    // `key` only answers for at least a header and a question, so the ID is there.
    let fast = fastpath::key(bytes, false);
    if let Some((key, _)) = &fast
        && let Some(r) = replay(handler, key, [bytes[0], bytes[1]], "udp")
    {
        return Datagram::Replayed(r);
    }
    let Some(request) = parse(handler, bytes.to_vec(), src, Protocol::Udp) else {
        return Datagram::Dropped;
    };
    if handler.goes_upstream(&request) {
        return Datagram::Upstream(request);
    }
    let learn = Learn::new(handler, fast);
    match answer(handler, &request).await {
        Some(bytes) => {
            let learn = learn.for_request(&request);
            Datagram::Answered(bytes, learn)
        }
        None => Datagram::Dropped,
    }
}

/// The handler's answer to one UDP query, encoded as it goes on the wire (EDNS size cap,
/// TC when cut); `None` when it made none.
pub(super) async fn answer(handler: &Handler, request: &Request) -> Option<Vec<u8>> {
    let cap = Capture::new(Protocol::Udp);
    handler
        .handle_request::<_, TokioTime>(request, cap.clone())
        .await;
    cap.take()
}

/// Send one UDP answer; a failure is counted. Whether it went.
async fn send_udp(socket: &UdpSocket, handler: &Handler, bytes: &[u8], dst: SocketAddr) -> bool {
    if let Err(e) = socket.send_to(bytes, dst).await {
        tracing::debug!(src = %dst, error = %e, "dns: udp send failed");
        handler.metrics.dropped("udp", "send_failed");
        return false;
    }
    true
}

/// A cached answer for this exact question, counted like any other.
fn replay(handler: &Handler, key: &[u8], id: [u8; 2], t: &'static str) -> Option<Vec<u8>> {
    let r = handler.data.load().cache.answer(key, id)?;
    handler
        .metrics
        .query(t, RecordType::from(r.qtype), ResponseCode::from(0, r.rcode));
    Some(r.bytes)
}

/// What is needed to remember an answer made by the normal path: the zone generation and
/// health epoch from before it was made, so an answer is never kept past either.
pub(super) struct Learn {
    key: Option<(Vec<u8>, u16)>,
    data: Arc<super::zone::ZoneData>,
    epoch: u64,
}

impl Learn {
    fn new(handler: &Handler, key: Option<(Vec<u8>, u16)>) -> Learn {
        Learn {
            key,
            epoch: fastpath::current_epoch(),
            data: handler.data.load_full(),
        }
    }

    /// Nothing to keep unless the request's question may be cached.
    fn for_request(mut self, request: &Request) -> Learn {
        if !request
            .queries
            .queries()
            .first()
            .is_some_and(|q| self.data.cacheable(q.name()))
        {
            self.key = None;
        }
        self
    }

    /// Keep `answer` for the fast path (when the question was cacheable).
    pub(super) fn fill(self, answer: &[u8]) {
        let Some((key, qtype)) = self.key else { return };
        self.data.cache.learn(key, qtype, answer, self.epoch);
    }

    fn keep(self, request: &Request, answer: &[u8]) {
        self.for_request(request).fill(answer);
    }
}

/// DNS over TCP on one listener, admitted by the shared acceptor (caps, timeouts).
pub(super) async fn serve_tcp(
    listener: TcpListener,
    acceptor: Acceptor,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let serve_shutdown = shutdown.clone();
    acceptor
        .run(&listener, shutdown, tracker, move |conn| {
            let (handler, shutdown) = (handler.clone(), serve_shutdown.clone());
            async move {
                let src = conn.peer;
                connection(conn.guarded(), src, &handler, &shutdown).await
            }
        })
        .await
}

/// RFC 7766: length-prefixed queries, several per connection, answered in order.
async fn connection(
    mut s: Idle<TcpStream>,
    src: SocketAddr,
    handler: &Handler,
    shutdown: &CancellationToken,
) {
    loop {
        let len = tokio::select! {
            biased;
            r = s.read_u16() => match r {
                Ok(l) => l as usize,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut buf = vec![0u8; len];
        match s.read_exact(&mut buf).await {
            Ok(_) => {}
            Err(_) => {
                handler.metrics.dropped("tcp", "incomplete");
                return;
            }
        }
        let fast = fastpath::key(&buf, true);
        let cached = fast
            .as_ref()
            .and_then(|(key, _)| replay(handler, key, [buf[0], buf[1]], "tcp"));
        let bytes = match cached {
            Some(b) => b,
            None => {
                // A connection that sent garbage is closed: its next bytes cannot be
                // trusted either.
                let learn = Learn::new(handler, fast);
                let Some(request) = parse(handler, buf, src, Protocol::Tcp) else {
                    return;
                };
                let cap = Capture::new(Protocol::Tcp);
                handler
                    .handle_request::<_, TokioTime>(&request, cap.clone())
                    .await;
                let Some(bytes) = cap.take() else { continue };
                learn.keep(&request, &bytes);
                bytes
            }
        };
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
        if let Err(e) = s.write_all(&out).await {
            // A client that stopped reading is cut off by the write timeout; counted, as
            // it holds a slot until then.
            if e.kind() == std::io::ErrorKind::TimedOut {
                handler.metrics.dropped("tcp", "write_timeout");
                tracing::debug!(%src, "dns: tcp client stopped reading, closed");
            }
            return;
        }
    }
}
