//! End-to-end OFREP: a real agent daemon serves OpenFeature remote
//! evaluation on loopback from the flags a real plan set. Before the
//! release a flag is FLAG_NOT_FOUND; after the coordinator's plan applies
//! it, single and bulk evaluation return it (bulk with an ETag honoured by
//! If-None-Match); the OpenFeature Python SDK with the PyPI OFREP provider
//! reads it; `rewindctl flags set notes new_checkout off` (the kill switch)
//! reaches the SDK (the time is printed); after the coordinator's rollback
//! the previous value is still served and the ETag differs.

mod daemon_fleet;

use std::process::Command;
use std::time::Duration;

use daemon_fleet::{Fleet, free_port, http, ok};
use rewind_tests::{eventually, root};
use serde_json::Value;

fn python_sdk(port: u16) -> Value {
    let script = root().join("tests/tests/agent_ofrep_client.py");
    let out = Command::new("python3").arg(&script).arg(format!("http://127.0.0.1:{port}")).output().unwrap();
    assert!(
        out.status.success(),
        "the OpenFeature SDK client failed (scripts/deps.sh installs openfeature-sdk and openfeature-provider-ofrep): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn flag(port: u16, key: &str) -> Option<Value> {
    let r = http(port, "POST", &format!("/ofrep/v1/evaluate/flags/{key}"), &[], "{\"context\": {}}")?;
    (r.status == 200).then(|| r.json())
}

#[test]
fn ofrep_serves_the_flags_a_plan_set_and_a_rollback_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(tmp.path(), "warn");
    let port = free_port();
    let mut ep = fleet.endpoint("endpoint", &format!("ofrep_listen = \"127.0.0.1:{port}\""));

    // Nothing set yet: the flag is unknown, the bulk list is empty.
    let r = eventually("the local endpoint listens", Duration::from_secs(30), || {
        http(port, "POST", "/ofrep/v1/evaluate/flags/new_checkout", &[], "{\"context\": {\"targetingKey\": \"u1\"}}")
    });
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["errorCode"], "FLAG_NOT_FOUND", "{r:?}");
    assert_eq!(r.json()["key"], "new_checkout");
    let r = http(port, "POST", "/ofrep/v1/evaluate/flags", &[], "{}").unwrap();
    assert_eq!((r.status, r.json()["flags"].clone()), (200, serde_json::json!([])), "{r:?}");
    let empty_tag = r.header("etag").expect("bulk answers carry an ETag").to_string();
    // Malformed request bodies get OFREP errors, not a crash.
    let r = http(port, "POST", "/ofrep/v1/evaluate/flags/new_checkout", &[], "{not json").unwrap();
    assert_eq!((r.status, r.json()["errorCode"].as_str()), (400, Some("PARSE_ERROR")), "{r:?}");

    // The coordinator's plan sets new_checkout = true (activate after-migrations).
    eventually("agent connected", Duration::from_secs(30), || {
        let a = fleet.ctl(&["agents", "--json"]).json();
        a.as_array()?.iter().any(|x| x["connected"] == true).then_some(())
    });
    ok(&fleet.ctl(&["rollout", "start", "notes", "2026.11.0"]));
    let v = eventually("OFREP serves the flag the plan set", Duration::from_secs(60), || {
        flag(port, "new_checkout").filter(|v| v["value"] == true && v["metadata"]["sequence"] == 7)
    });
    assert_eq!(v["key"], "new_checkout");
    assert_eq!(v["reason"], "STATIC");
    assert_eq!(v["variant"], "true");
    assert_eq!(v["metadata"]["product"], "notes");
    assert_eq!(v["metadata"]["sequence"], 7, "{v}");
    let r = http(port, "POST", "/ofrep/v1/evaluate/flags/no_such_flag", &[], "{}").unwrap();
    assert_eq!((r.status, r.json()["errorCode"].as_str()), (404, Some("FLAG_NOT_FOUND")), "{r:?}");

    // Bulk: every flag, an ETag, 304 when unchanged.
    let r = http(port, "POST", "/ofrep/v1/evaluate/flags", &[], "{\"context\": {}}").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let flags = r.json()["flags"].as_array().unwrap().clone();
    assert_eq!(flags.len(), 1, "{r:?}");
    assert_eq!((flags[0]["key"].as_str(), flags[0]["value"].as_bool()), (Some("new_checkout"), Some(true)));
    let tag = r.header("etag").unwrap().to_string();
    assert_ne!(tag, empty_tag);
    let r = http(port, "POST", "/ofrep/v1/evaluate/flags", &[("If-None-Match", &tag)], "{}").unwrap();
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("etag"), Some(tag.as_str()));

    // A client nobody here wrote: the OpenFeature SDK with the OFREP provider.
    let sdk = python_sdk(port);
    assert_eq!(sdk["new_checkout"], true, "{sdk}");
    assert_eq!(sdk["reason"], "STATIC", "{sdk}");
    assert_eq!(sdk["error"], Value::Null, "{sdk}");
    assert_eq!(sdk["metadata"]["product"], "notes", "{sdk}");
    assert_eq!(
        (sdk["missing"].as_bool(), sdk["missing_error"].as_str()),
        (Some(true), Some("FLAG_NOT_FOUND")),
        "{sdk}"
    );

    // The kill switch turned off fleet-wide (`rewindctl flags set`), seen by
    // the SDK polling every 20 ms; the time from the command to the SDK
    // reading false is printed (issue 6 asks for well under a second).
    let mut watcher = Command::new("python3")
        .arg(root().join("tests/tests/agent_ofrep_client.py"))
        .args([format!("http://127.0.0.1:{port}").as_str(), "--until-false", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watcher.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "watching");
    let set_at = std::time::SystemTime::now();
    ok(&fleet.ctl(&["flags", "set", "notes", "new_checkout", "off"]));
    let seen: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(watcher.wait().unwrap().success());
    let flipped_at = seen["flipped_at"].as_f64().expect("the SDK saw the kill switch flip within 30 s");
    let since = flipped_at - set_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    println!(
        "kill switch: `rewindctl flags set ... off` to the OpenFeature SDK reading false: {:.0} ms",
        since * 1000.0
    );
    assert_eq!(flag(port, "new_checkout").unwrap()["value"], false);

    // The coordinator's rollback of the release keeps `previous = false`.
    ok(&fleet.ctl(&["rollback", "notes"]));
    eventually("OFREP serves the restored value", Duration::from_secs(60), || {
        flag(port, "new_checkout").filter(|v| v["value"] == false)
    });
    let r = http(port, "POST", "/ofrep/v1/evaluate/flags", &[("If-None-Match", &tag)], "{}").unwrap();
    assert_eq!(r.status, 200, "the flags changed, so the old tag no longer matches: {r:?}");
    assert_ne!(r.header("etag"), Some(tag.as_str()));
    assert_eq!(r.json()["flags"][0]["value"], false, "{r:?}");
    let sdk = python_sdk(port);
    assert_eq!(sdk["new_checkout"], false, "{sdk}");
    assert!(ep.proc.alive(), "the daemon is still running: {}", ep.log());

    // A second daemon on the same ofrep_listen port: exit 2 naming it.
    let r = rewind_tests::run("rewind-agent", &["run", "--config", &ep.dir.join("agent.toml").to_string_lossy()], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&format!("ofrep_listen = \"127.0.0.1:{port}\"")) && r.stderr.contains("cannot listen"),
        "{r:?}"
    );
}
