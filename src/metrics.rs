//! One Prometheus registry for the whole process.
//!
//! Each front end registers its own families at start-up (`register` functions taking
//! `&mut Registry`); the families shared by every file-delivery protocol live here so
//! HTTP, HTTPS and TFTP count requests, bytes and refusals the same way.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    http,
    https,
    tftp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::http => "http",
            Protocol::https => "https",
            Protocol::tftp => "tftp",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtoLabels {
    pub protocol: Protocol,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub protocol: Protocol,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub protocol: Protocol,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailLabels {
    pub listener: String,
    pub reason: &'static str,
}

/// One completed TLS handshake: which door, which protocol version, which suite (IANA name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsHandshakeLabels {
    pub listener: String,
    pub version: &'static str,
    pub cipher: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Families shared by the file-delivery front ends and the catalog.
pub struct Metrics {
    pub requests: Family<OutcomeLabels, Counter>,
    pub refusals: Family<ReasonLabels, Counter>,
    pub sent_bytes: Family<ProtoLabels, Counter>,
    pub in_flight: Family<ProtoLabels, Gauge>,
    pub duration: Family<ProtoLabels, Histogram>,
    pub connections_refused: Family<ProtoLabels, Counter>,
    pub tls_handshake_failures: Family<TlsFailLabels, Counter>,
    pub tls_handshakes: Family<TlsHandshakeLabels, Counter>,
    pub catalog_files: Gauge,
    pub catalog_reloads: Counter,
    pub catalog_updates: Family<KindLabels, Counter>,
    pub catalog_reload_errors: Family<KindLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s: profiles take milliseconds, firmware over TFTP takes tens of seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            refusals: Family::default(),
            sent_bytes: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            connections_refused: Family::default(),
            tls_handshake_failures: Family::default(),
            tls_handshakes: Family::default(),
            catalog_files: Gauge::default(),
            catalog_reloads: Counter::default(),
            catalog_updates: Family::default(),
            catalog_reload_errors: Family::default(),
            config_reloads: Family::default(),
        };
        reg.register(
            "provbox_requests",
            "File requests by protocol and outcome",
            m.requests.clone(),
        );
        reg.register(
            "provbox_refusals",
            "Requests refused, by protocol and reason",
            m.refusals.clone(),
        );
        reg.register_with_unit(
            "provbox_sent",
            "Body bytes sent to clients",
            Unit::Bytes,
            m.sent_bytes.clone(),
        );
        reg.register(
            "provbox_transfers_in_flight",
            "Transfers currently sending",
            m.in_flight.clone(),
        );
        reg.register_with_unit(
            "provbox_request_duration",
            "Time from request to last byte sent",
            Unit::Seconds,
            m.duration.clone(),
        );
        reg.register(
            "provbox_connections_refused",
            "Connections closed at once because the connection limit was reached",
            m.connections_refused.clone(),
        );
        reg.register(
            "provbox_tls_handshake_failures",
            "TLS handshakes that failed, by listener and reason",
            m.tls_handshake_failures.clone(),
        );
        reg.register(
            "provbox_tls_handshakes",
            "TLS handshakes completed, by listener, protocol version and cipher suite",
            m.tls_handshakes.clone(),
        );
        reg.register(
            "provbox_catalog_files",
            "Files currently served by the catalog",
            m.catalog_files.clone(),
        );
        reg.register(
            "provbox_catalog_reloads",
            "Catalog index swaps (initial scan and every change)",
            m.catalog_reloads.clone(),
        );
        reg.register(
            "provbox_catalog_updates",
            "Files published or withdrawn by hot reload",
            m.catalog_updates.clone(),
        );
        reg.register(
            "provbox_catalog_reload_errors",
            "Files that could not be published, by reason",
            m.catalog_reload_errors.clone(),
        );
        reg.register(
            "provbox_config_reloads",
            "Configuration reloads by result (ok, restart_needed, partial, invalid)",
            m.config_reloads.clone(),
        );
        reg.register(
            "provbox_build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        m
    }

    /// Count a refusal with its reason, and the request outcome it produced.
    pub fn refused(&self, protocol: Protocol, reason: &'static str) {
        self.refusals
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }
}

/// Prometheus text exposition of the whole registry.
pub fn encode(reg: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, reg);
    out
}
