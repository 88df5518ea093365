//! Outbound notifications: every event of the log that an endpoint asks for is POSTed to it as
//! a Standard Webhooks message, at least once, in log order per session.
//!
//! Each endpoint is its own log consumer (checkpoint `notify:<id>` in the store). Its task reads
//! the tenant's entries after the checkpoint, queues the matching ones per session, and
//! delivers up to `max_in_flight` sessions at once, each session's events one after another
//! (a later event waits until the earlier one was delivered or given up), so a failing session
//! never holds up the others. The checkpoint moves to just below the oldest event not yet
//! finished: a crash or a restart delivers again what was in flight, never less. A disabled
//! endpoint's task stops and its checkpoint stays, so re-enabling it delivers what it missed.
//!
//! [`Notifier::run`] supervises the tasks: it starts one per enabled endpoint (config and API)
//! that this node owns (on the scale-out backends, the node holding the endpoint's decision
//! partition: [`Ownership`]), and restarts one whose definition changed.
//!
//! A replay is an `endpoint.replay_requested` entry in the log. The endpoint's consumer carries
//! it out when it reads that entry: a second consumer over the requested range delivers it
//! again (in order per session, with the same `webhook-id`s) while live deliveries go on, and
//! the endpoint's checkpoint stays below the request until the replay ends, so a crash or a
//! hand-over repeats the replay instead of losing it.
//!
//! Given-up deliveries become `notification.failed` entries; an endpoint answering `410 Gone`,
//! or failing continuously for `disable_after_failing_secs`, is disabled with an
//! `endpoint.disabled` entry (its checkpoint stays: enabling it delivers the backlog).

pub mod config;
pub mod ssrf;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idstream_core::signature::{standard, Secret};
use rand::Rng as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::decide::partitions::Ownership;
use crate::events::{EndpointChanged, EndpointReplay, LogEvent, NotificationFailed, OwnEvent, OWN_SOURCE};
use crate::log::{EventLog, LogEntry, ReadFilter};
use crate::store::notify::{AttemptRecord, EndpointRecord, NotifyOp};
use crate::store::{Op, Store, Txn};
use crate::stream::auth::KindPattern;
use crate::util::now_us;
use config::{EndpointConfig, NotificationsConfig};
use ssrf::{AddressPolicy, GuardedResolver, NameResolver};

/// The checkpoint name of an endpoint.
pub fn consumer(endpoint: &str) -> String {
    format!("notify:{endpoint}")
}

/// The `webhook-id` of an event for an endpoint: the same on every attempt and replay.
pub fn webhook_id(endpoint: &str, event_id: &str) -> String {
    let h = Sha256::digest(format!("{endpoint}\n{event_id}").as_bytes());
    format!("msg_{}", &hex::encode(h)[..32])
}

/// The body of a notification: the typed event under `data`.
pub fn payload(e: &LogEntry) -> Vec<u8> {
    let data: serde_json::Value = serde_json::from_slice(&e.event).unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({
        "type": e.kind,
        "timestamp": idstream_core::event::rfc3339_us(e.appended_at_us),
        "data": data,
    }))
    .expect("a notification serialises")
}

/// A new Standard Webhooks secret.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// How deliveries are made (from `[notifications]`).
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    pub schedule: Vec<Duration>,
    pub max_retry_after: Duration,
    pub max_in_flight: usize,
    pub max_read_ahead: usize,
    pub default_timeout_secs: u64,
    /// Disable an endpoint failing continuously for this long (none: never).
    pub disable_after: Option<Duration>,
}

/// The delivery worker of this node and what the API needs of it.
pub struct Notifier {
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    pub enabled: bool,
    pub opts: NotifyOptions,
    /// Endpoints from the config (read-only through the API).
    pub config_endpoints: Vec<EndpointRecord>,
    pub policy: AddressPolicy,
    resolver: Arc<dyn NameResolver>,
    client: reqwest::Client,
    poke: tokio::sync::Notify,
    /// The endpoints this node delivers.
    owner: Ownership,
    /// Config endpoints disabled (`410 Gone`, failing too long) until restart, and why.
    gone: Mutex<HashMap<String, String>>,
    /// Attempt records on their way to the store, written in batches by [`Notifier::run`]'s
    /// recorder: a delivery's slot is free as soon as the receiver answered (delivery is made
    /// at least once by the checkpoint, not by the record).
    attempts: mpsc::UnboundedSender<AttemptRecord>,
    attempts_rx: Mutex<Option<mpsc::UnboundedReceiver<AttemptRecord>>>,
}

fn config_record(e: &EndpointConfig) -> EndpointRecord {
    EndpointRecord {
        id: e.id.clone(),
        tenant: e.tenant.clone(),
        url: e.url.clone(),
        kinds: e.kinds.clone(),
        secrets: e.secrets.iter().map(|s| s.expose().to_owned()).collect(),
        outcomes: e.filter.as_ref().and_then(|f| f.outcome.clone()),
        timeout_secs: e.timeout_secs.unwrap_or(0),
        headers: e.headers.clone(),
        rate_limit_per_sec: e.rate_limit_per_sec,
        disabled: false,
        disabled_reason: None,
        created_by: "config".into(),
        created_at_us: 0,
        updated_at_us: 0,
    }
}

impl Notifier {
    pub fn new(
        n: &NotificationsConfig,
        endpoints: &[EndpointConfig],
        log: Arc<dyn EventLog>,
        store: Arc<dyn Store>,
        resolver: Arc<dyn NameResolver>,
        owner: Ownership,
    ) -> Notifier {
        let policy = AddressPolicy::from_config(n).expect("validated at config load");
        let (attempts, attempts_rx) = mpsc::unbounded_channel();
        Notifier {
            attempts,
            attempts_rx: Mutex::new(Some(attempts_rx)),
            log,
            store,
            enabled: n.enabled,
            opts: NotifyOptions {
                schedule: n.retry_schedule_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
                max_retry_after: Duration::from_secs(n.max_retry_after_secs),
                max_in_flight: n.max_in_flight,
                max_read_ahead: n.max_read_ahead,
                default_timeout_secs: n.default_timeout_secs,
                disable_after: (n.disable_after_failing_secs > 0)
                    .then(|| Duration::from_secs(n.disable_after_failing_secs)),
            },
            config_endpoints: endpoints.iter().map(config_record).collect(),
            client: ssrf::client(resolver.clone(), policy.clone()),
            policy,
            resolver,
            poke: tokio::sync::Notify::new(),
            owner,
            gone: Mutex::new(HashMap::new()),
        }
    }

    /// The config endpoint with this id.
    pub fn config_endpoint(&self, id: &str) -> Option<&EndpointRecord> {
        self.config_endpoints.iter().find(|e| e.id == id)
    }

    /// Why a config endpoint was disabled (until restart), if it was.
    pub fn is_gone(&self, id: &str) -> Option<String> {
        self.gone.lock().expect("gone lock").get(id).cloned()
    }

    /// Checks an endpoint URL: its form, and the addresses its host resolves to now.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        let u = self.policy.check_url(url)?;
        let host = u.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        if host.parse::<std::net::IpAddr>().is_err() {
            let g = GuardedResolver { inner: self.resolver.clone(), policy: self.policy.clone() };
            if let Err(e) = g.allowed(host).await {
                if e.starts_with("refused") {
                    return Err(format!("is {e}"));
                }
            }
        }
        Ok(())
    }

    /// Applies endpoint changes now instead of within a second.
    pub fn changed(&self) {
        self.poke.notify_one();
    }

    /// Every endpoint, config and API.
    async fn all_endpoints(&self) -> Result<Vec<EndpointRecord>, crate::store::StoreError> {
        let mut all = self.config_endpoints.clone();
        all.extend(self.store.endpoints(None).await?);
        Ok(all)
    }

    /// How many events an endpoint has yet to get (after its checkpoint), counting at most
    /// `cap` and reading at most `10 × cap` of its tenant's entries (a narrow filter over a long
    /// backlog is not scanned to its end on every request); `None` when it has no checkpoint yet.
    pub async fn backlog(&self, rec: &EndpointRecord, cap: u64) -> Result<Option<u64>, crate::log::LogError> {
        let Ok(Some(mut pos)) = self.store.checkpoint(&consumer(&rec.id)).await else { return Ok(None) };
        let ctx = EndpointCtx::new(self, rec.clone());
        let filter = ReadFilter { tenant: Some(rec.tenant.clone()), partition_key: None };
        let (mut n, mut read) = (0, 0);
        while n < cap && read < 10 * cap {
            let batch = self.log.read(pos, 1000, &filter).await?;
            let Some(last) = batch.last() else { break };
            pos = last.offset;
            read += batch.len() as u64;
            n += batch.iter().filter(|e| ctx.wants(e)).count() as u64;
        }
        Ok(Some(n.min(cap)))
    }

    /// Gives every config endpoint without a checkpoint one at the log's head, so an endpoint
    /// added to the config gets every event accepted from this start on (called before the
    /// server listens).
    pub async fn start_new_endpoints(&self) {
        if !self.enabled {
            return;
        }
        for e in &self.config_endpoints {
            match self.store.checkpoint(&consumer(&e.id)).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let op = Op::SetCheckpoint { consumer: consumer(&e.id), offset: self.log.head() };
                    if let Err(err) = self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
                        tracing::warn!(endpoint = %e.id, error = %err, "cannot start the endpoint's checkpoint");
                    }
                }
                Err(err) => tracing::warn!(endpoint = %e.id, error = %err, "cannot read the endpoint's checkpoint"),
            }
        }
    }

    /// Runs the endpoints' tasks until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let recorder_stop = CancellationToken::new();
        let recorder = self
            .attempts_rx
            .lock()
            .expect("attempts lock")
            .take()
            .map(|rx| tokio::spawn(record_attempts(self.store.clone(), rx, recorder_stop.clone())));
        let mut running: HashMap<String, (i64, CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
        let mut owner = self.owner.clone();
        loop {
            match self.all_endpoints().await {
                Ok(eps) => {
                    let gone = self.gone.lock().expect("gone lock").clone();
                    let wanted: HashMap<String, EndpointRecord> = eps
                        .into_iter()
                        .filter(|e| !e.disabled && !gone.contains_key(&e.id) && owner.owns(&e.id))
                        .map(|e| (e.id.clone(), e))
                        .collect();
                    let stale: Vec<String> = running
                        .iter()
                        .filter(|(id, (updated, _, task))| {
                            wanted.get(*id).is_none_or(|e| e.updated_at_us != *updated) || task.is_finished()
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in stale {
                        let (_, token, task) = running.remove(&id).expect("listed");
                        token.cancel();
                        let _ = task.await;
                    }
                    for (id, e) in wanted {
                        if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(id) {
                            let token = stop.child_token();
                            let task = tokio::spawn(self.clone().run_endpoint(e.clone(), token.clone()));
                            slot.insert((e.updated_at_us, token, task));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "notifications: cannot read the endpoints; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.poke.notified() => {}
                _ = owner.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        for (_, (_, token, task)) in running {
            token.cancel();
            let _ = task.await;
        }
        // The deliveries have stopped: the recorder writes what is queued, then ends.
        recorder_stop.cancel();
        if let Some(recorder) = recorder {
            let _ = recorder.await;
        }
    }

    /// The checkpoint of an endpoint; a new one starts at the head.
    async fn start_position(&self, id: &str, stop: &CancellationToken) -> Option<u64> {
        loop {
            match self.store.checkpoint(&consumer(id)).await {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {
                    let head = self.log.head();
                    let op = Op::SetCheckpoint { consumer: consumer(id), offset: head };
                    if self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await.is_ok() {
                        return Some(head);
                    }
                }
                Err(e) => tracing::warn!(endpoint = %id, error = %e, "cannot read the endpoint's checkpoint; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The live consumer of an endpoint: from its checkpoint, following the log.
    async fn run_endpoint(self: Arc<Self>, rec: EndpointRecord, stop: CancellationToken) {
        let Some(start) = self.start_position(&rec.id, &stop).await else { return };
        let ctx = Arc::new(EndpointCtx::new(&self, rec));
        self.consume(ctx, Scope { after: start, through: None, only: None }, stop).await;
    }

    /// A replay: a second consumer over the requested range, ending when it is delivered.
    fn replay_job(
        self: Arc<Self>,
        ctx: Arc<EndpointCtx>,
        r: EndpointReplay,
        request_offset: u64,
        stop: CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let through = r.to_offset.unwrap_or(u64::MAX).min(request_offset - 1);
            // What retention removed is gone: the replay starts at the oldest retained entry.
            let after = r.from_offset.saturating_sub(1).max(self.log.pruned_through());
            let only = if r.failed_only {
                loop {
                    match self.failed_offsets(&ctx.rec.id, after, through).await {
                        Ok(o) => break Some(o),
                        Err(e) => {
                            tracing::warn!(endpoint = %ctx.rec.id, error = %e, "replay: cannot list the given-up deliveries; retrying")
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            } else {
                None
            };
            tracing::info!(endpoint = %ctx.rec.id, from = after + 1, through, failed_only = r.failed_only, actor = %r.actor, "replay started");
            let ended = self.consume(ctx.clone(), Scope { after, through: Some(through), only }, stop).await;
            tracing::info!(endpoint = %ctx.rec.id, ?ended, "replay ended");
        })
    }

    /// The offsets in `(after, through]` whose delivery to `endpoint` was given up.
    async fn failed_offsets(
        &self,
        endpoint: &str,
        after: u64,
        through: u64,
    ) -> Result<HashSet<u64>, crate::store::StoreError> {
        let mut offsets = HashSet::new();
        let mut before = None;
        loop {
            let page = self.store.attempts(endpoint, before, true, 1000).await?;
            offsets.extend(page.iter().map(|a| a.event_offset).filter(|o| *o > after && *o <= through));
            match page.last() {
                Some(last) if page.len() == 1000 => before = Some(last.seq),
                _ => return Ok(offsets),
            }
        }
    }

    /// Delivers an endpoint's matching events in `scope`, each session's in log order, up to
    /// `max_in_flight` sessions at once. The live consumer (no `through`) stores its checkpoint
    /// and starts the replays it reads; a replay ends at `through`.
    async fn consume(self: Arc<Self>, ctx: Arc<EndpointCtx>, scope: Scope, stop: CancellationToken) -> Ended {
        let live = scope.through.is_none();
        let end = scope.through.unwrap_or(u64::MAX);
        let id = ctx.rec.id.clone();
        let mut head = self.log.subscribe();
        let filter = ReadFilter { tenant: Some(ctx.rec.tenant.clone()), partition_key: None };
        let (mut read_pos, mut committed) = (scope.after, scope.after);
        // Offsets read and not yet finished, with the time the log committed them.
        let mut unfinished: BTreeMap<u64, i64> = BTreeMap::new();
        let mut queues: HashMap<String, VecDeque<LogEntry>> = HashMap::new();
        let mut waiting: VecDeque<String> = VecDeque::new();
        // Sessions active or waiting for a slot.
        let mut scheduled: HashSet<String> = HashSet::new();
        let mut active = 0usize;
        // Replays started by this consumer, by the offset of their request.
        let mut replays: BTreeMap<u64, tokio::task::JoinHandle<()>> = BTreeMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, u64, Finished)>();
        let mut tasks = tokio::task::JoinSet::new();
        let mut last_flush = Instant::now();
        let mut ended = Ended::Stopped;
        let backlog = metrics::gauge!("idstream_notification_backlog", "endpoint" => id.clone());
        let oldest = metrics::gauge!("idstream_notification_oldest_undelivered_seconds", "endpoint" => id.clone());
        loop {
            // Finished deliveries.
            while let Ok((session, offset, fin)) = done_rx.try_recv() {
                active -= 1;
                match fin {
                    Finished::Gone => {
                        ended = Ended::Disabled;
                        continue;
                    }
                    Finished::Stopped => continue,
                    Finished::Done => {}
                }
                unfinished.remove(&offset);
                if queues.get(&session).is_some_and(|q| !q.is_empty()) {
                    waiting.push_back(session);
                } else {
                    queues.remove(&session);
                    scheduled.remove(&session);
                }
            }
            while tasks.try_join_next().is_some() {}
            replays.retain(|_, r| !r.is_finished());
            if ended == Ended::Disabled || stop.is_cancelled() {
                break;
            }
            if !live && read_pos >= end && unfinished.is_empty() && active == 0 {
                ended = Ended::Finished;
                break;
            }
            // Read further.
            let snapshot = self.log.head().min(end);
            if unfinished.len() < self.opts.max_read_ahead && snapshot > read_pos {
                match self.log.read(read_pos, 512, &filter).await {
                    Ok(entries) => {
                        let full = entries.len() == 512;
                        for e in entries {
                            if e.offset > end {
                                break;
                            }
                            read_pos = read_pos.max(e.offset);
                            if live && e.source == OWN_SOURCE && e.kind == "endpoint.replay_requested" {
                                if let Ok(LogEvent::Own(OwnEvent::EndpointReplayRequested(r))) =
                                    LogEvent::from_entry(&e)
                                {
                                    if r.endpoint == id {
                                        let job = self.clone().replay_job(ctx.clone(), r, e.offset, stop.child_token());
                                        replays.insert(e.offset, tokio::spawn(job));
                                    }
                                }
                                continue;
                            }
                            if ctx.wants(&e) && scope.only.as_ref().is_none_or(|o| o.contains(&e.offset)) {
                                unfinished.insert(e.offset, e.appended_at_us);
                                let session = e.partition_key.clone();
                                queues.entry(session.clone()).or_default().push_back(e);
                                if scheduled.insert(session.clone()) {
                                    waiting.push_back(session);
                                }
                            }
                        }
                        if !full {
                            read_pos = read_pos.max(snapshot);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %id, error = %e, "notifications: cannot read the log; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            // Start sessions while there is room.
            while active < self.opts.max_in_flight {
                let Some(session) = waiting.pop_front() else { break };
                let entry =
                    queues.get_mut(&session).and_then(VecDeque::pop_front).expect("a waiting session has an entry");
                active += 1;
                let (ctx, stop, done) = (ctx.clone(), stop.clone(), done_tx.clone());
                let this = self.clone();
                tasks.spawn(async move {
                    let offset = entry.offset;
                    let fin = this.deliver(&ctx, entry, &stop).await;
                    let _ = done.send((session, offset, fin));
                });
            }
            // The checkpoint: below the oldest unfinished event and the oldest running replay.
            let done_through = self.done_through(&unfinished, &replays, read_pos);
            if live {
                // At most every 100 ms: the checkpoint bounds redeliveries after a crash, it
                // does not make a delivery.
                if done_through > committed && last_flush.elapsed() >= Duration::from_millis(100) {
                    committed = self.store_checkpoint(&id, done_through, committed).await;
                    last_flush = Instant::now();
                }
                backlog.set((unfinished.len() as u64 + self.log.head().saturating_sub(read_pos)) as f64);
                let age = unfinished.values().next().map_or(0, |at| now_us().saturating_sub(*at));
                oldest.set(age as f64 / 1e6);
            }
            if unfinished.len() < self.opts.max_read_ahead && self.log.head().min(end) > read_pos {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                Some(msg) = done_rx.recv() => {
                    // Put it back for the top of the loop.
                    let _ = done_tx.send(msg);
                }
                _ = head.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)), if live && (done_through > committed || !replays.is_empty()) => {}
            }
        }
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        for (_, r) in std::mem::take(&mut replays) {
            let _ = r.await;
        }
        // What finished before the stop still counts.
        while let Ok((_, offset, fin)) = done_rx.try_recv() {
            if fin == Finished::Done {
                unfinished.remove(&offset);
            }
        }
        if live {
            let done_through = self.done_through(&unfinished, &replays, read_pos);
            if done_through > committed {
                self.store_checkpoint(&id, done_through, committed).await;
            }
        }
        ended
    }

    /// Everything at or below this is finished: below the oldest unfinished event and below
    /// the request of the oldest replay still running (a crash repeats it).
    fn done_through(
        &self,
        unfinished: &BTreeMap<u64, i64>,
        replays: &BTreeMap<u64, tokio::task::JoinHandle<()>>,
        read_pos: u64,
    ) -> u64 {
        let mut through = unfinished.keys().next().map_or(read_pos, |o| o - 1);
        if let Some(r) = replays.keys().next() {
            through = through.min(r - 1);
        }
        through
    }

    /// Stores an endpoint's checkpoint; returns the stored one.
    async fn store_checkpoint(&self, id: &str, offset: u64, committed: u64) -> u64 {
        let op = Op::SetCheckpoint { consumer: consumer(id), offset };
        match self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
            Ok(_) => offset,
            Err(e) => {
                tracing::warn!(endpoint = %id, error = %e, "cannot store the endpoint's checkpoint");
                committed
            }
        }
    }

    /// Delivers one event with retries; `Done` once delivered or given up.
    async fn deliver(&self, ctx: &EndpointCtx, e: LogEntry, stop: &CancellationToken) -> Finished {
        let body = payload(&e);
        let wid = webhook_id(&ctx.rec.id, &e.id);
        let schedule = &self.opts.schedule;
        let mut wait = jitter(schedule[0]);
        for attempt in 1..=schedule.len() as u32 {
            tokio::select! {
                _ = stop.cancelled() => return Finished::Stopped,
                _ = tokio::time::sleep(wait) => {}
            }
            ctx.pace().await;
            let ts = crate::util::unix_now();
            let sig = ctx.keys.iter().map(|k| standard::sign(k, &wid, ts, &body)).collect::<Vec<_>>().join(" ");
            let mut req = self
                .client
                .post(&ctx.rec.url)
                .timeout(ctx.timeout)
                .header("content-type", "application/json")
                .header("webhook-id", &wid)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig);
            for (k, v) in &ctx.rec.headers {
                req = req.header(k, v);
            }
            let started = Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => return Finished::Stopped,
                r = async {
                    let resp = req.body(body.clone()).send().await?;
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let text = if status.is_success() { String::new() } else { resp.text().await.unwrap_or_default() };
                    Ok::<_, reqwest::Error>((status.as_u16(), retry_after, text))
                } => r,
            };
            let latency = started.elapsed();
            metrics::histogram!("idstream_notification_attempt_seconds", "endpoint" => ctx.rec.id.clone())
                .record(latency.as_secs_f64());
            let mut rec = AttemptRecord {
                seq: 0,
                endpoint: ctx.rec.id.clone(),
                event_id: e.id.clone(),
                event_offset: e.offset,
                kind: e.kind.clone(),
                session_id: e.partition_key.clone(),
                webhook_id: wid.clone(),
                attempt,
                status: None,
                latency_ms: latency.as_millis() as u64,
                error: None,
                outcome: String::new(),
                next_attempt_at_us: None,
                at_us: now_us(),
            };
            let mut retry_after = None;
            // In short, for the `notification.failed` entry: never the receiver's answer.
            let short;
            match result {
                Ok((status, _, _)) if (200..300).contains(&status) => {
                    rec.status = Some(status);
                    rec.outcome = "delivered".into();
                    *ctx.failing_since.lock().expect("failing lock") = None;
                    self.record(rec).await;
                    return Finished::Done;
                }
                Ok((410, _, text)) => {
                    rec.status = Some(410);
                    rec.error = Some(truncate(&format!("410 Gone: the endpoint was disabled. {text}")));
                    rec.outcome = "disabled".into();
                    self.record(rec).await;
                    self.disable(&ctx.rec, "the receiver answered 410 Gone").await;
                    return Finished::Gone;
                }
                Ok((status, ra, text)) => {
                    rec.status = Some(status);
                    rec.error = Some(truncate(&format!("HTTP {status}: {text}")));
                    short = format!("HTTP {status}");
                    if status == 429 || status == 503 {
                        retry_after = ra.map(|s| Duration::from_secs(s).min(self.opts.max_retry_after));
                    }
                }
                Err(err) => {
                    rec.error = Some(truncate(&describe(&err)));
                    short = describe_kind(&err).to_owned();
                }
            }
            let failing_for =
                ctx.failing_since.lock().expect("failing lock").get_or_insert_with(Instant::now).elapsed();
            if let Some(limit) = self.opts.disable_after.filter(|l| failing_for >= *l) {
                rec.outcome = "disabled".into();
                self.record(rec).await;
                self.disable(&ctx.rec, &format!("failing continuously for {} s", limit.as_secs())).await;
                return Finished::Gone;
            }
            if attempt as usize >= schedule.len() {
                rec.outcome = "failed".into();
                let status = rec.status;
                self.record(rec).await;
                self.gave_up(&ctx.rec, &e, &wid, attempt, status, short).await;
                return Finished::Done;
            }
            wait = jitter(schedule[attempt as usize]).max(retry_after.unwrap_or_default());
            rec.outcome = "retrying".into();
            rec.next_attempt_at_us = Some(now_us() + wait.as_micros() as i64);
            self.record(rec).await;
        }
        Finished::Done
    }

    async fn record(&self, a: AttemptRecord) {
        metrics::counter!("idstream_notifications_total", "endpoint" => a.endpoint.clone(), "outcome" => a.outcome.clone())
            .increment(1);
        if let Err(mpsc::error::SendError(a)) = self.attempts.send(a) {
            // No recorder (the worker is not running here): written directly.
            let op = Op::Notify(NotifyOp::RecordAttempt(a));
            if let Err(e) = self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
                tracing::warn!(error = %e, "cannot record a delivery attempt");
            }
        }
    }

    /// Appends `notification.failed` for an event given up (but not for a given-up
    /// `notification.failed` itself, so two failing endpoints cannot feed each other).
    async fn gave_up(
        &self,
        rec: &EndpointRecord,
        e: &LogEntry,
        wid: &str,
        attempts: u32,
        last_status: Option<u16>,
        last_error: String,
    ) {
        if e.kind == "notification.failed" {
            return;
        }
        let session_id = LogEvent::from_entry(e).ok().and_then(|ev| ev.session_id().map(str::to_owned));
        let ev = OwnEvent::NotificationFailed(NotificationFailed {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: rec.tenant.clone(),
            endpoint: rec.id.clone(),
            event_id: e.id.clone(),
            event_offset: e.offset,
            event_kind: e.kind.clone(),
            session_id,
            webhook_id: wid.to_owned(),
            attempts,
            last_status,
            last_error,
            at: idstream_core::event::rfc3339_us(now_us()),
        });
        if let Err(err) = self.store.commit(Txn { entries: vec![ev.to_entry()], ops: Vec::new() }).await {
            tracing::warn!(endpoint = %rec.id, error = %err, "cannot append notification.failed");
        }
    }

    /// Disables an endpoint (its checkpoint stays where it is) and appends `endpoint.disabled`.
    async fn disable(&self, rec: &EndpointRecord, reason: &str) {
        tracing::warn!(endpoint = %rec.id, reason, "endpoint disabled");
        let event = OwnEvent::EndpointDisabled(EndpointChanged {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: rec.tenant.clone(),
            endpoint: rec.id.clone(),
            reason: reason.to_owned(),
            actor: "idstream".into(),
            at: idstream_core::event::rfc3339_us(now_us()),
        });
        let mut txn = Txn { entries: vec![event.to_entry()], ops: Vec::new() };
        if self.config_endpoint(&rec.id).is_some() {
            self.gone.lock().expect("gone lock").insert(rec.id.clone(), format!("{reason} (until restart)"));
        } else {
            match self.store.endpoint(&rec.id).await {
                Ok(Some(mut stored)) if !stored.disabled => {
                    stored.disabled = true;
                    stored.disabled_reason = Some(reason.to_owned());
                    stored.updated_at_us = now_us();
                    txn.ops.push(Op::Notify(NotifyOp::UpdateEndpoint { tenant: None, endpoint: stored }));
                }
                // Deleted, or disabled already (by a caller, or a replay of this endpoint).
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(endpoint = %rec.id, error = %e, "cannot disable the endpoint");
                    return;
                }
            }
        }
        if let Err(e) = self.store.commit(txn).await {
            tracing::warn!(endpoint = %rec.id, error = %e, "cannot disable the endpoint");
        }
        self.changed();
    }
}

/// Writes delivery attempts to the store in batches (one transaction for whatever queued up
/// while the previous one committed) until `stop`, then what is still queued.
async fn record_attempts(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<AttemptRecord>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            a = rx.recv() => a,
            _ = stop.cancelled() => None,
        };
        let mut batch: Vec<AttemptRecord> = first.into_iter().collect();
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        let ops = batch.into_iter().map(|a| Op::Notify(NotifyOp::RecordAttempt(a))).collect();
        if let Err(e) = store.commit(Txn { entries: Vec::new(), ops }).await {
            tracing::warn!(error = %e, "cannot record delivery attempts");
        }
    }
}

/// What a consumer delivers.
struct Scope {
    /// It starts after this offset.
    after: u64,
    /// A replay ends after this offset; the live consumer has none.
    through: Option<u64>,
    /// Only these offsets (a replay of given-up deliveries).
    only: Option<HashSet<u64>>,
}

/// Why a consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// A replay delivered its range.
    Finished,
    /// The endpoint was disabled (`410 Gone`, failing too long).
    Disabled,
    /// Stopped (shutdown, the endpoint changed, another node took it over).
    Stopped,
}

/// How one event's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    /// Delivered, or given up after the last attempt.
    Done,
    /// The receiver answered 410: the endpoint is disabled, the event stays undelivered.
    Gone,
    /// The task is stopping; the event stays undelivered.
    Stopped,
}

/// An endpoint as its task uses it.
struct EndpointCtx {
    rec: EndpointRecord,
    patterns: Vec<KindPattern>,
    keys: Vec<Vec<u8>>,
    outcomes: Option<HashSet<String>>,
    timeout: Duration,
    /// The earliest time of the next request (rate limit).
    next_slot: Option<tokio::sync::Mutex<tokio::time::Instant>>,
    /// Since when every attempt has failed (none: the last one succeeded).
    failing_since: Mutex<Option<Instant>>,
}

impl EndpointCtx {
    fn new(n: &Notifier, rec: EndpointRecord) -> EndpointCtx {
        EndpointCtx {
            patterns: rec.kinds.iter().filter_map(|k| KindPattern::parse(k).ok()).collect(),
            keys: rec.secrets.iter().filter_map(|s| standard::decode_secret(&Secret::new(s.clone())).ok()).collect(),
            outcomes: rec.outcomes.as_ref().map(|o| o.iter().cloned().collect()),
            timeout: Duration::from_secs(if rec.timeout_secs == 0 {
                n.opts.default_timeout_secs
            } else {
                rec.timeout_secs
            }),
            next_slot: rec.rate_limit_per_sec.map(|_| tokio::sync::Mutex::new(tokio::time::Instant::now())),
            failing_since: Mutex::new(None),
            rec,
        }
    }

    fn wants(&self, e: &LogEntry) -> bool {
        if e.tenant != self.rec.tenant || !crate::stream::auth::any_matches(&self.patterns, &e.kind) {
            return false;
        }
        if self.about_itself(e) {
            return false;
        }
        match &self.outcomes {
            None => true,
            Some(allowed) => serde_json::from_slice::<serde_json::Value>(&e.event)
                .ok()
                .and_then(|v| v.get("outcome").and_then(|o| o.as_str()).map(|o| allowed.contains(o)))
                .unwrap_or(false),
        }
    }

    /// Whether `e` is this endpoint's own `endpoint.*` or `notification.failed` entry: those are
    /// for other systems (the endpoint itself was failing or disabled when they were written).
    fn about_itself(&self, e: &LogEntry) -> bool {
        if e.source != OWN_SOURCE || !(e.kind.starts_with("endpoint.") || e.kind == "notification.failed") {
            return false;
        }
        #[derive(serde::Deserialize)]
        struct About {
            endpoint: String,
        }
        serde_json::from_slice::<About>(&e.event).is_ok_and(|a| a.endpoint == self.rec.id)
    }

    /// Waits for the endpoint's rate limit.
    async fn pace(&self) {
        let (Some(slot), Some(rate)) = (&self.next_slot, self.rec.rate_limit_per_sec) else { return };
        let at = {
            let mut next = slot.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + Duration::from_secs_f64(1.0 / rate);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

fn jitter(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    d.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

fn truncate(s: &str) -> String {
    s.chars().take(500).collect()
}

/// A transport error's kind, without details.
fn describe_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    }
}

/// A transport error in words (timeouts, refusals), without the URL's query.
fn describe(e: &reqwest::Error) -> String {
    let mut text = describe_kind(e).to_owned();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}
