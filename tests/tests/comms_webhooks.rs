//! End-to-end communication (DESIGN.md §9): a real coordinator with two
//! `[[webhook]]`s (generic JSON and chat) pointing at a receiver in this
//! test that answers 500 to the first two requests on each path, then 200.
//! An uploaded release's templates become versioned in the coordinator; an
//! admin's edit is a new version and one with an unknown variable is
//! refused (exit 2, file and line named); an announced maintenance renders
//! the newest template into an incident and reaches both webhooks after two
//! retries with growing backoff, every attempt signed (HMAC-SHA256 checked
//! against Python's `hmac`) and in the delivery log of `rewindctl webhooks
//! deliveries`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rewind_tests::Proc;
use rewind_tests::{Run, bin, eventually, release, run};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

/// An HTTP/1.1 receiver: the first `fail_first` requests on each path get
/// 500, later ones 200.
fn receiver(fail_first: usize) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let at = Instant::now();
            let status = {
                let mut g = log.lock().unwrap();
                let seen = g.iter().filter(|r| r.path == path).count();
                g.push(Received { path, headers, body, at });
                if seen < fail_first { "500 Internal Server Error" } else { "200 OK" }
            };
            let _ = conn
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    (port, got)
}

struct Coordinator {
    state: PathBuf,
    port: u16,
    _proc: Proc,
}

impl Coordinator {
    fn start(dir: &Path, config: &str, trust: &Path) -> Coordinator {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let state = dir.join("coordinator");
        let cfg = dir.join("coordinator.toml");
        std::fs::write(&cfg, config).unwrap();
        let proc = Proc(
            Command::new(bin("rewind-coordinator"))
                .args(["--config", &cfg.to_string_lossy(), "--state", &state.to_string_lossy()])
                .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
                .env("REWIND_WEB_LISTEN", format!("127.0.0.1:{web}"))
                .env("REWIND_TRUST", trust)
                .env("REWIND_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let c = Coordinator { state, port, _proc: proc };
        eventually("coordinator ready", Duration::from_secs(30), || {
            (c.ctl(&["templates", "list", "--json"]).code == 0).then_some(())
        });
        c
    }

    fn ctl_as(&self, token_file: &Path, args: &[&str]) -> Run {
        let url = format!("https://127.0.0.1:{}", self.port);
        let ca = self.state.join("ca.pem").to_string_lossy().into_owned();
        let token = token_file.to_string_lossy().into_owned();
        run("rewindctl", args, &[("REWIND_COORDINATOR", &url), ("REWIND_CA", &ca), ("REWIND_TOKEN_FILE", &token)])
    }

    fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_as(&self.state.join("admin.token"), args)
    }
}

fn ok(r: &Run) -> &Run {
    assert_eq!(r.code, 0, "{r:?}");
    r
}

/// Keys, a 1-of-1 trust root and a signed bundle of the example release
/// 2026.11.0 (no samples: no rehearsal needed for communication).
fn signed_bundle(dir: &Path) -> (PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    ok(&run("rewindctl", &["keys", "generate", "--out", &p("alice")], &[]));
    ok(&run(
        "rewindctl",
        &["trust", "init", "--threshold", "1", "--key", &p("alice.pub"), "--out", &p("trust.toml")],
        &[],
    ));
    let bundle = dir.join("notes.bundle.json");
    ok(&run(
        "rewindctl",
        &["release", "build", &release("2026.11.0").to_string_lossy(), "--out", &bundle.to_string_lossy()],
        &[],
    ));
    ok(&run("rewindctl", &["release", "sign", &bundle.to_string_lossy(), "--key", &p("alice.key")], &[]));
    (bundle, dir.join("trust.toml"))
}

/// HMAC-SHA256 of `body`, computed by Python's `hmac` module (the reference).
fn python_hmac(secret: &str, body: &[u8]) -> String {
    let mut c = Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            secret,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/deps.sh installs it)");
    c.stdin.take().unwrap().write_all(body).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    format!("sha256={}", String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn templates_are_versioned_and_webhooks_retry_signed_deliveries() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bundle, trust) = signed_bundle(t);
    let secret = "s3cret-for-the-test";
    std::fs::write(t.join("webhook.secret"), format!("{secret}\n")).unwrap();
    let (hport, got) = receiver(2);
    let config = format!(
        "[[webhook]]\nname = \"ops-json\"\nurl = \"http://127.0.0.1:{hport}/json\"\nformat = \"json\"\nsecret_file = \"{s}\"\n\
         events = [\"incident.*\"]\nbackoff_ms = 300\nmax_attempts = 4\ntimeout_seconds = 5\n\n\
         [[webhook]]\nname = \"chat\"\nurl = \"http://127.0.0.1:{hport}/chat\"\nformat = \"chat\"\nsecret_file = \"{s}\"\n\
         backoff_ms = 300\nmax_attempts = 4\n",
        s = t.join("webhook.secret").display()
    );
    let c = Coordinator::start(t, &config, &trust);

    // Before any upload: the built-in defaults, version 0.
    let list = ok(&c.ctl(&["templates", "list", "notes", "--json"])).json();
    assert_eq!(list.as_array().unwrap().len(), 5, "{list}");
    assert!(list.as_array().unwrap().iter().all(|t| t["version"] == 0 && t["source"] == "built-in default"), "{list}");

    // The upload stores the release's templates as version 1 (its own files, defaults for the rest).
    ok(&c.ctl(&["release", "upload", &bundle.to_string_lossy()]));
    let list = eventually("templates imported from the bundle", Duration::from_secs(20), || {
        let l = c.ctl(&["templates", "list", "notes", "--json"]).json();
        l.as_array()?.iter().all(|t| t["version"] == 1).then_some(l)
    });
    let by_name = |l: &Value, n: &str| l.as_array().unwrap().iter().find(|t| t["name"] == n).unwrap().clone();
    let own = std::fs::read_to_string(release("2026.11.0").join("templates/rollback_started.md")).unwrap();
    let rs = by_name(&list, "rollback_started");
    assert_eq!(rs["body"], own.as_str(), "{rs}");
    assert!(rs["source"].as_str().unwrap().starts_with("release 2026.11.0 (bundle "), "{rs}");
    assert_eq!(rs["author"], "admin");
    assert!(by_name(&list, "scheduled_maintenance")["body"].as_str().unwrap().contains("title: Scheduled update:"));

    // An admin's edit is version 2; the old version stays.
    let edited = "---\ntitle: Planned update of {{release}} on {{started_at}}\n---\nWe update **{{product}}** wave by wave, first {{wave}}.\n\nQuestions: {{on_call}}.\n";
    std::fs::write(t.join("maint.md"), edited).unwrap();
    let r = ok(&c.ctl(&[
        "templates",
        "edit",
        "notes",
        "scheduled_maintenance",
        "--file",
        &t.join("maint.md").to_string_lossy(),
        "--json",
    ]))
    .json();
    assert_eq!((r["version"].as_u64(), r["source"].as_str()), (Some(2), Some("edit")), "{r}");
    // An unknown variable: refused, exit 2, the template's file and line named; nothing stored.
    std::fs::write(t.join("bad.md"), "---\ntitle: Planned\n---\nfirst line\nSeverity: {{severity}}\n").unwrap();
    let r =
        c.ctl(&["templates", "edit", "notes", "scheduled_maintenance", "--file", &t.join("bad.md").to_string_lossy()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("templates/scheduled_maintenance.md:5:") && r.stderr.contains("severity"), "{r:?}");
    // A viewer may read but not edit.
    let viewer = ok(&c.ctl(&["operator", "create", "vera", "--role", "viewer"])).stdout.trim().to_string();
    std::fs::write(t.join("viewer.token"), &viewer).unwrap();
    let r = c.ctl_as(
        &t.join("viewer.token"),
        &["templates", "edit", "notes", "resolved", "--file", &t.join("maint.md").to_string_lossy()],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("needs admin"), "{r:?}");
    let show =
        ok(&c.ctl_as(&t.join("viewer.token"), &["templates", "show", "notes", "scheduled_maintenance", "--json"]))
            .json();
    assert_eq!(show["versions"].as_array().unwrap().len(), 2, "{show}");
    assert_eq!((show["template"]["version"].as_u64(), show["template"]["body"].as_str()), (Some(2), Some(edited)));
    let v1 = c.ctl(&["templates", "show", "notes", "scheduled_maintenance", "--version", "1"]);
    ok(&v1);
    assert!(v1.stdout.contains("title: Scheduled update:"), "{v1:?}");

    // A maintenance announcement renders the newest version with the release's values.
    let sent = Instant::now();
    let inc = ok(&c.ctl(&[
        "incidents",
        "maintenance",
        "notes",
        "2026.11.0",
        "--starts",
        "2026-12-01 08:00 UTC",
        "--wave",
        "canary",
        "--json",
    ]))
    .json();
    assert_eq!(inc["title"], "Planned update of notes 2026.11.0 on 2026-12-01 08:00 UTC", "{inc}");
    assert_eq!(inc["state"], "scheduled");
    assert!(inc["markdown"].as_str().unwrap().contains("We update **notes** wave by wave, first canary."), "{inc}");
    assert!(inc["text"].as_str().unwrap().contains("Questions: pager:storage."), "{inc}");

    // Both webhooks: two 500s, then 200, with the same delivery id and signature.
    let all = eventually("three attempts on each webhook", Duration::from_secs(30), || {
        let g = got.lock().unwrap().clone();
        let n = |p: &str| g.iter().filter(|r| r.path == p).count();
        (n("/json") >= 3 && n("/chat") >= 3).then_some(g)
    });
    for path in ["/json", "/chat"] {
        let tries: Vec<&Received> = all.iter().filter(|r| r.path == path).collect();
        assert_eq!(tries.len(), 3, "{path}: no attempt after the success: {tries:?}");
        let d = &tries[0].headers["x-rewind-delivery"];
        for (i, r) in tries.iter().enumerate() {
            assert_eq!(&r.headers["x-rewind-delivery"], d, "{path}: one delivery id for every attempt");
            assert_eq!(r.headers["x-rewind-attempt"], (i + 1).to_string());
            assert_eq!(r.headers["x-rewind-event"], "incident.scheduled_maintenance");
            assert!(r.headers["x-rewind-timestamp"].parse::<i64>().is_ok());
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(r.body, tries[0].body, "{path}: the same body on every attempt");
            assert_eq!(
                r.headers["x-rewind-signature"],
                python_hmac(secret, &r.body),
                "{path}: HMAC-SHA256 of the raw body"
            );
            assert_ne!(r.headers["x-rewind-signature"], python_hmac("another secret", &r.body));
        }
        // Backoff 300 ms doubled, drawn from [half, all]: gaps of at least 150 and 300 ms.
        let (g1, g2) = (tries[1].at - tries[0].at, tries[2].at - tries[1].at);
        assert!(g1 >= Duration::from_millis(150) && g2 >= Duration::from_millis(300), "{path}: gaps {g1:?} {g2:?}");
        assert!(tries[2].at - sent < Duration::from_secs(20));
    }
    let body = |p: &str| -> Value { serde_json::from_slice(&all.iter().find(|r| r.path == p).unwrap().body).unwrap() };
    let (j, chat) = (body("/json"), body("/chat"));
    assert_eq!(j["event"], "incident.scheduled_maintenance", "{j}");
    assert_eq!(j["product"], "notes");
    assert_eq!(j["params"]["incident"], inc["id"], "{j}");
    assert_eq!(j["params"]["title"], inc["title"]);
    assert_eq!(
        j["delivery"].as_str(),
        all.iter().find(|r| r.path == "/json").map(|r| r.headers["x-rewind-delivery"].as_str())
    );
    assert_eq!(chat.as_object().unwrap().len(), 1, "chat payload is {{\"text\"}} only: {chat}");
    let text = chat["text"].as_str().unwrap();
    assert!(
        text.starts_with("Planned update of notes 2026.11.0 on 2026-12-01 08:00 UTC\n\nWe update notes wave by wave"),
        "{text}"
    );

    // The delivery log, via rewindctl.
    let log = eventually("six attempts logged", Duration::from_secs(10), || {
        let l = c.ctl(&["webhooks", "deliveries", "--json"]).json();
        (l.as_array()?.iter().filter(|a| a["event"] == "incident.scheduled_maintenance").count() == 6).then_some(l)
    });
    for hook in ["ops-json", "chat"] {
        let a: Vec<&Value> = log
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["webhook"] == hook && a["event"] == "incident.scheduled_maintenance")
            .collect();
        let outcomes: Vec<(&str, u64)> =
            a.iter().map(|a| (a["outcome"].as_str().unwrap(), a["status"].as_u64().unwrap())).collect();
        assert_eq!(outcomes, [("retrying", 500), ("retrying", 500), ("delivered", 200)], "{hook}: {log}");
        assert!(a[0]["retry_in_ms"].as_u64().unwrap() >= 150 && a[1]["retry_in_ms"].as_u64().unwrap() >= 300, "{log}");
        assert_eq!(a[0]["error"], "HTTP 500");
    }
    let table = ok(&c.ctl(&["webhooks", "deliveries", "--webhook", "chat"])).stdout.clone();
    assert!(table.contains("retrying") && table.contains("delivered") && !table.contains("ops-json"), "{table}");

    // A test delivery goes to the named webhook only.
    let r = ok(&c.ctl(&["webhooks", "test", "chat", "--json"])).json();
    let d = r["delivery"].as_str().unwrap().to_string();
    let test = eventually("the test delivery", Duration::from_secs(10), || {
        got.lock().unwrap().iter().find(|x| x.headers.get("x-rewind-delivery") == Some(&d)).cloned()
    });
    assert_eq!((test.path.as_str(), test.headers["x-rewind-event"].as_str()), ("/chat", "webhook.test"));
    let r = c.ctl(&["webhooks", "test", "nope"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("ops-json, chat"), "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        got.lock().unwrap().iter().filter(|x| x.path == "/json").count() == 3,
        "the JSON webhook did not get the test"
    );

    // The announcement is listed; it is not an open incident to resolve.
    let incidents = ok(&c.ctl(&["incidents", "list", "notes", "--json"])).json();
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
    let r = c.ctl(&["incidents", "resolve", "notes"]);
    assert_eq!(r.code, 2, "a scheduled maintenance is not an open incident: {r:?}");
}

#[test]
fn a_webhook_without_its_secret_file_stops_the_coordinator_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[webhook]]\nname = \"chat\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_file = \"/nonexistent/secret\"\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let state = tmp.path().join("state");
    let r = run(
        "rewind-coordinator",
        &["--config", &cfg.to_string_lossy(), "--state", &state.to_string_lossy()],
        &[("REWIND_LISTEN", &format!("127.0.0.1:{port}"))],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("webhook chat: secret_file /nonexistent/secret"), "{r:?}");
    // An unknown key in a webhook table is named.
    std::fs::write(&cfg, "[[webhook]]\nname = \"chat\"\nurl = \"http://x/\"\nsecret_file = \"s\"\nsecert = \"x\"\n")
        .unwrap();
    let r = run("rewind-coordinator", &["--config", &cfg.to_string_lossy(), "--print-config"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("secert"), "{r:?}");
}
