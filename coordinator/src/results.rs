//! Ingesting agent results: verify the signature with the key bound at
//! enrollment, check audit chain continuity against the agent's last
//! accepted point, store idempotently by report id, and answer with the id
//! to acknowledge. Only the signed payload is trusted; the unsigned fields
//! of the wire message are hints.
//!
//! Guarantees: a result is acknowledged only once it is stored (or was
//! stored before), so the agent's outbox keeps it until then; delivering the
//! same id again changes nothing; a result whose signature does not verify
//! is never stored nor acknowledged and raises a `bad_signature` alarm; a
//! gap or fork in the audit chain is stored with the result and raises a
//! `chain_gap` / `chain_fork` alarm.

use rewind_shared::fleet::AgentId;
use rewind_shared::report::{ChainContinuity, Continuity, public_key_from_hex, verify_report};
use rewind_shared::wire::v1;

use crate::App;
use crate::error::{Error, Result};
use crate::store::StoredResult;

/// What became of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored now (or before); acknowledge `id`.
    Stored { id: String, new: bool, continuity: &'static str },
    /// Refused; not acknowledged.
    Refused(String),
}

/// Verifies and stores one result from `agent`.
///
/// # Errors
/// When the store fails (the result is then not acknowledged and comes
/// again).
pub async fn ingest(app: &App, agent: &AgentId, r: v1::Result) -> Result<Ingested> {
    let record = app
        .store
        .agent(agent.clone())
        .await?
        .ok_or_else(|| Error::NotFound(format!("agent {agent} is not enrolled")))?;
    let key = match public_key_from_hex(&record.audit_key) {
        Ok(k) => k,
        Err(e) => return Ok(Ingested::Refused(format!("agent {agent} has no usable audit key ({e}); re-enroll it"))),
    };
    let payload = match verify_report(&r.report, &r.signature, &key) {
        Ok(p) => p,
        Err(e) => {
            let detail = format!("result {}: {e}", r.id);
            app.store.alarm(agent.clone(), "bad_signature".into(), detail.clone()).await?;
            crate::audit::record(
                app,
                "alarm",
                serde_json::json!({"agent": agent, "kind": "bad_signature", "detail": detail}),
            )
            .await;
            return Ok(Ingested::Refused(detail));
        }
    };
    if payload.id != r.id {
        let detail = format!("result {} carries a signed report with id {}", r.id, payload.id);
        app.store.alarm(agent.clone(), "bad_signature".into(), detail.clone()).await?;
        return Ok(Ingested::Refused(detail));
    }
    let (continuity, advance) = match ChainContinuity::check(record.chain, &payload, &key) {
        Continuity::Ok { head, .. } => ("ok", Some(head)),
        Continuity::Gap { known, head, missing } => {
            let detail = format!(
                "result {}: audit entries {}..={} missing between seq {} and {}",
                payload.id, missing.0, missing.1, known.seq, head.seq
            );
            app.store.alarm(agent.clone(), "chain_gap".into(), detail.clone()).await?;
            crate::audit::record(
                app,
                "alarm",
                serde_json::json!({"agent": agent, "kind": "chain_gap", "detail": detail}),
            )
            .await;
            ("gap", None)
        }
        Continuity::Fork { reason, .. } => {
            let detail = format!("result {}: {reason}", payload.id);
            app.store.alarm(agent.clone(), "chain_fork".into(), detail.clone()).await?;
            crate::audit::record(
                app,
                "alarm",
                serde_json::json!({"agent": agent, "kind": "chain_fork", "detail": detail}),
            )
            .await;
            ("fork", None)
        }
    };
    let stored = StoredResult {
        id: payload.id.clone(),
        agent: agent.clone(),
        plan: payload.plan.clone(),
        signed_plan: payload.signed_plan.clone(),
        product: payload.product.clone(),
        release: payload.release.clone(),
        sequence: payload.sequence,
        status: payload.status.as_str().to_string(),
        continuity: continuity.to_string(),
        payload: r.report,
        signature: r.signature,
    };
    let new = app.store.store_result(stored, advance).await?;
    if new {
        crate::audit::record(app, "result", serde_json::json!({"agent": agent, "result": payload.id, "plan": payload.plan, "product": payload.product,
            "release": payload.release, "sequence": payload.sequence, "status": payload.status.as_str(), "continuity": continuity})).await;
    }
    if new && continuity != "ok" {
        tracing::error!(%agent, result = %payload.id, continuity, "integrity alarm: audit chain discontinuity");
    }
    Ok(Ingested::Stored { id: payload.id, new, continuity })
}

/// Checks the audit head an agent announces in its hello against the point
/// of its newest verified result: a head below it, or the same sequence
/// with another hash, means the agent's state was restored from an older
/// copy or rewritten — a `chain_fork` alarm. Returns the alarm's text.
///
/// # Errors
/// When the store fails.
pub async fn check_hello_head(
    app: &App,
    agent: &AgentId,
    head: &rewind_shared::fleet::AuditHead,
) -> Result<Option<String>> {
    let Some(known) = app.store.agent(agent.clone()).await?.and_then(|a| a.chain) else {
        return Ok(None);
    };
    let detail = if head.seq < known.seq {
        format!(
            "hello announces audit seq {} but a verified result already reached seq {} (state restored from an older copy?)",
            head.seq, known.seq
        )
    } else if head.seq == known.seq && head.hash != Some(known.head) {
        format!("hello announces another audit head at seq {} than the verified result ({})", head.seq, known.head)
    } else {
        return Ok(None);
    };
    app.store.alarm(agent.clone(), "chain_fork".into(), detail.clone()).await?;
    crate::audit::record(app, "alarm", serde_json::json!({"agent": agent, "kind": "chain_fork", "detail": detail}))
        .await;
    Ok(Some(detail))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rewind_shared::fleet::Labels;

    use super::*;
    use crate::config::Config;
    use crate::store::{AgentRecord, Store, sqlite::SqliteStore};

    #[tokio::test]
    async fn a_forged_result_is_refused_not_stored_and_raises_an_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("c.db")).await.unwrap());
        let id = AgentId::parse("agt-1").unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        store
            .insert_agent(AgentRecord {
                id: id.clone(),
                hostname: "h".into(),
                labels: Labels::new(),
                fingerprint: "f".into(),
                enrolled: crate::now(),
                last_seen: None,
                inventory: Default::default(),
                revoked: false,
                audit_key: hex::encode(key.verifying_key().as_bytes()),
                chain: None,
            })
            .await
            .unwrap();
        let app = App {
            config: Config::default(),
            store: store.clone(),
            ca: crate::ca::Ca::load_or_create(dir.path(), None).unwrap(),
            sessions: Default::default(),
            key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
            events: Default::default(),
        };
        let forged = v1::Result {
            id: "res-1".into(),
            report: br#"{"format":"rewind-report-1"}"#.to_vec(),
            signature: vec![0; 64],
            ..Default::default()
        };
        let out = ingest(&app, &id, forged).await.unwrap();
        assert!(matches!(out, Ingested::Refused(ref m) if m.contains("res-1")), "{out:?}");
        assert!(store.results(id.clone()).await.unwrap().is_empty());
        assert_eq!(store.alarms(id).await.unwrap()[0].0, "bad_signature");
    }
}
