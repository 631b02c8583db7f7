//! rewindctl command line: the clap tree. Each command group lives in its
//! own module (see lib.rs); adding a command is a variant here plus its
//! module. Exit codes (DESIGN.md §5): 0 done; 1 failed, data back in a
//! verified safe state; 2 bad input or usage, nothing changed; 3 needs a
//! human (the next command is printed).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rewindctl::coordinator::CoordinatorArgs;
use rewindctl::{Result, demo, release_cmd};

#[derive(Parser)]
#[command(
    name = "rewindctl",
    version,
    about = "Rewind operator CLI: check, rehearse and roll out releases that can be rolled back, provably",
    after_help = "Example: rewindctl release lint examples/notes-app/releases/2026.11.0\n\n\
Exit codes: 0 done, 1 failed (data back in a verified safe state), 2 bad input, 3 needs a human."
)]
struct Cli {
    #[command(flatten)]
    coordinator: CoordinatorArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Release directories: lint, rehearse.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Local walkthrough: rehearse, apply, a bad release that reverts itself, a proven rollback.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum ReleaseCmd {
    /// Validate a release directory and summarise it (errors exit 2; warnings do not fail).
    Lint(release_cmd::LintArgs),
    /// Apply and roll back a release on copies of sample databases, twice; never touches the samples.
    Rehearse(release_cmd::RehearseArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rewindctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let _ = &cli.coordinator;
    match cli.command {
        Command::Release(ReleaseCmd::Lint(a)) => release_cmd::lint(&a),
        Command::Release(ReleaseCmd::Rehearse(a)) => release_cmd::rehearse(&a),
        Command::Demo(a) => demo::run(&a),
    }
}
