//! The cases: each runs Rewind's command and its peers in turn on the same
//! files and turns the times into a [`Row`] with a ratio and a verdict.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::generate::TABLES;
use crate::release;

/// The programs a run uses.
pub struct Tools {
    pub agent: PathBuf,
    pub sqlite3: PathBuf,
    /// `None`: no dbhash; `sha256sum` of the file stands in.
    pub dbhash: Option<PathBuf>,
    pub sqitch: Option<PathBuf>,
    /// GNU time, for peak RSS of a child.
    pub time: Option<PathBuf>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

impl Tools {
    /// Finds the peers; sqlite3 is required, the others are optional.
    ///
    /// # Errors
    /// When sqlite3 is missing.
    pub fn find(agent: PathBuf, dbhash: Option<PathBuf>, _work: &Path) -> Result<Self> {
        let sqlite3 =
            on_path("sqlite3").context("sqlite3 not found on PATH: apt-get install sqlite3 (scripts/bench.sh does)")?;
        Ok(Tools {
            agent,
            sqlite3,
            dbhash: dbhash.filter(|p| p.is_file()).or_else(|| on_path("dbhash")),
            sqitch: on_path("sqitch"),
            time: Some(PathBuf::from("/usr/bin/time")).filter(|p| p.is_file()),
        })
    }

    pub fn describe(&self) {
        println!("rewind-agent: {}", self.agent.display());
        println!("sqlite3:      {} ({})", self.sqlite3.display(), version(&self.sqlite3, &["--version"]));
        match &self.dbhash {
            Some(p) => println!("dbhash:       {}", p.display()),
            None => println!("dbhash:       NOT FOUND: the digest is compared with `sha256sum` of the file instead"),
        }
        match &self.sqitch {
            Some(p) => println!("sqitch:       {} ({})", p.display(), version(p, &["--version"])),
            None => println!(
                "sqitch:       NOT FOUND: Sqitch cases are skipped (apt-get install sqitch libdbd-sqlite3-perl)"
            ),
        }
    }
}

fn version(p: &Path, args: &[&str]) -> String {
    Command::new(p)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Minimum and median of a series (seconds, or MiB for memory rows).
#[derive(Clone, Copy)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

fn stats(v: &[f64]) -> Stats {
    Stats { min: v.iter().copied().fold(f64::INFINITY, f64::min), median: median(v) }
}

/// One line of the result table.
pub struct Row {
    pub case: String,
    pub ours: Stats,
    pub peer_name: String,
    pub peer: Stats,
    pub ratio: f64,
    pub goal: String,
    /// `None`: informational, no goal.
    pub pass: Option<bool>,
    pub unit: &'static str,
}

impl Row {
    fn timed(case: &str, ours: &[f64], peer_name: &str, peer: &[f64], goal: Option<f64>) -> Row {
        let ratios: Vec<f64> = ours.iter().zip(peer).map(|(a, b)| a / b).collect();
        let ratio = median(&ratios);
        Row {
            case: case.into(),
            ours: stats(ours),
            peer_name: peer_name.into(),
            peer: stats(peer),
            ratio,
            goal: goal.map_or("-".into(), |g| format!("<= {g:.2}")),
            pass: goal.map(|g| ratio <= g),
            unit: "s",
        }
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<44} {:>16} {:<34} {:>16} {:>7} {:>8} {:>6}",
        "case", "ours min/med", "peer", "peer min/med", "ratio", "goal", "result"
    );
    for r in rows {
        let fmt = |s: Stats| match r.unit {
            "s" => format!("{:.3}/{:.3}s", s.min, s.median),
            u => format!("{:.1}/{:.1}{u}", s.min, s.median),
        };
        let verdict = match r.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "info",
        };
        println!(
            "{:<44} {:>16} {:<34} {:>16} {:>7.3} {:>8} {:>6}",
            r.case,
            fmt(r.ours),
            r.peer_name,
            fmt(r.peer),
            r.ratio,
            r.goal,
            verdict
        );
    }
}

/// Runs a command to completion, output discarded, and returns its wall
/// time in seconds.
fn timed(cmd: &mut Command) -> Result<f64> {
    Ok(timed_output(cmd)?.0)
}

/// Like [`timed`], also returning stdout.
fn timed_output(cmd: &mut Command) -> Result<(f64, String)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("start {cmd:?}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Runs `sql` through the sqlite3 CLI (stopping at the first error), timed.
fn sqlite3_script(sqlite3: &Path, db: &Path, sql: &str) -> Result<f64> {
    let script = db.with_extension("bench.sql");
    std::fs::write(&script, sql)?;
    let t = timed(Command::new(sqlite3).arg("-bail").arg(db).arg(format!(".read {}", script.display())));
    let _ = std::fs::remove_file(&script);
    t
}

/// Copies `from` to `to` and flushes it, untimed set-up for a run.
fn fresh_copy(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    std::fs::File::open(to)?.sync_all()?;
    Ok(())
}

fn remove(p: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
}

type Step<'a> = Box<dyn FnMut() -> Result<f64> + 'a>;

/// One warm-up round, then `reps` counted rounds; each round runs every
/// step once, starting at a different step each time (A B C, B C A, ...).
fn rounds(reps: usize, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f64>>> {
    let n = steps.len();
    let mut times = vec![Vec::new(); n];
    for round in 0..=reps {
        for k in 0..n {
            let i = (round + k) % n;
            let t = steps[i]()?;
            if round > 0 {
                times[i].push(t);
            }
        }
    }
    Ok(times)
}

/// A benchmark run's shared inputs.
pub struct Bench<'a> {
    pub tools: &'a Tools,
    pub work: &'a Path,
    pub db: &'a Path,
    pub reps: usize,
}

impl Bench<'_> {
    fn agent(&self, state: &Path) -> Command {
        let mut c = Command::new(&self.tools.agent);
        c.arg("--state").arg(state);
        c
    }

    fn state(&self, name: &str) -> Result<PathBuf> {
        let s = self.work.join(name);
        timed(self.agent(&s).args(["snapshot", "list"]))?;
        Ok(s)
    }

    fn prune(&self, state: &Path) -> Result<()> {
        timed(self.agent(state).args(["snapshot", "prune", "--keep", "0"]))?;
        Ok(())
    }

    fn cp_sync(&self, from: &Path, to: &Path) -> Result<f64> {
        Ok(timed(Command::new("cp").arg(from).arg(to))? + timed(Command::new("sync").arg(to))?)
    }

    /// Durable snapshot vs `cp` + `sync` and vs `sqlite3 .backup`.
    ///
    /// # Errors
    /// When a command fails.
    pub fn snapshot(&self) -> Result<Vec<Row>> {
        println!("snapshot: rewind-agent snapshot create | cp + sync FILE | sqlite3 .backup");
        let state = self.state("state-snapshot")?;
        let (cp_to, backup_to) = (self.work.join("cp.db"), self.work.join("backup.db"));
        let mut steps: Vec<Step<'_>> = vec![
            Box::new(|| {
                let t = timed(self.agent(&state).args(["snapshot", "create", "--db"]).arg(self.db))?;
                self.prune(&state)?;
                Ok(t)
            }),
            Box::new(|| {
                let t = self.cp_sync(self.db, &cp_to)?;
                remove(&cp_to);
                Ok(t)
            }),
            Box::new(|| {
                let t = timed(
                    Command::new(&self.tools.sqlite3).arg(self.db).arg(format!(".backup '{}'", backup_to.display())),
                )?;
                remove(&backup_to);
                Ok(t)
            }),
        ];
        let t = rounds(self.reps, &mut steps)?;
        Ok(vec![
            Row::timed("durable snapshot (snapshot create)", &t[0], "cp + sync", &t[1], Some(1.2)),
            Row::timed("durable snapshot (snapshot create)", &t[0], "sqlite3 .backup", &t[2], Some(0.999)),
        ])
    }

    /// Full digest vs a bare scan of every column by the sqlite3 CLI and vs
    /// dbhash (or sha256sum when dbhash is missing).
    ///
    /// # Errors
    /// When a command fails.
    pub fn digest(&self) -> Result<Vec<Row>> {
        let scan: String = TABLES.iter().map(|(t, cols)| format!("SELECT {} FROM {t};", cols.join(", "))).collect();
        let (hash_name, hash_cmd) = match &self.tools.dbhash {
            Some(p) => ("dbhash (SQLite tool)", p.clone()),
            None => ("sha256sum (dbhash NOT FOUND)", PathBuf::from("sha256sum")),
        };
        println!("digest: rewind-agent checksum | sqlite3 `{scan}` > /dev/null | {hash_name}");
        let mut steps: Vec<Step<'_>> = vec![
            Box::new(|| timed(self.agent(&self.work.join("state-digest")).args(["checksum", "--db"]).arg(self.db))),
            Box::new(|| timed(Command::new(&self.tools.sqlite3).arg("-readonly").arg(self.db).arg(&scan))),
            Box::new(|| timed(Command::new(&hash_cmd).arg(self.db))),
        ];
        let t = rounds(self.reps, &mut steps)?;
        Ok(vec![
            Row::timed("full digest (checksum)", &t[0], "sqlite3 full scan of every column", &t[1], Some(1.0)),
            Row::timed("full digest (checksum)", &t[0], hash_name, &t[2], Some(0.5)),
        ])
    }

    /// Restore into an existing target vs `cp` + `sync` and `sqlite3 .restore`.
    /// The target is the database as the benchmark's migration left it (the
    /// case `rollback = "restore"` meets: about a sixth of the pages differ
    /// from the snapshot, and the file grew); a second line restores into an
    /// unchanged copy (nothing differs), for information.
    ///
    /// # Errors
    /// When a command fails.
    pub fn restore(&self) -> Result<Vec<Row>> {
        println!(
            "restore: rewind-agent snapshot restore | cp + sync FILE | sqlite3 .restore, into the migrated database; \
             rewind-agent snapshot restore into an unchanged copy"
        );
        let state = self.state("state-restore")?;
        let (_, out) = timed_output(self.agent(&state).args(["snapshot", "create", "--json", "--db"]).arg(self.db))?;
        let snap: serde_json::Value = serde_json::from_str(&out).context("snapshot create --json")?;
        let id = snap["id"].as_str().context("snapshot id")?.to_string();
        let file = PathBuf::from(snap["file"].as_str().context("snapshot file")?);
        let migrated = self.work.join("migrated.db");
        fresh_copy(self.db, &migrated)?;
        let rows: i64 =
            rusqlite::Connection::open(&migrated)?.query_row("SELECT max(id) FROM notes", [], |r| r.get(0))?;
        sqlite3_script(&self.tools.sqlite3, &migrated, &format!("BEGIN;\n{}COMMIT;\n", release::up(rows)))?;
        std::fs::File::open(&migrated)?.sync_all()?;
        let (ours_to, cp_to, sqlite_to, same_to) = (
            self.work.join("r-ours.db"),
            self.work.join("r-cp.db"),
            self.work.join("r-sqlite.db"),
            self.work.join("r-same.db"),
        );
        let mut steps: Vec<Step<'_>> = vec![
            Box::new(|| {
                fresh_copy(&migrated, &ours_to)?;
                timed(self.agent(&state).args(["snapshot", "restore", &id, "--db"]).arg(&ours_to))
            }),
            Box::new(|| {
                fresh_copy(&migrated, &cp_to)?;
                self.cp_sync(&file, &cp_to)
            }),
            Box::new(|| {
                fresh_copy(&migrated, &sqlite_to)?;
                timed(Command::new(&self.tools.sqlite3).arg(&sqlite_to).arg(format!(".restore '{}'", file.display())))
            }),
            Box::new(|| {
                fresh_copy(self.db, &same_to)?;
                timed(self.agent(&state).args(["snapshot", "restore", &id, "--db"]).arg(&same_to))
            }),
        ];
        let t = rounds(self.reps, &mut steps)?;
        drop(steps);
        for p in [&ours_to, &cp_to, &sqlite_to, &same_to, &migrated] {
            remove(p);
        }
        self.prune(&state)?;
        Ok(vec![
            Row::timed("restore, migrated target (snapshot restore)", &t[0], "cp + sync", &t[1], Some(1.2)),
            Row::timed("restore, migrated target (snapshot restore)", &t[0], "sqlite3 .restore", &t[2], None),
            Row::timed("restore, nothing differs (snapshot restore)", &t[3], "cp + sync", &t[1], None),
        ])
    }

    /// Apply + rollback on a tiny database: the fixed cost beyond the SQL,
    /// ours vs Sqitch's.
    ///
    /// # Errors
    /// When a command fails.
    pub fn fixed_overhead(&self) -> Result<Vec<Row>> {
        println!(
            "fixed overhead: tiny database, apply + rollback | sqitch deploy --verify + revert -y | the same SQL by sqlite3"
        );
        let dir = self.work.join("tiny");
        std::fs::create_dir_all(&dir)?;
        let tiny = dir.join("tiny.db");
        crate::generate::tiny(&tiny)?;
        let rel = dir.join("release");
        release::rewind_release(&rel, 2)?;
        let state = self.state("state-tiny")?;
        let target = dir.join("target.db");
        let raw_target = dir.join("raw.db");
        let up = format!("BEGIN;\n{}{}COMMIT;\n", release::up(2), release::VERIFY);
        let down = format!("BEGIN;\n{}COMMIT;\n", release::DOWN);
        let sqitch_dir = dir.join("sqitch");
        let sqitch_target = sqitch_dir.join("target.db");
        let mut steps: Vec<Step<'_>> = vec![
            Box::new(|| {
                fresh_copy(&tiny, &target)?;
                let map = format!("notes={}", target.display());
                let a = timed(self.agent(&state).args(["apply", "--release"]).arg(&rel).args(["--db", &map]))?;
                let r = timed(self.agent(&state).args(["rollback", "--release"]).arg(&rel).args(["--db", &map]))?;
                self.prune(&state)?;
                Ok(a + r)
            }),
            Box::new(|| {
                fresh_copy(&tiny, &raw_target)?;
                Ok(sqlite3_script(&self.tools.sqlite3, &raw_target, &up)?
                    + sqlite3_script(&self.tools.sqlite3, &raw_target, &down)?)
            }),
        ];
        if let Some(sqitch) = &self.tools.sqitch {
            release::sqitch_project(&sqitch_dir, 2)?;
            let uri = format!("db:sqlite:{}", sqitch_target.display());
            let (tiny, sqitch_target, sqitch_dir) = (&tiny, &sqitch_target, &sqitch_dir);
            steps.push(Box::new(move || {
                fresh_copy(tiny, sqitch_target)?;
                let d = timed(Command::new(sqitch).current_dir(sqitch_dir).args(["deploy", "--verify", &uri]))?;
                let r = timed(Command::new(sqitch).current_dir(sqitch_dir).args(["revert", "-y", &uri]))?;
                Ok(d + r)
            }));
        }
        let t = rounds(self.reps, &mut steps)?;
        let raw = median(&t[1]);
        let over = |v: &[f64]| v.iter().map(|x| (x - raw).max(0.0)).collect::<Vec<_>>();
        let mut rows = vec![Row::timed("apply+rollback, tiny db (total)", &t[0], "sqlite3, the same SQL", &t[1], None)];
        if t.len() > 2 {
            rows.push(Row::timed(
                "apply+rollback fixed overhead (beyond SQL)",
                &over(&t[0]),
                "sqitch overhead (beyond SQL)",
                &over(&t[2]),
                Some(0.1),
            ));
        }
        Ok(rows)
    }

    /// Apply + rollback of a one-table migration on the big database: the
    /// migration step alone vs the sqlite3 CLI, and the whole safe apply +
    /// rollback vs Sqitch.
    ///
    /// # Errors
    /// When a command fails.
    pub fn apply_rollback(&self) -> Result<Vec<Row>> {
        println!(
            "apply: apply + rollback (snapshot, proofs) | sqitch deploy --verify + revert -y | the same SQL by sqlite3"
        );
        let rows: i64 =
            rusqlite::Connection::open(self.db)?.query_row("SELECT max(id) FROM notes", [], |r| r.get(0))?;
        let dir = self.work.join("big");
        std::fs::create_dir_all(&dir)?;
        let rel = dir.join("release");
        release::rewind_release(&rel, rows)?;
        let state = self.state("state-apply")?;
        let target = dir.join("target.db");
        let raw_target = dir.join("raw.db");
        let up = format!("BEGIN;\n{}{}COMMIT;\n", release::up(rows), release::VERIFY);
        let down = format!("BEGIN;\n{}COMMIT;\n", release::DOWN);
        let sqitch_dir = dir.join("sqitch");
        let sqitch_target = sqitch_dir.join("target.db");
        let mut migration_ms = Vec::new();
        let mut raw_up = Vec::new();
        let mut steps: Vec<Step<'_>> = vec![
            Box::new(|| {
                fresh_copy(self.db, &target)?;
                let map = format!("notes={}", target.display());
                let (a, out) = timed_output(
                    self.agent(&state).args(["apply", "--json", "--release"]).arg(&rel).args(["--db", &map]),
                )?;
                let (r, back) = timed_output(
                    self.agent(&state).args(["rollback", "--json", "--release"]).arg(&rel).args(["--db", &map]),
                )?;
                let report: serde_json::Value = serde_json::from_str(&out).context("apply --json")?;
                let back: serde_json::Value = serde_json::from_str(&back).context("rollback --json")?;
                if report["status"] != "applied" || back["status"] != "rolled_back" {
                    bail!("apply/rollback did not succeed: {out}\n{back}");
                }
                let step = report["steps"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["step"].as_str().is_some_and(|n| n.starts_with("migration"))))
                    .context("apply report has no migration step")?;
                let secs =
                    step["micros"].as_f64().map(|u| u / 1e6).or_else(|| step["millis"].as_f64().map(|m| m / 1e3));
                migration_ms.push(secs.context("migration step time")?);
                self.prune(&state)?;
                Ok(a + r)
            }),
            Box::new(|| {
                fresh_copy(self.db, &raw_target)?;
                let u = sqlite3_script(&self.tools.sqlite3, &raw_target, &up)?;
                raw_up.push(u);
                Ok(u + sqlite3_script(&self.tools.sqlite3, &raw_target, &down)?)
            }),
        ];
        if let Some(sqitch) = &self.tools.sqitch {
            release::sqitch_project(&sqitch_dir, rows)?;
            let uri = format!("db:sqlite:{}", sqitch_target.display());
            let (sqitch_target, sqitch_dir) = (&sqitch_target, &sqitch_dir);
            steps.push(Box::new(move || {
                fresh_copy(self.db, sqitch_target)?;
                let d = timed(Command::new(sqitch).current_dir(sqitch_dir).args(["deploy", "--verify", &uri]))?;
                let r = timed(Command::new(sqitch).current_dir(sqitch_dir).args(["revert", "-y", &uri]))?;
                Ok(d + r)
            }));
        }
        let t = rounds(self.reps, &mut steps)?;
        drop(steps);
        // The warm-up round's step times are the first entries.
        let migration = &migration_ms[migration_ms.len() - self.reps..];
        let raw_up = &raw_up[raw_up.len() - self.reps..];
        let mut out = vec![Row::timed(
            "migration work (excl. snapshot, proofs)",
            migration,
            "sqlite3, the same SQL",
            raw_up,
            Some(1.1),
        )];
        if t.len() > 2 {
            out.push(Row::timed(
                "safe apply + rollback, end to end",
                &t[0],
                "sqitch deploy --verify + revert -y",
                &t[2],
                Some(1.0),
            ));
            out.push(Row::timed("(peer check) sqitch deploy+revert", &t[2], "sqlite3 up + down", &t[1], None));
        }
        out.push(Row::timed("safe apply + rollback, end to end", &t[0], "sqlite3 up + down (no safety)", &t[1], None));
        for p in [&target, &raw_target, &sqitch_target] {
            remove(p);
        }
        Ok(out)
    }

    /// Peak RSS of `checksum` and `snapshot create` on a database a tenth the
    /// size and on the full-size one.
    ///
    /// # Errors
    /// When a command fails or GNU time is missing.
    pub fn memory(&self, small: &Path) -> Result<Vec<Row>> {
        let time = self.tools.time.as_ref().context("/usr/bin/time (Debian package `time`) is needed for peak RSS")?;
        println!("memory: peak RSS (GNU time %M) at {} and {}", small.display(), self.db.display());
        let state = self.state("state-memory")?;
        let rss = |args: &[&str], db: &Path| -> Result<f64> {
            let out = Command::new(time)
                .args(["-f", "RSS %M"])
                .arg(&self.tools.agent)
                .arg("--state")
                .arg(&state)
                .args(args)
                .arg(db)
                .stdout(Stdio::null())
                .output()?;
            if !out.status.success() {
                bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let err = String::from_utf8_lossy(&out.stderr);
            let kib: f64 = err
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("RSS "))
                .context("no RSS from GNU time")?
                .trim()
                .parse()?;
            Ok(kib / 1024.0)
        };
        let mut rows = Vec::new();
        for (name, args) in [
            ("peak RSS, checksum", &["checksum", "--db"][..]),
            ("peak RSS, snapshot create", &["snapshot", "create", "--db"][..]),
        ] {
            let (mut big, mut little) = (Vec::new(), Vec::new());
            for _ in 0..self.reps.min(3) {
                little.push(rss(args, small)?);
                big.push(rss(args, self.db)?);
                self.prune(&state)?;
            }
            let (b, s) = (stats(&big), stats(&little));
            rows.push(Row {
                case: format!("{name} (full size vs 1/10)"),
                ours: b,
                peer_name: "ours at 1/10 size".into(),
                peer: s,
                ratio: b.median / s.median,
                goal: "< 64 MiB".into(),
                pass: Some(b.median.max(s.median) < 64.0),
                unit: "MiB",
            });
        }
        Ok(rows)
    }
}
