//! `rewindctl release build | sign | verify`: a release directory becomes a
//! bundle of plans (apply + pre-signed rollbacks per granularity), people
//! sign it one key at a time, and anyone can check it against a trust root
//! before it goes anywhere (docs/trust.md).
//!
//! Guarantees: `build` writes nothing unless the release lints clean and,
//! with `--sample`, passes its rehearsal (whose predicted schema digests
//! become the plans' target state); `sign` adds exactly one signature per
//! envelope and is idempotent per key; `verify` exits 0 only when every
//! envelope has the root's threshold of valid distinct signatures and no
//! plan has expired.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use rewind_shared::Release;
use rewind_shared::bundle::{
    BuildInput, Bundle, MAX_PAYLOAD_BYTES, PLAN_TYPE, Plan, TargetState, build_plans, bundle_of,
};
use rewind_shared::duration::parse_duration;
use rewind_shared::trust::key_id;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::{keys, lint, output, rehearsal, trust};

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl release build examples/notes-app/releases/2026.11.0 \
--sample notes=./notes.db --sample settings=./settings.db --expires 14d --out notes-2026.11.0.bundle.json\n\n\
With samples, the release is rehearsed on copies and each plan is bound to the samples' schema \
digests (start) and the predicted ones (target). Without samples the plans' schema digests are \
unknown and agents check only sequences. Sign the result with `rewindctl release sign`.\n\n\
Exit codes: 0 written, 1 the rehearsal failed (nothing written), 2 bad input or lint errors.")]
pub struct BuildArgs {
    /// Release directory (holds release.toml and migrations/).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// TARGET=FILE: a copy of an endpoint's database to rehearse on (only read).
    #[arg(long = "sample", value_name = "TARGET=FILE")]
    pub samples: Vec<String>,
    /// Lifetime of every plan in the bundle (e.g. 30d, 12h, 90m).
    #[arg(long, value_name = "DUR", default_value = "30d")]
    pub expires: String,
    /// Installed sequence the apply plan starts from (0: nothing installed); unconstrained when omitted.
    #[arg(long, value_name = "N")]
    pub from_sequence: Option<u64>,
    /// Bundle file to write (replaced if it exists: all signatures start over).
    #[arg(long, value_name = "BUNDLE")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl release sign notes-2026.11.0.bundle.json --key alice.key\n\
Adds alice's signature to the apply plan, every rollback plan and every flag activation plan; signing twice with one key changes nothing.\n\n\
Exit codes: 0 signed, 2 bad input.")]
pub struct SignArgs {
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Secret key (NAME.key from `rewindctl keys generate`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl release verify notes-2026.11.0.bundle.json --trust trust.toml --json\n\n\
Exit codes: 0 every plan has the threshold of valid signatures from distinct trusted keys and none \
has expired; 2 otherwise (each plan's missing signers are named).")]
pub struct VerifyArgs {
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Trust root to check against.
    #[arg(long, value_name = "trust.toml")]
    pub trust: PathBuf,
    /// Print {"ok", "bundle", "release", "threshold", "plans": [{"name", "plan", "ok", "expired", "signers", "missing", "unsigned", "ignored"}]}.
    #[arg(long)]
    pub json: bool,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| Error::BadInput(format!("the OS random source failed: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn load_bundle(path: &Path) -> Result<Bundle> {
    Bundle::load(path).map_err(|r| Error::BadInput(r.message))
}

fn write_bundle(path: &Path, b: &Bundle) -> Result<()> {
    let text =
        serde_json::to_string_pretty(b).map_err(|e| Error::BadInput(format!("bundle does not serialise: {e}")))?;
    rewind_agent::fsutil::write_atomic(path, text.as_bytes(), 0o644)?;
    Ok(())
}

/// Runs `release build`.
///
/// # Errors
/// [`Error::BadInput`] for lint errors, bad arguments or unusable samples.
pub fn build(args: &BuildArgs) -> Result<u8> {
    let lifetime = parse_duration(&args.expires).map_err(|e| Error::BadInput(format!("--expires: {e}")))?;
    let l = lint::lint(&args.dir, &rewind_agent::state::today());
    if !l.ok() {
        eprint!("{}", lint::to_text(&l));
        return Ok(l.exit_code().max(2));
    }
    let release = Release::load(&args.dir)?;
    let mut sample_map = BTreeMap::new();
    for a in &args.samples {
        let (t, f) = a.split_once('=').ok_or_else(|| Error::BadInput(format!("--sample {a}: expected TARGET=FILE")))?;
        if !release.targets.iter().any(|x| x == t) {
            return Err(Error::BadInput(format!(
                "--sample {a}: release {} has no target `{t}` (targets: {})",
                release.version,
                release.targets.join(", ")
            )));
        }
        if sample_map.insert(t.to_string(), PathBuf::from(f)).is_some() {
            return Err(Error::BadInput(format!("--sample {t}=...: given twice")));
        }
    }
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    let mut rehearsed = None;
    if !sample_map.is_empty() {
        let r = rehearsal::rehearse(&release, &sample_map)?;
        if !r.ok {
            eprint!("{}", rehearsal::to_text(&r));
            eprintln!("rewindctl: the rehearsal failed on the samples; no bundle written");
            return Ok(1);
        }
        for s in &r.samples {
            before.insert(
                s.target.clone(),
                TargetState { schema: Some(s.schema.clone()), digest: Some(s.digest.clone()) },
            );
        }
        for (t, p) in &r.predicted {
            after.insert(t.clone(), TargetState { schema: Some(p.schema.clone()), digest: Some(p.digest.clone()) });
        }
        rehearsed = Some(r.predicted.keys().cloned().collect::<Vec<_>>());
    }
    let created = unix_now();
    let input = BuildInput {
        bundle_id: format!("bundle-{}", random_hex(8)?),
        created,
        expires: created + lifetime.as_secs().max(1),
        from_sequence: args.from_sequence,
        before,
        after,
    };
    let bundle = bundle_of(&release, &input, &build_plans(&release, &input));
    for (name, env) in bundle.envelopes() {
        if env.payload.len() / 2 > MAX_PAYLOAD_BYTES {
            return Err(Error::BadInput(format!(
                "{name}: the plan is {} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit agents accept; split the release",
                env.payload.len() / 2
            )));
        }
    }
    write_bundle(&args.out, &bundle)?;
    if args.json {
        output::print_json(&json!({
            "bundle": args.out, "id": bundle.id, "product": bundle.product, "release": bundle.release, "sequence": bundle.sequence,
            "created": rfc3339(bundle.created), "expires": rfc3339(bundle.expires), "rehearsed": rehearsed,
            "plans": bundle.envelopes().map(|(n, _)| n).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "wrote {}: {} {} (sequence {}), apply + {} rollback plan(s) + {} flag activation plan(s), expires {}",
            args.out.display(),
            bundle.product,
            bundle.release,
            bundle.sequence,
            bundle.rollback.len(),
            bundle.activate.len(),
            rfc3339(bundle.expires)
        );
        match &rehearsed {
            Some(t) => {
                println!("bound to the samples' schema digests and the rehearsal's predictions for: {}", t.join(", "))
            }
            None => println!("no samples: schema digests unknown; agents will check sequences only"),
        }
        println!("unsigned: sign with `rewindctl release sign {} --key NAME.key`", args.out.display());
    }
    Ok(0)
}

/// Runs `release sign`.
///
/// # Errors
/// [`Error::BadInput`] for an unreadable bundle or key.
pub fn sign(args: &SignArgs) -> Result<u8> {
    let key = keys::read_secret(&args.key)?;
    let mut bundle = load_bundle(&args.bundle)?;
    let (mut added, mut already) = (0, 0);
    for (name, env) in bundle.envelopes_mut() {
        if env.sign(&key).map_err(|r| Error::BadInput(format!("{name}: {}", r.message)))? {
            added += 1;
        } else {
            already += 1;
        }
    }
    write_bundle(&args.bundle, &bundle)?;
    let id = key_id(&key.verifying_key());
    if args.json {
        output::print_json(&json!({"bundle": args.bundle, "keyid": id, "added": added, "already_signed": already}));
    } else {
        println!(
            "{}: signed {added} plan(s) with key {id}{}",
            args.bundle.display(),
            if already > 0 { format!(" ({already} already signed by it)") } else { String::new() }
        );
    }
    Ok(0)
}

fn plan_of(payload: &[u8]) -> Option<Plan> {
    serde_json::from_slice(payload).ok()
}

/// Runs `release verify`.
///
/// # Errors
/// [`Error::BadInput`] for an unreadable bundle or trust root.
pub fn verify(args: &VerifyArgs) -> Result<u8> {
    let root = trust::read(&args.trust)?;
    let bundle = load_bundle(&args.bundle)?;
    let now = unix_now();
    let mut plans = Vec::new();
    let mut all_ok = true;
    for (name, env) in bundle.envelopes() {
        let (count, plan) = match env.payload_bytes() {
            Ok(bytes) => (root.count_signatures(&env.signatures, &env.payload_type, &bytes), plan_of(&bytes)),
            Err(r) => {
                all_ok = false;
                plans.push(json!({"name": name, "ok": false, "problem": r.message}));
                continue;
            }
        };
        let expired = plan.as_ref().is_none_or(|p| now >= p.expires);
        let ok = count.ok() && !expired && plan.is_some() && env.payload_type == PLAN_TYPE;
        all_ok &= ok;
        plans.push(json!({
            "name": name, "plan": plan.as_ref().map(|p| &p.id), "ok": ok, "expired": expired,
            "expires": plan.as_ref().map(|p| rfc3339(p.expires)),
            "signers": count.valid.values().collect::<Vec<_>>(),
            "missing": count.threshold.saturating_sub(count.valid.len()),
            "unsigned": count.unsigned, "ignored": count.ignored,
            "detail": count.describe(),
        }));
    }
    if args.json {
        output::print_json(&json!({
            "ok": all_ok, "bundle": bundle.id, "product": bundle.product, "release": bundle.release,
            "sequence": bundle.sequence, "trust_version": root.root.version, "threshold": root.root.threshold, "plans": plans,
        }));
    } else {
        let out = |s: String| if all_ok { println!("{s}") } else { eprintln!("{s}") };
        out(format!(
            "{} {} {} against trust root version {} ({} of {} keys):",
            bundle.id,
            bundle.product,
            bundle.release,
            root.root.version,
            root.root.threshold,
            root.root.keys.len()
        ));
        for p in &plans {
            let status = if p["ok"] == Value::Bool(true) {
                "ok"
            } else if p["expired"] == Value::Bool(true) {
                "EXPIRED"
            } else {
                "NOT ACCEPTED"
            };
            out(format!(
                "  {:<36} {status}: {}{}",
                p["name"].as_str().unwrap_or(""),
                p["detail"].as_str().or(p["problem"].as_str()).unwrap_or(""),
                p["expires"].as_str().map(|e| format!("; expires {e}")).unwrap_or_default()
            ));
        }
    }
    Ok(if all_ok { 0 } else { 2 })
}
