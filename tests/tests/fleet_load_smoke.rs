//! Smoke run of the fleet benchmark (`fleet_load`, docs/benchmarks.md
//! "Fleet") with 20 agents, so that the load generator keeps working as the
//! protocol changes: 20 real enrollments, 20 mTLS streams to the
//! coordinator and to the bare tonic floor, one push reaching every agent
//! on both, 200 signed results acknowledged, and every agent back after a
//! SIGTERM restart of the coordinator. The figures themselves are not
//! judged here (debug build, shared CI machine).

use rewind_tests::bin;

#[test]
fn fleet_load_smoke_run_with_20_agents() {
    let dir = bin("fleet_load").parent().unwrap().to_path_buf();
    let out = std::process::Command::new(bin("fleet_load"))
        .args(["--agents", "20", "--results", "200", "--timeout", "60s", "--bin-dir"])
        .arg(&dir)
        .output()
        .expect("fleet_load runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).expect("a JSON summary line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["n"], 20, "{v}");
    for side in ["coordinator", "floor"] {
        assert_eq!(v[side]["push_received"], 20, "{side}: {v}");
        assert!(v[side]["connect_s"].is_number(), "{side}: all connected: {v}");
        assert!(v[side]["rssn_kib"].as_u64().unwrap() > 0, "{v}");
    }
    assert_eq!(v["results_acked"], 200, "{v}");
    assert_eq!(v["reconnected"], 20, "{v}");
    assert!(stdout.contains("push p99") && (stdout.contains("PASS") || stdout.contains("MISS")), "{stdout}");
}
