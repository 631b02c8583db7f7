//! The `rewind.v1.Comms` service (proto/rewind/v1/comms.proto): thin
//! handlers over [`crate::comms`] and the webhook delivery log, each
//! checking the caller's operator role like the Admin service does.

use std::sync::Arc;

use rewind_shared::wire::v1;
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::App;
use crate::auth::{Role, authorize};
use crate::comms::{self, Incident};
use crate::store::{IncidentUpdate, TemplateVersion, WebhookAttempt};

/// `rewind.v1.Comms`.
pub struct CommsService {
    pub app: Arc<App>,
}

impl CommsService {
    async fn auth<T>(&self, req: &Request<T>, role: Role, call: &str) -> Result<String, Status> {
        Ok(authorize(self.app.store.as_ref(), req.metadata(), role, call).await?)
    }
}

fn template(v: TemplateVersion) -> v1::TemplateVersion {
    v1::TemplateVersion {
        product: v.product,
        name: v.name,
        version: v.version,
        body: v.body,
        author: v.author,
        source: v.source,
        time: v.time,
    }
}

fn update(u: IncidentUpdate) -> v1::IncidentUpdate {
    v1::IncidentUpdate {
        kind: u.kind,
        state: u.state,
        title: u.title,
        markdown: u.markdown,
        text: u.text,
        cause: u.cause,
        time: u.time,
    }
}

fn incident(i: Incident) -> v1::Incident {
    v1::Incident {
        id: i.id,
        product: i.product,
        release: i.release,
        kind: i.kind,
        state: i.state,
        title: i.title,
        markdown: i.markdown,
        text: i.text,
        html: i.html,
        started: i.started,
        updated: i.updated,
        updates: i.updates.into_iter().map(update).collect(),
    }
}

fn attempt(a: WebhookAttempt) -> v1::WebhookAttempt {
    v1::WebhookAttempt {
        delivery: a.delivery,
        webhook: a.webhook,
        event: a.event,
        attempt: a.attempt,
        status: a.status.map_or(0, u32::from),
        error: a.error.unwrap_or_default(),
        outcome: a.outcome,
        duration_ms: a.duration_ms,
        retry_in_ms: a.retry_in_ms.unwrap_or(0),
        time: a.time,
    }
}

#[tonic::async_trait]
impl v1::comms_server::Comms for CommsService {
    async fn list_templates(
        &self,
        request: Request<v1::ListTemplatesRequest>,
    ) -> Result<Response<v1::ListTemplatesResponse>, Status> {
        self.auth(&request, Role::Viewer, "ListTemplates").await?;
        let product = request.into_inner().product;
        let list = comms::templates(&self.app, (!product.is_empty()).then_some(product.as_str())).await?;
        Ok(Response::new(v1::ListTemplatesResponse { templates: list.into_iter().map(template).collect() }))
    }

    async fn get_template(
        &self,
        request: Request<v1::GetTemplateRequest>,
    ) -> Result<Response<v1::GetTemplateResponse>, Status> {
        self.auth(&request, Role::Viewer, "GetTemplate").await?;
        let r = request.into_inner();
        let versions = comms::template_versions(&self.app, &r.product, &r.name).await?;
        Ok(Response::new(v1::GetTemplateResponse { versions: versions.into_iter().map(template).collect() }))
    }

    async fn put_template(
        &self,
        request: Request<v1::PutTemplateRequest>,
    ) -> Result<Response<v1::PutTemplateResponse>, Status> {
        let who = self.auth(&request, Role::Admin, "PutTemplate").await?;
        let r = request.into_inner();
        let v = comms::put_template(&self.app, &r.product, &r.name, &r.body, &who).await?;
        tracing::info!(operator = %who, product = %v.product, name = %v.name, version = v.version, "template edited");
        Ok(Response::new(v1::PutTemplateResponse { template: Some(template(v)) }))
    }

    async fn list_incidents(
        &self,
        request: Request<v1::ListIncidentsRequest>,
    ) -> Result<Response<v1::ListIncidentsResponse>, Status> {
        self.auth(&request, Role::Viewer, "ListIncidents").await?;
        let product = request.into_inner().product;
        let list = comms::incidents(&self.app).await?;
        Ok(Response::new(v1::ListIncidentsResponse {
            incidents: list.into_iter().filter(|i| product.is_empty() || i.product == product).map(incident).collect(),
        }))
    }

    async fn schedule_maintenance(
        &self,
        request: Request<v1::ScheduleMaintenanceRequest>,
    ) -> Result<Response<v1::IncidentResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "ScheduleMaintenance").await?;
        let r = request.into_inner();
        let i = comms::schedule_maintenance(&self.app, &r.product, &r.version, &r.starts, &r.wave, &who).await?;
        Ok(Response::new(v1::IncidentResponse { incident: Some(incident(i)) }))
    }

    async fn resolve_incident(
        &self,
        request: Request<v1::ResolveIncidentRequest>,
    ) -> Result<Response<v1::IncidentResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "ResolveIncident").await?;
        let r = request.into_inner();
        let i = comms::resolve(&self.app, &r.incident, &r.reason, &who).await?;
        Ok(Response::new(v1::IncidentResponse { incident: Some(incident(i)) }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<v1::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<v1::ListWebhookDeliveriesResponse>, Status> {
        self.auth(&request, Role::Viewer, "ListWebhookDeliveries").await?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(10_000) };
        // The filter applies after the limit only when no webhook is named.
        let fetch = if r.webhook.is_empty() { limit } else { 10_000 };
        let mut list: Vec<WebhookAttempt> = self
            .app
            .store
            .webhook_attempts(fetch)
            .await?
            .into_iter()
            .filter(|a| r.webhook.is_empty() || a.webhook == r.webhook)
            .collect();
        let skip = list.len().saturating_sub(limit as usize);
        list.drain(..skip);
        Ok(Response::new(v1::ListWebhookDeliveriesResponse { attempts: list.into_iter().map(attempt).collect() }))
    }

    async fn test_webhook(
        &self,
        request: Request<v1::TestWebhookRequest>,
    ) -> Result<Response<v1::TestWebhookResponse>, Status> {
        let who = self.auth(&request, Role::Operator, "TestWebhook").await?;
        let name = request.into_inner().webhook;
        if !self.app.config.webhooks.iter().any(|w| w.name == name) {
            let names: Vec<&str> = self.app.config.webhooks.iter().map(|w| w.name.as_str()).collect();
            return Err(Status::not_found(format!(
                "no webhook named {name:?}; configured: {} (the [[webhook]] tables of coordinator.toml)",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        }
        let delivery = crate::random_id("whd", 8);
        crate::audit::record(
            &self.app,
            crate::webhooks::TEST_EVENT,
            json!({"by": who, "webhook": name, "delivery": delivery, "reason": "test delivery from rewindctl webhooks test"}),
        )
        .await;
        Ok(Response::new(v1::TestWebhookResponse { delivery }))
    }
}
