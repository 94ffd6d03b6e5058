//! TFTP on a hostile LAN (issue 12, item 1): a host that floods requests asking for long
//! timeouts, never acknowledges, or asks for netascii copies of large files must neither
//! lock phones out nor cost more than a few packets and a block of memory per request.

use crate::support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::dedupe::netns_tftp_get;
use support::netns::Lab;
use support::tftp::{TftpServer, raw_client as client, read, rrq};
use support::{Provbox, metric};

const PROFILE: &[u8] =
    b"<flat-profile>\n  <Profile_Rule>tftp://prov/$MA.cfg</Profile_Rule>\n</flat-profile>\n";

fn ack(block: u16) -> Vec<u8> {
    let b = block.to_be_bytes();
    vec![0, 4, b[0], b[1]]
}

use support::output_text as text;

/// The options of an OACK, in order.
fn oack_options(p: &[u8]) -> Vec<(String, String)> {
    assert_eq!(&p[..2], b"\0\x06", "not an OACK: {p:?}");
    let fields: Vec<String> = p[2..]
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    fields
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect()
}

/// provbox with TFTP on 127.0.0.1 and metrics, serving `files`.
fn start(files: &[(&str, &[u8])], tftp_extra: &str) -> TftpServer {
    TftpServer::start("127.0.0.1", files, tftp_extra)
}

/// Everything that arrives on `s` until `done()` holds (checked between packets), then
/// for `settle` more.
fn collect(s: &UdpSocket, done: impl Fn() -> bool, settle: Duration) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 70000];
    let start = Instant::now();
    let mut until: Option<Instant> = None;
    loop {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        match until {
            Some(t) if Instant::now() > t => return got,
            None if done() => until = Some(Instant::now() + settle),
            _ => {}
        }
        assert!(start.elapsed() < Duration::from_secs(60), "unbounded wait");
    }
}

/// Everything the server sends `c` until its transfer's log line is written, and for
/// 600 ms after (retransmissions).
fn collect_transfer(s: &TftpServer, c: &UdpSocket) -> Vec<Vec<u8>> {
    let port = c.local_addr().unwrap().port().to_string();
    let peer = format!("peer=127.0.0.1:{port} ");
    collect(
        c,
        || {
            s.pb.log()
                .lines()
                .any(|l| l.contains("tftp transfer") && l.contains(&peer))
        },
        Duration::from_millis(600),
    )
}

#[test]
fn a_flood_of_unacknowledged_timeout_255_requests_does_not_lock_out_a_phone() {
    crate::support::needs!(root, "atftp", "curl", "ip", "tftp");
    support::require("tftp");
    support::require("atftp");
    support::require("curl");
    let lab = Lab::new();
    let srv = lab.ns("s");
    let host = lab.ns("a");
    let phone = lab.ns("p");
    lab.bridge(&srv, Some("198.18.0.1/24"));
    lab.attach(&srv, &host, Some("198.18.0.2/24"));
    lab.attach(&srv, &phone, Some("198.18.0.3/24"));
    let dir = Provbox::serving(&[("phone.cfg", PROFILE)]);
    // Every TFTP limit at its default: the defaults are what must hold.
    let yaml = "data_dir: data\ncatalog:\n  roots: [files]\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:9100\ntftp:\n  enabled: true\n  listen: 0.0.0.0:69\n";
    let pb = Provbox::start_with(dir, yaml, &srv.prefix());

    // 1,100 read requests asking timeout 255, each a distinct request (its blksize), from
    // one socket that stays open (no ICMP ends the transfers) and never acknowledges.
    let flood_started = Instant::now();
    let _flooder = host.enter(|| {
        let s = UdpSocket::bind("198.18.0.2:0").unwrap();
        for i in 0..1100u32 {
            let blksize = (512 + i).to_string();
            let req = rrq(
                "phone.cfg",
                "octet",
                &[("timeout", "255"), ("blksize", &blksize)],
            );
            s.send_to(&req, "198.18.0.1:69").unwrap();
            // Paced so the listener's receive buffer takes them all.
            if i % 5 == 4 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        s
    });

    // A phone on another host gets its file at once, with both clients.
    assert_eq!(
        netns_tftp_get(&phone, "phone.cfg", pb.path()).as_deref(),
        Ok(PROFILE),
        "tftp-hpa after the flood"
    );
    let atftp_out = pb.path().join("atftp.cfg");
    let o = phone.run(&[
        "atftp",
        "-g",
        "-r",
        "phone.cfg",
        "-l",
        atftp_out.to_str().unwrap(),
        "198.18.0.1",
        "69",
    ]);
    assert_eq!(
        read(&atftp_out),
        PROFILE,
        "atftp after the flood: {}",
        text(&o)
    );

    // The flooding host held at most its 8 slots, and they end after 3 silent sends each.
    let metrics = || srv.exec(&["curl", "-s", "http://127.0.0.1:9100/metrics"]);
    let start = Instant::now();
    while metric(&metrics(), "provbox_transfers_in_flight{protocol=\"tftp\"}") > 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the flood's transfers never ended:\n{}",
            metrics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = pb.log();
    let from_host: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tftp transfer") && l.contains("peer=198.18.0.2:"))
        .collect();
    let ran = from_host
        .iter()
        .filter(|l| l.contains("outcome=\"timeout\""))
        .count();
    assert!(
        (1..=8).contains(&ran),
        "{ran} transfers ran for the flooding host"
    );
    assert!(
        from_host.iter().all(|l| !l.contains("outcome=\"ok\"")),
        "a never-acknowledged transfer finished"
    );
    let m = metrics();
    let refused = metric(
        &m,
        "provbox_refusals_total{protocol=\"tftp\",reason=\"per_ip_limit\"}",
    );
    eprintln!("per_ip_limit refusals: {refused}, transfers run: {ran}");
    // Paced, all 1,092 arrive on a quiet machine; half is the floor under heavy load.
    assert!(
        refused >= 500.0,
        "{refused} per-address refusals counted:\n{m}"
    );
    assert_eq!(
        metric(
            &m,
            "provbox_refusals_total{protocol=\"tftp\",reason=\"busy\"}"
        ),
        0.0,
        "the server ran out of slots:\n{m}"
    );
    // Over a thousand refusals, a handful of warnings: at most one per 10 s.
    let warnings = log
        .lines()
        .filter(|l| l.contains("too many transfers from one address"))
        .count();
    let allowed = 1 + flood_started.elapsed().as_secs() as usize / 10;
    assert!(
        (1..=allowed).contains(&warnings),
        "{warnings} per-address warnings (allowed {allowed})"
    );
    assert!(
        log.contains("held_back="),
        "the warning counts what it held back"
    );
}

#[test]
fn a_silent_request_costs_at_most_three_packets() {
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    // retries 5: a phone that acknowledged once gets 5 retransmissions; a silent peer 2.
    let s = start(&[("fw.bin", &body)], "  timeout: 200ms\n  retries: 5\n");
    for (n, opts) in [
        (1, vec![]),
        (
            2,
            vec![("blksize", "1468"), ("windowsize", "16"), ("tsize", "0")],
        ),
    ] {
        let c = client();
        c.send_to(&rrq("fw.bin", "octet", &opts), s.addr()).unwrap();
        let got = collect_transfer(&s, &c);
        let bytes: usize = got.iter().map(Vec::len).sum();
        assert_eq!(
            got.len(),
            3,
            "request {n}: a silent peer got {} packets ({bytes} bytes)",
            got.len()
        );
        assert!(
            got.iter().all(|p| *p == got[0]),
            "request {n}: not one packet resent"
        );
        assert!(
            bytes <= 3 * 1024,
            "request {n}: {bytes} bytes to a silent peer"
        );
        let peer = format!("peer=127.0.0.1:{} ", c.local_addr().unwrap().port());
        let line = s.wait_log_line(&[&peer]);
        assert!(line.contains("outcome=\"timeout\""), "{line}");
        assert!(line.contains("retransmits=2"), "{line}");
    }
    // A client that acknowledges still gets the configured retries afterwards.
    let c = client();
    c.send_to(&rrq("fw.bin", "octet", &[]), s.addr()).unwrap();
    let mut buf = [0u8; 1024];
    let (_, tid) = c.recv_from(&mut buf).unwrap();
    c.send_to(&ack(1), tid).unwrap();
    let got = collect_transfer(&s, &c);
    assert_eq!(got.len(), 6, "DATA 2 and its 5 retransmissions");
    assert!(got.iter().all(|p| p[..4] == *b"\0\x03\0\x02"));
}

#[test]
fn a_timeout_above_max_timeout_is_not_acknowledged() {
    crate::support::needs!("atftp", "curl");
    support::require("atftp");
    let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 253) as u8).collect();
    let s = start(&[("f.bin", &body)], "  timeout: 300ms\n");
    // timeout 255 > max_timeout (5 s): left out of the OACK, the others acknowledged.
    let c = client();
    c.send_to(
        &rrq(
            "f.bin",
            "octet",
            &[("blksize", "1024"), ("timeout", "255"), ("tsize", "0")],
        ),
        s.addr(),
    )
    .unwrap();
    let mut buf = [0u8; 2048];
    let (n, tid) = c.recv_from(&mut buf).unwrap();
    let opts = oack_options(&buf[..n]);
    assert_eq!(
        opts,
        vec![
            ("blksize".to_string(), "1024".to_string()),
            ("tsize".to_string(), "5000".to_string())
        ]
    );
    // The transfer runs on tftp.timeout (300 ms): DATA 1 comes again well before 255 s.
    c.send_to(&ack(0), tid).unwrap();
    let (n1, _) = c.recv_from(&mut buf).unwrap();
    let first = buf[..n1].to_vec();
    assert_eq!(&first[..4], b"\0\x03\0\x01");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (n2, _) = c.recv_from(&mut buf).expect("DATA 1 was not retransmitted");
    assert_eq!(buf[..n2], first[..]);
    let _ = c.send_to(&packet_error(), tid);

    // Within the cap the value is echoed, as RFC 2349 requires.
    let c = client();
    c.send_to(&rrq("f.bin", "octet", &[("timeout", "5")]), s.addr())
        .unwrap();
    let (n, tid) = c.recv_from(&mut buf).unwrap();
    assert_eq!(
        oack_options(&buf[..n]),
        vec![("timeout".to_string(), "5".to_string())]
    );
    let _ = c.send_to(&packet_error(), tid);

    // A real client asking 255 s gets the file (it runs on the server's timeout).
    let out = s.pb.path().join("atftp.bin");
    let o = s.atftp_get(&["timeout 255", "blksize 1024"], "f.bin", &out);
    assert_eq!(read(&out), body, "atftp: {}", text(&o));
    let m = s.metrics();
    assert_eq!(
        metric(&m, "provbox_tftp_options_total{option=\"timeout\"}"),
        1.0,
        "only the in-cap timeout was acknowledged:\n{m}"
    );
}

/// ERROR 0 from the client: ends a transfer the test no longer needs.
fn packet_error() -> Vec<u8> {
    b"\0\x05\0\0done\0".to_vec()
}

/// Text with every kind of line end, at every alignment against 512-byte blocks.
fn text_file(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        i += 1;
        let word = (i * 2654435761) % 97;
        out.extend(std::iter::repeat_n(b'a' + (word % 26) as u8, word as usize));
        out.extend_from_slice(match i % 5 {
            0 => b"\r\n".as_slice(),
            1 => b"\r",
            2 => b"\n\n",
            3 => b"\r\r\n",
            _ => b"\n",
        });
    }
    out.truncate(len);
    out
}

fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/<pid>/status")
}

#[test]
fn a_large_netascii_file_arrives_intact() {
    crate::support::needs!("tftp");
    support::require("tftp");
    const LEN: usize = 6 << 20;
    let body = text_file(LEN);
    let encoded_len = LEN + body.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    let s = start(&[("big.txt", &body)], "  timeout: 2s\n");

    // tftp-hpa turns CR LF and CR NUL back into the original bytes.
    let out = s.pb.path().join("big.txt");
    let o = s.hpa_get("netascii", "big.txt", &out);
    let got = read(&out);
    assert!(
        got == body,
        "netascii round trip differs ({} of {LEN} bytes): {}",
        got.len(),
        text(&o)
    );
    let line = s.wait_log_line(&["file=big.txt", "outcome=\"ok\""]);
    assert!(line.contains(&format!("bytes={encoded_len} ")), "{line}");

    // Eight netascii transfers of it at once (the per-address cap) hold no copy each:
    // the process's anonymous memory grows by far less than one converted file.
    let before = rss_anon_kib(s.pb.pid());
    let clients: Vec<UdpSocket> = (0..8)
        .map(|_| {
            let c = client();
            c.send_to(&rrq("big.txt", "netascii", &[("tsize", "0")]), s.addr())
                .unwrap();
            c
        })
        .collect();
    let mut buf = [0u8; 2048];
    let mut tids = Vec::new();
    for c in &clients {
        let (n, tid) = c.recv_from(&mut buf).unwrap();
        assert_eq!(
            oack_options(&buf[..n]),
            vec![("tsize".to_string(), encoded_len.to_string())]
        );
        tids.push(tid);
    }
    let grew = rss_anon_kib(s.pb.pid()).saturating_sub(before);
    assert!(
        grew < (LEN / 1024 / 2) as u64,
        "eight netascii transfers grew anonymous memory by {grew} KiB (file: {} KiB)",
        LEN / 1024
    );
    for (c, tid) in clients.iter().zip(tids) {
        let _ = c.send_to(&packet_error(), tid);
    }
}
