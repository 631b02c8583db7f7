//! The benchmark's database: a notes app's data at a chosen size, made of a
//! few tables with indexes and text, blob and real columns, one `WITHOUT
//! ROWID` table and one table without a key (hashed as a sorted multiset).
//! Deterministic: the same size gives the same content.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

const SCHEMA: &str = "
CREATE TABLE notes(id INTEGER PRIMARY KEY, owner INTEGER NOT NULL, title TEXT NOT NULL,
                   body TEXT NOT NULL, created REAL NOT NULL, score REAL, status TEXT);
CREATE INDEX notes_owner ON notes(owner, created);
CREATE TABLE attachments(id INTEGER PRIMARY KEY, note_id INTEGER NOT NULL REFERENCES notes(id),
                         name TEXT NOT NULL, mime TEXT, data BLOB NOT NULL);
CREATE INDEX attachments_note ON attachments(note_id);
CREATE TABLE tags(note_id INTEGER NOT NULL, tag TEXT NOT NULL, weight REAL,
                  PRIMARY KEY(note_id, tag)) WITHOUT ROWID;
CREATE TABLE events(ts REAL NOT NULL, kind TEXT NOT NULL, payload TEXT);
CREATE INDEX events_ts ON events(ts);
";

/// The tables, for peers that scan every column.
pub const TABLES: &[(&str, &[&str])] = &[
    ("notes", &["id", "owner", "title", "body", "created", "score", "status"]),
    ("attachments", &["id", "note_id", "name", "mime", "data"]),
    ("tags", &["note_id", "tag", "weight"]),
    ("events", &["ts", "kind", "payload"]),
];

/// `created` of the note with this id; migrations select on it.
pub const CREATED_BASE: f64 = 1_700_000_000.0;

const WORDS: &[&str] = &[
    "invoice", "meeting", "garden", "river", "budget", "draft", "review", "kernel", "coffee", "orbit", "ledger",
    "window", "signal", "harbor", "pixel", "quartz", "velvet", "summit", "lantern", "meadow", "archive", "compass",
    "fabric", "glacier", "horizon", "jigsaw", "kettle", "lattice", "marble", "nectar", "the", "a", "of", "and", "to",
    "in", "for", "with", "on", "at",
];

/// xorshift64*: fast, deterministic, good enough for filler data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn text(&mut self, out: &mut String, bytes: usize) {
        out.clear();
        while out.len() < bytes {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(WORDS[self.below(WORDS.len() as u64) as usize]);
        }
    }
}

/// Writes a new database of about `size_mb` MiB at `path` (replacing any
/// file there), in rollback-journal mode as apps usually leave it.
///
/// # Errors
/// When the file cannot be written.
pub fn database(path: &Path, size_mb: u64) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path).with_context(|| format!("create {}", path.display()))?;
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;")?;
    conn.execute_batch(SCHEMA)?;
    let target = size_mb * 1024 * 1024;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ size_mb);
    let (mut title, mut body, mut payload) = (String::new(), String::new(), String::new());
    let mut blob = vec![0u8; 8192];
    let mut id: i64 = 0;
    let mut attachment: i64 = 0;
    conn.execute_batch("BEGIN")?;
    {
        let mut note = conn.prepare("INSERT INTO notes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        let mut att = conn.prepare("INSERT INTO attachments VALUES (?1, ?2, ?3, ?4, ?5)")?;
        let mut tag = conn.prepare("INSERT OR IGNORE INTO tags VALUES (?1, ?2, ?3)")?;
        let mut event = conn.prepare("INSERT INTO events VALUES (?1, ?2, ?3)")?;
        loop {
            for _ in 0..2000 {
                id += 1;
                let n = 20 + rng.below(40) as usize;
                rng.text(&mut title, n);
                let n = 400 + rng.below(1200) as usize;
                rng.text(&mut body, n);
                let created = CREATED_BASE + id as f64 * 37.5;
                let score = if rng.below(10) == 0 { None } else { Some(rng.below(100_000) as f64 / 7.0) };
                let status = ["open", "done", "archived", "draft"][rng.below(4) as usize];
                note.execute(params![id, rng.below(500) as i64, title, body, created, score, status])?;
                if id % 4 == 0 {
                    attachment += 1;
                    let len = 2048 + rng.below(4096) as usize;
                    for chunk in blob[..len].chunks_mut(8) {
                        let v = rng.next().to_le_bytes();
                        chunk.copy_from_slice(&v[..chunk.len()]);
                    }
                    let mime = if rng.below(2) == 0 { Some("image/png") } else { None };
                    att.execute(params![attachment, id, format!("scan-{attachment}.png"), mime, &blob[..len]])?;
                }
                for _ in 0..3 {
                    let t = WORDS[rng.below(WORDS.len() as u64) as usize];
                    tag.execute(params![id, t, rng.below(1000) as f64 / 10.0])?;
                }
                if id % 2 == 0 {
                    let n = 40 + rng.below(80) as usize;
                    rng.text(&mut payload, n);
                    let kind = ["open", "edit", "share", "sync"][rng.below(4) as usize];
                    event.execute(params![created + rng.below(1000) as f64 / 3.0, kind, payload])?;
                }
            }
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            if (pages * page_size) as u64 >= target {
                break;
            }
        }
    }
    conn.execute_batch("COMMIT; PRAGMA journal_mode = DELETE;")?;
    drop(conn);
    std::fs::File::open(path)?.sync_all()?;
    Ok(())
}

/// A tiny database for fixed-overhead measurements.
///
/// # Errors
/// When the file cannot be written.
pub fn tiny(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path)?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(
        "INSERT INTO notes VALUES (1, 1, 'hello', 'first note', 1700000000.0, 1.5, 'open'),
                                  (2, 1, 'bye', 'second note', 1800000000.0, NULL, 'done');
         INSERT INTO tags VALUES (1, 'a', 1.0);",
    )?;
    Ok(())
}
