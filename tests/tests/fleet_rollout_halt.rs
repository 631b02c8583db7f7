//! Halts, end to end with a real coordinator and six real agents (two
//! `ring=canary`, four `ring=main`):
//!
//! 1. A release whose verify fails (examples/notes-app 2026.11.1-bad, given
//!    a canary wave): the first canary's failed verify halts the rollout at
//!    once, inside the canary wave; no agent outside it ever receives the
//!    apply plan; each canary reverted itself, so nothing needs a rollback
//!    plan and the rollout ends rolled back with every canary at its start
//!    digest.
//! 2. A good release (2026.11.0): both canaries apply it; during the
//!    canary bake one canary's database is changed out of band; the digest
//!    drift against the rehearsal's prediction halts at once, the
//!    pre-signed rollback goes to exactly the two canaries that applied; the
//!    untouched one proves its rollback by digest, the changed one cannot
//!    (its start state is not the plan's) and is listed as needing a human
//!    with the commands to run; `rollout watch` exits 3. The halt-to-rollback
//!    time is printed.

mod fleet_rollout_common;

use std::time::Duration;

use fleet_rollout_common::{Fleet, agent, ms_between, ok, wave};

const CANARY_THEN_ALL: &str = r#"[rollout]
waves = [
  { name = "canary", selector = "ring=canary", bake = "30s" },
  { name = "all", percent = 100 },
]
report_timeout = "60s"
auto_rollback = true
"#;

#[test]
fn a_failing_canary_halts_and_a_drifting_canary_is_rolled_back_with_proofs() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("canary", 2);
    fleet.add("main", 4);
    fleet.wait_connected();
    let canaries = fleet.ids("canary");
    let main = fleet.ids("main");

    // 1. The bad release: its rehearsal fails, so it is built without samples.
    // It names both of the endpoints' targets: the agent daemon passes every
    // target of the product and refuses a release that lacks one (without a
    // report, which the coordinator would count as a failure after
    // report_timeout).
    let both_targets = |t: String| {
        t.replacen(
            "[[target]]\nname = \"notes\"\n",
            "[[target]]\nname = \"notes\"\n\n[[target]]\nname = \"settings\"\n",
            1,
        )
    };
    fleet.bundle("2026.11.1-bad", CANARY_THEN_ALL, &both_targets, false);
    let r = fleet.ctl(&["rollout", "start", "notes", "2026.11.1", "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 6, "{r:?}");
    assert_eq!(r.json()["rollout"], "notes@8", "{r:?}");
    let s = fleet.wait_status("the bad release rolled back", Duration::from_secs(90), |s| {
        s["rollout"] == "notes@8" && s["state"] == "rolled_back"
    });
    assert!(s["reason"].is_null() || s["reason"].as_str().is_some(), "{s:#}");
    assert_eq!(wave(&s, "canary")["failed"], 2, "{s:#}");
    assert_eq!(wave(&s, "all")["state"], "pending", "the next wave never started: {s:#}");
    for id in &canaries {
        assert_eq!(agent(&s, id)["outcome"], "failed", "{s:#}");
    }
    for id in &main {
        assert_eq!(agent(&s, id)["outcome"], "pending", "{s:#}");
    }
    // Only canaries were ever sent the bad plan; their data is as it was.
    let deliveries = fleet.deliveries();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert!(deliveries.iter().all(|(a, k, _)| canaries.contains(a) && k == "apply"), "{deliveries:?}");
    for e in &fleet.endpoints {
        assert!(e.at_start(), "{} is at its start digests", e.dir.display());
    }
    let audit = fleet.audit();
    let halted: Vec<_> = audit.iter().filter(|(k, _, p)| k == "rollout.halted" && p["rollout"] == "notes@8").collect();
    assert_eq!(halted.len(), 1, "{audit:?}");
    let reason = halted[0].2["reason"].as_str().unwrap();
    assert!(reason.contains("failed verify") && halted[0].2["wave"] == "canary", "{reason}\n{:#?}", fleet.results());
    assert_eq!(halted[0].2["actor"], "rewind-coordinator");

    // 2. The good release, rehearsed on samples (predicted digests).
    fleet.bundle("2026.11.0", CANARY_THEN_ALL, &|t| t, true);
    ok(&fleet.ctl(&["rollout", "start", "notes", "2026.11.0"]));
    let s = fleet.wait_status("both canaries applied, baking", Duration::from_secs(90), |s| {
        s["rollout"] == "notes@7" && s["state"] == "baking"
    });
    assert_eq!(wave(&s, "canary")["succeeded"], 2, "{s:#}");
    // Wait for the canaries' inventories to show the release, then change
    // one canary's schema out of band.
    eventually_inventory(&fleet, &canaries);
    let tampered = &fleet.endpoints.iter().find(|e| e.id == canaries[0]).unwrap();
    rusqlite::Connection::open(&tampered.notes)
        .unwrap()
        .execute_batch("ALTER TABLE notes ADD COLUMN sneaky TEXT")
        .unwrap();
    let s = fleet.wait_status("halted on drift, rollback settled", Duration::from_secs(60), |s| {
        s["rollout"] == "notes@7"
            && s["state"] == "halted"
            && s["needs_human"].as_array().is_some_and(|h| !h.is_empty())
    });
    let good = &canaries[1];
    assert_eq!(agent(&s, good)["outcome"], "rolled_back", "{s:#}");
    assert_eq!(agent(&s, good)["rollback"], "proven", "{s:#}");
    assert_eq!(agent(&s, &canaries[0])["rollback"], "failed", "{s:#}");
    let human = &s["needs_human"][0];
    assert_eq!(human["agent"], canaries[0].as_str(), "{s:#}");
    assert!(
        human["commands"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().contains("rollback --bundle")),
        "{s:#}"
    );
    assert!(s["summary"].as_str().unwrap().contains("need a human"), "{s:#}");
    let proven = fleet.endpoints.iter().find(|e| &e.id == good).unwrap();
    assert!(proven.at_start(), "the canary that proved its rollback is back at its start digests");
    for id in &main {
        assert_eq!(agent(&s, id)["outcome"], "pending", "{s:#}");
    }
    // Exactly the endpoints that applied got the rollback; the others never
    // got a plan of either release.
    let deliveries = fleet.deliveries();
    let rollbacks: Vec<&String> = deliveries.iter().filter(|(_, k, _)| k == "rollback").map(|(a, _, _)| a).collect();
    assert_eq!(rollbacks.len(), 2, "{deliveries:?}");
    assert!(canaries.iter().all(|c| rollbacks.contains(&c)), "{deliveries:?}");
    assert!(deliveries.iter().all(|(a, _, _)| !main.contains(a)), "{deliveries:?}");

    // The halt decision and the rollback proof, from the audit log.
    let audit = fleet.audit();
    let halt = audit.iter().find(|(k, _, p)| k == "rollout.halted" && p["rollout"] == "notes@7").expect("halt entry");
    assert!(halt.2["reason"].as_str().unwrap().contains("digest drift"), "{halt:?}");
    let sent = audit.iter().find(|(k, _, p)| k == "rollback.sent" && p["rollout"] == "notes@7").expect("sent entry");
    let proof = audit
        .iter()
        .find(|(k, _, p)| k == "result" && p["agent"] == good.as_str() && p["status"] == "rolled_back")
        .expect("the rollback result");
    let to_sent = ms_between(&halt.1, &sent.1);
    let to_proof = ms_between(&halt.1, &proof.1);
    println!("halt → rollback plans queued and pushed: {to_sent} ms; halt → verified rollback result: {to_proof} ms");
    assert!(to_sent <= 1000, "the rollback went out in the halt's own step: {to_sent} ms");

    // watch ends at once on a halted rollout, exit 3: a human is needed.
    let r = fleet.ctl(&["rollout", "watch", "notes"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("NEEDS A HUMAN") && r.stdout.contains(&canaries[0]), "{r:?}");
    // On a terminal (a pseudo-terminal from util-linux `script`): a
    // progress bar per wave instead of plain lines, the same exit code.
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("{} rollout watch notes", rewind_tests::bin("rewindctl").display()), "/dev/null"])
        .env("REWIND_COORDINATOR", format!("https://127.0.0.1:{}", fleet.port))
        .env("REWIND_CA", fleet.state.join("ca.pem"))
        .env("REWIND_TOKEN_FILE", fleet.state.join("admin.token"))
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let bar = text.lines().find(|l| l.contains("canary") && l.contains('[') && l.contains(']') && l.contains("/2"));
    assert!(bar.is_some(), "a progress bar for the canary wave (2 agents): {text}");
    assert!(text.contains("NEEDS A HUMAN"), "{text}");
}

fn eventually_inventory(fleet: &Fleet, ids: &[String]) {
    rewind_tests::eventually("canary inventories show sequence 7", Duration::from_secs(30), || {
        let a = fleet.ctl(&["agents", "--json"]).json();
        let a = a.as_array()?.clone();
        ids.iter()
            .all(|id| {
                a.iter().any(|x| {
                    x["id"] == id.as_str()
                        && x["products"].as_array().is_some_and(|p| p.iter().any(|p| p["sequence"] == 7))
                })
            })
            .then_some(())
    });
}
