//! Network namespaces for tests that must not touch the machine's own network (DHCP, DNS,
//! TFTP on real ports). A [`Lab`] owns every namespace it creates and deletes them in
//! `Drop`, which also runs when the test panics; processes still running inside are
//! killed first so no namespace outlives the test.
//!
//! ```ignore
//! let lab = Lab::new();
//! let srv = lab.ns("srv");                          // lo up, no default route
//! let cli = lab.ns("cli");
//! lab.link(&srv, "198.18.0.1/24", &cli, "198.18.0.2/24");   // veth0 <-> veth0
//! cli.exec(&["busybox", "ping", "-c1", "198.18.0.1"]);
//! // or one L2 segment for many clients (what a DHCP server needs):
//! lab.bridge(&srv, Some("198.18.0.1/24"));          // br0 in srv
//! lab.attach(&srv, &cli, None);                     // eth0 in cli, enslaved to br0
//! let p = Provbox::start_with(dir, yaml, &srv.prefix()); // provbox inside srv
//! let sock = cli.enter(|| UdpSocket::bind("0.0.0.0:68")); // a socket living in cli
//! ```
//!
//! Names are `pbx<pid>n<counter><tag>`: unique per test process, so tests run in parallel;
//! namespaces left behind by a killed test process (its pid gone) are removed by the next
//! `Lab::new`. Interfaces live only inside the lab's namespaces (never in the root one),
//! so their names only need to be unique per namespace.

use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Prefix every helper-made namespace starts with.
pub const PREFIX: &str = "pbx";

fn ip(args: &[&str]) -> Output {
    super::require("ip");
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"))
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every namespace name currently present.
pub fn list() -> Vec<String> {
    let out = ip(&["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn kill_all_in(name: &str) {
    let out = ip(&["netns", "pids", name]);
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: plain syscall on a pid found inside one of our own namespaces.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn delete(name: &str) {
    kill_all_in(name);
    // A process that just died may hold the namespace a moment; retry briefly.
    let start = Instant::now();
    loop {
        let out = ip(&["netns", "del", name]);
        if out.status.success() || !list().iter().any(|n| n == name) {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "netns: could not delete {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Remove namespaces made by test processes that no longer exist.
fn reap_stale() {
    for name in list() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if rest[digits.len()..].starts_with('n')
            && let Ok(pid) = digits.parse::<u32>()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            delete(&name);
        }
    }
}

/// One network namespace made by a [`Lab`].
#[derive(Clone, Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns exec <ns> prog args...` as an argument vector (for `Provbox::start_with`).
    pub fn prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Run a program inside the namespace and wait for it.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// curl inside the namespace with `args` (URL and options): (status, body); status 0
    /// when nothing answered.
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut all = vec!["curl", "-s", "--max-time", "20", "-w", "\n%{http_code}"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Run and panic (with its output) unless it succeeds; returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start a program inside the namespace; it is killed when the guard drops (and, at
    /// the latest, when the lab drops).
    pub fn spawn(&self, args: &[&str]) -> Bg {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {}: {e}", self.name));
        Bg { child: Some(child) }
    }

    /// Run `f` on a thread that has entered this namespace: sockets it creates belong to
    /// the namespace and keep working after `f` returns (the caller's own thread never moves).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace fd we own; affects only this new thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["-n", &self.name];
        v.extend_from_slice(args);
        ip_ok(&v);
    }
}

/// A background process in a namespace, killed on drop.
pub struct Bg {
    pub child: Option<Child>,
}

impl Bg {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    /// Kill it and return what it printed (stdout, stderr).
    pub fn stop(&mut self) -> (String, String) {
        let Some(mut c) = self.child.take() else {
            return Default::default();
        };
        let _ = c.kill();
        let out = c.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A set of namespaces, links and bridges, all removed on drop.
pub struct Lab {
    id: String,
    made: Mutex<Vec<String>>,
    links: AtomicU32,
}

impl Lab {
    pub fn new() -> Lab {
        super::require_root("a network-namespace lab");
        reap_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Lab {
            id: format!("{PREFIX}{}n{n}", std::process::id()),
            made: Mutex::new(Vec::new()),
            links: AtomicU32::new(0),
        }
    }

    /// Create namespace `<lab id><tag>` with loopback up and no other route.
    pub fn ns(&self, tag: &str) -> Netns {
        let name = format!("{}{tag}", self.id);
        ip_ok(&["netns", "add", &name]);
        self.made.lock().unwrap().push(name.clone());
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair `veth<k>` in `a` ↔ `veth<k>` in `b`, addressed (CIDR) and up.
    /// Returns the interface name (the same on both sides).
    pub fn link(&self, a: &Netns, addr_a: &str, b: &Netns, addr_b: &str) -> String {
        let k = self.links.fetch_add(1, Ordering::Relaxed);
        let ifname = format!("veth{k}");
        a.ip(&[
            "link", "add", &ifname, "type", "veth", "peer", "name", &ifname, "netns", &b.name,
        ]);
        for (ns, addr) in [(a, addr_a), (b, addr_b)] {
            ns.ip(&["addr", "add", addr, "dev", &ifname]);
            ns.ip(&["link", "set", &ifname, "up"]);
        }
        ifname
    }

    /// A bridge `br0` inside `ns` (addressed with `addr` if given): one L2 segment for
    /// several client namespaces, as a phone LAN is.
    pub fn bridge(&self, ns: &Netns, addr: Option<&str>) -> String {
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        // No STP/forward delay: ports forward at once, so the first DHCP packet gets through.
        ns.ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ]);
        if let Some(a) = addr {
            ns.ip(&["addr", "add", a, "dev", "br0"]);
        }
        ns.ip(&["link", "set", "br0", "up"]);
        "br0".into()
    }

    /// Plug `client` into the bridge in `bridge_ns`: `eth0` in the client (addressed when
    /// `addr` is given, else left for DHCP), `p<k>` enslaved to `br0`. Returns eth0's MAC.
    pub fn attach(&self, bridge_ns: &Netns, client: &Netns, addr: Option<&str>) -> String {
        self.attach_as(bridge_ns, client, "eth0", addr, None)
    }

    /// Like [`attach`](Self::attach) with the client's interface name and MAC chosen.
    pub fn attach_as(
        &self,
        bridge_ns: &Netns,
        client: &Netns,
        ifname: &str,
        addr: Option<&str>,
        mac: Option<&str>,
    ) -> String {
        let k = self.links.fetch_add(1, Ordering::Relaxed);
        let port = format!("p{k}");
        bridge_ns.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            &client.name,
        ]);
        bridge_ns.ip(&["link", "set", &port, "master", "br0"]);
        bridge_ns.ip(&["link", "set", &port, "up"]);
        if let Some(m) = mac {
            client.ip(&["link", "set", ifname, "address", m]);
        }
        if let Some(a) = addr {
            client.ip(&["addr", "add", a, "dev", ifname]);
        }
        client.ip(&["link", "set", ifname, "up"]);
        let out = client.exec(&["cat", &format!("/sys/class/net/{ifname}/address")]);
        out.trim().to_string()
    }

    /// Names of the namespaces this lab made (still present until drop).
    pub fn names(&self) -> Vec<String> {
        self.made.lock().unwrap().clone()
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()));
        for name in made.iter().rev() {
            delete(name);
        }
    }
}
