//! The scale-out event log: a NATS JetStream stream, with PostgreSQL holding what JetStream
//! cannot keep for ever (the dedupe keys, the id → offset index, consumer checkpoints).
//!
//! - An entry is one message on `{prefix}.{tenant}.{kind}`; its offset is the stream sequence,
//!   so every node sees the same offsets and a client resumes by offset on any node.
//! - `append` returns after JetStream's publish ack (on the stream's storage; see README
//!   "Durability" for what that means with R1/R3 and `sync_interval`) *and* after the entry's
//!   dedupe key and id are recorded in PostgreSQL.
//! - Dedupe: a key already in PostgreSQL is a duplicate (the final word: it never expires). A
//!   retry racing the first attempt, or following a crash between the ack and the PostgreSQL
//!   insert, is caught by JetStream's own `Nats-Msg-Id` window (`log.nats_duplicate_window_secs`),
//!   whose ack names the original's sequence.
//! - Every node tails the stream with one ordered consumer into a bounded in-memory cache, which
//!   serves `read` for recent offsets and moves `head`; older offsets are read from JetStream
//!   directly.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use deadpool_postgres::Pool;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Appended, EventLog, LogEntry, LogError, NewEntry, ReadFilter};
use crate::store::pg;

/// Where the stream is and how it is set up.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:4222`, several separated by commas.
    pub url: String,
    pub stream: String,
    /// Subjects are `{prefix}.{tenant}.{kind}`.
    pub subject_prefix: String,
    pub replicas: usize,
    /// JetStream removes entries older than this (zero: keep everything).
    pub max_age: Duration,
    pub duplicate_window: Duration,
    /// Bytes of recent entries each node keeps in memory for readers.
    pub cache_bytes: usize,
}

const MAGIC: &[u8; 4] = b"IDS1";

/// Appends from concurrent requests are grouped into batches (one PostgreSQL round trip each
/// for dedupe and index), with up to this many batches in flight.
const BATCHES_IN_FLIGHT: usize = 4;
const MAX_BATCH: usize = 1024;

type AppendReq = (Vec<NewEntry>, tokio::sync::oneshot::Sender<Result<Vec<Appended>, LogError>>);

pub struct NatsLog {
    core: Arc<Core>,
    queue: tokio::sync::mpsc::Sender<AppendReq>,
}

struct Core {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    opts: NatsOptions,
    pool: Pool,
    cache: Arc<RwLock<Cache>>,
    head_tx: Arc<watch::Sender<u64>>,
    pruned: Arc<AtomicU64>,
    closed: AtomicBool,
    stop: CancellationToken,
}

#[derive(Default)]
struct Cache {
    entries: VecDeque<LogEntry>,
    bytes: usize,
}

impl Cache {
    fn push(&mut self, e: LogEntry, max_bytes: usize) {
        self.bytes += entry_size(&e);
        self.entries.push_back(e);
        while self.bytes > max_bytes && self.entries.len() > 1 {
            let old = self.entries.pop_front().expect("non-empty");
            self.bytes -= entry_size(&old);
        }
    }

    /// The cached entries after `after` (at most `limit` matching ones) and the offset the scan
    /// reached; `None` when the cache does not start at or before `after + 1`.
    fn after(&self, after: u64, limit: usize, filter: &ReadFilter) -> Option<(Vec<LogEntry>, u64)> {
        let first = self.entries.front()?.offset;
        if after + 1 < first {
            return None;
        }
        let start = self.entries.partition_point(|e| e.offset <= after);
        let mut out = Vec::new();
        let mut scanned = after.max(self.entries.back().map_or(after, |e| e.offset));
        for e in self.entries.range(start..) {
            if out.len() == limit {
                break;
            }
            if filter.admits(e) {
                out.push(e.clone());
                if out.len() == limit {
                    scanned = e.offset;
                }
            }
        }
        Some((out, scanned))
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|e| e.offset)
    }
}

fn entry_size(e: &LogEntry) -> usize {
    e.event.len() + e.body.as_ref().map_or(0, Vec::len) + e.id.len() + e.partition_key.len() + 128
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("NATS JetStream: {what}: {e}"))
}

fn pg_unavailable(e: tokio_postgres::Error) -> LogError {
    LogError::Unavailable(format!("PostgreSQL: {}", pg::db_error_text(&e)))
}

/// A subject token: NATS subjects cannot hold `.`, `*`, `>` or whitespace inside a token.
fn token(s: &str) -> String {
    let t: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if t.is_empty() {
        "_".to_owned()
    } else {
        t
    }
}

/// `Nats-Msg-Id` of a dedupe key: a hash, so any key is a valid header value.
fn msg_id(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..20])
}

fn encode(e: &NewEntry) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + e.event.len() + e.body.as_ref().map_or(0, Vec::len));
    b.put_slice(MAGIC);
    for s in [&e.id, &e.tenant, &e.source, &e.kind, &e.partition_key] {
        b.put_u32(s.len() as u32);
        b.put_slice(s.as_bytes());
    }
    b.put_u32(e.event.len() as u32);
    b.put_slice(&e.event);
    match &e.body {
        Some(body) => {
            b.put_u8(1);
            b.put_u32(body.len() as u32);
            b.put_slice(body);
        }
        None => b.put_u8(0),
    }
    b.freeze()
}

fn decode(offset: u64, appended_at_us: i64, mut p: &[u8]) -> Option<LogEntry> {
    fn bytes<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
        if p.remaining() < 4 {
            return None;
        }
        let n = p.get_u32() as usize;
        if p.remaining() < n {
            return None;
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Some(head)
    }
    fn string(p: &mut &[u8]) -> Option<String> {
        bytes(p).and_then(|b| String::from_utf8(b.to_vec()).ok())
    }
    if !p.starts_with(MAGIC) {
        return None;
    }
    p.advance(4);
    let id = string(&mut p)?;
    let tenant = string(&mut p)?;
    let source = string(&mut p)?;
    let kind = string(&mut p)?;
    let partition_key = string(&mut p)?;
    let event = bytes(&mut p)?.to_vec();
    let body = match p.first()? {
        1 => {
            p.advance(1);
            Some(bytes(&mut p)?.to_vec())
        }
        _ => None,
    };
    Some(LogEntry { offset, id, tenant, source, kind, partition_key, appended_at_us, event, body })
}

fn time_us(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// A client of the NATS server at `url` (reconnecting for ever once connected); fails, naming
/// the server, when it does not answer within 10 s.
async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name("idstream")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .connect(url);
    tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .map_err(|_| anyhow::anyhow!("NATS at {url} did not answer within 10 s"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}"))
}

/// Deletes the JetStream stream `name` at `url` (for tools that made one for a run). No error
/// when it is gone.
pub async fn delete_stream(url: &str, name: &str) -> anyhow::Result<()> {
    let js = jetstream::new(connect(url).await?);
    match js.delete_stream(name).await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("deleting stream `{name}`: {e}")),
    }
}

impl NatsLog {
    /// Connects, creates (or checks) the stream, and starts tailing it. Fails with the server
    /// named when NATS is unreachable or JetStream is not enabled.
    pub async fn open(opts: NatsOptions, pool: Pool) -> anyhow::Result<NatsLog> {
        let client = connect(&opts.url).await.map_err(|e| anyhow::anyhow!("log.url: {e}"))?;
        let js = jetstream::new(client.clone());
        let config = stream::Config {
            name: opts.stream.clone(),
            subjects: vec![format!("{}.>", opts.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: opts.replicas,
            max_age: opts.max_age,
            duplicate_window: opts.duplicate_window,
            ..Default::default()
        };
        let mut stream = tokio::time::timeout(Duration::from_secs(10), js.get_or_create_stream(config))
            .await
            .map_err(|_| {
                anyhow::anyhow!("NATS at {}: JetStream did not answer within 10 s (is it enabled: -js?)", opts.url)
            })?
            .map_err(|e| {
                anyhow::anyhow!("NATS at {}: stream `{}`: {e} (is JetStream enabled: -js?)", opts.url, opts.stream)
            })?;
        let info = stream.info().await.map_err(|e| anyhow::anyhow!("stream `{}`: {e}", opts.stream))?.clone();
        let want = format!("{}.>", opts.subject_prefix);
        if !info.config.subjects.contains(&want) {
            anyhow::bail!(
                "log.nats_stream `{}` exists with subjects {:?}, not `{want}`: use another stream name or prefix",
                opts.stream,
                info.config.subjects
            );
        }
        // Retention and the dedupe window follow the config on every start.
        let info = if info.config.max_age != opts.max_age || info.config.duplicate_window != opts.duplicate_window {
            let mut config = info.config.clone();
            config.max_age = opts.max_age;
            config.duplicate_window = opts.duplicate_window;
            js.update_stream(config).await.map_err(|e| anyhow::anyhow!("updating stream `{}`: {e}", opts.stream))?
        } else {
            info
        };
        let head = info.state.last_sequence;
        let pruned = info.state.first_sequence.saturating_sub(1).min(head);
        let (head_tx, _) = watch::channel(head);
        let core = Arc::new(Core {
            client,
            js,
            stream,
            opts,
            pool,
            cache: Arc::new(RwLock::new(Cache::default())),
            head_tx: Arc::new(head_tx),
            pruned: Arc::new(AtomicU64::new(pruned)),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        // Warm the cache with the newest entries, so readers near the head (stream clients,
        // decision workers) do not all go to JetStream after a restart.
        let prefill = (core.opts.cache_bytes / 4096) as u64;
        let start = head.saturating_sub(prefill).max(pruned) + 1;
        tokio::spawn(tail(
            start,
            core.stream.clone(),
            core.client.clone(),
            core.cache.clone(),
            core.head_tx.clone(),
            core.pruned.clone(),
            core.opts.cache_bytes,
            core.stop.clone(),
        ));
        let (queue, rx) = tokio::sync::mpsc::channel(16_384);
        tokio::spawn(batcher(core.clone(), rx));
        Ok(NatsLog { core, queue })
    }
}

/// Groups queued appends into batches and runs up to [`BATCHES_IN_FLIGHT`] at once.
async fn batcher(core: Arc<Core>, mut rx: tokio::sync::mpsc::Receiver<AppendReq>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut reqs = vec![first];
        let mut n = reqs[0].0.len();
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.0.len();
                    reqs.push(r);
                }
                Err(_) => break,
            }
        }
        let core = core.clone();
        tokio::spawn(async move {
            let sizes: Vec<usize> = reqs.iter().map(|r| r.0.len()).collect();
            let (entries, replies): (Vec<Vec<NewEntry>>, Vec<_>) = reqs.into_iter().unzip();
            let result = core.append_now(entries.into_iter().flatten().collect()).await;
            match result {
                Ok(all) => {
                    let mut all = all.into_iter();
                    for (reply, size) in replies.into_iter().zip(sizes) {
                        let _ = reply.send(Ok(all.by_ref().take(size).collect()));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(match &e {
                            LogError::Closed => LogError::Closed,
                            LogError::Unavailable(_) => LogError::Unavailable(msg.clone()),
                        }));
                    }
                }
            }
            drop(permit);
        });
    }
}

impl Core {
    /// A pooled PostgreSQL connection.
    async fn pg(&self) -> Result<deadpool_postgres::Object, LogError> {
        self.pool.get().await.map_err(|e| LogError::Unavailable(format!("PostgreSQL: {}", pg::error_text(&e))))
    }

    /// Appends one batch: dedupe against PostgreSQL, publish, await the acks, index.
    async fn append_now(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // With NATS away, answer now (503, the sender retries) instead of queueing a publish
        // whose ack can only time out: a batch waiting out that timeout holds a slot, and the
        // requests queued behind it would wait for two timeouts.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(LogError::Unavailable("NATS is not connected (reconnecting)".into()));
        }
        let client = self.pg().await?;
        // Keys already stored (the final word), and repeats within this batch.
        let keys: Vec<&str> = entries.iter().filter_map(|e| e.dedupe_key.as_deref()).collect();
        let mut known: HashMap<String, Appended> = HashMap::new();
        if !keys.is_empty() {
            // Planned for these keys on every call (an unnamed statement, still one round trip),
            // never from a connection's cached generic plan: PostgreSQL makes one after five
            // executions, and one made while `log_index` held a few hundred rows is a sequential
            // scan (reading a page beats an index for an array of unknown length) that stays as
            // the table grows until an `ANALYZE`. With autovacuum off, as on the test machine,
            // that cut scale-out ingest from ~7,500 to ~3,300 events/s in most runs
            // (BENCHMARKS.md "Scale-out").
            let rows = client
                .query_typed(
                    "SELECT dedupe_key, seq, id FROM log_index WHERE dedupe_key = ANY($1)",
                    &[(&keys, tokio_postgres::types::Type::TEXT_ARRAY)],
                )
                .await
                .map_err(pg_unavailable)?;
            for row in rows {
                let seq: i64 = row.get(1);
                known.insert(row.get(0), Appended { offset: seq as u64, id: row.get(2), duplicate: true });
            }
        }
        let mut results: Vec<Option<Appended>> = vec![None; entries.len()];
        let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
        let mut acks = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(k) = e.dedupe_key.as_deref() {
                if let Some(a) = known.get(k) {
                    results[i] = Some(a.clone());
                    continue;
                }
                if first_in_batch.contains_key(k) {
                    continue;
                }
                first_in_batch.insert(k, i);
            }
            let subject = format!(
                "{}.{}.{}",
                self.opts.subject_prefix,
                token(&e.tenant),
                e.kind.split('.').map(token).collect::<Vec<_>>().join(".")
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id(e.dedupe_key.as_deref().unwrap_or(&e.id)).as_str());
            let ack = self
                .js
                .publish_with_headers(subject, headers, encode(e))
                .await
                .map_err(|err| unavailable("publishing", err))?;
            acks.push((i, ack));
        }
        let mut new_rows: Vec<(String, i64, Option<String>, &str, &str)> = Vec::new();
        let mut max_seq = 0;
        for (i, ack) in acks {
            let ack = ack.await.map_err(|err| unavailable("publish not acknowledged", err))?;
            let e = &entries[i];
            let id = if ack.duplicate {
                // JetStream's window recognised the key: the original is at `ack.sequence`.
                self.fetch(std::iter::once(ack.sequence)).await?.pop().map(|o| o.id).unwrap_or_else(|| e.id.clone())
            } else {
                e.id.clone()
            };
            max_seq = max_seq.max(ack.sequence);
            new_rows.push((id.clone(), ack.sequence as i64, e.dedupe_key.clone(), &e.tenant, &e.partition_key));
            results[i] = Some(Appended { offset: ack.sequence, id, duplicate: ack.duplicate });
        }
        if !new_rows.is_empty() {
            let ids: Vec<&str> = new_rows.iter().map(|r| r.0.as_str()).collect();
            let seqs: Vec<i64> = new_rows.iter().map(|r| r.1).collect();
            let dkeys: Vec<Option<&str>> = new_rows.iter().map(|r| r.2.as_deref()).collect();
            let tenants: Vec<&str> = new_rows.iter().map(|r| r.3).collect();
            let partitions: Vec<&str> = new_rows.iter().map(|r| r.4).collect();
            // The events are already durable in JetStream; this index row only has to outlive
            // JetStream's duplicate window. So it does not wait for PostgreSQL's fsync: a
            // PostgreSQL crash loses at most the last fraction of a second of rows, whose keys
            // JetStream still recognises (`log.nats_duplicate_window_secs`). One statement, its
            // own transaction: `set_config(…, true)` turns synchronous commit off for it alone
            // (one round trip where BEGIN, SET LOCAL, INSERT, COMMIT took four).
            let insert = client
                .prepare_cached(
                    "INSERT INTO log_index (id, seq, dedupe_key, tenant, partition_key)
                     SELECT u.* FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])
                         AS u(id, seq, dedupe_key, tenant, partition_key)
                     CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(pg_unavailable)?;
            client.execute(&insert, &[&ids, &seqs, &dkeys, &tenants, &partitions]).await.map_err(pg_unavailable)?;
        }
        // Repeats within the batch are duplicates of their first occurrence.
        for (i, e) in entries.iter().enumerate() {
            if results[i].is_none() {
                let k = e.dedupe_key.as_deref().expect("only keyed entries repeat");
                let first = results[first_in_batch[k]].clone().expect("first occurrence appended");
                results[i] = Some(Appended { duplicate: true, ..first });
            }
        }
        self.await_tail(max_seq).await;
        Ok(results.into_iter().map(|r| r.expect("every entry has a result")).collect())
    }

    /// The entries with these sequences, read from JetStream (missing ones are skipped).
    async fn fetch(&self, seqs: impl Iterator<Item = u64>) -> Result<Vec<LogEntry>, LogError> {
        let stream = &self.stream;
        let got: Vec<Option<LogEntry>> = futures_util::stream::iter(seqs)
            .map(|seq| async move {
                match stream.get_raw_message(seq).await {
                    Ok(m) => Ok(decode(m.sequence, time_us(m.time), &m.payload)),
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) => Err(unavailable("reading the stream", e)),
                }
            })
            .buffered(64)
            .try_collect()
            .await?;
        Ok(got.into_iter().flatten().collect())
    }

    /// The entries at these offsets (ascending), from the cache where it has them.
    async fn entries_at(&self, seqs: &[u64]) -> Result<Vec<LogEntry>, LogError> {
        let mut out = Vec::with_capacity(seqs.len());
        let mut missing = Vec::new();
        {
            let cache = self.cache.read().expect("cache lock");
            let first = cache.entries.front().map_or(u64::MAX, |e| e.offset);
            for &seq in seqs {
                let i = cache.entries.partition_point(|e| e.offset < seq);
                match cache.entries.get(i) {
                    Some(e) if seq >= first && e.offset == seq => out.push(e.clone()),
                    _ => missing.push(seq),
                }
            }
        }
        if !missing.is_empty() {
            out.extend(self.fetch(missing.into_iter()).await?);
            out.sort_by_key(|e| e.offset);
        }
        Ok(out)
    }

    /// Waits until the tail has delivered `seq` (read-your-writes on this node).
    async fn await_tail(&self, seq: u64) {
        let mut rx = self.head_tx.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|h| *h >= seq)).await;
    }
}

/// Tails the stream into the cache from the current head, forever (re-creating the ordered
/// consumer after a NATS outage).
#[allow(clippy::too_many_arguments)]
async fn tail(
    start: u64,
    stream: stream::Stream,
    client: async_nats::Client,
    cache: Arc<RwLock<Cache>>,
    head: Arc<watch::Sender<u64>>,
    pruned: Arc<AtomicU64>,
    max_bytes: usize,
    stop: CancellationToken,
) {
    let mut info_every = tokio::time::interval(Duration::from_secs(30));
    loop {
        let from = cache.read().expect("cache lock").last().map_or(start, |l| l + 1);
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS: cannot tail the stream; retrying");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(500)) => {} }
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "NATS: cannot tail the stream; retrying");
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(500)) => {} }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                _ = info_every.tick() => {
                    if let Ok(info) = stream.get_info().await {
                        pruned.store(info.state.first_sequence.saturating_sub(1), Ordering::Relaxed);
                    }
                    continue;
                }
                m = messages.next() => m,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "NATS: the stream tail was interrupted; resuming");
                    break;
                }
                None => break,
            };
            let Ok(info) = msg.info() else { continue };
            let (seq, at) = (info.stream_sequence, time_us(info.published));
            if cache.read().expect("cache lock").last().is_some_and(|l| seq <= l) {
                continue;
            }
            match decode(seq, at, &msg.payload) {
                Some(e) => cache.write().expect("cache lock").push(e, max_bytes),
                None => tracing::warn!(offset = seq, "NATS: a message on the stream is not an idstream entry; skipped"),
            }
            if seq > *head.borrow() {
                head.send_replace(seq);
            }
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(200)) => {} }
    }
}

#[async_trait]
impl EventLog for NatsLog {
    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue.send((entries, tx)).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn read(&self, after: u64, limit: usize, filter: &ReadFilter) -> Result<Vec<LogEntry>, LogError> {
        let after = after.max(self.pruned_through());
        // Recent offsets come from the cache; older ones (or ones the tail has not delivered
        // yet) from JetStream, in chunks.
        let head = self.head();
        let mut out = Vec::new();
        let mut pos = after;
        while out.len() < limit && pos < head {
            let hit = self.core.cache.read().expect("cache lock").after(pos, limit - out.len(), filter);
            match hit {
                Some((found, scanned)) if scanned > pos => {
                    out.extend(found);
                    pos = scanned;
                }
                _ => {
                    let to = (pos + limit.clamp(64, 1024) as u64).min(head);
                    let got = self.core.fetch(pos + 1..=to).await?;
                    out.extend(got.into_iter().filter(|e| filter.admits(e)).take(limit - out.len()));
                    pos = to;
                }
            }
        }
        Ok(out)
    }

    async fn get(&self, id: &str) -> Result<Option<LogEntry>, LogError> {
        let client = self.core.pg().await?;
        let Some(row) =
            client.query_opt("SELECT seq FROM log_index WHERE id = $1", &[&id]).await.map_err(pg_unavailable)?
        else {
            return Ok(None);
        };
        Ok(self.core.entries_at(&[row.get::<_, i64>(0) as u64]).await?.pop())
    }

    fn head(&self) -> u64 {
        *self.core.head_tx.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.core.head_tx.subscribe()
    }

    async fn close(&self) {
        self.core.closed.store(true, Ordering::Release);
        self.core.stop.cancel();
        let _ = self.core.client.flush().await;
    }

    fn pruned_through(&self) -> u64 {
        self.core.pruned.load(Ordering::Relaxed)
    }

    async fn prune(&self, through: u64, _max: usize) -> Result<u64, LogError> {
        self.core.stream.purge().sequence(through + 1).await.map_err(|e| unavailable("purging", e))?;
        let info = self.core.stream.get_info().await.map_err(|e| unavailable("stream info", e))?;
        let p = info.state.first_sequence.saturating_sub(1);
        self.core.pruned.store(p, Ordering::Relaxed);
        Ok(p)
    }

    async fn last_offset_before(&self, unix_us: i64) -> Result<u64, LogError> {
        // Binary search over the retained sequences by publish time.
        let (mut lo, mut hi) = (self.pruned_through() + 1, self.head());
        let mut found = 0;
        while lo <= hi && hi > 0 {
            let mid = lo + (hi - lo) / 2;
            // A deleted sequence: look at the next retained one.
            let got = self.core.fetch(mid..=hi.min(mid + 16)).await?;
            match got.first() {
                Some(e) if e.appended_at_us < unix_us => {
                    found = e.offset;
                    lo = e.offset + 1;
                }
                _ => {
                    if mid == 0 {
                        break;
                    }
                    hi = mid - 1;
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_subjects_are_safe() {
        let e = NewEntry {
            id: "id1".into(),
            tenant: "acme".into(),
            source: "didit".into(),
            kind: "verification.approved".into(),
            partition_key: "s.1 *>".into(),
            dedupe_key: Some("didit/event:1".into()),
            event: b"{}".to_vec(),
            body: Some(vec![0, 1, 2]),
        };
        let d = decode(7, 9, &encode(&e)).unwrap();
        assert_eq!((d.offset, d.appended_at_us, d.id.as_str(), d.partition_key.as_str()), (7, 9, "id1", "s.1 *>"));
        assert_eq!(d.body.as_deref(), Some(&[0u8, 1, 2][..]));
        assert!(decode(1, 1, b"nope").is_none());
        assert!(decode(1, 1, &encode(&e)[..20]).is_none());
        assert_eq!(token("a.b *>"), "a_b___");
        assert_eq!(msg_id("x").len(), 40);
    }
}
