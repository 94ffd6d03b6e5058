//! The UDP query path without sockets, for the fuzz target and property tests: the very
//! per-datagram decision `transport::serve_udp` makes ([`transport::answer_datagram`]:
//! fast-path key and cache, hickory's parse, the handler), then the cache fill the loop
//! does once an answer is sent. Only local zones (no forwarders: nothing leaves).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::handler::Handler;
use super::transport::{self, Datagram};
use super::{Config, zone};
use crate::devices::Registry;
use arc_swap::ArcSwap;

pub struct Offline {
    handler: Handler,
    rt: tokio::runtime::Runtime,
}

/// What one query got.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the fast-path cache.
    Replayed(Vec<u8>),
    /// Answered by the handler.
    Answered(Vec<u8>),
    /// Dropped (malformed, or a response).
    Dropped,
}

impl Offline {
    /// Zones from a `dns:` section (its forwarders are ignored).
    pub fn new(mut cfg: Config, leases: Arc<Registry>) -> anyhow::Result<Offline> {
        cfg.forwarders.clear();
        let data = zone::ZoneData::build(&cfg, &HashMap::new())?;
        let mut reg = prometheus_client::registry::Registry::default();
        Ok(Offline {
            handler: Handler {
                data: Arc::new(ArcSwap::from_pointee(data)),
                leases,
                metrics: Arc::new(super::register(&mut reg)),
            },
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()?,
        })
    }

    /// One UDP query, as the receive loop treats it.
    pub fn query(&self, bytes: &[u8]) -> Outcome {
        let src: SocketAddr = ([192, 0, 2, 1], 5353).into();
        self.rt.block_on(async {
            match transport::answer_datagram(&self.handler, bytes, src).await {
                Datagram::Replayed(r) => Outcome::Replayed(r),
                Datagram::Answered(answer, learn) => {
                    // As the loop does once the answer is sent.
                    learn.fill(&answer);
                    Outcome::Answered(answer)
                }
                // Not with forwarders cleared; answered as the loop's upstream task would.
                Datagram::Upstream(request) => transport::answer(&self.handler, &request)
                    .await
                    .map_or(Outcome::Dropped, Outcome::Answered),
                Datagram::Dropped => Outcome::Dropped,
            }
        })
    }
}

/// Whether `bytes` decode as a DNS message (the fuzz target's check on every answer).
pub fn decode(bytes: &[u8]) -> Result<(), String> {
    hickory_server::proto::op::Message::from_vec(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
