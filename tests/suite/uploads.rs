//! Phones writing back (`uploads:`): curl PUT as a phone with its client certificate,
//! read back by that phone only, quotas, a cut upload, log rotation, the dashboard's
//! uploads view and `provbox uploads`, and tftp-hpa `put` into the upload area.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::fixtures::{Ports, assert_labelled, curl_as, lab_dir, provbox_with};
use support::{Provbox, free_tcp_port, free_udp_port, metric, run};
use support::{eventually, scrape};

/// A Polycom VVX and a second phone.
const A: &str = "0004f2abcdef";
const B: &str = "0004f2000001";
const TOKEN: &str = "uploads-token-0123456789";

struct Bench {
    pb: Provbox,
    ports: Ports,
    dash: u16,
    ca: PathBuf,
    certs: Vec<(PathBuf, PathBuf)>,
}

use crate::support::client_cert;

/// provbox with HTTP, HTTPS (client certificates optional), the dashboard and uploads
/// with small quotas; certificates for A and B.
fn bench(uploads: &str) -> Bench {
    let d = lab_dir();
    std::fs::write(d.path().join("files/common.cfg"), "for everyone\n").unwrap();
    let certs = vec![client_cert(d.path(), A), client_cert(d.path(), B)];
    let ca = d.path().join("data/tls/ca.pem");
    let (ports, dash) = (Ports::free(), free_tcp_port());
    let cfg = format!(
        "{}dashboard:\n  enabled: true\n  listen: 127.0.0.1:{dash}\n  token: {TOKEN}\n\
uploads:\n  enabled: true\n{uploads}",
        ports.config(true)
    );
    let pb = Provbox::start(d, &cfg);
    Bench {
        pb,
        ports,
        dash,
        ca,
        certs,
    }
}

impl Bench {
    /// curl over HTTPS as phone `who` (0: A, 1: B, None: no certificate).
    fn https(&self, who: Option<usize>, extra: &[&str], path: &str) -> support::Reply {
        let cert = who.map(|i| (self.certs[i].0.as_path(), self.certs[i].1.as_path()));
        curl_as(
            20,
            &self.ca,
            cert,
            extra,
            &format!("https://127.0.0.1:{}{path}", self.ports.https),
        )
    }

    /// PUT `body` to `path` as phone `who`: the status.
    fn put(&self, who: Option<usize>, path: &str, body: &[u8]) -> u16 {
        let f = self.pb.path().join("put-body");
        std::fs::write(&f, body).unwrap();
        let file = f.to_str().unwrap().to_string();
        self.https(who, &["-T", &file], path).code
    }

    fn stored(&self, mac: &str, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.pb.path().join("data/uploads").join(mac).join(name)).ok()
    }

    fn dashboard(&self, path: &str) -> (u16, serde_json::Value) {
        let r = support::curl(
            10,
            &["-H", &format!("Authorization: Bearer {TOKEN}")],
            &format!("http://127.0.0.1:{}{path}", self.dash),
        );
        (r.code, serde_json::from_slice(&r.body).unwrap_or_default())
    }

    /// The details of the upload events on device `mac`'s dashboard timeline.
    fn upload_events(&self, mac: &str) -> Vec<String> {
        let (code, dev) = self.dashboard(&format!("/api/devices/{mac}"));
        assert_eq!(code, 200, "{dev}");
        dev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "upload")
            .map(|e| e["detail"].as_str().unwrap().to_string())
            .collect()
    }
}

#[test]
fn a_phone_uploads_its_override_and_log_and_only_it_reads_them_back() {
    crate::support::needs!("curl", "openssl");
    let b = bench("  max_file: 4KiB\n  max_device: 12KiB\n  log_rotate: 1KiB\n  log_keep: 2\n");
    let cfg = format!("/{A}-phone.cfg");
    // The phone asks for its files first, as it does at boot (the override is not there).
    assert_eq!(b.https(Some(0), &[], "/common.cfg").code, 200);
    assert_eq!(b.https(Some(0), &[], &cfg).code, 404);

    // Its own override: created, then replaced.
    assert_eq!(
        b.put(Some(0), &cfg, b"<PHONE_CONFIG up.ringer=\"1\"/>\n"),
        201
    );
    assert_eq!(
        b.put(Some(0), &cfg, b"<PHONE_CONFIG up.ringer=\"2\"/>\n"),
        204
    );
    assert_eq!(
        b.stored(A, &format!("{A}-phone.cfg")).unwrap(),
        b"<PHONE_CONFIG up.ringer=\"2\"/>\n"
    );
    // Read back by that phone, as it does at its next boot.
    let got = b.https(Some(0), &[], &cfg);
    assert_eq!(
        (got.code, got.body.as_slice()),
        (200, &b"<PHONE_CONFIG up.ringer=\"2\"/>\n"[..])
    );
    // Another phone's certificate, no certificate, plain HTTP: 403, to read or to write.
    assert_eq!(b.https(Some(1), &[], &cfg).code, 403);
    assert_eq!(b.https(None, &[], &cfg).code, 403);
    let plain = support::curl(10, &[], &format!("http://127.0.0.1:{}{cfg}", b.ports.http));
    assert_eq!(plain.code, 403);
    assert_eq!(b.put(Some(1), &cfg, b"B was here\n"), 403);
    assert_eq!(b.put(None, &cfg, b"anyone\n"), 403);
    let f = b.pb.path().join("plain-body");
    std::fs::write(&f, "plain\n").unwrap();
    let plain = support::curl(
        10,
        &["-T", f.to_str().unwrap()],
        &format!("http://127.0.0.1:{}{cfg}", b.ports.http),
    );
    assert_eq!(plain.code, 403);
    assert_eq!(
        b.stored(A, &format!("{A}-phone.cfg")).unwrap(),
        b"<PHONE_CONFIG up.ringer=\"2\"/>\n"
    );
    // B may write its own, in any directory the phone is set to use; POST too.
    let r = b.https(
        Some(1),
        &["-X", "POST", "--data-binary", "<calls/>"],
        &format!("/logs/{B}-calls.xml"),
    );
    assert_eq!(r.code, 201);
    assert_eq!(b.stored(B, &format!("{B}-calls.xml")).unwrap(), b"<calls/>");
    // A PUT anywhere else is still not allowed.
    assert_eq!(b.put(Some(0), "/common.cfg", b"x"), 405);

    // Over quota: declared up front, and found while streaming a chunked body.
    let big = vec![b'x'; 5000];
    assert_eq!(b.put(Some(0), &format!("/{A}-directory.xml"), &big), 413);
    let f = b.pb.path().join("big");
    std::fs::write(&f, &big).unwrap();
    let chunked = b.https(
        Some(0),
        &[
            "-T",
            f.to_str().unwrap(),
            "-H",
            "Transfer-Encoding: chunked",
        ],
        &format!("/{A}-directory.xml"),
    );
    assert_eq!(chunked.code, 413);
    assert_eq!(b.stored(A, &format!("{A}-directory.xml")), None);

    // The log: appended, rotated past 1 KiB, two rotations kept.
    let log = format!("/{A}-app.log");
    let line = |i: usize| format!("{i:04} {}\n", "l".repeat(194));
    for i in 0..5 {
        assert_eq!(
            b.put(Some(0), &log, line(i).as_bytes()),
            if i == 0 { 201 } else { 204 }
        );
    }
    let name = format!("{A}-app.log");
    assert_eq!(b.stored(A, &name).unwrap().len(), 1000);
    for i in 5..16 {
        assert_eq!(b.put(Some(0), &log, line(i).as_bytes()), 204);
    }
    let current = String::from_utf8(b.stored(A, &name).unwrap()).unwrap();
    assert!(current.starts_with("0015 "), "{current}");
    let first = String::from_utf8(b.stored(A, &format!("{name}.1")).unwrap()).unwrap();
    assert!(
        first.starts_with("0010 ") && first.ends_with(&line(14)),
        "{first}"
    );
    assert!(b.stored(A, &format!("{name}.2")).is_some());
    assert!(b.stored(A, &format!("{name}.3")).is_none());

    // Counted by result, refusals logged with their reason.
    let m = scrape(b.ports.metrics);
    assert_labelled(
        &m,
        "provbox_uploads_total",
        "result",
        &[("stored", 19.0), ("forbidden", 3.0), ("file_quota", 2.0)],
    );
    assert!(metric(&m, "provbox_upload_bytes_total") > 3000.0, "{m}");
    let log_text = b.pb.log();
    assert!(log_text.contains("upload refused"), "{log_text}");
    assert!(log_text.contains("reason=\"file_quota\"") || log_text.contains("reason=file_quota"));

    // The bench view: the list with sizes, a tail of the log, the device's timeline.
    let (code, list) = b.dashboard(&format!("/api/uploads/{A}"));
    assert_eq!(code, 200, "{list}");
    let files = list["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            format!("{A}-app.log"),
            format!("{A}-app.log.1"),
            format!("{A}-app.log.2"),
            format!("{A}-phone.cfg")
        ]
    );
    assert_eq!(files[3]["bytes"], 30);
    let (code, tail) = b.dashboard(&format!("/api/uploads/{A}/{A}-app.log.1?tail=2"));
    assert_eq!(code, 200, "{tail}");
    assert_eq!(
        tail["tail"].as_str().unwrap(),
        format!("{}{}", line(13), line(14)).trim_end()
    );
    let (code, _) = b.dashboard(&format!("/api/uploads/{A}/..%2F..%2Fdashboard.token"));
    assert_eq!(code, 404);
    let unauth = support::curl(
        10,
        &[],
        &format!("http://127.0.0.1:{}/api/uploads/{A}", b.dash),
    );
    assert_eq!(unauth.code, 401);
    let uploads = b.upload_events("00:04:f2:ab:cd:ef");
    assert!(
        uploads.contains(&format!("{A}-phone.cfg: 30 bytes created over https")),
        "{uploads:?}"
    );

    // B's upload is on B's timeline, not A's.
    assert_eq!(
        b.upload_events("00:04:f2:00:00:01"),
        [format!("{B}-calls.xml: 8 bytes created over https")]
    );

    // `provbox uploads` lists and exports, reading data_dir directly.
    let config = b.pb.path().join("config.yaml");
    let out = b.pb.path().join("export");
    let (code, text) = provbox_with(
        &config,
        &[
            "uploads",
            "00:04:F2:AB:CD:EF",
            "--export",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("{A}-phone.cfg")) && text.contains("exported 4 files"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(out.join(format!("{A}-phone.cfg"))).unwrap(),
        b"<PHONE_CONFIG up.ringer=\"2\"/>\n"
    );
}

#[test]
fn a_cut_upload_leaves_the_previous_version() {
    crate::support::needs!("curl");
    let b = bench("");
    let cfg = format!("/{A}-phone.cfg");
    assert_eq!(b.put(Some(0), &cfg, b"previous\n"), 201);
    let dir = b.pb.path().join("data/uploads").join(A);
    // 400 KB at 20 KB/s: the body is still coming when curl is killed.
    let body = b.pb.path().join("slow");
    std::fs::write(&body, vec![b'n'; 400_000]).unwrap();
    let (c, k) = &b.certs[0];
    let mut curl = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--limit-rate", "20K", "--cacert"])
        .arg(&b.ca)
        .arg("--cert")
        .arg(c)
        .arg("--key")
        .arg(k)
        .arg("-T")
        .arg(&body)
        .arg(format!("https://127.0.0.1:{}{cfg}", b.ports.https))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .next()
    };
    eventually(
        "part of the body is written",
        Duration::from_secs(20),
        || partial().is_some_and(|n| n > 0),
    );
    curl.kill().unwrap();
    curl.wait().unwrap();
    eventually(
        "the temporary file is removed",
        Duration::from_secs(10),
        || partial().is_none(),
    );
    let kept = b.stored(A, &format!("{A}-phone.cfg")).unwrap();
    assert!(
        kept == b"previous\n",
        "the previous version stays, not {} bytes of the cut body",
        kept.len()
    );
    let got = b.https(Some(0), &[], &cfg);
    assert_eq!((got.code, got.body.as_slice()), (200, &b"previous\n"[..]));
    assert_labelled(
        &scrape(b.ports.metrics),
        "provbox_uploads_total",
        "result",
        &[("cut", 1.0), ("stored", 1.0)],
    );
}

/// tftp-hpa `put` of `local` as `remote` to 127.0.0.1:`port`: its output.
fn tftp_put(port: u16, local: &Path, remote: &str) -> String {
    let o = run(
        "tftp",
        &[
            "127.0.0.1",
            &port.to_string(),
            "-m",
            "octet",
            "-c",
            "put",
            local.to_str().unwrap(),
            remote,
        ],
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tftp_bench(tftp_uploads: bool) -> (Provbox, u16, u16) {
    let (tftp, metrics) = (free_udp_port(), free_tcp_port());
    let d = Provbox::dir();
    std::fs::write(d.path().join("files/common.cfg"), "for everyone\n").unwrap();
    // TFTP carries no certificate; on this isolated bench the MAC in the path proves
    // the phone (a staging LAN would trust its leases instead).
    let cfg = format!(
        "catalog:\n  roots: [files]\n\
tftp:\n  enabled: true\n  listen: 127.0.0.1:{tftp}\n\
metrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\n\
devices:\n  trust:\n    path: true\n\
uploads:\n  enabled: true\n  tftp: {tftp_uploads}\n  max_file: 64KiB\n"
    );
    (Provbox::start(d, &cfg), tftp, metrics)
}

#[test]
fn tftp_put_lands_in_the_upload_area_only_when_enabled() {
    crate::support::needs!("tftp");
    support::require("tftp");
    let (pb, port, metrics) = tftp_bench(true);
    let local = pb.path().join("boot.log");
    // Several blocks, not a multiple of 512.
    let body: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&local, &body).unwrap();
    let out = tftp_put(port, &local, &format!("{A}-boot.log"));
    assert!(!out.contains("Error"), "{out}");
    let stored = pb
        .path()
        .join("data/uploads")
        .join(A)
        .join(format!("{A}-boot.log"));
    assert_eq!(std::fs::read(&stored).unwrap(), body);
    // Appended, as logs are.
    tftp_put(port, &local, &format!("{A}-boot.log"));
    assert_eq!(std::fs::read(&stored).unwrap().len(), 6000);
    // An override, read back over TFTP as the phone does at boot.
    let over = pb.path().join("phone.cfg");
    std::fs::write(&over, b"<PHONE_CONFIG/>\n").unwrap();
    let out = tftp_put(port, &over, &format!("{A}-phone.cfg"));
    assert!(!out.contains("Error"), "{out}");
    let back = pb.path().join("back.cfg");
    let got = support::tftp_get(&port.to_string(), &format!("{A}-phone.cfg"), &back);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(std::fs::read(&back).unwrap(), b"<PHONE_CONFIG/>\n");
    // Elsewhere the server stays read-only, and the catalog is untouched.
    let out = tftp_put(port, &local, "common.cfg");
    assert!(out.contains("read-only server"), "{out}");
    assert_eq!(
        std::fs::read(pb.path().join("files/common.cfg")).unwrap(),
        b"for everyone\n"
    );
    // Over the file quota: refused, nothing stored.
    let big = pb.path().join("big");
    std::fs::write(&big, vec![b'x'; 70_000]).unwrap();
    let out = tftp_put(port, &big, &format!("{A}-directory.xml"));
    assert!(out.contains("Error"), "{out}");
    assert!(
        !pb.path()
            .join("data/uploads")
            .join(A)
            .join(format!("{A}-directory.xml"))
            .exists()
    );
    assert_labelled(
        &scrape(metrics),
        "provbox_uploads_total",
        "result",
        &[("stored", 3.0), ("file_quota", 1.0)],
    );
    drop(pb);

    // With `uploads.tftp` off, even the upload area is read-only over TFTP.
    let (pb, port, _) = tftp_bench(false);
    let local = pb.path().join("boot.log");
    std::fs::write(&local, b"log\n").unwrap();
    let out = tftp_put(port, &local, &format!("{A}-boot.log"));
    assert!(out.contains("read-only server"), "{out}");
    assert!(!pb.path().join("data/uploads").join(A).exists());
}

#[test]
fn chromium_shows_a_devices_uploads_and_a_logs_last_lines_as_text() {
    crate::support::needs!("chromium", "curl");
    let b = bench("");
    // The phone's very first request is an upload: it still gets its record and event.
    let log = format!("/{A}-app.log");
    assert_eq!(b.put(Some(0), &log, b"boot ok\n"), 201);
    let hostile = "<img src=x onerror=\"window.__pwned=1\"> sip register failed\n";
    assert_eq!(b.put(Some(0), &log, hostile.as_bytes()), 204);
    assert_eq!(b.put(Some(0), &format!("/{A}-phone.cfg"), b"<x/>\n"), 201);

    let mut br = crate::dashboard::Browser::start();
    let url = format!("http://127.0.0.1:{}/?token={TOKEN}", b.dash);
    br.call("Page.navigate", serde_json::json!({"url": url}));
    br.wait_for(
        "document.querySelectorAll('tr.dev[data-key=\"00:04:f2:ab:cd:ef\"]').length",
        1.into(),
    );
    br.eval("document.querySelector('tr.dev[data-key=\"00:04:f2:ab:cd:ef\"]').click()");
    br.wait_for(
        "document.getElementById('up-files').querySelectorAll('li').length",
        2.into(),
    );
    let files = br
        .eval("document.getElementById('up-files').innerText")
        .to_string();
    assert!(
        files.contains(&format!("{A}-app.log")) && files.contains("67 bytes"),
        "{files}"
    );
    assert!(
        files.contains(&format!("{A}-phone.cfg")) && files.contains("5 bytes"),
        "{files}"
    );
    // The tail of the log: the phone's text, shown as text.
    br.eval("document.querySelector('button.up-tail').click()");
    br.wait_for(
        "document.getElementById('up-tail').textContent.includes('sip register failed')",
        true.into(),
    );
    assert_eq!(
        br.eval("document.getElementById('up-tail').textContent"),
        serde_json::Value::from(format!("boot ok\n{}", hostile.trim_end()))
    );
    assert_eq!(
        br.eval("document.querySelectorAll('#up-tail img').length"),
        0
    );
    assert_eq!(br.eval("window.__pwned === undefined"), true);
    // The timeline has the uploads too, the first one included.
    br.wait_for(
        "document.getElementById('tl-events').innerText.includes('app.log: 8 bytes created over https')",
        true.into(),
    );
    br.wait_for(
        "document.getElementById('tl-events').innerText.includes('phone.cfg: 5 bytes created over https')",
        true.into(),
    );
}
