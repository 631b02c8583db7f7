//! Feature-flag values on the endpoint: kept in `agent.db`, mirrored to
//! `flags.json` (written atomically) for the app to read:
//! `{"product": .., "sequence": .., "flags": {"name": value, ...}}`.
//!
//! Guarantees: `flags.json` is always a complete file (old or new); every
//! change is an audit entry with the old and new value.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use crate::crash;
use crate::error::{Context, Result};
use crate::fsutil;
use crate::state::{State, now};

pub type FlagValues = BTreeMap<String, Value>;

/// Current flag values of a product.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn current(state: &State, product: &str) -> Result<FlagValues> {
    let mut stmt =
        state.db.prepare("SELECT name, value FROM flags WHERE product = ?1 ORDER BY name").ctx("flags read")?;
    let rows = stmt
        .query_map([product], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .ctx("flags read")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("flags read")?;
    Ok(rows.into_iter().map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::Null))).collect())
}

/// Every product with flags, with their values.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn all(state: &State) -> Result<BTreeMap<String, FlagValues>> {
    let mut stmt = state.db.prepare("SELECT DISTINCT product FROM flags ORDER BY product").ctx("flags read")?;
    let products = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .ctx("flags read")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("flags read")?;
    products.into_iter().map(|p| Ok((p.clone(), current(state, &p)?))).collect()
}

/// Sets flags (a `Value::Null` removes one), audits each change and
/// rewrites `flags.json`. `crash_at` names the crash point between writing
/// the temporary file and renaming it.
///
/// # Errors
/// When `agent.db` or `flags.json` cannot be written.
pub fn set(state: &State, product: &str, values: &FlagValues, plan: Option<&str>, crash_at: &str) -> Result<()> {
    let before = current(state, product)?;
    let tx = state.db.unchecked_transaction().ctx("flags write")?;
    for (name, value) in values {
        if value.is_null() {
            tx.execute("DELETE FROM flags WHERE product = ?1 AND name = ?2", params![product, name])
                .ctx("flags write")?;
        } else {
            tx.execute(
                "INSERT INTO flags(product, name, value, updated) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(product, name) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                params![product, name, value.to_string(), now()],
            )
            .ctx("flags write")?;
        }
    }
    tx.commit().ctx("flags write")?;
    for (name, value) in values {
        let old = before.get(name).cloned().unwrap_or(Value::Null);
        if &old != value {
            state.audit(
                "flag.set",
                &serde_json::json!({"product": product, "flag": name, "from": old, "to": value, "plan": plan}),
            )?;
        }
    }
    write_file(state, product, crash_at)
}

/// Rewrites `flags.json` from `agent.db`.
///
/// # Errors
/// When the file cannot be written.
pub fn write_file(state: &State, product: &str, crash_at: &str) -> Result<()> {
    let sequence: Option<i64> = state
        .db
        .query_row("SELECT sequence FROM installed WHERE product = ?1", [product], |r| r.get(0))
        .optional()
        .ctx("installed read")?;
    let doc = serde_json::json!({
        "product": product,
        "sequence": sequence.unwrap_or(0),
        "flags": current(state, product)?,
    });
    let bytes = serde_json::to_vec_pretty(&doc).expect("flags serialize");
    fsutil::write_atomic_with(&state.root.join("flags.json"), &bytes, 0o644, || crash::point(crash_at))
}
