//! A pure simulation of a fleet around one rollout machine: agents answer
//! plans as a test tells them, every action is recorded, and invariants
//! (never a plan twice, every transition audited) are checked on the way.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use rewind_rollout::machine::{Action, Event, FleetAgent, Outcome, RolloutMachine};
use rewind_rollout::{RolloutSpec, State};
use rewind_shared::Release;
use rewind_shared::fleet::{AgentId, Labels, parse_labels};
use rewind_shared::release::{Rollout, Trigger, Wave};

pub const MIN: u64 = 60_000;

pub fn id(s: &str) -> AgentId {
    AgentId::parse(s).unwrap()
}

pub fn labels(s: &str) -> Labels {
    parse_labels(s).unwrap()
}

/// The spec of examples/notes-app/releases/2026.11.0.
pub fn example_spec() -> RolloutSpec {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notes-app/releases/2026.11.0");
    RolloutSpec::from_release(&Release::load(&dir).unwrap())
}

pub fn wave(name: &str, selector: Option<&str>, percent: Option<f64>, bake_min: u64, approval: bool) -> Wave {
    Wave {
        name: name.into(),
        selector: selector.map(Into::into),
        percent,
        bake: Duration::from_secs(bake_min * 60),
        approval,
    }
}

pub fn spec(waves: Vec<Wave>, max_failure_ratio: f64, min_sample: u32) -> RolloutSpec {
    RolloutSpec {
        product: "notes".into(),
        version: "2026.11.0".into(),
        sequence: 7,
        rollout: Rollout {
            waves,
            max_failure_ratio,
            min_sample,
            report_timeout: Duration::from_secs(30 * 60),
            auto_rollback: true,
        },
        triggers: vec![Trigger {
            metric: "app.crash_count".into(),
            above: Some(3.0),
            below: None,
            window: Duration::from_secs(600),
        }],
        plan_expires_ms: None,
    }
}

/// 20 agents across rings: 3 canaries, 5 beta, 12 stable; mixed OS.
pub fn fleet20() -> Vec<FleetAgent> {
    (0..20)
        .map(|i| {
            let ring = match i {
                0..3 => "canary",
                3..8 => "beta",
                _ => "stable",
            };
            let os = if i % 2 == 0 { "linux" } else { "windows" };
            FleetAgent { id: id(&format!("agt-{i:02}")), labels: labels(&format!("ring={ring},os={os}")), online: true }
        })
        .collect()
}

pub fn fleet(n: usize) -> Vec<FleetAgent> {
    (0..n).map(|i| FleetAgent { id: id(&format!("agt-{i:04}")), labels: Labels::new(), online: true }).collect()
}

pub struct Sim {
    pub m: RolloutMachine,
    pub now: u64,
    pub log: Vec<Action>,
    pub plans: BTreeMap<AgentId, usize>,
    pub rollbacks: BTreeMap<AgentId, usize>,
    /// Plans delivered but not yet answered.
    pub inbox: Vec<AgentId>,
    pub rollback_inbox: Vec<AgentId>,
}

impl Sim {
    pub fn start(spec: RolloutSpec, fleet: Vec<FleetAgent>) -> Self {
        let (m, actions) = RolloutMachine::start(spec, fleet, "alice", 0).unwrap();
        let mut s = Sim {
            m,
            now: 0,
            log: Vec::new(),
            plans: BTreeMap::new(),
            rollbacks: BTreeMap::new(),
            inbox: Vec::new(),
            rollback_inbox: Vec::new(),
        };
        s.record(actions, None);
        s
    }

    fn record(&mut self, actions: Vec<Action>, before: Option<State>) {
        let changed = before.is_some_and(|b| &b != self.m.state());
        if changed {
            assert!(
                actions.iter().any(|a| matches!(a, Action::Audit { .. })),
                "a transition without an audit: {actions:?}"
            );
        }
        for a in &actions {
            match a {
                Action::SendPlan { agent } => {
                    let n = self.plans.entry(agent.clone()).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "plan sent twice to {agent}");
                    self.inbox.push(agent.clone());
                }
                Action::SendRollback { agents } => {
                    for agent in agents {
                        let n = self.rollbacks.entry(agent.clone()).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "rollback sent twice to {agent}");
                        self.rollback_inbox.push(agent.clone());
                    }
                }
                _ => {}
            }
        }
        self.log.extend(actions);
    }

    pub fn send(&mut self, event: Event) -> Vec<Action> {
        let before = self.m.state().clone();
        let actions = self.m.handle(self.now, event).unwrap_or_else(|e| panic!("{e}"));
        self.record(actions.clone(), Some(before));
        actions
    }

    pub fn try_send(&mut self, event: Event) -> Result<Vec<Action>, rewind_rollout::RolloutError> {
        let before = self.m.clone();
        let r = self.m.handle(self.now, event);
        match &r {
            Ok(a) => self.record(a.clone(), Some(before.state().clone())),
            Err(_) => assert_eq!(self.m, before, "a refused event changed the machine"),
        }
        r
    }

    pub fn report(&mut self, agent: &AgentId, outcome: Outcome) -> Vec<Action> {
        self.send(Event::AgentOutcome { agent: agent.clone(), outcome })
    }

    /// Every delivered plan is answered with `answer(agent)` (`None`: the
    /// agent stays silent), rollbacks with proofs, until quiet.
    pub fn answer_all(&mut self, answer: impl Fn(&AgentId) -> Option<Outcome>) {
        loop {
            if let Some(a) = self.inbox.first().cloned() {
                self.inbox.remove(0);
                if let Some(o) = answer(&a) {
                    self.report(&a, o);
                }
            } else if let Some(a) = self.rollback_inbox.first().cloned() {
                self.rollback_inbox.remove(0);
                self.report(&a, Outcome::RollbackProven);
            } else {
                break;
            }
        }
    }

    pub fn advance(&mut self, ms: u64) -> Vec<Action> {
        self.now += ms;
        self.send(Event::Tick)
    }

    pub fn planned(&self) -> BTreeSet<AgentId> {
        self.plans.keys().cloned().collect()
    }

    pub fn wave_agents(&self, wave: &str) -> BTreeSet<AgentId> {
        self.m.agents().keys().filter(|a| self.m.wave_of(a) == Some(wave)).cloned().collect()
    }

    pub fn state(&self) -> &'static str {
        self.m.state().name()
    }

    pub fn audits(&self) -> Vec<(String, String, String, String)> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Audit { from, to, reason, actor } => {
                    Some((from.clone(), to.clone(), reason.clone(), actor.clone()))
                }
                _ => None,
            })
            .collect()
    }

    pub fn halts(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|a| if let Action::Halt { reason } = a { Some(reason.clone()) } else { None })
            .collect()
    }

    /// Serializes and restores the machine, as a coordinator restart does.
    pub fn restart(&mut self) {
        let json = serde_json::to_string(&self.m).unwrap();
        let back: RolloutMachine = serde_json::from_str(&json).unwrap();
        assert_eq!(back, self.m);
        self.m = back;
    }
}
