//! `provbox resync`: ask phones to fetch their configuration again, found through the
//! running dashboard.

use std::net::IpAddr;

use crate::resync;

/// `provbox resync` (or `--report`): resolve the target through the running dashboard's API (an address
/// works without it), send to each device, print one line per device. Ok(false) when any
/// device was not reached.
pub async fn cli(
    cfg: &crate::config::Config,
    target: &str,
    reboot: bool,
    report: bool,
) -> anyhow::Result<bool> {
    let d = &cfg.dashboard;
    let api = crate::dashboard::local_addr(d);
    let auth = crate::dashboard::cli_token(d, &cfg.data_dir).map(|t| format!("Bearer {t}"));
    let listed = if d.enabled {
        let url = crate::http_client::Target::parse(&format!("http://{api}/api/devices"))
            .map_err(crate::http_client::Error)?;
        resync::http_get(api, &url, auth).await
    } else {
        Err(crate::http_client::Error(
            "dashboard.enabled is false".into(),
        ))
    };
    let mut requests = Vec::new();
    match listed {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let want_mac = target
                .parse::<crate::devices::Mac>()
                .ok()
                .map(|m| m.to_string());
            for dev in v["devices"].as_array().into_iter().flatten() {
                let key = dev["key"].as_str().unwrap_or("");
                let ip = dev["ip"].as_str().and_then(|i| i.parse::<IpAddr>().ok());
                let hit = target == "all"
                    || want_mac.as_deref() == Some(key)
                    || dev["ip"].as_str() == Some(target);
                if let (true, Some(ip)) = (hit, ip) {
                    let vendor = ["model", "vendor_class", "user_agent"]
                        .iter()
                        .find_map(|f| dev[*f].as_str().map(str::to_string));
                    let t = crate::status::Target {
                        key: key.to_string(),
                        ip,
                        vendor,
                    };
                    requests.push((t.key.clone(), t.resync_request(reboot)));
                }
            }
        }
        Ok((code, body)) => {
            if target.parse::<IpAddr>().is_err() {
                anyhow::bail!("the dashboard at {api} answered {code}: {}", body.trim());
            }
        }
        Err(e) => {
            if target.parse::<IpAddr>().is_err() {
                anyhow::bail!(
                    "cannot list devices from the dashboard at {api} ({e}); is provbox running with dashboard.enabled? (an IP address works without it)"
                );
            }
        }
    }
    if requests.is_empty()
        && let Ok(ip) = target.parse::<IpAddr>()
    {
        requests.push((
            target.to_string(),
            resync::Request {
                ip,
                mac_hex: None,
                vendor: None,
                reboot,
            },
        ));
    }
    if requests.is_empty() {
        anyhow::bail!("no device with a known address matches `{target}`");
    }
    let mut all_ok = true;
    for (key, r) in &requests {
        let sent = if report {
            resync::report(&d.resync, r).await
        } else {
            resync::send(&d.resync, r).await
        };
        match sent {
            Ok(msg) => println!("{key} {}: {msg}", r.ip),
            Err(msg) => {
                all_ok = false;
                println!("{key} {}: FAILED {msg}", r.ip);
            }
        }
    }
    Ok(all_ok)
}
