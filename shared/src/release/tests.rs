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
    assert!(msg.contains("dependency cycle among migrations a, b"), "{msg}");
    assert!(msg.contains("`after` names `zzz`"), "{msg}");
    assert!(msg.contains("migration e: cannot read"), "{msg}");
    assert!(msg.contains("release.toml:"), "{msg}");
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
    assert!(msg.contains("release.toml:4: `sequence = 0` must be a positive integer"), "{msg}");
}

#[test]
fn expired_flags_are_linted() {
    let extra = "\n[[flag]]\nname = \"f\"\nvalue = true\nprevious = false\nowner = \"x\"\nexpires = 2020-01-01\n";
    let (_d, r) = release(extra, &[]);
    let w = r.unwrap().lint("2026-11-24");
    assert!(w.iter().any(|w| w.0.contains("flag f: expired on 2020-01-01")), "{w:?}");
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
