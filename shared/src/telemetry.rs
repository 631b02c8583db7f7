//! Health telemetry (DESIGN.md §5, docs/telemetry.md): samples of named
//! metrics per product that agents send over the stream, plan progress
//! steps, and how a `[[trigger]]` is judged on a series of samples. The agent
//! (local revert) and the coordinator (fleet-wide triggers) use the same
//! rules, so a trigger means the same thing on both sides.
//!
//! Guarantees: a [`Sample`] built from wire data has at most
//! [`MAX_METRICS`] metrics, each named by [`check_name`]'s rules and with a
//! finite value; a [`ProgressStep`] has bounded, printable text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::release::Trigger;
use crate::wire::{WireError, v1};

/// Most metrics in one sample.
pub const MAX_METRICS: usize = 256;
/// Longest metric name, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest product name on the wire, in bytes.
const MAX_PRODUCT: usize = 128;
/// Longest text field of a progress step, in bytes.
const MAX_TEXT: usize = 512;

/// One sample: a product's metrics on one endpoint at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub product: String,
    /// Unix milliseconds, the agent's clock.
    pub time_unix_ms: i64,
    pub metrics: BTreeMap<String, f64>,
}

/// Checks a metric name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits,
/// `_`, `.`, `:` and `-`.
///
/// # Errors
/// A message naming the metric and the rule.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("metric name {name:?}: expected 1 to {MAX_NAME} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))) {
        return Err(format!("metric name {name:?}: character {c:?} is not allowed (use letters, digits, _ . : -)"));
    }
    Ok(())
}

/// Checks a set of metrics: count, names, finite values.
///
/// # Errors
/// A message naming the first metric at fault.
pub fn check_metrics(metrics: &BTreeMap<String, f64>) -> Result<(), String> {
    if metrics.len() > MAX_METRICS {
        return Err(format!("{} metrics: at most {MAX_METRICS} per product", metrics.len()));
    }
    for (name, value) in metrics {
        check_name(name)?;
        if !value.is_finite() {
            return Err(format!("metric {name}: value {value} is not a finite number"));
        }
    }
    Ok(())
}

fn text(field: &'static str, s: String, max: usize) -> Result<String, WireError> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(WireError::Invalid { field, message: format!("expected at most {max} printable characters") });
    }
    Ok(s)
}

impl TryFrom<v1::Telemetry> for Sample {
    type Error = WireError;
    fn try_from(w: v1::Telemetry) -> Result<Self, WireError> {
        let product = text("telemetry.product", w.product, MAX_PRODUCT)?;
        if product.is_empty() {
            return Err(WireError::Missing { field: "telemetry.product" });
        }
        if w.metrics.len() > MAX_METRICS {
            return Err(WireError::Invalid {
                field: "telemetry.metrics",
                message: format!("{} metrics: at most {MAX_METRICS}", w.metrics.len()),
            });
        }
        // Up to the last millisecond of year 9999, the end of RFC 3339.
        if !(0..=253_402_300_799_999).contains(&w.time_unix_ms) {
            return Err(WireError::Invalid {
                field: "telemetry.time_unix_ms",
                message: format!("{} is not a time between 1970 and 9999 in Unix milliseconds", w.time_unix_ms),
            });
        }
        let metrics: BTreeMap<String, f64> = w.metrics.into_iter().collect();
        check_metrics(&metrics).map_err(|message| WireError::Invalid { field: "telemetry.metrics", message })?;
        Ok(Sample { product, time_unix_ms: w.time_unix_ms, metrics })
    }
}

impl From<&Sample> for v1::Telemetry {
    fn from(s: &Sample) -> Self {
        v1::Telemetry {
            product: s.product.clone(),
            time_unix_ms: s.time_unix_ms,
            metrics: s.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

/// One step of a plan as the agent's journal recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressStep {
    pub plan_id: String,
    pub delivery_id: String,
    pub product: String,
    pub step: String,
    pub phase: String,
    pub migration: String,
    pub target: String,
    pub done: u32,
    pub total: u32,
    pub message: String,
}

impl TryFrom<v1::Progress> for ProgressStep {
    type Error = WireError;
    fn try_from(w: v1::Progress) -> Result<Self, WireError> {
        if w.done > w.total {
            return Err(WireError::Invalid {
                field: "progress.done",
                message: format!("{} steps done of {}: done must not exceed total", w.done, w.total),
            });
        }
        Ok(ProgressStep {
            plan_id: text("progress.plan_id", w.plan_id, MAX_PRODUCT)?,
            delivery_id: text("progress.delivery_id", w.delivery_id, MAX_PRODUCT)?,
            product: text("progress.product", w.product, MAX_PRODUCT)?,
            step: text("progress.step", w.step, MAX_TEXT)?,
            phase: text("progress.phase", w.phase, 32)?,
            migration: text("progress.migration", w.migration, MAX_PRODUCT)?,
            target: text("progress.target", w.target, MAX_PRODUCT)?,
            done: w.done,
            total: w.total,
            message: text("progress.message", w.message, MAX_TEXT)?,
        })
    }
}

impl From<&ProgressStep> for v1::Progress {
    fn from(p: &ProgressStep) -> Self {
        v1::Progress {
            plan_id: p.plan_id.clone(),
            step: p.step.clone(),
            done: p.done,
            total: p.total,
            message: p.message.clone(),
            delivery_id: p.delivery_id.clone(),
            product: p.product.clone(),
            migration: p.migration.clone(),
            phase: p.phase.clone(),
            target: p.target.clone(),
        }
    }
}

/// The trigger as people read it: `app.crash_count above 3 within 10m`.
#[must_use]
pub fn describe(t: &Trigger) -> String {
    let mut parts = vec![t.metric.clone()];
    if let Some(a) = t.above {
        parts.push(format!("above {a}"));
    }
    if let Some(b) = t.below {
        parts.push(format!("below {b}"));
    }
    parts.push(format!("within {}", short_duration(t.window)));
    parts.join(" ")
}

/// `600s` as `10m`, `5400s` as `1h30m`, `1500ms` as `1s500ms`.
fn short_duration(d: std::time::Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Judges a trigger on a series of `(unix ms, value)` points of its metric:
/// it fires when any point taken in the last `window` (and not before
/// `since_ms`, e.g. the apply) is above `above` or below `below`. Returns
/// the first such value, oldest first.
#[must_use]
pub fn fires(t: &Trigger, points: &[(i64, f64)], now_ms: i64, since_ms: i64) -> Option<f64> {
    let window = i64::try_from(t.window.as_millis()).unwrap_or(i64::MAX);
    let from = now_ms.saturating_sub(window).max(since_ms);
    points
        .iter()
        .filter(|(at, _)| *at >= from && *at <= now_ms)
        .map(|(_, v)| *v)
        .find(|v| t.above.is_some_and(|a| *v > a) || t.below.is_some_and(|b| *v < b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn trigger(above: Option<f64>, below: Option<f64>) -> Trigger {
        Trigger { metric: "app.crash_count".into(), above, below, window: Duration::from_secs(600) }
    }

    #[test]
    fn a_trigger_fires_on_a_point_inside_its_window_only() {
        let t = trigger(Some(3.0), None);
        let now = 1_000_000_000;
        assert_eq!(fires(&t, &[(now - 1000, 2.0), (now - 500, 5.0)], now, 0), Some(5.0));
        assert_eq!(fires(&t, &[(now - 1000, 3.0)], now, 0), None, "3 is not above 3");
        assert_eq!(fires(&t, &[(now - 601_000, 9.0)], now, 0), None, "outside the 10m window");
        assert_eq!(fires(&t, &[(now - 1000, 9.0)], now, now - 500), None, "before `since` (the apply)");
        let low = trigger(None, Some(0.9));
        assert_eq!(fires(&low, &[(now, 0.95), (now, 0.5)], now, 0), Some(0.5));
        assert_eq!(describe(&t), "app.crash_count above 3 within 10m");
    }

    #[test]
    fn wire_samples_are_checked() {
        let ok = v1::Telemetry {
            product: "notes".into(),
            time_unix_ms: 1,
            metrics: [("app.crash_count".to_string(), 2.0)].into_iter().collect(),
        };
        let s = Sample::try_from(ok.clone()).unwrap();
        assert_eq!(v1::Telemetry::from(&s), ok);
        let mut nan = ok.clone();
        nan.metrics.insert("app.x".into(), f64::NAN);
        assert!(Sample::try_from(nan).unwrap_err().to_string().contains("app.x"));
        let mut bad = ok.clone();
        bad.metrics.insert("app x".into(), 1.0);
        assert!(Sample::try_from(bad).unwrap_err().to_string().contains("not allowed"));
        let mut many = ok.clone();
        many.metrics = (0..=MAX_METRICS).map(|i| (format!("m{i}"), 1.0)).collect();
        assert!(Sample::try_from(many).unwrap_err().to_string().contains("at most 256"));
        let mut late = ok.clone();
        late.time_unix_ms = i64::MAX;
        assert!(Sample::try_from(late).unwrap_err().to_string().contains("time_unix_ms"));
        let mut none = ok;
        none.product = String::new();
        assert!(Sample::try_from(none).is_err());
        let p = v1::Progress { done: 3, total: 2, ..Default::default() };
        assert!(ProgressStep::try_from(p).unwrap_err().to_string().contains("done"));
    }
}
