//! The `https_legacy` listener (OpenSSL) beside the rustls one, driven with the real
//! `openssl s_client` and `curl` the way an old phone talks: TLS 1.0, CBC suites, RSA key
//! exchange. The rustls listener must keep refusing exactly that handshake.
#![cfg(feature = "legacy-tls")]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use provbox::tls::LabCa;
use support::{Provbox, free_tcp_port, provbox, require};

/// A profile with every byte value, so any mangling on the way shows.
fn profile() -> Vec<u8> {
    let mut v =
        b"<flat-profile><Profile_Rule>https://prov/</Profile_Rule></flat-profile>\n".to_vec();
    for i in 0..4096u32 {
        v.push((i * 7 % 256) as u8);
    }
    v
}

const NAME: &str = "SEP00562B043615.cfg";

/// The clients read an empty OpenSSL config of the test's own, so a distribution's
/// system-wide `MinProtocol`/`CipherString` cannot decide whether an old-phone handshake
/// is even attempted (Debian 12's file sets none; others do).
fn client_openssl_conf() -> PathBuf {
    let p = std::env::temp_dir().join("provbox-legacy-tls-client-openssl.cnf");
    if !p.exists() {
        std::fs::write(&p, "# empty: compiled-in defaults only\n").unwrap();
    }
    p
}

struct Lab {
    pb: Provbox,
    modern: u16,
    legacy: u16,
    metrics: u16,
}

/// Client-certificate material made by a CA of the test's own (the "phone vendor").
struct ClientCerts {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Issued by a different CA: must be refused.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn client_certs(dir: &Path) -> ClientCerts {
    let write = |lab: &LabCa, cn: &str, stem: &str| {
        let (c, k) = lab.issue(&[cn.to_string()], true).unwrap();
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
        (cert, key)
    };
    let vendor = LabCa::ensure(&dir.join("vendor"), &[]).unwrap();
    let other = LabCa::ensure(&dir.join("other"), &[]).unwrap();
    let (cert, key) = write(&vendor, "SEP00562B043615", "phone");
    let (stranger_cert, stranger_key) = write(&other, "SEP0000DEADBEEF", "stranger");
    ClientCerts {
        ca: vendor.ca_cert.clone(),
        cert,
        key,
        stranger_cert,
        stranger_key,
    }
}

/// Start provbox with both HTTPS listeners; `tls_extra` goes into both sections' policy.
fn start(client_auth: &str, legacy_extra: &str) -> (Lab, Option<ClientCerts>) {
    let dir = Provbox::dir();
    std::fs::write(dir.path().join("files").join(NAME), profile()).unwrap();
    let certs = (client_auth != "none").then(|| client_certs(dir.path()));
    let ca_line = certs
        .as_ref()
        .map(|c| format!("  client_ca: {}\n", c.ca.display()))
        .unwrap_or_default();
    let (modern, legacy, metrics) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let yaml = format!(
        "devices:\n  mac_in_path: false\ncatalog:\n  roots: [files]\n\
         https:\n  enabled: true\n  listen: [\"127.0.0.1:{modern}\"]\n  client_auth: {client_auth}\n{ca_line}\
         https_legacy:\n  enabled: true\n  listen: [\"127.0.0.1:{legacy}\"]\n{legacy_extra}\
         metrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\n"
    );
    let pb = Provbox::start(dir, &yaml);
    (
        Lab {
            pb,
            modern,
            legacy,
            metrics,
        },
        certs,
    )
}

impl Lab {
    fn server_ca(&self) -> PathBuf {
        self.pb.path().join("data/tls/ca.pem")
    }

    fn url(&self, port: u16) -> String {
        format!("https://127.0.0.1:{port}/{NAME}")
    }

    /// curl as an old phone: TLS 1.0 only, one CBC suite. Returns (ok, body, stderr).
    fn curl(&self, port: u16, args: &[&str]) -> (bool, Vec<u8>, String) {
        require("curl");
        let ca = self.server_ca();
        let out = Command::new("curl")
            .env("OPENSSL_CONF", client_openssl_conf())
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(args)
            .arg(self.url(port))
            .output()
            .unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Lab::curl`] presenting the client certificate `cert` with its `key`.
    fn curl_cert(
        &self,
        port: u16,
        args: &[&str],
        cert: &Path,
        key: &Path,
    ) -> (bool, Vec<u8>, String) {
        let mut all = args.to_vec();
        all.extend([
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
        self.curl(port, &all)
    }

    /// curl held to exactly TLS `version` and one `cipher`.
    fn curl_tls(&self, port: u16, version: &str, cipher: &str) -> (bool, Vec<u8>, String) {
        let min = format!("--tlsv{version}");
        self.curl(port, &[&min, "--tls-max", version, "--ciphers", cipher])
    }

    /// `openssl s_client` sending a raw HTTP/1.0 GET; returns (handshake ok, response bytes,
    /// stderr+session text).
    fn s_client(&self, port: u16, args: &[&str]) -> (bool, Vec<u8>, String) {
        require("openssl");
        let mut child = support::spawn_with_stdin(
            Command::new("openssl")
                .env("OPENSSL_CONF", client_openssl_conf())
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .arg("-CAfile")
                .arg(self.server_ca())
                .args(["-verify_return_error", "-quiet", "-ign_eof"])
                .args(args),
            format!("GET /{NAME} HTTP/1.0\r\nHost: prov\r\n\r\n").as_bytes(),
        );
        // Bounded: the server closes after an HTTP/1.0 response; kill a hung client.
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let ok = out.stdout.starts_with(b"HTTP/1.");
        (
            ok,
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn metrics(&self) -> String {
        support::scrape(self.metrics)
    }

    /// The value of one counter line, 0 when absent.
    fn counter(&self, family: &str, labels: &str) -> u64 {
        let prefix = format!("{family}{{{labels}}} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0)
    }

    fn handshakes(&self, port: u16, legacy: bool, version: &str, cipher: &str) -> u64 {
        let listener = if legacy { "https_legacy" } else { "https" };
        self.counter(
            "provbox_tls_handshakes_total",
            &format!(
                "listener=\"{listener}:127.0.0.1:{port}\",version=\"{version}\",cipher=\"{cipher}\""
            ),
        )
    }

    /// Asserts that the listener on `port` counted `n` handshake failures for `reason`,
    /// showing the metrics when it did not.
    #[track_caller]
    fn assert_failures(&self, port: u16, legacy: bool, reason: &str, n: u64) {
        assert_eq!(self.failures(port, legacy, reason), n, "{}", self.metrics());
    }

    fn failures(&self, port: u16, legacy: bool, reason: &str) -> u64 {
        let listener = if legacy { "https_legacy" } else { "https" };
        self.counter(
            "provbox_tls_handshake_failures_total",
            &format!("listener=\"{listener}:127.0.0.1:{port}\",reason=\"{reason}\""),
        )
    }
}

const TLS10: &[&str] = &["--tlsv1.0", "--tls-max", "1.0", "--ciphers", "AES256-SHA"];
/// curl's own OpenSSL (Debian: security level 2) refuses to sign or check the MD5+SHA-1
/// signatures TLS 1.0 uses for DHE and client certificates; old phones have no such
/// limit, so the client side drops to level 0 for those cases.
const TLS10_S0: &[&str] = &[
    "--tlsv1.0",
    "--tls-max",
    "1.0",
    "--ciphers",
    "AES256-SHA@SECLEVEL=0",
];
const S_TLS10: &[&str] = &["-tls1", "-cipher", "AES256-SHA@SECLEVEL=0"];

fn body_of(response: &[u8]) -> &[u8] {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    &response[at + 4..]
}

#[test]
fn old_phone_handshake_fetches_byte_exact_from_the_legacy_listener_only() {
    crate::support::needs!("curl", "openssl");
    let (lab, _) = start("none", "");
    let want = profile();

    // openssl s_client, TLS 1.0, AES256-SHA (RSA key exchange, CBC).
    let (ok, resp, err) = lab.s_client(lab.legacy, S_TLS10);
    assert!(ok, "s_client TLS 1.0 to legacy failed: {err}");
    assert!(resp.starts_with(b"HTTP/1.0 200") || resp.starts_with(b"HTTP/1.1 200"));
    assert_eq!(body_of(&resp), &want[..], "s_client body differs");

    // curl the same way, and with the DHE suite the phones list first.
    let (ok, body, err) = lab.curl(lab.legacy, TLS10);
    assert!(ok, "curl TLS 1.0 AES256-SHA to legacy failed: {err}");
    assert_eq!(body, want, "curl body differs");
    let (ok, body, err) = lab.curl_tls(lab.legacy, "1.0", "DHE-RSA-AES128-SHA@SECLEVEL=0");
    assert!(
        ok,
        "curl TLS 1.0 DHE-RSA-AES128-SHA to legacy failed: {err}"
    );
    assert_eq!(body, want);

    assert_eq!(
        lab.handshakes(lab.legacy, true, "TLSv1.0", "TLS_RSA_WITH_AES_256_CBC_SHA"),
        2,
        "{}",
        lab.metrics()
    );
    assert_eq!(
        lab.handshakes(
            lab.legacy,
            true,
            "TLSv1.0",
            "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"
        ),
        1
    );

    // The same handshakes against the rustls listener fail, and are counted as such.
    let (ok, _, _) = lab.s_client(lab.modern, S_TLS10);
    assert!(!ok, "rustls listener accepted TLS 1.0");
    let (ok, _, err) = lab.curl(lab.modern, TLS10);
    assert!(!ok, "rustls listener accepted TLS 1.0 via curl");
    assert!(err.contains("(35)") || err.contains("SSL"), "{err}");
    lab.assert_failures(lab.modern, false, "incompatible", 2);
    // Nothing about those attempts shows up as a handshake on the rustls listener.
    assert!(!lab.metrics().contains(&format!(
        "listener=\"https:127.0.0.1:{}\",version=\"TLSv1.0\"",
        lab.modern
    )));

    // Modern clients: TLS 1.2 ECDHE works on both doors.
    let (ok, body, err) = lab.curl_tls(lab.legacy, "1.2", "ECDHE-RSA-AES128-GCM-SHA256");
    assert!(ok, "TLS 1.2 ECDHE to legacy failed: {err}");
    assert_eq!(body, want);
    let (ok, body, err) = lab.curl_tls(lab.modern, "1.2", "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert!(ok, "TLS 1.2 ECDHE to rustls failed: {err}");
    assert_eq!(body, want);
    assert_eq!(
        lab.handshakes(
            lab.legacy,
            true,
            "TLSv1.2",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ),
        1
    );
    assert_eq!(
        lab.handshakes(
            lab.modern,
            false,
            "TLSv1.2",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        ),
        1
    );
    // Default curl to the legacy door: TLS 1.3, named the way rustls names it.
    let (ok, body, err) = lab.curl(lab.legacy, &[]);
    assert!(ok, "default curl to legacy failed: {err}");
    assert_eq!(body, want);
    assert!(
        lab.metrics().contains(&format!(
            "provbox_tls_handshakes_total{{listener=\"https_legacy:127.0.0.1:{}\",version=\"TLSv1.3\",cipher=\"TLS_AES_",
            lab.legacy
        )),
        "{}",
        lab.metrics()
    );

    // Plain HTTP on the legacy TLS port: refused at the handshake, counted, still serving.
    let out = support::run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{}/{NAME}", lab.legacy),
        ],
    );
    assert!(!out.status.success() || !out.stdout.ends_with(&want));
    lab.assert_failures(lab.legacy, true, "protocol", 1);

    // Both doors feed the same request counters.
    assert!(
        lab.metrics()
            .contains("provbox_requests_total{protocol=\"https\",outcome=\"ok\"} 6")
    );
    assert!(
        lab.pb.log().contains("https_legacy is ON"),
        "no start-up warning"
    );
}

#[test]
fn required_client_certificate_on_the_legacy_listener() {
    crate::support::needs!("curl", "openssl");
    let (mut lab, certs) = start("required", "");
    let c = certs.unwrap();
    let want = profile();
    let cert = c.cert.to_str().unwrap();
    let key = c.key.to_str().unwrap();

    // No certificate: refused at the handshake, counted with its reason.
    let (ok, _, err) = lab.curl(lab.legacy, TLS10);
    assert!(!ok, "legacy listener served a client without certificate");
    assert!(!err.is_empty());
    lab.assert_failures(lab.legacy, true, "no_client_cert", 1);

    // A certificate from the vendor CA: served, over TLS 1.0, with both clients.
    let (ok, body, err) = lab.curl_cert(lab.legacy, TLS10_S0, &c.cert, &c.key);
    assert!(ok, "curl with client cert failed: {err}");
    assert_eq!(body, want);
    let mut s_args = S_TLS10.to_vec();
    s_args.extend(["-cert", cert, "-key", key]);
    let (ok, resp, err) = lab.s_client(lab.legacy, &s_args);
    assert!(ok, "s_client with client cert failed: {err}");
    assert_eq!(body_of(&resp), &want[..]);
    // The identity (subject with the MAC) reached the request side, as on rustls.
    lab.pb
        .wait_for_log("subject=CN=SEP00562B043615", Duration::from_secs(5));

    // A certificate from another CA: refused.
    let (ok, _, _) = lab.curl_cert(lab.legacy, TLS10_S0, &c.stranger_cert, &c.stranger_key);
    assert!(
        !ok,
        "legacy listener accepted a certificate from an unknown CA"
    );
    lab.assert_failures(lab.legacy, true, "bad_client_cert", 1);
    assert!(!lab.pb.log().contains("subject=CN=SEP0000DEADBEEF"));

    // The rustls listener applies the same policy (TLS 1.2+).
    let (ok, _, _) = lab.curl(lab.modern, &[]);
    assert!(!ok);
    let (ok, body, err) = lab.curl_cert(lab.modern, &[], &c.cert, &c.key);
    assert!(ok, "rustls with client cert failed: {err}");
    assert_eq!(body, want);
}

#[test]
fn optional_client_certificate_and_minimum_protocol() {
    crate::support::needs!("curl");
    let (lab, certs) = start("optional", "  min_protocol: tls1.1\n");
    let c = certs.unwrap();
    let want = profile();
    // TLS 1.0 is below this listener's minimum.
    let (ok, _, _) = lab.curl(lab.legacy, TLS10);
    assert!(!ok, "min_protocol tls1.1 accepted TLS 1.0");
    lab.assert_failures(lab.legacy, true, "incompatible", 1);
    // TLS 1.1 without a certificate is fine under `optional`, and with one too.
    let tls11 = [
        "--tlsv1.1",
        "--tls-max",
        "1.1",
        "--ciphers",
        "AES128-SHA@SECLEVEL=0",
    ];
    let (ok, body, err) = lab.curl(lab.legacy, &tls11);
    assert!(ok, "TLS 1.1 without cert failed: {err}");
    assert_eq!(body, want);
    let (ok, body, err) = lab.curl_cert(lab.legacy, &tls11, &c.cert, &c.key);
    assert!(ok, "TLS 1.1 with cert failed: {err}");
    assert_eq!(body, want);
    assert_eq!(
        lab.handshakes(lab.legacy, true, "TLSv1.1", "TLS_RSA_WITH_AES_128_CBC_SHA"),
        2,
        "{}",
        lab.metrics()
    );
    assert!(lab.pb.log().contains("subject=CN=SEP00562B043615"));
}

#[test]
fn configured_rsa_certificate_is_reloaded_when_it_changes() {
    crate::support::needs!("curl");
    // An operator certificate in the https_legacy section, replaced while running.
    let dir = Provbox::dir();
    std::fs::write(dir.path().join("files").join(NAME), profile()).unwrap();
    let names = ["127.0.0.1".to_string()];
    let first = provbox::tls_legacy::lab_rsa_cert(&dir.path().join("op1"), &names).unwrap();
    let second = provbox::tls_legacy::lab_rsa_cert(&dir.path().join("op2"), &names).unwrap();
    let cert = dir.path().join("legacy.pem");
    let key = dir.path().join("legacy.key");
    std::fs::copy(&first.0, &cert).unwrap();
    std::fs::copy(&first.1, &key).unwrap();
    let port = free_tcp_port();
    let yaml = format!(
        "devices:\n  mac_in_path: false\ncatalog:\n  roots: [files]\nhttps_legacy:\n  enabled: true\n  listen: [\"127.0.0.1:{port}\"]\n  cert: legacy.pem\n  key: legacy.key\n"
    );
    let mut pb = Provbox::start(dir, &yaml);
    let fetch = |ca: &Path| {
        Command::new("curl")
            .env("OPENSSL_CONF", client_openssl_conf())
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(ca)
            .args(TLS10)
            .arg(format!("https://127.0.0.1:{port}/{NAME}"))
            .output()
            .unwrap()
    };
    let ca1 = pb.path().join("op1/ca.pem");
    let ca2 = pb.path().join("op2/ca.pem");
    assert!(fetch(&ca1).status.success());
    assert!(!fetch(&ca2).status.success());
    // Key first, then cert: a half-written pair is refused and the old one keeps serving.
    std::fs::copy(&second.1, pb.path().join("legacy.key")).unwrap();
    std::fs::copy(&second.0, pb.path().join("legacy.pem")).unwrap();
    pb.wait_for_log(
        "https_legacy: TLS certificate reloaded",
        Duration::from_secs(20),
    );
    let out = fetch(&ca2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, profile());
}

#[test]
fn check_refuses_unusable_cipher_lists_and_shows_the_listener() {
    crate::support::needs!("openssl");
    require("openssl");
    let dir = Provbox::dir();
    let cfg = dir.path().join("config.yaml");
    let write = |ciphers: &str| {
        std::fs::write(
            &cfg,
            format!(
                "catalog:\n  roots: [files]\nhttps_legacy:\n  enabled: true\n  listen: [\"127.0.0.1:8444\"]\n  ciphers: \"{ciphers}\"\n"
            ),
        )
        .unwrap();
    };
    write("AES256-SHA:AES128-SHA");
    let (code, out) = provbox(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("https_legacy.listen[0]"), "{out}");

    write("AES256-SHA:NOT-A-SUITE");
    let (code, out) = provbox(&["check", "--config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains(":6:") && out.contains("NOT-A-SUITE"), "{out}");

    // RC4: refused with a clear word when the system OpenSSL lacks it, as Debian's does.
    let has_rc4 = Command::new("openssl")
        .args(["ciphers", "RC4-SHA@SECLEVEL=0"])
        .output()
        .unwrap()
        .status
        .success();
    write("AES128-SHA:RC4-SHA");
    let (code, out) = provbox(&["check", "--config", cfg.to_str().unwrap()]);
    if has_rc4 {
        assert_eq!(code, 0, "{out}");
    } else {
        assert_ne!(code, 0);
        assert!(out.contains("RC4 is not available"), "{out}");
    }
}

#[test]
fn sighup_applies_a_new_policy_to_the_next_handshake() {
    crate::support::needs!("curl");
    let (mut lab, _) = start("none", "");
    let (ok, body, err) = lab.curl(lab.legacy, TLS10);
    assert!(ok, "{err}");
    assert_eq!(body, profile());
    // Raise the minimum to TLS 1.2 and reload: TLS 1.0 is refused from then on.
    let cfg = lab.pb.path().join("config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "https_legacy:\n  enabled: true\n",
        "https_legacy:\n  enabled: true\n  min_protocol: tls1.2\n",
    );
    std::fs::write(&cfg, text).unwrap();
    lab.pb.reload();
    lab.pb
        .wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert!(lab.pb.log().contains("result=\"ok\""), "{}", lab.pb.log());
    let (ok, _, _) = lab.curl(lab.legacy, TLS10);
    assert!(
        !ok,
        "TLS 1.0 still accepted after min_protocol: tls1.2 and SIGHUP"
    );
    lab.assert_failures(lab.legacy, true, "incompatible", 1);
    let (ok, body, err) = lab.curl(lab.legacy, &["--tlsv1.2"]);
    assert!(ok, "{err}");
    assert_eq!(body, profile());
}
