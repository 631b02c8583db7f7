//! A real coordinator with the example release uploaded (1-of-1 trust root,
//! rehearsed bundle) and agent daemons enrolled to it, for the daemon's
//! telemetry, local revert and OFREP tests; plus a plain HTTP/1.1 client for
//! the agent's local endpoint.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use rewind_tests::{Proc, free_port, ok};
use rewind_tests::{Run, bin, eventually, release, run, seed_db};

pub struct Fleet {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub port: u16,
    pub trust: PathBuf,
    /// The coordinator's stderr (tracing output).
    pub log: PathBuf,
    _proc: Proc,
}

impl Fleet {
    /// Keys, trust root, a rehearsed and signed bundle of
    /// `examples/notes-app/releases/2026.11.0`, a coordinator logging at
    /// `log_filter` into `coordinator.log`, the bundle uploaded.
    pub fn start(dir: &Path, log_filter: &str) -> Fleet {
        let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
        ok(&run("rewindctl", &["keys", "generate", "--out", &p("alice")], &[]));
        ok(&run(
            "rewindctl",
            &["trust", "init", "--threshold", "1", "--key", &p("alice.pub"), "--out", &p("trust.toml")],
            &[],
        ));
        let samples = dir.join("samples");
        std::fs::create_dir_all(&samples).unwrap();
        let (sn, ss) = (seed_db(&samples, "notes"), seed_db(&samples, "settings"));
        let bundle = p("notes.bundle.json");
        ok(&run(
            "rewindctl",
            &[
                "release",
                "build",
                &release("2026.11.0").to_string_lossy(),
                "--sample",
                &format!("notes={}", sn.display()),
                "--sample",
                &format!("settings={}", ss.display()),
                "--out",
                &bundle,
            ],
            &[],
        ));
        ok(&run("rewindctl", &["release", "sign", &bundle, "--key", &p("alice.key")], &[]));
        let port = free_port();
        let state = dir.join("coordinator");
        let log = dir.join("coordinator.log");
        let proc = Proc(
            Command::new(bin("rewind-coordinator"))
                .args(["--state", &state.to_string_lossy()])
                .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
                .env("REWIND_WEB_LISTEN", format!("127.0.0.1:{}", free_port()))
                .env("REWIND_TRUST", p("trust.toml"))
                .env("REWIND_HEARTBEAT_SECONDS", "1")
                .env("REWIND_LOG", log_filter)
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let fleet = Fleet { dir: dir.to_path_buf(), state, port, trust: dir.join("trust.toml"), log, _proc: proc };
        eventually("coordinator ready", Duration::from_secs(30), || {
            (fleet.ctl(&["agents", "--json"]).code == 0).then_some(())
        });
        ok(&fleet.ctl(&["release", "upload", &bundle]));
        fleet
    }

    pub fn ctl(&self, args: &[&str]) -> Run {
        let url = format!("https://127.0.0.1:{}", self.port);
        let ca = self.state.join("ca.pem").to_string_lossy().into_owned();
        let token = self.state.join("admin.token").to_string_lossy().into_owned();
        run("rewindctl", args, &[("REWIND_COORDINATOR", &url), ("REWIND_CA", &ca), ("REWIND_TOKEN_FILE", &token)])
    }

    /// The coordinator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Enrolls an endpoint in `name/` (notes.db and settings.db seeded,
    /// label ring=canary, `extra` appended to agent.toml before the
    /// targets) and starts its daemon with stderr in `name/agent.log`.
    pub fn endpoint(&self, name: &str, extra: &str) -> Endpoint {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let notes = seed_db(&dir, "notes");
        let settings = seed_db(&dir, "settings");
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "coordinator = \"https://127.0.0.1:{}\"\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n{extra}\n\n\
                 [labels]\nring = \"canary\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
                self.port,
                self.state.join("ca.pem").display(),
                self.trust.display()
            ),
        )
        .unwrap();
        let token = self.ctl(&["token", "create", "--labels", "ring=canary"]);
        ok(&token);
        ok(&run(
            "rewind-agent",
            &["enroll", "--config", &config.to_string_lossy(), "--token", token.stdout.trim()],
            &[],
        ));
        let log = dir.join("agent.log");
        let proc = Proc(
            Command::new(bin("rewind-agent"))
                .args(["run", "--config", &config.to_string_lossy()])
                .env("REWIND_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        Endpoint { dir: dir.clone(), state: dir.join("state"), notes, settings, log, proc }
    }
}

pub struct Endpoint {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub notes: PathBuf,
    pub settings: PathBuf,
    pub log: PathBuf,
    pub proc: Proc,
}

impl Endpoint {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// One request on a fresh connection; `None` when nothing listens yet.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Option<Http> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    Some(Http { status, headers, body: body.to_string() })
}
