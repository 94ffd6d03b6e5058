//! The configuration file: schema, defaults and validation.
//!
//! Parsing and validation happen once, here, at the edge: everything after `Config::load`
//! can trust the values. Every error names the file, the line, the field and what was
//! expected, so `provbox check` and a refused start speak the same words.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::confkit::{
    At, ClientAuth, ConfigError, ConfigErrors, Dur, HttpConfig, HttpLimits, HttpsConfig,
    ListenerSpec, MetricsConfig, Problems, Transport, check_cert_pair, parse_duration,
};
use crate::confkit::{explain, source_line, yaml_path_at};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Durable state (leases, certificates, snapshots). Relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log: LogConfig,
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub https: HttpsConfig,
    /// A second HTTPS listener on OpenSSL for phones that only speak old TLS (off).
    #[serde(default)]
    pub https_legacy: crate::tls_legacy::Config,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub tftp: crate::tftp::Config,
    #[serde(default)]
    pub dns: crate::dns::Config,
    #[serde(default)]
    pub dhcp: crate::dhcp::Config,
    #[serde(default)]
    pub devices: crate::devices::Config,
    #[serde(default)]
    pub syslog: crate::syslog::Config,
    #[serde(default)]
    pub dashboard: crate::dashboard::Config,
    /// Commands and webhooks run on device and lease events (none by default).
    #[serde(default)]
    pub hooks: crate::hooks::Config,
    /// Files phones write back (off by default).
    #[serde(default)]
    pub uploads: crate::uploads::Config,
    /// Firmware pushes (`provbox upgrade`, the dashboard's upgrade action).
    #[serde(default)]
    pub upgrade: crate::upgrade::Config,
    /// Where state lives: `embedded` (redb + lease journal) or a shared PostgreSQL.
    #[serde(default)]
    pub store: crate::store::Config,
    /// How long in-flight transfers may finish after SIGTERM/SIGINT.
    #[serde(default = "default_grace")]
    pub shutdown_grace: Dur,
    /// The file this was read from (not a YAML key).
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_grace() -> Dur {
    Dur(Duration::from_secs(10))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Directories served as one namespace, looked up in order.
    pub roots: Vec<At<PathBuf>>,
    /// Match request paths regardless of case (phones differ on MAC case).
    #[serde(default)]
    pub case_insensitive: bool,
}

impl Config {
    /// Read, parse and validate; relative paths become relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::parse(&Self::read(path)?, path)
    }

    /// The file's text, or an error naming it.
    pub fn read(path: &Path) -> Result<String, ConfigErrors> {
        std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                field: String::new(),
                message: format!("cannot read the configuration file: {e}"),
                source_line: None,
            }])
        })
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut cfg: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize))
                .unwrap_or((0, 0));
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                col,
                field: yaml_path_at(text, line, col),
                message: explain(&e.without_snippet().render()),
                source_line: source_line(text, line),
            }])
        })?;
        cfg.source = path.to_path_buf();
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.resolve_paths(&base);
        let mut problems = Problems {
            file: path.to_path_buf(),
            list: Vec::new(),
        };
        cfg.validate(&mut problems);
        for e in &mut problems.list {
            e.source_line = source_line(text, e.line);
        }
        if problems.list.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(problems.list))
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        for r in &mut self.catalog.roots {
            fix(&mut r.value);
        }
        for p in [
            &mut self.https.cert,
            &mut self.https.key,
            &mut self.https.client_ca,
            &mut self.https.ca_cert,
        ]
        .into_iter()
        .flatten()
        {
            fix(&mut p.value);
        }
        self.dhcp.resolve_paths(base);
        self.dns.resolve_paths(base);
        self.tftp.resolve_paths(base);
        self.devices.resolve_paths(base);
        self.https_legacy.resolve_paths(base);
        self.syslog.resolve_paths(base);
        self.dashboard.resolve_paths(base);
        self.hooks.resolve_paths(base);
        self.store.resolve_paths(base);
    }

    fn validate(&self, p: &mut Problems) {
        self.store.validate(p);
        if self.catalog.roots.is_empty() {
            p.add_at(
                "catalog.roots",
                0,
                0,
                "no directories to serve; expected a list of one or more directories",
            );
        }
        for (i, root) in self.catalog.roots.iter().enumerate() {
            let field = format!("catalog.roots[{i}]");
            match std::fs::metadata(&root.value) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => p.add(
                    field,
                    root,
                    format!(
                        "{} is not a directory; expected a directory",
                        root.display()
                    ),
                ),
                Err(e) => p.add(
                    field,
                    root,
                    format!(
                        "{} cannot be used ({e}); expected an existing directory",
                        root.display()
                    ),
                ),
            }
        }
        for (name, enabled, listen) in [
            ("http.listen", self.http.enabled, &self.http.listen),
            ("https.listen", self.https.enabled, &self.https.listen),
        ] {
            p.check_listen(name, enabled, listen, "0.0.0.0:8080");
        }
        for (name, lim) in [("http", &self.http.limits), ("https", &self.https.limits)] {
            lim.validate(&format!("{name}.limits"), p);
        }
        if self.https.enabled {
            check_cert_pair("https", &self.https.cert, &self.https.key, p);
            if let Some(ca) = &self.https.ca_cert {
                p.check_file("https.ca_cert", ca, "a PEM certificate");
            }
            match (self.https.client_auth.value, &self.https.client_ca) {
                (ClientAuth::None, _) => {}
                (_, Some(ca)) => p.check_file("https.client_ca", ca, "a PEM CA bundle"),
                (_, None) => p.add(
                    "https.client_auth",
                    &self.https.client_auth,
                    "asks for client certificates but https.client_ca is not set; expected a PEM CA bundle",
                ),
            }
        }
        self.https_legacy.validate(&self.https, p);
        self.tftp.validate(p);
        self.dns.validate(p);
        self.dhcp.validate(p);
        self.devices.validate(p);
        self.syslog.validate(p);
        self.dashboard.validate(p);
        self.uploads.validate(p);
        self.hooks.validate(p);
        self.upgrade.validate(p);
        check_conflicts(&self.listeners(), p);
    }

    /// Every socket the enabled front ends will bind.
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        let mut out = Vec::new();
        for (field, enabled, listen) in [
            ("http.listen", self.http.enabled, &self.http.listen),
            ("https.listen", self.https.enabled, &self.https.listen),
        ] {
            if enabled {
                out.extend(ListenerSpec::list(field, Transport::Tcp, listen));
            }
        }
        out.extend(self.https_legacy.listeners());
        if self.metrics.enabled {
            out.push(ListenerSpec::new(
                "metrics.listen",
                Transport::Tcp,
                &self.metrics.listen,
            ));
        }
        out.extend(self.tftp.listeners());
        out.extend(self.dns.listeners());
        out.extend(self.dhcp.listeners());
        out.extend(self.syslog.listeners());
        out.extend(self.dashboard.listeners());
        out
    }

    /// What `provbox check` prints: listeners and served roots.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str("listeners:\n");
        for l in self.listeners() {
            let t = match l.transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            };
            s.push_str(&format!("  {:<22} {t} {}\n", l.field, l.addr.value));
        }
        s.push_str("roots (looked up in order):\n");
        for r in &self.catalog.roots {
            s.push_str(&format!("  {}\n", r.display()));
        }
        s.push_str(&format!("data_dir: {}\n", self.data_dir.display()));
        s
    }
}

fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4())
            || (b.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4()))
}

fn check_conflicts(list: &[ListenerSpec], p: &mut Problems) {
    for (i, a) in list.iter().enumerate() {
        for b in &list[..i] {
            if a.transport == b.transport && overlaps(&a.addr, &b.addr) {
                let where_b = if b.addr.line > 0 {
                    format!(" (line {})", b.addr.line)
                } else {
                    " (its default)".into()
                };
                p.add(
                    a.field.clone(),
                    &a.addr,
                    format!(
                        "{} is already used by {}{where_b}; expected a port no other front end uses",
                        a.addr.value, b.field
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let path = dir.path().join("config.yaml");
        Config::parse(yaml, &path)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn minimal_config_is_valid() {
        let cfg = parse(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:8080\"]\n",
        )
        .unwrap();
        assert!(cfg.http.enabled);
        assert!(cfg.catalog.roots[0].value.ends_with("files"));
        assert_eq!(cfg.http.listen[0].line, 5);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("catalog:\n  roots: [files]\nhttp:\n  enabeld: true\n").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0[0].line, 4, "{text}");
        assert!(text.contains("enabeld"), "{text}");
    }

    #[test]
    fn bad_address_names_line() {
        let err = parse(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"0.0.0.0:99999\"]\n",
        )
        .unwrap_err();
        assert_eq!(err.0[0].line, 5, "{err}");
    }

    #[test]
    fn port_conflict_names_both_fields() {
        let err = parse(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"0.0.0.0:8080\"]\nhttps:\n  enabled: true\n  listen: [\"127.0.0.1:8080\"]\n",
        )
        .unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.field, "https.listen[0]");
        assert_eq!(e.line, 8);
        assert!(e.message.contains("http.listen[0]"), "{err}");
    }

    #[test]
    fn missing_root_is_refused_with_line() {
        let err = parse("catalog:\n  roots:\n    - files\n    - nowhere\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].field, "catalog.roots[1]");
        assert_eq!(err.0[0].line, 4);
        assert!(err.0[0].message.contains("expected an existing directory"));
    }

    #[test]
    fn client_auth_without_ca_is_refused() {
        let err = parse("catalog:\n  roots: [files]\nhttps:\n  enabled: true\n  listen: [\"127.0.0.1:8443\"]\n  client_auth: required\n").unwrap_err();
        assert_eq!(err.0[0].field, "https.client_auth");
        assert_eq!(err.0[0].line, 6);
    }

    #[test]
    fn error_paths_from_yaml() {
        let text =
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  limits:\n    idle_timeout: x\n";
        assert_eq!(yaml_path_at(text, 6, 19), "http.limits.idle_timeout");
        assert_eq!(yaml_path_at(text, 4, 3), "http.enabled");
        assert_eq!(yaml_path_at(text, 1, 1), "catalog");
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains(":6:19: http.limits.idle_timeout: `x` is not a duration"),
            "{err}"
        );
        assert!(err.contains(" 6 |     idle_timeout: x"), "{err}");
    }

    #[test]
    fn wrong_type_is_refused() {
        let err = parse("catalog:\n  roots: [files]\nhttp:\n  enabled: maybe\n").unwrap_err();
        assert_eq!(err.0[0].line, 4, "{err}");
    }
}
