//! The one place that builds and runs the coordinator's gRPC server: TLS
//! (client certificates optional at the TLS layer; Fleet.Connect demands
//! one), HTTP/2 keepalive, health, reflection (v1 and v1alpha), a tracing
//! span per call, and graceful shutdown on SIGTERM / SIGINT (or
//! [`request_shutdown`] when embedded).

use std::sync::Arc;
use std::time::Duration;

use rewind_shared::wire::{FILE_DESCRIPTOR_SET, v1};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::App;
use crate::admin::AdminService;
use crate::ca;
use crate::fleet::FleetService;

/// Largest message accepted on Fleet (plans and results stay far below).
pub const FLEET_MAX_MESSAGE: usize = 4 << 20;
/// Largest message accepted on Admin (bundle uploads).
pub const ADMIN_MAX_MESSAGE: usize = 64 << 20;
/// How long streams get to drain after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until SIGTERM / SIGINT, then ends every agent stream, waits for
/// in-flight calls (at most [`DRAIN_TIMEOUT`]) and flushes the store.
///
/// # Errors
/// When the listener cannot be bound, TLS cannot be set up, or the store
/// cannot be flushed.
pub async fn serve(app: Arc<App>, identity: &ca::Identity) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(app.config.listen).await.map_err(|e| {
        anyhow::anyhow!("listen {}: {e}; pick another address with --config / REWIND_LISTEN", app.config.listen)
    })?;
    let local = listener.local_addr()?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
        .client_ca_root(Certificate::from_pem(&app.ca.cert_pem))
        .client_auth_optional(true)
        .timeout(Duration::from_secs(10));
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let fleet = v1::fleet_server::FleetServer::new(FleetService { app: Arc::clone(&app) })
        .max_decoding_message_size(FLEET_MAX_MESSAGE);
    let admin = v1::admin_server::AdminServer::new(AdminService { app: Arc::clone(&app) })
        .max_decoding_message_size(ADMIN_MAX_MESSAGE);
    let comms = v1::comms_server::CommsServer::new(crate::comms_api::CommsService { app: Arc::clone(&app) });
    let router = Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .trace_fn(|req| tracing::info_span!("grpc", path = %req.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(fleet)
        .add_service(admin)
        .add_service(comms);
    // The store is open and migrated by now: report SERVING.
    for name in ["", "rewind.v1.Fleet", "rewind.v1.Admin", "rewind.v1.Comms"] {
        health.set_service_status(name, ServingStatus::Serving).await;
    }
    tracing::info!(%local, "rewind-coordinator listening (gRPC over TLS)");
    eprintln!("rewind-coordinator: listening on {local}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        () = shutdown_signal() => {
            tracing::info!(agents = app.sessions.count(), "shutting down: ending agent streams");
            for name in ["", "rewind.v1.Fleet", "rewind.v1.Admin", "rewind.v1.Comms"] {
                health.set_service_status(name, ServingStatus::NotServing).await;
            }
            app.sessions.close_all();
            let _ = stop_tx.send(());
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(r) => r?,
                Err(_) => tracing::warn!("calls did not finish within {DRAIN_TIMEOUT:?}; exiting anyway"),
            }
        }
    }
    if let Err(e) = crate::audit::checkpoint(&app).await {
        tracing::error!("audit checkpoint at shutdown: {e}");
    }
    app.store.flush().await?;
    eprintln!("rewind-coordinator: stopped");
    Ok(())
}

/// Asks a coordinator running in this process (e.g. `rewindctl demo`'s
/// embedded one) to shut down as on SIGTERM; a no-op when none runs.
pub fn request_shutdown() {
    let _ = shutdown_requested().send(true);
}

fn shutdown_requested() -> &'static tokio::sync::watch::Sender<bool> {
    static STOP: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();
    STOP.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// SIGTERM, SIGINT (Ctrl-C) or [`request_shutdown`].
pub async fn shutdown_signal() {
    let mut asked = shutdown_requested().subscribe();
    let asked = async move {
        let _ = asked.wait_for(|stop| *stop).await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            () = asked => {}
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = asked => {}
        }
    }
}
