//! The rollout as operators see it: `rewindctl rollout status PRODUCT
//! --json` (DESIGN.md §8) prints [`Status`] as JSON.
//!
//! Agent outcomes use §8's words: `pending` (offline, not yet released, or
//! no answer yet), `applied`, `failed` (including no report within
//! `report_timeout`), `refused`, `rolled_back` (by the rollout, proven, or
//! locally by the agent).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine::{ApplyOutcome, Part, RollbackProgress, RolloutMachine, State};

/// `{version, state, waves, agents}` plus what an operator needs next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub product: String,
    pub version: String,
    pub sequence: u64,
    pub state: String,
    /// Why it halted, is rolling back or was superseded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The wave awaiting `rewindctl rollout approve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<String>,
    pub waves: Vec<WaveStatus>,
    pub agents: Vec<AgentStatus>,
    /// Agents whose rollback could not be proven, with what to run there.
    pub needs_human: Vec<NeedsHuman>,
    /// Partial rollbacks asked for (granularity target, migration, flag).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial_rollbacks: Vec<PartialStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveStatus {
    pub name: String,
    /// `pending` (not started), `awaiting_approval`, `running`, `baking`,
    /// `paused`, `done`, or the rollout's state once it halted.
    pub state: String,
    pub succeeded: usize,
    pub failed: usize,
    pub pending: usize,
    pub rolled_back: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub id: String,
    /// `null` when no wave takes the agent.
    pub wave: Option<String>,
    pub outcome: String,
    pub online: bool,
    /// Whether the apply plan was sent to it (it is then among the
    /// endpoints the release reached, whatever it reported).
    #[serde(default)]
    pub plan_sent: bool,
    /// `timed_out` when the failure is a missing report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `queued`, `sent`, `proven`, `failed`, `timed_out` once a rollback
    /// concerns the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// Partial rollbacks that concern the agent (`"flag new_checkout":
    /// "proven"`), with the same words as `rollback`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, String>,
}

/// One partial rollback (or flag activation) asked for: its part, scope
/// and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialStatus {
    /// `flag new_checkout`, `target settings`, `migration 0002_...`;
    /// `flag new_checkout on` for a flag's activation.
    pub part: String,
    pub scope: String,
    pub proven: usize,
    /// Queued for an offline agent, or sent without an answer yet.
    pub pending: usize,
    /// Failed, refused, unproven or no answer within `report_timeout`.
    pub failed: usize,
}

/// An endpoint whose rollback is unproven, and the commands to run there.
/// Words in angle brackets are the endpoint's own: its state directory,
/// the release bundle, the target files, the snapshot id `status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeedsHuman {
    pub agent: String,
    pub reason: String,
    pub commands: Vec<String>,
}

/// The commands that bring one endpoint back by hand: inspect, retry the
/// pre-signed rollback, or restore the pre-apply snapshot.
#[must_use]
pub fn human_commands(product: &str, version: &str) -> Vec<String> {
    part_commands(product, version, None)
}

/// [`human_commands`] for the rollback of one part, or of the release;
/// for a flag's activation, the command that runs its activation plan.
#[must_use]
pub fn part_commands(product: &str, version: &str, part: Option<&Part>) -> Vec<String> {
    let retry = match part {
        Some(p) if p.activate => format!(
            "rewind-agent --state <STATE_DIR> apply --bundle <{product}-{version}.bundle> --trust trust.toml --flag {} --json",
            p.subject
        ),
        _ => {
            let which =
                part.map_or(String::new(), |p| format!(" --granularity {} --subject {}", p.granularity, p.subject));
            format!(
                "rewind-agent --state <STATE_DIR> rollback --bundle <{product}-{version}.bundle> --trust trust.toml{which} --db <TARGET>=<FILE> --json"
            )
        }
    };
    vec![
        "rewind-agent --state <STATE_DIR> status --json".to_string(),
        retry,
        "rewind-agent --state <STATE_DIR> snapshot list --json".to_string(),
        "rewind-agent --state <STATE_DIR> snapshot restore <SNAPSHOT_ID> --db <FILE>".to_string(),
    ]
}

impl RolloutMachine {
    /// The operator's view, §8's JSON shape.
    #[must_use]
    pub fn status(&self) -> Status {
        let spec = self.spec();
        let state = self.state();
        let (reason, awaiting) = match state {
            State::Halted { reason } | State::RollingBack { reason } => (Some(reason.clone()), None),
            State::Superseded { by } => (Some(format!("superseded by {by}")), None),
            State::AwaitingApproval { wave } => (None, Some(spec.rollout.waves[*wave].name.clone())),
            _ => (None, None),
        };
        let current = match state {
            State::Running { wave } | State::Baking { wave, .. } => Some(*wave),
            State::Paused { from, .. } => match **from {
                State::Running { wave } | State::Baking { wave, .. } => Some(wave),
                _ => None,
            },
            _ => None,
        };
        let tallies = self.tallies();
        let waves = spec
            .rollout
            .waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let t = tallies[i];
                let released = i < self.started;
                let wave_state = match state {
                    _ if Some(i) == current => state.name().to_string(),
                    State::AwaitingApproval { wave } if *wave == i => "awaiting_approval".into(),
                    State::Paused { from, .. } if matches!(**from, State::AwaitingApproval { wave } if wave == i) => {
                        "awaiting_approval".into()
                    }
                    State::Halted { .. } | State::RollingBack { .. } | State::RolledBack | State::Superseded { .. }
                        if released =>
                    {
                        state.name().to_string()
                    }
                    _ if released => "done".into(),
                    _ => "pending".into(),
                };
                WaveStatus {
                    name: w.name.clone(),
                    state: wave_state,
                    succeeded: t.succeeded,
                    failed: t.failed,
                    pending: t.pending,
                    rolled_back: t.rolled_back,
                }
            })
            .collect();
        let mut needs_human = Vec::new();
        let agents = self
            .agents()
            .iter()
            .map(|(id, r)| {
                let rolled_back =
                    r.rollback == RollbackProgress::Proven || r.outcome == ApplyOutcome::RolledBackLocally;
                let outcome = match r.outcome {
                    _ if rolled_back => "rolled_back",
                    ApplyOutcome::Pending => "pending",
                    ApplyOutcome::Applied => "applied",
                    ApplyOutcome::Failed | ApplyOutcome::TimedOut => "failed",
                    ApplyOutcome::Refused => "refused",
                    ApplyOutcome::RolledBackLocally => "rolled_back",
                };
                let rollback = progress_word(r.rollback);
                if matches!(r.rollback, RollbackProgress::Failed | RollbackProgress::TimedOut) {
                    let why = if r.rollback == RollbackProgress::Failed {
                        "its rollback could not be proven by digest or its after-rollback checks failed"
                    } else {
                        "no rollback result within report_timeout"
                    };
                    needs_human.push(NeedsHuman {
                        agent: id.to_string(),
                        reason: why.to_string(),
                        commands: human_commands(&spec.product, &spec.version),
                    });
                }
                let mut seen = std::collections::BTreeSet::new();
                for (part, _) in self.partials().iter().filter(|(p, _)| seen.insert(p.key())) {
                    let p = r.parts.get(&part.key()).copied();
                    if matches!(p, Some(RollbackProgress::Failed | RollbackProgress::TimedOut)) {
                        let what = if part.activate {
                            format!("the activation of flag {}", part.subject)
                        } else {
                            format!("the rollback of {part}")
                        };
                        needs_human.push(NeedsHuman {
                            agent: id.to_string(),
                            reason: format!(
                                "{what} {}",
                                if p == Some(RollbackProgress::Failed) {
                                    "failed or could not be proven"
                                } else {
                                    "sent no result within report_timeout"
                                }
                            ),
                            commands: part_commands(&spec.product, &spec.version, Some(part)),
                        });
                    }
                }
                AgentStatus {
                    id: id.to_string(),
                    wave: r.wave.map(|w| spec.rollout.waves[w].name.clone()),
                    outcome: outcome.to_string(),
                    online: r.online,
                    plan_sent: r.plan_sent_ms.is_some(),
                    detail: (r.outcome == ApplyOutcome::TimedOut).then(|| "timed_out".to_string()),
                    rollback: rollback.map(str::to_string),
                    parts: r
                        .parts
                        .iter()
                        .filter_map(|(k, p)| progress_word(*p).map(|w| (k.clone(), w.to_string())))
                        .collect(),
                }
            })
            .collect();
        Status {
            product: spec.product.clone(),
            version: spec.version.clone(),
            sequence: spec.sequence,
            state: state.name().to_string(),
            reason,
            awaiting_approval: awaiting,
            waves,
            agents,
            needs_human,
            partial_rollbacks: self
                .partials()
                .iter()
                .map(|(part, scope)| {
                    let key = part.key();
                    let mut st =
                        PartialStatus { part: key.clone(), scope: scope.to_string(), proven: 0, pending: 0, failed: 0 };
                    for r in self.agents().values() {
                        match r.parts.get(&key) {
                            Some(RollbackProgress::Proven) => st.proven += 1,
                            Some(RollbackProgress::Queued | RollbackProgress::Sent { .. }) => st.pending += 1,
                            Some(RollbackProgress::Failed | RollbackProgress::TimedOut) => st.failed += 1,
                            Some(RollbackProgress::NotNeeded) | None => {}
                        }
                    }
                    st
                })
                .collect(),
        }
    }
}

/// `queued`, `sent`, `proven`, `failed`, `timed_out`; nothing when not needed.
fn progress_word(p: RollbackProgress) -> Option<&'static str> {
    match p {
        RollbackProgress::NotNeeded => None,
        RollbackProgress::Queued => Some("queued"),
        RollbackProgress::Sent { .. } => Some("sent"),
        RollbackProgress::Proven => Some("proven"),
        RollbackProgress::Failed => Some("failed"),
        RollbackProgress::TimedOut => Some("timed_out"),
    }
}
