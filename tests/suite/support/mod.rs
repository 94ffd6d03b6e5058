//! Shared helpers for integration tests: start the real `provbox` binary with a config,
//! pick free ports, run real client programs. Each test gets its own temp dir and ports,
//! so tests run in parallel.

pub mod dedupe;
pub mod dhcp_raw;
pub mod dns;
pub mod fixtures;
pub mod netns;
pub mod pg;
pub mod sipp;
pub mod tftp;
mod tools;

pub use tools::*;

use std::io::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_provbox"))
}

/// Next candidate port for this test process. Ports come from below the kernel's
/// ephemeral range (`ip_local_port_range`), so no client socket, TFTP transfer socket or
/// outgoing connection anywhere on the machine can take one between our check and
/// provbox's bind (CI once failed on exactly that with ports picked by binding port 0).
/// The walk starts at a pid-derived offset so test binaries running side by side rarely
/// meet, and every candidate is checked free on TCP and UDP at once.
static NEXT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn free_port() -> u16 {
    const LOW: u16 = 10000;
    let high = ephemeral_low().max(LOW + 2000);
    let span = u32::from(high - LOW);
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let mut port =
        next.unwrap_or_else(|| LOW + (std::process::id().wrapping_mul(2654435761) % span) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= high { LOW } else { port + 1 };
        let tcp = TcpListener::bind(("127.0.0.1", candidate)).is_ok();
        let udp = UdpSocket::bind(("127.0.0.1", candidate)).is_ok();
        if tcp && udp {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOW} and {high}");
}

/// A port free on 127.0.0.1 for TCP (and UDP) right now, never handed out twice.
pub fn free_tcp_port() -> u16 {
    free_port()
}

/// A port free on 127.0.0.1 for UDP (and TCP) right now, never handed out twice.
pub fn free_udp_port() -> u16 {
    free_port()
}

/// The value of the first Prometheus sample in `text` whose line starts with `series`
/// (name and labels), or 0 when there is none.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether `program` is on the PATH.
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Whether this process runs as root (network namespaces, privileged ports, capabilities).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `PROVBOX_TEST_STRICT=1` (set by `tests/run`, so by `.ci/run`): every skip for a missing
/// privilege or tool is a failure instead, so CI runs every test or says why not.
pub fn strict() -> bool {
    std::env::var_os("PROVBOX_TEST_STRICT").is_some_and(|v| !v.is_empty() && v != "0")
}

/// What of `root` and `programs` this machine lacks: `needs root`, `needs curl, dig`.
pub fn lacking(root: bool, programs: &[&str]) -> Option<String> {
    let mut why = Vec::new();
    if root && !is_root() {
        why.push("root".to_string());
    }
    why.extend(
        programs
            .iter()
            .filter(|p| !installed(p))
            .map(|p| p.to_string()),
    );
    (!why.is_empty()).then(|| format!("needs {}", why.join(", ")))
}

/// The one place a test decides to skip: true (the caller returns) after printing
/// `skipped: needs …`; under [`strict`] it panics with the same words instead.
pub fn skip_unless(root: bool, programs: &[&str]) -> bool {
    let Some(why) = lacking(root, programs) else {
        return false;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    assert!(
        !strict(),
        "{test}: {why} and PROVBOX_TEST_STRICT is set (CI runs every test; run `.ci/run` as root, or install the packages tests/run lists)"
    );
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a
    // skip must show in a plain `cargo test` run.
    let _ = writeln!(std::io::stderr(), "skipped: {why} ({test})");
    true
}

/// First line of a test that needs root (network namespaces, port 53/67/69) and/or client
/// programs: `needs!(root, "busybox", "curl");` or `needs!("dig");`. Without them the
/// test prints `skipped: needs …` and returns; `PROVBOX_TEST_STRICT=1` makes that a failure.
macro_rules! needs {
    (root $(, $program:expr)* $(,)?) => {
        if $crate::support::skip_unless(true, &[$($program),*]) {
            return;
        }
    };
    ($($program:expr),+ $(,)?) => {
        if $crate::support::skip_unless(false, &[$($program),+]) {
            return;
        }
    };
}
pub(crate) use needs;

/// Panics with a clear message when a client program is missing: a test that did not
/// declare it with [`needs!`] (which skips) has a bug, and this says which program.
pub fn require(program: &str) {
    assert!(
        installed(program),
        "`{program}` is not installed and the test did not declare it with `needs!`; run `.ci/run` (or install the packages tests/run lists)"
    );
}

/// Panics unless root: for helpers that cannot work without it (a test declares
/// `needs!(root)` first, so reaching this unprivileged is a bug in the test).
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (CAP_NET_ADMIN) and the test did not declare `needs!(root)`; CI runs as root"
    );
}

/// Run a program, returning its output; panics if it cannot be started.
pub fn run(program: &str, args: &[&str]) -> Output {
    require(program);
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A running provbox with its own directory (config, data, served files).
pub struct Provbox {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

impl Provbox {
    /// A fresh directory with `files/` ready for the test to fill before `start`.
    pub fn dir() -> tempfile::TempDir {
        let d = tempfile::Builder::new()
            .prefix("provbox-test")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(d.path().join("files")).unwrap();
        d
    }

    /// [`Provbox::dir`] with `files` (name under `files/`, body) in it, to serve.
    pub fn serving<B: AsRef<[u8]> + ?Sized>(files: &[(&str, &B)]) -> tempfile::TempDir {
        let d = Self::dir();
        fixtures::serve_files(d.path(), files);
        d
    }

    /// Write `config` as `config.yaml` in `dir` and start `provbox serve`, waiting until it
    /// says it is ready. Panics with the log if it exits or takes too long.
    pub fn start(dir: tempfile::TempDir, config: &str) -> Provbox {
        Self::start_with(dir, config, &[])
    }

    pub fn start_with(dir: tempfile::TempDir, config: &str, prefix: &[&str]) -> Provbox {
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, config).unwrap();
        let log_path = dir.path().join("provbox.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = if prefix.is_empty() {
            Command::new(bin())
        } else {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(bin());
            c
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("PROVBOX_LOG", "debug,notify=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start provbox");
        let mut p = Provbox {
            child: Some(child),
            dir,
            log_path,
        };
        p.wait_for_log("provbox ready", Duration::from_secs(20));
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Wait until the log contains `needle`; panics (showing the log) on timeout or exit.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "provbox exited ({status}) before `{needle}`:\n{}",
                    self.log()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "no `{needle}` in the log after {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Send `sig` ("HUP", "TERM"...) to provbox; whether it went.
    pub fn signal(&self, sig: &str) -> bool {
        signal(self.pid(), sig)
    }

    /// SIGHUP: ask provbox to reload its configuration (asserts the signal went).
    pub fn reload(&self) {
        assert!(self.signal("HUP"), "cannot send SIGHUP to provbox");
    }

    /// Send a signal and wait for the process to exit; returns its exit code.
    pub fn signal_and_wait(&mut self, sig: &str) -> Option<i32> {
        self.signal(sig);
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("provbox did not exit after SIG{sig}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Provbox {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- provbox log ----\n{}", self.log());
        }
    }
}

/// Run `provbox check` (or another subcommand) and return (exit code, stdout + stderr).
pub fn provbox(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A client certificate for `mac` from the lab CA, as a phone carries it.
pub fn client_cert(dir: &std::path::Path, mac: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let lab = provbox::tls::LabCa::ensure(&dir.join("data/tls"), &[]).unwrap();
    let (cert, key) = lab
        .issue(&[format!("SEP{}", mac.to_uppercase())], true)
        .unwrap();
    let (c, k) = (
        dir.join(format!("{mac}.pem")),
        dir.join(format!("{mac}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}
