//! `rollback_real`: halt to verified rollback with real agents (issue 6,
//! benchmark (b)). It starts a real `rewind-coordinator` (SQLite store, its
//! own CA, a 1-of-1 trust root) and N real `rewind-agent run` daemons, each
//! enrolled for real and holding its own small notes and settings databases
//! seeded from the notes-app example; rolls the example release (one wave of
//! the whole fleet) out to all of them; and at T0 asks for the rollback
//! (the Admin Rollback call `rewindctl rollback notes` makes). Measured:
//!
//! - T0 to the rollout's `rolled_back`: every endpoint ran the pre-signed
//!   rollback plan after checking it against its own trust root, proved it
//!   by digest and `after-rollback` checks, and its signed result was
//!   verified and stored by the coordinator (the status is read every
//!   10 ms);
//! - from the coordinator's audit log (its clock): T0 to `rolling_back`
//!   (the decision recorded, plans queued), to the last rollback result
//!   stored, to `rolled_back`.
//!
//! An agent sends the signed result of a plan as soon as the plan ran
//! (docs/protocol.md "Results"; before, it waited for its next heartbeat),
//! so the figure should not depend on the coordinator's heartbeat:
//! `--heartbeat-seconds` (default 30, the coordinator's own default; the
//! E2E tests use 1) lets a run show that.
//!
//! Each run is a new sequence of the same release (the endpoints are back
//! at their seed state after each rollback); after each one every
//! endpoint's databases must be back at their start digests (`rewind-agent
//! checksum --json`), else the binary fails. The goal (≤ 2 s) is judged on
//! the worst run and printed as PASS/MISS, with one JSON line at the end.
//! See docs/benchmarks.md, "Fleet".

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::wire::v1;
use tokio::process::{Child, Command as Proc};

#[derive(Parser)]
#[command(
    about = "Halt to verified rollback with N real rewind-agent processes on small real databases",
    after_help = "Example: rollback_real --agents 20 --bin-dir target/release\n         \
                  scripts/bench-fleet.sh --real-agents 20   # builds release binaries first"
)]
struct Args {
    /// Number of rewind-agent processes.
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Rollouts rolled back one after the other (each a new sequence of the example release).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the coordinator state, the endpoints and the bundles go (default: a new temp dir, removed after).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Directory of rewind-coordinator, rewindctl and rewind-agent (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The notes-app example: seed-notes.sql, seed-settings.sql, releases/2026.11.0.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/notes-app"))]
    example: PathBuf,
    /// The coordinator's heartbeat (REWIND_HEARTBEAT_SECONDS; 30 is its default). A
    /// `rewind-agent run` sends a plan's result as soon as the plan ran, whatever it is.
    #[arg(long, default_value_t = 30)]
    heartbeat_seconds: u32,
    /// How long to wait for each step before failing.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Issue 6: halt decision to the last endpoint's verified rollback result.
const GOAL: Duration = Duration::from_secs(2);
/// How often the rollout's status is read while waiting.
const POLL: Duration = Duration::from_millis(10);

/// The example's `[rollout]` replaced by one wave of the whole fleet.
const ONE_WAVE: &str = "[rollout]\nwaves = [{ name = \"all\", percent = 100 }]\nreport_timeout = \"10m\"\n\
                        auto_rollback = true\n";

const PRODUCT: &str = "notes";
const TARGETS: [&str; 2] = ["notes", "settings"];

fn main() -> Result<()> {
    let args = Args::parse();
    channel::install_crypto();
    if args.agents == 0 || args.runs == 0 {
        bail!("--agents and --runs must be at least 1");
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("binary directory")?.to_path_buf(),
    };
    for b in ["rewind-coordinator", "rewindctl", "rewind-agent"] {
        if !bin_dir.join(b).exists() {
            bail!(
                "{} not found: build with `cargo build --release --bins` or pass --bin-dir",
                bin_dir.join(b).display()
            );
        }
    }
    for f in ["seed-notes.sql", "seed-settings.sql", "releases/2026.11.0/release.toml"] {
        if !args.example.join(f).exists() {
            bail!("{} not found: pass --example examples/notes-app", args.example.join(f).display());
        }
    }
    let scratch = args
        .scratch
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("rollback_real-{}", std::process::id())));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    println!(
        "rollback_real: {} rewind-agent processes, {} run(s), coordinator heartbeat {} s, {} core(s), load average {}",
        args.agents,
        args.runs,
        args.heartbeat_seconds,
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        load_average()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(bench(&args, &bin_dir, &scratch));
    rt.shutdown_timeout(Duration::from_secs(5));
    if args.scratch.is_none() && result.is_ok() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let runs = result?;
    println!("\nsummary");
    let mut times: Vec<Duration> = runs.iter().map(|r| r.rolled_back).collect();
    times.sort();
    let worst = *times.last().expect("at least one run");
    let median = times[(times.len() - 1) / 2];
    println!(
        "  N={:<4} heartbeat {:>2} s: halt to verified rollback: worst {:.3} s, median {:.3} s of {} run(s) (goal <= {} s): {}",
        args.agents,
        args.heartbeat_seconds,
        worst.as_secs_f64(),
        median.as_secs_f64(),
        runs.len(),
        GOAL.as_secs(),
        if worst <= GOAL { "PASS" } else { "MISS" }
    );
    let json = serde_json::json!({
        "n": args.agents,
        "heartbeat_seconds": args.heartbeat_seconds,
        "load_average": load_average(),
        "rolled_back_worst_ms": worst.as_secs_f64() * 1000.0,
        "rolled_back_median_ms": median.as_secs_f64() * 1000.0,
        "goal_ms": GOAL.as_secs_f64() * 1000.0,
        "runs": runs.iter().map(Run::json).collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One rollout rolled back.
struct Run {
    version: String,
    sequence: u64,
    rollout: Duration,
    call: Duration,
    plans: u32,
    rolled_back: Duration,
    /// From the audit log: T0 to `rolling_back`, the last rollback result, `rolled_back` (ms).
    audit: [Option<i64>; 3],
    /// T0 to the first and the last endpoint signing its rollback result
    /// (the reports' own `time`, the endpoints' clock), ms.
    signed: (Option<i64>, Option<i64>),
    back_at_start: usize,
}

impl Run {
    fn print(&self, n: usize) {
        let a = |v: Option<i64>| v.map_or_else(|| "not found".into(), |v| format!("+{v} ms"));
        println!(
            "  {PRODUCT} {} (sequence {}): applied on {n} endpoints in {:.2} s; at T0 the Rollback call \
             (returned after {:.1} ms, {} plans)",
            self.version,
            self.sequence,
            self.rollout.as_secs_f64(),
            self.call.as_secs_f64() * 1000.0,
            self.plans
        );
        println!(
            "    halt to verified rollback: rolled_back after {:.3} s (status read every {} ms)",
            self.rolled_back.as_secs_f64(),
            POLL.as_millis()
        );
        println!(
            "    audit (coordinator clock): rolling_back {}, last rollback result {}, rolled_back {}",
            a(self.audit[0]),
            a(self.audit[1]),
            a(self.audit[2])
        );
        println!(
            "    endpoints signed their rollback results {} to {} (then sent with their next heartbeat)",
            a(self.signed.0),
            a(self.signed.1)
        );
        println!("    {}/{n} endpoints back at their start digests (rewind-agent checksum)", self.back_at_start);
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "sequence": self.sequence,
            "rollout_s": self.rollout.as_secs_f64(),
            "call_ms": self.call.as_secs_f64() * 1000.0,
            "plans": self.plans,
            "rolled_back_ms": self.rolled_back.as_secs_f64() * 1000.0,
            "audit_rolling_back_ms": self.audit[0],
            "audit_last_result_ms": self.audit[1],
            "audit_rolled_back_ms": self.audit[2],
            "signed_first_ms": self.signed.0,
            "signed_last_ms": self.signed.1,
            "back_at_start": self.back_at_start,
        })
    }
}

/// One endpoint: its directory, config, databases and their seed digests.
struct Endpoint {
    dir: PathBuf,
    config: PathBuf,
    start: Vec<String>,
    daemon: Option<Child>,
}

#[allow(clippy::too_many_lines)]
async fn bench(args: &Args, bin: &Path, scratch: &Path) -> Result<Vec<Run>> {
    let p = |x: &str| scratch.join(x).to_string_lossy().into_owned();
    ctl(bin, &["keys", "generate", "--out", &p("signer")], &[]).await?;
    ctl(bin, &["trust", "init", "--threshold", "1", "--key", &p("signer.pub"), "--out", &p("trust.toml")], &[]).await?;
    let samples = scratch.join("samples");
    std::fs::create_dir_all(&samples)?;
    for t in TARGETS {
        seed(&args.example, &samples, t)?;
    }
    let mut bundles = Vec::new();
    for k in 0..args.runs {
        let sequence = 7 + k as u64;
        let version = if k == 0 { "2026.11.0".to_string() } else { format!("2026.11.0-run{}", k + 1) };
        bundles.push((version.clone(), sequence, release_bundle(args, bin, scratch, &version, sequence).await?));
    }

    let state = scratch.join("coordinator");
    let port = free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let log = std::fs::File::create(scratch.join("coordinator.log"))?;
    let mut coord = Proc::new(bin.join("rewind-coordinator"))
        .args(["--state", &state.to_string_lossy()])
        .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
        .env("REWIND_WEB_LISTEN", "127.0.0.1:0")
        .env("REWIND_TRUST", scratch.join("trust.toml"))
        .env("REWIND_HEARTBEAT_SECONDS", args.heartbeat_seconds.to_string())
        .env("REWIND_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting rewind-coordinator")?;
    let env = vec![
        ("REWIND_COORDINATOR", url.clone()),
        ("REWIND_CA", state.join("ca.pem").to_string_lossy().into_owned()),
        ("REWIND_TOKEN_FILE", state.join("admin.token").to_string_lossy().into_owned()),
    ];
    let started = Instant::now();
    while ctl(bin, &["agents", "--json"], &env).await.is_err() {
        if started.elapsed() > args.timeout {
            bail!("the coordinator did not answer within {:?}; see {}", args.timeout, p("coordinator.log"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca_pem = std::fs::read_to_string(state.join("ca.pem"))?;
    let admin_token = std::fs::read_to_string(state.join("admin.token"))?.trim().to_string();
    let n = args.agents;
    let token = ctl(bin, &["token", "create", "--uses", &n.to_string(), "--ttl", "2h"], &env).await?.trim().to_string();

    // N endpoints, enrolled a few at a time (each enrollment is a process
    // with a key, a CSR and a TLS handshake).
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (sem, bin, token) = (Arc::clone(&sem), bin.to_path_buf(), token.clone());
        let (dir, example) = (scratch.join(format!("endpoint{i}")), args.example.clone());
        let (port, ca, trust) = (port, state.join("ca.pem"), scratch.join("trust.toml"));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            std::fs::create_dir_all(&dir)?;
            for t in TARGETS {
                seed(&example, &dir, t)?;
            }
            let config = dir.join("agent.toml");
            let mut text = format!(
                "coordinator = \"https://127.0.0.1:{port}\"\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n",
                ca.display(),
                trust.display()
            );
            for t in TARGETS {
                text.push_str(&format!("\n[[target]]\nproduct = \"{PRODUCT}\"\nname = \"{t}\"\npath = \"{t}.db\"\n"));
            }
            std::fs::write(&config, text)?;
            agent(&bin, &["enroll", "--config", &config.to_string_lossy(), "--token", &token]).await?;
            let start = digests(&bin, &dir).await?;
            Ok::<_, anyhow::Error>(Endpoint { dir, config, start, daemon: None })
        }));
    }
    let mut endpoints = Vec::with_capacity(n);
    for t in tasks {
        endpoints.push(t.await??);
    }
    for e in &mut endpoints {
        let log = std::fs::File::create(e.dir.join("agent.log"))?;
        e.daemon = Some(
            Proc::new(bin.join("rewind-agent"))
                .args(["run", "--config", &e.config.to_string_lossy()])
                .env("REWIND_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting rewind-agent run")?,
        );
    }
    let enrolled = t.elapsed();
    loop {
        let a: serde_json::Value = serde_json::from_str(&ctl(bin, &["agents", "--json"], &env).await?)?;
        let ready = a.as_array().map_or(0, |a| {
            a.iter().filter(|x| x["connected"] == true && x["targets"].as_array().is_some_and(|t| t.len() == 2)).count()
        });
        if ready == n {
            break;
        }
        if t.elapsed() > args.timeout {
            bail!("{ready}/{n} agents connected with their inventory after {:?}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  {n} endpoints seeded and enrolled in {:.2} s, all connected with their inventory after {:.2} s",
        enrolled.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    for (_, _, b) in &bundles {
        ctl(bin, &["release", "upload", &b.to_string_lossy()], &env).await?;
    }

    let mut admin = admin_client(&url, &ca_pem, &admin_token).await?;
    let mut runs = Vec::new();
    for (version, sequence, _) in &bundles {
        let t = Instant::now();
        let req = v1::StartRolloutRequest { product: PRODUCT.into(), version: version.clone(), ..Default::default() };
        admin.start_rollout(req).await.map_err(|s| anyhow!("StartRollout {version}: {}", s.message()))?;
        let s = wait_state(&mut admin, args.timeout, |s| s == "done" || s == "halted").await?;
        if s["state"] != "done" {
            bail!("{PRODUCT} {version} did not roll out: {s}");
        }
        let rollout = t.elapsed();
        let applied = s["agents"].as_array().map_or(0, |a| a.iter().filter(|x| x["outcome"] == "applied").count());
        if applied != n {
            bail!("{applied}/{n} endpoints applied {PRODUCT} {version}: {s}");
        }
        for e in &endpoints {
            if digests(bin, &e.dir).await? == e.start {
                bail!("{}: the databases did not change when {version} was applied", e.dir.display());
            }
        }

        // T0: the operator's decision is the Admin call.
        let (t0, wall0) = (Instant::now(), SystemTime::now());
        let mut caller = admin.clone();
        let req = v1::RollbackRequest {
            product: PRODUCT.into(),
            reason: "rollback_real: halt to verified rollback".into(),
            ..Default::default()
        };
        let call = tokio::spawn(async move { caller.rollback(req).await.map(|r| (r.into_inner(), t0.elapsed())) });
        let s = wait_state(&mut admin, args.timeout, |s| s == "rolled_back" || s == "halted").await?;
        let rolled_back = t0.elapsed();
        let (resp, took) = call.await?.map_err(|s| anyhow!("Rollback: {}", s.message()))?;
        if s["state"] != "rolled_back" {
            bail!("the rollback of {PRODUCT} {version} did not end rolled back: {s}");
        }
        let audit = audit_times(&mut admin, &format!("{PRODUCT}@{sequence}"), wall0).await?;
        let signed = signed_times(&state.join("coordinator.db"), *sequence, wall0)?;
        let mut back = 0;
        for e in &endpoints {
            let now = digests(bin, &e.dir).await?;
            if now == e.start {
                back += 1;
            } else {
                println!("  {}: digests {now:?}, at start {:?}", e.dir.display(), e.start);
            }
        }
        let run = Run {
            version: version.clone(),
            sequence: *sequence,
            rollout,
            call: took,
            plans: resp.agents,
            rolled_back,
            audit,
            signed,
            back_at_start: back,
        };
        run.print(n);
        if back != n {
            bail!("{}/{n} endpoints are back at their start digests after the rollback of {version}", back);
        }
        runs.push(run);
    }
    for e in &mut endpoints {
        if let Some(mut d) = e.daemon.take() {
            let _ = d.kill().await;
        }
    }
    let _ = coord.kill().await;
    Ok(runs)
}

/// A copy of the example release as `version` / `sequence` with one wave,
/// built against the seed samples and signed: its bundle.
async fn release_bundle(args: &Args, bin: &Path, scratch: &Path, version: &str, sequence: u64) -> Result<PathBuf> {
    let dir = scratch.join("releases").join(version);
    copy_dir(&args.example.join("releases/2026.11.0"), &dir)?;
    let toml = dir.join("release.toml");
    let text = std::fs::read_to_string(&toml)?;
    let head = text.find("\n[rollout]").map_or(text.as_str(), |i| &text[..i]);
    let head = head
        .replace("version = \"2026.11.0\"", &format!("version = \"{version}\""))
        .replace("sequence = 7", &format!("sequence = {sequence}"));
    std::fs::write(&toml, format!("{head}\n\n{ONE_WAVE}"))?;
    let out = scratch.join(format!("{version}.bundle.json"));
    let (d, o) = (dir.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
    let mut build = vec!["release".to_string(), "build".into(), d];
    for t in TARGETS {
        build.push("--sample".into());
        build.push(format!("{t}={}", scratch.join("samples").join(format!("{t}.db")).display()));
    }
    build.push("--out".into());
    build.push(o.clone());
    ctl(bin, &build.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await?;
    ctl(bin, &["release", "sign", &o, "--key", &scratch.join("signer.key").to_string_lossy()], &[]).await?;
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// `dir/<target>.db` from the example's `seed-<target>.sql`.
fn seed(example: &Path, dir: &Path, target: &str) -> Result<()> {
    let sql = std::fs::read_to_string(example.join(format!("seed-{target}.sql")))?;
    rusqlite::Connection::open(dir.join(format!("{target}.db")))?.execute_batch(&sql)?;
    Ok(())
}

/// The content digest of each target database of an endpoint.
async fn digests(bin: &Path, dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in TARGETS {
        let db = dir.join(format!("{t}.db"));
        let v: serde_json::Value =
            serde_json::from_str(&agent(bin, &["checksum", "--db", &db.to_string_lossy(), "--json"]).await?)?;
        out.push(v["digest"].as_str().context("checksum --json has a digest")?.to_string());
    }
    Ok(out)
}

async fn ctl(bin: &Path, args: &[&str], env: &[(&str, String)]) -> Result<String> {
    run(&bin.join("rewindctl"), args, env).await
}

async fn agent(bin: &Path, args: &[&str]) -> Result<String> {
    run(&bin.join("rewind-agent"), args, &[]).await
}

async fn run(program: &Path, args: &[&str], env: &[(&str, String)]) -> Result<String> {
    let out = Proc::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("REWIND_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

/// Reads the product's rollout status every [`POLL`] until its state
/// satisfies `until`; returns that status.
async fn wait_state(admin: &mut Admin, limit: Duration, until: impl Fn(&str) -> bool) -> Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        let req = v1::RolloutStatusRequest { product: PRODUCT.into(), ..Default::default() };
        let json =
            admin.rollout_status(req).await.map_err(|s| anyhow!("RolloutStatus: {}", s.message()))?.into_inner().json;
        let s: serde_json::Value = serde_json::from_str(&json)?;
        if until(s["state"].as_str().unwrap_or("")) {
            return Ok(s);
        }
        if start.elapsed() > limit {
            bail!("waited {limit:?} for the rollout; last status: {s}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The first and last time (ms after `t0`) an endpoint signed a rollback
/// result of the sequence, from the reports the coordinator stored.
fn signed_times(db: &Path, sequence: u64, t0: SystemTime) -> Result<(Option<i64>, Option<i64>)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut st = c.prepare("SELECT payload FROM results WHERE product = ?1 AND sequence = ?2")?;
    let base = unix_ms(t0);
    let mut times = Vec::new();
    for p in st.query_map(rusqlite::params![PRODUCT, i64::try_from(sequence)?], |r| r.get::<_, Vec<u8>>(0))? {
        let v: serde_json::Value = serde_json::from_slice(&p?)?;
        if v["kind"] == "rollback"
            && let Some(t) = v["time"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok())
        {
            times.push(unix_ms(t) - base);
        }
    }
    Ok((times.iter().min().copied(), times.iter().max().copied()))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The audit log's times (ms after `t0`, the coordinator's clock) of the
/// rollout's `rolling_back` entry, its last rollback result and its
/// `rolled_back` entry.
async fn audit_times(admin: &mut Admin, rollout: &str, t0: SystemTime) -> Result<[Option<i64>; 3]> {
    let mut stream = admin
        .audit_export(v1::AuditExportRequest {})
        .await
        .map_err(|s| anyhow!("AuditExport: {}", s.message()))?
        .into_inner();
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
