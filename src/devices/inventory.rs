//! The inventory: which device (MAC or serial) gets which variables (account, extension,
//! SIP credentials, display name, tags, PIN, encryption key, anything else).
//!
//! Two formats, chosen by extension. YAML for hand editing; CSV as a barcode scanner writes
//! it (one device per line, header row optional). Every error names its line, and a file
//! with errors is refused whole: the previous inventory keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer};

use super::{Mac, Port};
use crate::confkit::At;

/// Variables with a meaning of their own; any other name is a free variable.
pub const KNOWN: &[&str] = &[
    "account",
    "extension",
    "sip_user",
    "sip_password",
    "display_name",
    "tags",
    "pin",
    "key",
    "digest",
];

/// Column order of a CSV without a header row: what a scanner session typically fills.
pub const HEADERLESS: &[&str] = &[
    "device",
    "account",
    "extension",
    "sip_user",
    "sip_password",
    "display_name",
    "pin",
    "key",
    "tags",
];

/// One device (or, with only a PIN, one account waiting for a retail device).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub mac: Option<Mac>,
    pub serial: Option<String>,
    /// The switch port this row is for (a relay's option 82): whichever phone the DHCP
    /// server leased through that port gets this row.
    pub port: Option<PortKey>,
    /// All variables, `tags` joined with commas.
    pub vars: BTreeMap<String, String>,
    /// Where it was written (1-based).
    pub line: usize,
}

/// An inventory row's switch port: the circuit-id and/or remote-id text a relay writes
/// into option 82, and optionally which relay (`giaddr`) it must come through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortKey {
    pub circuit: Option<String>,
    pub remote_id: Option<String>,
    pub relay: Option<std::net::Ipv4Addr>,
}

impl PortKey {
    /// Every part the row names matches the port the DHCP server saw.
    pub fn matches(&self, p: &Port) -> bool {
        (self.circuit.is_some() || self.remote_id.is_some())
            && self
                .circuit
                .as_ref()
                .is_none_or(|c| p.circuit.as_ref() == Some(c))
            && self
                .remote_id
                .as_ref()
                .is_none_or(|r| p.remote_id.as_ref() == Some(r))
            && self.relay.is_none_or(|a| a == p.relay)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.circuit {
            parts.push(format!("circuit {c}"));
        }
        if let Some(r) = &self.remote_id {
            parts.push(format!("remote_id {r}"));
        }
        if let Some(a) = &self.relay {
            parts.push(format!("relay {a}"));
        }
        parts.join(", ")
    }
}

impl Record {
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// A problem in an inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for InvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "{}", self.message)
        }
    }
}

/// All problems of one file, one per line, prefixed with the file name.
pub fn describe(path: &Path, errors: &[InvError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.line > 0 {
                format!("{}:{}: {}", path.display(), e.line, e.message)
            } else {
                format!("{}: {}", path.display(), e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub records: Vec<Record>,
    by_mac: HashMap<Mac, usize>,
    by_serial: HashMap<String, usize>,
    by_pin: HashMap<String, usize>,
    /// Rows keyed by switch port (few: one per bench slot), matched in file order.
    by_port: Vec<usize>,
    /// The file's modification time when read (part of a rendered profile's Last-Modified).
    pub modified: Option<SystemTime>,
}

impl Inventory {
    /// Index and validate records: duplicates, PIN and digest syntax, variable names.
    pub fn build(records: Vec<Record>) -> Result<Inventory, Vec<InvError>> {
        let mut inv = Inventory::default();
        let mut errors = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let err = |m: String| InvError {
                line: r.line,
                message: m,
            };
            if r.mac.is_none() && r.serial.is_none() && r.var("pin").is_none() && r.port.is_none() {
                errors.push(err(
                    "no MAC, serial, PIN or circuit; expected at least one to tell whose variables these are"
                        .into(),
                ));
            }
            if let Some(k) = &r.port {
                if k.circuit.is_none() && k.remote_id.is_none() {
                    errors.push(err(
                        "relay without circuit or remote_id; expected the port the relay names"
                            .into(),
                    ));
                } else if let Some(&p) = inv
                    .by_port
                    .iter()
                    .find(|&&p| records[p].port.as_ref() == Some(k))
                {
                    errors.push(err(format!(
                        "{} is also on line {}; expected each port once",
                        k.describe(),
                        records[p].line
                    )));
                } else {
                    inv.by_port.push(i);
                }
            }
            for name in r.vars.keys() {
                if !is_var_name(name) {
                    errors.push(err(format!(
                        "`{name}` is not a variable name; expected letters, digits and _ (not starting with a digit)"
                    )));
                }
            }
            if let Some(pin) = r.var("pin")
                && !(4..=32).contains(&pin.len())
            {
                errors.push(err(format!(
                    "PIN `{pin}` has {} characters; expected 4 to 32",
                    pin.len()
                )));
            }
            if let Some(pin) = r.var("pin")
                && !pin.chars().all(|c| c.is_ascii_alphanumeric())
            {
                errors.push(err(format!(
                    "PIN `{pin}` has other characters than letters and digits"
                )));
            }
            if let Some(d) = r.var("digest")
                && !matches!(d, "md5" | "sha256")
            {
                errors.push(err(format!(
                    "digest `{d}` is unknown; expected md5 or sha256"
                )));
            }
            if r.var("key") == Some("") {
                errors.push(err("key is empty; expected a passphrase or no key".into()));
            }
            let mut dup = |what: &str, prev: Option<usize>| {
                if let Some(p) = prev {
                    errors.push(err(format!(
                        "{what} is also on line {}; expected each device once",
                        records[p].line
                    )));
                }
            };
            if let Some(m) = r.mac {
                dup(&format!("MAC {m}"), inv.by_mac.insert(m, i));
            }
            if let Some(s) = &r.serial {
                dup(
                    &format!("serial {s}"),
                    inv.by_serial.insert(s.to_ascii_uppercase(), i),
                );
            }
            if let Some(p) = r.var("pin") {
                dup(&format!("PIN {p}"), inv.by_pin.insert(p.to_string(), i));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        inv.records = records;
        Ok(inv)
    }

    /// Read and validate a file (format by extension).
    pub fn load(path: &Path) -> Result<Inventory, Vec<InvError>> {
        let one = |m: String| {
            vec![InvError {
                line: 0,
                message: m,
            }]
        };
        let meta = std::fs::metadata(path).map_err(|e| one(format!("cannot read: {e}")))?;
        let text = std::fs::read_to_string(path).map_err(|e| one(format!("cannot read: {e}")))?;
        let records = match format_of(path) {
            Some(Format::Csv) => parse_csv(&text)?,
            Some(Format::Yaml) => parse_yaml(&text)?,
            None => {
                return Err(one(
                    "unknown format; expected a .yaml, .yml or .csv file".into()
                ));
            }
        };
        let mut inv = Inventory::build(records)?;
        inv.modified = meta.modified().ok();
        Ok(inv)
    }

    pub fn by_mac(&self, mac: Mac) -> Option<&Record> {
        self.by_mac.get(&mac).map(|&i| &self.records[i])
    }

    pub fn by_serial(&self, serial: &str) -> Option<&Record> {
        self.by_serial
            .get(&serial.to_ascii_uppercase())
            .map(|&i| &self.records[i])
    }

    pub fn by_pin(&self, pin: &str) -> Option<&Record> {
        self.by_pin.get(pin).map(|&i| &self.records[i])
    }

    /// The row for the switch port a device was leased through: the first (in file
    /// order) whose circuit, remote-id and relay all match what the row names.
    pub fn by_port(&self, port: &Port) -> Option<&Record> {
        self.by_port
            .iter()
            .map(|&i| &self.records[i])
            .find(|r| r.port.as_ref().is_some_and(|k| k.matches(port)))
    }

    /// Merge `scan` into this inventory: a record with the same MAC (else serial) gets the
    /// scan's non-empty variables; others are appended. Returns (added, updated).
    pub fn merge(&self, scan: &[Record]) -> Result<(Vec<Record>, usize, usize), Vec<InvError>> {
        let mut out = self.records.clone();
        let (mut added, mut updated) = (0, 0);
        for s in scan {
            let found = out.iter().position(|r| {
                (s.mac.is_some() && r.mac == s.mac)
                    || (s.mac.is_none()
                        && s.serial.is_some()
                        && r.serial.as_deref().map(str::to_ascii_uppercase)
                            == s.serial.as_deref().map(str::to_ascii_uppercase))
            });
            match found {
                Some(i) => {
                    let r = &mut out[i];
                    if r.serial.is_none() {
                        r.serial = s.serial.clone();
                    }
                    if r.mac.is_none() {
                        r.mac = s.mac;
                    }
                    for (k, v) in &s.vars {
                        r.vars.insert(k.clone(), v.clone());
                    }
                    updated += 1;
                }
                None => {
                    out.push(s.clone());
                    added += 1;
                }
            }
        }
        // Re-validate the result (a scanned PIN may collide with an existing one).
        Inventory::build(out.clone())?;
        Ok((out, added, updated))
    }
}

fn is_var_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Csv,
}

pub fn format_of(path: &Path) -> Option<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("yaml" | "yml") => Some(Format::Yaml),
        Some("csv") => Some(Format::Csv),
        _ => None,
    }
}

/// A mistyped MAC must not silently become a serial number: hex digits with `:`/`-`
/// separators, or 11 to 13 hex digits with a letter among them, were meant as a MAC.
fn looks_like_mac(s: &str) -> bool {
    let hexsep = s
        .chars()
        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-');
    let separated = s.contains([':', '-']);
    let bare = (11..=13).contains(&s.len()) && s.chars().any(|c| c.is_ascii_alphabetic());
    hexsep && (separated || bare)
}

fn split_tags(s: &str) -> String {
    s.split([';', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse a CSV inventory. Without a header row, columns are [`HEADERLESS`]. A `device`
/// column holds a MAC (any common spelling) or, failing that, a serial number.
pub fn parse_csv(text: &str) -> Result<Vec<Record>, Vec<InvError>> {
    let mut header: Option<Vec<String>> = None;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    // One record per line (a scanner never writes multi-line fields), so every error can
    // name its exact line. Spreadsheet exports may start with a byte-order mark.
    for (n, text_line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = n + 1;
        let t = text_line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let parsed = csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(csv::Trim::All)
            .from_reader(t.as_bytes())
            .records()
            .next();
        let row = match parsed {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                errors.push(InvError {
                    line,
                    message: format!("not valid CSV: {e}"),
                });
                continue;
            }
            None => continue,
        };
        if row.iter().all(str::is_empty) {
            continue;
        }
        if header.is_none() {
            let first = row.get(0).unwrap_or("").to_ascii_lowercase();
            if matches!(
                first.as_str(),
                "mac" | "serial" | "device" | "pin" | "account" | "circuit"
            ) {
                let cols: Vec<String> = row.iter().map(|c| c.to_ascii_lowercase()).collect();
                for (i, c) in cols.iter().enumerate() {
                    if !matches!(c.as_str(), "mac" | "serial" | "device" | "relay")
                        && !is_var_name(c)
                    {
                        errors.push(InvError {
                            line,
                            message: format!(
                                "column {} is named `{c}`; expected a variable name (letters, digits, _)",
                                i + 1
                            ),
                        });
                    }
                }
                header = Some(cols);
                continue;
            }
            header = Some(HEADERLESS.iter().map(|s| s.to_string()).collect());
        }
        let cols = header.as_ref().expect("set above");
        if row.len() > cols.len() {
            errors.push(InvError {
                line,
                message: format!(
                    "{} columns, but only {} are named ({}); expected at most {}",
                    row.len(),
                    cols.len(),
                    cols.join(","),
                    cols.len()
                ),
            });
            continue;
        }
        let mut r = Record {
            line,
            ..Record::default()
        };
        for (name, value) in cols.iter().zip(row.iter()) {
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "mac" => match value.parse::<Mac>() {
                    Ok(m) => r.mac = Some(m),
                    Err(e) => errors.push(InvError { line, message: e }),
                },
                "device" => match value.parse::<Mac>() {
                    Ok(m) => r.mac = Some(m),
                    Err(e) if looks_like_mac(value) => errors.push(InvError { line, message: e }),
                    Err(_) => r.serial = Some(value.to_string()),
                },
                "serial" => r.serial = Some(value.to_string()),
                "circuit" => r.port.get_or_insert_default().circuit = Some(value.to_string()),
                "remote_id" => {
                    r.port.get_or_insert_default().remote_id = Some(value.to_string())
                }
                "relay" => match value.parse() {
                    Ok(a) => r.port.get_or_insert_default().relay = Some(a),
                    Err(_) => errors.push(InvError {
                        line,
                        message: format!("relay `{value}` is not an IPv4 address; expected the relay's giaddr, e.g. 198.18.1.1"),
                    }),
                },
                "tags" => {
                    r.vars.insert("tags".into(), split_tags(value));
                }
                other => {
                    r.vars.insert(other.to_string(), value.to_string());
                }
            }
        }
        out.push(r);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A scalar written as text, number or boolean, kept as text exactly as written would be
/// ideal; numbers are accepted but PINs and extensions with leading zeros must be quoted.
#[derive(Debug, Clone)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Text(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::U(u) => u.to_string(),
            Raw::F(f) => f.to_string(),
            Raw::B(b) => b.to_string(),
        }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlFile {
    #[serde(default)]
    devices: Vec<At<YamlRecord>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRecord {
    #[serde(default)]
    mac: Option<Text>,
    #[serde(default)]
    serial: Option<Text>,
    /// Switch port (option 82 circuit-id text), remote-id and relay address.
    #[serde(default)]
    circuit: Option<Text>,
    #[serde(default)]
    remote_id: Option<Text>,
    #[serde(default)]
    relay: Option<Text>,
    #[serde(default)]
    account: Option<Text>,
    #[serde(default)]
    extension: Option<Text>,
    #[serde(default)]
    sip_user: Option<Text>,
    #[serde(default)]
    sip_password: Option<Text>,
    #[serde(default)]
    display_name: Option<Text>,
    #[serde(default)]
    tags: Vec<Text>,
    #[serde(default)]
    pin: Option<Text>,
    #[serde(default)]
    key: Option<Text>,
    #[serde(default)]
    digest: Option<Text>,
    /// Free variables for templates.
    #[serde(default)]
    vars: BTreeMap<String, Text>,
}

pub fn parse_yaml(text: &str) -> Result<Vec<Record>, Vec<InvError>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: YamlFile = serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(0);
        vec![InvError {
            line,
            message: e.to_string().lines().next().unwrap_or("").to_string(),
        }]
    })?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for d in file.devices {
        let line = d.line;
        let y = d.value;
        let mut r = Record {
            line,
            ..Record::default()
        };
        if let Some(m) = y.mac {
            match m.0.parse::<Mac>() {
                Ok(m) => r.mac = Some(m),
                Err(e) => errors.push(InvError { line, message: e }),
            }
        }
        r.serial = y.serial.map(|t| t.0);
        if y.circuit.is_some() || y.remote_id.is_some() || y.relay.is_some() {
            let mut k = PortKey {
                circuit: y.circuit.map(|t| t.0),
                remote_id: y.remote_id.map(|t| t.0),
                relay: None,
            };
            if let Some(a) = y.relay {
                match a.0.parse() {
                    Ok(a) => k.relay = Some(a),
                    Err(_) => errors.push(InvError {
                        line,
                        message: format!(
                            "relay `{}` is not an IPv4 address; expected the relay's giaddr, e.g. 198.18.1.1",
                            a.0
                        ),
                    }),
                }
            }
            r.port = Some(k);
        }
        for (name, v) in [
            ("account", y.account),
            ("extension", y.extension),
            ("sip_user", y.sip_user),
            ("sip_password", y.sip_password),
            ("display_name", y.display_name),
            ("pin", y.pin),
            ("key", y.key),
            ("digest", y.digest),
        ] {
            if let Some(v) = v {
                r.vars.insert(name.into(), v.0);
            }
        }
        if !y.tags.is_empty() {
            let tags: Vec<String> = y.tags.into_iter().map(|t| t.0).collect();
            r.vars.insert("tags".into(), tags.join(","));
        }
        for (k, v) in y.vars {
            if KNOWN.contains(&k.as_str()) {
                errors.push(InvError {
                    line,
                    message: format!("vars.{k} shadows the field `{k}`; expected it as a field"),
                });
            }
            r.vars.insert(k, v.0);
        }
        out.push(r);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn yq(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Write records as YAML (every value quoted, so PINs like 0042 keep their zeros).
pub fn to_yaml(records: &[Record]) -> String {
    let mut o = String::from(
        "# provbox inventory (devices.inventory); `provbox devices import` merges scans into it.\ndevices:\n",
    );
    for r in records {
        let mut first = true;
        let mut field = |k: &str, v: String| {
            o.push_str(if first { "  - " } else { "    " });
            first = false;
            o.push_str(&format!("{k}: {v}\n"));
        };
        if let Some(m) = r.mac {
            field("mac", yq(&m.to_string()));
        }
        if let Some(s) = &r.serial {
            field("serial", yq(s));
        }
        if let Some(k) = &r.port {
            if let Some(c) = &k.circuit {
                field("circuit", yq(c));
            }
            if let Some(x) = &k.remote_id {
                field("remote_id", yq(x));
            }
            if let Some(a) = &k.relay {
                field("relay", yq(&a.to_string()));
            }
        }
        for k in KNOWN {
            if let Some(v) = r.vars.get(*k) {
                if *k == "tags" {
                    let tags: Vec<String> = v.split(',').map(yq).collect();
                    field("tags", format!("[{}]", tags.join(", ")));
                } else {
                    field(k, yq(v));
                }
            }
        }
        let extra: Vec<String> = r
            .vars
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}: {}", yq(v)))
            .collect();
        if !extra.is_empty() {
            field("vars", format!("{{ {} }}", extra.join(", ")));
        }
    }
    o
}

/// Write records as CSV with a header (known columns, then free variables by name).
pub fn to_csv(records: &[Record]) -> String {
    let mut extra: Vec<&String> = records
        .iter()
        .flat_map(|r| r.vars.keys())
        .filter(|k| !KNOWN.contains(&k.as_str()))
        .collect();
    extra.sort();
    extra.dedup();
    let mut cols: Vec<String> = vec!["mac".into(), "serial".into()];
    if records.iter().any(|r| r.port.is_some()) {
        cols.extend(["circuit".into(), "remote_id".into(), "relay".into()]);
    }
    cols.extend(KNOWN.iter().map(|s| s.to_string()));
    cols.extend(extra.into_iter().cloned());
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(&cols);
    for r in records {
        let row: Vec<String> = cols
            .iter()
            .map(|c| match c.as_str() {
                "mac" => r.mac.map(|m| m.to_string()).unwrap_or_default(),
                "serial" => r.serial.clone().unwrap_or_default(),
                "circuit" => r
                    .port
                    .as_ref()
                    .and_then(|k| k.circuit.clone())
                    .unwrap_or_default(),
                "remote_id" => r
                    .port
                    .as_ref()
                    .and_then(|k| k.remote_id.clone())
                    .unwrap_or_default(),
                "relay" => r
                    .port
                    .as_ref()
                    .and_then(|k| k.relay)
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                "tags" => r
                    .vars
                    .get("tags")
                    .map(|t| t.replace(',', ";"))
                    .unwrap_or_default(),
                k => r.vars.get(k).cloned().unwrap_or_default(),
            })
            .collect();
        let _ = w.write_record(&row);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// `provbox devices import`: validate `scan` (CSV), merge it into `inventory`, and write the
/// result atomically (the running server picks it up). Returns a summary line.
pub fn import(scan: &Path, inventory: &Path, dry_run: bool) -> Result<String, String> {
    let text = std::fs::read_to_string(scan)
        .map_err(|e| format!("{}: cannot read: {e}", scan.display()))?;
    import_text(&text, scan, format_of(scan), inventory, dry_run).map(|(summary, _)| summary)
}

/// [`import`] of a scan already read (`shown` names it in errors; `format` None is CSV).
/// Returns the summary and, unless a dry run, the inventory now in the file.
pub fn import_text(
    text: &str,
    shown: &Path,
    format: Option<Format>,
    inventory: &Path,
    dry_run: bool,
) -> Result<(String, Option<Inventory>), String> {
    let scan = shown;
    let records = match format {
        Some(Format::Yaml) => parse_yaml(text),
        _ => parse_csv(text),
    }
    .map_err(|e| describe(scan, &e))?;
    // Validate the scan on its own first, so its errors name its own lines.
    Inventory::build(records.clone()).map_err(|e| describe(scan, &e))?;
    let _one = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let current = current(inventory)?;
    let (merged, added, updated) = current.merge(&records).map_err(|e| {
        format!(
            "the scan conflicts with {}:\n{}",
            inventory.display(),
            describe(scan, &e)
        )
    })?;
    let summary = format!(
        "{}: {} devices ({added} added, {updated} updated) from {}",
        inventory.display(),
        merged.len(),
        scan.display()
    );
    if dry_run {
        return Ok((format!("{summary} (dry run, nothing written)"), None));
    }
    let inv = write_records(inventory, merged)?;
    Ok((summary, Some(inv)))
}

/// One writer of the inventory file at a time in this process (API requests race).
static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The inventory in `path` (none yet: empty).
fn current(path: &Path) -> Result<Inventory, String> {
    if path.exists() {
        Inventory::load(path).map_err(|e| describe(path, &e))
    } else {
        Ok(Inventory::default())
    }
}

/// How the API and CLI name one record: its MAC (`00:56:2b:04:36:15`), else its serial,
/// else `pin:<PIN>` (an account waiting for a retail phone).
pub fn key_of(r: &Record) -> String {
    match (&r.mac, &r.serial, r.var("pin")) {
        (Some(m), _, _) => m.to_string(),
        (None, Some(s), _) => s.clone(),
        (None, None, Some(p)) => format!("pin:{p}"),
        _ => String::new(),
    }
}

/// The position of the record named `key` (a MAC in any spelling, a serial in any case,
/// or `pin:<PIN>`).
pub fn position(records: &[Record], key: &str) -> Option<usize> {
    if let Some(pin) = key.strip_prefix("pin:") {
        return records.iter().position(|r| r.var("pin") == Some(pin));
    }
    if let Ok(m) = key.parse::<Mac>()
        && let Some(i) = records.iter().position(|r| r.mac == Some(m))
    {
        return Some(i);
    }
    records.iter().position(|r| {
        r.serial
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(key))
    })
}

/// A record for `key` with these variables (`tags` may be `a;b` or `a,b`), as one line of
/// a scan would make it.
pub fn record_for(key: &str, vars: &BTreeMap<String, String>) -> Result<Record, Vec<InvError>> {
    let mut r = Record {
        line: 1,
        ..Record::default()
    };
    if let Some(pin) = key.strip_prefix("pin:") {
        r.vars.insert("pin".into(), pin.to_string());
    } else if let Ok(m) = key.parse::<Mac>() {
        r.mac = Some(m);
    } else if looks_like_mac(key) || key.is_empty() || key.contains(['/', ' ']) {
        return Err(vec![InvError {
            line: 0,
            message: format!(
                "`{key}` is neither a MAC address nor a serial number; expected e.g. 00:56:2b:04:36:15 or CBT141400FK"
            ),
        }]);
    } else {
        r.serial = Some(key.to_string());
    }
    for (k, v) in vars {
        match k.as_str() {
            "mac" | "serial" | "device" => {
                return Err(vec![InvError {
                    line: 0,
                    message: format!(
                        "`{k}` is the record's key (in the path), not a variable; expected variables such as account, extension, display_name"
                    ),
                }]);
            }
            "tags" => {
                r.vars.insert(k.clone(), split_tags(v));
            }
            _ => {
                r.vars.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(r)
}

/// Put one record (replacing the one with the same key, or adding it), validated against
/// the whole inventory, written atomically. Returns (the record, created, the inventory
/// now in the file).
pub fn put_record(
    path: &Path,
    key: &str,
    vars: &BTreeMap<String, String>,
) -> Result<(Record, bool, Inventory), String> {
    let new = record_for(key, vars).map_err(|e| describe(path, &e))?;
    let _one = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let mut records = current(path)?.records;
    let created = match position(&records, key) {
        Some(i) => {
            let mut new = new.clone();
            // A record found by serial keeps its MAC (and the other way round).
            new.mac = new.mac.or(records[i].mac);
            new.serial = new.serial.clone().or_else(|| records[i].serial.clone());
            new.line = records[i].line;
            records[i] = new;
            false
        }
        None => {
            let mut new = new.clone();
            new.line = records.iter().map(|r| r.line).max().unwrap_or(0) + 1;
            records.push(new);
            true
        }
    };
    let i = position(&records, key).unwrap_or(records.len() - 1);
    let rec = records[i].clone();
    let inv = write_records(path, records)?;
    Ok((rec, created, inv))
}

/// Delete the record named `key`. Returns the record and the inventory now in the file;
/// None when there was no such record.
pub fn delete_record(path: &Path, key: &str) -> Result<Option<(Record, Inventory)>, String> {
    let _one = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let mut records = current(path)?.records;
    let Some(i) = position(&records, key) else {
        return Ok(None);
    };
    let gone = records.remove(i);
    let inv = write_records(path, records)?;
    Ok(Some((gone, inv)))
}

/// Validate `records` and write them to `path` in its format, atomically: a temporary file
/// beside it, synced, renamed over it, the directory synced. A reader (the server's watch,
/// a phone's profile) sees the old file or the new one, never half of one.
pub fn write_records(path: &Path, records: Vec<Record>) -> Result<Inventory, String> {
    let body = match format_of(path) {
        Some(Format::Csv) => to_csv(&records),
        Some(Format::Yaml) => to_yaml(&records),
        None => {
            return Err(format!(
                "{}: unknown format; expected a .yaml, .yml or .csv file",
                path.display()
            ));
        }
    };
    // What is written must read back as what was validated (lines renumber on write).
    let mut inv = Inventory::build(records).map_err(|e| describe(path, &e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: cannot write: {e}", path.display()));
    }
    inv.modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_csv_without_header() {
        let recs = parse_csv(
            "00:56:2B:04:36:15,acme,1001\r\n\r\n# a comment\nCBT141400FK,acme,1002,,,Bob\n",
        )
        .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].mac.unwrap().to_hex(), "00562b043615");
        assert_eq!(recs[0].var("extension"), Some("1001"));
        assert_eq!(recs[1].serial.as_deref(), Some("CBT141400FK"));
        assert_eq!(recs[1].var("display_name"), Some("Bob"));
        assert_eq!(recs[1].line, 4);
        // A mistyped MAC is an error, not a serial number.
        let err =
            parse_csv("00:56:2B:04:36:1,acme\n00562b04361f5,acme\n12345678901,acme\n").unwrap_err();
        assert_eq!(err.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn csv_with_header_and_free_columns() {
        let recs =
            parse_csv("mac,extension,tags,room\n0015654aa937,1003,lobby;front,12\n").unwrap();
        assert_eq!(recs[0].var("tags"), Some("lobby,front"));
        assert_eq!(recs[0].var("room"), Some("12"));
        let inv = Inventory::build(recs).unwrap();
        assert!(inv.by_mac("00:15:65:4a:a9:37".parse().unwrap()).is_some());
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse_csv("mac,extension\n00562b043615,1001\n00562b04361,1002\n").unwrap_err();
        assert_eq!(err[0].line, 3, "{err:?}");
        assert!(err[0].message.contains("00562b04361"), "{err:?}");
        let err = parse_csv("mac,extension\n00562b043615,1001,extra\n").unwrap_err();
        assert_eq!(err[0].line, 2);
        let dup = parse_csv("mac,pin\n00562b043615,1234\n00-56-2b-04-36-15,5678\n").unwrap();
        let err = Inventory::build(dup).unwrap_err();
        assert_eq!(err[0].line, 3);
        assert!(err[0].message.contains("line 2"), "{err:?}");
        let bad = parse_csv("mac,pin,digest\n00562b043615,12,sha1\n").unwrap();
        let err = Inventory::build(bad).unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err.iter().all(|e| e.line == 2));
    }

    #[test]
    fn yaml_inventory_and_round_trips() {
        let text = r#"
devices:
  - mac: 00:56:2b:04:36:15
    account: acme
    extension: 1001
    pin: "0042"
    tags: [lobby, front]
    vars: { room: 12 }
  - pin: "98765"
    account: retail
"#;
        let recs = parse_yaml(text).unwrap();
        assert_eq!(recs[0].line, 3);
        assert_eq!(recs[0].var("extension"), Some("1001"));
        assert_eq!(recs[0].var("pin"), Some("0042"));
        assert_eq!(recs[0].var("tags"), Some("lobby,front"));
        assert_eq!(recs[0].var("room"), Some("12"));
        let again = parse_yaml(&to_yaml(&recs)).unwrap();
        assert_eq!(
            again.iter().map(|r| &r.vars).collect::<Vec<_>>(),
            recs.iter().map(|r| &r.vars).collect::<Vec<_>>()
        );
        let again = parse_csv(&to_csv(&recs)).unwrap();
        assert_eq!(again[0].vars, recs[0].vars);
        assert_eq!(again[1].var("pin"), Some("98765"));
        let inv = Inventory::build(recs).unwrap();
        assert_eq!(inv.by_pin("98765").unwrap().var("account"), Some("retail"));
    }

    #[test]
    fn yaml_errors_name_the_line() {
        let err = parse_yaml("devices:\n  - mac: 00:56:2b:04:36:15\n  - mac: nope\n").unwrap_err();
        assert_eq!(err[0].line, 3, "{err:?}");
        let err =
            parse_yaml("devices:\n  - mac: 00:56:2b:04:36:15\n    colour: red\n").unwrap_err();
        assert_eq!(err[0].line, 3, "{err:?}");
    }

    #[test]
    fn rows_keyed_by_switch_port() {
        let text = r#"
devices:
  - circuit: bench-3/port-12
    extension: 1012
  - circuit: bench-3/port-13
    remote_id: sw1
    relay: 198.18.1.1
    extension: 1013
  - remote_id: sw2
    extension: 2000
"#;
        let recs = parse_yaml(text).unwrap();
        let inv = Inventory::build(recs.clone()).unwrap();
        let port = |c: Option<&str>, r: Option<&str>, relay: &str| Port {
            circuit: c.map(str::to_string),
            remote_id: r.map(str::to_string),
            relay: relay.parse().unwrap(),
        };
        let ext = |p: &Port| inv.by_port(p).and_then(|r| r.var("extension"));
        // A row naming only the circuit matches any remote-id and relay.
        assert_eq!(
            ext(&port(Some("bench-3/port-12"), Some("x"), "10.0.0.1")),
            Some("1012")
        );
        // Every part a row names must match.
        assert_eq!(
            ext(&port(Some("bench-3/port-13"), Some("sw1"), "198.18.1.1")),
            Some("1013")
        );
        assert_eq!(
            ext(&port(Some("bench-3/port-13"), Some("sw1"), "198.18.1.2")),
            None
        );
        assert_eq!(
            ext(&port(Some("bench-3/port-13"), None, "198.18.1.1")),
            None
        );
        assert_eq!(ext(&port(None, Some("sw2"), "198.18.1.1")), Some("2000"));
        assert_eq!(
            ext(&port(Some("bench-3/port-14"), None, "198.18.1.1")),
            None
        );
        // Both file formats keep the port.
        let again = parse_yaml(&to_yaml(&recs)).unwrap();
        assert_eq!(
            again.iter().map(|r| &r.port).collect::<Vec<_>>(),
            recs.iter().map(|r| &r.port).collect::<Vec<_>>()
        );
        let again = parse_csv(&to_csv(&recs)).unwrap();
        assert_eq!(
            again.iter().map(|r| &r.port).collect::<Vec<_>>(),
            recs.iter().map(|r| &r.port).collect::<Vec<_>>()
        );
        let csv = parse_csv("circuit,extension\nbench-3/port-12,1012\n").unwrap();
        assert_eq!(
            csv[0].port.as_ref().unwrap().circuit.as_deref(),
            Some("bench-3/port-12")
        );
        // The same port twice, a relay naming no port, a relay that is no address.
        let dup =
            parse_yaml("devices:\n  - circuit: p1\n  - {circuit: p1, extension: 2}\n").unwrap();
        let err = Inventory::build(dup).unwrap_err();
        assert_eq!(err[0].line, 3, "{err:?}");
        assert!(err[0].message.contains("line 2"), "{err:?}");
        let err =
            Inventory::build(parse_yaml("devices:\n  - relay: 198.18.1.1\n").unwrap()).unwrap_err();
        assert!(err[0].message.contains("relay without circuit"), "{err:?}");
        let err = parse_yaml("devices:\n  - circuit: p1\n    relay: sw1\n").unwrap_err();
        assert_eq!(err[0].line, 2, "{err:?}");
    }

    #[test]
    fn merge_updates_and_appends() {
        let inv =
            Inventory::build(parse_csv("mac,extension\n00562b043615,1001\n").unwrap()).unwrap();
        let scan = parse_csv("mac,display_name\n00562b043615,Alice\n0015654aa937,Bob\n").unwrap();
        let (out, added, updated) = inv.merge(&scan).unwrap();
        assert_eq!((added, updated), (1, 1));
        assert_eq!(out[0].var("extension"), Some("1001"));
        assert_eq!(out[0].var("display_name"), Some("Alice"));
    }
}
