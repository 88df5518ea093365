//! The decision worker: reads verification events from the log in order, enriches each, runs
//! the tenant's active ruleset and commits the result.
//!
//! For a batch of entries after its checkpoint the worker builds one [`Txn`]: per decided event
//! the decision, the session's new state, a review case when the outcome is `review`, the
//! identity observations (keyed hashes, for velocity), a `decision.made` entry (and
//! `review.opened`), and at the end its new checkpoint. One commit: a crash anywhere replays the
//! batch from the old checkpoint, and nothing of it was stored, so no decision is lost or made
//! twice (the decisions table is also unique on the event id, and `decision.made` entries carry
//! the event as their dedupe key).
//!
//! Events of one session are decided in log order because the worker is sequential. Within a
//! batch, later events see the earlier ones' effects (history, velocity) through an overlay of
//! what the batch has not committed yet. A batch is decided while the one before it commits;
//! when its lookups' snapshot does not hold that commit yet, it reads that batch's overlay too,
//! and it is committed only after that batch is stored (dropped if that commit fails).
//!
//! A provider result that only reports an analyst's resolution back (the echo of a push-back,
//! [`review::is_echo`]) updates the session's provider status and is not decided: the
//! analyst's decision stays the session's last.

pub mod backtest;
pub mod normalize;
pub mod partitions;
pub mod review;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use idstream_core::event::{IdentityEvent, Status};
use idstream_rules::context::{BlocklistHits, History, Velocity};
use idstream_rules::{Context, Decision, Enrichment, Outcome, Ruleset};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::domain::SessionState;
use crate::events::{DecisionMade, LogEvent, OwnEvent};
use crate::log::{EventLog, LogEntry, ReadFilter};
use crate::store::*;
use crate::util::{now_us, Backoff};
use normalize::HashKey;

/// The decision worker's checkpoint name.
pub const CONSUMER: &str = "decisions";
/// Log entries read per batch. A behind worker catches up in fewer, larger commits (2,048 vs
/// 512: decided within 1 s of the ack at full ingest in 3 of 3 runs vs 0 of 3, BENCHMARKS.md);
/// a worker that keeps up reads what is new, usually far less.
const BATCH: usize = 2048;
/// A partition's worker stores its checkpoint at least this often (entries), even when none of
/// them was its to decide.
const IDLE_CHECKPOINT: u64 = 20_000;

/// The decision partition of a session (stable across nodes and versions: FNV-1a).
pub fn partition_of(session: &str, count: u32) -> u32 {
    (crate::util::fnv1a(session) % u64::from(count.max(1))) as u32
}

/// The active ruleset of each tenant; tenants without one use the shipped default.
pub struct Rulesets {
    default: Arc<Ruleset>,
    active: RwLock<HashMap<String, Arc<Ruleset>>>,
}

impl Rulesets {
    /// Loads every tenant's active ruleset from the store.
    pub async fn load(store: &dyn Store) -> anyhow::Result<Rulesets> {
        let mut active = HashMap::new();
        for (tenant, a) in store.active_rulesets().await? {
            let rec = store
                .ruleset(&tenant, &a.version)
                .await?
                .ok_or_else(|| anyhow::anyhow!("tenant `{tenant}`: active ruleset {} is not stored", a.version))?;
            let rs = Ruleset::parse(&format!("ruleset {}", a.version), &rec.text).map_err(|errs| {
                anyhow::anyhow!(
                    "tenant `{tenant}`: the active ruleset no longer validates: {}",
                    errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                )
            })?;
            active.insert(tenant, Arc::new(rs));
        }
        Ok(Rulesets { default: Arc::new(Ruleset::default_ruleset()), active: RwLock::new(active) })
    }

    /// Only the shipped default.
    pub fn default_only() -> Rulesets {
        Rulesets { default: Arc::new(Ruleset::default_ruleset()), active: RwLock::new(HashMap::new()) }
    }

    pub fn for_tenant(&self, tenant: &str) -> Arc<Ruleset> {
        self.active.read().expect("rulesets lock").get(tenant).cloned().unwrap_or_else(|| self.default.clone())
    }

    pub fn set(&self, tenant: &str, rs: Arc<Ruleset>) {
        self.active.write().expect("rulesets lock").insert(tenant.to_owned(), rs);
    }

    pub fn default_ruleset(&self) -> &Arc<Ruleset> {
        &self.default
    }
}

/// Settings of the decision worker.
#[derive(Debug, Clone)]
pub struct DecideOptions {
    pub velocity_window: Duration,
    /// Configured lists (`high_risk_countries`, ...), overriding the ruleset's defaults.
    pub lists: BTreeMap<String, Vec<String>>,
}

/// How far each of this node's decision workers has read (consumer → offset), for readiness
/// checks, tests and metrics.
#[derive(Default)]
pub struct Progress {
    positions: std::sync::Mutex<HashMap<String, u64>>,
}

impl Progress {
    fn set(&self, consumer: &str, pos: u64) {
        self.positions.lock().expect("progress lock").insert(consumer.to_owned(), pos);
    }

    fn remove(&self, consumer: &str) {
        self.positions.lock().expect("progress lock").remove(consumer);
    }

    /// Whether `workers` workers run here and all have read through `offset`.
    pub fn caught_up(&self, workers: usize, offset: u64) -> bool {
        let p = self.positions.lock().expect("progress lock");
        p.len() == workers && p.values().all(|&v| v >= offset)
    }
}

pub struct Decider {
    pub progress: Arc<Progress>,
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn Store>,
    pub rulesets: Arc<Rulesets>,
    pub key: HashKey,
    pub opts: DecideOptions,
}

/// A committed batch's entries being appended to the log, and the batch's last offset.
struct Publishing {
    task: tokio::task::JoinHandle<()>,
    last: u64,
}

/// A batch's commit, running while the next batch is read, looked up and decided.
struct Committing {
    task: tokio::task::JoinHandle<Result<Staged, TxnError>>,
    /// The batch's last offset (its checkpoint).
    last: u64,
    /// What the batch decided: the next batch's lookups may not see it yet.
    overlay: Arc<Overlay>,
    /// `(appended_at_us, outcome)` per decision, counted once committed.
    decided: Vec<(i64, &'static str)>,
}

/// How waiting for a batch's commit ended.
enum Settled {
    Done,
    /// The commit failed: go on from this stored checkpoint.
    Retry(u64),
    Stopped,
}

/// What a batch has decided but not committed yet, so later events in it see it. `carried`:
/// the batch before's own overlay, while its commit is not in the snapshot this batch's lookups
/// read (the batch's own entries override it, as within one batch).
#[derive(Default)]
struct Overlay {
    observations: Vec<Observation>,
    /// (tenant, session) → (subject, latest outcome)
    sessions: HashMap<(String, String), (String, Option<Outcome>)>,
    /// (tenant, session) → index in the txn's ops of the session's latest update.
    last_update: HashMap<(String, String), usize>,
    /// (tenant, session) → the review case the batch opened (`None`: it closed one).
    reviews: HashMap<(String, String), Option<ReviewRecord>>,
    carried: Option<Arc<Overlay>>,
}

impl Overlay {
    /// The session's latest decided state if the batch or the carried one decided it, else
    /// what the batch noted of it.
    fn session(&self, key: &(String, String)) -> Option<&(String, Option<Outcome>)> {
        let own = self.sessions.get(key);
        if own.is_some_and(|(_, o)| o.is_some()) {
            return own;
        }
        self.carried.as_ref().and_then(|c| c.sessions.get(key)).filter(|(_, o)| o.is_some()).or(own)
    }

    fn review(&self, key: &(String, String)) -> Option<&Option<ReviewRecord>> {
        self.reviews.get(key).or_else(|| self.carried.as_ref()?.reviews.get(key))
    }

    /// Notes a session the batch updates without deciding it (a decision noted stays).
    fn note_session(&mut self, key: (String, String), subject: String) {
        self.sessions.entry(key).or_insert((subject, None));
    }

    /// Every session noted: the carried ones first, then the batch's own (newer; an entry
    /// without an outcome does not hide an earlier one, as the store keeps it too).
    fn all_sessions(&self) -> impl Iterator<Item = (&(String, String), &(String, Option<Outcome>))> {
        self.carried.iter().flat_map(|c| c.sessions.iter()).chain(self.sessions.iter())
    }

    fn all_observations(&self) -> impl Iterator<Item = &Observation> {
        self.carried.iter().flat_map(|c| c.observations.iter()).chain(self.observations.iter())
    }
}

/// A decided batch, not committed yet.
struct Prepared {
    txn: Txn,
    overlay: Overlay,
    decided: Vec<(i64, &'static str)>,
}

/// The `decision.made` event of a decision (compact: the full inputs are in the store).
pub fn decision_made(d: &DecisionRecord, review_id: Option<&str>) -> OwnEvent {
    let fired: Vec<String> = d.detail["fired"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["rule_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    OwnEvent::DecisionMade(DecisionMade {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: d.tenant.clone(),
        decision_id: d.id.clone(),
        session_id: d.session_id.clone(),
        subject: d.subject.clone(),
        outcome: d.outcome,
        score: d.score,
        reasons: d.reasons.clone(),
        fired,
        ruleset_version: d.ruleset_version.clone(),
        event_id: d.event_id.clone(),
        event_offset: d.event_offset,
        decided_by: d.decided_by.clone(),
        decided_at: idstream_core::event::rfc3339_us(d.decided_at_us),
        review_id: review_id.map(str::to_owned),
    })
}

/// idstream's session state for a provider status that does not call for a decision.
fn undecided_state(s: Status) -> Option<SessionState> {
    Some(match s {
        Status::NotStarted | Status::InProgress | Status::AwaitingUser => SessionState::InProgress,
        Status::Resubmitted => SessionState::Resubmitted,
        Status::Abandoned => SessionState::Abandoned,
        Status::Expired => SessionState::Expired,
        Status::Approved | Status::Declined | Status::InReview => return None,
    })
}

impl Decider {
    /// Runs until `stop` over the whole log (one node); errors (the log unavailable) are retried
    /// with back-off, never skipped.
    pub async fn run(self, stop: CancellationToken) {
        self.run_scope(CONSUMER, None, stop).await
    }

    /// Reads this consumer's checkpoint, retrying until it is readable; `None` when stopped.
    async fn load_checkpoint(&self, consumer: &str, stop: &CancellationToken) -> Option<u64> {
        loop {
            match self.store.checkpoint(consumer).await {
                Ok(p) => return Some(p.unwrap_or(0)),
                Err(e) => {
                    tracing::warn!(error = %e, consumer, "decision worker cannot read its checkpoint; retrying");
                    tokio::select! { _ = stop.cancelled() => return None, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                }
            }
        }
    }

    /// Runs until `stop` as checkpoint `consumer`, deciding only the sessions of `partition`
    /// (`(n, count)`: sessions whose [`partition_of`] is `n`), or all when `None`.
    pub async fn run_scope(self, consumer: &str, partition: Option<(u32, u32)>, stop: CancellationToken) {
        let Some(pos) = self.load_checkpoint(consumer, &stop).await else { return };
        self.progress.set(consumer, pos);
        // Forget this worker's position when it stops (a partition handed to another node).
        struct Forget<'a>(&'a Progress, &'a str);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.remove(self.1);
            }
        }
        let _forget = Forget(&self.progress, consumer);
        let (mut committing, mut publishing) = (None, None);
        self.decide_from(pos, consumer, partition, &stop, &mut committing, &mut publishing).await;
        // Stopping: the last batch is committed and its entries reach the log before the worker
        // lets go. (A failed commit is decided again by whoever runs this consumer next.)
        if let Some(c) = committing.take() {
            if let Err(e) = self.finish(consumer, c, &mut publishing).await {
                tracing::warn!(error = %e, consumer, "last decision batch not committed; it will be decided again");
            }
        }
        self.published(consumer, &mut publishing).await;
    }

    /// Waits for a batch's commit; once stored, its entries are appended to the log (after the
    /// batch before's) in a task of their own.
    async fn finish(&self, consumer: &str, c: Committing, publishing: &mut Option<Publishing>) -> Result<(), TxnError> {
        let staged = c.task.await.unwrap_or_else(|e| {
            Err(TxnError::Store(StoreError::Unavailable(format!("decision commit task failed: {e}"))))
        })?;
        let now = now_us();
        for (appended_at, outcome) in c.decided {
            metrics::counter!("idstream_decisions_total", "outcome" => outcome).increment(1);
            metrics::histogram!("idstream_decision_latency_seconds").record((now - appended_at) as f64 / 1e6);
        }
        // The previous batch's entries first: then this batch's may follow them.
        self.published(consumer, publishing).await;
        if staged.is_empty() {
            self.progress.set(consumer, c.last);
        } else {
            let store = self.store.clone();
            let task = tokio::spawn(async move {
                let started = Instant::now();
                if let Err(e) = store.publish(staged).await {
                    // Committed all the same: the outbox relay appends them later.
                    tracing::warn!(error = %e, "decision entries not appended yet; the outbox relay will");
                }
                metrics::histogram!("idstream_decision_batch_seconds", "phase" => "publish")
                    .record(started.elapsed().as_secs_f64());
            });
            *publishing = Some(Publishing { task, last: c.last });
        }
        Ok(())
    }

    /// Waits for the batch in flight, if any, to commit. On failure, after the back-off, the
    /// stored checkpoint to go on from: the batches decided after it assumed it stored and are
    /// dropped.
    async fn settle(
        &self,
        consumer: &str,
        committing: &mut Option<Committing>,
        publishing: &mut Option<Publishing>,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Settled {
        let Some(c) = committing.take() else { return Settled::Done };
        match self.finish(consumer, c, publishing).await {
            Ok(()) => Settled::Done,
            Err(e) => {
                tracing::warn!(error = %e, consumer, "decision batch not committed; it will be retried");
                tokio::select! { _ = stop.cancelled() => return Settled::Stopped, _ = tokio::time::sleep(backoff.next_wait()) => {} }
                // Another node may have moved the checkpoint (a partition taken over): go on
                // from what is stored, never from what this worker assumed.
                match self.load_checkpoint(consumer, stop).await {
                    Some(p) => Settled::Retry(p),
                    None => Settled::Stopped,
                }
            }
        }
    }

    /// Waits until the last batch's entries are in the log (or left to the outbox relay), then
    /// reports its position: [`Progress`] only counts batches whose entries can be read.
    async fn published(&self, consumer: &str, publishing: &mut Option<Publishing>) {
        if let Some(p) = publishing.take() {
            // A panic in the append is the append's to report; the entries stay in the outbox.
            let _ = p.task.await;
            self.progress.set(consumer, p.last);
        }
    }

    /// The worker's loop from `pos` until `stop`, in three stages that overlap: while batch N+1
    /// is read, looked up and decided, batch N commits, and batch N-1's entries are appended to
    /// the log. N+1 is sent to the store only once N is stored (and is dropped if N fails), and
    /// its entries are appended only after N's, so batches are stored and reach the log in
    /// order. N+1's lookups may not see N yet: then it reads N's overlay as its own (the
    /// snapshot's checkpoint says which, [`Store::lookup_at`]).
    async fn decide_from(
        &self,
        mut pos: u64,
        consumer: &str,
        partition: Option<(u32, u32)>,
        stop: &CancellationToken,
        committing: &mut Option<Committing>,
        publishing: &mut Option<Publishing>,
    ) {
        let mut head = self.log.subscribe();
        // With a partition, batches with nothing to decide only move `pos` in memory; the
        // checkpoint follows with the next decision (or every `IDLE_CHECKPOINT` entries).
        let mut committed = pos;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // Waits for the batch in flight; on failure, goes on from the stored checkpoint.
        macro_rules! settle {
            () => {
                match self.settle(consumer, committing, publishing, &mut backoff, stop).await {
                    Settled::Done => {}
                    Settled::Retry(p) => {
                        pos = p;
                        committed = p;
                        continue;
                    }
                    Settled::Stopped => return,
                }
            };
        }
        loop {
            if stop.is_cancelled() {
                return;
            }
            let read_started = Instant::now();
            let entries = match self.log.read(pos, BATCH, &ReadFilter::default()).await {
                Ok(e) => {
                    if !e.is_empty() {
                        metrics::histogram!("idstream_decision_batch_seconds", "phase" => "read")
                            .record(read_started.elapsed().as_secs_f64());
                    }
                    e
                }
                Err(e) => {
                    tracing::warn!(error = %e, "decision worker cannot read the log; retrying");
                    settle!();
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff.next_wait()) => {} }
                    continue;
                }
            };
            let Some(last) = entries.last().map(|e| e.offset) else {
                // Nothing new: finish the last commit and append before waiting (readiness,
                // tests and a stopping node see every decision's entries once the worker is idle).
                settle!();
                self.published(consumer, publishing).await;
                head.mark_unchanged();
                if self.log.head() > pos {
                    continue;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = head.changed() => if r.is_err() { return },
                }
                continue;
            };
            // A ruleset activation applies to the entries after it: a batch ends at one.
            let mut entries = entries;
            match entries.iter().position(|e| e.kind == "ruleset.activated") {
                Some(0) => {
                    if let Err(e) = self.reload_ruleset(&entries[0]).await {
                        tracing::warn!(error = %e, "decision worker cannot load an activated ruleset; retrying");
                        settle!();
                        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff.next_wait()) => {} }
                        continue;
                    }
                    entries.truncate(1);
                }
                Some(i) => entries.truncate(i),
                None => {}
            }
            let last = entries.last().map_or(last, |e| e.offset);
            // This worker's sessions only (no copy: the batch is ours).
            let mut mine = entries;
            if let Some((n, count)) = partition {
                mine.retain(|e| partition_of(&e.partition_key, count) == n);
            }
            let decidable = mine.iter().any(|e| e.kind.starts_with("verification."));
            if partition.is_some() && !decidable && last - committed < IDLE_CHECKPOINT {
                settle!();
                pos = last;
                self.published(consumer, publishing).await;
                self.progress.set(consumer, pos);
                continue;
            }
            let before = committing.as_ref().map(|c| (c.overlay.clone(), c.last));
            match self.prepare(&mine, consumer, before).await {
                Ok(prepared) => {
                    // Sent only once the batch before is stored: it was decided assuming so.
                    settle!();
                    backoff.reset();
                    pos = last;
                    committed = last;
                    let Prepared { mut txn, mut overlay, decided } = prepared;
                    txn.ops.push(Op::SetCheckpoint { consumer: consumer.to_owned(), offset: last });
                    overlay.carried = None;
                    let store = self.store.clone();
                    let task = tokio::spawn(async move {
                        let started = Instant::now();
                        let staged = store.commit_staged(txn).await;
                        metrics::histogram!("idstream_decision_batch_seconds", "phase" => "commit")
                            .record(started.elapsed().as_secs_f64());
                        staged
                    });
                    *committing = Some(Committing { task, last, overlay: Arc::new(overlay), decided });
                }
                Err(e) => {
                    tracing::warn!(error = %e, consumer, "decision batch not decided (lookups failed); it will be retried");
                    settle!();
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff.next_wait()) => {} }
                    let Some(p) = self.load_checkpoint(consumer, stop).await else { return };
                    pos = p;
                    committed = p;
                }
            }
        }
    }

    /// Makes the ruleset a `ruleset.activated` entry names the tenant's active one (also when
    /// another node activated it).
    async fn reload_ruleset(&self, e: &LogEntry) -> anyhow::Result<()> {
        let LogEvent::Own(OwnEvent::RulesetActivated(activated)) = LogEvent::from_entry(e)? else {
            anyhow::bail!("entry {} is not a ruleset.activated event", e.offset)
        };
        let version = activated.version.as_str();
        let rec = self
            .store
            .ruleset(&e.tenant, version)
            .await?
            .ok_or_else(|| anyhow::anyhow!("tenant `{}`: activated ruleset {version} is not stored", e.tenant))?;
        let rs = Ruleset::parse(&format!("ruleset {version}"), &rec.text).map_err(|errs| {
            anyhow::anyhow!(
                "ruleset {version}: {}",
                errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            )
        })?;
        self.rulesets.set(&e.tenant, Arc::new(rs));
        Ok(())
    }

    /// Decides a batch (its commit is the caller's). The enrichment lookups of the whole batch
    /// are one read; the decisions are then made in log order against those results plus the
    /// batch's own overlay, and `before`'s (the batch committing meanwhile, with its last
    /// offset) when the read's snapshot does not hold that commit yet.
    async fn prepare(
        &self,
        entries: &[LogEntry],
        consumer: &str,
        before: Option<(Arc<Overlay>, u64)>,
    ) -> Result<Prepared, TxnError> {
        let mut txn = Txn::default();
        let mut overlay = Overlay::default();
        let mut decided: Vec<(i64, &'static str)> = Vec::new();
        let mut items: Vec<(&LogEntry, IdentityEvent, String, Option<LookupRequest>)> = Vec::new();
        for e in entries {
            if !e.kind.starts_with("verification.") {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<IdentityEvent>(&e.event) else {
                tracing::warn!(offset = e.offset, "log entry is not an identity event; skipped by the decision worker");
                continue;
            };
            let Some(status) = event.status else { continue };
            let session_id = event.partition_key().to_owned();
            // Decided events need the whole enrichment; a session that ended without a result
            // needs its open review case (closed as superseded).
            let lookup = undecided_state(status).is_none_or(SessionState::is_final_without_result);
            let req = lookup.then(|| self.request(&event, &session_id));
            items.push((e, event, session_id, req));
        }
        let reqs: Vec<LookupRequest> = items.iter().filter_map(|i| i.3.clone()).collect();
        let mut found = if reqs.is_empty() {
            Vec::new()
        } else {
            let started = Instant::now();
            let (found, at) = self.store.lookup_at(reqs, consumer).await?;
            metrics::histogram!("idstream_decision_batch_seconds", "phase" => "lookup")
                .record(started.elapsed().as_secs_f64());
            if let Some((before, before_last)) = before {
                if at.unwrap_or(0) < before_last {
                    metrics::counter!("idstream_decision_batches_carried_total").increment(1);
                    overlay.carried = Some(before);
                }
            }
            found
        }
        .into_iter();
        for (e, event, session_id, req) in items {
            let looked_up = req.as_ref().map(|_| found.next().expect("one lookup result per request"));
            if let Some(state) = event.status.and_then(undecided_state) {
                let subject = event.subject.clone().unwrap_or_else(|| format!("session:{session_id}"));
                let key = (event.tenant.clone(), session_id.clone());
                overlay.note_session(key.clone(), subject);
                let update = Op::UpsertSession(SessionUpdate {
                    tenant: event.tenant.clone(),
                    session_id,
                    subject: event.subject.clone(),
                    provider_status: event.provider_status.clone(),
                    state,
                    decision: None,
                    now_us: now_us(),
                });
                // Consecutive undecided updates of one session in a batch: only the last counts.
                match overlay.last_update.get(&key) {
                    Some(&i) if matches!(&txn.ops[i], Op::UpsertSession(u) if u.decision.is_none()) => {
                        txn.ops[i] = update
                    }
                    _ => {
                        overlay.last_update.insert(key.clone(), txn.ops.len());
                        txn.ops.push(update);
                    }
                }
                // Abandoned or expired: no result will come, so its case (open, or claimed by
                // an analyst waiting for one) is closed as superseded.
                if let Some(found) = looked_up.filter(|_| state.is_final_without_result()) {
                    let open = match overlay.review(&key) {
                        Some(r) => r.clone(),
                        None => found.open_review,
                    };
                    if let Some(r) = open {
                        let note = format!("superseded: the session {}", state.as_str());
                        let entry = close_review(r, None, note, now_us(), &mut txn);
                        txn.entries.push(entry.to_entry());
                        overlay.reviews.insert(key, None);
                    }
                }
                continue;
            }
            let (req, looked_up) = (req.expect("decided events are looked up"), looked_up.expect("looked up"));
            // The provider reporting an analyst's resolution back (review::is_echo): recorded,
            // never decided again. A decision this batch made for the session is newer than the
            // stored one the lookup saw, so then it is no echo.
            let key = (event.tenant.clone(), session_id.clone());
            let decided_in_batch = overlay.session(&key).is_some_and(|(_, o)| o.is_some());
            let echo = event.status.is_some_and(|s| review::is_echo(s, looked_up.session_decision.as_ref()));
            if echo && !decided_in_batch {
                let analyst = looked_up.session_decision.as_ref().expect("an echo has a decision").outcome;
                overlay.last_update.insert(key, txn.ops.len());
                txn.ops.push(Op::UpsertSession(SessionUpdate {
                    tenant: event.tenant.clone(),
                    session_id,
                    subject: event.subject.clone(),
                    provider_status: event.provider_status.clone(),
                    state: SessionState::of(analyst),
                    decision: None,
                    now_us: now_us(),
                }));
                metrics::counter!("idstream_decisions_echo_total").increment(1);
                tracing::debug!(offset = e.offset, "provider result echoes an analyst's resolution; not decided again");
                continue;
            }
            let outcome = self.decide(e, &event, &session_id, req, looked_up, &mut txn, &mut overlay);
            decided.push((e.appended_at_us, outcome));
        }
        Ok(Prepared { txn, overlay, decided })
    }

    /// What to look up for deciding `event`.
    fn request(&self, event: &IdentityEvent, session_id: &str) -> LookupRequest {
        // Velocity counts subjects; a session without one stands for its own subject.
        let subject = event.subject.clone().unwrap_or_else(|| format!("session:{session_id}"));
        let values = self.identity_values(event);
        let block_hashes: Vec<(BlocklistKind, String)> =
            values.iter().flat_map(|(kind, hashes)| hashes.iter().map(move |h| (*kind, h.clone()))).collect();
        // Velocity uses one hash per kind: for documents, the country-independent one.
        let velocity_hashes: Vec<(BlocklistKind, String)> =
            values.iter().filter_map(|(kind, hashes)| hashes.last().map(|h| (*kind, h.clone()))).collect();
        LookupRequest {
            tenant: event.tenant.clone(),
            session_id: session_id.to_owned(),
            subject,
            block_hashes,
            velocity_hashes,
            velocity_since_us: now_us() - self.opts.velocity_window.as_micros() as i64,
            subject_id: event.subject.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        e: &LogEntry,
        event: &IdentityEvent,
        session_id: &str,
        req: LookupRequest,
        found: LookupResult,
        txn: &mut Txn,
        overlay: &mut Overlay,
    ) -> &'static str {
        let started = Instant::now();
        let tenant = &event.tenant;
        let subject = req.subject;
        let velocity_hashes = req.velocity_hashes;
        // Every hash a value is known by is observed: velocity reads the country-independent
        // document hash, a blocklist re-check the one its entry was added with.
        let observed_hashes = req.block_hashes;
        let now = now_us();

        // History: stored sessions, overridden by this batch's.
        let mut others: HashMap<String, Option<Outcome>> = found.other_sessions.into_iter().collect();
        for ((t, s), (subj, outcome)) in overlay.all_sessions() {
            if t == tenant && subj == &subject && s != session_id {
                match outcome {
                    Some(_) => {
                        others.insert(s.clone(), *outcome);
                    }
                    // Updated without a decision: the session keeps its stored outcome.
                    None => {
                        others.entry(s.clone()).or_insert(None);
                    }
                }
            }
        }
        let count = |o: Outcome| others.values().filter(|x| **x == Some(o)).count() as i64;
        let history = History {
            previous_sessions: others.len() as i64,
            previous_declines: count(Outcome::Decline),
            previous_approvals: count(Outcome::Approve),
        };
        let mut velocity = Velocity::default();
        for (kind, subjects) in &found.velocity {
            let hash = &velocity_hashes.iter().find(|(k, _)| k == kind).expect("asked for").1;
            let mut set: HashSet<&str> = subjects.iter().map(String::as_str).collect();
            for o in overlay.all_observations() {
                if &o.tenant == tenant && &o.kind == kind && &o.hash == hash && o.subject != subject {
                    set.insert(&o.subject);
                }
            }
            let n = set.len() as i64;
            match kind {
                BlocklistKind::Document => velocity.document_subjects = n,
                BlocklistKind::Phone => velocity.phone_subjects = n,
                BlocklistKind::Email => velocity.email_subjects = n,
                BlocklistKind::Face => velocity.face_subjects = n,
            }
        }
        let hit = |k: BlocklistKind| found.blocked.contains(&k);
        let enrichment = Enrichment {
            subject: match found.subject_attributes {
                Some(Value::Object(m)) => m.into_iter().collect(),
                _ => BTreeMap::new(),
            },
            history,
            velocity,
            blocklist: BlocklistHits {
                document: hit(BlocklistKind::Document),
                phone: hit(BlocklistKind::Phone),
                email: hit(BlocklistKind::Email),
                face: hit(BlocklistKind::Face),
            },
            lists: self.opts.lists.clone(),
        };
        let ruleset = self.rulesets.for_tenant(tenant);
        let ctx = Context::from_event(event, now / 1_000_000, &enrichment);
        let decision = ruleset.evaluate(&ctx);
        let outcome = decision.outcome;
        let record = decision_record(tenant, session_id, event, e, decision, &ctx, now);
        metrics::histogram!("idstream_decision_eval_seconds").record(started.elapsed().as_secs_f64());

        let observed: Vec<Observation> = observed_hashes
            .into_iter()
            .map(|(kind, hash)| Observation {
                tenant: tenant.clone(),
                kind,
                hash,
                subject: subject.clone(),
                session_id: session_id.to_owned(),
                seen_at_us: now,
            })
            .collect();
        overlay.observations.extend(observed.iter().cloned());
        txn.ops.push(Op::Observe(observed));
        overlay.sessions.insert((tenant.clone(), session_id.to_owned()), (subject.clone(), Some(outcome)));
        overlay.last_update.insert((tenant.clone(), session_id.to_owned()), txn.ops.len());
        txn.ops.push(Op::UpsertSession(SessionUpdate {
            tenant: tenant.clone(),
            session_id: session_id.to_owned(),
            subject: Some(subject),
            provider_status: event.provider_status.clone(),
            state: SessionState::of(outcome),
            decision: Some((outcome, record.id.clone())),
            now_us: now,
        }));
        // One open case per session: a later `review` keeps the open case; a later approve or
        // decline (the provider's own reviewer finished, say) closes it as superseded.
        let key = (tenant.clone(), session_id.to_owned());
        let open = match overlay.review(&key) {
            Some(r) => r.clone(),
            None => found.open_review,
        };
        let mut review_entries = Vec::new();
        let review_id = match (outcome, open) {
            (Outcome::Review, Some(r)) => Some(r.id),
            (Outcome::Review, None) => {
                let review = ReviewRecord::open(
                    uuid::Uuid::now_v7().to_string(),
                    tenant.clone(),
                    session_id.to_owned(),
                    record.subject.clone(),
                    record.id.clone(),
                    record.reasons.clone(),
                    now,
                );
                review_entries.push(review::changed(&review, None));
                txn.ops.push(Op::OpenReview(review.clone()));
                let id = review.id.clone();
                overlay.reviews.insert(key, Some(review));
                Some(id)
            }
            // An analyst is working on it: their resolution stands; the new decision is recorded
            // and the case stays with them.
            (_, Some(r)) if r.status == ReviewStatus::Claimed => Some(r.id),
            (_, Some(r)) => {
                let note = format!("superseded by decision {} ({})", record.id, outcome.as_str());
                review_entries.push(close_review(r, Some(outcome), note, now, txn));
                overlay.reviews.insert(key, None);
                None
            }
            (_, None) => None,
        };
        txn.entries.push(decision_made(&record, review_id.as_deref()).to_entry());
        txn.entries.extend(review_entries.iter().map(OwnEvent::to_entry));
        txn.ops.push(Op::PutDecision(record));
        outcome.as_str()
    }

    /// The keyed hashes of the session's identity values, per kind. For documents: the
    /// country-specific hash (when the country is known) and then the any-country one.
    fn identity_values(&self, event: &IdentityEvent) -> Vec<(BlocklistKind, Vec<String>)> {
        let mut out = Vec::new();
        let c = &event.checks;
        if let Some(doc) = c.documents.iter().find(|d| d.document_number.is_some()) {
            let number = doc.document_number.as_deref().unwrap_or_default();
            let mut hashes = Vec::new();
            if let Some(country) = doc.issuing_state.as_deref() {
                if let Ok(h) = self.key.value_hash("document", number, Some(country)) {
                    hashes.push(h);
                }
            }
            if let Ok(h) = self.key.value_hash("document", number, None) {
                hashes.push(h);
            }
            if !hashes.is_empty() {
                out.push((BlocklistKind::Document, hashes));
            }
        }
        let mut one = |kind: BlocklistKind, value: Option<&str>| {
            if let Some(h) = value.and_then(|v| self.key.value_hash(kind.as_str(), v, None).ok()) {
                out.push((kind, vec![h]));
            }
        };
        one(BlocklistKind::Phone, c.phone.iter().find_map(|p| p.phone_number.as_deref()));
        one(BlocklistKind::Email, c.email.iter().find_map(|e| e.email.as_deref()));
        one(BlocklistKind::Face, c.liveness.iter().find_map(|l| l.face_id.as_deref()));
        out
    }
}

/// Closes a review case the rules made moot (a later decision, or the session ending without a
/// result), adding the op to `txn`; returns its `review.resolved` event.
fn close_review(mut r: ReviewRecord, outcome: Option<Outcome>, note: String, now: i64, txn: &mut Txn) -> OwnEvent {
    r.status = ReviewStatus::Resolved;
    r.resolved_by = Some("rules".into());
    r.resolved_at_us = Some(now);
    r.outcome = outcome;
    r.note = Some(note.clone());
    txn.ops.push(Op::ResolveReview {
        tenant: r.tenant.clone(),
        id: r.id.clone(),
        actor: "rules".into(),
        outcome,
        note,
        now_us: now,
        force: true,
    });
    review::changed(&r, Some("rules"))
}

fn decision_record(
    tenant: &str,
    session_id: &str,
    event: &IdentityEvent,
    e: &LogEntry,
    decision: Decision,
    ctx: &Context,
    now: i64,
) -> DecisionRecord {
    DecisionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        session_id: session_id.to_owned(),
        subject: event.subject.clone(),
        event_id: Some(e.id.clone()),
        event_offset: Some(e.offset),
        outcome: decision.outcome,
        score: decision.score,
        ruleset_version: Some(decision.ruleset_version.clone()),
        reasons: decision.reasons.clone(),
        decided_by: "rules".into(),
        decided_at_us: now,
        detail: json!({
            "fired": decision.fired,
            "errors": decision.errors,
            "inputs": ctx,
        }),
    }
}
