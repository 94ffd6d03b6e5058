//! `normalise`: the path as the catalog keys it (one set of path rules for every
//! protocol), and whose file that key is ([`access::owner_of`]).

use super::{Ctx, Flow, Stage};
use crate::devices::access;

pub struct Normalise;

impl Stage for Normalise {
    fn name(&self) -> &'static str {
        "normalise"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        match crate::catalog::path::normalize(ctx.req.path) {
            Ok(key) => {
                ctx.owner = access::owner_of(&key, &ctx.pv.cfg);
                ctx.key = key;
                Flow::Continue
            }
            Err(e) => Flow::Refuse(e.into()),
        }
    }
}
