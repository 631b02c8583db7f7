//! `agent.toml` (DESIGN.md §5): which coordinator(s) to reach and with which
//! CA, the trust root, the state directory, labels, and which file each
//! release target is on this endpoint. Unknown keys are errors. Relative
//! paths are relative to the file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// One `[[target]]`: a release target of a product, mapped to a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub product: String,
    pub name: String,
    pub path: PathBuf,
}

/// `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Coordinator URL(s), tried in order.
    #[serde(deserialize_with = "one_or_many")]
    pub coordinator: Vec<String>,
    /// The coordinator's CA certificate (PEM).
    pub ca: PathBuf,
    /// The plan-signing trust root.
    #[serde(default)]
    pub trust: Option<PathBuf>,
    /// State directory; `--state` overrides it, `REWIND_STATE` and the OS
    /// default apply when neither is given.
    #[serde(default)]
    pub state: Option<PathBuf>,
    /// Revert on a local trigger without waiting for the coordinator: during
    /// a release's bake, its `[[trigger]]`s are judged on this endpoint's
    /// metrics (docs/telemetry.md).
    #[serde(default)]
    pub local_revert: bool,
    /// Serve OFREP (flag evaluation) and `POST /metrics` on this loopback
    /// address, e.g. `127.0.0.1:8016`; not served when absent.
    #[serde(default)]
    pub ofrep_listen: Option<std::net::SocketAddr>,
    /// How often the daemon reads metrics and sends telemetry, in seconds
    /// (changes are sent at the next read; pushed metrics at once).
    #[serde(default = "default_telemetry_seconds")]
    pub telemetry_seconds: u64,
    /// Where apps write `<product>.json` metrics files; default
    /// `<state>/metrics`.
    #[serde(default)]
    pub metrics_dir: Option<PathBuf>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
}

/// The coordinator's default heartbeat: an idle agent wakes no more often.
fn default_telemetry_seconds() -> u64 {
    30
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl AgentConfig {
    /// Reads and checks `agent.toml`; relative paths are resolved against
    /// its directory.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the file and the problem (missing file,
    /// syntax, unknown key, no coordinator, bad label, duplicate target).
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::BadInput(format!("agent config {}: no such file", path.display())));
        }
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let mut cfg =
            Self::parse(&text).map_err(|e| Error::BadInput(format!("agent config {}: {e}", path.display())))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut cfg.ca);
        if let Some(t) = cfg.trust.as_mut() {
            abs(t);
        }
        if let Some(s) = cfg.state.as_mut() {
            abs(s);
        }
        if let Some(m) = cfg.metrics_dir.as_mut() {
            abs(m);
        }
        for t in &mut cfg.targets {
            abs(&mut t.path);
        }
        Ok(cfg)
    }

    /// Parses the TOML text of an `agent.toml` and checks it.
    ///
    /// # Errors
    /// A message naming the key or value at fault.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let cfg: AgentConfig = Figment::from(Toml::string(text)).extract().map_err(|e| e.to_string())?;
        if cfg.coordinator.is_empty() {
            return Err("coordinator: give at least one https:// URL".into());
        }
        if let Some(u) = cfg.coordinator.iter().find(|u| !u.starts_with("https://")) {
            return Err(format!("coordinator {u:?}: must start with https://"));
        }
        for (k, v) in &cfg.labels {
            rewind_shared::fleet::check_label(k, v).map_err(|e| format!("[labels] {e}"))?;
        }
        if let Some(a) = cfg.ofrep_listen
            && !a.ip().is_loopback()
        {
            return Err(format!(
                "ofrep_listen = \"{a}\": must be a loopback address (e.g. 127.0.0.1:8016); flags and metrics are for apps on this endpoint only"
            ));
        }
        if !(1..=3600).contains(&cfg.telemetry_seconds) {
            return Err(format!("telemetry_seconds = {}: give 1 to 3600", cfg.telemetry_seconds));
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &cfg.targets {
            if !seen.insert((t.product.as_str(), t.name.as_str())) {
                return Err(format!("[[target]] product {:?} name {:?} is given twice", t.product, t.name));
            }
        }
        Ok(cfg)
    }

    /// Where apps write metrics files.
    #[must_use]
    pub fn metrics_dir(&self, state: &Path) -> PathBuf {
        self.metrics_dir.clone().unwrap_or_else(|| state.join("metrics"))
    }

    /// The state directory: `--state`, else `state` here, else
    /// `REWIND_STATE`, else the OS default.
    #[must_use]
    pub fn state_dir(&self, flag: Option<PathBuf>) -> PathBuf {
        crate::state::default_dir(flag.or_else(|| self.state.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_may_be_a_string_or_a_list() {
        let one = AgentConfig::parse("coordinator = \"https://c:7443\"\nca = \"ca.pem\"").unwrap();
        assert_eq!(one.coordinator, ["https://c:7443"]);
        let two = AgentConfig::parse("coordinator = [\"https://a:1\", \"https://b:2\"]\nca = \"ca.pem\"").unwrap();
        assert_eq!(two.coordinator.len(), 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = AgentConfig::parse("coordinator = \"https://c\"\nca = \"ca.pem\"\nlabel = {}").unwrap_err();
        assert!(e.contains("label"), "{e}");
        let e = AgentConfig::parse("coordinator = \"http://c\"\nca = \"ca.pem\"").unwrap_err();
        assert!(e.contains("https://"), "{e}");
        let e = AgentConfig::parse("coordinator = \"https://c\"\nca = \"ca.pem\"\n[[target]]\nproduct = \"p\"\nname = \"n\"\npath = \"a\"\nfile = \"x\"").unwrap_err();
        assert!(e.contains("file"), "{e}");
        let e =
            AgentConfig::parse("coordinator = \"https://c\"\nca = \"ca.pem\"\n[labels]\nring = \"a b\"").unwrap_err();
        assert!(e.contains("ring"), "{e}");
        let e = AgentConfig::parse("coordinator = \"https://c\"\nca = \"ca.pem\"\nofrep_listen = \"0.0.0.0:8016\"")
            .unwrap_err();
        assert!(e.contains("ofrep_listen") && e.contains("loopback"), "{e}");
        let e = AgentConfig::parse("coordinator = \"https://c\"\nca = \"ca.pem\"\ntelemetry_seconds = 0").unwrap_err();
        assert!(e.contains("telemetry_seconds"), "{e}");
        let ok = AgentConfig::parse("coordinator = \"https://c\"\nca = \"ca.pem\"\nofrep_listen = \"127.0.0.1:8016\"")
            .unwrap();
        assert_eq!(ok.ofrep_listen.unwrap().port(), 8016);
        assert_eq!(ok.telemetry_seconds, 30);
    }
}

#[cfg(test)]
mod deploy_example {
    use super::*;

    #[test]
    fn deploy_agent_toml_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, include_str!("../../../deploy/agent.toml")).unwrap();
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(c.coordinator.len(), 2);
        assert_eq!(c.labels["ring"], "canary");
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.state_dir(None), PathBuf::from("/var/lib/rewind"));
        assert_eq!(c.ofrep_listen, Some("127.0.0.1:8016".parse().unwrap()));
        assert_eq!(c.metrics_dir(Path::new("/x")), PathBuf::from("/var/lib/rewind/metrics"));
    }
}
