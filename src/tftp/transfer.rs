//! One read transfer: its own task and its own UDP socket (a new TID, connected to the
//! client so the kernel drops other senders), serving slices of the catalog entry's
//! immutable bytes. Ends on the final ACK, a client ERROR, or after `retries` timeouts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;

use super::metrics::{OptionLabel, TftpMetrics};
use super::options::{self, Limits};
use super::packet::{self, Mode, Packet, Request, code};
use super::window::{Ack, Window};
use super::{netascii, sock};
use crate::catalog::Refusal;
use crate::devices::{FetchRequest, Provisioner};
use crate::limit::IpSlot;
use crate::metrics::{Metrics, OutcomeLabels, ProtoLabels, Protocol};

/// What every transfer shares: the device layer, metrics and the configured limits.
pub(super) struct Shared {
    pub provisioner: Arc<Provisioner>,
    pub metrics: Arc<Metrics>,
    pub tftp: Arc<TftpMetrics>,
    pub limits: Limits,
    pub timeout: Duration,
    pub retries: u32,
    /// The listener's port (with `Job::local`, the address a request reached).
    pub port: u16,
    /// Clients (address and port) with a transfer running, with a hash of the request
    /// that started it: a retransmitted (identical) RRQ must not start a second transfer.
    /// A different request from the same port (a boot ROM's second RRQ after its tsize
    /// probe) is served, whatever the first transfer is doing.
    pub active: Mutex<HashMap<SocketAddr, u64>>,
    /// Where write requests go, when `uploads.tftp` takes them.
    pub uploads: Option<Arc<crate::uploads::Uploads>>,
}

pub(super) struct Job {
    pub peer: SocketAddr,
    /// The address the request reached: the transfer sends from it.
    pub local: IpAddr,
    pub request: Request,
    /// Hash of the request datagram, the value in `Shared::active`.
    pub key: u64,
    pub started: Instant,
    pub permit: OwnedSemaphorePermit,
    /// This client address's share of `tftp.max_transfers_per_ip`.
    pub ip_slot: IpSlot,
    /// A write request (an upload), not a read.
    pub write: bool,
}

/// Retransmissions before the client's first ACK, whatever `tftp.retries` says: a peer
/// that never answers (a forged source, a flood) costs at most three packets.
const RETRIES_BEFORE_FIRST_ACK: u32 = 2;

/// What a transfer sends: slices of the catalog's bytes, or their netascii form made a
/// block at a time from them. Neither copies the file.
enum Body {
    Octet(Bytes),
    Netascii(netascii::Stream),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Octet(b) => b.len() as u64,
            Body::Netascii(s) => s.len(),
        }
    }

    fn block(&mut self, r: Range<usize>) -> &[u8] {
        match self {
            Body::Octet(b) => &b[r],
            Body::Netascii(s) => s.block(r),
        }
    }

    /// Bytes before `off` are acknowledged and will not be sent again.
    fn forget_before(&mut self, off: u64) {
        if let Body::Netascii(s) = self {
            s.forget_before(off);
        }
    }
}

/// Removes the client from `active` however the transfer ends (unless a newer request
/// from the same port took its place).
struct ActiveGuard<'a>(&'a Shared, SocketAddr, u64);
impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut a) = self.0.active.lock()
            && a.get(&self.1) == Some(&self.2)
        {
            a.remove(&self.1);
        }
    }
}

/// How the transfer ended, for the log line and metrics.
pub(super) struct Report {
    pub(super) outcome: &'static str,
    pub(super) bytes: u64,
    pub(super) blksize: u16,
    pub(super) windowsize: u16,
    pub(super) retransmits: u64,
    pub(super) detail: Option<String>,
    /// A timeline note for the device (an upload), told after the transfer.
    pub(super) note: Option<(crate::devices::Mac, String)>,
}

impl Report {
    pub(super) fn refused(outcome: &'static str) -> Report {
        Report {
            outcome,
            bytes: 0,
            blksize: options::DEFAULT_BLKSIZE,
            windowsize: 1,
            retransmits: 0,
            detail: None,
            note: None,
        }
    }
}

pub(super) async fn run(shared: Arc<Shared>, job: Job) {
    let _active = ActiveGuard(&shared, job.peer, job.key);
    let _permit = &job.permit;
    let _ip_slot = &job.ip_slot;
    // A clone shares the gauge; the family's lock guard must not live across awaits.
    let in_flight = shared
        .metrics
        .in_flight
        .get_or_create(&ProtoLabels {
            protocol: Protocol::tftp,
        })
        .clone();
    in_flight.inc();
    let served = if job.write {
        super::write::serve(&shared, &job).await
    } else {
        serve(&shared, &job).await
    };
    let report = match served {
        Ok(r) => r,
        Err(e) => Report {
            detail: Some(e.to_string()),
            ..Report::refused("socket_error")
        },
    };
    in_flight.dec();
    let elapsed = job.started.elapsed();
    let m = &shared.metrics;
    m.requests
        .get_or_create(&OutcomeLabels {
            protocol: Protocol::tftp,
            outcome: report.outcome,
        })
        .inc();
    let proto = ProtoLabels {
        protocol: Protocol::tftp,
    };
    // Bytes received by a write are counted by the upload store, not as sent.
    let sent = if job.write { 0 } else { report.bytes };
    m.sent_bytes.get_or_create(&proto).inc_by(sent);
    m.duration
        .get_or_create(&proto)
        .observe(elapsed.as_secs_f64());
    let t = &shared.tftp;
    t.outcome(report.outcome);
    t.bytes.inc_by(sent);
    t.retransmits.inc_by(report.retransmits);
    t.duration.observe(elapsed.as_secs_f64());
    // The device status book hears of every transfer, as it does for HTTP.
    shared
        .provisioner
        .transfer_done(&crate::devices::TransferDone {
            protocol: Protocol::tftp,
            peer: job.peer,
            path: &job.request.filename,
            user_agent: None,
            client_mac: None,
            bytes: report.bytes,
            outcome: report.outcome,
        });
    if let Some((mac, detail)) = &report.note {
        shared.provisioner.registry().note(*mac, "upload", detail);
    }
    tracing::info!(
        peer = %job.peer,
        file = %shared.provisioner.log_path(&job.request.filename),
        bytes = report.bytes,
        blksize = report.blksize,
        windowsize = report.windowsize,
        retransmits = report.retransmits,
        outcome = report.outcome,
        detail = report.detail.as_deref().unwrap_or(""),
        ms = elapsed.as_millis() as u64,
        "tftp transfer"
    );
}

impl Job {
    /// What the device layer is asked for this request, served on `port`.
    pub(super) fn fetch_request(&self, port: u16) -> FetchRequest<'_> {
        FetchRequest {
            protocol: Protocol::tftp,
            peer: self.peer,
            local: Some(SocketAddr::new(self.local, port)),
            path: &self.request.filename,
            user_agent: None,
            client: None,
            http: None,
        }
    }
}

/// Answers a transfer mode other than `supported` with an error packet; true if it did.
pub(super) async fn refused_mode(sock: &UdpSocket, mode: &Mode, supported: &str) -> bool {
    let Mode::Other(m) = mode else {
        return false;
    };
    let _ = sock
        .send(&packet::error(
            code::ILLEGAL_OPERATION,
            &format!("unsupported mode {m:?}; use {supported}"),
        ))
        .await;
    true
}

async fn serve(shared: &Shared, job: &Job) -> std::io::Result<Report> {
    let sock = UdpSocket::bind(SocketAddr::new(job.local, 0)).await?;
    sock.connect(job.peer).await?;
    let refuse = |outcome: &'static str, reason: &'static str| {
        shared.metrics.refused(Protocol::tftp, reason);
        Report::refused(outcome)
    };
    let req = &job.request;
    if refused_mode(&sock, &req.mode, "octet or netascii").await {
        return Ok(refuse("bad_mode", "mode"));
    }
    let fetched = shared.provisioner.fetch(&job.fetch_request(shared.port));
    let entry = match fetched {
        Ok(e) => e,
        Err(refusal) => {
            let (c, msg, outcome) = match refusal {
                Refusal::NotFound => (code::FILE_NOT_FOUND, "File not found", "not_found"),
                // TFTP carries no credentials: an answer that needs them is refused.
                Refusal::BadPath(_) | Refusal::Forbidden(_) | Refusal::Unauthorized { .. } => (
                    code::ACCESS_VIOLATION,
                    "Access violation",
                    "access_violation",
                ),
            };
            let _ = sock.send(&packet::error(c, msg)).await;
            let mut r = refuse(outcome, refusal.reason());
            r.detail = Some(refusal.reason().to_string());
            return Ok(r);
        }
    };
    let mut body = match req.mode {
        Mode::Netascii => Body::Netascii(netascii::Stream::new(entry.body.clone())),
        _ => Body::Octet(entry.body.clone()),
    };
    let neg = options::negotiate(&req.options, shared.limits, body.len());
    for option in neg.used() {
        shared
            .tftp
            .options
            .get_or_create(&OptionLabel { option })
            .inc();
    }
    let oack = (!neg.oack.is_empty()).then(|| packet::oack(&neg.oack));
    let timeout = neg.timeout.unwrap_or(shared.timeout);
    let mut w = Window::new(body.len(), neg.blksize, neg.windowsize, oack.is_some());
    let mut report = Report {
        outcome: "ok",
        bytes: 0,
        blksize: neg.blksize,
        windowsize: neg.windowsize,
        retransmits: 0,
        detail: None,
        note: None,
    };
    let mut buf = [0u8; 1024];
    let mut timeouts = 0u32;
    let mut acked = false;
    let outcome = 'transfer: loop {
        // Send what is due: the OACK, or the rest of the current window.
        let sent = if let Some(o) = oack.as_ref().filter(|_| w.awaiting_oack_ack()) {
            sock.send(o).await.map(|_| ())
        } else {
            let due = w.due();
            let mut r = Ok(());
            for n in due.clone() {
                let (wire, bytes) = w.block(n);
                r = sock::send_parts(&sock, &packet::data_header(wire), body.block(bytes)).await;
                if r.is_err() {
                    break;
                }
            }
            w.sent_through(due.end);
            r
        };
        if let Err(e) = sent {
            report.detail = Some(e.to_string());
            break 'transfer "client_gone";
        }
        // Wait for an ACK that moves the window, until one timeout from the send: packets
        // that move nothing do not extend the wait.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    timeouts += 1;
                    let allowed = if acked {
                        shared.retries
                    } else {
                        shared.retries.min(RETRIES_BEFORE_FIRST_ACK)
                    };
                    if timeouts > allowed {
                        break 'transfer "timeout";
                    }
                    report.retransmits += w.rewind();
                    continue 'transfer;
                }
                // ICMP port unreachable surfaces here on a connected socket.
                Ok(Err(e)) => {
                    report.detail = Some(e.to_string());
                    break 'transfer "client_gone";
                }
                Ok(Ok(n)) => n,
            };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Ack(block)) => match w.on_ack(block) {
                    Ack::Progress => {
                        timeouts = 0;
                        acked = true;
                        body.forget_before(w.acknowledged_bytes());
                        continue 'transfer;
                    }
                    Ack::Done => break 'transfer "ok",
                    Ack::Ignored => {}
                },
                Ok(Packet::Error { code: c, message }) => {
                    report.detail = Some(format!("client error {c}: {message}"));
                    // ERROR 8 answering the OACK: the client only wanted the options (tsize
                    // probing); it ends the transfer with nothing resent.
                    if c == code::OPTION_REFUSED && w.awaiting_oack_ack() {
                        break 'transfer "options_declined";
                    }
                    break 'transfer "client_error";
                }
                Ok(_) => shared.tftp.malformed("unexpected_packet"),
                Err(m) => shared.tftp.malformed(m.reason()),
            }
        }
    };
    report.outcome = outcome;
    report.bytes = if outcome == "ok" {
        body.len()
    } else {
        w.acknowledged_bytes()
    };
    Ok(report)
}
