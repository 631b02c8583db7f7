//! A plan: what one apply or rollback will do, written to the journal in
//! full (scripts included) before its first step, so recovery never needs
//! the release directory. Also the journal itself and the report a plan
//! produces.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rewind_shared::release::{Check, CheckWhen, Flag, Migration};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Context, Error, Result};
use crate::flags::FlagValues;
use crate::state::{State, now};
use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    Apply,
    Rollback,
}

/// The release that was installed before a plan ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub release: String,
    pub sequence: u64,
    pub plan_id: String,
}

/// Everything a plan needs, journaled before it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub kind: PlanKind,
    pub product: String,
    pub release: String,
    pub sequence: u64,
    /// What was installed before an apply plan (restored if it is reverted).
    pub from: Option<Installed>,
    pub targets: BTreeMap<String, PathBuf>,
    /// The release's migrations for the mapped targets, in apply order.
    pub migrations: Vec<Migration>,
    pub flags: Vec<Flag>,
    /// Flag values before the plan, restored when it is reverted.
    pub flags_before: FlagValues,
    pub checks: Vec<Check>,
    /// Values of `unchanged` checks before the plan, by check name.
    pub baseline: BTreeMap<String, Value>,
    /// For rollbacks: the apply plan being rolled back (its snapshots are
    /// what the rollback proves against), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_plan: Option<String>,
    /// The installed release stays as it is, whatever becomes of this plan
    /// (a flag's activation): undoing it puts flag values back and leaves
    /// `installed` and the release's pinned snapshots alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keeps_release: bool,
}

impl Plan {
    #[must_use]
    pub fn migration(&self, id: &str) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.id == id)
    }
}

/// Result of one `[[check]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub target: String,
    pub when: CheckWhen,
    pub value: Value,
    pub expect: String,
    pub ok: bool,
}

/// Per-target part of a report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetReport {
    pub name: String,
    pub db: PathBuf,
    /// Data digest before the plan (equal to the snapshot's).
    pub before: Option<String>,
    pub after: Option<String>,
    pub schema_before: Option<String>,
    pub schema_after: Option<String>,
    pub snapshot: Option<String>,
    /// Migrations this plan applied or reverted, in the order it did so.
    pub migrations: Vec<String>,
    /// For rollbacks: "identical" or "changed since apply" (data digest
    /// against the pre-apply snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// For restores: whether writes made after the apply were lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_writes: Option<bool>,
}

/// What an apply or rollback did, as `--json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `applied`, `rolled_back` or `failed`.
    pub status: String,
    pub product: String,
    pub release: String,
    pub sequence: u64,
    pub plan: String,
    pub targets: Vec<TargetReport>,
    pub flags: FlagValues,
    pub checks: Vec<CheckResult>,
    /// Per step: what and how long, in order.
    pub steps: Vec<StepTime>,
    /// Why a failed plan failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which step failed, when the plan failed in a migration or a check:
    /// `verify` (a migration's `verify.sql`: an integrity signal for a
    /// rollout), `up`, `preserve` or `check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// One line for people.
    pub message: String,
}

impl Report {
    /// A report of `plan` with `status` and nothing in it yet.
    #[must_use]
    pub fn empty(plan: &Plan, status: &str) -> Self {
        Report {
            status: status.into(),
            product: plan.product.clone(),
            release: plan.release.clone(),
            sequence: plan.sequence,
            plan: plan.id.clone(),
            targets: Vec::new(),
            flags: FlagValues::new(),
            checks: Vec::new(),
            steps: Vec::new(),
            error: None,
            failed_step: None,
            message: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTime {
    pub step: String,
    pub millis: u128,
    /// For migrations: whether the step can be undone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversible: Option<bool>,
}

/// A plan being run: its journal and open targets.
pub struct Run<'s> {
    pub state: &'s State,
    pub plan: Plan,
    pub targets: BTreeMap<String, Target>,
    next_step: i64,
}

impl<'s> Run<'s> {
    /// Records a new plan as running, before any of its steps.
    ///
    /// # Errors
    /// When `agent.db` cannot be written.
    pub fn start(state: &'s State, plan: Plan, targets: BTreeMap<String, Target>) -> Result<Self> {
        let body = serde_json::to_string(&plan).expect("plan serializes");
        state
            .db
            .execute(
                "INSERT INTO plans(id, kind, product, release, sequence, body, state, started)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)",
                params![plan.id, kind_str(plan.kind), plan.product, plan.release, plan.sequence as i64, body, now()],
            )
            .ctx("journal: plan start")?;
        crate::outbox::remember_origin(state, &plan.id)?;
        state.audit(
            "plan.start",
            &serde_json::json!({"plan": plan.id, "kind": plan.kind, "product": plan.product, "release": plan.release,
                                 "sequence": plan.sequence, "targets": plan.targets}),
        )?;
        Ok(Run { state, plan, targets, next_step: 1 })
    }

    /// Resumes an unfinished plan found in the journal.
    ///
    /// # Errors
    /// When `agent.db` cannot be read.
    pub fn resume(state: &'s State, plan: Plan, targets: BTreeMap<String, Target>) -> Result<Self> {
        let last: Option<i64> = state
            .db
            .query_row("SELECT max(n) FROM journal WHERE plan_id = ?1", [&plan.id], |r| r.get(0))
            .ctx("journal read")?;
        Ok(Run { state, plan, targets, next_step: last.unwrap_or(0) + 1 })
    }

    /// Journals a step as started; returns its number for [`Run::done`].
    ///
    /// # Errors
    /// When `agent.db` cannot be written.
    pub fn begin(&mut self, step: &str, target: Option<&str>, detail: &Value) -> Result<i64> {
        let n = self.next_step;
        self.next_step += 1;
        self.state
            .db
            .execute(
                "INSERT INTO journal(plan_id, n, step, target, detail, state, time) VALUES (?1, ?2, ?3, ?4, ?5, 'started', ?6)",
                params![self.plan.id, n, step, target, detail.to_string(), now()],
            )
            .ctx("journal write")?;
        Ok(n)
    }

    /// Marks a journaled step done, with what it produced.
    ///
    /// # Errors
    /// When `agent.db` cannot be written.
    pub fn done(&self, n: i64, detail: &Value) -> Result<()> {
        self.state
            .db
            .execute(
                "UPDATE journal SET state = 'done', detail = ?1, time = ?2 WHERE plan_id = ?3 AND n = ?4",
                params![detail.to_string(), now(), self.plan.id, n],
            )
            .ctx("journal write")?;
        Ok(())
    }

    /// Whether a step of this plan was started (e.g. `flags`).
    ///
    /// # Errors
    /// When `agent.db` cannot be read.
    pub fn step_started(&self, step: &str) -> Result<bool> {
        step_detail(self.state, &self.plan.id, step, None, false).map(|d| d.is_some())
    }

    /// Finishes the plan with a final state and its report, and queues the
    /// signed report in the outbox.
    ///
    /// # Errors
    /// When `agent.db` cannot be written.
    pub fn finish(&self, final_state: &str, report: &Report) -> Result<()> {
        // The final state and its audit entry commit together: a plan is
        // never finished without its audit entry, nor audited as finished
        // while the journal still says running.
        let tx = self.state.db.unchecked_transaction().ctx("journal: plan finish")?;
        tx.execute(
            "UPDATE plans SET state = ?1, finished = ?2, result = ?3 WHERE id = ?4",
            params![final_state, now(), serde_json::to_string(report).expect("report serializes"), self.plan.id],
        )
        .ctx("journal: plan finish")?;
        if matches!(final_state, "applied" | "rolled_back") {
            // A proven apply or rollback of a release settles earlier plans
            // of that release that stopped for a human: the person acted
            // (e.g. ran the restore printed) and this plan proved the result.
            let mut stmt = tx
                .prepare("SELECT id FROM plans WHERE product = ?1 AND release = ?2 AND state = 'needs_human'")
                .ctx("journal read")?;
            let stuck = stmt
                .query_map(params![self.plan.product, self.plan.release], |r| r.get::<_, String>(0))
                .ctx("journal read")?
                .collect::<rusqlite::Result<Vec<_>>>()
                .ctx("journal read")?;
            drop(stmt);
            for id in stuck {
                tx.execute("UPDATE plans SET state = 'resolved' WHERE id = ?1", [&id]).ctx("journal write")?;
                self.state.audit("plan.resolved", &serde_json::json!({"plan": id, "by": self.plan.id}))?;
            }
        }
        self.state.audit(
            "plan.finish",
            &serde_json::json!({"plan": self.plan.id, "state": final_state, "message": report.message,
                                 "targets": report.targets.iter().map(|t| (&t.name, &t.after)).collect::<BTreeMap<_, _>>()}),
        )?;
        // The signed report commits with the plan's end (and carries the
        // entry above as its chain head).
        crate::outbox::enqueue_finished(self.state, &self.plan, final_state, report)?;
        tx.commit().ctx("journal: plan finish")?;
        Ok(())
    }

    /// The open target called `name`.
    ///
    /// # Panics
    /// When the plan has no such target (an engine bug: targets are opened
    /// from the plan).
    #[must_use]
    pub fn target(&self, name: &str) -> &Target {
        &self.targets[name]
    }
}

fn kind_str(k: PlanKind) -> &'static str {
    match k {
        PlanKind::Apply => "apply",
        PlanKind::Rollback => "rollback",
    }
}

/// The detail of a journaled step of `plan_id` (for one target), if any;
/// with `done_only`, only a finished one.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn step_detail(
    state: &State,
    plan_id: &str,
    step: &str,
    target: Option<&str>,
    done_only: bool,
) -> Result<Option<Value>> {
    let sql = format!(
        "SELECT detail FROM journal WHERE plan_id = ?1 AND step = ?2 AND (?3 IS NULL OR target = ?3) {} ORDER BY n DESC LIMIT 1",
        if done_only { "AND state = 'done'" } else { "" }
    );
    let detail: Option<String> =
        state.db.query_row(&sql, params![plan_id, step, target], |r| r.get(0)).optional().ctx("journal read")?;
    Ok(detail.map(|d| serde_json::from_str(&d).unwrap_or(Value::Null)))
}

/// Plans still marked running (interrupted), oldest first.
///
/// # Errors
/// When `agent.db` cannot be read or a plan body is unreadable.
pub fn unfinished(state: &State) -> Result<Vec<Plan>> {
    let mut stmt =
        state.db.prepare("SELECT body FROM plans WHERE state = 'running' ORDER BY started").ctx("journal read")?;
    let bodies = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .ctx("journal read")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("journal read")?;
    bodies
        .iter()
        .map(|b| {
            serde_json::from_str(b).map_err(|e| Error::NeedsHuman {
                message: format!("an interrupted plan in {} cannot be read: {e}", state.root.display()),
                next: format!("sqlite3 {} \"SELECT id, state FROM plans\"", state.root.join("agent.db").display()),
            })
        })
        .collect()
}

/// The product's installed release, if any.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn installed(state: &State, product: &str) -> Result<Option<Installed>> {
    state
        .db
        .query_row("SELECT release, sequence, plan_id FROM installed WHERE product = ?1", [product], |r| {
            Ok(Installed { release: r.get(0)?, sequence: r.get::<_, i64>(1)? as u64, plan_id: r.get(2)? })
        })
        .optional()
        .ctx("installed read")
}

/// Records (or clears) the product's installed release.
///
/// # Errors
/// When `agent.db` cannot be written.
pub fn set_installed(state: &State, product: &str, inst: Option<&Installed>) -> Result<()> {
    match inst {
        Some(i) => state.db.execute(
            "INSERT INTO installed(product, release, sequence, plan_id, updated) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(product) DO UPDATE SET release = excluded.release, sequence = excluded.sequence,
                                                plan_id = excluded.plan_id, updated = excluded.updated",
            params![product, i.release, i.sequence as i64, i.plan_id, now()],
        ),
        None => state.db.execute("DELETE FROM installed WHERE product = ?1", [product]),
    }
    .ctx("installed write")?;
    Ok(())
}

/// The `n` most recent plans, newest first, as JSON summaries.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn last_plans(state: &State, n: usize) -> Result<Vec<Value>> {
    let mut stmt = state
        .db
        .prepare("SELECT id, kind, product, release, sequence, state, started, finished FROM plans ORDER BY started DESC LIMIT ?1")
        .ctx("journal read")?;
    stmt.query_map([n as i64], |r| {
        Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "kind": r.get::<_, String>(1)?, "product": r.get::<_, String>(2)?,
            "release": r.get::<_, String>(3)?, "sequence": r.get::<_, i64>(4)?, "state": r.get::<_, String>(5)?,
            "started": r.get::<_, String>(6)?, "finished": r.get::<_, Option<String>>(7)?}))
    })
    .ctx("journal read")?
    .collect::<rusqlite::Result<_>>()
    .ctx("journal read")
}
