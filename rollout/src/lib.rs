//! Rewind's rollout decisions (DESIGN.md §7) as plain, synchronous code with
//! no I/O: which wave an endpoint belongs to, when a wave is done, when to
//! halt, and to whom the rollback goes. The coordinator feeds events in and
//! carries out the actions that come back; the whole state serializes so it
//! can be stored and resumed after a restart.
//!
//! - [`cohort`]: label selectors, the stable hash bucket, wave assignment.
//! - [`policy`]: a release's rollout with the defaults filled in.
//! - [`machine`]: the state machine of one rollout.
//! - [`registry`]: one active rollout per product.
//! - [`report`]: what an agent's verified report means for a rollout.
//! - [`status`]: `rollout status --json`.

pub mod cohort;
pub mod machine;
pub mod policy;
pub mod registry;
pub mod report;
pub mod status;

pub use cohort::{Cohorts, Selector, SelectorError, bucket};
pub use machine::{
    Action, Event, FleetAgent, IntegrityKind, NotifyEvent, Outcome, Part, RolloutError, RolloutMachine, Scope, State,
};
pub use policy::{RolloutSpec, default_rollout};
pub use registry::{Registry, RegistryError, Started};
pub use status::Status;
