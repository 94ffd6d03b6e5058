//! A throw-away PostgreSQL 15 cluster for the shared-store tests: Debian's `initdb` and
//! `pg_ctl`, run as `nobody` (PostgreSQL refuses root) in a temp dir that user owns, on a
//! chosen address (loopback, or an address inside a test's own network namespace), with
//! trust authentication. Stopped (immediately) on drop; the directory goes with it.

use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::process::{Command, Output};

use super::netns::Netns;

const BIN: &str = "/usr/lib/postgresql/15/bin";
const NOBODY: u32 = 65534;

pub struct PgCluster {
    dir: tempfile::TempDir,
    ns: Option<Netns>,
    pub host: String,
    pub port: u16,
}

impl PgCluster {
    /// initdb and start, listening on `host:port` (inside `ns` when given).
    pub fn start(ns: Option<&Netns>, host: &str, port: u16) -> PgCluster {
        assert!(
            std::path::Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed; run tests/run (it installs `postgresql`)"
        );
        let dir = tempfile::Builder::new()
            .prefix("provbox-pg")
            .tempdir()
            .unwrap();
        chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let pg = PgCluster {
            dir,
            ns: ns.cloned(),
            host: host.to_string(),
            port,
        };
        let data = pg.data();
        pg.ok(&[
            &format!("{BIN}/initdb"),
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        // Trust the test's own addresses too (the boxes connect over the lab's bridge).
        let hba = pg.dir.path().join("data/pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str("host all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, text).unwrap();
        pg.start_server();
        pg
    }

    /// Serve TLS with this certificate and key (PEM), from now on (a reload).
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        for (name, body) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let p = self.dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let d = self.dir.path().display();
        self.sql(&format!(
            "ALTER SYSTEM SET ssl_cert_file = '{d}/server.crt'"
        ));
        self.sql(&format!("ALTER SYSTEM SET ssl_key_file = '{d}/server.key'"));
        self.sql("ALTER SYSTEM SET ssl = on");
        self.sql("SELECT pg_reload_conf()");
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `[ip netns exec NS] setpriv ... -- args` as nobody.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, "setpriv"]);
                c
            }
            None => Command::new("setpriv"),
        };
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path());
        c
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
        out
    }

    /// Start (again) and wait until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-h {} -p {} -k {} -c max_connections=60 -c fsync=off",
            self.host,
            self.port,
            self.dir.path().display()
        );
        let log = self.log_path().display().to_string();
        self.ok(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-l",
            &log,
            "-o",
            &opts,
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    /// Stop at once, as a crash would (no checkpoint; recovery replays the WAL).
    pub fn stop_server(&self) {
        let _ = self
            .command(&[
                &format!("{BIN}/pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }

    /// The connection string provbox's `store.url` takes.
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.host, self.port
        )
    }

    /// Run SQL with psql; the rows, `|`-separated, one per line.
    pub fn sql(&self, q: &str) -> String {
        let port = self.port.to_string();
        let out = self.ok(&[
            &format!("{BIN}/psql"),
            "-h",
            &self.host,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            q,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_server();
    }
}
