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
//! [`Notifier::run`] supervises the tasks: it starts one per enabled endpoint (config and API),
//! restarts one whose definition changed, and applies replays (a checkpoint set back) between
//! the old task's end and the new one's start.

pub mod config;
pub mod ssrf;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idstream_core::signature::{standard, Secret};
use rand::Rng as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
}

/// A replay asked for: the checkpoint to set before the endpoint's task starts again.
type Replays = HashMap<String, u64>;

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
    replays: Mutex<Replays>,
    /// Config endpoints a receiver answered `410 Gone` for (until restart).
    gone: Mutex<HashSet<String>>,
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
    ) -> Notifier {
        let policy = AddressPolicy::from_config(n).expect("validated at config load");
        Notifier {
            log,
            store,
            enabled: n.enabled,
            opts: NotifyOptions {
                schedule: n.retry_schedule_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
                max_retry_after: Duration::from_secs(n.max_retry_after_secs),
                max_in_flight: n.max_in_flight,
                max_read_ahead: n.max_read_ahead,
                default_timeout_secs: n.default_timeout_secs,
            },
            config_endpoints: endpoints.iter().map(config_record).collect(),
            client: ssrf::client(resolver.clone(), policy.clone()),
            policy,
            resolver,
            poke: tokio::sync::Notify::new(),
            replays: Mutex::new(HashMap::new()),
            gone: Mutex::new(HashSet::new()),
        }
    }

    /// The config endpoint with this id.
    pub fn config_endpoint(&self, id: &str) -> Option<&EndpointRecord> {
        self.config_endpoints.iter().find(|e| e.id == id)
    }

    /// Whether a config endpoint was disabled by a `410 Gone`.
    pub fn is_gone(&self, id: &str) -> bool {
        self.gone.lock().expect("gone lock").contains(id)
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

    /// Delivers an endpoint's events again from after `after` (its task restarts there).
    pub fn replay(&self, endpoint: &str, after: u64) {
        self.replays.lock().expect("replay lock").insert(endpoint.to_owned(), after);
        self.changed();
    }

    /// Every endpoint, config and API.
    async fn all_endpoints(&self) -> Result<Vec<EndpointRecord>, crate::store::StoreError> {
        let mut all = self.config_endpoints.clone();
        all.extend(self.store.endpoints(None).await?);
        Ok(all)
    }

    /// Runs the endpoints' tasks until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut running: HashMap<String, (i64, CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
        loop {
            match self.all_endpoints().await {
                Ok(eps) => {
                    let replays = std::mem::take(&mut *self.replays.lock().expect("replay lock"));
                    let gone = self.gone.lock().expect("gone lock").clone();
                    let wanted: HashMap<String, EndpointRecord> = eps
                        .into_iter()
                        .filter(|e| !e.disabled && !gone.contains(&e.id))
                        .map(|e| (e.id.clone(), e))
                        .collect();
                    let stale: Vec<String> = running
                        .iter()
                        .filter(|(id, (updated, _, task))| {
                            wanted.get(*id).is_none_or(|e| e.updated_at_us != *updated)
                                || replays.contains_key(*id)
                                || task.is_finished()
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in stale {
                        let (_, token, task) = running.remove(&id).expect("listed");
                        token.cancel();
                        let _ = task.await;
                    }
                    for (id, after) in &replays {
                        let op = Op::Notify(NotifyOp::ResetCheckpoint { consumer: consumer(id), offset: *after });
                        if let Err(e) = self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
                            tracing::warn!(endpoint = %id, error = %e, "replay: cannot set the checkpoint; asked again");
                            self.replays.lock().expect("replay lock").entry(id.clone()).or_insert(*after);
                        }
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
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        for (_, (_, token, task)) in running {
            token.cancel();
            let _ = task.await;
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

    async fn run_endpoint(self: Arc<Self>, rec: EndpointRecord, stop: CancellationToken) {
        let Some(start) = self.start_position(&rec.id, &stop).await else { return };
        let ctx = Arc::new(EndpointCtx::new(&self, rec));
        let id = ctx.rec.id.clone();
        let mut head = self.log.subscribe();
        let filter = ReadFilter { tenant: Some(ctx.rec.tenant.clone()), partition_key: None };
        let (mut read_pos, mut committed) = (start, start);
        let mut unfinished = BTreeSet::new();
        let mut queues: HashMap<String, VecDeque<LogEntry>> = HashMap::new();
        let mut waiting: VecDeque<String> = VecDeque::new();
        // Sessions active or waiting for a slot.
        let mut scheduled: HashSet<String> = HashSet::new();
        let mut active = 0usize;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, u64, Finished)>();
        let mut tasks = tokio::task::JoinSet::new();
        let mut last_flush = Instant::now();
        let mut gone = false;
        let backlog = metrics::gauge!("idstream_notification_backlog", "endpoint" => id.clone());
        loop {
            // Finished deliveries.
            while let Ok((session, offset, fin)) = done_rx.try_recv() {
                active -= 1;
                match fin {
                    Finished::Gone => {
                        gone = true;
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
            if gone || stop.is_cancelled() {
                break;
            }
            // Read further.
            let snapshot = self.log.head();
            let more = unfinished.len() < self.opts.max_read_ahead && snapshot > read_pos;
            if more {
                match self.log.read(read_pos, 512, &filter).await {
                    Ok(entries) => {
                        let full = entries.len() == 512;
                        for e in entries {
                            read_pos = read_pos.max(e.offset);
                            if ctx.wants(&e) {
                                unfinished.insert(e.offset);
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
            // The checkpoint: everything below the oldest unfinished event.
            let done_through = unfinished.first().map_or(read_pos, |o| o - 1);
            if done_through > committed && (last_flush.elapsed() >= Duration::from_millis(100) || active == 0) {
                let op = Op::SetCheckpoint { consumer: consumer(&id), offset: done_through };
                match self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
                    Ok(_) => committed = done_through,
                    Err(e) => tracing::warn!(endpoint = %id, error = %e, "cannot store the endpoint's checkpoint"),
                }
                last_flush = Instant::now();
            }
            backlog.set((unfinished.len() as u64 + self.log.head().saturating_sub(read_pos)) as f64);
            if unfinished.len() < self.opts.max_read_ahead && self.log.head() > read_pos {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                Some(msg) = done_rx.recv() => {
                    // Put it back for the top of the loop.
                    let (s, o, f) = msg;
                    let _ = done_tx.send((s, o, f));
                }
                _ = head.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)), if done_through > committed => {}
            }
        }
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        // What finished before the stop still counts.
        while let Ok((_, offset, fin)) = done_rx.try_recv() {
            if fin == Finished::Done {
                unfinished.remove(&offset);
            }
        }
        let done_through = unfinished.first().map_or(read_pos, |o| o - 1);
        if done_through > committed {
            let op = Op::SetCheckpoint { consumer: consumer(&id), offset: done_through };
            if let Err(e) = self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
                tracing::warn!(endpoint = %id, error = %e, "cannot store the endpoint's checkpoint");
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
            match result {
                Ok((status, _, _)) if (200..300).contains(&status) => {
                    rec.status = Some(status);
                    rec.outcome = "delivered".into();
                    self.record(rec).await;
                    return Finished::Done;
                }
                Ok((410, _, text)) => {
                    rec.status = Some(410);
                    rec.error = Some(truncate(&format!("410 Gone: the endpoint was disabled. {text}")));
                    rec.outcome = "disabled".into();
                    self.record(rec).await;
                    self.disable(&ctx.rec.id, "the receiver answered 410 Gone").await;
                    return Finished::Gone;
                }
                Ok((status, ra, text)) => {
                    rec.status = Some(status);
                    rec.error = Some(truncate(&format!("HTTP {status}: {text}")));
                    if status == 429 || status == 503 {
                        retry_after = ra.map(|s| Duration::from_secs(s).min(self.opts.max_retry_after));
                    }
                }
                Err(err) => {
                    rec.error = Some(truncate(&describe(&err)));
                }
            }
            if attempt as usize >= schedule.len() {
                rec.outcome = "failed".into();
                self.record(rec).await;
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
        let op = Op::Notify(NotifyOp::RecordAttempt(a));
        if let Err(e) = self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
            tracing::warn!(error = %e, "cannot record a delivery attempt");
        }
    }

    /// Disables an endpoint after a `410 Gone` (its checkpoint stays where it is).
    async fn disable(&self, id: &str, reason: &str) {
        tracing::warn!(endpoint = %id, reason, "endpoint disabled");
        if self.config_endpoint(id).is_some() {
            self.gone.lock().expect("gone lock").insert(id.to_owned());
            return;
        }
        match self.store.endpoint(id).await {
            Ok(Some(mut rec)) => {
                rec.disabled = true;
                rec.disabled_reason = Some(reason.to_owned());
                rec.updated_at_us = now_us();
                let op = Op::Notify(NotifyOp::UpdateEndpoint { tenant: None, endpoint: rec });
                if let Err(e) = self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
                    tracing::warn!(endpoint = %id, error = %e, "cannot disable the endpoint");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(endpoint = %id, error = %e, "cannot disable the endpoint"),
        }
    }
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
            rec,
        }
    }

    fn wants(&self, e: &LogEntry) -> bool {
        if e.tenant != self.rec.tenant || !crate::stream::auth::any_matches(&self.patterns, &e.kind) {
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

/// A transport error in words (timeouts, refusals), without the URL's query.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = what.to_owned();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}
