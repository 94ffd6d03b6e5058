//! The durable store: one redb file under the data directory for everything provbox must
//! not forget (bindings, device history). DHCP leases keep their own append-only journal
//! (`dhcp::store`), which is much cheaper per commit under a lease storm. Each module defines its own tables
//! (`redb::TableDefinition`) next to the code that uses them; this module only owns the file.
//!
//! redb commits are crash-safe (copy-on-write B-trees, fsync on commit), so a `kill -9`
//! loses at most the transaction that was being committed, never a committed one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

pub struct Store {
    db: redb::Database,
    path: PathBuf,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Arc<Store>> {
        let path = data_dir.join("provbox.redb");
        let db = redb::Database::create(&path)
            .with_context(|| format!("opening the store {}", path.display()))?;
        Ok(Arc::new(Store { db, path }))
    }

    pub fn db(&self) -> &redb::Database {
        &self.db
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub(crate) mod digest;
pub(crate) mod inventory;
pub(crate) mod postgres;

/// `store:`: where the state lives. `embedded` (the default) is the redb file and the
/// lease journal above; `postgres` shares one database between boxes (docs/redundancy.md).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub backend: crate::confkit::At<Backend>,
    /// libpq form: `host=db.lab port=5432 user=provbox dbname=provbox sslmode=require`
    /// or `postgresql://provbox@db.lab/provbox?sslmode=verify-full`.
    #[serde(default)]
    pub url: Option<crate::confkit::At<String>>,
    /// A file holding the password (first line); else `PGPASSWORD`, else the URL's.
    #[serde(default)]
    pub password_file: Option<crate::confkit::At<PathBuf>>,
    /// CA certificates (PEM) that `sslmode=verify-full` checks the server against.
    #[serde(default)]
    pub ca_file: Option<crate::confkit::At<PathBuf>>,
    /// Connections kept to the database.
    #[serde(default = "default_pool")]
    pub pool_size: crate::confkit::At<usize>,
    /// This box's name in the shared tables (default: the host name).
    #[serde(default)]
    pub box_name: Option<String>,
}

fn default_pool() -> crate::confkit::At<usize> {
    crate::confkit::At::new(8)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: Default::default(),
            url: None,
            password_file: None,
            ca_file: None,
            pool_size: default_pool(),
            box_name: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Embedded,
    Postgres,
}

impl Config {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.password_file, &mut self.ca_file]
            .into_iter()
            .flatten()
        {
            if p.value.is_relative() {
                p.value = base.join(&p.value);
            }
        }
    }

    pub fn validate(&self, p: &mut crate::confkit::Problems) {
        if *self.pool_size == 0 {
            p.add(
                "store.pool_size",
                &self.pool_size,
                "is 0; expected at least 1",
            );
        }
        if let Some(b) = &self.box_name
            && (b.is_empty() || b.len() > 63)
        {
            p.add_at(
                "store.box_name",
                0,
                0,
                "expected a name of 1 to 63 characters",
            );
        }
        match (&*self.backend, &self.url) {
            (Backend::Postgres, None) => p.add(
                "store.url",
                &self.backend,
                "missing; the postgres backend needs a connection string such as \
                 \"host=db port=5432 user=provbox dbname=provbox\"",
            ),
            (_, Some(url)) => {
                if let Err(e) = postgres::parse_url(url) {
                    p.add("store.url", url, format!("{e}"));
                }
            }
            _ => {}
        }
    }

    /// The box's name: `store.box_name`, else the host name.
    pub fn box_name(&self) -> String {
        self.box_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "provbox".into())
        })
    }
}

/// The process's shared store, when `store.backend` is `postgres`: one per process, set
/// once at start before any service is built, so the parts that keep state (leases, PIN
/// bindings, device status, the lab CA) each find it without new plumbing through the
/// front ends.
static SHARED: std::sync::OnceLock<Arc<postgres::Pg>> = std::sync::OnceLock::new();

pub(crate) fn shared() -> Option<Arc<postgres::Pg>> {
    SHARED.get().cloned()
}

/// Connect to the shared store when configured (refusing the start when it cannot be
/// reached or its schema is newer than this binary), and make it the process's.
pub(crate) async fn open_shared(cfg: &Config) -> Result<Option<Arc<postgres::Pg>>> {
    if *cfg.backend != Backend::Postgres {
        return Ok(None);
    }
    let pg = postgres::Pg::connect(cfg).await?;
    tracing::info!(
        box_name = pg.box_name(),
        "store: PostgreSQL connected, schema current"
    );
    let _ = SHARED.set(pg.clone());
    // Outages are noticed by the calls that fail; this notices the way back (and a
    // database that went away while nothing needed it).
    let p = pg.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            p.probe().await;
        }
    });
    Ok(Some(pg))
}
