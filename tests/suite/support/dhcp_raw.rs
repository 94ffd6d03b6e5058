//! Shared DHCP test kit: a LAN of network namespaces on one bridge with provbox in the
//! server namespace, busybox `udhcpc` as the phone (its script logs every event with its
//! environment), and a raw UDP client (sockets opened inside a namespace) that sends what
//! udhcpc cannot (INFORM, relayed messages, spoofed `chaddr`, garbage) and reads replies
//! as raw bytes: dhcproto stops decoding at a multi-address option 150, so it is not
//! trusted here.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Provbox;
use super::netns::{Bg, Lab, Netns};

/// A LAN: the server namespace holds bridge br0 (198.18.0.1/24) and runs provbox.
pub struct Lan {
    pub lab: Lab,
    pub srv: Netns,
    pub n: u32,
}

impl Lan {
    pub fn new() -> Lan {
        super::require("busybox");
        let lab = Lab::new();
        let srv = lab.ns("s");
        lab.bridge(&srv, Some("198.18.0.1/24"));
        Lan { lab, srv, n: 0 }
    }

    pub fn start(&self, dir: tempfile::TempDir, config: &str) -> Provbox {
        Provbox::start_with(dir, config, &self.srv.prefix())
    }

    /// A new LAN with provbox serving `config` (in a fresh test dir) in its server
    /// namespace. Bind both: the LAN goes when the `Lan` is dropped.
    pub fn serving(config: &str) -> (Lan, Provbox) {
        let lan = Lan::new();
        let p = lan.start(Provbox::dir(), config);
        (lan, p)
    }

    /// A client namespace on the LAN (eth0 unaddressed unless `addr`).
    pub fn client(&mut self, mac: Option<&str>, addr: Option<&str>) -> Netns {
        self.n += 1;
        let ns = self.lab.ns(&format!("c{}", self.n));
        self.lab.attach_as(&self.srv, &ns, "eth0", addr, mac);
        // A frame sent before the link has carrier is lost: wait for it (bounded).
        let up = wait_until(Duration::from_secs(5), || {
            let s = ns.exec(&["cat", "/sys/class/net/eth0/operstate"]);
            (s.trim() == "up").then_some(())
        });
        assert!(up.is_some(), "eth0 in {} never came up", ns.name);
        ns
    }

    /// A client at `mac` with the static address `addr` (e.g. "198.18.0.30/24"), and a
    /// raw socket on its eth0 at the DHCP client port (68) to speak for it.
    pub fn raw_client(&mut self, mac: &str, addr: &str) -> (Netns, UdpSocket) {
        let c = self.client(Some(mac), Some(addr));
        let sock = raw_socket(&c, 68);
        (c, sock)
    }

    /// The relay agent: a host on the LAN (198.18.0.40) with a leg in the remote subnet
    /// 198.18.1.0/24 at [`GIADDR`], which the server routes through it, and a raw socket
    /// at the server port (67), which relays send from.
    pub fn relay_agent(&mut self) -> (Netns, UdpSocket) {
        let relay = self.client(Some("02:00:00:00:40:01"), Some("198.18.0.40/24"));
        relay.ip(&["addr", "add", "198.18.1.1/24", "dev", "eth0"]);
        self.srv
            .ip(&["route", "add", "198.18.1.0/24", "via", "198.18.0.40"]);
        let sock = raw_socket(&relay, 67);
        (relay, sock)
    }

    /// GET /metrics from inside the server namespace.
    pub fn metrics(&self) -> String {
        self.srv.enter(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9100").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
    }
}

// ------------------------------------------------------------------ udhcpc

/// A udhcpc script that appends every event with its environment to `events.log` and
/// configures the address (udhcpc renews by unicast from it).
pub fn script(dir: &Path) -> PathBuf {
    let path = dir.join("udhcpc.sh");
    let log = dir.join("events.log");
    write_script(
        &path,
        &format!(
            "{{ echo \"EVENT $1\"; env | sort; echo END; }} >> {log}\n\
             case \"$1\" in\n  bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\";;\n  deconfig) ip addr flush dev \"$interface\";;\nesac\nexit 0\n",
            log = log.display()
        ),
    );
    path
}

/// A udhcpc script that configures the leased address and, on every lease, writes the
/// shell words `record` (e.g. `$ip $dns`) to the file `into`.
pub fn recording_script(path: &Path, record: &str, into: &Path) {
    write_script(
        path,
        &format!(
            "case \"$1\" in\n  bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\"; echo \"{record}\" > {};;\nesac\nexit 0\n",
            into.display()
        ),
    );
}

/// Writes the shell script `body` (after a `#!/bin/sh` line) to `path`, executable.
pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    let mut perm = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(path, perm).unwrap();
}

/// Events written by the script: (event, env).
pub fn events(dir: &Path) -> Vec<(String, HashMap<String, String>)> {
    let text = std::fs::read_to_string(dir.join("events.log")).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur: Option<(String, HashMap<String, String>)> = None;
    for line in text.lines() {
        if let Some(ev) = line.strip_prefix("EVENT ") {
            cur = Some((ev.to_string(), HashMap::new()));
        } else if line == "END" {
            out.extend(cur.take());
        } else if let Some((_, env)) = cur.as_mut()
            && let Some((k, v)) = line.split_once('=')
        {
            env.insert(k.to_string(), v.to_string());
        }
    }
    out
}

pub fn bound(dir: &Path) -> Vec<HashMap<String, String>> {
    events(dir)
        .into_iter()
        .filter(|(e, _)| e == "bound" || e == "renew")
        .map(|(_, env)| env)
        .collect()
}

/// busybox udhcpc on eth0 in the foreground, quitting after one lease or none (the
/// tries, timeout and script follow).
pub const UDHCPC_ONCE: &[&str] = &["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n"];

/// Run udhcpc once (obtain a lease, exit). Returns the `bound` environment.
pub fn udhcpc_once(ns: &Netns, dir: &Path, extra: &[&str]) -> HashMap<String, String> {
    let s = script(dir);
    let mut args = UDHCPC_ONCE.to_vec();
    args.extend(["-t", "5", "-T", "1", "-s"]);
    let sp = s.to_str().unwrap().to_string();
    args.push(&sp);
    args.extend([
        "-O", "66", "-O", "150", "-O", "42", "-O", "2", "-O", "160", "-O", "43",
    ]);
    args.extend_from_slice(extra);
    let out = ns.run(&args);
    let b = bound(dir);
    assert!(
        out.status.success() && !b.is_empty(),
        "udhcpc got no lease ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    b.last().unwrap().clone()
}

/// udhcpc as a daemon (renew with SIGUSR1, release with SIGUSR2); waits for the lease.
pub fn udhcpc_daemon(ns: &Netns, dir: &Path, extra: &[&str]) -> (Bg, HashMap<String, String>) {
    let s = script(dir);
    let sp = s.to_str().unwrap().to_string();
    let mut args = vec![
        "busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T", "1", "-s", &sp, "-O", "150",
    ];
    args.extend_from_slice(extra);
    let bg = ns.spawn(&args);
    let env = wait_until(Duration::from_secs(20), || bound(dir).last().cloned())
        .unwrap_or_else(|| panic!("udhcpc daemon got no lease: {:?}", events(dir)));
    (bg, env)
}

pub use super::{signal, wait_until};

/// The start of a lab config: DHCP on, metrics where [`Lan::metrics`] reads them; the
/// test appends the rest of its `dhcp:` section (keys indented two spaces).
pub const LAB_CONFIG_HEAD: &str = "data_dir: data
catalog:
  roots: [files]
metrics:
  enabled: true
  listen: 127.0.0.1:9100
dhcp:
  enabled: true
";

/// The LAN's subnet (198.18.0.0/24, provbox's bridge at .1) and its pool, as the start of
/// a `dhcp:` section's `subnets:`; the test appends that subnet's other keys (indented six
/// spaces) or more subnets.
pub const LAB_POOL: &str = "  subnets:
    - subnet: 198.18.0.0/24
      pools: [\"198.18.0.100-198.18.0.150\"]
";

/// A `dhcp:` section serving [`LAB_POOL`] on the lab bridge br0, for a config without
/// [`LAB_CONFIG_HEAD`]'s metrics.
pub fn lab_dhcp() -> String {
    format!("dhcp:\n  enabled: true\n  interfaces: [br0]\n{LAB_POOL}")
}

// ------------------------------------------------------------------ raw client

/// A UDP socket opened inside `ns`, bound to eth0 and `port`, broadcast allowed.
pub fn raw_socket(ns: &Netns, port: u16) -> UdpSocket {
    ns.enter(move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())
            .unwrap();
        let u: UdpSocket = s.into();
        u.set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        u
    })
}

/// Where [`Lan::relay_agent`] relays from: its address in the remote subnet.
pub const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

pub struct Msg {
    pub mtype: u8,
    pub mac: [u8; 6],
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub opts: Vec<(u8, Vec<u8>)>,
}

impl Msg {
    pub fn new(mtype: u8, mac: [u8; 6]) -> Msg {
        Msg {
            mtype,
            mac,
            xid: u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ mtype as u32,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            opts: vec![(55, vec![1, 3, 6, 66, 150])],
        }
    }

    /// A message relayed by [`Lan::relay_agent`]: giaddr [`GIADDR`], broadcast flag clear.
    pub fn relayed(mtype: u8, mac: [u8; 6]) -> Msg {
        let mut m = Msg::new(mtype, mac);
        m.giaddr = GIADDR;
        m.flags = 0;
        m
    }

    /// The relayed REQUEST from `mac` for `offer` (the server is 198.18.0.1), with the
    /// relay's option 82 `o82`.
    pub fn relayed_request(mac: [u8; 6], offer: &Raw, o82: &[u8]) -> Msg {
        let mut r = Msg::relayed(3, mac);
        r.opts = vec![
            (50, offer.yiaddr.octets().to_vec()),
            (54, vec![198, 18, 0, 1]),
            (82, o82.to_vec()),
        ];
        r
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[3] = if self.giaddr.is_unspecified() { 0 } else { 1 };
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[24..28].copy_from_slice(&self.giaddr.octets());
        b[28..34].copy_from_slice(&self.mac);
        b.extend_from_slice(&[99, 130, 83, 99, 53, 1, self.mtype]);
        for (c, d) in &self.opts {
            b.push(*c);
            b.push(d.len() as u8);
            b.extend_from_slice(d);
        }
        b.push(255);
        b
    }
}

/// A reply read as raw bytes.
#[derive(Debug)]
pub struct Raw {
    pub len: usize,
    pub xid: u32,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Server host name and boot file fields, up to their first NUL.
    pub sname: Vec<u8>,
    pub file: Vec<u8>,
    pub opts: Vec<(u8, Vec<u8>)>,
}

impl Raw {
    pub fn parse(b: &[u8]) -> Raw {
        assert!(b.len() >= 240, "short reply: {} bytes", b.len());
        assert_eq!(b[0], 2, "not a BOOTREPLY");
        assert_eq!(&b[236..240], &[99, 130, 83, 99]);
        let ip = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        let mut opts = Vec::new();
        let mut i = 240;
        while i < b.len() && b[i] != 255 {
            if b[i] == 0 {
                i += 1;
                continue;
            }
            let (c, l) = (b[i], b[i + 1] as usize);
            opts.push((c, b[i + 2..i + 2 + l].to_vec()));
            i += 2 + l;
        }
        Raw {
            len: b.len(),
            xid: u32::from_be_bytes(b[4..8].try_into().unwrap()),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            sname: b[44..108].split(|&c| c == 0).next().unwrap().to_vec(),
            file: b[108..236].split(|&c| c == 0).next().unwrap().to_vec(),
            opts,
        }
    }
    pub fn opt(&self, c: u8) -> Option<&[u8]> {
        self.opts
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, d)| d.as_slice())
    }
    pub fn mtype(&self) -> u8 {
        self.opt(53).unwrap()[0]
    }
}

/// Send `msg` to `to` and wait for the reply with its xid, sending again each second
/// (as a DHCP client retransmits) for up to 5 tries.
pub fn exchange(sock: &UdpSocket, msg: &Msg, to: &str) -> Raw {
    for _ in 0..5 {
        sock.send_to(&msg.bytes(), to).unwrap();
        if let Some(r) = reply_to(sock, msg.xid, Duration::from_secs(1)) {
            return r;
        }
    }
    panic!("no reply to message type {} from {to}", msg.mtype)
}

/// The first reply with `xid` arriving on `sock` within `limit` (other datagrams are
/// skipped).
pub fn reply_to(sock: &UdpSocket, xid: u32, limit: Duration) -> Option<Raw> {
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let r = Raw::parse(&buf[..n]);
                if r.xid == xid {
                    return Some(r);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    None
}

pub const ALL: &str = "255.255.255.255:67";
