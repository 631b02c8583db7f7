//! End-to-end: signed results travel from a real agent's outbox over its
//! mTLS stream into the coordinator, exactly once. An apply run on the
//! endpoint while the daemon runs is delivered at the next heartbeat,
//! verified with the key bound at enrollment, stored, acknowledged and
//! marked delivered in the agent's outbox; restarting the agent, or
//! kill -9 of the coordinator while two more results are produced (sent
//! after its restart as one `Results` message), neither loses nor
//! double-counts one; an endpoint whose state is restored from an
//! older copy is flagged.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rewind_tests::{Proc, free_port};
use rewind_tests::{Run, agent, bin, eventually, release, run, seed_db};
use serde_json::Value;

fn coordinator(state: &Path, port: u16) -> Proc {
    Proc(
        Command::new(bin("rewind-coordinator"))
            .args(["--state", &state.to_string_lossy()])
            .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
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
fn results_are_delivered_once_across_an_agent_restart_and_a_coordinator_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let cstate = tmp.path().join("coordinator");
    let port = free_port();
    let mut coord = coordinator(&cstate, port);
    eventually("coordinator ready", Duration::from_secs(30), || {
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
            "coordinator = \"https://127.0.0.1:{port}\"\nca = \"{}\"\nstate = \"state\"\n\n\
             [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
             [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
            cstate.join("ca.pem").display()
        ),
    )
    .unwrap();
    let token = ctl(&cstate, port, &["token", "create"]);
    assert_eq!(token.code, 0, "{token:?}");
    let r =
        run("rewind-agent", &["enroll", "--config", &config.to_string_lossy(), "--token", token.stdout.trim()], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    // A copy of the fresh state, restored at the end.
    assert!(
        Command::new("cp").args(["-a"]).arg(dir.join("state")).arg(dir.join("state.orig")).status().unwrap().success()
    );
    let mut daemon = start_agent(&config);
    eventually("agent connected", Duration::from_secs(30), || {
        only_agent(&cstate, port).filter(|a| a["connected"] == true)
    });

    // An apply on the endpoint while the daemon runs.
    let state: PathBuf = dir.join("state");
    let rel = release("2026.11.0");
    let db = |t: &str, p: &Path| format!("{t}={}", p.display());
    // `rewind-agent apply|rollback` of the release on both targets.
    let local = |cmd: &str| {
        let (rel, notes, settings) = (rel.to_string_lossy(), db("notes", &notes), db("settings", &settings));
        let r = agent(&state, &[cmd, "--release", &rel, "--db", &notes, "--db", &settings, "--json"]);
        assert_eq!(r.code, 0, "{cmd}: {r:?}");
    };
    local("apply");

    let a = eventually("the result is stored and the inventory updated", Duration::from_secs(30), || {
        only_agent(&cstate, port).filter(|a| a["results"] == 1 && a["products"][0]["name"] == "notes")
    });
    assert_eq!(a["products"][0]["sequence"], 7, "{a}");
    assert_eq!(a["alarms"], 0, "a continuous, correctly signed chain: {a}");
    let delivered = eventually("the outbox marks it delivered", Duration::from_secs(30), || {
        let o = agent(&state, &["outbox", "--json"]).json();
        let items = o["reports"].as_array().cloned().unwrap_or_default();
        (o["pending"] == 0 && items.len() == 1 && items[0]["delivered"] == true).then_some(items)
    });
    assert_eq!(delivered.len(), 1);

    // Restart the agent: its hello now shows the installed release; nothing is resent twice.
    drop(daemon);
    daemon = start_agent(&config);
    let a = eventually("agent reconnected with its new inventory", Duration::from_secs(30), || {
        only_agent(&cstate, port).filter(|a| a["connected"] == true && a["products"][0]["name"] == "notes")
    });
    assert_eq!(a["results"], 1, "{a}");

    // kill -9 the coordinator; a rollback and a second apply finish on the
    // endpoint while it is gone. Their results wait in the outbox and
    // arrive after the restart, as one `Results` message acknowledged by
    // one `ResultAcks`; the first result is not counted again.
    drop(coord);
    local("rollback");
    local("apply");
    let o = agent(&state, &["outbox", "--json"]).json();
    assert_eq!(o["pending"], 2, "the rollback's and the apply's results wait for the coordinator: {o}");
    coord = coordinator(&cstate, port);
    let a = eventually("the backlog delivered after the coordinator restart", Duration::from_secs(60), || {
        only_agent(&cstate, port).filter(|a| a["connected"] == true && a["results"] == 3)
    });
    assert_eq!(a["alarms"], 0, "{a}");
    eventually("nothing pending", Duration::from_secs(30), || {
        (agent(&state, &["outbox", "--json"]).json()["pending"] == 0).then_some(())
    });
    assert_eq!(only_agent(&cstate, port).unwrap()["results"], 3, "still counted once each");

    // The endpoint's state restored from an older copy: its hello announces
    // an audit head behind its verified results — an integrity alarm.
    drop(daemon);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::rename(dir.join("state.orig"), &state).unwrap();
    daemon = start_agent(&config);
    let a = eventually("the fork is flagged", Duration::from_secs(30), || {
        only_agent(&cstate, port).filter(|a| a["alarms"] == 1)
    });
    assert_eq!(a["results"], 3, "{a}");
    drop(daemon);
    drop(coord);
}
