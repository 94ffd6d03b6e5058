//! What every front end is given and hands back: the shared [`Context`] (no aggregate
//! configuration: each front end is passed its own section and the facts it needs from
//! others), socket binding that turns the usual failures into advice, and the reload hook.
//!
//! Below the front ends and above the domain modules; the server builds the context and
//! the service adapters (`service::fronts`) pass each front end its section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::devices::Provisioner;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::supervisor::Supervisor;

/// A hook a front end hands back from its start: applies a new, valid section's live
/// keys, or says why it could not (it then keeps the old settings).
pub(crate) type ReloadFn<C> = Box<dyn Fn(&C) -> Result<()> + Send + Sync>;

/// What every front end is started with.
pub struct Context {
    pub provisioner: Arc<Provisioner>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    /// Where phones' uploads go (`uploads.enabled`).
    pub uploads: Option<Arc<crate::uploads::Uploads>>,
    /// Owns every service loop (src/supervisor.rs).
    pub supervisor: Arc<Supervisor>,
}

/// Bind a TCP listener, turning the common failures into advice.
pub(crate) async fn bind_tcp(field: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(field, addr, e))
}

pub(crate) fn bind_error(field: &str, addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another program listens there: `ss -lntup` shows which; change the port or stop it)"
        }
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; the shipped config uses high ports)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (no interface on this machine has that address)",
        _ => "",
    };
    anyhow::anyhow!("{field}: cannot listen on {addr}: {e}{hint}")
}
