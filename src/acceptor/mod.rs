//! The one TCP accept loop behind every TCP listener (HTTP, HTTPS, legacy TLS, dashboard,
//! metrics, DNS over TCP, syslog over TCP).
//!
//! It admits a connection only within the listener's connection cap and its per-address
//! cap, hands it to the listener's `serve` with the idle and write timeouts to wrap it in
//! (TLS doors do their handshake inside `serve`, on the wrapped stream), and when the
//! process runs out of file descriptors it backs off and retries instead of spinning.
//! Every refusal is counted in `provbox_connections_refused_total{listener,reason}` and
//! logged in one form, at most once per [`LOG_EVERY`] per listener with a count of what
//! was held back.

mod idle;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use idle::{Idle, Timeouts};

use crate::confkit::{Dur, HttpLimits, Problems};
use crate::limit::{IpSlot, PerIp, WarnGate};
use crate::metrics::RefusedLabels;

/// Refusal warnings per listener are at most this frequent.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Out of descriptors: wait this long before the next accept.
const FD_BACKOFF: Duration = Duration::from_millis(100);

/// What one listener admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once by the listener.
    pub max_connections: usize,
    /// Connections served at once from one client address.
    pub max_connections_per_ip: usize,
    pub timeouts: Timeouts,
}

/// The `tcp_limits:` section of a non-HTTP front end (`dns`, `syslog`): each key unset
/// takes that front end's default.
#[derive(Debug, Deserialize, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub idle_timeout: Option<Dur>,
    pub write_timeout: Option<Dur>,
}

impl TcpLimits {
    /// The limits in force: what is set here, else `defaults`.
    pub fn or(&self, defaults: Limits) -> Limits {
        Limits {
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(defaults.max_connections_per_ip),
            timeouts: Timeouts {
                idle: self.idle_timeout.map_or(defaults.timeouts.idle, |d| d.0),
                write: self.write_timeout.map_or(defaults.timeouts.write, |d| d.0),
            },
        }
    }

    /// `section` is the dotted path of this section, e.g. `dns.tcp_limits`.
    pub fn validate(&self, section: &str, p: &mut Problems) {
        p.zeros(
            section,
            [
                ("max_connections", self.max_connections == Some(0)),
                (
                    "max_connections_per_ip",
                    self.max_connections_per_ip == Some(0),
                ),
                (
                    "idle_timeout",
                    self.idle_timeout.is_some_and(|d| d.0.is_zero()),
                ),
                (
                    "write_timeout",
                    self.write_timeout.is_some_and(|d| d.0.is_zero()),
                ),
            ],
            "is 0; expected at least 1 (or leave it out for the default)",
        );
    }
}

/// A connection admitted by the acceptor, for the listener to serve.
pub(crate) struct Conn {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    pub timeouts: Timeouts,
}

impl Conn {
    /// The stream under the listener's idle and write timeouts.
    pub(crate) fn guarded(self) -> Idle<TcpStream> {
        self.guarded_as(|s| s)
    }

    /// The stream, wrapped by `wrap` (e.g. for sendfile), under the listener's timeouts.
    pub(crate) fn guarded_as<T>(self, wrap: impl FnOnce(TcpStream) -> T) -> Idle<T> {
        Idle::new(wrap(self.tcp), self.timeouts)
    }
}

/// A connection's place in both caps; dropping it gives both back.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
}

pub(crate) struct Acceptor {
    name: String,
    limits: Limits,
    refuse_with: Option<&'static [u8]>,
    refused: Family<RefusedLabels, Counter>,
    slots: Arc<Semaphore>,
    /// Connections open per address.
    open: Arc<PerIp>,
    /// Refusals since the last warning, so a flood makes one log line per [`LOG_EVERY`].
    gate: WarnGate,
}

/// Accept errors that mean "no descriptor or memory for a new socket right now".
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Acceptor {
    /// `name` is the listener as metrics and logs show it (`http:0.0.0.0:8080`).
    pub(crate) fn new(
        name: String,
        limits: Limits,
        refused: Family<RefusedLabels, Counter>,
    ) -> Self {
        Acceptor {
            name,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            refuse_with: None,
            refused,
            open: PerIp::new(limits.max_connections_per_ip),
            gate: WarnGate::new(LOG_EVERY),
        }
    }

    /// Bytes sent to a refused client before closing (plain HTTP: a 503).
    pub(crate) fn refuse_with(mut self, bytes: &'static [u8]) -> Self {
        self.refuse_with = Some(bytes);
        self
    }

    /// Accept until `shutdown`; each admitted connection runs `serve` on `tracker` (so a
    /// shutdown can wait for it) and holds its slot until `serve` returns.
    pub(crate) async fn run<F, Fut>(
        self,
        socket: &TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        serve: F,
    ) where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut starved = false;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = socket.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) if out_of_resources(&e) => {
                    // The connection stays in the kernel's backlog; retrying at once would
                    // spin. Logged once per episode, counted per attempt.
                    if !starved {
                        tracing::warn!(listener = %self.name, reason = "out_of_fds", "accept failed, backing off until descriptors are free: {e}");
                        starved = true;
                    }
                    self.count("out_of_fds");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(FD_BACKOFF) => {}
                    }
                    continue;
                }
                Err(e) => {
                    // ECONNABORTED and the like concern one connection only.
                    tracing::debug!(listener = %self.name, "accept failed: {e}");
                    continue;
                }
            };
            if starved {
                tracing::info!(listener = %self.name, "accepting again");
                starved = false;
            }
            let _ = tcp.set_nodelay(true);
            match self.admit(peer.ip()) {
                Ok(slot) => {
                    let conn = Conn {
                        tcp,
                        peer,
                        timeouts: self.limits.timeouts,
                    };
                    let fut = serve(conn);
                    tracker.spawn(async move {
                        fut.await;
                        drop(slot);
                    });
                }
                Err(reason) => self.refuse(tcp, peer, reason),
            }
        }
    }

    fn admit(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        // The address first, so a client over its own cap is refused as such; a refused
        // total gives the address's place back (dropping `ip`).
        let ip = self.open.try_acquire(ip).ok_or("per_ip_limit")?;
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| "limit")?;
        Ok(Slot {
            _permit: permit,
            _ip: ip,
        })
    }

    fn count(&self, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels {
                listener: self.name.clone(),
                reason,
            })
            .inc();
    }

    fn refuse(&self, tcp: TcpStream, peer: SocketAddr, reason: &'static str) {
        self.count(reason);
        if let Some(bytes) = self.refuse_with {
            // A fresh socket's send buffer is empty: this never waits.
            let _ = tcp.try_write(bytes);
        }
        drop(tcp);
        let Some(held) = self.gate.admit() else {
            return;
        };
        let (max, per_ip) = (
            self.limits.max_connections,
            self.limits.max_connections_per_ip,
        );
        tracing::warn!(listener = %self.name, %peer, reason, max_connections = max, max_connections_per_ip = per_ip, also_refused = held, "connection refused");
    }
}

/// The HTTP limits section as the acceptor applies it.
impl HttpLimits {
    /// What the acceptor admits and how long a connection may stand still.
    pub fn accept(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            timeouts: Timeouts {
                idle: self.idle_timeout.0,
                write: self.write_timeout.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acceptor(total: usize, per_ip: usize) -> Acceptor {
        Acceptor::new(
            "test".into(),
            Limits {
                max_connections: total,
                max_connections_per_ip: per_ip,
                timeouts: Timeouts {
                    idle: Duration::from_secs(1),
                    write: Duration::from_secs(1),
                },
            },
            Family::default(),
        )
    }

    #[test]
    fn per_address_cap_then_total_cap_and_slots_come_back() {
        let a = acceptor(3, 2);
        let one: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = a.admit(one).unwrap();
        let _s2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).err(), Some("per_ip_limit"));
        // The same client over an IPv4-mapped IPv6 socket is the same address.
        assert_eq!(
            a.admit("::ffff:127.0.0.2".parse().unwrap()).err(),
            Some("per_ip_limit")
        );
        let _s3 = a.admit(other).unwrap();
        assert_eq!(a.admit(other).err(), Some("limit"));
        drop(s1);
        let _s4 = a.admit(one).unwrap();
        assert_eq!(a.open.held(one), 2);
    }

    #[test]
    fn closed_connections_leave_no_entry_behind() {
        let a = acceptor(8, 8);
        let slots: Vec<_> = (1..=5)
            .map(|i| a.admit(IpAddr::from([127, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(a.open.addresses(), 5);
        drop(slots);
        assert_eq!(a.open.addresses(), 0);
    }

    #[test]
    fn unset_keys_take_the_front_ends_defaults() {
        let d = Limits {
            max_connections: 256,
            max_connections_per_ip: 16,
            timeouts: Timeouts {
                idle: Duration::from_secs(10),
                write: Duration::from_secs(10),
            },
        };
        let l = TcpLimits {
            max_connections_per_ip: Some(2),
            idle_timeout: Some(Dur(Duration::from_secs(3))),
            ..TcpLimits::default()
        }
        .or(d);
        assert_eq!(l.max_connections, 256);
        assert_eq!(l.max_connections_per_ip, 2);
        assert_eq!(l.timeouts.idle, Duration::from_secs(3));
        assert_eq!(l.timeouts.write, Duration::from_secs(10));
    }
}
