//! The agent's state directory: `agent.db` (journal, snapshot catalogue,
//! flags, installed releases, audit chain, outbox of signed results),
//! `agent.key`, `snapshots/`, `flags.json`.
//!
//! Guarantees: one agent process works on a state directory at a time (an
//! exclusive file lock); `agent.db` is written with `synchronous = FULL`, so a
//! journal row that was written survives a power cut; every audit entry is
//! chained and signed with the agent key.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rewind_shared::audit::{AuditEntry, ChainError, verify_chain};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Context, Error, Result};
use crate::outbox::Origin;

const SCHEMA_VERSION: i64 = 2;

/// Schema changes after version 1, in order: entry `i` takes a database
/// from version `i + 1` to `i + 2`. Each runs in one transaction with the
/// version bump, so an interrupted upgrade is redone on the next start.
const MIGRATIONS: &[&str] = &[
    // 1 -> 2: the outbox of signed results.
    crate::outbox::SCHEMA,
];

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plans(
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,             -- apply | rollback
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    body TEXT NOT NULL,             -- the plan as JSON, scripts included
    state TEXT NOT NULL,            -- running | applied | rolled_back | reverted | needs_human | resolved
    started TEXT NOT NULL,
    finished TEXT,
    result TEXT
);
CREATE TABLE IF NOT EXISTS journal(
    plan_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    step TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    state TEXT NOT NULL,            -- started | done
    time TEXT NOT NULL,
    PRIMARY KEY(plan_id, n)
);
CREATE TABLE IF NOT EXISTS snapshots(
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    file TEXT NOT NULL,
    created TEXT NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    schema TEXT NOT NULL,
    product TEXT,
    release TEXT,
    target TEXT,
    label TEXT,
    pinned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS flags(
    product TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY(product, name)
);
CREATE TABLE IF NOT EXISTS installed(
    product TEXT PRIMARY KEY,
    release TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    plan_id TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit(
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
";

/// An open, locked state directory.
pub struct State {
    pub root: PathBuf,
    pub db: Connection,
    key: SigningKey,
    /// The signed plan being run, for its report ([`crate::outbox`]).
    origin: RefCell<Option<Origin>>,
    _lock: File,
}

/// Current time, RFC 3339 UTC with milliseconds.
#[must_use]
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Today's date, `YYYY-MM-DD` (UTC).
#[must_use]
pub fn today() -> String {
    now()[..10].to_string()
}

/// A fresh random id: 16 hex characters prefixed by `kind`.
#[must_use]
pub fn new_id(kind: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    format!("{kind}-{}", hex::encode(b))
}

/// Resolves the state directory: `--state`, then `REWIND_STATE`, then the
/// OS's per-user state directory.
#[must_use]
pub fn default_dir(arg: Option<PathBuf>) -> PathBuf {
    if let Some(p) = arg {
        return p;
    }
    if let Some(p) = std::env::var_os("REWIND_STATE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("rewind");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/rewind"),
        None => PathBuf::from(".rewind"),
    }
}

impl State {
    /// Opens (creating if needed) and locks a state directory.
    ///
    /// # Errors
    /// [`Error::BadInput`] when the directory cannot be created or `agent.db`
    /// is not a readable database (corrupt): nothing is changed then.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("snapshots")).map_err(Error::io(root))?;
        let lock = File::create(root.join("lock")).map_err(Error::io(root.join("lock")))?;
        lock.lock().map_err(Error::io(root.join("lock")))?;
        let db_path = root.join("agent.db");
        let corrupt = |e: &dyn std::fmt::Display| {
            Error::BadInput(format!(
                "state {}: agent.db is unreadable ({e}); it is not changed. Move it aside \
                 (mv {} {}.broken) to start a fresh state; snapshots in {} stay usable",
                root.display(),
                db_path.display(),
                db_path.display(),
                root.join("snapshots").display()
            ))
        };
        let db = Connection::open(&db_path).map_err(|e| corrupt(&e))?;
        db.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| corrupt(&e))?;
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(|e| corrupt(&e))?;
        let check: String = db.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| corrupt(&e))?;
        if check != "ok" {
            return Err(corrupt(&check));
        }
        db.execute_batch(SCHEMA).map_err(|e| corrupt(&e))?;
        let version: Option<String> = db
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(|e| corrupt(&e))?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                for m in MIGRATIONS {
                    db.execute_batch(m).map_err(|e| corrupt(&e))?;
                }
                db.execute("INSERT INTO meta VALUES ('schema_version', ?1)", [SCHEMA_VERSION.to_string()])
                    .map_err(|e| corrupt(&e))?;
            }
            Some(Ok(v)) if v == SCHEMA_VERSION => {}
            Some(Ok(v)) if (1..SCHEMA_VERSION).contains(&v) => {
                let tx = db.unchecked_transaction().map_err(|e| corrupt(&e))?;
                for m in &MIGRATIONS[usize::try_from(v - 1).expect("small")..] {
                    tx.execute_batch(m).map_err(|e| corrupt(&e))?;
                }
                tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [SCHEMA_VERSION.to_string()])
                    .map_err(|e| corrupt(&e))?;
                tx.commit().map_err(|e| corrupt(&e))?;
                tracing::info!(from = v, to = SCHEMA_VERSION, "agent.db schema upgraded");
            }
            Some(_) => {
                return Err(Error::BadInput(format!(
                    "state {}: agent.db has schema version {version:?}, this agent knows {SCHEMA_VERSION}; \
                     use a matching rewind-agent",
                    root.display()
                )));
            }
        }
        let key = load_or_create_key(root)?;
        Ok(State { root: root.to_path_buf(), db, key, origin: RefCell::new(None), _lock: lock })
    }

    #[must_use]
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    #[must_use]
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Appends a signed entry to the audit chain.
    ///
    /// # Errors
    /// When `agent.db` cannot be written.
    pub fn audit(&self, kind: &str, params: &serde_json::Value) -> Result<AuditEntry> {
        let prev = self.audit_head()?;
        let entry = AuditEntry::new_signed(prev.as_ref(), now(), kind, params.to_string(), &self.key);
        self.db
            .execute(
                "INSERT INTO audit(seq, time, kind, params, prev, hash, signature) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                params![
                    entry.seq as i64,
                    entry.time,
                    entry.kind,
                    entry.params,
                    entry.prev.to_string(),
                    entry.hash.to_string(),
                    entry.signature
                ],
            )
            .ctx("audit append")?;
        Ok(entry)
    }

    /// The signed plan the engine plan about to start runs, if any.
    #[must_use]
    pub fn origin(&self) -> Option<Origin> {
        self.origin.borrow().clone()
    }

    /// Sets (or clears) the origin of the next engine plan
    /// ([`crate::outbox::with_origin`]).
    pub fn set_origin(&self, origin: Option<Origin>) {
        *self.origin.borrow_mut() = origin;
    }

    /// Audit entries after `seq`, in order; at most the newest `limit`.
    ///
    /// # Errors
    /// When `agent.db` cannot be read.
    pub fn audit_since(&self, seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut stmt = self
            .db
            .prepare("SELECT seq, time, kind, params, prev, hash, signature FROM audit WHERE seq > ?1 ORDER BY seq DESC LIMIT ?2")
            .ctx("audit read")?;
        let mut v: Vec<AuditEntry> = stmt
            .query_map(params![seq as i64, limit as i64], row_to_entry)
            .ctx("audit read")?
            .collect::<rusqlite::Result<_>>()
            .ctx("audit read")?;
        v.reverse();
        Ok(v)
    }

    /// The newest audit entry, if any.
    ///
    /// # Errors
    /// When `agent.db` cannot be read.
    pub fn audit_head(&self) -> Result<Option<AuditEntry>> {
        self.db
            .query_row(
                "SELECT seq, time, kind, params, prev, hash, signature FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                row_to_entry,
            )
            .optional()
            .ctx("audit head")
    }

    /// Every audit entry in sequence order.
    ///
    /// # Errors
    /// When `agent.db` cannot be read or holds a malformed digest.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        let mut stmt = self
            .db
            .prepare("SELECT seq, time, kind, params, prev, hash, signature FROM audit ORDER BY seq")
            .ctx("audit read")?;
        stmt.query_map([], row_to_entry).ctx("audit read")?.collect::<rusqlite::Result<_>>().ctx("audit read")
    }

    /// Verifies the local chain with this agent's key; returns the entry
    /// count and head.
    ///
    /// # Errors
    /// [`Error::Failed`] naming the first broken entry.
    pub fn verify_audit(&self) -> Result<(usize, rewind_shared::Digest)> {
        let entries = self.audit_entries()?;
        let head = verify_chain(&entries, &self.key.verifying_key())
            .map_err(|e: ChainError| Error::Failed(format!("audit chain in {}: {e}", self.root.display())))?;
        Ok((entries.len(), head))
    }
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let digest = |i: usize| -> rusqlite::Result<rewind_shared::Digest> {
        let s: String = r.get(i)?;
        s.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    };
    Ok(AuditEntry {
        seq: r.get::<_, i64>(0)? as u64,
        time: r.get(1)?,
        kind: r.get(2)?,
        params: r.get(3)?,
        prev: digest(4)?,
        hash: digest(5)?,
        signature: r.get(6)?,
    })
}

/// Loads `agent.key` (32 raw bytes, mode 0600), creating it on first use.
fn load_or_create_key(root: &Path) -> Result<SigningKey> {
    let path = root.join("agent.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes.try_into().map_err(|_| {
                Error::BadInput(format!("{}: not a 32-byte Ed25519 key; restore it from backup", path.display()))
            })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).expect("the OS random source works");
            crate::fsutil::write_atomic(&path, &seed, 0o600)?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(Error::io(path)(e)),
    }
}
