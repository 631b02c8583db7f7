//! End-to-end: the coordinator's web surface (`/healthz`, `/metrics`,
//! `/status` with SSE, `/ui`) served by a real coordinator with three real
//! agents over mTLS, looked at by a real headless Chromium (Debian's
//! `chromium` + `chromium-driver`, driven by Selenium in
//! tests/web/browser.py): the status page follows a phased rollout live
//! without a reload, fits a 390 px phone, refreshes itself without
//! JavaScript; the dashboard refuses a missing or wrong token, shows a
//! viewer everything but no buttons, lets an operator pause and an approver
//! approve. Raw HTTP checks the session cookie's flags and that a POST
//! without the CSRF token, or from a viewer, changes nothing. Screenshots
//! are kept in `<target>/web-artifacts/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rewind_tests::{Proc, free_port, ok};
use rewind_tests::{bin, copy_dir, eventually, release, root, run, seed_db};
use serde_json::{Value, json};

/// One HTTP/1.1 exchange: (status, headers, body).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("web port answers");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `rewind_agents_connected` from the exposition text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    target.join("web-artifacts")
}

#[test]
fn status_page_and_dashboard_in_a_real_browser() {
    // Screenshots of this run only: an old one must not pass for a new one.
    let _ = std::fs::remove_dir_all(artifacts());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = |name: &str| t.join(name).to_string_lossy().into_owned();
    ok(&run("rewindctl", &["keys", "generate", "--out", &p("alice")], &[]));
    ok(&run(
        "rewindctl",
        &["trust", "init", "--threshold", "1", "--key", &p("alice.pub"), "--out", &p("trust.toml")],
        &[],
    ));
    // The example release, with a canary wave and a final wave that waits
    // for an approver, so the rollout holds still where the test acts.
    let rel = t.join("release");
    copy_dir(&release("2026.11.0"), &rel);
    let toml = std::fs::read_to_string(rel.join("release.toml")).unwrap();
    let head = toml.split("[rollout]").next().unwrap();
    std::fs::write(
        rel.join("release.toml"),
        format!(
            "{head}[rollout]\nwaves = [\n  {{ name = \"canary\", selector = \"ring=canary\" }},\n  \
             {{ name = \"all\", percent = 100, approval = true }},\n]\nauto_rollback = true\n"
        ),
    )
    .unwrap();
    let bundle = p("notes.bundle.json");
    ok(&run("rewindctl", &["release", "build", &rel.to_string_lossy(), "--out", &bundle], &[]));
    ok(&run("rewindctl", &["release", "sign", &bundle, "--key", &p("alice.key")], &[]));

    let (port, web) = (free_port(), free_port());
    let state = t.join("coordinator");
    let _coordinator = Proc(
        Command::new(bin("rewind-coordinator"))
            .args(["--state", &state.to_string_lossy()])
            .env("REWIND_LISTEN", format!("127.0.0.1:{port}"))
            .env("REWIND_WEB_LISTEN", format!("127.0.0.1:{web}"))
            .env("REWIND_TRUST", p("trust.toml"))
            .env("REWIND_HEARTBEAT_SECONDS", "1")
            .env("REWIND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // /healthz: JSON, 200 once the store answers.
    let health = eventually("/healthz answers", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", web)).ok()?;
        let (code, head, body) = http(web, "GET", "/healthz", &[], "");
        (code == 200).then_some((head, body))
    });
    assert!(header(&health.0, "content-type").is_some_and(|v| v.starts_with("application/json")), "{health:?}");
    let h: Value = serde_json::from_str(&health.1).unwrap();
    assert_eq!((h["status"].as_str(), h["store"].as_str()), (Some("ok"), Some("sqlite")), "{h}");

    let env = [
        ("REWIND_COORDINATOR", format!("https://127.0.0.1:{port}")),
        ("REWIND_CA", state.join("ca.pem").to_string_lossy().into_owned()),
        ("REWIND_TOKEN_FILE", state.join("admin.token").to_string_lossy().into_owned()),
    ];
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ctl = |args: &[&str]| run("rewindctl", args, &env_ref);
    ok(&ctl(&["release", "upload", &bundle]));
    let mut tokens = serde_json::Map::new();
    for role in ["viewer", "operator", "approver"] {
        let r = ctl(&["operator", "create", &format!("{role}-1"), "--role", role]);
        ok(&r);
        tokens.insert(role.into(), json!(r.stdout.trim()));
    }

    // Three endpoints: one canary, two for the final wave.
    let canary = ctl(&["token", "create", "--labels", "ring=canary", "--uses", "1"]);
    let rest = ctl(&["token", "create", "--labels", "ring=main", "--uses", "2"]);
    ok(&canary);
    ok(&rest);
    let mut daemons = Vec::new();
    for i in 0..3 {
        let dir = t.join(format!("endpoint{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = (seed_db(&dir, "notes"), seed_db(&dir, "settings"));
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "coordinator = \"https://127.0.0.1:{port}\"\nca = \"{}\"\ntrust = \"{}\"\nstate = \"state\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"notes\"\npath = \"notes.db\"\n\n\
                 [[target]]\nproduct = \"notes\"\nname = \"settings\"\npath = \"settings.db\"\n",
                state.join("ca.pem").display(),
                p("trust.toml")
            ),
        )
        .unwrap();
        let token = if i == 0 { canary.stdout.trim() } else { rest.stdout.trim() };
        ok(&run("rewind-agent", &["enroll", "--config", &config.to_string_lossy(), "--token", token], &[]));
        daemons.push(Proc(
            Command::new(bin("rewind-agent"))
                .args(["run", "--config", &config.to_string_lossy()])
                .env("REWIND_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }

    // /metrics: Prometheus text that counts the connected agents.
    let text = eventually("three agents connected per /metrics", Duration::from_secs(30), || {
        let (code, head, body) = http(web, "GET", "/metrics", &[], "");
        assert_eq!(code, 200, "{head}");
        assert!(header(&head, "content-type").is_some_and(|v| v.starts_with("text/plain")), "{head}");
        (metric(&body, "rewind_agents_connected") == Some(3.0)).then_some(body)
    });
    assert_eq!(metric(&text, "rewind_agents_enrolled"), Some(3.0), "{text}");
    assert!(text.contains("# TYPE rewind_agents_connected gauge"), "{text}");
    // An independent parser (the Prometheus project's Python client) reads it all.
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families as f\n\
             print(json.dumps({m.name: m.type for m in f(sys.stdin.read())}))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(parsed.status.success(), "prometheus_client: {}", String::from_utf8_lossy(&parsed.stderr));
    let families: Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(families["rewind_agents_connected"], "gauge", "{families}");
    assert_eq!(families["rewind_plans_sent"], "counter", "{families}");

    // The dashboard over raw HTTP: no session, no dashboard; the cookie's flags.
    let (code, head, _) = http(web, "GET", "/ui", &[], "");
    assert_eq!((code, header(&head, "location")), (303, Some("/ui/login")), "{head}");
    let (code, _, _) = http(web, "POST", "/ui/action", &[], "action=pause&product=notes");
    assert_eq!(code, 401);
    let viewer = tokens["viewer"].as_str().unwrap();
    let (code, head, _) = http(web, "POST", "/ui/login", &[], &format!("token={viewer}"));
    assert_eq!(code, 303, "{head}");
    let cookie = header(&head, "set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(viewer), "the token itself never goes to the browser: {cookie}");
    let session = cookie.split(';').next().unwrap().to_string();

    // The browser part.
    let config = json!({
        "base": format!("http://127.0.0.1:{web}"),
        "artifacts": artifacts(),
        "ctl": [bin("rewindctl")],
        "ctl_env": env.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "product": "notes",
        "version": "2026.11.0",
        "tokens": tokens,
        "agents": 3,
        "canary": 1,
    });
    std::fs::write(t.join("browser.json"), config.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(root().join("tests/web/browser.py"))
        .arg(t.join("browser.json"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(seen["live_state"], "awaiting_approval", "{seen}");
    assert!(seen["live_seq"].as_u64().unwrap() > 0, "the fragment came from the event stream: {seen}");
    assert_eq!(seen["viewer_buttons"], 0, "{seen}");
    assert_eq!(seen["paused_per_rewindctl"], "paused", "{seen}");
    for shot in [
        "status-desktop.png",
        "status-phone.png",
        "ui-viewer.png",
        "status-nojs.png",
        "ui-approver.png",
        "status-incident.png",
    ] {
        assert!(artifacts().join(shot).metadata().is_ok_and(|m| m.len() > 1000), "screenshot {shot}");
    }

    assert!(seen["rollback_flash"].as_str().unwrap().contains("rollback sent to 3"), "{seen}");
    // The release's own templates: "Notes {{version}}: rolling back", "...: rollback complete".
    let incident = seen["incident"]["text"].as_str().unwrap();
    assert!(incident.contains("Notes 2026.11.0: rolling back"), "{seen}");
    assert!(incident.contains("Notes 2026.11.0: rollback complete"), "{seen}");
    let s = eventually("the rollback is proven everywhere", Duration::from_secs(90), || {
        let r = ctl(&["rollout", "status", "notes", "--json"]);
        (r.code == 0 && r.json()["state"] == "rolled_back").then(|| r.json())
    });
    assert!(s["agents"].as_array().unwrap().iter().all(|a| a["outcome"] == "rolled_back"), "{s}");

    // A POST without the CSRF token, or from a viewer, changes nothing.
    let form = "action=pause&product=notes";
    let (code, _, _) = http(web, "POST", "/ui/action", &[("Cookie", &session)], form);
    assert_eq!(code, 403, "no CSRF token");
    let (_, _, page) = http(web, "GET", "/ui", &[("Cookie", &session)], "");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    let (code, _, body) = http(web, "POST", "/ui/action", &[("Cookie", &session)], &format!("{form}&csrf={csrf}"));
    assert_eq!(code, 403, "a viewer may not pause: {body}");
    assert!(body.contains("viewer"), "{body}");
    let (code, _, _) =
        http(web, "POST", "/ui/action", &[("Cookie", "rewind_session=rws_forged")], &format!("{form}&csrf={csrf}"));
    assert_eq!(code, 401, "an unknown session");

    // The audit log names the dashboard actions and their operators.
    let export = ctl(&["audit", "export", "--format", "jsonl"]);
    ok(&export);
    let actions: Vec<Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| {
            ["rollout.paused", "rollout.approved", "rollout.rolling_back"].contains(&r["kind"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    let text = actions.iter().map(ToString::to_string).collect::<String>();
    assert!(text.contains("operator-1 (dashboard)") && text.contains("approver-1 (dashboard)"), "{text}");

    // Results counted by outcome.
    let (_, _, text) = http(web, "GET", "/metrics", &[], "");
    assert!(text.contains("rewind_results_total{outcome=\"applied\"} 3"), "{text}");
    assert!(text.contains("rewind_results_total{outcome=\"rolled_back\"} 3"), "{text}");
}
