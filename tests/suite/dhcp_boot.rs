//! Boot-ROM header fields (issue 17 item 4): `siaddr`, `sname` and `file` from
//! `dhcp.boot` with option 93 choosing the file, or from options 66/67 when the client did
//! not ask for them. Raw DISCOVERs from a namespace host on the LAN (`support::dhcp_raw`).
use crate::support;

use std::net::Ipv4Addr;

use support::Provbox;
use support::dedupe::check_config;
use support::dhcp_raw::*;

fn config(boot: &str) -> String {
    format!(
        r#"data_dir: data
catalog:
  roots: [files]
dhcp:
  enabled: true
  interfaces: [br0]
  options:
    - code: 66
      string: 198.18.0.1
    - code: 67
      string: phone.cfg
  subnets:
    - subnet: 198.18.0.0/24
      pools: ["198.18.0.100-198.18.0.119"]
{boot}"#
    )
}

const BOOT: &str = r#"  boot:
    next_server: 198.18.0.9
    server_name: boot.lab.test
    file: undionly.kpxe
    by_arch:
      7: ipxe.efi
      11: arm64.efi
"#;

/// An OFFER for a DISCOVER from MAC 02:00:00:00:74:`n` with option 93 = `arch` (if
/// given) and request list `prl`.
fn offer(sock: &std::net::UdpSocket, n: u8, arch: Option<u16>, prl: &[u8]) -> Raw {
    let mut m = Msg::new(1, [2, 0, 0, 0, 0x74, n]);
    m.opts = vec![(55, prl.to_vec())];
    if let Some(a) = arch {
        m.opts.push((93, a.to_be_bytes().to_vec()));
    }
    let r = exchange(sock, &m, ALL);
    assert_eq!(r.mtype(), 2, "{r:?}");
    r
}

#[test]
fn boot_rom_fields_from_the_client_architecture_and_option_66() {
    crate::support::needs!(root, "busybox", "ip");
    let mut lan = Lan::new();
    let host = lan.client(Some("02:00:00:00:74:01"), Some("198.18.0.44/24"));
    let sock = raw_socket(&host, 68);

    // With dhcp.boot: its fields, the file chosen by the client's architecture.
    let p = lan.start(Provbox::dir(), &config(BOOT));
    let uefi = offer(&sock, 1, Some(7), &[1, 3]);
    assert_eq!(uefi.siaddr, Ipv4Addr::new(198, 18, 0, 9));
    assert_eq!(uefi.sname, b"boot.lab.test");
    assert_eq!(uefi.file, b"ipxe.efi");
    assert_eq!(offer(&sock, 2, Some(11), &[1, 3]).file, b"arm64.efi");
    assert_eq!(offer(&sock, 3, Some(0), &[1, 3]).file, b"undionly.kpxe");
    assert_eq!(offer(&sock, 4, None, &[1, 3]).file, b"undionly.kpxe");
    drop(p);

    // Without it: options 66 and 67 fill the header when the client did not ask for them.
    let _p = lan.start(Provbox::dir(), &config(""));
    let rom = offer(&sock, 5, Some(7), &[1, 3]);
    assert_eq!(rom.siaddr, Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(rom.sname, b"198.18.0.1");
    assert_eq!(rom.file, b"phone.cfg");
    assert!(rom.opt(66).is_none() && rom.opt(67).is_none(), "{rom:?}");
    // A client asking for 66 and 67 gets them as options, and an empty header.
    let phone = offer(&sock, 6, None, &[1, 3, 66, 67]);
    assert_eq!(phone.opt(66), Some(&b"198.18.0.1"[..]));
    assert_eq!(phone.opt(67), Some(&b"phone.cfg"[..]));
    assert!(phone.siaddr.is_unspecified(), "{phone:?}");
    assert!(phone.sname.is_empty() && phone.file.is_empty(), "{phone:?}");

    // A file that does not fit the header field is refused with its field and line.
    let dir = Provbox::dir();
    let cfg = dir.path().join("config.yaml");
    let long = "x".repeat(128);
    let text = config(&BOOT.replace("ipxe.efi", &long));
    let (code, out) = check_config(&cfg, &text);
    assert_ne!(code, 0, "{out}");
    let line = 1 + text.lines().position(|l| l.contains(&long)).unwrap();
    assert!(out.contains("dhcp.boot.by_arch.7"), "{out}");
    assert!(out.contains(&format!(":{line}:")), "line {line}: {out}");
    assert!(out.contains("expected 1 to 127 bytes"), "{out}");
}
