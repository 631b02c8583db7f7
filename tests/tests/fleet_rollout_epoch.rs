//! Rolling back to an epoch over three releases, end to end with a real
//! coordinator and three real agents: the example release (sequence 7) and
//! two later releases with migrations of their own (8 adds a table to the
//! notes database, 9 a column to it and a row to the settings database)
//! each roll out to `done`; then `rewindctl rollback notes --to-sequence 7`
//! reverts 9, then 8, on every endpoint — latest first, each proven by
//! digest: the signed rollback report of 9 ends at the digests the
//! endpoint had after 8, the one of 8 at those after 7, and the database
//! files end exactly there, with the inventories back at sequence 7, the
//! flags as 7 left them, and the audit log holding the rollbacks of
//! notes@9 before those of notes@8.

mod fleet_rollout_common;

use std::path::Path;
use std::time::Duration;

use fleet_rollout_common::{Fleet, NOTE_TAGS, agent, ok};
use rewind_tests::eventually;
use serde_json::Value;

const ONE_WAVE: &str = r#"[rollout]
waves = [{ name = "all", percent = 100 }]
report_timeout = "120s"
auto_rollback = true
"#;

fn flags(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state/flags.json")).unwrap()).unwrap()
}

fn wait_inventories(fleet: &Fleet, sequence: u64) {
    eventually(&format!("inventories show sequence {sequence}"), Duration::from_secs(30), || {
        let a = fleet.ctl(&["agents", "--json"]).json();
        let a = a.as_array()?;
        (a.len() == fleet.endpoints.len() && a.iter().all(|x| x["products"][0]["sequence"] == sequence)).then_some(())
    });
}

/// Rolls `version` out to every agent and waits for `done`.
fn roll_out(fleet: &Fleet, version: &str, sequence: u64) {
    let rollout = format!("notes@{sequence}");
    ok(&fleet.ctl(&["rollout", "start", "notes", version]));
    let s = fleet.wait_status(&format!("{rollout} done"), Duration::from_secs(60), |s| {
        s["rollout"] == rollout.as_str() && s["state"] == "done"
    });
    for e in &fleet.endpoints {
        assert_eq!(agent(&s, &e.id)["outcome"], "applied", "{s:#}");
    }
    wait_inventories(fleet, sequence);
}

/// The target `name` of a signed report.
fn target<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["targets"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("{report:#}"))
}

#[test]
fn rollback_to_sequence_7_reverts_9_then_8_on_every_endpoint_proven_by_digest() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("main", 3);
    fleet.wait_connected();
    fleet.bundle("2026.11.0", ONE_WAVE, &|t| t, true);
    fleet.later_release("2026.12.0", 8, &[NOTE_TAGS], "", ONE_WAVE);
    fleet.later_release(
        "2026.12.1",
        9,
        &[
            (
                "0005_notes_pinned",
                "notes",
                "ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;\nUPDATE notes SET pinned = 1 WHERE id <= 3;",
                "ALTER TABLE notes DROP COLUMN pinned;",
                "SELECT count(*) = 3 FROM notes WHERE pinned = 1;",
            ),
            (
                "0006_sync_interval",
                "settings",
                "INSERT INTO settings(key, value) VALUES ('sync_interval', '15m');",
                "DELETE FROM settings WHERE key = 'sync_interval';",
                "SELECT count(*) = 1 FROM settings WHERE key = 'sync_interval';",
            ),
        ],
        "",
        ONE_WAVE,
    );

    let start = fleet.digests();
    roll_out(&fleet, "2026.11.0", 7);
    let after7 = fleet.digests();
    let flags7: Vec<Value> = fleet.endpoints.iter().map(|e| flags(&e.dir)).collect();
    roll_out(&fleet, "2026.12.0", 8);
    let after8 = fleet.digests();
    roll_out(&fleet, "2026.12.1", 9);
    let after9 = fleet.digests();
    for i in 0..fleet.endpoints.len() {
        // Each release changed the data: a rollback that did nothing
        // could not pass the checks below.
        assert!(start[i].0 != after7[i].0 && start[i].1 != after7[i].1, "7 changed both: {start:?} {after7:?}");
        assert!(after8[i].0 != after7[i].0 && after8[i].1 == after7[i].1, "8 changed notes: {after8:?}");
        assert!(after9[i].0 != after8[i].0 && after9[i].1 != after8[i].1, "9 changed both: {after9:?}");
    }

    let r = fleet.ctl(&["rollback", "notes", "--to-sequence", "7", "--json"]);
    ok(&r);
    let started = r.json();
    assert_eq!(started["rollouts"], serde_json::json!(["notes@9", "notes@8"]), "latest first: {started}");
    assert_eq!(started["agents"], 6, "two rollback plans per endpoint: {started}");

    let s = fleet.wait_status("notes@9 rolled back", Duration::from_secs(60), |s| {
        s["rollout"] == "notes@9" && s["state"] == "rolled_back"
    });
    assert!(s["summary"].as_str().unwrap().starts_with("rolled back, verified: 3"), "{s:#}");
    let audit = eventually("notes@8 rolled back", Duration::from_secs(60), || {
        let a = fleet.audit();
        a.iter().any(|(k, _, p)| k == "rollout.rolled_back" && p["rollout"] == "notes@8").then_some(a)
    });

    // The files: exactly where sequence 7 left them; so are the flags and
    // the installed release.
    assert_eq!(fleet.digests(), after7, "every endpoint back at its digests right after sequence 7");
    for (e, f) in fleet.endpoints.iter().zip(&flags7) {
        assert_eq!(&flags(&e.dir), f, "{}: the flags sequence 7 set", e.id);
    }
    wait_inventories(&fleet, 7);

    // Each step proven by digest, 9 before 8 on every endpoint: the
    // agents' signed reports of the two rollbacks, in the order stored.
    let results = fleet.reports();
    for (i, e) in fleet.endpoints.iter().enumerate() {
        let mine: Vec<&Value> =
            results.iter().filter(|(a, p)| a == &e.id && p["kind"] == "rollback").map(|(_, p)| p).collect();
        let seqs: Vec<u64> = mine.iter().map(|p| p["sequence"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [9, 8], "{}: rollbacks latest first: {mine:#?}", e.id);
        for (p, (notes, settings)) in mine.iter().zip([&after8[i], &after7[i]]) {
            assert_eq!(p["status"], "rolled_back", "{p:#}");
            assert_eq!(target(p, "notes")["data_after"], notes.as_str(), "{p:#}");
            assert_eq!(target(p, "settings")["data_after"], settings.as_str(), "{p:#}");
            for t in ["notes", "settings"] {
                assert_eq!(target(p, t)["proof"], "identical", "{p:#}");
            }
        }
    }

    // The audit log: the rollbacks of notes@9 went out and were proven
    // before those of notes@8; notes@7 stays.
    let position = |kind: &str, rollout: &str| {
        audit
            .iter()
            .position(|(k, _, p)| k == kind && p["rollout"] == rollout)
            .unwrap_or_else(|| panic!("no {kind} for {rollout}: {audit:#?}"))
    };
    assert!(position("rollback.sent", "notes@9") < position("rollback.sent", "notes@8"));
    assert!(position("rollout.rolled_back", "notes@9") < position("rollout.rolled_back", "notes@8"));
    for e in &fleet.endpoints {
        let proofs: Vec<u64> = audit
            .iter()
            .filter(|(k, _, p)| {
                k == "result" && p["agent"] == e.id.as_str() && p["kind"] == "rollback" && p["status"] == "rolled_back"
            })
            .map(|(_, _, p)| p["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(proofs, [9, 8], "{}: {proofs:?}", e.id);
    }
    assert!(
        !audit.iter().any(|(k, _, p)| k.starts_with("rollback") && p["rollout"] == "notes@7"),
        "sequence 7 is the epoch: it stays"
    );
    let r = fleet.ctl(&["rollback", "notes", "--to-sequence", "7"]);
    assert_eq!(r.code, 2, "nothing above 7 is left to roll back: {r:?}");
}
