//! `rewindctl lineage AGENT TARGET [--json]` (DESIGN.md §8, §10): each
//! release and migration applied or reversed on one endpoint's target, with
//! digests before and after, from the agent's verified results.

use clap::Args;
use rewind_shared::wire::v1;
use serde_json::Value;

use crate::coordinator::CoordinatorArgs;
use crate::fleet::{admin, runtime, status};
use crate::{Error, Result};

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl lineage agt-1a2b3c4d5e6f7a8b notes\n\n\
Digests are shortened in the table; --json has them whole. A step whose starting schema is not the one the \
previous step left is marked: the schema changed on the endpoint outside Rewind in between.")]
pub struct LineageArgs {
    /// The agent id (`rewindctl agents` lists them).
    pub agent: String,
    /// The target name from release.toml (e.g. notes).
    pub target: String,
    #[arg(long)]
    pub json: bool,
}

/// Runs `rewindctl lineage`.
///
/// # Errors
/// An unknown agent or target (exit 2, the message names the known ones),
/// an unreachable coordinator.
pub fn run(c: &CoordinatorArgs, a: &LineageArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .lineage(v1::LineageRequest { agent_id: a.agent.clone(), target: a.target.clone() })
            .await
            .map_err(|s| status("lineage", &s))?
            .into_inner();
        let steps: Vec<Value> = serde_json::from_str(&r.json)
            .map_err(|e| Error::Failed(format!("lineage: bad JSON from the coordinator: {e}")))?;
        if a.json {
            crate::output::print_json(&steps);
        } else {
            crate::output::print(&table(&a.agent, &a.target, &steps));
        }
        Ok(0)
    })
}

/// `b3:1a2b3c4d5e6f` of a digest, `-` for none.
fn short(v: &Value) -> String {
    v.as_str().map_or_else(|| "-".to_string(), |d| d.chars().take(15).collect())
}

/// The lineage for people: one line per step, its migrations below it.
#[must_use]
pub fn table(agent: &str, target: &str, steps: &[Value]) -> String {
    let mut out = format!("target {target} on {agent}, oldest first\n");
    if steps.is_empty() {
        out.push_str("  no release has touched it yet\n");
        return out;
    }
    out.push_str(&format!(
        "{:<20} {:<12} {:>4}  {:<28} {:<12} {:<35} {:<35} {}\n",
        "TIME", "RELEASE", "SEQ", "STEP", "STATUS", "SCHEMA BEFORE -> AFTER", "DATA BEFORE -> AFTER", "PROOF"
    ));
    for s in steps {
        let kind = s["kind"].as_str().unwrap_or("refused");
        let step = match s["granularity"].as_str() {
            Some("release") | None => format!("{kind} release"),
            Some(part) => format!("{kind} {part}"),
        };
        let time: String = s["time"].as_str().unwrap_or("").chars().take(19).collect();
        out.push_str(&format!(
            "{:<20} {:<12} {:>4}  {:<28} {:<12} {:<35} {:<35} {}\n",
            time,
            s["release"].as_str().unwrap_or(""),
            s["sequence"].as_u64().unwrap_or(0),
            step,
            s["status"].as_str().unwrap_or(""),
            format!("{} -> {}", short(&s["schema_before"]), short(&s["schema_after"])),
            format!("{} -> {}", short(&s["data_before"]), short(&s["data_after"])),
            s["proof"].as_str().unwrap_or("-"),
        ));
        let migrations: Vec<&str> =
            s["migrations"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if !migrations.is_empty() {
            out.push_str(&format!("{:<20} migrations: {}\n", "", migrations.join(", ")));
        }
        if s["schema_changed_outside"] == true {
            out.push_str(&format!(
                "{:<20} NOTE: the schema changed outside Rewind before this step (it is not the one the previous step left)\n",
                ""
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn lineage_table() {
        let d = |c: char| format!("b3:{}", c.to_string().repeat(64));
        let steps = [
            json!({"time": "2026-12-02T01:47:52.906Z", "release": "2026.11.0", "sequence": 7, "kind": "apply",
                   "granularity": "release", "status": "applied", "migrations": ["0003_settings_theme"],
                   "schema_before": d('a'), "schema_after": d('a'), "data_before": d('1'), "data_after": d('2'),
                   "proof": null, "schema_changed_outside": false}),
            json!({"time": "2026-12-02T01:47:54.923Z", "release": "2026.11.0", "sequence": 7, "kind": "rollback",
                   "granularity": "target settings", "status": "rolled_back", "migrations": ["0003_settings_theme"],
                   "schema_before": null, "schema_after": d('a'), "data_before": d('2'), "data_after": d('1'),
                   "proof": "identical", "schema_changed_outside": false}),
            json!({"time": "2026-12-03T09:00:00.000Z", "release": "2026.12.0", "sequence": 8, "kind": "apply",
                   "granularity": "release", "status": "failed", "migrations": [],
                   "schema_before": d('b'), "schema_after": d('b'), "data_before": d('3'), "data_after": d('3'),
                   "proof": null, "schema_changed_outside": true}),
        ];
        insta::assert_snapshot!(super::table("agt-8a89492acd5e2ca6", "settings", &steps));
    }
}
