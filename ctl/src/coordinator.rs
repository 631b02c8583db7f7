//! How rewindctl reaches the coordinator (DESIGN.md §8). Declared for every
//! command; the fleet commands (ctl/src/fleet.rs) use it.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Coordinator (fleet commands)")]
pub struct CoordinatorArgs {
    /// Coordinator Admin API URL (fleet commands only).
    #[arg(
        long,
        global = true,
        env = "REWIND_COORDINATOR",
        default_value = "https://127.0.0.1:7443",
        value_name = "URL"
    )]
    pub coordinator: String,
    /// CA certificate the coordinator's TLS certificate chains to (its <state>/ca.pem).
    #[arg(long, global = true, env = "REWIND_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// File holding the operator token (the coordinator's <state>/admin.token).
    #[arg(long, global = true, env = "REWIND_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl CoordinatorArgs {
    /// The operator token: `REWIND_TOKEN` itself, else the content of
    /// `--token-file`. Read from the environment rather than a flag so it
    /// stays out of shell history and process lists.
    ///
    /// # Errors
    /// When the token file cannot be read.
    pub fn token(&self) -> std::io::Result<Option<String>> {
        if let Some(t) = std::env::var_os("REWIND_TOKEN").filter(|t| !t.is_empty()) {
            return Ok(Some(t.to_string_lossy().trim().to_string()));
        }
        self.token_file.as_ref().map(|f| std::fs::read_to_string(f).map(|t| t.trim().to_string())).transpose()
    }
}
