//! The agent's errors, each carrying the exit code DESIGN.md §5 gives it:
//! 2 bad input (nothing changed), 1 failed but back in a verified safe state,
//! 3 needs a human (with the exact next command).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input or usage; nothing was changed.
    #[error("{0}")]
    BadInput(String),
    /// The operation failed; every target is back in a verified safe state.
    #[error("{0}")]
    Failed(String),
    /// The safe state could not be verified; a person must act.
    #[error("{message}\nnext: {next}")]
    NeedsHuman { message: String, next: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Release(#[from] rewind_shared::ReleaseError),
    #[error("{context}: {source}")]
    Sqlite { context: String, source: rusqlite::Error },
}

impl Error {
    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadInput(_) | Error::Release(_) => 2,
            Error::Failed(_) => 1,
            Error::NeedsHuman { .. } => 3,
            // Unexpected I/O or SQLite trouble outside a plan changed nothing
            // the engine knows of; inside a plan the engine converts it.
            Error::Io { .. } | Error::Sqlite { .. } => 2,
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to SQLite errors: `conn.execute(..).ctx("ledger insert")?`.
pub trait Context<T> {
    /// # Errors
    /// The original error with `context` attached.
    fn ctx(self, context: impl std::fmt::Display) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, context: impl std::fmt::Display) -> Result<T> {
        self.map_err(|source| Error::Sqlite { context: context.to_string(), source })
    }
}
