//! Test fixtures several suite modules set up the same way.

use std::path::Path;

use super::Provbox;
use super::netns::Netns;

/// A test dir whose catalog has the per-device profile template `files/cfg/$MA.xml.tmpl`
/// and whose `inventory.yaml` is `inventory`.
pub fn profile_dir(template: &str, inventory: &str) -> tempfile::TempDir {
    let dir = Provbox::dir();
    write_profile(dir.path(), template, inventory);
    dir
}

/// Writes the per-device profile template and the inventory into test dir `dir`.
pub fn write_profile(dir: &Path, template: &str, inventory: &str) {
    std::fs::create_dir_all(dir.join("files/cfg")).unwrap();
    std::fs::write(dir.join("files/cfg/$MA.xml.tmpl"), template).unwrap();
    std::fs::write(dir.join("inventory.yaml"), inventory).unwrap();
}

/// tftp-hpa from inside a phone's namespace, from the lab server 198.18.0.1: Ok(bytes) or Err(what the client said).
pub fn netns_tftp_get(ns: &Netns, file: &str, dir: &Path) -> Result<Vec<u8>, String> {
    let out_path = dir.join(format!("got-{}", file.replace('/', "_")));
    let _ = std::fs::remove_file(&out_path);
    let out = ns.run(&[
        "tftp",
        "198.18.0.1",
        "-m",
        "octet",
        "-c",
        "get",
        file,
        out_path.to_str().unwrap(),
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if said.contains("Error") || !out.status.success() {
        return Err(said);
    }
    std::fs::read(&out_path).map_err(|e| format!("{e}: {said}"))
}

/// Asserts that `text` (a command's output, a log line) says both parts of every pair,
/// e.g. a config field and the line it is on.
#[track_caller]
pub fn assert_mentions(text: &str, pairs: &[(&str, &str)]) {
    for (a, b) in pairs {
        assert!(
            text.contains(a) && text.contains(b),
            "{a:?} and {b:?} not both in:\n{text}"
        );
    }
}

/// Writes `yaml` to `cfg` and runs `provbox check` on it: (exit code, output).
pub fn check_config(cfg: &Path, yaml: impl AsRef<[u8]>) -> (i32, String) {
    config_command("check", cfg, yaml)
}

/// Writes `yaml` to `cfg` and runs `provbox reload` with it: (exit code, output).
pub fn reload_config(cfg: &Path, yaml: impl AsRef<[u8]>) -> (i32, String) {
    config_command("reload", cfg, yaml)
}

fn config_command(command: &str, cfg: &Path, yaml: impl AsRef<[u8]>) -> (i32, String) {
    std::fs::write(cfg, yaml).unwrap();
    super::provbox(&[command, "--config", cfg.to_str().unwrap()])
}

/// Asserts that `text` holds every one of `parts`, showing the text when one is missing.
#[track_caller]
pub fn assert_contains_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
}

/// The lab server's HTTP (8080) and TFTP (69) doors on every address, as config sections.
pub const LAB_HTTP_TFTP: &str = r#"http:
  enabled: true
  listen: ["0.0.0.0:8080"]
tftp:
  enabled: true
  listen: 0.0.0.0:69
"#;
