//! `GET /api/v1/events`: a Server-Sent Events stream of device changes. Each subscriber
//! has a bounded queue; one that falls behind (a stalled client) is dropped, never waited
//! for, and the number of open streams is capped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::devices::{DeviceSummary, summary};
use super::{Api, Problem};
use crate::http::LoggedBody;
use crate::status::StatusBook;

/// Open streams at most (a dashboard tab each; more is a leak or an attack).
pub const MAX_SUBSCRIBERS: usize = 32;
/// Events queued for one subscriber before it counts as too slow and is dropped.
pub const QUEUE: usize = 64;
/// A comment line this often: proxies keep the stream open, a gone client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One event's data: the device as the list shows it, or only its key when it was
/// forgotten.
#[derive(Debug, Serialize)]
struct Change<'a> {
    key: &'a str,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSummary>,
}

/// The SSE frame for a change of `key`.
fn frame(book: &StatusBook, key: &str) -> Bytes {
    let device = book.get(key).map(|d| summary(&d));
    let kind = if device.is_some() {
        "device"
    } else {
        "forgotten"
    };
    let data = serde_json::to_string(&Change {
        key,
        version: book.version(),
        device,
    })
    .unwrap_or_default();
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Takes a subscriber slot; gives it back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(n: &Arc<AtomicUsize>) -> Option<Slot> {
        n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v < MAX_SUBSCRIBERS).then_some(v + 1)
        })
        .ok()
        .map(|_| Slot(n.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Device events as they happen (Server-Sent Events): `event: device` with the device's
/// summary, `event: forgotten` with its key; a comment line every 15 s.
#[utoipa::path(get, operation_id = "events_stream", path = "/api/v1/events", tag = "events",
    responses(
        (status = 200, description = "an event stream", content_type = "text/event-stream"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "too many open streams"),
    ))]
pub fn stream(api: &Api) -> Response<LoggedBody> {
    let Some(slot) = Slot::take(&api.subscribers) else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many event streams",
            format!("{MAX_SUBSCRIBERS} event streams are open already; close one"),
        )
        .into();
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let mut changes = api.book.subscribe();
    let (book, shutdown) = (api.book.clone(), api.shutdown.clone());
    // The first bytes at once: the client knows the stream is open.
    let _ = tx.try_send(Bytes::from_static(b"retry: 2000\n: provbox events\n\n"));
    api.tracker.spawn(async move {
        let _slot = slot;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let out = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                _ = keepalive.tick() => vec![Bytes::from_static(b": keepalive\n\n")],
                r = changes.recv() => match r {
                    Ok(keys) => {
                        let mut seen = std::collections::HashSet::new();
                        keys.iter()
                            .filter(|k| seen.insert(k.as_str()))
                            .map(|k| frame(&book, k))
                            .collect()
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::info!(missed = n, "api: an event stream fell behind; dropped");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            for b in out {
                if let Err(e) = tx.try_send(b) {
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        tracing::info!("api: an event stream's client is not reading; dropped");
                    }
                    return;
                }
            }
        }
    });
    let mut r = Response::new(LoggedBody::stream(rx));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}
