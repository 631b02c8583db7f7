//! Writing the state directory's files: private ones (keys, tokens) are
//! created with mode 0600 and replaced atomically.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads a text file.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    let io = |e| Error::Io { path: path.to_path_buf(), source: e };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes a file only its owner may read (0600).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    write(path, text, 0o600)
}

/// Writes a file anyone may read (0644).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_public(path: &Path, text: &str) -> Result<()> {
    write(path, text, 0o644)
}
