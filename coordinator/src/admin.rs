//! The `rewind.v1.Admin` service used by rewindctl. Each handler checks the
//! caller's role, converts, and forwards; calls whose machinery is not built
//! yet answer UNIMPLEMENTED with what is missing.

use std::pin::Pin;
use std::sync::Arc;

use rewind_shared::fleet::Selector;
use rewind_shared::wire::{self, v1};
use serde_json::json;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::App;
use crate::auth::{Role, authorize};
use crate::error::Error;
use crate::store::token_hash;

/// Default lifetime of an enrollment token.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Longest lifetime of an enrollment token.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

/// `rewind.v1.Admin`.
pub struct AdminService {
    pub app: Arc<App>,
}

impl AdminService {
    async fn auth<T>(&self, req: &Request<T>, role: Role, call: &str) -> Result<String, Status> {
        Ok(authorize(self.app.store.as_ref(), req.metadata(), role, call).await?)
    }
}

fn not_yet(what: &str) -> Status {
    Status::from(Error::NotImplemented(format!(
        "{what} (comes with the phased-rollout engine); roll back the whole release fleet-wide with rewindctl rollback PRODUCT"
    )))
}

type AuditStream = Pin<Box<dyn Stream<Item = Result<v1::AuditRecord, Status>> + Send>>;

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "CreateToken").await?;
        let r = request.into_inner();
        let labels = wire::labels_from_wire("labels", r.labels)?;
        let uses = r.uses.max(1);
        let ttl = if r.ttl_seconds == 0 { DEFAULT_TOKEN_TTL_SECS } else { r.ttl_seconds };
        if ttl > MAX_TOKEN_TTL_SECS {
            return Err(Status::invalid_argument(format!("ttl: at most {MAX_TOKEN_TTL_SECS} seconds (365 days)")));
        }
        let token = crate::random_id("rwt", 24);
        let expires = crate::now_unix() + i64::try_from(ttl).expect("bounded above");
        self.app.store.create_token(token_hash(&token), labels.clone(), uses, expires).await?;
        tracing::info!(operator = %who, uses, ttl, ?labels, "enrollment token created");
        crate::audit::record(
            &self.app,
            "token.create",
            json!({"by": who, "uses": uses, "ttl_seconds": ttl, "labels": labels, "expires_unix": expires}),
        )
        .await;
        Ok(Response::new(v1::CreateTokenResponse { token, expires_unix: expires, uses }))
    }

    async fn list_agents(
        &self,
        request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        self.auth(&request, Role::Viewer, "ListAgents").await?;
        let selector = Selector::parse(&request.get_ref().selector)
            .map_err(|e| Status::invalid_argument(format!("selector: {e}")))?;
        let agents = self.app.store.agents().await?;
        let mut out = Vec::new();
        for a in agents.into_iter().filter(|a| selector.matches(&a.labels)) {
            let (results, alarms) = self.app.store.counts(a.id.clone()).await?;
            let (results, alarms) =
                (u32::try_from(results).unwrap_or(u32::MAX), u32::try_from(alarms).unwrap_or(u32::MAX));
            out.push(v1::AgentInfo {
                results,
                alarms,
                connected: self.app.sessions.is_connected(&a.id),
                id: a.id.to_string(),
                labels: wire::labels_to_wire(&a.labels),
                hostname: a.hostname,
                products: a
                    .inventory
                    .products
                    .iter()
                    .map(|p| v1::ProductInfo { name: p.name.clone(), sequence: p.sequence, release: p.release.clone() })
                    .collect(),
                last_seen: a.last_seen.unwrap_or_default(),
                enrolled: a.enrolled,
                audit_public_key: a.audit_key,
                targets: a
                    .inventory
                    .targets
                    .iter()
                    .map(|t| {
                        let w = v1::TargetState::from(t);
                        v1::TargetInfo {
                            product: w.product,
                            name: w.name,
                            schema_digest: w.schema_digest,
                            data_digest: w.data_digest,
                        }
                    })
                    .collect(),
            });
        }
        Ok(Response::new(v1::ListAgentsResponse { agents: out }))
    }

    async fn upload_bundle(
        &self,
        request: Request<v1::UploadBundleRequest>,
    ) -> Result<Response<v1::UploadBundleResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "UploadBundle").await?;
        let b = crate::rollouts::upload(&self.app, request.into_inner().bundle).await?;
        tracing::info!(operator = %who, product = %b.product, release = %b.release, "bundle uploaded");
        crate::audit::record(
            &self.app,
            "bundle.upload",
            json!({"by": who, "bundle": b.id, "product": b.product, "release": b.release, "sequence": b.sequence}),
        )
        .await;
        Ok(Response::new(v1::UploadBundleResponse { product: b.product, version: b.release, sequence: b.sequence }))
    }

    async fn start_rollout(
        &self,
        request: Request<v1::StartRolloutRequest>,
    ) -> Result<Response<v1::StartRolloutResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "StartRollout").await?;
        let r = request.into_inner();
        let (rollout_id, agents) = crate::rollouts::start(&self.app, &r.product, &r.version).await?;
        crate::audit::record(
            &self.app,
            "rollout.start",
            json!({"by": who, "product": r.product, "version": r.version, "bundle": rollout_id, "agents": agents}),
        )
        .await;
        Ok(Response::new(v1::StartRolloutResponse { rollout_id, agents }))
    }

    async fn rollout_status(
        &self,
        request: Request<v1::RolloutStatusRequest>,
    ) -> Result<Response<v1::RolloutStatusResponse>, Status> {
        self.auth(&request, Role::Viewer, "RolloutStatus").await?;
        let json = crate::rollouts::status(&self.app, &request.get_ref().product).await?;
        Ok(Response::new(v1::RolloutStatusResponse { json: json.to_string() }))
    }

    async fn rollback(&self, request: Request<v1::RollbackRequest>) -> Result<Response<v1::RollbackResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "Rollback").await?;
        let r = request.into_inner();
        if r.to_sequence != 0
            || !(r.granularity.is_empty() || r.granularity == "release")
            || !(r.scope.is_empty() || r.scope == "fleet")
        {
            return Err(not_yet(
                "Rollback with --to-sequence, a granularity other than release or a scope other than fleet",
            ));
        }
        let agents = crate::rollouts::rollback(&self.app, &r.product).await?;
        crate::audit::record(
            &self.app,
            "rollback.start",
            json!({"by": who, "product": r.product, "granularity": "release", "scope": "fleet", "agents": agents}),
        )
        .await;
        Ok(Response::new(v1::RollbackResponse { agents }))
    }

    async fn fleet_verify(
        &self,
        request: Request<v1::FleetVerifyRequest>,
    ) -> Result<Response<v1::FleetVerifyResponse>, Status> {
        self.auth(&request, Role::Viewer, "FleetVerify").await?;
        let r = request.into_inner();
        let (ok, json) = crate::rollouts::verify(&self.app, &r.product, &r.version).await?;
        if !ok {
            tracing::error!(product = %r.product, version = %r.version, "fleet verify: digest drift");
        }
        Ok(Response::new(v1::FleetVerifyResponse { json: json.to_string(), ok }))
    }

    async fn create_operator(
        &self,
        request: Request<v1::CreateOperatorRequest>,
    ) -> Result<Response<v1::CreateOperatorResponse>, Status> {
        let who = self.auth(&request, Role::Admin, "CreateOperator").await?;
        let r = request.into_inner();
        let role = Role::parse(&r.role).ok_or_else(|| {
            Status::invalid_argument(format!("role {:?}: expected viewer, operator, approver or admin", r.role))
        })?;
        if r.name.is_empty() || r.name.len() > 64 || r.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Status::invalid_argument("name: 1-64 characters, no spaces"));
        }
        let token = crate::random_id("rwo", 24);
        self.app.store.put_operator(token_hash(&token), r.name.clone(), role).await?;
        tracing::info!(operator = %who, name = %r.name, role = role.as_str(), "operator token created");
        crate::audit::record(&self.app, "operator.create", json!({"by": who, "name": r.name, "role": role.as_str()}))
            .await;
        Ok(Response::new(v1::CreateOperatorResponse { token }))
    }

    async fn revoke_agent(
        &self,
        request: Request<v1::RevokeAgentRequest>,
    ) -> Result<Response<v1::RevokeAgentResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "RevokeAgent").await?;
        let id = rewind_shared::fleet::AgentId::parse(&request.get_ref().agent_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let revoked = self.app.store.revoke(id.clone()).await?;
        self.app
            .sessions
            .kick(&id, Status::unauthenticated(format!("agent {id} was revoked; re-enroll it with a new token")));
        tracing::warn!(operator = %who, agent = %id, "agent revoked");
        crate::audit::record(&self.app, "agent.revoke", json!({"by": who, "agent": id, "was_active": revoked})).await;
        Ok(Response::new(v1::RevokeAgentResponse { revoked }))
    }

    type AuditExportStream = AuditStream;

    async fn audit_export(&self, request: Request<v1::AuditExportRequest>) -> Result<Response<AuditStream>, Status> {
        self.auth(&request, Role::Viewer, "AuditExport").await?;
        let lines: Vec<Result<v1::AuditRecord, Status>> =
            crate::audit::export(&self.app).await?.into_iter().map(|json| Ok(v1::AuditRecord { json })).collect();
        let mut response = Response::new(Box::pin(tokio_stream::iter(lines)) as AuditStream);
        if let Ok(v) = hex::encode(self.app.key.verifying_key().as_bytes()).parse() {
            response.metadata_mut().insert(crate::audit::KEY_METADATA, v);
        }
        Ok(response)
    }
}
