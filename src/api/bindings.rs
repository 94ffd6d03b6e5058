//! PIN bindings: list, unbind (the PIN can then bind another phone).

use http::{Response, StatusCode};
use serde::Serialize;

use super::{Api, NotFound, Problem, answer, audit, json};
use crate::devices::binding::Bindings;
use crate::http::LoggedBody;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Binding {
    pub pin: String,
    /// The devices bound to it (`00:56:2b:04:36:15`).
    pub devices: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingList {
    pub items: Vec<Binding>,
    pub total: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unbound {
    pub pin: String,
    /// The devices that were bound to it.
    pub unbound: Vec<String>,
}

/// `00562b043615` → `00:56:2b:04:36:15`.
pub fn colons(hex: &str) -> String {
    hex.parse::<crate::devices::Mac>()
        .map(|m| m.to_string())
        .unwrap_or_else(|_| hex.to_string())
}

fn bindings(api: &Api) -> Result<&Bindings, Problem> {
    Problem::unless_off(
        api.provisioner.bindings(),
        "PIN binding is off",
        "devices.binding is not configured, so no PIN is bound",
    )
}

pub fn to_list(rows: Vec<(String, Vec<String>)>) -> BindingList {
    let items: Vec<Binding> = rows
        .into_iter()
        .map(|(pin, macs)| Binding {
            pin,
            devices: macs.iter().map(|m| colons(m)).collect(),
        })
        .collect();
    BindingList {
        total: items.len(),
        items,
    }
}

/// Every PIN with the devices bound to it.
#[utoipa::path(get, operation_id = "bindings_list", path = "/api/v1/bindings", tag = "bindings",
    responses(
        (status = 200, body = BindingList),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub fn list(api: &Api) -> Response<LoggedBody> {
    answer(bindings(api).and_then(|b| {
        b.list()
            .map(to_list)
            .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store error", e))
    }))
}

/// Unbind a PIN: its devices are unbound, and it can bind another phone.
#[utoipa::path(delete, operation_id = "bindings_unbind", path = "/api/v1/bindings/{pin}", tag = "bindings",
    params(("pin" = String, Path, description = "the PIN")),
    responses(
        (status = 200, body = Unbound),
        NotFound,
    ))]
pub fn unbind(api: &Api, who: &str, pin: &str) -> Response<LoggedBody> {
    let b = match bindings(api) {
        Ok(b) => b,
        Err(p) => return p.into(),
    };
    // The PIN is a credential: the audit line shows its length, not its digits.
    let shown = format!("PIN of {} characters", pin.len());
    match b.unbind(pin) {
        Ok(macs) if macs.is_empty() => {
            audit(who, "unbind", &shown, "not bound");
            Problem::not_found("no device is bound to that PIN").into()
        }
        Ok(macs) => {
            let unbound: Vec<String> = macs.iter().map(|m| colons(m)).collect();
            audit(
                who,
                "unbind",
                &format!("{shown} from {}", unbound.join(", ")),
                "done",
            );
            json(
                StatusCode::OK,
                &Unbound {
                    pin: pin.to_string(),
                    unbound,
                },
            )
        }
        Err(e) => {
            audit(who, "unbind", &shown, "store error");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store error", e).into()
        }
    }
}
