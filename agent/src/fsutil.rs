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

/// Early write-back of a file that is still being written: each
/// [`nudge`](Writeback::nudge) asks a background thread to flush what has
/// been written so far (`fdatasync`), so the disk works while the writer
/// goes on and the writer's own final flush finds little left. A flush
/// error is kept and returned by [`finish`](Writeback::finish): the thread
/// shares the writer's open file, and Linux reports a write-back error to
/// one flush of an open file only.
pub struct Writeback {
    tx: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Writeback {
    /// Starts the background thread for `file`.
    ///
    /// # Errors
    /// When the file handle cannot be duplicated.
    pub fn start(file: &std::fs::File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || -> std::io::Result<()> {
            let mut first_error = None;
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                if let Err(e) = file.sync_data() {
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        });
        Ok(Writeback { tx: Some(tx), thread: Some(thread) })
    }

    /// Asks for a flush of everything written so far (coalesced with any
    /// flush already asked for).
    pub fn nudge(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }

    /// Waits for the flushes asked for; the first error any of them met.
    /// The caller still flushes the file itself afterwards.
    ///
    /// # Errors
    /// A flush's I/O error.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> std::io::Result<()> {
        drop(self.tx.take());
        self.thread.take().map_or(Ok(()), |t| t.join().expect("write-back thread does not panic"))
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_back_flushes_as_asked_and_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::File::create(&path).unwrap();
        let wb = Writeback::start(&f).unwrap();
        for i in 0..50u8 {
            (&f).write_all(&[i; 4096]).unwrap();
            wb.nudge();
        }
        wb.finish().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 50 * 4096);
        // Dropped without finishing: the thread still ends.
        let wb = Writeback::start(&f).unwrap();
        wb.nudge();
        drop(wb);
    }
}
