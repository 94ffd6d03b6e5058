//! The PostgreSQL backend (`store.backend: postgres`): the state two or more boxes share
//! (docs/redundancy.md). One pool of connections (deadpool), TLS on rustls when the URL
//! asks for it, versioned migrations applied at start under an advisory lock.
//!
//! Every write that a client is answered on (a DHCP ACK, a PIN binding) is committed
//! before the answer leaves; the database, not a box's memory, decides who gets an
//! address or a PIN (one statement or one locked transaction each, see `commit_leases`
//! and `bind`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::devices::Mac;
use crate::devices::binding::{BindRefusal, Bound};
use crate::dhcp::leases::{ClientKey, Lease, State};
use crate::dhcp::store::{Change, cap_text};

/// The migrations this binary knows, in order; a migration's version is its place + 1.
/// Never edit one that shipped: add the next.
pub const MIGRATIONS: &[&str] = &[include_str!("migrations/001_init.sql")];

/// The advisory lock two boxes starting at once take around their migrations.
const MIGRATION_LOCK: i64 = 0x0070_726f_7662_6f78; // "provbox"

/// What the URL asked of TLS, beyond what tokio-postgres knows (it has no verify modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
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
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, Tls)> {
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
pub fn plan(current: Option<i32>, known: usize) -> Result<std::ops::Range<usize>> {
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
fn chain(e: &dyn std::error::Error) -> String {
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
fn is_outage(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() || e.is_closed()
}

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

    async fn client(&self) -> Result<Object> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.mark(false);
                Err(anyhow!("store: no connection to PostgreSQL: {}", chain(&e)))
            }
        }
    }

    /// Record a statement's outcome for the up/down state.
    fn seen<T>(&self, r: Result<T, tokio_postgres::Error>) -> Result<T, tokio_postgres::Error> {
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

    // ---- DHCP leases ----

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
                &[&(seq - overlap), &self.box_name],
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
        let r = commit_leases(&mut c, &self.box_name, jobs, now as i64).await;
        let out = self.seen(r)?;
        Ok(out)
    }

    // ---- PIN bindings ----

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
                            &[&hex, &pin, &self.box_name],
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
pub async fn migrate(c: &mut tokio_postgres::Client) -> Result<()> {
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
