//! `rewindctl keys generate`: an Ed25519 signing key pair for plans and
//! trust roots (docs/trust.md).
//!
//! Guarantees: `NAME.key` is created with mode 0600 and never overwritten,
//! nor is `NAME.pub`; the seed comes from the OS random source.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use rewind_shared::trust::{SigningKey, key_id, parse_secret_key, public_key_text, secret_key_text};
use serde_json::json;

use crate::error::{Error, Result};
use crate::output;

#[derive(Debug, Args)]
#[command(after_help = "Example: rewindctl keys generate --out alice\n\
  writes alice.key (secret, mode 0600: keep it offline) and alice.pub (give it to whoever runs `trust init`).\n\n\
Exit codes: 0 written, 2 a file exists already or cannot be written.")]
pub struct GenerateArgs {
    /// Writes NAME.key and NAME.pub.
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
    /// Print {"key", "pub", "keyid"}.
    #[arg(long)]
    pub json: bool,
}

fn with_ext(name: &Path, ext: &str) -> PathBuf {
    let mut s = name.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn create_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::BadInput(format!(
                "{} exists; refusing to overwrite a key (choose another --out NAME)",
                path.display()
            ))
        } else {
            Error::BadInput(format!("cannot create {}: {e}", path.display()))
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::BadInput(format!("cannot write {}: {e}", path.display())))
}

/// Runs `keys generate`.
///
/// # Errors
/// [`Error::BadInput`] when either file exists or cannot be written.
pub fn generate(args: &GenerateArgs) -> Result<u8> {
    let (key_path, pub_path) = (with_ext(&args.out, "key"), with_ext(&args.out, "pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(Error::BadInput(format!(
                "{} exists; refusing to overwrite a key (choose another --out NAME)",
                p.display()
            )));
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::BadInput(format!("the OS random source failed: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    create_new(&key_path, 0o600, secret_key_text(&key).as_bytes())?;
    create_new(&pub_path, 0o644, public_key_text(&key.verifying_key()).as_bytes())?;
    let id = key_id(&key.verifying_key());
    if args.json {
        output::print_json(&json!({"key": key_path, "pub": pub_path, "keyid": id}));
    } else {
        println!("wrote {} (secret, mode 0600) and {}; keyid {id}", key_path.display(), pub_path.display());
    }
    Ok(0)
}

/// Reads a `NAME.key` file.
///
/// # Errors
/// [`Error::BadInput`] when it cannot be read or is not a secret key.
pub fn read_secret(path: &Path) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::BadInput(format!("{}: cannot read: {e}", path.display())))?;
    parse_secret_key(&text).map_err(|e| Error::BadInput(format!("{}: {e}", path.display())))
}
