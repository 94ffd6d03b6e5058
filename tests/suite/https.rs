//! HTTPS with real `openssl` and `curl`: a test PKI made with the openssl CLI, the three
//! client-certificate policies, a stranger's certificate, certificate hot reload and the
//! lab CA provbox makes when no certificate is configured.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    require("openssl");
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// Sign `csr` in `dir` with its `ca.pem`/`ca.key` for 30 days into `pem`, with the
/// extensions in `ext`.
fn sign(dir: &Path, csr: &str, pem: &str, ext: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            pem,
            "-days",
            "30",
            "-extfile",
            ext,
        ],
    );
}

/// CA, server cert for localhost/127.0.0.1, a phone's client cert (CN carries its MAC) and
/// a stranger's self-signed client cert, all made by the openssl CLI.
fn pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Test Phone CA",
    ]);
    openssl(dir, &a);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    for (name, subj, ext) in [
        ("server", "/CN=localhost", "server.ext"),
        (
            "phone",
            "/O=Cisco/CN=CP-8831-3PCC-SEP00562B043615",
            "client.ext",
        ),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
        openssl(dir, &a);
        sign(dir, &csr, &pem, ext);
    }
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "stranger.key",
        "-out",
        "stranger.pem",
        "-days",
        "30",
        "-subj",
        "/CN=SEP001122334455",
        "-addext",
        "extendedKeyUsage=clientAuth",
    ]);
    openssl(dir, &a);
}

struct Bench {
    pb: Provbox,
    https: u16,
    metrics: u16,
    pki: PathBuf,
}

fn start(policy: &str) -> Bench {
    let dir = Provbox::serving(&[("CP-8831-3PCC.cfg", "<flat-profile/>\n")]);
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    pki(&pki_dir);
    let (https, metrics) = (free_tcp_port(), free_tcp_port());
    let cfg = format!(
        "catalog:\n  roots: [files]\nhttps:\n  enabled: true\n  listen: [\"127.0.0.1:{https}\"]\n  cert: pki/server.pem\n  key: pki/server.key\n  client_auth: {policy}\n  client_ca: pki/ca.pem\nmetrics:\n  enabled: true\n  listen: \"127.0.0.1:{metrics}\"\n"
    );
    let pb = Provbox::start(dir, &cfg);
    Bench {
        pb,
        https,
        metrics,
        pki: pki_dir,
    }
}

impl Bench {
    /// curl over HTTPS trusting the test CA; `cert` names a client cert in the PKI dir.
    fn fetch(&self, cert: Option<&str>) -> (bool, Vec<u8>) {
        require("curl");
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "--fail", "--cacert"])
            .arg(self.pki.join("ca.pem"));
        if let Some(name) = cert {
            c.arg("--cert")
                .arg(self.pki.join(format!("{name}.pem")))
                .arg("--key")
                .arg(self.pki.join(format!("{name}.key")));
        }
        let out = c
            .arg(format!("https://localhost:{}/CP-8831-3PCC.cfg", self.https))
            .output()
            .unwrap();
        (out.status.success(), out.stdout)
    }

    fn metrics(&self) -> String {
        scrape(self.metrics)
    }
}

const BODY: &[u8] = b"<flat-profile/>\n";

#[test]
fn policy_none_serves_everyone() {
    crate::support::needs!("curl", "openssl");
    let b = start("none");
    assert_eq!(b.fetch(None), (true, BODY.to_vec()));
    assert_eq!(b.fetch(Some("phone")), (true, BODY.to_vec()));
    // A plain-HTTP client on the TLS port is a counted handshake failure, and the
    // listener keeps serving.
    let _ = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{}/x", b.https),
        ])
        .output();
    assert!(b.fetch(None).0);
    let m = b.metrics();
    assert!(m.contains("provbox_tls_handshake_failures_total{"), "{m}");
    assert!(
        m.contains("provbox_requests_total{protocol=\"https\",outcome=\"ok\"} 3"),
        "{m}"
    );
}

#[test]
fn policy_optional_accepts_none_or_a_verified_cert() {
    crate::support::needs!("curl", "openssl");
    let mut b = start("optional");
    assert_eq!(b.fetch(None), (true, BODY.to_vec()));
    assert_eq!(b.fetch(Some("phone")), (true, BODY.to_vec()));
    // The verified subject, with the MAC it carries, reaches the request context.
    b.pb.wait_for_log("CN=CP-8831-3PCC-SEP00562B043615", Duration::from_secs(5));
    assert!(!b.fetch(Some("stranger")).0);
    let m = b.metrics();
    assert!(
        m.contains("reason=\"bad_client_cert\"} 1"),
        "stranger not counted:\n{m}"
    );
}

#[test]
fn policy_required_refuses_missing_and_unknown_certs() {
    crate::support::needs!("curl", "openssl");
    let b = start("required");
    assert!(!b.fetch(None).0);
    assert!(!b.fetch(Some("stranger")).0);
    assert_eq!(b.fetch(Some("phone")), (true, BODY.to_vec()));
    let m = b.metrics();
    assert!(m.contains("reason=\"no_client_cert\"} 1"), "{m}");
    assert!(m.contains("reason=\"bad_client_cert\"} 1"), "{m}");

    // openssl s_client sees the server certificate and completes with a client cert.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", b.https)])
        .arg("-CAfile")
        .arg(b.pki.join("ca.pem"))
        .arg("-cert")
        .arg(b.pki.join("phone.pem"))
        .arg("-key")
        .arg(b.pki.join("phone.key"))
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Verification: OK"), "{text}");
}

#[test]
fn certificate_files_are_reread_when_they_change() {
    crate::support::needs!("openssl");
    let b = start("none");
    let subject = |b: &Bench| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", b.https),
                "-brief",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(subject(&b).contains("CN = localhost"), "{}", subject(&b));
    // Issue a new server certificate with another CN and move it into place.
    openssl(
        &b.pki,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-out",
            "new.csr",
            "-subj",
            "/CN=prov.lab.test",
        ],
    );
    sign(&b.pki, "new.csr", "new.pem", "server.ext");
    std::fs::rename(b.pki.join("new.pem"), b.pki.join("server.pem")).unwrap();
    let start = Instant::now();
    while !subject(&b).contains("CN = prov.lab.test") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "certificate not reloaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken file keeps the last good certificate serving.
    std::fs::write(b.pki.join("server.pem"), "not a certificate").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(subject(&b).contains("CN = prov.lab.test"));
    assert!(b.pb.log().contains("keeping the old ones"));
}

#[test]
fn lab_ca_is_made_when_no_certificate_is_configured() {
    crate::support::needs!("curl", "openssl");
    let dir = Provbox::serving(&[("a.cfg", "a")]);
    let port = free_tcp_port();
    let cfg = format!(
        "catalog:\n  roots: [files]\nhttps:\n  enabled: true\n  listen: [\"127.0.0.1:{port}\"]\n  names: [prov.lab.test]\n"
    );
    let pb = Provbox::start(dir, &cfg);
    let ca = pb.path().join("data/tls/ca.pem");
    assert!(pb.log().contains("lab CA"), "{}", pb.log());
    run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca)
            .arg(pb.path().join("data/tls/server.pem")),
    );
    // A client trusting only the lab CA fetches by the configured name.
    let out = run_ok(
        Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("prov.lab.test:{port}:127.0.0.1")])
            .arg(format!("https://prov.lab.test:{port}/a.cfg")),
    );
    assert_eq!(out.stdout, b"a");
}
