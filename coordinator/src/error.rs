//! Errors of the coordinator, and the one mapping to gRPC status codes.

use std::path::PathBuf;

/// What went wrong, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate authority: {0}")]
    Ca(String),
    #[error("certificate signing request: {0}")]
    BadCsr(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("store: {0}")]
    Store(String),
    /// A rollout or delivery write by a replica that no longer holds the
    /// leader lease (docs/replicas.md): refused, nothing written.
    #[error("fenced: {0}")]
    Fenced(String),
    #[error(transparent)]
    Wire(#[from] rewind_shared::wire::WireError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        match e {
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::InvalidArgument(_) | Error::BadCsr(_) | Error::Wire(_) => Status::invalid_argument(e.to_string()),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Store(_) | Error::Fenced(_) => Status::unavailable(e.to_string()),
            Error::Config(_) | Error::Io { .. } | Error::Ca(_) => Status::internal(e.to_string()),
        }
    }
}
