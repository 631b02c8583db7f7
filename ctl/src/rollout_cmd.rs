//! `rewindctl rollout start|status|watch|pause|resume|abort|approve` and
//! `rewindctl rollback` (DESIGN.md §7, §8): thin clients of the
//! coordinator's Admin API; the phased-rollout engine runs in the
//! coordinator.
//!
//! Exit codes: 0 done; for `watch`, 0 when the rollout ends `done`, 1 when
//! it ends `rolled_back` (data back, proven) or `halted`/`superseded`, 3
//! when a rollback needs a human (the commands are printed); 2 for bad
//! input or a command the rollout's state refuses (nothing changed).

use std::io::IsTerminal;

use clap::Args;
use rewind_shared::wire::v1;
use serde_json::{Value, json};

use crate::coordinator::CoordinatorArgs;
use crate::fleet::{admin, runtime, status};
use crate::{Error, Result};

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl rollout start notes 2026.11.0\n\n\
A second rollout of a product with an active one is refused unless --supersede.")]
pub struct StartArgs {
    pub product: String,
    pub version: String,
    /// Replace the product's active rollout (it ends `superseded`; endpoints keep what they applied).
    #[arg(long)]
    pub supersede: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl rollout status notes --json")]
pub struct StatusArgs {
    pub product: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl rollout pause notes")]
pub struct ProductArgs {
    pub product: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl rollout approve notes broad\n\nNeeds an approver (or admin) token.")]
pub struct ApproveArgs {
    pub product: String,
    /// The wave awaiting approval (rollout status names it).
    pub wave: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  rewindctl rollback notes\n  rewindctl rollback notes --scope wave:canary\n  \
rewindctl rollback notes --scope agent:agt-1a2b3c4d5e6f7a8b\n  rewindctl rollback notes --to-sequence 6\n  \
rewindctl rollback notes --granularity target --subject settings --reason \"theme migration breaks the settings screen\"\n\n\
The pre-signed rollback plans go at once to every endpoint in scope that applied (offline ones when they return), \
skipping bake and approvals. A release rollback stops the rollout; a target, migration or flag rollback does not.")]
pub struct RollbackArgs {
    pub product: String,
    /// Roll back to this epoch: every rollout above it, latest first.
    #[arg(long)]
    pub to_sequence: Option<u64>,
    /// release | target | migration | flag: the whole release (stops the rollout), or one part of it (the rollout goes on).
    #[arg(long, default_value = "release")]
    pub granularity: String,
    /// The target, migration or flag, with --granularity target|migration|flag.
    #[arg(long)]
    pub subject: Option<String>,
    /// fleet | wave:NAME | cohort:SELECTOR | agent:ID[,ID...]
    #[arg(long, default_value = "fleet")]
    pub scope: String,
    /// Why (recorded in the coordinator's audit log).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

/// A refusal because of the rollout's state is the caller's: nothing changed.
pub(crate) fn refused(call: &str, s: &tonic::Status) -> Error {
    if s.code() == tonic::Code::FailedPrecondition {
        Error::BadInput(format!("{call}: {}", s.message()))
    } else {
        status(call, s)
    }
}

fn parse(call: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Failed(format!("{call}: bad JSON from the coordinator: {e}")))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The status for people: one line for the rollout, one per wave, the
/// agents that need a human with their commands.
fn print_status(v: &Value) {
    println!(
        "{} {} ({}): {}",
        v["product"].as_str().unwrap_or(""),
        v["version"].as_str().unwrap_or(""),
        v["rollout"].as_str().unwrap_or(""),
        v["summary"].as_str().or(v["state"].as_str()).unwrap_or("")
    );
    for w in v["waves"].as_array().into_iter().flatten() {
        println!(
            "  wave {:<12} {:<18} succeeded {:>4}  failed {:>4}  pending {:>4}  rolled back {:>4}",
            w["name"].as_str().unwrap_or(""),
            w["state"].as_str().unwrap_or(""),
            n(&w["succeeded"]),
            n(&w["failed"]),
            n(&w["pending"]),
            n(&w["rolled_back"])
        );
    }
    for a in v["agents"].as_array().into_iter().flatten() {
        println!(
            "  {:<22} {:<12} {:<12} {}{}",
            a["id"].as_str().unwrap_or(""),
            a["wave"].as_str().unwrap_or("-"),
            a["outcome"].as_str().unwrap_or(""),
            if a["online"] == true { "online" } else { "offline" },
            a["rollback"].as_str().map(|r| format!("  rollback {r}")).unwrap_or_default()
        );
    }
    for p in v["partial_rollbacks"].as_array().into_iter().flatten() {
        println!(
            "  rollback of {} ({}): proven {}  pending {}  failed {}",
            p["part"].as_str().unwrap_or(""),
            p["scope"].as_str().unwrap_or(""),
            n(&p["proven"]),
            n(&p["pending"]),
            n(&p["failed"])
        );
    }
    print_needs_human(v);
}

fn print_needs_human(v: &Value) {
    for h in v["needs_human"].as_array().into_iter().flatten() {
        println!("NEEDS A HUMAN: agent {}: {}", h["agent"].as_str().unwrap_or(""), h["reason"].as_str().unwrap_or(""));
        for c in h["commands"].as_array().into_iter().flatten() {
            println!("    {}", c.as_str().unwrap_or(""));
        }
    }
}

/// `rewindctl rollout start PRODUCT VERSION [--supersede]`.
///
/// # Errors
/// No such bundle, an active rollout without --supersede (exit 2), an
/// unreachable coordinator.
pub fn start(c: &CoordinatorArgs, a: &StartArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .start_rollout(v1::StartRolloutRequest {
                product: a.product.clone(),
                version: a.version.clone(),
                supersede: a.supersede,
            })
            .await
            .map_err(|s| refused("rollout start", &s))?
            .into_inner();
        let status = parse("rollout start", &r.json)?;
        if a.json {
            println!("{}", json!({"rollout": r.rollout_id, "agents": r.agents, "status": status}));
        } else {
            println!("rollout {} of {} {} started over {} agent(s)", r.rollout_id, a.product, a.version, r.agents);
            print_status(&status);
        }
        Ok(0)
    })
}

/// `rewindctl rollout status PRODUCT [--json]`.
///
/// # Errors
/// No rollout (exit 2), an unreachable coordinator.
pub fn show(c: &CoordinatorArgs, a: &StatusArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .rollout_status(v1::RolloutStatusRequest { product: a.product.clone(), ..Default::default() })
            .await
            .map_err(|s| status("rollout status", &s))?
            .into_inner();
        let v = parse("rollout status", &r.json)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        } else {
            print_status(&v);
        }
        Ok(0)
    })
}

/// The exit code a finished rollout stands for.
fn final_code(v: &Value) -> u8 {
    match v["state"].as_str().unwrap_or("") {
        "done" => 0,
        _ if v["needs_human"].as_array().is_some_and(|h| !h.is_empty()) => 3,
        _ => 1,
    }
}

/// `rewindctl rollout watch PRODUCT`: the status every time it changes
/// until the rollout ends. On a terminal, one progress bar per wave
/// (indicatif: reported of assigned, with its state and counts) under a
/// line for the rollout; otherwise one plain line per change (JSON lines
/// with --json).
///
/// # Errors
/// No rollout (exit 2), an unreachable coordinator.
pub fn watch(c: &CoordinatorArgs, a: &StatusArgs) -> Result<u8> {
    let tty = std::io::stdout().is_terminal() && !a.json;
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let mut stream = client
            .watch_rollout(v1::RolloutStatusRequest { product: a.product.clone(), ..Default::default() })
            .await
            .map_err(|s| status("rollout watch", &s))?
            .into_inner();
        let mut bars = tty.then(Bars::default);
        let mut last = Value::Null;
        while let Some(msg) = stream.message().await.map_err(|s| status("rollout watch", &s))? {
            let v = parse("rollout watch", &msg.json)?;
            match &mut bars {
                _ if a.json => println!("{v}"),
                Some(b) => b.show(&v),
                None => println!("{}", watch_line(&v)),
            }
            last = v;
        }
        if let Some(b) = bars {
            b.finish();
        }
        if !a.json {
            println!("{}", last["summary"].as_str().unwrap_or(""));
            print_needs_human(&last);
        }
        Ok(final_code(&last))
    })
}

/// One plain line of `watch`: the rollout's state, then each wave's.
fn watch_line(v: &Value) -> String {
    let waves: Vec<String> = v["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!(
                "{} {} {}/{} ok {} failed {} pending",
                w["name"].as_str().unwrap_or(""),
                w["state"].as_str().unwrap_or(""),
                n(&w["succeeded"]),
                n(&w["succeeded"]) + n(&w["failed"]) + n(&w["pending"]),
                n(&w["failed"]),
                n(&w["pending"])
            )
        })
        .collect();
    format!("{}: {} | {}", v["rollout"].as_str().unwrap_or(""), v["state"].as_str().unwrap_or(""), waves.join(" | "))
}

/// `watch` on a terminal: a line for the rollout and a bar per wave.
#[derive(Default)]
struct Bars {
    multi: indicatif::MultiProgress,
    head: Option<indicatif::ProgressBar>,
    waves: Vec<indicatif::ProgressBar>,
}

impl Bars {
    fn show(&mut self, v: &Value) {
        let head = self.head.get_or_insert_with(|| {
            let b = self.multi.add(indicatif::ProgressBar::new_spinner());
            b.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        head.set_message(format!(
            "{} {}: {}",
            v["rollout"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or(""),
            v["reason"].as_str().or(v["summary"].as_str()).unwrap_or("")
        ));
        let style = indicatif::ProgressStyle::with_template("  {prefix:<12} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> ");
        for (i, w) in v["waves"].as_array().into_iter().flatten().enumerate() {
            if self.waves.len() <= i {
                let b = self.multi.add(indicatif::ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(w["name"].as_str().unwrap_or("").to_string());
                self.waves.push(b);
            }
            let (ok, failed, pending) = (n(&w["succeeded"]), n(&w["failed"]), n(&w["pending"]));
            let b = &self.waves[i];
            b.set_length(ok + failed + pending);
            b.set_position(ok + failed);
            b.set_message(format!(
                "{} · {ok} ok · {failed} failed · {pending} pending · {} rolled back",
                w["state"].as_str().unwrap_or(""),
                n(&w["rolled_back"])
            ));
        }
    }

    fn finish(self) {
        if let Some(h) = &self.head {
            h.finish();
        }
        for b in &self.waves {
            b.finish();
        }
    }
}

async fn control(c: &CoordinatorArgs, product: &str, command: &str, wave: &str, json_out: bool) -> Result<u8> {
    let mut client = admin(c).await?;
    let call = format!("rollout {command}");
    let r = client
        .control_rollout(v1::ControlRolloutRequest {
            product: product.to_string(),
            command: command.to_string(),
            wave: wave.to_string(),
        })
        .await
        .map_err(|s| refused(&call, &s))?
        .into_inner();
    let v = parse(&call, &r.json)?;
    if json_out {
        println!("{v}");
    } else {
        print_status(&v);
    }
    Ok(0)
}

/// `rewindctl rollout pause|resume|abort PRODUCT`.
///
/// # Errors
/// No active rollout or a state that refuses the command (exit 2).
pub fn pause(c: &CoordinatorArgs, a: &ProductArgs) -> Result<u8> {
    runtime()?.block_on(control(c, &a.product, "pause", "", a.json))
}

/// See [`pause`].
///
/// # Errors
/// As [`pause`].
pub fn resume(c: &CoordinatorArgs, a: &ProductArgs) -> Result<u8> {
    runtime()?.block_on(control(c, &a.product, "resume", "", a.json))
}

/// See [`pause`].
///
/// # Errors
/// As [`pause`].
pub fn abort(c: &CoordinatorArgs, a: &ProductArgs) -> Result<u8> {
    runtime()?.block_on(control(c, &a.product, "abort", "", a.json))
}

/// `rewindctl rollout approve PRODUCT WAVE` (approver role).
///
/// # Errors
/// Not awaiting that wave (exit 2), a token below approver (exit 2).
pub fn approve(c: &CoordinatorArgs, a: &ApproveArgs) -> Result<u8> {
    runtime()?.block_on(control(c, &a.product, "approve", &a.wave, a.json))
}

/// `rewindctl rollback PRODUCT [--to-sequence N] [--granularity G]
/// [--subject NAME] [--scope S]`.
///
/// # Errors
/// Bad scope or granularity, nothing to roll back (exit 2); a granularity
/// the fleet path does not run yet (exit 1, says so).
pub fn rollback(c: &CoordinatorArgs, a: &RollbackArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .rollback(v1::RollbackRequest {
                product: a.product.clone(),
                to_sequence: a.to_sequence.unwrap_or(0),
                granularity: a.granularity.clone(),
                scope: a.scope.clone(),
                subject: a.subject.clone().unwrap_or_default(),
                reason: a.reason.clone(),
            })
            .await
            .map_err(|s| refused("rollback", &s))?
            .into_inner();
        let what = match a.subject.as_deref() {
            Some(s) if a.granularity != "release" => format!("{} {s} of {}", a.granularity, a.product),
            _ => a.product.clone(),
        };
        print_sent(&format!("rollback of {what}"), &a.product, a.json, &r)
    })
}

/// What `rollback` and `flags set` print: the JSON, or one line saying how
/// many endpoints the plans went to and how to follow them.
///
/// # Errors
/// When the coordinator's answer is not JSON.
pub fn print_sent(what: &str, product: &str, json: bool, r: &v1::RollbackResponse) -> Result<u8> {
    let v = parse("rollback", &r.json)?;
    if json {
        println!("{v}");
    } else {
        let ids: Vec<&str> = v["rollouts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!(
            "{what} ({}) sent to {} agent(s) now (offline ones get it when they return); follow it with rewindctl rollout status {product}",
            ids.join(", "),
            r.agents,
        );
    }
    Ok(0)
}
