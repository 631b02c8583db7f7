//! rewind-bench: Rewind's timing goals (issue "Benchmarks", docs/benchmarks.md)
//! measured side by side with the peers they are promised against, in one
//! run, on a generated database. Every figure is a whole process timed from
//! outside; ours and the peer run in turn (A B, B A, ...) so a machine that
//! drifts affects both; the ratio is the median of the per-pair ratios.
//!
//! scripts/bench.sh installs the peers (sqlite3, Sqitch, dbhash) and runs
//! this binary; run it alone with `--help`.

mod generate;
mod measure;
mod release;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::measure::{Row, Tools};

#[derive(Parser)]
#[command(
    name = "rewind-bench",
    about = "Measure Rewind's snapshot, digest, restore and apply against cp+sync, sqlite3, dbhash and Sqitch",
    after_help = "Example: rewind-bench --size-mb 300 --dir /var/tmp/rewind-bench\n         rewind-bench --quick   # 5 MB smoke run for CI"
)]
struct Opts {
    /// Size of the generated database in MiB.
    #[arg(long, default_value_t = 300)]
    size_mb: u64,
    /// Smoke run: a 5 MiB database and 2 repetitions (overrides --size-mb, --reps).
    #[arg(long)]
    quick: bool,
    /// Counted repetitions of each command (after one warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Work directory on a real disk (not tmpfs); a fresh subdirectory is made
    /// in it and removed afterwards.
    #[arg(long, env = "REWIND_BENCH_DIR", default_value = "target/bench-work")]
    dir: PathBuf,
    /// The rewind-agent binary (default: next to this binary).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// SQLite's dbhash tool (default: `dbhash` on PATH; without one the digest
    /// is compared with `sha256sum` of the file, and the output says so).
    #[arg(long, env = "REWIND_BENCH_DBHASH")]
    dbhash: Option<PathBuf>,
    /// Keep the work directory (generated databases) afterwards.
    #[arg(long)]
    keep: bool,
    /// Only these cases (comma-separated: snapshot,digest,restore,overhead,apply,memory).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> Result<()> {
    let mut o = Opts::parse();
    if o.quick {
        o.size_mb = 5;
        o.reps = 2;
    }
    let agent = match &o.agent {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("rewind-agent"),
    };
    if !agent.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --locked -p rewind-agent) or pass --agent",
            agent.display()
        );
    }
    std::fs::create_dir_all(&o.dir).with_context(|| format!("create {}", o.dir.display()))?;
    let work = o.dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let work = std::fs::canonicalize(&work)?;
    let tools = Tools::find(agent, o.dbhash.clone(), &work)?;
    let result = run(&o, &tools, &work);
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn wanted(o: &Opts, case: &str) -> bool {
    o.only.is_empty() || o.only.iter().any(|c| c == case)
}

fn run(o: &Opts, tools: &Tools, work: &Path) -> Result<()> {
    println!(
        "rewind-bench: {} MiB database, {} counted runs each after 1 warm-up, work dir {}",
        o.size_mb,
        o.reps,
        work.display()
    );
    tools.describe();
    let db = work.join("app.db");
    let started = std::time::Instant::now();
    generate::database(&db, o.size_mb)?;
    let size = std::fs::metadata(&db)?.len();
    println!(
        "generated {} ({:.1} MiB) in {:.1}s",
        db.display(),
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    println!();
    let mut rows: Vec<Row> = Vec::new();
    let m = measure::Bench { tools, work, db: &db, reps: o.reps };
    if wanted(o, "snapshot") {
        rows.extend(m.snapshot()?);
    }
    if wanted(o, "digest") {
        rows.extend(m.digest()?);
    }
    if wanted(o, "restore") {
        rows.extend(m.restore()?);
    }
    if wanted(o, "overhead") {
        rows.extend(m.fixed_overhead()?);
    }
    if wanted(o, "apply") {
        rows.extend(m.apply_rollback()?);
    }
    if wanted(o, "memory") {
        let small = work.join("small.db");
        generate::database(&small, (o.size_mb / 10).max(1))?;
        rows.extend(m.memory(&small)?);
        let _ = std::fs::remove_file(&small);
    }
    println!();
    measure::print_table(&rows);
    let missed = rows.iter().filter(|r| r.pass == Some(false)).count();
    println!();
    println!("{} goal(s) met, {missed} missed", rows.iter().filter(|r| r.pass == Some(true)).count());
    Ok(())
}
