//! Issue 6's rollout scenarios as pure simulations of the decision logic.

mod sim;

use std::collections::BTreeSet;

use rewind_rollout::machine::{Action, Event, IntegrityKind, NotifyEvent, Outcome, Scope};
use rewind_rollout::{RolloutError, State};
use sim::*;

#[test]
fn good_release_goes_canary_early_broad_with_approval_then_all() {
    let mut s = Sim::start(example_spec(), fleet20());
    let canaries = s.wave_agents("canary");
    assert_eq!(canaries.len(), 3);
    assert_eq!(s.state(), "running");
    assert_eq!(s.planned(), canaries, "only canaries get the plan first");

    s.answer_all(|_| Some(Outcome::Applied));
    // canary has no bake: early starts at once, then bakes 15 minutes.
    let early = s.wave_agents("early");
    let mut released: BTreeSet<_> = canaries.union(&early).cloned().collect();
    assert_eq!(s.planned(), released);
    if early.is_empty() {
        // An empty wave finishes at once; nothing to bake.
        assert_eq!(s.state(), "awaiting_approval");
    } else {
        assert_eq!(s.state(), "baking");
        s.advance(14 * MIN);
        assert_eq!(s.state(), "baking");
        s.advance(MIN);
    }
    assert_eq!(s.state(), "awaiting_approval");
    assert_eq!(s.m.status().awaiting_approval.as_deref(), Some("broad"));
    assert_eq!(s.planned(), released, "no broad plan before the approval");

    let e = s.try_send(Event::Approve { wave: "all".into(), actor: "bob".into() }).unwrap_err();
    assert!(matches!(e, RolloutError::WrongWave { .. }), "{e}");
    assert!(e.to_string().contains("approve broad instead"), "{e}");
    s.send(Event::Approve { wave: "broad".into(), actor: "bob".into() });
    assert!(s.audits().iter().any(|(f, t, r, a)| f == "awaiting_approval(broad)"
        && t == "running(broad)"
        && r.contains("approved")
        && a == "bob"));
    released.extend(s.wave_agents("broad"));
    assert_eq!(s.planned(), released);
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "baking");
    s.advance(60 * MIN);
    released.extend(s.wave_agents("all"));
    assert_eq!(s.planned(), released);
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "done");
    assert_eq!(s.planned().len(), 20, "every agent got the plan exactly once");

    let st = s.m.status();
    assert_eq!(st.state, "done");
    assert!(st.waves.iter().all(|w| w.state == "done" && w.failed == 0 && w.pending == 0));
    assert_eq!(st.waves.iter().map(|w| w.succeeded).sum::<usize>(), 20);
    assert!(st.agents.iter().all(|a| a.outcome == "applied"));
    assert!(s.halts().is_empty());
}

#[test]
fn bad_canary_halts_in_the_canary_wave_and_rolls_back_every_canary() {
    let mut s = Sim::start(example_spec(), fleet20());
    let canaries: Vec<_> = s.wave_agents("canary").into_iter().collect();
    // Canary 0 applies; canary 1's verify fails (the agent reverted it and
    // says so); canary 2 is still applying.
    s.report(&canaries[0], Outcome::Applied);
    s.send(Event::Integrity {
        agent: canaries[1].clone(),
        kind: IntegrityKind::FailedVerify,
        detail: "verify.sql returned 0".into(),
    });
    assert_eq!(s.state(), "rolling_back");
    assert!(s.halts()[0].contains("integrity: failed verify on agent agt-0"), "{:?}", s.halts());
    assert_eq!(
        s.rollback_inbox,
        vec![canaries[0].clone()],
        "the fast path: the one that applied gets the rollback at once"
    );
    s.report(&canaries[1], Outcome::Failed);
    // The in-flight canary applies after the halt: it is rolled back too.
    s.report(&canaries[2], Outcome::Applied);
    assert_eq!(s.rollback_inbox.len(), 2);
    assert_eq!(s.state(), "rolling_back");
    s.answer_all(|_| None);
    assert_eq!(s.state(), "rolled_back");

    let canary_set: BTreeSet<_> = canaries.iter().cloned().collect();
    assert_eq!(s.planned(), canary_set, "no agent outside the canary wave ever got the apply plan");
    // Nothing goes out later either, whatever happens.
    s.advance(120 * MIN);
    s.send(Event::AgentJoined { agent: id("agt-late"), labels: labels("ring=canary") });
    assert_eq!(s.planned(), canary_set);

    let notes: Vec<_> =
        s.log.iter().filter_map(|a| if let Action::Notify { event } = a { Some(*event) } else { None }).collect();
    assert_eq!(
        notes,
        [
            NotifyEvent::IncidentStarted,
            NotifyEvent::RollbackStarted,
            NotifyEvent::RollbackCompleted,
            NotifyEvent::Resolved
        ]
    );
    let st = s.m.status();
    assert_eq!(st.state, "rolled_back");
    assert_eq!(st.waves[0].state, "rolled_back");
    assert_eq!(st.waves[1].state, "pending");
    for c in [&canaries[0], &canaries[2]] {
        let a = st.agents.iter().find(|a| a.id == c.as_str()).unwrap();
        assert_eq!((a.outcome.as_str(), a.rollback.as_deref()), ("rolled_back", Some("proven")));
    }
    assert!(st.needs_human.is_empty());
}

#[test]
fn failing_canaries_halt_by_ratio_once_the_whole_small_wave_reported() {
    let mut s = Sim::start(example_spec(), fleet20());
    let canaries: Vec<_> = s.wave_agents("canary").into_iter().collect();
    s.report(&canaries[0], Outcome::Failed);
    s.report(&canaries[1], Outcome::Applied);
    // min_sample 20 > 3 canaries: judged once all three reported.
    assert_eq!(s.state(), "running");
    s.report(&canaries[2], Outcome::Applied);
    assert_eq!(s.state(), "rolling_back");
    assert!(
        s.halts()[0]
            .contains("wave canary: failure ratio 0.3333 (1 failed of 3 reported) is above max_failure_ratio 0.02"),
        "{:?}",
        s.halts()
    );
    s.answer_all(|_| None);
    assert_eq!(s.state(), "rolled_back");
    assert_eq!(s.rollbacks.len(), 2);
}

#[test]
fn failure_ratio_halts_exactly_when_it_crosses_after_min_sample() {
    let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 0, false)], 0.25, 10), fleet(40));
    let agents: Vec<_> = s.planned().into_iter().collect();
    assert_eq!(agents.len(), 40);
    // 3 of the first 9 fail (33 %): no halt before min_sample.
    let first = [Outcome::Failed, Outcome::Refused, Outcome::RolledBackLocally];
    for (i, a) in agents.iter().take(9).enumerate() {
        s.report(a, if i < 3 { first[i] } else { Outcome::Applied });
        assert_eq!(s.state(), "running", "halted before min_sample at report {}", i + 1);
    }
    // 10th report: 3/10 = 0.30 > 0.25 → halt now.
    s.report(&agents[9], Outcome::Applied);
    assert_eq!(s.state(), "rolling_back");
    assert!(s.halts()[0].contains("failure ratio 0.3000 (3 failed of 10 reported)"), "{:?}", s.halts());

    // Same fleet, ratio at the threshold after min_sample, crossing later.
    let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 0, false)], 0.25, 10), fleet(40));
    let agents: Vec<_> = s.planned().into_iter().collect();
    let mut n = 0;
    for (i, a) in agents.iter().take(12).enumerate() {
        // 2 failures in the first 10 (0.2), then 3/12 = 0.25 (not above).
        let fail = i == 0 || i == 5 || i == 11;
        s.report(a, if fail { Outcome::Failed } else { Outcome::Applied });
        n += 1;
        assert_eq!(s.state(), "running", "halted at {n} reports");
    }
    s.report(&agents[12], Outcome::Failed); // 4/13 = 0.307
    assert_eq!(s.state(), "rolling_back");
    assert!(s.halts()[0].contains("4 failed of 13 reported"), "{:?}", s.halts());
}

#[test]
fn no_report_by_report_timeout_is_a_failure() {
    let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 0, false)], 0.5, 4), fleet(4));
    let agents: Vec<_> = s.planned().into_iter().collect();
    s.report(&agents[0], Outcome::Applied);
    s.report(&agents[1], Outcome::Applied);
    s.advance(29 * MIN);
    assert_eq!(s.state(), "running");
    assert_eq!(s.m.status().waves[0].pending, 2);
    s.advance(MIN);
    // 2 timed out of 4 = 0.5, not above 0.5: the wave is done, honestly
    // counted with two failures.
    assert_eq!(s.state(), "done");
    let st = s.m.status();
    assert_eq!((st.waves[0].succeeded, st.waves[0].failed, st.waves[0].pending), (2, 2, 0));
    let timed_out: Vec<_> = st.agents.iter().filter(|a| a.detail.as_deref() == Some("timed_out")).collect();
    assert_eq!(timed_out.len(), 2);
    assert!(timed_out.iter().all(|a| a.outcome == "failed"));
}

#[test]
fn an_integrity_signal_halts_at_once_without_a_minimum() {
    for kind in [
        IntegrityKind::Drift,
        IntegrityKind::FailedVerify,
        IntegrityKind::FailedRollbackProof,
        IntegrityKind::AuditGap,
        IntegrityKind::AuditFork,
    ] {
        let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 0, false)], 0.5, 20), fleet(30));
        let agents: Vec<_> = s.planned().into_iter().collect();
        s.report(&agents[0], Outcome::Applied);
        s.send(Event::Integrity { agent: agents[7].clone(), kind, detail: "notes: b3:aa.. expected b3:bb..".into() });
        assert_eq!(s.state(), "rolling_back", "{kind}");
        assert!(s.halts()[0].contains(&kind.to_string()));
        assert_eq!(s.rollback_inbox, vec![agents[0].clone()]);
    }
}

#[test]
fn an_app_metric_above_its_trigger_during_bake_halts() {
    let waves = vec![wave("canary", Some("ring=canary"), None, 30, false), wave("rest", None, Some(100.0), 0, false)];
    let mut s = Sim::start(spec(waves.clone(), 0.02, 20), fleet20());
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "baking");
    let c: Vec<_> = s.wave_agents("canary").into_iter().collect();
    let metric = |a: &rewind_shared::fleet::AgentId, v: f64, at: u64| Event::Metric {
        agent: a.clone(),
        name: "app.crash_count".into(),
        value: v,
        at_ms: at,
    };
    // 2 crashes, then 2 more 11 minutes later: never above 3 within 10m.
    s.send(metric(&c[0], 2.0, s.now));
    s.now += 11 * MIN;
    s.send(metric(&c[0], 2.0, s.now));
    // Another metric name is not watched.
    s.send(Event::Metric { agent: c[1].clone(), name: "app.other".into(), value: 99.0, at_ms: s.now });
    assert_eq!(s.state(), "baking");
    s.now += MIN;
    s.send(metric(&c[0], 2.0, s.now)); // 4 within 10m
    assert_eq!(s.state(), "rolling_back");
    assert!(s.halts()[0].contains("trigger app.crash_count above 3: 4 within 10m on agent"), "{:?}", s.halts());
    assert_eq!(s.rollback_inbox.len(), 3, "every canary that applied");
    assert!(s.planned().iter().all(|a| c.contains(a)), "the next wave never started");

    // An agent that has not applied speaks for the old version: ignored.
    let mut s = Sim::start(spec(waves, 0.02, 20), fleet20());
    let c: Vec<_> = s.wave_agents("canary").into_iter().collect();
    s.send(metric(&c[0], 10.0, 0));
    assert_eq!(s.state(), "running");
}

#[test]
fn offline_agents_are_pending_and_get_the_plan_when_back() {
    let mut agents = fleet(10);
    for a in agents.iter_mut().take(3) {
        a.online = false;
    }
    let offline: Vec<_> = agents.iter().take(3).map(|a| a.id.clone()).collect();
    let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 0, false)], 0.02, 5), agents);
    assert_eq!(s.planned().len(), 7);
    s.answer_all(|_| Some(Outcome::Applied));
    // The sample was met; the offline three are pending, never success.
    assert_eq!(s.state(), "done");
    let st = s.m.status();
    assert_eq!((st.waves[0].succeeded, st.waves[0].pending), (7, 3));
    for o in &offline {
        assert_eq!(st.agents.iter().find(|a| a.id == o.as_str()).unwrap().outcome, "pending");
    }
    s.send(Event::AgentOnline { agent: offline[0].clone() });
    assert!(s.plans.contains_key(&offline[0]));
    s.answer_all(|_| Some(Outcome::Applied));
    // Offline and back again: no second plan.
    s.send(Event::AgentOffline { agent: offline[0].clone() });
    s.send(Event::AgentOnline { agent: offline[0].clone() });
    assert_eq!(s.plans[&offline[0]], 1);
    assert_eq!(s.m.status().waves[0].succeeded, 8);
}

#[test]
fn an_offline_agent_that_applied_gets_the_rollback_when_back() {
    let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 60, false)], 0.02, 50), fleet(6));
    s.answer_all(|_| Some(Outcome::Applied));
    let agents: Vec<_> = s.planned().into_iter().collect();
    s.send(Event::AgentOffline { agent: agents[0].clone() });
    s.send(Event::Abort { actor: "carol".into() });
    assert_eq!(s.state(), "halted");
    assert!(s.rollbacks.is_empty(), "abort alone keeps the data");
    s.send(Event::Rollback { actor: "carol".into(), reason: "bad release".into(), scope: Scope::Fleet });
    assert_eq!(s.rollbacks.len(), 5, "online ones at once");
    s.answer_all(|_| None);
    assert_eq!(s.state(), "rolling_back", "one endpoint still holds the release");
    assert_eq!(s.m.status().agents[0].rollback.as_deref(), Some("queued"));
    s.send(Event::AgentOnline { agent: agents[0].clone() });
    assert_eq!(s.rollback_inbox, vec![agents[0].clone()]);
    s.answer_all(|_| None);
    assert_eq!(s.state(), "rolled_back");
}

#[test]
fn an_unproven_rollback_lists_the_agents_that_need_a_human() {
    let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 60, false)], 0.02, 50), fleet(4));
    s.answer_all(|_| Some(Outcome::Applied));
    let agents: Vec<_> = s.planned().into_iter().collect();
    s.send(Event::Integrity { agent: agents[1].clone(), kind: IntegrityKind::Drift, detail: "tampered".into() });
    assert_eq!(s.rollbacks.len(), 4);
    s.report(&agents[0], Outcome::RollbackProven);
    s.report(&agents[1], Outcome::RollbackFailed);
    s.report(&agents[2], Outcome::RollbackProven);
    assert_eq!(s.state(), "rolling_back");
    s.advance(30 * MIN); // agents[3] never answers
    assert_eq!(s.state(), "halted");
    let st = s.m.status();
    assert!(
        st.reason
            .as_deref()
            .unwrap()
            .starts_with("rollback incomplete: 2 agent(s) need a human: agt-0001, agt-0003 (2 proven)"),
        "{st:?}"
    );
    let humans: Vec<_> = st.needs_human.iter().map(|h| h.agent.as_str()).collect();
    assert_eq!(humans, ["agt-0001", "agt-0003"]);
    assert!(st.needs_human[0].commands.iter().any(|c| c == "rewind-agent --state <STATE_DIR> status --json"));
    assert!(st.needs_human[0].commands.iter().any(|c| c.contains("snapshot restore <SNAPSHOT_ID>")));
    // A human fixes both; their proofs arrive: rolled back, verified.
    s.report(&agents[1], Outcome::RollbackProven);
    assert_eq!(s.state(), "halted");
    s.report(&agents[3], Outcome::RollbackProven);
    assert_eq!(s.state(), "rolled_back");
}

#[test]
fn without_auto_rollback_a_halt_waits_for_an_operator() {
    let mut sp = spec(vec![wave("all", None, Some(100.0), 60, false)], 0.02, 50);
    sp.rollout.auto_rollback = false;
    let mut s = Sim::start(sp, fleet(4));
    s.answer_all(|_| Some(Outcome::Applied));
    let a = s.planned().into_iter().next().unwrap();
    s.send(Event::Integrity { agent: a, kind: IntegrityKind::AuditFork, detail: "two heads at seq 9".into() });
    assert_eq!(s.state(), "halted");
    assert!(s.rollbacks.is_empty());
    s.send(Event::Rollback { actor: "dave".into(), reason: "audit fork".into(), scope: Scope::Fleet });
    assert_eq!(s.rollbacks.len(), 4);
    assert!(s.audits().iter().any(|(f, t, r, a)| f == "halted"
        && t == "rolling_back"
        && r.contains("manual rollback (fleet) by dave")
        && a == "dave"));
}

#[test]
fn pause_holds_plans_and_the_bake_clock() {
    let waves = vec![wave("canary", Some("ring=canary"), None, 10, false), wave("rest", None, Some(100.0), 0, false)];
    let mut s = Sim::start(spec(waves, 0.02, 20), fleet20());
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "baking");
    s.advance(4 * MIN);
    s.send(Event::Pause { actor: "erin".into() });
    assert_eq!(s.state(), "paused");
    s.advance(60 * MIN);
    assert_eq!(s.state(), "paused");
    s.send(Event::AgentJoined { agent: id("agt-new"), labels: labels("ring=canary") });
    assert_eq!(s.planned().len(), 3, "no plan while paused");
    assert!(matches!(s.try_send(Event::Pause { actor: "erin".into() }), Err(RolloutError::NotAllowed { .. })));
    s.send(Event::Resume { actor: "erin".into() });
    assert_eq!(s.state(), "baking");
    assert_eq!(s.planned().len(), 4, "the joined canary gets its plan on resume");
    s.answer_all(|_| Some(Outcome::Applied));
    s.advance(5 * MIN);
    assert_eq!(s.state(), "baking", "6 of 10 bake minutes were spent before the pause");
    s.advance(MIN);
    assert_eq!(s.state(), "running");
}

#[test]
fn refused_commands_change_nothing() {
    let mut s = Sim::start(example_spec(), fleet20());
    let e = s.try_send(Event::Approve { wave: "broad".into(), actor: "x".into() }).unwrap_err();
    assert_eq!(
        e.to_string(),
        "rollout notes@7: cannot approve wave broad while running(canary); no wave is awaiting approval"
    );
    let e = s.try_send(Event::Resume { actor: "x".into() }).unwrap_err();
    assert!(e.to_string().contains("cannot resume while running(canary)"), "{e}");
    let e = s.try_send(Event::AgentOnline { agent: id("agt-zz") }).unwrap_err();
    assert!(matches!(e, RolloutError::UnknownAgent { .. }));
    s.send(Event::Abort { actor: "x".into() });
    assert!(s.try_send(Event::Abort { actor: "x".into() }).is_err());
}

#[test]
fn a_restart_resumes_with_the_same_cohorts_and_never_resends() {
    let mut s = Sim::start(example_spec(), fleet20());
    let waves_before: Vec<_> = s.m.agents().keys().map(|a| s.m.wave_of(a).map(str::to_string)).collect();
    s.answer_all(|_| Some(Outcome::Applied));
    s.restart();
    let waves_after: Vec<_> = s.m.agents().keys().map(|a| s.m.wave_of(a).map(str::to_string)).collect();
    assert_eq!(waves_before, waves_after);
    s.advance(15 * MIN);
    s.restart();
    for a in s.planned() {
        s.send(Event::AgentOffline { agent: a.clone() });
        s.send(Event::AgentOnline { agent: a });
    }
    s.send(Event::Approve { wave: "broad".into(), actor: "bob".into() });
    s.restart();
    s.answer_all(|_| Some(Outcome::Applied));
    s.advance(60 * MIN);
    s.restart();
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "done");
    assert!(s.plans.values().all(|&n| n == 1) && s.plans.len() == 20);
}

#[test]
fn cohorts_are_the_same_for_the_next_release() {
    let fleet = fleet20();
    let a = Sim::start(example_spec(), fleet.clone());
    let mut next = example_spec();
    next.sequence = 8;
    next.version = "2026.12.0".into();
    let b = Sim::start(next, fleet);
    for id in a.m.agents().keys() {
        assert_eq!(a.m.wave_of(id), b.m.wave_of(id), "{id}");
    }
}

#[test]
fn a_late_joiner_lands_in_its_wave_and_waits_for_it() {
    let mut s = Sim::start(example_spec(), fleet20());
    // Find a non-canary id whose bucket lands in `all`.
    let cohorts = s.m.cohorts().clone();
    let late = (0..1000)
        .map(|i| format!("agt-late-{i}"))
        .find(|n| cohorts.wave_of(n, &labels("ring=stable")) == Some(3))
        .unwrap();
    s.send(Event::AgentJoined { agent: id(&late), labels: labels("ring=stable") });
    assert_eq!(s.m.wave_of(&id(&late)), Some("all"));
    assert!(!s.plans.contains_key(&id(&late)), "its wave has not started");
    s.send(Event::AgentJoined { agent: id("agt-late-canary"), labels: labels("ring=canary") });
    assert!(s.plans.contains_key(&id("agt-late-canary")), "the canary wave is running: plan at once");
}

#[test]
fn a_release_without_rollout_goes_to_everyone_in_one_wave() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notes-app/releases/2026.11.0");
    let mut release = rewind_shared::Release::load(&dir).unwrap();
    release.rollout = None;
    let sp = rewind_rollout::RolloutSpec::from_release(&release);
    assert_eq!(sp.rollout, rewind_rollout::default_rollout());
    assert_eq!((sp.rollout.waves[0].name.as_str(), sp.rollout.waves[0].percent), ("all", Some(100.0)));
    assert_eq!(sp.triggers, release.triggers);
    assert_eq!((sp.rollout.max_failure_ratio, sp.rollout.min_sample, sp.rollout.auto_rollback), (0.02, 20, true));
    assert_eq!(sp.rollout.report_timeout.as_secs(), 1800);
    let mut s = Sim::start(sp, fleet20());
    assert_eq!(s.planned().len(), 20);
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "done");
    assert!(matches!(s.m.state(), State::Done));
}

#[test]
fn an_agent_back_after_the_plan_expired_stays_pending() {
    let mut agents = fleet(4);
    agents[0].online = false;
    let late = agents[0].id.clone();
    let sp = spec(vec![wave("all", None, Some(100.0), 0, false)], 0.02, 3).with_plan_expiry(24 * 60 * MIN);
    let mut s = Sim::start(sp, agents);
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "done");
    s.advance(24 * 60 * MIN);
    s.send(Event::AgentOnline { agent: late.clone() });
    assert!(!s.plans.contains_key(&late), "an expired plan is never sent");
    assert_eq!(s.m.status().agents.iter().find(|a| a.id == late.as_str()).unwrap().outcome, "pending");
}

#[test]
fn a_scoped_rollback_reverts_only_its_scope_and_stops_the_rollout() {
    let waves = vec![wave("canary", Some("ring=canary"), None, 0, false), wave("rest", None, Some(100.0), 60, false)];
    let mut s = Sim::start(spec(waves, 0.5, 5), fleet20());
    s.answer_all(|_| Some(Outcome::Applied));
    assert_eq!(s.state(), "baking");
    let canaries = s.wave_agents("canary");

    let e = s
        .try_send(Event::Rollback {
            actor: "ops".into(),
            reason: "x".into(),
            scope: Scope::Wave { name: "beta".into() },
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "rollout notes@7: no wave beta; its waves are canary, rest");
    let e = s
        .try_send(Event::Rollback {
            actor: "ops".into(),
            reason: "x".into(),
            scope: Scope::Agents { agents: vec![id("agt-nope")] },
        })
        .unwrap_err();
    assert!(matches!(e, RolloutError::UnknownAgent { .. }));

    s.send(Event::Rollback {
        actor: "ops".into(),
        reason: "canary complaints".into(),
        scope: Scope::Wave { name: "canary".into() },
    });
    assert_eq!(s.rollback_inbox.iter().cloned().collect::<BTreeSet<_>>(), canaries, "only the canary wave");
    s.answer_all(|_| None);
    assert_eq!(s.state(), "halted");
    let st = s.m.status();
    assert!(st.reason.as_deref().unwrap().starts_with("partial rollback (wave canary) proven on 3 agent(s)"), "{st:?}");
    assert_eq!((st.waves[0].rolled_back, st.waves[1].rolled_back), (3, 0));
    // The same scope twice is refused; widening to one more agent works.
    assert!(
        s.try_send(Event::Rollback {
            actor: "ops".into(),
            reason: "again".into(),
            scope: Scope::Wave { name: "canary".into() }
        })
        .is_err()
    );
    let other = s.wave_agents("rest").into_iter().next().unwrap();
    s.send(Event::Rollback {
        actor: "ops".into(),
        reason: "one more".into(),
        scope: Scope::Agents { agents: vec![other.clone()] },
    });
    assert_eq!(s.rollback_inbox, vec![other]);
    s.answer_all(|_| None);
    assert_eq!(s.state(), "halted");
    // Then the whole fleet: the remaining 16 get it, and only then rolled_back.
    s.send(Event::Rollback { actor: "ops".into(), reason: "all of it".into(), scope: Scope::Fleet });
    assert_eq!(s.rollback_inbox.len(), 16);
    s.answer_all(|_| None);
    assert_eq!(s.state(), "rolled_back");
    assert_eq!(s.rollbacks.len(), 20);
}

#[test]
fn a_cohort_scope_selects_by_labels() {
    let mut s = Sim::start(spec(vec![wave("all", None, Some(100.0), 60, false)], 0.5, 5), fleet20());
    s.answer_all(|_| Some(Outcome::Applied));
    let selector = rewind_rollout::Selector::parse("os=windows,ring!=canary").unwrap();
    s.send(Event::Rollback { actor: "ops".into(), reason: "windows only".into(), scope: Scope::Cohort { selector } });
    let expected: BTreeSet<_> = (0..20).filter(|i| i % 2 == 1 && *i >= 3).map(|i| id(&format!("agt-{i:02}"))).collect();
    assert_eq!(s.rollback_inbox.iter().cloned().collect::<BTreeSet<_>>(), expected);
}

/// A fleet of 2,000 through every wave and a halt in the last one: the
/// counts add up and the rollback reaches exactly the endpoints that
/// applied.
#[test]
fn two_thousand_agents_through_every_wave_then_a_halt() {
    let mut agents = fleet(2000);
    for a in agents.iter_mut().take(50) {
        a.labels = labels("ring=canary");
    }
    let mut sp = example_spec();
    sp.rollout.min_sample = 100;
    let mut s = Sim::start(sp, agents);
    s.answer_all(|_| Some(Outcome::Applied));
    s.advance(15 * MIN);
    s.send(Event::Approve { wave: "broad".into(), actor: "bob".into() });
    s.answer_all(|_| Some(Outcome::Applied));
    s.advance(60 * MIN);
    assert_eq!(s.state(), "running");
    let last: Vec<_> = s.inbox.clone();
    s.inbox.clear();
    // In the last wave, every 10th endpoint fails: 10 % > 2 % once 100 reported.
    let mut halted_at = None;
    for (i, a) in last.iter().enumerate() {
        s.report(a, if i % 10 == 9 { Outcome::Failed } else { Outcome::Applied });
        if s.state() != "running" {
            halted_at = Some(i + 1);
            break;
        }
    }
    assert_eq!(halted_at, Some(100), "judged exactly at min_sample");
    let applied = s.m.agents().values().filter(|r| r.outcome == rewind_rollout::machine::ApplyOutcome::Applied).count();
    assert_eq!(s.rollback_inbox.len(), applied);
    s.answer_all(|_| None);
    // The last wave's plans still in flight keep it rolling back: one that
    // applies now would need the rollback too.
    assert_eq!(s.state(), "rolling_back");
    for a in &last[100..] {
        s.report(a, Outcome::Refused);
    }
    assert_eq!(s.state(), "rolled_back");
    assert_eq!(s.rollbacks.len(), applied);
}
