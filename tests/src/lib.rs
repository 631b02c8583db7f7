//! Harness for the end-to-end tests: runs the real binaries (built by
//! `scripts/test.sh` with the `fault-injection` feature) on temp dirs, makes
//! sample databases from `examples/notes-app`, and waits with a bounded
//! [`eventually`] instead of bare sleeps.

pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The workspace root.
#[must_use]
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Path of a workspace binary (`rewind-agent`, `rewindctl`, ...) in the
/// target directory that `cargo test` itself uses.
///
/// # Panics
/// When the binary was not built: run the tests with `scripts/test.sh`.
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let p = dir.join("debug").join(name);
    assert!(p.exists(), "{} is not built: run the tests with scripts/test.sh", p.display());
    p
}

/// The example notes-app directory.
#[must_use]
pub fn example() -> PathBuf {
    root().join("examples/notes-app")
}

/// A release directory of the example app, e.g. `2026.11.0`.
#[must_use]
pub fn release(name: &str) -> PathBuf {
    example().join("releases").join(name)
}

/// Copies a directory tree (a release, say) to `to`, creating it.
///
/// # Panics
/// When a file cannot be read or written.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
        }
    }
}

/// A copy of the example release `name` in `dir/name` whose `[rollout]`
/// table is replaced by `rollout` (test timings, one wave, ...).
///
/// # Panics
/// When the copy cannot be made.
#[must_use]
pub fn release_with_rollout(name: &str, dir: &Path, rollout: &str) -> PathBuf {
    let copy = dir.join(name);
    copy_dir(&release(name), &copy);
    let toml = copy.join("release.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let head = text.find("\n[rollout]").map_or(text.as_str(), |i| &text[..i]);
    std::fs::write(&toml, format!("{head}\n\n{rollout}\n")).unwrap();
    copy
}

/// Creates `dir/<target>.db` from `examples/notes-app/seed-<target>.sql`.
///
/// # Panics
/// When the seed cannot be run.
#[must_use]
pub fn seed_db(dir: &Path, target: &str) -> PathBuf {
    let path = dir.join(format!("{target}.db"));
    let sql = std::fs::read_to_string(example().join(format!("seed-{target}.sql"))).expect("seed file");
    rusqlite::Connection::open(&path).and_then(|c| c.execute_batch(&sql)).expect("seed runs");
    path
}

/// Output of a finished command, for assertions.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// stdout parsed as JSON.
    ///
    /// # Panics
    /// When stdout is not JSON.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `bin` with `args` and extra environment, waiting for it to end.
///
/// # Panics
/// When the binary cannot be started.
#[must_use]
pub fn run(bin_name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin(bin_name));
    c.args(args).env_remove("REWIND_CRASH_AT").env("REWIND_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().expect("binary starts"))
}

/// `rewind-agent --state STATE args...`.
#[must_use]
pub fn agent(state: &Path, args: &[&str]) -> Run {
    let s = state.to_string_lossy().into_owned();
    let mut all = vec!["--state", s.as_str()];
    all.extend_from_slice(args);
    run("rewind-agent", &all, &[])
}

/// Content digest (`b3:...`) of a database, via `rewind-agent checksum`.
///
/// # Panics
/// When checksum fails.
#[must_use]
pub fn digest(db: &Path) -> String {
    let r = run("rewind-agent", &["checksum", "--db", &db.to_string_lossy(), "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    r.json()["digest"].as_str().expect("digest field").to_string()
}

/// A child process killed (and reaped) when dropped: a coordinator, an
/// agent daemon, a server a test started.
pub struct Proc(pub std::process::Child);

impl Proc {
    /// Whether the process is still running.
    ///
    /// # Panics
    /// When its state cannot be read.
    pub fn alive(&mut self) -> bool {
        self.0.try_wait().expect("process state").is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a local port").local_addr().expect("bound").port()
}

/// Asserts that a run exited 0, showing it otherwise.
///
/// # Panics
/// When it did not.
pub fn ok(r: &Run) {
    assert_eq!(r.code, 0, "{r:?}");
}

/// Waits until `f` returns `Some`, polling every 20 ms, at most `limit`.
///
/// # Panics
/// When the limit passes first, naming `what`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP proxy on loopback to `target` that can be cut (every connection
/// dropped, new ones refused) and mended: a network partition between one
/// process and a server, for fault tests.
pub struct TcpProxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `target`.
    ///
    /// # Panics
    /// When no local port can be bound.
    #[must_use]
    pub fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
        let port = listener.local_addr().expect("bound").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = std::sync::Arc::clone(&cut);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let Ok(server) = std::net::TcpStream::connect(target) else { continue };
                for (mut from, mut to) in
                    [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
                {
                    let c = std::sync::Arc::clone(&c);
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                        let mut buf = [0u8; 16384];
                        loop {
                            if c.load(Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match std::io::Read::read(&mut from, &mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        TcpProxy { port, cut }
    }

    /// Drops every connection and refuses new ones until [`TcpProxy::mend`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
