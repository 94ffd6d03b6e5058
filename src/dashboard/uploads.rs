//! The bench view of a device's uploads (`uploads:`): `GET /api/uploads/{mac}` lists them
//! with size and time; `GET /api/uploads/{mac}/{name}?tail=50` gives a file's last lines.
//! Read from `data_dir/uploads` directly; behind the dashboard's token like every route.
//! Text goes out inside JSON, and the page puts it in with `textContent`: a log line
//! that looks like HTML stays text.

use std::path::Path;

use http::{Response, StatusCode};
use serde_json::json;

use super::{iso, json_response, query_param};
use crate::devices::Mac;
use crate::http::LoggedBody;

/// Lines a tail gives when `tail` is not said, and at most.
const TAIL: usize = 50;
const TAIL_MAX: usize = 1000;

/// `rest`: the path after `/api/uploads/`.
pub fn answer(root: &Path, rest: &[&str], query: Option<&str>) -> Response<LoggedBody> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let Some(mac) = rest.first().and_then(|m| decode(m).parse::<Mac>().ok()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "expected /api/uploads/{mac}[/{name}]"}),
        );
    };
    match rest {
        [_] => match crate::uploads::list(root, mac) {
            Ok(files) => {
                let files: Vec<_> = files
                    .iter()
                    .map(|f| {
                        json!({
                            "name": f.name,
                            "bytes": f.bytes,
                            "modified": iso(f.modified_ms),
                            "log": crate::uploads::is_log(&f.name),
                        })
                    })
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({"mac": mac.to_hex(), "files": files}),
                )
            }
            Err(e) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("cannot read the upload store: {e}")}),
            ),
        },
        [_, name] => {
            let lines = query_param(query, "tail")
                .and_then(|t| t.parse::<usize>().ok())
                .unwrap_or(TAIL)
                .min(TAIL_MAX);
            let name = decode(name);
            match crate::uploads::tail(root, mac, &name, lines) {
                Ok(Some(text)) => json_response(
                    StatusCode::OK,
                    &json!({"mac": mac.to_hex(), "name": name, "lines": lines, "tail": text}),
                ),
                Ok(None) => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no upload `{name}` for {}", mac.to_hex())}),
                ),
                Err(e) => json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": format!("cannot read `{name}`: {e}")}),
                ),
            }
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}
