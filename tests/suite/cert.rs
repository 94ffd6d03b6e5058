//! `provbox cert csr` and `provbox cert lab-ca`, checked with the real openssl binary, and
//! the lab CA used end to end: curl trusts the HTTPS listener with ca.pem alone, and a
//! phone's client certificate from `--clients` passes `client_auth: required`.

use crate::support;

use support::fixtures::provbox_with;
use support::{Provbox, free_tcp_port};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = support::run("openssl", args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn csr_ecdsa_and_rsa_verify_with_openssl() {
    crate::support::needs!("openssl");
    let dir = tempfile::tempdir().unwrap();
    for (kind, algo) in [
        ("ecdsa-p256", "id-ecPublicKey"),
        ("rsa2048", "rsaEncryption"),
    ] {
        let out = dir.path().join(kind);
        let (code, text) = support::provbox(&[
            "cert",
            "csr",
            "--cn",
            "prov.example.com",
            "--san",
            "prov2.example.com,198.18.0.1",
            "--org",
            "Example Lab",
            "--key-type",
            kind,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{text}");
        let csr = out.join("prov.example.com.csr");
        let key = out.join("prov.example.com.key");
        let csr = csr.to_str().unwrap();
        let (ok, text) = openssl(&["req", "-verify", "-in", csr, "-noout", "-text"]);
        assert!(ok, "{text}");
        assert!(
            text.contains("verify OK")
                || text.contains("Certificate request self-signature verify OK"),
            "{text}"
        );
        assert!(
            text.contains("CN = prov.example.com") || text.contains("CN=prov.example.com"),
            "{text}"
        );
        assert!(text.contains(algo), "{kind}: {text}");
        assert!(
            text.contains("DNS:prov2.example.com") && text.contains("IP Address:198.18.0.1"),
            "{text}"
        );
        if kind == "rsa2048" {
            assert!(text.contains("2048 bit"), "{text}");
        }
        // The key matches the request and is private to its owner.
        let (ok, from_key) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
        assert!(ok, "{from_key}");
        let (ok, from_csr) = openssl(&["req", "-in", csr, "-noout", "-pubkey"]);
        assert!(ok, "{from_csr}");
        assert_eq!(from_key, from_csr);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A bad name is refused with a clear error, nothing written.
    let (code, text) = support::provbox(&[
        "cert",
        "csr",
        "--cn",
        "",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(text.contains("--cn is empty"), "{text}");
}

#[test]
fn lab_ca_issues_server_and_client_certs_that_openssl_and_curl_accept() {
    crate::support::needs!("curl", "openssl");
    let dir = Provbox::serving(&[("CP-8831-3PCC.cfg", "<flat-profile/>\n")]);
    let port = free_tcp_port();
    let yaml = format!(
        "catalog:\n  roots: [files]\nhttps:\n  enabled: true\n  listen: [\"127.0.0.1:{port}\"]\n  names: [prov.lab.test]\n  client_auth: required\n  client_ca: data/tls/ca.pem\n"
    );
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    // client_ca does not exist yet: `check` says so, naming the field.
    let (code, text) = provbox_with(&cfg, &["check"]);
    assert_ne!(code, 0);
    assert!(text.contains("https.client_ca"), "{text}");

    let (code, text) = provbox_with(
        &cfg,
        &[
            "cert",
            "lab-ca",
            "--names",
            "prov2.lab.test",
            "--clients",
            "00:56:2B:04:36:15,0015654aa937",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let tls = dir.path().join("data/tls");
    let p = |f: &str| tls.join(f).to_str().unwrap().to_string();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &p("ca.pem"),
        &p("server.pem"),
        &p("clients/00562b043615.pem"),
        &p("clients/0015654aa937.pem"),
    ]);
    assert!(ok, "{text}");
    assert_eq!(text.matches(": OK").count(), 3, "{text}");
    // Server cert: the configured FQDN and --names; client cert: the MAC in its subject.
    let (_, text) = openssl(&[
        "x509",
        "-in",
        &p("server.pem"),
        "-noout",
        "-ext",
        "subjectAltName",
        "-purpose",
    ]);
    assert!(
        text.contains("DNS:prov.lab.test") && text.contains("DNS:prov2.lab.test"),
        "{text}"
    );
    assert!(text.contains("SSL server : Yes"), "{text}");
    let (_, text) = openssl(&[
        "x509",
        "-in",
        &p("clients/00562b043615.pem"),
        "-noout",
        "-subject",
        "-purpose",
    ]);
    assert!(text.contains("SEP00562B043615"), "{text}");
    assert!(text.contains("SSL client : Yes"), "{text}");
    // A bad MAC is refused.
    let (code, text) = provbox_with(&cfg, &["cert", "lab-ca", "--clients", "zz"]);
    assert_ne!(code, 0);
    assert!(text.contains("not a MAC address"), "{text}");

    // Serve with that CA: curl trusts it with ca.pem only, and the phone cert is accepted.
    let pb = Provbox::start(dir, &yaml);
    assert!(
        pb.log().contains("Lab CA"),
        "the banner names the CA:\n{}",
        pb.log()
    );
    let url = format!("https://prov.lab.test:{port}/CP-8831-3PCC.cfg");
    let resolve = format!("prov.lab.test:{port}:127.0.0.1");
    let ca = p("ca.pem");
    let fetch = |extra: &[&str]| {
        let mut args = vec![
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        support::run("curl", &args)
    };
    let ok = fetch(&[
        "--cert",
        &p("clients/00562b043615.pem"),
        "--key",
        &p("clients/00562b043615.key"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "<flat-profile/>\n");
    // Without a client certificate the handshake is refused.
    let no = fetch(&[]);
    assert!(!no.status.success());
}
