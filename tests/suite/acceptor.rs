//! The one TCP acceptor behind every TCP listener: per-address caps (HTTP, DNS), idle and
//! write timeouts (DNS, syslog), and running out of file descriptors. Real clients (curl,
//! dig) on loopback; other client addresses are other 127.0.0.x source addresses.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::{Provbox, free_tcp_port, metric, run};

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

use support::{eventually, scrape};

/// curl's status code for `url` from source address `from` ("000" when no answer).
fn curl_from(from: &str, url: &str) -> String {
    support::http_code(&["--interface", from], url)
}

/// Until `conn` is closed by the other end (EOF or reset), reading at most `bound`; true
/// when it was closed.
fn closed_within(conn: &mut TcpStream, bound: Duration) -> bool {
    conn.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn http_per_address_cap_refuses_one_address_and_serves_the_others() {
    crate::support::needs!("curl");
    let (http, metrics) = (free_tcp_port(), free_tcp_port());
    let dir = Provbox::serving(&[("a.cfg", "hello\n")]);
    let pb = Provbox::start(
        dir,
        &format!(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{http}\"]\n  limits:\n    max_connections_per_ip: 2\n    header_timeout: 60s\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\n"
        ),
    );
    let to = SocketAddr::from(([127, 0, 0, 1], http));
    let url = format!("http://127.0.0.1:{http}/a.cfg");
    // 127.0.0.2 holds its two connections, each having fetched once (so both are served).
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = connect_from([127, 0, 0, 2], to);
            c.write_all(b"GET /a.cfg HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 256];
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            c
        })
        .collect();
    // A third from the same address is refused with a 503; other addresses are served.
    assert_eq!(curl_from("127.0.0.2", &url), "503");
    assert_eq!(curl_from("127.0.0.3", &url), "200");
    assert_eq!(curl_from("127.0.0.4", &url), "200");
    let m = scrape(metrics);
    let series = format!(
        "provbox_connections_refused_total{{listener=\"http:127.0.0.1:{http}\",reason=\"per_ip_limit\"}}"
    );
    assert_eq!(metric(&m, &series), 1.0, "{m}");
    assert!(pb.log().contains("connection refused"), "{}", pb.log());
    // Closing one gives the address its slot back.
    held.pop();
    eventually(
        "127.0.0.2 to be served again",
        Duration::from_secs(10),
        || curl_from("127.0.0.2", &url) == "200",
    );
    drop(held);
}

const ZONE: &str = "  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [127.0.0.1]\n";

/// A `dns:` section on a fixed port with these `tcp_limits` (and the zone `zone`), and a
/// metrics listener; returns (provbox, dns port, metrics port).
fn dns_box(limits: &str, zone: &str, extra: &str) -> (Provbox, u16, u16) {
    let (dns, metrics) = (free_tcp_port(), free_tcp_port());
    let pb = Provbox::start(
        Provbox::dir(),
        &format!(
            "catalog:\n  roots: [files]\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\ndns:\n  enabled: true\n  listen: [\"127.0.0.1:{dns}\"]\n  tcp_limits:\n{limits}{zone}{extra}"
        ),
    );
    (pb, dns, metrics)
}

fn dig_tcp_from(from: &str, port: u16) -> Vec<String> {
    let out = run(
        "dig",
        &[
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "-b",
            from,
            "+tcp",
            "+time=3",
            "+tries=1",
            "+short",
            "prov.lab.test",
            "A",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(String::from)
        .collect()
}

#[test]
fn dns_tcp_per_address_cap_refuses_one_address_and_serves_the_others() {
    crate::support::needs!("curl", "dig");
    let (pb, port, metrics) = dns_box("    max_connections_per_ip: 2\n", ZONE, "");
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let held: Vec<TcpStream> = (0..2).map(|_| connect_from([127, 0, 0, 2], to)).collect();
    // Both held connections are admitted before dig's arrives.
    eventually(
        "the held connections to be admitted",
        Duration::from_secs(5),
        || dig_tcp_from("127.0.0.3", port) == ["127.0.0.1"],
    );
    assert_eq!(dig_tcp_from("127.0.0.2", port), Vec::<String>::new());
    assert_eq!(dig_tcp_from("127.0.0.4", port), ["127.0.0.1"]);
    let m = scrape(metrics);
    let series = format!(
        "provbox_connections_refused_total{{listener=\"dns:127.0.0.1:{port}\",reason=\"per_ip_limit\"}}"
    );
    assert!(metric(&m, &series) >= 1.0, "{m}");
    drop(held);
    eventually(
        "127.0.0.2 to be served again",
        Duration::from_secs(10),
        || dig_tcp_from("127.0.0.2", port) == ["127.0.0.1"],
    );
    drop(pb);
}

#[test]
fn silent_dns_and_syslog_tcp_connections_are_closed_by_the_idle_timeout() {
    let (syslog_udp, syslog_tcp) = (free_tcp_port(), free_tcp_port());
    let (pb, dns, _) = dns_box(
        "    idle_timeout: 1s\n",
        ZONE,
        &format!(
            "syslog:\n  enabled: true\n  listen: 127.0.0.1:{syslog_udp}\n  tcp_listen: 127.0.0.1:{syslog_tcp}\n  tcp_limits:\n    idle_timeout: 1s\n"
        ),
    );
    for port in [dns, syslog_tcp] {
        let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The bound is far above the 1 s timeout and far below anything else that could
        // close the connection (DNS used to wait 10 s; syslog never closed one).
        assert!(
            closed_within(&mut silent, Duration::from_secs(6)),
            "a silent connection to port {port} stayed open"
        );
    }
    // A talking syslog relay is not cut off: a line every half second for 3 s.
    let mut relay = TcpStream::connect(("127.0.0.1", syslog_tcp)).unwrap();
    for i in 0..6 {
        relay
            .write_all(format!("<14>relay line {i}\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    relay.write_all(b"<14>relay line last\n").unwrap();
    drop(pb);
}

#[test]
fn a_dns_tcp_client_that_stops_reading_is_cut_off() {
    crate::support::needs!("curl", "dig");
    // A name with 200 addresses: each answer is about 3 KiB.
    let mut zone = String::from(
        "  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [127.0.0.1]\n        - name: big\n          a: [",
    );
    let addrs: Vec<String> = (0..200)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
        .collect();
    zone.push_str(&addrs.join(", "));
    zone.push_str("]\n");
    let (pb, port, metrics) = dns_box("    write_timeout: 1s\n    idle_timeout: 60s\n", &zone, "");
    let query = {
        // big.lab.test A, id 0x0101, RD.
        let mut q = vec![0x01, 0x01, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["big", "lab", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        framed
    };
    // Small receive window, then 5,000 pipelined queries (about 15 MiB of answers) and
    // never a byte read.
    let conn = {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        TcpStream::from(s)
    };
    let mut w = conn.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0;
    for _ in 0..5000 {
        if w.write_all(&query).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 100, "only {sent} queries went out");
    let series = r#"provbox_dns_dropped_total{transport="tcp",reason="write_timeout"}"#;
    eventually(
        "the stalled connection to be cut off",
        Duration::from_secs(20),
        || metric(&scrape(metrics), series) >= 1.0,
    );
    // It is closed: reading now ends (in EOF or a reset) instead of yielding all answers.
    let mut r = conn;
    r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < sent * 3000,
        "{got} bytes read: the server answered all {sent} queries"
    );
    // And DNS over TCP still serves everyone else.
    assert_eq!(dig_tcp_from("127.0.0.1", port), ["127.0.0.1"]);
    drop(pb);
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn out_of_file_descriptors_backs_off_and_recovers() {
    crate::support::needs!("curl", "prlimit");
    support::require("prlimit");
    const LIMIT: usize = 256;
    let (http, metrics) = (free_tcp_port(), free_tcp_port());
    let dir = Provbox::serving(&[("a.cfg", "hello\n")]);
    let limit = format!("--nofile={LIMIT}:{LIMIT}");
    let pb = Provbox::start_with(
        dir,
        &format!(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{http}\"]\n  limits:\n    max_connections_per_ip: 100000\n    header_timeout: 120s\n    idle_timeout: 120s\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\n"
        ),
        &["prlimit", &limit, "--"],
    );
    let url = format!("http://127.0.0.1:{http}/a.cfg");
    assert_eq!(curl_from("127.0.0.1", &url), "200");
    // Use up every descriptor provbox has left, and then some that wait in the backlog.
    let spare = LIMIT - fds(pb.pid());
    let held: Vec<TcpStream> = (0..spare + 20)
        .map(|_| TcpStream::connect(("127.0.0.1", http)).unwrap())
        .collect();
    let mut pb = pb;
    pb.wait_for_log("backing off", Duration::from_secs(20));
    assert!(fds(pb.pid()) >= LIMIT - 1);
    // Out of descriptors it keeps retrying (not spinning, not exiting) and says so once.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pb.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "provbox exited:\n{}",
        pb.log()
    );
    drop(held);
    eventually("HTTP to serve again", Duration::from_secs(20), || {
        curl_from("127.0.0.1", &url) == "200"
    });
    let log = pb.log();
    let listener = format!("listener=http:127.0.0.1:{http}");
    let warned = log
        .lines()
        .filter(|l| l.contains("backing off") && l.contains(&listener))
        .count();
    assert_eq!(warned, 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("accepting again") && l.contains(&listener)),
        "{log}"
    );
    let m = scrape(metrics);
    let series = format!(
        "provbox_connections_refused_total{{listener=\"http:127.0.0.1:{http}\",reason=\"out_of_fds\"}}"
    );
    assert!(metric(&m, &series) >= 1.0, "{m}");
    // Nothing that lives on a descriptor broke: a fresh fetch matches the file.
    let out = Command::new("curl").args(["-sS", &url]).output().unwrap();
    assert_eq!(out.stdout, b"hello\n");
}
