//! End-to-end: a real rewind-coordinator on `store = "postgres"` against a
//! real PostgreSQL (started by `rewind_tests::postgres`), with a real agent.
//! An agent enrolls and connects, delivers a signed result; the coordinator
//! is killed (-9) and restarted: the agent, its result and the audit chain
//! come back from PostgreSQL (no SQLite file is written), the agent
//! reconnects and nothing is counted twice. A phased rollout (canary, then
//! an approval wave) runs with its state in PostgreSQL, survives a kill -9
//! while awaiting approval, and finishes. And the refusals: no store_url,
//! a malformed one (exit 2, nothing started), an unreachable server (names
//! the URL without its password, says what to do).

mod fleet_rollout_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rewind_tests::postgres::{PASSWORD, Postgres};
use rewind_tests::{Proc, free_port};
use rewind_tests::{Run, agent, bin, eventually, release, run, seed_db};
use serde_json::Value;

fn coordinator(state: &Path, port: u16, url: &str) -> Proc {
    Proc(
        Command::new(bin("rewind-coordinator"))
            .args(["--state", &state.to_string_lossy()])
            .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
            .env("REWIND_WEB_LISTEN", "127.0.0.1:0")
            .env("REWIND_STORE", "postgres")
            .env("REWIND_STORE_URL", url)
            .env("REWIND_HEARTBEAT_SECONDS", "1")
            .env("REWIND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn ctl(state: &Path, port: u16, args: &[&str]) -> Run {
    let url = format!("https://127.0.0.1:{port}");
    let ca = state.join("ca.pem").to_string_lossy().into_owned();
    let token = state.join("admin.token").to_string_lossy().into_owned();
    run("rewindctl", args, &[("REWIND_COORDINATOR", &url), ("REWIND_CA", &ca), ("REWIND_TOKEN_FILE", &token)])
}

fn only_agent(state: &Path, port: u16) -> Option<Value> {
    let r = ctl(state, port, &["agents", "--json"]);
    (r.code == 0).then(|| r.json()[0].clone()).filter(|a| !a.is_null())
}

fn start_agent(config: &Path) -> Proc {
    Proc(
        Command::new(bin("rewind-agent"))
            .args(["run", "--config", &config.to_string_lossy()])
            .env("REWIND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn agents_results_and_audit_live_in_postgres_across_a_coordinator_kill_9() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let cstate = tmp.path().join("coordinator");
    let port = free_port();
    let mut coord = coordinator(&cstate, port, &pg.url());
    eventually("coordinator ready on PostgreSQL", Duration::from_secs(30), || {
        (ctl(&cstate, port, &["agents", "--json"]).code == 0).then_some(())
    });

    let dir = tmp.path().join("endpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let notes = seed_db(&dir, "notes");
    let settings = seed_db(&dir, "settings");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "coordinator = \"https://127.0.0.1:{port}\"\nca = \"{}\"\nstate = \"state\"\n\n[labels]\nring = \"canary\"\n\n\
             [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
             [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
            cstate.join("ca.pem").display()
        ),
    )
    .unwrap();
    let token = ctl(&cstate, port, &["token", "create", "--uses", "1"]);
    assert_eq!(token.code, 0, "{token:?}");
    let enroll = |t: &str| run("rewind-agent", &["enroll", "--config", &config.to_string_lossy(), "--token", t], &[]);
    let r = enroll(token.stdout.trim());
    assert_eq!(r.code, 0, "{r:?}");
    let mut daemon = start_agent(&config);
    let a = eventually("agent connected", Duration::from_secs(30), || {
        only_agent(&cstate, port).filter(|a| a["connected"] == true)
    });
    assert_eq!(a["labels"]["ring"], "canary", "{a}");
    let id = a["id"].as_str().expect("agent id").to_string();

    // A result: an apply on the endpoint while the daemon runs.
    let state: PathBuf = dir.join("state");
    let rel = release("2026.11.0");
    let db = |t: &str, p: &Path| format!("{t}={}", p.display());
    let r = agent(
        &state,
        &[
            "apply",
            "--release",
            &rel.to_string_lossy(),
            "--db",
            &db("notes", &notes),
            "--db",
            &db("settings", &settings),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    eventually("the result is stored", Duration::from_secs(30), || {
        only_agent(&cstate, port).filter(|a| a["results"] == 1 && a["products"][0]["name"] == "notes")
    });
    eventually("the outbox marks it delivered", Duration::from_secs(30), || {
        (agent(&state, &["outbox", "--json"]).json()["pending"] == 0).then_some(())
    });

    // It is PostgreSQL that holds them: rows there, no SQLite file.
    assert!(!cstate.join("coordinator.db").exists(), "no SQLite store written");
    assert_eq!(pg.psql("rewind", &format!("SELECT count(*) FROM agents WHERE id = '{id}'")), "1");
    assert_eq!(pg.psql("rewind", &format!("SELECT count(*) FROM results WHERE agent = '{id}'")), "1");
    let audit_before: u64 = pg.psql("rewind", "SELECT count(*) FROM audit").parse().unwrap();
    assert!(audit_before >= 3, "start, token, enrollment, result...: {audit_before}");

    // kill -9, restart on the same database.
    drop(coord);
    coord = coordinator(&cstate, port, &pg.url());
    let a = eventually("the agent reconnects after the restart", Duration::from_secs(60), || {
        only_agent(&cstate, port).filter(|a| a["connected"] == true)
    });
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["results"], 1, "the result is kept and not counted twice: {a}");
    assert_eq!(a["alarms"], 0, "{a}");
    assert_eq!(a["products"][0]["sequence"], 7, "{a}");
    // The used-up token stays used up across the restart.
    let r = enroll(token.stdout.trim());
    assert_ne!(r.code, 0, "a 1-use token works once: {r:?}");
    // The audit chain continued in PostgreSQL and still verifies.
    let audit_after: u64 = pg.psql("rewind", "SELECT count(*) FROM audit").parse().unwrap();
    assert!(audit_after > audit_before, "{audit_after} > {audit_before}");
    let public = cstate.join("coordinator.pub").to_string_lossy().into_owned();
    let r = ctl(&cstate, port, &["audit", "verify", "--key", &public, "--json"]);
    assert_eq!((r.code, &r.json()["ok"]), (0, &Value::Bool(true)), "the chain from PostgreSQL verifies: {r:?}");
    let r = ctl(&cstate, port, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, 0, "{r:?}");
    let kinds: Vec<String> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["record"] == "entry")
        .map(|v| v["kind"].as_str().unwrap().to_string())
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!((count("coordinator.start"), count("agent.enroll"), count("result")), (2, 1, 1), "{kinds:?}");
    drop(daemon);
    daemon = start_agent(&config);
    eventually("reconnects again", Duration::from_secs(30), || {
        only_agent(&cstate, port).filter(|a| a["connected"] == true && a["results"] == 1)
    });
    drop(daemon);
    drop(coord);
}

#[test]
fn a_missing_malformed_or_unreachable_store_url_is_a_clear_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("s");
    let st = state.to_string_lossy().into_owned();
    let start = |env: &[(&str, &str)]| {
        let mut all =
            vec![("REWIND_STORE", "postgres"), ("REWIND_LISTEN", "127.0.0.1:0"), ("REWIND_WEB_LISTEN", "127.0.0.1:0")];
        all.extend_from_slice(env);
        run("rewind-coordinator", &["--state", &st], &all)
    };

    let r = start(&[]);
    assert_eq!(r.code, 2, "a config error: {r:?}");
    assert!(r.stderr.contains("needs store_url (or REWIND_STORE_URL)"), "{r:?}");
    assert!(!state.exists(), "nothing created: {r:?}");

    let r = start(&[("REWIND_STORE_URL", "postgres://rw:hunter2@db.example/rewind?sslmod=require")]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("store_url postgres://rw:***@db.example/rewind"), "{r:?}");
    assert!(!r.stderr.contains("hunter2"), "never the password: {r:?}");

    let r = run(
        "rewind-coordinator",
        &["--print-config"],
        &[("REWIND_STORE", "postgres"), ("REWIND_STORE_URL", "postgres://rw@127.0.0.1:5432/rewind")],
    );
    assert_eq!(r.code, 0, "a valid URL: {r:?}");
    assert!(r.stdout.contains("store = \"postgres\""), "{r:?}");

    let port = free_port();
    let url = format!("postgres://rw:hunter2@127.0.0.1:{port}/rewind?connect_timeout=3");
    let r = start(&[("REWIND_STORE_URL", &url)]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("PostgreSQL at postgres://rw:***@127.0.0.1:{port}/rewind")), "{r:?}");
    assert!(r.stderr.contains("check that the server runs"), "says what to do: {r:?}");
    assert!(!r.stderr.contains("hunter2") && !r.stderr.contains(PASSWORD), "{r:?}");
}

/// The phased-rollout fixture's fleet (trust root, keys, state dir), its
/// coordinator restarted on PostgreSQL before anything is stored.
fn pg_fleet(dir: &Path, url: &str) -> fleet_rollout_common::Fleet {
    let mut f = fleet_rollout_common::Fleet::new(dir);
    f.kill_coordinator();
    start_pg_coordinator(&mut f, url);
    f
}

fn start_pg_coordinator(f: &mut fleet_rollout_common::Fleet, url: &str) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(f.dir.join("coordinator.log")).unwrap();
    f.coordinator = Some(fleet_rollout_common::Proc(
        Command::new(bin("rewind-coordinator"))
            .args(["--state", &f.state.to_string_lossy()])
            .env("REWIND_LISTEN", format!("127.0.0.1:{}", f.port))
            .env("REWIND_WEB_LISTEN", "127.0.0.1:0")
            .env("REWIND_TRUST", &f.trust)
            .env("REWIND_STORE", "postgres")
            .env("REWIND_STORE_URL", url)
            .env("REWIND_HEARTBEAT_SECONDS", "1")
            .env("REWIND_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    ));
    eventually("coordinator ready on PostgreSQL", Duration::from_secs(30), || {
        (f.ctl(&["agents", "--json"]).code == 0).then_some(())
    });
}

const WAVES: &str = r#"[rollout]
waves = [
  { name = "canary", selector = "ring=canary", bake = "1s" },
  { name = "rest", percent = 100, approval = true },
]
report_timeout = "120s"
auto_rollback = true
"#;

#[test]
fn a_phased_rollout_keeps_its_state_in_postgres_across_a_coordinator_kill_9() {
    use fleet_rollout_common::{ok, wave};
    let pg = Postgres::start();
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = pg_fleet(tmp.path(), &pg.url());
    fleet.add("canary", 1);
    fleet.add("main", 2);
    fleet.wait_connected();
    fleet.bundle("2026.11.0", WAVES, &|t| t, true);
    let r = fleet.ctl(&["rollout", "start", "notes", "2026.11.0", "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 3, "{r:?}");
    let s =
        fleet.wait_status("the rest awaits approval", Duration::from_secs(90), |s| s["state"] == "awaiting_approval");
    assert_eq!(wave(&s, "canary")["succeeded"], 1, "{s:#}");
    assert_eq!(pg.psql("rewind", "SELECT state FROM rollouts"), "awaiting_approval");

    fleet.kill_coordinator();
    start_pg_coordinator(&mut fleet, &pg.url());
    let after = fleet.status();
    assert_eq!(after["state"], "awaiting_approval", "{after:#}");
    assert_eq!(after["waves"], s["waves"], "counts survive the restart");
    fleet.wait_connected();
    ok(&fleet.ctl(&["rollout", "approve", "notes", "rest"]));
    let s = fleet.wait_status("done", Duration::from_secs(90), |s| s["state"] == "done");
    assert!(s["agents"].as_array().unwrap().iter().all(|a| a["outcome"] == "applied"), "{s:#}");
    for e in &fleet.endpoints {
        assert_ne!(rewind_tests::digest(&e.notes), e.start_notes, "{} applied the release", e.id);
    }
    assert_eq!(pg.psql("rewind", "SELECT state FROM rollouts"), "done");
    assert_eq!(pg.psql("rewind", "SELECT count(*) FROM results"), "3", "one result per agent, once");
    assert_eq!(
        pg.psql("rewind", "SELECT count(*) FILTER (WHERE acked IS NULL) FROM deliveries"),
        "0",
        "every delivery acknowledged"
    );
}
