//! Devices: list (filters, paging), one with its timeline, forget, resync / reboot /
//! report.

use http::{Response, StatusCode};
use serde::Serialize;

use super::{Api, Caller, NotFound, Problem, answer, audit, json, query_param};
use crate::http::LoggedBody;
use crate::resync;
use crate::status::Device;

/// One device as the list shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceSummary {
    /// `00:0e:08:aa:bb:cc`, or `ip:198.18.0.7` until a MAC is known for that address.
    pub key: String,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub model: Option<String>,
    pub vendor_class: Option<String>,
    pub user_agent: Option<String>,
    /// `seen`, `configured`, `upgraded`, `provisioned`, `failed`.
    pub state: String,
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub transfers: u64,
    pub bytes: u64,
    pub last_event: Option<String>,
    pub last_detail: Option<String>,
}

/// One page of devices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DevicePage {
    pub items: Vec<DeviceSummary>,
    /// How many match the filters (all pages).
    pub total: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEvent {
    /// Unix milliseconds.
    pub at: u64,
    pub kind: String,
    pub detail: String,
}

/// One device with its timeline and the phone's own log lines.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceSummary,
    pub hostname: Option<String>,
    pub timeline: Vec<TimelineEvent>,
    pub lines: Vec<TimelineEvent>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Sending {
    /// The devices asked (the answer comes later, on their timelines).
    pub sending: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Forgotten {
    pub forgotten: String,
}

/// A device's state name, as JSON writes it.
fn state_name(d: &Device) -> String {
    serde_json::to_value(d.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn summary(d: &Device) -> DeviceSummary {
    let last = d.last_event();
    DeviceSummary {
        key: d.key.clone(),
        mac: d.mac.clone(),
        ip: d.ip.map(|i| i.to_string()),
        model: d.model.clone(),
        vendor_class: d.vendor_class.clone(),
        user_agent: d.user_agent.clone(),
        state: state_name(d),
        reason: d.reason.clone(),
        first_seen: d.first_seen,
        last_seen: d.last_seen,
        transfers: d.transfers,
        bytes: d.bytes,
        last_event: last.map(|e| e.kind.clone()),
        last_detail: last.map(|e| e.detail.clone()),
    }
}

/// Filters and paging of the device list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<String>,
    pub vendor: Option<String>,
    pub q: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// Rows per page unless `limit` says otherwise, and the most one page may hold.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

impl Filter {
    pub fn parse(query: Option<&str>) -> Result<Filter, Problem> {
        let num = |name: &str, default: usize| -> Result<usize, Problem> {
            match query_param(query, name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    Problem::bad_request(format!(
                        "`{name}={v}` is not a number; expected a whole number such as {default}"
                    ))
                }),
            }
        };
        let limit = num("limit", DEFAULT_LIMIT)?;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Problem::bad_request(format!(
                "`limit={limit}` is out of range; expected 1 to {MAX_LIMIT}"
            )));
        }
        let text = |n: &str| {
            query_param(query, n)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_ascii_lowercase())
        };
        Ok(Filter {
            state: text("state"),
            vendor: text("vendor"),
            q: text("q"),
            limit,
            offset: num("offset", 0)?,
        })
    }

    fn matches(&self, d: &DeviceSummary) -> bool {
        let has = |f: &Option<String>, n: &str| {
            f.as_ref()
                .is_some_and(|f| f.to_ascii_lowercase().contains(n))
        };
        self.state.as_ref().is_none_or(|s| d.state == *s)
            && self.vendor.as_ref().is_none_or(|v| {
                has(&d.model, v) || has(&d.vendor_class, v) || has(&d.user_agent, v)
            })
            && self.q.as_ref().is_none_or(|q| {
                d.key.to_ascii_lowercase().contains(q)
                    || has(&d.ip, q)
                    || has(&d.model, q)
                    || has(&d.user_agent, q)
                    || has(&d.last_detail, q)
            })
    }

    /// One page of `all` (in key order) and how many matched.
    pub fn page(&self, all: Vec<DeviceSummary>) -> DevicePage {
        let hits: Vec<DeviceSummary> = all.into_iter().filter(|d| self.matches(d)).collect();
        let total = hits.len();
        let items = hits
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        DevicePage { items, total }
    }
}

/// List devices, filtered and paged.
#[utoipa::path(get, operation_id = "devices_list", path = "/api/v1/devices", tag = "devices",
    params(
        ("state" = Option<String>, Query, description = "seen, configured, upgraded, provisioned or failed"),
        ("vendor" = Option<String>, Query, description = "a part of the model, vendor class or User-Agent"),
        ("q" = Option<String>, Query, description = "a part of the key, address, model, User-Agent or last event"),
        ("limit" = Option<usize>, Query, description = "rows per page (1 to 1000, default 100)"),
        ("offset" = Option<usize>, Query, description = "rows to skip"),
    ),
    responses(
        (status = 200, body = DevicePage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or wrong token"),
    ))]
pub fn list(api: &Api, query: Option<&str>) -> Response<LoggedBody> {
    answer(Filter::parse(query).map(|f| f.page(api.book.map(summary))))
}

/// One device, with its timeline.
#[utoipa::path(get, operation_id = "devices_get", path = "/api/v1/devices/{mac}", tag = "devices",
    params(("mac" = String, Path, description = "a MAC address (any spelling), an IP address or a record key")),
    responses(
        (status = 200, body = DeviceDetail),
        NotFound,
    ))]
pub fn get(api: &Api, mac: &str) -> Response<LoggedBody> {
    let found = api.book.get(mac).map(|d| DeviceDetail {
        device: summary(&d),
        hostname: d.hostname.clone(),
        timeline: d
            .events
            .iter()
            .map(|e| TimelineEvent {
                at: e.at,
                kind: e.kind.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
        lines: d
            .lines
            .iter()
            .map(|l| TimelineEvent {
                at: l.at,
                kind: "line".into(),
                detail: l.text.clone(),
            })
            .collect(),
    });
    answer(found.ok_or_else(|| Problem::not_found(format!("no device `{mac}`"))))
}

/// Forget a device: its status record, timeline and the address it was placed at. The
/// next thing heard from it starts a new record.
#[utoipa::path(delete, operation_id = "devices_forget", path = "/api/v1/devices/{mac}", tag = "devices",
    params(("mac" = String, Path, description = "a MAC address, an IP address or a record key")),
    responses(
        (status = 200, body = Forgotten),
        NotFound,
    ))]
pub fn forget(api: &Api, who: &str, mac: &str) -> Response<LoggedBody> {
    match api.book.forget(mac) {
        Some(k) => {
            audit(who, "forget device", &k, "done");
            json(StatusCode::OK, &Forgotten { forgotten: k })
        }
        None => {
            audit(who, "forget device", mac, "no such device");
            Problem::not_found(format!("no device `{mac}`")).into()
        }
    }
}

/// What to ask a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Resync,
    Reboot,
    /// Its configuration report (SIP NOTIFY `Event: report`).
    Report,
}

fn start(api: &Api, caller: &Caller, mac: &str, ask: Ask) -> Response<LoggedBody> {
    let action = match ask {
        Ask::Resync => "resync",
        Ask::Reboot => "reboot",
        Ask::Report => "report",
    };
    let targets = api.book.targets(mac);
    let Some(t) = targets.into_iter().next() else {
        audit(&caller.who, action, mac, "no device with a known address");
        return Problem::not_found(format!("no device with a known address matches `{mac}`"))
            .into();
    };
    audit(&caller.who, action, &t.key, "sending");
    let (book, cfg) = (api.book.clone(), caller.resync.clone());
    let key = t.key.clone();
    api.tracker.spawn(async move {
        let req = t.resync_request(ask == Ask::Reboot);
        let sent = match ask {
            Ask::Report => resync::report(&cfg, &req).await,
            Ask::Resync | Ask::Reboot => resync::send(&cfg, &req).await,
        };
        let (kind, detail) = match (ask, sent) {
            (Ask::Report, Ok(d)) => ("report_requested", d),
            (Ask::Report, Err(d)) => ("report_not_requested", d),
            (_, Ok(d)) => ("resync_sent", d),
            (_, Err(d)) => ("resync_not_sent", d),
        };
        tracing::info!(device = %t.key, ip = %t.ip, result = kind, "{detail}");
        book.note(&t.key, kind, &detail);
    });
    json(StatusCode::ACCEPTED, &Sending { sending: vec![key] })
}

/// Ask the phone to fetch its configuration again (SIP NOTIFY or its web command, as
/// `dashboard.resync` says). The result lands on its timeline.
#[utoipa::path(post, operation_id = "devices_resync", path = "/api/v1/devices/{mac}/resync", tag = "devices",
    params(("mac" = String, Path, description = "a MAC address or an IP address")),
    responses(
        (status = 202, body = Sending),
        NotFound,
        (status = 403, description = "cross-site request"),
    ))]
pub fn resync(api: &Api, caller: &Caller, mac: &str) -> Response<LoggedBody> {
    start(api, caller, mac, Ask::Resync)
}

/// Ask the phone to reboot.
#[utoipa::path(post, operation_id = "devices_reboot", path = "/api/v1/devices/{mac}/reboot", tag = "devices",
    params(("mac" = String, Path, description = "a MAC address or an IP address")),
    responses(
        (status = 202, body = Sending),
        NotFound,
    ))]
pub fn reboot(api: &Api, caller: &Caller, mac: &str) -> Response<LoggedBody> {
    start(api, caller, mac, Ask::Reboot)
}

/// Ask the phone for its configuration report (SIP NOTIFY `Event: report`, whatever
/// `dashboard.resync.method` says); the phone posts it to its `Report_Rule` and the
/// verdict lands on its timeline.
#[utoipa::path(post, operation_id = "devices_report", path = "/api/v1/devices/{mac}/report", tag = "devices",
    params(("mac" = String, Path, description = "a MAC address or an IP address")),
    responses(
        (status = 202, body = Sending),
        NotFound,
    ))]
pub fn report(api: &Api, caller: &Caller, mac: &str) -> Response<LoggedBody> {
    start(api, caller, mac, Ask::Report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(key: &str, state: &str, model: &str) -> DeviceSummary {
        DeviceSummary {
            key: key.into(),
            mac: None,
            ip: None,
            model: Some(model.into()),
            vendor_class: None,
            user_agent: None,
            state: state.into(),
            reason: None,
            first_seen: 0,
            last_seen: 0,
            transfers: 0,
            bytes: 0,
            last_event: None,
            last_detail: None,
        }
    }

    #[test]
    fn paging_and_filters() {
        let all: Vec<DeviceSummary> = (0..25)
            .map(|i| {
                dev(
                    &format!("00:00:00:00:00:{i:02}"),
                    if i % 5 == 0 { "failed" } else { "provisioned" },
                    if i % 2 == 0 {
                        "Yealink T46S"
                    } else {
                        "Cisco SPA504G"
                    },
                )
            })
            .collect();
        let f = Filter::parse(Some("limit=10&offset=20")).unwrap();
        let p = f.page(all.clone());
        assert_eq!((p.total, p.items.len()), (25, 5));
        assert_eq!(p.items[0].key, "00:00:00:00:00:20");
        let p = Filter::parse(Some("state=failed"))
            .unwrap()
            .page(all.clone());
        assert_eq!(p.total, 5);
        let p = Filter::parse(Some("vendor=yealink&state=failed"))
            .unwrap()
            .page(all.clone());
        assert_eq!(p.total, 3, "0, 10, 20");
        let p = Filter::parse(Some("q=00%3A00%3A00%3A00%3A00%3A1"))
            .unwrap()
            .page(all.clone());
        assert_eq!(p.total, 10);
        let p = Filter::parse(Some("offset=100")).unwrap().page(all);
        assert_eq!((p.total, p.items.len()), (25, 0));
        assert_eq!(Filter::parse(None).unwrap().limit, DEFAULT_LIMIT);
        for bad in ["limit=0", "limit=1001", "limit=x", "offset=-1"] {
            let e = Filter::parse(Some(bad)).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert!(e.detail.contains("expected"), "{bad}: {}", e.detail);
        }
    }
}
