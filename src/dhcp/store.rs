//! Durable leases: an append-only journal, `data_dir/dhcp-leases.journal`.
//!
//! Why not a table in the redb store (where leases lived at first): a redb commit rewrites
//! B-tree pages, checksums and allocator state, and measured as ~40% of provbox's CPU
//! under a lease storm. An append of a few dozen bytes and one `fdatasync` per group
//! commit gives the same guarantee for a fraction of the work, and the file can be read
//! while provbox runs (`provbox leases`). ISC dhcpd and Kea's memfile keep leases the same
//! way; provbox adds a checksum per record and syncs before every ACK.
//!
//! File layout: the 8-byte magic `PBXLEAS2`, 8 random bytes (the salt, new for every
//! file), then records:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | payload length, big-endian `u32` |
//! | 4 | CRC-32 (IEEE) of salt ‖ length ‖ payload, big-endian |
//! | 1 | operation: 1 put, 2 delete |
//! | 4 | the IPv4 address |
//! | rest | (put only) the lease record below |
//!
//! Lease record (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, 2 (version 1 had a 1-byte client key length) |
//! | 1 | state: 1 bound, 2 free (released/expired, remembered), 3 declined |
//! | 6 | MAC |
//! | 8 | `expires` (bound) or `until` (declined), Unix seconds; 0 for free |
//! | 2 + n | client key: length, then `m`+MAC or `i`+client identifier (option 61) |
//! | 1 + n | hostname (option 12 or reservation), UTF-8, length 0 = none |
//! | 1 + n | vendor class (option 60), UTF-8 lossy, length 0 = none |
//!
//! Hostname and vendor class are cut to 255 bytes on a character boundary, here and where
//! the engine reads them, so a lease reads back after a restart exactly as it was served.
//!
//! Replaying the records in order gives the table. A crash can only tear the last records
//! (their ACKs never left): at start the journal is cut back to its last whole record.
//! When the journal holds four times more records than live leases, it is rewritten as one
//! record per lease (new file with a new salt, sync, rename, sync the directory).
//!
//! Damage on disk: a record whose checksum fails but whose length leads to an intact
//! record is skipped whole, so recovery resumes at the next record boundary and never
//! looks inside the damaged record (a hostname is bytes a client chose: it may hold
//! something shaped like a record). Only when the length itself is damaged does recovery
//! search forward, and then only a record checked with this file's salt counts, which a
//! client cannot forge without reading the file. The journal is then rewritten.
//!
//! Old journals (`PBXLEAS1`: no salt, CRC of the payload alone) are read with the same
//! rules and rewritten in this format at start.
//!
//! Offers are not stored: a crash between OFFER and REQUEST only makes the client ask
//! again. Every ACK is written and synced before it is sent, so a client never holds an
//! address the journal does not know about. After a failed sync (file or directory) the
//! state of the file is unknown (the kernel may have dropped the dirty pages and a later
//! `fdatasync` can succeed without them): the journal counts as degraded, no commit
//! succeeds until the whole journal has been rewritten and synced, and the server sends no
//! ACK meanwhile.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::devices::Mac;

use super::leases::{ClientKey, Lease, State};

/// The journal's file name under the data directory.
pub const FILE_NAME: &str = "dhcp-leases.journal";
/// On the shared store (`store.backend: postgres`): the renewals ACKed while PostgreSQL was
/// unreachable, kept here (synced before each ACK) until the database has them.
pub const SPOOL_FILE_NAME: &str = "dhcp-outage.journal";
const MAGIC: &[u8; 8] = b"PBXLEAS2";
const MAGIC_V1: &[u8; 8] = b"PBXLEAS1";
const SALT_LEN: usize = 8;
/// Magic and salt.
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// A record longer than this is not one we wrote (the fields are capped at 255 bytes, the
/// client key at 256).
const MAX_RECORD: usize = 4096;
/// Compact when the journal holds this many records and four times more than live leases.
const COMPACT_MIN: usize = 4096;
/// The longest hostname or vendor class kept, in bytes.
pub const MAX_TEXT: usize = 255;

/// One change to write.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Lease),
    Delete(Ipv4Addr),
}

/// `s` cut to [`MAX_TEXT`] bytes on a character boundary.
pub fn cap_text(s: &str) -> &str {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub fn encode(l: &Lease) -> Option<Vec<u8>> {
    let (state, t) = match l.state {
        State::Bound { expires } => (1u8, expires),
        State::Free => (2, 0),
        State::Declined { until } => (3, until),
        State::Offered { .. } => return None,
    };
    let mut v = Vec::with_capacity(48);
    v.push(2);
    v.push(state);
    v.extend_from_slice(&l.mac.0);
    v.extend_from_slice(&t.to_be_bytes());
    // Option 61 concatenated over several instances (RFC 3396) can pass 255 bytes.
    let key = &l.client.0[..l.client.0.len().min(u16::MAX as usize)];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(key);
    for field in [l.hostname.as_deref(), l.vendor_class.as_deref()] {
        let f = cap_text(field.unwrap_or(""));
        v.push(f.len() as u8);
        v.extend_from_slice(f.as_bytes());
    }
    Some(v)
}

pub fn decode(ip: Ipv4Addr, b: &[u8]) -> Option<Lease> {
    if b.len() < 16 || !matches!(b[0], 1 | 2) {
        return None;
    }
    let mac = Mac(b[2..8].try_into().ok()?);
    let t = u64::from_be_bytes(b[8..16].try_into().ok()?);
    let state = match b[1] {
        1 => State::Bound { expires: t },
        2 => State::Free,
        3 => State::Declined { until: t },
        _ => return None,
    };
    let mut i = 16;
    let key_len = if b[0] == 1 {
        i += 1;
        usize::from(b[16])
    } else {
        i += 2;
        usize::from(u16::from_be_bytes(b.get(16..18)?.try_into().ok()?))
    };
    let client = ClientKey(b.get(i..i + key_len)?.to_vec());
    i += key_len;
    let mut field = || -> Option<&[u8]> {
        let n = *b.get(i)? as usize;
        let f = b.get(i + 1..i + 1 + n)?;
        i += 1 + n;
        Some(f)
    };
    let text =
        |v: &[u8]| (!v.is_empty()).then(|| cap_text(&String::from_utf8_lossy(v)).to_string());
    let hostname = text(field()?);
    let vendor_class = text(field()?);
    Some(Lease {
        ip,
        client,
        mac,
        hostname,
        vendor_class,
        state,
    })
}

/// Which journal format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `PBXLEAS1`: the checksum covers the payload only.
    V1,
    /// `PBXLEAS2`: the checksum covers the file's salt, the length and the payload.
    V2([u8; SALT_LEN]),
}

impl Format {
    fn header_len(self) -> usize {
        match self {
            Format::V1 => MAGIC_V1.len(),
            Format::V2(_) => HEADER_LEN,
        }
    }

    fn check(self, len: [u8; 4], payload: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        if let Format::V2(salt) = self {
            h.update(&salt);
            h.update(&len);
        }
        h.update(payload);
        h.finalize()
    }
}

/// What a journal file holds.
#[derive(Debug)]
pub struct Contents {
    format: Format,
    /// Live records: address → lease record bytes.
    live: HashMap<u32, Vec<u8>>,
    /// Records read.
    pub records: usize,
    /// Length of the whole records (where the next one goes).
    pub good_len: u64,
    /// Bytes after the last whole record: a write torn by a crash.
    pub torn: u64,
    /// Bytes skipped between whole records: damage on disk (not from a crash).
    pub damaged: u64,
}

impl Contents {
    /// The leases, and how many records did not decode.
    pub fn leases(&self) -> (Vec<Lease>, usize) {
        let mut out = Vec::with_capacity(self.live.len());
        let mut bad = 0;
        for (ip, rec) in &self.live {
            match decode(Ipv4Addr::from(*ip), rec) {
                Some(l) => out.push(l),
                None => bad += 1,
            }
        }
        (out, bad)
    }

    /// Whether the file is in the old format (`PBXLEAS1`).
    pub fn is_old_format(&self) -> bool {
        self.format == Format::V1
    }

    /// The journal rewritten (as compaction writes it) with `salt`: one record per
    /// readable lease, in the current format.
    pub fn rewritten(&self, salt: [u8; SALT_LEN]) -> Vec<u8> {
        image(salt, &normalised(&self.live))
    }
}

/// Live records re-encoded in the current format; unreadable ones left out.
fn normalised(live: &HashMap<u32, Vec<u8>>) -> HashMap<u32, Vec<u8>> {
    live.iter()
        .filter_map(|(ip, rec)| {
            let v = encode(&decode(Ipv4Addr::from(*ip), rec)?)?;
            Some((*ip, v))
        })
        .collect()
}

/// A whole journal file holding `live`.
fn image(salt: [u8; SALT_LEN], live: &HashMap<u32, Vec<u8>>) -> Vec<u8> {
    let format = Format::V2(salt);
    let mut buf = Vec::with_capacity(HEADER_LEN + live.len() * 64);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&salt);
    for (ip, v) in live {
        push_record(&mut buf, format, PUT, Ipv4Addr::from(*ip), v);
    }
    buf
}

/// Parse journal bytes (what recovery at start sees). Errors when it is not a journal.
pub fn parse_bytes(bytes: &[u8]) -> Result<Contents> {
    let format = if bytes.starts_with(MAGIC) && bytes.len() >= HEADER_LEN {
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&bytes[MAGIC.len()..HEADER_LEN]);
        Format::V2(salt)
    } else if bytes.starts_with(MAGIC_V1) {
        Format::V1
    } else {
        bail!(
            "it does not start with {:?}",
            std::str::from_utf8(MAGIC).unwrap_or_default()
        );
    };
    let mut c = Contents {
        format,
        live: HashMap::new(),
        records: 0,
        good_len: 0,
        torn: 0,
        damaged: 0,
    };
    let mut at = format.header_len();
    while at < bytes.len() {
        let Some((len, payload)) = next_record(format, &bytes[at..]) else {
            match resume_at(format, bytes, at) {
                Some(k) => {
                    c.damaged += (k - at) as u64;
                    at = k;
                    continue;
                }
                // Nothing intact follows: the torn tail of a crash.
                None => break,
            }
        };
        let ip = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
        match payload[0] {
            PUT => {
                c.live.insert(ip, payload[5..].to_vec());
            }
            _ => {
                c.live.remove(&ip);
            }
        }
        c.records += 1;
        at += len;
    }
    c.good_len = at as u64;
    c.torn = (bytes.len() - at) as u64;
    Ok(c)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Contents> {
    parse_bytes(bytes).with_context(|| {
        format!(
            "{} is not a provbox lease journal; move it away",
            path.display()
        )
    })
}

/// Where recovery resumes after the damaged record at `at`: right after it when its length
/// leads to an intact record (the boundary is known: nothing inside it is looked at), else
/// the next intact record further on. `None`: nothing intact follows.
fn resume_at(format: Format, bytes: &[u8], at: usize) -> Option<usize> {
    if let Some(len) = plausible_len(&bytes[at..]) {
        let next = at + 8 + len;
        if next < bytes.len() && next_record(format, &bytes[next..]).is_some() {
            return Some(next);
        }
    }
    // The length itself is damaged. In the current format only a record checked with this
    // file's salt counts, which bytes a client put in a hostname cannot be.
    (at + 1..bytes.len()).find(|&k| next_record(format, &bytes[k..]).is_some())
}

fn plausible_len(b: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    (5..=MAX_RECORD).contains(&len).then_some(len)
}

/// The next whole, intact record in `b`: (its length on disk, its payload).
fn next_record(format: Format, b: &[u8]) -> Option<(usize, &[u8])> {
    let len = plausible_len(b)?;
    let payload = b.get(8..8 + len)?;
    if !matches!(payload[0], PUT | DELETE) {
        return None;
    }
    let crc = u32::from_be_bytes(b[4..8].try_into().ok()?);
    if format.check(b[0..4].try_into().ok()?, payload) != crc {
        return None;
    }
    Some((8 + len, payload))
}

fn push_record(buf: &mut Vec<u8>, format: Format, op: u8, ip: Ipv4Addr, value: &[u8]) {
    let mut payload = Vec::with_capacity(5 + value.len());
    payload.push(op);
    payload.extend_from_slice(&u32::from(ip).to_be_bytes());
    payload.extend_from_slice(value);
    let len = (payload.len() as u32).to_be_bytes();
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&format.check(len, &payload).to_be_bytes());
    buf.extend_from_slice(&payload);
}

/// Read a journal without changing it (`provbox leases`, also while provbox runs: a
/// record being written is seen as a torn tail and left out).
pub fn read(path: &Path) -> Result<Contents> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(path, &bytes)
}

fn new_salt() -> Result<[u8; SALT_LEN]> {
    let mut salt = [0; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no random salt: {e}"))?;
    Ok(salt)
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The open journal: the server's only writer.
pub struct Journal {
    path: PathBuf,
    file: File,
    salt: [u8; SALT_LEN],
    /// Where the next record goes (everything before it is synced).
    len: u64,
    records: usize,
    live: HashMap<u32, Vec<u8>>,
    /// A sync failed: nothing counts as durable until the whole journal is rewritten.
    degraded: bool,
    /// Test seam: the coming syncs, in order, fail (`true`, EIO) or run (`false`).
    #[cfg(test)]
    pub(crate) sync_faults: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<bool>>>,
}

impl Journal {
    /// Open (or create) the journal under `data_dir`, cutting off a torn last record.
    /// Returns the journal and its leases, with the count of records that did not decode.
    pub fn open(data_dir: &Path) -> Result<(Journal, Vec<Lease>, usize)> {
        Self::open_file(data_dir.join(FILE_NAME))
    }

    /// [`Journal::open`] for a journal under another name (the shared store's outage
    /// spool, [`SPOOL_FILE_NAME`]).
    pub fn open_file(path: std::path::PathBuf) -> Result<(Journal, Vec<Lease>, usize)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lease journal {}", path.display()))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        // Empty, or a header torn while the file was being created (no record yet).
        let n = bytes.len().min(MAGIC.len());
        if bytes.len() < HEADER_LEN && bytes[..n] == MAGIC[..n] {
            bytes.clear();
            file.set_len(0)
                .with_context(|| format!("truncating {}", path.display()))?;
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&new_salt()?);
            file.write_all_at(&bytes, 0)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            File::open(dir_of(&path))
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing the directory of {}", path.display()))?;
        }
        let c = parse(&path, &bytes)?;
        let salt = match c.format {
            Format::V2(salt) => salt,
            Format::V1 => new_salt()?,
        };
        if c.torn > 0 && !c.is_old_format() {
            tracing::warn!(
                path = %path.display(),
                bytes = c.torn,
                "dhcp: lease journal ends in a torn record (a crash mid-write; its reply never left): cut off"
            );
            file.set_len(c.good_len)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("truncating {}", path.display()))?;
        }
        let (leases, bad) = c.leases();
        let mut j = Journal {
            path,
            file,
            salt,
            len: c.good_len,
            records: c.records,
            live: normalised(&c.live),
            degraded: false,
            #[cfg(test)]
            sync_faults: Default::default(),
        };
        if c.is_old_format() {
            tracing::info!(
                path = %j.path.display(),
                leases = j.live.len(),
                "dhcp: lease journal in the old format (PBXLEAS1): rewriting it as PBXLEAS2"
            );
            j.compact()?;
        } else if c.damaged > 0 {
            tracing::error!(
                path = %j.path.display(),
                bytes = c.damaged,
                "dhcp: lease journal damaged on disk; the records around the damage were kept, \
                 the damaged ones are lost; rewriting it"
            );
            j.compact()?;
        }
        Ok((j, leases, bad))
    }

    /// Whether a sync failed and no rewrite has succeeded since: replies must wait.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    fn sync(&self, f: &File, data_only: bool) -> std::io::Result<()> {
        #[cfg(test)]
        if self.sync_faults.lock().unwrap().pop_front() == Some(true) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        if data_only {
            f.sync_data()
        } else {
            f.sync_all()
        }
    }

    /// Write `changes` and sync them: when this returns Ok they survive a crash or power
    /// loss. On error nothing counts as written, and the journal is degraded until a
    /// later commit has rewritten and synced all of it.
    pub fn commit(&mut self, changes: &[Change]) -> Result<()> {
        let format = Format::V2(self.salt);
        let mut buf = Vec::with_capacity(changes.len() * 64);
        let mut staged = Vec::with_capacity(changes.len());
        for c in changes {
            match c {
                Change::Put(l) => {
                    if let Some(v) = encode(l) {
                        push_record(&mut buf, format, PUT, l.ip, &v);
                        staged.push((u32::from(l.ip), Some(v)));
                    }
                }
                Change::Delete(ip) => {
                    push_record(&mut buf, format, DELETE, *ip, &[]);
                    staged.push((u32::from(*ip), None));
                }
            }
        }
        if self.degraded {
            // What the failed sync left behind is unknown: write everything again.
            let mut live = self.live.clone();
            apply(&mut live, staged);
            self.rewrite(live)?;
            tracing::info!("dhcp: lease journal rewritten and synced; replies resume");
            return Ok(());
        }
        if buf.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all_at(&buf, self.len)
            .and_then(|()| self.sync(&self.file, true));
        if let Err(e) = written {
            // Best effort: leave no half batch for a restart to read.
            let _ = self.file.set_len(self.len);
            self.degraded = true;
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        self.len += buf.len() as u64;
        self.records += staged.len();
        apply(&mut self.live, staged);
        if self.records >= COMPACT_MIN
            && self.records > 4 * self.live.len()
            && let Err(e) = self.compact()
        {
            // This batch is synced in the old file and in the new one, whichever name the
            // directory keeps: its replies may leave. A failed directory sync degrades
            // the journal (see `rewrite`), so the next batch waits for a good one.
            tracing::warn!("dhcp: cannot compact the lease journal: {e:#}");
        }
        Ok(())
    }

    /// Empty the journal (rewritten with no record): what it held is stored elsewhere now.
    pub fn clear(&mut self) -> Result<()> {
        if self.live.is_empty() && self.records == 0 {
            return Ok(());
        }
        self.rewrite(HashMap::new())
    }

    /// Rewrite the journal as one record per live lease.
    fn compact(&mut self) -> Result<()> {
        self.rewrite(self.live.clone())
    }

    /// Replace the journal with one holding `live` (new file, new salt, sync, rename, sync
    /// the directory). On success the journal is no longer degraded; a failure once the new
    /// file is in place (the directory sync) leaves it degraded.
    fn rewrite(&mut self, live: HashMap<u32, Vec<u8>>) -> Result<()> {
        let tmp = self.path.with_extension("journal.new");
        let salt = new_salt()?;
        let buf = image(salt, &live);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&buf)
            .and_then(|()| self.sync(&file, false))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} over {}", tmp.display(), self.path.display()))?;
        // From the rename on, the new file is the journal: append there even if the
        // directory sync below fails.
        tracing::info!(
            records = self.records,
            leases = live.len(),
            "dhcp: lease journal rewritten"
        );
        self.file = file;
        self.salt = salt;
        self.len = buf.len() as u64;
        self.records = live.len();
        self.live = live;
        let dir = dir_of(&self.path);
        let synced = File::open(dir).and_then(|d| self.sync(&d, false));
        self.degraded = synced.is_err();
        synced.with_context(|| format!("syncing the directory {}", dir.display()))
    }
}

fn apply(live: &mut HashMap<u32, Vec<u8>>, staged: Vec<(u32, Option<Vec<u8>>)>) {
    for (ip, v) in staged {
        match v {
            Some(v) => live.insert(ip, v),
            None => live.remove(&ip),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: &str, state: State) -> Lease {
        let mac = Mac([0, 0x0e, 8, 1, 2, 3]);
        Lease {
            ip: ip.parse().unwrap(),
            client: ClientKey::new(Some(&[1, 0, 0x0e, 8, 1, 2, 3]), &mac),
            mac,
            hostname: Some("phone-57".into()),
            vendor_class: Some("CP-8831-3PCC".into()),
            state,
        }
    }

    fn bound(ip: &str) -> Lease {
        lease(
            ip,
            State::Bound {
                expires: 1_900_000_000,
            },
        )
    }

    fn sorted(mut v: Vec<Lease>) -> Vec<Lease> {
        v.sort_by_key(|l| l.ip);
        v
    }

    /// A journal in a new folder after `commits` (each puts its leases in one commit),
    /// closed again; the folder and the journal file.
    fn journal_after(commits: &[&[&Lease]]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _, _) = Journal::open(dir.path()).unwrap();
        for puts in commits {
            let changes: Vec<Change> = puts.iter().map(|l| Change::Put((*l).clone())).collect();
            j.commit(&changes).unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        (dir, path)
    }

    /// Commits `l` through `j`, closes the journal and reads it back, sorted.
    fn put_and_reopen(mut j: Journal, dir: &Path, l: &Lease) -> Vec<Lease> {
        j.commit(&[Change::Put(l.clone())]).unwrap();
        drop(j);
        sorted(Journal::open(dir).unwrap().1)
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let l = bound("198.18.0.57");
        let d = Lease {
            hostname: None,
            vendor_class: None,
            ..lease("198.18.0.58", State::Declined { until: 5 })
        };
        {
            let (mut j, none, _) = Journal::open(dir.path()).unwrap();
            assert!(none.is_empty());
            j.commit(&[Change::Put(l.clone()), Change::Put(d.clone())])
                .unwrap();
            j.commit(&[Change::Delete(d.ip)]).unwrap();
        }
        let (_, all, bad) = Journal::open(dir.path()).unwrap();
        assert_eq!((all, bad), (vec![l.clone()], 0));
        let c = read(&dir.path().join(FILE_NAME)).unwrap();
        assert_eq!((c.records, c.torn), (3, 0));
        assert!(decode(d.ip, &[1, 9]).is_none());
    }

    #[test]
    fn torn_tail_is_cut_and_later_commits_read_back() {
        let a = bound("198.18.0.10");
        let b = bound("198.18.0.11");
        let c = lease("198.18.0.12", State::Free);
        let (dir, path) = journal_after(&[&[&a, &b]]);
        // A crash in the middle of the second record: keep only part of it.
        let full = std::fs::read(&path).unwrap();
        let cut = full.len() - 7;
        std::fs::write(&path, &full[..cut]).unwrap();
        let record = (full.len() - HEADER_LEN) / 2; // a and b encode to the same size
        assert_eq!(read(&path).unwrap().torn, (record - 7) as u64);
        let (j, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(got, vec![a.clone()]);
        assert_eq!(read(&path).unwrap().torn, 0, "the torn record is cut off");
        assert_eq!(put_and_reopen(j, dir.path(), &c), vec![a, c]);
    }

    #[test]
    fn damage_mid_file_loses_only_the_damaged_record() {
        let a = bound("198.18.0.10");
        let b = bound("198.18.0.11");
        let c = bound("198.18.0.12");
        let (dir, path) = journal_after(&[&[&a], &[&b], &[&c]]);
        let mut bytes = std::fs::read(&path).unwrap();
        let record = (bytes.len() - HEADER_LEN) / 3;
        bytes[HEADER_LEN + record + 12] ^= 0x40; // inside b
        std::fs::write(&path, &bytes).unwrap();
        let seen = read(&path).unwrap();
        assert_eq!(
            (seen.records, seen.damaged, seen.torn),
            (2, record as u64, 0)
        );
        let (_, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(sorted(got), vec![a.clone(), c.clone()]);
        // Rewritten at open: the damage is gone from the file.
        let after = read(&path).unwrap();
        assert_eq!((after.records, after.damaged), (2, 0));
    }

    #[test]
    fn a_foreign_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"198.18.0.5 02:00:00:00:00:01\n").unwrap();
        let e = Journal::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("not a provbox lease journal"), "{e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"198.18.0.5 02:00:00:00:00:01\n"
        );
    }

    #[test]
    fn compaction_keeps_exactly_the_live_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let keep = bound("198.18.1.1");
        let (mut j, _, _) = Journal::open(dir.path()).unwrap();
        j.commit(&[Change::Put(keep.clone())]).unwrap();
        // Churn one address until the journal is long enough to compact.
        for i in 0..COMPACT_MIN as u64 {
            let l = lease(
                "198.18.2.2",
                State::Bound {
                    expires: 1_900_000_000 + i,
                },
            );
            j.commit(&[Change::Put(l)]).unwrap();
        }
        j.commit(&[Change::Delete("198.18.2.2".parse().unwrap())])
            .unwrap();
        let c = read(&path).unwrap();
        assert!(c.records < 10, "compacted to {} records", c.records);
        drop(j);
        let (j, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(got, vec![keep.clone()]);
        let more = lease("198.18.3.3", State::Free);
        assert_eq!(put_and_reopen(j, dir.path(), &more), vec![keep, more]);
        assert!(!path.with_extension("journal.new").exists());
    }

    /// A record for `ip` as a client could put it in its hostname: all ASCII (it survives
    /// the engine's lossy UTF-8), checksummed without the file's salt (`None`: the old
    /// format's CRC of the payload; `Some`: a guessed salt).
    fn forge(ip: Ipv4Addr, salt: Option<[u8; 8]>) -> Vec<u8> {
        for n in 0u32.. {
            let mut lease = vec![1, 1];
            lease.extend_from_slice(b"EVIL01");
            let digits = format!("{n:08}");
            lease.extend_from_slice(digits.as_bytes());
            lease.push(7);
            lease.extend_from_slice(b"mEVIL01");
            lease.extend_from_slice(&[0, 0]);
            let mut payload = vec![1];
            payload.extend_from_slice(&ip.octets());
            payload.extend_from_slice(&lease);
            let len = (payload.len() as u32).to_be_bytes();
            let mut h = crc32fast::Hasher::new();
            if let Some(salt) = salt {
                h.update(&salt);
                h.update(&len);
            }
            h.update(&payload);
            let mut rec = len.to_vec();
            rec.extend_from_slice(&h.finalize().to_be_bytes());
            rec.extend_from_slice(&payload);
            if rec.is_ascii() {
                return rec;
            }
        }
        unreachable!()
    }

    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle)
            .expect("present")
    }

    #[test]
    fn a_record_forged_inside_a_hostname_is_never_recovered() {
        let target: Ipv4Addr = "10.1.2.66".parse().unwrap();
        let mut forged = forge(target, None);
        forged.extend_from_slice(&forge(target, Some([0; 8])));
        let hostname = String::from_utf8(forged.clone()).unwrap();
        // Damage to the record holding the hostname: in its payload (its length still
        // leads to the next record), or in its length (recovery must search).
        for damage in ["payload", "length"] {
            let a = Lease {
                hostname: Some(hostname.clone()),
                ..bound("198.18.0.10")
            };
            let b = bound("198.18.0.11");
            let (dir, path) = journal_after(&[&[&a], &[&b]]);
            let mut bytes = std::fs::read(&path).unwrap();
            let host = find(&bytes, &forged);
            if damage == "payload" {
                bytes[host - 2] ^= 0x01; // the client key, just before the hostname
            } else {
                let first = if bytes.starts_with(b"PBXLEAS1") {
                    8
                } else {
                    16
                };
                bytes[first + 1] ^= 0x55;
            }
            std::fs::write(&path, &bytes).unwrap();
            let (_, got, _) = Journal::open(dir.path()).unwrap();
            assert!(
                got.iter().all(|l| l.ip != target),
                "{damage}: the forged lease was recovered: {got:?}"
            );
            assert_eq!(
                got,
                vec![b],
                "{damage}: the record after the damage is kept"
            );
        }
    }

    #[test]
    fn an_old_journal_is_read_and_rewritten_in_the_new_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let a = bound("198.18.0.10");
        let b = bound("198.18.0.11");
        // PBXLEAS1 by hand: CRC of the payload alone, lease records of version 1.
        let v1 = |l: &Lease| {
            let mut v = vec![1, 1];
            v.extend_from_slice(&l.mac.0);
            v.extend_from_slice(&1_900_000_000u64.to_be_bytes());
            for f in [
                l.client.0.as_slice(),
                l.hostname.as_deref().unwrap_or("").as_bytes(),
                l.vendor_class.as_deref().unwrap_or("").as_bytes(),
            ] {
                v.push(f.len() as u8);
                v.extend_from_slice(f);
            }
            v
        };
        let mut old = b"PBXLEAS1".to_vec();
        push_record(&mut old, Format::V1, PUT, a.ip, &v1(&a));
        push_record(&mut old, Format::V1, PUT, b.ip, &v1(&b));
        push_record(&mut old, Format::V1, DELETE, b.ip, &[]);
        std::fs::write(&path, &old).unwrap();
        assert!(read(&path).unwrap().is_old_format());
        let (j, got, bad) = Journal::open(dir.path()).unwrap();
        assert_eq!((got, bad), (vec![a.clone()], 0));
        let now = std::fs::read(&path).unwrap();
        assert!(now.starts_with(MAGIC), "rewritten as PBXLEAS2");
        assert_eq!(put_and_reopen(j, dir.path(), &b), vec![a, b]);
    }

    #[test]
    fn long_and_odd_hostnames_read_back_as_served() {
        let odd = String::from_utf8_lossy(&[0xff; 200]).into_owned(); // 600 bytes of U+FFFD
        for h in ["é".repeat(200), "x".repeat(300), odd] {
            let l = Lease {
                hostname: Some(cap_text(&h).to_string()),
                vendor_class: Some(h.clone()),
                ..bound("198.18.0.9")
            };
            let back = decode(l.ip, &encode(&l).unwrap()).unwrap();
            assert_eq!(back.hostname, l.hostname);
            assert_eq!(back.vendor_class.as_deref(), Some(cap_text(&h)));
            assert!(cap_text(&h).len() <= MAX_TEXT && cap_text(&h).len() >= MAX_TEXT - 3);
        }
        // A client identifier longer than 255 bytes (RFC 3396) keeps all of its bytes.
        let mac = Mac([2, 0, 0, 0, 0, 9]);
        let l = Lease {
            client: ClientKey::new(Some(&[7; 400]), &mac),
            ..bound("198.18.0.9")
        };
        assert_eq!(decode(l.ip, &encode(&l).unwrap()), Some(l));
    }

    #[test]
    fn a_failed_sync_degrades_until_a_rewrite_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _, _) = Journal::open(dir.path()).unwrap();
        let faults = j.sync_faults.clone();
        let (a, b, c) = (
            bound("198.18.0.10"),
            bound("198.18.0.11"),
            bound("198.18.0.12"),
        );
        j.commit(&[Change::Put(a.clone())]).unwrap();
        // The fdatasync of an append fails.
        faults.lock().unwrap().push_back(true);
        assert!(j.commit(&[Change::Put(b.clone())]).is_err());
        assert!(j.degraded());
        // The rewrite's file syncs, its directory sync fails: still degraded.
        faults.lock().unwrap().extend([false, true]);
        assert!(j.commit(&[Change::Put(b.clone())]).is_err());
        assert!(j.degraded());
        // Everything syncs: whole again, and later appends are plain appends.
        assert!(j.commit(&[Change::Put(b.clone())]).is_ok());
        assert!(!j.degraded());
        j.commit(&[Change::Put(c.clone())]).unwrap();
        drop(j);
        let (_, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(sorted(got), vec![a, b, c]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A journal holding `n` leases, one record each; the offsets where each starts.
        fn journal(n: usize) -> (tempfile::TempDir, Vec<Lease>, Vec<usize>) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            let (mut j, _, _) = Journal::open(dir.path()).unwrap();
            let mut leases = Vec::new();
            let mut starts = Vec::new();
            for i in 0..n {
                starts.push(std::fs::metadata(&path).unwrap().len() as usize);
                let l = Lease {
                    hostname: Some(format!("phone-{}", "x".repeat(i * 7 % 40))),
                    ..bound(&format!("198.18.0.{}", 10 + i))
                };
                j.commit(&[Change::Put(l.clone())]).unwrap();
                leases.push(l);
            }
            starts.push(std::fs::metadata(&path).unwrap().len() as usize);
            (dir, leases, starts)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// A crash can cut the file anywhere after its header: the whole records
            /// before the cut come back, and the journal takes new records.
            #[test]
            fn a_cut_anywhere_keeps_the_whole_records_before_it(n in 1usize..6, cut in 0.0f64..1.0) {
                let (dir, leases, starts) = journal(n);
                let path = dir.path().join(FILE_NAME);
                let bytes = std::fs::read(&path).unwrap();
                let at = HEADER_LEN + ((bytes.len() - HEADER_LEN) as f64 * cut) as usize;
                std::fs::write(&path, &bytes[..at]).unwrap();
                let whole = starts[1..].iter().filter(|&&e| e <= at).count();
                let (mut j, got, bad) = Journal::open(dir.path()).unwrap();
                prop_assert_eq!(bad, 0);
                prop_assert_eq!(sorted(got), leases[..whole].to_vec());
                let more = bound("198.18.1.1");
                j.commit(&[Change::Put(more.clone())]).unwrap();
                drop(j);
                let (_, got, _) = Journal::open(dir.path()).unwrap();
                prop_assert_eq!(got.len(), whole + 1);
            }

            /// A flipped byte loses the record it hit (and, when it hit a length, maybe
            /// the ones that length now spans), never invents one, never fails the open.
            #[test]
            fn a_flipped_byte_loses_only_the_record_it_hit(n in 1usize..6, pos in 0.0f64..1.0, bit in 0u8..8) {
                let (dir, leases, starts) = journal(n);
                let path = dir.path().join(FILE_NAME);
                let mut bytes = std::fs::read(&path).unwrap();
                let at = HEADER_LEN + ((bytes.len() - HEADER_LEN - 1) as f64 * pos) as usize;
                bytes[at] ^= 1 << bit;
                std::fs::write(&path, &bytes).unwrap();
                let hit = starts.iter().rposition(|&s| s <= at).unwrap();
                let in_length = at - starts[hit] < 4;
                let (_, got, bad) = Journal::open(dir.path()).unwrap();
                prop_assert_eq!(bad, 0);
                let got = sorted(got);
                for l in &got {
                    prop_assert!(leases.contains(l), "invented {:?}", l);
                }
                prop_assert!(!got.contains(&leases[hit]));
                for (i, l) in leases.iter().enumerate() {
                    if i < hit || (i > hit && !in_length) {
                        prop_assert!(got.contains(l), "lost record {} (hit {}, at {})", i, hit, at);
                    }
                }
            }

            /// Any bytes after a valid header: the open succeeds or refuses, never panics,
            /// and a rewrite of what was read reads back the same.
            #[test]
            fn arbitrary_bytes_recover_to_a_stable_rewrite(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
                let mut bytes = MAGIC.to_vec();
                bytes.extend_from_slice(&[3; 8]);
                bytes.extend_from_slice(&tail);
                let c = parse_bytes(&bytes).unwrap();
                let again = parse_bytes(&c.rewritten([9; 8])).unwrap();
                let (a, _) = c.leases();
                let (b, bad) = again.leases();
                prop_assert_eq!(bad, 0);
                prop_assert_eq!(sorted(a), sorted(b));
            }
        }
    }
}
