//! Issue 12, item 5: `syslog.forward_file` against senders on a hostile LAN. A line cannot
//! forge other lines (control characters are escaped), and the file has a cap with one
//! rotated file kept.

use crate::bench_kit::Bench;
use crate::support::{self, Provbox, free_tcp_port, free_udp_port};

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

/// Wait (bounded) until `file` contains `needle`; returns its text.
fn wait_for_text(file: &Path, needle: &str, log: impl Fn() -> String) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "`{needle}` never reached {}; it holds:\n{text}\n{}",
            file.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn embedded_newlines_become_one_escaped_line() {
    crate::support::needs!("logger");
    let b = Bench::start(&[], "");
    let file = b.p.path().join("syslog.log");
    // util-linux logger sends its argument as one message, newline and all.
    b.logger(
        "--rfc3164",
        "SPA504G 000e08000c01 -- hello\n10.9.9.9 <13>FORGED by logger",
    );
    // A raw datagram: CRLF, a lone CR, an escape sequence, NUL, a C1 CSI and a backslash.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(
        b"<13>raw one\r\n127.0.0.1 <13>FORGED raw\rback\x1b[2Jred\x00nul\xc2\x9bcsi\\n end\r\n",
        ("127.0.0.1", b.udp),
    )
    .unwrap();
    b.logger("--rfc3164", "the last line");
    let text = wait_for_text(&file, "the last line", || b.p.log());
    let text = if text.contains("raw one") {
        text
    } else {
        // UDP has no order between senders: wait for the raw datagram as well.
        wait_for_text(&file, "raw one", || b.p.log())
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one line per message:\n{text}");
    assert!(
        lines.iter().all(|l| l.starts_with("127.0.0.1 <13>")),
        "{text}"
    );
    assert!(!text.contains("\n10.9.9.9") && !text.contains("\n127.0.0.1 <13>FORGED"));
    let by_logger = lines.iter().find(|l| l.contains("hello")).unwrap();
    assert!(
        by_logger.ends_with("hello\\n10.9.9.9 <13>FORGED by logger"),
        "{by_logger}"
    );
    let raw = lines.iter().find(|l| l.contains("raw one")).unwrap();
    assert!(
        raw.ends_with(
            "<13>raw one\\r\\n127.0.0.1 <13>FORGED raw\\rback\\x1b[2Jred\\x00nul\\u{9b}csi\\\\n end"
        ),
        "{raw}"
    );
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "no control character but the line ends: {text:?}"
    );
}

#[test]
fn forward_file_rotates_at_its_cap_keeping_one_previous_file() {
    crate::support::needs!("curl");
    let (udp, metrics) = (free_udp_port(), free_tcp_port());
    let dir = Provbox::dir();
    let p = Provbox::start(
        dir,
        &format!(
            "data_dir: data
catalog:
  roots: [files]
metrics:
  enabled: true
  listen: 127.0.0.1:{metrics}
syslog:
  enabled: true
  listen: 127.0.0.1:{udp}
  forward_file: phones.log
  forward_max: 4KiB
"
        ),
    );
    let file = p.path().join("phones.log");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    // 300 numbered lines of 101 bytes (as written): about seven files' worth. Sent in
    // batches, each waited for, so no datagram is lost to a full socket buffer.
    let line = |i: usize| format!("<13>phone: line {i:04} {}", "x".repeat(69));
    for batch in 0..10 {
        for i in batch * 30..(batch + 1) * 30 {
            s.send_to(line(i).as_bytes(), ("127.0.0.1", udp)).unwrap();
        }
        let last = line(batch * 30 + 29);
        wait_for_text(&file, &last, || p.log());
    }
    let cur = std::fs::read_to_string(&file).unwrap();
    let prev = std::fs::read_to_string(p.path().join("phones.log.1")).unwrap();
    assert!(cur.len() <= 4096, "{}", cur.len());
    assert!(
        prev.len() <= 4096 && prev.len() > 4096 - 100,
        "rotated when the next line would pass the cap: {}",
        prev.len()
    );
    assert!(!p.path().join("phones.log.2").exists(), "one previous file");
    let numbers = |t: &str| -> Vec<usize> {
        t.lines()
            .map(|l| {
                assert_eq!(l.len(), 100, "{l}");
                l["127.0.0.1 <13>phone: line ".len()..][..4]
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let all: Vec<usize> = numbers(&prev).into_iter().chain(numbers(&cur)).collect();
    let first = all[0];
    assert_eq!(
        all,
        (first..300).collect::<Vec<_>>(),
        "the newest lines, in order, none lost across the rotation"
    );
    let m = support::scrape(metrics);
    assert_eq!(
        support::metric(&m, "provbox_syslog_forward_rotations_total"),
        7.0,
        "{m}"
    );
    assert_eq!(
        support::metric(&m, "provbox_syslog_forward_dropped_total"),
        0.0
    );
}
