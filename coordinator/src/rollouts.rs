//! Interim plan delivery (issue 5 item 7; the phased-rollout engine replaces
//! it): bundles are checked against the coordinator's trust root at upload,
//! `StartRollout` queues the apply plan for every enrolled, unrevoked agent
//! whose inventory has the product, `Rollback` queues the pre-signed
//! release rollback plan for every agent that got the apply. Deliveries are
//! kept in the store until the agent acknowledges them (after it ran the
//! plan), so an agent that is offline gets its plan when it returns, and
//! agents check every plan against their own trust root again.

use std::collections::BTreeMap;

use rewind_shared::bundle::{BUNDLE_FORMAT, Bundle, MAX_BUNDLE_BYTES};
use rewind_shared::fleet::AgentId;
use rewind_shared::trust::TrustFile;
use rewind_shared::wire::v1;
use serde_json::json;

use crate::App;
use crate::error::{Error, Result};
use crate::store::{BundleRecord, Delivery};

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

fn plan_message(d: &Delivery, b: &BundleRecord) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage {
        body: Some(v1::coordinator_message::Body::Plan(v1::PlanDelivery {
            id: d.id.clone(),
            plan_id: b.id.clone(),
            product: b.product.clone(),
            sequence: b.sequence,
            kind: d.kind.clone(),
            envelope: b.bytes.clone(),
        })),
    }
}

/// Sends `agent`'s unacknowledged deliveries on its stream.
///
/// # Errors
/// When the store cannot be read.
pub async fn send_pending(app: &App, agent: &AgentId) -> Result<usize> {
    let pending = app.store.pending_deliveries(agent.clone()).await?;
    let n = pending.len();
    for (d, b) in pending {
        app.sessions.send(agent, plan_message(&d, &b));
    }
    Ok(n)
}

async fn queue(app: &App, agents: Vec<AgentId>, bundle: &BundleRecord, kind: &str) -> Result<u32> {
    let mut n = 0;
    for agent in agents {
        let d = Delivery {
            id: crate::random_id("dlv", 8),
            agent: agent.clone(),
            bundle: bundle.id.clone(),
            kind: kind.to_string(),
        };
        app.store.add_delivery(d.clone()).await?;
        app.sessions.send(&agent, plan_message(&d, bundle));
        n += 1;
    }
    Ok(n)
}

/// Queues the apply plan of `product` `version` for every enrolled agent
/// that has the product.
///
/// # Errors
/// [`Error::NotFound`] when no such bundle was uploaded.
pub async fn start(app: &App, product: &str, version: &str) -> Result<(String, u32)> {
    let bundle = app.store.bundle(product.to_string(), Some(version.to_string())).await?.ok_or_else(|| {
        Error::NotFound(format!("no bundle for {product} {version}; upload it with rewindctl release upload BUNDLE"))
    })?;
    let agents: Vec<AgentId> = app
        .store
        .agents()
        .await?
        .into_iter()
        .filter(|a| {
            !a.revoked
                && (a.inventory.targets.iter().any(|t| t.product == product)
                    || a.inventory.products.iter().any(|p| p.name == product))
        })
        .map(|a| a.id)
        .collect();
    let n = queue(app, agents, &bundle, "apply").await?;
    tracing::info!(product, version, agents = n, "rollout started");
    Ok((bundle.id, n))
}

/// Queues the pre-signed release rollback plan of the product's newest
/// rollout for every agent that got its apply plan.
///
/// # Errors
/// [`Error::NotFound`] when the product has no rollout.
pub async fn rollback(app: &App, product: &str) -> Result<u32> {
    let bundle = app
        .store
        .bundle(product.to_string(), None)
        .await?
        .ok_or_else(|| Error::NotFound(format!("{product} has no rollout to roll back")))?;
    let mut agents: Vec<AgentId> = app
        .store
        .deliveries_of(bundle.id.clone())
        .await?
        .into_iter()
        .filter(|(d, _)| d.kind == "apply")
        .map(|(d, _)| d.agent)
        .collect();
    agents.sort();
    agents.dedup();
    let n = queue(app, agents, &bundle, "rollback").await?;
    tracing::warn!(product, release = %bundle.release, agents = n, "rollback started");
    Ok(n)
}

/// `rollout status PRODUCT --json`: per agent, the outcome of the newest
/// rollout's plans from the stored (verified) results.
///
/// # Errors
/// [`Error::NotFound`] when the product has no rollout.
pub async fn status(app: &App, product: &str) -> Result<serde_json::Value> {
    let bundle = app
        .store
        .bundle(product.to_string(), None)
        .await?
        .ok_or_else(|| Error::NotFound(format!("{product} has no rollout; start one with rollout start")))?;
    let deliveries = app.store.deliveries_of(bundle.id.clone()).await?;
    let mut per_agent: BTreeMap<AgentId, bool> = BTreeMap::new();
    for (d, _) in &deliveries {
        *per_agent.entry(d.agent.clone()).or_default() |= d.kind == "rollback";
    }
    let mut agents = Vec::new();
    let (mut succeeded, mut failed, mut pending) = (0, 0, 0);
    for (agent, rolled_back) in per_agent {
        let results = app.store.results(agent.clone()).await?;
        let latest = results.iter().rev().find(|r| r.product == bundle.product && r.sequence == bundle.sequence);
        let outcome = match latest.map(|r| r.status.as_str()) {
            Some("applied") => "applied",
            Some("rolled_back") => "rolled_back",
            Some("refused") => "refused",
            Some("failed" | "needs_human") => "failed",
            _ => "pending",
        };
        let done = if rolled_back { outcome == "rolled_back" } else { outcome == "applied" };
        match outcome {
            "pending" => pending += 1,
            "failed" | "refused" => failed += 1,
            _ if done => succeeded += 1,
            _ => pending += 1,
        }
        agents.push(json!({"id": agent, "wave": "all", "outcome": outcome}));
    }
    let state = if pending > 0 { "running" } else { "done" };
    Ok(json!({
        "product": bundle.product, "version": bundle.release, "sequence": bundle.sequence, "state": state,
        "waves": [{"name": "all", "state": state, "succeeded": succeeded, "failed": failed, "pending": pending}],
        "agents": agents,
    }))
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
