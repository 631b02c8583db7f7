//! Plans, envelopes and bundles (DESIGN.md §4): what `rewindctl release
//! build` writes, people sign, and agents verify before they run anything.
//!
//! - A [`Plan`] is one apply or rollback, bound to the state it starts from
//!   (installed sequence + schema digest per target) and carrying the release
//!   content it needs (`steps`: the [`Release`] filtered for its
//!   granularity), with an expiry.
//! - An [`Envelope`] holds a plan's exact JSON bytes (hex) and Ed25519
//!   signatures over `pae(payload_type, payload)` ([`crate::trust::pae`]);
//!   nothing is ever re-encoded before verifying.
//! - A [`Bundle`] is one JSON file: the apply envelope, a pre-signed
//!   rollback envelope per granularity (release, each target, each
//!   migration, each flag) and a pre-signed activation envelope per flag
//!   (an apply plan of granularity `flag` that sets the flag's `value` on
//!   an endpoint that has the release installed: how `activate = "manual"`
//!   flags are turned on, and how a kill switch is turned back on). Its
//!   outer fields are an index for people; agents trust only what is inside
//!   a verified payload.
//!
//! Guarantees of [`Envelope::open`]: a payload over [`MAX_PAYLOAD_BYTES`] is
//! refused before any decoding or signature work; a plan is returned only
//! with `threshold` valid signatures from distinct trusted keys, of the
//! expected type, and not expired.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::release::Release;
use crate::trust::{Signature, SignatureCount, TrustFile};

/// Payload type of a plan.
pub const PLAN_TYPE: &str = "application/vnd.rewind.plan+json";
/// `format` of a plan payload.
pub const PLAN_FORMAT: &str = "rewind-plan-1";
/// `format` of a bundle file.
pub const BUNDLE_FORMAT: &str = "rewind-bundle-1";
/// Largest plan payload an agent decodes (the exact JSON bytes, before hex).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// Largest bundle file an agent or rewindctl reads.
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

/// Apply or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    Apply,
    Rollback,
}

/// What a rollback plan undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Release,
    Target,
    Migration,
    Flag,
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "release" => Ok(Self::Release),
            "target" => Ok(Self::Target),
            "migration" => Ok(Self::Migration),
            "flag" => Ok(Self::Flag),
            _ => Err(format!("granularity `{s}`: use release, target, migration or flag")),
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Release => "release",
            Self::Target => "target",
            Self::Migration => "migration",
            Self::Flag => "flag",
        })
    }
}

/// A target's schema (and, when predicted, data) digest in a [`StateSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetState {
    /// `b3:...`; absent when unknown (built without a sample of this target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Data digest of the sample, informative only: endpoints' data differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A state of the endpoint: the product's installed sequence and the schema
/// digest of each target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// Installed sequence; `0` means no release installed; absent means not
    /// constrained (only the replay rule applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetState>,
}

/// One signed unit of work (the payload of an [`Envelope`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// [`PLAN_FORMAT`].
    pub format: String,
    pub id: String,
    pub kind: PlanKind,
    pub granularity: Granularity,
    /// The release version, target name, migration id or flag name.
    pub subject: String,
    pub product: String,
    pub release: String,
    pub sequence: u64,
    /// The bundle this plan was built in (all plans of a bundle share it).
    pub bundle: String,
    /// The state the endpoint must be in for the plan to run.
    pub from: StateSpec,
    /// The state the plan must reach (schema digests when rehearsed).
    pub to: StateSpec,
    /// The release content this plan runs, filtered for its granularity, in
    /// apply order.
    pub steps: Release,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; agents refuse the plan from this time on.
    pub expires: u64,
}

/// A payload with its type and signatures (DSSE-like).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub payload_type: String,
    /// Hex of the exact payload bytes.
    pub payload: String,
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

/// Why a plan was refused: a stable `code` and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// `oversize`, `malformed`, `signatures`, `expired`, `kind`, `replay`,
    /// `start-state`, `trust-root`.
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    #[must_use]
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }
}

impl Envelope {
    /// Wraps `plan` (serialised once; these bytes are what is signed).
    ///
    /// # Panics
    /// Never: plans always serialise.
    #[must_use]
    pub fn of_plan(plan: &Plan) -> Self {
        let bytes = serde_json::to_vec_pretty(plan).expect("plans serialise");
        Envelope { payload_type: PLAN_TYPE.into(), payload: hex::encode(bytes), signatures: Vec::new() }
    }

    /// The exact payload bytes, refusing oversize or non-hex payloads before
    /// decoding.
    ///
    /// # Errors
    /// [`Refusal`] `oversize` or `malformed`.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, Refusal> {
        if self.payload.len() > MAX_PAYLOAD_BYTES * 2 {
            return Err(Refusal::new(
                "oversize",
                format!(
                    "payload is {} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit; split the release or move data out of its scripts",
                    self.payload.len() / 2
                ),
            ));
        }
        hex::decode(&self.payload)
            .map_err(|e| Refusal::new("malformed", format!("payload is not hex ({e}); rebuild the bundle")))
    }

    /// Adds `key`'s signature unless it already signed (idempotent per key).
    /// Returns whether a signature was added.
    ///
    /// # Errors
    /// When the payload cannot be decoded.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) -> Result<bool, Refusal> {
        let bytes = self.payload_bytes()?;
        let sig = Signature::create(key, &self.payload_type, &bytes);
        if self.signatures.iter().any(|s| s == &sig) {
            return Ok(false);
        }
        // A stale or corrupt signature by the same key is replaced.
        self.signatures.retain(|s| s.keyid != sig.keyid);
        self.signatures.push(sig);
        Ok(true)
    }

    /// Counts signatures against `trust` (no threshold decision).
    ///
    /// # Errors
    /// When the payload is oversize or malformed.
    pub fn count(&self, trust: &TrustFile) -> Result<SignatureCount, Refusal> {
        let bytes = self.payload_bytes()?;
        Ok(trust.count_signatures(&self.signatures, &self.payload_type, &bytes))
    }

    /// Verifies and decodes the plan: size, signatures (threshold of
    /// distinct trusted keys), type, format and expiry at `now` (unix
    /// seconds).
    ///
    /// # Errors
    /// A [`Refusal`] with its code.
    pub fn open(&self, trust: &TrustFile, now: u64) -> Result<(Plan, SignatureCount), Refusal> {
        let bytes = self.payload_bytes()?;
        if self.payload_type != PLAN_TYPE {
            return Err(Refusal::new(
                "malformed",
                format!("payload type is `{}`, expected `{PLAN_TYPE}`", self.payload_type),
            ));
        }
        let count = trust.count_signatures(&self.signatures, &self.payload_type, &bytes);
        if !count.ok() {
            return Err(Refusal::new(
                "signatures",
                format!("{count}; collect more with `rewindctl release sign BUNDLE --key NAME.key`"),
            ));
        }
        let plan: Plan = serde_json::from_slice(&bytes)
            .map_err(|e| Refusal::new("malformed", format!("signed payload is not a {PLAN_FORMAT} plan: {e}")))?;
        if plan.format != PLAN_FORMAT {
            return Err(Refusal::new(
                "malformed",
                format!("plan format `{}` is not {PLAN_FORMAT}; use a matching rewind-agent", plan.format),
            ));
        }
        if plan.steps.name != plan.product || plan.steps.version != plan.release || plan.steps.sequence != plan.sequence
        {
            return Err(Refusal::new(
                "malformed",
                format!(
                    "plan {} names {} {} but its steps are {} {}; rebuild the bundle",
                    plan.id, plan.product, plan.release, plan.steps.name, plan.steps.version
                ),
            ));
        }
        if now >= plan.expires {
            return Err(Refusal::new(
                "expired",
                format!(
                    "plan {} expired {} s ago (expires at unix {}); build and sign a new bundle (rewindctl release build --expires DUR)",
                    plan.id,
                    now - plan.expires,
                    plan.expires
                ),
            ));
        }
        Ok((plan, count))
    }
}

/// A pre-signed rollback (or flag activation) plan, indexed by
/// granularity and subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    pub granularity: Granularity,
    pub subject: String,
    pub envelope: Envelope,
}

/// The file `release build` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    pub id: String,
    pub product: String,
    pub release: String,
    pub sequence: u64,
    pub created: u64,
    pub expires: u64,
    pub apply: Envelope,
    pub rollback: Vec<PlanEntry>,
    /// One activation plan per flag (granularity `flag`, subject the flag's
    /// name). Absent from bundles of releases without flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activate: Vec<PlanEntry>,
}

impl Bundle {
    /// Reads a bundle file, refusing files over [`MAX_BUNDLE_BYTES`].
    ///
    /// # Errors
    /// [`Refusal`] `oversize` or `malformed` (unreadable, not a bundle).
    pub fn load(path: &Path) -> Result<Self, Refusal> {
        let bad = |m: String| Refusal::new("malformed", format!("bundle {}: {m}", path.display()));
        let len = std::fs::metadata(path).map_err(|e| bad(format!("cannot read: {e}")))?.len();
        if len > MAX_BUNDLE_BYTES {
            return Err(Refusal::new(
                "oversize",
                format!("bundle {} is {len} bytes, over the {MAX_BUNDLE_BYTES}-byte limit", path.display()),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let b: Bundle = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a {BUNDLE_FORMAT} file: {e}")))?;
        if b.format != BUNDLE_FORMAT {
            return Err(bad(format!("format `{}` is not {BUNDLE_FORMAT}", b.format)));
        }
        Ok(b)
    }

    /// Every envelope with a label: `apply`, `rollback release 2026.11.0`,
    /// ..., `activate flag new_checkout`.
    pub fn envelopes_mut(&mut self) -> impl Iterator<Item = (String, &mut Envelope)> {
        std::iter::once(("apply".to_string(), &mut self.apply))
            .chain(
                self.rollback
                    .iter_mut()
                    .map(|r| (format!("rollback {} {}", r.granularity, r.subject), &mut r.envelope)),
            )
            .chain(self.activate.iter_mut().map(|r| (format!("activate flag {}", r.subject), &mut r.envelope)))
    }

    /// Every envelope with a label.
    pub fn envelopes(&self) -> impl Iterator<Item = (String, &Envelope)> {
        std::iter::once(("apply".to_string(), &self.apply))
            .chain(self.rollback.iter().map(|r| (format!("rollback {} {}", r.granularity, r.subject), &r.envelope)))
            .chain(self.activate.iter().map(|r| (format!("activate flag {}", r.subject), &r.envelope)))
    }

    /// The activation envelope of flag `name`.
    ///
    /// # Errors
    /// A message listing the flags the bundle can turn on.
    pub fn activation_envelope(&self, name: &str) -> Result<&Envelope, String> {
        self.activate.iter().find(|r| r.subject == name).map(|r| &r.envelope).ok_or_else(|| {
            let names: Vec<&str> = self.activate.iter().map(|r| r.subject.as_str()).collect();
            format!(
                "bundle {} has no activation plan for flag {name}; {}",
                self.id,
                if names.is_empty() {
                    "it has none (a release without flags, or a bundle built before activation plans: rebuild it)"
                        .to_string()
                } else {
                    format!("it has: {}", names.join(", "))
                }
            )
        })
    }

    /// The rollback envelope for `granularity` and `subject` (the release
    /// version may be omitted for the whole release).
    ///
    /// # Errors
    /// A message listing what the bundle holds.
    pub fn rollback_envelope(&self, granularity: Granularity, subject: Option<&str>) -> Result<&Envelope, String> {
        self.rollback
            .iter()
            .find(|r| {
                r.granularity == granularity
                    && (subject == Some(r.subject.as_str())
                        || (subject.is_none() && granularity == Granularity::Release))
            })
            .map(|r| &r.envelope)
            .ok_or_else(|| {
                format!(
                    "bundle {} has no rollback plan for {granularity} {}; it has: {}",
                    self.id,
                    subject.unwrap_or("(no --subject given)"),
                    self.rollback
                        .iter()
                        .map(|r| format!("{} {}", r.granularity, r.subject))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// What `build_plans` needs beyond the release.
#[derive(Debug, Clone)]
pub struct BuildInput {
    pub bundle_id: String,
    pub created: u64,
    pub expires: u64,
    /// Installed sequence the apply starts from (`Some(0)`: nothing), or
    /// unconstrained.
    pub from_sequence: Option<u64>,
    /// Per target: schema/digest before the apply (from samples).
    pub before: BTreeMap<String, TargetState>,
    /// Per target: schema/digest predicted after the apply (rehearsal).
    pub after: BTreeMap<String, TargetState>,
}

/// The release cut down to `targets` (their migrations, or only
/// `migrations` when given, and their checks) and the flags named.
fn filtered(release: &Release, targets: &[&str], migrations: Option<&[String]>, flags: &[&str]) -> Release {
    let mut r = release.clone();
    r.migrations.retain(|m| targets.contains(&m.target.as_str()) && migrations.is_none_or(|ids| ids.contains(&m.id)));
    r.checks.retain(|c| targets.contains(&c.target.as_str()));
    r.flags.retain(|f| flags.contains(&f.name.as_str()));
    r
}

/// Migration `id` and every migration of its target that depends on it,
/// directly or not, in apply order: what must be undone with it.
#[must_use]
pub fn with_dependents(release: &Release, id: &str) -> Vec<String> {
    let mut out = vec![id.to_string()];
    for m in &release.migrations {
        if m.after.iter().any(|a| out.contains(a)) && !out.contains(&m.id) {
            out.push(m.id.clone());
        }
    }
    release.migrations.iter().filter(|m| out.contains(&m.id)).map(|m| m.id.clone()).collect()
}

fn plan_id(bundle: &str, kind: PlanKind, granularity: Granularity, subject: &str) -> String {
    let h = blake3::hash(format!("{bundle}\0{kind:?}\0{granularity}\0{subject}").as_bytes());
    format!("plan-{}", &h.to_hex()[..16])
}

fn pick(states: &BTreeMap<String, TargetState>, targets: &[&str]) -> BTreeMap<String, TargetState> {
    targets.iter().map(|t| ((*t).to_string(), states.get(*t).cloned().unwrap_or_default())).collect()
}

/// Every plan of a bundle: the apply plan, the rollback plans, the flag
/// activation plans.
#[derive(Debug, Clone)]
pub struct Plans {
    pub apply: Plan,
    pub rollbacks: Vec<Plan>,
    pub activations: Vec<Plan>,
}

/// Builds the apply plan, every rollback plan and every flag activation
/// plan of a release.
#[must_use]
pub fn build_plans(release: &Release, input: &BuildInput) -> Plans {
    let all: Vec<&str> = release.targets.iter().map(String::as_str).collect();
    let plan = |kind, granularity, subject: &str, from, to, steps| Plan {
        format: PLAN_FORMAT.into(),
        id: plan_id(&input.bundle_id, kind, granularity, subject),
        kind,
        granularity,
        subject: subject.to_string(),
        product: release.name.clone(),
        release: release.version.clone(),
        sequence: release.sequence,
        bundle: input.bundle_id.clone(),
        from,
        to,
        steps,
        created: input.created,
        expires: input.expires,
    };
    let installed = StateSpec { sequence: Some(release.sequence), targets: BTreeMap::new() };
    let spec = |sequence, states: &BTreeMap<String, TargetState>, targets: &[&str]| StateSpec {
        sequence,
        targets: pick(states, targets),
    };
    let apply = plan(
        PlanKind::Apply,
        Granularity::Release,
        &release.version,
        spec(input.from_sequence, &input.before, &all),
        spec(Some(release.sequence), &input.after, &all),
        release.clone(),
    );
    let mut rollbacks = vec![plan(
        PlanKind::Rollback,
        Granularity::Release,
        &release.version,
        spec(Some(release.sequence), &input.after, &all),
        spec(input.from_sequence, &input.before, &all),
        release.clone(),
    )];
    // Partial rollbacks leave the release installed (it is still partly
    // applied), so their end state keeps the release's sequence.
    for t in &release.targets {
        let one = [t.as_str()];
        rollbacks.push(plan(
            PlanKind::Rollback,
            Granularity::Target,
            t,
            spec(Some(release.sequence), &input.after, &one),
            spec(Some(release.sequence), &input.before, &one),
            filtered(release, &one, None, &[]),
        ));
    }
    for m in &release.migrations {
        let one = [m.target.as_str()];
        let ids = with_dependents(release, &m.id);
        rollbacks.push(plan(
            PlanKind::Rollback,
            Granularity::Migration,
            &m.id,
            spec(Some(release.sequence), &input.after, &one),
            StateSpec { sequence: Some(release.sequence), targets: BTreeMap::new() },
            filtered(release, &one, Some(&ids), &[]),
        ));
    }
    // A flag's rollback and activation both need the release installed and
    // leave it installed.
    let flag_plan = |kind, f: &crate::release::Flag| {
        plan(
            kind,
            Granularity::Flag,
            &f.name,
            installed.clone(),
            installed.clone(),
            filtered(release, &[], None, &[f.name.as_str()]),
        )
    };
    rollbacks.extend(release.flags.iter().map(|f| flag_plan(PlanKind::Rollback, f)));
    let activations = release.flags.iter().map(|f| flag_plan(PlanKind::Apply, f)).collect();
    Plans { apply, rollbacks, activations }
}

/// Wraps plans into a bundle (unsigned).
#[must_use]
pub fn bundle_of(release: &Release, input: &BuildInput, plans: &Plans) -> Bundle {
    let entry =
        |p: &Plan| PlanEntry { granularity: p.granularity, subject: p.subject.clone(), envelope: Envelope::of_plan(p) };
    Bundle {
        format: BUNDLE_FORMAT.into(),
        id: input.bundle_id.clone(),
        product: release.name.clone(),
        release: release.version.clone(),
        sequence: release.sequence,
        created: input.created,
        expires: input.expires,
        apply: Envelope::of_plan(&plans.apply),
        rollback: plans.rollbacks.iter().map(entry).collect(),
        activate: plans.activations.iter().map(entry).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{TrustRoot, TrustedKey, key_id};
    use ed25519_dalek::SigningKey;

    fn release() -> Release {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notes-app/releases/2026.11.0");
        Release::load(&dir).unwrap()
    }

    fn trust(keys: &[&SigningKey], threshold: usize) -> TrustFile {
        let root = TrustRoot {
            version: 1,
            threshold,
            revoked: vec![],
            keys: keys
                .iter()
                .enumerate()
                .map(|(i, k)| TrustedKey {
                    owner: format!("k{i}"),
                    keyid: key_id(&k.verifying_key()),
                    public: hex::encode(k.verifying_key().as_bytes()),
                })
                .collect(),
        };
        TrustFile::parse(&TrustFile::render(&root)).unwrap()
    }

    fn input() -> BuildInput {
        BuildInput {
            bundle_id: "bundle-test".into(),
            created: 100,
            expires: 200,
            from_sequence: None,
            before: BTreeMap::new(),
            after: BTreeMap::new(),
        }
    }

    #[test]
    fn bundle_has_a_rollback_per_granularity_with_filtered_steps() {
        let r = release();
        let Plans { apply, rollbacks: rb, activations } = build_plans(&r, &input());
        assert_eq!(apply.steps, r);
        let subjects: Vec<String> = rb.iter().map(|p| format!("{} {}", p.granularity, p.subject)).collect();
        assert_eq!(
            subjects,
            [
                "release 2026.11.0",
                "target notes",
                "target settings",
                "migration 0001_add_currency",
                "migration 0002_normalize_status",
                "migration 0003_settings_theme",
                "flag new_checkout"
            ]
        );
        let notes = &rb[1].steps;
        assert!(notes.migrations.iter().all(|m| m.target == "notes") && notes.flags.is_empty());
        let m1 = &rb[3].steps;
        assert_eq!(
            m1.migrations.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["0001_add_currency", "0002_normalize_status"]
        );
        let flag = &rb[6].steps;
        assert!(flag.migrations.is_empty() && flag.checks.is_empty() && flag.flags.len() == 1);
        // One activation per flag: an apply plan of the flag alone, from and
        // to the installed release.
        let on: Vec<String> =
            activations.iter().map(|p| format!("{:?} {} {}", p.kind, p.granularity, p.subject)).collect();
        assert_eq!(on, ["Apply flag new_checkout"]);
        assert_eq!(activations[0].steps, rb[6].steps);
        assert_eq!(activations[0].from.sequence, Some(r.sequence));
        assert_eq!(activations[0].to.sequence, Some(r.sequence));
        let ids: std::collections::BTreeSet<_> =
            rb.iter().chain(&activations).map(|p| p.id.clone()).chain([apply.id]).collect();
        assert_eq!(ids.len(), 9, "plan ids are distinct");
        let b = bundle_of(&r, &input(), &build_plans(&r, &input()));
        assert!(b.activation_envelope("new_checkout").is_ok());
        let e = b.activation_envelope("nope").unwrap_err();
        assert!(e.ends_with("it has: new_checkout"), "{e}");
        let labels: Vec<String> = b.envelopes().map(|(l, _)| l).collect();
        assert_eq!(labels.last().map(String::as_str), Some("activate flag new_checkout"));
    }

    #[test]
    fn open_checks_threshold_expiry_and_size() {
        let (a, b) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let t = trust(&[&a, &b], 2);
        let apply = build_plans(&release(), &input()).apply;
        let mut env = Envelope::of_plan(&apply);
        assert!(env.sign(&a).unwrap());
        assert!(!env.sign(&a).unwrap(), "signing twice with one key adds nothing");
        assert_eq!(env.open(&t, 150).unwrap_err().code, "signatures");
        env.sign(&b).unwrap();
        assert_eq!(env.open(&t, 150).unwrap().0, apply);
        assert_eq!(env.open(&t, 200).unwrap_err().code, "expired");
        let mut tampered = env.clone();
        tampered.payload = hex::encode(
            hex::decode(&env.payload).unwrap().iter().map(|b| if *b == b'7' { b'8' } else { *b }).collect::<Vec<_>>(),
        );
        assert_eq!(tampered.open(&t, 150).unwrap_err().code, "signatures");
        let big = Envelope {
            payload_type: PLAN_TYPE.into(),
            payload: "00".repeat(MAX_PAYLOAD_BYTES + 1),
            signatures: vec![],
        };
        assert_eq!(big.open(&t, 150).unwrap_err().code, "oversize");
    }
}
