//! Domain values of the fleet protocol: agent identity, labels and
//! selectors, and the inventory an agent reports in its hello. The wire
//! forms live in [`crate::wire`]; these types are what the coordinator and
//! the agent work with, always valid once constructed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// URI scheme + authority that carries an agent id in a certificate SAN.
pub const AGENT_URI_PREFIX: &str = "rewind://agent/";

/// An enrolled agent's id, e.g. `agt-0123456789abcdef`: 1-64 characters of
/// `[a-z0-9-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

/// A value that is not a valid [`AgentId`], label or selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FleetValueError(pub String);

impl AgentId {
    /// Parses and validates an agent id.
    ///
    /// # Errors
    /// When `s` is empty, longer than 64 or holds characters outside `[a-z0-9-]`.
    pub fn parse(s: &str) -> Result<Self, FleetValueError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(AgentId(s.to_string()))
        } else {
            Err(FleetValueError(format!("agent id {s:?}: expected 1-64 characters of [a-z0-9-]")))
        }
    }

    /// The URI SAN that names this agent in its client certificate.
    #[must_use]
    pub fn uri(&self) -> String {
        format!("{AGENT_URI_PREFIX}{}", self.0)
    }

    /// The agent id carried by a `rewind://agent/<id>` URI.
    ///
    /// # Errors
    /// When the URI has another prefix or an invalid id.
    pub fn from_uri(uri: &str) -> Result<Self, FleetValueError> {
        uri.strip_prefix(AGENT_URI_PREFIX)
            .ok_or_else(|| FleetValueError(format!("certificate URI {uri:?} is not {AGENT_URI_PREFIX}<id>")))
            .and_then(Self::parse)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AgentId {
    type Error = FleetValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> Self {
        id.0
    }
}

/// Agent labels used by rollout selectors (`ring=canary`).
pub type Labels = BTreeMap<String, String>;

fn valid_label_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// Checks one label.
///
/// # Errors
/// When the key or value is empty, longer than 63 or holds characters outside
/// `[A-Za-z0-9._/-]`.
pub fn check_label(key: &str, value: &str) -> Result<(), FleetValueError> {
    if valid_label_part(key) && valid_label_part(value) {
        Ok(())
    } else {
        Err(FleetValueError(format!("label {key}={value}: keys and values are 1-63 characters of [A-Za-z0-9._/-]")))
    }
}

/// Parses `k=v,k2=v2` (empty gives no labels).
///
/// # Errors
/// When a pair has no `=`, a key repeats, or a label is invalid.
pub fn parse_labels(s: &str) -> Result<Labels, FleetValueError> {
    let mut out = Labels::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) =
            pair.split_once('=').ok_or_else(|| FleetValueError(format!("label {pair:?}: expected KEY=VALUE")))?;
        let (k, v) = (k.trim(), v.trim());
        check_label(k, v)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(FleetValueError(format!("label {k} is given twice")));
        }
    }
    Ok(out)
}

/// A label selector `k=v,k2=v2`: an agent matches when it has every pair.
/// The empty selector matches every agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Labels);

impl Selector {
    /// Parses a selector.
    ///
    /// # Errors
    /// As [`parse_labels`].
    pub fn parse(s: &str) -> Result<Self, FleetValueError> {
        parse_labels(s).map(Selector)
    }

    #[must_use]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A product's installed release on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledProduct {
    pub name: String,
    pub sequence: u64,
    pub release: String,
    pub plan_id: String,
}

/// Digests of one configured target database, or why they are missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    pub product: String,
    pub name: String,
    pub digests: TargetDigest,
}

/// A target's schema and data digest, or the error that prevented reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetDigest {
    Ok { schema: Digest, data: Digest },
    Unreadable { error: String },
}

/// What an endpoint has: installed releases and its targets' digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub products: Vec<InstalledProduct>,
    pub targets: Vec<TargetState>,
}

/// Head of an agent's audit chain: `None` hash for an empty chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: Option<Digest>,
}

/// The first message of an agent's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub agent_id: AgentId,
    pub agent_version: String,
    pub hostname: String,
    pub inventory: Inventory,
    pub audit: AuditHead,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_round_trips_through_uri() {
        let id = AgentId::parse("agt-00ff").unwrap();
        assert_eq!(AgentId::from_uri(&id.uri()).unwrap(), id);
        assert!(AgentId::from_uri("https://agent/agt-00ff").is_err());
        assert!(AgentId::parse("Agt").is_err());
        assert!(AgentId::parse("").is_err());
        assert!(AgentId::parse("a/b").is_err());
    }

    #[test]
    fn labels_and_selectors() {
        let l = parse_labels("ring=canary, os=linux").unwrap();
        assert_eq!(l.len(), 2);
        assert!(Selector::parse("ring=canary").unwrap().matches(&l));
        assert!(Selector::parse("").unwrap().matches(&l));
        assert!(!Selector::parse("ring=broad").unwrap().matches(&l));
        assert!(parse_labels("ring").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
        assert!(parse_labels("a=b c").is_err());
    }
}
