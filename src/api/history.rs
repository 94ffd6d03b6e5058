//! `GET /api/v1/history`: devices per state over the last hours (the dashboard's chart).

use http::{Response, StatusCode};

use super::{Api, json};
use crate::http::LoggedBody;

/// Devices per state, sampled every minute, and the counts now (last):
/// `{"every_s": 60, "states": ["seen", …], "samples": [{"at": ms, "seen": n, …}]}`.
#[utoipa::path(get, operation_id = "history", path = "/api/v1/history", tag = "devices",
    responses((status = 200, body = serde_json::Value, description = "samples, oldest first; the last is now")))]
pub fn get(api: &Api) -> Response<LoggedBody> {
    json(StatusCode::OK, &api.history.json(&api.book))
}
