//! `provbox upgrade`: start a firmware run on the running server and follow it.

use std::collections::BTreeMap;
use std::time::Duration;

/// `provbox upgrade`: ask the running dashboard to start the run, then follow it until
/// every phone is done, printing each change. Ok(false) when any phone failed.
pub async fn cli(
    cfg: &crate::config::Config,
    target: &str,
    firmware: Option<&str>,
) -> anyhow::Result<bool> {
    use crate::http_client::{Client, Get, Post, Target as Url};
    let d = &cfg.dashboard;
    anyhow::ensure!(
        d.enabled,
        "provbox upgrade goes through the running dashboard; set dashboard.enabled"
    );
    let api = crate::dashboard::local_addr(d);
    let token = crate::dashboard::cli_token(&cfg.dashboard, &cfg.data_dir)
        .ok_or_else(|| anyhow::anyhow!("no dashboard token (dashboard.token or data_dir)"))?;
    let auth = format!("Bearer {token}");
    let client = Client::new(Duration::from_secs(10), 4 * 1024 * 1024);
    let url = Url::parse(&format!("http://{api}/api/v1/upgrades")).map_err(anyhow::Error::msg)?;
    // The query form: the dashboard answers with the run, or why it cannot start.
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut query = format!("target={}", enc(target));
    if let Some(f) = firmware {
        query.push_str(&format!("&firmware={}", enc(f)));
    }
    let start =
        Url::parse(&format!("http://{api}/api/v1/upgrades?{query}")).map_err(anyhow::Error::msg)?;
    let post = Post::new(start, bytes::Bytes::new())
        .header(http::header::AUTHORIZATION, &auth)?
        // The dashboard's same-origin rule for writes.
        .header(http::header::ORIGIN, &format!("http://{api}"))?;
    let r = client.post(&post).await.map_err(|e| {
        anyhow::anyhow!("cannot reach the dashboard at {api} ({e}); is provbox running?")
    })?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    if !r.status.is_success() {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let msg = v["detail"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or(&text);
        anyhow::bail!("{msg}");
    }
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let id = v["id"].as_u64().unwrap_or(0);
    println!(
        "upgrade run {id}: {} phone(s), {} at a time",
        v["phones"].as_array().map_or(0, Vec::len),
        v["max_parallel"]
    );
    for k in v["skipped"].as_array().into_iter().flatten() {
        println!(
            "{}: skipped (no firmware in upgrade.firmware for it)",
            k.as_str().unwrap_or("")
        );
    }
    let get = Get::new(url).header(http::header::AUTHORIZATION, &auth)?;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let r = client.get(&get).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let all: serde_json::Value = serde_json::from_slice(&r.body)?;
        let Some(run) = all["runs"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"].as_u64() == Some(id)))
        else {
            anyhow::bail!("the dashboard no longer knows run {id}");
        };
        for p in run["phones"].as_array().into_iter().flatten() {
            let key = p["key"].as_str().unwrap_or("").to_string();
            let stage = p["stage"].as_str().unwrap_or("").to_string();
            if shown.get(&key) != Some(&stage) {
                println!(
                    "{key} {}: {stage} {}",
                    p["ip"].as_str().unwrap_or(""),
                    p["detail"].as_str().unwrap_or("")
                );
                shown.insert(key, stage);
            }
        }
        if run["done"] == true {
            return Ok(run["counts"]["failed"].as_u64() == Some(0));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
