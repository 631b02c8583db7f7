//! Content digest "rewind-digest-1": a layout-independent BLAKE3 digest of a
//! SQLite database's logical content. docs/digest.md specifies it byte for
//! byte; this module is the reference implementation.
//!
//! Guarantees: the same logical content gives the same digest after VACUUM, a
//! different page size or journal mode, or re-insertion in another order; any
//! single changed value (including its storage class: 1, 1.0 and '1' differ),
//! column order or schema change gives a different one. Internal `_rewind_*`
//! and `sqlite_*` objects are excluded.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::sqltext::normalize_schema_sql;

/// Domain-separation prefixes; part of the format.
const SCHEMA_DOMAIN: &[u8] = b"rewind-digest-1/schema\0";
const TABLE_DOMAIN: &[u8] = b"rewind-digest-1/table\0";
const DB_DOMAIN: &[u8] = b"rewind-digest-1/db\0";

/// Bytes buffered before they are fed to BLAKE3 (large updates use SIMD).
const FLUSH_AT: usize = 64 * 1024;

/// A BLAKE3 digest, written `b3:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b3:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not `b3:` followed by 64 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a digest: expected `b3:` followed by 64 hex digits")]
pub struct ParseDigestError(String);

impl FromStr for Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseDigestError(s.to_string());
        let hex_part = s.strip_prefix("b3:").ok_or_else(bad)?;
        let bytes = hex::decode(hex_part).map_err(|_| bad())?;
        Ok(Digest(bytes.try_into().map_err(|_| bad())?))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Digest and row count of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub name: String,
    pub rows: u64,
    pub digest: Digest,
}

/// The full content digest of a database, as `checksum --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseDigest {
    pub digest: Digest,
    pub schema: Digest,
    pub tables: Vec<TableDigest>,
}

impl DatabaseDigest {
    /// Combines a schema digest and table digests (sorted by name) into the
    /// whole-database digest. Lets a caller reuse table digests it already
    /// knows for tables a migration did not touch.
    #[must_use]
    pub fn combine(schema: Digest, mut tables: Vec<TableDigest>) -> Self {
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let mut h = blake3::Hasher::new();
        h.update(DB_DOMAIN);
        h.update(schema.as_bytes());
        h.update(&u32_len(tables.len()).to_be_bytes());
        for t in &tables {
            field(&mut h, t.name.as_bytes());
            h.update(&t.rows.to_be_bytes());
            h.update(t.digest.as_bytes());
        }
        DatabaseDigest { digest: Digest(*h.finalize().as_bytes()), schema, tables }
    }

    /// The digest of one table, if the database has it.
    #[must_use]
    pub fn table(&self, name: &str) -> Option<&TableDigest> {
        let name = name.to_ascii_lowercase();
        self.tables.iter().find(|t| t.name == name)
    }
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).expect("length fits in u32")
}

/// Writes a length-prefixed field: u32 big-endian length, then the bytes.
fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&u32_len(bytes.len()).to_be_bytes());
    h.update(bytes);
}

fn is_internal(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("sqlite_") || lower.starts_with("_rewind_")
}

/// The schema digest: every non-internal table, index, view and trigger with
/// its normalised `CREATE` statement, sorted by type then name.
///
/// # Errors
/// Fails when the schema cannot be read (not a database, locked, corrupt).
pub fn schema_digest(conn: &Connection) -> rusqlite::Result<Digest> {
    let mut stmt = conn.prepare_cached("SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL")?;
    let mut objects: Vec<(u8, String, String, String)> = stmt
        .query_map([], |r| {
            let kind: String = r.get(0)?;
            let order = match kind.as_str() {
                "table" => 0,
                "index" => 1,
                "view" => 2,
                _ => 3,
            };
            Ok((order, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?
        .collect::<Result<_, _>>()?;
    objects.retain(|(_, name, tbl, _)| !is_internal(name) && !is_internal(tbl));
    for o in &mut objects {
        o.1 = o.1.to_ascii_lowercase();
        o.2 = o.2.to_ascii_lowercase();
    }
    objects.sort();
    let mut h = blake3::Hasher::new();
    h.update(SCHEMA_DOMAIN);
    h.update(&u32_len(objects.len()).to_be_bytes());
    for (order, name, tbl, sql) in &objects {
        h.update(&[*order]);
        field(&mut h, name.as_bytes());
        field(&mut h, tbl.as_bytes());
        field(&mut h, normalize_schema_sql(sql).as_bytes());
    }
    Ok(Digest(*h.finalize().as_bytes()))
}

/// Names (lowercased, sorted) of the ordinary tables whose rows are hashed:
/// not internal, not virtual.
///
/// # Errors
/// Fails when the schema cannot be read.
pub fn content_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )?;
    let mut names: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|n| !is_internal(n))
        .map(|n| n.to_ascii_lowercase())
        .collect();
    names.sort();
    Ok(names)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

struct Column {
    name: String,
    notnull: bool,
    pk: i64,
    decl_type: String,
}

/// The `SELECT` that yields a table's rows in digest order (docs/digest.md
/// "Row order"): primary-key order when the key identifies rows, otherwise
/// the sorted multiset of rows.
fn row_query(conn: &Connection, table: &str) -> rusqlite::Result<(Vec<String>, String)> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_xinfo({})", quote_ident(table)))?;
    let columns: Vec<Column> = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>("hidden")?,
                Column {
                    name: r.get("name")?,
                    decl_type: r.get::<_, Option<String>>("type")?.unwrap_or_default(),
                    notnull: r.get::<_, i64>("notnull")? != 0,
                    pk: r.get("pk")?,
                },
            ))
        })?
        .filter_map(|r| match r {
            Ok((1, _)) => None,
            Ok((_, c)) => Some(Ok(c)),
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    // Table names compare case-insensitively in SQLite, but `=` on the
    // pragma's text column does not: `table` may be the lowercased name.
    let without_rowid: bool = conn
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE name = ?1 COLLATE NOCASE AND schema = 'main'",
            [table],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some_and(|wr| wr != 0);
    let mut pk: Vec<&Column> = columns.iter().filter(|c| c.pk > 0).collect();
    pk.sort_by_key(|c| c.pk);
    // A rowid table's declared PRIMARY KEY gets an automatic index (origin
    // "pk") unless it is the rowid alias. `id INTEGER PRIMARY KEY DESC` is
    // not an alias and may hold several NULLs, so the declared type alone
    // does not tell.
    let has_pk_index = {
        let mut s = conn.prepare(&format!("PRAGMA index_list({})", quote_ident(table)))?;
        let origins = s.query_map([], |r| r.get::<_, String>("origin"))?;
        let mut found = false;
        for o in origins {
            found |= o? == "pk";
        }
        found
    };
    let rowid_alias =
        !without_rowid && pk.len() == 1 && pk[0].decl_type.eq_ignore_ascii_case("INTEGER") && !has_pk_index;
    let pk_identifies_rows = !pk.is_empty() && (without_rowid || rowid_alias || pk.iter().all(|c| c.notnull));
    let select_list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let order: Vec<String> = if pk_identifies_rows {
        pk.iter().map(|c| quote_ident(&c.name)).collect()
    } else {
        let mut cols: Vec<&Column> = pk.clone();
        cols.extend(columns.iter().filter(|c| c.pk == 0));
        cols.iter()
            .flat_map(|c| {
                let q = quote_ident(&c.name);
                [format!("{q} COLLATE BINARY"), format!("typeof({q})")]
            })
            .collect()
    };
    let mut sql = format!("SELECT {} FROM {}", select_list.join(", "), quote_ident(table));
    if !order.is_empty() {
        sql.push_str(" ORDER BY ");
        sql.push_str(&order.join(", "));
    }
    Ok((columns.into_iter().map(|c| c.name).collect(), sql))
}

/// Appends one value with its storage class (docs/digest.md "Values").
fn encode_value(buf: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => buf.push(0),
        ValueRef::Integer(i) => {
            buf.push(1);
            buf.extend_from_slice(&i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            buf.push(2);
            // -0.0 and 0.0 compare equal in SQLite; hash them alike.
            let f = if f == 0.0 { 0.0 } else { f };
            buf.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => {
            buf.push(3);
            buf.extend_from_slice(&(t.len() as u64).to_be_bytes());
            buf.extend_from_slice(t);
        }
        ValueRef::Blob(b) => {
            buf.push(4);
            buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
            buf.extend_from_slice(b);
        }
    }
}

/// Digest and row count of one table.
///
/// # Errors
/// Fails when the table cannot be read.
pub fn table_digest(conn: &Connection, table: &str) -> rusqlite::Result<TableDigest> {
    let (columns, sql) = row_query(conn, table)?;
    let name = table.to_ascii_lowercase();
    let mut h = blake3::Hasher::new();
    h.update(TABLE_DOMAIN);
    field(&mut h, name.as_bytes());
    h.update(&u32_len(columns.len()).to_be_bytes());
    for c in &columns {
        field(&mut h, c.to_ascii_lowercase().as_bytes());
    }
    let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
    let mut rows = 0u64;
    let mut stmt = conn.prepare(&sql)?;
    let mut cursor = stmt.query([])?;
    while let Some(row) = cursor.next()? {
        for i in 0..columns.len() {
            encode_value(&mut buf, row.get_ref(i)?);
        }
        rows += 1;
        if buf.len() >= FLUSH_AT {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    h.update(&rows.to_be_bytes());
    Ok(TableDigest { name, rows, digest: Digest(*h.finalize().as_bytes()) })
}

/// The full digest of a database. Reads inside one read transaction when the
/// caller has none open, so the digest is of one consistent state.
///
/// # Errors
/// Fails when the database cannot be read.
pub fn database_digest(conn: &Connection) -> rusqlite::Result<DatabaseDigest> {
    database_digest_on(conn, Cores::All)
}

/// How many cores a digest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cores {
    /// One connection per spare core (see [`database_digest`]).
    All,
    /// One connection: for a digest that runs beside other work (e.g. a
    /// snapshot verified while the first migration runs), which would only
    /// slow that work down by taking its core.
    One,
}

/// [`database_digest`] using at most `cores`.
///
/// # Errors
/// Fails when the database cannot be read.
pub fn database_digest_on(conn: &Connection, cores: Cores) -> rusqlite::Result<DatabaseDigest> {
    let own_txn = conn.is_autocommit();
    if own_txn {
        conn.execute_batch("BEGIN DEFERRED")?;
    }
    let result = (|| {
        let schema = schema_digest(conn)?;
        let names = content_tables(conn)?;
        // Helpers read the same state only when this function holds the
        // read transaction (a caller's write transaction has changes other
        // connections cannot see).
        let helpers = if own_txn && cores == Cores::All { helper_connections(conn, names.len()) } else { Vec::new() };
        let tables = table_digests(conn, &names, helpers)?;
        Ok(DatabaseDigest::combine(schema, tables))
    })();
    if own_txn {
        let _ = conn.execute_batch("COMMIT");
    }
    result
}

/// The full digest of the database on `conn`, given the digest `known` of
/// an earlier state of it and the tables (lowercased names) that may have
/// been written since: those, every table that refers to one of them by a
/// foreign key (cascades, transitively) and every table `known` lacks are
/// read again; the others keep their digests from `known`. The schema
/// digest is always recomputed. The result equals [`database_digest`] as
/// long as nothing else wrote to the database since `known`; the caller
/// must make sure of that (the agent checks `PRAGMA data_version`).
///
/// # Errors
/// Fails when the database cannot be read.
pub fn database_digest_reusing(
    conn: &Connection,
    known: &DatabaseDigest,
    written: &std::collections::BTreeSet<String>,
) -> rusqlite::Result<DatabaseDigest> {
    let own_txn = conn.is_autocommit();
    if own_txn {
        conn.execute_batch("BEGIN DEFERRED")?;
    }
    let result = (|| {
        let schema = schema_digest(conn)?;
        let names = content_tables(conn)?;
        let mut dirty: std::collections::BTreeSet<String> = written.iter().map(|t| t.to_ascii_lowercase()).collect();
        // Foreign-key actions (ON DELETE CASCADE, SET NULL, ...) write the
        // referring tables without naming them in the script.
        let mut parents = conn.prepare("SELECT DISTINCT lower(\"table\") FROM pragma_foreign_key_list(?1)")?;
        let refers_to: Vec<(String, Vec<String>)> = names
            .iter()
            .map(|t| {
                Ok((t.clone(), parents.query_map([t], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?))
            })
            .collect::<rusqlite::Result<_>>()?;
        loop {
            let before = dirty.len();
            for (t, ps) in &refers_to {
                if ps.iter().any(|p| dirty.contains(p)) {
                    dirty.insert(t.clone());
                }
            }
            if dirty.len() == before {
                break;
            }
        }
        let (reused, to_read): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|t| !dirty.contains(*t) && known.table(t).is_some());
        let to_read: Vec<String> = to_read.into_iter().cloned().collect();
        let helpers = if own_txn { helper_connections(conn, to_read.len()) } else { Vec::new() };
        let mut tables = table_digests(conn, &to_read, helpers)?;
        tables.extend(reused.into_iter().filter_map(|t| known.table(t).cloned()));
        Ok(DatabaseDigest::combine(schema, tables))
    })();
    if own_txn {
        let _ = conn.execute_batch("COMMIT");
    }
    result
}

/// Databases smaller than this are digested on one connection: a second
/// one costs more to open than it saves.
const PARALLEL_FROM_BYTES: i64 = 8 * 1024 * 1024;

/// Read connections that see exactly the state `conn`'s read transaction
/// sees, one per spare core (at most one per table beyond the first).
///
/// Only for a database file in a rollback-journal mode: `conn` holds its
/// SHARED lock from its first read until it commits, so no writer can
/// commit in between and a connection that starts reading later reads the
/// same state. In WAL mode a later reader may see a newer commit, so there
/// are no helpers (and none for in-memory or small databases). A helper
/// that cannot get its read lock at once is simply not used.
fn helper_connections(conn: &Connection, tables: usize) -> Vec<Connection> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let wanted = cores.min(tables).saturating_sub(1);
    if wanted == 0 {
        return Vec::new();
    }
    let Some(path) = conn.path().filter(|p| !p.is_empty()).map(str::to_owned) else {
        return Vec::new();
    };
    let shareable = conn
        .query_row(
            "SELECT (SELECT page_count * page_size FROM pragma_page_count, pragma_page_size), \
                    (SELECT journal_mode FROM pragma_journal_mode)",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .is_ok_and(|(bytes, mode)| bytes >= PARALLEL_FROM_BYTES && !mode.eq_ignore_ascii_case("wal"));
    if !shareable {
        return Vec::new();
    }
    let open = || -> rusqlite::Result<Connection> {
        use rusqlite::OpenFlags;
        let h = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        h.busy_timeout(std::time::Duration::ZERO)?;
        // Take the read lock now, while `conn` holds its own.
        h.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_schema;")?;
        Ok(h)
    };
    (0..wanted).map_while(|_| open().ok()).collect()
}

/// Digests of `names` (in that order): on `conn`, and on each helper in its
/// own thread, each taking the next table not yet started.
fn table_digests(conn: &Connection, names: &[String], helpers: Vec<Connection>) -> rusqlite::Result<Vec<TableDigest>> {
    if helpers.is_empty() {
        return names.iter().map(|t| table_digest(conn, t)).collect();
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let work = |c: &Connection| -> rusqlite::Result<Vec<(usize, TableDigest)>> {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(name) = names.get(i) else { return Ok(done) };
            done.push((i, table_digest(c, name)?));
        }
    };
    let mut results: Vec<(usize, TableDigest)> = std::thread::scope(|s| {
        let threads: Vec<_> = helpers
            .into_iter()
            .map(|h| {
                let work = &work;
                s.spawn(move || {
                    let out = work(&h);
                    let _ = h.execute_batch("COMMIT");
                    out
                })
            })
            .collect();
        let mut all = work(conn);
        for t in threads {
            let part = t.join().expect("digest thread does not panic");
            all = all.and_then(|mut a| {
                a.extend(part?);
                Ok(a)
            });
        }
        all
    })?;
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(sql: &str) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        c
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let a = db("CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1,'a'),(2,'b');
                    CREATE TABLE n(x, y); INSERT INTO n VALUES (1,2),(3,4),(1,2);");
        let b = db("CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (2,'b'),(1,'a');
                    CREATE TABLE n(x, y); INSERT INTO n VALUES (1,2),(1,2),(3,4);");
        assert_eq!(database_digest(&a).unwrap(), database_digest(&b).unwrap());
    }

    #[test]
    fn integer_primary_key_desc_is_not_a_rowid_alias() {
        // `INTEGER PRIMARY KEY DESC` may hold several NULL keys; ordering by
        // the key alone would leave them in insertion order.
        let d = |rows: &str| {
            database_digest(&db(&format!(
                "CREATE TABLE a(id INTEGER PRIMARY KEY DESC, v); INSERT INTO a VALUES {rows};"
            )))
            .unwrap()
            .digest
        };
        assert_eq!(d("(NULL,'x'),(NULL,'y'),(1,'z')"), d("(1,'z'),(NULL,'y'),(NULL,'x')"));
    }

    #[test]
    fn mixed_case_without_rowid_table_is_recognised() {
        let a = db(
            "CREATE TABLE \"MixedCase\"(k TEXT PRIMARY KEY, v) WITHOUT ROWID; INSERT INTO MixedCase VALUES ('b',1),('a',2);",
        );
        let b = db(
            "CREATE TABLE \"MixedCase\"(k TEXT PRIMARY KEY, v) WITHOUT ROWID; INSERT INTO MixedCase VALUES ('a',2),('b',1);",
        );
        assert_eq!(database_digest(&a).unwrap(), database_digest(&b).unwrap());
    }

    #[test]
    fn storage_class_matters() {
        let d =
            |v: &str| database_digest(&db(&format!("CREATE TABLE t(a); INSERT INTO t VALUES ({v});"))).unwrap().digest;
        let (i, r, t, b) = (d("1"), d("1.0"), d("'1'"), d("x'31'"));
        assert!(i != r && i != t && r != t && t != b);
    }

    #[test]
    fn drop_column_after_add_column_restores_schema_digest() {
        let c = db("CREATE TABLE orders(id INTEGER PRIMARY KEY, total REAL NOT NULL);");
        let before = schema_digest(&c).unwrap();
        c.execute_batch("ALTER TABLE orders ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR'").unwrap();
        assert_ne!(before, schema_digest(&c).unwrap());
        c.execute_batch("ALTER TABLE orders DROP COLUMN currency").unwrap();
        assert_eq!(before, schema_digest(&c).unwrap());
    }

    #[test]
    fn internal_objects_are_excluded() {
        let a = db("CREATE TABLE t(a);");
        let b = db("CREATE TABLE t(a); CREATE TABLE _rewind_ledger(x); INSERT INTO _rewind_ledger VALUES (1);");
        assert_eq!(database_digest(&a).unwrap(), database_digest(&b).unwrap());
    }

    #[test]
    fn parallel_digest_equals_one_connection_digest() {
        // Large enough for helper connections; the caller's own read
        // transaction forces the one-connection path for comparison.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE a(id INTEGER PRIMARY KEY, v BLOB); CREATE TABLE b(x, y); CREATE TABLE c(k TEXT PRIMARY KEY, n REAL) WITHOUT ROWID;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
             INSERT INTO a SELECT i, randomblob(3000) FROM s;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000)
             INSERT INTO b SELECT i % 7, hex(randomblob(40)) FROM s;
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000)
             INSERT INTO c SELECT 'k' || i, i / 3.0 FROM s;",
        )
        .unwrap();
        let bytes: i64 = c
            .query_row("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size", [], |r| r.get(0))
            .unwrap();
        assert!(bytes >= PARALLEL_FROM_BYTES, "test database too small: {bytes}");
        c.execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;").unwrap();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(helper_connections(&c, 3).is_empty(), cores < 2, "helpers are used on a file database");
        let one = database_digest(&c).unwrap();
        c.execute_batch("COMMIT").unwrap();
        assert_eq!(database_digest(&c).unwrap(), one);
    }

    #[test]
    fn reusing_digest_equals_full_digest() {
        let c = db("CREATE TABLE p(id INTEGER PRIMARY KEY, v); CREATE TABLE k(id INTEGER PRIMARY KEY, p REFERENCES p(id) ON DELETE CASCADE);
                    CREATE TABLE u(a); CREATE TABLE s(a); INSERT INTO p VALUES (1,'a'),(2,'b'); INSERT INTO k VALUES (1,1),(2,2);
                    INSERT INTO u VALUES (5); INSERT INTO s VALUES (6);");
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        let known = database_digest(&c).unwrap();
        // A cascade writes `k` although only `p` is named.
        c.execute_batch("DELETE FROM p WHERE id = 1; ALTER TABLE u ADD COLUMN b DEFAULT 0; CREATE TABLE n(x); INSERT INTO n VALUES (1);").unwrap();
        let written: std::collections::BTreeSet<String> = ["p".to_string(), "u".to_string()].into();
        assert_eq!(database_digest_reusing(&c, &known, &written).unwrap(), database_digest(&c).unwrap());
        // A table written but not said to be is reused as `known` has it.
        c.execute_batch("DELETE FROM s").unwrap();
        assert_ne!(database_digest_reusing(&c, &known, &written).unwrap(), database_digest(&c).unwrap());
        let none = std::collections::BTreeSet::new();
        let fresh = database_digest(&c).unwrap();
        assert_eq!(database_digest_reusing(&c, &fresh, &none).unwrap(), fresh);
    }

    #[test]
    fn digest_round_trips_through_text() {
        let d = database_digest(&db("CREATE TABLE t(a)")).unwrap().digest;
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("b3:xyz".parse::<Digest>().is_err());
    }
}
