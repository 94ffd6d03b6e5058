//! Durable leases in the shared redb store (`data_dir/provbox.redb`).
//!
//! Table `dhcp_leases_v1`: key = the IPv4 address as a big-endian `u32`; value = a binary
//! record (all integers big-endian):
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
//! Offers are not stored: a crash between OFFER and REQUEST only makes the client ask
//! again. Every ACK is committed (fsync) before it is sent, so a client never holds an
//! address the store does not know about.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::devices::Mac;

use super::leases::{ClientKey, Lease, State};

pub const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("dhcp_leases_v1");

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

/// Every stored lease (records that do not decode are skipped and counted).
pub fn load(db: &impl ReadableDatabase) -> Result<(Vec<Lease>, usize)> {
    let txn = db.begin_read().context("reading the lease table")?;
    let table = match txn.open_table(LEASES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).context("opening the lease table"),
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for row in table.iter()? {
        let (k, v) = row?;
        match decode(Ipv4Addr::from(k.value()), v.value()) {
            Some(l) => out.push(l),
            None => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Apply changes in one durable transaction (fsync before returning).
pub fn commit(db: &redb::Database, changes: &[Change]) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut t = txn.open_table(LEASES)?;
        for c in changes {
            match c {
                Change::Put(l) => {
                    if let Some(v) = encode(l) {
                        t.insert(u32::from(l.ip), v.as_slice())?;
                    }
                }
                Change::Delete(ip) => {
                    t.remove(u32::from(*ip))?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let mac = Mac([0, 0x0e, 8, 1, 2, 3]);
        let l = Lease {
            ip: "198.18.0.57".parse().unwrap(),
            client: ClientKey::new(Some(&[1, 0, 0x0e, 8, 1, 2, 3]), &mac),
            mac,
            hostname: Some("phone-57".into()),
            vendor_class: Some("CP-8831-3PCC".into()),
            state: State::Bound {
                expires: 1_900_000_000,
            },
        };
        let d = Lease {
            ip: "198.18.0.58".parse().unwrap(),
            hostname: None,
            vendor_class: None,
            state: State::Declined { until: 5 },
            ..l.clone()
        };
        {
            let db = redb::Database::create(&path).unwrap();
            commit(&db, &[Change::Put(l.clone()), Change::Put(d.clone())]).unwrap();
            commit(&db, &[Change::Delete(d.ip)]).unwrap();
        }
        let db = redb::ReadOnlyDatabase::open(&path).unwrap();
        let (all, bad) = load(&db).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(all, vec![l]);
        assert!(decode(d.ip, &[1, 9]).is_none());
    }
}
