//! The integration suite: one test binary driving the real `provbox` binary with real
//! clients (curl, tftp-hpa, atftp, dig, udhcpc, openssl, sipp, Chromium), in network
//! namespaces where DHCP or several hosts are involved.

mod bench_kit;
mod support;

mod cert;
mod dashboard;
mod deploy;
mod devices;
mod dhcp;
mod dns;
mod dns_records;
mod docs;
mod e2e;
mod fleet;
mod hostile_dns;
mod http;
mod https;
mod legacy_tls;
mod netns;
mod reload;
mod syslog;
mod systemd;
mod tftp;
