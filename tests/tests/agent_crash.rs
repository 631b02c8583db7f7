//! Crash matrix: for every crash point `rewind-agent debug crash-points`
//! lists, and every time a run reaches it (`<point>#N`), abort the real
//! binary there (`REWIND_CRASH_AT`), let the next command recover, and prove
//! the guarantee of DESIGN.md §5: every target passes integrity_check and is
//! at the plan's start state (an interrupted rollback is finished), by
//! digest; flags.json agrees with agent.db; the audit chain verifies; no
//! plan is left running; the engine still works afterwards.
//!
//! Needs the binaries built with `--features rewind-agent/fault-injection`
//! (scripts/test.sh does that).

mod agent_common;

use std::path::Path;

use agent_common::{Endpoint, crashed, installed};
use rewind_tests::{Run, digest, release, run};

/// Every crash point name (first word of each line).
fn points() -> Vec<String> {
    let r = run("rewind-agent", &["debug", "crash-points"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let pts: Vec<String> = r.stdout.lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    assert!(pts.len() >= 10, "too few crash points: {pts:?}");
    assert!(
        !r.stderr.contains("ignores REWIND_CRASH_AT"),
        "rewind-agent was built without the fault-injection feature: run scripts/test.sh"
    );
    pts
}

fn with_crash(point: &str) -> [(&str, &str); 1] {
    [("REWIND_CRASH_AT", point)]
}

/// Digests after a clean apply of `rel` on a fresh endpoint.
fn applied_digests(rel: &Path) -> (String, String) {
    let e = Endpoint::new();
    let r = e.apply(rel);
    assert_eq!(r.code, 0, "{r:?}");
    e.digests()
}

/// `status` must recover and report a clean state.
fn recover(e: &Endpoint, what: &str) -> Run {
    let s = e.agent(&["status", "--json"]);
    assert_eq!(s.code, 0, "{what}: status after the crash: {s:?}");
    s
}

/// After recovery: integrity, consistency, nothing pinned, every listed
/// snapshot verifies.
fn assert_safe(e: &Endpoint, what: &str) {
    e.assert_integrity();
    e.assert_consistent();
    let v = e.agent(&["snapshot", "verify", "--all"]);
    assert_eq!(v.code, 0, "{what}: a listed snapshot does not verify: {v:?}");
}

/// Runs `scenario(point#k)` for k = 1, 2, ... until a run no longer reaches
/// the point; returns how many crashes were injected.
fn each_hit(point: &str, mut scenario: impl FnMut(&str) -> bool) -> usize {
    let mut hits = 0;
    for k in 1..=8 {
        if !scenario(&format!("{point}#{k}")) {
            break;
        }
        hits += 1;
    }
    hits
}

/// Apply crashes at `at`; returns whether it crashed. With `wal` false both
/// targets are first switched to a rollback journal, where snapshots are
/// file copies verified while the first migration runs.
fn apply_scenario(
    at: &str,
    rel: &Path,
    start_digests: &(String, String),
    applied: &(String, String),
    wal: bool,
) -> bool {
    let e = Endpoint::new();
    if !wal {
        for db in [&e.notes, &e.settings] {
            let c = rusqlite::Connection::open(db).unwrap();
            let mode: String = c.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "delete");
        }
    }
    assert_eq!(&e.digests(), start_digests);
    // Rollback-journal snapshots are verified beside the first migration
    // (the path with the most interleaving), WAL ones before it.
    let overlap = if wal { "off" } else { "on" };
    let r = e.plan("apply", rel, &["--json"], &[with_crash(at)[0], ("REWIND_SNAPSHOT_OVERLAP", overlap)]);
    if !crashed(&r) {
        assert_eq!(r.code, 0, "{at}: apply that did not reach the point must succeed: {r:?}");
        return false;
    }
    let s = recover(&e, at);
    assert!(s.stderr.contains("recovered interrupted plan") || at.starts_with("apply.before_snapshot"), "{at}: {s:?}");
    assert_eq!(&e.digests(), start_digests, "{at}: an interrupted apply must leave the start state");
    assert_eq!(installed(&e.state, "notes"), None, "{at}: nothing is installed after an interrupted apply");
    assert_safe(&e, at);
    assert_eq!(s.json()["pinned_snapshots"], 0, "{at}: a reverted plan keeps no pinned snapshot");
    // The engine still works: the same release applies cleanly.
    let again = e.apply(rel);
    assert_eq!(again.code, 0, "{at}: apply after recovery: {again:?}");
    assert_eq!(&e.digests(), applied, "{at}: apply after recovery reaches the applied state");
    assert_safe(&e, at);
    true
}

/// Rollback (after a clean apply) crashes at `at`.
fn rollback_scenario(at: &str, rel: &Path, start_digests: &(String, String)) -> bool {
    let e = Endpoint::new();
    let a = e.apply(rel);
    assert_eq!(a.code, 0, "{a:?}");
    let r = e.plan("rollback", rel, &["--json"], &with_crash(at));
    if !crashed(&r) {
        assert_eq!(r.code, 0, "{at}: rollback that did not reach the point must succeed: {r:?}");
        return false;
    }
    let s = recover(&e, at);
    assert!(s.stderr.contains("recovered interrupted plan"), "{at}: {s:?}");
    let rec = &s.json()["recovered"][0];
    assert_eq!(rec["status"], "rolled_back", "{at}: an interrupted rollback is finished: {rec}");
    assert_eq!(&e.digests(), start_digests, "{at}: the finished rollback is back at the pre-apply state");
    assert_eq!(installed(&e.state, "notes"), None);
    let f = e.agent(&["flags", "--json"]);
    assert_eq!(f.json()["notes"]["new_checkout"], false, "{at}: the rollback restores the flag's previous value");
    assert_safe(&e, at);
    // Rolling back again is a no-op; applying again works.
    let again = e.rollback(rel);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.json()["message"].as_str().unwrap().contains("nothing to roll back"), "{again:?}");
    let apply = e.apply(rel);
    assert_eq!(apply.code, 0, "{at}: apply after a recovered rollback: {apply:?}");
    true
}

/// A flag's activation (`apply --release DIR --flag NAME`) crashes at `at`
/// on an endpoint with the release installed: the next command puts the
/// flag back to its value before, leaves the release installed with its
/// snapshots pinned and the data as it was; the activation works again.
fn activate_scenario(at: &str) -> bool {
    let e = Endpoint::new();
    let rel = e.copy_release("2026.11.0", "2026.11.0-manual");
    let toml = rel.join("release.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen(
            "\n[[check]]",
            "\n[[flag]]\nname = \"beta_export\"\nvalue = true\nprevious = false\nowner = \"x\"\nactivate = \"manual\"\n\n[[check]]",
            1,
        ),
    )
    .unwrap();
    assert_eq!(e.apply(&rel).code, 0);
    let applied = e.digests();
    let pinned = recover(&e, "before").json()["pinned_snapshots"].clone();
    let rel_s = rel.to_string_lossy().into_owned();
    let state = e.state.to_string_lossy().into_owned();
    let args = ["--state", state.as_str(), "apply", "--release", rel_s.as_str(), "--flag", "beta_export", "--json"];
    let r = run("rewind-agent", &args, &with_crash(at));
    if !crashed(&r) {
        assert_eq!(r.code, 0, "{at}: an activation that did not reach the point must succeed: {r:?}");
        return false;
    }
    let s = recover(&e, at);
    assert!(s.stderr.contains("recovered interrupted plan"), "{at}: {s:?}");
    let flags = e.agent(&["flags", "--json"]).json();
    assert_eq!(flags["notes"].get("beta_export"), None, "{at}: the flag is back to unset: {flags}");
    assert_eq!(flags["notes"]["new_checkout"], true, "{at}: {flags}");
    assert_eq!(installed(&e.state, "notes").as_deref(), Some("2026.11.0"), "{at}: the release stays installed");
    assert_eq!(s.json()["pinned_snapshots"], pinned, "{at}: its snapshots stay pinned");
    assert_eq!(e.digests(), applied, "{at}: no data changed");
    assert_safe(&e, at);
    let again = run("rewind-agent", &args, &[]);
    assert_eq!(again.code, 0, "{at}: {again:?}");
    assert_eq!(e.agent(&["flags", "--json"]).json()["notes"]["beta_export"], true);
    assert_safe(&e, at);
    true
}

/// `snapshot restore` crashes at `at`; the target is the old database or
/// the complete snapshot, never a mix, and a second restore completes. With
/// `wal` false the target is first switched to a rollback journal, where the
/// restore journals and writes only the pages that differ; `spread` then
/// makes the database about 14 MiB, so several threads compare it (4 MiB
/// each) and journal their pages out of order, changes pages all over it
/// and grows it past the snapshot (pages are cut off on restore).
fn restore_scenario(at: &str, wal: bool, spread: bool) -> bool {
    let e = Endpoint::new();
    if !wal {
        let c = rusqlite::Connection::open(&e.notes).unwrap();
        let mode: String = c.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        if spread {
            c.execute_batch(
                "CREATE TABLE padding(id INTEGER PRIMARY KEY, v BLOB);
                 WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3500)
                 INSERT INTO padding SELECT i, randomblob(4000) FROM s;",
            )
            .unwrap();
        }
    }
    let c = e.agent(&["snapshot", "create", "--db", &e.notes.to_string_lossy(), "--json"]);
    assert_eq!(c.code, 0, "{c:?}");
    let snap = c.json();
    let id = snap["id"].as_str().unwrap().to_string();
    let snap_digest = snap["digest"].as_str().unwrap().to_string();
    let app = rusqlite::Connection::open(&e.notes).unwrap();
    app.execute_batch("DELETE FROM orders WHERE id > 100; UPDATE notes SET title = 'edited' WHERE id < 50;").unwrap();
    if spread {
        app.execute_batch(
            "UPDATE padding SET v = randomblob(4000) WHERE id % 40 = 0;
             INSERT INTO padding SELECT 10000 + id, v FROM padding WHERE id <= 300;",
        )
        .unwrap();
    }
    drop(app);
    let changed = digest(&e.notes);
    assert_ne!(changed, snap_digest);
    let state = e.state.to_string_lossy().into_owned();
    let r = run(
        "rewind-agent",
        &["--state", &state, "snapshot", "restore", &id, "--db", &e.notes.to_string_lossy()],
        &with_crash(at),
    );
    if !crashed(&r) {
        assert_eq!(r.code, 0, "{at}: {r:?}");
        return false;
    }
    recover(&e, at);
    let now = digest(&e.notes);
    assert!(now == changed || now == snap_digest, "{at}: restore left a mix: {now}");
    if at.starts_with("restore.before_copy") {
        assert_eq!(now, changed, "{at}: the target is untouched before the copy");
    }
    if at.starts_with("restore.after_copy") {
        assert_eq!(now, snap_digest, "{at}: the copy is complete once it returned");
    }
    assert_safe(&e, at);
    let again = e.agent(&["snapshot", "restore", &id, "--db", &e.notes.to_string_lossy()]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(digest(&e.notes), snap_digest);
    true
}

#[test]
fn every_crash_point_recovers_to_a_proven_state() {
    let rel = release("2026.11.0");
    let start = Endpoint::new().digests();
    let applied = applied_digests(&rel);
    assert_ne!(start, applied);
    let mut summary = Vec::new();
    for p in points() {
        let hits = if p.starts_with("apply.") || p.starts_with("snapshot.") {
            each_hit(&p, |at| apply_scenario(at, &rel, &start, &applied, true))
        } else if p.starts_with("rollback.") {
            each_hit(&p, |at| rollback_scenario(at, &rel, &start))
        } else if p.starts_with("activate.") {
            each_hit(&p, activate_scenario)
        } else if p.starts_with("restore.") {
            each_hit(&p, |at| restore_scenario(at, true, false))
                + each_hit(&p, |at| restore_scenario(at, false, false))
                + each_hit(&p, |at| restore_scenario(at, false, true))
        } else {
            panic!("crash point {p} has no scenario in the crash matrix: add one");
        };
        assert!(hits >= 1, "crash point {p} was never reached by its scenario");
        summary.push(format!("{p} x{hits}"));
    }
    eprintln!("crash matrix: {}", summary.join(", "));
}

/// The crash matrix of apply on rollback-journal targets (first hit of each
/// point): there a snapshot is a file copy whose verification overlaps the
/// first migration, which commits only after it; a crash anywhere in that
/// leaves the start state.
#[test]
fn every_apply_crash_point_recovers_with_rollback_journal_targets() {
    let rel = release("2026.11.0");
    let start = Endpoint::new().digests();
    let applied = applied_digests(&rel);
    for p in points().into_iter().filter(|p| p.starts_with("apply.") || p.starts_with("snapshot.")) {
        assert!(
            apply_scenario(&format!("{p}#1"), &rel, &start, &applied, false),
            "{p} was not reached with rollback-journal targets"
        );
    }
}

/// A failed apply reverts itself; a crash during that revert is finished by
/// the next command.
#[test]
fn crash_while_reverting_a_failed_apply() {
    let bad = release("2026.11.1-bad");
    let mut reached = 0;
    for p in points().into_iter().filter(|p| p.starts_with("rollback.")) {
        reached += each_hit(&p, |at| {
            let e = Endpoint::new();
            let start = e.digests();
            let r = e.plan_dbs("apply", &bad, &e.notes_arg(), &["--json"], &with_crash(at));
            if !crashed(&r) {
                assert_eq!(r.code, 1, "{at}: the bad release fails and is reverted: {r:?}");
                assert_eq!(e.digests(), start);
                return false;
            }
            let s = recover(&e, at);
            assert!(s.stderr.contains("recovered interrupted plan"), "{at}: {s:?}");
            assert_eq!(e.digests(), start, "{at}: the revert is finished");
            assert_eq!(installed(&e.state, "notes"), None);
            assert_safe(&e, at);
            true
        });
    }
    assert!(reached >= 2, "no rollback.* crash point was reached while reverting");
}

/// Recovery itself can crash; the next command finishes it.
#[test]
fn crash_during_recovery_is_recovered_again() {
    let rel = release("2026.11.0");
    let start = Endpoint::new().digests();
    let mut reached = 0;
    for p in points().into_iter().filter(|p| p.starts_with("rollback.")) {
        reached += each_hit(&p, |at| {
            let e = Endpoint::new();
            let r = e.plan("apply", &rel, &[], &with_crash("apply.before_done"));
            assert!(crashed(&r), "{r:?}");
            let state = e.state.to_string_lossy().into_owned();
            let s = run("rewind-agent", &["--state", &state, "status"], &with_crash(at));
            if !crashed(&s) {
                assert_eq!(s.code, 0, "{s:?}");
                return false;
            }
            recover(&e, at);
            assert_eq!(e.digests(), start, "{at}: recovery of the recovery reaches the start state");
            assert_safe(&e, at);
            true
        });
    }
    assert!(reached >= 3, "too few crash points reached during recovery: {reached}");
}

/// A release whose settings migration is undone from the snapshot
/// (`rollback = "restore"`): crashes inside the restore of a rollback and of
/// a recovery.
#[test]
fn crash_during_restore_based_rollback() {
    let setup = Endpoint::new();
    let rel = setup.copy_release("2026.11.0", "restore-mode");
    let toml = std::fs::read_to_string(rel.join("release.toml")).unwrap();
    let toml = toml.replacen(
        "id = \"0003_settings_theme\"\ntarget = \"settings\"\n",
        "id = \"0003_settings_theme\"\ntarget = \"settings\"\nrollback = \"restore\"\n",
        1,
    );
    assert!(toml.contains("rollback = \"restore\""));
    std::fs::write(rel.join("release.toml"), toml).unwrap();
    let start = setup.digests();
    let applied = applied_digests(&rel);
    let mut reached = 0;
    for p in points().into_iter().filter(|p| p.starts_with("restore.") || p == "rollback.before_done") {
        reached += each_hit(&p, |at| rollback_scenario(at, &rel, &start));
        reached += each_hit(&p, |at| {
            // Apply crashes late; the recovery restores settings from the
            // snapshot and crashes there too.
            let e = Endpoint::new();
            let r = e.plan("apply", &rel, &[], &with_crash("apply.before_done"));
            assert!(crashed(&r), "{r:?}");
            let state = e.state.to_string_lossy().into_owned();
            let s = run("rewind-agent", &["--state", &state, "status"], &with_crash(at));
            if !crashed(&s) {
                assert_eq!(s.code, 0, "{s:?}");
                return false;
            }
            recover(&e, at);
            assert_eq!(e.digests(), start, "{at}: start state after recovering a restore-mode revert");
            assert_safe(&e, at);
            let again = e.apply(&rel);
            assert_eq!(again.code, 0, "{again:?}");
            assert_eq!(e.digests(), applied);
            true
        });
    }
    assert!(reached >= 4, "too few restore crash points reached: {reached}");
}

/// The journal names the target files themselves: a plan started with
/// relative `--db` paths and recovered from another working directory
/// (where files of the same name exist) reverts the right files.
#[test]
fn recovery_from_another_directory_reverts_the_right_files() {
    let e = Endpoint::new();
    let start = e.digests();
    let elsewhere = e.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let decoys = (elsewhere.join("notes.db"), elsewhere.join("settings.db"));
    // Copies of the app's files at the start state, under the same names.
    std::fs::copy(&e.notes, &decoys.0).unwrap();
    std::fs::copy(&e.settings, &decoys.1).unwrap();
    let agent_in = |cwd: &Path, args: &[&str], crash: Option<&str>| {
        let mut c = std::process::Command::new(rewind_tests::bin("rewind-agent"));
        c.current_dir(cwd)
            .arg("--state")
            .arg(&e.state)
            .args(args)
            .env_remove("REWIND_CRASH_AT")
            .env("REWIND_LOG", "warn");
        if let Some(p) = crash {
            c.env("REWIND_CRASH_AT", p);
        }
        c.output().unwrap()
    };
    let rel = release("2026.11.0");
    let out = agent_in(
        e.dir.path(),
        &["apply", "--release", &rel.to_string_lossy(), "--db", "notes=notes.db", "--db", "settings=settings.db"],
        Some("apply.after_flags"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("crash injected"), "{out:?}");
    let out = agent_in(&elsewhere, &["status"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(e.digests(), start, "the interrupted plan's own files are reverted");
    assert_eq!((digest(&decoys.0), digest(&decoys.1)), start, "files that merely share the names are untouched");
    let c = rusqlite::Connection::open(&e.notes).unwrap();
    let applied: i64 =
        c.query_row("SELECT count(*) FROM _rewind_ledger WHERE reverted_at IS NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(applied, 0, "the ledger of the reverted target holds no applied migration");
    for decoy in [&decoys.0, &decoys.1] {
        let c = rusqlite::Connection::open(decoy).unwrap();
        let n: i64 =
            c.query_row("SELECT count(*) FROM sqlite_schema WHERE name = '_rewind_ledger'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "recovery wrote to {}", decoy.display());
    }
    e.assert_consistent();
}

/// A second release applied on top of an installed one, crashing at every
/// apply point: recovery brings back the first release exactly — its
/// digests, its installed record and sequence, its flag values.
#[test]
fn crash_while_applying_over_an_installed_release() {
    let base = release("2026.11.0");
    let setup = Endpoint::new();
    let next = setup.dir.path().join("2026.11.2");
    let m = next.join("migrations/0001_add_tags");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        next.join("release.toml"),
        "name = \"notes\"\nversion = \"2026.11.2\"\nsequence = 9\napp_version = \"4.3.0\"\nowner = \"storage-team\"\non_call = \"pager:storage\"\n\n\
         [[target]]\nname = \"notes\"\n\n[[migration]]\nid = \"0001_add_tags\"\ntarget = \"notes\"\n\n\
         [[flag]]\nname = \"tags_ui\"\nvalue = true\nprevious = false\nowner = \"notes-team\"\nactivate = \"after-migrations\"\n\n\
         [[flag]]\nname = \"new_checkout\"\nvalue = false\nprevious = true\nowner = \"payments-team\"\nactivate = \"with-release\"\n",
    )
    .unwrap();
    std::fs::write(
        m.join("up.sql"),
        "ALTER TABLE notes ADD COLUMN tags TEXT NOT NULL DEFAULT '';\nUPDATE notes SET tags = 'old' WHERE id < 10;\n",
    )
    .unwrap();
    std::fs::write(m.join("down.sql"), "ALTER TABLE notes DROP COLUMN tags;\n").unwrap();
    std::fs::write(m.join("verify.sql"), "SELECT count(*) = 9 FROM notes WHERE tags = 'old';\n").unwrap();
    let mut reached = 0;
    for p in points().into_iter().filter(|p| p.starts_with("apply.") || p.starts_with("snapshot.")) {
        reached += each_hit(&p, |at| {
            let e = Endpoint::new();
            assert_eq!(e.apply(&base).code, 0);
            let installed_digests = e.digests();
            let flags_before = e.agent(&["flags", "--json"]).json();
            let flags_file = std::fs::read(e.state.join("flags.json")).unwrap();
            let r = e.plan_dbs("apply", &next, &e.notes_arg(), &[], &with_crash(at));
            if !crashed(&r) {
                assert_eq!(r.code, 0, "{at}: {r:?}");
                return false;
            }
            recover(&e, at);
            assert_eq!(e.digests(), installed_digests, "{at}: back at the installed release's state");
            assert_eq!(installed(&e.state, "notes").as_deref(), Some("2026.11.0"), "{at}");
            assert_eq!(
                e.agent(&["flags", "--json"]).json(),
                flags_before,
                "{at}: flag values of the installed release"
            );
            let now: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.state.join("flags.json")).unwrap()).unwrap();
            let then: serde_json::Value = serde_json::from_slice(&flags_file).unwrap();
            assert_eq!(now, then, "{at}: flags.json as the installed release left it");
            assert_safe(&e, at);
            // And the installed release still rolls back cleanly.
            let rb = e.rollback(&base);
            assert_eq!(rb.code, 0, "{at}: {rb:?}");
            true
        });
    }
    assert!(reached >= 8, "{reached}");
}

/// `snapshot prune` removes a snapshot's file, its manifest, then its
/// catalogue row. The state a crash between those leaves (row, no file) is
/// finished by the next command: no listed snapshot lacks its file — except
/// a pinned one, which Rewind never deletes, and `verify` reports.
#[test]
fn an_interrupted_prune_is_finished_and_never_lists_a_missing_snapshot() {
    let e = Endpoint::new();
    let create = |label: &str| {
        let r = e.agent(&["snapshot", "create", "--db", &e.notes.to_string_lossy(), "--label", label, "--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        r.json()
    };
    let keep = create("keep");
    let pruned = create("being pruned");
    // The crash: the file is gone, manifest and row are still there.
    std::fs::remove_file(pruned["file"].as_str().unwrap()).unwrap();
    let l = e.agent(&["snapshot", "list", "--json"]);
    assert_eq!(l.code, 0, "{l:?}");
    let ids: Vec<String> = l.json().as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec![keep["id"].as_str().unwrap().to_string()], "the half-pruned snapshot must not be listed");
    assert!(
        !std::path::Path::new(pruned["file"].as_str().unwrap()).with_extension("json").exists(),
        "its manifest goes too"
    );
    assert_eq!(e.agent(&["snapshot", "verify", "--all"]).code, 0);
    assert_eq!(e.agent(&["audit", "verify"]).code, 0);

    // A pinned snapshot whose file vanished stays listed and fails verify.
    let rel = release("2026.11.0");
    let a = e.apply(&rel);
    assert_eq!(a.code, 0, "{a:?}");
    let snap = a.json()["targets"][0]["snapshot"].as_str().unwrap().to_string();
    let file = e.state.join("snapshots").join(format!("{snap}.db"));
    std::fs::remove_file(&file).unwrap();
    let l = e.agent(&["snapshot", "list", "--json"]);
    assert!(l.json().as_array().unwrap().iter().any(|s| s["id"] == snap.as_str()), "a pinned snapshot stays listed");
    let v = e.agent(&["snapshot", "verify", &snap]);
    assert_eq!(v.code, 1, "{v:?}");
}
