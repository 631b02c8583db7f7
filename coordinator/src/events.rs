//! The coordinator's in-process event bus. Every audit entry is published
//! here as it is written (rollout transitions, plans, reports, operator
//! actions), so the status page (SSE), the dashboard and webhooks follow the
//! same facts the audit log keeps, in the same order. Subscribers that fall
//! behind lose events (`broadcast` semantics) and must re-read the state
//! they show; the audit log stays the record.

use serde::Serialize;
use tokio::sync::broadcast;

/// One published fact.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Position in this process's stream (starts at 1 on every start).
    pub seq: u64,
    /// The audit kind, e.g. `rollout.halted`, `plan.sent`, `result.stored`.
    pub kind: String,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The product the event is about, when its parameters name one.
    pub product: Option<String>,
    /// The audit entry's parameters.
    pub params: serde_json::Value,
}

/// Events a slow subscriber may fall behind by before it misses some: a
/// burst of results from a large wave (one event each) must not push a
/// rollout transition out of the incident writer's reach.
pub const CAPACITY: usize = 16_384;

/// Publisher side; cheap to share behind the [`crate::App`].
pub struct Events {
    tx: broadcast::Sender<Event>,
    seq: std::sync::atomic::AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Self { tx: broadcast::channel(CAPACITY).0, seq: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl Events {
    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, kind: &str, params: serde_json::Value) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let product = params.get("product").and_then(|p| p.as_str()).map(String::from);
        let _ = self.tx.send(Event { seq, kind: kind.to_string(), time: crate::now(), product, params });
    }

    /// The sequence number of the last event published (0 before the first).
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.seq.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver of every event published from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_events_in_order_with_their_product() {
        let events = Events::default();
        let mut rx = events.subscribe();
        events.publish("rollout.started", serde_json::json!({"product": "notes", "version": "2026.11.0"}));
        events.publish("coordinator.start", serde_json::json!({}));
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!((a.seq, a.kind.as_str(), a.product.as_deref()), (1, "rollout.started", Some("notes")));
        assert_eq!((b.seq, b.product), (2, None));
    }
}
