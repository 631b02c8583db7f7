//! Shared set-up for the `agent_*` end-to-end tests: an endpoint with the
//! example app's two databases, a state directory, and the checks every
//! test makes afterwards (integrity, digests, flags, audit, journal rows).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rewind_tests::{Run, agent, copy_dir, release, run, seed_db};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// An endpoint: `notes.db`, `settings.db` and a state directory in a temp dir.
pub struct Endpoint {
    pub dir: tempfile::TempDir,
    pub notes: PathBuf,
    pub settings: PathBuf,
    pub state: PathBuf,
}

impl Endpoint {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let notes = seed_db(dir.path(), "notes");
        let settings = seed_db(dir.path(), "settings");
        let state = dir.path().join("state");
        Endpoint { dir, notes, settings, state }
    }

    /// The `--db` arguments mapping both targets.
    pub fn db_args(&self) -> Vec<String> {
        vec![
            "--db".into(),
            format!("notes={}", self.notes.display()),
            "--db".into(),
            format!("settings={}", self.settings.display()),
        ]
    }

    /// `rewind-agent CMD --release REL --db ... [extra]` with extra env.
    pub fn plan(&self, cmd: &str, rel: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
        self.plan_dbs(cmd, rel, &self.db_args(), extra, env)
    }

    /// Like [`Endpoint::plan`] with explicit `--db` arguments.
    pub fn plan_dbs(&self, cmd: &str, rel: &Path, dbs: &[String], extra: &[&str], env: &[(&str, &str)]) -> Run {
        let state = self.state.to_string_lossy().into_owned();
        let rel = rel.to_string_lossy().into_owned();
        let mut args: Vec<&str> = vec!["--state", &state, cmd, "--release", &rel];
        args.extend(dbs.iter().map(String::as_str));
        args.extend_from_slice(extra);
        run("rewind-agent", &args, env)
    }

    /// `--db notes=...` only.
    pub fn notes_arg(&self) -> Vec<String> {
        vec!["--db".into(), format!("notes={}", self.notes.display())]
    }

    pub fn apply(&self, rel: &Path) -> Run {
        self.plan("apply", rel, &["--json"], &[])
    }

    pub fn rollback(&self, rel: &Path) -> Run {
        self.plan("rollback", rel, &["--json"], &[])
    }

    pub fn agent(&self, args: &[&str]) -> Run {
        agent(&self.state, args)
    }

    /// Content digests of both targets.
    pub fn digests(&self) -> (String, String) {
        (rewind_tests::digest(&self.notes), rewind_tests::digest(&self.settings))
    }

    /// Checks both targets pass `PRAGMA integrity_check`.
    pub fn assert_integrity(&self) {
        for db in [&self.notes, &self.settings] {
            assert_eq!(integrity(db), "ok", "{}", db.display());
        }
    }

    /// Checks the audit chain verifies, flags.json agrees with agent.db and
    /// no plan is left running.
    pub fn assert_consistent(&self) {
        let a = self.agent(&["audit", "verify"]);
        assert_eq!(a.code, 0, "audit verify: {a:?}");
        assert_flags_consistent(&self.state, "notes");
        assert_eq!(plans_in_state(&self.state, "running"), 0, "a plan is still running after recovery");
    }

    /// Copy of the example release `name` into this endpoint's temp dir, to
    /// be altered by a test.
    pub fn copy_release(&self, name: &str, as_name: &str) -> PathBuf {
        let dest = self.dir.path().join(as_name);
        copy_dir(&release(name), &dest);
        dest
    }
}

/// `PRAGMA integrity_check` of a database, opened read-only.
pub fn integrity(db: &Path) -> String {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open for integrity check");
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("; ")
}

/// `checksum --json` of a database.
pub fn checksum(db: &Path) -> Value {
    let r = run("rewind-agent", &["checksum", "--db", &db.to_string_lossy(), "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    r.json()
}

/// Schema digest and per-table digests, leaving out `skip` (a table the
/// app keeps writing to).
pub fn content_without(db: &Path, skip: &str) -> (String, Vec<(String, String)>) {
    let j = checksum(db);
    let tables = j["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] != skip)
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["digest"].as_str().unwrap().to_string()))
        .collect();
    (j["schema"].as_str().unwrap().to_string(), tables)
}

/// Number of plans in agent.db with the given state (read directly).
pub fn plans_in_state(state: &Path, plan_state: &str) -> i64 {
    agent_db(state).query_row("SELECT count(*) FROM plans WHERE state = ?1", [plan_state], |r| r.get(0)).unwrap()
}

/// agent.db opened read-only by the test.
pub fn agent_db(state: &Path) -> Connection {
    let c =
        Connection::open_with_flags(state.join("agent.db"), OpenFlags::SQLITE_OPEN_READ_ONLY).expect("agent.db opens");
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

/// Every plan and snapshot row of agent.db, as text, to prove that a
/// refused command changed nothing (empty when agent.db does not exist).
pub fn journal_rows(state: &Path) -> Vec<String> {
    if !state.join("agent.db").exists() {
        return Vec::new();
    }
    let c = agent_db(state);
    let mut out = Vec::new();
    for sql in [
        "SELECT 'plan ' || id || ' ' || state FROM plans ORDER BY id",
        "SELECT 'journal ' || plan_id || ' ' || n || ' ' || state FROM journal ORDER BY plan_id, n",
        "SELECT 'snapshot ' || id || ' ' || pinned FROM snapshots ORDER BY id",
        "SELECT 'installed ' || product || ' ' || release FROM installed ORDER BY product",
        "SELECT 'flag ' || product || ' ' || name || ' ' || value FROM flags ORDER BY product, name",
    ] {
        let mut stmt = c.prepare(sql).unwrap();
        out.extend(stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap));
    }
    // Snapshot files on disk too: a refused command leaves none behind.
    if let Ok(dir) = std::fs::read_dir(state.join("snapshots")) {
        let mut files: Vec<String> =
            dir.flatten().map(|e| format!("file {}", e.file_name().to_string_lossy())).collect();
        files.sort();
        out.extend(files);
    }
    out
}

/// flags.json must hold exactly the flags agent.db holds for `product`, and
/// the installed sequence (0 when none).
pub fn assert_flags_consistent(state: &Path, product: &str) {
    let r = agent(state, &["flags", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let db_flags = r.json().get(product).cloned().unwrap_or_else(|| serde_json::json!({}));
    let file = state.join("flags.json");
    let Ok(bytes) = std::fs::read(&file) else {
        assert_eq!(db_flags, serde_json::json!({}), "agent.db has flags but flags.json does not exist");
        return;
    };
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("flags.json is not complete JSON ({e})"));
    assert_eq!(doc["product"], product);
    assert_eq!(doc["flags"], db_flags, "flags.json disagrees with agent.db");
    let installed: Option<i64> =
        agent_db(state).query_row("SELECT sequence FROM installed WHERE product = ?1", [product], |r| r.get(0)).ok();
    assert_eq!(doc["sequence"], installed.unwrap_or(0), "flags.json sequence disagrees with the installed release");
    assert!(!state.join("flags.json.tmp").exists() || doc.is_object());
}

/// The installed release of `product` per `status --json`, if any.
pub fn installed(state: &Path, product: &str) -> Option<String> {
    let r = agent(state, &["status", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    r.json()["installed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["product"] == product)
        .map(|i| i["release"].as_str().unwrap().to_string())
}

/// Whether a run ended by an injected crash (abort) rather than an exit.
pub fn crashed(r: &Run) -> bool {
    r.code == -1 && r.stderr.contains("crash injected at")
}
