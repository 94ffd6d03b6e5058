//! `authorize`: who may have what was found. A public static file goes to anyone and is
//! answered here, as the catalog has it. A file under a private prefix that names no
//! device goes to no one. Everything else (a per-device file, any rendered template) goes
//! only to its proven device ([`access::allow`]), whose variables are then gathered for
//! `render` and `encrypt`. A PIN binding (`bind_pin`) has proven its device already.

use std::collections::BTreeMap;

use super::{Ctx, Flow, Found, Stage};
use crate::catalog::Refusal;
use crate::devices::access::{self, Owner};
use crate::devices::{Identity, Inventory, Mac, Provisioner, Record, identity, template};

pub struct Authorize;

impl Stage for Authorize {
    fn name(&self) -> &'static str {
        "authorize"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        let Some(found) = &ctx.found else {
            return Flow::Refuse(Refusal::NotFound);
        };
        let mac = match ctx.device {
            Some(m) => m,
            None => {
                let what = match (found, &ctx.owner) {
                    (Found::File(entry), Owner::Public) => return Flow::Answer(entry.clone()),
                    (Found::File(_), Owner::Private) => {
                        return Flow::Refuse(ctx.refuse(
                            "no_owner",
                            "a static file under a private prefix names no device",
                        ));
                    }
                    (Found::File(_), _) => "per-device file",
                    (Found::Template { .. }, _) => "per-device profile",
                };
                match access::allow(&ctx.id, ctx.owner.mac()) {
                    Ok(m) => m,
                    Err(r) => return Flow::Refuse(ctx.refuse(r, what)),
                }
            }
        };
        ctx.device = Some(mac);
        let inv = ctx.inventory();
        let account = ctx.claim.as_ref().map(|c| &c.account);
        ctx.vars = device_vars(ctx.pv, &inv, mac, &ctx.id, account);
        Flow::Continue
    }
}

/// Variables for rendering for device `mac`: its macros, its bound account's
/// variables, then its own inventory record's (which win). `account` is an account
/// record to use instead of the bound one (the binding being made).
pub fn device_vars(
    pv: &Provisioner,
    inv: &Inventory,
    mac: Mac,
    id: &Identity,
    account: Option<&Record>,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let bound_pin;
    let account = match account {
        Some(a) => Some(a),
        None => {
            bound_pin = pv.bindings.as_ref().and_then(|b| b.pin_of(mac));
            bound_pin.as_deref().and_then(|p| inv.by_pin(p))
        }
    };
    if let Some(a) = account {
        v.extend(a.vars.iter().map(|(k, x)| (k.clone(), x.clone())));
    }
    // A serial is only what the User-Agent says: it selects a record that names no MAC
    // (one scanned by serial) or names this proven device, never another device's.
    let own = inv.by_mac(mac).or_else(|| {
        id.serial
            .as_deref()
            .and_then(|s| inv.by_serial(s))
            .filter(|r| r.mac.is_none_or(|m| m == mac))
    });
    // Nobody scanned it: the row of the switch port it was leased through.
    let own = own.or_else(|| identity::port_record(&pv.registry, inv, mac));
    if let Some(r) = own {
        v.extend(r.vars.iter().map(|(k, x)| (k.clone(), x.clone())));
    }
    let serial = own
        .and_then(|r| r.serial.clone())
        .or_else(|| id.serial.clone());
    let hex = mac.to_hex();
    v.insert("MAU".into(), hex.to_ascii_uppercase());
    v.insert("MA".into(), hex);
    v.insert("MAC".into(), mac.to_string());
    if let Some(pn) = &id.model {
        v.insert("PN".into(), pn.clone());
        if let Some(psn) = template::series(pn) {
            v.insert("PSN".into(), psn);
        }
    }
    if let Some(sw) = &id.version {
        v.insert("SWVER".into(), sw.clone());
    }
    if let Some(sn) = serial {
        v.insert("SN".into(), sn);
    }
    v
}
