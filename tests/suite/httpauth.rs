//! HTTP Basic and Digest (RFC 7616) as a device proof, against the real binary with curl:
//! right and wrong passwords, a replayed nonce, a stale one, the throttle, and `trust`
//! staying explicit.

use crate::support;

use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};
use support::fixtures::{CISCO as A, YEALINK as B};
use support::fixtures::{Running, lab_dir, serve_files};
use support::metric;

const ALICE_PW: &str = "Alice pw 1";
const BOB_PW: &str = "b0b-secret";
const SHARED_PW: &str = "shared-acct-pw";

fn start(trust: bool, extra: &str) -> Running {
    let d = lab_dir();
    serve_files(
        d.path(),
        &[
            (
                "cfg/$MA.xml.tmpl",
                "<device mac=\"$MAC\" ext=\"$extension\"/>\n",
            ),
            ("common.cfg", "for everyone\n"),
        ],
    );
    std::fs::write(
        d.path().join("inventory.csv"),
        format!(
            "mac,extension,http_user,http_password\n{A},1001,alice,{ALICE_PW}\n{B},1002,bob,{BOB_PW}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.path().join("accounts.txt"),
        format!("# shared by the lab's Polycoms\nshared:{SHARED_PW}\n"),
    )
    .unwrap();
    Running::start(
        d,
        false,
        &format!(
            "devices:\n  inventory: inventory.csv\n  trust:\n    http_auth: {trust}\n  http_auth:\n    accounts: accounts.txt\n{extra}"
        ),
    )
}

fn url(l: &Running, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", l.ports.http)
}

fn get(args: &[&str], url: &str) -> (u16, String, String) {
    let r = support::curl(10, args, url);
    (
        r.code,
        r.headers,
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

fn auth_metric(l: &Running, result: &str) -> f64 {
    metric(
        &support::scrape(l.ports.metrics),
        &format!("provbox_http_auth_total{{result=\"{result}\"}}"),
    )
}

/// The response headers of a GET without credentials, as sent (not lowercased: a nonce is
/// case-sensitive).
fn raw_challenge(l: &Running, path: &str) -> String {
    let out = support::run(
        "curl",
        &["-sS", "-o", "/dev/null", "-D", "-", &url(l, path)],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `name="value"` (or bare `name=value`) parameter of the first Digest challenge.
fn challenge_param(headers: &str, name: &str) -> String {
    let line = headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("www-authenticate: digest")
        })
        .unwrap_or_else(|| panic!("no Digest challenge in\n{headers}"));
    let at = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    let v = &line[at + name.len() + 1..];
    if let Some(q) = v.strip_prefix('"') {
        q[..q.find('"').unwrap()].to_string()
    } else {
        v.split([',', '\r']).next().unwrap().to_string()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An `Authorization: Digest` header made here (not by provbox's code), as RFC 7616
/// section 3.4.1 says, for `nonce` and `nc`.
fn digest_header(
    alg: &str,
    user: &str,
    pw: &str,
    path: &str,
    nonce: &str,
    opaque: &str,
    nc: u32,
) -> String {
    let h = |s: String| match alg {
        "MD5" => hex(&Md5::digest(s.as_bytes())),
        _ => hex(&Sha256::digest(s.as_bytes())),
    };
    let (nc, cnonce) = (format!("{nc:08x}"), "0a4f113b");
    let ha1 = h(format!("{user}:provbox:{pw}"));
    let ha2 = h(format!("GET:{path}"));
    let resp = h(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"provbox\", nonce=\"{nonce}\", uri=\"{path}\", algorithm={alg}, qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{resp}\", opaque=\"{opaque}\""
    )
}

#[test]
fn digest_and_basic_prove_the_device_and_wrong_passwords_get_the_challenge() {
    crate::support::needs!("curl");
    let l = start(true, "    basic: true\n");
    let own = format!("/cfg/{A}.xml");
    let other = format!("/cfg/{B}.xml");

    // No credentials: 401 with a Digest challenge per algorithm, SHA-256 first, and Basic.
    let (code, headers, _) = get(&[], &url(&l, &own));
    assert_eq!(code, 401, "{headers}");
    let challenges: Vec<&str> = headers
        .lines()
        .filter(|h| h.starts_with("www-authenticate:"))
        .collect();
    assert_eq!(challenges.len(), 3, "{headers}");
    assert!(
        challenges[0].starts_with(
            "www-authenticate: digest realm=\"provbox\", qop=\"auth\", algorithm=sha-256, nonce=\""
        ),
        "{headers}"
    );
    assert!(challenges[0].contains("opaque=\""), "{headers}");
    assert!(challenges[1].contains("algorithm=md5"), "{headers}");
    assert!(challenges[2].starts_with("www-authenticate: basic realm=\"provbox\""));
    // A public file asks nobody.
    assert_eq!(get(&[], &url(&l, "/common.cfg")).0, 200);

    // curl --digest (SHA-256, the first challenge) with the device's own password.
    let alice = format!("alice:{ALICE_PW}");
    let (code, _, body) = get(&["--digest", "-u", &alice], &url(&l, &own));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        format!("<device mac=\"00:56:2b:04:36:15\" ext=\"1001\"/>\n")
    );
    // Proven as A: B's profile is not A's to have.
    let (code, _, body) = get(&["--digest", "-u", &alice], &url(&l, &other));
    assert_eq!(code, 403, "{body}");
    // Wrong password: 401 again, with the challenge.
    let (code, headers, _) = get(&["--digest", "-u", "alice:Wr0ngPass"], &url(&l, &own));
    assert_eq!(code, 401);
    assert!(headers.contains("www-authenticate: digest"), "{headers}");

    // Basic, right and wrong.
    let (code, _, body) = get(&["--basic", "-u", &alice], &url(&l, &own));
    assert_eq!((code, body.contains("ext=\"1001\"")), (200, true), "{body}");
    let (code, headers, _) = get(&["--basic", "-u", "alice:n0peN0pe"], &url(&l, &own));
    assert_eq!(code, 401);
    assert!(headers.contains("www-authenticate: basic"), "{headers}");

    // Over HTTPS the same.
    let (code, _, body) = get(
        &["-k", "--digest", "-u", &format!("bob:{BOB_PW}")],
        &format!("https://127.0.0.1:{}/cfg/{B}.xml", l.ports.https),
    );
    assert_eq!((code, body.contains("ext=\"1002\"")), (200, true), "{body}");

    // A shared account proves the MAC the request names (here: the path's).
    let (code, _, body) = get(
        &["--digest", "-u", &format!("shared:{SHARED_PW}")],
        &url(&l, &other),
    );
    assert_eq!((code, body.contains("ext=\"1002\"")), (200, true), "{body}");

    // Alice twice (her own profile, then B's: proven, then refused), Basic, Bob, shared.
    assert_eq!(auth_metric(&l, "ok"), 5.0);
    assert_eq!(auth_metric(&l, "wrong_credentials"), 2.0);
    // Each curl --digest asks first without credentials; plus the bare request above.
    assert!(auth_metric(&l, "challenged") >= 5.0);
    let log = l.pb.log();
    for pw in [ALICE_PW, BOB_PW, SHARED_PW, "Wr0ngPass", "n0peN0pe"] {
        assert!(!log.contains(pw), "the log shows a password ({pw})");
    }
    assert!(log.contains("HTTP credentials refused"), "{log}");
}

#[test]
fn a_replayed_nonce_count_is_refused_and_md5_works() {
    crate::support::needs!("curl");
    let l = start(true, "");
    let path = format!("/cfg/{A}.xml");
    let headers = raw_challenge(&l, &path);
    assert!(headers.starts_with("HTTP/1.1 401"), "{headers}");
    let nonce = challenge_param(&headers, "nonce");
    let opaque = challenge_param(&headers, "opaque");
    for alg in ["SHA-256", "MD5"] {
        // A fresh nonce per algorithm: the nc record is per nonce.
        let headers = raw_challenge(&l, &path);
        let nonce = if alg == "MD5" {
            challenge_param(&headers, "nonce")
        } else {
            nonce.clone()
        };
        let h1 = digest_header(alg, "alice", ALICE_PW, &path, &nonce, &opaque, 1);
        let (code, _, body) = get(&["-H", &h1], &url(&l, &path));
        assert_eq!(code, 200, "{alg}: {body}");
        assert!(body.contains("ext=\"1001\""));
        // The very same request again: a replay.
        let (code, headers, _) = get(&["-H", &h1], &url(&l, &path));
        assert_eq!(code, 401, "{alg}: a replayed nc is refused");
        assert!(!headers.contains("stale=true"), "{headers}");
        // The next nc with the same nonce is fine, an old one is not.
        let h2 = digest_header(alg, "alice", ALICE_PW, &path, &nonce, &opaque, 2);
        assert_eq!(get(&["-H", &h2], &url(&l, &path)).0, 200);
        assert_eq!(get(&["-H", &h1], &url(&l, &path)).0, 401);
    }
    assert_eq!(auth_metric(&l, "replayed_nonce"), 4.0);
    assert_eq!(auth_metric(&l, "ok"), 4.0);
    // A response for another target is no good here.
    let headers = raw_challenge(&l, &path);
    let nonce = challenge_param(&headers, "nonce");
    let h = digest_header(
        "SHA-256",
        "alice",
        ALICE_PW,
        "/common.cfg",
        &nonce,
        &opaque,
        1,
    );
    assert_eq!(get(&["-H", &h], &url(&l, &path)).0, 401);
    assert_eq!(auth_metric(&l, "malformed"), 1.0);
}

#[test]
fn an_expired_nonce_is_stale_and_curl_carries_on() {
    crate::support::needs!("curl");
    let l = start(true, "    nonce_lifetime: 1s\n");
    let path = format!("/cfg/{A}.xml");
    let headers = raw_challenge(&l, &path);
    let nonce = challenge_param(&headers, "nonce");
    let opaque = challenge_param(&headers, "opaque");
    // Wait out the nonce's lifetime (whole seconds: past 1 s for sure).
    std::thread::sleep(Duration::from_millis(2500));
    let h = digest_header("SHA-256", "alice", ALICE_PW, &path, &nonce, &opaque, 1);
    let (code, headers, _) = get(&["-H", &h], &url(&l, &path));
    assert_eq!(code, 401);
    assert!(
        headers.contains("algorithm=sha-256") && headers.contains("stale=true"),
        "{headers}"
    );
    assert_eq!(auth_metric(&l, "stale_nonce"), 1.0);
    // The same stale nonce with a wrong password is just wrong, not stale.
    let h = digest_header("SHA-256", "alice", "guess", &path, &nonce, &opaque, 2);
    let (code, headers, _) = get(&["-H", &h], &url(&l, &path));
    assert_eq!(code, 401);
    assert!(!headers.contains("stale=true"), "{headers}");
    // A client that starts over gets a fresh nonce and in.
    let (code, _, _) = get(
        &["--digest", "-u", &format!("alice:{ALICE_PW}")],
        &url(&l, &path),
    );
    assert_eq!(code, 200);
}

#[test]
fn wrong_passwords_are_throttled_like_pin_guesses() {
    crate::support::needs!("curl");
    let l = start(true, "");
    let path = format!("/cfg/{A}.xml");
    for i in 0..5 {
        let (code, _, _) = get(
            &["--digest", "-u", &format!("mallory:guess{i}")],
            &url(&l, &path),
        );
        assert_eq!(code, 401, "guess {i}");
    }
    // The address used up its five: even the right password is refused for now.
    let (code, headers, _) = get(
        &["--digest", "-u", &format!("alice:{ALICE_PW}")],
        &url(&l, &path),
    );
    assert_eq!(code, 403, "{headers}");
    assert_eq!(auth_metric(&l, "wrong_credentials"), 5.0);
    assert_eq!(auth_metric(&l, "throttled"), 1.0);
    let m = support::scrape(l.ports.metrics);
    assert_eq!(
        metric(
            &m,
            "provbox_device_refusals_total{reason=\"http_auth_attempts_exceeded\"}"
        ),
        1.0
    );
}

#[test]
fn without_trust_credentials_prove_nothing() {
    crate::support::needs!("curl");
    let l = start(false, "    basic: true\n");
    let path = format!("/cfg/{A}.xml");
    // No challenge, and the right password does not help: trust is explicit.
    let (code, headers, _) = get(&[], &url(&l, &path));
    assert_eq!(code, 403);
    assert!(!headers.contains("www-authenticate"), "{headers}");
    let (code, _, _) = get(
        &["--basic", "-u", &format!("alice:{ALICE_PW}")],
        &url(&l, &path),
    );
    assert_eq!(code, 403);
    assert_eq!(auth_metric(&l, "ok"), 0.0);
}

#[test]
fn a_report_is_taken_only_with_the_devices_own_credentials() {
    crate::support::needs!("curl");
    let l = start(true, "  reports:\n    path: /report/$MA.xml\n");
    let alice = format!("alice:{ALICE_PW}");
    let report = url(&l, &format!("/report/{A}.xml"));
    let body = "<flat-profile><Display_Name_1_>Alice</Display_Name_1_></flat-profile>";
    // No credentials: 401 with the challenge (the body is not read).
    let (code, headers, _) = get(&["--data-binary", body], &report);
    assert_eq!(code, 401);
    assert!(headers.contains("www-authenticate: digest"), "{headers}");
    // Bob's own credentials prove Bob, not the device the path names.
    let (code, _, _) = get(
        &[
            "--digest",
            "-u",
            &format!("bob:{BOB_PW}"),
            "--data-binary",
            body,
        ],
        &report,
    );
    assert_eq!(code, 403);
    // Alice's: taken (nothing was served to compare with yet, which the answer says).
    let (code, _, text) = get(&["--digest", "-u", &alice, "--data-binary", body], &report);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.starts_with("not verified: no profile was rendered"),
        "{text}"
    );
}

/// A Polycom's provisioning User-Agent: no MAC in it, so the credentials prove the phone.
const POLYCOM_UA: &str = "FileTransport PolycomVVX-VVX_400-UA/5.9.5.0614 Type/Application";

#[test]
fn a_polycom_puts_its_log_and_override_with_digest_and_reads_them_back() {
    crate::support::needs!("curl");
    let l = start(true, "uploads:\n  enabled: true\n");
    let alice = format!("alice:{ALICE_PW}");
    let bob = format!("bob:{BOB_PW}");
    let (log, over) = (format!("/{A}-app.log"), format!("/{A}-phone.cfg"));
    let (log_body, over_body) = (
        "0101000000|cfg |4|00|Prov|Upload of log\n",
        // A changed ringer (never served) and the served extension, as it was.
        "<PHONE_CONFIG><OVERRIDES up.ringer=\"3\" ext=\"1001\"/></PHONE_CONFIG>\n",
    );
    let file = |name: &str, body: &str| {
        let f = l.pb.path().join(name);
        std::fs::write(&f, body).unwrap();
        f.to_str().unwrap().to_string()
    };
    let (log_file, over_file) = (file("app.log", log_body), file("phone.cfg", over_body));
    let stored = |name: &str| std::fs::read(l.pb.path().join("data/uploads").join(A).join(name));
    let put = |cred: Option<&str>, f: &str, path: &str| {
        let mut args = vec!["-A", POLYCOM_UA, "-T", f];
        if let Some(c) = cred {
            args.extend(["--digest", "-u", c]);
        }
        get(&args, &url(&l, path))
    };

    // No credentials: 401 with a Digest challenge, nothing stored.
    for (f, path) in [(&log_file, &log), (&over_file, &over)] {
        let (code, headers, _) = put(None, f, path);
        assert_eq!(code, 401, "{path}");
        assert!(headers.contains("www-authenticate: digest"), "{headers}");
    }
    // Bob's own (right) credentials prove Bob, not the phone the names belong to.
    for (f, path) in [(&log_file, &log), (&over_file, &over)] {
        let (code, _, _) = put(Some(&bob), f, path);
        assert_eq!(code, 403, "{path}");
    }
    assert!(stored(&format!("{A}-app.log")).is_err());
    assert!(stored(&format!("{A}-phone.cfg")).is_err());

    // The phone fetches its profile (`<device … ext="1001"/>`): what its override is
    // compared with.
    let (code, _, served) = get(
        &["-A", POLYCOM_UA, "--digest", "-u", &alice],
        &url(&l, &format!("/cfg/{A}.xml")),
    );
    assert_eq!(code, 200, "{served}");
    assert!(served.contains("ext=\"1001\""), "{served}");

    // The phone itself, with Digest: both stored.
    for (f, path) in [(&log_file, &log), (&over_file, &over)] {
        let (code, headers, _) = put(Some(&alice), f, path);
        assert_eq!(code, 201, "{path}: {headers}");
    }
    assert_eq!(
        stored(&format!("{A}-app.log")).unwrap(),
        log_body.as_bytes()
    );
    assert_eq!(
        stored(&format!("{A}-phone.cfg")).unwrap(),
        over_body.as_bytes()
    );

    // It reads its override back with Digest; Bob and the unproven do not.
    let (code, _, body) = get(
        &["-A", POLYCOM_UA, "--digest", "-u", &alice],
        &url(&l, &over),
    );
    assert_eq!((code, body.as_str()), (200, over_body));
    let (code, _, body) = get(&["-A", POLYCOM_UA, "--digest", "-u", &bob], &url(&l, &over));
    assert_eq!(code, 403, "{body}");
    let (code, headers, _) = get(&["-A", POLYCOM_UA], &url(&l, &over));
    assert_eq!(code, 401);
    assert!(headers.contains("www-authenticate: digest"), "{headers}");
    let m = support::scrape(l.ports.metrics);
    assert_eq!(metric(&m, "provbox_uploads_total{result=\"stored\"}"), 2.0);
    assert_eq!(
        metric(&m, "provbox_uploads_total{result=\"forbidden\"}"),
        2.0
    );
    // The override is its configuration report: the served extension is unchanged.
    let verdicts = |m: &str| {
        ["verified", "drift", "unreadable"].map(|r| {
            metric(
                m,
                &format!("provbox_devices_verification{{result=\"{r}\"}}"),
            )
        })
    };
    assert_eq!(verdicts(&m), [1.0, 0.0, 0.0]);
    // The extension changed on the phone: drift.
    let changed = file(
        "phone2.cfg",
        "<PHONE_CONFIG><OVERRIDES up.ringer=\"3\" ext=\"2002\"/></PHONE_CONFIG>\n",
    );
    let (code, _, _) = put(Some(&alice), &changed, &over);
    assert_eq!(code, 204);
    assert_eq!(verdicts(&support::scrape(l.ports.metrics)), [0.0, 1.0, 0.0]);
}
