//! The catalog on a shared box (issue 12, item 6): nothing reached through a symlink is
//! ever served, whether the symlink was there at start, points out of the root or to a
//! hidden file inside it, or replaced a served file or directory while provbox ran.

use crate::support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Provbox, free_tcp_port};

struct Served {
    pb: Provbox,
    port: u16,
}

impl Served {
    fn start(dir: tempfile::TempDir) -> Served {
        let port = free_tcp_port();
        let yaml = format!(
            "data_dir: data\ncatalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{port}\"]\n"
        );
        Served {
            pb: Provbox::start(dir, &yaml),
            port,
        }
    }

    fn files(&self) -> std::path::PathBuf {
        self.pb.path().join("files")
    }

    /// (status, body) of GET /<path>.
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let url = format!("http://127.0.0.1:{}/{path}", self.port);
        let r = support::curl(20, &[], &url);
        (r.code, r.body)
    }

    /// SIGHUP, and wait until the catalog's full rescan has begun (the next barrier then
    /// shows its result: the rescan holds the catalog until it has published).
    fn reload(&self) {
        let count = || {
            self.pb
                .log()
                .matches("catalog: rescanning every root")
                .count()
        };
        let before = count();
        self.pb.reload();
        let start = Instant::now();
        while count() == before {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no rescan after SIGHUP:\n{}",
                self.pb.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Write `name` in the root and wait until it is served: every change the watcher
    /// saw before it has been applied too.
    fn barrier(&self, name: &str) {
        std::fs::write(self.files().join(name), name).unwrap();
        let start = Instant::now();
        while self.get(name).0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name} never published:\n{}",
                self.pb.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

const SECRETS: [&[u8]; 2] = [b"OUTSIDE SECRET", b"HIDDEN SECRET"];

fn assert_not_secret(what: &str, got: &(u16, Vec<u8>)) {
    for s in SECRETS {
        assert!(
            got.1 != s,
            "{what} served a secret ({}): {}",
            got.0,
            String::from_utf8_lossy(s)
        );
    }
}

/// A tree with secrets outside the root (`outside/`) and hidden inside it (`.private/`).
/// Each of `paths` answers 404 and none of the secrets.
fn assert_hidden(s: &Served, paths: &[&str]) {
    for path in paths {
        let got = s.get(path);
        assert_not_secret(path, &got);
        assert_eq!(got.0, 404, "{path}");
    }
}

fn tree() -> tempfile::TempDir {
    let d = Provbox::dir();
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.cfg"), SECRETS[0]).unwrap();
    let files = d.path().join("files");
    std::fs::create_dir_all(files.join(".private")).unwrap();
    std::fs::write(files.join(".private/secret.cfg"), SECRETS[1]).unwrap();
    std::fs::write(files.join("ok.cfg"), "ok").unwrap();
    d
}

fn outside(root: &Path) -> std::path::PathBuf {
    root.parent().unwrap().join("outside")
}

#[test]
fn symlinks_leading_out_of_a_root_never_publish() {
    crate::support::needs!("curl");
    let d = tree();
    let files = d.path().join("files");
    let out = outside(&files);
    // There at start: a directory and a file symlink out of the root, and symlinks to a
    // hidden file and directory inside it.
    symlink(&out, files.join("linkdir")).unwrap();
    symlink(out.join("secret.cfg"), files.join("leak.cfg")).unwrap();
    symlink(".private/secret.cfg", files.join("alias.cfg")).unwrap();
    symlink(".private", files.join("aliasdir")).unwrap();
    let s = Served::start(d);
    assert_eq!(s.get("ok.cfg"), (200, b"ok".to_vec()));
    assert_hidden(
        &s,
        &[
            "linkdir/secret.cfg",
            "leak.cfg",
            "alias.cfg",
            "aliasdir/secret.cfg",
        ],
    );
    // Files written outside later, under the symlinked directory: the watcher must not
    // be watching there (notify follows symlinks unless told not to).
    std::fs::write(out.join("new.cfg"), SECRETS[0]).unwrap();
    std::fs::write(files.join(".private/new.cfg"), SECRETS[1]).unwrap();
    s.barrier("after.cfg");
    std::thread::sleep(Duration::from_millis(500));
    assert_hidden(&s, &["linkdir/new.cfg", "aliasdir/new.cfg"]);
    // And a reload's full rescan does not change that.
    s.reload();
    s.barrier("after-reload.cfg");
    assert_hidden(
        &s,
        &[
            "linkdir/new.cfg",
            "leak.cfg",
            "alias.cfg",
            "aliasdir/new.cfg",
        ],
    );
    assert!(
        s.pb.log().contains("symlinks are never served"),
        "the skipped symlinks are logged"
    );
}

#[test]
fn a_file_or_directory_replaced_by_a_symlink_is_never_served() {
    crate::support::needs!("curl");
    let d = tree();
    let files = d.path().join("files");
    std::fs::create_dir_all(files.join("dir")).unwrap();
    std::fs::write(files.join("dir/inner.cfg"), "inner").unwrap();
    std::fs::write(files.join("p.cfg"), "public").unwrap();
    std::fs::write(files.join("q.cfg"), "public q").unwrap();
    let out = outside(&files);
    std::fs::write(out.join("inner.cfg"), SECRETS[0]).unwrap();
    std::fs::write(files.join(".private/inner.cfg"), SECRETS[1]).unwrap();
    let s = Served::start(d);
    assert_eq!(s.get("p.cfg"), (200, b"public".to_vec()));
    assert_eq!(s.get("dir/inner.cfg"), (200, b"inner".to_vec()));

    // Replaced the way `ln -sf` does it: a symlink made aside, renamed over the name.
    let swap = |target: &Path, name: &str| {
        let aside = files.join(format!(".{name}.new"));
        symlink(target, &aside).unwrap();
        std::fs::rename(&aside, files.join(name)).unwrap();
    };
    swap(Path::new(".private/secret.cfg"), "p.cfg");
    swap(&out.join("secret.cfg"), "q.cfg");
    std::fs::rename(files.join("dir"), files.join(".old-dir")).unwrap();
    symlink(".private", files.join("dir")).unwrap();
    // A second directory replaced by one leading out of the root.
    std::fs::create_dir_all(files.join("dir2")).unwrap();
    std::fs::write(files.join("dir2/inner.cfg"), "inner2").unwrap();
    s.barrier("mid.cfg");
    assert_eq!(s.get("dir2/inner.cfg"), (200, b"inner2".to_vec()));
    std::fs::rename(files.join("dir2"), files.join(".old-dir2")).unwrap();
    symlink(&out, files.join("dir2")).unwrap();

    // Until withdrawn each path may still give its old bytes; never a secret, and all end
    // up 404.
    let paths = [
        "p.cfg",
        "q.cfg",
        "dir/inner.cfg",
        "dir/secret.cfg",
        "dir2/inner.cfg",
    ];
    let start = Instant::now();
    loop {
        let got: Vec<_> = paths.iter().map(|p| (p, s.get(p))).collect();
        for (p, g) in &got {
            assert_not_secret(p, g);
        }
        if got.iter().all(|(_, g)| g.0 == 404) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still served after 20 s: {:?}",
            got.iter()
                .filter(|(_, g)| g.0 != 404)
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Later writes behind the symlinks change nothing, nor does a full rescan.
    std::fs::write(files.join(".private/later.cfg"), SECRETS[1]).unwrap();
    std::fs::write(out.join("later.cfg"), SECRETS[0]).unwrap();
    s.reload();
    s.barrier("end.cfg");
    for p in paths.iter().chain(&["dir/later.cfg", "dir2/later.cfg"]) {
        let got = s.get(p);
        assert_not_secret(p, &got);
        assert_eq!(got.0, 404, "{p}");
    }
    assert_eq!(s.get("ok.cfg"), (200, b"ok".to_vec()));
}
