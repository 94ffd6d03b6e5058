//! The device layer between the front ends and the catalog: who is asking, and what
//! bytes they may have. Every protocol calls [`Provisioner::fetch`] and nothing else.

pub mod registry;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::catalog::{Catalog, Entry, Refusal};
use crate::metrics::Protocol;

pub use registry::{LeaseInfo, Mac, Registry};

/// A finished (or refused, or abandoned) file request, as the front end saw it at the end:
/// what the device status book records. Every file front end reports each request once,
/// through [`Provisioner::transfer_done`].
#[derive(Debug, Clone)]
pub struct TransferDone<'a> {
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    /// A MAC from a verified client certificate.
    pub client_mac: Option<Mac>,
    pub bytes: u64,
    /// The access-log outcome: `ok`, `partial`, `not_modified`, `not_found`, `aborted`…
    pub outcome: &'a str,
}

/// Hears about devices as the front ends meet them (leases, transfers). Implemented by the
/// status book; kept as a trait so the device layer does not depend on it.
pub trait Observer: Send + Sync {
    fn lease_seen(&self, _ip: std::net::IpAddr, _lease: &LeaseInfo) {}
    fn transfer(&self, _t: &TransferDone<'_>) {}
}

/// A verified TLS client certificate, as the HTTPS listener saw it.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity {
    /// The subject as text (`CN=…, O=…`).
    pub subject: String,
    pub common_name: Option<String>,
    /// A MAC address found in the subject (phone certificates carry it).
    pub mac: Option<Mac>,
}

/// Everything a front end knows about one request.
#[derive(Debug, Clone)]
pub struct FetchRequest<'a> {
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    pub client: Option<&'a ClientIdentity>,
}

pub struct Provisioner {
    catalog: Arc<Catalog>,
    registry: Arc<Registry>,
}

impl Provisioner {
    pub fn new(catalog: Arc<Catalog>, registry: Arc<Registry>) -> Provisioner {
        Provisioner { catalog, registry }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Front ends call this once per request when it is over (sent, refused or aborted).
    pub fn transfer_done(&self, t: &TransferDone<'_>) {
        if let Some(o) = self.registry.observer() {
            o.transfer(t);
        }
    }

    /// The bytes this request should get, or why not.
    pub fn fetch(&self, req: &FetchRequest<'_>) -> Result<Arc<Entry>, Refusal> {
        self.catalog.lookup(req.path)
    }
}
