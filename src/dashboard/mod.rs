//! The bench dashboard: one self-contained page (no CDN, no build step) and the JSON API
//! behind it, on its own listener, always behind an admin token (configured, or made once
//! in `data_dir`). It reuses the HTTP listener (`http::Listener` + `http::Handler`); the
//! page polls `/api/devices` once a second, which is plenty for a bench of 48 phones and
//! needs no long-lived connections.
//!
//! Every request passes, in order: the `Host` check (421), the token (401), and for
//! anything but GET/HEAD the same-origin check (403); see `guard`.

pub mod csv;
pub mod guard;
pub mod token;
pub mod uploads;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use tokio_util::task::TaskTracker;

use anyhow::Result;

// The API's answer helpers: one JSON, content type and cache rule for both.
use crate::api::{json as json_response, query_param, respond};
use crate::confkit::{At, ListenerSpec, Problems, Transport};
use crate::http::{ConnInfo, Handler, LoggedBody};
use crate::metrics::{Metrics, RefusalLabels};
use crate::resync;
use crate::status::{Device, State, StatusBook};

const PAGE: &str = include_str!("page.html");
const COOKIE: &str = "provbox_admin";

/// Every key is optional: an unset one takes its value from [`Config::default`].
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub enabled: bool,
    pub listen: At<SocketAddr>,
    /// Admin token: `Authorization: Bearer <token>`, or open `/?token=<token>` once in a
    /// browser (it then keeps a cookie). Without one, a token is made on the first start
    /// and kept in `data_dir/dashboard.token`.
    pub token: Option<At<String>>,
    /// Names the dashboard answers to besides its own addresses (and `localhost` on
    /// loopback); any other `Host` gets 421 (DNS rebinding).
    pub hosts: Vec<At<String>>,
    /// Who the token stands for in the audit log of `/api/v1` writes (default `operator`).
    pub token_name: Option<At<String>>,
    pub resync: resync::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: At::new(SocketAddr::from(([127, 0, 0, 1], 8081))),
            token: None,
            hosts: Vec::new(),
            token_name: None,
            resync: resync::Config::default(),
        }
    }
}

impl Config {
    pub fn resolve_paths(&mut self, _base: &Path) {}

    pub fn validate(&self, p: &mut Problems) {
        self.resync.validate("dashboard.resync", p);
        if !self.enabled {
            return;
        }
        // The dashboard can reboot every phone on the bench: its token must not be
        // guessable. Without one configured, a random one is made at start.
        if let Some(t) = &self.token
            && t.len() < token::MIN_LEN
        {
            p.add(
                "dashboard.token",
                t,
                "is too short to guess-proof the dashboard; expected 16 or more characters (e.g. `openssl rand -hex 16`), or no token to have one made in data_dir",
            );
        }
        if let Some(n) = &self.token_name
            && (n.trim().is_empty() || n.len() > 64 || n.chars().any(char::is_control))
        {
            p.add(
                "dashboard.token_name",
                n,
                "is not a usable name; expected 1 to 64 printable characters, e.g. bench-operator",
            );
        }
        for h in &self.hosts {
            if guard::split_host(&h.value).is_none_or(|(_, port)| port.is_some()) || h.contains('/')
            {
                p.add(
                    "dashboard.hosts",
                    h,
                    format!(
                        "`{}` is not a host name; expected a name or address without scheme or port, e.g. prov.lab.test",
                        h.value
                    ),
                );
            }
        }
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        vec![ListenerSpec::new(
            "dashboard.listen",
            Transport::Tcp,
            &self.listen,
        )]
    }
}

/// What a reload may change without moving the listener.
pub struct Settings {
    pub token: String,
    pub source: token::Source,
    /// `dashboard.hosts`, lower case, without a trailing dot.
    pub hosts: Vec<String>,
    pub resync: resync::Config,
    /// `dashboard.token_name`: who the audit log says did an API write.
    pub token_name: String,
}

impl Settings {
    pub fn load(cfg: &Config, data_dir: &Path) -> Result<Settings> {
        let configured = cfg.token.as_ref().map(|t| t.value.as_str());
        let (token, source) = token::resolve(configured, data_dir)?;
        let hosts = cfg
            .hosts
            .iter()
            .filter_map(|h| guard::split_host(&h.value).map(|(n, _)| n))
            .collect();
        Ok(Settings {
            token,
            source,
            hosts,
            resync: cfg.resync.clone(),
            token_name: cfg
                .token_name
                .as_ref()
                .map_or_else(|| "operator".to_string(), |n| n.value.clone()),
        })
    }
}

/// Where a command on this machine reaches the dashboard: its listen address, with an
/// unspecified one (0.0.0.0, ::) read as loopback.
pub fn local_addr(d: &Config) -> SocketAddr {
    let mut addr = d.listen.value;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    addr
}

/// The token `provbox resync` presents to the running dashboard: the configured one, or
/// the one kept in `data_dir` (never made here: only the server makes it).
pub fn cli_token(d: &Config, data_dir: &Path) -> Option<String> {
    match &d.token {
        Some(t) => Some(t.value.clone()),
        None => std::fs::read_to_string(data_dir.join(token::FILE))
            .ok()
            .map(|t| t.trim().to_string()),
    }
}

pub struct DashboardHandler {
    pub book: Arc<StatusBook>,
    /// Swapped on reload (a changed token takes effect for the next request).
    pub settings: arc_swap::ArcSwap<Settings>,
    pub tracker: TaskTracker,
    pub metrics: Arc<Metrics>,
    /// The bound address: the `Host` check accepts it (or, on 0.0.0.0, this machine's).
    pub local: SocketAddr,
    /// Served over TLS: the login cookie is `Secure` and origins are `https://`.
    pub tls: bool,
    /// `/api/v1`, behind the same gate.
    pub api: Arc<crate::api::Api>,
    /// `data_dir/uploads`, for the uploads view.
    pub uploads: std::path::PathBuf,
}

/// Bind the dashboard's listener and make its handler (the token is resolved, and made
/// when needed, here: before anything serves). Adds its banner lines.
pub async fn bind(
    cfg: &Config,
    data_dir: &Path,
    api: Arc<crate::api::Api>,
    metrics: Arc<Metrics>,
    banner: &mut Vec<String>,
) -> Result<(Arc<DashboardHandler>, crate::http::Listener)> {
    let (book, tracker) = (api.book.clone(), api.tracker.clone());
    let settings = Settings::load(cfg, data_dir)?;
    let socket = crate::frontend::bind_tcp("dashboard.listen", cfg.listen.value).await?;
    let local = socket.local_addr()?;
    banner.push(format!("dashboard http://{local}/"));
    let shown = if local.ip().is_unspecified() {
        let ip = crate::netif::local_ipv4()
            .into_iter()
            .next()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        SocketAddr::new(ip.into(), local.port())
    } else {
        local
    };
    match &settings.source {
        token::Source::Config => {
            banner.push(format!(
                "dashboard login http://{shown}/?token=<dashboard.token>"
            ));
        }
        token::Source::File(path, made) => {
            if *made {
                tracing::warn!(
                    file = %path.display(),
                    "dashboard: no dashboard.token configured; made one (kept across restarts)"
                );
            }
            banner.push(format!(
                "dashboard login http://{shown}/?token={}   (token kept in {})",
                settings.token,
                path.display()
            ));
        }
    }
    let handler = Arc::new(DashboardHandler {
        book,
        settings: arc_swap::ArcSwap::from_pointee(settings),
        tracker,
        metrics: metrics.clone(),
        local,
        tls: false,
        api,
        uploads: crate::uploads::dir(data_dir),
    });
    let listener = crate::http::Listener {
        name: format!("dashboard:{}", cfg.listen.value),
        socket,
        tls: None,
        limits: Default::default(),
        protocol: crate::metrics::Protocol::http,
        handler: handler.clone(),
        metrics,
    };
    Ok((handler, listener))
}

/// The summary row the table shows (the timeline comes with `/api/devices/{mac}`).
fn summary(d: &Device) -> serde_json::Value {
    let last = d.last_event();
    json!({
        "key": d.key,
        "mac": d.mac,
        "ip": d.ip,
        "model": d.model,
        "vendor_class": d.vendor_class,
        "user_agent": d.user_agent,
        "state": d.state,
        "reason": d.reason,
        "first_seen": d.first_seen,
        "last_seen": d.last_seen,
        "transfers": d.transfers,
        "bytes": d.bytes,
        "last_event": last.map(|e| &e.kind),
        "last_detail": last.map(|e| &e.detail),
        "verification": d.verification.as_ref().map(|v| &v.summary),
    })
}

pub(crate) use crate::status::record::iso;

impl DashboardHandler {
    /// A new configuration's token, names and resync settings, for the next request.
    /// New settings from a reloaded `dashboard` section. `data_dir` is the running one
    /// (a changed `data_dir` waits for a restart, so the token file stays where it is).
    pub fn reload(&self, cfg: &Config, data_dir: &Path) -> Result<()> {
        self.settings
            .store(Arc::new(Settings::load(cfg, data_dir)?));
        Ok(())
    }

    /// The token as a bearer header or the login cookie.
    fn authorised(&self, req: &Request<Incoming>, token: &str) -> bool {
        let t = token.as_bytes();
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| token::matches(v.trim().as_bytes(), t));
        let cookie = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| {
                k == COOKIE && token::matches(v.as_bytes(), token::cookie_value(token).as_bytes())
            });
        bearer || cookie
    }

    fn refuse(&self, reason: &'static str, peer: SocketAddr, detail: &str) {
        self.metrics
            .dashboard_refusals
            .get_or_create(&RefusalLabels { reason })
            .inc();
        if reason == "no_token" {
            tracing::info!(%peer, reason, "dashboard: refused: {detail}");
        } else {
            tracing::warn!(%peer, reason, "dashboard: refused: {detail}");
        }
    }

    /// The request's host as the client named it (`Host`, or the HTTP/2 authority).
    fn host(req: &Request<Incoming>) -> &str {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
    }

    /// Host, token and origin checks: Some(refusal) or None to go on.
    fn gate(&self, req: &Request<Incoming>, conn: &ConnInfo) -> Option<Response<LoggedBody>> {
        let settings = self.settings.load();
        let host = Self::host(req);
        let default_port = if self.tls { 443 } else { 80 };
        if !guard::host_allowed(
            host,
            self.local,
            default_port,
            &settings.hosts,
            guard::machine_ips,
        ) {
            self.refuse(
                "host",
                conn.peer,
                &format!("Host `{host}` is not this dashboard"),
            );
            return Some(json_response(
                StatusCode::MISDIRECTED_REQUEST,
                &json!({"error": "this dashboard does not answer to that Host; add the name to dashboard.hosts"}),
            ));
        }
        let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
        let path = req.uri().path();
        if is_read
            && path == "/"
            && let Some(presented) = query_param(req.uri().query(), "token")
        {
            return Some(self.login(presented.as_bytes(), &settings.token, conn));
        }
        if !self.authorised(req, &settings.token) {
            self.refuse("no_token", conn.peer, &format!("{} {path}", req.method()));
            if path == "/" && is_read {
                return Some(respond(
                    StatusCode::UNAUTHORIZED,
                    "text/html; charset=utf-8",
                    LOGIN,
                ));
            }
            let mut r = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "admin token required (Authorization: Bearer <token>)"}),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"provbox\""),
            );
            return Some(r);
        }
        if !is_read && let Err(why) = guard::same_origin(req.headers(), host, self.tls) {
            self.refuse(
                "cross_site",
                conn.peer,
                &format!("{} {path}: {why}", req.method()),
            );
            return Some(json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": format!("cross-site request refused: {why}")}),
            ));
        }
        None
    }

    /// `/?token=…`: a right token sets the login cookie and redirects to `/`, so the token
    /// leaves the address bar and the history.
    fn login(&self, presented: &[u8], token: &str, conn: &ConnInfo) -> Response<LoggedBody> {
        if !token::matches(presented, token.as_bytes()) {
            self.refuse("no_token", conn.peer, "wrong token on the login page");
            return respond(StatusCode::UNAUTHORIZED, "text/html; charset=utf-8", LOGIN);
        }
        let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "logged in\n");
        let secure = if self.tls { "; Secure" } else { "" };
        let h = r.headers_mut();
        h.insert(header::LOCATION, HeaderValue::from_static("/"));
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
            token::cookie_value(token)
        )) {
            h.insert(header::SET_COOKIE, v);
        }
        r
    }

    fn devices(&self) -> Response<LoggedBody> {
        let version = self.book.version();
        let rows: Vec<(State, serde_json::Value)> = self.book.map(|d| (d.state, summary(d)));
        let mut counts = serde_json::Map::new();
        for s in State::ALL {
            let n = rows.iter().filter(|(st, _)| *st == s).count();
            counts.insert(s.as_str().into(), n.into());
        }
        let rows: Vec<_> = rows.into_iter().map(|(_, v)| v).collect();
        json_response(
            StatusCode::OK,
            &json!({"version": version, "counts": counts, "devices": rows,
                // Boxes sharing a store: catalog files that differ between them.
                "files_differ": crate::store::digest::differences().into_iter()
                    .map(|(path, boxes)| json!({"path": path, "boxes": boxes.into_iter()
                        .map(|(b, sha)| json!({"box": b, "sha256": sha})).collect::<Vec<_>>()}))
                    .collect::<Vec<_>>()}),
        )
    }

    fn start_resync(&self, what: &str, reboot: bool) -> Response<LoggedBody> {
        let targets = self.book.targets(what);
        if targets.is_empty() {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no device with a known address matches `{what}`")}),
            );
        }
        let keys: Vec<String> = targets.iter().map(|t| t.key.clone()).collect();
        // `all` on a full bench: a few phones at a time, not a burst of hundreds.
        let slots = Arc::new(tokio::sync::Semaphore::new(16));
        for t in targets {
            let book = self.book.clone();
            let cfg = self.settings.load().resync.clone();
            let slots = slots.clone();
            self.tracker.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let req = t.resync_request(reboot);
                let (kind, detail) = match resync::send(&cfg, &req).await {
                    Ok(d) => ("resync_sent", d),
                    Err(d) => ("resync_not_sent", d),
                };
                tracing::info!(device = %t.key, ip = %t.ip, result = kind, "{detail}");
                book.note(&t.key, kind, &detail);
            });
        }
        json_response(StatusCode::ACCEPTED, &json!({"sending": keys}))
    }
}

const LOGIN: &str = "<!doctype html><meta charset=utf-8><title>provbox</title>\
<form style='font:16px sans-serif;margin:4em auto;width:22em'>\
<p>This dashboard needs the admin token: <code>dashboard.token</code>, or the one provbox made in <code>data_dir/dashboard.token</code> (the start-up banner shows a login link).</p>\
<input name=token type=password autofocus style='width:100%'> <button>Open</button></form>";

impl Handler for DashboardHandler {
    /// `/api/v1/…` goes to the API (after the same gate, its refusals as problem+json);
    /// everything else is answered at once by `handle`.
    fn takes_body(&self, req: &Request<Incoming>) -> bool {
        req.uri().path().starts_with(crate::api::PREFIX)
    }

    fn handle_body(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> crate::http::Pending {
        if let Some(refused) = self.gate(&req, &conn) {
            let status = refused.status();
            let (title, detail) = match status {
                StatusCode::UNAUTHORIZED => (
                    "Token required",
                    "the admin token is required (Authorization: Bearer <token>)",
                ),
                StatusCode::FORBIDDEN => (
                    "Cross-site request refused",
                    "a request that changes state must come from the dashboard's own origin (Origin header)",
                ),
                _ => (
                    "Wrong host",
                    "this dashboard does not answer to that Host; add the name to dashboard.hosts",
                ),
            };
            let mut r = crate::api::Problem::new(status, title, detail).response();
            if let Some(v) = refused.headers().get(header::WWW_AUTHENTICATE) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v.clone());
            }
            return Box::pin(std::future::ready(r));
        }
        let s = self.settings.load();
        let caller = crate::api::Caller {
            who: s.token_name.clone(),
            resync: s.resync.clone(),
        };
        Box::pin(async move { self.api.handle(req, caller).await })
    }

    fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<LoggedBody> {
        if let Some(refused) = self.gate(&req, conn) {
            return refused;
        }
        let path = req.uri().path().to_string();
        let reboot =
            query_param(req.uri().query(), "reboot").is_some_and(|v| v == "1" || v == "true");
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // HEAD is answered as GET (hyper sends no body for it).
        let method = match *req.method() {
            Method::HEAD => Method::GET,
            ref m => m.clone(),
        };
        match (&method, segs.as_slice()) {
            (&Method::GET, [""]) => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE),
            (&Method::GET, ["api", "devices"]) => self.devices(),
            (&Method::GET, ["api", "devices.csv"]) => {
                let mut r = respond(
                    StatusCode::OK,
                    "text/csv; charset=utf-8",
                    csv::csv(&self.book),
                );
                r.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"provbox-devices.csv\""),
                );
                r
            }
            (&Method::GET, ["api", "devices", key]) => {
                let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
                match self.book.get(&key) {
                    Some(d) => json_response(
                        StatusCode::OK,
                        &serde_json::to_value(&d).unwrap_or_default(),
                    ),
                    None => json_response(
                        StatusCode::NOT_FOUND,
                        &json!({"error": format!("no device `{key}`")}),
                    ),
                }
            }
            (&Method::POST, ["api", "devices", key, "resync"]) => {
                let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
                self.start_resync(&key, reboot)
            }
            (&Method::POST, ["api", "resync", "all"]) => self.start_resync("all", reboot),
            (&Method::GET, ["api", "uploads", rest @ ..]) => {
                uploads::answer(&self.uploads, rest, req.uri().query())
            }
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_795_737_541_000), "2026-11-26T23:59:01Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn query() {
        assert_eq!(
            query_param(Some("a=1&token=x%20y"), "token").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param(Some("reboot"), "reboot").as_deref(), Some(""));
        assert_eq!(query_param(None, "a"), None);
    }
}
