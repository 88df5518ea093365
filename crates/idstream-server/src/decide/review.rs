//! Review cases as the decision APIs change them: the `review.*` events and an analyst's (or a
//! re-check's) resolution, which is a decision too.

use idstream_rules::Outcome;
use serde_json::json;

use super::decision_made;
use crate::domain::{ReviewStatus, SessionState};
use crate::events::{OwnEvent, ReviewChanged};
use crate::store::{DecisionRecord, Op, ReviewRecord, SessionUpdate, Store, Txn, TxnError};
use crate::util::now_us;

/// The `review.*` event announcing a case's new status (its kind follows the status).
pub fn changed(r: &ReviewRecord, actor: Option<&str>) -> OwnEvent {
    let ev = ReviewChanged {
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
    };
    match r.status {
        ReviewStatus::Open => OwnEvent::ReviewOpened(ev),
        ReviewStatus::Claimed => OwnEvent::ReviewClaimed(ev),
        ReviewStatus::Resolved => OwnEvent::ReviewResolved(ev),
    }
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
    let decided_by = if force { who.to_owned() } else { format!("review:{who}") };
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
