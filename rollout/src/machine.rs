//! The rollout state machine of one release (DESIGN.md §7, states as §8
//! names them): events in, [`Action`]s out, no I/O.
//!
//! Guarantees, each covered by tests:
//! - an agent is sent the apply plan at most once, and only once its wave
//!   has started and while the rollout is running, baking, awaiting an
//!   approval or done — never while paused, halted or rolling back;
//! - outcomes are counted honestly: only `applied` is a success; `failed`,
//!   `refused`, `rolled_back_locally` and no report within
//!   `report_timeout` are failures; an offline agent is pending;
//! - a halt happens when a wave's failure ratio exceeds
//!   `max_failure_ratio` once `min_sample` of its agents reported (or all
//!   of a smaller wave), at once on any integrity signal, and when a
//!   `[[trigger]]` crosses; with `auto_rollback` the rollback goes out in
//!   the same step to every agent that applied, skipping bake and
//!   approvals, and the rollout is `rolled_back` only when every one of
//!   them proved its rollback;
//! - a manual rollback may be scoped (wave, cohort, agents); only a fleet
//!   rollback ends `rolled_back`;
//! - every state change yields an [`Action::Audit`] with reason and actor;
//! - the whole machine is serde-serializable: store it after each
//!   [`RolloutMachine::handle`] and load it after a restart to resume with
//!   the same cohorts, counts and sent sets.

use std::collections::BTreeMap;
use std::fmt;

use rewind_shared::bundle::Granularity;
use rewind_shared::fleet::{AgentId, Labels};
use serde::{Deserialize, Serialize};

use crate::cohort::{CohortError, Cohorts};
use crate::policy::{RolloutSpec, millis};

/// The actor of transitions the engine makes on its own.
pub const SYSTEM_ACTOR: &str = "rewind-coordinator";

/// Where a rollout stands. Wave fields index `spec.rollout.waves`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Plans of waves up to `wave` go out; waiting for reports.
    Running { wave: usize },
    /// `wave` reported; watching it until `until_ms`.
    Baking { wave: usize, until_ms: u64 },
    /// `wave` (not yet started) needs `rewindctl rollout approve <name>`.
    AwaitingApproval { wave: usize },
    /// No plans go out; signals still halt. `since_ms` extends a bake.
    Paused { from: Box<State>, since_ms: u64 },
    /// Stopped: no plans go out. Waits for a manual rollback (or a human,
    /// when a rollback could not be proven everywhere).
    Halted { reason: String },
    /// Rollback plans went out; waiting for every proof.
    RollingBack { reason: String },
    /// Every agent that applied proved its rollback by digest.
    RolledBack,
    /// Every wave finished.
    Done,
    /// A later release of the product replaced this rollout.
    Superseded { by: String },
}

impl State {
    /// The §8 name: `running`, `baking`, `awaiting_approval`, `paused`,
    /// `halted`, `rolling_back`, `rolled_back`, `done`, `superseded`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Running { .. } => "running",
            Self::Baking { .. } => "baking",
            Self::AwaitingApproval { .. } => "awaiting_approval",
            Self::Paused { .. } => "paused",
            Self::Halted { .. } => "halted",
            Self::RollingBack { .. } => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::Done => "done",
            Self::Superseded { .. } => "superseded",
        }
    }

    /// Running, baking, awaiting approval or paused: the rollout is moving
    /// through its waves and any bad signal halts it.
    #[must_use]
    pub fn is_progressing(&self) -> bool {
        matches!(self, Self::Running { .. } | Self::Baking { .. } | Self::AwaitingApproval { .. } | Self::Paused { .. })
    }

    /// Whether this rollout still holds its product: everything but done,
    /// rolled back and superseded. A halted rollout needs resolving (or
    /// superseding) before the next release may start.
    #[must_use]
    pub fn is_active(&self) -> bool {
        !matches!(self, Self::RolledBack | Self::Done | Self::Superseded { .. })
    }
}

/// What an agent reported for this rollout's plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The apply plan ran and verified.
    Applied,
    /// The apply plan failed (the agent reverted it).
    Failed,
    /// The agent refused the plan (signatures, expiry, start state...).
    Refused,
    /// The agent reverted the release on its own (`local_revert`).
    RolledBackLocally,
    /// The rollback plan ran and its digest proof and `after-rollback`
    /// checks passed.
    RollbackProven,
    /// The rollback could not be proven: the endpoint needs a human.
    RollbackFailed,
}

/// A data-integrity signal: each halts a progressing rollout at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrityKind {
    /// A target's digest differs from the rehearsal's prediction.
    Drift,
    /// A `verify.sql` failed.
    FailedVerify,
    /// A rollback's digest proof failed.
    FailedRollbackProof,
    /// The agent's audit chain skipped entries.
    AuditGap,
    /// The agent's audit chain forked.
    AuditFork,
}

impl fmt::Display for IntegrityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Drift => "digest drift",
            Self::FailedVerify => "failed verify",
            Self::FailedRollbackProof => "failed rollback proof",
            Self::AuditGap => "audit gap",
            Self::AuditFork => "audit fork",
        })
    }
}

/// Which endpoints a manual rollback covers (`rewindctl rollback --scope`).
/// Only endpoints that applied get a rollback plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    /// Every endpoint of the rollout.
    #[default]
    Fleet,
    /// The endpoints of one wave.
    Wave { name: String },
    /// The endpoints whose labels match a selector.
    Cohort { selector: crate::cohort::Selector },
    /// These endpoints.
    Agents { agents: Vec<AgentId> },
}

impl Scope {
    fn covers(&self, id: &AgentId, r: &AgentRecord, waves: &[rewind_shared::release::Wave]) -> bool {
        match self {
            Self::Fleet => true,
            Self::Wave { name } => r.wave.is_some_and(|w| waves[w].name == *name),
            Self::Cohort { selector } => selector.matches(&r.labels),
            Self::Agents { agents } => agents.contains(id),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fleet => f.write_str("fleet"),
            Self::Wave { name } => write!(f, "wave {name}"),
            Self::Cohort { selector } => write!(f, "cohort `{selector}`"),
            Self::Agents { agents } => {
                let ids: Vec<&str> = agents.iter().map(AgentId::as_str).collect();
                write!(f, "agent(s) {}", ids.join(", "))
            }
        }
    }
}

/// A part of a release that is rolled back on its own, by the bundle's
/// pre-signed plan for it: a target, a migration or a flag
/// (`rewindctl rollback --granularity`, `rewindctl flags set ... off`) —
/// or, with `activate`, a flag turned on by its pre-signed activation plan
/// (`rewindctl flags set ... on`). The release stays installed on the
/// endpoint; the rollout's state does not change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Part {
    /// Never `release` (that is a rollback of the whole release).
    pub granularity: Granularity,
    pub subject: String,
    /// The flag's activation plan rather than its rollback plan (only with
    /// granularity `flag`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activate: bool,
}

impl Part {
    /// A part's rollback: `target notes`, `flag new_checkout`.
    #[must_use]
    pub fn rollback(granularity: Granularity, subject: impl Into<String>) -> Self {
        Part { granularity, subject: subject.into(), activate: false }
    }

    /// A flag's activation: `flag new_checkout on`.
    #[must_use]
    pub fn activation(flag: impl Into<String>) -> Self {
        Part { granularity: Granularity::Flag, subject: flag.into(), activate: true }
    }

    /// `flag new_checkout` (its rollback) or `flag new_checkout on` (its
    /// activation): the key of [`AgentRecord::parts`] and of status.
    #[must_use]
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Whether both are operations on the same flag (either direction).
    #[must_use]
    pub fn same_flag(&self, other: &Part) -> bool {
        self.granularity == Granularity::Flag && other.granularity == Granularity::Flag && self.subject == other.subject
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.granularity, self.subject)?;
        if self.activate { f.write_str(" on") } else { Ok(()) }
    }
}

impl std::str::FromStr for Part {
    type Err = String;

    /// Reads [`Part::key`] back. Flag names cannot contain spaces (the
    /// release format refuses them), so ` on` is unambiguous.
    fn from_str(text: &str) -> Result<Self, String> {
        let (g, subject) =
            text.split_once(' ').ok_or_else(|| format!("part {text:?} is not \"<granularity> <subject>\""))?;
        let granularity: Granularity = g.parse().map_err(|e: String| format!("part {text:?}: {e}"))?;
        match subject.strip_suffix(" on") {
            Some(flag) if granularity == Granularity::Flag => Ok(Part::activation(flag)),
            _ => Ok(Part::rollback(granularity, subject)),
        }
    }
}

/// An input to the machine. The time of each comes with
/// [`RolloutMachine::handle`]; the machine pins every agent's wave itself,
/// so events carry no wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A signed report about this rollout's plan (apply or rollback).
    AgentOutcome {
        agent: AgentId,
        outcome: Outcome,
    },
    /// Time passed: report timeouts and bakes are checked.
    Tick,
    /// `rewindctl rollout approve WAVE`.
    Approve {
        wave: String,
        actor: String,
    },
    Pause {
        actor: String,
    },
    Resume {
        actor: String,
    },
    /// Halts without rolling back; `rewindctl rollback` takes data back.
    Abort {
        actor: String,
    },
    /// `rewindctl rollback PRODUCT [--scope ...]`: every agent in scope
    /// that applied gets the rollback plan. It stops the rollout.
    Rollback {
        actor: String,
        reason: String,
        #[serde(default)]
        scope: Scope,
    },
    /// `rewindctl rollback --granularity target|migration|flag` or
    /// `rewindctl flags set ... off`: every agent in scope that applied
    /// (and agents in scope that apply later) gets the part's pre-signed
    /// rollback plan. The rollout goes on as it was.
    PartialRollback {
        actor: String,
        reason: String,
        #[serde(default)]
        scope: Scope,
        part: Part,
    },
    /// `rewindctl flags set ... on`: every agent in scope that applied
    /// (and agents in scope that apply later) gets the flag's pre-signed
    /// activation plan. The latest `flags set` of a flag wins on an agent
    /// that two scopes cover. The rollout goes on as it was.
    FlagActivation {
        actor: String,
        reason: String,
        #[serde(default)]
        scope: Scope,
        flag: String,
    },
    /// A verified report about a part's plan (its rollback, or a flag's
    /// activation).
    PartialOutcome {
        agent: AgentId,
        part: Part,
        /// Done with its proof (rolled back, or the flag set); false:
        /// failed, refused or unproven.
        proven: bool,
    },
    Integrity {
        agent: AgentId,
        kind: IntegrityKind,
        detail: String,
    },
    /// A health metric sample an agent reported, timestamped by `at_ms`.
    Metric {
        agent: AgentId,
        name: String,
        value: f64,
        at_ms: u64,
    },
    /// An agent of the product connected for the first time during the
    /// rollout (it is online). For an agent already known this is
    /// `AgentOnline`: its wave stays pinned, new labels are not re-read.
    AgentJoined {
        agent: AgentId,
        labels: Labels,
    },
    AgentOffline {
        agent: AgentId,
    },
    AgentOnline {
        agent: AgentId,
    },
}

/// A communication event (DESIGN.md §9 templates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    IncidentStarted,
    RollbackStarted,
    RollbackCompleted,
    Resolved,
}

/// What the coordinator must do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Deliver the release's apply plan to this (connected) agent.
    SendPlan { agent: AgentId },
    /// Deliver the pre-signed rollback plan to these (connected) agents now.
    SendRollback { agents: Vec<AgentId> },
    /// Deliver a part's pre-signed plan (its rollback, or a flag's
    /// activation when `part.activate`) to these (connected) agents.
    SendPart { part: Part, agents: Vec<AgentId> },
    /// The rollout halted (alert, status page).
    Halt { reason: String },
    /// Append to the coordinator's audit log.
    Audit { from: String, to: String, reason: String, actor: String },
    /// Render the §9 template for this event.
    Notify { event: NotifyEvent },
}

/// Why an event was refused; the machine did not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout {rollout}: cannot {command} while {state}{hint}")]
    NotAllowed { rollout: String, command: String, state: String, hint: String },
    #[error("rollout {rollout}: wave {asked} is not awaiting approval ({waiting}); approve {waiting} instead")]
    WrongWave { rollout: String, asked: String, waiting: String },
    #[error("rollout {rollout}: agent {agent} is not part of it; it was not in the fleet at start and never joined")]
    UnknownAgent { rollout: String, agent: AgentId },
    #[error("rollout {rollout}: no wave {wave}; its waves are {known}")]
    UnknownWave { rollout: String, wave: String, known: String },
}

/// How an agent's apply plan went, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOutcome {
    Pending,
    Applied,
    Failed,
    Refused,
    RolledBackLocally,
    /// No report within `report_timeout` of the plan: a failure.
    TimedOut,
}

impl ApplyOutcome {
    #[must_use]
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Refused | Self::RolledBackLocally | Self::TimedOut)
    }
}

/// Where an agent's rollback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rollback")]
pub enum RollbackProgress {
    NotNeeded,
    /// Waiting for the agent to come online.
    Queued,
    Sent {
        at_ms: u64,
    },
    Proven,
    Failed,
    /// No proof within `report_timeout` of sending: needs a human.
    TimedOut,
}

/// One metric sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub value: f64,
}

/// Everything the rollout knows about one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Pinned when the agent is first seen; `None`: no wave takes it.
    pub wave: Option<usize>,
    pub labels: Labels,
    pub online: bool,
    /// When the apply plan was sent; `Some` means never again.
    pub plan_sent_ms: Option<u64>,
    pub outcome: ApplyOutcome,
    pub rollback: RollbackProgress,
    /// Partial rollbacks that concern the agent, by [`Part::key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, RollbackProgress>,
    /// Recent samples of metrics that a trigger watches.
    pub metrics: BTreeMap<String, Vec<Sample>>,
}

/// The rollout of one release. Serialize it to persist it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutMachine {
    pub(crate) spec: RolloutSpec,
    pub(crate) cohorts: Cohorts,
    pub(crate) state: State,
    /// Waves `[0, started)` have been released.
    pub(crate) started: usize,
    pub(crate) agents: BTreeMap<AgentId, AgentRecord>,
    /// What rollbacks cover, once one began: agents in scope that apply
    /// later are rolled back too. Empty: no rollback.
    pub(crate) rollback_scopes: Vec<Scope>,
    /// Partial rollbacks and flag activations asked for, in order, each
    /// with its scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) partials: Vec<(Part, Scope)>,
    /// No report timeout can fire before this time (a cache, not state).
    #[serde(skip)]
    pub(crate) quiet_until: QuietUntil,
}

/// A lower bound of the earliest report deadline, so that most events need
/// not look at every agent for timeouts. It holds because every deadline
/// set later is at least `now + report_timeout`, which is never below it.
/// Not persisted (a loaded machine scans once) and never part of equality.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QuietUntil(Option<u64>);

impl PartialEq for QuietUntil {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// An agent known when the rollout starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetAgent {
    pub id: AgentId,
    pub labels: Labels,
    pub online: bool,
}

impl RolloutMachine {
    /// Starts a rollout over the product's fleet: assigns every agent its
    /// wave and releases the first wave (or waits for its approval).
    ///
    /// # Errors
    /// When a wave's selector does not parse.
    pub fn start(
        spec: RolloutSpec,
        fleet: impl IntoIterator<Item = FleetAgent>,
        actor: &str,
        now_ms: u64,
    ) -> Result<(Self, Vec<Action>), CohortError> {
        let cohorts = Cohorts::new(&spec.product, &spec.rollout.waves)?;
        let mut m = Self {
            spec,
            cohorts,
            state: State::Running { wave: 0 },
            started: 0,
            agents: BTreeMap::new(),
            rollback_scopes: Vec::new(),
            partials: Vec::new(),
            quiet_until: QuietUntil::default(),
        };
        for a in fleet {
            m.admit(a.id, a.labels, a.online);
        }
        let mut out = Vec::new();
        let first = m.spec.rollout.waves.first().map(|w| w.approval).unwrap_or(false);
        let reason = format!("rollout of {} {} (sequence {}) started", m.spec.product, m.spec.version, m.spec.sequence);
        if first {
            m.state = State::AwaitingApproval { wave: 0 };
            out.push(audit("pending", &m.label(), &reason, actor));
        } else {
            m.started = 1;
            out.push(audit("pending", &m.label(), &reason, actor));
            m.flush_plans(now_ms, &mut out);
        }
        m.settle(now_ms, &mut out);
        Ok((m, out))
    }

    #[must_use]
    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    #[must_use]
    pub fn cohorts(&self) -> &Cohorts {
        &self.cohorts
    }

    #[must_use]
    pub fn agents(&self) -> &BTreeMap<AgentId, AgentRecord> {
        &self.agents
    }

    /// The partial rollbacks asked for, with their scopes, in order.
    #[must_use]
    pub fn partials(&self) -> &[(Part, Scope)] {
        &self.partials
    }

    /// The wave name an agent is pinned to, if it is targeted.
    #[must_use]
    pub fn wave_of(&self, agent: &AgentId) -> Option<&str> {
        let w = self.agents.get(agent)?.wave?;
        Some(&self.spec.rollout.waves[w].name)
    }

    /// When the next [`Event::Tick`] can change something: the end of a
    /// bake or the earliest report timeout of a plan or rollback sent.
    /// `None`: only other events move this rollout. The coordinator may
    /// sleep until then instead of ticking on a fixed period.
    #[must_use]
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let timeout = millis(self.spec.rollout.report_timeout);
        let bake = match self.state {
            State::Baking { until_ms, .. } => Some(until_ms),
            _ => None,
        };
        let reports = self.agents.values().filter_map(|r| {
            let plan = (r.outcome == ApplyOutcome::Pending).then_some(r.plan_sent_ms).flatten();
            let sent = |p: &RollbackProgress| match p {
                RollbackProgress::Sent { at_ms } => Some(*at_ms),
                _ => None,
            };
            let rollback = sent(&r.rollback);
            let parts = r.parts.values().filter_map(sent);
            plan.into_iter().chain(rollback).chain(parts).map(|t| t.saturating_add(timeout)).min()
        });
        bake.into_iter().chain(reports).min()
    }

    /// Feeds one event at time `now_ms` (milliseconds since the Unix epoch).
    /// On `Err` nothing changed.
    ///
    /// # Errors
    /// An operator command that does not fit the state (approve the wrong
    /// wave, resume when not paused, ...), or an agent event for an agent
    /// this rollout does not know.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Result<Vec<Action>, RolloutError> {
        let mut out = Vec::new();
        match event {
            Event::Tick => {}
            Event::AgentJoined { agent, labels } => {
                if let Some(r) = self.agents.get_mut(&agent) {
                    r.online = true;
                } else {
                    self.admit(agent, labels, true);
                }
                self.flush_plans(now_ms, &mut out);
                self.flush_rollbacks(now_ms, &mut out);
                self.flush_partials(now_ms, &mut out);
            }
            Event::AgentOnline { agent } => {
                self.known(&agent)?.online = true;
                self.flush_plans(now_ms, &mut out);
                self.flush_rollbacks(now_ms, &mut out);
                self.flush_partials(now_ms, &mut out);
            }
            Event::PartialRollback { actor, reason, scope, part } => {
                if part.activate {
                    return Err(self.not_allowed(&format!("roll back {part}"), "; that is a flag activation"));
                }
                self.partial(now_ms, &actor, &reason, scope, part, &mut out)?;
            }
            Event::FlagActivation { actor, reason, scope, flag } => {
                self.partial(now_ms, &actor, &reason, scope, Part::activation(flag), &mut out)?;
            }
            Event::PartialOutcome { agent, part, proven } => {
                let r = self.known(&agent)?;
                // Only a part this rollout sent (or queued) to the agent counts.
                if let Some(p) = r.parts.get_mut(&part.key()) {
                    *p = if proven { RollbackProgress::Proven } else { RollbackProgress::Failed };
                }
            }
            Event::AgentOffline { agent } => self.known(&agent)?.online = false,
            Event::AgentOutcome { agent, outcome } => self.outcome(now_ms, agent, outcome, &mut out)?,
            Event::Metric { agent, name, value, at_ms } => self.metric(now_ms, &agent, name, value, at_ms, &mut out)?,
            Event::Integrity { agent, kind, detail } => self.integrity(now_ms, &agent, kind, &detail, &mut out)?,
            Event::Approve { wave, actor } => self.approve(now_ms, &wave, &actor, &mut out)?,
            Event::Pause { actor } => self.pause(now_ms, &actor, &mut out)?,
            Event::Resume { actor } => self.resume(now_ms, &actor, &mut out)?,
            Event::Abort { actor } => {
                if !self.state.is_progressing() {
                    return Err(self.not_allowed("abort", ""));
                }
                self.halt(
                    now_ms,
                    format!("aborted by {actor}; data stays as is until `rewindctl rollback`"),
                    &actor,
                    false,
                    &mut out,
                );
            }
            Event::Rollback { actor, reason, scope } => {
                if self.rollback_scopes.contains(&Scope::Fleet) || self.rollback_scopes.contains(&scope) {
                    return Err(self.not_allowed(
                        &format!("roll back {scope}"),
                        "; that rollback was already sent to every agent in scope that applied",
                    ));
                }
                self.check_scope(&scope)?;
                let reason = format!("manual rollback ({scope}) by {actor}: {reason}");
                // A superseded rollout is rolled back as part of a rollback
                // to an epoch, after the releases above it.
                if !matches!(self.state, State::Halted { .. } | State::Superseded { .. }) {
                    self.halt(now_ms, reason.clone(), &actor, false, &mut out);
                }
                self.start_rollback(now_ms, reason, &actor, scope, &mut out);
            }
        }
        self.settle(now_ms, &mut out);
        Ok(out)
    }

    /// Marks this rollout superseded by another one (the registry does this
    /// when a later release starts with `supersede`). Agents that already
    /// applied keep the release; pending ones get no plan from it.
    pub fn supersede(&mut self, by: &str, actor: &str) -> Vec<Action> {
        let from = self.label();
        self.state = State::Superseded { by: by.to_string() };
        vec![audit(&from, &self.label(), &format!("superseded by rollout {by}"), actor)]
    }

    // ---- agents ----

    fn admit(&mut self, id: AgentId, labels: Labels, online: bool) {
        let wave = self.cohorts.wave_of(id.as_str(), &labels);
        self.agents.insert(
            id,
            AgentRecord {
                wave,
                labels,
                online,
                plan_sent_ms: None,
                outcome: ApplyOutcome::Pending,
                rollback: RollbackProgress::NotNeeded,
                parts: BTreeMap::new(),
                metrics: BTreeMap::new(),
            },
        );
    }

    fn known(&mut self, agent: &AgentId) -> Result<&mut AgentRecord, RolloutError> {
        let rollout = self.spec.id();
        self.agents.get_mut(agent).ok_or(RolloutError::UnknownAgent { rollout, agent: agent.clone() })
    }

    fn rolling_back(&self) -> bool {
        !self.rollback_scopes.is_empty()
    }

    /// Whether the agent's rollback is still to come: queued or sent, or
    /// not sent yet although the agent applied (or may be applying) inside
    /// a rollback's scope.
    fn rollback_outstanding(&self, id: &AgentId, r: &AgentRecord) -> bool {
        match r.rollback {
            RollbackProgress::Queued | RollbackProgress::Sent { .. } => true,
            RollbackProgress::NotNeeded => {
                let in_flight = r.outcome == ApplyOutcome::Pending && r.plan_sent_ms.is_some();
                (in_flight || r.outcome == ApplyOutcome::Applied) && self.in_rollback_scope(id, r)
            }
            _ => false,
        }
    }

    fn in_rollback_scope(&self, id: &AgentId, r: &AgentRecord) -> bool {
        self.rollback_scopes.iter().any(|s| s.covers(id, r, &self.spec.rollout.waves))
    }

    fn check_scope(&self, scope: &Scope) -> Result<(), RolloutError> {
        match scope {
            Scope::Wave { name } if !self.spec.rollout.waves.iter().any(|w| w.name == *name) => {
                Err(RolloutError::UnknownWave {
                    rollout: self.spec.id(),
                    wave: name.clone(),
                    known: self.spec.rollout.waves.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
            Scope::Agents { agents } => match agents.iter().find(|a| !self.agents.contains_key(*a)) {
                Some(a) => Err(RolloutError::UnknownAgent { rollout: self.spec.id(), agent: a.clone() }),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn may_send_plans(&self) -> bool {
        !self.rolling_back()
            && matches!(
                self.state,
                State::Running { .. } | State::Baking { .. } | State::AwaitingApproval { .. } | State::Done
            )
    }

    /// Sends the apply plan to every online agent of a released wave that
    /// has not had it.
    fn flush_plans(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.may_send_plans() || self.spec.plan_expires_ms.is_some_and(|e| now_ms >= e) {
            return;
        }
        let started = self.started;
        for (id, r) in &mut self.agents {
            if r.online
                && r.plan_sent_ms.is_none()
                && r.wave.is_some_and(|w| w < started)
                && r.outcome == ApplyOutcome::Pending
            {
                r.plan_sent_ms = Some(now_ms);
                out.push(Action::SendPlan { agent: id.clone() });
            }
        }
    }

    /// Sends the rollback plan to every online agent that applied and has
    /// not had it; offline ones are queued.
    fn flush_rollbacks(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.rolling_back() || matches!(self.state, State::Superseded { .. }) {
            return;
        }
        let due: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(id, r)| {
                r.outcome == ApplyOutcome::Applied
                    && matches!(r.rollback, RollbackProgress::NotNeeded | RollbackProgress::Queued)
                    && self.in_rollback_scope(id, r)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut agents = Vec::new();
        for id in due {
            let Some(r) = self.agents.get_mut(&id) else { continue };
            if r.online {
                r.rollback = RollbackProgress::Sent { at_ms: now_ms };
                agents.push(id);
            } else {
                r.rollback = RollbackProgress::Queued;
            }
        }
        if !agents.is_empty() {
            out.push(Action::SendRollback { agents });
        }
    }

    /// A partial rollback or a flag activation: refused when the whole
    /// release is already being rolled back in that scope, or the same
    /// operation was asked for in a scope that covers this one (for a flag:
    /// when it is the flag's latest operation there).
    fn partial(
        &mut self,
        now_ms: u64,
        actor: &str,
        reason: &str,
        scope: Scope,
        part: Part,
        out: &mut Vec<Action>,
    ) -> Result<(), RolloutError> {
        let what = if part.activate {
            format!("turn flag {} on ({scope})", part.subject)
        } else {
            format!("roll back {part} ({scope})")
        };
        if part.granularity == Granularity::Release {
            return Err(self.not_allowed(&what, "; use a release rollback"));
        }
        if part.activate && part.granularity != Granularity::Flag {
            return Err(self.not_allowed(&what, "; only flags have activation plans"));
        }
        if self.rollback_scopes.contains(&Scope::Fleet) || self.rollback_scopes.contains(&scope) {
            return Err(self.not_allowed(&what, "; the whole release was already rolled back in that scope"));
        }
        let repeated = if part.granularity == Granularity::Flag {
            // The flag's latest operation decides: asking for the same again
            // in a scope it covers changes nothing — unless it failed or
            // timed out on an agent there, which then gets it again.
            let key = part.key();
            let waves = &self.spec.rollout.waves;
            let retry = self.agents.iter().any(|(id, r)| {
                matches!(r.parts.get(&key), Some(RollbackProgress::Failed | RollbackProgress::TimedOut))
                    && scope.covers(id, r, waves)
            });
            !retry
                && self
                    .partials
                    .iter()
                    .rev()
                    .find(|(p, _)| p.same_flag(&part))
                    .is_some_and(|(p, s)| *p == part && (*s == Scope::Fleet || *s == scope))
        } else {
            self.partials.iter().any(|(p, s)| *p == part && (*s == Scope::Fleet || *s == scope))
        };
        if repeated {
            return Err(self.not_allowed(&what, "; that was already sent to every agent in scope that applied"));
        }
        self.check_scope(&scope)?;
        let s = self.label();
        let text = if part.activate {
            format!("flag {} turned on ({scope}) by {actor}: {reason}", part.subject)
        } else {
            format!("partial rollback of {part} ({scope}) by {actor}: {reason}")
        };
        out.push(audit(&s, &s, &text, actor));
        if part.granularity == Granularity::Flag {
            // For the agents in scope this operation replaces the flag's
            // other one: it is sent to those that do not have it on its way
            // or done already (a failed or timed-out one is sent again).
            let (this, other) = (part.key(), Part { activate: !part.activate, ..part.clone() }.key());
            let waves = &self.spec.rollout.waves;
            for (id, r) in &mut self.agents {
                let underway = matches!(
                    r.parts.get(&this),
                    Some(RollbackProgress::Queued | RollbackProgress::Sent { .. } | RollbackProgress::Proven)
                );
                if scope.covers(id, r, waves) && !underway {
                    r.parts.remove(&this);
                    r.parts.remove(&other);
                }
            }
        }
        self.partials.push((part, scope));
        self.flush_partials(now_ms, out);
        Ok(())
    }

    /// Sends each asked-for part's plan to every online agent in its scope
    /// that applied and has not had it (and is not being rolled back
    /// whole), unless a later operation on the same flag covers the agent;
    /// offline ones are queued.
    fn flush_partials(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if matches!(self.state, State::Superseded { .. }) {
            return;
        }
        let waves = &self.spec.rollout.waves;
        for (i, (part, scope)) in self.partials.iter().enumerate() {
            let key = part.key();
            let later = &self.partials[i + 1..];
            let mut agents = Vec::new();
            for (id, r) in &mut self.agents {
                let due = r.outcome == ApplyOutcome::Applied
                    && r.rollback == RollbackProgress::NotNeeded
                    && matches!(r.parts.get(&key), None | Some(RollbackProgress::Queued))
                    && scope.covers(id, r, waves)
                    && !later.iter().any(|(p, s)| p.same_flag(part) && s.covers(id, r, waves));
                if !due {
                    continue;
                }
                if r.online {
                    r.parts.insert(key.clone(), RollbackProgress::Sent { at_ms: now_ms });
                    agents.push(id.clone());
                } else {
                    r.parts.insert(key.clone(), RollbackProgress::Queued);
                }
            }
            if !agents.is_empty() {
                out.push(Action::SendPart { part: part.clone(), agents });
            }
        }
    }

    fn outcome(
        &mut self,
        now_ms: u64,
        agent: AgentId,
        outcome: Outcome,
        out: &mut Vec<Action>,
    ) -> Result<(), RolloutError> {
        let r = self.known(&agent)?;
        match outcome {
            Outcome::Applied => r.outcome = ApplyOutcome::Applied,
            Outcome::Failed => r.outcome = ApplyOutcome::Failed,
            Outcome::Refused => r.outcome = ApplyOutcome::Refused,
            Outcome::RolledBackLocally => {
                if r.outcome == ApplyOutcome::Applied && r.rollback != RollbackProgress::NotNeeded {
                    r.rollback = RollbackProgress::Proven;
                }
                r.outcome = ApplyOutcome::RolledBackLocally;
            }
            // A rollback result counts for an agent that applied or was sent
            // the rollback; a stray one for any other agent changes nothing.
            Outcome::RollbackProven | Outcome::RollbackFailed
                if r.outcome != ApplyOutcome::Applied && r.rollback == RollbackProgress::NotNeeded => {}
            Outcome::RollbackProven => r.rollback = RollbackProgress::Proven,
            Outcome::RollbackFailed => r.rollback = RollbackProgress::Failed,
        }
        if outcome == Outcome::Applied {
            // An agent that applied after a rollback began gets it too.
            self.flush_rollbacks(now_ms, out);
            self.flush_partials(now_ms, out);
        }
        Ok(())
    }

    // ---- signals ----

    fn integrity(
        &mut self,
        now_ms: u64,
        agent: &AgentId,
        kind: IntegrityKind,
        detail: &str,
        out: &mut Vec<Action>,
    ) -> Result<(), RolloutError> {
        let rolling_back = self.rolling_back();
        let r = self.known(agent)?;
        if kind == IntegrityKind::FailedRollbackProof && rolling_back && r.outcome == ApplyOutcome::Applied {
            r.rollback = RollbackProgress::Failed;
        }
        let reason = format!("integrity: {kind} on agent {agent}: {detail}");
        if self.state.is_progressing() {
            self.halt(now_ms, reason, SYSTEM_ACTOR, self.spec.rollout.auto_rollback, out);
        } else {
            let s = self.label();
            out.push(audit(
                &s,
                &s,
                &format!("{reason} (recorded; the rollout is {} already)", self.state.name()),
                SYSTEM_ACTOR,
            ));
        }
        Ok(())
    }

    fn metric(
        &mut self,
        now_ms: u64,
        agent: &AgentId,
        name: String,
        value: f64,
        at_ms: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), RolloutError> {
        self.known(agent)?;
        let started = self.started;
        let Some(r) = self.agents.get_mut(agent) else { return Ok(()) };
        let watched: Vec<_> = self.spec.triggers.iter().filter(|t| t.metric == name).collect();
        // Only samples of a released endpoint that applied speak for the
        // release; before the apply they are the old version's.
        if watched.is_empty() || r.outcome != ApplyOutcome::Applied || r.wave.is_none_or(|w| w >= started) {
            return Ok(());
        }
        let longest = watched.iter().map(|t| millis(t.window)).max().unwrap_or(0);
        let samples = r.metrics.entry(name.clone()).or_default();
        samples.push(Sample { at_ms, value });
        samples.retain(|s| s.at_ms.saturating_add(longest) > now_ms);
        let mut fired = None;
        for t in watched {
            let w = millis(t.window);
            let in_window: Vec<f64> =
                samples.iter().filter(|s| s.at_ms.saturating_add(w) > now_ms).map(|s| s.value).collect();
            let sum: f64 = in_window.iter().sum();
            let crossed = match (t.above, t.below) {
                (Some(above), _) if sum > above => Some(format!("above {above}: {sum}")),
                (_, Some(below)) if !in_window.is_empty() && sum < below => Some(format!("below {below}: {sum}")),
                _ => None,
            };
            if let Some(c) = crossed {
                let wave = r.wave.map_or("-", |w| self.spec.rollout.waves[w].name.as_str());
                fired =
                    Some(format!("trigger {name} {c} within {} on agent {agent} (wave {wave})", humanize(t.window)));
                break;
            }
        }
        if let Some(reason) = fired
            && self.state.is_progressing()
        {
            self.halt(now_ms, reason, SYSTEM_ACTOR, self.spec.rollout.auto_rollback, out);
        }
        Ok(())
    }

    // ---- operator commands ----

    fn approve(&mut self, now_ms: u64, wave: &str, actor: &str, out: &mut Vec<Action>) -> Result<(), RolloutError> {
        let State::AwaitingApproval { wave: w } = self.state else {
            let hint = if matches!(&self.state, State::Paused { from, .. } if matches!(**from, State::AwaitingApproval { .. }))
            {
                "; resume the rollout first"
            } else {
                "; no wave is awaiting approval"
            };
            return Err(self.not_allowed(&format!("approve wave {wave}"), hint));
        };
        let waiting = self.spec.rollout.waves[w].name.clone();
        if waiting != wave {
            return Err(RolloutError::WrongWave { rollout: self.spec.id(), asked: wave.to_string(), waiting });
        }
        self.start_wave(now_ms, w, &format!("wave {wave} approved"), actor, out);
        Ok(())
    }

    fn pause(&mut self, now_ms: u64, actor: &str, out: &mut Vec<Action>) -> Result<(), RolloutError> {
        if !matches!(self.state, State::Running { .. } | State::Baking { .. } | State::AwaitingApproval { .. }) {
            return Err(self.not_allowed("pause", ""));
        }
        let from = self.state.clone();
        self.transition(
            State::Paused { from: Box::new(from), since_ms: now_ms },
            &format!("paused by {actor}"),
            actor,
            out,
        );
        Ok(())
    }

    fn resume(&mut self, now_ms: u64, actor: &str, out: &mut Vec<Action>) -> Result<(), RolloutError> {
        let State::Paused { from, since_ms } = &self.state else {
            return Err(self.not_allowed("resume", "; only a paused rollout resumes"));
        };
        let mut back = (**from).clone();
        // The bake clock stood still while paused.
        if let State::Baking { until_ms, .. } = &mut back {
            *until_ms = until_ms.saturating_add(now_ms.saturating_sub(*since_ms));
        }
        self.transition(back, &format!("resumed by {actor}"), actor, out);
        self.flush_plans(now_ms, out);
        Ok(())
    }

    // ---- transitions ----

    fn transition(&mut self, to: State, reason: &str, actor: &str, out: &mut Vec<Action>) {
        let from = self.label();
        self.state = to;
        out.push(audit(&from, &self.label(), reason, actor));
    }

    fn start_wave(&mut self, now_ms: u64, w: usize, reason: &str, actor: &str, out: &mut Vec<Action>) {
        self.started = self.started.max(w + 1);
        self.transition(State::Running { wave: w }, reason, actor, out);
        self.flush_plans(now_ms, out);
    }

    fn halt(&mut self, now_ms: u64, reason: String, actor: &str, rollback: bool, out: &mut Vec<Action>) {
        self.transition(State::Halted { reason: reason.clone() }, &reason, actor, out);
        out.push(Action::Halt { reason: reason.clone() });
        out.push(Action::Notify { event: NotifyEvent::IncidentStarted });
        if rollback {
            self.start_rollback(now_ms, format!("auto_rollback after halt: {reason}"), SYSTEM_ACTOR, Scope::Fleet, out);
        }
    }

    fn start_rollback(&mut self, now_ms: u64, reason: String, actor: &str, scope: Scope, out: &mut Vec<Action>) {
        self.rollback_scopes.push(scope);
        self.transition(State::RollingBack { reason: reason.clone() }, &reason, actor, out);
        out.push(Action::Notify { event: NotifyEvent::RollbackStarted });
        self.flush_rollbacks(now_ms, out);
    }

    /// Applies timeouts and moves through every transition the current
    /// counts allow, until nothing changes.
    fn settle(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if self.quiet_until.0.is_none_or(|t| now_ms >= t) {
            self.time_out(now_ms);
        }
        loop {
            let before = self.state.clone();
            self.step(now_ms, out);
            if self.state == before {
                break;
            }
        }
    }

    /// Marks every report whose deadline passed as timed out, and notes
    /// the earliest deadline left.
    fn time_out(&mut self, now_ms: u64) {
        let timeout = millis(self.spec.rollout.report_timeout);
        let mut next = now_ms.saturating_add(timeout);
        for r in self.agents.values_mut() {
            if r.outcome == ApplyOutcome::Pending
                && let Some(sent) = r.plan_sent_ms
            {
                let due = sent.saturating_add(timeout);
                if now_ms >= due {
                    r.outcome = ApplyOutcome::TimedOut;
                } else {
                    next = next.min(due);
                }
            }
            for p in std::iter::once(&mut r.rollback).chain(r.parts.values_mut()) {
                if let RollbackProgress::Sent { at_ms } = *p {
                    let due = at_ms.saturating_add(timeout);
                    if now_ms >= due {
                        *p = RollbackProgress::TimedOut;
                    } else {
                        next = next.min(due);
                    }
                }
            }
        }
        self.quiet_until = QuietUntil(Some(next));
    }

    fn step(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.state.is_progressing() {
            // Only the rollback's progress can move these states on.
            if matches!(self.state, State::RollingBack { .. } | State::Halted { .. } | State::RolledBack)
                && self.rolling_back()
            {
                self.check_rollback(out);
            }
            return;
        }
        let tallies = self.tallies();
        if self.state.is_progressing()
            && let Some(reason) = self.failure_ratio_breach(&tallies)
        {
            self.halt(now_ms, reason, SYSTEM_ACTOR, self.spec.rollout.auto_rollback, out);
            return;
        }
        match self.state.clone() {
            State::Running { wave } if self.wave_reported(&tallies[wave]) => {
                let bake = self.spec.rollout.waves[wave].bake;
                if bake.is_zero() || tallies[wave].assigned == 0 {
                    self.finish_wave(now_ms, wave, "reported", out);
                } else {
                    let until_ms = now_ms.saturating_add(millis(bake));
                    let reason =
                        format!("wave {} reported; baking for {}", self.spec.rollout.waves[wave].name, humanize(bake));
                    self.transition(State::Baking { wave, until_ms }, &reason, SYSTEM_ACTOR, out);
                }
            }
            State::Baking { wave, until_ms } if now_ms >= until_ms && self.wave_reported(&tallies[wave]) => {
                self.finish_wave(now_ms, wave, "baked without a trigger", out);
            }
            State::RollingBack { .. } | State::Halted { .. } | State::RolledBack if self.rolling_back() => {
                self.check_rollback(out)
            }
            _ => {}
        }
    }

    fn finish_wave(&mut self, now_ms: u64, wave: usize, how: &str, out: &mut Vec<Action>) {
        let waves = &self.spec.rollout.waves;
        let name = waves[wave].name.clone();
        let next = wave + 1;
        if next == waves.len() {
            self.transition(State::Done, &format!("wave {name} {how}; every wave finished"), SYSTEM_ACTOR, out);
        } else if waves[next].approval {
            let reason = format!("wave {name} {how}; wave {} needs an approval", waves[next].name);
            self.transition(State::AwaitingApproval { wave: next }, &reason, SYSTEM_ACTOR, out);
        } else {
            let reason = format!("wave {name} {how}; starting wave {}", waves[next].name);
            self.start_wave(now_ms, next, &reason, SYSTEM_ACTOR, out);
        }
    }

    /// Moves between rolling back, rolled back and halted as proofs arrive.
    fn check_rollback(&mut self, out: &mut Vec<Action>) {
        // While one rollback is outstanding, rolling back goes on as it is:
        // stop at the first (rollback proofs arrive one by one).
        if matches!(self.state, State::RollingBack { .. })
            && self.agents.iter().any(|(id, r)| self.rollback_outstanding(id, r))
        {
            return;
        }
        let mut outstanding = 0;
        let mut failed = Vec::new();
        let mut proven = 0;
        for (id, r) in &self.agents {
            match r.rollback {
                _ if self.rollback_outstanding(id, r) => outstanding += 1,
                RollbackProgress::Failed | RollbackProgress::TimedOut => failed.push(id.to_string()),
                RollbackProgress::Proven => proven += 1,
                _ => {}
            }
        }
        let fleet = self.rollback_scopes.contains(&Scope::Fleet);
        let target = match (&self.state, outstanding > 0, failed.is_empty()) {
            (State::RolledBack | State::Halted { .. }, true, _) => Some(State::RollingBack {
                reason: "an agent in scope reported applied after the rollback; sending it the rollback".into(),
            }),
            (State::RollingBack { .. } | State::Halted { .. }, false, true) if fleet => Some(State::RolledBack),
            (State::RollingBack { .. } | State::Halted { .. }, false, true) => {
                let scopes: Vec<String> = self.rollback_scopes.iter().map(ToString::to_string).collect();
                Some(State::Halted {
                    reason: format!(
                        "partial rollback ({}) proven on {proven} agent(s); the other endpoints keep the release: roll back the fleet or supersede it with a fix",
                        scopes.join("; ")
                    ),
                })
            }
            (State::RollingBack { .. } | State::RolledBack, false, false) => Some(State::Halted {
                reason: format!(
                    "rollback incomplete: {} agent(s) need a human: {} ({proven} proven)",
                    failed.len(),
                    failed.join(", ")
                ),
            }),
            _ => None,
        };
        let Some(target) = target.filter(|t| *t != self.state) else { return };
        let reason = match &target {
            State::RollingBack { reason } | State::Halted { reason } => reason.clone(),
            _ => format!("every agent that applied proved its rollback by digest ({proven})"),
        };
        let completed = matches!(target, State::RolledBack) || (failed.is_empty() && outstanding == 0);
        let needs_human = !failed.is_empty() && outstanding == 0;
        self.transition(target, &reason, SYSTEM_ACTOR, out);
        if needs_human {
            out.push(Action::Halt { reason });
        } else if completed {
            out.push(Action::Notify { event: NotifyEvent::RollbackCompleted });
            if fleet {
                out.push(Action::Notify { event: NotifyEvent::Resolved });
            }
        }
    }

    // ---- counting ----

    /// Counts of one wave's agents.
    #[must_use]
    pub fn tally(&self, wave: usize) -> Tally {
        self.tallies().get(wave).copied().unwrap_or_default()
    }

    /// Counts of every wave, in one pass over the agents.
    #[must_use]
    pub fn tallies(&self) -> Vec<Tally> {
        let mut all = vec![Tally::default(); self.spec.rollout.waves.len()];
        for r in self.agents.values() {
            let Some(t) = r.wave.and_then(|w| all.get_mut(w)) else { continue };
            t.assigned += 1;
            match r.outcome {
                ApplyOutcome::Pending => t.pending += 1,
                ApplyOutcome::Applied => t.succeeded += 1,
                _ => t.failed += 1,
            }
            if r.outcome == ApplyOutcome::Pending && r.plan_sent_ms.is_some() {
                t.in_flight += 1;
            }
            if r.rollback == RollbackProgress::Proven || r.outcome == ApplyOutcome::RolledBackLocally {
                t.rolled_back += 1;
            }
        }
        all
    }

    /// Reports needed before the wave's ratio is judged: `min_sample`, or
    /// every agent of a smaller wave.
    fn needed(&self, t: &Tally) -> usize {
        usize::try_from(self.spec.rollout.min_sample).unwrap_or(usize::MAX).min(t.assigned)
    }

    /// Every plan sent has an answer (or timed out) and the sample is met.
    fn wave_reported(&self, t: &Tally) -> bool {
        t.in_flight == 0 && t.reported() >= self.needed(t)
    }

    fn failure_ratio_breach(&self, tallies: &[Tally]) -> Option<String> {
        let max = self.spec.rollout.max_failure_ratio;
        (0..self.started).find_map(|w| {
            let t = tallies[w];
            let reported = t.reported();
            if reported == 0 || reported < self.needed(&t) {
                return None;
            }
            let ratio = t.failed as f64 / reported as f64;
            (ratio > max).then(|| {
                format!(
                    "wave {}: failure ratio {:.4} ({} failed of {} reported) is above max_failure_ratio {}",
                    self.spec.rollout.waves[w].name, ratio, t.failed, reported, max
                )
            })
        })
    }

    pub(crate) fn label(&self) -> String {
        let name = |w: &usize| self.spec.rollout.waves.get(*w).map_or("?", |x| x.name.as_str());
        match &self.state {
            State::Running { wave } | State::Baking { wave, .. } | State::AwaitingApproval { wave } => {
                format!("{}({})", self.state.name(), name(wave))
            }
            State::Paused { from, .. } => format!("paused({})", from.name()),
            s => s.name().to_string(),
        }
    }

    fn not_allowed(&self, command: &str, hint: &str) -> RolloutError {
        RolloutError::NotAllowed {
            rollout: self.spec.id(),
            command: command.to_string(),
            state: self.label(),
            hint: hint.to_string(),
        }
    }
}

/// Counts of one wave. `succeeded` + `failed` are the reported agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub assigned: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Offline, not yet released, or plan sent without an answer yet.
    pub pending: usize,
    /// Plan sent, no answer yet, not timed out.
    pub in_flight: usize,
    /// Rolled back by the rollout (proven) or locally.
    pub rolled_back: usize,
}

impl Tally {
    #[must_use]
    pub fn reported(&self) -> usize {
        self.succeeded + self.failed
    }
}

fn audit(from: &str, to: &str, reason: &str, actor: &str) -> Action {
    Action::Audit { from: from.to_string(), to: to.to_string(), reason: reason.to_string(), actor: actor.to_string() }
}

fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests;
