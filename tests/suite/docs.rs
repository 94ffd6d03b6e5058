//! docs/operations.md stays true: its configuration reference lists exactly the keys the
//! parser accepts (discovered from the parser itself, by probing each section with an
//! unknown key and reading the "expected one of" list), and the laptop quick start runs on
//! a copy of the checkout.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use provbox::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// YAML that puts `leaf` under the nested keys of `path`.
fn nest(path: &[String], leaf: &str) -> String {
    let mut s = String::new();
    for (depth, k) in path.iter().enumerate() {
        s.push_str(&format!("{}{k}:\n", "  ".repeat(depth)));
    }
    s.push_str(&format!("{}{leaf}\n", "  ".repeat(path.len())));
    s
}

/// The fields the struct at `path` accepts, or None if `path` is not a struct.
fn fields(path: &[String], dir: &Path) -> Option<Vec<String>> {
    let err = match Config::parse(&nest(path, "zz_probe: 1"), &dir.join("c.yaml")) {
        Ok(_) => return None,
        Err(e) => e.to_string(),
    };
    let first = err.lines().next().unwrap_or_default();
    if !first.contains("unknown field `zz_probe`") {
        return None;
    }
    let list = first.split("expected ").nth(1)?;
    let list = list.strip_prefix("one of ").unwrap_or(list);
    Some(
        list.split(", ")
            .flat_map(|x| x.split(" or "))
            .map(|x| x.trim().trim_matches('`').to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

/// Every leaf key the parser accepts, dotted.
fn schema_keys() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = BTreeSet::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let f = fields(&path, dir.path()).expect("the top level is a struct");
        for name in f {
            let mut p = path.clone();
            p.push(name);
            if fields(&p, dir.path()).is_some() {
                todo.push(p);
            } else {
                out.insert(p.join("."));
            }
        }
    }
    out
}

fn documented_keys() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let section = doc
        .split("## Configuration reference")
        .nth(1)
        .expect("a Configuration reference section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn reference_lists_exactly_the_keys_the_parser_accepts() {
    let schema = schema_keys();
    // The probe itself works: known keys of nested sections are found.
    for k in [
        "data_dir",
        "http.limits.idle_timeout",
        "https.client_ca",
        "catalog.roots",
    ] {
        assert!(schema.contains(k), "probe missed {k}: {schema:?}");
    }
    let documented = documented_keys();
    let undocumented: Vec<_> = schema.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&schema).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/operations.md reference is out of date.\n  accepted but not documented: {undocumented:?}\n  documented but not accepted: {unknown:?}"
    );
}

#[test]
fn every_key_in_the_shipped_config_is_documented() {
    let documented = documented_keys();
    let text = std::fs::read_to_string(repo().join("config.yaml")).unwrap();
    let mut stack: Vec<(usize, String)> = Vec::new();
    // Keys inside list items (zones, subnets, options) are the list entries' own fields,
    // documented with the list key: skip lines nested under a key that holds a list.
    let mut list_owner: Option<usize> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('-') {
            list_owner = stack.last().map(|(i, _)| *i);
            continue;
        }
        if list_owner.is_some_and(|owner| indent > owner) {
            continue;
        }
        list_owner = None;
        let Some((key, _)) = t.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let dotted: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let dotted = dotted.join(".");
        let is_leaf_or_section = documented.contains(&dotted)
            || documented
                .iter()
                .any(|d| d.starts_with(&format!("{dotted}.")));
        assert!(
            is_leaf_or_section,
            "config.yaml key `{dotted}` is not in the reference"
        );
    }
}

/// The laptop quick start on a copy of the checkout (ports moved to free ones so tests
/// can run beside a developer's own provbox): check, serve, curl the documented file.
#[test]
fn laptop_quick_start_works_on_a_copy_of_the_checkout() {
    crate::support::needs!("curl");
    let doc = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let block = doc
        .split("<!-- quickstart:laptop")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the laptop quick start block");
    let cmds: Vec<&str> = block.lines().collect();
    assert_eq!(cmds[0], "cargo build --release");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let cp = Command::new("cp")
        .args([
            "-r",
            repo().join("config.yaml").to_str().unwrap(),
            repo().join("files").to_str().unwrap(),
        ])
        .arg(work)
        .status()
        .unwrap();
    assert!(cp.success());
    let (http, https, metrics) = (
        support::free_tcp_port(),
        support::free_tcp_port(),
        support::free_tcp_port(),
    );
    let moved = |s: &str| {
        s.replace(":8080", &format!(":{http}"))
            .replace(":8443", &format!(":{https}"))
            .replace(":9100", &format!(":{metrics}"))
    };
    let cfg = std::fs::read_to_string(work.join("config.yaml")).unwrap();
    std::fs::write(work.join("config.yaml"), moved(&cfg)).unwrap();
    // Our build stands in for ./target/release/provbox.
    let bin = support::bin();
    let sub = |cmd: &str| -> Vec<String> {
        moved(cmd)
            .replace("./target/release/provbox", bin.to_str().unwrap())
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let check = sub(cmds[1]);
    let out = support::run_ok(Command::new(&check[0]).args(&check[1..]).current_dir(work));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config.yaml: OK"));

    let serve = sub(cmds[2]);
    let log = std::fs::File::create(work.join("log")).unwrap();
    let mut child = Command::new(&serve[0])
        .args(&serve[1..])
        .current_dir(work)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(work.join("log"))
        .unwrap()
        .contains("Give phones:")
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(work.join("log")).unwrap()
        );
        assert!(start.elapsed().as_secs() < 20, "no banner");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let curl = sub(cmds[3]);
    let out = Command::new(&curl[0])
        .args(["-sS", "--fail"])
        .args(&curl[1..])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        std::fs::read(repo().join("files/profiles/CP-8831-3PCC.cfg")).unwrap()
    );
}
