//! Operator authentication for the Admin API: `authorization: Bearer
//! <token>` metadata, the token looked up by hash in the store, and a role
//! check per call. Roles are ordered: a higher role may do everything a
//! lower one may.

use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};
use crate::store::{Store, token_hash};

/// What an operator token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read agents, rollouts, fleet verification, audit.
    Viewer,
    /// Also create tokens, upload bundles, start rollouts and rollbacks.
    Operator,
    /// Also approve waves.
    Approver,
    /// Everything, including operator tokens.
    Admin,
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Role::Viewer, Role::Operator, Role::Approver, Role::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

/// Checks the bearer token in `metadata` and that its role is at least
/// `needed`; returns the operator's name.
///
/// # Errors
/// [`Error::Unauthenticated`] without a token or with an unknown one;
/// [`Error::PermissionDenied`] when the role is too low.
pub async fn authorize(store: &dyn Store, metadata: &MetadataMap, needed: Role, call: &str) -> Result<String> {
    let header = metadata
        .get("authorization")
        .ok_or_else(|| Error::Unauthenticated(format!("{call}: no operator token; pass --token-file FILE or set REWIND_TOKEN (the coordinator writes <state>/admin.token)")))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
        Error::Unauthenticated(format!("{call}: authorization metadata must be \"Bearer <token>\""))
    })?;
    let (name, role) = store
        .operator(token_hash(token))
        .await?
        .ok_or_else(|| Error::Unauthenticated(format!("{call}: unknown operator token")))?;
    if role < needed {
        return Err(Error::PermissionDenied(format!(
            "{call}: operator {name} has role {}, needs {}",
            role.as_str(),
            needed.as_str()
        )));
    }
    Ok(name)
}
