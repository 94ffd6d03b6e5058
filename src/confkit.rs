//! The building blocks every configuration section is made of: values that know the line
//! they were written on, durations, the problems a validation collects and how they are
//! shown (file, line, field, what was expected), the sockets a section will bind, and the
//! HTTP sections several front ends share.
//!
//! A leaf: the sections (`dhcp::Config`, `dns::Config`, …) build on this without naming
//! the aggregate `config::Config`, which sits above every front end.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
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
        number_or_text(
            d,
            |s| Dur(Duration::from_secs(s)),
            |t| parse_duration(t).map(Dur),
        )
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, ms) = number_and_unit(
        text,
        "a duration; expected e.g. 500ms, 30s, 5m, 1h, 1d",
        &[
            ("ms", 1),
            ("", 1000),
            ("s", 1000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
        ],
        "ms, s, m, h or d",
    )?;
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// A value written as a bare number (`number` makes it) or as text `parse` reads (`30s`,
/// `64MiB`).
fn number_or_text<'de, D: Deserializer<'de>, T>(
    d: D,
    number: impl FnOnce(u64) -> T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(number(n)),
        Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
    }
}

/// A whole number followed by one of `units` (`30s`, `64MiB`): the number and the unit's
/// factor. `what` says what the text should have been when it starts with no number,
/// `names` which units there are.
fn number_and_unit(
    text: &str,
    what: &str,
    units: &[(&str, u64)],
    names: &str,
) -> Result<(u64, u64), String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{text}` is not {what}"))?;
    let factor = units
        .iter()
        .find(|(u, _)| *u == unit.trim())
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("`{text}` has an unknown unit; expected {names}"))?;
    Ok((n, factor))
}

/// Every key is optional: one left out takes its value from [`HttpLimits::default`].
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections served at once per listener kind; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    pub header_timeout: Dur,
    /// A connection with no bytes moving either way for this long is closed.
    pub idle_timeout: Dur,
    /// Connections at once from one client address; more are answered 503 and closed.
    pub max_connections_per_ip: usize,
    /// A response the client has not taken a byte of for this long is abandoned.
    pub write_timeout: Dur,
}
impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(60)),
            max_connections_per_ip: 64,
            write_timeout: Dur(Duration::from_secs(30)),
        }
    }
}

impl HttpLimits {
    /// `section` is e.g. `https.limits`.
    pub fn validate(&self, section: &str, p: &mut Problems) {
        p.zeros(
            section,
            [
                ("max_connections", self.max_connections == 0),
                ("max_connections_per_ip", self.max_connections_per_ip == 0),
                ("write_timeout", self.write_timeout.0.is_zero()),
            ],
            "is 0; expected at least 1",
        );
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: Vec<At<SocketAddr>>,
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
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    pub enabled: bool,
    pub listen: Vec<At<SocketAddr>>,
    /// PEM certificate chain; when unset with `key`, a lab CA under data_dir/tls issues one.
    pub cert: Option<At<PathBuf>>,
    pub key: Option<At<PathBuf>>,
    pub client_auth: At<ClientAuth>,
    /// PEM bundle of CAs whose client certificates are accepted.
    pub client_ca: Option<At<PathBuf>>,
    /// The CA that issued `cert`, served to phones at `/provbox-ca.pem` (HTTPS bootstrap);
    /// unset with the lab certificate: the lab CA.
    pub ca_cert: Option<At<PathBuf>>,
    /// Extra DNS names for the generated server certificate (the machine's names are added).
    pub names: Vec<String>,
    pub limits: HttpLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: At<SocketAddr>,
}
impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: At::new(SocketAddr::from(([127, 0, 0, 1], 9100))),
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

impl ListenerSpec {
    /// The socket `field` names.
    pub fn new(field: impl Into<String>, transport: Transport, addr: &At<SocketAddr>) -> Self {
        ListenerSpec {
            field: field.into(),
            transport,
            addr: addr.clone(),
        }
    }

    /// The sockets of a listen list, each named by its place (`http.listen[0]`).
    pub fn list(field: &str, transport: Transport, list: &[At<SocketAddr>]) -> Vec<Self> {
        list.iter()
            .enumerate()
            .map(|(i, a)| ListenerSpec::new(format!("{field}[{i}]"), transport, a))
            .collect()
    }
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
    pub(crate) file: PathBuf,
    pub(crate) list: Vec<ConfigError>,
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

    /// Each key of `section` that is zero (`(key, is_zero)`), reported without a line: its
    /// value may be a default.
    pub fn zeros<const N: usize>(&mut self, section: &str, keys: [(&str, bool); N], message: &str) {
        for (key, _) in keys.into_iter().filter(|(_, zero)| *zero) {
            self.add_at(format!("{section}.{key}"), 0, 0, message);
        }
    }

    /// An enabled listener section with no address to listen on; `example` is one such as
    /// `0.0.0.0:8080`.
    pub fn check_listen<T>(&mut self, field: &str, enabled: bool, listen: &[T], example: &str) {
        if enabled && listen.is_empty() {
            self.add_at(
                field,
                0,
                0,
                format!("enabled with no address; expected a list such as [\"{example}\"]"),
            );
        }
    }

    /// A path that must name a readable file; `what` is what it should hold
    /// (`a PEM certificate`).
    pub fn check_file(&mut self, field: impl Into<String>, path: &At<PathBuf>, what: &str) {
        if !path.is_file() {
            self.add(
                field,
                path,
                format!("{} is not a readable file; expected {what}", path.display()),
            );
        }
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
                p.check_file(format!("{section}.{name}"), f, "a PEM file");
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

pub(crate) fn source_line(text: &str, line: usize) -> Option<String> {
    (line > 0)
        .then(|| text.lines().nth(line - 1).map(str::to_string))
        .flatten()
}

/// The parser's message without its own location prefix, with what is expected spelled
/// out where the parser does not say it.
pub(crate) fn explain(rendered: &str) -> String {
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
pub(crate) fn yaml_path_at(text: &str, line: usize, col: usize) -> String {
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

/// A size written as a number of bytes or with a unit: `512KiB`, `64MiB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let (n, mult) = number_and_unit(
        text,
        "a size; expected e.g. 65536, 512KiB, 64MiB",
        &[
            ("", 1),
            ("B", 1),
            ("KiB", 1 << 10),
            ("MiB", 1 << 20),
            ("GiB", 1 << 30),
        ],
        "B, KiB, MiB or GiB",
    )?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_or_text(d, Size, |t| parse_size(t).map(Size))
    }
}

/// Checks of one value each, reported on the line the value was written on.
impl Problems {
    /// A number outside `range`: "is N; expected LO..=HI" and `why` (e.g. " (RFC 7440)").
    pub fn check_range<T: PartialOrd + fmt::Display>(
        &mut self,
        field: &str,
        at: &At<T>,
        range: std::ops::RangeInclusive<T>,
        why: &str,
    ) {
        if !range.contains(&at.value) {
            let (lo, hi) = range.into_inner();
            let message = format!("is {}; expected {lo}..={hi}{why}", at.value);
            self.add(field, at, message);
        }
    }

    /// A duration outside `range`: "is 5ms; expected between 100ms and 255s" and `why`.
    pub fn check_duration(
        &mut self,
        field: &str,
        at: &At<Dur>,
        range: std::ops::RangeInclusive<Duration>,
        why: &str,
    ) {
        let t = at.value.0;
        if !range.contains(&t) {
            let (lo, hi) = range.into_inner();
            let message = format!("is {t:?}; expected between {lo:?} and {hi:?}{why}");
            self.add(field, at, message);
        }
    }

    /// A count that is 0: "is 0; expected at least 1" and `why`.
    pub fn check_not_zero<T: PartialEq + From<u8>>(&mut self, field: &str, at: &At<T>, why: &str) {
        if at.value == T::from(0) {
            self.add(field, at, format!("is 0; expected at least 1{why}"));
        }
    }
}
