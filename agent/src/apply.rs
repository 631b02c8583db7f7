//! Apply a release to an endpoint, in DESIGN.md §5 order: verify inputs →
//! snapshot every target (verified) → per migration in topological order:
//! preserve, `up.sql`, `verify.sql`, ledger row, commit → set flags →
//! `after-apply` checks → report.
//!
//! Guarantees: every step is journaled before it runs; any failure reverts
//! what this plan did, in reverse order, proves the targets are back at the
//! plan's start state by digest and reports both the failure and the proof.
//! Applying an applied release is a no-op; a migration whose SQL changed
//! after it was applied is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use rewind_shared::digest::{database_digest, schema_digest};
use rewind_shared::release::{Activation, Check, CheckWhen, Migration, Release};
use serde_json::{Value, json};

use crate::crash;
use crate::error::{Error, Result};
use crate::flags::{self, FlagValues};
use crate::ledger;
use crate::plan::{
    CheckResult, Installed, Plan, PlanKind, Report, Run, StepTime, TargetReport, installed, set_installed,
};
use crate::recover;
use crate::rollback;
use crate::snapshot::{self, Origin};
use crate::state::{State, new_id};
use crate::target::{Target, check_script, classify};

/// Opens every mapped target and makes sure each can be written now,
/// failing before anything changes.
///
/// # Errors
/// [`Error::BadInput`] for a missing, non-SQLite, read-only or corrupt file,
/// or one whose write lock another process holds past the busy timeout.
pub fn open_targets(dbs: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, Target>> {
    dbs.iter()
        .map(|(name, path)| {
            let t = Target::open(name, path)?;
            t.probe_write().map_err(|e| Error::BadInput(format!("{e}; nothing was changed")))?;
            Ok((name.clone(), t))
        })
        .collect()
}

/// The mapped databases with absolute, canonical paths. The journal must
/// name the files themselves: recovery may run from another working
/// directory, where a relative path would name a different file (or none).
///
/// # Errors
/// [`Error::BadInput`] for a path that does not exist, or two targets that
/// name one file.
pub fn absolute_targets(dbs: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, PathBuf>> {
    let mut out: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (name, path) in dbs {
        let abs = std::fs::canonicalize(path).map_err(|e| {
            Error::BadInput(format!(
                "database {} (target {name}): cannot open: {e}; check the --db path",
                path.display()
            ))
        })?;
        if let Some((other, _)) = out.iter().find(|(_, p)| **p == abs) {
            return Err(Error::BadInput(format!(
                "--db {name}={} and --db {other}=...: two targets map to the same file {}; each target is its own database",
                path.display(),
                abs.display()
            )));
        }
        out.insert(name.clone(), abs);
    }
    Ok(out)
}

/// Refuses, before anything changes, scripts and checks that the SQL
/// authorizer would deny at run time (ATTACH, load_extension, ...).
///
/// # Errors
/// [`Error::BadInput`] naming the migration and script, or the check.
pub fn check_scripts(migrations: &[Migration], checks: &[Check]) -> Result<()> {
    for m in migrations {
        for (file, script) in
            [("up.sql", Some(&m.up)), ("down.sql", m.down.as_ref()), ("verify.sql", m.verify.as_ref())]
        {
            if let Some(s) = script {
                check_script(&s.sql).map_err(|e| {
                    Error::BadInput(format!(
                        "migration {}: {file} ({}) {e}; nothing was changed",
                        m.id,
                        s.path.display()
                    ))
                })?;
            }
        }
    }
    for c in checks {
        check_script(&c.sql).map_err(|e| Error::BadInput(format!("check `{}`: {e}; nothing was changed", c.name)))?;
    }
    Ok(())
}

/// Flag values a release sets when applied (manual flags are left alone).
fn desired_flags(release: &Release, when: Activation) -> FlagValues {
    release.flags.iter().filter(|f| f.activate == when).map(|f| (f.name.clone(), f.value.clone())).collect()
}

/// Applies `release` to the databases mapped in `dbs`.
///
/// # Errors
/// [`Error::BadInput`] (nothing changed) for unusable inputs, a downgrade or
/// a changed applied migration; [`Error::NeedsHuman`] when a failure could
/// not be reverted to a verified state. A failure that was reverted is an
/// `Ok` report with status `failed` (exit 1).
pub fn apply(state: &State, release: &Release, dbs: &BTreeMap<String, PathBuf>) -> Result<Report> {
    recover::settled(state, |started| apply_plan(state, release, dbs, started))
}

/// [`apply`] itself; sets `started` once the plan is journaled, so that an
/// error after that point is settled by recovery, never reported as
/// "nothing changed".
fn apply_plan(
    state: &State,
    release: &Release,
    dbs: &BTreeMap<String, PathBuf>,
    started: &mut Option<String>,
) -> Result<Report> {
    check_scripts(&release.migrations, &release.checks)?;
    let dbs = &absolute_targets(dbs)?;
    let targets = open_targets(dbs)?;
    let from = installed(state, &release.name)?;
    if let Some(i) = &from
        && i.sequence > release.sequence
    {
        return Err(Error::BadInput(format!(
            "{} {} (sequence {}) is older than the installed {} (sequence {}); roll that back first \
             (rewind-agent rollback --release <dir of {}> ...)",
            release.name, release.version, release.sequence, i.release, i.sequence, i.release
        )));
    }
    let migrations: Vec<Migration> =
        release.migrations.iter().filter(|m| dbs.contains_key(&m.target)).cloned().collect();
    let mut pending = Vec::new();
    for (name, t) in &targets {
        let applied = ledger::applied(&t.conn, &release.name).map_err(|e| classify(&t.path, e))?;
        for m in migrations.iter().filter(|m| &m.target == name) {
            match applied.iter().find(|e| e.migration == m.id) {
                Some(e) if e.checksum != m.up.checksum => {
                    return Err(Error::BadInput(format!(
                        "migration {}: up.sql changed after it was applied to {} (applied {}, now {}); \
                         restore the original script or ship the change as a new migration",
                        m.id,
                        t.path.display(),
                        e.checksum,
                        m.up.checksum
                    )));
                }
                Some(_) => {}
                None => pending.push(m.id.clone()),
            }
        }
    }
    let mut all_flags = desired_flags(release, Activation::WithRelease);
    all_flags.extend(desired_flags(release, Activation::AfterMigrations));
    let current_flags = flags::current(state, &release.name)?;
    let flags_done = all_flags.iter().all(|(k, v)| current_flags.get(k) == Some(v));
    let same_release = from.as_ref().is_some_and(|i| i.sequence == release.sequence);
    if pending.is_empty() && flags_done && same_release {
        return noop_report(state, release, &targets, from.as_ref());
    }
    let mut baseline = BTreeMap::new();
    for c in release.checks.iter().filter(|c| c.expect == rewind_shared::release::Expect::Unchanged) {
        if let Some(t) = targets.get(&c.target) {
            let v = t.query_value(&c.sql).map_err(|e| Error::BadInput(format!("check `{}`: {e}", c.name)))?;
            baseline.insert(c.name.clone(), v);
        }
    }
    let plan = Plan {
        id: new_id("plan"),
        kind: PlanKind::Apply,
        product: release.name.clone(),
        release: release.version.clone(),
        sequence: release.sequence,
        from,
        targets: dbs.clone(),
        migrations,
        flags: release.flags.clone(),
        flags_before: all_flags
            .keys()
            .map(|k| (k.clone(), current_flags.get(k).cloned().unwrap_or(Value::Null)))
            .collect(),
        checks: release.checks.iter().filter(|c| dbs.contains_key(&c.target)).cloned().collect(),
        baseline,
        apply_plan: None,
        keeps_release: false,
    };
    let overlap = snapshot::verify_beside_migration()?;
    *started = Some(plan.id.clone());
    let mut run = Run::start(state, plan, targets)?;
    let mut report = Report::empty(&run.plan, "applied");

    // Snapshots: every target is copied now (each under its own read
    // lock, released right after the copy); their verification runs on other
    // threads while the first migration runs, and nothing changes — no flag
    // set, no migration committed — until they are all verified.
    crash::point("apply.before_snapshot");
    let names: Vec<String> = run.targets.keys().cloned().collect();
    let mut snaps = Snapshots::default();
    // Verified before the first migration (on every core), or beside it
    // (each on one core, so the migration keeps one of its own) where the
    // machine has the cores for it (see `snapshot::verify_beside_migration`).
    let settle_first = pending.is_empty() || !overlap || !desired_flags(release, Activation::WithRelease).is_empty();
    let cores = if settle_first { snapshot::Cores::All } else { snapshot::Cores::One };
    for name in &names {
        let path = run.plan.targets[name].clone();
        let step = run.begin("snapshot", Some(name), &json!({"db": path}))?;
        let started = Instant::now();
        let origin = Origin {
            label: Some(format!("before {} {}", run.plan.product, run.plan.release)),
            product: Some(run.plan.product.clone()),
            release: Some(run.plan.release.clone()),
            target: Some(name.clone()),
            pinned: true,
        };
        // Read before the snapshot: unchanged at the end means no other
        // connection wrote, so the snapshot's table digests still hold for
        // tables no script wrote (docs/digest.md "Incremental proofs").
        let version = run.target(name).data_version().ok();
        match snapshot::start(state, &path, &origin, cores) {
            Ok(pending) => {
                snaps.pending.push(PendingSnapshot { name: name.clone(), path, step, started, version, pending })
            }
            Err(e) => {
                drop(snaps);
                return snapshot_failed(&run, report, &path, e);
            }
        }
    }

    if settle_first && let Err((path, e)) = snaps.settle(&run, &mut report) {
        return snapshot_failed(&run, report, &path, e);
    }
    if let Err(e) = apply_flags(&mut run, release, Activation::WithRelease) {
        return rollback::revert(run, report, e);
    }
    let pending_migrations: Vec<Migration> =
        run.plan.migrations.iter().filter(|m| pending.contains(&m.id)).cloned().collect();
    for m in &pending_migrations {
        let started = Instant::now();
        let waited = snaps.waited;
        match apply_migration(&mut run, m, &mut snaps, &mut report) {
            Ok(()) => {}
            Err(Stop::Failed(e)) => {
                // Reverted against verified snapshots, as if they had been
                // taken before the migration started.
                if let Err((path, e)) = snaps.settle(&run, &mut report) {
                    return snapshot_failed(&run, report, &path, e);
                }
                return rollback::revert(run, report, e);
            }
            Err(Stop::Snapshot(path, e)) => return snapshot_failed(&run, report, &path, e),
        }
        report.steps.push(StepTime {
            step: format!("migration {}", m.id),
            // The migration's own work: waiting for the snapshots is theirs.
            millis: started.elapsed().saturating_sub(snaps.waited - waited).as_millis(),
            reversible: Some(
                m.reversible || !m.preserve.is_empty() || m.rollback == rewind_shared::release::RollbackMode::Restore,
            ),
        });
        if let Some(t) = report.targets.iter_mut().find(|t| t.name == m.target) {
            t.migrations.push(m.id.clone());
        }
    }
    if let Err((path, e)) = snaps.settle(&run, &mut report) {
        return snapshot_failed(&run, report, &path, e);
    }
    if let Err(e) = apply_flags(&mut run, release, Activation::AfterMigrations) {
        return rollback::revert(run, report, e);
    }
    crash::point("apply.after_flags");

    let checks = run_checks(&run, CheckWhen::AfterApply);
    let failed: Vec<String> = checks.iter().filter(|c| !c.ok).map(describe_check).collect();
    report.checks = checks;
    if !failed.is_empty() {
        report.failed_step = Some("check".into());
        return rollback::revert(run, report, failed.join("; "));
    }

    for t in &mut report.targets {
        let target = &run.targets[&t.name];
        let version = target.data_version().ok();
        let d = target.digest().map_err(|e| classify(&target.path, e))?;
        if let (Some(v), Some(snap)) = (version, &t.snapshot) {
            snapshot::remember_after_apply(state, snap, target, v, &d);
        }
        t.after = Some(d.digest.to_string());
        t.schema_after = Some(d.schema.to_string());
    }
    let inst =
        Installed { release: run.plan.release.clone(), sequence: run.plan.sequence, plan_id: run.plan.id.clone() };
    set_installed(state, &run.plan.product, Some(&inst))?;
    flags::write_file(state, &run.plan.product, "apply.flags.during_write")?;
    report.flags = flags::current(state, &run.plan.product)?;
    report.message = format!(
        "{} {} applied: {} migration(s), {} target(s) snapshotted and proven",
        run.plan.product,
        run.plan.release,
        pending_migrations.len(),
        report.targets.len()
    );
    crash::point("apply.before_done");
    run.finish("applied", &report)?;
    Ok(report)
}

/// Turns flag `name` of the installed `release` on (sets its `value`): the
/// flag's activation plan, `rewindctl flags set PRODUCT NAME on`. Journaled
/// like every plan and always run, also when the flag already has its value,
/// so a signed result reaches the coordinator; a crash before it finished
/// puts the flag back to its value before. The installed release, its
/// targets and its snapshots are left alone.
///
/// # Errors
/// [`Error::BadInput`] (nothing changed) when the release is not the
/// installed one or does not have the flag.
pub fn activate_flag(state: &State, release: &Release, name: &str) -> Result<Report> {
    recover::settled(state, |started| {
        let flag = release
            .flags
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| Error::BadInput(format!("{} {} has no flag {name:?}", release.name, release.version)))?;
        let inst = installed(state, &release.name)?;
        let Some(inst) = inst.filter(|i| i.release == release.version && i.sequence == release.sequence) else {
            return Err(Error::BadInput(format!(
                "flag {name} belongs to {} {} (sequence {}), which is not installed here; apply it first",
                release.name, release.version, release.sequence
            )));
        };
        let current = flags::current(state, &release.name)?;
        let values: FlagValues = [(name.to_string(), flag.value.clone())].into();
        let plan = Plan {
            id: new_id("plan"),
            kind: PlanKind::Apply,
            product: release.name.clone(),
            release: release.version.clone(),
            sequence: release.sequence,
            from: Some(inst),
            targets: BTreeMap::new(),
            migrations: Vec::new(),
            flags: vec![flag.clone()],
            flags_before: [(name.to_string(), current.get(name).cloned().unwrap_or(Value::Null))].into(),
            checks: Vec::new(),
            baseline: BTreeMap::new(),
            apply_plan: None,
            keeps_release: true,
        };
        *started = Some(plan.id.clone());
        let mut run = Run::start(state, plan, BTreeMap::new())?;
        let was = current.get(name).cloned().unwrap_or(Value::Null);
        let started_at = Instant::now();
        let n = run.begin("flags", None, &json!({"set": values}))?;
        flags::set(state, &run.plan.product, &values, Some(&run.plan.id), "activate.flags.during_write")?;
        run.done(n, &json!({"set": values}))?;
        let report = Report {
            flags: flags::current(state, &run.plan.product)?,
            steps: vec![StepTime {
                step: format!("flag {name}"),
                millis: started_at.elapsed().as_millis(),
                reversible: None,
            }],
            message: if was == flag.value {
                format!("flag {name} of {} {} was already on ({})", release.name, release.version, flag.value)
            } else {
                format!("flag {name} of {} {} turned on: {was} -> {}", release.name, release.version, flag.value)
            },
            ..Report::empty(&run.plan, "applied")
        };
        crash::point("activate.before_done");
        run.finish("applied", &report)?;
        Ok(report)
    })
}

fn noop_report(
    state: &State,
    release: &Release,
    targets: &BTreeMap<String, Target>,
    from: Option<&Installed>,
) -> Result<Report> {
    // The snapshots that protect each target are those the installing
    // apply took; a no-op reports them rather than none.
    let installing = match from {
        Some(i) => rollback::load_plan(state, &i.plan_id)?.and_then(|(_, r)| r),
        None => None,
    };
    let mut out = Vec::new();
    for (name, t) in targets {
        let d = database_digest(&t.conn).map_err(|e| classify(&t.path, e))?;
        let snapshot = installing
            .as_ref()
            .and_then(|r| r.targets.iter().find(|x| &x.name == name))
            .and_then(|x| x.snapshot.clone());
        out.push(TargetReport {
            snapshot,
            name: name.clone(),
            db: t.path.clone(),
            before: Some(d.digest.to_string()),
            after: Some(d.digest.to_string()),
            schema_before: Some(d.schema.to_string()),
            schema_after: Some(d.schema.to_string()),
            ..TargetReport::default()
        });
    }
    Ok(Report {
        status: "applied".into(),
        product: release.name.clone(),
        release: release.version.clone(),
        sequence: release.sequence,
        plan: from.map(|i| i.plan_id.clone()).unwrap_or_default(),
        targets: out,
        flags: flags::current(state, &release.name)?,
        checks: Vec::new(),
        steps: Vec::new(),
        error: None,
        failed_step: None,
        message: format!("{} {} is already applied; nothing to do", release.name, release.version),
    })
}

/// Sets the flags that activate at `when`, journaled.
fn apply_flags(run: &mut Run<'_>, release: &Release, when: Activation) -> std::result::Result<(), String> {
    let values = desired_flags(release, when);
    if values.is_empty() {
        return Ok(());
    }
    let n = run.begin("flags", None, &json!({"set": values})).map_err(|e| e.to_string())?;
    flags::set(run.state, &run.plan.product, &values, Some(&run.plan.id), "apply.flags.during_write")
        .map_err(|e| format!("setting flags failed: {e}"))?;
    run.done(n, &json!({"set": values})).map_err(|e| e.to_string())
}

/// Copies `preserve` data aside, inside the migration's transaction.
fn preserve(t: &Target, m: &Migration) -> std::result::Result<(), String> {
    for p in &m.preserve {
        let side = p.side_table(&m.id);
        let select = match &p.column {
            None => "*".to_string(),
            Some(c) => {
                let mut stmt = t
                    .conn
                    .prepare(&format!("SELECT name FROM pragma_table_info('{}') WHERE pk > 0 ORDER BY pk", p.table))
                    .map_err(|e| e.to_string())?;
                let mut cols: Vec<String> = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .and_then(Iterator::collect)
                    .map_err(|e| e.to_string())?;
                if cols.is_empty() {
                    cols.push("rowid".into());
                }
                cols.push(c.clone());
                cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
            }
        };
        t.conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS \"{side}\"; CREATE TABLE \"{side}\" AS SELECT {select} FROM \"{}\";",
                p.table
            ))
            .map_err(|e| {
                format!(
                    "migration {}: preserve {}{}: {e}",
                    m.id,
                    p.table,
                    p.column.as_ref().map(|c| format!(".{c}")).unwrap_or_default()
                )
            })?;
    }
    Ok(())
}

/// A snapshot started by [`snapshot::start`], not yet verified.
struct PendingSnapshot {
    name: String,
    path: PathBuf,
    step: i64,
    started: Instant,
    version: Option<i64>,
    pending: snapshot::Pending,
}

/// The plan's snapshots whose verification is still running.
#[derive(Default)]
struct Snapshots {
    pending: Vec<PendingSnapshot>,
    settled: bool,
    /// Time spent waiting in [`Snapshots::settle`].
    waited: std::time::Duration,
}

impl Snapshots {
    /// Waits until every snapshot is verified and listed, and journals and
    /// reports each; the first failure is returned with its target's path
    /// (the snapshots not yet finished are discarded).
    fn settle(&mut self, run: &Run<'_>, report: &mut Report) -> std::result::Result<(), (PathBuf, Error)> {
        if self.settled {
            return Ok(());
        }
        let waiting = Instant::now();
        let result = self.settle_all(run, report);
        self.waited += waiting.elapsed();
        result?;
        self.settled = true;
        crash::point("apply.after_snapshot");
        Ok(())
    }

    fn settle_all(&mut self, run: &Run<'_>, report: &mut Report) -> std::result::Result<(), (PathBuf, Error)> {
        for p in std::mem::take(&mut self.pending) {
            let (snap, digest) = p.pending.finish(run.state).map_err(|e| (p.path.clone(), e))?;
            if let Some(v) = p.version {
                run.target(&p.name).set_baseline(v, digest.clone());
            }
            run.done(p.step, &json!({"snapshot": snap.id, "digest": snap.digest, "schema": snap.schema}))
                .map_err(|e| (p.path.clone(), e))?;
            report.steps.push(StepTime {
                step: format!("snapshot {}", p.name),
                millis: p.started.elapsed().as_millis(),
                reversible: None,
            });
            report.targets.push(TargetReport {
                name: p.name.clone(),
                db: p.path,
                before: Some(digest.digest.to_string()),
                schema_before: Some(digest.schema.to_string()),
                snapshot: Some(snap.id),
                ..TargetReport::default()
            });
        }
        Ok(())
    }
}

/// A snapshot that could not be taken or verified: nothing changed; the
/// plan is finished as reverted and the error says so (exit 2).
fn snapshot_failed(run: &Run<'_>, mut report: Report, path: &std::path::Path, e: Error) -> Result<Report> {
    let msg = match e.to_string() {
        m if m.contains("nothing changed") => m,
        m => format!("snapshot of {} failed, nothing changed: {m}", path.display()),
    };
    report.status = "failed".into();
    report.error = Some(msg.clone());
    report.message = msg.clone();
    run.finish("reverted", &report)?;
    Err(Error::BadInput(msg))
}

/// Why a migration stopped.
enum Stop {
    /// The migration failed (rolled back); the plan is reverted.
    Failed(String),
    /// A snapshot did not verify before the migration could commit (rolled
    /// back): nothing changed.
    Snapshot(PathBuf, Error),
}

impl From<String> for Stop {
    fn from(e: String) -> Self {
        Stop::Failed(e)
    }
}

/// One migration in one transaction: preserve, up, verify, ledger row; it
/// commits only once every snapshot of the plan is verified (`snaps`).
fn apply_migration(
    run: &mut Run<'_>,
    m: &Migration,
    snaps: &mut Snapshots,
    report: &mut Report,
) -> std::result::Result<(), Stop> {
    let n = run.begin("migration", Some(&m.target), &json!({"migration": m.id})).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let t = run.target(&m.target);
    t.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| format!("migration {}: {}", m.id, classify(&t.path, e)))?;
    // The sub-step that failed, for the report's `failed_step`.
    let failed_at = std::cell::Cell::new(None);
    let body = || -> std::result::Result<(String, String), String> {
        let sqlerr = |e: rusqlite::Error| format!("migration {}: {}", m.id, classify(&t.path, e));
        let before = schema_digest(&t.conn).map_err(sqlerr)?.to_string();
        failed_at.set(Some("preserve"));
        preserve(t, m)?;
        failed_at.set(Some("up"));
        t.run_script(&m.up.sql).map_err(|e| format!("migration {}: up.sql {e}", m.id))?;
        if let Some(v) = &m.verify {
            failed_at.set(Some("verify"));
            t.run_verify(&v.sql).map_err(|e| format!("migration {}: verify.sql {e}", m.id))?;
        }
        failed_at.set(None);
        let after = schema_digest(&t.conn).map_err(sqlerr)?.to_string();
        ledger::record(
            &t.conn,
            &ledger::NewEntry {
                product: &run.plan.product,
                release: &run.plan.release,
                sequence: run.plan.sequence,
                migration: &m.id,
                checksum: &m.up.checksum,
                schema_before: &before,
                schema_after: &after,
                duration_ms: started.elapsed().as_millis(),
                plan_id: &run.plan.id,
            },
        )
        .map_err(sqlerr)?;
        Ok((before, after))
    };
    let mut commit = || -> std::result::Result<(), Stop> {
        snaps.settle(run, report).map_err(|(path, e)| Stop::Snapshot(path, e))?;
        crash::point("apply.migration.before_commit");
        t.conn.execute_batch("COMMIT").map_err(|e| format!("migration {}: {}", m.id, classify(&t.path, e)))?;
        Ok(())
    };
    let (before, after) = match body().map_err(Stop::Failed).and_then(|v| commit().map(|()| v)) {
        Ok(v) => v,
        Err(e) => {
            if !t.conn.is_autocommit() {
                let _ = t.conn.execute_batch("ROLLBACK");
            }
            report.failed_step = failed_at.get().map(String::from);
            return Err(e);
        }
    };
    crash::point("apply.migration.after_commit");
    let detail = json!({"migration": m.id, "schema_before": before, "schema_after": after});
    run.done(n, &detail).map_err(|e| e.to_string())?;
    run.state
        .audit(
            "migration.apply",
            &json!({"plan": run.plan.id, "target": m.target, "migration": m.id,
        "checksum": m.up.checksum, "schema_before": before, "schema_after": after}),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs the plan's checks for `when` on their targets.
pub fn run_checks(run: &Run<'_>, when: CheckWhen) -> Vec<CheckResult> {
    run.plan
        .checks
        .iter()
        .filter(|c| c.when.contains(&when))
        .filter_map(|c| {
            let t = run.targets.get(&c.target)?;
            let (value, ok) = match t.query_value(&c.sql) {
                Ok(v) => {
                    let ok = c.expect.accepts(&v, run.plan.baseline.get(&c.name));
                    (v, ok)
                }
                Err(e) => (Value::String(format!("error: {e}")), false),
            };
            Some(CheckResult {
                name: c.name.clone(),
                target: c.target.clone(),
                when,
                value,
                expect: c.expect.to_string(),
                ok,
            })
        })
        .collect()
}

/// "check `orders survive` on notes: got 0, expected >= 1".
#[must_use]
pub fn describe_check(c: &CheckResult) -> String {
    format!("check `{}` on {}: got {}, expected {}", c.name, c.target, c.value, c.expect)
}
