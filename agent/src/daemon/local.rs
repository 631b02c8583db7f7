//! Local revert (DESIGN.md §5, `local_revert = true` in agent.toml): after
//! a plan from the coordinator applies a release, the endpoint watches the
//! release's `[[trigger]]`s on its own metrics for the release's bake — the
//! longest `bake` of its `[rollout]` waves, since the agent does not know
//! which wave it is in — and, when one fires, rolls the release back at once
//! with the release's pre-signed rollback plan from the bundle it received,
//! through the same engine path as a rollback sent by the coordinator. The
//! result carries the reason `local_revert: trigger METRIC fired: ...`, and
//! the decision is an entry of the agent's signed audit chain.
//!
//! The bake ends at its deadline, when a trigger fired, or when another
//! plan for the product arrives (the coordinator moved on). It is kept in
//! `<state>/bake.json`, so a restarted daemon keeps watching.
//! Only points taken after the apply count: a value the app reported before
//! the release is not the release's doing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rewind_shared::bundle::{Bundle, Granularity};
use rewind_shared::release::Trigger;
use rewind_shared::telemetry::{describe, fires};
use rewind_shared::trust::TrustFile;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::AgentConfig;
use super::telemetry::Hub;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::state::State;

const BAKES: &str = "bake.json";
/// `bake.json` is read-modified-written by the stream (begin, end) and the
/// health task (judge) on blocking threads: one at a time.
static BAKES_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bakes_lock() -> std::sync::MutexGuard<'static, ()> {
    BAKES_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
const REASONS: &str = "local_revert.json";

/// A release being baked on this endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bake {
    pub product: String,
    pub release: String,
    pub sequence: u64,
    /// The delivery that applied it, and the bundle it brought.
    pub delivery: String,
    pub bundle: PathBuf,
    pub applied_ms: i64,
    pub until_ms: i64,
    pub triggers: Vec<Trigger>,
}

/// The bakes in progress, by product.
#[must_use]
pub fn load(state: &Path) -> BTreeMap<String, Bake> {
    let path = state.join(BAKES);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!("{}: {e}; no bake in progress", path.display());
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

fn save(state: &Path, bakes: &BTreeMap<String, Bake>) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(bakes).expect("bakes serialize");
    fsutil::write_atomic(&state.join(BAKES), &bytes, 0o644)
}

/// Ends the bake of `product`, if any.
///
/// # Errors
/// When `bake.json` cannot be written.
pub fn end(state: &Path, product: &str) -> Result<()> {
    let _one = bakes_lock();
    let mut bakes = load(state);
    if bakes.remove(product).is_some() {
        save(state, &bakes)?;
    }
    Ok(())
}

/// Starts the bake of the release a delivery just applied. `None` (nothing
/// to watch) when the release has no `[[trigger]]` or no wave with a bake.
///
/// # Errors
/// When the bundle or the trust root cannot be read or opened.
pub fn begin(cfg: &AgentConfig, state: &Path, delivery: &str, bundle: &Path, now_ms: i64) -> Result<Option<Bake>> {
    let trust_path = cfg.trust.as_ref().ok_or_else(|| Error::BadInput("agent.toml has no `trust`".into()))?;
    let text = std::fs::read_to_string(trust_path).map_err(Error::io(trust_path))?;
    let trust = TrustFile::parse(&text).map_err(|e| Error::BadInput(format!("{}: {e}", trust_path.display())))?;
    let b = Bundle::load(bundle).map_err(|r| Error::BadInput(r.to_string()))?;
    let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
    let (plan, _) = b.apply.open(&trust, now_s).map_err(|r| Error::BadInput(r.to_string()))?;
    let bake = plan.steps.rollout.as_ref().and_then(|r| r.waves.iter().map(|w| w.bake).max()).unwrap_or_default();
    if plan.steps.triggers.is_empty() || bake.is_zero() {
        tracing::info!(product = %plan.product, release = %plan.release, "local revert: no trigger or no bake; nothing to watch");
        return Ok(None);
    }
    let bake = Bake {
        product: plan.product.clone(),
        release: plan.release.clone(),
        sequence: plan.sequence,
        delivery: delivery.to_string(),
        bundle: bundle.to_path_buf(),
        applied_ms: now_ms,
        until_ms: now_ms.saturating_add(i64::try_from(bake.as_millis()).unwrap_or(i64::MAX)),
        triggers: plan.steps.triggers.clone(),
    };
    let _one = bakes_lock();
    let mut bakes = load(state);
    bakes.insert(bake.product.clone(), bake.clone());
    save(state, &bakes)?;
    tracing::info!(product = %bake.product, release = %bake.release, triggers = bake.triggers.len(), bake_ms = bake.until_ms - bake.applied_ms, "local revert: baking");
    Ok(Some(bake))
}

/// A trigger that fired during a bake.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub bake: Bake,
    pub trigger: Trigger,
    pub value: f64,
}

impl Fired {
    /// The result's reason: `local_revert: trigger METRIC fired: ...`.
    #[must_use]
    pub fn reason(&self) -> String {
        format!(
            "local_revert: trigger {} fired: {} = {} ({}) during the bake of {} {}",
            self.trigger.metric,
            self.trigger.metric,
            self.value,
            describe(&self.trigger),
            self.bake.product,
            self.bake.release
        )
    }
}

/// Judges every bake's triggers on the hub's samples; bakes past their
/// deadline end (and are dropped from `bake.json`).
pub fn judge(state: &Path, hub: &Hub, now_ms: i64) -> Vec<Fired> {
    let _one = bakes_lock();
    let mut bakes = load(state);
    let before = bakes.len();
    bakes.retain(|_, b| {
        let going = now_ms <= b.until_ms;
        if !going {
            tracing::info!(product = %b.product, release = %b.release, "local revert: bake over, no trigger fired");
        }
        going
    });
    if bakes.len() != before
        && let Err(e) = save(state, &bakes)
    {
        tracing::warn!("local revert: {e}");
    }
    let mut out = Vec::new();
    for b in bakes.values() {
        for t in &b.triggers {
            if let Some(value) = fires(t, &hub.series(&b.product, &t.metric), now_ms, b.applied_ms) {
                out.push(Fired { bake: b.clone(), trigger: t.clone(), value });
                break;
            }
        }
    }
    out
}

/// Rolls the baked release back with its pre-signed release rollback plan,
/// through the engine (as a coordinator rollback would), after an audit
/// entry saying why; the reason is kept for the result sent to the
/// coordinator. Blocking. Ends the bake whatever happens.
///
/// # Errors
/// When the plan is refused (e.g. already rolled back) or the engine fails.
pub fn revert(cfg: &AgentConfig, state: &Path, fired: &Fired) -> Result<String> {
    end(state, &fired.bake.product)?;
    let trust = cfg.trust.as_ref().ok_or_else(|| Error::BadInput("agent.toml has no `trust`".into()))?;
    let reason = fired.reason();
    let dbs: Vec<String> = cfg
        .targets
        .iter()
        .filter(|t| t.product == fired.bake.product)
        .map(|t| format!("{}={}", t.name, t.path.display()))
        .collect();
    let st = State::open(state)?;
    crate::recover::recover(&st)?;
    st.audit(
        "local_revert",
        &json!({"product": fired.bake.product, "release": fired.bake.release, "sequence": fired.bake.sequence,
                "trigger": describe(&fired.trigger), "metric": fired.trigger.metric, "value": fired.value,
                "delivery": fired.bake.delivery, "reason": reason}),
    )?;
    // Kept before the plan runs, so that its result never leaves without it.
    let bundle_id = Bundle::load(&fired.bake.bundle).map_err(|r| Error::BadInput(r.to_string()))?.id;
    let mut all = reasons(state);
    all.insert(bundle_id, reason.clone());
    let bytes = serde_json::to_vec_pretty(&all).expect("reasons serialize");
    fsutil::write_atomic(&state.join(REASONS), &bytes, 0o644)?;
    let report = crate::bundle::rollback(&st, &fired.bake.bundle, trust, &dbs, Granularity::Release, None)?;
    Ok(format!("{reason}; {}", report.message))
}

/// Reasons of rollbacks this daemon ran on its own, by bundle id.
#[must_use]
pub fn reasons(state: &Path) -> BTreeMap<String, String> {
    std::fs::read(state.join(REASONS)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The reason to send with a report: the local revert's, for a rollback
/// (not a refusal) of a bundle this daemon reverted on its own.
#[must_use]
pub fn reason_for(reasons: &BTreeMap<String, String>, payload: &[u8]) -> String {
    let Ok(p) = serde_json::from_slice::<serde_json::Value>(payload) else { return String::new() };
    let is_local = p["kind"] == "rollback" && p["status"] != "refused";
    match p["bundle"].as_str().and_then(|b| reasons.get(b)) {
        Some(r) if is_local => r.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_shared::telemetry::Sample;
    use std::time::Duration;

    fn bake(applied_ms: i64, until_ms: i64) -> Bake {
        Bake {
            product: "notes".into(),
            release: "2026.11.0".into(),
            sequence: 7,
            delivery: "dlv-1".into(),
            bundle: "b.json".into(),
            applied_ms,
            until_ms,
            triggers: vec![Trigger {
                metric: "app.crash_count".into(),
                above: Some(3.0),
                below: None,
                window: Duration::from_secs(600),
            }],
        }
    }

    fn sample(at: i64, crashes: f64) -> Sample {
        Sample { product: "notes".into(), time_unix_ms: at, metrics: [("app.crash_count".to_string(), crashes)].into() }
    }

    #[test]
    fn triggers_fire_only_on_points_after_the_apply_and_bakes_end_at_their_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::default();
        hub.record(vec![sample(900, 9.0)]);
        save(dir.path(), &[("notes".to_string(), bake(1000, 5000))].into()).unwrap();
        assert!(judge(dir.path(), &hub, 1500).is_empty(), "9 crashes before the apply do not count");
        hub.record(vec![sample(2000, 2.0)]);
        assert!(judge(dir.path(), &hub, 2000).is_empty());
        hub.record(vec![sample(3000, 5.0)]);
        let fired = judge(dir.path(), &hub, 3000);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].value, 5.0);
        assert!(fired[0].reason().starts_with("local_revert: trigger app.crash_count fired: app.crash_count = 5 "));
        assert!(judge(dir.path(), &hub, 6000).is_empty(), "the bake is over");
        assert!(load(dir.path()).is_empty(), "and forgotten");
    }

    #[test]
    fn only_a_local_rollback_of_the_reverted_bundle_carries_the_reason() {
        let reasons: BTreeMap<String, String> = [("bnd-1".to_string(), "local_revert: x".to_string())].into();
        let payload = |kind: &str, status: &str, bundle: &str| {
            serde_json::to_vec(&json!({"kind": kind, "status": status, "bundle": bundle})).unwrap()
        };
        assert_eq!(reason_for(&reasons, &payload("rollback", "rolled_back", "bnd-1")), "local_revert: x");
        assert_eq!(reason_for(&reasons, &payload("rollback", "refused", "bnd-1")), "");
        assert_eq!(reason_for(&reasons, &payload("apply", "applied", "bnd-1")), "");
        assert_eq!(reason_for(&reasons, &payload("rollback", "rolled_back", "bnd-2")), "");
    }
}
