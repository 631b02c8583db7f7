//! deploy/: the systemd units, the Dockerfile and the compose file, checked
//! with the real tools this machine has. (The image itself is not built: no
//! Docker engine runs here; docs/operations.md says so.)
//!
//! - Every unit passes `systemd-analyze verify` without a single message
//!   (an unknown or misspelt directive is only a warning there, so any
//!   output fails), the system units' offline `systemd-analyze security`
//!   exposure is at most 2.0, and the directives the design asks for are
//!   set (user, state directory, hardening, restart and stop behaviour).
//! - Every `ExecStart=` (and the user unit's `ExecStartPre=`) runs against
//!   the real binaries with only its paths moved into a temp dir: the
//!   coordinator resolves its configuration with the unit's flags, the
//!   agents get as far as "not enrolled" in the unit's state directory.
//! - compose.yaml parses as YAML (PyYAML); its services, images, ports,
//!   volumes and `REWIND_*` variables agree with the Dockerfile and with
//!   what `rewind-coordinator --print-config` resolves from them.
//! - The Dockerfile's build stage copies every workspace member and builds
//!   packages that exist; the runtime stage installs only ca-certificates,
//!   copies the binaries it runs (which link nothing but glibc and libgcc,
//!   both in the base image) and runs as a non-root user it creates.
//!
//! Each check is also shown to reject a broken file where the tool's
//! verdict is what the check relies on (a misspelt directive, an unhardened
//! unit).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rewind_tests::{bin, root};
use serde_json::Value;

fn deploy(name: &str) -> PathBuf {
    root().join("deploy").join(name)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn output(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A command with every `REWIND_*` variable of the test's environment
/// removed, so only what the deploy file sets counts.
fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REWIND_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `c` to its end, at most 60 s (a daemon that did start is killed).
fn finish(mut c: Command) -> Output {
    let child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn();
    let mut child = child.unwrap_or_else(|e| panic!("{c:?}: cannot start: {e}"));
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!("{c:?} was still running after 60 s: {}", output(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

// ---------------------------------------------------------------- units

/// A systemd unit file as (section, key, value) entries, in order.
struct Unit {
    name: String,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn parse(name: &str, text: &str) -> Unit {
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[') {
                section = s.trim_end_matches(']').to_string();
                continue;
            }
            assert!(!line.ends_with('\\'), "{name}: no line continuations expected: {line}");
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{name}: not KEY=VALUE: {line}"));
            entries.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
        Unit { name: name.to_string(), entries }
    }

    fn load(file: &str) -> Unit {
        Unit::parse(file, &read(&deploy(file)))
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.as_str()).collect()
    }

    fn one(&self, section: &str, key: &str) -> &str {
        let v = self.all(section, key);
        assert_eq!(v.len(), 1, "{}: [{section}] {key}= should be set exactly once, found {v:?}", self.name);
        v[0]
    }

    fn service(&self, key: &str) -> &str {
        self.one("Service", key)
    }

    /// The words of a command line (`ExecStart=`), without `+-@!:` prefixes.
    fn command(&self, key: &str) -> Vec<String> {
        let line = self.service(key).trim_start_matches(['+', '-', '@', '!', ':']);
        line.split_whitespace().map(String::from).collect()
    }

    /// Every path of every `ReadWritePaths=` line, `-` (optional) stripped.
    fn read_write_paths(&self) -> Vec<String> {
        let lines = self.all("Service", "ReadWritePaths");
        lines.iter().flat_map(|l| l.split_whitespace()).map(|p| p.trim_start_matches('-').to_string()).collect()
    }
}

/// The value following `flag` in a command line.
fn flag_value<'a>(cmd: &'a [String], flag: &str) -> &'a str {
    let i = cmd.iter().position(|w| w == flag).unwrap_or_else(|| panic!("{cmd:?} has no {flag}"));
    cmd.get(i + 1).unwrap_or_else(|| panic!("{cmd:?}: {flag} without a value"))
}

/// Hardening and service behaviour both system units must have.
const SYSTEM_DIRECTIVES: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("CapabilityBoundingSet", ""),
    ("UMask", "0077"),
    ("Restart", "on-failure"),
    ("KillSignal", "SIGTERM"),
];

/// What the user unit must have (options that work in a user manager).
const USER_DIRECTIVES: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("ProtectSystem", "strict"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("UMask", "0077"),
    ("Restart", "on-failure"),
    ("KillSignal", "SIGTERM"),
];

fn check_directives(u: &Unit, wanted: &[(&str, &str)]) {
    for (k, v) in wanted {
        assert_eq!(u.service(k), *v, "{}: {k}=", u.name);
    }
    let filters = u.all("Service", "SystemCallFilter");
    assert_eq!(filters.first(), Some(&"@system-service"), "{}: SystemCallFilter=", u.name);
    let stop = u.service("TimeoutStopSec");
    assert!(
        stop.ends_with('s') && stop.trim_end_matches('s').parse::<u32>().is_ok_and(|n| n >= 15),
        "{}: {stop}",
        u.name
    );
    for code in u.service("RestartPreventExitStatus").split_whitespace() {
        assert!(code == "2" || code == "3", "{}: exit {code} is not a bad-input/needs-a-human code", u.name);
    }
}

/// `systemd-analyze ARGS`; fails the test when the tool is missing.
fn systemd_analyze(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("systemd-analyze");
    c.arg("--no-pager").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap_or_else(|e| {
        panic!(
            "systemd-analyze cannot run ({e}): install Debian's systemd package \
             (scripts/deps.sh need_systemd_analyze, run by scripts/test.sh)"
        )
    })
}

/// The unit's text with `ExecStart=/usr/local/bin/NAME` pointed at the
/// built binary NAME (verify checks that the program is executable).
fn with_built_binary(file: &str) -> String {
    let mut replaced = 0;
    let out: Vec<String> = read(&deploy(file))
        .lines()
        .map(|l| match l.strip_prefix("ExecStart=/usr/local/bin/") {
            Some(rest) => {
                let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
                replaced += 1;
                format!("ExecStart={} {args}", bin(name).display())
            }
            None => l.to_string(),
        })
        .collect();
    assert_eq!(replaced, 1, "{file}: expected one ExecStart=/usr/local/bin/<binary of this workspace>");
    out.join("\n") + "\n"
}

/// Runs `verify` on `text` saved as `dir/name`; returns (success, output).
fn verify(dir: &Path, name: &str, text: &str, user: bool, env: &[(&str, &Path)]) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let p = path.to_string_lossy().into_owned();
    let args: Vec<&str> = if user { vec!["--user", "verify", &p] } else { vec!["verify", &p] };
    let o = systemd_analyze(&args, env);
    (o.status.success(), output(&o))
}

/// Offline `systemd-analyze security` exposure level (0.0 best, 10.0 worst).
fn exposure(dir: &Path, name: &str, text: &str) -> f64 {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let o = systemd_analyze(&["security", "--offline=yes", &path.to_string_lossy()], &[]);
    let out = output(&o);
    let line = out.lines().find(|l| l.contains("Overall exposure level for")).unwrap_or_else(|| panic!("{out}"));
    let level = line.rsplit_once(": ").expect("level").1.split_whitespace().next().expect("number");
    level.parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// A fake home for the user unit: `~/.local/bin/rewind-agent` is the built
/// agent, `~/.config/rewind/agent.toml` the example config.
fn fake_home(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".local/bin")).unwrap();
    std::fs::create_dir_all(home.join(".config/rewind")).unwrap();
    std::os::unix::fs::symlink(bin("rewind-agent"), home.join(".local/bin/rewind-agent")).unwrap();
    std::fs::copy(deploy("agent.toml"), home.join(".config/rewind/agent.toml")).unwrap();
    home
}

fn runtime_dir(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    run
}

#[test]
fn units_pass_systemd_analyze_verify_and_security() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    for file in ["rewind-coordinator.service", "rewind-agent.service"] {
        let unit = with_built_binary(file);
        let (ok, out) = verify(dir, file, &unit, false, &[]);
        assert!(ok && out.trim().is_empty(), "systemd-analyze verify {file}: {out}");
        // The check sees a misspelt directive (only a warning for systemd).
        let broken = unit.replacen("[Service]\n", "[Service]\nProtectSytem=strict\n", 1);
        let (_, out) = verify(dir, file, &broken, false, &[]);
        assert!(out.contains("ProtectSytem"), "a misspelt directive went unnoticed: {out:?}");

        let level = exposure(dir, file, &unit);
        assert!(level <= 2.0, "{file}: systemd-analyze security exposure {level} (at most 2.0 expected)");
    }
    // The security check tells an unhardened unit apart.
    let bare = format!("[Service]\nUser=rewind\nExecStart={}\n", bin("rewind-coordinator").display());
    let level = exposure(dir, "bare.service", &bare);
    assert!(level > 2.0, "an unhardened unit scored {level}");

    // The user unit, as installed: ~/.config/systemd/user/rewind-agent.service.
    let home = fake_home(dir);
    let run = runtime_dir(dir);
    let env = [("HOME", home.as_path()), ("XDG_RUNTIME_DIR", run.as_path())];
    let unit = read(&deploy("rewind-agent.user.service"));
    let (ok, out) = verify(dir, "rewind-agent.service", &unit, true, &env);
    assert!(ok && out.trim().is_empty(), "systemd-analyze --user verify rewind-agent.user.service: {out}");
    let broken = unit.replacen("[Service]\n", "[Service]\nLockPersonalty=yes\n", 1);
    let (_, out) = verify(dir, "rewind-agent.service", &broken, true, &env);
    assert!(out.contains("LockPersonalty"), "a misspelt directive went unnoticed: {out:?}");
    // %h/.local/bin/rewind-agent is checked: without it, verify fails.
    std::fs::remove_file(home.join(".local/bin/rewind-agent")).unwrap();
    let (ok, out) = verify(dir, "rewind-agent.service", &unit, true, &env);
    assert!(!ok && out.contains(".local/bin/rewind-agent"), "{out}");
}

#[test]
fn units_set_what_the_design_asks_for() {
    let c = Unit::load("rewind-coordinator.service");
    check_directives(&c, SYSTEM_DIRECTIVES);
    assert_eq!(c.service("User"), "rewind");
    assert_eq!(c.service("StateDirectory"), "rewind-coordinator");
    assert_eq!(
        c.service("ExecStart"),
        "/usr/local/bin/rewind-coordinator --config /etc/rewind/coordinator.toml --state /var/lib/rewind-coordinator"
    );
    assert_eq!(c.one("Install", "WantedBy"), "multi-user.target");

    let a = Unit::load("rewind-agent.service");
    check_directives(&a, SYSTEM_DIRECTIVES);
    assert_eq!(a.service("StateDirectory"), "rewind-agent");
    let cmd = a.command("ExecStart");
    assert_eq!(cmd[..4], ["/usr/local/bin/rewind-agent", "run", "--config", "/etc/rewind/agent.toml"]);
    let user = a.service("User");
    assert!(!user.is_empty() && user != "root" && user != "0", "the agent runs as the app's account, not {user}");
    assert!(a.all("Service", "RemoveIPC").is_empty(), "RemoveIPC would remove the app's IPC objects (same account)");
    let rw = a.read_write_paths();
    assert!(!rw.is_empty(), "the app's database directories must be in ReadWritePaths=");
    for p in &rw {
        assert!(p.starts_with('/') && !p.ends_with(".db"), "ReadWritePaths={p}: an absolute directory");
    }
    assert_eq!(a.one("Install", "WantedBy"), "multi-user.target");

    // Both: --state is the directory StateDirectory= creates.
    for u in [&c, &a] {
        let state = format!("/var/lib/{}", u.service("StateDirectory"));
        assert_eq!(flag_value(&u.command("ExecStart"), "--state"), state, "{}", u.name);
    }

    let u = Unit::load("rewind-agent.user.service");
    check_directives(&u, USER_DIRECTIVES);
    assert!(u.all("Service", "User").is_empty(), "a user unit runs as its user");
    let cmd = u.command("ExecStart");
    assert_eq!(cmd[..4], ["%h/.local/bin/rewind-agent", "run", "--config", "%h/.config/rewind/agent.toml"]);
    let state = flag_value(&cmd, "--state");
    assert!(state.starts_with("%h/.local/state/"), "{state}");
    assert_eq!(u.one("Install", "WantedBy"), "default.target");
    // The agent may write its state and the example app's databases: the
    // directory of every [[target]] path of deploy/agent.toml, read as a
    // path in the user's home (/home/user -> %h).
    let rw = u.read_write_paths();
    let covered = |dir: &str| rw.iter().any(|p| Path::new(dir).starts_with(p));
    assert!(covered(state), "ReadWritePaths={rw:?} does not cover --state {state}");
    let targets: Vec<String> = read(&deploy("agent.toml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path = \"")?.strip_suffix('"').map(String::from))
        .collect();
    assert!(!targets.is_empty());
    for t in targets {
        let t = t.replacen("/home/user", "%h", 1);
        let dir = Path::new(&t).parent().unwrap().to_string_lossy().into_owned();
        assert!(covered(&dir), "ReadWritePaths={rw:?} does not cover {dir} (for {t} and its -wal/-shm/-journal)");
    }
}

#[test]
fn exec_lines_run_with_the_flags_the_binaries_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // System units: /etc/rewind/X -> a copy of deploy/X, the state
    // directory -> a temp dir; everything else exactly as written.
    for file in ["rewind-coordinator.service", "rewind-agent.service"] {
        let u = Unit::load(file);
        let state_in_unit = format!("/var/lib/{}", u.service("StateDirectory"));
        let state = dir.join(u.service("StateDirectory"));
        let mut cmd = u.command("ExecStart");
        let program = cmd.remove(0);
        let name = program.strip_prefix("/usr/local/bin/").unwrap_or_else(|| panic!("{file}: {program}"));
        let mut c = clean(bin(name));
        for w in &cmd {
            if let Some(f) = w.strip_prefix("/etc/rewind/") {
                let copy = dir.join(f);
                std::fs::copy(deploy(f), &copy).unwrap_or_else(|e| panic!("{file}: {w}: no deploy/{f} ({e})"));
                c.arg(copy);
            } else if *w == state_in_unit {
                c.arg(&state);
            } else {
                c.arg(w);
            }
        }
        if name == "rewind-coordinator" {
            c.arg("--print-config");
            let o = finish(c);
            assert!(o.status.success(), "{file}: {}", output(&o));
            let cfg = print_config_values(&String::from_utf8_lossy(&o.stdout));
            assert_eq!(cfg["state"], [state.to_string_lossy()], "{file}: --state is not the one used");
            // deploy/coordinator.toml was read.
            assert!(cfg["hostnames"].contains(&"rewind.example.internal".to_string()), "{cfg:?}");
        } else {
            let o = finish(c);
            let out = output(&o);
            let want = format!("state {}: this agent is not enrolled", state.display());
            assert!(o.status.code() == Some(2) && out.contains(&want), "{file}: {out}");
        }
    }

    // The user unit, in a fake home: %h -> that home.
    let u = Unit::load("rewind-agent.user.service");
    let home = fake_home(dir);
    let h = home.to_string_lossy().into_owned();
    let expand = |cmd: Vec<String>| -> Vec<String> { cmd.into_iter().map(|w| w.replace("%h", &h)).collect() };
    let pre = expand(u.command("ExecStartPre"));
    let o = finish({
        let mut c = clean(&pre[0]);
        c.args(&pre[1..]).env("HOME", &home);
        c
    });
    assert!(o.status.success(), "ExecStartPre: {}", output(&o));
    for p in u.read_write_paths() {
        let p = p.replace("%h", &h);
        assert!(Path::new(&p).is_dir(), "ReadWritePaths={p} does not exist after ExecStartPre (the start would fail)");
    }
    let cmd = expand(u.command("ExecStart"));
    let o = finish({
        let mut c = clean(&cmd[0]);
        c.args(&cmd[1..]).env("HOME", &home);
        c
    });
    let out = output(&o);
    let want = format!("state {}: this agent is not enrolled", flag_value(&cmd, "--state"));
    assert!(o.status.code() == Some(2) && out.contains(&want), "user unit: {out}");
}

// ------------------------------------------------- coordinator config

/// `key = value` lines of `--print-config`, each value as a list of
/// strings (a TOML array's items, or the one scalar without quotes).
fn print_config_values(toml: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for line in toml.lines() {
        let Some((k, v)) = line.split_once(" = ") else { continue };
        let v = v.trim();
        let items: Vec<String> = match v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            Some(list) => list.split(", ").map(|s| s.trim_matches('"').to_string()).collect(),
            None => vec![v.trim_matches('"').to_string()],
        };
        out.insert(k.to_string(), items);
    }
    out
}

/// `rewind-coordinator --print-config` under exactly `env` (`REWIND_*`).
fn print_config(env: &BTreeMap<String, String>) -> BTreeMap<String, Vec<String>> {
    let mut c = clean(bin("rewind-coordinator"));
    c.arg("--print-config").envs(env);
    let o = finish(c);
    assert!(o.status.success(), "--print-config with {env:?}: {}", output(&o));
    print_config_values(&String::from_utf8_lossy(&o.stdout))
}

/// Every `REWIND_<KEY>` in `env` is a setting the coordinator reads: it
/// shows up as `<key>` in `--print-config` with that value (a comma list
/// for list settings). `REWIND_LOG` is the log filter (read in main.rs).
fn check_env_is_read(env: &BTreeMap<String, String>, cfg: &BTreeMap<String, Vec<String>>, origin: &str) {
    for (k, v) in env {
        let key = k.strip_prefix("REWIND_").unwrap_or_else(|| panic!("{origin}: {k} is not a REWIND_ variable"));
        if key == "LOG" {
            assert!(read(&root().join("coordinator/src/main.rs")).contains("\"REWIND_LOG\""));
            continue;
        }
        let got = cfg.get(&key.to_lowercase()).unwrap_or_else(|| {
            panic!("{origin}: {k} is not a coordinator setting (--print-config shows {:?})", cfg.keys())
        });
        let want: Vec<String> = if got.len() == 1 && !v.contains(',') {
            vec![v.clone()]
        } else {
            v.split(',').map(|s| s.trim().to_string()).collect()
        };
        assert_eq!(got, &want, "{origin}: {k}={v} resolves to {got:?}");
    }
}

fn port_of(addr: &[String]) -> u16 {
    addr[0].rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("{addr:?}"))
}

// ----------------------------------------------------------- Dockerfile

/// One Dockerfile instruction: (INSTRUCTION, arguments), continuation
/// lines joined, comments dropped; grouped by stage (`FROM`).
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in read(&deploy("Dockerfile")).lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                joined.push(std::mem::take(&mut cur));
            }
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for l in joined {
        let (i, rest) = l.split_once(' ').unwrap_or((l.as_str(), ""));
        let i = i.to_uppercase();
        if i == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("FROM first").push((i, rest.trim().to_string()));
    }
    stages
}

fn instr<'a>(stage: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    stage.iter().filter(|(i, _)| i == name).map(|(_, a)| a.as_str()).collect()
}

/// `ENV K=V ...` of a stage.
fn image_env(stage: &[(String, String)]) -> BTreeMap<String, String> {
    instr(stage, "ENV")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("ENV {kv}: use K=V"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Workspace members and their package names, from the Cargo.toml files.
fn workspace_packages() -> BTreeMap<String, String> {
    let manifest = read(&root().join("Cargo.toml"));
    let members = manifest.lines().find_map(|l| l.strip_prefix("members = [")).expect("workspace members");
    members
        .trim_end_matches(']')
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .map(|m| {
            let text = read(&root().join(&m).join("Cargo.toml"));
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"').map(String::from))
                .unwrap_or_else(|| panic!("{m}/Cargo.toml: no package name"));
            (m, name)
        })
        .collect()
}

#[test]
fn dockerfile_builds_workspace_packages_and_runs_as_non_root() {
    let stages = dockerfile_stages();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (&stages[0], &stages[1]);

    // Build stage: Rust on Debian bookworm, every member copied (cargo
    // resolves the whole workspace) plus what build scripts read; never
    // the whole context (it would carry target/).
    let from = build[0].1.as_str();
    assert!(from.starts_with("rust:") && from.contains("bookworm") && from.ends_with(" AS build"), "FROM {from}");
    let workdir = *instr(build, "WORKDIR").last().expect("WORKDIR in the build stage");
    let copied: BTreeSet<&str> = instr(build, "COPY")
        .iter()
        .flat_map(|a| {
            let words: Vec<&str> = a.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    assert!(!copied.contains(".") && !copied.contains("target"), "COPY {copied:?}: copy the sources, not target/");
    let packages = workspace_packages();
    let mut needed: Vec<&str> = vec!["Cargo.toml", "Cargo.lock", "proto", "examples"];
    needed.extend(packages.keys().map(String::as_str));
    for n in needed {
        assert!(copied.contains(n), "the build stage does not COPY {n} (copied: {copied:?})");
        assert!(root().join(n).exists(), "{n} is not in the workspace");
    }
    let cargo = instr(build, "RUN").into_iter().find(|r| r.contains("cargo build")).expect("RUN cargo build");
    let words: Vec<&str> = cargo.split_whitespace().collect();
    assert!(words.contains(&"--release") && words.contains(&"--locked"), "{cargo}");
    let built: BTreeSet<&str> = words.windows(2).filter(|w| w[0] == "-p").map(|w| w[1]).collect();
    let names: BTreeSet<&str> = packages.values().map(String::as_str).collect();
    assert!(built.is_subset(&names), "{cargo}: builds {built:?}, the workspace has {names:?}");
    assert_eq!(built, BTreeSet::from(["rewind-coordinator", "rewindctl"]), "{cargo}");

    // Runtime stage.
    assert_eq!(runtime[0].1, "debian:bookworm-slim");
    let runs = instr(runtime, "RUN").join(" && ");
    let apt = runs.split("&&").find(|c| c.contains("apt-get install")).expect("apt-get install");
    let pkgs: Vec<&str> =
        apt.split_whitespace().skip_while(|w| *w != "install").skip(1).filter(|w| !w.starts_with('-')).collect();
    assert_eq!(pkgs, ["ca-certificates"], "the runtime stage installs ca-certificates only");
    let mut binaries = BTreeSet::new();
    for a in instr(runtime, "COPY") {
        let words: Vec<&str> = a.split_whitespace().collect();
        assert_eq!(words[0], "--from=build", "COPY {a}");
        assert_eq!(*words.last().unwrap(), "/usr/local/bin/", "COPY {a}");
        for src in &words[1..words.len() - 1] {
            let name = src.strip_prefix(&format!("{workdir}/target/release/")).unwrap_or_else(|| panic!("COPY {src}"));
            assert!(built.contains(name), "{name} is copied but not built");
            binaries.insert(name);
        }
    }
    assert_eq!(binaries, built);
    let entry: Vec<String> = serde_json::from_str(instr(runtime, "ENTRYPOINT")[0]).expect("ENTRYPOINT [\"...\"]");
    assert_eq!(entry, ["/usr/local/bin/rewind-coordinator"]);
    let help = finish({
        let mut c = clean(bin("rewind-coordinator"));
        c.arg("--help");
        c
    });
    assert!(help.status.success(), "{}", output(&help));

    // Non-root: the last USER is a uid that the stage creates, and owns
    // the state volume.
    let user = *instr(runtime, "USER").last().expect("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid.parse::<u32>().is_ok_and(|n| n >= 1000), "USER {user}: a numeric non-root uid");
    assert!(runs.contains(&format!("useradd --uid {uid}")), "no useradd --uid {uid}: {runs}");
    let last = runtime.iter().rposition(|(i, _)| i == "USER").unwrap();
    assert!(runtime[last..].iter().all(|(i, _)| i != "RUN"), "nothing runs as root after USER");

    // Environment, ports and volume agree with what the coordinator does.
    let env = image_env(runtime);
    assert_eq!(env.get("REWIND_LISTEN").map(String::as_str), Some("0.0.0.0:7443"));
    assert_eq!(env.get("REWIND_WEB_LISTEN").map(String::as_str), Some("0.0.0.0:7080"));
    let cfg = print_config(&env);
    check_env_is_read(&env, &cfg, "Dockerfile");
    let exposed: BTreeSet<u16> =
        instr(runtime, "EXPOSE").iter().flat_map(|a| a.split_whitespace()).map(|p| p.parse().unwrap()).collect();
    assert_eq!(exposed, BTreeSet::from([port_of(&cfg["listen"]), port_of(&cfg["web_listen"])]));
    let volume: Vec<String> = serde_json::from_str(instr(runtime, "VOLUME")[0]).expect("VOLUME [\"...\"]");
    assert_eq!(volume, cfg["state"], "the volume is the state directory");
    assert!(runs.contains(&format!("install -d -o {uid} -g {uid} -m 0700 {}", volume[0])), "{runs}");

    // The binaries need nothing beyond glibc and libgcc (in every Debian image).
    for b in &binaries {
        let o = Command::new("ldd").arg(bin(b)).output().expect("ldd runs");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let lib = l.split_whitespace().next().unwrap_or("");
            let base = Path::new(lib).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let ok = [
                "linux-vdso",
                "libc.so",
                "libm.so",
                "libgcc_s.so",
                "ld-linux",
                "libpthread.so",
                "libdl.so",
                "librt.so",
            ]
            .iter()
            .any(|p| base.starts_with(p));
            assert!(ok, "{b} links {lib}, which debian:bookworm-slim does not have");
        }
    }
}

// --------------------------------------------------------------- compose

/// deploy/compose.yaml as JSON, parsed by PyYAML.
fn compose() -> Value {
    let path = deploy("compose.yaml");
    let o = Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("python3 cannot run ({e}): scripts/deps.sh need_python_yaml installs it"));
    assert!(o.status.success(), "{} does not parse as YAML (or PyYAML is missing): {}", path.display(), output(&o));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

/// `${VAR...}` interpolation as compose does it, from `vars`.
fn interpolate(s: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("closing }") + i;
        let name = rest[i + 2..end].split([':', '?', '-']).next().unwrap();
        out.push_str(vars.get(name).unwrap_or_else(|| panic!("compose uses ${{{name}}}, unknown to the test")));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn env_map(service: &Value, vars: &BTreeMap<&str, &str>) -> BTreeMap<String, String> {
    let env = service["environment"].as_object().expect("environment: a mapping");
    env.iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_else(|| panic!("{k}: give a string, got {v}"));
            (k.clone(), interpolate(v, vars))
        })
        .collect()
}

#[test]
fn compose_file_parses_and_matches_the_image_and_the_coordinator() {
    let doc = compose();
    let services = doc["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["coordinator", "postgres"]));
    let declared: BTreeSet<&str> = doc["volumes"].as_object().expect("volumes").keys().map(String::as_str).collect();
    let vars = BTreeMap::from([("REWIND_PG_PASSWORD", "pw0123456789abcdef")]);

    // PostgreSQL 15, data on a named volume, healthy only when it answers.
    let pg = &services["postgres"];
    assert_eq!(pg["image"], "postgres:15");
    let pg_env = env_map(pg, &vars);
    let pg_volumes: Vec<&str> = pg["volumes"].as_array().expect("volumes").iter().filter_map(Value::as_str).collect();
    let data = pg_volumes.iter().find_map(|v| v.strip_suffix(":/var/lib/postgresql/data")).expect("a data volume");
    assert!(declared.contains(data), "volume {data} is not declared");
    let test: Vec<&str> =
        pg["healthcheck"]["test"].as_array().expect("healthcheck.test").iter().filter_map(Value::as_str).collect();
    assert!(test[0] == "CMD" && test[1] == "pg_isready", "{test:?}");
    let arg = |flag: &str| test.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
    assert_eq!(arg("-U"), Some(pg_env["POSTGRES_USER"].as_str()));
    assert_eq!(arg("-d"), Some(pg_env["POSTGRES_DB"].as_str()));

    // The coordinator: built from deploy/Dockerfile, after a healthy database.
    let co = &services["coordinator"];
    let context = deploy("").join(co["build"]["context"].as_str().expect("build.context"));
    let dockerfile = context.join(co["build"]["dockerfile"].as_str().expect("build.dockerfile"));
    assert_eq!(dockerfile.canonicalize().unwrap(), deploy("Dockerfile").canonicalize().unwrap());
    assert_eq!(
        context.canonicalize().unwrap(),
        root().canonicalize().unwrap(),
        "the Dockerfile's COPY paths are from the root"
    );
    assert_eq!(co["depends_on"]["postgres"]["condition"], "service_healthy");

    // Its environment, on top of the image's, as the coordinator reads it.
    let env = env_map(co, &vars);
    let mut all = image_env(&dockerfile_stages()[1]);
    all.extend(env.clone());
    let cfg = print_config(&all);
    check_env_is_read(&env, &cfg, "compose.yaml");
    assert_eq!(cfg["store"], ["postgres"]);
    let url = &cfg["store_url"][0];
    let (creds, place) =
        url.strip_prefix("postgres://").and_then(|u| u.split_once('@')).expect("postgres://USER:PW@...");
    assert_eq!(creds, format!("{}:{}", pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"]));
    assert_eq!(place, format!("postgres:5432/{}", pg_env["POSTGRES_DB"]), "host = the postgres service");

    // Ports: the container side is what the coordinator listens on; the
    // plain-HTTP web port is published on loopback only.
    let ports: Vec<&str> = co["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p.as_str().unwrap_or_else(|| panic!("port {p}: quote it (YAML reads 7443:7443 as a number)")))
        .collect();
    let container = |p: &str| -> u16 { p.rsplit(':').next().unwrap().parse().unwrap() };
    let published: BTreeSet<u16> = ports.iter().map(|p| container(p)).collect();
    assert_eq!(published, BTreeSet::from([port_of(&cfg["listen"]), port_of(&cfg["web_listen"])]));
    let web = ports.iter().find(|p| container(p) == port_of(&cfg["web_listen"])).unwrap();
    assert!(web.starts_with("127.0.0.1:"), "web port {web}: loopback only");

    // Volumes: state on a named volume, the trust root bound read-only.
    let volumes = co["volumes"].as_array().expect("volumes");
    let state = volumes
        .iter()
        .filter_map(Value::as_str)
        .find_map(|v| v.strip_suffix(&format!(":{}", cfg["state"][0])))
        .unwrap_or_else(|| panic!("no volume at the state directory {:?}", cfg["state"]));
    assert!(declared.contains(state), "volume {state} is not declared");
    let trust = volumes.iter().find(|v| v["target"].as_str() == Some(cfg["trust"][0].as_str())).expect("trust mount");
    assert_eq!(trust["type"], "bind");
    assert_eq!(trust["read_only"], true, "the trust root is mounted read-only");
    assert_eq!(trust["bind"]["create_host_path"], false, "a missing trust.toml must fail, not become a directory");
    assert!(trust["source"].as_str().unwrap().ends_with("trust.toml"));
}
