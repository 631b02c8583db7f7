//! End-to-end telemetry, progress and local revert with a real coordinator
//! and agent daemon:
//! - a malformed metrics file is named in the agent's log and ignored, the
//!   daemon keeps running and keeps sending its own metrics;
//! - app metrics from `<state>/metrics/notes.json` and from `POST /metrics`
//!   reach the coordinator (its debug log of each sample it publishes);
//! - a plan's steps reach the coordinator as progress (migration ids);
//! - with `local_revert = true`, an app metric above the release's trigger
//!   during the bake makes the agent roll the release back on its own with
//!   the pre-signed rollback plan: both databases proven back to their
//!   digests, and the result reaches the coordinator with the reason.

mod daemon_fleet;

use std::time::Duration;

use daemon_fleet::{Fleet, free_port, http, ok};
use rewind_tests::{digest, eventually};

#[test]
fn metrics_reach_the_coordinator_and_a_trigger_during_the_bake_reverts_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(tmp.path(), "info,rewind_coordinator::fleet=debug");
    let port = free_port();
    let mut ep = fleet.endpoint(
        "endpoint",
        &format!("local_revert = true\ntelemetry_seconds = 1\nofrep_listen = \"127.0.0.1:{port}\""),
    );
    let (notes0, settings0) = (digest(&ep.notes), digest(&ep.settings));
    let metrics = ep.state.join("metrics");
    std::fs::create_dir_all(&metrics).unwrap();

    // Malformed: logged with the file name, ignored; own metrics still flow.
    std::fs::write(metrics.join("notes.json"), "{\"crash_count\": \"many\"").unwrap();
    eventually("the agent names the malformed file", Duration::from_secs(30), || {
        let log = ep.log();
        (log.contains("notes.json") && log.contains("not JSON")).then_some(())
    });
    eventually("the coordinator gets the agent's own metrics", Duration::from_secs(30), || {
        let log = fleet.log();
        log.lines().any(|l| l.contains("telemetry") && l.contains("agent.plans_applied")).then_some(())
    });
    assert!(ep.proc.alive(), "the daemon survives a malformed metrics file: {}", ep.log());
    std::fs::write(metrics.join("notes.json"), "{\"crash_count\": 1, \"queue_depth\": 3}").unwrap();
    eventually("the file's metrics reach the coordinator", Duration::from_secs(30), || {
        fleet.log().lines().any(|l| l.contains("telemetry") && l.contains("\"app.queue_depth\": 3.0")).then_some(())
    });

    // Pushed to the local endpoint: sent at once, read back with GET.
    let r = http(port, "POST", "/metrics", &[], "{\"metrics\": {\"latency_ms\": 12.5}}").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(port, "POST", "/metrics", &[], "{\"metrics\": {\"latency_ms\": \"slow\"}}").unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("latency_ms"), "{r:?}");
    eventually("the pushed metric reaches the coordinator", Duration::from_secs(30), || {
        fleet.log().lines().any(|l| l.contains("telemetry") && l.contains("\"app.latency_ms\": 12.5")).then_some(())
    });
    let r = http(port, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(r.json()["notes"]["metrics"]["app.crash_count"], 1.0, "{r:?}");

    // The release applies; its steps come to the coordinator as progress.
    eventually("agent connected", Duration::from_secs(30), || {
        let a = fleet.ctl(&["agents", "--json"]).json();
        a.as_array()?.iter().any(|x| x["connected"] == true).then_some(())
    });
    ok(&fleet.ctl(&["rollout", "start", "notes", "2026.11.0"]));
    eventually("applied", Duration::from_secs(60), || (digest(&ep.notes) != notes0).then_some(()));
    eventually("progress with the migration ids", Duration::from_secs(30), || {
        let log = fleet.log();
        let progress: Vec<&str> = log.lines().filter(|l| l.contains("progress")).collect();
        (progress.iter().any(|l| l.contains("0002_normalize_status"))
            && progress.iter().any(|l| l.contains("phase=finished")))
        .then_some(())
    });
    eventually("the bake is being watched", Duration::from_secs(30), || {
        ep.state.join("bake.json").exists().then_some(())
    });
    assert_ne!(digest(&ep.settings), settings0);

    // A crash count above the release's trigger (app.crash_count above 3)
    // during the bake: the agent rolls back on its own.
    let fired = std::time::Instant::now();
    std::fs::write(metrics.join("notes.json"), "{\"crash_count\": 5}").unwrap();
    eventually("rolled back locally", Duration::from_secs(60), || {
        (digest(&ep.notes) == notes0 && digest(&ep.settings) == settings0).then_some(())
    });
    eprintln!(
        "local revert: metrics file written -> both databases back to their digests in {:?} (telemetry_seconds = 1)",
        fired.elapsed()
    );
    let log = eventually("the coordinator has the result with its reason", Duration::from_secs(30), || {
        let log = fleet.log();
        log.contains("local_revert: trigger app.crash_count fired").then_some(log)
    });
    assert!(log.contains("app.crash_count = 5"), "{log}");
    assert!(ep.log().contains("local_revert: trigger app.crash_count fired"), "{}", ep.log());
    // The decision is in the agent's signed audit chain.
    let db = rusqlite::Connection::open(ep.state.join("agent.db")).unwrap();
    let params: String =
        db.query_row("SELECT params FROM audit WHERE kind = 'local_revert'", [], |r| r.get(0)).unwrap();
    assert!(params.contains("app.crash_count above 3 within 10m"), "{params}");
    drop(db);
    let verify = rewind_tests::agent(&ep.state, &["audit", "verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(ep.proc.alive(), "{}", ep.log());
}
