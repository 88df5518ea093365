//! Review cases as the decision APIs change them: the `review.*` events and an analyst's (or a
//! re-check's) resolution, which is a decision too; and the echo rule, which keeps the
//! provider's report of that resolution from being decided again.

use idstream_core::event::Status;
use idstream_rules::Outcome;
use serde_json::json;

use super::decision_made;
use crate::domain::{ReviewStatus, SessionState, ANALYST};
use crate::events::{OwnEvent, ReviewChanged};
use crate::store::{DecisionRecord, Op, ReviewRecord, SessionDecision, SessionUpdate, Store, Txn, TxnError};
use crate::util::now_us;

/// The `review.*` event announcing a case's new status (its kind follows the status).
pub fn changed(r: &ReviewRecord, actor: Option<&str>) -> OwnEvent {
    let ev = payload(r, actor);
    match r.status {
        ReviewStatus::Open => OwnEvent::ReviewOpened(ev),
        ReviewStatus::Claimed => OwnEvent::ReviewClaimed(ev),
        ReviewStatus::Resolved => OwnEvent::ReviewResolved(ev),
    }
}

/// How a case's claim changed (the record as it is after the change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Released,
    Reassigned,
    Escalated,
    /// Closed without an outcome: the user is asked to resubmit.
    Resubmission,
}

/// The `review.released` / `review.reassigned` / `review.escalated` event of `r` after the move.
pub fn moved(r: &ReviewRecord, actor: &str, how: Move, note: Option<String>) -> OwnEvent {
    let mut ev = payload(r, Some(actor));
    ev.note = note;
    match how {
        Move::Released => OwnEvent::ReviewReleased(ev),
        Move::Reassigned => OwnEvent::ReviewReassigned(ev),
        Move::Escalated => OwnEvent::ReviewEscalated(ev),
        Move::Resubmission => OwnEvent::ReviewResubmissionRequested(ev),
    }
}

fn payload(r: &ReviewRecord, actor: Option<&str>) -> ReviewChanged {
    ReviewChanged {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: r.tenant.clone(),
        review_id: r.id.clone(),
        session_id: r.session_id.clone(),
        subject: r.subject.clone(),
        decision_id: r.decision_id.clone(),
        reasons: r.reasons.clone(),
        status: r.status,
        outcome: r.outcome,
        note: r.note.clone(),
        actor: actor.map(str::to_owned),
        at: idstream_core::event::rfc3339_us(now_us()),
    }
}

/// The echo rule: a provider result is the *echo* of an analyst's resolution when the session's
/// latest decision is an analyst's and the provider now reports that same outcome (`Approved`
/// after an approval, `Declined` after a decline). That is what Didit sends after idstream
/// pushed the resolution back (update-status), and also what it sends when its own reviewer
/// agrees; either way the analyst's decision stands, so the decision worker records the new
/// provider status and makes no decision. Any other result (the provider disagreeing, or a
/// session whose latest decision is the rules') is decided as usual.
pub fn is_echo(status: Status, latest: Option<&SessionDecision>) -> bool {
    let Some(d) = latest else { return false };
    let reported = match status {
        Status::Approved => Outcome::Approve,
        Status::Declined => Outcome::Decline,
        _ => return false,
    };
    d.decided_by.starts_with(ANALYST) && d.outcome == reported
}

/// Closes a review with a final decision: review resolved, decision stored, session updated,
/// `review.resolved` and `decision.made` appended — one transaction. `force` (system re-checks)
/// resolves an open case without a claim. Returns the decision and the review as resolved.
pub async fn resolve(
    store: &dyn Store,
    r: &ReviewRecord,
    who: &str,
    outcome: Outcome,
    reason: &str,
    note: &str,
    force: bool,
) -> Result<(DecisionRecord, ReviewRecord), TxnError> {
    let now = now_us();
    let decided_by = if force { who.to_owned() } else { format!("{ANALYST}{who}") };
    let d = DecisionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: r.tenant.clone(),
        session_id: r.session_id.clone(),
        subject: r.subject.clone(),
        event_id: None,
        event_offset: None,
        outcome,
        score: 0.0,
        ruleset_version: None,
        reasons: vec![reason.to_owned()],
        decided_by,
        decided_at_us: now,
        detail: json!({"review_id": r.id, "note": note, "replaces_decision": r.decision_id}),
    };
    let mut resolved = r.clone();
    resolved.status = ReviewStatus::Resolved;
    resolved.resolved_by = Some(who.to_owned());
    resolved.resolved_at_us = Some(now);
    resolved.outcome = Some(outcome);
    resolved.note = Some(note.to_owned());
    store
        .commit(Txn {
            entries: vec![changed(&resolved, Some(who)).to_entry(), decision_made(&d, Some(&r.id)).to_entry()],
            ops: vec![
                Op::ResolveReview {
                    tenant: r.tenant.clone(),
                    id: r.id.clone(),
                    actor: who.to_owned(),
                    outcome: Some(outcome),
                    note: note.to_owned(),
                    now_us: now,
                    force,
                },
                Op::PutDecision(d.clone()),
                Op::UpsertSession(SessionUpdate {
                    tenant: r.tenant.clone(),
                    session_id: r.session_id.clone(),
                    subject: None,
                    provider_status: None,
                    state: SessionState::of(outcome),
                    decision: Some((outcome, d.id.clone())),
                    now_us: now,
                }),
            ],
        })
        .await?;
    Ok((d, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_rule() {
        let d = |outcome, by: &str| Some(SessionDecision { outcome, decided_by: by.into() });
        let table = [
            // The analyst's outcome reported back: an echo.
            (Status::Approved, d(Outcome::Approve, "review:user:ana"), true),
            (Status::Declined, d(Outcome::Decline, "review:key:svc"), true),
            // The provider disagrees with the analyst: decided as usual.
            (Status::Declined, d(Outcome::Approve, "review:user:ana"), false),
            (Status::Approved, d(Outcome::Decline, "review:user:ana"), false),
            // Not an analyst's decision.
            (Status::Approved, d(Outcome::Approve, "rules"), false),
            (Status::Approved, d(Outcome::Approve, "blocklist:key:svc"), false),
            (Status::Declined, d(Outcome::Decline, "rules"), false),
            // Not a final status, or no decision yet.
            (Status::InReview, d(Outcome::Review, "review:user:ana"), false),
            (Status::InReview, d(Outcome::Approve, "review:user:ana"), false),
            (Status::Resubmitted, d(Outcome::Decline, "review:user:ana"), false),
            (Status::Approved, None, false),
        ];
        for (status, latest, want) in table {
            assert_eq!(is_echo(status, latest.as_ref()), want, "{status:?} after {latest:?}");
        }
    }
}
