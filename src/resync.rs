//! Remote resync: ask a phone to fetch its configuration again, by SIP NOTIFY
//! (`Event: check-sync` or `resync`, per vendor) or by the phone's web command
//! (`http://<phone>/admin/resync?<url>`). Used by the dashboard button and `provbox resync`.
//! The `report` action asks a Cisco/SPA phone for its configuration report instead
//! (NOTIFY `Event: report`; the phone sends it to its `Report_Rule`, see `crate::devices::verify`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::net::{TcpStream, UdpSocket};

use crate::confkit::{At, Problems};
use crate::http_client::{Client, Get, Target};
use crate::vendors;

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// SIP NOTIFY over UDP to the phone's SIP port.
    #[default]
    Sip,
    /// GET on the phone's web server.
    Http,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventName {
    /// By vendor (`vendors::*::VENDOR.notify`): Cisco/Linksys SPA and 3PCC phones want
    /// `resync`, the others `check-sync`.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "check-sync")]
    CheckSync,
    #[serde(rename = "resync")]
    Resync,
}

/// Every key is optional: a missing one takes its value from [`Config::default`].
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub method: At<Method>,
    /// The phones' SIP port.
    pub sip_port: u16,
    pub event: EventName,
    /// The web command; `{ip}` and `{mac}` (12 hex digits) are filled in.
    pub http_url: At<String>,
    /// The same for `--reboot`.
    pub http_reboot_url: At<String>,
    /// Basic auth for the phone's web server.
    pub http_user: Option<String>,
    pub http_password: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        // Cisco's web commands: the phones `http` was first written for.
        let web = |path: &str| At::new(format!("http://{{ip}}{path}"));
        Config {
            method: At::default(),
            sip_port: 5060,
            event: EventName::Auto,
            http_url: web(vendors::cisco::WEB.resync),
            http_reboot_url: web(vendors::cisco::WEB.reboot),
            http_user: None,
            http_password: None,
        }
    }
}

impl Config {
    pub fn validate(&self, field: &str, p: &mut Problems) {
        for (name, u) in [
            ("http_url", &self.http_url),
            ("http_reboot_url", &self.http_reboot_url),
        ] {
            if !u.starts_with("http://") || !u.contains("{ip}") {
                p.add(
                    format!("{field}.{name}"),
                    u,
                    format!("`{}` is not usable; expected http://{{ip}}/… (https is not supported for phone commands)", u.value),
                );
            }
        }
        if self.sip_port == 0 {
            p.add_at(
                format!("{field}.sip_port"),
                0,
                0,
                "is 0; expected the phones' SIP port, e.g. 5060",
            );
        }
    }
}

/// One device to ask.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub ip: IpAddr,
    /// 12 hex digits, when known.
    pub mac_hex: Option<String>,
    /// Model, vendor class or User-Agent: picks the NOTIFY event.
    pub vendor: Option<String>,
    pub reboot: bool,
}

/// `Event:` header value for this phone: the vendor's (from its table in `vendors`, found
/// by hint in the model, vendor class or User-Agent) unless the configuration names one.
pub(crate) fn event_for(cfg: &Config, vendor: Option<&str>, reboot: bool) -> String {
    let n = match cfg.event {
        EventName::CheckSync => vendors::CHECK_SYNC,
        EventName::Resync => vendors::cisco::NOTIFY,
        EventName::Auto => vendor
            .and_then(vendors::by_hint)
            .map_or(vendors::CHECK_SYNC, |v| v.notify),
    };
    if reboot { n.reboot } else { n.resync }.to_string()
}

fn token() -> String {
    // Unique enough for branch/tag/Call-ID: time and a per-process counter.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}{:x}",
        t,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn notify_message(event: &str, to: SocketAddr, local: SocketAddr) -> String {
    let t = token();
    let host = |a: SocketAddr| match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    };
    let (to_h, local_h) = (host(to), host(local));
    format!(
        "NOTIFY sip:{to_h} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local_h};branch=z9hG4bK{t};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:provbox@{local_h}>;tag={t}\r\n\
         To: <sip:{to_h}>\r\n\
         Call-ID: {t}@provbox\r\n\
         CSeq: 1 NOTIFY\r\n\
         Contact: <sip:provbox@{local_h}>\r\n\
         Event: {event}\r\n\
         Subscription-State: terminated\r\n\
         User-Agent: provbox/{}\r\n\
         Content-Length: 0\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The SIP event asking a Cisco/SPA phone for its configuration report.
pub(crate) const REPORT_EVENT: &str = "report";

/// Ask the phone for its configuration report: NOTIFY `Event: report` (SIP whatever
/// `method` says: phones take the report request only that way).
pub(crate) async fn report(cfg: &Config, r: &Request) -> Result<String, String> {
    notify_event(cfg, r, REPORT_EVENT).await
}

/// Send a NOTIFY, retransmitting like RFC 3261 timer A (0.5 s, 1 s, 2 s), and wait for a
/// final answer. Ok(text) on 2xx, Err(text) otherwise.
pub(crate) async fn notify(cfg: &Config, r: &Request) -> Result<String, String> {
    let event = event_for(cfg, r.vendor.as_deref(), r.reboot);
    notify_event(cfg, r, &event).await
}

async fn notify_event(cfg: &Config, r: &Request, event: &str) -> Result<String, String> {
    let to = SocketAddr::new(r.ip, cfg.sip_port);
    let bind: SocketAddr = if r.ip.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(to).await.map_err(|e| e.to_string())?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let msg = notify_message(event, to, local);
    let mut buf = vec![0u8; 4096];
    // A refused port (ICMP unreachable) shows as an error on a later send or receive; a
    // phone that is still booting opens its port soon, so keep retransmitting until the end.
    let mut last_error = None;
    for wait in [500u64, 1000, 2000] {
        if let Err(e) = sock.send(msg.as_bytes()).await {
            last_error = Some(e);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    last_error = Some(e);
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Ok(Ok(n)) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let status = text.lines().next().unwrap_or("").trim().to_string();
            let code: u16 = status
                .strip_prefix("SIP/2.0 ")
                .and_then(|s| s.get(..3))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            match code {
                100..=199 => continue,
                200..=299 => return Ok(format!("SIP NOTIFY Event: {event} → {status}")),
                0 => continue,
                _ => return Err(format!("SIP NOTIFY Event: {event} → {status}")),
            }
        }
    }
    match last_error {
        Some(e) => Err(format!("SIP NOTIFY Event: {event} to {to}: {e}")),
        None => Err(format!(
            "SIP NOTIFY Event: {event} to {to}: no answer in 3.5 s"
        )),
    }
}

/// One HTTP GET through the shared client (the phone's web command, or provbox's own API
/// from the CLI), dialling `addr` whatever the URL's host. Returns (status, body).
pub(crate) async fn http_get(
    addr: SocketAddr,
    url: &Target,
    auth: Option<String>,
) -> Result<(u16, String), crate::http_client::Error> {
    let mut get = Get::new(url.clone()).connect_to(addr);
    if let Some(a) = auth {
        get = get.header(http::header::AUTHORIZATION, &a)?;
    }
    let r = Client::new(Duration::from_secs(5), 16 * 1024 * 1024)
        .get(&get)
        .await?;
    Ok((
        r.status.as_u16(),
        String::from_utf8_lossy(&r.body).into_owned(),
    ))
}

pub(crate) async fn web_command(cfg: &Config, r: &Request) -> Result<String, String> {
    let template = if r.reboot {
        &cfg.http_reboot_url.value
    } else {
        &cfg.http_url.value
    };
    let ip = match r.ip {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    };
    let url = template
        .replace("{ip}", &ip)
        .replace("{mac}", r.mac_hex.as_deref().unwrap_or(""));
    web_get(cfg, r, &url).await
}

/// GET `url` on the phone `r` (a web command: resync, reboot, or `upgrade`'s), with the
/// configured credentials, which go only to that phone. Ok/Err: one line saying what
/// was sent and how the phone answered.
pub(crate) async fn web_get(cfg: &Config, r: &Request, url: &str) -> Result<String, String> {
    let target = Target::parse(url).map_err(|e| format!("bad URL: {e}"))?;
    let auth = cfg.http_user.as_ref().map(|u| {
        let creds = format!("{u}:{}", cfg.http_password.as_deref().unwrap_or(""));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        )
    });
    if auth.is_some() {
        credentials_may_go_to(r, target.port).await?;
    }
    let addr = SocketAddr::new(r.ip, target.port);
    match http_get(addr, &target, auth).await {
        Ok((code, _)) if (200..300).contains(&code) => Ok(format!("GET {url} → {code}")),
        Ok((code, _)) => Err(format!("GET {url} → {code}")),
        Err(e) => Err(format!("GET {url}: {e}")),
    }
}

/// The phone's admin credentials go only to that phone: the kernel's neighbour entry for
/// the target address must show the device's own MAC (the LAN, not the status book, says
/// who is there). Loopback is this host. Err says why nothing was sent.
async fn credentials_may_go_to(r: &Request, port: u16) -> Result<(), String> {
    use crate::devices::{Mac, neighbour};
    if r.ip.to_canonical().is_loopback() {
        return Ok(());
    }
    let refuse = |why: String| {
        tracing::warn!(ip = %r.ip, "resync: credentials not sent: {why}");
        Err(format!("credentials not sent: {why}"))
    };
    let Some(want) = r.mac_hex.as_deref().and_then(|h| h.parse::<Mac>().ok()) else {
        return refuse(format!("no MAC is known for {} to check it against", r.ip));
    };
    let mut seen = neighbour::lookup(r.ip);
    if seen.is_none() {
        // No entry yet: opening a connection makes the kernel resolve the address.
        let to = SocketAddr::new(r.ip, port);
        let _ = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(to)).await;
        seen = neighbour::lookup(r.ip);
    }
    match seen {
        Some(m) if m == want => Ok(()),
        Some(m) => refuse(format!("{} is {m} on the LAN, not {want}", r.ip)),
        None => refuse(format!(
            "no neighbour entry for {} (not on a directly attached network?)",
            r.ip
        )),
    }
}

/// Ask one phone, the configured way.
pub(crate) async fn send(cfg: &Config, r: &Request) -> Result<String, String> {
    match cfg.method.value {
        Method::Sip => notify(cfg, r).await,
        Method::Http => web_command(cfg, r).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_by_vendor() {
        let c = Config::default();
        assert_eq!(event_for(&c, Some("SPA504G"), false), "resync");
        assert_eq!(event_for(&c, Some("CP-8841-3PCC"), false), "resync");
        assert_eq!(event_for(&c, Some("Yealink SIP-T46G"), false), "check-sync");
        assert_eq!(event_for(&c, None, true), "check-sync;reboot=true");
        assert_eq!(event_for(&c, Some("Cisco"), true), "reboot");
        let c = Config {
            event: EventName::CheckSync,
            ..Config::default()
        };
        assert_eq!(event_for(&c, Some("SPA504G"), false), "check-sync");
    }

    #[test]
    fn notify_has_the_headers_phones_check() {
        let m = notify_message(
            "check-sync",
            "198.18.0.7:5060".parse().unwrap(),
            "198.18.0.1:40000".parse().unwrap(),
        );
        assert!(m.starts_with("NOTIFY sip:198.18.0.7:5060 SIP/2.0\r\n"));
        assert!(m.contains("\r\nEvent: check-sync\r\n"));
        assert!(m.contains("\r\nCSeq: 1 NOTIFY\r\n"));
        assert!(m.contains("branch=z9hG4bK"));
        assert!(m.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn web_command_urls_keep_an_ipv6_phone_whole() {
        let t = Target::parse("http://[fe80::7]:8080/admin/resync?http://x/a.cfg").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fe80::7", 8080));
        assert_eq!(t.path_and_query, "/admin/resync?http://x/a.cfg");
    }

    #[tokio::test]
    async fn credentials_wait_for_a_mac_to_check_the_neighbour_against() {
        let cfg = Config {
            method: At::new(Method::Http),
            http_user: Some("admin".into()),
            http_password: Some("secret".into()),
            ..Config::default()
        };
        // No MAC known for a LAN address: nothing is sent at all (no packet leaves).
        let r = Request {
            ip: "198.18.0.66".parse().unwrap(),
            mac_hex: None,
            vendor: None,
            reboot: false,
        };
        let e = web_command(&cfg, &r).await.unwrap_err();
        assert!(e.starts_with("credentials not sent"), "{e}");
        // Loopback is this host: no neighbour to check.
        let local = Request {
            ip: "127.0.0.1".parse().unwrap(),
            ..r
        };
        assert_eq!(credentials_may_go_to(&local, 80).await, Ok(()));
    }
}
