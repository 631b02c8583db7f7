//! The coordinator's audit log: every operator action, enrollment, plan,
//! result and integrity alarm as an append-only, hash-chained entry (the
//! same chain format as the agents', `rewind_shared::audit`), signed with
//! the coordinator's Ed25519 key (`<state>/coordinator.key`, 0600; the
//! public half in `<state>/coordinator.pub`) — the last entry of every
//! appended batch, which covers the batch (`rewind_shared::audit::seal`) —
//! plus signed checkpoints of the head at start, shutdown and export.
//! `rewindctl audit export` gives the auditors' JSONL (docs/reports.md §5);
//! `rewindctl audit verify` re-checks it with
//! `rewind_shared::audit::verify_export`.

use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::App;
use crate::error::{Error, Result};
use crate::files::{read_text, write_private};

/// Response metadata naming the coordinator's audit key (hex), for a
/// verifier that has no `coordinator.pub` at hand.
pub const KEY_METADATA: &str = "x-rewind-audit-key";

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
    let bytes_for_pub = hex::decode(text.trim()).ok();
    if let Some(seed) = bytes_for_pub.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        // Auditors verify exports with this public key only.
        crate::files::write_public(
            &state.join("coordinator.pub"),
            &rewind_shared::trust::public_key_text(&SigningKey::from_bytes(&seed).verifying_key()),
        )?;
    }
    let bytes = hex::decode(text.trim()).map_err(|e| Error::Ca(format!("{}: not a hex key: {e}", path.display())))?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| Error::Ca(format!("{}: not a 32-byte key", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` as `<state>/coordinator.key` (0600) and its public half as
/// `coordinator.pub` (a replica taking the shared key).
///
/// # Errors
/// When the files cannot be written.
pub fn write_key(state: &Path, key: &SigningKey) -> Result<()> {
    write_private(&state.join("coordinator.key"), &format!("{}\n", hex::encode(key.to_bytes())))?;
    crate::files::write_public(
        &state.join("coordinator.pub"),
        &rewind_shared::trust::public_key_text(&key.verifying_key()),
    )
}

/// Signs and stores a checkpoint of the chain's current head (nothing for
/// an empty chain): written at start, at shutdown and before every export,
/// so a later rewrite or truncation disagrees with a published checkpoint.
///
/// # Errors
/// When the store fails.
pub async fn checkpoint(app: &App) -> Result<()> {
    let entries = app.store.audit_entries().await?;
    if let Some(c) = rewind_shared::audit::Checkpoint::of(&entries, crate::now(), &app.key) {
        app.store.put_checkpoint(c).await?;
    }
    Ok(())
}

/// The auditors' export (docs/reports.md §5): every entry, then every
/// checkpoint, one JSON object per line, verifiable with
/// `rewind_shared::audit::verify_export` and `<state>/coordinator.pub`.
///
/// # Errors
/// When the store fails.
pub async fn export(app: &App) -> Result<Vec<String>> {
    checkpoint(app).await?;
    let entries = app.store.audit_entries().await?;
    let checkpoints = app.store.checkpoints().await?;
    let mut out = Vec::new();
    rewind_shared::audit::write_export(&mut out, &app.key.verifying_key(), &entries, &checkpoints)
        .expect("writing to memory");
    Ok(String::from_utf8(out).expect("JSON is UTF-8").lines().map(String::from).collect())
}

/// Appends an entry and publishes it on [`App::events`]. A failure is
/// logged loudly: the action it records has already happened.
pub async fn record(app: &App, kind: &str, params: serde_json::Value) {
    record_many(app, vec![(kind.to_string(), params)]).await;
}

/// [`record`] for several entries, appended in order in one transaction.
pub async fn record_many(app: &App, entries: Vec<(String, serde_json::Value)>) {
    if entries.is_empty() {
        return;
    }
    let texts = entries.iter().map(|(k, p)| (k.clone(), p.to_string())).collect();
    if let Err(e) = app.store.append_audit_batch(texts, app.key.clone()).await {
        let kinds: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        tracing::error!(?kinds, "audit log append failed: {e}");
    }
    publish(app, entries);
}

/// Publishes entries already in the audit log (appended with what they
/// record, e.g. stored results) on [`App::events`].
pub fn publish(app: &App, entries: Vec<(String, serde_json::Value)>) {
    for (kind, params) in entries {
        app.events.publish(&kind, params);
    }
}
