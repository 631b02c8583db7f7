//! End-to-end: a real rewind-coordinator and real rewind-agent processes on
//! loopback with temp state dirs. Enrollment (single- and N-use tokens,
//! reused, expired and unknown tokens refused), five agents connected over
//! mTLS with labels and inventory, graceful shutdown and reconnect, and the
//! refusals: no client certificate, a certificate from another CA, no
//! operator token, a role too low, a revoked agent, garbage bytes on the
//! port; and a fleet listing larger than a default gRPC message (15,000
//! agents). A client nobody here wrote
//! (Python grpcio with grpcio-health-checking and grpcio-reflection) checks
//! health and reflection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rewind_tests::Proc;
use rewind_tests::{Run, bin, eventually, root, run};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Coordinator {
    proc: Proc,
    state: PathBuf,
    port: u16,
}

impl Coordinator {
    fn start(state: &Path, port: u16) -> Self {
        let child = Command::new(bin("rewind-coordinator"))
            .args(["--state", &state.to_string_lossy()])
            .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
            .env("REWIND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator starts");
        let c = Coordinator { proc: Proc(child), state: state.to_path_buf(), port };
        eventually("the coordinator answers Admin calls", Duration::from_secs(30), || {
            (c.ctl(&["agents", "--json"]).code == 0).then_some(())
        });
        c
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.state.join("ca.pem")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REWIND_COORDINATOR", self.url()),
            ("REWIND_CA", self.ca().to_string_lossy().into_owned()),
            ("REWIND_TOKEN_FILE", self.state.join("admin.token").to_string_lossy().into_owned()),
        ]
    }

    fn ctl(&self, args: &[&str]) -> Run {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run("rewindctl", args, &env)
    }

    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let r = self.ctl(&all);
        assert_eq!(r.code, 0, "{r:?}");
        let t = r.stdout.trim().to_string();
        assert!(
            t.starts_with("rwt_") && !t.contains(char::is_whitespace),
            "token create prints the token alone: {r:?}"
        );
        t
    }

    fn agents(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["agents", "--json"];
        args.extend_from_slice(extra);
        let r = self.ctl(&args);
        assert_eq!(r.code, 0, "{r:?}");
        r.json().as_array().expect("a JSON array").clone()
    }

    fn alive(&mut self) -> bool {
        self.proc.0.try_wait().expect("try_wait").is_none()
    }

    fn grpc(&self, args: &[&str]) -> Value {
        let script = root().join("tests/tests/fleet_grpc_client.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(self.ca())
            .args(args)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "fleet_grpc_client.py {args:?} failed (needs grpcio, grpcio-health-checking, grpcio-reflection: run scripts/test.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON from the Python client")
    }
}

/// An agent directory: agent.toml, a target database and a state dir.
struct AgentDir {
    dir: PathBuf,
}

impl AgentDir {
    fn new(base: &Path, name: &str, c: &Coordinator, labels: &[(&str, &str)]) -> Self {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        rusqlite::Connection::open(dir.join("notes.db"))
            .and_then(|db| {
                db.execute_batch(&format!(
                    "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('{name}');"
                ))
            })
            .unwrap();
        let labels: String = labels.iter().map(|(k, v)| format!("{k} = \"{v}\"\n")).collect();
        let toml = format!(
            "coordinator = \"{}\"\nca = \"{}\"\nstate = \"state\"\n\n[labels]\n{labels}\n[[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n",
            c.url(),
            c.ca().display()
        );
        std::fs::write(dir.join("agent.toml"), toml).unwrap();
        AgentDir { dir }
    }

    fn config(&self) -> String {
        self.dir.join("agent.toml").to_string_lossy().into_owned()
    }

    fn enroll(&self, token: &str) -> Run {
        run("rewind-agent", &["enroll", "--config", &self.config(), "--token", token, "--json"], &[])
    }

    fn run(&self) -> Proc {
        Proc(
            Command::new(bin("rewind-agent"))
                .args(["run", "--config", &self.config()])
                .env("REWIND_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("agent starts"),
        )
    }

    fn identity(&self, file: &str) -> String {
        self.dir.join("state/identity").join(file).to_string_lossy().into_owned()
    }
}

fn connected(agents: &[Value]) -> usize {
    agents.iter().filter(|a| a["connected"] == true).count()
}

#[test]
fn five_agents_enroll_connect_with_labels_and_reconnect_after_a_graceful_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut c = Coordinator::start(&tmp.path().join("coordinator"), port);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["admin.token", "ca.key"] {
            let mode = std::fs::metadata(c.state.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f} is private");
        }
    }
    assert!(c.agents(&[]).is_empty());

    let token = c.token(&["--labels", "ring=canary", "--uses", "5", "--ttl", "10m"]);
    let dirs: Vec<AgentDir> = (0..5)
        .map(|i| AgentDir::new(tmp.path(), &format!("agent{i}"), &c, &[("os", "linux"), ("idx", &i.to_string())]))
        .collect();
    let mut ids = Vec::new();
    for d in &dirs {
        let r = d.enroll(&token);
        assert_eq!(r.code, 0, "{r:?}");
        ids.push(r.json()["agent_id"].as_str().unwrap().to_string());
    }
    // The token allowed five enrollments: a sixth is refused, nothing written.
    let extra = AgentDir::new(tmp.path(), "agent5", &c, &[]);
    let r = extra.enroll(&token);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("already used"), "{r:?}");
    assert!(!extra.dir.join("state/identity/agent.json").exists());
    // Enrolling the same state dir twice is refused locally.
    let r = dirs[0].enroll(&c.token(&[]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("already enrolled"), "{r:?}");

    let mut procs: Vec<Proc> = dirs.iter().map(AgentDir::run).collect();
    let agents = eventually("five agents connected, with their inventory", Duration::from_secs(30), || {
        let a = c.agents(&[]);
        (connected(&a) == 5 && a.iter().all(|x| x["targets"].as_array().is_some_and(|t| t.len() == 1))).then_some(a)
    });
    let expected_digest = rewind_tests::digest(&dirs[2].dir.join("notes.db"));
    for a in &agents {
        assert!(ids.contains(&a["id"].as_str().unwrap().to_string()), "{a}");
        assert_eq!(a["labels"]["ring"], "canary", "token labels: {a}");
        assert_eq!(a["labels"]["os"], "linux", "agent.toml labels: {a}");
        assert_eq!(a["products"], serde_json::json!([]), "nothing installed yet: {a}");
        assert_eq!(a["targets"][0]["name"], "notes", "{a}");
    }
    let two = c.agents(&["--selector", "idx=2"]);
    assert_eq!(two.len(), 1);
    assert_eq!(two[0]["targets"][0]["digest"], expected_digest.as_str(), "hello carries the target's rewind-digest-1");
    assert_eq!(c.agents(&["--selector", "ring=broad"]).len(), 0);
    // The coordinator learned the key the agent signs its audit chain and results with.
    let audit = rewind_tests::agent(&dirs[2].dir.join("state"), &["audit", "verify", "--json"]);
    assert_eq!(audit.code, 0, "{audit:?}");
    assert_eq!(two[0]["audit_key"], audit.json()["key"], "{audit:?}");

    // An agent that stops is shown as not connected.
    drop(procs.remove(4));
    eventually("agent 4 shown offline", Duration::from_secs(30), || (connected(&c.agents(&[])) == 4).then_some(()));

    // SIGTERM: the coordinator ends the streams and exits 0; agents come back
    // to its successor on the same port and state.
    let pid = c.proc.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        eventually("coordinator exits after SIGTERM", Duration::from_secs(20), || c.proc.0.try_wait().unwrap());
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    assert!(!c.alive());
    let c2 = Coordinator::start(&c.state, port);
    let agents = eventually("four agents reconnected", Duration::from_secs(60), || {
        let a = c2.agents(&[]);
        (connected(&a) == 4).then_some(a)
    });
    assert_eq!(agents.len(), 5, "enrolled agents survive the restart: {agents:?}");
    drop(procs);
}

#[test]
fn refusals_health_and_reflection() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Coordinator::start(&tmp.path().join("a"), free_port());

    // A client nobody here wrote: health and reflection (v1 and v1alpha).
    let health = c.grpc(&["health"]);
    for name in ["", "rewind.v1.Fleet", "rewind.v1.Admin"] {
        assert_eq!(health[name], "SERVING", "{health}");
    }
    let services = c.grpc(&["reflect"]);
    for version in ["v1", "v1alpha"] {
        let list: Vec<&str> = services[version].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        for s in ["rewind.v1.Fleet", "rewind.v1.Admin", "grpc.health.v1.Health"] {
            assert!(list.contains(&s), "reflection {version} lists {s}: {list:?}");
        }
    }

    // Tokens: unknown, expired.
    let d = AgentDir::new(tmp.path(), "x", &c, &[]);
    let r = d.enroll("rwt_00000000000000000000000000000000");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("unknown"), "{r:?}");
    let created = Instant::now();
    let short = c.token(&["--ttl", "1s"]);
    eventually("the token's second passes", Duration::from_secs(5), || {
        (created.elapsed() > Duration::from_millis(2100)).then_some(())
    });
    let r = d.enroll(&short);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("expired"), "{r:?}");
    let r = c.ctl(&["token", "create", "--ttl", "0s"]);
    assert_eq!(r.code, 2, "a token that is never valid is bad input: {r:?}");

    // Fleet.Connect without a client certificate.
    let r = c.grpc(&["connect"]);
    assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");

    // A client certificate from another coordinator's CA: the TLS handshake
    // fails, and this coordinator keeps serving.
    let other = Coordinator::start(&tmp.path().join("b"), free_port());
    let foreign = AgentDir::new(tmp.path(), "foreign", &other, &[]);
    let r = foreign.enroll(&other.token(&[]));
    assert_eq!(r.code, 0, "{r:?}");
    let r = c.grpc(&["connect", &foreign.identity("key.pem"), &foreign.identity("cert.pem")]);
    assert_ne!(r["code"], "OK", "{r}");
    assert_ne!(r["code"], "INVALID_ARGUMENT", "the call must not reach the service: {r}");
    // The same certificate at its own coordinator gets past authentication.
    let r = other.grpc(&["connect", &foreign.identity("key.pem"), &foreign.identity("cert.pem")]);
    assert_eq!(r["code"], "INVALID_ARGUMENT", "authenticated, then refused for a missing hello: {r}");
    // An agent configured with the wrong CA/coordinator never shows up connected.
    assert!(c.agents(&[]).is_empty());

    // Admin without a bearer token, and with a wrong one.
    let r = c.grpc(&["admin-noauth"]);
    assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");
    let r = run(
        "rewindctl",
        &["agents", "--json"],
        &[
            ("REWIND_COORDINATOR", &c.url()),
            ("REWIND_CA", &c.ca().to_string_lossy()),
            ("REWIND_TOKEN", "rwa_not_a_token"),
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("unknown operator token"), "{r:?}");
    // A malformed selector is the caller's mistake.
    let r = c.ctl(&["agents", "--selector", "bad selector"]);
    assert_eq!(r.code, 2, "{r:?}");

    // Garbage bytes, a plaintext HTTP/2 preface and a half-open connection:
    // none of them disturbs the server.
    let mut idle = TcpStream::connect(("127.0.0.1", c.port)).unwrap();
    idle.write_all(&[0x16, 0x03, 0x01]).unwrap();
    for payload in [
        vec![0xAB; 64 * 1024],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", c.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(&payload);
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
    }
    assert!(c.alive(), "the coordinator survived garbage");
    let ok = AgentDir::new(tmp.path(), "ok", &c, &[("ring", "a")]);
    let r = ok.enroll(&c.token(&[]));
    assert_eq!(r.code, 0, "still enrolling while a half-open connection waits: {r:?}");
    // An enrolled agent's certificate, misbehaving: malformed protobuf, a
    // message over the 4 MiB limit, a stream that never says hello.
    for (what, want) in [("garbage", "INVALID_ARGUMENT"), ("big", "OUT_OF_RANGE"), ("silent", "DEADLINE_EXCEEDED")] {
        let r = c.grpc(&["connect-as", &ok.identity("key.pem"), &ok.identity("cert.pem"), what]);
        assert_eq!(r["code"], want, "{what}: {r}");
    }
    let _agent = ok.run();
    eventually("the agent connects after the garbage", Duration::from_secs(30), || {
        (connected(&c.agents(&[])) == 1).then_some(())
    });
    assert_eq!(c.grpc(&["health"])[""], "SERVING");
    drop(idle);

    // Roles: a viewer may list but not create tokens; an operator may create
    // enrollment tokens but not operators.
    let as_token = |token: &str, args: &[&str]| {
        run(
            "rewindctl",
            args,
            &[("REWIND_COORDINATOR", &c.url()), ("REWIND_CA", &c.ca().to_string_lossy()), ("REWIND_TOKEN", token)],
        )
    };
    let viewer = c.ctl(&["operator", "create", "vera", "--role", "viewer"]);
    assert_eq!(viewer.code, 0, "{viewer:?}");
    let viewer = viewer.stdout.trim().to_string();
    let operator = c.ctl(&["operator", "create", "otto", "--role", "operator"]).stdout.trim().to_string();
    assert_eq!(as_token(&viewer, &["agents", "--json"]).code, 0);
    let r = as_token(&viewer, &["token", "create"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("PermissionDenied") && r.stderr.contains("needs operator"), "{r:?}");
    assert_eq!(as_token(&operator, &["token", "create"]).code, 0);
    let r = as_token(&operator, &["operator", "create", "mallory", "--role", "admin"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("needs admin"), "{r:?}");
    assert_eq!(c.ctl(&["operator", "create", "x", "--role", "root"]).code, 2);

    // Revocation: the stream ends at once and the certificate is refused.
    let id = c.agents(&[])[0]["id"].as_str().unwrap().to_string();
    let r = as_token(&operator, &["revoke", &id]);
    assert_eq!(r.code, 0, "{r:?}");
    eventually("the revoked agent is disconnected", Duration::from_secs(30), || {
        (connected(&c.agents(&[])) == 0).then_some(())
    });
    let r = c.grpc(&["connect", &ok.identity("key.pem"), &ok.identity("cert.pem")]);
    assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");
    assert!(r["details"].as_str().unwrap().contains("revoked"), "{r}");
    assert_eq!(c.ctl(&["revoke", "agt-0000000000000000"]).code, 2, "unknown agent");
}

#[test]
fn coordinator_config_file_env_and_print_config() {
    let example = root().join("deploy/coordinator.toml");
    let example = example.to_string_lossy();
    let r = run(
        "rewind-coordinator",
        &["--config", &example, "--print-config"],
        &[("REWIND_LISTEN", "127.0.0.1:9443"), ("REWIND_LOG", "warn")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("listen = \"127.0.0.1:9443\""), "env overrides the file: {}", r.stdout);
    assert!(r.stdout.contains("rewind.example.internal"), "the file's hostnames: {}", r.stdout);
    let r = run(
        "rewind-coordinator",
        &["--print-config", "--state", "/tmp/x"],
        &[("REWIND_HOSTNAMES", "a.example, 10.0.0.1")],
    );
    assert!(
        r.stdout.contains("state = \"/tmp/x\"") && r.stdout.contains("hostnames = [\"a.example\", \"10.0.0.1\"]"),
        "{}",
        r.stdout
    );
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("c.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:1\"\nlisten_web = \"x\"\n").unwrap();
    let r = run("rewind-coordinator", &["--config", &bad.to_string_lossy(), "--print-config"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("listen_web"), "the unknown key is named: {r:?}");
    // store = "postgres" (its URL checks and a real server): fleet_postgres.rs.
}

#[test]
fn the_agent_list_of_a_fleet_larger_than_a_default_grpc_message_is_shown() {
    // 15,000 agents with long host names: the ListAgents answer is over
    // 4 MiB, tonic's default limit for a message the client decodes (at
    // 30,000 real agents `rewindctl agents` failed with "decoded message
    // length too large").
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let c = Coordinator::start(&state, free_port());
    let db = rusqlite::Connection::open(state.join("coordinator.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let n = db
        .execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 15000)
             INSERT INTO agents(id, hostname, labels, fingerprint, enrolled, inventory)
             SELECT printf('agt-%016x', i), printf('host-%d-', i) || replace(hex(zeroblob(150)), '00', 'ab'),
                    '{\"site\":\"bench\"}', printf('fp-%d', i), '2026-12-08T00:00:00Z', '{\"products\":[],\"targets\":[]}'
             FROM k",
            [],
        )
        .unwrap();
    assert_eq!(n, 15_000);
    let r = c.ctl(&["agents", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.len() > 4 << 20, "the answer is over 4 MiB: {} bytes", r.stdout.len());
    let agents: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(agents.len(), 15_000);
}
