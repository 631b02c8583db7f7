//! The audit chain: every transformation is an entry holding the BLAKE3 of
//! the previous one and signed with its author's Ed25519 key, so an edited,
//! removed or reordered entry breaks verification. The same format serves
//! agents (their local chain) and the coordinator, whose log also carries
//! [`Checkpoint`]s signed by its key; [`write_export`] / [`verify_export`]
//! are the JSONL format auditors check with public keys only.
//!
//! Entry hash = BLAKE3("rewind-audit-1\0" ‖ seq u64 BE ‖ len‖time ‖
//! len‖kind ‖ len‖params ‖ prev 32 bytes), lengths u32 BE; the signature is
//! Ed25519 over the 32 hash bytes. `params` is kept as the exact JSON text
//! that was hashed, so no canonical re-encoding is needed.
//!
//! Agents sign every entry. The coordinator appends entries in batches
//! (thousands of results a second) and signs the last entry of each batch
//! only ([`seal`]): an entry with an empty `signature` is covered by the
//! next signed entry of its chain, whose hash commits to it through the
//! `prev` links — editing it breaks that signature just as editing a signed
//! entry breaks its own. The last entry of a chain is always signed.

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
    pub fn new_signed(prev: Option<&AuditEntry>, time: String, kind: &str, params: String, key: &SigningKey) -> Self {
        let mut e = Self::new_unsigned(prev, time, kind, params);
        e.sign(key);
        e
    }

    /// Builds the entry that follows `prev`, without a signature: a later
    /// signed entry must cover it ([`seal`]).
    #[must_use]
    pub fn new_unsigned(prev: Option<&AuditEntry>, time: String, kind: &str, params: String) -> Self {
        let (seq, prev) = prev.map_or((1, GENESIS), |p| (p.seq + 1, p.hash));
        let hash = entry_hash(seq, &time, kind, &params, &prev);
        AuditEntry { seq, time, kind: kind.to_string(), params, prev, hash, signature: String::new() }
    }

    /// Signs the entry's hash with `key`.
    pub fn sign(&mut self, key: &SigningKey) {
        self.signature = hex::encode(key.sign(self.hash.as_bytes()).to_bytes());
    }
}

/// The entries that follow `head`, one per `(kind, params)`, each stamped
/// by `time`, with only the last one signed: it seals the batch (see the
/// module docs). Empty for no entries.
pub fn seal(
    head: Option<&AuditEntry>,
    entries: impl IntoIterator<Item = (String, String)>,
    mut time: impl FnMut() -> String,
    key: &SigningKey,
) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    for (kind, params) in entries {
        let e = AuditEntry::new_unsigned(out.last().or(head), time(), &kind, params);
        out.push(e);
    }
    if let Some(last) = out.last_mut() {
        last.sign(key);
    }
    out
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
    #[error(
        "audit entry {seq}: not signed and no signed entry follows it: entries were appended or edited after the last signature"
    )]
    Unsealed { seq: u64 },
}

/// Checks a whole chain from its first entry; returns the head hash
/// (`GENESIS` for an empty chain). Every signature present must verify with
/// `key`, and every unsigned entry must be followed by a signed one.
///
/// # Errors
/// The first entry that breaks the chain, and how.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    key: &VerifyingKey,
) -> Result<Digest, ChainError> {
    let mut prev = GENESIS;
    let mut unsealed = None;
    for (expected, e) in (1..).zip(entries) {
        if e.seq != expected {
            return Err(ChainError::Gap { seq: e.seq, expected });
        }
        if e.prev != prev {
            return Err(ChainError::Broken { seq: e.seq });
        }
        if entry_hash(e.seq, &e.time, &e.kind, &e.params, &e.prev) != e.hash {
            return Err(ChainError::Edited { seq: e.seq });
        }
        prev = e.hash;
        if e.signature.is_empty() {
            unsealed = unsealed.or(Some(e.seq));
            continue;
        }
        unsealed = None;
        let sig = hex::decode(&e.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b));
        if sig.is_none_or(|s| key.verify(e.hash.as_bytes(), &s).is_err()) {
            return Err(ChainError::BadSignature { seq: e.seq });
        }
    }
    match unsealed {
        Some(seq) => Err(ChainError::Unsealed { seq }),
        None => Ok(prev),
    }
}

/// Domain of a checkpoint's signed message.
const CHECKPOINT_DOMAIN: &[u8] = b"rewind-checkpoint-1\0";

/// A signed statement by the coordinator (DESIGN.md §10): "this chain had
/// `seq` entries with head `head` at `time`". Published or handed to
/// auditors, checkpoints make a rewrite of the chain before them
/// detectable even by someone holding the chain's signing key.
///
/// Signature: Ed25519 over `"rewind-checkpoint-1\0" ‖ seq u64 BE ‖ head 32
/// bytes ‖ len‖time` (u32 BE length), hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub head: Digest,
    /// RFC 3339, UTC.
    pub time: String,
    /// [`crate::trust::key_id`] of the signing key.
    pub keyid: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

fn checkpoint_message(seq: u64, head: &Digest, time: &str) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head.as_bytes());
    m.extend_from_slice(&u32::try_from(time.len()).expect("checkpoint time fits u32").to_be_bytes());
    m.extend_from_slice(time.as_bytes());
    m
}

impl Checkpoint {
    /// Signs the chain position `(seq, head)` at `time`.
    #[must_use]
    pub fn sign(seq: u64, head: Digest, time: String, key: &SigningKey) -> Self {
        let signature = hex::encode(key.sign(&checkpoint_message(seq, &head, &time)).to_bytes());
        Checkpoint { seq, head, time, keyid: crate::trust::key_id(&key.verifying_key()), signature }
    }

    /// Signs the head of `entries` (which must not be empty).
    #[must_use]
    pub fn of(entries: &[AuditEntry], time: String, key: &SigningKey) -> Option<Self> {
        entries.last().map(|e| Self::sign(e.seq, e.hash, time, key))
    }

    /// Whether the signature verifies with `key`.
    #[must_use]
    pub fn verifies(&self, key: &VerifyingKey) -> bool {
        hex::decode(&self.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()).is_some_and(|b| {
            key.verify(&checkpoint_message(self.seq, &self.head, &self.time), &Signature::from_bytes(&b)).is_ok()
        })
    }
}

/// Why a chain does not agree with its checkpoints, or an export does not
/// verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("checkpoint at seq {seq}: signature does not verify with the coordinator key: forged or damaged")]
    BadSignature { seq: u64 },
    #[error(
        "checkpoint at seq {seq}: the chain has only {len} entries: entries were removed after the checkpoint was signed"
    )]
    Truncated { seq: u64, len: u64 },
    #[error(
        "checkpoint at seq {seq}: the chain's entry {seq} is {found}, the checkpoint signed {signed}: the chain was rewritten up to that point"
    )]
    Mismatch { seq: u64, signed: Digest, found: Digest },
    #[error("export line {line}: {message}")]
    Export { line: usize, message: String },
}

/// [`verify_chain`], then every checkpoint: signed by `checkpoint_key`,
/// within the chain, and naming the hash the chain has at its seq. Returns
/// the head.
///
/// # Errors
/// The first broken entry or disagreeing checkpoint.
pub fn verify_chain_with_checkpoints(
    entries: &[AuditEntry],
    key: &VerifyingKey,
    checkpoints: &[Checkpoint],
    checkpoint_key: &VerifyingKey,
) -> Result<Digest, CheckpointError> {
    let head = verify_chain(entries, key)?;
    for c in checkpoints {
        check_checkpoint(entries, c, checkpoint_key)?;
    }
    Ok(head)
}

fn check_checkpoint(entries: &[AuditEntry], c: &Checkpoint, key: &VerifyingKey) -> Result<(), CheckpointError> {
    if !c.verifies(key) {
        return Err(CheckpointError::BadSignature { seq: c.seq });
    }
    let len = entries.len() as u64;
    if c.seq == 0 || c.seq > len {
        return Err(CheckpointError::Truncated { seq: c.seq, len });
    }
    let found = entries[usize::try_from(c.seq - 1).expect("seq fits usize")].hash;
    if found != c.head {
        return Err(CheckpointError::Mismatch { seq: c.seq, signed: c.head, found });
    }
    Ok(())
}

/// One line of an audit export (JSONL): every entry of a chain in order,
/// then that chain's checkpoints. `chain` is the key id of the key that
/// signs the chain's entries (the coordinator's or an agent's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "lowercase")]
pub enum ExportLine {
    Entry {
        chain: String,
        #[serde(flatten)]
        entry: AuditEntry,
    },
    Checkpoint {
        chain: String,
        #[serde(flatten)]
        checkpoint: Checkpoint,
    },
}

/// Appends one chain and its checkpoints to an export.
///
/// # Errors
/// When `out` cannot be written.
pub fn write_export(
    out: &mut impl std::io::Write,
    chain_key: &VerifyingKey,
    entries: &[AuditEntry],
    checkpoints: &[Checkpoint],
) -> std::io::Result<()> {
    let chain = crate::trust::key_id(chain_key);
    for entry in entries {
        let line = ExportLine::Entry { chain: chain.clone(), entry: entry.clone() };
        writeln!(out, "{}", serde_json::to_string(&line).expect("export lines serialise"))?;
    }
    for checkpoint in checkpoints {
        let line = ExportLine::Checkpoint { chain: chain.clone(), checkpoint: checkpoint.clone() };
        writeln!(out, "{}", serde_json::to_string(&line).expect("export lines serialise"))?;
    }
    Ok(())
}

/// What [`verify_export`] proved about one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportedChain {
    /// Key id of the chain's signer.
    pub chain: String,
    pub entries: u64,
    pub head: Digest,
    pub checkpoints: usize,
    /// Entries after the last checkpoint: protected by the chain's own
    /// signatures only.
    pub after_last_checkpoint: u64,
}

/// Verifies an export with public keys only: each chain from its first
/// entry with the key its `chain` id names, each checkpoint with the key
/// its `keyid` names. Both must be among `public_keys`.
///
/// # Errors
/// The first line that does not parse, names an unknown key, or breaks a
/// chain or a checkpoint.
pub fn verify_export(
    reader: impl std::io::BufRead,
    public_keys: &[VerifyingKey],
) -> Result<Vec<ExportedChain>, CheckpointError> {
    use std::collections::BTreeMap;
    let keys: BTreeMap<String, &VerifyingKey> = public_keys.iter().map(|k| (crate::trust::key_id(k), k)).collect();
    let key = |line: usize, id: &str, what: &str| {
        keys.get(id).copied().ok_or_else(|| CheckpointError::Export {
            line,
            message: format!("{what} key {id} is not among the public keys given; add its .pub file"),
        })
    };
    let mut chains: BTreeMap<String, (Vec<AuditEntry>, Vec<Checkpoint>)> = BTreeMap::new();
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| CheckpointError::Export { line: n, message: format!("cannot read: {e}") })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line)
            .map_err(|e| CheckpointError::Export { line: n, message: format!("not an audit export line: {e}") })?;
        match parsed {
            ExportLine::Entry { chain, entry } => {
                key(n, &chain, "chain")?;
                let (entries, checkpoints) = chains.entry(chain).or_default();
                if !checkpoints.is_empty() {
                    return Err(CheckpointError::Export {
                        line: n,
                        message: "an entry after its chain's checkpoints".into(),
                    });
                }
                // Order and links are checked as lines come, hashes and
                // signatures once the chain is complete.
                let expected = entries.len() as u64 + 1;
                if entry.seq != expected {
                    return Err(ChainError::Gap { seq: entry.seq, expected }.into());
                }
                let prev = entries.last().map_or(GENESIS, |e| e.hash);
                if entry.prev != prev {
                    return Err(ChainError::Broken { seq: entry.seq }.into());
                }
                entries.push(entry);
            }
            ExportLine::Checkpoint { chain, checkpoint } => {
                let k = key(n, &checkpoint.keyid, "checkpoint")?;
                let Some((entries, checkpoints)) = chains.get_mut(&chain) else {
                    return Err(CheckpointError::Export {
                        line: n,
                        message: format!("checkpoint for chain {chain}, which has no entries before it"),
                    });
                };
                check_checkpoint(entries, &checkpoint, k)?;
                checkpoints.push(checkpoint);
            }
        }
    }
    let mut out = Vec::new();
    for (chain, (entries, checkpoints)) in chains {
        let head = verify_chain(&entries, keys[&chain])?;
        let last = checkpoints.iter().map(|c| c.seq).max().unwrap_or(0);
        out.push(ExportedChain {
            after_last_checkpoint: entries.len() as u64 - last,
            entries: entries.len() as u64,
            chain,
            head,
            checkpoints: checkpoints.len(),
        });
    }
    Ok(out)
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

    /// Batches sealed by their last entry's signature: the chain verifies;
    /// an unsigned entry edited (and every entry after it re-hashed up to
    /// the seal) breaks the seal's signature; entries appended without a
    /// seal, or a seal's signature removed, are refused; a seal by another
    /// key is a forgery.
    #[test]
    fn sealed_batches_verify_and_their_unsigned_entries_are_covered() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let vk = key.verifying_key();
        let mut clock = 0;
        let mut time = || {
            clock += 1;
            format!("t{clock}")
        };
        let batch = |n: usize| (0..n).map(|i| ("result".to_string(), format!("{{\"i\":{i}}}"))).collect::<Vec<_>>();
        let mut v = seal(None, batch(3), &mut time, &key);
        v.extend(seal(v.last(), batch(1), &mut time, &key));
        let third = seal(v.last(), batch(4), &mut time, &key);
        v.extend(third);
        assert_eq!(v.len(), 8);
        let signed: Vec<u64> = v.iter().filter(|e| !e.signature.is_empty()).map(|e| e.seq).collect();
        assert_eq!(signed, [3, 4, 8], "one signature per batch, on its last entry");
        assert_eq!(verify_chain(&v, &vk).unwrap(), v[7].hash);
        assert!(seal(v.last(), Vec::new(), &mut time, &key).is_empty());

        // Entry 5 (unsigned) edited, 5..=8 re-hashed and re-linked, seal kept.
        let mut rewritten = v[..4].to_vec();
        for (i, e) in v[4..].iter().enumerate() {
            let params = if i == 0 { "{\"i\":99}".to_string() } else { e.params.clone() };
            let mut n = AuditEntry::new_unsigned(rewritten.last(), e.time.clone(), &e.kind, params);
            n.signature.clone_from(&e.signature);
            rewritten.push(n);
        }
        assert_eq!(verify_chain(&rewritten, &vk), Err(ChainError::BadSignature { seq: 8 }));
        // Only entry 5 edited in place: its hash no longer matches.
        let mut edited = v.clone();
        edited[4].params = "{\"i\":99}".into();
        assert_eq!(verify_chain(&edited, &vk), Err(ChainError::Edited { seq: 5 }));
        // Entries appended after the last seal, unsigned.
        let mut appended = v.clone();
        appended.push(AuditEntry::new_unsigned(v.last(), "t".into(), "result", "{}".into()));
        appended.push(AuditEntry::new_unsigned(appended.last(), "t".into(), "result", "{}".into()));
        assert_eq!(verify_chain(&appended, &vk), Err(ChainError::Unsealed { seq: 9 }));
        // The last seal's signature removed.
        let mut stripped = v.clone();
        stripped[7].signature.clear();
        assert_eq!(verify_chain(&stripped, &vk), Err(ChainError::Unsealed { seq: 5 }));
        // A batch sealed with another key.
        let other = SigningKey::from_bytes(&[8; 32]);
        let mut forged = v[..4].to_vec();
        forged.extend(seal(forged.last(), batch(2), &mut time, &other));
        assert_eq!(verify_chain(&forged, &vk), Err(ChainError::BadSignature { seq: 6 }));
    }

    #[test]
    fn checkpoints_sign_and_detect_a_rewrite_between_them() {
        let (key, v) = chain(8);
        let vk = key.verifying_key();
        let coord = SigningKey::from_bytes(&[3; 32]);
        let cvk = coord.verifying_key();
        let cps = [
            Checkpoint::of(&v[..3], "c1".into(), &coord).unwrap(),
            Checkpoint::of(&v[..6], "c2".into(), &coord).unwrap(),
        ];
        assert_eq!(verify_chain_with_checkpoints(&v, &vk, &cps, &cvk).unwrap(), v[7].hash);
        // Someone holding the chain key rewrites entries 4..=8 and re-signs
        // them: the chain alone verifies, the checkpoint at 6 does not.
        let mut rewritten = v[..3].to_vec();
        for i in 3..8 {
            rewritten.push(AuditEntry::new_signed(
                rewritten.last(),
                format!("t{i}"),
                "k",
                format!("{{\"i\":{}}}", i * 10),
                &key,
            ));
        }
        assert!(verify_chain(&rewritten, &vk).is_ok());
        assert!(matches!(
            verify_chain_with_checkpoints(&rewritten, &vk, &cps, &cvk),
            Err(CheckpointError::Mismatch { seq: 6, .. })
        ));
        // Truncation below a checkpoint.
        assert_eq!(
            verify_chain_with_checkpoints(&v[..5], &vk, &cps, &cvk),
            Err(CheckpointError::Truncated { seq: 6, len: 5 })
        );
        // A checkpoint not signed by the coordinator, or with an edited time.
        let forged = [Checkpoint::of(&v[..3], "c1".into(), &key).unwrap()];
        assert_eq!(
            verify_chain_with_checkpoints(&v, &vk, &forged, &cvk),
            Err(CheckpointError::BadSignature { seq: 3 })
        );
        let mut edited = cps.clone();
        edited[0].time = "c0".into();
        assert_eq!(
            verify_chain_with_checkpoints(&v, &vk, &edited, &cvk),
            Err(CheckpointError::BadSignature { seq: 3 })
        );
    }

    #[test]
    fn export_verifies_with_public_keys_only_and_detects_tampering() {
        let (agent, av) = chain(4);
        let coord = SigningKey::from_bytes(&[3; 32]);
        let mut cv: Vec<AuditEntry> = Vec::new();
        for i in 0..5 {
            cv.push(AuditEntry::new_signed(cv.last(), format!("c{i}"), "operator.action", "{}".into(), &coord));
        }
        let cps = [
            Checkpoint::of(&cv[..2], "t".into(), &coord).unwrap(),
            Checkpoint::of(&cv[..4], "t".into(), &coord).unwrap(),
        ];
        let agent_cp = [Checkpoint::of(&av, "t".into(), &coord).unwrap()];
        let mut out = Vec::new();
        write_export(&mut out, &coord.verifying_key(), &cv, &cps).unwrap();
        write_export(&mut out, &agent.verifying_key(), &av, &agent_cp).unwrap();
        let text = String::from_utf8(out).unwrap();
        let keys = [coord.verifying_key(), agent.verifying_key()];
        let summary = verify_export(text.as_bytes(), &keys).unwrap();
        assert_eq!(summary.len(), 2);
        let c = summary.iter().find(|s| s.chain == crate::trust::key_id(&coord.verifying_key())).unwrap();
        assert_eq!((c.entries, c.head, c.checkpoints, c.after_last_checkpoint), (5, cv[4].hash, 2, 1));
        // Only the coordinator key: the agent chain's key is unknown.
        assert!(matches!(verify_export(text.as_bytes(), &keys[..1]), Err(CheckpointError::Export { .. })));
        // Edit the params of entry 3 in the file (between the checkpoints).
        let tampered = text.replacen(
            "\"kind\":\"operator.action\",\"params\":\"{}\"",
            "\"kind\":\"operator.action\",\"params\":\"{\\\"x\\\":1}\"",
            3,
        );
        let tampered = tampered.replacen("\"params\":\"{\\\"x\\\":1}\"", "\"params\":\"{}\"", 2);
        assert_ne!(tampered, text);
        assert_eq!(
            verify_export(tampered.as_bytes(), &keys),
            Err(CheckpointError::Chain(ChainError::Edited { seq: 3 }))
        );
        // Drop a line.
        let dropped: String =
            text.lines().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| format!("{l}\n")).collect();
        assert!(matches!(
            verify_export(dropped.as_bytes(), &keys),
            Err(CheckpointError::Chain(ChainError::Gap { seq: 3, expected: 2 }))
        ));
    }
}
