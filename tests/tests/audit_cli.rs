//! `rewind-agent audit verify` end to end: the local chain verifies after
//! real work, and any edited, removed or reordered entry is detected.

use rewind_tests::{agent, release, seed_db};
use rusqlite::Connection;

fn applied_state() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let notes = seed_db(dir.path(), "notes");
    let settings = seed_db(dir.path(), "settings");
    let state = dir.path().join("state");
    let rel = release("2026.11.0");
    let dbs = [format!("notes={}", notes.display()), format!("settings={}", settings.display())];
    for cmd in ["apply", "rollback"] {
        let r = agent(&state, &[cmd, "--release", &rel.to_string_lossy(), "--db", &dbs[0], "--db", &dbs[1]]);
        assert_eq!(r.code, 0, "{cmd}: {r:?}");
    }
    (dir, state)
}

fn verify(state: &std::path::Path) -> rewind_tests::Run {
    agent(state, &["audit", "verify"])
}

#[test]
fn chain_covers_every_transformation_and_verifies() {
    let (_dir, state) = applied_state();
    let r = agent(&state, &["audit", "verify", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["ok"], true);
    let db = Connection::open(state.join("agent.db")).unwrap();
    let kinds: Vec<String> = db
        .prepare("SELECT DISTINCT kind FROM audit")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for k in ["plan.start", "snapshot.create", "migration.apply", "migration.revert", "flag.set", "plan.finish"] {
        assert!(kinds.iter().any(|x| x == k), "audit lacks {k}: {kinds:?}");
    }
}

#[test]
fn an_edited_entry_is_detected() {
    let (_dir, state) = applied_state();
    let db = Connection::open(state.join("agent.db")).unwrap();
    db.execute("UPDATE audit SET params = replace(params, 'notes', 'n0tes') WHERE seq = 3", []).unwrap();
    let r = verify(&state);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("audit entry 3") && r.stderr.contains("edited"), "{r:?}");
}

#[test]
fn a_removed_entry_is_detected() {
    let (_dir, state) = applied_state();
    let db = Connection::open(state.join("agent.db")).unwrap();
    db.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    let r = verify(&state);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("audit entry 5"), "{r:?}");
}

#[test]
fn reordered_entries_are_detected() {
    let (_dir, state) = applied_state();
    let db = Connection::open(state.join("agent.db")).unwrap();
    db.execute_batch("UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -1;").unwrap();
    let r = verify(&state);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("audit entry 2"), "{r:?}");
}

#[test]
fn a_re_signed_entry_with_another_key_is_detected() {
    let (_dir, state) = applied_state();
    // Replace the agent key: the old entries no longer verify with it.
    std::fs::write(state.join("agent.key"), [9u8; 32]).unwrap();
    let r = verify(&state);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("signature"), "{r:?}");
}
