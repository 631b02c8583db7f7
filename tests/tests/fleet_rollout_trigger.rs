//! A fleet-wide `[[trigger]]` on an app metric, end to end: the example
//! release's `app.crash_count above 3 within 10m`; a canary that applied
//! writes crash counts to its metrics file during the bake, its agent sends
//! them as telemetry, the coordinator's engine sums them over the window,
//! halts the rollout at once and rolls the canary back, proven by digest;
//! the other agents never get the plan. A canary that reports no crashes
//! does not halt anything.

mod fleet_rollout_common;

use std::time::Duration;

use fleet_rollout_common::{Fleet, agent, ok, wave};

const CANARY_THEN_ALL: &str = r#"[rollout]
waves = [
  { name = "canary", selector = "ring=canary", bake = "60s" },
  { name = "all", percent = 100 },
]
report_timeout = "60s"
auto_rollback = true
"#;

#[test]
fn an_app_metric_above_its_trigger_during_the_bake_halts_and_rolls_back() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.agent_extra = "telemetry_seconds = 1\n".into();
    fleet.add("canary", 2);
    fleet.add("main", 2);
    fleet.wait_connected();
    let (canary, main) = (fleet.ids("canary"), fleet.ids("main"));

    fleet.bundle("2026.11.0", CANARY_THEN_ALL, &|t| t, true);
    ok(&fleet.ctl(&["rollout", "start", "notes", "2026.11.0"]));
    let s = fleet.wait_status("canaries applied, baking", Duration::from_secs(90), |s| s["state"] == "baking");
    assert_eq!(wave(&s, "canary")["succeeded"], 2, "{s:#}");

    // A healthy canary: zero crashes, sent every second; nothing halts.
    let write = |id: &str, body: &str| {
        let e = fleet.endpoints.iter().find(|e| e.id == id).unwrap();
        let dir = e.dir.join("state/metrics");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join("notes.json.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, dir.join("notes.json")).unwrap();
    };
    write(&canary[1], r#"{"crash_count": 0}"#);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fleet.status()["state"], "baking");

    // The other canary crashes 5 times: above 3 within 10m.
    write(&canary[0], r#"{"crash_count": 5}"#);
    let s = fleet
        .wait_status("halted by the trigger and rolled back", Duration::from_secs(60), |s| s["state"] == "rolled_back");
    for id in &canary {
        assert_eq!(agent(&s, id)["rollback"], "proven", "{s:#}");
        assert!(fleet.endpoints.iter().find(|e| &e.id == id).unwrap().at_start(), "{id} back at its start digests");
    }
    for id in &main {
        assert_eq!(agent(&s, id)["outcome"], "pending", "{s:#}");
    }
    assert!(fleet.deliveries().iter().all(|(a, _, _)| canary.contains(a)), "{:?}", fleet.deliveries());
    let audit = fleet.audit();
    let halt = audit.iter().find(|(k, _, _)| k == "rollout.halted").expect("a halt entry");
    let reason = halt.2["reason"].as_str().unwrap();
    assert!(reason.contains("trigger app.crash_count above 3") && reason.contains(&canary[0]), "{reason}");
}
