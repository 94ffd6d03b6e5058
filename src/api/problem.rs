//! RFC 9457 problem details: every error the API gives is one of these.

use http::{Response, StatusCode};
use serde::Serialize;

use crate::http::LoggedBody;

/// An error answer (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank`: the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, the same for every occurrence of this kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, in words an operator can act on.
    pub detail: String,
}

// The 404 every lookup can answer, for the OpenAPI document's `responses(...)` (only
// the document uses the type; a comment, not a doc comment, so the response keeps no
// description, as the inline form had none).
#[derive(utoipa::IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

impl Problem {
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// `part`, or 503 when that part of provbox is off (`title` says which, `detail` how to
    /// turn it on).
    pub fn unless_off<T>(part: Option<T>, title: &str, detail: &str) -> Result<T, Problem> {
        part.ok_or_else(|| Problem::new(StatusCode::SERVICE_UNAVAILABLE, title, detail))
    }

    /// The answer: the status, `application/problem+json`, never cached.
    pub fn response(&self) -> Response<LoggedBody> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        super::respond(
            status,
            "application/problem+json",
            serde_json::to_vec(self).unwrap_or_default(),
        )
    }
}

impl From<Problem> for Response<LoggedBody> {
    fn from(p: Problem) -> Self {
        p.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problem_json_has_the_rfc_9457_members() {
        let r: Response<LoggedBody> = Problem::not_found("no device `00:56:2b:04:36:15`").into();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers()[http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Not found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["detail"], "no device `00:56:2b:04:36:15`");
        assert_eq!(v.as_object().unwrap().len(), 4);
    }
}
