//! The catalog: the files provbox publishes (size, sha256, version time) and which devices
//! fetched one of them (from the devices' timelines).

use std::collections::HashMap;
use std::sync::Mutex;

use http::{Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Api, Problem, json, query_param};
use crate::http::LoggedBody;

/// One published file.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CatalogFile {
    /// Relative to its catalog root (`profiles/y000000000028.cfg`).
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the published bytes.
    pub sha256: String,
    /// When this version was written (`2026-11-26T23:59:01Z`).
    pub version_time: String,
    pub etag: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogList {
    pub items: Vec<CatalogFile>,
    pub total: usize,
}

/// One fetch of a file by a device.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Fetch {
    pub device: String,
    /// Unix milliseconds.
    pub at: u64,
    pub protocol: String,
    pub bytes: u64,
    /// `ok`, `not_modified`, `aborted`, ...
    pub outcome: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FetchList {
    pub path: String,
    pub items: Vec<Fetch>,
    pub total: usize,
}

/// Digests by ETag (an ETag names one version): a large firmware is hashed once.
static SUMS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn sha256_of(etag: &str, body: &[u8]) -> String {
    if let Some(s) = SUMS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(etag))
    {
        return s.clone();
    }
    let sum: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut g = SUMS.lock().unwrap_or_else(|e| e.into_inner());
    let m = g.get_or_insert_with(HashMap::new);
    // Bounded: old versions' digests go when the map grows past any real catalog.
    if m.len() > 100_000 {
        m.clear();
    }
    m.insert(etag.to_string(), sum.clone());
    sum
}

/// Every published file.
#[utoipa::path(get, operation_id = "catalog_list", path = "/api/v1/catalog", tag = "catalog",
    responses((status = 200, body = CatalogList)))]
pub async fn list(api: &Api) -> Response<LoggedBody> {
    let entries = api.provisioner.catalog().entries();
    // Hashing reads every byte: off the async workers.
    let items = tokio::task::spawn_blocking(move || {
        entries
            .iter()
            .map(|e| CatalogFile {
                path: e.key.clone(),
                size: e.body.len() as u64,
                sha256: sha256_of(&e.etag, &e.body),
                version_time: crate::status::record::iso(
                    e.modified
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                ),
                etag: e.etag.clone(),
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    json(
        StatusCode::OK,
        &CatalogList {
            total: items.len(),
            items,
        },
    )
}

/// The path of a timeline's transfer detail (`http /profiles/a.cfg 120 bytes ok`), with
/// its protocol, bytes and outcome.
fn transfer(detail: &str) -> Option<(&str, &str, u64, &str)> {
    let mut w = detail.split(' ');
    let proto = w.next()?;
    let path = w.next()?;
    let bytes = w.next()?.parse().ok()?;
    let _ = w.next()?;
    let outcome = w.next()?;
    Some((proto, path, bytes, outcome))
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_start_matches('/')
        .eq_ignore_ascii_case(b.trim_start_matches('/'))
}

/// Which devices fetched a file (from the timelines provbox keeps: the most recent
/// transfers of each device).
#[utoipa::path(get, operation_id = "catalog_fetches", path = "/api/v1/catalog/fetches", tag = "catalog",
    params(("path" = String, Query, description = "the file's path, e.g. profiles/y000000000028.cfg")),
    responses(
        (status = 200, body = FetchList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub fn fetches(api: &Api, query: Option<&str>) -> Response<LoggedBody> {
    let Some(path) = query_param(query, "path").filter(|p| !p.is_empty()) else {
        return Problem::bad_request("`path` is missing; expected ?path=<file in the catalog>")
            .into();
    };
    let mut items = Vec::new();
    api.book.map(|d| {
        for e in d.events.iter().filter(|e| e.kind == "transfer") {
            if let Some((proto, p, bytes, outcome)) = transfer(&e.detail)
                && same_path(p, &path)
            {
                items.push(Fetch {
                    device: d.key.clone(),
                    at: e.at,
                    protocol: proto.to_string(),
                    bytes,
                    outcome: outcome.to_string(),
                });
            }
        }
    });
    items.sort_by_key(|f| f.at);
    json(
        StatusCode::OK,
        &FetchList {
            path,
            total: items.len(),
            items,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_details() {
        assert_eq!(
            transfer("http /profiles/a.cfg 120 bytes ok"),
            Some(("http", "/profiles/a.cfg", 120, "ok"))
        );
        assert_eq!(transfer("resync sent"), None);
        assert!(same_path("/Profiles/a.cfg", "profiles/a.cfg"));
    }
}
