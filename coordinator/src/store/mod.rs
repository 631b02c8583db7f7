//! Where the coordinator keeps enrollment tokens, agents (with the pinned
//! certificate fingerprint and last inventory) and operator tokens. Behind
//! the [`Store`] trait so that the PostgreSQL store of a later issue shares
//! callers and tests with [`sqlite::SqliteStore`]. Secrets (tokens) are only
//! ever stored as BLAKE3 hashes.

pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;

use async_trait::async_trait;
use rewind_shared::fleet::{AgentId, Inventory, Labels};
use rewind_shared::report::ChainPoint;
use serde::{Deserialize, Serialize};

pub use rewind_rollout::Part;

use crate::auth::Role;
use crate::error::{Error, Result};

/// The outcome of redeeming an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeem {
    /// Accepted; one use consumed. Carries the token's labels.
    Accepted(Labels),
    Unknown,
    UsedUp,
    Expired,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub hostname: String,
    pub labels: Labels,
    /// BLAKE3 of the client certificate DER issued at enrollment.
    pub fingerprint: String,
    /// RFC 3339.
    pub enrolled: String,
    pub last_seen: Option<String>,
    pub inventory: Inventory,
    pub revoked: bool,
    /// Hex Ed25519 key the agent signs results and audit entries with.
    pub audit_key: String,
    /// Audit chain point of the newest accepted result.
    pub chain: Option<ChainPoint>,
}

/// An uploaded bundle (checked against the trust root at upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRecord {
    pub id: String,
    pub product: String,
    pub release: String,
    pub sequence: u64,
    pub bytes: Vec<u8>,
}

/// A plan to deliver to one agent: the bundle and which of its plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub agent: AgentId,
    pub bundle: String,
    /// `apply` or `rollback`.
    pub kind: String,
    /// For a rollback: the part whose pre-signed plan this is (a target,
    /// migration or flag); `None` for the release's rollback plan.
    pub part: Option<Part>,
}

/// How [`Delivery::part`] is stored: `""` or `"<granularity> <subject>"`.
#[must_use]
pub fn part_text(part: Option<&Part>) -> String {
    part.map(Part::key).unwrap_or_default()
}

/// Reads [`part_text`] back.
///
/// # Errors
/// When the stored text is not `"<granularity> <subject>"`.
pub fn part_from_text(text: &str) -> Result<Option<Part>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e: String| Error::Store(format!("delivery {e}")))
}

/// A verified agent result, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResult {
    pub id: String,
    pub agent: AgentId,
    pub plan: String,
    pub signed_plan: Option<String>,
    pub product: String,
    pub release: String,
    pub sequence: u64,
    pub status: String,
    /// `ok`, `gap` or `fork` (see `rewind_shared::report::ChainContinuity`).
    pub continuity: String,
    /// The exact signed payload bytes and the signature.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The audit entries [`Store::store_results`] appends for the new results
/// of a batch.
#[derive(Clone)]
pub struct ResultAudit {
    /// The `result` entry's parameters (JSON text), one per result.
    pub params: Vec<String>,
    pub key: ed25519_dalek::SigningKey,
}

impl ResultAudit {
    /// The `(kind, params)` entries of the new results, in order.
    #[must_use]
    pub fn entries(self, news: &[bool]) -> Vec<(String, String)> {
        news.iter().zip(self.params).filter(|(new, _)| **new).map(|(_, p)| ("result".to_string(), p)).collect()
    }
}

/// One stored version of a product's communication template
/// (`templates/<name>.md`, DESIGN.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersion {
    pub product: String,
    /// The event name, e.g. `rollback_started`.
    pub name: String,
    /// 1, 2, ... per (product, name).
    pub version: u32,
    /// The template's source text (front matter included).
    pub body: String,
    /// The operator who edited it, or who uploaded the bundle it came with.
    pub author: String,
    /// `edit`, or `release <version> (bundle <id>)`.
    pub source: String,
    /// RFC 3339, set by the store.
    pub time: String,
}

/// One message of an incident (several make its timeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    pub incident: String,
    pub product: String,
    pub release: String,
    /// The template event: `incident_started`, `rollback_started`, ...
    pub kind: String,
    /// The incident's state after this update: `investigating`,
    /// `rolling_back`, `rolled_back`, `resolved`, `scheduled`.
    pub state: String,
    pub title: String,
    /// Rendered Markdown (values escaped).
    pub markdown: String,
    /// Rendered plain text (chat).
    pub text: String,
    /// What caused it: the event kind, or `operator NAME`.
    pub cause: String,
    /// RFC 3339.
    pub time: String,
}

/// One attempt to deliver one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAttempt {
    /// The delivery id (`X-Rewind-Delivery`), the same for every attempt.
    pub delivery: String,
    /// The webhook's `name` in coordinator.toml.
    pub webhook: String,
    /// The event kind delivered, e.g. `incident.started`.
    pub event: String,
    /// 1, 2, ...
    pub attempt: u32,
    /// The HTTP status, when a response came.
    pub status: Option<u16>,
    /// What went wrong, when it did.
    pub error: Option<String>,
    /// `delivered`, `retrying` or `failed` (no attempts left).
    pub outcome: String,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// The backoff before the next attempt (`retrying` only).
    pub retry_in_ms: Option<u64>,
    /// RFC 3339, when the attempt started.
    pub time: String,
}

/// One rollout's persisted engine state: the `rewind-rollout` machine and
/// the coordinator's bookkeeping, as one JSON document (see
/// `crate::rollouts`), with the columns needed to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    /// `<product>@<sequence>`.
    pub id: String,
    pub product: String,
    pub sequence: u64,
    /// The §8 state name, for queries by eye.
    pub state: String,
    pub doc: String,
}

/// The leader lease as one replica sees it after trying to take or renew
/// it ([`Store::lead`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This replica holds the lease; `token` (the fencing token) grows with
    /// every change of holder.
    Leader { token: i64 },
    /// Another replica holds it; `leader` is the URL it advertises.
    Follower { leader: Option<String> },
}

/// Who may write rollouts and deliveries: the lease holder and its token.
/// A store that was given a fence refuses those writes once the lease
/// names another holder or token ([`crate::error::Error::Fenced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub token: i64,
}

/// What the replicas' channel brings ([`Store::listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// One message a replica sent with [`Store::notify`].
    Message(String),
    /// The channel was down (messages may have been missed): catch up from
    /// the store.
    Resync,
}

/// Persistent coordinator state. Every method may block on I/O inside the
/// implementation but never blocks the async runtime.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new enrollment token by hash.
    async fn create_token(&self, hash: String, labels: Labels, uses: u32, expires_unix: i64) -> Result<()>;
    /// Consumes one use of a token, atomically.
    async fn redeem_token(&self, hash: String, now_unix: i64) -> Result<Redeem>;
    async fn insert_agent(&self, agent: AgentRecord) -> Result<()>;
    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>>;
    /// The records of these agents (unknown ids are left out), in one read.
    async fn agents_by_id(&self, ids: Vec<AgentId>) -> Result<Vec<AgentRecord>>;
    async fn agents(&self) -> Result<Vec<AgentRecord>>;
    /// Records the hostname and inventory from an agent's hello.
    async fn record_hello(&self, id: AgentId, hostname: String, inventory: Inventory, seen: String) -> Result<()>;
    /// Sets `last_seen` of these agents (unknown ids are ignored), in one
    /// transaction.
    async fn touch(&self, ids: Vec<AgentId>, seen: String) -> Result<()>;
    /// Records a new inventory sent during a stream.
    async fn record_inventory(&self, id: AgentId, inventory: Inventory, seen: String) -> Result<()>;
    /// Marks an agent revoked; returns false when it already was.
    /// [`crate::error::Error::NotFound`] when there is no such agent.
    async fn revoke(&self, id: AgentId) -> Result<bool>;
    /// How many results are stored and alarms raised, per agent (agents
    /// with neither are left out): two grouped reads, not two per agent —
    /// listing 30,000 agents took a minute with a read per agent.
    async fn counts(&self) -> Result<HashMap<AgentId, (u64, u64)>>;
    /// Stores (or replaces) an operator token by hash.
    async fn put_operator(&self, hash: String, name: String, role: Role) -> Result<()>;
    /// The name and role of an operator token, by hash.
    async fn operator(&self, hash: String) -> Result<Option<(String, Role)>>;
    /// Every operator token's name and role, by name (tokens are stored
    /// hashed; a name may hold several).
    async fn operators(&self) -> Result<Vec<(String, Role)>>;
    /// Deletes every token of operator `name`; how many there were.
    async fn revoke_operator(&self, name: String) -> Result<u64>;
    /// Stores a verified result unless one with its id exists (then
    /// nothing changes); when new and `advance` is given, records it as the
    /// agent's chain point. Returns whether it was new.
    async fn store_result(&self, result: StoredResult, advance: Option<ChainPoint>) -> Result<bool> {
        Ok(self.store_results(vec![(result, advance)], None).await?.0.first().copied().unwrap_or(false))
    }
    /// [`Store::store_result`] for a batch, in order, in one transaction:
    /// whether each was new. With `audit`, the same transaction appends to
    /// the coordinator's audit chain a `result` entry for each new result,
    /// in order (parameters: `audit.params[i]` for `batch[i]`), sealed as
    /// [`Store::append_audit_batch`] does, and returns them: a result and
    /// its audit entry are stored together or not at all.
    async fn store_results(
        &self,
        batch: Vec<(StoredResult, Option<ChainPoint>)>,
        audit: Option<ResultAudit>,
    ) -> Result<(Vec<bool>, Vec<rewind_shared::audit::AuditEntry>)>;
    /// An agent's results, oldest first.
    async fn results(&self, agent: AgentId) -> Result<Vec<StoredResult>>;
    /// One of `agent`'s results, by id.
    async fn result(&self, agent: AgentId, id: String) -> Result<Option<StoredResult>>;
    /// Which of these `(agent, result id)` are stored already, with the
    /// continuity each was stored with (a resend is then not judged again).
    async fn stored_continuity(&self, ids: Vec<(AgentId, String)>) -> Result<HashMap<(AgentId, String), String>>;
    /// Records an integrity alarm (bad signature, audit chain gap or fork).
    async fn alarm(&self, agent: AgentId, kind: String, detail: String) -> Result<()>;
    /// An agent's alarms, oldest first, as (kind, detail).
    async fn alarms(&self, agent: AgentId) -> Result<Vec<(String, String)>>;
    /// Every agent's alarms in one read, oldest first, as (agent, kind, detail).
    async fn all_alarms(&self) -> Result<Vec<(AgentId, String, String)>>;
    /// Stores a bundle (replacing one of the same product and release).
    async fn put_bundle(&self, bundle: BundleRecord) -> Result<()>;
    /// The bundle of `product` `release`; with no release, the bundle of
    /// the product's newest apply delivery.
    async fn bundle(&self, product: String, release: Option<String>) -> Result<Option<BundleRecord>>;
    async fn add_delivery(&self, delivery: Delivery) -> Result<()> {
        self.add_deliveries(vec![delivery]).await
    }
    /// Stores several deliveries in one transaction (a wave's plans).
    async fn add_deliveries(&self, deliveries: Vec<Delivery>) -> Result<()>;
    /// Deliveries the agent has not acknowledged, oldest first.
    async fn pending_deliveries(&self, agent: AgentId) -> Result<Vec<(Delivery, BundleRecord)>>;
    /// The unacknowledged deliveries of several agents, each agent's oldest
    /// first (the agents in the order given): what a replica sends when
    /// another announces new deliveries. One read where the store is shared
    /// (PostgreSQL: the bundles fetched once, not once per agent).
    async fn pending_deliveries_of(&self, agents: Vec<AgentId>) -> Result<Vec<(Delivery, BundleRecord)>> {
        let mut out = Vec::new();
        for agent in agents {
            out.extend(self.pending_deliveries(agent).await?);
        }
        Ok(out)
    }
    /// Marks deliveries acknowledged by their agents (each `(agent, delivery
    /// id)`; another agent's delivery id is ignored), in one transaction.
    async fn ack_deliveries(&self, acks: Vec<(AgentId, String)>) -> Result<()>;
    /// Every delivery of a bundle, with whether it was acknowledged.
    async fn deliveries_of(&self, bundle: String) -> Result<Vec<(Delivery, bool)>>;
    /// Appends a signed entry to the coordinator's audit chain, atomically
    /// after the current head.
    async fn append_audit(
        &self,
        kind: String,
        params: String,
        key: ed25519_dalek::SigningKey,
    ) -> Result<rewind_shared::audit::AuditEntry> {
        self.append_audit_batch(vec![(kind, params)], key)
            .await?
            .pop()
            .ok_or_else(|| Error::Store("append_audit: nothing appended".into()))
    }
    /// Appends `(kind, params)` entries in order, atomically after the
    /// current head, in one transaction.
    async fn append_audit_batch(
        &self,
        entries: Vec<(String, String)>,
        key: ed25519_dalek::SigningKey,
    ) -> Result<Vec<rewind_shared::audit::AuditEntry>>;
    /// The whole audit chain, oldest first.
    async fn audit_entries(&self) -> Result<Vec<rewind_shared::audit::AuditEntry>>;
    /// Stores a signed checkpoint of the audit chain.
    async fn put_checkpoint(&self, checkpoint: rewind_shared::audit::Checkpoint) -> Result<()>;
    /// Every checkpoint, oldest first.
    async fn checkpoints(&self) -> Result<Vec<rewind_shared::audit::Checkpoint>>;
    /// Stores a new version of each `(name, body)` of `product` (its
    /// number the name's newest + 1), atomically. With `import` (a bundle
    /// id) nothing is stored when that bundle's templates were imported
    /// before, so an admin's later edit is never overwritten by a re-read.
    /// Returns the versions stored.
    async fn put_templates(
        &self,
        product: String,
        templates: Vec<(String, String)>,
        author: String,
        source: String,
        import: Option<String>,
    ) -> Result<Vec<TemplateVersion>>;
    /// Every stored template version of `product` (of every product with
    /// `None`), ordered by product, name, version.
    async fn template_versions(&self, product: Option<String>) -> Result<Vec<TemplateVersion>>;
    /// Appends one incident message.
    async fn add_incident_update(&self, update: IncidentUpdate) -> Result<()>;
    /// Every incident message, oldest first.
    async fn incident_updates(&self) -> Result<Vec<IncidentUpdate>>;
    /// Logs one webhook delivery attempt.
    async fn add_webhook_attempt(&self, attempt: WebhookAttempt) -> Result<()>;
    /// The newest `limit` webhook attempts, oldest first.
    async fn webhook_attempts(&self, limit: u32) -> Result<Vec<WebhookAttempt>>;
    /// Makes sure everything written is durable (graceful shutdown).
    async fn flush(&self) -> Result<()>;
    /// A value every replica shares (the CA, the audit key, the admin
    /// token): stores `value` under `name` unless one is there, and returns
    /// the one stored (this `value` for the first replica to get there).
    async fn share(&self, name: String, value: Vec<u8>) -> Result<Vec<u8>>;
    /// The shared value under `name`, if any.
    async fn shared(&self, name: String) -> Result<Option<Vec<u8>>>;
    /// Takes or renews the leader lease for `replica` (advertising `url`)
    /// for `ttl_ms`. A store only one coordinator uses (SQLite) always
    /// answers leader.
    async fn lead(&self, replica: String, url: String, ttl_ms: u64) -> Result<Lease> {
        let _ = (replica, url, ttl_ms);
        Ok(Lease::Leader { token: 0 })
    }
    /// From now on, [`Store::put_rollout`] and [`Store::add_deliveries`]
    /// land only while `fence` still holds the lease (`None`: no check).
    fn set_fence(&self, fence: Option<Fence>) {
        let _ = fence;
    }
    /// Tells every replica listening (including this one's listener).
    async fn notify(&self, message: String) -> Result<()> {
        let _ = message;
        Ok(())
    }
    /// The replicas' channel; `None` for a store only one coordinator uses.
    async fn listen(&self) -> Option<tokio::sync::mpsc::Receiver<Signal>> {
        None
    }
    /// Stores a rollout's document, replacing the one with its id.
    async fn put_rollout(&self, rollout: RolloutRecord) -> Result<()>;
    /// Every rollout, oldest first (by first store).
    async fn rollouts(&self) -> Result<Vec<RolloutRecord>>;
}

/// The BLAKE3 hash under which a secret token is stored.
#[must_use]
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The behaviour every [`Store`] implementation must have: each function
/// takes a fresh store and panics on a deviation. Run against SQLite by the
/// unit tests and against a real PostgreSQL by `tests/tests/store_postgres.rs`
/// (hence public, not `cfg(test)`).
#[doc(hidden)]
#[allow(clippy::missing_panics_doc, clippy::unwrap_used)]
pub mod suite {
    use super::*;

    /// A stored `applied` result of `agent` (the payload is not a real
    /// report: the store does not read it).
    #[must_use]
    pub fn result(id: String, agent: AgentId) -> StoredResult {
        StoredResult {
            id,
            agent,
            plan: "plan-1".into(),
            signed_plan: None,
            product: "notes".into(),
            release: "1".into(),
            sequence: 1,
            status: "applied".into(),
            continuity: "ok".into(),
            payload: b"{}".to_vec(),
            signature: vec![1; 64],
        }
    }

    /// Eight redeemers race for one token of `uses` uses: exactly `uses` win.
    async fn race(s: &dyn Store, hash: &str, uses: u32) {
        s.create_token(hash.into(), Labels::new(), uses, i64::MAX).await.unwrap();
        let r = || s.redeem_token(hash.into(), 10);
        let all = tokio::join!(r(), r(), r(), r(), r(), r(), r(), r());
        let all = [all.0, all.1, all.2, all.3, all.4, all.5, all.6, all.7].map(Result::unwrap);
        let won = all.iter().filter(|o| matches!(o, Redeem::Accepted(_))).count();
        assert_eq!(won, uses as usize, "{uses}-use token raced by 8: {all:?}");
        assert_eq!(all.iter().filter(|o| **o == Redeem::UsedUp).count(), 8 - uses as usize, "{all:?}");
    }

    pub async fn tokens(s: &dyn Store) {
        s.create_token("h1".into(), Labels::from([("ring".into(), "canary".into())]), 2, 1000).await.unwrap();
        assert_eq!(s.redeem_token("nope".into(), 10).await.unwrap(), Redeem::Unknown);
        assert!(matches!(s.redeem_token("h1".into(), 10).await.unwrap(), Redeem::Accepted(l) if l["ring"] == "canary"));
        assert!(matches!(s.redeem_token("h1".into(), 10).await.unwrap(), Redeem::Accepted(_)));
        assert_eq!(s.redeem_token("h1".into(), 10).await.unwrap(), Redeem::UsedUp);
        s.create_token("h2".into(), Labels::new(), 1, 1000).await.unwrap();
        assert_eq!(s.redeem_token("h2".into(), 1000).await.unwrap(), Redeem::Expired);
        race(s, "race1", 1).await;
        race(s, "race3", 3).await;
    }

    /// Deliveries: a batch lands together, keeps its order and parts, and
    /// an acknowledged one is no longer pending.
    pub async fn deliveries(s: &dyn Store) {
        let id = AgentId::parse("agt-d").unwrap();
        s.insert_agent(AgentRecord {
            id: id.clone(),
            hostname: "h".into(),
            labels: Labels::new(),
            fingerprint: "fd".into(),
            enrolled: "2026-01-01T00:00:00Z".into(),
            last_seen: None,
            inventory: Inventory::default(),
            revoked: false,
            audit_key: "00".repeat(32),
            chain: None,
        })
        .await
        .unwrap();
        let bundle = BundleRecord {
            id: "bnd-d".into(),
            product: "notes".into(),
            release: "9".into(),
            sequence: 9,
            bytes: b"{}".to_vec(),
        };
        s.put_bundle(bundle.clone()).await.unwrap();
        let flag = Part::rollback(rewind_shared::bundle::Granularity::Flag, "new_checkout");
        let d = |n: &str, kind: &str, part: Option<Part>| Delivery {
            id: n.into(),
            agent: id.clone(),
            bundle: bundle.id.clone(),
            kind: kind.into(),
            part,
        };
        let batch =
            vec![d("dlv-1", "apply", None), d("dlv-2", "rollback", Some(flag.clone())), d("dlv-3", "rollback", None)];
        s.add_deliveries(batch.clone()).await.unwrap();
        s.add_deliveries(Vec::new()).await.unwrap();
        let pending: Vec<Delivery> =
            s.pending_deliveries(id.clone()).await.unwrap().into_iter().map(|(d, _)| d).collect();
        assert_eq!(pending, batch);
        assert_eq!(s.bundle("notes".into(), None).await.unwrap().map(|b| b.id), Some("bnd-d".into()));
        // One transaction for several acks; a delivery id acknowledged by
        // another agent is not marked.
        let other = AgentId::parse("agt-someone-else").unwrap();
        s.ack_deliveries(vec![(id.clone(), "dlv-2".into()), (other, "dlv-3".into())]).await.unwrap();
        s.ack_deliveries(Vec::new()).await.unwrap();
        let all = s.deliveries_of("bnd-d".into()).await.unwrap();
        assert_eq!(
            all.iter().map(|(d, acked)| (d.id.as_str(), d.part.clone(), *acked)).collect::<Vec<_>>(),
            [("dlv-1", None, false), ("dlv-2", Some(flag), true), ("dlv-3", None, false)]
        );
        assert_eq!(s.pending_deliveries(id.clone()).await.unwrap().len(), 2);
        // Several agents' in one read: the same deliveries, agent by agent
        // in the order asked, each with its bundle.
        let other = AgentId::parse("agt-d2").unwrap();
        s.insert_agent(AgentRecord {
            id: other.clone(),
            fingerprint: "fd2".into(),
            ..s.agent(id.clone()).await.unwrap().unwrap()
        })
        .await
        .unwrap();
        let theirs = Delivery { agent: other.clone(), ..d("dlv-o", "apply", None) };
        s.add_deliveries(vec![theirs.clone()]).await.unwrap();
        let nobody = AgentId::parse("agt-none").unwrap();
        let both = s.pending_deliveries_of(vec![other.clone(), nobody.clone(), id.clone()]).await.unwrap();
        let mut want = vec![(theirs, bundle.clone())];
        want.extend(s.pending_deliveries(id.clone()).await.unwrap());
        assert_eq!(both, want);
        assert_eq!(s.pending_deliveries_of(vec![nobody]).await.unwrap(), vec![]);
        s.ack_deliveries(vec![(other, "dlv-o".into())]).await.unwrap();
        // A duplicate id fails the whole batch: nothing of it is stored.
        assert!(s.add_deliveries(vec![d("dlv-4", "apply", None), d("dlv-1", "apply", None)]).await.is_err());
        assert_eq!(s.deliveries_of("bnd-d".into()).await.unwrap().len(), 4, "dlv-1..3 and dlv-o");
    }

    pub async fn agents(s: &dyn Store) {
        let id = AgentId::parse("agt-1").unwrap();
        assert!(s.agent(id.clone()).await.unwrap().is_none());
        let rec = AgentRecord {
            id: id.clone(),
            hostname: "h".into(),
            labels: Labels::from([("os".into(), "linux".into())]),
            fingerprint: "f".into(),
            enrolled: "2026-01-01T00:00:00Z".into(),
            last_seen: None,
            inventory: Inventory::default(),
            revoked: false,
            audit_key: "00".repeat(32),
            chain: None,
        };
        s.insert_agent(rec.clone()).await.unwrap();
        assert_eq!(s.agent(id.clone()).await.unwrap().unwrap(), rec);
        let inv = Inventory {
            products: vec![rewind_shared::fleet::InstalledProduct {
                name: "notes".into(),
                sequence: 7,
                release: "2026.11.0".into(),
                plan_id: "p".into(),
            }],
            targets: vec![],
        };
        s.record_hello(id.clone(), "h2".into(), inv.clone(), "2026-01-02T00:00:00Z".into()).await.unwrap();
        let got = s.agent(id.clone()).await.unwrap().unwrap();
        assert_eq!(
            (got.inventory, got.hostname, got.last_seen.as_deref()),
            (inv, "h2".to_string(), Some("2026-01-02T00:00:00Z"))
        );
        assert_eq!(s.agents().await.unwrap().len(), 1);
        // Heartbeats of several agents in one write; an unknown id is ignored.
        s.touch(vec![id.clone(), AgentId::parse("agt-unknown").unwrap()], "2026-01-02T00:00:30Z".into()).await.unwrap();
        assert_eq!(s.agent(id.clone()).await.unwrap().unwrap().last_seen.as_deref(), Some("2026-01-02T00:00:30Z"));
        assert_eq!(s.agents().await.unwrap().len(), 1);
        s.put_operator("oh".into(), "admin".into(), Role::Admin).await.unwrap();
        assert_eq!(s.operator("oh".into()).await.unwrap(), Some(("admin".into(), Role::Admin)));
        assert_eq!(s.operator("x".into()).await.unwrap(), None);
        s.put_operator("vh".into(), "vera".into(), Role::Viewer).await.unwrap();
        s.put_operator("vh2".into(), "vera".into(), Role::Viewer).await.unwrap();
        assert_eq!(
            s.operators().await.unwrap(),
            [("admin".to_string(), Role::Admin), ("vera".into(), Role::Viewer), ("vera".into(), Role::Viewer)]
        );
        assert_eq!(s.revoke_operator("vera".into()).await.unwrap(), 2);
        assert_eq!(s.revoke_operator("vera".into()).await.unwrap(), 0);
        assert_eq!(s.operator("vh".into()).await.unwrap(), None, "a revoked token no longer authenticates");
        assert_eq!(s.operators().await.unwrap().len(), 1);
        let r = result("res-1".into(), id.clone());
        let point = ChainPoint { seq: 3, head: rewind_shared::Digest([7; 32]) };
        assert!(s.store_result(r.clone(), Some(point)).await.unwrap(), "new");
        assert!(!s.store_result(r.clone(), None).await.unwrap(), "a second delivery changes nothing");
        assert_eq!(s.results(id.clone()).await.unwrap(), vec![r.clone()]);
        assert_eq!(s.agent(id.clone()).await.unwrap().unwrap().chain, Some(point));
        // A batch: in order, duplicates (in the store or the batch) not new,
        // the chain point of the last new one kept.
        let r2 = StoredResult { id: "res-2".into(), ..r.clone() };
        let r3 = StoredResult { id: "res-3".into(), ..r.clone() };
        let p3 = ChainPoint { seq: 5, head: rewind_shared::Digest([9; 32]) };
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let params = ["{\"r\":1}", "{\"r\":2}", "{\"r\":2}", "{\"r\":3}"].map(String::from).to_vec();
        let (news, audited) = s
            .store_results(
                vec![(r.clone(), None), (r2.clone(), None), (r2.clone(), None), (r3.clone(), Some(p3))],
                Some(ResultAudit { params, key: key.clone() }),
            )
            .await
            .unwrap();
        assert_eq!(news, [false, true, false, true]);
        // The new results' audit entries, in the same transaction, sealed.
        assert_eq!(
            audited.iter().map(|e| (e.kind.as_str(), e.params.as_str())).collect::<Vec<_>>(),
            [("result", "{\"r\":2}"), ("result", "{\"r\":3}")]
        );
        assert_eq!(s.audit_entries().await.unwrap(), audited);
        assert!(audited[0].signature.is_empty() && !audited[1].signature.is_empty());
        rewind_shared::audit::verify_chain(&audited, &key.verifying_key()).unwrap();
        assert_eq!(s.results(id.clone()).await.unwrap(), vec![r.clone(), r2, r3]);
        assert_eq!(s.result(id.clone(), "res-1".into()).await.unwrap(), Some(r));
        assert_eq!(s.result(id.clone(), "res-9".into()).await.unwrap(), None);
        assert_eq!(s.result(AgentId::parse("agt-2").unwrap(), "res-1".into()).await.unwrap(), None, "another agent's");
        let other = AgentId::parse("agt-2").unwrap();
        let asked = vec![(id.clone(), "res-1".to_string()), (id.clone(), "res-9".into()), (other, "res-2".into())];
        assert_eq!(
            s.stored_continuity(asked).await.unwrap(),
            HashMap::from([((id.clone(), "res-1".to_string()), "ok".to_string())]),
            "only the asking agent's stored results"
        );
        assert_eq!(s.agent(id.clone()).await.unwrap().unwrap().chain, Some(p3));
        assert_eq!(s.store_results(Vec::new(), None).await.unwrap(), (Vec::new(), Vec::new()));
        let found = s.agents_by_id(vec![id.clone(), AgentId::parse("agt-none").unwrap()]).await.unwrap();
        assert_eq!(found.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
        assert!(s.agents_by_id(Vec::new()).await.unwrap().is_empty());
        s.alarm(id.clone(), "chain_fork".into(), "went backwards".into()).await.unwrap();
        assert_eq!(s.alarms(id.clone()).await.unwrap().len(), 1);
        assert_eq!(
            s.all_alarms().await.unwrap(),
            [(id.clone(), "chain_fork".to_string(), "went backwards".to_string())]
        );
        assert_eq!(s.counts().await.unwrap(), HashMap::from([(id.clone(), (3, 1))]));
        assert!(s.revoke(id.clone()).await.unwrap());
        assert!(!s.revoke(id.clone()).await.unwrap(), "already revoked");
        assert!(s.agent(id.clone()).await.unwrap().unwrap().revoked);
        assert!(s.revoke(AgentId::parse("agt-none").unwrap()).await.is_err());
        s.record_inventory(id.clone(), Inventory::default(), "2026-01-03T00:00:00Z".into()).await.unwrap();
        assert_eq!(s.agent(id.clone()).await.unwrap().unwrap().inventory, Inventory::default());
        // Shared values: the first one stored wins.
        assert_eq!(s.shared("ca".into()).await.unwrap(), None);
        assert_eq!(s.share("ca".into(), b"first".to_vec()).await.unwrap(), b"first");
        assert_eq!(s.share("ca".into(), b"second".to_vec()).await.unwrap(), b"first");
        assert_eq!(s.shared("ca".into()).await.unwrap().as_deref(), Some(&b"first"[..]));
        // The chain goes on after the results' entries above.
        s.append_audit("a".into(), "{}".into(), key.clone()).await.unwrap();
        s.append_audit("b".into(), "{}".into(), key.clone()).await.unwrap();
        let batch = s
            .append_audit_batch(vec![("c".into(), "{}".into()), ("d".into(), "{\"n\":1}".into())], key.clone())
            .await
            .unwrap();
        assert_eq!(batch.iter().map(|e| (e.seq, e.kind.as_str())).collect::<Vec<_>>(), [(5, "c"), (6, "d")]);
        // One signature per batch, on its last entry (DESIGN §10).
        assert!(batch[0].signature.is_empty() && !batch[1].signature.is_empty(), "{batch:?}");
        assert!(s.append_audit_batch(Vec::new(), key.clone()).await.unwrap().is_empty());
        let chain = s.audit_entries().await.unwrap();
        assert_eq!(chain.len(), 6);
        assert_eq!(chain[..2], audited[..]);
        assert_eq!(chain[4..], batch[..]);
        rewind_shared::audit::verify_chain(&chain, &key.verifying_key()).unwrap();
    }
    pub async fn comms(s: &dyn Store) {
        let two = vec![("resolved".to_string(), "Fixed.".to_string()), ("rollback_started".into(), "Undoing.".into())];
        let got = s
            .put_templates(
                "notes".into(),
                two.clone(),
                "alice".into(),
                "release 1 (bundle b1)".into(),
                Some("b1".into()),
            )
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|v| (v.name.as_str(), v.version)).collect::<Vec<_>>(),
            [("resolved", 1), ("rollback_started", 1)]
        );
        assert!(
            s.put_templates("notes".into(), two, "alice".into(), "x".into(), Some("b1".into()))
                .await
                .unwrap()
                .is_empty(),
            "a bundle's templates are imported once"
        );
        let edit = s
            .put_templates(
                "notes".into(),
                vec![("resolved".into(), "Fixed!".into())],
                "bob".into(),
                "edit".into(),
                None,
            )
            .await
            .unwrap();
        assert_eq!((edit[0].version, edit[0].author.as_str(), edit[0].source.as_str()), (2, "bob", "edit"));
        s.put_templates("other".into(), vec![("resolved".into(), "x".into())], "c".into(), "edit".into(), None)
            .await
            .unwrap();
        let all = s.template_versions(Some("notes".into())).await.unwrap();
        assert_eq!(
            all.iter().map(|v| (v.name.as_str(), v.version, v.body.as_str())).collect::<Vec<_>>(),
            [("resolved", 1, "Fixed."), ("resolved", 2, "Fixed!"), ("rollback_started", 1, "Undoing.")]
        );
        assert_eq!(s.template_versions(None).await.unwrap().len(), 4);
        let u = |n: &str, state: &str| IncidentUpdate {
            incident: "inc_1".into(),
            product: "notes".into(),
            release: "1".into(),
            kind: n.into(),
            state: state.into(),
            title: format!("T {n}"),
            markdown: "**m**".into(),
            text: "m".into(),
            cause: "rollout.halted".into(),
            time: format!("2026-01-01T00:00:0{}Z", state.len() % 10),
        };
        s.add_incident_update(u("incident_started", "investigating")).await.unwrap();
        s.add_incident_update(u("resolved", "resolved")).await.unwrap();
        let ups = s.incident_updates().await.unwrap();
        assert_eq!(ups, vec![u("incident_started", "investigating"), u("resolved", "resolved")]);
        for i in 1..=3u32 {
            s.add_webhook_attempt(WebhookAttempt {
                delivery: "whd_1".into(),
                webhook: "chat".into(),
                event: "incident.started".into(),
                attempt: i,
                status: (i > 1).then_some(500),
                error: (i == 1).then(|| "connection refused".to_string()),
                outcome: if i == 3 { "failed".into() } else { "retrying".into() },
                duration_ms: 5,
                retry_in_ms: (i < 3).then_some(100),
                time: "2026-01-01T00:00:00Z".into(),
            })
            .await
            .unwrap();
        }
        let a = s.webhook_attempts(2).await.unwrap();
        assert_eq!(a.iter().map(|a| a.attempt).collect::<Vec<_>>(), [2, 3], "the newest two, oldest first");
        assert_eq!((a[0].status, a[1].outcome.as_str(), a[1].retry_in_ms), (Some(500), "failed", None));
        assert_eq!(s.webhook_attempts(10).await.unwrap()[0].error.as_deref(), Some("connection refused"));
    }

    pub async fn rollouts(s: &dyn Store) {
        assert!(s.rollouts().await.unwrap().is_empty());
        let a = RolloutRecord {
            id: "notes@7".into(),
            product: "notes".into(),
            sequence: 7,
            state: "running".into(),
            doc: "{}".into(),
        };
        let b = RolloutRecord { id: "notes@8".into(), sequence: 8, ..a.clone() };
        s.put_rollout(a.clone()).await.unwrap();
        s.put_rollout(b.clone()).await.unwrap();
        let a2 = RolloutRecord { state: "done".into(), doc: r#"{"x":1}"#.into(), ..a.clone() };
        s.put_rollout(a2.clone()).await.unwrap();
        assert_eq!(s.rollouts().await.unwrap(), vec![a2, b], "replaced in place, oldest first");
    }
}
