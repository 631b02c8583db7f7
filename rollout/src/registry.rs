//! Every rollout the coordinator knows, keyed by `<product>@<sequence>`,
//! with DESIGN.md §7's rule: one active rollout per product; a second is
//! refused unless it explicitly supersedes the first. Serializable as a
//! whole, like the machines it holds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cohort::CohortError;
use crate::machine::{Action, Event, FleetAgent, RolloutError, RolloutMachine};
use crate::policy::RolloutSpec;

/// Why a rollout could not start or an event found no rollout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "product {product} already has an active rollout {active} ({state}); wait for it to finish, or start {requested} with --supersede to replace it"
    )]
    ActiveRollout { product: String, active: String, state: String, requested: String },
    #[error(
        "rollout {active} of {product} is rolling back; it cannot be superseded until every rollback is proven or listed for a human"
    )]
    RollingBack { product: String, active: String },
    #[error("rollout {0} already exists; a release rolls out once — build a new sequence to roll out again")]
    Exists(String),
    #[error("no rollout {0}")]
    NotFound(String),
    #[error(transparent)]
    Cohort(#[from] CohortError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
}

/// What starting a rollout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    pub actions: Vec<Action>,
    /// The rollout it superseded and that rollout's audit actions.
    pub superseded: Option<(String, Vec<Action>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    rollouts: BTreeMap<String, RolloutMachine>,
}

impl Registry {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the rollout of `spec` over the product's fleet.
    ///
    /// # Errors
    /// [`RegistryError::ActiveRollout`] when the product has an active
    /// rollout and `supersede` is false; [`RegistryError::Exists`] when
    /// this release already rolled out; a cohort error for a bad selector.
    pub fn start(
        &mut self,
        spec: RolloutSpec,
        fleet: impl IntoIterator<Item = FleetAgent>,
        supersede: bool,
        actor: &str,
        now_ms: u64,
    ) -> Result<Started, RegistryError> {
        let id = spec.id();
        if self.rollouts.contains_key(&id) {
            return Err(RegistryError::Exists(id));
        }
        let active = self.active(&spec.product).map(|m| (m.spec().id(), m.state().name().to_string()));
        if let Some((active, state)) = &active
            && state == "rolling_back"
        {
            return Err(RegistryError::RollingBack { product: spec.product.clone(), active: active.clone() });
        }
        if let Some((active, state)) = &active
            && !supersede
        {
            return Err(RegistryError::ActiveRollout {
                product: spec.product.clone(),
                active: active.clone(),
                state: state.clone(),
                requested: id,
            });
        }
        let (machine, actions) = RolloutMachine::start(spec, fleet, actor, now_ms)?;
        let superseded = match active {
            Some((old, _)) => {
                let acts = self.rollouts.get_mut(&old).map(|m| m.supersede(&id, actor)).unwrap_or_default();
                Some((old, acts))
            }
            None => None,
        };
        self.rollouts.insert(id.clone(), machine);
        Ok(Started { id, actions, superseded })
    }

    /// The product's active rollout (anything but done, rolled back or
    /// superseded).
    #[must_use]
    pub fn active(&self, product: &str) -> Option<&RolloutMachine> {
        self.rollouts.values().find(|m| m.spec().product == product && m.state().is_active())
    }

    /// The product's rollout to show: the active one, else the latest.
    #[must_use]
    pub fn current(&self, product: &str) -> Option<&RolloutMachine> {
        self.active(product).or_else(|| {
            self.rollouts.values().filter(|m| m.spec().product == product).max_by_key(|m| m.spec().sequence)
        })
    }

    #[must_use]
    pub fn get(&self, id: &str) -> Option<&RolloutMachine> {
        self.rollouts.get(id)
    }

    /// Feeds an event to one rollout.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], or the machine's refusal.
    pub fn handle(&mut self, id: &str, now_ms: u64, event: Event) -> Result<Vec<Action>, RegistryError> {
        let m = self.rollouts.get_mut(id).ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        Ok(m.handle(now_ms, event)?)
    }

    /// Rolling back to epoch `to_sequence`: the product's rollouts above it
    /// that are not rolled back yet, latest first — the order their
    /// rollbacks must run on each endpoint (DESIGN.md §7). Feed each an
    /// [`Event::Rollback`]; an endpoint that applied several gets the next
    /// rollback plan once the previous one is proven.
    #[must_use]
    pub fn epoch_rollback_order(&self, product: &str, to_sequence: u64) -> Vec<String> {
        let mut v: Vec<_> = self
            .rollouts
            .values()
            .filter(|m| {
                m.spec().product == product && m.spec().sequence > to_sequence && m.state().name() != "rolled_back"
            })
            .collect();
        v.sort_by_key(|m| std::cmp::Reverse(m.spec().sequence));
        v.into_iter().map(|m| m.spec().id()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &RolloutMachine)> {
        self.rollouts.iter()
    }
}
