//! `rewindctl runbook DIR`: the incident playbook of a release, written
//! from the release directory alone (DESIGN.md §8) — owners, what the
//! release changes and how each change is undone, triggers and halt rules,
//! the exact rollback command per granularity (fleet and endpoint),
//! verification queries, the restore window, the communication messages
//! and the escalation path.
//!
//! Guarantees: the output depends only on the release directory and the
//! arguments (no clock, no host names), so the same release gives the same
//! playbook; only `--sample` adds measured times. Samples are only read as
//! bytes (copied into a scratch directory, never opened by SQLite); the
//! restore drill runs on the copy with the agent's own snapshot code
//! (create, then verify with a restore test) and the scratch directory is
//! removed afterwards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use rewind_agent::snapshot::{self, Origin};
use rewind_agent::state::State;
use rewind_agent::target;
use rewind_shared::Release;
use rewind_shared::bundle::with_dependents;
use rewind_shared::release::RollbackMode;
use rewind_shared::templates::{Event, Origin as TemplateOrigin, Rendered, Values, Variable};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lint::{Undo, duration};
use crate::output;

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl runbook examples/notes-app/releases/2026.11.0 \
--sample notes=./notes.db --sample settings=./settings.db --out RUNBOOK.md\n\n\
Writes the incident playbook as Markdown: owners, what the release changes and how each step is \
undone, triggers and halt rules, the exact rollback commands per granularity (fleet and endpoint), \
verification queries, the restore window, the communication messages with example values, and \
the escalation path. Without --sample the restore window is \"not measured\"; with it, each \
sample is copied (never opened or written), snapshotted and restored in a scratch directory, timed.\n\n\
Exit codes: 0 written, 2 bad input (an invalid release or template, names file:line; an unusable sample).")]
pub struct RunbookArgs {
    /// Release directory (holds release.toml, migrations/ and optionally templates/).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// TARGET=FILE: a sample database to measure the restore window on (repeat per target).
    #[arg(long = "sample", value_name = "TARGET=FILE")]
    pub samples: Vec<String>,
    /// Write the Markdown playbook to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the playbook as one JSON object on stdout (with --out, the Markdown still goes to FILE).
    #[arg(long)]
    pub json: bool,
}

/// Who is responsible for what.
#[derive(Debug, Clone, Serialize)]
pub struct Owners {
    pub owner: String,
    pub on_call: String,
    pub flags: Vec<FlagOwner>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagOwner {
    pub flag: String,
    pub owner: String,
    pub kill_switch: bool,
}

/// One migration: what it changes and how it is undone.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub order: usize,
    pub id: String,
    pub target: String,
    pub after: Vec<String>,
    pub reversible: bool,
    /// `down`, `preserve` or `restore` (see [`Undo`]).
    pub undo: &'static str,
    /// How a rollback undoes it, in words.
    pub how: String,
}

/// The rollback of one granularity and subject.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackCommand {
    /// `release`, `target`, `migration` or `flag`.
    pub granularity: String,
    pub subject: String,
    /// What it undoes, in words.
    pub undoes: String,
    /// Through the coordinator, to every endpoint that applied (scope `fleet`).
    pub fleet: String,
    /// On one endpoint, offline, with the signed bundle.
    pub endpoint: String,
    /// On one endpoint from the release directory (whole release only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A query that proves a state.
#[derive(Debug, Clone, Serialize)]
pub struct Query {
    /// `verify.sql` of a migration, or `check`.
    pub kind: String,
    /// Migration id or check name.
    pub name: String,
    pub target: String,
    pub sql: String,
    /// What a passing result is.
    pub expect: String,
    /// For checks: `after-apply`, `after-rollback`.
    pub when: Vec<String>,
}

/// One timed restore of a sample's snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Drill {
    pub target: String,
    pub file: PathBuf,
    pub bytes: u64,
    pub digest: String,
    pub restore_ms: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreWindow {
    pub measured: bool,
    /// The slowest sample's restore time.
    pub max_ms: Option<u128>,
    pub drills: Vec<Drill>,
    /// Release targets no sample was given for.
    pub unmeasured: Vec<String>,
}

impl RestoreWindow {
    /// The value of the `restore_window` template variable.
    #[must_use]
    pub fn phrase(&self) -> String {
        match self.max_ms {
            Some(ms) => format!("{ms} ms per endpoint (measured on samples)"),
            None => "a few seconds per endpoint (not measured)".into(),
        }
    }
}

/// One communication message, rendered with example values.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub event: Event,
    /// `templates/<event>.md` or `built-in default`.
    pub source: String,
    pub rendered: Rendered,
}

/// The incident playbook of a release.
#[derive(Debug, Clone, Serialize)]
pub struct Runbook {
    pub product: String,
    pub version: String,
    pub sequence: u64,
    pub app_version: String,
    pub dir: String,
    pub targets: Vec<String>,
    pub owners: Owners,
    pub changes: Vec<Change>,
    pub flags: Vec<String>,
    pub triggers: Vec<String>,
    pub halt: Vec<String>,
    pub waves: Vec<String>,
    pub rollback: Vec<RollbackCommand>,
    pub scopes: Vec<String>,
    pub verification: Vec<Query>,
    pub restore_window: RestoreWindow,
    pub example_values: BTreeMap<Variable, String>,
    pub messages: Vec<Message>,
    pub escalation: Vec<String>,
}

/// Runs `rewindctl runbook`; returns the exit code.
///
/// # Errors
/// [`Error::BadInput`] for an invalid release (or template), a bad
/// `--sample`, or an `--out` that cannot be written.
pub fn run(args: &RunbookArgs) -> Result<u8> {
    let release = Release::load(&args.dir)?;
    let samples = parse_samples(&release, &args.samples)?;
    let book = build(&release, &args.dir.display().to_string(), &samples)?;
    let md = to_markdown(&book);
    if let Some(out) = &args.out {
        std::fs::write(out, &md)
            .map_err(|e| Error::BadInput(format!("cannot write {}: {e}; give --out a writable path", out.display())))?;
    }
    if args.json {
        output::print_json(&book);
    } else if args.out.is_none() {
        output::print(&md);
    }
    Ok(0)
}

/// `--sample TARGET=FILE` onto the release's targets (any subset).
///
/// # Errors
/// [`Error::BadInput`] naming the malformed argument, unknown target or
/// repeated target.
pub fn parse_samples(release: &Release, args: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut map = BTreeMap::new();
    for a in args {
        let (t, f) = a.split_once('=').ok_or_else(|| {
            Error::BadInput(format!("--sample {a}: expected TARGET=FILE, e.g. --sample notes=./notes.db"))
        })?;
        if !release.targets.iter().any(|x| x == t) {
            return Err(Error::BadInput(format!(
                "--sample {a}: release {} has no target `{t}` (targets: {})",
                release.version,
                release.targets.join(", ")
            )));
        }
        if map.insert(t.to_string(), PathBuf::from(f)).is_some() {
            return Err(Error::BadInput(format!("--sample {t}=...: given twice; give one sample per target")));
        }
    }
    Ok(map)
}

/// Builds the playbook; `dir` is the release directory as the operator
/// wrote it (it appears in the endpoint commands).
///
/// # Errors
/// [`Error::BadInput`] when a sample cannot be read or is not SQLite;
/// [`Error::Failed`] when its snapshot does not verify.
pub fn build(release: &Release, dir: &str, samples: &BTreeMap<String, PathBuf>) -> Result<Runbook> {
    let p = &release.name;
    let bundle = format!("{p}-{}.bundle.json", release.version);
    let db = |t: &str| format!("--db {t}={t}.db");
    let all_dbs: Vec<String> = release.targets.iter().map(|t| db(t)).collect();
    let endpoint = |granularity: &str, subject: Option<&str>, dbs: &[String]| {
        let mut c = format!("rewind-agent rollback --bundle {bundle} --trust trust.toml --granularity {granularity}");
        if let Some(s) = subject {
            let _ = write!(c, " --subject {s}");
        }
        for d in dbs {
            c.push(' ');
            c.push_str(d);
        }
        c
    };
    let fleet = |granularity: &str, subject: Option<&str>| {
        let mut c = format!("rewindctl rollback {p} --granularity {granularity}");
        if let Some(s) = subject {
            let _ = write!(c, " --subject {s}");
        }
        c.push_str(" --scope fleet");
        c
    };

    let owners = Owners {
        owner: release.owner.clone(),
        on_call: release.on_call.clone(),
        flags: release
            .flags
            .iter()
            .map(|f| FlagOwner { flag: f.name.clone(), owner: f.owner.clone(), kill_switch: f.kill_switch })
            .collect(),
    };

    let changes: Vec<Change> = release
        .migrations
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let u = Undo::of(m);
            let how = match m.rollback {
                RollbackMode::Restore => format!(
                    "restore `{}` from the snapshot taken before the apply: writes made after the apply are lost (the report says whether any were)",
                    m.target
                ),
                RollbackMode::Down if m.preserve.is_empty() => format!("runs migrations/{}/down.sql", m.id),
                RollbackMode::Down => format!(
                    "runs migrations/{}/down.sql, which reads the preserved copy ({}) — kept until `rewind-agent finalize {p}`, after which this rollback is refused",
                    m.id,
                    m.preserve.iter().map(|x| format!("`{}`", x.side_table(&m.id))).collect::<Vec<_>>().join(", ")
                ),
            };
            Change {
                order: i + 1,
                id: m.id.clone(),
                target: m.target.clone(),
                after: m.after.clone(),
                reversible: u.reversible,
                undo: u.via,
                how,
            }
        })
        .collect();

    let flags = release
        .flags
        .iter()
        .map(|f| {
            format!(
                "{} = {} (was {}), {}{}",
                f.name,
                f.value,
                f.previous,
                match f.activate {
                    rewind_shared::release::Activation::WithRelease => "set with the release",
                    rewind_shared::release::Activation::AfterMigrations => "set after the migrations",
                    rewind_shared::release::Activation::Manual => "set by hand",
                },
                if f.kill_switch { "; kill switch: may be turned off fleet-wide without a rollback" } else { "" }
            )
        })
        .collect();

    let triggers = release
        .triggers
        .iter()
        .map(|t| match (t.above, t.below) {
            (Some(a), _) => format!("{} above {a} within {}", t.metric, duration(t.window)),
            (_, Some(b)) => format!("{} below {b} within {}", t.metric, duration(t.window)),
            _ => t.metric.clone(),
        })
        .collect();

    let (max_failure_ratio, min_sample, report_timeout, auto_rollback) =
        release.rollout.as_ref().map_or((0.02, 20, "30m".to_string(), true), |r| {
            (r.max_failure_ratio, r.min_sample, duration(r.report_timeout), r.auto_rollback)
        });
    let mut halt = vec![
        format!("more than {max_failure_ratio} of a wave's endpoints failed, once {min_sample} reported"),
        "at once, with no minimum: digest drift, a failed verify.sql, a failed rollback proof, an audit fork"
            .to_string(),
        format!("no report within {report_timeout} counts as a failure, never as a success"),
    ];
    if !release.triggers.is_empty() {
        halt.push("a trigger above fires during a wave's bake".to_string());
    }
    halt.push(if auto_rollback {
        "auto_rollback is on: a halt rolls the release back on every endpoint that applied it".to_string()
    } else {
        "auto_rollback is off: a halt pauses; an operator decides and runs a rollback command below".to_string()
    });
    let waves = match &release.rollout {
        Some(r) => r
            .waves
            .iter()
            .map(|w| {
                let mut s = w.name.clone();
                if let Some(sel) = &w.selector {
                    let _ = write!(s, ": {sel}");
                }
                if let Some(pc) = w.percent {
                    let _ = write!(s, ": {pc}% of the fleet");
                }
                if !w.bake.is_zero() {
                    let _ = write!(s, ", bake {}", duration(w.bake));
                }
                if w.approval {
                    s.push_str(", needs an approver");
                }
                s
            })
            .collect(),
        None => vec!["one wave: every endpoint of the product (no [rollout] in release.toml)".to_string()],
    };

    let mut rollback = vec![RollbackCommand {
        granularity: "release".into(),
        subject: release.version.clone(),
        undoes: {
            let mut parts = Vec::new();
            if !release.migrations.is_empty() {
                let ids: Vec<&str> = release.rollback_order().map(|m| m.id.as_str()).collect();
                parts.push(format!("every migration in reverse order ({})", ids.join(", ")));
            }
            if !release.flags.is_empty() {
                parts.push("every flag back to its previous value".to_string());
            }
            if parts.is_empty() {
                "nothing: the release has no migrations and no flags".to_string()
            } else {
                parts.join(" and ")
            }
        },
        fleet: fleet("release", None),
        endpoint: endpoint("release", None, &all_dbs),
        endpoint_release: Some(format!("rewind-agent rollback --release {dir} {}", all_dbs.join(" "))),
        note: None,
    }];
    for t in &release.targets {
        let ids: Vec<&str> = release.rollback_order().filter(|m| &m.target == t).map(|m| m.id.as_str()).collect();
        rollback.push(RollbackCommand {
            granularity: "target".into(),
            subject: t.clone(),
            undoes: if ids.is_empty() {
                format!("nothing on `{t}` (no migration of this release touches it)")
            } else {
                format!("the migrations of `{t}` in reverse order: {}", ids.join(", "))
            },
            fleet: fleet("target", Some(t)),
            endpoint: endpoint("target", Some(t), &[db(t)]),
            endpoint_release: None,
            note: None,
        });
    }
    for m in &release.migrations {
        let ids = with_dependents(release, &m.id);
        let staying: Vec<&str> =
            release.migrations_of(&m.target).filter(|x| !ids.contains(&x.id)).map(|x| x.id.as_str()).collect();
        let undoes = if ids.len() > 1 {
            format!(
                "{} together with what depends on it, in reverse order: {}",
                m.id,
                ids.iter().rev().cloned().collect::<Vec<_>>().join(", ")
            )
        } else {
            m.id.clone()
        };
        rollback.push(RollbackCommand {
            granularity: "migration".into(),
            subject: m.id.clone(),
            undoes,
            fleet: fleet("migration", Some(&m.id)),
            endpoint: endpoint("migration", Some(&m.id), &[db(&m.target)]),
            endpoint_release: None,
            note: (!staying.is_empty()).then(|| {
                format!(
                    "the agent undoes a target's migrations of a release together: while {} {} applied on `{}` it refuses this plan (exit 2, nothing changed) — use the `target {}` rollback",
                    staying.join(", "),
                    if staying.len() == 1 { "stays" } else { "stay" },
                    m.target,
                    m.target
                )
            }),
        });
    }
    for f in &release.flags {
        rollback.push(RollbackCommand {
            granularity: "flag".into(),
            subject: f.name.clone(),
            undoes: format!("{} back to {} (no data changes)", f.name, f.previous),
            fleet: fleet("flag", Some(&f.name)),
            endpoint: endpoint("flag", Some(&f.name), &[]),
            endpoint_release: None,
            note: None,
        });
    }
    let mut scopes = vec!["--scope fleet".to_string()];
    if let Some(r) = &release.rollout {
        for w in &r.waves {
            scopes.push(format!("--scope wave:{}", w.name));
        }
    }
    scopes.push("--scope cohort:SELECTOR".into());
    scopes.push("--scope agent:AGENT_ID".into());

    let mut verification: Vec<Query> = release
        .migrations
        .iter()
        .filter_map(|m| {
            m.verify.as_ref().map(|v| Query {
                kind: "verify.sql".into(),
                name: m.id.clone(),
                target: m.target.clone(),
                sql: v.sql.trim().to_string(),
                expect: "every row's first column is 1, at least one row (after apply)".into(),
                when: vec![],
            })
        })
        .collect();
    verification.extend(release.checks.iter().map(|c| {
        Query {
            kind: "check".into(),
            name: c.name.clone(),
            target: c.target.clone(),
            sql: c.sql.trim().to_string(),
            expect: c.expect.to_string(),
            when: c
                .when
                .iter()
                .map(|w| match w {
                    rewind_shared::release::CheckWhen::AfterApply => "after-apply".to_string(),
                    rewind_shared::release::CheckWhen::AfterRollback => "after-rollback".to_string(),
                })
                .collect(),
        }
    }));

    let restore_window = measure(release, samples)?;

    let first_wave =
        release.rollout.as_ref().and_then(|r| r.waves.first()).map_or("all".to_string(), |w| w.name.clone());
    let reason = triggers_first(release);
    let values = Values::for_release(release)
        .with(Variable::Wave, &first_wave)
        .with(Variable::AffectedCount, 12)
        .with(Variable::RestoreWindow, restore_window.phrase())
        .with(Variable::StartedAt, "2026-11-25 08:00 UTC")
        .with(Variable::Reason, reason);
    let example_values = Variable::ALL.iter().map(|v| (*v, values.get(*v).unwrap_or("unknown").to_string())).collect();
    let messages = Event::ALL
        .iter()
        .map(|e| {
            let t = release.templates.get(*e);
            let source = match &t.origin {
                TemplateOrigin::File(_) => format!("templates/{e}.md"),
                TemplateOrigin::Default => "built-in default".to_string(),
            };
            Message { event: *e, source, rendered: t.render(&values) }
        })
        .collect();

    let escalation = vec![
        format!("1. {} (on call) leads the incident and all communication: posts the messages of section 7, decides on a rollback.", release.on_call),
        format!("2. {} (release owner) answers for the migrations and the data: the verification queries, a failed rollback proof.", release.owner),
        if owners.flags.is_empty() {
            "3. No flags: nothing to escalate to flag owners.".to_string()
        } else {
            format!(
                "3. Flag owners decide on their flags: {}.",
                owners.flags.iter().map(|f| format!("{} → {}", f.flag, f.owner)).collect::<Vec<_>>().join(", ")
            )
        },
        "4. An agent that exits 3 (needs a human) printed the exact next command: run it on that endpoint, then tell the release owner.".to_string(),
    ];

    Ok(Runbook {
        product: release.name.clone(),
        version: release.version.clone(),
        sequence: release.sequence,
        app_version: release.app_version.clone(),
        dir: dir.to_string(),
        targets: release.targets.clone(),
        owners,
        changes,
        flags,
        triggers,
        halt,
        waves,
        rollback,
        scopes,
        verification,
        restore_window,
        example_values,
        messages,
        escalation,
    })
}

fn triggers_first(release: &Release) -> String {
    release.triggers.first().map_or_else(
        || "a failed check after the update".to_string(),
        |t| match (t.above, t.below) {
            (Some(a), _) => format!("{} above {a} within {}", t.metric, duration(t.window)),
            (_, Some(b)) => format!("{} below {b} within {}", t.metric, duration(t.window)),
            _ => t.metric.clone(),
        },
    )
}

/// Copies `src` (and its `-wal`/`-journal`) by plain reads: the sample is
/// never opened by SQLite, so its bytes and mtime stay as they were.
fn copy_sample(src: &Path, dest: &Path) -> Result<()> {
    target::check_is_sqlite(src)?;
    let copy = |from: &Path, to: &Path| -> Result<()> {
        std::fs::copy(from, to).map(|_| ()).map_err(|e| {
            Error::BadInput(format!(
                "cannot copy sample {} to {}: {e}; check the --sample path and free space",
                from.display(),
                to.display()
            ))
        })?;
        let mut perms =
            std::fs::metadata(to).map_err(|e| Error::BadInput(format!("{}: {e}", to.display())))?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(to, perms).map_err(|e| Error::BadInput(format!("{}: {e}", to.display())))
    };
    copy(src, dest)?;
    for suffix in ["-wal", "-journal"] {
        let side = PathBuf::from(format!("{}{suffix}", src.display()));
        if side.exists() {
            copy(&side, &PathBuf::from(format!("{}{suffix}", dest.display())))?;
        }
    }
    Ok(())
}

/// The restore drill: per sample, a snapshot of a copy, then the agent's
/// `snapshot verify --restore-test` (restore into a scratch file, prove it
/// by digest, time it).
fn measure(release: &Release, samples: &BTreeMap<String, PathBuf>) -> Result<RestoreWindow> {
    let unmeasured: Vec<String> = release.targets.iter().filter(|t| !samples.contains_key(*t)).cloned().collect();
    if samples.is_empty() {
        return Ok(RestoreWindow { measured: false, max_ms: None, drills: Vec::new(), unmeasured });
    }
    let work = tempfile::Builder::new().prefix("rewind-runbook-").tempdir().map_err(|e| {
        Error::BadInput(format!("cannot create a scratch directory: {e}; set TMPDIR to a writable place"))
    })?;
    let state = State::open(&work.path().join("state"))?;
    let mut drills = Vec::new();
    for (t, file) in samples {
        let copy = work.path().join(format!("{t}.db"));
        copy_sample(file, &copy)?;
        let origin =
            Origin { label: Some("runbook restore drill".into()), target: Some(t.clone()), ..Origin::default() };
        let (snap, _) = snapshot::create(&state, &copy, &origin)?;
        let report = snapshot::verify(&state, &snap, true)?;
        if !report.ok {
            return Err(Error::Failed(format!(
                "restore drill for {t} ({}): {}; the sample is untouched",
                file.display(),
                report.problem.unwrap_or_default()
            )));
        }
        drills.push(Drill {
            target: t.clone(),
            file: file.clone(),
            bytes: snap.size,
            digest: snap.digest.clone(),
            restore_ms: report.restore_ms.unwrap_or_default(),
        });
    }
    let max_ms = drills.iter().map(|d| d.restore_ms).max();
    Ok(RestoreWindow { measured: true, max_ms, drills, unmeasured })
}

fn code(out: &mut String, cmd: &str) {
    let _ = writeln!(out, "```sh\n{cmd}\n```");
}

/// The playbook as Markdown.
#[must_use]
pub fn to_markdown(b: &Runbook) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Incident playbook: {} {}\n", b.product, b.version);
    let _ = writeln!(
        o,
        "Release `{}` (sequence {}, app {}), targets: {}. Generated by `rewindctl runbook {}` from the release directory; \
         keep it next to the release and re-generate it when the release changes.\n",
        b.version,
        b.sequence,
        b.app_version,
        b.targets.join(", "),
        b.dir
    );

    o.push_str("## 1. Owners\n\n");
    let _ = writeln!(o, "- Release owner: **{}** (answers for the migrations and the data)", b.owners.owner);
    let _ = writeln!(o, "- On call: **{}** (leads the incident and its communication)", b.owners.on_call);
    for f in &b.owners.flags {
        let _ =
            writeln!(o, "- Flag `{}`: **{}**{}", f.flag, f.owner, if f.kill_switch { " (kill switch)" } else { "" });
    }

    o.push_str("\n## 2. What the release changes\n\n");
    if b.changes.is_empty() {
        o.push_str("No migrations.\n");
    } else {
        o.push_str("Migrations in apply order (a rollback runs them in exact reverse):\n\n");
        o.push_str("| # | migration | target | after | reversible | how it is undone |\n|---|---|---|---|---|---|\n");
        for c in &b.changes {
            let after = if c.after.is_empty() { "-".to_string() } else { c.after.join(", ") };
            let rev = match (c.reversible, c.undo) {
                (true, "down") => "yes (down.sql)",
                (true, _) => "yes (preserve)",
                (false, _) => "no (restore)",
            };
            let _ = writeln!(o, "| {} | {} | {} | {} | {} | {} |", c.order, c.id, c.target, after, rev, c.how);
        }
    }
    if !b.flags.is_empty() {
        o.push_str("\nFlags:\n\n");
        for f in &b.flags {
            let _ = writeln!(o, "- {f}");
        }
    }

    o.push_str("\n## 3. Triggers and halt rules\n\n");
    if b.triggers.is_empty() {
        o.push_str("No `[[trigger]]`: only the halt rules below stop a rollout.\n");
    } else {
        o.push_str("Health signals that demand a rollback:\n\n");
        for t in &b.triggers {
            let _ = writeln!(o, "- {t}");
        }
    }
    o.push_str("\nA rollout halts when:\n\n");
    for h in &b.halt {
        let _ = writeln!(o, "- {h}");
    }
    o.push_str("\nWaves, in order:\n\n");
    for w in &b.waves {
        let _ = writeln!(o, "- {w}");
    }

    o.push_str("\n## 4. Rollback commands\n\n");
    let _ = writeln!(
        o,
        "**Fleet** (through the coordinator; the rollback plans are pre-signed, no signing key needed). \
         The coordinator's rollback delivery is coming: until `rewindctl rollback` reaches endpoints, use the endpoint commands. \
         `--scope fleet` is every endpoint that applied; narrow it to {}a cohort \
         (`--scope cohort:SELECTOR`, a label selector such as `ring=canary,os=windows`) or one endpoint \
         (`--scope agent:AGENT_ID`).\n",
        {
            let waves: Vec<String> =
                b.scopes.iter().filter(|s| s.starts_with("--scope wave:")).map(|s| format!("`{s}`")).collect();
            if waves.is_empty() { String::new() } else { format!("a wave ({}), ", waves.join(", ")) }
        }
    );
    let _ = writeln!(
        o,
        "**Endpoint, offline** (on the device, as the app's user): needs the signed bundle `{}-{}.bundle.json` \
         (`rewindctl release build` + `release sign`) and `trust.toml`; replace {} with the files the endpoint's \
         agent.toml maps the targets to. Exit 0 done and proven, 1 failed but back in a verified safe state, \
         2 refused (nothing changed), 3 needs a human (the next command is printed).\n",
        b.product,
        b.version,
        b.targets.iter().map(|t| format!("`{t}.db`")).collect::<Vec<_>>().join(", ")
    );
    let mut last = String::new();
    for r in &b.rollback {
        if r.granularity != last {
            let _ = writeln!(o, "### By {}\n", r.granularity);
            last.clone_from(&r.granularity);
        }
        let _ = writeln!(o, "**{} `{}`** — undoes {}.\n", r.granularity, r.subject, r.undoes);
        o.push_str("Fleet:\n\n");
        code(&mut o, &r.fleet);
        o.push_str("\nEndpoint, with the bundle:\n\n");
        code(&mut o, &r.endpoint);
        if let Some(e) = &r.endpoint_release {
            o.push_str("\nEndpoint, from the release directory (unsigned; whole release only):\n\n");
            code(&mut o, e);
        }
        if let Some(n) = &r.note {
            let _ = writeln!(o, "\nNote: {n}.");
        }
        o.push('\n');
    }

    o.push_str("## 5. Verification queries\n\n");
    o.push_str(
        "Run them on an endpoint's database (read-only is enough) to see which state it is in. \
         The proof of a whole target is its digest: `rewind-agent checksum --db TARGET.db --json`; \
         across the fleet: ",
    );
    let _ = writeln!(o, "`rewindctl fleet verify {} {}`.\n", b.product, b.version);
    for q in &b.verification {
        let when = if q.when.is_empty() { String::new() } else { format!(", runs {}", q.when.join(" and ")) };
        let _ = writeln!(o, "**{} `{}`** on `{}` — passes when: {}{when}.\n", q.kind, q.name, q.target, q.expect);
        let _ = writeln!(o, "```sql\n{}\n```\n", q.sql);
    }
    if b.verification.is_empty() {
        o.push_str("The release has no verify.sql and no checks: only digests prove its state.\n\n");
    }

    o.push_str("## 6. Restore window\n\n");
    let w = &b.restore_window;
    match w.max_ms {
        Some(ms) => {
            let _ = writeln!(
                o,
                "Restore window: **{ms} ms** per endpoint (the slowest sample), measured by snapshotting a copy of each sample \
                 and restoring it into a scratch file with the agent's `snapshot verify --restore-test`. The samples were not touched.\n"
            );
            o.push_str("| target | sample | size | restore |\n|---|---|---|---|\n");
            for d in &w.drills {
                let _ =
                    writeln!(o, "| {} | {} | {} bytes | {} ms |", d.target, d.file.display(), d.bytes, d.restore_ms);
            }
            if !w.unmeasured.is_empty() {
                let _ = writeln!(o, "\nNot measured (no sample): {}.", w.unmeasured.join(", "));
            }
            o.push('\n');
        }
        None => {
            let _ = writeln!(
                o,
                "Restore window: not measured, run with --sample (e.g. `rewindctl runbook {} {}`).\n",
                b.dir,
                b.targets.iter().map(|t| format!("--sample {t}=./{t}.db")).collect::<Vec<_>>().join(" ")
            );
        }
    }
    o.push_str(
        "On an endpoint, `rewind-agent snapshot verify --all --restore-test` measures it on the real data. \
         Only `rollback = \"restore\"` steps restore snapshots; down.sql steps usually take less.\n\n",
    );

    o.push_str("## 7. Communication\n\n");
    let _ = writeln!(
        o,
        "{} posts these (status page and webhooks will render them from the same templates). Example values: {}.\n",
        b.owners.on_call,
        b.example_values.iter().map(|(k, v)| format!("`{k}` = {v}")).collect::<Vec<_>>().join(", ")
    );
    for m in &b.messages {
        let _ = writeln!(o, "### {} ({})\n", m.event, m.source);
        // Quoted, so a template's own headings stay inside its message.
        let _ = writeln!(o, "> **{}**\n>", m.rendered.title_markdown);
        for line in m.rendered.markdown.trim_end().lines() {
            o.push_str(if line.is_empty() { ">" } else { "> " });
            o.push_str(line);
            o.push('\n');
        }
        o.push('\n');
    }

    o.push_str("## 8. Escalation\n\n");
    for e in &b.escalation {
        let _ = writeln!(o, "{e}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Release {
        Release::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notes-app/releases").join(name)).unwrap()
    }

    #[test]
    fn a_release_without_rollout_flags_or_triggers_says_only_what_applies() {
        let r = example("2026.11.1-bad");
        let md = to_markdown(&build(&r, "rel", &BTreeMap::new()).unwrap());
        assert!(md.contains("No `[[trigger]]`: only the halt rules below stop a rollout."), "{md}");
        assert!(!md.contains("a trigger above fires"), "{md}");
        assert!(md.contains("- one wave: every endpoint of the product (no [rollout] in release.toml)"), "{md}");
        assert!(md.contains("narrow it to a cohort (`--scope cohort:SELECTOR`"), "{md}");
        assert!(
            md.contains("**release `2026.11.1`** — undoes every migration in reverse order (0001_split_title).\n"),
            "{md}"
        );
        assert!(!md.contains("()") && !md.contains("Flag `"), "{md}");
        assert!(md.contains("3. No flags: nothing to escalate to flag owners."), "{md}");
    }

    #[test]
    fn samples_must_name_release_targets_once() {
        let r = example("2026.11.0");
        let err = |args: &[&str]| {
            parse_samples(&r, &args.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_err().to_string()
        };
        assert_eq!(err(&["notes"]), "--sample notes: expected TARGET=FILE, e.g. --sample notes=./notes.db");
        assert_eq!(err(&["notes=a.db", "notes=b.db"]), "--sample notes=...: given twice; give one sample per target");
        assert!(err(&["x=a.db"]).contains("no target `x` (targets: notes, settings)"));
        let ok = parse_samples(&r, &["settings=s.db".to_string()]).unwrap();
        assert_eq!(ok.get("settings"), Some(&PathBuf::from("s.db")));
    }
}
