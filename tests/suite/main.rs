//! The integration suite: one test binary driving the real `provbox` binary with real
//! clients (curl, tftp-hpa, atftp, dig, udhcpc, openssl, sipp, Chromium), in network
//! namespaces where DHCP or several hosts are involved.

mod bench_kit;
mod support;

mod acceptor;
mod api;
mod bootstrap;
mod cert;
mod dashboard;
mod dashboard_ui;
mod deploy;
mod devices;
mod dhcp;
mod dhcp_boot;
mod dhcp_proxy;
mod dhcp_relay;
mod dns;
mod dns_records;
mod docs;
mod e2e;
mod fleet;
mod hooks;
mod hostile_catalog;
mod hostile_devices;
mod hostile_dhcp;
mod hostile_dns;
mod hostile_syslog;
mod hostile_tftp;
mod hostile_web;
mod http;
mod httpauth;
mod https;
mod legacy_tls;
mod lifecycle;
mod metrics_format;
mod netns;
mod postgres;
mod reload;
mod sendfile;
mod skip_switch;
mod syslog;
mod systemd;
mod tftp;
mod upgrade;
mod uploads;
mod verify;
