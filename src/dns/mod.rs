//! Local DNS: zones from the configuration answered authoritatively over UDP and TCP, with
//! multi-address answers that rotate and follow health checks, optional lease names, and
//! forwarding (or REFUSED) for everything else. Zone data is swapped whole on reload.

mod config;
mod fastpath;
mod forward;
mod handler;
mod health;
mod metrics;
#[doc(hidden)]
pub mod offline;
mod transport;
mod zone;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

pub use config::{CheckConfig, Config, LeasesConfig, RecordConfig, ZoneConfig};
pub use metrics::{DnsMetrics, register};

use crate::frontend::ReloadFn;
use crate::frontend::{Context, bind_error, bind_tcp};

/// Sockets bound before anything is served.
pub struct Bound {
    /// Per listen address, one UDP socket per receive task (SO_REUSEPORT: the kernel spreads
    /// clients over them, so tasks never wake each other for the same packet).
    udp: Vec<Vec<Arc<UdpSocket>>>,
    tcp: Vec<TcpListener>,
}

/// The kernel picks a socket by hashing the client's address and port, so a few clients can
/// land on one socket: several sockets per core keep the cores evenly busy.
fn udp_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(8)
        .clamp(4, 16)
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Room for bursts (a whole office of phones booting); the kernel caps it at rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Bind UDP and TCP on every `dns.listen` address.
pub async fn bind(cfg: &Config, banner: &mut Vec<String>) -> Result<Bound> {
    let mut b = Bound {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for (i, a) in cfg.listen.iter().enumerate() {
        let field = format!("dns.listen[{i}]");
        // Same port on TCP, so a configured port 0 (tests) still means one address; the
        // port the kernel picked for UDP may be taken on TCP, so port 0 tries a few.
        let tries = if a.value.port() == 0 { 8 } else { 1 };
        let mut attempt = 0;
        let (local, group, tcp) = loop {
            attempt += 1;
            let first = udp_socket(a.value).map_err(|e| bind_error(&field, a.value, e))?;
            let local = first.local_addr()?;
            let mut group = vec![Arc::new(first)];
            for _ in 1..udp_workers() {
                let s = udp_socket(local).map_err(|e| bind_error(&field, local, e))?;
                group.push(Arc::new(s));
            }
            match bind_tcp(&field, local).await {
                Ok(tcp) => break (local, group, tcp),
                Err(e) if attempt >= tries => return Err(e),
                Err(_) => continue,
            }
        };
        banner.push(format!("dns    udp+tcp {local}"));
        b.udp.push(group);
        b.tcp.push(tcp);
    }
    Ok(b)
}

impl Bound {
    /// Build the zones, start health checks and the listeners (under the supervisor), and
    /// return the reload hook.
    pub fn start(
        self,
        ctx: &Context,
        cfg: &Config,
        metrics: Arc<DnsMetrics>,
    ) -> Result<ReloadFn<Config>> {
        let board = Arc::new(health::Board::new(metrics.clone(), ctx.shutdown.clone()));
        let states = board.sync(&cfg.targets());
        let data = Arc::new(ArcSwap::from_pointee(zone::ZoneData::build(cfg, &states)?));
        metrics.reloads.inc();
        let handler = Arc::new(handler::Handler {
            data: data.clone(),
            leases: ctx.provisioner.registry().clone(),
            metrics: metrics.clone(),
        });
        let upstream = Arc::new(Semaphore::new(transport::MAX_UPSTREAM_IN_FLIGHT));
        for (i, socket) in self.udp.iter().flatten().enumerate() {
            let (socket, handler, upstream) = (socket.clone(), handler.clone(), upstream.clone());
            let shutdown = ctx.shutdown.clone();
            let name = format!("dns udp {} #{i}", socket.local_addr()?);
            ctx.supervisor.spawn_restartable("dns", name, move || {
                Box::pin(transport::serve_udp(
                    socket.clone(),
                    handler.clone(),
                    upstream.clone(),
                    shutdown.clone(),
                ))
            });
        }
        let limits = cfg.tcp_limits.or(config::TCP_DEFAULTS);
        for l in self.tcp {
            let name = format!("dns:{}", l.local_addr()?);
            let acceptor = crate::acceptor::Acceptor::new(
                name.clone(),
                limits,
                ctx.metrics.connections_refused.clone(),
            );
            ctx.supervisor.spawn_once(
                "dns",
                name,
                transport::serve_tcp(
                    l,
                    acceptor,
                    handler.clone(),
                    ctx.shutdown.clone(),
                    ctx.tracker.clone(),
                ),
            );
        }
        Ok(Box::new(move |cfg: &Config| {
            // Checks for unchanged targets keep running (and keep their state); the
            // zone set is replaced in one store, so a query sees old or new, never a mix.
            let states = board.sync(&cfg.targets());
            let new = zone::ZoneData::build(cfg, &states)?;
            data.store(Arc::new(new));
            metrics.reloads.inc();
            tracing::info!(zones = cfg.zones.len(), "dns: zones reloaded");
            Ok(())
        }))
    }
}
