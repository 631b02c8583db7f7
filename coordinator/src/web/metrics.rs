//! `/metrics`: Prometheus text exposition of the `metrics` facade, through
//! one `metrics-exporter-prometheus` recorder installed once per process
//! (no listener of its own: the web server serves it).
//!
//! Emitted here: `rewind_agents_connected` and `rewind_agents_enrolled`
//! (gauges, read at scrape time from the live sessions and the store),
//! `rewind_results_total{outcome}` (verified agent results by status),
//! `rewind_alarms_total{kind}` and `rewind_events_total{kind}` (every
//! audit event), counted from the event bus. The rollout engine emits
//! `rewind_plans_sent_total`, `rewind_rollout_halts_total` and the
//! `rewind_plan_push_seconds` histogram through the same facade; they are
//! described (and shown at zero) from the start. Counters count from the
//! process start, as Prometheus expects; a subscriber that falls more than
//! the bus's capacity behind loses counts (logged).

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::App;

/// Buckets of `rewind_plan_push_seconds` (the engine's decision to send a
/// plan → the agent's verified result for it).
pub const PUSH_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The process's recorder handle, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("rewind_plan_push_seconds".into()), &PUSH_BUCKETS)
                .expect("non-empty buckets")
        };
        let handle = builder().install_recorder().unwrap_or_else(|e| {
            // Another recorder owns the facade (a program embedding the
            // coordinator installed its own): the counters go there, and
            // /metrics stays empty rather than failing the start.
            tracing::warn!("metrics: {e}; the process has another metrics recorder, /metrics will be empty");
            builder().build_recorder().handle()
        });
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("rewind_agents_connected", "Agents with a stream open to this coordinator");
    describe_gauge!("rewind_agents_enrolled", "Enrolled agents that are not revoked");
    describe_counter!("rewind_results_total", "Verified agent results stored, by outcome");
    describe_counter!("rewind_alarms_total", "Integrity alarms raised, by kind");
    describe_counter!("rewind_events_total", "Audit events published, by kind");
    describe_counter!("rewind_plans_sent_total", "Plans sent to agents");
    describe_counter!("rewind_rollout_halts_total", "Rollouts halted");
    describe_histogram!(
        "rewind_plan_push_seconds",
        Unit::Seconds,
        "Time from the engine's decision to send a plan to the agent's verified result for it"
    );
    metrics::counter!("rewind_plans_sent_total").increment(0);
    metrics::counter!("rewind_rollout_halts_total").increment(0);
}

/// Counts the event bus into the counters until `stop` turns true.
pub(super) async fn follow(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::RecvError;
    let _ = handle();
    let mut rx = app.events.subscribe();
    loop {
        let e = tokio::select! {
            _ = stop.changed() => return,
            r = rx.recv() => match r {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!("metrics: {n} events missed (the bus ran ahead); counters are short by them");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        metrics::counter!("rewind_events_total", "kind" => e.kind.clone()).increment(1);
        if e.kind == "result" || e.kind.starts_with("result.") {
            let outcome = e.params["status"].as_str().unwrap_or("unknown").to_string();
            metrics::counter!("rewind_results_total", "outcome" => outcome).increment(1);
        }
        if e.kind == "alarm" {
            let kind = e.params["kind"].as_str().unwrap_or("unknown").to_string();
            metrics::counter!("rewind_alarms_total", "kind" => kind).increment(1);
        }
    }
}

/// The exposition text, gauges refreshed first.
///
/// # Errors
/// When the store cannot be read.
pub async fn render(app: &App) -> crate::error::Result<String> {
    let h = handle();
    let enrolled = app.store.agents().await?.iter().filter(|a| !a.revoked).count();
    #[allow(clippy::cast_precision_loss)]
    {
        metrics::gauge!("rewind_agents_connected").set(app.sessions.count() as f64);
        metrics::gauge!("rewind_agents_enrolled").set(enrolled as f64);
    }
    h.run_upkeep();
    Ok(h.render())
}
