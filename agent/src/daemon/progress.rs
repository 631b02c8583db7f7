//! Progress of a plan delivered over the stream, read from the engine's
//! journal (`agent.db` tables `plans` and `journal`, which the engine writes
//! before and after every step) by a read-only connection while the plan
//! runs, so the engine needs no hook and the messages say exactly what was
//! journaled. Each journal step is reported when it starts and when it is
//! done; steps that start and finish between two looks are reported once,
//! done. A last look after the plan catches any step not yet sent, then a
//! `finished` message closes the plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rewind_shared::telemetry::ProgressStep;
use serde_json::Value;

/// `journal` columns n, step, target, detail, state.
type JournalRow = (i64, String, Option<String>, Option<String>, String);

/// Watches the engine plans started after [`Watch::new`] for one delivery.
pub struct Watch {
    db: PathBuf,
    /// Highest `plans` rowid before the delivery ran.
    since: i64,
    plan_id: String,
    delivery_id: String,
    product: String,
    /// Per journal row (engine plan, n): the state last reported.
    sent: BTreeMap<(String, i64), String>,
}

fn open(db: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    Ok(conn)
}

/// How many steps a journaled plan body will take: a snapshot or undo per
/// target, one per migration, one per flag activation.
fn expected_steps(body: &Value) -> u32 {
    let targets = body["targets"].as_object().map_or(0, serde_json::Map::len);
    let migrations = body["migrations"].as_array().map_or(0, Vec::len);
    let flags = body["flags"].as_array().map_or(0, |f| {
        let mut kinds: Vec<&str> = f.iter().filter_map(|x| x["activate"].as_str()).filter(|a| *a != "manual").collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds.len()
    });
    u32::try_from(targets + migrations + flags).unwrap_or(u32::MAX)
}

impl Watch {
    /// Starts watching for plans started from now on. Blocking.
    #[must_use]
    pub fn new(state: &Path, plan_id: &str, delivery_id: &str, product: &str) -> Self {
        let db = state.join("agent.db");
        let since = if db.is_file() {
            open(&db)
                .and_then(|c| c.query_row("SELECT coalesce(max(rowid), 0) FROM plans", [], |r| r.get(0)))
                .unwrap_or(0)
        } else {
            0
        };
        Watch {
            db,
            since,
            plan_id: plan_id.into(),
            delivery_id: delivery_id.into(),
            product: product.into(),
            sent: BTreeMap::new(),
        }
    }

    /// New or changed journal steps since the last look. Blocking.
    pub fn poll(&mut self) -> Vec<ProgressStep> {
        match self.read() {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("progress: reading the journal: {e}");
                Vec::new()
            }
        }
    }

    fn read(&mut self) -> rusqlite::Result<Vec<ProgressStep>> {
        if !self.db.is_file() {
            return Ok(Vec::new());
        }
        let conn = open(&self.db)?;
        let mut plans = conn.prepare("SELECT id, kind, body FROM plans WHERE rowid > ?1 ORDER BY rowid")?;
        let plans: Vec<(String, String, String)> =
            plans.query_map([self.since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (engine_plan, kind, body) in plans {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let mut stmt =
                conn.prepare("SELECT n, step, target, detail, state FROM journal WHERE plan_id = ?1 ORDER BY n")?;
            let rows: Vec<JournalRow> = stmt
                .query_map([&engine_plan], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<Result<_, _>>()?;
            let total = expected_steps(&body).max(u32::try_from(rows.len()).unwrap_or(u32::MAX));
            let mut done = 0u32;
            for (n, step, target, detail, state) in rows {
                if state == "done" {
                    done += 1;
                }
                let key = (engine_plan.clone(), n);
                if self.sent.get(&key) == Some(&state) {
                    continue;
                }
                self.sent.insert(key, state.clone());
                let migration = detail
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                    .and_then(|d| d["migration"].as_str().map(String::from))
                    .unwrap_or_default();
                let what = match (&migration, &target) {
                    (m, Some(t)) if !m.is_empty() => format!("{step} {m} on {t}"),
                    (_, Some(t)) => format!("{step} {t}"),
                    _ => step.clone(),
                };
                out.push(ProgressStep {
                    plan_id: self.plan_id.clone(),
                    delivery_id: self.delivery_id.clone(),
                    product: self.product.clone(),
                    step: what.clone(),
                    phase: step,
                    migration,
                    target: target.unwrap_or_default(),
                    done,
                    total,
                    message: format!("{kind} step {n} of {total}: {what} {state}"),
                });
            }
        }
        Ok(out)
    }

    /// The closing message once the plan's result is in the outbox.
    #[must_use]
    pub fn finished(&self, outcome: &str) -> ProgressStep {
        let steps = u32::try_from(self.sent.len()).unwrap_or(u32::MAX);
        ProgressStep {
            plan_id: self.plan_id.clone(),
            delivery_id: self.delivery_id.clone(),
            product: self.product.clone(),
            step: "finished".into(),
            phase: "finished".into(),
            migration: String::new(),
            target: String::new(),
            done: steps,
            total: steps,
            message: outcome.chars().take(400).collect(),
        }
    }
}
