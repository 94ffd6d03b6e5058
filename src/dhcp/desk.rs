//! The lease desk the API uses: list and operator release, through the same writer queue
//! (and so the same journal, in order) as every other lease change.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::engine::Engine;
use super::leases::{Lease, State};
use super::{Job, now};
use crate::devices::desk::{LeaseDesk, LeaseRow, ReleaseError, Released};

pub(super) struct Desk {
    engine: Arc<Engine>,
    tx: mpsc::Sender<Job>,
}

impl Desk {
    pub(super) fn new(engine: Arc<Engine>, tx: mpsc::Sender<Job>) -> Desk {
        Desk { engine, tx }
    }
}

pub(super) fn row(l: &Lease, now: u64) -> LeaseRow {
    let (state, until) = match l.state {
        State::Bound { expires } if expires > now => ("bound", Some(expires)),
        State::Bound { expires } => ("expired", Some(expires)),
        State::Free => ("free", None),
        State::Declined { until } => ("declined", Some(until)),
        State::Offered { until } => ("offered", Some(until)),
    };
    LeaseRow {
        ip: l.ip,
        mac: l.mac.to_string(),
        hostname: l.hostname.clone(),
        vendor_class: l.vendor_class.clone(),
        state: state.into(),
        until,
    }
}

impl LeaseDesk for Desk {
    fn list(&self) -> Vec<LeaseRow> {
        let t = now();
        self.engine.leases_now().iter().map(|l| row(l, t)).collect()
    }

    fn release(&self, ip: Ipv4Addr) -> Released {
        let (engine, tx) = (self.engine.clone(), self.tx.clone());
        Box::pin(async move {
            let t = now();
            let (change, event) = engine
                .release_by_operator(ip, t)
                .ok_or(ReleaseError::NotBound)?;
            let shown = row(&event.lease, t);
            let (done, written) = oneshot::channel();
            let job = Job {
                changes: vec![change],
                events: vec![event],
                reply: None,
                done: Some(done),
            };
            tx.send(job)
                .await
                .map_err(|_| ReleaseError::Store("the lease writer has stopped".into()))?;
            match written.await {
                Ok(true) => Ok(shown),
                _ => Err(ReleaseError::Store(
                    "the lease journal could not be written (see the log)".into(),
                )),
            }
        })
    }
}
