//! The PostgreSQL [`Store`]: tokio-postgres behind a deadpool connection
//! pool, for production and for several coordinator replicas on one
//! database. Same semantics as [`super::sqlite::SqliteStore`] (one shared
//! conformance suite, `store::suite`), same versioned schema idea: its own
//! `schema_version` table, forward migrations in one transaction at open
//! (serialized between replicas by an advisory lock), a newer schema refused.
//!
//! Connection URL: libpq style, either `postgres://user:password@host:port/db?sslmode=...`
//! or `host=... user=... dbname=...`. TLS: `sslmode=require`, `verify-ca` or
//! `verify-full` connect over TLS (rustls with ring) and always verify the
//! server's certificate and host name against the CA given by
//! `sslrootcert=FILE`; without `sslmode`, or with `disable` or `prefer`, the
//! connection is plain (loopback or a private network). See docs/store.md.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rewind_shared::audit::{AuditEntry, Checkpoint};
use rewind_shared::fleet::{AgentId, Inventory, Labels};
use rewind_shared::report::ChainPoint;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{
    AgentRecord, BundleRecord, Delivery, IncidentUpdate, Redeem, ResultAudit, RolloutRecord, Store, StoredResult,
    TemplateVersion, WebhookAttempt, part_from_text, part_text,
};
use crate::auth::Role;
use crate::error::{Error, Result};

/// Schema migrations, in order; `schema_version` holds how many ran. Append
/// new ones at the end, never edit one that shipped.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE enrollment_tokens(
    hash TEXT PRIMARY KEY,
    labels TEXT NOT NULL,          -- JSON object
    uses_left BIGINT NOT NULL,
    expires_unix BIGINT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE agents(
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    labels TEXT NOT NULL,          -- JSON object
    fingerprint TEXT NOT NULL UNIQUE,
    enrolled TEXT NOT NULL,
    last_seen TEXT,
    inventory TEXT NOT NULL,       -- JSON
    revoked BOOLEAN NOT NULL DEFAULT false,
    audit_key TEXT NOT NULL DEFAULT '',
    chain TEXT                     -- JSON ChainPoint of the newest accepted result
);
CREATE TABLE operators(
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL
);
CREATE TABLE results(
    n BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,           -- the agent's report id: delivery is idempotent by it
    agent TEXT NOT NULL REFERENCES agents(id),
    plan TEXT NOT NULL,
    signed_plan TEXT,
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    status TEXT NOT NULL,
    continuity TEXT NOT NULL,      -- ok | gap | fork
    payload BYTEA NOT NULL,        -- exact signed bytes
    signature BYTEA NOT NULL,
    received TEXT NOT NULL
);
CREATE INDEX results_agent ON results(agent, n);
CREATE TABLE integrity_alarms(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,            -- bad_signature | chain_gap | chain_fork
    detail TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX integrity_alarms_agent ON integrity_alarms(agent, id);
CREATE TABLE bundles(
    id TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    bytes BYTEA NOT NULL,          -- the bundle file as uploaded
    uploaded TEXT NOT NULL,
    UNIQUE(product, release)
);
CREATE TABLE deliveries(
    n BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL REFERENCES agents(id),
    bundle TEXT NOT NULL REFERENCES bundles(id),
    kind TEXT NOT NULL,            -- apply | rollback
    created TEXT NOT NULL,
    acked TEXT                     -- set when the agent ran it and acknowledged
);
CREATE INDEX deliveries_pending ON deliveries(agent, n) WHERE acked IS NULL;
CREATE INDEX deliveries_bundle ON deliveries(bundle, n);
CREATE TABLE audit(
    seq BIGINT PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE audit_checkpoints(
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq BIGINT NOT NULL,
    body TEXT NOT NULL             -- rewind_shared::audit::Checkpoint as JSON
);
",
    r"
CREATE TABLE rollouts(
    n BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,           -- <product>@<sequence>
    product TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,             -- the engine's JSON document (machine + bookkeeping)
    updated TEXT NOT NULL
);
",
    r"
CREATE TABLE templates(
    product TEXT NOT NULL,
    name TEXT NOT NULL,            -- event: incident_started, rollback_started, ...
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    author TEXT NOT NULL,
    source TEXT NOT NULL,          -- edit | release <version> (bundle <id>)
    time TEXT NOT NULL,
    PRIMARY KEY(product, name, version)
);
CREATE TABLE template_imports(
    product TEXT NOT NULL,
    bundle TEXT NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY(product, bundle)
);
CREATE TABLE incident_updates(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident TEXT NOT NULL,
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    title TEXT NOT NULL,
    markdown TEXT NOT NULL,
    text TEXT NOT NULL,
    cause TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE TABLE webhook_attempts(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery TEXT NOT NULL,
    webhook TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    status INTEGER,
    error TEXT,
    outcome TEXT NOT NULL,         -- delivered | retrying | failed
    duration_ms BIGINT NOT NULL,
    retry_in_ms BIGINT,
    time TEXT NOT NULL
);
",
    // Partial rollbacks: which part of the bundle a rollback delivery is.
    r"
ALTER TABLE deliveries ADD COLUMN part TEXT NOT NULL DEFAULT '';
",
    // Replicas: values they share (CA, audit key, admin token) and the
    // leader lease with its fencing token (docs/replicas.md).
    r"
CREATE TABLE shared_values(name TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE leader(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    url TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
",
];

/// The channel replicas talk on (LISTEN / NOTIFY).
pub const CHANNEL: &str = "rewind_replicas";

/// Advisory lock key held while migrating (any constant shared by replicas).
const MIGRATION_LOCK: i64 = 0x7265_7769_6e64_0001;

/// A PostgreSQL-backed store: a pool of connections, safe to share between
/// coordinator replicas.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown: String,
    /// How to open the listening connection (outside the pool).
    config: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
    /// Set while this replica leads: rollout and delivery writes check it.
    fence: std::sync::Arc<std::sync::Mutex<Option<super::Fence>>>,
    /// The leader lease's own connection, outside the pool: under load
    /// (e.g. thousands of agents connecting at once) the pool's queue
    /// could hold a renewal past the lease's end and cost the leadership.
    lease: std::sync::Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

/// An error with its sources (tokio-postgres says only "db error" at the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn pg(e: tokio_postgres::Error) -> Error {
    Error::Store(chain(&e))
}

/// How often a transaction PostgreSQL chose as a deadlock victim is tried.
const DEADLOCK_TRIES: u32 = 5;

/// Why a transaction failed: a deadlock victim may simply run again.
enum Failure {
    Deadlock(Error),
    Other(Error),
}

fn fail(e: tokio_postgres::Error) -> Failure {
    if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) {
        Failure::Deadlock(pg(e))
    } else {
        Failure::Other(pg(e))
    }
}

/// A connection opened outside the pool, with or without TLS.
type DirectConnection = futures_util::future::Either<
    tokio_postgres::Connection<
        tokio_postgres::Socket,
        <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
    >,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
>;

/// Runs `attempt` again while PostgreSQL picks it as a deadlock victim
/// (nothing of it was written), at most [`DEADLOCK_TRIES`] times.
async fn retry_deadlocks<T, F, Fut>(what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Deadlock(e)) if tries < DEADLOCK_TRIES => {
                tracing::warn!("{what}: {e}; trying again ({tries} of {DEADLOCK_TRIES})");
                tokio::time::sleep(Duration::from_millis(10 * u64::from(tries))).await;
            }
            Err(Failure::Deadlock(e) | Failure::Other(e)) => return Err(e),
        }
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::Store(format!("PostgreSQL connection: {}", chain(&e)))
}

fn conv(col: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("column {col}: {e}"))
}

/// `url` with any password replaced by `***`, for messages and logs.
#[must_use]
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let (a, b) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
            out.replace_range(a..b, "***");
        }
    }
    // `password=...` in a query string or a key=value string.
    let mut res = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let before_ok = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        res.push_str(&rest[..i + 9]);
        rest = &rest[i + 9..];
        if before_ok {
            let end = rest.find(['&', ' ']).unwrap_or(rest.len());
            res.push_str("***");
            rest = &rest[end..];
        }
    }
    res.push_str(rest);
    res
}

/// TLS settings taken out of the URL before tokio-postgres parses it.
struct TlsWanted {
    required: bool,
    root: Option<PathBuf>,
}

/// Splits `sslrootcert` (not understood by tokio-postgres) off the URL and
/// maps `verify-ca` / `verify-full` to `require` (rustls always verifies).
fn split_tls(url: &str) -> (String, TlsWanted) {
    let mut wanted = TlsWanted { required: false, root: None };
    let mut fix = |key: &str, value: &str| -> Option<String> {
        match key {
            "sslrootcert" => {
                wanted.root = Some(PathBuf::from(value));
                None
            }
            "sslmode" => {
                let required = matches!(value, "require" | "verify-ca" | "verify-full");
                wanted.required = required;
                Some(format!("sslmode={}", if required { "require" } else { value }))
            }
            _ => Some(format!("{key}={value}")),
        }
    };
    let cleaned = if url.contains("://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let kept: Vec<String> = query
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .filter_map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        fix(k, v)
                    })
                    .collect();
                if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        url.split_whitespace()
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                fix(k, v)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (cleaned, wanted)
}

/// Checks that `url` parses as a PostgreSQL connection string (no I/O).
///
/// # Errors
/// A message naming the URL (without its password) and what is wrong.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    let (cleaned, tls) = split_tls(url);
    tokio_postgres::Config::from_str(&cleaned).map_err(|e| {
        format!("store_url {}: {e}; give a PostgreSQL URL like postgres://USER:PASSWORD@HOST:5432/DBNAME", redact(url))
    })?;
    if tls.required && tls.root.is_none() {
        return Err(format!(
            "store_url {}: sslmode=require needs sslrootcert=FILE (the PEM CA certificate that signed the server's certificate)",
            redact(url)
        ));
    }
    Ok(())
}

fn tls_config(root: &std::path::Path) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(root).map_err(|e| Error::Io { path: root.to_path_buf(), source: e })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: rustls::pki_types::CertificateDer<'static> =
            cert.map_err(|e| Error::Store(format!("sslrootcert {}: {e}", root.display())))?;
        roots.add(cert).map_err(|e| Error::Store(format!("sslrootcert {}: {e}", root.display())))?;
        n += 1;
    }
    if n == 0 {
        return Err(Error::Store(format!("sslrootcert {}: no PEM certificate in the file", root.display())));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Store(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl PostgresStore {
    /// Connects to `url`, checks the server answers, and creates or migrates
    /// the schema.
    ///
    /// # Errors
    /// When the URL does not parse, the server cannot be reached or refuses
    /// the login, or the schema was written by a newer coordinator. Every
    /// message names the URL without its password.
    pub async fn open(url: &str) -> Result<Self> {
        let shown = redact(url);
        check_url(url).map_err(Error::Store)?;
        let (cleaned, tls) = split_tls(url);
        let mut config = tokio_postgres::Config::from_str(&cleaned).map_err(pg)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("rewind-coordinator");
        }
        let mc = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let tls = match &tls.root {
            Some(root) if tls.required => Some(tls_config(root)?),
            _ => None,
        };
        let manager = match &tls {
            Some(t) => {
                Manager::from_config(config.clone(), tokio_postgres_rustls::MakeRustlsConnect::new(t.clone()), mc)
            }
            None => Manager::from_config(config.clone(), tokio_postgres::NoTls, mc),
        };
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Store(format!("{shown}: {e}")))?;
        let store = PostgresStore { pool, shown, config, tls, fence: Default::default(), lease: Default::default() };
        store.migrate().await.map_err(|e| {
            Error::Store(format!(
                "PostgreSQL at {}: {}; check that the server runs, the URL is right and the user may create tables",
                store.shown,
                e.to_string().trim_start_matches("store: ")
            ))
        })?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut c = self.pool.get().await.map_err(|e| Error::Store(chain(&e)))?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version(version BIGINT NOT NULL)").await.map_err(pg)?;
        let version: Option<i64> =
            tx.query_opt("SELECT version FROM schema_version", &[]).await.map_err(pg)?.map(|r| r.get(0));
        let version = usize::try_from(version.unwrap_or(0)).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(Error::Store(format!(
                "schema version {version} is newer than this coordinator's {}; run a newer rewind-coordinator",
                MIGRATIONS.len()
            )));
        }
        for m in &MIGRATIONS[version..] {
            tx.batch_execute(m).await.map_err(pg)?;
        }
        tx.execute("DELETE FROM schema_version", &[]).await.map_err(pg)?;
        tx.execute("INSERT INTO schema_version VALUES ($1)", &[&(MIGRATIONS.len() as i64)]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    /// The URL without its password.
    #[must_use]
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Inside a write transaction: refuses it unless this replica's fence
    /// (if any) still holds the lease. The lease row is locked until the
    /// transaction ends, so a takeover waits for this write, or this write
    /// sees the takeover.
    async fn check_fence(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<()> {
        let Some(fence) = self.fence.lock().expect("fence lock").clone() else { return Ok(()) };
        let row = tx.query_opt("SELECT holder, token FROM leader WHERE id = 1 FOR SHARE", &[]).await.map_err(pg)?;
        match row {
            Some(r) if get::<String>(&r, 0)? == fence.holder && get::<i64>(&r, 1)? == fence.token => Ok(()),
            Some(r) => Err(Error::Fenced(format!(
                "replica {} with token {} no longer leads (the lease is {}'s, token {}); the write was refused",
                fence.holder,
                fence.token,
                get::<String>(&r, 0)?,
                get::<i64>(&r, 1)?
            ))),
            None => Err(Error::Fenced(format!("replica {} holds no lease; the write was refused", fence.holder))),
        }
    }

    /// One try of [`Store::store_results`] in one transaction.
    async fn store_results_once(
        &self,
        batch: &[(StoredResult, Option<ChainPoint>)],
        audit: Option<ResultAudit>,
    ) -> std::result::Result<(Vec<bool>, Vec<AuditEntry>), Failure> {
        if batch.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // Two statements for the whole batch: the inserts (arrays unnested
        // server-side, a known id skipped), then each agent's chain point
        // moved once, to the last point among its results inserted now.
        let now = crate::now();
        let ids: Vec<&str> = batch.iter().map(|(r, _)| r.id.as_str()).collect();
        let agents: Vec<&str> = batch.iter().map(|(r, _)| r.agent.as_str()).collect();
        let plans: Vec<&str> = batch.iter().map(|(r, _)| r.plan.as_str()).collect();
        let signed: Vec<Option<&str>> = batch.iter().map(|(r, _)| r.signed_plan.as_deref()).collect();
        let products: Vec<&str> = batch.iter().map(|(r, _)| r.product.as_str()).collect();
        let releases: Vec<&str> = batch.iter().map(|(r, _)| r.release.as_str()).collect();
        let sequences: Vec<i64> = batch.iter().map(|(r, _)| i64_of(r.sequence)).collect();
        let statuses: Vec<&str> = batch.iter().map(|(r, _)| r.status.as_str()).collect();
        let continuities: Vec<&str> = batch.iter().map(|(r, _)| r.continuity.as_str()).collect();
        let payloads: Vec<&[u8]> = batch.iter().map(|(r, _)| r.payload.as_slice()).collect();
        let signatures: Vec<&[u8]> = batch.iter().map(|(r, _)| r.signature.as_slice()).collect();
        let mut c = self.client().await.map_err(Failure::Other)?;
        let tx = c.transaction().await.map_err(fail)?;
        let inserted: std::collections::HashSet<String> = tx
            .query(
                "INSERT INTO results(id, agent, plan, signed_plan, product, release, sequence, status, continuity, payload, signature, received)
                 SELECT id, agent, plan, signed_plan, product, release, sequence, status, continuity, payload, signature, $12
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[],
                             $8::TEXT[], $9::TEXT[], $10::BYTEA[], $11::BYTEA[])
                      WITH ORDINALITY AS b(id, agent, plan, signed_plan, product, release, sequence, status, continuity, payload, signature, k)
                 ORDER BY k
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                &[
                    &ids,
                    &agents,
                    &plans,
                    &signed,
                    &products,
                    &releases,
                    &sequences,
                    &statuses,
                    &continuities,
                    &payloads,
                    &signatures,
                    &now,
                ],
            )
            .await
            .map_err(fail)?
            .iter()
            .map(|r| get::<String>(r, 0))
            .collect::<Result<_>>()
            .map_err(Failure::Other)?;
        // New: the first occurrence of each id inserted now (a batch may
        // carry the same result twice).
        let mut seen = std::collections::HashSet::new();
        let news: Vec<bool> =
            batch.iter().map(|(r, _)| inserted.contains(&r.id) && seen.insert(r.id.as_str())).collect();
        let mut chains: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
        for ((r, advance), new) in batch.iter().zip(&news) {
            if let (true, Some(p)) = (new, advance) {
                chains.insert(r.agent.as_str(), json(p));
            }
        }
        if !chains.is_empty() {
            let (who, points): (Vec<&str>, Vec<String>) = chains.into_iter().unzip();
            tx.execute(
                "UPDATE agents SET chain = v.chain FROM unnest($1::TEXT[], $2::TEXT[]) AS v(id, chain)
                 WHERE agents.id = v.id
                   AND agents.id IN (SELECT id FROM agents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE)",
                &[&who, &points],
            )
            .await
            .map_err(fail)?;
        }
        let audited = match audit {
            Some(a) => {
                let key = a.key.clone();
                append_audit_in(&tx, a.entries(&news), &key).await.map_err(Failure::Other)?
            }
            None => Vec::new(),
        };
        tx.commit().await.map_err(fail)?;
        Ok((news, audited))
    }

    /// A connection outside the pool, and the future that drives it.
    async fn connect_direct(&self) -> Result<(tokio_postgres::Client, DirectConnection)> {
        use futures_util::future::Either;
        Ok(match &self.tls {
            Some(t) => {
                let (c, conn) =
                    self.config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(t.clone())).await.map_err(pg)?;
                (c, Either::Left(conn))
            }
            None => {
                let (c, conn) = self.config.connect(tokio_postgres::NoTls).await.map_err(pg)?;
                (c, Either::Right(conn))
            }
        })
    }

    /// A connection of its own, outside the pool (its connection task
    /// runs until the client is dropped or the server ends it).
    async fn dedicated(&self) -> Result<tokio_postgres::Client> {
        let (c, conn) = self.connect_direct().await?;
        tokio::spawn(async move { conn.await.map_err(|e| tracing::warn!("PostgreSQL lease connection: {e}")) });
        Ok(c)
    }

    /// A connection outside the pool that LISTENs on [`CHANNEL`] and hands
    /// every notification to `tx`; returns when the connection ends.
    async fn listen_once(&self, tx: &tokio::sync::mpsc::Sender<super::Signal>) -> Result<()> {
        use futures_util::StreamExt;
        let (client, mut connection) = self.connect_direct().await?;
        let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
        let pump = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| match &mut connection {
                futures_util::future::Either::Left(c) => c.poll_message(cx),
                futures_util::future::Either::Right(c) => c.poll_message(cx),
            });
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if ntx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("replica channel: {e}");
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(pg)?;
        // Listening now: whatever was missed before is caught up from the store.
        if tx.send(super::Signal::Resync).await.is_err() {
            return Ok(());
        }
        while let Some(payload) = nrx.recv().await {
            if tx.send(super::Signal::Message(payload)).await.is_err() {
                break;
            }
        }
        pump.abort();
        drop(client);
        Ok(())
    }

    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await.map_err(pg)?;
        c.execute(&st, params).await.map_err(pg)
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await.map_err(pg)?;
        c.query(&st, params).await.map_err(pg)
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await.map_err(pg)?;
        c.query_opt(&st, params).await.map_err(pg)
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("value serializes")
}

fn from_json<T: serde::de::DeserializeOwned>(col: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| conv(col, e))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(|e| conv(r.columns()[i].name(), e))
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Appends `(kind, params)` entries after the chain's head inside `tx`,
/// sealed by one signature on the last (DESIGN §10), with one statement.
async fn append_audit_in(
    tx: &tokio_postgres::Transaction<'_>,
    entries: Vec<(String, String)>,
    key: &ed25519_dalek::SigningKey,
) -> Result<Vec<AuditEntry>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    // Serializes appenders (from every replica) while readers go on: this
    // mode conflicts with itself but not with SELECT.
    tx.batch_execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE").await.map_err(pg)?;
    let head = tx
        .query_opt(&format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT 1"), &[])
        .await
        .map_err(pg)?
        .as_ref()
        .map(row_to_audit)
        .transpose()?;
    let out = rewind_shared::audit::seal(head.as_ref(), entries, crate::now, key);
    let cols: [Vec<String>; 6] = [
        out.iter().map(|e| e.time.clone()).collect(),
        out.iter().map(|e| e.kind.clone()).collect(),
        out.iter().map(|e| e.params.clone()).collect(),
        out.iter().map(|e| e.prev.to_string()).collect(),
        out.iter().map(|e| e.hash.to_string()).collect(),
        out.iter().map(|e| e.signature.clone()).collect(),
    ];
    let seqs: Vec<i64> = out.iter().map(|e| i64_of(e.seq)).collect();
    tx.execute(
        &format!(
            "INSERT INTO audit({AUDIT_COLS})
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])"
        ),
        &[&seqs, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5]],
    )
    .await
    .map_err(pg)?;
    Ok(out)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const AGENT_COLS: &str = "id, hostname, labels, fingerprint, enrolled, last_seen, inventory, revoked, audit_key, chain";

fn row_to_agent(r: &Row) -> Result<AgentRecord> {
    let id: String = get(r, 0)?;
    Ok(AgentRecord {
        id: AgentId::parse(&id).map_err(|e| conv("id", e))?,
        hostname: get(r, 1)?,
        labels: from_json("labels", &get::<String>(r, 2)?)?,
        fingerprint: get(r, 3)?,
        enrolled: get(r, 4)?,
        last_seen: get(r, 5)?,
        inventory: from_json("inventory", &get::<String>(r, 6)?)?,
        revoked: get(r, 7)?,
        audit_key: get(r, 8)?,
        chain: get::<Option<String>>(r, 9)?.map(|s| from_json("chain", &s)).transpose()?,
    })
}

const RESULT_COLS: &str = "id, plan, signed_plan, product, release, sequence, status, continuity, payload, signature";

fn row_to_result(r: &Row, agent: &AgentId) -> Result<StoredResult> {
    Ok(StoredResult {
        id: get(r, 0)?,
        agent: agent.clone(),
        plan: get(r, 1)?,
        signed_plan: get(r, 2)?,
        product: get(r, 3)?,
        release: get(r, 4)?,
        sequence: u64_of(get(r, 5)?),
        status: get(r, 6)?,
        continuity: get(r, 7)?,
        payload: get(r, 8)?,
        signature: get(r, 9)?,
    })
}

const AUDIT_COLS: &str = "seq, time, kind, params, prev, hash, signature";

fn row_to_audit(r: &Row) -> Result<AuditEntry> {
    let digest = |i: usize| -> Result<rewind_shared::Digest> {
        get::<String>(r, i)?.parse().map_err(|e| conv(r.columns()[i].name(), e))
    };
    Ok(AuditEntry {
        seq: u64_of(get(r, 0)?),
        time: get(r, 1)?,
        kind: get(r, 2)?,
        params: get(r, 3)?,
        prev: digest(4)?,
        hash: digest(5)?,
        signature: get(r, 6)?,
    })
}

fn row_to_bundle(r: &Row, at: usize) -> Result<BundleRecord> {
    Ok(BundleRecord {
        id: get(r, at)?,
        product: get(r, at + 1)?,
        release: get(r, at + 2)?,
        sequence: u64_of(get(r, at + 3)?),
        bytes: get(r, at + 4)?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_token(&self, hash: String, labels: Labels, uses: u32, expires_unix: i64) -> Result<()> {
        self.exec(
            "INSERT INTO enrollment_tokens(hash, labels, uses_left, expires_unix, created) VALUES ($1, $2, $3, $4, $5)",
            &[&hash, &json(&labels), &i64::from(uses), &expires_unix, &crate::now()],
        )
        .await?;
        Ok(())
    }

    async fn redeem_token(&self, hash: String, now_unix: i64) -> Result<Redeem> {
        // One statement: the row lock taken by UPDATE makes concurrent
        // redeemers of the same token queue, and each re-checks uses_left.
        let row = self
            .query_opt(
                "UPDATE enrollment_tokens SET uses_left = uses_left - 1
                 WHERE hash = $1 AND uses_left > 0 AND expires_unix > $2 RETURNING labels",
                &[&hash, &now_unix],
            )
            .await?;
        if let Some(r) = row {
            return Ok(Redeem::Accepted(from_json("labels", &get::<String>(&r, 0)?)?));
        }
        let row =
            self.query_opt("SELECT uses_left, expires_unix FROM enrollment_tokens WHERE hash = $1", &[&hash]).await?;
        Ok(match row {
            None => Redeem::Unknown,
            Some(r) if get::<i64>(&r, 1)? <= now_unix => Redeem::Expired,
            Some(_) => Redeem::UsedUp,
        })
    }

    async fn insert_agent(&self, a: AgentRecord) -> Result<()> {
        self.exec(
            &format!("INSERT INTO agents({AGENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            &[
                &a.id.as_str(),
                &a.hostname,
                &json(&a.labels),
                &a.fingerprint,
                &a.enrolled,
                &a.last_seen,
                &json(&a.inventory),
                &a.revoked,
                &a.audit_key,
                &a.chain.as_ref().map(json),
            ],
        )
        .await?;
        Ok(())
    }

    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>> {
        self.query_opt(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = $1"), &[&id.as_str()])
            .await?
            .as_ref()
            .map(row_to_agent)
            .transpose()
    }

    async fn agents_by_id(&self, ids: Vec<AgentId>) -> Result<Vec<AgentRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(AgentId::as_str).collect();
        self.query(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = ANY($1)"), &[&ids])
            .await?
            .iter()
            .map(row_to_agent)
            .collect()
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.query(&format!("SELECT {AGENT_COLS} FROM agents ORDER BY id"), &[])
            .await?
            .iter()
            .map(row_to_agent)
            .collect()
    }

    async fn record_hello(&self, id: AgentId, hostname: String, inventory: Inventory, seen: String) -> Result<()> {
        self.exec(
            "UPDATE agents SET hostname = $2, inventory = $3, last_seen = $4 WHERE id = $1",
            &[&id.as_str(), &hostname, &json(&inventory), &seen],
        )
        .await?;
        Ok(())
    }

    async fn touch(&self, ids: Vec<AgentId>, seen: String) -> Result<()> {
        let ids: Vec<&str> = ids.iter().map(AgentId::as_str).collect();
        // Rows locked in id order, as every statement that updates many
        // agents does (the results' chain points): in different orders two
        // of them deadlock. A deadlock victim (see `store_results`) changed
        // nothing: it runs again.
        retry_deadlocks("recording heartbeats", || async {
            let c = self.client().await.map_err(Failure::Other)?;
            c.execute(
                "UPDATE agents SET last_seen = $2
                 WHERE id IN (SELECT id FROM agents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE)",
                &[&ids, &seen],
            )
            .await
            .map(|_| ())
            .map_err(fail)
        })
        .await
    }

    async fn record_inventory(&self, id: AgentId, inventory: Inventory, seen: String) -> Result<()> {
        self.exec(
            "UPDATE agents SET inventory = $2, last_seen = $3 WHERE id = $1",
            &[&id.as_str(), &json(&inventory), &seen],
        )
        .await?;
        Ok(())
    }

    async fn revoke(&self, id: AgentId) -> Result<bool> {
        if self.exec("UPDATE agents SET revoked = true WHERE id = $1 AND NOT revoked", &[&id.as_str()]).await? == 1 {
            return Ok(true);
        }
        match self.query_opt("SELECT 1 FROM agents WHERE id = $1", &[&id.as_str()]).await? {
            Some(_) => Ok(false),
            None => Err(Error::NotFound(format!("agent {id} is not enrolled here; list agents with rewindctl agents"))),
        }
    }

    async fn counts(&self) -> Result<HashMap<AgentId, (u64, u64)>> {
        let mut out: HashMap<AgentId, (u64, u64)> = HashMap::new();
        for (table, alarms) in [("results", false), ("integrity_alarms", true)] {
            for r in self.query(&format!("SELECT agent, count(*) FROM {table} GROUP BY agent"), &[]).await? {
                let agent: String = get(&r, 0)?;
                let agent = AgentId::parse(&agent).map_err(|e| conv("agent", e))?;
                let n = u64_of(get(&r, 1)?);
                let entry = out.entry(agent).or_default();
                if alarms {
                    entry.1 = n;
                } else {
                    entry.0 = n;
                }
            }
        }
        Ok(out)
    }

    async fn put_operator(&self, hash: String, name: String, role: Role) -> Result<()> {
        self.exec(
            "INSERT INTO operators(hash, name, role) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO UPDATE SET name = excluded.name, role = excluded.role",
            &[&hash, &name, &role.as_str()],
        )
        .await?;
        Ok(())
    }

    async fn operators(&self) -> Result<Vec<(String, Role)>> {
        self.query("SELECT name, role FROM operators ORDER BY name, role", &[])
            .await?
            .iter()
            .map(|r| {
                let (name, role): (String, String) = (get(r, 0)?, get(r, 1)?);
                Role::parse(&role)
                    .map(|role| (name.clone(), role))
                    .ok_or_else(|| Error::Store(format!("operator {name}: unknown role {role:?}")))
            })
            .collect()
    }

    async fn revoke_operator(&self, name: String) -> Result<u64> {
        self.exec("DELETE FROM operators WHERE name = $1", &[&name]).await
    }

    async fn operator(&self, hash: String) -> Result<Option<(String, Role)>> {
        let Some(r) = self.query_opt("SELECT name, role FROM operators WHERE hash = $1", &[&hash]).await? else {
            return Ok(None);
        };
        let (name, role): (String, String) = (get(&r, 0)?, get(&r, 1)?);
        Role::parse(&role)
            .map(|role| Some((name, role)))
            .ok_or_else(|| Error::Store(format!("operator {hash}: unknown role {role:?}")))
    }

    async fn store_results(
        &self,
        batch: Vec<(StoredResult, Option<ChainPoint>)>,
        audit: Option<ResultAudit>,
    ) -> Result<(Vec<bool>, Vec<AuditEntry>)> {
        // PostgreSQL may still pick this transaction as a deadlock victim
        // (many agent rows are locked by the heartbeats and by other
        // batches, and the results' foreign keys share-lock them in their
        // own order): nothing of it was written, so it runs again.
        retry_deadlocks("storing results", || self.store_results_once(&batch, audit.clone())).await
    }

    async fn results(&self, agent: AgentId) -> Result<Vec<StoredResult>> {
        self.query(&format!("SELECT {RESULT_COLS} FROM results WHERE agent = $1 ORDER BY n"), &[&agent.as_str()])
            .await?
            .iter()
            .map(|r| row_to_result(r, &agent))
            .collect()
    }

    async fn result(&self, agent: AgentId, id: String) -> Result<Option<StoredResult>> {
        self.query_opt(
            &format!("SELECT {RESULT_COLS} FROM results WHERE id = $1 AND agent = $2"),
            &[&id, &agent.as_str()],
        )
        .await?
        .map(|r| row_to_result(&r, &agent))
        .transpose()
    }

    async fn stored_continuity(&self, ids: Vec<(AgentId, String)>) -> Result<HashMap<(AgentId, String), String>> {
        let (agents, rids): (Vec<&str>, Vec<&str>) = ids.iter().map(|(a, id)| (a.as_str(), id.as_str())).unzip();
        let rows = self
            .query(
                "SELECT r.agent, r.id, r.continuity FROM results r \
                 JOIN unnest($1::text[], $2::text[]) AS w(agent, id) ON r.id = w.id AND r.agent = w.agent",
                &[&agents, &rids],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let agent: String = get(r, 0)?;
                let agent = AgentId::parse(&agent).map_err(|e| conv("agent", e))?;
                Ok(((agent, get(r, 1)?), get(r, 2)?))
            })
            .collect()
    }

    async fn alarm(&self, agent: AgentId, kind: String, detail: String) -> Result<()> {
        self.exec(
            "INSERT INTO integrity_alarms(agent, kind, detail, time) VALUES ($1, $2, $3, $4)",
            &[&agent.as_str(), &kind, &detail, &crate::now()],
        )
        .await?;
        Ok(())
    }

    async fn alarms(&self, agent: AgentId) -> Result<Vec<(String, String)>> {
        self.query("SELECT kind, detail FROM integrity_alarms WHERE agent = $1 ORDER BY id", &[&agent.as_str()])
            .await?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
            .collect()
    }

    async fn all_alarms(&self) -> Result<Vec<(AgentId, String, String)>> {
        self.query("SELECT agent, kind, detail FROM integrity_alarms ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| {
                let agent: String = get(r, 0)?;
                let agent = AgentId::parse(&agent).map_err(|e| Error::Store(format!("alarm agent: {e}")))?;
                Ok((agent, get(r, 1)?, get(r, 2)?))
            })
            .collect()
    }

    async fn put_bundle(&self, b: BundleRecord) -> Result<()> {
        self.exec(
            "INSERT INTO bundles(id, product, release, sequence, bytes, uploaded) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (product, release) DO UPDATE SET id = excluded.id, sequence = excluded.sequence, bytes = excluded.bytes, uploaded = excluded.uploaded",
            &[&b.id, &b.product, &b.release, &i64_of(b.sequence), &b.bytes, &crate::now()],
        )
        .await?;
        Ok(())
    }

    async fn bundle(&self, product: String, release: Option<String>) -> Result<Option<BundleRecord>> {
        let row = match release {
            Some(rel) => {
                self.query_opt(
                    "SELECT id, product, release, sequence, bytes FROM bundles WHERE product = $1 AND release = $2",
                    &[&product, &rel],
                )
                .await?
            }
            None => {
                self.query_opt(
                    "SELECT b.id, b.product, b.release, b.sequence, b.bytes FROM deliveries d JOIN bundles b ON b.id = d.bundle
                     WHERE b.product = $1 AND d.kind = 'apply' ORDER BY d.n DESC LIMIT 1",
                    &[&product],
                )
                .await?
            }
        };
        row.as_ref().map(|r| row_to_bundle(r, 0)).transpose()
    }

    async fn add_deliveries(&self, ds: Vec<Delivery>) -> Result<()> {
        if ds.is_empty() {
            return Ok(());
        }
        // One statement for the batch: one round trip, atomic.
        let (mut ids, mut agents, mut bundles, mut kinds, mut parts) = (vec![], vec![], vec![], vec![], vec![]);
        for d in ds {
            ids.push(d.id);
            agents.push(d.agent.as_str().to_string());
            bundles.push(d.bundle);
            kinds.push(d.kind);
            parts.push(part_text(d.part.as_ref()));
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        self.check_fence(&tx).await?;
        tx.execute(
            "INSERT INTO deliveries(id, agent, bundle, kind, part, created)
             SELECT *, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
            &[&ids, &agents, &bundles, &kinds, &parts, &crate::now()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn pending_deliveries(&self, agent: AgentId) -> Result<Vec<(Delivery, BundleRecord)>> {
        self.query(
            "SELECT d.id, d.kind, b.id, b.product, b.release, b.sequence, b.bytes, d.part FROM deliveries d JOIN bundles b ON b.id = d.bundle
             WHERE d.agent = $1 AND d.acked IS NULL ORDER BY d.n",
            &[&agent.as_str()],
        )
        .await?
        .iter()
        .map(|r| {
            let bundle = row_to_bundle(r, 2)?;
            let part = part_from_text(&get::<String>(r, 7)?)?;
            Ok((Delivery { id: get(r, 0)?, agent: agent.clone(), bundle: bundle.id.clone(), kind: get(r, 1)?, part }, bundle))
        })
        .collect()
    }

    async fn pending_deliveries_of(&self, agents: Vec<AgentId>) -> Result<Vec<(Delivery, BundleRecord)>> {
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = agents.iter().map(AgentId::as_str).collect();
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT d.id, d.agent, d.bundle, d.kind, d.part FROM deliveries d
                 JOIN unnest($1::TEXT[]) WITH ORDINALITY AS a(agent, k) ON d.agent = a.agent
                 WHERE d.acked IS NULL ORDER BY a.k, d.n",
                &[&ids],
            )
            .await
            .map_err(pg)?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for r in &rows {
            let agent: String = get(r, 1)?;
            deliveries.push(Delivery {
                id: get(r, 0)?,
                agent: AgentId::parse(&agent).map_err(|e| conv("agent", e))?,
                bundle: get(r, 2)?,
                kind: get(r, 3)?,
                part: part_from_text(&get::<String>(r, 4)?)?,
            });
        }
        // Each bundle once (a rollout's deliveries share one).
        let mut wanted: Vec<&str> = deliveries.iter().map(|d| d.bundle.as_str()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let bundles: HashMap<String, BundleRecord> = c
            .query("SELECT id, product, release, sequence, bytes FROM bundles WHERE id = ANY($1)", &[&wanted])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| row_to_bundle(r, 0).map(|b| (b.id.clone(), b)))
            .collect::<Result<_>>()?;
        deliveries
            .into_iter()
            .map(|d| {
                let b = bundles.get(&d.bundle).cloned().ok_or_else(|| {
                    Error::Store(format!("delivery {} names bundle {} that is not stored", d.id, d.bundle))
                })?;
                Ok((d, b))
            })
            .collect()
    }

    async fn ack_deliveries(&self, acks: Vec<(AgentId, String)>) -> Result<()> {
        let (agents, ids): (Vec<&str>, Vec<&str>) = acks.iter().map(|(a, id)| (a.as_str(), id.as_str())).unzip();
        self.exec(
            "UPDATE deliveries d SET acked = $3 FROM unnest($1::text[], $2::text[]) AS a(id, agent) \
             WHERE d.id = a.id AND d.agent = a.agent AND d.acked IS NULL",
            &[&ids, &agents, &crate::now()],
        )
        .await?;
        Ok(())
    }

    async fn deliveries_of(&self, bundle: String) -> Result<Vec<(Delivery, bool)>> {
        self.query(
            "SELECT id, agent, kind, acked IS NOT NULL, part FROM deliveries WHERE bundle = $1 ORDER BY n",
            &[&bundle],
        )
        .await?
        .iter()
        .map(|r| {
            let agent: String = get(r, 1)?;
            Ok((
                Delivery {
                    id: get(r, 0)?,
                    agent: AgentId::parse(&agent).map_err(|e| conv("agent", e))?,
                    bundle: bundle.clone(),
                    kind: get(r, 2)?,
                    part: part_from_text(&get::<String>(r, 4)?)?,
                },
                get(r, 3)?,
            ))
        })
        .collect()
    }

    async fn append_audit_batch(
        &self,
        entries: Vec<(String, String)>,
        key: ed25519_dalek::SigningKey,
    ) -> Result<Vec<AuditEntry>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let out = append_audit_in(&tx, entries, &key).await?;
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        self.query(&format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq"), &[])
            .await?
            .iter()
            .map(row_to_audit)
            .collect()
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.exec(
            "INSERT INTO audit_checkpoints(seq, body) VALUES ($1, $2)",
            &[&i64_of(checkpoint.seq), &json(&checkpoint)],
        )
        .await?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.query("SELECT body FROM audit_checkpoints ORDER BY n", &[])
            .await?
            .iter()
            .map(|r| from_json("body", &get::<String>(r, 0)?))
            .collect()
    }

    async fn put_templates(
        &self,
        product: String,
        templates: Vec<(String, String)>,
        author: String,
        source: String,
        import: Option<String>,
    ) -> Result<Vec<TemplateVersion>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Versions are numbered newest + 1 per (product, name): serialize
        // writers of one product (a transaction-scoped advisory lock).
        tx.query("SELECT pg_advisory_xact_lock(hashtext('rewind.templates'), hashtext($1))", &[&product])
            .await
            .map_err(pg)?;
        let time = crate::now();
        if let Some(bundle) = &import {
            let new = tx
                .execute(
                    "INSERT INTO template_imports(product, bundle, time) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&product, bundle, &time],
                )
                .await
                .map_err(pg)?
                == 1;
            if !new {
                return Ok(Vec::new());
            }
        }
        let mut out = Vec::new();
        for (name, body) in templates {
            let row = tx
                .query_one(
                    "SELECT coalesce(max(version), 0)::BIGINT FROM templates WHERE product = $1 AND name = $2",
                    &[&product, &name],
                )
                .await
                .map_err(pg)?;
            let newest: i64 = get(&row, 0)?;
            let v = TemplateVersion {
                product: product.clone(),
                name,
                version: u32::try_from(newest + 1).unwrap_or(u32::MAX),
                body,
                author: author.clone(),
                source: source.clone(),
                time: time.clone(),
            };
            tx.execute(
                "INSERT INTO templates(product, name, version, body, author, source, time) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&v.product, &v.name, &i64::from(v.version), &v.body, &v.author, &v.source, &v.time],
            )
            .await
            .map_err(pg)?;
            out.push(v);
        }
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn template_versions(&self, product: Option<String>) -> Result<Vec<TemplateVersion>> {
        self.query(
            "SELECT product, name, version, body, author, source, time FROM templates
             WHERE $1::TEXT IS NULL OR product = $1 ORDER BY product, name, version",
            &[&product],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(TemplateVersion {
                product: get(r, 0)?,
                name: get(r, 1)?,
                version: u32::try_from(get::<i64>(r, 2)?).unwrap_or(u32::MAX),
                body: get(r, 3)?,
                author: get(r, 4)?,
                source: get(r, 5)?,
                time: get(r, 6)?,
            })
        })
        .collect()
    }

    async fn add_incident_update(&self, u: IncidentUpdate) -> Result<()> {
        self.exec(
            "INSERT INTO incident_updates(incident, product, release, kind, state, title, markdown, text, cause, time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &u.incident,
                &u.product,
                &u.release,
                &u.kind,
                &u.state,
                &u.title,
                &u.markdown,
                &u.text,
                &u.cause,
                &u.time,
            ],
        )
        .await?;
        Ok(())
    }

    async fn incident_updates(&self) -> Result<Vec<IncidentUpdate>> {
        self.query(
            "SELECT incident, product, release, kind, state, title, markdown, text, cause, time
             FROM incident_updates ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(IncidentUpdate {
                incident: get(r, 0)?,
                product: get(r, 1)?,
                release: get(r, 2)?,
                kind: get(r, 3)?,
                state: get(r, 4)?,
                title: get(r, 5)?,
                markdown: get(r, 6)?,
                text: get(r, 7)?,
                cause: get(r, 8)?,
                time: get(r, 9)?,
            })
        })
        .collect()
    }

    async fn add_webhook_attempt(&self, a: WebhookAttempt) -> Result<()> {
        self.exec(
            "INSERT INTO webhook_attempts(delivery, webhook, event, attempt, status, error, outcome, duration_ms, retry_in_ms, time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &a.delivery,
                &a.webhook,
                &a.event,
                &i64::from(a.attempt),
                &a.status.map(i32::from),
                &a.error,
                &a.outcome,
                &i64_of(a.duration_ms),
                &a.retry_in_ms.map(i64_of),
                &a.time,
            ],
        )
        .await?;
        Ok(())
    }

    async fn webhook_attempts(&self, limit: u32) -> Result<Vec<WebhookAttempt>> {
        self.query(
            "SELECT delivery, webhook, event, attempt, status, error, outcome, duration_ms, retry_in_ms, time FROM
             (SELECT * FROM webhook_attempts ORDER BY id DESC LIMIT $1) newest ORDER BY id",
            &[&i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(WebhookAttempt {
                delivery: get(r, 0)?,
                webhook: get(r, 1)?,
                event: get(r, 2)?,
                attempt: u32::try_from(get::<i64>(r, 3)?).unwrap_or(u32::MAX),
                status: get::<Option<i32>>(r, 4)?.map(|v| u16::try_from(v).unwrap_or(0)),
                error: get(r, 5)?,
                outcome: get(r, 6)?,
                duration_ms: u64_of(get(r, 7)?),
                retry_in_ms: get::<Option<i64>>(r, 8)?.map(u64_of),
                time: get(r, 9)?,
            })
        })
        .collect()
    }

    async fn put_rollout(&self, r: RolloutRecord) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        self.check_fence(&tx).await?;
        tx.execute(
            "INSERT INTO rollouts(id, product, sequence, state, doc, updated) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc, updated = excluded.updated",
            &[&r.id, &r.product, &i64_of(r.sequence), &r.state, &r.doc, &crate::now()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn share(&self, name: String, value: Vec<u8>) -> Result<Vec<u8>> {
        // Two statements: a racing replica's insert waits for the winner's
        // commit and then does nothing; the read after it sees the winner.
        self.exec(
            "INSERT INTO shared_values(name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &value],
        )
        .await?;
        self.shared(name.clone())
            .await?
            .ok_or_else(|| Error::Store(format!("shared value {name}: stored but not found again")))
    }

    async fn shared(&self, name: String) -> Result<Option<Vec<u8>>> {
        self.query_opt("SELECT value FROM shared_values WHERE name = $1", &[&name])
            .await?
            .map(|r| get(&r, 0))
            .transpose()
    }

    async fn lead(&self, replica: String, url: String, ttl_ms: u64) -> Result<super::Lease> {
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        // On the lease's own connection, taken out of its slot while in use:
        // put back only after an answer, so a call abandoned half-way (the
        // caller's timeout) or failed leaves a new connection for the next.
        let mut slot = self.lease.lock().await;
        let c = match slot.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.dedicated().await?,
        };
        // Take the lease when it is free or expired, or held by an earlier
        // process of the same replica (`<replica>/<process>`: a restart
        // takes over at once) — a new holder, so the token grows — or
        // renew our own (same token).
        let won = c
            .query_opt(
                "INSERT INTO leader(id, holder, url, token, expires) VALUES (1, $1, $2, 1, now() + $3::float8 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET
                    token = CASE WHEN leader.holder = excluded.holder THEN leader.token ELSE leader.token + 1 END,
                    holder = excluded.holder, url = excluded.url, expires = excluded.expires
                 WHERE leader.holder = excluded.holder OR leader.expires < now()
                    OR split_part(leader.holder, '/', 1) = split_part(excluded.holder, '/', 1)
                 RETURNING token",
                &[&replica, &url, &(ttl as f64)],
            )
            .await
            .map_err(pg)?;
        let lease = match won {
            Some(r) => super::Lease::Leader { token: get(&r, 0)? },
            None => {
                let holder = c.query_opt("SELECT url FROM leader WHERE id = 1", &[]).await.map_err(pg)?;
                super::Lease::Follower { leader: holder.map(|r| get(&r, 0)).transpose()? }
            }
        };
        *slot = Some(c);
        Ok(lease)
    }

    fn set_fence(&self, fence: Option<super::Fence>) {
        *self.fence.lock().expect("fence lock") = fence;
    }

    async fn notify(&self, message: String) -> Result<()> {
        self.exec("SELECT pg_notify($1, $2)", &[&CHANNEL, &message]).await.map(|_| ())
    }

    async fn listen(&self) -> Option<tokio::sync::mpsc::Receiver<super::Signal>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match me.listen_once(&tx).await {
                    Ok(()) if tx.is_closed() => return,
                    Ok(()) => tracing::warn!("replica channel closed; listening again"),
                    Err(e) => tracing::warn!("replica channel at {}: {e}; retrying in {delay:?}", me.shown),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
        Some(rx)
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        self.query("SELECT id, product, sequence, state, doc FROM rollouts ORDER BY n", &[])
            .await?
            .iter()
            .map(|r| {
                Ok(RolloutRecord {
                    id: get(r, 0)?,
                    product: get(r, 1)?,
                    sequence: u64_of(get(r, 2)?),
                    state: get(r, 3)?,
                    doc: get(r, 4)?,
                })
            })
            .collect()
    }

    async fn flush(&self) -> Result<()> {
        // Every write above is committed (durable on the server) before its
        // call returns; nothing is buffered here. Checks the server answers.
        self.query("SELECT 1", &[]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db?password=secret&x=1"), "postgres://u@h/db?password=***&x=1");
        assert_eq!(redact("host=h user=u password=secret dbname=d"), "host=h user=u password=*** dbname=d");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn tls_settings_are_split_off() {
        let (u, t) = split_tls("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3");
        assert_eq!(u, "postgres://u@h/db?sslmode=require&connect_timeout=3");
        assert!(t.required);
        assert_eq!(t.root.as_deref(), Some(std::path::Path::new("/ca.pem")));
        let (u, t) = split_tls("host=h sslmode=disable");
        assert_eq!((u.as_str(), t.required), ("host=h sslmode=disable", false));
        assert!(check_url("postgres://u@h/db?sslmode=require").unwrap_err().contains("sslrootcert"));
        assert!(check_url("postgres://u:pw@h/db?bogus=1").unwrap_err().contains("u:***@h"));
        assert!(check_url("postgres://u:pw@h:5432/db").is_ok());
    }
}
