//! The coordinator's web surface, served by axum on the coordinator's own
//! tokio runtime at `web_listen` (plain HTTP; put a TLS proxy in front when
//! it leaves the host):
//!
//! - `/status` — public status page, live over SSE at `/status/events`
//!   ([`status`]);
//! - `/ui` — operator dashboard behind an operator token ([`ui`]);
//! - `/metrics` — Prometheus text ([`metrics`]);
//! - `/healthz` — JSON, 200 once the store answers, 503 otherwise.
//!
//! [`start`] binds before the gRPC server starts (a taken port is reported
//! naming the address and leaves the web surface off) and [`Running::stop`]
//! ends it gracefully: SSE streams close, in-flight requests finish
//! (bounded by [`STOP_TIMEOUT`]).

pub mod html;
pub mod metrics;
pub mod status;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::App;

/// How long stopping waits for in-flight requests.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the handlers.
pub struct Web {
    pub app: Arc<App>,
    /// The newest rendered live fragment of the status page.
    live: watch::Sender<Arc<String>>,
    /// Turns true when the server stops (ends SSE streams).
    stop: watch::Sender<bool>,
    /// Dashboard sessions.
    pub sessions: ui::Sessions,
}

/// The router with every route, for [`start`] and tests.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/status") }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status::page_handler))
        .route("/status/events", get(status::events_handler))
        .route("/ui", get(ui::home))
        .route("/ui/login", get(ui::login_form).post(ui::login))
        .route("/ui/logout", post(ui::logout))
        .route("/ui/action", post(ui::action))
        .with_state(web)
}

/// The web server beside the gRPC server (or nothing, when its address
/// could not be bound).
pub struct Running {
    /// Where it listens; `None` when it is off.
    pub addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Ends SSE streams and the listener, waiting at most [`STOP_TIMEOUT`].
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task
            && tokio::time::timeout(STOP_TIMEOUT, task).await.is_err()
        {
            tracing::warn!("web server did not stop within {STOP_TIMEOUT:?}");
        }
    }
}

/// Starts the web server on `app.config.web_listen`. An address that cannot
/// be bound (in use, not local) is reported loudly and leaves the web
/// surface off: the fleet's gRPC service, which agents depend on, still
/// starts (docs/web.md explains the choice).
pub async fn start(app: Arc<App>) -> Running {
    match bind(app).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rewind-coordinator: {e:#}; the status page, dashboard, /metrics and /healthz are OFF");
            Running { addr: None, stop: watch::channel(false).0, task: None }
        }
    }
}

/// Binds `app.config.web_listen` and serves in the background.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(app: Arc<App>) -> anyhow::Result<Running> {
    let addr = app.config.web_listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "web_listen {addr}: {e}; pick another address with web_listen in coordinator.toml or REWIND_WEB_LISTEN"
        )
    })?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let initial = match status::snapshot(&app).await {
        Ok(s) => status::render_live(&s),
        Err(e) => format!("<div id=\"live\"><p class=\"warn\">{}</p></div>", html::esc(&e.to_string())),
    };
    let (live, _) = watch::channel(Arc::new(initial));
    let web = Arc::new(Web {
        app: Arc::clone(&app),
        live: live.clone(),
        stop: stop.clone(),
        sessions: ui::Sessions::default(),
    });
    tokio::spawn(status::renderer(Arc::clone(&app), live, stop_rx.clone()));
    tokio::spawn(metrics::follow(Arc::clone(&app), stop_rx.clone()));
    tokio::spawn(ui::follow_revocations(Arc::clone(&web), stop_rx.clone()));
    let mut shutdown = stop_rx;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router(web)).with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
        if let Err(e) = served.await {
            tracing::error!("web server: {e}");
        }
    });
    tracing::info!(%addr, "web server listening (status page, dashboard, metrics)");
    eprintln!("rewind-coordinator: status page at http://{addr}/status, dashboard at http://{addr}/ui");
    Ok(Running { addr: Some(addr), stop, task: Some(task) })
}

async fn healthz(State(web): State<Arc<Web>>) -> Response {
    // A real round trip to the store: the same lookup every operator call makes.
    match web.app.store.operator(String::new()).await {
        Ok(_) => axum::Json(serde_json::json!({
            "status": "ok",
            "store": match web.app.config.store { crate::config::StoreKind::Sqlite => "sqlite", crate::config::StoreKind::Postgres => "postgres" },
            "agents_connected": web.app.sessions.count(),
            "version": env!("CARGO_PKG_VERSION"),
            "replica": web.app.cluster.replica,
            "leader": web.app.cluster.is_leader(),
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "unavailable",
                "error": e.to_string(),
                "replica": web.app.cluster.replica,
                "leader": web.app.cluster.is_leader(),
            })),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(web): State<Arc<Web>>) -> Response {
    match metrics::render(&web.app).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// 503 with the reason, for a store that does not answer.
pub(crate) fn unavailable(why: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("the coordinator's store does not answer: {why}\n")).into_response()
}
