//! Smoke run of the real-agent rollback benchmark (`rollback_real`,
//! docs/benchmarks.md "Fleet", "Halt to verified rollback") with 3
//! `rewind-agent` processes on the debug build, so that it keeps working as
//! the protocol and the rollout engine change: the release applied on every
//! endpoint, the rollback asked for, the rollout `rolled_back` and every
//! endpoint's databases back at their start digests (the binary fails
//! otherwise), twice, with the figure printed. The figure itself is not
//! judged here (debug build, shared CI machine).

use rewind_tests::bin;

#[test]
fn rollback_real_smoke_run_with_3_agents() {
    let dir = bin("rollback_real").parent().unwrap().to_path_buf();
    let out = std::process::Command::new(bin("rollback_real"))
        .args(["--agents", "3", "--runs", "2", "--heartbeat-seconds", "1", "--timeout", "90s", "--bin-dir"])
        .arg(&dir)
        .output()
        .expect("rollback_real runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).expect("a JSON summary line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!((v["n"].as_u64(), v["heartbeat_seconds"].as_u64()), (Some(3), Some(1)), "{v}");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    for (r, sequence) in runs.iter().zip([7, 8]) {
        assert_eq!(r["sequence"], sequence, "{v}");
        assert_eq!(r["plans"], 3, "a rollback plan per endpoint: {v}");
        assert_eq!(r["back_at_start"], 3, "{v}");
        let ms = r["rolled_back_ms"].as_f64().unwrap();
        assert!(ms > 0.0, "{v}");
        // The audit log agrees: rolling_back, then the last rollback
        // result, then rolled_back.
        let at = |k: &str| r[k].as_i64().unwrap_or_else(|| panic!("{k}: {v}"));
        assert!(
            at("audit_rolling_back_ms") <= at("audit_last_result_ms")
                && at("audit_last_result_ms") <= at("audit_rolled_back_ms"),
            "{v}"
        );
    }
    assert!(v["rolled_back_worst_ms"].as_f64().unwrap() >= v["rolled_back_median_ms"].as_f64().unwrap(), "{v}");
    assert!(
        stdout.contains("halt to verified rollback") && (stdout.contains("PASS") || stdout.contains("MISS")),
        "{stdout}"
    );
}
