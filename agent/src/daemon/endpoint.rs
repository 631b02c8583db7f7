//! The daemon's local HTTP endpoint on `ofrep_listen` (a loopback address):
//! flag evaluation over OFREP ([`super::ofrep`]) and app metrics
//! (`POST /metrics`, read back with `GET /metrics`). Plain HTTP/1.1: only
//! processes on this machine reach it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::ofrep;
use super::telemetry::Hub;

/// What the handlers read.
pub struct Local {
    pub state: PathBuf,
    pub hub: Arc<Hub>,
    /// The products this endpoint serves (from agent.toml's targets).
    pub products: Vec<String>,
}

/// Binds `addr` (so a port in use is reported at start) and returns the
/// server to run.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    local: Arc<Local>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        .route("/metrics", post(push_metrics).get(show_metrics))
        .with_state(local);
    Ok(async move { axum::serve(listener, app).await })
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn flags(local: &Local) -> Result<Vec<ofrep::FlagRow>, Response> {
    let state = local.state.clone();
    match tokio::task::spawn_blocking(move || ofrep::read_flags(&state)).await {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => Err(json_response(
            500,
            &json!({"errorCode": "GENERAL", "errorDetails": format!("reading flags from agent.db: {e}")}),
        )),
        Err(e) => Err(json_response(500, &json!({"errorCode": "GENERAL", "errorDetails": e.to_string()}))),
    }
}

async fn evaluate_one(Shared(local): Shared<Arc<Local>>, UrlPath(key): UrlPath<String>, body: Bytes) -> Response {
    let ctx = match ofrep::context(&body, Some(&key)) {
        Ok(c) => c,
        Err(a) => return json_response(a.status, &a.body),
    };
    let flags = match flags(&local).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let a = ofrep::evaluate(&flags, &key, &ctx);
    json_response(a.status, &a.body)
}

async fn evaluate_all(Shared(local): Shared<Arc<Local>>, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = match ofrep::context(&body, None) {
        Ok(c) => c,
        Err(a) => return json_response(a.status, &a.body),
    };
    let flags = match flags(&local).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (body, etag) = ofrep::evaluate_all(&flags, &ctx);
    let tag = HeaderValue::from_str(&etag).expect("an etag is ASCII");
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == etag || v.trim() == "*");
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    let mut r = json_response(200, &body);
    r.headers_mut().insert(header::ETAG, tag);
    r
}

/// `POST /metrics`: `{"product": "notes", "metrics": {"crash_count": 1}}`
/// (`product` may be left out when this endpoint serves one product).
async fn push_metrics(Shared(local): Shared<Arc<Local>>, body: Bytes) -> Response {
    let bad = |m: String| {
        tracing::warn!("POST /metrics refused: {m}");
        json_response(400, &json!({"error": m}))
    };
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return bad(format!(
                "body is not JSON ({e}); send {{\"product\": \"NAME\", \"metrics\": {{\"name\": number}}}}"
            ));
        }
    };
    let product = match doc.get("product").and_then(Value::as_str) {
        Some(p) => p.to_string(),
        None if local.products.len() == 1 => local.products[0].clone(),
        None => return bad(format!("give \"product\": one of {}", local.products.join(", "))),
    };
    if !local.products.contains(&product) {
        return bad(format!(
            "product {product:?} has no target on this endpoint (it serves {})",
            local.products.join(", ")
        ));
    }
    let Some(metrics) = doc.get("metrics") else {
        return bad("give \"metrics\": {\"name\": number, ...}".into());
    };
    match local.hub.push(&product, metrics) {
        Ok(n) => json_response(200, &json!({"product": product, "accepted": n})),
        Err(e) => bad(e),
    }
}

/// `GET /metrics`: the newest sample of each product, as sent to the
/// coordinator.
async fn show_metrics(Shared(local): Shared<Arc<Local>>) -> Response {
    let latest: BTreeMap<String, Value> = local
        .hub
        .latest()
        .into_iter()
        .map(|s| (s.product.clone(), json!({"time_unix_ms": s.time_unix_ms, "metrics": s.metrics})))
        .collect();
    json_response(200, &json!(latest))
}
