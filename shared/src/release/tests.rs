use super::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const BASE: &str = r#"
name = "notes"
version = "1.0.0"
sequence = 1
app_version = "4.2.0"
owner = "storage-team"
on_call = "pager:storage"

[[target]]
name = "notes"
"#;

fn release(extra: &str, migrations: &[&str]) -> (tempfile::TempDir, Result<Release, ReleaseError>) {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "release.toml", &format!("{BASE}{extra}"));
    for m in migrations {
        write(d.path(), &format!("migrations/{m}/up.sql"), "CREATE TABLE x(a);");
        write(d.path(), &format!("migrations/{m}/down.sql"), "DROP TABLE x;");
    }
    let r = Release::load(d.path());
    (d, r)
}

fn mig(id: &str, after: &[&str]) -> String {
    let after: Vec<String> = after.iter().map(|a| format!("\"{a}\"")).collect();
    format!("\n[[migration]]\nid = \"{id}\"\ntarget = \"notes\"\nafter = [{}]\n", after.join(", "))
}

#[test]
fn unknown_key_names_line_and_column() {
    let (_d, r) = release("colour = \"red\"\n", &[]);
    match r.unwrap_err() {
        ReleaseError::Syntax { line, column, message, .. } => {
            assert_eq!((line, column), (11, 1));
            assert!(message.contains("colour"), "{message}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn order_is_topological_and_stable() {
    let extra = [mig("c", &["a"]), mig("a", &[]), mig("b", &[]), mig("d", &["c", "b"])].concat();
    let (_d, r) = release(&extra, &["a", "b", "c", "d"]);
    let ids: Vec<_> = r.unwrap().migrations.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, ["a", "c", "b", "d"]);
}

#[test]
fn cycles_missing_scripts_and_unknown_after_are_all_reported() {
    let extra = [mig("a", &["b"]), mig("b", &["a"]), mig("c", &["zzz"]), mig("e", &[])].concat();
    let (_d, r) = release(&extra, &["a", "b", "c"]);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("release.toml:13:6: dependency cycle: a -> b -> a"), "{msg}");
    assert!(msg.contains("release.toml:23:6: migration c: `after` names `zzz`"), "{msg}");
    assert!(msg.contains("release.toml:28:6: migration e: cannot read"), "{msg}");
    assert!(msg.contains("4 problem(s)"), "{msg}");
}

/// Every problem of an invalid release, as `file:line:col: message` lines.
fn problems(r: Result<Release, ReleaseError>) -> Vec<String> {
    match r.unwrap_err() {
        ReleaseError::Invalid { problems, .. } => problems.iter().map(ToString::to_string).collect(),
        e => panic!("expected validation problems, got: {e}"),
    }
}

/// The one problem, with the temp dir cut off: `release.toml:L:C: message`.
fn only_problem(r: Result<Release, ReleaseError>) -> String {
    let p = problems(r);
    assert_eq!(p.len(), 1, "{p:#?}");
    let s = &p[0];
    s[s.find("release.toml").unwrap()..].to_string()
}

fn syntax(r: Result<Release, ReleaseError>) -> (usize, usize, String) {
    match r.unwrap_err() {
        ReleaseError::Syntax { line, column, message, .. } => (line, column, message),
        e => panic!("expected a syntax error, got: {e}"),
    }
}

#[test]
fn a_cycle_names_only_the_migrations_on_it() {
    // c waits on the cycle but is not part of it; d is fine.
    let extra = [mig("d", &[]), mig("a", &["b"]), mig("b", &["a"]), mig("c", &["a"])].concat();
    let (_d, r) = release(&extra, &["a", "b", "c", "d"]);
    assert_eq!(
        only_problem(r),
        "release.toml:18:6: dependency cycle: a -> b -> a (each names the next in `after`); remove one of these `after` edges"
    );
    let (_d, r) = release(&mig("a", &["a"]), &["a"]);
    assert!(only_problem(r).contains("dependency cycle: a -> a"));
    let extra = [mig("a", &["c"]), mig("b", &["a"]), mig("c", &["b"])].concat();
    let (_d, r) = release(&extra, &["a", "b", "c"]);
    assert!(only_problem(r).contains("dependency cycle: a -> c -> b -> a"));
}

#[test]
fn a_dependency_with_a_missing_script_is_not_a_cycle() {
    let extra = [mig("a", &[]), mig("b", &["a"])].concat();
    let (_d, r) = release(&extra, &["b"]);
    let p = problems(r);
    assert_eq!(p.len(), 2, "up.sql and down.sql of a, no cycle: {p:#?}");
    assert!(p.iter().all(|p| p.contains("release.toml:13:6: migration a: cannot read")), "{p:#?}");
}

#[test]
fn down_sql_is_required_unless_rollback_restores() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "release.toml", &format!("{BASE}{}", mig("a", &[])));
    write(d.path(), "migrations/a/up.sql", "CREATE TABLE x(a);");
    let p = only_problem(Release::load(d.path()));
    assert!(
        p.contains("migration a: cannot read") && p.contains("down.sql") && p.contains("or set rollback = \"restore\""),
        "{p}"
    );
    write(d.path(), "release.toml", &format!("{BASE}{}rollback = \"restore\"\n", mig("a", &[])));
    let r = Release::load(d.path()).unwrap();
    assert_eq!(r.migrations[0].rollback, RollbackMode::Restore);
    assert!(r.migrations[0].down.is_none() && r.migrations[0].verify.is_none());
}

#[test]
fn a_duplicate_id_points_at_the_second_declaration() {
    let extra = [mig("a", &[]), mig("a", &[])].concat();
    let (_d, r) = release(&extra, &["a"]);
    assert_eq!(
        only_problem(r),
        "release.toml:18:6: migration a is declared twice: ids must be unique; rename or remove this one"
    );
}

#[test]
fn unknown_keys_in_tables_and_wrong_types_name_line_and_column() {
    let (_d, r) = release(&format!("{}colour = 1\n", mig("a", &[])), &["a"]);
    let (line, column, message) = syntax(r);
    assert_eq!((line, column), (16, 1), "{message}");
    assert!(message.contains("unknown field `colour`") && message.contains("docs/release-format.md"), "{message}");

    for (replace, with, at) in [
        ("sequence = 1", "sequence = \"7\"", (4, 12)),
        ("sequence = 1", "sequence = 1.5", (4, 12)),
        ("owner = \"storage-team\"", "owner = 3", (6, 9)),
    ] {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "release.toml", &BASE.replace(replace, with));
        let (line, column, message) = syntax(Release::load(d.path()));
        assert_eq!((line, column), at, "{with}: {message}");
        assert!(message.contains("invalid type"), "{with}: {message}");
    }
    let (_d, r) = release(&format!("{}reversible = \"no\"\n", mig("a", &[])), &["a"]);
    assert_eq!(syntax(r).0, 16);
    let (_d, r) = release(&mig("a", &[]).replace("after = []", "after = \"b\""), &["a"]);
    assert_eq!(syntax(r).0, 15);
    let (_d, r) = release(&format!("{}rollback = \"undo\"\n", mig("a", &[])), &["a"]);
    let (line, _, message) = syntax(r);
    assert_eq!(line, 16);
    assert!(message.contains("down") && message.contains("restore"), "{message}");
}

#[test]
fn a_missing_required_key_is_named() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "release.toml", &BASE.replace("owner = \"storage-team\"\n", ""));
    let (_, _, message) = syntax(Release::load(d.path()));
    assert!(message.contains("missing field `owner`"), "{message}");
    let (_d, r) = release("\n[[migration]]\nid = \"a\"\n", &["a"]);
    assert!(syntax(r).2.contains("missing field `target`"));
}

#[test]
fn negative_sequence_is_refused_with_its_column() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "release.toml", &BASE.replace("sequence = 1", "sequence = -3"));
    assert!(
        only_problem(Release::load(d.path()))
            .starts_with("release.toml:4:12: `sequence = -3` must be a positive integer")
    );
}

#[test]
fn bad_ids_targets_and_preserve_entries_point_at_their_line() {
    let (_d, r) = release(&mig("a-b", &[]), &[]);
    assert!(only_problem(r).starts_with("release.toml:13:6: migration id `a-b` must be letters, digits and _"));
    let (_d, r) = release(&mig("a", &[]).replace("target = \"notes\"", "target = \"nope\""), &["a"]);
    assert_eq!(
        only_problem(r),
        "release.toml:14:10: migration a: target `nope` is not declared; add [[target]] name = \"nope\""
    );
    let (_d, r) = release(&format!("{}reversible = false\npreserve = [\"orders.status.x\"]\n", mig("a", &[])), &["a"]);
    assert!(only_problem(r).contains("preserve entry `orders.status.x` must be `table` or `table.column`"));
    let (_d, r) = release(&format!("{}reversible = false\nrollback = \"restore\"\n", mig("a", &[])), &["a"]);
    assert!(r.is_ok());
    let (_d, r) = release(&format!("{}preserve = [\"orders.status\", \"Orders.note\"]\n", mig("a", &[])), &["a"]);
    assert!(only_problem(r).contains("migration a: preserve names table `Orders` twice"));
    let (_d, r) = release("\n[[target]]\nname = \"notes\"\n", &[]);
    assert_eq!(only_problem(r), "release.toml:13:8: target notes is declared twice: remove one [[target]]");
}

#[test]
fn flags_checks_triggers_and_rollout_are_validated() {
    let cases: &[(&str, &str)] = &[
        (
            "\n[[flag]]\nname = \"f\"\nvalue = [1]\nprevious = false\nowner = \"x\"\n",
            "release.toml:13:8: flag f: `value`: flag values are bool, int, float, string or an inline table",
        ),
        (
            "\n[[flag]]\nname = \"f\"\nvalue = 1\nprevious = 0\nowner = \"x\"\nexpires = 2027-01-31T10:00:00Z\n",
            "release.toml:13:8: flag f: `expires` must be a date like 2027-01-31",
        ),
        (
            "\n[[check]]\nname = \"c\"\ntarget = \"notes\"\nsql = \"SELECT 1\"\nexpect = \"> 1\"\n",
            "release.toml:16:10: check `c`: expect `> 1` is not understood",
        ),
        (
            "\n[[check]]\nname = \"c\"\ntarget = \"other\"\nsql = \"SELECT 1\"\nexpect = \"= 1\"\n",
            "release.toml:14:10: check `c`: target `other` is not declared",
        ),
        (
            "\n[[trigger]]\nmetric = \"m\"\nabove = 1\nbelow = 0\nwindow = \"10m\"\n",
            "release.toml:13:10: trigger m: give exactly one of `above` or `below`",
        ),
        (
            "\n[[trigger]]\nmetric = \"m\"\nabove = 1\nwindow = \"10\"\n",
            "release.toml:15:10: trigger m: `10` is not a duration",
        ),
        ("\n[rollout]\nwaves = []\n", "release.toml:13:9: [rollout] has no waves"),
        (
            "\n[rollout]\nwaves = [{ name = \"a\", percent = 150 }]\n",
            "release.toml:13:19: wave a: percent = 150 must be in (0, 100]",
        ),
        (
            "\n[rollout]\nwaves = [\n  { name = \"a\", percent = 5 },\n  { name = \"a\", percent = 10, bake = \"1x\" },\n]\n",
            "release.toml:15:12: wave a is declared twice",
        ),
        ("\n[rollout]\nwaves = [{ name = \"a\" }]\n", "release.toml:13:19: wave a: give a `selector` or a `percent`"),
        (
            "\n[rollout]\nwaves = [{ name = \"a\", percent = 5 }]\nmax_failure_ratio = 2.0\n",
            "release.toml:14:21: [rollout] max_failure_ratio = 2 must be between 0 and 1",
        ),
    ];
    for (extra, expected) in cases {
        let (_d, r) = release(extra, &[]);
        let p = problems(r);
        let p: Vec<String> = p.iter().map(|s| s[s.find("release.toml").unwrap()..].to_string()).collect();
        assert!(p.iter().any(|s| s.starts_with(expected)), "{extra}\nexpected {expected}\ngot {p:#?}");
    }
    let check = "\n[[check]]\nname = \"c\"\ntarget = \"notes\"\nsql = \"SELECT 1\"\nexpect = \"= 1\"\n";
    let (_d, r) = release(&format!("{check}when = []\n"), &[]);
    assert!(only_problem(r).starts_with("release.toml:13:8: check `c`: `when = []` never runs it"));
    let (_d, r) = release(&format!("{check}{check}"), &[]);
    assert_eq!(only_problem(r), "release.toml:19:8: check `c` is declared twice: check names must be unique");
    let dup = "\n[[flag]]\nname = \"f\"\nvalue = 1\nprevious = 0\nowner = \"x\"\n";
    let (_d, r) = release(&format!("{dup}{dup}"), &[]);
    assert_eq!(only_problem(r), "release.toml:19:8: flag f is declared twice: remove or rename one");
    let spaced = "\n[[flag]]\nname = \"new checkout\"\nvalue = 1\nprevious = 0\nowner = \"x\"\n";
    let (_d, r) = release(spaced, &[]);
    assert_eq!(
        only_problem(r),
        "release.toml:13:8: flag name \"new checkout\": use letters, digits, `_`, `-`, `.` or `~` (a name apps and URLs carry as is)"
    );
}

#[test]
fn the_example_release_loads_in_dependency_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notes-app/releases/2026.11.0");
    let r = Release::load(&dir).unwrap();
    let ids: Vec<_> = r.migrations.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["0001_add_currency", "0002_normalize_status", "0003_settings_theme"]);
    assert_eq!(r.sequence, 7);
    assert_eq!(
        r.migrations[1].preserve[0].side_table("0002_normalize_status"),
        "_rewind_preserve_0002_normalize_status_orders"
    );
    assert_eq!(r.flags[0].expires.as_deref(), Some("2027-01-31"));
    assert_eq!(r.checks[0].when, [CheckWhen::AfterApply, CheckWhen::AfterRollback]);
    assert_eq!(r.rollout.as_ref().unwrap().waves[2].bake, Duration::from_secs(3600));
}

#[test]
fn irreversible_needs_preserve_or_restore() {
    let extra = format!("{}reversible = false\n", mig("a", &[]));
    let (_d, r) = release(&extra, &["a"]);
    assert!(r.unwrap_err().to_string().contains("reversible = false needs"));
    let extra = format!("{}reversible = false\npreserve = [\"orders.status\"]\n", mig("a", &[]));
    let (_d, r) = release(&extra, &["a"]);
    assert_eq!(r.unwrap().migrations[0].preserve, [Preserve { table: "orders".into(), column: Some("status".into()) }]);
}

#[test]
fn sequence_must_be_positive() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "release.toml", &BASE.replace("sequence = 1", "sequence = 0"));
    let msg = Release::load(d.path()).unwrap_err().to_string();
    assert!(msg.contains("release.toml:4:12: `sequence = 0` must be a positive integer"), "{msg}");
}

#[test]
fn expired_flags_are_linted() {
    let extra = "\n[[flag]]\nname = \"f\"\nvalue = true\nprevious = false\nowner = \"x\"\nexpires = 2020-01-01\n";
    let (_d, r) = release(extra, &[]);
    let w = r.unwrap().lint("2026-11-24");
    assert!(w.iter().any(|w| w.0.contains("flag f: expired on 2020-01-01")), "{w:?}");
}

#[test]
fn manual_flags_lint_clean() {
    let extra = "\n[[flag]]\nname = \"m\"\nvalue = true\nprevious = false\nowner = \"x\"\nactivate = \"manual\"\n";
    let (_d, r) = release(extra, &[]);
    let r = r.unwrap();
    assert_eq!(r.flags[0].activate, Activation::Manual);
    let w = r.lint("2026-11-24");
    assert!(!w.iter().any(|w| w.0.contains("flag m")), "{w:?}");
}

#[test]
fn expectations_parse_and_judge() {
    use serde_json::json;
    assert!(Expect::parse(">= 1").unwrap().accepts(&json!(3), None));
    assert!(!Expect::parse("between 1 5").unwrap().accepts(&json!(6), None));
    assert!(Expect::parse("unchanged").unwrap().accepts(&json!("x"), Some(&json!("x"))));
    assert!(Expect::parse("> 1").is_err());
    assert!(Expect::parse("between 5 1").is_err());
}

#[test]
fn db_mapping_errors_name_the_target() {
    let (_d, r) = release(&mig("a", &[]), &["a"]);
    let r = r.unwrap();
    assert!(map_targets(&r, &["nope=x.db".into()]).unwrap_err().contains("no target `nope`"));
    assert!(map_targets(&r, &[]).unwrap_err().contains("add --db notes=FILE"));
    assert!(map_targets(&r, &["notes".into()]).unwrap_err().contains("expected TARGET=FILE"));
    assert_eq!(map_targets(&r, &["notes=n.db".into()]).unwrap()["notes"], PathBuf::from("n.db"));
}

#[test]
fn templates_load_with_the_release_and_their_errors_are_release_problems() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "release.toml", BASE);
    let r = Release::load(d.path()).unwrap();
    assert!(r.templates.is_empty());
    // A release without templates serializes as before (no `templates` key).
    assert!(!serde_json::to_string(&r).unwrap().contains("templates"));

    write(d.path(), "templates/resolved.md", "---\ntitle: Fixed\n---\n{{release}} is fine again\n");
    let r = Release::load(d.path()).unwrap();
    let rendered = r.templates.render(crate::templates::Event::Resolved, &crate::templates::Values::for_release(&r));
    assert_eq!(rendered.text, "Fixed\n\nnotes 1.0.0 is fine again\n");
    let back: Release = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);

    write(d.path(), "templates/rollback_started.md", "ok\nWave {{wave}} by {{oncall}}\n");
    write(d.path(), "templates/outage.md", "x\n");
    let p = problems(Release::load(d.path()));
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].ends_with("templates/outage.md:1:1: unknown template `outage.md`: templates/ holds only incident_started.md, rollback_started.md, rollback_completed.md, resolved.md, scheduled_maintenance.md"), "{p:#?}");
    assert!(p[1].contains("templates/rollback_started.md:2:18: unknown variable `{{oncall}}`; the variables are: release, product, version, wave, affected_count, restore_window, owner, on_call, started_at, reason"), "{p:#?}");
}
