//! Firmware pushes on the dashboard listener (behind the same Host, token and origin
//! gate as everything here): `GET /api/v1/upgrades` (the runs and each phone's stage),
//! `POST /api/v1/upgrades` with `{"target": "all" | mac | ip, "firmware": path?}`, and
//! `POST /api/v1/devices/{mac}/upgrade` (optional `?firmware=`). The work is `upgrade`'s.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::{DashboardHandler, json_response, query_param};
use crate::http::LoggedBody;
use crate::upgrade::StartError;

/// A request body here is a small JSON object.
const MAX_BODY: usize = 16 * 1024;
/// A client that starts a body and stalls is cut off after this.
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    target: String,
    #[serde(default)]
    firmware: Option<String>,
}

/// Whether the request is one of these routes.
pub fn handles(method: &Method, segs: &[&str]) -> bool {
    matches!(
        (method, segs),
        (&Method::GET | &Method::POST, ["api", "v1", "upgrades"])
            | (&Method::POST, ["api", "v1", "devices", _, "upgrade"])
    )
}

/// The answer to a request [`handles`] took.
pub fn route(
    h: &DashboardHandler,
    method: &Method,
    segs: &[&str],
    req: Request<Incoming>,
) -> Response<LoggedBody> {
    match (method, segs) {
        (&Method::GET, ["api", "v1", "upgrades"]) => {
            json_response(StatusCode::OK, &h.upgrades.json())
        }
        (&Method::POST, ["api", "v1", "upgrades"]) => {
            let q = req.uri().query();
            if let Some(target) = query_param(q, "target") {
                let fw = query_param(q, "firmware");
                return start(h, &target, fw.as_deref());
            }
            start_from_body(h, req)
        }
        (&Method::POST, ["api", "v1", "devices", key, "upgrade"]) => {
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            let fw = query_param(req.uri().query(), "firmware");
            start(h, &key, fw.as_deref())
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

fn start(h: &DashboardHandler, target: &str, firmware: Option<&str>) -> Response<LoggedBody> {
    match h.upgrades.start(target, firmware) {
        Ok(run) => {
            tracing::info!(target, firmware, run = run.id, "dashboard: upgrade started");
            json_response(StatusCode::ACCEPTED, &run.json())
        }
        Err(e @ StartError::NotFound(_)) => problem(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ StartError::Invalid(_)) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
        }
    }
}

/// RFC 9457, like the rest of `/api/v1`.
fn problem(status: StatusCode, detail: &str) -> Response<LoggedBody> {
    let mut r = json_response(
        status,
        &json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(),
            "detail": detail,
            "error": detail,
        }),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// `{"target": …, "firmware": …}` in the body. Handlers here answer before the body is
/// read (the connection task that feeds it is the one running the handler), so the body
/// is read on a task and the run starts there: the answer is 202 and the run shows in
/// `GET /api/v1/upgrades`; a refusal is logged. The query form (`?target=`) answers
/// with the run or the refusal at once (the CLI uses it).
fn start_from_body(h: &DashboardHandler, req: Request<Incoming>) -> Response<LoggedBody> {
    let upgrades = h.upgrades.clone();
    let body = req.into_body();
    h.tracker.spawn(async move {
        let limited = http_body_util::Limited::new(body, MAX_BODY);
        let read = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
            Ok(Ok(c)) => serde_json::from_slice::<Start>(&c.to_bytes()).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("not sent within 2 s".to_string()),
        };
        match read {
            Ok(s) => match upgrades.start(&s.target, s.firmware.as_deref()) {
                Ok(run) => tracing::info!(
                    target = s.target,
                    run = run.id,
                    "dashboard: upgrade started"
                ),
                Err(e) => tracing::warn!(target = s.target, "dashboard: upgrade refused: {e}"),
            },
            Err(e) => tracing::warn!("dashboard: upgrade refused: request body: {e}"),
        }
    });
    json_response(
        StatusCode::ACCEPTED,
        &json!({"accepted": true, "progress": "/api/v1/upgrades"}),
    )
}
