//! One Prometheus registry for the whole process.
//!
//! Each front end registers its own families at start-up (`register` functions taking
//! `&mut Registry`, each family made and registered by `Registers::metric`); the families
//! shared by every file-delivery protocol live here so HTTP, HTTPS and TFTP count requests,
//! bytes and refusals the same way.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

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

/// A connection the acceptor turned away: which listener, and why (`limit`,
/// `per_ip_limit`, `out_of_fds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: String,
    pub reason: &'static str,
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

/// One `reason` label: refusals, drops and failures, every module's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: &'static str,
}

/// One `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// One `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// One `event` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

/// Families shared by the file-delivery front ends and the catalog.
pub struct Metrics {
    pub requests: Family<OutcomeLabels, Counter>,
    pub refusals: Family<ReasonLabels, Counter>,
    pub sent_bytes: Family<ProtoLabels, Counter>,
    pub in_flight: Family<ProtoLabels, Gauge>,
    pub duration: Family<ProtoLabels, Histogram>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub tls_handshake_failures: Family<TlsFailLabels, Counter>,
    pub tls_handshakes: Family<TlsHandshakeLabels, Counter>,
    pub catalog_files: Gauge,
    pub catalog_reloads: Counter,
    pub catalog_updates: Family<KindLabels, Counter>,
    pub catalog_reload_errors: Family<KindLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub dashboard_refusals: Family<RefusalLabels, Counter>,
}

/// Request and transfer durations: 1 ms .. ~65 s, as profiles take milliseconds and firmware
/// over TFTP takes tens of seconds.
pub(crate) fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Registration that hands the metric back: a front end builds its metrics struct in one
/// literal, each field beside its name and help, instead of defaulting every field and then
/// registering a clone of each.
pub(crate) trait Registers {
    /// A new `M` (counter, gauge or family of them) registered under `name` with `help`.
    fn metric<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.metric_of(name, help, None, M::default())
    }

    /// `metric` (one made by a constructor, or with a unit) registered under `name`.
    fn metric_of<M: Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: M,
    ) -> M;
}

impl Registers for Registry {
    fn metric_of<M: Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: M,
    ) -> M {
        match unit {
            Some(unit) => self.register_with_unit(name, help, unit, metric.clone()),
            None => self.register(name, help, metric.clone()),
        }
        metric
    }
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: reg.metric(
                "provbox_requests",
                "File requests by protocol and outcome",
            ),
            refusals: reg.metric(
                "provbox_refusals",
                "Requests refused, by protocol and reason",
            ),
            sent_bytes: reg.metric_of(
                "provbox_sent",
                "Body bytes sent to clients",
                Some(Unit::Bytes),
                Family::default(),
            ),
            in_flight: reg.metric(
                "provbox_transfers_in_flight",
                "Transfers currently sending",
            ),
            duration: reg.metric_of(
                "provbox_request_duration",
                "Time from request to last byte sent",
                Some(Unit::Seconds),
                Family::new_with_constructor(duration_histogram),
            ),
            connections_refused: reg.metric(
                "provbox_connections_refused",
                "TCP connections closed at once (connection or per-address cap) or not accepted for want of file descriptors, by listener and reason",
            ),
            tls_handshake_failures: reg.metric(
                "provbox_tls_handshake_failures",
                "TLS handshakes that failed, by listener and reason",
            ),
            tls_handshakes: reg.metric(
                "provbox_tls_handshakes",
                "TLS handshakes completed, by listener, protocol version and cipher suite",
            ),
            catalog_files: reg.metric(
                "provbox_catalog_files",
                "Files currently served by the catalog",
            ),
            catalog_reloads: reg.metric(
                "provbox_catalog_reloads",
                "Catalog index swaps (initial scan and every change)",
            ),
            catalog_updates: reg.metric(
                "provbox_catalog_updates",
                "Files published or withdrawn by hot reload",
            ),
            catalog_reload_errors: reg.metric(
                "provbox_catalog_reload_errors",
                "Files that could not be published, by reason",
            ),
            config_reloads: reg.metric(
                "provbox_config_reloads",
                "Configuration reloads by result (ok, restart_needed, partial, invalid)",
            ),
            dashboard_refusals: reg.metric(
                "provbox_dashboard_refusals",
                "Dashboard requests refused, by reason (host, no_token, cross_site)",
            ),
        };
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

/// The two exposition formats a scraper may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/openmetrics-text; version=1.0.0`: what prometheus-client writes.
    OpenMetrics,
    /// `text/plain; version=0.0.4`: what plain curl, Python's `prometheus_client.parser`
    /// and older agents read (no `info` type, no `# UNIT`, no `# EOF`).
    Text004,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Choose the format from an `Accept` header the way the Prometheus client libraries do:
/// OpenMetrics only when it is asked for (and not ranked below plain text), else 0.0.4.
pub(crate) fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text004;
    };
    let (mut om, mut text) = (None::<f32>, None::<f32>);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut om,
            "text/plain" => &mut text,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    match (om, text) {
        (Some(o), t) if o > 0.0 && o >= t.unwrap_or(0.0) => Format::OpenMetrics,
        _ => Format::Text004,
    }
}

/// The whole registry in the format `accept` asks for: (content type, body).
pub(crate) fn exposition(reg: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let format = negotiate(accept);
    let om = encode(reg);
    let body = match format {
        Format::OpenMetrics => om,
        Format::Text004 => to_text_004(&om),
    };
    (format.content_type(), body)
}

/// OpenMetrics text exposition of the whole registry (with its `# EOF`).
pub(crate) fn encode(reg: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, reg);
    out
}

/// Rewrite prometheus-client's OpenMetrics text as Prometheus text 0.0.4: a counter's
/// family is named with its `_total` samples, `info` becomes a gauge `<name>_info`, other
/// OpenMetrics-only types are untyped, and `# UNIT`, `# EOF`, `_created` samples and
/// exemplars go.
pub(crate) fn to_text_004(om: &str) -> String {
    use std::collections::HashMap;
    let types: HashMap<&str, &str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    // The 0.0.4 family name and type for an OpenMetrics family.
    let family = |name: &str| -> (String, &'static str) {
        match types.get(name).copied().unwrap_or("unknown") {
            "counter" => (format!("{name}_total"), "counter"),
            "info" => (format!("{name}_info"), "gauge"),
            "gauge" => (name.to_string(), "gauge"),
            "histogram" => (name.to_string(), "histogram"),
            "summary" => (name.to_string(), "summary"),
            "stateset" => (name.to_string(), "gauge"),
            _ => (name.to_string(), "untyped"),
        }
    };
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", family(name).0));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_once(' ').map_or(rest, |(n, _)| n);
            let (name, kind) = family(name);
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF`: not part of 0.0.4.
        } else {
            let sample = line.split_once(" # ").map_or(line, |(s, _)| s);
            let name = sample.split(['{', ' ']).next().unwrap_or("");
            if name.ends_with("_created") && types.get(&name[..name.len() - 8]) == Some(&"counter")
            {
                continue;
            }
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(negotiate(None), Format::Text004);
        assert_eq!(negotiate(Some("*/*")), Format::Text004);
        assert_eq!(negotiate(Some("text/plain")), Format::Text004);
        assert_eq!(
            negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        // What Prometheus itself sends.
        assert_eq!(
            negotiate(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.2,text/plain;q=0.9")),
            Format::Text004
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text004
        );
    }

    #[test]
    fn text_004_has_no_openmetrics_only_lines() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        m.refused(Protocol::http, "traversal");
        m.sent_bytes
            .get_or_create(&ProtoLabels {
                protocol: Protocol::tftp,
            })
            .inc_by(7);
        m.duration
            .get_or_create(&ProtoLabels {
                protocol: Protocol::http,
            })
            .observe(0.01);
        let om = encode(&reg);
        assert!(om.contains("# TYPE provbox_build info") && om.ends_with("# EOF\n"));
        let t = to_text_004(&om);
        assert!(!t.contains("# EOF") && !t.contains("# UNIT") && !t.contains(" info\n"));
        assert!(t.contains("# TYPE provbox_build_info gauge\n"), "{t}");
        assert!(t.contains("provbox_build_info{version=\""), "{t}");
        assert!(t.contains("# TYPE provbox_refusals_total counter\n"), "{t}");
        assert!(
            t.contains("provbox_refusals_total{protocol=\"http\",reason=\"traversal\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE provbox_sent_bytes_total counter\n"),
            "{t}"
        );
        assert!(
            t.contains("provbox_sent_bytes_total{protocol=\"tftp\"} 7\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE provbox_request_duration_seconds histogram\n"),
            "{t}"
        );
    }
}
