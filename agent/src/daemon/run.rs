//! `rewind-agent run`: keeps one mTLS bidi stream to a coordinator. On each
//! connection it sends a hello with the endpoint's inventory (installed
//! releases, per-target schema and data digests, audit chain head), then
//! heartbeats at the interval the coordinator's welcome names, and delivers
//! the outbox: every unacknowledged signed result is sent once per stream and
//! marked delivered on the coordinator's ack. Any failure
//! ends the stream and the daemon reconnects, trying the configured
//! coordinators in order, with jittered exponential backoff (1 s doubling
//! to 60 s, reset after a welcomed stream). SIGTERM / SIGINT stop it.
//!
//! Beside the stream: a health task takes telemetry samples and runs local
//! revert (it works while disconnected); each stream sends every new sample,
//! and progress for the plans it delivers; the local endpoint (OFREP,
//! `POST /metrics`) runs when `ofrep_listen` is set. docs/telemetry.md.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rewind_shared::bundle::Granularity;
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::digest::database_digest;
use rewind_shared::fleet::{AuditHead, Hello, InstalledProduct, Inventory, TargetDigest, TargetState};
use rewind_shared::wire::v1;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::config::{AgentConfig, TargetConfig};
use super::identity::Identity;
use super::telemetry::Hub;
use super::{endpoint, local, progress, telemetry};
use crate::error::{Error, Result};
use crate::outbox;
use crate::state::State;

/// HTTP/2 keepalive PING interval on the stream's connection.
pub const KEEPALIVE: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Exponential backoff with "equal jitter": each delay is uniformly random
/// in `[d/2, d]` where `d` doubles from `min` up to `max`, so a fleet that
/// lost its coordinator does not reconnect in lockstep.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { next: min, min, max }
    }

    /// The delay before the next attempt.
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).expect("the OS random source works");
        let frac = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
        d.mul_f64(0.5 + frac / 2.0)
    }

    /// After a healthy stream: start again from the minimum.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Runs the daemon until a shutdown signal.
///
/// # Errors
/// [`Error::BadInput`] when the agent is not enrolled, the CA file is
/// unreadable or `ofrep_listen` cannot be bound; never for network failures
/// (those are retried).
pub fn run(cfg: &AgentConfig, state: &Path) -> Result<()> {
    let identity = Identity::load(state)?;
    let ca_pem =
        std::fs::read_to_string(&cfg.ca).map_err(|e| Error::BadInput(format!("ca {}: {e}", cfg.ca.display())))?;
    let tls = ClientTls { ca_pem, identity: Some((identity.cert_pem.clone(), identity.key_pem.clone())) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("runtime: {e}")))?;
    rt.block_on(async {
        let daemon = Daemon { hub: Arc::new(Hub::default()), outbox: Arc::new(Notify::new()) };
        let mut products: Vec<String> = cfg.targets.iter().map(|t| t.product.clone()).collect();
        products.sort();
        products.dedup();
        if let Some(addr) = cfg.ofrep_listen {
            let l = Arc::new(endpoint::Local {
                state: state.to_path_buf(),
                hub: Arc::clone(&daemon.hub),
                products: products.clone(),
            });
            let server = endpoint::bind(addr, l).await.map_err(|e| {
                Error::BadInput(format!(
                    "ofrep_listen = \"{addr}\": cannot listen there: {e}; choose a free loopback port"
                ))
            })?;
            tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!("local endpoint: {e}");
                }
            });
            eprintln!("rewind-agent: serving OFREP and POST /metrics on http://{addr}");
        }
        tokio::spawn(watch_health(cfg.clone(), state.to_path_buf(), products, daemon.clone()));
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut attempt = 0usize;
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            let url = &cfg.coordinator[attempt % cfg.coordinator.len()];
            let end = tokio::select! {
                end = session(url, &tls, &identity, cfg, state, &daemon) => end,
                () = &mut stop => break,
            };
            match end {
                End::AfterWelcome(why) => {
                    tracing::warn!(coordinator = %url, "stream ended: {why}; reconnecting");
                    backoff.reset();
                }
                End::BeforeWelcome(why) => {
                    tracing::warn!(coordinator = %url, "cannot connect: {why}");
                    attempt += 1;
                }
            }
            let delay = backoff.delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut stop => break,
            }
        }
        eprintln!("rewind-agent: stopped");
        Ok(())
    })
}

/// What the stream shares with the daemon's other tasks.
#[derive(Clone)]
struct Daemon {
    hub: Arc<Hub>,
    /// Woken when a result entered the outbox outside a delivery (local
    /// revert), so it is sent at once.
    outbox: Arc<Notify>,
}

/// Takes a telemetry sample every `telemetry_seconds` (and at once after a
/// push), and with `local_revert` judges the bakes' triggers on it and
/// reverts when one fires. Runs whether or not the coordinator is reachable.
async fn watch_health(cfg: AgentConfig, state: PathBuf, products: Vec<String>, daemon: Daemon) {
    let every = Duration::from_secs(cfg.telemetry_seconds);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics_dir = cfg.metrics_dir(&state);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = daemon.hub.pushed.notified() => {}
        }
        let (hub, dir, st, prods) = (Arc::clone(&daemon.hub), metrics_dir.clone(), state.clone(), products.clone());
        let Ok(samples) =
            tokio::task::spawn_blocking(move || telemetry::collect(&hub, &st, &dir, &prods, now_ms())).await
        else {
            continue;
        };
        daemon.hub.record(samples);
        if !cfg.local_revert {
            continue;
        }
        let (hub, st) = (Arc::clone(&daemon.hub), state.clone());
        let fired = tokio::task::spawn_blocking(move || local::judge(&st, &hub, now_ms())).await.unwrap_or_default();
        for f in fired {
            tracing::warn!(product = %f.bake.product, release = %f.bake.release, "{}", f.reason());
            eprintln!("rewind-agent: {}; rolling back", f.reason());
            let (c, st) = (cfg.clone(), state.clone());
            match tokio::task::spawn_blocking(move || local::revert(&c, &st, &f)).await {
                Ok(Ok(done)) => {
                    tracing::warn!("{done}");
                    eprintln!("rewind-agent: {done}");
                }
                Ok(Err(e)) => {
                    tracing::error!("local revert failed: {e}");
                    eprintln!("rewind-agent: local revert failed: {e}");
                }
                Err(e) => tracing::error!("local revert task: {e}"),
            }
            daemon.outbox.notify_one();
        }
    }
}

/// Sends the newest telemetry sample of each product.
async fn send_telemetry(tx: &mpsc::Sender<v1::AgentMessage>, hub: &Hub) -> std::result::Result<(), String> {
    for s in hub.latest() {
        let msg = v1::AgentMessage { body: Some(v1::agent_message::Body::Telemetry((&s).into())) };
        tx.send(msg).await.map_err(|_| "stream closed".to_string())?;
    }
    Ok(())
}

enum End {
    /// The coordinator welcomed us, then the stream ended.
    AfterWelcome(String),
    /// Connecting, TLS, authentication or the hello failed.
    BeforeWelcome(String),
}

async fn session(
    url: &str,
    tls: &ClientTls,
    identity: &Identity,
    cfg: &AgentConfig,
    state: &Path,
    daemon: &Daemon,
) -> End {
    let ch = match channel::connect(url, tls, ChannelOptions::stream(KEEPALIVE)).await {
        Ok(ch) => ch,
        Err(e) => return End::BeforeWelcome(e.to_string()),
    };
    let mut stamp = stamps(&cfg.targets);
    let (state_dir, targets) = (state.to_path_buf(), cfg.targets.clone());
    let (inventory, audit) = match tokio::task::spawn_blocking(move || inventory(&state_dir, &targets)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return End::BeforeWelcome(format!("reading the inventory: {e}")),
        Err(e) => return End::BeforeWelcome(format!("reading the inventory: {e}")),
    };
    let hello = Hello {
        agent_id: identity.agent_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hostname: super::hostname(),
        inventory,
        audit,
    };
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(16);
    let send = |body| v1::AgentMessage { body: Some(body) };
    if tx.send(send(v1::agent_message::Body::Hello((&hello).into()))).await.is_err() {
        return End::BeforeWelcome("stream closed".into());
    }
    let mut client = v1::fleet_client::FleetClient::new(ch);
    let mut inbound = match client.connect(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return End::BeforeWelcome(format!("{} ({:?})", s.message(), s.code())),
    };
    let heartbeat = match inbound.message().await {
        Ok(Some(v1::CoordinatorMessage { body: Some(v1::coordinator_message::Body::Welcome(w)) })) => {
            tracing::info!(coordinator = %url, agent = %w.agent_id, "connected");
            eprintln!("rewind-agent: connected to {url} as {}", identity.agent_id);
            Duration::from_secs(u64::from(w.heartbeat_seconds.max(1)))
        }
        Ok(Some(_)) => return End::BeforeWelcome("the coordinator's first message was not a welcome".into()),
        Ok(None) => return End::BeforeWelcome("the coordinator closed the stream".into()),
        Err(s) => return End::BeforeWelcome(format!("{} ({:?})", s.message(), s.code())),
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Results already sent on this stream; each stream sends every pending
    // one once (the coordinator stores them by id, so a resend is harmless).
    let mut sent = HashSet::new();
    if let Err(why) = send_outbox(&tx, state, &mut sent).await {
        return End::AfterWelcome(why);
    }
    let mut samples = daemon.hub.changed.subscribe();
    samples.mark_unchanged();
    if let Err(why) = send_telemetry(&tx, &daemon.hub).await {
        return End::AfterWelcome(why);
    }
    loop {
        tokio::select! {
            Ok(()) = samples.changed() => {
                if let Err(why) = send_telemetry(&tx, &daemon.hub).await {
                    return End::AfterWelcome(why);
                }
            }
            () = daemon.outbox.notified() => {
                if let Err(why) = send_outbox(&tx, state, &mut sent).await {
                    return End::AfterWelcome(why);
                }
            }
            m = inbound.message() => match m {
                Ok(Some(msg)) => {
                    if handle(msg, state, cfg, &tx).await {
                        // A plan finished: its signed result goes at once (not
                        // at the next heartbeat), then the new state.
                        if let Err(why) = send_outbox(&tx, state, &mut sent).await {
                            return End::AfterWelcome(why);
                        }
                        let (dir, targets) = (state.to_path_buf(), cfg.targets.clone());
                        if let Ok(Ok((now, head))) = tokio::task::spawn_blocking(move || self::inventory(&dir, &targets)).await {
                            let update = v1::InventoryUpdate { inventory: Some((&now).into()), audit: Some((&head).into()) };
                            if tx.send(send(v1::agent_message::Body::Inventory(update))).await.is_err() {
                                return End::AfterWelcome("stream closed".into());
                            }
                        }
                    }
                }
                Ok(None) => return End::AfterWelcome("closed by the coordinator".into()),
                Err(s) => return End::AfterWelcome(format!("{} ({:?})", s.message(), s.code())),
            },
            _ = tick.tick() => {
                let hb = v1::Heartbeat { sent_unix_ms: now_ms() };
                if tx.send(send(v1::agent_message::Body::Heartbeat(hb))).await.is_err() {
                    return End::AfterWelcome("stream closed".into());
                }
                if let Err(why) = send_outbox(&tx, state, &mut sent).await {
                    return End::AfterWelcome(why);
                }
                // A target changed on disk (out of band, or by a local
                // command): report the new digests. Only a stat per file
                // when nothing changed.
                let now = stamps(&cfg.targets);
                if now != stamp {
                    stamp = now;
                    let (dir, targets) = (state.to_path_buf(), cfg.targets.clone());
                    if let Ok(Ok((inv, head))) = tokio::task::spawn_blocking(move || self::inventory(&dir, &targets)).await {
                        let update = v1::InventoryUpdate { inventory: Some((&inv).into()), audit: Some((&head).into()) };
                        if tx.send(send(v1::agent_message::Body::Inventory(update))).await.is_err() {
                            return End::AfterWelcome("stream closed".into());
                        }
                    }
                }
            }
        }
    }
}

/// Size and modification time of each target and its WAL file: a cheap
/// signal that its digest may have changed.
fn stamps(targets: &[TargetConfig]) -> Vec<Option<(u64, std::time::SystemTime)>> {
    let stat = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)));
    targets
        .iter()
        .flat_map(|t| {
            let mut wal = t.path.clone().into_os_string();
            wal.push("-wal");
            [stat(&t.path), stat(Path::new(&wal))]
        })
        .collect()
}

/// Sends the outbox's unacknowledged results not yet sent on this stream.
async fn send_outbox(
    tx: &mpsc::Sender<v1::AgentMessage>,
    state: &Path,
    sent: &mut HashSet<String>,
) -> std::result::Result<(), String> {
    let dir = state.to_path_buf();
    let pending = match tokio::task::spawn_blocking(move || State::open(&dir).and_then(|st| outbox::pending(&st))).await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::warn!("reading the outbox: {e}");
            return Ok(());
        }
        Err(e) => return Err(format!("reading the outbox: {e}")),
    };
    let reasons = local::reasons(state);
    let mut results = Vec::new();
    for item in pending {
        if sent.contains(&item.id) {
            continue;
        }
        let (Ok(report), Ok(signature)) = (hex::decode(&item.report.payload), hex::decode(&item.report.signature))
        else {
            tracing::error!(result = %item.id, "outbox item is not hex; skipped");
            continue;
        };
        let reason = local::reason_for(&reasons, &report);
        results.push(v1::Result {
            id: item.id,
            plan_id: item.plan,
            status: wire_status(&item.status) as i32,
            report,
            signature,
            digests: Vec::new(),
            audit: None,
            reason,
        });
    }
    // One result as a `Result`; several (a backlog) as `Results` messages of
    // up to RESULTS_PER_MESSAGE, acknowledged together.
    let mut results = results.into_iter().peekable();
    while results.peek().is_some() {
        let chunk: Vec<v1::Result> = results.by_ref().take(RESULTS_PER_MESSAGE).collect();
        let ids: Vec<String> = chunk.iter().map(|r| r.id.clone()).collect();
        let body = if chunk.len() == 1 {
            v1::agent_message::Body::Result(chunk.into_iter().next().expect("one result"))
        } else {
            v1::agent_message::Body::Results(v1::Results { results: chunk })
        };
        tx.send(v1::AgentMessage { body: Some(body) }).await.map_err(|_| "stream closed".to_string())?;
        let (dir, attempted) = (state.to_path_buf(), ids.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let st = State::open(&dir)?;
            attempted.iter().try_for_each(|id| outbox::mark_attempt(&st, id))
        })
        .await;
        sent.extend(ids);
    }
    Ok(())
}

/// Most results the agent sends in one `Results` message (the coordinator
/// takes up to 64).
const RESULTS_PER_MESSAGE: usize = 64;

/// Runs a plan delivered by the coordinator through the same path as
/// `rewind-agent apply|rollback --bundle FILE --trust FILE`: the agent checks
/// it against its own trust root, and the result (or refusal) goes to the
/// outbox.
fn run_delivery(cfg: &AgentConfig, state: &Path, p: &v1::PlanDelivery) -> Result<&'static str> {
    let trust = cfg.trust.as_ref().ok_or_else(|| {
        Error::BadInput(
            "agent.toml has no `trust`: plans from the coordinator are checked against the agent's own trust root"
                .into(),
        )
    })?;
    if !p.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || p.id.is_empty() || p.id.len() > 64 {
        return Err(Error::BadInput(format!("delivery id {:?} is not a plain name", p.id)));
    }
    let inbox = state.join("inbox");
    std::fs::create_dir_all(&inbox).map_err(Error::io(&inbox))?;
    let path = inbox.join(format!("{}.bundle.json", p.id));
    std::fs::write(&path, &p.envelope).map_err(Error::io(&path))?;
    let dbs: Vec<String> = cfg
        .targets
        .iter()
        .filter(|t| t.product == p.product)
        .map(|t| format!("{}={}", t.name, t.path.display()))
        .collect();
    let st = State::open(state)?;
    crate::recover::recover(&st)?;
    let report = match p.kind.as_str() {
        // A flag's pre-signed activation plan (`rewindctl flags set ... on`).
        "apply" if p.granularity == "flag" => crate::bundle::activate(&st, &path, trust, &p.subject)?,
        "apply" => crate::bundle::apply(&st, &path, trust, &dbs)?,
        "rollback" => {
            // Which of the bundle's pre-signed rollback plans: the release's,
            // or one target's, migration's or flag's.
            let granularity = match p.granularity.as_str() {
                "" => Granularity::Release,
                g => g.parse().map_err(|e: String| Error::BadInput(format!("delivery {}: {e}", p.id)))?,
            };
            let subject = (granularity != Granularity::Release).then_some(p.subject.as_str());
            crate::bundle::rollback(&st, &path, trust, &dbs, granularity, subject)?
        }
        other => return Err(Error::BadInput(format!("plan kind {other:?}: expected apply or rollback"))),
    };
    Ok(if report.status == "failed" { "failed" } else { "done" })
}

fn wire_status(s: &str) -> v1::ResultStatus {
    match s {
        "applied" => v1::ResultStatus::Applied,
        "rolled_back" => v1::ResultStatus::RolledBack,
        "failed" => v1::ResultStatus::Failed,
        "refused" => v1::ResultStatus::Refused,
        "needs_human" => v1::ResultStatus::NeedsHuman,
        _ => v1::ResultStatus::Unspecified,
    }
}

/// Handles one coordinator message; true when a plan ran or a result was newly
/// acknowledged (the endpoint's state changed since the last inventory).
async fn handle(
    msg: v1::CoordinatorMessage,
    state: &Path,
    cfg: &AgentConfig,
    tx: &mpsc::Sender<v1::AgentMessage>,
) -> bool {
    use v1::coordinator_message::Body;
    match msg.body {
        Some(Body::Plan(p)) => {
            let id = p.id.clone();
            let (kind, product) = (p.kind.clone(), p.product.clone());
            // Another plan for the product: the coordinator moved on, the bake is over.
            if let Err(e) = local::end(state, &p.product) {
                tracing::warn!("ending the bake of {}: {e}", p.product);
            }
            let (dir, plan_id, did, prod) = (state.to_path_buf(), p.plan_id.clone(), p.id.clone(), p.product.clone());
            let mut watch =
                tokio::task::spawn_blocking(move || progress::Watch::new(&dir, &plan_id, &did, &prod)).await.ok();
            let (dir, cfg2) = (state.to_path_buf(), cfg.clone());
            let job = tokio::task::spawn_blocking(move || run_delivery(&cfg2, &dir, &p));
            tokio::pin!(job);
            let mut look = tokio::time::interval(PROGRESS_LOOK);
            let outcome = loop {
                tokio::select! {
                    r = &mut job => break r,
                    _ = look.tick() => {
                        if let Some(w) = watch.take() {
                            watch = send_progress(w, tx).await;
                        }
                    }
                }
            };
            if let Some(w) = watch.take() {
                watch = send_progress(w, tx).await;
            }
            let said = match &outcome {
                Ok(Ok(status)) => format!("{kind} {status}"),
                Ok(Err(e)) => format!("{kind} not run: {e}"),
                Err(e) => format!("{kind} task failed: {e}"),
            };
            if let Some(w) = &watch {
                let fin =
                    v1::AgentMessage { body: Some(v1::agent_message::Body::Progress((&w.finished(&said)).into())) };
                let _ = tx.send(fin).await;
            }
            match outcome {
                Ok(Ok(status)) => {
                    tracing::info!(delivery = %id, status, "plan ran");
                    if cfg.local_revert && kind == "apply" && status == "done" {
                        let (c, dir, did) = (cfg.clone(), state.to_path_buf(), id.clone());
                        let bundle = state.join("inbox").join(format!("{id}.bundle.json"));
                        match tokio::task::spawn_blocking(move || local::begin(&c, &dir, &did, &bundle, now_ms())).await
                        {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(delivery = %id, product = %product, "local revert cannot watch this release: {e}")
                            }
                            Err(e) => tracing::warn!("local revert: {e}"),
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(delivery = %id, "plan not run: {e}"),
                Err(e) => {
                    tracing::error!(delivery = %id, "plan task failed: {e}; not acknowledged");
                    return false;
                }
            }
            // Acknowledged once processed: its result (or refusal) is in the outbox.
            let ack = v1::AgentMessage { body: Some(v1::agent_message::Body::Ack(v1::Ack { id })) };
            let _ = tx.send(ack).await;
            return true;
        }
        Some(Body::Ack(a)) => return mark_delivered(state, vec![a.id]).await,
        Some(Body::ResultAcks(a)) => return mark_delivered(state, a.ids).await,
        Some(Body::Heartbeat(_)) => {}
        Some(Body::Welcome(_)) | None => tracing::warn!("unexpected message from the coordinator"),
    }
    false
}

/// Marks acknowledged results delivered in the outbox; true when one of
/// them was not delivered before (the endpoint's state then goes out).
async fn mark_delivered(state: &Path, ids: Vec<String>) -> bool {
    let dir = state.to_path_buf();
    let marked = tokio::task::spawn_blocking(move || {
        let st = State::open(&dir)?;
        Ok::<_, Error>(ids.into_iter().map(|id| (outbox::mark_delivered(&st, &id), id)).collect::<Vec<_>>())
    })
    .await;
    let acks = match marked {
        Ok(Ok(acks)) => acks,
        Ok(Err(e)) => {
            tracing::warn!("recording acks: {e}; the results will be sent again");
            return false;
        }
        Err(e) => {
            tracing::warn!("recording acks: {e}");
            return false;
        }
    };
    let mut newly = false;
    for (ack, id) in acks {
        match ack {
            Ok(ack) => {
                tracing::info!(result = %id, ?ack, "result acknowledged");
                newly |= ack == outbox::Ack::Delivered;
            }
            Err(e) => tracing::warn!(result = %id, "recording the ack: {e}; the result will be sent again"),
        }
    }
    newly
}

/// How often the journal is read for progress while a plan runs.
const PROGRESS_LOOK: Duration = Duration::from_millis(200);

/// Reads the journal and sends the new steps; gives the watch back.
async fn send_progress(mut w: progress::Watch, tx: &mpsc::Sender<v1::AgentMessage>) -> Option<progress::Watch> {
    let (w, steps) = tokio::task::spawn_blocking(move || {
        let steps = w.poll();
        (w, steps)
    })
    .await
    .ok()?;
    for s in &steps {
        let _ = tx.send(v1::AgentMessage { body: Some(v1::agent_message::Body::Progress(s.into())) }).await;
    }
    Some(w)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The endpoint's inventory: installed releases and the audit head from the
/// state directory, and each configured target's digests. Takes the state
/// lock only while reading `agent.db`.
///
/// # Errors
/// When the state directory cannot be opened or read. An unreadable target
/// is reported in the inventory, not as an error.
pub fn inventory(state: &Path, targets: &[TargetConfig]) -> Result<(Inventory, AuditHead)> {
    let (products, audit) = {
        let st = State::open(state)?;
        let sql = |e| Error::Sqlite { context: "inventory".into(), source: e };
        let mut stmt =
            st.db.prepare("SELECT product, release, sequence, plan_id FROM installed ORDER BY product").map_err(sql)?;
        let products: Vec<InstalledProduct> = stmt
            .query_map([], |r| {
                Ok(InstalledProduct {
                    name: r.get(0)?,
                    release: r.get(1)?,
                    sequence: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    plan_id: r.get(3)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(sql)?;
        let head: Option<(i64, String)> = st
            .db
            .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map(Some)
            .or_else(|e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) })
            .map_err(sql)?;
        let audit = match head {
            Some((seq, hash)) => AuditHead {
                seq: u64::try_from(seq).unwrap_or(0),
                hash: Some(hash.parse().map_err(|e| Error::Failed(format!("audit head in {}: {e}", state.display())))?),
            },
            None => AuditHead::default(),
        };
        (products, audit)
    };
    let targets = targets.iter().map(target_state).collect();
    Ok((Inventory { products, targets }, audit))
}

fn target_state(t: &TargetConfig) -> TargetState {
    let digests = (|| -> std::result::Result<TargetDigest, String> {
        if !t.path.is_file() {
            return Err(format!("{}: no such file", t.path.display()));
        }
        let conn = rusqlite::Connection::open_with_flags(
            &t.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("{}: {e}", t.path.display()))?;
        conn.busy_timeout(crate::target::BUSY_TIMEOUT).map_err(|e| e.to_string())?;
        let d = database_digest(&conn).map_err(|e| format!("{}: {e}", t.path.display()))?;
        Ok(TargetDigest::Ok { schema: d.schema, data: d.digest })
    })()
    .unwrap_or_else(|error| TargetDigest::Unreadable { error });
    TargetState { product: t.product.clone(), name: t.name.clone(), digests }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where `run` keeps its identity, for messages.
#[must_use]
pub fn identity_dir(state: &Path) -> PathBuf {
    super::identity::dir(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let d: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        for (i, want) in [1u64, 2, 4, 8, 8, 8].iter().enumerate() {
            let want = Duration::from_secs(*want);
            assert!(d[i] >= want / 2 && d[i] <= want, "delay {i} = {:?}, want within [{:?}, {want:?}]", d[i], want / 2);
        }
        b.reset();
        assert!(b.delay() <= Duration::from_secs(1));
    }
}
