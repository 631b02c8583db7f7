//! The coordinator's audit log: every operator action, enrollment, plan,
//! result and integrity alarm as an append-only, hash-chained entry (the
//! same chain format as the agents', `rewind_shared::audit`), each entry
//! signed with the coordinator's Ed25519 key (`<state>/coordinator.key`,
//! 0600), so every entry is its own signed checkpoint. `rewindctl audit
//! export` streams it as JSON lines; `rewindctl audit verify` re-checks the
//! chain and signatures with the key in the export's header.

use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::App;
use crate::error::{Error, Result};
use crate::files::{read_text, write_private};

/// Format name in the export's first line.
pub const EXPORT_FORMAT: &str = "rewind-coordinator-audit-1";

/// Loads `<state>/coordinator.key`, creating it on first start.
///
/// # Errors
/// When the file cannot be read or written or does not hold a key.
pub fn load_or_create_key(state: &Path) -> Result<SigningKey> {
    let path = state.join("coordinator.key");
    if !path.exists() {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the OS random source works");
        write_private(&path, &format!("{}\n", hex::encode(seed)))?;
    }
    let text = read_text(&path)?;
    let bytes = hex::decode(text.trim()).map_err(|e| Error::Ca(format!("{}: not a hex key: {e}", path.display())))?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| Error::Ca(format!("{}: not a 32-byte key", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Appends an entry. A failure is logged loudly: the action it records has
/// already happened.
pub async fn record(app: &App, kind: &str, params: serde_json::Value) {
    if let Err(e) = app.store.append_audit(kind.to_string(), params.to_string(), app.key.clone()).await {
        tracing::error!(kind, "audit log append failed: {e}");
    }
}
