//! End to end on a staging LAN made of network namespaces: phones get their address from
//! provbox's DHCP, resolve the provisioning name (option 66) with the DNS server DHCP gave
//! them (option 6: provbox itself), fetch their own rendered profile over TFTP (identified
//! by that lease),
//! report over syslog, and the device status follows (seen → configured → provisioned, or
//! failed with the phone's reason). Everything runs inside namespaces this test creates
//! (198.18.0.0/24, a bridge inside the server namespace), torn down even on failure.
use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::Provbox;
use support::dedupe::{LAB_HTTP_TFTP, netns_tftp_get as tftp_get};
use support::netns::{Lab, Netns};

const A: &str = "02:00:00:00:00:0a";
const B: &str = "02:00:00:00:00:0b";

fn hex(mac: &str) -> String {
    mac.replace(':', "")
}

fn config() -> String {
    format!("data_dir: data\ncatalog:\n  roots: [files]\n{LAB_HTTP_TFTP}")
        + r#"dhcp:
  enabled: true
  interfaces: [br0]
  options:
    - {code: 66, string: prov.lab.test}
  subnets:
    - subnet: 198.18.0.0/24
      pools: ["198.18.0.100-198.18.0.150"]
      lease_time: 1h
devices:
  inventory: inventory.yaml
  trust: {lease: true}
dns:
  enabled: true
  listen: ["0.0.0.0:53"]
  zones:
    - name: lab.test
      records:
        - {name: prov, a: [198.18.0.1]}
  leases: {domain: phones.lab.test}
syslog:
  enabled: true
  listen: 0.0.0.0:5514
dashboard:
  enabled: true
  listen: 127.0.0.1:8081
  token: e2e-dashboard-token-0123456789
"#
}

fn udhcpc_script(dir: &Path) -> String {
    let path = dir.join("udhcpc.sh");
    support::dhcp_raw::recording_script(&path, "$ip $dns $tftp", &dir.join("last-lease"));
    path.to_str().unwrap().to_string()
}

/// What a phone's lease told it.
struct Lease {
    ip: String,
    dns: String,
    /// Option 66, the provisioning server's name.
    tftp: String,
}

/// A phone: its own namespace on the LAN with a fixed MAC, a hostname (option 12) and a
/// DHCP lease from provbox.
fn phone(lab: &Lab, srv: &Netns, tag: &str, mac: &str, script: &str) -> (Netns, Lease) {
    let ns = lab.ns(tag);
    lab.attach_as(srv, &ns, "eth0", None, Some(mac));
    let hostname = format!("hostname:phone-{tag}");
    let mut args = support::dhcp_raw::UDHCPC_ONCE.to_vec();
    args.extend([
        "-t", "5", "-T", "1", "-s", script, "-O", "66", "-x", &hostname,
    ]);
    let out = ns.run(&args);
    assert!(
        out.status.success(),
        "{mac}: no lease: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = Path::new(script).with_file_name("last-lease");
    let line = std::fs::read_to_string(last).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        f.len(),
        3,
        "{mac}: lease without dns or option 66: {line:?}"
    );
    let lease = Lease {
        ip: f[0].into(),
        dns: f[1].into(),
        tftp: f[2].into(),
    };
    (ns, lease)
}

/// `dig +short` from inside a phone's namespace, at the DNS server its lease named.
/// `line` sent from `ns` to provbox's syslog port as a phone does (RFC 3164 over UDP).
fn syslog_from(ns: &Netns, line: &str) -> std::process::Output {
    ns.run(&[
        "logger",
        "-n",
        "198.18.0.1",
        "-P",
        "5514",
        "-d",
        "--rfc3164",
        line,
    ])
}

fn dig(ns: &Netns, server: &str, name: &str) -> String {
    let out = ns.run(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        &format!("@{server}"),
        name,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The dashboard's record of a device, read from inside the server namespace.
fn device(srv: &Netns, mac: &str) -> Option<serde_json::Value> {
    let out = srv.run(&[
        "curl",
        "-s",
        "--max-time",
        "5",
        "-H",
        "Authorization: Bearer e2e-dashboard-token-0123456789",
        &format!("http://127.0.0.1:8081/api/devices/{}", hex(mac)),
    ]);
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_state(srv: &Netns, pb: &Provbox, mac: &str, state: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let d = device(srv, mac);
        if let Some(d) = &d
            && d["state"] == state
        {
            return d.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{mac} never reached {state}; last record: {d:#?}\n{}",
            pb.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn leased_phones_get_their_own_profile_over_tftp_and_reach_provisioned() {
    crate::support::needs!(root, "curl", "dig", "ip", "logger", "tftp");
    for p in ["busybox", "tftp", "curl", "logger", "dig"] {
        support::require(p);
    }
    let dir = crate::support::dedupe::profile_dir(
        "<flat-profile><Ext>$extension</Ext><Mac>$MA</Mac></flat-profile>\n",
        &format!(
            "devices:\n  - mac: \"{A}\"\n    extension: \"101\"\n  - mac: \"{B}\"\n    extension: \"102\"\n"
        ),
    );
    // A private per-device static file (under `devices/`, named for A).
    std::fs::create_dir_all(dir.path().join("files/devices")).unwrap();
    std::fs::write(
        dir.path().join(format!("files/devices/{}.secret", hex(A))),
        "A only\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let script = udhcpc_script(work.path());

    let lab = Lab::new();
    let srv = lab.ns("s");
    lab.bridge(&srv, Some("198.18.0.1/24"));
    let pb = Provbox::start_with(dir, &config(), &srv.prefix());

    let (a, lease_a) = phone(&lab, &srv, "a", A, &script);
    let (b, lease_b) = phone(&lab, &srv, "b", B, &script);
    wait_state(&srv, &pb, A, "seen");

    // DHCP named provbox as the DNS server (option 6) and the provisioning server by name
    // (option 66); that name resolves there, and so do the phones' own lease names.
    assert_eq!(
        (lease_a.dns.as_str(), lease_a.tftp.as_str()),
        ("198.18.0.1", "prov.lab.test")
    );
    assert_eq!(dig(&a, &lease_a.dns, &lease_a.tftp), "198.18.0.1");
    assert_eq!(dig(&a, &lease_a.dns, "phone-b.phones.lab.test"), lease_b.ip);
    assert_eq!(dig(&b, &lease_b.dns, "phone-a.phones.lab.test"), lease_a.ip);

    // Over TFTP, each phone is known by its lease and gets exactly its own profile.
    let want = |mac: &str, ext: &str| {
        format!(
            "<flat-profile><Ext>{ext}</Ext><Mac>{}</Mac></flat-profile>\n",
            hex(mac)
        )
        .into_bytes()
    };
    let file = |mac: &str| format!("cfg/{}.xml", hex(mac));
    assert_eq!(tftp_get(&a, &file(A), work.path()).unwrap(), want(A, "101"));
    assert_eq!(tftp_get(&b, &file(B), work.path()).unwrap(), want(B, "102"));
    // The TFTP transfer alone moves the device on (before any HTTP request below).
    wait_state(&srv, &pb, A, "configured");
    // Another phone's profile is refused (access violation), and nothing is written.
    let refused = tftp_get(&a, &file(B), work.path()).unwrap_err();
    assert!(refused.contains("Error code 2"), "{refused}");
    let secret = format!("devices/{}.secret", hex(A));
    let refused = tftp_get(&b, &secret, work.path()).unwrap_err();
    assert!(refused.contains("Error code 2"), "{refused}");
    assert_eq!(tftp_get(&a, &secret, work.path()).unwrap(), b"A only\n");
    // A write is refused by the listener itself.
    let put = a.run(&["tftp", "198.18.0.1", "-c", "put", &script, "x.sh"]);
    let said =
        String::from_utf8_lossy(&put.stdout).into_owned() + &String::from_utf8_lossy(&put.stderr);
    assert!(said.contains("Error code 2"), "{said}");
    // Refused requests are on the requester's timeline too, with their outcome.
    let refusals = [
        format!("tftp {} 0 bytes access_violation", file(B)),
        "tftp x.sh 0 bytes write_refused".to_string(),
    ];
    let start = Instant::now();
    loop {
        let d = device(&srv, A).unwrap_or_default();
        let events = d["events"].as_array().cloned().unwrap_or_default();
        let has = |want: &str| events.iter().any(|e| e["detail"] == want);
        if refusals.iter().all(|r| has(r)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "refusals missing from A's timeline: {d:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // HTTP from the same leased address: the same bytes.
    let out = a.run(&[
        "curl",
        "-s",
        "--max-time",
        "5",
        &format!("http://198.18.0.1:8080/{}", file(A)),
    ]);
    assert_eq!(out.stdout, want(A, "101"));
    let url = format!("http://198.18.0.1:8080/{}", file(B));
    let out = a.run(&[&["curl"], support::CURL_CODE, &["--max-time", "5", &url]].concat());
    assert_eq!(out.stdout, b"403", "B's profile over HTTP from A's lease");

    // The phone's own syslog line finishes it.
    let line = format!(
        "CP-8831-3PCC {A} -- Successful resync tftp://198.18.0.1/{}",
        file(A)
    );
    assert!(syslog_from(&a, &line).status.success());
    let d = wait_state(&srv, &pb, A, "provisioned");
    assert_eq!(
        d["ip"].as_str().map(|ip| ip.starts_with("198.18.0.1")),
        Some(true),
        "{d:#}"
    );
    // A failure shows the phone's reason.
    let line = format!("CP-8831-3PCC {B} -- Resync failed: 401 Unauthorized");
    syslog_from(&b, &line);
    let d = wait_state(&srv, &pb, B, "failed");
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("401 Unauthorized"),
        "{d:#}"
    );
}
