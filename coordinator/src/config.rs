//! The coordinator's one typed configuration tree: defaults, then
//! `coordinator.toml`, then `REWIND_*` environment variables, then command
//! line flags. Unknown keys are errors (with the key named), so a typo never
//! silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

/// Which store implementation holds agents, tokens and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// `coordinator.toml`, DESIGN.md §6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC over TLS (Fleet, Admin, health, reflection).
    pub listen: SocketAddr,
    /// Status page, dashboard and metrics.
    pub web_listen: SocketAddr,
    /// State directory: CA, admin token, SQLite store.
    pub state: PathBuf,
    /// The coordinator's copy of the plan-signing trust root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<PathBuf>,
    pub store: StoreKind,
    /// Connection URL for `store = "postgres"`; for SQLite, an optional
    /// database file (default `<state>/coordinator.db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    /// Names and addresses the coordinator's TLS certificate is valid for.
    #[serde(deserialize_with = "list_or_csv")]
    pub hostnames: Vec<String>,
    /// Bring your own CA: PEM certificate and key (both or neither). Default:
    /// a CA created in the state directory on first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
    /// Seconds between agent heartbeats (told to agents in the Welcome).
    pub heartbeat_seconds: u32,
    /// Replicas on PostgreSQL: how long the leader lease lasts (renewed
    /// every third of it; another replica takes over within about this
    /// long after the leader is lost).
    pub lease_seconds: u32,
    /// Replicas on PostgreSQL: the gRPC URL the other replicas reach this
    /// one at (Admin calls that change a rollout go to the leader).
    /// Default: `https://<first hostname>:<listen port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// `[[webhook]]` tables: where incident and rollout events are POSTed.
    #[serde(default, rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
}

/// Keys that `REWIND_<KEY>` may set; other `REWIND_*` variables (e.g.
/// `REWIND_LOG`) belong to other tools and are ignored here.
const ENV_KEYS: &[&str] = &[
    "listen",
    "web_listen",
    "state",
    "trust",
    "store",
    "store_url",
    "hostnames",
    "ca_cert",
    "ca_key",
    "heartbeat_seconds",
    "lease_seconds",
    "advertise",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7443".parse().expect("valid default"),
            web_listen: "127.0.0.1:7080".parse().expect("valid default"),
            state: default_state_dir(),
            trust: None,
            store: StoreKind::Sqlite,
            store_url: None,
            hostnames: vec!["localhost".into(), "127.0.0.1".into()],
            ca_cert: None,
            ca_key: None,
            heartbeat_seconds: 30,
            lease_seconds: 10,
            advertise: None,
            webhooks: Vec::new(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("rewind-coordinator");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/rewind-coordinator"),
        None => PathBuf::from(".rewind-coordinator"),
    }
}

fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
    })
}

/// A configuration that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Whether other replicas may share the store (PostgreSQL).
    #[must_use]
    pub fn is_replicated(&self) -> bool {
        self.store == StoreKind::Postgres
    }

    /// The leader lease, in milliseconds.
    #[must_use]
    pub fn lease_ms(&self) -> u64 {
        u64::from(self.lease_seconds.max(1)) * 1000
    }

    /// The URL other replicas reach this one at.
    #[must_use]
    pub fn advertised_url(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| {
            let host = self.hostnames.first().map_or("localhost", String::as_str);
            let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
            format!("https://{host}:{}", self.listen.port())
        })
    }

    /// Loads defaults < `file` < `REWIND_*` env < `state_flag`.
    ///
    /// # Errors
    /// When the file is missing or malformed, a key is unknown or a value has
    /// the wrong type; the message names the key and where it came from.
    pub fn load(file: Option<&Path>, state_flag: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.is_file() {
                return Err(ConfigError(format!("{}: no such file; pass an existing --config or none", f.display())));
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig.merge(Env::prefixed("REWIND_").only(ENV_KEYS));
        if let Some(s) = state_flag {
            fig = fig.merge(Serialized::default("state", s));
        }
        let cfg: Config = fig.extract().map_err(|e| ConfigError(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Parses a TOML text alone (no env), as the example configs are tested.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.ca_cert.is_some() != self.ca_key.is_some() {
            return Err(ConfigError("ca_cert and ca_key go together: give both (your own CA) or neither (a CA is created in the state directory)".into()));
        }
        if self.hostnames.is_empty() {
            return Err(ConfigError(
                "hostnames: give at least one name or address for the coordinator's certificate".into(),
            ));
        }
        if self.store == StoreKind::Postgres {
            let url = self.store_url.as_deref().ok_or_else(|| {
                ConfigError("store = \"postgres\" needs store_url (or REWIND_STORE_URL), e.g. postgres://USER:PASSWORD@HOST:5432/DBNAME".into())
            })?;
            crate::store::postgres::check_url(url).map_err(ConfigError)?;
        }
        if self.heartbeat_seconds == 0 {
            return Err(ConfigError("heartbeat_seconds: must be at least 1".into()));
        }
        if !(2..=300).contains(&self.lease_seconds) {
            return Err(ConfigError(format!(
                "lease_seconds = {}: must be between 2 and 300 (the leader renews every third of it)",
                self.lease_seconds
            )));
        }
        if let Some(a) = &self.advertise
            && !(a.starts_with("https://") && a.len() > "https://".len())
        {
            return Err(ConfigError(format!(
                "advertise = {a:?}: the https:// URL other replicas reach this one's gRPC at, e.g. https://coord-1.internal:7443"
            )));
        }
        crate::webhooks::check_config(&self.webhooks).map_err(ConfigError)?;
        Ok(())
    }

    /// The resolved configuration as TOML, for `--print-config`.
    #[must_use]
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml("listen = \"127.0.0.1:9000\"\nhostnames = [\"c.example\"]").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.hostnames, ["c.example"]);
        assert_eq!(c.store, StoreKind::Sqlite);
        let back = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_keys_and_half_a_ca_are_errors() {
        let e = Config::from_toml("lisen = \"127.0.0.1:9000\"").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = Config::from_toml("ca_cert = \"ca.pem\"").unwrap_err().to_string();
        assert!(e.contains("ca_key"), "{e}");
        assert!(Config::from_toml("store = \"mysql\"").is_err());
    }
}

#[cfg(test)]
mod deploy_example {
    use super::*;

    #[test]
    fn deploy_coordinator_toml_parses() {
        let text = include_str!("../../deploy/coordinator.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.store, StoreKind::Sqlite);
        assert!(c.trust.is_some());
        assert!(c.hostnames.contains(&"rewind.example.internal".to_string()));
    }
}
