//! Simulated agents for `fleet_load`: each one is a tokio task holding its
//! own client certificate (from a real enrollment: its own key, a CSR, the
//! coordinator's CA), its own Ed25519 report key, and one mTLS channel bound
//! to a loopback source address 127.0.0.x. It speaks the real protocol of
//! `rewind-agent run`: hello with an inventory, welcome, heartbeats at the
//! welcome's interval, a PlanDelivery acknowledged by id, signed results
//! (a backlog several to a `Results` message) resent until acknowledged, and after the stream ends a reconnect with
//! the agent's jittered exponential backoff (1 s doubling to 60 s, each
//! delay uniform in [d/2, d], reset after a welcome). It does not run plans
//! through the data engine: receiving and acknowledging is what is timed.

pub mod remote;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::report::{ChainPoint, REPORT_FORMAT, ReportPayload, ReportStatus, SignedReport, TargetResult};
use rewind_shared::wire::v1;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// An enrolled simulated agent.
#[derive(Clone)]
pub struct SimIdentity {
    pub index: usize,
    pub agent_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Signs results (the agent's agent.key).
    pub report_key: [u8; 32],
}

/// What a simulated agent tells the load generator.
#[derive(Debug)]
pub enum Event {
    /// Welcomed on a new stream.
    Connected(usize, Instant),
    /// A PlanDelivery arrived.
    Plan(usize, Instant),
    /// The coordinator acknowledged this many of our results.
    ResultAcked(usize, Instant),
    /// The results of [`Command::Prepare`] are signed and ready.
    Prepared(usize),
    /// The stream ended.
    Disconnected,
}

/// Commands from the load generator, by generation number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Idle,
    /// Sign this many results of a round now and keep them for its
    /// [`Command::SendResults`]: a real agent signs on its own machine, so
    /// the signing stays out of the time the ingestion is measured in.
    Prepare {
        round: u32,
        count: u32,
    },
    /// Send this many signed results, all at once, on the current stream
    /// (the prepared ones when they are of this round).
    SendResults {
        round: u32,
        count: u32,
    },
    /// Close the stream and end the task.
    Stop,
}

/// What every simulated agent shares.
pub struct Shared {
    /// The coordinator replicas; agent `i` connects to `urls[i % len]`.
    pub urls: Vec<String>,
    pub ca_pem: String,
    pub hello_target: v1::TargetState,
    pub events: mpsc::UnboundedSender<Event>,
    pub commands: watch::Receiver<Command>,
    /// Most results in one message: a backlog goes as `Results` messages
    /// of this many (as `rewind-agent` sends its outbox, up to 64); 1 sends
    /// each as its own `Result`.
    pub per_message: usize,
}

/// 127.0.0.x for agent `i`: 250 source addresses, so 10,000 agents use 40
/// ports each instead of 10,000 ports of one address.
#[must_use]
pub fn source_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(2 + i % 250).expect("< 252")))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("OS random source");
    u32::from_le_bytes(b)
}

/// The agent's backoff (agent/src/daemon/run.rs `Backoff`).
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d.mul_f64(0.5 + f64::from(random_u32()) / f64::from(u32::MAX) / 2.0)
    }
}

/// Runs one simulated agent until [`Command::Stop`].
pub async fn run(id: SimIdentity, shared: Arc<Shared>) {
    let tls = ClientTls { ca_pem: shared.ca_pem.clone(), identity: Some((id.cert_pem.clone(), id.key_pem.clone())) };
    let key = SigningKey::from_bytes(&id.report_key);
    let mut backoff = Backoff { next: Backoff::MIN };
    let mut commands = shared.commands.clone();
    // Rounds of results already sent survive reconnects (sent once each),
    // and so do results prepared for a round.
    let mut done_round = 0;
    let mut prepared: (u32, Vec<v1::Result>) = (0, Vec::new());
    loop {
        if *commands.borrow() == Command::Stop {
            return;
        }
        let welcomed = session(&id, &tls, &key, &shared, &mut commands, &mut done_round, &mut prepared).await;
        let _ = shared.events.send(Event::Disconnected);
        if *commands.borrow() == Command::Stop {
            return;
        }
        if welcomed {
            backoff.next = Backoff::MIN;
        }
        tokio::time::sleep(backoff.delay()).await;
    }
}

/// One stream; true when it was welcomed.
async fn session(
    id: &SimIdentity,
    tls: &ClientTls,
    key: &SigningKey,
    shared: &Shared,
    commands: &mut watch::Receiver<Command>,
    done_round: &mut u32,
    prepared: &mut (u32, Vec<v1::Result>),
) -> bool {
    let url = &shared.urls[id.index % shared.urls.len()];
    let Ok(ep) = channel::endpoint(url, tls, ChannelOptions::stream(Duration::from_secs(60))) else {
        return false;
    };
    let Ok(ch) = ep.local_address(Some(source_addr(id.index))).connect().await else {
        return false;
    };
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(64);
    let msg = |body| v1::AgentMessage { body: Some(body) };
    let hello = v1::Hello {
        agent_id: id.agent_id.clone(),
        agent_version: "fleet_load".into(),
        hostname: format!("sim-{}", id.index),
        inventory: Some(v1::Inventory { products: Vec::new(), targets: vec![shared.hello_target.clone()] }),
        // The chain point the results carry (an agent that applied nothing yet).
        audit: Some(v1::AuditHead { seq: 0, hash: rewind_shared::audit::GENESIS.to_string() }),
    };
    if tx.send(msg(v1::agent_message::Body::Hello(hello))).await.is_err() {
        return false;
    }
    let mut client = v1::fleet_client::FleetClient::new(ch);
    let Ok(resp) = client.connect(ReceiverStream::new(rx)).await else {
        return false;
    };
    let mut inbound = resp.into_inner();
    let heartbeat = match inbound.message().await {
        Ok(Some(v1::CoordinatorMessage { body: Some(v1::coordinator_message::Body::Welcome(w)) })) => {
            Duration::from_secs(u64::from(w.heartbeat_seconds.max(1)))
        }
        _ => return false,
    };
    let _ = shared.events.send(Event::Connected(id.index, Instant::now()));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A command given before this stream (e.g. results to send) is
        // handled once per round.
        let cmd = *commands.borrow_and_update();
        match cmd {
            Command::Stop => return true,
            Command::Prepare { round, count } if round != prepared.0 => {
                *prepared = (round, (0..count).map(|k| signed_result(id, key, round, k)).collect());
                let _ = shared.events.send(Event::Prepared(id.index));
            }
            Command::SendResults { round, count } if round != *done_round => {
                *done_round = round;
                let ready = if prepared.0 == round { std::mem::take(&mut prepared.1) } else { Vec::new() };
                let results = if ready.len() == count as usize {
                    ready
                } else {
                    (0..count).map(|k| signed_result(id, key, round, k)).collect()
                };
                let mut results = results.into_iter().peekable();
                while results.peek().is_some() {
                    let mut chunk: Vec<v1::Result> = results.by_ref().take(shared.per_message.max(1)).collect();
                    let body = if chunk.len() == 1 {
                        v1::agent_message::Body::Result(chunk.pop().expect("one"))
                    } else {
                        v1::agent_message::Body::Results(v1::Results { results: chunk })
                    };
                    if tx.send(msg(body)).await.is_err() {
                        return true;
                    }
                }
            }
            _ => {}
        }
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(v1::CoordinatorMessage { body: Some(body) })) => match body {
                    v1::coordinator_message::Body::Plan(p) => {
                        let _ = shared.events.send(Event::Plan(id.index, Instant::now()));
                        if tx.send(msg(v1::agent_message::Body::Ack(v1::Ack { id: p.id }))).await.is_err() {
                            return true;
                        }
                    }
                    v1::coordinator_message::Body::Ack(_) => {
                        let _ = shared.events.send(Event::ResultAcked(1, Instant::now()));
                    }
                    v1::coordinator_message::Body::ResultAcks(a) => {
                        let _ = shared.events.send(Event::ResultAcked(a.ids.len(), Instant::now()));
                    }
                    _ => {}
                },
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return true,
            },
            _ = tick.tick() => {
                let hb = v1::Heartbeat { sent_unix_ms: 0 };
                if tx.send(msg(v1::agent_message::Body::Heartbeat(hb))).await.is_err() {
                    return true;
                }
            }
            r = commands.changed() => if r.is_err() { return true },
        }
    }
}

/// A result signed with the agent's key, as `rewind-agent` puts in its
/// outbox after applying a plan (chain point: the empty chain).
fn signed_result(id: &SimIdentity, key: &SigningKey, round: u32, k: u32) -> v1::Result {
    let rid = format!("res-{}-{round}-{k}-{:08x}", id.index, random_u32());
    let payload = ReportPayload {
        format: REPORT_FORMAT.into(),
        id: rid.clone(),
        agent_key: hex::encode(key.verifying_key().as_bytes()),
        agent_keyid: rewind_shared::trust::key_id(&key.verifying_key()),
        plan: format!("pln-bench-{round}-{k}"),
        signed_plan: None,
        bundle: None,
        product: "bench".into(),
        release: "1.0.0".into(),
        sequence: 1,
        kind: Some(rewind_shared::bundle::PlanKind::Apply),
        status: ReportStatus::Applied,
        state: "applied".into(),
        targets: vec![TargetResult { name: "kv".into(), ..TargetResult::default() }],
        refusal: None,
        message: "fleet_load simulated result".into(),
        millis: Some(1),
        failed_step: None,
        chain: ChainPoint { seq: 0, head: rewind_shared::audit::GENESIS },
        audit_since: Vec::new(),
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    let bytes = serde_json::to_vec(&payload).expect("report serialises");
    let signed = SignedReport::sign_bytes(&bytes, key);
    v1::Result {
        id: rid,
        plan_id: payload.plan,
        status: v1::ResultStatus::Applied as i32,
        report: bytes,
        signature: hex::decode(signed.signature).expect("hex"),
        digests: Vec::new(),
        audit: None,
        reason: String::new(),
    }
}

/// Percentile (nearest rank) of sorted durations.
#[must_use]
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
