//! Signed results (DESIGN.md §5 "Daemon", §6 fleet verification): what an
//! agent reports after it finished, reverted or refused a plan, and how the
//! coordinator checks it.
//!
//! - A [`ReportPayload`] is serialised once; those exact JSON bytes are what
//!   the agent signs, Ed25519 over `pae(REPORT_TYPE, payload)` (the same
//!   envelope idea as plans, [`crate::trust::pae`]), so nothing is
//!   re-encoded before verifying.
//! - [`SignedReport::verify`] returns the payload only when the signature
//!   verifies with the agent's public key *and* the payload names that key.
//! - [`ChainContinuity::check`] decides whether the agent's audit chain, as
//!   carried by the report (head + the entries since the last acknowledged
//!   head), extends what the coordinator already knows of that agent: a
//!   continuation, a [`Continuity::Gap`] (entries missing) or a
//!   [`Continuity::Fork`] (the chain does not link: rewritten, replaced or
//!   restored from an older copy). Gaps and forks are integrity alarms.

use ed25519_dalek::{Signature as DalekSignature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::audit::{AuditEntry, ChainError, GENESIS, entry_hash};
use crate::bundle::PlanKind;
use crate::trust::{key_id, pae};

/// Payload type bound into the signature.
pub const REPORT_TYPE: &str = "application/vnd.rewind.report+json";
/// `format` of a report payload.
pub const REPORT_FORMAT: &str = "rewind-report-1";
/// Largest payload a coordinator should decode (exact JSON bytes).
pub const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;
/// Most audit entries an agent puts in one report's `audit_since`; older
/// ones are left out (the coordinator then sees a [`Continuity::Gap`]).
pub const MAX_AUDIT_SINCE: usize = 4096;

/// Outcome of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Applied,
    RolledBack,
    /// The plan failed; the data is back at its start state (or, with
    /// `state = needs_human`, could not be proven so).
    Failed,
    /// The plan was refused before it changed anything.
    Refused,
}

impl ReportStatus {
    /// From the engine's report status (`applied`, `rolled_back`, `failed`,
    /// `refused`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "applied" => Self::Applied,
            "rolled_back" => Self::RolledBack,
            "failed" => Self::Failed,
            "refused" => Self::Refused,
            _ => return None,
        })
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

/// One target's before/after state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetResult {
    pub name: String,
    /// Data digests (`b3:...`) before and after the plan.
    pub data_before: Option<String>,
    pub data_after: Option<String>,
    /// Schema digests before and after the plan.
    pub schema_before: Option<String>,
    pub schema_after: Option<String>,
    /// The snapshot that protects (apply) or proves (rollback) the target.
    pub snapshot: Option<String>,
    /// Rollbacks: `identical` or `changed since apply`.
    pub proof: Option<String>,
    /// Migrations applied or reverted, in order.
    #[serde(default)]
    pub migrations: Vec<String>,
}

/// Why a plan was refused ([`crate::bundle::Refusal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalInfo {
    /// `oversize`, `malformed`, `signatures`, `expired`, `kind`, `replay`,
    /// `start-state`, `trust-root`.
    pub code: String,
    pub reason: String,
}

/// A position in an audit chain: the entry count and the head hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPoint {
    /// Sequence number of the head entry (0: empty chain).
    pub seq: u64,
    /// Hash of the head entry ([`GENESIS`] for an empty chain).
    pub head: Digest,
}

/// What the agent signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportPayload {
    /// [`REPORT_FORMAT`].
    pub format: String,
    /// Unique report id, `res-<hex>`; deliveries are idempotent by it.
    pub id: String,
    /// The agent's Ed25519 public key (hex) and its [`key_id`].
    pub agent_key: String,
    pub agent_keyid: String,
    /// The engine's plan id (the agent's journal), or for a refusal the
    /// signed plan's id when it could be read (else empty).
    pub plan: String,
    /// The signed plan's id and bundle, when the plan came from a bundle or
    /// the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Empty when a refused plan could not be read.
    pub product: String,
    pub release: String,
    pub sequence: u64,
    /// `None` when a refused plan could not be read.
    pub kind: Option<PlanKind>,
    pub status: ReportStatus,
    /// The journal's final state: `applied`, `rolled_back`, `reverted`,
    /// `needs_human` or `refused`.
    pub state: String,
    pub targets: Vec<TargetResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<RefusalInfo>,
    /// One line for people (the engine's message).
    pub message: String,
    /// How long the plan took on the endpoint, in milliseconds (the sum of
    /// its steps); absent for a refusal. The coordinator's restore window
    /// comes from these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
    /// For a failed plan, the step that failed when the engine knows it:
    /// `verify` (a migration's `verify.sql`), `up`, `preserve`, `check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// The agent's audit chain head when the report was made.
    pub chain: ChainPoint,
    /// Audit entries after the last head the coordinator acknowledged, up to
    /// and including `chain` (at most [`MAX_AUDIT_SINCE`], the newest).
    pub audit_since: Vec<AuditEntry>,
    /// RFC 3339, UTC.
    pub time: String,
}

/// A report as stored and sent: exact payload bytes (hex) and the agent's
/// signature over `pae(REPORT_TYPE, payload)` (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReport {
    pub payload_type: String,
    /// Hex of the exact payload bytes.
    pub payload: String,
    /// [`key_id`] of the signing key.
    pub keyid: String,
    /// Ed25519 signature, hex (64 bytes).
    pub signature: String,
}

/// Why a report was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("report payload is {0} bytes, over the {MAX_REPORT_BYTES}-byte limit")]
    Oversize(usize),
    #[error("report is malformed: {0}")]
    Malformed(String),
    #[error(
        "report signature does not verify with agent key {0}: the report was forged, edited or signed by another agent"
    )]
    BadSignature(String),
    #[error("report {id} names agent key {named}, but it was checked against {expected}: it belongs to another agent")]
    WrongAgent { id: String, named: String, expected: String },
}

/// Parses a 32-byte Ed25519 public key from 64 hex digits.
///
/// # Errors
/// When `hex` is not a valid public key.
pub fn public_key_from_hex(hex_text: &str) -> Result<VerifyingKey, ReportError> {
    let bytes =
        hex::decode(hex_text.trim()).map_err(|e| ReportError::Malformed(format!("public key is not hex: {e}")))?;
    let arr = <[u8; 32]>::try_from(bytes).map_err(|_| ReportError::Malformed("public key is not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| ReportError::Malformed(format!("not an Ed25519 public key: {e}")))
}

impl SignedReport {
    /// Serialises `payload` once and signs those bytes with the agent key.
    ///
    /// # Panics
    /// Never: payloads always serialise.
    #[must_use]
    pub fn sign(payload: &ReportPayload, key: &SigningKey) -> Self {
        let bytes = serde_json::to_vec(payload).expect("report payloads serialise");
        Self::sign_bytes(&bytes, key)
    }

    /// Signs exact payload bytes.
    #[must_use]
    pub fn sign_bytes(bytes: &[u8], key: &SigningKey) -> Self {
        SignedReport {
            payload_type: REPORT_TYPE.into(),
            payload: hex::encode(bytes),
            keyid: key_id(&key.verifying_key()),
            signature: hex::encode(key.sign(&pae(REPORT_TYPE, bytes)).to_bytes()),
        }
    }

    /// The exact payload bytes, refusing oversize payloads before decoding.
    ///
    /// # Errors
    /// [`ReportError::Oversize`] or [`ReportError::Malformed`].
    pub fn payload_bytes(&self) -> Result<Vec<u8>, ReportError> {
        if self.payload.len() > MAX_REPORT_BYTES * 2 {
            return Err(ReportError::Oversize(self.payload.len() / 2));
        }
        hex::decode(&self.payload).map_err(|e| ReportError::Malformed(format!("payload is not hex: {e}")))
    }

    /// Verifies the signature with `agent` and decodes the payload.
    ///
    /// # Errors
    /// See [`verify_report`].
    pub fn verify(&self, agent: &VerifyingKey) -> Result<ReportPayload, ReportError> {
        if self.payload_type != REPORT_TYPE {
            return Err(ReportError::Malformed(format!(
                "payload type is `{}`, expected `{REPORT_TYPE}`",
                self.payload_type
            )));
        }
        let sig =
            hex::decode(&self.signature).map_err(|e| ReportError::Malformed(format!("signature is not hex: {e}")))?;
        verify_report(&self.payload_bytes()?, &sig, agent)
    }
}

/// Verifies `sig` over `pae(REPORT_TYPE, bytes)` with the agent's key and
/// decodes the payload; the payload must name that same key.
///
/// # Errors
/// [`ReportError::BadSignature`] for a forged or edited report,
/// [`ReportError::WrongAgent`] when a validly signed payload names another
/// key, [`ReportError::Malformed`] / [`ReportError::Oversize`] otherwise.
pub fn verify_report(bytes: &[u8], sig: &[u8], agent: &VerifyingKey) -> Result<ReportPayload, ReportError> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(ReportError::Oversize(bytes.len()));
    }
    let sig = <[u8; 64]>::try_from(sig).map_err(|_| ReportError::BadSignature(key_id(agent)))?;
    agent
        .verify(&pae(REPORT_TYPE, bytes), &DalekSignature::from_bytes(&sig))
        .map_err(|_| ReportError::BadSignature(key_id(agent)))?;
    signed_payload(bytes, agent)
}

/// One report for [`verify_reports`]: payload bytes, signature, the key it
/// must verify with.
pub type ReportToVerify<'a> = (&'a [u8], &'a [u8], &'a VerifyingKey);

/// [`verify_report`] for many reports at once, with one Ed25519 batch
/// verification (ed25519-dalek's `verify_batch`: about 2.4 x cheaper per
/// signature than one by one from 64 signatures on). When the batch does
/// not verify, every report is checked on its own, so each gets the verdict
/// [`verify_report`] gives it; the results are in the order given.
#[must_use]
pub fn verify_reports(items: &[ReportToVerify<'_>]) -> Vec<Result<ReportPayload, ReportError>> {
    if items.len() < 2 {
        return items.iter().map(|(b, s, k)| verify_report(b, s, k)).collect();
    }
    let well_formed = items.iter().all(|(b, s, _)| b.len() <= MAX_REPORT_BYTES && s.len() == 64);
    let batch_ok = well_formed && {
        let messages: Vec<Vec<u8>> = items.iter().map(|(b, _, _)| pae(REPORT_TYPE, b)).collect();
        let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let signatures: Vec<DalekSignature> = items
            .iter()
            .map(|(_, s, _)| DalekSignature::from_bytes(&<[u8; 64]>::try_from(*s).expect("length checked")))
            .collect();
        let keys: Vec<VerifyingKey> = items.iter().map(|(_, _, k)| **k).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    if !batch_ok {
        return items.iter().map(|(b, s, k)| verify_report(b, s, k)).collect();
    }
    items.iter().map(|(b, _, k)| signed_payload(b, k)).collect()
}

/// The payload of a report whose signature verified with `agent`: a
/// `rewind-report-1` that names that key.
fn signed_payload(bytes: &[u8], agent: &VerifyingKey) -> Result<ReportPayload, ReportError> {
    let expected = key_id(agent);
    let p: ReportPayload = serde_json::from_slice(bytes)
        .map_err(|e| ReportError::Malformed(format!("signed payload is not a {REPORT_FORMAT} report: {e}")))?;
    if p.format != REPORT_FORMAT {
        return Err(ReportError::Malformed(format!("format `{}` is not {REPORT_FORMAT}", p.format)));
    }
    if p.agent_key != hex::encode(agent.as_bytes()) || p.agent_keyid != expected {
        return Err(ReportError::WrongAgent { id: p.id, named: p.agent_keyid, expected });
    }
    Ok(p)
}

/// The verdict of [`ChainContinuity::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// The report's head extends (or equals) the known one; every entry in
    /// between was verified with the agent key. `verified` counts them.
    Ok { head: ChainPoint, verified: usize },
    /// The report's head is ahead of the known one, but the entries that
    /// link them are missing (`missing` = first..=last seq absent).
    Gap { known: ChainPoint, head: ChainPoint, missing: (u64, u64) },
    /// The report's chain does not extend the known one.
    Fork { known: Option<ChainPoint>, head: ChainPoint, reason: String },
}

impl Continuity {
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }
}

/// Chain continuity rules for an agent's reports.
pub struct ChainContinuity;

impl ChainContinuity {
    /// Checks a verified report's chain against `known`, the point the
    /// coordinator holds for this agent (`None` on first contact).
    ///
    /// Rules, with the report's head `(n, hn)` and known `(k, hk)`:
    /// - `audit_since` must be contiguous, each entry linked, hashed and
    ///   signed by `agent`, and end at `(n, hn)`; else **fork** (a rewritten
    ///   chain).
    /// - `n < k`: **fork** — the chain went backwards (state restored from an
    ///   older copy or replaced). To check an older report delivered late,
    ///   pass the point recorded at (or below) its seq instead.
    /// - `n == k`: ok when `hn == hk`, else **fork**.
    /// - `n > k`: the entries must reach back to `k + 1` (or include `k`)
    ///   and link to `hk`; **gap** when they start later, **fork** when they
    ///   do not link.
    /// - No known point: ok once the entries verify (first contact; from
    ///   seq 1 they must start at [`GENESIS`]).
    #[must_use]
    pub fn check(known: Option<ChainPoint>, report: &ReportPayload, agent: &VerifyingKey) -> Continuity {
        let head = report.chain;
        let fork = |reason: String| Continuity::Fork { known, head, reason };
        if let Err(e) = verify_segment(&report.audit_since, agent) {
            return fork(format!("the audit entries in report {} do not verify: {e}", report.id));
        }
        match report.audit_since.last() {
            Some(last) if last.seq != head.seq || last.hash != head.head => {
                return fork(format!(
                    "report {} claims head {} at seq {} but its last audit entry is {} at seq {}",
                    report.id, head.head, head.seq, last.hash, last.seq
                ));
            }
            None if known.is_none() && head.seq == 0 && head.head != GENESIS => {
                return fork(format!("report {} claims an empty chain with head {}", report.id, head.head));
            }
            _ => {}
        }
        let verified = report.audit_since.len();
        let Some(k) = known else {
            return Continuity::Ok { head, verified };
        };
        if head.seq < k.seq {
            return fork(format!(
                "the agent's chain went backwards: report {} has head seq {}, {} was already known at seq {} \
                 (agent state restored from an older copy or replaced)",
                report.id, head.seq, k.head, k.seq
            ));
        }
        if head.seq == k.seq {
            return if head.head == k.head {
                Continuity::Ok { head, verified: 0 }
            } else {
                fork(format!(
                    "at seq {} the known head is {} but report {} has {}",
                    k.seq, k.head, report.id, head.head
                ))
            };
        }
        let first = report.audit_since.first().map_or(head.seq + 1, |e| e.seq);
        if first > k.seq + 1 {
            return Continuity::Gap { known: k, head, missing: (k.seq + 1, first - 1) };
        }
        // `first <= k.seq + 1`: the entry at k (if carried) must be the
        // known head, and the entry at k + 1 must link to it.
        for e in &report.audit_since {
            if e.seq == k.seq && e.hash != k.head {
                return fork(format!(
                    "at seq {} the known head is {} but report {} carries {}",
                    k.seq, k.head, report.id, e.hash
                ));
            }
            if e.seq == k.seq + 1 && e.prev != k.head {
                return fork(format!(
                    "entry {} of report {} follows {}, not the known head {} at seq {}",
                    e.seq, report.id, e.prev, k.head, k.seq
                ));
            }
        }
        let verified = report.audit_since.iter().filter(|e| e.seq > k.seq).count();
        Continuity::Ok { head, verified }
    }
}

/// Verifies a contiguous run of entries that may start mid-chain: seqs
/// consecutive, each `prev` the hash before it (the first one's `prev` is
/// [`GENESIS`] when it is entry 1), hashes recomputed, signatures valid.
///
/// # Errors
/// The first entry that breaks, and how.
pub fn verify_segment(entries: &[AuditEntry], key: &VerifyingKey) -> Result<(), ChainError> {
    let mut prev: Option<&AuditEntry> = None;
    for e in entries {
        match prev {
            Some(p) if e.seq != p.seq + 1 => return Err(ChainError::Gap { seq: e.seq, expected: p.seq + 1 }),
            Some(p) if e.prev != p.hash => return Err(ChainError::Broken { seq: e.seq }),
            None if e.seq == 0 => return Err(ChainError::Gap { seq: 0, expected: 1 }),
            None if e.seq == 1 && e.prev != GENESIS => return Err(ChainError::Broken { seq: 1 }),
            _ => {}
        }
        if entry_hash(e.seq, &e.time, &e.kind, &e.params, &e.prev) != e.hash {
            return Err(ChainError::Edited { seq: e.seq });
        }
        let sig = hex::decode(&e.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| DalekSignature::from_bytes(&b));
        if sig.is_none_or(|s| key.verify(e.hash.as_bytes(), &s).is_err()) {
            return Err(ChainError::BadSignature { seq: e.seq });
        }
        prev = Some(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    fn chain(key: &SigningKey, n: usize) -> Vec<AuditEntry> {
        let mut v: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            v.push(AuditEntry::new_signed(v.last(), format!("t{i}"), "k", format!("{{\"i\":{i}}}"), key));
        }
        v
    }

    fn point(e: &AuditEntry) -> ChainPoint {
        ChainPoint { seq: e.seq, head: e.hash }
    }

    fn payload(key: &SigningKey, since: &[AuditEntry], head: ChainPoint) -> ReportPayload {
        ReportPayload {
            format: REPORT_FORMAT.into(),
            id: "res-0011223344556677".into(),
            agent_key: hex::encode(key.verifying_key().as_bytes()),
            agent_keyid: key_id(&key.verifying_key()),
            plan: "plan-1".into(),
            signed_plan: Some("plan-abc".into()),
            bundle: Some("bundle-x".into()),
            product: "notes".into(),
            release: "2026.11.0".into(),
            sequence: 3,
            kind: Some(PlanKind::Apply),
            status: ReportStatus::Applied,
            state: "applied".into(),
            targets: vec![TargetResult {
                name: "notes".into(),
                data_before: Some("b3:00".into()),
                data_after: Some("b3:11".into()),
                ..TargetResult::default()
            }],
            refusal: None,
            message: "applied".into(),
            millis: Some(12),
            failed_step: None,
            chain: head,
            audit_since: since.to_vec(),
            time: "2026-11-25T00:00:00Z".into(),
        }
    }

    #[test]
    fn signed_report_verifies_and_round_trips() {
        let k = key();
        let c = chain(&k, 3);
        let p = payload(&k, &c, point(&c[2]));
        let s = SignedReport::sign(&p, &k);
        assert_eq!(s.verify(&k.verifying_key()).unwrap(), p);
        let json = serde_json::to_string(&s).unwrap();
        let back: SignedReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify(&k.verifying_key()).unwrap(), p);
    }

    #[test]
    fn forged_signature_edited_payload_and_other_agent_are_rejected() {
        let k = key();
        let vk = k.verifying_key();
        let c = chain(&k, 2);
        let p = payload(&k, &c, point(&c[1]));
        let s = SignedReport::sign(&p, &k);
        // Signed by another key but claiming this agent.
        let other = SigningKey::from_bytes(&[6; 32]);
        let forged = SignedReport::sign(&p, &other);
        assert!(matches!(forged.verify(&vk), Err(ReportError::BadSignature(_))));
        // One byte of the payload edited (status applied -> failed would be
        // longer; flip a digit of the sequence).
        let mut bytes = s.payload_bytes().unwrap();
        let at = bytes.windows(12).position(|w| w == b"\"sequence\":3").unwrap() + 11;
        bytes[at] = b'4';
        let edited = SignedReport { payload: hex::encode(&bytes), ..s.clone() };
        assert!(matches!(edited.verify(&vk), Err(ReportError::BadSignature(_))));
        // Garbage signature.
        let garbage = SignedReport { signature: "00".repeat(64), ..s.clone() };
        assert!(matches!(garbage.verify(&vk), Err(ReportError::BadSignature(_))));
        // Validly signed by another agent, but naming this one's key: the
        // coordinator checks with the key it pinned for the sender.
        let theirs = payload(&other, &[], ChainPoint { seq: 0, head: GENESIS });
        let s2 = SignedReport::sign(&theirs, &other);
        assert!(s2.verify(&other.verifying_key()).is_ok());
        assert!(matches!(s2.verify(&vk), Err(ReportError::BadSignature(_))));
        let mut lying = theirs.clone();
        lying.agent_key = hex::encode(vk.as_bytes());
        let s3 = SignedReport::sign(&lying, &other);
        assert!(matches!(s3.verify(&other.verifying_key()), Err(ReportError::WrongAgent { .. })));
        // Type confusion: a plan payload type is refused.
        let typed = SignedReport { payload_type: crate::bundle::PLAN_TYPE.into(), ..s };
        assert!(matches!(typed.verify(&vk), Err(ReportError::Malformed(_))));
    }

    /// A batch gives every report the verdict it gets on its own: all good
    /// (one batch check), or with a forged, an edited, a short-signature
    /// and a wrongly-named report among good ones (the batch fails and each
    /// is checked alone).
    #[test]
    fn batch_verification_gives_each_report_its_own_verdict() {
        let keys: Vec<SigningKey> = (1..=6u8).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let signed: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                let s = SignedReport::sign(&payload(k, &[], ChainPoint { seq: 0, head: GENESIS }), k);
                (s.payload_bytes().unwrap(), hex::decode(&s.signature).unwrap())
            })
            .collect();
        let items: Vec<ReportToVerify<'_>> =
            signed.iter().zip(&vks).map(|((b, s), k)| (b.as_slice(), s.as_slice(), k)).collect();
        let all = verify_reports(&items);
        assert!(all.iter().all(Result::is_ok), "{all:?}");
        assert_eq!(all[2].as_ref().unwrap().agent_key, hex::encode(vks[2].as_bytes()));

        let mut edited = signed[1].0.clone();
        let at = edited.windows(12).position(|w| w == b"\"sequence\":3").unwrap() + 11;
        edited[at] = b'4';
        let mut lying = payload(&keys[5], &[], ChainPoint { seq: 0, head: GENESIS });
        lying.agent_key = hex::encode(vks[4].as_bytes());
        let lying = SignedReport::sign(&lying, &keys[5]);
        let lying = (lying.payload_bytes().unwrap(), hex::decode(&lying.signature).unwrap());
        let mixed: Vec<ReportToVerify<'_>> = vec![
            items[0],
            (signed[0].0.as_slice(), signed[0].1.as_slice(), &vks[3]), // another agent's key
            (edited.as_slice(), signed[1].1.as_slice(), &vks[1]),      // edited payload
            items[2],
            (signed[3].0.as_slice(), &signed[3].1[..63], &vks[3]), // short signature
            (lying.0.as_slice(), lying.1.as_slice(), &vks[5]),     // names another agent
            items[4],
        ];
        let verdicts = verify_reports(&mixed);
        let alone: Vec<_> = mixed.iter().map(|(b, s, k)| verify_report(b, s, k)).collect();
        assert_eq!(format!("{verdicts:?}"), format!("{alone:?}"));
        let ok: Vec<bool> = verdicts.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, false, true, false, false, true]);
        assert!(matches!(verdicts[1], Err(ReportError::BadSignature(_))));
        assert!(matches!(verdicts[5], Err(ReportError::WrongAgent { .. })));
        // Every signature good (the batch passes), one names another agent.
        let named = verify_reports(&[items[0], (lying.0.as_slice(), lying.1.as_slice(), &vks[5]), items[1]]);
        assert!(named[0].is_ok() && named[2].is_ok(), "{named:?}");
        assert!(matches!(named[1], Err(ReportError::WrongAgent { .. })), "{named:?}");
        assert!(verify_reports(&[]).is_empty());
    }

    #[test]
    fn first_contact_and_good_continuation() {
        let k = key();
        let vk = k.verifying_key();
        let c = chain(&k, 6);
        let first = payload(&k, &c[..3], point(&c[2]));
        assert_eq!(ChainContinuity::check(None, &first, &vk), Continuity::Ok { head: point(&c[2]), verified: 3 });
        // Next report carries entries 4..=6 after an acknowledged head 3.
        let next = payload(&k, &c[3..], point(&c[5]));
        assert_eq!(
            ChainContinuity::check(Some(point(&c[2])), &next, &vk),
            Continuity::Ok { head: point(&c[5]), verified: 3 }
        );
        // An unacknowledged earlier report: entries overlap the known head.
        let overlap = payload(&k, &c[1..], point(&c[5]));
        assert_eq!(
            ChainContinuity::check(Some(point(&c[2])), &overlap, &vk),
            Continuity::Ok { head: point(&c[5]), verified: 3 }
        );
        // Same head again (nothing happened in between).
        let same = payload(&k, &[], point(&c[5]));
        assert!(ChainContinuity::check(Some(point(&c[5])), &same, &vk).is_ok());
    }

    #[test]
    fn gap_when_entries_are_missing() {
        let k = key();
        let vk = k.verifying_key();
        let c = chain(&k, 6);
        let r = payload(&k, &c[4..], point(&c[5]));
        assert_eq!(
            ChainContinuity::check(Some(point(&c[1])), &r, &vk),
            Continuity::Gap { known: point(&c[1]), head: point(&c[5]), missing: (3, 4) }
        );
        let none = payload(&k, &[], point(&c[5]));
        assert!(matches!(
            ChainContinuity::check(Some(point(&c[1])), &none, &vk),
            Continuity::Gap { missing: (3, 6), .. }
        ));
    }

    #[test]
    fn forks_are_detected() {
        let k = key();
        let vk = k.verifying_key();
        let c = chain(&k, 4);
        // A different history from entry 3 on, validly signed by the agent
        // (e.g. agent.db restored from a backup, then used).
        let mut alt = c[..2].to_vec();
        for i in 0..3 {
            alt.push(AuditEntry::new_signed(alt.last(), format!("alt{i}"), "k", "{}".into(), &k));
        }
        let known = point(&c[3]);
        let r = payload(&k, &alt[4..], point(&alt[4]));
        assert!(
            matches!(ChainContinuity::check(Some(known), &r, &vk), Continuity::Fork { .. }),
            "entry 5 does not follow the known head 4"
        );
        let r = payload(&k, &alt[2..], point(&alt[4]));
        assert!(
            matches!(ChainContinuity::check(Some(known), &r, &vk), Continuity::Fork { .. }),
            "entry 4 differs from the known one"
        );
        // Same seq, other head.
        let r = payload(&k, &[], point(&alt[3]));
        assert!(matches!(ChainContinuity::check(Some(known), &r, &vk), Continuity::Fork { .. }));
        // Going backwards.
        let r = payload(&k, &c[..2], point(&c[1]));
        assert!(matches!(ChainContinuity::check(Some(known), &r, &vk), Continuity::Fork { .. }));
        // Entries that do not verify (edited) or end elsewhere than the head.
        let mut edited = c.clone();
        edited[2].params = "{\"i\":9}".into();
        let r = payload(&k, &edited, point(&c[3]));
        assert!(matches!(ChainContinuity::check(None, &r, &vk), Continuity::Fork { .. }));
        let r = payload(&k, &c[..3], point(&c[3]));
        assert!(matches!(ChainContinuity::check(None, &r, &vk), Continuity::Fork { .. }));
        // Entries signed by another key.
        let other = chain(&SigningKey::from_bytes(&[9; 32]), 4);
        let r = payload(&k, &other, point(&other[3]));
        assert!(matches!(ChainContinuity::check(None, &r, &vk), Continuity::Fork { .. }));
    }
}
