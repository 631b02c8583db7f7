//! `rewindctl report`, end to end, on a real halted-and-rolled-back
//! rollout: a coordinator and three real agents (two `ring=canary`, one
//! `ring=main`) get the release whose verify fails (examples/notes-app
//! 2026.11.1-bad, sequence 8, given a canary wave). One canary's notes all
//! carry a ` - ` subtitle, so there the migration verifies and the release
//! applies; on the other the verify fails — a failure and an integrity
//! signal: the rollout halts and `auto_rollback` sends the pre-signed
//! rollback to the canary that applied, which proves it by digest. Then
//! `rewindctl report notes@8 --out DIR` must write a Markdown and an HTML
//! file that carry the real figures — the canary wave's counts, the halt
//! reason, the time to rollback as the audit log's own times give it, the
//! commands of any endpoint that needs a human, the incident messages —
//! and an SVG chart; an unknown rollout or an --out that is not a
//! directory exits 2 and writes nothing.

mod fleet_rollout_common;

use std::path::Path;
use std::time::Duration;

use fleet_rollout_common::{Fleet, agent, ms_between, ok, wave};
use rewind_shared::templates::escape_markdown;

const CANARY_THEN_ALL: &str = r#"[rollout]
waves = [
  { name = "canary", selector = "ring=canary", bake = "30s" },
  { name = "all", percent = 100 },
]
report_timeout = "60s"
auto_rollback = true
"#;

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A value as the report writes it into Markdown: one line, escaped.
fn md_text(s: &str) -> String {
    escape_markdown(&s.replace(['\n', '\r'], " "))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_halted_and_rolled_back_rollout_is_reported_with_its_real_figures() {
    let tmp = fleet_rollout_common::tempdir();
    let mut fleet = Fleet::new(tmp.path());
    fleet.add("canary", 2);
    fleet.add("main", 1);
    fleet.wait_connected();
    let canaries = fleet.ids("canary");
    let applies = &fleet.endpoints[0];
    assert_eq!(applies.id, canaries[0]);
    rusqlite::Connection::open(&applies.notes)
        .unwrap()
        .execute_batch("UPDATE notes SET title = title || ' - edited'")
        .unwrap();
    let applies_before = rewind_tests::digest(&applies.notes);

    let both_targets = |t: String| {
        t.replacen(
            "[[target]]\nname = \"notes\"\n",
            "[[target]]\nname = \"notes\"\n\n[[target]]\nname = \"settings\"\n",
            1,
        )
    };
    fleet.bundle("2026.11.1-bad", CANARY_THEN_ALL, &both_targets, false);
    let r = fleet.ctl(&["rollout", "start", "notes", "2026.11.1", "--json"]);
    ok(&r);
    assert_eq!(r.json()["rollout"], "notes@8", "{r:?}");
    let s = fleet.wait_status("the bad release rolled back", Duration::from_secs(90), |s| {
        s["rollout"] == "notes@8" && s["state"] == "rolled_back"
    });
    let canary = wave(&s, "canary");
    assert_eq!((canary["failed"].as_u64(), canary["rolled_back"].as_u64()), (Some(1), Some(1)), "{s:#}");
    assert_eq!(agent(&s, &canaries[0])["rollback"], "proven", "{s:#}");
    assert_eq!(rewind_tests::digest(&applies.notes), applies_before, "the rollback brought the data back");
    // The incident messages follow the rollout on the event bus; wait for
    // the last one so the report has them all.
    rewind_tests::eventually("the incident resolved", Duration::from_secs(30), || {
        fleet.audit().iter().any(|(k, _, p)| k == "incident.resolved" && p["version"] == "2026.11.1").then_some(())
    });
    let audit = fleet.audit();
    let of_rollout = |kind: &str| {
        audit.iter().filter(|(k, _, p)| k == kind && p["rollout"] == "notes@8").cloned().collect::<Vec<_>>()
    };
    let halt = of_rollout("rollout.halted").first().cloned().expect("a halt entry");
    let rolled_back = of_rollout("rollout.rolled_back").last().cloned().expect("a rolled_back entry");
    let last_proof = audit
        .iter()
        .rev()
        .find(|(k, _, p)| k == "result" && p["sequence"] == 8 && p["status"] == "rolled_back")
        .cloned()
        .expect("the canary's rollback result");
    let reason = halt.2["reason"].as_str().unwrap().to_string();
    // Which rule halts depends on the order of the two canaries' reports:
    // the failure ratio once both reported, or the failed verify's
    // integrity signal at once; the other is recorded as a signal.
    assert!(reason.contains("wave canary: failure ratio") || reason.starts_with("integrity: "), "{reason}");
    let integrity: Vec<String> = audit
        .iter()
        .filter(|(k, _, p)| (k == "rollout.halted" || k == "rollout.signal") && p["rollout"] == "notes@8")
        .filter_map(|(_, _, p)| p["reason"].as_str().filter(|r| r.starts_with("integrity: ")).map(String::from))
        .collect();
    assert!(!integrity.is_empty(), "the failed verify is an integrity signal: {audit:#?}");

    // Bad input first: nothing may be written.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = fleet.ctl(&["report", "notes@99", "--out", &empty.to_string_lossy()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no rollout \"notes@99\"") && r.stderr.contains("notes@8"), "{r:?}");
    let r = fleet.ctl(&["report", "nosuchproduct", "--out", &empty.to_string_lossy()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(files_in(&empty).is_empty(), "{:?}", files_in(&empty));
    let not_dir = tmp.path().join("not-a-dir");
    std::fs::write(&not_dir, "x").unwrap();
    let r = fleet.ctl(&["report", "notes@8", "--out", &not_dir.to_string_lossy()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not a directory"), "{r:?}");
    assert_eq!(std::fs::read_to_string(&not_dir).unwrap(), "x");

    // The report.
    let out = tmp.path().join("reports");
    std::fs::create_dir(&out).unwrap();
    let r = fleet.ctl(&["report", "notes@8", "--out", &out.to_string_lossy(), "--json"]);
    ok(&r);
    let j = r.json();
    let md_path = out.join("notes-8-report.md");
    let html_path = out.join("notes-8-report.html");
    assert_eq!(j["markdown"], md_path.to_string_lossy().as_ref(), "{j:#}");
    assert_eq!(j["html"], html_path.to_string_lossy().as_ref(), "{j:#}");
    assert_eq!(files_in(&out), ["notes-8-report.html", "notes-8-report.md"]);
    let md = std::fs::read_to_string(&md_path).unwrap();
    let html = std::fs::read_to_string(&html_path).unwrap();

    // Header and final state.
    assert!(md.starts_with("# Post-rollout report: notes 2026.11.1 (notes@8)\n"), "{md}");
    assert!(md.contains("- Final state: **rolled\\_back**"), "{md}");
    assert!(md.contains("see the release's runbook"), "{md}");

    // The canary wave's real counts, in both files.
    let w = |k: &str| canary[k].as_u64().unwrap();
    let row = format!(
        "| canary | rolled\\_back | 2 | {} | {} | {} | {} |",
        w("succeeded"),
        w("failed"),
        w("pending"),
        w("rolled_back")
    );
    assert!(md.contains(&row), "{row}\n{md}");
    assert!(
        html.contains(&format!(
            "<tr><td>canary</td><td>rolled_back</td><td class=\"n\">2</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            w("succeeded"),
            w("failed")
        )),
        "{html}"
    );
    assert_eq!(j["waves"][0]["failed"], 1, "{j:#}");

    // The halt reason, escaped for each format.
    assert!(md.contains(&format!("- Halt reason: {}", md_text(&reason))), "{md}");
    assert!(html.contains(&html_escape(&reason)), "{html}");
    assert_eq!(j["reason"], reason.as_str());
    for signal in &integrity {
        assert!(md.contains(&md_text(signal)), "{signal}\n{md}");
        assert!(html.contains(&html_escape(signal)), "{signal}\n{html}");
    }

    // Time to rollback: the audit log's own times.
    let to_rolled_back = ms_between(&halt.1, &rolled_back.1);
    let to_proof = ms_between(&halt.1, &last_proof.1);
    assert_eq!(j["time_to_rollback_ms"], to_rolled_back, "{j:#}");
    assert_eq!(j["time_to_last_rollback_result_ms"], to_proof, "{j:#}");
    assert!(to_proof > 0 && to_proof <= to_rolled_back, "halt {halt:?}, proof {last_proof:?}, end {rolled_back:?}");
    assert!(md.contains(&format!("** ({to_rolled_back} ms).")), "{md}");
    assert!(html.contains(&format!("</strong> ({to_rolled_back} ms).</p>")), "{html}");
    println!(
        "report notes@8: halt → rollback plans sent {} ms, → last verified rollback result {to_proof} ms, \
         → rollout rolled_back {to_rolled_back} ms",
        j["time_to_rollback_sent_ms"]
    );

    // Endpoints that need a human: their exact commands.
    for h in s["needs_human"].as_array().unwrap() {
        for c in h["commands"].as_array().unwrap() {
            let c = c.as_str().unwrap();
            assert!(md.contains(c), "{c}\n{md}");
            assert!(html.contains(&html_escape(c)), "{c}\n{html}");
        }
    }
    if s["needs_human"].as_array().unwrap().is_empty() {
        assert!(md.contains("None: every rollback that was needed is proven"), "{md}");
    }

    // The timeline, in the audit log's order.
    let pos = |needle: &str| md.find(needle).unwrap_or_else(|| panic!("{needle} in {md}"));
    let (started, halted, done) = (pos("`rollout.started`"), pos("`rollout.halted`"), pos("`rollout.rolled_back`"));
    assert!(started < halted && halted < done, "{md}");
    let timeline = j["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["kind"], "rollout.started");
    assert_eq!(timeline[0]["offset_ms"], 0);
    assert!(timeline.iter().any(|t| t["kind"] == "result" && t["actor"] == canaries[1].as_str()), "{j:#}");

    // The failed canary is an anomaly; the incident messages are there.
    assert!(md.contains(&format!("| {} | canary | failed |", escape_markdown(&canaries[1]))), "{md}");
    for (_, _, p) in audit.iter().filter(|(k, _, p)| k.starts_with("incident.") && p["version"] == "2026.11.1") {
        let title = p["title"].as_str().unwrap();
        assert!(md.contains(&format!("### {}", md_text(title))), "{title}\n{md}");
        assert!(html.contains(&format!("<h3>{}</h3>", html_escape(title))), "{title}\n{html}");
    }

    // The chart, and nothing that loads or runs anything.
    assert_eq!(html.matches("<svg").count(), 1, "{html}");
    assert_eq!(html.matches("<polyline").count(), 3, "{html}");
    assert!(html.contains("applied (1)") && html.contains("failed or refused (1)") && html.contains("rolled back (1)"));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"), "{html}");

    // A bare product names its current rollout: the same files again.
    let again = tmp.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let r = fleet.ctl(&["report", "notes", "--out", &again.to_string_lossy()]);
    ok(&r);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [again.join("notes-8-report.md").to_string_lossy(), again.join("notes-8-report.html").to_string_lossy()]
    );
    assert_eq!(std::fs::read_to_string(again.join("notes-8-report.md")).unwrap(), md, "the report is deterministic");
}
