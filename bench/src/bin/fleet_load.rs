//! `fleet_load`: the fleet-scale benchmark (issue 5 "Benchmarks", issue 8
//! item 5). For each N and each store asked for (`--store`: the default
//! SQLite store, and/or PostgreSQL — a real server started from the tests'
//! harness, a fresh database per run) it starts a real `rewind-coordinator`
//! (its own CA, a 1-of-1 trust root and a signed release bundle), enrolls N
//! simulated agents for real (one N-use token, a fresh key and CSR each),
//! and measures, beside `tonic_floor` (a bare tonic + rustls fan-out server
//! speaking the same messages over the same mTLS) run in the same process
//! tree with the same N connections:
//!
//! - time for all N to connect (and, for the coordinator, to reconnect
//!   after a SIGTERM restart, with the agents' jittered backoff);
//! - push latency p50/p99/max from the decision (the Admin StartRollout
//!   call; for the floor, the `push` line) to receipt on each agent;
//! - server RSS per idle connected agent ((RSS at N − RSS at 0) / N);
//! - results ingested per second (signed results, verified and stored by
//!   the coordinator, counted when acknowledged);
//! - halt to verified rollback (issue 6): a next release goes to every
//!   agent, each verifies its apply plan's signatures against the trust
//!   root with the agent's own code and reports it `applied`; then the
//!   operator's rollback (the Admin Rollback call) sends every agent the
//!   bundle's pre-signed rollback plan, which each verifies the same way
//!   and answers with a signed `rolled_back` result; timed from the call to
//!   the last such result stored and to the rollout's `rolled_back` (every
//!   endpoint's proof counted).
//!
//! With `--replicas K` (PostgreSQL only) K coordinator processes share the
//! database and the agents spread over them; the restart and halt phases
//! are then left out.
//!
//! Ratios to the floor and PASS/MISS against the goals are printed at the
//! end, with one JSON line per N and store; every figure says the store it
//! was measured on. See docs/benchmarks.md, "Fleet".

#[path = "../fleet/mod.rs"]
mod fleet;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use ed25519_dalek::SigningKey;
use fleet::{Command, Event, Shared, SimIdentity};
use rewind_shared::bundle::{Bundle, Granularity, Plan, PlanKind};
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::report::{
    ChainPoint, REPORT_FORMAT, RefusalInfo, ReportPayload, ReportStatus, SignedReport, TargetResult,
};
use rewind_shared::trust::TrustFile;
use rewind_shared::wire::v1;
use rewind_tests::postgres::Postgres;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Proc};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser)]
#[command(about = "Fleet-scale benchmark: the coordinator beside a bare tonic TLS fan-out floor")]
struct Args {
    /// Numbers of agents, one full run each (e.g. --agents 100 --agents 1000).
    #[arg(long = "agents", required = true)]
    agents: Vec<usize>,
    /// Results sent in the ingestion phase, spread over the agents (at least one each).
    #[arg(long, default_value_t = 10_000)]
    results: usize,
    /// Most results per message in the ingestion phase: an agent's share goes as `Results`
    /// messages of this many, as `rewind-agent` sends a backlog of its outbox (1 to 64); 1 sends
    /// every result as its own `Result` message, as an agent with one new result does.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=64))]
    per_message: u16,
    /// Where the coordinator states, keys and bundle go (default: a new temp dir, removed after).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Directory of rewind-coordinator, rewindctl and tonic_floor (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// How long to wait for each phase before reporting what was reached.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// The coordinator's store, one full run per N each: sqlite, postgres or both (repeatable or
    /// comma-separated). postgres starts a PostgreSQL server (tests/src/postgres.rs; binaries from
    /// /usr/lib/postgresql/*/bin or REWIND_PG_BIN) and gives each run a fresh database.
    #[arg(long = "store", value_enum, value_delimiter = ',', default_value = "sqlite")]
    stores: Vec<StoreArg>,
    /// Coordinator replicas on the one PostgreSQL database (only with --store postgres): the
    /// agents spread over them round-robin, the Admin calls go to the first. With more than one,
    /// the restart and halt-to-rollback phases are not run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    replicas: u16,
    /// Processes the simulated agents run in (at least; more when one process cannot hold every
    /// connection under the open file limit). 1 runs them in this process; more start copies of
    /// this binary as workers, the agents split between them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    processes: u16,
}

/// File descriptors a process keeps for itself beside its connections.
const FD_RESERVE: usize = 512;

/// Processes needed for `n` connections under the open file limit `nofile`,
/// at least `least`.
fn processes_for(n: usize, nofile: usize, least: usize) -> usize {
    n.div_ceil(nofile.saturating_sub(FD_RESERVE).max(1)).max(least).max(1)
}

/// `--store` as given.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreArg {
    Sqlite,
    Postgres,
    Both,
}

/// The store a run's coordinator keeps its state in.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Store {
    #[default]
    Sqlite,
    Postgres,
}

impl Store {
    /// The stores `--store` names, each once, SQLite first.
    fn from_args(given: &[StoreArg]) -> Vec<Store> {
        let wants = |s: StoreArg| given.iter().any(|&g| g == s || g == StoreArg::Both);
        [(StoreArg::Sqlite, Store::Sqlite), (StoreArg::Postgres, Store::Postgres)]
            .into_iter()
            .filter_map(|(arg, store)| wants(arg).then_some(store))
            .collect()
    }

    /// The coordinator's `store` setting (`REWIND_STORE`), also the JSON summary's `store`.
    fn key(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }

    /// How the figures name it.
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        }
    }

    /// The results/s goals for this store, with how the summary names each.
    fn results_goals(self) -> &'static [(&'static str, f64)] {
        match self {
            Store::Sqlite => &[("goal", RESULTS_GOAL), ("issue 8 goal", RESULTS_GOAL_SQLITE_BATCHED)],
            Store::Postgres => &[("issue 8 goal", RESULTS_GOAL_POSTGRES)],
        }
    }
}

/// Goals (issue 5; issue 8 for the scale figures).
const PUSH_P99_GOAL: f64 = 1.3;
const RSS_GOAL: f64 = 1.3;
/// Results ingested per second into SQLite (issue 5); issue 8, with batching:
/// into SQLite and into PostgreSQL.
const RESULTS_GOAL: f64 = 5000.0;
const RESULTS_GOAL_SQLITE_BATCHED: f64 = 20_000.0;
const RESULTS_GOAL_POSTGRES: f64 = 10_000.0;
const RECONNECT_GOAL_10K: Duration = Duration::from_secs(30);
/// The N at which issue 8's results goals are judged (see `verdicts`).
const RESULTS_GOAL_AT: usize = 1000;
/// Issue 6: halt decision to the last endpoint's verified rollback result.
const ROLLBACK_GOAL: Duration = Duration::from_secs(1);

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some(fleet::remote::WORKER_ARG) {
        return fleet::remote::worker_main();
    }
    let args = Args::parse();
    rewind_shared::channel::install_crypto();
    let nofile = raise_nofile()?;
    let max = *args.agents.iter().max().expect("required");
    let replicas = usize::from(args.replicas);
    if processes_for(max, nofile, 1) > replicas {
        eprintln!(
            "fleet_load: {max} agents need about {} open files in a coordinator, whose hard limit is {nofile}: \
             spread them with --store postgres --replicas {} (or more)",
            max.div_ceil(replicas) + FD_RESERVE,
            processes_for(max, nofile, 1)
        );
        std::process::exit(2);
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("binary directory")?.to_path_buf(),
    };
    for b in ["rewind-coordinator", "rewindctl", "tonic_floor"] {
        if !bin_dir.join(b).exists() {
            bail!(
                "{} not found: build with `cargo build --release --bins` or pass --bin-dir",
                bin_dir.join(b).display()
            );
        }
    }
    let stores = Store::from_args(&args.stores);
    if args.replicas > 1 && stores.contains(&Store::Sqlite) {
        eprintln!(
            "fleet_load: --replicas {} needs --store postgres (replicas share one PostgreSQL database; \
             the SQLite store belongs to one process)",
            args.replicas
        );
        std::process::exit(2);
    }
    let mut pg = if stores.contains(&Store::Postgres) { Some(PgServer::start()?) } else { None };
    let scratch =
        args.scratch.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("fleet_load-{}", std::process::id())));
    std::fs::create_dir_all(&scratch)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = run_all(&args, &stores, nofile, &bin_dir, &scratch, &rt, pg.as_mut());
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Some(mut pg) = pg {
        pg.pg.shutdown();
    }
    match (&outcome, args.scratch.is_none()) {
        (Ok(()), true) => {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        (Err(_), true) => eprintln!(
            "fleet_load: the run failed; its scratch directory {} (coordinator and agent logs) is kept \
             for inspection: remove it when done",
            scratch.display()
        ),
        (_, false) => {}
    }
    outcome
}

/// Every run of `args` (each N, each store) in `scratch`, then the summary.
fn run_all(
    args: &Args,
    stores: &[Store],
    nofile: usize,
    bin_dir: &Path,
    scratch: &Path,
    rt: &tokio::runtime::Runtime,
    mut pg: Option<&mut PgServer>,
) -> Result<()> {
    println!(
        "fleet_load: {} core(s), fd limit {nofile}, load average {}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(pg) = &pg {
        pg.describe();
    }
    let release = rt.block_on(prepare_release(bin_dir, scratch))?;
    let mut all = Vec::new();
    for &n in &args.agents {
        for &store in stores {
            let dir = scratch.join(format!("n{n}-{}", store.key()));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            let run_store = RunStore::new(store, n, pg.as_deref_mut())?;
            let mut figures = rt.block_on(one_run(args, bin_dir, &dir, &release, n, &run_store))?;
            figures.stored_results = Some(run_store.stored_results(&dir.join("coordinator"), pg.as_deref())?);
            figures.print();
            all.push(figures);
        }
    }
    println!("\nsummary");
    for f in &all {
        f.verdicts();
    }
    for f in &all {
        println!("{}", f.json());
    }
    Ok(())
}

// ---- The store under test ----

/// The PostgreSQL server that the `--store postgres` runs share: the tests'
/// harness (tests/src/postgres.rs: `initdb` in a temp dir, `postgres` on a
/// free loopback port, as `nobody` when this runs as root; stopped and
/// removed at the end, also with `--scratch`), a fresh database per run.
struct PgServer {
    pg: Postgres,
    /// `SHOW server_version`.
    version: String,
    /// Databases made so far (numbers the next one).
    made: usize,
}

impl PgServer {
    fn start() -> Result<Self> {
        let install = "install PostgreSQL with `source scripts/deps.sh && need_postgres` \
                       (scripts/bench-fleet.sh --store postgres does), or set REWIND_PG_BIN";
        harness(&format!("PostgreSQL server binaries ({install})"), rewind_tests::postgres::bin_dir)?;
        let pg = harness(&format!("starting PostgreSQL with tests/src/postgres.rs ({install})"), Postgres::start)?;
        let version = harness("reading PostgreSQL's version", || pg.psql("postgres", "SHOW server_version"))?;
        Ok(PgServer { pg, version, made: 0 })
    }

    /// Prints the server and the settings that decide what a commit costs.
    fn describe(&self) {
        let setting = |name: &str| {
            harness(name, || self.pg.psql("postgres", &format!("SHOW {name}"))).unwrap_or_else(|e| e.to_string())
        };
        println!(
            "PostgreSQL {} on 127.0.0.1:{} (the tests' harness: fsync={}, synchronous_commit={}, full_page_writes={}; \
             the SQLite store: WAL, synchronous = NORMAL)",
            self.version,
            self.pg.port(),
            setting("fsync"),
            setting("synchronous_commit"),
            setting("full_page_writes")
        );
    }

    /// A new empty database for one run: its name and URL.
    fn fresh_db(&mut self, n: usize) -> Result<(String, String)> {
        self.made += 1;
        let name = format!("fleet_load_n{n}_{}", self.made);
        let url = harness(&format!("creating database {name}"), || self.pg.create_db(&name))?;
        Ok((name, url))
    }

    /// Rows of `table` in database `db`.
    fn count(&self, db: &str, table: &str) -> Result<u64> {
        let text = harness(&format!("counting {table} in {db}"), || {
            self.pg.psql(db, &format!("SELECT count(*) FROM {table}"))
        })?;
        text.parse().with_context(|| format!("count of {table} in {db}: {text:?}"))
    }
}

/// Runs a step of the tests' PostgreSQL harness, which panics saying what
/// went wrong (the tool's output, the server's log), as an error.
fn harness<T>(what: &str, step: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the harness panicked");
        anyhow!("{what}: {why}")
    })
}

/// The store of one run: SQLite in the coordinator's state directory, or
/// a fresh PostgreSQL database (name, URL); the restarted coordinator
/// gets the same.
struct RunStore {
    kind: Store,
    db: Option<(String, String)>,
}

impl RunStore {
    fn new(kind: Store, n: usize, pg: Option<&mut PgServer>) -> Result<Self> {
        let db = match (kind, pg) {
            (Store::Sqlite, _) => None,
            (Store::Postgres, Some(pg)) => Some(pg.fresh_db(n)?),
            (Store::Postgres, None) => bail!("a PostgreSQL run without a PostgreSQL server"),
        };
        Ok(RunStore { kind, db })
    }

    /// The coordinator's environment for it (coordinator/src/config.rs).
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("REWIND_STORE", self.kind.key().to_string())];
        if let Some((_, url)) = &self.db {
            env.push(("REWIND_STORE_URL", url.clone()));
        }
        env
    }

    /// Where the figures say the state was.
    fn place(&self) -> String {
        match &self.db {
            Some((name, _)) => format!("{} database {name}", self.kind.name()),
            None => format!("{} store", self.kind.name()),
        }
    }

    /// Rows of `results` in the store after the run (read from the store
    /// itself: the PostgreSQL database, where no `coordinator.db` may
    /// appear, or the state directory's SQLite file).
    fn stored_results(&self, state: &Path, pg: Option<&PgServer>) -> Result<u64> {
        let sqlite = state.join("coordinator.db");
        match (&self.db, pg) {
            (Some((name, _)), Some(pg)) => {
                if sqlite.exists() {
                    bail!("the coordinator on PostgreSQL wrote a SQLite store: {}", sqlite.display());
                }
                pg.count(name, "results")
            }
            _ => {
                let conn = rusqlite::Connection::open_with_flags(&sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .with_context(|| format!("opening {}", sqlite.display()))?;
                let rows: i64 = conn
                    .query_row("SELECT count(*) FROM results", [], |r| r.get(0))
                    .with_context(|| format!("counting results in {}", sqlite.display()))?;
                Ok(u64::try_from(rows)?)
            }
        }
    }
}

/// Keys, a 1-of-1 trust root, a sample database and the signed bundle of a
/// one-migration release, made once per scratch directory; and the bundle
/// of the next release (`bench 1.0.1`, sequence 2, the same migration), the
/// one the rollback phase rolls out and back.
struct Release {
    trust: PathBuf,
    bundle: PathBuf,
    next: PathBuf,
    target: v1::TargetState,
}

/// The bench release as `version` / `sequence`.
fn release_toml(version: &str, sequence: u64) -> String {
    format!(
        "name = \"bench\"\nversion = \"{version}\"\nsequence = {sequence}\napp_version = \"1.0.0\"\nowner = \"bench\"\n\
         on_call = \"bench\"\n\n[[target]]\nname = \"kv\"\n\n[[migration]]\nid = \"0001_kv\"\ntarget = \"kv\"\n\
         after = []\n\n[rollout]\nwaves = [{{ name = \"all\", percent = 100 }}]\n"
    )
}

async fn prepare_release(bin: &Path, scratch: &Path) -> Result<Release> {
    let d = scratch.join("release");
    let bundle = d.join("bench.bundle.json");
    let next = d.join("bench-next.bundle.json");
    let sample = d.join("kv.db");
    let p = |x: &str| d.join(x).to_string_lossy().into_owned();
    std::fs::create_dir_all(&d)?;
    if !bundle.exists() {
        let _ = std::fs::remove_file(&next);
        let _ = std::fs::remove_file(&sample);
        rusqlite::Connection::open(&sample)?.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT);")?;
        ctl(bin, &["keys", "generate", "--out", &p("signer")], &[]).await?;
        ctl(bin, &["trust", "init", "--threshold", "1", "--key", &p("signer.pub"), "--out", &p("trust.toml")], &[])
            .await?;
    }
    for (rel, version, sequence, out) in [("rel", "1.0.0", 1, &bundle), ("rel-next", "1.0.1", 2, &next)] {
        if out.exists() {
            continue;
        }
        let m = d.join(rel).join("migrations/0001_kv");
        std::fs::create_dir_all(&m)?;
        std::fs::write(d.join(rel).join("release.toml"), release_toml(version, sequence))?;
        std::fs::write(m.join("up.sql"), "INSERT INTO kv(k, v) VALUES ('bench', '1');\n")?;
        std::fs::write(m.join("down.sql"), "DELETE FROM kv WHERE k = 'bench';\n")?;
        std::fs::write(m.join("verify.sql"), "SELECT count(*) = 1 FROM kv WHERE k = 'bench';\n")?;
        let tmp = p("bench.bundle.tmp");
        ctl(bin, &["release", "build", &p(rel), "--sample", &format!("kv={}", sample.display()), "--out", &tmp], &[])
            .await?;
        ctl(bin, &["release", "sign", &tmp, "--key", &p("signer.key")], &[]).await?;
        std::fs::rename(&tmp, out)?;
    }
    let conn = rusqlite::Connection::open(&sample)?;
    let digest = rewind_shared::digest::database_digest(&conn)?;
    Ok(Release {
        trust: d.join("trust.toml"),
        bundle,
        next,
        target: v1::TargetState {
            product: "bench".into(),
            name: "kv".into(),
            schema_digest: digest.schema.to_string(),
            data_digest: digest.digest.to_string(),
            error: String::new(),
        },
    })
}

async fn ctl(bin: &Path, args: &[&str], env: &[(&str, String)]) -> Result<String> {
    let out = Proc::new(bin.join("rewindctl"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("REWIND_LOG", "warn")
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "rewindctl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children,
/// the coordinator and the floor, inherit it) with util-linux `prlimit`.
fn raise_nofile() -> Result<usize> {
    let hard = nofile_limits()?.1;
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
        .status()
        .context("running prlimit (util-linux) to raise the open file limit")?;
    if !status.success() {
        bail!("prlimit --nofile={hard}:{hard} failed: {status}");
    }
    Ok(nofile_limits()?.0)
}

fn nofile_limits() -> Result<(usize, usize)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no open files limit")?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Ok((f[3].parse()?, f[4].parse()?))
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

#[derive(Default)]
struct Side {
    connect: Option<Duration>,
    connected: usize,
    rss0_kib: u64,
    rssn_kib: u64,
    push: Vec<Duration>,
    push_call: Option<Duration>,
}

impl Side {
    fn rss_per_agent_kib(&self, n: usize) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let v = self.rssn_kib.saturating_sub(self.rss0_kib) as f64 / n as f64;
        v
    }
    fn p(&self, q: f64) -> Duration {
        fleet::percentile(&self.push, q)
    }
    fn max(&self) -> Duration {
        self.push.last().copied().unwrap_or_default()
    }
}

#[derive(Default)]
struct Figures {
    n: usize,
    /// What the coordinator ran on: the store, and where (`RunStore::place`).
    store: Store,
    place: String,
    enroll: Duration,
    floor: Side,
    coord: Side,
    results: usize,
    /// Coordinator processes the agents were spread over (`--replicas`).
    replicas: usize,
    /// tonic_floor processes they were spread over in the floor's turn.
    floors: usize,
    /// Processes the simulated agents ran in (`--processes`, or more).
    processes: usize,
    /// Most results per message (`--per-message`).
    per_message: usize,
    results_acked: usize,
    results_time: Duration,
    reconnect: Option<Duration>,
    reconnected: usize,
    reconnect_first: Option<Duration>,
    coord_rss_after_kib: u64,
    rollback: RollbackFigures,
    /// Rows of `results` in the store after the run (the ingestion phase's
    /// and the rollback phase's).
    stored_results: Option<u64>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "not reached".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

impl Figures {
    fn results_per_s(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.results_acked as f64;
        n / self.results_time.as_secs_f64().max(1e-9)
    }

    fn print(&self) {
        let n = self.n;
        let store = self.store.name();
        let coord = format!("coordinator/{store}");
        if self.replicas > 1 {
            println!(
                "\nN = {n}, {} coordinator replicas on the {} (RSS: all replicas together)",
                self.replicas, self.place
            );
        } else {
            println!("\nN = {n}, coordinator on the {}", self.place);
        }
        if self.floors > 1 || self.processes > 1 {
            println!(
                "  floor: {} tonic_floor processes (RSS: together); simulated agents in {} processes",
                self.floors, self.processes
            );
        }
        println!("  enrollment of {n} agents (CSR each, {store}):  {:.2} s", self.enroll.as_secs_f64());
        println!("                                  {coord:>22} {:>14} {:>8}", "tonic floor", "ratio");
        println!("  all connected                   {:>22} {:>14}", opt(self.coord.connect), opt(self.floor.connect));
        for (name, q) in [("push p50", 50.0), ("push p99", 99.0)] {
            let (c, f) = (self.coord.p(q), self.floor.p(q));
            println!("  {name:<30}  {:>22} {:>14} {:>7.2}x", ms(c), ms(f), ratio(c, f));
        }
        let (c, f) = (self.coord.max(), self.floor.max());
        println!("  {:<30}  {:>22} {:>14} {:>7.2}x", "push max", ms(c), ms(f), ratio(c, f));
        println!(
            "  {:<30}  {:>22} {:>14}",
            "agents that got the push",
            format!("{}/{n}", self.coord.push.len()),
            format!("{}/{n}", self.floor.push.len())
        );
        if let Some(call) = self.coord.push_call {
            println!("  StartRollout call returned after {} ({store})", ms(call));
        }
        let (c, f) = (self.coord.rss_per_agent_kib(n), self.floor.rss_per_agent_kib(n));
        println!("  {:<30}  {:>18.1} KiB {:>10.1} KiB {:>7.2}x", "RSS per idle agent", c, f, c / f.max(1e-9));
        println!(
            "  {:<30}  {:>18} KiB {:>10} KiB",
            "RSS at 0 / at N (coordinator)", self.coord.rss0_kib, self.coord.rssn_kib
        );
        println!(
            "  {:<30}  {:>18} KiB {:>10} KiB",
            "RSS at 0 / at N (floor)", self.floor.rss0_kib, self.floor.rssn_kib
        );
        println!(
            "  results ingested into {store}:  {}/{} acknowledged in {:.2} s = {:.0}/s ({}; up to {} per message)",
            self.results_acked,
            self.results,
            self.results_time.as_secs_f64(),
            self.results_per_s(),
            self.place,
            self.per_message
        );
        if let Some(rows) = self.stored_results {
            let phases = if self.replicas > 1 { "ingestion phase" } else { "ingestion and rollback phases" };
            println!("  results stored in the {} after the run: {rows} ({phases})", self.place);
        }
        if self.replicas > 1 {
            println!("  restart and halt to verified rollback: not measured with {} replicas", self.replicas);
            return;
        }
        println!(
            "  reconnect after SIGTERM restart ({store}, same state):  all {}/{n} in {} (first after {}), \
             from the new process's start",
            self.reconnected,
            opt(self.reconnect),
            opt(self.reconnect_first)
        );
        println!("  coordinator RSS after the run ({store}): {} KiB", self.coord_rss_after_kib);
        self.rollback.print(n, self.store);
    }

    fn verdicts(&self) {
        let n = self.n;
        let on = if self.replicas > 1 {
            format!("{} ({} replicas)", self.store.name(), self.replicas)
        } else {
            self.store.name().to_string()
        };
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        let push = ratio(self.coord.p(99.0), self.floor.p(99.0));
        let complete = self.coord.push.len() == n && self.floor.push.len() == n;
        if complete {
            println!(
                "  N={n:<6} push p99 {push:.2}x floor on {on} (goal <= {PUSH_P99_GOAL}x): {}",
                verdict(push <= PUSH_P99_GOAL)
            );
        } else {
            println!(
                "  N={n:<6} push reached {}/{n} agents from the coordinator on {on}, {}/{n} from the floor: MISS",
                self.coord.push.len(),
                self.floor.push.len()
            );
        }
        let rss = self.coord.rss_per_agent_kib(n) / self.floor.rss_per_agent_kib(n).max(1e-9);
        println!(
            "  N={n:<6} RSS per idle agent {rss:.2}x floor on {on} (goal <= {RSS_GOAL}x): {}",
            verdict(rss <= RSS_GOAL)
        );
        let r = self.results_per_s();
        for (what, goal) in self.store.results_goals() {
            // Issue 8 names no N for its results goals (the push and
            // reconnect goals say "at 10,000"): they are judged where the
            // load generator's own TLS work weighs least, at 1,000 agents;
            // other N print the rate against them for the growth curve.
            let judged = *what != "issue 8 goal" || n == RESULTS_GOAL_AT;
            let end = if judged {
                verdict(self.results_acked == self.results && r >= *goal).to_string()
            } else {
                format!("info (judged at N={RESULTS_GOAL_AT}: {:.2}x here)", r / goal)
            };
            println!("  N={n:<6} results {r:.0}/s into {on} ({what} >= {goal}/s): {end}");
        }
        if self.replicas > 1 {
            return;
        }
        if n >= 10_000 {
            println!(
                "  N={n:<6} reconnect on {on} {} (goal < {}s): {}",
                opt(self.reconnect),
                RECONNECT_GOAL_10K.as_secs(),
                verdict(self.reconnect.is_some_and(|d| d < RECONNECT_GOAL_10K))
            );
        }
        // Both ends of "verified": the last endpoint's rollback result
        // verified and stored, and the rollout counting every proof.
        let rb = &self.rollback;
        let complete = rb.verified == n && rb.acked == n;
        for (what, at) in [("last verified rollback result", rb.last_result()), ("rollout rolled_back", rb.done())] {
            println!(
                "  N={n:<6} halt to {what} on {on} {} (goal <= {} s): {}",
                opt(at),
                ROLLBACK_GOAL.as_secs(),
                verdict(complete && at.is_some_and(|d| d <= ROLLBACK_GOAL))
            );
        }
    }

    fn json(&self) -> String {
        let s = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let side = |x: &Side| {
            serde_json::json!({
                "connect_s": s(x.connect),
                "push_received": x.push.len(),
                "push_p50_ms": x.p(50.0).as_secs_f64() * 1000.0,
                "push_p99_ms": x.p(99.0).as_secs_f64() * 1000.0,
                "push_max_ms": x.max().as_secs_f64() * 1000.0,
                "rss0_kib": x.rss0_kib,
                "rssn_kib": x.rssn_kib,
                "rss_per_agent_kib": x.rss_per_agent_kib(self.n),
            })
        };
        serde_json::json!({
            "n": self.n,
            "store": self.store.key(),
            "store_place": self.place,
            "enroll_s": self.enroll.as_secs_f64(),
            "coordinator": side(&self.coord),
            "floor": side(&self.floor),
            "start_rollout_call_ms": self.coord.push_call.map(|d| d.as_secs_f64() * 1000.0),
            "results": self.results,
            "results_acked": self.results_acked,
            "results_per_message": self.per_message,
            "replicas": self.replicas,
            "floor_processes": self.floors,
            "load_processes": self.processes,
            "results_per_s": self.results_per_s(),
            "results_goals_per_s": self.store.results_goals().iter().map(|(_, g)| *g).collect::<Vec<_>>(),
            "stored_results": self.stored_results,
            "reconnect_s": s(self.reconnect),
            "reconnected": self.reconnected,
            "rollback": self.rollback.json(),
        })
        .to_string()
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A coordinator on `state` and `store` (its restart gets the same: the
/// same SQLite file, or the same PostgreSQL database).
async fn start_coordinator(bin: &Path, state: &Path, port: u16, trust: &Path, store: &RunStore) -> Result<Child> {
    let child = Proc::new(bin.join("rewind-coordinator"))
        .args(["--state", &state.to_string_lossy()])
        .env_remove("REWIND_STORE_URL")
        .envs(store.env())
        .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
        .env("REWIND_WEB_LISTEN", "127.0.0.1:0")
        .env("REWIND_TRUST", trust)
        .env("REWIND_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting rewind-coordinator on the {}", store.place()))?;
    Ok(child)
}

/// Waits until the coordinator answers an Admin call (a cheap one: the
/// incident list; `agents` reads the whole fleet, see [`time_agents_list`]).
async fn wait_ready(bin: &Path, env: &[(&str, String)]) -> Result<()> {
    let start = Instant::now();
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(10), ctl(bin, &["incidents", "list"], env)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 10 s".to_string(),
        };
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the coordinator did not answer Admin calls within 60 s (last try: {last})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long `rewindctl agents --json` takes with every agent enrolled and
/// connected (the operator's fleet listing), or why it failed.
async fn time_agents_list(bin: &Path, env: &[(&str, String)]) -> String {
    let t = Instant::now();
    match tokio::time::timeout(Duration::from_secs(300), ctl(bin, &["agents", "--json"], env)).await {
        Ok(Ok(out)) => format!("{:.2} s ({} KiB of JSON)", t.elapsed().as_secs_f64(), out.len() / 1024),
        Ok(Err(e)) => format!("failed after {:.2} s: {e}", t.elapsed().as_secs_f64()),
        Err(_) => "no answer within 300 s".to_string(),
    }
}

async fn enroll_all(url: &str, ca_pem: &str, token: &str, n: usize, concurrency: usize) -> Result<Vec<SimIdentity>> {
    let ch = channel::connect(url, &ClientTls { ca_pem: ca_pem.to_string(), identity: None }, ChannelOptions::unary())
        .await?;
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n);
    for index in 0..n {
        let (ch, sem, token) = (ch.clone(), Arc::clone(&sem), token.to_string());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name.push(rcgen::DnType::CommonName, format!("sim-{index}"));
            let csr = params.serialize_request(&key)?.pem()?;
            let mut report_key = [0u8; 32];
            getrandom::fill(&mut report_key).map_err(|e| anyhow!("random: {e}"))?;
            let audit = hex::encode(ed25519_dalek::SigningKey::from_bytes(&report_key).verifying_key().as_bytes());
            let resp = v1::fleet_client::FleetClient::new(ch)
                .enroll(v1::EnrollRequest {
                    token,
                    csr_pem: csr,
                    labels: [("sim".to_string(), index.to_string())].into(),
                    hostname: format!("sim-{index}"),
                    agent_version: "fleet_load".into(),
                    audit_public_key: audit,
                })
                .await
                .map_err(|s| anyhow!("enrolling agent {index}: {} ({:?})", s.message(), s.code()))?
                .into_inner();
            Ok::<_, anyhow::Error>(SimIdentity {
                index,
                agent_id: resp.agent_id,
                cert_pem: resp.cert_pem,
                key_pem: key.serialize_pem(),
                report_key,
            })
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// A fleet of simulated agents pointed at the servers: in this process, or
/// split over worker processes ([`fleet::remote`]).
struct Sims {
    events: mpsc::UnboundedReceiver<Event>,
    commands: watch::Sender<Command>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    workers: Option<fleet::remote::Workers>,
}

impl Sims {
    /// Starts `spec`'s agents against `urls` (agent `i` to `urls[i % len]`).
    fn start(spec: &SimsSpec<'_>, urls: Vec<String>) -> Result<Self> {
        let (etx, events) = mpsc::unbounded_channel();
        let (commands, crx) = watch::channel(Command::Idle);
        let shared = Shared {
            urls,
            ca_pem: spec.ca_pem.to_string(),
            hello_target: spec.target.clone(),
            events: etx,
            commands: crx,
            per_message: usize::from(spec.per_message),
        };
        if spec.processes > 1 {
            let workers = fleet::remote::Workers::start(spec.ids, spec.processes, &shared)?;
            return Ok(Sims { events, commands, tasks: Vec::new(), workers: Some(workers) });
        }
        let shared = Arc::new(shared);
        let tasks = spec.ids.iter().map(|id| tokio::spawn(fleet::run(id.clone(), Arc::clone(&shared)))).collect();
        Ok(Sims { events, commands, tasks, workers: None })
    }

    /// Waits until `want` distinct agents produced an event `pick` accepts;
    /// returns the time of each (first per agent), in arrival order.
    async fn wait(
        &mut self,
        want: usize,
        limit: Duration,
        mut pick: impl FnMut(&Event) -> Option<(usize, Instant)>,
    ) -> Vec<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = HashSet::new();
        let mut times = Vec::with_capacity(want);
        while seen.len() < want {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    if let Some((i, t)) = pick(&e)
                        && seen.insert(i)
                    {
                        times.push(t);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        times
    }

    async fn stop(mut self) {
        let _ = self.commands.send(Command::Stop);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        if let Some(w) = self.workers.take() {
            w.wait(Duration::from_secs(30)).await;
        }
    }
}

fn connected(e: &Event) -> Option<(usize, Instant)> {
    match e {
        Event::Connected(i, t) => Some((*i, *t)),
        _ => None,
    }
}

fn plan(e: &Event) -> Option<(usize, Instant)> {
    match e {
        Event::Plan(i, t) => Some((*i, *t)),
        _ => None,
    }
}

const SETTLE: Duration = Duration::from_secs(3);

/// The floor: `floors` tonic_floor processes (as many as the coordinator
/// has replicas, or more when one cannot hold every connection), the
/// agents spread over them as over the replicas; the push is one `push`
/// line to each, timed from the first.
async fn floor_side(
    args: &Args,
    bin: &Path,
    state: &Path,
    bundle: &Path,
    sims: &SimsSpec<'_>,
    floors: usize,
) -> Result<Side> {
    let n = sims.ids.len();
    let mut procs = Vec::new();
    let (mut urls, mut pids, mut stdins, mut outs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..floors.max(1) {
        let mut floor = Proc::new(bin.join("tonic_floor"))
            .args([
                "--ca-cert",
                &state.join("ca.pem").to_string_lossy(),
                "--ca-key",
                &state.join("ca.key").to_string_lossy(),
            ])
            .args(["--payload", &bundle.to_string_lossy()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting tonic_floor")?;
        pids.push(floor.id().context("floor pid")?);
        stdins.push(floor.stdin.take().context("floor stdin")?);
        let mut lines = BufReader::new(floor.stdout.take().context("floor stdout")?).lines();
        let first = lines.next_line().await?.context("tonic_floor printed nothing")?;
        let addr = first.strip_prefix("listening ").context("tonic_floor's first line")?;
        urls.push(format!("https://{addr}"));
        outs.push(lines);
        procs.push(floor);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_all = || pids.iter().map(|&p| rss_kib(p)).sum::<Result<u64>>();
    let mut side = Side { rss0_kib: rss_all()?, ..Side::default() };
    let t0 = Instant::now();
    let mut sims = Sims::start(sims, urls)?;
    let times = sims.wait(n, args.timeout, connected).await;
    side.connected = times.len();
    side.connect = (times.len() == n).then(|| times.last().map_or(Duration::ZERO, |t| *t - t0));
    tokio::time::sleep(SETTLE).await;
    side.rssn_kib = rss_all()?;
    let t0 = Instant::now();
    for stdin in &mut stdins {
        stdin.write_all(b"push\n").await?;
        stdin.flush().await?;
    }
    let got = sims.wait(n, args.timeout, plan).await;
    side.push = got.iter().map(|t| *t - t0).collect();
    side.push.sort();
    for lines in &mut outs {
        let _ = lines.next_line().await;
    }
    sims.stop().await;
    drop(stdins);
    for mut floor in procs {
        let _ = tokio::time::timeout(Duration::from_secs(10), floor.wait()).await;
        let _ = floor.kill().await;
    }
    Ok(side)
}

/// What starts a run's simulated agents, whichever servers they go to.
struct SimsSpec<'a> {
    ids: &'a [SimIdentity],
    ca_pem: &'a str,
    target: &'a v1::TargetState,
    per_message: u16,
    processes: usize,
}

#[allow(clippy::too_many_lines)]
async fn one_run(
    args: &Args,
    bin: &Path,
    dir: &Path,
    release: &Release,
    n: usize,
    store: &RunStore,
) -> Result<Figures> {
    println!("\n== N = {n}, {}: coordinator in {}", store.place(), dir.display());
    let state = dir.join("coordinator");
    let port = free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let mut coord = start_coordinator(bin, &state, port, &release.trust, store).await?;
    let env = vec![
        ("REWIND_COORDINATOR", url.clone()),
        ("REWIND_CA", state.join("ca.pem").to_string_lossy().into_owned()),
        ("REWIND_TOKEN_FILE", state.join("admin.token").to_string_lossy().into_owned()),
    ];
    wait_ready(bin, &env).await?;
    let ca_pem = std::fs::read_to_string(state.join("ca.pem"))?;
    let token = ctl(bin, &["token", "create", "--uses", &n.to_string(), "--ttl", "2h"], &env).await?.trim().to_string();
    let mut fig = Figures { n, store: store.kind, place: store.place(), ..Figures::default() };
    let t = Instant::now();
    let ids = enroll_all(&url, &ca_pem, &token, n, args.enroll_concurrency).await?;
    fig.enroll = t.elapsed();
    println!("  enrolled {n} agents in {:.2} s", fig.enroll.as_secs_f64());
    ctl(bin, &["release", "upload", &release.bundle.to_string_lossy()], &env).await?;

    // The floor first, with the same identities, then the coordinator.
    let nofile = nofile_limits()?.0;
    let spec = SimsSpec {
        ids: &ids,
        ca_pem: &ca_pem,
        target: &release.target,
        per_message: args.per_message,
        processes: processes_for(n, nofile, usize::from(args.processes)),
    };
    let floors = processes_for(n, nofile, usize::from(args.replicas));
    fig.floors = floors;
    fig.processes = spec.processes;
    if spec.processes > 1 || floors > 1 {
        println!("  simulated agents in {} process(es), {floors} floor process(es)", spec.processes);
    }
    fig.floor = floor_side(args, bin, &state, &release.bundle, &spec, floors).await?;
    println!("  floor measured ({} connected, {} got the push)", fig.floor.connected, fig.floor.push.len());

    // More replicas on the same database (--replicas), started after the
    // floor ran alone; the agents spread over all of them.
    let mut replicas = Vec::new();
    let mut urls = vec![url.clone()];
    for i in 1..usize::from(args.replicas) {
        let port = free_port()?;
        replicas.push(start_coordinator(bin, &dir.join(format!("replica{i}")), port, &release.trust, store).await?);
        let replica_url = format!("https://127.0.0.1:{port}");
        let replica_env: Vec<_> = env
            .iter()
            .map(|(k, v)| (*k, if *k == "REWIND_COORDINATOR" { replica_url.clone() } else { v.clone() }))
            .collect();
        wait_ready(bin, &replica_env).await?;
        urls.push(replica_url);
    }
    fig.replicas = urls.len();
    if !replicas.is_empty() {
        println!("  {} coordinator replicas on the {}: {}", urls.len(), store.place(), urls.join(" "));
    }

    let pid = coord.id().context("coordinator pid")?;
    let pids: Vec<u32> = std::iter::once(pid).chain(replicas.iter().filter_map(Child::id)).collect();
    let rss_all = || pids.iter().map(|&p| rss_kib(p)).sum::<Result<u64>>();
    fig.coord.rss0_kib = rss_all()?;
    let t0 = Instant::now();
    let mut sims = Sims::start(&spec, urls)?;
    let times = sims.wait(n, args.timeout, connected).await;
    fig.coord.connected = times.len();
    fig.coord.connect = (times.len() == n).then(|| times.last().map_or(Duration::ZERO, |t| *t - t0));
    println!("  coordinator ({}): {}/{n} connected in {}", store.kind.name(), times.len(), opt(fig.coord.connect));
    tokio::time::sleep(SETTLE).await;
    fig.coord.rssn_kib = rss_all()?;
    println!("  rewindctl agents --json with {n} agents connected: {}", time_agents_list(bin, &env).await);

    // Push: the operator's decision is the Admin call.
    let admin_token = std::fs::read_to_string(state.join("admin.token"))?.trim().to_string();
    let ch =
        channel::connect(&url, &ClientTls { ca_pem: ca_pem.clone(), identity: None }, ChannelOptions::unary()).await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {admin_token}").parse()?;
    let mut admin = v1::admin_client::AdminClient::with_interceptor(ch, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });
    let t0 = Instant::now();
    let req = start_request();
    let call = tokio::spawn(async move { admin.start_rollout(req).await.map(|r| (r.into_inner(), t0.elapsed())) });
    let got = sims.wait(n, args.timeout, plan).await;
    fig.coord.push = got.iter().map(|t| *t - t0).collect();
    fig.coord.push.sort();
    match call.await? {
        Ok((resp, took)) => {
            fig.coord.push_call = Some(took);
            println!("  StartRollout: {} agents, rollout {}", resp.agents, resp.rollout_id);
        }
        Err(s) => println!("  StartRollout failed: {} ({:?})", s.message(), s.code()),
    }
    println!("  coordinator push reached {}/{n}", fig.coord.push.len());

    // Results: every agent sends its share at once; counted on the coordinator's ack.
    let per = args.results.div_ceil(n).max(1);
    fig.results = per * n;
    fig.per_message = usize::from(args.per_message);
    // Signed beforehand, as agents sign on their own machines.
    let _ = sims.commands.send(Command::Prepare { round: 1, count: u32::try_from(per)? });
    let prepared = sims
        .wait(n, args.timeout, |e| match e {
            Event::Prepared(i) => Some((*i, Instant::now())),
            _ => None,
        })
        .await;
    if prepared.len() < n {
        println!("  results prepared by {}/{n} agents in time; the others sign while sending", prepared.len());
    }
    let t0 = Instant::now();
    let _ = sims.commands.send(Command::SendResults { round: 1, count: u32::try_from(per)? });
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut last = t0;
    while fig.results_acked < fig.results {
        match tokio::time::timeout_at(deadline, sims.events.recv()).await {
            Ok(Some(Event::ResultAcked(k, t))) => {
                fig.results_acked += k;
                last = t;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    fig.results_time = last - t0;
    println!(
        "  results into {}: {}/{} acknowledged in {:.2} s",
        store.kind.name(),
        fig.results_acked,
        fig.results,
        fig.results_time.as_secs_f64()
    );

    if !replicas.is_empty() {
        println!("  restart and halt-to-rollback phases: not run with --replicas");
        sims.stop().await;
        for mut r in replicas.into_iter().chain([coord]) {
            if let Some(pid) = r.id() {
                let _ = Proc::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), r.wait()).await;
            let _ = r.kill().await;
        }
        return Ok(fig);
    }

    // Restart: SIGTERM (streams end with UNAVAILABLE), a new process on the same state and port.
    let _ = Proc::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), coord.wait()).await;
    let _ = coord.kill().await;
    let t0 = Instant::now();
    let mut coord = start_coordinator(bin, &state, port, &release.trust, store).await?;
    let times = sims.wait(n, args.timeout, connected).await;
    fig.reconnected = times.len();
    fig.reconnect = (times.len() == n).then(|| times.last().map_or(Duration::ZERO, |t| *t - t0));
    fig.reconnect_first = times.first().map(|t| *t - t0);
    if let Some(pid) = coord.id() {
        fig.coord_rss_after_kib = rss_kib(pid).unwrap_or(0);
    }
    sims.stop().await;

    // Halt to verified rollback, with agents that verify what they get.
    let at = Coordinator { bin, env: &env, url: &url, ca_pem: &ca_pem, admin_token: &admin_token };
    fig.rollback = rollback_phase(args, &at, &ids, release).await?;
    if let Some(pid) = coord.id() {
        let _ = Proc::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), coord.wait()).await;
    let _ = coord.kill().await;
    Ok(fig)
}

/// StartRollout for the bench release (built field by field: the request
/// may grow fields that keep their defaults here).
#[allow(clippy::field_reassign_with_default)]
fn start_request() -> v1::StartRolloutRequest {
    let mut req = v1::StartRolloutRequest::default();
    req.product = "bench".into();
    req.version = "1.0.0".into();
    req
}

// ---- Halt to verified rollback (issue 6, benchmark (a)) ----
//
// The phase's agents are the same enrolled identities with the same
// connection (mTLS, source address, hello, heartbeats) as `fleet::run`, but
// they act on what they receive, as `rewind-agent run` does (minus the data
// engine): every PlanDelivery's plan is verified against the trust root
// with the agent's own code (`Bundle::rollback_envelope` / the apply
// envelope, `Envelope::open`: threshold of signatures, payload type,
// format, expiry) and must name what the delivery names; then the delivery
// is acknowledged and a signed result for that plan sent at once —
// `applied`, `rolled_back`, or `refused` when it did not verify. Results are
// kept until acknowledged and resent on a new stream, as the agent's outbox
// is.
//
// The phase rolls out its own release (`bench 1.0.1`, sequence 2), so the
// rollout it rolls back counts only its own reports (the ingestion phase's
// results all count towards `bench@1`).

/// How often the rollout's status is read while the rollback runs.
/// (Every read builds the status of every agent under the engine's lock:
/// reading more often would slow what is measured.)
const STATUS_POLL: Duration = Duration::from_millis(50);

#[derive(Default)]
struct RollbackFigures {
    connected: usize,
    /// Apply plans received and verified, `applied` results acknowledged.
    applies_verified: usize,
    applied_acked: usize,
    /// From StartRollout to the rollout `done`.
    rollout: Option<Duration>,
    /// The rollout's state when the rollback was asked for.
    state_before: String,
    /// The Admin Rollback call, from T0 to its answer.
    call: Option<Duration>,
    /// Rollback plans the call reported sent.
    call_agents: u32,
    /// T0 to each agent holding its rollback delivery, sorted.
    delivered: Vec<Duration>,
    /// Agents whose rollback envelope verified, or was refused.
    verified: usize,
    refused: usize,
    /// `rolled_back` results acknowledged (verified and stored), and T0 to the last.
    acked: usize,
    last_ack: Option<Duration>,
    /// T0 to `RolloutStatus` saying `rolled_back` (read every STATUS_POLL).
    rolled_back: Option<Duration>,
    final_state: String,
    /// From the coordinator's audit log (its clock, ms): T0 to
    /// `rollout.rolling_back`, to the last rollback result, to `rollout.rolled_back`.
    audit_rolling_back_ms: Option<i64>,
    audit_last_result_ms: Option<i64>,
    audit_rolled_back_ms: Option<i64>,
}

/// A time from the audit log (ms after T0) as a duration.
fn audit_ms(v: Option<i64>) -> Option<Duration> {
    v.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

impl RollbackFigures {
    /// T0 to the last rollback result stored (the audit log's time, else
    /// the agent seeing its acknowledgement).
    fn last_result(&self) -> Option<Duration> {
        audit_ms(self.audit_last_result_ms).or(self.last_ack)
    }

    /// T0 to the rollout `rolled_back` (the audit log's time, else the
    /// status read).
    fn done(&self) -> Option<Duration> {
        audit_ms(self.audit_rolled_back_ms).or(self.rolled_back)
    }

    fn print(&self, n: usize, store: Store) {
        let ms_opt = |v: Option<i64>| v.map_or_else(|| "not found".into(), |v| format!("{v} ms"));
        println!(
            "  halt to verified rollback on {}: {}/{n} connected; bench 1.0.1 verified by {}/{n}, applied acknowledged {}/{n}, \
             rollout {} after {}",
            store.name(),
            self.connected,
            self.applies_verified,
            self.applied_acked,
            self.state_before,
            opt(self.rollout)
        );
        println!(
            "    Rollback call returned after {} ({} plans)",
            self.call.map_or_else(|| "no answer".into(), ms),
            self.call_agents
        );
        println!(
            "    rollback delivered p50 {} p99 {} last {} ({}/{n}); envelopes verified {} refused {}",
            ms(fleet::percentile(&self.delivered, 50.0)),
            ms(fleet::percentile(&self.delivered, 99.0)),
            ms(self.delivered.last().copied().unwrap_or_default()),
            self.delivered.len(),
            self.verified,
            self.refused
        );
        println!(
            "    last rolled_back result acknowledged after {} ({}/{n})",
            self.last_ack.map_or_else(|| "not reached".into(), ms),
            self.acked
        );
        println!(
            "    rollout rolled_back after {} (status read every {} ms; ended {})",
            opt(self.rolled_back),
            STATUS_POLL.as_millis(),
            self.final_state
        );
        println!(
            "    audit (coordinator clock): rolling_back +{}, last rollback result +{}, rolled_back +{}",
            ms_opt(self.audit_rolling_back_ms),
            ms_opt(self.audit_last_result_ms),
            ms_opt(self.audit_rolled_back_ms)
        );
    }

    fn json(&self) -> serde_json::Value {
        let msf = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        serde_json::json!({
            "connected": self.connected,
            "applies_verified": self.applies_verified,
            "applied_acked": self.applied_acked,
            "rollout_ms": msf(self.rollout),
            "state_before": self.state_before,
            "call_ms": msf(self.call),
            "call_agents": self.call_agents,
            "delivered": self.delivered.len(),
            "delivered_p50_ms": fleet::percentile(&self.delivered, 50.0).as_secs_f64() * 1000.0,
            "delivered_p99_ms": fleet::percentile(&self.delivered, 99.0).as_secs_f64() * 1000.0,
            "delivered_last_ms": self.delivered.last().map(|d| d.as_secs_f64() * 1000.0),
            "verified": self.verified,
            "refused": self.refused,
            "acked": self.acked,
            "last_ack_ms": msf(self.last_ack),
            "rolled_back_ms": msf(self.rolled_back),
            "final_state": self.final_state,
            "audit_rolling_back_ms": self.audit_rolling_back_ms,
            "audit_last_result_ms": self.audit_last_result_ms,
            "audit_rolled_back_ms": self.audit_rolled_back_ms,
        })
    }
}

#[derive(Debug)]
enum RbEvent {
    Connected(usize),
    /// A PlanDelivery arrived (apply or rollback).
    Delivered(usize, PlanKind, Instant),
    /// Its plan verified (true) or was refused.
    Checked(PlanKind, bool, String),
    /// The coordinator acknowledged one of the agent's results.
    Acked(PlanKind, Instant),
}

/// What every agent of the phase shares.
struct RbShared {
    url: String,
    ca_pem: String,
    hello_target: v1::TargetState,
    trust: TrustFile,
    events: mpsc::UnboundedSender<RbEvent>,
    /// True: close the stream and end the task.
    stop: watch::Receiver<bool>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Adds the admin token to every Admin call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Admin =
    v1::admin_client::AdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>>;

async fn admin_client(url: &str, ca_pem: &str, token: &str) -> Result<Admin> {
    let ch = channel::connect(url, &ClientTls { ca_pem: ca_pem.to_string(), identity: None }, ChannelOptions::unary())
        .await?;
    Ok(v1::admin_client::AdminClient::with_interceptor(ch, Bearer(format!("Bearer {token}").parse()?)))
}

/// The rollout's state (`rollout status --json`'s `state`).
async fn rollout_state(admin: &mut Admin, rollout: &str) -> Result<String> {
    let req = v1::RolloutStatusRequest { rollout: rollout.to_string(), ..Default::default() };
    let json =
        admin.rollout_status(req).await.map_err(|s| anyhow!("RolloutStatus: {}", s.message()))?.into_inner().json;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    Ok(v["state"].as_str().unwrap_or("").to_string())
}

/// The audit log's times (ms after `t0`, the coordinator's clock) of the
/// rollout's `rolling_back` entry, its last rollback result and its
/// `rolled_back` entry.
async fn audit_times(admin: &mut Admin, rollout: &str, t0: std::time::SystemTime) -> Result<[Option<i64>; 3]> {
    let mut stream = admin
        .audit_export(v1::AuditExportRequest {})
        .await
        .map_err(|s| anyhow!("AuditExport: {}", s.message()))?
        .into_inner();
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let base = unix_ms(t0);
    let (product, sequence) = rollout.split_once('@').context("rollout id")?;
    let mut out = [None; 3];
    while let Some(r) = stream.message().await.map_err(|s| anyhow!("AuditExport: {}", s.message()))? {
        let v: serde_json::Value = serde_json::from_str(&r.json)?;
        let params = match &v["params"] {
            serde_json::Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
            p => p.clone(),
        };
        let Some(time) = v["time"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok()) else { continue };
        let at = Some(unix_ms(time) - base);
        match v["kind"].as_str().unwrap_or("") {
            "rollout.rolling_back" if params["rollout"] == rollout => out[0] = out[0].or(at),
            "rollout.rolled_back" if params["rollout"] == rollout => out[2] = at,
            "result"
                if params["kind"] == "rollback"
                    && params["product"] == product
                    && params["sequence"].as_u64().map(|s| s.to_string()).as_deref() == Some(sequence) =>
            {
                out[1] = at;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Waits until the rollout's state satisfies `until` (or `limit` passed);
/// returns the last state read and when it was seen to satisfy `until`.
async fn wait_rollout(
    admin: &mut Admin,
    rollout: &str,
    limit: Duration,
    until: impl Fn(&str) -> bool,
) -> (String, Option<Instant>) {
    let t0 = Instant::now();
    loop {
        let state = rollout_state(admin, rollout).await.unwrap_or_default();
        if until(&state) {
            return (state, Some(Instant::now()));
        }
        if t0.elapsed() > limit {
            return (state, None);
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

/// How the phase reaches the coordinator it measures.
struct Coordinator<'a> {
    bin: &'a Path,
    /// rewindctl's environment (URL, CA, admin token file).
    env: &'a [(&'a str, String)],
    url: &'a str,
    ca_pem: &'a str,
    admin_token: &'a str,
}

#[allow(clippy::too_many_lines)]
async fn rollback_phase(
    args: &Args,
    coord: &Coordinator<'_>,
    ids: &[SimIdentity],
    release: &Release,
) -> Result<RollbackFigures> {
    let Coordinator { bin, env, url, ca_pem, admin_token } = *coord;
    let n = ids.len();
    let mut fig = RollbackFigures::default();
    let trust = TrustFile::parse(&std::fs::read_to_string(&release.trust)?)
        .map_err(|e| anyhow!("{}: {e}", release.trust.display()))?;
    let next: Bundle = serde_json::from_slice(&std::fs::read(&release.next)?)?;
    let rollout = format!("{}@{}", next.product, next.sequence);
    ctl(bin, &["release", "upload", &release.next.to_string_lossy()], env).await?;
    let (etx, mut events) = mpsc::unbounded_channel();
    let (stop, srx) = watch::channel(false);
    let shared = Arc::new(RbShared {
        url: url.to_string(),
        ca_pem: ca_pem.to_string(),
        hello_target: release.target.clone(),
        trust,
        events: etx,
        stop: srx,
    });
    let tasks: Vec<_> = ids.iter().map(|id| tokio::spawn(rollback_agent(id.clone(), Arc::clone(&shared)))).collect();
    let mut admin = admin_client(url, ca_pem, admin_token).await?;
    let deadline = tokio::time::Instant::now() + args.timeout;

    let mut connected = HashSet::new();
    while connected.len() < n {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(RbEvent::Connected(i))) => {
                connected.insert(i);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    fig.connected = connected.len();

    // The release goes out; every agent verifies its apply plan and
    // reports it applied.
    let t = Instant::now();
    let req = v1::StartRolloutRequest { product: next.product.clone(), version: next.release.clone(), supersede: true };
    admin.start_rollout(req).await.map_err(|s| anyhow!("StartRollout {}: {}", next.release, s.message()))?;
    while fig.applied_acked < fig.connected {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(RbEvent::Checked(PlanKind::Apply, ok, why))) => {
                if ok {
                    fig.applies_verified += 1;
                } else {
                    println!("  apply plan refused by an agent: {why}");
                }
            }
            Ok(Some(RbEvent::Acked(PlanKind::Apply, _))) => fig.applied_acked += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let (state, seen) = wait_rollout(&mut admin, &rollout, left, |s| s == "done").await;
    (fig.state_before, fig.rollout) = (state, seen.map(|at| at - t));
    println!(
        "  rollback phase: {}/{n} connected, {}/{n} applied acknowledged, {rollout} {}",
        fig.connected, fig.applied_acked, fig.state_before
    );
    if fig.state_before != "done" {
        println!("  rollback phase: the rollout is not done; no rollback measured");
        let _ = stop.send(true);
        return Ok(fig);
    }

    // T0: the operator's decision is the Admin call.
    let (t0, wall0) = (Instant::now(), std::time::SystemTime::now());
    let mut caller = admin.clone();
    let req = v1::RollbackRequest {
        product: next.product.clone(),
        reason: "fleet_load: halt to verified rollback".into(),
        ..Default::default()
    };
    let call = tokio::spawn(async move { caller.rollback(req).await.map(|r| (r.into_inner(), t0.elapsed())) });
    let (mut poller, id, limit) = (admin.clone(), rollout.clone(), args.timeout);
    let poll =
        tokio::spawn(
            async move { wait_rollout(&mut poller, &id, limit, |s| s == "rolled_back" || s == "halted").await },
        );
    let mut delivered = HashSet::new();
    loop {
        if delivered.len() == n && fig.verified + fig.refused == n && fig.acked == fig.verified {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Some(RbEvent::Delivered(i, PlanKind::Rollback, t))) => {
                if delivered.insert(i) {
                    fig.delivered.push(t - t0);
                }
            }
            Ok(Some(RbEvent::Checked(PlanKind::Rollback, ok, why))) => {
                if ok {
                    fig.verified += 1;
                } else {
                    fig.refused += 1;
                    println!("  rollback refused by an agent: {why}");
                }
            }
            Ok(Some(RbEvent::Acked(PlanKind::Rollback, t))) => {
                fig.acked += 1;
                fig.last_ack = Some(t - t0);
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) if poll.is_finished() || t0.elapsed() > args.timeout => break,
            Err(_) => {}
        }
    }
    fig.delivered.sort();
    match call.await? {
        Ok((resp, took)) => {
            fig.call = Some(took);
            fig.call_agents = resp.agents;
        }
        Err(s) => println!("  Rollback failed: {} ({:?})", s.message(), s.code()),
    }
    let (state, seen) = poll.await?;
    fig.rolled_back = seen.filter(|_| state == "rolled_back").map(|at| at - t0);
    fig.final_state = state;
    [fig.audit_rolling_back_ms, fig.audit_last_result_ms, fig.audit_rolled_back_ms] =
        audit_times(&mut admin, &rollout, wall0).await?;
    let _ = stop.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    Ok(fig)
}

/// One agent of the rollback phase until told to stop.
async fn rollback_agent(id: SimIdentity, shared: Arc<RbShared>) {
    let tls = ClientTls { ca_pem: shared.ca_pem.clone(), identity: Some((id.cert_pem.clone(), id.key_pem.clone())) };
    let key = SigningKey::from_bytes(&id.report_key);
    let mut stop = shared.stop.clone();
    // Results until acknowledged, resent on a new stream (the agent's outbox).
    let mut outbox: Vec<(v1::Result, PlanKind)> = Vec::new();
    loop {
        if *stop.borrow() {
            return;
        }
        rollback_session(&id, &tls, &key, &shared, &mut stop, &mut outbox).await;
        if *stop.borrow() {
            return;
        }
        // Spread reconnects over a second.
        tokio::time::sleep(Duration::from_millis(500 + (id.index % 500) as u64)).await;
    }
}

async fn rollback_session(
    id: &SimIdentity,
    tls: &ClientTls,
    key: &SigningKey,
    shared: &RbShared,
    stop: &mut watch::Receiver<bool>,
    outbox: &mut Vec<(v1::Result, PlanKind)>,
) {
    use v1::agent_message::Body as Out;
    use v1::coordinator_message::Body as In;
    let Ok(ep) = channel::endpoint(&shared.url, tls, ChannelOptions::stream(Duration::from_secs(60))) else { return };
    let Ok(ch) = ep.local_address(Some(fleet::source_addr(id.index))).connect().await else { return };
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(64);
    let msg = |body| v1::AgentMessage { body: Some(body) };
    let hello = v1::Hello {
        agent_id: id.agent_id.clone(),
        agent_version: "fleet_load".into(),
        hostname: format!("sim-{}", id.index),
        inventory: Some(v1::Inventory { products: Vec::new(), targets: vec![shared.hello_target.clone()] }),
        audit: Some(v1::AuditHead { seq: 0, hash: rewind_shared::audit::GENESIS.to_string() }),
    };
    if tx.send(msg(Out::Hello(hello))).await.is_err() {
        return;
    }
    let Ok(resp) = v1::fleet_client::FleetClient::new(ch).connect(ReceiverStream::new(rx)).await else { return };
    let mut inbound = resp.into_inner();
    let heartbeat = match inbound.message().await {
        Ok(Some(v1::CoordinatorMessage { body: Some(In::Welcome(w)) })) => {
            Duration::from_secs(u64::from(w.heartbeat_seconds.max(1)))
        }
        _ => return,
    };
    let _ = shared.events.send(RbEvent::Connected(id.index));
    for (r, _) in outbox.iter() {
        if tx.send(msg(Out::Result(r.clone()))).await.is_err() {
            return;
        }
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(v1::CoordinatorMessage { body: Some(In::Plan(p)) })) => {
                    let kind = if p.kind == "rollback" { PlanKind::Rollback } else { PlanKind::Apply };
                    let _ = shared.events.send(RbEvent::Delivered(id.index, kind, Instant::now()));
                    let r = match verified_plan(&shared.trust, &p, kind) {
                        Ok(plan) => {
                            let _ = shared.events.send(RbEvent::Checked(kind, true, String::new()));
                            let status = if kind == PlanKind::Rollback { ReportStatus::RolledBack } else { ReportStatus::Applied };
                            signed_report(id, key, shared, Some(&plan), &p, status, None)
                        }
                        Err((plan, refusal)) => {
                            let _ = shared.events.send(RbEvent::Checked(kind, false, refusal.reason.clone()));
                            signed_report(id, key, shared, plan.as_deref(), &p, ReportStatus::Refused, Some(refusal))
                        }
                    };
                    outbox.push((r.clone(), kind));
                    // As the agent does: acknowledged once it ran, then the result.
                    let ack = msg(Out::Ack(v1::Ack { id: p.id.clone() }));
                    if tx.send(ack).await.is_err() || tx.send(msg(Out::Result(r))).await.is_err() {
                        return;
                    }
                }
                Ok(Some(v1::CoordinatorMessage { body: Some(In::Ack(a)) })) => {
                    if let Some(i) = outbox.iter().position(|(r, _)| r.id == a.id) {
                        let (_, kind) = outbox.remove(i);
                        let _ = shared.events.send(RbEvent::Acked(kind, Instant::now()));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
            _ = tick.tick() => {
                if tx.send(msg(Out::Heartbeat(v1::Heartbeat { sent_unix_ms: 0 }))).await.is_err() {
                    return;
                }
            }
            r = stop.changed() => if r.is_err() { return },
        }
    }
}

/// The delivery's plan, verified as `rewind-agent` verifies a plan before
/// running anything: the bundle's apply envelope, or its pre-signed
/// rollback envelope for the granularity asked, opened against the trust
/// root (threshold of valid signatures from distinct trusted keys, payload
/// type, format, expiry), of the kind asked and naming what the delivery
/// names.
fn verified_plan(
    trust: &TrustFile,
    p: &v1::PlanDelivery,
    kind: PlanKind,
) -> Result<Plan, (Option<Box<Plan>>, RefusalInfo)> {
    let refuse =
        |plan: Option<Box<Plan>>, code: &str, reason: String| (plan, RefusalInfo { code: code.into(), reason });
    let b: Bundle =
        serde_json::from_slice(&p.envelope).map_err(|e| refuse(None, "malformed", format!("not a bundle: {e}")))?;
    let envelope = if kind == PlanKind::Apply {
        &b.apply
    } else {
        let granularity = match p.granularity.as_str() {
            "" => Granularity::Release,
            g => g.parse().map_err(|e: String| refuse(None, "kind", e))?,
        };
        let subject = (granularity != Granularity::Release).then_some(p.subject.as_str());
        b.rollback_envelope(granularity, subject).map_err(|e| refuse(None, "kind", e))?
    };
    let (plan, _) = envelope.open(trust, unix_now()).map_err(|r| refuse(None, r.code, r.to_string()))?;
    if plan.kind != kind || plan.product != p.product || plan.sequence != p.sequence || plan.bundle != b.id {
        let why = format!(
            "the signed plan is {:?} {}@{}, the delivery names {:?} {}@{}",
            plan.kind, plan.product, plan.sequence, kind, p.product, p.sequence
        );
        return Err(refuse(Some(Box::new(plan)), "kind", why));
    }
    Ok(plan)
}

/// A result for the delivery's plan (`None`: it could not be read), signed
/// with the agent's key as `rewind-agent` signs its outbox (chain point:
/// the empty chain).
fn signed_report(
    id: &SimIdentity,
    key: &SigningKey,
    shared: &RbShared,
    plan: Option<&Plan>,
    delivery: &v1::PlanDelivery,
    status: ReportStatus,
    refusal: Option<RefusalInfo>,
) -> v1::Result {
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).expect("OS random source");
    let rid = format!("res-{}-{}-{}", id.index, status.as_str(), hex::encode(nonce));
    let schema = Some(shared.hello_target.schema_digest.clone());
    let data = Some(shared.hello_target.data_digest.clone());
    let target = TargetResult {
        name: shared.hello_target.name.clone(),
        schema_before: schema.clone(),
        schema_after: schema,
        data_before: data.clone(),
        data_after: data,
        proof: (status == ReportStatus::RolledBack).then(|| "identical".into()),
        ..TargetResult::default()
    };
    let payload = ReportPayload {
        format: REPORT_FORMAT.into(),
        id: rid.clone(),
        agent_key: hex::encode(key.verifying_key().as_bytes()),
        agent_keyid: rewind_shared::trust::key_id(&key.verifying_key()),
        plan: plan.map_or_else(String::new, |p| format!("pln-sim-{}-{}", id.index, p.id)),
        signed_plan: plan.map(|p| p.id.clone()),
        bundle: Some(delivery.plan_id.clone()),
        product: delivery.product.clone(),
        release: plan.map_or_else(String::new, |p| p.release.clone()),
        sequence: delivery.sequence,
        kind: plan.map(|p| p.kind),
        status,
        state: status.as_str().into(),
        targets: if refusal.is_some() { Vec::new() } else { vec![target] },
        message: format!("fleet_load simulated {}", status.as_str()),
        millis: Some(1),
        failed_step: None,
        refusal,
        chain: ChainPoint { seq: 0, head: rewind_shared::audit::GENESIS },
        audit_since: Vec::new(),
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    let bytes = serde_json::to_vec(&payload).expect("report serialises");
    let signed = SignedReport::sign_bytes(&bytes, key);
    let wire = match status {
        ReportStatus::Applied => v1::ResultStatus::Applied,
        ReportStatus::RolledBack => v1::ResultStatus::RolledBack,
        ReportStatus::Failed => v1::ResultStatus::Failed,
        ReportStatus::Refused => v1::ResultStatus::Refused,
    };
    v1::Result {
        id: rid,
        plan_id: payload.plan,
        status: wire as i32,
        report: bytes,
        signature: hex::decode(signed.signature).expect("hex"),
        digests: Vec::new(),
        audit: None,
        reason: payload.refusal.map(|r| r.reason).unwrap_or_default(),
    }
}
