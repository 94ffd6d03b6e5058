//! TFTP front end: read-only delivery of the catalog (RFC 1350 with options RFC 2347,
//! blksize 2348, timeout/tsize 2349, windowsize 7440).
//!
//! Written on tokio rather than async-tftp 0.4: that crate holds its handler mutex across
//! file open, polls every transfer in one task, keeps its own async-io reactor beside
//! tokio, never tells the handler the negotiated options or when a transfer ended, and
//! retransmits to clients that answer an OACK with ERROR 8. Here each transfer is its own
//! task with its own socket, serving slices of the catalog's immutable bytes.

mod config;
mod metrics;
pub mod netascii;
pub mod options;
pub mod packet;
mod server;
mod sock;
mod transfer;
mod window;
mod write;

pub use config::Config;
pub use metrics::{TftpMetrics, register};
pub use server::{Bound, bind};
