//! Files phones write back: logs, local overrides, call lists, directories.
//!
//! A write (HTTP PUT/POST, TFTP WRQ) is accepted only under a configured file name
//! pattern (`$MA-phone.cfg`) and only from the proven device that name belongs to: the
//! device pipeline says who is asking ([`Provisioner::prove`]), this module never looks at
//! certificates or leases itself. Files live in `data_dir/uploads/<mac>/`, outside every
//! served root; the stored name is made from the pattern and the MAC, never from the
//! client's bytes, so no request can name a file elsewhere.
//!
//! An upload is written to a temporary file beside its target and renamed into place when
//! complete: a cut upload leaves the previous version (the temporary file goes when the
//! writer is dropped). `*.log` uploads are appended and rotated at `log_rotate`; other
//! files are replaced. Quotas (file, device, store) are checked against the declared
//! length up front, while the body streams, and once more when the file is committed.
//!
//! The same device reads its files back through the [`readback`] pipeline stage; the
//! dashboard and `provbox uploads` read the directory through [`list`] and [`tail`].

pub mod config;
pub mod http;
pub mod readback;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::devices::verify::Verdict;
use crate::devices::{FetchRequest, Mac, Provisioner, access};
use crate::limit::WarnGate;
use crate::metrics::{Registers, ResultLabels};

pub use config::Config;

/// Where uploads live under `data_dir`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}

/// Temporary files start with this (a listing skips them; a start removes leftovers).
const PARTIAL: &str = ".partial-";

/// A file name pattern: a literal prefix, the MAC (`$MA`: 12 hex digits), a literal
/// suffix. Matched case-insensitively; the stored name has the MAC in lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    prefix: String,
    suffix: String,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let bad = |why: &str| {
            Err(format!(
                "`{text}` {why}; expected a file name with one `$MA` (the MAC), e.g. `$MA-app.log`"
            ))
        };
        if text.matches("$MA").count() != 1 {
            return bad("does not name the MAC exactly once");
        }
        if text.contains(['/', '\\', '\0']) || text.starts_with('.') {
            return bad("is not a plain file name");
        }
        if text.chars().any(|c| c.is_control()) {
            return bad("has control characters");
        }
        let (prefix, suffix) = text.split_once("$MA").expect("counted above");
        Ok(Pattern {
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }

    /// The MAC `name` (a file name, no directories) carries, if it has this form.
    pub fn matches(&self, name: &str) -> Option<Mac> {
        let (p, s) = (self.prefix.len(), self.suffix.len());
        if name.len() != p + 12 + s || !name.is_char_boundary(p) || !name.is_char_boundary(p + 12) {
            return None;
        }
        let (head, rest) = name.split_at(p);
        let (mac, tail) = rest.split_at(12);
        if !head.eq_ignore_ascii_case(&self.prefix)
            || !tail.eq_ignore_ascii_case(&self.suffix)
            || !mac.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        mac.parse().ok()
    }

    /// The stored name for `mac`.
    pub fn file_name(&self, mac: Mac) -> String {
        format!("{}{}{}", self.prefix, mac.to_hex(), self.suffix)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}$MA{}", self.prefix, self.suffix)
    }
}

/// Logs are appended and rotated; everything else is replaced.
pub fn is_log(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".log")
}

/// Upload names that are a phone's own configuration, with the vendor whose format they
/// are in: each vendor file declares its `CONFIG_REPORTS`.
fn config_reports() -> impl Iterator<Item = (&'static str, Pattern)> {
    use crate::vendors::{polycom, yealink};
    [
        (polycom::VENDOR.name, polycom::CONFIG_REPORTS),
        (yealink::VENDOR.name, yealink::CONFIG_REPORTS),
    ]
    .into_iter()
    .flat_map(|(v, names)| names.iter().map(move |n| (v, n)))
    .filter_map(|(v, n)| Pattern::parse(n).ok().map(|p| (v, p)))
}

/// The vendor whose configuration report a stored file `name` is (`$MA-phone.cfg`:
/// Polycom, `$MA-local.cfg`: Yealink), if it is one: such an upload is compared with the
/// profile last served to the device, as a Cisco report is.
pub fn report_vendor(name: &str) -> Option<&'static str> {
    config_reports().find_map(|(v, p)| p.matches(name).map(|_| v))
}

/// An upload's destination: whose, and the file name it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub mac: Mac,
    pub name: String,
}

/// Why an upload was not stored. `reason()` is the log reason and the metric result.
#[derive(Debug)]
pub enum Refused {
    /// The path is no upload pattern (or uploads are off for this protocol).
    NotUpload,
    /// Not the proven device the name belongs to; the pipeline's reason.
    Forbidden(&'static str),
    /// HTTP credentials are wanted (`devices.trust.http_auth`): a 401 with the challenge;
    /// `stale`: the nonce expired, the password was right.
    Unauthorized {
        stale: bool,
    },
    /// Over a quota: `file`, `device` or `store`.
    TooLarge(&'static str),
    /// The client went away mid-body.
    Cut,
    Io(io::Error),
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::NotUpload => "not_upload",
            Refused::Forbidden(_) => "forbidden",
            Refused::Unauthorized { .. } => "unauthorized",
            Refused::TooLarge("file") => "file_quota",
            Refused::TooLarge("device") => "device_quota",
            Refused::TooLarge(_) => "store_quota",
            Refused::Cut => "cut",
            Refused::Io(_) => "error",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NotUpload => write!(f, "not an upload location"),
            Refused::Forbidden(r) => write!(f, "not the proven device the file belongs to ({r})"),
            Refused::Unauthorized { .. } => write!(f, "HTTP credentials wanted"),
            Refused::TooLarge(q) => write!(f, "over the {q} quota"),
            Refused::Cut => write!(f, "the client went away before the end of the body"),
            Refused::Io(e) => write!(f, "cannot store: {e}"),
        }
    }
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Refused {
        Refused::Io(e)
    }
}

/// `provbox_uploads_total{result}` and `provbox_upload_bytes_total`.
#[derive(Clone, Default)]
pub struct Metrics {
    pub uploads: Family<ResultLabels, Counter>,
    pub bytes: Counter,
}

impl Metrics {
    pub fn register(reg: &mut prometheus_client::registry::Registry) -> Metrics {
        Metrics {
            uploads: reg.metric(
                "provbox_uploads",
                "Uploads by result: stored, forbidden, file_quota, device_quota, store_quota, cut, error",
            ),
            bytes: reg.metric("provbox_upload_bytes", "Bytes of uploads stored"),
        }
    }
}

/// What a committed upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    pub bytes: u64,
    /// `created`, `replaced`, `appended` or `rotated` (appended after a rotation).
    pub how: &'static str,
}

impl Stored {
    /// The timeline's words for it: `<name>: <n> bytes <how> over <protocol>`.
    pub fn describe(&self, protocol: &str) -> String {
        format!(
            "{}: {} bytes {} over {protocol}",
            self.name, self.bytes, self.how
        )
    }
}

/// The upload store.
pub struct Uploads {
    root: PathBuf,
    cfg: Config,
    patterns: Vec<Pattern>,
    metrics: Metrics,
    /// Commits one at a time: quotas and log appends read, then change, the directory.
    commit: Mutex<()>,
    seq: AtomicU64,
    /// Refusals are logged at most every few seconds under a flood.
    warn: WarnGate,
}

impl Uploads {
    /// The store under `data_dir/uploads` (made if missing); temporary files a crash left
    /// behind are removed.
    pub fn open(data_dir: &Path, cfg: &Config, metrics: Metrics) -> io::Result<Uploads> {
        let root = dir(data_dir);
        fs::create_dir_all(&root)?;
        for d in fs::read_dir(&root)?.flatten() {
            for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().starts_with(PARTIAL) {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        Ok(Uploads {
            root,
            cfg: cfg.clone(),
            patterns: cfg.patterns(),
            metrics,
            commit: Mutex::new(()),
            seq: AtomicU64::new(0),
            warn: WarnGate::new(Duration::from_secs(5)),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// TFTP write requests are taken (`uploads.tftp`).
    pub fn tftp(&self) -> bool {
        self.cfg.tftp
    }

    /// The upload a catalog key (any directories, then a file name) names, if any.
    pub fn target(&self, key: &str) -> Option<Target> {
        let name = key.rsplit('/').next().unwrap_or(key);
        self.patterns.iter().find_map(|p| {
            p.matches(name).map(|mac| Target {
                mac,
                name: p.file_name(mac),
            })
        })
    }

    /// The upload `req` asks to make, if the proven device asking is the one it names.
    pub fn authorize(&self, pv: &Provisioner, req: &FetchRequest<'_>) -> Result<Target, Refused> {
        let key = crate::catalog::path::normalize(req.path).map_err(|_| Refused::NotUpload)?;
        let target = self.target(&key).ok_or(Refused::NotUpload)?;
        let id = pv.prove(req).map_err(|r| match r {
            crate::catalog::Refusal::Unauthorized { stale } => Refused::Unauthorized { stale },
            r => Refused::Forbidden(r.reason()),
        })?;
        access::allow(&id, Some(target.mac)).map_err(Refused::Forbidden)?;
        Ok(target)
    }

    /// Start writing `target`; `declared` is the length the client announced.
    pub fn begin(&self, target: Target, declared: Option<u64>) -> Result<Writer<'_>, Refused> {
        let limit = self.room(&target)?;
        if declared.is_some_and(|n| n > limit) {
            return Err(self.over(&target, declared.unwrap_or(0)));
        }
        let dir = self.device_dir(target.mac);
        fs::create_dir_all(&dir)?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            "{PARTIAL}{}-{}-{n}",
            target.name,
            std::process::id()
        ));
        let file = File::create(&tmp)?;
        Ok(Writer {
            up: self,
            target,
            tmp,
            file: Some(file),
            written: 0,
            limit,
        })
    }

    /// Count and log an upload's end.
    pub fn record(&self, peer: std::net::SocketAddr, path: &str, result: &Result<Stored, Refused>) {
        match result {
            Ok(s) => {
                self.metrics
                    .uploads
                    .get_or_create(&ResultLabels { result: "stored" })
                    .inc();
                self.metrics.bytes.inc_by(s.bytes);
                tracing::info!(%peer, path, file = %s.name, bytes = s.bytes, how = s.how, "upload stored");
            }
            Err(Refused::NotUpload) => {}
            Err(e) => {
                self.metrics
                    .uploads
                    .get_or_create(&ResultLabels { result: e.reason() })
                    .inc();
                // Each one at debug; at info at most every few seconds (a flood of bad
                // uploads is not a flood of log lines).
                match self.warn.admit() {
                    Some(held_back) => {
                        tracing::info!(%peer, path, reason = e.reason(), held_back, "upload refused: {e}")
                    }
                    None => {
                        tracing::debug!(%peer, path, reason = e.reason(), "upload refused: {e}")
                    }
                }
            }
        }
    }

    /// After `target` was stored: when it is a configuration report
    /// ([`report_vendor`]), compare it with the profile last served to the device (the
    /// verdict goes to the timeline, the dashboard, the hooks and the gauge).
    pub fn verify(&self, pv: &Provisioner, target: &Target) -> Option<Verdict> {
        let vendor = report_vendor(&target.name)?;
        // The stored file, as committed (never more than `max_file`).
        let body = match fs::read(self.device_dir(target.mac).join(&target.name)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(mac = %target.mac, file = %target.name, "cannot read the uploaded configuration to verify it: {e}");
                return None;
            }
        };
        Some(pv.verify_report(target.mac, vendor, &body))
    }

    fn device_dir(&self, mac: Mac) -> PathBuf {
        self.root.join(mac.to_hex())
    }

    /// The largest body `target` may have now: the smallest of the file quota and what
    /// the device's and the store's quotas leave.
    fn room(&self, target: &Target) -> Result<u64, Refused> {
        let dir = self.device_dir(target.mac);
        let freed = freed_by(&dir, &target.name, 0, &self.cfg);
        let device = usage(&dir)?;
        let total = usage_all(&self.root)?;
        let dev_room = (self.cfg.max_device.0 + freed).saturating_sub(device);
        let all_room = (self.cfg.max_total.0 + freed).saturating_sub(total);
        Ok(self.cfg.max_file.0.min(dev_room).min(all_room))
    }

    /// Which quota a body of `n` bytes breaks.
    fn over(&self, target: &Target, n: u64) -> Refused {
        if n > self.cfg.max_file.0 {
            return Refused::TooLarge("file");
        }
        let dir = self.device_dir(target.mac);
        let freed = freed_by(&dir, &target.name, n, &self.cfg);
        let device = usage(&dir).unwrap_or(u64::MAX);
        if device + n > self.cfg.max_device.0 + freed {
            Refused::TooLarge("device")
        } else {
            Refused::TooLarge("store")
        }
    }

    /// Put a complete temporary file in place, under the quotas as they are now.
    fn commit(&self, target: &Target, tmp: &Path, n: u64) -> Result<Stored, Refused> {
        let _one = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.device_dir(target.mac);
        let freed = freed_by(&dir, &target.name, n, &self.cfg);
        // The temporary file is counted in the directory already.
        let device = usage(&dir)?;
        let total = usage_all(&self.root)?;
        if n > self.cfg.max_file.0
            || device > self.cfg.max_device.0 + freed
            || total > self.cfg.max_total.0 + freed
        {
            return Err(self.over(target, n));
        }
        let path = dir.join(&target.name);
        let old = fs::metadata(&path).map(|m| m.len()).ok();
        let how = match old {
            None => {
                fs::rename(tmp, &path)?;
                "created"
            }
            Some(_) if !is_log(&target.name) => {
                fs::rename(tmp, &path)?;
                "replaced"
            }
            Some(len) if len + n > self.cfg.log_rotate.0 => {
                rotate(&path, self.cfg.log_keep.value)?;
                fs::rename(tmp, &path)?;
                "rotated"
            }
            Some(_) => {
                // Old content then the new, in a second temporary file renamed into place:
                // a failure half-way leaves the log as it was.
                let joined = tmp.with_extension("join");
                let result = (|| {
                    let mut out = File::create(&joined)?;
                    io::copy(&mut File::open(&path)?, &mut out)?;
                    io::copy(&mut File::open(tmp)?, &mut out)?;
                    out.sync_all()?;
                    fs::rename(&joined, &path)
                })();
                let _ = fs::remove_file(&joined);
                let _ = fs::remove_file(tmp);
                result?;
                "appended"
            }
        };
        Ok(Stored {
            name: target.name.clone(),
            bytes: n,
            how,
        })
    }
}

/// Bytes a commit of `n` bytes to `name` frees in `dir`: a replaced file's old version,
/// the oldest rotation a log rotation drops (or the log itself when none are kept).
fn freed_by(dir: &Path, name: &str, n: u64, cfg: &Config) -> u64 {
    let len = |p: PathBuf| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let current = len(dir.join(name));
    if !is_log(name) {
        return current;
    }
    if current == 0 || current + n <= cfg.log_rotate.0 {
        return 0;
    }
    match cfg.log_keep.value {
        0 => current,
        k => len(dir.join(format!("{name}.{k}"))),
    }
}

/// `name` becomes `name.1`, `name.1` becomes `name.2`, ... up to `keep` (the oldest goes).
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |i: u32| {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    };
    if keep == 0 {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    for i in (1..keep).rev() {
        match fs::rename(numbered(i), numbered(i + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(path, numbered(1))
}

/// Bytes of the files in one device's directory (temporary ones included: they are on
/// the disk too).
fn usage(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                n += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(n)
}

fn usage_all(root: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(root)?.flatten() {
        // Device directories; anything else someone put there counts as it is.
        n += match e.file_type() {
            Ok(t) if t.is_dir() => usage(&e.path())?,
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        };
    }
    Ok(n)
}

/// One upload being written. Dropped before [`Writer::finish`] (a cut, a refusal), its
/// temporary file is removed and the stored version stays as it was.
pub struct Writer<'a> {
    up: &'a Uploads,
    target: Target,
    tmp: PathBuf,
    file: Option<File>,
    written: u64,
    limit: u64,
}

impl Writer<'_> {
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Append a piece of the body; refused as soon as the body passes its room.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), Refused> {
        let n = self.written + chunk.len() as u64;
        if n > self.limit {
            return Err(self.up.over(&self.target, n));
        }
        match &mut self.file {
            Some(f) => f.write_all(chunk)?,
            None => return Err(Refused::Io(io::Error::other("writer already finished"))),
        }
        self.written = n;
        Ok(())
    }

    /// The body is complete: put it in place.
    pub fn finish(mut self) -> Result<Stored, Refused> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        self.up.commit(&self.target, &self.tmp, self.written)
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        // After a commit the temporary name is gone already; otherwise this is the cut.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// One stored file, as the dashboard and `provbox uploads` list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileInfo {
    pub name: String,
    pub bytes: u64,
    /// Milliseconds since the epoch.
    pub modified_ms: u64,
}

/// The files stored for `mac` under `root` (`data_dir/uploads`), by name.
pub fn list(root: &Path, mac: Mac) -> io::Result<Vec<FileInfo>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(root.join(mac.to_hex())) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(m) = e.metadata() else { continue };
        if name.starts_with('.') || !m.is_file() {
            continue;
        }
        let modified_ms = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        out.push(FileInfo {
            name,
            bytes: m.len(),
            modified_ms,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The path of `name` among `mac`'s stored files, if it is one of them: a name is looked
/// up in the listing, never joined to a path as given.
pub fn stored_path(root: &Path, mac: Mac, name: &str) -> Option<PathBuf> {
    let files = list(root, mac).ok()?;
    files
        .iter()
        .find(|f| f.name == name)
        .map(|f| root.join(mac.to_hex()).join(&f.name))
}

/// The last `lines` lines of a stored file (at most its last 64 KiB), as text.
pub fn tail(root: &Path, mac: Mac, name: &str, lines: usize) -> io::Result<Option<String>> {
    let Some(path) = stored_path(root, mac, name) else {
        return Ok(None);
    };
    const WINDOW: u64 = 64 << 10;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(WINDOW);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(WINDOW).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut all: Vec<&str> = text.lines().collect();
    // A window that starts mid-line: that first piece is not a whole line.
    if start > 0 && !all.is_empty() {
        all.remove(0);
    }
    let from = all.len().saturating_sub(lines);
    Ok(Some(all[from..].join("\n")))
}

/// `provbox uploads <mac> [--export DIR]`: the listing as text, after copying the files
/// into `export` when given.
pub fn cli(data_dir: &Path, mac: &str, export: Option<&Path>) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mac: Mac = mac.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let root = dir(data_dir);
    let files = list(&root, mac).with_context(|| format!("reading {}", root.display()))?;
    let mut out = String::new();
    if files.is_empty() {
        out.push_str(&format!("no uploads from {}\n", mac.to_hex()));
    }
    for f in &files {
        out.push_str(&format!(
            "{:<32} {:>10}  {}\n",
            f.name,
            f.bytes,
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_millis(f.modified_ms))
        ));
    }
    if let Some(to) = export {
        fs::create_dir_all(to).with_context(|| format!("making {}", to.display()))?;
        for f in &files {
            let from = root.join(mac.to_hex()).join(&f.name);
            fs::copy(&from, to.join(&f.name))
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        out.push_str(&format!(
            "exported {} files to {}\n",
            files.len(),
            to.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
