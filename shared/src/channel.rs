//! The one place that builds client channels to the coordinator (feature
//! `client`): TLS with the coordinator's CA (and the agent's certificate for
//! mTLS), connect timeout, HTTP/2 keepalive. rustls uses the ring provider
//! only, installed once per process by [`install_crypto`].

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a channel authenticates.
#[derive(Clone)]
pub struct ClientTls {
    /// PEM of the CA the coordinator's certificate chains to.
    pub ca_pem: String,
    /// Client certificate and key, PEM (agents); `None` for operators and
    /// enrollment.
    pub identity: Option<(String, String)>,
}

/// Timeouts and keepalive of a channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    pub connect_timeout: Duration,
    /// Deadline for each call; `None` for long-lived streams.
    pub call_timeout: Option<Duration>,
    /// HTTP/2 PING interval; also sent while idle, so a dead peer is noticed.
    pub keepalive: Duration,
    pub keepalive_timeout: Duration,
}

impl ChannelOptions {
    /// For one-shot calls (rewindctl, enrollment).
    #[must_use]
    pub fn unary() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(10),
            call_timeout: Some(Duration::from_secs(60)),
            keepalive: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }

    /// For the agent's long-lived stream.
    #[must_use]
    pub fn stream(keepalive: Duration) -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(10),
            call_timeout: None,
            keepalive,
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("coordinator URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("coordinator {url}: {message}")]
    Connect { url: String, message: String },
}

/// Installs rustls' ring provider for this process (idempotent).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An endpoint for `url` (`https://host:port`) with TLS and options set.
///
/// # Errors
/// [`ChannelError::Url`] when the URL does not parse or is not https.
pub fn endpoint(url: &str, tls: &ClientTls, opts: ChannelOptions) -> Result<Endpoint, ChannelError> {
    install_crypto();
    let bad = |message: String| ChannelError::Url { url: url.to_string(), message };
    if !url.starts_with("https://") {
        return Err(bad("must start with https:// (the coordinator only speaks TLS)".into()));
    }
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some((cert, key)) = &tls.identity {
        cfg = cfg.identity(Identity::from_pem(cert, key));
    }
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(e.to_string()))?
        .tls_config(cfg)
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(opts.keepalive)
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(t) = opts.call_timeout {
        ep = ep.timeout(t);
    }
    Ok(ep)
}

/// Connects to `url`.
///
/// # Errors
/// [`ChannelError::Url`] for a bad URL; [`ChannelError::Connect`] when the
/// TCP or TLS connection fails (the message carries the cause chain).
pub async fn connect(url: &str, tls: &ClientTls, opts: ChannelOptions) -> Result<Channel, ChannelError> {
    endpoint(url, tls, opts)?
        .connect()
        .await
        .map_err(|e| ChannelError::Connect { url: url.to_string(), message: error_chain(&e) })
}

/// An error and its sources, joined with ": ".
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
