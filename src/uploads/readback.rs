//! `uploads`: a pipeline stage (before `resolve`) that answers a phone reading back a file
//! it uploaded (Polycom reads `<MAC>-phone.cfg` at every boot). The catalog wins: a key
//! the catalog (or a template) answers goes on as always. Otherwise a key under an upload
//! pattern is answered from the store, to its proven device only ([`access::allow`], the
//! same rule as per-device profiles); anyone else is refused.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::Uploads;
use crate::catalog::{Entry, Refusal};
use crate::devices::pipeline::{Ctx, Flow, Stage, httpauth};
use crate::devices::{access, template};

pub struct ReadBack(pub Arc<Uploads>);

/// Its name in the chain.
pub const NAME: &str = "uploads";

impl Stage for ReadBack {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        if ctx.found.is_some() {
            return Flow::Continue;
        }
        let Some(target) = self.0.target(&ctx.key) else {
            return Flow::Continue;
        };
        let catalog = ctx.pv.catalog();
        let in_catalog = catalog.lookup(&ctx.key).is_ok()
            || template::candidates(&ctx.key, ctx.owner.mac_range())
                .iter()
                .any(|c| catalog.lookup(c).is_ok());
        if in_catalog {
            return Flow::Continue;
        }
        // This stage answers before `http_auth` would run: a phone that proves itself
        // with credentials (`trust.http_auth`) is asked for them here (a 401 with the
        // challenge, not a 403).
        if let Flow::Refuse(r) = httpauth::authenticate(ctx) {
            return Flow::Refuse(r);
        }
        if let Err(r) = access::allow(&ctx.id, Some(target.mac)) {
            return Flow::Refuse(ctx.refuse(r, "uploaded file"));
        }
        let path = self.0.device_dir(target.mac).join(&target.name);
        let (body, modified) = match std::fs::read(&path) {
            Ok(b) => {
                let m = std::fs::metadata(&path).and_then(|m| m.modified());
                (Bytes::from(b), m.unwrap_or(std::time::SystemTime::now()))
            }
            Err(_) => return Flow::Refuse(Refusal::NotFound),
        };
        let h = Sha256::digest(&body);
        let hex: String = h[..12].iter().map(|b| format!("{b:02x}")).collect();
        Flow::Answer(Arc::new(Entry::generated(
            ctx.key.clone(),
            body,
            modified,
            format!("\"u-{hex}\""),
        )))
    }
}
