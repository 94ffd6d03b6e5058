//! TFTP's own metric families, beside the shared file-delivery ones (requests, refusals,
//! bytes, in-flight, duration with protocol="tftp") that it also feeds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub(super) use crate::metrics::{OutcomeLabel, RefusalLabels as ReasonLabel};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OptionLabel {
    pub option: &'static str,
}

pub struct TftpMetrics {
    pub transfers: Family<OutcomeLabel, Counter>,
    pub bytes: Counter,
    pub retransmits: Counter,
    pub options: Family<OptionLabel, Counter>,
    pub duration: Histogram,
    pub malformed: Family<ReasonLabel, Counter>,
}

pub fn register(reg: &mut Registry) -> TftpMetrics {
    let m = TftpMetrics {
        transfers: Family::default(),
        bytes: Counter::default(),
        retransmits: Counter::default(),
        options: Family::default(),
        // 1 ms .. ~65 s, like the shared duration histogram.
        duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        malformed: Family::default(),
    };
    reg.register(
        "provbox_tftp_transfers",
        "TFTP requests by outcome (ok, not_found, access_violation, timeout, client_error, options_declined, busy, ...)",
        m.transfers.clone(),
    );
    reg.register_with_unit(
        "provbox_tftp_sent",
        "File bytes acknowledged by TFTP clients",
        Unit::Bytes,
        m.bytes.clone(),
    );
    reg.register(
        "provbox_tftp_retransmits",
        "DATA or OACK packets sent again after a timeout or a partial window",
        m.retransmits.clone(),
    );
    reg.register(
        "provbox_tftp_options",
        "Options acknowledged in OACKs, by option",
        m.options.clone(),
    );
    reg.register_with_unit(
        "provbox_tftp_transfer_duration",
        "Time from read request to the end of the transfer",
        Unit::Seconds,
        m.duration.clone(),
    );
    reg.register(
        "provbox_tftp_malformed_packets",
        "Packets dropped as malformed or unexpected, by reason",
        m.malformed.clone(),
    );
    m
}

impl TftpMetrics {
    pub fn malformed(&self, reason: &'static str) {
        self.malformed.get_or_create(&ReasonLabel { reason }).inc();
    }
    pub fn outcome(&self, outcome: &'static str) {
        self.transfers
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}
