//! rewind-agent: the endpoint side of Rewind. Snapshots local SQLite
//! databases, applies and reverses release migrations and flag states,
//! proves each step by content digest, survives crashes at any point, and
//! keeps a signed, hash-chained audit log.
//!
//! Data flow of a plan: [`apply::apply`] / [`rollback::rollback`] journal a
//! [`plan::Plan`], run it on [`target::Target`]s, record each migration in
//! the target's [`ledger`], and [`recover::recover`] finishes any plan a
//! crash interrupted.

pub mod apply;
pub mod bundle;
pub mod crash;
pub mod daemon;
pub mod error;
pub mod finalize;
pub mod flags;
pub mod fsutil;
pub mod ledger;
pub mod outbox;
pub mod plan;
pub mod recover;
pub mod rollback;
pub mod snapshot;
pub mod state;
pub mod target;
pub mod treehash;

pub use error::{Error, Result};
