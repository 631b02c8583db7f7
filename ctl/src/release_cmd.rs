//! `rewindctl release lint` and `release rehearse`: the local checks of a
//! release directory before it is built into a bundle.

use std::path::PathBuf;

use clap::Args;
use rewind_shared::Release;

use crate::error::{Error, Result};
use crate::{lint, output, rehearsal};

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl release lint examples/notes-app/releases/2026.11.0\n\n\
Exit codes: 0 valid (warnings allowed), 2 errors (each names file:line and the fix).")]
pub struct LintArgs {
    /// Release directory (holds release.toml and migrations/).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Judge flag expiry as of this date (YYYY-MM-DD) instead of today (UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub today: Option<String>,
    /// Print one JSON object: {"ok", "errors", "warnings", "release", "targets", "migrations", ...}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl release rehearse examples/notes-app/releases/2026.11.0 \
--db notes=./notes.db --db settings=./settings.db\n\n\
Runs apply (snapshot, up, verify, checks), apply again (must change nothing) and rollback \
(down, proof) through the agent engine on copies of the samples, twice. The given files are \
only read, never opened by SQLite or written.\n\
\"reversible: yes\" means the step is undone in place by down.sql, keeping later writes; a step \
declared reversible = false whose data is kept by `preserve` says \"yes (down.sql + preserved ..., \
until finalized)\"; a rollback = \"restore\" step says \"no\" (snapshot restore drops later writes).\n\n\
Exit codes: 0 the release passed, 1 it failed on the samples (the failing step is named), 2 bad input.")]
pub struct RehearseArgs {
    /// Release directory (holds release.toml and migrations/).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// TARGET=FILE: a sample database for a release target (repeat per target).
    #[arg(long = "db", value_name = "TARGET=FILE", required = true)]
    pub dbs: Vec<String>,
    /// Print one JSON object: {"ok", "rounds", "idempotent", "predicted": {target: {schema, digest}}, "failure", ...}.
    #[arg(long)]
    pub json: bool,
}

fn check_date(s: &str) -> Result<()> {
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if ok { Ok(()) } else { Err(Error::BadInput(format!("--today {s}: expected a date like 2027-01-31"))) }
}

/// Runs `release lint`; returns the exit code.
///
/// # Errors
/// [`Error::BadInput`] for a malformed `--today`.
pub fn lint(args: &LintArgs) -> Result<u8> {
    let today = match &args.today {
        Some(t) => {
            check_date(t)?;
            t.clone()
        }
        None => rewind_agent::state::today(),
    };
    let l = lint::lint(&args.dir, &today);
    if args.json {
        output::print_json(&lint::to_json(&l));
    } else if l.ok() {
        output::print(&lint::to_text(&l));
    } else {
        eprint!("{}", lint::to_text(&l));
    }
    Ok(l.exit_code())
}

/// Loads a release and maps `--db TARGET=FILE` onto its targets.
///
/// # Errors
/// [`Error::BadInput`] naming the problem.
pub fn load(dir: &std::path::Path, dbs: &[String]) -> Result<(Release, std::collections::BTreeMap<String, PathBuf>)> {
    let release = Release::load(dir)?;
    let map = rewind_shared::release::map_targets(&release, dbs).map_err(Error::BadInput)?;
    Ok((release, map))
}

/// Runs `release rehearse`; returns the exit code.
///
/// # Errors
/// [`Error::BadInput`] for an invalid release or unusable samples.
pub fn rehearse(args: &RehearseArgs) -> Result<u8> {
    let (release, samples) = load(&args.dir, &args.dbs)?;
    let r = rehearsal::rehearse(&release, &samples)?;
    if args.json {
        output::print_json(&r);
    } else {
        output::print(&rehearsal::to_text(&r));
    }
    Ok(r.exit_code())
}
