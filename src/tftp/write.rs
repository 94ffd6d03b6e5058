//! One write transfer (WRQ), taken only under `uploads.patterns` with `uploads.tftp` on:
//! the phone's file goes to the upload store ([`crate::uploads`]), which decides who may
//! write what and how much. Lock-step (RFC 1350): blksize, timeout and tsize are
//! negotiated, windowsize is not offered. The listener's caps (slots, per-address) apply
//! as to reads.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::options;
use super::packet::{self, Packet, code};
use super::transfer::{Job, Report, Shared, refused_mode};
use crate::metrics::Protocol;
use crate::uploads::{Refused, Stored};

/// RFC 1350's "Disk full or allocation exceeded".
const DISK_FULL: u16 = 3;

pub(super) async fn serve(shared: &Shared, job: &Job) -> std::io::Result<Report> {
    let sock = UdpSocket::bind(SocketAddr::new(job.local, 0)).await?;
    sock.connect(job.peer).await?;
    let Some(up) = shared.uploads.as_deref() else {
        let _ = sock
            .send(&packet::error(code::ACCESS_VIOLATION, "read-only server"))
            .await;
        return Ok(Report::refused("write_refused"));
    };
    let req = &job.request;
    let (result, mut report) = receive(shared, up, job, &sock).await;
    if let Err(e) = &result {
        let (c, msg) = match e {
            Refused::NotUpload | Refused::Forbidden(_) | Refused::Unauthorized { .. } => {
                (code::ACCESS_VIOLATION, "Access violation")
            }
            Refused::TooLarge(_) => (DISK_FULL, "Upload over quota"),
            Refused::Io(_) => (code::NOT_DEFINED, "Cannot store the file"),
            // The client is gone or gave up: nothing to tell it.
            Refused::Cut => (0, ""),
        };
        if !msg.is_empty() {
            let _ = sock.send(&packet::error(c, msg)).await;
        }
        shared.metrics.refused(Protocol::tftp, e.reason());
        report.detail.get_or_insert_with(|| e.to_string());
    }
    let shown = shared.provisioner.log_path(&req.filename).into_owned();
    up.record(job.peer, &shown, &result);
    // Noted on the timeline once the transfer itself is recorded (`transfer::run`).
    if let Ok(s) = &result
        && let Ok(key) = crate::catalog::path::normalize(&req.filename)
        && let Some(t) = up.target(&key)
    {
        report.note = Some((t.mac, s.describe("tftp")));
        up.verify(&shared.provisioner, &t);
    }
    Ok(report)
}

/// Take the file; the report says how the transfer went, the result what was stored.
async fn receive(
    shared: &Shared,
    up: &crate::uploads::Uploads,
    job: &Job,
    sock: &UdpSocket,
) -> (Result<Stored, Refused>, Report) {
    let req = &job.request;
    let mut report = Report::refused("access_violation");
    if refused_mode(sock, &req.mode, "octet").await {
        report.outcome = "bad_mode";
        return (Err(Refused::NotUpload), report);
    }
    let target = match up.authorize(&shared.provisioner, &job.fetch_request(shared.port)) {
        Ok(t) => t,
        Err(e) => return (Err(e), report),
    };
    // In a write request tsize is the size the client will send (RFC 2349).
    let declared = req
        .options
        .iter()
        .find(|(k, _)| k == "tsize")
        .and_then(|(_, v)| v.trim().parse::<u64>().ok());
    let mut w = match up.begin(target, declared) {
        Ok(w) => w,
        Err(e) => {
            report.outcome = "too_large";
            return (Err(e), report);
        }
    };
    let offered: Vec<(String, String)> = req
        .options
        .iter()
        .filter(|(k, _)| k != "windowsize")
        .cloned()
        .collect();
    let neg = options::negotiate(&offered, shared.limits, declared.unwrap_or(0));
    let timeout = neg.timeout.unwrap_or(shared.timeout);
    let blksize = neg.blksize as usize;
    report.blksize = neg.blksize;
    // What answers the last DATA (or the request): resent when the next does not come.
    let mut answer = if neg.oack.is_empty() {
        packet::ack(0)
    } else {
        packet::oack(&neg.oack)
    };
    let mut expect: u16 = 1;
    let mut buf = vec![0u8; blksize + 4];
    let mut timeouts = 0u32;
    let outcome = 'transfer: loop {
        if let Err(e) = sock.send(&answer).await {
            report.detail = Some(e.to_string());
            break 'transfer Err("client_gone");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    timeouts += 1;
                    if timeouts > shared.retries {
                        break 'transfer Err("timeout");
                    }
                    report.retransmits += 1;
                    continue 'transfer;
                }
                Ok(Err(e)) => {
                    report.detail = Some(e.to_string());
                    break 'transfer Err("client_gone");
                }
                Ok(Ok(n)) => n,
            };
            match packet::parse(&buf[..n]) {
                Ok(Packet::Data { block, data }) if block == expect => {
                    if data.len() > blksize {
                        shared.tftp.malformed("oversized_data");
                        continue;
                    }
                    if let Err(e) = w.write(data) {
                        report.outcome = "too_large";
                        return (Err(e), report);
                    }
                    timeouts = 0;
                    answer = packet::ack(block);
                    expect = expect.wrapping_add(1);
                    if data.len() < blksize {
                        // The last ACK goes once the file is in place: a client that
                        // exits on it finds it stored, and a failed commit gets an ERROR.
                        break 'transfer Ok(());
                    }
                    continue 'transfer;
                }
                // Our ACK was lost: the client sent the previous block again.
                Ok(Packet::Data { block, .. }) if block == expect.wrapping_sub(1) => {
                    continue 'transfer;
                }
                Ok(Packet::Error { code: c, message }) => {
                    report.detail = Some(format!("client error {c}: {message}"));
                    break 'transfer Err("client_error");
                }
                Ok(_) => shared.tftp.malformed("unexpected_packet"),
                Err(m) => shared.tftp.malformed(m.reason()),
            }
        }
    };
    report.bytes = w.written();
    match outcome {
        Ok(()) => {
            let r = w.finish();
            if r.is_ok() {
                let _ = sock.send(&answer).await;
            }
            report.outcome = match &r {
                Ok(_) => "uploaded",
                Err(Refused::TooLarge(_)) => "too_large",
                Err(_) => "error",
            };
            (r, report)
        }
        Err(o) => {
            report.outcome = o;
            (Err(Refused::Cut), report)
        }
    }
}
