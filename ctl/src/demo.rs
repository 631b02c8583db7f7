//! `rewindctl demo`: README's first command. By default the fleet demo
//! (demo_fleet.rs): an embedded coordinator, real agent processes, a release
//! whose canary fails and is rolled back automatically, then a good release
//! to the whole fleet, with the status page live. `--local` runs the older
//! walkthrough of the engine alone (demo_local.rs). Both check every step
//! against what it must do and exit 1 when one misbehaves.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use rewind_shared::digest::database_digest;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::examples;

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl demo\n         rewindctl demo --exit --dir /tmp/rewind-demo --agents 8\n\n\
The fleet demo: in DIR it makes three plan-signing keys and a 2-of-3 trust root, starts a coordinator \
inside this process (its own state dir, free local ports), creates sample notes-app databases for N \
endpoints and runs one `rewind-agent run` process per endpoint (enrolled with tokens, mTLS). Then it \
rolls out release 2026.11.1, whose verify fails on the canaries: the coordinator halts and rolls the \
canaries back, proven by digest, and the rest of the fleet never gets the plan. Then it rolls out \
2026.11.0 through every wave (approving approval waves as the demo operator) and checks the fleet with \
`fleet verify` and the audit chain. The status page URL is printed; without --exit everything keeps \
running until Ctrl-C. rewind-agent must sit next to rewindctl (scripts/demo.sh builds both).\n\n\
Exit codes: 0 every step behaved as expected, 1 a step did not, 2 bad input (e.g. DIR not empty).")]
pub struct DemoArgs {
    /// End when the story is done (stop agents and coordinator) instead of keeping the status page up until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Working directory for keys, coordinator state, endpoints and logs (default: a new temporary
    /// directory, kept afterwards). Must be empty, new, or a previous demo's directory (which is reset).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Number of endpoints (agent processes): 2 canaries, the rest split between ring=early and ring=main.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(3..=50))]
    pub agents: u32,
    /// Print one JSON object: {"ok", "dir", "steps": [{"step", "ok", "result", "seconds", "figures"}]} instead of the narrative.
    #[arg(long)]
    pub json: bool,
    /// The older local walkthrough: the agent engine in this process on one set of sample databases, no coordinator.
    #[arg(long)]
    pub local: bool,
}

/// Marks a directory as the demo's, so a rerun may reset it.
pub(crate) const MARKER: &str = ".rewind-demo";

/// The narrative and the JSON record of a demo run.
pub(crate) struct Walk {
    pub json: bool,
    pub steps: Vec<Value>,
    pub ok: bool,
    pub n: usize,
    pub start: Instant,
}

impl Walk {
    pub fn new(json: bool) -> Self {
        Walk { json, steps: Vec::new(), ok: true, n: 0, start: Instant::now() }
    }

    /// Seconds since the demo started.
    pub fn elapsed(&self) -> f64 {
        (self.start.elapsed().as_secs_f64() * 10.0).round() / 10.0
    }

    pub fn heading(&mut self, title: &str) {
        self.n += 1;
        if !self.json {
            crate::outln!("\n== {}. {title}  [{:.1} s]", self.n, self.elapsed());
        }
    }

    pub fn say(&self, text: &str) {
        if !self.json {
            for l in text.lines() {
                crate::outln!("   {l}");
            }
        }
    }

    /// Records the step's outcome; `expected` says whether it did what it must.
    pub fn outcome(&mut self, step: &str, expected: bool, what: &str, figures: Value) {
        self.ok &= expected;
        self.say(&format!("{} {what}", if expected { "✓" } else { "✗ UNEXPECTED:" }));
        self.steps
            .push(json!({"step": step, "ok": expected, "result": what, "seconds": self.elapsed(), "figures": figures}));
    }
}

/// Makes `arg` (or a new temporary directory) the demo's directory: it must
/// be empty, new, or a previous demo's, whose `owned` entries are removed.
pub(crate) fn prepare_dir(arg: Option<&Path>, owned: &[&str]) -> Result<PathBuf> {
    let Some(dir) = arg else {
        let t = tempfile::Builder::new()
            .prefix("rewind-demo-")
            .tempdir()
            .map_err(|e| Error::BadInput(format!("cannot create a temporary directory: {e}; give --dir DIR")))?;
        return Ok(t.keep());
    };
    let bad = |e: std::io::Error| Error::BadInput(format!("--dir {}: {e}; give a writable directory", dir.display()));
    std::fs::create_dir_all(dir).map_err(bad)?;
    let entries: Vec<String> = std::fs::read_dir(dir)
        .map_err(bad)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !entries.is_empty() && !entries.iter().any(|e| e == MARKER) {
        return Err(Error::BadInput(format!(
            "--dir {}: not empty and not a previous demo's directory; give an empty or new directory",
            dir.display()
        )));
    }
    for name in owned {
        let p = dir.join(name);
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(bad(e));
        }
    }
    Ok(dir.to_path_buf())
}

/// Creates `dir/<target>.db` from the embedded `seed-<target>.sql`.
pub(crate) fn seed(dir: &Path, target: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{target}.db"));
    let sql = examples::file(&format!("seed-{target}.sql"))
        .ok_or_else(|| Error::BadInput(format!("this build embeds no seed-{target}.sql; rebuild rewindctl")))?;
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch(sql))
        .map_err(|e| Error::BadInput(format!("{}: cannot create the sample database: {e}", path.display())))?;
    Ok(path)
}

/// The content digest (`b3:...`) of a database file.
pub(crate) fn digest_of(path: &Path) -> Result<String> {
    let c = rusqlite::Connection::open(path).map_err(|e| Error::from(rewind_agent::target::classify(path, e)))?;
    Ok(database_digest(&c).map_err(|e| Error::from(rewind_agent::target::classify(path, e)))?.digest.to_string())
}

pub(crate) fn short(d: &str) -> String {
    d.chars().take(19).collect::<String>() + "…"
}

/// Runs the demo; returns the exit code.
///
/// # Errors
/// [`Error::BadInput`] when DIR cannot be used or a binary is missing; a
/// step that misbehaves is reported in the output and gives exit code 1.
pub fn run(args: &DemoArgs) -> Result<u8> {
    if args.local { crate::demo_local::run(args) } else { crate::demo_fleet::run(args) }
}
