//! The migration every apply case runs, written twice: as a Rewind release
//! directory and as an equivalent Sqitch project. It touches one table
//! (`notes`): adds a column, fills it for about a third of the rows and
//! indexes it; `down.sql` takes all of that back exactly.

use std::path::Path;

use anyhow::{Context, Result};

use crate::generate::CREATED_BASE;

pub const ID: &str = "0001_archive_flag";

/// Notes created before this are archived by the migration.
fn threshold(rows_hint: i64) -> f64 {
    CREATED_BASE + rows_hint as f64 * 37.5 / 3.0
}

pub fn up(rows: i64) -> String {
    format!(
        "ALTER TABLE notes ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;\n\
         UPDATE notes SET archived = 1 WHERE created < {};\n\
         CREATE INDEX notes_archived ON notes(archived, owner);\n",
        threshold(rows)
    )
}

pub const DOWN: &str = "DROP INDEX notes_archived;\nALTER TABLE notes DROP COLUMN archived;\n";
pub const VERIFY: &str = "SELECT count(*) > 0 FROM pragma_index_list('notes') WHERE name = 'notes_archived';\n";

/// Writes the Rewind release directory.
///
/// # Errors
/// When files cannot be written.
pub fn rewind_release(dir: &Path, rows: i64) -> Result<()> {
    let m = dir.join("migrations").join(ID);
    std::fs::create_dir_all(&m).with_context(|| format!("create {}", m.display()))?;
    std::fs::write(
        dir.join("release.toml"),
        format!(
            "name = \"notes\"\nversion = \"2026.12.0\"\nsequence = 1\napp_version = \"5.0.0\"\n\
             owner = \"storage-team\"\non_call = \"pager:storage\"\n\n[[target]]\nname = \"notes\"\n\n\
             [[migration]]\nid = \"{ID}\"\ntarget = \"notes\"\n"
        ),
    )?;
    std::fs::write(m.join("up.sql"), up(rows))?;
    std::fs::write(m.join("down.sql"), DOWN)?;
    std::fs::write(m.join("verify.sql"), VERIFY)?;
    Ok(())
}

/// Writes the Sqitch project (`sqitch.conf`, `sqitch.plan`, scripts). Sqitch
/// verify scripts signal failure by raising an error; this one fails when
/// the new column is missing.
///
/// # Errors
/// When files cannot be written.
pub fn sqitch_project(dir: &Path, rows: i64) -> Result<()> {
    for d in ["deploy", "revert", "verify"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(dir.join("sqitch.conf"), "[core]\n\tengine = sqlite\n")?;
    std::fs::write(
        dir.join("sqitch.plan"),
        format!(
            "%syntax-version=1.0.0\n%project=notes\n\n{ID} 2026-11-25T00:00:00Z Bench <bench@example.com> # archive flag\n"
        ),
    )?;
    std::fs::write(dir.join("deploy").join(format!("{ID}.sql")), format!("BEGIN;\n{}COMMIT;\n", up(rows)))?;
    std::fs::write(dir.join("revert").join(format!("{ID}.sql")), format!("BEGIN;\n{DOWN}COMMIT;\n"))?;
    std::fs::write(dir.join("verify").join(format!("{ID}.sql")), "SELECT archived FROM notes WHERE 0;\n")?;
    Ok(())
}
