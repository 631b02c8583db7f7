//! Rollouts as operators drive them (DESIGN.md §7, §8): bundles are checked
//! against the coordinator's trust root at upload; `start` hands the release
//! to the phased-rollout engine ([`crate::rollout_engine`], the
//! `rewind-rollout` state machine), which releases wave after wave, counts
//! outcomes, halts on bad signals and sends the pre-signed rollback plans.
//! Plans are kept in the store until the agent acknowledges them (after it
//! ran the plan), so an agent that is offline gets its plan when it
//! returns, and agents check every plan against their own trust root again.
//!
//! The functions here are what the Admin service and the web dashboard
//! call: [`start`], [`statuses`], [`status`], [`pause`], [`resume`],
//! [`abort`], [`approve`], [`rollback`].

use std::collections::BTreeMap;

use rewind_rollout::{Event, Part, RolloutMachine, Scope, Selector};
use rewind_shared::bundle::{BUNDLE_FORMAT, Bundle, Granularity, MAX_BUNDLE_BYTES};
use rewind_shared::fleet::AgentId;
use rewind_shared::trust::TrustFile;
use serde_json::json;

use crate::App;
use crate::error::{Error, Result};
use crate::rollout_engine::{engine, plan_message};
use crate::store::BundleRecord;

fn trust(app: &App) -> Result<TrustFile> {
    let path = app.config.trust.as_ref().ok_or_else(|| {
        Error::FailedPrecondition(
            "the coordinator has no trust root: set `trust` in coordinator.toml (or REWIND_TRUST) and restart".into(),
        )
    })?;
    let text = crate::files::read_text(path)?;
    TrustFile::parse(&text).map_err(|e| Error::FailedPrecondition(format!("trust {}: {e}", path.display())))
}

/// Checks and stores an uploaded bundle.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed, oversized or under-signed
/// bundle (with the refusal's reason); [`Error::FailedPrecondition`] when
/// no trust root is configured.
pub async fn upload(app: &App, bytes: Vec<u8>) -> Result<BundleRecord> {
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "bundle is {} bytes, over the {MAX_BUNDLE_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let b: Bundle = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("not a {BUNDLE_FORMAT} bundle: {e}")))?;
    if b.format != BUNDLE_FORMAT {
        return Err(Error::InvalidArgument(format!("bundle format `{}` is not {BUNDLE_FORMAT}", b.format)));
    }
    let trust = trust(app)?;
    let now = u64::try_from(crate::now_unix()).unwrap_or(0);
    for (label, env) in b.envelopes() {
        env.open(&trust, now)
            .map_err(|r| Error::InvalidArgument(format!("bundle {} refused: {label}: {r} ({})", b.id, r.code)))?;
    }
    let rec = BundleRecord {
        id: b.id.clone(),
        product: b.product.clone(),
        release: b.release.clone(),
        sequence: b.sequence,
        bytes,
    };
    app.store.put_bundle(rec.clone()).await?;
    Ok(rec)
}

/// Sends `agent`'s unacknowledged deliveries on its stream with this
/// replica (each once per stream); how many were pending.
///
/// # Errors
/// When the store cannot be read.
pub async fn send_deliveries(app: &App, agent: &AgentId) -> Result<usize> {
    send_deliveries_of(app, vec![agent.clone()]).await
}

/// [`send_deliveries`] for several agents, with one store read: what a
/// replica does when another announces new deliveries for agents
/// connected here.
///
/// # Errors
/// When the store cannot be read.
pub async fn send_deliveries_of(app: &App, agents: Vec<AgentId>) -> Result<usize> {
    if agents.is_empty() {
        return Ok(0);
    }
    let pending = app.store.pending_deliveries_of(agents).await?;
    let n = pending.len();
    for (d, b) in pending {
        app.sessions.deliver(&d.agent, &d.id, plan_message(&d, &b));
    }
    Ok(n)
}

/// An agent's stream opened here: its unacknowledged deliveries go out,
/// the other replicas hear it is connected here, and the rollout engine
/// (on the leader) learns it is online (a late joiner falls into its wave
/// and gets its plan, or its rollback, now).
///
/// # Errors
/// When the store cannot be read.
pub async fn send_pending(app: &App, agent: &AgentId) -> Result<usize> {
    let n = send_deliveries(app, agent).await?;
    crate::cluster::presence(app, agent, true).await;
    if app.cluster.is_leader() {
        let engine = engine(app);
        let mut inner = engine.inner.lock().await;
        inner.load(app).await?;
        inner.connected(app, agent).await?;
    }
    Ok(n)
}

/// `rewind_plans_sent_total`, `rewind_rollout_halts_total`.
pub(crate) fn count(name: &'static str, n: u64) {
    metrics::counter!(name).increment(n);
}

/// `rewind_plan_push_seconds`: from the engine's decision to the agent's
/// signed result for that plan.
pub(crate) fn observe(name: &'static str, v: f64) {
    metrics::histogram!(name).record(v);
}

/// Starts the phased rollout of `product` `version` (an uploaded bundle)
/// over every enrolled agent that has the product. Returns the rollout id
/// (`<product>@<sequence>`) and how many agents it covers.
///
/// # Errors
/// [`Error::NotFound`] when no such bundle was uploaded;
/// [`Error::FailedPrecondition`] when the product has an active rollout and
/// `supersede` is false, or this release already rolled out.
pub async fn start(app: &App, product: &str, version: &str, supersede: bool, actor: &str) -> Result<(String, u32)> {
    crate::cluster::require_leader(app)?;
    let bundle = app.store.bundle(product.to_string(), Some(version.to_string())).await?.ok_or_else(|| {
        Error::NotFound(format!("no bundle for {product} {version}; upload it with rewindctl release upload BUNDLE"))
    })?;
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let (id, n) = inner.start(app, &bundle, supersede, actor).await?;
    tracing::info!(product, version, agents = n, rollout = %id, "rollout started");
    Ok((id, u32::try_from(n).unwrap_or(u32::MAX)))
}

fn status_json(id: &str, m: &rewind_rollout::RolloutMachine) -> serde_json::Value {
    let st = m.status();
    let proven = st.agents.iter().filter(|a| a.rollback.as_deref() == Some("proven")).count();
    let summary = match st.state.as_str() {
        "rolled_back" => {
            format!("rolled back, verified: {proven} endpoint(s) proved their rollback by digest")
        }
        "halted" if !st.needs_human.is_empty() => format!(
            "halted: {} endpoint(s) need a human (see needs_human for the commands): {}",
            st.needs_human.len(),
            st.reason.clone().unwrap_or_default()
        ),
        "awaiting_approval" => format!(
            "awaiting approval of wave {}: rewindctl rollout approve {} {}",
            st.awaiting_approval.clone().unwrap_or_default(),
            st.product,
            st.awaiting_approval.clone().unwrap_or_default()
        ),
        s => match &st.reason {
            Some(r) => format!("{s}: {r}"),
            None => s.to_string(),
        },
    };
    let mut v = serde_json::to_value(&st).expect("status serializes");
    v["rollout"] = json!(id);
    v["summary"] = json!(summary);
    v
}

/// The DESIGN.md §8 status JSON (plus `"product"`, `"rollout"`,
/// `"summary"`) of every product with an active or most recent rollout.
///
/// # Errors
/// When the store fails.
pub async fn statuses(app: &App) -> Result<Vec<serde_json::Value>> {
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let registry = inner.registry();
    let products: std::collections::BTreeSet<String> =
        inner.docs.values().map(|d| d.machine.spec().product.clone()).collect();
    Ok(products.iter().filter_map(|p| registry.current(p)).map(|m| status_json(&m.spec().id(), m)).collect())
}

/// `rollout status PRODUCT --json`: the product's active rollout, else its
/// latest.
///
/// # Errors
/// [`Error::NotFound`] when the product has no rollout.
pub async fn status(app: &App, product: &str) -> Result<serde_json::Value> {
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let registry = inner.registry();
    let m = registry
        .current(product)
        .ok_or_else(|| Error::NotFound(format!("{product} has no rollout; start one with rewindctl rollout start")))?;
    Ok(status_json(&m.spec().id(), m))
}

/// `rollout status --json` of one rollout by id (`notes@7`), whatever its
/// state (reports of finished rollouts use it).
///
/// # Errors
/// [`Error::NotFound`] naming the product's rollouts when there is no such one.
pub async fn status_of(app: &App, id: &str) -> Result<serde_json::Value> {
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let registry = inner.registry();
    if let Some(m) = registry.get(id) {
        return Ok(status_json(id, m));
    }
    let product = id.split('@').next().unwrap_or(id);
    let known: Vec<&str> =
        registry.iter().filter(|(_, m)| m.spec().product == product).map(|(k, _)| k.as_str()).collect();
    Err(Error::NotFound(format!(
        "no rollout {id:?}; rollouts are named PRODUCT@SEQUENCE{}",
        if known.is_empty() { String::new() } else { format!(", {product} has: {}", known.join(", ")) }
    )))
}

/// Feeds an operator command to the product's active rollout and returns
/// its new status.
async fn command(app: &App, product: &str, make: impl FnOnce() -> Event) -> Result<serde_json::Value> {
    crate::cluster::require_leader(app)?;
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let id = inner
        .registry()
        .active(product)
        .map(|m| m.spec().id())
        .ok_or_else(|| Error::NotFound(format!("{product} has no active rollout")))?;
    inner.handle(app, &id, make()).await?;
    Ok(status_json(&id, &inner.docs[&id].machine))
}

/// `rollout pause PRODUCT`: no plans go out; signals still halt.
///
/// # Errors
/// No active rollout, or one that cannot pause now (the message says why).
pub async fn pause(app: &App, product: &str, actor: &str) -> Result<serde_json::Value> {
    command(app, product, || Event::Pause { actor: actor.to_string() }).await
}

/// `rollout resume PRODUCT`.
///
/// # Errors
/// No active rollout, or it is not paused.
pub async fn resume(app: &App, product: &str, actor: &str) -> Result<serde_json::Value> {
    command(app, product, || Event::Resume { actor: actor.to_string() }).await
}

/// `rollout abort PRODUCT`: halts without rolling back.
///
/// # Errors
/// No active rollout, or it is not progressing.
pub async fn abort(app: &App, product: &str, actor: &str) -> Result<serde_json::Value> {
    command(app, product, || Event::Abort { actor: actor.to_string() }).await
}

/// `rollout approve PRODUCT WAVE` (approver role).
///
/// # Errors
/// No active rollout, or `wave` is not the one awaiting approval.
pub async fn approve(app: &App, product: &str, wave: &str, actor: &str) -> Result<serde_json::Value> {
    command(app, product, || Event::Approve { wave: wave.to_string(), actor: actor.to_string() }).await
}

/// `rewindctl rollback PRODUCT [--to-sequence N] [--granularity G]
/// [--subject NAME] [--scope S]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackRequest {
    /// Roll back to this epoch: every rollout above it, latest first.
    pub to_sequence: Option<u64>,
    /// `release` (default), `target`, `migration`, `flag`.
    pub granularity: String,
    pub subject: Option<String>,
    /// `fleet` (default), `wave:NAME`, `cohort:SELECTOR`, `agent:ID[,ID...]`.
    pub scope: String,
    /// Why (recorded in the audit log).
    pub reason: String,
}

/// Parses `--scope`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the accepted forms.
pub fn parse_scope(s: &str) -> Result<Scope> {
    let bad = |m: String| {
        Error::InvalidArgument(format!(
            "--scope {s:?}: {m}; expected fleet, wave:NAME, cohort:SELECTOR (e.g. cohort:ring=canary) or agent:ID[,ID...]"
        ))
    };
    match s.split_once(':') {
        None if s.is_empty() || s == "fleet" => Ok(Scope::Fleet),
        Some(("wave", name)) if !name.is_empty() => Ok(Scope::Wave { name: name.to_string() }),
        Some(("cohort", sel)) if !sel.is_empty() => {
            Ok(Scope::Cohort { selector: Selector::parse(sel).map_err(|e| bad(e.to_string()))? })
        }
        Some(("agent", ids)) if !ids.is_empty() => Ok(Scope::Agents {
            agents: ids
                .split(',')
                .map(|a| AgentId::parse(a.trim()).map_err(|e| bad(e.to_string())))
                .collect::<Result<_>>()?,
        }),
        _ => Err(bad("unknown form".into())),
    }
}

/// What a rollback request set in motion.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RollbackStarted {
    /// The rollouts rolled back, in the order their plans go out.
    pub rollouts: Vec<String>,
    /// Rollback plans sent or queued.
    pub agents: u32,
}

/// Starts a manual rollback: the pre-signed rollback plans go at once to
/// every endpoint in scope that applied (offline ones when they return),
/// skipping bake and approvals. With `to_sequence`, every rollout of the
/// product above it is rolled back, latest first. With a granularity other
/// than `release`, only that target, migration or flag is rolled back (the
/// bundle's pre-signed plan for it) on the product's current rollout, which
/// goes on as it was ([`send_part`]).
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad scope, granularity or subject;
/// [`Error::NotFound`] when there is nothing to roll back;
/// [`Error::FailedPrecondition`] when the rollback was already sent.
pub async fn rollback(app: &App, product: &str, req: RollbackRequest, actor: &str) -> Result<RollbackStarted> {
    crate::cluster::require_leader(app)?;
    let scope = parse_scope(&req.scope)?;
    let granularity: Granularity = match req.granularity.as_str() {
        "" => Granularity::Release,
        g => g.parse().map_err(|e: String| Error::InvalidArgument(format!("--granularity: {e}")))?,
    };
    if granularity != Granularity::Release {
        let subject = req.subject.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--granularity {granularity} needs --subject NAME: which {granularity} to roll back"
            ))
        })?;
        if req.to_sequence.is_some() {
            return Err(Error::InvalidArgument(
                "--to-sequence goes with a release rollback, not with --granularity target|migration|flag".into(),
            ));
        }
        let part = Part::rollback(granularity, subject);
        return send_part(app, product, part, scope, &req.reason, actor).await;
    }
    if req.subject.is_some() {
        return Err(Error::InvalidArgument(
            "--subject goes with --granularity target|migration|flag, not release".into(),
        ));
    }
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let registry = inner.registry();
    let ids: Vec<String> = match req.to_sequence {
        Some(seq) => registry.epoch_rollback_order(product, seq),
        None => registry.current(product).map(|m| m.spec().id()).into_iter().collect(),
    };
    if ids.is_empty() {
        return Err(Error::NotFound(match req.to_sequence {
            Some(seq) => format!("{product} has no rollout above sequence {seq} that is not rolled back"),
            None => format!("{product} has no rollout to roll back"),
        }));
    }
    let reason = if req.reason.is_empty() { "requested with rewindctl rollback".to_string() } else { req.reason };
    let mut agents = 0u32;
    for id in &ids {
        let before = sent_rollbacks(&inner.docs[id].machine);
        inner
            .handle(app, id, Event::Rollback { actor: actor.to_string(), reason: reason.clone(), scope: scope.clone() })
            .await?;
        let after = sent_rollbacks(&inner.docs[id].machine);
        agents += u32::try_from(after.saturating_sub(before)).unwrap_or(u32::MAX);
    }
    tracing::warn!(product, rollouts = ?ids, agents, "rollback started");
    Ok(RollbackStarted { rollouts: ids, agents })
}

/// Rolls back one part of the product's current release — a target, a
/// migration or a flag — with the bundle's pre-signed plan for it, or
/// turns a flag on with its pre-signed activation plan (`part.activate`),
/// on every endpoint in `scope` that applied (and those that apply later).
/// The release stays installed and its rollout goes on; `rollout status`
/// shows the part's progress under `partial_rollbacks`.
///
/// # Errors
/// [`Error::NotFound`] when the product has no rollout;
/// [`Error::InvalidArgument`] when its bundle has no plan for the part
/// (naming the ones it has); [`Error::FailedPrecondition`] when the
/// release was already rolled back, or this part already sent, in scope.
pub async fn send_part(
    app: &App,
    product: &str,
    part: Part,
    scope: Scope,
    reason: &str,
    actor: &str,
) -> Result<RollbackStarted> {
    crate::cluster::require_leader(app)?;
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let id = inner
        .registry()
        .current(product)
        .map(|m| m.spec().id())
        .ok_or_else(|| Error::NotFound(format!("{product} has no rollout to roll back a part of")))?;
    let version = inner.docs[&id].machine.spec().version.clone();
    let record = app
        .store
        .bundle(product.to_string(), Some(version))
        .await?
        .ok_or_else(|| Error::Store(format!("rollout {id}: its bundle is no longer stored")))?;
    let b: Bundle =
        serde_json::from_slice(&record.bytes).map_err(|e| Error::Store(format!("stored bundle {}: {e}", record.id)))?;
    if part.activate {
        b.activation_envelope(&part.subject).map_err(|e| Error::InvalidArgument(format!("{e} ({product})")))?;
    } else {
        b.rollback_envelope(part.granularity, Some(&part.subject)).map_err(|e| {
            let known: Vec<String> =
                b.rollback.iter().filter(|r| r.granularity == part.granularity).map(|r| r.subject.clone()).collect();
            Error::InvalidArgument(format!(
                "{e}; the bundle of {product} {} has {} rollback plans for: {}",
                b.release,
                part.granularity,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })?;
    }
    let reason = if reason.is_empty() { "requested with rewindctl" } else { reason };
    let before = part_progress(&inner.docs[&id].machine, &part);
    let (actor, reason) = (actor.to_string(), reason.to_string());
    let event = if part.activate {
        Event::FlagActivation { actor, reason, scope, flag: part.subject.clone() }
    } else {
        Event::PartialRollback { actor, reason, scope, part: part.clone() }
    };
    inner.handle(app, &id, event).await?;
    let after = part_progress(&inner.docs[&id].machine, &part);
    let sent = after.iter().filter(|(agent, p)| before.get(*agent) != Some(*p)).count();
    let agents = u32::try_from(sent).unwrap_or(u32::MAX);
    tracing::warn!(product, rollout = %id, %part, agents, "partial plan sent");
    Ok(RollbackStarted { rollouts: vec![id], agents })
}

/// Where the part's plan stands on each agent it was sent or queued to.
fn part_progress(m: &RolloutMachine, part: &Part) -> BTreeMap<AgentId, rewind_rollout::machine::RollbackProgress> {
    let key = part.key();
    m.agents().iter().filter_map(|(a, r)| Some((a.clone(), *r.parts.get(&key)?))).collect()
}

impl std::fmt::Display for RollbackStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rollback plan(s) for {}", self.agents, self.rollouts.join(", "))
    }
}

fn sent_rollbacks(m: &RolloutMachine) -> usize {
    use rewind_rollout::machine::RollbackProgress;
    m.agents().values().filter(|r| !matches!(r.rollback, RollbackProgress::NotNeeded)).count()
}

/// Whether a rollout state ends `rollout watch`.
#[must_use]
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "done" | "rolled_back" | "superseded" | "halted")
}

/// `fleet verify PRODUCT VERSION`: groups the endpoints that report the
/// release installed by the schema digest of each target, and lists as
/// drift every endpoint whose digest is not the one the rehearsal predicted
/// (the apply plan's `to` state). For a target built without a sample (no
/// prediction) the most common digest is taken as expected. An unreadable
/// target is drift too.
///
/// # Errors
/// [`Error::NotFound`] when no such bundle was uploaded.
pub async fn verify(app: &App, product: &str, version: &str) -> Result<(bool, serde_json::Value)> {
    let bundle = app.store.bundle(product.to_string(), Some(version.to_string())).await?.ok_or_else(|| {
        Error::NotFound(format!("no bundle for {product} {version}; upload it with rewindctl release upload BUNDLE"))
    })?;
    let b: Bundle =
        serde_json::from_slice(&bundle.bytes).map_err(|e| Error::Store(format!("stored bundle {}: {e}", bundle.id)))?;
    let payload = b.apply.payload_bytes().map_err(|e| Error::Store(format!("stored bundle {}: {e}", bundle.id)))?;
    let plan: rewind_shared::bundle::Plan =
        serde_json::from_slice(&payload).map_err(|e| Error::Store(format!("stored bundle {}: {e}", bundle.id)))?;
    // target -> digest -> agents
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for a in app.store.agents().await? {
        if a.revoked || !a.inventory.products.iter().any(|p| p.name == product && p.sequence == bundle.sequence) {
            continue;
        }
        for t in a.inventory.targets.iter().filter(|t| t.product == product) {
            let digest = match &t.digests {
                rewind_shared::fleet::TargetDigest::Ok { schema, .. } => schema.to_string(),
                rewind_shared::fleet::TargetDigest::Unreadable { error } => format!("unreadable: {error}"),
            };
            groups.entry(t.name.clone()).or_default().entry(digest).or_default().push(a.id.to_string());
        }
    }
    let mut out_groups = Vec::new();
    let mut drift = Vec::new();
    for (target, by_digest) in &groups {
        let predicted = plan.to.targets.get(target).and_then(|s| s.schema.clone());
        let expected = predicted
            .clone()
            .or_else(|| by_digest.iter().max_by_key(|(_, agents)| agents.len()).map(|(d, _)| d.clone()));
        for (digest, agents) in by_digest {
            out_groups.push(json!({"target": target, "digest": digest, "agents": agents, "expected": Some(digest) == expected.as_ref()}));
            if Some(digest) != expected.as_ref() {
                for agent in agents {
                    drift.push(json!({"agent": agent, "target": target, "digest": digest, "expected": expected, "predicted": predicted.is_some()}));
                }
            }
        }
    }
    let ok = drift.is_empty();
    Ok((ok, json!({"ok": ok, "product": product, "version": version, "groups": out_groups, "drift": drift})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_bad_ones_name_the_forms() {
        assert_eq!(parse_scope("").unwrap(), Scope::Fleet);
        assert_eq!(parse_scope("fleet").unwrap(), Scope::Fleet);
        assert_eq!(parse_scope("wave:canary").unwrap(), Scope::Wave { name: "canary".into() });
        let Scope::Cohort { selector } = parse_scope("cohort:ring=canary,os!=mac").unwrap() else { panic!() };
        assert_eq!(selector.as_str(), "ring=canary,os!=mac");
        assert_eq!(
            parse_scope("agent:agt-1, agt-2").unwrap(),
            Scope::Agents { agents: vec![AgentId::parse("agt-1").unwrap(), AgentId::parse("agt-2").unwrap()] }
        );
        for bad in ["planet:earth", "wave:", "cohort:ring in (a", "agent:", "agent:no spaces", "everyone"] {
            let e = parse_scope(bad).unwrap_err().to_string();
            assert!(e.contains("--scope") && e.contains("wave:NAME"), "{bad}: {e}");
        }
    }
}
