//! `rewindctl demo`: the fleet demo. Everything is real: a coordinator
//! embedded in this process (`rewind_coordinator::run` on this process's
//! tokio runtime, its own state directory, free local ports, a 2-of-3 trust
//! root), one `rewind-agent run` process per endpoint (enrolled with tokens
//! that carry its ring label, talking mTLS), and the operator steps done by
//! running this very `rewindctl` binary with the commands an operator would
//! type (printed in the narrative). Nothing is simulated: every outcome shown
//! is read back from the coordinator (`rollout status --json`, `fleet
//! verify`, `audit verify`) or from the endpoints' databases (digests).
//!
//! The story: release 2026.11.1 (its verify.sql fails on real data) goes to
//! the canary wave, fails there, the coordinator halts and rolls the canaries
//! back, proven by digest, and no other endpoint gets the plan; then 2026.11.0
//! goes through every wave (the demo approves approval waves as its operator)
//! and `fleet verify` finds every endpoint at the rehearsal's predicted
//! schema. The release copies in DIR get demo timings: bakes of seconds, not
//! hours (docs/demo.md).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::demo::{DemoArgs, MARKER, Walk, digest_of, prepare_dir, seed, short};
use crate::error::{Error, Result};
use crate::{examples, output};

/// What the fleet demo creates in its directory (removed on a rerun).
const OWNED: &[&str] = &["notes-app", "keys", "trust.toml", "coordinator", "endpoints", "samples", "bundles", "logs"];

const PRODUCT: &str = "notes";
const BAD: (&str, &str) = ("2026.11.1-bad", "2026.11.1");
const GOOD: (&str, &str) = ("2026.11.0", "2026.11.0");

/// The good release's waves for the demo: the example's four waves with
/// bakes of seconds instead of 15 minutes and an hour, and `early` chosen by
/// label so the story is the same on every run.
const GOOD_ROLLOUT: &str = r#"[rollout]
# rewindctl demo: the example's waves, with bakes of seconds instead of 15m / 1h,
# and `early` chosen by label (ring=early) instead of 5 % of the fleet.
waves = [
  { name = "canary", selector = "ring=canary", bake = "2s" },
  { name = "early",  selector = "ring=early",  bake = "2s" },
  { name = "broad",  percent = 50, bake = "2s", approval = true },
  { name = "all",    percent = 100 },
]
max_failure_ratio = 0.02
min_sample = 20
report_timeout = "60s"
auto_rollback = true
"#;

/// The bad release has no `[rollout]` in the example (one wave: the whole
/// fleet); the demo gives it a canary, as anyone shipping it should.
const BAD_ROLLOUT: &str = r#"[rollout]
# rewindctl demo: a canary first, then everyone.
waves = [
  { name = "canary", selector = "ring=canary", bake = "2s" },
  { name = "all",    percent = 100 },
]
report_timeout = "60s"
auto_rollback = true
"#;

/// Rollout states after which nothing more happens without an operator.
const SETTLED: &[&str] = &["done", "rolled_back", "aborted"];

/// Output of a finished child process.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    fn why(&self) -> String {
        let e = self.stderr.trim();
        if e.is_empty() {
            format!("exit {}: {}", self.code, self.stdout.trim())
        } else {
            format!("exit {}: {e}", self.code)
        }
    }
}

/// One endpoint: its directory, databases, agent process and identity.
struct Endpoint {
    name: String,
    ring: &'static str,
    dir: PathBuf,
    dbs: BTreeMap<String, PathBuf>,
    /// Digests when seeded.
    seeded: BTreeMap<String, String>,
    id: String,
    child: Option<Child>,
}

impl Endpoint {
    fn digests(&self) -> Result<BTreeMap<String, String>> {
        self.dbs.iter().map(|(t, p)| Ok((t.clone(), digest_of(p)?))).collect()
    }

    /// SIGTERM, then up to 10 s for a clean exit, then SIGKILL.
    fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return true };
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&c), rustix::process::Signal::TERM);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success() || status.code().is_none();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The coordinator running inside this process.
struct Embedded {
    rt: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    state: PathBuf,
    listen: SocketAddr,
    web: SocketAddr,
}

impl Embedded {
    fn start(state: &Path, trust: &Path, log: &Path) -> Result<Self> {
        let listen = free_port()?;
        let web = free_port()?;
        let config = rewind_coordinator::config::Config {
            listen,
            web_listen: web,
            state: state.to_path_buf(),
            trust: Some(trust.to_path_buf()),
            heartbeat_seconds: 1,
            ..rewind_coordinator::config::Config::default()
        };
        let file = std::fs::File::create(log)
            .map_err(|e| Error::BadInput(format!("{}: cannot create the coordinator's log: {e}", log.display())))?;
        let filter = tracing_subscriber::EnvFilter::try_from_env("REWIND_LOG").unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
        rewind_shared::channel::install_crypto();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Failed(format!("starting the coordinator's runtime: {e}")))?;
        let task = rt.spawn(rewind_coordinator::run(config));
        Ok(Embedded { rt, task: Some(task), state: state.to_path_buf(), listen, web })
    }

    fn alive(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.listen.port())
    }

    /// Why it ended, once it has.
    fn ended(&mut self) -> String {
        match self.task.take() {
            Some(t) if t.is_finished() => match self.rt.block_on(t) {
                Ok(Ok(())) => "the coordinator stopped (Ctrl-C or SIGTERM)".into(),
                Ok(Err(e)) => format!("the coordinator failed: {e:#}"),
                Err(e) => format!("the coordinator panicked: {e}"),
            },
            Some(t) => {
                self.task = Some(t);
                "the coordinator is running".into()
            }
            None => "the coordinator stopped".into(),
        }
    }

    /// Waits until it ends by itself (Ctrl-C / SIGTERM, caught by its own
    /// signal handler).
    fn wait(&mut self) -> Result<(), String> {
        let Some(t) = self.task.take() else { return Ok(()) };
        match self.rt.block_on(t) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Asks it to stop as on SIGTERM (drain streams, audit checkpoint, flush
    /// the store) and waits for that, at most 30 s.
    fn stop(&mut self) -> Result<(), String> {
        let Some(t) = self.task.take() else { return Ok(()) };
        rewind_coordinator::server::request_shutdown();
        match self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), t).await }) {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("{e:#}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("did not stop within 30 s".into()),
        }
    }

    /// The status page's HTTP status, or None when nothing listens there.
    fn status_page(&self) -> Option<String> {
        http_status(self.web, "/status")
    }
}

fn free_port() -> Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Failed(format!("no free local port: {e}")))
}

/// `GET path` over plain HTTP/1.0; the status line's code, or None when
/// nothing answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/html\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]).lines().next()?.to_string();
    line.split_whitespace().nth(1).map(str::to_string)
}

/// Runs `rewindctl` (this binary) and `rewind-agent` as an operator would.
struct Tools {
    ctl: PathBuf,
    agent: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Tools {
    fn find(dir: &Path) -> Result<Self> {
        let ctl =
            std::env::current_exe().map_err(|e| Error::BadInput(format!("cannot find this rewindctl binary: {e}")))?;
        let agent = ctl.with_file_name(format!("rewind-agent{}", std::env::consts::EXE_SUFFIX));
        if !agent.is_file() {
            return Err(Error::BadInput(format!(
                "{} not found: the demo runs the agent binary that sits next to rewindctl; build both \
                 (scripts/demo.sh, or cargo build -p rewind-agent -p rewindctl)",
                agent.display()
            )));
        }
        Ok(Tools { ctl, agent, dir: dir.to_path_buf(), env: Vec::new() })
    }

    fn output(mut c: Command) -> Out {
        match c.output() {
            Ok(o) => Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Err(e) => Out { code: -1, stdout: String::new(), stderr: format!("cannot start: {e}") },
        }
    }

    /// `rewindctl args...` in DIR, reaching the embedded coordinator.
    fn ctl(&self, args: &[&str]) -> Out {
        let mut c = Command::new(&self.ctl);
        c.args(args).current_dir(&self.dir).env("REWIND_LOG", "warn").env_remove("REWIND_TOKEN");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        Self::output(c)
    }

    fn agent_cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.agent);
        c.args(args)
            .current_dir(dir)
            .env("REWIND_LOG", "info")
            .env_remove("REWIND_STATE")
            .env_remove("REWIND_CRASH_AT")
            .env_remove("REWIND_ENROLL_TOKEN");
        c
    }
}

/// The demo: its narrative, tools, coordinator and endpoints.
struct Demo {
    w: Walk,
    tools: Tools,
    dir: PathBuf,
    coord: Option<Embedded>,
    endpoints: Vec<Endpoint>,
}

impl Demo {
    /// Runs a rewindctl command, showing it; Err when it fails.
    fn step_ctl(&mut self, args: &[&str]) -> Result<Out, String> {
        self.w.say(&format!("$ rewindctl {}", args.join(" ")));
        let r = self.tools.ctl(args);
        if r.code == 0 { Ok(r) } else { Err(format!("rewindctl {}: {}", args.join(" "), r.why())) }
    }

    fn coord(&mut self) -> Result<&mut Embedded, String> {
        match self.coord.as_mut() {
            Some(c) if c.alive() => Ok(c),
            Some(c) => Err(format!("interrupted: {}", c.ended())),
            None => Err("the coordinator is not running".into()),
        }
    }

    /// Polls `f` every 200 ms for at most `limit` while the coordinator runs.
    fn eventually<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            self.coord()?;
            if let Some(v) = f(self) {
                return Ok(v);
            }
            if start.elapsed() > limit {
                return Err(format!("timed out after {} s waiting for {what}", limit.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn status(&self) -> Option<Value> {
        let r = self.tools.ctl(&["rollout", "status", PRODUCT, "--json"]);
        (r.code == 0).then(|| r.json()).flatten()
    }

    fn agent_name(&self, id: &str) -> String {
        self.endpoints
            .iter()
            .find(|e| e.id == id)
            .map_or_else(|| id.to_string(), |e| format!("{} ({})", e.name, e.ring))
    }

    /// Starts the rollout of `version`; returns its id.
    fn start_rollout(&mut self, version: &str) -> Result<String, String> {
        let r = self.step_ctl(&["rollout", "start", PRODUCT, version, "--json"])?;
        r.json()
            .and_then(|j| j["rollout"].as_str().map(str::to_string))
            .ok_or_else(|| format!("rollout start: no rollout id in {}", r.stdout.trim()))
    }

    /// Follows a rollout until it settles, printing each change of state
    /// and approving approval waves as the demo operator.
    fn follow(&mut self, id: &str, version: &str, limit: Duration) -> Result<(Value, Vec<Value>), String> {
        let start = Instant::now();
        let mut last = String::new();
        let mut timeline = Vec::new();
        let mut approved: Vec<String> = Vec::new();
        let mut seen: Option<Value> = None;
        loop {
            self.coord()?;
            let status = self.status();
            let s = match status {
                Some(s) if s["version"] == version => s,
                // `rollout status` shows the product's active rollout, else the
                // one with the highest sequence: once ours (a lower sequence than
                // a rolled-back one) ends, another is shown. Its end is then read
                // from the coordinator's audit log.
                Some(_) if seen.is_some() => match self.ended_from_audit(id, version, seen.as_ref()) {
                    Some(s) => s,
                    None => {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                },
                _ => {
                    if start.elapsed() > limit {
                        return Err(format!("timed out after {} s: no status for {version}", limit.as_secs()));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let state = s["state"].as_str().unwrap_or("?").to_string();
            let line = format!("{state:<17} {}", waves_text(&s));
            if line != last {
                let t = start.elapsed().as_secs_f64();
                self.w.say(&format!("{t:>5.1} s  {line}"));
                timeline.push(json!({"seconds": (t * 10.0).round() / 10.0, "state": state, "waves": s["waves"]}));
                last = line;
            }
            if state == "awaiting_approval" {
                let wave = s["waves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|wv| wv["state"] == "awaiting_approval")
                    .or_else(|| s["waves"].as_array().into_iter().flatten().find(|wv| wv["state"] == "pending"))
                    .and_then(|wv| wv["name"].as_str())
                    .map(str::to_string);
                if let Some(wave) = wave.filter(|wv| !approved.contains(wv)) {
                    self.w.say(&format!("        wave {wave} waits for an approver: the demo operator approves it"));
                    self.step_ctl(&["rollout", "approve", PRODUCT, &wave])?;
                    approved.push(wave);
                }
            }
            if SETTLED.contains(&state.as_str()) {
                if s.get("source").is_some() {
                    self.w.say(&format!(
                        "        (rollout status now shows the product's highest-sequence rollout; the end of {id} is read from the audit log)"
                    ));
                }
                return Ok((s, timeline));
            }
            seen = Some(s);
            if start.elapsed() > limit {
                return Err(format!(
                    "timed out after {} s: the rollout of {version} did not settle (last: {})",
                    limit.as_secs(),
                    last.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of rollout `id` from the coordinator's audit log: its last
    /// transition (`rollout.*` entries, `to`) and each agent's newest result
    /// for `version`, over the waves of the last status seen. None while
    /// the log does not show it settled.
    fn ended_from_audit(&self, id: &str, version: &str, seen: Option<&Value>) -> Option<Value> {
        let r = self.tools.ctl(&["audit", "export", "--format", "jsonl"]);
        if r.code != 0 {
            return None;
        }
        let mut state = None;
        let mut outcomes: BTreeMap<String, String> = BTreeMap::new();
        for line in r.stdout.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
            let Some(p) = e["params"].as_str().and_then(|p| serde_json::from_str::<Value>(p).ok()) else { continue };
            let kind = e["kind"].as_str().unwrap_or("");
            if kind.starts_with("rollout.") && p["rollout"] == id {
                if let Some(to) = p["to"].as_str() {
                    state = to.split('(').next().map(str::to_string);
                }
            } else if kind == "result"
                && p["release"] == version
                && let (Some(a), Some(st)) = (p["agent"].as_str(), p["status"].as_str())
            {
                outcomes.insert(a.to_string(), st.to_string());
            }
        }
        let state = state.filter(|s| SETTLED.contains(&s.as_str()))?;
        let mut s = seen?.clone();
        let mut agents = Vec::new();
        for a in s["agents"].as_array().into_iter().flatten() {
            let mut a = a.clone();
            if let Some(o) = a["id"].as_str().and_then(|i| outcomes.get(i)) {
                a["outcome"] = json!(o);
            }
            agents.push(a);
        }
        if let Some(waves) = s["waves"].as_array_mut() {
            for wv in waves.iter_mut() {
                let of = |o: &[&str]| {
                    agents
                        .iter()
                        .filter(|a| a["wave"] == wv["name"] && o.contains(&a["outcome"].as_str().unwrap_or("")))
                        .count()
                };
                let all = agents.iter().filter(|a| a["wave"] == wv["name"]).count();
                let (ok, bad) = (of(&["applied"]), of(&["failed", "refused"]));
                wv["succeeded"] = json!(ok);
                wv["failed"] = json!(bad);
                wv["pending"] = json!(all - ok - bad);
                if state == "done" {
                    wv["state"] = json!("done");
                }
            }
        }
        s["state"] = json!(state);
        s["agents"] = json!(agents);
        s["source"] = json!("audit log (rollout status now shows a later-sequence rollout)");
        Some(s)
    }
}

fn waves_text(s: &Value) -> String {
    let waves: Vec<String> = s["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|wv| {
            format!(
                "{} {} {}✓ {}✗ {}…",
                wv["name"].as_str().unwrap_or("?"),
                wv["state"].as_str().unwrap_or("?"),
                wv["succeeded"],
                wv["failed"],
                wv["pending"]
            )
        })
        .collect();
    waves.join(" | ")
}

fn ids_with(status: &Value, pred: impl Fn(&str) -> bool) -> Vec<String> {
    status["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| pred(a["outcome"].as_str().unwrap_or("")))
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect()
}

/// Replaces (or adds) the `[rollout]` table of a release.toml copy; it must
/// be the last table in the file.
fn set_rollout(release_toml: &Path, rollout: &str) -> Result<()> {
    let text = std::fs::read_to_string(release_toml)
        .map_err(|e| Error::BadInput(format!("{}: {e}", release_toml.display())))?;
    let head = match text.find("\n[rollout]") {
        Some(i) => {
            if text[i + 1..].lines().skip(1).any(|l| l.starts_with('[')) {
                return Err(Error::BadInput(format!(
                    "{}: [rollout] is not the last table; the demo cannot give it demo timings",
                    release_toml.display()
                )));
            }
            &text[..=i]
        }
        None => text.as_str(),
    };
    std::fs::write(release_toml, format!("{}\n{rollout}", head.trim_end()))
        .map_err(|e| Error::BadInput(format!("{}: {e}", release_toml.display())))
}

/// The agent daemon hands a delivered plan every database of the product
/// (agent/src/daemon/run.rs `run_delivery`), and the engine refuses a
/// database whose target the release does not declare. Until the daemon
/// passes only the release's targets, the demo's copy of the bad release
/// declares `settings` too (no migration touches it), so its plan runs and
/// fails where it must: at its verify.sql (docs/demo.md).
fn declare_settings(release_toml: &Path) -> Result<()> {
    let text = std::fs::read_to_string(release_toml)
        .map_err(|e| Error::BadInput(format!("{}: {e}", release_toml.display())))?;
    if text.contains("name = \"settings\"") {
        return Ok(());
    }
    let first = "[[target]]\nname = \"notes\"\n";
    if !text.contains(first) {
        return Err(Error::BadInput(format!("{}: no `notes` target to add `settings` beside", release_toml.display())));
    }
    let text = text.replacen(first, &format!("{first}\n[[target]]\nname = \"settings\"\n"), 1);
    std::fs::write(release_toml, text).map_err(|e| Error::BadInput(format!("{}: {e}", release_toml.display())))
}

/// Runs the fleet demo; returns the exit code.
///
/// # Errors
/// [`Error::BadInput`] when DIR cannot be used or rewind-agent is missing;
/// a step that misbehaves is reported and gives exit code 1.
pub fn run(args: &DemoArgs) -> Result<u8> {
    let dir = prepare_dir(args.dir.as_deref(), OWNED)?;
    let dir = std::fs::canonicalize(&dir).map_err(|e| Error::BadInput(format!("--dir {}: {e}", dir.display())))?;
    let tools = Tools::find(&dir)?;
    std::fs::write(dir.join(MARKER), "made by rewindctl demo; a rerun resets this directory\n")
        .map_err(|e| Error::BadInput(format!("--dir {}: {e}", dir.display())))?;
    let mut d = Demo { w: Walk::new(args.json), tools, dir: dir.clone(), coord: None, endpoints: Vec::new() };
    if !d.w.json {
        crate::outln!(
            "Rewind fleet demo: an embedded coordinator and {} agent processes on the notes-app example, in {}",
            args.agents,
            dir.display()
        );
    }
    let story = story(&mut d, args.agents);
    if let Err(e) = &story {
        d.w.outcome("abort", false, &format!("the demo stopped: {e}"), Value::Null);
    }
    let url = d.coord.as_ref().map(|c| (c.url(), format!("http://{}/status", c.web)));

    if !args.exit && story.is_ok() {
        if let Some(c) = d.coord.as_ref() {
            let page = c.status_page().is_some();
            if d.w.json {
                output::print_json(&json!({"ok": d.w.ok, "dir": dir, "running": true, "steps": d.w.steps}));
            } else {
                crate::outln!("\nThe fleet keeps running. Try, in another terminal:");
                crate::outln!(
                    "  export REWIND_COORDINATOR={} REWIND_CA={} REWIND_TOKEN_FILE={}",
                    c.url(),
                    c.state.join("ca.pem").display(),
                    c.state.join("admin.token").display()
                );
                crate::outln!(
                    "  {} agents; {} rollout status {PRODUCT}; {} audit verify",
                    d.tools.ctl.display(),
                    d.tools.ctl.display(),
                    d.tools.ctl.display()
                );
                if page {
                    crate::outln!("Status page: http://{}/status", c.web);
                }
                crate::outln!("Press Ctrl-C to stop the agents and the coordinator.");
            }
        }
        if let Some(c) = d.coord.as_mut()
            && let Err(e) = c.wait()
        {
            d.w.ok = false;
            eprintln!("rewindctl demo: the coordinator ended with an error: {e}");
        }
    }

    // Shut down: agents first (so they do not retry a stopped coordinator), then the coordinator.
    let mut clean = true;
    for e in &mut d.endpoints {
        clean &= e.stop();
    }
    let stopped = d.coord.as_mut().map_or(Ok(()), Embedded::stop);
    if args.exit || story.is_err() {
        d.w.heading("Shut down");
        let what = match &stopped {
            Ok(()) => format!(
                "{} agent(s) stopped{}; the coordinator drained its streams, wrote an audit checkpoint and flushed its store",
                d.endpoints.len(),
                if clean { " cleanly (SIGTERM)" } else { " (some needed SIGKILL)" }
            ),
            Err(e) => format!("the coordinator did not stop cleanly: {e}"),
        };
        d.w.outcome("shutdown", stopped.is_ok(), &what, json!({"agents_clean": clean}));
    }
    if args.exit || story.is_err() || !d.w.json {
        if d.w.json {
            output::print_json(&json!({"ok": d.w.ok, "dir": dir, "steps": d.w.steps}));
        } else if d.w.ok {
            crate::outln!(
                "\ndemo ok: every step behaved as expected ({:.1} s). Files, logs and states are in {}",
                d.w.elapsed(),
                dir.display()
            );
        } else {
            crate::outln!(
                "\ndemo FAILED: a step above did not behave as expected. Logs are in {}/logs and {}/endpoints/*/agent.log",
                dir.display(),
                dir.display()
            );
        }
    }
    let _ = url;
    Ok(if d.w.ok { 0 } else { 1 })
}

/// The story, step by step; Err stops it (the step is recorded as failed).
#[allow(clippy::too_many_lines)]
fn story(d: &mut Demo, n: u32) -> Result<(), String> {
    let dir = d.dir.clone();
    let io = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");

    // 1. Keys and trust.
    d.w.heading("Plan-signing keys for alice, bob and carol; a trust root that needs 2 of the 3");
    for sub in ["keys", "bundles", "samples", "endpoints", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| io(sub, &e))?;
    }
    for k in ["alice", "bob", "carol"] {
        d.step_ctl(&["keys", "generate", "--out", &format!("keys/{k}")])?;
    }
    d.step_ctl(&[
        "trust",
        "init",
        "--threshold",
        "2",
        "--key",
        "keys/alice.pub",
        "--key",
        "keys/bob.pub",
        "--key",
        "keys/carol.pub",
        "--out",
        "trust.toml",
    ])?;
    d.w.outcome("trust", true, "trust.toml: 3 keys, threshold 2 (coordinator and agents both hold it)", Value::Null);

    // 2. The releases, with demo timings.
    d.w.heading("The notes-app releases (copies in DIR/notes-app, bakes shortened to seconds for the demo)");
    let app = dir.join("notes-app");
    examples::write_to(&app).map_err(|e| io("writing the example", &e))?;
    let rel = |name: &str| app.join("releases").join(name);
    set_rollout(&rel(GOOD.0).join("release.toml"), GOOD_ROLLOUT).map_err(|e| e.to_string())?;
    set_rollout(&rel(BAD.0).join("release.toml"), BAD_ROLLOUT).map_err(|e| e.to_string())?;
    declare_settings(&rel(BAD.0).join("release.toml")).map_err(|e| e.to_string())?;
    d.w.say(&format!(
        "{}: 3 migrations on notes + settings, a flag; waves canary → early → broad (needs approval) → all",
        GOOD.1
    ));
    d.w.say(&format!("{}: splits note titles; its verify.sql fails on real data; waves canary → all", BAD.1));
    for r in [GOOD.0, BAD.0] {
        d.step_ctl(&["release", "lint", &format!("notes-app/releases/{r}")])?;
    }
    d.w.outcome("releases", true, "both releases lint clean", Value::Null);

    // 3. The coordinator.
    d.w.heading("Start the coordinator, embedded in this process");
    let state = dir.join("coordinator");
    let c = Embedded::start(&state, &dir.join("trust.toml"), &dir.join("logs/coordinator.log"))
        .map_err(|e| e.to_string())?;
    d.tools.env = vec![
        ("REWIND_COORDINATOR".into(), c.url()),
        ("REWIND_CA".into(), state.join("ca.pem").to_string_lossy().into_owned()),
        ("REWIND_TOKEN_FILE".into(), state.join("admin.token").to_string_lossy().into_owned()),
    ];
    let (url, web) = (c.url(), c.web);
    d.coord = Some(c);
    let t0 = Instant::now();
    d.eventually("the coordinator to answer", Duration::from_secs(30), |d| {
        (d.tools.ctl(&["agents", "--json"]).code == 0).then_some(())
    })?;
    let ready_ms = t0.elapsed().as_millis();
    d.w.say(&format!("gRPC over mTLS on {url}, state in coordinator/ (CA, admin token, SQLite store, audit key)"));
    d.w.say("rewindctl below reaches it through REWIND_COORDINATOR, REWIND_CA and REWIND_TOKEN_FILE");
    let page = d.coord.as_ref().and_then(Embedded::status_page);
    match &page {
        Some(code) => d.w.say(&format!("status page: http://{web}/status (HTTP {code}) — open it now and watch")),
        None => d.w.say(&format!(
            "status page: nothing answers on http://{web}/status (the coordinator said why on stderr); the demo goes on without it"
        )),
    }
    d.w.outcome(
        "coordinator",
        true,
        &format!("answering after {ready_ms} ms"),
        json!({"url": url, "status_page": page.as_ref().map(|_| format!("http://{web}/status")), "ready_ms": ready_ms}),
    );

    // 4. Endpoints.
    d.w.heading(&format!("{n} endpoints: sample databases, enrollment with a token per ring, one agent process each"));
    let rings: Vec<&'static str> = (0..n)
        .map(|i| {
            if i < 2 {
                "canary"
            } else if (i - 2) % 2 == 0 {
                "early"
            } else {
                "main"
            }
        })
        .collect();
    let mut tokens = BTreeMap::new();
    for ring in ["canary", "early", "main"] {
        let uses = rings.iter().filter(|r| **r == ring).count();
        if uses == 0 {
            continue; // a small demo (--agents 3) has no endpoint in this ring
        }
        let uses = uses.to_string();
        let label = format!("ring={ring}");
        let r = d.step_ctl(&["token", "create", "--labels", &label, "--uses", &uses, "--ttl", "1h"])?;
        tokens.insert(ring, r.stdout.trim().to_string());
    }
    let ca = state.join("ca.pem");
    let trust = dir.join("trust.toml");
    let t0 = Instant::now();
    for (i, ring) in rings.iter().enumerate() {
        let name = format!("endpoint-{}", i + 1);
        let edir = dir.join("endpoints").join(&name);
        std::fs::create_dir_all(&edir).map_err(|e| io(&name, &e))?;
        let mut dbs = BTreeMap::new();
        for t in ["notes", "settings"] {
            dbs.insert(t.to_string(), seed(&edir, t).map_err(|e| e.to_string())?);
        }
        let config = format!(
            "# written by rewindctl demo\ncoordinator = \"{url}\"\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n\n\
             [[target]]\nproduct = \"{PRODUCT}\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
             [[target]]\nproduct = \"{PRODUCT}\"\nname = \"settings\"\npath = \"settings.db\"\n",
            ca.display(),
            trust.display()
        );
        std::fs::write(edir.join("agent.toml"), config).map_err(|e| io(&name, &e))?;
        if i == 0 {
            d.w.say(&format!(
                "$ rewind-agent enroll --config endpoints/{name}/agent.toml --token rwt_…   (and so on for each)"
            ));
        }
        let r =
            Tools::output(d.tools.agent_cmd(&edir, &["enroll", "--config", "agent.toml", "--token", &tokens[ring]]));
        if r.code != 0 {
            return Err(format!("rewind-agent enroll ({name}): {}", r.why()));
        }
        let ident: Value = std::fs::read_to_string(edir.join("state/identity/agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| format!("{name}: enrolled, but state/identity/agent.json is unreadable"))?;
        let id = ident["agent_id"].as_str().unwrap_or_default().to_string();
        let log = std::fs::File::create(edir.join("agent.log")).map_err(|e| io(&name, &e))?;
        let log2 = log.try_clone().map_err(|e| io(&name, &e))?;
        let child = d
            .tools
            .agent_cmd(&edir, &["run", "--config", "agent.toml"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting rewind-agent run ({name}): {e}"))?;
        let mut e = Endpoint { name, ring, dir: edir, seeded: BTreeMap::new(), dbs, id, child: Some(child) };
        e.seeded = e.digests().map_err(|e| e.to_string())?;
        d.endpoints.push(e);
    }
    if let Some(e) = d.endpoints.first() {
        d.w.say(&format!("$ rewind-agent run --config endpoints/{}/agent.toml   (one process per endpoint)", e.name));
    }
    let n_usize = d.endpoints.len();
    let agents = d.eventually("every agent connected with its inventory", Duration::from_secs(30), |d| {
        let a = d.tools.ctl(&["agents", "--json"]).json()?;
        let list = a.as_array()?;
        (list.len() == n_usize
            && list.iter().all(|x| x["connected"] == true && x["targets"].as_array().is_some_and(|t| t.len() == 2)))
        .then_some(a)
    })?;
    let connect_ms = t0.elapsed().as_millis();
    for e in &d.endpoints {
        let pid = e.child.as_ref().map_or(0, Child::id);
        d.w.say(&format!("{:<12} ring={:<7} {}  pid {pid}", e.name, e.ring, e.id));
    }
    let labels_ok = d.endpoints.iter().all(|e| {
        agents.as_array().into_iter().flatten().any(|a| a["id"] == e.id.as_str() && a["labels"]["ring"] == e.ring)
    });
    d.w.outcome(
        "agents",
        labels_ok,
        &format!("{n_usize} agents enrolled (client certificates from the coordinator's CA), connected and reporting their databases in {connect_ms} ms; ring labels from the tokens"),
        json!({"agents": d.endpoints.iter().map(|e| json!({"name": e.name, "id": e.id, "ring": e.ring, "dir": e.dir})).collect::<Vec<_>>(), "connect_ms": connect_ms}),
    );

    // 5. Bundles.
    d.w.heading("Build both bundles, sign each by alice and bob, upload");
    let samples = dir.join("samples");
    let sn = seed(&samples, "notes").map_err(|e| e.to_string())?;
    let ss = seed(&samples, "settings").map_err(|e| e.to_string())?;
    let (sn, ss) = (format!("notes={}", sn.display()), format!("settings={}", ss.display()));
    let good_bundle = format!("bundles/notes-{}.bundle.json", GOOD.1);
    let bad_bundle = format!("bundles/notes-{}.bundle.json", BAD.1);
    d.step_ctl(&[
        "release",
        "build",
        &format!("notes-app/releases/{}", GOOD.0),
        "--sample",
        &sn,
        "--sample",
        &ss,
        "--out",
        &good_bundle,
    ])?;
    d.w.say(&format!(
        "{}: rehearsed on sample databases: apply, verify, checks, rollback, twice; the predicted schema digests are in the bundle",
        GOOD.1
    ));
    // The bad release fails its rehearsal (that is the first line of defence);
    // the demo builds it without samples to show the second: the canary.
    let r = d.tools.ctl(&["release", "rehearse", &format!("notes-app/releases/{}", BAD.0), "--db", &sn]);
    d.w.say(&format!(
        "{}: its rehearsal on the samples fails (exit {}): a team that skips it ships it anyway — built without samples",
        BAD.1, r.code
    ));
    d.step_ctl(&["release", "build", &format!("notes-app/releases/{}", BAD.0), "--out", &bad_bundle])?;
    for b in [&bad_bundle, &good_bundle] {
        for k in ["alice", "bob"] {
            d.step_ctl(&["release", "sign", b, "--key", &format!("keys/{k}.key")])?;
        }
        d.step_ctl(&["release", "verify", b, "--trust", "trust.toml"])?;
        d.step_ctl(&["release", "upload", b])?;
    }
    d.w.outcome(
        "bundles",
        r.code == 1,
        "two bundles signed 2-of-3 and accepted by the coordinator",
        json!({"bad_rehearsal_exit": r.code}),
    );

    // 6. The bad release: canary fails, halt, automatic rollback.
    d.w.heading(&format!("Roll out {}: the canaries fail, the coordinator halts and rolls them back", BAD.1));
    let before: Vec<BTreeMap<String, String>> =
        d.endpoints.iter().map(Endpoint::digests).collect::<Result<_>>().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let id = d.start_rollout(BAD.1)?;
    let (s, timeline) = d.follow(&id, BAD.1, Duration::from_secs(90))?;
    let settled_s = t0.elapsed().as_secs_f64();
    let canary: Vec<&Endpoint> = d.endpoints.iter().filter(|e| e.ring == "canary").collect();
    let others: Vec<&Endpoint> = d.endpoints.iter().filter(|e| e.ring != "canary").collect();
    let touched = ids_with(&s, |o| o != "pending");
    let reached_others: Vec<String> =
        others.iter().filter(|e| touched.contains(&e.id)).map(|e| d.agent_name(&e.id)).collect();
    let mut proof = Vec::new();
    let mut all_back = true;
    for (e, b) in d.endpoints.iter().zip(&before) {
        let now = e.digests().map_err(|e| e.to_string())?;
        let same = &now == b;
        all_back &= same;
        proof.push(json!({"agent": e.id, "ring": e.ring, "identical": same, "digests": now}));
        if e.ring == "canary" {
            d.w.say(&format!(
                "{:<12} notes {} {}",
                e.name,
                short(&now["notes"]),
                if same { "= before the rollout (rolled back, proven by digest)" } else { "≠ before the rollout" }
            ));
        }
    }
    let state_now = s["state"].as_str().unwrap_or("?").to_string();
    let canary_failed = canary.iter().all(|e| {
        s["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["id"] == e.id.as_str() && matches!(a["outcome"].as_str(), Some("failed" | "rolled_back")))
    });
    let halted = state_now == "rolled_back" && reached_others.is_empty() && canary_failed;
    let what = if halted {
        format!(
            "halted at the canary wave and rolled back in {settled_s:.1} s; canaries proven back to their digests; the other {} endpoints never got the plan",
            others.len()
        )
    } else {
        format!(
            "expected state rolled_back with only the canaries touched; got state {state_now}, canaries failed/rolled back: {canary_failed}, plan reached outside the canary: [{}]",
            reached_others.join(", ")
        )
    };
    d.w.outcome(
        "bad release",
        halted && all_back,
        &what,
        json!({"state": state_now, "seconds": settled_s, "timeline": timeline, "endpoints": proof, "status": s}),
    );
    if !halted {
        return Err("the bad release was not stopped at the canary (see above and the coordinator log)".into());
    }

    // 7. The good release through every wave.
    d.w.heading(&format!("Roll out {} through every wave", GOOD.1));
    let t0 = Instant::now();
    let id = d.start_rollout(GOOD.1)?;
    let (s, timeline) = d.follow(&id, GOOD.1, Duration::from_secs(120))?;
    let done_s = t0.elapsed().as_secs_f64();
    let applied = ids_with(&s, |o| o == "applied");
    let everyone = d.endpoints.iter().all(|e| applied.contains(&e.id));
    let mut changed = true;
    for (e, b) in d.endpoints.iter().zip(&before) {
        changed &= e.digests().map_err(|e| e.to_string())?.iter().all(|(t, dg)| b.get(t) != Some(dg));
    }
    let state_now = s["state"].as_str().unwrap_or("?").to_string();
    d.w.outcome(
        "good release",
        state_now == "done" && everyone && changed,
        &format!(
            "state {state_now} after {done_s:.1} s: applied on {} of {} endpoints, every database migrated",
            applied.len(),
            d.endpoints.len()
        ),
        json!({"state": state_now, "seconds": done_s, "timeline": timeline, "status": s}),
    );

    // 8. Verification.
    d.w.heading("Verify the fleet and the audit trail");
    let r = d.tools.ctl(&["fleet", "verify", PRODUCT, GOOD.1, "--json"]);
    d.w.say(&format!("$ rewindctl fleet verify {PRODUCT} {}", GOOD.1));
    let v = r.json().unwrap_or(Value::Null);
    for g in v["groups"].as_array().into_iter().flatten() {
        d.w.say(&format!(
            "{:<9} {}  {} endpoint(s)",
            g["target"].as_str().unwrap_or("?"),
            short(g["digest"].as_str().unwrap_or("?")),
            g["agents"].as_array().map_or(0, Vec::len)
        ));
    }
    let fleet_ok = r.code == 0
        && v["ok"] == true
        && v["groups"]
            .as_array()
            .is_some_and(|g| g.iter().all(|g| g["agents"].as_array().is_some_and(|a| a.len() == n_usize)));
    d.w.outcome(
        "fleet verify",
        fleet_ok,
        &if fleet_ok {
            "every endpoint has the schema digest the rehearsal predicted, per target; no drift".to_string()
        } else {
            format!("fleet verify: {}", r.why())
        },
        v,
    );
    let public = state.join("coordinator.pub").to_string_lossy().into_owned();
    d.w.say("$ rewindctl audit verify --key coordinator/coordinator.pub");
    let r = d.tools.ctl(&["audit", "verify", "--key", &public, "--json"]);
    let a = r.json().unwrap_or(Value::Null);
    let audit_ok = r.code == 0 && a["ok"] == true;
    d.w.outcome(
        "audit",
        audit_ok,
        &if audit_ok {
            "the coordinator's audit chain verifies with its public key alone".to_string()
        } else {
            format!("audit verify: {}", r.why())
        },
        a,
    );
    let page = d.coord.as_ref().and_then(Embedded::status_page);
    if let Some(code) = page {
        d.w.say(&format!("status page http://{web}/status answers HTTP {code}"));
        d.w.outcome(
            "status page",
            code == "200",
            &format!("served live at http://{web}/status"),
            json!({"url": format!("http://{web}/status"), "http": code}),
        );
    }
    Ok(())
}
