//! A good release through its waves, end to end with a real coordinator
//! and six real agents (`ring=canary` ×2, `ring=early` ×2, `ring=main` ×2):
//! a second rollout refused without --supersede; pause holds the next wave
//! past its bake, resume releases it; the last wave waits for an approver
//! (an operator token is refused); the coordinator is killed (-9) while
//! awaiting approval and resumes with the same state and without sending
//! any plan twice; an agent offline during its wave is counted pending, never
//! success, and gets its plan when it returns; then a manual rollback of one
//! agent (scope agent:ID) proven by digest while the others keep the
//! release, a granularity the fleet path does not run yet refused with
//! what to do, and the fleet rollback of the rest.

mod fleet_rollout_common;

use std::time::Duration;

use fleet_rollout_common::{Fleet, agent, ok, wave};

const WAVES: &str = r#"[rollout]
waves = [
  { name = "canary", selector = "ring=canary", bake = "2s" },
  { name = "early", selector = "ring=early", bake = "1s" },
  { name = "rest", percent = 100, approval = true },
]
report_timeout = "120s"
auto_rollback = true
"#;

#[test]
fn a_release_goes_through_pause_approval_restart_and_an_offline_agent_then_rolls_back_by_scope() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("canary", 2);
    fleet.add("early", 2);
    fleet.add("main", 2);
    fleet.wait_connected();
    let (canary, early, main) = (fleet.ids("canary"), fleet.ids("early"), fleet.ids("main"));
    let approver = fleet.operator("ann", "approver");
    let operator = fleet.operator("otto", "operator");

    fleet.bundle("2026.11.0", WAVES, &|t| t, true);
    let next = |t: String| {
        t.replace("version = \"2026.11.0\"", "version = \"2026.11.2\"").replace("sequence = 7", "sequence = 9")
    };
    fleet.bundle("2026.11.0", WAVES, &next, true);

    // The last main agent is offline for the whole rollout until we say.
    let offline = main[1].clone();
    fleet.endpoints.iter_mut().find(|e| e.id == offline).unwrap().stop();

    let r = fleet.ctl_as(&operator, &["rollout", "start", "notes", "2026.11.0", "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 6, "{r:?}");
    // Paused at once: the canaries have their plans, nothing more goes out.
    let r = fleet.ctl_as(&operator, &["rollout", "pause", "notes", "--json"]);
    ok(&r);
    assert_eq!(r.json()["state"], "paused", "{r:?}");

    // One active rollout per product.
    let r = fleet.ctl(&["rollout", "start", "notes", "2026.11.2"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--supersede") && r.stderr.contains("notes@7"), "{r:?}");

    // Longer than the canary bake: still paused, no plan for the early wave.
    let s = fleet.wait_status("canaries reported while paused", Duration::from_secs(60), |s| {
        wave(s, "canary")["succeeded"] == 2
    });
    std::thread::sleep(Duration::from_secs(4));
    let s2 = fleet.status();
    assert_eq!(s2["state"], "paused", "{s:#}\n{s2:#}");
    assert!(fleet.deliveries().iter().all(|(a, _, _)| canary.contains(a)), "{:?}", fleet.deliveries());
    let r = fleet.ctl_as(&operator, &["rollout", "resume", "notes"]);
    ok(&r);
    let r = fleet.ctl_as(&operator, &["rollout", "resume", "notes"]);
    assert_eq!(r.code, 2, "resuming a rollout that is not paused changes nothing: {r:?}");

    let s =
        fleet.wait_status("the rest awaits approval", Duration::from_secs(90), |s| s["state"] == "awaiting_approval");
    assert_eq!(s["awaiting_approval"], "rest", "{s:#}");
    assert_eq!(
        (wave(&s, "canary")["state"].as_str(), wave(&s, "early")["state"].as_str()),
        (Some("done"), Some("done")),
        "{s:#}"
    );
    assert_eq!(wave(&s, "early")["succeeded"], 2, "{s:#}");

    // kill -9 of the coordinator while awaiting approval; it resumes.
    fleet.kill_coordinator();
    fleet.start_coordinator();
    let after = fleet.status();
    assert_eq!(after["state"], "awaiting_approval", "{after:#}");
    assert_eq!(after["waves"], s["waves"], "counts survive the restart");
    fleet.wait_connected();

    // Approval needs an approver.
    let r = fleet.ctl_as(&operator, &["rollout", "approve", "notes", "rest"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("PermissionDenied") || r.stderr.to_lowercase().contains("role"), "{r:?}");
    let r = fleet.ctl_as(&approver, &["rollout", "approve", "notes", "early"]);
    assert_eq!(r.code, 2, "approving the wrong wave: {r:?}");
    ok(&fleet.ctl_as(&approver, &["rollout", "approve", "notes", "rest"]));

    // The offline agent is pending, never success; the wave waits for it.
    fleet.wait_status("the online main agent applied", Duration::from_secs(60), |s| {
        agent(s, &main[0])["outcome"] == "applied"
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = fleet.status();
    assert_eq!(s["state"], "running", "{s:#}");
    assert_eq!(agent(&s, &offline)["outcome"], "pending", "{s:#}");
    assert_eq!(agent(&s, &offline)["online"], false, "{s:#}");
    assert_eq!(
        (wave(&s, "rest")["succeeded"].as_u64(), wave(&s, "rest")["pending"].as_u64()),
        (Some(1), Some(1)),
        "{s:#}"
    );
    fleet.endpoints.iter_mut().find(|e| e.id == offline).unwrap().start();
    let s = fleet.wait_status("done once it returned", Duration::from_secs(90), |s| s["state"] == "done");
    assert!(s["agents"].as_array().unwrap().iter().all(|a| a["outcome"] == "applied"), "{s:#}");

    // Never a plan twice, across pause, restart and reconnects.
    let deliveries = fleet.deliveries();
    for e in &fleet.endpoints {
        let n = deliveries.iter().filter(|(a, k, _)| a == &e.id && k == "apply").count();
        assert_eq!(n, 1, "{} got one apply plan: {deliveries:?}", e.id);
        assert!(!e.at_start(), "{} applied", e.id);
    }

    // Manual rollback of one agent.
    let one = early[0].clone();
    let r = fleet.ctl(&["rollback", "notes", "--scope", &format!("agent:{one}"), "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 1, "{r:?}");
    let s = fleet.wait_status("one agent rolled back", Duration::from_secs(60), |s| {
        s["state"] == "halted" && agent(s, &one)["rollback"] == "proven"
    });
    assert!(s["reason"].as_str().unwrap().contains("partial rollback"), "{s:#}");
    assert!(fleet.endpoints.iter().find(|e| e.id == one).unwrap().at_start(), "proven back to its start digests");
    for e in fleet.endpoints.iter().filter(|e| e.id != one) {
        assert_eq!(agent(&s, &e.id)["outcome"], "applied", "{s:#}");
        assert!(!e.at_start(), "{} keeps the release", e.id);
    }
    // A part the bundle has no plan for is refused, naming the ones it has
    // (tests/tests/fleet_partial.rs rolls parts back).
    let r = fleet.ctl(&["rollback", "notes", "--granularity", "flag", "--subject", "old_checkout"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("new_checkout"), "{r:?}");
    let r = fleet.ctl(&["rollback", "notes", "--scope", "planet:earth"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--scope"), "{r:?}");

    // The rest of the fleet.
    ok(&fleet.ctl(&["rollback", "notes"]));
    let s = fleet.wait_status("rolled back, verified", Duration::from_secs(90), |s| s["state"] == "rolled_back");
    assert!(s["summary"].as_str().unwrap().starts_with("rolled back, verified: 6"), "{s:#}");
    for e in &fleet.endpoints {
        assert!(e.at_start(), "{} is back at its start digests", e.id);
    }
    let rollbacks = fleet.deliveries().iter().filter(|(_, k, _)| k == "rollback").count();
    assert_eq!(rollbacks, 6, "one rollback plan per agent");

    let kinds: Vec<String> =
        fleet.audit().into_iter().filter(|(k, _, _)| k.starts_with("rollout.")).map(|(k, _, _)| k).collect();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    for (k, n) in [
        ("rollout.started", 1),
        ("rollout.wave_started", 3),
        ("rollout.paused", 1),
        ("rollout.resumed", 1),
        ("rollout.awaiting_approval", 1),
        ("rollout.approved", 1),
        ("rollout.done", 1),
        ("rollout.rolled_back", 1),
    ] {
        assert_eq!(count(k), n, "{k}: {kinds:?}");
    }
    assert!(count("rollout.baking") >= 2 && count("rollout.rolling_back") == 2, "{kinds:?}");
}
