//! DNS metric families: queries by type and response code, dropped packets by reason,
//! forwarding results, and health-check state per address.

use std::net::IpAddr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{Registers, ResultLabels as ForwardLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub transport: &'static str,
    pub qtype: &'static str,
    pub rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub transport: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub address: String,
    pub check: String,
}

pub struct DnsMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub dropped: Family<DropLabels, Counter>,
    pub forwarded: Family<ForwardLabels, Counter>,
    pub healthy: Family<HealthLabels, Gauge>,
    pub reloads: Counter,
}

pub fn register(reg: &mut Registry) -> DnsMetrics {
    DnsMetrics {
        queries: reg.metric(
            "provbox_dns_queries",
            "DNS queries answered, by transport, query type and response code",
        ),
        dropped: reg.metric(
            "provbox_dns_dropped",
            "DNS packets dropped without an answer, by transport and reason",
        ),
        forwarded: reg.metric(
            "provbox_dns_forwarded",
            "Queries for names outside the local zones sent upstream, by result",
        ),
        healthy: reg.metric(
            "provbox_dns_address_healthy",
            "Health-check state per checked address (1 up, 0 down: left out of answers)",
        ),
        reloads: reg.metric(
            "provbox_dns_zone_swaps",
            "Zone data swaps (start and every configuration reload)",
        ),
    }
}

impl DnsMetrics {
    pub fn query(&self, transport: &'static str, qtype: RecordType, rcode: ResponseCode) {
        self.queries
            .get_or_create(&QueryLabels {
                transport,
                qtype: qtype_label(qtype),
                rcode: rcode_label(rcode),
            })
            .inc();
    }

    pub fn dropped(&self, transport: &'static str, reason: &'static str) {
        self.dropped
            .get_or_create(&DropLabels { transport, reason })
            .inc();
    }

    pub fn forwarded(&self, result: &'static str) {
        self.forwarded
            .get_or_create(&ForwardLabels { result })
            .inc();
    }

    pub fn health_labels(ip: IpAddr, check: &str) -> HealthLabels {
        HealthLabels {
            address: ip.to_string(),
            check: check.to_string(),
        }
    }
}

/// A fixed label set: a client choosing arbitrary type numbers must not grow the registry.
pub(super) fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::ANY => "ANY",
        RecordType::CNAME => "CNAME",
        RecordType::HTTPS => "HTTPS",
        RecordType::MX => "MX",
        RecordType::NS => "NS",
        RecordType::PTR => "PTR",
        RecordType::SOA => "SOA",
        RecordType::SRV => "SRV",
        RecordType::SVCB => "SVCB",
        RecordType::TXT => "TXT",
        _ => "other",
    }
}

pub(super) fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}
