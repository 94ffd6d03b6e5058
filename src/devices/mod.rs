//! The device layer between the front ends and the catalog: who is asking, and what
//! bytes they may have. Every protocol calls [`Provisioner::fetch`] and nothing else.

pub mod registry;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::catalog::{Catalog, Entry, Refusal};
use crate::metrics::Protocol;

pub use registry::{Mac, Registry};

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

    /// The bytes this request should get, or why not.
    pub fn fetch(&self, req: &FetchRequest<'_>) -> Result<Arc<Entry>, Refusal> {
        self.catalog.lookup(req.path)
    }
}
