//! DHCP metric families, registered once at start-up beside the shared ones.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Registers;
pub use crate::metrics::{EventLabel, RefusalLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub message: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabels {
    pub subnet: String,
}

#[derive(Default)]
pub struct DhcpMetrics {
    pub received: Family<MessageLabels, Counter>,
    pub sent: Family<MessageLabels, Counter>,
    pub dropped: Family<RefusalLabels, Counter>,
    pub lease_events: Family<EventLabel, Counter>,
    pub leases_active: Gauge,
    pub pool_size: Family<SubnetLabels, Gauge>,
    pub pool_used: Family<SubnetLabels, Gauge>,
    pub journal_degraded: Gauge,
    pub share_boxes: Gauge,
}

impl DhcpMetrics {
    pub fn register(reg: &mut Registry) -> DhcpMetrics {
        let m = DhcpMetrics {
            received: reg.metric(
                "provbox_dhcp_received",
                "DHCP messages received, by message type",
            ),
            sent: reg.metric("provbox_dhcp_sent", "DHCP replies sent: offer, ack, nak"),
            dropped: reg.metric(
                "provbox_dhcp_dropped",
                "DHCP messages dropped without reply, by reason",
            ),
            lease_events: reg.metric(
                "provbox_dhcp_lease_events",
                "Lease events: granted, renewed, released, declined, expired",
            ),
            leases_active: reg.metric("provbox_dhcp_leases_active", "Bound, unexpired leases"),
            pool_size: reg.metric(
                "provbox_dhcp_pool_size",
                "Addresses in the pools of each subnet",
            ),
            pool_used: reg.metric(
                "provbox_dhcp_pool_used",
                "Active leases in each subnet (utilisation = used / size)",
            ),
            journal_degraded: reg.metric(
                "provbox_dhcp_journal_degraded",
                "1 while the lease journal cannot be made durable (a sync failed): no ACK leaves",
            ),
            share_boxes: reg.metric(
                "provbox_dhcp_share_boxes",
                "Boxes splitting the DHCP pools between them (store.backend: postgres); 1: this box alone",
            ),
        };
        m.share_boxes.set(1);
        m
    }

    pub fn drop_reason(&self, reason: &'static str) {
        self.dropped.get_or_create(&RefusalLabels { reason }).inc();
    }
}
