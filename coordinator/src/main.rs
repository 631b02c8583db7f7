//! `rewind-coordinator [--config FILE] [--state DIR] [--print-config]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rewind_coordinator::config::Config;

/// Rewind coordinator: enrolls agents, keeps their mTLS streams, serves the Admin API.
///
/// Example: rewind-coordinator --config /etc/rewind/coordinator.toml
#[derive(Parser)]
#[command(name = "rewind-coordinator", version)]
struct Cli {
    /// coordinator.toml; REWIND_* environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory (CA, admin token, store); overrides `state`.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("REWIND_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let config = match Config::load(cli.config.as_deref(), cli.state.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rewind-coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        eprintln!("rewind-coordinator: a TLS crypto provider was already installed");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rewind-coordinator: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(rewind_coordinator::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rewind-coordinator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
