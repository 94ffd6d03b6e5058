//! One lifecycle for every service: all sockets bound before anything serves, reloads
//! that name every key waiting for a restart, and loops that come back after a panic.
use crate::support;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::Lab;
use support::{Provbox, free_tcp_port, free_udp_port, metric};

/// GET `path` on 127.0.0.1:`port` with curl (at most 5 s): (status, body), status 0 when
/// nothing answered in time, so a poll may count a late or failed read as "not yet".
fn get(port: u16, path: &str) -> (u16, String) {
    let r = support::curl(5, &[], &format!("http://127.0.0.1:{port}{path}"));
    (r.code, String::from_utf8_lossy(&r.body).into_owned())
}

use support::eventually as wait_until;

/// A port taken on the DNS address must stop the start before DHCP answers anyone or
/// writes its lease journal (before the fix DHCP bound, opened its journal and served
/// before DNS's bind failed).
#[test]
fn a_taken_dns_port_stops_the_start_before_dhcp_answers_or_journals() {
    crate::support::needs!(root, "busybox", "ip");
    support::require("busybox");
    let lab = Lab::new();
    let srv = lab.ns("lcs");
    lab.bridge(&srv, Some("198.18.0.1/24"));
    let phone = lab.ns("lcp");
    lab.attach_as(&srv, &phone, "eth0", None, Some("02:00:00:00:13:01"));
    // Another program holds the DNS port (UDP and TCP) in the server's namespace.
    let (_udp, _tcp) = srv.enter(|| {
        (
            UdpSocket::bind("198.18.0.1:53").unwrap(),
            std::net::TcpListener::bind("198.18.0.1:53").unwrap(),
        )
    });

    let dir = Provbox::dir();
    let yaml = format!(
        r#"data_dir: data
catalog:
  roots: [files]
{}dns:
  enabled: true
  listen: ["198.18.0.1:53"]
"#,
        support::dhcp_raw::lab_dhcp()
    );
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    // The phone asks for an address all through the attempt.
    let mut args = support::dhcp_raw::UDHCPC_ONCE.to_vec();
    args.extend(["-t", "6", "-T", "1", "-s", "/bin/true"]);
    let mut phone_dhcp = phone.spawn(&args);
    let mut args = srv.prefix();
    let bin = support::bin();
    let cfg_s = cfg.to_str().unwrap();
    args.extend([bin.to_str().unwrap(), "serve", "--config", cfg_s]);
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("PROVBOX_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "provbox started with its DNS port taken:\n{log}"
    );
    assert!(
        log.contains("dns.listen[0]") && log.contains("cannot listen"),
        "the refusal names the field:\n{log}"
    );
    assert!(!log.contains("provbox ready"), "{log}");
    let journal = dir
        .path()
        .join("data")
        .join(provbox::dhcp::store::FILE_NAME);
    assert!(
        !journal.exists(),
        "a lease journal was written by a start that was refused:\n{log}"
    );
    // udhcpc gives up (-n) after its DISCOVERs went unanswered.
    let (stdout, stderr) = phone_dhcp.stop();
    assert!(
        !stdout.contains("lease of") && !stderr.contains("lease of"),
        "DHCP answered during a refused start:\n{stdout}{stderr}"
    );
    assert!(!log.contains("dhcp: reply sent"), "{log}");
}

/// The restart keys docs/operations.md lists (the same table `server::tests` checks
/// against the services' declarations).
fn documented_restart_keys() -> BTreeSet<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let table = doc
        .split("| key | default | meaning | reload |")
        .nth(1)
        .unwrap();
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            cells[cells.len() - 1]
                .trim()
                .starts_with("restart")
                .then(|| cells[0].trim().trim_matches('`').to_string())
        })
        .collect()
}

/// Change every key the docs say needs a restart: the reload applies none of them, names
/// each one in `provbox reload`'s answer, the log and the pending gauge, and counts
/// `restart_needed`; putting the file back clears them. `data_dir` is changed last, by
/// SIGHUP: `provbox reload` finds the process through the new file's data_dir, which a
/// changed data_dir does not hold yet.
#[test]
fn a_reload_names_every_key_that_needs_a_restart() {
    crate::support::needs!("curl", "tftp");
    let dir = Provbox::dir();
    std::fs::create_dir_all(dir.path().join("files2")).unwrap();
    std::fs::write(dir.path().join("files/a.cfg"), "a\n").unwrap();
    std::fs::write(dir.path().join("accounts.txt"), "shared:pw\n").unwrap();
    std::fs::write(
        dir.path().join("inventory.yaml"),
        "devices:\n  - mac: 00:56:2b:04:36:15\n    extension: \"1001\"\n",
    )
    .unwrap();
    let [metrics, tftp, dns, syslog, dash] = [(); 5].map(|_| free_tcp_port());
    let [legacy, tftp2, dns2, syslog2, syslog_tcp, dash2, dhcp_port] =
        [(); 7].map(|_| free_udp_port());
    let before = format!(
        r#"data_dir: data
catalog:
  roots: [files]
metrics:
  enabled: true
  listen: 127.0.0.1:{metrics}
tftp:
  enabled: true
  listen: 127.0.0.1:{tftp}
dns:
  enabled: true
  listen: ["127.0.0.1:{dns}"]
syslog:
  enabled: true
  listen: 127.0.0.1:{syslog}
dashboard:
  enabled: true
  listen: 127.0.0.1:{dash}
"#
    );
    // Every restart key changed (services on at the start switched off, the others on).
    let after = format!(
        r#"data_dir: data
log:
  level: debug
  format: json
catalog:
  roots: [files, files2]
  case_insensitive: true
metrics:
  enabled: true
  listen: 127.0.0.1:{metrics}
https:
  names: [other.lab.test]
https_legacy:
  enabled: true
  listen: ["127.0.0.1:{legacy}"]
  limits:
    max_connections: 5
    header_timeout: 3s
    idle_timeout: 4s
    max_connections_per_ip: 2
    write_timeout: 5s
tftp:
  enabled: false
  listen: 127.0.0.1:{tftp2}
  max_blksize: 1024
  max_window: 8
  timeout: 2s
  retries: 3
  max_transfers: 50
  max_timeout: 9s
  max_transfers_per_ip: 3
dns:
  enabled: false
  listen: ["127.0.0.1:{dns2}"]
  tcp_limits:
    max_connections: 9
    max_connections_per_ip: 2
    idle_timeout: 3s
    write_timeout: 4s
dhcp:
  enabled: true
  interfaces: [lo]
  port: {dhcp_port}
  subnets:
    - subnet: 198.18.99.0/24
      pools: ["198.18.99.100-198.18.99.110"]
syslog:
  enabled: false
  listen: 127.0.0.1:{syslog2}
  tcp_listen: 127.0.0.1:{syslog_tcp}
  forward_file: forward.log
  forward_max: 1MiB
  tcp_limits:
    max_connections: 9
    max_connections_per_ip: 2
    idle_timeout: 3s
    write_timeout: 4s
dashboard:
  enabled: false
  listen: 127.0.0.1:{dash2}
devices:
  inventory: inventory.yaml
  trust:
    lease: true
    user_agent: true
    path: true
    relay: true
    http_auth: true
  http_auth:
    realm: lab
    accounts: accounts.txt
    digest: [MD5]
    basic: true
    nonce_lifetime: 1m
  reports:
    path: /report/$MA.xml
  private: ["phones/"]
  mac_in_path: false
  missing_variable: 403
  encryption:
    enabled: false
    digest: sha256
    gzip: true
  binding:
    init_prefix: /init
    profile: other.tmpl
    devices_per_pin: 2
    wrong_pins_budget: 7
uploads:
  enabled: true
  tftp: true
  patterns: ["$MA-x.log"]
  max_file: 2MiB
  max_device: 32MiB
  max_total: 2GiB
  log_rotate: 512KiB
  log_keep: 5
hooks:
  - name: h1
    command: [/bin/true]
store:
  backend: postgres
  url: "host=db.lab.test user=provbox dbname=provbox"
  password_file: pgpass
  ca_file: pg-ca.pem
  pool_size: 3
  box_name: other-box
"#
    );
    // Through a symlink the watcher does not see: each reload below is exactly one.
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real/config.yaml", dir.path().join("config.yaml")).unwrap();
    let mut pb = Provbox::start(dir, &before);
    let cfg = pb.path().join("config.yaml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    let real = pb.path().join("real/config.yaml");
    std::fs::write(&real, &after).unwrap();
    let (code, out) = support::provbox(&["check", "--config", &cfg_s]);
    assert_eq!(code, 0, "the changed file is valid: {out}");
    let (code, out) = support::provbox(&["reload", "--config", &cfg_s]);
    assert_ne!(
        code, 0,
        "a reload that leaves keys waiting is not ok: {out}"
    );
    assert!(out.contains("reload restart_needed"), "{out}");
    let keys = documented_restart_keys();
    assert!(keys.len() > 30, "{keys:?}");
    let named = |answer: &str| -> BTreeSet<String> {
        answer
            .split("needs a restart: ")
            .nth(1)
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .split(", ")
            .map(str::to_string)
            .collect()
    };
    let mut want = keys.clone();
    want.remove("data_dir");
    assert_eq!(
        named(&out),
        want,
        "the answer names exactly the changed restart keys (a new one? change it in this test's second file)\n{out}"
    );
    pb.wait_for_log("takes a restart to apply", Duration::from_secs(5));
    let log = pb.log();
    let line = log
        .lines()
        .find(|l| l.contains("takes a restart to apply"))
        .unwrap();
    for k in &want {
        assert!(line.contains(k.as_str()), "{k} not in the log line: {line}");
    }
    let text = support::scrape(metrics);
    assert_eq!(
        metric(
            &text,
            "provbox_config_reloads_total{result=\"restart_needed\"}"
        ),
        1.0,
        "{text}"
    );
    for k in &want {
        assert_eq!(
            metric(
                &text,
                &format!("provbox_config_restart_pending{{key=\"{k}\"}}")
            ),
            1.0,
            "{k}"
        );
    }
    // Nothing that waits was applied: TFTP still serves on its first address.
    let tftp_out = pb.path().join("a.got");
    let o = tftp_get(tftp, "a.cfg", &tftp_out);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(std::fs::read(&tftp_out).unwrap(), b"a\n");

    // data_dir too, by SIGHUP; the verdict is where `provbox reload` reads it.
    std::fs::write(
        &real,
        after.replace("data_dir: data\n", "data_dir: data2\n"),
    )
    .unwrap();
    let status = pb.path().join("data/reload-status");
    pb.reload();
    wait_until(
        "the second reload's verdict",
        Duration::from_secs(10),
        || std::fs::read_to_string(&status).is_ok_and(|s| s.starts_with("2 ")),
    );
    let verdict = std::fs::read_to_string(&status).unwrap();
    assert!(verdict.starts_with("2 restart_needed\n"), "{verdict}");
    assert_eq!(named(&verdict), keys, "{verdict}");

    // The first file again: nothing waits any more.
    std::fs::write(&real, &before).unwrap();
    let (code, out) = support::provbox(&["reload", "--config", &cfg_s]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reload ok: restarted: nothing"), "{out}");
    let text = support::scrape(metrics);
    for k in &keys {
        assert_eq!(
            metric(
                &text,
                &format!("provbox_config_restart_pending{{key=\"{k}\"}}")
            ),
            0.0,
            "{k}"
        );
    }
}

/// With the `fault-injection` feature, a read request for this name panics the TFTP loop.
const FAULT: &str = "provbox-fault-injection/panic";

/// provbox serving `phone.cfg` over TFTP with metrics on, ready: (provbox, TFTP port,
/// metrics port).
fn tftp_box() -> (Provbox, u16, u16) {
    let dir = Provbox::serving(&[("phone.cfg", "<cfg/>\n")]);
    let (tftp, metrics) = (free_udp_port(), free_tcp_port());
    let pb = Provbox::start(
        dir,
        &format!(
            "data_dir: data\ncatalog:\n  roots: [files]\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\ntftp:\n  enabled: true\n  listen: 127.0.0.1:{tftp}\n"
        ),
    );
    assert_eq!(get(metrics, "/readyz").0, 200);
    (pb, tftp, metrics)
}

/// tftp-hpa fetching `file` from 127.0.0.1:`port` into `out`.
fn tftp_get(port: u16, file: &str, out: &std::path::Path) -> std::process::Output {
    support::run(
        "tftp",
        &[
            "127.0.0.1",
            &port.to_string(),
            "-c",
            "get",
            file,
            out.to_str().unwrap(),
        ],
    )
}

fn rrq(name: &str) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b"\0octet\0");
    p
}

/// A panic in the TFTP listener is logged, counted, and the listener made again on the
/// same socket; too many panics in a minute end the process with a failure status (before
/// the fix the loop died silently and TFTP stayed down while /readyz said ready).
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs `--features fault-injection` (tests/run sets it)"
)]
fn a_panicking_tftp_loop_is_restarted_and_serves_again() {
    crate::support::needs!("curl", "tftp");
    let (mut pb, tftp, metrics) = tftp_box();
    let fetch = |pb: &Provbox, n: u32| {
        let out = pb.path().join(format!("got{n}"));
        let o = tftp_get(tftp, "phone.cfg", &out);
        o.status.success()
            && std::fs::read(&out)
                .map(|b| b == b"<cfg/>\n")
                .unwrap_or(false)
    };
    assert!(fetch(&pb, 0));

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&rrq(FAULT), ("127.0.0.1", tftp)).unwrap();
    pb.wait_for_log("service loop panicked", Duration::from_secs(10));
    wait_until("the restart to be counted", Duration::from_secs(10), || {
        metric(
            &support::scrape(metrics),
            "provbox_service_restarts_total{service=\"tftp\"}",
        ) == 1.0
    });
    pb.wait_for_log("service loop restarted", Duration::from_secs(10));
    assert!(fetch(&pb, 1), "TFTP does not serve after the restart");
    wait_until("/readyz to be 200 again", Duration::from_secs(10), || {
        get(metrics, "/readyz").0 == 200
    });

    // Five more within the minute (six in all): the process gives up, non-zero.
    for _ in 0..5 {
        sock.send_to(&rrq(FAULT), ("127.0.0.1", tftp)).unwrap();
    }
    let mut child = pb.child.take().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "provbox kept running after six panics:\n{}",
            pb.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}:\n{}", pb.log());
    assert!(pb.log().contains("more than 5 panics"), "{}", pb.log());
}

/// A loop that stops running (here: its thread blocked for 8 s by the test-only hook) makes
/// `/readyz` answer 503 naming it, and ready again once it runs.
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs `--features fault-injection` (tests/run sets it)"
)]
fn a_wedged_tftp_loop_makes_readyz_name_it() {
    crate::support::needs!("curl");
    let (_pb, tftp, metrics) = tftp_box();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&rrq("provbox-fault-injection/wedge"), ("127.0.0.1", tftp))
        .unwrap();
    let mut seen = String::new();
    wait_until(
        "/readyz to name the wedged loop",
        Duration::from_secs(25),
        || match get(metrics, "/readyz") {
            (0, _) => false,
            (code, body) => {
                seen = body;
                code == 503
            }
        },
    );
    assert!(seen.contains("tftp: tftp listener has not run"), "{seen}");
    wait_until("/readyz to be 200 again", Duration::from_secs(40), || {
        get(metrics, "/readyz").0 == 200
    });
}
