//! Property tests for "rewind-digest-1" (docs/digest.md §6): the same logical
//! content gives the same digest however it is stored or was reached; any
//! logical change gives a different one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use rewind_shared::digest::{DatabaseDigest, database_digest, schema_digest};
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

// ---- a random database, as data ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `k INTEGER PRIMARY KEY`
    RowidAlias,
    /// `k TEXT NOT NULL PRIMARY KEY`
    NotNullKey,
    /// `k TEXT PRIMARY KEY`: may hold several NULLs.
    NullableKey,
    /// `k INTEGER PRIMARY KEY DESC`: not a rowid alias, may hold NULLs.
    IntegerKeyDesc,
    /// `(k1, k2)` both NOT NULL.
    Composite,
    WithoutRowid,
    /// STRICT with `ANY` columns (so every storage class stays as given).
    Strict,
    /// No key at all: a multiset, duplicates included.
    NoKey,
}

#[derive(Debug, Clone)]
struct Table {
    name: String,
    shape: Shape,
    /// Non-key columns: name and declared type.
    cols: Vec<(String, &'static str)>,
    /// Non-key values per row; the key is derived from the row's index.
    rows: Vec<Vec<Value>>,
}

impl Table {
    fn key_defs(&self) -> Vec<&'static str> {
        match self.shape {
            Shape::RowidAlias | Shape::Strict => vec!["k INTEGER PRIMARY KEY"],
            Shape::NotNullKey => vec!["k TEXT NOT NULL PRIMARY KEY"],
            Shape::NullableKey => vec!["k TEXT PRIMARY KEY"],
            Shape::IntegerKeyDesc => vec!["k INTEGER PRIMARY KEY DESC"],
            Shape::Composite => vec!["k1 INTEGER NOT NULL", "k2 TEXT NOT NULL"],
            Shape::WithoutRowid => vec!["k INTEGER PRIMARY KEY"],
            Shape::NoKey => vec![],
        }
    }

    fn create_sql(&self) -> String {
        let mut defs: Vec<String> = self.key_defs().iter().map(|s| s.to_string()).collect();
        for (n, t) in &self.cols {
            let t = if self.shape == Shape::Strict { "ANY" } else { t };
            defs.push(format!("{} {t}", ident(n)));
        }
        if self.shape == Shape::Composite {
            defs.push("PRIMARY KEY (k2, k1)".into());
        }
        let suffix = match self.shape {
            Shape::WithoutRowid => " WITHOUT ROWID",
            Shape::Strict => " STRICT",
            _ => "",
        };
        format!("CREATE TABLE {}({}){suffix}", ident(&self.name), defs.join(", "))
    }

    /// The full row (key values first) for row `i`.
    fn row(&self, i: usize) -> Vec<Value> {
        let n = i as i64;
        let mut r = match self.shape {
            Shape::RowidAlias | Shape::Strict | Shape::WithoutRowid => vec![Value::Integer(n * 7 - 20)],
            Shape::NotNullKey => vec![Value::Text(format!("k{n}"))],
            Shape::NullableKey => vec![if i.is_multiple_of(3) { Value::Null } else { Value::Text(format!("k{n}")) }],
            Shape::IntegerKeyDesc => vec![if i.is_multiple_of(3) { Value::Null } else { Value::Integer(n) }],
            Shape::Composite => vec![Value::Integer(n % 3), Value::Text(format!("{}", n / 3))],
            Shape::NoKey => vec![],
        };
        r.extend(self.rows[i].iter().cloned());
        r
    }

    fn insert_sql(&self) -> String {
        let n = self.key_defs().len() + self.cols.len();
        format!("INSERT INTO {} VALUES ({})", ident(&self.name), vec!["?"; n].join(", "))
    }
}

fn ident(n: &str) -> String {
    format!("\"{}\"", n.replace('"', "\"\""))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        (-2i64..3).prop_map(Value::Integer),
        Just(Value::Integer(i64::MAX)),
        Just(Value::Integer(i64::MIN)),
        Just(Value::Integer(1 << 53)),
        Just(Value::Real(-0.0)),
        Just(Value::Real(1.0)),
        Just(Value::Real(9_007_199_254_740_992.0)),
        any::<f64>().prop_filter("SQLite stores NaN as NULL", |f| !f.is_nan()).prop_map(Value::Real),
        "[ab1]{0,3}".prop_map(Value::Text),
        Just(Value::Text("1".into())),
        Just(Value::Text("a\0b".into())),
        Just(Value::Text("Grüße 🌍".into())),
        proptest::collection::vec(any::<u8>(), 0..5).prop_map(Value::Blob),
        Just(Value::Blob(b"1".to_vec())),
    ]
}

const TYPES: &[&str] = &["", "INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC", "varchar(10)"];

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::RowidAlias),
        Just(Shape::NotNullKey),
        Just(Shape::NullableKey),
        Just(Shape::IntegerKeyDesc),
        Just(Shape::Composite),
        Just(Shape::WithoutRowid),
        Just(Shape::Strict),
        Just(Shape::NoKey),
    ]
}

/// A table; `untyped` keeps every column free of type affinity so a value
/// is stored exactly as given (needed to reason about single changes).
fn table(name: String, untyped: bool) -> impl Strategy<Value = Table> {
    let ty = if untyped { Just("").boxed() } else { proptest::sample::select(TYPES).boxed() };
    (shape(), proptest::collection::vec(ty, 1..4), 0usize..10).prop_flat_map(move |(shape, types, nrows)| {
        let name = name.clone();
        let ncols = types.len();
        // Tables without a key get duplicate rows on purpose.
        let rows =
            proptest::collection::vec(proptest::collection::vec(value(), ncols), nrows).prop_map(move |mut rows| {
                if shape == Shape::NoKey && rows.len() > 2 {
                    let dup = rows[0].clone();
                    rows.push(dup);
                }
                rows
            });
        (Just(shape), Just(types), rows).prop_map(move |(shape, types, rows)| Table {
            name: name.clone(),
            shape,
            cols: types.iter().enumerate().map(|(i, t)| (format!("C{i}"), *t)).collect(),
            rows,
        })
    })
}

fn tables(untyped: bool) -> impl Strategy<Value = Vec<Table>> {
    let names = ["orders", "Mixed Case", "ünï", "we\"ird"];
    (1usize..=3)
        .prop_flat_map(move |n| names[..n].iter().map(|name| table(name.to_string(), untyped)).collect::<Vec<_>>())
}

/// Creates the tables and inserts row `order[i]` as the i-th insert.
fn build(conn: &Connection, tables: &[Table], order: &dyn Fn(usize) -> Vec<usize>) {
    conn.execute_batch("BEGIN").unwrap();
    for t in tables {
        conn.execute_batch(&t.create_sql()).unwrap();
        let mut stmt = conn.prepare(&t.insert_sql()).unwrap();
        for i in order(t.rows.len()) {
            stmt.execute(params_from_iter(t.row(i))).unwrap_or_else(|e| panic!("{}: row {i}: {e}", t.name));
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

fn in_order(n: usize) -> Vec<usize> {
    (0..n).collect()
}

fn memory(tables: &[Table]) -> Connection {
    let c = Connection::open_in_memory().unwrap();
    build(&c, tables, &in_order);
    c
}

fn digest(c: &Connection) -> DatabaseDigest {
    database_digest(c).unwrap()
}

fn file_digest(path: &Path) -> DatabaseDigest {
    digest(&Connection::open(path).unwrap())
}

/// Rebuilds a database from a logical export: the schema statements, then
/// every row read as values and inserted again with bound parameters, as an
/// app's own export/import would. (Written as SQL literals, some REALs would
/// not survive: SQLite's decimal parser is not always correctly rounded, e.g.
/// `8.6025979410311975e214` reads back one ulp off.)
fn dump_and_reload(src: &Connection, dst: &Connection) {
    let objects: Vec<(String, String)> = src
        .prepare("SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY type = 'table' DESC, rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    dst.execute_batch("BEGIN").unwrap();
    for (name, sql) in &objects {
        dst.execute_batch(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
        if !sql.starts_with("CREATE TABLE") {
            continue;
        }
        let mut stmt = src.prepare(&format!("SELECT * FROM {}", ident(name))).unwrap();
        let n = stmt.column_count();
        let rows: Vec<Vec<Value>> = stmt
            .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut insert =
            dst.prepare(&format!("INSERT INTO {} VALUES ({})", ident(name), vec!["?"; n].join(", "))).unwrap();
        for row in rows {
            insert.execute(params_from_iter(row)).unwrap();
        }
    }
    dst.execute_batch("COMMIT").unwrap();
}

/// `sqlite3 SRC .dump | sqlite3 DST` with the sqlite3 command-line tool
/// (scripts/deps.sh installs it).
fn cli_dump_and_reload(src: &Path, dst: &Path) {
    let dump = Command::new("sqlite3")
        .arg(src)
        .arg(".dump")
        .output()
        .expect("the sqlite3 command-line tool is needed (apt-get install sqlite3, or scripts/test.sh)");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let mut load = Command::new("sqlite3").arg(dst).stdin(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    load.stdin.take().unwrap().write_all(&dump.stdout).unwrap();
    assert!(load.wait().unwrap().success());
}

/// Every table's rows as exactly stored (REAL by its bits, -0.0 as 0.0),
/// sorted: an independent way to tell whether two databases hold the same data.
fn content(c: &Connection) -> Vec<(String, Vec<String>)> {
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names.into_iter().map(|n| (n.clone(), table_content(c, &n))).collect()
}

fn table_content(c: &Connection, name: &str) -> Vec<String> {
    let mut stmt = c.prepare(&format!("SELECT * FROM {}", ident(name))).unwrap();
    let n = stmt.column_count();
    let mut rows: Vec<String> = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get::<_, Value>(i)? {
                        Value::Real(0.0) => "real:0".to_string(),
                        Value::Real(x) => format!("real:{:016x}", x.to_bits()),
                        v => format!("{v:?}"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join("|"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    rows
}

fn has_nul_text(tables: &[Table]) -> bool {
    tables.iter().flat_map(|t| &t.rows).flatten().any(|v| matches!(v, Value::Text(s) if s.contains('\0')))
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Two values SQLite stores identically (docs/digest.md §4.3).
fn same_stored(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x == y, // -0.0 == 0.0
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// VACUUM, page size, journal mode, insertion order and a dump/reload
    /// change nothing.
    #[test]
    fn same_content_same_digest_however_stored(tables in tables(false), seed in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();

        let a_path = file(dir.path(), "a.db");
        let a = Connection::open(&a_path).unwrap();
        a.execute_batch("PRAGMA page_size = 1024; PRAGMA journal_mode = DELETE;").unwrap();
        build(&a, &tables, &in_order);
        let expected = digest(&a);

        // Another insertion order (a seeded shuffle), page size 8192, WAL,
        // read while the WAL holds everything.
        let b_path = file(dir.path(), "b.db");
        let b = Connection::open(&b_path).unwrap();
        b.execute_batch("PRAGMA page_size = 8192; PRAGMA auto_vacuum = FULL; PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;").unwrap();
        let shuffled = |n: usize| {
            let mut v: Vec<usize> = (0..n).collect();
            let mut s = seed | 1;
            for i in (1..n).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                v.swap(i, (s % (i as u64 + 1)) as usize);
            }
            v
        };
        build(&b, &tables, &shuffled);
        prop_assert_eq!(&digest(&b), &expected, "other insertion order, page size 8192, auto_vacuum, WAL");
        let page_size: i64 = b.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(page_size, 8192);

        // VACUUM, and a page size change (takes effect through VACUUM).
        a.execute_batch("VACUUM").unwrap();
        prop_assert_eq!(&digest(&a), &expected, "after VACUUM");
        a.execute_batch("PRAGMA page_size = 4096; VACUUM; PRAGMA journal_mode = WAL;").unwrap();
        let page_size: i64 = a.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(page_size, 4096);
        prop_assert_eq!(&digest(&a), &expected, "after page_size 4096 + VACUUM, WAL");
        b.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE; VACUUM").unwrap();
        prop_assert_eq!(&file_digest(&b_path), &expected, "checkpointed, back to DELETE, VACUUM");

        // VACUUM INTO and the online backup API (how snapshots are taken).
        let v_path = file(dir.path(), "v.db");
        a.execute("VACUUM INTO ?1", [v_path.to_str().unwrap()]).unwrap();
        prop_assert_eq!(&file_digest(&v_path), &expected, "VACUUM INTO");
        let mut copy = Connection::open_in_memory().unwrap();
        rusqlite::backup::Backup::new(&b, &mut copy).unwrap().run_to_completion(64, std::time::Duration::ZERO, None).unwrap();
        prop_assert_eq!(&digest(&copy), &expected, "online backup");

        // Re-created from a dump.
        let c = Connection::open_in_memory().unwrap();
        dump_and_reload(&a, &c);
        prop_assert_eq!(&digest(&c), &expected, "reloaded from a dump");
        if !has_nul_text(&tables) {
            // The sqlite3 shell's .dump cuts text at NUL bytes; otherwise
            // it is the dump a user would make.
            drop(a);
            let d_path = file(dir.path(), "d.db");
            cli_dump_and_reload(&a_path, &d_path);
            // The shell prints REALs as decimal text, and before SQLite 3.43
            // neither its printer nor its parser is correctly rounded
            // (3.40: 5.911592672562884e-297 comes back one ulp off). So the
            // reload may really hold other data: the digest must then differ,
            // in exactly the tables whose content changed.
            let (src, dst) = (Connection::open(&a_path).unwrap(), Connection::open(&d_path).unwrap());
            let got = file_digest(&d_path);
            if content(&src) == content(&dst) {
                prop_assert_eq!(&got, &expected, "sqlite3 .dump | sqlite3");
            } else {
                prop_assert_ne!(&got.digest, &expected.digest, "the CLI reload changed a value");
                prop_assert_eq!(&got.schema, &expected.schema);
                for (g, e) in got.tables.iter().zip(&expected.tables) {
                    let same = table_content(&src, &e.name) == table_content(&dst, &g.name);
                    prop_assert_eq!(same, g.digest == e.digest, "table {}", e.name);
                }
            }
        }
    }

    /// Any one value changed (to a value SQLite stores differently) changes
    /// that table's digest and the database digest, not the schema digest.
    #[test]
    fn any_single_changed_value_changes_the_digest(
        tables in tables(true),
        pick in any::<(prop::sample::Index, prop::sample::Index, prop::sample::Index)>(),
        new in value(),
    ) {
        let (ti, ri, ci) = pick;
        let t = ti.index(tables.len());
        prop_assume!(!tables[t].rows.is_empty());
        let r = ri.index(tables[t].rows.len());
        let c = ci.index(tables[t].cols.len());
        prop_assume!(!same_stored(&tables[t].rows[r][c], &new));
        let before = digest(&memory(&tables));
        let mut changed = tables.clone();
        changed[t].rows[r][c] = new;
        let after = digest(&memory(&changed));
        prop_assert_eq!(before.schema, after.schema);
        prop_assert_ne!(before.digest, after.digest);
        let name = tables[t].name.to_ascii_lowercase();
        prop_assert_ne!(&before.table(&name).unwrap().digest, &after.table(&name).unwrap().digest);
        for other in tables.iter().filter(|o| o.name != tables[t].name) {
            let n = other.name.to_ascii_lowercase();
            prop_assert_eq!(before.table(&n), after.table(&n));
        }
    }

    /// 1, 1.0, '1' and x'31' are four different values wherever they sit.
    #[test]
    fn storage_class_is_part_of_the_value(mut t in table("t".into(), true), pick in any::<(prop::sample::Index, prop::sample::Index)>()) {
        prop_assume!(!t.rows.is_empty());
        let (r, c) = (pick.0.index(t.rows.len()), pick.1.index(t.cols.len()));
        let mut seen = Vec::new();
        for v in [Value::Integer(1), Value::Real(1.0), Value::Text("1".into()), Value::Blob(b"1".to_vec())] {
            t.rows[r][c] = v;
            let d = digest(&memory(std::slice::from_ref(&t))).digest;
            prop_assert!(!seen.contains(&d), "{:?}", t.rows[r][c]);
            seen.push(d);
        }
    }

    /// Swapping two columns (names and data) is a different database.
    #[test]
    fn column_order_matters(t in table("t".into(), true)) {
        prop_assume!(t.cols.len() >= 2);
        let mut swapped = t.clone();
        swapped.cols.swap(0, 1);
        for row in &mut swapped.rows {
            row.swap(0, 1);
        }
        let (a, b) = (digest(&memory(std::slice::from_ref(&t))), digest(&memory(&[swapped])));
        prop_assert_ne!(a.schema, b.schema);
        prop_assert_ne!(&a.tables[0].digest, &b.tables[0].digest);
        prop_assert_ne!(a.digest, b.digest);
    }

    /// An added index, trigger or view, or a changed CHECK constraint, is a
    /// schema change: the schema digest and the database digest change, the
    /// table digests do not.
    #[test]
    fn schema_changes_change_the_schema_digest(tables in tables(false), which in 0usize..5) {
        let conn = memory(&tables);
        let before = digest(&conn);
        let t = ident(&tables[0].name);
        let change = match which {
            0 => format!("CREATE INDEX ix ON {t}(\"C0\")"),
            1 => format!("CREATE UNIQUE INDEX ix ON {t}(\"C0\") WHERE 0"),
            2 => format!("CREATE TRIGGER tr AFTER DELETE ON {t} BEGIN SELECT 1; END"),
            3 => format!("CREATE VIEW v AS SELECT * FROM {t}"),
            _ => "CREATE TABLE chk(x CHECK (x > 0))".into(),
        };
        conn.execute_batch(&change).unwrap();
        let after = digest(&conn);
        prop_assert_ne!(before.schema, after.schema, "{}", change);
        prop_assert_ne!(before.digest, after.digest);
        if which < 4 {
            prop_assert_eq!(&before.tables, &after.tables);
        }
    }

    /// ALTER TABLE ADD COLUMN then DROP COLUMN gives back the original
    /// schema digest (and, the data being the same, the whole digest).
    #[test]
    fn drop_column_after_add_column_restores_the_digest(tables in tables(false), def in 0usize..6) {
        let conn = memory(&tables);
        let before = digest(&conn);
        let t = ident(&tables[0].name);
        // STRICT tables refuse a column without a type.
        let def = if tables[0].shape == Shape::Strict && def == 5 { 0 } else { def };
        let column = [
            "added TEXT",
            "added INTEGER NOT NULL DEFAULT 0",
            "\"Added Col\" REAL DEFAULT 1.5 CHECK (\"Added Col\" > 0)",
            "added TEXT COLLATE NOCASE DEFAULT 'x'",
            "[added] BLOB   DEFAULT x'00'",
            "added",
        ][def];
        let name = if def == 2 { "\"Added Col\"" } else { "added" };
        conn.execute_batch(&format!("ALTER TABLE {t} ADD COLUMN {column}")).unwrap();
        prop_assert_ne!(schema_digest(&conn).unwrap(), before.schema);
        conn.execute_batch(&format!("ALTER TABLE {t} DROP COLUMN {name}")).unwrap();
        prop_assert_eq!(digest(&conn), before);
    }

    /// A table without a key is a multiset: one duplicate fewer or more is a
    /// change, the order of rows is not.
    #[test]
    fn keyless_tables_are_multisets(rows in proptest::collection::vec(proptest::collection::vec(value(), 2), 1..8), dup in any::<prop::sample::Index>()) {
        let t = |rows: Vec<Vec<Value>>| Table { name: "log".into(), shape: Shape::NoKey, cols: vec![("a".into(), ""), ("b".into(), "")], rows };
        let base = digest(&memory(&[t(rows.clone())]));
        let mut reversed = rows.clone();
        reversed.reverse();
        prop_assert_eq!(&digest(&memory(&[t(reversed)])), &base);
        let mut more = rows.clone();
        more.push(rows[dup.index(rows.len())].clone());
        let more_d = digest(&memory(&[t(more)]));
        prop_assert_ne!(more_d.digest, base.digest);
        prop_assert_eq!(more_d.tables[0].rows, base.tables[0].rows + 1);
    }
}

// ---- specific cases the issue names ----

fn db(sql: &str) -> DatabaseDigest {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(sql).unwrap();
    digest(&c)
}

#[test]
fn nulls_in_a_nullable_primary_key_do_not_depend_on_insertion_order() {
    for create in [
        "CREATE TABLE t(k TEXT PRIMARY KEY, v)",
        "CREATE TABLE t(k INTEGER PRIMARY KEY DESC, v)",
        "CREATE TABLE t(k, j, v, PRIMARY KEY (k, j))",
    ] {
        let a = db(&format!("{create}; INSERT INTO t(k, v) VALUES (NULL, 'b'), (1, 'c'), (NULL, 'a'), (NULL, 'a');"));
        let b = db(&format!("{create}; INSERT INTO t(k, v) VALUES (NULL, 'a'), (NULL, 'a'), (1, 'c'), (NULL, 'b');"));
        assert_eq!(a, b, "{create}");
        let c = db(&format!("{create}; INSERT INTO t(k, v) VALUES (NULL, 'a'), (1, 'c'), (NULL, 'b');"));
        assert_ne!(a.digest, c.digest, "{create}: a duplicate NULL-key row counts");
    }
}

#[test]
fn nan_is_stored_as_null() {
    let with = |v: Value| {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(x REAL)").unwrap();
        c.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
        digest(&c)
    };
    assert_eq!(with(Value::Real(f64::NAN)), with(Value::Null));
    assert_eq!(db("CREATE TABLE t(x REAL); INSERT INTO t VALUES (0.0/0.0);"), with(Value::Null));
    assert_ne!(with(Value::Real(f64::INFINITY)), with(Value::Real(f64::NEG_INFINITY)));
}

#[test]
fn text_with_nul_bytes_blobs_and_large_integers_are_distinguished() {
    let one = |v: Value| {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(x)").unwrap();
        c.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
        digest(&c).digest
    };
    let values = [
        Value::Text("a".into()),
        Value::Text("a\0".into()),
        Value::Text("a\0b".into()),
        Value::Text("a\0c".into()),
        Value::Blob(b"a\0b".to_vec()),
        Value::Blob(vec![]),
        Value::Text(String::new()),
        Value::Null,
        Value::Integer(i64::MAX),
        Value::Integer(i64::MAX - 1),
        Value::Integer(i64::MIN),
        Value::Integer((1 << 53) + 1),
        Value::Real(9_007_199_254_740_992.0),
        Value::Integer(1 << 53),
        Value::Real(0.0),
        Value::Integer(0),
    ];
    let digests: Vec<_> = values.iter().cloned().map(one).collect();
    for i in 0..values.len() {
        for j in 0..i {
            assert_ne!(digests[i], digests[j], "{:?} vs {:?}", values[i], values[j]);
        }
    }
    assert_eq!(one(Value::Real(-0.0)), one(Value::Real(0.0)));
}

#[test]
fn strict_and_without_rowid_are_part_of_the_schema() {
    let plain = db("CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER)");
    let strict = db("CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER) STRICT");
    let without = db("CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER) WITHOUT ROWID");
    assert_ne!(plain.schema, strict.schema);
    assert_ne!(plain.schema, without.schema);
    assert_ne!(strict.schema, without.schema);
}

#[test]
fn check_constraint_changes_change_the_schema_digest() {
    let d = |check: &str| db(&format!("CREATE TABLE t(x INTEGER CHECK ({check}))")).schema;
    let all = [d("x > 0"), d("x > 1"), d("x >= 0"), d("x > '0'"), d("X > 0 AND x < 10")];
    for i in 0..all.len() {
        for j in 0..i {
            assert_ne!(all[i], all[j]);
        }
    }
    // Layout and case are not changes.
    assert_eq!(d("x > 0"), d("  X>0 "));
}
