//! The agent daemon: `rewind-agent enroll` (key, CSR, certificate from the
//! coordinator) and `rewind-agent run` (one mTLS stream to the coordinator,
//! hello with inventory, heartbeats, reconnect with jittered exponential
//! backoff). The data engine stays in the rest of the crate; the daemon only
//! reads the state directory and talks to the coordinator.

pub mod config;
pub mod enroll;
pub mod identity;
pub mod run;

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
