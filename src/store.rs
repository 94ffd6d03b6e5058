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
