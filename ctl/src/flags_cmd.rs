//! `rewindctl flags list [PRODUCT]` and `rewindctl flags set PRODUCT NAME
//! on|off` (DESIGN.md §8): the flags of each product's current release,
//! turning a flag on by hand and the fleet-wide kill switch
//! (docs/rollouts.md "Flags by hand").

use clap::{Args, Subcommand};
use rewind_shared::wire::v1;
use serde_json::Value;

use crate::coordinator::CoordinatorArgs;
use crate::fleet::{admin, runtime, status};
use crate::rollout_cmd::{print_sent, refused};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum FlagsCmd {
    /// Every flag of each product's current release: value, previous, owner, expiry, kill switch, how many endpoints had it turned on or off by hand.
    List(ListArgs),
    /// Turn a flag on (e.g. an `activate = "manual"` one) or a kill switch off on every endpoint in scope that applied the release, without a new release or a rollback.
    Set(SetArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl flags list notes\n\n\
A flag past its `expires` date is marked STALE: remove it from the next release.")]
pub struct ListArgs {
    /// Only this product.
    pub product: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  rewindctl flags set notes beta_export on --scope wave:canary\n  \
rewindctl flags set notes new_checkout off --reason \"checkout errors\"\n\n\
`on` runs the bundle's pre-signed activation plan (the flag's value; any flag, the way an activate = \"manual\" flag \
is turned on); `off` runs its pre-signed rollback plan (the flag's previous value; kill switches only). \
The latest `flags set` of a flag wins on every endpoint in its scope. \
Any other change of a flag is a forward change: release it.")]
pub struct SetArgs {
    pub product: String,
    /// The flag's name.
    pub name: String,
    /// `on` or `off`.
    pub value: String,
    /// fleet | wave:NAME | cohort:SELECTOR | agent:ID[,ID...]
    #[arg(long, default_value = "fleet")]
    pub scope: String,
    /// Why (recorded in the coordinator's audit log).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

/// Runs `rewindctl flags ...`.
///
/// # Errors
/// A refusal by the coordinator (exit 2: unknown flag, `off` for a flag that
/// is not a kill switch, a value other than `on` or `off`, the same already
/// sent in scope) or an unreachable one.
pub fn run(c: &CoordinatorArgs, cmd: &FlagsCmd) -> Result<u8> {
    match cmd {
        FlagsCmd::List(a) => list(c, a),
        FlagsCmd::Set(a) => set(c, a),
    }
}

fn list(c: &CoordinatorArgs, a: &ListArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .list_flags(v1::ListFlagsRequest { product: a.product.clone().unwrap_or_default() })
            .await
            .map_err(|s| status("flags list", &s))?
            .into_inner();
        let rows: Vec<Value> = serde_json::from_str(&r.json)
            .map_err(|e| Error::Failed(format!("flags list: bad JSON from the coordinator: {e}")))?;
        if a.json {
            crate::output::print_json(&rows);
        } else {
            print!("{}", table(&rows));
        }
        Ok(0)
    })
}

/// The flags as a table for people.
#[must_use]
pub fn table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "no flags: no current release of any product sets one\n".to_string();
    }
    let mut out = format!(
        "{:<10} {:<12} {:<18} {:<8} {:<9} {:<16} {:<16} {:<16} {:<11} {}\n",
        "PRODUCT", "RELEASE", "FLAG", "VALUE", "PREVIOUS", "OWNER", "ACTIVATE", "EXPIRES", "KILL SWITCH", "SET BY HAND"
    );
    for f in rows {
        let s = |k: &str| f[k].as_str().map_or_else(|| f[k].to_string(), str::to_string);
        let expires = match f["expires"].as_str() {
            Some(e) if f["stale"] == true => format!("{e} STALE"),
            Some(e) => e.to_string(),
            None => "-".to_string(),
        };
        let mut off = format!("{} on, {} off of {}", f["turned_on"], f["turned_off"], f["applied"]);
        for (k, word) in [("pending", "pending"), ("failed", "failed")] {
            if f[k].as_u64().unwrap_or(0) > 0 {
                off.push_str(&format!(", {} {word}", f[k]));
            }
        }
        out.push_str(&format!(
            "{:<10} {:<12} {:<18} {:<8} {:<9} {:<16} {:<16} {:<16} {:<11} {}\n",
            s("product"),
            s("release"),
            s("name"),
            f["value"].to_string(),
            f["previous"].to_string(),
            s("owner"),
            s("activate"),
            expires,
            if f["kill_switch"] == true { "yes" } else { "no" },
            off
        ));
    }
    out
}

fn set(c: &CoordinatorArgs, a: &SetArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let mut client = admin(c).await?;
        let r = client
            .set_flag(v1::SetFlagRequest {
                product: a.product.clone(),
                name: a.name.clone(),
                value: a.value.clone(),
                scope: a.scope.clone(),
                reason: a.reason.clone(),
            })
            .await
            .map_err(|s| refused("flags set", &s))?
            .into_inner();
        let what = if a.value == "on" { "activation" } else { "rollback (kill switch off)" };
        print_sent(&format!("{what} of flag {} of {}", a.name, a.product), &a.product, a.json, &r)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn flags_table() {
        let rows = [
            json!({"product": "notes", "release": "2026.11.0", "name": "new_checkout", "value": true, "previous": false,
                   "owner": "payments-team", "activate": "after-migrations", "expires": "2027-01-31", "stale": false,
                   "kill_switch": true, "applied": 20, "turned_on": 0, "turned_off": 18, "pending": 1, "failed": 1}),
            json!({"product": "notes", "release": "2026.11.0", "name": "dark_mode", "value": "auto", "previous": "off",
                   "owner": "design", "activate": "manual", "expires": "2026-01-01", "stale": true,
                   "kill_switch": false, "applied": 20, "turned_on": 12, "turned_off": 0, "pending": 8, "failed": 0}),
        ];
        insta::assert_snapshot!(super::table(&rows));
        insta::assert_snapshot!("flags_table_empty", super::table(&[]));
    }
}
