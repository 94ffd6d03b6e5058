//! Configuration reload, driven like an operator would: SIGHUP, `provbox reload`, and an
//! edit of the file. A good config applies (listeners move, limits change), a bad one keeps
//! the old one serving (checked with real curl), every attempt is counted in
//! provbox_config_reloads_total{result}, and a transfer in flight survives its listener
//! being moved.

use crate::support;

use std::time::{Duration, Instant};

use support::{Provbox, free_tcp_port};

fn config(http: u16, metrics: u16, max_connections: usize) -> String {
    format!(
        "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{http}\"]\n  limits:\n    max_connections: {max_connections}\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\nshutdown_grace: 20s\n"
    )
}

/// curl's HTTP status for a URL, or "000" when nothing answered.
fn status(url: &str) -> String {
    support::http_code(&[], url)
}

fn metric(port: u16, result: &str) -> u64 {
    let text = support::scrape(port);
    let needle = format!("provbox_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Write the config by rename, as editors and config management do.
fn write_config(pb: &Provbox, text: &str) {
    let tmp = pb.path().join(".config.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, pb.path().join("config.yaml")).unwrap();
}

/// A provbox directory serving one profile, whose config.yaml is a link into real/.
fn linked_dir() -> tempfile::TempDir {
    let dir = Provbox::serving(&[("CP-8831-3PCC.cfg", "<flat-profile/>\n")]);
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real/config.yaml", dir.path().join("config.yaml")).unwrap();
    dir
}

#[test]
fn good_reload_applies_bad_reload_keeps_serving_and_both_are_counted() {
    crate::support::needs!("curl");
    // config.yaml is a symlink into real/, which the file watcher does not see: SIGHUP and
    // `provbox reload` are tested alone first. Step 5 replaces the link to test the watcher.
    let dir = linked_dir();
    let (a, b, m) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let mut pb = Provbox::start(dir, &config(a, m, 64));
    let cfg_path = pb.path().join("config.yaml");
    let cfg = cfg_path.to_str().unwrap().to_string();
    let url_a = format!("http://127.0.0.1:{a}/CP-8831-3PCC.cfg");
    let url_b = format!("http://127.0.0.1:{b}/CP-8831-3PCC.cfg");
    assert_eq!(status(&url_a), "200");

    // The first-run banner on stdout tells what to give phones.
    let log = pb.log();
    assert!(log.contains("Give phones:"), "{log}");
    assert!(log.contains(&format!(":{a}/CP-8831-3PCC.cfg")), "{log}");

    // 1. A bad file (unknown key) via SIGHUP: refused, counted, old config keeps serving.
    let real = pb.path().join("real/config.yaml");
    std::fs::write(
        &real,
        config(b, m, 64).replace(
            "enabled: true\n  listen: [\"127",
            "enabeld: true\n  listen: [\"127",
        ),
    )
    .unwrap();
    pb.reload();
    pb.wait_for_log("reload refused", Duration::from_secs(10));
    assert!(
        pb.log().contains("enabeld"),
        "the error names the key:\n{}",
        pb.log()
    );
    assert_eq!(status(&url_a), "200", "old config stopped serving");
    assert_eq!(status(&url_b), "000");
    assert_eq!(metric(m, "invalid"), 1);

    // 2. `provbox reload` with a bad file: refused before anything is sent, line named.
    let (code, out) = support::provbox(&["reload", "--config", &cfg]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(":4:") && out.contains("not sent"), "{out}");
    assert_eq!(status(&url_a), "200");

    // 3. A good file via `provbox reload`: the listener moves, limits change, ok counted.
    std::fs::write(&real, config(b, m, 8)).unwrap();
    let (code, out) = support::provbox(&["reload", "--config", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reload ok: restarted: http"), "{out}");
    assert_eq!(status(&url_b), "200");
    assert_eq!(status(&url_a), "000", "the old listener still answers");
    assert_eq!(metric(m, "ok"), 1);
    assert_eq!(metric(m, "invalid"), 1);

    // 4. Reload with nothing changed restarts nothing (the metrics listener stayed up all
    //    along: the counters above survived every reload).
    let (code, out) = support::provbox(&["reload", "--config", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("restarted: nothing"), "{out}");
    assert_eq!(metric(m, "ok"), 2);

    // 5. An edit of the file is enough: picked up by the watcher, no signal.
    write_config(&pb, &config(a, m, 8));
    wait_until("the file-change reload", || status(&url_a) == "200");
    assert_eq!(status(&url_b), "000");
    assert!(pb.log().contains("file change"), "{}", pb.log());
    assert_eq!(metric(m, "ok"), 3);
    // A broken edit through the watcher: counted, old listener untouched.
    write_config(&pb, "catalog: [\n");
    wait_until("the refused file-change reload", || {
        metric(m, "invalid") == 2
    });
    assert_eq!(status(&url_a), "200");

    assert_eq!(pb.signal_and_wait("TERM"), Some(0));
}

/// A TCP connection with a small receive buffer, so that a client that stops reading
/// really stalls the server's send (loopback autotuning would otherwise buffer megabytes).
fn slow_reader(port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own until TcpStream takes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 8192;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn transfer_in_flight_finishes_when_its_listener_moves() {
    crate::support::needs!("curl");
    use std::io::{Read, Write};
    let dir = Provbox::dir();
    // Larger than the server's socket send buffer (4 MiB here) plus the client's window.
    let big: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(dir.path().join("files/firmware.bin"), &big).unwrap();
    std::fs::write(dir.path().join("files/probe.cfg"), "probe\n").unwrap();
    let (a, b, m) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let pb = Provbox::start(dir, &config(a, m, 64));
    let mut conn = slow_reader(a);
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"GET /firmware.bin HTTP/1.1\r\nHost: x\r\nUser-Agent: slow-phone\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 256 * 1024];
    conn.read_exact(&mut got).unwrap();
    // The client stops reading; the listener moves.
    write_config(&pb, &config(b, m, 64));
    wait_until("the new listener", || {
        status(&format!("http://127.0.0.1:{b}/probe.cfg")) == "200"
    });
    assert_eq!(status(&format!("http://127.0.0.1:{a}/probe.cfg")), "000");
    let done_line = format!("path=/firmware.bin status=200 bytes={}", big.len());
    let slow_done = |log: &str| {
        log.lines()
            .any(|l| l.contains(&done_line) && l.contains("slow-phone"))
    };
    assert!(
        !slow_done(&pb.log()),
        "the slow transfer finished before the restart; the test proves nothing"
    );
    // Now it reads on: the whole file arrives over the old listener's connection.
    conn.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got[..200]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        got[body_at..] == big[..],
        "the moved listener cut the transfer"
    );
    wait_until("the access line of the slow transfer", || {
        slow_done(&pb.log())
    });
}

/// HTTPS hot-applies new certificate paths; a certificate that cannot be used leaves the
/// old one serving and the reload counts as `partial`.
#[test]
fn https_certificate_paths_apply_on_reload() {
    crate::support::needs!("curl");
    let dir = Provbox::serving(&[("CP-8831-3PCC.cfg", "<flat-profile/>\n")]);
    let base = dir.path().to_path_buf();
    for (name, host) in [("a", "a.lab.test"), ("b", "b.lab.test")] {
        let (code, out) = support::provbox(&[
            "cert",
            "lab-ca",
            "--config",
            "/dev/null",
            "--names",
            host,
            "--out",
            base.join(name).to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}");
    }
    std::fs::create_dir(base.join("c")).unwrap();
    std::fs::write(base.join("c/server.pem"), "not a certificate\n").unwrap();
    std::fs::copy(base.join("a/server.key"), base.join("c/server.key")).unwrap();
    // Through a symlink the watcher does not see: each reload below is exactly one.
    std::fs::create_dir(base.join("real")).unwrap();
    std::os::unix::fs::symlink("real/config.yaml", base.join("config.yaml")).unwrap();
    let (port, m) = (free_tcp_port(), free_tcp_port());
    let yaml = |which: &str| {
        format!(
            "catalog:\n  roots: [files]\nhttps:\n  enabled: true\n  listen: [\"127.0.0.1:{port}\"]\n  cert: {which}/server.pem\n  key: {which}/server.key\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{m}\n"
        )
    };
    let pb = Provbox::start(dir, &yaml("a"));
    let fetch = |host: &str, ca: &str| {
        support::run(
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "5",
                "--resolve",
                &format!("{host}:{port}:127.0.0.1"),
                "--cacert",
                base.join(ca).join("ca.pem").to_str().unwrap(),
                &format!("https://{host}:{port}/CP-8831-3PCC.cfg"),
            ],
        )
        .status
        .success()
    };
    assert!(fetch("a.lab.test", "a"));
    assert!(!fetch("b.lab.test", "b"));
    let cfg = pb.path().join("config.yaml");
    let real = pb.path().join("real/config.yaml");
    std::fs::write(&real, yaml("b")).unwrap();
    let (code, out) = support::provbox(&["reload", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("restarted: https"), "{out}");
    assert!(fetch("b.lab.test", "b"));
    assert!(!fetch("a.lab.test", "a"));
    assert_eq!(metric(m, "ok"), 1);
    // An unusable certificate: partial reload, b keeps serving.
    let (code, out) = {
        std::fs::write(&real, yaml("c")).unwrap();
        support::provbox(&["reload", "--config", cfg.to_str().unwrap()])
    };
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("reload partial") && out.contains("https"),
        "{out}"
    );
    assert!(fetch("b.lab.test", "b"));
    assert_eq!(metric(m, "partial"), 1);
}

/// Restarting a listener on the same address (a limits change) hands the socket over:
/// clients that connect all through twenty reloads are never refused or dropped.
#[test]
fn no_connection_is_refused_while_a_listener_restarts() {
    crate::support::needs!("curl");
    let dir = linked_dir();
    let (a, m) = (free_tcp_port(), free_tcp_port());
    let pb = Provbox::start(dir, &config(a, m, 64));
    let cfg = pb.path().join("config.yaml");
    let url = format!("http://127.0.0.1:{a}/CP-8831-3PCC.cfg");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Three clients in a loop (bounded: at most 2000 requests each).
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                for _ in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    match status(&url).as_str() {
                        "200" => ok += 1,
                        other => failed.push(other.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let sizes = [8, 16, 32, 48, 64];
    for i in 0..20 {
        let max = sizes[i % sizes.len()];
        std::fs::write(pb.path().join("real/config.yaml"), config(a, m, max)).unwrap();
        let (code, out) = support::provbox(&["reload", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("restarted: http"), "{out}");
        assert_eq!(metric(m, "ok"), i as u64 + 1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    eprintln!(
        "{ok} requests answered across 20 listener restarts, {} failed",
        failed.len()
    );
    assert!(ok > 0);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
}
