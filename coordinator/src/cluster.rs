//! Several coordinator replicas on one PostgreSQL store (DESIGN.md §6,
//! docs/replicas.md): every replica accepts agent streams and Admin calls;
//! exactly one — the holder of the leader lease — runs the rollout engine.
//!
//! - **Lease and fencing.** Each replica tries to take or renew the lease
//!   in the store every third of [`Config::lease_ms`](crate::config::Config).
//!   The holder gets a fencing token that grows with every change of
//!   holder, and the store refuses rollout and delivery writes that do not
//!   carry the current one. A leader that cannot renew stops leading when
//!   its own clock says the lease is over, measured from before its last
//!   successful renewal — so before the store's expiry, and before anyone
//!   else can take over.
//! - **One channel between replicas** ([`Store::notify`] / [`Store::listen`],
//!   PostgreSQL LISTEN/NOTIFY): which agents each replica has a stream
//!   with (announced on connect and disconnect and in full every
//!   [`PRESENCE_EVERY`]), which agents have new deliveries (each replica
//!   sends them to the agents connected to it), and the results, alarms
//!   and telemetry a replica received (the leader's engine counts them).
//!   A replica whose channel was down catches up from the store.
//! - **Admin calls that change a rollout** are forwarded by a follower to
//!   the leader (crate::admin); reads are served from the store.
//!
//! With the SQLite store there is one coordinator: it always leads and the
//! channel does not exist.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rewind_shared::fleet::AgentId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::App;
use crate::store::{Fence, Lease, Signal};

/// How often a replica announces every agent connected to it.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(5);
/// A replica not heard of for this long has no agents any more.
pub const PRESENCE_STALE: Duration = Duration::from_secs(16);
/// Largest NOTIFY payload sent (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7000;
/// Agents connecting to or leaving this replica within this long are
/// announced in one message (a connect storm: one per 218 agents, not one
/// each — the leader takes each message through its rollout engine).
pub const PRESENCE_GATHER: Duration = Duration::from_millis(100);

/// Whether this replica leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Runs the rollout engine; its writes carry `token`.
    Leader { token: i64 },
    /// Another replica leads (at `leader`, when known).
    Follower { leader: Option<String> },
}

/// This replica's view of the cluster.
pub struct Cluster {
    /// This replica's name (kept in its state directory).
    pub replica: String,
    /// The lease holder name of this process: `<replica>/<random>`; a
    /// restarted replica takes its lease over at once, with a new token.
    pub holder: String,
    /// The URL other replicas reach this one's gRPC at (forwarded calls).
    pub url: String,
    leadership: watch::Sender<Leadership>,
    /// Agents with a stream on other replicas: replica -> (agents, last heard).
    remote: Mutex<HashMap<String, (HashSet<AgentId>, Instant)>>,
    /// This replica's agents coming and going, to announce gathered
    /// ([`PRESENCE_GATHER`]); set once the channel listens.
    presence: std::sync::OnceLock<mpsc::UnboundedSender<(AgentId, bool)>>,
}

impl Default for Cluster {
    /// A single coordinator: it leads, and there is nobody to tell.
    fn default() -> Self {
        Cluster::new("single".into(), String::new(), Leadership::Leader { token: 0 })
    }
}

/// What replicas tell each other (JSON on the channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Message {
    /// Agents that connected to (`up`) or left (`down`) replica `from`;
    /// `full`: `up` is every agent connected there (in chunks: `part`).
    Presence {
        from: String,
        up: Vec<AgentId>,
        down: Vec<AgentId>,
        full: bool,
        #[serde(default)]
        part: u32,
    },
    /// These agents have new deliveries in the store.
    Deliveries { from: String, agents: Vec<AgentId> },
    /// Events the leader's engine needs (`result`, `alarm`, `telemetry`).
    Events { from: String, events: Vec<(String, Value)> },
}

impl Cluster {
    #[must_use]
    pub fn new(replica: String, url: String, initial: Leadership) -> Self {
        let holder = format!("{replica}/{}", crate::random_id("p", 4));
        Cluster {
            replica,
            holder,
            url,
            leadership: watch::channel(initial).0,
            remote: Mutex::new(HashMap::new()),
            presence: std::sync::OnceLock::new(),
        }
    }

    /// Whether this replica runs the rollout engine now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Leader { .. })
    }

    /// The current view.
    #[must_use]
    pub fn leadership(&self) -> Leadership {
        self.leadership.borrow().clone()
    }

    /// Changes of leadership, for tasks that start or stop with it.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    /// Whether `agent` has a stream with this replica or, as far as this
    /// replica heard, with another one.
    #[must_use]
    pub fn is_connected(&self, app: &App, agent: &AgentId) -> bool {
        app.sessions.is_connected(agent)
            || self
                .remote
                .lock()
                .expect("cluster lock")
                .values()
                .any(|(agents, seen)| seen.elapsed() < PRESENCE_STALE && agents.contains(agent))
    }

    fn set(&self, to: Leadership) -> bool {
        self.leadership.send_if_modified(|l| {
            let changed = *l != to;
            *l = to;
            changed
        })
    }
}

/// Refuses a change of a rollout on a replica that does not lead (the
/// dashboard's actions; rewindctl's calls are forwarded to the leader).
///
/// # Errors
/// [`Error::FailedPrecondition`](crate::error::Error) naming the leader.
pub fn require_leader(app: &App) -> crate::error::Result<()> {
    match app.cluster.leadership() {
        Leadership::Leader { .. } => Ok(()),
        Leadership::Follower { leader } => Err(crate::error::Error::FailedPrecondition(format!(
            "this replica ({}) does not lead: send the command to the leader{}",
            app.cluster.replica,
            leader
                .map_or_else(|| " (one is being elected; retry in a few seconds)".to_string(), |u| format!(" at {u}"))
        ))),
    }
}

/// Starts the lease, channel and presence tasks of a replica on a shared
/// store (after a first try for the lease, so a lone replica leads from
/// its first call); nothing for a single coordinator.
pub async fn spawn(app: &Arc<App>) {
    let Some(rx) = app.store.listen().await else { return };
    let (ptx, prx) = mpsc::unbounded_channel();
    if app.cluster.presence.set(ptx).is_ok() {
        tokio::spawn(gather_presence(Arc::downgrade(app), prx));
    }
    let mut valid_until = None;
    try_lead(app, &mut valid_until).await;
    tokio::spawn(lease(Arc::downgrade(app), valid_until));
    tokio::spawn(listen(Arc::downgrade(app), rx));
    tokio::spawn(announce(Arc::downgrade(app)));
    tokio::spawn(forward_events(Arc::downgrade(app)));
}

/// One try to take or renew the lease; demotes this replica when its own
/// clock says the lease it held is over.
async fn try_lead(app: &App, valid_until: &mut Option<Instant>) {
    let ttl = Duration::from_millis(app.config.lease_ms());
    let every = ttl / 3;
    let c = &app.cluster;
    let started = Instant::now();
    let asked = app.store.lead(c.holder.clone(), c.url.clone(), u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    match tokio::time::timeout(every, asked).await {
        Ok(Ok(Lease::Leader { token })) => {
            // The store's expiry is `ttl` after the renewal landed; ours
            // counts from before it was sent, minus a margin for clocks.
            *valid_until = Some(started + ttl - ttl / 5);
            if c.leadership() != (Leadership::Leader { token }) {
                app.store.set_fence(Some(Fence { holder: c.holder.clone(), token }));
                c.set(Leadership::Leader { token });
                tracing::warn!(replica = %c.replica, token, "this replica leads now (it runs the rollout engine)");
                eprintln!("rewind-coordinator: replica {} leads (fencing token {token})", c.replica);
            }
        }
        Ok(Ok(Lease::Follower { leader })) => {
            *valid_until = None;
            if c.set(Leadership::Follower { leader: leader.clone() }) {
                tracing::warn!(replica = %c.replica, leader = ?leader, "this replica follows");
                eprintln!(
                    "rewind-coordinator: replica {} follows the leader at {}",
                    c.replica,
                    leader.as_deref().unwrap_or("?")
                );
            }
        }
        Ok(Err(e)) => tracing::warn!(replica = %c.replica, "leader lease: {e}"),
        Err(_) => tracing::warn!(replica = %c.replica, "leader lease: no answer from the store within {every:?}"),
    }
    if valid_until.is_some_and(|v| Instant::now() >= v) && c.is_leader() {
        *valid_until = None;
        c.set(Leadership::Follower { leader: None });
        tracing::error!(replica = %c.replica, "the leader lease could not be renewed in time: stopped leading");
        eprintln!("rewind-coordinator: replica {} stopped leading (lease not renewed)", c.replica);
    }
}

/// Takes or renews the lease every third of its length, waking early to
/// demote at the end of a lease it could not renew.
async fn lease(app: Weak<App>, mut valid_until: Option<Instant>) {
    loop {
        let Some(every) = app.upgrade().map(|a| Duration::from_millis(a.config.lease_ms()) / 3) else { return };
        let wake = valid_until.map_or(every, |v| every.min(v.saturating_duration_since(Instant::now())));
        tokio::time::sleep(wake.max(Duration::from_millis(10))).await;
        let Some(app) = app.upgrade() else { return };
        try_lead(&app, &mut valid_until).await;
    }
}

async fn listen(app: Weak<App>, mut rx: tokio::sync::mpsc::Receiver<Signal>) {
    while let Some(signal) = rx.recv().await {
        let Some(app) = app.upgrade() else { return };
        match signal {
            Signal::Resync => resync(&app).await,
            Signal::Message(text) => match serde_json::from_str::<Message>(&text) {
                Ok(m) => handle(&app, m).await,
                Err(e) => tracing::warn!("replica channel: a message that does not parse ({e}): {text:.200}"),
            },
        }
    }
}

/// After the channel was down: send the local agents what waits for them,
/// tell the others who is connected here, and (leader) read back results.
async fn resync(app: &Arc<App>) {
    for part in chunks(app.sessions.ids()) {
        if let Err(e) = crate::rollouts::send_deliveries_of(app, part).await {
            tracing::warn!("resync: pending deliveries: {e}");
        }
    }
    announce_full(app).await;
    if app.cluster.is_leader() {
        crate::rollout_engine::catch_up(app).await;
    }
}

async fn handle(app: &Arc<App>, m: Message) {
    let me = &app.cluster.replica;
    match m {
        Message::Presence { from, .. } | Message::Deliveries { from, .. } | Message::Events { from, .. }
            if &from == me => {}
        Message::Presence { from, up, down, full, part } => {
            // Agents the leader did not know to be connected there: they
            // may join a rollout or get their plan now.
            let newly: Vec<AgentId> = {
                let mut remote = app.cluster.remote.lock().expect("cluster lock");
                let entry = remote.entry(from).or_insert_with(|| (HashSet::new(), Instant::now()));
                let before = if full && part == 0 { std::mem::take(&mut entry.0) } else { entry.0.clone() };
                entry.0.extend(up.iter().cloned());
                for a in &down {
                    entry.0.remove(a);
                }
                entry.1 = Instant::now();
                up.into_iter().filter(|a| !before.contains(a)).collect()
            };
            if app.cluster.is_leader() {
                crate::rollout_engine::agents_connected(app, &newly).await;
            }
        }
        Message::Deliveries { agents, .. } => {
            let here: Vec<AgentId> = agents.into_iter().filter(|a| app.sessions.is_connected(a)).collect();
            if let Err(e) = crate::rollouts::send_deliveries_of(app, here).await {
                tracing::warn!("pending deliveries: {e}");
            }
        }
        Message::Events { events, .. } => {
            if app.cluster.is_leader() {
                for (kind, params) in events {
                    if kind == "result" {
                        // The restore window of incident messages counts
                        // results stored by every replica.
                        app.timings.observe(&params);
                    }
                    crate::rollout_engine::remote_event(app, &kind, &params).await;
                }
            }
        }
    }
}

/// Sends `messages` on the channel, logging (not failing) when it cannot:
/// the periodic announcements and the store catch up.
async fn send(app: &App, messages: Vec<Message>) {
    for m in messages {
        let text = serde_json::to_string(&m).expect("messages serialize");
        if let Err(e) = app.store.notify(text).await {
            tracing::warn!("replica channel: {e}");
        }
    }
}

/// Splits a list of agents into chunks that fit one message.
fn chunks(agents: Vec<AgentId>) -> Vec<Vec<AgentId>> {
    let per = MAX_PAYLOAD / 32;
    if agents.is_empty() {
        return vec![Vec::new()];
    }
    agents.chunks(per).map(<[AgentId]>::to_vec).collect()
}

/// Tells the other replicas that `agent` connected here (`up`) or left:
/// within [`PRESENCE_GATHER`], with the others that did.
pub async fn presence(app: &App, agent: &AgentId, up: bool) {
    if !app.config.is_replicated() {
        return;
    }
    if let Some(tx) = app.cluster.presence.get()
        && tx.send((agent.clone(), up)).is_ok()
    {
        return;
    }
    send(app, presence_messages(&app.cluster.replica, HashMap::from([(agent.clone(), up)]))).await;
}

/// Presence messages for these agents' latest changes (ups and downs in
/// separate messages, each fitting a notification).
fn presence_messages(from: &str, latest: HashMap<AgentId, bool>) -> Vec<Message> {
    let (up, down): (Vec<_>, Vec<_>) = latest.into_iter().partition(|(_, up)| *up);
    let ids = |v: Vec<(AgentId, bool)>| v.into_iter().map(|(a, _)| a).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (list, is_up) in [(ids(up), true), (ids(down), false)] {
        if list.is_empty() {
            continue;
        }
        for part in chunks(list) {
            let (up, down) = if is_up { (part, Vec::new()) } else { (Vec::new(), part) };
            out.push(Message::Presence { from: from.to_string(), up, down, full: false, part: 0 });
        }
    }
    out
}

/// Announces this replica's agents coming and going: whatever changed
/// within [`PRESENCE_GATHER`] of the first change, each agent's latest
/// state (one that left and came back is announced as up).
async fn gather_presence(app: Weak<App>, mut rx: mpsc::UnboundedReceiver<(AgentId, bool)>) {
    while let Some((agent, up)) = rx.recv().await {
        let mut latest = HashMap::from([(agent, up)]);
        let deadline = tokio::time::Instant::now() + PRESENCE_GATHER;
        while let Ok(Some((agent, up))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            latest.insert(agent, up);
        }
        let Some(app) = app.upgrade() else { return };
        send(&app, presence_messages(&app.cluster.replica, latest)).await;
    }
}

/// Tells the other replicas that these agents have new deliveries.
pub async fn deliveries(app: &App, agents: Vec<AgentId>) {
    if !app.config.is_replicated() {
        return;
    }
    let from = app.cluster.replica.clone();
    send(app, chunks(agents).into_iter().map(|agents| Message::Deliveries { from: from.clone(), agents }).collect())
        .await;
}

async fn announce_full(app: &App) {
    let from = app.cluster.replica.clone();
    let all = chunks(app.sessions.ids());
    let messages = all
        .into_iter()
        .enumerate()
        .map(|(i, up)| Message::Presence {
            from: from.clone(),
            up,
            down: vec![],
            full: true,
            part: u32::try_from(i).unwrap_or(u32::MAX),
        })
        .collect();
    send(app, messages).await;
}

/// Every [`PRESENCE_EVERY`]: who is connected here; forgets replicas not
/// heard of for [`PRESENCE_STALE`].
async fn announce(app: Weak<App>) {
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        announce_full(&app).await;
        app.cluster.remote.lock().expect("cluster lock").retain(|_, (_, seen)| seen.elapsed() < PRESENCE_STALE);
    }
}

/// Forwards the events the leader's engine needs (results, alarms,
/// telemetry received here) to the other replicas, batched — while this
/// replica does not lead.
async fn forward_events(app: Weak<App>) {
    let Some(mut rx) = app.upgrade().map(|a| a.events.subscribe()) else { return };
    loop {
        let first = match rx.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    "replica channel: {n} events not forwarded (the leader reads results back from the store)"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let mut batch = vec![first];
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        let Some(app) = app.upgrade() else { return };
        if app.cluster.is_leader() {
            // The leader's own engine heard these on this bus; no other
            // replica needs them (a new leader reads results back from the
            // store when it takes over).
            continue;
        }
        let from = app.cluster.replica.clone();
        let mut messages = Vec::new();
        let mut current: Vec<(String, Value)> = Vec::new();
        let mut size = 0;
        for e in batch.into_iter().filter(|e| matches!(e.kind.as_str(), "result" | "alarm" | "telemetry")) {
            let len = e.params.to_string().len() + e.kind.len() + 8;
            if size + len > MAX_PAYLOAD && !current.is_empty() {
                messages.push(Message::Events { from: from.clone(), events: std::mem::take(&mut current) });
                size = 0;
            }
            if len > MAX_PAYLOAD {
                tracing::warn!(kind = %e.kind, "an event too large for the replica channel; the leader reads it back from the store");
                continue;
            }
            size += len;
            current.push((e.kind, e.params));
        }
        if !current.is_empty() {
            messages.push(Message::Events { from, events: current });
        }
        send(&app, messages).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_agent_lists_fit_a_notification() {
        let agents: Vec<AgentId> = (0..1000).map(|i| AgentId::parse(&format!("agt-{i:016x}")).unwrap()).collect();
        for c in chunks(agents.clone()) {
            let m = Message::Presence { from: "rpl_0123456789abcdef".into(), up: c, down: vec![], full: true, part: 3 };
            let text = serde_json::to_string(&m).unwrap();
            assert!(text.len() < 8000, "{}", text.len());
            assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), m);
        }
        assert_eq!(chunks(agents).iter().map(Vec::len).sum::<usize>(), 1000);
        assert_eq!(chunks(Vec::new()), vec![Vec::<AgentId>::new()], "an empty replica still announces itself");
    }

    #[test]
    fn gathered_presence_goes_out_as_few_messages_with_each_agents_latest_state() {
        let agent = |i: usize| AgentId::parse(&format!("agt-{i:016x}")).unwrap();
        // A connect storm: 1,000 agents up, one of which left again, and
        // one that left and came back.
        let mut latest: HashMap<AgentId, bool> = (0..1000).map(|i| (agent(i), true)).collect();
        latest.insert(agent(7), false);
        latest.insert(agent(8), false);
        latest.insert(agent(8), true);
        let messages = presence_messages("rpl_0123456789abcdef", latest);
        assert_eq!(messages.len(), 1000_usize.div_ceil(MAX_PAYLOAD / 32) + 1, "chunks of ups, then one of downs");
        let (mut up, mut down) = (HashSet::new(), HashSet::new());
        for m in &messages {
            assert!(serde_json::to_string(m).unwrap().len() < 8000);
            let Message::Presence { up: u, down: d, full: false, .. } = m else { panic!("{m:?}") };
            assert!(u.is_empty() || d.is_empty(), "ups and downs apart");
            up.extend(u.iter().cloned());
            down.extend(d.iter().cloned());
        }
        assert_eq!((up.len(), down.len()), (999, 1));
        assert!(down.contains(&agent(7)) && up.contains(&agent(8)));
        assert!(presence_messages("rpl_x", HashMap::new()).is_empty(), "nothing changed: nothing sent");
    }

    #[test]
    fn a_single_coordinator_always_leads() {
        let c = Cluster::default();
        assert!(c.is_leader());
        assert!(!c.set(Leadership::Leader { token: 0 }), "no change");
        assert!(c.set(Leadership::Follower { leader: None }));
        assert!(!c.is_leader());
    }
}
