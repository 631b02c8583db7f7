//! `rewind-agent finalize PRODUCT`: preserved copies are kept and snapshots
//! pinned until the release is finalized; afterwards the copies are gone, the
//! snapshots can be pruned, and a down.sql rollback that needs the preserved
//! data is refused before anything changes.

use rewind_tests::{agent, digest, release, seed_db};
use rusqlite::Connection;

fn side_tables(db: &std::path::Path) -> Vec<String> {
    let c = Connection::open(db).unwrap();
    c.prepare("SELECT name FROM sqlite_schema WHERE name LIKE '_rewind_preserve_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn finalize_drops_preserved_copies_unpins_snapshots_and_guards_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let notes = seed_db(dir.path(), "notes");
    let settings = seed_db(dir.path(), "settings");
    let state = dir.path().join("state");
    let rel = release("2026.11.0").to_string_lossy().into_owned();
    let dbs = [format!("notes={}", notes.display()), format!("settings={}", settings.display())];

    let nothing = agent(&state, &["finalize", "notes"]);
    assert_eq!(nothing.code, 2, "nothing installed yet: {nothing:?}");

    let r = agent(&state, &["apply", "--release", &rel, "--db", &dbs[0], "--db", &dbs[1]]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(side_tables(&notes), ["_rewind_preserve_0002_normalize_status_orders"]);

    let f = agent(&state, &["finalize", "notes", "--json"]);
    assert_eq!(f.code, 0, "{f:?}");
    let f = f.json();
    assert_eq!(f["release"], "2026.11.0");
    assert_eq!(f["dropped"].as_array().unwrap().len(), 1);
    assert_eq!(f["unpinned"].as_array().unwrap().len(), 2, "both targets' snapshots: {f}");
    assert!(side_tables(&notes).is_empty());
    // Running it again is harmless (a crash mid-finalize is finished this way).
    let again = agent(&state, &["finalize", "notes", "--json"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["dropped"].as_array().unwrap().len(), 0);

    // Unpinned: prune may now delete the release's snapshots.
    let p = agent(&state, &["snapshot", "prune", "--keep", "0", "--json"]);
    assert_eq!(p.code, 0, "{p:?}");
    assert_eq!(p.json()["removed"].as_array().unwrap().len(), 2);

    // down.sql of 0002 needs the preserved copy: refused, nothing changed.
    let (before_notes, before_settings) = (digest(&notes), digest(&settings));
    let r = agent(&state, &["rollback", "--release", &rel, "--db", &dbs[0], "--db", &dbs[1]]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("0002_normalize_status") && r.stderr.contains("finalized"), "{r:?}");
    assert_eq!((digest(&notes), digest(&settings)), (before_notes, before_settings));

    let audit = agent(&state, &["audit", "verify"]);
    assert_eq!(audit.code, 0, "{audit:?}");
}
