//! The PostgreSQL backend (`store.backend: postgres`): the state two or more boxes share
//! (docs/redundancy.md). One pool of connections (deadpool), TLS on rustls when the URL
//! asks for it, versioned migrations applied at start under an advisory lock.
//!
//! Every write that a client is answered on (a DHCP ACK, a PIN binding) is committed
//! before the answer leaves; the database, not a box's memory, decides who gets an
//! address or a PIN (one statement or one locked transaction each, see `commit_leases`
//! and `bind`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

/// The migrations this binary knows, in order; a migration's version is its place + 1.
/// Never edit one that shipped: add the next.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_boxes.sql"),
];

/// A box that has not written its `boxes` row for this long is taken for gone, and the
/// others split the pools without it.
pub(crate) const BOX_GONE_AFTER_S: u32 = 10;

/// The advisory lock two boxes starting at once take around their migrations.
const MIGRATION_LOCK: i64 = 0x0070_726f_7662_6f78; // "provbox"

/// What the URL asked of TLS, beyond what tokio-postgres knows (it has no verify modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tls {
    /// `sslmode=disable` (or none given: libpq's `prefer`, which tokio-postgres does too
    /// without verification).
    Plain,
    /// `require`: encrypted, the server's certificate not checked (libpq's meaning).
    Encrypt,
    /// `verify-ca` / `verify-full`: the certificate checked against `store.ca_file`.
    Verify,
}

/// Parse the libpq-form URL. tokio-postgres knows `disable`, `prefer` and `require`; the
/// verify modes are taken out here and turned into a verifying TLS configuration.
pub(crate) fn parse_url(url: &str) -> Result<(tokio_postgres::Config, Tls)> {
    let mut tls = Tls::Plain;
    let mut text = url.to_string();
    for (mode, want) in [
        ("verify-full", Tls::Verify),
        ("verify-ca", Tls::Verify),
        ("require", Tls::Encrypt),
    ] {
        let key = format!("sslmode={mode}");
        if text.contains(&key) {
            tls = want;
            text = text.replace(&key, "sslmode=require");
            break;
        }
    }
    let cfg: tokio_postgres::Config = text.parse().map_err(|e| {
        anyhow!(
            "not a PostgreSQL connection string ({e}); expected e.g. \
             \"host=db port=5432 user=provbox dbname=provbox\" or \
             \"postgresql://provbox@db/provbox\""
        )
    })?;
    if cfg.get_hosts().is_empty() {
        bail!("names no host; expected host=... or postgresql://user@HOST/db");
    }
    Ok((cfg, tls))
}

/// What to do with a database at `current` (None: never migrated): the migrations to
/// apply, as indexes into [`MIGRATIONS`]. A newer database than this binary is refused.
pub(crate) fn plan(current: Option<i32>, known: usize) -> Result<std::ops::Range<usize>> {
    let have = current.unwrap_or(0);
    if have < 0 {
        bail!("the database's schema_version is {have}; expected 0 or more");
    }
    let have = have as usize;
    if have > known {
        bail!(
            "the database's schema is version {have}, newer than this provbox knows \
             (up to {known}); a newer provbox migrated it. Run that version (or newer) \
             on every box, or point store.url at another database"
        );
    }
    Ok(have..known)
}

/// The shared store.
pub struct Pg {
    pool: Pool,
    box_name: String,
    up: AtomicBool,
}

fn password(cfg: &super::Config) -> Result<Option<String>> {
    if let Some(f) = &cfg.password_file {
        let text = std::fs::read_to_string(&f.value)
            .with_context(|| format!("store.password_file: cannot read {}", f.value.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    Ok(std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()))
}

fn tls_config(want: Tls, ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    Ok(match want {
        Tls::Verify => {
            let path = ca_file.ok_or_else(|| {
                anyhow!("store.ca_file: sslmode=verify-full needs the CA certificate(s) to check the server against")
            })?;
            let pem = std::fs::read(path)
                .with_context(|| format!("store.ca_file: cannot read {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject;
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(c.context("store.ca_file: not a PEM certificate")?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    })
}

/// `sslmode=require`: libpq encrypts but checks nothing; so does this.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An error with its causes: the driver's own text is often just "db error".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A connection-level failure (the database is gone), as opposed to a statement the
/// database refused.
pub(crate) fn is_outage(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() || e.is_closed()
}

impl Pg {
    /// Connect, check the schema and migrate. Fails when the database cannot be reached:
    /// a box never starts on a database it has not seen.
    pub async fn connect(cfg: &super::Config) -> Result<Arc<Pg>> {
        let url = cfg
            .url
            .as_ref()
            .ok_or_else(|| anyhow!("store.url: missing"))?;
        let (mut pg, tls) = parse_url(url)?;
        if let Some(p) = password(cfg)? {
            pg.password(p);
        }
        pg.connect_timeout(Duration::from_secs(5));
        let mgr_cfg = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = if tls == Tls::Plain {
            Manager::from_config(pg, tokio_postgres::NoTls, mgr_cfg)
        } else {
            let tc = tls_config(tls, cfg.ca_file.as_ref().map(|f| f.value.as_path()))?;
            Manager::from_config(
                pg,
                tokio_postgres_rustls::MakeRustlsConnect::new(tc),
                mgr_cfg,
            )
        };
        let pool = Pool::builder(mgr)
            .max_size(*cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(5)))
            .wait_timeout(Some(Duration::from_secs(5)))
            .build()
            .context("store: building the connection pool")?;
        let store = Arc::new(Pg {
            pool,
            box_name: cfg.box_name(),
            up: AtomicBool::new(true),
        });
        let mut c = store
            .pool
            .get()
            .await
            .map_err(|e| anyhow!("store.url: cannot connect to PostgreSQL: {}", chain(&e)))?;
        migrate(&mut c).await?;
        Ok(store)
    }

    pub fn box_name(&self) -> &str {
        &self.box_name
    }

    /// Whether the last contact with the database worked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::warn!("store: PostgreSQL is reachable again");
            } else {
                tracing::error!(
                    "store: PostgreSQL unreachable; DHCP renews cached leases only, PIN binding answers 503, status events are buffered"
                );
            }
        }
    }

    pub(crate) async fn client(&self) -> Result<Object> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.mark(false);
                Err(anyhow!("store: no connection to PostgreSQL: {}", chain(&e)))
            }
        }
    }

    /// Record a statement's outcome for the up/down state.
    pub(crate) fn seen<T>(
        &self,
        r: Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        match &r {
            Ok(_) => self.mark(true),
            Err(e) if is_outage(e) => self.mark(false),
            Err(_) => {}
        }
        r
    }

    /// One round trip: is the database there?
    pub async fn probe(&self) -> bool {
        let Ok(c) = self.client().await else {
            return false;
        };
        let ok = tokio::time::timeout(Duration::from_secs(3), c.simple_query("SELECT 1"))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        self.mark(ok);
        ok
    }

    // ---- the boxes sharing the database ----

    /// Say this box is alive, and list the boxes that are (this one among them), sorted
    /// by name: every box computes the same order from it.
    pub async fn heartbeat(&self) -> Result<Vec<String>> {
        let c = self.client().await?;
        let r = async {
            c.execute(
                "INSERT INTO boxes (name, seen) VALUES ($1, now()) \
                 ON CONFLICT (name) DO UPDATE SET seen = now()",
                &[&self.box_name],
            )
            .await?;
            c.query(
                "SELECT name FROM boxes \
                 WHERE seen > now() - make_interval(secs => $1) ORDER BY name",
                &[&f64::from(BOX_GONE_AFTER_S)],
            )
            .await
        }
        .await;
        let rows = self.seen(r)?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    // ---- device records ----

    /// Write device records this box changed (key, JSON).
    pub async fn put_devices(&self, rows: &[(String, Vec<u8>)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let r = async {
            let tx = c.transaction().await?;
            let st = tx
                .prepare(
                    "INSERT INTO devices (key, body, box) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body, box = EXCLUDED.box, \
                     seq = nextval('device_seq')",
                )
                .await?;
            for (k, body) in rows {
                let body = String::from_utf8_lossy(body);
                tx.execute(&st, &[k, &body.as_ref(), &self.box_name])
                    .await?;
            }
            tx.commit().await
        }
        .await;
        self.seen(r)?;
        Ok(())
    }

    /// Records other boxes wrote after `seq` (re-reading `overlap` back), with their
    /// change numbers, at most `limit`.
    pub async fn devices_since(
        &self,
        seq: i64,
        overlap: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let c = self.client().await?;
        let rows = self.seen(
            c.query(
                "SELECT seq, body FROM devices WHERE seq > $1 AND box <> $2 ORDER BY seq LIMIT $3",
                &[&(seq - overlap), &self.box_name, &limit],
            )
            .await,
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    // ---- catalog digests ----

    /// Replace this box's published digest (path -> sha256).
    pub async fn publish_digest(&self, files: &[(String, String)]) -> Result<()> {
        let mut c = self.client().await?;
        let r = async {
            let tx = c.transaction().await?;
            tx.execute(
                "DELETE FROM catalog_digests WHERE box = $1",
                &[&self.box_name],
            )
            .await?;
            let st = tx
                .prepare("INSERT INTO catalog_digests (box, path, sha256) VALUES ($1, $2, $3)")
                .await?;
            for (p, h) in files {
                tx.execute(&st, &[&self.box_name, p, h]).await?;
            }
            tx.commit().await
        }
        .await;
        self.seen(r)?;
        Ok(())
    }

    /// Files whose digest differs between boxes (or that one box lacks): path, then
    /// each box with its sha256 (`-` where it has no such file).
    pub async fn digest_differences(&self) -> Result<Vec<(String, Vec<(String, String)>)>> {
        let c = self.client().await?;
        let rows = self.seen(
            c.query(
                "WITH boxes AS (SELECT DISTINCT box FROM catalog_digests), \
                      paths AS (SELECT DISTINCT path FROM catalog_digests) \
                 SELECT p.path, b.box, coalesce(d.sha256, '-') \
                 FROM paths p CROSS JOIN boxes b \
                 LEFT JOIN catalog_digests d ON d.path = p.path AND d.box = b.box \
                 WHERE p.path IN ( \
                     SELECT p2.path FROM paths p2 CROSS JOIN boxes b2 \
                     LEFT JOIN catalog_digests d2 ON d2.path = p2.path AND d2.box = b2.box \
                     GROUP BY p2.path HAVING count(DISTINCT coalesce(d2.sha256, '-')) > 1) \
                 ORDER BY p.path, b.box",
                &[],
            )
            .await,
        )?;
        let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for r in rows {
            let (path, b, h): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            match out.last_mut() {
                Some((p, v)) if *p == path => v.push((b, h)),
                _ => out.push((path, vec![(b, h)])),
            }
        }
        Ok(out)
    }

    // ---- lab CA and inventory ----

    /// The shared lab CA (cert PEM, key PEM), if a box stored one.
    pub async fn lab_ca(&self) -> Result<Option<(String, String)>> {
        let c = self.client().await?;
        let r = self.seen(
            c.query_opt("SELECT cert_pem, key_pem FROM lab_ca WHERE id = 1", &[])
                .await,
        )?;
        Ok(r.map(|r| (r.get(0), r.get(1))))
    }

    /// Store a lab CA unless one is there; returns the one that is (the first box wins).
    pub async fn lab_ca_offer(&self, cert: &str, key: &str) -> Result<(String, String)> {
        let c = self.client().await?;
        self.seen(
            c.execute(
                "INSERT INTO lab_ca (id, cert_pem, key_pem) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
                &[&cert, &key],
            )
            .await,
        )?;
        self.lab_ca()
            .await?
            .ok_or_else(|| anyhow!("store: the lab CA row vanished"))
    }

    pub async fn put_inventory(&self, body: &str) -> Result<()> {
        let c = self.client().await?;
        self.seen(
            c.execute(
                "INSERT INTO inventory (id, body) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, imported = now()",
                &[&body],
            )
            .await,
        )?;
        Ok(())
    }

    pub async fn inventory(&self) -> Result<Option<String>> {
        let c = self.client().await?;
        let r = self.seen(
            c.query_opt("SELECT body FROM inventory WHERE id = 1", &[])
                .await,
        )?;
        Ok(r.map(|r| r.get(0)))
    }
}

/// Apply the migrations this database lacks, in one transaction under an advisory lock:
/// two boxes starting at once apply them once.
pub(crate) async fn migrate(c: &mut tokio_postgres::Client) -> Result<()> {
    let tx = c.transaction().await.context("store: migration")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("store: migration lock")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
        .await
        .context("store: schema_version table")?;
    let current: Option<i32> = tx
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await
        .context("store: reading schema_version")?
        .get(0);
    let todo = plan(current, MIGRATIONS.len()).context("store")?;
    for i in todo {
        tx.batch_execute(MIGRATIONS[i])
            .await
            .with_context(|| format!("store: migration {}", i + 1))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
        tracing::info!(version = i + 1, "store: database migrated");
    }
    tx.commit().await.context("store: committing migrations")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_gets_every_migration() {
        assert_eq!(plan(None, 3).unwrap(), 0..3);
        assert_eq!(plan(Some(0), 1).unwrap(), 0..1);
    }

    #[test]
    fn a_database_part_way_gets_the_rest_and_a_current_one_nothing() {
        assert_eq!(plan(Some(1), 3).unwrap(), 1..3);
        assert!(plan(Some(3), 3).unwrap().is_empty());
    }

    #[test]
    fn a_newer_database_is_refused_with_both_versions_named() {
        let e = plan(Some(5), 2).unwrap_err().to_string();
        assert!(e.contains("version 5") && e.contains("up to 2"), "{e}");
        assert!(plan(Some(-1), 2).is_err());
    }

    #[test]
    fn every_migration_is_numbered_by_its_place() {
        // The first one creates what every later statement relies on.
        assert!(MIGRATIONS[0].contains("CREATE TABLE leases"));
        assert!(MIGRATIONS[0].contains("CREATE TABLE pin_bindings"));
    }

    #[test]
    fn urls_in_both_forms_and_the_verify_modes() {
        let (c, t) = parse_url("host=db port=5433 user=p dbname=x sslmode=verify-full").unwrap();
        assert_eq!(t, Tls::Verify);
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let (_, t) = parse_url("postgresql://p@db/x?sslmode=require").unwrap();
        assert_eq!(t, Tls::Encrypt);
        let (_, t) = parse_url("host=db").unwrap();
        assert_eq!(t, Tls::Plain);
        let e = parse_url("user=p dbname=x").unwrap_err().to_string();
        assert!(e.contains("no host"), "{e}");
        assert!(parse_url("host=db bogus=1").is_err());
    }
}
