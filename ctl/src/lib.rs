//! rewindctl: the operator CLI. Local commands on release directories
//! (`release lint`, `release rehearse`), the local `demo`, and — with the
//! coordinator — the fleet commands of DESIGN.md §8.
//!
//! One module per command group; `main.rs` holds the clap tree and maps
//! results to exit codes (DESIGN.md §5): 0 done, 1 failed but safe, 2 bad
//! input, 3 needs a human.

pub mod bundle_cmd;
pub mod comms_cmd;
pub mod coordinator;
pub mod demo;
pub mod demo_fleet;
pub mod demo_local;
pub mod error;
pub mod examples;
pub mod flags_cmd;
pub mod fleet;
pub mod keys;
pub mod lineage_cmd;
pub mod lint;
pub mod output;
pub mod rehearsal;
pub mod release_cmd;
pub mod report;
pub mod rollout_cmd;
pub mod runbook;
pub mod trust;

pub use error::{Error, Result};
