//! Local DNS against the real binary with real clients (`dig`, `kdig`), on loopback only.

use crate::support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use support::dedupe::{assert_mentions, check_config};
use support::metric;
use support::{Provbox, check_refuses, free_tcp_port, provbox, run};

struct Dns {
    pb: Provbox,
    port: u16,
    metrics: u16,
}

fn yaml(dns: &str, metrics: u16) -> String {
    format!(
        "catalog:\n  roots: [files]\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\ndns:\n  enabled: true\n  listen: [\"127.0.0.1:0\"]\n{dns}"
    )
}

/// Start provbox with this `dns:` body (indented two spaces); the port comes from its log.
fn start(dns: &str) -> Dns {
    let metrics = free_tcp_port();
    let pb = Provbox::start(Provbox::dir(), &yaml(dns, metrics));
    let port = support::dns::port_of(&pb);
    Dns { pb, port, metrics }
}

impl Dns {
    fn dig(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["@127.0.0.1", "-p", &port, "+time=3", "+tries=2"];
        all.extend_from_slice(args);
        let out = run("dig", &all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The answer's records' data, in order.
    fn answers(&self, name: &str, qtype: &str, tcp: bool) -> Vec<String> {
        let mut args = vec![name, qtype, "+short"];
        if tcp {
            args.push("+tcp");
        }
        self.dig(&args)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(String::from)
            .collect()
    }

    fn status(&self, name: &str, qtype: &str, tcp: bool) -> String {
        let mut args = vec![name, qtype, "+noall", "+comments"];
        if tcp {
            args.push("+tcp");
        }
        let text = self.dig(&args);
        text.split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or_else(|| panic!("no status in dig output:\n{text}"))
            .to_string()
    }

    fn metrics(&self) -> String {
        support::scrape(self.metrics)
    }

    fn reload(&mut self, dns: &str) {
        let before = self.pb.log().matches("configuration reloaded").count();
        std::fs::write(self.pb.path().join("config.yaml"), yaml(dns, self.metrics)).unwrap();
        self.pb.reload();
        wait_until("the reload to be logged", || {
            self.pb.log().matches("configuration reloaded").count() > before
                || self.pb.log().contains("reload refused")
        });
    }
}

/// Poll (bounded) until `f` holds; the bound is a hang guard, not a performance claim.
fn wait_until(what: &str, f: impl FnMut() -> bool) {
    support::eventually(what, Duration::from_secs(20), f)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A metric line's value (0 when absent).
const LAB: &str = r#"  zones:
    - name: lab.test
      records:
        - name: prov
          a: [127.0.0.1, 127.0.0.2]
          aaaa: ["fd00::1", "fd00::2"]
        - name: "@"
          a: [127.0.0.9]
"#;

#[test]
fn answers_rotate_and_zone_records_over_udp_and_tcp() {
    crate::support::needs!("curl", "dig", "kdig");
    let dns = start(LAB);
    for tcp in [false, true] {
        // Both A records, and the first one changes between answers.
        let mut firsts = HashSet::new();
        for _ in 0..4 {
            let a = dns.answers("prov.lab.test", "A", tcp);
            assert_eq!(sorted(a.clone()), ["127.0.0.1", "127.0.0.2"], "tcp={tcp}");
            firsts.insert(a[0].clone());
        }
        assert_eq!(firsts.len(), 2, "the order never rotated (tcp={tcp})");
        assert_eq!(
            sorted(dns.answers("prov.lab.test", "AAAA", tcp)),
            ["fd00::1", "fd00::2"]
        );
        let soa = dns.answers("lab.test", "SOA", tcp);
        assert_eq!(soa.len(), 1);
        assert!(
            soa[0].starts_with("ns.lab.test. hostmaster.lab.test. "),
            "{soa:?}"
        );
        assert_eq!(dns.answers("lab.test", "NS", tcp), ["ns.lab.test."]);
        assert_eq!(dns.answers("lab.test", "A", tcp), ["127.0.0.9"]);
        // Outside the zones: refused (not an open resolver); inside but unknown: NXDOMAIN.
        assert_eq!(dns.status("example.com", "A", tcp), "REFUSED");
        assert_eq!(dns.status("nothing.lab.test", "A", tcp), "NXDOMAIN");
        assert_eq!(dns.status("prov.lab.test", "MX", tcp), "NOERROR");
    }
    // Authoritative, EDNS answered with EDNS, and without it without.
    let full = dns.dig(&["prov.lab.test", "A"]);
    assert!(full.contains("flags: qr aa rd;"), "{full}");
    assert!(full.contains("EDNS: version: 0"), "{full}");
    let plain = dns.dig(&["prov.lab.test", "A", "+noedns"]);
    assert!(!plain.contains("OPT PSEUDOSECTION"), "{plain}");
    // A second client implementation over TCP.
    let port = dns.port.to_string();
    let k = run(
        "kdig",
        &[
            "@127.0.0.1",
            "-p",
            &port,
            "+tcp",
            "+short",
            "prov.lab.test",
            "A",
        ],
    );
    let k = String::from_utf8_lossy(&k.stdout);
    assert_eq!(
        sorted(k.lines().map(String::from).collect()),
        ["127.0.0.1", "127.0.0.2"]
    );

    let m = dns.metrics();
    assert_queries(
        &m,
        &[
            ("udp", "A", "NOERROR", 5.0),
            ("tcp", "A", "NOERROR", 5.0),
            ("udp", "A", "REFUSED", 1.0),
            ("tcp", "A", "NXDOMAIN", 1.0),
            ("udp", "SOA", "NOERROR", 1.0),
            ("udp", "MX", "NOERROR", 1.0),
        ],
    );
}

#[test]
fn names_outside_are_forwarded_when_configured() {
    crate::support::needs!("curl", "dig");
    let upstream = start(
        r#"  zones:
    - name: up.test
      records:
        - name: www
          a: [192.0.2.10]
"#,
    );
    let front = start(&format!(
        "  forwarders: [\"127.0.0.1:{}\"]\n  forward_timeout: 2s\n{LAB}",
        upstream.port
    ));
    for tcp in [false, true] {
        assert_eq!(
            front.answers("www.up.test", "A", tcp),
            ["192.0.2.10"],
            "tcp={tcp}"
        );
        assert_eq!(front.status("nothing.up.test", "A", tcp), "NXDOMAIN");
        // Local names are still answered locally.
        assert_eq!(front.answers("lab.test", "A", tcp), ["127.0.0.9"]);
    }
    let m = front.metrics();
    assert!(
        metric(&m, r#"provbox_dns_forwarded_total{result="ok"}"#) >= 4.0,
        "{m}"
    );
    let up = upstream.metrics();
    assert_queries(
        &up,
        &[("udp", "A", "NOERROR", 1.0), ("tcp", "A", "NOERROR", 1.0)],
    );

    // An upstream that does not answer: SERVFAIL, counted, and the server keeps serving.
    let dead = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let lonely = start(&format!(
        "  forwarders: [\"127.0.0.1:{dead}\"]\n  forward_timeout: 300ms\n{LAB}"
    ));
    assert_eq!(lonely.status("www.up.test", "A", false), "SERVFAIL");
    assert_eq!(lonely.answers("lab.test", "A", false), ["127.0.0.9"]);
    let m = lonely.metrics();
    assert!(
        metric(&m, r#"provbox_dns_forwarded_total{result="timeout"}"#)
            + metric(&m, r#"provbox_dns_forwarded_total{result="error"}"#)
            >= 1.0,
        "{m}"
    );
}

/// Asserts that each (transport, qtype, rcode) series counted at least so many queries.
fn assert_queries(m: &str, rows: &[(&str, &str, &str, f64)]) {
    for &(transport, qtype, rcode, min) in rows {
        let series = format!(
            r#"provbox_dns_queries_total{{transport="{transport}",qtype="{qtype}",rcode="{rcode}"}}"#
        );
        assert!(metric(m, &series) >= min, "{series} < {min}\n{m}");
    }
}

/// Listeners on 127.0.0.2 and 127.0.0.3 with the same port, owned by the test.
fn two_listeners() -> (TcpListener, TcpListener, u16) {
    for _ in 0..20 {
        let a = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.3", port)) {
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

#[test]
fn health_checked_address_follows_its_tcp_port() {
    crate::support::needs!("curl", "dig");
    let (a, b, port) = two_listeners();
    let dns = start(&format!(
        r#"  zones:
    - name: lab.test
      records:
        - name: svc
          a: [127.0.0.2, 127.0.0.3]
          check: {{ tcp: {port}, interval: 200ms, timeout: 200ms, fall: 1, rise: 1 }}
"#
    ));
    let both = ["127.0.0.2", "127.0.0.3"];
    assert_eq!(sorted(dns.answers("svc.lab.test", "A", false)), both);

    drop(b);
    wait_until("127.0.0.3 to be left out", || {
        dns.answers("svc.lab.test", "A", false) == ["127.0.0.2"]
    });
    // Every answer now leaves it out, over TCP too.
    for tcp in [false, true] {
        assert_eq!(dns.answers("svc.lab.test", "A", tcp), ["127.0.0.2"]);
    }
    let m = dns.metrics();
    let label =
        |ip: &str| format!(r#"provbox_dns_address_healthy{{address="{ip}",check="tcp:{port}"}}"#);
    assert!(m.contains(&format!("{} 0", label("127.0.0.3"))), "{m}");
    assert!(m.contains(&format!("{} 1", label("127.0.0.2"))), "{m}");

    // All down: answer with all rather than nothing.
    drop(a);
    wait_until("all addresses answered when all are down", || {
        sorted(dns.answers("svc.lab.test", "A", false)) == both
            && dns.metrics().contains(&format!("{} 0", label("127.0.0.2")))
    });

    // Back up: offered again.
    let _b = TcpListener::bind(("127.0.0.3", port)).unwrap();
    wait_until("127.0.0.3 to come back alone", || {
        dns.answers("svc.lab.test", "A", false) == ["127.0.0.3"]
    });
    let _a = TcpListener::bind(("127.0.0.2", port)).unwrap();
    wait_until("both to be offered again", || {
        let m = dns.metrics();
        m.contains(&format!("{} 1", label("127.0.0.2")))
            && m.contains(&format!("{} 1", label("127.0.0.3")))
    });
    assert_eq!(sorted(dns.answers("svc.lab.test", "A", false)), both);
    assert!(
        dns.pb.log().contains("left out of answers"),
        "{}",
        dns.pb.log()
    );
}

#[test]
fn http_health_check_follows_status() {
    crate::support::needs!("dig");
    // A tiny HTTP server the test owns: answers 200 while `ok` is set, 503 after.
    let l = TcpListener::bind("127.0.0.4:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = ok.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(2000) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let status = if flag.load(std::sync::atomic::Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Unavailable"
            };
            let _ =
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
        }
    });
    let dns = start(&format!(
        r#"  zones:
    - name: lab.test
      records:
        - name: web
          a: [127.0.0.4, 127.0.0.5]
          check: {{ http: "http://web.lab.test:{port}/healthz", interval: 200ms, timeout: 200ms, fall: 1 }}
"#
    ));
    // 127.0.0.5 has no server at all: it is left out; 127.0.0.4 answers 200.
    wait_until("only the healthy web server", || {
        dns.answers("web.lab.test", "A", false) == ["127.0.0.4"]
    });
    ok.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("all answered once the 200 turns 503", || {
        dns.answers("web.lab.test", "A", false).len() == 2
    });
}

#[test]
fn records_change_on_reload_without_dropping_queries() {
    crate::support::needs!("curl", "dig");
    let v1 = "  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [10.0.0.1, 10.0.0.2]\n";
    let v2 = "  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [10.0.0.9]\n        - name: new\n          a: [10.0.0.10]\n";
    let mut dns = start(v1);
    assert_eq!(
        sorted(dns.answers("prov.lab.test", "A", false)),
        ["10.0.0.1", "10.0.0.2"]
    );
    assert_eq!(dns.status("new.lab.test", "A", false), "NXDOMAIN");

    // Queries keep flowing while the zones are swapped back and forth: every one gets a
    // whole old or a whole new answer.
    let port = dns.port;
    let asker = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..60 {
            let p = port.to_string();
            let out = run(
                "dig",
                &[
                    "@127.0.0.1",
                    "-p",
                    &p,
                    "+time=3",
                    "+tries=1",
                    "+short",
                    "prov.lab.test",
                    "A",
                ],
            );
            let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect();
            got.sort();
            seen.push(got);
        }
        seen
    });
    for i in 0..6 {
        dns.reload(if i % 2 == 0 { v2 } else { v1 });
    }
    for got in asker.join().unwrap() {
        assert!(
            got == ["10.0.0.1", "10.0.0.2"] || got == ["10.0.0.9"],
            "a query got {got:?} during reloads"
        );
    }
    dns.reload(v2);
    // A file change is noticed by the watcher as well as by SIGHUP: wait for the reload
    // that read v2 rather than for the next "reloaded" line.
    wait_until("the v2 records", || {
        dns.answers("prov.lab.test", "A", true) == ["10.0.0.9"]
    });
    assert_eq!(dns.answers("new.lab.test", "A", false), ["10.0.0.10"]);

    // A bad file is refused and the running zones stay.
    dns.reload("  zones:\n    - name: lab.test\n      records:\n        - name: prov\n");
    assert!(dns.pb.log().contains("reload refused"), "{}", dns.pb.log());
    assert_eq!(dns.answers("prov.lab.test", "A", false), ["10.0.0.9"]);
    assert!(metric(&dns.metrics(), "provbox_dns_zone_swaps_total") >= 8.0);
}

#[test]
fn bad_dns_config_is_refused_with_line_and_field() {
    let (_dir, cfg, out) = check_refuses(
        r#"catalog:
  roots: [files]
dns:
  enabled: true
  listen: ["127.0.0.1:5353"]
  forwarders: ["127.0.0.1:5353"]
  zones:
    - name: lab.test
      records:
        - name: prov
          a: [127.0.0.1]
          check: { tcp: 80, http: "http://x/" }
        - name: empty
        - name: "bad..name"
          a: [127.0.0.1]
"#,
    );
    assert!(
        out.contains(":6:") && out.contains("dns.forwarders[0]") && out.contains("forwarding loop"),
        "{out}"
    );
    assert_mentions(
        &out,
        &[
            (":12:", "dns.zones[0].records[0].check"),
            (":13:", "has no addresses"),
            (":14:", "dns.zones[0].records[2].name"),
        ],
    );

    // A wrong type names its line too.
    let (code, out) = check_config(
        &cfg,
        "catalog:\n  roots: [files]\ndns:\n  enabled: true\n  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [not-an-ip]\n",
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(":9:"), "{out}");

    // The shipped config is valid and listens for DNS on 5300.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml");
    let (code, out) = provbox(&["check", "--config", shipped]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dns.listen[0]") && out.contains(":5300"),
        "{out}"
    );
}

#[test]
fn garbage_is_dropped_and_service_continues() {
    crate::support::needs!("curl", "dig");
    let dns = start(LAB);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", dns.port);
    // Too short for a header.
    udp.send_to(&[1, 2, 3], to).unwrap();
    // A header promising a question that is not there.
    udp.send_to(
        &[
            0xab, 0xcd, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff,
        ],
        to,
    )
    .unwrap();
    // A response sent as if it were a query (reflection bait).
    let mut resp = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["prov", "lab", "test"] {
        resp.push(label.len() as u8);
        resp.extend_from_slice(label.as_bytes());
    }
    resp.extend_from_slice(&[0, 0, 1, 0, 1]);
    udp.send_to(&resp, to).unwrap();
    // Random noise, bounded.
    let mut x: u32 = 0x1234_5678;
    for i in 0..200 {
        let len = 12 + (i % 60);
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        udp.send_to(&junk, to).unwrap();
    }
    // TCP: garbage after a length prefix, then a connection cut mid-message.
    {
        let mut t = TcpStream::connect(to).unwrap();
        t.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
        let mut buf = [0u8; 16];
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(
            t.read(&mut buf).unwrap(),
            0,
            "connection not closed after garbage"
        );
    }
    {
        let mut t = TcpStream::connect(to).unwrap();
        t.write_all(&[0, 40, 1, 2, 3]).unwrap();
    }
    for tcp in [false, true] {
        assert_eq!(
            sorted(dns.answers("prov.lab.test", "A", tcp)),
            ["127.0.0.1", "127.0.0.2"]
        );
    }
    let m = dns.metrics();
    wait_until("the cut TCP connection to be counted", || {
        metric(
            &dns.metrics(),
            r#"provbox_dns_dropped_total{transport="tcp",reason="incomplete"}"#,
        ) >= 1.0
    });
    assert!(
        metric(
            &m,
            r#"provbox_dns_dropped_total{transport="udp",reason="short"}"#
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"provbox_dns_dropped_total{transport="udp",reason="malformed"}"#
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"provbox_dns_dropped_total{transport="udp",reason="not_a_query"}"#
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"provbox_dns_dropped_total{transport="tcp",reason="short"}"#
        ) >= 1.0,
        "{m}"
    );
    assert!(dns.pb.child.is_some());
}

/// Plain queries (no EDNS cookie) are answered from the answer cache after the first few:
/// the answers must stay whole, keep rotating, follow health changes and reloads, and be
/// counted like any other.
#[test]
fn cached_answers_rotate_follow_health_and_are_counted() {
    crate::support::needs!("curl", "dig");
    let l2 = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = l2.local_addr().unwrap().port();
    let l3 = std::net::TcpListener::bind(("127.0.0.3", port)).unwrap();
    let zone = format!(
        "  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [127.0.0.2, 127.0.0.3]\n          check: {{tcp: {port}, interval: 200ms, timeout: 100ms, fall: 1, rise: 1}}\n"
    );
    let mut dns = start(&zone);
    let plain = |dns: &Dns, tcp: bool| {
        let mut args = vec!["prov.lab.test", "A", "+short", "+noedns"];
        if tcp {
            args.push("+tcp");
        }
        dns.dig(&args)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
    };
    for tcp in [false, true] {
        // With two addresses and nobody else asking, every answer flips the order: the
        // first few come from the normal path (filling the cache), the rest from the cache.
        let mut last: Option<String> = None;
        for i in 0..12 {
            let a = plain(&dns, tcp);
            assert_eq!(sorted(a.clone()), ["127.0.0.2", "127.0.0.3"], "tcp={tcp}");
            if let Some(prev) = &last {
                assert_ne!(prev, &a[0], "answer {i} did not rotate (tcp={tcp})");
            }
            last = Some(a[0].clone());
        }
    }
    // A health change is seen through the cache.
    drop(l3);
    wait_until("127.0.0.3 left out of cached answers", || {
        plain(&dns, false) == ["127.0.0.2"] && plain(&dns, false) == ["127.0.0.2"]
    });
    // So is a reload.
    dns.reload("  zones:\n    - name: lab.test\n      records:\n        - name: prov\n          a: [10.0.0.9]\n");
    wait_until("the reloaded record through the cache", || {
        plain(&dns, false) == ["10.0.0.9"]
    });
    drop(l2);
    let m = dns.metrics();
    let udp_a: u64 = m
        .lines()
        .filter(|l| {
            l.starts_with("provbox_dns_queries_total{")
                && l.contains("transport=\"udp\"")
                && l.contains("qtype=\"A\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(udp_a >= 12, "cached answers not counted:\n{m}");
}
