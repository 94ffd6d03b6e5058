//! The admin token: configured (`dashboard.token`), or made once and kept in
//! `data_dir/dashboard.token` so the dashboard is never open, even on loopback (a web page
//! in any local browser can reach loopback).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};

pub const FILE: &str = "dashboard.token";
/// Shortest token accepted, configured or read from the file.
pub const MIN_LEN: usize = 16;

/// Where the token came from: the banner says how to log in either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Config,
    /// Kept in this file; `true` when this start made it.
    File(PathBuf, bool),
}

/// The configured token, or the one kept in `data_dir` (made now when there is none).
pub fn resolve(configured: Option<&str>, data_dir: &Path) -> Result<(String, Source)> {
    if let Some(t) = configured {
        return Ok((t.to_string(), Source::Config));
    }
    let path = data_dir.join(FILE);
    let (token, made) = load_or_make(&path)?;
    Ok((token, Source::File(path, made)))
}

/// Read the token kept at `path`, or make one: 256 random bits as 64 hex digits, written
/// to a new file (O_EXCL, mode 0600) and synced before it is used.
pub fn load_or_make(path: &Path) -> Result<(String, bool)> {
    let mut rng = [0u8; 32];
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            getrandom::fill(&mut rng).map_err(|e| anyhow::anyhow!("no random bits: {e}"))?;
            let token: String = rng.iter().map(|b| format!("{b:02x}")).collect();
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("dashboard: cannot write {}", path.display()))?;
            if let Some(dir) = path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok((token, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read(path)?, false)),
        Err(e) => Err(e).with_context(|| format!("dashboard: cannot create {}", path.display())),
    }
}

fn read(path: &Path) -> Result<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("dashboard: cannot read {}", path.display()))?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        // Someone loosened it; the token is a password: tighten it and say so.
        tracing::warn!(
            file = %path.display(),
            "dashboard: the token file was readable by others (mode {:o}); set to 0600",
            mode & 0o777
        );
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let mut text = String::new();
    Read::by_ref(&mut f)
        .take(4096)
        .read_to_string(&mut text)
        .with_context(|| format!("dashboard: cannot read {}", path.display()))?;
    let token = text.trim();
    if token.len() < MIN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "dashboard: {} does not hold a usable token; expected one line of {MIN_LEN} or more characters (delete the file and a new token is made at the next start)",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// What the login cookie holds: derived from the token (hex, so any configured token
/// makes a valid cookie value; the token itself never sits in the browser's cookie store).
/// It changes when the token does, so rotating the token logs every browser out.
pub fn cookie_value(token: &str) -> String {
    Sha256::new()
        .chain_update(b"provbox dashboard cookie\0")
        .chain_update(token.as_bytes())
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compare a presented token with the real one in constant time, whatever their lengths
/// (both are hashed first, so neither the length nor a prefix leaks through timing).
pub fn matches(presented: &[u8], token: &[u8]) -> bool {
    crate::secret::same_secret(presented, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (t1, made) = load_or_make(&path).unwrap();
        assert!(made);
        assert_eq!(t1.len(), 64);
        assert!(t1.chars().all(|c| c.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (t2, made) = load_or_make(&path).unwrap();
        assert_eq!((t2.as_str(), made), (t1.as_str(), false));
        // Loosened by hand: tightened again on the next read.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_make(&path).unwrap().0, t1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "short\n").unwrap();
        assert!(load_or_make(&path).is_err());
    }

    #[test]
    fn comparison() {
        assert!(matches(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!matches(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!matches(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!matches(b"", b"0123456789abcdef"));
    }
}
