//! An HTTP PUT or POST body into the store: what the HTTP front end calls for a write.
//! The front end keeps its own response and access log; this says what happened.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Refused, Stored, Uploads};
use crate::devices::{ClientIdentity, FetchRequest, Provisioner, TransferDone};
use crate::metrics::Protocol;

/// Who sent the request, as the front end knows it.
pub struct Sender<'a> {
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub client: Option<&'a ClientIdentity>,
}

/// The status for an upload's result, and its access-log outcome.
pub fn status(result: &Result<Stored, Refused>) -> (StatusCode, &'static str) {
    match result {
        Ok(s) if s.how == "created" => (StatusCode::CREATED, "uploaded"),
        Ok(_) => (StatusCode::NO_CONTENT, "uploaded"),
        Err(Refused::NotUpload) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        Err(Refused::Forbidden(_)) => (StatusCode::FORBIDDEN, "forbidden"),
        Err(Refused::Unauthorized { .. }) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        Err(Refused::TooLarge(_)) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        Err(Refused::Cut) => (StatusCode::BAD_REQUEST, "cut"),
        Err(Refused::Io(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "error"),
    }
}

/// Store the body of `req` (already known to be a PUT or POST), counted and logged, and
/// noted on the device's timeline when stored.
pub async fn receive(
    up: &Uploads,
    pv: &Arc<Provisioner>,
    req: Request<Incoming>,
    from: Sender<'_>,
) -> Result<Stored, Refused> {
    let raw = req.uri().path().to_string();
    let shown = pv.log_path(&raw).into_owned();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let result = store(up, pv, req, &raw, user_agent.as_deref(), &from).await;
    up.record(from.peer, &shown, &result);
    // The device status book hears of the request first (a phone whose first request is
    // an upload gets its record), then of the upload, on that device's timeline.
    pv.transfer_done(&TransferDone {
        protocol: from.protocol,
        peer: from.peer,
        path: &shown,
        user_agent: user_agent.as_deref(),
        client_mac: from.client.and_then(|c| c.mac),
        bytes: result.as_ref().map_or(0, |s| s.bytes),
        outcome: status(&result).1,
    });
    if let (Ok(s), Ok(key)) = (&result, crate::catalog::path::normalize(&raw))
        && let Some(t) = up.target(&key)
    {
        pv.registry()
            .note(t.mac, "upload", &s.describe(from.protocol.as_str()));
        // A Polycom override or Yealink local.cfg: verified like a Cisco report.
        up.verify(pv, &t);
    }
    result
}

async fn store(
    up: &Uploads,
    pv: &Provisioner,
    req: Request<Incoming>,
    raw: &str,
    user_agent: Option<&str>,
    from: &Sender<'_>,
) -> Result<Stored, Refused> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Refused::NotUpload)?;
    let target = up.authorize(
        pv,
        &FetchRequest {
            protocol: from.protocol,
            peer: from.peer,
            local: from.local,
            path: &decoded,
            user_agent,
            client: from.client,
            http: Some(crate::devices::pipeline::httpauth::HttpFacts::of(&req)),
        },
    )?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut w = up.begin(target, declared)?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refused::Cut)?;
        if let Ok(data) = frame.into_data() {
            w.write(&data)?;
        }
    }
    // hyper ends a body short of its Content-Length with an error, but a chunked one the
    // client closed after a complete chunk could look whole: the length decides.
    if declared.is_some_and(|n| n != w.written()) {
        return Err(Refused::Cut);
    }
    w.finish()
}
