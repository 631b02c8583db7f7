//! `_rewind_ledger`: the record, inside each app database, of every
//! migration applied or reverted. A ledger row is written in the same
//! transaction as the `up.sql` it records (and marked reverted in the same
//! transaction as `down.sql`), so the database itself always says exactly
//! which migrations it holds — the truth crash recovery starts from.

use rusqlite::{Connection, OptionalExtension, params};

pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS _rewind_ledger(
    id INTEGER PRIMARY KEY,
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    migration TEXT NOT NULL,
    checksum TEXT NOT NULL,
    schema_before TEXT NOT NULL,
    schema_after TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    plan_id TEXT NOT NULL,
    reverted_at TEXT,
    revert_plan_id TEXT
)";

/// One applied (not reverted) migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub product: String,
    pub release: String,
    pub sequence: i64,
    pub migration: String,
    pub checksum: String,
    pub schema_before: String,
    pub schema_after: String,
    pub plan_id: String,
}

/// What a new ledger row records.
pub struct NewEntry<'a> {
    pub product: &'a str,
    pub release: &'a str,
    pub sequence: u64,
    pub migration: &'a str,
    pub checksum: &'a str,
    pub schema_before: &'a str,
    pub schema_after: &'a str,
    pub duration_ms: u128,
    pub plan_id: &'a str,
}

fn exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_rewind_ledger'", [], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

/// Applied, not reverted migrations of `product`, oldest first.
///
/// # Errors
/// When the ledger cannot be read.
pub fn applied(conn: &Connection, product: &str) -> rusqlite::Result<Vec<Entry>> {
    if !exists(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT id, product, release, sequence, migration, checksum, schema_before, schema_after, plan_id
         FROM _rewind_ledger WHERE product = ?1 AND reverted_at IS NULL ORDER BY id",
    )?;
    stmt.query_map([product], |r| {
        Ok(Entry {
            id: r.get(0)?,
            product: r.get(1)?,
            release: r.get(2)?,
            sequence: r.get(3)?,
            migration: r.get(4)?,
            checksum: r.get(5)?,
            schema_before: r.get(6)?,
            schema_after: r.get(7)?,
            plan_id: r.get(8)?,
        })
    })?
    .collect()
}

/// Records an applied migration (inside the migration's transaction).
///
/// # Errors
/// When the row cannot be written.
pub fn record(conn: &Connection, e: &NewEntry<'_>) -> rusqlite::Result<()> {
    conn.execute_batch(CREATE)?;
    conn.execute(
        "INSERT INTO _rewind_ledger(product, release, sequence, migration, checksum, schema_before, schema_after,
                                    applied_at, duration_ms, plan_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            e.product,
            e.release,
            e.sequence as i64,
            e.migration,
            e.checksum,
            e.schema_before,
            e.schema_after,
            crate::state::now(),
            e.duration_ms as i64,
            e.plan_id
        ],
    )?;
    Ok(())
}

/// Marks a migration reverted (inside the `down.sql` transaction).
///
/// # Errors
/// When the row cannot be written.
pub fn mark_reverted(conn: &Connection, id: i64, plan_id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE _rewind_ledger SET reverted_at = ?1, revert_plan_id = ?2 WHERE id = ?3",
        params![crate::state::now(), plan_id, id],
    )?;
    Ok(())
}
