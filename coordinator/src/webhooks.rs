//! Webhooks (DESIGN.md §9): every incident and rollout event on the bus is
//! POSTed to each configured `[[webhook]]` whose `events` match, as generic
//! JSON or as a chat message (`{"text": ...}`, Slack / Mattermost style).
//!
//! - The body is signed: `X-Rewind-Signature: sha256=<hex HMAC-SHA256 of
//!   the raw body with the webhook's secret>`; `X-Rewind-Delivery` (the same
//!   id on every attempt, for idempotent receivers), `X-Rewind-Event`,
//!   `X-Rewind-Attempt` and `X-Rewind-Timestamp` (Unix seconds) go with it.
//!   The JSON body carries the delivery id and the event time too, so they
//!   are covered by the signature.
//! - Each attempt has a timeout; a connection error, a timeout, 408, 429 or
//!   a 5xx is retried with exponential backoff and jitter (`backoff_ms`
//!   doubled per attempt, the wait drawn from [half, all] of it, capped at
//!   60 s) up to `max_attempts`; another 4xx is final. Every attempt is in
//!   the delivery log (store), visible with `rewindctl webhooks deliveries`.
//! - One worker per webhook delivers events in bus order, so a chat channel
//!   reads in the order things happened; a failing endpoint delays only its
//!   own later events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::App;
use crate::events::Event;
use crate::store::WebhookAttempt;

/// Events delivered when a webhook names none.
pub const DEFAULT_EVENTS: [&str; 3] = ["incident.*", "rollout.*", "rollback.*"];
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Audit kind of `rewindctl webhooks test`; delivered to the named webhook only.
pub const TEST_EVENT: &str = "webhook.test";

/// Payload shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"delivery", "event", "time", "product", "params", "text"}`.
    #[default]
    Json,
    /// `{"text": "..."}`.
    Chat,
}

fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    10
}

/// One `[[webhook]]` of coordinator.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shown in the delivery log (the URL may hold a secret, so it is not).
    pub name: String,
    /// `http://` or `https://` (checked against the system CA bundle, or `ca_file`).
    pub url: String,
    /// `json` (default) or `chat`.
    #[serde(default)]
    pub format: Format,
    /// File holding the HMAC secret (surrounding whitespace removed).
    pub secret_file: PathBuf,
    /// Event kinds to deliver; `prefix.*` matches a family. Default:
    /// [`DEFAULT_EVENTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Attempts per event, 1-20 (default 5).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt, doubled for each later one (default 1000).
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// Per attempt: connect, send, response status (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// PEM CA certificates for an `https` URL (default: the system bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl WebhookConfig {
    /// Whether this webhook takes events of `kind`.
    #[must_use]
    pub fn wants(&self, kind: &str) -> bool {
        if self.events.is_empty() {
            DEFAULT_EVENTS.iter().any(|p| matches(p, kind))
        } else {
            self.events.iter().any(|p| matches(p, kind))
        }
    }
}

fn matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Checks every `[[webhook]]`: names unique, URLs http(s), bounds.
///
/// # Errors
/// The first problem, naming the webhook and the key.
pub fn check_config(hooks: &[WebhookConfig]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let at = format!("webhook[{i}] ({})", h.name);
        if h.name.is_empty() || h.name.len() > 64 || h.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("webhook[{i}].name: 1-64 characters, no spaces"));
        }
        if !names.insert(&h.name) {
            return Err(format!("{at}.name: two webhooks are named {:?}; names must be unique", h.name));
        }
        let uri: Uri = h.url.parse().map_err(|e| format!("{at}.url: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("{at}.url: expected http://HOST/... or https://HOST/..."));
        }
        if !(1..=20).contains(&h.max_attempts) {
            return Err(format!("{at}.max_attempts: 1 to 20"));
        }
        if h.timeout_seconds == 0 || h.timeout_seconds > 300 {
            return Err(format!("{at}.timeout_seconds: 1 to 300"));
        }
        if h.backoff_ms > 60_000 {
            return Err(format!("{at}.backoff_ms: at most 60000"));
        }
        for p in &h.events {
            if p.is_empty() || p[..p.len() - 1].contains('*') {
                return Err(format!(
                    "{at}.events: {p:?}: an event kind, or a prefix ending in `*` (e.g. \"incident.*\")"
                ));
            }
        }
    }
    Ok(())
}

/// HMAC-SHA256 of `body` with `secret`, as `sha256=<hex>`.
#[must_use]
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

/// The wait after failed attempt `attempt` (1-based): `base·2^(attempt-1)`,
/// capped at [`MAX_BACKOFF`], drawn uniformly from [half, all] of it.
#[must_use]
pub fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let full = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20)).min(MAX_BACKOFF.as_millis() as u64);
    let half = full / 2;
    Duration::from_millis(half + rand::random_range(0..=full - half))
}

/// The one-line chat text of an event.
#[must_use]
pub fn chat_text(ev: &Event) -> String {
    let p = &ev.params;
    if let Some(text) = p.get("text").and_then(Value::as_str) {
        return text.trim_end().to_string();
    }
    let s = |k: &str| p.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let mut line = format!("[rewind] {}", ev.kind);
    if let Some(product) = s("product") {
        line.push_str(&format!(": {product}"));
        if let Some(v) = s("version").or_else(|| s("release")) {
            line.push_str(&format!(" {v}"));
        }
    }
    if let Some(w) = s("wave") {
        line.push_str(&format!(", wave {w}"));
    }
    if let Some(r) = s("reason") {
        line.push_str(&format!(": {r}"));
    }
    if let Some(by) = s("by").or_else(|| s("actor")) {
        line.push_str(&format!(" (by {by})"));
    }
    line
}

/// The exact body sent for `ev` in `format`.
#[must_use]
pub fn body(format: Format, delivery: &str, ev: &Event) -> Vec<u8> {
    let v = match format {
        Format::Chat => json!({"text": chat_text(ev)}),
        Format::Json => json!({
            "delivery": delivery, "event": ev.kind, "time": ev.time, "product": ev.product,
            "params": ev.params, "text": chat_text(ev),
        }),
    };
    serde_json::to_vec(&v).expect("JSON serializes")
}

/// A configured webhook, ready to send.
struct Hook {
    config: WebhookConfig,
    uri: Uri,
    secret: Vec<u8>,
    tls: Option<tokio_rustls::TlsConnector>,
}

fn tls_connector(ca_file: Option<&PathBuf>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = ca_file.cloned().unwrap_or_else(|| {
        std::env::var_os("SSL_CERT_FILE")
            .map_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"), PathBuf::from)
    });
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| anyhow::anyhow!("{}: {e}; set ca_file to a PEM bundle", path.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    anyhow::ensure!(added > 0, "{}: no CA certificate in it; set ca_file to a PEM bundle", path.display());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Hook {
    fn load(config: &WebhookConfig) -> anyhow::Result<Hook> {
        let name = &config.name;
        let text = std::fs::read_to_string(&config.secret_file)
            .map_err(|e| anyhow::anyhow!("webhook {name}: secret_file {}: {e}", config.secret_file.display()))?;
        let secret = text.trim().as_bytes().to_vec();
        anyhow::ensure!(
            !secret.is_empty(),
            "webhook {name}: secret_file {} is empty; put a random secret in it (e.g. openssl rand -hex 32)",
            config.secret_file.display()
        );
        let uri: Uri = config.url.parse().map_err(|e| anyhow::anyhow!("webhook {name}: url: {e}"))?;
        let tls = if uri.scheme_str() == Some("https") {
            Some(tls_connector(config.ca_file.as_ref()).map_err(|e| anyhow::anyhow!("webhook {name}: {e}"))?)
        } else {
            None
        };
        Ok(Hook { config: config.clone(), uri, secret, tls })
    }

    /// One POST; the response status, or what went wrong.
    async fn post(&self, headers: &[(&str, String)], body: Vec<u8>) -> Result<u16, String> {
        let host = self.uri.host().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_string();
        let tls = self.tls.clone();
        let port = self.uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let authority = self.uri.authority().map_or(host.clone(), |a| a.as_str().to_string());
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("rewind-coordinator/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| format!("request: {e}"))?;
        match tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host}: not a TLS server name: {e}"))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))?;
                send(hyper_util::rt::TokioIo::new(stream), req).await
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await,
        }
    }
}

async fn send<IO>(io: IO, req: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    // Read (and drop) the response so the connection ends cleanly.
    let _ = resp.into_body().collect().await;
    drop(sender);
    let _ = conn.await;
    Ok(status)
}

fn retryable(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => s == 408 || s == 429 || s >= 500,
    }
}

/// Delivers one event with retries, logging every attempt.
async fn deliver(app: &App, hook: &Hook, delivery: String, ev: &Event) {
    let c = &hook.config;
    let body = body(c.format, &delivery, ev);
    let sig = signature(&hook.secret, &body);
    for attempt in 1..=c.max_attempts {
        let time = crate::now();
        let headers = [
            ("x-rewind-signature", sig.clone()),
            ("x-rewind-delivery", delivery.clone()),
            ("x-rewind-event", ev.kind.clone()),
            ("x-rewind-attempt", attempt.to_string()),
            ("x-rewind-timestamp", crate::now_unix().to_string()),
        ];
        let start = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(c.timeout_seconds), hook.post(&headers, body.clone()))
            .await
            .unwrap_or_else(|_| Err(format!("no response within {} s", c.timeout_seconds)));
        let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match result {
            Ok(s) if (200..300).contains(&s) => (Some(s), None),
            Ok(s) => (Some(s), Some(format!("HTTP {s}"))),
            Err(e) => (None, Some(e)),
        };
        let done = error.is_none();
        let retry = !done && attempt < c.max_attempts && retryable(status);
        let wait = retry.then(|| backoff(c.backoff_ms, attempt));
        let outcome = if done {
            "delivered"
        } else if retry {
            "retrying"
        } else {
            "failed"
        };
        let log = WebhookAttempt {
            delivery: delivery.clone(),
            webhook: c.name.clone(),
            event: ev.kind.clone(),
            attempt,
            status,
            error: error.clone(),
            outcome: outcome.into(),
            duration_ms,
            retry_in_ms: wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
            time,
        };
        if let Err(e) = app.store.add_webhook_attempt(log).await {
            tracing::error!(webhook = %c.name, %delivery, "delivery log append failed: {e}");
        }
        match (done, wait) {
            (true, _) => {
                tracing::info!(webhook = %c.name, %delivery, event = %ev.kind, attempt, "webhook delivered");
                return;
            }
            (false, Some(w)) => {
                tracing::warn!(webhook = %c.name, %delivery, attempt, "webhook attempt failed ({}); retrying in {w:?}", error.unwrap_or_default());
                tokio::time::sleep(w).await;
            }
            (false, None) => {
                tracing::error!(webhook = %c.name, %delivery, event = %ev.kind, attempt, "webhook delivery failed for good: {}", error.unwrap_or_default());
                return;
            }
        }
    }
}

/// Loads every webhook's secret and starts one delivery worker per webhook
/// and a router that follows the event bus. Call before the first event.
///
/// # Errors
/// A secret file that cannot be read or is empty, an unusable CA file.
pub fn spawn(app: &Arc<App>) -> anyhow::Result<()> {
    let hooks = app.config.webhooks.iter().map(Hook::load).collect::<anyhow::Result<Vec<_>>>()?;
    if hooks.is_empty() {
        return Ok(());
    }
    let mut workers = Vec::new();
    for hook in hooks {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Event)>();
        let name = hook.config.name.clone();
        let app = Arc::clone(app);
        tokio::spawn(async move {
            while let Some((delivery, ev)) = rx.recv().await {
                deliver(&app, &hook, delivery, &ev).await;
            }
        });
        workers.push((name, tx));
    }
    let config = app.config.webhooks.clone();
    let mut bus = app.events.subscribe();
    tokio::spawn(async move {
        loop {
            let ev = match bus.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!(missed = n, "webhooks fell behind the event bus; {n} events were not delivered");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            for ((name, tx), c) in workers.iter().zip(&config) {
                let take = if ev.kind == TEST_EVENT {
                    ev.params.get("webhook").and_then(Value::as_str) == Some(name.as_str())
                } else {
                    c.wants(&ev.kind)
                };
                if take {
                    let delivery = match ev.params.get("delivery").and_then(Value::as_str) {
                        Some(d) if ev.kind == TEST_EVENT => d.to_string(),
                        _ => crate::random_id("whd", 8),
                    };
                    let _ = tx.send((delivery, ev.clone()));
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempt in 1..=4 {
            let full = 100u64 << (attempt - 1);
            for _ in 0..50 {
                let w = backoff(100, attempt).as_millis() as u64;
                assert!((full / 2..=full).contains(&w), "attempt {attempt}: {w} ms");
            }
        }
        assert!(backoff(60_000, 20) <= MAX_BACKOFF);
    }

    #[test]
    fn event_filters_and_config_checks() {
        let mut h: WebhookConfig = toml::from_str(
            "name = \"chat\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"s\"\nformat = \"chat\"",
        )
        .unwrap();
        assert!(h.wants("incident.incident_started") && h.wants("rollout.halted") && !h.wants("plan.sent"));
        h.events = vec!["rollout.halted".into()];
        assert!(h.wants("rollout.halted") && !h.wants("rollout.done"));
        assert!(check_config(std::slice::from_ref(&h)).is_ok());
        let e = check_config(&[h.clone(), h.clone()]).unwrap_err();
        assert!(e.contains("unique"), "{e}");
        let bad = WebhookConfig { url: "ftp://x/".into(), ..h.clone() };
        assert!(check_config(&[bad]).unwrap_err().contains("url"));
        let e = toml::from_str::<WebhookConfig>("name = \"a\"\nurl = \"http://x/\"\nsecret_file = \"s\"\nsecert = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("secert"), "{e}");
    }

    #[test]
    fn chat_text_of_a_rollout_event_and_of_an_incident() {
        let ev = Event {
            seq: 1,
            kind: "rollout.halted".into(),
            time: "t".into(),
            product: Some("notes".into()),
            params: json!({"product": "notes", "version": "2026.11.0", "wave": "canary", "reason": "crash rate"}),
        };
        assert_eq!(chat_text(&ev), "[rewind] rollout.halted: notes 2026.11.0, wave canary: crash rate");
        let inc = Event { params: json!({"text": "Rolling back\n\nBody\n"}), ..ev };
        assert_eq!(String::from_utf8(body(Format::Chat, "d", &inc)).unwrap(), r#"{"text":"Rolling back\n\nBody"}"#);
    }
}
