//! Feature flags across the fleet (DESIGN.md §2 `[[flag]]`, §8 `rewindctl
//! flags set|list`): what each product's current release sets, who owns
//! it, when it goes stale, and how many endpoints turned it off.
//!
//! Flag values are signed state: an endpoint only changes a flag through a
//! plan signed by k keys of its trust root. Turning a kill switch off is
//! the one change that needs no new signature — the release's bundle
//! carries a pre-signed rollback plan for every flag — so `flags set NAME
//! off` sends that plan as a partial rollback ([`crate::rollouts::partial_rollback`]):
//! the release stays installed and its rollout goes on. Any other value
//! is a forward change and needs a release that sets it.

use rewind_rollout::machine::{ApplyOutcome, RollbackProgress};
use rewind_rollout::{Part, RolloutMachine};
use rewind_shared::bundle::{Bundle, Granularity};
use rewind_shared::release::{Activation, Flag};
use serde_json::{Value, json};

use crate::App;
use crate::error::{Error, Result};
use crate::rollout_engine::{apply_plan, engine};
use crate::rollouts::{RollbackStarted, parse_scope};

/// One flag of a product's current release, with the fleet's view of it.
fn flag_row(m: &RolloutMachine, release: &str, f: &Flag, today: &str) -> Value {
    let key = Part { granularity: Granularity::Flag, subject: f.name.clone() }.key();
    let (mut applied, mut off, mut pending, mut failed) = (0, 0, 0, 0);
    for r in m.agents().values().filter(|r| r.outcome == ApplyOutcome::Applied) {
        applied += 1;
        match r.parts.get(&key) {
            Some(RollbackProgress::Proven) => off += 1,
            Some(RollbackProgress::Queued | RollbackProgress::Sent { .. }) => pending += 1,
            Some(RollbackProgress::Failed | RollbackProgress::TimedOut) => failed += 1,
            Some(RollbackProgress::NotNeeded) | None => {}
        }
    }
    let spec = m.spec();
    json!({
        "product": spec.product,
        "release": release,
        "sequence": spec.sequence,
        "rollout": spec.id(),
        "name": f.name,
        "value": f.value,
        "previous": f.previous,
        "owner": f.owner,
        "activate": match f.activate {
            Activation::AfterMigrations => "after-migrations",
            Activation::WithRelease => "with-release",
            Activation::Manual => "manual",
        },
        "expires": f.expires,
        "stale": f.expires.as_deref().is_some_and(|e| e < today),
        "kill_switch": f.kill_switch,
        "applied": applied,
        "turned_off": off,
        "pending": pending,
        "failed": failed,
    })
}

/// Today as `YYYY-MM-DD` (UTC), the form of a flag's `expires`.
fn today() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_string()
}

/// The flags of every product's current rollout (or of `product`), sorted
/// by product and name.
///
/// # Errors
/// When the store cannot be read or a stored bundle does not parse.
pub async fn list(app: &App, product: Option<&str>) -> Result<Vec<Value>> {
    let engine = engine(app);
    let mut inner = engine.inner.lock().await;
    inner.load(app).await?;
    let registry = inner.registry();
    let mut products: Vec<String> = registry.iter().map(|(_, m)| m.spec().product.clone()).collect();
    products.sort();
    products.dedup();
    let today = today();
    let mut rows = Vec::new();
    for p in products.iter().filter(|p| product.is_none_or(|want| want == p.as_str())) {
        let Some(m) = registry.current(p) else { continue };
        let Some(record) = app.store.bundle(p.clone(), Some(m.spec().version.clone())).await? else { continue };
        let b: Bundle = serde_json::from_slice(&record.bytes)
            .map_err(|e| Error::Store(format!("stored bundle {}: {e}", record.id)))?;
        let plan = apply_plan(&b)?;
        rows.extend(plan.steps.flags.iter().map(|f| flag_row(m, &b.release, f, &today)));
    }
    Ok(rows)
}

/// `rewindctl flags set PRODUCT NAME off [--scope S]`: turns a kill switch
/// off on every endpoint in scope that applied the release.
///
/// # Errors
/// [`Error::InvalidArgument`] for a value other than `off`, an unknown
/// flag or a bad scope; [`Error::FailedPrecondition`] for a flag that is
/// not a kill switch (roll it back instead) or one already turned off in
/// scope; [`Error::NotFound`] when the product has no rollout.
pub async fn set(
    app: &App,
    product: &str,
    name: &str,
    value: &str,
    scope: &str,
    reason: &str,
    actor: &str,
) -> Result<RollbackStarted> {
    let scope = parse_scope(scope)?;
    let flags = list(app, Some(product)).await?;
    if flags.is_empty() {
        return Err(Error::NotFound(format!("{product} has no rollout whose release sets flags")));
    }
    let Some(flag) = flags.iter().find(|f| f["name"] == name) else {
        let names: Vec<&str> = flags.iter().filter_map(|f| f["name"].as_str()).collect();
        return Err(Error::InvalidArgument(format!(
            "{product} {} sets no flag {name:?}; its flags are: {}",
            flags[0]["release"].as_str().unwrap_or(""),
            names.join(", ")
        )));
    };
    match value {
        "off" => {}
        other => {
            return Err(Error::InvalidArgument(format!(
                "flags set {product} {name} {other:?}: only `off` (the flag's previous value, {}) needs no new \
                 signature; any other value is a forward change: release it (a release that sets the flag, signed \
                 by the trust root's keys)",
                flag["previous"]
            )));
        }
    }
    if flag["kill_switch"] != true {
        return Err(Error::FailedPrecondition(format!(
            "flag {name} of {product} {} is not a kill switch (kill_switch = true in release.toml); \
             to take it back on the endpoints, roll it back: rewindctl rollback {product} --granularity flag --subject {name}",
            flag["release"].as_str().unwrap_or("")
        )));
    }
    let reason = if reason.is_empty() { format!("kill switch {name} turned off") } else { reason.to_string() };
    let part = Part { granularity: Granularity::Flag, subject: name.to_string() };
    crate::rollouts::partial_rollback(app, product, part, scope, &reason, actor).await
}
