//! The helpers every test module shares: bounded waits, a curl wrapper, the `/metrics`
//! fetcher, signals and process output. One copy each, so a fix (a timeout, a curl flag)
//! lands everywhere.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Provbox, provbox, require, run};

/// Poll `f` every 50 ms for at most `limit`; its first `Some`, or `None` on timeout.
pub fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`wait_until`], but a timeout panics naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_until(limit, f).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Poll until `f` holds; a timeout panics naming `what`. The bound is a hang guard, not
/// a performance claim.
pub fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    wait_for(what, limit, || f().then_some(()))
}

/// Send `sig` (a name: "HUP", "TERM", "USR1"...) to `pid` with kill(1); whether it went.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A program's stdout then stderr, as text.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Start `cmd` with `input` written to its stdin (then closed) and its output piped.
pub fn spawn_with_stdin(cmd: &mut Command, input: &[u8]) -> Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input).unwrap();
    child
}

/// Run `cmd`, panicking with the command and its stderr unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// curl's arguments that print only the status code (`000` when nothing answered).
pub const CURL_CODE: &[&str] = &["-s", "-o", "/dev/null", "-w", "%{http_code}"];

/// curl's status code for `url` with `args` before it ("000" when no answer).
pub fn http_code(args: &[&str], url: &str) -> String {
    let mut all = CURL_CODE.to_vec();
    all.extend(["--max-time", "10"]);
    all.extend_from_slice(args);
    all.push(url);
    String::from_utf8_lossy(&run("curl", &all).stdout).into_owned()
}

/// One curl exchange: status (0 when none), lowercased response headers, body.
pub struct Reply {
    pub code: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

/// curl `url` with `args` before it, waiting at most `max_secs`.
pub fn curl(max_secs: u32, args: &[&str], url: &str) -> Reply {
    require("curl");
    let tmp = tempfile::tempdir().unwrap();
    let body = tmp.path().join("body");
    let head = tmp.path().join("head");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", &max_secs.to_string(), "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .to_lowercase();
    Reply {
        code,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// The text of `/metrics` on 127.0.0.1:`port` (empty when nothing answered).
pub fn scrape(port: u16) -> String {
    let out = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}/metrics"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Read an HTTP request or response head (up to the blank line) from `s`.
pub fn read_head(s: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// Fetch `name` in octet mode from the TFTP server on 127.0.0.1:`port` into `out` with the
/// tftp client; its output (whether it worked is the caller's to judge).
pub fn tftp_get(port: &str, name: &str, out: &Path) -> Output {
    run(
        "tftp",
        &[
            "127.0.0.1",
            port,
            "-m",
            "octet",
            "-c",
            "get",
            name,
            out.to_str().unwrap(),
        ],
    )
}

/// Write `yaml` as config.yaml in a fresh test dir and run `provbox check` on it, which
/// must refuse it: the dir (kept alive for the caller), the file and the output.
pub fn check_refuses(yaml: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = Provbox::dir();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let (code, out) = provbox(&["check", "--config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    (dir, cfg, out)
}

/// The config lines that serve `files/` over HTTP on 127.0.0.1:`http` with metrics on
/// 127.0.0.1:`metrics` (from `catalog:`; the caller adds `data_dir` and the rest).
pub fn http_and_metrics(http: u16, metrics: u16) -> String {
    format!(
        "catalog:
  roots: [files]
http:
  enabled: true
  listen: [\"127.0.0.1:{http}\"]
metrics:
  enabled: true
  listen: 127.0.0.1:{metrics}
"
    )
}
