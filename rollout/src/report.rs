//! What an agent's verified report (`rewind_shared::report`) means for a
//! rollout: which [`Event`]s the coordinator feeds the machine once it has
//! checked the report's signature and chain continuity. Keeping this here
//! keeps every counting rule (DESIGN.md §7) in one crate.

use rewind_shared::bundle::PlanKind;
use rewind_shared::fleet::AgentId;
use rewind_shared::report::{Continuity, ReportPayload, ReportStatus};

use crate::machine::{Event, IntegrityKind, Outcome, Part};

/// The rollout a report belongs to, `<product>@<sequence>`; `None` for a
/// refusal of a plan the agent could not even read.
#[must_use]
pub fn rollout_id(report: &ReportPayload) -> Option<String> {
    (!report.product.is_empty()).then(|| format!("{}@{}", report.product, report.sequence))
}

/// The events a verified report stands for, in the order to feed them.
///
/// | plan     | status / journal state          | events                         |
/// |----------|---------------------------------|--------------------------------|
/// | apply    | `applied`                       | `applied`                      |
/// | apply    | `failed` (reverted)             | `failed` (+ integrity `failed_verify` when `failed_step` is `verify`) |
/// | apply    | `failed`, state `needs_human`   | `failed` + integrity `failed_rollback_proof` (the revert is unproven) |
/// | apply    | `refused`                       | `refused`                      |
/// | apply    | `rolled_back` (local revert)    | `rolled_back_locally`          |
/// | rollback | `rolled_back`                   | `rollback_proven`              |
/// | rollback | anything else                   | `rollback_failed`              |
/// | refused, kind unknown | `refused`          | `refused`                      |
///
/// A rollback plan of one `part` (the coordinator knows which of the
/// bundle's signed plans the report names) is a partial outcome instead:
/// `partial_outcome` proven for `rolled_back`, not proven otherwise, plus
/// integrity `failed_rollback_proof` when the endpoint needs a human. A
/// flag's activation plan (an apply plan of an `activate` part) likewise,
/// proven for `applied`.
///
/// A chain gap adds integrity `audit_gap`, a fork `audit_fork`.
///
/// The failed-verify signal is the report's `failed_step` (`verify`); a
/// report without that field (an older agent) is judged by its message
/// (`migration ID: verify.sql ...`).
#[must_use]
pub fn events_from_report(
    agent: &AgentId,
    report: &ReportPayload,
    continuity: &Continuity,
    part: Option<&Part>,
) -> Vec<Event> {
    let mut events = Vec::new();
    let outcome = |o: Outcome| Event::AgentOutcome { agent: agent.clone(), outcome: o };
    let integrity = |kind: IntegrityKind, detail: String| Event::Integrity { agent: agent.clone(), kind, detail };
    match (report.kind, report.status, part) {
        (Some(kind), status, Some(part)) if (kind == PlanKind::Apply) == part.activate => {
            let done = if part.activate { ReportStatus::Applied } else { ReportStatus::RolledBack };
            let proven = status == done;
            events.push(Event::PartialOutcome { agent: agent.clone(), part: part.clone(), proven });
            if report.state == "needs_human" {
                events.push(integrity(
                    IntegrityKind::FailedRollbackProof,
                    if part.activate {
                        format!("the activation of flag {} could not be proven: {}", part.subject, report.message)
                    } else {
                        format!("the rollback of {part} could not be proven: {}", report.message)
                    },
                ));
            }
        }
        (kind, status, _) => events_of_plan(kind, status, report, &mut events, outcome, integrity),
    }
    match continuity {
        Continuity::Ok { .. } => {}
        Continuity::Gap { missing, .. } => {
            events.push(integrity(
                IntegrityKind::AuditGap,
                format!("audit entries {}..={} are missing", missing.0, missing.1),
            ));
        }
        Continuity::Fork { reason, .. } => events.push(integrity(IntegrityKind::AuditFork, reason.clone())),
    }
    events
}

/// The events of a whole-release plan's report.
fn events_of_plan(
    kind: Option<PlanKind>,
    status: ReportStatus,
    report: &ReportPayload,
    events: &mut Vec<Event>,
    outcome: impl Fn(Outcome) -> Event,
    integrity: impl Fn(IntegrityKind, String) -> Event,
) {
    match (kind, status) {
        (Some(PlanKind::Rollback), ReportStatus::RolledBack) => events.push(outcome(Outcome::RollbackProven)),
        (Some(PlanKind::Rollback), _) => events.push(outcome(Outcome::RollbackFailed)),
        (_, ReportStatus::Applied) => events.push(outcome(Outcome::Applied)),
        (_, ReportStatus::Refused) => events.push(outcome(Outcome::Refused)),
        (_, ReportStatus::RolledBack) => events.push(outcome(Outcome::RolledBackLocally)),
        (_, ReportStatus::Failed) => {
            events.push(outcome(Outcome::Failed));
            if report.state == "needs_human" {
                events.push(integrity(
                    IntegrityKind::FailedRollbackProof,
                    format!("the failed apply could not be reverted to a proven state: {}", report.message),
                ));
            } else if failed_verify(report) {
                events.push(integrity(IntegrityKind::FailedVerify, report.message.clone()));
            }
        }
    }
}

/// Whether a failed apply failed in a migration's `verify.sql`: the
/// report's `failed_step`; for a report without that field (an agent older
/// than it), the engine's message (`migration ID: verify.sql ...`).
fn failed_verify(report: &ReportPayload) -> bool {
    match report.failed_step.as_deref() {
        Some(step) => step == "verify",
        None => report.message.contains("verify.sql"),
    }
}

#[cfg(test)]
mod tests {
    use rewind_shared::Digest;
    use rewind_shared::report::ChainPoint;

    use super::*;

    fn payload(kind: Option<PlanKind>, status: ReportStatus, state: &str, message: &str) -> ReportPayload {
        let json = serde_json::json!({
            "format": "rewind-report-1", "id": "res-1", "agent_key": "00", "agent_keyid": "k",
            "plan": "p", "product": "notes", "release": "2026.11.0", "sequence": 7,
            "kind": kind, "status": status, "state": state, "targets": [], "message": message,
            "chain": {"seq": 0, "head": format!("b3:{}", "0".repeat(64))}, "audit_since": [], "time": "2026-11-25T00:00:00Z"
        });
        serde_json::from_value(json).unwrap()
    }

    fn head() -> ChainPoint {
        ChainPoint { seq: 3, head: format!("b3:{}", "1".repeat(64)).parse::<Digest>().unwrap() }
    }

    fn outcomes(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::AgentOutcome { outcome, .. } => {
                    serde_json::to_value(outcome).unwrap().as_str().unwrap().to_string()
                }
                Event::Integrity { kind, .. } => {
                    format!("integrity:{}", serde_json::to_value(kind).unwrap().as_str().unwrap())
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn reports_become_outcomes_and_integrity_signals() {
        let a = AgentId::parse("agt-1").unwrap();
        let ok = Continuity::Ok { head: head(), verified: 1 };
        let cases = [
            (Some(PlanKind::Apply), ReportStatus::Applied, "applied", "", vec!["applied"]),
            (
                Some(PlanKind::Apply),
                ReportStatus::Failed,
                "reverted",
                "notes 2026.11.0 failed and was reverted: check failed",
                vec!["failed"],
            ),
            (
                Some(PlanKind::Apply),
                ReportStatus::Failed,
                "reverted",
                "failed and was reverted: migration 0001: verify.sql returned 0",
                vec!["failed", "integrity:failed_verify"],
            ),
            (
                Some(PlanKind::Apply),
                ReportStatus::Failed,
                "needs_human",
                "needs a human",
                vec!["failed", "integrity:failed_rollback_proof"],
            ),
            (Some(PlanKind::Apply), ReportStatus::Refused, "refused", "", vec!["refused"]),
            (None, ReportStatus::Refused, "refused", "", vec!["refused"]),
            (Some(PlanKind::Apply), ReportStatus::RolledBack, "rolled_back", "", vec!["rolled_back_locally"]),
            (Some(PlanKind::Rollback), ReportStatus::RolledBack, "rolled_back", "", vec!["rollback_proven"]),
            (Some(PlanKind::Rollback), ReportStatus::Failed, "needs_human", "", vec!["rollback_failed"]),
            (Some(PlanKind::Rollback), ReportStatus::Refused, "refused", "", vec!["rollback_failed"]),
        ];
        for (kind, status, state, message, expected) in cases {
            let p = payload(kind, status, state, message);
            assert_eq!(outcomes(&events_from_report(&a, &p, &ok, None)), expected, "{kind:?} {status:?} {state}");
        }
        // The failed step, when the report names it, decides over the message:
        // a check whose text mentions verify.sql is an ordinary failure.
        let named = |step: &str, message: &str| {
            let mut p = payload(Some(PlanKind::Apply), ReportStatus::Failed, "reverted", message);
            p.failed_step = Some(step.into());
            outcomes(&events_from_report(&a, &p, &ok, None))
        };
        assert_eq!(named("check", "check `verify.sql ran` on notes: got 0, expected = 1"), ["failed"]);
        assert_eq!(named("verify", "migration 0001: returned 0"), ["failed", "integrity:failed_verify"]);
        assert_eq!(named("up", "migration 0001: up.sql no such table"), ["failed"]);
        let p = payload(Some(PlanKind::Apply), ReportStatus::Applied, "applied", "");
        assert_eq!(rollout_id(&p).as_deref(), Some("notes@7"));
        let gap = Continuity::Gap { known: head(), head: head(), missing: (4, 9) };
        assert_eq!(outcomes(&events_from_report(&a, &p, &gap, None)), ["applied", "integrity:audit_gap"]);
        let fork = Continuity::Fork { known: None, head: head(), reason: "went backwards".into() };
        assert_eq!(outcomes(&events_from_report(&a, &p, &fork, None)), ["applied", "integrity:audit_fork"]);

        // A part's rollback plan: a partial outcome, never the release's.
        let part = Part::rollback(rewind_shared::bundle::Granularity::Flag, "new_checkout");
        let partial = |status, state| {
            let p = payload(Some(PlanKind::Rollback), status, state, "");
            events_from_report(&a, &p, &ok, Some(&part))
        };
        assert_eq!(
            partial(ReportStatus::RolledBack, "rolled_back"),
            [Event::PartialOutcome { agent: a.clone(), part: part.clone(), proven: true }]
        );
        assert_eq!(
            partial(ReportStatus::Refused, "refused"),
            [Event::PartialOutcome { agent: a.clone(), part: part.clone(), proven: false }]
        );
        assert_eq!(outcomes(&partial(ReportStatus::Failed, "needs_human"))[1], "integrity:failed_rollback_proof");

        // A flag's activation plan: a partial outcome proven by `applied`,
        // never counted as the release's apply (a failed one is no failure
        // of the wave).
        let on = Part::activation("new_checkout");
        let activation = |status, state| {
            let p = payload(Some(PlanKind::Apply), status, state, "");
            events_from_report(&a, &p, &ok, Some(&on))
        };
        assert_eq!(
            activation(ReportStatus::Applied, "applied"),
            [Event::PartialOutcome { agent: a.clone(), part: on.clone(), proven: true }]
        );
        assert_eq!(
            activation(ReportStatus::Failed, "reverted"),
            [Event::PartialOutcome { agent: a.clone(), part: on.clone(), proven: false }]
        );
    }
}
