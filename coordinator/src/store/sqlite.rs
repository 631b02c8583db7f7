//! The SQLite [`Store`]: in WAL mode, a writer connection owned by one
//! thread that runs the store's calls in order, a read-only connection used
//! from blocking threads (`spawn_blocking`) for ingestion's reads, and a
//! checkpoint thread; never used from the async runtime itself. Its own
//! schema version table, migrated forward in one transaction at open.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rewind_shared::fleet::{AgentId, Inventory, Labels};
use rusqlite::{Connection, OptionalExtension, params};

use rewind_shared::audit::{AuditEntry, Checkpoint};
use rewind_shared::report::ChainPoint;

use super::{
    AgentRecord, BundleRecord, Delivery, IncidentUpdate, Redeem, ResultAudit, RolloutRecord, Store, StoredResult,
    TemplateVersion, WebhookAttempt, part_from_text, part_text,
};
use crate::auth::Role;
use crate::error::{Error, Result};

/// Schema migrations, in order; `schema_version` holds how many ran.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE enrollment_tokens(
    hash TEXT PRIMARY KEY,
    labels TEXT NOT NULL,          -- JSON object
    uses_left INTEGER NOT NULL,
    expires_unix INTEGER NOT NULL,
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
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE operators(
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL
);
",
    r"
ALTER TABLE agents ADD COLUMN audit_key TEXT NOT NULL DEFAULT '';
",
    r"
ALTER TABLE agents ADD COLUMN chain TEXT;     -- JSON ChainPoint of the newest accepted result
CREATE TABLE results(
    id TEXT PRIMARY KEY,           -- the agent's report id: delivery is idempotent by it
    agent TEXT NOT NULL REFERENCES agents(id),
    plan TEXT NOT NULL,
    signed_plan TEXT,
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    status TEXT NOT NULL,
    continuity TEXT NOT NULL,      -- ok | gap | fork
    payload BLOB NOT NULL,         -- exact signed bytes
    signature BLOB NOT NULL,
    received TEXT NOT NULL
);
CREATE INDEX results_agent ON results(agent, received);
CREATE TABLE integrity_alarms(
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,            -- bad_signature | chain_gap | chain_fork
    detail TEXT NOT NULL,
    time TEXT NOT NULL
);
",
    r"
CREATE TABLE bundles(
    id TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    bytes BLOB NOT NULL,           -- the bundle file as uploaded
    uploaded TEXT NOT NULL,
    UNIQUE(product, release)
);
CREATE TABLE deliveries(
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL REFERENCES agents(id),
    bundle TEXT NOT NULL REFERENCES bundles(id),
    kind TEXT NOT NULL,            -- apply | rollback
    created TEXT NOT NULL,
    acked TEXT                     -- set when the agent ran it and acknowledged
);
CREATE INDEX deliveries_pending ON deliveries(agent, created) WHERE acked IS NULL;
",
    r"
CREATE TABLE audit(
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
",
    r"
CREATE TABLE audit_checkpoints(
    seq INTEGER NOT NULL,
    body TEXT NOT NULL             -- rewind_shared::audit::Checkpoint as JSON
);
",
    r"
CREATE TABLE rollouts(
    id TEXT PRIMARY KEY,           -- <product>@<sequence>
    product TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,             -- the engine's JSON document (machine + bookkeeping)
    updated TEXT NOT NULL
);
",
    r"
CREATE TABLE templates(
    product TEXT NOT NULL,
    name TEXT NOT NULL,            -- event: incident_started, rollback_started, ...
    version INTEGER NOT NULL,
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
    id INTEGER PRIMARY KEY,
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
    id INTEGER PRIMARY KEY,
    delivery TEXT NOT NULL,
    webhook TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    outcome TEXT NOT NULL,         -- delivered | retrying | failed
    duration_ms INTEGER NOT NULL,
    retry_in_ms INTEGER,
    time TEXT NOT NULL
);
",
    // Partial rollbacks: which part of the bundle a rollback delivery is.
    r"
ALTER TABLE deliveries ADD COLUMN part TEXT NOT NULL DEFAULT '';
",
    // Values every replica shares (CA, audit key, admin token).
    r"
CREATE TABLE shared_values(name TEXT PRIMARY KEY, value BLOB NOT NULL);
",
];

/// A SQLite-backed store.
///
/// Durability: WAL with `synchronous = FULL`, so a commit — and with it
/// every acknowledgement the coordinator sends after one (a result, an
/// enrollment) — survives a power loss, not only a crash of the process.
/// Checkpoints (copying the WAL back into the database file, with its
/// fsync) run on a background thread with its own connection, not in the
/// commit of whichever write crosses the threshold: under a stream of
/// result batches that commit was paying for a checkpoint every time
/// (docs/scaling.md). The writer's own checkpoint stays as a safety net
/// for a WAL past [`WRITER_CHECKPOINT_PAGES`].
#[derive(Clone)]
pub struct SqliteStore {
    /// Jobs for the thread that owns the writer connection: a caller waits
    /// for its answer without holding a thread (a connect storm of
    /// thousands of hellos queues here, instead of parking hundreds of
    /// blocking-pool threads on a lock).
    writer: std::sync::mpsc::Sender<WriteJob>,
    /// A read-only connection for the hot reads of result ingestion, so
    /// they do not wait behind the writes (WAL: readers see what was
    /// committed when they start).
    reader: Arc<Mutex<Connection>>,
}

fn sql(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened, is not a database, or was written by a
    /// newer coordinator (its schema version is above ours).
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|e| Error::Store(e.to_string()))?
    }

    fn open_blocking(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        }
        let ctx = |e: rusqlite::Error| Error::Store(format!("{}: {e}", path.display()));
        let mut conn = Connection::open(path).map_err(ctx)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(ctx)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}; PRAGMA cache_size = -32768;"
        ))
        .map_err(ctx)?;
        let tx = conn.transaction().map_err(ctx)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)").map_err(ctx)?;
        let version: Option<i64> =
            tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional().map_err(ctx)?;
        let version = usize::try_from(version.unwrap_or(0)).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(Error::Store(format!(
                "{}: schema version {version} is newer than this coordinator's {}; run a newer rewind-coordinator",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        for m in &MIGRATIONS[version..] {
            tx.execute_batch(m).map_err(ctx)?;
        }
        tx.execute("DELETE FROM schema_version", []).map_err(ctx)?;
        tx.execute("INSERT INTO schema_version VALUES (?1)", [MIGRATIONS.len() as i64]).map_err(ctx)?;
        tx.commit().map_err(ctx)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ctx)?;
        reader.busy_timeout(std::time::Duration::from_secs(10)).map_err(ctx)?;
        let checkpointer = Connection::open(path).map_err(ctx)?;
        let checkpoints = Arc::new(Checkpoints::default());
        let theirs = Arc::clone(&checkpoints);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || theirs.run(&checkpointer))
            .map_err(|e| Error::Store(format!("{}: starting the checkpoint thread: {e}", path.display())))?;
        let (writer, jobs) = std::sync::mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                // Ends when the last clone of the store is dropped; the
                // checkpointer with it.
                for job in jobs {
                    let before = conn.total_changes();
                    // A call that panics answers nothing (its caller gets an
                    // error; its transaction rolls back); the next ones run.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                    if conn.total_changes() != before {
                        checkpoints.written();
                    }
                }
                checkpoints.close();
            })
            .map_err(|e| Error::Store(format!("{}: starting the writer thread: {e}", path.display())))?;
        Ok(SqliteStore { writer, reader: Arc::new(Mutex::new(reader)) })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let stopped = || Error::Store("the store call panicked, or the store is closed".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer
            .send(Box::new(move |c: &mut Connection| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// [`SqliteStore::call`] on the read-only connection.
    async fn call_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().map_err(|_| Error::Store("connection lock poisoned by an earlier panic".into()))?;
            f(&c)
        })
        .await
        .map_err(|e| Error::Store(e.to_string()))?
    }
}

/// A closure run on the writer connection's thread.
type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// WAL pages after which a commit checkpoints by itself (≈ 40 MiB): only
/// when the background checkpointer falls behind.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// How long the background checkpointer lets writes gather after the first
/// one it is woken for.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(250);

/// The background checkpointer's state: woken by writes, idle (no wake-up
/// at all) while there are none.
#[derive(Default)]
struct Checkpoints {
    state: Mutex<CheckpointState>,
    wake: Condvar,
}

#[derive(Default)]
struct CheckpointState {
    written: bool,
    closed: bool,
}

impl Checkpoints {
    /// The store is closed: the thread ends.
    fn close(&self) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closed = true;
        self.wake.notify_one();
    }

    /// A write happened (on the writer connection).
    fn written(&self) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.written {
            s.written = true;
            self.wake.notify_one();
        }
    }

    /// Until the store is closed: wait for a write, let more gather for
    /// [`CHECKPOINT_AFTER`], then a PASSIVE checkpoint (it never blocks the
    /// writer or a reader; it copies what no reader still needs). The next
    /// write starts the WAL over once everything in it is in the database.
    fn run(&self, conn: &Connection) {
        loop {
            {
                let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                while !s.written && !s.closed {
                    s = self.wake.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if s.closed {
                    return;
                }
            }
            std::thread::sleep(CHECKPOINT_AFTER);
            self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).written = false;
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!("SQLite store: background checkpoint: {e}");
            }
        }
    }
}

/// Appends `(kind, params)` entries after the chain's head inside `tx`,
/// sealed by one signature on the last (DESIGN §10).
fn append_audit_in(
    tx: &rusqlite::Transaction<'_>,
    entries: Vec<(String, String)>,
    key: &ed25519_dalek::SigningKey,
) -> Result<Vec<AuditEntry>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let head = tx
        .query_row(
            "SELECT seq, time, kind, params, prev, hash, signature FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            row_to_audit,
        )
        .optional()
        .map_err(sql)?;
    let out = rewind_shared::audit::seal(head.as_ref(), entries, crate::now, key);
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO audit(seq, time, kind, params, prev, hash, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(sql)?;
    for e in &out {
        insert
            .execute(params![
                i64::try_from(e.seq).unwrap_or(i64::MAX),
                e.time,
                e.kind,
                e.params,
                e.prev.to_string(),
                e.hash.to_string(),
                e.signature
            ])
            .map_err(sql)?;
    }
    Ok(out)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("value serializes")
}

fn from_json<T: serde::de::DeserializeOwned>(col: usize, s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e)))
}

fn row_to_agent(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRecord> {
    let id: String = r.get(0)?;
    Ok(AgentRecord {
        id: AgentId::parse(&id)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?,
        hostname: r.get(1)?,
        labels: from_json(2, &r.get::<_, String>(2)?)?,
        fingerprint: r.get(3)?,
        enrolled: r.get(4)?,
        last_seen: r.get(5)?,
        inventory: from_json(6, &r.get::<_, String>(6)?)?,
        revoked: r.get(7)?,
        audit_key: r.get(8)?,
        chain: r.get::<_, Option<String>>(9)?.map(|s| from_json(9, &s)).transpose()?,
    })
}

fn row_to_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let digest = |i: usize| -> rusqlite::Result<rewind_shared::Digest> {
        let s: String = r.get(i)?;
        s.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    };
    Ok(AuditEntry {
        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        time: r.get(1)?,
        kind: r.get(2)?,
        params: r.get(3)?,
        prev: digest(4)?,
        hash: digest(5)?,
        signature: r.get(6)?,
    })
}

const AGENT_COLS: &str = "id, hostname, labels, fingerprint, enrolled, last_seen, inventory, revoked, audit_key, chain";

#[async_trait]
impl Store for SqliteStore {
    async fn create_token(&self, hash: String, labels: Labels, uses: u32, expires_unix: i64) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO enrollment_tokens(hash, labels, uses_left, expires_unix, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, json(&labels), uses, expires_unix, crate::now()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn redeem_token(&self, hash: String, now_unix: i64) -> Result<Redeem> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let row: Option<(String, i64, i64)> = tx
                .query_row(
                    "SELECT labels, uses_left, expires_unix FROM enrollment_tokens WHERE hash = ?1",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(sql)?;
            let outcome = match row {
                None => Redeem::Unknown,
                Some((_, _, expires)) if expires <= now_unix => Redeem::Expired,
                Some((_, left, _)) if left <= 0 => Redeem::UsedUp,
                Some((labels, _, _)) => {
                    tx.execute("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE hash = ?1", [&hash])
                        .map_err(sql)?;
                    Redeem::Accepted(from_json(0, &labels).map_err(sql)?)
                }
            };
            tx.commit().map_err(sql)?;
            Ok(outcome)
        })
        .await
    }

    async fn insert_agent(&self, a: AgentRecord) -> Result<()> {
        self.call(move |c| {
            c.execute(
                &format!("INSERT INTO agents({AGENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    a.id.as_str(),
                    a.hostname,
                    json(&a.labels),
                    a.fingerprint,
                    a.enrolled,
                    a.last_seen,
                    json(&a.inventory),
                    a.revoked,
                    a.audit_key,
                    a.chain.as_ref().map(json)
                ],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>> {
        self.call(move |c| {
            c.query_row(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?1"), [id.as_str()], row_to_agent)
                .optional()
                .map_err(sql)
        })
        .await
    }

    async fn agents_by_id(&self, ids: Vec<AgentId>) -> Result<Vec<AgentRecord>> {
        self.call_read(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?1")).map_err(sql)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(a) = st.query_row([id.as_str()], row_to_agent).optional().map_err(sql)? {
                    out.push(a);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.call(move |c| {
            let mut st = c.prepare(&format!("SELECT {AGENT_COLS} FROM agents ORDER BY id")).map_err(sql)?;
            st.query_map([], row_to_agent).map_err(sql)?.collect::<rusqlite::Result<_>>().map_err(sql)
        })
        .await
    }

    async fn record_hello(&self, id: AgentId, hostname: String, inventory: Inventory, seen: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE agents SET hostname = ?2, inventory = ?3, last_seen = ?4 WHERE id = ?1",
                params![id.as_str(), hostname, json(&inventory), seen],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn touch(&self, ids: Vec<AgentId>, seen: String) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let mut st = tx.prepare_cached("UPDATE agents SET last_seen = ?2 WHERE id = ?1").map_err(sql)?;
                for id in &ids {
                    st.execute(params![id.as_str(), seen]).map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)
        })
        .await
    }

    async fn record_inventory(&self, id: AgentId, inventory: Inventory, seen: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE agents SET inventory = ?2, last_seen = ?3 WHERE id = ?1",
                params![id.as_str(), json(&inventory), seen],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn revoke(&self, id: AgentId) -> Result<bool> {
        self.call(move |c| {
            let revoked: Option<bool> = c
                .query_row("SELECT revoked FROM agents WHERE id = ?1", [id.as_str()], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            match revoked {
                None => {
                    Err(Error::NotFound(format!("agent {id} is not enrolled here; list agents with rewindctl agents")))
                }
                Some(true) => Ok(false),
                Some(false) => {
                    c.execute("UPDATE agents SET revoked = 1 WHERE id = ?1", [id.as_str()]).map_err(sql)?;
                    Ok(true)
                }
            }
        })
        .await
    }

    async fn counts(&self) -> Result<HashMap<AgentId, (u64, u64)>> {
        self.call(move |c| {
            let mut out: HashMap<AgentId, (u64, u64)> = HashMap::new();
            for (table, alarms) in [("results", false), ("integrity_alarms", true)] {
                let mut st = c.prepare(&format!("SELECT agent, count(*) FROM {table} GROUP BY agent")).map_err(sql)?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(sql)?;
                for row in rows {
                    let (agent, n) = row.map_err(sql)?;
                    let agent =
                        AgentId::parse(&agent).map_err(|e| Error::Store(format!("{table}.agent {agent:?}: {e}")))?;
                    let entry = out.entry(agent).or_default();
                    let n = u64::try_from(n).unwrap_or(0);
                    if alarms { entry.1 = n } else { entry.0 = n }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_operator(&self, hash: String, name: String, role: Role) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO operators(hash, name, role) VALUES (?1, ?2, ?3)",
                params![hash, name, role.as_str()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn share(&self, name: String, value: Vec<u8>) -> Result<Vec<u8>> {
        self.call(move |c| {
            c.execute("INSERT OR IGNORE INTO shared_values(name, value) VALUES (?1, ?2)", params![name, value])
                .map_err(sql)?;
            c.query_row("SELECT value FROM shared_values WHERE name = ?1", [&name], |r| r.get(0)).map_err(sql)
        })
        .await
    }

    async fn shared(&self, name: String) -> Result<Option<Vec<u8>>> {
        self.call(move |c| {
            c.query_row("SELECT value FROM shared_values WHERE name = ?1", [&name], |r| r.get(0))
                .optional()
                .map_err(sql)
        })
        .await
    }

    async fn operators(&self) -> Result<Vec<(String, Role)>> {
        self.call(|c| {
            let mut st = c.prepare("SELECT name, role FROM operators ORDER BY name, role").map_err(sql)?;
            let rows: Vec<(String, String)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)?;
            rows.into_iter()
                .map(|(n, r)| {
                    Role::parse(&r)
                        .map(|role| (n.clone(), role))
                        .ok_or_else(|| Error::Store(format!("operator {n}: unknown role {r:?}")))
                })
                .collect()
        })
        .await
    }

    async fn revoke_operator(&self, name: String) -> Result<u64> {
        self.call(move |c| {
            let n = c.execute("DELETE FROM operators WHERE name = ?1", [&name]).map_err(sql)?;
            Ok(n as u64)
        })
        .await
    }

    async fn operator(&self, hash: String) -> Result<Option<(String, Role)>> {
        self.call(move |c| {
            let row: Option<(String, String)> = c
                .query_row("SELECT name, role FROM operators WHERE hash = ?1", [&hash], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(sql)?;
            row.map(|(n, r)| {
                Role::parse(&r)
                    .map(|role| (n, role))
                    .ok_or_else(|| Error::Store(format!("operator {hash}: unknown role {r:?}")))
            })
            .transpose()
        })
        .await
    }

    async fn store_results(
        &self,
        batch: Vec<(StoredResult, Option<ChainPoint>)>,
        audit: Option<ResultAudit>,
    ) -> Result<(Vec<bool>, Vec<AuditEntry>)> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let mut news = Vec::with_capacity(batch.len());
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO results(id, agent, plan, signed_plan, product, release, sequence, status, continuity, payload, signature, received)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )
                    .map_err(sql)?;
                // Each agent's chain point moves once, to the last point
                // among its results inserted now (a batch may carry many of
                // one agent's results; their points only rise).
                let mut chains: HashMap<&str, &ChainPoint> = HashMap::new();
                let now = crate::now();
                for (r, point) in &batch {
                    let new = insert
                        .execute(params![
                            r.id,
                            r.agent.as_str(),
                            r.plan,
                            r.signed_plan,
                            r.product,
                            r.release,
                            i64::try_from(r.sequence).unwrap_or(i64::MAX),
                            r.status,
                            r.continuity,
                            r.payload,
                            r.signature,
                            now
                        ])
                        .map_err(sql)?
                        == 1;
                    if let (true, Some(point)) = (new, point) {
                        chains.insert(r.agent.as_str(), point);
                    }
                    news.push(new);
                }
                let mut advance = tx.prepare_cached("UPDATE agents SET chain = ?2 WHERE id = ?1").map_err(sql)?;
                for (agent, point) in chains {
                    advance.execute(params![agent, json(point)]).map_err(sql)?;
                }
            }
            let audited = match audit {
                Some(a) => {
                    let key = a.key.clone();
                    append_audit_in(&tx, a.entries(&news), &key)?
                }
                None => Vec::new(),
            };
            tx.commit().map_err(sql)?;
            Ok((news, audited))
        })
        .await
    }

    async fn results(&self, agent: AgentId) -> Result<Vec<StoredResult>> {
        self.call(move |c| {
            let mut st = c
                .prepare(&format!("SELECT {RESULT_COLS} FROM results WHERE agent = ?1 ORDER BY received, id"))
                .map_err(sql)?;
            st.query_map([agent.as_str()], |r| row_to_result(r, &agent))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)
        })
        .await
    }

    async fn result(&self, agent: AgentId, id: String) -> Result<Option<StoredResult>> {
        self.call(move |c| {
            c.prepare_cached(&format!("SELECT {RESULT_COLS} FROM results WHERE id = ?1 AND agent = ?2"))
                .map_err(sql)?
                .query_row([id.as_str(), agent.as_str()], |r| row_to_result(r, &agent))
                .optional()
                .map_err(sql)
        })
        .await
    }

    async fn stored_continuity(&self, ids: Vec<(AgentId, String)>) -> Result<HashMap<(AgentId, String), String>> {
        self.call_read(move |c| {
            let mut st =
                c.prepare_cached("SELECT continuity FROM results WHERE id = ?1 AND agent = ?2").map_err(sql)?;
            let mut out = HashMap::new();
            for (agent, id) in ids {
                if let Some(continuity) =
                    st.query_row([id.as_str(), agent.as_str()], |r| r.get::<_, String>(0)).optional().map_err(sql)?
                {
                    out.insert((agent, id), continuity);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn alarm(&self, agent: AgentId, kind: String, detail: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO integrity_alarms(agent, kind, detail, time) VALUES (?1, ?2, ?3, ?4)",
                params![agent.as_str(), kind, detail, crate::now()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn alarms(&self, agent: AgentId) -> Result<Vec<(String, String)>> {
        self.call(move |c| {
            let mut st =
                c.prepare("SELECT kind, detail FROM integrity_alarms WHERE agent = ?1 ORDER BY id").map_err(sql)?;
            st.query_map([agent.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)
        })
        .await
    }

    async fn all_alarms(&self) -> Result<Vec<(AgentId, String, String)>> {
        self.call(move |c| {
            let mut st = c.prepare("SELECT agent, kind, detail FROM integrity_alarms ORDER BY id").map_err(sql)?;
            let rows: Vec<(String, String, String)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)?;
            rows.into_iter()
                .map(|(a, k, d)| Ok((AgentId::parse(&a).map_err(|e| Error::Store(format!("alarm agent: {e}")))?, k, d)))
                .collect()
        })
        .await
    }

    async fn put_bundle(&self, b: BundleRecord) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO bundles(id, product, release, sequence, bytes, uploaded) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(product, release) DO UPDATE SET id = excluded.id, sequence = excluded.sequence, bytes = excluded.bytes, uploaded = excluded.uploaded",
                params![b.id, b.product, b.release, i64::try_from(b.sequence).unwrap_or(i64::MAX), b.bytes, crate::now()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn bundle(&self, product: String, release: Option<String>) -> Result<Option<BundleRecord>> {
        self.call(move |c| {
            let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<BundleRecord> {
                Ok(BundleRecord {
                    id: r.get(0)?,
                    product: r.get(1)?,
                    release: r.get(2)?,
                    sequence: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    bytes: r.get(4)?,
                })
            };
            match release {
                Some(rel) => c
                    .query_row("SELECT id, product, release, sequence, bytes FROM bundles WHERE product = ?1 AND release = ?2", [&product, &rel], row)
                    .optional(),
                None => c
                    .query_row(
                        "SELECT b.id, b.product, b.release, b.sequence, b.bytes FROM deliveries d JOIN bundles b ON b.id = d.bundle
                         WHERE b.product = ?1 AND d.kind = 'apply' ORDER BY d.created DESC, d.rowid DESC LIMIT 1",
                        [&product],
                        row,
                    )
                    .optional(),
            }
            .map_err(sql)
        })
        .await
    }

    async fn add_deliveries(&self, ds: Vec<Delivery>) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO deliveries(id, agent, bundle, kind, part, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(sql)?;
                let now = crate::now();
                for d in &ds {
                    st.execute(params![d.id, d.agent.as_str(), d.bundle, d.kind, part_text(d.part.as_ref()), now])
                        .map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)
        })
        .await
    }

    async fn pending_deliveries(&self, agent: AgentId) -> Result<Vec<(Delivery, BundleRecord)>> {
        self.call(move |c| {
            let mut st = c
                .prepare(
                    "SELECT d.id, d.kind, b.id, b.product, b.release, b.sequence, b.bytes, d.part FROM deliveries d JOIN bundles b ON b.id = d.bundle
                     WHERE d.agent = ?1 AND d.acked IS NULL ORDER BY d.created, d.rowid",
                )
                .map_err(sql)?;
            st.query_map([agent.as_str()], |r| {
                Ok((
                    Delivery {
                        id: r.get(0)?,
                        agent: agent.clone(),
                        bundle: r.get(2)?,
                        kind: r.get(1)?,
                        part: stored_part(r, 7)?,
                    },
                    BundleRecord {
                        id: r.get(2)?,
                        product: r.get(3)?,
                        release: r.get(4)?,
                        sequence: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                        bytes: r.get(6)?,
                    },
                ))
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql)
        })
        .await
    }

    async fn ack_deliveries(&self, acks: Vec<(AgentId, String)>) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let now = crate::now();
                let mut st = tx
                    .prepare_cached("UPDATE deliveries SET acked = ?3 WHERE id = ?1 AND agent = ?2 AND acked IS NULL")
                    .map_err(sql)?;
                for (agent, id) in &acks {
                    st.execute(params![id, agent.as_str(), now]).map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)
        })
        .await
    }

    async fn deliveries_of(&self, bundle: String) -> Result<Vec<(Delivery, bool)>> {
        self.call(move |c| {
            let mut st = c.prepare("SELECT id, agent, kind, acked IS NOT NULL, part FROM deliveries WHERE bundle = ?1 ORDER BY created, rowid").map_err(sql)?;
            st.query_map([&bundle], |r| {
                let agent: String = r.get(1)?;
                Ok((
                    Delivery {
                        id: r.get(0)?,
                        agent: AgentId::parse(&agent).map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)))?,
                        bundle: bundle.clone(),
                        kind: r.get(2)?,
                        part: stored_part(r, 4)?,
                    },
                    r.get(3)?,
                ))
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql)
        })
        .await
    }

    async fn append_audit_batch(
        &self,
        entries: Vec<(String, String)>,
        key: ed25519_dalek::SigningKey,
    ) -> Result<Vec<AuditEntry>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let out = append_audit_in(&tx, entries, &key)?;
            tx.commit().map_err(sql)?;
            Ok(out)
        })
        .await
    }

    async fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        self.call(|c| {
            let mut st = c
                .prepare("SELECT seq, time, kind, params, prev, hash, signature FROM audit ORDER BY seq")
                .map_err(sql)?;
            st.query_map([], row_to_audit).map_err(sql)?.collect::<rusqlite::Result<_>>().map_err(sql)
        })
        .await
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit_checkpoints(seq, body) VALUES (?1, ?2)",
                params![i64::try_from(checkpoint.seq).unwrap_or(i64::MAX), json(&checkpoint)],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.call(|c| {
            let mut st = c.prepare("SELECT body FROM audit_checkpoints ORDER BY rowid").map_err(sql)?;
            st.query_map([], |r| from_json(0, &r.get::<_, String>(0)?))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)
        })
        .await
    }

    async fn put_templates(
        &self,
        product: String,
        templates: Vec<(String, String)>,
        author: String,
        source: String,
        import: Option<String>,
    ) -> Result<Vec<TemplateVersion>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let time = crate::now();
            if let Some(bundle) = &import {
                let new = tx
                    .execute(
                        "INSERT OR IGNORE INTO template_imports(product, bundle, time) VALUES (?1, ?2, ?3)",
                        params![product, bundle, time],
                    )
                    .map_err(sql)?
                    == 1;
                if !new {
                    return Ok(Vec::new());
                }
            }
            let mut out = Vec::new();
            for (name, body) in templates {
                let newest: i64 = tx
                    .query_row(
                        "SELECT coalesce(max(version), 0) FROM templates WHERE product = ?1 AND name = ?2",
                        params![product, name],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
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
                    "INSERT INTO templates(product, name, version, body, author, source, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![v.product, v.name, v.version, v.body, v.author, v.source, v.time],
                )
                .map_err(sql)?;
                out.push(v);
            }
            tx.commit().map_err(sql)?;
            Ok(out)
        })
        .await
    }

    async fn template_versions(&self, product: Option<String>) -> Result<Vec<TemplateVersion>> {
        self.call(move |c| {
            let mut st = c
                .prepare(
                    "SELECT product, name, version, body, author, source, time FROM templates
                     WHERE ?1 IS NULL OR product = ?1 ORDER BY product, name, version",
                )
                .map_err(sql)?;
            st.query_map([product], |r| {
                Ok(TemplateVersion {
                    product: r.get(0)?,
                    name: r.get(1)?,
                    version: r.get(2)?,
                    body: r.get(3)?,
                    author: r.get(4)?,
                    source: r.get(5)?,
                    time: r.get(6)?,
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql)
        })
        .await
    }

    async fn add_incident_update(&self, u: IncidentUpdate) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO incident_updates(incident, product, release, kind, state, title, markdown, text, cause, time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![u.incident, u.product, u.release, u.kind, u.state, u.title, u.markdown, u.text, u.cause, u.time],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn incident_updates(&self) -> Result<Vec<IncidentUpdate>> {
        self.call(|c| {
            let mut st = c
                .prepare(
                    "SELECT incident, product, release, kind, state, title, markdown, text, cause, time
                     FROM incident_updates ORDER BY id",
                )
                .map_err(sql)?;
            st.query_map([], |r| {
                Ok(IncidentUpdate {
                    incident: r.get(0)?,
                    product: r.get(1)?,
                    release: r.get(2)?,
                    kind: r.get(3)?,
                    state: r.get(4)?,
                    title: r.get(5)?,
                    markdown: r.get(6)?,
                    text: r.get(7)?,
                    cause: r.get(8)?,
                    time: r.get(9)?,
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql)
        })
        .await
    }

    async fn add_webhook_attempt(&self, a: WebhookAttempt) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO webhook_attempts(delivery, webhook, event, attempt, status, error, outcome, duration_ms, retry_in_ms, time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    a.delivery,
                    a.webhook,
                    a.event,
                    a.attempt,
                    a.status,
                    a.error,
                    a.outcome,
                    i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
                    a.retry_in_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
                    a.time
                ],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn webhook_attempts(&self, limit: u32) -> Result<Vec<WebhookAttempt>> {
        self.call(move |c| {
            let mut st = c
                .prepare(
                    "SELECT delivery, webhook, event, attempt, status, error, outcome, duration_ms, retry_in_ms, time FROM
                     (SELECT * FROM webhook_attempts ORDER BY id DESC LIMIT ?1) ORDER BY id",
                )
                .map_err(sql)?;
            st.query_map([limit], |r| {
                Ok(WebhookAttempt {
                    delivery: r.get(0)?,
                    webhook: r.get(1)?,
                    event: r.get(2)?,
                    attempt: r.get(3)?,
                    status: r.get(4)?,
                    error: r.get(5)?,
                    outcome: r.get(6)?,
                    duration_ms: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                    retry_in_ms: r.get::<_, Option<i64>>(8)?.map(|v| u64::try_from(v).unwrap_or(0)),
                    time: r.get(9)?,
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql)
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        self.call(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(sql)).await
    }

    async fn put_rollout(&self, r: RolloutRecord) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO rollouts(id, product, sequence, state, doc, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc, updated = excluded.updated",
                params![r.id, r.product, i64::try_from(r.sequence).unwrap_or(i64::MAX), r.state, r.doc, crate::now()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        self.call(|c| {
            let mut st =
                c.prepare("SELECT id, product, sequence, state, doc FROM rollouts ORDER BY rowid").map_err(sql)?;
            st.query_map([], |r| {
                Ok(RolloutRecord {
                    id: r.get(0)?,
                    product: r.get(1)?,
                    sequence: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    state: r.get(3)?,
                    doc: r.get(4)?,
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql)
        })
        .await
    }
}

const RESULT_COLS: &str =
    "id, agent, plan, signed_plan, product, release, sequence, status, continuity, payload, signature";

fn row_to_result(r: &rusqlite::Row<'_>, agent: &AgentId) -> rusqlite::Result<StoredResult> {
    Ok(StoredResult {
        id: r.get(0)?,
        agent: agent.clone(),
        plan: r.get(2)?,
        signed_plan: r.get(3)?,
        product: r.get(4)?,
        release: r.get(5)?,
        sequence: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
        status: r.get(7)?,
        continuity: r.get(8)?,
        payload: r.get(9)?,
        signature: r.get(10)?,
    })
}

/// [`Delivery::part`] from column `i`.
fn stored_part(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<rewind_rollout::Part>> {
    let text: String = r.get(i)?;
    part_from_text(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_passes_the_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("c.db")).await.unwrap();
        super::super::suite::tokens(&s).await;
        super::super::suite::agents(&s).await;
        super::super::suite::comms(&s).await;
        super::super::suite::rollouts(&s).await;
        super::super::suite::deliveries(&s).await;
        drop(s);
        // Reopening keeps data and does not re-run migrations.
        let s = SqliteStore::open(&dir.path().join("c.db")).await.unwrap();
        assert_eq!(s.agents().await.unwrap().len(), 3, "agt-1, agt-d and agt-d2");
    }
    #[tokio::test]
    async fn commits_are_synced_and_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let s = SqliteStore::open(&path).await.unwrap();
        let pragma = |name: &'static str| {
            s.call(move |c| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0)).map_err(sql))
        };
        assert_eq!(pragma("synchronous").await.unwrap(), 2, "FULL: an acknowledged commit survives a power loss");
        assert_eq!(pragma("wal_autocheckpoint").await.unwrap(), i64::from(WRITER_CHECKPOINT_PAGES));
        // About 2 MiB, in many commits: far below the writer's own
        // checkpoint, so only the background checkpointer moves it into
        // the database file.
        let before = std::fs::metadata(&path).unwrap().len();
        for i in 0..64 {
            s.call(move |c| {
                let tx = c.transaction().map_err(sql)?;
                for j in 0..8 {
                    tx.execute(
                        "INSERT INTO shared_values(name, value) VALUES (?1, ?2)",
                        params![format!("bulk-{i}-{j}"), vec![u8::try_from(j).unwrap(); 4096]],
                    )
                    .map_err(sql)?;
                }
                tx.commit().map_err(sql)
            })
            .await
            .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let grown = std::fs::metadata(&path).unwrap().len() - before;
            if grown >= 2 * 1024 * 1024 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the database file grew only {grown} bytes in 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The thread ends with the store.
        drop(s);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_writes_queues_for_the_writer_thread_instead_of_holding_a_thread_each() {
        fn threads() -> usize {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
        }
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(&dir.path().join("c.db")).await.unwrap());
        let before = threads();
        // 1,000 writers at once, as a fleet's hellos after a restart.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let s = Arc::clone(&s);
            writes
                .spawn(async move { s.touch(vec![AgentId::parse(&format!("agt-{i}")).unwrap()], crate::now()).await });
        }
        while let Some(w) = writes.join_next().await {
            w.unwrap().unwrap();
        }
        // Blocking-pool threads stay alive for 10 s after their last job, so
        // any parked on a lock would still be counted here.
        let grown = threads().saturating_sub(before);
        assert!(grown < 64, "{grown} more threads after 1,000 concurrent writes");
    }
}
