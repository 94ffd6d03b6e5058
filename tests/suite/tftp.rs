//! TFTP front end against real clients (tftp-hpa `tftp`, `atftp`, `busybox tftp`) and raw
//! UDP on loopback, driving the real binary.

use crate::support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::dedupe::assert_contains_all;
use support::tftp::{TftpServer, raw_client as raw, read, rrq};

const PROFILE: &[u8] = b"<flat-profile>\n  <Profile_Rule>tftp://prov/$MA.cfg</Profile_Rule>\n  <Text>line\rwith a bare CR</Text>\n</flat-profile>\n";

/// provbox with TFTP on 0.0.0.0 (so every test also exercises IP_PKTINFO), serving
/// `files`, with extra `tftp:` keys.
fn start(files: &[(&str, &[u8])], tftp_extra: &str) -> TftpServer {
    TftpServer::start("0.0.0.0", files, tftp_extra)
}

use support::output_text as text;

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 70000];
    let (n, from) = s.recv_from(&mut buf).expect("no answer from the server");
    (buf[..n].to_vec(), from)
}

/// Packets arriving within `wait`, none expected ones included.
fn drain(s: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let end = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    got
}

fn ack(block: u16) -> Vec<u8> {
    let b = block.to_be_bytes();
    vec![0, 4, b[0], b[1]]
}

fn big_file(len: usize) -> Vec<u8> {
    // Deterministic and not periodic at any block size: a wrong or repeated block shows.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn small_profile_is_byte_exact_with_every_client() {
    crate::support::needs!("atftp", "busybox", "tftp");
    let s = start(&[("profiles/CP-8831-3PCC.cfg", PROFILE)], "");
    let name = "profiles/CP-8831-3PCC.cfg";

    let a = s.out("hpa.cfg");
    let o = s.hpa_get("octet", name, &a);
    assert_eq!(read(&a), PROFILE, "tftp-hpa: {}", text(&o));

    let b = s.out("atftp.cfg");
    let o = s.atftp_get(&[], name, &b);
    assert_eq!(read(&b), PROFILE, "atftp: {}", text(&o));

    let c = s.out("busybox.cfg");
    let o = s.busybox_get(name, &c);
    assert_eq!(read(&c), PROFILE, "busybox: {}", text(&o));

    // Netascii: the server sends CR LF and CR NUL; tftp-hpa turns them back, so the
    // round trip must give the original bytes (a server that skipped the conversion
    // would lose the bare CR's NUL pairing and the client would mangle it).
    let d = s.out("netascii.cfg");
    let o = s.hpa_get("netascii", name, &d);
    assert_eq!(read(&d), PROFILE, "tftp-hpa netascii: {}", text(&o));
    let line = s.wait_transfer(name, "bytes=");
    assert!(line.contains("outcome=\"ok\""), "{line}");

    // Leading slash, as many phones send it.
    let e = s.out("slash.cfg");
    let o = s.hpa(&["-c", "get", &format!("/{name}"), e.to_str().unwrap()]);
    assert_eq!(read(&e), PROFILE, "leading slash: {}", text(&o));
}

#[test]
fn large_file_rollover_blksize_and_windowsize() {
    crate::support::needs!("atftp", "curl", "tftp");
    // 40 MiB: at blksize 512 that is 81921 blocks, so the block number wraps past 65535.
    let body = big_file(40 << 20);
    let s = start(&[("fw.bin", &body)], "");

    let a = s.out("a.bin");
    let o = s.hpa_get("octet", "fw.bin", &a);
    assert!(
        read(&a) == body,
        "blksize 512 (rollover) differs: {}",
        text(&o)
    );
    s.wait_transfer("fw.bin", "blksize=512 windowsize=1");

    let b = s.out("b.bin");
    let o = s.atftp_get(&["blksize 1468"], "fw.bin", &b);
    assert!(read(&b) == body, "blksize 1468 differs: {}", text(&o));
    s.wait_transfer("fw.bin", "blksize=1468 windowsize=1");

    let c = s.out("c.bin");
    let o = s.atftp_get(&["blksize 1468", "windowsize 16"], "fw.bin", &c);
    assert!(read(&c) == body, "windowsize 16 differs: {}", text(&o));
    let line = s.wait_transfer("fw.bin", "blksize=1468 windowsize=16");
    assert!(line.contains("bytes=41943040"), "{line}");

    assert_contains_all(
        &s.metrics(),
        &[
            "provbox_tftp_options_total{option=\"windowsize\"} 1",
            "provbox_tftp_transfers_total{outcome=\"ok\"} 3",
        ],
    );
}

#[test]
fn tsize_is_reported_and_error_8_ends_the_transfer() {
    crate::support::needs!("atftp");
    let s = start(&[("p.cfg", PROFILE)], "  timeout: 300ms\n");
    let out = s.out("p.cfg");
    let o = s.atftp(&[
        "--trace",
        "--option",
        "tsize 0",
        "-g",
        "-r",
        "p.cfg",
        "-l",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(
        t.contains(&format!("received OACK <tsize: {}", PROFILE.len())),
        "atftp did not see tsize {}: {t}",
        PROFILE.len()
    );
    assert_eq!(read(&out), PROFILE);

    // A boot ROM probing the size: RRQ with tsize, then ERROR 8 in answer to the OACK.
    let c = raw();
    c.send_to(&rrq("p.cfg", "octet", &[("tsize", "0")]), s.addr())
        .unwrap();
    let (oack, tid) = recv(&c);
    assert_eq!(oack, format!("\0\x06tsize\0{}\0", PROFILE.len()).as_bytes());
    assert_ne!(
        tid.port(),
        s.port,
        "the transfer must answer from its own port"
    );
    c.send_to(b"\0\x05\0\x08tsize only\0", tid).unwrap();
    // Nothing more: no OACK retransmission, no data (4 server timeouts long).
    let more = drain(&c, Duration::from_millis(1200));
    assert!(
        more.is_empty(),
        "server kept sending after ERROR 8: {more:?}"
    );
    s.wait_transfer("p.cfg", "outcome=\"options_declined\"");
}

#[test]
fn missing_file_is_reported_not_found() {
    crate::support::needs!("atftp", "busybox", "curl", "tftp");
    let s = start(&[("p.cfg", PROFILE)], "");
    let out = s.out("x");
    let o = s.hpa(&["-c", "get", "nothing.cfg", out.to_str().unwrap()]);
    assert!(
        text(&o).contains("Error code 1: File not found"),
        "{}",
        text(&o)
    );
    let o = s.atftp_get(&[], "nothing.cfg", &out);
    assert!(!o.status.success());
    assert!(text(&o).contains("File not found"), "{}", text(&o));
    busybox_refused(
        &s,
        "nothing.cfg",
        "(1) File not found",
        "not_found",
        "provbox_refusals_total{protocol=\"tftp\",reason=\"not_found\"} 3",
    );
}

/// busybox asks for `file` and is told `says`; the server logs that transfer with
/// `outcome` and its metrics then show `refusals` (a whole series line).
fn busybox_refused(s: &TftpServer, file: &str, says: &str, outcome: &str, refusals: &str) {
    let o = s.busybox_get(file, &s.out("x"));
    assert!(text(&o).contains(says), "{}", text(&o));
    s.wait_transfer(file, &format!("outcome=\"{outcome}\""));
    assert_contains_all(&s.metrics(), &[refusals]);
}

#[test]
fn traversal_is_refused_as_access_violation() {
    crate::support::needs!("busybox", "curl", "tftp");
    let s = start(&[("p.cfg", PROFILE)], "");
    let out = s.out("x");
    for path in [
        "../../../etc/passwd",
        "/../etc/passwd",
        "a/../../config.yaml",
    ] {
        let o = s.hpa(&["-c", "get", path, out.to_str().unwrap()]);
        assert!(
            text(&o).contains("Error code 2: Access violation"),
            "{path}: {}",
            text(&o)
        );
        assert!(read(&out).is_empty(), "{path}: bytes were sent");
    }
    busybox_refused(
        &s,
        "../config.yaml",
        "(2) Access violation",
        "access_violation",
        "provbox_refusals_total{protocol=\"tftp\",reason=\"traversal\"} 4",
    );
}

#[test]
fn write_requests_are_refused() {
    crate::support::needs!("atftp", "tftp");
    let s = start(&[("p.cfg", PROFILE)], "");
    let local = s.out("upload.cfg");
    std::fs::write(&local, b"data").unwrap();
    let o = s.hpa(&["-c", "put", local.to_str().unwrap(), "new.cfg"]);
    assert!(
        text(&o).contains("Error code 2: read-only server"),
        "{}",
        text(&o)
    );
    let o = s.atftp(&["-p", "-r", "new.cfg", "-l", local.to_str().unwrap()]);
    assert!(text(&o).contains("read-only server"), "{}", text(&o));
    s.wait_transfer("new.cfg", "outcome=\"write_refused\"");
    assert!(!s.pb.path().join("files/new.cfg").exists());
}

#[test]
fn malformed_packets_are_counted_and_dropped() {
    crate::support::needs!("curl", "tftp");
    let s = start(&[("p.cfg", PROFILE)], "");
    let c = raw();
    let bad: &[(&[u8], &str)] = &[
        (b"\x00", "truncated"),
        (b"\x00\x04\x01", "truncated"),
        (b"\x00\x09hello\x00octet\x00", "bad_opcode"),
        (b"\xff\xff", "bad_opcode"),
        (b"\x00\x01p.cfg", "unterminated"),
        (
            b"\x00\x01p.cfg\x00octet\x00blksize\x00",
            "option_without_value",
        ),
        (b"\x00\x01\xff\xfe\x00octet\x00", "not_text"),
        (b"\x00\x03\x00\x01data", "unexpected_packet"),
    ];
    for (p, _) in bad {
        c.send_to(p, s.addr()).unwrap();
    }
    // None of those gets an answer.
    let got = drain(&c, Duration::from_millis(300));
    assert!(got.is_empty(), "malformed packets were answered: {got:?}");

    // A huge blksize is lowered to the cap, not refused.
    c.send_to(&rrq("p.cfg", "octet", &[("blksize", "100000")]), s.addr())
        .unwrap();
    let (oack, tid) = recv(&c);
    assert_eq!(oack, b"\0\x06blksize\x001468\0");
    c.send_to(&ack(0), tid).unwrap();
    let (data, _) = recv(&c);
    assert_eq!(&data[..4], b"\0\x03\0\x01");
    assert_eq!(&data[4..], PROFILE);
    c.send_to(&ack(1), tid).unwrap();
    s.wait_transfer("p.cfg", "blksize=1468");

    // Still serving real clients.
    let out = s.out("after.cfg");
    let o = s.hpa(&["-c", "get", "p.cfg", out.to_str().unwrap()]);
    assert_eq!(read(&out), PROFILE, "{}", text(&o));

    let m = s.metrics();
    for (_, reason) in bad {
        assert!(
            m.contains(&format!(
                "provbox_tftp_malformed_packets_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted:\n{m}"
        );
    }
    assert!(m.contains("provbox_tftp_malformed_packets_total{reason=\"truncated\"} 2"));
}

#[test]
fn duplicate_acks_do_not_trigger_duplicate_data() {
    // Three blocks; a long timeout so nothing is resent by timer during the test.
    let body = big_file(1300);
    let s = start(&[("f.bin", &body)], "  timeout: 5s\n");
    let c = raw();
    c.send_to(&rrq("f.bin", "octet", &[]), s.addr()).unwrap();
    let (d1, tid) = recv(&c);
    assert_eq!(&d1[..4], b"\0\x03\0\x01");
    c.send_to(&ack(1), tid).unwrap();
    c.send_to(&ack(1), tid).unwrap();
    c.send_to(&ack(1), tid).unwrap();
    let got = drain(&c, Duration::from_millis(700));
    assert_eq!(
        got.len(),
        1,
        "three ACK 1 must produce one DATA 2, got {} packets",
        got.len()
    );
    assert_eq!(&got[0][..4], b"\0\x03\0\x02");
    c.send_to(&ack(2), tid).unwrap();
    let (d3, _) = recv(&c);
    assert_eq!(&d3[..4], b"\0\x03\0\x03");
    assert_eq!(d3.len() - 4, 1300 - 1024);
    c.send_to(&ack(3), tid).unwrap();
}

#[test]
fn lost_acks_are_retransmitted_then_the_transfer_gives_up() {
    crate::support::needs!("curl");
    let s = start(
        &[("f.bin", &big_file(100))],
        "  timeout: 200ms\n  retries: 2\n",
    );
    let c = raw();
    c.send_to(&rrq("f.bin", "octet", &[]), s.addr()).unwrap();
    let (first, _) = recv(&c);
    // Never ACK: the block comes again once per timeout, `retries` times, then silence.
    let again = drain(&c, Duration::from_millis(1500));
    assert_eq!(again.len(), 2, "expected 2 retransmissions, got {again:?}");
    assert!(again.iter().all(|p| *p == first));
    s.wait_transfer("f.bin", "outcome=\"timeout\"");
    let m = s.metrics();
    assert!(m.contains("provbox_tftp_retransmits_total 2"), "{m}");
}

#[test]
fn busy_beyond_max_transfers() {
    crate::support::needs!("tftp");
    let s = start(
        &[("f.bin", &big_file(2000))],
        "  max_transfers: 1\n  timeout: 5s\n",
    );
    let holder = raw();
    holder
        .send_to(&rrq("f.bin", "octet", &[]), s.addr())
        .unwrap();
    let (_, tid) = recv(&holder);
    let late = raw();
    late.send_to(&rrq("f.bin", "octet", &[]), s.addr()).unwrap();
    let (err, _) = recv(&late);
    assert_eq!(&err[..4], b"\0\x05\0\x00");
    assert!(String::from_utf8_lossy(&err).contains("server busy"));
    s.wait_transfer("f.bin", "outcome=\"busy\"");
    // The first transfer is unaffected and completes; then the slot is free again.
    holder.send_to(&ack(1), tid).unwrap();
    let (d2, _) = recv(&holder);
    assert_eq!(&d2[..4], b"\0\x03\0\x02");
    holder.send_to(&ack(2), tid).unwrap();
    let (d3, _) = recv(&holder);
    assert_eq!(&d3[..4], b"\0\x03\0\x03");
    holder.send_to(&ack(3), tid).unwrap();
    let (d4, _) = recv(&holder);
    assert_eq!(&d4[..4], b"\0\x03\0\x04");
    holder.send_to(&ack(4), tid).unwrap();
    s.wait_transfer("f.bin", "outcome=\"ok\"");
    let out = s.out("f.bin");
    let o = s.hpa(&["-c", "get", "f.bin", out.to_str().unwrap()]);
    assert_eq!(read(&out).len(), 2000, "{}", text(&o));
}

#[test]
fn replies_come_from_the_address_the_request_was_sent_to() {
    // Listener on 0.0.0.0; 127.0.0.3 is another local address. A transfer that answered
    // from 127.0.0.1 would be dropped by real clients as a foreign host.
    let s = start(&[("p.cfg", PROFILE)], "");
    let c = raw();
    c.send_to(&rrq("p.cfg", "octet", &[]), ("127.0.0.3", s.port))
        .unwrap();
    let (d, from) = recv(&c);
    assert_eq!(&d[..4], b"\0\x03\0\x01");
    assert_eq!(from.ip().to_string(), "127.0.0.3");
    c.send_to(&ack(1), from).unwrap();
}

#[test]
fn hot_reload_is_visible_over_tftp() {
    crate::support::needs!("tftp");
    let s = start(&[("p.cfg", PROFILE)], "");
    let out = s.out("new.cfg");
    let o = s.hpa(&["-c", "get", "new.cfg", out.to_str().unwrap()]);
    assert!(text(&o).contains("File not found"), "{}", text(&o));
    std::fs::write(s.pb.path().join("files/new.cfg"), b"fresh profile\n").unwrap();
    let start = Instant::now();
    loop {
        let _ = std::fs::remove_file(&out);
        let o = s.hpa(&["-c", "get", "new.cfg", out.to_str().unwrap()]);
        if read(&out) == b"fresh profile\n" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new file not served over TFTP after 10 s: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn retransmitted_request_does_not_start_a_second_transfer() {
    crate::support::needs!("curl");
    let s = start(&[("f.bin", &big_file(2000))], "  timeout: 5s\n");
    let c = raw();
    let req = rrq("f.bin", "octet", &[]);
    c.send_to(&req, s.addr()).unwrap();
    let (d1, tid) = recv(&c);
    assert_eq!(&d1[..4], b"\0\x03\0\x01");
    // The same request again (the client's RRQ retransmission crossing our DATA 1).
    c.send_to(&req, s.addr()).unwrap();
    let got = drain(&c, Duration::from_millis(400));
    assert!(
        got.is_empty(),
        "a duplicate RRQ started a transfer: {got:?}"
    );
    // A different request from the same port (a boot ROM after its tsize probe) is served.
    c.send_to(&rrq("f.bin", "octet", &[("tsize", "0")]), s.addr())
        .unwrap();
    let (oack, tid2) = recv(&c);
    assert_eq!(oack, b"\0\x06tsize\x002000\0");
    assert_ne!(tid, tid2);
    assert!(
        s.metrics()
            .contains("provbox_tftp_malformed_packets_total{reason=\"duplicate_request\"} 1")
    );
}
