//! What a rollout of one release must follow: its waves, thresholds and
//! triggers, with the defaults for a release that has no `[rollout]`.

use std::time::Duration;

use rewind_shared::Release;
use rewind_shared::release::{Rollout, Trigger, Wave};
use serde::{Deserialize, Serialize};

/// Default `max_failure_ratio` (2 %).
pub const DEFAULT_MAX_FAILURE_RATIO: f64 = 0.02;
/// Default `min_sample`.
pub const DEFAULT_MIN_SAMPLE: u32 = 20;
/// Default `report_timeout` (30 minutes).
pub const DEFAULT_REPORT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The rollout of a release without `[rollout]`: one wave `all` at 100 %,
/// no bake, no approval, default thresholds and `auto_rollback = true`.
#[must_use]
pub fn default_rollout() -> Rollout {
    Rollout {
        waves: vec![Wave {
            name: "all".into(),
            selector: None,
            percent: Some(100.0),
            bake: Duration::ZERO,
            approval: false,
        }],
        max_failure_ratio: DEFAULT_MAX_FAILURE_RATIO,
        min_sample: DEFAULT_MIN_SAMPLE,
        report_timeout: DEFAULT_REPORT_TIMEOUT,
        auto_rollback: true,
    }
}

/// One release's rollout as the engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub product: String,
    pub version: String,
    pub sequence: u64,
    pub rollout: Rollout,
    pub triggers: Vec<Trigger>,
    /// When the signed apply plan expires (ms since the Unix epoch): no
    /// plan goes out from then on; agents that never got it stay pending.
    #[serde(default)]
    pub plan_expires_ms: Option<u64>,
}

impl RolloutSpec {
    /// The spec of a loaded release: its `[rollout]`, or
    /// [`default_rollout`] when it has none, and its `[[trigger]]`s.
    #[must_use]
    pub fn from_release(release: &Release) -> Self {
        Self {
            product: release.name.clone(),
            version: release.version.clone(),
            sequence: release.sequence,
            rollout: release.rollout.clone().unwrap_or_else(default_rollout),
            triggers: release.triggers.clone(),
            plan_expires_ms: None,
        }
    }

    /// The same spec with the apply plan's expiry (from the bundle).
    #[must_use]
    pub fn with_plan_expiry(mut self, expires_ms: u64) -> Self {
        self.plan_expires_ms = Some(expires_ms);
        self
    }

    /// The id the registry and the store know this rollout by:
    /// `<product>@<sequence>`, e.g. `notes@7`.
    #[must_use]
    pub fn id(&self) -> String {
        format!("{}@{}", self.product, self.sequence)
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
