//! The bench dashboard: one self-contained page (no CDN, no build step) and the JSON API
//! behind it, on its own listener, behind an admin token. It reuses the HTTP listener
//! (`http::Listener` + `http::Handler`); the page polls `/api/devices` once a second, which
//! is plenty for a bench of 48 phones and needs no long-lived connections.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use tokio_util::task::TaskTracker;

use crate::config::{At, ListenerSpec, Problems, Transport};
use crate::http::{ConnInfo, Handler, LoggedBody};
use crate::resync;
use crate::status::{Device, State, StatusBook};

const PAGE: &str = include_str!("page.html");
const COOKIE: &str = "provbox_admin";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: At<SocketAddr>,
    /// Admin token: `Authorization: Bearer <token>`, or open `/?token=<token>` once in a
    /// browser (it then keeps a cookie). Required unless `listen` is a loopback address.
    #[serde(default)]
    pub token: Option<At<String>>,
    #[serde(default)]
    pub resync: resync::Config,
}

fn default_listen() -> At<SocketAddr> {
    At::new(SocketAddr::from(([127, 0, 0, 1], 8081)))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: default_listen(),
            token: None,
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
        // The dashboard can reboot every phone on the bench: reachable from the network it
        // must ask for a token; on loopback only this machine's users reach it.
        match &self.token {
            None if !self.listen.ip().is_loopback() => p.add(
                "dashboard.token",
                &self.listen,
                format!(
                    "dashboard.listen {} is reachable from the network but no token is set; expected a token of 16 or more characters (or a loopback listen address)",
                    self.listen.value
                ),
            ),
            Some(t) if t.len() < 16 => p.add(
                "dashboard.token",
                t,
                "is too short to guess-proof the dashboard; expected 16 or more characters (e.g. `openssl rand -hex 16`)",
            ),
            _ => {}
        }
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        vec![ListenerSpec {
            field: "dashboard.listen".into(),
            transport: Transport::Tcp,
            addr: self.listen.clone(),
        }]
    }
}

/// What a reload may change without moving the listener.
pub struct Settings {
    pub token: Option<String>,
    pub resync: resync::Config,
}

impl Settings {
    pub fn from(cfg: &Config) -> Settings {
        Settings {
            token: cfg.token.as_ref().map(|t| t.value.clone()),
            resync: cfg.resync.clone(),
        }
    }
}

pub struct DashboardHandler {
    pub book: Arc<StatusBook>,
    /// Swapped on reload (a changed token takes effect for the next request).
    pub settings: arc_swap::ArcSwap<Settings>,
    pub tracker: TaskTracker,
}

fn respond(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<LoggedBody> {
    let mut r = Response::new(LoggedBody::new(body.into(), None));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<LoggedBody> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
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
    })
}

/// Unix milliseconds → `2026-11-26T23:59:01Z` (days-from-civil inverse, no time crate).
pub fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn csv_field(s: &str) -> String {
    // Quote always; a leading = + - @ would be a formula in a spreadsheet.
    let s = s.replace('"', "\"\"");
    if s.starts_with(['=', '+', '-', '@']) {
        format!("\"'{s}\"")
    } else {
        format!("\"{s}\"")
    }
}

const CSV_HEADER: &str =
    "mac,ip,model,vendor_class,state,reason,first_seen,last_seen,transfers,bytes,last_event\n";

/// One device as a CSV line (with its newline).
fn csv_row(d: &Device) -> String {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let last = d
        .last_event()
        .map(|e| format!("{} {}", e.kind, e.detail))
        .unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}\n",
        csv_field(&d.key),
        csv_field(&d.ip.map(|i| i.to_string()).unwrap_or_default()),
        csv_field(&o(&d.model)),
        csv_field(&o(&d.vendor_class)),
        csv_field(d.state.as_str()),
        csv_field(&o(&d.reason)),
        csv_field(&iso(d.first_seen)),
        csv_field(&iso(d.last_seen)),
        d.transfers,
        d.bytes,
        csv_field(&last),
    )
}

/// The whole book as CSV, row by row under its lock (no copy of the timelines).
pub fn csv(book: &StatusBook) -> String {
    CSV_HEADER.to_string() + &book.map(csv_row).concat()
}

impl DashboardHandler {
    fn authorised(&self, req: &Request<Incoming>) -> (bool, bool) {
        let settings = self.settings.load();
        let Some(token) = &settings.token else {
            return (true, false);
        };
        let t = token.as_bytes();
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| ct_eq(v.trim().as_bytes(), t));
        let cookie = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && ct_eq(v.as_bytes(), t));
        let query = query_param(req.uri().query(), "token").is_some_and(|v| ct_eq(v.as_bytes(), t));
        (bearer || cookie || query, query)
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
            &json!({"version": version, "counts": counts, "devices": rows}),
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
                let req = resync::Request {
                    ip: t.ip,
                    mac_hex: t
                        .key
                        .parse::<crate::devices::Mac>()
                        .ok()
                        .map(|m| m.to_hex()),
                    vendor: t.vendor.clone(),
                    reboot,
                };
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
<p>This dashboard needs the admin token (<code>dashboard.token</code>).</p>\
<input name=token type=password autofocus style='width:100%'> <button>Open</button></form>";

impl Handler for DashboardHandler {
    fn handle(&self, req: Request<Incoming>, _conn: &ConnInfo) -> Response<LoggedBody> {
        let path = req.uri().path().to_string();
        let (ok, via_query) = self.authorised(&req);
        if !ok {
            if path == "/" && req.method() == Method::GET {
                return respond(StatusCode::UNAUTHORIZED, "text/html; charset=utf-8", LOGIN);
            }
            let mut r = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "admin token required (Authorization: Bearer <token>)"}),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"provbox\""),
            );
            return r;
        }
        let reboot =
            query_param(req.uri().query(), "reboot").is_some_and(|v| v == "1" || v == "true");
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method(), segs.as_slice()) {
            (&Method::GET, [""]) => {
                let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", PAGE);
                if via_query && let Some(t) = &self.settings.load().token {
                    // The browser keeps the token so the page's API calls carry it.
                    if let Ok(v) = HeaderValue::from_str(&format!(
                        "{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict"
                    )) {
                        r.headers_mut().insert(header::SET_COOKIE, v);
                    }
                }
                r
            }
            (&Method::GET, ["api", "devices"]) => self.devices(),
            (&Method::GET, ["api", "devices.csv"]) => {
                let mut r = respond(StatusCode::OK, "text/csv; charset=utf-8", csv(&self.book));
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
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=cmd()"), "\"'=cmd()\"");
        let mut d = Device::new("00:0e:08:aa:bb:cc".into(), 0);
        d.push_event(0, "resync_failed", "bad, \"xml\"");
        let text = format!("{CSV_HEADER}{}", csv_row(&d));
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains("\"resync_failed bad, \"\"xml\"\"\"")
        );
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
