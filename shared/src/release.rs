//! The release directory (DESIGN.md §2): `release.toml` plus
//! `migrations/<id>/{up,down,verify}.sql`.
//!
//! [`Release::load`] parses and validates everything up front and reports
//! every problem at once, each naming the file and line (or migration id) and
//! what to do; a `Release` that loaded is internally consistent: targets
//! exist, scripts are present, `after` ids resolve and form no cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;
use crate::sqltext::script_checksum;
use crate::templates::Templates;

/// Why a release directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}", render_problems(.path, .problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// One validation problem: where (file, line and column when known) and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// 1-based column of the offending value, when the line is known.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            _ => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut s = format!("release {} is invalid ({} problem(s)):", path.display(), problems.len());
    for p in problems {
        s.push_str("\n  - ");
        s.push_str(&p.to_string());
    }
    s
}

/// How a migration is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RollbackMode {
    /// Run `down.sql`.
    #[default]
    Down,
    /// Restore the target from the pre-apply snapshot.
    Restore,
}

/// When a flag takes its new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    WithRelease,
    #[default]
    AfterMigrations,
    Manual,
}

impl Activation {
    /// The word release.toml uses: `with-release`, `after-migrations`,
    /// `manual`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WithRelease => "with-release",
            Self::AfterMigrations => "after-migrations",
            Self::Manual => "manual",
        }
    }
}

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckWhen {
    AfterApply,
    AfterRollback,
}

/// A check's minimum acceptable result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expect {
    Eq(f64),
    AtLeast(f64),
    AtMost(f64),
    Between(f64, f64),
    /// The value after equals the value before the plan ran.
    Unchanged,
}

impl Expect {
    /// Parses `= N`, `>= N`, `<= N`, `between A B`, `unchanged`.
    ///
    /// # Errors
    /// Returns a message with the accepted forms.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("expect `{s}` is not understood: write `= N`, `>= N`, `<= N`, `between A B` or `unchanged`");
        let t = s.trim();
        let num = |x: &str| x.trim().parse::<f64>().map_err(|_| bad());
        if t == "unchanged" {
            Ok(Self::Unchanged)
        } else if let Some(r) = t.strip_prefix(">=") {
            Ok(Self::AtLeast(num(r)?))
        } else if let Some(r) = t.strip_prefix("<=") {
            Ok(Self::AtMost(num(r)?))
        } else if let Some(r) = t.strip_prefix('=') {
            Ok(Self::Eq(num(r)?))
        } else if let Some(r) = t.strip_prefix("between ") {
            let parts: Vec<&str> = r.split_whitespace().collect();
            match parts.as_slice() {
                [a, b] => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("expect `{s}`: the lower bound is above the upper bound"));
                    }
                    Ok(Self::Between(a, b))
                }
                _ => Err(bad()),
            }
        } else {
            Err(bad())
        }
    }

    /// Whether `value` (with `before`, the value before the plan, for
    /// `unchanged`) is acceptable.
    #[must_use]
    pub fn accepts(&self, value: &serde_json::Value, before: Option<&serde_json::Value>) -> bool {
        let n = value.as_f64();
        match self {
            Self::Eq(x) => n == Some(*x),
            Self::AtLeast(x) => n.is_some_and(|n| n >= *x),
            Self::AtMost(x) => n.is_some_and(|n| n <= *x),
            Self::Between(a, b) => n.is_some_and(|n| n >= *a && n <= *b),
            Self::Unchanged => before == Some(value),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eq(x) => write!(f, "= {x}"),
            Self::AtLeast(x) => write!(f, ">= {x}"),
            Self::AtMost(x) => write!(f, "<= {x}"),
            Self::Between(a, b) => write!(f, "between {a} {b}"),
            Self::Unchanged => write!(f, "unchanged"),
        }
    }
}

// ---- release.toml as written (serde) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    version: String,
    sequence: i64,
    app_version: String,
    owner: String,
    on_call: String,
    #[serde(default, rename = "target")]
    targets: Vec<TargetToml>,
    #[serde(default, rename = "migration")]
    migrations: Vec<MigrationToml>,
    #[serde(default, rename = "flag")]
    flags: Vec<FlagToml>,
    #[serde(default, rename = "check")]
    checks: Vec<CheckToml>,
    #[serde(default, rename = "trigger")]
    triggers: Vec<TriggerToml>,
    rollout: Option<RolloutToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetToml {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationToml {
    id: String,
    target: String,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default = "yes")]
    reversible: bool,
    #[serde(default)]
    rollback: RollbackMode,
    #[serde(default)]
    preserve: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagToml {
    name: String,
    value: toml::Value,
    previous: toml::Value,
    owner: String,
    #[serde(default)]
    activate: Activation,
    expires: Option<toml::value::Datetime>,
    #[serde(default)]
    kill_switch: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckToml {
    name: String,
    target: String,
    sql: String,
    expect: String,
    #[serde(default = "default_when")]
    when: Vec<CheckWhen>,
}

fn default_when() -> Vec<CheckWhen> {
    vec![CheckWhen::AfterApply]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerToml {
    metric: String,
    above: Option<f64>,
    below: Option<f64>,
    window: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutToml {
    waves: Vec<WaveToml>,
    #[serde(default = "default_max_failure_ratio")]
    max_failure_ratio: f64,
    #[serde(default = "default_min_sample")]
    min_sample: u32,
    #[serde(default = "default_report_timeout")]
    report_timeout: String,
    #[serde(default = "yes")]
    auto_rollback: bool,
}

fn default_max_failure_ratio() -> f64 {
    0.02
}
fn default_min_sample() -> u32 {
    20
}
fn default_report_timeout() -> String {
    "30m".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaveToml {
    name: String,
    selector: Option<String>,
    percent: Option<f64>,
    bake: Option<String>,
    #[serde(default)]
    approval: bool,
}

// ---- the validated release ----

/// A SQL script of a migration, with its checksum (comments and whitespace
/// ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub path: PathBuf,
    pub sql: String,
    pub checksum: String,
}

impl Script {
    fn load(path: PathBuf) -> std::io::Result<Self> {
        let sql = std::fs::read_to_string(&path)?;
        let checksum = script_checksum(&sql);
        Ok(Script { path, sql, checksum })
    }
}

/// What `preserve` copies aside before `up.sql`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preserve {
    pub table: String,
    /// `None` copies the whole table.
    pub column: Option<String>,
}

impl Preserve {
    /// The side table that holds the copy: `_rewind_preserve_<id>_<table>`.
    #[must_use]
    pub fn side_table(&self, migration: &str) -> String {
        format!("_rewind_preserve_{migration}_{}", self.table)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub id: String,
    pub target: String,
    pub after: Vec<String>,
    pub reversible: bool,
    pub rollback: RollbackMode,
    pub preserve: Vec<Preserve>,
    pub up: Script,
    pub down: Option<Script>,
    pub verify: Option<Script>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub name: String,
    pub value: serde_json::Value,
    pub previous: serde_json::Value,
    pub owner: String,
    pub activate: Activation,
    /// `YYYY-MM-DD`.
    pub expires: Option<String>,
    pub kill_switch: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub target: String,
    pub sql: String,
    pub expect: Expect,
    pub when: Vec<CheckWhen>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub metric: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub name: String,
    pub selector: Option<String>,
    pub percent: Option<f64>,
    pub bake: Duration,
    pub approval: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub waves: Vec<Wave>,
    pub max_failure_ratio: f64,
    pub min_sample: u32,
    pub report_timeout: Duration,
    pub auto_rollback: bool,
}

/// A loaded, validated release directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub dir: PathBuf,
    pub name: String,
    pub version: String,
    pub sequence: u64,
    pub app_version: String,
    pub owner: String,
    pub on_call: String,
    pub targets: Vec<String>,
    /// In apply order (topological, ties broken by declaration order).
    pub migrations: Vec<Migration>,
    pub flags: Vec<Flag>,
    pub checks: Vec<Check>,
    pub triggers: Vec<Trigger>,
    pub rollout: Option<Rollout>,
    /// `templates/<event>.md` (DESIGN.md §9); events without a file use the
    /// built-in default ([`Templates::get`]).
    #[serde(default, skip_serializing_if = "Templates::is_empty")]
    pub templates: Templates,
}

/// A non-fatal finding of `lint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Line and column (1-based) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where `key = "value"` is written: the `nth` (0-based) such assignment
/// inside a `[section]`/`[[section]]` (inline tables included), as 1-based
/// line and the column of the value. Problems point there.
fn locate(src: &str, section: &str, key: &str, value: &str, nth: usize) -> Option<(usize, usize)> {
    let mut current = String::new();
    let mut seen = 0;
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') && !t.starts_with("[ ") {
            current = t.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string();
            continue;
        }
        if current != section {
            continue;
        }
        for (at, _) in line.match_indices(key) {
            let before_ok = line[..at].chars().next_back().is_none_or(|c| c.is_whitespace() || c == '{' || c == ',');
            let rest = &line[at + key.len()..];
            let Some(after_eq) = rest.trim_start().strip_prefix('=') else { continue };
            let value_text = after_eq.trim_start();
            let matches =
                [format!("\"{value}\""), format!("'{value}'")].iter().any(|q| value_text.starts_with(q.as_str()));
            if before_ok && matches {
                if seen == nth {
                    let column = line.len() - value_text.len();
                    return Some((i + 1, line[..column].chars().count() + 1));
                }
                seen += 1;
            }
        }
    }
    None
}

/// Line and column of the first line of `section` (`[[migration]]` ...)
/// that assigns `key`, for problems about values that are not strings.
fn locate_key(src: &str, key: &str) -> Option<(usize, usize)> {
    src.lines().enumerate().find_map(|(i, l)| {
        let t = l.trim_start();
        let rest = t.strip_prefix(key)?;
        rest.trim_start().starts_with('=').then(|| {
            let eq = l.find('=').unwrap_or(0);
            let value_at = eq + 1 + (l.len() - eq - 1 - l[eq + 1..].trim_start().len());
            (i + 1, l[..value_at].chars().count() + 1)
        })
    })
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn toml_to_json(v: &toml::Value) -> Result<serde_json::Value, String> {
    Ok(match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{f} is not a finite number"))?,
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter().map(|(k, v)| Ok((k.clone(), toml_to_json(v)?))).collect::<Result<_, String>>()?,
        ),
        toml::Value::Array(_) | toml::Value::Datetime(_) => {
            return Err("flag values are bool, int, float, string or an inline table".into());
        }
    })
}

impl Release {
    /// Loads and validates a release directory.
    ///
    /// # Errors
    /// [`ReleaseError::Syntax`] for TOML errors and unknown keys (with line
    /// and column), [`ReleaseError::Invalid`] listing every semantic problem.
    pub fn load(dir: &Path) -> Result<Self, ReleaseError> {
        let path = dir.join("release.toml");
        let src = std::fs::read_to_string(&path).map_err(|source| ReleaseError::Io { path: path.clone(), source })?;
        let manifest: Manifest = toml::from_str(&src).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(&src, s.start));
            let mut message = e.message().trim().to_string();
            if message.starts_with("unknown field") {
                message.push_str("; remove it or fix its spelling (docs/release-format.md lists every key)");
            } else if ["invalid type", "missing field", "unknown variant", "invalid value"]
                .iter()
                .any(|k| message.starts_with(k))
            {
                message.push_str(" (docs/release-format.md gives every key's type and values)");
            }
            ReleaseError::Syntax { path: path.clone(), line, column, message }
        })?;
        let mut v = Validator { path: path.clone(), src: &src, problems: Vec::new() };
        let release = v.validate(dir, manifest);
        if v.problems.is_empty() { Ok(release) } else { Err(ReleaseError::Invalid { path, problems: v.problems }) }
    }

    /// Warnings that do not stop a release: expired flags (against `today`,
    /// `YYYY-MM-DD`),
    /// irreversible steps, migrations without `verify.sql`.
    #[must_use]
    pub fn lint(&self, today: &str) -> Vec<Warning> {
        let mut w = Vec::new();
        for f in &self.flags {
            if let Some(exp) = &f.expires
                && exp.as_str() < today
            {
                w.push(Warning(format!(
                    "flag {}: expired on {exp}; remove it or extend `expires` (owner: {})",
                    f.name, f.owner
                )));
            }
        }
        for m in &self.migrations {
            if m.verify.is_none() {
                w.push(Warning(format!(
                    "migration {}: no verify.sql; add one so apply can prove the step worked",
                    m.id
                )));
            }
            if !m.reversible {
                w.push(Warning(format!(
                    "migration {}: irreversible; rollback relies on {}",
                    m.id,
                    if m.rollback == RollbackMode::Restore { "the snapshot" } else { "preserved data" }
                )));
            }
        }
        w
    }

    /// Migrations in rollback order: the exact reverse of apply order, so
    /// each is undone before every migration it was applied after.
    pub fn rollback_order(&self) -> impl DoubleEndedIterator<Item = &Migration> + '_ {
        self.migrations.iter().rev()
    }

    /// Migrations of one target, in apply order.
    pub fn migrations_of<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a Migration> + 'a {
        self.migrations.iter().filter(move |m| m.target == target)
    }
}

struct Validator<'a> {
    path: PathBuf,
    src: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, at: Option<(usize, usize)>, message: String) {
        self.problems.push(Problem {
            file: self.path.clone(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            message,
        });
    }

    /// A problem at the `nth` `key = "value"` of `section`.
    fn problem_at(&mut self, section: &str, key: &str, value: &str, nth: usize, message: String) {
        let at = locate(self.src, section, key, value, nth);
        self.problem(at, message);
    }

    fn duration(&mut self, section: &str, key: &str, value: &str, context: &str) -> Duration {
        parse_duration(value).unwrap_or_else(|e| {
            self.problem_at(section, key, value, 0, format!("{context}: {e}"));
            Duration::ZERO
        })
    }

    fn validate(&mut self, dir: &Path, m: Manifest) -> Release {
        if m.name.trim().is_empty() {
            let at = locate_key(self.src, "name");
            self.problem(at, "`name` is empty: name the product this release belongs to".into());
        }
        let sequence = u64::try_from(m.sequence).ok().filter(|s| *s > 0).unwrap_or_else(|| {
            let at = locate_key(self.src, "sequence");
            self.problem(at, format!("`sequence = {}` must be a positive integer, strictly increasing per product (one more than the product's previous release)", m.sequence));
            0
        });
        let mut targets: Vec<String> = Vec::new();
        for t in &m.targets {
            if targets.contains(&t.name) {
                self.problem_at(
                    "target",
                    "name",
                    &t.name,
                    1,
                    format!("target {} is declared twice: remove one [[target]]", t.name),
                );
            }
            targets.push(t.name.clone());
        }
        let migrations = self.migrations(dir, &m.migrations, &targets);
        let flags = self.flags(&m.flags);
        let checks = self.checks(&m.checks, &targets);
        let triggers = m
            .triggers
            .iter()
            .map(|t| {
                if t.above.is_none() == t.below.is_none() {
                    self.problem_at(
                        "trigger",
                        "metric",
                        &t.metric,
                        0,
                        format!("trigger {}: give exactly one of `above` or `below`", t.metric),
                    );
                }
                Trigger {
                    metric: t.metric.clone(),
                    above: t.above,
                    below: t.below,
                    window: self.duration("trigger", "window", &t.window, &format!("trigger {}", t.metric)),
                }
            })
            .collect();
        let rollout = m.rollout.as_ref().map(|r| self.rollout(r));
        let templates = Templates::load(dir).unwrap_or_else(|errors| {
            self.problems.extend(errors.into_iter().map(|e| Problem {
                file: e.file,
                line: Some(e.line),
                column: Some(e.column),
                message: e.message,
            }));
            Templates::default()
        });
        Release {
            dir: dir.to_path_buf(),
            name: m.name,
            version: m.version,
            sequence,
            app_version: m.app_version,
            owner: m.owner,
            on_call: m.on_call,
            targets,
            migrations,
            flags,
            checks,
            triggers,
            rollout,
            templates,
        }
    }

    fn migrations(&mut self, dir: &Path, list: &[MigrationToml], targets: &[String]) -> Vec<Migration> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut loaded = Vec::new();
        for mt in list {
            let id = &mt.id;
            let count = seen.entry(id.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                let nth = *count - 1;
                self.problem_at(
                    "migration",
                    "id",
                    id,
                    nth,
                    format!("migration {id} is declared twice: ids must be unique; rename or remove this one"),
                );
                continue;
            }
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.problem_at(
                    "migration",
                    "id",
                    id,
                    0,
                    format!(
                        "migration id `{id}` must be letters, digits and _ (it names a directory and a side table)"
                    ),
                );
                continue;
            }
            if !targets.contains(&mt.target) {
                self.problem_at(
                    "migration",
                    "target",
                    &mt.target,
                    0,
                    format!(
                        "migration {id}: target `{}` is not declared; add [[target]] name = \"{}\"",
                        mt.target, mt.target
                    ),
                );
            }
            if !mt.reversible && mt.preserve.is_empty() && mt.rollback != RollbackMode::Restore {
                self.problem_at("migration", "id", id, 0, format!("migration {id}: reversible = false needs `preserve = [...]` (data down.sql can restore from) or `rollback = \"restore\"` (undo from the snapshot)"));
            }
            let mdir = dir.join("migrations").join(id);
            let mut script = |name: &str, required: bool| -> Option<Script> {
                let p = mdir.join(name);
                match Script::load(p.clone()) {
                    Ok(s) => Some(s),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
                    Err(e) => {
                        let hint = if name == "down.sql" { " (or set rollback = \"restore\")" } else { "" };
                        self.problem_at(
                            "migration",
                            "id",
                            id,
                            0,
                            format!("migration {id}: cannot read {}: {e}; create it{hint}", p.display()),
                        );
                        None
                    }
                }
            };
            let up = script("up.sql", true);
            let down = script("down.sql", mt.rollback == RollbackMode::Down);
            let verify = script("verify.sql", false);
            let mut preserve = Vec::new();
            for p in &mt.preserve {
                let (table, column) = match p.split_once('.') {
                    Some((t, c)) => (t.to_string(), Some(c.to_string())),
                    None => (p.clone(), None),
                };
                if !is_ident(&table) || column.as_deref().is_some_and(|c| !is_ident(c)) {
                    self.problem_at("migration", "id", id, 0, format!("migration {id}: preserve entry `{p}` must be `table` or `table.column` (plain names: letters, digits, _)"));
                }
                // One side table per (migration, table): a second entry for
                // the same table would replace the first copy.
                if preserve.iter().any(|q: &Preserve| q.table.eq_ignore_ascii_case(&table)) {
                    self.problem_at("migration", "id", id, 0, format!("migration {id}: preserve names table `{table}` twice; its side table holds one copy: preserve `{table}` (the whole table) or one `{table}.column`"));
                }
                preserve.push(Preserve { table, column });
            }
            if let Some(up) = up {
                loaded.push(Migration {
                    id: id.clone(),
                    target: mt.target.clone(),
                    after: mt.after.clone(),
                    reversible: mt.reversible,
                    rollback: mt.rollback,
                    preserve,
                    up,
                    down,
                    verify,
                });
            }
        }
        self.order(loaded, list)
    }

    /// Topological order, stable: among ready migrations the one declared
    /// first goes first.
    fn order(&mut self, loaded: Vec<Migration>, list: &[MigrationToml]) -> Vec<Migration> {
        let declared: BTreeSet<&str> = list.iter().map(|m| m.id.as_str()).collect();
        for m in &loaded {
            for a in &m.after {
                if !declared.contains(a.as_str()) {
                    self.problem_at("migration", "id", &m.id, 0, format!("migration {}: `after` names `{a}`, which is not a migration of this release; fix the id or remove it from `after`", m.id));
                }
            }
        }
        // Edges to ids that did not load (unknown, or a script missing) were
        // reported already; they must not also look like a cycle.
        let loaded_ids: BTreeSet<String> = loaded.iter().map(|m| m.id.clone()).collect();
        let mut remaining: Vec<Migration> = loaded;
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut ordered = Vec::with_capacity(remaining.len());
        while !remaining.is_empty() {
            let ready =
                remaining.iter().position(|m| m.after.iter().all(|a| done.contains(a) || !loaded_ids.contains(a)));
            match ready {
                Some(i) => {
                    let m = remaining.remove(i);
                    done.insert(m.id.clone());
                    ordered.push(m);
                }
                None => {
                    let cycle = find_cycle(&remaining);
                    let first = cycle[0].clone();
                    self.problem_at(
                        "migration",
                        "id",
                        &first,
                        0,
                        format!("dependency cycle: {} -> {first} (each names the next in `after`); remove one of these `after` edges", cycle.join(" -> ")),
                    );
                    ordered.append(&mut remaining);
                }
            }
        }
        ordered
    }

    fn flags(&mut self, list: &[FlagToml]) -> Vec<Flag> {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for f in list {
            let count = names.entry(f.name.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                let nth = *count - 1;
                self.problem_at(
                    "flag",
                    "name",
                    &f.name,
                    nth,
                    format!("flag {} is declared twice: remove or rename one", f.name),
                );
            }
            if f.name.is_empty()
                || !f.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~'))
            {
                self.problem_at(
                    "flag",
                    "name",
                    &f.name,
                    0,
                    format!(
                        "flag name {:?}: use letters, digits, `_`, `-`, `.` or `~` (a name apps and URLs carry as is)",
                        f.name
                    ),
                );
            }
            let mut json = |v: &toml::Value, key: &str| {
                toml_to_json(v).unwrap_or_else(|e| {
                    self.problem_at("flag", "name", &f.name, 0, format!("flag {}: `{key}`: {e}", f.name));
                    serde_json::Value::Null
                })
            };
            let value = json(&f.value, "value");
            let previous = json(&f.previous, "previous");
            let expires = f.expires.as_ref().map(|d| match d.date {
                Some(date) if d.time.is_none() => format!("{:04}-{:02}-{:02}", date.year, date.month, date.day),
                _ => {
                    self.problem_at(
                        "flag",
                        "name",
                        &f.name,
                        0,
                        format!("flag {}: `expires` must be a date like 2027-01-31", f.name),
                    );
                    String::new()
                }
            });
            out.push(Flag {
                name: f.name.clone(),
                value,
                previous,
                owner: f.owner.clone(),
                activate: f.activate,
                expires,
                kill_switch: f.kill_switch,
            });
        }
        out
    }

    fn checks(&mut self, list: &[CheckToml], targets: &[String]) -> Vec<Check> {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        list.iter()
            .map(|c| {
                // Results and `unchanged` baselines are keyed by name.
                let count = names.entry(c.name.clone()).or_insert(0);
                *count += 1;
                if *count > 1 {
                    let nth = *count - 1;
                    self.problem_at("check", "name", &c.name, nth, format!("check `{}` is declared twice: check names must be unique", c.name));
                }
                if c.when.is_empty() {
                    self.problem_at("check", "name", &c.name, 0, format!("check `{}`: `when = []` never runs it; write [\"after-apply\"], [\"after-rollback\"] or both, or leave `when` out for [\"after-apply\"]", c.name));
                }
                if !targets.contains(&c.target) {
                    self.problem_at("check", "target", &c.target, 0, format!("check `{}`: target `{}` is not declared; add [[target]] name = \"{}\"", c.name, c.target, c.target));
                }
                let expect = Expect::parse(&c.expect).unwrap_or_else(|e| {
                    self.problem_at("check", "expect", &c.expect, 0, format!("check `{}`: {e}", c.name));
                    Expect::Unchanged
                });
                Check { name: c.name.clone(), target: c.target.clone(), sql: c.sql.clone(), expect, when: c.when.clone() }
            })
            .collect()
    }

    fn rollout(&mut self, r: &RolloutToml) -> Rollout {
        if r.waves.is_empty() {
            let at = locate_key(self.src, "waves");
            self.problem(at, "[rollout] has no waves: add at least one, e.g. { name = \"all\", percent = 100 }".into());
        }
        if !(0.0..=1.0).contains(&r.max_failure_ratio) {
            let at = locate_key(self.src, "max_failure_ratio");
            self.problem(
                at,
                format!("[rollout] max_failure_ratio = {} must be between 0 and 1 (0.02 is 2 %)", r.max_failure_ratio),
            );
        }
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let waves =
            r.waves
                .iter()
                .map(|w| {
                    let count = names.entry(w.name.clone()).or_insert(0);
                    *count += 1;
                    let nth = *count - 1;
                    if nth > 0 {
                        self.problem_at(
                            "rollout",
                            "name",
                            &w.name,
                            nth,
                            format!("wave {} is declared twice: wave names must be unique", w.name),
                        );
                    }
                    if w.selector.is_none() && w.percent.is_none() {
                        self.problem_at(
                            "rollout",
                            "name",
                            &w.name,
                            nth,
                            format!("wave {}: give a `selector` or a `percent`", w.name),
                        );
                    }
                    if let Some(p) = w.percent
                        && !(p > 0.0 && p <= 100.0)
                    {
                        self.problem_at(
                            "rollout",
                            "name",
                            &w.name,
                            nth,
                            format!("wave {}: percent = {p} must be in (0, 100]", w.name),
                        );
                    }
                    Wave {
                        name: w.name.clone(),
                        selector: w.selector.clone(),
                        percent: w.percent,
                        bake: w.bake.as_deref().map_or(Duration::ZERO, |b| {
                            self.duration("rollout", "bake", b, &format!("wave {}", w.name))
                        }),
                        approval: w.approval,
                    }
                })
                .collect();
        Rollout {
            waves,
            max_failure_ratio: r.max_failure_ratio,
            min_sample: r.min_sample,
            report_timeout: self.duration("rollout", "report_timeout", &r.report_timeout, "[rollout] report_timeout"),
            auto_rollback: r.auto_rollback,
        }
    }
}

/// One dependency cycle among `remaining` (where no migration is ready):
/// the ids along it, starting from the earliest declared one on it.
fn find_cycle(remaining: &[Migration]) -> Vec<String> {
    let index: HashMap<&str, usize> = remaining.iter().enumerate().map(|(i, m)| (m.id.as_str(), i)).collect();
    // Every migration left waits on another one left, so walking "waits on"
    // edges from anywhere must come back to a node already visited.
    let mut path: Vec<usize> = Vec::new();
    let mut at = 0;
    loop {
        if let Some(pos) = path.iter().position(|&p| p == at) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            let start = cycle.iter().enumerate().min_by_key(|(_, i)| **i).map_or(0, |(k, _)| k);
            cycle.rotate_left(start);
            return cycle.into_iter().map(|i| remaining[i].id.clone()).collect();
        }
        path.push(at);
        let next = remaining[at].after.iter().find_map(|a| index.get(a.as_str()).copied());
        match next {
            Some(n) => at = n,
            None => return vec![remaining[at].id.clone()],
        }
    }
}

/// Maps `--db TARGET=FILE` arguments onto a release's targets.
///
/// # Errors
/// A message naming the unknown target, the missing mapping or the
/// malformed argument.
pub fn map_targets(release: &Release, args: &[String]) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut map = BTreeMap::new();
    for a in args {
        let (t, f) =
            a.split_once('=').ok_or_else(|| format!("--db {a}: expected TARGET=FILE, e.g. --db notes=./notes.db"))?;
        if !release.targets.iter().any(|x| x == t) {
            return Err(format!(
                "--db {a}: release {} has no target `{t}` (targets: {})",
                release.version,
                release.targets.join(", ")
            ));
        }
        if map.insert(t.to_string(), PathBuf::from(f)).is_some() {
            return Err(format!("--db {t}=...: given twice"));
        }
    }
    let used: HashMap<&str, ()> = release
        .migrations
        .iter()
        .map(|m| (m.target.as_str(), ()))
        .chain(release.checks.iter().map(|c| (c.target.as_str(), ())))
        .collect();
    for t in &release.targets {
        if used.contains_key(t.as_str()) && !map.contains_key(t) {
            return Err(format!("target `{t}` has no database: add --db {t}=FILE"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests;
