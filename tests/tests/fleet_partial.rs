//! End-to-end: rolling back one part of a release through the coordinator
//! (docs/rollouts.md "Granularity" and "Kill switches"), with a real
//! coordinator and three real agents over mTLS. After the example release
//! is applied everywhere:
//!
//! - `flags list` shows its flag with owner, expiry and kill switch;
//! - `flags set notes new_checkout off` turns the kill switch off on every
//!   endpoint (flags.json back to the previous value) while the release
//!   stays installed, the databases untouched and the rollout `done`;
//!   values other than `on` and `off`, unknown flags and a second identical
//!   request are refused with exit 2; `flags set ... on` turns it back on;
//! - an `activate = "manual"` flag stays unset after the apply until
//!   `flags set notes beta_export on` turns it on, first on one endpoint
//!   (`--scope agent:ID`), then on the others (only they get the plan);
//! - `rollback --granularity target --subject settings --scope agent:ID`
//!   takes one endpoint's settings database back to its start digest and
//!   leaves its notes database migrated;
//! - a migration that cannot be rolled back alone is refused by the agent,
//!   reported, counted as failed and listed for a human with its command;
//! - the whole release can still be rolled back afterwards, and every
//!   endpoint ends at its start digests;
//! - each step is in the audit log, and `rewindctl lineage` shows every
//!   step on an endpoint's target with its digests.

mod fleet_rollout_common;

use std::time::Duration;

use fleet_rollout_common::{Fleet, agent, ok};
use rewind_tests::digest;
use serde_json::Value;

const ONE_WAVE: &str = "[rollout]\nwaves = [{ name = \"all\", percent = 100 }]\nreport_timeout = \"60s\"";
const MANUAL_FLAG: &str =
    "[[flag]]\nname = \"beta_export\"\nvalue = true\nprevious = false\nowner = \"sync-team\"\nactivate = \"manual\"";

fn flags_json(e: &fleet_rollout_common::Endpoint) -> Value {
    serde_json::from_str(&std::fs::read_to_string(e.dir.join("state/flags.json")).unwrap()).unwrap()
}

fn partial<'a>(s: &'a Value, part: &str) -> &'a Value {
    s["partial_rollbacks"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["part"] == part))
        .unwrap_or_else(|| panic!("no partial rollback {part}: {s:#}"))
}

#[test]
fn a_kill_switch_a_target_and_a_refused_migration_roll_back_alone_and_the_release_still_rolls_back_whole() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("canary", 1);
    fleet.add("main", 2);
    fleet.wait_connected();
    fleet.bundle("2026.11.0", &format!("{ONE_WAVE}\n\n{MANUAL_FLAG}"), &|t| t, false);
    ok(&fleet.ctl(&["rollout", "start", "notes", "2026.11.0"]));
    fleet.wait_status("applied everywhere", Duration::from_secs(90), |s| s["state"] == "done");
    let applied: Vec<(String, String)> =
        fleet.endpoints.iter().map(|e| (digest(&e.notes), digest(&e.settings))).collect();
    for e in &fleet.endpoints {
        assert_eq!(flags_json(e)["flags"]["new_checkout"], true, "{}", e.id);
        assert_eq!(flags_json(e)["flags"].get("beta_export"), None, "{}: a manual flag is not set by the apply", e.id);
    }
    let (first, second) = (fleet.endpoints[0].id.clone(), fleet.endpoints[1].id.clone());

    // The flag as operators see it.
    let list = fleet.ctl(&["flags", "list", "notes", "--json"]);
    ok(&list);
    let rows = list.json();
    let f = &rows[0];
    assert_eq!(
        (&f["name"], &f["value"], &f["previous"], &f["owner"], &f["kill_switch"], &f["applied"], &f["turned_off"]),
        (
            &Value::from("new_checkout"),
            &Value::from(true),
            &Value::from(false),
            &Value::from("payments-team"),
            &Value::from(true),
            &Value::from(3),
            &Value::from(0)
        ),
        "{rows:#}"
    );
    assert_eq!(f["expires"], "2027-01-31");
    let table = fleet.ctl(&["flags", "list"]);
    ok(&table);
    assert!(table.stdout.contains("new_checkout") && table.stdout.contains("0 on, 0 off of 3"), "{}", table.stdout);
    assert_eq!((&rows[1]["name"], &rows[1]["activate"]), (&Value::from("beta_export"), &Value::from("manual")));

    // Refusals change nothing.
    let r = fleet.ctl(&["flags", "set", "notes", "new_checkout", "42"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("forward change"), "{r:?}");
    let r = fleet.ctl(&["flags", "set", "notes", "old_checkout", "off"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("its flags are: new_checkout, beta_export"), "{r:?}");
    let r = fleet.ctl(&["flags", "set", "notes", "beta_export", "off"]);
    assert_eq!(r.code, 2, "not a kill switch: {r:?}");
    let viewer = fleet.operator("vera", "viewer");
    let r = fleet.ctl_as(&viewer, &["flags", "set", "notes", "new_checkout", "off"]);
    assert_eq!(r.code, 2, "a viewer may not: {r:?}");
    ok(&fleet.ctl_as(&viewer, &["flags", "list", "--json"]));

    // The kill switch, fleet-wide.
    let r = fleet.ctl(&["flags", "set", "notes", "new_checkout", "off", "--reason", "checkout errors", "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 3, "{r:?}");
    let s = fleet.wait_status("the kill switch proven everywhere", Duration::from_secs(60), |s| {
        partial(s, "flag new_checkout")["proven"] == 3
    });
    assert_eq!(s["state"], "done", "a partial rollback leaves the rollout as it was: {s:#}");
    for (e, before) in fleet.endpoints.iter().zip(&applied) {
        assert_eq!(flags_json(e)["flags"]["new_checkout"], false, "{}", e.id);
        assert_eq!((digest(&e.notes), digest(&e.settings)), *before, "{}: the data is untouched", e.id);
        assert_eq!(agent(&s, &e.id)["outcome"], "applied");
        assert_eq!(agent(&s, &e.id)["parts"]["flag new_checkout"], "proven");
    }
    let agents = fleet.ctl(&["agents", "--json"]).json();
    assert!(
        agents.as_array().unwrap().iter().all(|a| a["products"][0]["sequence"] == 7),
        "the release stays installed: {agents:#}"
    );
    let f = &fleet.ctl(&["flags", "list", "notes", "--json"]).json()[0];
    assert_eq!(f["turned_off"], 3, "{f}");
    let r = fleet.ctl(&["flags", "set", "notes", "new_checkout", "off"]);
    assert_eq!(r.code, 2, "the same kill twice: {r:?}");
    assert!(r.stderr.contains("already"), "{r:?}");

    // The manual flag: on for one endpoint, then for the others.
    let on_everywhere =
        |s: &Value, key: &str| fleet.endpoints.iter().all(|e| agent(s, &e.id)["parts"][key] == "proven");
    let r = fleet.ctl(&["flags", "set", "notes", "beta_export", "on", "--scope", &format!("agent:{first}"), "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 1, "{r:?}");
    fleet.wait_status("the manual flag on for one endpoint", Duration::from_secs(60), |s| {
        agent(s, &first)["parts"]["flag beta_export on"] == "proven"
    });
    assert_eq!(flags_json(&fleet.endpoints[0])["flags"]["beta_export"], true);
    assert_eq!(flags_json(&fleet.endpoints[1])["flags"].get("beta_export"), None, "out of scope");
    let r = fleet.ctl(&["flags", "set", "notes", "beta_export", "on"]);
    ok(&r);
    assert!(
        r.stdout.contains("activation of flag beta_export of notes") && r.stdout.contains("sent to 2 agent(s)"),
        "{r:?}"
    );
    let s = fleet.wait_status("the manual flag on everywhere", Duration::from_secs(60), |s| {
        on_everywhere(s, "flag beta_export on")
    });
    assert_eq!(s["state"], "done", "{s:#}");
    let r = fleet.ctl(&["flags", "set", "notes", "beta_export", "on"]);
    assert_eq!(r.code, 2, "the same activation twice: {r:?}");
    // The kill switch comes back on.
    ok(&fleet.ctl(&["flags", "set", "notes", "new_checkout", "on", "--reason", "fixed in the backend"]));
    let s = fleet
        .wait_status("the kill switch back on", Duration::from_secs(60), |s| on_everywhere(s, "flag new_checkout on"));
    for (e, before) in fleet.endpoints.iter().zip(&applied) {
        let f = &flags_json(e)["flags"];
        assert_eq!((&f["new_checkout"], &f["beta_export"]), (&Value::from(true), &Value::from(true)), "{}", e.id);
        assert_eq!((digest(&e.notes), digest(&e.settings)), *before, "{}: the data is untouched", e.id);
        assert!(agent(&s, &e.id)["parts"].get("flag new_checkout").is_none(), "replaced by the activation: {s:#}");
    }
    let rows = fleet.ctl(&["flags", "list", "notes", "--json"]).json();
    let counts: Vec<(&Value, &Value, &Value)> =
        rows.as_array().unwrap().iter().map(|f| (&f["name"], &f["turned_on"], &f["turned_off"])).collect();
    assert_eq!(
        counts,
        [
            (&Value::from("new_checkout"), &Value::from(3), &Value::from(0)),
            (&Value::from("beta_export"), &Value::from(3), &Value::from(0))
        ],
        "{rows:#}"
    );

    // One target of one endpoint.
    let r = fleet.ctl(&["rollback", "notes", "--granularity", "target", "--subject", "nope"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("notes, settings"), "the bundle's targets are named: {r:?}");
    ok(&fleet.ctl(&[
        "rollback",
        "notes",
        "--granularity",
        "target",
        "--subject",
        "settings",
        "--scope",
        &format!("agent:{first}"),
        "--reason",
        "theme breaks the settings screen",
    ]));
    let s = fleet.wait_status("settings rolled back on one endpoint", Duration::from_secs(60), |s| {
        partial(s, "target settings")["proven"] == 1
    });
    assert_eq!(s["state"], "done");
    let e0 = &fleet.endpoints[0];
    assert_eq!(digest(&e0.settings), e0.start_settings, "settings back at its start digest");
    assert_eq!(digest(&e0.notes), applied[0].0, "notes keeps the release");
    for (e, before) in fleet.endpoints.iter().zip(&applied).skip(1) {
        assert_eq!(digest(&e.settings), before.1, "{} out of scope", e.id);
    }

    // A migration's plan also undoes the migrations that depend on it; one
    // whose predecessor on the same target stays applied (0002 without
    // 0001) is refused by the agent: nothing changed, a human is told.
    ok(&fleet.ctl(&[
        "rollback",
        "notes",
        "--granularity",
        "migration",
        "--subject",
        "0002_normalize_status",
        "--scope",
        &format!("agent:{second}"),
    ]));
    let s = fleet.wait_status("the refusal reported", Duration::from_secs(60), |s| {
        partial(s, "migration 0002_normalize_status")["failed"] == 1
    });
    assert_eq!(digest(&fleet.endpoints[1].notes), applied[1].0, "a refused plan changes nothing");
    let human = s["needs_human"].as_array().unwrap().iter().find(|h| h["agent"] == second.as_str()).unwrap();
    assert!(
        human["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("--granularity migration --subject 0002_normalize_status")),
        "{human:#}"
    );

    // The whole release still rolls back, and every endpoint proves it.
    ok(&fleet.ctl(&["rollback", "notes", "--reason", "give up on 2026.11.0"]));
    fleet.wait_status("rolled back, verified", Duration::from_secs(90), |s| s["state"] == "rolled_back");
    for e in &fleet.endpoints {
        assert!(e.at_start(), "{} is back at its start digests", e.id);
        assert_eq!(flags_json(e)["flags"]["new_checkout"], false, "{}", e.id);
        assert_eq!(flags_json(e)["flags"]["beta_export"], false, "{}: the release rollback sets previous", e.id);
    }

    let audit = fleet.audit();
    let partials: Vec<&str> = audit
        .iter()
        .filter(|(k, _, _)| k == "rollout.partial_rollback")
        .map(|(_, _, p)| p["reason"].as_str().unwrap())
        .collect();
    assert_eq!(partials.len(), 3, "{partials:?}");
    assert!(
        partials[0].contains("flag new_checkout (fleet)") && partials[0].contains("checkout errors"),
        "{partials:?}"
    );
    let sent: Vec<(String, String)> = audit
        .iter()
        .filter(|(k, _, _)| k == "rollback.sent")
        .map(|(_, _, p)| {
            (p["granularity"].as_str().unwrap().to_string(), p["subject"].as_str().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("flag".to_string(), "new_checkout".to_string()),
            ("target".to_string(), "settings".to_string()),
            ("migration".to_string(), "0002_normalize_status".to_string()),
            ("release".to_string(), String::new()),
        ],
        "{sent:?}"
    );
    let activations: Vec<(&str, usize)> = audit
        .iter()
        .filter(|(k, _, _)| k == "activation.sent")
        .map(|(_, _, p)| (p["subject"].as_str().unwrap(), p["agents"].as_array().unwrap().len()))
        .collect();
    assert_eq!(activations, [("beta_export", 1), ("beta_export", 2), ("new_checkout", 3)], "{activations:?}");
    let turned_on = audit.iter().filter(|(k, _, _)| k == "rollout.flag_on").count();
    assert_eq!(turned_on, 3);
    ok(&fleet.ctl(&["audit", "verify"]));

    // Lineage: what happened to each of the first endpoint's targets, with digests.
    let l = fleet.ctl(&["lineage", &first, "settings", "--json"]);
    ok(&l);
    let steps = l.json();
    let step = |i: usize, k: &str| steps[i][k].clone();
    let what: Vec<(String, String, String)> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["granularity"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        what,
        [
            ("apply".into(), "release".into(), "applied".into()),
            ("rollback".into(), "target settings".into(), "rolled_back".into()),
            ("rollback".into(), "release".into(), "rolled_back".into()),
        ],
        "{steps:#}"
    );
    assert_eq!(step(0, "migrations"), serde_json::json!(["0003_settings_theme"]));
    assert_eq!(
        step(0, "data_before"),
        Value::from(fleet.endpoints[0].start_settings.clone()),
        "digest of the start state"
    );
    assert_eq!(step(0, "data_after"), Value::from(applied[0].1.clone()));
    assert_eq!(step(1, "data_after"), step(0, "data_before"), "the target rollback came back to the start");
    assert_eq!(step(1, "proof"), "identical");
    assert!(steps.as_array().unwrap().iter().all(|s| s["schema_changed_outside"] == false), "{steps:#}");
    let notes = fleet.ctl(&["lineage", &first, "notes", "--json"]).json();
    assert_eq!(notes.as_array().unwrap().len(), 2, "apply and the release rollback (a flag has no target): {notes:#}");
    assert_eq!(notes[1]["schema_after"], notes[0]["schema_before"], "{notes:#}");
    let table = fleet.ctl(&["lineage", &first, "notes"]);
    ok(&table);
    assert!(
        table.stdout.contains("rollback release") && table.stdout.contains("0001_add_currency"),
        "{}",
        table.stdout
    );
    let r = fleet.ctl(&["lineage", &first, "photos"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("its results name: notes, settings"), "{r:?}");
    let r = fleet.ctl(&["lineage", "agt-0000000000000000", "notes"]);
    assert_eq!(r.code, 2, "{r:?}");
}
