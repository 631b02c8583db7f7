//! `rewindctl runbook DIR` end to end with the real binaries (DESIGN.md §8,
//! §9): the playbook of the example release names its owners, gives the
//! exact rollback command for every granularity — and those endpoint
//! commands, run as printed, really roll back a device — lists the
//! verification queries, renders the communication templates, measures the
//! restore window on samples without touching them, and is the same every
//! time; a template with an unknown variable is refused with exit 2 naming
//! file:line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use rewind_tests::{Run, bin, copy_dir, digest, release, run, seed_db};
use serde_json::Value;

fn ctl(args: &[&str]) -> Run {
    run("rewindctl", args, &[])
}

fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "{r:?}");
    r
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn example() -> String {
    s(&release("2026.11.0"))
}

/// Bytes and mtime of a file, to prove it was not touched.
fn fingerprint(p: &Path) -> (Vec<u8>, SystemTime) {
    (std::fs::read(p).unwrap(), std::fs::metadata(p).unwrap().modified().unwrap())
}

#[test]
fn runbook_names_owners_exact_commands_queries_and_messages() {
    let r = ok(ctl(&["runbook", &example()]));
    let md = &r.stdout;
    let dir = example();
    let want = [
        // owners and escalation
        "- Release owner: **storage-team**".to_string(),
        "- On call: **pager:storage**".into(),
        "- Flag `new_checkout`: **payments-team** (kill switch)".into(),
        "1. pager:storage (on call) leads the incident and all communication".into(),
        // what changes and how it is undone
        "| 1 | 0001_add_currency | notes | - | yes (down.sql) | runs migrations/0001_add_currency/down.sql |".into(),
        "| 2 | 0002_normalize_status | notes | 0001_add_currency | yes (preserve) | runs migrations/0002_normalize_status/down.sql, which reads the preserved copy (`_rewind_preserve_0002_normalize_status_orders`)".into(),
        // triggers and halt rules
        "- app.crash_count above 3 within 10m".into(),
        "- more than 0.02 of a wave's endpoints failed, once 20 reported".into(),
        "- broad: 50% of the fleet, bake 1h, needs an approver".into(),
        // every granularity, fleet and endpoint
        "rewindctl rollback notes --granularity release --scope fleet\n".into(),
        "rewind-agent rollback --bundle notes-2026.11.0.bundle.json --trust trust.toml --granularity release --db notes=notes.db --db settings=settings.db\n".into(),
        format!("rewind-agent rollback --release {dir} --db notes=notes.db --db settings=settings.db\n"),
        "rewindctl rollback notes --granularity target --subject notes --scope fleet\n".into(),
        "rewind-agent rollback --bundle notes-2026.11.0.bundle.json --trust trust.toml --granularity target --subject notes --db notes=notes.db\n".into(),
        "rewindctl rollback notes --granularity target --subject settings --scope fleet\n".into(),
        "rewind-agent rollback --bundle notes-2026.11.0.bundle.json --trust trust.toml --granularity target --subject settings --db settings=settings.db\n".into(),
        "rewindctl rollback notes --granularity migration --subject 0001_add_currency --scope fleet\n".into(),
        "rewind-agent rollback --bundle notes-2026.11.0.bundle.json --trust trust.toml --granularity migration --subject 0001_add_currency --db notes=notes.db\n".into(),
        "rewindctl rollback notes --granularity migration --subject 0002_normalize_status --scope fleet\n".into(),
        "rewind-agent rollback --bundle notes-2026.11.0.bundle.json --trust trust.toml --granularity migration --subject 0002_normalize_status --db notes=notes.db\n".into(),
        "rewindctl rollback notes --granularity migration --subject 0003_settings_theme --scope fleet\n".into(),
        "rewind-agent rollback --bundle notes-2026.11.0.bundle.json --trust trust.toml --granularity migration --subject 0003_settings_theme --db settings=settings.db\n".into(),
        "rewindctl rollback notes --granularity flag --subject new_checkout --scope fleet\n".into(),
        "rewind-agent rollback --bundle notes-2026.11.0.bundle.json --trust trust.toml --granularity flag --subject new_checkout\n".into(),
        "while 0001_add_currency stays applied on `notes` it refuses this plan (exit 2, nothing changed) — use the `target notes` rollback".into(),
        "`--scope wave:canary`".into(),
        "coming".into(),
        // verification queries
        "SELECT count(*) = 0 FROM orders WHERE currency IS NULL OR length(currency) <> 3;\nSELECT count(*) = 1 FROM pragma_index_list('orders') WHERE name = 'orders_by_currency';\n".into(),
        "SELECT count(*) = 0 FROM orders WHERE status <> lower(trim(status));\n".into(),
        "SELECT count(*) = 1 FROM settings WHERE key = 'theme';\n".into(),
        "**check `orders survive`** on `notes` — passes when: unchanged, runs after-apply and after-rollback.\n\n```sql\nSELECT count(*) FROM orders\n```".into(),
        "**check `notes present`** on `notes` — passes when: >= 1".into(),
        "rewindctl fleet verify notes 2026.11.0".into(),
        // restore window without samples
        format!("Restore window: not measured, run with --sample (e.g. `rewindctl runbook {dir} --sample notes=./notes.db --sample settings=./settings.db`)."),
        // messages: the release's templates and the defaults
        "### rollback_started (templates/rollback_started.md)\n\n> **Notes 2026.11.0: rolling back**\n>\n> We are undoing the 2026.11.0 update on 12 devices in the\n> **canary** wave.\n>\n> Why: app.crash\\_count above 3 within 10m\n".into(),
        "### incident_started (templates/incident_started.md)".into(),
        "### rollback_completed (templates/rollback_completed.md)".into(),
        "### resolved (built-in default)\n\n> **Resolved: notes 2026.11.0**\n>\n> The incident with **notes 2026.11.0** that started at 2026-11-25 08:00 UTC is resolved.\n".into(),
        "### scheduled_maintenance (built-in default)".into(),
        "a restore takes about a few seconds per endpoint (not measured)".into(),
    ];
    for w in &want {
        assert!(md.contains(w.as_str()), "missing {w:?} in:\n{md}");
    }
    assert!(!md.contains("{{"), "{md}");
    // Deterministic: no clock in the output.
    assert_eq!(ok(ctl(&["runbook", &example()])).stdout, *md);

    let j = ok(ctl(&["runbook", &example(), "--json"])).json();
    let grains: Vec<String> = j["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["granularity"].as_str().unwrap(), c["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        grains,
        [
            "release 2026.11.0",
            "target notes",
            "target settings",
            "migration 0001_add_currency",
            "migration 0002_normalize_status",
            "migration 0003_settings_theme",
            "flag new_checkout"
        ]
    );
    assert_eq!(j["owners"]["on_call"], "pager:storage");
    assert_eq!(j["restore_window"]["measured"], false);
    assert_eq!(j["messages"].as_array().unwrap().len(), 5);
    assert_eq!(j["messages"][1]["rendered"]["title"], "Notes 2026.11.0: rolling back");
    assert!(j["messages"][1]["rendered"]["text"].as_str().unwrap().contains("Why: app.crash_count above 3 within 10m"));
}

#[test]
fn samples_give_a_measured_restore_window_and_stay_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let notes = seed_db(dir.path(), "notes");
    let settings = seed_db(dir.path(), "settings");
    let before = (fingerprint(&notes), fingerprint(&settings));
    let listing = |d: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let mut files = listing(dir.path());
    let out = dir.path().join("out").join("RUNBOOK.md");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    let r = ok(ctl(&[
        "runbook",
        &example(),
        "--sample",
        &format!("notes={}", notes.display()),
        "--sample",
        &format!("settings={}", settings.display()),
        "--out",
        &s(&out),
    ]));
    assert!(r.stdout.is_empty(), "--out writes the file, not stdout: {r:?}");
    let md = std::fs::read_to_string(&out).unwrap();
    let at = md.find("Restore window: **").unwrap_or_else(|| panic!("{md}"));
    let rest = &md[at + "Restore window: **".len()..];
    let ms: u64 =
        rest[..rest.find(" ms**").unwrap_or_else(|| panic!("{md}"))].parse().unwrap_or_else(|e| panic!("{e}: {md}"));
    assert!(ms < 60_000, "{md}");
    assert!(md.contains(&format!("| notes | {} | ", notes.display())), "{md}");
    assert!(md.contains(&format!("| settings | {} | ", settings.display())), "{md}");
    assert!(md.contains(&format!("A restore takes about {ms} ms per endpoint (measured on samples).")), "{md}");
    assert!(md.contains("The samples were not touched."), "{md}");
    // The samples keep their bytes and mtime; nothing appears beside them.
    assert_eq!((fingerprint(&notes), fingerprint(&settings)), before);
    files.push("out".into());
    files.sort();
    assert_eq!(listing(dir.path()), files);

    let j = ok(ctl(&["runbook", &example(), "--sample", &format!("notes={}", notes.display()), "--json"])).json();
    let w = &j["restore_window"];
    assert_eq!(w["measured"], true);
    assert!(w["max_ms"].is_u64(), "{w}");
    assert_eq!(w["drills"][0]["target"], "notes");
    assert_eq!(w["drills"][0]["digest"], digest(&notes));
    assert_eq!(w["unmeasured"], serde_json::json!(["settings"]));
    assert_eq!((fingerprint(&notes), fingerprint(&settings)), before);

    let bad = ctl(&["runbook", &example(), "--sample", "nope=x.db"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("no target `nope` (targets: notes, settings)"), "{bad:?}");
}

/// A device in a temp dir: the databases, trust.toml and the signed bundle
/// under the names the runbook uses, and a state dir.
struct Device {
    dir: tempfile::TempDir,
}

impl Device {
    fn new() -> Device {
        let d = Device { dir: tempfile::tempdir().unwrap() };
        let _ = seed_db(d.dir.path(), "notes");
        let _ = seed_db(d.dir.path(), "settings");
        d
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Runs a command line as the runbook prints it, in the device's
    /// directory, with the device's state dir.
    fn sh(&self, line: &str) -> Run {
        let words: Vec<&str> = line.split_whitespace().collect();
        let o = Command::new(bin(words[0]))
            .args(&words[1..])
            .current_dir(self.dir.path())
            .env("REWIND_STATE", self.p("state"))
            .env_remove("REWIND_CRASH_AT")
            .env("REWIND_LOG", "warn")
            .output()
            .unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    fn digests(&self) -> (String, String) {
        (digest(&self.p("notes.db")), digest(&self.p("settings.db")))
    }
    /// Key, 1-of-1 trust root, and the bundle built from this device's
    /// databases, signed.
    fn bundle(&self) {
        ok(ctl(&["keys", "generate", "--out", &s(&self.p("ops"))]));
        ok(ctl(&[
            "trust",
            "init",
            "--threshold",
            "1",
            "--key",
            &s(&self.p("ops.pub")),
            "--out",
            &s(&self.p("trust.toml")),
        ]));
        let b = s(&self.p("notes-2026.11.0.bundle.json"));
        ok(ctl(&[
            "release",
            "build",
            &example(),
            "--sample",
            &format!("notes={}", s(&self.p("notes.db"))),
            "--sample",
            &format!("settings={}", s(&self.p("settings.db"))),
            "--out",
            &b,
        ]));
        ok(ctl(&["release", "sign", &b, "--key", &s(&self.p("ops.key"))]));
    }
}

fn command(j: &Value, granularity: &str, subject: &str, key: &str) -> String {
    j["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["granularity"] == granularity && c["subject"] == subject)
        .and_then(|c| c[key].as_str())
        .unwrap_or_else(|| panic!("no {granularity} {subject} {key} in {j}"))
        .to_string()
}

#[test]
fn the_printed_endpoint_commands_roll_a_device_back() {
    let j = ok(ctl(&["runbook", &example(), "--json"])).json();

    // Partial rollbacks with the signed bundle, one granularity at a time.
    let dev = Device::new();
    let original = dev.digests();
    dev.bundle();
    ok(dev.sh(
        "rewind-agent apply --bundle notes-2026.11.0.bundle.json --trust trust.toml --db notes=notes.db --db settings=settings.db",
    ));
    let applied = dev.digests();
    assert_ne!(applied.0, original.0);
    // The runbook's note says this one is refused while 0001 stays applied.
    let r = dev.sh(&command(&j, "migration", "0002_normalize_status", "endpoint"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("0001_add_currency"), "{r:?}");
    assert_eq!(dev.digests(), applied);
    ok(dev.sh(&command(&j, "flag", "new_checkout", "endpoint")));
    ok(dev.sh(&command(&j, "target", "settings", "endpoint")));
    assert_eq!(dev.digests(), (applied.0.clone(), original.1.clone()));
    ok(dev.sh(&command(&j, "migration", "0001_add_currency", "endpoint")));
    assert_eq!(dev.digests(), original);

    // The whole release with the bundle.
    let dev = Device::new();
    let original = dev.digests();
    dev.bundle();
    ok(dev.sh(
        "rewind-agent apply --bundle notes-2026.11.0.bundle.json --trust trust.toml --db notes=notes.db --db settings=settings.db",
    ));
    assert_ne!(dev.digests(), original);
    ok(dev.sh(&command(&j, "release", "2026.11.0", "endpoint")));
    assert_eq!(dev.digests(), original);

    // The whole release from the release directory.
    let dev = Device::new();
    let original = dev.digests();
    ok(dev.sh(&format!("rewind-agent apply --release {} --db notes=notes.db --db settings=settings.db", example())));
    assert_ne!(dev.digests(), original);
    ok(dev.sh(&command(&j, "release", "2026.11.0", "endpoint_release")));
    assert_eq!(dev.digests(), original);
}

#[test]
fn a_template_with_an_unknown_variable_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("2026.11.0");
    copy_dir(&release("2026.11.0"), &rel);
    let file = rel.join("templates/resolved.md");
    std::fs::write(
        &file,
        "---\ntitle: Resolved {{release}}\n---\nAll good since {{started_at}}.\nSeverity: {{severity}}\n",
    )
    .unwrap();
    for args in [vec!["runbook", &s(&rel)], vec!["release", "lint", &s(&rel)]] {
        let r = ctl(&args);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains(&format!(
                "{}:5:11: unknown variable `{{{{severity}}}}`; the variables are: release, product, version, wave, affected_count, restore_window, owner, on_call, started_at, reason",
                file.display()
            )),
            "{r:?}"
        );
        assert!(r.stdout.is_empty() || args[0] == "release", "{r:?}");
    }

    std::fs::remove_file(&file).unwrap();
    std::fs::write(rel.join("templates/outage.md"), "Down.\n").unwrap();
    let r = ctl(&["runbook", &s(&rel)]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(
            "templates/outage.md:1:1: unknown template `outage.md`: templates/ holds only incident_started.md,"
        ),
        "{r:?}"
    );
}
