//! Snapshots: verified, read-only copies of a target taken while the app may
//! keep writing: a copy of the file's bytes under the source's read lock
//! (rollback-journal sources) or SQLite's online backup API (WAL sources).
//!
//! Guarantees: a snapshot is listed only after its copy is durable and its
//! digest equals the digest of the source read in the same read transaction
//! (so it is one consistent state of the source); snapshot files are
//! read-only; a pinned snapshot (its release is not finalized) is never
//! pruned; `restore` refuses a snapshot whose digest no longer matches and
//! writes through SQLite's own transaction, so the target is either the old
//! database or the complete snapshot, and app connections (WAL or rollback
//! journal) see a consistent database throughout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rewind_shared::digest::{DatabaseDigest, database_digest};
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::crash;
use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::state::{State, new_id, now};
use crate::target::{Target, classify};

/// A snapshot's manifest, as `snapshot list --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub source: PathBuf,
    pub file: PathBuf,
    pub created: String,
    pub size: u64,
    pub digest: String,
    pub schema: String,
    pub product: Option<String>,
    pub release: Option<String>,
    pub target: Option<String>,
    pub label: Option<String>,
    pub pinned: bool,
    /// BLAKE3 of the snapshot file's bytes as verified when it was taken
    /// (manifest file only; `restore` checks it instead of re-reading the
    /// content). Absent for snapshots of WAL sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_b3: Option<String>,
}

/// What a new snapshot belongs to.
#[derive(Debug, Default, Clone)]
pub struct Origin {
    pub label: Option<String>,
    pub product: Option<String>,
    pub release: Option<String>,
    pub target: Option<String>,
    /// Pinned snapshots belong to a release that is not finalized.
    pub pinned: bool,
}

/// `file:` URI that opens a database read-only without locks (for files that
/// never change: snapshots).
fn immutable_uri(path: &Path) -> String {
    let mut s = String::from("file:");
    for b in path.to_string_lossy().bytes() {
        match b {
            b'?' | b'#' | b'%' => s.push_str(&format!("%{b:02X}")),
            _ => s.push(b as char),
        }
    }
    s.push_str("?immutable=1");
    s
}

/// Opens a snapshot file read-only.
///
/// # Errors
/// When the file is missing or not a database.
pub fn open_snapshot_file(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(
        immutable_uri(path),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(path, e))
}

/// Full digest of a snapshot file.
///
/// # Errors
/// When the file is unreadable, truncated or corrupt.
pub fn snapshot_digest(path: &Path) -> Result<DatabaseDigest> {
    let conn = open_snapshot_file(path)?;
    database_digest(&conn).map_err(|e| classify(path, e))
}

/// Copies the database open on `src` into a new file at `dest` with the
/// backup API, durably (fsync), in rollback-journal mode.
fn backup_to_file(src: &Connection, dest: &Path) -> rusqlite::Result<()> {
    let mut dst = Connection::open(dest)?;
    dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    Backup::new(src, &mut dst)?.step(-1)?;
    // A WAL source gives a copy whose header says WAL; a read-only snapshot
    // must be openable without -wal/-shm files.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    drop(dst);
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Snapshot of a source in a rollback-journal mode, which the caller's read
/// transaction has read: while that transaction holds the source's SHARED
/// lock no writer can commit (nor spill pages into the file), so the file's
/// bytes are one consistent state. The bytes are copied in the kernel
/// (`copy_file_range`), then three things run at once: the copy is flushed
/// to disk, compared byte for byte with the source, and digested (tables in
/// parallel: the copy never changes). Identical bytes hold identical content,
/// so the copy's digest is the source's digest in that read transaction.
///
/// `src` must be a handle the caller opened before its read transaction and
/// closes only after it: POSIX drops every fcntl lock a process holds on a
/// file when *any* of its descriptors for that file is closed, so opening and
/// closing the source here would silently release SQLite's SHARED lock and
/// let a writer commit mid-snapshot.
fn copy_file_verified(source: &Path, src: &std::fs::File, tmp: &Path) -> Result<(DatabaseDigest, Option<String>)> {
    let not_taken = |what: &str, e: std::io::Error| {
        Error::BadInput(format!(
            "snapshot of {} not taken, nothing changed: {what} {}: {e}",
            source.display(),
            tmp.display()
        ))
    };
    (|| {
        let mut out = std::fs::File::create(tmp)?;
        // `&File` keeps std's copy_file_range fast path (a kernel copy, as
        // `cp` does); the handle is fresh, so its cursor is at 0.
        let mut from: &std::fs::File = src;
        std::io::copy(&mut from, &mut out)
    })()
    .map_err(|e| not_taken("writing", e))?;
    crash::point("snapshot.during_copy");
    let (synced, same, digest) = std::thread::scope(|s| {
        let synced = s.spawn(|| std::fs::File::open(tmp).and_then(|f| f.sync_all()));
        let same = s.spawn(|| same_bytes_hashed(src, tmp));
        let digest = snapshot_digest(tmp);
        (
            synced.join().expect("sync thread does not panic"),
            same.join().expect("compare thread does not panic"),
            digest,
        )
    });
    synced.map_err(|e| not_taken("flushing", e))?;
    let Some(file_hash) = same.map_err(|e| not_taken("reading back", e))? else {
        return Err(Error::Failed(format!(
            "snapshot of {}: the copy differs from the source it was read from; snapshot discarded",
            source.display()
        )));
    };
    Ok((digest?, Some(file_hash.to_hex().to_string())))
}

const CHUNK: usize = 1 << 20;

/// Reads a file by position, leaving its shared cursor alone, so one handle
/// can serve the copy and the comparison.
struct ReadAt<'a> {
    file: &'a std::fs::File,
    pos: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        #[cfg(not(unix))]
        let n = std::os::windows::fs::FileExt::seek_read(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The BLAKE3 of `b`'s bytes when they are the same as `a`'s, else `None`.
fn same_bytes_hashed(a: &std::fs::File, b: &Path) -> std::io::Result<Option<blake3::Hash>> {
    let (mut fa, mut fb) = (ReadAt { file: a, pos: 0 }, std::fs::File::open(b)?);
    if a.metadata()?.len() != fb.metadata()?.len() {
        return Ok(None);
    }
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut h = blake3::Hasher::new();
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(None);
        }
        if n == 0 {
            return Ok(Some(h.finalize()));
        }
        h.update(&bb[..m]);
    }
}

/// BLAKE3 of a file's bytes.
fn file_hash(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut h = blake3::Hasher::new();
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// The file hash the snapshot's manifest file records, if it records one
/// for this very snapshot (same id and digest as the catalogue's).
fn manifest_file_hash(snap: &Snapshot) -> Option<String> {
    let manifest: Snapshot = serde_json::from_slice(&std::fs::read(snap.file.with_extension("json")).ok()?).ok()?;
    (manifest.id == snap.id && manifest.digest == snap.digest).then_some(manifest.file_b3).flatten()
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Snapshot {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Snapshot {
            id: r.get("id")?,
            source: PathBuf::from(r.get::<_, String>("source")?),
            file: PathBuf::from(r.get::<_, String>("file")?),
            created: r.get("created")?,
            size: r.get::<_, i64>("size")? as u64,
            digest: r.get("digest")?,
            schema: r.get("schema")?,
            product: r.get("product")?,
            release: r.get("release")?,
            target: r.get("target")?,
            label: r.get("label")?,
            pinned: r.get::<_, i64>("pinned")? != 0,
            file_b3: None,
        })
    }
}

/// Takes a snapshot of the database at `source`; returns its manifest and
/// the verified digest of the state it holds.
///
/// # Errors
/// [`Error::BadInput`] for an unusable source, [`Error::Failed`] when the
/// copy cannot be written (disk full) or does not verify; no snapshot is
/// recorded then and the source is untouched.
pub fn create(state: &State, source: &Path, origin: &Origin) -> Result<(Snapshot, DatabaseDigest)> {
    let src = Target::open(origin.target.as_deref().unwrap_or("db"), source)?;
    let id = new_id("snap");
    let file = state.snapshots_dir().join(format!("{id}.db"));
    let tmp = fsutil::tmp_path(&file);
    // Opened before and closed after the read transaction (see
    // `copy_file_verified`: closing a descriptor drops SQLite's locks).
    let src_file = std::fs::File::open(source).map_err(Error::io(source))?;
    // One read transaction: the copy and the source digest see one state.
    src.conn.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_schema;").ctx("snapshot: begin read")?;
    let result = (|| {
        let wal = src
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .map_or(true, |m| m.eq_ignore_ascii_case("wal"));
        if !wal {
            return copy_file_verified(source, &src_file, &tmp);
        }
        let file_b3 = None;
        backup_to_file(&src.conn, &tmp).map_err(|e| match classify(&tmp, e) {
            Error::Failed(m) => {
                Error::BadInput(format!("snapshot of {} not taken, nothing changed: {m}", source.display()))
            }
            other => other,
        })?;
        crash::point("snapshot.during_copy");
        let (source_digest, copy_digest) = std::thread::scope(|s| {
            let copy = s.spawn(|| snapshot_digest(&tmp));
            let src_digest = database_digest(&src.conn).map_err(|e| classify(source, e));
            (src_digest, copy.join().expect("digest thread does not panic"))
        });
        let (source_digest, copy_digest) = (source_digest?, copy_digest?);
        if source_digest != copy_digest {
            return Err(Error::Failed(format!(
                "snapshot of {}: copy digest {} differs from source digest {}; snapshot discarded",
                source.display(),
                copy_digest.digest,
                source_digest.digest
            )));
        }
        Ok((source_digest, file_b3))
    })();
    let _ = src.conn.execute_batch("COMMIT");
    drop(src_file);
    let (digest, file_b3) = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &file).map_err(Error::io(&file))?;
    fsutil::make_read_only(&file)?;
    fsutil::sync_dir(&file)?;
    let snap = Snapshot {
        id,
        source: std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf()),
        size: std::fs::metadata(&file).map_err(Error::io(&file))?.len(),
        file,
        created: now(),
        digest: digest.digest.to_string(),
        schema: digest.schema.to_string(),
        product: origin.product.clone(),
        release: origin.release.clone(),
        target: origin.target.clone(),
        label: origin.label.clone(),
        pinned: origin.pinned,
        file_b3,
    };
    let manifest = serde_json::to_vec_pretty(&snap).expect("manifest serializes");
    fsutil::write_atomic(&snap.file.with_extension("json"), &manifest, 0o444)?;
    state
        .db
        .execute(
            "INSERT INTO snapshots(id, source, file, created, size, digest, schema, product, release, target, label, pinned)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
            params![
                snap.id,
                snap.source.to_string_lossy(),
                snap.file.to_string_lossy(),
                snap.created,
                snap.size as i64,
                snap.digest,
                snap.schema,
                snap.product,
                snap.release,
                snap.target,
                snap.label,
                i64::from(snap.pinned)
            ],
        )
        .ctx("snapshot catalogue")?;
    state.audit(
        "snapshot.create",
        &serde_json::json!({"id": snap.id, "source": snap.source, "digest": snap.digest, "size": snap.size, "label": snap.label, "release": snap.release}),
    )?;
    Ok((snap, digest))
}

/// Every snapshot, oldest first.
///
/// # Errors
/// When `agent.db` cannot be read.
pub fn list(state: &State) -> Result<Vec<Snapshot>> {
    let mut stmt = state.db.prepare("SELECT * FROM snapshots ORDER BY created, id").ctx("snapshot list")?;
    stmt.query_map([], Snapshot::from_row).ctx("snapshot list")?.collect::<rusqlite::Result<_>>().ctx("snapshot list")
}

/// One snapshot by id.
///
/// # Errors
/// [`Error::BadInput`] when no snapshot has that id.
pub fn get(state: &State, id: &str) -> Result<Snapshot> {
    state
        .db
        .query_row("SELECT * FROM snapshots WHERE id = ?1", [id], Snapshot::from_row)
        .optional()
        .ctx("snapshot lookup")?
        .ok_or_else(|| Error::BadInput(format!("no snapshot `{id}`; `rewind-agent snapshot list` shows the ids")))
}

/// Outcome of `snapshot verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub id: String,
    pub ok: bool,
    pub problem: Option<String>,
    /// Time to restore into a scratch file and prove it (the restore window).
    pub restore_ms: Option<u128>,
}

/// Re-checks a snapshot's integrity and digest; with `restore_test`, also
/// restores it into a scratch file, checks that and times it.
///
/// # Errors
/// Only for state-directory trouble; a bad snapshot is a report with
/// `ok = false`.
pub fn verify(state: &State, snap: &Snapshot, restore_test: bool) -> Result<VerifyReport> {
    let problem = check_snapshot(snap).err();
    let mut restore_ms = None;
    if problem.is_none() && restore_test {
        let scratch =
            tempfile::Builder::new().prefix("restore-test-").tempdir_in(&state.root).map_err(Error::io(&state.root))?;
        let dest = scratch.path().join("restored.db");
        let started = Instant::now();
        let src = open_snapshot_file(&snap.file)?;
        backup_to_file(&src, &dest).map_err(|e| classify(&dest, e))?;
        let d = snapshot_digest(&dest)?;
        restore_ms = Some(started.elapsed().as_millis());
        if d.digest.to_string() != snap.digest {
            return Ok(VerifyReport {
                id: snap.id.clone(),
                ok: false,
                problem: Some(format!("restored copy has digest {}, manifest says {}", d.digest, snap.digest)),
                restore_ms,
            });
        }
    }
    Ok(VerifyReport { id: snap.id.clone(), ok: problem.is_none(), problem, restore_ms })
}

/// Integrity check and digest comparison against the manifest.
fn check_snapshot(snap: &Snapshot) -> std::result::Result<(), String> {
    let conn = open_snapshot_file(&snap.file).map_err(|e| e.to_string())?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check(1)", [], |r| r.get(0))
        .map_err(|e| format!("integrity check failed: {e}"))?;
    if integrity != "ok" {
        return Err(format!("integrity check: {integrity}"));
    }
    let d = database_digest(&conn).map_err(|e| format!("cannot digest: {e}"))?;
    if d.digest.to_string() != snap.digest {
        return Err(format!("digest is {}, manifest says {}: the file was changed", d.digest, snap.digest));
    }
    Ok(())
}

/// Outcome of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub db: PathBuf,
    pub digest: String,
    pub millis: u128,
}

/// Restores `snap` into the database at `db` (created when missing), then
/// proves the result by digest.
///
/// # Errors
/// [`Error::BadInput`] when the snapshot no longer matches its digest (the
/// target is untouched); [`Error::NeedsHuman`] when the restored target does
/// not prove equal to the snapshot.
pub fn restore(state: &State, snap: &Snapshot, db: &Path) -> Result<RestoreReport> {
    let started = Instant::now();
    // A snapshot whose bytes are those verified when it was taken holds
    // that content; reading them is much cheaper than re-reading the content.
    let checked = match manifest_file_hash(snap) {
        Some(expected) => match file_hash(&snap.file) {
            Ok(h) if h.to_hex().as_str() == expected => Ok(()),
            Ok(h) => {
                Err(format!("its bytes changed since it was taken (BLAKE3 {}, manifest says {expected})", h.to_hex()))
            }
            Err(e) => Err(format!("cannot read {}: {e}", snap.file.display())),
        },
        None => check_snapshot(snap),
    };
    checked.map_err(|p| {
        Error::BadInput(format!("snapshot {} cannot be restored: {p}; {} is untouched", snap.id, db.display()))
    })?;
    crash::point("restore.before_copy");
    let src = open_snapshot_file(&snap.file)?;
    if db.exists() {
        let mut target = Target::open("db", db)?;
        Backup::new(&src, &mut target.conn).and_then(|b| b.step(-1)).map_err(|e| classify(db, e))?;
    } else {
        let tmp = fsutil::tmp_path(db);
        backup_to_file(&src, &tmp).map_err(|e| classify(db, e))?;
        std::fs::rename(&tmp, db).map_err(Error::io(db))?;
        fsutil::sync_dir(db)?;
    }
    crash::point("restore.after_copy");
    let target = Target::open("db", db)?;
    let after = database_digest(&target.conn).map_err(|e| classify(db, e))?;
    if after.digest.to_string() != snap.digest {
        return Err(Error::NeedsHuman {
            message: format!(
                "restore of snapshot {} into {}: the result has digest {}, expected {}",
                snap.id,
                db.display(),
                after.digest,
                snap.digest
            ),
            next: format!(
                "rewind-agent --state {} snapshot restore {} --db {}",
                state.root.display(),
                snap.id,
                db.display()
            ),
        });
    }
    state.audit("snapshot.restore", &serde_json::json!({"id": snap.id, "db": db, "digest": snap.digest}))?;
    Ok(RestoreReport {
        snapshot: snap.id.clone(),
        db: db.to_path_buf(),
        digest: snap.digest.clone(),
        millis: started.elapsed().as_millis(),
    })
}

/// Deletes all but the `keep` newest unpinned snapshots of each source;
/// pinned snapshots are never deleted. Returns the ids removed.
///
/// # Errors
/// When a file cannot be removed.
pub fn prune(state: &State, keep: usize) -> Result<Vec<String>> {
    let all = list(state)?;
    let mut removed = Vec::new();
    let mut sources: Vec<&PathBuf> = all.iter().map(|s| &s.source).collect();
    sources.sort();
    sources.dedup();
    for source in sources {
        let mut unpinned: Vec<&Snapshot> = all.iter().filter(|s| &s.source == source && !s.pinned).collect();
        unpinned.sort_by(|a, b| b.created.cmp(&a.created));
        for s in unpinned.into_iter().skip(keep) {
            for f in [s.file.clone(), s.file.with_extension("json"), after_path(&s.file)] {
                match std::fs::remove_file(&f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(f)(e)),
                }
            }
            state.db.execute("DELETE FROM snapshots WHERE id = ?1", [&s.id]).ctx("snapshot prune")?;
            state.audit("snapshot.prune", &serde_json::json!({"id": s.id}))?;
            removed.push(s.id.clone());
        }
    }
    Ok(removed)
}

/// The digest of a target as its apply left it, kept next to the snapshot
/// that apply took, with the file's fingerprint at that moment.
#[derive(Serialize, Deserialize)]
struct AfterApply {
    db: PathBuf,
    fingerprint: String,
    digest: DatabaseDigest,
}

fn after_path(snapshot_file: &Path) -> PathBuf {
    snapshot_file.with_extension("after.json")
}

/// Identity of the target file's committed state and the connection's
/// `data_version`, read in one read transaction (no commit can land in
/// between). Rollback-journal mode only: every commit there rewrites the
/// header's change counter (offset 24) and the file's mtime; in WAL mode
/// commits leave the main file alone, so there is no fingerprint.
fn fingerprint(t: &Target) -> Option<(String, i64)> {
    if !t.conn.is_autocommit() {
        return None;
    }
    t.conn.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_schema;").ok()?;
    let read = || -> Option<(String, i64)> {
        let mode: String = t.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).ok()?;
        if mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        let version = t.data_version().ok()?;
        let meta = std::fs::metadata(&t.path).ok()?;
        let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
        let mut head = [0u8; 100];
        std::io::Read::read_exact(&mut std::fs::File::open(&t.path).ok()?, &mut head).ok()?;
        Some((format!("{}:{mtime}:{}:{}", meta.len(), hex::encode(&head[24..28]), hex::encode(&head[92..96])), version))
    };
    let out = read();
    let _ = t.conn.execute_batch("COMMIT");
    out
}

/// Keeps `digest` — computed on `t` when its `data_version` was `version` —
/// as the state the apply that took snapshot `snap_id` left `t` in, so that
/// a rollback that finds the file untouched need not read it again. Best
/// effort: without a fingerprint nothing is kept and the rollback reads all.
pub fn remember_after_apply(state: &State, snap_id: &str, t: &Target, version: i64, digest: &DatabaseDigest) {
    let Some((fingerprint, now)) = fingerprint(t) else { return };
    if now != version {
        return;
    }
    let file = after_path(&state.snapshots_dir().join(format!("{snap_id}.db")));
    let record = AfterApply { db: t.path.clone(), fingerprint, digest: digest.clone() };
    let tmp = fsutil::tmp_path(&file);
    let json = serde_json::to_vec(&record).expect("digest serializes");
    if std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &file)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The digest the apply that took snapshot `snap_id` left `t` in, when the
/// file has not changed since (same fingerprint); it also becomes `t`'s
/// baseline for an incremental proof (docs/digest.md "Incremental proofs").
#[must_use]
pub fn after_apply(state: &State, snap_id: &str, t: &Target) -> Option<DatabaseDigest> {
    let file = after_path(&state.snapshots_dir().join(format!("{snap_id}.db")));
    let record: AfterApply = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    let (fingerprint, version) = fingerprint(t)?;
    let d = record.digest;
    let consistent = DatabaseDigest::combine(d.schema, d.tables.clone()).digest == d.digest;
    if record.db != t.path || record.fingerprint != fingerprint || !consistent {
        return None;
    }
    t.set_baseline(version, d.clone());
    Some(d)
}

/// Unpins the snapshots of a release (when it is rolled back or finalized).
///
/// # Errors
/// When `agent.db` cannot be written.
pub fn unpin_release(state: &State, product: &str, release: &str) -> Result<()> {
    state
        .db
        .execute("UPDATE snapshots SET pinned = 0 WHERE product = ?1 AND release = ?2", [product, release])
        .ctx("snapshot unpin")?;
    Ok(())
}
