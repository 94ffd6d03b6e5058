//! The HTTPS bootstrap (issue 16, item 5): a phone out of the box fetches its factory
//! profile in the clear, installs provbox's CA from its `Custom_CA_Rule`, and moves to
//! HTTPS with its `Profile_Rule`, verifying provbox with that CA. Played on loopback with
//! curl (HTTP, HTTPS), tftp-hpa and openssl, over the repository's own sample files.

use std::path::Path;

use crate::support::{Provbox, free_tcp_port, free_udp_port, require, run, tftp_get};

const MAC: &str = "00562b043615";
const UA: &str = "Cisco-CP-8831-3PCC/9.3.3 (00562b043615)";

/// GET with curl: (HTTP status, body, curl's exit code).
fn curl(args: &[&str], url: &str) -> (u16, Vec<u8>, i32) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("body");
    let out_s = out.to_str().unwrap();
    let mut all = vec!["-sS", "--max-time", "10", "-o", out_s, "-w", "%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let r = run("curl", &all);
    let code = String::from_utf8_lossy(&r.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = std::fs::read(&out).unwrap_or_default();
    (code, body, r.status.code().unwrap_or(-1))
}

/// The text of `<name ...>text</name>` in a flat profile.
fn element(profile: &str, name: &str) -> String {
    let open = format!("<{name}");
    let start = profile
        .find(&open)
        .unwrap_or_else(|| panic!("no <{name}> in:\n{profile}"));
    let rest = &profile[start..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].to_string()
}

fn copy_sample(dir: &Path, name: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let to = dir.join(name.replace("files/profiles/", "files/"));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

#[test]
fn a_phone_installs_the_ca_from_its_factory_profile_and_moves_to_https() {
    crate::support::needs!("curl", "openssl", "tftp");
    require("curl");
    require("tftp");
    require("openssl");
    let d = Provbox::dir();
    // The shipped samples: the factory profile, the per-device profile and the inventory.
    copy_sample(d.path(), "files/profiles/bootstrap/$MA.cfg.tmpl");
    copy_sample(d.path(), "files/profiles/cfg/$MA.xml.tmpl");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("files/inventory.yaml"),
        d.path().join("inventory.yaml"),
    )
    .unwrap();
    let (http, https, tftp) = (free_tcp_port(), free_tcp_port(), free_udp_port());
    // No certificate configured: provbox makes its lab CA under data/tls.
    let pb = Provbox::start(
        d,
        &format!(
            "catalog:\n  roots: [files]\n\
http:\n  enabled: true\n  listen: [\"127.0.0.1:{http}\"]\n\
https:\n  enabled: true\n  listen: [\"0.0.0.0:{https}\"]\n\
tftp:\n  enabled: true\n  listen: 0.0.0.0:{tftp}\n\
devices:\n  inventory: inventory.yaml\n  trust:\n    user_agent: true\n    path: true\n"
        ),
    );
    let work = tempfile::tempdir().unwrap();

    // 1. Factory profile, in the clear.
    let (code, body, _) = curl(
        &["-A", UA],
        &format!("http://127.0.0.1:{http}/bootstrap/{MAC}.cfg"),
    );
    let factory = String::from_utf8(body).unwrap();
    assert_eq!(code, 200, "factory profile: {factory}\n{}", pb.log());
    let ca_rule = element(&factory, "Custom_CA_Rule");
    let profile_rule = element(&factory, "Profile_Rule");
    assert_eq!(ca_rule, format!("http://127.0.0.1:{http}/provbox-ca.pem"));
    assert_eq!(
        profile_rule,
        format!("https://127.0.0.1:{https}/cfg/{MAC}.xml")
    );

    // 2. The phone follows its Custom_CA_Rule.
    let (code, ca, _) = curl(&["-A", UA], &ca_rule);
    assert_eq!(code, 200, "{}", pb.log());
    assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        ca,
        std::fs::read(pb.path().join("data/tls/ca.pem")).unwrap()
    );
    let ca_file = work.path().join("installed-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();

    // 3. Its Profile_Rule, over HTTPS, verifying provbox with the CA it installed (and
    // only with it: without the CA, verification fails).
    let (code, body, rc) = curl(
        &["-A", UA, "--cacert", ca_file.to_str().unwrap()],
        &profile_rule,
    );
    let profile = String::from_utf8(body).unwrap();
    assert_eq!((code, rc), (200, 0), "{profile}\n{}", pb.log());
    assert_eq!(element(&profile, "Display_Name_1_"), "Reception");
    let (_, _, rc) = curl(&["-A", UA], &profile_rule);
    assert_ne!(rc, 0, "curl trusted provbox without its CA");

    // 4. The CA over TFTP is the same bytes, and the DER form is the same certificate.
    let port = tftp.to_string();
    for name in ["provbox-ca.pem", "provbox-ca.der"] {
        let out = work.path().join(name);
        let r = tftp_get(&port, name, &out);
        assert!(out.exists(), "tftp {name}: {r:?}");
    }
    assert_eq!(
        std::fs::read(work.path().join("provbox-ca.pem")).unwrap(),
        ca
    );
    let der = run(
        "openssl",
        &["x509", "-in", ca_file.to_str().unwrap(), "-outform", "DER"],
    );
    assert!(der.status.success());
    assert_eq!(
        std::fs::read(work.path().join("provbox-ca.der")).unwrap(),
        der.stdout
    );
    let (code, body, _) = curl(&[], &format!("http://127.0.0.1:{http}/provbox-ca.der"));
    assert_eq!((code, body), (200, der.stdout));

    // 5. A factory profile fetched over TFTP points at the CA over TFTP.
    let out = work.path().join("factory-tftp.cfg");
    tftp_get(&port, &format!("bootstrap/{MAC}.cfg"), &out);
    let factory = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(
        element(&factory, "Custom_CA_Rule"),
        format!("tftp://127.0.0.1:{tftp}/provbox-ca.pem"),
        "{}",
        pb.log()
    );
    assert_eq!(element(&factory, "Profile_Rule"), profile_rule);
}

#[test]
fn a_configured_certificate_serves_its_configured_ca() {
    crate::support::needs!("curl");
    require("curl");
    let d = Provbox::dir();
    // An operator's own CA and certificate, outside data_dir.
    let own = provbox::tls::LabCa::ensure(
        &d.path().join("own-ca"),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    std::fs::write(d.path().join("files/hello.txt"), "hello\n").unwrap();
    let (http, https) = (free_tcp_port(), free_tcp_port());
    let pb = Provbox::start(
        d,
        &format!(
            "catalog:\n  roots: [files]\n\
http:\n  enabled: true\n  listen: [\"127.0.0.1:{http}\"]\n\
https:\n  enabled: true\n  listen: [\"127.0.0.1:{https}\"]\n  cert: {}\n  key: {}\n  ca_cert: {}\n",
            own.server_cert.display(),
            own.server_key.display(),
            own.ca_cert.display()
        ),
    );
    let (code, ca, _) = curl(&[], &format!("http://127.0.0.1:{http}/provbox-ca.pem"));
    assert_eq!(code, 200, "{}", pb.log());
    assert_eq!(ca, std::fs::read(&own.ca_cert).unwrap());
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (code, body, rc) = curl(
        &["--cacert", ca_file.to_str().unwrap()],
        &format!("https://127.0.0.1:{https}/hello.txt"),
    );
    assert_eq!((code, rc, &body[..]), (200, 0, &b"hello\n"[..]));
    // provbox made no lab CA of its own.
    assert!(!pb.path().join("data/tls/ca.pem").exists());
}
