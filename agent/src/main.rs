//! rewind-agent command line. Exit codes (DESIGN.md §5): 0 done; 1 failed,
//! data back in a verified safe state; 2 bad input, nothing changed; 3 needs
//! a human (the next command is printed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `println!` that ignores a closed stdout (`rewind-agent snapshot list |
/// head`): the command's work is done, only its reader went away, and that
/// is no reason to panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use rewind_agent::error::{Error, Result};
use rewind_agent::plan::Report;
use rewind_agent::snapshot::{self, Origin};
use rewind_agent::state::{self, State};
use rewind_agent::{apply, crash, flags, plan, recover, rollback, target};
use rewind_shared::Release;
use rewind_shared::digest::database_digest;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "rewind-agent",
    version,
    about = "Rewind endpoint agent: snapshots, reversible migrations, flags, proofs",
    after_help = "Example: rewind-agent apply --release releases/2026.11.0 --db notes=notes.db --db settings=settings.db\n\n\
                  Exit codes: 0 done; 1 failed, data back in a verified safe state; 2 bad input, nothing changed; \
                  3 needs a human (the next command is printed).\n\n\
                  Environment:\n  \
                  REWIND_STATE            state directory when --state is not given\n  \
                  REWIND_BUSY_TIMEOUT_MS  how long to wait for the app's database lock (default 10000); a target \
                  still locked after that is refused before anything changes (exit 2)\n  \
                  REWIND_SNAPSHOT_OVERLAP on, off or auto (default): verify an apply's snapshots while the first \
                  migration runs (auto: with 4 or more CPUs)\n  \
                  REWIND_LOG              log filter (default warn)\n  \
                  REWIND_CRASH_AT         fault-injection builds only: abort at a crash point (debug crash-points)"
)]
struct Cli {
    /// State directory (default: $REWIND_STATE, else the OS per-user state dir).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the content digest (rewind-digest-1) of a SQLite database.
    ///
    /// Example: rewind-agent checksum --db notes.db --json
    Checksum {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create, list, verify, restore and prune snapshots.
    #[command(
        subcommand,
        after_help = "Example: rewind-agent snapshot create --db notes.db --label \"before cleanup\""
    )]
    Snapshot(SnapshotCmd),
    /// Apply a release: snapshot, migrate, verify, set flags, check.
    ///
    /// Example: rewind-agent apply --release releases/2026.11.0 --db notes=notes.db --db settings=settings.db
    ///
    /// Signed: rewind-agent apply --bundle notes.bundle.json --trust trust.toml --db notes=notes.db --db settings=settings.db
    ///
    /// Turn a flag of the installed release on (e.g. an activate = "manual" one), by its pre-signed activation plan:
    /// rewind-agent apply --bundle notes.bundle.json --trust trust.toml --flag beta_export
    Apply(PlanArgs),
    /// Roll a release back and prove it by digest.
    ///
    /// Example: rewind-agent rollback --release releases/2026.11.0 --db notes=notes.db --db settings=settings.db
    ///
    /// Signed, pre-signed per granularity: rewind-agent rollback --bundle notes.bundle.json --trust trust.toml
    /// --granularity target --subject settings --db settings=settings.db
    Rollback(PlanArgs),
    /// Installed releases, interrupted plans (after recovering them), snapshots.
    ///
    /// Example: rewind-agent status --json
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Finalize the installed release of a product: drop its preserved copies and unpin its snapshots.
    ///
    /// After this, a down.sql rollback that needs preserved data is refused; snapshots of the
    /// release may be pruned. Run it once the release is known good (Mender's `commit`).
    ///
    /// Example: rewind-agent finalize notes
    Finalize {
        /// Product name from release.toml.
        product: String,
        #[arg(long)]
        json: bool,
    },
    /// Current feature-flag values.
    ///
    /// Example: rewind-agent flags --json
    Flags {
        #[arg(long)]
        json: bool,
    },
    /// Verify the local audit chain.
    #[command(subcommand, after_help = "Example: rewind-agent audit verify")]
    Audit(AuditCmd),
    /// Signed results (one per finished or refused plan) and whether the coordinator acknowledged them.
    ///
    /// Each line: report id, plan, status, delivered yes/no. --json prints every report with its exact
    /// signed payload (hex) and signature. --ack ID marks a report delivered by hand (e.g. after carrying
    /// it to the coordinator offline); acking twice changes nothing.
    ///
    /// Example: rewind-agent outbox --json
    Outbox {
        #[arg(long)]
        json: bool,
        /// Mark report ID delivered.
        #[arg(long, value_name = "ID")]
        ack: Option<String>,
    },
    /// Tools for tests.
    #[command(subcommand, after_help = "Example: rewind-agent debug crash-points")]
    Debug(DebugCmd),
    /// Enroll this endpoint with a coordinator, using a token from `rewindctl token create`.
    ///
    /// Example: rewind-agent enroll --config agent.toml --token rwt_0123...
    Enroll {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// One-time enrollment token (or REWIND_ENROLL_TOKEN).
        #[arg(long, env = "REWIND_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: one mTLS stream to the coordinator, hello with inventory, heartbeats, reconnects.
    ///
    /// Example: rewind-agent run --config agent.toml
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Args)]
struct PlanArgs {
    /// Release directory (holds release.toml).
    #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
    release: Option<PathBuf>,
    /// Signed bundle (rewindctl release build/sign) instead of --release; needs --trust.
    #[arg(long, requires = "trust")]
    bundle: Option<PathBuf>,
    /// Trust root (trust.toml) the bundle's signatures are checked against; pinned in the state dir on first use.
    #[arg(long, requires = "bundle")]
    trust: Option<PathBuf>,
    /// With --bundle on rollback: release, target, migration or flag.
    #[arg(long, default_value = "release", requires = "bundle")]
    granularity: rewind_shared::bundle::Granularity,
    /// With --granularity target|migration|flag: which one.
    #[arg(long, requires = "bundle")]
    subject: Option<String>,
    /// On apply: only turn this flag of the installed release on (its `value`); no --db needed.
    #[arg(long, value_name = "NAME")]
    flag: Option<String>,
    /// TARGET=FILE: which database file a release target is on this endpoint.
    #[arg(long = "db", value_name = "TARGET=FILE")]
    dbs: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Snapshot a live database (the app may keep writing).
    ///
    /// Example: rewind-agent snapshot create --db notes.db --label "before cleanup"
    Create {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List snapshots, oldest first.
    ///
    /// Example: rewind-agent snapshot list --json
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-check integrity and digest; --restore-test also times a restore.
    ///
    /// Example: rewind-agent snapshot verify --all --restore-test
    Verify {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[arg(long)]
        restore_test: bool,
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into a database, atomically, and prove it.
    ///
    /// Example: rewind-agent snapshot restore snap-0123456789abcdef --db notes.db
    Restore {
        id: String,
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Delete all but the newest N unpinned snapshots per database.
    ///
    /// Example: rewind-agent snapshot prune --keep 3
    Prune {
        #[arg(long, default_value_t = 5)]
        keep: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check every entry's hash, link and signature.
    ///
    /// Example: rewind-agent audit verify
    Verify {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DebugCmd {
    /// List crash points for REWIND_CRASH_AT (fault-injection builds).
    ///
    /// Example: REWIND_CRASH_AT=$(rewind-agent debug crash-points | head -1) rewind-agent apply ...
    CrashPoints,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("REWIND_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rewind-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn print_json(v: &impl serde::Serialize) {
    out!("{}", serde_json::to_string_pretty(v).expect("output serializes"));
}

/// Opens the state directory and finishes interrupted plans first.
fn open_state(arg: Option<PathBuf>) -> Result<(State, Vec<Report>)> {
    let st = State::open(&state::default_dir(arg))?;
    let recovered = recover::recover(&st)?;
    for r in &recovered {
        eprintln!("rewind-agent: recovered interrupted plan {}: {}", r.plan, r.message);
    }
    Ok((st, recovered))
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Enroll { config, token, json } => {
            let cfg = rewind_agent::daemon::config::AgentConfig::load(&config)?;
            let state = cfg.state_dir(cli.state);
            let done = rewind_agent::daemon::enroll::enroll(&cfg, &state, &token)?;
            if json {
                print_json(&done);
            } else {
                println!("enrolled as {} with {}", done.agent_id, done.coordinator);
            }
            Ok(0)
        }
        Command::Run { config } => {
            let cfg = rewind_agent::daemon::config::AgentConfig::load(&config)?;
            let state = cfg.state_dir(cli.state);
            rewind_agent::daemon::run::run(&cfg, &state)?;
            Ok(0)
        }
        Command::Checksum { db, json } => checksum(&db, json),
        Command::Debug(DebugCmd::CrashPoints) => {
            for (p, what) in crash::POINTS {
                out!("{p}  {what}");
            }
            if !cfg!(feature = "fault-injection") {
                eprintln!("note: this build ignores REWIND_CRASH_AT; build with --features fault-injection");
            }
            Ok(0)
        }
        Command::Snapshot(cmd) => {
            let (st, _) = open_state(cli.state)?;
            snapshot_cmd(&st, cmd)
        }
        Command::Apply(args) => {
            let (st, _) = open_state(cli.state)?;
            let report = match (&args.bundle, &args.trust, &args.flag) {
                (Some(b), Some(t), Some(flag)) => rewind_agent::bundle::activate(&st, b, t, flag)?,
                (Some(b), Some(t), None) => rewind_agent::bundle::apply(&st, b, t, &args.dbs)?,
                (_, _, Some(flag)) => {
                    let dir = args.release.as_ref().ok_or_else(|| {
                        Error::BadInput("--flag needs --release DIR or --bundle FILE --trust FILE".into())
                    })?;
                    apply::activate_flag(&st, &Release::load(dir)?, flag)?
                }
                _ => {
                    let (release, dbs) = load(&args)?;
                    apply::apply(&st, &release, &dbs)?
                }
            };
            Ok(print_report(&report, args.json))
        }
        Command::Rollback(args) => {
            if args.flag.is_some() {
                return Err(Error::BadInput(
                    "--flag goes with apply (turn a flag on); to take a flag back: rollback --granularity flag --subject NAME"
                        .into(),
                ));
            }
            let (st, _) = open_state(cli.state)?;
            if let (Some(b), Some(t)) = (&args.bundle, &args.trust) {
                let report =
                    rewind_agent::bundle::rollback(&st, b, t, &args.dbs, args.granularity, args.subject.as_deref())?;
                return Ok(print_report(&report, args.json));
            }
            let (release, dbs) = load(&args)?;
            let report = rollback::rollback(&st, &release, &dbs)?;
            Ok(print_report(&report, args.json))
        }
        Command::Status { json } => {
            let (st, recovered) = open_state(cli.state)?;
            status(&st, &recovered, json)
        }
        Command::Finalize { product, json } => {
            let (st, _) = open_state(cli.state)?;
            let f = rewind_agent::finalize::finalize(&st, &product)?;
            if json {
                print_json(&f);
            } else {
                println!(
                    "{} {} (sequence {}) finalized: {} preserved cop(ies) dropped, {} snapshot(s) unpinned",
                    f.product,
                    f.release,
                    f.sequence,
                    f.dropped.len(),
                    f.unpinned.len()
                );
            }
            Ok(0)
        }
        Command::Flags { json } => {
            let (st, _) = open_state(cli.state)?;
            let all = flags::all(&st)?;
            if json {
                print_json(&all);
            } else if all.is_empty() {
                out!("no flags set");
            } else {
                for (product, values) in all {
                    for (k, v) in values {
                        out!("{product}  {k} = {v}");
                    }
                }
            }
            Ok(0)
        }
        Command::Outbox { json, ack } => {
            let (st, _) = open_state(cli.state)?;
            outbox_cmd(&st, json, ack.as_deref())
        }
        Command::Audit(AuditCmd::Verify { json }) => {
            let (st, _) = open_state(cli.state)?;
            let (n, head) = st.verify_audit()?;
            if json {
                print_json(
                    &json!({"ok": true, "entries": n, "head": head, "key": hex::encode(st.key().verifying_key().as_bytes())}),
                );
            } else {
                out!("audit chain ok: {n} entries, head {head}");
            }
            Ok(0)
        }
    }
}

fn outbox_cmd(st: &State, json: bool, ack: Option<&str>) -> Result<u8> {
    if let Some(id) = ack {
        let a = rewind_agent::outbox::ack_by_hand(st, id)?;
        let already = a == rewind_agent::outbox::Ack::AlreadyDelivered;
        if json {
            print_json(&json!({"id": id, "delivered": true, "already": already}));
        } else {
            out!("{id}: {}", if already { "was already delivered" } else { "marked delivered" });
        }
        return Ok(0);
    }
    let items = rewind_agent::outbox::all(st)?;
    if json {
        print_json(&json!({"pending": items.iter().filter(|i| !i.delivered).count(), "reports": items}));
    } else if items.is_empty() {
        out!("outbox empty: no plan has finished or been refused here");
    } else {
        for i in &items {
            out!(
                "{}  {}  {}  chain {}  delivered {}",
                i.id,
                if i.plan.is_empty() { "-" } else { &i.plan },
                i.status,
                i.chain_seq,
                i.delivered_at
                    .as_deref()
                    .map_or_else(|| format!("no (attempts {})", i.attempts), |t| format!("yes ({t})"))
            );
        }
    }
    Ok(0)
}

fn load(args: &PlanArgs) -> Result<(Release, BTreeMap<String, PathBuf>)> {
    let dir = args
        .release
        .as_ref()
        .ok_or_else(|| Error::BadInput("give --release DIR or --bundle FILE --trust FILE".into()))?;
    let release = Release::load(dir)?;
    let dbs = rewind_shared::release::map_targets(&release, &args.dbs).map_err(Error::BadInput)?;
    Ok((release, dbs))
}

fn checksum(db: &Path, json: bool) -> Result<u8> {
    target::check_is_sqlite(db)?;
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| target::classify(db, e))?;
    conn.busy_timeout(target::busy_timeout()).map_err(|e| target::classify(db, e))?;
    let d = database_digest(&conn).map_err(|e| target::classify(db, e))?;
    if json {
        print_json(&d);
    } else {
        out!("{}  {}", d.digest, db.display());
        out!("schema {}", d.schema);
        for t in &d.tables {
            out!("table {} rows={} {}", t.name, t.rows, t.digest);
        }
    }
    Ok(0)
}

fn print_report(r: &Report, json: bool) -> u8 {
    let code = if r.status == "failed" { 1 } else { 0 };
    if json {
        print_json(r);
        return code;
    }
    out!("{}", r.message);
    for t in &r.targets {
        out!(
            "  {} ({}): {} -> {}{}{}",
            t.name,
            t.db.display(),
            t.before.as_deref().unwrap_or("-"),
            t.after.as_deref().unwrap_or("-"),
            t.snapshot.as_deref().map(|s| format!(" [snapshot {s}]")).unwrap_or_default(),
            t.proof.as_deref().map(|p| format!(" data {p}")).unwrap_or_default(),
        );
        if t.lost_writes == Some(true) {
            out!("    restored from snapshot: writes made after the apply were lost");
        }
    }
    for s in &r.steps {
        out!(
            "  {:<40} {:>7} ms{}",
            s.step,
            s.millis,
            s.reversible.map(|r| format!("  reversible: {}", if r { "yes" } else { "no" })).unwrap_or_default()
        );
    }
    for c in &r.checks {
        out!("  check {:<30} {} (expect {}) {}", c.name, c.value, c.expect, if c.ok { "ok" } else { "FAILED" });
    }
    code
}

fn status(st: &State, recovered: &[Report], json: bool) -> Result<u8> {
    let mut stmt = st
        .db
        .prepare("SELECT product, release, sequence, plan_id, updated FROM installed ORDER BY product")
        .map_err(|e| Error::Sqlite { context: "status".into(), source: e })?;
    let installed: Vec<serde_json::Value> = stmt
        .query_map([], |r| {
            Ok(json!({"product": r.get::<_, String>(0)?, "release": r.get::<_, String>(1)?, "sequence": r.get::<_, i64>(2)?,
                      "plan": r.get::<_, String>(3)?, "updated": r.get::<_, String>(4)?}))
        })
        .and_then(Iterator::collect)
        .map_err(|e| Error::Sqlite { context: "status".into(), source: e })?;
    let mut stmt = st
        .db
        .prepare("SELECT id, kind, product, release, state, started, result FROM plans WHERE state = 'needs_human' ORDER BY started")
        .map_err(|e| Error::Sqlite { context: "status".into(), source: e })?;
    let stuck: Vec<serde_json::Value> = stmt
        .query_map([], |r| {
            let result: Option<String> = r.get(6)?;
            let message = result.and_then(|s| serde_json::from_str::<Report>(&s).ok()).map(|r| r.message);
            Ok(json!({"plan": r.get::<_, String>(0)?, "kind": r.get::<_, String>(1)?, "product": r.get::<_, String>(2)?,
                      "release": r.get::<_, String>(3)?, "started": r.get::<_, String>(5)?, "message": message}))
        })
        .and_then(Iterator::collect)
        .map_err(|e| Error::Sqlite { context: "status".into(), source: e })?;
    let snaps = snapshot::list(st)?;
    let last = plan::last_plans(st, 5)?;
    if json {
        print_json(&json!({
            "state": st.root, "installed": installed, "recovered": recovered, "needs_human": stuck,
            "snapshots": snaps.len(), "pinned_snapshots": snaps.iter().filter(|s| s.pinned).count(), "recent_plans": last,
        }));
    } else {
        out!("state {}", st.root.display());
        if installed.is_empty() {
            out!("no release installed");
        }
        for i in &installed {
            out!(
                "installed {} {} (sequence {}, plan {})",
                i["product"].as_str().unwrap_or(""),
                i["release"].as_str().unwrap_or(""),
                i["sequence"],
                i["plan"].as_str().unwrap_or("")
            );
        }
        for s in &stuck {
            out!(
                "NEEDS A HUMAN: plan {} ({} {}): {}",
                s["plan"].as_str().unwrap_or(""),
                s["kind"].as_str().unwrap_or(""),
                s["release"].as_str().unwrap_or(""),
                s["message"].as_str().unwrap_or("")
            );
        }
        out!("{} snapshot(s), {} pinned", snaps.len(), snaps.iter().filter(|s| s.pinned).count());
        for p in &last {
            out!(
                "plan {} {} {} {} -> {}",
                p["id"].as_str().unwrap_or(""),
                p["kind"].as_str().unwrap_or(""),
                p["product"].as_str().unwrap_or(""),
                p["release"].as_str().unwrap_or(""),
                p["state"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if stuck.is_empty() { 0 } else { 3 })
}

fn snapshot_cmd(st: &State, cmd: SnapshotCmd) -> Result<u8> {
    match cmd {
        SnapshotCmd::Create { db, label, json } => {
            let (snap, _) = snapshot::create(st, &db, &Origin { label, ..Origin::default() })?;
            if json {
                print_json(&snap);
            } else {
                out!("snapshot {} of {}: {} ({} bytes)", snap.id, snap.source.display(), snap.digest, snap.size);
            }
            Ok(0)
        }
        SnapshotCmd::List { json } => {
            let all = snapshot::list(st)?;
            if json {
                print_json(&all);
            } else {
                for s in all {
                    out!(
                        "{}  {}  {}  {} bytes  {}{}{}",
                        s.id,
                        s.created,
                        s.source.display(),
                        s.size,
                        s.digest,
                        if s.pinned { "  pinned" } else { "" },
                        s.label.map(|l| format!("  \"{l}\"")).unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        SnapshotCmd::Verify { id, all, restore_test, json } => {
            let snaps = match (id, all) {
                (Some(id), false) => vec![snapshot::get(st, &id)?],
                (None, true) => snapshot::list(st)?,
                _ => return Err(Error::BadInput("snapshot verify: give a snapshot ID or --all".into())),
            };
            let mut reports = Vec::new();
            for s in &snaps {
                reports.push(snapshot::verify(st, s, restore_test)?);
            }
            let ok = reports.iter().all(|r| r.ok);
            if json {
                print_json(&reports);
            } else {
                for r in &reports {
                    match (&r.problem, r.restore_ms) {
                        (Some(p), _) => out!("{}  BAD: {p}", r.id),
                        (None, Some(ms)) => out!("{}  ok, restore window {ms} ms", r.id),
                        (None, None) => out!("{}  ok", r.id),
                    }
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
        SnapshotCmd::Restore { id, db, json } => {
            let s = snapshot::get(st, &id)?;
            let r = snapshot::restore(st, &s, &db)?;
            if json {
                print_json(&r);
            } else {
                out!("restored {} into {} in {} ms; digest {} proven", r.snapshot, r.db.display(), r.millis, r.digest);
            }
            Ok(0)
        }
        SnapshotCmd::Prune { keep, json } => {
            let removed = snapshot::prune(st, keep)?;
            if json {
                print_json(&json!({"removed": removed}));
            } else {
                out!("removed {} snapshot(s)", removed.len());
            }
            Ok(0)
        }
    }
}
