//! rewindctl's errors, each carrying the exit code DESIGN.md §5 gives it:
//! 2 bad input or usage (nothing changed), 1 the operation failed (data back
//! in a verified safe state), 3 needs a human (with the exact next command).

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// Bad input or usage; nothing was changed.
    BadInput(String),
    /// The operation failed; everything is back in a verified safe state.
    Failed(String),
    /// The safe state could not be verified; a person must act.
    NeedsHuman { message: String, next: String },
}

impl Error {
    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadInput(_) => 2,
            Error::Failed(_) => 1,
            Error::NeedsHuman { .. } => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadInput(m) | Error::Failed(m) => f.write_str(m),
            Error::NeedsHuman { message, next } => write!(f, "{message}\nnext: {next}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rewind_agent::Error> for Error {
    fn from(e: rewind_agent::Error) -> Self {
        match e {
            rewind_agent::Error::Failed(m) => Error::Failed(m),
            rewind_agent::Error::NeedsHuman { message, next } => Error::NeedsHuman { message, next },
            other => Error::BadInput(other.to_string()),
        }
    }
}

impl From<rewind_shared::ReleaseError> for Error {
    fn from(e: rewind_shared::ReleaseError) -> Self {
        Error::BadInput(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
