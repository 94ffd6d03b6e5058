//! `/api/v1` with real clients: every route in the generated OpenAPI document answered
//! with the token, refused without it (401) and cross-site (403); the document checked by
//! `openapi-spec-validator`; inventory edits served at the next fetch, PIN unbinding, the
//! SSE stream (curl -N), the CLI against a running and a stopped server, and an operator's
//! lease release NAKing a udhcpc phone in a network namespace at its renewal.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::dedupe::assert_contains_all;
use support::dhcp_raw::{LAB_CONFIG_HEAD, Lan, events, udhcpc_daemon};
use support::fixtures::{CISCO as A_HEX, CISCO_UA as UA_A, YEALINK_UA as UA_B};
use support::fixtures::{header, provbox_with};
use support::{Provbox, free_tcp_port, require, signal, wait_for, wait_until};

const TOKEN: &str = "api-test-token-0123456789";
/// The Cisco phone (its User-Agent names it) and the Yealink one, as the API writes them.
const A: &str = "00:56:2b:04:36:15";
const B: &str = "00:15:65:4a:a9:37";

struct Server {
    p: Provbox,
    http: u16,
    dash: u16,
    cfg: std::path::PathBuf,
}

fn config(http: u16, metrics: u16, dash: u16) -> String {
    format!(
        "data_dir: data
{served}devices:
  inventory: inventory.yaml
  trust:
    user_agent: true
  binding:
    init_prefix: /init
    profile: init.cfg.tmpl
dashboard:
  enabled: true
  listen: 127.0.0.1:{dash}
  token: {TOKEN}
  token_name: bench-alice
",
        served = support::http_and_metrics(http, metrics)
    )
}

fn files(dir: &Path) {
    let f = dir.join("files");
    std::fs::create_dir_all(f.join("cfg")).unwrap();
    std::fs::write(f.join("cfg/$MA.xml.tmpl"), "ext=$extension\n").unwrap();
    std::fs::write(f.join("init.cfg.tmpl"), "<!-- $account -->\n").unwrap();
    std::fs::write(f.join("firmware.bin"), vec![7u8; 70_000]).unwrap();
    std::fs::write(
        dir.join("inventory.yaml"),
        format!(
            "devices:\n  - mac: \"{A}\"\n    extension: \"1001\"\n  - pin: \"4711\"\n    account: acme-7\n"
        ),
    )
    .unwrap();
}

fn start() -> Server {
    start_with("")
}

/// The server with `dashboard_extra` appended to its dashboard section.
fn start_with(dashboard_extra: &str) -> Server {
    let dir = Provbox::dir();
    files(dir.path());
    let (http, metrics, dash) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let p = Provbox::start(dir, &(config(http, metrics, dash) + dashboard_extra));
    let cfg = p.path().join("config.yaml");
    Server { p, http, dash, cfg }
}

impl Server {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.dash)
    }

    /// curl on the API: (status, content type, body). `auth` adds the token; a write gets
    /// `origin` as its Origin header.
    fn call(
        &self,
        method: &str,
        path: &str,
        auth: bool,
        origin: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String, String) {
        let mut args: Vec<String> = vec!["-X".into(), method.into()];
        if auth {
            args.extend(["-H".into(), format!("Authorization: Bearer {TOKEN}")]);
        }
        if let Some(o) = origin {
            args.extend(["-H".into(), format!("Origin: {o}")]);
        }
        if let Some(b) = body {
            args.extend(["--data-binary".into(), b.into()]);
            let ctype = if b.starts_with('{') {
                "application/json"
            } else {
                "text/csv"
            };
            args.extend(["-H".into(), format!("Content-Type: {ctype}")]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = support::curl(10, &a, &format!("{}{path}", self.base()));
        let ctype = header(&r.headers, "content-type").to_string();
        (r.code, ctype, String::from_utf8_lossy(&r.body).into_owned())
    }

    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (c, _, b) = self.call("GET", path, true, None, None);
        (
            c,
            serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A write from the dashboard's own origin, with the token.
    fn write(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let origin = self.base();
        let (c, _, b) = self.call(method, path, true, Some(&origin), body);
        (
            c,
            serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A phone's fetch from the HTTP front end: (status, body).
    fn fetch(&self, ua: &str, path: &str) -> (u16, String) {
        let r = support::curl(
            10,
            &["-A", ua],
            &format!("http://127.0.0.1:{}{path}", self.http),
        );
        (r.code, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// An inventory scan (CSV) posted to the import route: (status, answer).
    fn import(&self, csv: &str) -> (u16, serde_json::Value) {
        self.write("POST", "/api/v1/inventory/import", Some(csv))
    }

    fn cli(&self, args: &[&str]) -> (i32, String) {
        provbox_with(&self.cfg, args)
    }
}

/// A concrete request for every operation in the document: (method, path, body).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let p = path
                .replace("{mac}", A)
                .replace("{ip}", "198.18.0.9")
                .replace("{pin}", "4711")
                .replace("{key}", "CBT141400FK");
            let p = if p.ends_with("/catalog/fetches") {
                format!("{p}?path=firmware.bin")
            } else {
                p
            };
            let body = match (method.as_str(), path.as_str()) {
                ("put", _) => Some("{\"extension\": \"3003\"}".to_string()),
                ("post", "/api/v1/inventory/import") => {
                    Some("mac,extension\n0015654aa937,2002\n".to_string())
                }
                // The JSON body is read before the answer (no firmware here: a 422).
                ("post", "/api/v1/upgrades") => Some(format!("{{\"target\": \"{A}\"}}")),
                _ => None,
            };
            out.push((method.to_uppercase(), p, body));
        }
    }
    out
}

#[test]
fn every_route_answers_with_the_token_and_refuses_without_it_or_cross_site() {
    crate::support::needs!("curl", "openapi-spec-validator");
    require("curl");
    require("openapi-spec-validator");
    let b = start();
    assert_eq!(
        b.fetch(UA_A, &format!("/cfg/{A_HEX}.xml")),
        (200, "ext=1001\n".into())
    );

    // The document: served, valid OpenAPI 3.1 by an independent validator.
    let (code, ctype, text) = b.call("GET", "/api/v1/openapi.json", true, None, None);
    assert_eq!((code, ctype.as_str()), (200, "application/json"), "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let file = b.p.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = support::run("openapi-spec-validator", &[file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}",
        support::output_text(&out)
    );
    let ops = operations(&doc);
    assert!(ops.len() >= 19, "{ops:?}");
    // Firmware pushes and the chart's history are in the document, so covered below.
    for (m, p) in [
        ("GET", "/api/v1/upgrades"),
        ("POST", "/api/v1/upgrades"),
        ("POST", "/api/v1/devices/00:56:2b:04:36:15/upgrade"),
        ("POST", "/api/v1/devices/00:56:2b:04:36:15/report"),
        ("GET", "/api/v1/history"),
    ] {
        assert!(ops.iter().any(|o| o.0 == m && o.1 == p), "{m} {p}: {ops:?}");
    }

    // Without the token: 401 problem+json everywhere; a write from another site: 403.
    for (m, p, body) in &ops {
        let (c, ctype, text) = b.call(m, p, false, None, body.as_deref());
        assert_eq!(c, 401, "{m} {p} without a token: {text}");
        assert_eq!(ctype, "application/problem+json", "{m} {p}");
        if m != "GET" {
            let (c, ctype, text) = b.call(m, p, true, Some("http://evil.example"), body.as_deref());
            assert_eq!(c, 403, "{m} {p} cross-site: {text}");
            assert_eq!(ctype, "application/problem+json", "{m} {p}");
        }
    }
    // With it: every route is there (a missing resource is a problem, not a missing route).
    for (m, p, body) in &ops {
        if p.ends_with("/events") {
            continue; // a stream: below
        }
        let origin = b.base();
        let (c, ctype, text) = b.call(m, p, true, Some(&origin), body.as_deref());
        assert!(
            c != 405 && !(c == 404 && text.contains("no API resource")) && c != 0,
            "{m} {p}: {c} {text}"
        );
        if c >= 400 {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(ctype, "application/problem+json", "{m} {p}");
            assert_eq!(v["status"], c, "{text}");
            assert!(v["title"].is_string() && v["detail"].is_string() && v["type"].is_string());
        }
    }
    // An unknown route is a 404 problem, a known one with the wrong method a 405.
    assert_eq!(b.get("/api/v1/nothing").0, 404);
    assert_eq!(b.write("PATCH", "/api/v1/leases", None).0, 405);
    // Every write was audited with the token's name.
    let log = b.p.log();
    assert!(
        log.contains("bench-alice") && log.contains("add inventory record"),
        "{log}"
    );
}

#[test]
fn devices_inventory_bindings_catalog_and_events() {
    crate::support::needs!("curl");
    require("curl");
    let b = start();
    assert_eq!(b.fetch(UA_A, &format!("/cfg/{A_HEX}.xml")).0, 200);

    // The event stream: curl -N, bounded; a fetch shows up on it.
    let sse = b.p.path().join("sse.txt");
    let mut curl = Command::new("curl")
        .args(["-sN", "--max-time", "15", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("{}/api/v1/events", b.base()))
        .stdout(std::fs::File::create(&sse).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&sse).unwrap_or_default();
    wait_until(Duration::from_secs(10), || {
        read().contains("provbox events").then_some(())
    })
    .expect("the stream opened");
    assert_eq!(b.fetch(UA_B, "/firmware.bin").0, 200);
    let got = wait_until(Duration::from_secs(10), || {
        let t = read();
        (t.contains("event: device") && t.contains(B)).then_some(t)
    });
    let _ = curl.kill();
    let _ = curl.wait();
    let got = got.unwrap_or_else(|| panic!("no device event on the stream:\n{}", read()));
    let data = got
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .find(|d| d.contains(B))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["device"]["mac"], B, "{v}");

    // Devices: paging, filters, one with its timeline.
    let (c, page) = b.get("/api/v1/devices?limit=1");
    assert_eq!((c, page["total"].as_u64()), (200, Some(2)), "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, page) = b.get("/api/v1/devices?limit=1&offset=1");
    assert_eq!(page["items"][0]["key"], A, "{page}");
    let (_, page) = b.get("/api/v1/devices?vendor=yealink");
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(b.get("/api/v1/devices?limit=0").0, 400);
    let (c, d) = b.get(&format!("/api/v1/devices/{A_HEX}"));
    assert_eq!(c, 200);
    assert!(
        d["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "transfer"),
        "{d}"
    );

    // Inventory: a record put through the API is what the very next fetch renders.
    let (c, r) = b.write(
        "PUT",
        &format!("/api/v1/inventory/{A}"),
        Some("{\"extension\": \"4242\"}"),
    );
    assert_eq!(c, 200, "{r}");
    assert_eq!(
        b.fetch(UA_A, &format!("/cfg/{A_HEX}.xml")),
        (200, "ext=4242\n".into())
    );
    let file = std::fs::read_to_string(b.p.path().join("inventory.yaml")).unwrap();
    assert!(file.contains("4242"), "{file}");
    assert_eq!(
        b.get(&format!("/api/v1/inventory/{A_HEX}")).1["vars"]["extension"],
        "4242"
    );
    // A bad record and a bad scan: 422 naming the problem (the scan's lines), nothing written.
    let (c, r) = b.write(
        "PUT",
        "/api/v1/inventory/pin:12",
        Some("{\"account\": \"x\"}"),
    );
    assert_eq!(c, 422, "{r}");
    let (c, r) = b.import("mac,extension\n00:56:2B:04:36:1,1\n0015654aa937,2002,extra\n");
    assert_eq!(c, 422, "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("import.csv:2:"),
        "{r}"
    );
    assert_eq!(
        std::fs::read_to_string(b.p.path().join("inventory.yaml")).unwrap(),
        file
    );
    let (c, r) = b.import("mac,extension\n0015654aa937,2002\n");
    assert_eq!(c, 200, "{r}");
    assert_eq!(
        b.fetch(UA_B, "/cfg/0015654aa937.xml"),
        (200, "ext=2002\n".into())
    );
    let (c, _) = b.write("DELETE", &format!("/api/v1/inventory/{B}"), None);
    assert_eq!(c, 200);
    assert_eq!(b.fetch(UA_B, "/cfg/0015654aa937.xml").0, 404);

    // Unbind: the PIN a customer typed on the wrong phone then binds the right one.
    assert_eq!(
        b.fetch(UA_A, "/init/4711"),
        (200, "<!-- acme-7 -->\n".into())
    );
    assert_eq!(b.fetch(UA_B, "/init/4711").0, 403);
    let (_, list) = b.get("/api/v1/bindings");
    assert_eq!(list["items"][0]["devices"][0], A, "{list}");
    let (c, r) = b.write("DELETE", "/api/v1/bindings/4711", None);
    assert_eq!((c, &r["unbound"][0]), (200, &serde_json::json!(A)), "{r}");
    assert_eq!(
        b.fetch(UA_B, "/init/4711"),
        (200, "<!-- acme-7 -->\n".into())
    );
    assert_eq!(b.write("DELETE", "/api/v1/bindings/4711", None).0, 200);
    assert_eq!(b.write("DELETE", "/api/v1/bindings/4711", None).0, 404);

    // The catalog: size and the same SHA-256 as the file's; who fetched it.
    let (_, cat) = b.get("/api/v1/catalog");
    let fw = cat["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "firmware.bin")
        .unwrap_or_else(|| panic!("{cat}"));
    let sum: String = Sha256::digest(vec![7u8; 70_000])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        (fw["size"].as_u64(), fw["sha256"].as_str()),
        (Some(70_000), Some(sum.as_str()))
    );
    let (_, f) = b.get("/api/v1/catalog/fetches?path=firmware.bin");
    assert_eq!(f["items"][0]["device"], B, "{f}");
    assert_eq!(f["total"], 1, "{f}");

    // Forget: gone from the list (a report request is its own test, with sipp as the phone).
    assert_eq!(
        b.write("DELETE", &format!("/api/v1/devices/{A}"), None).0,
        200
    );
    assert_eq!(b.get(&format!("/api/v1/devices/{A}")).0, 404);
    assert_eq!(b.get("/api/v1/devices").1["total"], 1);
    // An audit line for each.
    assert_contains_all(
        &b.p.log(),
        &[
            "forget device",
            "unbind",
            "import inventory",
            "delete inventory record",
        ],
    );
    // The old read-only API is still there.
    let (c, _, _) = b.call("GET", "/api/devices", true, None, None);
    assert_eq!(c, 200);
}

#[test]
fn cli_talks_to_the_running_server_and_falls_back_when_it_is_stopped() {
    crate::support::needs!("curl");
    require("curl");
    let mut b = start();
    assert_eq!(b.fetch(UA_A, &format!("/cfg/{A_HEX}.xml")).0, 200);
    let (rc, out) = b.cli(&[
        "inventory",
        "set",
        A,
        "extension=777",
        "display_name=Front desk",
    ]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("777") && !out.contains("not running"), "{out}");
    assert_eq!(
        b.fetch(UA_A, &format!("/cfg/{A_HEX}.xml")),
        (200, "ext=777\n".into())
    );
    let (rc, out) = b.cli(&["devices", "show", A_HEX]);
    assert!(rc == 0 && out.contains("transfer"), "{out}");
    assert_eq!(b.fetch(UA_A, "/init/4711").0, 200);
    let (rc, out) = b.cli(&["bindings", "list"]);
    assert!(rc == 0 && out.contains("4711") && out.contains(A), "{out}");
    let (rc, out) = b.cli(&["bindings", "unbind", "4711"]);
    assert!(rc == 0 && out.contains(A), "{out}");
    let (rc, out) = b.cli(&["devices", "forget", A]);
    assert!(rc == 0 && out.contains("forgotten"), "{out}");
    let (rc, out) = b.cli(&["leases", "release", "198.18.0.9"]);
    assert!(rc != 0 && out.contains("DHCP"), "{out}");
    assert!(b.p.log().contains("bench-alice"), "{}", b.p.log());
    // Its dashboard off (same data_dir): the CLI must not touch the store the running
    // server holds.
    let nodash = b.p.path().join("nodash.yaml");
    std::fs::write(
        &nodash,
        std::fs::read_to_string(&b.cfg).unwrap().replace(
            "dashboard:\n  enabled: true",
            "dashboard:\n  enabled: false",
        ),
    )
    .unwrap();
    for args in [
        &["bindings", "list"][..],
        &["leases", "release", "198.18.0.9"][..],
    ] {
        let (rc, out) = provbox_with(&nodash, args);
        assert!(
            rc != 0 && out.contains("a running provbox holds it"),
            "{args:?}: {out}"
        );
    }
    // Bound again (by the other phone), then the server stops.
    assert_eq!(b.fetch(UA_B, "/init/4711").0, 200);
    assert_eq!(b.p.signal_and_wait("TERM"), Some(0));

    let (rc, out) = b.cli(&["inventory", "set", A, "extension=888"]);
    assert!(rc == 0 && out.contains("not running"), "{out}");
    let inv = std::fs::read_to_string(b.p.path().join("inventory.yaml")).unwrap();
    assert!(inv.contains("888") && inv.contains("Front desk"), "{inv}");
    let (rc, out) = b.cli(&["bindings", "list"]);
    assert!(
        rc == 0 && out.contains("read from the store") && out.contains(B),
        "{out}"
    );
    let (rc, out) = b.cli(&["bindings", "unbind", "4711"]);
    assert!(
        rc == 0 && out.contains("in the store") && out.contains(B),
        "{out}"
    );
    let (rc, out) = b.cli(&["leases", "release", "198.18.0.9"]);
    assert!(rc != 0 && out.contains("lease journal"), "{out}");
    let (rc, out) = b.cli(&["devices", "show", A]);
    assert!(rc != 0 && out.contains("running"), "{out}");
    let (rc, out) = b.cli(&["inventory", "delete", "pin:4711"]);
    assert!(rc == 0 && out.contains("deleted"), "{out}");

    // Started again: the edits made while it was stopped are what it serves.
    let dir = std::mem::replace(&mut b.p.dir, tempfile::tempdir().unwrap());
    let text = std::fs::read_to_string(&b.cfg).unwrap();
    drop(b.p);
    let p = Provbox::start(dir, &text);
    let r = support::curl(
        10,
        &["-A", UA_A],
        &format!("http://127.0.0.1:{}/cfg/{A_HEX}.xml", b.http),
    );
    assert_eq!((r.code, r.body.as_slice()), (200, b"ext=888\n".as_slice()));
    // The PIN record is gone: nobody binds with it.
    let r = support::curl(
        10,
        &["-A", UA_A],
        &format!("http://127.0.0.1:{}/init/4711", b.http),
    );
    assert_eq!(r.code, 403, "{}", p.log());
}

#[test]
fn a_released_lease_is_naked_at_renewal_and_the_phone_gets_another_address() {
    crate::support::needs!(root, "busybox", "curl", "ip");
    require("curl");
    let mut lan = Lan::new();
    let cfg = format!(
        "{LAB_CONFIG_HEAD}  interfaces: [br0]
  authoritative: true
  subnets:
    - subnet: 198.18.0.0/24
      pools: [\"198.18.0.100-198.18.0.150\"]
      lease_time: 1h
dashboard:
  enabled: true
  listen: 127.0.0.1:8081
  token: {TOKEN}
"
    );
    let p = lan.start(Provbox::dir(), &cfg);
    let phone = lan.client(None, None);
    let tmp = tempfile::tempdir().unwrap();
    let (mut bg, env) = udhcpc_daemon(&phone, tmp.path(), &[]);
    let ip = env["ip"].clone();
    // The API inside the server's namespace (its own loopback).
    let api = |method: &str, path: &str| {
        let out = lan.srv.run(&[
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "10",
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "-H",
            "Origin: http://127.0.0.1:8081",
            &format!("http://127.0.0.1:8081/api/v1/{path}"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let (c, list) = api("GET", "leases");
    assert!(c == 200 && list.contains(&ip), "{c} {list}");
    let (c, r) = api("DELETE", &format!("leases/{ip}"));
    assert_eq!(c, 200, "{r}\n{}", p.log());
    assert!(r.contains("declined"), "{r}");
    let (_, one) = api("GET", &format!("leases/{ip}"));
    assert!(one.contains("declined"), "{one}");
    assert!(p.log().contains("dhcp lease released"), "{}", p.log());
    // The journal has it: the release survives, as any lease change.
    // Renew now (SIGUSR1): NAK, then a new lease on another address.
    signal(bg.pid(), "USR1");
    let again = wait_until(Duration::from_secs(30), || {
        let ev = events(tmp.path());
        let nak = ev.iter().position(|(e, _)| e == "nak")?;
        ev[nak..]
            .iter()
            .find(|(e, _)| e == "bound")
            .map(|(_, env)| env["ip"].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no NAK then a new lease (udhcpc events: {:?})\n{}",
            events(tmp.path())
                .iter()
                .map(|(e, env)| format!("{e} {}", env.get("ip").map_or("", String::as_str)))
                .collect::<Vec<_>>(),
            p.log()
        )
    });
    bg.stop();
    assert_ne!(again, ip, "the released address was handed back at once");
    assert!(p.log().contains("dhcp NAK"), "{}", p.log());
    let (_, list) = api("GET", "leases");
    assert!(list.contains(&again), "{list}");
    // Without the token, the lease stays.
    let out = lan.srv.run(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "DELETE",
        "-H",
        "Origin: http://127.0.0.1:8081",
        &format!("http://127.0.0.1:8081/api/v1/leases/{again}"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

#[test]
fn a_report_request_sends_the_phone_notify_event_report() {
    crate::support::needs!("curl", "sipp");
    let work = tempfile::tempdir().unwrap();
    // sipp plays the phone: it takes one NOTIFY and only with `Event: report`.
    let sipp = crate::support::sipp::Sipp::start(work.path(), "report");
    let b = start_with(&format!("  resync:\n    sip_port: {}\n", sipp.port));
    let (c, v) = b.write("POST", "/api/v1/devices/00:11:22:33:44:55/report", None);
    assert_eq!(c, 404, "{v}");
    assert_eq!(v["title"], "Not found", "{v}");
    // The phone fetches its profile: known, at 127.0.0.1.
    assert_eq!(b.fetch(UA_A, &format!("/cfg/{A_HEX}.xml")).0, 200);
    let (c, v) = b.write("POST", &format!("/api/v1/devices/{A}/report"), None);
    assert_eq!(c, 202, "{v}");
    assert_eq!(v["sending"][0], A, "{v}");
    let log = sipp.finish();
    assert!(log.contains("Event: report"), "{log}");
    // The phone's 200 lands on its timeline; the request is audited with the token's name.
    let detail = wait_for("the timeline note", Duration::from_secs(10), || {
        let (_, d) = b.get(&format!("/api/v1/devices/{A}"));
        d["timeline"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "report_requested")
            .map(|e| e["detail"].as_str().unwrap_or("").to_string())
    });
    assert_eq!(detail, "SIP NOTIFY Event: report → SIP/2.0 200 OK");
    let log = b.p.log();
    assert!(log.contains(&format!("bench-alice report {A}")), "{log}");
}
