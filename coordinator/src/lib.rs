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
pub mod cluster;
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
#[cfg(test)]
pub(crate) mod testing;
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
    /// How long plans took on the endpoints (the restore window of messages).
    pub timings: comms::Timings,
    /// This replica, the leader lease and the other replicas' agents.
    pub cluster: cluster::Cluster,
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
    // The CA, the admin token and the audit key are shared by every replica
    // through the store: the first replica to start makes them, the others
    // take them (and write ca.pem and admin.token into their own state).
    let ca = shared_ca(store.as_ref(), &state, &config).await?;
    let identity = ca.server_identity(&config.hostnames)?;
    let token_path = state.join("admin.token");
    let local_token =
        if token_path.exists() { files::read_text(&token_path)?.trim().to_string() } else { random_id("rwa", 24) };
    let admin_token = String::from_utf8(store.share("admin.token".into(), local_token.clone().into_bytes()).await?)
        .map_err(|e| anyhow::anyhow!("the shared admin token in the store is not text: {e}"))?;
    if !token_path.exists() || admin_token != local_token {
        files::write_private(&token_path, &format!("{admin_token}\n"))?;
        eprintln!(
            "rewind-coordinator: wrote the admin token to {} and the CA to {}",
            token_path.display(),
            state.join("ca.pem").display()
        );
    }
    store.put_operator(store::token_hash(&admin_token), "admin".into(), auth::Role::Admin).await?;
    let local_key = audit::load_or_create_key(&state)?;
    let shared_key = store.share("coordinator.key".into(), local_key.to_bytes().to_vec()).await?;
    let key = match <[u8; 32]>::try_from(shared_key.as_slice()) {
        Ok(seed) if seed == local_key.to_bytes() => local_key,
        Ok(seed) => {
            // Another replica's key signs the shared audit chain: keep it here too.
            let k = ed25519_dalek::SigningKey::from_bytes(&seed);
            audit::write_key(&state, &k)?;
            k
        }
        Err(_) => anyhow::bail!("the shared coordinator key in the store is not 32 bytes; restore it from a backup"),
    };
    let cluster = if config.is_replicated() {
        // The replica's name survives restarts (its state directory).
        let id_path = state.join("replica.id");
        let replica = match files::read_text(&id_path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let id = random_id("rpl", 8);
                files::write_private(&id_path, &format!("{id}\n"))?;
                id
            }
        };
        cluster::Cluster::new(replica, config.advertised_url(), cluster::Leadership::Follower { leader: None })
    } else {
        cluster::Cluster::default()
    };
    let app = Arc::new(App {
        config,
        store,
        ca,
        sessions: fleet::Sessions::default(),
        key,
        events: events::Events::default(),
        ingestor: results::Ingestor::default(),
        timings: comms::Timings::default(),
        cluster,
    });
    cluster::spawn(&app).await;
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

/// The CA every replica shares: the one in the store, else this state
/// directory's (or the operator's own, `ca_cert` / `ca_key`), which then
/// becomes the shared one. An operator's CA that differs from the store's
/// is an error (two CAs would split the fleet).
async fn shared_ca(store: &dyn Store, state: &std::path::Path, config: &Config) -> anyhow::Result<ca::Ca> {
    let own = config.ca_cert.as_deref().zip(config.ca_key.as_deref());
    if let Some(bytes) = store.shared("ca".into()).await? {
        let (cert_pem, key_pem) = ca::Ca::split_shared(&bytes)?;
        if let Some((cert, _)) = own
            && files::read_text(cert)?.trim() != cert_pem.trim()
        {
            anyhow::bail!(
                "ca_cert {} is not the CA the other replicas use (the one in the store): use the same files on every replica",
                cert.display()
            );
        }
        if own.is_none() {
            files::write_private(&state.join("ca.key"), &key_pem)?;
            files::write_public(&state.join("ca.pem"), &cert_pem)?;
        }
        return Ok(ca::Ca::load_or_create(state, own)?);
    }
    let local = ca::Ca::load_or_create(state, own)?;
    let stored = store.share("ca".into(), local.shared_bytes()).await?;
    if stored == local.shared_bytes() {
        return Ok(local);
    }
    // Another replica stored its CA first: use that one.
    let (cert_pem, key_pem) = ca::Ca::split_shared(&stored)?;
    files::write_private(&state.join("ca.key"), &key_pem)?;
    files::write_public(&state.join("ca.pem"), &cert_pem)?;
    Ok(ca::Ca::load_or_create(state, None)?)
}
