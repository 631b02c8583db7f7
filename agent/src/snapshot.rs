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

pub use rewind_shared::digest::Cores;
use rewind_shared::digest::{DatabaseDigest, database_digest, database_digest_on};
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::crash;
use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::state::{State, new_id, now};
use crate::target::{Target, classify};
use crate::treehash;

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
    snapshot_digest_on(path, Cores::All)
}

fn snapshot_digest_on(path: &Path, cores: Cores) -> Result<DatabaseDigest> {
    let conn = open_snapshot_file(path)?;
    database_digest_on(&conn, cores).map_err(|e| classify(path, e))
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

/// Copy of a source in a rollback-journal mode, which the caller's read
/// transaction has read: while that transaction holds the source's SHARED
/// lock no writer can commit (nor spill pages into the file), so the file's
/// bytes are one consistent state. The bytes are copied in the kernel
/// (`copy_file_range`, as `cp` does) while another thread reads the same
/// bytes from the source and hashes them (BLAKE3). Returns that hash: the
/// copy is verified against it later ([`verify_copy`]), without the source,
/// so the caller can release the source's lock as soon as this returns.
///
/// `src` must be a handle the caller opened before its read transaction and
/// closes only after it: POSIX drops every fcntl lock a process holds on a
/// file when *any* of its descriptors for that file is closed, so opening and
/// closing the source here would silently release SQLite's SHARED lock and
/// let a writer commit mid-snapshot.
fn copy_file_hashed(source: &Path, src: &std::fs::File, tmp: &Path) -> Result<blake3::Hash> {
    let not_taken = |what: &str, e: std::io::Error| {
        Error::BadInput(format!(
            "snapshot of {} not taken, nothing changed: {what} {}: {e}",
            source.display(),
            tmp.display()
        ))
    };
    let (copied, hashed) = std::thread::scope(|s| {
        let hashed = s.spawn(|| hash_reader(ReadAt { file: src, pos: 0 }));
        let copied = (|| {
            let mut out = std::fs::File::create(tmp)?;
            // `&File` keeps std's copy_file_range fast path (a kernel copy,
            // as `cp` does); the handle is fresh, so its cursor is at 0.
            let mut from: &std::fs::File = src;
            std::io::copy(&mut from, &mut out)
        })();
        (copied, hashed.join().expect("hash thread does not panic"))
    });
    copied.map_err(|e| not_taken("writing", e))?;
    crash::point("snapshot.during_copy");
    #[cfg(unix)]
    if crash::fault("snapshot.copy_differs") {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(tmp).map_err(Error::io(tmp))?;
        let at = f.metadata().map_err(Error::io(tmp))?.len() / 2;
        let mut b = [0u8; 1];
        read_exact_at(&f, &mut b, at).and_then(|()| write_all_at(&f, &[!b[0]], at)).map_err(Error::io(tmp))?;
    }
    hashed.map_err(|e| Error::io(source)(e))
}

/// Verifies a copy made by [`copy_file_hashed`], at once: flushes it to
/// disk, hashes its bytes (they must hash as the source's did under the
/// lock: identical bytes hold identical content) and digests it with
/// `rewind-digest-1` (on every core: hash and digest side by side, tables
/// in parallel — the copy never changes; on one core: hash, then digest,
/// leaving the other cores to the work that runs beside). Returns the digest
/// — the source's digest in that read transaction — and the copy's BLAKE3
/// for the manifest.
fn verify_copy(source: &Path, tmp: &Path, source_hash: blake3::Hash, cores: Cores) -> Result<Verified> {
    let (synced, hashed, digest) = std::thread::scope(|s| {
        // The flush mostly waits for the disk.
        let synced = s.spawn(|| std::fs::File::open(tmp).and_then(|f| f.sync_all()));
        let (hashed, digest) = if cores == Cores::All {
            let hashed = s.spawn(|| file_hash(tmp));
            let digest = snapshot_digest_on(tmp, cores);
            (hashed.join().expect("hash thread does not panic"), digest)
        } else {
            (file_hash(tmp), snapshot_digest_on(tmp, cores))
        };
        (synced.join().expect("sync thread does not panic"), hashed, digest)
    });
    let not_taken = |what: &str, e: std::io::Error| {
        Error::BadInput(format!(
            "snapshot of {} not taken, nothing changed: {what} {}: {e}",
            source.display(),
            tmp.display()
        ))
    };
    synced.map_err(|e| not_taken("flushing", e))?;
    let copy_hash = hashed.map_err(|e| not_taken("reading back", e))?;
    if copy_hash != source_hash {
        return Err(Error::Failed(format!(
            "snapshot of {}: the copy differs from the source it was read from; snapshot discarded",
            source.display()
        )));
    }
    Ok((digest?, Some(copy_hash.to_hex().to_string())))
}

/// BLAKE3 of everything `r` yields.
fn hash_reader(mut r: impl std::io::Read) -> std::io::Result<blake3::Hash> {
    let mut buf = vec![0u8; CHUNK];
    let mut h = blake3::Hasher::new();
    loop {
        let n = read_full(&mut r, &mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Read size of the passes that read a file and then hash or compare what
/// they read: two such pieces fit in a core's L2 cache (512 KiB on the
/// 2-vCPU machine measured), so the hash or comparison reads what the kernel
/// just copied from cache, not from memory. 1 MiB pieces made the restore's
/// comparison about 10 % slower (docs/benchmarks.md).
const CHUNK: usize = 128 << 10;

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
    hash_reader(std::fs::File::open(path)?)
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
    start(state, source, origin, Cores::All)?.finish(state)
}

/// Logical CPUs from which an apply verifies its snapshots while the first
/// migration runs ([`verify_beside_migration`]).
pub const OVERLAP_FROM_CORES: usize = 4;

/// Whether an apply verifies its snapshots while the first migration runs
/// (committing it only after they pass) instead of before it starts:
/// `REWIND_SNAPSHOT_OVERLAP` = `on`, `off` or `auto` (the default: on with at
/// least [`OVERLAP_FROM_CORES`] logical CPUs). On fewer, the verification
/// would take CPU from the migration — which holds the app's write lock —
/// and make it slower: measured on two vCPUs, the migration took 1.34 x its
/// time alone (docs/benchmarks.md).
///
/// # Errors
/// [`Error::BadInput`] for any other value.
pub fn verify_beside_migration() -> Result<bool> {
    match std::env::var("REWIND_SNAPSHOT_OVERLAP").ok().as_deref().map(str::trim) {
        None | Some("" | "auto") => {
            Ok(std::thread::available_parallelism().map_or(1, usize::from) >= OVERLAP_FROM_CORES)
        }
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(Error::BadInput(format!(
            "REWIND_SNAPSHOT_OVERLAP={other:?}: expected on, off or auto (the default); nothing changed"
        ))),
    }
}

/// A verified copy's digest and, for file copies, its BLAKE3.
type Verified = (DatabaseDigest, Option<String>);

/// A snapshot whose copy is taken (the source's lock is released again)
/// and whose verification runs on other threads; [`Pending::finish`] waits
/// for it and only then renames, catalogues and audits the snapshot.
/// Dropped unfinished, it waits for the verification and deletes the copy.
pub struct Pending {
    id: String,
    source: PathBuf,
    file: PathBuf,
    tmp: PathBuf,
    origin: Origin,
    verify: Option<std::thread::JoinHandle<Result<Verified>>>,
    ready: Option<Result<Verified>>,
}

/// Starts a snapshot of `source`: copies it inside one read transaction of
/// the source (so the copy is one consistent state), releases that
/// transaction, and leaves the verification running (see [`Pending`]). For
/// a rollback-journal source the copy is the file's bytes and the
/// verification flushes, hashes and digests the copy on other threads; a WAL
/// source is copied with SQLite's online backup API and verified here, by
/// digesting source and copy in that read transaction. `cores`: how many
/// cores the background verification may use — [`Cores::One`] when other
/// work (a migration) runs meanwhile and should keep a core to itself.
///
/// # Errors
/// [`Error::BadInput`] for an unusable source or a copy that cannot be
/// written (nothing changed); [`Error::Failed`] when a WAL copy does not
/// verify.
pub fn start(state: &State, source: &Path, origin: &Origin, cores: Cores) -> Result<Pending> {
    let src = Target::open(origin.target.as_deref().unwrap_or("db"), source)?;
    let id = new_id("snap");
    let file = state.snapshots_dir().join(format!("{id}.db"));
    let tmp = fsutil::tmp_path(&file);
    // Opened before and closed after the read transaction (see
    // `copy_file_hashed`: closing a descriptor drops SQLite's locks).
    let src_file = std::fs::File::open(source).map_err(Error::io(source))?;
    // One read transaction: the copy and the source digest see one state.
    src.conn.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_schema;").ctx("snapshot: begin read")?;
    let result = (|| {
        let wal = src
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .map_or(true, |m| m.eq_ignore_ascii_case("wal"));
        if !wal {
            return copy_file_hashed(source, &src_file, &tmp).map(Err);
        }
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
        Ok(Ok(source_digest))
    })();
    let _ = src.conn.execute_batch("COMMIT");
    drop(src_file);
    drop(src);
    let mut pending =
        Pending { id, source: source.to_path_buf(), file, tmp, origin: origin.clone(), verify: None, ready: None };
    match result {
        Err(e) => {
            let _ = std::fs::remove_file(&pending.tmp);
            return Err(e);
        }
        Ok(Ok(digest)) => pending.ready = Some(Ok((digest, None))),
        Ok(Err(source_hash)) => {
            let (source, tmp) = (pending.source.clone(), pending.tmp.clone());
            pending.verify = Some(std::thread::spawn(move || verify_copy(&source, &tmp, source_hash, cores)));
        }
    }
    Ok(pending)
}

impl Pending {
    /// The snapshot's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn outcome(&mut self) -> Result<Verified> {
        match (self.verify.take(), self.ready.take()) {
            (Some(h), _) => h.join().expect("verify thread does not panic"),
            (None, Some(r)) => r,
            (None, None) => Err(Error::Failed(format!("snapshot {} was already finished", self.id))),
        }
    }

    /// Waits for the verification; when it passed, makes the snapshot
    /// durable, read-only and listed, and returns its manifest and digest.
    ///
    /// # Errors
    /// The verification's error (the copy is deleted, nothing is listed),
    /// or trouble writing the catalogue.
    pub fn finish(mut self, state: &State) -> Result<(Snapshot, DatabaseDigest)> {
        let (digest, file_b3) = match self.outcome() {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                return Err(e);
            }
        };
        let file = self.file.clone();
        std::fs::rename(&self.tmp, &file).map_err(Error::io(&file))?;
        fsutil::make_read_only(&file)?;
        fsutil::sync_dir(&file)?;
        let origin = &self.origin;
        let snap = Snapshot {
            id: self.id.clone(),
            source: std::fs::canonicalize(&self.source).unwrap_or_else(|_| self.source.clone()),
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
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.verify.is_some() || self.ready.is_some() {
            let _ = self.outcome();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
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
        restore_new_file(snap, manifest_file_hash(snap).as_deref(), &dest)?;
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

/// Restores `snap` into the database at `db` (created when missing) and
/// proves the result.
///
/// An existing rollback-journal target is rewritten page by page under
/// SQLite's rollback-journal protocol (see `restore_pages`): only pages that
/// differ are journaled and written, and the result is proven before the
/// commit by reading every written page back and comparing it with the
/// snapshot's bytes (all other pages were compared under the same lock), so
/// the target holds the snapshot's content and its digest. A WAL target (or
/// one with another page size or encoding) goes through SQLite's backup API
/// inside the target's transaction and is proven by a full digest. A missing
/// target is a copy renamed into place.
///
/// # Errors
/// [`Error::BadInput`] when the snapshot no longer matches its digest or
/// file hash (the target is untouched); [`Error::Failed`] when writing
/// failed and was rolled back; [`Error::NeedsHuman`] when the restored
/// target does not prove equal to the snapshot.
pub fn restore(state: &State, snap: &Snapshot, db: &Path) -> Result<RestoreReport> {
    let started = Instant::now();
    // A snapshot whose bytes are those verified when it was taken holds
    // that content; hashing them is much cheaper than re-reading the
    // content. Without a recorded hash the content is checked first.
    let expected = manifest_file_hash(snap);
    if expected.is_none() {
        check_snapshot(snap).map_err(|p| {
            Error::BadInput(format!("snapshot {} cannot be restored: {p}; {} is untouched", snap.id, db.display()))
        })?;
    }
    let mut pages = None;
    if !db.exists() {
        restore_new_file(snap, expected.as_deref(), db)?;
        crash::point("restore.after_copy");
    } else if let PageRestore::Done { pages: n } =
        with_restore_marker(state, db, || restore_pages(snap, expected.as_deref(), db))?
    {
        pages = Some(n);
        crash::point("restore.after_copy");
    } else {
        // Checked in `restore_pages` before it declined.
        crash::point("restore.before_copy");
        let src = open_snapshot_file(&snap.file)?;
        let mut target = Target::open("db", db)?;
        Backup::new(&src, &mut target.conn).and_then(|b| b.step(-1)).map_err(|e| classify(db, e))?;
        drop(target);
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
    }
    state.audit(
        "snapshot.restore",
        &serde_json::json!({"id": snap.id, "db": db, "digest": snap.digest, "pages_written": pages}),
    )?;
    Ok(RestoreReport {
        snapshot: snap.id.clone(),
        db: db.to_path_buf(),
        digest: snap.digest.clone(),
        millis: started.elapsed().as_millis(),
    })
}

/// How a restore into an existing target went.
enum PageRestore {
    /// The target now holds the snapshot's bytes (header change counter
    /// aside); `pages` were written.
    Done { pages: u64 },
    /// The target is not a rollback-journal database with the snapshot's
    /// page size and encoding: the caller restores through SQLite.
    NotApplicable,
}

const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
/// Sector size recorded in the journal header (its header's length).
const JOURNAL_SECTOR: usize = 4096;

/// `<db>-journal`: where SQLite looks for a hot journal.
fn journal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-journal");
    s.into()
}

fn page_size(head: &[u8]) -> u64 {
    match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536,
        n => u64::from(n),
    }
}

/// SQLite's journal record checksum (pager.c `pager_cksum`).
fn journal_cksum(nonce: u32, page: &[u8]) -> u32 {
    let mut sum = nonce;
    let mut i = page.len() as isize - 200;
    while i > 0 {
        sum = sum.wrapping_add(u32::from(page[i as usize]));
        i -= 200;
    }
    sum
}

/// Page 1 of two files holds the same content when only the header's change
/// counter (offset 24) and version-valid-for number (offset 92) differ.
fn same_page(pgno: u64, a: &[u8], b: &[u8]) -> bool {
    if pgno != 1 {
        return a == b;
    }
    a[..24] == b[..24] && a[28..92] == b[28..92] && a[96..] == b[96..]
}

/// Runs of consecutive page numbers, at most `max` pages each.
fn runs(pages: &[u64], max: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((start, n)) if *start + *n == p && *n < max => *n += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

#[cfg(unix)]
fn read_exact_at(f: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

#[cfg(unix)]
fn write_all_at(f: &std::fs::File, buf: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, at)
}

/// Restores `snap` into the existing rollback-journal database `db` writing
/// only the pages that differ, under SQLite's own protocol: with the
/// database's EXCLUSIVE lock held (by a SQLite connection, so app
/// connections wait), the old content of every page about to change is
/// written to `<db>-journal` in SQLite's rollback-journal format while the
/// files are compared (on every core, [`compare_pages`]) and made durable,
/// then the new pages are written, each read back and compared with what
/// was written, and flushed ([`write_pages_read_back`]), and only then is
/// the journal deleted (the commit). A crash or kill at any moment before
/// that leaves a hot journal that SQLite — the app's or ours — plays back
/// on the next open: the target is the old database or the complete
/// snapshot, never a mix. Page 1's change counter is set past the old one
/// so app connections drop their caches, exactly as after a commit of
/// their own.
///
/// `expected_b3` is the snapshot file's verified BLAKE3; it is checked in
/// the same pass that compares the pages, before anything is written.
#[cfg(unix)]
fn restore_pages(snap: &Snapshot, expected_b3: Option<&str>, db: &Path) -> Result<PageRestore> {
    let target = Target::open("db", db)?;
    let mode: String = target.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(|e| classify(db, e))?;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal_in_use = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    if mode.eq_ignore_ascii_case("wal") || wal_in_use {
        if let Some(expected) = expected_b3 {
            check_file_hash(snap, expected).map_err(|p| {
                Error::BadInput(format!("snapshot {} cannot be restored: {p}; {} is untouched", snap.id, db.display()))
            })?;
        }
        return Ok(PageRestore::NotApplicable);
    }
    // Opened before the lock is taken and closed after it is released:
    // closing any descriptor of the file drops the process's fcntl locks.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(db).map_err(Error::io(db))?;
    let snap_file = std::fs::File::open(&snap.file).map_err(Error::io(&snap.file))?;
    target.conn.execute_batch("BEGIN EXCLUSIVE").map_err(|e| classify(db, e))?;
    let journal = journal_path(db);
    let mut journal_live = false;
    let result = write_pages(snap, expected_b3, db, &file, &snap_file, &journal, &mut journal_live);
    // Releases the lock; a journal still there is hot from now on.
    let _ = target.conn.execute_batch("COMMIT");
    drop(file);
    drop(target);
    match result {
        Ok(done) => Ok(done),
        Err(e) if journal_live => Err(roll_back_journal(db, &journal, e)),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn restore_pages(_snap: &Snapshot, _expected_b3: Option<&str>, _db: &Path) -> Result<PageRestore> {
    Ok(PageRestore::NotApplicable)
}

/// Prefix of the marker files naming a target while a page restore may
/// leave a rollback journal next to it.
const RESTORE_MARKER: &str = "restore-pending-";

/// Runs `body` with a marker in the state directory naming `db`, so that if
/// the agent dies while `db` has a restore's rollback journal, the next
/// command plays it back at once ([`finish_interrupted_restores`]) instead of
/// leaving that to the next read-write opener. The journal alone already
/// guarantees the old content; the marker only makes it prompt.
fn with_restore_marker<T>(state: &State, db: &Path, body: impl FnOnce() -> Result<T>) -> Result<T> {
    let name = format!("{RESTORE_MARKER}{}.json", &blake3::hash(db.as_os_str().as_encoded_bytes()).to_hex()[..16]);
    let marker = state.root.join(name);
    let path = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
    std::fs::write(&marker, serde_json::to_vec(&serde_json::json!({"db": path})).expect("json"))
        .map_err(Error::io(&marker))?;
    let out = body();
    let _ = std::fs::remove_file(&marker);
    out
}

/// Plays back the rollback journal of every restore an earlier agent did not
/// finish (a crash or kill mid-write): opening the database read-write makes
/// SQLite roll a hot journal back, so the target is its old content again.
/// Returns the databases rolled back.
pub fn finish_interrupted_restores(state: &State) -> Vec<PathBuf> {
    let mut done = Vec::new();
    let Ok(dir) = std::fs::read_dir(&state.root) else { return done };
    for entry in dir.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(RESTORE_MARKER) {
            continue;
        }
        let db = std::fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["db"].as_str().map(PathBuf::from));
        let Some(db) = db else {
            let _ = std::fs::remove_file(entry.path());
            continue;
        };
        let had_journal = journal_path(&db).exists();
        let opened = !db.exists()
            || Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE)
                .and_then(|c| {
                    c.busy_timeout(crate::target::busy_timeout())?;
                    c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
                })
                .is_ok();
        if opened {
            let _ = std::fs::remove_file(entry.path());
            if had_journal {
                let _ = state.audit("snapshot.restore.rolled_back", &serde_json::json!({"db": db}));
                done.push(db);
            }
        }
    }
    done
}

/// After a failed write phase: lets SQLite play the hot journal back (the
/// lock is released; opening the database does it) and says what happened.
fn roll_back_journal(db: &Path, journal: &Path, cause: Error) -> Error {
    let rolled_back = Connection::open(db)
        .and_then(|c| {
            c.busy_timeout(crate::target::busy_timeout())?;
            c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
        })
        .is_ok()
        && !journal.exists();
    if rolled_back {
        Error::Failed(format!(
            "restore into {} failed and was rolled back, the target is unchanged: {cause}",
            db.display()
        ))
    } else {
        Error::NeedsHuman {
            message: format!(
                "restore into {} failed ({cause}) and its rollback journal {} could not be played back yet",
                db.display(),
                journal.display()
            ),
            next: format!(
                "sqlite3 {} 'PRAGMA integrity_check' (opening the database rolls the journal back)",
                db.display()
            ),
        }
    }
}

/// The write phase of [`restore_pages`], under the target's EXCLUSIVE lock.
#[cfg(unix)]
fn write_pages(
    snap: &Snapshot,
    expected_b3: Option<&str>,
    db: &Path,
    file: &std::fs::File,
    snap_file: &std::fs::File,
    journal: &Path,
    journal_live: &mut bool,
) -> Result<PageRestore> {
    let untouched = |p: String| {
        Error::BadInput(format!("snapshot {} cannot be restored: {p}; {} is untouched", snap.id, db.display()))
    };
    let (mut head, mut shead) = ([0u8; 100], [0u8; 100]);
    read_exact_at(file, &mut head, 0).map_err(Error::io(db))?;
    read_exact_at(snap_file, &mut shead, 0)
        .map_err(|e| untouched(format!("cannot read {}: {e}", snap.file.display())))?;
    let ps = page_size(&head);
    let old_len = file.metadata().map_err(Error::io(db))?.len();
    let new_len = snap_file.metadata().map_err(Error::io(&snap.file))?.len();
    let compatible = head[16..24] == shead[16..24]
        && head[56..60] == shead[56..60]
        && head[18] == 1
        && (512..=65536).contains(&ps)
        && old_len % ps == 0
        && new_len % ps == 0
        && new_len > 0
        && old_len / ps < u64::from(u32::MAX)
        && new_len / ps < u64::from(u32::MAX);
    if !compatible {
        if let Some(expected) = expected_b3 {
            check_file_hash(snap, expected).map_err(untouched)?;
        }
        return Ok(PageRestore::NotApplicable);
    }
    let (old_pages, new_pages) = (old_len / ps, new_len / ps);
    let not_restored = |what: &str, e: std::io::Error| {
        Error::BadInput(format!(
            "snapshot {} not restored, {} unchanged: {what} {}: {e}",
            snap.id,
            db.display(),
            journal.display()
        ))
    };
    // The journal is written while the pages are compared: it rolls nothing
    // back until its record count is set (SQLite plays a hot journal whose
    // count is 0 as empty), and that happens only once it is complete and
    // durable, before the database is written.
    *journal_live = true;
    let discard = |journal_live: &mut bool| {
        *journal_live = false;
        let _ = std::fs::remove_file(journal);
    };
    let jw = match Journal::create(file, ps, old_pages, journal) {
        Ok(j) => j,
        Err(e) => {
            discard(journal_live);
            return Err(not_restored("writing the rollback journal", e));
        }
    };
    // One pass over both files, on every core: which pages differ (their
    // old content goes to the journal as they are found) and the
    // snapshot's BLAKE3 against the one verified at creation.
    let compared = compare_pages(file, snap_file, ps, old_pages, new_len, expected_b3.is_some(), &jw);
    let (mut diff, hashed) = match compared {
        Ok(c) => c,
        Err(e) => {
            discard(journal_live);
            return Err(untouched(format!("cannot compare it with the target: {e}")));
        }
    };
    if let (Some(expected), Some(h)) = (expected_b3, hashed)
        && h.to_hex().as_str() != expected
    {
        discard(journal_live);
        return Err(untouched(format!(
            "its bytes changed since it was taken (BLAKE3 {}, manifest says {expected})",
            h.to_hex()
        )));
    }
    if diff.is_empty() && old_len == new_len {
        discard(journal_live);
        crash::point("restore.before_copy");
        return Ok(PageRestore::Done { pages: 0 });
    }
    if diff.first() != Some(&1) {
        diff.insert(0, 1);
    }
    let written: Vec<u64> = diff.iter().copied().chain(old_pages + 1..=new_pages).collect();
    crash::point("restore.before_copy");
    // Pages past the snapshot's end (the target shrinks) are journaled too.
    let shrunk: Vec<u64> = (new_pages + 1..=old_pages).collect();
    if let Err(e) = jw.append_from(file, ps, &shrunk).and_then(|()| jw.commit(db)) {
        discard(journal_live);
        return Err(not_restored("writing the rollback journal", e));
    }

    // The new pages; page 1 gets a change counter past the old one.
    let counter = u32::from_be_bytes([head[24], head[25], head[26], head[27]]).wrapping_add(1).to_be_bytes();
    let page_runs = runs(&written, CHUNK as u64 / ps);
    let proven = write_pages_read_back(file, snap_file, ps, &page_runs, counter, new_len, old_len)
        .map_err(|e| Error::Failed(format!("writing {}: {e}", db.display())))?;
    if !proven {
        return Err(Error::Failed(format!(
            "{} does not read back as snapshot {} after writing it",
            db.display(),
            snap.id
        )));
    }
    crash::point("restore.before_commit");
    // The commit: without its journal the new content stands.
    std::fs::remove_file(journal).map_err(|e| Error::Failed(format!("removing {}: {e}", journal.display())))?;
    *journal_live = false;
    fsutil::sync_dir(db)?;
    Ok(PageRestore::Done { pages: written.len() as u64 })
}

/// Runs `work` on as many threads as there are cores (at most four, at most
/// one per unit of work, this thread included) and returns what each one
/// returned, or the first error. `work` takes its units from a queue it
/// shares between the threads.
fn on_threads<T: Send>(units: usize, work: impl Fn() -> std::io::Result<T> + Sync) -> std::io::Result<Vec<T>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 4).min(units.max(1));
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(&work)).collect();
        let mut all = vec![work()];
        all.extend(helpers.into_iter().map(|h| h.join().expect("worker thread does not panic")));
        all.into_iter().collect()
    })
}

/// Writes the snapshot's pages of `page_runs` into the target (page 1 with
/// the new change `counter`), on up to four threads taking runs in turn,
/// while a background flush starts writing them to disk; cuts the target to
/// `new_len` when it was longer; flushes it. Proof before the commit: each
/// run is read back right after it is written and must equal what was
/// written (the snapshot file is immutable and was checked against its
/// BLAKE3 by the comparison, under the same lock, as were the pages found
/// equal), and the file must have the snapshot's length. Returns whether
/// that proof holds.
#[cfg(unix)]
fn write_pages_read_back(
    file: &std::fs::File,
    snap_file: &std::fs::File,
    ps: u64,
    page_runs: &[(u64, u64)],
    counter: [u8; 4],
    new_len: u64,
    old_len: u64,
) -> std::io::Result<bool> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let writeback = fsutil::Writeback::start(file)?;
    let (next, done, differs) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicBool::new(false));
    let spoiled = AtomicBool::new(false);
    let work = || -> std::io::Result<()> {
        let (mut ours, mut back) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        while let Some(&(start, n)) = page_runs.get(next.fetch_add(1, Ordering::Relaxed)) {
            let (bytes, at) = ((n * ps) as usize, (start - 1) * ps);
            read_exact_at(snap_file, &mut ours[..bytes], at)?;
            if start == 1 {
                ours[24..28].copy_from_slice(&counter);
                ours[92..96].copy_from_slice(&counter);
            }
            write_all_at(file, &ours[..bytes], at)?;
            writeback.nudge();
            if crash::fault("restore.write_differs") && !spoiled.swap(true, Ordering::Relaxed) {
                // A write that did not land as written.
                write_all_at(file, &[!ours[bytes / 2]], at + bytes as u64 / 2)?;
            }
            read_exact_at(file, &mut back[..bytes], at)?;
            if back[..bytes] != ours[..bytes] {
                differs.store(true, Ordering::Relaxed);
            }
            if done.fetch_add(1, Ordering::Relaxed) + 1 == page_runs.len().div_ceil(2) {
                crash::point("restore.during_write");
            }
        }
        Ok(())
    };
    on_threads(page_runs.len(), work)?;
    if new_len < old_len {
        file.set_len(new_len)?;
    }
    writeback.finish()?;
    file.sync_all()?;
    Ok(!differs.load(Ordering::Relaxed) && file.metadata()?.len() == new_len)
}

/// The pages up to the shorter file's end whose content differs between
/// the target and the snapshot (page 1 compared without its change
/// counter), in order, and the snapshot file's BLAKE3 when `hash` is set.
/// The old content of every differing page, and of page 1 always (it gets
/// a new change counter), is appended to `journal` as it is found. Works on
/// up to four threads, each taking the next [`treehash::SEGMENT`] of the
/// snapshot: both files are read once (the kernel's copies into our
/// buffers are most of a restore's time).
#[cfg(unix)]
fn compare_pages(
    target: &std::fs::File,
    snap_file: &std::fs::File,
    ps: u64,
    old_pages: u64,
    new_len: u64,
    hash: bool,
    journal: &Journal,
) -> std::io::Result<(Vec<u64>, Option<blake3::Hash>)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let common = old_pages.min(new_len / ps);
    let segments = new_len.div_ceil(treehash::SEGMENT);
    let next = AtomicU64::new(0);
    let work = || -> std::io::Result<Vec<(u64, blake3::Hasher, Vec<u64>)>> {
        let (mut ours, mut theirs) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let mut done = Vec::new();
        loop {
            let seg = next.fetch_add(1, Ordering::Relaxed);
            if seg >= segments {
                return Ok(done);
            }
            let (start, end) = (seg * treehash::SEGMENT, ((seg + 1) * treehash::SEGMENT).min(new_len));
            let mut hasher = treehash::segment_hasher(start);
            let mut differ = Vec::new();
            let mut at = start;
            while at < end {
                let len = (CHUNK as u64).min(end - at);
                read_exact_at(snap_file, &mut theirs[..len as usize], at)?;
                if hash {
                    hasher.update(&theirs[..len as usize]);
                }
                let first = at / ps + 1;
                let n = (len / ps).min((common + 1).saturating_sub(first));
                if n > 0 {
                    let bytes = (n * ps) as usize;
                    read_exact_at(target, &mut ours[..bytes], at)?;
                    if first == 1 || ours[..bytes] != theirs[..bytes] {
                        let pages = (0..n).filter(|&k| {
                            let page = (k * ps) as usize..((k + 1) * ps) as usize;
                            !same_page(first + k, &ours[page.clone()], &theirs[page])
                        });
                        let found: Vec<u64> = pages.map(|k| first + k).collect();
                        let records = (first == 1 && found.first() != Some(&1)).then_some(1).into_iter();
                        let records: Vec<u64> = records.chain(found.iter().copied()).collect();
                        journal.append(records.iter().map(|&p| {
                            let k = ((p - first) * ps) as usize;
                            (p, &ours[k..k + ps as usize])
                        }))?;
                        differ.extend(found);
                    }
                }
                at += len;
            }
            done.push((seg, hasher, differ));
        }
    };
    let mut parts: Vec<_> = on_threads(segments as usize, work)?.into_iter().flatten().collect();
    parts.sort_by_key(|(seg, ..)| *seg);
    let hashed = hash.then(|| {
        let hashers: Vec<blake3::Hasher> = parts.iter().map(|(_, h, _)| h.clone()).collect();
        treehash::root(new_len, treehash::SEGMENT, &hashers)
    });
    Ok((parts.into_iter().flat_map(|(.., d)| d).collect(), hashed))
}

/// `<db>-journal` in SQLite's rollback-journal format, written as the
/// pages to save are found ([`Journal::append`], from several threads) and
/// made durable by [`Journal::commit`]: records first, then the record
/// count in the header (two flushes, as SQLite does with synchronous=FULL),
/// then the directory, so the journal exists on disk before the database
/// is written. Until the count is set the journal rolls nothing back.
#[cfg(unix)]
struct Journal {
    file: std::fs::File,
    nonce: u32,
    out: std::sync::Mutex<(std::io::BufWriter<std::fs::File>, u32)>,
    /// Flushes the records already written while more are found.
    writeback: fsutil::Writeback,
}

#[cfg(unix)]
impl Journal {
    /// Creates the journal of `file` (`old_pages` pages of `ps` bytes) with
    /// its header and no records.
    fn create(file: &std::fs::File, ps: u64, old_pages: u64, journal: &Path) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let meta = file.metadata()?;
        let j = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(meta.mode() & 0o777)
            .open(journal)?;
        // As SQLite does: a journal made by root belongs to the database's
        // owner, so the app can roll it back.
        if j.metadata()?.uid() != meta.uid() {
            let _ = std::os::unix::fs::fchown(&j, Some(meta.uid()), Some(meta.gid()));
        }
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
        let nonce = u32::from_be_bytes(nonce);
        let mut header = vec![0u8; JOURNAL_SECTOR];
        header[..8].copy_from_slice(&JOURNAL_MAGIC);
        header[12..16].copy_from_slice(&nonce.to_be_bytes());
        header[16..20].copy_from_slice(&(old_pages as u32).to_be_bytes());
        header[20..24].copy_from_slice(&(JOURNAL_SECTOR as u32).to_be_bytes());
        header[24..28].copy_from_slice(&(ps as u32).to_be_bytes());
        let mut out = std::io::BufWriter::with_capacity(CHUNK + 2 * ps as usize, j.try_clone()?);
        out.write_all(&header)?;
        let writeback = fsutil::Writeback::start(&j)?;
        Ok(Journal { file: j, nonce, out: std::sync::Mutex::new((out, 0)), writeback })
    }

    /// Appends records: each page's number and its current content.
    fn append<'a>(&self, pages: impl Iterator<Item = (u64, &'a [u8])>) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = self.out.lock().expect("journal writer is not poisoned");
        let (w, count) = &mut *out;
        for (pgno, page) in pages {
            w.write_all(&(pgno as u32).to_be_bytes())?;
            w.write_all(page)?;
            w.write_all(&journal_cksum(self.nonce, page).to_be_bytes())?;
            *count += 1;
        }
        drop(out);
        self.writeback.nudge();
        Ok(())
    }

    /// Appends the current content of `pages` of `file`.
    fn append_from(&self, file: &std::fs::File, ps: u64, pages: &[u64]) -> std::io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        for (start, n) in runs(pages, CHUNK as u64 / ps) {
            let bytes = &mut buf[..(n * ps) as usize];
            read_exact_at(file, bytes, (start - 1) * ps)?;
            self.append(bytes.chunks(ps as usize).enumerate().map(|(k, page)| (start + k as u64, page)))?;
        }
        Ok(())
    }

    /// Makes the journal durable and live (see [`Journal`]).
    fn commit(self, db: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let (mut w, count) = self.out.into_inner().expect("journal writer is not poisoned");
        w.flush()?;
        drop(w);
        self.writeback.finish()?;
        self.file.sync_all()?;
        write_all_at(&self.file, &count.to_be_bytes(), 8)?;
        self.file.sync_all()?;
        let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Checks a snapshot file's bytes against the BLAKE3 verified when it was taken.
fn check_file_hash(snap: &Snapshot, expected: &str) -> std::result::Result<(), String> {
    match file_hash(&snap.file) {
        Ok(h) if h.to_hex().as_str() == expected => Ok(()),
        Ok(h) => Err(format!("its bytes changed since it was taken (BLAKE3 {}, manifest says {expected})", h.to_hex())),
        Err(e) => Err(format!("cannot read {}: {e}", snap.file.display())),
    }
}

/// Restores `snap` into a new file at `db`: a kernel copy into `<db>.tmp`,
/// flushed, read back and compared with the snapshot (hashing it against the
/// verified BLAKE3 when the manifest has one), then renamed into place.
fn restore_new_file(snap: &Snapshot, expected_b3: Option<&str>, db: &Path) -> Result<()> {
    let tmp = fsutil::tmp_path(db);
    let untouched = |p: String| {
        Error::BadInput(format!("snapshot {} cannot be restored: {p}; {} was not created", snap.id, db.display()))
    };
    let result = (|| -> Result<()> {
        let src = std::fs::File::open(&snap.file).map_err(|e| untouched(format!("cannot read it: {e}")))?;
        (|| {
            let mut out = std::fs::File::create(&tmp)?;
            let mut from: &std::fs::File = &src;
            std::io::copy(&mut from, &mut out)?;
            out.sync_all()
        })()
        .map_err(|e| Error::BadInput(format!("snapshot {} not restored: writing {}: {e}", snap.id, tmp.display())))?;
        let same = same_bytes_hashed(&src, &tmp).map_err(Error::io(&tmp))?;
        match (same, expected_b3) {
            (None, _) => Err(Error::Failed(format!("{} does not read back as snapshot {}", tmp.display(), snap.id))),
            (Some(h), Some(expected)) if h.to_hex().as_str() != expected => Err(untouched(format!(
                "its bytes changed since it was taken (BLAKE3 {}, manifest says {expected})",
                h.to_hex()
            ))),
            (Some(_), _) => Ok(()),
        }
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crash::point("restore.before_copy");
    std::fs::rename(&tmp, db).map_err(Error::io(db))?;
    fsutil::sync_dir(db)
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
