//! Answering one HTTP request for a file: method, conditional requests, a single range,
//! content type. Pure functions of (request head, entry) so they are tested without sockets.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use crate::catalog::Entry;

/// Extension → Content-Type for what phones fetch.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("xml") => "application/xml",
        Some("cfg" | "cnf" | "conf" | "txt" | "ini" | "boot") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("htm" | "html") => "text/html; charset=utf-8",
        Some("pem" | "crt" | "cer") => "application/x-pem-file",
        Some("der") => "application/pkix-cert",
        Some("gz") => "application/gzip",
        Some("zip") => "application/zip",
        Some("tar") => "application/x-tar",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("wav") => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// The decision for a GET/HEAD of an existing entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Full,
    NotModified,
    /// Inclusive byte range.
    Partial(u64, u64),
    Unsatisfiable,
}

fn etag_matches(list: &str, etag: &str) -> bool {
    // If-None-Match uses the weak comparison: W/"x" matches "x".
    list.split(',')
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag.trim_start_matches("W/"))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parse `bytes=a-b`, `bytes=a-`, `bytes=-n` against a length. `None`: ignore the header
/// (malformed or several ranges: a full 200 is a valid answer); `Some(None)`: 416.
pub fn parse_range(value: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(None);
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            u64::MAX
        } else {
            b.parse().ok()?
        };
        if end < start {
            return None;
        }
        if start >= len {
            return Some(None);
        }
        (start, end.min(len - 1))
    };
    Some(Some(range))
}

pub fn plan(method: &Method, headers: &HeaderMap, entry: &Entry) -> Plan {
    let h = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(inm) = h(header::IF_NONE_MATCH) {
        if etag_matches(inm, &entry.etag) {
            return Plan::NotModified;
        }
    } else if let Some(ims) = h(header::IF_MODIFIED_SINCE)
        && let Ok(t) = httpdate::parse_http_date(ims)
        && secs(entry.modified) <= secs(t)
    {
        return Plan::NotModified;
    }
    if method != Method::GET {
        return Plan::Full;
    }
    let Some(range) = h(header::RANGE) else {
        return Plan::Full;
    };
    if let Some(ir) = h(header::IF_RANGE) {
        let still = if ir.starts_with('"') {
            ir == entry.etag
        } else {
            httpdate::parse_http_date(ir)
                .map(|t| secs(entry.modified) == secs(t))
                .unwrap_or(false)
        };
        if !still {
            return Plan::Full;
        }
    }
    match parse_range(range, entry.body.len() as u64) {
        None => Plan::Full,
        Some(None) => Plan::Unsatisfiable,
        Some(Some((a, b))) => Plan::Partial(a, b),
    }
}

pub fn status_of(plan: &Plan) -> StatusCode {
    match plan {
        Plan::Full => StatusCode::OK,
        Plan::NotModified => StatusCode::NOT_MODIFIED,
        Plan::Partial(..) => StatusCode::PARTIAL_CONTENT,
        Plan::Unsatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn entry() -> Entry {
        Entry::generated(
            "a.bin".into(),
            Bytes::from(vec![0u8; 1000]),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            "\"3e8-1\"".into(),
        )
    }

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Some((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Some(Some((900, 999))));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Some((900, 999))));
        assert_eq!(parse_range("bytes=990-5000", 1000), Some(Some((990, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Some(None));
        assert_eq!(parse_range("bytes=-0", 1000), Some(None));
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }

    #[test]
    fn conditionals() {
        let e = entry();
        let get = Method::GET;
        assert_eq!(
            plan(&get, &hm(&[("if-none-match", "\"3e8-1\"")]), &e),
            Plan::NotModified
        );
        assert_eq!(
            plan(&get, &hm(&[("if-none-match", "W/\"3e8-1\", \"x\"")]), &e),
            Plan::NotModified
        );
        assert_eq!(
            plan(&get, &hm(&[("if-none-match", "\"other\"")]), &e),
            Plan::Full
        );
        let later = httpdate::fmt_http_date(e.modified + Duration::from_secs(10));
        let earlier = httpdate::fmt_http_date(e.modified - Duration::from_secs(10));
        assert_eq!(
            plan(&get, &hm(&[("if-modified-since", &later)]), &e),
            Plan::NotModified
        );
        assert_eq!(
            plan(&get, &hm(&[("if-modified-since", &earlier)]), &e),
            Plan::Full
        );
        assert_eq!(
            plan(&get, &hm(&[("range", "bytes=0-9")]), &e),
            Plan::Partial(0, 9)
        );
        assert_eq!(
            plan(
                &get,
                &hm(&[("range", "bytes=0-9"), ("if-range", "\"old\"")]),
                &e
            ),
            Plan::Full
        );
        assert_eq!(
            plan(&get, &hm(&[("range", "bytes=2000-")]), &e),
            Plan::Unsatisfiable
        );
        assert_eq!(
            content_type("/CP-8831-3PCC.cfg"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("/x.XML"), "application/xml");
        assert_eq!(content_type("/fw.bin.sgn"), "application/octet-stream");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A satisfiable range lies inside the file; `a-b` within it is taken as is.
        #[test]
        fn ranges_stay_inside_the_file(
            spec in "(bytes=)?[ 0-9,-]{0,16}",
            len in prop_oneof![Just(0u64), 1u64..2000, Just(u64::MAX)],
        ) {
            if let Some(Some((a, b))) = parse_range(&spec, len) {
                prop_assert!(a <= b && b < len, "{} on {}: {}-{}", spec, len, a, b);
            }
        }

        #[test]
        fn explicit_ranges_are_exact(a in 0u64..1000, n in 0u64..1000, len in 1u64..3000) {
            let b = a + n;
            let got = parse_range(&format!("bytes={a}-{b}"), len);
            if a >= len {
                prop_assert_eq!(got, Some(None));
            } else {
                prop_assert_eq!(got, Some(Some((a, b.min(len - 1)))));
            }
            let suffix = parse_range(&format!("bytes=-{}", n + 1), len);
            prop_assert_eq!(suffix, Some(Some((len.saturating_sub(n + 1), len - 1))));
        }
    }
}
