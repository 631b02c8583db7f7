//! `rewindctl demo --local`: a walkthrough of the engine alone on the
//! notes-app example — sample databases, lint, rehearse, apply with digests,
//! a bad release that reverts itself, a proven rollback and audit
//! verification — each step checked against what it must do. No
//! coordinator, no agents: the fleet demo is demo_fleet.rs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rewind_agent::plan::Report;
use rewind_agent::state::State;
use rewind_agent::{apply, rollback};
use rewind_shared::Release;
use serde_json::{Value, json};

use crate::demo::{DemoArgs, Walk, digest_of, prepare_dir, seed, short};
use crate::error::{Error, Result};
use crate::{examples, lint, output, rehearsal};

fn targets_text(r: &Report) -> String {
    let mut o = String::new();
    for t in &r.targets {
        let _ = writeln!(
            o,
            "{:<9} {} -> {}{}{}",
            t.name,
            short(t.before.as_deref().unwrap_or("-")),
            short(t.after.as_deref().unwrap_or("-")),
            t.snapshot.as_deref().map(|s| format!("  snapshot {s}")).unwrap_or_default(),
            t.proof.as_deref().map(|p| format!("  data {p}")).unwrap_or_default(),
        );
    }
    o
}

fn agent_cmd(state: &Path, verb: &str, release: &Path, dbs: &BTreeMap<String, PathBuf>) -> String {
    let mut s = format!("$ rewind-agent --state {} {verb} --release {}", state.display(), release.display());
    for (t, f) in dbs {
        let _ = write!(s, " --db {t}={}", f.display());
    }
    s
}

/// What the local demo creates in its directory (removed on a rerun).
const OWNED: &[&str] = &[
    "notes-app",
    "notes.db",
    "notes.db-wal",
    "notes.db-shm",
    "settings.db",
    "settings.db-wal",
    "settings.db-shm",
    "state",
];

/// Runs the walkthrough; returns the exit code.
///
/// # Errors
/// [`Error::BadInput`] when DIR cannot be used; a step that misbehaves is
/// reported in the output and gives exit code 1.
pub fn run(args: &DemoArgs) -> Result<u8> {
    let dir = prepare_dir(args.dir.as_deref(), OWNED)?;
    let mut w = Walk::new(args.json);
    if !w.json {
        crate::outln!("Rewind demo (local): the agent engine on the notes-app example, in {}", dir.display());
    }
    std::fs::write(dir.join(crate::demo::MARKER), "made by rewindctl demo; a rerun resets this directory\n")
        .map_err(|e| Error::BadInput(format!("--dir {}: {e}", dir.display())))?;
    let app = dir.join("notes-app");
    examples::write_to(&app)
        .map_err(|e| Error::BadInput(format!("{}: cannot write the example: {e}", app.display())))?;
    let good_dir = app.join("releases/2026.11.0");
    let bad_dir = app.join("releases/2026.11.1-bad");
    let state_dir = dir.join("state");

    w.heading("Sample data: the notes app at 4.1, two SQLite databases");
    let mut dbs = BTreeMap::new();
    let mut original = BTreeMap::new();
    for t in ["notes", "settings"] {
        let p = seed(&dir, t)?;
        let d = digest_of(&p)?;
        w.say(&format!("{t:<9} {d}  {}", p.display()));
        original.insert(t.to_string(), d);
        dbs.insert(t.to_string(), p);
    }
    w.outcome(
        "sample data",
        true,
        "sample databases created from seed-notes.sql and seed-settings.sql",
        json!({"digests": original}),
    );

    w.heading("Lint release 2026.11.0");
    w.say(&format!("$ rewindctl release lint {}", good_dir.display()));
    let l = lint::lint(&good_dir, &rewind_agent::state::today());
    if let Some(r) = &l.release {
        for (i, m) in r.migrations.iter().enumerate() {
            w.say(&format!("{}. {:<24} {:<9} reversible: {}", i + 1, m.id, m.target, lint::Undo::of(m).text));
        }
        w.say(&format!(
            "{} flag(s), {} check(s), {} wave(s)",
            r.flags.len(),
            r.checks.len(),
            r.rollout.as_ref().map_or(0, |ro| ro.waves.len())
        ));
    }
    for e in l.errors.iter().chain(&l.warnings) {
        w.say(&format!("note: {e}"));
    }
    w.outcome("lint", l.ok(), &format!("valid, {} warning(s)", l.warnings.len()), lint::to_json(&l));
    let release = Release::load(&good_dir)?;

    w.heading("Rehearse 2026.11.0 on copies of the samples, twice");
    w.say(&format!(
        "$ rewindctl release rehearse {} --db notes={} --db settings={}",
        good_dir.display(),
        dbs["notes"].display(),
        dbs["settings"].display()
    ));
    let reh = rehearsal::rehearse(&release, &dbs)?;
    if let Some(round) = reh.rounds.first() {
        for s in &round.apply.steps {
            let rev = s.reversible_text.as_deref().map(|t| format!("  reversible: {t}")).unwrap_or_default();
            w.say(&format!("{:<34} {:>4} ms{rev}", s.step, s.millis));
        }
        if let Some(b) = &round.rollback {
            let proofs: Vec<String> = b
                .report
                .targets
                .iter()
                .map(|t| format!("{} {}", t.name, t.proof.as_deref().unwrap_or("unproven")))
                .collect();
            w.say(&format!("rollback proven: {}", proofs.join(", ")));
        }
    }
    for (t, p) in &reh.predicted {
        w.say(&format!("predicted {t:<9} schema {}  digest {}", short(&p.schema), short(&p.digest)));
    }
    let untouched = dbs.iter().all(|(t, p)| digest_of(p).ok().as_ref() == original.get(t));
    w.outcome(
        "rehearse",
        reh.ok && untouched,
        &format!(
            "applies, verifies, checks and rolls back identically; round 2 = round 1: {}; samples untouched: {}",
            reh.idempotent.unwrap_or(false),
            untouched
        ),
        json!({"ok": reh.ok, "idempotent": reh.idempotent, "predicted": reh.predicted, "failure": reh.failure}),
    );

    let state = State::open(&state_dir)?;
    w.heading("Apply 2026.11.0: snapshot, migrate, verify, set the flag, check");
    w.say(&agent_cmd(&state_dir, "apply", &good_dir, &dbs));
    let applied = apply::apply(&state, &release, &dbs)?;
    w.say(&targets_text(&applied));
    for s in &applied.steps {
        w.say(&format!("{:<34} {:>4} ms", s.step, s.millis));
    }
    w.say(&format!("flags: {}", serde_json::to_string(&applied.flags).unwrap_or_default()));
    let as_predicted = applied.targets.iter().all(|t| {
        reh.predicted
            .get(&t.name)
            .is_some_and(|p| Some(&p.digest) == t.after.as_ref() && Some(&p.schema) == t.schema_after.as_ref())
    });
    w.say(&format!(
        "after-apply digests {} the rehearsal's prediction",
        if as_predicted { "match" } else { "DIFFER FROM" }
    ));
    let after_good: BTreeMap<String, String> =
        applied.targets.iter().map(|t| (t.name.clone(), t.after.clone().unwrap_or_default())).collect();
    w.outcome(
        "apply",
        applied.status == "applied" && as_predicted,
        &applied.message,
        serde_json::to_value(&applied).unwrap_or(Value::Null),
    );

    w.heading("Apply 2026.11.1-bad: its verify.sql fails, the agent reverts it");
    let bad = Release::load(&bad_dir)?;
    let bad_dbs: BTreeMap<String, PathBuf> =
        dbs.iter().filter(|(t, _)| bad.targets.contains(t)).map(|(t, p)| (t.clone(), p.clone())).collect();
    w.say(&agent_cmd(&state_dir, "apply", &bad_dir, &bad_dbs));
    let failed = apply::apply(&state, &bad, &bad_dbs)?;
    let error = failed.error.as_deref().unwrap_or("-").split_whitespace().collect::<Vec<_>>().join(" ");
    w.say(&format!("error: {error}"));
    w.say(&targets_text(&failed));
    let reverted = failed.status == "failed"
        && failed.error.as_deref().is_some_and(|e| e.contains("verify.sql"))
        && failed
            .targets
            .iter()
            .all(|t| t.proof.as_deref() == Some("identical") && after_good.get(&t.name) == t.after.as_ref());
    w.outcome(
        "bad release",
        reverted,
        "verify failed, the release was reverted and the data proven identical to before it (exit code 1 on the command line)",
        serde_json::to_value(&failed).unwrap_or(Value::Null),
    );

    w.heading("Roll back 2026.11.0 and prove it");
    w.say(&agent_cmd(&state_dir, "rollback", &good_dir, &dbs));
    let back = rollback::rollback(&state, &release, &dbs)?;
    w.say(&targets_text(&back));
    for s in &back.steps {
        w.say(&format!("{:<34} {:>4} ms", s.step, s.millis));
    }
    let proven = back.status == "rolled_back"
        && back.targets.len() == dbs.len()
        && back
            .targets
            .iter()
            .all(|t| t.proof.as_deref() == Some("identical") && original.get(&t.name) == t.after.as_ref());
    w.outcome(
        "rollback",
        proven,
        &format!("{}; digests equal the original samples'", back.message),
        serde_json::to_value(&back).unwrap_or(Value::Null),
    );

    w.heading("Verify the agent's audit chain");
    w.say(&format!("$ rewind-agent --state {} audit verify", state_dir.display()));
    match state.verify_audit() {
        Ok((n, head)) => w.outcome(
            "audit",
            n > 0,
            &format!("audit chain ok: {n} signed, hash-chained entries, head {head}"),
            json!({"entries": n, "head": head.to_string()}),
        ),
        Err(e) => w.outcome("audit", false, &e.to_string(), Value::Null),
    }
    drop(state);

    if w.json {
        output::print_json(&json!({"ok": w.ok, "dir": dir, "steps": w.steps}));
    } else if w.ok {
        crate::outln!("\ndemo ok: every step behaved as expected. Files are in {}; explore with", dir.display());
        crate::outln!("  rewind-agent --state {} status", state_dir.display());
        crate::outln!("(local demo: no coordinator, so it ends here; `rewindctl demo` runs the fleet demo)");
    } else {
        crate::outln!("\ndemo FAILED: a step above did not behave as expected (files kept in {})", dir.display());
    }
    Ok(if w.ok { 0 } else { 1 })
}
