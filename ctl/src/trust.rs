//! `rewindctl trust init` and `trust rotate`: making and rotating the trust
//! root (`trust.toml`) that agents and the coordinator check plans against
//! (docs/trust.md).
//!
//! Guarantees: `init` never overwrites a file; `rotate` only signs with keys
//! of the old root, signs the new root's exact body bytes, and says whether
//! the new root already has enough signatures for agents to accept it.

use std::path::{Path, PathBuf};

use clap::Args;
use rewind_shared::trust::{TrustFile, TrustRoot, TrustedKey, key_id, parse_public_key};
use serde_json::json;

use crate::error::{Error, Result};
use crate::{keys, output};

#[derive(Debug, Args)]
#[command(
    after_help = "Example: rewindctl trust init --threshold 2 --key alice.pub --key bob.pub --key ops=carol.pub --out trust.toml\n\
  --key FILE uses the file stem (alice) as the owner; --key OWNER=FILE names it.\n\n\
Exit codes: 0 written, 2 bad input (unreadable key, threshold not met, file exists)."
)]
pub struct InitArgs {
    /// Valid signatures from distinct keys a plan needs (k of n).
    #[arg(long, value_name = "K")]
    pub threshold: usize,
    /// A public key (NAME.pub), optionally OWNER=FILE; repeat per key.
    #[arg(long = "key", value_name = "[OWNER=]FILE", required = true)]
    pub keys: Vec<String>,
    /// Where to write trust.toml (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl trust rotate trust.toml trust-v2.toml --key alice.key --key bob.key\n\
  NEW.toml is a root made with `trust init` (new keys, threshold, `revoked = [keyid]` if any). The first \
rotate sets its version to OLD's + 1; each signer may run rotate separately with their own key. Agents \
accept NEW only when it carries OLD's threshold of signatures by OLD's keys.\n\n\
Exit codes: 0 signed (the output says whether enough signatures are present), 2 bad input.")]
pub struct RotateArgs {
    /// The trust root in force now.
    #[arg(value_name = "OLD.toml")]
    pub old: PathBuf,
    /// The new trust root, signed in place.
    #[arg(value_name = "NEW.toml")]
    pub new: PathBuf,
    /// A secret key of the old root (NAME.key); repeat to sign with several.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Reads and parses a `trust.toml`.
///
/// # Errors
/// [`Error::BadInput`] naming the file and the problem.
pub fn read(path: &Path) -> Result<TrustFile> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::BadInput(format!("{}: cannot read: {e}", path.display())))?;
    TrustFile::parse(&text).map_err(|e| Error::BadInput(format!("{}: {e}", path.display())))
}

fn trusted_key(arg: &str) -> Result<TrustedKey> {
    let (owner, file) = match arg.split_once('=') {
        Some((o, f)) if !o.is_empty() => (o.to_string(), PathBuf::from(f)),
        _ => {
            let f = PathBuf::from(arg);
            let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (stem, f)
        }
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::BadInput(format!("--key {arg}: cannot read {}: {e}", file.display())))?;
    let key = parse_public_key(&text).map_err(|e| Error::BadInput(format!("--key {arg}: {e}")))?;
    Ok(TrustedKey { owner, keyid: key_id(&key), public: hex_of(key.as_bytes()) })
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `trust init`.
///
/// # Errors
/// [`Error::BadInput`] for unreadable keys, an unmeetable threshold or an
/// existing `--out`.
pub fn init(args: &InitArgs) -> Result<u8> {
    if args.out.exists() {
        return Err(Error::BadInput(format!(
            "{} exists; refusing to overwrite a trust root (rotate it with `rewindctl trust rotate`)",
            args.out.display()
        )));
    }
    let keys = args.keys.iter().map(|k| trusted_key(k)).collect::<Result<Vec<_>>>()?;
    let root = TrustRoot { version: 1, threshold: args.threshold, revoked: Vec::new(), keys };
    let text = TrustFile::render(&root);
    let parsed = TrustFile::parse(&text).map_err(|e| Error::BadInput(e.to_string()))?;
    rewind_agent::fsutil::write_atomic(&args.out, text.as_bytes(), 0o644)?;
    if args.json {
        output::print_json(&json!({"out": args.out, "version": 1, "threshold": args.threshold,
            "keys": parsed.root.keys.iter().map(|k| json!({"owner": k.owner, "keyid": k.keyid})).collect::<Vec<_>>()}));
    } else {
        println!(
            "wrote {}: version 1, {} of {} keys must sign",
            args.out.display(),
            args.threshold,
            parsed.root.keys.len()
        );
        for k in &parsed.root.keys {
            println!("  {}  {}", k.keyid, k.owner);
        }
    }
    Ok(0)
}

/// Runs `trust rotate`.
///
/// # Errors
/// [`Error::BadInput`] for unreadable roots or keys, a key that is not in
/// the old root, or a new root already signed for another version.
pub fn rotate(args: &RotateArgs) -> Result<u8> {
    let old = read(&args.old)?;
    let mut new = read(&args.new)?;
    let want = old.root.version + 1;
    if new.root.version != want {
        if !new.signatures.is_empty() {
            return Err(Error::BadInput(format!(
                "{} is version {} and already signed; a successor of {} (version {}) must be version {want}",
                args.new.display(),
                new.root.version,
                args.old.display(),
                old.root.version
            )));
        }
        // Nothing signed yet: the version is part of the signed body.
        let mut root = new.root.clone();
        root.version = want;
        new = TrustFile::parse(&TrustFile::render(&root)).map_err(|e| Error::BadInput(e.to_string()))?;
    }
    for path in &args.keys {
        let key = keys::read_secret(path)?;
        let id = key_id(&key.verifying_key());
        if old.owner(&id).is_none() || old.root.revoked.contains(&id) {
            return Err(Error::BadInput(format!(
                "{}: key {id} is not a usable key of {} (version {}); only its keys can sign the next root",
                path.display(),
                args.old.display(),
                old.root.version
            )));
        }
        new.sign_body(&key);
    }
    rewind_agent::fsutil::write_atomic(&args.new, new.to_text().as_bytes(), 0o644)?;
    let reparsed = read(&args.new)?;
    let (ok, count) = match reparsed.verify_rotation(&old) {
        Ok(c) => (true, c),
        Err(_) => (
            false,
            old.count_signatures(&reparsed.signatures, rewind_shared::trust::TRUST_ROOT_TYPE, reparsed.body.as_bytes()),
        ),
    };
    if args.json {
        output::print_json(&json!({"new": args.new, "version": want, "accepted": ok, "signatures": count}));
    } else {
        println!("{} (version {want}): {count}", args.new.display());
        println!(
            "{}",
            if ok {
                "agents pinned to the old root will accept it"
            } else {
                "not yet accepted by agents: more keys of the old root must sign"
            }
        );
    }
    Ok(0)
}
