//! The coordinator's certificate authority: created in the state directory on
//! first start (or brought by the operator), it signs the coordinator's own
//! TLS certificate and every enrolled agent's client certificate. An agent's
//! id travels in a URI SAN `rewind://agent/<id>`; the store pins that id to the
//! certificate's fingerprint, so a certificate is only as good as the store
//! says it is.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rewind_shared::fleet::AgentId;
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::files::{read_text, write_private, write_public};

/// How long an agent certificate is valid.
const AGENT_CERT_DAYS: i64 = 365;

/// A loaded CA: its certificate (PEM) and signing key.
pub struct Ca {
    pub cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// Loads `<state>/ca.pem` + `<state>/ca.key`, or the operator's own CA
    /// files, or creates a new CA in the state directory.
    ///
    /// # Errors
    /// When the files cannot be read or written, or do not hold a CA
    /// certificate and its key.
    pub fn load_or_create(state: &Path, own: Option<(&Path, &Path)>) -> Result<Self> {
        let (cert_path, key_path) = match own {
            Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
            None => (state.join("ca.pem"), state.join("ca.key")),
        };
        if own.is_none() && !cert_path.exists() && !key_path.exists() {
            let key = KeyPair::generate().map_err(|e| Error::Ca(format!("generating the CA key: {e}")))?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Rewind coordinator CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
            params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
            let cert = params.self_signed(&key).map_err(|e| Error::Ca(format!("self-signing the CA: {e}")))?;
            write_private(&key_path, &key.serialize_pem())?;
            write_public(&cert_path, &cert.pem())?;
            tracing::info!(cert = %cert_path.display(), "created a new CA");
        }
        let cert_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| Error::Ca(format!("{}: not a PEM private key: {e}", key_path.display())))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| {
            Error::Ca(format!("{}: not a PEM CA certificate matching {}: {e}", cert_path.display(), key_path.display()))
        })?;
        if own.is_some() {
            // Agents and tools always find the CA at <state>/ca.pem.
            write_public(&state.join("ca.pem"), &cert_pem)?;
        }
        Ok(Ca { cert_pem, key_pem, issuer })
    }

    /// The CA as replicas share it through the store: certificate and key.
    #[must_use]
    pub fn shared_bytes(&self) -> Vec<u8> {
        serde_json::json!({"cert": self.cert_pem, "key": self.key_pem}).to_string().into_bytes()
    }

    /// `(cert_pem, key_pem)` from [`Ca::shared_bytes`].
    ///
    /// # Errors
    /// When the bytes are not what `shared_bytes` writes.
    pub fn split_shared(bytes: &[u8]) -> Result<(String, String)> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Ca(format!("the CA shared in the store does not parse: {e}")))?;
        match (v["cert"].as_str(), v["key"].as_str()) {
            (Some(c), Some(k)) => Ok((c.to_string(), k.to_string())),
            _ => Err(Error::Ca("the CA shared in the store lacks its certificate or key".into())),
        }
    }

    /// A fresh TLS server certificate for `hostnames` (DNS names or IP
    /// addresses), signed by this CA.
    ///
    /// # Errors
    /// When a hostname is not a valid DNS name or address.
    pub fn server_identity(&self, hostnames: &[String]) -> Result<Identity> {
        let key = KeyPair::generate().map_err(|e| Error::Ca(format!("generating the server key: {e}")))?;
        let mut params = CertificateParams::new(hostnames.to_vec())
            .map_err(|e| Error::Ca(format!("hostnames {hostnames:?}: {e}")))?;
        params.distinguished_name.push(DnType::CommonName, "Rewind coordinator");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(AGENT_CERT_DAYS);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::Ca(format!("signing the server certificate: {e}")))?;
        Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a client certificate for `agent` with the CSR's public key. The
    /// CSR's own subject and SANs are ignored: the coordinator decides who the
    /// certificate names.
    ///
    /// # Errors
    /// [`Error::BadCsr`] when the CSR is not a valid PEM PKCS#10 request with
    /// a valid self-signature.
    pub fn sign_agent(&self, csr_pem: &str, agent: &AgentId) -> Result<String> {
        if csr_pem.len() > 16 * 1024 {
            return Err(Error::BadCsr("larger than 16 KiB".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| Error::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, agent.as_str());
        params.subject_alt_names =
            vec![SanType::URI(agent.uri().try_into().map_err(|e| Error::Ca(format!("agent URI: {e}")))?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(AGENT_CERT_DAYS);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| Error::Ca(format!("signing for {agent}: {e}")))?;
        Ok(cert.pem())
    }
}

/// The fingerprint the store pins: BLAKE3 of the certificate's DER, hex.
#[must_use]
pub fn fingerprint(der: &[u8]) -> String {
    blake3::hash(der).to_hex().to_string()
}

/// The agent id in a client certificate's `rewind://agent/<id>` URI SAN.
///
/// # Errors
/// [`Error::Unauthenticated`] when the DER does not parse or carries no such
/// SAN.
pub fn agent_id_of(der: &[u8]) -> Result<AgentId> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::Unauthenticated(format!("client certificate does not parse: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Unauthenticated(format!("client certificate SAN: {e}")))?
        .ok_or_else(|| {
            Error::Unauthenticated(
                "client certificate has no subject alternative name; enroll with rewind-agent enroll".into(),
            )
        })?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(u) => AgentId::from_uri(u).ok(),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Unauthenticated(
                "client certificate names no rewind://agent/<id>; enroll with rewind-agent enroll".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_agent_csrs_with_the_id_in_a_uri_san() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), None).unwrap();
        let again = Ca::load_or_create(dir.path(), None).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem, "the CA is created once");
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["evil.example".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let id = AgentId::parse("agt-0011").unwrap();
        let pem = ca.sign_agent(&csr, &id).unwrap();
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents;
        assert_eq!(agent_id_of(&der).unwrap(), id);
        assert!(matches!(ca.sign_agent("garbage", &id), Err(Error::BadCsr(_))));
        let server = ca.server_identity(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let der = x509_parser::pem::parse_x509_pem(server.cert_pem.as_bytes()).unwrap().1.contents;
        assert!(agent_id_of(&der).is_err(), "a server certificate names no agent");
    }
}
