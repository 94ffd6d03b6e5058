//! A hostile host on the phone LAN tries to pass for a phone: a spoofed syslog line, a
//! lease asked for with the victim's MAC in `chaddr`, another device's serial in a
//! User-Agent, PIN guesses from ever new MACs and addresses. Real clients (udhcpc, logger,
//! curl, tftp-hpa) and raw DHCP from network namespaces (198.18.0.0/24 on a bridge inside
//! the server's namespace, torn down after each test), or curl on loopback.
use crate::support;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::dedupe::LAB_HTTP_TFTP;
use support::dhcp_raw::{LAB_CONFIG_HEAD, LAB_POOL};
use support::netns::{Lab, Netns};
use support::{Provbox, free_tcp_port, http_and_metrics, metric};

const SERVER: &str = "198.18.0.1";
const TOKEN: &str = "hostile-devices-token-0123456789";

fn hex(mac: &str) -> String {
    mac.replace(':', "")
}

fn dhcp_config(extra: &str) -> String {
    format!(
        r#"{LAB_CONFIG_HEAD}  interfaces: [br0]
{LAB_POOL}      lease_time: 1h
{extra}"#
    )
}

/// A LAN: bridge br0 (198.18.0.1/24) in the server namespace, where provbox runs.
struct Lan {
    lab: Lab,
    srv: Netns,
    n: u32,
}

impl Lan {
    fn new() -> Lan {
        for p in ["busybox", "curl", "ip"] {
            support::require(p);
        }
        let lab = Lab::new();
        let srv = lab.ns("s");
        lab.bridge(&srv, Some("198.18.0.1/24"));
        Lan { lab, srv, n: 0 }
    }

    /// A host on the LAN with its own MAC, statically addressed when `addr` is given.
    fn host(&mut self, mac: &str, addr: Option<&str>) -> Netns {
        self.n += 1;
        let ns = self.lab.ns(&format!("h{}", self.n));
        self.lab.attach_as(&self.srv, &ns, "eth0", addr, Some(mac));
        ns
    }

    /// curl from inside the server namespace: (status, body).
    fn metrics(&self) -> String {
        self.srv.curl(&["http://127.0.0.1:9100/metrics"]).1
    }
}

/// A phone: udhcpc in its own namespace gets a lease and configures it. Returns the address.
fn lease_with_udhcpc(ns: &Netns, dir: &Path) -> String {
    let script = dir.join(format!("udhcpc-{}.sh", ns.name));
    let last = dir.join(format!("lease-{}", ns.name));
    support::dhcp_raw::recording_script(&script, "$ip", &last);
    let mut args = support::dhcp_raw::UDHCPC_ONCE.to_vec();
    args.extend(["-t", "5", "-T", "1", "-s", script.to_str().unwrap()]);
    let out = ns.run(&args);
    assert!(
        out.status.success(),
        "udhcpc got no lease: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&last).unwrap().trim().to_string()
}

/// A stub phone web server listening inside `ns` on port 8088: every request head it gets
/// is sent on the returned channel (and answered 200).
fn web_stub(ns: &Netns) -> mpsc::Receiver<String> {
    let l = ns.enter(|| TcpListener::bind("0.0.0.0:8088").unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let head = support::read_head(&mut s);
            if head.is_empty() {
                continue; // a bare connection (the kernel resolving the neighbour)
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx
                .send(String::from_utf8_lossy(&head).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

fn device(lan: &Lan, mac: &str) -> serde_json::Value {
    let (code, body) = lan.srv.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("http://127.0.0.1:8081/api/devices/{}", hex(mac)),
    ]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

use support::wait_for;

#[test]
fn a_spoofed_syslog_line_does_not_move_a_leased_phone_nor_its_resync() {
    crate::support::needs!(root, "busybox", "ip", "logger");
    support::require("logger");
    let phone_mac = "02:00:00:00:0d:01";
    let mut lan = Lan::new();
    let work = tempfile::tempdir().unwrap();
    let cfg = dhcp_config(&format!(
        r#"syslog:
  enabled: true
  listen: 0.0.0.0:5514
dashboard:
  enabled: true
  listen: 127.0.0.1:8081
  token: {TOKEN}
  resync:
    method: http
    http_url: "http://{{ip}}:8088/admin/resync"
    http_user: admin
    http_password: secret
"#
    ));
    let pb = Provbox::start_with(Provbox::dir(), &cfg, &lan.srv.prefix());
    let phone = lan.host(phone_mac, None);
    let leased = lease_with_udhcpc(&phone, work.path());
    let phone_heard = web_stub(&phone);
    let attacker = lan.host("02:00:00:00:0d:66", Some("198.18.0.66/24"));
    let attacker_heard = web_stub(&attacker);
    wait_for(
        "the lease in the status book",
        Duration::from_secs(15),
        || (device(&lan, phone_mac)["ip"] == leased.as_str()).then_some(()),
    );

    // The attacker speaks for the phone: a provisioning report and a plain line.
    for line in [
        format!(
            "SPA504G {} -- Successful resync http://198.18.0.66/evil.cfg",
            hex(phone_mac)
        ),
        format!("phone {phone_mac} is here now"),
    ] {
        let out = attacker.run(&[
            "logger",
            "-n",
            SERVER,
            "-P",
            "5514",
            "-d",
            "--rfc3164",
            &line,
        ]);
        assert!(out.status.success());
    }
    let refused = "provbox_status_claims_refused_total{reason=\"device_proven_elsewhere\"}";
    wait_for("both lines handled", Duration::from_secs(15), || {
        let moved = device(&lan, phone_mac)["ip"] != leased.as_str();
        (moved || metric(&lan.metrics(), refused) >= 2.0).then_some(())
    });
    let d = device(&lan, phone_mac);
    assert_eq!(
        d["ip"],
        leased.as_str(),
        "the spoofed line moved the phone: {d:#}"
    );
    assert_ne!(
        d["state"], "provisioned",
        "the spoofed report counted: {d:#}"
    );
    let text = d.to_string();
    assert!(text.contains("claim_refused"), "not on the timeline: {d:#}");
    assert_eq!(metric(&lan.metrics(), refused), 2.0);

    // The resync goes to the real phone, with its credentials; the attacker hears nothing.
    let (code, body) = lan.srv.curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "Origin: http://127.0.0.1:8081",
        "-H",
        "Sec-Fetch-Site: same-origin",
        &format!(
            "http://127.0.0.1:8081/api/devices/{}/resync",
            hex(phone_mac)
        ),
    ]);
    assert_eq!(code, 202, "{body}");
    let head = phone_heard
        .recv_timeout(Duration::from_secs(15))
        .unwrap_or_else(|_| panic!("the phone got no resync:\n{}", pb.log()));
    assert!(head.starts_with("GET /admin/resync HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("Authorization: Basic YWRtaW46c2VjcmV0\r\n"),
        "{head}"
    );
    wait_for("the resync noted", Duration::from_secs(15), || {
        device(&lan, phone_mac)
            .to_string()
            .contains("resync_sent")
            .then_some(())
    });
    assert!(
        attacker_heard.try_recv().is_err(),
        "the attacker got a request"
    );

    // An address no proven device holds gets no credentials either (CLI by address).
    let config = pb.path().join("config.yaml");
    let out = lan.srv.run(&[
        support::bin().to_str().unwrap(),
        "resync",
        "198.18.0.66",
        "--config",
        config.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("credentials not sent"), "{said}");
    assert!(
        attacker_heard.try_recv().is_err(),
        "the attacker got a request"
    );
}

// ------------------------------------------------------------------ raw DHCP

fn dhcp_packet(
    mtype: u8,
    chaddr: [u8; 6],
    xid: u32,
    client_id: &[u8],
    request: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // broadcast the reply
    b[28..34].copy_from_slice(&chaddr);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, mtype]);
    b.extend_from_slice(&[61, client_id.len() as u8]);
    b.extend_from_slice(client_id);
    if let Some(ip) = request {
        b.extend_from_slice(&[50, 4]);
        b.extend_from_slice(&ip.octets());
        b.extend_from_slice(&[54, 4, 198, 18, 0, 1]);
    }
    b.extend_from_slice(&[55, 3, 1, 3, 66, 255]);
    b
}

/// Send and wait for the reply with `xid`: (message type, yiaddr).
fn dhcp_exchange(sock: &UdpSocket, packet: &[u8], xid: u32) -> (u8, Ipv4Addr) {
    sock.send_to(packet, "255.255.255.255:67").unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let b = &buf[..n];
        if n < 240 || b[0] != 2 || b[4..8] != xid.to_be_bytes() {
            continue;
        }
        let mut i = 240;
        let mut mtype = 0;
        while i + 1 < n && b[i] != 255 {
            if b[i] == 0 {
                i += 1;
                continue;
            }
            if b[i] == 53 {
                mtype = b[i + 2];
            }
            i += 2 + b[i + 1] as usize;
        }
        return (mtype, Ipv4Addr::new(b[16], b[17], b[18], b[19]));
    }
    panic!("no DHCP reply");
}

#[test]
fn a_lease_asked_for_with_the_victims_chaddr_does_not_prove_the_victim() {
    crate::support::needs!(root, "busybox", "ip", "tftp");
    support::require("tftp");
    let victim = "02:00:00:00:0e:01";
    let honest = "02:00:00:00:0e:02";
    let attacker_mac = "02:00:00:00:0e:66";
    let mut lan = Lan::new();
    let work = tempfile::tempdir().unwrap();
    let dir = crate::support::dedupe::profile_dir(
        "<flat-profile><Password>$sip_password</Password></flat-profile>\n",
        &format!(
            "devices:\n  - mac: \"{victim}\"\n    sip_password: victim-secret\n  - mac: \"{honest}\"\n    sip_password: honest-secret\n"
        ),
    );
    let cfg = dhcp_config(&format!(
        r#"{LAB_HTTP_TFTP}devices:
  inventory: inventory.yaml
  trust: {{lease: true}}
"#
    ));
    let pb = Provbox::start_with(dir, &cfg, &lan.srv.prefix());
    let url = |mac: &str| format!("http://{SERVER}:8080/cfg/{}.xml", hex(mac));

    // An honest, directly attached phone: its lease proves it.
    let phone = lan.host(honest, None);
    lease_with_udhcpc(&phone, work.path());
    let (code, body) = phone.curl(&[&url(honest)]);
    assert_eq!(code, 200, "{body}\n{}", pb.log());
    assert!(body.contains("honest-secret"), "{body}");

    // The attacker asks for a lease with the victim's MAC in chaddr (its own client id).
    let attacker = lan.host(attacker_mac, None);
    let sock = attacker.enter(|| {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.bind(&SocketAddr::from(([0, 0, 0, 0], 68)).into())
            .unwrap();
        let u: UdpSocket = s.into();
        u.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        u
    });
    let chaddr: [u8; 6] = [2, 0, 0, 0, 0x0e, 0x01];
    let client_id = [1, 2, 0, 0, 0, 0x0e, 0x66];
    let (t, offered) = dhcp_exchange(
        &sock,
        &dhcp_packet(1, chaddr, 0x0e66_0001, &client_id, None),
        0x0e66_0001,
    );
    assert_eq!(t, 2, "no OFFER");
    let (t, acked) = dhcp_exchange(
        &sock,
        &dhcp_packet(3, chaddr, 0x0e66_0002, &client_id, Some(offered)),
        0x0e66_0002,
    );
    assert_eq!((t, acked), (5, offered), "the lease for the victim's MAC");
    attacker.ip(&["addr", "add", &format!("{acked}/24"), "dev", "eth0"]);

    // The lease is recorded against the victim's MAC, but the LAN shows the attacker's.
    let (code, body) = attacker.curl(&[&url(victim)]);
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("victim-secret"), "{body}");
    let got = work.path().join("tftp-got");
    let out = attacker.run(&[
        "tftp",
        SERVER,
        "-m",
        "octet",
        "-c",
        "get",
        &format!("cfg/{}.xml", hex(victim)),
        got.to_str().unwrap(),
    ]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Error"), "tftp: {said}");
    assert!(
        !std::fs::read_to_string(&got)
            .unwrap_or_default()
            .contains("victim-secret")
    );
    let m = lan.metrics();
    assert!(
        metric(
            &m,
            "provbox_device_refusals_total{reason=\"lease_neighbour_mismatch\"}"
        ) >= 2.0,
        "{m}"
    );
    // The honest phone is still served.
    assert_eq!(phone.curl(&[&url(honest)]).0, 200);
}

// ------------------------------------------------------------------ loopback

/// provbox serving `dir` over HTTP on 127.0.0.1 with metrics and the `devices` section:
/// (provbox, HTTP port, metrics port).
fn start_loopback(dir: tempfile::TempDir, devices: &str) -> (Provbox, u16, u16) {
    let (http, metrics) = (free_tcp_port(), free_tcp_port());
    let yaml = format!(
        "data_dir: data\n{}{devices}",
        http_and_metrics(http, metrics)
    );
    (Provbox::start(dir, &yaml), http, metrics)
}

/// curl on loopback from `source` (any 127.0.0.0/8 address): (status, body).
fn get_as(source: &str, ua: &str, url: &str) -> (u16, String) {
    let out = support::run(
        "curl",
        &[
            "-s",
            "--max-time",
            "10",
            "--interface",
            source,
            "-A",
            ua,
            "-w",
            "\n%{http_code}",
            url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

use support::scrape;

#[test]
fn another_devices_serial_does_not_select_its_record() {
    crate::support::needs!("curl");
    let dir = Provbox::dir();
    std::fs::create_dir_all(dir.path().join("files/cfg")).unwrap();
    std::fs::write(
        dir.path().join("files/cfg/$MA.xml.tmpl"),
        "pw=$sip_password sn=$SN\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("inventory.csv"),
        "mac,serial,sip_password\n0015654aa937,CBT000VICTIM,victim-secret\n,CBT000SCANNED,scanned-secret\n",
    )
    .unwrap();
    let (_pb, http, _) = start_loopback(
        dir,
        "devices:\n  inventory: inventory.csv\n  trust: {user_agent: true}\n",
    );
    let get = |mac: &str, serial: &str| {
        get_as(
            "127.0.0.1",
            &format!("Cisco/SPA508G-7.4.4 ({mac})({serial})"),
            &format!("http://127.0.0.1:{http}/cfg/{mac}.xml"),
        )
    };
    // The attacker's own MAC with the victim's serial: not the victim's record.
    let (code, body) = get("02000000bad1", "CBT000VICTIM");
    assert!(!body.contains("victim-secret"), "{code} {body}");
    assert_eq!(code, 404, "{body}");
    // The victim itself still gets its record; a record with only a serial is found by it.
    assert_eq!(
        get("0015654AA937", "CBT000VICTIM"),
        (200, "pw=victim-secret sn=CBT000VICTIM\n".into())
    );
    assert_eq!(
        get("02000000bad2", "CBT000SCANNED"),
        (200, "pw=scanned-secret sn=CBT000SCANNED\n".into())
    );
}

#[test]
fn pin_guesses_from_rotating_macs_and_addresses_share_one_budget() {
    crate::support::needs!("curl");
    let dir = Provbox::serving(&[(
        "init.cfg.tmpl",
        "<flat-profile><!-- $account --></flat-profile>\n",
    )]);
    crate::support::dedupe::write_profile(
        dir.path(),
        "account=$account\n",
        "devices:\n  - pin: \"424242\"\n    account: acme-9\n",
    );
    let budget = 6;
    let (pb, http, metrics) = start_loopback(
        dir,
        &format!(
            "devices:\n  inventory: inventory.yaml\n  trust: {{user_agent: true}}\n  binding:\n    init_prefix: /init\n    profile: init.cfg.tmpl\n    wrong_pins_budget: {budget}\n"
        ),
    );
    let ua = |i: u8| format!("Yealink SIP-T46G 28.72.0.1 02:00:00:00:0f:{i:02x}");
    let url = |path: &str| format!("http://127.0.0.1:{http}{path}");
    // Every guess from a fresh MAC and a fresh address: far from any per-device limit.
    for i in 0..budget {
        let (code, body) = get_as(
            &format!("127.0.0.{}", 20 + i),
            &ua(i),
            &url(&format!("/init/10000{i}")),
        );
        assert_eq!(code, 403, "guess {i}: {body}");
    }
    // The right PIN from yet another MAC and address: the budget is spent for everyone.
    let (code, body) = get_as("127.0.0.60", &ua(60), &url("/init/424242"));
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        get_as("127.0.0.60", &ua(60), &url("/cfg/020000000f3c.xml")).0,
        404,
        "nothing was bound"
    );
    let m = scrape(metrics);
    for (result, n) in [
        ("pin_unknown", budget as f64),
        ("pin_budget_exhausted", 1.0),
        ("bound", 0.0),
        ("pin_attempts_exceeded", 0.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("provbox_device_bindings_total{{result=\"{result}\"}}")
            ),
            n,
            "{result}\n{m}"
        );
    }
    assert!(
        pb.log().contains("wrong_pins_budget used up"),
        "{}",
        pb.log()
    );
}
