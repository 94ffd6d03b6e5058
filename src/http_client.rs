//! The one outbound HTTP client: DNS health checks, the phones' web resync command and the
//! CLI's calls to the dashboard API all GET through it; hooks' webhooks POST through it.
//!
//! hyper's HTTP/1 client on one connection per request (`Connection: close`), rustls for
//! `https://`, a deadline over the whole exchange and a cap on the body it reads. URLs are
//! read by one parser, [`Target::parse`], which keeps IPv6 literals whole
//! (`http://[fe80::1]:8080/x`) and refuses a port it cannot read rather than guess one.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Where the system keeps its trusted CAs (Debian, Ubuntu, Alpine, Arch).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A URL as the client dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub scheme: Scheme,
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path_and_query: String,
}

impl Target {
    /// `http[s]://host[:port][/path][?query]`. No credentials in the URL, no fragment.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let example = "expected e.g. http://prov.lab.test:8080/healthz or http://[fe80::1]/x";
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL ({e}); {example}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return Err(format!(
                    "`{url}` is not an http:// or https:// URL; {example}"
                ));
            }
        };
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .ok_or_else(|| format!("`{url}` has no host; {example}"))?;
        if authority.contains('@') {
            return Err(format!(
                "`{url}` carries credentials in the URL; expected them in their own setting"
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => {
                let (h, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("`{url}` has an unclosed `[`; {example}"))?;
                h.parse::<Ipv6Addr>()
                    .map_err(|_| format!("`{url}`: `{h}` is not an IPv6 address; {example}"))?;
                let port =
                    match after {
                        "" => None,
                        p => Some(p.strip_prefix(':').ok_or_else(|| {
                            format!("`{url}` has text after `]`; expected `:port`")
                        })?),
                    };
                (h, port)
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host; {example}"));
        }
        let port = match port {
            None | Some("") => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{url}` has a bad port `{p}`; expected 1-65535"))?,
        };
        let path_and_query = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_string(),
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => format!("/{p}"),
        };
        Ok(Target {
            scheme,
            host: host.to_string(),
            port,
            path_and_query,
        })
    }

    /// The host as a URL writes it: an IPv6 address in brackets.
    pub(crate) fn host_in_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub(crate) fn host_header(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host_in_url()
        } else {
            format!("{}:{}", self.host_in_url(), self.port)
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host_in_url(),
            self.port,
            self.path_and_query
        )
    }
}

/// One GET to send.
#[derive(Debug, Clone)]
pub(crate) struct Get {
    pub target: Target,
    /// Dial this address instead of resolving the host (a health check dials the address
    /// it checks; a resync dials the phone's proven address). The `Host` header and TLS
    /// name still come from the URL.
    pub connect_to: Option<SocketAddr>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Get {
    pub(crate) fn new(target: Target) -> Get {
        Get {
            target,
            connect_to: None,
            headers: Vec::new(),
        }
    }

    pub(crate) fn connect_to(mut self, addr: SocketAddr) -> Get {
        self.connect_to = Some(addr);
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Result<Get, Error> {
        let v = HeaderValue::from_str(value)
            .map_err(|_| Error(format!("{name}: not a valid header value")))?;
        self.headers.push((name, v));
        Ok(self)
    }
}

/// One POST to send: a target, headers and a body, like a [`Get`] with a payload.
#[derive(Debug, Clone)]
pub(crate) struct Post {
    pub get: Get,
    pub body: Bytes,
}

impl Post {
    pub(crate) fn new(target: Target, body: impl Into<Bytes>) -> Post {
        Post {
            get: Get::new(target),
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Result<Post, Error> {
        self.get = self.get.header(name, value)?;
        Ok(self)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

/// What went wrong, in words for a log line or a CLI answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// How the deadline's error begins.
const NO_ANSWER: &str = "no answer within";

impl Error {
    /// The deadline passed before the exchange was over.
    pub(crate) fn is_timeout(&self) -> bool {
        self.0.starts_with(NO_ANSWER)
    }
}

fn err(e: impl std::fmt::Display) -> Error {
    Error(e.to_string())
}

#[derive(Clone)]
pub(crate) struct Client {
    timeout: Duration,
    max_body: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// `timeout` covers connect, TLS, request and body; a body over `max_body` bytes is an
    /// error. HTTPS trusts the system's CAs unless [`Client::trusting`] says otherwise.
    pub(crate) fn new(timeout: Duration, max_body: usize) -> Client {
        Client {
            timeout,
            max_body,
            tls: None,
        }
    }

    /// HTTPS trusts only these CAs.
    #[cfg(test)] // only tests trust a CA of their own
    pub(crate) fn trusting(mut self, roots: rustls::RootCertStore) -> Client {
        self.tls = Some(Arc::new(tls_config(roots)));
        self
    }

    /// The status and the whole body (at most `max_body` bytes).
    pub(crate) async fn get(&self, req: &Get) -> Result<Response, Error> {
        self.within_deadline(async {
            let resp = self.send(req, Method::GET, Bytes::new()).await?;
            let status = resp.status();
            let body = self.read_capped(resp.into_body()).await?;
            Ok(Response { status, body })
        })
        .await
    }

    /// The status only; the body is not read.
    pub(crate) async fn status(&self, req: &Get) -> Result<StatusCode, Error> {
        self.within_deadline(async {
            Ok(self.send(req, Method::GET, Bytes::new()).await?.status())
        })
        .await
    }

    /// Any method, with a body: the status and the whole answer (the API's CLI client).
    pub(crate) async fn request(
        &self,
        method: Method,
        req: &Get,
        body: Bytes,
    ) -> Result<Response, Error> {
        self.within_deadline(async {
            let resp = self.send(req, method, body).await?;
            let status = resp.status();
            let body = self.read_capped(resp.into_body()).await?;
            Ok(Response { status, body })
        })
        .await
    }

    /// POST the body; the status and the whole answer (at most `max_body` bytes).
    pub(crate) async fn post(&self, req: &Post) -> Result<Response, Error> {
        self.request(Method::POST, &req.get, req.body.clone()).await
    }

    /// POST the body; the status only, the answer's body is not read.
    pub(crate) async fn post_status(&self, req: &Post) -> Result<StatusCode, Error> {
        self.within_deadline(async {
            Ok(self
                .send(&req.get, Method::POST, req.body.clone())
                .await?
                .status())
        })
        .await
    }

    async fn within_deadline<T>(
        &self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| Error(format!("{NO_ANSWER} {:?}", self.timeout)))?
    }

    async fn read_capped(&self, mut body: Incoming) -> Result<Bytes, Error> {
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(err)?.into_data() {
                if out.len() + data.len() > self.max_body {
                    return Err(Error(format!(
                        "response body larger than {} bytes",
                        self.max_body
                    )));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    }

    /// Connect, handshake, send; the body is left for the caller to read or drop.
    async fn send(
        &self,
        req: &Get,
        method: Method,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let t = &req.target;
        let addr = match req.connect_to {
            Some(a) => a,
            None => resolve(t).await?,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Error(format!("connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let request = build(req, method, body)?;
        match t.scheme {
            Scheme::Http => exchange(tcp, request).await,
            Scheme::Https => {
                let config = match &self.tls {
                    Some(c) => c.clone(),
                    None => system_tls()?,
                };
                let name = match t.host.parse::<IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(t.host.clone())
                        .map_err(|_| Error(format!("`{}` is not a TLS server name", t.host)))?,
                };
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Error(format!("TLS with {addr}: {e}")))?;
                exchange(tls, request).await
            }
        }
    }
}

/// hyper's client connection is a future that must run while the response is read; it
/// runs on its own task, which ends when the exchange is over or abandoned (the task
/// holds the only handle to the socket, and dropping the response closes it).
async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Title-case header names: phones' embedded web servers are not all case-insensitive.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(err)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("http client: connection ended: {e}");
        }
    });
    let guard = AbortOnDrop(Some(driver.abort_handle()));
    let resp = sender.send_request(request).await.map_err(err)?;
    // The body streams from the connection task: it lives on until the body is read or
    // dropped (hyper then closes the connection).
    guard.disarm();
    Ok(resp)
}

/// Ends the connection task if the request never got a response (an error, or the caller's
/// deadline dropping the exchange).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// A GET carries no body (and no `Content-Length`); a POST's length is set by hyper.
fn build(req: &Get, method: Method, body: Bytes) -> Result<Request<Full<Bytes>>, Error> {
    let t = &req.target;
    let mut b = Request::builder()
        .method(method)
        .uri(t.path_and_query.as_str())
        .header(header::HOST, t.host_header())
        .header(
            header::USER_AGENT,
            concat!("provbox/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close");
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(body)).map_err(err)
}

async fn resolve(t: &Target) -> Result<SocketAddr, Error> {
    if let Ok(ip) = t.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, t.port));
    }
    tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .map_err(|e| Error(format!("cannot resolve {}: {e}", t.host)))?
        .next()
        .ok_or_else(|| Error(format!("{} has no address", t.host)))
}

fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The system's CAs, read once.
fn system_tls() -> Result<Arc<rustls::ClientConfig>, Error> {
    static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, Error>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(SYSTEM_ROOTS)
                .map_err(|e| Error(format!("https: cannot read {SYSTEM_ROOTS}: {e}")))?;
            for c in certs.flatten() {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(Error(format!("https: no CA certificate in {SYSTEM_ROOTS}")));
            }
            Ok(Arc::new(tls_config(roots)))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    /// Host, port and path-and-query, to compare at once.
    fn parts(x: &Target) -> (&str, u16, &str) {
        (&x.host, x.port, &x.path_and_query)
    }

    #[test]
    fn ipv6_literals_keep_their_address_and_brackets() {
        let x = t("http://[fe80::1]:8080/x?y=1");
        assert_eq!(parts(&x), ("fe80::1", 8080, "/x?y=1"));
        assert_eq!(x.host_header(), "[fe80::1]:8080");
        assert_eq!(x.to_string(), "http://[fe80::1]:8080/x?y=1");
        let y = t("http://[2001:db8::7]");
        assert_eq!((y.port, y.path_and_query.as_str()), (80, "/"));
        assert_eq!(y.host_header(), "[2001:db8::7]");
    }

    #[test]
    fn names_ipv4_ports_and_defaults() {
        let x = t("http://198.18.0.7:8080/admin/resync?http://x/a.cfg");
        assert_eq!(
            parts(&x),
            ("198.18.0.7", 8080, "/admin/resync?http://x/a.cfg")
        );
        assert_eq!(t("http://h").port, 80);
        assert_eq!(t("https://h/").port, 443);
        assert_eq!(t("https://h/").host_header(), "h");
        assert_eq!(t("http://h:/p").port, 80);
    }

    #[test]
    fn refusals() {
        for bad in [
            "http://h:99999/",
            "http://h:65536/",
            "http://h:0/",
            "http://h:8o/",
            "http://:80/",
            "ftp://h/",
            "h/x",
            "http://user:pw@h/",
            "http://[fe80::1/",
            "http://[nothost]/",
            "http://[::1]x/",
            "http://a b/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    proptest! {
        /// Whatever the host (name, IPv4, IPv6) and port, the URL the parser reads is the
        /// URL it prints, and the port is exactly the one written.
        #[test]
        fn parse_print_round_trip(
            host in prop_oneof![
                "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
                any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
                any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
            ],
            port in 1u16..,
            path in "(/[a-zA-Z0-9._~-]{0,12}){0,4}(\\?[a-z0-9=&]{0,12})?",
        ) {
            let in_url = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            let url = format!("http://{in_url}:{port}{path}");
            let parsed = Target::parse(&url).unwrap();
            prop_assert_eq!(&parsed.host, &host);
            prop_assert_eq!(parsed.port, port);
            let want = if path.is_empty() || path.starts_with('?') { format!("/{path}") } else { path.clone() };
            prop_assert_eq!(&parsed.path_and_query, &want);
            prop_assert_eq!(Target::parse(&parsed.to_string()).unwrap(), parsed);
        }

        /// A port that does not fit 16 bits is refused, never replaced by a default.
        #[test]
        fn ports_beyond_u16_are_refused(port in 65536u64..10_000_000_000u64) {
            let url = format!("http://h:{port}/");
            prop_assert!(Target::parse(&url).is_err());
        }
    }

    /// A tiny HTTP/1.1 server answering every connection with `answer`.
    async fn serve_once(answer: &'static [u8]) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                n += s.read(&mut buf[n..]).await.unwrap();
            }
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(head.starts_with("GET /x?y HTTP/1.1\r\n"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("host: [::1]:{}", addr.port())),
                "{head}"
            );
            s.write_all(answer).await.unwrap();
        });
        addr
    }

    /// `GET /x?y` over IPv6 from a server answering "hello", by a client that takes bodies
    /// of `max_body` bytes at most.
    async fn get_hello(max_body: usize) -> Result<Response, Error> {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        Client::new(Duration::from_secs(5), max_body)
            .get(&Get::new(t(&format!("http://[::1]:{}/x?y", addr.port()))))
            .await
    }

    #[tokio::test]
    async fn gets_over_ipv6_with_the_body_capped() {
        let r = get_hello(1024).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"hello");

        let e = get_hello(4).await.unwrap_err();
        assert!(e.0.contains("larger than 4 bytes"), "{e}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = Client::new(Duration::from_millis(300), 1024);
        let e = c
            .status(&Get::new(t(&format!("http://{addr}/"))))
            .await
            .unwrap_err();
        assert!(e.0.contains("no answer within"), "{e}");
        drop(l);
    }

    /// HTTPS with the lab CA as the only trusted root: the name in the URL is checked
    /// against the certificate while the client dials the address it is given; a client
    /// that does not trust the CA refuses the server.
    #[tokio::test]
    async fn https_trusts_only_the_given_roots() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let lab = crate::tls::LabCa::ensure(dir.path(), &["localhost".into()]).unwrap();
        let server = crate::tls::Reloading::new(crate::tls::TlsFiles {
            cert: lab.server_cert.clone(),
            key: lab.server_key.clone(),
            client_auth: crate::confkit::ClientAuth::None,
            client_ca: None,
        })
        .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server.current());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = vec![0u8; 2048];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    n += s.read(&mut buf[n..]).await.unwrap();
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                let _ = s.shutdown().await;
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&lab.ca_cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let get = Get::new(t(&format!("https://localhost:{}/x", addr.port()))).connect_to(addr);
        let r = Client::new(Duration::from_secs(5), 64)
            .trusting(roots)
            .get(&get)
            .await
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
        let strangers = rustls::RootCertStore::empty();
        let e = Client::new(Duration::from_secs(5), 64)
            .trusting(strangers)
            .get(&get)
            .await
            .unwrap_err();
        assert!(e.0.contains("TLS with"), "{e}");
    }
}
