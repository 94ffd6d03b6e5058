//! Issue 12, item 2: the dashboard against a hostile LAN and hostile web pages. It always
//! needs a token (made in data_dir when none is configured), refuses state changes from
//! another origin, and answers only to its own names (DNS rebinding gets 421).

use crate::bench_kit::{Bench, kinds};
use crate::support::{self, free_udp_port, run};

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// curl with `args`: (status, response headers, body).
fn curl(args: &[&str]) -> (u16, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let head = tmp.path().join("head");
    let mut a = vec!["-s", "-D", head.to_str().unwrap(), "-w", "\n%{http_code}"];
    a.extend_from_slice(args);
    let out = run("curl", &a);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let head = std::fs::read_to_string(head).unwrap_or_default();
    (code.trim().parse().unwrap_or(0), head, body.to_string())
}

fn made_token(b: &Bench) -> String {
    let t = std::fs::read_to_string(b.p.path().join("data/dashboard.token"))
        .expect("a token file in data_dir");
    t.trim().to_string()
}

#[test]
fn token_always_required_bearer_or_login_cookie() {
    crate::support::needs!("curl");
    // No token configured, loopback listener: still closed.
    let b = Bench::start(&[], "");
    let base = format!("http://127.0.0.1:{}", b.dash);
    let api = format!("{base}/api/devices");
    let origin = format!("Origin: {base}");
    assert_eq!(curl(&[&api]).0, 401, "no token on loopback");
    let (code, _, page) = curl(&[&format!("{base}/")]);
    assert_eq!(code, 401);
    assert!(
        page.contains("<form") && page.contains("dashboard.token"),
        "{page}"
    );
    assert_eq!(curl(&[&format!("{base}/api/devices.csv")]).0, 401);
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "-H",
            &origin,
            &format!("{base}/api/resync/all")
        ])
        .0,
        401
    );
    assert_eq!(
        curl(&["-H", "Authorization: Bearer 0123456789abcdef0123", &api]).0,
        401
    );

    let token = made_token(&b);
    assert_eq!(
        curl(&["-H", &format!("Authorization: Bearer {token}"), &api]).0,
        200
    );
    // The query only logs in at `/`; it is no way into the API.
    assert_eq!(curl(&[&format!("{api}?token={token}")]).0, 401);

    // The login: a wrong token gets the form again, the right one a cookie and a redirect
    // that takes the token out of the address bar.
    assert_eq!(
        curl(&[&format!("{base}/?token=wrong-token-0123456789")]).0,
        401
    );
    let jar = b.p.path().join("jar");
    let jar = jar.to_str().unwrap();
    let (code, head, _) = curl(&["-c", jar, &format!("{base}/?token={token}")]);
    assert_eq!(code, 303, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\nlocation: /\r\n"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(cookie.contains("httponly"), "{cookie}");
    assert!(cookie.contains("samesite=strict"), "{cookie}");
    assert!(
        !cookie.contains("secure"),
        "plain HTTP: not Secure ({cookie})"
    );
    assert!(
        !cookie.contains(&token),
        "the cookie is not the token itself: {cookie}"
    );
    assert_eq!(curl(&["-b", jar, &api]).0, 200);
    let (code, _, page) = curl(&["-b", jar, &format!("{base}/")]);
    assert_eq!(code, 200);
    assert!(page.contains("provbox · bench"));
    // A stale or forged cookie is no login.
    assert_eq!(
        curl(&["-H", "Cookie: provbox_admin=0123456789abcdef0123", &api]).0,
        401
    );
    assert_eq!(
        b.metric("provbox_dashboard_refusals_total{reason=\"no_token\"}"),
        8.0
    );
}

#[test]
fn made_token_is_private_printed_and_kept_across_restarts() {
    crate::support::needs!("curl");
    let mut b = Bench::start(&[], "");
    let path = b.p.path().join("data/dashboard.token");
    let token = made_token(&b);
    assert_eq!(token.len(), 64, "256 bits as hex: {token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");
    let log = b.p.log();
    assert!(
        log.contains(&format!(
            "  listening  dashboard login http://127.0.0.1:{}/?token={token}",
            b.dash
        )),
        "the banner shows the login link: {log}"
    );
    assert!(
        log.contains(&format!(
            "listening: dashboard login http://127.0.0.1:{}/?token={token}",
            b.dash
        )),
        "the log has it too: {log}"
    );
    assert!(log.contains("made one"), "{log}");
    let ino = std::fs::metadata(&path).unwrap();

    // Restart on the same data_dir: the same token, not a new file.
    assert_eq!(b.p.signal_and_wait("TERM"), Some(0));
    let dir = std::mem::replace(&mut b.p.dir, tempfile::tempdir().unwrap());
    let cfg = std::fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    let p = support::Provbox::start(dir, &cfg);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    let again = std::fs::metadata(p.path().join("data/dashboard.token")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((again.ino(), again.mtime()), (ino.ino(), ino.mtime()));
    let log = p.log();
    assert!(log.contains(&format!("?token={token}")), "{log}");
    assert!(!log.contains("made one"), "{log}");
    let api = format!("http://127.0.0.1:{}/api/devices", b.dash);
    assert_eq!(
        curl(&["-H", &format!("Authorization: Bearer {token}"), &api]).0,
        200
    );
    assert_eq!(curl(&[&api]).0, 401);
}

/// A UDP socket standing in for the phone's SIP port: every NOTIFY that reaches it.
fn notifies(phone: &UdpSocket, until_first: Duration, after: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        let left = if got.is_empty() {
            until_first.saturating_sub(start.elapsed())
        } else {
            after.saturating_sub(start.elapsed())
        };
        if left.is_zero() {
            return got;
        }
        phone.set_read_timeout(Some(left)).unwrap();
        match phone.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => return got,
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or("")
        .trim()
}

#[test]
fn cross_site_state_changes_refused_and_nothing_sent() {
    crate::support::needs!("curl", "logger");
    let sip = free_udp_port();
    let phone = UdpSocket::bind(("127.0.0.1", sip)).unwrap();
    let b = Bench::start(
        &[],
        &format!("  resync:\n    method: sip\n    sip_port: {sip}\n"),
    );
    b.logger(
        "--rfc3164",
        "SPA504G 000e08000b01 -- Successful resync http://127.0.0.1/spa.cfg",
    );
    b.wait_device("000e08000b01", "known", |d| d["ip"] == "127.0.0.1");
    let token = made_token(&b);
    let base = format!("http://127.0.0.1:{}", b.dash);
    let jar = b.p.path().join("jar");
    let jar = jar.to_str().unwrap();
    assert_eq!(curl(&["-c", jar, &format!("{base}/?token={token}")]).0, 303);
    let bearer = format!("Authorization: Bearer {token}");
    let all = format!("{base}/api/resync/all?reboot=1");
    let one = format!("{base}/api/devices/00:0e:08:00:0b:01/resync?reboot=1");
    let other_port = format!("Origin: http://127.0.0.1:{}", b.dash + 1);
    // What a hostile page can make a logged-in browser send (the cookie rides along), and a
    // bearer request from another origin.
    let attempts: [&[&str]; 6] = [
        &[
            "-b",
            jar,
            "-H",
            "Origin: http://evil.example",
            "-H",
            "Sec-Fetch-Site: cross-site",
            "-d",
            "x=1",
            &all,
        ],
        &["-b", jar, "-H", "Origin: null", "-X", "POST", &one],
        &[
            "-b",
            jar,
            "-H",
            "Sec-Fetch-Site: same-site",
            "-X",
            "POST",
            &all,
        ],
        &["-b", jar, "-X", "POST", &one],
        &["-b", jar, "-H", &other_port, "-X", "POST", &all],
        &[
            "-H",
            &bearer,
            "-H",
            "Origin: http://evil.example",
            "-X",
            "POST",
            &one,
        ],
    ];
    for a in attempts {
        let (code, _, body) = curl(a);
        assert_eq!(code, 403, "{a:?}: {body}");
        assert!(body.contains("cross-site"), "{body}");
    }
    assert_eq!(
        b.metric("provbox_dashboard_refusals_total{reason=\"cross_site\"}"),
        6.0
    );

    // The page's own request (same origin, cookie) goes through: the one NOTIFY the phone
    // sees is this one (`resync`, not the attempts' `reboot`), retransmitted unanswered.
    let (code, _, body) = curl(&[
        "-b",
        jar,
        "-H",
        &format!("Origin: {base}"),
        "-H",
        "Sec-Fetch-Site: same-origin",
        "-X",
        "POST",
        &format!("{base}/api/devices/00:0e:08:00:0b:01/resync"),
    ]);
    assert_eq!(code, 202, "{body}");
    let got = notifies(&phone, Duration::from_secs(10), Duration::from_secs(5));
    assert!(!got.is_empty(), "the same-origin resync reached the phone");
    for m in &got {
        assert!(m.starts_with("NOTIFY sip:127.0.0.1"), "{m}");
        assert_eq!(
            header(m, "Event:"),
            "resync",
            "only the allowed request: {m}"
        );
    }
    let calls: std::collections::BTreeSet<&str> =
        got.iter().map(|m| header(m, "Call-ID:")).collect();
    assert_eq!(
        calls.len(),
        1,
        "one NOTIFY (and its retransmissions): {got:?}"
    );
    // Each resync the dashboard starts ends on the timeline as sent or not sent.
    let sent = |k: &String| k == "resync_sent" || k == "resync_not_sent";
    let d = b.wait_device("000e08000b01", "the resync noted", |d| {
        kinds(d).iter().any(sent)
    });
    let resyncs = kinds(&d).iter().filter(|k| sent(k)).count();
    assert_eq!(resyncs, 1, "{d:#}");
}

#[test]
fn rebinding_host_gets_421() {
    crate::support::needs!("curl");
    let b = Bench::start(&[], "  hosts: [prov.lab.test]\n");
    let token = made_token(&b);
    let bearer = format!("Authorization: Bearer {token}");
    let port = b.dash;
    let api = format!("http://127.0.0.1:{port}/api/devices");
    // What a browser sends after attacker.example was rebound to 127.0.0.1: its own name.
    let rebound = format!("rebind.attacker.example:{port}:127.0.0.1");
    let rebound_url = format!("http://rebind.attacker.example:{port}/api/devices");
    let (code, _, body) = curl(&["--resolve", &rebound, "-H", &bearer, &rebound_url]);
    assert_eq!(code, 421, "{body}");
    // The same page posting: its Origin matches its Host, so only the Host check stops it.
    let (code, _, _) = curl(&[
        "--resolve",
        &rebound,
        "-H",
        &bearer,
        "-H",
        &format!("Origin: http://rebind.attacker.example:{port}"),
        "-X",
        "POST",
        &format!("http://rebind.attacker.example:{port}/api/resync/all?reboot=1"),
    ]);
    assert_eq!(code, 421);
    for host in [
        format!("127.0.0.1.nip.io:{port}"),
        format!("127.0.0.1:{}", port + 1),
        "127.0.0.1".to_string(),
        format!("127.0.0.2:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (code, _, _) = curl(&["-H", &bearer, "-H", &format!("Host: {host}"), &api]);
        assert_eq!(code, 421, "Host: {host}");
    }
    // Its own names: the address it listens on, localhost, and dashboard.hosts.
    assert_eq!(curl(&["-H", &bearer, &api]).0, 200);
    let localhost = format!("http://localhost:{port}/api/devices");
    assert_eq!(
        curl(&[
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "-H",
            &bearer,
            &localhost
        ])
        .0,
        200
    );
    let named = format!("http://prov.lab.test:{port}/api/devices");
    assert_eq!(
        curl(&[
            "--resolve",
            &format!("prov.lab.test:{port}:127.0.0.1"),
            "-H",
            &bearer,
            &named
        ])
        .0,
        200
    );
    assert_eq!(
        b.metric("provbox_dashboard_refusals_total{reason=\"host\"}"),
        7.0
    );
    assert!(b.p.log().contains("is not this dashboard"));
}
