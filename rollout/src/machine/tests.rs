use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rewind_shared::bundle::Granularity;
use rewind_shared::fleet::parse_labels;
use rewind_shared::release::{Rollout, Trigger, Wave};

use super::*;
use crate::registry::{Registry, RegistryError};

const MIN: u64 = 60_000;

fn id(s: &str) -> AgentId {
    AgentId::parse(s).unwrap()
}

fn spec(sequence: u64) -> RolloutSpec {
    let w = |name: &str, selector: Option<&str>, percent: Option<f64>, bake: u64, approval: bool| Wave {
        name: name.into(),
        selector: selector.map(Into::into),
        percent,
        bake: Duration::from_secs(bake * 60),
        approval,
    };
    RolloutSpec {
        product: "notes".into(),
        version: format!("2026.{sequence}.0"),
        sequence,
        rollout: Rollout {
            waves: vec![
                w("canary", Some("ring=canary"), None, 0, false),
                w("early", None, Some(5.0), 15, false),
                w("broad", None, Some(50.0), 60, true),
                w("all", None, Some(100.0), 0, false),
            ],
            max_failure_ratio: 0.2,
            min_sample: 3,
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

fn fleet(n: usize) -> Vec<FleetAgent> {
    (0..n)
        .map(|i| FleetAgent {
            id: id(&format!("agt-{i:02}")),
            labels: parse_labels(if i % 4 == 0 { "ring=canary" } else { "ring=stable" }).unwrap(),
            online: i % 5 != 4,
        })
        .collect()
}

#[test]
fn status_json_has_the_documented_shape() {
    let (mut m, _) = RolloutMachine::start(spec(7), fleet(8), "alice", 0).unwrap();
    m.handle(1, Event::AgentOutcome { agent: id("agt-00"), outcome: Outcome::Applied }).unwrap();
    let v = serde_json::to_value(m.status()).unwrap();
    assert_eq!(v["version"], "2026.7.0");
    assert_eq!(v["state"], "running");
    let w = &v["waves"][0];
    assert_eq!(w["name"], "canary");
    assert_eq!(w["state"], "running");
    assert_eq!((w["succeeded"].as_u64(), w["failed"].as_u64(), w["pending"].as_u64()), (Some(1), Some(0), Some(1)));
    assert_eq!(v["waves"][3]["state"], "pending");
    let a = &v["agents"][0];
    assert_eq!(
        (a["id"].as_str(), a["wave"].as_str(), a["outcome"].as_str()),
        (Some("agt-00"), Some("canary"), Some("applied"))
    );
    assert!(
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| ["pending", "applied"].contains(&a["outcome"].as_str().unwrap()))
    );
    assert_eq!(v["needs_human"], serde_json::json!([]));
}

#[test]
fn events_and_actions_have_tagged_json_forms() {
    let e = Event::AgentOutcome { agent: id("agt-01"), outcome: Outcome::RolledBackLocally };
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!({"event": "agent_outcome", "agent": "agt-01", "outcome": "rolled_back_locally"})
    );
    let a = Action::SendRollback { agents: vec![id("agt-01")] };
    assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::json!({"action": "send_rollback", "agents": ["agt-01"]}));
    let n = Action::Notify { event: NotifyEvent::IncidentStarted };
    assert_eq!(serde_json::to_value(&n).unwrap(), serde_json::json!({"action": "notify", "event": "incident_started"}));
}

#[test]
fn first_wave_with_approval_waits_before_any_plan() {
    let mut s = spec(7);
    s.rollout.waves[0].approval = true;
    let (mut m, actions) = RolloutMachine::start(s, fleet(8), "alice", 0).unwrap();
    assert_eq!(m.state().name(), "awaiting_approval");
    assert!(!actions.iter().any(|a| matches!(a, Action::SendPlan { .. })));
    assert!(
        matches!(&actions[0], Action::Audit { from, to, actor, .. } if from == "pending" && to == "awaiting_approval(canary)" && actor == "alice")
    );
    m.handle(1, Event::Pause { actor: "bob".into() }).unwrap();
    let e = m.handle(2, Event::Approve { wave: "canary".into(), actor: "bob".into() }).unwrap_err();
    assert_eq!(
        e.to_string(),
        "rollout notes@7: cannot approve wave canary while paused(awaiting_approval); resume the rollout first"
    );
    m.handle(3, Event::Resume { actor: "bob".into() }).unwrap();
    let acts = m.handle(5, Event::Approve { wave: "canary".into(), actor: "bob".into() }).unwrap();
    // Canaries agt-00 and agt-04; agt-04 is offline.
    assert_eq!(
        acts.iter().filter(|a| matches!(a, Action::SendPlan { .. })).collect::<Vec<_>>(),
        [&Action::SendPlan { agent: id("agt-00") }]
    );
}

#[test]
fn next_deadline_is_the_earliest_timeout_or_bake_end() {
    let (mut m, _) = RolloutMachine::start(spec(7), fleet(8), "alice", 1_000).unwrap();
    // Canary plans went out at 1s: they time out 30 minutes later.
    assert_eq!(m.next_deadline_ms(), Some(1_000 + 30 * MIN));
    m.handle(2_000, Event::AgentOutcome { agent: id("agt-00"), outcome: Outcome::Applied }).unwrap();
    // agt-04 (the other canary) is offline: the wave waits, nothing to time.
    assert_eq!(m.next_deadline_ms(), None);
    m.handle(3_000, Event::AgentOnline { agent: id("agt-04") }).unwrap();
    assert_eq!(m.next_deadline_ms(), Some(3_000 + 30 * MIN));
    m.handle(4_000, Event::AgentOutcome { agent: id("agt-04"), outcome: Outcome::Applied }).unwrap();
    // Canary done; early (bake 15m) started: its plans or its bake.
    let d = m.next_deadline_ms().unwrap();
    assert!(d == 4_000 + 30 * MIN || d == 4_000 + 15 * MIN, "{d}");
}

#[test]
fn manual_rollback_after_done() {
    let mut s = spec(7);
    s.rollout.waves = vec![s.rollout.waves[3].clone()];
    let (mut m, _) = RolloutMachine::start(s, fleet(3), "alice", 0).unwrap();
    for i in 0..3 {
        m.handle(1, Event::AgentOutcome { agent: id(&format!("agt-{i:02}")), outcome: Outcome::Applied }).unwrap();
    }
    assert_eq!(m.state(), &State::Done);
    let acts = m
        .handle(2, Event::Rollback { actor: "ops".into(), reason: "customer reports".into(), scope: Scope::Fleet })
        .unwrap();
    assert!(acts.contains(&Action::SendRollback { agents: vec![id("agt-00"), id("agt-01"), id("agt-02")] }));
    assert_eq!(m.state().name(), "rolling_back");
    assert!(m.handle(3, Event::Rollback { actor: "ops".into(), reason: "again".into(), scope: Scope::Fleet }).is_err());
}

#[test]
fn a_partial_rollback_reaches_applied_agents_in_scope_and_leaves_the_rollout_as_it_was() {
    let mut s = spec(7);
    s.rollout.waves = vec![s.rollout.waves[3].clone()];
    // agt-04 is offline (fleet(): every fifth).
    let (mut m, _) = RolloutMachine::start(s, fleet(5), "alice", 0).unwrap();
    for i in 0..3 {
        m.handle(1, Event::AgentOutcome { agent: id(&format!("agt-{i:02}")), outcome: Outcome::Applied }).unwrap();
    }
    assert_eq!(m.state().name(), "running", "agt-03 has not reported");
    let flag = Part::rollback(Granularity::Flag, "new_checkout");
    let kill = |m: &mut RolloutMachine, t, scope| {
        m.handle(
            t,
            Event::PartialRollback { actor: "ops".into(), reason: "checkout errors".into(), scope, part: flag.clone() },
        )
    };
    let acts = kill(&mut m, 2, Scope::Fleet).unwrap();
    assert!(
        acts.contains(&Action::SendPart { part: flag.clone(), agents: vec![id("agt-00"), id("agt-01"), id("agt-02")] })
    );
    assert!(
        matches!(acts.first(), Some(Action::Audit { reason, .. }) if reason.starts_with("partial rollback of flag new_checkout (fleet) by ops"))
    );
    assert_eq!(m.state().name(), "running", "the rollout goes on");
    // The same part again, in the same or a narrower scope: refused, nothing changed.
    let before = m.clone();
    assert!(kill(&mut m, 3, Scope::Fleet).is_err());
    assert!(kill(&mut m, 3, Scope::Agents { agents: vec![id("agt-00")] }).is_err());
    assert_eq!(m, before);
    // An agent that applies later gets it too; the one offline gets it when it returns and applies.
    let acts = m.handle(4, Event::AgentOutcome { agent: id("agt-03"), outcome: Outcome::Applied }).unwrap();
    assert!(acts.contains(&Action::SendPart { part: flag.clone(), agents: vec![id("agt-03")] }));
    // Proofs come back; a failed one is listed for a human with the part's command.
    m.handle(5, Event::PartialOutcome { agent: id("agt-00"), part: flag.clone(), proven: true }).unwrap();
    m.handle(5, Event::PartialOutcome { agent: id("agt-01"), part: flag.clone(), proven: false }).unwrap();
    let st = m.status();
    let p = &st.partial_rollbacks[0];
    assert_eq!(
        (p.part.as_str(), p.scope.as_str(), p.proven, p.pending, p.failed),
        ("flag new_checkout", "fleet", 1, 2, 1)
    );
    assert_eq!(st.agents[0].parts["flag new_checkout"], "proven");
    assert_eq!(st.needs_human.len(), 1);
    assert!(
        st.needs_human[0].commands[1].contains("--granularity flag --subject new_checkout"),
        "{:?}",
        st.needs_human
    );
    // A report for a part never sent to the agent changes nothing.
    let other = Part::rollback(Granularity::Target, "settings");
    m.handle(6, Event::PartialOutcome { agent: id("agt-02"), part: other, proven: true }).unwrap();
    assert!(!m.agents()[&id("agt-02")].parts.contains_key("target settings"));
    // No answer within report_timeout: timed out.
    m.handle(2 + 30 * MIN, Event::Tick).unwrap();
    assert_eq!(m.agents()[&id("agt-02")].parts["flag new_checkout"], RollbackProgress::TimedOut);
    // A fleet rollback of the whole release is still possible afterwards; then no more parts.
    m.handle(2 + 31 * MIN, Event::Rollback { actor: "ops".into(), reason: "all".into(), scope: Scope::Fleet }).unwrap();
    let target = Part::rollback(Granularity::Target, "settings");
    let e = m
        .handle(
            2 + 32 * MIN,
            Event::PartialRollback { actor: "ops".into(), reason: "r".into(), scope: Scope::Fleet, part: target },
        )
        .unwrap_err();
    assert!(e.to_string().contains("whole release was already rolled back"), "{e}");
    // The machine with parts survives a store round trip.
    let back: RolloutMachine = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn a_flag_turned_on_and_off_follows_the_latest_operation_per_agent() {
    let mut s = spec(7);
    s.rollout.waves = vec![s.rollout.waves[3].clone()];
    // agt-04 is offline; agt-00 is the only canary (ring=canary every fourth) of the first four.
    let (mut m, _) = RolloutMachine::start(s, fleet(5), "alice", 0).unwrap();
    for i in 0..4 {
        m.handle(1, Event::AgentOutcome { agent: id(&format!("agt-{i:02}")), outcome: Outcome::Applied }).unwrap();
    }
    let on = Part::activation("beta_export");
    let off = Part::rollback(Granularity::Flag, "beta_export");
    let set_on = |m: &mut RolloutMachine, t, scope| {
        m.handle(
            t,
            Event::FlagActivation { actor: "ops".into(), reason: "go".into(), scope, flag: "beta_export".into() },
        )
    };
    let set_off = |m: &mut RolloutMachine, t, scope| {
        m.handle(t, Event::PartialRollback { actor: "ops".into(), reason: "stop".into(), scope, part: off.clone() })
    };
    let all = vec![id("agt-00"), id("agt-01"), id("agt-02"), id("agt-03")];
    let state = m.state().clone();
    let acts = set_on(&mut m, 2, Scope::Fleet).unwrap();
    assert!(
        matches!(acts.first(), Some(Action::Audit { reason, .. }) if reason.starts_with("flag beta_export turned on (fleet) by ops"))
    );
    assert!(acts.contains(&Action::SendPart { part: on.clone(), agents: all.clone() }));
    assert_eq!(m.state(), &state, "the rollout goes on as it was");
    assert!(set_on(&mut m, 3, Scope::Fleet).is_err(), "the same operation twice is refused");
    for a in &all {
        m.handle(3, Event::PartialOutcome { agent: a.clone(), part: on.clone(), proven: true }).unwrap();
    }
    assert_eq!(m.agents()[&id("agt-01")].parts["flag beta_export on"], RollbackProgress::Proven);
    // Off for the canaries only: their activation no longer stands.
    let canary = Scope::Cohort { selector: "ring=canary".parse().unwrap() };
    let acts = set_off(&mut m, 4, canary.clone()).unwrap();
    assert_eq!(acts.iter().filter(|a| matches!(a, Action::SendPart { .. })).count(), 1);
    assert!(acts.contains(&Action::SendPart { part: off.clone(), agents: vec![id("agt-00")] }));
    assert!(!m.agents()[&id("agt-00")].parts.contains_key("flag beta_export on"));
    assert_eq!(m.agents()[&id("agt-01")].parts["flag beta_export on"], RollbackProgress::Proven);
    // A late result of the superseded activation changes nothing.
    m.handle(5, Event::PartialOutcome { agent: id("agt-00"), part: on.clone(), proven: true }).unwrap();
    assert!(!m.agents()[&id("agt-00")].parts.contains_key("flag beta_export on"));
    m.handle(5, Event::PartialOutcome { agent: id("agt-00"), part: off.clone(), proven: true }).unwrap();
    // On again fleet-wide: only the canary needs it (the others have it on).
    let acts = set_on(&mut m, 6, Scope::Fleet).unwrap();
    assert!(acts.contains(&Action::SendPart { part: on.clone(), agents: vec![id("agt-00")] }));
    assert!(m.agents().values().all(|r| !r.parts.contains_key("flag beta_export")));
    assert!(all.iter().all(|a| m.agents()[a].parts.contains_key("flag beta_export on")));
    // The offline agent applies later: only the latest operation reaches it.
    let acts = m.handle(7, Event::AgentOnline { agent: id("agt-04") }).unwrap();
    assert_eq!(acts, [Action::SendPlan { agent: id("agt-04") }], "the release first");
    let acts = m.handle(8, Event::AgentOutcome { agent: id("agt-04"), outcome: Outcome::Applied }).unwrap();
    let sends: Vec<&Action> = acts.iter().filter(|a| matches!(a, Action::SendPart { .. })).collect();
    assert_eq!(sends, [&Action::SendPart { part: on.clone(), agents: vec![id("agt-04")] }]);
    // Status names each operation; an activation never counts for the waves.
    let st = m.status();
    let parts: Vec<(&str, &str)> = st.partial_rollbacks.iter().map(|p| (p.part.as_str(), p.scope.as_str())).collect();
    assert_eq!(
        parts,
        [
            ("flag beta_export on", "fleet"),
            ("flag beta_export", "cohort `ring=canary`"),
            ("flag beta_export on", "fleet")
        ]
    );
    assert_eq!(st.waves[0].failed, 0);
    // A failed activation is listed for a human with the command that runs it.
    m.handle(9, Event::PartialOutcome { agent: id("agt-01"), part: on.clone(), proven: false }).unwrap();
    let st = m.status();
    assert_eq!(st.needs_human.len(), 1, "{:?}", st.needs_human);
    assert!(st.needs_human[0].reason.starts_with("the activation of flag beta_export failed"));
    assert!(
        st.needs_human[0].commands[1]
            .contains("apply --bundle <notes-2026.7.0.bundle> --trust trust.toml --flag beta_export")
    );
    // Asking again sends it again, only where it failed.
    let acts = set_on(&mut m, 9, Scope::Fleet).unwrap();
    let sends: Vec<&Action> = acts.iter().filter(|a| matches!(a, Action::SendPart { .. })).collect();
    assert_eq!(sends, [&Action::SendPart { part: on.clone(), agents: vec![id("agt-01")] }]);
    assert!(m.status().needs_human.is_empty());
    assert!(set_on(&mut m, 9, Scope::Fleet).is_err(), "nothing failed any more: refused");
    // Only flags have activations.
    let bad = Part { granularity: Granularity::Target, subject: "notes".into(), activate: true };
    let e = m
        .handle(10, Event::PartialRollback { actor: "ops".into(), reason: "r".into(), scope: Scope::Fleet, part: bad })
        .unwrap_err();
    assert!(e.to_string().contains("flag activation"), "{e}");
    let back: RolloutMachine = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    assert_eq!("flag beta_export on".parse::<Part>().unwrap(), on);
    assert_eq!("flag beta_export".parse::<Part>().unwrap(), off);
    assert_eq!("target notes on".parse::<Part>().unwrap(), Part::rollback(Granularity::Target, "notes on"));
}

#[test]
fn registry_keeps_one_active_rollout_per_product() {
    let mut r = Registry::new();
    let first = r.start(spec(7), fleet(8), false, "alice", 0).unwrap();
    assert_eq!(first.id, "notes@7");
    let e = r.start(spec(8), fleet(8), false, "alice", 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "product notes already has an active rollout notes@7 (running); wait for it to finish, or start notes@8 with --supersede to replace it"
    );
    assert!(matches!(r.start(spec(7), fleet(8), true, "alice", 1), Err(RegistryError::Exists(_))));
    // Another product is independent.
    let mut other = spec(1);
    other.product = "mail".into();
    r.start(other, fleet(2), false, "alice", 1).unwrap();

    let second = r.start(spec(8), fleet(8), true, "bob", 2).unwrap();
    let (old, acts) = second.superseded.unwrap();
    assert_eq!(old, "notes@7");
    assert!(
        matches!(&acts[0], Action::Audit { to, reason, actor, .. } if to == "superseded" && reason.contains("notes@8") && actor == "bob")
    );
    assert_eq!(r.get("notes@7").unwrap().state().name(), "superseded");
    assert_eq!(r.active("notes").unwrap().spec().id(), "notes@8");
    // A superseded rollout sends nothing more.
    let acts = r.handle("notes@7", 3, Event::AgentOnline { agent: id("agt-04") }).unwrap();
    assert!(acts.is_empty(), "{acts:?}");

    // Persisted and loaded, the registry is the same.
    let back: Registry = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert!(matches!(r.handle("notes@9", 0, Event::Tick), Err(RegistryError::NotFound(_))));
}

#[test]
fn a_rolling_back_rollout_cannot_be_superseded() {
    let mut r = Registry::new();
    // Canaries: agt-00, agt-04 (offline), agt-08.
    r.start(spec(7), fleet(10), false, "alice", 0).unwrap();
    r.handle("notes@7", 1, Event::AgentOutcome { agent: id("agt-00"), outcome: Outcome::Applied }).unwrap();
    r.handle("notes@7", 1, Event::Integrity { agent: id("agt-00"), kind: IntegrityKind::Drift, detail: "x".into() })
        .unwrap();
    assert_eq!(r.get("notes@7").unwrap().state().name(), "rolling_back");
    assert!(matches!(r.start(spec(8), fleet(8), true, "bob", 2), Err(RegistryError::RollingBack { .. })));
    r.handle("notes@7", 2, Event::AgentOutcome { agent: id("agt-00"), outcome: Outcome::RollbackProven }).unwrap();
    assert_eq!(r.get("notes@7").unwrap().state().name(), "rolling_back", "agt-08 still has the plan in flight");
    r.handle("notes@7", 2, Event::AgentOutcome { agent: id("agt-08"), outcome: Outcome::Failed }).unwrap();
    assert_eq!(r.get("notes@7").unwrap().state().name(), "rolled_back");
    assert!(r.active("notes").is_none());
    r.start(spec(8), fleet(8), false, "bob", 3).unwrap();
    assert_eq!(r.current("notes").unwrap().spec().id(), "notes@8");
}

#[test]
fn epoch_rollback_reverts_later_releases_latest_first() {
    let mut r = Registry::new();
    for seq in [7, 8, 9] {
        r.start(spec(seq), fleet(4), true, "alice", seq).unwrap();
    }
    assert_eq!(r.epoch_rollback_order("notes", 6), ["notes@9", "notes@8", "notes@7"]);
    assert_eq!(r.epoch_rollback_order("notes", 7), ["notes@9", "notes@8"]);
    assert!(r.epoch_rollback_order("notes", 9).is_empty());
    assert!(r.epoch_rollback_order("mail", 0).is_empty());
    // Each accepts its rollback, superseded or not.
    for id_ in r.epoch_rollback_order("notes", 6) {
        r.handle(&id_, 10, Event::Rollback { actor: "ops".into(), reason: "to epoch 6".into(), scope: Scope::Fleet })
            .unwrap();
    }
    // agt-00's apply plans are still in flight: not rolled back yet.
    assert_eq!(r.epoch_rollback_order("notes", 6).len(), 3);
    for id_ in ["notes@9", "notes@8", "notes@7"] {
        assert_eq!(r.get(id_).unwrap().state().name(), "rolling_back");
        r.handle(id_, 11, Event::AgentOutcome { agent: id("agt-00"), outcome: Outcome::Failed }).unwrap();
    }
    assert!(r.epoch_rollback_order("notes", 6).is_empty());
}

#[test]
fn a_manual_rollback_halts_first_and_is_audited_with_its_actor() {
    let (mut m, _) = RolloutMachine::start(spec(7), fleet(8), "alice", 0).unwrap();
    m.handle(1, Event::AgentOutcome { agent: id("agt-00"), outcome: Outcome::Applied }).unwrap();
    let acts = m
        .handle(2, Event::Rollback { actor: "ops".into(), reason: "support tickets".into(), scope: Scope::Fleet })
        .unwrap();
    let audits: Vec<_> = acts
        .iter()
        .filter_map(|a| {
            if let Action::Audit { from, to, actor, .. } = a {
                Some((from.as_str(), to.as_str(), actor.as_str()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(audits, [("running(canary)", "halted", "ops"), ("halted", "rolling_back", "ops")]);
    assert!(acts.contains(&Action::Notify { event: NotifyEvent::IncidentStarted }));
    assert!(acts.contains(&Action::SendRollback { agents: vec![id("agt-00")] }));
}

#[derive(Debug, Clone)]
enum Op {
    Outcome(usize, Outcome),
    Advance(u64),
    Approve(usize),
    Pause,
    Resume,
    Abort,
    Rollback,
    RollbackWave(usize),
    RollbackAgent(usize),
    Integrity(usize),
    Crash(usize, f64),
    Join(usize, bool),
    Offline(usize),
    Online(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        6 => Just(Outcome::Applied),
        1 => Just(Outcome::Failed),
        1 => Just(Outcome::Refused),
        1 => Just(Outcome::RolledBackLocally),
        2 => Just(Outcome::RollbackProven),
        1 => Just(Outcome::RollbackFailed),
    ];
    prop_oneof![
        10 => (0..24usize, outcome).prop_map(|(a, o)| Op::Outcome(a, o)),
        4 => (0..90u64).prop_map(|m| Op::Advance(m * MIN)),
        2 => (0..4usize).prop_map(Op::Approve),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Abort),
        1 => Just(Op::Rollback),
        1 => (0..4usize).prop_map(Op::RollbackWave),
        1 => (0..24usize).prop_map(Op::RollbackAgent),
        1 => (0..24usize).prop_map(Op::Integrity),
        2 => (0..24usize, 0.0..3.0f64).prop_map(|(a, v)| Op::Crash(a, v)),
        2 => (0..24usize, any::<bool>()).prop_map(|(a, c)| Op::Join(a, c)),
        2 => (0..24usize).prop_map(Op::Offline),
        3 => (0..24usize).prop_map(Op::Online),
        1 => Just(Op::Restart),
    ]
}

fn agent(i: usize) -> AgentId {
    id(&format!("agt-{i:02}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Whatever happens, in whatever order, with restarts in between:
    /// a plan goes to an agent at most once and only when its wave was
    /// released and the rollout may send; never after a halt; a rollback
    /// only to agents that applied, at most once; every state change is
    /// audited; refused events change nothing; `rolled_back` means every
    /// agent that applied proved its rollback. And the timeout cache
    /// (`quiet_until`) changes nothing: a machine that looks at every agent
    /// for timeouts on every event decides exactly the same.
    #[test]
    fn invariants_hold_for_any_event_sequence(ops in proptest::collection::vec(op(), 1..120)) {
        let (mut m, first) = RolloutMachine::start(spec(7), fleet(16), "alice", 0).unwrap();
        let mut now = 0;
        let mut plans: BTreeMap<AgentId, usize> = BTreeMap::new();
        let mut rollbacks: BTreeSet<AgentId> = BTreeSet::new();
        let mut halted = false;
        let mut check = |m: &RolloutMachine, before: &RolloutMachine, acts: &[Action], halted: &mut bool| -> Result<(), TestCaseError> {
            if m.state != before.state {
                prop_assert!(acts.iter().any(|a| matches!(a, Action::Audit { .. })), "unaudited {:?} -> {:?}", before.state, m.state);
            }
            for a in acts {
                match a {
                    Action::SendPlan { agent } => {
                        prop_assert!(!*halted, "plan to {agent} after a halt");
                        let n = plans.entry(agent.clone()).or_default();
                        *n += 1;
                        prop_assert_eq!(*n, 1, "plan twice to {}", agent);
                        let r = &m.agents[agent];
                        prop_assert!(r.wave.is_some_and(|w| w < m.started), "plan to {agent} of an unreleased wave");
                        prop_assert!(r.online);
                    }
                    Action::SendRollback { agents } => {
                        for agent in agents {
                            prop_assert!(rollbacks.insert(agent.clone()), "rollback twice to {agent}");
                            // (An agent may report applying a bundle carried by hand.)
                            prop_assert_eq!(m.agents[agent].outcome, ApplyOutcome::Applied, "rollback to {} that did not apply", agent);
                            prop_assert!(m.in_rollback_scope(agent, &m.agents[agent]), "rollback to {} outside every scope", agent);
                        }
                    }
                    Action::Halt { .. } => *halted = true,
                    _ => {}
                }
            }
            if m.state == State::RolledBack {
                for (id, r) in &m.agents {
                    if r.outcome == ApplyOutcome::Applied {
                        prop_assert_eq!(r.rollback, RollbackProgress::Proven, "{} not proven in rolled_back", id);
                    }
                }
            }
            Ok(())
        };
        let start = m.clone();
        check(&m, &start, &first, &mut halted)?;
        let mut shadow = m.clone();
        for op in ops {
            let before = m.clone();
            let ev = match op {
                Op::Restart => {
                    m = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
                    prop_assert_eq!(&m, &before);
                    continue;
                }
                Op::Outcome(a, o) => Event::AgentOutcome { agent: agent(a), outcome: o },
                Op::Advance(ms) => { now += ms; Event::Tick }
                Op::Approve(w) => Event::Approve { wave: m.spec.rollout.waves[w].name.clone(), actor: "bob".into() },
                Op::Pause => Event::Pause { actor: "bob".into() },
                Op::Resume => Event::Resume { actor: "bob".into() },
                Op::Abort => Event::Abort { actor: "bob".into() },
                Op::Rollback => Event::Rollback { actor: "bob".into(), reason: "test".into(), scope: Scope::Fleet },
                Op::RollbackWave(w) => Event::Rollback {
                    actor: "bob".into(),
                    reason: "test".into(),
                    scope: Scope::Wave { name: m.spec.rollout.waves[w].name.clone() },
                },
                Op::RollbackAgent(a) => Event::Rollback { actor: "bob".into(), reason: "test".into(), scope: Scope::Agents { agents: vec![agent(a)] } },
                Op::Integrity(a) => Event::Integrity { agent: agent(a), kind: IntegrityKind::Drift, detail: "d".into() },
                Op::Crash(a, v) => Event::Metric { agent: agent(a), name: "app.crash_count".into(), value: v, at_ms: now },
                Op::Join(a, canary) => Event::AgentJoined {
                    agent: agent(a),
                    labels: parse_labels(if canary { "ring=canary" } else { "ring=stable" }).unwrap(),
                },
                Op::Offline(a) => Event::AgentOffline { agent: agent(a) },
                Op::Online(a) => Event::AgentOnline { agent: agent(a) },
            };
            shadow.quiet_until = QuietUntil::default();
            let expected = shadow.handle(now, ev.clone());
            let got = m.handle(now, ev);
            prop_assert_eq!(&got, &expected, "the timeout cache changed a decision");
            prop_assert_eq!(&m, &shadow);
            match got {
                Ok(acts) => check(&m, &before, &acts, &mut halted)?,
                Err(_) => prop_assert_eq!(&m, &before, "a refused event changed the machine"),
            }
        }
    }
}
