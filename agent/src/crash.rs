//! Named crash points for the crash-safety tests. With cargo feature
//! `fault-injection`, `REWIND_CRASH_AT=<point>` (or `<point>#N` for the N-th
//! time the point is reached) aborts the process there, as a power cut would;
//! without the feature `point()` compiles to nothing.

/// Every crash point, with what has and has not happened when it fires.
pub const POINTS: &[(&str, &str)] = &[
    ("apply.before_snapshot", "plan journaled, no snapshot taken yet"),
    ("snapshot.during_copy", "snapshot copied to a temporary file, not yet verified or renamed"),
    ("apply.after_snapshot", "every target snapshotted, no migration run"),
    ("apply.migration.before_commit", "up.sql, verify.sql and the ledger row ran, transaction not committed"),
    ("apply.migration.after_commit", "migration committed, journal not yet updated"),
    ("apply.flags.during_write", "new flags.json written to a temporary file, not renamed"),
    ("apply.after_flags", "flags set, after-apply checks not run"),
    ("apply.before_done", "checks passed, plan not yet marked done"),
    ("activate.flags.during_write", "a flag's activation: new flags.json written to a temporary file, not renamed"),
    ("activate.before_done", "a flag's activation: flag set, plan not yet marked done"),
    ("rollback.migration.before_commit", "down.sql ran and the ledger row was marked reverted, not committed"),
    ("rollback.migration.after_commit", "a migration's rollback committed, journal not yet updated"),
    ("rollback.flags.during_write", "restored flags.json written to a temporary file, not renamed"),
    ("rollback.before_done", "every step reverted and proven, plan not yet marked done"),
    ("restore.before_copy", "restore verified the snapshot, target untouched"),
    ("restore.during_write", "rollback journal durable, part of the changed pages written"),
    ("restore.before_commit", "every changed page written and read back, journal not yet deleted"),
    ("restore.after_copy", "target restored and committed, not yet recorded"),
];

/// Aborts here when `REWIND_CRASH_AT` names this point (fault-injection
/// builds only).
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    use std::sync::Mutex;
    static HITS: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
    debug_assert!(POINTS.iter().any(|(p, _)| *p == name), "unknown crash point {name}");
    let Ok(want) = std::env::var("REWIND_CRASH_AT") else { return };
    let (want_name, want_n) = match want.split_once('#') {
        Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
        None => (want.clone(), 1),
    };
    if want_name != name {
        return;
    }
    let mut hits = HITS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = match hits.iter_mut().find(|(p, _)| p == name) {
        Some((_, n)) => {
            *n += 1;
            *n
        }
        None => {
            hits.push((name.to_string(), 1));
            1
        }
    };
    if n == want_n {
        eprintln!("rewind-agent: crash injected at {name}");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Whether `REWIND_FAULT` (comma-separated names) asks for the fault `name`
/// (fault-injection builds only; tests use it to make a step misbehave, e.g.
/// `snapshot.copy_differs` corrupts a snapshot's copy before it is verified,
/// `restore.write_differs` spoils one byte a page restore wrote before it is
/// read back).
#[cfg(feature = "fault-injection")]
#[must_use]
pub fn fault(name: &str) -> bool {
    std::env::var("REWIND_FAULT").is_ok_and(|v| v.split(',').any(|f| f.trim() == name))
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
#[must_use]
pub fn fault(_name: &str) -> bool {
    false
}
