//! The failure-ratio halt rule (docs/rollouts.md §3–§4), end to end with a
//! real coordinator and ten real agents in one 100 % wave with
//! `max_failure_ratio = 0.3`, `min_sample = 7` and `auto_rollback`.
//!
//! Failures are ordinary ones, not integrity signals: each release carries
//! an `after-apply` `[[check]]` that passes unless the endpoint's settings
//! database holds a marker row for that release. The test writes the marker
//! into chosen endpoints beforehand (data only: their schema digests, which
//! the start-state and drift checks compare, stay as they were), so exactly
//! those endpoints revert the release themselves and report `failed`.
//! The seeded endpoints are the only ones online when a rollout starts, so
//! their failures are the first reports of the wave and the order of all
//! reports is known:
//!
//! 1. 2026.11.0 (sequence 7) seeded to fail on 2 of 10. After 2 reports
//!    (2/2 failed) and after 6 (2/6 = 0.33, above the threshold) it keeps
//!    running, because fewer than `min_sample` reported; from the 7th
//!    report on the ratio is at most 2/7 = 0.29, so it never halts and ends
//!    `done` with the other 8 applied and the 2 seeded ones back at their
//!    digests from before the rollout.
//! 2. 2026.12.0 (sequence 8, a migration of its own) seeded to fail on 4 of
//!    10. With 4, 5 and 6 reports (ratios 1.0, 0.8, 0.67) it keeps running;
//!    the 7th report (4/7 = 0.57) halts it, and the audit log shows the
//!    halt right after that 7th `result`, with the reason naming the ratio.
//!    The automatic rollback goes to exactly the 3 endpoints that applied;
//!    each proves it by digest (`rolled_back`), the 3 endpoints still
//!    offline never get a plan of the release, and every endpoint ends at
//!    the digests it had before the rollout.
//!
//! Why `min_sample = 7` and not 6: with 2 failures among the first 6
//! reports, 2/6 = 0.33 is above 0.3, so a wave of 10 with 2 failing
//! endpoints halts under `min_sample = 6` whenever both failures come early
//! — which is what the rule says, and what this test makes happen.

mod fleet_rollout_common;

use std::time::Duration;

use fleet_rollout_common::{Endpoint, Fleet, NOTE_TAGS, agent, ok, wave};
use rewind_tests::eventually;
use serde_json::Value;

const MIN_SAMPLE: usize = 7;
const MAX_FAILURE_RATIO: f64 = 0.3;

const ONE_WAVE: &str = r#"[rollout]
waves = [{ name = "all", percent = 100 }]
max_failure_ratio = 0.3
min_sample = 7
report_timeout = "120s"
auto_rollback = true
"#;

/// The settings key whose presence makes `sequence` fail its after-apply
/// check on an endpoint.
fn marker(sequence: u64) -> String {
    format!("ratio-test.fail@{sequence}")
}

/// An after-apply check that fails exactly on the endpoints holding
/// `marker(sequence)`. Its name and message must not mention `verify.sql`,
/// which would make the failure an integrity signal.
fn seeded_check(sequence: u64) -> String {
    format!(
        "\n[[check]]\nname = \"no seeded failure\"\ntarget = \"settings\"\n\
         sql = \"SELECT count(*) FROM settings WHERE key = '{}'\"\nexpect = \"= 0\"\n",
        marker(sequence)
    )
}

/// Makes `e` fail the after-apply check of release `sequence`: a data row,
/// not a schema change.
fn seed_failure(e: &Endpoint, sequence: u64) {
    rusqlite::Connection::open(&e.settings)
        .unwrap()
        .execute("INSERT INTO settings(key, value) VALUES (?1, 'fail')", [marker(sequence)])
        .unwrap();
}

/// Stops the daemons of endpoints `range` and waits until the coordinator
/// shows them offline, so that no plan goes to a dying connection.
fn take_offline(fleet: &mut Fleet, range: std::ops::Range<usize>) {
    for e in &mut fleet.endpoints[range.clone()] {
        e.stop();
    }
    let ids: Vec<String> = fleet.endpoints[range].iter().map(|e| e.id.clone()).collect();
    eventually("stopped agents shown offline", Duration::from_secs(30), || {
        let a = fleet.ctl(&["agents", "--json"]).json();
        let a = a.as_array()?;
        ids.iter().all(|id| a.iter().any(|x| x["id"] == id.as_str() && x["connected"] == false)).then_some(())
    });
}

/// The `status` of each apply `result` entry of `sequence` in `audit`, in order.
fn apply_results(audit: &[(String, String, Value)], sequence: u64) -> Vec<(String, String)> {
    audit
        .iter()
        .filter(|(k, _, p)| k == "result" && p["kind"] == "apply" && p["sequence"] == sequence)
        .map(|(_, _, p)| (p["agent"].as_str().unwrap().to_string(), p["status"].as_str().unwrap().to_string()))
        .collect()
}

/// Failed share of the first `n` results.
fn ratio(results: &[(String, String)], n: usize) -> f64 {
    results[..n].iter().filter(|(_, s)| s != "applied").count() as f64 / n as f64
}

/// The ordinary (not integrity) failure of a seeded endpoint: its signed
/// report says the check failed and the release was reverted.
fn assert_check_failure(fleet: &Fleet, id: &str, sequence: u64) {
    let all = fleet.reports();
    let (_, p) = all
        .iter()
        .find(|(a, p)| a == id && p["kind"] == "apply" && p["sequence"] == sequence)
        .unwrap_or_else(|| panic!("an apply report of {id} for {sequence}: {all:#?}"));
    let message = p["message"].as_str().unwrap();
    assert_eq!((p["status"].as_str(), p["state"].as_str()), (Some("failed"), Some("reverted")), "{p:#}");
    assert!(message.contains("no seeded failure") && !message.contains("verify.sql"), "{p:#}");
}

#[test]
fn the_failure_ratio_halts_on_the_report_that_crosses_it_once_min_sample_reported() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("main", 10);
    fleet.wait_connected();
    let ids = fleet.ids("main");
    let id = |i: usize| ids[i].as_str();
    fleet.bundle("2026.11.0", ONE_WAVE, &|t| t + &seeded_check(7), true);
    // 2026.12.0, sequence 8: a migration of its own on the notes database
    // and the seeded check; the endpoints start it from two different
    // states (applied 7 or not), hence no samples.
    fleet.later_release("2026.12.0", 8, &[NOTE_TAGS], &seeded_check(8), ONE_WAVE);

    // 1. Sequence 7 fails on endpoints 0 and 1, which report first.
    for e in &fleet.endpoints[..2] {
        seed_failure(e, 7);
    }
    take_offline(&mut fleet, 2..10);
    let before7 = fleet.digests();
    let r = fleet.ctl(&["rollout", "start", "notes", "2026.11.0", "--json"]);
    ok(&r);
    assert_eq!((r.json()["rollout"].as_str(), r.json()["agents"].as_u64()), (Some("notes@7"), Some(10)), "{r:?}");
    let s = fleet.wait_status("both seeded endpoints failed", Duration::from_secs(60), |s| {
        s["rollout"] == "notes@7" && wave(s, "all")["failed"] == 2
    });
    assert_eq!(s["state"], "running", "2 of 2 failed, but fewer than min_sample reported: {s:#}");
    for i in 0..2 {
        assert_eq!(agent(&s, id(i))["outcome"], "failed", "{s:#}");
        assert_check_failure(&fleet, id(i), 7);
    }
    for e in &mut fleet.endpoints[2..] {
        e.start();
    }
    let s = fleet.wait_status("notes@7 done", Duration::from_secs(90), |s| {
        s["rollout"] == "notes@7"
            && matches!(s["state"].as_str(), Some("done" | "halted" | "rolling_back" | "rolled_back"))
    });
    assert_eq!(s["state"], "done", "2 of 10 failed (0.2) never halts with min_sample 7: {s:#}");
    let w = wave(&s, "all");
    assert_eq!((w["succeeded"].as_u64(), w["failed"].as_u64()), (Some(8), Some(2)), "{s:#}");
    let after7 = fleet.digests();
    for i in 0..10 {
        if i < 2 {
            assert_eq!(after7[i], before7[i], "{} reverted itself to its digests before the rollout", id(i));
        } else {
            assert_eq!(agent(&s, id(i))["outcome"], "applied", "{s:#}");
            assert!(after7[i].0 != before7[i].0 && after7[i].1 != before7[i].1, "{} applied 7", id(i));
        }
    }
    let audit = fleet.audit();
    let results = apply_results(&audit, 7);
    assert_eq!(results.len(), 10, "{results:?}");
    // The two failures were the first reports: judged before the sample was
    // met, the 6th report (2/6) would have halted the rollout.
    assert!(results[..2].iter().all(|(_, s)| s == "failed"), "{results:?}");
    assert!(ratio(&results, MIN_SAMPLE - 1) > MAX_FAILURE_RATIO, "{results:?}");
    assert!((MIN_SAMPLE..=10).all(|n| ratio(&results, n) <= MAX_FAILURE_RATIO), "{results:?}");
    assert!(!audit.iter().any(|(k, _, p)| k == "rollout.halted" && p["rollout"] == "notes@7"), "{audit:#?}");

    // 2. Sequence 8 fails on endpoints 0–3, which report first; then the
    // others come online one at a time.
    for e in &fleet.endpoints[..4] {
        seed_failure(e, 8);
    }
    take_offline(&mut fleet, 4..10);
    let before8 = fleet.digests();
    let r = fleet.ctl(&["rollout", "start", "notes", "2026.12.0", "--json"]);
    ok(&r);
    assert_eq!((r.json()["rollout"].as_str(), r.json()["agents"].as_u64()), (Some("notes@8"), Some(10)), "{r:?}");
    let s = fleet.wait_status("the four seeded endpoints failed", Duration::from_secs(60), |s| {
        s["rollout"] == "notes@8" && wave(s, "all")["failed"] == 4
    });
    assert_eq!(s["state"], "running", "4 of 4 failed, but fewer than min_sample reported: {s:#}");
    for i in 0..4 {
        assert_check_failure(&fleet, id(i), 8);
    }
    for i in 4..6 {
        fleet.endpoints[i].start();
        let s = fleet.wait_status(&format!("{} applied 8", id(i)), Duration::from_secs(60), |s| {
            s["rollout"] == "notes@8" && agent(s, id(i))["outcome"] != "pending"
        });
        assert_eq!(agent(&s, id(i))["outcome"], "applied", "{s:#}");
        assert_eq!(s["state"], "running", "4 of {} failed, fewer than min_sample reported: {s:#}", i + 1);
    }
    fleet.endpoints[6].start();
    let s = fleet.wait_status("notes@8 rolled back", Duration::from_secs(60), |s| {
        s["rollout"] == "notes@8" && s["state"] == "rolled_back"
    });
    // The wave's counts keep the apply outcomes (3 succeeded) next to the
    // rollbacks proven (3).
    let w = wave(&s, "all");
    assert_eq!(
        (w["succeeded"].as_u64(), w["failed"].as_u64(), w["pending"].as_u64(), w["rolled_back"].as_u64()),
        (Some(3), Some(4), Some(3), Some(3)),
        "{s:#}"
    );
    for i in 0..10 {
        let a = agent(&s, id(i));
        match i {
            0..4 => assert_eq!(a["outcome"], "failed", "{s:#}"),
            4..7 => assert_eq!(
                (a["outcome"].as_str(), a["rollback"].as_str()),
                (Some("rolled_back"), Some("proven")),
                "{s:#}"
            ),
            _ => assert_eq!((a["outcome"].as_str(), a["plan_sent"].as_bool()), (Some("pending"), Some(false)), "{s:#}"),
        }
    }

    // The halt, from the audit log: right after the 7th result of the wave,
    // at 4 failed of 7, and at no earlier result.
    let audit = fleet.audit();
    let halts: Vec<usize> = audit
        .iter()
        .enumerate()
        .filter(|(_, (k, _, p))| k == "rollout.halted" && p["rollout"] == "notes@8")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(halts.len(), 1, "{audit:#?}");
    let (_, _, halt) = &audit[halts[0]];
    assert_eq!(
        halt["reason"], "wave all: failure ratio 0.5714 (4 failed of 7 reported) is above max_failure_ratio 0.3",
        "{halt:#}"
    );
    assert_eq!((halt["actor"].as_str(), halt["wave"].as_str()), (Some("rewind-coordinator"), Some("all")), "{halt:#}");
    let before_halt = apply_results(&audit[..halts[0]], 8);
    assert_eq!(before_halt.len(), MIN_SAMPLE, "the halt followed the 7th result: {before_halt:?}");
    assert_eq!(before_halt.last().unwrap().0, id(6), "{before_halt:?}");
    assert!(ratio(&before_halt, MIN_SAMPLE) > MAX_FAILURE_RATIO, "{before_halt:?}");
    // Every earlier prefix was above the ratio too; only the sample held the halt back.
    assert!((1..MIN_SAMPLE).all(|n| ratio(&before_halt, n) > MAX_FAILURE_RATIO), "{before_halt:?}");
    let sent = audit.iter().position(|(k, _, p)| k == "rollback.sent" && p["rollout"] == "notes@8");
    assert!(sent.is_some_and(|i| i > halts[0]), "{audit:#?}");

    // The rollback went to exactly the endpoints that applied, and each
    // proved it by digest; every endpoint is where it was before 8.
    let deliveries = fleet.deliveries();
    let mut rolled: Vec<&str> =
        deliveries.iter().filter(|(_, k, _)| k == "rollback").map(|(a, _, _)| a.as_str()).collect();
    rolled.sort_unstable();
    let mut applied: Vec<&str> = (4..7).map(id).collect();
    applied.sort_unstable();
    assert_eq!(rolled, applied, "{deliveries:?}");
    for i in 7..10 {
        let plans = deliveries.iter().filter(|(a, k, _)| a == id(i) && k == "apply").count();
        assert_eq!(plans, 1, "{} got only the plan of 7: {deliveries:?}", id(i));
    }
    let all = fleet.reports();
    for (id, (before, _)) in ids[4..7].iter().zip(&before8[4..7]) {
        // The release changed the notes database (a rollback that did
        // nothing could not pass the checks below)...
        let (_, p) = all
            .iter()
            .find(|(a, p)| a == id && p["kind"] == "apply" && p["sequence"] == 8)
            .unwrap_or_else(|| panic!("the apply report of {}: {all:#?}", id));
        let notes = p["targets"].as_array().unwrap().iter().find(|t| t["name"] == "notes").unwrap();
        assert!(notes["data_after"].is_string() && notes["data_after"] != before.as_str(), "{p:#}");
        // ...and the rollback brought it back, proven by digest.
        let (_, p) = all
            .iter()
            .find(|(a, p)| a == id && p["kind"] == "rollback" && p["sequence"] == 8)
            .unwrap_or_else(|| panic!("the rollback report of {}: {all:#?}", id));
        assert_eq!(p["status"], "rolled_back", "{p:#}");
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["proof"], "identical", "{p:#}");
        }
        let notes = p["targets"].as_array().unwrap().iter().find(|t| t["name"] == "notes").unwrap();
        assert_eq!(notes["data_after"], before.as_str(), "{p:#}");
    }
    assert_eq!(fleet.digests(), before8, "every endpoint back at its digests from before notes@8");
}
