//! The fleet simulator (bench/fleet, crate `provbox-fleet`) against provbox, so the
//! capacity tool cannot rot: 50 phones through DHCP (relayed), TFTP, DNS, HTTPS with their
//! own client certificates, firmware by Range, and syslog.
//!
//! The simulator is another workspace package, so Cargo gives this test no
//! `CARGO_BIN_EXE_` path for it; the test builds it once with the cargo that runs the
//! suite (`cargo build -p provbox-fleet`, same profile and target directory: a no-op when
//! it is up to date) and runs the binary inside a network namespace, exactly as
//! bench/fleet.sh does.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::Provbox;
use support::netns::Lab;

/// Build the simulator next to this test binary and return its path.
fn fleet_bin() -> PathBuf {
    // <target>/<profile>/deps/suite-<hash>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let target = profile_dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Cargo gives this process the suite package's CARGO_PKG_*, CARGO_MANIFEST_* and
    // CARGO_BIN_EXE_* variables; build scripts that watch such variables (ring's) would
    // see them changed and rebuild, so the nested cargo gets the caller's environment.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    cmd.args(["build", "-q", "-p", "provbox-fleet", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build -p provbox-fleet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("provbox-fleet")
}

/// The provbox configuration bench/fleet.sh uses (one file for both), on the standard ports
/// inside the server namespace; the pool is relayed (no address of provbox's is in it).
const CONFIG: &str = include_str!("../../bench/fleet/provbox.yaml");

#[test]
fn fifty_phones_boot_through_every_step_with_distinct_leases() {
    crate::support::needs!(root, "curl", "ip");
    support::require("curl");
    let sim = fleet_bin();
    let lab = Lab::new();
    let srv = lab.ns("fs");
    let cli = lab.ns("fc");
    lab.link(&srv, "198.18.0.1/24", &cli, "198.18.0.2/24");
    // The relayed pool lives behind the simulator, whose namespace owns all of it (AnyIP),
    // so each phone binds its own leased address.
    srv.ip(&["route", "add", "198.18.64.0/18", "via", "198.18.0.2"]);
    cli.ip(&["route", "add", "local", "198.18.64.0/18", "dev", "lo"]);

    let dir = Provbox::dir();
    let d = dir.path().to_str().unwrap().to_string();
    let out = Command::new(&sim)
        .args([
            "setup",
            "--dir",
            &d,
            "--phones",
            "50",
            "--firmware-kib",
            "16",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pb = Provbox::start_with(dir, CONFIG, &srv.prefix());

    let pid = pb.pid().to_string();
    let svg = pb.path().join("fleet.svg");
    let out = cli.run(&[
        sim.to_str().unwrap(),
        "run",
        "--dir",
        &d,
        "--phones",
        "50",
        "--step-timeout",
        "60",
        "--pids",
        &pid,
        "--label",
        "provbox",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        pb.log()
    );
    assert!(
        report.contains("ok=50 failed=0 distinct_leases=50"),
        "{report}"
    );
    assert!(report.contains("failures by step: none"), "{report}");
    // Every step was timed for every phone.
    for step in ["dhcp", "tftp", "dns", "https", "firmware", "syslog", "boot"] {
        let row = report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(step))
            .unwrap_or_else(|| panic!("no {step} row: {report}"));
        assert_eq!(row.split_whitespace().nth(1), Some("50"), "{row}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.contains("<polyline") && plot.contains("(50 phones)"),
        "{plot}"
    );

    // The server saw the same: 50 leases, and every phone's two syslog lines recognised.
    let metrics = || {
        let out = srv.run(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://127.0.0.1:9100/metrics",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let m = metrics();
    assert_eq!(
        support::metric(&m, "provbox_dhcp_leases_active"),
        50.0,
        "{m}"
    );
    // Counters carry labels (transport, event): add up every series of a family.
    let total = |m: &str, family: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let start = Instant::now();
    loop {
        let m = metrics();
        let got = total(&m, "provbox_syslog_lines_received_total");
        let seen = total(&m, "provbox_syslog_lines_recognised_total");
        if got == 100.0 && seen == 100.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "syslog lines received {got}, recognised {seen} (want 100)\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
