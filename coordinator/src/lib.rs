//! rewind-coordinator: enrolls agents (its own CA signs their client
//! certificates), keeps one mTLS stream per agent, and serves the Admin API
//! that rewindctl talks to. Data flow: [`server`] builds the gRPC server;
//! [`fleet`] and [`admin`] are its thin services; [`store`] persists tokens
//! and agents; [`ca`] issues and checks certificates; [`results`] verifies
//! and stores agent results.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod ca;
pub mod comms;
pub mod comms_api;
pub mod config;
pub mod error;
pub mod events;
pub mod files;
pub mod flags;
pub mod fleet;
pub mod lineage;
pub mod results;
pub mod rollout_engine;
pub mod rollouts;
pub mod server;
pub mod store;
pub mod web;
pub mod webhooks;

use std::sync::Arc;

use config::{Config, StoreKind};
use store::Store;

/// Everything the services share.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub ca: ca::Ca,
    pub sessions: fleet::Sessions,
    /// Signs the coordinator's audit log.
    pub key: ed25519_dalek::SigningKey,
    /// Every audit entry, published as it is written (status page, webhooks).
    pub events: events::Events,
    /// Batches the agents' results into the store.
    pub ingestor: results::Ingestor,
}

/// Current time, RFC 3339 UTC with milliseconds.
#[must_use]
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `<prefix>_<hex of n random bytes>` (`-` for agent ids, which are names).
#[must_use]
pub fn random_id(prefix: &str, n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source works");
    let sep = if prefix == "agt" { '-' } else { '_' };
    format!("{prefix}{sep}{}", hex::encode(b))
}

/// Opens the state directory (CA, admin token, store) and serves until a
/// shutdown signal.
///
/// # Errors
/// Anything that keeps the coordinator from starting, with what to do.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = config.state.clone();
    std::fs::create_dir_all(&state).map_err(|e| anyhow::anyhow!("state directory {}: {e}", state.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700));
    }
    if let Some(trust) = &config.trust {
        let text = files::read_text(trust)?;
        rewind_shared::trust::TrustFile::parse(&text).map_err(|e| anyhow::anyhow!("trust {}: {e}", trust.display()))?;
    }
    let store: Arc<dyn Store> = match config.store {
        StoreKind::Sqlite => {
            let path =
                config.store_url.as_deref().map_or_else(|| state.join("coordinator.db"), std::path::PathBuf::from);
            Arc::new(store::sqlite::SqliteStore::open(&path).await?)
        }
        StoreKind::Postgres => {
            let url =
                config.store_url.as_deref().ok_or_else(|| anyhow::anyhow!("store = \"postgres\" needs store_url"))?;
            Arc::new(store::postgres::PostgresStore::open(url).await?)
        }
    };
    let own_ca = config.ca_cert.as_deref().zip(config.ca_key.as_deref());
    let ca = ca::Ca::load_or_create(&state, own_ca)?;
    let identity = ca.server_identity(&config.hostnames)?;
    let token_path = state.join("admin.token");
    let admin_token = if token_path.exists() {
        files::read_text(&token_path)?.trim().to_string()
    } else {
        let t = random_id("rwa", 24);
        files::write_private(&token_path, &format!("{t}\n"))?;
        eprintln!(
            "rewind-coordinator: wrote the admin token to {} and the CA to {}",
            token_path.display(),
            state.join("ca.pem").display()
        );
        t
    };
    store.put_operator(store::token_hash(&admin_token), "admin".into(), auth::Role::Admin).await?;
    let key = audit::load_or_create_key(&state)?;
    let app = Arc::new(App {
        config,
        store,
        ca,
        sessions: fleet::Sessions::default(),
        key,
        events: events::Events::default(),
        ingestor: results::Ingestor::default(),
    });
    // Subscribed before the first event.
    webhooks::spawn(&app)?;
    comms::spawn(&app);
    audit::record(
        &app,
        "coordinator.start",
        serde_json::json!({"listen": app.config.listen.to_string(), "version": env!("CARGO_PKG_VERSION")}),
    )
    .await;
    audit::checkpoint(&app).await?;
    tokio::spawn(rollout_engine::run(Arc::clone(&app)));
    let web = web::start(Arc::clone(&app)).await;
    let served = server::serve(app, &identity).await;
    web.stop().await;
    served
}
