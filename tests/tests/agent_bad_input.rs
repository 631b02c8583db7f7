//! Bad input end to end (DESIGN.md §5 exit codes): every unusable input is
//! a clear error naming the file or field, exit 2, and changes nothing —
//! neither the app databases (by digest) nor agent.db's plans, journal,
//! snapshots, flags and installed releases. Failures found while applying
//! (a script failing half-way, a verify or check that does not pass) exit 1
//! with every target reverted to its start state, proven by digest.

mod agent_common;

use std::path::Path;

use agent_common::{Endpoint, installed, journal_rows};
use rewind_tests::{Run, digest, release, run};
use rusqlite::Connection;

/// An endpoint with some history (one apply and rollback), so "nothing
/// changed" is checked against non-empty agent.db tables.
fn endpoint() -> Endpoint {
    let e = Endpoint::new();
    let rel = release("2026.11.0");
    assert_eq!(e.apply(&rel).code, 0);
    assert_eq!(e.rollback(&rel).code, 0);
    e
}

/// What must not change: both digests and agent.db's rows.
fn snapshot_of(e: &Endpoint) -> ((String, String), Vec<String>) {
    (e.digests(), journal_rows(&e.state))
}

fn assert_refused(e: &Endpoint, r: &Run, before: &((String, String), Vec<String>), needles: &[&str]) {
    assert_eq!(r.code, 2, "bad input must exit 2: {r:?}");
    for n in needles {
        assert!(r.stderr.contains(n), "the error must mention {n:?}: {}", r.stderr);
    }
    assert_eq!(&snapshot_of(e), before, "a refused command changed something");
}

fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let s = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(s)).unwrap();
}

#[test]
fn malformed_release_toml() {
    let e = endpoint();
    let rel = e.copy_release("2026.11.0", "bad");
    edit(&rel.join("release.toml"), |s| s.replace("sequence = 7", "sequence = = 7"));
    let before = snapshot_of(&e);
    let r = e.apply(&rel);
    assert_refused(&e, &r, &before, &["release.toml:6:"]);
}

#[test]
fn unknown_key_in_release_toml_names_line_and_column() {
    let e = endpoint();
    let rel = e.copy_release("2026.11.0", "bad");
    edit(&rel.join("release.toml"), |s| s.replace("owner = \"storage-team\"", "ownr = \"storage-team\""));
    let before = snapshot_of(&e);
    let r = e.apply(&rel);
    assert_refused(&e, &r, &before, &["release.toml:8:1", "ownr"]);
    let r = e.rollback(&rel);
    assert_refused(&e, &r, &before, &["release.toml:8:1", "ownr"]);
}

#[test]
fn missing_script() {
    let e = endpoint();
    let rel = e.copy_release("2026.11.0", "bad");
    std::fs::remove_file(rel.join("migrations/0001_add_currency/down.sql")).unwrap();
    let before = snapshot_of(&e);
    let r = e.apply(&rel);
    assert_refused(&e, &r, &before, &["0001_add_currency", "down.sql"]);
}

#[test]
fn dependency_cycle() {
    let e = endpoint();
    let rel = e.copy_release("2026.11.0", "bad");
    edit(&rel.join("release.toml"), |s| s.replacen("after = []", "after = [\"0002_normalize_status\"]", 1));
    let before = snapshot_of(&e);
    let r = e.apply(&rel);
    assert_refused(&e, &r, &before, &["cycle", "0001_add_currency", "0002_normalize_status"]);
}

#[test]
fn db_mapping_for_an_unknown_target_and_a_missing_mapping() {
    let e = endpoint();
    let rel = release("2026.11.0");
    let before = snapshot_of(&e);
    let mut dbs = e.db_args();
    dbs.extend(["--db".to_string(), format!("nots={}", e.notes.display())]);
    let r = e.plan_dbs("apply", &rel, &dbs, &[], &[]);
    assert_refused(&e, &r, &before, &["nots", "no target"]);
    let r = e.plan_dbs("apply", &rel, &e.notes_arg(), &[], &[]);
    assert_refused(&e, &r, &before, &["settings", "--db settings="]);
    let r = e.plan_dbs("apply", &rel, &["--db".into(), e.notes.display().to_string()], &[], &[]);
    assert_refused(&e, &r, &before, &["TARGET=FILE"]);
    // Two targets on one file (through a symlink, even).
    let link = e.dir.path().join("also-notes.db");
    std::os::unix::fs::symlink(&e.notes, &link).unwrap();
    let dbs = [
        "--db".to_string(),
        format!("notes={}", e.notes.display()),
        "--db".into(),
        format!("settings={}", link.display()),
    ];
    let r = e.plan_dbs("apply", &rel, &dbs, &[], &[]);
    assert_refused(&e, &r, &before, &["same file", "settings", "notes"]);
}

#[test]
fn a_file_that_is_not_sqlite_or_does_not_exist() {
    let e = endpoint();
    let rel = release("2026.11.0");
    let text = e.dir.path().join("notes.txt");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(100)).unwrap();
    let before = snapshot_of(&e);
    let dbs = [
        "--db".to_string(),
        format!("notes={}", text.display()),
        "--db".into(),
        format!("settings={}", e.settings.display()),
    ];
    let r = e.plan_dbs("apply", &rel, &dbs, &[], &[]);
    assert_refused(&e, &r, &before, &["notes.txt", "not a SQLite database"]);
    let missing = e.dir.path().join("gone.db");
    let dbs = [
        "--db".to_string(),
        format!("notes={}", missing.display()),
        "--db".into(),
        format!("settings={}", e.settings.display()),
    ];
    let r = e.plan_dbs("apply", &rel, &dbs, &[], &[]);
    assert_refused(&e, &r, &before, &["gone.db"]);
    assert!(!missing.exists(), "apply must not create a missing database");
    let r = run("rewind-agent", &["checksum", "--db", &text.to_string_lossy()], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not a SQLite database"), "{r:?}");
}

/// Clears the immutable attribute when the test ends, even on panic.
struct Immutable<'a>(&'a Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(self.0).status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn a_read_only_database() {
    let e = endpoint();
    let rel = release("2026.11.0");
    let before = snapshot_of(&e);
    // Root ignores file modes: make the file immutable (chattr +i), which
    // the kernel enforces for root too. Others get a plain chmod 444.
    let _guard;
    if is_root() {
        let s = std::process::Command::new("chattr").arg("+i").arg(&e.notes).status();
        assert!(
            s.is_ok_and(|s| s.success()),
            "running as root, the test needs `chattr +i` (e2fsprogs) on a filesystem that supports it to make a database really read-only"
        );
        _guard = Some(Immutable(&e.notes));
        assert!(
            std::fs::OpenOptions::new().write(true).open(&e.notes).is_err(),
            "chattr +i did not make the file read-only"
        );
    } else {
        _guard = None;
        let mut p = std::fs::metadata(&e.notes).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(&e.notes, p).unwrap();
    }
    let r = e.apply(&rel);
    assert_refused(&e, &r, &before, &["notes.db", "read-only"]);
}

/// A rollback-journal database in a directory nobody may add files to:
/// SQLite cannot create its journal, so no write can happen. Refused before
/// anything changes (not found half-way through a migration).
#[test]
fn a_database_in_a_read_only_directory() {
    let e = Endpoint::new();
    for db in [&e.notes, &e.settings] {
        Connection::open(db).unwrap().pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let rel = release("2026.11.0");
    assert_eq!(e.apply(&rel).code, 0);
    assert_eq!(e.rollback(&rel).code, 0);
    let before = snapshot_of(&e);
    // Root ignores directory modes: make it immutable; others get chmod 555.
    let _guard = if is_root() {
        let s = std::process::Command::new("chattr").arg("+i").arg(e.dir.path()).status();
        assert!(s.is_ok_and(|s| s.success()), "running as root, this case needs `chattr +i` on the database directory");
        Some(Immutable(e.dir.path()))
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        None
    };
    let r = e.apply(&rel);
    assert_refused(&e, &r, &before, &["notes.db", "journal", "writable"]);
    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The app holds the write lock on a WAL database for longer than the busy
/// timeout: refused before anything changes.
#[test]
fn a_database_locked_past_the_busy_timeout_wal() {
    let e = endpoint();
    let rel = release("2026.11.0");
    let before = snapshot_of(&e);
    let app = Connection::open(&e.notes).unwrap();
    app.execute_batch("BEGIN IMMEDIATE; INSERT INTO notes(title, created_at) VALUES ('draft', '2026-11-25');").unwrap();
    let r = e.plan("apply", &rel, &[], &[("REWIND_BUSY_TIMEOUT_MS", "300")]);
    app.execute_batch("ROLLBACK").unwrap();
    drop(app);
    assert_refused(&e, &r, &before, &["notes.db", "locked", "300 ms"]);
}

/// A rollback-journal database with an EXCLUSIVE lock held: even reading
/// waits; refused after the timeout, nothing changed.
#[test]
fn a_database_locked_past_the_busy_timeout_exclusive() {
    let e = Endpoint::new();
    for db in [&e.notes, &e.settings] {
        Connection::open(db).unwrap().pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let rel = release("2026.11.0");
    let before = snapshot_of(&e);
    let app = Connection::open(&e.settings).unwrap();
    app.execute_batch("BEGIN EXCLUSIVE; UPDATE settings SET value = 'off' WHERE key = 'sync';").unwrap();
    let r = e.plan("apply", &rel, &[], &[("REWIND_BUSY_TIMEOUT_MS", "300")]);
    app.execute_batch("ROLLBACK").unwrap();
    drop(app);
    assert_refused(&e, &r, &before, &["settings.db", "locked"]);
}

#[test]
fn attach_load_extension_and_writable_schema_in_a_script_are_refused_before_anything_runs() {
    let e = endpoint();
    let outside = e.dir.path().join("outside.db");
    for (i, (migration, file, sql, needle)) in [
        (
            "0001_add_currency",
            "up.sql",
            format!("ATTACH '{}' AS o;\nCREATE TABLE o.stolen AS SELECT * FROM orders;", outside.display()),
            "ATTACH",
        ),
        ("0002_normalize_status", "up.sql", "SELECT load_extension('/tmp/evil.so');".to_string(), "load_extension"),
        (
            "0003_settings_theme",
            "up.sql",
            "PRAGMA writable_schema = ON;\nUPDATE sqlite_schema SET sql = 'x';".to_string(),
            "writable_schema",
        ),
        ("0001_add_currency", "down.sql", "PRAGMA journal_mode = OFF;".to_string(), "journal_mode"),
    ]
    .into_iter()
    .enumerate()
    {
        let rel = e.copy_release("2026.11.0", &format!("bad{i}"));
        edit(&rel.join("migrations").join(migration).join(file), |s| format!("{s}\n{sql}\n"));
        let before = snapshot_of(&e);
        let r = e.apply(&rel);
        assert_refused(&e, &r, &before, &[migration, file, needle, "not allowed", "nothing was changed"]);
        assert!(!outside.exists(), "ATTACH created a file");
    }
}

#[test]
fn tampered_and_truncated_snapshots_are_refused_and_the_target_is_untouched() {
    let e = Endpoint::new();
    for how in ["tampered", "truncated"] {
        let c = e.agent(&["snapshot", "create", "--db", &e.notes.to_string_lossy(), "--json"]);
        assert_eq!(c.code, 0, "{c:?}");
        let snap = c.json();
        let id = snap["id"].as_str().unwrap().to_string();
        let file = std::path::PathBuf::from(snap["file"].as_str().unwrap());
        Connection::open(&e.notes)
            .unwrap()
            .execute_batch("UPDATE notes SET title = 'after snapshot' WHERE id = 3")
            .unwrap();
        let mut p = std::fs::metadata(&file).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        p.set_readonly(false);
        std::fs::set_permissions(&file, p).unwrap();
        if how == "tampered" {
            let c = Connection::open(&file).unwrap();
            c.execute_batch("UPDATE orders SET total = total + 1 WHERE id = 7").unwrap();
        } else {
            let len = std::fs::metadata(&file).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len / 2).unwrap();
        }
        let before = snapshot_of(&e);
        let v = e.agent(&["snapshot", "verify", &id]);
        assert_eq!(v.code, 1, "{how}: verify must report the bad snapshot: {v:?}");
        let r = e.agent(&["snapshot", "restore", &id, "--db", &e.notes.to_string_lossy()]);
        assert_refused(&e, &r, &before, &[&id, "cannot be restored", "untouched"]);
        assert_eq!(agent_common::integrity(&e.notes), "ok");
    }
}

#[test]
fn corrupted_agent_db_is_refused_with_move_aside_advice() {
    for how in ["garbage", "damaged pages"] {
        let e = endpoint();
        let db = e.state.join("agent.db");
        assert!(
            !e.state.join("agent.db-wal").exists()
                || std::fs::metadata(e.state.join("agent.db-wal")).unwrap().len() == 0
        );
        let mut bytes = std::fs::read(&db).unwrap();
        if how == "garbage" {
            bytes = b"this is not a database; it was overwritten".repeat(200);
        } else {
            // Keep the header, scramble every page after the first.
            for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
                *b = (i * 31 % 251) as u8;
            }
        }
        std::fs::write(&db, &bytes).unwrap();
        let digests = e.digests();
        for args in [vec!["status"], vec!["flags"], vec!["snapshot", "list"]] {
            let r = e.agent(&args);
            assert_eq!(r.code, 2, "{how}: {args:?}: {r:?}");
            assert!(r.stderr.contains("agent.db") && r.stderr.contains("Move it aside"), "{how}: {r:?}");
            assert_eq!(std::fs::read(&db).unwrap(), bytes, "{how}: agent.db must not be changed");
        }
        let r = e.apply(&release("2026.11.0"));
        assert_eq!(r.code, 2, "{how}: {r:?}");
        assert_eq!(e.digests(), digests, "{how}: targets must not be changed");
        assert_eq!(std::fs::read(&db).unwrap(), bytes);
    }
}

/// Exit 1 cases: the release fails while applying; everything it did is
/// reverted and proven.
fn assert_reverted(e: &Endpoint, r: &Run, start: &(String, String), needles: &[&str]) {
    assert_eq!(r.code, 1, "a failed, reverted apply exits 1: {r:?}");
    let j = r.json();
    assert_eq!(j["status"], "failed", "{j}");
    let msg = format!("{} {}", j["message"], j["error"]);
    for n in needles {
        assert!(msg.contains(n), "the report must mention {n:?}: {msg}");
    }
    assert!(msg.contains("reverted"), "{msg}");
    assert_eq!(&e.digests(), start, "the failed release must be fully reverted");
    for t in j["targets"].as_array().unwrap() {
        if t["snapshot"].is_string() {
            assert_eq!(t["proof"], "identical", "{t}");
            assert_eq!(t["after"], t["before"], "{t}");
        }
    }
    assert_eq!(installed(&e.state, "notes"), None);
    e.assert_integrity();
    e.assert_consistent();
}

#[test]
fn multi_statement_up_sql_failing_half_way_is_fully_reverted() {
    let e = Endpoint::new();
    let start = e.digests();
    let rel = e.copy_release("2026.11.0", "half");
    edit(&rel.join("migrations/0002_normalize_status/up.sql"), |s| {
        format!(
            "{s}\nINSERT INTO orders(id, note_id, total, status) VALUES (9999, 1, 1.0, 'x');\nINSERT INTO no_such_table VALUES (1);\n"
        )
    });
    let r = e.apply(&rel);
    assert_reverted(&e, &r, &start, &["0002_normalize_status", "up.sql statement 3", "no_such_table"]);
    assert_eq!(r.json()["failed_step"], "up", "{r:?}");
}

#[test]
fn verify_returning_zero_or_no_rows_is_reverted() {
    let e = Endpoint::new();
    let start = e.digests();
    let r = e.plan_dbs("apply", &release("2026.11.1-bad"), &e.notes_arg(), &["--json"], &[]);
    assert_reverted(&e, &r, &start, &["0001_split_title", "verify.sql returned 0 for row 1"]);
    assert_eq!(r.json()["failed_step"], "verify", "the report names the failed step: {r:?}");

    let rel = e.copy_release("2026.11.0", "norows");
    std::fs::write(
        rel.join("migrations/0003_settings_theme/verify.sql"),
        "SELECT 1 FROM settings WHERE key = 'no such key';\n",
    )
    .unwrap();
    let r = e.apply(&rel);
    assert_reverted(&e, &r, &start, &["0003_settings_theme", "verify.sql returned no rows"]);
}

#[test]
fn a_failing_check_is_reverted() {
    let e = Endpoint::new();
    let start = e.digests();
    let rel = e.copy_release("2026.11.0", "check");
    edit(&rel.join("release.toml"), |s| {
        s.replace(
            "[[trigger]]",
            "[[check]]\nname = \"a thousand notes\"\ntarget = \"notes\"\nsql = \"SELECT count(*) FROM notes\"\nexpect = \">= 1000\"\nwhen = [\"after-apply\"]\n\n[[trigger]]",
        )
    });
    let r = e.apply(&rel);
    assert_reverted(&e, &r, &start, &["a thousand notes", "200"]);
    assert_eq!(r.json()["failed_step"], "check", "{r:?}");
    let f = e.agent(&["flags", "--json"]);
    assert!(f.json().get("notes").is_none_or(|n| n.get("new_checkout").is_none()), "the flag is reverted too: {f:?}");
}

#[test]
fn checksum_of_a_locked_database_waits_then_fails_clearly() {
    let e = Endpoint::new();
    Connection::open(&e.notes).unwrap().pragma_update(None, "journal_mode", "DELETE").unwrap();
    let app = Connection::open(&e.notes).unwrap();
    app.execute_batch("BEGIN EXCLUSIVE; DELETE FROM orders;").unwrap();
    let r =
        run("rewind-agent", &["checksum", "--db", &e.notes.to_string_lossy()], &[("REWIND_BUSY_TIMEOUT_MS", "200")]);
    app.execute_batch("ROLLBACK").unwrap();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("locked"), "{r:?}");
    // Once the app lets go, the same command works.
    assert!(digest(&e.notes).starts_with("b3:"));
}
