//! Shared fixture of the phased-rollout E2E tests: a real coordinator
//! process, real agent daemons enrolled with labelled tokens over mTLS, a
//! 2-of-2 trust root, and release bundles built from copies of the example
//! releases with test timings in `[rollout]`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use rewind_tests::{Proc, ok};
use rewind_tests::{Run, bin, copy_dir, digest, eventually, release, run, seed_db};
use serde_json::Value;

/// A migration of a later release ([`Fleet::later_release`]): id, target,
/// up, down, verify.
pub type Migration<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// A migration for a later release: a table of tags on the notes database,
/// 20 rows on the seed data.
pub const NOTE_TAGS: Migration<'static> = (
    "0004_note_tags",
    "notes",
    "CREATE TABLE note_tags(note_id INTEGER NOT NULL REFERENCES notes(id), tag TEXT NOT NULL);\n\
     INSERT INTO note_tags SELECT id, 'starred' FROM notes WHERE id % 10 = 0;",
    "DROP TABLE note_tags;",
    "SELECT count(*) = 20 FROM note_tags;",
);

/// The test's temp dir; kept (and printed) when REWIND_KEEP_TMP is set, to
/// read the coordinator.log and endpoint*/agent.log after a failure.
pub struct Tmp(Option<tempfile::TempDir>, PathBuf);

impl Tmp {
    pub fn path(&self) -> &Path {
        &self.1
    }
}

pub fn tempdir() -> Tmp {
    let t = tempfile::tempdir().unwrap();
    if std::env::var_os("REWIND_KEEP_TMP").is_some() {
        let p = t.keep();
        eprintln!("keeping {}", p.display());
        return Tmp(None, p);
    }
    let p = t.path().to_path_buf();
    Tmp(Some(t), p)
}

pub struct Endpoint {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub id: String,
    pub ring: String,
    pub notes: PathBuf,
    pub settings: PathBuf,
    pub start_notes: String,
    pub start_settings: String,
    pub daemon: Option<Proc>,
}

impl Endpoint {
    pub fn start(&mut self) {
        self.daemon = Some(Proc(
            Command::new(bin("rewind-agent"))
                .args(["run", "--config", &self.config.to_string_lossy()])
                .env("REWIND_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log(&self.dir.join("agent.log")))
                .spawn()
                .unwrap(),
        ));
    }

    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// Both databases back at the digests they had before any rollout.
    pub fn at_start(&self) -> bool {
        digest(&self.notes) == self.start_notes && digest(&self.settings) == self.start_settings
    }
}

pub struct Fleet {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub port: u16,
    pub trust: PathBuf,
    pub coordinator: Option<Proc>,
    pub endpoints: Vec<Endpoint>,
    /// Top-level agent.toml lines for agents added from now on.
    pub agent_extra: String,
}

impl Fleet {
    /// A coordinator with a 2-of-2 trust root (alice, bob) on a free port.
    pub fn new(dir: &Path) -> Self {
        let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
        for k in ["alice", "bob"] {
            ok(&run("rewindctl", &["keys", "generate", "--out", &p(k)], &[]));
        }
        ok(&run(
            "rewindctl",
            &[
                "trust",
                "init",
                "--threshold",
                "2",
                "--key",
                &p("alice.pub"),
                "--key",
                &p("bob.pub"),
                "--out",
                &p("trust.toml"),
            ],
            &[],
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut f = Fleet {
            dir: dir.to_path_buf(),
            state: dir.join("coordinator"),
            port,
            trust: dir.join("trust.toml"),
            coordinator: None,
            endpoints: Vec::new(),
            agent_extra: String::new(),
        };
        f.start_coordinator();
        f
    }

    pub fn start_coordinator(&mut self) {
        let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        self.coordinator = Some(Proc(
            Command::new(bin("rewind-coordinator"))
                .args(["--state", &self.state.to_string_lossy()])
                .env("REWIND_LISTEN", format!("127.0.0.1:{}", self.port))
                .env("REWIND_WEB_LISTEN", format!("127.0.0.1:{web}"))
                .env("REWIND_TRUST", &self.trust)
                .env("REWIND_HEARTBEAT_SECONDS", "1")
                .env("REWIND_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log(&self.dir.join("coordinator.log")))
                .spawn()
                .unwrap(),
        ));
        eventually("coordinator ready", Duration::from_secs(30), || {
            (self.ctl(&["agents", "--json"]).code == 0).then_some(())
        });
    }

    /// kill -9 of the coordinator.
    pub fn kill_coordinator(&mut self) {
        self.coordinator = None;
    }

    pub fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_as(&self.state.join("admin.token"), args)
    }

    pub fn ctl_as(&self, token: &Path, args: &[&str]) -> Run {
        let url = format!("https://127.0.0.1:{}", self.port);
        let ca = self.state.join("ca.pem").to_string_lossy().into_owned();
        let token = token.to_string_lossy().into_owned();
        run("rewindctl", args, &[("REWIND_COORDINATOR", &url), ("REWIND_CA", &ca), ("REWIND_TOKEN_FILE", &token)])
    }

    /// An operator token file with `role`.
    pub fn operator(&self, name: &str, role: &str) -> PathBuf {
        let r = self.ctl(&["operator", "create", name, "--role", role]);
        ok(&r);
        let path = self.dir.join(format!("{name}.token"));
        std::fs::write(&path, r.stdout.trim()).unwrap();
        path
    }

    /// Enrolls and starts `n` agents labelled `ring=<ring>`.
    pub fn add(&mut self, ring: &str, n: usize) {
        let token = self.ctl(&["token", "create", "--labels", &format!("ring={ring}"), "--uses", &n.to_string()]);
        ok(&token);
        for _ in 0..n {
            let i = self.endpoints.len();
            let dir = self.dir.join(format!("endpoint{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let notes = seed_db(&dir, "notes");
            let settings = seed_db(&dir, "settings");
            let config = dir.join("agent.toml");
            std::fs::write(
                &config,
                format!(
                    "coordinator = \"https://127.0.0.1:{}\"\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n{}\n\
                     [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
                     [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
                    self.port,
                    self.state.join("ca.pem").display(),
                    self.trust.display(),
                    self.agent_extra
                ),
            )
            .unwrap();
            ok(&run(
                "rewind-agent",
                &["enroll", "--config", &config.to_string_lossy(), "--token", token.stdout.trim()],
                &[],
            ));
            let identity: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("state/identity/agent.json")).unwrap()).unwrap();
            let (start_notes, start_settings) = (digest(&notes), digest(&settings));
            let mut e = Endpoint {
                dir,
                config,
                id: identity["agent_id"].as_str().unwrap().to_string(),
                ring: ring.to_string(),
                notes,
                settings,
                start_notes,
                start_settings,
                daemon: None,
            };
            e.start();
            self.endpoints.push(e);
        }
    }

    /// Waits until every running agent is connected with its inventory.
    pub fn wait_connected(&self) {
        let want: Vec<&str> = self.endpoints.iter().filter(|e| e.daemon.is_some()).map(|e| e.id.as_str()).collect();
        eventually("agents connected with inventory", Duration::from_secs(60), || {
            let a = self.ctl(&["agents", "--json"]).json();
            let a = a.as_array()?;
            want.iter()
                .all(|id| {
                    a.iter().any(|x| {
                        x["id"] == *id
                            && x["connected"] == true
                            && x["targets"].as_array().is_some_and(|t| t.len() == 2)
                    })
                })
                .then_some(())
        });
    }

    /// Builds (from a copy of an example release with `rollout` as its
    /// `[rollout]` table and `edit` applied to release.toml), signs with
    /// both keys and uploads a bundle. With `samples` the bundle carries the
    /// rehearsal's predicted digests.
    pub fn bundle(&self, example: &str, rollout: &str, edit: &dyn Fn(String) -> String, samples: bool) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let copy = self.dir.join("releases").join(format!("{example}-{n}"));
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&release(example), &copy);
        let toml = copy.join("release.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        let head = text.find("\n[rollout]").map_or(text.as_str(), |i| &text[..i]);
        std::fs::write(&toml, format!("{}\n\n{rollout}\n", edit(head.to_string()))).unwrap();
        let out = self.dir.join(format!("{}.bundle.json", copy.file_name().unwrap().to_string_lossy()));
        let mut args: Vec<String> = vec!["release".into(), "build".into(), copy.to_string_lossy().into_owned()];
        if samples {
            let s = self.dir.join("samples");
            std::fs::create_dir_all(&s).unwrap();
            for t in ["notes", "settings"] {
                let db = s.join(format!("{t}.db"));
                if !db.exists() {
                    let _ = seed_db(&s, t);
                }
                args.push("--sample".into());
                args.push(format!("{t}={}", db.display()));
            }
        }
        args.push("--out".into());
        args.push(out.to_string_lossy().into_owned());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&run("rewindctl", &a, &[]));
        self.sign_and_upload(&out);
        out
    }

    /// Signs a built bundle with both keys of the 2-of-2 root and uploads it.
    fn sign_and_upload(&self, bundle: &Path) {
        for k in ["alice", "bob"] {
            let key = self.dir.join(format!("{k}.key"));
            ok(&run(
                "rewindctl",
                &["release", "sign", &bundle.to_string_lossy(), "--key", &key.to_string_lossy()],
                &[],
            ));
        }
        ok(&self.ctl(&["release", "upload", &bundle.to_string_lossy()]));
    }

    /// A later release of the product: a copy of 2026.11.0 (whose
    /// migrations every endpoint that applied sequence 7 already holds, so
    /// they are no-ops) as `version` / `sequence`, plus `migrations` of its
    /// own and `extra` release.toml text (checks, ...), with `rollout` as its
    /// `[rollout]`; `new_checkout` is already on under the release before,
    /// so that is its `previous`. Built without samples (its start state is
    /// the previous release's, not the seed's), signed by both keys and
    /// uploaded.
    pub fn later_release(
        &self,
        version: &str,
        sequence: u64,
        migrations: &[Migration<'_>],
        extra: &str,
        rollout: &str,
    ) -> PathBuf {
        let dir = self.dir.join("releases").join(version);
        copy_dir(&release("2026.11.0"), &dir);
        let toml = dir.join("release.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        let head = &text[..text.find("\n[rollout]").unwrap()];
        let mut out = head
            .replace("version = \"2026.11.0\"", &format!("version = \"{version}\""))
            .replace("sequence = 7", &format!("sequence = {sequence}"))
            .replace("previous = false", "previous = true");
        for (id, target, up, down, verify) in migrations {
            out.push_str(&format!("\n[[migration]]\nid = \"{id}\"\ntarget = \"{target}\"\n"));
            let m = dir.join("migrations").join(id);
            std::fs::create_dir_all(&m).unwrap();
            for (file, sql) in [("up.sql", up), ("down.sql", down), ("verify.sql", verify)] {
                std::fs::write(m.join(file), format!("{sql}\n")).unwrap();
            }
        }
        out.push_str(extra);
        std::fs::write(&toml, format!("{out}\n\n{rollout}")).unwrap();
        let bundle = self.dir.join(format!("{version}.bundle.json"));
        let (d, b) = (dir.to_string_lossy().into_owned(), bundle.to_string_lossy().into_owned());
        ok(&run("rewindctl", &["release", "build", &d, "--out", &b], &[]));
        self.sign_and_upload(&bundle);
        bundle
    }

    /// Per endpoint: the content digests of notes.db and settings.db.
    pub fn digests(&self) -> Vec<(String, String)> {
        self.endpoints.iter().map(|e| (digest(&e.notes), digest(&e.settings))).collect()
    }

    pub fn status(&self) -> Value {
        let r = self.ctl(&["rollout", "status", "notes", "--json"]);
        ok(&r);
        r.json()
    }

    /// Waits for a status that satisfies `f`.
    pub fn wait_status(&self, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(what, limit, || {
                let s = self.status();
                let hit = f(&s);
                last = s.clone();
                hit.then_some(s)
            })
        }));
        match found {
            Ok(s) => s,
            Err(_) => panic!("timed out after {limit:?} waiting for {what}; last status: {last:#}"),
        }
    }

    /// `(agent, kind, bundle)` of every delivery the coordinator stored.
    pub fn deliveries(&self) -> Vec<(String, String, String)> {
        let c = rusqlite::Connection::open(self.state.join("coordinator.db")).unwrap();
        let mut st = c.prepare("SELECT agent, kind, bundle FROM deliveries ORDER BY rowid").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// The signed reports the coordinator stored, parsed.
    pub fn results(&self) -> Vec<Value> {
        self.reports().into_iter().map(|(_, report)| report).collect()
    }

    /// `(agent, signed report)` of every result the coordinator stored, in order.
    pub fn reports(&self) -> Vec<(String, Value)> {
        let c = rusqlite::Connection::open(self.state.join("coordinator.db")).unwrap();
        let mut st = c.prepare("SELECT agent, payload FROM results ORDER BY rowid").unwrap();
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .unwrap()
            .map(|r| {
                let (a, p) = r.unwrap();
                (a, serde_json::from_slice(&p).unwrap())
            })
            .collect()
    }

    /// The coordinator's audit entries as `(kind, time, params)`.
    pub fn audit(&self) -> Vec<(String, String, Value)> {
        let export = self.ctl(&["audit", "export", "--format", "jsonl"]);
        ok(&export);
        export
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["record"] == "entry")
            .map(|r| {
                let params = match &r["params"] {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                    v => v.clone(),
                };
                (r["kind"].as_str().unwrap().to_string(), r["time"].as_str().unwrap_or("").to_string(), params)
            })
            .collect()
    }

    pub fn ids(&self, ring: &str) -> Vec<String> {
        self.endpoints.iter().filter(|e| e.ring == ring).map(|e| e.id.clone()).collect()
    }
}

pub fn agent<'a>(s: &'a Value, id: &str) -> &'a Value {
    s["agents"].as_array().unwrap().iter().find(|a| a["id"] == id).unwrap_or_else(|| panic!("agent {id} in {s:#}"))
}

pub fn wave<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["waves"].as_array().unwrap().iter().find(|w| w["name"] == name).unwrap_or_else(|| panic!("wave {name} in {s:#}"))
}

/// Milliseconds between two RFC 3339 UTC times (`...THH:MM:SS.mmmZ`) less
/// than a day apart.
pub fn ms_between(a: &str, b: &str) -> i64 {
    let t = |s: &str| -> i64 {
        let clock = s.split('T').nth(1).unwrap().trim_end_matches('Z');
        let mut parts = clock.split(':');
        let h: i64 = parts.next().unwrap().parse().unwrap();
        let m: i64 = parts.next().unwrap().parse().unwrap();
        let sec: f64 = parts.next().unwrap().parse().unwrap();
        (h * 3600 + m * 60) * 1000 + (sec * 1000.0).round() as i64
    };
    (t(b) - t(a)).rem_euclid(86_400_000)
}

/// Appends a process's stderr to `path` (kept in the test's temp dir).
fn log(path: &Path) -> Stdio {
    Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap())
}
