//! PIN bindings on the shared PostgreSQL store (`store.backend: postgres`): methods on the
//! store's connection, kept beside the binding types so the store knows nothing of devices.

use anyhow::Result;
use tokio_postgres::error::SqlState;

use crate::store::postgres::Pg;

use super::Mac;
use super::binding::{BindRefusal, Bound};

impl Pg {
    pub async fn pin_of(&self, mac: Mac) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = self.seen(
            c.query_opt(
                "SELECT pin FROM pin_bindings WHERE mac = $1",
                &[&mac.to_hex()],
            )
            .await,
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The check and the bind in one transaction, under a lock on the PIN: the same PIN
    /// sent to two boxes at once binds exactly `per_pin` devices, never more.
    pub async fn bind(&self, pin: &str, mac: Mac, per_pin: usize) -> Result<Bound, BindRefusal> {
        let store = |e: &dyn std::fmt::Display| BindRefusal::Store(e.to_string());
        let mut c = self.client().await.map_err(|e| store(&e))?;
        let r = async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&pin])
                .await?;
            let hex = mac.to_hex();
            let current = tx
                .query_opt("SELECT pin FROM pin_bindings WHERE mac = $1", &[&hex])
                .await?
                .map(|r| r.get::<_, String>(0));
            let outcome = match current {
                Some(p) if p == pin => Ok(Bound::Again),
                Some(_) => Err(BindRefusal::BoundElsewhere),
                None => {
                    let n: i64 = tx
                        .query_one("SELECT count(*) FROM pin_bindings WHERE pin = $1", &[&pin])
                        .await?
                        .get(0);
                    if n as usize >= per_pin {
                        Err(BindRefusal::PinTaken)
                    } else {
                        tx.execute(
                            "INSERT INTO pin_bindings (mac, pin, box) VALUES ($1, $2, $3)",
                            &[&hex, &pin, &self.box_name()],
                        )
                        .await?;
                        Ok(Bound::New)
                    }
                }
            };
            if outcome.is_ok() {
                tx.commit().await?;
            }
            Ok::<_, tokio_postgres::Error>(outcome)
        }
        .await;
        match self.seen(r) {
            Ok(o) => o,
            // The same device binding on two boxes at once: the primary key decided.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(BindRefusal::BoundElsewhere)
            }
            Err(e) => Err(store(&e)),
        }
    }

    /// Every PIN with the devices bound to it (as [`super::binding::list_in`]).
    pub async fn list_bindings(&self) -> Result<Vec<(String, Vec<String>)>> {
        let c = self.client().await?;
        let rows = self.seen(
            c.query(
                "SELECT pin, array_agg(mac ORDER BY mac) FROM pin_bindings GROUP BY pin ORDER BY pin",
                &[],
            )
            .await,
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Free `pin` on every box: returns the devices it had (as [`super::binding::unbind_in`]).
    pub async fn unbind_pin(&self, pin: &str) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = self.seen(
            c.query(
                "DELETE FROM pin_bindings WHERE pin = $1 RETURNING mac",
                &[&pin],
            )
            .await,
        )?;
        let mut macs: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        macs.sort();
        Ok(macs)
    }
}
