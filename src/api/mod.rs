//! `/api/v1`: the operator's API on the dashboard listener (same token, same Host and
//! same-origin checks: the dashboard's gate runs first). JSON in and out; errors are RFC
//! 9457 `application/problem+json`; every write is logged (target `audit`) with who (the
//! token's name) and what. The OpenAPI 3.1 document at `/api/v1/openapi.json` is generated
//! from the handlers and types here (utoipa), so it cannot drift from them.
//!
//! One file per resource; this one routes, reads bodies and writes answers.

pub mod bindings;
pub mod catalog;
pub mod devices;
pub mod events;
pub mod history;
pub mod inventory;
pub mod leases;
pub mod problem;
pub mod upgrades;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;

use crate::devices::Provisioner;
use crate::http::LoggedBody;
use crate::status::StatusBook;
pub use problem::{NotFound, Problem};

/// Where the API lives on the dashboard listener.
pub const PREFIX: &str = "/api/v1/";

/// Largest request body taken (an inventory import of a few thousand lines fits).
pub const MAX_BODY: usize = 4 << 20;

/// A client that starts a body and stalls is answered 408 after this (the connection is
/// not held open by a body that never ends).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the API works on; made once with the dashboard.
pub struct Api {
    pub book: Arc<StatusBook>,
    pub provisioner: Arc<Provisioner>,
    pub tracker: TaskTracker,
    /// Ends open event streams at shutdown (a graceful stop waits for open responses).
    pub shutdown: CancellationToken,
    /// Open event streams (capped: [`events::MAX_SUBSCRIBERS`]).
    pub(crate) subscribers: Arc<AtomicUsize>,
    /// Firmware pushes (`/api/v1/upgrades`).
    pub upgrades: Arc<crate::upgrade::Upgrades>,
    /// Devices per state, sampled every minute (`/api/v1/history`; the dashboard runs it).
    pub history: Arc<crate::status::history::History>,
}

/// Who is asking and with what settings (from the dashboard's current settings).
pub struct Caller {
    /// The token's name, for the audit log.
    pub who: String,
    pub resync: crate::resync::Config,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "provbox API",
        description = "The operator's API of provbox: devices, leases, PIN bindings, inventory, catalog and a live event stream. Authenticate with `Authorization: Bearer <dashboard token>`; requests that change state must also come from the dashboard's own origin (`Origin` header)."
    ),
    paths(
        devices::list,
        devices::get,
        devices::forget,
        devices::resync,
        devices::reboot,
        devices::report,
        upgrades::device,
        upgrades::list,
        upgrades::start,
        history::get,
        leases::list,
        leases::get,
        leases::release,
        bindings::list,
        bindings::unbind,
        inventory::list,
        inventory::get,
        inventory::put,
        inventory::delete,
        inventory::import,
        catalog::list,
        catalog::fetches,
        events::stream,
        openapi,
    ),
    components(schemas(
        Problem,
        devices::DeviceSummary,
        devices::DevicePage,
        devices::DeviceDetail,
        devices::TimelineEvent,
        devices::Sending,
        devices::Forgotten,
        crate::devices::desk::LeaseRow,
        leases::LeaseList,
        bindings::Binding,
        bindings::BindingList,
        bindings::Unbound,
        inventory::InventoryRecord,
        inventory::InventoryList,
        inventory::Imported,
        catalog::CatalogFile,
        catalog::CatalogList,
        catalog::Fetch,
        catalog::FetchList,
        upgrades::Start,
    )),
    modifiers(&Security),
    security(("token" = [])),
    tags(
        (name = "devices"), (name = "leases"), (name = "bindings"),
        (name = "inventory"), (name = "catalog"), (name = "events"), (name = "upgrades"), (name = "meta")
    )
)]
pub struct Doc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, operation_id = "openapi", path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub fn openapi() -> String {
    Doc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<LoggedBody> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// 200 with the value as JSON, or the problem.
pub fn answer<T: Serialize>(r: Result<T, Problem>) -> Response<LoggedBody> {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(p) => p.into(),
    }
}

pub fn respond(
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

/// Log one write: who did what to which (target `audit`, so it can be routed apart).
pub fn audit(who: &str, action: &str, target: &str, outcome: &str) {
    tracing::info!(target: "audit", who, action, target, outcome, "api: {who} {action} {target}: {outcome}");
}

/// A path segment, percent-decoded.
fn seg(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One query parameter, decoded (`+` is a space).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The request body, at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
async fn body(req: Request<Incoming>) -> Result<Bytes, Response<LoggedBody>> {
    let read = http_body_util::Limited::new(req.into_body(), MAX_BODY).collect();
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, read).await else {
        return Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "Body too slow",
            format!(
                "the request body was not sent within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )
        .into());
    };
    match read {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(if e.is::<http_body_util::LengthLimitError>() {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Body too large",
                format!("the request body is over {MAX_BODY} bytes"),
            )
            .into()
        } else {
            Problem::bad_request(format!("the request body could not be read: {e}")).into()
        }),
    }
}

impl Api {
    pub fn new(
        book: Arc<StatusBook>,
        provisioner: Arc<Provisioner>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        upgrades: Arc<crate::upgrade::Upgrades>,
    ) -> Api {
        Api {
            book,
            provisioner,
            tracker,
            shutdown,
            subscribers: Arc::new(AtomicUsize::new(0)),
            upgrades,
            history: Default::default(),
        }
    }

    /// Answer a request under [`PREFIX`] (the dashboard's gate has passed it).
    pub async fn handle(&self, req: Request<Incoming>, caller: Caller) -> Response<LoggedBody> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let q = query.as_deref();
        let rest = path.strip_prefix(PREFIX).unwrap_or("");
        let segs: Vec<String> = rest.split('/').map(seg).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let method = match *req.method() {
            Method::HEAD => Method::GET,
            ref m => m.clone(),
        };
        let who = caller.who.as_str();
        match (&method, segs.as_slice()) {
            (&Method::GET, ["openapi.json"]) => {
                respond(StatusCode::OK, "application/json", openapi())
            }
            (&Method::GET, ["devices"]) => devices::list(self, q),
            (&Method::GET, ["devices", mac]) => devices::get(self, mac),
            (&Method::DELETE, ["devices", mac]) => devices::forget(self, who, mac),
            (&Method::POST, ["devices", mac, "resync"]) => devices::resync(self, &caller, mac),
            (&Method::POST, ["devices", mac, "reboot"]) => devices::reboot(self, &caller, mac),
            (&Method::POST, ["devices", mac, "report"]) => devices::report(self, &caller, mac),
            (&Method::POST, ["devices", mac, "upgrade"]) => upgrades::device(self, who, mac, q),
            (&Method::GET, ["upgrades"]) => upgrades::list(self),
            (&Method::POST, ["upgrades"]) => match body(req).await {
                Ok(b) => upgrades::start(self, who, q, &b),
                Err(r) => r,
            },
            (&Method::GET, ["history"]) => history::get(self),
            (&Method::GET, ["leases"]) => leases::list(self),
            (&Method::GET, ["leases", ip]) => leases::get(self, ip),
            (&Method::DELETE, ["leases", ip]) => leases::release(self, who, ip).await,
            (&Method::GET, ["bindings"]) => bindings::list(self),
            (&Method::DELETE, ["bindings", pin]) => bindings::unbind(self, who, pin),
            (&Method::GET, ["inventory"]) => inventory::list(self),
            (&Method::POST, ["inventory", "import"]) => {
                let dry = query_param(q, "dry_run").is_some_and(|v| v == "1" || v == "true");
                match body(req).await {
                    Ok(b) => inventory::import(self, who, &b, dry),
                    Err(r) => r,
                }
            }
            (&Method::GET, ["inventory", key]) => inventory::get(self, key),
            (&Method::PUT, ["inventory", key]) => {
                let key = key.to_string();
                match body(req).await {
                    Ok(b) => inventory::put(self, who, &key, &b),
                    Err(r) => r,
                }
            }
            (&Method::DELETE, ["inventory", key]) => inventory::delete(self, who, key),
            (&Method::GET, ["catalog"]) => catalog::list(self).await,
            (&Method::GET, ["catalog", "fetches"]) => catalog::fetches(self, q),
            (&Method::GET, ["events"]) => events::stream(self),
            _ => {
                let known = known_path(&segs);
                if known {
                    Problem::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "Method not allowed",
                        format!("{method} is not allowed on {path}"),
                    )
                    .into()
                } else {
                    Problem::new(
                        StatusCode::NOT_FOUND,
                        "Not found",
                        format!("no API resource at {path}; see /api/v1/openapi.json"),
                    )
                    .into()
                }
            }
        }
    }
}

/// Whether some method is served at this path (405 rather than 404).
fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["openapi.json"]
            | ["devices"]
            | ["devices", _]
            | ["devices", _, "resync" | "reboot" | "report" | "upgrade"]
            | ["upgrades"]
            | ["history"]
            | ["leases"]
            | ["leases", _]
            | ["bindings"]
            | ["bindings", _]
            | ["inventory"]
            | ["inventory", _]
            | ["catalog"]
            | ["catalog", "fetches"]
            | ["events"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_route() {
        let v: serde_json::Value = serde_json::from_str(&openapi()).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/api/v1/devices",
            "/api/v1/devices/{mac}",
            "/api/v1/devices/{mac}/resync",
            "/api/v1/leases/{ip}",
            "/api/v1/bindings/{pin}",
            "/api/v1/inventory/{key}",
            "/api/v1/inventory/import",
            "/api/v1/catalog/fetches",
            "/api/v1/events",
            "/api/v1/openapi.json",
            "/api/v1/devices/{mac}/report",
            "/api/v1/devices/{mac}/upgrade",
            "/api/v1/upgrades",
            "/api/v1/history",
        ] {
            assert!(paths.contains_key(p), "{p} missing from the document");
        }
        assert!(paths["/api/v1/devices/{mac}"]["delete"].is_object());
        // Operation ids name one operation each (validators insist).
        let mut ids: Vec<&str> = paths
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "{ids:?}");
    }

    #[test]
    fn queries() {
        assert_eq!(
            query_param(Some("a=1&q=x%20y+z"), "q").as_deref(),
            Some("x y z")
        );
        assert_eq!(query_param(None, "q"), None);
    }
}
