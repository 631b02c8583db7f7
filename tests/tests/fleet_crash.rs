//! End-to-end: kill -9 of an agent in the middle of a plan delivered over
//! the stream (a crash point in a `fault-injection` build, as
//! scripts/test.sh builds). The restarted daemon recovers the endpoint to the
//! plan's start state, the coordinator's unacknowledged delivery comes
//! again and is applied, and every plan's result reaches the coordinator
//! exactly once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rewind_tests::{Proc, ok};
use rewind_tests::{agent, bin, digest, eventually, release_with_rollout, run, seed_db};
use serde_json::Value;

fn daemon(config: &Path, crash_at: Option<&str>) -> Proc {
    let mut c = Command::new(bin("rewind-agent"));
    c.args(["run", "--config", &config.to_string_lossy()])
        .env("REWIND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match crash_at {
        Some(p) => c.env("REWIND_CRASH_AT", p),
        None => c.env_remove("REWIND_CRASH_AT"),
    };
    Proc(c.spawn().unwrap())
}

#[test]
fn an_agent_killed_mid_plan_recovers_and_reports_each_plan_once() {
    let crash_points = run("rewind-agent", &["debug", "crash-points"], &[]);
    assert!(
        !crash_points.stderr.contains("ignores REWIND_CRASH_AT"),
        "rewind-agent was built without --features fault-injection: run the tests with scripts/test.sh"
    );
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = |name: &str| t.join(name).to_string_lossy().into_owned();
    ok(&run("rewindctl", &["keys", "generate", "--out", &p("alice")], &[]));
    ok(&run(
        "rewindctl",
        &["trust", "init", "--threshold", "1", "--key", &p("alice.pub"), "--out", &p("trust.toml")],
        &[],
    ));
    let bundle = p("notes.bundle.json");
    // One wave, and no halt on the interrupted plan's failed report (an
    // honest failure that would otherwise roll the endpoint back): this test
    // is about recovery and exactly-once reports, not rollout policy.
    let rel = release_with_rollout(
        "2026.11.0",
        t,
        "[rollout]\nwaves = [{ name = \"all\", percent = 100 }]\nmax_failure_ratio = 1.0\nauto_rollback = false",
    );
    ok(&run("rewindctl", &["release", "build", &rel.to_string_lossy(), "--out", &bundle], &[]));
    ok(&run("rewindctl", &["release", "sign", &bundle, "--key", &p("alice.key")], &[]));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cstate = t.join("coordinator");
    let _coordinator = Proc(
        Command::new(bin("rewind-coordinator"))
            .args(["--state", &cstate.to_string_lossy()])
            .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
            .env("REWIND_TRUST", p("trust.toml"))
            .env("REWIND_HEARTBEAT_SECONDS", "1")
            .env("REWIND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}");
    let (ca, token) = (
        cstate.join("ca.pem").to_string_lossy().into_owned(),
        cstate.join("admin.token").to_string_lossy().into_owned(),
    );
    let ctl = |args: &[&str]| {
        run("rewindctl", args, &[("REWIND_COORDINATOR", &url), ("REWIND_CA", &ca), ("REWIND_TOKEN_FILE", &token)])
    };
    eventually("coordinator ready", Duration::from_secs(30), || (ctl(&["agents", "--json"]).code == 0).then_some(()));
    ok(&ctl(&["release", "upload", &bundle]));

    let dir = t.join("endpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let notes = seed_db(&dir, "notes");
    let _settings = seed_db(&dir, "settings");
    let before = digest(&notes);
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "coordinator = \"{url}\"\nca = \"{ca}\"\ntrust = \"{}\"\nstate = \"state\"\n\n\
             [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
             [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
            p("trust.toml")
        ),
    )
    .unwrap();
    let tok = ctl(&["token", "create"]);
    ok(&tok);
    ok(&run("rewind-agent", &["enroll", "--config", &config.to_string_lossy(), "--token", tok.stdout.trim()], &[]));

    let mut crashing = daemon(&config, Some("apply.migration.after_commit"));
    let agents = |f: &dyn Fn(&Value) -> bool| {
        let r = ctl(&["agents", "--json"]);
        (r.code == 0).then(|| r.json()[0].clone()).filter(|a| !a.is_null() && f(a))
    };
    eventually("agent connected", Duration::from_secs(30), || {
        agents(&|a| a["connected"] == true && a["targets"].as_array().is_some_and(|t| t.len() == 2))
    });
    ok(&ctl(&["rollout", "start", "notes", "2026.11.0"]));
    let status =
        eventually("the daemon dies at the crash point", Duration::from_secs(30), || crashing.0.try_wait().unwrap());
    assert!(!status.success(), "{status:?}");

    // Restarted without the crash point: recovery, then the redelivered plan.
    let _daemon = daemon(&config, None);
    let applied = eventually("applied after recovery", Duration::from_secs(60), || {
        let s = ctl(&["rollout", "status", "notes", "--json"]);
        (s.code == 0 && s.json()["agents"][0]["outcome"] == "applied").then_some(())?;
        agents(&|a| a["products"][0]["sequence"] == 7)
    });
    assert_eq!(applied["products"][0]["release"], "2026.11.0", "{applied}");
    assert_ne!(digest(&notes), before, "the migration is applied");
    let (outbox, a) = eventually("every report delivered, each once", Duration::from_secs(30), || {
        let o = agent(&dir.join("state"), &["outbox", "--json"]).json();
        (o["pending"] == 0).then_some(())?;
        let a = agents(&|x| x["results"] == o["reports"].as_array().map_or(0, Vec::len))?;
        Some((o, a))
    });
    let statuses: Vec<&str> =
        outbox["reports"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(
        statuses.len() >= 2 && statuses.last() == Some(&"applied"),
        "the interrupted plan and the applied one each report: {outbox}"
    );
    assert_eq!(a["alarms"], 0, "{a}");
}
