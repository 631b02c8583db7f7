//! The one place that opens an app database ("target") and runs release SQL
//! on it.
//!
//! Guarantees: a target is opened only if it exists, is SQLite and is
//! writable; defensive mode is on, trusted_schema off, a busy timeout lets the
//! app keep the database open; while a release script runs, an authorizer
//! denies ATTACH/DETACH, `load_extension`, transaction control, file-touching
//! pragmas and any write to Rewind's own `_rewind_ledger`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rewind_shared::digest::{DatabaseDigest, database_digest, database_digest_reusing};
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Context, Error, Result};

/// How long a write waits for the app's lock before giving up, unless
/// `REWIND_BUSY_TIMEOUT_MS` says otherwise (see [`busy_timeout`]).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The busy timeout in force: `REWIND_BUSY_TIMEOUT_MS` (milliseconds) when
/// set to a number, else [`BUSY_TIMEOUT`]. Endpoints whose app holds long
/// write transactions raise it; tests lower it.
#[must_use]
pub fn busy_timeout() -> Duration {
    std::env::var("REWIND_BUSY_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(BUSY_TIMEOUT, Duration::from_millis)
}

/// Human form of the busy timeout: "10s" or "250 ms".
fn busy_timeout_text() -> String {
    let t = busy_timeout();
    if t.subsec_millis() == 0 { format!("{}s", t.as_secs()) } else { format!("{} ms", t.as_millis()) }
}

/// Pragmas a release script may use; every other one is denied.
const ALLOWED_PRAGMAS: &[&str] = &[
    "foreign_keys",
    "foreign_key_check",
    "foreign_key_list",
    "defer_foreign_keys",
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "user_version",
    "application_id",
    "legacy_alter_table",
    "recursive_triggers",
    "optimize",
    "collation_list",
    "function_list",
    "compile_options",
];

const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// An open target database with Rewind's safety settings.
pub struct Target {
    pub name: String,
    pub path: PathBuf,
    pub conn: Connection,
    script_mode: Arc<AtomicBool>,
    /// Tables (lowercased) that release scripts on this connection were
    /// allowed to write, as the authorizer saw them (trigger bodies included).
    written: Arc<Mutex<BTreeSet<String>>>,
    /// A verified digest of an earlier state and the `data_version` read
    /// before that state was read: lets [`Target::digest`] re-read only the
    /// tables scripts wrote since (docs/digest.md "Incremental proofs").
    baseline: RefCell<Option<(i64, DatabaseDigest)>>,
}

/// Checks that `path` exists and starts with the SQLite header.
///
/// # Errors
/// [`Error::BadInput`] naming the file and what is wrong with it.
pub fn check_is_sqlite(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::BadInput(format!("database {}: cannot open: {e}; check the --db path", path.display())))?;
    let mut head = [0u8; 16];
    let n = f.read(&mut head).map_err(Error::io(path))?;
    // An empty file is a valid, empty SQLite database.
    if n != 0 && (n < 16 || head != SQLITE_HEADER) {
        return Err(Error::BadInput(format!(
            "database {}: not a SQLite database (bad header); check the --db path",
            path.display()
        )));
    }
    Ok(())
}

/// Applies the connection settings every target connection gets.
fn configure(conn: &Connection, path: &Path) -> Result<()> {
    let ctx = || format!("database {}", path.display());
    conn.busy_timeout(busy_timeout()).ctx(ctx())?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true).ctx(ctx())?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false).ctx(ctx())?;
    // Extension loading stays at SQLite's default (off: the C API was never
    // enabled on this connection); the authorizer also denies the
    // `load_extension()` SQL function while release scripts run.
    Ok(())
}

/// Maps "database is locked" and "not a database" to clear input errors.
pub fn classify(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::BadInput(format!(
            "database {}: locked by another process for more than {} (busy timeout; \
             REWIND_BUSY_TIMEOUT_MS changes it); close the app or retry",
            path.display(),
            busy_timeout_text()
        )),
        Some(ErrorCode::NotADatabase) => {
            Error::BadInput(format!("database {}: not a SQLite database; check the --db path", path.display()))
        }
        Some(ErrorCode::DatabaseCorrupt) => {
            Error::BadInput(format!("database {}: corrupt ({e}); restore it from a snapshot", path.display()))
        }
        Some(ErrorCode::ReadOnly) => {
            Error::BadInput(format!("database {}: read-only; make it writable by the agent's user", path.display()))
        }
        Some(ErrorCode::CannotOpen) => Error::BadInput(format!(
            "database {}: cannot open it or create its journal ({e}); make the file and its directory writable by the \
             agent's user",
            path.display()
        )),
        Some(ErrorCode::SystemIoFailure) => {
            Error::BadInput(format!("database {}: I/O error ({e}); the disk may be full or failing", path.display()))
        }
        Some(ErrorCode::DiskFull) => Error::Failed(format!("database {}: disk full: {e}", path.display())),
        _ => Error::Sqlite { context: format!("database {}", path.display()), source: e },
    }
}

impl Target {
    /// Opens an existing, writable SQLite target.
    ///
    /// # Errors
    /// [`Error::BadInput`] when the file is missing, not SQLite, read-only,
    /// corrupt or locked past the busy timeout.
    pub fn open(name: &str, path: &Path) -> Result<Self> {
        check_is_sqlite(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| classify(path, e))?;
        configure(&conn, path)?;
        // Touch the schema now so a corrupt or locked file fails before any
        // plan starts.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
            .map_err(|e| classify(path, e))?;
        if conn.is_readonly("main").ctx(path.display())? {
            return Err(Error::BadInput(format!(
                "database {}: read-only; make it writable by the agent's user",
                path.display()
            )));
        }
        let script_mode = Arc::new(AtomicBool::new(false));
        let flag = script_mode.clone();
        let written = Arc::new(Mutex::new(BTreeSet::new()));
        let record = written.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let verdict = authorize(&flag, &ctx);
            if verdict == Authorization::Allow && flag.load(Ordering::SeqCst) {
                record_write(&record, &ctx);
            }
            verdict
        }));
        Ok(Target {
            name: name.to_string(),
            path: path.to_path_buf(),
            conn,
            script_mode,
            written,
            baseline: RefCell::new(None),
        })
    }

    /// Fails at once (after the busy timeout) when another connection holds
    /// the write lock, so a plan never starts on a database it cannot change.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the database: locked, read-only or corrupt.
    pub fn probe_write(&self) -> Result<()> {
        // A real (rolled back) schema change: in rollback-journal mode it
        // must create the journal next to the database, so a read-only
        // directory is found here too, not half-way through a migration.
        let probe = self
            .conn
            .execute_batch("BEGIN IMMEDIATE; CREATE TABLE _rewind_write_probe(x);")
            .map_err(|e| classify(&self.path, e));
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        probe
    }

    /// Tables release scripts on this connection may have written.
    #[must_use]
    pub fn written(&self) -> BTreeSet<String> {
        self.written.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// `PRAGMA data_version`: changes exactly when another connection
    /// commits to the database (never for this connection's own commits).
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn data_version(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))
    }

    /// Records `digest` as this target's state when `version` (a
    /// [`Target::data_version`] read before that state was read) was current.
    pub fn set_baseline(&self, version: i64, digest: DatabaseDigest) {
        *self.baseline.borrow_mut() = Some((version, digest));
    }

    /// A full digest, read in full, that becomes the baseline.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn baseline_digest(&self) -> rusqlite::Result<DatabaseDigest> {
        let before = self.data_version()?;
        let d = database_digest(&self.conn)?;
        if self.data_version()? == before {
            self.set_baseline(before, d.clone());
        }
        Ok(d)
    }

    /// The full digest of the target now. With a baseline and no commit by
    /// any other connection since it (checked before and after reading),
    /// only the tables scripts wrote are read again; otherwise every table.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn digest(&self) -> rusqlite::Result<DatabaseDigest> {
        let baseline = self.baseline.borrow().clone();
        if let Some((version, known)) = baseline
            && self.conn.is_autocommit()
            && self.data_version()? == version
        {
            let d = database_digest_reusing(&self.conn, &known, &self.written())?;
            if self.data_version()? == version {
                return Ok(d);
            }
        }
        database_digest(&self.conn)
    }

    /// Runs `f` with the release-script authorizer rules in force.
    pub fn as_script<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        self.script_mode.store(true, Ordering::SeqCst);
        let out = f(&self.conn);
        self.script_mode.store(false, Ordering::SeqCst);
        out
    }

    /// Runs every statement of a script; on failure says which statement.
    ///
    /// # Errors
    /// The failing statement's number and text with SQLite's message.
    pub fn run_script(&self, sql: &str) -> std::result::Result<(), String> {
        self.as_script(|conn| {
            for_each_statement(conn, sql, |n, stmt| {
                let mut rows = stmt.raw_query();
                while rows.next().map_err(|e| statement_error(n, &e))?.is_some() {}
                Ok(())
            })
        })
    }

    /// Runs `verify.sql`: every row's first column must be 1 and at least
    /// one row must come back.
    ///
    /// # Errors
    /// Which statement and row failed, and what it returned.
    pub fn run_verify(&self, sql: &str) -> std::result::Result<(), String> {
        let mut total = 0usize;
        self.as_script(|conn| {
            for_each_statement(conn, sql, |n, stmt| {
                if !stmt.readonly() {
                    return Err(format!("statement {n} is not a SELECT; verify.sql may only read"));
                }
                let text = stmt.expanded_sql().unwrap_or_default();
                let mut rows = stmt.raw_query();
                let mut row_no = 0;
                while let Some(row) = rows.next().map_err(|e| statement_error(n, &e))? {
                    row_no += 1;
                    total += 1;
                    let v = row.get_ref(0).map_err(|e| statement_error(n, &e))?;
                    let ok = matches!(v, ValueRef::Integer(1)) || matches!(v, ValueRef::Real(f) if f == 1.0);
                    if !ok {
                        return Err(format!("returned {} for row {row_no} ({})", render_value(v), text.trim()));
                    }
                }
                Ok(())
            })
        })?;
        if total == 0 {
            return Err("returned no rows; it must return at least one row whose first column is 1".into());
        }
        Ok(())
    }

    /// Runs a `[[check]]` query and returns its first column as JSON.
    ///
    /// # Errors
    /// SQLite's message, or that the query writes or returns no row.
    pub fn query_value(&self, sql: &str) -> std::result::Result<serde_json::Value, String> {
        self.as_script(|conn| {
            let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
            if !stmt.readonly() {
                return Err("the query writes; checks may only read".into());
            }
            let mut rows = stmt.raw_query();
            match rows.next().map_err(|e| e.to_string())? {
                Some(row) => Ok(json_value(row.get_ref(0).map_err(|e| e.to_string())?)),
                None => Err("the query returned no row".into()),
            }
        })
    }
}

fn statement_error(n: usize, e: &rusqlite::Error) -> String {
    let msg = e.to_string();
    if msg.contains("not authorized") {
        format!("statement {n} failed: {msg} ({DENIED})")
    } else {
        format!("statement {n} failed: {msg}")
    }
}

/// What the authorizer denies, for error messages.
const DENIED: &str = "denied by Rewind's SQL authorizer: release scripts may not ATTACH/DETACH, call \
                      load_extension, control transactions, use file-touching pragmas such as \
                      writable_schema, or write _rewind_ledger";

/// Checks a release script, before anything runs, for what the authorizer
/// would deny: `ATTACH`/`DETACH`, `load_extension(...)` and pragmas outside
/// the allowed list. The authorizer still guards every statement at run
/// time; this check lets a plan refuse such a script while nothing has
/// changed (exit 2) instead of failing half-way and reverting (exit 1).
///
/// # Errors
/// The statement number and what it may not do.
pub fn check_script(sql: &str) -> std::result::Result<(), String> {
    use rewind_shared::sqltext::{TokenKind, tokens};
    let toks = tokens(sql);
    let mut statement = 1;
    let mut first = true;
    for (i, t) in toks.iter().enumerate() {
        if t.kind == TokenKind::Punct && t.text == ";" {
            statement += 1;
            first = true;
            continue;
        }
        let word = |t: &rewind_shared::sqltext::Token| (t.kind == TokenKind::Word).then(|| t.text.to_ascii_lowercase());
        let w = word(t);
        if first {
            first = false;
            match w.as_deref() {
                Some(k @ ("attach" | "detach")) => {
                    return Err(format!(
                        "statement {statement}: {} is not allowed in release scripts ({DENIED})",
                        k.to_ascii_uppercase()
                    ));
                }
                Some("pragma") => {
                    // PRAGMA [schema.]name ...
                    let mut name = toks.get(i + 1);
                    if toks.get(i + 2).is_some_and(|p| p.kind == TokenKind::Punct && p.text == ".") {
                        name = toks.get(i + 3);
                    }
                    let name = name.map(|n| n.text.to_ascii_lowercase()).unwrap_or_default();
                    if !ALLOWED_PRAGMAS.contains(&name.as_str()) {
                        return Err(format!(
                            "statement {statement}: PRAGMA {name} is not allowed in release scripts ({DENIED})"
                        ));
                    }
                }
                _ => {}
            }
        }
        if w.as_deref() == Some("load_extension")
            && toks.get(i + 1).is_some_and(|p| p.kind == TokenKind::Punct && p.text == "(")
        {
            return Err(format!(
                "statement {statement}: load_extension() is not allowed in release scripts ({DENIED})"
            ));
        }
    }
    Ok(())
}

/// Prepares and hands each statement of `sql` to `f` with its 1-based number.
fn for_each_statement(
    conn: &Connection,
    sql: &str,
    mut f: impl FnMut(usize, &mut rusqlite::Statement<'_>) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    use fallible_iterator::FallibleIterator;
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut n = 0;
    loop {
        match batch.next() {
            Ok(Some(mut stmt)) => {
                n += 1;
                let text = stmt.expanded_sql().unwrap_or_default();
                f(n, &mut stmt)
                    .map_err(|e| if e.contains('(') { e } else { format!("{e} (`{}`)", shorten(text.trim())) })?;
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("statement {} failed: {e}", n + 1)),
        }
    }
}

fn shorten(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 120 {
        format!("{}...", one_line.chars().take(117).collect::<String>())
    } else {
        one_line
    }
}

fn render_value(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("a {}-byte blob", b.len()),
    }
}

/// A SQLite value as JSON (blobs as hex strings).
#[must_use]
pub fn json_value(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => hex::encode(b).into(),
    }
}

/// Notes a table a script statement may write (content or columns).
fn record_write(written: &Mutex<BTreeSet<String>>, ctx: &AuthContext<'_>) {
    let table = match ctx.action {
        AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::CreateTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::AlterTable { table_name, .. } => table_name,
        _ => return,
    };
    if let Ok(mut w) = written.lock() {
        w.insert(table.to_ascii_lowercase());
    }
}

fn authorize(script_mode: &AtomicBool, ctx: &AuthContext<'_>) -> Authorization {
    if !script_mode.load(Ordering::SeqCst) {
        return Authorization::Allow;
    }
    let internal = |t: &str| t.eq_ignore_ascii_case("_rewind_ledger");
    match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Transaction { .. } => Authorization::Deny,
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Authorization::Deny
        }
        AuthAction::Pragma { pragma_name, .. } => {
            if ALLOWED_PRAGMAS.iter().any(|p| p.eq_ignore_ascii_case(pragma_name)) {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::AlterTable { table_name, .. }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
            if internal(table_name) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> (tempfile::TempDir, Target) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.db");
        Connection::open(&p).unwrap().execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);").unwrap();
        let t = Target::open("t", &p).unwrap();
        (d, t)
    }

    #[test]
    fn scripts_cannot_escape_the_database() {
        let (d, t) = target();
        let other = d.path().join("other.db");
        for sql in [
            format!("ATTACH '{}' AS o;", other.display()),
            "PRAGMA writable_schema = ON;".to_string(),
            "PRAGMA journal_mode = OFF;".to_string(),
            "SELECT load_extension('x');".to_string(),
            "COMMIT;".to_string(),
            "CREATE TABLE _rewind_ledger(x); INSERT INTO _rewind_ledger VALUES (1);".to_string(),
        ] {
            let e = t.run_script(&sql).unwrap_err();
            assert!(e.contains("not authorized") || e.contains("failed"), "{sql}: {e}");
        }
        assert!(!other.exists());
        t.run_script("PRAGMA foreign_keys = ON; INSERT INTO t VALUES (2);").unwrap();
    }

    #[test]
    fn denied_statements_are_found_before_running() {
        for (sql, what) in [
            ("CREATE TABLE a(x);\nATTACH 'o.db' AS o;", "statement 2: ATTACH"),
            ("detach o", "DETACH"),
            ("PRAGMA main.writable_schema = 1;", "PRAGMA writable_schema"),
            ("-- c\nSELECT 1; SELECT Load_Extension ('x');", "statement 2: load_extension()"),
            ("PRAGMA journal_mode = OFF", "PRAGMA journal_mode"),
        ] {
            let e = check_script(sql).unwrap_err();
            assert!(e.contains(what), "{sql}: {e}");
        }
        for sql in [
            "PRAGMA foreign_keys = ON; UPDATE t SET a = 'ATTACH x'; -- ATTACH in a comment",
            "CREATE TABLE attachments(id); INSERT INTO attachments VALUES (1);",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 1; END; SELECT 1;",
        ] {
            check_script(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn verify_reports_the_failing_row() {
        let (_d, t) = target();
        t.run_verify("SELECT 1; SELECT count(*) = 1 FROM t;").unwrap();
        let e = t.run_verify("SELECT 1 UNION ALL SELECT 0;").unwrap_err();
        assert!(e.contains("returned 0 for row 2"), "{e}");
        assert!(t.run_verify("SELECT 1 WHERE 0;").unwrap_err().contains("no rows"));
        assert!(t.run_verify("DELETE FROM t;").unwrap_err().contains("not a SELECT"));
    }

    #[test]
    fn not_sqlite_is_bad_input() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.db");
        std::fs::write(&p, "hello, this is not a database at all").unwrap();
        let e = Target::open("x", &p).err().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not a SQLite database"), "{e}");
    }
}
