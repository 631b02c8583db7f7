//! `rewindctl release lint`, `release rehearse` and `demo` end to end with
//! the real binaries (DESIGN.md §8): lint summaries, errors with file:line
//! and exit 2, expired-flag warnings; rehearse runs the real engine on
//! copies — the sample files keep their bytes and mtime — reports
//! reversibility per step, predicts the digests a real apply reaches, and
//! names the failing step of a bad release with exit 1; the local demo
//! ends with exit 0 after a proven rollback.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rewind_tests::{agent, copy_dir, digest, release, run, seed_db};
use serde_json::Value;

fn ctl(args: &[&str]) -> rewind_tests::Run {
    run("rewindctl", args, &[])
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Copies a release directory so a test can edit it.
fn copy_release(name: &str, to: &Path) -> PathBuf {
    let dest = to.join(name);
    copy_dir(&release(name), &dest);
    dest
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Bytes and mtime of a file, to prove it was not touched.
fn fingerprint(p: &Path) -> (Vec<u8>, SystemTime) {
    (std::fs::read(p).unwrap(), std::fs::metadata(p).unwrap().modified().unwrap())
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

// ---- lint ----

#[test]
fn lint_of_a_valid_release_summarises_it_and_exits_0() {
    let r = ctl(&["release", "lint", &s(&release("2026.11.0")), "--today", "2026-11-25"]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = &r.stdout;
    let order: Vec<usize> = ["0001_add_currency", "0002_normalize_status", "0003_settings_theme"]
        .iter()
        .map(|id| out.find(id).unwrap_or_else(|| panic!("{id} missing: {out}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "apply order: {out}");
    for needle in [
        "targets: notes, settings",
        "new_checkout",
        "orders survive",
        "app.crash_count above 3 within 10m",
        "canary",
        "approval",
    ] {
        assert!(out.contains(needle), "{needle:?} missing: {out}");
    }
    assert!(out.contains("warning: migration 0002_normalize_status: irreversible"), "{out}");
    assert!(!out.contains("expired"), "{out}");

    let j = ctl(&["release", "lint", &s(&release("2026.11.0")), "--json"]).json();
    assert_eq!(j["ok"], true);
    let ids: Vec<&str> = j["migrations"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["0001_add_currency", "0002_normalize_status", "0003_settings_theme"]);
    assert_eq!(j["migrations"][1]["declared_reversible"], false);
    assert_eq!(j["migrations"][1]["undo"], "preserve");
    assert_eq!(j["migrations"][1]["preserve"][0], "orders.status");
    assert_eq!(j["rollout"]["waves"].as_array().unwrap().len(), 4);
    assert_eq!(j["triggers"][0]["window"], "10m");
    assert_eq!(j["errors"].as_array().unwrap().len(), 0);
}

/// Snapshot of the terminal table: what an operator reads before a rollout.
#[test]
fn lint_table_snapshot() {
    let r = ctl(&["release", "lint", &s(&release("2026.11.0")), "--today", "2026-11-25"]);
    assert_eq!(r.code, 0, "{r:?}");
    let expected = "\
release notes 2026.11.0 (sequence 7, app 4.2.0)
owner storage-team, on call pager:storage
targets: notes, settings

migrations, in apply order (rollback runs them in reverse):
  #  id                     target    after              verify  reversible
  1  0001_add_currency      notes     -                  yes     yes
  2  0002_normalize_status  notes     0001_add_currency  yes     yes (down.sql + preserved orders.status, until finalized)
  3  0003_settings_theme    settings  -                  yes     yes

flags:
  name          value             activate          owner          expiry
  new_checkout  true (was false)  after-migrations  payments-team  expires 2027-01-31  kill switch

checks:
  name            target  expect     when
  orders survive  notes   unchanged  after-apply, after-rollback
  notes present   notes   >= 1       after-apply, after-rollback

triggers (roll back when):
  app.crash_count above 3 within 10m

waves:
  name    selector     percent  bake
  canary  ring=canary  -        -
  early   -            5%       15m
  broad   -            50%      1h    approval
  all     -            100%     -
  halt above 0.02 failures once 20 reported; no report within 30m counts as failed; auto rollback on

warnings:
  warning: migration 0002_normalize_status: irreversible; rollback relies on preserved data

ok: 0 errors, 1 warning(s)
";
    if r.stdout != expected {
        panic!("lint output changed; if intended, update the snapshot to:\n{}", r.stdout);
    }
}

#[test]
fn lint_warns_on_an_expired_flag_and_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let rel = copy_release("2026.11.0", dir.path());
    edit(&rel.join("release.toml"), "expires = 2027-01-31", "expires = 2020-01-31");
    let r = ctl(&["release", "lint", &s(&rel)]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("warning: flag new_checkout: expired on 2020-01-31"), "{r:?}");
    assert!(r.stdout.contains("owner: payments-team"), "{r:?}");
    let j = ctl(&["release", "lint", &s(&rel), "--json"]).json();
    assert_eq!(j["ok"], true);
    assert!(
        j["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("expired on 2020-01-31")),
        "{j}"
    );
    // The untouched example is judged against --today as well.
    let later = ctl(&["release", "lint", &s(&release("2026.11.0")), "--today", "2027-02-01"]);
    assert_eq!(later.code, 0, "{later:?}");
    assert!(later.stdout.contains("expired on 2027-01-31"), "{later:?}");
}

#[test]
fn lint_errors_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    // An unknown key: a syntax error with line and column.
    let rel = copy_release("2026.11.0", dir.path());
    let toml = rel.join("release.toml");
    edit(&toml, "owner = \"storage-team\"", "owner = \"storage-team\"\nreviewer = \"nobody\"");
    let r = ctl(&["release", "lint", &s(&rel)]);
    assert_eq!(r.code, 2, "{r:?}");
    let want = format!("{}:9:1:", toml.display());
    assert!(r.stderr.contains(&want) && r.stderr.contains("reviewer"), "want {want}: {r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");

    // Semantic problems: every one listed with its line.
    let rel = copy_release("2026.11.1-bad", &dir.path().join("b"));
    let toml = rel.join("release.toml");
    edit(&toml, "target = \"notes\"\n\n[[check]]", "target = \"nots\"\n\n[[check]]");
    std::fs::remove_file(rel.join("migrations/0001_split_title/down.sql")).unwrap();
    let r = ctl(&["release", "lint", &s(&rel), "--json"]);
    assert_eq!(r.code, 2, "{r:?}");
    let j = r.json();
    assert_eq!(j["ok"], false);
    let errors: Vec<&str> = j["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    // The line of the migration's declaration (its `id` or `target` key).
    let line_of = |e: &str| e.strip_prefix(&format!("{}:", toml.display()))?.split(':').next()?.parse::<usize>().ok();
    assert!(
        errors.iter().any(|e| matches!(line_of(e), Some(15 | 16)) && e.contains("`nots` is not declared")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("down.sql") && e.contains("create it")), "{errors:?}");

    // Not a release directory at all.
    let r = ctl(&["release", "lint", &s(dir.path())]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("release.toml") && r.stderr.contains("cannot read"), "{r:?}");
    // Usage errors are exit 2 too.
    assert_eq!(ctl(&["release", "lint"]).code, 2);
    assert_eq!(ctl(&["release", "lint", &s(&release("2026.11.0")), "--today", "tomorrow"]).code, 2);
}

// ---- rehearse ----

struct Samples {
    dir: tempfile::TempDir,
    notes: PathBuf,
    settings: PathBuf,
}

fn samples() -> Samples {
    let dir = tempfile::tempdir().unwrap();
    let notes = seed_db(dir.path(), "notes");
    let settings = seed_db(dir.path(), "settings");
    Samples { dir, notes, settings }
}

impl Samples {
    fn args(&self) -> [String; 4] {
        [
            "--db".into(),
            format!("notes={}", self.notes.display()),
            "--db".into(),
            format!("settings={}", self.settings.display()),
        ]
    }

    fn rehearse(&self, rel: &Path, extra: &[&str]) -> rewind_tests::Run {
        let (a, rel) = (self.args(), s(rel));
        let mut args = vec!["release", "rehearse", rel.as_str()];
        args.extend(a.iter().map(String::as_str));
        args.extend_from_slice(extra);
        ctl(&args)
    }
}

fn step<'a>(round: &'a Value, phase: &str, name: &str) -> &'a Value {
    round[phase]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {phase}: {round}"))
}

#[test]
fn rehearse_of_a_good_release_passes_twice_and_never_touches_the_samples() {
    let sm = samples();
    let before = (fingerprint(&sm.notes), fingerprint(&sm.settings), listing(sm.dir.path()));
    // mtime has a coarse clock on some filesystems: make a change visible.
    std::thread::sleep(std::time::Duration::from_millis(20));

    let r = sm.rehearse(&release("2026.11.0"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = &r.stdout;
    for needle in [
        "migration 0001_add_currency",
        "yes (down.sql + preserved orders.status, until finalized)",
        "apply again: no-op",
        "rollback proof: settings identical, notes identical",
        "round 2 reached the same digests as round 1",
        "predicted after apply",
        "ok: notes 2026.11.0",
    ] {
        assert!(out.contains(needle), "{needle:?} missing: {out}");
    }
    assert!(out.contains("round 1") && out.contains("round 2"), "{out}");

    let j = sm.rehearse(&release("2026.11.0"), &["--json"]).json();
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["idempotent"], true);
    let rounds = j["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for round in rounds {
        assert_eq!(round["apply"]["status"], "applied");
        assert_eq!(round["reapply_noop"], true);
        assert_eq!(round["rollback"]["status"], "rolled_back");
        for id in ["0001_add_currency", "0003_settings_theme"] {
            let st = step(round, "apply", &format!("migration {id}"));
            assert_eq!(
                (st["reversible"].clone(), st["undo"].clone()),
                (Value::Bool(true), Value::from("down")),
                "{st}"
            );
        }
        // Declared irreversible, kept reversible by `preserve`: "yes".
        let st = step(round, "apply", "migration 0002_normalize_status");
        assert_eq!(
            (st["reversible"].clone(), st["undo"].clone()),
            (Value::Bool(true), Value::from("preserve")),
            "{st}"
        );
        assert!(st["millis"].is_u64(), "{st}");
        for t in round["rollback"]["report"]["targets"].as_array().unwrap() {
            assert_eq!(t["proof"], "identical", "{t}");
        }
    }
    assert!(j["failure"].is_null(), "{j}");

    // The samples: same bytes, same mtime, no file added next to them.
    let after = (fingerprint(&sm.notes), fingerprint(&sm.settings), listing(sm.dir.path()));
    assert!(before.0 == after.0, "notes.db was touched");
    assert!(before.1 == after.1, "settings.db was touched");
    assert_eq!(before.2, after.2, "files appeared next to the samples");

    // The prediction is what a real apply on an endpoint reaches.
    let ep = tempfile::tempdir().unwrap();
    let notes = seed_db(ep.path(), "notes");
    let settings = seed_db(ep.path(), "settings");
    let a = agent(
        &ep.path().join("state"),
        &[
            "apply",
            "--release",
            &s(&release("2026.11.0")),
            "--db",
            &format!("notes={}", notes.display()),
            "--db",
            &format!("settings={}", settings.display()),
            "--json",
        ],
    );
    assert_eq!(a.code, 0, "{a:?}");
    let applied = a.json();
    for t in applied["targets"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        assert_eq!(j["predicted"][name]["digest"], t["after"], "{name}");
        assert_eq!(j["predicted"][name]["schema"], t["schema_after"], "{name}");
    }
    assert_eq!(j["predicted"]["notes"]["digest"].as_str().unwrap(), digest(&notes));
}

#[test]
fn rehearse_of_the_bad_release_exits_1_naming_the_failing_verify() {
    let sm = samples();
    let before = fingerprint(&sm.notes);
    let rel = release("2026.11.1-bad");
    let r = ctl(&["release", "rehearse", &s(&rel), "--db", &format!("notes={}", sm.notes.display())]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("FAILED in round 1 (apply) at migration 0001_split_title verify.sql"), "{r:?}");
    assert!(r.stdout.contains("the apply reverted itself on the copy: notes identical"), "{r:?}");

    let r = ctl(&["release", "rehearse", &s(&rel), "--db", &format!("notes={}", sm.notes.display()), "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["failure"]["step"], "migration 0001_split_title");
    assert_eq!(j["failure"]["script"], "verify.sql");
    assert_eq!(j["failure"]["phase"], "apply");
    assert_eq!(j["failure"]["reverted"]["notes"], "identical");
    assert!(j["failure"]["error"].as_str().unwrap().contains("returned 0"), "{j}");
    assert_eq!(j["rounds"].as_array().unwrap().len(), 1, "no second round after a failure");
    assert!(before == fingerprint(&sm.notes), "notes.db was touched");
}

#[test]
fn rehearse_fails_a_down_sql_that_does_not_restore_the_data() {
    let sm = samples();
    let dir = tempfile::tempdir().unwrap();
    let rel = copy_release("2026.11.0", dir.path());
    // Same schema afterwards, but one user setting is lost on rollback.
    std::fs::write(
        rel.join("migrations/0003_settings_theme/down.sql"),
        "DELETE FROM settings WHERE key IN ('theme', 'sync');\n",
    )
    .unwrap();
    let r = sm.rehearse(&rel, &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["failure"]["phase"], "rollback", "{j}");
    assert_eq!(j["failure"]["step"], "rollback settings", "{j}");
    assert!(j["failure"]["error"].as_str().unwrap().contains("changed since apply"), "{j}");
}

#[test]
fn rehearse_fails_a_down_sql_that_leaves_the_schema_changed() {
    let sm = samples();
    let dir = tempfile::tempdir().unwrap();
    let rel = copy_release("2026.11.0", dir.path());
    // Forgets to drop the column: the schema proof refuses the rollback.
    std::fs::write(rel.join("migrations/0001_add_currency/down.sql"), "DROP INDEX orders_by_currency;\n").unwrap();
    let r = sm.rehearse(&rel, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("FAILED in round 1 (rollback) at rollback 0001_add_currency down.sql"), "{r:?}");
    assert!(r.stdout.contains("down.sql does not undo up.sql"), "{r:?}");
}

#[test]
fn rehearse_fails_a_release_whose_check_fails_after_apply() {
    let sm = samples();
    let dir = tempfile::tempdir().unwrap();
    let rel = copy_release("2026.11.0", dir.path());
    let check = "[[check]]\nname = \"prices in dollars\"\ntarget = \"notes\"\n\
                 sql = \"SELECT count(*) FROM orders WHERE currency = 'USD'\"\nexpect = \">= 1\"\nwhen = [\"after-apply\"]\n\n[[trigger]]";
    edit(&rel.join("release.toml"), "[[trigger]]", check);
    let r = sm.rehearse(&rel, &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["failure"]["step"], "checks after-apply", "{j}");
    assert!(j["failure"]["error"].as_str().unwrap().contains("prices in dollars"), "{j}");
    assert_eq!(j["failure"]["reverted"]["notes"], "identical", "{j}");
    assert_eq!(j["failure"]["reverted"]["settings"], "identical", "{j}");

    // A check that also fails after the revert: named as such.
    let rel = copy_release("2026.11.0", &dir.path().join("b"));
    edit(&rel.join("release.toml"), "expect = \">= 1\"", "expect = \">= 1000\"");
    let r = sm.rehearse(&rel, &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["failure"]["step"], "checks after-rollback", "{r:?}");
}

#[test]
fn rehearse_says_no_for_a_step_undone_by_snapshot_restore() {
    let sm = samples();
    let dir = tempfile::tempdir().unwrap();
    let rel = copy_release("2026.11.0", dir.path());
    edit(&rel.join("release.toml"), "after = []\n\n[[flag]]", "after = []\nrollback = \"restore\"\n\n[[flag]]");
    let r = sm.rehearse(&rel, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("migration 0003_settings_theme"), "{r:?}");
    assert!(r.stdout.contains("no (snapshot restore: writes after the apply are lost)"), "{r:?}");
    let j = sm.rehearse(&rel, &["--json"]).json();
    let st = step(&j["rounds"][0], "apply", "migration 0003_settings_theme");
    assert_eq!((st["reversible"].clone(), st["undo"].clone()), (Value::Bool(false), Value::from("restore")), "{st}");
}

#[test]
fn rehearse_copies_committed_data_still_in_the_wal() {
    let sm = samples();
    // The app keeps the database open with a commit not yet checkpointed.
    let app = rusqlite::Connection::open(&sm.notes).unwrap();
    app.execute_batch(
        "PRAGMA wal_autocheckpoint = 0; INSERT INTO notes(title, created_at) VALUES ('late note', '2026-11-25');",
    )
    .unwrap();
    assert!(PathBuf::from(format!("{}-wal", sm.notes.display())).exists());
    let j = sm.rehearse(&release("2026.11.0"), &["--json"]).json();
    assert_eq!(j["ok"], true, "{j}");
    let sample = j["samples"].as_array().unwrap().iter().find(|x| x["target"] == "notes").unwrap();
    assert_eq!(sample["digest"].as_str().unwrap(), digest(&sm.notes), "the rehearsal saw the committed row");
    drop(app);
}

#[test]
fn rehearse_accepts_read_only_samples_such_as_snapshot_files() {
    use std::os::unix::fs::PermissionsExt;
    let sm = samples();
    for f in [&sm.notes, &sm.settings] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let r = sm.rehearse(&release("2026.11.0"), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let mode = std::fs::metadata(&sm.notes).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444, "the sample's mode was changed");
}

#[test]
fn rehearse_bad_input_exits_2() {
    let sm = samples();
    let rel = s(&release("2026.11.0"));
    let notes = format!("notes={}", sm.notes.display());
    let settings = format!("settings={}", sm.settings.display());
    // A target the release does not have.
    let r = ctl(&["release", "rehearse", &rel, "--db", &notes, "--db", &settings, "--db", "orders=x.db"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no target `orders`"), "{r:?}");
    // A missing mapping.
    let r = ctl(&["release", "rehearse", &rel, "--db", &notes]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("add --db settings=FILE"), "{r:?}");
    // A file that is not SQLite.
    let junk = sm.dir.path().join("junk.db");
    std::fs::write(&junk, "this is not a database, just text that is long enough").unwrap();
    let r = ctl(&["release", "rehearse", &rel, "--db", &notes, "--db", &format!("settings={}", junk.display())]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not a SQLite database"), "{r:?}");
    // A missing file; no --db at all.
    let r = ctl(&["release", "rehearse", &rel, "--db", &notes, "--db", "settings=/nonexistent/settings.db"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/settings.db"), "{r:?}");
    assert_eq!(ctl(&["release", "rehearse", &rel]).code, 2);
}

// ---- demo and help ----

#[test]
fn demo_runs_every_step_and_ends_with_a_proven_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    // Run from a directory without examples/: the example is embedded.
    let o = std::process::Command::new(rewind_tests::bin("rewindctl"))
        .args(["demo", "--local", "--exit", "--dir", &s(&d)])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let out = &out;
    for needle in [
        "Rehearse 2026.11.0",
        "after-apply digests match the rehearsal's prediction",
        "verify.sql returned 0",
        "data identical",
        "rolled back and proven: settings identical, notes identical",
        "audit chain ok",
        "demo ok: every step behaved as expected",
    ] {
        assert!(out.contains(needle), "{needle:?} missing: {out}");
    }
    assert!(!out.contains("UNEXPECTED"), "{out}");
    // What it leaves behind is usable with the agent: back at the seeds.
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(digest(&d.join("notes.db")), digest(&seed_db(fresh.path(), "notes")));
    let st = agent(&d.join("state"), &["audit", "verify"]);
    assert_eq!(st.code, 0, "{st:?}");

    // A rerun resets its own directory; --json gives one object.
    let r = ctl(&["demo", "--local", "--exit", "--dir", &s(&d), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["ok"], true);
    let steps: Vec<&str> = j["steps"].as_array().unwrap().iter().map(|x| x["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["sample data", "lint", "rehearse", "apply", "bad release", "rollback", "audit"]);

    // Someone else's files are never overwritten.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.db"), "mine").unwrap();
    let r = ctl(&["demo", "--local", "--exit", "--dir", &s(&other)]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not empty"), "{r:?}");
    assert_eq!(std::fs::read_to_string(other.join("notes.db")).unwrap(), "mine");
}

/// Every command and command group of `bin` under `path`: its `--help`
/// exits 0 and shows an example; returns how many were checked.
fn walk_help(bin: &str, path: &mut Vec<String>) -> usize {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let r = run(bin, &args, &[]);
    assert_eq!(r.code, 0, "{bin} {args:?}: {r:?}");
    assert!(
        r.stdout.contains(&format!("Example: {bin}"))
            || r.stdout.contains(&format!("Examples:\n  {bin}"))
            || r.stdout.contains("Example: REWIND_"),
        "{bin} {args:?} has no example:\n{}",
        r.stdout
    );
    let subs: Vec<String> = r
        .stdout
        .split("Commands:\n")
        .nth(1)
        .map(|rest| {
            rest.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "help")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut n = 1;
    for sub in subs {
        path.push(sub);
        n += walk_help(bin, path);
        path.pop();
    }
    n
}

#[test]
fn every_command_has_help_with_an_example() {
    let ctl_commands = walk_help("rewindctl", &mut Vec::new());
    assert!(ctl_commands >= 40, "rewindctl has {ctl_commands} commands and groups");
    assert!(walk_help("rewind-agent", &mut Vec::new()) >= 15);
    assert!(walk_help("rewind-coordinator", &mut Vec::new()) >= 1);
    let r = ctl(&["demo", "--help"]);
    assert!(r.stdout.contains("no coordinator"), "{}", r.stdout);
}
