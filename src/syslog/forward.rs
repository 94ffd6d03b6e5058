//! `syslog.forward_file`: every received line appended to a file, one line per message.
//!
//! - What the sender put in a line cannot forge another: CR, LF and every other control
//!   character (and `\` itself) is escaped, so one datagram is one line of the file.
//! - The file has a cap (`syslog.forward_max`): past it the file is renamed to `<file>.1`
//!   (replacing the previous one) and a new one is started.
//! - Writes happen on a thread of their own, fed by a bounded queue: a slow disk never
//!   holds up the receive loop; when the queue is full the line is dropped and counted.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::limit::WarnGate;
use crate::metrics::{RefusalLabels, Registers};

/// Lines waiting for the writer; a burst beyond this is dropped, not buffered.
const QUEUE: usize = 4096;
/// Smallest `forward_max` accepted (room for a few long lines).
pub const MIN_MAX: u64 = 1024;
pub const DEFAULT_MAX: u64 = 64 * 1024 * 1024;

pub(crate) use crate::confkit::Size;

impl Default for Size {
    fn default() -> Self {
        Size(DEFAULT_MAX)
    }
}

/// One received message as one line: trailing CR/LF/NUL dropped, then `\` and every
/// control character escaped (`\n`, `\r`, `\t`, `\xHH`; C1 controls and the Unicode line
/// and paragraph separators as `\u{HHHH}`). Reversible, see `unescape` in the tests.
pub fn escape(line: &str) -> Cow<'_, str> {
    let line = line.trim_end_matches(['\r', '\n', '\0']);
    let needs = |c: char| c == '\\' || c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !line.chars().any(needs) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[derive(Clone, Default)]
pub struct Metrics {
    dropped: Family<RefusalLabels, Counter>,
    rotations: Counter,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Metrics {
        Metrics {
            dropped: reg.metric(
                "provbox_syslog_forward_dropped",
                "Lines not written to syslog.forward_file, by reason (queue_full, write_error)",
            ),
            rotations: reg.metric(
                "provbox_syslog_forward_rotations",
                "Times syslog.forward_file reached syslog.forward_max and was rotated",
            ),
        }
    }

    fn drop_lines(&self, reason: &'static str, n: u64) {
        self.dropped
            .get_or_create(&RefusalLabels { reason })
            .inc_by(n);
    }
}

/// The receive side: formats and queues lines. Dropping it lets the writer finish the
/// queue, and waits for that.
pub struct Forward {
    tx: Option<SyncSender<String>>,
    writer: Option<std::thread::JoinHandle<()>>,
    metrics: Metrics,
}

impl Forward {
    /// Open (or create) the file now, so a bad path stops the start; then start the writer.
    pub fn open(path: &Path, max: u64, metrics: Metrics) -> Result<Forward> {
        let file = open_append(path)
            .with_context(|| format!("syslog.forward_file: cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let w = Writer {
            path: path.to_path_buf(),
            max: max.max(MIN_MAX),
            file,
            size,
            metrics: metrics.clone(),
            warned: WarnGate::new(Duration::from_secs(60)),
        };
        let writer = std::thread::Builder::new()
            .name("syslog-forward".into())
            .spawn(move || w.run(rx))
            .context("syslog.forward_file: cannot start its writer thread")?;
        Ok(Forward {
            tx: Some(tx),
            writer: Some(writer),
            metrics,
        })
    }

    /// Queue `from line` (escaped); never blocks.
    pub fn line(&self, from: IpAddr, text: &str) {
        let line = format!("{from} {}\n", escape(text));
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.drop_lines("queue_full", 1),
            Err(TrySendError::Disconnected(_)) => self.metrics.drop_lines("write_error", 1),
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

struct Writer {
    path: PathBuf,
    max: u64,
    file: std::fs::File,
    /// Bytes in the current file, counting what is about to be written.
    size: u64,
    metrics: Metrics,
    /// At most one failure warning a minute.
    warned: WarnGate,
}

impl Writer {
    fn run(mut self, rx: Receiver<String>) {
        let mut batch = String::new();
        let mut lines = 0u64;
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            // Whatever queued meanwhile goes out in the same write (whole lines only).
            while let Some(line) = next {
                let len = line.len() as u64;
                if self.size > 0 && self.size + len > self.max {
                    self.write(&mut batch, &mut lines);
                    self.rotate();
                }
                batch.push_str(&line);
                lines += 1;
                self.size += len;
                next = if batch.len() < 64 * 1024 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.write(&mut batch, &mut lines);
        }
    }

    fn write(&mut self, batch: &mut String, lines: &mut u64) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(batch.as_bytes()) {
            self.metrics.drop_lines("write_error", *lines);
            self.warn(&format!("cannot append to {}: {e}", self.path.display()));
        }
        batch.clear();
        *lines = 0;
    }

    /// `<file>` becomes `<file>.1` (replacing the older one) and a new `<file>` starts.
    fn rotate(&mut self) {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let renamed = std::fs::rename(&self.path, &old);
        match renamed.and_then(|()| open_append(&self.path)) {
            Ok(f) => {
                self.file = f;
                self.metrics.rotations.inc();
                tracing::info!(file = %self.path.display(), "syslog: forward_file rotated");
            }
            // Keep appending where we can; try again after another `max` bytes.
            Err(e) => self.warn(&format!("cannot rotate {}: {e}", self.path.display())),
        }
        self.size = 0;
    }

    fn warn(&mut self, what: &str) {
        if self.warned.admit().is_some() {
            tracing::warn!("syslog: forward_file: {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confkit::parse_size;
    use proptest::prelude::*;

    /// The inverse of `escape` (for the property below).
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('x') => {
                    let h: String = it.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&h, 16).unwrap()));
                }
                Some('u') => {
                    let h: String = it.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap());
                }
                other => panic!("bad escape {other:?} in {s:?}"),
            }
        }
        out
    }

    #[test]
    fn examples() {
        assert_eq!(escape("plain line\r\n"), "plain line");
        assert_eq!(
            escape("a\nFAKE 10.0.0.1 <13>forged\r\x1b[2J\\"),
            "a\\nFAKE 10.0.0.1 <13>forged\\r\\x1b[2J\\\\"
        );
        assert_eq!(escape("tab\there\u{9b}"), "tab\\there\\u{9b}");
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("64MB").is_err());
    }

    proptest! {
        /// Whatever arrives becomes exactly one line with no control character in it, and
        /// the original (less trailing CR/LF/NUL) can be read back from it.
        #[test]
        fn escaped_lines_are_one_line_and_reversible(s in any::<String>()) {
            let e = escape(&s);
            prop_assert!(!e.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'), "{e:?}");
            prop_assert_eq!(unescape(&e), s.trim_end_matches(['\r', '\n', '\0']));
        }
    }

    #[test]
    fn rotates_keeping_one_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phones.log");
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        let f = Forward::open(&path, 1024, m.clone()).unwrap();
        let from: IpAddr = "198.18.0.7".parse().unwrap();
        for i in 0..100 {
            f.line(from, &format!("<13>line {i:03} {}", "x".repeat(40)));
        }
        drop(f);
        let cur = std::fs::read_to_string(&path).unwrap();
        let prev = std::fs::read_to_string(dir.path().join("phones.log.1")).unwrap();
        assert!(cur.len() <= 1024 && prev.len() <= 1024);
        assert!(
            prev.len() > 1024 - 60,
            "rotated near the cap: {}",
            prev.len()
        );
        assert!(cur.ends_with("line 099 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"));
        let first_cur: usize = cur.lines().next().unwrap()[20..23].parse().unwrap();
        let last_prev: usize = prev.lines().last().unwrap()[20..23].parse().unwrap();
        assert_eq!(last_prev + 1, first_cur, "no line lost across the rotation");
        assert!(m.rotations.get() >= 5);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
