//! Unit-test fixtures shared by the coordinator's modules.

use std::path::Path;
use std::sync::Arc;

use rewind_shared::fleet::{AgentId, Inventory};

use crate::App;
use crate::store::AgentRecord;

/// An app on a fresh SQLite store in `dir` (`c.db`), with its CA and state
/// there and a fixed audit key.
pub async fn app(dir: &Path) -> App {
    App {
        config: crate::config::Config { state: dir.to_path_buf(), ..Default::default() },
        store: Arc::new(crate::store::sqlite::SqliteStore::open(&dir.join("c.db")).await.unwrap()),
        ca: crate::ca::Ca::load_or_create(dir, None).unwrap(),
        sessions: crate::fleet::Sessions::default(),
        key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        events: crate::events::Events::default(),
        ingestor: crate::results::Ingestor::default(),
        timings: crate::comms::Timings::default(),
        cluster: crate::cluster::Cluster::default(),
    }
}

/// An enrolled agent `id` with `audit_key` (hex) and `inventory`.
pub fn agent(id: &str, audit_key: String, inventory: Inventory) -> AgentRecord {
    AgentRecord {
        id: AgentId::parse(id).unwrap(),
        hostname: "h".into(),
        labels: Default::default(),
        fingerprint: format!("f-{id}"),
        enrolled: crate::now(),
        last_seen: None,
        inventory,
        revoked: false,
        audit_key,
        chain: None,
    }
}
