//! Two or more boxes on one PostgreSQL (`store.backend: postgres`): a real PostgreSQL 15
//! cluster (support::pg), real provbox processes, real sockets. The DHCP tests run in
//! network namespaces: a LAN bridge with box A (198.18.0.1), box B (198.18.0.2), the
//! database (198.18.0.3) and one client namespace (198.18.0.5) that plays 200 phones with
//! raw DHCP messages, each with its own MAC.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use support::dhcp_raw::{Msg, Raw, raw_socket};
use support::netns::{Lab, Netns};
use support::pg::PgCluster;
use support::{Provbox, eventually, free_tcp_port, wait_until};

const A: &str = "198.18.0.1";
const B: &str = "198.18.0.2";
const DB: &str = "198.18.0.3";
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

fn store_yaml(url: &str, name: &str) -> String {
    format!("store:\n  backend: postgres\n  url: \"{url}\"\n  box_name: {name}\n")
}

fn ip_of(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

// ------------------------------------------------------------------ migrations

#[test]
fn migrations_apply_once_and_a_newer_schema_is_refused() {
    crate::support::needs!(root, "psql", "setpriv");
    let pg = PgCluster::start(None, "127.0.0.1", free_tcp_port());
    let cfg = format!(
        "data_dir: data\ncatalog:\n  roots: [files]\n{}",
        store_yaml(&pg.url(), "a")
    );
    let p1 = Provbox::start(Provbox::dir(), &cfg);
    assert_eq!(pg.sql("SELECT max(version) FROM schema_version"), "2");
    // A second box on the same database finds it migrated and applies nothing again.
    let p2 = Provbox::start(Provbox::dir(), &cfg.replace("box_name: a", "box_name: b"));
    assert_eq!(pg.sql("SELECT count(*) FROM schema_version"), "2");
    assert!(p1.log().contains("database migrated"), "{}", p1.log());
    assert!(!p2.log().contains("database migrated"), "{}", p2.log());
    drop((p1, p2));
    // A newer provbox migrated this database: this one refuses to start, and says why.
    pg.sql("INSERT INTO schema_version (version) VALUES (7)");
    let dir = Provbox::dir();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &cfg).unwrap();
    let out = serve_at_most_30s(&path);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "started on a newer schema: {text}");
    assert!(
        text.contains("schema is version 7, newer than this provbox knows (up to 2)"),
        "{text}"
    );
}

#[test]
fn sslmode_require_and_verify_full_connect_over_tls() {
    crate::support::needs!(root, "psql", "setpriv");
    let pg = PgCluster::start(None, "127.0.0.1", free_tcp_port());
    let certs = tempfile::tempdir().unwrap();
    let lab = provbox::tls::LabCa::ensure(certs.path(), &["127.0.0.1".into()]).unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    pg.enable_tls(&read(&lab.server_cert), &read(&lab.server_key));
    let ssl_clients = || {
        pg.sql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = ''")
            .parse::<u32>()
            .unwrap()
    };
    for (mode, extra) in [
        ("require", String::new()),
        (
            "verify-full",
            format!("  ca_file: {}\n", lab.ca_cert.display()),
        ),
    ] {
        let url = format!("{} sslmode={mode}", pg.url());
        let cfg = format!(
            "data_dir: data\ncatalog:\n  roots: [files]\n{}{extra}",
            store_yaml(&url, "a")
        );
        let p = Provbox::start(Provbox::dir(), &cfg);
        assert!(ssl_clients() > 0, "{mode}: no TLS connection from provbox");
        drop(p);
        eventually(
            "provbox's connections closed",
            Duration::from_secs(10),
            || ssl_clients() == 0,
        );
    }
    // verify-full against a CA that did not sign the server's certificate: refused.
    let other = tempfile::tempdir().unwrap();
    let stranger = provbox::tls::LabCa::ensure(other.path(), &["127.0.0.1".into()]).unwrap();
    let dir = Provbox::dir();
    let path = dir.path().join("config.yaml");
    let url = format!("{} sslmode=verify-full", pg.url());
    std::fs::write(
        &path,
        format!(
            "data_dir: data\ncatalog:\n  roots: [files]\n{}  ca_file: {}\n",
            store_yaml(&url, "a"),
            stranger.ca_cert.display()
        ),
    )
    .unwrap();
    let out = serve_at_most_30s(&path);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "started against an unverified server"
    );
    assert!(text.contains("cannot connect to PostgreSQL"), "{text}");
}

#[test]
fn an_unreachable_database_refuses_the_start_and_a_bad_url_is_named() {
    crate::support::needs!(root, "psql", "setpriv");
    let port = free_tcp_port();
    let dir = Provbox::dir();
    let path = dir.path().join("config.yaml");
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let cfg = format!(
        "data_dir: data\ncatalog:\n  roots: [files]\n{}",
        store_yaml(&url, "a")
    );
    std::fs::write(&path, &cfg).unwrap();
    let out = serve_at_most_30s(&path);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(text.contains("cannot connect to PostgreSQL"), "{text}");
    // A broken URL is a config error with its field and line.
    std::fs::write(&path, cfg.replace(&url, "host=db bogus=1")).unwrap();
    let (code, out) = support::provbox(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("store.url") && out.contains(":6"), "{out}");
}

/// `provbox serve` with the config at `path`, stopped after 30 s if it does start.
fn serve_at_most_30s(path: &std::path::Path) -> std::process::Output {
    Command::new("timeout")
        .args(["30", support::bin().to_str().unwrap(), "serve", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

// ------------------------------------------------------------------ the lab

/// Fields drop in order: the database stops before its namespace goes.
struct Fleet {
    pg: PgCluster,
    _lab: Lab,
    _lan: Netns,
    a: Netns,
    b: Netns,
    phones: Netns,
}

impl Fleet {
    /// One RFC 3164 line from the phones' namespace to box A's syslog port.
    fn phone_says(&self, line: &str) {
        self.phones.exec(&[
            "logger",
            "-n",
            A,
            "-P",
            "5514",
            "-d",
            "--rfc3164",
            "-t",
            "phone",
            "--",
            line,
        ]);
    }

    fn new() -> Fleet {
        let lab = Lab::new();
        let lan = lab.ns("l");
        lab.bridge(&lan, None);
        let a = lab.ns("a");
        let b = lab.ns("b");
        let db = lab.ns("d");
        let phones = lab.ns("p");
        lab.attach(&lan, &a, Some("198.18.0.1/24"));
        lab.attach(&lan, &b, Some("198.18.0.2/24"));
        lab.attach(&lan, &db, Some("198.18.0.3/24"));
        lab.attach(&lan, &phones, Some("198.18.0.5/24"));
        for ns in [&a, &b, &db, &phones] {
            let up = wait_until(Duration::from_secs(5), || {
                let s = ns.exec(&["cat", "/sys/class/net/eth0/operstate"]);
                (s.trim() == "up").then_some(())
            });
            assert!(up.is_some(), "eth0 in {} never came up", ns.name);
        }
        let pg = PgCluster::start(Some(&db), DB, 5432);
        Fleet {
            pg,
            _lab: lab,
            _lan: lan,
            a,
            b,
            phones,
        }
    }

    fn config(&self, name: &str) -> String {
        format!(
            r#"data_dir: data
catalog:
  roots: [files]
metrics:
  enabled: true
  listen: 127.0.0.1:9100
syslog:
  enabled: true
  listen: 0.0.0.0:5514
dashboard:
  enabled: true
  listen: 127.0.0.1:8081
  token: fleet-token-0123456789
dhcp:
  enabled: true
  interfaces: [eth0]
  rate_limit_per_mac: 50
  subnets:
    - subnet: 198.18.0.0/24
      pools: ["198.18.0.10-198.18.0.250"]
      router: 198.18.0.1
      lease_time: 1h
{}"#,
            store_yaml(&self.pg.url(), name)
        )
    }

    fn start(&self, ns: &Netns, name: &str) -> Provbox {
        self.start_with_files(ns, name, &[])
    }

    fn start_with_files(&self, ns: &Netns, name: &str, files: &[(&str, &str)]) -> Provbox {
        Provbox::start_with(Provbox::serving(files), &self.config(name), &ns.prefix())
    }

    fn get(ns: &Netns, url: &str, auth: bool) -> (String, String) {
        let bearer = "Authorization: Bearer fleet-token-0123456789";
        let (code, body) = if auth {
            ns.curl(&["-H", bearer, url])
        } else {
            ns.curl(&[url])
        };
        (code.to_string(), body)
    }

    fn metrics(ns: &Netns) -> String {
        Fleet::get(ns, "http://127.0.0.1:9100/metrics", false).1
    }
}

/// 200 phones (MACs 02:50:00:00:hi:lo) speaking raw DHCP from one namespace.
struct Phones {
    sock: UdpSocket,
    macs: Vec<[u8; 6]>,
}

fn mac(i: usize) -> [u8; 6] {
    [2, 0x50, 0, 0, (i >> 8) as u8, i as u8]
}

fn opt_ip(r: &Raw, c: u8) -> Option<Ipv4Addr> {
    r.opt(c)
        .filter(|v| v.len() == 4)
        .map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
}

impl Phones {
    fn new(ns: &Netns, n: std::ops::Range<usize>) -> Phones {
        let sock = raw_socket(ns, 68);
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Phones {
            sock,
            macs: n.map(mac).collect(),
        }
    }

    /// Send every message (to `to`), then gather replies by xid for `wait`.
    fn round(&self, msgs: &[(usize, Msg)], to: &str, wait: Duration) -> HashMap<u32, Vec<Raw>> {
        self.round_to(msgs, &[(to, false)], wait)
    }

    /// Like `round`, sending to each target in turn, in reverse order where asked.
    fn round_to(
        &self,
        msgs: &[(usize, Msg)],
        targets: &[(&str, bool)],
        wait: Duration,
    ) -> HashMap<u32, Vec<Raw>> {
        for (to, reverse) in targets {
            let mut order: Vec<&(usize, Msg)> = msgs.iter().collect();
            if *reverse {
                order.reverse();
            }
            for (_, m) in order {
                self.sock.send_to(&m.bytes(), to).unwrap();
            }
        }
        let want: HashSet<u32> = msgs.iter().map(|(_, m)| m.xid).collect();
        let mut got: HashMap<u32, Vec<Raw>> = HashMap::new();
        let end = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf)
                && n >= 240
                && buf[0] == 2
            {
                let r = Raw::parse(&buf[..n]);
                if want.contains(&r.xid) {
                    got.entry(r.xid).or_default().push(r);
                }
            }
        }
        got
    }

    /// DISCOVER → OFFER → REQUEST → ACK for the phones at `idx` (retried, bounded):
    /// index → (address, server that ACKed). Phones still without a lease are left out.
    fn lease_all(
        &self,
        idx: &[usize],
        prefer: impl Fn(usize) -> Ipv4Addr,
        rounds: u32,
    ) -> (HashMap<usize, (Ipv4Addr, Ipv4Addr)>, u32) {
        let mut leased = HashMap::new();
        let mut naks = 0;
        let mut round = 0u32;
        while round < rounds && leased.len() < idx.len() {
            round += 1;
            let todo: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|i| !leased.contains_key(i))
                .collect();
            let discovers: Vec<(usize, Msg)> = todo
                .iter()
                .map(|&i| {
                    let mut m = Msg::new(DISCOVER, self.macs[i]);
                    m.xid ^= round << 24;
                    (i, m)
                })
                .collect();
            // Both boxes hear the whole storm, in opposite orders (as two switches'
            // queues can deliver it): their first choices collide, and the database
            // must keep one address from going to two phones.
            let offers = self.round_to(
                &discovers,
                &[("198.18.0.1:67", false), ("198.18.0.2:67", true)],
                Duration::from_secs(2),
            );
            let mut requests = Vec::new();
            for (i, d) in &discovers {
                let Some(list) = offers.get(&d.xid) else {
                    continue;
                };
                let list: Vec<&Raw> = list.iter().filter(|r| r.mtype() == OFFER).collect();
                // Each phone takes the offer of the box it prefers when it has one.
                let Some(o) = list
                    .iter()
                    .find(|r| opt_ip(r, 54) == Some(prefer(*i)))
                    .or(list.first())
                else {
                    continue;
                };
                let mut m = Msg::new(REQUEST, self.macs[*i]);
                m.xid ^= round << 24;
                m.opts.push((54, o.opt(54).unwrap().to_vec()));
                m.opts.push((50, o.yiaddr.octets().to_vec()));
                requests.push((*i, m));
            }
            let acks = self.round(&requests, "255.255.255.255:67", Duration::from_secs(2));
            for (i, m) in &requests {
                for r in acks.get(&m.xid).into_iter().flatten() {
                    match r.mtype() {
                        ACK => {
                            leased.insert(*i, (r.yiaddr, opt_ip(r, 54).unwrap()));
                        }
                        NAK => naks += 1,
                        _ => {}
                    }
                }
            }
        }
        (leased, naks)
    }

    /// INIT-REBOOT (the address the phone remembers, no server chosen) sent to `to`:
    /// index → the reply (ACK or NAK) and who sent it.
    fn reboot(
        &self,
        who: &[(usize, Ipv4Addr)],
        to: &str,
        tag: u32,
    ) -> HashMap<usize, (u8, Ipv4Addr, Ipv4Addr)> {
        let msgs: Vec<(usize, Msg)> = who
            .iter()
            .map(|&(i, ip)| {
                let mut m = Msg::new(REQUEST, self.macs[i]);
                m.xid ^= tag << 24;
                m.opts.push((50, ip.octets().to_vec()));
                (i, m)
            })
            .collect();
        let mut out = HashMap::new();
        for _ in 0..4 {
            let todo: Vec<(usize, Msg)> = msgs
                .iter()
                .filter(|(i, _)| !out.contains_key(i))
                .map(|(i, m)| {
                    let mut c = Msg::new(m.mtype, m.mac);
                    c.xid = m.xid;
                    c.opts = m.opts.clone();
                    (*i, c)
                })
                .collect();
            if todo.is_empty() {
                break;
            }
            let got = self.round(&todo, to, Duration::from_secs(2));
            for (i, m) in &todo {
                if let Some(r) = got.get(&m.xid).and_then(|v| v.first()) {
                    out.insert(
                        *i,
                        (
                            r.mtype(),
                            r.yiaddr,
                            opt_ip(r, 54).unwrap_or(Ipv4Addr::UNSPECIFIED),
                        ),
                    );
                }
            }
        }
        out
    }
}

/// Addresses bound in the database: (count, distinct addresses, distinct clients).
fn bound_rows(pg: &PgCluster) -> (u64, u64, u64) {
    let r = pg.sql(
        "SELECT count(*), count(DISTINCT ip), count(DISTINCT client) FROM leases WHERE state = 1",
    );
    let v: Vec<u64> = r.split('|').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

fn assert_distinct(leased: &HashMap<usize, (Ipv4Addr, Ipv4Addr)>) {
    let mut by_ip: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, (ip, _)) in leased {
        if let Some(other) = by_ip.insert(*ip, *i) {
            panic!("{ip} was ACKed to phone {i} and phone {other}");
        }
    }
}

#[test]
fn two_boxes_share_leases_storm_renewals_outage_and_a_killed_box() {
    crate::support::needs!(root, "curl", "ip", "psql", "setpriv");
    let f = Fleet::new();
    let mut pa = f.start(&f.a, "a");
    let pb = f.start(&f.b, "b");
    let phones = Phones::new(&f.phones, 0..260);
    let prefer = |i: usize| ip_of(if i.is_multiple_of(2) { A } else { B });
    let all: Vec<usize> = (0..200).collect();
    // Each box sees the other in the store and takes its share of the pool.
    for ns in [&f.a, &f.b] {
        eventually("both boxes split the pool", Duration::from_secs(15), || {
            support::metric(&Fleet::metrics(ns), "provbox_dhcp_share_boxes") == 2.0
        });
    }

    // 200 phones at once, both boxes answering every DISCOVER.
    let (leased, naks) = phones.lease_all(&all, prefer, 8);
    assert_eq!(
        leased.len(),
        200,
        "phones without a lease: {:?}",
        all.iter()
            .filter(|i| !leased.contains_key(i))
            .collect::<Vec<_>>()
    );
    assert_distinct(&leased);
    let from_a = leased.values().filter(|(_, s)| *s == ip_of(A)).count();
    assert!(
        from_a > 0 && from_a < 200,
        "both boxes granted leases ({from_a} by A)"
    );
    assert_eq!(naks, 0, "no box NAKs a phone in the storm");
    assert_eq!(bound_rows(&f.pg), (200, 200, 200));
    // `provbox leases` on either box lists the fleet's leases from the database.
    let listed = f.b.exec(&[
        support::bin().to_str().unwrap(),
        "leases",
        "--config",
        pb.path().join("config.yaml").to_str().unwrap(),
    ]);
    assert_eq!(
        listed.lines().filter(|l| l.contains(" bound ")).count(),
        200,
        "{listed}"
    );
    // Both boxes answered every DISCOVER, each from its own share of the pool: they never
    // picked one address for two phones, so the database refused nothing (the refusal
    // itself: `a_lease_the_database_refuses_is_never_acked`).
    let collisions = held_elsewhere(&f.a) + held_elsewhere(&f.b);
    assert_eq!(collisions, 0.0, "the boxes picked the same addresses");
    eprintln!("storm: {from_a} leases by A, {} by B", 200 - from_a);

    // Each phone renews on the box that did not grant its lease: ACKed, same address.
    for (box_ip, tag) in [(A, 1u32), (B, 2)] {
        let who: Vec<(usize, Ipv4Addr)> = leased
            .iter()
            .filter(|(_, (_, s))| *s != ip_of(box_ip))
            .map(|(i, (ip, _))| (*i, *ip))
            .collect();
        let got = phones.reboot(&who, &format!("{box_ip}:67"), tag);
        for (i, ip) in &who {
            let r = got
                .get(i)
                .unwrap_or_else(|| panic!("phone {i} got no answer from {box_ip}"));
            assert_eq!(
                (r.0, r.1, r.2),
                (ACK, *ip, ip_of(box_ip)),
                "phone {i} renewing on {box_ip}"
            );
        }
    }
    assert_eq!(bound_rows(&f.pg), (200, 200, 200));

    // PostgreSQL stops in the middle of a second storm (10 more phones, their own
    // socket; 240 phones in all fill the 241-address pool): renewals of known leases
    // are answered, nothing new is.
    let storm = Phones::new(&f.phones, 0..260);
    let late: Vec<usize> = (230..240).collect();
    let mid = std::thread::spawn(move || storm.lease_all(&late, prefer, 12).0);
    std::thread::sleep(Duration::from_millis(1500));
    f.pg.stop_server();
    eventually("box A notices the outage", Duration::from_secs(15), || {
        Fleet::get(&f.a, "http://127.0.0.1:9100/readyz", false)
            .1
            .contains("degraded")
    });
    let newcomers: Vec<usize> = (200..230).collect();
    let (got_new, _) = phones.lease_all(&newcomers, prefer, 2);
    assert!(
        got_new.is_empty(),
        "leases granted without the database: {got_new:?}"
    );
    let some: Vec<(usize, Ipv4Addr)> = (0..40).map(|i| (i, leased[&i].0)).collect();
    let renewed = phones.reboot(&some, "255.255.255.255:67", 3);
    for (i, ip) in &some {
        let r = renewed
            .get(i)
            .unwrap_or_else(|| panic!("phone {i} not renewed during the outage"));
        assert_eq!((r.0, r.1), (ACK, *ip), "phone {i} during the outage");
    }
    let m = Fleet::metrics(&f.a) + &Fleet::metrics(&f.b);
    assert!(
        m.lines().any(
            |l| l.starts_with("provbox_dhcp_dropped_total{reason=\"store_unavailable\"")
                && !l.ends_with(" 0")
        ),
        "{m}"
    );
    f.pg.start_server();
    eventually("box A is ready again", Duration::from_secs(20), || {
        Fleet::get(&f.a, "http://127.0.0.1:9100/readyz", false)
            .1
            .starts_with("ready")
    });
    let (got_new, _) = phones.lease_all(&newcomers, prefer, 8);
    assert_eq!(got_new.len(), newcomers.len());
    let mut everyone = leased.clone();
    everyone.extend(got_new);
    let got_mid = mid.join().unwrap();
    eprintln!(
        "storm: {} of the 10 phones of the interrupted storm leased",
        got_mid.len()
    );
    everyone.extend(got_mid);
    assert_distinct(&everyone);
    // The renewals ACKed during the outage reached the database; no address twice.
    let n = everyone.len() as u64;
    eventually(
        "the outage renewals are written",
        Duration::from_secs(15),
        || bound_rows(&f.pg) == (n, n, n),
    );

    // kill -9 box A: box B renews A's phones (broadcast, as a phone rebinding does).
    pa.signal_and_wait("KILL");
    let of_a: Vec<(usize, Ipv4Addr)> = everyone
        .iter()
        .filter(|(_, (_, s))| *s == ip_of(A))
        .map(|(i, (ip, _))| (*i, *ip))
        .collect();
    assert!(!of_a.is_empty());
    let got = phones.reboot(&of_a, "255.255.255.255:67", 4);
    for (i, ip) in &of_a {
        let r = got
            .get(i)
            .unwrap_or_else(|| panic!("phone {i} of box A not renewed by B"));
        assert_eq!((r.0, r.1, r.2), (ACK, *ip, ip_of(B)));
    }
    drop(pb);
}

fn held_elsewhere(ns: &Netns) -> f64 {
    support::metric(
        &Fleet::metrics(ns),
        "provbox_dhcp_dropped_total{reason=\"lease_held_elsewhere\"}",
    )
}

/// The database, not a box's memory, decides: every address of the pool is another live
/// client's in PostgreSQL (rows the box has not read yet), so each offer the box makes is
/// refused at commit: never ACKed, counted, and the rows stay the other client's.
#[test]
fn a_lease_the_database_refuses_is_never_acked() {
    crate::support::needs!(root, "curl", "ip", "psql", "setpriv");
    let f = Fleet::new();
    let pa = f.start(&f.a, "a");
    let phones = Phones::new(&f.phones, 0..1);
    // A far-back change number: the box's sync (which reads forward from what it has
    // seen) passes these rows over until its full re-read a minute from now.
    let (lo, hi) = (
        u32::from(ip_of("198.18.0.10")),
        u32::from(ip_of("198.18.0.250")),
    );
    f.pg.sql(&format!(
        "INSERT INTO leases (ip, client, mac, state, expires, box, seq) \
         SELECT n, int8send(n), '\\x020000000000'::bytea, 1, \
                extract(epoch FROM now())::bigint + 3600, 'ghost', -1000000 \
         FROM generate_series({lo}, {hi}) n"
    ));
    let (leased, naks) = phones.lease_all(&[0], |_| ip_of(A), 2);
    assert!(leased.is_empty(), "ACKed against the database: {leased:?}");
    assert_eq!(naks, 0);
    assert!(held_elsewhere(&f.a) >= 1.0, "{}", Fleet::metrics(&f.a));
    assert_eq!(
        f.pg.sql("SELECT count(*) FROM leases WHERE box = 'ghost' AND state = 1"),
        (hi - lo + 1).to_string()
    );
    assert_eq!(
        f.pg.sql("SELECT count(*) FROM leases WHERE box <> 'ghost'"),
        "0"
    );
    drop(pa);
}

/// Leases' expiry times in the database, by address.
fn expiries(pg: &PgCluster, ips: &[Ipv4Addr]) -> Vec<i64> {
    ips.iter()
        .map(|ip| {
            pg.sql(&format!(
                "SELECT expires FROM leases WHERE ip = {}",
                u32::from(*ip)
            ))
            .parse()
            .unwrap()
        })
        .collect()
}

/// Renewals ACKed while PostgreSQL is away are synced to the outage spool before the ACK
/// leaves: a box killed in the outage writes them to the database when it starts again.
#[test]
fn renewals_acked_in_an_outage_survive_a_crash_of_the_box() {
    crate::support::needs!(root, "curl", "ip", "psql", "setpriv");
    let f = Fleet::new();
    let mut pa = f.start(&f.a, "a");
    let phones = Phones::new(&f.phones, 0..5);
    let all: Vec<usize> = (0..5).collect();
    let (leased, _) = phones.lease_all(&all, |_| ip_of(A), 4);
    assert_eq!(leased.len(), 5, "{leased:?}");
    let who: Vec<(usize, Ipv4Addr)> = all.iter().map(|&i| (i, leased[&i].0)).collect();
    let ips: Vec<Ipv4Addr> = who.iter().map(|w| w.1).collect();
    let before = expiries(&f.pg, &ips);
    // Expiry times are in seconds: let the renewals' be later.
    std::thread::sleep(Duration::from_millis(2100));

    f.pg.stop_server();
    eventually("box A notices the outage", Duration::from_secs(15), || {
        Fleet::get(&f.a, "http://127.0.0.1:9100/readyz", false)
            .1
            .contains("degraded")
    });
    let got = phones.reboot(&who, &format!("{A}:67"), 1);
    for (i, ip) in &who {
        let r = got
            .get(i)
            .unwrap_or_else(|| panic!("phone {i} not renewed"));
        assert_eq!((r.0, r.1), (ACK, *ip), "phone {i} during the outage");
    }
    let spool = pa.path().join("data").join("dhcp-outage.journal");
    let spooled = std::fs::metadata(&spool).unwrap().len();
    pa.signal_and_wait("KILL");

    f.pg.start_server();
    let dir = std::mem::replace(&mut pa.dir, Provbox::dir());
    let pa = Provbox::start_with(dir, &f.config("a"), &f.a.prefix());
    eventually(
        "the spooled renewals reach the database",
        Duration::from_secs(15),
        || {
            expiries(&f.pg, &ips)
                .iter()
                .zip(&before)
                .all(|(now, was)| now > was)
        },
    );
    assert!(
        pa.log().contains("ACKed while PostgreSQL was away"),
        "{}",
        pa.log()
    );
    // Once the database has them the spool is emptied (down to its header).
    eventually("the spool is emptied", Duration::from_secs(10), || {
        std::fs::metadata(&spool).unwrap().len() < spooled
    });
}

#[test]
fn one_fleet_view_a_syslog_line_to_a_shows_on_b() {
    crate::support::needs!(root, "curl", "ip", "logger", "psql", "setpriv");
    let f = Fleet::new();
    // The firmware rsync to B did not finish: one file differs, the other is equal.
    let pa = f.start_with_files(
        &f.a,
        "a",
        &[("fw.bin", "firmware 2.0\n"), ("a.cfg", "same\n")],
    );
    let pb = f.start_with_files(&f.b, "b", &[("fw.bin", "firmware 1"), ("a.cfg", "same\n")]);
    support::require("logger");
    f.phone_says("SPA504G 000e08aa0001 -- Successful resync http://198.18.0.1/spa504g.cfg");
    let url = "http://127.0.0.1:8081/api/devices/00:0e:08:aa:00:01";
    let d = wait_until(Duration::from_secs(20), || {
        let (code, body) = Fleet::get(&f.b, url, true);
        (code == "200").then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    })
    .unwrap_or_else(|| {
        panic!(
            "box B never showed the device box A heard: {:?}",
            Fleet::get(&f.b, url, true)
        )
    });
    assert_eq!(d["state"], "provisioned");
    let ev = d["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(ev["kind"], "resync_ok");
    assert_eq!(ev["by"], "a", "the event names the box that saw it");
    // And the device list on B has it too.
    let (_, list) = Fleet::get(&f.b, "http://127.0.0.1:8081/api/devices", true);
    assert!(list.contains("00:0e:08:aa:00:01"), "{list}");
    // The dashboard flags the file that differs between the boxes, and only that one.
    let differ = wait_until(Duration::from_secs(20), || {
        let (_, body) = Fleet::get(&f.a, "http://127.0.0.1:8081/api/devices", true);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let d = v["files_differ"].as_array()?.clone();
        (!d.is_empty()).then_some(d)
    })
    .expect("no file flagged as different");
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert_eq!(differ[0]["path"], "fw.bin");
    assert_eq!(differ[0]["boxes"].as_array().unwrap().len(), 2);
    // One lab CA for both boxes.
    let ca = |p: &Provbox| std::fs::read_to_string(p.path().join("data/tls/ca.pem")).unwrap();
    assert_eq!(ca(&pa), ca(&pb));

    // Heard while PostgreSQL is away: kept by box A, on box B once it is back.
    f.pg.stop_server();
    eventually("box A notices the outage", Duration::from_secs(15), || {
        Fleet::get(&f.a, "http://127.0.0.1:9100/readyz", false)
            .1
            .contains("degraded")
    });
    f.phone_says("SPA504G 000e08aa0002 -- Resync failed: HTTP 404 Not Found");
    let url2 = "http://127.0.0.1:8081/api/devices/00:0e:08:aa:00:02";
    eventually("box A has it meanwhile", Duration::from_secs(10), || {
        Fleet::get(&f.a, url2, true).0 == "200"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        Fleet::get(&f.b, url2, true).0,
        "404",
        "B cannot know it yet"
    );
    f.pg.start_server();
    let d = wait_until(Duration::from_secs(30), || {
        let (code, body) = Fleet::get(&f.b, url2, true);
        (code == "200").then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    })
    .expect("the record kept during the outage never reached box B");
    assert_eq!(d["state"], "failed");
}

// ------------------------------------------------------------------ PIN binding

fn binding_box(pg: &PgCluster, name: &str, http: u16, metrics: u16, pins: usize) -> Provbox {
    let d = Provbox::dir();
    std::fs::write(
        d.path().join("files/init.cfg.tmpl"),
        "<flat-profile><!-- $account --></flat-profile>\n",
    )
    .unwrap();
    let mut inv = String::from("devices:\n");
    for k in 0..pins {
        inv.push_str(&format!(
            "  - pin: \"{}\"\n    account: acct-{k}\n",
            1000 + k
        ));
    }
    std::fs::write(d.path().join("inventory.yaml"), inv).unwrap();
    let cfg = format!(
        "data_dir: data\ncatalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{http}\"]\n\
metrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics}\n\
devices:\n  inventory: inventory.yaml\n  trust:\n    user_agent: true\n  binding:\n    init_prefix: /init\n    profile: init.cfg.tmpl\n{}",
        store_yaml(&pg.url(), name)
    );
    Provbox::start(d, &cfg)
}

fn yealink(n: usize) -> String {
    format!(
        "Yealink SIP-T46G 28.72.0.1 00:15:65:4a:{:02x}:{:02x}",
        n >> 8,
        n & 0xff
    )
}

fn get_as(port: u16, ua: &str, path: &str) -> u16 {
    support::curl(10, &["-A", ua], &format!("http://127.0.0.1:{port}{path}")).code
}

#[test]
fn the_same_pin_on_two_boxes_at_once_binds_one_device_and_an_outage_answers_503() {
    crate::support::needs!(root, "curl", "ip", "psql", "setpriv");
    let pg = PgCluster::start(None, "127.0.0.1", free_tcp_port());
    let [ha, ma, hb, mb] = [(); 4].map(|_| free_tcp_port());
    // Four at once per box: all from 127.0.0.1, which may guess wrong five times
    // (MAX_WRONG_PINS) before the address is locked out.
    let pins = 4;
    let a = binding_box(&pg, "a", ha, ma, pins + 1);
    let b = binding_box(&pg, "b", hb, mb, pins + 1);
    // Each PIN from two phones at the same moment, one on each box.
    let codes: Vec<(u16, u16)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..pins)
            .map(|k| {
                let path = format!("/init/{}", 1000 + k);
                let (ua1, ua2) = (yealink(2 * k), yealink(2 * k + 1));
                let p2 = path.clone();
                let t1 = s.spawn(move || get_as(ha, &ua1, &path));
                let t2 = s.spawn(move || get_as(hb, &ua2, &p2));
                (t1, t2)
            })
            .collect();
        handles
            .into_iter()
            .map(|(a, b)| (a.join().unwrap(), b.join().unwrap()))
            .collect()
    });
    for (k, (a, b)) in codes.iter().enumerate() {
        let mut got = [*a, *b];
        got.sort();
        assert_eq!(
            got,
            [200, 403],
            "PIN {} answered {a} on A and {b} on B",
            1000 + k
        );
    }
    assert_eq!(
        pg.sql("SELECT count(*), count(DISTINCT pin) FROM pin_bindings"),
        format!("{pins}|{pins}")
    );
    // A bound phone repeating its request on the other box is bound already ("again").
    let first = pg.sql("SELECT mac FROM pin_bindings WHERE pin = '1000'");
    let n = if first.ends_with("0000") { 0 } else { 1 };
    assert_eq!(
        get_as(if n == 0 { hb } else { ha }, &yealink(n), "/init/1000"),
        200
    );

    // The database away: files are still served, a PIN binding answers 503.
    pg.stop_server();
    std::fs::write(a.path().join("files/plain.txt"), "still here\n").unwrap();
    eventually(
        "a file served during the outage",
        Duration::from_secs(10),
        || get_as(ha, &yealink(500), "/plain.txt") == 200,
    );
    assert_eq!(get_as(ha, &yealink(501), "/init/1000"), 503);
    pg.start_server();
    eventually("box B is ready again", Duration::from_secs(20), || {
        support::curl(5, &[], &format!("http://127.0.0.1:{mb}/readyz")).body == b"ready\n"
    });
    assert_eq!(
        get_as(hb, &yealink(600), &format!("/init/{}", 1000 + pins)),
        200
    );

    // `provbox bindings` (no dashboard here: straight to the store) lists and frees the
    // fleet's bindings in PostgreSQL, not the box's own redb.
    let cfg_a = a.path().join("config.yaml");
    let cfg_a = cfg_a.to_str().unwrap();
    let (code, out) = support::provbox(&["bindings", "list", "--config", cfg_a]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"1000\""), "{out}");
    let (code, out) = support::provbox(&["bindings", "unbind", "1000", "--config", cfg_a]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        pg.sql("SELECT count(*) FROM pin_bindings WHERE pin = '1000'"),
        "0"
    );

    // `provbox devices import` on box A reaches box B's inventory through the database.
    let scan = a.path().join("scan.csv");
    std::fs::write(&scan, "mac,extension\n0015654aff01,4242\n").unwrap();
    let (code, out) = support::provbox(&[
        "devices",
        "import",
        scan.to_str().unwrap(),
        "--config",
        a.path().join("config.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    eventually(
        "box B's inventory has the imported device",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(b.path().join("inventory.yaml"))
                .is_ok_and(|t| t.contains("4242"))
        },
    );
    assert!(pg.sql("SELECT body FROM inventory").contains("4242"));
}
