//! provbox on a LAN it does not own (issue 17): proxy mode beside the site's own DHCP
//! server (dnsmasq in its own namespace on the same bridge), the non-authoritative server
//! mode, and reservations keyed by the relay's switch port (option 82). Everything runs in
//! namespaces on 198.18.0.0/24; provbox's own packets are captured with tcpdump in its
//! namespace and read back from the pcap file.
use crate::support;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use support::dhcp_raw::*;
use support::metric;

const PROVBOX: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SITE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

fn head(extra: &str) -> String {
    format!("{LAB_CONFIG_HEAD}  interfaces: [br0]\n  rate_limit_per_mac: 50\n{extra}")
}

const OPTIONS: &str = r#"  options:
    - code: 66
      string: prov.lab.test
      force: true
    - code: 150
      ips: [198.18.0.1]
      force: true
    - code: 160
      string: http://198.18.0.1:8080/
      force: true
"#;

/// Every reply found in a pcap file (Ethernet, IPv4, UDP) sent from `src` port 67:
/// (message type, yiaddr).
fn sent_from(pcap: &Path, src: Ipv4Addr) -> Vec<(u8, Ipv4Addr)> {
    let b = std::fs::read(pcap).unwrap_or_default();
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap()) as usize;
        let frame = &b[i + 16..(i + 16 + caplen).min(b.len())];
        i += 16 + caplen;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [8, 0] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = (ip[0] & 0x0f) as usize * 4;
        if ip[9] != 17 || ip[12..16] != src.octets() || ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        if u16::from_be_bytes([udp[0], udp[1]]) != 67 || udp.len() < 8 + 240 {
            continue;
        }
        let r = Raw::parse(&udp[8..]);
        out.push((r.mtype(), r.yiaddr));
    }
    out
}

/// All replies with `xid` arriving within `limit`, from whichever server.
fn replies(sock: &UdpSocket, xid: u32, limit: Duration) -> Vec<Raw> {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    while let Some(r) = reply_to(sock, xid, end.saturating_duration_since(Instant::now())) {
        out.push(r);
    }
    out
}

fn server_id(r: &Raw) -> Option<Ipv4Addr> {
    let b: [u8; 4] = r.opt(54)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

#[test]
fn proxy_mode_beside_dnsmasq_gives_options_only_and_never_naks() {
    crate::support::needs!(root, "busybox", "dnsmasq", "ip", "tcpdump");
    support::require("dnsmasq");
    support::require("tcpdump");
    let cfg = head(&format!(
        "  mode: proxy\n{OPTIONS}  subnets:\n    - subnet: 198.18.0.0/24\n"
    ));
    let (mut lan, _p) = Lan::serving(&cfg);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_str().unwrap().to_string();

    // The site's server: dnsmasq in its own namespace, addresses .50-.60, router .254.
    let site = lan.client(Some("02:00:00:00:fe:01"), Some("198.18.0.254/24"));
    let mut dnsmasq = site.spawn(&[
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--user=root",
        "--interface=eth0",
        "--bind-interfaces",
        "--no-ping",
        "--dhcp-range=198.18.0.50,198.18.0.60,255.255.255.0,1h",
        "--dhcp-option=3,198.18.0.254",
        &format!("--dhcp-leasefile={t}/dnsmasq.leases"),
        &format!("--pid-file={t}/dnsmasq.pid"),
        &format!("--log-facility={t}/dnsmasq.log"),
        "--log-dhcp",
    ]);

    // Everything provbox sends, captured in its own namespace.
    let pcap = tmp.path().join("provbox.pcap");
    let mut dump = lan.srv.spawn(&[
        "tcpdump",
        "-i",
        "br0",
        "-n",
        "-U",
        "-w",
        pcap.to_str().unwrap(),
        "udp and src host 198.18.0.1",
    ]);

    // A host that already has the site's address asks for options (DHCPINFORM); asking
    // until the answer shows up in the capture also proves tcpdump is listening.
    let (_host, sock) = lan.raw_client("02:00:00:00:fe:02", "198.18.0.30/24");
    let mut inform = Msg::new(8, [2, 0, 0, 0, 0xfe, 2]);
    inform.ciaddr = "198.18.0.30".parse().unwrap();
    inform.opts = vec![(55, vec![66, 150, 160])];
    let captured = wait_until(Duration::from_secs(15), || {
        sock.send_to(&inform.bytes(), ALL).unwrap();
        let ours = replies(&sock, inform.xid, Duration::from_millis(500))
            .into_iter()
            .find(|r| server_id(r) == Some(PROVBOX))?;
        (!sent_from(&pcap, PROVBOX).is_empty()).then_some(ours)
    })
    .expect("provbox's INFORM answer never showed in the capture");
    assert_eq!(captured.mtype(), 5, "{captured:?}");
    assert_eq!(captured.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(captured.opt(66), Some(&b"prov.lab.test"[..]));
    assert_eq!(captured.opt(150), Some(&[198, 18, 0, 1][..]));
    assert_eq!(captured.opt(160), Some(&b"http://198.18.0.1:8080/"[..]));
    assert!(
        captured.opt(51).is_none(),
        "an INFORM answer has no lease time"
    );

    // A phone with udhcpc: the site's address and router, whatever provbox does.
    let phone = lan.client(Some("02:00:00:00:fe:03"), None);
    let ptmp = tempfile::tempdir().unwrap();
    let env = udhcpc_once(&phone, ptmp.path(), &[]);
    let ip: Ipv4Addr = env["ip"].parse().unwrap();
    assert!(
        (50..=60).contains(&ip.octets()[3]),
        "not the site's address: {env:?}\n{}",
        std::fs::read_to_string(tmp.path().join("dnsmasq.log")).unwrap_or_default()
    );
    assert_eq!(env["serverid"], SITE.to_string());
    assert_eq!(env["router"].trim(), SITE.to_string());

    // The same phone asks for the site address it holds again (INIT-REBOOT), and for one
    // it does not hold: the site server decides, provbox stays silent.
    let psock = raw_socket(&phone, 68);
    for want in [ip, Ipv4Addr::new(198, 18, 0, 77)] {
        let mut r = Msg::new(3, [2, 0, 0, 0, 0xfe, 3]);
        r.xid ^= u32::from(want);
        r.opts = vec![(50, want.octets().to_vec()), (55, vec![1, 3, 66])];
        psock.send_to(&r.bytes(), ALL).unwrap();
        let got = replies(&psock, r.xid, Duration::from_secs(2));
        assert!(
            got.iter().all(|g| server_id(g) != Some(PROVBOX)),
            "provbox answered a REQUEST for the site's address {want}: {got:?}"
        );
    }

    // A PXE ROM sees both: the site's offer with an address, provbox's without one.
    let mut pxe = Msg::new(1, [2, 0, 0, 0, 0xfe, 4]);
    pxe.opts = vec![
        (60, b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
        (93, vec![0, 0]),
        (55, vec![1, 3, 66, 67, 150, 160]),
    ];
    let offers = wait_until(Duration::from_secs(10), || {
        sock.send_to(&pxe.bytes(), ALL).unwrap();
        let got = replies(&sock, pxe.xid, Duration::from_secs(2));
        let both = got.iter().any(|r| server_id(r) == Some(PROVBOX))
            && got.iter().any(|r| server_id(r) == Some(SITE));
        both.then_some(got)
    })
    .expect("a PXE DISCOVER did not get both offers");
    for o in &offers {
        assert_eq!(o.mtype(), 2, "{o:?}");
        if server_id(o) == Some(PROVBOX) {
            assert_eq!(o.yiaddr, Ipv4Addr::UNSPECIFIED, "{o:?}");
            assert_eq!(o.opt(60), Some(&b"PXEClient"[..]));
            assert_eq!(o.opt(66), Some(&b"prov.lab.test"[..]));
            assert!(o.opt(51).is_none(), "{o:?}");
        } else {
            assert!((50..=60).contains(&o.yiaddr.octets()[3]), "{o:?}");
        }
    }

    // dhclient, when installed, ends up with the site's address too.
    if Path::new("/sbin/dhclient").exists() {
        let dc = lan.client(Some("02:00:00:00:fe:05"), None);
        let out = dc.run(&[
            "timeout",
            "30",
            "/sbin/dhclient",
            "-1",
            "-v",
            "-pf",
            &format!("{t}/dhclient.pid"),
            "-lf",
            &format!("{t}/dhclient.leases"),
            "-sf",
            "/bin/true",
            "eth0",
        ]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("bound to 198.18.0."), "{text}");
        assert!(text.contains(&format!("from {SITE}")), "{text}");
        let _ = dc.run(&["/sbin/dhclient", "-x", "-pf", &format!("{t}/dhclient.pid")]);
    }

    let m = lan.metrics();
    let sent = sent_from(&pcap, PROVBOX);
    dump.stop();
    dnsmasq.stop();
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|&(t, _)| t != 6),
        "provbox sent a NAK: {sent:?}"
    );
    assert!(
        sent.iter().all(|&(_, y)| y.is_unspecified()),
        "provbox offered an address: {sent:?}"
    );
    assert!(
        metric(&m, "provbox_dhcp_received_total{message=\"discover\"}") >= 2.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "provbox_dhcp_dropped_total{reason=\"proxy_not_for_this_client\"}"
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "provbox_dhcp_leases_active"), 0.0, "{m}");
    assert!(
        !m.contains("provbox_dhcp_sent_total{message=\"nak\"}"),
        "{m}"
    );
}

#[test]
fn a_non_authoritative_server_does_not_nak_a_request_it_knows_nothing_of() {
    crate::support::needs!(root, "busybox", "ip");
    let cfg = head(&format!("  authoritative: false\n{LAB_POOL}"));
    let (mut lan, _p) = Lan::serving(&cfg);
    let (_c, sock) = lan.raw_client("02:00:00:00:fd:01", "198.18.0.31/24");
    // INIT-REBOOT for an address outside the pool and one outside the subnet: another
    // server's leases. A non-authoritative server says nothing.
    for want in [[198u8, 18, 0, 200], [10, 1, 2, 3]] {
        let mut r = Msg::new(3, [2, 0, 0, 0, 0xfd, 1]);
        r.xid ^= u32::from_be_bytes(want);
        r.opts = vec![(50, want.to_vec())];
        for _ in 0..2 {
            sock.send_to(&r.bytes(), ALL).unwrap();
            assert!(
                reply_to(&sock, r.xid, Duration::from_secs(1)).is_none(),
                "answered a REQUEST for {want:?}"
            );
        }
    }
    // It is still a server: a DISCOVER gets an offer, and then its client is known, so a
    // REQUEST for an address it cannot have is told no.
    let offer = exchange(&sock, &Msg::new(1, [2, 0, 0, 0, 0xfd, 1]), ALL);
    assert_eq!(offer.mtype(), 2);
    let mut bad = Msg::new(3, [2, 0, 0, 0, 0xfd, 1]);
    bad.opts = vec![(50, vec![198, 18, 0, 200])];
    assert_eq!(exchange(&sock, &bad, ALL).mtype(), 6);
    let m = lan.metrics();
    assert!(
        metric(
            &m,
            "provbox_dhcp_dropped_total{reason=\"not_authoritative\"}"
        ) >= 4.0,
        "{m}"
    );
}

#[test]
fn a_relayed_switch_port_gets_its_reserved_address() {
    crate::support::needs!(root, "busybox", "ip");
    let cfg = head(&format!(
        r#"{OPTIONS}{LAB_POOL}    - subnet: 198.18.1.0/24
      pools: ["198.18.1.100-198.18.1.110"]
      router: 198.18.1.1
      reservations:
        - circuit: bench-3/port-12
          remote_id: sw-bench-3
          address: 198.18.1.12
          hostname: slot12
          options:
            - code: 66
              string: slot12.lab.test
"#
    ));
    let (mut lan, p) = Lan::serving(&cfg);
    // The relay agent: on the LAN with a leg in the phones' subnet (giaddr 198.18.1.1).
    let (_relay, sock) = lan.relay_agent();
    let o82 = |port: &str, switch: &str| {
        let mut v = vec![1, port.len() as u8];
        v.extend_from_slice(port.as_bytes());
        v.extend_from_slice(&[2, switch.len() as u8]);
        v.extend_from_slice(switch.as_bytes());
        v
    };
    // An unknown phone (no MAC anywhere in the config) on port 12: slot 12's address
    // and options, through DISCOVER and REQUEST.
    let mac = [2, 0, 0, 0, 0x12, 0x34];
    let port12 = o82("bench-3/port-12", "sw-bench-3");
    let mut d = Msg::relayed(1, mac);
    d.opts = vec![(55, vec![1, 3, 66, 12]), (82, port12.clone())];
    let offer = exchange(&sock, &d, "198.18.0.1:67");
    assert_eq!(offer.mtype(), 2);
    assert_eq!(offer.yiaddr, Ipv4Addr::new(198, 18, 1, 12), "{offer:?}");
    assert_eq!(offer.opt(66), Some(&b"slot12.lab.test"[..]));
    assert_eq!(offer.opt(82), Some(port12.as_slice()));
    let ack = exchange(
        &sock,
        &Msg::relayed_request(mac, &offer, &port12),
        "198.18.0.1:67",
    );
    assert_eq!((ack.mtype(), ack.yiaddr), (5, offer.yiaddr));
    assert!(
        p.log().contains("switch port bench-3/port-12"),
        "{}",
        p.log()
    );
    // Port 13, or port 12 of another switch: the pool.
    for (i, o) in [
        o82("bench-3/port-13", "sw-bench-3"),
        o82("bench-3/port-12", "sw-9"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = Msg::relayed(1, [2, 0, 0, 0, 0x13, i as u8]);
        d.opts = vec![(82, o)];
        let offer = exchange(&sock, &d, "198.18.0.1:67");
        let n = offer.yiaddr.octets()[3];
        assert!(
            offer.yiaddr.octets()[..3] == [198, 18, 1] && (100..=110).contains(&n),
            "{offer:?}"
        );
    }
    // A client on the LAN that writes option 82 itself (no relay): no reservation.
    let (_c, csock) = lan.raw_client("02:00:00:00:12:99", "198.18.0.41/24");
    let mut fake = Msg::new(1, [2, 0, 0, 0, 0x12, 0x99]);
    fake.opts = vec![(82, port12)];
    let offer = exchange(&csock, &fake, ALL);
    assert_eq!(offer.yiaddr.octets()[..3], [198, 18, 0], "{offer:?}");
}
