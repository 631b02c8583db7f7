//! Crash recovery. Every command that opens the state directory calls
//! [`recover`] first.
//!
//! Guarantee: after a crash, power loss or kill at any point, `recover()`
//! leaves every target of an interrupted apply plan at the plan's start
//! state and finishes an interrupted rollback, each proven by digest, and
//! says what it did; if it cannot, the plan is marked as needing a human
//! with the exact next command.

use std::collections::BTreeMap;

use serde_json::json;

use crate::error::{Error, Result};
use crate::plan::{PlanKind, Report, Run, unfinished};
use crate::rollback::{finish_rollback, revert};
use crate::state::State;
use crate::target::Target;

/// Finishes every interrupted plan; returns what was done.
///
/// # Errors
/// [`Error::NeedsHuman`] when a plan cannot be brought to a proven state.
pub fn recover(state: &State) -> Result<Vec<Report>> {
    remove_orphan_snapshots(state);
    for db in crate::snapshot::finish_interrupted_restores(state) {
        eprintln!(
            "rewind-agent: an interrupted restore into {} was rolled back; the database is unchanged",
            db.display()
        );
    }
    let mut done = Vec::new();
    for plan in unfinished(state)? {
        state.audit("plan.recover", &json!({"plan": plan.id, "kind": plan.kind}))?;
        let mut targets = BTreeMap::new();
        for (name, path) in &plan.targets {
            let t = Target::open(name, path).map_err(|e| Error::NeedsHuman {
                message: format!("interrupted plan {} cannot reopen target {name} ({}): {e}", plan.id, path.display()),
                next: format!(
                    "make {} available again, then run: rewind-agent --state {} status",
                    path.display(),
                    state.root.display()
                ),
            })?;
            targets.insert(name.clone(), t);
        }
        let kind = plan.kind;
        let report = Report::empty(&plan, "failed");
        let run = Run::resume(state, plan, targets)?;
        let report = match kind {
            PlanKind::Apply => {
                revert(run, report, "the agent stopped while applying (crash, kill or power loss)".into())?
            }
            PlanKind::Rollback => finish_rollback(run)?,
        };
        done.push(report);
    }
    Ok(done)
}

/// Runs a plan-starting `body` so that an error after it journaled its plan
/// (it sets `started`) is settled by recovery — reverted, finished or marked
/// for a human — and never reported as "nothing changed".
///
/// # Errors
/// `body`'s error before its plan started; else what [`settle`] returns.
pub fn settled(state: &State, body: impl FnOnce(&mut Option<String>) -> Result<Report>) -> Result<Report> {
    let mut started = None;
    body(&mut started).or_else(|e| match started {
        Some(id) => settle(state, &id, e),
        None => Err(e),
    })
}

/// Settles a plan that this process started and that ended with `err`
/// (say agent.db could not be written, or a target went away): if the
/// journal still has it running, it is finished now exactly as after a
/// crash (an apply reverted, a rollback completed) and the resulting report
/// carries `err`; if that is impossible too, a person must act, and the
/// error says what to run once the cause is fixed. An error from a plan that
/// already finished (e.g. a snapshot that did not fit: reverted, nothing
/// changed) is returned as it is.
///
/// # Errors
/// `err` itself for a finished plan; [`Error::NeedsHuman`] when the plan
/// cannot be finished now.
pub fn settle(state: &State, plan_id: &str, err: Error) -> Result<Report> {
    let plan_state: Option<String> =
        state.db.query_row("SELECT state FROM plans WHERE id = ?1", [plan_id], |r| r.get(0)).ok();
    if plan_state.as_deref() != Some("running") {
        return Err(err);
    }
    let next = format!(
        "fix the cause (e.g. free disk space in {} and next to the databases), then run: rewind-agent --state {} status",
        state.root.display(),
        state.root.display()
    );
    match recover(state) {
        Ok(reports) => match reports.into_iter().find(|r| r.plan == plan_id) {
            Some(mut r) => {
                r.message = format!("plan {plan_id} stopped: {err}; {}", r.message);
                r.error = Some(err.to_string());
                Ok(r)
            }
            None => Err(Error::NeedsHuman { message: format!("plan {plan_id} stopped: {err}"), next }),
        },
        Err(Error::NeedsHuman { message, next }) => Err(Error::NeedsHuman {
            message: format!("plan {plan_id} stopped: {err}; finishing it failed: {message}"),
            next,
        }),
        Err(again) => Err(Error::NeedsHuman {
            message: format!(
                "plan {plan_id} stopped: {err}; it could not be finished now ({again}), so targets may be part-way"
            ),
            next,
        }),
    }
}

/// Removes snapshot files a crash left behind before they were catalogued.
fn remove_orphan_snapshots(state: &State) {
    let Ok(dir) = std::fs::read_dir(state.snapshots_dir()) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("snap-") {
            continue;
        }
        let id = name.split('.').next().unwrap_or_default().to_string();
        let known = state.db.query_row("SELECT 1 FROM snapshots WHERE id = ?1", [&id], |_| Ok(())).is_ok();
        if !known {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    finish_interrupted_prunes(state);
}

/// A prune deletes a snapshot's file, then its manifest, then its catalogue
/// row; after a crash in between, the row names a file that is gone. An
/// unpinned snapshot in that state was being pruned: finish it, so `list`
/// never shows a snapshot that cannot be restored. A pinned one is kept
/// listed (`snapshot verify` reports it): nothing of Rewind deletes those.
fn finish_interrupted_prunes(state: &State) {
    let Ok(mut stmt) = state.db.prepare("SELECT id, file FROM snapshots WHERE pinned = 0") else { return };
    let Ok(rows) = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
    else {
        return;
    };
    drop(stmt);
    for (id, file) in rows {
        let file = std::path::PathBuf::from(file);
        if file.exists() {
            continue;
        }
        let _ = std::fs::remove_file(file.with_extension("json"));
        if state.db.execute("DELETE FROM snapshots WHERE id = ?1", [&id]).is_ok() {
            let _ = state.audit("snapshot.prune", &json!({"id": id, "recovered": true}));
        }
    }
}
