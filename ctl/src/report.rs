//! `rewindctl report ROLLOUT`: the post-rollout review of one rollout
//! (DESIGN.md §8), for the people who write the review — what happened
//! when, how each wave ended, what went wrong, how long the rollback took,
//! and what the users were told. Written as Markdown and as one
//! self-contained HTML page with an SVG chart of the rollout over time.
//!
//! The report is built from two things the coordinator already keeps: the
//! rollout's status (`Admin.RolloutStatus` by id, any state) and its
//! hash-chained audit log (`Admin.AuditExport`). [`build`], [`to_markdown`]
//! and [`to_html`] are pure functions of those, so the same inputs give the
//! same files (no clock, no host names).
//!
//! Guarantees: every value that came from the coordinator — reasons typed
//! by operators, details sent by endpoints, incident texts — is escaped (in
//! the HTML as text, in the Markdown as literal text), so none of it can add
//! markup, a link or a script. The HTML loads nothing: inline CSS, no
//! JavaScript, no external asset, and a Content-Security-Policy that allows
//! neither. Either both files are written or neither (bad input exits 2
//! before anything is written).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use rewind_coordinator::web::html::esc;
use rewind_shared::templates::escape_markdown;
use rewind_shared::wire::v1;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::coordinator::CoordinatorArgs;
use crate::fleet::{admin, runtime, status as call_error};
use crate::{Error, Result, outln, output};

/// The actor the coordinator records for its own automatic steps.
const COORDINATOR: &str = "rewind-coordinator";
/// Per result status, at most this many results are listed one by one in
/// the timeline; beyond it only the first and the last (the chart and the
/// wave table count them all).
const RESULT_ROWS: usize = 10;
/// What the report says about owners: the coordinator does not keep them.
const OWNERS: &str = "not in the coordinator's records: see the release's runbook (rewindctl runbook DIR)";

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl report notes@7 --out reports/\n\n\
Writes the post-rollout review of one rollout as DIR/<product>-<sequence>-report.md and .html and prints \
their paths: the final state, a timeline of every transition with its actor and reason, the outcomes per wave, \
the anomalies (halts, integrity signals, alarms, failed endpoints, endpoints that need a human with their \
commands, partial rollbacks), the time from the halt to the proven rollback, and the incident messages. The \
HTML page is self-contained (no JavaScript, no external files) and charts applied, failed and rolled-back \
results over time with the wave starts and the halt marked. ROLLOUT is PRODUCT@SEQUENCE (any state, finished \
ones too) or a PRODUCT for its current rollout. Needs a viewer token.\n\n\
Exit codes: 0 written, 2 bad input (an unknown rollout, an --out that is not a writable directory; nothing \
is written).")]
pub struct ReportArgs {
    /// The rollout: PRODUCT@SEQUENCE (e.g. notes@7), or a PRODUCT for its active, else latest, rollout.
    #[arg(value_name = "ROLLOUT")]
    pub rollout: String,
    /// Directory to write <product>-<sequence>-report.md and .html into (it must exist).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Print {"markdown", "html", "timeline", "waves", "time_to_rollback_ms", ...} instead of the paths.
    #[arg(long)]
    pub json: bool,
}

// ---- input: the coordinator's documents ----

/// One entry of the coordinator's audit log, `params` decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub seq: u64,
    /// RFC 3339, as the coordinator wrote it.
    pub time: String,
    pub kind: String,
    pub params: Value,
}

impl AuditEvent {
    fn str(&self, key: &str) -> Option<&str> {
        self.params[key].as_str().filter(|s| !s.is_empty())
    }
}

/// The entries of an `audit export` (JSON lines; checkpoints are skipped).
///
/// # Errors
/// [`Error::Failed`] naming the line when it is not an export record.
pub fn parse_audit(lines: &[String]) -> Result<Vec<AuditEvent>> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let bad = |what: String| Error::Failed(format!("report: audit export line {}: {what}", i + 1));
        let r: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        if r["record"] != "entry" {
            continue;
        }
        let params = match &r["params"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            v => v.clone(),
        };
        out.push(AuditEvent {
            seq: r["seq"].as_u64().ok_or_else(|| bad("no seq".into()))?,
            time: r["time"].as_str().unwrap_or_default().to_string(),
            kind: r["kind"].as_str().ok_or_else(|| bad("no kind".into()))?.to_string(),
            params,
        });
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StatusDoc {
    rollout: String,
    product: String,
    version: String,
    sequence: u64,
    state: String,
    summary: Option<String>,
    reason: Option<String>,
    waves: Vec<WaveDoc>,
    agents: Vec<AgentDoc>,
    needs_human: Vec<NeedsHuman>,
    partial_rollbacks: Vec<PartialDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WaveDoc {
    name: String,
    state: String,
    succeeded: u64,
    failed: u64,
    pending: u64,
    rolled_back: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AgentDoc {
    id: String,
    wave: Option<String>,
    outcome: String,
    detail: Option<String>,
    rollback: Option<String>,
    parts: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PartialDoc {
    part: String,
    scope: String,
    proven: u64,
    pending: u64,
    failed: u64,
}

// ---- the report ----

/// One row of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    pub time: String,
    /// Milliseconds since the rollout started (`null` when a time is unreadable).
    pub offset_ms: Option<i64>,
    /// The audit kind (`rollout.halted`, `result`, ...).
    pub kind: String,
    /// What happened, in words.
    pub event: String,
    pub actor: String,
    pub reason: String,
}

/// The outcome of one wave.
#[derive(Debug, Clone, Serialize)]
pub struct WaveRow {
    pub name: String,
    pub state: String,
    /// Endpoints the wave takes.
    pub agents: usize,
    pub succeeded: u64,
    pub failed: u64,
    pub pending: u64,
    pub rolled_back: u64,
    /// When its plans went out (`rollout.wave_started`); `null` if never.
    pub started: Option<String>,
    pub started_offset_ms: Option<i64>,
}

/// A halt or an abort.
#[derive(Debug, Clone, Serialize)]
pub struct Halt {
    pub time: String,
    /// `halted` or `aborted`.
    pub kind: String,
    pub wave: Option<String>,
    pub reason: String,
    pub actor: String,
}

/// An integrity signal: digest drift, a failed verify or rollback proof,
/// an audit gap or fork (a reason that starts with `integrity:`).
#[derive(Debug, Clone, Serialize)]
pub struct Signal {
    pub time: String,
    /// Whether it halted the rollout, or was only recorded.
    pub halted: bool,
    pub reason: String,
}

/// A coordinator alarm about one of the rollout's endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    pub time: String,
    pub agent: String,
    pub kind: String,
    pub detail: String,
}

/// An endpoint that failed, refused, or whose rollback is unproven.
#[derive(Debug, Clone, Serialize)]
pub struct AgentIssue {
    pub agent: String,
    pub wave: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub rollback: Option<String>,
}

/// An endpoint whose rollback could not be proven, with what to run there.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NeedsHuman {
    pub agent: String,
    pub reason: String,
    pub commands: Vec<String>,
}

/// A partial rollback (a target, migration or flag) and how far it got.
#[derive(Debug, Clone, Serialize)]
pub struct Partial {
    pub part: String,
    pub scope: String,
    pub proven: u64,
    pub pending: u64,
    pub failed: u64,
    /// From its `rollout.partial_rollback` entry.
    pub time: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Anomalies {
    pub halts: Vec<Halt>,
    pub integrity: Vec<Signal>,
    pub alarms: Vec<Alarm>,
    pub agents: Vec<AgentIssue>,
    pub needs_human: Vec<NeedsHuman>,
    pub partial_rollbacks: Vec<Partial>,
    /// A command that would take back a release left on endpoints by a
    /// halt without a rollback.
    pub open_rollback: Option<String>,
}

/// The entries the rollback's timing is measured between.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// When the rollback was decided: the halt (automatic, or a manual
    /// rollback of a progressing rollout), or the manual rollback itself
    /// when the rollout had stopped before.
    pub from: String,
    /// `rollout.halted`, `rollout.aborted` or `rollout.rolling_back`.
    pub from_kind: String,
    pub reason: String,
    pub actor: String,
    /// The first `rollout.rolling_back`.
    pub rolling_back: Option<String>,
    /// The first `rollback.sent` after it.
    pub plans_sent: Option<String>,
    /// The last `rollout.rolled_back`.
    pub rolled_back: Option<String>,
    /// The last `result` with status `rolled_back` for the rollout's sequence.
    pub last_rollback_result: Option<String>,
    /// How many such results arrived.
    pub rollback_results: usize,
}

/// One message the coordinator published (`incident.*`).
#[derive(Debug, Clone, Serialize)]
pub struct IncidentMessage {
    pub time: String,
    pub incident: String,
    /// `incident_started`, `rollback_started`, `rollback_completed`, `resolved`, ...
    pub event: String,
    pub state: String,
    pub title: String,
    pub text: String,
}

/// `(offset_ms, cumulative count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Point {
    pub offset_ms: i64,
    pub count: usize,
}

/// Cumulative results over time, per outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    pub applied: Vec<Point>,
    /// `failed` and `refused` results.
    pub failed: Vec<Point>,
    pub rolled_back: Vec<Point>,
}

/// A moment marked on the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    pub offset_ms: i64,
    /// `wave` or `halt`.
    pub kind: String,
    pub label: String,
}

/// The post-rollout review of one rollout.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rollout: String,
    pub product: String,
    pub version: String,
    pub sequence: u64,
    pub state: String,
    pub summary: String,
    /// The first halt's reason, else the status's.
    pub reason: Option<String>,
    pub owners: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_ms: Option<i64>,
    pub timeline: Vec<TimelineRow>,
    /// Results left out of the timeline (see `RESULT_ROWS`).
    pub timeline_omitted: usize,
    pub waves: Vec<WaveRow>,
    pub anomalies: Anomalies,
    pub rollback: Option<Rollback>,
    /// From the halt (or manual rollback) to `rollout.rolled_back`.
    pub time_to_rollback_ms: Option<i64>,
    /// From the halt to the last proven rollback result of an endpoint.
    pub time_to_last_rollback_result_ms: Option<i64>,
    /// From the halt to the first rollback plans queued.
    pub time_to_rollback_sent_ms: Option<i64>,
    pub incidents: Vec<IncidentMessage>,
    pub series: Series,
    pub marks: Vec<Mark>,
    /// The chart's time axis: from the start to the last entry.
    pub span_ms: i64,
}

/// Milliseconds since the Unix epoch of an RFC 3339 time.
fn epoch_ms(time: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(time).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

fn between(a: &str, b: &str) -> Option<i64> {
    Some(epoch_ms(b)? - epoch_ms(a)?)
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "rolled_back" | "done" | "superseded")
}

/// `2 agent(s)`, or the count of a list.
fn count_of(v: &Value) -> usize {
    v.as_array().map_or_else(|| usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0), Vec::len)
}

/// Builds the report from the `rollout status --json` document of one
/// rollout and the coordinator's audit entries (all of them: the ones of
/// this rollout are picked out here).
///
/// # Errors
/// [`Error::Failed`] when the status is not a rollout status document.
pub fn build(status: &Value, audit: &[AuditEvent]) -> Result<Report> {
    let st = StatusDoc::deserialize(status).map_err(|e| {
        Error::Failed(format!("report: the coordinator's rollout status is not what rewindctl reads: {e}"))
    })?;
    let id = if st.rollout.is_empty() { format!("{}@{}", st.product, st.sequence) } else { st.rollout.clone() };
    let agents: BTreeSet<&str> = st.agents.iter().map(|a| a.id.as_str()).collect();

    // The rollout's own entries, then the alarms of its endpoints while it ran.
    let own = |e: &AuditEvent| -> bool {
        match e.kind.as_str() {
            k if k.starts_with("rollout.") || k == "plan.sent" || k == "rollback.sent" => {
                e.str("rollout") == Some(id.as_str())
            }
            "result" => e.str("product") == Some(st.product.as_str()) && e.params["sequence"] == st.sequence,
            k if k.starts_with("incident.") => {
                e.str("product") == Some(st.product.as_str()) && e.str("version") == Some(st.version.as_str())
            }
            _ => false,
        }
    };
    let first_seq = audit.iter().find(|e| e.kind.starts_with("rollout.") && own(e)).map(|e| e.seq);
    let last_seq = audit.iter().rev().find(|e| own(e)).map(|e| e.seq);
    let window_end = if is_terminal(&st.state) { last_seq.unwrap_or(u64::MAX) } else { u64::MAX };
    let entries: Vec<&AuditEvent> = audit
        .iter()
        .filter(|e| {
            own(e)
                || (e.kind == "alarm"
                    && e.str("agent").is_some_and(|a| agents.contains(a))
                    && first_seq.is_some_and(|f| e.seq >= f)
                    && e.seq <= window_end)
        })
        .collect();

    let start =
        entries.iter().find(|e| e.kind == "rollout.started").or_else(|| entries.first()).map(|e| e.time.clone());
    let ended = if is_terminal(&st.state) {
        let last = ["rollout.rolled_back", "rollout.done", "rollout.superseded"];
        entries.iter().rev().find(|e| last.contains(&e.kind.as_str())).map(|e| e.time.clone())
    } else {
        None
    };
    let offset = |t: &str| start.as_deref().and_then(|s| between(s, t));

    // Timeline: every transition, plan, alarm and message; results one by
    // one up to RESULT_ROWS per status, else the first and the last.
    let mut by_status: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.kind == "result" {
            by_status.entry(e.str("status").unwrap_or("unknown")).or_default().push(i);
        }
    }
    let mut shown_results: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let mut timeline_omitted = 0;
    for list in by_status.values() {
        let n = list.len();
        for (k, &i) in list.iter().enumerate() {
            if n <= RESULT_ROWS || k == 0 || k == n - 1 {
                shown_results.insert(i, (k + 1, n));
            } else {
                timeline_omitted += 1;
            }
        }
    }
    let mut timeline = Vec::new();
    let mut last_halt: Option<&str> = None;
    for (i, e) in entries.iter().enumerate() {
        if e.kind == "rollout.notify" || (e.kind == "result" && !shown_results.contains_key(&i)) {
            continue;
        }
        let (event, actor, mut reason) = describe(e, shown_results.get(&i).copied());
        // The halt's reason is long (a verify's SQL, say): said once.
        if last_halt.is_some_and(|h| reason.strip_prefix("auto_rollback after halt: ") == Some(h)) {
            reason = "auto_rollback after the halt above".to_string();
        }
        if e.kind == "rollout.halted" || e.kind == "rollout.aborted" {
            last_halt = e.str("reason");
        }
        timeline.push(TimelineRow {
            time: e.time.clone(),
            offset_ms: offset(&e.time),
            kind: e.kind.clone(),
            event,
            actor,
            reason,
        });
    }

    let waves = st
        .waves
        .iter()
        .map(|w| {
            let started = entries
                .iter()
                .find(|e| e.kind == "rollout.wave_started" && e.str("wave") == Some(w.name.as_str()))
                .map(|e| e.time.clone());
            WaveRow {
                name: w.name.clone(),
                state: w.state.clone(),
                agents: st.agents.iter().filter(|a| a.wave.as_deref() == Some(w.name.as_str())).count(),
                succeeded: w.succeeded,
                failed: w.failed,
                pending: w.pending,
                rolled_back: w.rolled_back,
                started_offset_ms: started.as_deref().and_then(offset),
                started,
            }
        })
        .collect();

    let mut anomalies = Anomalies::default();
    for e in &entries {
        let reason = e.str("reason").unwrap_or_default().to_string();
        match e.kind.as_str() {
            "rollout.halted" | "rollout.aborted" => {
                anomalies.halts.push(Halt {
                    time: e.time.clone(),
                    kind: e.kind.trim_start_matches("rollout.").to_string(),
                    wave: e.str("wave").map(String::from),
                    reason: reason.clone(),
                    actor: e.str("actor").unwrap_or(COORDINATOR).to_string(),
                });
                if reason.starts_with("integrity:") {
                    anomalies.integrity.push(Signal { time: e.time.clone(), halted: true, reason });
                }
            }
            "rollout.signal" if reason.starts_with("integrity:") => {
                anomalies.integrity.push(Signal { time: e.time.clone(), halted: false, reason });
            }
            "alarm" => anomalies.alarms.push(Alarm {
                time: e.time.clone(),
                agent: e.str("agent").unwrap_or_default().to_string(),
                kind: e.str("kind").unwrap_or_default().to_string(),
                detail: e.str("detail").unwrap_or_default().to_string(),
            }),
            _ => {}
        }
    }
    anomalies.agents = st
        .agents
        .iter()
        .filter(|a| {
            matches!(a.outcome.as_str(), "failed" | "refused")
                || matches!(a.rollback.as_deref(), Some("failed" | "timed_out"))
                || a.parts.values().any(|p| p == "failed" || p == "timed_out")
        })
        .map(|a| AgentIssue {
            agent: a.id.clone(),
            wave: a.wave.clone(),
            outcome: a.outcome.clone(),
            detail: a.detail.clone(),
            rollback: a.rollback.clone(),
        })
        .collect();
    anomalies.needs_human = st.needs_human.clone();
    anomalies.partial_rollbacks = st
        .partial_rollbacks
        .iter()
        .map(|p| {
            // `rollout.partial_rollback` reasons read "partial rollback of <part> (<scope>) ...".
            let entry = entries.iter().find(|e| {
                e.kind == "rollout.partial_rollback"
                    && e.str("reason").is_some_and(|r| r.contains(&p.part) && r.contains(&p.scope))
            });
            Partial {
                part: p.part.clone(),
                scope: p.scope.clone(),
                proven: p.proven,
                pending: p.pending,
                failed: p.failed,
                time: entry.map(|e| e.time.clone()),
                actor: entry.and_then(|e| e.str("actor")).map(String::from),
                reason: entry.and_then(|e| e.str("reason")).map(String::from),
            }
        })
        .collect();
    let release_rollback_sent =
        entries.iter().any(|e| e.kind == "rollback.sent" && e.str("granularity").is_none_or(|g| g == "release"));
    if st.state == "halted" && !release_rollback_sent && st.agents.iter().any(|a| a.outcome == "applied") {
        anomalies.open_rollback = Some(format!("rewindctl rollback {}", st.product));
    }

    let rollback = rollback_of(&entries);
    let after = |from: &str, to: Option<&String>| to.and_then(|t| between(from, t));
    let (time_to_rollback_ms, time_to_last_rollback_result_ms, time_to_rollback_sent_ms) =
        rollback.as_ref().map_or((None, None, None), |r| {
            (
                after(&r.from, r.rolled_back.as_ref()),
                after(&r.from, r.last_rollback_result.as_ref()),
                after(&r.from, r.plans_sent.as_ref()),
            )
        });

    let incidents = entries
        .iter()
        .filter(|e| e.kind.starts_with("incident."))
        .map(|e| IncidentMessage {
            time: e.time.clone(),
            incident: e.str("incident").unwrap_or_default().to_string(),
            event: e.kind.trim_start_matches("incident.").to_string(),
            state: e.str("state").unwrap_or_default().to_string(),
            title: e.str("title").unwrap_or_default().to_string(),
            text: e.str("text").unwrap_or_default().to_string(),
        })
        .collect();

    let mut series = Series::default();
    let mut marks = Vec::new();
    let mut span_ms = 0;
    for e in &entries {
        let Some(at) = offset(&e.time) else { continue };
        span_ms = span_ms.max(at);
        let line = match (e.kind.as_str(), e.str("status")) {
            ("result", Some("applied")) => Some(&mut series.applied),
            ("result", Some("failed" | "refused")) => Some(&mut series.failed),
            ("result", Some("rolled_back")) => Some(&mut series.rolled_back),
            _ => None,
        };
        if let Some(line) = line {
            let count = line.last().map_or(0, |p| p.count) + 1;
            line.push(Point { offset_ms: at, count });
        }
        match e.kind.as_str() {
            "rollout.wave_started" => marks.push(Mark {
                offset_ms: at,
                kind: "wave".into(),
                label: format!("wave {}", e.str("wave").unwrap_or("?")),
            }),
            "rollout.halted" | "rollout.aborted" => marks.push(Mark {
                offset_ms: at,
                kind: "halt".into(),
                label: e.kind.trim_start_matches("rollout.").to_string(),
            }),
            _ => {}
        }
    }

    Ok(Report {
        reason: anomalies.halts.first().map(|h| h.reason.clone()).or_else(|| st.reason.clone()),
        summary: st.summary.clone().unwrap_or_else(|| st.state.clone()),
        rollout: id,
        product: st.product,
        version: st.version,
        sequence: st.sequence,
        state: st.state,
        owners: OWNERS.to_string(),
        duration_ms: match (&start, &ended) {
            (Some(s), Some(e)) => between(s, e),
            _ => None,
        },
        started: start,
        ended,
        timeline,
        timeline_omitted,
        waves,
        anomalies,
        rollback,
        time_to_rollback_ms,
        time_to_last_rollback_result_ms,
        time_to_rollback_sent_ms,
        incidents,
        series,
        marks,
        span_ms,
    })
}

/// The rollback's decision and completion entries: the first
/// `rollout.rolling_back`; the halt it followed in the same step (same
/// reason, or "auto_rollback after halt: <the halt's reason>") — else the
/// rolling-back entry itself is the decision (a manual rollback of a
/// rollout that had stopped before); the last `rollout.rolled_back`; the
/// last proven rollback result.
fn rollback_of(entries: &[&AuditEvent]) -> Option<Rollback> {
    let rb = entries.iter().position(|e| e.kind == "rollout.rolling_back")?;
    let rolling = entries[rb];
    let why = rolling.str("reason").unwrap_or_default();
    let halt =
        entries[..rb].iter().rev().find(|e| e.kind == "rollout.halted" || e.kind == "rollout.aborted").filter(|h| {
            let r = h.str("reason").unwrap_or_default();
            why == r || why.strip_prefix("auto_rollback after halt: ") == Some(r)
        });
    let from = halt.copied().unwrap_or(rolling);
    let later = &entries[rb..];
    let results: Vec<&&AuditEvent> =
        later.iter().filter(|e| e.kind == "result" && e.str("status") == Some("rolled_back")).collect();
    Some(Rollback {
        from: from.time.clone(),
        from_kind: from.kind.clone(),
        reason: from.str("reason").unwrap_or_default().to_string(),
        actor: from.str("actor").unwrap_or(COORDINATOR).to_string(),
        rolling_back: Some(rolling.time.clone()),
        plans_sent: later.iter().find(|e| e.kind == "rollback.sent").map(|e| e.time.clone()),
        rolled_back: later.iter().rev().find(|e| e.kind == "rollout.rolled_back").map(|e| e.time.clone()),
        last_rollback_result: results.last().map(|e| e.time.clone()),
        rollback_results: results.len(),
    })
}

/// `(event, actor, reason)` of one timeline row; `nth` is `(k, n)` for the
/// k-th of n results with that status.
fn describe(e: &AuditEvent, nth: Option<(usize, usize)>) -> (String, String, String) {
    let actor = e.str("actor").unwrap_or(COORDINATOR).to_string();
    let reason = e.str("reason").unwrap_or_default().to_string();
    let wave = e.str("wave").unwrap_or("?");
    let transition = || match (e.str("from"), e.str("to")) {
        (Some(f), Some(t)) => format!(" ({f} → {t})"),
        _ => String::new(),
    };
    let event = match e.kind.as_str() {
        "rollout.started" => format!("rollout started{}", transition()),
        "rollout.wave_started" => format!("wave {wave} started: its apply plans go out"),
        "rollout.baking" => format!("wave {wave} reported and bakes"),
        "rollout.awaiting_approval" => format!("awaiting approval of wave {wave}"),
        "rollout.approved" => format!("wave {wave} approved"),
        "rollout.paused" => "paused".to_string(),
        "rollout.resumed" => "resumed".to_string(),
        "rollout.halted" => format!("HALTED{}", transition()),
        "rollout.aborted" => format!("aborted{}", transition()),
        "rollout.rolling_back" => "rolling back: rollback plans go out".to_string(),
        "rollout.rolled_back" => "rolled back: every endpoint that applied proved its rollback".to_string(),
        "rollout.done" => "done: every wave finished".to_string(),
        "rollout.superseded" => "superseded".to_string(),
        "rollout.signal" => "signal recorded (no halt)".to_string(),
        "rollout.partial_rollback" => "partial rollback".to_string(),
        "plan.sent" => {
            let waves: Vec<&str> =
                e.params["waves"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!(
                "apply plan sent to {} agent(s){}",
                count_of(&e.params["agents"]),
                if waves.is_empty() { String::new() } else { format!(" (wave {})", waves.join(", ")) }
            )
        }
        "rollback.sent" => {
            let part = match (e.str("granularity"), e.str("subject")) {
                (Some(g), Some(s)) if g != "release" => format!(" of {g} {s}"),
                _ => String::new(),
            };
            format!("rollback plan{part} sent to {} agent(s)", count_of(&e.params["agents"]))
        }
        "result" => {
            let status = e.str("status").unwrap_or("unknown");
            let which = match nth {
                Some((k, n)) if n > RESULT_ROWS && k == 1 => format!(" (first of {n})"),
                Some((k, n)) if n > RESULT_ROWS && k == n => format!(" (last of {n})"),
                _ => String::new(),
            };
            let chain = e.str("continuity").filter(|c| *c != "ok").map(|c| format!(", audit chain {c}"));
            return (
                format!("result: {status}{which}{}", chain.unwrap_or_default()),
                e.str("agent").unwrap_or_default().to_string(),
                String::new(),
            );
        }
        "alarm" => {
            return (
                format!("alarm {}", e.str("kind").unwrap_or("?")),
                e.str("agent").unwrap_or_default().to_string(),
                e.str("detail").unwrap_or_default().to_string(),
            );
        }
        k if k.starts_with("incident.") => {
            return (
                format!("message {}: {}", k.trim_start_matches("incident."), e.str("title").unwrap_or_default()),
                COORDINATOR.to_string(),
                String::new(),
            );
        }
        k => k.to_string(),
    };
    (event, actor, reason)
}

// ---- rendering ----

/// `374 ms`, `12.345 s`, `3 min 05 s`, `2 h 03 min`.
#[must_use]
pub fn human_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let s = ms / 1000;
    if ms < 1000 {
        format!("{sign}{ms} ms")
    } else if ms < 60_000 {
        format!("{sign}{}.{:03} s", s, ms % 1000)
    } else if s < 3600 {
        format!("{sign}{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{sign}{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

fn offset_text(ms: Option<i64>) -> String {
    ms.map_or_else(|| "?".to_string(), |m| format!("+{}", human_ms(m)))
}

/// A value as literal Markdown text on one line (a table cell, a list item).
fn md(value: &str) -> String {
    let one_line: String = value.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    escape_markdown(&one_line)
}

/// A fenced code block whose fence is longer than any backtick run inside.
fn md_code(out: &mut String, lang: &str, lines: &[String]) {
    let longest = lines.iter().flat_map(|l| l.split(|c| c != '`').map(str::len).collect::<Vec<_>>()).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let _ = writeln!(out, "{fence}{lang}");
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = writeln!(out, "{fence}\n");
}

fn ms_or(ms: Option<i64>, none: &str) -> String {
    ms.map_or_else(|| none.to_string(), human_ms)
}

/// The sentence on the rollback's timing (Markdown and HTML say the same).
fn rollback_sentences(r: &Report) -> Vec<String> {
    let Some(rb) = &r.rollback else {
        return vec![if r.anomalies.halts.is_empty() {
            "No rollback: the rollout never halted.".to_string()
        } else {
            "No rollback was started after the halt.".to_string()
        }];
    };
    let from = match rb.from_kind.as_str() {
        "rollout.rolling_back" => "the manual rollback",
        "rollout.aborted" => "the abort",
        _ => "the halt",
    };
    let mut out = vec![format!("Decided at {} ({from}, by {}): {}", rb.from, rb.actor, rb.reason)];
    out.push(match (&rb.plans_sent, r.time_to_rollback_sent_ms) {
        (Some(t), Some(ms)) => format!("Rollback plans queued and pushed at {t}: {} after {from}.", human_ms(ms)),
        _ => "No rollback plan had to be sent: no endpoint had the release applied (those that failed reverted themselves).".to_string(),
    });
    out.push(match (&rb.rolled_back, r.time_to_rollback_ms) {
        (Some(t), Some(ms)) => format!("Rollout rolled back at {t}: time to rollback {} from {from}.", human_ms(ms)),
        _ => format!("The rollout did not reach rolled_back (it is {}).", r.state),
    });
    out.push(match (&rb.last_rollback_result, r.time_to_last_rollback_result_ms) {
        (Some(t), Some(ms)) => format!(
            "Last endpoint's verified rollback result ({} in all) at {t}: {} from {from}.",
            rb.rollback_results,
            human_ms(ms)
        ),
        _ => "No endpoint reported a rolled_back result.".to_string(),
    });
    out
}

fn total(points: &[Point]) -> usize {
    points.last().map_or(0, |p| p.count)
}

/// A message's text without its first paragraph when that is the title
/// (the plain text of a message starts with it; the report shows it as a heading).
fn message_body(i: &IncidentMessage) -> &str {
    let text = i.text.trim_end();
    match text.split_once("\n\n") {
        Some((first, rest)) if first.trim() == i.title.trim() => rest,
        _ => text,
    }
}

/// The report as Markdown.
#[must_use]
pub fn to_markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Post-rollout report: {} {} ({})\n", md(&r.product), md(&r.version), md(&r.rollout));
    let _ = writeln!(
        o,
        "Rollout `{}` of {} {} (sequence {}). Generated by `rewindctl report {}` from the coordinator's rollout status \
         and audit log; the HTML version carries the same content and a chart.\n",
        r.rollout.replace('`', "'"),
        md(&r.product),
        md(&r.version),
        r.sequence,
        r.rollout.replace('`', "'")
    );
    let _ = writeln!(o, "- Final state: **{}** — {}", md(&r.state), md(&r.summary));
    if let Some(reason) = &r.reason {
        let _ = writeln!(o, "- Halt reason: {}", md(reason));
    }
    let _ = writeln!(
        o,
        "- Started {}, {}",
        r.started.as_deref().map_or_else(|| "?".to_string(), md),
        match (&r.ended, r.duration_ms) {
            (Some(e), Some(d)) => format!("ended {} (after {})", md(e), human_ms(d)),
            _ => "not ended".to_string(),
        }
    );
    let _ = writeln!(o, "- Time to rollback: **{}**", ms_or(r.time_to_rollback_ms, "none"));
    let _ = writeln!(
        o,
        "- Results: {} applied, {} failed or refused, {} rolled back",
        total(&r.series.applied),
        total(&r.series.failed),
        total(&r.series.rolled_back)
    );
    let _ = writeln!(
        o,
        "- Owner and on call: {}\n",
        OWNERS.replace("(rewindctl runbook DIR)", "(`rewindctl runbook DIR`)")
    );

    o.push_str("## 1. Timeline\n\n");
    o.push_str("| time | offset | event | actor | reason |\n|---|---|---|---|---|\n");
    for t in &r.timeline {
        let _ = writeln!(
            o,
            "| {} | {} | `{}` {} | {} | {} |",
            md(&t.time),
            offset_text(t.offset_ms),
            t.kind.replace('`', "'").replace('|', "/"),
            md(&t.event),
            md(&t.actor),
            md(&t.reason)
        );
    }
    if r.timeline.is_empty() {
        o.push_str("| | | no audit entries for this rollout | | |\n");
    }
    if r.timeline_omitted > 0 {
        let _ = writeln!(
            o,
            "\n{} more result(s) are not listed one by one (only the first and the last of each status); \
             the wave table and the chart count them all.",
            r.timeline_omitted
        );
    }

    o.push_str("\n## 2. Outcomes per wave\n\n");
    o.push_str("| wave | state | endpoints | succeeded | failed | pending | rolled back | started |\n");
    o.push_str("|---|---|---|---|---|---|---|---|\n");
    for w in &r.waves {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            md(&w.name),
            md(&w.state),
            w.agents,
            w.succeeded,
            w.failed,
            w.pending,
            w.rolled_back,
            w.started
                .as_deref()
                .map_or_else(|| "never".to_string(), |s| format!("{} ({})", md(s), offset_text(w.started_offset_ms)))
        );
    }

    o.push_str("\n## 3. Anomalies\n\n");
    let a = &r.anomalies;
    o.push_str("### Halts\n\n");
    if a.halts.is_empty() {
        o.push_str("None.\n");
    }
    for h in &a.halts {
        let _ = writeln!(
            o,
            "- {} {} in wave {} by {}: {}",
            md(&h.time),
            md(&h.kind),
            h.wave.as_deref().map_or_else(|| "-".to_string(), md),
            md(&h.actor),
            md(&h.reason)
        );
    }
    o.push_str("\n### Integrity signals\n\n");
    if a.integrity.is_empty() {
        o.push_str("None.\n");
    }
    for s in &a.integrity {
        let _ = writeln!(
            o,
            "- {} {}: {}",
            md(&s.time),
            if s.halted { "halted the rollout" } else { "recorded (the rollout was no longer progressing)" },
            md(&s.reason)
        );
    }
    o.push_str("\n### Alarms of the rollout's endpoints\n\n");
    if a.alarms.is_empty() {
        o.push_str("None.\n");
    }
    for al in &a.alarms {
        let _ = writeln!(o, "- {} {} on {}: {}", md(&al.time), md(&al.kind), md(&al.agent), md(&al.detail));
    }
    o.push_str("\n### Failed and refused endpoints\n\n");
    if a.agents.is_empty() {
        o.push_str("None.\n");
    } else {
        o.push_str("| endpoint | wave | outcome | detail | rollback |\n|---|---|---|---|---|\n");
        for g in &a.agents {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                md(&g.agent),
                g.wave.as_deref().map_or_else(|| "-".to_string(), md),
                md(&g.outcome),
                g.detail.as_deref().map_or_else(|| "-".to_string(), md),
                g.rollback.as_deref().map_or_else(|| "-".to_string(), md)
            );
        }
    }
    o.push_str("\n### Endpoints that need a human\n\n");
    if a.needs_human.is_empty() {
        o.push_str("None: every rollback that was needed is proven (or none was needed).\n");
    }
    for h in &a.needs_human {
        let _ = writeln!(
            o,
            "**{}**: {}. Run on that endpoint (words in angle brackets are the endpoint's own), then tell the release owner:\n",
            md(&h.agent),
            md(&h.reason)
        );
        md_code(&mut o, "sh", &h.commands);
    }
    if let Some(cmd) = &a.open_rollback {
        o.push_str("\nThe release is still installed on the endpoints that applied it and no rollback was sent. To take it back (while this is the product's current rollout):\n\n");
        md_code(&mut o, "sh", std::slice::from_ref(cmd));
    }
    o.push_str("\n### Partial rollbacks\n\n");
    if a.partial_rollbacks.is_empty() {
        o.push_str("None.\n");
    }
    for p in &a.partial_rollbacks {
        let _ = writeln!(
            o,
            "- {} ({}): proven {}, pending {}, failed {}{}",
            md(&p.part),
            md(&p.scope),
            p.proven,
            p.pending,
            p.failed,
            match (&p.time, &p.actor, &p.reason) {
                (Some(t), Some(who), Some(why)) => format!(" — asked at {} by {}: {}", md(t), md(who), md(why)),
                _ => String::new(),
            }
        );
    }

    o.push_str("\n## 4. Time to rollback\n\n");
    if let Some(ms) = r.time_to_rollback_ms {
        let _ = writeln!(o, "Time to rollback: **{}** ({ms} ms).\n", human_ms(ms));
    }
    for s in rollback_sentences(r) {
        let _ = writeln!(o, "- {}", md(&s));
    }

    o.push_str("\n## 5. Incidents\n\n");
    if r.incidents.is_empty() {
        o.push_str("No message was published about this release.\n");
    }
    for i in &r.incidents {
        let _ = writeln!(o, "### {} ({}, {}, {})\n", md(&i.title), md(&i.event), md(&i.incident), md(&i.time));
        for line in message_body(i).lines() {
            let line = md(line);
            o.push_str(if line.is_empty() { ">" } else { "> " });
            o.push_str(&line);
            o.push('\n');
        }
        o.push('\n');
    }
    o
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#1b1f24;line-height:1.45}\
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}\
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}\
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto}\
blockquote{border-left:4px solid #d0d7de;margin:0;padding:0 1rem;color:#424a53}\
.state{font-weight:bold}.bad{color:#b42318}.good{color:#1a7f37}\
svg text{font-size:11px;font-family:system-ui,sans-serif}\
.applied{stroke:#1a7f37}.failed{stroke:#bc4c00}.rolled_back{stroke:#0969da}\
.timeline td:nth-child(-n+2){white-space:nowrap}";

/// The chart: cumulative results per outcome over time, one polyline per
/// series (step lines, drawn 3 px apart so equal counts stay visible),
/// with the wave starts (dashed grey) and the halts (red) marked.
fn svg_chart(r: &Report) -> String {
    let (w, h, left, right, top, bottom) = (760.0_f64, 300.0_f64, 48.0_f64, 16.0_f64, 20.0_f64, 56.0_f64);
    let span = r.span_ms.max(1);
    let series: [(&str, &str, &[Point]); 3] = [
        ("applied", "applied", &r.series.applied),
        ("failed", "failed or refused", &r.series.failed),
        ("rolled_back", "rolled back", &r.series.rolled_back),
    ];
    let max = series.iter().map(|(_, _, p)| total(p)).max().unwrap_or(0).max(1);
    #[allow(clippy::cast_precision_loss)]
    let x = |ms: i64| left + (ms.clamp(0, span) as f64) / (span as f64) * (w - left - right);
    #[allow(clippy::cast_precision_loss)]
    let y = |n: usize| top + (h - top - bottom) * (1.0 - n as f64 / max as f64);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"results over time\">\
         <title>Cumulative applied, failed and rolled back results of {} over time</title>",
        esc(&r.rollout)
    );
    // Axes and their labels.
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\" stroke=\"#57606a\"/>\
         <line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#57606a\"/>\
         <text x=\"{tx}\" y=\"{y0}\" text-anchor=\"end\">0</text><text x=\"{tx}\" y=\"{ymax}\" text-anchor=\"end\">{max}</text>\
         <text x=\"{left}\" y=\"{lx}\">+0 ms</text><text x=\"{r}\" y=\"{lx}\" text-anchor=\"end\">{end}</text>",
        b = h - bottom,
        r = w - right,
        tx = left - 6.0,
        y0 = h - bottom + 4.0,
        ymax = top + 4.0,
        lx = h - bottom + 16.0,
        end = esc(&format!("+{}", human_ms(span))),
    );
    let mut waves_marked = 0;
    for m in &r.marks {
        let mx = x(m.offset_ms);
        let (stroke, dash, ly) = if m.kind == "halt" {
            ("#cf222e", " stroke-width=\"2\"", top + 10.0)
        } else {
            // Staggered, so waves that start together stay readable.
            waves_marked += 1;
            let ly = top + 10.0 + 12.0 * f64::from(waves_marked % 4 + 1);
            ("#8c959f", " stroke-dasharray=\"4 3\"", ly)
        };
        let _ = write!(
            s,
            "<line class=\"mark {kind}\" x1=\"{mx:.1}\" y1=\"{top}\" x2=\"{mx:.1}\" y2=\"{b}\" stroke=\"{stroke}\"{dash}/>\
             <text x=\"{tx:.1}\" y=\"{ly}\" fill=\"{stroke}\">{label}</text>",
            kind = esc(&m.kind),
            b = h - bottom,
            tx = mx + 3.0,
            label = esc(&m.label),
        );
    }
    for (i, (class, _, points)) in series.iter().enumerate() {
        // Each series 3 px above the one before, so equal counts do not hide one another.
        #[allow(clippy::cast_precision_loss)]
        let lift = 3.0 * i as f64;
        let at = |n: usize| y(n) - lift;
        let mut pts = vec![(x(0), at(0))];
        let mut last = 0;
        for p in *points {
            pts.push((x(p.offset_ms), at(last)));
            pts.push((x(p.offset_ms), at(p.count)));
            last = p.count;
        }
        pts.push((x(span), at(last)));
        let list: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ =
            write!(s, "<polyline class=\"{class}\" fill=\"none\" stroke-width=\"2\" points=\"{}\"/>", list.join(" "));
    }
    for (i, (class, label, points)) in series.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let lx = left + 190.0 * i as f64;
        let ly = h - 14.0;
        let _ = write!(
            s,
            "<line class=\"{class}\" x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke-width=\"3\"/>\
             <text x=\"{}\" y=\"{}\">{label} ({})</text>",
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            total(points)
        );
    }
    s.push_str("</svg>");
    s
}

fn td(s: &str) -> String {
    format!("<td>{}</td>", esc(s))
}

fn num(n: impl std::fmt::Display) -> String {
    format!("<td class=\"n\">{n}</td>")
}

/// The report as one self-contained HTML page (inline CSS and SVG; no
/// script, no external asset; every value escaped).
#[must_use]
pub fn to_html(r: &Report) -> String {
    let mut o = String::new();
    let title = format!("Post-rollout report: {} {} ({})", r.product, r.version, r.rollout);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{CSS}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    let _ = writeln!(
        o,
        "<p>Rollout <code>{id}</code> of {p} {v} (sequence {seq}). Generated by <code>rewindctl report {id}</code> from \
         the coordinator's rollout status and audit log.</p>",
        id = esc(&r.rollout),
        p = esc(&r.product),
        v = esc(&r.version),
        seq = r.sequence
    );
    o.push_str("<table>\n");
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    };
    row(
        &mut o,
        "Final state",
        format!(
            "<span class=\"state {}\">{}</span> — {}",
            if r.state == "done" { "good" } else { "bad" },
            esc(&r.state),
            esc(&r.summary)
        ),
    );
    if let Some(reason) = &r.reason {
        row(&mut o, "Halt reason", esc(reason));
    }
    row(&mut o, "Started", esc(r.started.as_deref().unwrap_or("?")));
    row(
        &mut o,
        "Ended",
        match (&r.ended, r.duration_ms) {
            (Some(e), Some(d)) => format!("{} (after {})", esc(e), esc(&human_ms(d))),
            _ => "not ended".to_string(),
        },
    );
    row(&mut o, "Time to rollback", format!("<strong>{}</strong>", esc(&ms_or(r.time_to_rollback_ms, "none"))));
    row(
        &mut o,
        "Results",
        format!(
            "{} applied, {} failed or refused, {} rolled back",
            total(&r.series.applied),
            total(&r.series.failed),
            total(&r.series.rolled_back)
        ),
    );
    row(
        &mut o,
        "Owner and on call",
        esc(OWNERS).replace("rewindctl runbook DIR", "<code>rewindctl runbook DIR</code>"),
    );
    o.push_str("</table>\n");

    o.push_str("<h2>The rollout over time</h2>\n");
    o.push_str(&svg_chart(r));
    o.push('\n');

    o.push_str("<h2>1. Timeline</h2>\n<table class=\"timeline\"><tr><th>time</th><th>offset</th><th>event</th><th>actor</th><th>reason</th></tr>\n");
    for t in &r.timeline {
        let _ = writeln!(
            o,
            "<tr>{}{}<td><code>{}</code> {}</td>{}{}</tr>",
            td(&t.time),
            td(&offset_text(t.offset_ms)),
            esc(&t.kind),
            esc(&t.event),
            td(&t.actor),
            td(&t.reason)
        );
    }
    o.push_str("</table>\n");
    if r.timeline_omitted > 0 {
        let _ = writeln!(
            o,
            "<p>{} more result(s) are not listed one by one (only the first and the last of each status); the wave \
             table and the chart count them all.</p>",
            r.timeline_omitted
        );
    }

    o.push_str(
        "<h2>2. Outcomes per wave</h2>\n<table><tr><th>wave</th><th>state</th><th>endpoints</th><th>succeeded</th>\
                <th>failed</th><th>pending</th><th>rolled back</th><th>started</th></tr>\n",
    );
    for w in &r.waves {
        let _ = writeln!(
            o,
            "<tr>{}{}{}{}{}{}{}{}</tr>",
            td(&w.name),
            td(&w.state),
            num(w.agents),
            num(w.succeeded),
            num(w.failed),
            num(w.pending),
            num(w.rolled_back),
            td(&w
                .started
                .as_deref()
                .map_or_else(|| "never".to_string(), |s| format!("{s} ({})", offset_text(w.started_offset_ms))))
        );
    }
    o.push_str("</table>\n");

    let a = &r.anomalies;
    o.push_str("<h2>3. Anomalies</h2>\n<h3>Halts</h3>\n");
    list(
        &mut o,
        a.halts.iter().map(|h| {
            format!("{} {} in wave {} by {}: {}", h.time, h.kind, h.wave.as_deref().unwrap_or("-"), h.actor, h.reason)
        }),
    );
    o.push_str("<h3>Integrity signals</h3>\n");
    list(
        &mut o,
        a.integrity.iter().map(|s| {
            format!(
                "{} {}: {}",
                s.time,
                if s.halted { "halted the rollout" } else { "recorded (the rollout was no longer progressing)" },
                s.reason
            )
        }),
    );
    o.push_str("<h3>Alarms of the rollout's endpoints</h3>\n");
    list(&mut o, a.alarms.iter().map(|al| format!("{} {} on {}: {}", al.time, al.kind, al.agent, al.detail)));
    o.push_str("<h3>Failed and refused endpoints</h3>\n");
    if a.agents.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str("<table><tr><th>endpoint</th><th>wave</th><th>outcome</th><th>detail</th><th>rollback</th></tr>\n");
        for g in &a.agents {
            let _ = writeln!(
                o,
                "<tr>{}{}{}{}{}</tr>",
                td(&g.agent),
                td(g.wave.as_deref().unwrap_or("-")),
                td(&g.outcome),
                td(g.detail.as_deref().unwrap_or("-")),
                td(g.rollback.as_deref().unwrap_or("-"))
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<h3>Endpoints that need a human</h3>\n");
    if a.needs_human.is_empty() {
        o.push_str("<p>None: every rollback that was needed is proven (or none was needed).</p>\n");
    }
    for h in &a.needs_human {
        let _ = writeln!(
            o,
            "<p><strong>{}</strong>: {}. Run on that endpoint (words in angle brackets are the endpoint's own), then \
             tell the release owner:</p>\n<pre>{}</pre>",
            esc(&h.agent),
            esc(&h.reason),
            h.commands.iter().map(|c| esc(c)).collect::<Vec<_>>().join("\n")
        );
    }
    if let Some(cmd) = &a.open_rollback {
        let _ = writeln!(
            o,
            "<p>The release is still installed on the endpoints that applied it and no rollback was sent. To take it \
             back (while this is the product's current rollout):</p>\n<pre>{}</pre>",
            esc(cmd)
        );
    }
    o.push_str("<h3>Partial rollbacks</h3>\n");
    list(
        &mut o,
        a.partial_rollbacks.iter().map(|p| {
            format!(
                "{} ({}): proven {}, pending {}, failed {}{}",
                p.part,
                p.scope,
                p.proven,
                p.pending,
                p.failed,
                match (&p.time, &p.actor, &p.reason) {
                    (Some(t), Some(who), Some(why)) => format!(" — asked at {t} by {who}: {why}"),
                    _ => String::new(),
                }
            )
        }),
    );

    o.push_str("<h2>4. Time to rollback</h2>\n");
    if let Some(ms) = r.time_to_rollback_ms {
        let _ = writeln!(o, "<p>Time to rollback: <strong>{}</strong> ({ms} ms).</p>", esc(&human_ms(ms)));
    }
    list(&mut o, rollback_sentences(r).into_iter());

    o.push_str("<h2>5. Incidents</h2>\n");
    if r.incidents.is_empty() {
        o.push_str("<p>No message was published about this release.</p>\n");
    }
    for i in &r.incidents {
        let _ = writeln!(
            o,
            "<h3>{}</h3>\n<p><small>{}, {}, {}</small></p>\n<blockquote>",
            esc(&i.title),
            esc(&i.event),
            esc(&i.incident),
            esc(&i.time)
        );
        for para in message_body(i).split("\n\n") {
            let _ = writeln!(o, "<p>{}</p>", esc(para).replace('\n', "<br>"));
        }
        o.push_str("</blockquote>\n");
    }
    o.push_str("</body></html>\n");
    o
}

/// A `<ul>` of escaped items, or "None.".
fn list(o: &mut String, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        o.push_str("<p>None.</p>\n");
        return;
    }
    o.push_str("<ul>\n");
    for i in items {
        let _ = writeln!(o, "<li>{}</li>", esc(&i));
    }
    o.push_str("</ul>\n");
}

// ---- the command ----

/// `notes@7` → (`notes`, `notes@7`); `notes` → (`notes`, "" = its current).
///
/// # Errors
/// [`Error::BadInput`] for an empty product or a sequence that is not a number.
pub fn parse_rollout(arg: &str) -> Result<(String, String)> {
    let bad = || {
        Error::BadInput(format!(
            "rollout `{arg}`: expected PRODUCT@SEQUENCE (e.g. notes@7) or a PRODUCT for its current rollout"
        ))
    };
    match arg.split_once('@') {
        Some((p, seq)) if !p.is_empty() && !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => {
            Ok((p.to_string(), arg.to_string()))
        }
        Some(_) => Err(bad()),
        None if arg.trim().is_empty() => Err(bad()),
        None => Ok((arg.to_string(), String::new())),
    }
}

/// The file names: `<product>-<sequence>-report.md|html`, with anything
/// but `[A-Za-z0-9._-]` in the product replaced so it stays one file name.
#[must_use]
pub fn file_names(product: &str, sequence: u64) -> (String, String) {
    let safe: String = product
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let safe = safe.trim_start_matches('.');
    let base = format!("{}-{sequence}-report", if safe.is_empty() { "rollout" } else { safe });
    (format!("{base}.md"), format!("{base}.html"))
}

/// `--out` must be an existing directory we can create files in.
fn check_out(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        Error::BadInput(format!("--out {}: {e}; give an existing directory (mkdir -p {0})", dir.display()))
    })?;
    if !meta.is_dir() {
        return Err(Error::BadInput(format!(
            "--out {}: not a directory; the report is two files, give the directory to write them into",
            dir.display()
        )));
    }
    tempfile::Builder::new().prefix(".rewind-report-").tempfile_in(dir).map(drop).map_err(|e| {
        Error::BadInput(format!("--out {}: cannot write there ({e}); give a writable directory", dir.display()))
    })
}

/// Writes both files, or neither: each goes to a temporary file in `dir`
/// first, and the Markdown is removed again if the HTML cannot be put in place.
fn write_both(dir: &Path, files: [(&str, &str); 2]) -> Result<[PathBuf; 2]> {
    let fail = |path: &Path, e: &dyn std::fmt::Display| {
        Error::BadInput(format!("cannot write {}: {e}; give --out a writable directory", path.display()))
    };
    let mut temps = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        let mut t = tempfile::Builder::new().prefix(".rewind-report-").tempfile_in(dir).map_err(|e| fail(&path, &e))?;
        t.write_all(text.as_bytes()).and_then(|()| t.flush()).map_err(|e| fail(&path, &e))?;
        temps.push((t, path));
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for (t, path) in temps {
        if let Err(e) = t.persist(&path) {
            for p in &done {
                let _ = std::fs::remove_file(p);
            }
            return Err(fail(&path, &e.error));
        }
        done.push(path);
    }
    match <[PathBuf; 2]>::try_from(done) {
        Ok(paths) => Ok(paths),
        Err(_) => Err(Error::Failed("report: the two files were not both written".into())),
    }
}

/// Runs `rewindctl report ROLLOUT`; returns the exit code.
///
/// # Errors
/// [`Error::BadInput`] for a malformed or unknown rollout (the coordinator
/// names the known ones) or an `--out` that is not a writable directory —
/// nothing is written then; [`Error::Failed`] for an unreachable
/// coordinator or an answer that cannot be read.
pub fn run(c: &CoordinatorArgs, a: &ReportArgs) -> Result<u8> {
    let (product, rollout) = parse_rollout(&a.rollout)?;
    check_out(&a.out)?;
    let (status, lines) = runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .rollout_status(v1::RolloutStatusRequest { product, rollout })
            .await
            .map_err(|s| call_error("report", &s))?
            .into_inner();
        let status: Value = serde_json::from_str(&r.json)
            .map_err(|e| Error::Failed(format!("report: bad rollout status JSON from the coordinator: {e}")))?;
        let mut stream =
            client.audit_export(v1::AuditExportRequest {}).await.map_err(|s| call_error("report", &s))?.into_inner();
        let mut lines = Vec::new();
        while let Some(rec) = stream.message().await.map_err(|s| call_error("report", &s))? {
            lines.push(rec.json);
        }
        Ok::<_, Error>((status, lines))
    })?;
    let report = build(&status, &parse_audit(&lines)?)?;
    let (md_name, html_name) = file_names(&report.product, report.sequence);
    let [md_path, html_path] =
        write_both(&a.out, [(&md_name, &to_markdown(&report)), (&html_name, &to_html(&report))])?;
    if a.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| Error::Failed(format!("report: cannot serialize the report: {e}")))?;
        v["markdown"] = Value::String(md_path.display().to_string());
        v["html"] = Value::String(html_path.display().to_string());
        output::print_json(&v);
    } else {
        outln!("{}", md_path.display());
        outln!("{}", html_path.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HOSTILE: &str = "integrity: failed_verify on agent agt-a: <script>alert(1)</script> | [x](https://evil)";

    fn ev(seq: u64, time: &str, kind: &str, params: Value) -> AuditEvent {
        AuditEvent { seq, time: format!("2026-11-25T10:00:{time}Z"), kind: kind.into(), params }
    }

    fn rollout(kind: &str, seq: u64, time: &str, from: &str, to: &str, reason: &str, actor: &str) -> AuditEvent {
        ev(
            seq,
            time,
            kind,
            json!({"product": "notes", "version": "2026.11.1", "sequence": 8, "rollout": "notes@8", "wave": "canary",
                   "from": from, "to": to, "reason": reason, "actor": actor}),
        )
    }

    fn result(seq: u64, time: &str, agent: &str, status: &str, sequence: u64) -> AuditEvent {
        ev(
            seq,
            time,
            "result",
            json!({"agent": agent, "result": format!("res-{seq}"), "plan": "plan-1", "product": "notes",
                   "release": "2026.11.1", "sequence": sequence, "status": status, "continuity": "ok"}),
        )
    }

    /// A canary wave of two: agt-b applies, agt-a fails its verify, the
    /// integrity signal halts at once, the rollback goes to agt-b, which
    /// proves it; agt-c in the next wave never gets a plan.
    fn status() -> Value {
        json!({
            "rollout": "notes@8", "product": "notes", "version": "2026.11.1", "sequence": 8, "state": "rolled_back",
            "summary": "rolled back, verified: 1 endpoint(s) proved their rollback by digest",
            "waves": [
                {"name": "canary", "state": "rolled_back", "succeeded": 0, "failed": 1, "pending": 0, "rolled_back": 1},
                {"name": "all", "state": "pending", "succeeded": 0, "failed": 0, "pending": 1, "rolled_back": 0}
            ],
            "agents": [
                {"id": "agt-a", "wave": "canary", "outcome": "failed", "online": true, "plan_sent": true},
                {"id": "agt-b", "wave": "canary", "outcome": "rolled_back", "online": true, "plan_sent": true, "rollback": "proven"},
                {"id": "agt-c", "wave": "all", "outcome": "pending", "online": true, "plan_sent": false}
            ],
            "needs_human": []
        })
    }

    fn audit() -> Vec<AuditEvent> {
        let rb = format!("auto_rollback after halt: {HOSTILE}");
        vec![
            ev(1, "00.000", "bundle.upload", json!({"product": "notes", "release": "2026.11.1", "by": "alice"})),
            rollout("rollout.started", 2, "01.000", "pending", "running(canary)", "started by alice", "alice"),
            rollout("rollout.wave_started", 3, "01.000", "pending", "running(canary)", "started by alice", "alice"),
            ev(
                4,
                "01.005",
                "plan.sent",
                json!({"rollout": "notes@8", "agents": ["agt-a", "agt-b"], "waves": ["canary"]}),
            ),
            result(5, "01.800", "agt-b", "applied", 8),
            result(6, "02.000", "agt-a", "failed", 8),
            rollout("rollout.halted", 7, "02.010", "running(canary)", "halted", HOSTILE, "rewind-coordinator"),
            ev(8, "02.010", "rollout.notify", json!({"rollout": "notes@8", "event": "incident_started"})),
            rollout("rollout.rolling_back", 9, "02.010", "halted", "rolling_back", &rb, "rewind-coordinator"),
            ev(
                10,
                "02.014",
                "rollback.sent",
                json!({"rollout": "notes@8", "agents": ["agt-b"], "granularity": "release"}),
            ),
            ev(
                11,
                "02.050",
                "incident.incident_started",
                json!({"incident": "inc-1", "product": "notes", "version": "2026.11.1", "state": "investigating",
                       "title": "Investigating a problem with notes 2026.11.1",
                       "text": "Investigating a problem with notes 2026.11.1\n\nWe are investigating <b>it</b>.\n\nReason: x"}),
            ),
            ev(
                12,
                "02.100",
                "alarm",
                json!({"agent": "agt-a", "kind": "chain_gap", "detail": "entries 3..=4 missing"}),
            ),
            ev(13, "02.150", "alarm", json!({"agent": "agt-other", "kind": "chain_fork", "detail": "not ours"})),
            result(14, "02.384", "agt-b", "rolled_back", 8),
            rollout("rollout.rolled_back", 15, "02.390", "rolling_back", "rolled_back", &rb, "rewind-coordinator"),
            result(16, "03.000", "agt-c", "applied", 7),
            ev(17, "04.000", "alarm", json!({"agent": "agt-a", "kind": "chain_fork", "detail": "after the rollout"})),
            ev(18, "05.000", "rollout.started", json!({"rollout": "notes@9", "from": "pending", "to": "running(all)"})),
        ]
    }

    #[test]
    fn the_timeline_holds_the_rollouts_entries_in_order_with_offsets_from_the_start() {
        let r = build(&status(), &audit()).unwrap();
        let kinds: Vec<&str> = r.timeline.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "rollout.started",
                "rollout.wave_started",
                "plan.sent",
                "result",
                "result",
                "rollout.halted",
                "rollout.rolling_back",
                "rollback.sent",
                "incident.incident_started",
                "alarm",
                "result",
                "rollout.rolled_back"
            ]
        );
        let offsets: Vec<Option<i64>> = r.timeline.iter().map(|t| t.offset_ms).collect();
        assert_eq!(offsets[0], Some(0));
        assert_eq!(offsets[5], Some(1010));
        assert_eq!(offsets[11], Some(1390));
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
        assert_eq!(r.timeline[2].event, "apply plan sent to 2 agent(s) (wave canary)");
        assert_eq!(r.timeline[3].actor, "agt-b");
        assert_eq!(r.timeline[5].actor, "rewind-coordinator");
        assert_eq!(r.timeline[5].reason, HOSTILE);
        assert_eq!(r.timeline[0].actor, "alice");
        assert_eq!(
            (r.started.as_deref(), r.ended.as_deref()),
            (Some("2026-11-25T10:00:01.000Z"), Some("2026-11-25T10:00:02.390Z"))
        );
        assert_eq!(r.duration_ms, Some(1390));
        assert_eq!(r.reason.as_deref(), Some(HOSTILE), "a rolled-back status has no reason; the halt's is kept");
        // Only the alarm of an endpoint of the rollout, while it ran.
        assert_eq!(r.anomalies.alarms.len(), 1);
        assert_eq!(r.anomalies.alarms[0].kind, "chain_gap");
        let md = to_markdown(&r);
        let started = md.find("rollout started").unwrap();
        let halted = md.find("HALTED (running(canary) → halted)").unwrap();
        let done = md.find("rolled back: every endpoint").unwrap();
        assert!(started < halted && halted < done, "{md}");
        assert!(md.contains("| 2026-11-25T10:00:02.010Z | +1.010 s | `rollout.halted` HALTED"), "{md}");
    }

    #[test]
    fn the_wave_table_has_every_waves_counts_and_start() {
        let r = build(&status(), &audit()).unwrap();
        assert_eq!(r.waves.len(), 2);
        let c = &r.waves[0];
        assert_eq!(
            (c.name.as_str(), c.agents, c.succeeded, c.failed, c.pending, c.rolled_back),
            ("canary", 2, 0, 1, 0, 1)
        );
        assert_eq!(c.started_offset_ms, Some(0));
        let all = &r.waves[1];
        assert_eq!((all.agents, all.pending, all.started.as_deref()), (1, 1, None));
        let md = to_markdown(&r);
        assert!(
            md.contains("| canary | rolled\\_back | 2 | 0 | 1 | 0 | 1 | 2026-11-25T10:00:01.000Z (+0 ms) |"),
            "{md}"
        );
        assert!(md.contains("| all | pending | 1 | 0 | 0 | 1 | 0 | never |"), "{md}");
        let html = to_html(&r);
        assert!(html.contains("<tr><td>canary</td><td>rolled_back</td><td class=\"n\">2</td><td class=\"n\">0</td><td class=\"n\">1</td>"), "{html}");
        // Failed endpoints: agt-a, with its wave.
        assert_eq!(r.anomalies.agents.len(), 1);
        assert_eq!((r.anomalies.agents[0].agent.as_str(), r.anomalies.agents[0].outcome.as_str()), ("agt-a", "failed"));
    }

    #[test]
    fn time_to_rollback_runs_from_the_halt_to_the_rolled_back_entry_and_to_the_last_proof() {
        let r = build(&status(), &audit()).unwrap();
        assert_eq!(r.time_to_rollback_ms, Some(380));
        assert_eq!(r.time_to_last_rollback_result_ms, Some(374));
        assert_eq!(r.time_to_rollback_sent_ms, Some(4));
        let rb = r.rollback.as_ref().unwrap();
        assert_eq!((rb.from_kind.as_str(), rb.rollback_results), ("rollout.halted", 1));
        assert_eq!(rb.from, "2026-11-25T10:00:02.010Z");
        let md = to_markdown(&r);
        assert!(md.contains("- Time to rollback: **380 ms**"), "{md}");
        assert!(md.contains("Time to rollback: **380 ms** (380 ms)."), "{md}");
        assert!(md.contains("from the halt."), "{md}");
        assert!(md.contains("374 ms from the halt"), "{md}");

        // A manual rollback of a rollout that was aborted earlier is timed
        // from the rollback itself, not from the abort.
        let mut audit = audit();
        audit.retain(|e| e.seq < 7);
        audit.push(rollout("rollout.aborted", 7, "02.010", "running(canary)", "halted", "aborted by bob", "bob"));
        let why = "manual rollback (fleet) by bob: bad titles";
        audit.push(rollout("rollout.rolling_back", 8, "09.000", "halted", "rolling_back", why, "bob"));
        audit.push(result(9, "09.500", "agt-b", "rolled_back", 8));
        audit.push(rollout("rollout.rolled_back", 10, "09.600", "rolling_back", "rolled_back", why, "bob"));
        let r = build(&status(), &audit).unwrap();
        let rb = r.rollback.as_ref().unwrap();
        assert_eq!((rb.from_kind.as_str(), rb.actor.as_str()), ("rollout.rolling_back", "bob"));
        assert_eq!((r.time_to_rollback_ms, r.time_to_last_rollback_result_ms), (Some(600), Some(500)));
        assert_eq!(r.time_to_rollback_sent_ms, None);

        // No halt, no rollback: nothing to time.
        let mut audit = audit.clone();
        audit.retain(|e| e.seq < 7);
        let r = build(&status(), &audit).unwrap();
        assert!(r.rollback.is_none() && r.time_to_rollback_ms.is_none());
        assert!(to_markdown(&r).contains("- Time to rollback: **none**"));
    }

    #[test]
    fn hostile_values_are_escaped_in_html_and_markdown() {
        let r = build(&status(), &audit()).unwrap();
        let html = to_html(&r);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<b>it</b>") && html.contains("&lt;b&gt;it&lt;/b&gt;"), "{html}");
        assert!(!html.contains("href") && !html.contains("src=") && !html.contains("<link"), "{html}");
        assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"), "{html}");
        let md = to_markdown(&r);
        assert!(!md.contains("<script>") && md.contains("\\<script\\>alert(1)\\</script\\>"), "{md}");
        assert!(md.contains("\\| \\[x\\](https://evil)"), "a | cannot split a table cell, a link stays text: {md}");
    }

    #[test]
    fn the_html_charts_one_polyline_per_series_with_waves_and_the_halt_marked() {
        let r = build(&status(), &audit()).unwrap();
        assert_eq!(r.series.applied, [Point { offset_ms: 800, count: 1 }]);
        assert_eq!(r.series.failed, [Point { offset_ms: 1000, count: 1 }]);
        assert_eq!(r.series.rolled_back, [Point { offset_ms: 1384, count: 1 }]);
        assert_eq!(r.span_ms, 1390);
        let html = to_html(&r);
        assert_eq!(html.matches("<svg").count(), 1, "{html}");
        assert_eq!(html.matches("<polyline").count(), 3, "{html}");
        for class in ["applied", "failed", "rolled_back"] {
            assert_eq!(html.matches(&format!("<polyline class=\"{class}\"")).count(), 1, "{class}: {html}");
        }
        assert!(html.contains("<line class=\"mark halt\"") && html.contains(">halted</text>"), "{html}");
        assert!(html.contains("<line class=\"mark wave\"") && html.contains(">wave canary</text>"), "{html}");
        // The step line of applied: from 0 at +0, up to 1 at +800 ms, flat to the end.
        let x = |ms: f64| 48.0 + ms / 1390.0 * (760.0 - 48.0 - 16.0);
        assert!(html.contains(&format!("{:.1},244.0 {:.1},20.0 {:.1},20.0", x(800.0), x(800.0), x(1390.0))), "{html}");
    }

    #[test]
    fn needs_human_lists_each_endpoints_exact_commands() {
        let mut s = status();
        s["state"] = json!("halted");
        s["needs_human"] = json!([{"agent": "agt-b", "reason": "its rollback could not be proven by digest",
            "commands": ["rewind-agent --state <STATE_DIR> status --json",
                         "rewind-agent --state <STATE_DIR> rollback --bundle <notes-2026.11.1.bundle> --trust trust.toml --db <TARGET>=<FILE> --json"]}]);
        let r = build(&s, &audit()).unwrap();
        let md = to_markdown(&r);
        assert!(md.contains("```sh\nrewind-agent --state <STATE_DIR> status --json\nrewind-agent --state <STATE_DIR> rollback --bundle <notes-2026.11.1.bundle> --trust trust.toml --db <TARGET>=<FILE> --json\n```"), "{md}");
        let html = to_html(&r);
        assert!(html.contains("<pre>rewind-agent --state &lt;STATE_DIR&gt; status --json\n"), "{html}");
        assert_eq!(r.ended, None, "a halted rollout has not ended");
    }

    #[test]
    fn a_halt_without_rollback_names_the_command_that_takes_the_release_back() {
        let mut s = status();
        s["state"] = json!("halted");
        s["agents"][1]["outcome"] = json!("applied");
        let mut audit = audit();
        audit.retain(|e| e.seq <= 7);
        let r = build(&s, &audit).unwrap();
        assert_eq!(r.anomalies.open_rollback.as_deref(), Some("rewindctl rollback notes"));
        assert!(to_markdown(&r).contains("```sh\nrewindctl rollback notes\n```"));
        assert!(to_markdown(&r).contains("No rollback was started after the halt."));
    }

    #[test]
    fn many_results_are_listed_first_and_last_but_all_counted() {
        let mut audit = audit();
        audit.retain(|e| e.seq <= 4);
        for i in 0..25 {
            audit.push(result(100 + i, &format!("02.{i:03}"), &format!("agt-{i}"), "applied", 8));
        }
        let r = build(&status(), &audit).unwrap();
        let results: Vec<&TimelineRow> = r.timeline.iter().filter(|t| t.kind == "result").collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].event, "result: applied (first of 25)");
        assert_eq!(results[1].event, "result: applied (last of 25)");
        assert_eq!(r.timeline_omitted, 23);
        assert_eq!(total(&r.series.applied), 25);
        assert!(to_markdown(&r).contains("23 more result(s) are not listed one by one"));
    }

    #[test]
    fn audit_export_lines_rollout_ids_and_file_names() {
        let lines = vec![
            r#"{"record":"entry","chain":"k","seq":1,"time":"2026-11-25T10:00:00.000Z","kind":"alarm","params":"{\"agent\":\"a\"}"}"#.to_string(),
            r#"{"record":"checkpoint","chain":"k","seq":1,"head":"b3:00","time":"t","keyid":"k","signature":"s"}"#.to_string(),
        ];
        let events = parse_audit(&lines).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].params["agent"], "a");
        assert!(parse_audit(&["nope".to_string()]).unwrap_err().to_string().contains("line 1: not JSON"));

        assert_eq!(parse_rollout("notes@7").unwrap(), ("notes".to_string(), "notes@7".to_string()));
        assert_eq!(parse_rollout("notes").unwrap(), ("notes".to_string(), String::new()));
        for bad in ["notes@", "@7", "notes@x", ""] {
            let e = parse_rollout(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("expected PRODUCT@SEQUENCE"), "{e}");
        }
        assert_eq!(file_names("notes", 8), ("notes-8-report.md".to_string(), "notes-8-report.html".to_string()));
        assert_eq!(file_names("../x/y", 1).0, "_x_y-1-report.md");
        assert_eq!(human_ms(374), "374 ms");
        assert_eq!(human_ms(12_345), "12.345 s");
        assert_eq!(human_ms(185_000), "3 min 05 s");
        assert_eq!(human_ms(7_380_000), "2 h 03 min");
    }

    #[test]
    fn an_out_that_is_not_a_writable_directory_is_bad_input_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        for out in [dir.path().join("missing"), file] {
            let e = check_out(&out).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().starts_with(&format!("--out {}", out.display())), "{e}");
        }
        check_out(dir.path()).unwrap();
        let [md, html] = write_both(dir.path(), [("a.md", "# a\n"), ("a.html", "<p>a</p>\n")]).unwrap();
        assert_eq!(std::fs::read_to_string(md).unwrap(), "# a\n");
        assert_eq!(std::fs::read_to_string(html).unwrap(), "<p>a</p>\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "no temporary file is left behind: {left:?}");
    }
}
