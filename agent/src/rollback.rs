//! Taking changes back: `rollback` of an applied release, and `revert` of an
//! apply plan that failed or was interrupted.
//!
//! Guarantees: each `down.sql` runs in one transaction with the ledger
//! update, and commits only if the schema digest afterwards equals the one
//! the ledger recorded before `up.sql` (the rollback proof); migrations with
//! `rollback = "restore"` are undone from the pre-apply snapshot and the
//! report says whether writes made after the apply were lost. Every target
//! is finally compared with its pre-apply snapshot: "identical" or "changed
//! since apply". Anything that cannot be proven stops with
//! [`Error::NeedsHuman`] and the exact command to run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rewind_shared::digest::{database_digest, schema_digest};
use rewind_shared::release::{CheckWhen, Migration, Release, RollbackMode};
use rusqlite::OptionalExtension;
use serde_json::json;

use crate::apply::{absolute_targets, check_scripts, describe_check, open_targets, run_checks};
use crate::crash;
use crate::error::{Context, Error, Result};
use crate::flags::{self, FlagValues};
use crate::ledger::{self, Entry};
use crate::plan::{Plan, PlanKind, Report, Run, StepTime, TargetReport, installed, set_installed, step_detail};
use crate::snapshot;
use crate::state::{State, new_id};
use crate::target::classify;

/// A plan and its final report, from the journal.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn load_plan(state: &State, id: &str) -> Result<Option<(Plan, Option<Report>)>> {
    let row: Option<(String, Option<String>)> = state
        .db
        .query_row("SELECT body, result FROM plans WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .ctx("journal read")?;
    Ok(row.and_then(|(body, result)| {
        let plan: Plan = serde_json::from_str(&body).ok()?;
        Some((plan, result.and_then(|r| serde_json::from_str(&r).ok())))
    }))
}

/// The snapshot an apply plan took of a target: (id, digest, schema).
fn plan_snapshot(state: &State, plan_id: &str, target: &str) -> Result<Option<(String, String, String)>> {
    Ok(step_detail(state, plan_id, "snapshot", Some(target), true)?.and_then(|d| {
        Some((
            d["snapshot"].as_str()?.to_string(),
            d["digest"].as_str()?.to_string(),
            d["schema"].as_str()?.to_string(),
        ))
    }))
}

fn needs_restore(state: &State, snapshot_id: Option<&str>, db: &Path, why: String) -> Error {
    let next = match snapshot_id {
        Some(id) => {
            format!("rewind-agent --state {} snapshot restore {id} --db {}", state.root.display(), db.display())
        }
        None => format!("rewind-agent --state {} snapshot list", state.root.display()),
    };
    let why = format!(
        "{why}. Restore the snapshot (next command), then run the rollback of this release: it finishes what is left \
         and proves the result"
    );
    Error::NeedsHuman { message: why, next }
}

/// Rolls back the applied migrations and flags of `release`.
///
/// # Errors
/// [`Error::BadInput`] for unusable inputs (nothing changed);
/// [`Error::NeedsHuman`] when a step cannot be undone or proven.
pub fn rollback(state: &State, release: &Release, dbs: &BTreeMap<String, PathBuf>) -> Result<Report> {
    crate::recover::settled(state, |started| rollback_plan(state, release, dbs, false, started))
}

/// Rolls back one part of the installed `release` (a pre-signed target,
/// migration or flag plan: `release` is cut down to that part). Like
/// [`rollback`], except that the release stays installed — also if the
/// agent stops half-way — and its snapshots stay pinned: the release's own
/// rollback may still need them.
///
/// # Errors
/// As [`rollback`].
pub fn rollback_part(state: &State, release: &Release, dbs: &BTreeMap<String, PathBuf>) -> Result<Report> {
    crate::recover::settled(state, |started| rollback_plan(state, release, dbs, true, started))
}

/// [`rollback`] itself; sets `started` once the plan is journaled.
fn rollback_plan(
    state: &State,
    release: &Release,
    dbs: &BTreeMap<String, PathBuf>,
    keeps_release: bool,
    started: &mut Option<String>,
) -> Result<Report> {
    check_scripts(&release.migrations, &release.checks)?;
    let dbs = &absolute_targets(dbs)?;
    let targets = open_targets(dbs)?;
    let mut apply_plan_id = None;
    let mut any_applied = false;
    for (name, t) in &targets {
        for e in ledger::applied(&t.conn, &release.name).map_err(|e| classify(&t.path, e))? {
            if e.release != release.version {
                if e.sequence as u64 > release.sequence {
                    return Err(Error::BadInput(format!(
                        "{} has release {} (sequence {}) applied on top of {}; roll that back first",
                        t.path.display(),
                        e.release,
                        e.sequence,
                        release.version
                    )));
                }
                continue;
            }
            let m = release.migrations.iter().find(|m| m.id == e.migration).ok_or_else(|| {
                Error::BadInput(format!(
                    "{}: migration {} of {} is applied but not in this release directory; use the release as it was applied",
                    t.path.display(), e.migration, release.version
                ))
            })?;
            if m.up.checksum != e.checksum {
                return Err(Error::BadInput(format!(
                    "migration {}: up.sql changed since it was applied to {} ({} then, {} now); \
                     roll back with the release as it was applied",
                    m.id,
                    t.path.display(),
                    e.checksum,
                    m.up.checksum
                )));
            }
            if &m.target != name {
                return Err(Error::BadInput(format!("migration {} belongs to target {}, not {name}", m.id, m.target)));
            }
            crate::finalize::check_preserved(t, m)?;
            any_applied = true;
            apply_plan_id = Some(e.plan_id.clone());
        }
    }
    let inst = installed(state, &release.name)?;
    if apply_plan_id.is_none() {
        apply_plan_id = inst.as_ref().filter(|i| i.release == release.version).map(|i| i.plan_id.clone());
    }
    let flags_now = flags::current(state, &release.name)?;
    let flags_to_restore: FlagValues = release
        .flags
        .iter()
        .filter(|f| flags_now.get(&f.name).is_some_and(|v| v != &f.previous))
        .map(|f| (f.name.clone(), f.previous.clone()))
        .collect();
    // A flag's own rollback plan always runs (it sets the flag's `previous`
    // even where the flag was never set, e.g. a manual one), so that the
    // coordinator that sent it gets a signed result.
    let flag_part = keeps_release && !release.flags.is_empty();
    if !any_applied
        && flags_to_restore.is_empty()
        && !flag_part
        && inst.as_ref().is_none_or(|i| i.release != release.version)
    {
        return Ok(Report {
            status: "rolled_back".into(),
            product: release.name.clone(),
            release: release.version.clone(),
            sequence: release.sequence,
            plan: String::new(),
            targets: Vec::new(),
            flags: flags_now,
            checks: Vec::new(),
            steps: Vec::new(),
            error: None,
            failed_step: None,
            message: format!("{} {} is not applied here; nothing to roll back", release.name, release.version),
        });
    }
    let from = match &apply_plan_id {
        Some(id) => load_plan(state, id)?.and_then(|(p, _)| p.from),
        None => None,
    };
    let plan = Plan {
        id: new_id("plan"),
        kind: PlanKind::Rollback,
        product: release.name.clone(),
        release: release.version.clone(),
        sequence: release.sequence,
        from,
        targets: dbs.clone(),
        migrations: release.migrations.iter().filter(|m| dbs.contains_key(&m.target)).cloned().collect(),
        flags: release.flags.clone(),
        flags_before: flags_now,
        checks: release.checks.iter().filter(|c| dbs.contains_key(&c.target)).cloned().collect(),
        baseline: apply_plan_id
            .as_deref()
            .map(|id| load_plan(state, id))
            .transpose()?
            .flatten()
            .map(|(p, _)| p.baseline)
            .unwrap_or_default(),
        apply_plan: apply_plan_id.clone(),
        keeps_release,
    };
    *started = Some(plan.id.clone());
    let run = Run::start(state, plan, targets)?;
    finish_rollback(run)
}

/// Runs (or, after a crash, finishes) a rollback plan. Idempotent: the
/// ledger says which migrations are still applied.
///
/// # Errors
/// [`Error::NeedsHuman`] when a step cannot be undone or proven.
pub fn finish_rollback(mut run: Run<'_>) -> Result<Report> {
    let result = finish_rollback_steps(&mut run);
    mark_if_stuck(&run, result)
}

fn finish_rollback_steps(run: &mut Run<'_>) -> Result<Report> {
    let state = run.state;
    let mut report = Report::empty(&run.plan, "rolled_back");
    let names: Vec<String> = run.plan.targets.keys().rev().cloned().collect();
    for name in &names {
        let t = run.target(name);
        let entries: Vec<Entry> = ledger::applied(&t.conn, &run.plan.product)
            .map_err(|e| classify(&t.path, e))?
            .into_iter()
            .filter(|e| e.release == run.plan.release)
            .collect();
        // Which apply this target's state comes from: its ledger, else what
        // this plan journaled before a crash, else the installed apply (a
        // target restored by hand from its snapshot has no ledger rows).
        let apply_plan = entries
            .last()
            .map(|e| e.plan_id.clone())
            .or_else(|| {
                step_detail(state, &run.plan.id, "undo", Some(name), false)
                    .ok()
                    .flatten()
                    .and_then(|d| d["apply_plan"].as_str().map(String::from))
            })
            .or_else(|| run.plan.apply_plan.clone());
        let snap = match &apply_plan {
            Some(id) => plan_snapshot(state, id, name)?,
            None => None,
        };
        let mut tr = TargetReport { name: name.clone(), db: run.plan.targets[name].clone(), ..TargetReport::default() };
        // Untouched since the apply: its digest of the file still holds.
        let before = match snap.as_ref().and_then(|(id, _, _)| snapshot::after_apply(state, id, t)) {
            Some(d) => d,
            None => t.baseline_digest().map_err(|e| classify(&t.path, e))?,
        };
        tr.before = Some(before.digest.to_string());
        let n = run.begin("undo", Some(name), &json!({"apply_plan": apply_plan}))?;
        undo_target(run, name, entries, snap.as_ref(), apply_plan.as_deref(), &mut tr, &mut report)?;
        run.done(n, &json!({"apply_plan": apply_plan}))?;
        prove(run, name, snap.as_ref(), &mut tr)?;
        report.targets.push(tr);
    }
    settle_after_undo(run, true, &mut report)?;
    report.message = format!(
        "{} {} rolled back and proven: {}",
        run.plan.product,
        run.plan.release,
        report
            .targets
            .iter()
            .map(|t| format!("{} {}", t.name, t.proof.as_deref().unwrap_or("untouched")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crash::point("rollback.before_done");
    run.finish("rolled_back", &report)?;
    Ok(report)
}

/// Reverts an apply plan that failed (`reason`) or was interrupted: every
/// target back to the plan's start state, proven by digest. Returns the
/// report with status `failed`.
///
/// # Errors
/// [`Error::NeedsHuman`] when the start state cannot be reached or proven.
pub fn revert(mut run: Run<'_>, report: Report, reason: String) -> Result<Report> {
    let result = revert_steps(&mut run, report, reason);
    mark_if_stuck(&run, result)
}

/// Records a plan that needs a human as such, so recovery does not retry
/// it on every start; `status` lists it with the next command.
fn mark_if_stuck(run: &Run<'_>, result: Result<Report>) -> Result<Report> {
    if let Err(Error::NeedsHuman { message, next }) = &result {
        let report = Report {
            error: Some(message.clone()),
            message: format!("needs a human: {message}; next: {next}"),
            ..Report::empty(&run.plan, "failed")
        };
        run.finish("needs_human", &report)?;
    }
    result
}

fn revert_steps(run: &mut Run<'_>, mut report: Report, reason: String) -> Result<Report> {
    let state = run.state;
    report.status = "failed".into();
    report.error = Some(reason.clone());
    let names: Vec<String> = run.plan.targets.keys().rev().cloned().collect();
    let mut proven = Vec::new();
    for name in &names {
        let snap = plan_snapshot(state, &run.plan.id, name)?;
        let t = run.target(name);
        let entries: Vec<Entry> = ledger::applied(&t.conn, &run.plan.product)
            .map_err(|e| classify(&t.path, e))?
            .into_iter()
            .filter(|e| e.plan_id == run.plan.id)
            .collect();
        let mut tr = report.targets.iter().find(|t| &t.name == name).cloned().unwrap_or_else(|| TargetReport {
            name: name.clone(),
            db: run.plan.targets[name].clone(),
            ..TargetReport::default()
        });
        tr.migrations.clear();
        if let Some((id, digest, schema)) = &snap {
            tr.snapshot.get_or_insert_with(|| id.clone());
            tr.before.get_or_insert_with(|| digest.clone());
            tr.schema_before.get_or_insert_with(|| schema.clone());
        }
        if snap.is_none() {
            // Snapshots precede every change: no snapshot, nothing changed.
            proven.push(format!("{name} untouched"));
            report.targets.retain(|t| &t.name != name);
            report.targets.push(tr);
            continue;
        }
        let plan_id = run.plan.id.clone();
        undo_target(run, name, entries, snap.as_ref(), Some(&plan_id), &mut tr, &mut report)?;
        prove(run, name, snap.as_ref(), &mut tr)?;
        proven.push(format!("{name} {}", tr.proof.as_deref().unwrap_or("")));
        report.targets.retain(|t| &t.name != name);
        report.targets.push(tr);
    }
    settle_after_undo(run, false, &mut report)?;
    report.message = format!(
        "{} {} failed and was reverted: {reason}; start state proven by digest ({})",
        run.plan.product,
        run.plan.release,
        proven.join(", ")
    );
    crash::point("rollback.before_done");
    run.finish("reverted", &report)?;
    Ok(report)
}

/// What every undo ends with once its targets are back: flags put back (to
/// each flag's `previous` for a rollback, to the values before the plan for a
/// revert), `after-rollback` checks, the installed release restored,
/// `flags.json` rewritten and the release's snapshots unpinned.
fn settle_after_undo(run: &mut Run<'_>, to_previous: bool, report: &mut Report) -> Result<()> {
    let state = run.state;
    restore_flags(run, to_previous, "rollback.flags.during_write")?;
    finish_checks(run, report)?;
    if !run.plan.keeps_release {
        set_installed(state, &run.plan.product, run.plan.from.as_ref())?;
    }
    flags::write_file(state, &run.plan.product, "rollback.flags.during_write")?;
    if !run.plan.keeps_release {
        snapshot::unpin_release(state, &run.plan.product, &run.plan.release)?;
    }
    report.flags = flags::current(state, &run.plan.product)?;
    Ok(())
}

/// Undoes `entries` (applied migrations, oldest first) on one target: from
/// the snapshot when any of them says `rollback = "restore"`, else by
/// `down.sql` in exact reverse order.
fn undo_target(
    run: &mut Run<'_>,
    name: &str,
    entries: Vec<Entry>,
    snap: Option<&(String, String, String)>,
    apply_plan: Option<&str>,
    tr: &mut TargetReport,
    report: &mut Report,
) -> Result<()> {
    let state = run.state;
    let path = run.plan.targets[name].clone();
    let migrations: Vec<(Entry, Migration)> = entries
        .into_iter()
        .map(|e| {
            let m = run.plan.migration(&e.migration).cloned().ok_or_else(|| {
                needs_restore(
                    state,
                    snap.map(|s| s.0.as_str()),
                    &path,
                    format!("{}: migration {} is applied but the plan does not know it", path.display(), e.migration),
                )
            })?;
            Ok((e, m))
        })
        .collect::<Result<_>>()?;
    if migrations.iter().any(|(_, m)| m.rollback == RollbackMode::Restore) {
        let Some((snap_id, _, _)) = snap else {
            return Err(needs_restore(
                state,
                None,
                &path,
                format!("{}: a migration must be undone from its snapshot, and none is recorded", path.display()),
            ));
        };
        let started = Instant::now();
        let t = run.target(name);
        let current = database_digest(&t.conn).map_err(|e| classify(&t.path, e))?.digest.to_string();
        let applied_digest = apply_plan
            .map(|id| load_plan(state, id))
            .transpose()?
            .flatten()
            .and_then(|(_, r)| r)
            .and_then(|r| r.targets.into_iter().find(|t| t.name == name))
            .and_then(|t| t.after);
        let n = run.begin("restore", Some(name), &json!({"snapshot": snap_id}))?;
        let s = snapshot::get(state, snap_id)?;
        snapshot::restore(state, &s, &path).map_err(|e| match e {
            e @ Error::NeedsHuman { .. } => e,
            other => needs_restore(state, Some(snap_id), &path, format!("restore from snapshot failed: {other}")),
        })?;
        run.done(n, &json!({"snapshot": snap_id}))?;
        // A changed digest means the app wrote after the apply; the restore
        // dropped those writes, and the report says so.
        tr.lost_writes = Some(applied_digest.is_none_or(|d| d != current));
        tr.migrations.extend(migrations.iter().rev().map(|(_, m)| m.id.clone()));
        report.steps.push(StepTime {
            step: format!("restore {name}"),
            millis: started.elapsed().as_millis(),
            reversible: None,
        });
        // Reopen: the restore replaced the file's content.
        let reopened = crate::target::Target::open(name, &path)?;
        run.targets.insert(name.to_string(), reopened);
        return Ok(());
    }
    for (e, m) in migrations.iter().rev() {
        let started = Instant::now();
        undo_migration(run, e, m).map_err(|why| needs_restore(state, snap.map(|s| s.0.as_str()), &path, why))?;
        tr.migrations.push(m.id.clone());
        report.steps.push(StepTime {
            step: format!("rollback {}", m.id),
            millis: started.elapsed().as_millis(),
            reversible: Some(true),
        });
    }
    Ok(())
}

/// Runs one `down.sql` with its proof, in one transaction.
fn undo_migration(run: &mut Run<'_>, e: &Entry, m: &Migration) -> std::result::Result<(), String> {
    let Some(down) = &m.down else {
        return Err(format!("migration {} has no down.sql", m.id));
    };
    let n = run.begin("down", Some(&m.target), &json!({"migration": m.id})).map_err(|e| e.to_string())?;
    let t = run.target(&m.target);
    t.conn.execute_batch("BEGIN IMMEDIATE").map_err(|err| format!("migration {}: {}", m.id, classify(&t.path, err)))?;
    let body = || -> std::result::Result<String, String> {
        let sqlerr = |err: rusqlite::Error| format!("migration {}: {}", m.id, classify(&t.path, err));
        t.run_script(&down.sql).map_err(|err| format!("migration {}: down.sql {err}", m.id))?;
        for p in &m.preserve {
            t.conn.execute_batch(&format!("DROP TABLE IF EXISTS \"{}\"", p.side_table(&m.id))).map_err(sqlerr)?;
        }
        ledger::mark_reverted(&t.conn, e.id, &run.plan.id).map_err(sqlerr)?;
        let schema = schema_digest(&t.conn).map_err(sqlerr)?.to_string();
        if schema != e.schema_before {
            return Err(format!(
                "migration {}: after down.sql the schema digest is {schema}, but before up.sql it was {}; \
                 down.sql does not undo up.sql, so the rollback was not committed",
                m.id, e.schema_before
            ));
        }
        crash::point("rollback.migration.before_commit");
        t.conn.execute_batch("COMMIT").map_err(sqlerr)?;
        Ok(schema)
    };
    let schema = match body() {
        Ok(s) => s,
        Err(err) => {
            if !t.conn.is_autocommit() {
                let _ = t.conn.execute_batch("ROLLBACK");
            }
            return Err(err);
        }
    };
    crash::point("rollback.migration.after_commit");
    run.done(n, &json!({"migration": m.id, "schema": schema})).map_err(|e| e.to_string())?;
    run.state
        .audit(
            "migration.revert",
            &json!({"plan": run.plan.id, "target": m.target, "migration": m.id, "schema": schema}),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Compares a target with its pre-apply snapshot: the schema must match,
/// the data is "identical" or "changed since apply".
fn prove(run: &Run<'_>, name: &str, snap: Option<&(String, String, String)>, tr: &mut TargetReport) -> Result<()> {
    let t = run.target(name);
    let d = t.digest().map_err(|e| classify(&t.path, e))?;
    tr.after = Some(d.digest.to_string());
    tr.schema_after = Some(d.schema.to_string());
    let Some((snap_id, digest, schema)) = snap else {
        tr.proof = Some("no snapshot to compare".into());
        return Ok(());
    };
    tr.snapshot = Some(snap_id.clone());
    if &d.schema.to_string() != schema {
        return Err(needs_restore(
            run.state,
            Some(snap_id),
            &t.path,
            format!(
                "{}: after rollback the schema digest is {}, the snapshot's is {schema}",
                t.path.display(),
                d.schema
            ),
        ));
    }
    tr.proof = Some(if &d.digest.to_string() == digest { "identical" } else { "changed since apply" }.into());
    Ok(())
}

/// Puts flags back: to each flag's `previous` for a rollback, to the exact
/// values before the plan for a revert.
fn restore_flags(run: &mut Run<'_>, to_previous: bool, crash_at: &str) -> Result<()> {
    let values: FlagValues = if to_previous {
        run.plan.flags.iter().map(|f| (f.name.clone(), f.previous.clone())).collect()
    } else {
        if !run.step_started("flags")? {
            return Ok(());
        }
        run.plan.flags_before.clone()
    };
    if values.is_empty() {
        return Ok(());
    }
    let n = run.begin("flags", None, &json!({"set": values}))?;
    flags::set(run.state, &run.plan.product, &values, Some(&run.plan.id), crash_at)?;
    run.done(n, &json!({"set": values}))
}

/// Runs `after-rollback` checks; a failure needs a human.
fn finish_checks(run: &Run<'_>, report: &mut Report) -> Result<()> {
    let checks = run_checks(run, CheckWhen::AfterRollback);
    let failed: Vec<String> = checks.iter().filter(|c| !c.ok).map(describe_check).collect();
    report.checks.extend(checks);
    if failed.is_empty() {
        return Ok(());
    }
    let snap = report.targets.iter().find_map(|t| t.snapshot.clone());
    let db = report.targets.first().map(|t| t.db.clone()).unwrap_or_default();
    Err(needs_restore(
        run.state,
        snap.as_deref(),
        &db,
        format!("{} {}: after-rollback checks failed: {}", run.plan.product, run.plan.release, failed.join("; ")),
    ))
}
