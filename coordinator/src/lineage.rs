//! `rewindctl lineage AGENT TARGET` (DESIGN.md §10): per endpoint and
//! target, each release and migration applied or reversed, with the digests
//! before and after — read from the agent's signed results the coordinator
//! verified and stored, in the order the endpoint ran them (its audit chain
//! position).
//!
//! Consecutive steps are checked against each other: the schema a step
//! starts from should be the one the previous step left. When it is not,
//! the schema changed on the endpoint outside Rewind in between (the step
//! carries `"schema_changed_outside": true`); data legitimately changes
//! between steps (the app writes), so data digests are shown, not judged.

use std::collections::HashMap;

use rewind_shared::bundle::{Bundle, PlanKind};
use rewind_shared::fleet::AgentId;
use rewind_shared::report::ReportPayload;
use serde_json::{Value, json};

use crate::App;
use crate::error::{Error, Result};

/// The lineage of `target` on `agent`, oldest first.
///
/// # Errors
/// [`Error::NotFound`] for an unknown agent, or a target none of its
/// results names (the message lists the ones they do); a store failure.
pub async fn lineage(app: &App, agent: &AgentId, target: &str) -> Result<Vec<Value>> {
    if app.store.agent(agent.clone()).await?.is_none() {
        return Err(Error::NotFound(format!("no agent {agent}; rewindctl agents lists them")));
    }
    let mut reports: Vec<ReportPayload> = Vec::new();
    for r in app.store.results(agent.clone()).await? {
        match serde_json::from_slice::<ReportPayload>(&r.payload) {
            Ok(p) => reports.push(p),
            Err(e) => tracing::error!(result = %r.id, "stored report does not parse: {e}"),
        }
    }
    reports.sort_by_key(|p| p.chain.seq);
    // Which part of its bundle each signed rollback plan undoes.
    let mut parts: HashMap<(String, String), HashMap<String, String>> = HashMap::new();
    let mut steps = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    let mut last_schema: Option<String> = None;
    for p in &reports {
        for t in &p.targets {
            if !targets.contains(&t.name) {
                targets.push(t.name.clone());
            }
        }
        let Some(t) = p.targets.iter().find(|t| t.name == target) else { continue };
        let granularity = match (p.kind, p.signed_plan.as_deref()) {
            (Some(PlanKind::Rollback), Some(plan)) => {
                let key = (p.product.clone(), p.release.clone());
                if !parts.contains_key(&key) {
                    parts.insert(key.clone(), bundle_parts(app, &p.product, &p.release).await?);
                }
                parts[&key].get(plan).cloned().unwrap_or_else(|| "release".to_string())
            }
            _ => "release".to_string(),
        };
        let outside = matches!((&last_schema, &t.schema_before), (Some(a), Some(b)) if a != b);
        if t.schema_after.is_some() {
            last_schema.clone_from(&t.schema_after);
        }
        steps.push(json!({
            "time": p.time,
            "result": p.id,
            "product": p.product,
            "release": p.release,
            "sequence": p.sequence,
            "kind": p.kind,
            "granularity": granularity,
            "status": p.status.as_str(),
            "migrations": t.migrations,
            "schema_before": t.schema_before,
            "schema_after": t.schema_after,
            "data_before": t.data_before,
            "data_after": t.data_after,
            "snapshot": t.snapshot,
            "proof": t.proof,
            "chain_seq": p.chain.seq,
            "schema_changed_outside": outside,
        }));
    }
    if steps.is_empty() && !reports.is_empty() {
        return Err(Error::NotFound(format!(
            "agent {agent} reported nothing about target {target:?}; its results name: {}",
            if targets.is_empty() { "no target".to_string() } else { targets.join(", ") }
        )));
    }
    Ok(steps)
}

/// Signed plan id -> `"<granularity> <subject>"` for the bundle's partial
/// rollback plans (empty when the bundle is no longer stored).
async fn bundle_parts(app: &App, product: &str, release: &str) -> Result<HashMap<String, String>> {
    let Some(record) = app.store.bundle(product.to_string(), Some(release.to_string())).await? else {
        return Ok(HashMap::new());
    };
    let b: Bundle =
        serde_json::from_slice(&record.bytes).map_err(|e| Error::Store(format!("stored bundle {}: {e}", record.id)))?;
    Ok(crate::rollout_engine::partial_plans(&b).into_iter().map(|(plan, part)| (plan, part.key())).collect())
}
