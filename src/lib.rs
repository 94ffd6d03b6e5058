//! provbox: one process that provisions IP phones. The binary (`main.rs`) is a thin CLI
//! over these modules; integration tests use them too (certificates, MAC parsing).

pub mod acceptor;
pub mod banner;
pub mod catalog;
pub mod certs;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod devices;
pub mod dhcp;
pub mod dns;
pub mod hooks;
pub mod http;
pub mod http_client;
pub mod limit;
pub mod metrics;
pub mod netif;
pub mod resync;
pub mod sdnotify;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod syslog;
pub mod tftp;
pub mod tls;
pub mod tls_legacy;
pub mod vendors;
pub mod verify;
pub mod web;
pub mod zerocopy;
