//! Incidents from a real halted rollout: a coordinator and three real agents
//! (two `ring=canary`, one `ring=main`); the release whose verify fails
//! (examples/notes-app 2026.11.1-bad, given a canary wave) halts in the
//! canary wave and ends rolled back. The coordinator turns that into one
//! incident whose messages follow the rollout — incident started (wave,
//! reason and how many endpoints it reached filled in), rollback started,
//! rollback completed, resolved — each rendered from the product's
//! templates in use (the release has none of its own, so the built-in
//! defaults, stored as version 1 at upload), each in the audit log as
//! `incident.<event>`.

mod fleet_rollout_common;

use std::time::Duration;

use fleet_rollout_common::{Fleet, ok};
use rewind_tests::eventually;
use serde_json::Value;

const CANARY_THEN_ALL: &str = r#"[rollout]
waves = [
  { name = "canary", selector = "ring=canary", bake = "30s" },
  { name = "all", percent = 100 },
]
report_timeout = "60s"
auto_rollback = true
"#;

#[test]
fn a_halted_rollout_opens_an_incident_that_follows_the_rollback_to_resolved() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("canary", 2);
    fleet.add("main", 1);
    fleet.wait_connected();
    let both_targets = |t: String| {
        t.replacen(
            "[[target]]\nname = \"notes\"\n",
            "[[target]]\nname = \"notes\"\n\n[[target]]\nname = \"settings\"\n",
            1,
        )
    };
    fleet.bundle("2026.11.1-bad", CANARY_THEN_ALL, &both_targets, false);
    let list = fleet.ctl(&["templates", "list", "notes", "--json"]).json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["version"] == 1 && t["source"].as_str().unwrap().starts_with("release 2026.11.1")),
        "{list}"
    );
    ok(&fleet.ctl(&["rollout", "start", "notes", "2026.11.1"]));
    fleet.wait_status("the bad release rolled back", Duration::from_secs(90), |s| s["state"] == "rolled_back");

    let incident = eventually("the incident resolved", Duration::from_secs(30), || {
        let l = fleet.ctl(&["incidents", "list", "notes", "--json"]).json();
        l.as_array()?.first().filter(|i| i["state"] == "resolved").cloned()
    });
    let all = fleet.ctl(&["incidents", "list", "--json"]).json();
    assert_eq!(all.as_array().unwrap().len(), 1, "one incident for one halt: {all:#}");
    let kinds: Vec<&str> =
        incident["updates"].as_array().unwrap().iter().map(|u| u["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["incident_started", "rollback_started", "rollback_completed", "resolved"], "{incident:#}");
    let first = &incident["updates"][0];
    assert_eq!(first["title"], "Investigating a problem with notes 2026.11.1", "{incident:#}");
    assert_eq!(first["cause"], "rollout.halted");
    let text = first["text"].as_str().unwrap();
    assert!(text.contains("in wave canary. 2 endpoint(s) are affected."), "{text}");
    assert!(text.contains("Reason: ") && text.contains("failed verify"), "{text}");
    assert!(text.contains("pager:storage leads the response; storage-team owns the release"), "{text}");
    assert_eq!(incident["release"], "2026.11.1");
    // The restore window comes from the times in the endpoints' signed reports.
    let rolling = incident["updates"][1]["text"].as_str().unwrap();
    assert!(rolling.contains("A restore takes about ") && rolling.contains(" per endpoint ("), "{rolling}");
    assert!(incident["html"].as_str().unwrap().starts_with("<p>"), "{incident:#}");

    // Each message is in the audit log, chained and signed with the rest.
    let audit = fleet.audit();
    let told: Vec<&str> =
        audit.iter().filter(|(k, _, _)| k.starts_with("incident.")).map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        told,
        ["incident.incident_started", "incident.rollback_started", "incident.rollback_completed", "incident.resolved"],
        "{audit:?}"
    );
    let entry: &Value = &audit.iter().find(|(k, _, _)| k == "incident.incident_started").unwrap().2;
    assert_eq!(entry["incident"], incident["id"]);
    ok(&fleet.ctl(&["audit", "verify"]));

    // Nothing left to resolve.
    let r = fleet.ctl(&["incidents", "resolve", "notes"]);
    assert_eq!(r.code, 2, "{r:?}");
}
