//! Health checks: one task per (address, check), probing only the configured targets, one
//! probe at a time with a timeout. Answers read the state through a shared flag.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::config::{Probe, Target};
use super::metrics::DnsMetrics;
use crate::http_client::{Client, Get, Target as Url};

/// Whether an address is offered. Starts up: an address is assumed to work until its check
/// says otherwise, so a restart does not briefly hide every server.
#[derive(Debug)]
pub(super) struct Health {
    up: AtomicBool,
}

impl Health {
    pub(super) fn new() -> Health {
        Health {
            up: AtomicBool::new(true),
        }
    }
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
    pub(super) fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            // Cached answers were made with the old state.
            super::fastpath::HEALTH_EPOCH.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

struct Running {
    state: Arc<Health>,
    stop: CancellationToken,
}

/// The running checkers, kept in step with the configuration.
pub(super) struct Board {
    running: Mutex<HashMap<Target, Running>>,
    metrics: Arc<DnsMetrics>,
    shutdown: CancellationToken,
}

impl Board {
    pub(super) fn new(metrics: Arc<DnsMetrics>, shutdown: CancellationToken) -> Board {
        Board {
            running: Mutex::new(HashMap::new()),
            metrics,
            shutdown,
        }
    }

    /// Start checkers for new targets, stop those no longer wanted, keep the rest (and their
    /// state) untouched. Returns the state of every wanted target.
    pub(super) fn sync(&self, wanted: &[Target]) -> HashMap<Target, Arc<Health>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|t, r| {
            let keep = wanted.contains(t);
            if !keep {
                r.stop.cancel();
                self.metrics
                    .healthy
                    .remove(&DnsMetrics::health_labels(t.ip, &t.probe.to_string()));
                tracing::info!(address = %t.ip, check = %t.probe, "dns: health check stopped");
            }
            keep
        });
        for t in wanted {
            if running.contains_key(t) {
                continue;
            }
            let state = Arc::new(Health::new());
            let stop = self.shutdown.child_token();
            tokio::spawn(run(
                t.clone(),
                state.clone(),
                stop.clone(),
                self.metrics.clone(),
            ));
            running.insert(t.clone(), Running { state, stop });
        }
        running
            .iter()
            .map(|(t, r)| (t.clone(), r.state.clone()))
            .collect()
    }
}

async fn run(t: Target, state: Arc<Health>, stop: CancellationToken, metrics: Arc<DnsMetrics>) {
    let check = t.probe.to_string();
    let gauge = metrics
        .healthy
        .get_or_create(&DnsMetrics::health_labels(t.ip, &check))
        .clone();
    gauge.set(1);
    tracing::info!(address = %t.ip, %check, "dns: health check started");
    let (mut fails, mut oks) = (0u32, 0u32);
    loop {
        let result = tokio::select! {
            r = probe(&t) => r,
            _ = stop.cancelled() => return,
        };
        match result {
            Ok(()) => {
                fails = 0;
                oks = oks.saturating_add(1);
                if !state.is_up() && oks >= t.rise {
                    state.set(true);
                    gauge.set(1);
                    tracing::info!(address = %t.ip, %check, "dns: address healthy again, offered in answers");
                }
            }
            Err(why) => {
                oks = 0;
                fails = fails.saturating_add(1);
                if state.is_up() && fails >= t.fall {
                    state.set(false);
                    gauge.set(0);
                    tracing::warn!(address = %t.ip, %check, %why, "dns: address failed its health check, left out of answers");
                } else {
                    tracing::debug!(address = %t.ip, %check, %why, "dns: health check failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(t.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn probe(t: &Target) -> Result<(), String> {
    match tokio::time::timeout(t.timeout, probe_once(t)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", t.timeout)),
    }
}

async fn probe_once(t: &Target) -> Result<(), String> {
    match &t.probe {
        Probe::Tcp(port) => TcpStream::connect(SocketAddr::new(t.ip, *port))
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Probe::Http { port, .. } => {
            // The probe prints as the URL it was read from.
            let target = Url::parse(&t.probe.to_string())?;
            let get = Get::new(target).connect_to(SocketAddr::new(t.ip, *port));
            let status = Client::new(t.timeout, 0)
                .status(&get)
                .await
                .map_err(|e| e.to_string())?;
            status_ok(status.as_u16())
        }
    }
}

fn status_ok(code: u16) -> Result<(), String> {
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP status {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statuses() {
        assert!(status_ok(200).is_ok());
        assert!(status_ok(302).is_ok());
        assert!(status_ok(503).is_err());
        assert!(status_ok(404).is_err());
    }

    /// The check dials the address it checks, names the configured host, and reads an
    /// IPv6 literal whole.
    #[tokio::test]
    async fn http_probe_over_ipv6_dials_the_checked_address() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for answer in ["200 OK", "503 Busy"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 2048];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    n += s.read(&mut buf[n..]).await.unwrap();
                }
                heads.push(String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase());
                let r = format!("HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n");
                s.write_all(r.as_bytes()).await.unwrap();
            }
            heads
        });
        let t = Target {
            ip: "::1".parse().unwrap(),
            probe: Probe::Http {
                port,
                host: "[::1]".into(),
                path: "/healthz".into(),
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            fall: 1,
            rise: 1,
        };
        assert_eq!(probe(&t).await, Ok(()));
        assert_eq!(probe(&t).await, Err("HTTP status 503".into()));
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("get /healthz http/1.1\r\n"),
            "{heads:?}"
        );
        assert!(
            heads[0].contains(&format!("host: [::1]:{port}\r\n")),
            "{heads:?}"
        );
    }

    #[tokio::test]
    async fn tcp_probe_follows_the_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target {
            ip: "127.0.0.1".parse().unwrap(),
            probe: Probe::Tcp(port),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            fall: 1,
            rise: 1,
        };
        assert!(probe(&t).await.is_ok());
        drop(l);
        assert!(probe(&t).await.is_err());
    }
}
