//! Signed results in the agent's outbox, with the real binaries: every
//! finished or refused plan leaves exactly one report whose signature
//! verifies with the agent's public key (from `audit verify --json`), whose
//! digests are the targets' checksums, and whose chain head is the audit
//! head at that time; a crash before the plan is marked done still yields
//! exactly one report after recovery; acks are idempotent by id.
//!
//! Needs the binaries built with `--features rewind-agent/fault-injection`
//! (scripts/test.sh does that).

mod agent_common;

use std::path::Path;

use agent_common::{Endpoint, checksum as checksum_of, crashed};
use rewind_shared::report::{ChainContinuity, ReportPayload, ReportStatus, SignedReport, public_key_from_hex};
use rewind_shared::trust::VerifyingKey;
use rewind_tests::{Run, agent, release, run, seed_db};
use serde_json::Value;

fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "{r:?}");
    r
}

/// The agent's public key and its audit head, as `audit verify --json`
/// prints them.
fn key_and_head(state: &Path) -> (VerifyingKey, String, u64) {
    let v = ok(agent(state, &["audit", "verify", "--json"])).json();
    let key = public_key_from_hex(v["key"].as_str().unwrap()).unwrap();
    (key, v["head"].as_str().unwrap().to_string(), v["entries"].as_u64().unwrap())
}

/// `outbox --json`: every report, verified with `key`, with its listing.
fn outbox(state: &Path, key: &VerifyingKey) -> Vec<(Value, ReportPayload)> {
    let v = ok(agent(state, &["outbox", "--json"])).json();
    v["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let signed: SignedReport = serde_json::from_value(item["report"].clone()).unwrap();
            let payload = signed.verify(key).unwrap_or_else(|e| panic!("report {} does not verify: {e}", item["id"]));
            assert_eq!(item["id"], payload.id.as_str());
            (item.clone(), payload)
        })
        .collect()
}

fn target<'a>(p: &'a ReportPayload, name: &str) -> &'a rewind_shared::report::TargetResult {
    p.targets.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no target {name} in {p:?}"))
}

#[test]
fn apply_and_rollback_queue_signed_reports_with_the_targets_digests_and_chain_heads() {
    let e = Endpoint::new();
    let rel = release("2026.11.0");
    let start = (checksum_of(&e.notes), checksum_of(&e.settings));
    let r = ok(e.apply(&rel)).json();
    assert_eq!(r["status"], "applied");
    let (key, head1, n1) = key_and_head(&e.state);
    let reports = outbox(&e.state, &key);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (item, applied) = &reports[0];
    assert_eq!(item["delivered"], false);
    assert_eq!(
        (applied.status, applied.state.as_str(), applied.plan.as_str()),
        (ReportStatus::Applied, "applied", r["plan"].as_str().unwrap())
    );
    assert_eq!((applied.product.as_str(), applied.release.as_str()), ("notes", "2026.11.0"));
    assert_eq!(
        (applied.chain.head.to_string(), applied.chain.seq),
        (head1.clone(), n1),
        "the report carries the audit head"
    );
    for (name, db, before) in [("notes", &e.notes, &start.0), ("settings", &e.settings, &start.1)] {
        let t = target(applied, name);
        let now = checksum_of(db);
        assert_eq!(t.data_before.as_deref(), before["digest"].as_str(), "{name}");
        assert_eq!(t.schema_before.as_deref(), before["schema"].as_str(), "{name}");
        assert_eq!(t.data_after.as_deref(), now["digest"].as_str(), "{name}");
        assert_eq!(t.schema_after.as_deref(), now["schema"].as_str(), "{name}");
        assert!(t.snapshot.as_deref().is_some_and(|s| s.starts_with("snap-")), "{t:?}");
    }
    assert!(ChainContinuity::check(None, applied, &key).is_ok(), "first contact: the whole chain verifies");

    let rb = ok(e.rollback(&rel)).json();
    assert_eq!(rb["status"], "rolled_back");
    let (_, head2, n2) = key_and_head(&e.state);
    let reports = outbox(&e.state, &key);
    assert_eq!(reports.len(), 2);
    let rolled = &reports[1].1;
    assert_eq!((rolled.status, rolled.chain.head.to_string(), rolled.chain.seq), (ReportStatus::RolledBack, head2, n2));
    assert_ne!(rolled.id, applied.id);
    for (name, db, before) in [("notes", &e.notes, &start.0), ("settings", &e.settings, &start.1)] {
        let t = target(rolled, name);
        assert_eq!(t.data_after.as_deref(), checksum_of(db)["digest"].as_str(), "{name}");
        assert_eq!(t.schema_after.as_deref(), before["schema"].as_str(), "{name}: schema back to the start");
        assert_eq!(t.proof.as_deref(), Some("identical"), "{name}");
    }
    assert!(
        ChainContinuity::check(Some(applied.chain), rolled, &key).is_ok(),
        "the rollback's chain extends the apply's"
    );

    // Acks are idempotent by id and survive restarts; later reports carry
    // only the entries after the acked head.
    let a = ok(agent(&e.state, &["outbox", "--ack", &applied.id, "--json"])).json();
    assert_eq!(a["already"], false);
    let a = ok(agent(&e.state, &["outbox", "--ack", &applied.id, "--json"])).json();
    assert_eq!(a["already"], true);
    let unknown = agent(&e.state, &["outbox", "--ack", "res-0000000000000000"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    let v = ok(agent(&e.state, &["outbox", "--json"])).json();
    assert_eq!(v["pending"], 1, "{v}");
    ok(e.apply(&rel));
    let reports = outbox(&e.state, &key);
    assert_eq!(reports.len(), 3);
    let again = &reports[2].1;
    assert_eq!(again.audit_since.first().map(|x| x.seq), Some(applied.chain.seq + 1), "entries since the acked head");
    assert!(ChainContinuity::check(Some(applied.chain), again, &key).is_ok());
    let text = ok(agent(&e.state, &["outbox"])).stdout;
    assert_eq!(text.lines().filter(|l| l.contains("delivered yes")).count(), 1, "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("delivered no")).count(), 2, "{text}");
}

fn crash_then_one_report(cmd: &str, point: &str, expect: ReportStatus, state: &str) {
    let e = Endpoint::new();
    let rel = release("2026.11.0");
    if cmd == "rollback" {
        ok(e.apply(&rel));
    }
    let before = outbox(&e.state, &key_and_head(&e.state).0).len();
    let r = e.plan(cmd, &rel, &["--json"], &[("REWIND_CRASH_AT", point)]);
    assert!(crashed(&r), "{point}: {r:?}");
    let (key, _, _) = key_and_head(&e.state);
    // `audit verify` above already recovered; `status` recovers nothing more.
    ok(e.agent(&["status", "--json"]));
    ok(e.agent(&["status", "--json"]));
    let (_, head, _) = key_and_head(&e.state);
    let reports = outbox(&e.state, &key);
    assert_eq!(reports.len(), before + 1, "{point}: exactly one report for the interrupted plan: {reports:?}");
    let p = &reports[before].1;
    let db = rusqlite::Connection::open(e.state.join("agent.db")).unwrap();
    let (plan_id, plan_state): (String, String) = db
        .query_row("SELECT id, state FROM plans ORDER BY started DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((p.plan.as_str(), p.state.as_str(), p.status), (plan_id.as_str(), state, expect), "{point}: {p:?}");
    assert_eq!(plan_state, state);
    assert_eq!(p.chain.head.to_string(), head, "{point}");
    for (name, db) in [("notes", &e.notes), ("settings", &e.settings)] {
        assert_eq!(target(p, name).data_after.as_deref(), checksum_of(db)["digest"].as_str(), "{point}: {name}");
    }
}

#[test]
fn a_crash_before_the_plan_is_done_yields_exactly_one_report_after_recovery() {
    crash_then_one_report("apply", "apply.before_done", ReportStatus::Failed, "reverted");
    crash_then_one_report("rollback", "rollback.before_done", ReportStatus::RolledBack, "rolled_back");
}

#[test]
fn refused_bundles_queue_refused_reports_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let notes = seed_db(dir.path(), "notes");
    let settings = seed_db(dir.path(), "settings");
    let state = dir.path().join("state");
    for k in ["alice", "bob"] {
        ok(run("rewindctl", &["keys", "generate", "--out", &p(k)], &[]));
    }
    ok(run(
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
            "--out",
            &p("trust.toml"),
        ],
        &[],
    ));
    let rel = release("2026.11.0").to_string_lossy().into_owned();
    ok(run("rewindctl", &["release", "build", &rel, "--out", &p("b.json")], &[]));
    ok(run("rewindctl", &["release", "sign", &p("b.json"), "--key", &p("alice.key")], &[]));
    let dbs = [format!("notes={}", notes.display()), format!("settings={}", settings.display())];
    let with_bundle = |cmd: &str| {
        agent(&state, &[cmd, "--bundle", &p("b.json"), "--trust", &p("trust.toml"), "--db", &dbs[0], "--db", &dbs[1]])
    };

    // Too few signatures: refused before the plan is read.
    let r = with_bundle("apply");
    assert_eq!(r.code, 2, "{r:?}");
    // Enough signatures, but nothing installed to roll back.
    ok(run("rewindctl", &["release", "sign", &p("b.json"), "--key", &p("bob.key")], &[]));
    let r = with_bundle("rollback");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("plan refused (start-state)"), "{r:?}");

    let (key, head, _) = key_and_head(&state);
    let reports = outbox(&state, &key);
    assert_eq!(reports.len(), 2, "{reports:?}");
    let (sig, start) = (&reports[0].1, &reports[1].1);
    assert_eq!((sig.status, sig.state.as_str()), (ReportStatus::Refused, "refused"));
    assert_eq!(sig.refusal.as_ref().map(|x| x.code.as_str()), Some("signatures"));
    assert!(sig.signed_plan.is_none() && sig.targets.is_empty(), "{sig:?}");
    assert_eq!(start.status, ReportStatus::Refused);
    let refusal = start.refusal.as_ref().unwrap();
    assert_eq!(refusal.code, "start-state");
    assert!(refusal.reason.contains("is not installed here"), "{refusal:?}");
    assert!(start.signed_plan.as_deref().is_some_and(|s| s.starts_with("plan-")), "{start:?}");
    assert_eq!((start.product.as_str(), start.release.as_str()), ("notes", "2026.11.0"));
    assert_eq!(start.chain.head.to_string(), head, "the refusal's audit entry is the head");
    assert_eq!(start.audit_since.last().map(|x| x.kind.as_str()), Some("plan.refused"));

    // A signed apply names the signed plan and bundle in its report.
    ok(with_bundle("apply"));
    let reports = outbox(&state, &key);
    let applied = &reports[2].1;
    assert_eq!(applied.status, ReportStatus::Applied);
    assert!(applied.signed_plan.is_some() && applied.bundle.is_some(), "{applied:?}");
    assert_ne!(applied.signed_plan, start.signed_plan, "the apply plan, not the rollback plan");
}
