//! The audit chain: every transformation is an entry holding the BLAKE3 of
//! the previous one and signed with its author's Ed25519 key, so an edited,
//! removed or reordered entry breaks verification. The same format serves
//! agents (their local chain) and, later, the coordinator.
//!
//! Entry hash = BLAKE3("rewind-audit-1\0" ‖ seq u64 BE ‖ len‖time ‖
//! len‖kind ‖ len‖params ‖ prev 32 bytes), lengths u32 BE; the signature is
//! Ed25519 over the 32 hash bytes. `params` is kept as the exact JSON text
//! that was hashed, so no canonical re-encoding is needed.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

const DOMAIN: &[u8] = b"rewind-audit-1\0";

/// The `prev` of the first entry.
pub const GENESIS: Digest = Digest([0; 32]);

/// One entry of an audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// What happened: `plan.start`, `migration.apply`, `snapshot.create`, ...
    pub kind: String,
    /// Parameters as JSON text, exactly as hashed.
    pub params: String,
    pub prev: Digest,
    pub hash: Digest,
    /// Ed25519 signature over `hash`, hex.
    pub signature: String,
}

fn field(h: &mut blake3::Hasher, b: &[u8]) {
    h.update(&u32::try_from(b.len()).expect("audit field fits u32").to_be_bytes());
    h.update(b);
}

/// The hash an entry with these contents must carry.
#[must_use]
pub fn entry_hash(seq: u64, time: &str, kind: &str, params: &str, prev: &Digest) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(&seq.to_be_bytes());
    field(&mut h, time.as_bytes());
    field(&mut h, kind.as_bytes());
    field(&mut h, params.as_bytes());
    h.update(prev.as_bytes());
    Digest(*h.finalize().as_bytes())
}

impl AuditEntry {
    /// Builds and signs the entry that follows `prev` (`None` for the first).
    #[must_use]
    pub fn new_signed(
        prev: Option<&AuditEntry>,
        time: String,
        kind: &str,
        params: String,
        key: &SigningKey,
    ) -> Self {
        let (seq, prev) = prev.map_or((1, GENESIS), |p| (p.seq + 1, p.hash));
        let hash = entry_hash(seq, &time, kind, &params, &prev);
        let signature = hex::encode(key.sign(hash.as_bytes()).to_bytes());
        AuditEntry { seq, time, kind: kind.to_string(), params, prev, hash, signature }
    }
}

/// Where and how a chain fails verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("audit entry {seq}: expected sequence number {expected}: an entry was removed or reordered")]
    Gap { seq: u64, expected: u64 },
    #[error("audit entry {seq}: `prev` does not match the hash of entry {}: an entry was removed, reordered or replaced", .seq - 1)]
    Broken { seq: u64 },
    #[error("audit entry {seq}: contents do not match its hash: the entry was edited")]
    Edited { seq: u64 },
    #[error("audit entry {seq}: signature does not verify with the agent key: the entry was forged or re-signed")]
    BadSignature { seq: u64 },
}

/// Checks a whole chain from its first entry; returns the head hash
/// (`GENESIS` for an empty chain).
///
/// # Errors
/// The first entry that breaks the chain, and how.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    key: &VerifyingKey,
) -> Result<Digest, ChainError> {
    let mut prev = GENESIS;
    let mut expected = 1;
    for e in entries {
        if e.seq != expected {
            return Err(ChainError::Gap { seq: e.seq, expected });
        }
        if e.prev != prev {
            return Err(ChainError::Broken { seq: e.seq });
        }
        if entry_hash(e.seq, &e.time, &e.kind, &e.params, &e.prev) != e.hash {
            return Err(ChainError::Edited { seq: e.seq });
        }
        let sig = hex::decode(&e.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b));
        if !sig.is_some_and(|s| key.verify(e.hash.as_bytes(), &s).is_ok()) {
            return Err(ChainError::BadSignature { seq: e.seq });
        }
        prev = e.hash;
        expected += 1;
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> (SigningKey, Vec<AuditEntry>) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut v: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let e = AuditEntry::new_signed(v.last(), format!("t{i}"), "k", format!("{{\"i\":{i}}}"), &key);
            v.push(e);
        }
        (key, v)
    }

    #[test]
    fn intact_chain_verifies() {
        let (key, v) = chain(4);
        assert_eq!(verify_chain(&v, &key.verifying_key()).unwrap(), v[3].hash);
    }

    #[test]
    fn edits_removals_reorders_and_forgeries_are_detected() {
        let (key, v) = chain(4);
        let vk = key.verifying_key();
        let mut edited = v.clone();
        edited[1].params = "{\"i\":9}".into();
        assert_eq!(verify_chain(&edited, &vk), Err(ChainError::Edited { seq: 2 }));
        let mut removed = v.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed, &vk), Err(ChainError::Gap { seq: 3, expected: 2 }));
        let mut reordered = v.clone();
        reordered.swap(1, 2);
        assert!(verify_chain(&reordered, &vk).is_err());
        let other = SigningKey::from_bytes(&[8; 32]);
        let mut forged = v.clone();
        forged[3] = AuditEntry::new_signed(Some(&v[2]), "t".into(), "k", "{}".into(), &other);
        assert_eq!(verify_chain(&forged, &vk), Err(ChainError::BadSignature { seq: 4 }));
    }
}
