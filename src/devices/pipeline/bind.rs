//! Retail PIN binding, in two stages around `render`. `bind_pin`: `GET
//! <init_prefix>/<PIN>` from a proven device claims the PIN's account (throttled: see
//! [`binding`]) and resolves to the binding profile, rendered for that device and account.
//! `record_binding`: once the profile rendered, the binding is recorded. Render first,
//! bind second: a broken profile binds nothing.

use super::{Claim, Ctx, Flow, Found, Stage};
use crate::devices::binding::{self, Bound};
use crate::devices::{ResultLabels, access};

fn count(ctx: &Ctx<'_>, result: &'static str) {
    ctx.pv
        .metrics
        .bindings
        .get_or_create(&ResultLabels { result })
        .inc();
}

/// Count the binding result and refuse with it.
fn fail(ctx: &Ctx<'_>, result: &'static str, detail: &str) -> Flow {
    count(ctx, result);
    Flow::Refuse(ctx.refuse(result, detail))
}

pub struct BindPin;

impl Stage for BindPin {
    fn name(&self) -> &'static str {
        "bind_pin"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        let pv = ctx.pv;
        let Some(bindings) = &pv.bindings else {
            return Flow::Continue;
        };
        let Some(rest) = bindings.route(&ctx.key) else {
            return Flow::Continue;
        };
        let pin = rest.trim_start_matches('/').to_string();
        if pin.is_empty() || pin.contains('/') {
            return fail(ctx, "pin_missing", "expected <init_prefix>/<PIN>");
        }
        let Ok(mac) = access::allow(&ctx.id, None) else {
            return fail(
                ctx,
                "unidentified_device",
                "PIN binding needs a device whose MAC is known and proven",
            );
        };
        if let Err(t) = bindings.try_attempt(mac, ctx.req.peer.ip()) {
            let detail = match t {
                binding::Throttle::Guesser => {
                    "too many wrong PINs from this device or address; try again later"
                }
                binding::Throttle::Global => {
                    "devices.binding.wrong_pins_budget is used up for everyone; try again later"
                }
            };
            return fail(ctx, t.reason(), detail);
        }
        let inv = ctx.inventory();
        let Some(account) = inv.by_pin(&pin) else {
            return fail(ctx, "pin_unknown", "no account holds this PIN");
        };
        let profile = &pv.cfg.binding.profile.value;
        let tmpl = match pv.catalog.lookup(profile) {
            Ok(t) => t,
            Err(_) => {
                tracing::error!(profile = %profile, "devices.binding.profile is not in the catalog; nothing bound");
                return fail(
                    ctx,
                    "binding_profile_missing",
                    "the binding profile template is missing",
                );
            }
        };
        ctx.device = Some(mac);
        ctx.found = Some(Found::Template {
            tmpl,
            key: ctx.req.path.trim_start_matches('/').to_string(),
        });
        ctx.claim = Some(Claim {
            pin,
            account: account.clone(),
        });
        Flow::Continue
    }
}

pub struct RecordBinding;

impl Stage for RecordBinding {
    fn name(&self) -> &'static str {
        "record_binding"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        let (Some(claim), Some(bindings), Some(mac)) =
            (ctx.claim.take(), &ctx.pv.bindings, ctx.device)
        else {
            return Flow::Continue;
        };
        match bindings.bind(&claim.pin, mac) {
            Ok(b) => {
                bindings.bound_ok(mac, ctx.req.peer.ip());
                count(ctx, if b == Bound::New { "bound" } else { "again" });
                if b == Bound::New {
                    tracing::info!(mac = %mac, account = claim.account.var("account").unwrap_or(""), "device bound to its account by PIN");
                }
                Flow::Continue
            }
            Err(e) => {
                // Someone else's PIN, or a second one, stays counted as a guess.
                if let binding::BindRefusal::Store(s) = &e {
                    tracing::error!("binding store: {s}");
                }
                fail(ctx, e.reason(), "PIN binding refused")
            }
        }
    }
}
