//! `GET /api/v1/history`: devices per state over the last hours (the chart's data).

use http::StatusCode;

use super::{DashboardHandler, json_response};
use crate::http::LoggedBody;

pub fn get(h: &DashboardHandler) -> http::Response<LoggedBody> {
    json_response(StatusCode::OK, &h.history.json(&h.book))
}
