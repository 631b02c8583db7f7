//! Feature flags across the fleet (DESIGN.md §2 `[[flag]]`, §8 `rewindctl
//! flags set|list`): what each product's current release sets, who owns
//! it, when it goes stale, and how many endpoints turned it off.
//!
//! Flag values are signed state: an endpoint only changes a flag through a
//! plan signed by k keys of its trust root. The release's bundle carries
//! two pre-signed plans per flag, its rollback (the flag's `previous`) and
//! its activation (the flag's `value`), so `flags set NAME off` and
//! `flags set NAME on` need no new signature: they send one of those plans
//! as a partial plan ([`crate::rollouts::send_part`]) — the release
//! stays installed and its rollout goes on. `on` is how an `activate =
//! "manual"` flag is turned on, and how a kill switch comes back; any
//! other value is a forward change and needs a release that sets it.

use rewind_rollout::machine::{ApplyOutcome, RollbackProgress};
use rewind_rollout::{Part, RolloutMachine};
use rewind_shared::bundle::{Bundle, Granularity};
use rewind_shared::release::Flag;
use serde_json::{Value, json};

use crate::App;
use crate::error::{Error, Result};
use crate::rollout_engine::{apply_plan, engine};
use crate::rollouts::{RollbackStarted, parse_scope};

/// One flag of a product's current release, with the fleet's view of it.
fn flag_row(m: &RolloutMachine, release: &str, f: &Flag, today: &str) -> Value {
    // An agent holds at most one of the two: a flag's latest operation
    // replaces the other (rewind_rollout::machine).
    let off_key = Part::rollback(Granularity::Flag, f.name.clone()).key();
    let on_key = Part::activation(&f.name).key();
    let (mut applied, mut on, mut off, mut pending, mut failed) = (0, 0, 0, 0, 0);
    for r in m.agents().values().filter(|r| r.outcome == ApplyOutcome::Applied) {
        applied += 1;
        let (progress, done) = match (r.parts.get(&on_key), r.parts.get(&off_key)) {
            (Some(p), _) => (p, &mut on),
            (None, Some(p)) => (p, &mut off),
            (None, None) => continue,
        };
        match progress {
            RollbackProgress::Proven => *done += 1,
            RollbackProgress::Queued | RollbackProgress::Sent { .. } => pending += 1,
            RollbackProgress::Failed | RollbackProgress::TimedOut => failed += 1,
            RollbackProgress::NotNeeded => {}
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
        "activate": f.activate.as_str(),
        "expires": f.expires,
        "stale": f.expires.as_deref().is_some_and(|e| e < today),
        "kill_switch": f.kill_switch,
        "applied": applied,
        "turned_on": on,
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

/// `rewindctl flags set PRODUCT NAME on|off [--scope S]`: turns a flag on
/// (its activation plan: any flag, the way a manual flag is turned on) or a
/// kill switch off (its rollback plan) on every endpoint in scope that
/// applied the release.
///
/// # Errors
/// [`Error::InvalidArgument`] for a value other than `on` or `off`, an
/// unknown flag, a bundle without activation plans or a bad scope;
/// [`Error::FailedPrecondition`] for `off` on a flag that is not a kill
/// switch (roll it back instead), or the same operation already sent in
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
        "on" => {
            let reason = if reason.is_empty() { format!("flag {name} turned on") } else { reason.to_string() };
            return crate::rollouts::send_part(app, product, Part::activation(name), scope, &reason, actor).await;
        }
        "off" => {}
        other => {
            return Err(Error::InvalidArgument(format!(
                "flags set {product} {name} {other:?}: use `on` (the flag's value, {}) or `off` (its previous \
                 value, {}): the release's bundle holds a signed plan for each; any other value is a forward change: \
                 release it (a release that sets the flag, signed by the trust root's keys)",
                flag["value"], flag["previous"]
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
    let part = Part::rollback(Granularity::Flag, name);
    crate::rollouts::send_part(app, product, part, scope, &reason, actor).await
}
