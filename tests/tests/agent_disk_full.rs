//! A disk that really fills up: a 2 MiB tmpfs mounted by the test (it runs
//! as root in CI) holds either the state directory (the snapshot fills it)
//! or the app database (a migration fills it). Nothing is pretended: SQLite
//! and the file system report the full disk themselves. Without the
//! privilege to mount, the test fails and says why — it never skips.
//!
//! - snapshot fills the disk: exit 2, nothing changed, no snapshot listed and
//!   no partial file left;
//! - apply fills the disk: exit 1, every target reverted to its start state
//!   by digest, integrity ok.

mod agent_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_common::{Endpoint, integrity, journal_rows};
use rusqlite::Connection;

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(dir.to_path_buf()),
            Ok(o) => panic!(
                "this test must fill a real disk: mounting a {size} tmpfs on {} failed ({}). Run the tests as root \
                 (CI does) or in a container with CAP_SYS_ADMIN",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test must fill a real disk and needs `mount` (util-linux): {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Adds ~3 MiB of attachments to the app database (more than the tmpfs).
fn make_big(db: &Path) {
    Connection::open(db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE attachments(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO attachments SELECT i, randomblob(1000) FROM n;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn snapshot_fills_the_state_disk() {
    let e = Endpoint::new();
    make_big(&e.notes);
    let _fs = Tmpfs::mount(&e.state, "2m");
    // The state directory exists and works before the disk fills.
    let s = e.agent(&["status"]);
    assert_eq!(s.code, 0, "{s:?}");
    let digests = e.digests();
    let rows = journal_rows(&e.state);

    // A plain snapshot: refused, nothing listed, no partial file.
    let r = e.agent(&["snapshot", "create", "--db", &e.notes.to_string_lossy()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("disk") && r.stderr.contains("full"), "the error must say the disk is full: {r:?}");
    assert!(r.stderr.contains("nothing changed"), "{r:?}");
    assert_eq!(journal_rows(&e.state), rows, "a failed snapshot must leave no trace in agent.db or snapshots/");
    assert!(
        files_in(&e.state.join("snapshots")).is_empty(),
        "partial snapshot file left: {:?}",
        files_in(&e.state.join("snapshots"))
    );

    // Apply: its first snapshot fills the disk; nothing changed.
    let r = e.apply(&rewind_tests::release("2026.11.0"));
    assert_eq!(r.code, 2, "a snapshot that does not fit changes nothing: exit 2: {r:?}");
    assert!(
        r.stderr.contains("snapshot") && r.stderr.contains("full") && r.stderr.contains("nothing changed"),
        "{r:?}"
    );
    assert_eq!(e.digests(), digests, "targets must be unchanged");
    e.assert_integrity();
    let l = e.agent(&["snapshot", "list", "--json"]);
    assert_eq!(l.code, 0, "{l:?}");
    assert_eq!(l.json().as_array().unwrap().len(), 0, "no half snapshot may be listed: {}", l.stdout);
    assert!(files_in(&e.state.join("snapshots")).is_empty(), "{:?}", files_in(&e.state.join("snapshots")));
    let s = e.agent(&["status", "--json"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.json()["installed"].as_array().unwrap().is_empty());
    e.assert_consistent();
}

#[test]
fn apply_fills_the_database_disk() {
    let e = Endpoint::new();
    // notes.db lives on a 2 MiB tmpfs; the release's last migration tries to
    // add 4 MB of data to it.
    let small = e.dir.path().join("small");
    let _fs = Tmpfs::mount(&small, "2m");
    let notes = small.join("notes.db");
    std::fs::copy(&e.notes, &notes).unwrap();
    assert_eq!(integrity(&notes), "ok");
    let rel = e.copy_release("2026.11.0", "fills");
    let toml = std::fs::read_to_string(rel.join("release.toml")).unwrap();
    let toml = toml.replace(
        "[[flag]]",
        "[[migration]]\nid = \"0004_attachments\"\ntarget = \"notes\"\nafter = [\"0002_normalize_status\"]\n\n[[flag]]",
    );
    std::fs::write(rel.join("release.toml"), toml).unwrap();
    let m = rel.join("migrations/0004_attachments");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("up.sql"),
        "CREATE TABLE attachments(id INTEGER PRIMARY KEY, data BLOB NOT NULL);\n\
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)\n\
         INSERT INTO attachments SELECT i, randomblob(1000) FROM n;\n",
    )
    .unwrap();
    std::fs::write(m.join("down.sql"), "DROP TABLE attachments;\n").unwrap();
    std::fs::write(m.join("verify.sql"), "SELECT count(*) = 4000 FROM attachments;\n").unwrap();

    let start = (rewind_tests::digest(&notes), rewind_tests::digest(&e.settings));
    let dbs = [
        "--db".to_string(),
        format!("notes={}", notes.display()),
        "--db".into(),
        format!("settings={}", e.settings.display()),
    ];
    let r = e.plan_dbs("apply", &rel, &dbs, &["--json"], &[]);
    assert_eq!(r.code, 1, "a full disk during apply fails and reverts: exit 1: {r:?}");
    let j = r.json();
    assert_eq!(j["status"], "failed");
    let msg = format!("{} {}", j["message"], j["error"]);
    assert!(
        msg.contains("0004_attachments") && msg.contains("full"),
        "the report names the migration and the full disk: {msg}"
    );
    assert_eq!(
        (rewind_tests::digest(&notes), rewind_tests::digest(&e.settings)),
        start,
        "every target back at its start state"
    );
    assert_eq!(integrity(&notes), "ok");
    assert_eq!(integrity(&e.settings), "ok");
    let s = e.agent(&["status", "--json"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.json()["installed"].as_array().unwrap().is_empty());
    e.assert_consistent();
}

/// The state directory's disk fills at every possible moment of an apply
/// (the free space left before it starts steps from "no snapshot fits" to
/// "everything fits"). Whatever the moment, the exit code never lies:
/// 0 applied, 2 nothing changed, 1 reverted, 3 a person must act — with the
/// command to run; and once there is room again, the next command brings
/// every target to a digest-proven state matching what is installed.
#[test]
fn the_journal_disk_fills_at_any_moment_of_an_apply() {
    let rel = rewind_tests::release("2026.11.0");
    let reference = Endpoint::new();
    let start = reference.digests();
    assert_eq!(reference.apply(&rel).code, 0);
    let applied = reference.digests();
    let mut codes = Vec::new();
    for free_kib in (40..=400).step_by(20) {
        let e = Endpoint::new();
        let fs = Tmpfs::mount(&e.state, "4m");
        assert_eq!(e.agent(&["status"]).code, 0);
        // Fill the disk up to `free_kib` KiB of free space.
        let out = Command::new("df").args(["-k", "--output=avail"]).arg(&e.state).output().unwrap();
        let avail: u64 = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().parse().unwrap();
        let filler = e.state.join("filler");
        if avail > free_kib {
            std::fs::write(&filler, vec![0u8; ((avail - free_kib) * 1024) as usize]).unwrap();
        }
        let r = e.apply(&rel);
        let what = format!("{free_kib} KiB free: {r:?}");
        match r.code {
            0 => assert_eq!(e.digests(), applied, "{what}"),
            1 => assert_eq!(e.digests(), start, "{what}"),
            2 => {
                assert_eq!(e.digests(), start, "exit 2 promises nothing changed: {what}");
                assert!(r.stderr.contains("full") || r.stderr.contains("I/O"), "{what}");
            }
            3 => assert!(
                r.stderr.contains("next:") && r.stderr.contains("status"),
                "exit 3 prints the next command: {what}"
            ),
            _ => panic!("unexpected exit: {what}"),
        }
        codes.push(r.code);
        // Room again: the next command settles everything.
        std::fs::remove_file(&filler).ok();
        let s = e.agent(&["status", "--json"]);
        assert_eq!(s.code, 0, "{free_kib} KiB: status once there is room: {s:?}");
        let now = e.digests();
        match agent_common::installed(&e.state, "notes").as_deref() {
            Some(_) => assert_eq!(now, applied, "{free_kib} KiB: installed, so fully applied"),
            None => assert_eq!(now, start, "{free_kib} KiB: not installed, so at the start state"),
        }
        e.assert_integrity();
        e.assert_consistent();
        let v = e.agent(&["snapshot", "verify", "--all"]);
        assert_eq!(v.code, 0, "{free_kib} KiB: a listed snapshot is incomplete: {v:?}");
        drop(fs);
    }
    assert!(codes.contains(&0), "the largest free space must fit the whole apply: {codes:?}");
    assert!(codes.iter().filter(|c| **c != 0).count() >= 3, "the disk must really fill during the apply: {codes:?}");
    eprintln!("exit codes by free space: {codes:?}");
}
