//! Device-aware provisioning against the real binary, with curl and openssl.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::dedupe::{assert_mentions, check_config};
use support::fixtures::{CISCO as A, CISCO_UA, YEALINK as B, YEALINK_UA};
use support::fixtures::{
    Ports, Running, assert_labelled, assert_metrics, curl_as, lab_dir, provbox_with, serve_files,
};
use support::metric;
use support::{Provbox, run};

fn config(p: &Ports, devices: &str) -> String {
    p.config(true) + devices
}

/// The `devices` section of the PIN binding tests: an init path that binds a phone (named
/// by its User-Agent) to the inventory's account with that PIN.
const PIN_BINDING: &str = "devices:\n  inventory: inventory.yaml\n  trust:\n    user_agent: true\n  binding:\n    init_prefix: /init\n    profile: init.cfg.tmpl\n";

/// provbox started on test dir `d` with fresh ports and `devices` after the served
/// sections (see `config`).
fn start(d: tempfile::TempDir, devices: &str) -> (Provbox, Ports) {
    let r = Running::start(d, true, devices);
    (r.pb, r.ports)
}

/// The `devices` section for an inventory.csv whose phones the User-Agent names, then
/// `more` of the section.
fn trusting_agents(more: &str) -> String {
    format!("devices:\n  inventory: inventory.csv\n  trust:\n    user_agent: true\n{more}")
}

/// A test directory with the lab CA made beforehand (so `client_ca` exists at start) and
/// the given served files and inventory.
fn setup(files: &[(&str, &str)], inventory: (&str, &str)) -> tempfile::TempDir {
    let d = lab_dir();
    serve_files(d.path(), files);
    std::fs::write(d.path().join(inventory.0), inventory.1).unwrap();
    d
}

/// GET with curl: (HTTP status, body).
fn curl(args: &[&str], url: &str) -> (u16, Vec<u8>) {
    let r = support::curl(10, args, url);
    (r.code, r.body)
}

fn http_as(p: &Ports, ua: &str, path: &str) -> (u16, String) {
    let (c, b) = curl(&["-A", ua], &format!("http://127.0.0.1:{}{path}", p.http));
    (c, String::from_utf8_lossy(&b).into_owned())
}

fn metrics(p: &Ports) -> String {
    let (c, b) = curl(&[], &format!("http://127.0.0.1:{}/metrics", p.metrics));
    assert_eq!(c, 200);
    String::from_utf8(b).unwrap()
}

fn ua_of(vendor: &str) -> &'static str {
    match vendor {
        "cisco" => CISCO_UA,
        "spa" => "Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400FK)",
        "yealink" => YEALINK_UA,
        "polycom" => {
            "FileTransport PolycomVVX-VVX_400-UA/5.9.5.0614 (SN:0004f2abcdef) Type/Application"
        }
        "grandstream" => "Grandstream Model HW GXP2170 V2.4B SW 1.0.11.3 DevId c074ad2bd859",
        "snom" => "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 010.1.33.33 000413922D24)",
        _ => unreachable!(),
    }
}

#[test]
fn each_vendors_user_agent_gets_its_rendered_profile() {
    crate::support::needs!("curl");
    let inventory = "\
mac,extension,display_name
00562b043615,1001,Cisco 3PCC
0002fdff2103,1002,Cisco SPA
0015654aa937,1003,Yealink
0004f2abcdef,1004,Polycom
c074ad2bd859,1005,Grandstream
000413922d24,1006,Snom
";
    let d = setup(
        &[(
            "phone.cfg.tmpl",
            "model=$PN series=$PSN fw=$SWVER mac=$MA MAC=$MAU ext=$extension name=$(display_name) oui=$(MA:0:6)\n",
        )],
        ("inventory.csv", inventory),
    );
    let (_pb, p) = start(d, &trusting_agents(""));
    let cases = [
        (
            "cisco",
            "model=CP-8831-3PCC series=8831 fw=9.3.3 mac=00562b043615 MAC=00562B043615 ext=1001 name=Cisco 3PCC oui=00562b\n",
        ),
        (
            "spa",
            "model=SPA508G series=508G fw=7.4.4 mac=0002fdff2103 MAC=0002FDFF2103 ext=1002 name=Cisco SPA oui=0002fd\n",
        ),
        (
            "yealink",
            "model=SIP-T46G series=46G fw=28.72.0.1 mac=0015654aa937 MAC=0015654AA937 ext=1003 name=Yealink oui=001565\n",
        ),
        (
            "polycom",
            "model=VVX_400 series=400 fw=5.9.5.0614 mac=0004f2abcdef MAC=0004F2ABCDEF ext=1004 name=Polycom oui=0004f2\n",
        ),
        (
            "grandstream",
            "model=GXP2170 series=2170 fw=1.0.11.3 mac=c074ad2bd859 MAC=C074AD2BD859 ext=1005 name=Grandstream oui=c074ad\n",
        ),
        (
            "snom",
            "model=D785 series=785 fw=10.1.33.33 mac=000413922d24 MAC=000413922D24 ext=1006 name=Snom oui=000413\n",
        ),
    ];
    for (vendor, want) in cases {
        let (code, body) = http_as(&p, ua_of(vendor), "/phone.cfg");
        assert_eq!(code, 200, "{vendor}: {body}");
        assert_eq!(body, want, "{vendor}");
    }
    // A Polycom without its serial in the agent has no MAC: nothing to render for.
    let (code, _) = http_as(
        &p,
        "FileTransport PolycomVVX-VVX_400-UA/5.9.5.0614 Type/Application",
        "/phone.cfg",
    );
    assert_eq!(code, 403);
    // A Yealink asking for the Cisco's per-device file is refused.
    let (code, _) = http_as(
        &p,
        ua_of("yealink"),
        &format!("/SEP{}.cnf.tmpl", A.to_uppercase()),
    );
    assert_eq!(code, 404, "template sources are never served");
    let (code, _) = http_as(&p, ua_of("yealink"), &format!("/phone-{A}.cfg"));
    assert_eq!(
        code, 404,
        "no such file or template: not found, not forbidden"
    );
    assert_metrics(
        &metrics(&p),
        &[
            ("provbox_device_identity_total{source=\"user_agent\"}", 8.0),
            ("provbox_device_identity_total{source=\"none\"}", 1.0),
            ("provbox_device_renders_total{outcome=\"rendered\"}", 6.0),
            (
                "provbox_device_refusals_total{reason=\"unidentified\"}",
                1.0,
            ),
        ],
    );
}

use crate::support::client_cert;

#[test]
fn client_cert_for_one_device_cannot_read_anothers_profile() {
    crate::support::needs!("curl");
    let d = setup(
        &[
            (
                "cfg/$MA.xml.tmpl",
                "<device mac=\"$MAC\" ext=\"$extension\"/>\n",
            ),
            (
                &format!("SEP{}.cnf.xml", B.to_uppercase()),
                "static profile of B\n",
            ),
        ],
        (
            "inventory.yaml",
            "devices:\n  - mac: 00:56:2b:04:36:15\n    extension: \"1001\"\n  - mac: 00:15:65:4a:a9:37\n    extension: \"1002\"\n",
        ),
    );
    let (ca, ca_cert_a, ca_key_a) = {
        let (c, k) = client_cert(d.path(), A);
        (d.path().join("data/tls/ca.pem"), c, k)
    };
    let (cert_b, key_b) = client_cert(d.path(), B);
    // No trust in leases or User-Agents: only certificates prove anything here.
    let (pb, p) = start(d, "devices:\n  inventory: inventory.yaml\n");
    let https = |cert: Option<(&Path, &Path)>, path: &str| {
        let r = curl_as(
            10,
            &ca,
            cert,
            &[],
            &format!("https://127.0.0.1:{}{path}", p.https),
        );
        (r.code, String::from_utf8_lossy(&r.body).into_owned())
    };
    let a = Some((ca_cert_a.as_path(), ca_key_a.as_path()));
    let b = Some((cert_b.as_path(), key_b.as_path()));
    assert_eq!(
        https(a, &format!("/cfg/{A}.xml")),
        (
            200,
            "<device mac=\"00:56:2b:04:36:15\" ext=\"1001\"/>\n".into()
        )
    );
    assert_eq!(https(a, &format!("/cfg/{B}.xml")).0, 403);
    assert_eq!(
        https(a, &format!("/SEP{}.cnf.xml", B.to_uppercase())).0,
        403
    );
    assert_eq!(
        https(b, &format!("/SEP{}.cnf.xml", B.to_uppercase())),
        (200, "static profile of B\n".into())
    );
    assert_eq!(
        https(b, &format!("/cfg/{B}.xml")),
        (
            200,
            "<device mac=\"00:15:65:4a:a9:37\" ext=\"1002\"/>\n".into()
        )
    );
    // Without a certificate, or over plain HTTP claiming to be A: not proven.
    assert_eq!(https(None, &format!("/cfg/{A}.xml")).0, 403);
    assert_eq!(http_as(&p, ua_of("cisco"), &format!("/cfg/{A}.xml")).0, 403);
    assert_metrics(
        &metrics(&p),
        &[
            (
                "provbox_device_refusals_total{reason=\"other_device\"}",
                2.0,
            ),
            (
                "provbox_device_refusals_total{reason=\"unproven_identity\"}",
                2.0,
            ),
            (
                "provbox_refusals_total{protocol=\"https\",reason=\"other_device\"}",
                2.0,
            ),
        ],
    );
    assert!(
        pb.log().contains("reason=\"other_device\"") || pb.log().contains("reason=other_device")
    );
}

fn openssl_decrypt(data: &[u8], key: &str, md: &str) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("profile.enc");
    std::fs::write(&f, data).unwrap();
    let out = run(
        "openssl",
        &[
            "enc",
            "-d",
            "-aes-256-cbc",
            "-k",
            key,
            "-md",
            md,
            "-in",
            f.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn openssl_decrypts_encrypted_profiles_md5_and_sha256() {
    crate::support::needs!("curl", "openssl");
    let d = setup(
        &[(
            "cfg/$MA.xml.tmpl",
            "<flat-profile><User_ID_1_>$sip_user</User_ID_1_><Password_1_>$sip_password</Password_1_></flat-profile>\n",
        )],
        (
            "inventory.csv",
            "mac,sip_user,sip_password,key,digest\n00562b043615,1001,pw-a,key for A,\n0015654aa937,1002,pw-b,key for B,sha256\n",
        ),
    );
    let (_pb, p) = start(d, &trusting_agents("  encryption:\n    digest: md5\n"));
    let fetch = |ua: &str, mac: &str| {
        curl(
            &["-A", ua],
            &format!("http://127.0.0.1:{}/cfg/{mac}.xml", p.http),
        )
    };
    let (code, a) = fetch(ua_of("cisco"), A);
    assert_eq!(code, 200);
    assert_eq!(&a[..8], b"Salted__");
    assert_eq!(
        openssl_decrypt(&a, "key for A", "md5"),
        b"<flat-profile><User_ID_1_>1001</User_ID_1_><Password_1_>pw-a</Password_1_></flat-profile>\n"
    );
    let (code, b) = fetch(ua_of("yealink"), B);
    assert_eq!(code, 200);
    assert_eq!(
        openssl_decrypt(&b, "key for B", "sha256"),
        b"<flat-profile><User_ID_1_>1002</User_ID_1_><Password_1_>pw-b</Password_1_></flat-profile>\n"
    );
    // Same bytes on every fetch (stable ETag, same answer over every protocol), so a
    // phone's conditional request is answered 304.
    assert_eq!(fetch(ua_of("cisco"), A).1, a);
    let headers = run(
        "curl",
        &[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-A",
            ua_of("cisco"),
            &format!("http://127.0.0.1:{}/cfg/{A}.xml", p.http),
        ],
    );
    let headers = String::from_utf8_lossy(&headers.stdout).into_owned();
    let etag = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .unwrap_or_else(|| panic!("no ETag in {headers}"))
        .trim()
        .to_string();
    let (code, _) = curl(
        &[
            "-A",
            ua_of("cisco"),
            "-H",
            &format!("If-None-Match: {etag}"),
        ],
        &format!("http://127.0.0.1:{}/cfg/{A}.xml", p.http),
    );
    assert_eq!(code, 304);
    let m = metrics(&p);
    assert_eq!(metric(&m, "provbox_device_encrypted_total"), 5.0, "{m}");
}

#[test]
fn gzip_before_encryption_decrypts_and_gunzips() {
    crate::support::needs!("gzip", "openssl");
    let d = setup(
        &[("p.cfg.tmpl", "ext=$extension\n")],
        (
            "inventory.csv",
            "mac,extension,key\n00562b043615,1001,gz key\n",
        ),
    );
    let (_pb, p) = start(
        d,
        &trusting_agents("  encryption:\n    digest: sha256\n    gzip: true\n"),
    );
    let (code, body) = curl(
        &["-A", ua_of("cisco")],
        &format!("http://127.0.0.1:{}/p.cfg", p.http),
    );
    assert_eq!(code, 200);
    let gz = openssl_decrypt(&body, "gz key", "sha256");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("p.gz");
    std::fs::write(&f, gz).unwrap();
    let out = run("gzip", &["-dc", f.to_str().unwrap()]);
    assert_eq!(out.stdout, b"ext=1001\n");
}

#[test]
fn pin_binding_succeeds_once_survives_restart_and_refuses_a_second_device() {
    crate::support::needs!("curl");
    let inventory = "\
devices:
  - pin: \"4711\"
    account: acme-7
    extension: \"2007\"
    sip_password: acme-secret
  - pin: \"5000\"
    account: other
";
    let d = setup(
        &[
            (
                "init.cfg.tmpl",
                "<flat-profile><Profile_Rule>https://prov.lab.test/cfg/$MA.xml</Profile_Rule><!-- $account --></flat-profile>\n",
            ),
            (
                "cfg/$MA.xml.tmpl",
                "account=$account ext=$extension pw=$sip_password\n",
            ),
        ],
        ("inventory.yaml", inventory),
    );
    let (mut pb, p) = start(d, PIN_BINDING);
    // Before binding the device has no account variables.
    assert_eq!(http_as(&p, ua_of("cisco"), &format!("/cfg/{A}.xml")).0, 404);
    let (code, body) = http_as(&p, ua_of("cisco"), "/init/4711");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        "<flat-profile><Profile_Rule>https://prov.lab.test/cfg/00562b043615.xml</Profile_Rule><!-- acme-7 --></flat-profile>\n"
    );
    assert_eq!(
        http_as(&p, ua_of("cisco"), &format!("/cfg/{A}.xml")),
        (200, "account=acme-7 ext=2007 pw=acme-secret\n".into())
    );
    // A second device with the same PIN, a wrong PIN, an unknown device: 403, nothing bound.
    assert_eq!(http_as(&p, ua_of("yealink"), "/init/4711").0, 403);
    assert_eq!(http_as(&p, ua_of("yealink"), "/init/0000").0, 403);
    assert_eq!(http_as(&p, "curl/8", "/init/5000").0, 403);
    assert_eq!(
        http_as(&p, ua_of("yealink"), &format!("/cfg/{B}.xml")).0,
        404
    );
    assert_labelled(
        &metrics(&p),
        "provbox_device_bindings_total",
        "result",
        &[
            ("bound", 1.0),
            ("pin_taken", 1.0),
            ("pin_unknown", 1.0),
            ("unidentified_device", 1.0),
        ],
    );

    // Restart on the same data directory: the binding is still there.
    assert_eq!(pb.signal_and_wait("TERM"), Some(0));
    let dir = std::mem::replace(&mut pb.dir, tempfile::tempdir().unwrap());
    drop(pb);
    let pb = Provbox::start(dir, &config(&p, PIN_BINDING));
    assert_eq!(
        http_as(&p, ua_of("cisco"), &format!("/cfg/{A}.xml")),
        (200, "account=acme-7 ext=2007 pw=acme-secret\n".into())
    );
    assert_eq!(http_as(&p, ua_of("yealink"), "/init/4711").0, 403);
    // The bound device may repeat its init request (phones do after a reboot).
    assert_eq!(http_as(&p, ua_of("cisco"), "/init/4711").0, 200);
    // And cannot take a second account.
    assert_eq!(http_as(&p, ua_of("cisco"), "/init/5000").0, 403);
    assert_labelled(
        &metrics(&p),
        "provbox_device_bindings_total",
        "result",
        &[
            ("again", 1.0),
            ("pin_taken", 1.0),
            ("device_bound_elsewhere", 1.0),
        ],
    );
    assert!(pb.log().contains("pin_taken"), "{}", pb.log());
}

#[test]
fn pin_guessing_is_locked_out_even_with_the_right_pin_after() {
    crate::support::needs!("curl");
    let d = setup(
        &[
            (
                "init.cfg.tmpl",
                "<flat-profile><!-- $account --></flat-profile>\n",
            ),
            ("cfg/$MA.xml.tmpl", "account=$account\n"),
        ],
        (
            "inventory.yaml",
            "devices:\n  - pin: \"4711\"\n    account: acme-7\n",
        ),
    );
    let (pb, p) = start(d, PIN_BINDING);
    // Routed like any init request, so counted and masked alike: any case, percent-encoded.
    for path in [
        "/init/0000",
        "/INIT/1111",
        "/%69nit/2222",
        "/./init/3333",
        "/init/4444",
    ] {
        assert_eq!(http_as(&p, ua_of("cisco"), path).0, 403, "{path}");
    }
    // The sixth try is refused before the PIN is even looked at: nothing is bound.
    assert_eq!(http_as(&p, ua_of("cisco"), "/init/4711").0, 403);
    assert_eq!(http_as(&p, ua_of("cisco"), &format!("/cfg/{A}.xml")).0, 404);
    assert_labelled(
        &metrics(&p),
        "provbox_device_bindings_total",
        "result",
        &[("pin_unknown", 5.0), ("pin_attempts_exceeded", 1.0)],
    );
    assert!(pb.log().contains("too many wrong PINs"), "{}", pb.log());
    // PINs are credentials: logs show the init path masked, never the digits.
    let log = pb.log();
    assert!(log.contains("/init/****"), "{log}");
    for pin in ["0000", "4444", "4711"] {
        assert!(
            !log.contains(&format!("/init/{pin}")),
            "{pin} in the log:\n{log}"
        );
    }
    // Anywhere but in a line's timestamp, whose digits may spell one by chance.
    let messages: Vec<&str> = log
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((time, message)) if time.ends_with('Z') && time.contains('T') => message,
            _ => l,
        })
        .collect();
    for pin in ["1111", "2222", "3333"] {
        assert!(
            !messages.iter().any(|m| m.contains(pin)),
            "{pin} in the log:\n{log}"
        );
    }
}

#[test]
fn missing_template_variable_refuses_the_whole_file() {
    crate::support::needs!("curl");
    let d = setup(
        &[("p.cfg.tmpl", "ext=$extension\npassword=$sip_password\n")],
        ("inventory.csv", "mac,extension\n00562b043615,1001\n"),
    );
    let (pb, p) = start(d, &trusting_agents(""));
    let (code, body) = http_as(&p, ua_of("cisco"), "/p.cfg");
    assert_eq!(code, 404);
    assert!(body.is_empty(), "never half-rendered: {body}");
    let log = pb.log();
    assert!(
        log.contains("template p.cfg.tmpl: line 2: the device has no variable `sip_password`"),
        "{log}"
    );
    assert_metrics(
        &metrics(&p),
        &[
            (
                "provbox_device_renders_total{outcome=\"missing_variable\"}",
                1.0,
            ),
            (
                "provbox_device_refusals_total{reason=\"missing_variable\"}",
                1.0,
            ),
        ],
    );
}

#[test]
fn missing_template_variable_answers_403_when_configured() {
    crate::support::needs!("curl");
    let d = setup(
        &[("p.cfg.tmpl", "password=$sip_password\n")],
        ("inventory.csv", "mac,extension\n00562b043615,1001\n"),
    );
    let (_pb, p) = start(d, &trusting_agents("  missing_variable: 403\n"));
    assert_eq!(http_as(&p, ua_of("cisco"), "/p.cfg").0, 403);
}

#[test]
fn inventory_import_names_the_line_and_the_server_picks_up_the_merge() {
    crate::support::needs!("curl");
    let d = setup(
        &[("cfg/$MA.xml.tmpl", "ext=$extension name=$display_name\n")],
        (
            "inventory.csv",
            "mac,extension,display_name\n00562b043615,1001,Alice\n",
        ),
    );
    let bad = d.path().join("scan-bad.csv");
    std::fs::write(
        &bad,
        "# scanned at the loading dock\n0015654AA937,acme,1002\n00-15-65-4a-a9-3,acme,1003\n0004f2abcdef,acme,1004,a,b,c,d,e,f,g\n",
    )
    .unwrap();
    let good = d.path().join("scan.csv");
    std::fs::write(
        &good,
        "mac,extension,display_name\n00:15:65:4A:A9:37,1002,Bob\n00562b043615,,Alice B.\n",
    )
    .unwrap();
    let cfg_path = d.path().join("config.yaml");
    let (mut pb, p) = start(d, &trusting_agents(""));
    let inv_before = std::fs::read_to_string(pb.path().join("inventory.csv")).unwrap();

    let (code, out) = provbox_with(&cfg_path, &["devices", "import", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("scan-bad.csv:3: `00-15-65-4a-a9-3` is not a MAC address"),
        "{out}"
    );
    assert!(out.contains("scan-bad.csv:4: 10 columns"), "{out}");
    assert_eq!(
        std::fs::read_to_string(pb.path().join("inventory.csv")).unwrap(),
        inv_before,
        "nothing merged"
    );
    assert_eq!(
        http_as(&p, ua_of("yealink"), &format!("/cfg/{B}.xml")).0,
        404
    );

    let (code, out) = provbox_with(&cfg_path, &["devices", "import", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 devices (1 added, 1 updated)"), "{out}");
    // The running server reloads the inventory by itself.
    let start = Instant::now();
    loop {
        let r = http_as(&p, ua_of("yealink"), &format!("/cfg/{B}.xml"));
        if r.0 == 200 {
            assert_eq!(r.1, "ext=1002 name=Bob\n");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "inventory not reloaded:\n{}",
            pb.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_as(&p, ua_of("cisco"), &format!("/cfg/{A}.xml")),
        (200, "ext=1001 name=Alice B.\n".into())
    );

    // A broken hand edit is refused with its line; the previous inventory keeps serving.
    std::fs::write(
        pb.path().join("inventory.csv"),
        "mac,extension\n00562b043615,1001\nzz,1\n",
    )
    .unwrap();
    pb.wait_for_log("inventory.csv:3:", Duration::from_secs(10));
    assert_eq!(
        http_as(&p, ua_of("yealink"), &format!("/cfg/{B}.xml")).0,
        200
    );
    assert_metrics(
        &metrics(&p),
        &[(
            "provbox_device_inventory_reloads_total{outcome=\"error\"}",
            1.0,
        )],
    );
}

#[test]
fn config_errors_name_the_devices_field_and_line() {
    let d = Provbox::dir();
    let cfg = d.path().join("config.yaml");
    let (code, out) = check_config(
        &cfg,
        "catalog:\n  roots: [files]\ndevices:\n  inventory: nowhere.csv\n  missing_variable: 500\n",
    );
    assert_eq!(code, 1, "{out}");
    assert_mentions(
        &out,
        &[(":4:", "devices.inventory"), (":5:", "expected 403 or 404")],
    );
}

#[test]
fn inventory_inside_a_served_root_refuses_to_start() {
    let d = setup(
        &[("inventory.csv", "mac,extension\n00562b043615,1\n")],
        ("x", ""),
    );
    let p = Ports::free();
    let cfg = d.path().join("config.yaml");
    std::fs::write(
        &cfg,
        config(&p, "devices:\n  inventory: files/inventory.csv\n"),
    )
    .unwrap();
    let out = run(
        support::bin().to_str().unwrap(),
        &["serve", "--config", cfg.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("anyone could download it"), "{err}");
}
