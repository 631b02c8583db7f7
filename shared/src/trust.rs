//! Signing keys and the trust root (`trust.toml`): who may sign plans, and
//! how many of them must (DESIGN.md §4).
//!
//! Guarantees:
//! - A key id is the hex of the first 16 bytes of BLAKE3(the 32-byte Ed25519
//!   public key), so it is derived, never chosen; a root whose `keyid` does
//!   not match its `public` does not load.
//! - [`count_signatures`] counts each key at most once, and only keys the
//!   root lists and has not revoked, whose signature verifies over the exact
//!   PAE bytes: a duplicated, unknown, revoked or bad signature never
//!   counts towards the threshold.
//! - A rotated root (version N+1) carries signatures by keys of root N over
//!   the exact bytes of its own body (everything above [`SIGNATURE_MARKER`]);
//!   [`TrustFile::verify_rotation`] accepts it only with `threshold` of root
//!   N's valid distinct keys. The body and the signatures are parsed apart,
//!   so nothing below the marker can add keys to the root.
//!
//! Key files (`rewindctl keys generate`): `NAME.key` holds
//! `rewind-ed25519-secret-key <64 hex seed>` (mode 0600), `NAME.pub` holds
//! `rewind-ed25519-public-key <64 hex>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ed25519_dalek::{Signature as DalekSignature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// First word of a `NAME.key` file.
pub const SECRET_KEY_TAG: &str = "rewind-ed25519-secret-key";
/// First word of a `NAME.pub` file.
pub const PUBLIC_KEY_TAG: &str = "rewind-ed25519-public-key";
/// Payload type of a trust root body, for [`pae`].
pub const TRUST_ROOT_TYPE: &str = "application/vnd.rewind.trust-root+toml";
/// The line that separates a trust root's signed body from the signatures
/// of the previous root's keys over it.
pub const SIGNATURE_MARKER: &str =
    "# ---- signatures by keys of the previous root over every byte above this line ----";

/// Why keys or a trust root could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("{0}")]
    Key(String),
    #[error("trust root: {0}")]
    Root(String),
}

/// The key id of a public key: hex of the first 16 bytes of its BLAKE3.
#[must_use]
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&blake3::hash(public.as_bytes()).as_bytes()[..16])
}

/// DSSE's pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP
/// len(body) SP body`, lengths in ASCII decimal. Signatures are over these
/// bytes, so the type is bound to the payload and nothing is re-encoded.
#[must_use]
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Writes a `NAME.key` file's content for a 32-byte seed.
#[must_use]
pub fn secret_key_text(key: &SigningKey) -> String {
    format!("{SECRET_KEY_TAG} {}\n", hex::encode(key.to_bytes()))
}

/// Writes a `NAME.pub` file's content.
#[must_use]
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_TAG} {}\n", hex::encode(key.as_bytes()))
}

fn tagged_hex<const N: usize>(text: &str, tag: &str, what: &str) -> Result<[u8; N], TrustError> {
    let (t, h) = text.trim().split_once(' ').unwrap_or(("", ""));
    if t != tag {
        let hint = match t {
            SECRET_KEY_TAG => "this is a secret key (NAME.key); give the public key NAME.pub",
            PUBLIC_KEY_TAG => "this is a public key (NAME.pub); signing needs the secret key NAME.key",
            _ => "make one with `rewindctl keys generate --out NAME`",
        };
        return Err(TrustError::Key(format!("not a Rewind {what}: {hint}")));
    }
    let bytes = hex::decode(h.trim()).map_err(|_| TrustError::Key(format!("{what}: the key is not hex")))?;
    bytes.try_into().map_err(|_| TrustError::Key(format!("{what}: expected {N} bytes")))
}

/// Parses a `NAME.key` file.
///
/// # Errors
/// [`TrustError::Key`] saying what the file is instead.
pub fn parse_secret_key(text: &str) -> Result<SigningKey, TrustError> {
    Ok(SigningKey::from_bytes(&tagged_hex::<32>(text, SECRET_KEY_TAG, "secret key")?))
}

/// Parses a `NAME.pub` file.
///
/// # Errors
/// [`TrustError::Key`] saying what the file is instead.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, TrustError> {
    let b = tagged_hex::<32>(text, PUBLIC_KEY_TAG, "public key")?;
    VerifyingKey::from_bytes(&b).map_err(|e| TrustError::Key(format!("public key: not a valid Ed25519 point ({e})")))
}

/// One signature in an envelope or a rotated root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// [`key_id`] of the signing key.
    pub keyid: String,
    /// Ed25519 signature over [`pae`] bytes, hex (64 bytes).
    pub sig: String,
}

impl Signature {
    /// Signs `pae(payload_type, payload)`.
    #[must_use]
    pub fn create(key: &SigningKey, payload_type: &str, payload: &[u8]) -> Self {
        Signature {
            keyid: key_id(&key.verifying_key()),
            sig: hex::encode(key.sign(&pae(payload_type, payload)).to_bytes()),
        }
    }

    fn verifies(&self, key: &VerifyingKey, payload_type: &str, payload: &[u8]) -> bool {
        let Ok(bytes) = hex::decode(&self.sig) else { return false };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes) else { return false };
        key.verify(&pae(payload_type, payload), &DalekSignature::from_bytes(&bytes)).is_ok()
    }
}

/// A key the root trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub owner: String,
    pub keyid: String,
    /// Hex of the 32-byte Ed25519 public key.
    pub public: String,
}

/// The signed part of `trust.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRoot {
    /// 1 for a root made by `trust init`; each rotation adds one.
    pub version: u64,
    /// How many valid signatures by distinct, non-revoked keys a plan needs.
    pub threshold: usize,
    /// Key ids that never count, even when listed under `[[key]]`.
    #[serde(default)]
    pub revoked: Vec<String>,
    #[serde(rename = "key")]
    pub keys: Vec<TrustedKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureTail {
    #[serde(default, rename = "signature")]
    signatures: Vec<Signature>,
}

/// A parsed `trust.toml`: the root, the exact bytes it was parsed from
/// (what rotation signatures cover) and those signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustFile {
    pub root: TrustRoot,
    pub body: String,
    pub signatures: Vec<Signature>,
    keys: BTreeMap<String, (String, VerifyingKey)>,
}

/// How the signatures of one envelope counted against a root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignatureCount {
    pub threshold: usize,
    /// Owners of the keys whose signatures counted, by key id.
    pub valid: BTreeMap<String, String>,
    /// Why the other signatures did not count, one line each.
    pub ignored: Vec<String>,
    /// Owners of trusted, non-revoked keys that have not signed.
    pub unsigned: Vec<String>,
}

impl SignatureCount {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.threshold > 0 && self.valid.len() >= self.threshold
    }

    /// A one-line explanation: `1 of 2 required signatures (alice); ...`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} of {} required valid signatures from distinct trusted keys ({})",
            self.valid.len(),
            self.threshold,
            if self.valid.is_empty() {
                "none".to_string()
            } else {
                self.valid.values().cloned().collect::<Vec<_>>().join(", ")
            }
        );
        if !self.ok() && !self.unsigned.is_empty() {
            s.push_str(&format!(
                "; {} more needed from: {}",
                self.threshold - self.valid.len(),
                self.unsigned.join(", ")
            ));
        }
        for i in &self.ignored {
            s.push_str("; ");
            s.push_str(i);
        }
        s
    }
}

impl fmt::Display for SignatureCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TrustFile {
    /// Parses `trust.toml`: the body above [`SIGNATURE_MARKER`] as the root,
    /// the rest as `[[signature]]` tables only.
    ///
    /// # Errors
    /// [`TrustError::Root`] for syntax errors, unknown keys, a key id that
    /// does not match its public key, a duplicated key, or a threshold of 0
    /// or above the number of usable keys.
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let (body, tail) = match text.find(&format!("\n{SIGNATURE_MARKER}")) {
            Some(i) => (&text[..=i], &text[i + 1 + SIGNATURE_MARKER.len()..]),
            None if text.starts_with(SIGNATURE_MARKER) => ("", &text[SIGNATURE_MARKER.len()..]),
            None => (text, ""),
        };
        let root: TrustRoot = toml::from_str(body).map_err(|e| TrustError::Root(e.message().trim().to_string()))?;
        let tail: SignatureTail = toml::from_str(tail).map_err(|e| {
            TrustError::Root(format!(
                "below the signature marker only [[signature]] tables may follow: {}",
                e.message().trim()
            ))
        })?;
        let mut keys = BTreeMap::new();
        for k in &root.keys {
            let bytes: [u8; 32] = hex::decode(&k.public)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| TrustError::Root(format!("key of {}: `public` is not 64 hex characters", k.owner)))?;
            let vk = VerifyingKey::from_bytes(&bytes)
                .map_err(|e| TrustError::Root(format!("key of {}: not an Ed25519 public key ({e})", k.owner)))?;
            if key_id(&vk) != k.keyid {
                return Err(TrustError::Root(format!(
                    "key of {}: keyid {} does not match its public key (expected {}); regenerate the root with `rewindctl trust init`",
                    k.owner,
                    k.keyid,
                    key_id(&vk)
                )));
            }
            if keys.insert(k.keyid.clone(), (k.owner.clone(), vk)).is_some() {
                return Err(TrustError::Root(format!("key {} ({}) is listed twice", k.keyid, k.owner)));
            }
        }
        let usable = keys.keys().filter(|id| !root.revoked.contains(id)).count();
        if root.threshold == 0 || root.threshold > usable {
            return Err(TrustError::Root(format!(
                "threshold {} cannot be met: {usable} usable (listed, not revoked) key(s)",
                root.threshold
            )));
        }
        Ok(TrustFile { root, body: body.to_string(), signatures: tail.signatures, keys })
    }

    /// Renders a root (unsigned) as `trust.toml` text.
    #[must_use]
    pub fn render(root: &TrustRoot) -> String {
        let mut s = String::from(
            "# Rewind trust root: the keys that may sign plans and how many must (docs/trust.md).\n\
             # Made by `rewindctl trust init`; rotated with `rewindctl trust rotate`.\n",
        );
        s.push_str(&format!("version = {}\nthreshold = {}\n", root.version, root.threshold));
        s.push_str(&format!(
            "revoked = [{}]\n",
            root.revoked.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ")
        ));
        for k in &root.keys {
            s.push_str(&format!(
                "\n[[key]]\nowner = {}\nkeyid = \"{}\"\npublic = \"{}\"\n",
                toml_string(&k.owner),
                k.keyid,
                k.public
            ));
        }
        s
    }

    /// The whole file: body, marker and signatures (no marker when none).
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = self.body.clone();
        if !self.signatures.is_empty() {
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(SIGNATURE_MARKER);
            s.push('\n');
            for sig in &self.signatures {
                s.push_str(&format!("[[signature]]\nkeyid = \"{}\"\nsig = \"{}\"\n", sig.keyid, sig.sig));
            }
        }
        s
    }

    /// Owner of a trusted key id.
    #[must_use]
    pub fn owner(&self, keyid: &str) -> Option<&str> {
        self.keys.get(keyid).map(|(o, _)| o.as_str())
    }

    /// Counts the signatures over `pae(payload_type, payload)` that this root
    /// accepts: each trusted, non-revoked key once, only if it verifies.
    #[must_use]
    pub fn count_signatures(&self, signatures: &[Signature], payload_type: &str, payload: &[u8]) -> SignatureCount {
        let mut count = SignatureCount { threshold: self.root.threshold, ..SignatureCount::default() };
        let mut seen = BTreeSet::new();
        for s in signatures {
            if !seen.insert(s.keyid.clone()) {
                let who = self.owner(&s.keyid).unwrap_or("unknown key");
                count.ignored.push(format!("a second signature by key {} ({who}) counts once", s.keyid));
                continue;
            }
            let Some((owner, key)) = self.keys.get(&s.keyid) else {
                count.ignored.push(format!(
                    "signature by unknown key {} (not in trust root version {})",
                    s.keyid, self.root.version
                ));
                continue;
            };
            if self.root.revoked.contains(&s.keyid) {
                count.ignored.push(format!("signature by revoked key {} ({owner})", s.keyid));
                continue;
            }
            if !s.verifies(key, payload_type, payload) {
                count.ignored.push(format!("signature by key {} ({owner}) does not verify over this payload", s.keyid));
                continue;
            }
            count.valid.insert(s.keyid.clone(), owner.clone());
        }
        count.unsigned = self
            .keys
            .iter()
            .filter(|(id, _)| !count.valid.contains_key(*id) && !self.root.revoked.contains(id))
            .map(|(_, (owner, _))| owner.clone())
            .collect();
        count
    }

    /// Checks that `self` is a valid successor of `previous`: version + 1,
    /// signed over its body by `previous.threshold` valid distinct keys of
    /// `previous`.
    ///
    /// # Errors
    /// [`TrustError::Root`] naming the version gap or the missing signatures.
    pub fn verify_rotation(&self, previous: &TrustFile) -> Result<SignatureCount, TrustError> {
        if self.root.version != previous.root.version + 1 {
            return Err(TrustError::Root(format!(
                "version {} does not follow version {}; rotate one version at a time",
                self.root.version, previous.root.version
            )));
        }
        let count = previous.count_signatures(&self.signatures, TRUST_ROOT_TYPE, self.body.as_bytes());
        if count.ok() {
            Ok(count)
        } else {
            Err(TrustError::Root(format!(
                "version {} is not signed by enough keys of version {}: {count}",
                self.root.version, previous.root.version
            )))
        }
    }

    /// Adds (or replaces) `key`'s rotation signature over the body.
    pub fn sign_body(&mut self, key: &SigningKey) {
        let sig = Signature::create(key, TRUST_ROOT_TYPE, self.body.as_bytes());
        self.signatures.retain(|s| s.keyid != sig.keyid);
        self.signatures.push(sig);
    }
}

/// A TOML basic string: JSON's string escapes are a subset of TOML's.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn root_of(version: u64, threshold: usize, keys: &[(&str, &SigningKey)], revoked: Vec<String>) -> TrustFile {
        let root = TrustRoot {
            version,
            threshold,
            revoked,
            keys: keys
                .iter()
                .map(|(o, k)| TrustedKey {
                    owner: (*o).to_string(),
                    keyid: key_id(&k.verifying_key()),
                    public: hex::encode(k.verifying_key().as_bytes()),
                })
                .collect(),
        };
        TrustFile::parse(&TrustFile::render(&root)).unwrap()
    }

    #[test]
    fn key_files_round_trip_and_name_the_wrong_kind() {
        let k = key(1);
        assert_eq!(parse_secret_key(&secret_key_text(&k)).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(parse_public_key(&public_key_text(&k.verifying_key())).unwrap(), k.verifying_key());
        let e = parse_secret_key(&public_key_text(&k.verifying_key())).unwrap_err();
        assert!(e.to_string().contains("public key"), "{e}");
    }

    #[test]
    fn pae_matches_dsse() {
        assert_eq!(pae("t", b"abc"), b"DSSEv1 1 t 3 abc".to_vec());
    }

    #[test]
    fn threshold_counts_distinct_trusted_valid_keys_only() {
        let (a, b, c, x) = (key(1), key(2), key(3), key(9));
        let t = root_of(1, 2, &[("a", &a), ("b", &b), ("c", &c)], vec![key_id(&c.verifying_key())]);
        let p = b"payload";
        let sa = Signature::create(&a, "x", p);
        let count = t.count_signatures(&[sa.clone(), sa.clone()], "x", p);
        assert!(!count.ok() && count.describe().contains("counts once"), "{count}");
        let count = t.count_signatures(&[sa.clone(), Signature::create(&x, "x", p)], "x", p);
        assert!(!count.ok() && count.describe().contains("unknown key"), "{count}");
        let count = t.count_signatures(&[sa.clone(), Signature::create(&c, "x", p)], "x", p);
        assert!(!count.ok() && count.describe().contains("revoked"), "{count}");
        let count = t.count_signatures(&[sa.clone(), Signature::create(&b, "y", p)], "x", p);
        assert!(!count.ok() && count.describe().contains("does not verify"), "{count}");
        let count = t.count_signatures(&[sa, Signature::create(&b, "x", p)], "x", p);
        assert!(count.ok(), "{count}");
    }

    #[test]
    fn rotation_needs_old_threshold_and_nothing_below_the_marker_is_trusted() {
        let (a, b, c, d) = (key(1), key(2), key(3), key(4));
        let old = root_of(1, 2, &[("a", &a), ("b", &b), ("c", &c)], vec![]);
        let mut new = root_of(2, 1, &[("d", &d)], vec![]);
        new.sign_body(&a);
        let reparsed = TrustFile::parse(&new.to_text()).unwrap();
        assert!(reparsed.verify_rotation(&old).is_err());
        new.sign_body(&b);
        let reparsed = TrustFile::parse(&new.to_text()).unwrap();
        assert!(reparsed.verify_rotation(&old).is_ok());
        let smuggled = format!("{}[[key]]\nowner = \"x\"\nkeyid = \"00\"\npublic = \"00\"\n", new.to_text());
        assert!(TrustFile::parse(&smuggled).is_err());
        let edited = new.to_text().replace("threshold = 1", "threshold = 1 ");
        assert!(TrustFile::parse(&edited).unwrap().verify_rotation(&old).is_err());
    }
}
