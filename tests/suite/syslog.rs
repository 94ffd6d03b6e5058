//! The syslog receiver and the device status book, driven by util-linux `logger` and
//! `curl` against the real binary on loopback.

use crate::bench_kit;
use crate::support;

use bench_kit::{Bench, kinds, last_event};
use std::net::UdpSocket;

/// Every documented variant: both framings, every dash form, with and without a port, all
/// six phrases. Each line uses its own MAC so each lands on its own device.
#[test]
fn every_documented_variant_from_logger_becomes_the_right_event() {
    crate::support::needs!("curl", "logger");
    let b = Bench::start(&[], "");
    let cases: &[(&str, &str, &str, &str)] = &[
        // framing, line, event kind, detail the timeline must show
        (
            "--rfc3164",
            "SPA504G 000e08000001 -- Requesting resync http://127.0.0.1/spa504g.cfg",
            "resync_requested",
            "http://127.0.0.1/spa504g.cfg",
        ),
        (
            "--rfc5424",
            "SPA504G 000e08000002 – Requesting resync https://127.0.0.1:8443/spa504g.cfg",
            "resync_requested",
            "https://127.0.0.1:8443/spa504g.cfg",
        ),
        (
            "--rfc3164",
            "SPA504G 000e08000003 –- Successful resync tftp://127.0.0.1:69/spa504g.cfg",
            "resync_ok",
            "tftp://127.0.0.1:69/spa504g.cfg",
        ),
        (
            "--rfc5424",
            "SPA504G 000e08000004 -- Successful resync http://127.0.0.1/spa504g.cfg -- cached copy",
            "resync_ok",
            "http://127.0.0.1/spa504g.cfg (cached copy)",
        ),
        (
            "--rfc3164",
            "SPA504G 000e08000005 – Resync failed: HTTP 404 Not Found",
            "resync_failed",
            "HTTP 404 Not Found",
        ),
        (
            "--rfc5424",
            "SPA504G 000e08000006 –- Resync failed: XML parse error at line 3",
            "resync_failed",
            "XML parse error at line 3",
        ),
        (
            "--rfc3164",
            "SPA504G 000e08000007 -- Requesting upgrade http://127.0.0.1:8080/fw/spa504g-7-6-2.bin",
            "upgrade_requested",
            "http://127.0.0.1:8080/fw/spa504g-7-6-2.bin",
        ),
        (
            "--rfc5424",
            "SPA504G 000e08000008 – Successful upgrade tftp://127.0.0.1/spa504g-7-6-2.bin -- 7.6.2",
            "upgrade_ok",
            "tftp://127.0.0.1/spa504g-7-6-2.bin (7.6.2)",
        ),
        (
            "--rfc3164",
            "SPA504G 000e08000009 –- Upgrade failed: image is corrupt",
            "upgrade_failed",
            "image is corrupt",
        ),
        (
            "--rfc5424",
            "CP-8841-3PCC 00:0e:08:00:00:0a -- Successful resync https://127.0.0.1/cp8841.xml",
            "resync_ok",
            "https://127.0.0.1/cp8841.xml",
        ),
    ];
    for (framing, line, _, _) in cases {
        b.logger(framing, line);
    }
    for (i, (framing, line, kind, detail)) in cases.iter().enumerate() {
        let mac = format!("00:0e:08:00:00:{:02x}", i + 1);
        let d = b.wait_device(&mac, &format!("the event of `{line}` ({framing})"), |d| {
            !d["events"].as_array().unwrap().is_empty()
        });
        assert_eq!(
            last_event(&d),
            (kind.to_string(), detail.to_string()),
            "{framing} {line}"
        );
        let model = if i == 9 { "CP-8841-3PCC" } else { "SPA504G" };
        assert_eq!(d["model"], model, "{line}");
        assert_eq!(d["ip"], "127.0.0.1");
    }
    // States follow the phone's words.
    let state = |m: &str| b.device(m).unwrap()["state"].as_str().unwrap().to_string();
    assert_eq!(state("000e08000001"), "seen");
    assert_eq!(state("000e08000003"), "provisioned");
    assert_eq!(state("000e08000008"), "upgraded");
    assert_eq!(state("000e08000005"), "failed");
    let d = b.device("000e08000006").unwrap();
    assert_eq!(d["reason"], "resync: XML parse error at line 3");

    assert_eq!(
        b.metric("provbox_syslog_lines_received_total{transport=\"udp\"}"),
        cases.len() as f64
    );
    assert_eq!(
        b.metric("provbox_syslog_lines_recognised_total{event=\"resync_ok\"}"),
        3.0
    );
    assert_eq!(
        b.metric("provbox_syslog_lines_recognised_total{event=\"resync_failed\"}"),
        2.0
    );
    assert_eq!(b.metric("provbox_devices{state=\"failed\"}"), 3.0);
    assert_eq!(b.metric("provbox_devices{state=\"provisioned\"}"), 3.0);
}

/// The scripted bench run: the phone fetches its profile with curl (its MAC in the
/// User-Agent, as Yealink phones send it: there is no DHCP on this branch, the lease step
/// is covered by the status unit tests), upgrades, resyncs: provisioned.
#[test]
fn bench_run_fetch_upgrade_resync_is_provisioned() {
    crate::support::needs!("curl", "logger");
    let b = Bench::start(
        &[
            ("y000000000028.cfg", "#!version:1.0.0.1\n"),
            ("fw.rom", "firmware"),
        ],
        "",
    );
    let ua = "Yealink SIP-T46G 28.83.0.50 00:15:65:aa:bb:01";
    assert_eq!(b.fetch("/y000000000028.cfg", ua), 200);
    let d = b.wait_device("00:15:65:aa:bb:01", "configured after the fetch", |d| {
        d["state"] == "configured"
    });
    assert_eq!(d["transfers"], 1);
    assert_eq!(d["user_agent"], ua);
    let (_, detail) = last_event(&d);
    assert!(detail.contains("/y000000000028.cfg"), "{detail}");
    assert_eq!(b.fetch("/fw.rom", ua), 200);
    b.logger(
        "--rfc3164",
        "SIP-T46G 001565aabb01 -- Successful upgrade http://127.0.0.1/fw.rom",
    );
    b.wait_device("001565aabb01", "upgraded", |d| d["state"] == "upgraded");
    b.logger(
        "--rfc5424",
        "SIP-T46G 001565aabb01 – Successful resync http://127.0.0.1/y000000000028.cfg",
    );
    let d = b.wait_device("001565aabb01", "provisioned", |d| {
        d["state"] == "provisioned"
    });
    assert_eq!(
        kinds(&d),
        ["transfer", "transfer", "upgrade_ok", "resync_ok"],
        "{d:#}"
    );
    assert_eq!(d["model"], "SIP-T46G");
    assert_eq!(b.metric("provbox_devices{state=\"provisioned\"}"), 1.0);
    // A line without a MAC from the same address is kept with the device.
    b.logger("--rfc3164", "Registration succeeded for 1001@pbx");
    let d = b.wait_device("001565aabb01", "the other line kept", |d| {
        !d["lines"].as_array().unwrap().is_empty()
    });
    assert!(
        d["lines"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Registration succeeded")
    );
}

/// A failed resync shows the phone's reason in the record, the list and the CSV.
#[test]
fn failures_show_the_phones_reason() {
    crate::support::needs!("curl", "logger");
    let b = Bench::start(&[("SEP0004F2AABB02.cnf.xml", "<device/>")], "");
    // The per-device file name ties the request to the phone.
    assert_eq!(
        b.fetch("/SEP0004F2AABB02.cnf.xml", "Cisco-CP8841/12.0"),
        200
    );
    b.wait_device("0004f2aabb02", "configured", |d| d["state"] == "configured");
    b.logger(
        "--rfc5424",
        "CP-8841-3PCC 0004f2aabb02 -- Resync failed: XML parse error: unexpected <device/>",
    );
    let d = b.wait_device("0004f2aabb02", "failed", |d| d["state"] == "failed");
    assert_eq!(d["reason"], "resync: XML parse error: unexpected <device/>");
    let (code, list) = b.dash_get("/api/devices");
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["counts"]["failed"], 1);
    assert_eq!(list["devices"][0]["reason"], d["reason"]);
    let (code, csv) = b.dash_get("/api/devices.csv");
    assert_eq!(code, 200);
    let row = csv.lines().nth(1).unwrap();
    assert!(
        row.starts_with("\"00:04:f2:aa:bb:02\",\"127.0.0.1\",\"CP-8841-3PCC\""),
        "{row}"
    );
    assert!(
        row.contains("\"failed\",\"resync: XML parse error: unexpected <device/>\""),
        "{row}"
    );
    // A missing file is a timeline entry, not a state change.
    assert_eq!(
        b.fetch("/SEP0004F2AABB03.cnf.xml", "Cisco-CP8841/12.0"),
        404
    );
    let d = b.wait_device("0004f2aabb03", "the 404 recorded", |_| true);
    assert_eq!(d["state"], "seen");
    assert!(last_event(&d).1.ends_with("not_found"), "{d:#}");
}

/// RFC 6587 over TCP, both framings; every line lands in forward_file.
#[test]
fn tcp_framing_and_forward_file() {
    crate::support::needs!("curl", "logger");
    let b = Bench::start(&[], "");
    b.logger_tcp(
        true,
        "SPA504G 000e08000101 -- Successful resync http://127.0.0.1/a.cfg",
    );
    b.logger_tcp(false, "SPA504G 000e08000102 – Resync failed: timeout");
    b.wait_device("000e08000101", "provisioned over TCP", |d| {
        d["state"] == "provisioned"
    });
    b.wait_device("000e08000102", "failed over TCP", |d| {
        d["state"] == "failed"
    });
    b.logger(
        "--rfc3164",
        "SPA504G 000e08000103 -- Requesting resync http://127.0.0.1/a.cfg",
    );
    b.wait_device("000e08000103", "seen over UDP", |d| d["state"] == "seen");
    let fwd = std::fs::read_to_string(b.p.path().join("syslog.log")).unwrap();
    assert_eq!(fwd.lines().count(), 3, "{fwd}");
    assert!(fwd.contains("000e08000101 -- Successful resync"), "{fwd}");
    assert!(fwd.lines().all(|l| l.starts_with("127.0.0.1 <")), "{fwd}");
    assert_eq!(
        b.metric("provbox_syslog_lines_received_total{transport=\"tcp\"}"),
        2.0
    );
}

/// Bad input is counted with a reason and changes nothing; the receiver keeps serving.
#[test]
fn garbage_is_counted_and_the_receiver_keeps_serving() {
    crate::support::needs!("curl", "logger");
    let b = Bench::start(&[], "");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", b.udp);
    s.send_to(&[0xff, 0xfe, 0x00, 0x80], to).unwrap();
    s.send_to(&vec![b'x'; 9000], to).unwrap();
    s.send_to(b"", to).unwrap();
    s.send_to(b"<999>1 broken header [unterminated", to)
        .unwrap();
    s.send_to(b"<13>SPA504G nomac -- Requesting resync http://x/", to)
        .unwrap();
    b.logger(
        "--rfc3164",
        "SPA504G 000e08000201 -- Successful resync http://127.0.0.1/a.cfg",
    );
    b.wait_device("000e08000201", "the good line after the garbage", |d| {
        d["state"] == "provisioned"
    });
    assert_eq!(
        b.metric("provbox_syslog_lines_dropped_total{reason=\"too_long\"}"),
        1.0
    );
    assert_eq!(
        b.metric("provbox_syslog_lines_dropped_total{reason=\"unknown_sender\"}"),
        4.0,
        "binary, empty, broken-header and MAC-less lines from an unknown sender"
    );
    let (_, list) = b.dash_get("/api/devices");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["devices"].as_array().unwrap().len(), 1, "{list:#}");
}

/// Records live in the store: a restart keeps state, reason and timeline.
#[test]
fn status_survives_a_restart() {
    crate::support::needs!("curl", "logger");
    let mut b = Bench::start(&[], "");
    b.logger(
        "--rfc3164",
        "SPA504G 000e08000301 -- Resync failed: no route to host",
    );
    let before = b.wait_device("000e08000301", "failed", |d| d["state"] == "failed");
    assert_eq!(b.p.signal_and_wait("TERM"), Some(0));
    let dir = std::mem::replace(&mut b.p.dir, tempfile::tempdir().unwrap());
    let cfg = std::fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    b.p = support::Provbox::start(dir, &cfg);
    let after = b.device("000e08000301").expect("the record after restart");
    assert_eq!(after["state"], "failed");
    assert_eq!(after["reason"], before["reason"]);
    assert_eq!(after["events"], before["events"]);
}
