//! The skip switch itself (issue 13 item 7): a root-only test run unprivileged says what it
//! needs and passes as skipped; with `PROVBOX_TEST_STRICT=1` the same run fails. Proven by
//! running one namespace test of this very binary as `nobody` (setpriv drops root).
use crate::support;

use std::process::Command;

use support::{lacking, needs, output_text};

/// Run `test` (exact name) of this test binary as nobody, strict or not: (passed, output).
fn as_nobody(test: &str, strict: bool) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let home = tempfile::Builder::new()
        .prefix("skip-switch")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&exe)
        .args([test, "--exact", "--test-threads=1"])
        .env("HOME", home.path())
        .env("TMPDIR", home.path())
        .env_remove("PROVBOX_TEST_STRICT");
    if strict {
        cmd.env("PROVBOX_TEST_STRICT", "1");
    }
    let out = cmd.output().unwrap();
    (out.status.success(), output_text(&out))
}

#[test]
fn an_unprivileged_run_skips_namespace_tests_unless_strict() {
    needs!(root, "setpriv", "busybox", "ip");
    for test in [
        "netns::veth_pair_pings_and_is_torn_down",
        "dhcp_relay::option_82_from_an_untrusted_relay_is_ignored",
    ] {
        let (ok, text) = as_nobody(test, false);
        assert!(ok, "{test} should pass as skipped:\n{text}");
        assert!(text.contains("skipped: needs root"), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        let (ok, text) = as_nobody(test, true);
        assert!(!ok, "{test} must fail under PROVBOX_TEST_STRICT:\n{text}");
        assert!(
            text.contains("needs root and PROVBOX_TEST_STRICT is set"),
            "{text}"
        );
    }
}

#[test]
fn a_missing_program_is_named() {
    assert_eq!(
        lacking(false, &["sh", "provbox-no-such-program"]).as_deref(),
        Some("needs provbox-no-such-program")
    );
    assert_eq!(lacking(false, &["sh"]), None);
}
