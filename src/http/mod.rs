//! HTTP and HTTPS front ends (hyper), and the admin listener for metrics and health.
//!
//! Connections come from the one TCP acceptor (`crate::acceptor`), plain and TLS alike;
//! a TLS door is a handshake step on the admitted connection, after which everything is
//! the same `serve`. Requests go to a [`Handler`]: the file handler asks the device layer for
//! bytes, the admin handler exposes the metrics registry.

mod body;
pub mod files;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use body::Access;
pub use body::LoggedBody;

use crate::acceptor::{Acceptor, Conn};
use crate::catalog::Refusal;
use crate::confkit::HttpLimits;
use crate::devices::{ClientIdentity, FetchRequest, Provisioner};
use crate::metrics::{Metrics, Protocol, TlsFailLabels, TlsHandshakeLabels};
use crate::tls;

/// What is known about the connection a request arrived on.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The address the connection reached.
    pub local: Option<SocketAddr>,
    pub client: Option<ClientIdentity>,
}

/// An answer that needs the request body read first.
pub type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Response<LoggedBody>> + Send>>;

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<LoggedBody>;

    /// Whether `req` is answered by [`Handler::handle_body`] instead (an upload, an API
    /// call: anything that reads its body or awaits).
    fn takes_body(&self, _req: &Request<Incoming>) -> bool {
        false
    }

    /// The answer to a request whose body must be read first.
    fn handle_body(self: Arc<Self>, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Pending {
        let r = self.handle(req, &conn);
        Box::pin(std::future::ready(r))
    }
}

/// Serves catalog files to phones.
pub struct FileHandler {
    pub provisioner: Arc<Provisioner>,
    pub metrics: Arc<Metrics>,
    pub protocol: Protocol,
    /// Where PUT and POST go (`uploads:`), when enabled.
    pub uploads: Option<Arc<crate::uploads::Uploads>>,
}

fn simple(status: StatusCode, access: Option<Access>) -> Response<LoggedBody> {
    let mut r = Response::new(LoggedBody::new(Bytes::new(), access));
    *r.status_mut() = status;
    r
}

/// What a request's access line is made of, read as it arrives.
struct Arrival {
    started: Instant,
    method: Method,
    raw_path: String,
    user_agent: Option<String>,
}

impl Arrival {
    fn of(req: &Request<Incoming>) -> Arrival {
        Arrival {
            started: Instant::now(),
            method: req.method().clone(),
            raw_path: req.uri().path().to_string(),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }
}

impl FileHandler {
    /// The access line of an answer: `path` as the logs show it; the device layer is told
    /// of the outcome when `tell` (not when it was already told).
    fn access(
        &self,
        conn: &ConnInfo,
        a: &Arrival,
        path: String,
        status: StatusCode,
        outcome: &'static str,
        tell: bool,
    ) -> Access {
        Access {
            metrics: self.metrics.clone(),
            protocol: self.protocol,
            peer: conn.peer,
            method: a.method.to_string(),
            path,
            status: status.as_u16(),
            outcome,
            user_agent: a.user_agent.clone(),
            started: a.started,
            provisioner: tell.then(|| self.provisioner.clone()),
            client_mac: conn.client.as_ref().and_then(|c| c.mac),
        }
    }

    /// What the device layer is asked for `path` (decoded), with the request's facts.
    fn fetch_request<'a>(
        &self,
        conn: &'a ConnInfo,
        a: &'a Arrival,
        path: &'a str,
        req: &'a Request<Incoming>,
    ) -> FetchRequest<'a> {
        FetchRequest {
            protocol: self.protocol,
            peer: conn.peer,
            local: conn.local,
            path,
            user_agent: a.user_agent.as_deref(),
            client: conn.client.as_ref(),
            http: Some(crate::devices::pipeline::httpauth::HttpFacts::of(req)),
        }
    }

    /// A 401's `WWW-Authenticate` challenges (`stale`: the nonce ran out, not the password).
    fn challenge(&self, r: &mut Response<LoggedBody>, stale: bool) {
        for c in self.provisioner.http_auth_challenges(stale) {
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(header::WWW_AUTHENTICATE, v);
            }
        }
    }
}

impl Handler for FileHandler {
    fn takes_body(&self, req: &Request<Incoming>) -> bool {
        matches!(*req.method(), Method::PUT | Method::POST)
            && (self.uploads.is_some() || self.provisioner.report_mac(req.uri().path()).is_some())
    }

    fn handle_body(self: Arc<Self>, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Pending {
        // A configuration report is not an upload: it is compared, not stored.
        if self.provisioner.report_mac(req.uri().path()).is_some() {
            return Box::pin(async move { self.report(req, &conn).await });
        }
        Box::pin(async move { self.upload(req, &conn).await })
    }

    fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<LoggedBody> {
        let a = Arrival::of(&req);
        let method = &a.method;
        // What logs show: a PIN in the path is masked, once, here.
        let shown_path = self.provisioner.log_path(&a.raw_path).into_owned();
        let access = |status: StatusCode, outcome: &'static str| {
            self.access(conn, &a, shown_path.clone(), status, outcome, true)
        };
        if *method != Method::GET && *method != Method::HEAD {
            self.metrics.refused(self.protocol, "method");
            let mut r = simple(
                StatusCode::METHOD_NOT_ALLOWED,
                Some(access(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let decoded = percent_encoding::percent_decode_str(&a.raw_path).decode_utf8();
        let fetched = match &decoded {
            Ok(p) => self
                .provisioner
                .fetch(&self.fetch_request(conn, &a, p, &req)),
            Err(_) => Err(Refusal::BadPath(crate::catalog::PathRefusal::Invalid)),
        };
        let entry = match fetched {
            Ok(e) => e,
            Err(refusal) => {
                self.metrics.refused(self.protocol, refusal.reason());
                let (status, outcome) = match refusal {
                    Refusal::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                    Refusal::BadPath(crate::catalog::PathRefusal::Invalid) => {
                        (StatusCode::BAD_REQUEST, "bad_request")
                    }
                    Refusal::BadPath(crate::catalog::PathRefusal::TooLong) => {
                        (StatusCode::URI_TOO_LONG, "uri_too_long")
                    }
                    // The shared store is unreachable (PIN binding): try again later.
                    Refusal::Forbidden("store_error") => {
                        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
                    }
                    Refusal::BadPath(_) | Refusal::Forbidden(_) => {
                        (StatusCode::FORBIDDEN, "forbidden")
                    }
                    Refusal::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
                };
                tracing::debug!(peer = %conn.peer, path = %shown_path, reason = refusal.reason(), "refused");
                let mut r = simple(status, Some(access(status, outcome)));
                if let Refusal::Unauthorized { stale } = refusal {
                    self.challenge(&mut r, stale);
                }
                return r;
            }
        };
        let plan = files::plan(method, req.headers(), &entry);
        let status = files::status_of(&plan);
        let len = entry.body.len() as u64;
        let (body, outcome) = match plan {
            files::Plan::Full => (entry.body.clone(), "ok"),
            files::Plan::Partial(a, b) => (entry.body.slice(a as usize..=b as usize), "partial"),
            files::Plan::NotModified => (Bytes::new(), "not_modified"),
            files::Plan::Unsatisfiable => (Bytes::new(), "range_not_satisfiable"),
        };
        let body_len = body.len();
        let send = if *method == Method::HEAD {
            Bytes::new()
        } else {
            body
        };
        let mut r = Response::new(LoggedBody::new(send, Some(access(status, outcome))));
        *r.status_mut() = status;
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&entry.etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(entry.modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        match status {
            StatusCode::NOT_MODIFIED => {}
            StatusCode::RANGE_NOT_SATISFIABLE => {
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
                );
            }
            _ => {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(files::content_type(&entry.key)),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
                if let files::Plan::Partial(a, b) = plan {
                    h.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).unwrap(),
                    );
                }
            }
        }
        r
    }
}

/// The largest configuration report taken (a full Cisco report is some 100 KiB).
const MAX_REPORT: usize = 1024 * 1024;

impl FileHandler {
    /// POST or PUT of a configuration report at `devices.reports.path`, from the proven
    /// device the path names: compared with what it was served ([`crate::devices::verify`]).
    async fn report(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<LoggedBody> {
        use http_body_util::BodyExt as _;
        let a = Arrival::of(&req);
        let proven = self
            .provisioner
            .proven(&self.fetch_request(conn, &a, &a.raw_path, &req));
        let named = self.provisioner.report_mac(&a.raw_path);
        // A 401's challenge: stale or not.
        let mut challenge = None;
        let (status, outcome, text) = match proven {
            Err(Refusal::Unauthorized { stale }) => {
                challenge = Some(stale);
                (StatusCode::UNAUTHORIZED, "unauthorized", None)
            }
            Err(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            Ok(m) if Some(m) != named => (StatusCode::FORBIDDEN, "forbidden", None),
            Ok(mac) => {
                let limited = http_body_util::Limited::new(req.into_body(), MAX_REPORT);
                match limited.collect().await {
                    Ok(b) => {
                        let v = self.provisioner.verify_report(mac, "cisco", &b.to_bytes());
                        (StatusCode::OK, "report", Some(v.summary() + "\n"))
                    }
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "too_large", None)
                    }
                    Err(_) => (StatusCode::BAD_REQUEST, "aborted", None),
                }
            }
        };
        if status != StatusCode::OK {
            self.metrics.refused(self.protocol, outcome);
        }
        let access = self.access(conn, &a, a.raw_path.clone(), status, outcome, true);
        let body = match (status, &text) {
            (StatusCode::OK, Some(t)) => Bytes::from(t.clone()),
            _ => Bytes::new(),
        };
        let mut r = Response::new(LoggedBody::new(body, Some(access)));
        *r.status_mut() = status;
        if let Some(stale) = challenge {
            self.challenge(&mut r, stale);
        }
        r
    }
}

impl FileHandler {
    /// PUT or POST: a phone writing back ([`crate::uploads`]).
    async fn upload(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<LoggedBody> {
        let Some(up) = &self.uploads else {
            return simple(StatusCode::METHOD_NOT_ALLOWED, None);
        };
        let a = Arrival::of(&req);
        let from = crate::uploads::http::Sender {
            protocol: self.protocol,
            peer: conn.peer,
            local: conn.local,
            client: conn.client.as_ref(),
        };
        let result = crate::uploads::http::receive(up, &self.provisioner, req, from).await;
        let (status, outcome) = crate::uploads::http::status(&result);
        match &result {
            Err(crate::uploads::Refused::NotUpload) => {
                self.metrics.refused(self.protocol, "method")
            }
            Err(e) => self.metrics.refused(self.protocol, e.reason()),
            Ok(_) => {}
        }
        let path = self.provisioner.log_path(&a.raw_path).into_owned();
        // The upload told the device layer itself, before its timeline note.
        let access = self.access(conn, &a, path, status, outcome, false);
        let mut r = simple(status, Some(access));
        if let Err(crate::uploads::Refused::Unauthorized { stale }) = &result {
            self.challenge(&mut r, *stale);
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        r
    }
}

/// `/metrics`, `/healthz`, `/readyz` on their own listener.
pub struct AdminHandler {
    pub registry: Arc<Registry>,
    /// Whether every service loop runs (`/readyz`).
    pub ready: Arc<crate::supervisor::Supervisor>,
}

impl Handler for AdminHandler {
    fn handle(&self, req: Request<Incoming>, _conn: &ConnInfo) -> Response<LoggedBody> {
        let (status, ctype, body) = match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let accept = req.headers().get(header::ACCEPT);
                let accept = accept.and_then(|v| v.to_str().ok());
                let (ctype, body) = crate::metrics::exposition(&self.registry, accept);
                (StatusCode::OK, ctype, body)
            }
            (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            (&Method::GET, "/readyz") => match self.ready.health() {
                // Still serving files, so still ready; but say what does not work.
                Ok(()) if crate::store::shared().is_some_and(|s| !s.is_up()) => (
                    StatusCode::OK,
                    "text/plain",
                    "degraded: store: PostgreSQL unreachable (no new DHCP leases, no PIN binding)\n"
                        .to_string(),
                ),
                Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_string()),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", why + "\n"),
            },
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        };
        let mut r = Response::new(LoggedBody::new(Bytes::from(body), None));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        r
    }
}

/// The TLS front door of a listener: only the handshake differs, everything after it
/// (request handling, identity, metrics) is the same `serve`.
pub enum TlsDoor {
    /// The default: rustls, modern protocol versions and suites only.
    Rustls(Arc<tls::Reloading>),
    /// The `https_legacy` listener: OpenSSL, for phones that only speak TLS 1.0/CBC/RSA.
    #[cfg(feature = "legacy-tls")]
    OpenSsl(Arc<dyn Handshaker>),
}

/// A byte stream both ways (what a door hands back after its handshake).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A stream after a handshake some door did itself.
pub type TlsStream = Box<dyn Stream>;

pub type HandshakeFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<(TlsStream, Handshake), HandshakeError>>
            + Send
            + 'a,
    >,
>;

/// A TLS door on a library http does not link itself: the OpenSSL door of `tls_legacy`,
/// for old phones. A trait so http, below the front ends, does not name that front end.
pub trait Handshaker: Send + Sync {
    fn handshake(&self, io: crate::acceptor::Idle<tokio::net::TcpStream>) -> HandshakeFuture<'_>;
}

/// What a finished handshake says, for metrics and the request's identity.
pub struct Handshake {
    pub version: &'static str,
    pub cipher: String,
    pub client: Option<ClientIdentity>,
}

/// A handshake that did not complete, with the reason label it is counted under.
#[derive(Debug)]
pub struct HandshakeError {
    pub reason: &'static str,
    pub detail: String,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Everything one listener needs.
pub struct Listener {
    pub socket: TcpListener,
    pub name: String,
    pub tls: Option<TlsDoor>,
    pub limits: HttpLimits,
    pub protocol: Protocol,
    pub handler: Arc<dyn Handler>,
    pub metrics: Arc<Metrics>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::NoCertificatesPresented) => "no_client_cert",
        Some(E::InvalidCertificate(_)) => "bad_client_cert",
        Some(E::PeerIncompatible(_)) => "incompatible",
        Some(E::AlertReceived(_)) => "alert_received",
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. }) => "protocol",
        Some(E::InappropriateHandshakeMessage { .. }) => "protocol",
        Some(_) => "other",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "eof",
        None => "io",
    }
}

/// What a plain HTTP client refused by a cap reads before the connection closes.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n";

impl Listener {
    /// Accept until shutdown; each connection runs on `tracker` so shutdown can wait.
    pub async fn run(self, shutdown: CancellationToken, tracker: TaskTracker) {
        let mut acceptor = Acceptor::new(
            self.name.clone(),
            self.limits.accept(),
            self.metrics.connections_refused.clone(),
        );
        if self.tls.is_none() {
            acceptor = acceptor.refuse_with(BUSY);
        }
        let this = Arc::new(self);
        let me = this.clone();
        let serve_shutdown = shutdown.clone();
        acceptor
            .run(&me.socket, shutdown, tracker, move |conn| {
                let (this, shutdown) = (this.clone(), serve_shutdown.clone());
                async move { this.connection(conn, shutdown).await }
            })
            .await
    }

    async fn connection(&self, conn: Conn, shutdown: CancellationToken) {
        let peer = conn.peer;
        let local = conn.tcp.local_addr().ok();
        match &self.tls {
            None => {
                let io = conn.guarded_as(crate::zerocopy::SendfileStream);
                self.serve(
                    io,
                    ConnInfo {
                        peer,
                        local,
                        client: None,
                    },
                    shutdown,
                )
                .await
            }
            Some(TlsDoor::Rustls(tls)) => {
                let io = conn.guarded();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return self.handshake_failed(peer, tls_failure_reason(&e), &e),
                    Err(_) => {
                        return self.handshake_failed(peer, "timeout", &"no handshake in 10s");
                    }
                };
                let c = stream.get_ref().1;
                let version = match c.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    _ => "other",
                };
                // IANA names, as OpenSSL's standard_name() gives them on the legacy door.
                let cipher = c
                    .negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str())
                    .map_or_else(|| "other".into(), |n| n.replacen("TLS13_", "TLS_", 1));
                let client = c
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(tls::client_identity);
                self.handshake_done(peer, version, cipher, client.as_ref());
                self.serve(
                    stream,
                    ConnInfo {
                        peer,
                        local,
                        client,
                    },
                    shutdown,
                )
                .await
            }
            #[cfg(feature = "legacy-tls")]
            Some(TlsDoor::OpenSsl(door)) => {
                let io = conn.guarded();
                let (stream, hs) =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, door.handshake(io)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return self.handshake_failed(peer, e.reason, &e),
                        Err(_) => {
                            return self.handshake_failed(peer, "timeout", &"no handshake in 10s");
                        }
                    };
                self.handshake_done(peer, hs.version, hs.cipher, hs.client.as_ref());
                let conn = ConnInfo {
                    peer,
                    local,
                    client: hs.client,
                };
                self.serve(stream, conn, shutdown).await
            }
        }
    }

    fn handshake_done(
        &self,
        peer: SocketAddr,
        version: &'static str,
        cipher: String,
        client: Option<&ClientIdentity>,
    ) {
        tracing::debug!(listener = %self.name, %peer, version, %cipher, "TLS handshake");
        if let Some(c) = client {
            tracing::debug!(%peer, subject = %c.subject, "client certificate verified");
        }
        self.metrics
            .tls_handshakes
            .get_or_create(&TlsHandshakeLabels {
                listener: self.name.clone(),
                version,
                cipher,
            })
            .inc();
    }

    fn handshake_failed(&self, peer: SocketAddr, reason: &'static str, e: &dyn std::fmt::Display) {
        tracing::info!(listener = %self.name, %peer, reason, "TLS handshake failed: {e}");
        self.metrics
            .tls_handshake_failures
            .get_or_create(&TlsFailLabels {
                listener: self.name.clone(),
                reason,
            })
            .inc();
    }

    async fn serve<IO>(&self, io: IO, conn: ConnInfo, shutdown: CancellationToken)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let conn = Arc::new(conn);
        let service = hyper::service::service_fn(move |req| {
            let r = if handler.takes_body(&req) {
                futures_util::future::Either::Left(handler.clone().handle_body(req, conn.clone()))
            } else {
                futures_util::future::Either::Right(std::future::ready(handler.handle(req, &conn)))
            };
            async move { Ok::<_, Infallible>(r.await) }
        });
        let http = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout.0)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(http);
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r { tracing::debug!("connection ended: {e}"); }
            }
            _ = shutdown.cancelled() => {
                // Finish the response in flight, then close.
                http.as_mut().graceful_shutdown();
                let _ = http.await;
            }
        }
    }
}
