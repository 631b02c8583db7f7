//! Formats every Rewind component agrees on: the release directory, the
//! content digest "rewind-digest-1", script checksums and the audit chain.
//! Owns the wire contract ([`wire`]: generated proto code and conversions)
//! and, behind feature `client`, the one client channel builder; otherwise
//! knows nothing of networking; reads SQLite only to digest it.

pub mod audit;
pub mod bundle;
#[cfg(feature = "client")]
pub mod channel;
pub mod digest;
pub mod duration;
pub mod fleet;
pub mod release;
pub mod report;
pub mod sqltext;
pub mod telemetry;
pub mod templates;
pub mod trust;
pub mod wire;

pub use digest::{DatabaseDigest, Digest, TableDigest};
pub use release::{Release, ReleaseError};
