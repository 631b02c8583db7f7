//! `rewindctl demo --exit` (README's first command) end to end with the
//! real binaries: an embedded coordinator, six agent processes, the bad
//! release stopped at the canary and rolled back (proven by digest on the
//! canaries, nothing sent to the rest), the good release through every wave,
//! fleet verification, audit, clean shutdown — and a rerun in the same
//! directory starts from a clean state. The local walkthrough (`--local`)
//! still works, and an unusable --dir is refused with exit 2.

use std::collections::BTreeMap;
use std::time::Instant;

use rewind_tests::{digest, run};
use serde_json::Value;

fn step<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["steps"].as_array().unwrap().iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no step {name}: {j:#}"))
}

#[test]
fn the_fleet_demo_stops_a_bad_canary_and_rolls_a_good_release_to_everyone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let d = dir.to_string_lossy().into_owned();
    let start = Instant::now();
    let r = run("rewindctl", &["demo", "--exit", "--dir", &d, "--json"], &[]);
    let secs = start.elapsed().as_secs_f64();
    println!("rewindctl demo --exit took {secs:.1} s");
    let j: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"));
    assert_eq!(r.code, 0, "{j:#}\nstderr: {}", r.stderr);
    assert_eq!(j["ok"], true, "{j:#}");
    for s in j["steps"].as_array().unwrap() {
        assert_eq!(s["ok"], true, "step {} failed: {s:#}", s["step"]);
    }

    // Six agents: two canaries, the rest early / main, each with its own databases.
    let agents = step(&j, "agents")["figures"]["agents"].as_array().unwrap().clone();
    assert_eq!(agents.len(), 6, "{agents:?}");
    let ring = |r: &str| agents.iter().filter(|a| a["ring"] == r).count();
    assert_eq!((ring("canary"), ring("early"), ring("main")), (2, 2, 2), "{agents:?}");

    // The bad release: halted at the canary and rolled back; every endpoint's
    // data identical to before it; the non-canaries never got a plan.
    let bad = &step(&j, "bad release")["figures"];
    assert_eq!(bad["state"], "rolled_back", "{bad:#}");
    assert!(bad["endpoints"].as_array().unwrap().iter().all(|e| e["identical"] == true), "{bad:#}");
    for a in bad["status"]["agents"].as_array().unwrap() {
        let is_canary = agents.iter().any(|x| x["id"] == a["id"] && x["ring"] == "canary");
        let outcome = a["outcome"].as_str().unwrap();
        if is_canary {
            assert!(matches!(outcome, "failed" | "rolled_back"), "{a}");
        } else {
            assert_eq!(outcome, "pending", "no plan outside the canary: {a}");
        }
    }
    let states: Vec<&str> = bad["timeline"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert!(states.contains(&"rolled_back"), "{states:?}");

    // The good release: done, applied everywhere, through every wave.
    let good = &step(&j, "good release")["figures"];
    assert_eq!(good["state"], "done", "{good:#}");
    let outcomes: Vec<&str> =
        good["status"]["agents"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["applied"; 6], "{good:#}");
    let waves: Vec<&str> =
        good["status"]["waves"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(waves, ["canary", "early", "broad", "all"], "{good:#}");
    assert_eq!(good["status"]["waves"][0]["succeeded"], 2, "{good:#}");
    assert_eq!(good["status"]["waves"][1]["succeeded"], 2, "{good:#}");

    // Checked independently of the demo: every endpoint's databases now have
    // one digest per target (the same migration on the same seed), different
    // from the seed's.
    let mut per_target: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &agents {
        let edir = std::path::PathBuf::from(a["dir"].as_str().unwrap());
        for t in ["notes", "settings"] {
            per_target.entry(t.into()).or_default().push(digest(&edir.join(format!("{t}.db"))));
        }
    }
    let seeded = step(&j, "bad release")["figures"]["endpoints"][0]["digests"].clone();
    for (t, ds) in &per_target {
        assert!(ds.iter().all(|x| x == &ds[0]), "{t}: {ds:?}");
        assert_ne!(Some(ds[0].as_str()), seeded[t].as_str(), "{t} was migrated");
    }
    let fv = &step(&j, "fleet verify")["figures"];
    assert_eq!(fv["ok"], true, "{fv:#}");
    assert_eq!(step(&j, "audit")["figures"]["ok"], true);
    assert_eq!(step(&j, "shutdown")["figures"]["agents_clean"], true, "agents stopped by SIGTERM");
    // Nothing left running: the coordinator's port is free again.
    let url = step(&j, "coordinator")["figures"]["url"].as_str().unwrap().to_string();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "{url} still taken");

    // A rerun in the same directory starts over from a clean state.
    let r = run("rewindctl", &["demo", "--exit", "--dir", &d, "--json", "--agents", "3"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let j: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(step(&j, "agents")["figures"]["agents"].as_array().unwrap().len(), 3);
    assert_eq!(std::fs::read_dir(dir.join("endpoints")).unwrap().count(), 3, "the old endpoints were removed");
}

#[test]
fn the_local_walkthrough_still_runs_and_bad_dirs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("local").to_string_lossy().into_owned();
    let r = run("rewindctl", &["demo", "--local", "--dir", &d, "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["ok"], true);

    // A directory that is not empty and not a demo's: exit 2, nothing touched.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "mine").unwrap();
    let r = run("rewindctl", &["demo", "--exit", "--dir", &other.to_string_lossy()], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not empty and not a previous demo's directory"), "{r:?}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    let r = run("rewindctl", &["demo", "--exit", "--agents", "1"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
}
