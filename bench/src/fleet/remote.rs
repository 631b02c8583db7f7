//! Simulated agents in worker processes: `fleet_load` spreads a fleet over
//! several copies of itself when one process cannot hold every connection
//! (the open file limit is per process: 20,000 on the benchmark machine).
//!
//! The parent starts `fleet_load __sim-worker` with piped stdin and stdout.
//! Its first stdin line is a JSON object with what [`super::Shared`] holds
//! and the worker's agents (their identities); every later line is a
//! [`Command`] (`idle`, `prepare R C`, `send R C`, `stop`), and end of input
//! is `stop`. The worker runs [`super::run`] for each agent and writes each
//! [`Event`] as a line: `c I T` (agent I welcomed), `p I T` (a plan arrived),
//! `a K T` (K results acknowledged), `r I` (results prepared), `d` (a stream
//! ended). T is the event's wall-clock time in nanoseconds since the Unix
//! epoch: the parent turns it back into its own `Instant` (both processes
//! read the same clock), so times measured across processes compare.

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use prost::Message;
use rewind_shared::wire::v1;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, Command as Proc};
use tokio::sync::{mpsc, watch};

use super::{Command, Event, Shared, SimIdentity};

/// The first argument that makes `fleet_load` a worker.
pub const WORKER_ARG: &str = "__sim-worker";

/// Nanoseconds since the Unix epoch at `t` (a time of this process).
fn wall_ns(t: Instant) -> u128 {
    let ago = Instant::now().saturating_duration_since(t);
    SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// The `Instant` of this process at `ns` since the Unix epoch.
fn instant_of(ns: u128) -> Instant {
    let (now_i, now_w) = (Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let delta = |d: u128| Duration::from_nanos(u64::try_from(d).unwrap_or(u64::MAX));
    if ns <= now_w { now_i.checked_sub(delta(now_w - ns)).unwrap_or(now_i) } else { now_i + delta(ns - now_w) }
}

fn event_line(e: &Event) -> String {
    match e {
        Event::Connected(i, t) => format!("c {i} {}\n", wall_ns(*t)),
        Event::Plan(i, t) => format!("p {i} {}\n", wall_ns(*t)),
        Event::ResultAcked(k, t) => format!("a {k} {}\n", wall_ns(*t)),
        Event::Prepared(i) => format!("r {i}\n"),
        Event::Disconnected => "d\n".to_string(),
    }
}

fn parse_event(line: &str) -> Result<Event> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |k: usize| -> Result<usize> { Ok(f.get(k).context("field missing")?.parse()?) };
    let time = || -> Result<Instant> { Ok(instant_of(f.get(2).context("time missing")?.parse()?)) };
    Ok(match f.first().copied() {
        Some("c") => Event::Connected(num(1)?, time()?),
        Some("p") => Event::Plan(num(1)?, time()?),
        Some("a") => Event::ResultAcked(num(1)?, time()?),
        Some("r") => Event::Prepared(num(1)?),
        Some("d") => Event::Disconnected,
        _ => bail!("unknown event line {line:?}"),
    })
}

fn command_line(c: Command) -> String {
    match c {
        Command::Idle => "idle\n".into(),
        Command::Prepare { round, count } => format!("prepare {round} {count}\n"),
        Command::SendResults { round, count } => format!("send {round} {count}\n"),
        Command::Stop => "stop\n".into(),
    }
}

fn parse_command(line: &str) -> Result<Command> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |k: usize| -> Result<u32> { Ok(f.get(k).context("field missing")?.parse()?) };
    Ok(match f.first().copied() {
        Some("idle") => Command::Idle,
        Some("prepare") => Command::Prepare { round: num(1)?, count: num(2)? },
        Some("send") => Command::SendResults { round: num(1)?, count: num(2)? },
        Some("stop") => Command::Stop,
        _ => bail!("unknown command line {line:?}"),
    })
}

/// The worker's first input line.
fn init_line(
    ids: &[SimIdentity],
    urls: &[String],
    ca_pem: &str,
    target: &v1::TargetState,
    per_message: usize,
) -> String {
    let ids: Vec<_> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "index": id.index, "agent_id": id.agent_id, "cert_pem": id.cert_pem,
                "key_pem": id.key_pem, "report_key": hex::encode(id.report_key),
            })
        })
        .collect();
    let init = serde_json::json!({
        "urls": urls, "ca_pem": ca_pem, "hello_target": hex::encode(target.encode_to_vec()),
        "per_message": per_message, "ids": ids,
    });
    format!("{init}\n")
}

/// What the worker's first input line says.
struct Init {
    ids: Vec<SimIdentity>,
    urls: Vec<String>,
    ca_pem: String,
    hello_target: v1::TargetState,
    per_message: usize,
}

fn parse_init(line: &str) -> Result<Init> {
    let v: serde_json::Value = serde_json::from_str(line).context("the worker's first line is not JSON")?;
    let text = |v: &serde_json::Value, k: &str| -> Result<String> {
        v.get(k).and_then(serde_json::Value::as_str).map(str::to_string).with_context(|| format!("init: no {k}"))
    };
    let num = |v: &serde_json::Value, k: &str| -> Result<usize> {
        let n = v.get(k).and_then(serde_json::Value::as_u64).with_context(|| format!("init: no {k}"))?;
        Ok(usize::try_from(n)?)
    };
    let urls = v
        .get("urls")
        .and_then(serde_json::Value::as_array)
        .context("init: no urls")?
        .iter()
        .map(|u| u.as_str().map(str::to_string).context("init: a url is not text"))
        .collect::<Result<Vec<_>>>()?;
    let target = v1::TargetState::decode(hex::decode(text(&v, "hello_target")?)?.as_slice())?;
    let ids = v
        .get("ids")
        .and_then(serde_json::Value::as_array)
        .context("init: no ids")?
        .iter()
        .map(|id| {
            let key = hex::decode(text(id, "report_key")?)?;
            Ok(SimIdentity {
                index: num(id, "index")?,
                agent_id: text(id, "agent_id")?,
                cert_pem: text(id, "cert_pem")?,
                key_pem: text(id, "key_pem")?,
                report_key: key.try_into().map_err(|_| anyhow!("init: report_key is not 32 bytes"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Init { ids, urls, ca_pem: text(&v, "ca_pem")?, hello_target: target, per_message: num(&v, "per_message")? })
}

/// `fleet_load __sim-worker`: runs the agents its first input line names
/// until `stop` or end of input.
///
/// # Errors
/// A first line that is not what [`Workers::start`] writes.
pub fn worker_main() -> Result<()> {
    rewind_shared::channel::install_crypto();
    let mut first = String::new();
    std::io::stdin().lock().read_line(&mut first).context("reading the worker's first line")?;
    let Init { ids, urls, ca_pem, hello_target, per_message } = parse_init(&first)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let (etx, mut events) = mpsc::unbounded_channel();
        let (commands, crx) = watch::channel(Command::Idle);
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match parse_command(&line) {
                    Ok(c) => {
                        let _ = commands.send(c);
                    }
                    Err(e) => eprintln!("fleet_load worker: {e}"),
                }
            }
            let _ = commands.send(Command::Stop);
        });
        let shared = Arc::new(Shared { urls, ca_pem, hello_target, events: etx, commands: crx, per_message });
        for id in ids {
            tokio::spawn(super::run(id, Arc::clone(&shared)));
        }
        // Every agent's task holds the sender: the loop ends when all ended.
        drop(shared);
        let mut out = BufWriter::new(tokio::io::stdout());
        while let Some(e) = events.recv().await {
            out.write_all(event_line(&e).as_bytes()).await?;
            while let Ok(e) = events.try_recv() {
                out.write_all(event_line(&e).as_bytes()).await?;
            }
            out.flush().await?;
        }
        out.flush().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// Worker processes running a fleet's agents for the parent: their events
/// arrive on one channel, one command goes to all.
pub struct Workers {
    pub children: Vec<Child>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Starts `processes` workers (this executable), the agents split
    /// between them in order; their events go to `shared.events`, and
    /// every command `shared.commands` takes goes to each of them.
    ///
    /// # Errors
    /// When a worker cannot be started.
    pub fn start(ids: &[SimIdentity], processes: usize, shared: &Shared) -> Result<Self> {
        let exe = std::env::current_exe().context("this executable, to start workers")?;
        let mut out = Workers { children: Vec::new(), tasks: Vec::new() };
        for part in ids.chunks(ids.len().div_ceil(processes.max(1)).max(1)) {
            let mut child = Proc::new(&exe)
                .arg(WORKER_ARG)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {} {WORKER_ARG}", exe.display()))?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let init = init_line(part, &shared.urls, &shared.ca_pem, &shared.hello_target, shared.per_message);
            let mut commands = shared.commands.clone();
            out.tasks.push(tokio::spawn(async move {
                if stdin.write_all(init.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    let c = *commands.borrow_and_update();
                    if stdin.write_all(command_line(c).as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                        return;
                    }
                    if c == Command::Stop || commands.changed().await.is_err() {
                        return;
                    }
                }
            }));
            let events = shared.events.clone();
            out.tasks.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match parse_event(&line) {
                        Ok(e) => {
                            let _ = events.send(e);
                        }
                        Err(e) => eprintln!("fleet_load: from a worker: {e}"),
                    }
                }
            }));
            out.children.push(child);
        }
        Ok(out)
    }

    /// Waits for the workers to end (after `stop`), each at most `limit`.
    pub async fn wait(self, limit: Duration) {
        for t in self.tasks {
            let _ = tokio::time::timeout(limit, t).await;
        }
        for mut c in self.children {
            if tokio::time::timeout(limit, c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_commands_survive_their_lines() {
        let t = Instant::now() - Duration::from_millis(250);
        for e in [Event::Connected(7, t), Event::Plan(3, t), Event::ResultAcked(64, t)] {
            let back = parse_event(event_line(&e).trim_end()).unwrap();
            let (Event::Connected(_, u) | Event::Plan(_, u) | Event::ResultAcked(_, u)) = back else {
                panic!("{back:?}")
            };
            let off = if u > t { u - t } else { t - u };
            assert!(off < Duration::from_millis(5), "{e:?}: the time moved {off:?}");
            assert_eq!(format!("{e:?}").split('(').next(), format!("{back:?}").split('(').next());
        }
        assert!(matches!(parse_event("r 9").unwrap(), Event::Prepared(9)));
        assert!(matches!(parse_event("d").unwrap(), Event::Disconnected));
        assert!(parse_event("x 1").is_err());
        for c in [
            Command::Idle,
            Command::Prepare { round: 2, count: 30 },
            Command::SendResults { round: 2, count: 30 },
            Command::Stop,
        ] {
            assert_eq!(parse_command(command_line(c).trim_end()).unwrap(), c);
        }
    }

    #[test]
    fn the_init_line_carries_every_identity() {
        let ids: Vec<SimIdentity> = (0..3)
            .map(|i| SimIdentity {
                index: i,
                agent_id: format!("agt-{i}"),
                cert_pem: "CERT\nPEM".into(),
                key_pem: "KEY".into(),
                report_key: [u8::try_from(i).unwrap(); 32],
            })
            .collect();
        let target = v1::TargetState { name: "kv".into(), ..Default::default() };
        let line = init_line(&ids, &["https://127.0.0.1:1".into()], "CA", &target, 64);
        assert_eq!(line.matches('\n').count(), 1, "one line");
        let Init { ids: back, urls, ca_pem: ca, hello_target: t, per_message: per } = parse_init(&line).unwrap();
        assert_eq!((urls, ca.as_str(), t, per), (vec!["https://127.0.0.1:1".to_string()], "CA", target, 64));
        for (a, b) in ids.iter().zip(&back) {
            assert_eq!(
                (a.index, &a.agent_id, &a.cert_pem, &a.key_pem, a.report_key),
                (b.index, &b.agent_id, &b.cert_pem, &b.key_pem, b.report_key)
            );
        }
    }
}
