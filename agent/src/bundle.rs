//! Running plans from a signed bundle (`apply|rollback --bundle FILE --trust
//! trust.toml`): the endpoint's gate in front of the engine. The daemon will
//! drive the same functions with plans that arrive over the Fleet stream.
//!
//! Guarantees: nothing reaches [`apply::apply`] / [`rollback::rollback`]
//! unless the plan's envelope carries `threshold` valid signatures from
//! distinct, trusted, non-revoked keys of the accepted trust root, is not
//! expired or oversize, is of the requested kind and granularity, and the
//! endpoint is in the plan's start state (installed sequence and schema
//! digest per target). A refused plan changes no target: it is logged
//! (tracing `warn`), appended to the audit chain as `plan.refused` with its
//! code and reason, and is [`Error::BadInput`] (exit 2).
//!
//! Trust root: the first `--trust` file an agent sees is pinned in
//! `<state>/trust-root.toml` (trust on first use). Later files must be the
//! same version with the same body, or the next version signed by
//! `threshold` keys of the pinned one (then it replaces the pin); anything
//! else is refused.
//!
//! Activation: a flag's activation plan (an apply plan of granularity
//! `flag`) runs only on an endpoint where its release is the installed one.
//!
//! Replay: an apply plan must carry a sequence above the installed one. The
//! one exception is the very plan that installed the current release
//! (recorded in `bundle_plans`): running it again goes to the engine, which
//! finds nothing to do (or finishes missing pieces) — a no-op.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rewind_shared::bundle::{Bundle, Envelope, Granularity, Plan, PlanKind, Refusal};
use rewind_shared::digest::schema_digest;
use rewind_shared::release::map_targets;
use rewind_shared::trust::{SignatureCount, TrustFile};
use rusqlite::{OptionalExtension, params};
use serde_json::json;

use crate::error::{Context, Error, Result};
use crate::plan::{Installed, Report, installed};
use crate::state::{State, now};
use crate::{apply, fsutil, ledger, rollback, target};

/// The accepted trust root, in the state directory.
pub const PINNED_ROOT: &str = "trust-root.toml";

const TABLE: &str = "CREATE TABLE IF NOT EXISTS bundle_plans(
    id TEXT PRIMARY KEY,            -- the signed plan's id
    bundle TEXT NOT NULL,
    kind TEXT NOT NULL,
    granularity TEXT NOT NULL,
    subject TEXT NOT NULL,
    product TEXT NOT NULL,
    release TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    engine_plan TEXT NOT NULL,      -- the engine's plan id (plans table)
    status TEXT NOT NULL,
    time TEXT NOT NULL
)";

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Logs and audits a refusal; returns the exit-2 error.
fn refuse(state: &State, bundle: &Path, plan: Option<&Plan>, r: &Refusal) -> Error {
    tracing::warn!(code = r.code, bundle = %bundle.display(), plan = plan.map(|p| p.id.as_str()), "plan refused: {}", r.message);
    let audited = state.audit(
        "plan.refused",
        &json!({
            "code": r.code,
            "reason": r.message,
            "bundle": bundle,
            "plan": plan.map(|p| &p.id),
            "kind": plan.map(|p| p.kind),
            "release": plan.map(|p| &p.release),
        }),
    );
    if let Err(e) = audited {
        tracing::error!("could not audit the refusal: {e}");
    }
    crate::outbox::report_refusal(state, plan, r);
    Error::BadInput(format!("plan refused ({}): {}; nothing was changed", r.code, r.message))
}

/// Loads `--trust FILE` against the pinned root (TOFU, then signed
/// rotations only).
fn trusted_root(state: &State, path: &Path) -> std::result::Result<TrustFile, Refusal> {
    let bad = |m: String| Refusal::new("trust-root", m);
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("{}: cannot read: {e}", path.display())))?;
    let offered = TrustFile::parse(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let pinned_path = state.root.join(PINNED_ROOT);
    let pinned_text = match std::fs::read_to_string(&pinned_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fsutil::write_atomic(&pinned_path, text.as_bytes(), 0o644)
                .map_err(|e| bad(format!("cannot pin the trust root: {e}")))?;
            let _ = state.audit(
                "trust.pinned",
                &json!({"version": offered.root.version, "threshold": offered.root.threshold,
                        "keys": offered.root.keys.iter().map(|k| &k.keyid).collect::<Vec<_>>(), "file": path}),
            );
            tracing::info!(version = offered.root.version, "trust root pinned on first use");
            return Ok(offered);
        }
        Err(e) => return Err(bad(format!("{}: cannot read the pinned root: {e}", pinned_path.display()))),
    };
    let pinned = TrustFile::parse(&pinned_text).map_err(|e| {
        bad(format!("the pinned root {} is unreadable ({e}); restore it from backup", pinned_path.display()))
    })?;
    let (have, got) = (pinned.root.version, offered.root.version);
    if got == have {
        if offered.body == pinned.body {
            return Ok(pinned);
        }
        return Err(bad(format!(
            "{} claims version {got} but differs from the pinned version {got} ({}); a changed root must be a new \
             version signed by {} key(s) of the pinned one (rewindctl trust rotate)",
            path.display(),
            pinned_path.display(),
            pinned.root.threshold
        )));
    }
    if got < have {
        return Err(bad(format!(
            "{} is version {got}, older than the pinned version {have}; use the current trust.toml",
            path.display()
        )));
    }
    let count = offered.verify_rotation(&pinned).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    fsutil::write_atomic(&pinned_path, text.as_bytes(), 0o644)
        .map_err(|e| bad(format!("cannot pin the rotated root: {e}")))?;
    let _ = state.audit(
        "trust.rotated",
        &json!({"from": have, "to": got, "signers": count.valid.values().collect::<Vec<_>>(), "file": path}),
    );
    tracing::info!(from = have, to = got, "trust root rotated");
    Ok(offered)
}

/// Verifies the chosen envelope of the bundle; every failure is refused.
fn open_plan(
    state: &State,
    bundle_path: &Path,
    trust_path: &Path,
    choose: impl FnOnce(&Bundle) -> std::result::Result<Envelope, Error>,
) -> Result<(Plan, SignatureCount)> {
    let trust = trusted_root(state, trust_path).map_err(|r| refuse(state, bundle_path, None, &r))?;
    let bundle = Bundle::load(bundle_path).map_err(|r| refuse(state, bundle_path, None, &r))?;
    let envelope = choose(&bundle)?;
    envelope.open(&trust, unix_now()).map_err(|r| refuse(state, bundle_path, None, &r))
}

fn current_schema(path: &Path) -> Result<String> {
    target::check_is_sqlite(path)?;
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| target::classify(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| target::classify(path, e))?;
    Ok(schema_digest(&conn).map_err(|e| target::classify(path, e))?.to_string())
}

fn describe(inst: Option<&Installed>) -> String {
    inst.map_or_else(|| "nothing installed".to_string(), |i| format!("{} (sequence {})", i.release, i.sequence))
}

fn recorded(state: &State, plan: &Plan) -> Result<Option<String>> {
    state.db.execute_batch(TABLE).ctx("bundle_plans")?;
    state
        .db
        .query_row("SELECT status FROM bundle_plans WHERE id = ?1", [&plan.id], |r| r.get(0))
        .optional()
        .ctx("bundle_plans read")
}

fn record(state: &State, plan: &Plan, report: &Report) -> Result<()> {
    state.db.execute_batch(TABLE).ctx("bundle_plans")?;
    state
        .db
        .execute(
            "INSERT OR REPLACE INTO bundle_plans VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            params![
                plan.id,
                plan.bundle,
                serde_json::to_value(plan.kind).ok().and_then(|v| v.as_str().map(String::from)),
                plan.granularity.to_string(),
                plan.subject,
                plan.product,
                plan.release,
                plan.sequence as i64,
                report.plan,
                report.status,
                now()
            ],
        )
        .ctx("bundle_plans write")?;
    Ok(())
}

/// Per target in the plan's `from`: the current schema must be `from` (or,
/// when `also` gives one, that one too — a rollback already done there).
fn check_schemas(
    plan: &Plan,
    dbs: &BTreeMap<String, PathBuf>,
    rollback: bool,
) -> Result<std::result::Result<(), Refusal>> {
    for (t, want) in &plan.from.targets {
        let (Some(want), Some(path)) = (&want.schema, dbs.get(t)) else { continue };
        let have = current_schema(path)?;
        let done = rollback && plan.to.targets.get(t).and_then(|s| s.schema.as_ref()) == Some(&have);
        if &have != want && !done {
            return Ok(Err(Refusal::new(
                "start-state",
                format!(
                    "target {t} ({}): schema is {have}, but plan {} starts from {want}: it was built for another \
                     start state (mix-and-match); build a bundle from a sample of this endpoint's database",
                    path.display(),
                    plan.id
                ),
            )));
        }
    }
    Ok(Ok(()))
}

fn accepted(state: &State, bundle_path: &Path, plan: &Plan, count: &SignatureCount) -> Result<()> {
    tracing::info!(plan = %plan.id, "plan accepted: {count}");
    state.audit(
        "plan.accepted",
        &json!({"plan": plan.id, "bundle": plan.bundle, "file": bundle_path, "kind": plan.kind, "granularity": plan.granularity,
                "subject": plan.subject, "release": plan.release, "sequence": plan.sequence,
                "signers": count.valid.values().collect::<Vec<_>>()}),
    )?;
    Ok(())
}

/// `apply --bundle FILE --trust FILE --db TARGET=FILE ...`.
///
/// # Errors
/// [`Error::BadInput`] (exit 2, nothing changed) for every refusal and for
/// unusable inputs; otherwise what [`apply::apply`] returns.
pub fn apply(state: &State, bundle_path: &Path, trust_path: &Path, db_args: &[String]) -> Result<Report> {
    let (plan, count) = open_plan(state, bundle_path, trust_path, |b| Ok(b.apply.clone()))?;
    let refused = |r: Refusal| refuse(state, bundle_path, Some(&plan), &r);
    if plan.kind != PlanKind::Apply {
        return Err(refused(Refusal::new("kind", format!("the bundle's apply envelope holds a {:?} plan", plan.kind))));
    }
    let release = plan.steps.clone();
    let dbs = map_targets(&release, db_args).map_err(Error::BadInput)?;
    let inst = installed(state, &plan.product)?;
    let inst_seq = inst.as_ref().map_or(0, |i| i.sequence);
    let same_plan = recorded(state, &plan)?.as_deref() == Some("applied")
        && inst.as_ref().is_some_and(|i| i.release == plan.release && i.sequence == plan.sequence);
    if !same_plan {
        if inst_seq >= plan.sequence {
            return Err(refused(Refusal::new(
                "replay",
                format!(
                    "plan {} applies {} {} (sequence {}), but {} is installed: a replay or downgrade; \
                     to go back, roll the installed release back with its own bundle",
                    plan.id,
                    plan.product,
                    plan.release,
                    plan.sequence,
                    describe(inst.as_ref())
                ),
            )));
        }
        if let Some(s) = plan.from.sequence
            && s != inst_seq
        {
            return Err(refused(Refusal::new(
                "start-state",
                format!(
                    "plan {} starts from sequence {s}, but {} is installed (mix-and-match); use the bundle built for this endpoint's release",
                    plan.id,
                    describe(inst.as_ref())
                ),
            )));
        }
        check_schemas(&plan, &dbs, false)?.map_err(refused)?;
    }
    accepted(state, bundle_path, &plan, &count)?;
    let report = crate::outbox::with_origin(state, &plan, || apply::apply(state, &release, &dbs))?;
    record(state, &plan, &report)?;
    Ok(report)
}

/// `apply --bundle FILE --trust FILE --flag NAME`: runs the flag's
/// pre-signed activation plan (turns it on) on an endpoint that has the
/// plan's release installed.
///
/// # Errors
/// [`Error::BadInput`] (exit 2, nothing changed) for every refusal (also
/// when the release is not the installed one: `start-state`); otherwise
/// what [`apply::activate_flag`] returns.
pub fn activate(state: &State, bundle_path: &Path, trust_path: &Path, name: &str) -> Result<Report> {
    let (plan, count) =
        open_plan(state, bundle_path, trust_path, |b| b.activation_envelope(name).cloned().map_err(Error::BadInput))?;
    let refused = |r: Refusal| refuse(state, bundle_path, Some(&plan), &r);
    // The bundle's index is unsigned: the signed payload must agree with it.
    let only_flag = plan.steps.flags.len() == 1 && plan.steps.flags[0].name == name;
    if plan.kind != PlanKind::Apply || plan.granularity != Granularity::Flag || plan.subject != name || !only_flag {
        return Err(refused(Refusal::new(
            "kind",
            format!(
                "asked for the activation of flag {name}, the signed plan is {:?} {} {}",
                plan.kind, plan.granularity, plan.subject
            ),
        )));
    }
    let inst = installed(state, &plan.product)?;
    if inst.as_ref().is_none_or(|i| i.sequence != plan.sequence || i.release != plan.release) {
        return Err(refused(Refusal::new(
            "start-state",
            format!(
                "activation plan {} turns on flag {name} of {} {} (sequence {}), but {} is installed here; \
                 apply that release first",
                plan.id,
                plan.product,
                plan.release,
                plan.sequence,
                describe(inst.as_ref())
            ),
        )));
    }
    accepted(state, bundle_path, &plan, &count)?;
    let report = crate::outbox::with_origin(state, &plan, || apply::activate_flag(state, &plan.steps, name))?;
    record(state, &plan, &report)?;
    Ok(report)
}

/// `rollback --bundle FILE --trust FILE [--granularity G --subject S]`:
/// runs the pre-signed rollback plan (no signing key needed).
///
/// # Errors
/// [`Error::BadInput`] (exit 2, nothing changed) for every refusal and for
/// unusable inputs; otherwise what [`rollback::rollback`] returns.
pub fn rollback(
    state: &State,
    bundle_path: &Path,
    trust_path: &Path,
    db_args: &[String],
    granularity: Granularity,
    subject: Option<&str>,
) -> Result<Report> {
    if granularity != Granularity::Release && subject.is_none() {
        return Err(Error::BadInput(format!("--granularity {granularity} needs --subject NAME (which {granularity})")));
    }
    let (plan, count) = open_plan(state, bundle_path, trust_path, |b| {
        b.rollback_envelope(granularity, subject).cloned().map_err(Error::BadInput)
    })?;
    let refused = |r: Refusal| refuse(state, bundle_path, Some(&plan), &r);
    // The bundle's index is unsigned: the signed payload must agree with it.
    if plan.kind != PlanKind::Rollback || plan.granularity != granularity || subject.is_some_and(|s| s != plan.subject)
    {
        return Err(refused(Refusal::new(
            "kind",
            format!(
                "asked for rollback {granularity} {}, the signed plan is {:?} {} {}",
                subject.unwrap_or(""),
                plan.kind,
                plan.granularity,
                plan.subject
            ),
        )));
    }
    let release = plan.steps.clone();
    let mut dbs = map_targets(&release, db_args).map_err(Error::BadInput)?;
    // Partial plans touch only their target(s); the engine must not see others.
    dbs.retain(|t, _| {
        release.migrations.iter().any(|m| &m.target == t) || release.checks.iter().any(|c| &c.target == t)
    });
    let inst = installed(state, &plan.product)?;
    let inst_seq = inst.as_ref().map_or(0, |i| i.sequence);
    if inst_seq != plan.sequence {
        let why = if inst_seq > plan.sequence {
            format!(
                "a newer release, {}, is installed; roll that back first with its own bundle",
                describe(inst.as_ref())
            )
        } else {
            format!(
                "{} {} is not installed here ({}); there is nothing for this plan to roll back",
                plan.product,
                plan.release,
                describe(inst.as_ref())
            )
        };
        return Err(refused(Refusal::new("start-state", format!("rollback plan {}: {why}", plan.id))));
    }
    check_schemas(&plan, &dbs, true)?.map_err(refused)?;
    if granularity == Granularity::Migration {
        // The engine undoes a target's applied migrations of a release as a
        // whole; a plan that leaves some of them applied cannot run yet.
        for (t, path) in &dbs {
            let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| target::classify(path, e))?;
            let others: Vec<String> = ledger::applied(&conn, &plan.product)
                .map_err(|e| target::classify(path, e))?
                .into_iter()
                .filter(|e| e.release == plan.release && !release.migrations.iter().any(|m| m.id == e.migration))
                .map(|e| e.migration)
                .collect();
            if !others.is_empty() {
                // A refusal (reported to the coordinator, nothing changed):
                // this endpoint's state does not allow the plan.
                return Err(refused(Refusal::new(
                    "start-state",
                    format!(
                        "migration {} cannot be rolled back alone: {} of the same release stay applied on target {t}, \
                         and this agent undoes a target's migrations together; use --granularity target --subject {t}",
                        plan.subject,
                        others.join(", ")
                    ),
                )));
            }
        }
    }
    accepted(state, bundle_path, &plan, &count)?;
    let report = crate::outbox::with_origin(state, &plan, || {
        if granularity == Granularity::Release {
            rollback::rollback(state, &release, &dbs)
        } else {
            // The release stays (partly) applied: installed, snapshots pinned.
            rollback::rollback_part(state, &release, &dbs)
        }
    })?;
    record(state, &plan, &report)?;
    Ok(report)
}
