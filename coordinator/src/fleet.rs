//! The `rewind.v1.Fleet` service: enrollment and the agents' streams. The
//! handlers are thin: they authenticate, convert wire messages with
//! `rewind_shared::wire`, and hand over to [`enroll`] and [`Sessions`].

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rewind_shared::fleet::{self, AgentId};
use rewind_shared::wire::{self, v1};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::App;
use crate::ca::{agent_id_of, fingerprint};
use crate::error::{Error, Result};
use crate::store::{AgentRecord, Redeem, token_hash};

/// How long a new stream may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Outbound = mpsc::Sender<Result<v1::CoordinatorMessage, Status>>;

struct Session {
    conn: u64,
    tx: Outbound,
    /// Deliveries sent on this stream (each goes once per stream).
    sent: HashSet<String>,
}

/// The agents connected to this coordinator right now, one stream each (a
/// new stream for an agent replaces its older one).
pub struct Sessions {
    live: Mutex<HashMap<AgentId, Session>>,
    next_conn: AtomicU64,
    shutdown: watch::Sender<bool>,
    acks: std::sync::OnceLock<mpsc::UnboundedSender<(AgentId, String)>>,
    heartbeats: std::sync::OnceLock<mpsc::UnboundedSender<AgentId>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            live: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
            acks: std::sync::OnceLock::new(),
            heartbeats: std::sync::OnceLock::new(),
        }
    }
}

/// The most plan acknowledgements written in one store transaction.
const MAX_ACKS: usize = 1024;

/// Records plan acknowledgements in the store, many per transaction: when a
/// plan goes to thousands of agents their acknowledgements come back while
/// the last ones are still being sent, and one write each would compete
/// with that. An acknowledgement only spares the agent a re-delivery (it
/// runs a plan it already ran as a no-op), so a few milliseconds' delay —
/// or losing the last ones in a crash — changes nothing else.
async fn write_acks(app: std::sync::Weak<App>, mut rx: mpsc::UnboundedReceiver<(AgentId, String)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_ACKS {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let Some(app) = app.upgrade() else { return };
        let n = batch.len();
        if let Err(e) = app.store.ack_deliveries(batch).await {
            tracing::warn!(acks = n, "recording plan acks: {e}");
        }
    }
}

/// How long heartbeats gather before their agents' `last_seen` is written.
const HEARTBEATS_EVERY: Duration = Duration::from_secs(1);

/// Records heartbeats in the store, one transaction per second for every
/// agent heard from in it (10,000 agents every 30 s are 333 heartbeats a
/// second: one durable write each would keep the store's writer busy).
/// `last_seen` is then at most a second late; a crash loses that second.
async fn write_heartbeats(app: std::sync::Weak<App>, mut rx: mpsc::UnboundedReceiver<AgentId>) {
    let mut seen = Vec::new();
    while rx.recv_many(&mut seen, usize::MAX).await > 0 {
        tokio::time::sleep(HEARTBEATS_EVERY).await;
        while let Ok(id) = rx.try_recv() {
            seen.push(id);
        }
        seen.sort();
        seen.dedup();
        let Some(app) = app.upgrade() else { return };
        let n = seen.len();
        if let Err(e) = app.store.touch(std::mem::take(&mut seen), crate::now()).await {
            tracing::warn!(agents = n, "recording heartbeats: {e}");
        }
    }
}

impl Sessions {
    fn register(&self, id: &AgentId, tx: Outbound) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let old =
            self.live.lock().expect("sessions lock").insert(id.clone(), Session { conn, tx, sent: HashSet::new() });
        if let Some(old) = old {
            let _ = old.tx.try_send(Err(Status::aborted(format!("agent {id} opened a newer stream"))));
        }
        conn
    }

    fn unregister(&self, id: &AgentId, conn: u64) {
        let mut live = self.live.lock().expect("sessions lock");
        if live.get(id).is_some_and(|s| s.conn == conn) {
            live.remove(id);
        }
    }

    /// Sends delivery `delivery` on `id`'s stream unless this stream already
    /// carried it; false when the agent has no stream here.
    pub fn deliver(&self, id: &AgentId, delivery: &str, msg: v1::CoordinatorMessage) -> bool {
        let mut live = self.live.lock().expect("sessions lock");
        let Some(s) = live.get_mut(id) else { return false };
        if !s.sent.insert(delivery.to_string()) {
            return true;
        }
        if s.tx.try_send(Ok(msg)).is_err() {
            // Not sent after all: the next stream (or a resync) sends it.
            s.sent.remove(delivery);
            tracing::warn!(agent = %id, "stream full or closed; the plan is sent again on the next stream");
        }
        true
    }

    /// The agents connected to this replica now.
    #[must_use]
    pub fn ids(&self) -> Vec<AgentId> {
        self.live.lock().expect("sessions lock").keys().cloned().collect()
    }

    /// Ends `id`'s stream, if any, with `status`.
    pub fn kick(&self, id: &AgentId, status: Status) {
        if let Some(s) = self.live.lock().expect("sessions lock").remove(id) {
            let _ = s.tx.try_send(Err(status));
        }
    }

    /// Whether `id` has a stream open now.
    #[must_use]
    pub fn is_connected(&self, id: &AgentId) -> bool {
        self.live.lock().expect("sessions lock").contains_key(id)
    }

    /// How many agents are connected.
    #[must_use]
    pub fn count(&self) -> usize {
        self.live.lock().expect("sessions lock").len()
    }

    /// Ends every stream with UNAVAILABLE so agents reconnect (to another
    /// replica, or to this one after a restart), and refuses new ones.
    pub fn close_all(&self) {
        let _ = self.shutdown.send(true);
        let drained: Vec<Session> = self.live.lock().expect("sessions lock").drain().map(|(_, s)| s).collect();
        for s in drained {
            let _ = s.tx.try_send(Err(Status::unavailable("coordinator shutting down; reconnect")));
        }
    }
}

/// Enrolls an agent: checks the CSR, consumes one use of the token, signs a
/// certificate naming a fresh agent id and pins the id to its fingerprint.
///
/// # Errors
/// [`Error::Unauthenticated`] for an unknown, used-up or expired token;
/// [`Error::BadCsr`] / [`Error::Wire`] for malformed input (the token is not
/// consumed then).
pub async fn enroll(app: &App, req: v1::EnrollRequest) -> Result<v1::EnrollResponse> {
    let requested = wire::labels_from_wire("labels", req.labels)?;
    if req.hostname.len() > 255 || req.hostname.chars().any(char::is_control) {
        return Err(Error::InvalidArgument("hostname: at most 255 printable characters".into()));
    }
    rewind_shared::report::public_key_from_hex(&req.audit_public_key).map_err(|e| {
        Error::InvalidArgument(format!("audit_public_key: {e}; expected the hex Ed25519 key of the agent's agent.key"))
    })?;
    let id = AgentId::parse(&crate::random_id("agt", 8)).expect("generated ids are valid");
    let cert_pem = app.ca.sign_agent(&req.csr_pem, &id)?;
    let der = x509_der(&cert_pem)?;
    let token_labels = match app.store.redeem_token(token_hash(req.token.trim()), crate::now_unix()).await? {
        Redeem::Accepted(l) => l,
        Redeem::Unknown => {
            return Err(Error::Unauthenticated(
                "enrollment token is unknown; create one with rewindctl token create".into(),
            ));
        }
        Redeem::UsedUp => {
            return Err(Error::Unauthenticated(
                "enrollment token was already used; create a new one with rewindctl token create".into(),
            ));
        }
        Redeem::Expired => {
            return Err(Error::Unauthenticated(
                "enrollment token has expired; create a new one with rewindctl token create".into(),
            ));
        }
    };
    let mut labels = requested;
    labels.extend(token_labels);
    let record = AgentRecord {
        id: id.clone(),
        hostname: req.hostname,
        labels: labels.clone(),
        fingerprint: fingerprint(&der),
        enrolled: crate::now(),
        last_seen: None,
        inventory: fleet::Inventory::default(),
        revoked: false,
        audit_key: req.audit_public_key.trim().to_ascii_lowercase(),
        chain: None,
    };
    app.store.insert_agent(record).await?;
    tracing::info!(agent = %id, ?labels, "enrolled");
    crate::audit::record(
        app,
        "agent.enroll",
        serde_json::json!({"agent": id, "labels": labels, "fingerprint": fingerprint(&der)}),
    )
    .await;
    Ok(v1::EnrollResponse {
        agent_id: id.to_string(),
        cert_pem,
        ca_pem: app.ca.cert_pem.clone(),
        labels: wire::labels_to_wire(&labels),
    })
}

fn x509_der(pem: &str) -> Result<Vec<u8>> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map(|(_, p)| p.contents)
        .map_err(|e| Error::Ca(format!("issued certificate: {e}")))
}

/// Who is on the other end of a stream: the agent id in the client
/// certificate, checked against the fingerprint pinned at enrollment.
async fn identify(app: &App, certs: Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>) -> Result<AgentId> {
    let certs = certs.ok_or_else(|| {
        Error::Unauthenticated("Fleet.Connect needs the client certificate from rewind-agent enroll".into())
    })?;
    let leaf = certs.first().ok_or_else(|| Error::Unauthenticated("empty client certificate chain".into()))?;
    let id = agent_id_of(leaf)?;
    let agent = app
        .store
        .agent(id.clone())
        .await?
        .ok_or_else(|| Error::Unauthenticated(format!("agent {id} is not enrolled here")))?;
    if agent.revoked {
        return Err(Error::Unauthenticated(format!("agent {id} was revoked; re-enroll it with a new token")));
    }
    if agent.fingerprint != fingerprint(leaf) {
        return Err(Error::Unauthenticated(format!("certificate for agent {id} is not the one issued at enrollment")));
    }
    Ok(id)
}

/// `rewind.v1.Fleet`.
pub struct FleetService {
    pub app: Arc<App>,
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl v1::fleet_server::Fleet for FleetService {
    async fn enroll(&self, request: Request<v1::EnrollRequest>) -> Result<Response<v1::EnrollResponse>, Status> {
        Ok(Response::new(enroll(&self.app, request.into_inner()).await?))
    }

    type ConnectStream = ConnectStream;

    async fn connect(&self, request: Request<Streaming<v1::AgentMessage>>) -> Result<Response<ConnectStream>, Status> {
        if *self.app.sessions.shutdown.borrow() {
            return Err(Status::unavailable("coordinator shutting down; reconnect"));
        }
        let id = identify(&self.app, request.peer_certs()).await?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("agent {id}: no hello within {HELLO_TIMEOUT:?}")))?
            .map_err(|s| malformed(&id, s))?
            .ok_or_else(|| Status::invalid_argument(format!("agent {id}: stream ended before hello")))?;
        let Some(v1::agent_message::Body::Hello(hello)) = first.body else {
            return Err(Status::invalid_argument(format!("agent {id}: the first message must be a hello")));
        };
        let hello = fleet::Hello::try_from(hello)?;
        if hello.agent_id != id {
            return Err(Status::permission_denied(format!(
                "hello names agent {} but the certificate is agent {id}",
                hello.agent_id
            )));
        }
        if let Some(alarm) = crate::results::check_hello_head(&self.app, &id, &hello.audit).await? {
            tracing::error!(agent = %id, "integrity alarm: {alarm}");
        }
        self.app.store.record_hello(id.clone(), hello.hostname.clone(), hello.inventory.clone(), crate::now()).await?;
        let (tx, rx) = mpsc::channel(64);
        let welcome = v1::CoordinatorMessage {
            body: Some(v1::coordinator_message::Body::Welcome(v1::Welcome {
                agent_id: id.to_string(),
                heartbeat_seconds: self.app.config.heartbeat_seconds,
                server_time_unix_ms: crate::now_unix_ms(),
            })),
        };
        tx.send(Ok(welcome)).await.map_err(|_| Status::cancelled("stream closed"))?;
        let conn = self.app.sessions.register(&id, tx.clone());
        tracing::info!(agent = %id, products = hello.inventory.products.len(), targets = hello.inventory.targets.len(), audit_seq = hello.audit.seq, "agent connected");
        // Not awaited: the stream is answered at once, even while the
        // rollout engine is busy (e.g. catching up after a restart).
        let (app, agent) = (Arc::clone(&self.app), id.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::rollouts::send_pending(&app, &agent).await {
                tracing::warn!(%agent, "pending plans: {e}");
            }
        });
        tokio::spawn(session(Arc::clone(&self.app), id, conn, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// tonic reports undecodable protobuf as INTERNAL; it is the peer's fault.
fn malformed(id: &AgentId, s: Status) -> Status {
    if s.code() == tonic::Code::Internal && s.message().starts_with("failed to decode") {
        Status::invalid_argument(format!("agent {id}: {}", s.message()))
    } else {
        s
    }
}

/// Results (or `Results` messages) of one stream handed to the ingestor
/// and not yet acknowledged.
const RESULTS_IN_FLIGHT: usize = 64;

/// Most results one `Results` message may carry.
pub const MAX_RESULTS_PER_MESSAGE: usize = 64;

/// Results of one message, handed to the ingestor, with their outcomes to
/// await: a `Result` (acknowledged with an `Ack`) or a `Results` (with one
/// `ResultAcks`).
enum Pending {
    One(String, crate::results::Outcome),
    Many(Vec<(String, crate::results::Outcome)>),
}

/// The id to acknowledge when a result is stored (logged either way); a
/// refused one (or one the store failed) is not acknowledged and stays in
/// the agent's outbox.
async fn judged(agent: &AgentId, rid: &str, outcome: crate::results::Outcome) -> Option<String> {
    match outcome.await {
        Ok(crate::results::Ingested::Stored { id, new, continuity }) => {
            // One line per result at thousands per second would cost
            // more than the rest of its path; the audit log has each.
            if continuity == "ok" {
                tracing::debug!(%agent, result = %id, new, continuity, "result stored");
            } else {
                tracing::warn!(%agent, result = %id, new, continuity, "result stored");
            }
            Some(id)
        }
        Ok(crate::results::Ingested::Refused(why)) => {
            tracing::error!(%agent, result = %rid, "result refused: {why}");
            None
        }
        Err(e) => {
            tracing::warn!(%agent, result = %rid, "storing result: {e}; it will come again");
            None
        }
    }
}

/// Acknowledges a stream's results in the order they came, each once it is
/// stored: a `Result` with an `Ack`, the stored ones of a `Results` with
/// one `ResultAcks` (none when none was stored).
async fn acknowledge(id: AgentId, mut results: mpsc::Receiver<Pending>, tx: Outbound) {
    use v1::coordinator_message::Body;
    while let Some(pending) = results.recv().await {
        let body = match pending {
            Pending::One(rid, outcome) => match judged(&id, &rid, outcome).await {
                Some(rid) => Body::Ack(v1::Ack { id: rid }),
                None => continue,
            },
            Pending::Many(group) => {
                let mut ids = Vec::with_capacity(group.len());
                for (rid, outcome) in group {
                    ids.extend(judged(&id, &rid, outcome).await);
                }
                if ids.is_empty() {
                    continue;
                }
                Body::ResultAcks(v1::ResultAcks { ids })
            }
        };
        if tx.send(Ok(v1::CoordinatorMessage { body: Some(body) })).await.is_err() {
            return;
        }
    }
}

/// The results of a `Results` message: 1 to [`MAX_RESULTS_PER_MESSAGE`].
fn results_of(rs: v1::Results) -> Result<Vec<v1::Result>, Status> {
    let n = rs.results.len();
    if (1..=MAX_RESULTS_PER_MESSAGE).contains(&n) {
        Ok(rs.results)
    } else {
        Err(Status::invalid_argument(format!(
            "results: {n} results in one message; send 1 to {MAX_RESULTS_PER_MESSAGE} (or each as a `result`)"
        )))
    }
}

/// Logs a result's unsigned reason, when it has one.
fn log_reason(agent: &AgentId, r: &v1::Result) {
    if !r.reason.is_empty() {
        // e.g. "local_revert: trigger app.crash_count fired: ..."; the
        // signed report and the agent's audit entries carry the facts.
        tracing::warn!(%agent, result = %r.id, reason = %r.reason.chars().take(512).collect::<String>(), "result with a reason");
    }
}

/// Reads one agent's stream until it ends, the agent reconnects elsewhere or
/// the coordinator shuts down.
async fn session(app: Arc<App>, id: AgentId, conn: u64, mut inbound: Streaming<v1::AgentMessage>, tx: Outbound) {
    let mut shutdown = app.sessions.shutdown.subscribe();
    // Results are handed to the ingestor as they come (several in flight
    // per stream, so a burst is batched) and acknowledged in order by this
    // task once each is stored.
    let (results_tx, results_rx) = mpsc::channel(RESULTS_IN_FLIGHT);
    let acker = tokio::spawn(acknowledge(id.clone(), results_rx, tx.clone()));
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = shutdown.changed() => break,
        };
        let body = match msg {
            Ok(Some(m)) => m.body,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(agent = %id, %status, "stream error");
                break;
            }
        };
        use v1::agent_message::Body;
        match body {
            Some(Body::Heartbeat(_)) => {
                let heartbeats = app.sessions.heartbeats.get_or_init(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(write_heartbeats(Arc::downgrade(&app), rx));
                    tx
                });
                let _ = heartbeats.send(id.clone());
            }
            Some(Body::Inventory(update)) => {
                let inventory = update.inventory.map(fleet::Inventory::try_from).transpose();
                match inventory {
                    Ok(inv) => {
                        let inv = inv.unwrap_or_default();
                        if let Err(e) = app.store.record_inventory(id.clone(), inv, crate::now()).await {
                            tracing::warn!(agent = %id, "recording inventory: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        break;
                    }
                }
            }
            // Progress and telemetry are frequent: published on the event
            // bus for the status page and the rollout engine, not audited.
            Some(Body::Progress(p)) => match rewind_shared::telemetry::ProgressStep::try_from(p) {
                Ok(p) => {
                    tracing::debug!(agent = %id, plan = %p.plan_id, phase = %p.phase, step = %p.step, done = p.done, total = p.total, "progress");
                    let mut params = serde_json::to_value(&p).expect("progress serializes");
                    params["agent"] = serde_json::json!(id);
                    app.events.publish("progress", params);
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    break;
                }
            },
            Some(Body::Telemetry(t)) => match rewind_shared::telemetry::Sample::try_from(t) {
                Ok(s) => {
                    tracing::debug!(agent = %id, product = %s.product, metrics = ?s.metrics, "telemetry");
                    // `time`: the agent's sample time, RFC 3339 like every event's.
                    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(s.time_unix_ms).unwrap_or(0));
                    let time = humantime::format_rfc3339_millis(at).to_string();
                    app.events.publish(
                        "telemetry",
                        serde_json::json!({"agent": id, "product": s.product, "metrics": s.metrics, "time": time}),
                    );
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    break;
                }
            },
            Some(Body::Ack(a)) => {
                tracing::debug!(agent = %id, delivery = %a.id, "plan acknowledged");
                let acks = app.sessions.acks.get_or_init(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(write_acks(Arc::downgrade(&app), rx));
                    tx
                });
                let _ = acks.send((id.clone(), a.id));
            }
            Some(Body::Result(r)) => {
                let rid = r.id.clone();
                log_reason(&id, &r);
                match crate::results::submit(&app, &id, r).await {
                    Ok(outcome) => {
                        if results_tx.send(Pending::One(rid, outcome)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(agent = %id, result = %rid, "storing result: {e}; it will come again"),
                }
            }
            Some(Body::Results(rs)) => {
                let results = match results_of(rs) {
                    Ok(results) => results,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let mut group = Vec::with_capacity(results.len());
                for r in results {
                    let rid = r.id.clone();
                    log_reason(&id, &r);
                    match crate::results::submit(&app, &id, r).await {
                        Ok(outcome) => group.push((rid, outcome)),
                        Err(e) => tracing::warn!(agent = %id, result = %rid, "storing result: {e}; it will come again"),
                    }
                }
                if results_tx.send(Pending::Many(group)).await.is_err() {
                    break;
                }
            }
            Some(Body::Hello(_)) => {
                let _ = tx.send(Err(Status::invalid_argument("hello may only be the first message of a stream"))).await;
                break;
            }
            None => {
                let _ = tx.send(Err(Status::invalid_argument("message without a body"))).await;
                break;
            }
        }
    }
    // The results already handed over are stored (or refused) and
    // acknowledged while the stream is still open.
    drop(results_tx);
    let _ = acker.await;
    app.sessions.unregister(&id, conn);
    if !app.sessions.is_connected(&id) {
        crate::cluster::presence(&app, &id, false).await;
    }
    if let Err(e) = app.store.touch(vec![id.clone()], crate::now()).await {
        tracing::warn!(agent = %id, "recording last seen: {e}");
    }
    tracing::info!(agent = %id, "agent disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Ingested, Outcome};

    fn stored(id: &str) -> Outcome {
        let id = id.to_string();
        Box::pin(async move { Ok(Ingested::Stored { id, new: true, continuity: "ok" }) })
    }

    fn refused() -> Outcome {
        Box::pin(async { Ok(Ingested::Refused("bad signature".into())) })
    }

    fn failed() -> Outcome {
        Box::pin(async { Err(crate::error::Error::Store("disk full".into())) })
    }

    /// The acknowledgements `acknowledge` sends for `pending`, in order.
    async fn acks_for(pending: Vec<Pending>) -> Vec<v1::coordinator_message::Body> {
        let (tx, mut rx) = mpsc::channel(16);
        let (ptx, prx) = mpsc::channel(16);
        for p in pending {
            ptx.send(p).await.unwrap();
        }
        drop(ptx);
        acknowledge(AgentId::parse("agt-0123456789abcdef").unwrap(), prx, tx).await;
        let mut out = Vec::new();
        while let Ok(Ok(m)) = rx.try_recv() {
            out.push(m.body.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_results_message_is_acknowledged_once_with_the_stored_ids_only() {
        use v1::coordinator_message::Body;
        let acks = acks_for(vec![
            Pending::One("r1".into(), stored("r1")),
            Pending::Many(vec![
                ("r2".into(), stored("r2")),
                ("r3".into(), refused()),
                ("r4".into(), failed()),
                ("r5".into(), stored("r5")),
            ]),
            // None stored: nothing to acknowledge, no empty message.
            Pending::Many(vec![("r6".into(), refused())]),
            Pending::One("r7".into(), refused()),
            Pending::One("r8".into(), stored("r8")),
        ])
        .await;
        assert_eq!(
            acks,
            vec![
                Body::Ack(v1::Ack { id: "r1".into() }),
                Body::ResultAcks(v1::ResultAcks { ids: vec!["r2".into(), "r5".into()] }),
                Body::Ack(v1::Ack { id: "r8".into() }),
            ]
        );
    }

    #[test]
    fn a_results_message_carries_1_to_64_results() {
        let some = |n: usize| v1::Results { results: vec![v1::Result::default(); n] };
        assert_eq!(results_of(some(1)).unwrap().len(), 1);
        assert_eq!(results_of(some(MAX_RESULTS_PER_MESSAGE)).unwrap().len(), MAX_RESULTS_PER_MESSAGE);
        for n in [0, MAX_RESULTS_PER_MESSAGE + 1] {
            let e = results_of(some(n)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with(&format!("results: {n} results in one message")), "{}", e.message());
        }
    }
}
