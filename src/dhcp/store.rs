//! Durable leases: an append-only journal, `data_dir/dhcp-leases.journal`.
//!
//! Why not a table in the redb store (where leases lived at first): a redb commit rewrites
//! B-tree pages, checksums and allocator state, and measured as ~40% of provbox's CPU
//! under a lease storm. An append of a few dozen bytes and one `fdatasync` per group
//! commit gives the same guarantee for a fraction of the work, and the file can be read
//! while provbox runs (`provbox leases`). ISC dhcpd and Kea's memfile keep leases the same
//! way; provbox adds a checksum per record and syncs before every ACK.
//!
//! File layout: the 8-byte magic `PBXLEAS1`, then records:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | payload length, big-endian `u32` |
//! | 4 | CRC-32 (IEEE) of the payload, big-endian |
//! | 1 | operation: 1 put, 2 delete |
//! | 4 | the IPv4 address |
//! | rest | (put only) the lease record below |
//!
//! Lease record (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, 1 |
//! | 1 | state: 1 bound, 2 free (released/expired, remembered), 3 declined |
//! | 6 | MAC |
//! | 8 | `expires` (bound) or `until` (declined), Unix seconds; 0 for free |
//! | 1 + n | client key: length, then `m`+MAC or `i`+client identifier (option 61) |
//! | 1 + n | hostname (option 12 or reservation), UTF-8, length 0 = none |
//! | 1 + n | vendor class (option 60), UTF-8 lossy, length 0 = none |
//!
//! Replaying the records in order gives the table. A crash can only tear the last record
//! (its ACK never left): at start the journal is cut back to its last whole record. When
//! the journal holds four times more records than live leases, it is rewritten as one
//! record per lease (new file, sync, rename, sync the directory), so it stays small.
//!
//! Offers are not stored: a crash between OFFER and REQUEST only makes the client ask
//! again. Every ACK is written and synced before it is sent, so a client never holds an
//! address the journal does not know about.

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
const MAGIC: &[u8; 8] = b"PBXLEAS1";
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// A record longer than this is not one we wrote (the fields are capped at 255 bytes).
const MAX_RECORD: usize = 4096;
/// Compact when the journal holds this many records and four times more than live leases.
const COMPACT_MIN: usize = 4096;

/// One change to write.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Lease),
    Delete(Ipv4Addr),
}

fn short(b: &[u8]) -> &[u8] {
    &b[..b.len().min(255)]
}

pub fn encode(l: &Lease) -> Option<Vec<u8>> {
    let (state, t) = match l.state {
        State::Bound { expires } => (1u8, expires),
        State::Free => (2, 0),
        State::Declined { until } => (3, until),
        State::Offered { .. } => return None,
    };
    let mut v = Vec::with_capacity(48);
    v.push(1);
    v.push(state);
    v.extend_from_slice(&l.mac.0);
    v.extend_from_slice(&t.to_be_bytes());
    for field in [
        l.client.0.as_slice(),
        l.hostname.as_deref().unwrap_or("").as_bytes(),
        l.vendor_class.as_deref().unwrap_or("").as_bytes(),
    ] {
        let f = short(field);
        v.push(f.len() as u8);
        v.extend_from_slice(f);
    }
    Some(v)
}

pub fn decode(ip: Ipv4Addr, b: &[u8]) -> Option<Lease> {
    if b.len() < 16 || b[0] != 1 {
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
    let mut field = || -> Option<Vec<u8>> {
        let n = *b.get(i)? as usize;
        let f = b.get(i + 1..i + 1 + n)?.to_vec();
        i += 1 + n;
        Some(f)
    };
    let client = ClientKey(field()?);
    let text = |v: Vec<u8>| (!v.is_empty()).then(|| String::from_utf8_lossy(&v).into_owned());
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

/// What a journal file holds.
#[derive(Debug, Default)]
pub struct Contents {
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
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Contents> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        bail!(
            "{} is not a provbox lease journal (it does not start with {:?}); move it away",
            path.display(),
            std::str::from_utf8(MAGIC).unwrap_or_default()
        );
    }
    let mut c = Contents::default();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let Some((len, payload)) = next_record(&bytes[at..]) else {
            // Not a record here: damage if an intact record follows (skip to it and lose
            // only what is damaged), else the torn tail of a crash.
            match (at + 1..bytes.len()).find(|&k| next_record(&bytes[k..]).is_some()) {
                Some(k) => {
                    c.damaged += (k - at) as u64;
                    at = k;
                    continue;
                }
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

/// The next whole, intact record in `b`: (its length on disk, its payload).
fn next_record(b: &[u8]) -> Option<(usize, &[u8])> {
    let len = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
    if !(5..=MAX_RECORD).contains(&len) {
        return None;
    }
    let payload = b.get(8..8 + len)?;
    if crc32fast::hash(payload) != crc || !matches!(payload[0], PUT | DELETE) {
        return None;
    }
    Some((8 + len, payload))
}

fn push_record(buf: &mut Vec<u8>, op: u8, ip: Ipv4Addr, value: &[u8]) {
    let mut payload = Vec::with_capacity(5 + value.len());
    payload.push(op);
    payload.extend_from_slice(&u32::from(ip).to_be_bytes());
    payload.extend_from_slice(value);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    buf.extend_from_slice(&payload);
}

/// Read a journal without changing it (`provbox leases`, also while provbox runs: a
/// record being written is seen as a torn tail and left out).
pub fn read(path: &Path) -> Result<Contents> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(path, &bytes)
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

/// The open journal: the server's only writer.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Where the next record goes (everything before it is synced).
    len: u64,
    records: usize,
    live: HashMap<u32, Vec<u8>>,
}

impl Journal {
    /// Open (or create) the journal under `data_dir`, cutting off a torn last record.
    /// Returns the journal and its leases, with the count of records that did not decode.
    pub fn open(data_dir: &Path) -> Result<(Journal, Vec<Lease>, usize)> {
        let path = data_dir.join(FILE_NAME);
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
        if bytes.is_empty() {
            (&file)
                .write_all(MAGIC)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            sync_dir(&path)?;
            bytes.extend_from_slice(MAGIC);
        }
        let c = parse(&path, &bytes)?;
        if c.torn > 0 {
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
            len: c.good_len,
            records: c.records,
            live: c.live,
        };
        if c.damaged > 0 {
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

    /// Write `changes` and sync them: when this returns Ok they survive a crash or power
    /// loss. On error nothing counts as written (the next commit overwrites the tail).
    pub fn commit(&mut self, changes: &[Change]) -> Result<()> {
        let mut buf = Vec::with_capacity(changes.len() * 64);
        let mut staged = Vec::with_capacity(changes.len());
        for c in changes {
            match c {
                Change::Put(l) => {
                    if let Some(v) = encode(l) {
                        push_record(&mut buf, PUT, l.ip, &v);
                        staged.push((u32::from(l.ip), Some(v)));
                    }
                }
                Change::Delete(ip) => {
                    push_record(&mut buf, DELETE, *ip, &[]);
                    staged.push((u32::from(*ip), None));
                }
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all_at(&buf, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Best effort: leave no half batch for a restart to read.
            let _ = self.file.set_len(self.len);
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        self.len += buf.len() as u64;
        self.records += staged.len();
        for (ip, v) in staged {
            match v {
                Some(v) => self.live.insert(ip, v),
                None => self.live.remove(&ip),
            };
        }
        if self.records >= COMPACT_MIN
            && self.records > 4 * self.live.len()
            && let Err(e) = self.compact()
        {
            // The long journal is still whole and synced: serving goes on.
            tracing::warn!("dhcp: cannot compact the lease journal: {e:#}");
        }
        Ok(())
    }

    /// Rewrite the journal as one record per live lease.
    fn compact(&mut self) -> Result<()> {
        let tmp = self.path.with_extension("journal.new");
        let mut buf = Vec::with_capacity(MAGIC.len() + self.live.len() * 64);
        buf.extend_from_slice(MAGIC);
        for (ip, v) in &self.live {
            push_record(&mut buf, PUT, Ipv4Addr::from(*ip), v);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&buf)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} over {}", tmp.display(), self.path.display()))?;
        // From the rename on, the new file is the journal: append there even if the
        // directory sync below fails.
        tracing::info!(
            records = self.records,
            leases = self.live.len(),
            "dhcp: lease journal compacted"
        );
        self.file = file;
        self.len = buf.len() as u64;
        self.records = self.live.len();
        sync_dir(&self.path)
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let a = bound("198.18.0.10");
        let b = bound("198.18.0.11");
        let c = lease("198.18.0.12", State::Free);
        {
            let (mut j, _, _) = Journal::open(dir.path()).unwrap();
            j.commit(&[Change::Put(a.clone()), Change::Put(b.clone())])
                .unwrap();
        }
        // A crash in the middle of the second record: keep only part of it.
        let full = std::fs::read(&path).unwrap();
        let cut = full.len() - 7;
        std::fs::write(&path, &full[..cut]).unwrap();
        let record = (full.len() - MAGIC.len()) / 2; // a and b encode to the same size
        assert_eq!(read(&path).unwrap().torn, (record - 7) as u64);
        let (mut j, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(got, vec![a.clone()]);
        assert_eq!(read(&path).unwrap().torn, 0, "the torn record is cut off");
        j.commit(&[Change::Put(c.clone())]).unwrap();
        drop(j);
        let (_, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(sorted(got), vec![a, c]);
    }

    #[test]
    fn damage_mid_file_loses_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let a = bound("198.18.0.10");
        let b = bound("198.18.0.11");
        let c = bound("198.18.0.12");
        {
            let (mut j, _, _) = Journal::open(dir.path()).unwrap();
            for l in [&a, &b, &c] {
                j.commit(&[Change::Put(l.clone())]).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let record = (bytes.len() - MAGIC.len()) / 3;
        bytes[MAGIC.len() + record + 12] ^= 0x40; // inside b
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
        let (mut j, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(got, vec![keep.clone()]);
        let more = lease("198.18.3.3", State::Free);
        j.commit(&[Change::Put(more.clone())]).unwrap();
        drop(j);
        let (_, got, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(sorted(got), vec![keep, more]);
        assert!(!path.with_extension("journal.new").exists());
    }
}
