//! `fleet_load`: the fleet-scale benchmark (issue 5 "Benchmarks", issue 8
//! item 5). For each N it starts a real `rewind-coordinator` (SQLite store,
//! its own CA, a 1-of-1 trust root and a signed release bundle), enrolls N
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
//!   the coordinator, counted when acknowledged).
//!
//! Ratios to the floor and PASS/MISS against the goals are printed at the
//! end, with one JSON line per N. See docs/benchmarks.md, "Fleet".

#[path = "../fleet/mod.rs"]
mod fleet;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use fleet::{Command, Event, Shared, SimIdentity};
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::wire::v1;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Proc};
use tokio::sync::{mpsc, watch};

#[derive(Parser)]
#[command(about = "Fleet-scale benchmark: the coordinator beside a bare tonic TLS fan-out floor")]
struct Args {
    /// Numbers of agents, one full run each (e.g. --agents 100 --agents 1000).
    #[arg(long = "agents", required = true)]
    agents: Vec<usize>,
    /// Results sent in the ingestion phase, spread over the agents (at least one each).
    #[arg(long, default_value_t = 10_000)]
    results: usize,
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
}

/// Goals (issue 5; issue 8 for the scale figures).
const PUSH_P99_GOAL: f64 = 1.3;
const RSS_GOAL: f64 = 1.3;
const RESULTS_GOAL: f64 = 5000.0;
const RECONNECT_GOAL_10K: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let args = Args::parse();
    rewind_shared::channel::install_crypto();
    let nofile = raise_nofile()?;
    let max = *args.agents.iter().max().expect("required");
    if max + 512 > nofile {
        bail!(
            "{max} agents need about {} file descriptors in this process; the hard limit is {nofile}: \
             run fewer agents (spreading one N over several load generator processes is not implemented yet)",
            max + 512
        );
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
    let scratch =
        args.scratch.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("fleet_load-{}", std::process::id())));
    std::fs::create_dir_all(&scratch)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
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
    let release = rt.block_on(prepare_release(&bin_dir, &scratch))?;
    let mut all = Vec::new();
    for &n in &args.agents {
        let dir = scratch.join(format!("n{n}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let figures = rt.block_on(one_run(&args, &bin_dir, &dir, &release, n))?;
        figures.print();
        all.push(figures);
    }
    println!("\nsummary");
    for f in &all {
        f.verdicts();
    }
    for f in &all {
        println!("{}", f.json());
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    if args.scratch.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}

/// Keys, a 1-of-1 trust root, a sample database and the signed bundle of a
/// one-migration release, made once per scratch directory.
struct Release {
    trust: PathBuf,
    bundle: PathBuf,
    target: v1::TargetState,
}

async fn prepare_release(bin: &Path, scratch: &Path) -> Result<Release> {
    let d = scratch.join("release");
    let bundle = d.join("bench.bundle.json");
    let sample = d.join("kv.db");
    if !bundle.exists() {
        std::fs::create_dir_all(d.join("rel/migrations/0001_kv"))?;
        std::fs::write(
            d.join("rel/release.toml"),
            "name = \"bench\"\nversion = \"1.0.0\"\nsequence = 1\napp_version = \"1.0.0\"\nowner = \"bench\"\n\
             on_call = \"bench\"\n\n[[target]]\nname = \"kv\"\n\n[[migration]]\nid = \"0001_kv\"\ntarget = \"kv\"\n\
             after = []\n\n[rollout]\nwaves = [{ name = \"all\", percent = 100 }]\n",
        )?;
        std::fs::write(d.join("rel/migrations/0001_kv/up.sql"), "INSERT INTO kv(k, v) VALUES ('bench', '1');\n")?;
        std::fs::write(d.join("rel/migrations/0001_kv/down.sql"), "DELETE FROM kv WHERE k = 'bench';\n")?;
        std::fs::write(
            d.join("rel/migrations/0001_kv/verify.sql"),
            "SELECT count(*) = 1 FROM kv WHERE k = 'bench';\n",
        )?;
        let _ = std::fs::remove_file(&sample);
        rusqlite::Connection::open(&sample)?.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT);")?;
        let p = |x: &str| d.join(x).to_string_lossy().into_owned();
        ctl(bin, &["keys", "generate", "--out", &p("signer")], &[]).await?;
        ctl(bin, &["trust", "init", "--threshold", "1", "--key", &p("signer.pub"), "--out", &p("trust.toml")], &[])
            .await?;
        let tmp = p("bench.bundle.tmp");
        ctl(bin, &["release", "build", &p("rel"), "--sample", &format!("kv={}", sample.display()), "--out", &tmp], &[])
            .await?;
        ctl(bin, &["release", "sign", &tmp, "--key", &p("signer.key")], &[]).await?;
        std::fs::rename(&tmp, &bundle)?;
    }
    let conn = rusqlite::Connection::open(&sample)?;
    let digest = rewind_shared::digest::database_digest(&conn)?;
    Ok(Release {
        trust: d.join("trust.toml"),
        bundle,
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
    enroll: Duration,
    floor: Side,
    coord: Side,
    results: usize,
    results_acked: usize,
    results_time: Duration,
    reconnect: Option<Duration>,
    reconnected: usize,
    reconnect_first: Option<Duration>,
    coord_rss_after_kib: u64,
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
        println!("\nN = {n}");
        println!("  enrollment of {n} agents (CSR each):  {:.2} s", self.enroll.as_secs_f64());
        println!("                                  {:>14} {:>14} {:>8}", "coordinator", "tonic floor", "ratio");
        println!("  all connected                   {:>14} {:>14}", opt(self.coord.connect), opt(self.floor.connect));
        for (name, q) in [("push p50", 50.0), ("push p99", 99.0)] {
            let (c, f) = (self.coord.p(q), self.floor.p(q));
            println!("  {name:<30}  {:>14} {:>14} {:>7.2}x", ms(c), ms(f), ratio(c, f));
        }
        let (c, f) = (self.coord.max(), self.floor.max());
        println!("  {:<30}  {:>14} {:>14} {:>7.2}x", "push max", ms(c), ms(f), ratio(c, f));
        println!(
            "  {:<30}  {:>14} {:>14}",
            "agents that got the push",
            format!("{}/{n}", self.coord.push.len()),
            format!("{}/{n}", self.floor.push.len())
        );
        if let Some(call) = self.coord.push_call {
            println!("  StartRollout call returned after {}", ms(call));
        }
        let (c, f) = (self.coord.rss_per_agent_kib(n), self.floor.rss_per_agent_kib(n));
        println!("  {:<30}  {:>10.1} KiB {:>10.1} KiB {:>7.2}x", "RSS per idle agent", c, f, c / f.max(1e-9));
        println!(
            "  {:<30}  {:>10} KiB {:>10} KiB",
            "RSS at 0 / at N (coordinator)", self.coord.rss0_kib, self.coord.rssn_kib
        );
        println!(
            "  {:<30}  {:>10} KiB {:>10} KiB",
            "RSS at 0 / at N (floor)", self.floor.rss0_kib, self.floor.rssn_kib
        );
        println!(
            "  results ingested:  {}/{} acknowledged in {:.2} s = {:.0}/s (SQLite store)",
            self.results_acked,
            self.results,
            self.results_time.as_secs_f64(),
            self.results_per_s()
        );
        println!(
            "  reconnect after SIGTERM restart:  all {}/{n} in {} (first after {}), from the new process's start",
            self.reconnected,
            opt(self.reconnect),
            opt(self.reconnect_first)
        );
        println!("  coordinator RSS after the run: {} KiB", self.coord_rss_after_kib);
    }

    fn verdicts(&self) {
        let n = self.n;
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        let push = ratio(self.coord.p(99.0), self.floor.p(99.0));
        let complete = self.coord.push.len() == n && self.floor.push.len() == n;
        println!(
            "  N={n:<6} push p99 {:.2}x floor (goal <= {PUSH_P99_GOAL}x): {}",
            push,
            verdict(complete && push <= PUSH_P99_GOAL)
        );
        let rss = self.coord.rss_per_agent_kib(n) / self.floor.rss_per_agent_kib(n).max(1e-9);
        println!("  N={n:<6} RSS per idle agent {rss:.2}x floor (goal <= {RSS_GOAL}x): {}", verdict(rss <= RSS_GOAL));
        let r = self.results_per_s();
        println!(
            "  N={n:<6} results {r:.0}/s into SQLite (goal >= {RESULTS_GOAL}/s): {}",
            verdict(self.results_acked == self.results && r >= RESULTS_GOAL)
        );
        if n >= 10_000 {
            println!(
                "  N={n:<6} reconnect {} (goal < {}s): {}",
                opt(self.reconnect),
                RECONNECT_GOAL_10K.as_secs(),
                verdict(self.reconnect.is_some_and(|d| d < RECONNECT_GOAL_10K))
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
            "enroll_s": self.enroll.as_secs_f64(),
            "coordinator": side(&self.coord),
            "floor": side(&self.floor),
            "start_rollout_call_ms": self.coord.push_call.map(|d| d.as_secs_f64() * 1000.0),
            "results": self.results,
            "results_acked": self.results_acked,
            "results_per_s": self.results_per_s(),
            "reconnect_s": s(self.reconnect),
            "reconnected": self.reconnected,
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

async fn start_coordinator(bin: &Path, state: &Path, port: u16, trust: &Path) -> Result<Child> {
    let child = Proc::new(bin.join("rewind-coordinator"))
        .args(["--state", &state.to_string_lossy()])
        .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
        .env("REWIND_WEB_LISTEN", "127.0.0.1:0")
        .env("REWIND_TRUST", trust)
        .env("REWIND_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting rewind-coordinator")?;
    Ok(child)
}

async fn wait_ready(bin: &Path, env: &[(&str, String)]) -> Result<()> {
    let start = Instant::now();
    loop {
        if ctl(bin, &["agents", "--json"], env).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the coordinator did not answer Admin calls within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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

/// A fleet of simulated agents pointed at one server.
struct Sims {
    events: mpsc::UnboundedReceiver<Event>,
    commands: watch::Sender<Command>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sims {
    fn start(ids: &[SimIdentity], url: &str, ca_pem: &str, target: &v1::TargetState) -> Self {
        let (etx, events) = mpsc::unbounded_channel();
        let (commands, crx) = watch::channel(Command::Idle);
        let shared = Arc::new(Shared {
            url: url.to_string(),
            ca_pem: ca_pem.to_string(),
            hello_target: target.clone(),
            events: etx,
            commands: crx,
        });
        let tasks = ids.iter().map(|id| tokio::spawn(fleet::run(id.clone(), Arc::clone(&shared)))).collect();
        Sims { events, commands, tasks }
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

async fn floor_side(
    args: &Args,
    bin: &Path,
    state: &Path,
    bundle: &Path,
    ids: &[SimIdentity],
    ca_pem: &str,
    target: &v1::TargetState,
) -> Result<Side> {
    let n = ids.len();
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
    let pid = floor.id().context("floor pid")?;
    let mut stdin = floor.stdin.take().context("floor stdin")?;
    let mut lines = BufReader::new(floor.stdout.take().context("floor stdout")?).lines();
    let first = lines.next_line().await?.context("tonic_floor printed nothing")?;
    let addr = first.strip_prefix("listening ").context("tonic_floor's first line")?.to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut side = Side { rss0_kib: rss_kib(pid)?, ..Side::default() };
    let t0 = Instant::now();
    let mut sims = Sims::start(ids, &format!("https://{addr}"), ca_pem, target);
    let times = sims.wait(n, args.timeout, connected).await;
    side.connected = times.len();
    side.connect = (times.len() == n).then(|| times.last().map_or(Duration::ZERO, |t| *t - t0));
    tokio::time::sleep(SETTLE).await;
    side.rssn_kib = rss_kib(pid)?;
    let t0 = Instant::now();
    stdin.write_all(b"push\n").await?;
    stdin.flush().await?;
    let got = sims.wait(n, args.timeout, plan).await;
    side.push = got.iter().map(|t| *t - t0).collect();
    side.push.sort();
    let _ = lines.next_line().await;
    sims.stop().await;
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), floor.wait()).await;
    let _ = floor.kill().await;
    Ok(side)
}

#[allow(clippy::too_many_lines)]
async fn one_run(args: &Args, bin: &Path, dir: &Path, release: &Release, n: usize) -> Result<Figures> {
    println!("\n== N = {n}: coordinator in {}", dir.display());
    let state = dir.join("coordinator");
    let port = free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let mut coord = start_coordinator(bin, &state, port, &release.trust).await?;
    let env = vec![
        ("REWIND_COORDINATOR", url.clone()),
        ("REWIND_CA", state.join("ca.pem").to_string_lossy().into_owned()),
        ("REWIND_TOKEN_FILE", state.join("admin.token").to_string_lossy().into_owned()),
    ];
    wait_ready(bin, &env).await?;
    let ca_pem = std::fs::read_to_string(state.join("ca.pem"))?;
    let token = ctl(bin, &["token", "create", "--uses", &n.to_string(), "--ttl", "2h"], &env).await?.trim().to_string();
    let mut fig = Figures { n, ..Figures::default() };
    let t = Instant::now();
    let ids = enroll_all(&url, &ca_pem, &token, n, args.enroll_concurrency).await?;
    fig.enroll = t.elapsed();
    println!("  enrolled {n} agents in {:.2} s", fig.enroll.as_secs_f64());
    ctl(bin, &["release", "upload", &release.bundle.to_string_lossy()], &env).await?;

    // The floor first, with the same identities, then the coordinator.
    fig.floor = floor_side(args, bin, &state, &release.bundle, &ids, &ca_pem, &release.target).await?;
    println!("  floor measured ({} connected, {} got the push)", fig.floor.connected, fig.floor.push.len());

    let pid = coord.id().context("coordinator pid")?;
    fig.coord.rss0_kib = rss_kib(pid)?;
    let t0 = Instant::now();
    let mut sims = Sims::start(&ids, &url, &ca_pem, &release.target);
    let times = sims.wait(n, args.timeout, connected).await;
    fig.coord.connected = times.len();
    fig.coord.connect = (times.len() == n).then(|| times.last().map_or(Duration::ZERO, |t| *t - t0));
    println!("  coordinator: {}/{n} connected in {}", times.len(), opt(fig.coord.connect));
    tokio::time::sleep(SETTLE).await;
    fig.coord.rssn_kib = rss_kib(pid)?;

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
    let t0 = Instant::now();
    let _ = sims.commands.send(Command::SendResults { round: 1, count: u32::try_from(per)? });
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut last = t0;
    while fig.results_acked < fig.results {
        match tokio::time::timeout_at(deadline, sims.events.recv()).await {
            Ok(Some(Event::ResultAcked(t))) => {
                fig.results_acked += 1;
                last = t;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    fig.results_time = last - t0;
    println!(
        "  results: {}/{} acknowledged in {:.2} s",
        fig.results_acked,
        fig.results,
        fig.results_time.as_secs_f64()
    );

    // Restart: SIGTERM (streams end with UNAVAILABLE), a new process on the same state and port.
    let _ = Proc::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), coord.wait()).await;
    let _ = coord.kill().await;
    let t0 = Instant::now();
    let mut coord = start_coordinator(bin, &state, port, &release.trust).await?;
    let times = sims.wait(n, args.timeout, connected).await;
    fig.reconnected = times.len();
    fig.reconnect = (times.len() == n).then(|| times.last().map_or(Duration::ZERO, |t| *t - t0));
    fig.reconnect_first = times.first().map(|t| *t - t0);
    if let Some(pid) = coord.id() {
        fig.coord_rss_after_kib = rss_kib(pid).unwrap_or(0);
        let _ = Proc::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    sims.stop().await;
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
