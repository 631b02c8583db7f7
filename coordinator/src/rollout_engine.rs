//! The phased-rollout engine inside the coordinator: it owns every
//! `rewind-rollout` machine (one per `<product>@<sequence>`), feeds them
//! what happens in the fleet and carries out what they decide.
//!
//! Inputs: operator commands (through [`crate::rollouts`]), verified
//! results and integrity alarms and telemetry samples (from the event bus,
//! [`crate::events`]), agents connecting ([`crate::rollouts::send_pending`])
//! and going away (the sessions, checked every tick), digest drift against
//! the rehearsal's prediction (the agents' inventories, checked every
//! tick), and time (report timeouts and bakes, `next_deadline_ms`).
//!
//! Outputs: apply and rollback plans as store deliveries (an online agent
//! gets them at once on its stream, an offline one when it returns, until
//! the plan expires), and one audit entry per transition
//! (`rollout.<transition>`, published on the event bus).
//!
//! Persistence and restarts: after every step that decides something
//! (a plan, a transition, an audit entry) the machine is stored
//! (`Store::put_rollout`) *before* its plans are queued, so a restarted
//! coordinator never decides to send a plan twice (a step that only
//! counted an outcome is stored at the next tick: its result is in the
//! store and counted again after a crash); a plan whose decision was
//! stored but whose delivery was not (a crash in between) is queued at load.
//! Results that arrived while the engine was not listening (a restart, a
//! lagging subscriber) are read back from the store: each result counts once
//! (`processed`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use rewind_rollout::machine::SYSTEM_ACTOR;
use rewind_rollout::machine::{ApplyOutcome, Outcome, RollbackProgress};
use rewind_rollout::{Action, Event, FleetAgent, IntegrityKind, Part, Registry, RolloutMachine, RolloutSpec, State};
use rewind_shared::bundle::{Bundle, Plan, PlanKind};
use rewind_shared::fleet::{AgentId, TargetDigest};
use rewind_shared::report::{ChainPoint, Continuity, ReportPayload};
use rewind_shared::wire::v1;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

use crate::App;
use crate::error::{Error, Result};
use crate::store::{BundleRecord, Delivery, RolloutRecord};

/// How often time, connections and drift are looked at.
pub const TICK: Duration = Duration::from_millis(250);

/// The coordinator's bookkeeping next to one machine, stored with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Doc {
    pub machine: RolloutMachine,
    /// The uploaded bundle the plans come from.
    pub bundle: String,
    /// Result ids already fed to the machine.
    #[serde(default)]
    pub processed: BTreeSet<String>,
    /// Agents already reported as drifted (each raises one signal).
    #[serde(default)]
    pub drifted: BTreeSet<String>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub loaded: bool,
    pub docs: BTreeMap<String, Doc>,
    /// Predicted schema digest per target (the apply plan's `to`), per rollout.
    predicted: HashMap<String, BTreeMap<String, Option<String>>>,
    /// Signed plan id -> the part it rolls back, per rollout (from its bundle).
    parts: HashMap<String, HashMap<String, Part>>,
    /// Rollouts changed by events that decided nothing (an outcome
    /// counted, a result marked processed): stored at the next tick rather
    /// than after every result. Losing them in a crash loses nothing: the
    /// results are in the store and are counted again at load.
    dirty: BTreeSet<String>,
    /// When each plan was decided, for `rewind_plan_push_seconds`.
    decided: HashMap<(String, AgentId, &'static str), Instant>,
    last_drift_scan: Option<Instant>,
}

pub(crate) struct Engine {
    pub inner: Mutex<Inner>,
}

fn engines() -> &'static StdMutex<HashMap<usize, Arc<Engine>>> {
    static E: OnceLock<StdMutex<HashMap<usize, Arc<Engine>>>> = OnceLock::new();
    E.get_or_init(Default::default)
}

/// The engine of this coordinator (one per [`App`]).
pub(crate) fn engine(app: &App) -> Arc<Engine> {
    let key = std::ptr::from_ref(app) as usize;
    Arc::clone(
        engines()
            .lock()
            .expect("engines lock")
            .entry(key)
            .or_insert_with(|| Arc::new(Engine { inner: Mutex::new(Inner::default()) })),
    )
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(crate::now_unix_ms()).unwrap_or(0)
}

impl Inner {
    /// Reads every stored rollout: once on the leader (its machines are
    /// the truth from then on), on every call on a follower (the leader
    /// writes them; a follower only reads).
    pub async fn load(&mut self, app: &App) -> Result<()> {
        let leader = app.cluster.is_leader();
        if self.loaded && leader {
            return Ok(());
        }
        if !leader {
            self.loaded = false;
            self.docs.clear();
            self.predicted.clear();
            self.parts.clear();
        }
        for rec in app.store.rollouts().await? {
            let doc: Doc = serde_json::from_str(&rec.doc)
                .map_err(|e| Error::Store(format!("rollout {}: stored document does not parse: {e}", rec.id)))?;
            self.docs.insert(rec.id, doc);
        }
        if !leader {
            return Ok(());
        }
        self.loaded = true;
        // A decision stored without its delivery (a crash in between) is queued now.
        let ids: Vec<String> = self.docs.keys().cloned().collect();
        for id in ids {
            self.requeue_lost(app, &id).await?;
        }
        Ok(())
    }

    async fn requeue_lost(&mut self, app: &App, id: &str) -> Result<()> {
        let Some(doc) = self.docs.get(id) else { return Ok(()) };
        let deliveries = app.store.deliveries_of(doc.bundle.clone()).await?;
        let has = |agent: &AgentId, kind: &str, part: Option<&Part>| {
            deliveries.iter().any(|(d, _)| &d.agent == agent && d.kind == kind && d.part.as_ref() == part)
        };
        let sent = |p: &RollbackProgress| matches!(p, RollbackProgress::Sent { .. });
        let mut lost = Vec::new();
        for (agent, r) in doc.machine.agents() {
            if r.plan_sent_ms.is_some() && !has(agent, "apply", None) {
                lost.push((agent.clone(), "apply", None));
            }
            if sent(&r.rollback) && !has(agent, "rollback", None) {
                lost.push((agent.clone(), "rollback", None));
            }
            for (part, _) in doc.machine.partials() {
                let kind = part_kind(part);
                if r.parts.get(&part.key()).is_some_and(sent) && !has(agent, kind, Some(part)) {
                    lost.push((agent.clone(), kind, Some(part.clone())));
                }
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        let bundle = self.bundle_of(app, id).await?;
        for (a, kind, part) in &lost {
            let what = part.as_ref().map_or_else(|| kind.to_string(), |p| format!("{kind} plan of {p}"));
            tracing::warn!(rollout = id, agent = %a, "{what} decided before a restart but not queued; queuing it");
        }
        queue(app, &bundle, lost).await
    }

    /// A registry view of the machines (for the one-active rule and epochs).
    pub fn registry(&self) -> Registry {
        let machines: BTreeMap<&String, &RolloutMachine> = self.docs.iter().map(|(k, d)| (k, &d.machine)).collect();
        serde_json::from_value(json!({ "rollouts": machines })).expect("a registry of valid machines deserializes")
    }

    async fn bundle_of(&self, app: &App, id: &str) -> Result<BundleRecord> {
        let doc = self.docs.get(id).ok_or_else(|| Error::NotFound(format!("no rollout {id}")))?;
        let spec = doc.machine.spec();
        app.store
            .bundle(spec.product.clone(), Some(spec.version.clone()))
            .await?
            .filter(|b| b.id == doc.bundle)
            .ok_or_else(|| Error::Store(format!("rollout {id}: its bundle {} is no longer stored", doc.bundle)))
    }

    /// Feeds one event to one rollout and carries out what it decides.
    ///
    /// # Errors
    /// The machine's refusal (nothing changed), or a store failure.
    pub async fn handle(&mut self, app: &App, id: &str, event: Event) -> Result<()> {
        let doc = self.docs.get_mut(id).ok_or_else(|| Error::NotFound(format!("no rollout {id}")))?;
        let actions = doc.machine.handle(now_ms(), event).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        self.carry_out(app, id, actions).await
    }

    /// Stores the rollout, then queues its plans and writes its audit
    /// entries, in the machine's order.
    pub async fn carry_out(&mut self, app: &App, id: &str, actions: Vec<Action>) -> Result<()> {
        if actions.is_empty() {
            self.dirty.insert(id.to_string());
            return Ok(());
        }
        self.persist(app, id).await?;
        let sends =
            |a: &Action| matches!(a, Action::SendPlan { .. } | Action::SendRollback { .. } | Action::SendPart { .. });
        let bundle = if actions.iter().any(sends) { Some(self.bundle_of(app, id).await?) } else { None };
        let machine = self.docs[id].machine.clone();
        // Apply plans decided in one step are queued together (one store
        // transaction, then every stream at once) and audited as one entry.
        let mut plans: Vec<AgentId> = Vec::new();
        for a in actions {
            if let Action::SendPlan { agent } = a {
                plans.push(agent);
                continue;
            }
            self.plans_sent(app, id, &machine, bundle.as_ref(), &mut plans).await?;
            match a {
                Action::SendPlan { .. } => unreachable!("handled above"),
                Action::SendRollback { agents } => {
                    let b = bundle.as_ref().expect("looked up above");
                    queue(app, b, agents.iter().map(|a| (a.clone(), "rollback", None)).collect()).await?;
                    for agent in &agents {
                        self.decided.insert((id.to_string(), agent.clone(), "rollback"), Instant::now());
                    }
                    crate::rollouts::count("rewind_plans_sent_total", agents.len() as u64);
                    crate::audit::record(
                        app,
                        "rollback.sent",
                        json!({"product": machine.spec().product, "version": machine.spec().version, "rollout": id,
                               "agents": agents, "kind": "rollback", "granularity": "release"}),
                    )
                    .await;
                }
                Action::SendPart { part, agents } => {
                    let b = bundle.as_ref().expect("looked up above");
                    let kind = part_kind(&part);
                    queue(app, b, agents.iter().map(|a| (a.clone(), kind, Some(part.clone()))).collect()).await?;
                    crate::rollouts::count("rewind_plans_sent_total", agents.len() as u64);
                    crate::audit::record(
                        app,
                        if part.activate { "activation.sent" } else { "rollback.sent" },
                        json!({"product": machine.spec().product, "version": machine.spec().version, "rollout": id,
                               "agents": agents, "kind": kind, "granularity": part.granularity,
                               "subject": part.subject}),
                    )
                    .await;
                }
                Action::Halt { reason } => {
                    crate::rollouts::count("rewind_rollout_halts_total", 1);
                    if reason.starts_with("manual rollback") || reason.starts_with("aborted by") {
                        tracing::warn!(rollout = id, "rollout halted: {reason}");
                    } else {
                        tracing::error!(rollout = id, "rollout halted: {reason}");
                    }
                }
                Action::Audit { from, to, reason, actor } => {
                    for kind in transition_kinds(&from, &to, &reason) {
                        let wave = wave_in(&to).or_else(|| wave_in(&from)).or_else(|| current_wave(&machine));
                        crate::audit::record(
                            app,
                            kind,
                            json!({"product": machine.spec().product, "version": machine.spec().version,
                                   "sequence": machine.spec().sequence, "rollout": id, "wave": wave,
                                   "from": from, "to": to, "reason": reason, "actor": actor}),
                        )
                        .await;
                    }
                }
                Action::Notify { event } => {
                    crate::audit::record(
                        app,
                        "rollout.notify",
                        json!({"product": machine.spec().product, "version": machine.spec().version, "rollout": id,
                               "event": event, "state": machine.state().name()}),
                    )
                    .await;
                }
            }
        }
        self.plans_sent(app, id, &machine, bundle.as_ref(), &mut plans).await?;
        Ok(())
    }

    /// Queues the apply plans collected in `plans` and audits them as one entry.
    async fn plans_sent(
        &mut self,
        app: &App,
        id: &str,
        machine: &RolloutMachine,
        bundle: Option<&BundleRecord>,
        plans: &mut Vec<AgentId>,
    ) -> Result<()> {
        if plans.is_empty() {
            return Ok(());
        }
        let agents = std::mem::take(plans);
        let b = bundle.expect("looked up for the plans");
        queue(app, b, agents.iter().map(|a| (a.clone(), "apply", None)).collect()).await?;
        let now = Instant::now();
        for agent in &agents {
            self.decided.insert((id.to_string(), agent.clone(), "apply"), now);
        }
        crate::rollouts::count("rewind_plans_sent_total", agents.len() as u64);
        let waves: BTreeSet<&str> = agents.iter().filter_map(|a| machine.wave_of(a)).collect();
        crate::audit::record(
            app,
            "plan.sent",
            json!({"product": machine.spec().product, "version": machine.spec().version, "rollout": id,
                   "agents": agents, "kind": "apply", "waves": waves}),
        )
        .await;
        Ok(())
    }

    async fn persist(&mut self, app: &App, id: &str) -> Result<()> {
        self.dirty.remove(id);
        let doc = &self.docs[id];
        let spec = doc.machine.spec();
        app.store
            .put_rollout(RolloutRecord {
                id: id.to_string(),
                product: spec.product.clone(),
                sequence: spec.sequence,
                state: doc.machine.state().name().to_string(),
                doc: serde_json::to_string(doc).expect("a rollout document serializes"),
            })
            .await
    }

    /// Starts a rollout of an uploaded bundle.
    pub async fn start(
        &mut self,
        app: &App,
        bundle: &BundleRecord,
        supersede: bool,
        actor: &str,
    ) -> Result<(String, usize)> {
        let b: Bundle = serde_json::from_slice(&bundle.bytes)
            .map_err(|e| Error::Store(format!("stored bundle {}: {e}", bundle.id)))?;
        let plan = apply_plan(&b)?;
        let spec = RolloutSpec::from_release(&plan.steps).with_plan_expiry(b.expires.saturating_mul(1000));
        if now_ms() >= b.expires.saturating_mul(1000) {
            return Err(Error::FailedPrecondition(format!(
                "bundle {} expired at {} (unix seconds): build and sign a new one with a later --expires",
                b.id, b.expires
            )));
        }
        let fleet: Vec<FleetAgent> = app
            .store
            .agents()
            .await?
            .into_iter()
            .filter(|a| !a.revoked && has_product(a, &spec.product))
            .map(|a| FleetAgent { online: app.cluster.is_connected(app, &a.id), id: a.id, labels: a.labels })
            .collect();
        let n = fleet.len();
        let mut registry = self.registry();
        let started = registry.start(spec, fleet, supersede, actor, now_ms()).map_err(|e| match e {
            rewind_rollout::RegistryError::Cohort(_) | rewind_rollout::RegistryError::Rollout(_) => {
                Error::InvalidArgument(e.to_string())
            }
            _ => Error::FailedPrecondition(e.to_string()),
        })?;
        let machine = registry.get(&started.id).expect("just started").clone();
        self.predicted.insert(started.id.clone(), predicted_schemas(&plan));
        if let Some((old, acts)) = started.superseded {
            let m = registry.get(&old).expect("superseded rollout exists").clone();
            if let Some(d) = self.docs.get_mut(&old) {
                d.machine = m;
            }
            self.carry_out(app, &old, acts).await?;
        }
        self.docs.insert(
            started.id.clone(),
            Doc { machine, bundle: bundle.id.clone(), processed: BTreeSet::new(), drifted: BTreeSet::new() },
        );
        self.carry_out(app, &started.id, started.actions).await?;
        Ok((started.id, n))
    }

    /// An agent's stream opened: known agents come online, new agents of the
    /// product join the active rollout's waves.
    pub async fn connected(&mut self, app: &App, agent: &AgentId) -> Result<()> {
        self.connected_all(app, std::slice::from_ref(agent)).await
    }

    /// Several agents online (or joining) at once: each rollout takes all
    /// their events, then carries out what they decided together — one
    /// store write of the rollout, the plans queued in one transaction —
    /// instead of once per agent (the rollout document grows with the
    /// fleet: at 20,000 agents one write per agent that came online late
    /// kept the engine busy for minutes).
    pub async fn connected_all(&mut self, app: &App, agents: &[AgentId]) -> Result<()> {
        if self.docs.is_empty() {
            return Ok(());
        }
        let records = app.store.agents_by_id(agents.to_vec()).await?;
        let ids: Vec<String> = self.docs.keys().cloned().collect();
        for id in ids {
            let mut actions = Vec::new();
            let doc = self.docs.get_mut(&id).expect("listed above");
            for record in &records {
                let agent = &record.id;
                let m = &doc.machine;
                let event = match m.agents().get(agent) {
                    Some(_) => Event::AgentOnline { agent: agent.clone() },
                    None if m.state().is_active() && has_product(record, &m.spec().product) => {
                        Event::AgentJoined { agent: agent.clone(), labels: record.labels.clone() }
                    }
                    None => continue,
                };
                match doc.machine.handle(now_ms(), event) {
                    Ok(a) => actions.extend(a),
                    Err(e) => tracing::warn!(rollout = %id, agent = %agent, "agent connect: {e}"),
                }
            }
            if let Err(e) = self.carry_out(app, &id, actions).await {
                tracing::warn!(rollout = %id, agents = records.len(), "agents connected: {e}");
            }
        }
        Ok(())
    }

    /// One verified result (by id) of `agent`.
    pub async fn result(&mut self, app: &App, agent: &AgentId, result_id: &str) -> Result<()> {
        let Some(r) = app.store.result(agent.clone(), result_id.to_string()).await? else { return Ok(()) };
        self.stored_result(app, agent, &r).await
    }

    /// A result that succeeded — `applied` for an apply plan, `rolled_back`
    /// for a rollback plan — is counted from its result event: the event
    /// says all the machine needs, so the report is not read back from the
    /// store (after a halt, and when a wave applies, these come by the
    /// thousand at once). Returns false when the report must decide (the
    /// rollout is not known here, or the signed plan is not of that kind).
    async fn succeeded(
        &mut self,
        app: &App,
        agent: &AgentId,
        id: &str,
        result_id: &str,
        kind: PlanKind,
        signed_plan: Option<&str>,
    ) -> Result<bool> {
        if !self.docs.contains_key(id) {
            return Ok(false);
        }
        let part = match signed_plan {
            Some(plan) => self.part_of(app, id, plan).await?,
            None => None,
        };
        if part.as_ref().is_some_and(|p| p.activate != (kind == PlanKind::Apply)) {
            return Ok(false);
        }
        let doc = self.docs.get_mut(id).expect("checked above");
        if !doc.machine.agents().contains_key(agent) || !doc.processed.insert(result_id.to_string()) {
            return Ok(true);
        }
        let kind_text = if kind == PlanKind::Apply { "apply" } else { "rollback" };
        if let Some(t) = self.decided.remove(&(id.to_string(), agent.clone(), kind_text)) {
            crate::rollouts::observe("rewind_plan_push_seconds", t.elapsed().as_secs_f64());
        }
        let agent = agent.clone();
        let event = match (part, kind) {
            (Some(part), _) => Event::PartialOutcome { agent, part, proven: true },
            (None, PlanKind::Apply) => Event::AgentOutcome { agent, outcome: Outcome::Applied },
            (None, PlanKind::Rollback) => Event::AgentOutcome { agent, outcome: Outcome::RollbackProven },
        };
        if let Err(e) = self.handle(app, id, event).await {
            tracing::warn!(rollout = %id, result = %result_id, "{e}");
            self.dirty.insert(id.to_string());
        }
        Ok(true)
    }

    async fn stored_result(&mut self, app: &App, agent: &AgentId, r: &crate::store::StoredResult) -> Result<()> {
        let id = format!("{}@{}", r.product, r.sequence);
        let Some(doc) = self.docs.get_mut(&id) else { return Ok(()) };
        if !doc.machine.agents().contains_key(agent) || !doc.processed.insert(r.id.clone()) {
            return Ok(());
        }
        let payload: ReportPayload = match serde_json::from_slice(&r.payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(rollout = %id, result = %r.id, "stored report does not parse: {e}");
                self.dirty.insert(id);
                return Ok(());
            }
        };
        // Chain gaps and forks come as alarms (see `alarm`), once each.
        let ok = Continuity::Ok { head: ChainPoint { seq: 0, head: payload.chain.head }, verified: 0 };
        let kind = if payload.kind == Some(PlanKind::Rollback) { "rollback" } else { "apply" };
        if let Some(t) = self.decided.remove(&(id.clone(), agent.clone(), kind)) {
            crate::rollouts::observe("rewind_plan_push_seconds", t.elapsed().as_secs_f64());
        }
        let part = match payload.signed_plan.as_deref() {
            Some(plan) if payload.kind.is_some() => self.part_of(app, &id, plan).await?,
            _ => None,
        };
        let mut changed = false;
        for event in rewind_rollout::report::events_from_report(agent, &payload, &ok, part.as_ref()) {
            match self.handle(app, &id, event).await {
                Ok(()) => changed = true,
                Err(e) => tracing::warn!(rollout = %id, agent = %agent, result = %r.id, "{e}"),
            }
        }
        if !changed {
            self.dirty.insert(id);
        }
        Ok(())
    }

    /// Which part a signed plan of the rollout's bundle is about: a part's
    /// rollback or a flag's activation (`None` for the release's own apply
    /// or rollback plan, or an unknown id).
    async fn part_of(&mut self, app: &App, id: &str, signed_plan: &str) -> Result<Option<Part>> {
        if !self.parts.contains_key(id) {
            let bundle = self.bundle_of(app, id).await?;
            let b: Bundle = serde_json::from_slice(&bundle.bytes)
                .map_err(|e| Error::Store(format!("stored bundle {}: {e}", bundle.id)))?;
            self.parts.insert(id.to_string(), partial_plans(&b));
        }
        Ok(self.parts[id].get(signed_plan).cloned())
    }

    /// Reads back every stored result of the rollouts' agents that was not
    /// fed yet (after a restart or a lagging subscription).
    pub async fn reconcile(&mut self, app: &App) -> Result<()> {
        let mut agents: BTreeSet<AgentId> = BTreeSet::new();
        for d in self.docs.values() {
            if d.machine.state().is_active() {
                agents.extend(d.machine.agents().keys().cloned());
            }
        }
        for agent in agents {
            for r in app.store.results(agent.clone()).await? {
                let id = format!("{}@{}", r.product, r.sequence);
                if self.docs.get(&id).is_some_and(|d| d.machine.state().is_active() && !d.processed.contains(&r.id)) {
                    self.stored_result(app, &agent, &r).await?;
                }
            }
        }
        Ok(())
    }

    /// An integrity alarm about `agent` (audit chain gap or fork).
    pub async fn alarm(&mut self, app: &App, agent: &AgentId, kind: &str, detail: &str) -> Result<()> {
        let kind = match kind {
            "chain_gap" => IntegrityKind::AuditGap,
            "chain_fork" => IntegrityKind::AuditFork,
            _ => return Ok(()),
        };
        let ids: Vec<String> = self
            .docs
            .iter()
            .filter(|(_, d)| d.machine.state().is_active() && d.machine.agents().contains_key(agent))
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            let e = Event::Integrity { agent: agent.clone(), kind, detail: detail.to_string() };
            if let Err(e) = self.handle(app, &id, e).await {
                tracing::warn!(rollout = %id, "{e}");
            }
        }
        Ok(())
    }

    /// A telemetry sample `{"agent", "product", "metrics": {NAME: number}, "time"}`.
    pub async fn telemetry(&mut self, app: &App, params: &serde_json::Value) -> Result<()> {
        let (Some(agent), Some(product)) = (params["agent"].as_str(), params["product"].as_str()) else {
            return Ok(());
        };
        let Ok(agent) = AgentId::parse(agent) else { return Ok(()) };
        let at_ms = params["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let Some(id) = self
            .docs
            .iter()
            .find(|(_, d)| d.machine.spec().product == product && d.machine.state().is_progressing())
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        if !self.docs[&id].machine.agents().contains_key(&agent) {
            return Ok(());
        }
        for (name, value) in params["metrics"].as_object().into_iter().flatten() {
            let Some(value) = value.as_f64() else { continue };
            let e = Event::Metric { agent: agent.clone(), name: name.clone(), value, at_ms };
            if let Err(e) = self.handle(app, &id, e).await {
                tracing::warn!(rollout = %id, "{e}");
            }
        }
        Ok(())
    }

    /// Time, connections and drift; stores the rollouts left dirty.
    pub async fn tick(&mut self, app: &App) -> Result<()> {
        for id in std::mem::take(&mut self.dirty) {
            if self.docs.contains_key(&id) {
                self.persist(app, &id).await?;
            }
        }
        let now = now_ms();
        let ids: Vec<String> =
            self.docs.iter().filter(|(_, d)| d.machine.state().is_active()).map(|(k, _)| k.clone()).collect();
        for id in &ids {
            let m = &self.docs[id].machine;
            let mut events = Vec::new();
            for (agent, r) in m.agents() {
                let online = app.cluster.is_connected(app, agent);
                if online != r.online {
                    events.push(if online {
                        Event::AgentOnline { agent: agent.clone() }
                    } else {
                        Event::AgentOffline { agent: agent.clone() }
                    });
                }
            }
            if m.next_deadline_ms().is_some_and(|d| d <= now) {
                events.push(Event::Tick);
            }
            for e in events {
                if let Err(e) = self.handle(app, id, e).await {
                    tracing::warn!(rollout = %id, "{e}");
                }
            }
        }
        if self.last_drift_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_drift_scan = Some(Instant::now());
            self.drift(app, &ids).await?;
        }
        Ok(())
    }

    /// An agent that applied and whose inventory shows a target's schema
    /// digest other than the rehearsal's prediction is an integrity signal.
    async fn drift(&mut self, app: &App, ids: &[String]) -> Result<()> {
        let progressing: Vec<&String> =
            ids.iter().filter(|id| self.docs[*id].machine.state().is_progressing()).collect();
        if progressing.is_empty() {
            return Ok(());
        }
        let agents = app.store.agents().await?;
        let mut signals = Vec::new();
        for id in progressing {
            if !self.predicted.contains_key(id) {
                let bundle = self.bundle_of(app, id).await?;
                let b: Bundle = serde_json::from_slice(&bundle.bytes)
                    .map_err(|e| Error::Store(format!("stored bundle {}: {e}", bundle.id)))?;
                self.predicted.insert(id.clone(), predicted_schemas(&apply_plan(&b)?));
            }
            let predicted = &self.predicted[id];
            let doc = &self.docs[id];
            let spec = doc.machine.spec();
            for a in &agents {
                let Some(r) = doc.machine.agents().get(&a.id) else { continue };
                if r.outcome != ApplyOutcome::Applied
                    || doc.drifted.contains(a.id.as_str())
                    || !a.inventory.products.iter().any(|p| p.name == spec.product && p.sequence == spec.sequence)
                {
                    continue;
                }
                for t in a.inventory.targets.iter().filter(|t| t.product == spec.product) {
                    let Some(Some(expected)) = predicted.get(&t.name) else { continue };
                    let got = match &t.digests {
                        TargetDigest::Ok { schema, .. } => schema.to_string(),
                        TargetDigest::Unreadable { error } => format!("unreadable: {error}"),
                    };
                    if &got != expected {
                        signals.push((
                            id.clone(),
                            a.id.clone(),
                            format!("target {}: schema digest {got}, the rehearsal predicted {expected}", t.name),
                        ));
                        break;
                    }
                }
            }
        }
        for (id, agent, detail) in signals {
            if let Some(d) = self.docs.get_mut(&id) {
                d.drifted.insert(agent.to_string());
            }
            let e = Event::Integrity { agent, kind: IntegrityKind::Drift, detail };
            if let Err(e) = self.handle(app, &id, e).await {
                tracing::warn!(rollout = %id, "{e}");
            }
        }
        Ok(())
    }
}

fn has_product(a: &crate::store::AgentRecord, product: &str) -> bool {
    a.inventory.targets.iter().any(|t| t.product == product) || a.inventory.products.iter().any(|p| p.name == product)
}

pub(crate) fn apply_plan(b: &Bundle) -> Result<Plan> {
    let payload = b.apply.payload_bytes().map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))?;
    serde_json::from_slice(&payload).map_err(|e| Error::Store(format!("stored bundle {}: {e}", b.id)))
}

fn predicted_schemas(plan: &Plan) -> BTreeMap<String, Option<String>> {
    plan.to.targets.iter().map(|(k, s)| (k.clone(), s.schema.clone())).collect()
}

/// The bundle's partial rollback plans by signed plan id.
pub(crate) fn partial_plans(b: &Bundle) -> HashMap<String, Part> {
    let id = |e: &rewind_shared::bundle::Envelope| {
        let payload = e.payload_bytes().ok()?;
        serde_json::from_slice::<Plan>(&payload).ok().map(|p| p.id)
    };
    let rollbacks = b
        .rollback
        .iter()
        .filter(|r| r.granularity != rewind_shared::bundle::Granularity::Release)
        .filter_map(|r| Some((id(&r.envelope)?, Part::rollback(r.granularity, r.subject.clone()))));
    let activations = b.activate.iter().filter_map(|r| Some((id(&r.envelope)?, Part::activation(&r.subject))));
    rollbacks.chain(activations).collect()
}

/// The delivery kind of a part's plan: `apply` for a flag's activation,
/// `rollback` otherwise.
pub(crate) fn part_kind(part: &Part) -> &'static str {
    if part.activate { "apply" } else { "rollback" }
}

pub(crate) fn plan_message(d: &Delivery, b: &BundleRecord) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage {
        body: Some(v1::coordinator_message::Body::Plan(v1::PlanDelivery {
            id: d.id.clone(),
            plan_id: b.id.clone(),
            product: b.product.clone(),
            sequence: b.sequence,
            kind: d.kind.clone(),
            envelope: b.bytes.clone(),
            granularity: d.part.as_ref().map(|p| p.granularity.to_string()).unwrap_or_default(),
            subject: d.part.as_ref().map(|p| p.subject.clone()).unwrap_or_default(),
        })),
    }
}

/// Deliveries stored per transaction by [`queue`].
const DELIVERY_CHUNK: usize = 1_000;

/// Stores deliveries of one bundle and sends each to its agent when
/// connected (offline agents get it when they return), in chunks of
/// [`DELIVERY_CHUNK`]: a chunk is sent once it is stored, while the next
/// one is being stored, so the first agents have their plans before the
/// last deliveries are written. A delivery is never sent before it is
/// stored (an agent acknowledges it by id).
async fn queue(app: &App, bundle: &BundleRecord, items: Vec<(AgentId, &str, Option<Part>)>) -> Result<()> {
    queue_in_chunks(app, bundle, items, DELIVERY_CHUNK).await
}

async fn queue_in_chunks(
    app: &App,
    bundle: &BundleRecord,
    items: Vec<(AgentId, &str, Option<Part>)>,
    chunk: usize,
) -> Result<()> {
    let ds: Vec<Delivery> = items
        .into_iter()
        .map(|(agent, kind, part)| Delivery {
            id: crate::random_id("dlv", 8),
            agent,
            bundle: bundle.id.clone(),
            kind: kind.to_string(),
            part,
        })
        .collect();
    let mut chunks = ds.chunks(chunk.max(1));
    let mut stored = match chunks.next() {
        Some(first) => {
            app.store.add_deliveries(first.to_vec()).await?;
            first
        }
        None => return Ok(()),
    };
    let mut elsewhere = Vec::new();
    let written = loop {
        let next = chunks.next().map(|c| {
            let (store, chunk) = (Arc::clone(&app.store), c.to_vec());
            (c, tokio::spawn(async move { store.add_deliveries(chunk).await }))
        });
        for d in stored {
            if !app.sessions.deliver(&d.agent, &d.id, plan_message(d, bundle)) {
                elsewhere.push(d.agent.clone());
            }
        }
        let Some((chunk, writing)) = next else { break Ok(()) };
        match writing.await.map_err(|e| Error::Store(format!("storing deliveries: {e}"))) {
            Ok(Ok(())) => stored = chunk,
            Ok(Err(e)) | Err(e) => break Err(e),
        }
    };
    // Agents with a stream on another replica get them from there (those
    // stored before a failed chunk too).
    if !elsewhere.is_empty() {
        crate::cluster::deliveries(app, elsewhere).await;
    }
    written
}

/// The audit kinds of one machine transition (docs/rollouts.md lists them).
pub(crate) fn transition_kinds(from: &str, to: &str, reason: &str) -> Vec<&'static str> {
    let head = |l: &str| l.split('(').next().unwrap_or("").to_string();
    let (f, t) = (head(from), head(to));
    if f == "pending" {
        return match t.as_str() {
            "running" => vec!["rollout.started", "rollout.wave_started"],
            "awaiting_approval" => vec!["rollout.started", "rollout.awaiting_approval"],
            _ => vec!["rollout.started"],
        };
    }
    if from == to {
        return vec![if reason.starts_with("partial rollback") {
            "rollout.partial_rollback"
        } else if reason.starts_with("flag ") && reason.contains(" turned on (") {
            "rollout.flag_on"
        } else {
            "rollout.signal"
        }];
    }
    match t.as_str() {
        "paused" => vec!["rollout.paused"],
        _ if f == "paused" => vec!["rollout.resumed"],
        "running" if f == "awaiting_approval" => vec!["rollout.approved", "rollout.wave_started"],
        "running" => vec!["rollout.wave_started"],
        "baking" => vec!["rollout.baking"],
        "awaiting_approval" => vec!["rollout.awaiting_approval"],
        "halted" if reason.starts_with("aborted by") => vec!["rollout.aborted"],
        "halted" => vec!["rollout.halted"],
        "rolling_back" => vec!["rollout.rolling_back"],
        "rolled_back" => vec!["rollout.rolled_back"],
        "done" => vec!["rollout.done"],
        "superseded" => vec!["rollout.superseded"],
        _ => vec!["rollout.transition"],
    }
}

/// The wave named in a machine label such as `running(canary)`.
fn wave_in(label: &str) -> Option<String> {
    let (head, rest) = label.split_once('(')?;
    (head != "paused").then(|| rest.trim_end_matches(')').to_string())
}

fn current_wave(m: &RolloutMachine) -> Option<String> {
    let waves = &m.spec().rollout.waves;
    let idx = match m.state() {
        State::Running { wave } | State::Baking { wave, .. } | State::AwaitingApproval { wave } => Some(*wave),
        State::Paused { from, .. } => match **from {
            State::Running { wave } | State::Baking { wave, .. } | State::AwaitingApproval { wave } => Some(wave),
            _ => None,
        },
        _ => None,
    };
    idx.map(|w| waves[w].name.clone())
        .or_else(|| m.status().waves.iter().rev().find(|w| w.state != "pending").map(|w| w.name.clone()))
}

/// The engine task: events from the bus, and a tick. It acts only while
/// this replica leads (always, for a single coordinator); on taking the
/// lead it loads every rollout and reads back the results it missed.
pub async fn run(app: Arc<App>) {
    let mut rx = app.events.subscribe();
    let engine = engine(&app);
    let mut leading = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if app.cluster.is_leader() != leading {
            leading = !leading;
            let mut inner = engine.inner.lock().await;
            inner.loaded = false;
            if leading
                && let Err(e) = async {
                    inner.load(&app).await?;
                    inner.reconcile(&app).await
                }
                .await
            {
                tracing::error!("rollout engine: loading stored rollouts: {e}");
            }
        }
        tokio::select! {
            ev = rx.recv() => {
                if !leading {
                    continue;
                }
                let mut inner = engine.inner.lock().await;
                let r = match ev {
                    Ok(ev) => on_event(&app, &mut inner, &ev).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "rollout engine fell behind the event bus; reading results back from the store");
                        inner.reconcile(&app).await
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if let Err(e) = r {
                    tracing::error!("rollout engine: {e}");
                }
            }
            _ = tick.tick() => {
                if !leading {
                    continue;
                }
                let mut inner = engine.inner.lock().await;
                let r = async {
                    inner.load(&app).await?;
                    inner.tick(&app).await
                }.await;
                if let Err(e) = r {
                    tracing::error!("rollout engine tick: {e}");
                }
            }
        }
    }
}

async fn on_event(app: &App, inner: &mut Inner, ev: &crate::events::Event) -> Result<()> {
    inner.load(app).await?;
    let agent = || ev.params["agent"].as_str().and_then(|a| AgentId::parse(a).ok());
    match ev.kind.as_str() {
        "result" => {
            if let (Some(agent), Some(id)) = (agent(), ev.params["result"].as_str()) {
                // Another `applied` report of an agent counted as applied
                // changes nothing: skip reading it back (a burst of them
                // must not hold up the store) — unless it is the result of
                // a flag's activation plan.
                let rollout = format!("{}@{}", ev.params["product"].as_str().unwrap_or(""), ev.params["sequence"]);
                let known_applied = inner.docs.get(&rollout).is_some_and(|d| {
                    d.machine.agents().get(&agent).is_some_and(|r| r.outcome == ApplyOutcome::Applied)
                });
                if known_applied && ev.params["kind"] == "apply" && ev.params["status"] == "applied" {
                    let part = match ev.params["signed_plan"].as_str() {
                        Some(plan) => inner.part_of(app, &rollout, plan).await?,
                        None => None,
                    };
                    if part.is_none() {
                        return Ok(());
                    }
                }
                let succeeded = match (ev.params["kind"].as_str(), ev.params["status"].as_str()) {
                    (Some("apply"), Some("applied")) => Some(PlanKind::Apply),
                    (Some("rollback"), Some("rolled_back")) => Some(PlanKind::Rollback),
                    _ => None,
                };
                if let Some(kind) = succeeded
                    && inner.succeeded(app, &agent, &rollout, id, kind, ev.params["signed_plan"].as_str()).await?
                {
                    return Ok(());
                }
                inner.result(app, &agent, id).await?;
            }
        }
        "alarm" => {
            if let (Some(agent), Some(kind)) = (agent(), ev.params["kind"].as_str()) {
                inner.alarm(app, &agent, kind, ev.params["detail"].as_str().unwrap_or("")).await?;
            }
        }
        "telemetry" => inner.telemetry(app, &ev.params).await?,
        _ => {}
    }
    Ok(())
}

/// An event another replica received (`result`, `alarm`, `telemetry`),
/// fed to this replica's engine while it leads.
pub(crate) async fn remote_event(app: &App, kind: &str, params: &serde_json::Value) {
    if !app.cluster.is_leader() {
        return;
    }
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    let ev = crate::events::Event {
        seq: 0,
        kind: kind.to_string(),
        time: crate::now(),
        product: None,
        params: params.clone(),
    };
    if let Err(e) = on_event(app, &mut inner, &ev).await {
        tracing::error!("rollout engine: {kind} from another replica: {e}");
    }
}

/// Agents that connected to another replica: online (or joining) in the
/// leader's rollouts, all in one pass.
pub(crate) async fn agents_connected(app: &App, agents: &[AgentId]) {
    if agents.is_empty() || !app.cluster.is_leader() {
        return;
    }
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    if let Err(e) = async {
        inner.load(app).await?;
        inner.connected_all(app, agents).await
    }
    .await
    {
        tracing::warn!(agents = agents.len(), "rollout engine: agents connected elsewhere: {e}");
    }
}

/// Reads back the results this leader may have missed (its channel to the
/// other replicas was down).
pub(crate) async fn catch_up(app: &App) {
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    if let Err(e) = async {
        inner.load(app).await?;
        inner.reconcile(app).await
    }
    .await
    {
        tracing::error!("rollout engine: catching up: {e}");
    }
}

/// The actor recorded for the engine's own transitions.
pub const ENGINE_ACTOR: &str = SYSTEM_ACTOR;

#[cfg(test)]
mod tests {
    use super::*;

    /// Deliveries queued in chunks are all stored, each once, whichever
    /// chunk they fell in (5 deliveries in chunks of 2: three transactions,
    /// the last two written while the ones before are sent).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_queued_in_chunks_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::testing::app(dir.path()).await;
        let mut agents = Vec::new();
        for i in 1..=5 {
            let agent = crate::testing::agent(&format!("agt-{i}"), String::new(), Default::default());
            agents.push(agent.id.clone());
            app.store.insert_agent(agent).await.unwrap();
        }
        let bundle = BundleRecord {
            id: "bnd-1".into(),
            product: "notes".into(),
            release: "1.0".into(),
            sequence: 1,
            bytes: b"{}".to_vec(),
        };
        app.store.put_bundle(bundle.clone()).await.unwrap();
        let items = agents.iter().map(|a| (a.clone(), "apply", None)).collect();
        queue_in_chunks(&app, &bundle, items, 2).await.unwrap();
        let stored = app.store.deliveries_of("bnd-1".into()).await.unwrap();
        let mut got: Vec<String> = stored.iter().map(|(d, _)| d.agent.to_string()).collect();
        got.sort();
        assert_eq!(got, agents.iter().map(ToString::to_string).collect::<Vec<_>>());
        queue_in_chunks(&app, &bundle, Vec::new(), 2).await.unwrap();
        assert_eq!(app.store.deliveries_of("bnd-1".into()).await.unwrap().len(), 5);
    }

    #[test]
    fn every_machine_transition_has_its_audit_kind() {
        let cases = [
            ("pending", "running(canary)", "", vec!["rollout.started", "rollout.wave_started"]),
            ("pending", "awaiting_approval(canary)", "", vec!["rollout.started", "rollout.awaiting_approval"]),
            ("running(canary)", "baking(canary)", "", vec!["rollout.baking"]),
            ("baking(canary)", "running(early)", "", vec!["rollout.wave_started"]),
            ("baking(early)", "awaiting_approval(broad)", "", vec!["rollout.awaiting_approval"]),
            ("awaiting_approval(broad)", "running(broad)", "", vec!["rollout.approved", "rollout.wave_started"]),
            ("running(canary)", "paused(running)", "", vec!["rollout.paused"]),
            ("paused(baking)", "baking(canary)", "", vec!["rollout.resumed"]),
            ("running(canary)", "halted", "integrity: failed verify", vec!["rollout.halted"]),
            ("running(canary)", "halted", "aborted by alice; data stays", vec!["rollout.aborted"]),
            ("halted", "rolling_back", "", vec!["rollout.rolling_back"]),
            ("rolling_back", "rolled_back", "", vec!["rollout.rolled_back"]),
            ("running(all)", "done", "", vec!["rollout.done"]),
            ("running(all)", "superseded", "", vec!["rollout.superseded"]),
            ("done", "done", "integrity: digest drift (recorded)", vec!["rollout.signal"]),
            ("done", "done", "partial rollback of flag x (fleet) by ops: r", vec!["rollout.partial_rollback"]),
            ("done", "done", "flag x turned on (fleet) by ops: r", vec!["rollout.flag_on"]),
        ];
        for (from, to, reason, want) in cases {
            assert_eq!(transition_kinds(from, to, reason), want, "{from} -> {to}");
        }
        assert_eq!(wave_in("baking(early)").as_deref(), Some("early"));
        assert_eq!(wave_in("paused(running)"), None);
        assert_eq!(wave_in("halted"), None);
    }
}
