//! The notes-app example (examples/notes-app), embedded at build time so
//! `rewindctl demo` works from any directory, and written out on demand.

use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/examples.rs"));

/// Writes every example file under `dir` (e.g. `dir/releases/2026.11.0/release.toml`).
///
/// # Errors
/// When a file cannot be written.
pub fn write_to(dir: &Path) -> std::io::Result<()> {
    for (rel, content) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    Ok(())
}

/// The content of one example file, e.g. `seed-notes.sql`.
#[must_use]
pub fn file(rel: &str) -> Option<&'static str> {
    FILES.iter().find(|(r, _)| *r == rel).map(|(_, c)| *c)
}
