//! `release lint`: loads a release directory, collects every error (with
//! file:line) and warning, and summarises what the release will do —
//! targets, migrations in apply order, flags, checks, triggers and waves.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rewind_shared::release::{CheckWhen, Migration, RollbackMode};
use rewind_shared::{Release, ReleaseError};
use serde_json::{Value, json};

/// How a migration is undone, and whether that counts as reversible.
///
/// "Reversible" means undone in place by `down.sql`, keeping what the app
/// wrote after the apply. A step declared `reversible = false` whose data is
/// kept aside by `preserve` is reversible in that sense until the release is
/// finalized (the preserved copy is dropped then). A `rollback = "restore"`
/// step is not: it is undone by restoring the pre-apply snapshot, which
/// drops later writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    pub reversible: bool,
    /// `down`, `preserve` or `restore`.
    pub via: &'static str,
    /// For people: "yes", "yes (down.sql + preserved orders.status)", ...
    pub text: String,
}

impl Undo {
    #[must_use]
    pub fn of(m: &Migration) -> Self {
        if m.rollback == RollbackMode::Restore {
            return Undo {
                reversible: false,
                via: "restore",
                text: "no (snapshot restore: writes after the apply are lost)".into(),
            };
        }
        if m.reversible {
            return Undo { reversible: true, via: "down", text: "yes".into() };
        }
        Undo {
            reversible: true,
            via: "preserve",
            text: format!("yes (down.sql + preserved {}, until finalized)", preserve_list(m)),
        }
    }
}

fn preserve_list(m: &Migration) -> String {
    m.preserve
        .iter()
        .map(|p| match &p.column {
            Some(c) => format!("{}.{c}", p.table),
            None => p.table.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Result of linting one release directory.
#[derive(Debug)]
pub struct Lint {
    pub dir: PathBuf,
    pub release: Option<Release>,
    /// Each naming file:line(:column) or the migration id, and the fix.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Lint {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Exit code: 2 with errors, else 0 (warnings do not fail a lint).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if self.ok() { 0 } else { 2 }
    }
}

/// Lints `dir`, judging flag expiry against `today` (`YYYY-MM-DD`).
#[must_use]
pub fn lint(dir: &Path, today: &str) -> Lint {
    match Release::load(dir) {
        Ok(r) => {
            let warnings = r.lint(today).into_iter().map(|w| w.0).collect();
            Lint { dir: dir.to_path_buf(), release: Some(r), errors: Vec::new(), warnings }
        }
        Err(e) => Lint { dir: dir.to_path_buf(), release: None, errors: errors_of(dir, e), warnings: Vec::new() },
    }
}

fn errors_of(dir: &Path, e: ReleaseError) -> Vec<String> {
    match e {
        ReleaseError::Io { path, source } => vec![format!(
            "{}: cannot read: {source}; give a release directory that holds release.toml (e.g. examples/notes-app/releases/2026.11.0)",
            path.display()
        )],
        ReleaseError::Syntax { .. } => vec![e.to_string()],
        ReleaseError::Invalid { problems, .. } => {
            if problems.is_empty() {
                vec![format!("release {} is invalid", dir.display())]
            } else {
                problems.iter().map(ToString::to_string).collect()
            }
        }
    }
}

/// `15m`, `1h`, `90s`: the shortest exact form.
#[must_use]
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        "0s".into()
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn when(w: &[CheckWhen]) -> String {
    w.iter()
        .map(|w| match w {
            CheckWhen::AfterApply => "after-apply",
            CheckWhen::AfterRollback => "after-rollback",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `--json` form: `{"ok", "dir", "errors", "warnings", "release",
/// "targets", "migrations", "flags", "checks", "triggers", "rollout"}`.
#[must_use]
pub fn to_json(l: &Lint) -> Value {
    let mut v = json!({"ok": l.ok(), "dir": l.dir, "errors": l.errors, "warnings": l.warnings});
    let Some(r) = &l.release else { return v };
    let extra = json!({
        "release": {"name": r.name, "version": r.version, "sequence": r.sequence, "app_version": r.app_version,
                    "owner": r.owner, "on_call": r.on_call},
        "targets": r.targets,
        "migrations": r.migrations.iter().enumerate().map(|(i, m)| {
            let u = Undo::of(m);
            json!({"order": i + 1, "id": m.id, "target": m.target, "after": m.after,
                   "declared_reversible": m.reversible, "reversible": u.reversible, "undo": u.via,
                   "preserve": m.preserve.iter().map(|p| match &p.column { Some(c) => format!("{}.{c}", p.table), None => p.table.clone() }).collect::<Vec<_>>(),
                   "verify": m.verify.is_some(), "checksum": m.up.checksum})
        }).collect::<Vec<_>>(),
        "flags": r.flags.iter().map(|f| json!({"name": f.name, "value": f.value, "previous": f.previous, "owner": f.owner,
            "activate": f.activate.as_str(), "expires": f.expires, "kill_switch": f.kill_switch})).collect::<Vec<_>>(),
        "checks": r.checks.iter().map(|c| json!({"name": c.name, "target": c.target, "sql": c.sql,
            "expect": c.expect.to_string(), "when": c.when})).collect::<Vec<_>>(),
        "triggers": r.triggers.iter().map(|t| json!({"metric": t.metric, "above": t.above, "below": t.below,
            "window": duration(t.window)})).collect::<Vec<_>>(),
        "rollout": r.rollout.as_ref().map(|ro| json!({
            "waves": ro.waves.iter().map(|w| json!({"name": w.name, "selector": w.selector, "percent": w.percent,
                "bake": duration(w.bake), "approval": w.approval})).collect::<Vec<_>>(),
            "max_failure_ratio": ro.max_failure_ratio, "min_sample": ro.min_sample,
            "report_timeout": duration(ro.report_timeout), "auto_rollback": ro.auto_rollback})),
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

/// Left-aligned table: each column as wide as its widest cell.
#[must_use]
pub fn table(header: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::from(indent);
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The terminal form.
#[must_use]
pub fn to_text(l: &Lint) -> String {
    let mut o = String::new();
    let Some(r) = &l.release else {
        let _ = writeln!(o, "release {}: {} error(s)", l.dir.display(), l.errors.len());
        for e in &l.errors {
            let _ = writeln!(o, "  error: {e}");
        }
        let _ = writeln!(o, "fix the errors above, then run rewindctl release lint {} again", l.dir.display());
        return o;
    };
    let _ = writeln!(o, "release {} {} (sequence {}, app {})", r.name, r.version, r.sequence, r.app_version);
    let _ = writeln!(o, "owner {}, on call {}", r.owner, r.on_call);
    let _ = writeln!(o, "targets: {}", r.targets.join(", "));
    let _ = writeln!(o, "\nmigrations, in apply order (rollback runs them in reverse):");
    let rows: Vec<Vec<String>> = r
        .migrations
        .iter()
        .enumerate()
        .map(|(i, m)| {
            vec![
                (i + 1).to_string(),
                m.id.clone(),
                m.target.clone(),
                if m.after.is_empty() { "-".into() } else { m.after.join(",") },
                if m.verify.is_some() { "yes".into() } else { "NO".into() },
                Undo::of(m).text,
            ]
        })
        .collect();
    o.push_str(&table(&["#", "id", "target", "after", "verify", "reversible"], &rows, "  "));
    if !r.flags.is_empty() {
        let _ = writeln!(o, "\nflags:");
        let rows: Vec<Vec<String>> = r
            .flags
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    format!("{} (was {})", f.value, f.previous),
                    f.activate.as_str().into(),
                    f.owner.clone(),
                    f.expires.clone().map_or_else(|| "never".into(), |e| format!("expires {e}")),
                    if f.kill_switch { "kill switch".into() } else { String::new() },
                ]
            })
            .collect();
        o.push_str(&table(&["name", "value", "activate", "owner", "expiry", ""], &rows, "  "));
    }
    if !r.checks.is_empty() {
        let _ = writeln!(o, "\nchecks:");
        let rows: Vec<Vec<String>> = r
            .checks
            .iter()
            .map(|c| vec![c.name.clone(), c.target.clone(), c.expect.to_string(), when(&c.when)])
            .collect();
        o.push_str(&table(&["name", "target", "expect", "when"], &rows, "  "));
    }
    if !r.triggers.is_empty() {
        let _ = writeln!(o, "\ntriggers (roll back when):");
        for t in &r.triggers {
            let bound = match (t.above, t.below) {
                (Some(a), _) => format!("above {a}"),
                (_, Some(b)) => format!("below {b}"),
                _ => String::new(),
            };
            let _ = writeln!(o, "  {} {bound} within {}", t.metric, duration(t.window));
        }
    }
    match &r.rollout {
        Some(ro) => {
            let _ = writeln!(o, "\nwaves:");
            let rows: Vec<Vec<String>> = ro
                .waves
                .iter()
                .map(|w| {
                    vec![
                        w.name.clone(),
                        w.selector.clone().unwrap_or_else(|| "-".into()),
                        w.percent.map_or_else(|| "-".into(), |p| format!("{p}%")),
                        if w.bake.is_zero() { "-".into() } else { duration(w.bake) },
                        if w.approval { "approval".into() } else { String::new() },
                    ]
                })
                .collect();
            o.push_str(&table(&["name", "selector", "percent", "bake", ""], &rows, "  "));
            let _ = writeln!(
                o,
                "  halt above {} failures once {} reported; no report within {} counts as failed; auto rollback {}",
                ro.max_failure_ratio,
                ro.min_sample,
                duration(ro.report_timeout),
                if ro.auto_rollback { "on" } else { "off" }
            );
        }
        None => {
            let _ = writeln!(o, "\nwaves: none declared (one wave to every endpoint, default thresholds)");
        }
    }
    if !l.warnings.is_empty() {
        let _ = writeln!(o, "\nwarnings:");
        for w in &l.warnings {
            let _ = writeln!(o, "  warning: {w}");
        }
    }
    let _ = writeln!(o, "\nok: 0 errors, {} warning(s)", l.warnings.len());
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notes-app/releases").join(name)
    }

    #[test]
    fn durations_print_in_their_shortest_exact_unit() {
        let d = |s| duration(Duration::from_secs(s));
        assert_eq!([d(0), d(90), d(900), d(3600), d(5400), d(172_800)], ["0s", "90s", "15m", "1h", "90m", "2d"]);
    }

    #[test]
    fn reversibility_of_the_example_steps() {
        let r = Release::load(&example("2026.11.0")).unwrap();
        let undo: Vec<(bool, &str)> = r
            .migrations
            .iter()
            .map(|m| {
                let u = Undo::of(m);
                (u.reversible, u.via)
            })
            .collect();
        assert_eq!(undo, [(true, "down"), (true, "preserve"), (true, "down")]);
        let mut m = r.migrations[0].clone();
        m.rollback = RollbackMode::Restore;
        assert!(!Undo::of(&m).reversible);
        assert!(Undo::of(&m).text.starts_with("no"));
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let t = table(&["a", "bb", ""], &[vec!["long".into(), "x".into(), String::new()]], "  ");
        assert_eq!(t, "  a     bb\n  long  x\n");
    }

    #[test]
    fn a_missing_directory_is_one_error_naming_release_toml() {
        let l = lint(Path::new("/nonexistent/release"), "2026-11-25");
        assert_eq!(l.exit_code(), 2);
        assert_eq!(l.errors.len(), 1);
        assert!(l.errors[0].contains("/nonexistent/release/release.toml"), "{:?}", l.errors);
        assert_eq!(to_json(&l)["ok"], false);
    }
}
