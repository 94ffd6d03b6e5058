//! Firmware pushes on the dashboard listener (behind the same Host, token and origin
//! gate as everything here): `GET /api/v1/upgrades` (the runs and each phone's stage),
//! `POST /api/v1/upgrades` with `{"target": "all" | mac | ip, "firmware": path?}`, and
//! `POST /api/v1/devices/{mac}/upgrade` (optional `?firmware=`). The work is `upgrade`'s.

use std::time::Duration;

use bytes::Bytes;
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

/// Some(answer) for the upgrade routes, None for anything else.
pub fn route(
    h: &DashboardHandler,
    method: &Method,
    segs: &[&str],
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Request<Incoming>> {
    match (method, segs) {
        (&Method::GET, ["api", "v1", "upgrades"]) => {
            Ok(json_response(StatusCode::OK, &h.upgrades.json()))
        }
        (&Method::POST, ["api", "v1", "upgrades"]) => Ok(match read_json::<Start>(req) {
            Ok(s) => start(h, &s.target, s.firmware.as_deref()),
            Err(why) => problem(StatusCode::BAD_REQUEST, &why),
        }),
        (&Method::POST, ["api", "v1", "devices", key, "upgrade"]) => {
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            let fw = query_param(req.uri().query(), "firmware");
            Ok(start(h, &key, fw.as_deref()))
        }
        _ => Err(req),
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

/// The body as JSON. Handlers here answer synchronously, so the (small, bounded, already
/// authorised) body is read on this worker thread with `block_in_place`; on a runtime
/// that cannot do that the request is refused rather than stalling it.
fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, String> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::try_current().map_err(|e| e.to_string())?;
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return Err("this server cannot read request bodies here".into());
    }
    let body = req.into_body();
    let bytes: Bytes = tokio::task::block_in_place(|| {
        handle.block_on(async {
            let limited = http_body_util::Limited::new(body, MAX_BODY);
            match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
                Ok(Ok(c)) => Ok(c.to_bytes()),
                Ok(Err(e)) => Err(format!("request body: {e}")),
                Err(_) => Err("request body: not sent within 2 s".to_string()),
            }
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("request body: {e}"))
}
