//! End-to-end single-wave rollout (a release whose `[rollout]` is one wave
//! of the whole fleet, as for a release without one): a 2-of-3 trust root, a release bundle built
//! and signed by two people, refused by the coordinator while under-signed,
//! uploaded, started for five real agents over mTLS, applied everywhere
//! (each agent re-checks the signatures against its own trust root),
//! reported back as signed results, then rolled back fleet-wide with the
//! pre-signed rollback plan — every database proven back to its digest.
//! Fleet verification names an endpoint changed out of band, and the
//! coordinator's audit log holds every step, chained and signed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rewind_tests::{Proc, ok};
use rewind_tests::{Run, bin, copy_dir, digest, eventually, release, run, seed_db};
use serde_json::Value;

struct Fleet {
    state: PathBuf,
    port: u16,
}

impl Fleet {
    fn ctl(&self, args: &[&str]) -> Run {
        let url = format!("https://127.0.0.1:{}", self.port);
        let ca = self.state.join("ca.pem").to_string_lossy().into_owned();
        let token = self.state.join("admin.token").to_string_lossy().into_owned();
        run("rewindctl", args, &[("REWIND_COORDINATOR", &url), ("REWIND_CA", &ca), ("REWIND_TOKEN_FILE", &token)])
    }

    fn status(&self) -> Option<Value> {
        let r = self.ctl(&["rollout", "status", "notes", "--json"]);
        (r.code == 0).then(|| r.json())
    }
}

fn outcomes(status: &Value) -> Vec<String> {
    status["agents"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_single_wave_release_reaches_five_agents_and_rolls_back_with_proofs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = |name: &str| t.join(name).to_string_lossy().into_owned();
    for k in ["alice", "bob", "carol"] {
        ok(&run("rewindctl", &["keys", "generate", "--out", &p(k)], &[]));
    }
    ok(&run(
        "rewindctl",
        &[
            "trust",
            "init",
            "--threshold",
            "2",
            "--key",
            &p("alice.pub"),
            "--key",
            &p("bob.pub"),
            "--key",
            &p("carol.pub"),
            "--out",
            &p("trust.toml"),
        ],
        &[],
    ));
    let bundle = p("notes.bundle.json");
    // Rehearsed on sample databases: the bundle predicts each target's schema digest.
    let samples = t.join("samples");
    std::fs::create_dir_all(&samples).unwrap();
    let (sn, ss) = (seed_db(&samples, "notes"), seed_db(&samples, "settings"));
    // The example's four waves (with 15 minute and one hour bakes) become
    // one wave of everyone: what a release without [rollout] gets.
    let copy = t.join("2026.11.0");
    std::fs::create_dir_all(copy.join("migrations")).unwrap();
    copy_dir(&release("2026.11.0"), &copy);
    let text = std::fs::read_to_string(copy.join("release.toml")).unwrap();
    let head = &text[..text.find("\n[rollout]").unwrap()];
    std::fs::write(
        copy.join("release.toml"),
        format!("{head}\n[rollout]\nwaves = [{{ name = \"all\", percent = 100 }}]\nauto_rollback = true\n"),
    )
    .unwrap();
    ok(&run(
        "rewindctl",
        &[
            "release",
            "build",
            &copy.to_string_lossy(),
            "--sample",
            &format!("notes={}", sn.display()),
            "--sample",
            &format!("settings={}", ss.display()),
            "--out",
            &bundle,
        ],
        &[],
    ));
    ok(&run("rewindctl", &["release", "sign", &bundle, "--key", &p("alice.key")], &[]));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let fleet = Fleet { state: t.join("coordinator"), port };
    let _coordinator = Proc(
        Command::new(bin("rewind-coordinator"))
            .args(["--state", &fleet.state.to_string_lossy()])
            .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "REWIND_WEB_LISTEN",
                format!(
                    "127.0.0.1:{}",
                    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
                ),
            )
            .env("REWIND_TRUST", p("trust.toml"))
            .env("REWIND_HEARTBEAT_SECONDS", "1")
            .env("REWIND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("coordinator ready", Duration::from_secs(30), || {
        (fleet.ctl(&["agents", "--json"]).code == 0).then_some(())
    });

    // One signature of two: the coordinator refuses the upload.
    let r = fleet.ctl(&["release", "upload", &bundle]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("refused") && r.stderr.contains("signatures"), "{r:?}");
    ok(&run("rewindctl", &["release", "sign", &bundle, "--key", &p("bob.key")], &[]));
    ok(&fleet.ctl(&["release", "upload", &bundle]));

    // Five endpoints.
    let token = fleet.ctl(&["token", "create", "--uses", "5"]);
    ok(&token);
    let mut endpoints: Vec<(PathBuf, PathBuf, PathBuf, String, String)> = Vec::new();
    let mut daemons = Vec::new();
    for i in 0..5 {
        let dir = t.join(format!("endpoint{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let notes = seed_db(&dir, "notes");
        let settings = seed_db(&dir, "settings");
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "coordinator = \"https://127.0.0.1:{port}\"\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
                fleet.state.join("ca.pem").display(),
                p("trust.toml")
            ),
        )
        .unwrap();
        ok(&run(
            "rewind-agent",
            &["enroll", "--config", &config.to_string_lossy(), "--token", token.stdout.trim()],
            &[],
        ));
        daemons.push(Proc(
            Command::new(bin("rewind-agent"))
                .args(["run", "--config", &config.to_string_lossy()])
                .env("REWIND_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        let (dn, ds) = (digest(&notes), digest(&settings));
        endpoints.push((dir, notes, settings, dn, ds));
    }
    eventually("five agents connected with inventory", Duration::from_secs(30), || {
        let r = fleet.ctl(&["agents", "--json"]);
        let a = r.json();
        let a = a.as_array()?;
        (a.len() == 5
            && a.iter().all(|x| x["connected"] == true && x["targets"].as_array().is_some_and(|t| t.len() == 2)))
        .then_some(())
    });

    let r = fleet.ctl(&["rollout", "start", "notes", "2026.11.0", "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 5, "{r:?}");
    let s = eventually("applied on all five", Duration::from_secs(60), || {
        fleet.status().filter(|s| s["state"] == "done" && s["waves"][0]["succeeded"] == 5)
    });
    assert_eq!(outcomes(&s), vec!["applied"; 5], "{s}");
    assert_eq!(s["waves"][0]["succeeded"], 5, "{s}");
    for (_, notes, _, before, _) in &endpoints {
        assert_ne!(&digest(notes), before, "the migration changed {}", notes.display());
    }
    let agents = eventually("inventories show sequence 7", Duration::from_secs(30), || {
        let a = fleet.ctl(&["agents", "--json"]).json();
        a.as_array()?.iter().all(|x| x["products"][0]["sequence"] == 7 && x["results"] == 1).then_some(a)
    });
    assert!(agents.as_array().unwrap().iter().all(|x| x["alarms"] == 0), "{agents}");

    // Fleet verification: every endpoint has the predicted schema digests.
    let r = fleet.ctl(&["fleet", "verify", "notes", "2026.11.0", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v = r.json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["groups"].as_array().unwrap().len(), 2, "one group per target: {v}");
    assert!(v["groups"].as_array().unwrap().iter().all(|g| g["agents"].as_array().unwrap().len() == 5), "{v}");
    // One endpoint's database changed out of band: exit 1 naming it.
    let (dir3, notes3) = (&endpoints[3].0, &endpoints[3].1);
    let id3: Value =
        serde_json::from_str(&std::fs::read_to_string(dir3.join("state/identity/agent.json")).unwrap()).unwrap();
    let id3 = id3["agent_id"].as_str().unwrap().to_string();
    rusqlite::Connection::open(notes3).unwrap().execute_batch("ALTER TABLE notes ADD COLUMN sneaky TEXT").unwrap();
    let v = eventually("fleet verify sees the drift", Duration::from_secs(30), || {
        let r = fleet.ctl(&["fleet", "verify", "notes", "2026.11.0", "--json"]);
        (r.code == 1).then(|| r.json())
    });
    let drift = v["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{v}");
    assert_eq!(
        (drift[0]["agent"].as_str().unwrap(), drift[0]["target"].as_str().unwrap()),
        (id3.as_str(), "notes"),
        "{v}"
    );
    assert_eq!(drift[0]["predicted"], true, "{v}");
    let r = fleet.ctl(&["fleet", "verify", "notes", "2026.11.0"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains(&id3) && r.stdout.contains("DRIFT"), "{r:?}");
    // Undone out of band: the logical schema is the same again.
    rusqlite::Connection::open(notes3).unwrap().execute_batch("ALTER TABLE notes DROP COLUMN sneaky").unwrap();
    eventually("fleet verify passes again", Duration::from_secs(30), || {
        (fleet.ctl(&["fleet", "verify", "notes", "2026.11.0"]).code == 0).then_some(())
    });

    // Fleet-wide rollback with the pre-signed plan: no signing key needed.
    let r = fleet.ctl(&["rollback", "notes", "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 5);
    let s = eventually("rolled back on all five", Duration::from_secs(60), || {
        fleet.status().filter(|s| s["state"] == "rolled_back" && outcomes(s).iter().all(|o| o == "rolled_back"))
    });
    assert_eq!(s["waves"][0]["rolled_back"], 5, "{s}");
    assert!(s["summary"].as_str().unwrap().starts_with("rolled back, verified"), "{s}");
    for (dir, notes, settings, dn, ds) in &endpoints {
        assert_eq!(&digest(notes), dn, "notes.db in {} is back to its digest", dir.display());
        assert_eq!(&digest(settings), ds, "settings.db in {} is back to its digest", dir.display());
    }
    // Nothing above sequence 7 is left to roll back; a second rollback of
    // the same rollout is refused; both change nothing (exit 2).
    let r = fleet.ctl(&["rollback", "notes", "--to-sequence", "7"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no rollout above sequence 7"), "{r:?}");
    let r = fleet.ctl(&["rollback", "notes"]);
    assert_eq!(r.code, 2, "{r:?}");

    // The coordinator's audit log recorded every step, chained and signed.
    let public = fleet.state.join("coordinator.pub").to_string_lossy().into_owned();
    let r = fleet.ctl(&["audit", "verify", "--key", &public, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["ok"], true);
    assert!(r.json()["chains"][0]["checkpoints"].as_u64().unwrap() >= 2, "checkpoints at start and export: {r:?}");
    let export = fleet.ctl(&["audit", "export", "--format", "jsonl"]);
    ok(&export);
    let records: Vec<Value> = export.stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect();
    let kinds: Vec<String> =
        records.iter().filter(|r| r["record"] == "entry").map(|r| r["kind"].as_str().unwrap().to_string()).collect();
    assert!(records.iter().any(|r| r["record"] == "checkpoint"), "{records:?}");
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("agent.enroll"), 5, "{kinds:?}");
    assert_eq!(count("bundle.upload"), 1, "{kinds:?}");
    assert_eq!(
        (count("rollout.started"), count("rollout.rolling_back"), count("rollout.rolled_back")),
        (1, 1, 1),
        "{kinds:?}"
    );
    assert_eq!((count("plan.sent"), count("rollback.sent")), (1, 1), "one entry per step: {kinds:?}");
    assert_eq!(count("result"), 10, "an apply and a rollback result per agent, once each: {kinds:?}");
    assert!(count("token.create") >= 1 && count("coordinator.start") == 1, "{kinds:?}");
    // An edited entry is detected.
    rusqlite::Connection::open(fleet.state.join("coordinator.db"))
        .unwrap()
        .execute("UPDATE audit SET params = '{\"by\":\"nobody\"}' WHERE kind = 'bundle.upload'", [])
        .unwrap();
    let r = fleet.ctl(&["audit", "verify", "--key", &public]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("BROKEN"), "{r:?}");
    drop(daemons);
}
