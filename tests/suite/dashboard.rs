//! The dashboard: token protection, JSON/CSV API, remote resync against sipp (as the phone)
//! and a stub HTTP phone, and the page itself in headless Chromium (driven over DevTools).

use crate::bench_kit;
use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::dedupe::{check_config, reload_config};
use bench_kit::{Bench, kinds};
use support::fixtures::provbox_with;
use support::{free_udp_port, require};

const TOKEN: &str = "bench-token-0123456789";

#[test]
fn config_refuses_a_short_token_and_needs_none_off_loopback() {
    let dir = support::Provbox::dir();
    let cfg = dir.path().join("config.yaml");
    // No token: one is made at the first start, so even off loopback this is fine.
    let (code, text) = check_config(
        &cfg,
        "catalog:\n  roots: [files]\ndashboard:\n  enabled: true\n  listen: 0.0.0.0:8081\n",
    );
    assert_eq!(code, 0, "{text}");
    let (code, text) = check_config(
        &cfg,
        "catalog:\n  roots: [files]\ndashboard:\n  enabled: true\n  listen: 0.0.0.0:8081\n  token: short\n",
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(":6:") && text.contains("dashboard.token") && text.contains("16 or more"),
        "{text}"
    );
    let (code, text) = check_config(
        &cfg,
        "catalog:\n  roots: [files]\ndashboard:\n  enabled: true\n  hosts: [prov.lab.test, \"prov.lab.test:8081\"]\n",
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(":5:")
            && text.contains("dashboard.hosts")
            && text.contains("without scheme or port"),
        "{text}"
    );
    let (code, text) = check_config(
        &cfg,
        format!(
            "catalog:\n  roots: [files]\ndashboard:\n  enabled: true\n  listen: 0.0.0.0:8081\n  token: {TOKEN}\n"
        ),
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("dashboard.listen"), "{text}");
}

#[test]
fn token_protects_page_and_api() {
    crate::support::needs!("curl");
    let b = Bench::start(&[], &format!("  token: {TOKEN}\n"));
    let base = format!("http://127.0.0.1:{}", b.dash);
    let code = |args: &[&str]| {
        let mut a = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        let out = support::run("curl", &a);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(code(&[&format!("{base}/api/devices")]), "401");
    assert_eq!(code(&[&format!("{base}/")]), "401");
    assert_eq!(
        code(&[
            "-H",
            "Authorization: Bearer wrong-token-0123456",
            &format!("{base}/api/devices")
        ]),
        "401"
    );
    assert_eq!(b.dash_get("/api/devices").0, 200);
    // A browser opens /?token=… once, then the cookie carries it.
    let jar = b.p.path().join("jar");
    let jar = jar.to_str().unwrap();
    // The login sets the cookie and redirects to `/`, taking the token out of the URL.
    assert_eq!(code(&["-c", jar, &format!("{base}/?token={TOKEN}")]), "303");
    assert_eq!(code(&["-b", jar, &format!("{base}/api/devices")]), "200");
    assert_eq!(code(&["-b", jar, &format!("{base}/")]), "200");
    let (_, page) = b.dash_get("/");
    assert!(
        page.contains("provbox · bench") && !page.contains("http://") && !page.contains("https://"),
        "self-contained page, nothing loaded from elsewhere"
    );
    assert_eq!(b.dash_post("/api/devices/00:0e:08:00:00:99/resync").0, 404);

    // A leaked token is changed by a reload, without a restart: the old one stops working.
    const NEW: &str = "rotated-token-9876543210";
    let cfg = b.p.path().join("config.yaml");
    let text = bench_kit::config(
        b.http,
        b.udp,
        b.tcp,
        b.dash,
        b.metrics,
        &format!("  token: {NEW}\n"),
    );
    let (rc, out) = reload_config(&cfg, text);
    assert_eq!(rc, 0, "{out}");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let api = format!("{base}/api/devices");
    assert_eq!(code(&["-H", &bearer(TOKEN), &api]), "401");
    assert_eq!(code(&["-H", &bearer(NEW), &api]), "200");
    // The browser logged in with the old token is logged out too.
    assert_eq!(code(&["-b", jar, &api]), "401");
}

use crate::support::sipp::Sipp;

/// sipp playing a phone that wants `event`, and a bench whose resyncs are SIP NOTIFYs to it.
fn sip_bench(work: &std::path::Path, event: &str) -> (Sipp, Bench) {
    let sipp = Sipp::start(work, event);
    let b = Bench::start(
        &[],
        &format!("  resync:\n    method: sip\n    sip_port: {}\n", sipp.port),
    );
    (sipp, b)
}

#[test]
fn resync_by_sip_notify_reaches_sipp() {
    crate::support::needs!("curl", "logger", "sipp");
    let work = tempfile::tempdir().unwrap();
    // A Cisco phone wants `Event: resync`: the CLI.
    let (sipp, b) = sip_bench(work.path(), "resync");
    b.logger(
        "--rfc3164",
        "SPA504G 000e08000401 -- Successful resync http://127.0.0.1/spa.cfg",
    );
    b.wait_device("000e08000401", "known", |d| d["state"] == "provisioned");
    let cfg = b.p.path().join("config.yaml");
    let (code, out) = provbox_with(&cfg, &["resync", "00:0e:08:00:04:01"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("00:0e:08:00:04:01 127.0.0.1: SIP NOTIFY Event: resync → SIP/2.0 200 OK"),
        "{out}"
    );
    let log = sipp.finish();
    assert!(log.contains("Event: resync CSeq: 1 NOTIFY"), "{log}");

    // Another vendor, the dashboard button, with reboot.
    let (sipp, b2) = sip_bench(work.path(), "check-sync;reboot=true");
    b2.logger(
        "--rfc5424",
        "SIP-T46G 001565000402 – Requesting resync http://127.0.0.1/y.cfg",
    );
    b2.wait_device("001565000402", "known", |_| true);
    let (code, body) = b2.dash_post("/api/devices/00:15:65:00:04:02/resync?reboot=1");
    assert_eq!(code, 202, "{body}");
    let log = sipp.finish();
    assert!(log.contains("Event: check-sync;reboot=true"), "{log}");
    let d = b2.wait_device("001565000402", "the resync noted", |d| {
        kinds(d).contains(&"resync_sent".to_string())
    });
    assert!(d.to_string().contains("200 OK"), "{d:#}");

    // Nobody listening: a clear failure, exit code 1.
    let (code, out) = provbox_with(
        &b2.p.path().join("config.yaml"),
        &["resync", "001565000402"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
}

#[test]
fn resync_by_web_command_reaches_a_stub_phone() {
    crate::support::needs!("curl", "logger");
    let phone = TcpListener::bind("127.0.0.1:0").unwrap();
    let phone_port = phone.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = phone.accept() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = support::read_head(&mut s);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        }
    });
    let b = Bench::start(
        &[],
        &format!(
            "  resync:\n    method: http\n    http_url: \"http://{{ip}}:{phone_port}/admin/resync?http://127.0.0.1:8080/spa{{mac}}.cfg\"\n    http_user: admin\n    http_password: secret\n"
        ),
    );
    b.logger(
        "--rfc3164",
        "SPA504G 000e08000501 -- Resync failed: timeout",
    );
    b.wait_device("000e08000501", "known", |_| true);
    let cfg = b.p.path().join("config.yaml");
    let (code, out) = provbox_with(&cfg, &["resync", "127.0.0.1"]);
    assert_eq!(code, 0, "{out}");
    let head = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the phone got a request");
    assert!(
        head.starts_with(
            "GET /admin/resync?http://127.0.0.1:8080/spa000e08000501.cfg HTTP/1.1\r\n"
        ),
        "{head}"
    );
    // admin:secret
    assert!(
        head.contains("Authorization: Basic YWRtaW46c2VjcmV0\r\n"),
        "{head}"
    );
    assert!(out.contains("→ 200"), "{out}");
}

/// Chromium over the DevTools protocol (a WebSocket): navigate, evaluate, screenshot.
pub(crate) struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn start() -> Browser {
        require("chromium");
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,720",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium did not start its DevTools endpoint");
        let port = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        // The page target of the first tab.
        let start = Instant::now();
        let page_ws = loop {
            let out = support::run(
                "curl",
                &["-s", &format!("http://127.0.0.1:{port}/json/list")],
            );
            let list: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            if let Some(ws) = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break ws.to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no page target");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (ws, _) = tungstenite::connect(page_ws.as_str()).expect("DevTools websocket");
        Browser {
            child,
            ws,
            next: 0,
            _profile: profile,
        }
    }

    pub(crate) fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().expect("DevTools answer");
            if let tungstenite::Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    pub(crate) fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Poll a page expression (bounded) until it equals `want`.
    pub(crate) fn wait_for(&mut self, expr: &str, want: serde_json::Value) {
        let start = Instant::now();
        loop {
            let got = self.eval(expr);
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "`{expr}` stayed {got}, expected {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn chromium_lists_devices_and_updates_live() {
    crate::support::needs!("chromium", "curl", "logger");
    let b = Bench::start(
        &[
            ("spa504g.cfg", "<flat-profile/>"),
            ("y000000000028.cfg", "#!version:1.0.0.1\n"),
        ],
        &format!(
            "  token: {TOKEN}\n  resync:\n    sip_port: {}\n",
            free_udp_port()
        ),
    );
    // Produce a small bench: one configured, one failed, one provisioned.
    assert_eq!(
        b.fetch(
            "/y000000000028.cfg",
            "Yealink SIP-T46G 28.83.0.50 00:15:65:00:06:01"
        ),
        200
    );
    b.logger(
        "--rfc3164",
        "SIP-T46G 001565000601 -- Requesting resync http://127.0.0.1/y000000000028.cfg",
    );
    b.logger(
        "--rfc5424",
        "SPA504G 000e08000602 – Resync failed: HTTP 404 Not Found",
    );
    b.logger(
        "--rfc3164",
        "CP-8841-3PCC 0004f2000603 –- Successful resync https://127.0.0.1/cp.xml",
    );
    b.wait_device("0004f2000603", "provisioned", |d| {
        d["state"] == "provisioned"
    });

    let mut br = Browser::start();
    let url = format!("http://127.0.0.1:{}/?token={TOKEN}", b.dash);
    br.call("Page.navigate", serde_json::json!({"url": url}));
    let state = |mac: &str| {
        format!(
            "(document.querySelector('tr[data-key=\"{mac}\"]') || {{dataset: {{}}}}).dataset.state || null"
        )
    };
    br.wait_for(&state("00:15:65:00:06:01"), "configured".into());
    br.wait_for(&state("00:0e:08:00:06:02"), "failed".into());
    br.wait_for(&state("00:04:f2:00:06:03"), "provisioned".into());
    br.wait_for(
        "document.getElementById('count-provisioned').textContent",
        "1".into(),
    );
    let text = br
        .eval("document.getElementById('rows').innerText")
        .to_string();
    assert!(
        text.contains("resync: HTTP 404 Not Found"),
        "the reason is shown: {text}"
    );

    // A new event arrives: the open page follows without a reload.
    br.eval("window.__marker = 42");
    b.logger(
        "--rfc5424",
        "SIP-T46G 001565000601 – Successful resync http://127.0.0.1/y000000000028.cfg",
    );
    br.wait_for(&state("00:15:65:00:06:01"), "provisioned".into());
    br.wait_for(
        "document.getElementById('count-provisioned').textContent",
        "2".into(),
    );
    assert_eq!(br.eval("window.__marker"), 42, "the page was not reloaded");

    // Filter by state, then a device's timeline.
    br.eval("document.getElementById('fstate').value = 'failed'; document.getElementById('fstate').dispatchEvent(new Event('input'))");
    br.wait_for("document.querySelectorAll('tr.dev').length", 1.into());
    br.eval("document.querySelector('tr.dev').click()");
    br.wait_for(
        "document.getElementById('tl-events').innerText.includes('resync_failed')",
        true.into(),
    );
    br.eval("document.getElementById('fstate').value = ''; document.getElementById('fstate').dispatchEvent(new Event('input'))");
    br.wait_for("document.querySelectorAll('tr.dev').length", 3.into());
    // Filter by model (the list is built from what the phones reported).
    br.eval("document.getElementById('fmodel').value = 'SIP-T46G'; document.getElementById('fmodel').dispatchEvent(new Event('input'))");
    br.wait_for("document.querySelectorAll('tr.dev').length", 1.into());
    br.wait_for(
        "document.querySelector('tr.dev').dataset.key",
        "00:15:65:00:06:01".into(),
    );
    br.eval("document.getElementById('fmodel').value = ''; document.getElementById('fmodel').dispatchEvent(new Event('input'))");
    br.wait_for("document.querySelectorAll('tr.dev').length", 3.into());
    // The resync button posts to the API (no phone listens here: the timeline will say so).
    br.eval("document.querySelector('button.resync[data-key=\"00:0e:08:00:06:02\"]').click()");
    br.wait_for(
        "document.getElementById('msg').textContent",
        "resync requested for 00:0e:08:00:06:02 (see its timeline)".into(),
    );
    b.wait_device("000e08000602", "the resync attempt noted", |d| {
        kinds(d)
            .iter()
            .any(|k| k.starts_with("resync_not_sent") || k == "resync_sent")
    });

    let shot = br.call(
        "Page.captureScreenshot",
        serde_json::json!({"format": "png"}),
    );
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let path = artifacts().join("dashboard.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}
