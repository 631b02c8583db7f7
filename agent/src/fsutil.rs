//! Durable file writes: write to a temporary file in the same directory,
//! fsync it, rename it over the destination, fsync the directory. A reader
//! sees the old file or the new one, never a mix, even after a power cut.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically and durably with `mode` permissions.
///
/// # Errors
/// The I/O error and the path it concerns (e.g. a full disk).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, bytes, mode, || {})
}

/// Like [`write_atomic`], calling `before_rename` between the fsync of the
/// temporary file and the rename (a crash point for the tests).
///
/// # Errors
/// The I/O error and the path it concerns.
pub fn write_atomic_with(path: &Path, bytes: &[u8], mode: u32, before_rename: impl FnOnce()) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = open_with_mode(&tmp, mode)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp)(e));
    }
    before_rename();
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    sync_dir(path)
}

/// `<path>.tmp`, where atomic writes stage their bytes.
#[must_use]
pub fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    s.into()
}

#[cfg(unix)]
fn open_with_mode(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)
}

#[cfg(not(unix))]
fn open_with_mode(path: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)
}

/// Fsyncs the directory holding `path`, so a rename in it is durable.
///
/// # Errors
/// The I/O error and the directory.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
    Ok(())
}

/// Makes a file read-only (snapshots are immutable).
///
/// # Errors
/// The I/O error and the path.
pub fn make_read_only(path: &Path) -> Result<()> {
    let mut perm = std::fs::metadata(path).map_err(Error::io(path))?.permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(path, perm).map_err(Error::io(path))
}
