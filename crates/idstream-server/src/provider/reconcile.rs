//! Reconciliation: results whose webhooks were lost are fetched from the provider.
//!
//! Didit gives up on a webhook after a couple of retries, so a result can be lost for good
//! unless someone asks for it. This task follows the log: every `session.created` (a session
//! started through `POST /v1/verifications`) is pending until a verification event with a
//! result status arrives for it. A session still pending `reconcile_after_secs` after its
//! creation is polled (`GET /v3/session/{id}/decision/`) at most every
//! `reconcile_interval_secs`, until it has a result or is `reconcile_max_age_secs` old.
//!
//! A result found this way is appended as the event a webhook would have brought
//! ([`idstream_core::event::normalise_didit_poll`]), with the same dedupe key
//! ([`idstream_core::event::didit_result_key`]): if the webhook arrives later, or arrived
//! meanwhile, the log keeps one event and the decision worker decides it once. The follower
//! state is rebuilt from the log at start-up, so a restart loses nothing. On shared backends
//! every node follows the log but polls only the sessions whose decision partition it holds
//! ([`Ownership`]): one node at a time per session, taken over with the partition's lease (and
//! the dedupe key keeps one event even if two nodes overlap during a hand-over).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use idstream_core::event::{normalise_didit_poll, Envelope, IdentityEvent, DIDIT_RESULT_STATUSES};
use idstream_core::signature::Scheme;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{DiditClient, ProviderError, Providers};
use crate::config::VerificationsConfig;
use crate::decide::partitions::Ownership;
use crate::events::{LogEvent, OwnEvent, OWN_SOURCE};
use crate::log::{Appended, EventLog, LogError, ReadFilter};
use crate::util::now_us;

/// What appending a polled decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The session has no result yet (status `Not Started`, `In Progress`, ...).
    NoResult,
    /// Stored now: the webhooks had not brought it.
    Stored(Appended),
    /// The same result was already in the log (its webhook came).
    AlreadyStored(Appended),
}

/// Appends the result in Didit's decision answer `decision` (if it holds one) as the
/// verification event of `client`'s source.
pub async fn store_polled(log: &dyn EventLog, client: &DiditClient, decision: &Value) -> Result<Recovered, LogError> {
    let now = crate::util::unix_now();
    let env = Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: &client.tenant,
        source: &client.source,
        received_at: now,
        scheme: Scheme::DiditApi,
    };
    let event = match normalise_didit_poll(env, decision) {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(Recovered::NoResult),
        Err(e) => {
            tracing::warn!(provider = %client.id, error = %e, "provider decision not understood");
            return Ok(Recovered::NoResult);
        }
    };
    let body = serde_json::to_vec(decision).expect("a Value serialises");
    let entry = crate::ingest::to_entry(&event, body.into());
    let a = log.append(vec![entry]).await?.into_iter().next().expect("one result per entry");
    Ok(if a.duplicate { Recovered::AlreadyStored(a) } else { Recovered::Stored(a) })
}

#[derive(Debug)]
struct Pending {
    provider: String,
    created_us: i64,
    last_poll_us: i64,
}

/// The reconciliation task of one node.
pub struct Reconciler {
    pub log: Arc<dyn EventLog>,
    pub providers: Arc<Providers>,
    pub cfg: VerificationsConfig,
    /// The sessions this node polls.
    pub owner: Ownership,
    pending: HashMap<(String, String), Pending>,
    scanned: u64,
}

impl Reconciler {
    pub fn new(
        log: Arc<dyn EventLog>,
        providers: Arc<Providers>,
        cfg: VerificationsConfig,
        owner: Ownership,
    ) -> Reconciler {
        Reconciler { log, providers, cfg, owner, pending: HashMap::new(), scanned: 0 }
    }

    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let max_age_us = self.cfg.reconcile_max_age_secs as i64 * 1_000_000;
        // Nothing older than the maximum age can still be pending: start the scan there.
        self.scanned = self.log.last_offset_before(now_us() - max_age_us).await.unwrap_or(0);
        let tick = Duration::from_secs(self.cfg.reconcile_interval_secs.clamp(1, 5));
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "reconciliation pass failed; retrying");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// One pass: follow the log, then poll what is due.
    pub async fn tick(&mut self) -> Result<(), LogError> {
        self.follow().await?;
        self.poll_due().await
    }

    async fn follow(&mut self) -> Result<(), LogError> {
        loop {
            let batch = self.log.read(self.scanned, 1000, &ReadFilter::default()).await?;
            let Some(last) = batch.last() else { return Ok(()) };
            self.scanned = last.offset;
            for e in &batch {
                let created = e.source == OWN_SOURCE && e.kind == "session.created";
                let result = e.source != OWN_SOURCE && e.kind == "verification.status_updated";
                if !created && !result {
                    continue;
                }
                match LogEvent::from_entry(e) {
                    Ok(LogEvent::Own(OwnEvent::SessionCreated(s))) if self.providers.get(&s.provider).is_some() => {
                        self.pending.entry((s.tenant, s.session_id)).or_insert(Pending {
                            provider: s.provider,
                            created_us: e.appended_at_us,
                            last_poll_us: 0,
                        });
                    }
                    Ok(LogEvent::Provider(p)) if is_result(&p) => {
                        if let Some(sid) = &p.session_id {
                            self.pending.remove(&(p.tenant.clone(), sid.clone()));
                        }
                    }
                    _ => {}
                }
            }
            metrics::gauge!("idstream_reconcile_pending").set(self.pending.len() as f64);
        }
    }

    async fn poll_due(&mut self) -> Result<(), LogError> {
        let now = now_us();
        let after = self.cfg.reconcile_after_secs as i64 * 1_000_000;
        let every = self.cfg.reconcile_interval_secs as i64 * 1_000_000;
        let max_age = self.cfg.reconcile_max_age_secs as i64 * 1_000_000;
        let due: Vec<(String, String)> = self
            .pending
            .iter()
            .filter(|((_, session), p)| {
                now - p.created_us >= after && now - p.last_poll_us >= every && self.owner.owns(session)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let p = self.pending.get_mut(&key).expect("due keys are pending");
            if now - p.created_us > max_age {
                tracing::info!(session_id = %key.1, "no result within reconcile_max_age_secs; no longer polled");
                self.pending.remove(&key);
                continue;
            }
            p.last_poll_us = now;
            let Some(client) = self.providers.get(&p.provider).cloned() else {
                self.pending.remove(&key);
                continue;
            };
            if !super::didit::valid_session_id(&key.1) {
                self.pending.remove(&key);
                continue;
            }
            let outcome = match client.get_decision(&key.1).await {
                Ok(decision) => match store_polled(self.log.as_ref(), &client, &decision).await? {
                    Recovered::NoResult => "no_result",
                    Recovered::Stored(a) => {
                        tracing::info!(provider = %client.id, session_id = %key.1, offset = a.offset, "recovered a result no webhook brought");
                        metrics::counter!("idstream_reconcile_recovered_total", "provider" => client.id.clone())
                            .increment(1);
                        self.pending.remove(&key);
                        "recovered"
                    }
                    Recovered::AlreadyStored(_) => {
                        self.pending.remove(&key);
                        "already_stored"
                    }
                },
                Err(ProviderError::Rejected { status: 404, .. }) => {
                    tracing::warn!(provider = %client.id, session_id = %key.1, "the provider no longer knows the session; no longer polled");
                    self.pending.remove(&key);
                    "gone"
                }
                Err(e) => {
                    tracing::warn!(provider = %client.id, session_id = %key.1, error = %e, "reconciliation poll failed; will retry");
                    "error"
                }
            };
            metrics::counter!("idstream_reconcile_polls_total", "provider" => client.id.clone(), "outcome" => outcome)
                .increment(1);
        }
        metrics::gauge!("idstream_reconcile_pending").set(self.pending.len() as f64);
        Ok(())
    }
}

fn is_result(e: &IdentityEvent) -> bool {
    e.provider_status.as_deref().is_some_and(|s| DIDIT_RESULT_STATUSES.contains(&s))
}
