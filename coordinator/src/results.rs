//! Ingesting agent results: verify the signature with the key bound at
//! enrollment, check audit chain continuity against the agent's last
//! accepted point, store idempotently by report id, and answer with the id
//! to acknowledge. Only the signed payload is trusted; the unsigned fields
//! of the wire message are hints.
//!
//! Guarantees: a result is acknowledged only once it is stored (or was
//! stored before), so the agent's outbox keeps it until then; delivering the
//! same id again changes nothing; a result whose signature does not verify
//! is never stored nor acknowledged and raises a `bad_signature` alarm; a
//! gap or fork in the audit chain is stored with the result and raises a
//! `chain_gap` / `chain_fork` alarm.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use rewind_shared::fleet::AgentId;
use rewind_shared::report::{
    ChainContinuity, ChainPoint, Continuity, ReportPayload, ReportToVerify, public_key_from_hex, verify_reports,
};
use rewind_shared::wire::v1;
use tokio::sync::{mpsc, oneshot};

use crate::App;
use crate::error::{Error, Result};
use crate::store::{AgentRecord, ResultAudit, StoredResult};

/// What became of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored now (or before); acknowledge `id`.
    Stored { id: String, new: bool, continuity: &'static str },
    /// Refused; not acknowledged.
    Refused(String),
}

/// Most results the ingestor takes in one batch. A batch's store
/// transaction has a fixed part (its commit's fsync, the chain-point read,
/// the audit head): 512 gave 17,100-19,900 results/s into SQLite at 1,000
/// agents, 2048 gives 20,700-25,500/s, 4096 no more (docs/benchmarks.md).
pub const MAX_BATCH: usize = 2048;

/// One result waiting to be ingested, and where its outcome goes.
struct Job {
    agent: AgentId,
    result: v1::Result,
    reply: oneshot::Sender<Result<Ingested>>,
}

/// The coordinator's result ingestor: every stream hands its results to one
/// task, which takes whatever is waiting (up to [`MAX_BATCH`]) as a batch.
/// Three stages, so one batch is verified while the one before it is
/// prepared and the one before that is written: (1) one read of the
/// agents' keys, the signatures verified on blocking threads (split over
/// the cores when the batch is large); (2) one read of the agents' chain
/// points, overlaid with the points of batches handed to (3) and not yet
/// written ([`Pending`]), continuity judged in order, the audit entries'
/// parameters built; (3) one store transaction for the results and their
/// audit entries. A failed write fails the batches prepared against it
/// (their results come again). The store's cost per result falls as the
/// load rises, while a lone result still goes through at once. Started on
/// first use; it ends with the [`App`].
#[derive(Default)]
pub struct Ingestor(OnceLock<mpsc::Sender<Job>>);

impl Ingestor {
    fn sender(&self, app: &Arc<App>) -> &mpsc::Sender<Job> {
        self.0.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
            tokio::spawn(run(Arc::downgrade(app), rx));
            tx
        })
    }
}

/// Verifies and stores one result from `agent`; answers once it is stored
/// (or refused).
///
/// # Errors
/// When the store fails (the result is then not acknowledged and comes
/// again).
pub async fn ingest(app: &Arc<App>, agent: &AgentId, r: v1::Result) -> Result<Ingested> {
    submit(app, agent, r).await?.await
}

/// A result's outcome, once the ingestor got to it.
pub type Outcome = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Ingested>> + Send>>;

/// Hands one result of `agent` to the ingestor and returns its outcome to
/// await: results submitted one after another are ingested in that order,
/// several at a time.
///
/// # Errors
/// When the ingestor stopped (the coordinator is shutting down).
pub async fn submit(app: &Arc<App>, agent: &AgentId, r: v1::Result) -> Result<Outcome> {
    let stopped = || Error::Store("the result ingestor stopped (the coordinator is shutting down)".into());
    let (reply, answer) = oneshot::channel();
    app.ingestor.sender(app).send(Job { agent: agent.clone(), result: r, reply }).await.map_err(|_| stopped())?;
    Ok(Box::pin(async move { answer.await.map_err(|_| stopped())? }))
}

async fn run(app: Weak<App>, mut rx: mpsc::Receiver<Job>) {
    // Three stages: while one batch is written, the next one is prepared
    // and the one after it verified.
    let (verified_tx, verified_rx) = mpsc::channel(1);
    let (prepared_tx, prepared_rx) = mpsc::channel(1);
    let pending = Arc::new(Pending::default());
    tokio::spawn(prepare_stage(app.clone(), verified_rx, prepared_tx, Arc::clone(&pending)));
    tokio::spawn(write_stage(app.clone(), prepared_rx, pending));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut keys = KeyCache::default();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(app) = app.upgrade() else { return };
        let jobs = std::mem::take(&mut batch);
        let (replies, items): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.reply, (j.agent, j.result))).unzip();
        match verify_batch(&app, &mut keys, items).await {
            Ok(verified) => {
                if verified_tx.send((replies, verified)).await.is_err() {
                    return;
                }
            }
            Err(e) => answer(replies, Err(e)),
        }
    }
}

/// A verified batch and where its outcomes go.
type Verified = (Vec<oneshot::Sender<Result<Ingested>>>, Vec<(AgentId, v1::Result, Checked)>);

/// The chain points and results that batches handed to the write stage
/// will store, not all written yet: the prepare stage judges the next batch
/// against them (the store may not have them yet), the write stage drops a
/// batch's once it is committed — or all of them, and every batch prepared
/// so far, when a write fails.
#[derive(Default)]
struct Pending {
    /// What batches handed to the write stage will store.
    ahead: std::sync::Mutex<Ahead>,
    /// Batches the prepare stage has started (numbered from 1).
    started: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Ahead {
    /// Agent -> (the batch that advances it, its chain point after it).
    points: HashMap<AgentId, (u64, ChainPoint)>,
    /// (agent, result id) -> (the batch that stores it, its continuity): a
    /// resend that comes before that batch is written is no new result.
    results: HashMap<ResultKey, (u64, &'static str)>,
}

/// A result of one agent: (agent, result id).
type ResultKey = (AgentId, String);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ahead> {
        self.ahead.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn prepare_stage(
    app: Weak<App>,
    mut rx: mpsc::Receiver<Verified>,
    tx: mpsc::Sender<(Vec<oneshot::Sender<Result<Ingested>>>, Prepared)>,
    pending: Arc<Pending>,
) {
    while let Some((replies, verified)) = rx.recv().await {
        let Some(app) = app.upgrade() else { return };
        match prepare_batch(&app, verified, &pending).await {
            Ok(prepared) => {
                if tx.send((replies, prepared)).await.is_err() {
                    return;
                }
            }
            Err(e) => answer(replies, Err(e)),
        }
    }
}

async fn write_stage(
    app: Weak<App>,
    mut rx: mpsc::Receiver<(Vec<oneshot::Sender<Result<Ingested>>>, Prepared)>,
    pending: Arc<Pending>,
) {
    // Batches up to this one were prepared against chain points of a write
    // that failed: they fail too (their results come again and are judged
    // against what the store holds).
    let mut failed_through = 0;
    while let Some((replies, prepared)) = rx.recv().await {
        let Some(app) = app.upgrade() else { return };
        if prepared.batch <= failed_through {
            answer(replies, Err(Error::Store("an earlier batch of results failed to store; they come again".into())));
            continue;
        }
        let batch = prepared.batch;
        let outcome = write_batch(&app, prepared).await;
        match &outcome {
            Ok(_) => {
                let mut ahead = pending.lock();
                ahead.points.retain(|_, (b, _)| *b != batch);
                ahead.results.retain(|_, (b, _)| *b != batch);
            }
            Err(_) => {
                let mut ahead = pending.lock();
                failed_through = pending.started.load(std::sync::atomic::Ordering::SeqCst);
                ahead.points.clear();
                ahead.results.clear();
            }
        }
        answer(replies, outcome);
    }
}

fn answer(replies: Vec<oneshot::Sender<Result<Ingested>>>, outcomes: Result<Vec<Ingested>>) {
    match outcomes {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(Error::Store(e.to_string())));
            }
        }
    }
}

/// One result after its signature check (with the key that checked it).
enum Checked {
    Ok(Box<ReportPayload>, ed25519_dalek::VerifyingKey),
    Refused(String),
}

/// Below this many results a batch is verified on one thread.
const PARALLEL_FROM: usize = 64;

/// Agents' enrolled keys, decoded (a point decompression each) once and
/// kept by their text, so a re-enrolled agent's new key is a new entry.
#[derive(Default)]
struct KeyCache(HashMap<String, std::result::Result<ed25519_dalek::VerifyingKey, String>>);

/// Keys kept at most; past this the cache starts again.
const MAX_CACHED_KEYS: usize = 200_000;

impl KeyCache {
    fn get(&mut self, text: &str) -> std::result::Result<ed25519_dalek::VerifyingKey, String> {
        if let Some(k) = self.0.get(text) {
            return k.clone();
        }
        if self.0.len() >= MAX_CACHED_KEYS {
            self.0.clear();
        }
        let k = public_key_from_hex(text).map_err(|e| e.to_string());
        self.0.insert(text.to_string(), k.clone());
        k
    }
}

/// Checks every signature of a batch against the agents' enrolled keys.
/// Ed25519 verification is CPU work: it runs on blocking threads (the
/// batch split over the cores when it is large), each part verified as one
/// Ed25519 batch ([`verify_reports`]).
async fn verify_batch(
    app: &App,
    cache: &mut KeyCache,
    items: Vec<(AgentId, v1::Result)>,
) -> Result<Vec<(AgentId, v1::Result, Checked)>> {
    let mut ids: Vec<AgentId> = items.iter().map(|(a, _)| a.clone()).collect();
    ids.sort();
    ids.dedup();
    let keys: Arc<HashMap<AgentId, std::result::Result<ed25519_dalek::VerifyingKey, String>>> =
        Arc::new(app.store.agents_by_id(ids).await?.into_iter().map(|a| (a.id, cache.get(&a.audit_key))).collect());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let parts = if items.len() < PARALLEL_FROM { 1 } else { cores.min(items.len() / (PARALLEL_FROM / 2)) };
    let size = items.len().div_ceil(parts.max(1));
    let mut items = items.into_iter();
    let mut tasks = Vec::with_capacity(parts);
    loop {
        let part: Vec<_> = items.by_ref().take(size).collect();
        if part.is_empty() {
            break;
        }
        let keys = Arc::clone(&keys);
        tasks.push(tokio::task::spawn_blocking(move || check_all(part, &keys)));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.map_err(|e| Error::Store(format!("verifying results: {e}")))?);
    }
    Ok(out)
}

/// A batch judged and ready to store.
struct Prepared {
    /// Numbered by the prepare stage, from 1.
    batch: u64,
    /// The outcomes known already (refusals, resends of stored results);
    /// the rest come from the write.
    outcomes: Vec<Option<Ingested>>,
    to_store: Vec<(StoredResult, Option<ChainPoint>)>,
    /// Per result to store: where its outcome goes, its id and agent, its
    /// continuity and its audit entry's parameters (made here, from the
    /// payload parsed when the signature was checked).
    stored: Vec<(usize, String, AgentId, &'static str, serde_json::Value)>,
    /// Chain gaps and forks found, raised once the batch is stored (a
    /// batch that fails to store comes again and is judged again).
    alarms: Vec<(AgentId, &'static str, String)>,
}

/// Judges a verified batch, in order (an agent's results are judged for
/// chain continuity one after another, as they came, against its chain
/// point: the one a batch not yet written will store, else the store's).
async fn prepare_batch(app: &App, items: Vec<(AgentId, v1::Result, Checked)>, pending: &Pending) -> Result<Prepared> {
    let batch = pending.started.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let mut ids: Vec<AgentId> = items.iter().map(|(a, _, _)| a.clone()).collect();
    ids.sort();
    ids.dedup();
    // Taken before the store is read: a point or result dropped from
    // `pending` after this is in the store by then.
    let (ahead, mut seen): (HashMap<AgentId, ChainPoint>, HashMap<ResultKey, &'static str>) = {
        let pending = pending.lock();
        let points = pending
            .points
            .iter()
            .filter(|(a, _)| ids.binary_search(a).is_ok())
            .map(|(a, (_, p))| (a.clone(), *p))
            .collect();
        let results = items
            .iter()
            .filter_map(|(a, r, _)| {
                let key = (a.clone(), r.id.clone());
                pending.results.get(&key).map(|(_, c)| (key, *c))
            })
            .collect();
        (points, results)
    };
    let mut records: HashMap<AgentId, AgentRecord> =
        app.store.agents_by_id(ids).await?.into_iter().map(|a| (a.id.clone(), a)).collect();
    // Resends of results stored before are not judged again: against the
    // agent's newer chain point an older result would look like a fork
    // (e.g. two results stored, then the stream broke before their acks).
    let verified: Vec<(AgentId, String)> = items
        .iter()
        .filter(|(_, _, c)| matches!(c, Checked::Ok(..)))
        .map(|(a, r, _)| (a.clone(), r.id.clone()))
        .collect();
    let before = if verified.is_empty() { HashMap::new() } else { app.store.stored_continuity(verified).await? };
    for (agent, point) in ahead {
        if let Some(r) = records.get_mut(&agent) {
            r.chain = Some(point);
        }
    }
    let mut outcomes: Vec<Option<Ingested>> = vec![None; items.len()];
    let mut to_store: Vec<(StoredResult, Option<ChainPoint>)> = Vec::new();
    let mut stored = Vec::new();
    let mut advanced: HashMap<AgentId, ChainPoint> = HashMap::new();
    // This batch's new results, for the batches prepared before it is written.
    let mut fresh = Vec::new();
    let mut alarms = Vec::new();
    for (i, (agent, r, c)) in items.into_iter().enumerate() {
        let (payload, key) = match c {
            Checked::Refused(detail) => {
                if records.contains_key(&agent) {
                    app.store.alarm(agent.clone(), "bad_signature".into(), detail.clone()).await?;
                    crate::audit::record(
                        app,
                        "alarm",
                        serde_json::json!({"agent": agent, "kind": "bad_signature", "detail": detail}),
                    )
                    .await;
                }
                outcomes[i] = Some(Ingested::Refused(detail));
                continue;
            }
            Checked::Ok(p, key) => (p, key),
        };
        // Stored before, or about to be (an earlier batch not yet written,
        // or earlier in this one): the same outcome, nothing judged again.
        let result_key = (agent.clone(), r.id.clone());
        let known = before.get(&result_key).map(|c| match c.as_str() {
            "gap" => "gap",
            "fork" => "fork",
            _ => "ok",
        });
        if let Some(continuity) = known.or_else(|| seen.get(&result_key).copied()) {
            outcomes[i] = Some(Ingested::Stored { id: r.id, new: false, continuity });
            continue;
        }
        let record = records.get_mut(&agent).expect("checked results have a record");
        let (continuity, advance) = match ChainContinuity::check(record.chain, &payload, &key) {
            Continuity::Ok { head, .. } => ("ok", Some(head)),
            Continuity::Gap { known, head, missing } => {
                let detail = format!(
                    "result {}: audit entries {}..={} missing between seq {} and {}",
                    payload.id, missing.0, missing.1, known.seq, head.seq
                );
                alarms.push((agent.clone(), "chain_gap", detail));
                ("gap", None)
            }
            Continuity::Fork { reason, .. } => {
                alarms.push((agent.clone(), "chain_fork", format!("result {}: {reason}", payload.id)));
                ("fork", None)
            }
        };
        seen.insert(result_key.clone(), continuity);
        fresh.push((result_key, continuity));
        // The agent's next result in this batch continues from here.
        if let Some(head) = advance {
            record.chain = Some(head);
            advanced.insert(agent.clone(), head);
        }
        let params = serde_json::json!({"agent": agent, "result": payload.id, "plan": payload.plan,
            "product": payload.product, "release": payload.release, "sequence": payload.sequence,
            "status": payload.status.as_str(), "continuity": continuity, "kind": payload.kind,
            "signed_plan": payload.signed_plan, "millis": payload.millis});
        stored.push((i, payload.id.clone(), agent.clone(), continuity, params));
        let ReportPayload { id, plan, signed_plan, product, release, sequence, status, .. } = *payload;
        let record = StoredResult {
            id,
            agent,
            plan,
            signed_plan,
            product,
            release,
            sequence,
            status: status.as_str().to_string(),
            continuity: continuity.to_string(),
            payload: r.report,
            signature: r.signature,
        };
        to_store.push((record, advance));
    }
    // A resend of a stored result advances nothing when written, but it is
    // judged ok only at the point it stored then, which is where the agent's
    // point still is: the overlay entry is the store's point.
    let mut ahead = pending.lock();
    ahead.points.extend(advanced.into_iter().map(|(a, p)| (a, (batch, p))));
    ahead.results.extend(fresh.into_iter().map(|(k, c)| (k, (batch, c))));
    drop(ahead);
    Ok(Prepared { batch, outcomes, to_store, stored, alarms })
}

/// Stores a prepared batch: the results and their audit entries in one
/// transaction; then the new ones' events.
async fn write_batch(app: &App, prepared: Prepared) -> Result<Vec<Ingested>> {
    let Prepared { mut outcomes, to_store, stored, alarms, .. } = prepared;
    let audit = ResultAudit { params: stored.iter().map(|(.., p)| p.to_string()).collect(), key: app.key.clone() };
    let (news, _) = app.store.store_results(to_store, Some(audit)).await?;
    for (agent, kind, detail) in alarms {
        app.store.alarm(agent.clone(), kind.into(), detail.clone()).await?;
        crate::audit::record(app, "alarm", serde_json::json!({"agent": agent, "kind": kind, "detail": detail})).await;
    }
    let mut events = Vec::new();
    for ((i, id, agent, continuity, params), new) in stored.into_iter().zip(news) {
        if new {
            events.push(("result".to_string(), params));
            if continuity != "ok" {
                tracing::error!(agent = %agent, result = %id, continuity, "integrity alarm: audit chain discontinuity");
            }
        }
        outcomes[i] = Some(Ingested::Stored { id, new, continuity });
    }
    crate::audit::publish(app, events);
    Ok(outcomes.into_iter().map(|o| o.expect("every result has an outcome")).collect())
}

/// The signature checks of results against the keys bound at enrollment,
/// in order: the results of enrolled agents with usable keys as one
/// Ed25519 batch.
fn check_all(
    part: Vec<(AgentId, v1::Result)>,
    keys: &HashMap<AgentId, std::result::Result<ed25519_dalek::VerifyingKey, String>>,
) -> Vec<(AgentId, v1::Result, Checked)> {
    let mut checked: Vec<Option<Checked>> = Vec::with_capacity(part.len());
    let mut signed = Vec::new();
    for (i, (agent, r)) in part.iter().enumerate() {
        match keys.get(agent) {
            None => checked.push(Some(Checked::Refused(format!("result {}: agent {agent} is not enrolled", r.id)))),
            Some(Err(e)) => checked
                .push(Some(Checked::Refused(format!("agent {agent} has no usable audit key ({e}); re-enroll it")))),
            Some(Ok(k)) => {
                checked.push(None);
                signed.push((i, k));
            }
        }
    }
    let batch: Vec<ReportToVerify<'_>> =
        signed.iter().map(|(i, k)| (part[*i].1.report.as_slice(), part[*i].1.signature.as_slice(), *k)).collect();
    for ((i, key), verdict) in signed.iter().zip(verify_reports(&batch)) {
        let r = &part[*i].1;
        checked[*i] = Some(match verdict {
            Ok(p) if p.id == r.id => Checked::Ok(Box::new(p), **key),
            Ok(p) => Checked::Refused(format!("result {} carries a signed report with id {}", r.id, p.id)),
            Err(e) => Checked::Refused(format!("result {}: {e}", r.id)),
        });
    }
    part.into_iter().zip(checked).map(|((a, r), c)| (a, r, c.expect("every result is checked"))).collect()
}

/// Checks the audit head an agent announces in its hello against the point
/// of its newest verified result: a head below it, or the same sequence
/// with another hash, means the agent's state was restored from an older
/// copy or rewritten — a `chain_fork` alarm. Returns the alarm's text.
///
/// # Errors
/// When the store fails.
pub async fn check_hello_head(
    app: &App,
    agent: &AgentId,
    head: &rewind_shared::fleet::AuditHead,
) -> Result<Option<String>> {
    let Some(known) = app.store.agent(agent.clone()).await?.and_then(|a| a.chain) else {
        return Ok(None);
    };
    let detail = if head.seq < known.seq {
        format!(
            "hello announces audit seq {} but a verified result already reached seq {} (state restored from an older copy?)",
            head.seq, known.seq
        )
    } else if head.seq == known.seq && head.hash != Some(known.head) {
        format!("hello announces another audit head at seq {} than the verified result ({})", head.seq, known.head)
    } else {
        return Ok(None);
    };
    app.store.alarm(agent.clone(), "chain_fork".into(), detail.clone()).await?;
    crate::audit::record(app, "alarm", serde_json::json!({"agent": agent, "kind": "chain_fork", "detail": detail}))
        .await;
    Ok(Some(detail))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A coordinator in a fresh directory with one enrolled agent and that
    /// agent's signing key.
    async fn app_with_agent() -> (tempfile::TempDir, ed25519_dalek::SigningKey, Arc<App>, AgentId) {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let app = Arc::new(crate::testing::app(dir.path()).await);
        let agent = crate::testing::agent("agt-1", hex::encode(key.verifying_key().as_bytes()), Default::default());
        let id = agent.id.clone();
        app.store.insert_agent(agent).await.unwrap();
        (dir, key, app, id)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_submitted_without_waiting_are_judged_in_order_across_batches() {
        // More results of one agent than a batch holds, each carrying the
        // next audit entry of its chain, all handed over before the first
        // outcome is awaited: they go through the stages in several
        // batches, and each must be judged against the chain point the
        // previous one stored (a stale point would make it a gap).
        let (_dir, key, app, id) = app_with_agent().await;
        let n = u32::try_from(MAX_BATCH).unwrap() + 600;
        let mut outcomes = Vec::new();
        for r in chain_of_results(&key, n) {
            outcomes.push(submit(&app, &id, r).await.unwrap());
        }
        for (i, o) in outcomes.into_iter().enumerate() {
            let o = o.await.unwrap();
            assert_eq!(o, Ingested::Stored { id: format!("res-{i}"), new: true, continuity: "ok" }, "result {i}");
        }
        assert_eq!(app.store.agent(id.clone()).await.unwrap().unwrap().chain.unwrap().seq, u64::from(n));
        assert_eq!(app.store.results(id).await.unwrap().len(), n as usize);
    }

    /// `n` results of the agent with `key`, each carrying the next entry of
    /// its audit chain (ids `res-0`...).
    fn chain_of_results(key: &ed25519_dalek::SigningKey, n: u32) -> Vec<v1::Result> {
        let mut prev: Option<rewind_shared::audit::AuditEntry> = None;
        let mut out = Vec::new();
        for i in 0..n {
            let e = rewind_shared::audit::AuditEntry::new_signed(
                prev.as_ref(),
                crate::now(),
                "plan.finish",
                "{}".into(),
                key,
            );
            let payload: ReportPayload = serde_json::from_value(serde_json::json!({
                "format": "rewind-report-1", "id": format!("res-{i}"),
                "agent_key": hex::encode(key.verifying_key().as_bytes()),
                "agent_keyid": rewind_shared::trust::key_id(&key.verifying_key()),
                "plan": format!("plan-{i}"), "product": "notes", "release": "1", "sequence": 1,
                "kind": "apply", "status": "applied", "state": "applied", "targets": [], "message": "",
                "chain": {"seq": e.seq, "head": e.hash}, "audit_since": [e.clone()], "time": crate::now(),
            }))
            .unwrap();
            let signed = rewind_shared::report::SignedReport::sign(&payload, key);
            out.push(v1::Result {
                id: payload.id.clone(),
                report: signed.payload_bytes().unwrap(),
                signature: hex::decode(&signed.signature).unwrap(),
                ..Default::default()
            });
            prev = Some(e);
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_write_the_results_come_again_and_are_judged_against_the_store() {
        // Batches prepared against the chain points of a write that failed
        // must not leave those points behind: the resent results would be
        // judged against points never stored (a false fork).
        let (dir, key, app, id) = app_with_agent().await;
        let results = chain_of_results(&key, 1200);
        let submit_all = |rs: &[v1::Result]| {
            let (app, id, rs) = (Arc::clone(&app), id.clone(), rs.to_vec());
            async move {
                let mut outcomes = Vec::new();
                for r in rs {
                    outcomes.push(submit(&app, &id, r).await.unwrap());
                }
                let mut out = Vec::new();
                for o in outcomes {
                    out.push(o.await);
                }
                out
            }
        };
        for o in submit_all(&results[..100]).await {
            assert!(matches!(o, Ok(Ingested::Stored { new: true, continuity: "ok", .. })), "{o:?}");
        }
        // The results table gone: every write fails, whatever was prepared.
        let raw = rusqlite::Connection::open(dir.path().join("c.db")).unwrap();
        raw.execute_batch("ALTER TABLE results RENAME TO results_away").unwrap();
        for o in submit_all(&results[100..]).await {
            assert!(o.is_err(), "{o:?}");
        }
        raw.execute_batch("ALTER TABLE results_away RENAME TO results").unwrap();
        // They come again: judged against the store's point (seq 100).
        for (i, o) in submit_all(&results[100..]).await.into_iter().enumerate() {
            let want = Ingested::Stored { id: format!("res-{}", i + 100), new: true, continuity: "ok" };
            assert_eq!(o.unwrap(), want);
        }
        assert_eq!(app.store.agent(id.clone()).await.unwrap().unwrap().chain.unwrap().seq, 1200);
        assert_eq!(app.store.alarms(id).await.unwrap(), vec![], "no gap or fork: the chain is whole");
    }

    #[tokio::test]
    async fn a_resent_result_is_acknowledged_again_without_being_judged_against_newer_ones() {
        // Two results stored, then the stream broke before their acks: the
        // agent sends both again on its next stream. The first is older
        // than the agent's chain point now, which is no fork.
        let (_dir, key, app, id) = app_with_agent().await;
        let results = chain_of_results(&key, 2);
        for (i, r) in results.iter().enumerate() {
            let want = Ingested::Stored { id: format!("res-{i}"), new: true, continuity: "ok" };
            assert_eq!(ingest(&app, &id, r.clone()).await.unwrap(), want);
        }
        for (i, r) in results.into_iter().enumerate() {
            let want = Ingested::Stored { id: format!("res-{i}"), new: false, continuity: "ok" };
            assert_eq!(ingest(&app, &id, r).await.unwrap(), want);
        }
        assert_eq!(app.store.alarms(id.clone()).await.unwrap(), vec![]);
        assert_eq!(app.store.results(id).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_resend_before_its_first_copy_is_written_is_not_judged_again() {
        // The stream broke right after two results were handed over; the
        // agent reconnected and sent both again at once. Their first copies
        // are in a batch not yet written (or earlier in the same batch):
        // judged against the chain point the first copies advance to, the
        // older one would look like a fork.
        let (_dir, key, app, id) = app_with_agent().await;
        let results = chain_of_results(&key, 2);
        let keys = HashMap::from([(id.clone(), Ok(key.verifying_key()))]);
        let checked = |rs: &[v1::Result]| check_all(rs.iter().map(|r| (id.clone(), r.clone())).collect(), &keys);
        let ok = |i: usize, new: bool| Some(Ingested::Stored { id: format!("res-{i}"), new, continuity: "ok" });

        // Across batches: the second is prepared before the first is written.
        let pending = Pending::default();
        let first = prepare_batch(&app, checked(&results), &pending).await.unwrap();
        assert_eq!(first.to_store.len(), 2);
        let again = prepare_batch(&app, checked(&results), &pending).await.unwrap();
        assert_eq!(again.outcomes, vec![ok(0, false), ok(1, false)]);
        assert!(again.to_store.is_empty() && again.alarms.is_empty(), "{:?}", again.alarms);

        // Within one batch.
        let pending = Pending::default();
        let twice = [results.clone(), results].concat();
        let one = prepare_batch(&app, checked(&twice), &pending).await.unwrap();
        assert_eq!(one.outcomes, vec![None, None, ok(0, false), ok(1, false)]);
        assert_eq!(one.to_store.len(), 2);
        assert!(one.alarms.is_empty(), "{:?}", one.alarms);
        let outcomes = write_batch(&app, one).await.unwrap();
        assert_eq!(
            outcomes,
            vec![ok(0, true).unwrap(), ok(1, true).unwrap(), ok(0, false).unwrap(), ok(1, false).unwrap()]
        );
        assert_eq!(app.store.alarms(id.clone()).await.unwrap(), vec![]);
        assert_eq!(app.store.results(id).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_forged_result_is_refused_not_stored_and_raises_an_alarm() {
        let (_dir, _key, app, id) = app_with_agent().await;
        let store = &app.store;
        let forged = v1::Result {
            id: "res-1".into(),
            report: br#"{"format":"rewind-report-1"}"#.to_vec(),
            signature: vec![0; 64],
            ..Default::default()
        };
        let out = ingest(&app, &id, forged).await.unwrap();
        assert!(matches!(out, Ingested::Refused(ref m) if m.contains("res-1")), "{out:?}");
        assert!(store.results(id.clone()).await.unwrap().is_empty());
        assert_eq!(store.alarms(id).await.unwrap()[0].0, "bad_signature");
    }
}
