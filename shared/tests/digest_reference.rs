//! The Rust digest against an independent re-implementation written from the
//! spec alone (docs/digest_reference.py, Python + the `blake3` package), and
//! against the test vectors printed in docs/digest.md.
//!
//! Nothing here skips: a missing `python3` or `blake3` is a failure that says
//! how to install it (scripts/deps.sh `need_test_deps` does it for `scripts/test.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rewind_shared::digest::database_digest;
use rusqlite::Connection;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs the Python reference on `dbs`; one JSON object per database.
fn python_digests(dbs: &[PathBuf]) -> Vec<Value> {
    let script = repo_root().join("docs/digest_reference.py");
    let python = std::env::var("REWIND_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(&script)
        .args(dbs)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; install python3 (scripts/deps.sh need_test_deps)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'blake3'"),
        "the reference needs the PyPI package blake3: run `python3 -m pip install blake3` \
         (scripts/test.sh does it through scripts/deps.sh)\n{stderr}"
    );
    assert!(out.status.success(), "{} failed: {stderr}", script.display());
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), dbs.len(), "one line per database");
    lines
}

fn rust_digest(path: &Path) -> Value {
    let conn = Connection::open(path).unwrap();
    serde_json::to_value(database_digest(&conn).unwrap()).unwrap()
}

/// The `text expected` block format of docs/digest.md.
fn expected_block(v: &Value) -> String {
    let mut s = format!("schema {}\n", v["schema"].as_str().unwrap());
    for t in v["tables"].as_array().unwrap() {
        s.push_str(&format!("table {} {} {}\n", t["name"].as_str().unwrap(), t["rows"], t["digest"].as_str().unwrap()));
    }
    s.push_str(&format!("digest {}\n", v["digest"].as_str().unwrap()));
    s
}

struct Vector {
    title: String,
    sql: String,
    expected: String,
}

/// Vectors are a ```` ```sql vector ```` block followed by a ```` ```text expected ````
/// block, under a `#### ` heading.
fn vectors() -> Vec<Vector> {
    let doc = std::fs::read_to_string(repo_root().join("docs/digest.md")).unwrap();
    let mut out = Vec::new();
    let mut title = String::new();
    let mut lines = doc.lines();
    let mut sql: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(t) = line.strip_prefix("#### ") {
            title = t.to_string();
        } else if line.trim() == "```sql vector" || line.trim() == "```text expected" {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            if line.contains("vector") {
                sql = Some(body);
            } else {
                let normalised: String =
                    body.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n").collect();
                out.push(Vector {
                    title: title.clone(),
                    sql: sql.take().expect("a `text expected` block follows a `sql vector` block"),
                    expected: normalised,
                });
            }
        }
    }
    out
}

fn build(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let path = dir.join(name);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"));
    drop(conn);
    path
}

#[test]
fn docs_vectors_match_rust_and_python() {
    let vectors = vectors();
    assert!(vectors.len() >= 8, "docs/digest.md has {} vectors", vectors.len());
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> =
        vectors.iter().enumerate().map(|(i, v)| build(dir.path(), &format!("v{i}.db"), &v.sql)).collect();
    let python = python_digests(&paths);
    let mut wrong = String::new();
    for ((v, p), py) in vectors.iter().zip(&paths).zip(&python) {
        let rust = rust_digest(p);
        let got = expected_block(&rust);
        if got != v.expected {
            wrong.push_str(&format!("\n#### {}\nRust computes:\n{got}docs say:\n{}", v.title, v.expected));
        }
        assert_eq!(&rust, py, "vector `{}`: Rust and the Python reference disagree", v.title);
    }
    assert!(wrong.is_empty(), "docs/digest.md vectors are out of date:{wrong}");
}

// ---- random databases ----

/// Names that exercise case folding, quoting and non-ASCII.
const NAMES: &[&str] = &["a", "B", "Mixed", "with space", "we\"ird", "Ünï", "order", "x_1", "Δ", "sel$"];

fn ident(n: &str) -> String {
    format!("\"{}\"", n.replace('"', "\"\""))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("NULL".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        (-3i64..3).prop_map(|i| i.to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("-0.0".to_string()),
        Just("0.0".to_string()),
        Just("1.0".to_string()),
        Just("1e308".to_string()),
        Just("(0.0/0.0)".to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        "[a-c]{0,3}".prop_map(|s| format!("'{s}'")),
        Just("'1'".to_string()),
        Just("'Grüße 🌍'".to_string()),
        Just("'it''s'".to_string()),
        Just("('a' || char(0) || 'b')".to_string()),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(|b| format!("x'{}'", hex::encode(b))),
        Just("x'31'".to_string()),
    ]
}

#[derive(Debug, Clone)]
enum Key {
    RowidAlias,
    IntegerPkDesc,
    NotNullComposite,
    NullableText,
    WithoutRowid,
    None,
}

fn table_sql() -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![
        Just(Key::RowidAlias),
        Just(Key::IntegerPkDesc),
        Just(Key::NotNullComposite),
        Just(Key::NullableText),
        Just(Key::WithoutRowid),
        Just(Key::None),
    ];
    let ty = prop_oneof![
        Just(""),
        Just("INTEGER"),
        Just("REAL"),
        Just("TEXT"),
        Just("BLOB"),
        Just("NUMERIC"),
        Just("varchar(10)")
    ];
    (
        0..NAMES.len(),
        key,
        proptest::collection::vec(ty, 1..4),
        any::<bool>(),
        proptest::collection::vec(proptest::collection::vec(value(), 4), 0..12),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(ni, key, types, strict, rows, add_column, extras)| {
            let t = NAMES[ni];
            let q = ident(t);
            let cols: Vec<String> =
                (0..types.len()).map(|i| ident(&format!("C{i} {}", NAMES[(ni + i) % NAMES.len()]))).collect();
            // STRICT needs known types: map the affinity names onto STRICT's.
            let ty = |i: usize| -> &str {
                if strict {
                    match types[i] {
                        "INTEGER" => "INTEGER",
                        "REAL" => "REAL",
                        "TEXT" => "TEXT",
                        "BLOB" => "BLOB",
                        _ => "ANY",
                    }
                } else {
                    types[i]
                }
            };
            let mut defs: Vec<String> = cols.iter().enumerate().map(|(i, c)| format!("{c} {}", ty(i))).collect();
            let mut suffix = String::new();
            let key_cols = match key {
                Key::RowidAlias => {
                    defs.insert(0, "k INTEGER PRIMARY KEY".into());
                    1
                }
                Key::IntegerPkDesc => {
                    defs.insert(0, "k INTEGER PRIMARY KEY DESC".into());
                    1
                }
                Key::NotNullComposite => {
                    defs.insert(0, "k1 INTEGER NOT NULL".into());
                    defs.insert(1, "k2 TEXT NOT NULL".into());
                    defs.push("PRIMARY KEY (k2, k1)".into());
                    2
                }
                Key::NullableText => {
                    defs.insert(0, "k TEXT PRIMARY KEY".into());
                    1
                }
                Key::WithoutRowid => {
                    defs.insert(0, "k ANY PRIMARY KEY".into());
                    suffix = " WITHOUT ROWID".into();
                    1
                }
                Key::None => 0,
            };
            if strict {
                suffix = if suffix.is_empty() { " STRICT".into() } else { " STRICT, WITHOUT ROWID".into() };
            }
            let mut stmts = vec![format!("CREATE TABLE {q}({}){suffix}", defs.join(", "))];
            let ncols = cols.len() + key_cols;
            for (ri, row) in rows.iter().enumerate() {
                let mut vals: Vec<String> = Vec::new();
                for i in 0..ncols {
                    let v = row[i % row.len()].clone();
                    // Keys: mostly distinct small values, sometimes NULL or a repeat.
                    if i < key_cols {
                        vals.push(match (i, ri % 5) {
                            (_, 4) => "NULL".into(),
                            (0, _) => format!("{}", ri / 2),
                            _ => format!("'{}'", ri % 3),
                        });
                    } else if strict && ty(i - key_cols) != "ANY" {
                        vals.push("NULL".into());
                    } else {
                        vals.push(v);
                    }
                }
                stmts.push(format!("INSERT OR IGNORE INTO {q} VALUES ({})", vals.join(", ")));
            }
            if add_column {
                stmts.push(format!("ALTER TABLE {q} ADD COLUMN \"Added\" TEXT DEFAULT 'x'"));
            }
            if extras & 1 != 0 {
                stmts.push(format!(
                    "CREATE INDEX {} ON {q}({}) WHERE {} IS NOT NULL",
                    ident(&format!("ix {t}")),
                    cols[0],
                    cols[0]
                ));
            }
            if extras & 2 != 0 {
                stmts.push(format!("CREATE VIEW {} AS SELECT * FROM {q}", ident(&format!("v {t}"))));
            }
            if extras & 4 != 0 {
                stmts.push(format!(
                    "CREATE TRIGGER {} AFTER DELETE ON {q} BEGIN SELECT 1; END",
                    ident(&format!("tr {t}"))
                ));
            }
            stmts
        })
}

fn database_sql() -> impl Strategy<Value = (bool, Vec<Vec<String>>)> {
    (any::<bool>(), proptest::collection::vec(table_sql(), 0..4))
}

/// Builds the database, skipping statements SQLite refuses (a repeated
/// table name, a NOT NULL key given NULL). Returns the script that ran.
fn build_random(path: &Path, utf16: bool, tables: &[Vec<String>]) -> String {
    let conn = Connection::open(path).unwrap();
    let mut script = String::new();
    if utf16 {
        conn.execute_batch("PRAGMA encoding = 'UTF-16le'").unwrap();
        script.push_str("PRAGMA encoding = 'UTF-16le';\n");
    }
    for stmt in tables.iter().flatten() {
        if conn.execute_batch(stmt).is_ok() {
            script.push_str(stmt);
            script.push_str(";\n");
        }
    }
    script
}

#[test]
fn random_databases_match_the_python_reference() {
    let cases: usize = std::env::var("REWIND_DIGEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(80);
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let dir = tempfile::tempdir().unwrap();
    let strategy = database_sql();
    let mut paths = Vec::new();
    let mut scripts = Vec::new();
    for i in 0..cases {
        let (utf16, tables) = strategy.new_tree(&mut runner).unwrap().current();
        let path = dir.path().join(format!("r{i}.db"));
        scripts.push(build_random(&path, utf16, &tables));
        paths.push(path);
    }
    // The generator must really produce what this test claims to cover.
    let share = |needle: &str| scripts.iter().filter(|s| s.contains(needle)).count();
    for needle in [
        "INSERT",
        "WITHOUT ROWID",
        "STRICT",
        "PRIMARY KEY DESC",
        "UTF-16le",
        "ADD COLUMN",
        "CREATE INDEX",
        "CREATE VIEW",
        "CREATE TRIGGER",
        "char(0)",
        "-0.0",
    ] {
        assert!(share(needle) * 10 >= cases, "only {} of {cases} random databases use {needle}", share(needle));
    }
    let python = python_digests(&paths);
    for ((p, py), script) in paths.iter().zip(&python).zip(&scripts) {
        let rust = rust_digest(p);
        assert_eq!(&rust, py, "Rust and the Python reference disagree on the database built by:\n{script}");
    }
}
