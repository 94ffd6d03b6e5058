//! What the API asks of the running DHCP server without knowing it: the DHCP front end
//! hands a [`LeaseDesk`] to the device registry at start (both already share it), and the
//! API finds it there. No desk: DHCP is off in this process.

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;

use serde::Serialize;

/// One lease as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeaseRow {
    #[schema(value_type = String, example = "198.18.0.100")]
    pub ip: Ipv4Addr,
    /// `00:56:2b:04:36:15`.
    pub mac: String,
    pub hostname: Option<String>,
    pub vendor_class: Option<String>,
    /// `bound`, `expired`, `free`, `offered`, `declined` (a released address is held as
    /// `declined` until the old holder's lease would have run out).
    pub state: String,
    /// Unix seconds when it ends (bound) or returns to the pool (declined, offered).
    pub until: Option<u64>,
}

#[derive(Debug)]
pub enum ReleaseError {
    /// No bound lease at that address.
    NotBound,
    /// The lease journal could not be written: nothing was released for good.
    Store(String),
}

pub(crate) type Released = Pin<Box<dyn Future<Output = Result<LeaseRow, ReleaseError>> + Send>>;

pub trait LeaseDesk: Send + Sync {
    /// Every lease the server holds, by address.
    fn list(&self) -> Vec<LeaseRow>;
    /// End the lease at `ip` now, durably (journaled like any lease change) before the
    /// future resolves; the phone is NAKed at its next renewal.
    fn release(&self, ip: Ipv4Addr) -> Released;
}
