//! Apply and rollback semantics end to end (DESIGN.md §2, §5): re-apply is a
//! no-op, a changed applied migration is refused, rollback proves itself
//! ("identical" / "changed since apply"), `rollback = "restore"` reports lost
//! writes, and the `--json` shapes of apply, rollback and checksum.

mod agent_common;

use std::collections::BTreeSet;

use agent_common::{Endpoint, agent_db, journal_rows};
use rewind_tests::{digest, release, run};
use rusqlite::Connection;
use serde_json::Value;

fn count(state: &std::path::Path, table: &str) -> i64 {
    agent_db(state).query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

fn target<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no target {name}: {report}"))
}

fn is_digest(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 67 && s.starts_with("b3:") && s[3..].chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn re_apply_is_a_no_op() {
    let e = Endpoint::new();
    let rel = release("2026.11.0");
    let first = e.apply(&rel);
    assert_eq!(first.code, 0, "{first:?}");
    let applied = e.digests();
    let (plans, snaps) = (count(&e.state, "plans"), count(&e.state, "snapshots"));
    let rows = journal_rows(&e.state);
    let again = e.apply(&rel);
    assert_eq!(again.code, 0, "{again:?}");
    let j = again.json();
    assert_eq!(j["status"], "applied");
    assert!(j["message"].as_str().unwrap().contains("already applied"), "{j}");
    assert_eq!(e.digests(), applied);
    assert_eq!(
        (count(&e.state, "plans"), count(&e.state, "snapshots")),
        (plans, snaps),
        "re-apply creates no plan and no snapshot"
    );
    assert_eq!(journal_rows(&e.state), rows);
    // Still reports which snapshot protects each target.
    let f = first.json();
    for name in ["notes", "settings"] {
        assert_eq!(target(&j, name)["snapshot"], target(&f, name)["snapshot"], "{j}");
        assert_eq!(target(&j, name)["after"], target(&f, name)["after"]);
    }
    // The ledger holds each migration once.
    let c = Connection::open(&e.notes).unwrap();
    let n: i64 =
        c.query_row("SELECT count(*) FROM _rewind_ledger WHERE reverted_at IS NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}

#[test]
fn an_applied_migration_whose_sql_changed_is_refused_but_a_comment_edit_is_not() {
    let e = Endpoint::new();
    let rel = e.copy_release("2026.11.0", "edited");
    assert_eq!(e.apply(&rel).code, 0);
    let up = rel.join("migrations/0002_normalize_status/up.sql");
    let original = std::fs::read_to_string(&up).unwrap();
    // A comment and whitespace edit keeps the checksum: still a no-op.
    std::fs::write(&up, format!("-- reviewed again\n{}\n\n", original.replace("UPDATE orders", "UPDATE   orders")))
        .unwrap();
    let r = e.apply(&rel);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.json()["message"].as_str().unwrap().contains("already applied"));
    // Changed SQL: refused, nothing changed.
    std::fs::write(&up, original.replace("lower(trim(status))", "upper(trim(status))")).unwrap();
    let digests = e.digests();
    let rows = journal_rows(&e.state);
    let r = e.apply(&rel);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("0002_normalize_status") && r.stderr.contains("changed"), "{r:?}");
    assert_eq!(e.digests(), digests);
    assert_eq!(journal_rows(&e.state), rows);
    let r = e.rollback(&rel);
    assert_eq!(r.code, 2, "a rollback with a changed script is refused too: {r:?}");
    assert_eq!(e.digests(), digests);
}

#[test]
fn rollback_proves_identical_and_changed_since_apply() {
    let rel = release("2026.11.0");
    // No writes after apply: identical.
    let e = Endpoint::new();
    let start = e.digests();
    assert_eq!(e.apply(&rel).code, 0);
    let r = e.rollback(&rel);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    for name in ["notes", "settings"] {
        assert_eq!(target(&j, name)["proof"], "identical", "{j}");
    }
    assert_eq!(e.digests(), start);
    assert!(r.json()["message"].as_str().unwrap().contains("identical"));

    // The app writes after apply: the rollback keeps the write and says so.
    let e = Endpoint::new();
    assert_eq!(e.apply(&rel).code, 0);
    Connection::open(&e.notes)
        .unwrap()
        .execute_batch(
            "INSERT INTO notes(id, title, body, created_at) VALUES (1000, 'written after apply', '', '2026-11-25')",
        )
        .unwrap();
    let before_rollback = e.digests();
    let r = e.rollback(&rel);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    // The digests reported are those of the files, app write included.
    assert_eq!(target(&j, "notes")["before"], before_rollback.0.as_str(), "{j}");
    assert_eq!(target(&j, "notes")["after"], digest(&e.notes).as_str(), "{j}");
    assert_ne!(target(&j, "notes")["after"], start.0.as_str());
    assert_eq!(target(&j, "notes")["proof"], "changed since apply", "{j}");
    assert_eq!(target(&j, "settings")["proof"], "identical", "{j}");
    let c = Connection::open(&e.notes).unwrap();
    let t: String = c.query_row("SELECT title FROM notes WHERE id = 1000", [], |r| r.get(0)).unwrap();
    assert_eq!(t, "written after apply", "a down.sql rollback keeps the app's writes");
    // The human output says it too.
    let e2 = Endpoint::new();
    assert_eq!(e2.apply(&rel).code, 0);
    let r = e2.plan("rollback", &rel, &[], &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("data identical"), "{}", r.stdout);
}

#[test]
fn restore_rollback_reports_lost_writes() {
    let setup = Endpoint::new();
    let rel = setup.copy_release("2026.11.0", "restore-mode");
    let toml = std::fs::read_to_string(rel.join("release.toml")).unwrap();
    std::fs::write(
        rel.join("release.toml"),
        toml.replacen("target = \"settings\"\n", "target = \"settings\"\nrollback = \"restore\"\n", 1),
    )
    .unwrap();
    for app_writes in [false, true] {
        let e = Endpoint::new();
        let start = e.digests();
        assert_eq!(e.apply(&rel).code, 0);
        if app_writes {
            Connection::open(&e.settings)
                .unwrap()
                .execute_batch("UPDATE settings SET value = '16' WHERE key = 'font_size'")
                .unwrap();
        }
        let r = e.rollback(&rel);
        assert_eq!(r.code, 0, "{r:?}");
        let j = r.json();
        let s = target(&j, "settings");
        assert_eq!(s["lost_writes"], app_writes, "{j}");
        assert_eq!(s["proof"], "identical", "a restore brings back the snapshot exactly: {j}");
        assert_eq!(e.digests(), start);
        if app_writes {
            // The human output says so too.
            let e3 = Endpoint::new();
            assert_eq!(e3.apply(&rel).code, 0);
            Connection::open(&e3.settings).unwrap().execute_batch("DELETE FROM settings WHERE key = 'sync'").unwrap();
            let h = e3.plan("rollback", &rel, &[], &[]);
            assert_eq!(h.code, 0, "{h:?}");
            assert!(h.stdout.contains("lost"), "the rollback output says writes were lost: {}", h.stdout);
        }
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

#[test]
fn json_shapes_match_the_design() {
    let e = Endpoint::new();
    let rel = release("2026.11.0");

    // checksum --json: exactly {digest, schema, tables: [{name, rows, digest}]}.
    let r = run("rewind-agent", &["checksum", "--db", &e.notes.to_string_lossy(), "--json"], &[]);
    assert_eq!(r.code, 0);
    let c = r.json();
    assert_eq!(keys(&c), ["digest", "schema", "tables"].map(String::from).into());
    assert!(is_digest(&c["digest"]) && is_digest(&c["schema"]), "{c}");
    let tables = c["tables"].as_array().unwrap();
    assert_eq!(tables.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(), ["notes", "orders"]);
    for t in tables {
        assert_eq!(keys(t), ["digest", "name", "rows"].map(String::from).into(), "{t}");
        assert!(is_digest(&t["digest"]) && t["rows"].is_u64(), "{t}");
    }
    assert_eq!(tables[0]["rows"], 200);
    assert_eq!(tables[1]["rows"], 500);
    assert_eq!(c["digest"], digest(&e.notes));

    let start = e.digests();
    let a = e.apply(&rel);
    assert_eq!(a.code, 0);
    let a = a.json();
    assert_eq!(a["status"], "applied");
    assert_eq!(a["release"], "2026.11.0");
    assert_eq!(a["sequence"], 7);
    let applied = e.digests();
    for (name, before, after) in [("notes", &start.0, &applied.0), ("settings", &start.1, &applied.1)] {
        let t = target(&a, name);
        assert_eq!(t["before"], before.as_str(), "{t}");
        assert_eq!(t["after"], after.as_str(), "{t}");
        let snap = t["snapshot"].as_str().unwrap_or_else(|| panic!("apply reports the snapshot id: {t}"));
        assert!(snap.starts_with("snap-"), "{t}");
    }

    let r = e.rollback(&rel);
    assert_eq!(r.code, 0);
    let r = r.json();
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(r["release"], "2026.11.0");
    assert_eq!(r["sequence"], 7);
    for (name, before, after) in [("notes", &applied.0, &start.0), ("settings", &applied.1, &start.1)] {
        let t = target(&r, name);
        assert_eq!(t["before"], before.as_str(), "{t}");
        assert_eq!(t["after"], after.as_str(), "{t}");
        assert_eq!(
            t["snapshot"],
            target(&a, name)["snapshot"],
            "rollback names the pre-apply snapshot it compared with"
        );
    }

    let f = e.plan_dbs("apply", &release("2026.11.1-bad"), &e.notes_arg(), &["--json"], &[]);
    assert_eq!(f.code, 1);
    let f = f.json();
    assert_eq!(f["status"], "failed");
    assert_eq!(f["release"], "2026.11.1");
    assert_eq!(f["sequence"], 8);
    let t = target(&f, "notes");
    assert!(is_digest(&t["before"]) && is_digest(&t["after"]) && t["snapshot"].is_string(), "{t}");
    assert_eq!(t["before"], t["after"]);
}

/// A down.sql that does not undo its up.sql: the rollback proof fails, the
/// step is not committed, exit 3 prints the exact next command; following
/// it and running the rollback again finishes and proves everything, and
/// `status` no longer asks for a human.
#[test]
fn an_unprovable_rollback_needs_a_human_and_the_printed_command_settles_it() {
    let e = Endpoint::new();
    let start = e.digests();
    let rel = e.copy_release("2026.11.0", "weak-down");
    // Forgets to drop the column up.sql added.
    std::fs::write(rel.join("migrations/0001_add_currency/down.sql"), "DROP INDEX orders_by_currency;\n").unwrap();
    assert_eq!(e.apply(&rel).code, 0);
    let r = e.rollback(&rel);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("0001_add_currency") && r.stderr.contains("schema digest"), "{r:?}");
    let next =
        r.stderr.lines().find_map(|l| l.strip_prefix("next: ")).unwrap_or_else(|| panic!("no next command: {r:?}"));
    assert!(next.starts_with("rewind-agent --state ") && next.contains("snapshot restore"), "{next}");
    let s = e.agent(&["status", "--json"]);
    assert_eq!(s.code, 3, "status keeps asking for a human: {s:?}");
    assert_eq!(s.json()["needs_human"].as_array().unwrap().len(), 1);
    e.assert_integrity();
    // Run exactly the printed command (with this build's binary).
    let args: Vec<&str> = next.split_whitespace().skip(1).collect();
    let restore = run("rewind-agent", &args, &[]);
    assert_eq!(restore.code, 0, "{restore:?}");
    let again = e.rollback(&rel);
    assert_eq!(again.code, 0, "{again:?}");
    let j = again.json();
    for name in ["notes", "settings"] {
        assert_eq!(target(&j, name)["proof"], "identical", "proven against the pre-apply snapshot: {j}");
    }
    assert_eq!(e.digests(), start);
    let s = e.agent(&["status", "--json"]);
    assert_eq!(s.code, 0, "settled: {s:?}");
    assert!(s.json()["needs_human"].as_array().unwrap().is_empty());
    e.assert_consistent();
}

/// Scripts whose writes reach tables they do not name — an app trigger
/// writing an audit table, a table renamed — still get digests equal to
/// the files' after apply and after rollback, and an exact rollback proof.
#[test]
fn digests_cover_trigger_side_effects_and_renamed_tables() {
    let e = Endpoint::new();
    Connection::open(&e.notes)
        .unwrap()
        .execute_batch(
            "CREATE TABLE note_audit(id INTEGER PRIMARY KEY, note_id INTEGER, what TEXT);
             CREATE TRIGGER notes_audit AFTER UPDATE ON notes BEGIN
                 INSERT INTO note_audit(note_id, what) VALUES (new.id, 'update');
             END;",
        )
        .unwrap();
    let start = digest(&e.notes);
    let rel = e.dir.path().join("side-effects");
    for (id, up, down) in [
        (
            "0001_touch_bodies",
            "UPDATE notes SET body = body || '!' WHERE id <= 5;",
            "UPDATE notes SET body = substr(body, 1, length(body) - 1) WHERE id <= 5;\nDELETE FROM note_audit;",
        ),
        ("0002_rename_orders", "ALTER TABLE orders RENAME TO purchases;", "ALTER TABLE purchases RENAME TO orders;"),
    ] {
        let m = rel.join("migrations").join(id);
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("up.sql"), format!("{up}\n")).unwrap();
        std::fs::write(m.join("down.sql"), format!("{down}\n")).unwrap();
    }
    std::fs::write(
        rel.join("release.toml"),
        "name = \"notes\"\nversion = \"2026.12.0\"\nsequence = 10\napp_version = \"4.4.0\"\nowner = \"storage-team\"\non_call = \"pager:storage\"\n\n\
         [[target]]\nname = \"notes\"\n\n\
         [[migration]]\nid = \"0001_touch_bodies\"\ntarget = \"notes\"\n\n\
         [[migration]]\nid = \"0002_rename_orders\"\ntarget = \"notes\"\nafter = [\"0001_touch_bodies\"]\n",
    )
    .unwrap();
    let a = e.plan_dbs("apply", &rel, &e.notes_arg(), &["--json"], &[]);
    assert_eq!(a.code, 0, "{a:?}");
    let audit_rows: i64 =
        Connection::open(&e.notes).unwrap().query_row("SELECT count(*) FROM note_audit", [], |r| r.get(0)).unwrap();
    assert_eq!(audit_rows, 5, "the app's trigger ran");
    let aj = a.json();
    assert_eq!(
        target(&aj, "notes")["after"],
        digest(&e.notes).as_str(),
        "apply's digest includes the trigger's writes and the rename: {aj}"
    );
    let r = e.plan_dbs("rollback", &rel, &e.notes_arg(), &["--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let rj = r.json();
    assert_eq!(target(&rj, "notes")["after"], digest(&e.notes).as_str(), "{rj}");
    assert_eq!(target(&rj, "notes")["proof"], "identical", "{rj}");
    assert_eq!(digest(&e.notes), start);
}

/// Switches a seeded database (WAL) to a rollback journal, where a snapshot
/// is a copy of the file verified while the first migration already runs.
fn to_rollback_journal(db: &std::path::Path) {
    let mode: String =
        Connection::open(db).unwrap().query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
}

/// Whether the snapshot's verification overlaps the first migration
/// (`REWIND_SNAPSHOT_OVERLAP=on`) or comes before it (`off`), a copy that
/// does not verify stops the apply before anything commits: exit 2, both
/// targets at their start digests, no ledger, no flag set, no snapshot
/// listed, no plan left running; the same apply then succeeds.
#[test]
fn a_snapshot_that_does_not_verify_stops_the_apply_before_any_commit() {
    for overlap in ["on", "off"] {
        snapshot_that_does_not_verify(overlap);
    }
}

fn snapshot_that_does_not_verify(overlap: &str) {
    let e = Endpoint::new();
    to_rollback_journal(&e.notes);
    to_rollback_journal(&e.settings);
    let rel = release("2026.11.0");
    let start = e.digests();
    let r = e.plan(
        "apply",
        &rel,
        &["--json"],
        &[("REWIND_FAULT", "snapshot.copy_differs"), ("REWIND_SNAPSHOT_OVERLAP", overlap)],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("differs from the source") && r.stderr.contains("nothing changed"), "{r:?}");
    assert_eq!(e.digests(), start, "nothing committed");
    for db in [&e.notes, &e.settings] {
        let ledger: i64 = Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_schema WHERE name = '_rewind_ledger'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ledger, 0, "no migration committed on {}", db.display());
    }
    assert_eq!(count(&e.state, "snapshots"), 0, "an unverified snapshot is never listed");
    assert_eq!(count(&e.state, "plans WHERE state = 'running'"), 0);
    let status = e.agent(&["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.json()["installed"].as_array().unwrap().is_empty(), "{status:?}");
    let leftovers: Vec<_> = std::fs::read_dir(e.state.join("snapshots")).unwrap().flatten().map(|f| f.path()).collect();
    assert!(leftovers.is_empty(), "the discarded copies are deleted: {leftovers:?}");
    let again = e.plan("apply", &rel, &["--json"], &[("REWIND_SNAPSHOT_OVERLAP", overlap)]);
    assert_eq!(again.code, 0, "{overlap}: {again:?}");
    assert_ne!(e.digests(), start);
}

/// An unknown `REWIND_SNAPSHOT_OVERLAP` is bad input: exit 2, named, nothing
/// changed, no plan journaled.
#[test]
fn an_unknown_snapshot_overlap_setting_is_refused() {
    let e = Endpoint::new();
    let rel = release("2026.11.0");
    let start = e.digests();
    let r = e.plan("apply", &rel, &["--json"], &[("REWIND_SNAPSHOT_OVERLAP", "sometimes")]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("REWIND_SNAPSHOT_OVERLAP") && r.stderr.contains("on, off or auto"), "{r:?}");
    assert_eq!(e.digests(), start);
    assert_eq!(count(&e.state, "plans"), 0, "{r:?}");
}
