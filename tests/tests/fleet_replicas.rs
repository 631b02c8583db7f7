//! End-to-end: three real coordinator replicas on one real PostgreSQL
//! (docs/replicas.md), six real agents spread over them (each agent lists
//! the replicas in its own order). The replicas share the CA, the admin
//! token and the audit key through the store; exactly one leads (the
//! `/healthz` of each says which). A phased rollout is started through a
//! follower (forwarded to the leader), the leader is killed with -9 while
//! the rollout awaits an approval, another replica takes the lease over
//! and the approval (through yet another replica) finishes the rollout:
//! every agent got its apply plan exactly once and each result was counted
//! once. A fleet-wide rollback through a follower then reaches agents on
//! every surviving replica, each proven by digest, and the shared audit
//! chain verifies. The killed replica comes back as a follower.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rewind_tests::postgres::Postgres;
use rewind_tests::{Proc, free_port, ok};
use rewind_tests::{Run, bin, digest, eventually, release_with_rollout, run, seed_db};
use serde_json::Value;

struct Replica {
    state: PathBuf,
    port: u16,
    web: u16,
    proc: Option<Proc>,
}

impl Replica {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn start(&mut self, store_url: &str, trust: &Path) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.state.with_extension("log")).unwrap();
        self.proc = Some(Proc(
            Command::new(bin("rewind-coordinator"))
                .args(["--state", &self.state.to_string_lossy()])
                .env("REWIND_LISTEN", format!("127.0.0.1:{}", self.port))
                .env("REWIND_WEB_LISTEN", format!("127.0.0.1:{}", self.web))
                .env("REWIND_STORE", "postgres")
                .env("REWIND_STORE_URL", store_url)
                .env("REWIND_TRUST", trust)
                .env("REWIND_HEARTBEAT_SECONDS", "1")
                .env("REWIND_LEASE_SECONDS", "3")
                .env("REWIND_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        ));
    }

    fn ctl(&self, args: &[&str]) -> Run {
        let ca = self.state.join("ca.pem").to_string_lossy().into_owned();
        let token = self.state.join("admin.token").to_string_lossy().into_owned();
        run(
            "rewindctl",
            args,
            &[("REWIND_COORDINATOR", &self.url()), ("REWIND_CA", &ca), ("REWIND_TOKEN_FILE", &token)],
        )
    }

    /// `/healthz` as JSON, when the replica answers.
    fn health(&self) -> Option<Value> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.web)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        serde_json::from_str(raw.split_once("\r\n\r\n")?.1).ok()
    }

    fn leads(&self) -> Option<bool> {
        self.health().and_then(|h| h["leader"].as_bool())
    }
}

/// The replicas running that say they lead.
fn leaders(replicas: &[Replica]) -> Vec<usize> {
    (0..replicas.len()).filter(|i| replicas[*i].proc.is_some() && replicas[*i].leads() == Some(true)).collect()
}

struct Endpoint {
    dir: PathBuf,
    id: String,
    notes: PathBuf,
    settings: PathBuf,
    start: (String, String),
    _proc: Proc,
}

#[test]
fn three_replicas_share_one_fleet_survive_the_leaders_kill_9_and_roll_back_everywhere() {
    let pg = Postgres::start();
    let store_url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = |name: &str| t.join(name).to_string_lossy().into_owned();
    ok(&run("rewindctl", &["keys", "generate", "--out", &p("alice")], &[]));
    ok(&run(
        "rewindctl",
        &["trust", "init", "--threshold", "1", "--key", &p("alice.pub"), "--out", &p("trust.toml")],
        &[],
    ));
    let trust = t.join("trust.toml");
    // Canary first, then everyone after an approval: the rollout waits there.
    let rel = release_with_rollout(
        "2026.11.0",
        t,
        "[rollout]\nwaves = [\n  { name = \"canary\", selector = \"ring=canary\" },\n  \
         { name = \"all\", percent = 100, approval = true },\n]\nreport_timeout = \"60s\"\nauto_rollback = true",
    );
    let bundle = p("notes.bundle.json");
    ok(&run("rewindctl", &["release", "build", &rel.to_string_lossy(), "--out", &bundle], &[]));
    ok(&run("rewindctl", &["release", "sign", &bundle, "--key", &p("alice.key")], &[]));

    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica { state: t.join(format!("replica{i}")), port: free_port(), web: free_port(), proc: None })
        .collect();
    // The first one makes the CA, the admin token and the audit key; the
    // others take them from the store.
    replicas[0].start(&store_url, &trust);
    eventually("replica 0 answers", Duration::from_secs(30), || (replicas[0].ctl(&["agents"]).code == 0).then_some(()));
    for r in &mut replicas[1..] {
        r.start(&store_url, &trust);
    }
    for (i, r) in replicas.iter().enumerate() {
        eventually(&format!("replica {i} answers"), Duration::from_secs(30), || {
            (r.ctl(&["agents"]).code == 0).then_some(())
        });
    }
    let read = |r: &Replica, f: &str| std::fs::read(r.state.join(f)).unwrap();
    for f in ["ca.pem", "admin.token", "coordinator.pub"] {
        assert_eq!(read(&replicas[1], f), read(&replicas[0], f), "{f} shared");
        assert_eq!(read(&replicas[2], f), read(&replicas[0], f), "{f} shared");
    }
    let first = eventually("one leader", Duration::from_secs(20), || {
        let l = leaders(&replicas);
        (l.len() == 1 && (0..3).all(|i| replicas[i].health().is_some())).then(|| l[0])
    });

    // Six agents, each listing the replicas in its own order.
    let token = replicas[1].ctl(&["token", "create", "--labels", "ring=canary", "--uses", "2"]);
    ok(&token);
    let main_token = replicas[2].ctl(&["token", "create", "--labels", "ring=main", "--uses", "4"]);
    ok(&main_token);
    let ca = replicas[0].state.join("ca.pem");
    let mut endpoints = Vec::new();
    for i in 0..6 {
        let dir = t.join(format!("endpoint{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (notes, settings) = (seed_db(&dir, "notes"), seed_db(&dir, "settings"));
        let order: Vec<String> = (0..3).map(|k| format!("\"{}\"", replicas[(i + k) % 3].url())).collect();
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "coordinator = [{}]\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
                order.join(", "),
                ca.display(),
                trust.display()
            ),
        )
        .unwrap();
        let tok = if i < 2 { token.stdout.trim() } else { main_token.stdout.trim() };
        ok(&run("rewind-agent", &["enroll", "--config", &config.to_string_lossy(), "--token", tok], &[]));
        let identity: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state/identity/agent.json")).unwrap()).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let proc = Proc(
            Command::new(bin("rewind-agent"))
                .args(["run", "--config", &config.to_string_lossy()])
                .env("REWIND_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
        let start = (digest(&notes), digest(&settings));
        endpoints.push(Endpoint {
            dir,
            id: identity["agent_id"].as_str().unwrap().to_string(),
            notes,
            settings,
            start,
            _proc: proc,
        });
    }
    // Every replica sees all six connected, wherever their stream is.
    for r in &replicas {
        eventually("all six connected, seen from every replica", Duration::from_secs(60), || {
            let a = r.ctl(&["agents", "--json"]);
            (a.code == 0
                && a.json().as_array().is_some_and(|v| {
                    v.len() == 6
                        && v.iter()
                            .all(|x| x["connected"] == true && x["targets"].as_array().is_some_and(|t| t.len() == 2))
                }))
            .then_some(())
        });
    }

    // Upload and start through followers (the start is forwarded to the leader).
    let follower = (first + 1) % 3;
    let other = (first + 2) % 3;
    ok(&replicas[follower].ctl(&["release", "upload", &bundle]));
    ok(&replicas[other].ctl(&["rollout", "start", "notes", "2026.11.0"]));
    let status = |r: &Replica| {
        let s = r.ctl(&["rollout", "status", "notes", "--json"]);
        (s.code == 0).then(|| s.json())
    };
    eventually("canaries applied, waiting for the approval", Duration::from_secs(60), || {
        status(&replicas[follower]).filter(|s| s["state"] == "awaiting_approval")
    });

    // kill -9 of the leader; another takes the lease over.
    replicas[first].proc = None;
    let second = eventually("another replica leads", Duration::from_secs(30), || {
        let l = leaders(&replicas);
        (l.len() == 1 && l[0] != first).then(|| l[0])
    });
    let approver = if second == follower { other } else { follower };
    eventually("the approval lands (through a follower, forwarded)", Duration::from_secs(30), || {
        (replicas[approver].ctl(&["rollout", "approve", "notes", "all"]).code == 0).then_some(())
    });
    let done = eventually("the rollout done", Duration::from_secs(90), || {
        status(&replicas[approver]).filter(|s| s["state"] == "done")
    });
    assert!(done["agents"].as_array().unwrap().iter().all(|a| a["outcome"] == "applied"), "{done:#}");
    // Each agent's apply plan decided once, each result counted once.
    let per_agent = pg.psql("rewind", "SELECT string_agg(n::text, ',') FROM (SELECT count(*) AS n FROM deliveries WHERE kind = 'apply' GROUP BY agent) x");
    assert_eq!(per_agent, "1,1,1,1,1,1", "one apply plan per agent");
    let results = pg.psql("rewind", "SELECT count(*), count(DISTINCT id) FROM results WHERE status = 'applied'");
    assert_eq!(results, "6|6", "one applied result per agent");
    for e in &endpoints {
        assert_ne!(digest(&e.notes), e.start.0, "{} applied", e.id);
    }

    // A fleet-wide rollback through a follower reaches agents on every surviving replica.
    let via = if second == follower { other } else { follower };
    ok(&replicas[via].ctl(&["rollback", "notes", "--reason", "replica test"]));
    eventually("rolled back, verified", Duration::from_secs(90), || {
        status(&replicas[via]).filter(|s| s["state"] == "rolled_back")
    });
    for e in &endpoints {
        assert_eq!(
            (digest(&e.notes), digest(&e.settings)),
            e.start,
            "{} back at its start digests ({})",
            e.id,
            e.dir.display()
        );
    }
    let rolled = pg.psql("rewind", "SELECT count(*), count(DISTINCT agent) FROM results WHERE status = 'rolled_back'");
    assert_eq!(rolled, "6|6");
    let verify = replicas[via].ctl(&["audit", "verify", "--json"]);
    assert_eq!(verify.code, 0, "one audit chain, signed with the shared key: {verify:?}");

    // The killed replica comes back and follows.
    replicas[first].start(&store_url, &trust);
    eventually("the old leader is back, following", Duration::from_secs(30), || {
        (replicas[first].leads() == Some(false)).then_some(())
    });
    assert_eq!(leaders(&replicas), vec![second]);
}

/// A leader cut off from PostgreSQL (a TCP proxy between the two is cut)
/// stops leading by its own clock before its lease ends in the store, so
/// before the other replica can take over; when the network mends it
/// follows the new leader. (That a stale leader's writes are refused is
/// proven against the store in store_postgres.rs.)
#[test]
fn a_leader_cut_off_from_postgres_stops_leading_before_another_takes_over() {
    let pg = Postgres::start();
    let direct = pg.url();
    let proxy = rewind_tests::TcpProxy::start(([127, 0, 0, 1], pg.port()).into());
    let via_proxy = direct.replace(&format!(":{}/", pg.port()), &format!(":{}/", proxy.port));
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    ok(&run("rewindctl", &["keys", "generate", "--out", &t.join("k").to_string_lossy()], &[]));
    let trust = t.join("trust.toml");
    ok(&run(
        "rewindctl",
        &[
            "trust",
            "init",
            "--threshold",
            "1",
            "--key",
            &t.join("k.pub").to_string_lossy(),
            "--out",
            &trust.to_string_lossy(),
        ],
        &[],
    ));
    let mut a = Replica { state: t.join("a"), port: free_port(), web: free_port(), proc: None };
    let mut b = Replica { state: t.join("b"), port: free_port(), web: free_port(), proc: None };
    a.start(&via_proxy, &trust);
    eventually("a leads", Duration::from_secs(30), || (a.leads() == Some(true)).then_some(()));
    b.start(&direct, &trust);
    eventually("b follows", Duration::from_secs(30), || (b.leads() == Some(false)).then_some(()));

    proxy.cut();
    let cut_at = std::time::Instant::now();
    let (mut a_stopped, mut b_led) = (None, None);
    while (a_stopped.is_none() || b_led.is_none()) && cut_at.elapsed() < Duration::from_secs(30) {
        if a_stopped.is_none() && a.leads() == Some(false) {
            a_stopped = Some(cut_at.elapsed());
        }
        if b_led.is_none() && b.leads() == Some(true) {
            b_led = Some(cut_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (a_stopped, b_led) = (a_stopped.expect("a stopped leading"), b_led.expect("b took over"));
    println!("cut at 0: the old leader stopped leading after {a_stopped:?}, the other led after {b_led:?} (lease 3 s)");
    assert!(a_stopped < b_led, "the old leader stopped ({a_stopped:?}) before the new one led ({b_led:?})");
    assert!(b_led <= Duration::from_secs(8), "taken over within about a lease: {b_led:?}");

    proxy.mend();
    eventually("a is back, following", Duration::from_secs(30), || {
        a.health().filter(|h| h["status"] == "ok" && h["leader"] == false).map(|_| ())
    });
    assert_eq!(b.leads(), Some(true));
}

/// PostgreSQL restarted in the middle of a rollout: the replicas reconnect
/// (their pools drop broken connections, their channel listens again and
/// catches up), a leader leads again, and the rollout finishes with every
/// agent applied once — the agents only saw a delay.
#[test]
fn a_rollout_finishes_across_a_postgresql_restart() {
    let mut pg = Postgres::start();
    let store_url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = |name: &str| t.join(name).to_string_lossy().into_owned();
    ok(&run("rewindctl", &["keys", "generate", "--out", &p("alice")], &[]));
    ok(&run(
        "rewindctl",
        &["trust", "init", "--threshold", "1", "--key", &p("alice.pub"), "--out", &p("trust.toml")],
        &[],
    ));
    let trust = t.join("trust.toml");
    let rel = release_with_rollout(
        "2026.11.0",
        t,
        "[rollout]\nwaves = [\n  { name = \"canary\", selector = \"ring=canary\", bake = \"3s\" },\n  \
         { name = \"all\", percent = 100 },\n]\nreport_timeout = \"120s\"\nauto_rollback = true",
    );
    let bundle = p("notes.bundle.json");
    ok(&run("rewindctl", &["release", "build", &rel.to_string_lossy(), "--out", &bundle], &[]));
    ok(&run("rewindctl", &["release", "sign", &bundle, "--key", &p("alice.key")], &[]));
    let mut replicas: Vec<Replica> = (0..2)
        .map(|i| Replica { state: t.join(format!("replica{i}")), port: free_port(), web: free_port(), proc: None })
        .collect();
    replicas[0].start(&store_url, &trust);
    eventually("replica 0 answers", Duration::from_secs(30), || (replicas[0].ctl(&["agents"]).code == 0).then_some(()));
    replicas[1].start(&store_url, &trust);
    eventually("replica 1 answers", Duration::from_secs(30), || (replicas[1].ctl(&["agents"]).code == 0).then_some(()));
    let canary = replicas[0].ctl(&["token", "create", "--labels", "ring=canary"]);
    let main = replicas[0].ctl(&["token", "create", "--labels", "ring=main", "--uses", "2"]);
    ok(&canary);
    ok(&main);
    let ca = replicas[0].state.join("ca.pem");
    let mut agents = Vec::new();
    for i in 0..3 {
        let dir = t.join(format!("endpoint{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = (seed_db(&dir, "notes"), seed_db(&dir, "settings"));
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "coordinator = [\"{}\", \"{}\"]\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
                replicas[i % 2].url(),
                replicas[(i + 1) % 2].url(),
                ca.display(),
                trust.display()
            ),
        )
        .unwrap();
        let tok = if i == 0 { canary.stdout.trim() } else { main.stdout.trim() };
        ok(&run("rewind-agent", &["enroll", "--config", &config.to_string_lossy(), "--token", tok], &[]));
        agents.push(Proc(
            Command::new(bin("rewind-agent"))
                .args(["run", "--config", &config.to_string_lossy()])
                .env("REWIND_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    eventually("three agents connected", Duration::from_secs(60), || {
        let a = replicas[1].ctl(&["agents", "--json"]);
        (a.code == 0
            && a.json().as_array().is_some_and(|v| {
                v.len() == 3
                    && v.iter().all(|x| x["connected"] == true && x["targets"].as_array().is_some_and(|t| t.len() == 2))
            }))
        .then_some(())
    });
    ok(&replicas[1].ctl(&["release", "upload", &bundle]));
    ok(&replicas[1].ctl(&["rollout", "start", "notes", "2026.11.0"]));
    let status = |r: &Replica| {
        let s = r.ctl(&["rollout", "status", "notes", "--json"]);
        (s.code == 0).then(|| s.json())
    };
    eventually("the canary baking", Duration::from_secs(60), || {
        status(&replicas[0]).filter(|s| s["state"] == "baking")
    });

    pg.restart();
    let done = eventually("done after the restart", Duration::from_secs(120), || {
        replicas.iter().find_map(status).filter(|s| s["state"] == "done")
    });
    assert!(done["agents"].as_array().unwrap().iter().all(|a| a["outcome"] == "applied"), "{done:#}");
    let per_agent = pg.psql(
        "rewind",
        "SELECT string_agg(n::text, ',') FROM (SELECT count(*) AS n FROM deliveries WHERE kind = 'apply' GROUP BY agent) x",
    );
    assert_eq!(per_agent, "1,1,1", "one apply plan per agent");
    assert_eq!(pg.psql("rewind", "SELECT count(*), count(DISTINCT id) FROM results"), "3|3", "each result once");
    assert_eq!(leaders(&replicas).len(), 1, "one leader again");
}
