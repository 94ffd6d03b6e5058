//! The inventory: list, one record, put one record, delete one, import a CSV scan. Every
//! write goes to the `devices.inventory` file atomically (temp file, rename) and serves at
//! once: the next profile fetch renders the new values.

use std::collections::BTreeMap;
use std::path::Path;

use http::{Response, StatusCode};
use serde::Serialize;

use super::{Api, NotFound, Problem, answer, audit, json};
use crate::devices::inventory::{self, Record};
use crate::http::LoggedBody;

/// One inventory record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InventoryRecord {
    /// How the API names it: the MAC, else the serial, else `pin:<PIN>`.
    pub key: String,
    pub mac: Option<String>,
    pub serial: Option<String>,
    /// Its variables (`account`, `extension`, `sip_user`, ..., free ones); `tags` joined
    /// with commas.
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InventoryList {
    pub items: Vec<InventoryRecord>,
    pub total: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Imported {
    /// What was merged (`N devices (A added, U updated)`).
    pub summary: String,
    pub dry_run: bool,
}

pub fn shown(r: &Record) -> InventoryRecord {
    InventoryRecord {
        key: inventory::key_of(r),
        mac: r.mac.map(|m| m.to_string()),
        serial: r.serial.clone(),
        vars: r.vars.clone(),
    }
}

fn path(api: &Api) -> Result<&Path, Problem> {
    Problem::unless_off(
        api.provisioner.inventory_path(),
        "No inventory",
        "devices.inventory is not set; configure the inventory file first",
    )
}

/// The variables of a PUT body: a JSON object of strings (numbers and booleans are taken
/// as written), either flat or under `vars` (as GET shows a record).
pub fn vars_of(body: &[u8]) -> Result<BTreeMap<String, String>, Problem> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not JSON ({e}); expected an object such as {{\"extension\": \"1001\"}}"
        ))
    })?;
    let obj = match v.get("vars") {
        Some(inner) => inner,
        None => &v,
    };
    let Some(obj) = obj.as_object() else {
        return Err(Problem::bad_request(
            "the body is not a JSON object; expected e.g. {\"extension\": \"1001\"}",
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Array(a) if k == "tags" => a
                .iter()
                .filter_map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
            _ => {
                return Err(Problem::bad_request(format!(
                    "`{k}` is not a string; expected text values"
                )));
            }
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

/// Every record of the inventory.
#[utoipa::path(get, operation_id = "inventory_list", path = "/api/v1/inventory", tag = "inventory",
    responses((status = 200, body = InventoryList)))]
pub fn list(api: &Api) -> Response<LoggedBody> {
    let inv = api.provisioner.inventory();
    let items: Vec<InventoryRecord> = inv.records.iter().map(shown).collect();
    json(
        StatusCode::OK,
        &InventoryList {
            total: items.len(),
            items,
        },
    )
}

/// One record.
#[utoipa::path(get, operation_id = "inventory_get", path = "/api/v1/inventory/{key}", tag = "inventory",
    params(("key" = String, Path, description = "a MAC address, a serial number or pin:<PIN>")),
    responses(
        (status = 200, body = InventoryRecord),
        NotFound,
    ))]
pub fn get(api: &Api, key: &str) -> Response<LoggedBody> {
    let inv = api.provisioner.inventory();
    answer(
        inventory::position(&inv.records, key)
            .map(|i| shown(&inv.records[i]))
            .ok_or_else(|| Problem::not_found(format!("no inventory record `{key}`"))),
    )
}

/// Put one record: its variables replace the record's (or a new record is added),
/// validated like an import, written atomically, served from the next fetch on.
#[utoipa::path(put, operation_id = "inventory_put", path = "/api/v1/inventory/{key}", tag = "inventory",
    params(("key" = String, Path, description = "a MAC address, a serial number or pin:<PIN>")),
    request_body(content = BTreeMap<String, String>, description = "the record's variables, e.g. {\"extension\": \"1001\", \"display_name\": \"Front desk\"}"),
    responses(
        (status = 200, body = InventoryRecord, description = "replaced"),
        (status = 201, body = InventoryRecord, description = "added"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub fn put(api: &Api, who: &str, key: &str, body: &[u8]) -> Response<LoggedBody> {
    let file = match path(api) {
        Ok(p) => p,
        Err(p) => return p.into(),
    };
    let vars = match vars_of(body) {
        Ok(v) => v,
        Err(p) => return p.into(),
    };
    match inventory::put_record(file, key, &vars) {
        Ok((rec, created, inv)) => {
            api.provisioner.set_inventory(inv);
            let names: Vec<&str> = vars.keys().map(String::as_str).collect();
            audit(
                who,
                if created {
                    "add inventory record"
                } else {
                    "replace inventory record"
                },
                &format!("{} ({})", inventory::key_of(&rec), names.join(", ")),
                "done",
            );
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json(status, &shown(&rec))
        }
        Err(e) => {
            audit(who, "put inventory record", key, "refused");
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid record", e).into()
        }
    }
}

/// Delete one record.
#[utoipa::path(delete, operation_id = "inventory_delete", path = "/api/v1/inventory/{key}", tag = "inventory",
    params(("key" = String, Path, description = "a MAC address, a serial number or pin:<PIN>")),
    responses(
        (status = 200, body = InventoryRecord, description = "the record deleted"),
        NotFound,
    ))]
pub fn delete(api: &Api, who: &str, key: &str) -> Response<LoggedBody> {
    let file = match path(api) {
        Ok(p) => p,
        Err(p) => return p.into(),
    };
    match inventory::delete_record(file, key) {
        Ok(Some((rec, inv))) => {
            api.provisioner.set_inventory(inv);
            audit(
                who,
                "delete inventory record",
                &inventory::key_of(&rec),
                "done",
            );
            json(StatusCode::OK, &shown(&rec))
        }
        Ok(None) => Problem::not_found(format!("no inventory record `{key}`")).into(),
        Err(e) => {
            audit(who, "delete inventory record", key, "refused");
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Not deleted", e).into()
        }
    }
}

/// Import a scan (CSV, header row optional): the same validation and line errors as
/// `provbox devices import`; nothing is written unless the whole scan is valid.
#[utoipa::path(post, operation_id = "inventory_import", path = "/api/v1/inventory/import", tag = "inventory",
    params(("dry_run" = Option<bool>, Query, description = "validate and report only")),
    request_body(content = String, content_type = "text/csv", description = "the scan"),
    responses(
        (status = 200, body = Imported),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "the errors, one per line, naming the scan's lines"),
    ))]
pub fn import(api: &Api, who: &str, body: &[u8], dry_run: bool) -> Response<LoggedBody> {
    let file = match path(api) {
        Ok(p) => p,
        Err(p) => return p.into(),
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return Problem::bad_request("the scan is not UTF-8 text").into();
    };
    match inventory::import_text(text, Path::new("import.csv"), None, file, dry_run) {
        Ok((summary, inv)) => {
            if let Some(inv) = inv {
                api.provisioner.set_inventory(inv);
                audit(who, "import inventory", &summary, "done");
            }
            json(StatusCode::OK, &Imported { summary, dry_run })
        }
        Err(e) => {
            if !dry_run {
                audit(
                    who,
                    "import inventory",
                    &file.display().to_string(),
                    "refused",
                );
            }
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid scan", e).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_bodies() {
        let v =
            vars_of(br#"{"extension": 1001, "display_name": "Bob", "tags": ["a", "b"]}"#).unwrap();
        assert_eq!(v["extension"], "1001");
        assert_eq!(v["tags"], "a,b");
        let v = vars_of(br#"{"key": "00:56:2b:04:36:15", "vars": {"account": "acme"}}"#).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(vars_of(b"[1]").unwrap_err().status, 400);
        assert_eq!(vars_of(b"{\"a\": {}}").unwrap_err().status, 400);
        assert_eq!(vars_of(b"nope").unwrap_err().status, 400);
    }

    #[test]
    fn import_errors_name_the_lines_and_write_nothing() {
        let d = tempfile::tempdir().unwrap();
        let inv = d.path().join("inventory.yaml");
        let import =
            |scan: &str| inventory::import_text(scan, Path::new("import.csv"), None, &inv, false);
        let (summary, got) = import("mac,extension\n00:56:2b:04:36:15,1001\n").unwrap();
        assert!(summary.contains("1 added"), "{summary}");
        assert_eq!(got.unwrap().records.len(), 1);
        let before = std::fs::read_to_string(&inv).unwrap();
        let err = import("mac,extension\n00:56:2b:04:36:1,1002\n0015654aa93,1003\n").unwrap_err();
        assert!(err.contains("import.csv:2:"), "{err}");
        assert!(err.contains("import.csv:3:"), "{err}");
        assert_eq!(std::fs::read_to_string(&inv).unwrap(), before);
        // One record put and deleted, the file rewritten each time and still valid.
        let mut vars = BTreeMap::new();
        vars.insert("extension".to_string(), "2001".to_string());
        let (rec, created, now) = inventory::put_record(&inv, "00562b043615", &vars).unwrap();
        assert!(!created);
        assert_eq!(rec.var("extension"), Some("2001"));
        assert_eq!(now.records.len(), 1);
        let (_, created, _) = inventory::put_record(&inv, "CBT141400FK", &vars).unwrap();
        assert!(created);
        let loaded = crate::devices::inventory::Inventory::load(&inv).unwrap();
        assert_eq!(loaded.records.len(), 2);
        assert!(
            inventory::delete_record(&inv, "cbt141400fk")
                .unwrap()
                .is_some()
        );
        assert!(
            inventory::delete_record(&inv, "cbt141400fk")
                .unwrap()
                .is_none()
        );
        assert!(inventory::put_record(&inv, "00:56:2b:04:36:1", &vars).is_err());
        // No temporary file left beside it.
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
