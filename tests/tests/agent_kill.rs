//! kill -9 at seeded random moments of apply, rollback and of recovery
//! itself, while the app keeps inserting into its own table (`app_log`, which
//! the release does not touch). After each kill the next command recovers,
//! and then: integrity_check passes, every insert the app saw committed is
//! there, and each target's schema and release-touched tables equal either
//! the start state or the fully applied state — whichever the installed
//! release says — never a mix; flags.json agrees with agent.db and the audit
//! chain verifies.

mod agent_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use agent_common::{Endpoint, content_without, installed, integrity};
use rewind_tests::{bin, release};
use rusqlite::Connection;

const SEEDS: u64 = 54;

type Content = Vec<(String, Vec<(String, String)>)>;

/// Schema and table digests of both targets, leaving out the app's table.
fn content(e: &Endpoint) -> Content {
    [&e.notes, &e.settings]
        .iter()
        .map(|db| {
            let (schema, tables) = content_without(db, "app_log");
            (schema, tables)
        })
        .collect()
}

fn with_app_table(e: &Endpoint) {
    Connection::open(&e.notes)
        .unwrap()
        .execute_batch("CREATE TABLE app_log(id INTEGER PRIMARY KEY, msg TEXT NOT NULL, at TEXT NOT NULL)")
        .unwrap();
}

/// The app: inserts rows with consecutive ids until stopped; returns how
/// many it saw committed.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicI64>,
    handle: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(db: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicI64::new(0));
        let (s, c, db) = (stop.clone(), committed.clone(), db.to_path_buf());
        let handle = std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut next = 0i64;
            while !s.load(Ordering::SeqCst) {
                // Busy past the app's timeout: the write did not happen; the
                // app retries it with the same id.
                if conn
                    .execute("INSERT INTO app_log(id, msg, at) VALUES (?1, 'saved a note', datetime('now'))", [next])
                    .is_ok()
                {
                    next += 1;
                    c.store(next, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Writer { stop, committed, handle }
    }

    fn stop(self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("writer thread");
        self.committed.load(Ordering::SeqCst)
    }
}

/// Small deterministic generator (SplitMix64), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn agent_cmd(e: &Endpoint, args: &[String]) -> Command {
    let mut c = Command::new(bin("rewind-agent"));
    c.arg("--state").arg(&e.state).args(args).env_remove("REWIND_CRASH_AT").env("REWIND_LOG", "off");
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn plan_args(e: &Endpoint, cmd: &str, rel: &Path) -> Vec<String> {
    let mut a = vec![cmd.to_string(), "--release".into(), rel.display().to_string()];
    a.extend(e.db_args());
    a
}

/// Runs the command and SIGKILLs it after `delay` (if still running);
/// returns whether it was killed.
fn run_and_kill(e: &Endpoint, args: &[String], delay: Duration) -> bool {
    let mut child = agent_cmd(e, args).spawn().expect("agent starts");
    let deadline = Instant::now() + delay;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

fn timed(e: &Endpoint, args: &[String]) -> Duration {
    let t = Instant::now();
    let s = agent_cmd(e, args).status().unwrap();
    assert!(s.success(), "{args:?}");
    t.elapsed()
}

#[test]
fn kill_9_at_random_moments_never_corrupts_or_loses_app_writes() {
    let rel: PathBuf = release("2026.11.0");
    // Reference states and how long each command takes here.
    // Delays are drawn below the fastest of a few clean runs, so most runs
    // really die mid-command.
    let (mut apply_time, mut rollback_time) = (Duration::MAX, Duration::MAX);
    let (mut start, mut applied) = (Content::new(), Content::new());
    for _ in 0..3 {
        let reference = Endpoint::new();
        with_app_table(&reference);
        start = content(&reference);
        apply_time = apply_time.min(timed(&reference, &plan_args(&reference, "apply", &rel)));
        applied = content(&reference);
        rollback_time = rollback_time.min(timed(&reference, &plan_args(&reference, "rollback", &rel)));
        assert_eq!(content(&reference), start);
    }
    assert_ne!(start, applied);

    let started = Instant::now();
    let mut killed = 0;
    let mut outcomes = [0usize; 2];
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let e = Endpoint::new();
        with_app_table(&e);
        let writer = Writer::start(&e.notes);
        let mode = seed % 3;
        let window = |d: Duration, rng: &mut Rng| Duration::from_micros(rng.below(d.as_micros() as u64 + 1));
        let was_killed = match mode {
            // Kill apply.
            0 => run_and_kill(&e, &plan_args(&e, "apply", &rel), window(apply_time, &mut rng)),
            // Apply, then kill the rollback.
            1 => {
                assert!(agent_cmd(&e, &plan_args(&e, "apply", &rel)).status().unwrap().success(), "seed {seed}");
                run_and_kill(&e, &plan_args(&e, "rollback", &rel), window(rollback_time, &mut rng))
            }
            // Kill apply late, then kill the recovery too.
            _ => {
                let k = run_and_kill(
                    &e,
                    &plan_args(&e, "apply", &rel),
                    window(apply_time, &mut rng) * 7 / 10 + apply_time * 3 / 10,
                );
                run_and_kill(&e, &["status".to_string()], window(rollback_time, &mut rng)) || k
            }
        };
        killed += usize::from(was_killed);
        // The next command recovers (the app keeps writing meanwhile).
        let s = e.agent(&["status", "--json"]);
        let committed = writer.stop();
        assert_eq!(s.code, 0, "seed {seed}: status after kill: {s:?}");
        e.assert_integrity();
        assert_eq!(integrity(&e.notes), "ok", "seed {seed}");
        // Every write the app saw committed is there.
        let c = Connection::open(&e.notes).unwrap();
        let (n, max): (i64, Option<i64>) =
            c.query_row("SELECT count(*), max(id) FROM app_log", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert!(committed > 0, "seed {seed}: the app could not write at all");
        assert_eq!(n, committed, "seed {seed}: app writes lost or invented");
        assert_eq!(max, Some(committed - 1), "seed {seed}");
        // A digest-proven state, matching what is installed.
        let now = content(&e);
        match installed(&e.state, "notes").as_deref() {
            Some("2026.11.0") => {
                assert_eq!(now, applied, "seed {seed}: installed, so the targets must be fully applied");
                outcomes[1] += 1;
            }
            None => {
                assert_eq!(now, start, "seed {seed}: not installed, so the targets must be at the start state");
                outcomes[0] += 1;
            }
            Some(other) => panic!("seed {seed}: unexpected installed release {other}"),
        }
        e.assert_consistent();
    }
    eprintln!(
        "kill -9: {SEEDS} seeds, {killed} killed mid-command; {} at start state, {} applied; {:?}",
        outcomes[0],
        outcomes[1],
        started.elapsed()
    );
    assert!(killed >= SEEDS as usize / 2, "too few runs were really killed mid-command ({killed})");
}
