//! The `rewind.v1.Admin` service used by rewindctl. Each handler checks the
//! caller's role, converts, and forwards.

use std::pin::Pin;
use std::sync::Arc;

use rewind_shared::fleet::{AgentId, Selector};
use rewind_shared::wire::{self, v1};
use serde_json::json;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use tonic::transport::Channel;
use v1::admin_client::AdminClient;

use crate::App;
use crate::auth::{Role, authorize};
use crate::cluster::Leadership;
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

    /// The leader's Admin service when this replica does not lead (calls
    /// that change a rollout go there, with the caller's token); `None`
    /// when this replica leads.
    async fn leader(&self) -> Result<Option<AdminClient<Channel>>, Status> {
        let url = match self.app.cluster.leadership() {
            Leadership::Leader { .. } => return Ok(None),
            Leadership::Follower { leader: None } => {
                return Err(Status::unavailable(
                    "no replica leads right now (the leader lease is changing hands); retry in a few seconds",
                ));
            }
            Leadership::Follower { leader: Some(url) } if url == self.app.cluster.url => {
                // The lease names this replica's address: an earlier process
                // here that is gone; the lease passes on when it expires.
                return Err(Status::unavailable(
                    "the leader lease is held by a process that is gone; another replica takes over within lease_seconds; retry",
                ));
            }
            Leadership::Follower { leader: Some(url) } => url,
        };
        let tls = ClientTls { ca_pem: self.app.ca.cert_pem.clone(), identity: None };
        let ch = channel::connect(&url, &tls, ChannelOptions::unary()).await.map_err(|e| {
            Status::unavailable(format!("this replica does not lead and the leader at {url} does not answer: {e}"))
        })?;
        tracing::info!(leader = %url, "forwarding an Admin call to the leader");
        Ok(Some(AdminClient::new(ch).max_decoding_message_size(64 << 20)))
    }
}

/// `msg` as a request to the leader, carrying the caller's authorization.
fn forwarded<T, U>(original: &Request<T>, msg: U) -> Request<U> {
    let mut r = Request::new(msg);
    if let Some(auth) = original.metadata().get("authorization") {
        r.metadata_mut().insert("authorization", auth.clone());
    }
    r
}

type AuditStream = Pin<Box<dyn Stream<Item = Result<v1::AuditRecord, Status>> + Send>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::RolloutStatusResponse, Status>> + Send>>;

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
        let counts = self.app.store.counts().await?;
        let mut out = Vec::new();
        for a in agents.into_iter().filter(|a| selector.matches(&a.labels)) {
            let (results, alarms) = counts.get(&a.id).copied().unwrap_or_default();
            let (results, alarms) =
                (u32::try_from(results).unwrap_or(u32::MAX), u32::try_from(alarms).unwrap_or(u32::MAX));
            out.push(v1::AgentInfo {
                results,
                alarms,
                connected: self.app.cluster.is_connected(&self.app, &a.id),
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
        if let Some(mut leader) = self.leader().await? {
            let msg = request.get_ref().clone();
            return leader.start_rollout(forwarded(&request, msg)).await;
        }
        let r = request.into_inner();
        let (rollout_id, agents) = crate::rollouts::start(&self.app, &r.product, &r.version, r.supersede, &who).await?;
        let json = crate::rollouts::status(&self.app, &r.product).await?;
        Ok(Response::new(v1::StartRolloutResponse { rollout_id, agents, json: json.to_string() }))
    }

    async fn rollout_status(
        &self,
        request: Request<v1::RolloutStatusRequest>,
    ) -> Result<Response<v1::RolloutStatusResponse>, Status> {
        self.auth(&request, Role::Viewer, "RolloutStatus").await?;
        let r = request.get_ref();
        let json = if r.rollout.is_empty() {
            crate::rollouts::status(&self.app, &r.product).await?
        } else {
            crate::rollouts::status_of(&self.app, &r.rollout).await?
        };
        Ok(Response::new(v1::RolloutStatusResponse { json: json.to_string() }))
    }

    type WatchRolloutStream = WatchStream;

    async fn watch_rollout(&self, request: Request<v1::RolloutStatusRequest>) -> Result<Response<WatchStream>, Status> {
        self.auth(&request, Role::Viewer, "WatchRollout").await?;
        let product = request.into_inner().product;
        // The first status now, so a product without a rollout is an error.
        let first = crate::rollouts::status(&self.app, &product).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let app = Arc::clone(&self.app);
        let mut events = app.events.subscribe();
        tokio::spawn(async move {
            let mut last = String::new();
            let mut current = first;
            loop {
                let text = current.to_string();
                if text != last {
                    if tx.send(Ok(v1::RolloutStatusResponse { json: text.clone() })).await.is_err() {
                        return;
                    }
                    last = text;
                }
                if crate::rollouts::is_terminal(current["state"].as_str().unwrap_or("")) {
                    return;
                }
                // A rollout event, a result, or a second: look again.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    loop {
                        match events.recv().await {
                            Ok(e) if e.kind.starts_with("rollout.") || e.kind == "result" => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                })
                .await;
                match crate::rollouts::status(&app, &product).await {
                    Ok(s) => current = s,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as WatchStream))
    }

    async fn control_rollout(
        &self,
        request: Request<v1::ControlRolloutRequest>,
    ) -> Result<Response<v1::RolloutStatusResponse>, Status> {
        let (role, call) = match request.get_ref().command.as_str() {
            "approve" => (Role::Approver, "ControlRollout(approve)"),
            "pause" | "resume" | "abort" => (Role::Operator, "ControlRollout"),
            other => {
                return Err(Status::invalid_argument(format!(
                    "command {other:?}: expected pause, resume, abort or approve"
                )));
            }
        };
        let who = self.auth(&request, role, call).await?;
        if let Some(mut leader) = self.leader().await? {
            let msg = request.get_ref().clone();
            return leader.control_rollout(forwarded(&request, msg)).await;
        }
        let r = request.into_inner();
        let app = &self.app;
        let json = match r.command.as_str() {
            "pause" => crate::rollouts::pause(app, &r.product, &who).await?,
            "resume" => crate::rollouts::resume(app, &r.product, &who).await?,
            "abort" => crate::rollouts::abort(app, &r.product, &who).await?,
            _ => {
                if r.wave.is_empty() {
                    return Err(Status::invalid_argument("approve needs the wave's name"));
                }
                crate::rollouts::approve(app, &r.product, &r.wave, &who).await?
            }
        };
        Ok(Response::new(v1::RolloutStatusResponse { json: json.to_string() }))
    }

    async fn rollback(&self, request: Request<v1::RollbackRequest>) -> Result<Response<v1::RollbackResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "Rollback").await?;
        if let Some(mut leader) = self.leader().await? {
            let msg = request.get_ref().clone();
            return leader.rollback(forwarded(&request, msg)).await;
        }
        let r = request.into_inner();
        let req = crate::rollouts::RollbackRequest {
            to_sequence: (r.to_sequence != 0).then_some(r.to_sequence),
            granularity: r.granularity,
            subject: (!r.subject.is_empty()).then_some(r.subject),
            scope: r.scope,
            reason: r.reason,
        };
        let started = crate::rollouts::rollback(&self.app, &r.product, req, &who).await?;
        let status = crate::rollouts::status(&self.app, &r.product).await?;
        let json = json!({"rollouts": started.rollouts, "agents": started.agents, "status": status});
        Ok(Response::new(v1::RollbackResponse { agents: started.agents, json: json.to_string() }))
    }

    async fn list_flags(
        &self,
        request: Request<v1::ListFlagsRequest>,
    ) -> Result<Response<v1::ListFlagsResponse>, Status> {
        self.auth(&request, Role::Viewer, "ListFlags").await?;
        let r = request.into_inner();
        let rows = crate::flags::list(&self.app, (!r.product.is_empty()).then_some(r.product.as_str())).await?;
        Ok(Response::new(v1::ListFlagsResponse { json: serde_json::Value::Array(rows).to_string() }))
    }

    async fn set_flag(&self, request: Request<v1::SetFlagRequest>) -> Result<Response<v1::RollbackResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "SetFlag").await?;
        if let Some(mut leader) = self.leader().await? {
            let msg = request.get_ref().clone();
            return leader.set_flag(forwarded(&request, msg)).await;
        }
        let r = request.into_inner();
        let started = crate::flags::set(&self.app, &r.product, &r.name, &r.value, &r.scope, &r.reason, &who).await?;
        let status = crate::rollouts::status(&self.app, &r.product).await?;
        let json = json!({"rollouts": started.rollouts, "agents": started.agents, "status": status});
        Ok(Response::new(v1::RollbackResponse { agents: started.agents, json: json.to_string() }))
    }

    async fn lineage(&self, request: Request<v1::LineageRequest>) -> Result<Response<v1::LineageResponse>, Status> {
        self.auth(&request, Role::Viewer, "Lineage").await?;
        let r = request.into_inner();
        let agent = AgentId::parse(&r.agent_id).map_err(|e| Status::invalid_argument(format!("agent_id: {e}")))?;
        let steps = crate::lineage::lineage(&self.app, &agent, &r.target).await?;
        Ok(Response::new(v1::LineageResponse { json: serde_json::Value::Array(steps).to_string() }))
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

    async fn list_operators(
        &self,
        request: Request<v1::ListOperatorsRequest>,
    ) -> Result<Response<v1::ListOperatorsResponse>, Status> {
        self.auth(&request, Role::Admin, "ListOperators").await?;
        let mut rows: Vec<serde_json::Value> = Vec::new();
        for (name, role) in self.app.store.operators().await? {
            match rows.iter_mut().find(|r| r["name"] == name.as_str() && r["role"] == role.as_str()) {
                Some(r) => r["tokens"] = json!(r["tokens"].as_u64().unwrap_or(0) + 1),
                None => rows.push(json!({"name": name, "role": role.as_str(), "tokens": 1})),
            }
        }
        Ok(Response::new(v1::ListOperatorsResponse { json: serde_json::Value::Array(rows).to_string() }))
    }

    async fn revoke_operator(
        &self,
        request: Request<v1::RevokeOperatorRequest>,
    ) -> Result<Response<v1::RevokeOperatorResponse>, Status> {
        let who = self.auth(&request, Role::Admin, "RevokeOperator").await?;
        let name = request.into_inner().name;
        let all = self.app.store.operators().await?;
        let admins_left = all.iter().filter(|(n, r)| *r == Role::Admin && *n != name).count();
        if admins_left == 0 && all.iter().any(|(n, r)| *n == name && *r == Role::Admin) {
            return Err(Status::failed_precondition(format!(
                "{name} holds the last admin token: create another admin first (rewindctl operator create NAME --role admin)"
            )));
        }
        let revoked = self.app.store.revoke_operator(name.clone()).await?;
        if revoked == 0 {
            let names: std::collections::BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Status::not_found(format!(
                "no operator {name:?}; the operators are: {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        tracing::warn!(operator = %who, name = %name, revoked, "operator tokens revoked");
        crate::audit::record(&self.app, "operator.revoke", json!({"by": who, "name": name, "tokens": revoked})).await;
        Ok(Response::new(v1::RevokeOperatorResponse { revoked: u32::try_from(revoked).unwrap_or(u32::MAX) }))
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
