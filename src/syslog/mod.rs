//! Syslog receiver: phones report every resync and upgrade in their syslog lines. UDP (and
//! optionally TCP, RFC 6587 octet counting or newline framing); recognised lines become
//! device events in the status book, other lines are kept per device (bounded), and every
//! line can be appended raw to a file.

pub mod forward;
pub mod parse;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry as PromRegistry;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acceptor::{Acceptor, Idle, Limits, TcpLimits, Timeouts};
use crate::confkit::{At, ListenerSpec, Problems, Transport};
use crate::devices::Mac;
use crate::frontend::Context;
use crate::metrics::{EventLabel, RefusalLabels, Registers};
use crate::status::StatusBook;

/// Longest frame accepted; RFC 5424 asks receivers to take at least 2048 octets.
const MAX_FRAME: usize = 8192;
/// Syslog over TCP: phones use UDP, TCP is for relays, which keep a connection open and
/// may be quiet for minutes between lines.
pub const TCP_DEFAULTS: Limits = Limits {
    max_connections: 64,
    max_connections_per_ip: 8,
    timeouts: Timeouts {
        idle: std::time::Duration::from_secs(300),
        write: std::time::Duration::from_secs(10),
    },
};

/// Every key is optional: a missing one takes its value from [`Config::default`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    /// UDP address (514 on the appliance).
    pub listen: At<SocketAddr>,
    /// Optional TCP address.
    pub tcp_listen: Option<At<SocketAddr>>,
    /// Append every received line to this file (control characters escaped).
    pub forward_file: Option<At<PathBuf>>,
    /// Size at which forward_file is rotated to `<file>.1`.
    pub forward_max: At<forward::Size>,
    /// Caps and timeouts of `tcp_listen`; unset keys take [`TCP_DEFAULTS`].
    pub tcp_limits: TcpLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: At::new(SocketAddr::from(([0, 0, 0, 0], 514))),
            tcp_listen: None,
            forward_file: None,
            forward_max: At::default(),
            tcp_limits: TcpLimits::default(),
        }
    }
}

impl Config {
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(f) = &mut self.forward_file
            && f.value.is_relative()
        {
            f.value = base.join(&f.value);
        }
    }

    pub fn validate(&self, p: &mut Problems) {
        if !self.enabled {
            return;
        }
        if self.forward_max.0 < forward::MIN_MAX {
            p.add(
                "syslog.forward_max",
                &self.forward_max,
                format!(
                    "{} bytes is too small; expected {} or more (e.g. 64MiB)",
                    self.forward_max.0,
                    forward::MIN_MAX
                ),
            );
        }
        self.tcp_limits.validate("syslog.tcp_limits", p);
        if let Some(f) = &self.forward_file {
            let dir = f.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(d) = dir
                && !d.is_dir()
            {
                p.add(
                    "syslog.forward_file",
                    f,
                    format!(
                        "{} is in a directory that does not exist; expected a file path in an existing directory",
                        f.display()
                    ),
                );
            }
        }
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        let udp = ListenerSpec::new("syslog.listen", Transport::Udp, &self.listen);
        let tcp = (self.tcp_listen.as_ref())
            .map(|t| ListenerSpec::new("syslog.tcp_listen", Transport::Tcp, t));
        [udp].into_iter().chain(tcp).collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    received: Family<TransportLabels, Counter>,
    recognised: Family<EventLabel, Counter>,
    dropped: Family<RefusalLabels, Counter>,
    forward: forward::Metrics,
}

impl Metrics {
    pub fn register(reg: &mut PromRegistry) -> Metrics {
        Metrics {
            forward: forward::Metrics::register(reg),
            received: reg.metric(
                "provbox_syslog_lines_received",
                "Syslog lines received, by transport",
            ),
            recognised: reg.metric(
                "provbox_syslog_lines_recognised",
                "Syslog lines recognised as provisioning events, by event",
            ),
            dropped: reg.metric(
                "provbox_syslog_lines_dropped",
                "Syslog lines not kept, by reason (unknown_sender, not_utf8, too_long)",
            ),
        }
    }
}

/// Everything a received line goes through; shared by the UDP and TCP paths.
pub struct Receiver {
    book: Arc<StatusBook>,
    metrics: Metrics,
    forward: Option<forward::Forward>,
}

impl Receiver {
    pub fn new(
        book: Arc<StatusBook>,
        metrics: Metrics,
        forward: Option<(&Path, u64)>,
    ) -> Result<Receiver> {
        let forward = match forward {
            Some((p, max)) => Some(forward::Forward::open(p, max, metrics.forward.clone())?),
            None => None,
        };
        Ok(Receiver {
            book,
            metrics,
            forward,
        })
    }

    pub fn handle(&self, from: IpAddr, raw: &[u8], transport: &'static str) {
        self.metrics
            .received
            .get_or_create(&TransportLabels { transport })
            .inc();
        if raw.len() > MAX_FRAME {
            self.drop_line("too_long", from);
            return;
        }
        // Phones occasionally send Latin-1; keep the line, replacing what is not UTF-8.
        let text = String::from_utf8_lossy(raw);
        if let Some(f) = &self.forward {
            f.line(from, &text);
        }
        let msg = parse::parse(&text);
        if let Some(report) = parse::recognise(&msg.msg) {
            self.metrics
                .recognised
                .get_or_create(&EventLabel {
                    event: report.event.kind(),
                })
                .inc();
            tracing::info!(%from, mac = %report.mac, event = report.event.kind(), detail = %report.event.detail(), "phone report");
            self.book.phone_report(from, &report);
            return;
        }
        let mac = Mac::find_in(&msg.msg);
        if !self.book.phone_line(from, mac, &msg.msg) {
            self.drop_line("unknown_sender", from);
        }
    }

    fn drop_line(&self, reason: &'static str, from: IpAddr) {
        tracing::debug!(%from, reason, "syslog line not kept");
        self.metrics
            .dropped
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }
}

/// The receiver's sockets, bound; nothing read and no file opened yet.
pub struct Bound {
    udp: Arc<UdpSocket>,
    tcp: Option<tokio::net::TcpListener>,
}

/// Bind the configured sockets.
pub async fn bind(cfg: &Config, banner: &mut Vec<String>) -> Result<Bound> {
    let udp = UdpSocket::bind(cfg.listen.value)
        .await
        .map_err(|e| crate::frontend::bind_error("syslog.listen", cfg.listen.value, e))?;
    banner.push(format!("syslog udp://{}", udp.local_addr()?));
    let tcp = match &cfg.tcp_listen {
        Some(a) => {
            let l = crate::frontend::bind_tcp("syslog.tcp_listen", a.value).await?;
            banner.push(format!("syslog tcp://{}", l.local_addr()?));
            Some(l)
        }
        None => None,
    };
    Ok(Bound {
        udp: Arc::new(udp),
        tcp,
    })
}

/// Open the forward file and serve, loops under the supervisor (lines only update the
/// status book, so there is nothing to wait for).
pub fn start(
    bound: Bound,
    ctx: &Context,
    cfg: &Config,
    book: Arc<StatusBook>,
    metrics: Metrics,
) -> Result<()> {
    let rx = Arc::new(Receiver::new(
        book,
        metrics,
        cfg.forward_file
            .as_ref()
            .map(|f| (f.value.as_path(), cfg.forward_max.0)),
    )?);
    let (udp, tcp) = (bound.udp, bound.tcp);
    let shutdown = ctx.shutdown.clone();
    let r = rx.clone();
    ctx.supervisor
        .spawn_restartable("syslog", "syslog udp", move || {
            let (udp, shutdown, r) = (udp.clone(), shutdown.clone(), r.clone());
            Box::pin(async move {
                let mut buf = vec![0u8; MAX_FRAME + 1];
                loop {
                    let (n, from) = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = udp.recv_from(&mut buf) => match r {
                            Ok(x) => x,
                            Err(e) => {
                                tracing::debug!("syslog: recv failed: {e}");
                                continue;
                            }
                        },
                    };
                    r.handle(from.ip(), &buf[..n], "udp");
                }
            })
        });
    if let Some(l) = tcp {
        let name = format!("syslog:{}", l.local_addr()?);
        let limits = cfg.tcp_limits.or(TCP_DEFAULTS);
        let acceptor = Acceptor::new(
            name.clone(),
            limits,
            ctx.metrics.connections_refused.clone(),
        );
        ctx.supervisor.spawn_once(
            "syslog",
            name,
            serve_tcp(l, acceptor, rx, ctx.shutdown.clone(), ctx.tracker.clone()),
        );
    }
    Ok(())
}

/// Syslog over TCP on one listener, admitted by the shared acceptor (caps, timeouts).
async fn serve_tcp(
    l: TcpListener,
    acceptor: Acceptor,
    rx: Arc<Receiver>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let serve_shutdown = shutdown.clone();
    acceptor
        .run(&l, shutdown, tracker, move |conn| {
            let (rx, shutdown) = (rx.clone(), serve_shutdown.clone());
            async move {
                let peer = conn.peer;
                tokio::select! {
                    r = tcp_session(conn.guarded(), peer.ip(), &rx) => if let Err(e) = r {
                        tracing::debug!(%peer, "syslog: TCP session ended: {e}");
                    },
                    _ = shutdown.cancelled() => {}
                }
            }
        })
        .await
}

/// RFC 6587: a frame is `LEN SP MSG` (octet counting) or a line ending in LF.
async fn tcp_session(s: Idle<TcpStream>, from: IpAddr, rx: &Receiver) -> std::io::Result<()> {
    let mut r = BufReader::new(s);
    loop {
        let first = match r.fill_buf().await? {
            [] => return Ok(()),
            b => b[0],
        };
        if first.is_ascii_digit() {
            let mut len = Vec::new();
            (&mut r).take(8).read_until(b' ', &mut len).await?;
            let n: usize = std::str::from_utf8(&len)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|n| *n <= MAX_FRAME)
                .ok_or_else(|| std::io::Error::other("bad octet count"))?;
            let mut frame = vec![0u8; n];
            r.read_exact(&mut frame).await?;
            rx.handle(from, &frame, "tcp");
        } else {
            let mut line = Vec::new();
            (&mut r)
                .take(MAX_FRAME as u64 + 1)
                .read_until(b'\n', &mut line)
                .await?;
            if line.is_empty() {
                return Ok(());
            }
            rx.handle(from, &line, "tcp");
        }
    }
}
