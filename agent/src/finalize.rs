//! Finalizing a release: the operator's (or the coordinator's) statement that
//! an installed release is good and will not be rolled back by `down.sql`
//! again — Mender's `commit`. DESIGN §2 keeps `preserve` copies and §5 keeps
//! a release's snapshots pinned "until the release is finalized"; this is
//! that moment.
//!
//! Guarantees: finalizing drops the `_rewind_preserve_<id>_<table>` side
//! tables of the installed release's migrations (one transaction per target)
//! and unpins its snapshots, so `prune` may delete them; each part is
//! idempotent, so a finalize interrupted by a crash is completed by running it
//! again. A rollback that needs preserved data that finalizing dropped is
//! refused before anything changes (see [`check_preserved`]).

use rusqlite::OptionalExtension;
use serde::Serialize;
use serde_json::json;

use crate::error::{Context, Error, Result};
use crate::plan::installed;
use crate::rollback::load_plan;
use crate::snapshot;
use crate::state::State;
use crate::target::{Target, classify};

/// What `finalize` did.
#[derive(Debug, Clone, Serialize)]
pub struct Finalized {
    pub product: String,
    pub release: String,
    pub sequence: u64,
    /// Side tables dropped, as `target:table`.
    pub dropped: Vec<String>,
    /// Snapshots no longer pinned (prune may now delete them).
    pub unpinned: Vec<String>,
}

/// Finalizes the installed release of `product`.
///
/// # Errors
/// [`Error::BadInput`] when nothing is installed or a target cannot be
/// opened (nothing changed on that target).
pub fn finalize(state: &State, product: &str) -> Result<Finalized> {
    let inst = installed(state, product)?.ok_or_else(|| {
        Error::BadInput(format!("{product}: no release is installed here, so there is nothing to finalize"))
    })?;
    let (plan, _) = load_plan(state, &inst.plan_id)?.ok_or_else(|| {
        Error::BadInput(format!(
            "{product} {}: the plan that installed it ({}) is not in the journal; nothing changed",
            inst.release, inst.plan_id
        ))
    })?;
    let mut dropped = Vec::new();
    for (name, path) in &plan.targets {
        let sides: Vec<String> = plan
            .migrations
            .iter()
            .filter(|m| &m.target == name)
            .flat_map(|m| m.preserve.iter().map(|p| p.side_table(&m.id)))
            .collect();
        if sides.is_empty() {
            continue;
        }
        let t = Target::open(name, path)?;
        let tx = t.conn.unchecked_transaction().map_err(|e| classify(path, e))?;
        for side in sides {
            let exists = tx
                .query_row("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1", [&side], |_| Ok(()))
                .optional()
                .map_err(|e| classify(path, e))?
                .is_some();
            if exists {
                tx.execute_batch(&format!("DROP TABLE \"{side}\"")).map_err(|e| classify(path, e))?;
                dropped.push(format!("{name}:{side}"));
            }
        }
        tx.commit().map_err(|e| classify(path, e))?;
    }
    let unpinned: Vec<String> = snapshot::list(state)?
        .into_iter()
        .filter(|s| {
            s.pinned && s.product.as_deref() == Some(product) && s.release.as_deref() == Some(inst.release.as_str())
        })
        .map(|s| s.id)
        .collect();
    snapshot::unpin_release(state, product, &inst.release)?;
    state
        .db
        .execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [format!("finalized:{product}:{}", inst.release), crate::state::now()],
        )
        .ctx("finalize record")?;
    state.audit(
        "release.finalize",
        &json!({"product": product, "release": inst.release, "sequence": inst.sequence, "dropped": dropped, "unpinned": unpinned}),
    )?;
    Ok(Finalized { product: product.to_string(), release: inst.release, sequence: inst.sequence, dropped, unpinned })
}

/// Refuses a `down.sql` rollback of a migration whose preserved copy is gone
/// (the release was finalized): `down.sql` would read a missing table.
///
/// # Errors
/// [`Error::BadInput`] naming the migration and the way out.
pub fn check_preserved(t: &Target, m: &rewind_shared::release::Migration) -> Result<()> {
    if m.rollback != rewind_shared::release::RollbackMode::Down {
        return Ok(());
    }
    for p in &m.preserve {
        let side = p.side_table(&m.id);
        let exists = t
            .conn
            .query_row("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1", [&side], |_| Ok(()))
            .optional()
            .map_err(|e| classify(&t.path, e))?
            .is_some();
        if !exists {
            return Err(Error::BadInput(format!(
                "migration {}: its preserved copy {side} in {} is gone (the release was finalized), so down.sql cannot \
                 restore the data; nothing changed. Restore a snapshot taken before the release instead \
                 (rewind-agent snapshot list; rewind-agent snapshot restore ID --db {})",
                m.id,
                t.path.display(),
                t.path.display()
            )));
        }
    }
    Ok(())
}
