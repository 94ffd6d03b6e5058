//! The configuration file: schema, defaults and validation.
//!
//! Parsing and validation happen once, here, at the edge: everything after `Config::load`
//! can trust the values. Every error names the file, the line, the field and what was
//! expected, so `provbox check` and a refused start speak the same words.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A value and where it was written (line 0: it came from a default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub line: usize,
    pub col: usize,
}

impl<T> At<T> {
    pub fn new(value: T) -> Self {
        At {
            value,
            line: 0,
            col: 0,
        }
    }
}

impl<T: Default> Default for At<T> {
    fn default() -> Self {
        At::new(T::default())
    }
}

impl<T> std::ops::Deref for At<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(At {
            value: s.value,
            line: s.referenced.line() as usize,
            col: s.referenced.column() as usize,
        })
    }
}

/// A duration written as `30s`, `500ms`, `5m`, `1h`, `1d` or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Dur(Duration::from_secs(s))),
            Raw::Text(t) => parse_duration(&t)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; expected e.g. 500ms, 30s, 5m, 1h, 1d"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit; expected ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

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
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}
fn default_level() -> String {
    "info".into()
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
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

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// Connections served at once per listener kind; more are answered 503 and closed.
    #[serde(default = "default_max_conn")]
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// A connection with no bytes moving either way for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Connections at once from one client address; more are answered 503 and closed.
    #[serde(default = "default_max_conn_per_ip")]
    pub max_connections_per_ip: usize,
    /// A response the client has not taken a byte of for this long is abandoned.
    #[serde(default = "default_write_timeout")]
    pub write_timeout: Dur,
}
fn default_max_conn() -> usize {
    1024
}
fn default_max_conn_per_ip() -> usize {
    64
}
fn default_write_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: default_max_conn(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections_per_ip: default_max_conn_per_ip(),
            write_timeout: default_write_timeout(),
        }
    }
}

impl HttpLimits {
    /// What the acceptor admits and how long a connection may stand still.
    pub fn accept(&self) -> crate::acceptor::Limits {
        crate::acceptor::Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            timeouts: crate::acceptor::Timeouts {
                idle: self.idle_timeout.0,
                write: self.write_timeout.0,
            },
        }
    }

    /// `section` is e.g. `https.limits`.
    pub fn validate(&self, section: &str, p: &mut Problems) {
        for (key, zero) in [
            ("max_connections", self.max_connections == 0),
            ("max_connections_per_ip", self.max_connections_per_ip == 0),
            ("write_timeout", self.write_timeout.0.is_zero()),
        ] {
            if zero {
                p.add_at(
                    format!("{section}.{key}"),
                    0,
                    0,
                    "is 0; expected at least 1",
                );
            }
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub listen: Vec<At<SocketAddr>>,
    #[serde(default)]
    pub limits: HttpLimits,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// Asked for; a presented certificate must verify, but none is fine too.
    Optional,
    /// Every connection must present a certificate that verifies against `client_ca`.
    Required,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub listen: Vec<At<SocketAddr>>,
    /// PEM certificate chain; when unset with `key`, a lab CA under data_dir/tls issues one.
    #[serde(default)]
    pub cert: Option<At<PathBuf>>,
    #[serde(default)]
    pub key: Option<At<PathBuf>>,
    #[serde(default)]
    pub client_auth: At<ClientAuth>,
    /// PEM bundle of CAs whose client certificates are accepted.
    #[serde(default)]
    pub client_ca: Option<At<PathBuf>>,
    /// The CA that issued `cert`, served to phones at `/provbox-ca.pem` (HTTPS bootstrap);
    /// unset with the lab certificate: the lab CA.
    #[serde(default)]
    pub ca_cert: Option<At<PathBuf>>,
    /// Extra DNS names for the generated server certificate (the machine's names are added).
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub limits: HttpLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_metrics_listen")]
    pub listen: At<SocketAddr>,
}
fn default_metrics_listen() -> At<SocketAddr> {
    At::new(SocketAddr::from(([127, 0, 0, 1], 9100)))
}
impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: default_metrics_listen(),
        }
    }
}

/// Which transport a listener binds: two listeners conflict only on the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// One socket some front end will bind, for the conflict check and the start-up summary.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub field: String,
    pub transport: Transport,
    pub addr: At<SocketAddr>,
}

/// A configuration error with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub field: String,
    pub message: String,
    /// The offending line of the file, shown under the message.
    pub source_line: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        write!(f, ": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(src) = &self.source_line {
            let n = self.line.to_string();
            write!(
                f,
                "\n {n} | {src}\n {} | {}^",
                " ".repeat(n.len()),
                " ".repeat(self.col.saturating_sub(1))
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects validation failures so the operator sees all of them at once.
pub struct Problems {
    file: PathBuf,
    list: Vec<ConfigError>,
}

impl Problems {
    pub fn add<T>(&mut self, field: impl Into<String>, at: &At<T>, message: impl Into<String>) {
        self.add_at(field, at.line, at.col, message)
    }
    pub fn add_at(
        &mut self,
        field: impl Into<String>,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            line,
            col,
            field: field.into(),
            message: message.into(),
            source_line: None,
        });
    }
}

/// Every error found, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}
impl std::error::Error for ConfigErrors {}

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
            ("http", self.http.enabled, &self.http.listen),
            ("https", self.https.enabled, &self.https.listen),
        ] {
            if enabled && listen.is_empty() {
                p.add_at(
                    format!("{name}.listen"),
                    0,
                    0,
                    "enabled with no address; expected a list such as [\"0.0.0.0:8080\"]",
                );
            }
        }
        for (name, lim) in [("http", &self.http.limits), ("https", &self.https.limits)] {
            lim.validate(&format!("{name}.limits"), p);
        }
        if self.https.enabled {
            check_cert_pair("https", &self.https.cert, &self.https.key, p);
            if let Some(ca) = self.https.ca_cert.as_ref().filter(|c| !c.is_file()) {
                p.add(
                    "https.ca_cert",
                    ca,
                    format!(
                        "{} is not a readable file; expected a PEM certificate",
                        ca.display()
                    ),
                );
            }
            match (self.https.client_auth.value, &self.https.client_ca) {
                (ClientAuth::None, _) => {}
                (_, Some(ca)) if !ca.is_file() => p.add(
                    "https.client_ca",
                    ca,
                    format!("{} is not a readable file; expected a PEM CA bundle", ca.display()),
                ),
                (_, Some(_)) => {}
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
        self.hooks.validate(p);
        check_conflicts(&self.listeners(), p);
    }

    /// Every socket the enabled front ends will bind.
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        let mut out = Vec::new();
        let mut tcp = |field: &str, list: &[At<SocketAddr>]| {
            for (i, a) in list.iter().enumerate() {
                out.push(ListenerSpec {
                    field: format!("{field}[{i}]"),
                    transport: Transport::Tcp,
                    addr: a.clone(),
                });
            }
        };
        if self.http.enabled {
            tcp("http.listen", &self.http.listen);
        }
        if self.https.enabled {
            tcp("https.listen", &self.https.listen);
        }
        out.extend(self.https_legacy.listeners());
        if self.metrics.enabled {
            out.push(ListenerSpec {
                field: "metrics.listen".into(),
                transport: Transport::Tcp,
                addr: self.metrics.listen.clone(),
            });
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

/// A certificate and its key: both or neither, and each a readable file.
pub fn check_cert_pair(
    section: &str,
    cert: &Option<At<PathBuf>>,
    key: &Option<At<PathBuf>>,
    p: &mut Problems,
) {
    match (cert, key) {
        (Some(c), Some(k)) => {
            for (name, f) in [("cert", c), ("key", k)] {
                if !f.is_file() {
                    p.add(
                        format!("{section}.{name}"),
                        f,
                        format!(
                            "{} is not a readable file; expected a PEM file",
                            f.display()
                        ),
                    );
                }
            }
        }
        (Some(c), None) => p.add(
            format!("{section}.key"),
            c,
            "cert is set without key; expected both or neither",
        ),
        (None, Some(k)) => p.add(
            format!("{section}.cert"),
            k,
            "key is set without cert; expected both or neither",
        ),
        (None, None) => {}
    }
}

fn source_line(text: &str, line: usize) -> Option<String> {
    (line > 0)
        .then(|| text.lines().nth(line - 1).map(str::to_string))
        .flatten()
}

/// The parser's message without its own location prefix, with what is expected spelled
/// out where the parser does not say it.
fn explain(rendered: &str) -> String {
    let mut m = rendered.trim();
    m = m.strip_prefix("error: ").unwrap_or(m);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some(i) = rest.find(": ")
    {
        m = &rest[i + 2..];
    }
    let mut m = m.lines().next().unwrap_or(m).to_string();
    if let Some(i) = m.rfind(" at line ") {
        m.truncate(i);
    }
    let hint = match m.as_str() {
        "invalid boolean" => "; expected true or false",
        "invalid socket address syntax" => "; expected IP:port such as 0.0.0.0:8080",
        "invalid IP address syntax" => "; expected an IPv4 or IPv6 address",
        _ => "",
    };
    format!("{m}{hint}")
}

/// The dotted key path (`http.limits.idle_timeout`) of the value at a line and column,
/// from the indentation of the block-style YAML above it.
fn yaml_path_at(text: &str, line: usize, col: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(here) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return String::new();
    };
    let key_of = |l: &str| -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start().len();
        let body = l.trim_start().trim_start_matches("- ");
        let (k, _) = body.split_once(':')?;
        let k = k.trim();
        (!k.is_empty() && !k.starts_with('#') && !k.contains(' ') && !k.contains('"'))
            .then(|| (indent + (l.trim_start().len() - body.len()), k.to_string()))
    };
    let mut path = Vec::new();
    let mut limit = match key_of(here) {
        Some((ind, k)) if col == 0 || col > ind => {
            path.push(k);
            ind
        }
        _ => here.len() - here.trim_start().len(),
    };
    for l in lines[..line - 1].iter().rev() {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if let Some((ind, k)) = key_of(l)
            && ind < limit
        {
            path.push(k);
            limit = ind;
            if ind == 0 {
                break;
            }
        }
    }
    path.reverse();
    path.join(".")
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
