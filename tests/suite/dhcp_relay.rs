//! Switch-port identity end to end (issue 17 item 2), through a real relay agent: ISC
//! `dhcrelay -a` (option 82, circuit-id = the interface the request came in on) runs in
//! its own namespace between the phone's namespace and the LAN bridge provbox serves.
//!
//! ```text
//!  phone ns          relay ns (forwarding)                 srv ns (provbox)
//!  eth0 <--veth--> b3p12 198.18.1.1 | eth0 198.18.0.2 <--> br0 198.18.0.1
//! ```
//!
//! busybox udhcpc in the phone namespace gets the port-keyed reservation's address, then
//! fetches its profile over HTTP and TFTP from that address and gets the port's inventory
//! row rendered (nobody put its MAC anywhere); the dashboard's device view shows port → MAC.
use crate::support;

use std::time::Duration;

use support::dedupe::LAB_HTTP_TFTP;
use support::dhcp_raw::*;
use support::netns::{Bg, Netns};
use support::{eventually, needs, wait_until};

const PORT: &str = "b3p12";
const TOKEN: &str = "relay-dashboard-token-0123456789";

fn config() -> String {
    format!(
        r#"{LAB_CONFIG_HEAD}  interfaces: [br0]
  trusted_relays: [198.18.1.1]
  options:
    - {{code: 66, string: prov.lab.test}}
{LAB_POOL}    - subnet: 198.18.1.0/24
      pools: ["198.18.1.100-198.18.1.110"]
      router: 198.18.1.1
      reservations:
        - {{circuit: {PORT}, address: 198.18.1.12, hostname: slot12}}
{LAB_HTTP_TFTP}devices:
  inventory: inventory.yaml
  trust: {{relay: true}}
dashboard:
  enabled: true
  listen: 127.0.0.1:8081
  token: {TOKEN}
"#
    )
}

/// The relay namespace on the LAN, with a veth `b3p12` to a new phone namespace (whose
/// end is `eth0`, unaddressed, MAC `mac`), forwarding on, and dhcrelay running.
fn relay(lan: &mut Lan, mac: &str) -> (Netns, Netns, Bg) {
    let rly = lan.client(Some("02:00:00:00:40:01"), Some("198.18.0.2/24"));
    let phone = lan.lab.ns("ph");
    rly.ip(&[
        "link",
        "add",
        PORT,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &phone.name,
    ]);
    rly.ip(&["addr", "add", "198.18.1.1/24", "dev", PORT]);
    rly.ip(&["link", "set", PORT, "up"]);
    phone.ip(&["link", "set", "eth0", "address", mac]);
    phone.ip(&["link", "set", "eth0", "up"]);
    rly.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    lan.srv
        .ip(&["route", "add", "198.18.1.0/24", "via", "198.18.0.2"]);
    let up = wait_until(Duration::from_secs(5), || {
        let s = phone.exec(&["cat", "/sys/class/net/eth0/operstate"]);
        (s.trim() == "up").then_some(())
    });
    assert!(up.is_some(), "the phone's eth0 never came up");
    // -a: add option 82 (circuit-id = the downstream interface's name); -m replace: a
    // client's own option 82 never reaches the server.
    let pid = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let bg = rly.spawn(&[
        "dhcrelay",
        "-d",
        "-4",
        "-a",
        "-m",
        "replace",
        "-pf",
        pid.to_str().unwrap(),
        "-id",
        PORT,
        "-iu",
        "eth0",
        "198.18.0.1",
    ]);
    (rly, phone, bg)
}

/// A test dir with a profile template and an inventory whose only row names the port.
fn lab_dir() -> tempfile::TempDir {
    // The slot's row names no MAC: only the port.
    crate::support::dedupe::profile_dir(
        "<device mac=\"$MAC\" ext=\"$extension\" name=\"$(display_name)\"/>\n",
        &format!(
            "devices:\n  - circuit: {PORT}\n    extension: \"1012\"\n    display_name: Slot 12\n"
        ),
    )
}

#[test]
fn a_phone_behind_a_relay_gets_its_switch_ports_profile() {
    needs!(root, "busybox", "dhcrelay", "curl", "tftp", "ip");
    let mut lan = Lan::new();
    let dir = lab_dir();
    let p = lan.start(dir, &config());
    let mac = "02:00:00:00:12:34";
    let (_rly, phone, mut relay_bg) = relay(&mut lan, mac);

    let tmp = tempfile::tempdir().unwrap();
    let env = udhcpc_once(&phone, tmp.path(), &[]);
    assert_eq!(env["ip"], "198.18.1.12", "the port's reservation: {env:?}");
    assert_eq!(env["router"].trim(), "198.18.1.1", "{env:?}");
    phone.ip(&["route", "add", "default", "via", "198.18.1.1"]);

    // HTTP from the leased address: the port's row, rendered for this MAC.
    let want = format!("<device mac=\"{mac}\" ext=\"1012\" name=\"Slot 12\"/>\n");
    let url = format!("http://198.18.0.1:8080/cfg/{}.xml", mac.replace(':', ""));
    assert_eq!(
        phone.curl(&[&url]),
        (200, want.clone()),
        "{}\n{}",
        p.log(),
        relay_bg.stop().1
    );
    // TFTP too, the same bytes.
    let name = format!("cfg/{}.xml", mac.replace(':', ""));
    let got = crate::support::dedupe::netns_tftp_get(&phone, &name, tmp.path());
    assert_eq!(
        got.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Ok(want)
    );

    // The dashboard's device view shows the port → MAC binding on the timeline.
    // The dashboard's record of device `m`, as text.
    let device_text = |m: &str| {
        let out = lan.srv.run(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("http://127.0.0.1:8081/api/devices/{}", m.replace(':', "")),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let device = || serde_json::from_str::<serde_json::Value>(&device_text(mac)).ok();
    let note = format!("port {PORT} -> {mac} (lease 198.18.1.12, relay 198.18.1.1)");
    eventually(
        "the port note on the dashboard",
        Duration::from_secs(10),
        || {
            device().is_some_and(|d| {
                d["events"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|e| e["kind"] == "port" && e["detail"].as_str() == Some(&note))
                })
            })
        },
    );

    // Another phone on the same port: the timeline says a different device is there.
    // The first phone lets its lease go (a RELEASE from its address, client-id as udhcpc
    // sends it), so the newcomer gets the slot's address.
    let sock = phone.enter(|| std::net::UdpSocket::bind("198.18.1.12:68").unwrap());
    let mut rel = Msg::new(7, [2, 0, 0, 0, 0x12, 0x34]);
    rel.ciaddr = "198.18.1.12".parse().unwrap();
    rel.opts = vec![
        (54, vec![198, 18, 0, 1]),
        (61, vec![1, 2, 0, 0, 0, 0x12, 0x34]),
    ];
    sock.send_to(&rel.bytes(), "198.18.0.1:67").unwrap();
    eventually("the release", Duration::from_secs(10), || {
        p.log().contains("dhcp lease released")
    });
    let second = "02:00:00:00:12:99";
    phone.ip(&["link", "set", "eth0", "address", second]);
    let tmp2 = tempfile::tempdir().unwrap();
    let env = udhcpc_once(&phone, tmp2.path(), &[]);
    assert_eq!(env["ip"], "198.18.1.12", "{env:?}");
    let replaced =
        format!("port {PORT} -> {second} (was {mac}; lease 198.18.1.12, relay 198.18.1.1)");
    eventually("the replacement note", Duration::from_secs(10), || {
        p.log()
            .contains(&format!("dhcp: port {PORT} -> {second} (was {mac})"))
    });
    let d = device_text(second);
    assert!(d.contains(&replaced), "{d}");
}

#[test]
fn option_82_from_an_untrusted_relay_is_ignored() {
    needs!(root, "busybox", "dhcrelay", "ip");
    let mut lan = Lan::new();
    let dir = lab_dir();
    // Only 198.18.9.9 is trusted: this relay's port names nothing.
    let cfg = config().replace(
        "trusted_relays: [198.18.1.1]",
        "trusted_relays: [198.18.9.9]",
    );
    let p = lan.start(dir, &cfg);
    let (_rly, phone, _bg) = relay(&mut lan, "02:00:00:00:12:35");
    let tmp = tempfile::tempdir().unwrap();
    let env = udhcpc_once(&phone, tmp.path(), &[]);
    let ip: std::net::Ipv4Addr = env["ip"].parse().unwrap();
    assert!(
        ip.octets()[..3] == [198, 18, 1] && (100..=110).contains(&ip.octets()[3]),
        "a pool address, not the port's: {env:?}"
    );
    assert!(!p.log().contains("dhcp: port "), "{}", p.log());
}
