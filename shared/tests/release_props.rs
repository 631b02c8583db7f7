//! Property tests for the release directory (docs/release-format.md): random
//! valid manifests load into exactly the structure they describe; apply order
//! is a stable topological order and rollback its exact reverse; junk never
//! panics and always says where; script checksums ignore comments and
//! whitespace but no token.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use rewind_shared::release::{Activation, CheckWhen, Expect, Release, ReleaseError, RollbackMode};
use rewind_shared::sqltext::{normalize_script, script_checksum};
use serde_json::json;

// ---- a random valid release, as data ----

#[derive(Debug, Clone)]
struct MigSpec {
    id: String,
    target: usize,
    /// Indices (declaration order) of the migrations this one runs after.
    after: Vec<usize>,
    /// `reversible`, `rollback`, `preserve` as written (None: key left out).
    reversible: Option<bool>,
    rollback: Option<&'static str>,
    preserve: Vec<&'static str>,
    up: String,
    verify: bool,
    /// For damage tests: extra `after` ids and a target name written as is.
    after_extra: Vec<String>,
    target_override: Option<String>,
}

#[derive(Debug, Clone)]
enum FlagValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Table(i64, String),
}

impl FlagValue {
    fn toml(&self) -> String {
        match self {
            FlagValue::Bool(b) => b.to_string(),
            FlagValue::Int(i) => i.to_string(),
            FlagValue::Float(f) => format!("{f:?}"),
            FlagValue::Str(s) => quote(s),
            FlagValue::Table(n, s) => format!("{{ n = {n}, s = {} }}", quote(s)),
        }
    }
    fn json(&self) -> serde_json::Value {
        match self {
            FlagValue::Bool(b) => json!(b),
            FlagValue::Int(i) => json!(i),
            FlagValue::Float(f) => json!(f),
            FlagValue::Str(s) => json!(s),
            FlagValue::Table(n, s) => json!({"n": n, "s": s}),
        }
    }
}

#[derive(Debug, Clone)]
struct FlagSpec {
    value: FlagValue,
    previous: FlagValue,
    activate: Option<&'static str>,
    expires: Option<(u16, u8, u8)>,
    kill_switch: Option<bool>,
}

#[derive(Debug, Clone)]
struct CheckSpec {
    target: usize,
    expect: (String, Expect),
    when: Option<Vec<CheckWhen>>,
}

#[derive(Debug, Clone)]
struct TriggerSpec {
    above: bool,
    threshold: i32,
    window: (u64, &'static str),
}

#[derive(Debug, Clone)]
struct WaveSpec {
    selector: Option<String>,
    percent: Option<u8>,
    bake: Option<(u64, &'static str)>,
    approval: Option<bool>,
}

#[derive(Debug, Clone)]
struct RolloutSpec {
    waves: Vec<WaveSpec>,
    max_failure_ratio: Option<f64>,
    min_sample: Option<u32>,
    report_timeout: Option<(u64, &'static str)>,
    auto_rollback: Option<bool>,
}

#[derive(Debug, Clone)]
struct Spec {
    sequence: u64,
    version: String,
    targets: Vec<String>,
    migrations: Vec<MigSpec>,
    flags: Vec<FlagSpec>,
    checks: Vec<CheckSpec>,
    triggers: Vec<TriggerSpec>,
    rollout: Option<RolloutSpec>,
    /// Shuffles key order and sprinkles comments and blank lines.
    layout_seed: u64,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn secs(d: (u64, &str)) -> Duration {
    let unit = match d.1 {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 86_400,
    };
    Duration::from_secs(d.0 * unit)
}

fn duration() -> impl Strategy<Value = (u64, &'static str)> {
    (1u64..120, prop::sample::select(vec!["s", "m", "h", "d"]))
}

fn flag_value() -> impl Strategy<Value = FlagValue> {
    prop_oneof![
        any::<bool>().prop_map(FlagValue::Bool),
        any::<i64>().prop_map(FlagValue::Int),
        (-1e9f64..1e9).prop_map(FlagValue::Float),
        "[a-zA-Z0-9 _\\\\\"-]{0,8}".prop_map(FlagValue::Str),
        (any::<i64>(), "[a-z]{0,4}").prop_map(|(n, s)| FlagValue::Table(n, s)),
    ]
}

fn expect() -> impl Strategy<Value = (String, Expect)> {
    prop_oneof![
        (0u32..1000).prop_map(|n| (format!("= {n}"), Expect::Eq(f64::from(n)))),
        (0u32..1000).prop_map(|n| (format!(">= {n}"), Expect::AtLeast(f64::from(n)))),
        (0u32..1000).prop_map(|n| (format!("<={n}"), Expect::AtMost(f64::from(n)))),
        (0u32..100, 0u32..100)
            .prop_map(|(a, d)| (format!("between {a} {}", a + d), Expect::Between(f64::from(a), f64::from(a + d)))),
        Just(("unchanged".to_string(), Expect::Unchanged)),
    ]
}

fn when() -> impl Strategy<Value = Option<Vec<CheckWhen>>> {
    prop::option::of(prop::sample::select(vec![
        vec![CheckWhen::AfterApply],
        vec![CheckWhen::AfterRollback],
        vec![CheckWhen::AfterApply, CheckWhen::AfterRollback],
        vec![CheckWhen::AfterRollback, CheckWhen::AfterApply],
    ]))
}

/// The ways a migration may be declared that are valid.
fn reversibility() -> impl Strategy<Value = (Option<bool>, Option<&'static str>, Vec<&'static str>)> {
    prop_oneof![
        Just((None, None, vec![])),
        Just((Some(true), Some("down"), vec![])),
        Just((Some(true), Some("restore"), vec![])),
        Just((Some(false), Some("restore"), vec![])),
        Just((Some(false), None, vec!["orders.status"])),
        Just((Some(false), Some("down"), vec!["orders.status", "audit"])),
        Just((None, None, vec!["notes"])),
    ]
}

fn migrations(ntargets: usize) -> impl Strategy<Value = Vec<MigSpec>> {
    (0usize..9).prop_flat_map(move |n| {
        (
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            proptest::collection::vec(any::<u16>(), n),
            proptest::collection::vec((0..ntargets, reversibility(), "[a-z]{1,6}", any::<bool>(), any::<bool>()), n),
        )
            .prop_map(move |(rank, edges, each)| {
                each.into_iter()
                    .enumerate()
                    .map(|(i, (target, (reversible, rollback, preserve), word, verify, digit_id))| {
                        // Edges only towards lower ranks: a DAG, declared in
                        // an order unrelated to it.
                        let after = (0..n).filter(|&j| rank[j] < rank[i] && edges[i] & (1 << (j % 16)) != 0).collect();
                        MigSpec {
                            id: if digit_id { format!("{:04}_{word}", i + 1) } else { format!("{word}_{i}") },
                            target,
                            after,
                            reversible,
                            rollback,
                            preserve,
                            up: format!("-- migration {i}\nCREATE TABLE t{i}(a);\n"),
                            verify,
                            after_extra: vec![],
                            target_override: None,
                        }
                    })
                    .collect()
            })
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..4).prop_flat_map(|ntargets| {
        (
            (1u64..1_000_000_000, "[0-9]{4}\\.[0-9]{1,2}\\.[0-9]"),
            migrations(ntargets),
            proptest::collection::vec(
                (
                    flag_value(),
                    flag_value(),
                    prop::option::of(prop::sample::select(vec!["with-release", "after-migrations", "manual"])),
                    prop::option::of((2020u16..2031, 1u8..13, 1u8..29)),
                    prop::option::of(any::<bool>()),
                )
                    .prop_map(|(value, previous, activate, expires, kill_switch)| FlagSpec {
                        value,
                        previous,
                        activate,
                        expires,
                        kill_switch,
                    }),
                0..3,
            ),
            proptest::collection::vec(
                (0..ntargets, expect(), when()).prop_map(|(target, expect, when)| CheckSpec { target, expect, when }),
                0..3,
            ),
            proptest::collection::vec(
                (any::<bool>(), -5i32..100, duration()).prop_map(|(above, threshold, window)| TriggerSpec {
                    above,
                    threshold,
                    window,
                }),
                0..3,
            ),
            prop::option::of(rollout()),
            any::<u64>(),
        )
            .prop_map(
                move |((sequence, version), migrations, flags, checks, triggers, rollout, layout_seed)| Spec {
                    sequence,
                    version,
                    targets: (0..ntargets).map(|i| ["notes", "settings", "cache db"][i].to_string()).collect(),
                    migrations,
                    flags,
                    checks,
                    triggers,
                    rollout,
                    layout_seed,
                },
            )
    })
}

fn rollout() -> impl Strategy<Value = RolloutSpec> {
    let wave = (
        prop::option::of("ring=[a-z]{1,5}"),
        prop::option::of(1u8..=100),
        prop::option::of(duration()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(selector, percent, bake, approval)| {
            let percent = if selector.is_none() && percent.is_none() { Some(100) } else { percent };
            WaveSpec { selector, percent, bake, approval }
        });
    (
        proptest::collection::vec(wave, 1..5),
        prop::option::of(0.0f64..=1.0),
        prop::option::of(0u32..1000),
        prop::option::of(duration()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(waves, max_failure_ratio, min_sample, report_timeout, auto_rollback)| RolloutSpec {
            waves,
            max_failure_ratio,
            min_sample,
            report_timeout,
            auto_rollback,
        })
}

/// A tiny deterministic generator for layout choices.
struct Layout(u64);

impl Layout {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn shuffle(&mut self, v: &mut [String]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    /// Key lines of one table, in a random order, some with comments, some
    /// separated by blank lines.
    fn table(&mut self, out: &mut String, header: &str, mut lines: Vec<String>) {
        if !header.is_empty() {
            out.push_str(header);
            out.push('\n');
        }
        self.shuffle(&mut lines);
        for l in lines {
            match self.next() % 5 {
                0 => out.push_str("# a comment line\n"),
                1 => out.push('\n'),
                _ => {}
            }
            out.push_str(&l);
            if self.next().is_multiple_of(4) {
                out.push_str("   # trailing comment");
            }
            out.push('\n');
        }
        out.push('\n');
    }
}

fn render(s: &Spec) -> String {
    let mut l = Layout(s.layout_seed | 1);
    let mut out = String::from("# generated release\n");
    let top = vec![
        "name = \"notes\"".to_string(),
        format!("version = {}", quote(&s.version)),
        format!("sequence = {}", s.sequence),
        "app_version = \"4.2.0\"".to_string(),
        "owner = \"storage-team\"".to_string(),
        "on_call = \"pager:storage\"".to_string(),
    ];
    l.table(&mut out, "", top);
    for t in &s.targets {
        l.table(&mut out, "[[target]]", vec![format!("name = {}", quote(t))]);
    }
    for m in &s.migrations {
        let target = m.target_override.clone().unwrap_or_else(|| s.targets[m.target].clone());
        let mut lines = vec![format!("id = {}", quote(&m.id)), format!("target = {}", quote(&target))];
        if !m.after.is_empty() || !m.after_extra.is_empty() || l.next().is_multiple_of(2) {
            let after: Vec<String> = m
                .after
                .iter()
                .map(|&j| quote(&s.migrations[j].id))
                .chain(m.after_extra.iter().map(|a| quote(a)))
                .collect();
            lines.push(format!("after = [{}]", after.join(", ")));
        }
        if let Some(r) = m.reversible {
            lines.push(format!("reversible = {r}"));
        }
        if let Some(r) = m.rollback {
            lines.push(format!("rollback = {}", quote(r)));
        }
        if !m.preserve.is_empty() {
            let p: Vec<String> = m.preserve.iter().map(|p| quote(p)).collect();
            lines.push(format!("preserve = [{}]", p.join(", ")));
        }
        l.table(&mut out, "[[migration]]", lines);
    }
    for (i, f) in s.flags.iter().enumerate() {
        let mut lines = vec![
            format!("name = \"flag_{i}\""),
            format!("value = {}", f.value.toml()),
            format!("previous = {}", f.previous.toml()),
            "owner = \"payments-team\"".to_string(),
        ];
        if let Some(a) = f.activate {
            lines.push(format!("activate = {}", quote(a)));
        }
        if let Some((y, m, d)) = f.expires {
            lines.push(format!("expires = {y:04}-{m:02}-{d:02}"));
        }
        if let Some(k) = f.kill_switch {
            lines.push(format!("kill_switch = {k}"));
        }
        l.table(&mut out, "[[flag]]", lines);
    }
    for (i, c) in s.checks.iter().enumerate() {
        let mut lines = vec![
            format!("name = \"check {i}\""),
            format!("target = {}", quote(&s.targets[c.target])),
            "sql = \"SELECT count(*) FROM orders\"".to_string(),
            format!("expect = {}", quote(&c.expect.0)),
        ];
        if let Some(w) = &c.when {
            let w: Vec<&str> = w
                .iter()
                .map(|w| if *w == CheckWhen::AfterApply { "\"after-apply\"" } else { "\"after-rollback\"" })
                .collect();
            lines.push(format!("when = [{}]", w.join(", ")));
        }
        l.table(&mut out, "[[check]]", lines);
    }
    for (i, t) in s.triggers.iter().enumerate() {
        let lines = vec![
            format!("metric = \"app.metric_{i}\""),
            format!("{} = {}", if t.above { "above" } else { "below" }, t.threshold),
            format!("window = \"{}{}\"", t.window.0, t.window.1),
        ];
        l.table(&mut out, "[[trigger]]", lines);
    }
    if let Some(r) = &s.rollout {
        let waves: Vec<String> = r
            .waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut parts = vec![format!("name = \"w{i}\"")];
                if let Some(sel) = &w.selector {
                    parts.push(format!("selector = {}", quote(sel)));
                }
                if let Some(p) = w.percent {
                    parts.push(format!("percent = {p}"));
                }
                if let Some(b) = w.bake {
                    parts.push(format!("bake = \"{}{}\"", b.0, b.1));
                }
                if let Some(a) = w.approval {
                    parts.push(format!("approval = {a}"));
                }
                format!("  {{ {} }},", parts.join(", "))
            })
            .collect();
        let mut lines = vec![format!("waves = [\n{}\n]", waves.join("\n"))];
        if let Some(x) = r.max_failure_ratio {
            lines.push(format!("max_failure_ratio = {x:?}"));
        }
        if let Some(x) = r.min_sample {
            lines.push(format!("min_sample = {x}"));
        }
        if let Some(x) = r.report_timeout {
            lines.push(format!("report_timeout = \"{}{}\"", x.0, x.1));
        }
        if let Some(x) = r.auto_rollback {
            lines.push(format!("auto_rollback = {x}"));
        }
        l.table(&mut out, "[rollout]", lines);
    }
    out
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn materialise(s: &Spec, dir: &Path) -> String {
    let toml = render(s);
    write(dir, "release.toml", &toml);
    for m in &s.migrations {
        write(dir, &format!("migrations/{}/up.sql", m.id), &m.up);
        if m.rollback != Some("restore") {
            write(dir, &format!("migrations/{}/down.sql", m.id), "DROP TABLE x;");
        }
        if m.verify {
            write(dir, &format!("migrations/{}/verify.sql", m.id), "SELECT 1;");
        }
    }
    toml
}

/// Kahn's algorithm taking, each time, the earliest-declared ready
/// migration: the order docs/release-format.md promises.
fn reference_order(s: &Spec) -> Vec<String> {
    let n = s.migrations.len();
    let mut done = vec![false; n];
    let mut out = Vec::new();
    while out.len() < n {
        let next = (0..n).find(|&i| !done[i] && s.migrations[i].after.iter().all(|&j| done[j])).expect("a DAG");
        done[next] = true;
        out.push(s.migrations[next].id.clone());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn valid_manifests_load_into_what_they_describe(s in spec()) {
        let dir = tempfile::tempdir().unwrap();
        let toml = materialise(&s, dir.path());
        let r = Release::load(dir.path()).unwrap_or_else(|e| panic!("{e}\n{toml}"));

        prop_assert_eq!(&r.name, "notes");
        prop_assert_eq!(&r.version, &s.version);
        prop_assert_eq!(r.sequence, s.sequence);
        prop_assert_eq!((r.app_version.as_str(), r.owner.as_str(), r.on_call.as_str()), ("4.2.0", "storage-team", "pager:storage"));
        prop_assert_eq!(&r.targets, &s.targets);

        prop_assert_eq!(r.migrations.len(), s.migrations.len());
        for m in &s.migrations {
            let got = r.migrations.iter().find(|g| g.id == m.id).unwrap();
            prop_assert_eq!(&got.target, &s.targets[m.target]);
            let after: Vec<String> = m.after.iter().map(|&j| s.migrations[j].id.clone()).collect();
            prop_assert_eq!(&got.after, &after);
            prop_assert_eq!(got.reversible, m.reversible.unwrap_or(true));
            prop_assert_eq!(got.rollback, if m.rollback == Some("restore") { RollbackMode::Restore } else { RollbackMode::Down });
            let preserve: Vec<String> = got.preserve.iter().map(|p| match &p.column { Some(c) => format!("{}.{c}", p.table), None => p.table.clone() }).collect();
            prop_assert_eq!(preserve, m.preserve.iter().map(|p| p.to_string()).collect::<Vec<_>>());
            prop_assert_eq!(&got.up.sql, &m.up);
            prop_assert_eq!(&got.up.checksum, &script_checksum(&m.up));
            prop_assert_eq!(got.down.is_some(), m.rollback != Some("restore"));
            prop_assert_eq!(got.verify.is_some(), m.verify);
        }

        prop_assert_eq!(r.flags.len(), s.flags.len());
        for (i, (got, f)) in r.flags.iter().zip(&s.flags).enumerate() {
            prop_assert_eq!(&got.name, &format!("flag_{i}"));
            prop_assert_eq!(&got.value, &f.value.json());
            prop_assert_eq!(&got.previous, &f.previous.json());
            let activate = match f.activate {
                Some("with-release") => Activation::WithRelease,
                Some("manual") => Activation::Manual,
                _ => Activation::AfterMigrations,
            };
            prop_assert_eq!(got.activate, activate);
            prop_assert_eq!(got.expires.clone(), f.expires.map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")));
            prop_assert_eq!(got.kill_switch, f.kill_switch.unwrap_or(false));
        }

        prop_assert_eq!(r.checks.len(), s.checks.len());
        for (got, c) in r.checks.iter().zip(&s.checks) {
            prop_assert_eq!(&got.target, &s.targets[c.target]);
            prop_assert_eq!(&got.expect, &c.expect.1);
            let when = c.when.clone().unwrap_or_else(|| vec![CheckWhen::AfterApply]);
            prop_assert_eq!(&got.when, &when);
        }

        prop_assert_eq!(r.triggers.len(), s.triggers.len());
        for (got, t) in r.triggers.iter().zip(&s.triggers) {
            let x = Some(f64::from(t.threshold));
            prop_assert_eq!((got.above, got.below), if t.above { (x, None) } else { (None, x) });
            prop_assert_eq!(got.window, secs(t.window));
        }

        prop_assert_eq!(r.rollout.is_some(), s.rollout.is_some());
        if let (Some(got), Some(want)) = (&r.rollout, &s.rollout) {
            prop_assert_eq!(got.waves.len(), want.waves.len());
            for (i, (g, w)) in got.waves.iter().zip(&want.waves).enumerate() {
                prop_assert_eq!(&g.name, &format!("w{i}"));
                prop_assert_eq!(&g.selector, &w.selector);
                prop_assert_eq!(g.percent, w.percent.map(f64::from));
                prop_assert_eq!(g.bake, w.bake.map_or(Duration::ZERO, secs));
                prop_assert_eq!(g.approval, w.approval.unwrap_or(false));
            }
            prop_assert_eq!(got.max_failure_ratio, want.max_failure_ratio.unwrap_or(0.02));
            prop_assert_eq!(got.min_sample, want.min_sample.unwrap_or(20));
            prop_assert_eq!(got.report_timeout, want.report_timeout.map_or(Duration::from_secs(1800), secs));
            prop_assert_eq!(got.auto_rollback, want.auto_rollback.unwrap_or(true));
        }
    }

    /// Apply order respects every `after` edge and is the stable order
    /// (ties by declaration); rollback order is its exact reverse.
    #[test]
    fn apply_order_is_stable_topological_and_rollback_reverses_it(s in spec()) {
        let dir = tempfile::tempdir().unwrap();
        materialise(&s, dir.path());
        let r = Release::load(dir.path()).unwrap();
        let order: Vec<String> = r.migrations.iter().map(|m| m.id.clone()).collect();
        for (pos, m) in r.migrations.iter().enumerate() {
            for a in &m.after {
                let dep = order.iter().position(|x| x == a).unwrap();
                prop_assert!(dep < pos, "{} runs before its dependency {}", m.id, a);
            }
        }
        prop_assert_eq!(&order, &reference_order(&s));
        let mut reversed: Vec<String> = r.rollback_order().map(|m| m.id.clone()).collect();
        reversed.reverse();
        prop_assert_eq!(&reversed, &order);
        // Loading twice gives the same order (deterministic).
        let again: Vec<String> = Release::load(dir.path()).unwrap().migrations.iter().map(|m| m.id.clone()).collect();
        prop_assert_eq!(again, order);
    }

    /// Any damage to a valid release.toml never panics, and the error says
    /// where: file:line[:column] for every problem.
    #[test]
    fn damaged_manifests_fail_with_a_location(s in spec(), damage in (0u8..5, any::<prop::sample::Index>(), any::<prop::sample::Index>(), "[ -~\n]{1,6}")) {
        let dir = tempfile::tempdir().unwrap();
        let toml = materialise(&s, dir.path());
        let lines: Vec<&str> = toml.lines().collect();
        let (kind, at, other, junk) = damage;
        let line = at.index(lines.len());
        let damaged = match kind {
            0 => { let mut l = lines.clone(); l.remove(line); l.join("\n") }
            1 => { let mut l = lines.clone(); l.insert(line, lines[other.index(lines.len())]); l.join("\n") }
            2 => { let cut = at.index(toml.len()); toml[..cut].to_string() }
            3 => { let pos = at.index(toml.len()); format!("{}{junk}{}", &toml[..pos], &toml[pos..]) }
            _ => { let mut l = lines.clone(); l[line] = &junk; l.join("\n") }
        };
        write(dir.path(), "release.toml", &damaged);
        check_error_locates(&Release::load(dir.path()), &damaged)?;
    }

    /// Arbitrary bytes as release.toml.
    #[test]
    fn junk_never_panics(junk in prop_oneof![
        "\\PC{0,200}",
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "(\\[\\[?[a-z]{1,9}\\]\\]?\n|[a-z_]{1,10} = (\"[a-z.]*\"|[0-9-]{1,4}|\\[\\]|true)\n){0,12}",
    ]) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "release.toml", &junk);
        check_error_locates(&Release::load(dir.path()), &junk)?;
    }
}

fn check_error_locates(r: &Result<Release, ReleaseError>, text: &str) -> Result<(), TestCaseError> {
    let nlines = text.lines().count().max(1);
    match r {
        Ok(_) => {} // the damage left a valid release (a comment, a blank line)
        Err(ReleaseError::Syntax { line, column, message, .. }) => {
            prop_assert!(*line >= 1 && *line <= nlines + 1, "line {} of {}: {}", line, nlines, message);
            prop_assert!(*column >= 1, "{}", message);
            let shown = r.as_ref().unwrap_err().to_string();
            prop_assert!(shown.contains(&format!("release.toml:{line}:{column}: ")), "{}", shown);
        }
        Err(ReleaseError::Invalid { problems, .. }) => {
            prop_assert!(!problems.is_empty());
            for p in problems {
                prop_assert!(p.line.is_some_and(|l| l >= 1 && l <= nlines), "problem without a line: {}\n{}", p, text);
                prop_assert!(p.to_string().contains("release.toml:"), "{}", p);
            }
        }
        Err(ReleaseError::Io { .. }) => prop_assert!(false, "{}", r.as_ref().unwrap_err()),
    }
    Ok(())
}

/// The semantic mistakes issue 4 lists, each made on a random valid release.
#[derive(Debug, Clone, Copy)]
enum Mistake {
    DuplicateId,
    UnknownAfter,
    Cycle,
    IrreversibleWithoutPreserve,
    MissingUpScript,
    UnknownTarget,
    NonPositiveSequence,
}

fn mistake() -> impl Strategy<Value = Mistake> {
    prop::sample::select(vec![
        Mistake::DuplicateId,
        Mistake::UnknownAfter,
        Mistake::Cycle,
        Mistake::IrreversibleWithoutPreserve,
        Mistake::MissingUpScript,
        Mistake::UnknownTarget,
        Mistake::NonPositiveSequence,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Each mistake is reported as a problem pointing at the line that
    /// declares the migration concerned (or `sequence`), saying what to do.
    #[test]
    fn semantic_mistakes_name_the_line_and_the_migration(mut s in spec(), m in mistake(), pick in any::<prop::sample::Index>()) {
        prop_assume!(s.migrations.len() >= 2);
        let i = pick.index(s.migrations.len());
        let other = (i + 1) % s.migrations.len();
        let id = s.migrations[i].id.clone();
        // (message fragment, what the pointed-at line must contain)
        let (fragment, line_has) = match m {
            Mistake::DuplicateId => {
                // The later-declared of the two becomes a copy of the earlier.
                let (first, second) = (i.min(other), i.max(other));
                let dup = s.migrations[first].id.clone();
                s.migrations[second].id = dup.clone();
                for mm in &mut s.migrations {
                    mm.after.retain(|&j| j != second && j != first);
                }
                ("is declared twice".to_string(), format!("id = \"{dup}\""))
            }
            Mistake::UnknownAfter => {
                s.migrations[i].after_extra.push("no_such_migration".into());
                ("`after` names `no_such_migration`".to_string(), format!("id = \"{id}\""))
            }
            Mistake::Cycle => {
                let oid = s.migrations[other].id.clone();
                s.migrations[i].after = vec![other];
                s.migrations[other].after = vec![i];
                // Nothing else may depend on them, or the problem list grows.
                for (k, mm) in s.migrations.iter_mut().enumerate() {
                    if k != i && k != other {
                        mm.after.retain(|&j| j != i && j != other);
                    }
                }
                let (a, b) = if i < other { (&id, &oid) } else { (&oid, &id) };
                (format!("dependency cycle: {a} -> {b} -> {a}"), format!("id = \"{a}\""))
            }
            Mistake::IrreversibleWithoutPreserve => {
                let mm = &mut s.migrations[i];
                mm.reversible = Some(false);
                mm.rollback = None;
                mm.preserve.clear();
                (format!("migration {id}: reversible = false needs"), format!("id = \"{id}\""))
            }
            Mistake::MissingUpScript => {
                for mm in &mut s.migrations {
                    mm.after.retain(|&j| j != i);
                }
                (format!("migration {id}: cannot read"), format!("id = \"{id}\""))
            }
            Mistake::UnknownTarget => {
                s.migrations[i].target_override = Some("elsewhere".into());
                (format!("migration {id}: target `elsewhere` is not declared"), "target = \"elsewhere\"".to_string())
            }
            Mistake::NonPositiveSequence => {
                s.sequence = 0;
                ("`sequence = 0` must be a positive integer".to_string(), "sequence = 0".to_string())
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let toml = materialise(&s, dir.path());
        if matches!(m, Mistake::MissingUpScript) {
            std::fs::remove_file(dir.path().join(format!("migrations/{id}/up.sql"))).unwrap();
        }
        let problems = match Release::load(dir.path()) {
            Err(ReleaseError::Invalid { problems, .. }) => problems,
            other => return Err(TestCaseError::fail(format!("{m:?}: expected problems, got {other:?}\n{toml}"))),
        };
        let lines: Vec<&str> = toml.lines().collect();
        let hit = problems.iter().find(|p| p.message.contains(&fragment));
        prop_assert!(hit.is_some(), "{:?}: no problem says {:?}: {:#?}\n{}", m, fragment, problems, toml);
        let hit = hit.unwrap();
        let line = hit.line.expect("a line");
        prop_assert!(lines[line - 1].contains(&line_has), "{:?}: {} points at line {}: {:?}", m, hit, line, lines[line - 1]);
        if matches!(m, Mistake::DuplicateId) {
            // The second declaration, not the first.
            let first = lines.iter().position(|l| l.contains(&line_has)).unwrap() + 1;
            prop_assert!(line > first, "{} points at the first declaration", hit);
        }
        let column = hit.column.expect("a column");
        prop_assert!(column >= 1 && column <= lines[line - 1].chars().count(), "{}", hit);
    }
}

// ---- script checksums ----

/// Tokens whose text the tokenizer keeps as one token.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "SELECT", "select", "UPDATE", "SET", "WHERE", "CREATE", "TABLE", "ALTER", "ADD", "COLUMN", "NOT", "NULL",
            "DEFAULT"
        ])
        .prop_map(String::from),
        "[a-z_][a-z0-9_]{0,6}",
        "[0-9]{1,4}(\\.[0-9]{1,3})?(e-?[0-9])?",
        "'[a-z -]{0,6}'",
        "\"[A-Za-z ]{1,6}\"",
        "x'[0-9a-f]{0,4}'",
        "[a-z]{1,3}".prop_map(|s| format!("[{s}]")),
        prop::sample::select(vec!["(", ")", ",", ";", "=", "<", ">", "*", "+", "-", "/", ".", "|", "%"])
            .prop_map(String::from),
    ]
}

fn separator() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        " ",
        "  ",
        "\n",
        "\t",
        "\r\n",
        " -- a comment\n",
        " /* block\ncomment */ ",
        "\n\n  /**/ ",
        " --\n",
    ])
    .prop_map(String::from)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Comments and whitespace between tokens never change the checksum.
    #[test]
    fn layout_and_comments_do_not_change_the_checksum(
        tokens in proptest::collection::vec(token(), 1..20),
        seps in proptest::collection::vec(separator(), 21),
        lead in separator(),
    ) {
        let canonical = tokens.join(" ");
        let mut laid_out = lead;
        for (t, s) in tokens.iter().zip(&seps) {
            laid_out.push_str(t);
            laid_out.push_str(s);
        }
        prop_assert_eq!(script_checksum(&canonical), script_checksum(&laid_out), "{:?} vs {:?}", canonical, laid_out);
    }

    /// Changing, dropping or adding any one token changes it.
    #[test]
    fn any_token_change_changes_the_checksum(
        tokens in proptest::collection::vec(token(), 1..20),
        at in any::<prop::sample::Index>(),
        replacement in token(),
        how in 0u8..3,
    ) {
        let i = at.index(tokens.len());
        let mut changed = tokens.clone();
        match how {
            0 => {
                // `[ab]` and `"ab"` are the same token to SQLite.
                prop_assume!(normalize_script(&replacement) != normalize_script(&tokens[i]));
                changed[i] = replacement;
            }
            1 => { changed.remove(i); }
            _ => changed.insert(i, replacement),
        }
        prop_assert_ne!(script_checksum(&tokens.join(" ")), script_checksum(&changed.join("\n")), "{:?} vs {:?}", tokens, changed);
    }
}
