//! provbox: one process that provisions IP phones. The binary (`main.rs`) is a thin CLI
//! over these modules; integration tests use them too (certificates, MAC parsing).
//!
//! Only what `main.rs`, `tests/` and the fuzz targets (`fuzz/`) use is `pub`; the rest is
//! `pub(crate)`, and `unreachable_pub` keeps new items from claiming more.

#![warn(unreachable_pub)]

pub(crate) mod acceptor;
pub mod api;
pub(crate) mod banner;
pub mod catalog;
pub mod certs;
pub mod cli;
pub mod config;
pub(crate) mod confkit;
pub mod control;
pub mod dashboard;
pub mod devices;
pub mod dhcp;
pub mod dns;
pub(crate) mod frontend;
pub(crate) mod hooks;
pub mod http;
pub(crate) mod http_client;
#[cfg(test)]
mod layers;
pub(crate) mod limit;
pub(crate) mod metrics;
pub(crate) mod netif;
pub(crate) mod resync;
pub(crate) mod sdnotify;
pub(crate) mod secret;
pub mod server;
pub(crate) mod service;
pub(crate) mod status;
pub mod store;
pub(crate) mod supervisor;
pub mod syslog;
pub mod tftp;
pub mod tls;
pub mod tls_legacy;
pub mod upgrade;
pub mod uploads;
pub(crate) mod vendors;
pub(crate) mod web;
pub(crate) mod zerocopy;
