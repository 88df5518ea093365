//! Push-back: an analyst's resolution is set at the provider too, so both systems agree.
//!
//! When an analyst resolves a review (`POST /v1/reviews/{id}/resolve`) of a session that belongs
//! to a provider account with `push_back = true` — a session created through
//! `POST /v1/verifications` with that account, or one whose results arrive on the account's
//! `source` — this task calls Didit's `PATCH /v3/session/{id}/update-status/` with `Approved` or
//! `Declined` and the analyst's note as comment.
//!
//! The resolution never waits for the provider: it is committed first (its `decision.made` is
//! the durable request), and this task follows the log, like reconciliation. A push that fails
//! because the provider is down, slow, rate limiting or paused by the circuit breaker is retried
//! after `push_back_retry_first_secs`, doubling up to `push_back_retry_max_secs`, until the
//! resolution is `push_back_max_age_secs` old. The outcome is recorded once per analyst
//! decision as a `review.pushed_back` event (`pushed`, or `failed` with the error code when the
//! provider refused it or the time ran out); a resolution without one is still pending, and
//! the follower state is rebuilt from the log at start-up, so a restart loses nothing.
//!
//! The status webhook the provider sends after the change is the *echo* of the analyst's
//! decision; the decision worker recognises it ([`crate::decide::review::is_echo`]) and never
//! decides it again. On shared backends every node follows the log but pushes only the sessions
//! whose decision partition it holds ([`Ownership`]), one node at a time per session; during a
//! hand-over two pushes are harmless: Didit's update-status is idempotent (the same status again
//! changes nothing and sends no webhook) and the outcome event's dedupe key keeps one of them.
//!
//! It never logs the note (it may hold personal data) and never changes idstream's decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use idstream_rules::Outcome;
use tokio_util::sync::CancellationToken;

use super::{DiditClient, ProviderError, Providers};
use crate::config::VerificationsConfig;
use crate::decide::partitions::Ownership;
use crate::domain::ANALYST;
use crate::events::{LogEvent, OwnEvent, PushResult, ReviewPushedBack, OWN_SOURCE};
use crate::log::{EventLog, LogError, ReadFilter};
use crate::util::now_us;

/// An analyst's decision not pushed yet.
#[derive(Debug, Clone)]
struct Pending {
    tenant: String,
    session_id: String,
    review_id: String,
    outcome: Outcome,
    note: String,
    resolved_us: i64,
    /// The account it goes to: `None` until looked up.
    provider: Option<Arc<DiditClient>>,
    attempts: u32,
    next_us: i64,
    last_error: Option<&'static str>,
}

/// What a push attempt came to.
enum Attempted {
    Done(PushResult, Option<&'static str>),
    Retry(&'static str),
}

/// The push-back task of one node.
pub struct PushBack {
    log: Arc<dyn EventLog>,
    providers: Arc<Providers>,
    cfg: VerificationsConfig,
    scanned: u64,
    /// `review.resolved` notes by review id, until their `decision.made` is read.
    notes: HashMap<String, String>,
    /// By the analyst's decision id.
    pending: BTreeMap<String, Pending>,
    /// The sessions this node pushes.
    owner: Ownership,
}

impl PushBack {
    pub fn new(
        log: Arc<dyn EventLog>,
        providers: Arc<Providers>,
        cfg: VerificationsConfig,
        owner: Ownership,
    ) -> PushBack {
        PushBack { log, providers, cfg, scanned: 0, notes: HashMap::new(), pending: BTreeMap::new(), owner }
    }

    /// Whether any account pushes back.
    pub fn wanted(providers: &Providers) -> bool {
        providers.all().any(|p| p.push_back)
    }

    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut head = self.log.subscribe();
        let max_age_us = self.cfg.push_back_max_age_secs as i64 * 1_000_000;
        // A resolution older than the maximum age is no longer pushed: start the scan there.
        self.scanned = loop {
            match self.log.last_offset_before(now_us() - max_age_us).await {
                Ok(o) => break o,
                Err(e) => {
                    tracing::warn!(error = %e, "push-back cannot read the log; retrying");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                }
            }
        };
        loop {
            head.mark_unchanged();
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "push-back pass failed; retrying");
            }
            let wait =
                self.pending.values().map(|p| p.next_us).min().map_or(Duration::from_secs(5), |at| {
                    Duration::from_micros((at - now_us()).clamp(0, 5_000_000) as u64)
                });
            tokio::select! {
                _ = stop.cancelled() => return,
                r = head.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass: follow the log, then push what is due.
    pub async fn tick(&mut self) -> Result<(), LogError> {
        self.follow().await?;
        self.push_due().await
    }

    async fn follow(&mut self) -> Result<(), LogError> {
        loop {
            let batch = self.log.read(self.scanned, 1000, &ReadFilter::default()).await?;
            let Some(last) = batch.last() else { break };
            self.scanned = last.offset;
            for e in batch.iter().filter(|e| e.source == OWN_SOURCE) {
                if !matches!(e.kind.as_str(), "review.resolved" | "decision.made" | "review.pushed_back") {
                    continue;
                }
                match LogEvent::from_entry(e) {
                    Ok(LogEvent::Own(OwnEvent::ReviewResolved(r))) => {
                        self.notes.insert(r.review_id, r.note.unwrap_or_default());
                    }
                    Ok(LogEvent::Own(OwnEvent::DecisionMade(d))) => {
                        let Some(review_id) = d.review_id else { continue };
                        let note = self.notes.remove(&review_id).unwrap_or_default();
                        if !d.decided_by.starts_with(ANALYST) || super::didit::status_of(d.outcome).is_none() {
                            continue;
                        }
                        self.pending.entry(d.decision_id).or_insert(Pending {
                            tenant: d.tenant,
                            session_id: d.session_id,
                            review_id,
                            outcome: d.outcome,
                            note,
                            resolved_us: e.appended_at_us,
                            provider: None,
                            attempts: 0,
                            next_us: 0,
                            last_error: None,
                        });
                    }
                    Ok(LogEvent::Own(OwnEvent::ReviewPushedBack(p))) => {
                        self.pending.remove(&p.decision_id);
                    }
                    _ => {}
                }
            }
        }
        metrics::gauge!("idstream_push_back_pending").set(self.pending.len() as f64);
        Ok(())
    }

    /// The push-back account of a session, if it has one: the account it was created with, or
    /// the one whose source its results arrive on.
    async fn account_of(&self, tenant: &str, session_id: &str) -> Result<Option<Arc<DiditClient>>, LogError> {
        let filter = ReadFilter { tenant: Some(tenant.to_owned()), partition_key: Some(session_id.to_owned()) };
        for e in self.log.read(0, 1000, &filter).await? {
            let account = match LogEvent::from_entry(&e) {
                Ok(LogEvent::Own(OwnEvent::SessionCreated(s))) => self.providers.get(&s.provider).cloned(),
                Ok(LogEvent::Provider(p)) => {
                    self.providers.all().find(|c| c.source == p.source && c.tenant == p.tenant).cloned()
                }
                _ => continue,
            };
            return Ok(account.filter(|c| c.push_back));
        }
        Ok(None)
    }

    async fn push_due(&mut self) -> Result<(), LogError> {
        let now = now_us();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_us <= now && self.owner.owns(&p.session_id))
            .map(|(k, _)| k.clone())
            .collect();
        for decision_id in due {
            let mut p = self.pending.get(&decision_id).cloned().expect("due ids are pending");
            if p.provider.is_none() {
                p.provider = self.account_of(&p.tenant, &p.session_id).await?;
                let usable = p.provider.is_some() && super::didit::valid_session_id(&p.session_id);
                if !usable {
                    // Not a session of an account that pushes back: nothing to do, nothing to record.
                    self.pending.remove(&decision_id);
                    continue;
                }
            }
            let client = p.provider.clone().expect("looked up above");
            let status = super::didit::status_of(p.outcome).expect("only approvals and declines are pending");
            let attempted = if now - p.resolved_us > self.cfg.push_back_max_age_secs as i64 * 1_000_000 {
                Attempted::Done(PushResult::Failed, Some(p.last_error.unwrap_or("expired")))
            } else {
                p.attempts += 1;
                let comment = (!p.note.is_empty()).then_some(p.note.as_str());
                match client.update_status(&p.session_id, status, comment).await {
                    Ok(_) => Attempted::Done(PushResult::Pushed, None),
                    // The provider is up and refuses (the session's status cannot change now, it
                    // is unknown, ...): asking again gives the same answer.
                    Err(e @ ProviderError::Rejected { .. }) | Err(e @ ProviderError::BadResponse { .. }) => {
                        Attempted::Done(PushResult::Failed, Some(e.code()))
                    }
                    Err(e) => {
                        tracing::warn!(provider = %client.id, session_id = %p.session_id, attempts = p.attempts, error = %e, "push-back failed; will retry");
                        Attempted::Retry(e.code())
                    }
                }
            };
            match attempted {
                Attempted::Retry(code) => {
                    metrics::counter!("idstream_push_back_total", "provider" => client.id.clone(), "outcome" => "retry")
                        .increment(1);
                    p.last_error = Some(code);
                    let first = Duration::from_secs(self.cfg.push_back_retry_first_secs);
                    let wait = first
                        .saturating_mul(1u32 << (p.attempts - 1).min(16))
                        .min(Duration::from_secs(self.cfg.push_back_retry_max_secs));
                    p.next_us = now_us() + wait.as_micros() as i64;
                    self.pending.insert(decision_id, p);
                }
                Attempted::Done(result, error) => {
                    let ev = OwnEvent::ReviewPushedBack(ReviewPushedBack {
                        id: uuid::Uuid::now_v7().to_string(),
                        tenant: p.tenant.clone(),
                        review_id: p.review_id.clone(),
                        session_id: p.session_id.clone(),
                        decision_id: decision_id.clone(),
                        provider: client.id.clone(),
                        provider_status: status.to_owned(),
                        result,
                        error: error.map(str::to_owned),
                        attempts: p.attempts,
                        at: idstream_core::event::rfc3339_us(now_us()),
                    });
                    if let Err(e) = self.log.append(vec![ev.to_entry()]).await {
                        // Kept pending: the next pass records it (the provider call is idempotent).
                        self.pending.insert(decision_id, p);
                        return Err(e);
                    }
                    let outcome = match result {
                        PushResult::Pushed => "pushed",
                        PushResult::Failed => "failed",
                    };
                    if result == PushResult::Failed {
                        tracing::warn!(provider = %client.id, session_id = %p.session_id, attempts = p.attempts, error = error.unwrap_or(""), "push-back gave up; the provider keeps its own status");
                    }
                    metrics::counter!("idstream_push_back_total", "provider" => client.id.clone(), "outcome" => outcome)
                        .increment(1);
                    self.pending.remove(&decision_id);
                }
            }
        }
        metrics::gauge!("idstream_push_back_pending").set(self.pending.len() as f64);
        Ok(())
    }
}
