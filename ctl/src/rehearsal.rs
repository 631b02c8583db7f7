//! `release rehearse`: runs a release through the real agent engine on
//! copies of sample databases — apply (snapshot, up, verify, checks), a
//! re-apply that must be a no-op, then rollback (down, proof) — twice, and
//! compares the rounds.
//!
//! Guarantees: the sample files are only read (a byte copy of the file and
//! its `-wal`/`-journal`), never opened by SQLite, so their bytes and mtime
//! stay as they were; all work happens in a scratch directory that is
//! removed afterwards. The schema and data digests the apply reached are the
//! prediction fleet verification later checks endpoints against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rewind_agent::plan::Report;
use rewind_agent::state::State;
use rewind_agent::{apply, rollback, target};
use rewind_shared::Release;
use rewind_shared::digest::database_digest;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lint::Undo;

/// A sample database as given, with its digest.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub target: String,
    pub file: PathBuf,
    pub digest: String,
    pub schema: String,
}

/// One step of an apply or rollback, as the engine timed it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    pub millis: u128,
    /// For migration steps of an apply: see [`Undo`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversible: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<&'static str>,
    #[serde(skip)]
    pub reversible_text: Option<String>,
}

/// One apply or rollback of a round.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// The engine's status: `applied`, `rolled_back` or `failed`.
    pub status: String,
    pub millis: u128,
    pub steps: Vec<Step>,
    pub report: Report,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub apply: Phase,
    /// Applying again changed nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reapply_noop: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Phase>,
}

/// The schema and data digest a target reaches after the apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Predicted {
    pub schema: String,
    pub digest: String,
}

/// Why the release failed on the samples.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub round: u32,
    /// `apply`, `re-apply`, `rollback` or `idempotency`.
    pub phase: String,
    /// e.g. `migration 0001_split_title`, `checks after-apply`.
    pub step: String,
    /// e.g. `verify.sql`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    pub error: String,
    /// After a failed apply: per target, the engine's proof that the copy is
    /// back at its start state ("identical").
    pub reverted: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
    pub ok: bool,
    pub product: String,
    pub release: String,
    pub sequence: u64,
    pub samples: Vec<Sample>,
    pub rounds: Vec<Round>,
    /// Round 2 reached the same digests as round 1.
    pub idempotent: Option<bool>,
    pub predicted: BTreeMap<String, Predicted>,
    pub failure: Option<Failure>,
}

impl Rehearsal {
    /// 0 when the release passed, 1 when it failed on the samples.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if self.ok { 0 } else { 1 }
    }
}

/// Copies `src` (and its `-wal` / `-journal`, which hold committed data
/// not yet in the main file) to `dest` by plain reads, so `src` is never
/// opened by SQLite and never written.
fn copy_sample(src: &Path, dest: &Path) -> Result<()> {
    target::check_is_sqlite(src)?;
    let copy = |from: &Path, to: &Path| -> Result<()> {
        let bad = |e: std::io::Error| {
            Error::BadInput(format!(
                "cannot copy sample {} to {}: {e}; check the --db path and free space",
                from.display(),
                to.display()
            ))
        };
        std::fs::copy(from, to).map_err(bad)?;
        // The copy keeps the source's mode; a read-only sample (e.g. a
        // snapshot file) still needs a writable copy.
        let mut perms = std::fs::metadata(to).map_err(bad)?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(to, perms).map_err(bad)
    };
    copy(src, dest)?;
    for suffix in ["-wal", "-journal"] {
        let side = PathBuf::from(format!("{}{suffix}", src.display()));
        if side.exists() {
            copy(&side, &PathBuf::from(format!("{}{suffix}", dest.display())))?;
        }
    }
    Ok(())
}

fn steps_of(report: &Report, release: &Release) -> Vec<Step> {
    report
        .steps
        .iter()
        .map(|s| {
            let undo = s
                .step
                .strip_prefix("migration ")
                .and_then(|id| release.migrations.iter().find(|m| m.id == id))
                .map(Undo::of);
            Step {
                step: s.step.clone(),
                millis: s.millis,
                reversible: undo.as_ref().map(|u| u.reversible),
                undo: undo.as_ref().map(|u| u.via),
                reversible_text: undo.map(|u| u.text),
            }
        })
        .collect()
}

/// The step and script an engine error names: `migration 0001_x: verify.sql
/// returned 0 ...` gives (`migration 0001_x`, `verify.sql`).
#[must_use]
pub fn failing_step(error: &str) -> (String, Option<String>) {
    if let Some(rest) = error.strip_prefix("migration ")
        && let Some((id, tail)) = rest.split_once(':')
    {
        let script = tail.split_whitespace().next().filter(|w| w.ends_with(".sql")).map(String::from);
        return (format!("migration {id}"), script);
    }
    if error.contains("after-rollback checks failed") {
        return ("checks after-rollback".into(), None);
    }
    if error.starts_with("check ") {
        return ("checks after-apply".into(), None);
    }
    if error.contains("flags") {
        return ("flags".into(), None);
    }
    ("apply".into(), None)
}

fn digests(report: &Report) -> BTreeMap<String, Predicted> {
    report
        .targets
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                Predicted {
                    schema: t.schema_after.clone().unwrap_or_default(),
                    digest: t.after.clone().unwrap_or_default(),
                },
            )
        })
        .collect()
}

/// Rehearses `release` on copies of `samples` (target → file), two rounds.
///
/// # Errors
/// [`Error::BadInput`] when a sample cannot be read or is not SQLite, or the
/// engine refuses the input; a release that fails on the samples is an `Ok`
/// rehearsal with `ok = false` and its [`Failure`].
pub fn rehearse(release: &Release, samples: &BTreeMap<String, PathBuf>) -> Result<Rehearsal> {
    let work = tempfile::Builder::new().prefix("rewind-rehearse-").tempdir().map_err(|e| {
        Error::BadInput(format!("cannot create a scratch directory: {e}; set TMPDIR to a writable place"))
    })?;
    let mut copies = BTreeMap::new();
    let mut sample_info = Vec::new();
    for (t, file) in samples {
        let dest = work.path().join(format!("{t}.db"));
        copy_sample(file, &dest)?;
        let conn = rusqlite::Connection::open(&dest).map_err(|e| Error::from(target::classify(file, e)))?;
        let d = database_digest(&conn).map_err(|e| Error::from(target::classify(file, e)))?;
        drop(conn);
        sample_info.push(Sample {
            target: t.clone(),
            file: file.clone(),
            digest: d.digest.to_string(),
            schema: d.schema.to_string(),
        });
        copies.insert(t.clone(), dest);
    }
    let state = State::open(&work.path().join("state"))?;
    let mut out = Rehearsal {
        ok: false,
        product: release.name.clone(),
        release: release.version.clone(),
        sequence: release.sequence,
        samples: sample_info,
        rounds: Vec::new(),
        idempotent: None,
        predicted: BTreeMap::new(),
        failure: None,
    };
    for n in 1..=2 {
        let round = run_round(&state, release, &copies, n)?;
        let failure = round_failure(&round, &out.samples);
        out.rounds.push(round);
        if let Some(f) = failure {
            out.failure = Some(f);
            return Ok(out);
        }
    }
    let first = digests(&out.rounds[0].apply.report);
    let second = digests(&out.rounds[1].apply.report);
    let back = |r: &Round| r.rollback.as_ref().map(|p| digests(&p.report));
    let same = first == second && back(&out.rounds[0]) == back(&out.rounds[1]);
    out.idempotent = Some(same);
    out.predicted = first;
    if !same {
        out.failure = Some(Failure {
            round: 2,
            phase: "idempotency".into(),
            step: "compare rounds".into(),
            script: None,
            error: format!(
                "round 2 reached other digests than round 1 ({second:?} vs {:?}); a script depends on time, randomness or \
                 leftovers of its own rollback",
                out.predicted
            ),
            reverted: BTreeMap::new(),
        });
        return Ok(out);
    }
    out.ok = true;
    Ok(out)
}

fn run_round(state: &State, release: &Release, copies: &BTreeMap<String, PathBuf>, n: u32) -> Result<Round> {
    let started = Instant::now();
    let applied = match apply::apply(state, release, copies) {
        Ok(r) => r,
        Err(rewind_agent::Error::NeedsHuman { message, .. }) => failed_report(release, message),
        Err(e) => return Err(e.into()),
    };
    let apply = Phase {
        status: applied.status.clone(),
        millis: started.elapsed().as_millis(),
        steps: steps_of(&applied, release),
        report: applied,
    };
    let mut round = Round { round: n, apply, reapply_noop: None, rollback: None };
    if round.apply.status != "applied" {
        return Ok(round);
    }
    let again = apply::apply(state, release, copies)?;
    let noop = again.steps.is_empty() && digests(&again) == digests(&round.apply.report);
    round.reapply_noop = Some(noop);
    if !noop {
        return Ok(round);
    }
    let started = Instant::now();
    let back = match rollback::rollback(state, release, copies) {
        Ok(r) => r,
        Err(rewind_agent::Error::NeedsHuman { message, .. }) => failed_report(release, message),
        Err(e) => return Err(e.into()),
    };
    round.rollback = Some(Phase {
        status: back.status.clone(),
        millis: started.elapsed().as_millis(),
        steps: steps_of(&back, release),
        report: back,
    });
    Ok(round)
}

/// A report for a plan the engine could not finish: on a scratch copy that
/// is a failed rehearsal, not an incident.
fn failed_report(release: &Release, message: String) -> Report {
    Report {
        status: "failed".into(),
        product: release.name.clone(),
        release: release.version.clone(),
        sequence: release.sequence,
        plan: String::new(),
        targets: Vec::new(),
        flags: BTreeMap::new(),
        checks: Vec::new(),
        steps: Vec::new(),
        error: Some(message.clone()),
        failed_step: None,
        message,
    }
}

fn round_failure(r: &Round, samples: &[Sample]) -> Option<Failure> {
    let fail =
        |phase: &str, step: String, script: Option<String>, error: String, reverted: BTreeMap<String, String>| {
            Failure { round: r.round, phase: phase.into(), step, script, error, reverted }
        };
    let a = &r.apply.report;
    if a.status != "applied" {
        let error = a.error.clone().unwrap_or_else(|| a.message.clone());
        let (step, script) = failing_step(&error);
        let reverted =
            a.targets.iter().map(|t| (t.name.clone(), t.proof.clone().unwrap_or_else(|| "untouched".into()))).collect();
        return Some(fail("apply", step, script, error, reverted));
    }
    if r.reapply_noop == Some(false) {
        return Some(fail(
            "re-apply",
            "apply again".into(),
            None,
            "applying the applied release again changed the data; apply must be idempotent".into(),
            BTreeMap::new(),
        ));
    }
    let b = &r.rollback.as_ref()?.report;
    if b.status != "rolled_back" {
        let error = b.error.clone().unwrap_or_else(|| b.message.clone());
        let (step, script) = failing_step(&error);
        let step = step.replacen("migration ", "rollback ", 1);
        return Some(fail("rollback", step, script.or_else(|| Some("down.sql".into())), error, BTreeMap::new()));
    }
    for t in &b.targets {
        let original = samples.iter().find(|s| s.target == t.name).map(|s| s.digest.as_str());
        if t.proof.as_deref() != Some("identical") || t.after.as_deref() != original {
            return Some(fail(
                "rollback",
                format!("rollback {}", t.name),
                Some("down.sql".into()),
                format!(
                    "target {}: after rollback the data is {} ({}), the sample's is {}; a down.sql does not restore what its up.sql changed",
                    t.name,
                    t.proof.as_deref().unwrap_or("unproven"),
                    t.after.as_deref().unwrap_or("-"),
                    original.unwrap_or("-")
                ),
                BTreeMap::new(),
            ));
        }
    }
    None
}

fn phase_text(o: &mut String, title: &str, p: &Phase) {
    use std::fmt::Write as _;
    let _ = writeln!(o, "{title} ({} ms): {}", p.millis, p.status);
    let rows: Vec<Vec<String>> = p
        .steps
        .iter()
        .map(|s| vec![s.step.clone(), format!("{} ms", s.millis), s.reversible_text.clone().unwrap_or_default()])
        .collect();
    if p.steps.iter().any(|s| s.reversible_text.is_some()) {
        o.push_str(&crate::lint::table(&["step", "time", "reversible"], &rows, "    "));
    } else if !rows.is_empty() {
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|mut r| {
                r.truncate(2);
                r
            })
            .collect();
        o.push_str(&crate::lint::table(&["step", "time"], &rows, "    "));
    }
    for c in &p.report.checks {
        let when = match c.when {
            rewind_shared::release::CheckWhen::AfterApply => "after-apply",
            rewind_shared::release::CheckWhen::AfterRollback => "after-rollback",
        };
        let _ = writeln!(
            o,
            "    check `{}` on {} ({when}): {} (expect {}) {}",
            c.name,
            c.target,
            c.value,
            c.expect,
            if c.ok { "ok" } else { "FAILED" }
        );
    }
}

/// The terminal form.
#[must_use]
pub fn to_text(r: &Rehearsal) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "rehearsing {} {} (sequence {}) on copies in a scratch directory; the sample files are only read",
        r.product, r.release, r.sequence
    );
    let rows: Vec<Vec<String>> =
        r.samples.iter().map(|s| vec![s.target.clone(), s.file.display().to_string(), s.digest.clone()]).collect();
    o.push_str(&crate::lint::table(&["sample", "file", "digest"], &rows, "  "));
    for round in &r.rounds {
        let _ = writeln!(o, "\nround {}", round.round);
        phase_text(&mut o, "  apply", &round.apply);
        match round.reapply_noop {
            Some(true) => {
                let _ = writeln!(o, "  apply again: no-op, digests unchanged");
            }
            Some(false) => {
                let _ = writeln!(o, "  apply again: CHANGED the data");
            }
            None => {}
        }
        if let Some(b) = &round.rollback {
            phase_text(&mut o, "  rollback", b);
            let proofs: Vec<String> = b
                .report
                .targets
                .iter()
                .map(|t| format!("{} {}", t.name, t.proof.as_deref().unwrap_or("unproven")))
                .collect();
            if !proofs.is_empty() {
                let _ = writeln!(
                    o,
                    "    rollback proof: {} (schema and data digests equal the sample's)",
                    proofs.join(", ")
                );
            }
        }
    }
    if let Some(same) = r.idempotent {
        let _ = writeln!(
            o,
            "\nround 2 {} round 1",
            if same { "reached the same digests as" } else { "reached OTHER digests than" }
        );
    }
    if !r.predicted.is_empty() {
        let _ = writeln!(o, "\npredicted after apply (fleet verification compares endpoints with these):");
        let width = r.predicted.keys().map(String::len).max().unwrap_or(0);
        for (t, p) in &r.predicted {
            let _ = writeln!(o, "  {t:<width$}  schema {}  digest {}", p.schema, p.digest);
        }
    }
    match &r.failure {
        None => {
            let _ = writeln!(
                o,
                "\nok: {} {} applies, verifies, passes its checks and rolls back to identical data on the samples, twice",
                r.product, r.release
            );
        }
        Some(f) => {
            let what = match &f.script {
                Some(s) => format!("{} {s}", f.step),
                None => f.step.clone(),
            };
            let _ = writeln!(o, "\nFAILED in round {} ({}) at {what}", f.round, f.phase);
            let _ = writeln!(o, "  error: {}", one_line(&f.error));
            if !f.reverted.is_empty() {
                let proofs: Vec<String> = f.reverted.iter().map(|(t, p)| format!("{t} {p}")).collect();
                let _ = writeln!(o, "  the apply reverted itself on the copy: {}", proofs.join(", "));
            }
            let _ = writeln!(
                o,
                "fix {what} in {} {} and rehearse again; the sample files are unchanged",
                r.product, r.release
            );
        }
    }
    o
}

/// Engine messages quote SQL with its line breaks; a report line reads
/// better without them.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_step_and_script_come_from_the_engine_message() {
        assert_eq!(
            failing_step("migration 0001_split_title: verify.sql returned 0 for row 1 (SELECT 0)"),
            ("migration 0001_split_title".to_string(), Some("verify.sql".to_string()))
        );
        assert_eq!(
            failing_step("migration 0002_x: up.sql statement 2 failed: no such table: t"),
            ("migration 0002_x".to_string(), Some("up.sql".to_string()))
        );
        assert_eq!(failing_step("check `orders survive` on notes: got 3, expected unchanged").0, "checks after-apply");
        assert_eq!(failing_step("migration 0003_y: after down.sql the schema digest is b3:..").1, None);
        assert_eq!(
            failing_step("notes 2026.11.0: after-rollback checks failed: check `x` on notes: got 1").0,
            "checks after-rollback"
        );
        assert_eq!(failing_step("something else").0, "apply");
    }

    #[test]
    fn one_line_collapses_quoted_sql() {
        assert_eq!(one_line("returned 0 (-- why\nSELECT 1;)"), "returned 0 (-- why SELECT 1;)");
    }
}
