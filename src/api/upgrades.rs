//! Firmware pushes: `GET /api/v1/upgrades` (the kept runs and each phone's stage),
//! `POST /api/v1/upgrades` with `{"target": "all" | mac | ip, "firmware": path?}` (or the
//! same as `?target=&firmware=`, which the CLI and the page send), and
//! `POST /api/v1/devices/{mac}/upgrade` (optional `?firmware=`). The work is `upgrade`'s;
//! this answers with the run (202) or why it did not start (404/422), after reading the body.

use http::{Response, StatusCode};
use serde::Deserialize;

use super::{Api, NotFound, Problem, audit, json, query_param};
use crate::http::LoggedBody;
use crate::upgrade::StartError;

/// What `POST /api/v1/upgrades` takes as a JSON body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// `all`, a MAC address or an IP address.
    pub target: String,
    /// A catalog path; without it each phone gets its configured firmware (`upgrade.firmware`).
    #[serde(default)]
    pub firmware: Option<String>,
}

/// The kept runs, newest last: `{"runs": [{id, target, max_parallel, started, done,
/// counts, phones: [{key, ip, firmware, url, stage, detail, at}], skipped}]}`.
#[utoipa::path(get, operation_id = "upgrades_list", path = "/api/v1/upgrades", tag = "upgrades",
    responses((status = 200, body = serde_json::Value, description = "the kept runs, newest last")))]
pub fn list(api: &Api) -> Response<LoggedBody> {
    json(StatusCode::OK, &api.upgrades.json())
}

/// Start a run: the phone's web command `/admin/upgrade?<firmware URL on this box>`,
/// at most `upgrade.max_parallel` phones at a time. Progress: `GET /api/v1/upgrades`.
#[utoipa::path(post, operation_id = "upgrades_start", path = "/api/v1/upgrades", tag = "upgrades",
    params(
        ("target" = Option<String>, Query, description = "instead of a body: all, a MAC or an IP address"),
        ("firmware" = Option<String>, Query, description = "with `target`: a catalog path"),
    ),
    request_body(content = Option<Start>, content_type = "application/json"),
    responses(
        (status = 202, body = serde_json::Value, description = "the run started"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        NotFound,
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub fn start(api: &Api, who: &str, query: Option<&str>, body: &[u8]) -> Response<LoggedBody> {
    let s = match query_param(query, "target") {
        Some(target) => Start {
            target,
            firmware: query_param(query, "firmware"),
        },
        None => match parse(body) {
            Ok(s) => s,
            Err(p) => {
                audit(who, "upgrade", "?", &p.detail);
                return p.into();
            }
        },
    };
    run(api, who, &s.target, s.firmware.as_deref())
}

/// Upgrade one phone.
#[utoipa::path(post, operation_id = "devices_upgrade", path = "/api/v1/devices/{mac}/upgrade", tag = "devices",
    params(
        ("mac" = String, Path, description = "a MAC address or an IP address"),
        ("firmware" = Option<String>, Query, description = "a catalog path; default: the configured firmware for its model"),
    ),
    responses(
        (status = 202, body = serde_json::Value, description = "the run started"),
        NotFound,
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub fn device(api: &Api, who: &str, mac: &str, query: Option<&str>) -> Response<LoggedBody> {
    let fw = query_param(query, "firmware");
    run(api, who, mac, fw.as_deref())
}

fn parse(body: &[u8]) -> Result<Start, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request(
            "no target; send {\"target\": \"all\" | mac | ip, \"firmware\": path?} or ?target=",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not an upgrade request ({e}); expected {{\"target\": \"all\" | mac | ip, \"firmware\": path?}}"
        ))
    })
}

fn run(api: &Api, who: &str, target: &str, firmware: Option<&str>) -> Response<LoggedBody> {
    let what = match firmware {
        Some(f) => format!("upgrade to {f}"),
        None => "upgrade".to_string(),
    };
    match api.upgrades.start(target, firmware) {
        Ok(run) => {
            audit(who, &what, target, &format!("run {} started", run.id));
            json(StatusCode::ACCEPTED, &run.json())
        }
        Err(e) => {
            audit(who, &what, target, &format!("refused: {e}"));
            match e {
                StartError::NotFound(d) => Problem::not_found(d),
                StartError::Invalid(d) => {
                    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Cannot upgrade", d)
                }
            }
            .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let s = parse(br#"{"target": "all", "firmware": "fw/sip.bin"}"#).unwrap();
        assert_eq!(
            (s.target.as_str(), s.firmware.as_deref()),
            ("all", Some("fw/sip.bin"))
        );
        assert_eq!(parse(br#"{"target":"198.18.0.7"}"#).unwrap().firmware, None);
        for bad in [
            &b""[..],
            b"  ",
            b"{}",
            b"{\"target\":1}",
            b"{\"target\":\"all\",\"x\":1}",
        ] {
            let p = parse(bad).unwrap_err();
            assert_eq!(p.status, 400);
            assert!(p.detail.contains("target"), "{}", p.detail);
        }
    }
}
