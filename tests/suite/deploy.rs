//! deploy/: the appliance config passes `provbox check`, the Kubernetes manifests pass a
//! schema check (kubernetes-validate, offline schemas) that a broken copy fails, the
//! Containerfile passes hadolint and our own structural checks, and compose.yaml gives
//! DHCP the host network with exactly the two capabilities.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Top-level blocks of a YAML file: (key, first line, last line, pending?), 1-based lines.
/// A block is PENDING when the comment lines just above it say `PENDING(`.
fn blocks(text: &str) -> Vec<(String, usize, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, usize, usize, bool)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let top = !l.starts_with([' ', '#', '-']) && !l.trim().is_empty();
        if top && let Some((key, _)) = l.split_once(':') {
            let mut j = i;
            let mut pending = false;
            while j > 0 && lines[j - 1].starts_with('#') {
                pending |= lines[j - 1].contains("PENDING(");
                j -= 1;
            }
            if let Some(last) = out.last_mut() {
                last.2 = j; // the previous block ends before this one's comments
            }
            out.push((key.to_string(), i + 1, lines.len(), pending));
        }
    }
    out
}

/// `provbox check` on a config whose absolute appliance paths are moved into `dir`.
fn check_relocated(text: &str, dir: &Path) -> (i32, String) {
    let srv = dir.join("srv");
    for sub in ["profiles", "firmware"] {
        std::fs::create_dir_all(srv.join(sub)).unwrap();
    }
    let text = text
        .replace("/srv/provbox", srv.to_str().unwrap())
        .replace("/var/lib/provbox", dir.join("var").to_str().unwrap());
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    support::provbox(&["check", "--config", path.to_str().unwrap()])
}

#[test]
fn appliance_config_is_accepted_whole() {
    let text = read("deploy/config.yaml");
    let b = blocks(&text);
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check_relocated(&text, dir.path());
    assert_eq!(code, 0, "deploy/config.yaml is refused:\n{out}");
    for port in [":80", ":443", ":9100", ":69", ":53", ":514"] {
        assert!(out.contains(port), "{port} missing from:\n{out}");
    }
    let keys: Vec<&str> = b.iter().map(|x| x.0.as_str()).collect();
    for k in [
        "data_dir", "catalog", "http", "https", "metrics", "tftp", "dns", "dhcp", "syslog",
    ] {
        assert!(keys.contains(&k), "deploy/config.yaml has no `{k}` section");
    }
    // The standard ports, all of them.
    for port in [
        "0.0.0.0:80\"",
        "0.0.0.0:443\"",
        ":69",
        ":53\"",
        "port: 67",
        ":514",
    ] {
        assert!(
            text.contains(port),
            "deploy/config.yaml does not use {port}"
        );
    }
}

#[test]
fn shipped_config_is_accepted() {
    let (code, out) = support::provbox(&[
        "check",
        "--config",
        repo().join("config.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn block_parser_marks_pending_sections() {
    let b = blocks("a: 1\n# PENDING(issue 3): x\nb:\n  c: 2\nd: 3\n");
    assert_eq!(
        b,
        vec![
            ("a".into(), 1, 1, false),
            ("b".into(), 3, 4, true),
            ("d".into(), 5, 5, false)
        ]
    );
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    v.sort();
    v
}

fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let mut args = vec!["--strict".to_string()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::run("kubernetes-validate", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("ERROR"), text)
}

#[test]
fn kubernetes_manifests_validate_and_a_broken_copy_does_not() {
    crate::support::needs!("kubernetes-validate");
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let (ok, text) = kubernetes_validate(&files);
    assert!(ok, "{text}");
    assert_eq!(text.matches("passed").count(), 6, "{text}");

    let deployment = read("deploy/kubernetes/deployment.yaml");
    for needle in [
        "hostNetwork: true",
        "path: /healthz",
        "path: /readyz",
        "prometheus.io/scrape: \"true\"",
        "add: [NET_BIND_SERVICE, NET_RAW]",
        "drop: [ALL]",
        "runAsNonRoot: true",
        "claimName: provbox-data",
        "name: provbox-config",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks `{needle}`"
        );
    }
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(name),
            "kustomization.yaml misses {name}"
        );
    }

    // The same check on deliberately broken copies must fail.
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("hostNetwork: true", "hostNetwrk: true"),
        ("containerPort: 80,", "containerPort: \"eighty\","),
        ("replicas: 1", "replicas: one"),
    ] {
        assert!(deployment.contains(from));
        let broken = dir.path().join("deployment.yaml");
        std::fs::write(&broken, deployment.replace(from, to)).unwrap();
        let (ok, text) = kubernetes_validate(&[broken]);
        assert!(!ok, "a deployment with `{to}` passed validation:\n{text}");
    }
}

/// The ConfigMap carries deploy/config.yaml verbatim.
#[test]
fn configmap_holds_the_appliance_config() {
    crate::support::needs!("python3");
    let out = support::run(
        "python3",
        &[
            "-c",
            "import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))['data']['config.yaml'], end='')",
            repo()
                .join("deploy/kubernetes/configmap.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        read("deploy/config.yaml"),
        "deploy/kubernetes/configmap.yaml drifted from deploy/config.yaml"
    );
}

#[test]
fn containerfile_is_multi_stage_non_root_and_complete() {
    crate::support::needs!("hadolint");
    let text = read("deploy/Containerfile");
    // Join continuation lines, drop comments.
    let joined = text.replace("\\\n", " ");
    let instrs: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_uppercase(), rest.trim().to_string())
        })
        .collect();
    let froms: Vec<&String> = instrs
        .iter()
        .filter(|i| i.0 == "FROM")
        .map(|i| &i.1)
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "expected a build and a runtime stage: {froms:?}"
    );
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    assert!(
        froms[1].contains("slim") || froms[1].contains("distroless"),
        "{froms:?}"
    );
    // Every COPY from the build context names something that exists in the repository.
    let mut stage = 0;
    for (op, rest) in &instrs {
        if op == "FROM" {
            stage += 1;
        }
        if op == "COPY" && !rest.starts_with("--from") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            for src in &words[..words.len() - 1] {
                assert!(
                    repo().join(src).exists(),
                    "COPY source {src} (stage {stage}) does not exist"
                );
            }
        }
    }
    let user = instrs
        .iter()
        .rev()
        .find(|i| i.0 == "USER")
        .map(|i| i.1.clone())
        .expect("a USER instruction");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runs as {user}"
    );
    let setcap = instrs
        .iter()
        .find(|i| i.0 == "RUN" && i.1.contains("setcap"))
        .expect("setcap on the binary");
    assert!(
        setcap.1.contains("cap_net_bind_service,cap_net_raw+ep"),
        "{}",
        setcap.1
    );
    let expose: BTreeMap<&str, ()> = instrs
        .iter()
        .filter(|i| i.0 == "EXPOSE")
        .flat_map(|i| i.1.split_whitespace())
        .map(|p| (p, ()))
        .collect();
    for p in [
        "53/udp", "67/udp", "69/udp", "80/tcp", "443/tcp", "514/udp", "9100/tcp",
    ] {
        assert!(expose.contains_key(p), "EXPOSE lacks {p}");
    }
    assert!(
        instrs
            .iter()
            .any(|i| i.0 == "HEALTHCHECK" && i.1.contains("/healthz")),
        "no HEALTHCHECK on /healthz"
    );
    // hadolint, the Dockerfile linter, at its strictest threshold.
    let out = support::run(
        "hadolint",
        &[
            "--failure-threshold",
            "info",
            repo().join("deploy/Containerfile").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "hadolint:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn hadolint_catches_a_broken_containerfile() {
    crate::support::needs!("hadolint");
    let dir = tempfile::tempdir().unwrap();
    let broken = read("deploy/Containerfile").replace("USER 10001:10001", "USER root");
    let path = dir.path().join("Containerfile");
    std::fs::write(&path, broken).unwrap();
    let out = support::run(
        "hadolint",
        &["--failure-threshold", "info", path.to_str().unwrap()],
    );
    assert!(!out.status.success(), "hadolint accepted USER root");
}

#[test]
fn compose_uses_host_network_and_two_capabilities() {
    crate::support::needs!("python3");
    let script = r#"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c['services']['provbox']
assert s['network_mode'] == 'host', s.get('network_mode')
assert sorted(s['cap_add']) == ['NET_BIND_SERVICE', 'NET_RAW'], s['cap_add']
assert s['cap_drop'] == ['ALL'], s['cap_drop']
assert s['build']['dockerfile'] == 'deploy/Containerfile'
targets = [v.split(':')[1] for v in s['volumes']]
assert '/var/lib/provbox' in targets and '/etc/provbox/config.yaml' in targets, targets
assert 'no-new-privileges:true' not in s.get('security_opt', []), 'file capabilities need exec privilege gain'
print('ok')
"#;
    let out = support::run(
        "python3",
        &[
            "-c",
            script,
            repo().join("deploy/compose.yaml").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bind-mount sources relative to deploy/ exist.
    assert!(repo().join("deploy/config.yaml").is_file());
    assert!(repo().join("files/profiles").is_dir());
}
