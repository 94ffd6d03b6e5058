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

/// Why a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Shutdown,
    /// The client went away.
    Gone,
    /// The client stopped reading: its queue filled up.
    TooSlow,
    /// It fell behind the book's change feed.
    Lagged,
}

/// Copy changes to one subscriber's queue until it ends; never waits for the subscriber.
pub async fn pump(
    book: &StatusBook,
    changes: &mut broadcast::Receiver<Arc<[String]>>,
    tx: &mpsc::Sender<Bytes>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Ended {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let out: Vec<Bytes> = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            _ = tx.closed() => return Ended::Gone,
            _ = keepalive.tick() => vec![Bytes::from_static(b": keepalive\n\n")],
            r = changes.recv() => match r {
                Ok(keys) => {
                    let mut seen = std::collections::HashSet::new();
                    keys.iter()
                        .filter(|k| seen.insert(k.as_str()))
                        .map(|k| frame(book, k))
                        .collect()
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "api: an event stream fell behind; dropped");
                    return Ended::Lagged;
                }
                Err(broadcast::error::RecvError::Closed) => return Ended::Shutdown,
            },
        };
        for b in out {
            match tx.try_send(b) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!("api: an event stream's client is not reading; dropped");
                    return Ended::TooSlow;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Ended::Gone,
            }
        }
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
        let why = pump(&book, &mut changes, &tx, &shutdown).await;
        tracing::debug!(?why, "api: event stream ended");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{Mac, Registry};

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped_and_nobody_waits() {
        let book = StatusBook::in_memory(
            Arc::new(Registry::default()),
            crate::status::Metrics::default(),
        );
        let mut changes = book.subscribe();
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let shutdown = tokio_util::sync::CancellationToken::new();
        // More changes than the queue holds, none read: made before the pump runs, so
        // this also shows the book never waited for the subscriber.
        for i in 0..(QUEUE + 10) {
            let mac = Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
            book.lease_seen(
                mac,
                std::net::IpAddr::from([198, 18, 1, i as u8]),
                None,
                None,
            );
        }
        let why = tokio::time::timeout(
            Duration::from_secs(10),
            pump(&book, &mut changes, &tx, &shutdown),
        )
        .await
        .expect("the pump never waits");
        assert_eq!(why, Ended::TooSlow);
        let first = rx.try_recv().unwrap();
        let first = String::from_utf8_lossy(&first);
        assert!(first.starts_with("event: device\ndata: "), "{first}");
        assert!(first.contains("02:00:00:00:00:00"), "{first}");

        // A reader that keeps up gets every change, and the stream ends at shutdown.
        let mut changes = book.subscribe();
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let sd = shutdown.clone();
        let b2 = book.clone();
        let task = tokio::spawn(async move { pump(&b2, &mut changes, &tx, &sd).await });
        assert!(book.forget("02:00:00:00:00:01").is_some());
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&got)
                .starts_with("event: forgotten\ndata: {\"key\":\"02:00:00:00:00:01\""),
            "{got:?}"
        );
        shutdown.cancel();
        assert_eq!(task.await.unwrap(), Ended::Shutdown);
    }

    #[test]
    fn the_number_of_streams_is_capped() {
        let n = Arc::new(AtomicUsize::new(0));
        let slots: Vec<Slot> = (0..MAX_SUBSCRIBERS).map_while(|_| Slot::take(&n)).collect();
        assert_eq!(slots.len(), MAX_SUBSCRIBERS);
        assert!(Slot::take(&n).is_none());
        drop(slots);
        assert_eq!(n.load(Ordering::Acquire), 0);
        assert!(Slot::take(&n).is_some());
    }
}
