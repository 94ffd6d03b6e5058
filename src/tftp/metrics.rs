//! TFTP's own metric families, beside the shared file-delivery ones (requests, refusals,
//! bytes, in-flight, duration with protocol="tftp") that it also feeds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::{Registers, duration_histogram};

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
    TftpMetrics {
        transfers: reg.metric(
            "provbox_tftp_transfers",
            "TFTP requests by outcome (ok, not_found, access_violation, timeout, client_error, options_declined, busy, ...)",
        ),
        bytes: reg.metric_of(
            "provbox_tftp_sent",
            "File bytes acknowledged by TFTP clients",
            Some(Unit::Bytes),
            Counter::default(),
        ),
        retransmits: reg.metric(
            "provbox_tftp_retransmits",
            "DATA or OACK packets sent again after a timeout or a partial window",
        ),
        options: reg.metric(
            "provbox_tftp_options",
            "Options acknowledged in OACKs, by option",
        ),
        // The same buckets as the shared duration histogram.
        duration: reg.metric_of(
            "provbox_tftp_transfer_duration",
            "Time from read request to the end of the transfer",
            Some(Unit::Seconds),
            duration_histogram(),
        ),
        malformed: reg.metric(
            "provbox_tftp_malformed_packets",
            "Packets dropped as malformed or unexpected, by reason",
        ),
    }
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
