//! `resolve`: what answers the key: the catalog's static file (it always wins), else the
//! first template [`template::candidates`] names. Template sources themselves are never
//! served. A request `bind_pin` already resolved (to the binding profile) passes.

use super::{Ctx, Flow, Found, Stage};
use crate::catalog::Refusal;
use crate::devices::template;

pub struct Resolve;

impl Stage for Resolve {
    fn name(&self) -> &'static str {
        "resolve"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        if ctx.found.is_some() {
            return Flow::Continue;
        }
        if template::is_template(&ctx.key) {
            // Template sources show how profiles are built; never served as they are.
            return Flow::Refuse(Refusal::NotFound);
        }
        let catalog = &ctx.pv.catalog;
        ctx.found = match catalog.lookup(&ctx.key) {
            Ok(entry) => Some(Found::File(entry)),
            Err(Refusal::NotFound) => {
                let Some(tmpl) = template::candidates(&ctx.key, ctx.owner.mac_range())
                    .iter()
                    .find_map(|c| catalog.lookup(c).ok())
                else {
                    return Flow::Refuse(Refusal::NotFound);
                };
                Some(Found::Template {
                    tmpl,
                    key: ctx.key.clone(),
                })
            }
            Err(e) => return Flow::Refuse(e),
        };
        Flow::Continue
    }
}
