//! The UDP query path without sockets, for the fuzz target and property tests: the fast
//! path's key and cache, hickory's parse, the handler, and the cache fill, in the order
//! `transport::serve_udp` runs them. Only local zones (no forwarders: nothing leaves).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::MessageType;
use hickory_server::server::{Request, RequestHandler};

use super::handler::{Capture, Handler};
use super::{Config, fastpath, zone};
use crate::devices::Registry;

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
        let fast = fastpath::key(bytes, false);
        let data = self.handler.data.load_full();
        if let Some((key, _)) = &fast
            && bytes.len() >= 2
            && let Some(r) = data.cache.answer(key, [bytes[0], bytes[1]])
        {
            return Outcome::Replayed(r.bytes);
        }
        let src: SocketAddr = ([192, 0, 2, 1], 5353).into();
        let request = match Request::from_bytes(bytes.to_vec(), src, Protocol::Udp) {
            Ok(r) if r.metadata.message_type != MessageType::Response => r,
            _ => return Outcome::Dropped,
        };
        let epoch = fastpath::current_epoch();
        let cap = Capture::new(Protocol::Udp);
        self.rt.block_on(
            self.handler
                .handle_request::<_, TokioTime>(&request, cap.clone()),
        );
        let Some(answer) = cap.take() else {
            return Outcome::Dropped;
        };
        if let Some((key, qtype)) = fast
            && request
                .queries
                .queries()
                .first()
                .is_some_and(|q| data.cacheable(q.name()))
        {
            data.cache.learn(key, qtype, &answer, epoch);
        }
        Outcome::Answered(answer)
    }
}

/// Whether `bytes` decode as a DNS message (the fuzz target's check on every answer).
pub fn decode(bytes: &[u8]) -> Result<(), String> {
    hickory_server::proto::op::Message::from_vec(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
