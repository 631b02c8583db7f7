//! Signed bundles end to end with the real binaries: `rewindctl keys
//! generate`, `trust init|rotate`, `release build|sign|verify`, and
//! `rewind-agent apply|rollback --bundle --trust` under a 2-of-3 root.
//! Every refusal must exit 2, leave the databases' digests as they were,
//! and leave a `plan.refused` entry with its reason in the audit chain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rewind_tests::{Run, agent, copy_dir, digest, release, run, seed_db};
use serde_json::Value;

struct Fx {
    dir: tempfile::TempDir,
    trust: PathBuf,
    notes: PathBuf,
    settings: PathBuf,
    state: PathBuf,
}

impl Fx {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_string_lossy().into_owned()
    }
    fn dbs(&self) -> Vec<String> {
        vec![format!("notes={}", self.notes.display()), format!("settings={}", self.settings.display())]
    }
    fn digests(&self) -> (String, String) {
        (digest(&self.notes), digest(&self.settings))
    }
}

fn ctl(args: &[&str]) -> Run {
    run("rewindctl", args, &[])
}

fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "{r:?}");
    r
}

/// Returns the key id.
fn keygen(fx: &Fx, name: &str) -> String {
    let r = ok(ctl(&["keys", "generate", "--out", &fx.s(name), "--json"]));
    r.json()["keyid"].as_str().unwrap().to_string()
}

/// alice, bob and carol keys, a 2-of-3 root, seeded databases.
fn setup() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let notes = seed_db(dir.path(), "notes");
    let settings = seed_db(dir.path(), "settings");
    let fx = Fx { trust: dir.path().join("trust.toml"), state: dir.path().join("state"), notes, settings, dir };
    for k in ["alice", "bob", "carol"] {
        keygen(&fx, k);
    }
    ok(ctl(&[
        "trust",
        "init",
        "--threshold",
        "2",
        "--key",
        &fx.s("alice.pub"),
        "--key",
        &fx.s("bob.pub"),
        "--key",
        &format!("carol={}", fx.s("carol.pub")),
        "--out",
        &fx.trust.to_string_lossy(),
    ]));
    fx
}

/// Builds a bundle of `rel` with samples copied from the endpoint's
/// databases (as they are now), then signs it with `signers`.
fn bundle(fx: &Fx, rel: &Path, out: &str, extra: &[&str], signers: &[&str]) -> PathBuf {
    build_signed(fx, rel, out, extra, signers, true)
}

fn build_signed(fx: &Fx, rel: &Path, out: &str, extra: &[&str], signers: &[&str], samples: bool) -> PathBuf {
    let out = fx.p(out);
    let mut args = vec!["release".to_string(), "build".into(), rel.to_string_lossy().into_owned()];
    for (t, db) in [("notes", &fx.notes), ("settings", &fx.settings)].into_iter().filter(|_| samples) {
        args.push("--sample".into());
        args.push(format!("{t}={}", db.display()));
    }
    args.extend(extra.iter().map(|s| (*s).to_string()));
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    ok(ctl(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    for k in signers {
        ok(ctl(&["release", "sign", &out.to_string_lossy(), "--key", &fx.s(&format!("{k}.key"))]));
    }
    out
}

fn with_bundle(fx: &Fx, cmd: &str, bundle: &Path, trust: &Path, extra: &[&str]) -> Run {
    let (b, t) = (bundle.to_string_lossy().into_owned(), trust.to_string_lossy().into_owned());
    let dbs = fx.dbs();
    let mut args = vec![cmd, "--bundle", &b, "--trust", &t, "--db", &dbs[0], "--db", &dbs[1]];
    args.extend_from_slice(extra);
    agent(&fx.state, &args)
}

fn refusals(fx: &Fx) -> Vec<Value> {
    let db = rusqlite::Connection::open(fx.state.join("agent.db")).unwrap();
    let mut stmt = db.prepare("SELECT params FROM audit WHERE kind = 'plan.refused' ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|p| serde_json::from_str(&p.unwrap()).unwrap()).collect()
}

/// Exit 2, data untouched, the reason on stderr and in the audit chain.
fn assert_refused(fx: &Fx, r: &Run, before: &(String, String), code: &str, reason: &str) {
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(&format!("plan refused ({code})")) && r.stderr.contains(reason), "{r:?}");
    assert_eq!(&fx.digests(), before, "a refused plan changed data");
    let last = refusals(fx).pop().unwrap_or_else(|| panic!("no plan.refused audit entry: {r:?}"));
    assert_eq!(last["code"], code, "{last}");
    assert!(last["reason"].as_str().unwrap().contains(reason), "{last}");
    ok(agent(&fx.state, &["audit", "verify"]));
}

/// Edits every envelope of a bundle file.
fn edit_envelopes(bundle: &Path, f: impl Fn(&mut Value)) {
    let mut b: Value = serde_json::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    f(&mut b["apply"]);
    for r in b["rollback"].as_array_mut().unwrap() {
        f(&mut r["envelope"]);
    }
    for r in b["activate"].as_array_mut().into_iter().flatten() {
        f(&mut r["envelope"]);
    }
    std::fs::write(bundle, serde_json::to_string(&b).unwrap()).unwrap();
}

/// A flag-only release of the same product with a higher sequence.
fn newer_release(fx: &Fx) -> PathBuf {
    let dir = fx.p("2026.12.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("release.toml"),
        "name = \"notes\"\nversion = \"2026.12.0\"\nsequence = 8\napp_version = \"4.3.0\"\nowner = \"storage-team\"\n\
         on_call = \"pager:storage\"\n\n[[target]]\nname = \"notes\"\n\n[[target]]\nname = \"settings\"\n\n[[flag]]\nname = \"dark_mode\"\nvalue = true\n\
         previous = false\nowner = \"ui-team\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn two_of_three_applies_and_verify_says_so() {
    let fx = setup();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "bob"]);
    let v =
        ok(ctl(&["release", "verify", &b.to_string_lossy(), "--trust", &fx.trust.to_string_lossy(), "--json"])).json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["plans"].as_array().unwrap().len(), 9, "apply + 7 rollback plans + 1 flag activation plan: {v}");
    let r = ok(with_bundle(&fx, "apply", &b, &fx.trust, &["--json"])).json();
    assert_eq!(r["status"], "applied", "{r}");
    let after = fx.digests();
    assert_ne!(after, before);
    for (t, now) in [("notes", &after.0), ("settings", &after.1)] {
        let tr = r["targets"].as_array().unwrap().iter().find(|x| x["name"] == t).unwrap();
        assert_eq!(&tr["after"], now, "{r}");
    }
    assert!(refusals(&fx).is_empty());
    assert!(fx.state.join("trust-root.toml").exists(), "the root is pinned on first use");
}

#[test]
fn one_signature_is_refused_and_verify_names_the_missing_signers() {
    let fx = setup();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice"]);
    let v = ctl(&["release", "verify", &b.to_string_lossy(), "--trust", &fx.trust.to_string_lossy()]);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains("1 more needed from") && v.stderr.contains("bob") && v.stderr.contains("carol"), "{v:?}");
    let r = with_bundle(&fx, "apply", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "signatures", "1 of 2 required");
}

#[test]
fn the_same_key_twice_counts_once() {
    let fx = setup();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice"]);
    edit_envelopes(&b, |e| {
        let s = e["signatures"][0].clone();
        e["signatures"].as_array_mut().unwrap().push(s);
    });
    let r = with_bundle(&fx, "apply", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "signatures", "counts once");
}

#[test]
fn an_unknown_key_does_not_count() {
    let fx = setup();
    keygen(&fx, "mallory");
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "mallory"]);
    let r = with_bundle(&fx, "apply", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "signatures", "unknown key");
}

#[test]
fn a_revoked_key_does_not_count() {
    let fx = setup();
    let carol = ok(ctl(&["keys", "generate", "--out", &fx.s("carol2"), "--json"])).json()["keyid"]
        .as_str()
        .unwrap()
        .to_string();
    let revoking = fx.p("revoking.toml");
    ok(ctl(&[
        "trust",
        "init",
        "--threshold",
        "2",
        "--key",
        &fx.s("alice.pub"),
        "--key",
        &fx.s("bob.pub"),
        "--key",
        &fx.s("carol2.pub"),
        "--out",
        &revoking.to_string_lossy(),
    ]));
    let text = std::fs::read_to_string(&revoking).unwrap().replace("revoked = []", &format!("revoked = [\"{carol}\"]"));
    std::fs::write(&revoking, text).unwrap();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "carol2"]);
    let r = with_bundle(&fx, "apply", &b, &revoking, &[]);
    assert_refused(&fx, &r, &before, "signatures", "revoked key");
}

#[test]
fn an_expired_plan_is_refused() {
    let fx = setup();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &["--expires", "1s"], &["alice", "bob"]);
    // Expiry is wall-clock time in whole seconds: wait until it has passed.
    std::thread::sleep(Duration::from_millis(2100));
    let r = with_bundle(&fx, "apply", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "expired", "expired");
    let v = ctl(&["release", "verify", &b.to_string_lossy(), "--trust", &fx.trust.to_string_lossy()]);
    assert!(v.code == 2 && v.stderr.contains("EXPIRED"), "{v:?}");
}

#[test]
fn an_older_sequence_is_refused_after_a_newer_one_and_the_same_plan_is_a_noop() {
    let fx = setup();
    let old = bundle(&fx, &release("2026.11.0"), "old.json", &[], &["alice", "bob"]);
    ok(with_bundle(&fx, "apply", &old, &fx.trust, &[]));
    // Unrehearsed: its plans check sequences only.
    let newer = build_signed(&fx, &newer_release(&fx), "new.json", &[], &["bob", "carol"], false);
    ok(with_bundle(&fx, "apply", &newer, &fx.trust, &[]));
    let again = ok(with_bundle(&fx, "apply", &newer, &fx.trust, &["--json"])).json();
    assert!(again["message"].as_str().unwrap().contains("already applied"), "{again}");
    let before = fx.digests();
    let r = with_bundle(&fx, "apply", &old, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "replay", "2026.12.0 (sequence 8) is installed");
}

#[test]
fn a_plan_built_for_another_start_state_is_refused() {
    let fx = setup();
    // The sample the bundle was built from has a schema this endpoint lacks.
    let other = fx.p("other");
    std::fs::create_dir_all(&other).unwrap();
    let sample = seed_db(&other, "notes");
    rusqlite::Connection::open(&sample)
        .unwrap()
        .execute_batch("CREATE TABLE tags(id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    let out = fx.p("mix.json");
    ok(ctl(&[
        "release",
        "build",
        &release("2026.11.0").to_string_lossy(),
        "--sample",
        &format!("notes={}", sample.display()),
        "--sample",
        &format!("settings={}", fx.settings.display()),
        "--out",
        &out.to_string_lossy(),
    ]));
    for k in ["alice", "bob"] {
        ok(ctl(&["release", "sign", &out.to_string_lossy(), "--key", &fx.s(&format!("{k}.key"))]));
    }
    let before = fx.digests();
    let r = with_bundle(&fx, "apply", &out, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "start-state", "target notes");
    // Same for the installed sequence the plan expects.
    let seq = bundle(&fx, &release("2026.11.0"), "seq.json", &["--from-sequence", "6"], &["alice", "bob"]);
    let r = with_bundle(&fx, "apply", &seq, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "start-state", "starts from sequence 6");
}

#[test]
fn an_oversize_payload_is_refused_before_anything_else() {
    let fx = setup();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "bob"]);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&b).unwrap()).unwrap();
    v["apply"]["payload"] = Value::String("20".repeat(16 * 1024 * 1024 + 1));
    std::fs::write(&b, serde_json::to_string(&v).unwrap()).unwrap();
    let r = with_bundle(&fx, "apply", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "oversize", "over the 16777216-byte limit");
}

#[test]
fn a_rotated_root_needs_k_keys_of_the_pinned_one() {
    let fx = setup();
    // First use pins version 1.
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "bob"]);
    ok(with_bundle(&fx, "apply", &b, &fx.trust, &[]));
    ok(with_bundle(&fx, "rollback", &b, &fx.trust, &[]));
    for k in ["dave", "erin"] {
        keygen(&fx, k);
    }
    let v2 = fx.p("trust-v2.toml");
    ok(ctl(&[
        "trust",
        "init",
        "--threshold",
        "2",
        "--key",
        &fx.s("dave.pub"),
        "--key",
        &fx.s("erin.pub"),
        "--out",
        &v2.to_string_lossy(),
    ]));
    let rotate =
        |key: &str| ctl(&["trust", "rotate", &fx.trust.to_string_lossy(), &v2.to_string_lossy(), "--key", &fx.s(key)]);
    let r = ok(rotate("alice.key"));
    assert!(r.stdout.contains("not yet accepted"), "{r:?}");
    let new_keys = bundle(&fx, &release("2026.11.0"), "b2.json", &[], &["dave", "erin"]);
    let before = fx.digests();
    let r = with_bundle(&fx, "apply", &new_keys, &v2, &[]);
    assert_refused(&fx, &r, &before, "trust-root", "not signed by enough keys of version 1");
    // A key of the new root cannot vouch for it.
    let r = rotate("dave.key");
    assert_eq!(r.code, 2, "{r:?}");
    let r = ok(rotate("bob.key"));
    assert!(r.stdout.contains("will accept it"), "{r:?}");
    let r = ok(with_bundle(&fx, "apply", &new_keys, &v2, &["--json"])).json();
    assert_eq!(r["status"], "applied", "{r}");
    // The old root is no longer accepted, nor bundles signed only by its keys.
    let before = fx.digests();
    let r = with_bundle(&fx, "rollback", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "trust-root", "older than the pinned version 2");
    let r = with_bundle(&fx, "rollback", &b, &v2, &[]);
    assert_refused(&fx, &r, &before, "signatures", "unknown key");
}

#[test]
fn rollback_from_the_bundle_needs_no_signing_key() {
    let fx = setup();
    let start = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "carol"]);
    ok(with_bundle(&fx, "apply", &b, &fx.trust, &[]));
    assert_ne!(fx.digests(), start);
    let status = |fx: &Fx| ok(agent(&fx.state, &["status", "--json"])).json();
    let pinned = status(&fx)["pinned_snapshots"].clone();
    assert_eq!(pinned, 2, "the release's snapshots are pinned until it is finalized");
    for k in ["alice", "bob", "carol"] {
        std::fs::remove_file(fx.p(&format!("{k}.key"))).unwrap();
    }
    let r = ok(with_bundle(
        &fx,
        "rollback",
        &b,
        &fx.trust,
        &["--granularity", "flag", "--subject", "new_checkout", "--json"],
    ))
    .json();
    assert_eq!(r["flags"]["new_checkout"], false, "{r}");
    // A part's rollback leaves the release installed: its snapshots stay
    // pinned, so a prune cannot take what the release's rollback needs.
    let after = status(&fx);
    assert_eq!(after["pinned_snapshots"], pinned, "{after}");
    assert_eq!(after["installed"][0]["release"], "2026.11.0", "{after}");
    ok(agent(&fx.state, &["snapshot", "prune", "--keep", "0"]));
    assert_eq!(status(&fx)["snapshots"], 2, "pinned snapshots survive a prune");
    let settings_rollback = || {
        ok(with_bundle(&fx, "rollback", &b, &fx.trust, &["--granularity", "target", "--subject", "settings", "--json"]))
            .json()
    };
    let r = settings_rollback();
    assert_eq!(r["status"], "rolled_back", "{r}");
    assert_eq!(digest(&fx.settings), start.1, "settings back to its start");
    // The same part again, already undone: still a journaled plan with a
    // signed result in the outbox (a coordinator that sent it waits for one).
    let pending = || ok(agent(&fx.state, &["outbox", "--json"])).json()["reports"].as_array().unwrap().len();
    let before = pending();
    let again = settings_rollback();
    assert_eq!(again["status"], "rolled_back", "{again}");
    assert!(!again["plan"].as_str().unwrap_or_default().is_empty(), "a plan ran: {again}");
    assert_eq!(pending(), before + 1, "its result is in the outbox");
    assert_eq!(digest(&fx.settings), start.1);
    let r = ok(with_bundle(&fx, "rollback", &b, &fx.trust, &["--json"])).json();
    assert_eq!(r["status"], "rolled_back", "{r}");
    assert_eq!(fx.digests(), start, "both targets proven back at their start");
    // Replaying the rollback finds the release no longer installed.
    let r = with_bundle(&fx, "rollback", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &start, "start-state", "is not installed here");
}

/// The flags as the app reads them (flags.json), and as agent.db has them.
fn flags_seen(fx: &Fx) -> (Value, Value) {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(fx.state.join("flags.json")).unwrap()).unwrap();
    let db = ok(agent(&fx.state, &["flags", "--json"])).json();
    (file["flags"].clone(), db["notes"].clone())
}

#[test]
fn a_manual_flag_turns_on_only_by_its_pre_signed_activation_plan_where_its_release_is_installed() {
    let fx = setup();
    let start = fx.digests();
    let rel = fx.p("2026.11.0-manual");
    copy_dir(&release("2026.11.0"), &rel);
    let toml = rel.join("release.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let head = &text[..text.find("\n[rollout]").unwrap()];
    std::fs::write(
        &toml,
        format!(
            "{head}\n\n[[flag]]\nname = \"beta_export\"\nvalue = true\nprevious = false\nowner = \"sync-team\"\nactivate = \"manual\"\n"
        ),
    )
    .unwrap();
    let lint = ok(ctl(&["release", "lint", &rel.to_string_lossy()]));
    assert!(lint.stdout.contains("ok: 0 errors, 1 warning(s)"), "a manual flag warns of nothing: {lint:?}");
    let b = bundle(&fx, &rel, "b.json", &[], &["alice", "bob"]);
    let v = ok(ctl(&["release", "verify", &b.to_string_lossy(), "--trust", &fx.trust.to_string_lossy(), "--json"]));
    assert!(v.stdout.contains("activate flag beta_export"), "verify checks the activation plans too: {v:?}");
    let on = |bundle: &Path, name: &str| {
        let (b, t) = (bundle.to_string_lossy().into_owned(), fx.trust.to_string_lossy().into_owned());
        agent(&fx.state, &["apply", "--bundle", &b, "--trust", &t, "--flag", name, "--json"])
    };

    // Before the release is installed: refused, nothing changed.
    let r = on(&b, "beta_export");
    assert_refused(&fx, &r, &start, "start-state", "nothing installed");

    let a = ok(with_bundle(&fx, "apply", &b, &fx.trust, &["--json"])).json();
    assert_eq!(a["flags"], serde_json::json!({"new_checkout": true}), "a manual flag is not set by the apply: {a}");
    // Its rollback plan where it was never turned on: it runs all the same
    // (the flag is set to its previous value), with a result for the
    // coordinator that sent it.
    let outbox = |fx: &Fx| ok(agent(&fx.state, &["outbox", "--json"])).json()["pending"].as_u64().unwrap();
    let queued = outbox(&fx);
    let off = ["--granularity", "flag", "--subject", "beta_export", "--json"];
    let r = ok(with_bundle(&fx, "rollback", &b, &fx.trust, &off)).json();
    assert_eq!((r["status"].as_str(), r["flags"]["beta_export"].as_bool()), (Some("rolled_back"), Some(false)), "{r}");
    assert_eq!(outbox(&fx), queued + 1, "a signed result is queued");
    let applied = fx.digests();
    let status = |fx: &Fx| ok(agent(&fx.state, &["status", "--json"])).json();
    let before = status(&fx);

    // Unknown flag: the bundle names the ones it can turn on.
    let r = on(&b, "nope");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no activation plan for flag nope; it has: new_checkout, beta_export"), "{r:?}");

    // An activation plan signed by one key only is refused.
    let one = fx.p("one.json");
    std::fs::copy(&b, &one).unwrap();
    edit_envelopes(&one, |e| {
        e["signatures"].as_array_mut().unwrap().truncate(1);
    });
    let r = on(&one, "beta_export");
    assert_refused(&fx, &r, &applied, "signatures", "1 of 2");
    assert_eq!(flags_seen(&fx).0["beta_export"], false);

    // The activation itself: only the flag changes.
    let r = ok(on(&b, "beta_export")).json();
    assert_eq!(r["status"], "applied", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("flag beta_export of notes 2026.11.0 turned on: false -> true"),
        "{r}"
    );
    let (file, db) = flags_seen(&fx);
    assert_eq!(file, serde_json::json!({"new_checkout": true, "beta_export": true}));
    assert_eq!(db, file);
    assert_eq!(fx.digests(), applied, "no database is touched");
    let after = status(&fx);
    assert_eq!(after["installed"], before["installed"], "the release stays installed as it was");
    assert_eq!(after["pinned_snapshots"], before["pinned_snapshots"], "its snapshots stay pinned");
    let audit = rusqlite::Connection::open(fx.state.join("agent.db")).unwrap();
    let set: String = audit
        .query_row("SELECT params FROM audit WHERE kind = 'flag.set' ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert!(set.contains("\"flag\":\"beta_export\"") && set.contains("\"to\":true"), "{set}");
    ok(agent(&fx.state, &["audit", "verify"]));
    // Again: still applied (a result for the coordinator), nothing changes.
    let r = ok(on(&b, "beta_export")).json();
    assert!(r["message"].as_str().unwrap().contains("was already on"), "{r}");

    // Its rollback plan turns it off; the release rollback takes everything back.
    let r = ok(with_bundle(
        &fx,
        "rollback",
        &b,
        &fx.trust,
        &["--granularity", "flag", "--subject", "beta_export", "--json"],
    ))
    .json();
    assert_eq!(r["flags"]["beta_export"], false, "{r}");
    ok(on(&b, "beta_export"));
    let r = ok(with_bundle(&fx, "rollback", &b, &fx.trust, &["--json"])).json();
    assert_eq!(r["status"], "rolled_back", "{r}");
    assert_eq!(fx.digests(), start);
    assert_eq!(flags_seen(&fx).0, serde_json::json!({"new_checkout": false, "beta_export": false}));
    let r = on(&b, "beta_export");
    assert_refused(&fx, &r, &start, "start-state", "apply that release first");
}

/// A part's rollback interrupted at its last step: the next command
/// finishes it and the release is still the installed one, its snapshots
/// pinned (before, the installed record went back to the apply's start
/// until the bundle code put it back after the plan).
#[test]
fn an_interrupted_part_rollback_leaves_the_release_installed() {
    let fx = setup();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "bob"]);
    ok(with_bundle(&fx, "apply", &b, &fx.trust, &[]));
    let applied = fx.digests();
    let (bs, ts, st) = (b.to_string_lossy(), fx.trust.to_string_lossy(), fx.state.to_string_lossy());
    let dbs = fx.dbs();
    let args = [
        "--state",
        &st,
        "rollback",
        "--bundle",
        &bs,
        "--trust",
        &ts,
        "--granularity",
        "target",
        "--subject",
        "settings",
        "--db",
        &dbs[0],
        "--db",
        &dbs[1],
    ];
    let r = run("rewind-agent", &args, &[("REWIND_CRASH_AT", "rollback.before_done")]);
    assert!(r.code == -1 && r.stderr.contains("crash injected"), "{r:?}");
    let s = ok(agent(&fx.state, &["status", "--json"])).json();
    assert_eq!(s["recovered"][0]["status"], "rolled_back", "{s}");
    assert_eq!(s["installed"][0]["release"], "2026.11.0", "{s}");
    assert_eq!(s["pinned_snapshots"], 2, "{s}");
    assert_eq!(digest(&fx.notes), applied.0, "notes keeps the release");
    assert_ne!(digest(&fx.settings), applied.1, "settings is rolled back");
    // The release still rolls back whole, proven against its snapshots.
    let r = ok(with_bundle(&fx, "rollback", &b, &fx.trust, &["--json"])).json();
    assert_eq!(r["status"], "rolled_back", "{r}");
}

#[test]
fn keys_are_private_and_never_overwritten() {
    let fx = setup();
    let r = ctl(&["keys", "generate", "--out", &fx.s("alice")]);
    assert_eq!(r.code, 2, "{r:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fx.p("alice.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn an_altered_payload_or_index_is_refused() {
    let fx = setup();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "bob"]);
    let orig = std::fs::read_to_string(&b).unwrap();
    // One changed byte of the signed plan: "sequence": 7 becomes 9.
    let mut v: Value = serde_json::from_str(&orig).unwrap();
    let payload = v["apply"]["payload"].as_str().unwrap().to_string();
    let needle: String = b"\"sequence\": 7".iter().map(|c| format!("{c:02x}")).collect();
    let swapped: String = b"\"sequence\": 9".iter().map(|c| format!("{c:02x}")).collect();
    assert!(payload.contains(&needle));
    v["apply"]["payload"] = Value::String(payload.replacen(&needle, &swapped, 1));
    std::fs::write(&b, serde_json::to_string(&v).unwrap()).unwrap();
    let r = with_bundle(&fx, "apply", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "signatures", "does not verify");
    // The unsigned index points "flag new_checkout" at the whole-release rollback.
    std::fs::write(&b, &orig).unwrap();
    ok(with_bundle(&fx, "apply", &b, &fx.trust, &[]));
    let applied = fx.digests();
    let mut v: Value = serde_json::from_str(&orig).unwrap();
    let whole = v["rollback"][0]["envelope"].clone();
    let flag = v["rollback"].as_array_mut().unwrap().iter_mut().find(|r| r["granularity"] == "flag").unwrap();
    flag["envelope"] = whole;
    std::fs::write(&b, serde_json::to_string(&v).unwrap()).unwrap();
    let r = with_bundle(&fx, "rollback", &b, &fx.trust, &["--granularity", "flag", "--subject", "new_checkout"]);
    assert_refused(&fx, &r, &applied, "kind", "the signed plan is");
}

#[test]
fn a_changed_root_with_the_pinned_version_is_refused() {
    let fx = setup();
    let before = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["alice", "bob"]);
    let r = with_bundle(&fx, "rollback", &b, &fx.trust, &[]);
    assert_refused(&fx, &r, &before, "start-state", "is not installed here");
    // Same version 1, but a threshold of 1: not signed by anyone, so refused.
    let weaker = fx.p("weaker.toml");
    std::fs::write(&weaker, std::fs::read_to_string(&fx.trust).unwrap().replace("threshold = 2", "threshold = 1"))
        .unwrap();
    let r = with_bundle(&fx, "apply", &b, &weaker, &[]);
    assert_refused(&fx, &r, &before, "trust-root", "differs from the pinned version 1");
}

#[test]
fn a_lone_migration_rolls_back_from_its_own_plan() {
    let fx = setup();
    let start = fx.digests();
    let b = bundle(&fx, &release("2026.11.0"), "b.json", &[], &["bob", "carol"]);
    ok(with_bundle(&fx, "apply", &b, &fx.trust, &[]));
    let r = ok(with_bundle(
        &fx,
        "rollback",
        &b,
        &fx.trust,
        &["--granularity", "migration", "--subject", "0003_settings_theme", "--json"],
    ))
    .json();
    assert_eq!(r["status"], "rolled_back", "{r}");
    assert_eq!(digest(&fx.settings), start.1);
    assert_ne!(digest(&fx.notes), start.0, "notes keeps its migrations");
    // 0002 alone cannot go while 0001 stays: a clear usage error, nothing changed.
    let applied = fx.digests();
    let r = with_bundle(
        &fx,
        "rollback",
        &b,
        &fx.trust,
        &["--granularity", "migration", "--subject", "0002_normalize_status"],
    );
    assert!(r.code == 2 && r.stderr.contains("--granularity target --subject notes"), "{r:?}");
    assert_eq!(fx.digests(), applied);
}
