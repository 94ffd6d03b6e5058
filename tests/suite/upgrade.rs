//! Firmware pushes: `provbox upgrade all` against stub phones (real HTTP servers, one per
//! network namespace on one bridge) that provbox knows because they fetched their profile.
//! Each stub records the command it got and how many commands were held at once; then,
//! like a phone, it downloads the firmware URL from provbox and reports `Successful
//! upgrade` over syslog.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::Provbox;
use support::fixtures::{header, provbox_with};
use support::netns::{Lab, Netns};
use support::{eventually, wait_for};

const TOKEN: &str = "upgrade-token-0123456789";
const FIRMWARE: &str = "fw/spa504g-7.6.2.bin";
const PHONES: usize = 5;
const N: usize = 2;

/// A phone's web server: `/admin/upgrade?<url>` is held 1.5 s (counted in a shared file
/// under a lock: the current and highest number held at once), answered 200, then the
/// phone fetches `<url>` with curl and sends its syslog report with logger.
const STUB: &str = r#"
import fcntl, json, os, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer
state, me, mac, server, ua, mode = sys.argv[1:7]
def bump(d):
    with open(os.path.join(state, "inflight"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        s = json.loads(f.read() or '{"cur": 0, "max": 0}')
        s["cur"] += d
        s["max"] = max(s["max"], s["cur"])
        f.seek(0); f.truncate(); f.write(json.dumps(s))
def upgrade(url):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-A", ua, url],
                       capture_output=True, text=True, timeout=20)
    with open(os.path.join(state, "got-" + me), "w") as f: f.write(r.stdout)
    if me.endswith(".11"):
        # This one says nothing over syslog: after its reboot it asks for its profile
        # again, and its User-Agent names the new version.
        new = ua.replace("7.5.5", "7.6.2")
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-A", new, "http://%s:8080/spa504g.cfg" % server], timeout=20)
        return
    subprocess.run(["logger", "-n", server, "-P", "514", "-d", "--rfc3164", "-t", "phone", "--",
                    "SPA504G %s -- Successful upgrade %s" % (mac, url)], timeout=20)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(state, "req-" + me), "a") as f: f.write(self.path + "\n")
        bump(1)
        time.sleep(1.5)
        bump(-1)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if self.path.startswith("/admin/upgrade?") and mode != "silent":
            threading.Thread(target=upgrade, args=(self.path.split("?", 1)[1],)).start()
    def log_message(self, *a): pass
srv = HTTPServer(("0.0.0.0", 80), H)
open(os.path.join(state, "ready-" + me), "w").close()
srv.serve_forever()
"#;

fn dash(ns: &Netns, path: &str) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = ns.curl(&["-H", &auth, &format!("http://127.0.0.1:8081{path}")]);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// A bench in namespaces: provbox (HTTP, syslog, dashboard) on a bridge and `phones` stub
/// phones, each known to provbox by its profile fetch. `silent` phones answer the command
/// and then do nothing.
struct Bench {
    p: Provbox,
    state: tempfile::TempDir,
    phones: Vec<(Netns, String, String, String)>,
    _stubs: Vec<support::netns::Bg>,
    srv: Netns,
    _lab: Lab,
}

/// The config both benches start from: `files/` served over HTTP on `http`, the dashboard
/// on `dash` with TOKEN; then `rest`.
fn config(http: &str, dash: &str, rest: &str) -> String {
    format!(
        "data_dir: data
catalog:
  roots: [files]
http:
  enabled: true
  listen: [\"{http}\"]
dashboard:
  enabled: true
  listen: {dash}
  token: {TOKEN}
{rest}"
    )
}

fn bench(phones: usize, upgrade: &str, silent: bool) -> Bench {
    support::require("python3");
    support::require("logger");
    let lab = Lab::new();
    let srv = lab.ns("upg");
    lab.bridge(&srv, Some("198.18.0.1/24"));
    let dir = Provbox::serving(&[("spa504g.cfg", "<flat-profile/>")]);
    std::fs::create_dir_all(dir.path().join("files/fw")).unwrap();
    std::fs::write(dir.path().join("files").join(FIRMWARE), vec![0x5a; 200_000]).unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("stub.py"), STUB).unwrap();
    let config = config(
        "198.18.0.1:8080",
        "127.0.0.1:8081",
        &format!(
            "syslog:
  enabled: true
  listen: 198.18.0.1:514
  tcp_listen: 198.18.0.1:601
upgrade:
{upgrade}  firmware:
    cisco: {FIRMWARE}
"
        ),
    );
    let p = Provbox::start_with(dir, &config, &srv.prefix());

    // The phones: each on the bridge, its web server up, its profile fetched (so provbox
    // knows its MAC, model and address).
    let mut list = Vec::new();
    let mut stubs = Vec::new();
    for i in 0..phones {
        let ns = lab.ns(&format!("ph{i}"));
        let mac = format!("000e080016{i:02x}");
        let ip = format!("198.18.0.{}", 11 + i);
        let colons = format!("00:0e:08:00:16:{i:02x}");
        lab.attach_as(&srv, &ns, "eth0", Some(&format!("{ip}/24")), Some(&colons));
        let ua = format!("Cisco/SPA504G-7.5.5 ({})", mac.to_uppercase());
        let st = state.path().to_str().unwrap().to_string();
        let py = state.path().join("stub.py");
        let mode = if silent { "silent" } else { "phone" };
        stubs.push(ns.spawn(&[
            "python3",
            py.to_str().unwrap(),
            &st,
            &ip,
            &mac,
            "198.18.0.1",
            &ua,
            mode,
        ]));
        let (code, _) = ns.curl(&["-A", &ua, "http://198.18.0.1:8080/spa504g.cfg"]);
        assert_eq!(code, 200);
        list.push((ns, mac, ip, colons));
    }
    for (_, _, ip, _) in &list {
        eventually("the stub phone listens", Duration::from_secs(20), || {
            state.path().join(format!("ready-{ip}")).exists()
        });
    }
    Bench {
        p,
        state,
        phones: list,
        _stubs: stubs,
        srv,
        _lab: lab,
    }
}

#[test]
fn upgrade_all_holds_at_most_n_phones_and_follows_each_to_upgraded() {
    crate::support::needs!(root, "curl", "ip", "logger", "python3");
    let b = bench(
        PHONES,
        &format!("  max_parallel: {N}\n  timeout: 60s\n"),
        false,
    );
    let (p, srv, state, phones) = (&b.p, &b.srv, &b.state, &b.phones);
    // The CLI: through the running dashboard, following the run to the end.
    let cfg = p.path().join("config.yaml");
    let bin = support::bin();
    let out = srv.run(&[
        bin.to_str().unwrap(),
        "upgrade",
        "all",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "provbox upgrade all: {text}\n{}",
        p.log()
    );
    assert!(
        text.contains(&format!("{PHONES} phone(s), {N} at a time")),
        "{text}"
    );

    // Never more than N commands held at once, and N was reached.
    let inflight: serde_json::Value =
        serde_json::from_str(&read(state.path(), "inflight")).unwrap();
    assert_eq!(inflight["cur"], 0, "{inflight}");
    assert_eq!(
        inflight["max"], N,
        "at most and at least N at once: {inflight}"
    );

    let url = format!("http://198.18.0.1:8080/{FIRMWARE}");
    let runs = dash(srv, "/api/v1/upgrades");
    let run = &runs["runs"][0];
    assert_eq!(run["done"], true, "{run}");
    assert_eq!(run["counts"]["upgraded"], PHONES, "{run}");
    for (_, mac, ip, colons) in phones.iter() {
        // The phone got exactly one command: its upgrade URL names the firmware on this box.
        assert_eq!(
            read(state.path(), &format!("req-{ip}")),
            format!("/admin/upgrade?{url}\n"),
            "{mac}"
        );
        assert_eq!(read(state.path(), &format!("got-{ip}")), "200", "{mac}");
        let d = wait_for("the timeline", Duration::from_secs(10), || {
            let d = dash(srv, &format!("/api/devices/{colons}"));
            let kinds: Vec<String> = d["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap().to_string())
                .filter(|k| {
                    ["upgrade_sent", "upgrade_downloading", "upgraded"].contains(&k.as_str())
                })
                .collect();
            (kinds == ["upgrade_sent", "upgrade_downloading", "upgraded"]).then_some(d)
        });
        let last = d["events"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|e| e["kind"] == "upgraded")
            .unwrap()["detail"]
            .clone();
        if ip == "198.18.0.11" {
            assert_eq!(last, "User-Agent now Cisco/SPA504G-7.6.2 (000E08001600)");
        } else {
            // Its own report moved it, as any `Successful upgrade` line does.
            assert_eq!(d["state"], "upgraded", "{d}");
            assert_eq!(last, url.as_str());
        }
        assert_eq!(d["ip"], ip.as_str());
    }
}

#[test]
fn a_phone_that_never_reports_fails_after_the_timeout() {
    crate::support::needs!(root, "curl", "ip", "logger", "python3");
    let b = bench(1, "  timeout: 3s\n", true);
    let cfg = b.p.path().join("config.yaml");
    let bin = support::bin();
    let out = b.srv.run(&[
        bin.to_str().unwrap(),
        "upgrade",
        "00:0e:08:00:16:00",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "00:0e:08:00:16:00 198.18.0.11: failed no report within 3s (upgrade.timeout)"
        ),
        "{text}"
    );
    let d = dash(&b.srv, "/api/devices/00:0e:08:00:16:00");
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("upgrade"))
        .collect();
    assert_eq!(kinds, ["upgrade_sent", "upgrade_failed"], "{d}");
}

#[test]
fn upgrade_refuses_what_it_cannot_do_in_words() {
    crate::support::needs!("curl");
    let dir = Provbox::dir();
    let dash = support::free_tcp_port();
    let http = support::free_tcp_port();
    let config = config(
        &format!("127.0.0.1:{http}"),
        &format!("127.0.0.1:{dash}"),
        "",
    );
    std::fs::write(dir.path().join("files/fw.bin"), "image").unwrap();
    // Published from the start (a file written later waits for the watcher).
    std::fs::write(dir.path().join("files/spa504g.cfg"), "<flat-profile/>").unwrap();
    let p = Provbox::start(dir, &config);
    let cfg = p.path().join("config.yaml");
    let (code, out) = provbox_with(&cfg, &["upgrade", "all"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("no device with a known address matches `all`"),
        "{out}"
    );
    // A phone is known (its profile fetch names it); no firmware is configured for it.
    let r = support::curl(
        10,
        &["-A", "Cisco/SPA504G-7.5.5 (000E08001699)"],
        &format!("http://127.0.0.1:{http}/spa504g.cfg"),
    );
    assert_eq!(r.code, 200);
    let (code, out) = provbox_with(&cfg, &["upgrade", "00:0e:08:00:16:99"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("no firmware is configured for 00:0e:08:00:16:99"),
        "{out}"
    );
    let (code, out) = provbox_with(
        &cfg,
        &[
            "upgrade",
            "00:0e:08:00:16:99",
            "--firmware",
            "../etc/passwd",
        ],
    );
    assert_ne!(code, 0);
    assert!(out.contains("is not a file in the catalog"), "{out}");
    // Without a token (401) and cross-site (403), as everywhere on the dashboard.
    let url = format!("http://127.0.0.1:{dash}/api/v1/upgrades");
    assert_eq!(support::http_code(&[], &url).trim(), "401");
    let auth = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(
        support::http_code(
            &[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "Origin: http://evil.test",
                "--data",
                "{\"target\":\"all\"}"
            ],
            &url
        )
        .trim(),
        "403"
    );

    // The JSON form the API documents: the body is read before the answer, so a refusal
    // is a problem the caller sees (not only a log line) and a start answers with the run.
    let origin = format!("Origin: http://127.0.0.1:{dash}");
    let post = |body: &str| {
        let r = support::curl(
            10,
            &["-X", "POST", "-H", &auth, "-H", &origin, "--data", body],
            &url,
        );
        let ctype = header(&r.headers, "content-type").to_string();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        (r.code, ctype, v)
    };
    for (body, code, words) in [
        (
            r#"{"target": "00:0e:08:00:99:99"}"#,
            404,
            "no device with a known address matches `00:0e:08:00:99:99`",
        ),
        (
            r#"{"target": "00:0e:08:00:16:99"}"#,
            422,
            "no firmware is configured for 00:0e:08:00:16:99",
        ),
        (
            r#"{"target": "00:0e:08:00:16:99", "firmware": "../etc/passwd"}"#,
            422,
            "is not a file in the catalog",
        ),
        (
            r#"{"target": "00:0e:08:00:16:99", "firmwar": "fw.bin"}"#,
            400,
            "unknown field `firmwar`",
        ),
        ("", 400, "no target"),
    ] {
        let (c, ctype, v) = post(body);
        assert_eq!(
            (c, ctype.as_str()),
            (code, "application/problem+json"),
            "{body}: {v}"
        );
        assert_eq!(v["status"], code, "{v}");
        assert!(
            v["detail"].as_str().unwrap_or("").contains(words),
            "{body}: {v}"
        );
    }
    let (c, _, started) = post(r#"{"target": "00:0e:08:00:16:99", "firmware": "fw.bin"}"#);
    assert_eq!(c, 202, "{started}");
    assert_eq!(started["target"], "00:0e:08:00:16:99", "{started}");
    assert_eq!(started["phones"][0]["firmware"], "fw.bin", "{started}");
    let run = wait_for("the run", Duration::from_secs(10), || {
        let r = support::curl(10, &["-H", &auth], &url);
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["runs"].as_array()?.first().cloned()
    });
    assert_eq!(run["target"], "00:0e:08:00:16:99", "{run}");
    assert_eq!(
        run["phones"][0]["url"],
        format!("http://127.0.0.1:{http}/fw.bin"),
        "{run}"
    );
    // A body announced and never finished is cut off (408), not waited for forever.
    let r = support::curl(
        30,
        &[
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            &origin,
            "-H",
            "Content-Length: 100",
            "--data",
            "{",
        ],
        &url,
    );
    assert_eq!(r.code, 408, "{}", String::from_utf8_lossy(&r.body));
}
