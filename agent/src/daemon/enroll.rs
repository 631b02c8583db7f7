//! `rewind-agent enroll`: generates the agent's TLS key on the endpoint,
//! sends a CSR with the one-time token, and stores the certificate the
//! coordinator signed. The key never leaves the endpoint.

use std::path::Path;

use rcgen::{CertificateParams, DnType, KeyPair};
use rewind_shared::channel::{self, ChannelOptions, ClientTls};
use rewind_shared::fleet::AgentId;
use rewind_shared::wire::{labels_to_wire, v1};

use super::config::AgentConfig;
use super::identity::Identity;
use crate::error::{Error, Result};

/// What enrollment produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolled {
    pub agent_id: String,
    pub coordinator: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Enrolls with the first coordinator that answers.
///
/// # Errors
/// [`Error::BadInput`] when already enrolled, the CA file is missing or the
/// token is refused; [`Error::Failed`] when no coordinator can be reached.
pub fn enroll(cfg: &AgentConfig, state: &Path, token: &str) -> Result<Enrolled> {
    if Identity::exists(state) {
        let id = Identity::load(state).map(|i| i.agent_id.to_string()).unwrap_or_default();
        return Err(Error::BadInput(format!(
            "state {}: already enrolled as {id}; to enroll again, move {} aside first",
            state.display(),
            super::identity::dir(state).display()
        )));
    }
    // The agent's Ed25519 key (agent.key) signs its audit chain and results;
    // the coordinator learns it here, bound to the certificate it issues.
    let audit_public_key = hex::encode(crate::state::State::open(state)?.key().verifying_key().as_bytes());
    let ca_pem =
        std::fs::read_to_string(&cfg.ca).map_err(|e| Error::BadInput(format!("ca {}: {e}", cfg.ca.display())))?;
    let key = KeyPair::generate().map_err(|e| Error::Failed(format!("generating the agent key: {e}")))?;
    let hostname = super::hostname();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, hostname.as_str());
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Error::Failed(format!("building the CSR: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("runtime: {e}")))?;
    let tls = ClientTls { ca_pem: ca_pem.clone(), identity: None };
    let mut last = String::new();
    for url in &cfg.coordinator {
        let req = v1::EnrollRequest {
            token: token.trim().to_string(),
            csr_pem: csr.clone(),
            labels: labels_to_wire(&cfg.labels),
            hostname: hostname.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            audit_public_key: audit_public_key.clone(),
        };
        let outcome = rt.block_on(async {
            let ch = channel::connect(url, &tls, ChannelOptions::unary()).await.map_err(|e| e.to_string())?;
            v1::fleet_client::FleetClient::new(ch).enroll(req).await.map_err(|s| {
                if matches!(
                    s.code(),
                    tonic::Code::Unauthenticated | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                ) {
                    format!("refused:{}", s.message())
                } else {
                    format!("{} ({:?})", s.message(), s.code())
                }
            })
        });
        match outcome {
            Ok(resp) => {
                let r = resp.into_inner();
                let agent_id = AgentId::parse(&r.agent_id)
                    .map_err(|e| Error::Failed(format!("coordinator {url} answered a bad agent id: {e}")))?;
                let identity = Identity {
                    agent_id: agent_id.clone(),
                    key_pem: key.serialize_pem(),
                    cert_pem: r.cert_pem,
                    ca_pem: r.ca_pem,
                };
                identity.save(state, url)?;
                return Ok(Enrolled {
                    agent_id: agent_id.to_string(),
                    coordinator: url.clone(),
                    labels: r.labels.into_iter().collect(),
                });
            }
            Err(m) if m.starts_with("refused:") => {
                return Err(Error::BadInput(format!(
                    "coordinator {url} refused enrollment: {}",
                    &m["refused:".len()..]
                )));
            }
            Err(m) => last = format!("{url}: {m}"),
        }
    }
    Err(Error::Failed(format!("no coordinator could be reached to enroll (last: {last}); nothing was written")))
}
