//! Twenty real agents (`ring=canary` ×2, `ring=main` ×18) and a good
//! release through the example's four waves — canary by label, then 5 %
//! and 50 % (approval) and 100 % of the stable hash bucket — with bakes
//! shortened to a second, end to end with a real coordinator:
//!
//! - every wave's plans go to exactly the agents docs/rollouts.md §1 puts
//!   in it, computed here independently from the agent ids (the bucket,
//!   byte for byte, with a BLAKE3 written in this file and pinned to the
//!   doc's test vectors): the coordinator's `plan.sent` steps, the agents
//!   holding a plan while the 50 % wave awaits its approver, and the wave
//!   each agent is shown in;
//! - the 50 % wave goes out only after `rollout approve` by an approver;
//! - the coordinator is killed (-9) right after that approval, mid-wave,
//!   and resumes with every agent in the same wave, sending no plan twice;
//! - the next release of the product (sequence 8) puts every agent in the
//!   same wave again;
//! - both end `done` with all twenty applied and `fleet verify` clean.

mod fleet_rollout_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleet_rollout_common::{Fleet, agent, ok, wave};
use serde_json::Value;

const WAVES: &str = r#"[rollout]
waves = [
  { name = "canary", selector = "ring=canary", bake = "1s" },
  { name = "early",  percent = 5,  bake = "1s" },
  { name = "broad",  percent = 50, bake = "1s", approval = true },
  { name = "all",    percent = 100 },
]
report_timeout = "120s"
auto_rollback = true
"#;

const ORDER: [&str; 4] = ["canary", "early", "broad", "all"];

/// A minimal BLAKE3 (one chunk, 32-byte output): enough for the cohort
/// bucket's input, and independent of the coordinator's `blake3` crate.
mod blake3_one_chunk {
    const IV: [u32; 8] =
        [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19];
    const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
    const CHUNK_START: u32 = 1;
    const CHUNK_END: u32 = 2;
    const ROOT: u32 = 8;

    fn g(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize, x: u32, y: u32) {
        s[a] = s[a].wrapping_add(s[b]).wrapping_add(x);
        s[d] = (s[d] ^ s[a]).rotate_right(16);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_right(12);
        s[a] = s[a].wrapping_add(s[b]).wrapping_add(y);
        s[d] = (s[d] ^ s[a]).rotate_right(8);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_right(7);
    }

    fn compress(cv: &[u32; 8], block: &[u8; 64], block_len: u32, flags: u32) -> [u32; 8] {
        let mut m = [0u32; 16];
        for (i, w) in m.iter_mut().enumerate() {
            *w = u32::from_le_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        }
        // Chunk counter 0: the only chunk.
        let mut s = [
            cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], IV[0], IV[1], IV[2], IV[3], 0, 0, block_len, flags,
        ];
        for round in 0..7 {
            g(&mut s, 0, 4, 8, 12, m[0], m[1]);
            g(&mut s, 1, 5, 9, 13, m[2], m[3]);
            g(&mut s, 2, 6, 10, 14, m[4], m[5]);
            g(&mut s, 3, 7, 11, 15, m[6], m[7]);
            g(&mut s, 0, 5, 10, 15, m[8], m[9]);
            g(&mut s, 1, 6, 11, 12, m[10], m[11]);
            g(&mut s, 2, 7, 8, 13, m[12], m[13]);
            g(&mut s, 3, 4, 9, 14, m[14], m[15]);
            if round < 6 {
                m = PERMUTATION.map(|p| m[p]);
            }
        }
        std::array::from_fn(|i| s[i] ^ s[i + 8])
    }

    /// BLAKE3 of an input of at most one chunk (1024 bytes).
    pub fn hash(input: &[u8]) -> [u8; 32] {
        assert!(input.len() <= 1024, "one chunk only");
        let blocks: Vec<&[u8]> = if input.is_empty() { vec![&[][..]] } else { input.chunks(64).collect() };
        let mut cv = IV;
        for (i, b) in blocks.iter().enumerate() {
            let mut block = [0u8; 64];
            block[..b.len()].copy_from_slice(b);
            let mut flags = if i == 0 { CHUNK_START } else { 0 };
            if i + 1 == blocks.len() {
                flags |= CHUNK_END | ROOT;
            }
            cv = compress(&cv, &block, u32::try_from(b.len()).unwrap(), flags);
        }
        let mut out = [0u8; 32];
        for (i, w) in cv.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// docs/rollouts.md §1 "The bucket, byte for byte".
fn bucket(agent_id: &str, product: &str) -> u64 {
    let h = blake3_one_chunk::hash(format!("rewind-cohort-1\0{product}\0{agent_id}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().unwrap()) % 10_000
}

/// The wave docs/rollouts.md §1 puts an agent in, for [`WAVES`].
fn expected_wave(ring: &str, agent_id: &str) -> &'static str {
    match bucket(agent_id, "notes") {
        _ if ring == "canary" => "canary",
        b if b < 500 => "early",
        b if b < 5000 => "broad",
        _ => "all",
    }
}

/// Each agent's wave as the status shows it.
fn waves_of(s: &Value) -> BTreeMap<String, String> {
    s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_string(), a["wave"].as_str().unwrap_or("(none)").to_string()))
        .collect()
}

/// The bundle id `release build` gave a bundle file.
fn bundle_id(path: &std::path::Path) -> String {
    let b: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    b["id"].as_str().unwrap().to_string()
}

/// The agents of a bundle's apply deliveries, with how many each got.
fn applies(fleet: &Fleet, bundle: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (a, k, b) in fleet.deliveries() {
        if k == "apply" && b == bundle {
            *out.entry(a).or_default() += 1;
        }
    }
    out
}

/// The rollout's `plan.sent` steps in order: the waves named and the agents.
fn plan_steps(fleet: &Fleet, rollout: &str) -> Vec<(Vec<String>, BTreeSet<String>)> {
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect() };
    fleet
        .audit()
        .into_iter()
        .filter(|(k, _, p)| k == "plan.sent" && p["rollout"] == rollout)
        .map(|(_, _, p)| (strings(&p["waves"]), strings(&p["agents"]).into_iter().collect()))
        .collect()
}

/// One release through the four waves; returns each agent's wave. With
/// `restart`, the coordinator is killed (-9) right after the approval and
/// started again on the same state.
fn roll_out(
    fleet: &mut Fleet,
    version: &str,
    sequence: u64,
    bundle: &str,
    approver: &std::path::Path,
    expected: &BTreeMap<String, &'static str>,
    restart: bool,
) -> BTreeMap<String, String> {
    let rollout = format!("notes@{sequence}");
    let in_wave =
        |w: &str| -> BTreeSet<String> { expected.iter().filter(|(_, x)| **x == w).map(|(id, _)| id.clone()).collect() };
    let r = fleet.ctl(&["rollout", "start", "notes", version, "--json"]);
    ok(&r);
    assert_eq!(r.json()["agents"], 20, "{r:?}");

    // Canary and early done; the 50 % wave waits for its approver, and
    // only the agents of the first two waves hold the plan.
    let s = fleet.wait_status(&format!("{rollout} awaits approval of broad"), Duration::from_secs(60), |s| {
        s["rollout"] == rollout.as_str() && s["state"] == "awaiting_approval"
    });
    assert_eq!(s["awaiting_approval"], "broad", "{s:#}");
    let first: BTreeSet<String> = in_wave("canary").union(&in_wave("early")).cloned().collect();
    let holding: BTreeSet<String> = applies(fleet, bundle).into_keys().collect();
    assert_eq!(holding, first, "{rollout}: apply plans before the approval");
    let sent: BTreeSet<String> = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["plan_sent"] == true)
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, first, "{s:#}");
    for w in ["canary", "early"] {
        assert_eq!(wave(&s, w)["state"], "done", "{s:#}");
        assert_eq!(wave(&s, w)["succeeded"], in_wave(w).len(), "{w}: {s:#}");
    }
    assert_eq!(wave(&s, "broad")["state"], "awaiting_approval", "{s:#}");
    let before = waves_of(&s);

    let r = fleet.ctl_as(approver, &["rollout", "approve", "notes", "broad", "--json"]);
    ok(&r);
    if restart {
        // kill -9 mid-wave: the broad plans are queued (stored before
        // they go out), its agents are applying.
        fleet.kill_coordinator();
        fleet.start_coordinator();
        let after = fleet.status();
        assert_eq!(after["rollout"], rollout.as_str(), "{after:#}");
        assert_eq!(waves_of(&after), before, "every agent in the same wave after the restart");
        fleet.wait_connected();
    }

    let s = fleet.wait_status(&format!("{rollout} done"), Duration::from_secs(90), |s| {
        s["rollout"] == rollout.as_str() && s["state"] == "done"
    });
    for (id, w) in expected {
        let a = agent(&s, id);
        assert_eq!(a["outcome"], "applied", "{id}: {s:#}");
        assert_eq!(a["wave"], *w, "{id}: {s:#}");
    }
    for w in ORDER {
        assert_eq!(wave(&s, w)["succeeded"], in_wave(w).len(), "{w}: {s:#}");
    }
    assert_eq!(waves_of(&s), before, "{rollout}: the waves shown at approval time held to the end");

    // Each coordinator step sent one wave's plans, to exactly its agents,
    // in wave order; every agent got one apply plan.
    let steps = plan_steps(fleet, &rollout);
    let mut order = Vec::new();
    let mut reached: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (waves, agents) in &steps {
        assert_eq!(waves.len(), 1, "{rollout}: one wave per step: {steps:?}");
        if order.last() != Some(&waves[0]) {
            order.push(waves[0].clone());
        }
        reached.entry(waves[0].clone()).or_default().extend(agents.iter().cloned());
    }
    let nonempty: Vec<String> = ORDER.iter().filter(|w| !in_wave(w).is_empty()).map(|w| (*w).to_string()).collect();
    assert_eq!(order, nonempty, "{rollout}: waves in order: {steps:?}");
    for w in ORDER {
        assert_eq!(reached.get(w).cloned().unwrap_or_default(), in_wave(w), "{rollout}: wave {w}");
    }
    let counts = applies(fleet, bundle);
    assert_eq!(counts.len(), 20, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "never a plan twice: {counts:?}");
    waves_of(&s)
}

#[test]
fn twenty_agents_go_through_four_waves_in_stable_cohorts_across_a_restart_and_the_next_release() {
    // The bucket written here agrees with the doc's test vectors.
    for (id, product, prefix, b) in [
        ("agt-0001", "notes", "1f5f534b01045041", 1759),
        ("agt-0002", "notes", "dc13931ceadb4a03", 3484),
        ("agt-0001", "mail", "8827443cc405f228", 4616),
        ("agt-0123456789abcdef", "notes", "523f84e00b91d784", 9714),
    ] {
        let h = blake3_one_chunk::hash(format!("rewind-cohort-1\0{product}\0{id}").as_bytes());
        let hex: String = h[..8].iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!((hex.as_str(), bucket(id, product)), (prefix, b), "{id} {product}");
    }

    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("canary", 2);
    fleet.add("main", 18);
    fleet.wait_connected();
    let approver = fleet.operator("ann", "approver");
    let expected: BTreeMap<String, &'static str> =
        fleet.endpoints.iter().map(|e| (e.id.clone(), expected_wave(&e.ring, &e.id))).collect();
    eprintln!("expected waves: {expected:?}");

    let first = fleet.bundle("2026.11.0", WAVES, &|t| t, true);
    // The next release of the product: 2026.11.0's migrations are already
    // in every ledger (same ids and checksums), so they are no-ops on top
    // of sequence 7 and the release installs with nothing to migrate. Built
    // without samples: its start state is sequence 7's, not the seed's.
    let next = |t: String| {
        t.replace("version = \"2026.11.0\"", "version = \"2026.11.3\"").replace("sequence = 7", "sequence = 8")
    };
    let second = fleet.bundle("2026.11.0", WAVES, &next, false);
    let (first, second) = (bundle_id(&first), bundle_id(&second));

    let seven = roll_out(&mut fleet, "2026.11.0", 7, &first, &approver, &expected, true);
    let r = fleet.ctl(&["fleet", "verify", "notes", "2026.11.0"]);
    assert_eq!(r.code, 0, "{r:?}");
    for e in &fleet.endpoints {
        assert!(!e.at_start(), "{} applied 2026.11.0", e.id);
    }

    let eight = roll_out(&mut fleet, "2026.11.3", 8, &second, &approver, &expected, false);
    assert_eq!(eight, seven, "the next release puts every agent in the same wave");
    let r = fleet.ctl(&["fleet", "verify", "notes", "2026.11.3"]);
    assert_eq!(r.code, 0, "{r:?}");
    rewind_tests::eventually("inventories show sequence 8", Duration::from_secs(30), || {
        let a = fleet.ctl(&["agents", "--json"]).json();
        let a = a.as_array()?;
        (a.len() == 20 && a.iter().all(|x| x["products"][0]["sequence"] == 8)).then_some(())
    });
}
