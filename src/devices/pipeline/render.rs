//! `render`: the bytes of the answer. A template is rendered with the device's variables
//! (all or nothing: a missing variable refuses the whole file, 404 or 403 as
//! `devices.missing_variable` says, and the log names template, line and variable); its
//! entry's ETag is the content's hash. A static file is taken as it is.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::{Ctx, Flow, Found, Stage};
use crate::catalog::{Entry, Refusal};
use crate::devices::{OutcomeLabel, generated, template};

pub struct Render;

impl Stage for Render {
    fn name(&self) -> &'static str {
        "render"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        let (tmpl, key) = match &ctx.found {
            None => return Flow::Continue,
            Some(Found::File(entry)) => {
                ctx.entry = Some(entry.clone());
                return Flow::Continue;
            }
            Some(Found::Template { tmpl, key }) => (tmpl.clone(), key.clone()),
        };
        // The HTTPS bootstrap's URLs, unless the device's own variables name them.
        for (k, v) in ctx.pv.bootstrap.vars(ctx.req) {
            ctx.vars.entry(k).or_insert(v);
        }
        let body = match render(ctx, &tmpl) {
            Ok(b) => b,
            Err(r) => return Flow::Refuse(r),
        };
        let modified = tmpl
            .modified
            .max(ctx.inventory().modified.unwrap_or(SystemTime::UNIX_EPOCH));
        let entry = Arc::new(generated(key, Bytes::from(body), modified));
        // What a report from this device is compared with (`crate::devices::verify`).
        if let Some(mac) = ctx.device {
            ctx.pv.served.remember(mac, &entry.key, &entry.body);
        }
        ctx.entry = Some(entry);
        Flow::Continue
    }
}

fn render(ctx: &Ctx<'_>, tmpl: &Entry) -> Result<Vec<u8>, Refusal> {
    let outcome = |o| {
        ctx.pv
            .metrics
            .renders
            .get_or_create(&OutcomeLabel { outcome: o })
            .inc()
    };
    let Ok(text) = std::str::from_utf8(&tmpl.body) else {
        outcome("template_syntax");
        return Err(ctx.refuse("template_syntax", "template is not UTF-8"));
    };
    let lookup = |n: &str| ctx.vars.get(n).map(|s| Cow::Borrowed(s.as_str()));
    match template::render(text, &lookup) {
        Ok(s) => {
            outcome("rendered");
            Ok(s.into_bytes())
        }
        Err(e) => {
            outcome(e.reason());
            let detail = format!("template {}: {e}", tmpl.key);
            let reason = e.reason();
            let refusal = ctx.refuse(reason, &detail);
            if ctx.pv.cfg.missing_variable.value == 404 {
                Err(Refusal::NotFound)
            } else {
                Err(refusal)
            }
        }
    }
}
