//! The lease table on the shared PostgreSQL store (`store.backend: postgres`): the SQL
//! half of `shared.rs`. Methods on the store's connection, kept beside the lease types
//! they read and write so the store itself knows nothing of DHCP.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::devices::Mac;
use crate::store::postgres::{Pg, chain, is_outage};

use super::leases::{ClientKey, Lease, State};
use super::store::{Change, cap_text};

fn row_lease(r: &tokio_postgres::Row) -> Option<Lease> {
    let ip: i64 = r.get("ip");
    let mac: Vec<u8> = r.get("mac");
    let expires: i64 = r.get("expires");
    let expires = expires.max(0) as u64;
    let state = match r.get::<_, i16>("state") {
        1 => State::Bound { expires },
        2 => State::Free,
        3 => State::Declined { until: expires },
        _ => return None,
    };
    Some(Lease {
        ip: Ipv4Addr::from(u32::try_from(ip).ok()?),
        client: ClientKey(r.get("client")),
        mac: Mac(mac.as_slice().try_into().ok()?),
        hostname: r.get("hostname"),
        vendor_class: r.get("vendor_class"),
        state,
    })
}

const LEASE_COLUMNS: &str = "ip, client, mac, state, expires, hostname, vendor_class, box, seq";

/// What a batch of lease jobs came to.
#[derive(Debug, Default)]
pub struct Committed {
    /// Indexes of the jobs the database refused (their address or client is another's).
    pub refused: Vec<usize>,
    /// The rows now stored for the refused jobs' addresses (absent ones: free).
    pub truth: Vec<Lease>,
    pub refused_ips: Vec<Ipv4Addr>,
}

impl Pg {
    /// Every stored lease (at start), and the highest change number among them.
    pub async fn leases(&self) -> Result<(Vec<Lease>, i64)> {
        let c = self.client().await?;
        let rows = self.seen(
            c.query(&format!("SELECT {LEASE_COLUMNS} FROM leases"), &[])
                .await,
        )?;
        let seq = rows
            .iter()
            .map(|r| r.get::<_, i64>("seq"))
            .max()
            .unwrap_or(0);
        Ok((rows.iter().filter_map(row_lease).collect(), seq))
    }

    /// Rows other boxes changed since `seq` (minus `overlap`, because sequence numbers are
    /// taken before commit and a slower transaction can commit a smaller one later).
    /// Returns each row with its sequence number.
    pub async fn lease_changes(&self, seq: i64, overlap: i64) -> Result<Vec<(i64, Lease)>> {
        let c = self.client().await?;
        let rows = self.seen(
            c.query(
                &format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE seq > $1 AND box <> $2 ORDER BY seq"
                ),
                &[&(seq - overlap), &self.box_name()],
            )
            .await,
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get::<_, i64>("seq"), row_lease(r)?)))
            .collect())
    }

    /// Commit lease jobs in one transaction (one WAL flush for all: group commit). Each
    /// job runs under its own savepoint: one refused job (its address bound to another
    /// live client, or its client's key bound elsewhere at the same moment) does not undo
    /// the others. An outage fails the whole batch.
    pub async fn commit_leases(&self, jobs: &[&[Change]], now: u64) -> Result<Committed> {
        let mut c = self.client().await?;
        let r = commit_leases(&mut c, self.box_name(), jobs, now as i64).await;
        let out = self.seen(r)?;
        Ok(out)
    }
}

async fn commit_leases(
    c: &mut tokio_postgres::Client,
    box_name: &str,
    jobs: &[&[Change]],
    now: i64,
) -> Result<Committed, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    // Every box takes its row locks in address order (below), so two boxes' batches wait
    // for each other at most one commit and never deadlock; should one wait anyway (a
    // phone moving between boxes at that instant), the job is refused quickly rather
    // than the whole batch held for PostgreSQL's deadlock detector.
    tx.batch_execute("SET LOCAL lock_timeout = '2s'").await?;
    let move_client = tx
        .prepare(
            "UPDATE leases SET state = 2, box = $3, seq = nextval('lease_seq') \
             WHERE client = $1 AND ip <> $2 AND state = 1",
        )
        .await?;
    // The allocation: insert, or take over a row that is this client's, free, declined
    // out of quarantine or expired. A row that is another's live lease returns nothing.
    let upsert = tx
        .prepare(
            "INSERT INTO leases (ip, client, mac, state, expires, hostname, vendor_class, box) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (ip) DO UPDATE SET client = EXCLUDED.client, mac = EXCLUDED.mac, \
               state = EXCLUDED.state, expires = EXCLUDED.expires, hostname = EXCLUDED.hostname, \
               vendor_class = EXCLUDED.vendor_class, box = EXCLUDED.box, seq = nextval('lease_seq') \
             WHERE leases.client = EXCLUDED.client OR leases.state = 2 \
               OR leases.expires <= $9 \
             RETURNING ip",
        )
        .await?;
    let free = tx
        .prepare(
            "UPDATE leases SET state = 2, box = $3, seq = nextval('lease_seq') \
             WHERE ip = $1 AND client = $2",
        )
        .await?;
    let delete = tx
        .prepare("DELETE FROM leases WHERE ip = $1 AND (state <> 1 OR expires <= $2)")
        .await?;
    let mut out = Committed::default();
    let first_ip = |j: &[Change]| {
        j.iter()
            .map(|c| match c {
                Change::Put(l) => l.ip,
                Change::Delete(ip) => *ip,
            })
            .min()
    };
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&n| first_ip(jobs[n]));
    for n in order {
        let job = jobs[n];
        tx.batch_execute("SAVEPOINT job").await?;
        let mut ok = true;
        let mut ips = Vec::new();
        for ch in job.iter() {
            let r = match ch {
                Change::Put(l) => {
                    ips.push(l.ip);
                    let ip = i64::from(u32::from(l.ip));
                    let host = l.hostname.as_deref().map(cap_text);
                    let vendor = l.vendor_class.as_deref().map(cap_text);
                    match l.state {
                        State::Bound { expires } | State::Declined { until: expires } => {
                            let state: i16 = if matches!(l.state, State::Bound { .. }) {
                                1
                            } else {
                                3
                            };
                            let step = async {
                                if state == 1 {
                                    tx.execute(&move_client, &[&l.client.0, &ip, &box_name])
                                        .await?;
                                }
                                tx.query_opt(
                                    &upsert,
                                    &[
                                        &ip,
                                        &l.client.0,
                                        &l.mac.0.as_slice(),
                                        &state,
                                        &(expires as i64),
                                        &host,
                                        &vendor,
                                        &box_name,
                                        &now,
                                    ],
                                )
                                .await
                            };
                            step.await.map(|row| row.is_some())
                        }
                        State::Free => tx
                            .execute(&free, &[&ip, &l.client.0, &box_name])
                            .await
                            .map(|_| true),
                        State::Offered { .. } => Ok(true),
                    }
                }
                Change::Delete(ip) => {
                    ips.push(*ip);
                    tx.execute(&delete, &[&i64::from(u32::from(*ip)), &now])
                        .await
                        .map(|_| true)
                }
            };
            match r {
                Ok(true) => {}
                Ok(false) => {
                    ok = false;
                    break;
                }
                Err(e) if is_outage(&e) => return Err(e),
                // A unique violation (the client bound on another box at this moment) or
                // a deadlock victim: this job is refused, the others go on.
                Err(e) => {
                    tracing::debug!("dhcp: lease job refused by the database: {}", chain(&e));
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            tx.batch_execute("RELEASE SAVEPOINT job").await?;
        } else {
            tx.batch_execute("ROLLBACK TO SAVEPOINT job").await?;
            out.refused.push(n);
            out.refused_ips.extend(ips);
        }
    }
    out.refused.sort_unstable();
    if !out.refused_ips.is_empty() {
        let ips: Vec<i64> = out
            .refused_ips
            .iter()
            .map(|ip| i64::from(u32::from(*ip)))
            .collect();
        let rows = tx
            .query(
                &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE ip = ANY($1)"),
                &[&ips],
            )
            .await?;
        out.truth = rows.iter().filter_map(row_lease).collect();
    }
    tx.commit().await?;
    Ok(out)
}
