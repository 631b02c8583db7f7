//! The outbox: every plan's result, signed by the agent key, waiting in
//! `agent.db` until the coordinator acknowledges it (DESIGN.md §5 "Daemon").
//!
//! Guarantees:
//! - A finished plan's report is enqueued in the same `agent.db`
//!   transaction that marks the plan finished ([`crate::plan::Run::finish`]),
//!   so a crash leaves either both or neither; recovery finishes the plan
//!   and enqueues then. Its id is derived from the agent key and the plan
//!   id, and enqueueing is `INSERT OR IGNORE`: one report per plan, however
//!   often it is attempted.
//! - A refused plan (`--bundle`) enqueues a `refused` report with its code.
//! - [`pending`] lists unacknowledged reports oldest first; the transport
//!   sends them (at least once) and calls [`mark_delivered`] on the
//!   coordinator's ack, which is idempotent: acking an id twice changes
//!   nothing. The coordinator stores reports by id, so the effect is
//!   exactly once.
//! - Each report carries the audit chain head and the entries since the
//!   head of the newest acknowledged report ([`ReportPayload::audit_since`]),
//!   so the coordinator can check continuity
//!   ([`rewind_shared::report::ChainContinuity`]).

use rewind_shared::bundle::{self, Refusal};
use rewind_shared::report::{
    ChainPoint, MAX_AUDIT_SINCE, REPORT_FORMAT, RefusalInfo, ReportPayload, ReportStatus, SignedReport, TargetResult,
};
use rewind_shared::trust::key_id;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::{Context, Error, Result};
use crate::plan::{Plan, PlanKind, Report};
use crate::state::{State, new_id, now};

/// Tables added by `agent.db` schema version 2 (see [`crate::state`]).
pub const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS outbox(
    id TEXT PRIMARY KEY,            -- report id, res-<hex>
    plan_id TEXT NOT NULL,          -- engine plan id; a refused plan's signed id ('' when unreadable)
    status TEXT NOT NULL,           -- applied | rolled_back | failed | refused
    created TEXT NOT NULL,
    payload BLOB NOT NULL,          -- the exact signed JSON bytes
    signature TEXT NOT NULL,        -- Ed25519 over pae(REPORT_TYPE, payload), hex
    chain_seq INTEGER NOT NULL,     -- audit head seq carried by the report
    delivered_at TEXT,              -- set once, on the coordinator's ack
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(created) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS plan_origin(
    plan_id TEXT PRIMARY KEY,       -- engine plan id
    signed_plan TEXT NOT NULL,      -- the signed plan it ran
    bundle TEXT NOT NULL
);
";

/// `meta` key: chain seq of the newest acknowledged report.
const ACKED_SEQ: &str = "outbox.acked_seq";

/// The signed plan an engine plan runs, recorded when it starts so that a
/// report made after a crash still names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub signed_plan: String,
    pub bundle: String,
}

/// One report in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxItem {
    pub id: String,
    pub plan: String,
    pub status: String,
    pub created: String,
    pub chain_seq: u64,
    pub delivered: bool,
    pub delivered_at: Option<String>,
    pub attempts: u64,
    /// What is sent: exact payload bytes (hex) and signature.
    pub report: SignedReport,
}

/// Result of [`mark_delivered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Marked delivered now.
    Delivered,
    /// Was already delivered; nothing changed.
    AlreadyDelivered,
    /// No report has this id (e.g. from another agent); nothing changed.
    Unknown,
}

/// Runs `f` (an engine apply or rollback) with `plan` as the origin of the
/// engine plan it starts, so its report names the signed plan and bundle.
pub fn with_origin<T>(state: &State, plan: &bundle::Plan, f: impl FnOnce() -> T) -> T {
    state.set_origin(Some(Origin { signed_plan: plan.id.clone(), bundle: plan.bundle.clone() }));
    let out = f();
    state.set_origin(None);
    out
}

/// Records the current origin (if any) for engine plan `plan_id`; called
/// when the plan is journaled.
///
/// # Errors
/// When `agent.db` cannot be written.
pub fn remember_origin(state: &State, plan_id: &str) -> Result<()> {
    if let Some(o) = state.origin() {
        state
            .db
            .execute(
                "INSERT OR REPLACE INTO plan_origin(plan_id, signed_plan, bundle) VALUES (?1, ?2, ?3)",
                params![plan_id, o.signed_plan, o.bundle],
            )
            .ctx("outbox: plan origin")?;
    }
    Ok(())
}

fn origin_of(state: &State, plan_id: &str) -> Result<Option<Origin>> {
    state
        .db
        .query_row("SELECT signed_plan, bundle FROM plan_origin WHERE plan_id = ?1", [plan_id], |r| {
            Ok(Origin { signed_plan: r.get(0)?, bundle: r.get(1)? })
        })
        .optional()
        .ctx("outbox: plan origin")
}

/// The report id of a finished plan: stable for this agent and plan.
#[must_use]
pub fn report_id(state: &State, plan_id: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"rewind-report-id-1\0");
    h.update(state.key().verifying_key().as_bytes());
    h.update(plan_id.as_bytes());
    format!("res-{}", &h.finalize().to_hex()[..16])
}

fn acked_seq(state: &State) -> Result<u64> {
    let v: Option<String> = state
        .db
        .query_row("SELECT value FROM meta WHERE key = ?1", [ACKED_SEQ], |r| r.get(0))
        .optional()
        .ctx("outbox: acked head")?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Signs `payload` (with id, key, chain and time filled in here) and
/// inserts it unless a report with that id exists. Returns the id.
fn enqueue(state: &State, mut payload: ReportPayload) -> Result<String> {
    let vk = state.key().verifying_key();
    payload.agent_key = hex::encode(vk.as_bytes());
    payload.agent_keyid = key_id(&vk);
    let since = state.audit_since(acked_seq(state)?, MAX_AUDIT_SINCE)?;
    payload.chain = match since.last() {
        Some(e) => ChainPoint { seq: e.seq, head: e.hash },
        None => state.audit_head()?.map_or(ChainPoint { seq: 0, head: rewind_shared::audit::GENESIS }, |e| {
            ChainPoint { seq: e.seq, head: e.hash }
        }),
    };
    payload.audit_since = since;
    payload.time = now();
    let signed = SignedReport::sign(&payload, state.key());
    let bytes = signed.payload_bytes().expect("just encoded");
    state
        .db
        .execute(
            "INSERT OR IGNORE INTO outbox(id, plan_id, status, created, payload, signature, chain_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                payload.id,
                payload.plan,
                payload.status.as_str(),
                payload.time,
                bytes,
                signed.signature,
                payload.chain.seq as i64
            ],
        )
        .ctx("outbox: enqueue")?;
    Ok(payload.id)
}

fn blank(id: String, status: ReportStatus, state_name: &str) -> ReportPayload {
    ReportPayload {
        format: REPORT_FORMAT.into(),
        id,
        agent_key: String::new(),
        agent_keyid: String::new(),
        plan: String::new(),
        signed_plan: None,
        bundle: None,
        product: String::new(),
        release: String::new(),
        sequence: 0,
        kind: None,
        status,
        state: state_name.into(),
        targets: Vec::new(),
        refusal: None,
        message: String::new(),
        millis: None,
        failed_step: None,
        chain: ChainPoint { seq: 0, head: rewind_shared::audit::GENESIS },
        audit_since: Vec::new(),
        time: String::new(),
    }
}

/// Enqueues the signed report of a finished plan (idempotent by plan).
/// Call it inside the transaction that finishes the plan, after its last
/// audit entry, so the report carries that entry as its head.
///
/// # Errors
/// When `agent.db` cannot be read or written.
pub fn enqueue_finished(state: &State, plan: &Plan, final_state: &str, report: &Report) -> Result<String> {
    let status = ReportStatus::parse(&report.status).unwrap_or(ReportStatus::Failed);
    let origin = origin_of(state, &plan.id)?;
    let mut p = blank(report_id(state, &plan.id), status, final_state);
    p.plan.clone_from(&plan.id);
    p.signed_plan = origin.as_ref().map(|o| o.signed_plan.clone());
    p.bundle = origin.map(|o| o.bundle);
    p.product.clone_from(&plan.product);
    p.release.clone_from(&plan.release);
    p.sequence = plan.sequence;
    p.kind = Some(match plan.kind {
        PlanKind::Apply => bundle::PlanKind::Apply,
        PlanKind::Rollback => bundle::PlanKind::Rollback,
    });
    p.targets = report
        .targets
        .iter()
        .map(|t| TargetResult {
            name: t.name.clone(),
            data_before: t.before.clone(),
            data_after: t.after.clone(),
            schema_before: t.schema_before.clone(),
            schema_after: t.schema_after.clone(),
            snapshot: t.snapshot.clone(),
            proof: t.proof.clone(),
            migrations: t.migrations.clone(),
        })
        .collect();
    p.message.clone_from(&report.message);
    p.failed_step.clone_from(&report.failed_step);
    p.millis =
        Some(report.steps.iter().map(|s| u64::try_from(s.millis).unwrap_or(u64::MAX)).fold(0, u64::saturating_add));
    enqueue(state, p)
}

/// Enqueues a `refused` report for a plan refused before it ran (`plan` is
/// `None` when it could not even be read). Never fails the refusal: an
/// error here is logged.
pub fn report_refusal(state: &State, plan: Option<&bundle::Plan>, refusal: &Refusal) {
    let mut p = blank(new_id("res"), ReportStatus::Refused, "refused");
    if let Some(plan) = plan {
        p.plan.clone_from(&plan.id);
        p.signed_plan = Some(plan.id.clone());
        p.bundle = Some(plan.bundle.clone());
        p.product.clone_from(&plan.product);
        p.release.clone_from(&plan.release);
        p.sequence = plan.sequence;
        p.kind = Some(plan.kind);
    }
    p.refusal = Some(RefusalInfo { code: refusal.code.to_string(), reason: refusal.message.clone() });
    p.message = format!("plan refused ({}): {}", refusal.code, refusal.message);
    if let Err(e) = enqueue(state, p) {
        tracing::error!("could not queue the refusal report: {e}");
    }
}

fn row_to_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxItem> {
    let payload: Vec<u8> = r.get(4)?;
    let delivered_at: Option<String> = r.get(7)?;
    let signature: String = r.get(5)?;
    Ok(OutboxItem {
        id: r.get(0)?,
        plan: r.get(1)?,
        status: r.get(2)?,
        created: r.get(3)?,
        chain_seq: r.get::<_, i64>(6)? as u64,
        delivered: delivered_at.is_some(),
        delivered_at,
        attempts: r.get::<_, i64>(8)? as u64,
        report: SignedReport {
            payload_type: rewind_shared::report::REPORT_TYPE.into(),
            payload: hex::encode(&payload),
            keyid: String::new(),
            signature,
        },
    })
}

fn list(state: &State, pending_only: bool) -> Result<Vec<OutboxItem>> {
    let sql = format!(
        "SELECT id, plan_id, status, created, payload, signature, chain_seq, delivered_at, attempts FROM outbox {} ORDER BY created, rowid",
        if pending_only { "WHERE delivered_at IS NULL" } else { "" }
    );
    let mut stmt = state.db.prepare(&sql).ctx("outbox read")?;
    let keyid = key_id(&state.key().verifying_key());
    let mut items: Vec<OutboxItem> =
        stmt.query_map([], row_to_item).ctx("outbox read")?.collect::<rusqlite::Result<_>>().ctx("outbox read")?;
    for i in &mut items {
        i.report.keyid.clone_from(&keyid);
    }
    Ok(items)
}

/// Reports not yet acknowledged, oldest first: what the transport sends.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn pending(state: &State) -> Result<Vec<OutboxItem>> {
    list(state, true)
}

/// Every report, delivered or not, oldest first.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn all(state: &State) -> Result<Vec<OutboxItem>> {
    list(state, false)
}

/// Counts a send attempt (for operators: a report that keeps failing).
///
/// # Errors
/// When `agent.db` cannot be written.
pub fn mark_attempt(state: &State, id: &str) -> Result<()> {
    state.db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1", [id]).ctx("outbox: attempt")?;
    Ok(())
}

/// Records the coordinator's ack of report `id`. Idempotent: a second ack
/// of the same id changes nothing. Later reports then carry only the audit
/// entries after this report's head.
///
/// # Errors
/// When `agent.db` cannot be written.
pub fn mark_delivered(state: &State, id: &str) -> Result<Ack> {
    let tx = state.db.unchecked_transaction().ctx("outbox: ack")?;
    let row: Option<(Option<String>, i64)> = tx
        .query_row("SELECT delivered_at, chain_seq FROM outbox WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .ctx("outbox: ack")?;
    let ack = match row {
        None => Ack::Unknown,
        Some((Some(_), _)) => Ack::AlreadyDelivered,
        Some((None, seq)) => {
            tx.execute("UPDATE outbox SET delivered_at = ?1 WHERE id = ?2", params![now(), id]).ctx("outbox: ack")?;
            let seq = (seq as u64).max(acked_seq(state)?);
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![ACKED_SEQ, seq.to_string()],
            )
            .ctx("outbox: ack")?;
            Ack::Delivered
        }
    };
    tx.commit().ctx("outbox: ack")?;
    Ok(ack)
}

/// Checks an id given on the command line and acks it.
///
/// # Errors
/// [`Error::BadInput`] when no report has this id.
pub fn ack_by_hand(state: &State, id: &str) -> Result<Ack> {
    match mark_delivered(state, id)? {
        Ack::Unknown => Err(Error::BadInput(format!(
            "no report {id} in the outbox of {}; list them with `rewind-agent outbox`",
            state.root.display()
        ))),
        a => Ok(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn plan(id: &str) -> Plan {
        Plan {
            id: id.into(),
            kind: PlanKind::Apply,
            product: "notes".into(),
            release: "1.0".into(),
            sequence: 1,
            from: None,
            targets: BTreeMap::new(),
            migrations: vec![],
            flags: vec![],
            flags_before: BTreeMap::new(),
            checks: vec![],
            baseline: BTreeMap::new(),
            apply_plan: None,
            keeps_release: false,
        }
    }

    fn report(status: &str) -> Report {
        Report {
            status: status.into(),
            product: "notes".into(),
            release: "1.0".into(),
            sequence: 1,
            plan: "p".into(),
            targets: vec![crate::plan::TargetReport {
                name: "notes".into(),
                before: Some("b3:aa".into()),
                ..Default::default()
            }],
            flags: BTreeMap::new(),
            checks: vec![],
            steps: vec![],
            error: None,
            failed_step: None,
            message: "done".into(),
        }
    }

    #[test]
    fn enqueue_is_idempotent_per_plan_and_ack_is_idempotent_per_id() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path()).unwrap();
        st.audit("x", &serde_json::json!({})).unwrap();
        let a = enqueue_finished(&st, &plan("plan-a"), "applied", &report("applied")).unwrap();
        let again = enqueue_finished(&st, &plan("plan-a"), "applied", &report("applied")).unwrap();
        assert_eq!(a, again);
        assert_eq!(pending(&st).unwrap().len(), 1);
        let item = &pending(&st).unwrap()[0];
        let p = item.report.verify(&st.key().verifying_key()).unwrap();
        assert_eq!((p.status, p.chain.seq, p.audit_since.len()), (ReportStatus::Applied, 1, 1));
        assert_eq!(p.targets[0].data_before.as_deref(), Some("b3:aa"));

        assert_eq!(mark_delivered(&st, &a).unwrap(), Ack::Delivered);
        assert_eq!(mark_delivered(&st, &a).unwrap(), Ack::AlreadyDelivered);
        assert_eq!(mark_delivered(&st, "res-nope").unwrap(), Ack::Unknown);
        assert!(pending(&st).unwrap().is_empty());
        assert_eq!(all(&st).unwrap().len(), 1);

        // The next report carries only entries after the acked head, and
        // the coordinator's continuity check accepts it.
        st.audit("y", &serde_json::json!({})).unwrap();
        st.audit("z", &serde_json::json!({})).unwrap();
        enqueue_finished(&st, &plan("plan-b"), "reverted", &report("failed")).unwrap();
        let q = pending(&st).unwrap()[0].report.verify(&st.key().verifying_key()).unwrap();
        assert_eq!((q.status, q.state.as_str(), q.chain.seq), (ReportStatus::Failed, "reverted", 3));
        assert_eq!(q.audit_since.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        let known = p.chain;
        assert!(rewind_shared::report::ChainContinuity::check(Some(known), &q, &st.key().verifying_key()).is_ok());

        // Survives a restart.
        drop(st);
        let st = State::open(dir.path()).unwrap();
        assert_eq!(pending(&st).unwrap().len(), 1);
        assert_eq!(mark_delivered(&st, &a).unwrap(), Ack::AlreadyDelivered);
    }

    #[test]
    fn a_version_1_state_dir_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path()).unwrap();
        st.audit("before-upgrade", &serde_json::json!({})).unwrap();
        // What an agent of schema version 1 left behind.
        st.db
            .execute_batch(
                "DROP TABLE outbox; DROP TABLE plan_origin; UPDATE meta SET value = '1' WHERE key = 'schema_version';",
            )
            .unwrap();
        drop(st);
        let st = State::open(dir.path()).unwrap();
        let v: String =
            st.db.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "2");
        assert_eq!(st.verify_audit().unwrap().0, 1, "the audit chain is kept");
        enqueue_finished(&st, &plan("plan-c"), "applied", &report("applied")).unwrap();
        assert_eq!(pending(&st).unwrap().len(), 1);
    }
}
