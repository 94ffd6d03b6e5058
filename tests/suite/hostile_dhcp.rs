//! DHCP against one hostile host on the phone LAN (issue 12): a spoofed `chaddr`, the
//! server's own ARP entries, a DISCOVER flood with made-up MACs, and INFORM aimed at
//! another network. Each test runs in its own namespaces on one bridge (see
//! `support::dhcp_raw`); the phone is busybox udhcpc, the attacker sends raw packets.
use crate::support;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use support::dhcp_raw::*;
use support::metric;

const SERVER: [u8; 4] = [198, 18, 0, 1];

/// One subnet with a 20-address pool (198.18.0.100-119).
fn config() -> String {
    format!(
        r#"{LAB_CONFIG_HEAD}  interfaces: [br0]
  rate_limit_per_mac: 50
  options:
    - code: 66
      string: prov.lab.test
  subnets:
    - subnet: 198.18.0.0/24
      pools: ["198.18.0.100-198.18.0.119"]
      router: 198.18.0.1
      lease_time: 1h
"#
    )
}

fn in_pool(ip: Ipv4Addr) -> bool {
    (u32::from(Ipv4Addr::new(198, 18, 0, 100))..=u32::from(Ipv4Addr::new(198, 18, 0, 119)))
        .contains(&u32::from(ip))
}

/// Send `m` and return the reply with its xid, if one comes within `secs`.
fn ask(sock: &UdpSocket, m: &Msg, to: &str, secs: u64) -> Option<Raw> {
    sock.send_to(&m.bytes(), to).unwrap();
    reply_to(sock, m.xid, Duration::from_secs(secs))
}

fn wait_for_metric(lan: &Lan, series: &str, at_least: f64) -> String {
    wait_until(Duration::from_secs(20), || {
        let m = lan.metrics();
        (metric(&m, series) >= at_least).then_some(m)
    })
    .unwrap_or_else(|| panic!("{series} never reached {at_least}:\n{}", lan.metrics()))
}

#[test]
fn spoofed_chaddr_gets_no_second_lease_for_a_leased_mac() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, p) = Lan::serving(&config());
    let victim_mac = [2, 0, 0, 0, 0x70, 1];
    let phone = lan.client(Some("02:00:00:00:70:01"), None);
    let t = tempfile::tempdir().unwrap();
    let phone_ip = udhcpc_once(&phone, t.path(), &[])["ip"].clone();

    // Another host on the LAN, with the phone's MAC in chaddr and its own client id:
    // DISCOVER, SELECTING REQUEST for a free address, INIT-REBOOT for the phone's own.
    let (_attacker, sock) = lan.raw_client("02:00:00:00:70:99", "198.18.0.40/24");
    let evil_id = b"\x00not-the-phone".to_vec();
    let mut d = Msg::new(1, victim_mac);
    d.opts.push((61, evil_id.clone()));
    let offer = ask(&sock, &d, ALL, 3);
    assert!(offer.is_none(), "offered to the spoofer: {offer:?}");
    let mut r = Msg::new(3, victim_mac);
    r.opts = vec![
        (61, evil_id.clone()),
        (50, vec![198, 18, 0, 119]),
        (54, SERVER.to_vec()),
    ];
    let ack = ask(&sock, &r, ALL, 3);
    assert!(ack.is_none(), "answered the spoofer: {ack:?}");
    let mut reboot = Msg::new(3, victim_mac);
    reboot.xid ^= 0x100;
    let ip: Ipv4Addr = phone_ip.parse().unwrap();
    reboot.opts = vec![(61, evil_id), (50, ip.octets().to_vec())];
    let ack = ask(&sock, &reboot, ALL, 3);
    assert!(ack.is_none(), "answered the spoofer: {ack:?}");

    let m = wait_for_metric(
        &lan,
        "provbox_dhcp_dropped_total{reason=\"mac_leased_to_other_client\"}",
        3.0,
    );
    assert!(
        metric(&m, "provbox_dhcp_sent_total{message=\"ack\"}") == 1.0,
        "{m}"
    );
    assert!(
        p.log().contains("holds a live lease; refused"),
        "{}",
        p.log()
    );
    // The store holds one lease for the phone's MAC: the phone's.
    let cfg = p.path().join("config.yaml");
    let (code, out) = support::provbox(&["leases", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("02:00:00:00:70:01"))
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].starts_with(&phone_ip), "{out}");
    // The phone itself still renews its address.
    let t = tempfile::tempdir().unwrap();
    assert_eq!(udhcpc_once(&phone, t.path(), &[])["ip"], phone_ip);
}

#[test]
fn the_servers_own_arp_entry_for_a_reply_proves_nothing() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, p) = Lan::serving(&config());
    let (_host, sock) = lan.raw_client("02:00:00:00:71:01", "198.18.0.41/24");
    let (fake, fake2) = ([2, 0, 0, 0, 0x71, 0x99], [2, 0, 0, 0, 0x71, 0x98]);
    // A broadcast DISCOVER tells the host which address the fake MAC is offered...
    let offer = exchange(&sock, &Msg::new(1, fake), ALL);
    assert!(in_pool(offer.yiaddr), "{offer:?}");
    // ...a REQUEST without the broadcast flag has the ACK unicast to that MAC, and a
    // DISCOVER without it the OFFER, each through an ARP entry the server writes.
    let mut r = Msg::new(3, fake);
    r.flags = 0;
    r.opts = vec![(50, offer.yiaddr.octets().to_vec()), (54, SERVER.to_vec())];
    sock.send_to(&r.bytes(), ALL).unwrap();
    let mut d = Msg::new(1, fake2);
    d.flags = 0;
    sock.send_to(&d.bytes(), ALL).unwrap();
    wait_for_metric(&lan, "provbox_dhcp_sent_total{message=\"ack\"}", 1.0);
    wait_for_metric(&lan, "provbox_dhcp_sent_total{message=\"offer\"}", 2.0);
    let log = p.log();
    assert!(log.matches("dest=Hw(").count() >= 2, "{log}");
    assert!(!log.contains("cannot set ARP entry"), "{log}");

    // The server namespace's neighbour table shows neither MAC as a complete entry.
    let arp = lan.srv.exec(&["cat", "/proc/net/arp"]);
    for line in arp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (ip, flags, hw) = (f[0], f[2], f[3]);
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap() & 0x2 != 0;
        assert!(
            !(complete && (hw == "02:00:00:00:71:99" || hw == "02:00:00:00:71:98")),
            "the server's own entry for {ip} is still there:\n{arp}"
        );
    }
}

#[test]
fn rotating_chaddr_discover_flood_does_not_keep_a_small_pool_from_a_real_phone() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&config());
    let (_host, sock) = lan.raw_client("02:00:00:00:72:01", "198.18.0.42/24");
    // 2,000 DISCOVERs, each from a MAC never seen before (so no per-MAC limit applies),
    // against 20 addresses.
    // Sent in batches the server has read before the next goes out, so the kernel's
    // receive buffer never overflows on a loaded machine.
    let mut m = String::new();
    for batch in 0..10u32 {
        for i in batch * 200..(batch + 1) * 200 {
            let mac = [2, 1, 0, (i >> 8) as u8, i as u8, 0x72];
            sock.send_to(&Msg::new(1, mac).bytes(), "198.18.0.1:67")
                .unwrap();
        }
        m = wait_for_metric(
            &lan,
            "provbox_dhcp_received_total{message=\"discover\"}",
            ((batch + 1) * 200) as f64,
        );
    }
    assert!(
        metric(&m, "provbox_dhcp_dropped_total{reason=\"pool_exhausted\"}") >= 1000.0,
        "the flood did not fill the pool:\n{m}"
    );
    // A phone arriving after the flood gets an address within its usual retries.
    let phone = lan.client(None, None);
    let t = tempfile::tempdir().unwrap();
    let env = udhcpc_once(&phone, t.path(), &["-t", "10"]);
    assert!(in_pool(env["ip"].parse().unwrap()), "{env:?}");
}

#[test]
fn inform_with_an_off_link_ciaddr_gets_no_reply() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&config());
    // The host also owns 10.99.0.7, and the server can route there: an ACK sent to an
    // off-link ciaddr would arrive.
    let host = lan.client(Some("02:00:00:00:73:01"), Some("198.18.0.43/24"));
    host.ip(&["addr", "add", "10.99.0.7/24", "dev", "eth0"]);
    lan.srv
        .ip(&["route", "add", "10.99.0.0/24", "via", "198.18.0.43"]);
    let sock = raw_socket(&host, 68);
    let mac = [2, 0, 0, 0, 0x73, 1];
    let mut m = Msg::new(8, mac);
    m.flags = 0;
    m.ciaddr = "10.99.0.7".parse().unwrap();
    let r = ask(&sock, &m, "198.18.0.1:67", 3);
    assert!(
        r.is_none(),
        "INFORM for an off-link address answered: {r:?}"
    );
    let met = wait_for_metric(
        &lan,
        "provbox_dhcp_dropped_total{reason=\"inform_off_link\"}",
        1.0,
    );
    assert_eq!(
        metric(&met, "provbox_dhcp_sent_total{message=\"ack\"}"),
        0.0,
        "{met}"
    );
    // The host's on-link address is answered as before.
    let mut ok = Msg::new(8, mac);
    ok.flags = 0;
    ok.xid ^= 0x100;
    ok.ciaddr = "198.18.0.43".parse().unwrap();
    let ack = ask(&sock, &ok, "198.18.0.1:67", 5).expect("on-link INFORM unanswered");
    assert_eq!((ack.mtype(), ack.ciaddr), (5, ok.ciaddr));
    assert_eq!(ack.opt(66), Some(&b"prov.lab.test"[..]));
}
