//! A real PostgreSQL server for tests: `initdb` in a temp dir, `postgres` on
//! a free loopback port with its unix socket in that dir, torn down (`pg_ctl
//! stop -m immediate`) when the [`Postgres`] is dropped, also when a test
//! panics. PostgreSQL refuses to run as root, so as root (CI) the cluster is
//! owned by and run as the unprivileged user `nobody`; as any other user it
//! runs directly. The server binaries come from Debian's `postgresql`
//! package (`/usr/lib/postgresql/<major>/bin`, or `REWIND_PG_BIN`), which
//! `scripts/deps.sh` (`need_postgres`) installs when missing. When they are
//! absent the test fails saying so: no test skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The login every test cluster is created with.
pub const USER: &str = "rewind";
/// Its password (the cluster uses scram-sha-256, so URLs must carry it).
pub const PASSWORD: &str = "rewind-test-pw";

/// A running PostgreSQL cluster, stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_nobody: bool,
    stopped: bool,
    /// `pg_ctl -o` options of the running server (port, socket dir, TLS).
    opts: String,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The directory holding `initdb`, `postgres` and `pg_ctl`.
///
/// # Panics
/// When PostgreSQL's server binaries are not installed, saying how to get them.
#[must_use]
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("REWIND_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (nor REWIND_PG_BIN): \
             run the tests with scripts/test.sh, which installs them (apt-get install postgresql)"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

impl Postgres {
    /// Creates and starts a fresh cluster with a database named `rewind`.
    ///
    /// # Panics
    /// When PostgreSQL is not installed or does not start, with its log.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Like [`Postgres::start`] with TLS on: a fresh CA (written to
    /// [`Postgres::ca_pem`]) signs the server's certificate for `localhost`
    /// and `127.0.0.1`; plain connections are still accepted.
    ///
    /// # Panics
    /// As [`Postgres::start`].
    #[must_use]
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    /// The CA certificate (PEM) of a [`Postgres::start_tls`] server.
    #[must_use]
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn write_tls(dir: &Path) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "rewind test PostgreSQL CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
        std::fs::write(dir.join("server.crt"), cert.pem()).expect("server.crt");
        std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("server.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }

    fn start_with(tls: bool) -> Self {
        let bin = bin_dir();
        let as_nobody = is_root();
        let dir = tempfile::Builder::new().prefix("rewind-pg-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("pw"), format!("{PASSWORD}\n")).expect("password file");
        if tls {
            Self::write_tls(dir.path());
        }
        if as_nobody {
            let out = Command::new("chown").args(["-R", "nobody:"]).arg(dir.path()).output().expect("chown runs");
            assert!(
                out.status.success(),
                "chown nobody {}: {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut pg = Postgres { dir, bin, port: 0, as_nobody, stopped: true, opts: String::new() };
        let data = pg.data();
        let pw = pg.dir.path().join("pw");
        pg.run_checked(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                USER,
                "--pwfile",
                &pw.to_string_lossy(),
                "--auth=scram-sha-256",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        // The port is free when picked; another process could take it before
        // postgres binds, so retry a few times on a fresh one.
        for attempt in 0..3 {
            pg.port = free_port();
            pg.opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                pg.port,
                pg.dir.path().display()
            );
            if tls {
                let d = pg.dir.path().display();
                pg.opts.push_str(&format!(" -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key"));
            }
            let log = pg.dir.path().join("postgres.log");
            let out = pg.pg_ctl_start();
            if out.status.success() {
                pg.stopped = false;
                break;
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                attempt < 2 && log_text.contains("could not bind"),
                "PostgreSQL did not start: {}{}\n{log_text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pg.psql("postgres", "CREATE DATABASE rewind");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The loopback TCP port the server listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket.
    #[must_use]
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://rewind:PASSWORD@127.0.0.1:PORT/<db>`.
    #[must_use]
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of the `rewind` database.
    #[must_use]
    pub fn url(&self) -> String {
        self.url_for("rewind")
    }

    /// Creates another empty database and returns its URL.
    #[must_use]
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url_for(name)
    }

    /// Runs SQL with `psql` over the unix socket; returns its unaligned,
    /// tuples-only output.
    ///
    /// # Panics
    /// When psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_command(db, sql).output().expect("psql starts (Debian package postgresql-client)");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts `psql` running SQL in the background (e.g. a transaction
    /// that holds a lock for a while); wait for the child to end it.
    ///
    /// # Panics
    /// When psql cannot start.
    pub fn psql_background(&self, db: &str, sql: &str) -> std::process::Child {
        self.psql_command(db, sql)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("psql starts (Debian package postgresql-client)")
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let psql = ["psql", "/usr/bin/psql"]
            .iter()
            .map(|p| self.bin.join(p))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let mut c = Command::new(psql);
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db, "-c", sql])
            .env("PGPASSWORD", PASSWORD);
        c
    }

    /// Starts the server again on the same port and options, with its
    /// data, after a graceful [`Postgres::shutdown`] (an operator's restart).
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&mut self) {
        self.shutdown();
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "PostgreSQL did not start again: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.stopped = false;
    }

    /// Stops the server as an operator would (fast shutdown: sessions are
    /// cut, committed data is kept — unlike [`Postgres::stop`], which under
    /// this harness's `synchronous_commit = off` may lose the last commits).
    pub fn shutdown(&mut self) {
        if !self.stopped {
            let _ = self.run("pg_ctl", &["-D", &self.data().to_string_lossy(), "-m", "fast", "-w", "stop"]);
            self.stopped = true;
        }
    }

    fn pg_ctl_start(&self) -> Output {
        let log = self.dir.path().join("postgres.log");
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-l", &log.to_string_lossy(), "-o", &self.opts, "-w", "-t", "60", "start"],
        )
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn stop(&mut self) {
        if !self.stopped {
            let _ = self.run("pg_ctl", &["-D", &self.data().to_string_lossy(), "-m", "immediate", "-w", "stop"]);
            self.stopped = true;
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut c = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // postgres and its tools need a current directory they may read.
        c.args(args).current_dir(self.dir.path()).env_remove("PGDATA");
        c.output().unwrap_or_else(|e| panic!("{} does not start: {e}", exe.display()))
    }

    fn run_checked(&self, tool: &str, args: &[&str]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
