//! Rewind's rollout decisions (DESIGN.md §7) as plain, synchronous code with
//! no I/O: which wave an endpoint belongs to, when a wave is done, when to
//! halt, and to whom the rollback goes. The coordinator feeds events in and
//! carries out the actions that come back; the whole state serializes so it
//! can be stored and resumed after a restart.

pub mod cohort;

pub use cohort::{Cohorts, Selector, SelectorError, bucket};
