//! The agent's network identity in `<state>/identity/`: `key.pem` (0600, never
//! leaves the endpoint), `cert.pem` (issued by the coordinator's CA, the agent
//! id in a `rewind://agent/<id>` URI SAN), `ca.pem` and `agent.json`.

use std::path::{Path, PathBuf};

use rewind_shared::fleet::AgentId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An enrolled agent's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_id: AgentId,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

#[derive(Serialize, Deserialize)]
struct AgentFile {
    agent_id: AgentId,
    enrolled: String,
    coordinator: String,
}

/// `<state>/identity`.
#[must_use]
pub fn dir(state: &Path) -> PathBuf {
    state.join("identity")
}

impl Identity {
    /// Whether `state` holds an identity.
    #[must_use]
    pub fn exists(state: &Path) -> bool {
        dir(state).join("agent.json").exists()
    }

    /// Loads the identity written by `enroll`.
    ///
    /// # Errors
    /// [`Error::BadInput`] when the agent was not enrolled with this state
    /// directory (with the command to run), or the files are unreadable.
    pub fn load(state: &Path) -> Result<Self> {
        let d = dir(state);
        if !Self::exists(state) {
            return Err(Error::BadInput(format!(
                "state {}: this agent is not enrolled; run rewind-agent enroll --config agent.toml --token TOKEN first",
                state.display()
            )));
        }
        let read = |name: &str| std::fs::read_to_string(d.join(name)).map_err(Error::io(d.join(name)));
        let meta: AgentFile = serde_json::from_str(&read("agent.json")?)
            .map_err(|e| Error::BadInput(format!("{}: {e}", d.join("agent.json").display())))?;
        Ok(Identity {
            agent_id: meta.agent_id,
            key_pem: read("key.pem")?,
            cert_pem: read("cert.pem")?,
            ca_pem: read("ca.pem")?,
        })
    }

    /// Writes the identity (key 0600), `agent.json` last so that a crash
    /// leaves no half identity that `load` would accept.
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn save(&self, state: &Path, coordinator: &str) -> Result<()> {
        let d = dir(state);
        std::fs::create_dir_all(&d).map_err(Error::io(&d))?;
        write(&d.join("key.pem"), &self.key_pem, 0o600)?;
        write(&d.join("cert.pem"), &self.cert_pem, 0o644)?;
        write(&d.join("ca.pem"), &self.ca_pem, 0o644)?;
        let meta = AgentFile {
            agent_id: self.agent_id.clone(),
            enrolled: crate::state::now(),
            coordinator: coordinator.to_string(),
        };
        write(&d.join("agent.json"), &serde_json::to_string_pretty(&meta).expect("JSON"), 0o644)
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(Error::io(&tmp))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}
