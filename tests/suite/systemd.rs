//! systemd/provbox.service: `systemd-analyze verify` accepts it (and rejects a broken copy),
//! `systemd-analyze security` rates its exposure at most 2.0, and the process speaks the
//! notify protocol the unit's Type=notify relies on.

use crate::support;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn unit_text() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/provbox.service"),
    )
    .unwrap()
}

/// The unit with its ExecStart pointing at the binary under test (verify checks that the
/// executable exists), written to a fresh directory.
fn installed_copy(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provbox.service");
    let text = text.replace("/usr/local/bin/provbox", support::bin().to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn verify(path: &std::path::Path) -> (bool, String) {
    let out = support::run(
        "systemd-analyze",
        &["verify", "--man=no", path.to_str().unwrap()],
    );
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // verify reports unknown keys and bad values as warnings with exit 0: any output
    // about our unit counts as a failure.
    let clean = out.status.success() && !text.contains("provbox.service");
    (clean, text)
}

#[test]
fn unit_verifies_and_a_broken_one_does_not() {
    crate::support::needs!("systemd-analyze");
    let (_d, path) = installed_copy(&unit_text());
    let (ok, text) = verify(&path);
    assert!(ok, "systemd-analyze verify:\n{text}");

    for (from, to) in [
        ("Type=notify", "Tpye=notify"),
        ("ProtectSystem=strict", "ProtectSystem=very"),
    ] {
        let (_d, path) = installed_copy(&unit_text().replace(from, to));
        let (ok, text) = verify(&path);
        assert!(!ok, "verify accepted `{to}`:\n{text}");
    }
}

fn exposure(path: &std::path::Path) -> (f64, String) {
    let out = support::run(
        "systemd-analyze",
        &[
            "security",
            "--offline=true",
            "--no-pager",
            path.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let n: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the number in `{line}`"));
    (n, text)
}

#[test]
fn security_exposure_is_at_most_2() {
    crate::support::needs!("systemd-analyze");
    let (_d, path) = installed_copy(&unit_text());
    let (n, text) = exposure(&path);
    assert!(n <= 2.0, "exposure {n} > 2.0:\n{text}");
    // The number is real: the same unit without its hardening rates far worse.
    let bare: String = unit_text()
        .lines()
        .filter(|l| {
            !l.starts_with("Protect")
                && !l.starts_with("Restrict")
                && !l.starts_with("SystemCall")
                && !l.starts_with("CapabilityBoundingSet")
                && !l.starts_with("DynamicUser")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (_d2, path) = installed_copy(&bare);
    let (worse, _) = exposure(&path);
    assert!(worse > 5.0, "the unhardened unit rates {worse}");
}

#[test]
fn unit_grants_exactly_the_two_capabilities() {
    let text = unit_text();
    for line in [
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW",
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.lines().any(|l| l == line), "unit lacks `{line}`");
    }
}

/// Type=notify: READY=1 only after the listeners are bound, RELOADING=1 then READY=1 around
/// a reload, STOPPING=1 on SIGTERM, WATCHDOG=1 pings when asked; over an abstract socket
/// as systemd uses in containers.
#[test]
fn notify_protocol_ready_reloading_stopping() {
    let dir = support::Provbox::dir();
    let port = support::free_tcp_port();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    use std::os::linux::net::SocketAddrExt;
    let name = format!("provbox-notify-{}-{port}", std::process::id());
    let sock = UnixDatagram::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap(),
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(support::bin())
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let log = dir.path().join("log");
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notification ({e}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // The next state change, skipping watchdog pings.
    let recv = || loop {
        let m = next();
        if m != "WATCHDOG=1" {
            return m;
        }
    };
    let ready = recv();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // WatchdogSec=: with nothing else happening, the next message is a watchdog ping.
    assert_eq!(next(), "WATCHDOG=1");
    // Ready means bound: the HTTP port answers now.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("listener bound at READY=1");
    let pid = child.id();
    support::signal(pid, "HUP");
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(recv().starts_with("READY=1"));
    support::signal(pid, "TERM");
    assert!(recv().starts_with("STOPPING=1"));

    assert!(child.wait().unwrap().success());
}
