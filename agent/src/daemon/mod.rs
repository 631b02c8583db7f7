//! The agent daemon: `rewind-agent enroll` (key, CSR, certificate from the
//! coordinator) and `rewind-agent run` (one mTLS stream to the coordinator,
//! hello with inventory, heartbeats, reconnect with jittered exponential
//! backoff), with telemetry, local revert during a bake, plan progress and a
//! local OFREP / metrics endpoint. The data engine stays in the rest of the
//! crate; the daemon reads the state directory, runs plans through the
//! engine, and talks to the coordinator and to local apps.

pub mod config;
pub mod endpoint;
pub mod enroll;
pub mod identity;
pub mod local;
pub mod ofrep;
pub mod progress;
pub mod run;
pub mod telemetry;

/// This host's name, for enrollment and hello.
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().chars().filter(|c| !c.is_control()).take(255).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
