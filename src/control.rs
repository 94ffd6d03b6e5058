//! How an operator reaches a running provbox: the pid file and reload status in the data
//! directory (read by `provbox reload`), and the watch on the configuration file.
//!
//! `provbox reload` signals the process (SIGHUP) rather than calling an HTTP endpoint: the
//! admin listener has no authentication and is often open to a Prometheus server on the
//! network, it may be switched off, and a signal is what `systemctl reload` sends too. The
//! kernel decides who may signal the process (its own user or root), so nothing new has
//! to be secured.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

pub fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.join("provbox.pid")
}

pub fn status_file(data_dir: &Path) -> PathBuf {
    data_dir.join("reload-status")
}

/// Written once every listener is bound; removed at exit.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(data_dir: &Path) -> Result<PidFile> {
        // A previous run's reload verdicts would confuse `provbox reload`'s generation count.
        let _ = std::fs::remove_file(status_file(data_dir));
        let path = pid_file(data_dir);
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The outcome of the latest reload, for `provbox reload` to report: `<n> <result>\n<text>`.
pub fn write_status(data_dir: &Path, generation: u64, result: &str, text: &str) {
    let path = status_file(data_dir);
    let tmp = path.with_extension("tmp");
    let body = format!("{generation} {result}\n{text}\n");
    if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &path)) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

fn read_status(data_dir: &Path) -> Option<(u64, String, String)> {
    let text = std::fs::read_to_string(status_file(data_dir)).ok()?;
    let (head, rest) = text.split_once('\n')?;
    let (generation, result) = head.split_once(' ')?;
    Some((
        generation.parse().ok()?,
        result.to_string(),
        rest.trim_end().to_string(),
    ))
}

/// A process that still runs provbox (a stale pid file may name an unrelated process).
fn is_provbox(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"provbox"))
        })
        .unwrap_or(false)
}

/// `provbox reload`: SIGHUP to the provbox using `data_dir`, then wait for its verdict.
/// Returns the result word (`ok`, `restart_needed`, `partial`, `invalid`) and the message
/// that came with it (what restarted, the keys waiting for a restart, what failed).
pub fn signal_reload(data_dir: &Path, wait: Duration) -> Result<(String, String)> {
    let path = pid_file(data_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no running provbox found: cannot read {} (is it running with this config? A \
             changed data_dir takes effect only at a restart: until then send SIGHUP, e.g. \
             `systemctl reload provbox`)",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a process id", path.display()))?;
    if !is_provbox(pid) {
        bail!(
            "{} names process {pid}, which is not a running provbox (stale pid file)",
            path.display()
        );
    }
    let before = read_status(data_dir).map(|s| s.0).unwrap_or(0);
    // SAFETY: kill(2) with a pid we read and checked; no memory is shared.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot signal provbox (pid {pid}): {e} (run as the same user or root)");
    }
    let start = Instant::now();
    while start.elapsed() < wait {
        if let Some((generation, result, text)) = read_status(data_dir)
            && generation > before
        {
            return Ok((result, text));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "sent SIGHUP to provbox (pid {pid}) but it reported no result within {wait:?}; see its log"
    )
}

/// Changes to the configuration file, debounced by the caller. Watching the directory,
/// not the file, sees editors that write a new file and rename it over the old one, and
/// Kubernetes ConfigMap updates (a `..data` symlink swapped beside the file).
pub fn watch_config(
    path: &Path,
) -> Result<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            let f = p.file_name();
            f == name.as_deref() || f.is_some_and(|f| f.to_string_lossy().starts_with(".."))
        });
        if relevant {
            // A full channel already holds a wake-up; dropping this one is the debounce.
            let _ = tx.try_send(());
        }
    })
    .context("watching the configuration file")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok((watcher, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_and_stale_pid() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_status(d.path()).is_none());
        write_status(d.path(), 3, "invalid", "line 4: bad");
        assert_eq!(
            read_status(d.path()).unwrap(),
            (3, "invalid".into(), "line 4: bad".into())
        );
        // Our own pid is a test binary, not provbox: refused as stale.
        std::fs::write(pid_file(d.path()), format!("{}\n", std::process::id())).unwrap();
        let e = signal_reload(d.path(), Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("stale"), "{e}");
        std::fs::remove_file(pid_file(d.path())).unwrap();
        let e = signal_reload(d.path(), Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("no running provbox"), "{e}");
    }
}
