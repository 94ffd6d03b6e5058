//! The CLI side of the API: `provbox devices forget|show`, `leases release`, `bindings
//! list|unbind`, `inventory set|delete` ask the running provbox through `/api/v1` (address
//! and token from the configuration and data_dir). When it does not answer they act on the
//! files themselves where that is safe, and say so: the inventory file always (written
//! atomically; a server started meanwhile reads it), bindings and the lease journal only
//! when no running server holds the store.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Method, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::Config;
use crate::http_client::{Client, Get, Target};

/// What the running server answered.
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Answer {
    /// The problem's detail (or the body) for an error line.
    pub fn why(&self) -> String {
        self.body["detail"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string())
    }
}

pub struct ApiClient {
    addr: SocketAddr,
    token: Option<String>,
    http: Client,
}

impl ApiClient {
    /// The dashboard's API as the configuration names it; None when the dashboard is off.
    pub fn new(cfg: &Config) -> Option<ApiClient> {
        let d = &cfg.dashboard;
        if !d.enabled {
            return None;
        }
        let addr = crate::dashboard::local_addr(d);
        Some(ApiClient {
            addr,
            token: crate::dashboard::cli_token(&cfg.dashboard, &cfg.data_dir),
            http: Client::new(Duration::from_secs(15), 16 << 20),
        })
    }

    /// One call. Err: the server did not answer at all (not running, or unreachable).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        let base = format!("http://{}", self.addr);
        let target = Target::parse(&format!("{base}/api/v1/{path}"))?;
        let mut get = Get::new(target).connect_to(self.addr);
        if let Some(t) = &self.token {
            get = get
                .header(header::AUTHORIZATION, &format!("Bearer {t}"))
                .map_err(|e| e.0)?;
        }
        // A write must come from the dashboard's own origin: the CLI is, on its behalf.
        get = get.header(header::ORIGIN, &base).map_err(|e| e.0)?;
        let payload = match body {
            Some((ctype, b)) => {
                get = get
                    .header(HeaderName::from_static("content-type"), ctype)
                    .map_err(|e| e.0)?;
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        let r = self
            .http
            .request(method, &get, payload)
            .await
            .map_err(|e| e.0)?;
        let body = serde_json::from_slice(&r.body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&r.body).into()));
        Ok(Answer {
            status: r.status,
            body,
        })
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Ask the running server; Ok(None) when it does not answer (then the caller falls back).
async fn ask(
    cfg: &Config,
    method: Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Result<Option<Answer>, String> {
    let Some(c) = ApiClient::new(cfg) else {
        return Ok(None);
    };
    match c.call(method, path, body).await {
        Ok(a) if a.status == StatusCode::UNAUTHORIZED => Err(format!(
            "the running provbox refused the token ({}); is dashboard.token the one it uses?",
            a.why()
        )),
        Ok(a) => Ok(Some(a)),
        Err(e) => {
            eprintln!(
                "provbox: no answer from the running provbox at {} ({e})",
                c.addr
            );
            Ok(None)
        }
    }
}

/// The answer printed (JSON, pretty) when it is a success; its problem as the error.
fn shown(a: Answer) -> Result<(), String> {
    if a.status.is_success() {
        println!(
            "{}",
            serde_json::to_string_pretty(&a.body).unwrap_or_default()
        );
        Ok(())
    } else {
        Err(a.why())
    }
}

/// The store, when no running server holds it (redb allows one process at a time).
fn idle_store(cfg: &Config, what: &str) -> Result<std::sync::Arc<crate::store::Store>, String> {
    crate::store::Store::open(&cfg.data_dir).map_err(|e| {
        format!(
            "provbox is not answering on its API and its store cannot be opened ({e:#}); a running provbox holds it: enable the dashboard (dashboard.enabled) to {what} through it"
        )
    })
}

/// The shared store when `store.backend: postgres`: there the bindings live, not in redb.
async fn shared_store(
    cfg: &Config,
) -> Result<Option<std::sync::Arc<crate::store::postgres::Pg>>, String> {
    if *cfg.store.backend != crate::store::Backend::Postgres {
        return Ok(None);
    }
    crate::store::postgres::Pg::connect(&cfg.store)
        .await
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}

const FALLBACK: &str = "provbox is not running (or its dashboard is off):";

pub async fn devices_show(cfg: &Config, mac: &str) -> Result<(), String> {
    match ask(cfg, Method::GET, &format!("devices/{}", enc(mac)), None).await? {
        Some(a) => shown(a),
        None => Err(
            "device status lives in the running provbox; start it with dashboard.enabled".into(),
        ),
    }
}

pub async fn devices_forget(cfg: &Config, mac: &str) -> Result<(), String> {
    match ask(cfg, Method::DELETE, &format!("devices/{}", enc(mac)), None).await? {
        Some(a) => shown(a),
        None => Err(
            "device status lives in the running provbox; start it with dashboard.enabled".into(),
        ),
    }
}

pub async fn leases_release(cfg: &Config, ip: &str) -> Result<(), String> {
    let addr: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("`{ip}` is not an IPv4 address; expected e.g. 198.18.0.100"))?;
    if let Some(a) = ask(cfg, Method::DELETE, &format!("leases/{addr}"), None).await? {
        return shown(a);
    }
    // Held for the whole edit: a server starting meanwhile waits for nothing, it fails.
    let _store = idle_store(cfg, "release leases")?;
    let (mut journal, leases, _) =
        crate::dhcp::store::Journal::open(&cfg.data_dir).map_err(|e| format!("{e:#}"))?;
    let now = crate::dhcp::now();
    let Some(mut l) = leases.into_iter().find(|l| l.ip == addr) else {
        return Err(format!("no lease at {addr} in the lease journal"));
    };
    let crate::dhcp::leases::State::Bound { expires } = l.state else {
        return Err(format!("the lease at {addr} is not bound"));
    };
    if expires <= now {
        return Err(format!("the lease at {addr} has expired already"));
    }
    l.state = crate::dhcp::leases::State::Declined { until: expires };
    journal
        .commit(&[crate::dhcp::store::Change::Put(l.clone())])
        .map_err(|e| format!("{e:#}"))?;
    tracing::info!(target: "audit", who = "cli", action = "release lease", target = %addr, outcome = "done (journal)", "cli: release lease {addr}");
    println!(
        "{FALLBACK} released {addr} ({}) in the lease journal; the address is held until its lease would have ended",
        l.mac
    );
    Ok(())
}

pub async fn bindings_list(cfg: &Config) -> Result<(), String> {
    if let Some(a) = ask(cfg, Method::GET, "bindings", None).await? {
        return shown(a);
    }
    let list = match shared_store(cfg).await? {
        Some(pg) => pg.list_bindings().await.map_err(|e| format!("{e:#}"))?,
        None => crate::devices::binding::list_in(&*idle_store(cfg, "list bindings")?)?,
    };
    let list = crate::api::bindings::to_list(list);
    eprintln!("{FALLBACK} read from the store");
    println!(
        "{}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
    Ok(())
}

pub async fn bindings_unbind(cfg: &Config, pin: &str) -> Result<(), String> {
    if let Some(a) = ask(cfg, Method::DELETE, &format!("bindings/{}", enc(pin)), None).await? {
        return shown(a);
    }
    let macs = match shared_store(cfg).await? {
        Some(pg) => pg.unbind_pin(pin).await.map_err(|e| format!("{e:#}"))?,
        None => crate::devices::binding::unbind_in(&*idle_store(cfg, "unbind PINs")?, pin)?,
    };
    if macs.is_empty() {
        return Err("no device is bound to that PIN".into());
    }
    let macs: Vec<String> = macs
        .iter()
        .map(|m| crate::api::bindings::colons(m))
        .collect();
    tracing::info!(target: "audit", who = "cli", action = "unbind", outcome = "done (store)", "cli: unbind");
    println!("{FALLBACK} unbound {} in the store", macs.join(", "));
    Ok(())
}

/// `k=v` words as variables.
pub fn parse_vars(words: &[String]) -> Result<BTreeMap<String, String>, String> {
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("`{w}` is not name=value; expected e.g. extension=1001"))
        })
        .collect()
}

/// `provbox inventory set KEY k=v...`: these variables set on the record (the others
/// kept; `k=` removes one), or a new record.
pub async fn inventory_set(cfg: &Config, key: &str, words: &[String]) -> Result<(), String> {
    let set = parse_vars(words)?;
    let merge = |mut vars: BTreeMap<String, String>| {
        for (k, v) in &set {
            if v.is_empty() {
                vars.remove(k);
            } else {
                vars.insert(k.clone(), v.clone());
            }
        }
        vars
    };
    let path = format!("inventory/{}", enc(key));
    if let Some(a) = ask(cfg, Method::GET, &path, None).await? {
        let current: BTreeMap<String, String> = if a.status == StatusCode::OK {
            serde_json::from_value(a.body["vars"].clone()).unwrap_or_default()
        } else if a.status == StatusCode::NOT_FOUND {
            BTreeMap::new()
        } else {
            return Err(a.why());
        };
        let body = serde_json::to_vec(&merge(current)).unwrap_or_default();
        let a = ask(cfg, Method::PUT, &path, Some(("application/json", body)))
            .await?
            .ok_or("the running provbox stopped answering")?;
        return shown(a);
    }
    let file = inventory_file(cfg)?;
    let inv = crate::devices::inventory::Inventory::load(file)
        .map_err(|e| crate::devices::inventory::describe(file, &e))
        .or_else(|e| {
            if file.exists() {
                Err(e)
            } else {
                Ok(Default::default())
            }
        })?;
    let current = crate::devices::inventory::position(&inv.records, key)
        .map(|i| inv.records[i].vars.clone())
        .unwrap_or_default();
    let (rec, created, _) = crate::devices::inventory::put_record(file, key, &merge(current))?;
    println!(
        "{FALLBACK} {} {} in {}",
        if created { "added" } else { "updated" },
        crate::devices::inventory::key_of(&rec),
        file.display()
    );
    Ok(())
}

pub async fn inventory_delete(cfg: &Config, key: &str) -> Result<(), String> {
    if let Some(a) = ask(
        cfg,
        Method::DELETE,
        &format!("inventory/{}", enc(key)),
        None,
    )
    .await?
    {
        return shown(a);
    }
    let file = inventory_file(cfg)?;
    match crate::devices::inventory::delete_record(file, key)? {
        Some((rec, _)) => {
            println!(
                "{FALLBACK} deleted {} from {}",
                crate::devices::inventory::key_of(&rec),
                file.display()
            );
            Ok(())
        }
        None => Err(format!("no inventory record `{key}` in {}", file.display())),
    }
}

fn inventory_file(cfg: &Config) -> Result<&std::path::Path, String> {
    cfg.devices
        .inventory
        .as_ref()
        .map(|p| p.value.as_path())
        .ok_or_else(|| "devices.inventory is not set; expected the inventory file".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_words() {
        let v = parse_vars(&["extension=1001".into(), "display_name=Front desk".into()]).unwrap();
        assert_eq!(v["display_name"], "Front desk");
        assert!(parse_vars(&["nothing".into()]).is_err());
        assert!(parse_vars(&["=x".into()]).is_err());
    }
}
