//! The listener: receives requests on the configured port and hands each read request to
//! its own task. It does nothing that can wait on a client, so a slow or hostile client
//! cannot hold up anyone else's request.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::config::Config;
use super::metrics::TftpMetrics;
use super::options::Limits;
use super::packet::{self, Packet, code};
use super::sock;
use super::transfer::{self, Job, Shared};
use crate::devices::TransferDone;
use crate::frontend::{Context, bind_error};
use crate::limit::{PerIp, WarnGate};
use crate::metrics::{OutcomeLabels, Protocol};

/// With the `fault-injection` feature, a read request for this file panics the listener.
#[cfg(feature = "fault-injection")]
pub(super) const FAULT_INJECTION_FILE: &str = "provbox-fault-injection/panic";
/// With `fault-injection`, a read request for this file stops the listener for 12 s, as a
/// wedged loop would: well past the supervisor's 5 s staleness, so `/readyz` has a wide
/// window to report it even on a loaded machine.
#[cfg(feature = "fault-injection")]
pub(super) const FAULT_WEDGE_FILE: &str = "provbox-fault-injection/wedge";

/// The bound listener, not yet serving (every front end binds before any serves).
pub struct Bound {
    socket: UdpSocket,
    pktinfo: bool,
    cfg: Config,
    metrics: Arc<TftpMetrics>,
}

pub async fn bind(cfg: &Config, metrics: Arc<TftpMetrics>) -> Result<Bound> {
    let addr = cfg.listen.value;
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|e| bind_error("tftp.listen", addr, e))?;
    let pktinfo = addr.ip().is_unspecified();
    if pktinfo {
        sock::enable_pktinfo(&socket, addr.is_ipv6())
            .map_err(|e| anyhow::anyhow!("tftp.listen: cannot enable IP_PKTINFO on {addr}: {e}"))?;
    }
    Ok(Bound {
        socket,
        pktinfo,
        cfg: cfg.clone(),
        metrics,
    })
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serve until `ctx.shutdown`; transfers run on `ctx.tracker`. The listener runs under
    /// the supervisor: after a panic it is made again over the same socket and state.
    pub fn start(self, ctx: &Context) {
        let shared = Arc::new(Shared {
            provisioner: ctx.provisioner.clone(),
            metrics: ctx.metrics.clone(),
            tftp: self.metrics.clone(),
            limits: Limits {
                max_blksize: self.cfg.max_blksize.value as u16,
                max_window: self.cfg.max_window.value as u16,
                max_timeout: self.cfg.max_timeout.value.0,
            },
            timeout: self.cfg.timeout.value.0,
            retries: self.cfg.retries.value,
            port: self.socket.local_addr().map_or(0, |a| a.port()),
            active: Mutex::new(HashMap::new()),
            uploads: ctx.uploads.clone().filter(|u| u.tftp()),
        });
        let slots = Arc::new(Semaphore::new(self.cfg.max_transfers.value));
        let per_ip = PerIp::new(self.cfg.max_transfers_per_ip.value);
        let shutdown = ctx.shutdown.clone();
        let tracker = ctx.tracker.clone();
        let this = Arc::new(self);
        ctx.supervisor
            .spawn_restartable("tftp", "tftp listener", move || {
                let (this, shared, slots) = (this.clone(), shared.clone(), slots.clone());
                let per_ip = per_ip.clone();
                let (shutdown, tracker) = (shutdown.clone(), tracker.clone());
                Box::pin(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = this.listen(shared, slots, per_ip, tracker) => {}
                    }
                })
            });
    }

    async fn listen(
        &self,
        shared: Arc<Shared>,
        slots: Arc<Semaphore>,
        per_ip: Arc<PerIp>,
        tracker: tokio_util::task::TaskTracker,
    ) {
        // A flood from one address is refused packet by packet; its warning is not.
        let per_ip_warning = WarnGate::new(Duration::from_secs(10));
        let listen_ip = self.cfg.listen.value.ip();
        // A request is at most 512 bytes by RFC 2347; room for generous clients.
        let mut buf = vec![0u8; 4096];
        loop {
            let got = if self.pktinfo {
                sock::recv_with_dst(&self.socket, &mut buf).await
            } else {
                self.socket
                    .recv_from(&mut buf)
                    .await
                    .map(|(len, peer)| sock::Received {
                        len,
                        peer,
                        local: None,
                    })
            };
            let r = match got {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; nothing to do but go on.
                    tracing::debug!("tftp: receive: {e}");
                    continue;
                }
            };
            let peer = r.peer;
            if peer.port() == 0 {
                self.metrics.malformed("source_port_zero");
                continue;
            }
            let (request, write) = match packet::parse(&buf[..r.len]) {
                // Test builds only: a request for this name panics the loop, so the suite
                // can watch the supervisor restart it.
                #[cfg(feature = "fault-injection")]
                Ok(Packet::Rrq(req)) if req.filename == FAULT_INJECTION_FILE => {
                    panic!("fault injection: tftp request for {FAULT_INJECTION_FILE}")
                }
                #[cfg(feature = "fault-injection")]
                Ok(Packet::Rrq(req)) if req.filename == FAULT_WEDGE_FILE => {
                    // The loop stops; the runtime's other tasks move to another thread (as
                    // they would not for a loop blocking its worker outright: then the
                    // admin listener could stall too, and only the watchdog notices).
                    tokio::task::block_in_place(|| {
                        std::thread::sleep(std::time::Duration::from_secs(12))
                    });
                    continue;
                }
                Ok(Packet::Rrq(req)) => (req, false),
                // Under an upload pattern, with `uploads.tftp` on: a transfer like a read,
                // under the same caps; the upload store decides the rest.
                Ok(Packet::Wrq(req)) if is_upload(&shared, &req.filename) => (req, true),
                Ok(Packet::Wrq(req)) => {
                    tracing::info!(peer = %peer, file = %shared.provisioner.log_path(&req.filename), outcome = "write_refused", "tftp transfer");
                    count_refusal(&shared, peer, &req.filename, "write_refused", "write");
                    self.reply(peer, code::ACCESS_VIOLATION, "read-only server")
                        .await;
                    continue;
                }
                Ok(_) => {
                    tracing::debug!(peer = %peer, "tftp: dropped a non-request packet on the listener");
                    self.metrics.malformed("unexpected_packet");
                    continue;
                }
                Err(m) => {
                    tracing::debug!(peer = %peer, reason = m.reason(), "tftp: dropped a malformed packet");
                    self.metrics.malformed(m.reason());
                    continue;
                }
            };
            let key = {
                let mut h = DefaultHasher::new();
                buf[..r.len].hash(&mut h);
                h.finish()
            };
            let duplicate = match shared.active.lock() {
                Ok(mut a) => a.insert(peer, key) == Some(key),
                Err(_) => false,
            };
            if duplicate {
                // The client retransmitted its request while its transfer runs.
                self.metrics.malformed("duplicate_request");
                continue;
            }
            let Some(ip_slot) = per_ip.try_acquire(peer.ip()) else {
                forget_request(&shared, peer, key);
                let limit = self.cfg.max_transfers_per_ip.value;
                match per_ip_warning.admit() {
                    Some(held_back) => tracing::warn!(
                        peer = %peer,
                        file = %shared.provisioner.log_path(&request.filename),
                        outcome = "per_ip_limit",
                        limit,
                        held_back,
                        "tftp: too many transfers from one address, refused (this warning at most every 10 s; held_back = refusals not logged since the last)"
                    ),
                    None => {
                        tracing::debug!(peer = %peer, outcome = "per_ip_limit", "tftp transfer")
                    }
                }
                count_refusal(
                    &shared,
                    peer,
                    &request.filename,
                    "per_ip_limit",
                    "per_ip_limit",
                );
                self.reply(
                    peer,
                    code::NOT_DEFINED,
                    "too many transfers from your address, try again later",
                )
                .await;
                continue;
            };
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    forget_request(&shared, peer, key);
                    tracing::warn!(peer = %peer, file = %shared.provisioner.log_path(&request.filename), outcome = "busy", limit = self.cfg.max_transfers.value, "tftp transfer");
                    count_refusal(&shared, peer, &request.filename, "busy", "busy");
                    self.reply(peer, code::NOT_DEFINED, "server busy, try again later")
                        .await;
                    continue;
                }
            };
            let job = Job {
                peer,
                local: r.local.unwrap_or(listen_ip),
                request,
                key,
                started: Instant::now(),
                permit,
                ip_slot,
                write,
            };
            tracker.spawn(transfer::run(shared.clone(), job));
        }
    }

    async fn reply(&self, peer: SocketAddr, c: u16, message: &str) {
        if let Err(e) = self.socket.send_to(&packet::error(c, message), peer).await {
            tracing::debug!(peer = %peer, "tftp: cannot send error: {e}");
        }
    }
}

/// A write request names a file under an upload pattern, and TFTP uploads are on.
fn is_upload(shared: &Shared, filename: &str) -> bool {
    let Some(up) = &shared.uploads else {
        return false;
    };
    crate::catalog::path::normalize(filename).is_ok_and(|key| up.target(&key).is_some())
}

/// A refused request is not a running transfer: its retransmission is a new request.
fn forget_request(shared: &Shared, peer: SocketAddr, key: u64) {
    if let Ok(mut a) = shared.active.lock()
        && a.get(&peer) == Some(&key)
    {
        a.remove(&peer);
    }
}

/// A request refused by the listener itself (write, busy): counted like any transfer.
fn count_refusal(
    shared: &Shared,
    peer: SocketAddr,
    path: &str,
    outcome: &'static str,
    reason: &'static str,
) {
    shared.provisioner.transfer_done(&TransferDone {
        protocol: Protocol::tftp,
        peer,
        path,
        user_agent: None,
        client_mac: None,
        bytes: 0,
        outcome,
    });
    shared.tftp.outcome(outcome);
    shared.metrics.refused(Protocol::tftp, reason);
    shared
        .metrics
        .requests
        .get_or_create(&OutcomeLabels {
            protocol: Protocol::tftp,
            outcome,
        })
        .inc();
}
