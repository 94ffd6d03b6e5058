//! `identify`: who is asking, from the client certificate, our lease, the User-Agent or
//! the MAC the path names, and whether `devices.trust` lets that prove it
//! ([`identity::identify`]). Counted by source.

use super::{Ctx, Flow, Stage};
use crate::devices::{SourceLabels, identity};

pub struct Identify;

impl Stage for Identify {
    fn name(&self) -> &'static str {
        "identify"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        let (pv, req) = (ctx.pv, ctx.req);
        ctx.id = identity::identify(
            req.peer.ip(),
            req.user_agent,
            req.client,
            ctx.owner.mac(),
            &pv.registry,
            &pv.cfg.trust,
            &*pv.neighbours,
        );
        pv.metrics
            .identity
            .get_or_create(&SourceLabels {
                source: ctx.id.source,
            })
            .inc();
        Flow::Continue
    }
}
