//! Hooks (`hooks:`) against the real binary: a command hook (a shell script run as argv,
//! no shell in between) and a webhook to a real HTTP receiver in this test process, fed by
//! real `curl`, `logger`, `tftp` and busybox `udhcpc` (in network namespaces) clients.

use crate::bench_kit::Bench;
use crate::support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::netns::Lab;
use support::{Provbox, run, tftp_get, wait_until};

/// Write an executable script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    support::dhcp_raw::write_script(&path, body);
    path
}

/// The JSON bodies a command hook saved as `<event>.<pid>.json`, with their `.env` files.
fn saved(dir: &Path, event: &str) -> Vec<(serde_json::Value, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{event}.")) && name.ends_with(".json") {
            let json = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            let env = std::fs::read_to_string(e.path().with_extension("env")).unwrap_or_default();
            out.push((json, env));
        }
    }
    out
}

/// One request the receiver got: (head, body).
type Request = (String, Vec<u8>);

/// A webhook receiver: an HTTP/1.1 server on loopback answering 200 to every POST and
/// keeping what it got. Stops when dropped.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = c.read(&mut chunk).unwrap_or(0);
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length").then(|| v.trim())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len || n == 0 {
                            break (head, buf[i + 4..].to_vec());
                        }
                    }
                    if n == 0 {
                        break (String::from_utf8_lossy(&buf).into_owned(), Vec::new());
                    }
                };
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                g.lock().unwrap().push((head, body));
            }
        });
        Receiver { port, got, stop }
    }

    fn events(&self, event: &str) -> Vec<Request> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h.contains(&format!("\r\nX-Provbox-Event: {event}")))
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// HMAC-SHA256 of `body` under `key`, computed by Python's `hmac` (not provbox's code).
fn python_hmac(key: &str, body: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), body).unwrap();
    let out = run(
        "python3",
        &[
            "-c",
            "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), open(sys.argv[2],'rb').read(), hashlib.sha256).hexdigest())",
            key,
            tmp.path().to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A phone fetches its profile (configured), reports a successful resync (provisioned),
/// reports it again (still provisioned: no event), then a failed one (failed). A script
/// and a webhook that both want `provisioned` and `failed` get provisioned exactly once:
/// the later `failed` event, queued behind it on the same single-file queue, proves no
/// second one is on its way. The webhook's signature verifies with Python's hmac.
#[test]
fn script_and_webhook_get_provisioned_once_signed() {
    crate::support::needs!("curl", "logger", "python3");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let hook = script(
        work.path(),
        "save.sh",
        &format!(
            "f={}/$PROVBOX_EVENT.$$\ncat > $f.json.tmp\nenv | grep '^PROVBOX_' | sort > $f.env\nmv $f.json.tmp $f.json\n",
            out.display()
        ),
    );
    let secret_file = work.path().join("hook.secret");
    std::fs::write(&secret_file, "bench-secret-42\n").unwrap();
    let rx = Receiver::start();
    let hooks = format!(
        "hooks:
  - name: label
    events: [provisioned, failed]
    command: [{hook}]
    timeout: 20s
  - name: ticket
    events: [provisioned, failed]
    webhook:
      url: http://127.0.0.1:{port}/provbox/events
      secret_file: {secret}
      retries: 2
      backoff: 100ms
",
        hook = hook.display(),
        port = rx.port,
        secret = secret_file.display()
    );
    let b = Bench::start(&[("y000000000028.cfg", "#!version:1.0.0.1\n")], &hooks);
    let mac = "00:15:65:aa:bb:01";
    let ua = format!("Yealink SIP-T46G 28.83.0.50 {mac}");
    assert_eq!(b.fetch("/y000000000028.cfg", &ua), 200);
    b.wait_device(mac, "configured", |d| d["state"] == "configured");
    let ok = "SIP-T46G 001565aabb01 -- Successful resync http://127.0.0.1/y000000000028.cfg";
    b.logger("--rfc3164", ok);
    b.wait_device(mac, "provisioned", |d| d["state"] == "provisioned");
    b.logger("--rfc3164", ok);
    b.wait_device(mac, "the second report", |d| {
        d["events"].as_array().unwrap().len() == 3
    });
    b.logger(
        "--rfc3164",
        "SIP-T46G 001565aabb01 -- Resync failed: HTTP 404 Not Found",
    );
    b.wait_device(mac, "failed", |d| d["state"] == "failed");
    wait_until(Duration::from_secs(20), || {
        (saved(&out, "failed").len() == 1 && rx.events("failed").len() == 1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "both hooks should have got `failed`: script {:?}, webhook {:?}\n{}",
            saved(&out, "failed"),
            rx.events("failed"),
            b.p.log()
        )
    });

    // The script: once, with the event on stdin and in its environment; nothing filtered
    // out (configured) reached it.
    let p = saved(&out, "provisioned");
    assert_eq!(p.len(), 1, "{p:?}");
    let (json, env) = &p[0];
    assert_eq!(json["event"], "provisioned");
    assert_eq!(json["mac"], mac);
    assert_eq!(json["ip"], "127.0.0.1");
    assert_eq!(json["previous_state"], "configured");
    assert_eq!(json["model"], "SIP-T46G");
    for line in [
        "PROVBOX_EVENT=provisioned",
        &format!("PROVBOX_MAC={mac}"),
        "PROVBOX_IP=127.0.0.1",
        "PROVBOX_STATE=provisioned",
        "PROVBOX_PREVIOUS_STATE=configured",
        "PROVBOX_MODEL=SIP-T46G",
        "PROVBOX_HOOK=label",
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }
    assert!(saved(&out, "configured").is_empty());
    assert!(
        saved(&out, "failed")[0]
            .1
            .contains("PROVBOX_REASON=resync: HTTP 404 Not Found")
    );

    // The webhook: once, signed with the file's secret (its newline is not part of it).
    let w = rx.events("provisioned");
    assert_eq!(w.len(), 1, "{w:?}");
    let (head, body) = &w[0];
    assert!(
        head.starts_with("POST /provbox/events HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nContent-Type: application/json"),
        "{head}"
    );
    let sig = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Provbox-Signature: sha256="))
        .unwrap_or_else(|| panic!("no signature in {head}"));
    assert_eq!(sig, python_hmac("bench-secret-42", body));
    assert_ne!(sig, python_hmac("bench-secret-42\n", body));
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["event"], "provisioned");
    assert_eq!(json["mac"], mac);
    assert_eq!(
        rx.got.lock().unwrap().len(),
        2,
        "provisioned and failed only"
    );

    assert_eq!(
        b.metric("provbox_hook_runs_total{hook=\"label\",result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        b.metric("provbox_hook_runs_total{hook=\"ticket\",result=\"ok\"}"),
        2.0
    );
}

/// Gone, or a zombie nobody reaped (a container's init may not).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A hook that hangs (and started a child of its own) holds nobody up: a TFTP transfer
/// completes while it hangs, and at its timeout the hook and its child are both killed.
#[test]
fn hung_hook_does_not_delay_tftp_and_is_killed_at_its_timeout() {
    crate::support::needs!("curl", "tftp");
    support::require("tftp");
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let hook = script(
        work.path(),
        "hang.sh",
        &format!(
            "echo $$ > {w}/leader\nsleep 300 &\necho $! > {w}/child.tmp\nmv {w}/child.tmp {w}/child\nwait\n"
        ),
    );
    let tftp_port = support::free_udp_port();
    let extra = format!(
        "hooks:
  - name: hang
    events: [configured]
    command: [{hook}]
    timeout: 8s
tftp:
  enabled: true
  listen: 127.0.0.1:{tftp_port}
",
        hook = hook.display()
    );
    let body = "#!version:1.0.0.1\n".repeat(200);
    let b = Bench::start(&[("y000000000028.cfg", &body)], &extra);
    let mac = "00:15:65:aa:bb:02";
    assert_eq!(
        b.fetch(
            "/y000000000028.cfg",
            &format!("Yealink SIP-T46G 28.83.0.50 {mac}")
        ),
        200
    );
    let (leader, child) = wait_until(Duration::from_secs(15), || {
        let c = std::fs::read_to_string(work.path().join("child")).ok()?;
        let l = std::fs::read_to_string(work.path().join("leader")).ok()?;
        Some((l.trim().to_string(), c.trim().to_string()))
    })
    .unwrap_or_else(|| panic!("the hook did not start:\n{}", b.p.log()));
    assert!(!gone(&leader) && !gone(&child));

    // The phone's TFTP fetch meanwhile.
    let got = work.path().join("got.cfg");
    let port = tftp_port.to_string();
    let out = tftp_get(&port, "y000000000028.cfg", &got);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), body);
    assert!(
        !gone(&leader) && !gone(&child),
        "the transfer completed while the hook was still hung"
    );

    // At the timeout the whole group goes: the script and the sleep it started.
    wait_until(Duration::from_secs(30), || {
        (gone(&leader) && gone(&child)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "leader {leader} gone: {}, child {child} gone: {}\n{}",
            gone(&leader),
            gone(&child),
            b.p.log()
        )
    });
    wait_until(Duration::from_secs(10), || {
        (b.metric("provbox_hook_runs_total{hook=\"hang\",result=\"timeout\"}") == 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("no timeout counted:\n{}", b.metrics_text()));
    assert!(b.p.log().contains("hook timed out"), "{}", b.p.log());
}

/// busybox udhcpc in a namespace takes a lease and releases it (SIGUSR2); a hook
/// that wants lease events hears `lease_bound` then `lease_ended`, with the MAC and address.
#[test]
fn lease_bound_and_ended_reach_a_hook() {
    crate::support::needs!(root, "busybox", "ip");
    support::require("busybox");
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let hook = script(
        work.path(),
        "lease.sh",
        &format!("echo \"$PROVBOX_EVENT $PROVBOX_MAC $PROVBOX_IP\" >> {w}/leases.log\n"),
    );
    let lab = Lab::new();
    let srv = lab.ns("s");
    lab.bridge(&srv, Some("198.18.0.1/24"));
    let client = lab.ns("c");
    let mac = "02:00:00:00:16:06";
    lab.attach_as(&srv, &client, "eth0", None, Some(mac));
    let config = format!(
        "data_dir: data
catalog:
  roots: [files]
{dhcp}      lease_time: 1h
hooks:
  - name: leases
    events: [lease_bound, lease_ended]
    command: [{hook}]
",
        dhcp = support::dhcp_raw::lab_dhcp(),
        hook = hook.display()
    );
    let p = Provbox::start_with(Provbox::dir(), &config, &srv.prefix());
    // udhcpc's own script sets the address (the release goes out from it).
    let ud = script(
        work.path(),
        "udhcpc.sh",
        &format!(
            "case \"$1\" in\n  bound|renew) echo \"$ip\" > {w}/ip; ip addr add \"$ip/$mask\" dev \"$interface\";;\nesac\nexit 0\n"
        ),
    );
    let mut bg = client.spawn(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-f",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        ud.to_str().unwrap(),
    ]);
    let ip = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(work.path().join("ip")).ok()
    })
    .unwrap_or_else(|| panic!("udhcpc got no lease:\n{}", p.log()));
    let ip = ip.trim();
    // SIGUSR2: udhcpc releases its lease.
    assert!(support::signal(bg.pid(), "USR2"));
    let want = vec![
        format!("lease_bound {mac} {ip}"),
        format!("lease_ended {mac} {ip}"),
    ];
    let lines = wait_until(Duration::from_secs(20), || {
        let t = std::fs::read_to_string(work.path().join("leases.log")).unwrap_or_default();
        let l: Vec<String> = t.lines().map(str::to_string).collect();
        (l.len() >= 2).then_some(l)
    })
    .unwrap_or_else(|| panic!("the hook did not hear both lease events:\n{}", p.log()));
    bg.stop();
    assert_eq!(lines, want, "{}", p.log());
}
