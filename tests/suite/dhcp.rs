//! DHCP with real clients, each in its own network namespace on a bridge inside the
//! server's namespace (198.18.0.0/24, no default route; torn down after every test).
//! busybox `udhcpc` is the phone; a raw UDP client (sockets opened inside a namespace)
//! sends what udhcpc cannot (INFORM, relayed messages, garbage) and reads replies as raw
//! bytes: dhcproto stops decoding at a multi-address option 150, so it is not trusted here.
use crate::support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::Provbox;
use support::dedupe::{assert_mentions, check_config, reload_config};
use support::dhcp_raw::*;
use support::metric;

const SERVER: &str = "198.18.0.1";

fn yaml(extra_subnets: &str, interfaces: &str) -> String {
    format!(
        r#"{LAB_CONFIG_HEAD}  interfaces: {interfaces}
  rate_limit_per_mac: 50
  options:
    - code: 66
      string: prov.lab.test
    - code: 150
      ips: [198.18.0.1, 198.18.0.2]
      force: true
  option_sets:
    - name: cisco
      vendor_class: CP-8831
      options:
        - code: 66
          string: cisco.lab.test
        - code: 43
          suboptions: [{{code: 1, string: "http://p/"}}, {{code: 2, ip: 198.18.0.1}}]
    - name: yealink
      vendor_class: yealink
      options:
        - code: 66
          string: yealink.lab.test
        - code: 160
          string: http://198.18.0.1:8080/yealink/
          force: true
  subnets:
    - subnet: 198.18.0.0/24
      pools: ["198.18.0.100-198.18.0.150"]
      router: 198.18.0.1
      domain_name: lab.test
      ntp_servers: [198.18.0.1]
      time_offset: 3600
      lease_time: 1h
      reservations:
        - mac: "02:00:00:00:00:57"
          address: 198.18.0.57
          hostname: phone57
{extra_subnets}"#
    )
}

fn in_pool(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap();
    let n = u32::from(ip);
    (u32::from(Ipv4Addr::new(198, 18, 0, 100))..=u32::from(Ipv4Addr::new(198, 18, 0, 150)))
        .contains(&n)
}

// ------------------------------------------------------------------ tests

#[test]
fn pool_address_with_provisioning_options_66_and_150() {
    crate::support::needs!(root, "busybox", "ip");
    let mut lan = Lan::new();
    let dir = Provbox::dir();
    let p = lan.start(dir, &yaml("", "[br0]"));
    let c = lan.client(None, None);
    let tmp = tempfile::tempdir().unwrap();
    let env = udhcpc_once(&c, tmp.path(), &[]);
    assert!(in_pool(&env["ip"]), "{env:?}");
    assert_eq!(env["serverid"], SERVER);
    assert_eq!(env["router"].trim(), SERVER);
    assert_eq!(env["domain"], "lab.test");
    assert_eq!(env["subnet"], "255.255.255.0");
    assert_eq!(env["tftp"], "prov.lab.test", "{env:?}");
    // udhcpc hands unknown options over as raw hex: both addresses, 8 bytes.
    assert_eq!(env["opt150"], "c6120001c6120002", "{env:?}");
    assert!(p.log().contains("dhcp lease granted"), "{}", p.log());
    // udhcpc does not ask for broadcast: the OFFER/ACK went unicast to the new address
    // via an ARP entry provbox set (RFC 2131 4.1).
    assert!(p.log().contains("dest=Hw(198.18.0.1"), "{}", p.log());
    assert!(!p.log().contains("cannot set ARP entry"), "{}", p.log());

    // The same from raw bytes: OFFER padded to >= 300 bytes, 150 as one 8-byte option,
    // and options after it intact.
    let (_r, sock) = lan.raw_client("02:00:00:00:10:01", "198.18.0.20/24");
    let mut m = Msg::new(1, [2, 0, 0, 0, 0x10, 1]);
    m.opts = vec![(55, vec![150, 66, 1, 3, 42])];
    let offer = exchange(&sock, &m, ALL);
    assert_eq!(offer.mtype(), 2);
    assert!(offer.len >= 300, "{offer:?}");
    assert!(in_pool(&offer.yiaddr.to_string()), "{offer:?}");
    assert_eq!(offer.opt(150), Some(&[198, 18, 0, 1, 198, 18, 0, 2][..]));
    assert_eq!(offer.opt(66), Some(&b"prov.lab.test"[..]));
    assert_eq!(offer.opt(42), Some(&[198, 18, 0, 1][..]));
    assert_eq!(offer.opt(54), Some(&[198, 18, 0, 1][..]));
    assert_eq!(offer.opt(51), Some(&3600u32.to_be_bytes()[..]));
    // Requested order is kept: 150 before 66.
    let pos = |c| offer.opts.iter().position(|(k, _)| *k == c).unwrap();
    assert!(pos(150) < pos(66));
    // Option 2 was not requested and is not forced: absent.
    assert!(offer.opt(2).is_none());
    let m = lan.metrics();
    assert!(
        metric(&m, "provbox_dhcp_sent_total{message=\"offer\"}") >= 2.0,
        "{m}"
    );
    assert!(metric(&m, "provbox_dhcp_leases_active") >= 1.0, "{m}");
}

#[test]
fn reserved_mac_gets_its_address_and_hostname() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&yaml("", "[br0]"));
    let c = lan.client(Some("02:00:00:00:00:57"), None);
    let tmp = tempfile::tempdir().unwrap();
    let env = udhcpc_once(&c, tmp.path(), &["-r", "198.18.0.120"]);
    assert_eq!(env["ip"], "198.18.0.57", "{env:?}");
    assert_eq!(env["hostname"], "phone57", "{env:?}");
    // And nobody else gets the reserved address, even by asking for it.
    let other = lan.client(None, None);
    let tmp2 = tempfile::tempdir().unwrap();
    let env2 = udhcpc_once(&other, tmp2.path(), &["-r", "198.18.0.57"]);
    assert_ne!(env2["ip"], "198.18.0.57");
    assert!(in_pool(&env2["ip"]));
}

#[test]
fn renew_keeps_the_address_and_release_frees_it() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, p) = Lan::serving(&yaml("", "[br0]"));
    let a = lan.client(None, None);
    let tmp = tempfile::tempdir().unwrap();
    let (mut bg, env) = udhcpc_daemon(&a, tmp.path(), &[]);
    let ip = env["ip"].clone();
    signal(bg.pid(), "USR1");
    let renewed = wait_until(Duration::from_secs(15), || {
        events(tmp.path())
            .into_iter()
            .find(|(e, _)| e == "renew")
            .map(|(_, env)| env)
    })
    .expect("no renew event");
    assert_eq!(renewed["ip"], ip);
    assert!(p.log().contains("dhcp lease renewed"), "{}", p.log());

    // Release, then another client asking for that address gets it.
    signal(bg.pid(), "USR2");
    wait_until(Duration::from_secs(10), || {
        p.log().contains("dhcp lease released").then_some(())
    })
    .unwrap_or_else(|| panic!("no release logged:\n{}", p.log()));
    bg.stop();
    let b = lan.client(None, None);
    let tmp2 = tempfile::tempdir().unwrap();
    let env2 = udhcpc_once(&b, tmp2.path(), &["-r", &ip]);
    assert_eq!(env2["ip"], ip);
}

#[test]
fn address_in_use_is_not_given_to_another_client() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&yaml("", "[br0]"));
    let a = lan.client(None, None);
    let ta = tempfile::tempdir().unwrap();
    let ip = udhcpc_once(&a, ta.path(), &[])["ip"].clone();
    let b = lan.client(None, None);
    let tb = tempfile::tempdir().unwrap();
    let ipb = udhcpc_once(&b, tb.path(), &["-r", &ip])["ip"].clone();
    assert_ne!(ip, ipb);
}

#[test]
fn inform_from_a_static_phone_is_answered() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&yaml("", "[br0]"));
    let (_c, sock) = lan.raw_client("02:00:00:00:20:01", "198.18.0.30/24");
    let mut m = Msg::new(8, [2, 0, 0, 0, 0x20, 1]);
    m.flags = 0;
    m.ciaddr = "198.18.0.30".parse().unwrap();
    m.opts = vec![(55, vec![66, 150, 6])];
    let ack = exchange(&sock, &m, "198.18.0.1:67");
    assert_eq!(ack.mtype(), 5);
    assert_eq!(ack.ciaddr, m.ciaddr);
    assert!(ack.yiaddr.is_unspecified());
    assert!(ack.opt(51).is_none(), "INFORM replies carry no lease time");
    assert_eq!(ack.opt(66), Some(&b"prov.lab.test"[..]));
    assert_eq!(ack.opt(150), Some(&[198, 18, 0, 1, 198, 18, 0, 2][..]));
}

#[test]
fn option_sets_follow_vendor_class() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&yaml("", "[br0]"));
    let mut got = Vec::new();
    let mut vendor_data = Vec::new();
    for vc in ["CP-8831-3PCC", "yealink SIP-T46G", "generic"] {
        let c = lan.client(None, None);
        let t = tempfile::tempdir().unwrap();
        let env = udhcpc_once(&c, t.path(), &["-V", vc]);
        got.push((env["tftp"].clone(), env.get("opt160").cloned()));
        vendor_data.push(env.get("opt43").cloned());
    }
    // Option 43 from typed sub-options, for the Cisco set only: 01 09 "http://p/" 02 04 addr.
    assert_eq!(
        vendor_data,
        [
            Some("0109687474703a2f2f702f0204c6120001".to_string()),
            None,
            None
        ]
    );
    assert_eq!(got[0].0, "cisco.lab.test");
    assert_eq!(got[1].0, "yealink.lab.test");
    assert_eq!(got[2].0, "prov.lab.test");
    // 160 only for the yealink set, as hex of the URL.
    let hex: String = b"http://198.18.0.1:8080/yealink/"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got[1].1.as_deref(), Some(hex.as_str()));
    assert_eq!(got[0].1, None);
}

#[test]
fn reload_applies_new_options_and_keeps_leases() {
    crate::support::needs!(root, "busybox", "ip");
    let mut lan = Lan::new();
    let config = yaml("", "[br0]");
    let p = lan.start(Provbox::dir(), &config);
    let cfg = p.path().join("config.yaml");
    let c = lan.client(Some("02:00:00:00:00:61"), None);
    let t = tempfile::tempdir().unwrap();
    let before = udhcpc_once(&c, t.path(), &[]);
    assert_eq!(before["tftp"], "prov.lab.test");

    // A bad edit is refused as a whole: the old options keep being served.
    let (code, out) = reload_config(
        &cfg,
        config.replace("rate_limit_per_mac: 50", "rate_limit_per_mac: lots"),
    );
    assert_ne!(code, 0, "{out}");
    let t = tempfile::tempdir().unwrap();
    assert_eq!(udhcpc_once(&c, t.path(), &[])["tftp"], "prov.lab.test");

    // A good one applies without a restart; the client keeps its address.
    let (code, out) = reload_config(
        &cfg,
        config.replace("string: prov.lab.test", "string: prov2.lab.test"),
    );
    assert_eq!(code, 0, "{out}");
    let t = tempfile::tempdir().unwrap();
    let after = udhcpc_once(&c, t.path(), &[]);
    assert_eq!(after["tftp"], "prov2.lab.test");
    assert_eq!(after["ip"], before["ip"]);

    // Interfaces are sockets: changing them is refused until a restart, and says so.
    let (code, out) = reload_config(
        &cfg,
        config.replace("interfaces: [br0]", "interfaces: [br0, lo]"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(p.log().contains("takes a restart"), "{}", p.log());
    let t = tempfile::tempdir().unwrap();
    assert_eq!(udhcpc_once(&c, t.path(), &[])["tftp"], "prov2.lab.test");
}

#[test]
fn kill_9_and_restart_loses_no_lease() {
    crate::support::needs!(root, "busybox", "ip");
    let mut lan = Lan::new();
    let config = yaml("", "[br0]");
    let mut p = lan.start(Provbox::dir(), &config);
    let mut daemons = Vec::new();
    let mut ips = Vec::new();
    for _ in 0..3 {
        let c = lan.client(None, None);
        let t = tempfile::tempdir().unwrap();
        let (bg, env) = udhcpc_daemon(&c, t.path(), &[]);
        ips.push(env["ip"].clone());
        daemons.push((bg, t, c));
    }
    // kill -9 right after the last ACK.
    p.signal_and_wait("KILL");
    let dir = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    drop(p);
    let p = lan.start(dir, &config);
    assert!(p.log().contains("active=3"), "{}", p.log());
    // A newcomer asking for each leased address gets none of them.
    for ip in &ips {
        let c = lan.client(None, None);
        let t = tempfile::tempdir().unwrap();
        let got = udhcpc_once(&c, t.path(), &["-r", ip])["ip"].clone();
        assert!(!ips.contains(&got), "{got} was leased before the crash");
    }
    // Every client renews and keeps its address.
    for (i, (bg, t, _)) in daemons.iter().enumerate() {
        signal(bg.pid(), "USR1");
        let env = wait_until(Duration::from_secs(15), || {
            events(t.path())
                .into_iter()
                .find(|(e, _)| e == "renew")
                .map(|(_, env)| env)
        })
        .unwrap_or_else(|| panic!("client {i} did not renew: {:?}", events(t.path())));
        assert_eq!(env["ip"], ips[i]);
    }
}

#[test]
fn malformed_and_truncated_packets_are_dropped_and_service_continues() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&yaml("", "[br0]"));
    let (_c, sock) = lan.raw_client("02:00:00:00:30:01", "198.18.0.31/24");
    let good = Msg::new(1, [2, 0, 0, 0, 0x30, 1]).bytes();
    let mut truncated_opt = good.clone();
    truncated_opt.truncate(good.len() - 4);
    truncated_opt.extend_from_slice(&[60, 200, b'x']);
    let mut bad_magic = good.clone();
    bad_magic[236] = 0;
    let mut reply_op = good.clone();
    reply_op[0] = 2;
    let mut no_type = good.clone();
    no_type[240] = 12; // option 53 becomes a hostname
    let mut bad_hw = good.clone();
    bad_hw[2] = 16;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        good[..100].to_vec(),
        good[..239].to_vec(),
        truncated_opt,
        bad_magic,
        reply_op,
        no_type,
        bad_hw,
        vec![0xff; 1400],
    ];
    for g in &garbage {
        sock.send_to(g, "198.18.0.1:67").unwrap();
    }
    // Still serving: a proper DISCOVER gets an OFFER.
    let offer = exchange(&sock, &Msg::new(1, [2, 0, 0, 0, 0x30, 1]), ALL);
    assert_eq!(offer.mtype(), 2);
    let m = lan.metrics();
    let dropped: f64 = m
        .lines()
        .filter(|l| l.starts_with("provbox_dhcp_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // The empty datagram may or may not arrive; the other nine are each counted.
    assert!(dropped >= 9.0, "{m}");
    assert!(
        metric(&m, "provbox_dhcp_dropped_total{reason=\"malformed\"}") >= 5.0,
        "{m}"
    );
}

#[test]
fn relayed_request_uses_giaddr_subnet_and_echoes_option_82() {
    crate::support::needs!(root, "busybox", "ip");
    let extra = r#"    - subnet: 198.18.1.0/24
      pools: ["198.18.1.100-198.18.1.110"]
      router: 198.18.1.1
"#;
    let (mut lan, _p) = Lan::serving(&yaml(extra, "[br0]"));
    let (_relay, sock) = lan.relay_agent();
    let mut m = Msg::relayed(1, [2, 0, 0, 0, 0x40, 9]);
    let o82 = vec![
        1, 6, b'p', b'o', b'r', b't', b'-', b'7', 2, 3, 0xaa, 0xbb, 0xcc,
    ];
    m.opts.push((82, o82.clone()));
    let offer = exchange(&sock, &m, "198.18.0.1:67");
    assert_eq!(offer.mtype(), 2);
    assert_eq!(offer.giaddr, m.giaddr);
    assert!(offer.yiaddr.octets()[..3] == [198, 18, 1], "{offer:?}");
    assert_eq!(offer.opt(3), Some(&[198, 18, 1, 1][..]));
    assert_eq!(offer.opt(82), Some(o82.as_slice()));
    // REQUEST through the relay: ACK, 82 echoed again.
    let r = Msg::relayed_request(m.mac, &offer, &o82);
    let ack = exchange(&sock, &r, "198.18.0.1:67");
    assert_eq!(ack.mtype(), 5);
    assert_eq!(ack.yiaddr, offer.yiaddr);
    assert_eq!(ack.opt(82), Some(o82.as_slice()));
    // A request for an address on the wrong network is NAKed (broadcast bit set for the relay).
    let mut bad = Msg::relayed(3, [2, 0, 0, 0, 0x40, 10]);
    bad.opts = vec![(50, vec![198, 18, 0, 120])];
    let nak = exchange(&sock, &bad, "198.18.0.1:67");
    assert_eq!(nak.mtype(), 6);
}

#[test]
fn missing_interface_refuses_to_start() {
    crate::support::needs!(root, "busybox", "ip");
    let lan = Lan::new();
    let dir = Provbox::dir();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml("", "[nosuch0]")).unwrap();
    let bin = support::bin();
    let out = lan.srv.run(&[
        bin.to_str().unwrap(),
        "serve",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("dhcp.interfaces[0]: interface `nosuch0` does not exist"),
        "{text}"
    );
}

#[test]
fn bad_dhcp_config_names_field_and_line() {
    let dir = Provbox::dir();
    let cfg = dir.path().join("config.yaml");
    let text = yaml("", "[br0]")
        .replace("198.18.0.100-198.18.0.150", "198.18.0.100-198.18.9.150")
        .replace(
            "      ips: [198.18.0.1, 198.18.0.2]",
            "      ips: [198.18.0.1]\n      string: x",
        );
    let (code, out) = check_config(&cfg, &text);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("dhcp.subnets[0].pools[0]"), "{out}");
    let line = 1 + text.lines().position(|l| l.contains("pools:")).unwrap();
    assert!(out.contains(&format!(":{line}:")), "line {line}: {out}");
    assert!(out.contains("dhcp.options[1]"), "{out}");
    assert!(out.contains("expected exactly one of"), "{out}");
}

#[test]
fn leases_command_lists_the_store() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, mut p) = Lan::serving(&yaml("", "[br0]"));
    let c = lan.client(Some("02:00:00:00:00:57"), None);
    let t = tempfile::tempdir().unwrap();
    udhcpc_once(&c, t.path(), &["-V", "CP-8831-3PCC"]);
    let cfg = p.path().join("config.yaml");
    // The journal is readable while provbox runs, and after it stopped.
    for running in [true, false] {
        if !running {
            p.signal_and_wait("TERM");
        }
        let (code, out) = support::provbox(&["leases", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("198.18.0.57"))
            .unwrap_or_else(|| panic!("running={running}: {out}"));
        assert_mentions(
            line,
            &[("02:00:00:00:00:57", "bound"), ("phone57", "CP-8831-3PCC")],
        );
    }
}

#[test]
fn init_reboot_selecting_and_decline() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, p) = Lan::serving(&yaml("", "[br0]"));
    let (_c, sock) = lan.raw_client("02:00:00:00:50:01", "198.18.0.21/24");
    let (m1, m2, m3) = (
        [2, 0, 0, 0, 0x50, 1],
        [2, 0, 0, 0, 0x50, 2],
        [2, 0, 0, 0, 0x50, 3],
    );
    let offer = exchange(&sock, &Msg::new(1, m1), ALL);
    let a = offer.yiaddr;
    // SELECTING: REQUEST naming us as server.
    let mut req = Msg::new(3, m1);
    req.opts = vec![(50, a.octets().to_vec()), (54, vec![198, 18, 0, 1])];
    assert_eq!(exchange(&sock, &req, ALL).mtype(), 5);
    // INIT-REBOOT (no server id): the owner is confirmed...
    let mut reboot = Msg::new(3, m1);
    reboot.xid ^= 0x100;
    reboot.opts = vec![(50, a.octets().to_vec())];
    let ack = exchange(&sock, &reboot, ALL);
    assert_eq!((ack.mtype(), ack.yiaddr), (5, a));
    // ...anyone else asking for it is refused.
    let mut thief = Msg::new(3, m2);
    thief.opts = vec![(50, a.octets().to_vec())];
    assert_eq!(exchange(&sock, &thief, ALL).mtype(), 6);
    // SELECTING another server's offer: we stay silent (and let our offer go).
    let o2 = exchange(&sock, &Msg::new(1, m2), ALL);
    let mut other = Msg::new(3, m2);
    other.opts = vec![
        (50, o2.yiaddr.octets().to_vec()),
        (54, vec![198, 18, 0, 99]),
    ];
    sock.send_to(&other.bytes(), ALL).unwrap();
    // DECLINE: the address is quarantined, a newcomer asking for it gets another.
    let mut decline = Msg::new(4, m1);
    decline.opts = vec![(50, a.octets().to_vec()), (54, vec![198, 18, 0, 1])];
    sock.send_to(&decline.bytes(), ALL).unwrap();
    let mut ask = Msg::new(1, m3);
    ask.opts.push((50, a.octets().to_vec()));
    let o3 = wait_until(Duration::from_secs(5), || {
        p.log().contains("dhcp lease declined").then_some(())
    })
    .map(|_| exchange(&sock, &ask, ALL))
    .unwrap_or_else(|| panic!("no decline logged:\n{}", p.log()));
    assert_eq!(o3.mtype(), 2);
    assert_ne!(o3.yiaddr, a);
    let m = lan.metrics();
    assert!(
        metric(&m, "provbox_dhcp_sent_total{message=\"nak\"}") >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "provbox_dhcp_dropped_total{reason=\"other_server_selected\"}"
        ) >= 1.0,
        "{m}"
    );
}

#[test]
fn one_mac_flooding_is_rate_limited_others_still_served() {
    crate::support::needs!(root, "busybox", "ip");
    let (mut lan, _p) = Lan::serving(&yaml("", "[br0]"));
    let (_c, sock) = lan.raw_client("02:00:00:00:60:01", "198.18.0.22/24");
    // rate_limit_per_mac is 50/s: 150 back-to-back DISCOVERs from one MAC overflow it.
    let flood = Msg::new(1, [2, 0, 0, 0, 0x60, 1]).bytes();
    for _ in 0..150 {
        sock.send_to(&flood, "198.18.0.1:67").unwrap();
    }
    // Another device is unaffected.
    let offer = exchange(&sock, &Msg::new(1, [2, 0, 0, 0, 0x60, 2]), ALL);
    assert_eq!(offer.mtype(), 2);
    let m = lan.metrics();
    assert!(
        metric(&m, "provbox_dhcp_dropped_total{reason=\"rate_limited\"}") >= 1.0,
        "{m}"
    );
}
