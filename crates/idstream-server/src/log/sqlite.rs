//! The embedded event log: `events.db`, SQLite in WAL mode with `synchronous=FULL`, written by
//! one writer thread with group commit (see [`crate::sqlite`]). Only then are callers answered,
//! so an acknowledged entry is on disk. Offsets are assigned by the writer: dense, in commit
//! order; a failed batch is rolled back and its offsets are reused by the next one.
//!
//! What each append writes is kept to appends, because random-key B-tree inserts were measured
//! to dirty about one 4 KiB page each per index (BENCHMARKS.md "Embedded write path"):
//! - the entry (by offset; its UUIDv7 id and tenant indexes grow at their ends);
//! - its dedupe key in an append-only table. Duplicates are recognised through an in-memory map
//!   of the keys' 64-bit hashes, rebuilt from that table at start-up (about 20 bytes per key;
//!   `log.retention_days` bounds it), and confirmed against the stored key, so a hash
//!   collision is never a false duplicate.
//! - The partition (session) index, the one random index, is not on the append path: an
//!   indexer thread keeps it in `index.db` (derived data, rebuilt when missing), and a read by
//!   partition scans the few entries it has not indexed yet.
//!
//! The store (`state.db`) has its own writer; it appends the entries of its transactions here
//! through the same [`EventLog::append`] (an outbox in between: `store/sqlite.rs`).
//!
//! The writer also keeps the entries it committed last in memory ([`Recent`]), filled before the
//! head moves: a read of the log's tail (the stream tailer, the decision worker, a catching-up
//! subscription near the head) is answered from there, without a reader connection on the
//! blocking pool; older reads go to SQLite. Both give the same entries.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Appended, EventLog, LogEntry, LogError, NewEntry, ReadFilter};
use crate::sqlite::{self as db, Msg, ReaderPool};
use crate::store::migrate::{self, dedupe_hash, EVENTS};

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub max_batch: usize,
    pub queue_depth: usize,
    /// Refuse appends (503) once the database reaches this size; 0 = no limit.
    pub max_db_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { max_batch: 2048, queue_depth: 16384, max_db_bytes: 0 }
    }
}

enum Cmd {
    Append { entries: Vec<NewEntry>, reply: oneshot::Sender<Result<Vec<Appended>, LogError>> },
    Prune { through: u64, max: usize, reply: oneshot::Sender<Result<u64, LogError>> },
}

/// The entries the writer committed last, in offset order: at most [`RECENT_ENTRIES`] and about
/// [`RECENT_BYTES`] of events and bodies. Entries leave at the front (by age or retention).
#[derive(Default)]
struct Recent {
    entries: VecDeque<LogEntry>,
    bytes: usize,
}

/// Entries kept in [`Recent`]: a decision batch, two stream-tailer reads.
const RECENT_ENTRIES: usize = 2048;
/// Bytes of events and bodies kept in [`Recent`] (large bodies shorten what it covers).
const RECENT_BYTES: usize = 16 << 20;

fn entry_bytes(e: &LogEntry) -> usize {
    e.event.len() + e.body.as_ref().map_or(0, Vec::len)
}

impl Recent {
    fn push(&mut self, e: LogEntry) {
        self.bytes += entry_bytes(&e);
        self.entries.push_back(e);
        while self.entries.len() > RECENT_ENTRIES || (self.bytes > RECENT_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= entry_bytes(&e);
        }
    }

    /// Forgets what retention removed.
    fn prune(&mut self, through: u64) {
        while self.entries.front().is_some_and(|e| e.offset <= through) {
            self.pop_front();
        }
    }

    /// The entries after `after` that `filter` admits (at most `limit`), or `None` when entries
    /// after `after` may be older than what is kept here (the caller reads SQLite then).
    fn read(&self, after: u64, limit: usize, filter: &ReadFilter) -> Option<Vec<LogEntry>> {
        let first = self.entries.front()?.offset;
        if after.saturating_add(1) < first {
            return None;
        }
        let start = self.entries.partition_point(|e| e.offset <= after);
        Some(self.entries.range(start..).filter(|e| filter.admits(e)).take(limit).cloned().collect())
    }
}

pub struct SqliteLog {
    tx: mpsc::Sender<Msg<Cmd>>,
    /// What the writer committed last (empty when opened read-only).
    recent: Arc<RwLock<Recent>>,
    pruned: Arc<AtomicU64>,
    head: watch::Receiver<u64>,
    readers: Arc<ReaderPool>,
    index: Option<Arc<PartitionIndex>>,
    /// Schema versions this open applied.
    applied: Vec<i32>,
    threads: db::Threads,
    _lock: Option<File>,
}

impl SqliteLog {
    /// Opens (creating if needed) the log in `dir/events.db`, migrating it, and starts its writer,
    /// checkpointer and indexer threads. Takes the directory's lock.
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<SqliteLog, LogError> {
        let lock = db::lock_dir(dir).map_err(LogError::Unavailable)?;
        let path = dir.join("events.db");
        let mut conn = db::open_durable(&path).map_err(unavailable)?;
        let applied = migrate::apply_sqlite(&mut conn, EVENTS, &format!("embedded database {}", path.display()), dir)
            .map_err(|e| LogError::Unavailable(format!("{e:#}")))?;
        if !applied.is_empty() {
            tracing::info!(?applied, path = %path.display(), "embedded database migrated");
        }
        conn.pragma_update(None, "wal_autocheckpoint", db::WAL_AUTOCHECKPOINT).map_err(unavailable)?;
        conn.pragma_update(None, "cache_size", -32768).map_err(unavailable)?;
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(unavailable)?;
        if opts.max_db_bytes > 0 {
            let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(unavailable)?;
            let pages = (opts.max_db_bytes / page_size).max(1);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).map_err(unavailable)?;
        }
        let pruned = read_pruned(&conn).map_err(unavailable)?;
        let head: u64 = conn
            .query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get::<_, i64>(0))
            .map_err(unavailable)? as u64;
        // Offsets are never reused, even when retention removed every entry.
        let head = head.max(pruned);
        let started = Instant::now();
        let dedupe = Dedupe::load(&conn).map_err(unavailable)?;
        if dedupe.len() > 100_000 {
            tracing::info!(keys = dedupe.len(), ms = started.elapsed().as_millis() as u64, "dedupe keys loaded");
        }
        let pruned = Arc::new(AtomicU64::new(pruned));
        let (head_tx, head_rx) = watch::channel(head);
        let threads = db::Threads::default();
        let thread_failed = |e: std::io::Error| LogError::Unavailable(format!("cannot start a log thread: {e}"));
        threads.add(
            db::spawn_checkpointer("log-ckpt", db::open_durable(&path).map_err(unavailable)?, head_rx.clone())
                .map_err(thread_failed)?,
        );
        let (index, indexer) = PartitionIndex::open(dir, &path, head_rx.clone(), pruned.clone())
            .map_err(|e| LogError::Unavailable(format!("partition index {}: {e}", dir.join("index.db").display())))?;
        threads.add(indexer);
        let (tx, rx) = mpsc::channel(opts.queue_depth);
        let recent = Arc::new(RwLock::new(Recent::default()));
        let mut writer =
            Writer { conn, next: head + 1, head_tx, pruned: pruned.clone(), dedupe, recent: recent.clone() };
        threads.add(
            db::spawn_writer("log-writer", opts.max_batch, rx, cmd_size, move |b, n| writer.commit(b, n), fail)
                .map_err(thread_failed)?,
        );
        Ok(SqliteLog {
            tx,
            recent,
            pruned,
            head: head_rx,
            readers: Arc::new(ReaderPool::new(path, None)),
            index: Some(index),
            applied,
            threads,
            _lock: Some(lock),
        })
    }

    /// The schema versions this open applied (empty when the file was current).
    pub fn migrations_applied(&self) -> &[i32] {
        &self.applied
    }

    /// Opens an existing log for reading only, beside a server that may be running on it
    /// (backtests, audits). Appends answer `Closed`; a newer schema is refused.
    pub fn open_read_only(dir: &Path) -> Result<SqliteLog, LogError> {
        let path = dir.join("events.db");
        if !path.is_file() {
            return Err(LogError::Unavailable(format!("no event log at {}", path.display())));
        }
        let conn = db::open_durable(&path).map_err(unavailable)?;
        conn.pragma_update(None, "query_only", true).map_err(unavailable)?;
        let versions = migrate::sqlite_versions(&conn).map_err(unavailable)?;
        migrate::pending(&format!("embedded database {}", path.display()), EVENTS, &versions)
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        let head: u64 = conn
            .query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get::<_, i64>(0))
            .map_err(unavailable)? as u64;
        let pruned = read_pruned(&conn).map_err(unavailable)?;
        let (_, head_rx) = watch::channel(head.max(pruned));
        let (tx, _) = mpsc::channel(1);
        Ok(SqliteLog {
            tx,
            recent: Arc::default(),
            pruned: Arc::new(AtomicU64::new(pruned)),
            head: head_rx,
            readers: Arc::new(ReaderPool::new(path, Some(conn))),
            index: None,
            applied: Vec::new(),
            threads: db::Threads::default(),
            _lock: None,
        })
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LogError> {
        self.readers.read(f).await.map_err(LogError::Unavailable)
    }

    /// A command to the writer, and its answer.
    async fn send<T>(&self, cmd: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Cmd) -> Result<T, LogError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Cmd(cmd(reply))).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }
}

fn read_pruned(conn: &Connection) -> rusqlite::Result<u64> {
    let v: Option<i64> =
        conn.query_row("SELECT value FROM log_meta WHERE key = 'pruned_through'", [], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0) as u64)
}

fn unavailable(e: rusqlite::Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// Every stored dedupe key's hash → the offset of its entry (a key that shares a hash with
/// another is in `extra`).
struct Dedupe {
    map: HashMap<i64, u64>,
    extra: HashMap<i64, Vec<u64>>,
}

impl Dedupe {
    fn load(conn: &Connection) -> rusqlite::Result<Dedupe> {
        let count: i64 = conn.query_row("SELECT count(*) FROM dedupe", [], |r| r.get(0))?;
        let mut d = Dedupe { map: HashMap::with_capacity(count as usize), extra: HashMap::new() };
        let mut stmt = conn.prepare("SELECT offset, hash FROM dedupe")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (offset, hash) = row?;
            d.insert(hash, offset as u64);
        }
        Ok(d)
    }

    fn len(&self) -> usize {
        self.map.len() + self.extra.values().map(Vec::len).sum::<usize>()
    }

    fn candidates(&self, hash: i64) -> impl Iterator<Item = u64> + '_ {
        self.map.get(&hash).copied().into_iter().chain(self.extra.get(&hash).into_iter().flatten().copied())
    }

    fn insert(&mut self, hash: i64, offset: u64) {
        if let Some(prev) = self.map.insert(hash, offset) {
            // A second key with this hash: keep both.
            self.map.insert(hash, prev);
            self.extra.entry(hash).or_default().push(offset);
        }
    }

    fn remove(&mut self, hash: i64, offset: u64) {
        if let Some(list) = self.extra.get_mut(&hash) {
            if let Some(i) = list.iter().position(|&o| o == offset) {
                list.swap_remove(i);
                if list.is_empty() {
                    self.extra.remove(&hash);
                }
                return;
            }
        }
        if self.map.get(&hash) == Some(&offset) {
            self.map.remove(&hash);
            // Promote a key that shared the hash.
            if let Some(list) = self.extra.get_mut(&hash) {
                let o = list.pop().expect("non-empty");
                if list.is_empty() {
                    self.extra.remove(&hash);
                }
                self.map.insert(hash, o);
            }
        }
    }
}

struct Writer {
    conn: Connection,
    /// The offset the next appended entry gets.
    next: u64,
    head_tx: watch::Sender<u64>,
    pruned: Arc<AtomicU64>,
    dedupe: Dedupe,
    recent: Arc<RwLock<Recent>>,
}

/// What one command produced inside the batch transaction.
enum Outcome {
    Appended(Vec<Appended>),
    Pruned(u64),
}

impl Writer {
    fn commit(&mut self, mut work: Vec<Cmd>, size: usize) {
        let started = Instant::now();
        let first_offset = self.next;
        // Dedupe hashes added by this batch, taken back if it fails.
        let mut added = Vec::new();
        let mut removed = Vec::new();
        match self.write(&work, &mut added, &mut removed) {
            Ok((outcomes, appended_at_us)) => {
                metrics::histogram!("idstream_log_batch_entries").record(size as f64);
                metrics::histogram!("idstream_log_commit_seconds").record(started.elapsed().as_secs_f64());
                self.remember(&mut work, &outcomes, appended_at_us);
                if self.next != first_offset {
                    self.head_tx.send_replace(self.next - 1);
                }
                for (hash, offset) in removed {
                    self.dedupe.remove(hash, offset);
                }
                for (cmd, outcome) in work.into_iter().zip(outcomes) {
                    match (cmd, outcome) {
                        (Cmd::Append { reply, .. }, Outcome::Appended(r)) => {
                            let _ = reply.send(Ok(r));
                        }
                        (Cmd::Prune { reply, .. }, Outcome::Pruned(p)) => {
                            self.pruned.store(p, Ordering::Release);
                            let _ = reply.send(Ok(p));
                        }
                        _ => unreachable!("outcomes are produced in command order"),
                    }
                }
            }
            Err(e) => {
                // Rolled back: none of these offsets exist, so the next batch reuses them.
                self.next = first_offset;
                for (hash, offset) in added {
                    self.dedupe.remove(hash, offset);
                }
                metrics::counter!("idstream_log_failed_batches_total").increment(1);
                tracing::error!(error = %e, entries = size, "event log batch failed; nothing of it was stored");
                let msg = e.to_string();
                for cmd in work {
                    reply_err(cmd, LogError::Unavailable(msg.clone()));
                }
            }
        }
    }

    /// Keeps what this commit appended in [`Recent`] and drops what it pruned, before the head
    /// moves (so a reader woken by the head finds the entries there).
    fn remember(&self, work: &mut [Cmd], outcomes: &[Outcome], appended_at_us: i64) {
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        for (cmd, outcome) in work.iter_mut().zip(outcomes) {
            match (cmd, outcome) {
                // The entries are not needed once committed: moved here, not copied.
                (Cmd::Append { entries, .. }, Outcome::Appended(results)) => {
                    for (e, a) in std::mem::take(entries).into_iter().zip(results).filter(|(_, a)| !a.duplicate) {
                        recent.push(LogEntry {
                            offset: a.offset,
                            id: e.id,
                            tenant: e.tenant,
                            source: e.source,
                            kind: e.kind,
                            partition_key: e.partition_key,
                            appended_at_us,
                            event: e.event,
                            body: e.body,
                        });
                    }
                }
                (Cmd::Prune { .. }, Outcome::Pruned(p)) => recent.prune(*p),
                _ => unreachable!("outcomes are produced in command order"),
            }
        }
    }

    /// The batch in one transaction: each command's outcome, and the entries' `appended_at`.
    fn write(
        &mut self,
        work: &[Cmd],
        added: &mut Vec<(i64, u64)>,
        removed: &mut Vec<(i64, u64)>,
    ) -> rusqlite::Result<(Vec<Outcome>, i64)> {
        let now_us = crate::util::now_us();
        let mut next = self.next;
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(work.len());
        {
            let mut stmts = Statements::new(&tx)?;
            for cmd in work {
                match cmd {
                    Cmd::Append { entries, .. } => {
                        let mut results = Vec::with_capacity(entries.len());
                        for e in entries {
                            results.push(insert_entry(&mut stmts, &mut self.dedupe, added, e, &mut next, now_us)?);
                        }
                        outcomes.push(Outcome::Appended(results));
                    }
                    Cmd::Prune { through, max, .. } => {
                        outcomes.push(Outcome::Pruned(prune(&tx, (*through).min(next - 1), *max, removed)?));
                    }
                }
            }
        }
        tx.commit()?;
        self.next = next;
        Ok((outcomes, now_us))
    }
}

struct Statements<'t> {
    insert: rusqlite::CachedStatement<'t>,
    insert_key: rusqlite::CachedStatement<'t>,
    stored_key: rusqlite::CachedStatement<'t>,
    id_of: rusqlite::CachedStatement<'t>,
}

impl<'t> Statements<'t> {
    fn new(tx: &'t rusqlite::Transaction<'_>) -> rusqlite::Result<Statements<'t>> {
        Ok(Statements {
            insert: tx.prepare_cached(
                "INSERT INTO events (offset, id, tenant, source, kind, partition_key, appended_at, event, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?,
            insert_key: tx.prepare_cached("INSERT INTO dedupe (offset, hash, key) VALUES (?1, ?2, ?3)")?,
            stored_key: tx.prepare_cached("SELECT key FROM dedupe WHERE offset = ?1")?,
            id_of: tx.prepare_cached("SELECT id FROM events WHERE offset = ?1")?,
        })
    }
}

fn insert_entry(
    s: &mut Statements<'_>,
    dedupe: &mut Dedupe,
    added: &mut Vec<(i64, u64)>,
    e: &NewEntry,
    next: &mut u64,
    now_us: i64,
) -> rusqlite::Result<Appended> {
    let hash = e.dedupe_key.as_deref().map(dedupe_hash);
    if let (Some(key), Some(hash)) = (&e.dedupe_key, hash) {
        for offset in dedupe.candidates(hash).collect::<Vec<_>>() {
            let stored: Option<String> = s.stored_key.query_row([offset as i64], |r| r.get(0)).optional()?;
            if stored.as_deref() == Some(key.as_str()) {
                let id: String = s.id_of.query_row([offset as i64], |r| r.get(0))?;
                return Ok(Appended { offset, id, duplicate: true });
            }
        }
    }
    let offset = *next;
    s.insert.execute(params![
        offset as i64,
        e.id,
        e.tenant,
        e.source,
        e.kind,
        e.partition_key,
        now_us,
        e.event,
        e.body
    ])?;
    if let (Some(key), Some(hash)) = (&e.dedupe_key, hash) {
        s.insert_key.execute(params![offset as i64, hash, key])?;
        dedupe.insert(hash, offset);
        added.push((hash, offset));
    }
    *next += 1;
    Ok(Appended { offset, id: e.id.clone(), duplicate: false })
}

/// Removes entries with offset <= `through`, at most `max` of them; returns the new
/// `pruned_through` and lists the dedupe hashes removed (taken out of the map on commit).
fn prune(
    tx: &rusqlite::Transaction<'_>,
    through: u64,
    max: usize,
    removed: &mut Vec<(i64, u64)>,
) -> rusqlite::Result<u64> {
    let current = read_pruned(tx)?;
    if through <= current {
        return Ok(current);
    }
    // At most `max` entries per call: stop below the (max+1)-th.
    let beyond: Option<i64> = tx
        .prepare_cached("SELECT offset FROM events WHERE offset <= ?1 ORDER BY offset LIMIT 1 OFFSET ?2")?
        .query_row(params![through as i64, i64::try_from(max).unwrap_or(i64::MAX)], |r| r.get(0))
        .optional()?;
    let upto = beyond.map_or(through, |o| o as u64 - 1);
    {
        let mut keys = tx.prepare_cached("SELECT offset, hash FROM dedupe WHERE offset <= ?1")?;
        for row in keys.query_map([upto as i64], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(0)? as u64)))? {
            removed.push(row?);
        }
    }
    tx.prepare_cached("DELETE FROM dedupe WHERE offset <= ?1")?.execute([upto as i64])?;
    tx.prepare_cached("DELETE FROM events WHERE offset <= ?1")?.execute([upto as i64])?;
    tx.prepare_cached(
        "INSERT INTO log_meta (key, value) VALUES ('pruned_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([upto as i64])?;
    Ok(upto)
}

fn cmd_size(cmd: &Cmd) -> usize {
    match cmd {
        Cmd::Append { entries, .. } => entries.len(),
        Cmd::Prune { .. } => 1,
    }
}

fn reply_err(cmd: Cmd, err: LogError) {
    match cmd {
        Cmd::Append { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Cmd::Prune { reply, .. } => {
            let _ = reply.send(Err(err));
        }
    }
}

fn fail(cmd: Cmd) {
    reply_err(cmd, LogError::Closed)
}

/// `index.db`: session (partition) → offsets, maintained by its own thread behind the log's
/// head. Derived data: written without fsync on every commit (`synchronous=NORMAL`: consistent
/// after a crash, possibly behind), rebuilt from the log when missing or unreadable.
struct PartitionIndex {
    readers: Arc<ReaderPool>,
    /// Entries at or below this offset are in the index.
    through: Arc<AtomicU64>,
}

const INDEX_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pidx (
    partition_key TEXT NOT NULL,
    offset        INTEGER NOT NULL,
    PRIMARY KEY (partition_key, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Entries indexed per commit of the indexer.
const INDEX_BATCH: i64 = 20_000;

impl PartitionIndex {
    fn open(
        dir: &Path,
        events: &Path,
        head: watch::Receiver<u64>,
        pruned: Arc<AtomicU64>,
    ) -> Result<(Arc<PartitionIndex>, std::thread::JoinHandle<()>), String> {
        let path = dir.join("index.db");
        let open = |path: &PathBuf| -> rusqlite::Result<(Connection, u64)> {
            let c = Connection::open(path)?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "busy_timeout", 5000)?;
            c.execute_batch(INDEX_SCHEMA)?;
            let through: Option<i64> =
                c.query_row("SELECT value FROM meta WHERE key = 'through'", [], |r| r.get(0)).optional()?;
            Ok((c, through.unwrap_or(0) as u64))
        };
        let (conn, through) = match open(&path) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "partition index unreadable; rebuilding it");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                open(&path).map_err(|e| e.to_string())?
            }
        };
        let source = db::open_durable(events).map_err(|e| e.to_string())?;
        source.pragma_update(None, "query_only", true).map_err(|e| e.to_string())?;
        let through = Arc::new(AtomicU64::new(through));
        let t = through.clone();
        let thread = std::thread::Builder::new()
            .name("log-index".into())
            .spawn(move || run_indexer(conn, source, t, head, pruned))
            .map_err(|e| e.to_string())?;
        Ok((Arc::new(PartitionIndex { readers: Arc::new(ReaderPool::new(path, None)), through }), thread))
    }
}

/// Indexes the log's new entries, in batches, and forgets what retention removed, until the
/// log closes.
fn run_indexer(
    mut conn: Connection,
    source: Connection,
    through: Arc<AtomicU64>,
    mut head: watch::Receiver<u64>,
    pruned: Arc<AtomicU64>,
) {
    let mut forgotten = 0;
    let step = |conn: &mut Connection, from: u64| -> rusqlite::Result<Option<u64>> {
        let mut rows = source
            .prepare_cached("SELECT offset, partition_key FROM events WHERE offset > ?1 ORDER BY offset LIMIT ?2")?;
        let batch: Vec<(i64, String)> = rows
            .query_map(params![from as i64, INDEX_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let Some(last) = batch.last().map(|(o, _)| *o as u64) else { return Ok(None) };
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO pidx (partition_key, offset) VALUES (?1, ?2)")?;
            for (offset, key) in &batch {
                insert.execute(params![key, offset])?;
            }
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('through', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([last as i64])?;
        }
        tx.commit()?;
        Ok(Some(last))
    };
    loop {
        match step(&mut conn, through.load(Ordering::Acquire)) {
            Ok(Some(last)) => {
                through.store(last, Ordering::Release);
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "partition index: cannot index; will retry"),
        }
        let p = pruned.load(Ordering::Acquire);
        if p > forgotten {
            match conn.execute("DELETE FROM pidx WHERE offset <= ?1", [p as i64]) {
                Ok(_) => forgotten = p,
                Err(e) => tracing::warn!(error = %e, "partition index: cannot forget pruned entries; will retry"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        if head.has_changed().is_err() {
            return;
        }
        head.mark_unchanged();
    }
}

const COLUMNS: &str = "offset, id, tenant, source, kind, partition_key, appended_at, event, body";

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogEntry> {
    Ok(LogEntry {
        offset: r.get::<_, i64>(0)? as u64,
        id: r.get(1)?,
        tenant: r.get(2)?,
        source: r.get(3)?,
        kind: r.get(4)?,
        partition_key: r.get(5)?,
        appended_at_us: r.get(6)?,
        event: r.get(7)?,
        body: r.get(8)?,
    })
}

/// Entries after `after` matching the filter, scanning the log in offset order.
fn scan(c: &Connection, after: u64, limit: usize, filter: &ReadFilter) -> rusqlite::Result<Vec<LogEntry>> {
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE offset > ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![(after as i64).into()];
    if let Some(t) = &filter.tenant {
        args.push(t.clone().into());
        sql.push_str(&format!(" AND tenant = ?{}", args.len()));
    }
    if let Some(p) = &filter.partition_key {
        args.push(p.clone().into());
        sql.push_str(&format!(" AND partition_key = ?{}", args.len()));
    }
    args.push((limit as i64).into());
    sql.push_str(&format!(" ORDER BY offset LIMIT ?{}", args.len()));
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), row_to_entry)?;
    rows.collect()
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|reply| Cmd::Append { entries, reply }).await
    }

    async fn read(&self, after: u64, limit: usize, filter: &ReadFilter) -> Result<Vec<LogEntry>, LogError> {
        if let Some(entries) = self.recent.read().unwrap_or_else(|e| e.into_inner()).read(after, limit, filter) {
            return Ok(entries);
        }
        let filter = filter.clone();
        let (Some(key), Some(index)) = (filter.partition_key.clone(), self.index.clone()) else {
            return self.with_reader(move |c| scan(c, after, limit, &filter)).await;
        };
        // A session's entries: what the index has, then the tail it has not reached yet. The
        // index knows partitions only, so with a tenant filter a page of offsets may hold
        // entries of other tenants: read on until `limit` entries match or the index is
        // exhausted (a short answer tells catching-up readers they have seen everything).
        let through = index.through.load(Ordering::Acquire);
        let mut out: Vec<LogEntry> = Vec::new();
        let (mut cursor, mut exhausted) = (after, after >= through);
        while !exhausted && out.len() < limit {
            let k = key.clone();
            let offsets: Vec<i64> = index
                .readers
                .read(move |c| {
                    c.prepare_cached(
                        "SELECT offset FROM pidx WHERE partition_key = ?1 AND offset > ?2 AND offset <= ?3
                         ORDER BY offset LIMIT ?4",
                    )?
                    .query_map(params![k, cursor as i64, through as i64, limit as i64], |r| r.get(0))?
                    .collect()
                })
                .await
                .map_err(LogError::Unavailable)?;
            exhausted = offsets.len() < limit;
            cursor = offsets.last().map_or(cursor, |&o| o as u64);
            let (tenant, want) = (filter.tenant.clone(), limit - out.len());
            out.extend(
                self.with_reader(move |c| {
                    let mut found = Vec::new();
                    let mut by_offset = c.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE offset = ?1"))?;
                    for o in &offsets {
                        // Gone only when retention removed it meanwhile.
                        if let Some(e) = by_offset.query_row([o], row_to_entry).optional()? {
                            if tenant.as_ref().is_none_or(|t| *t == e.tenant) && found.len() < want {
                                found.push(e);
                            }
                        }
                    }
                    Ok(found)
                })
                .await?,
            );
        }
        if out.len() < limit {
            let want = limit - out.len();
            out.extend(self.with_reader(move |c| scan(c, after.max(through), want, &filter)).await?);
        }
        Ok(out)
    }

    async fn get(&self, id: &str) -> Result<Option<LogEntry>, LogError> {
        let id = id.to_owned();
        self.with_reader(move |c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE id = ?1"))?
                .query_row([id], row_to_entry)
                .optional()
        })
        .await
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    fn pruned_through(&self) -> u64 {
        self.pruned.load(Ordering::Acquire)
    }

    async fn prune(&self, through: u64, max: usize) -> Result<u64, LogError> {
        self.send(|reply| Cmd::Prune { through, max: max.max(1), reply }).await
    }

    async fn last_offset_before(&self, unix_us: i64) -> Result<u64, LogError> {
        self.with_reader(move |c| {
            // appended_at grows with offset (one writer, one clock), so the first entry at or
            // after the time bounds the answer; scanning from the oldest end stays short.
            let first_after: Option<i64> = c
                .prepare_cached("SELECT offset FROM events WHERE appended_at >= ?1 ORDER BY offset LIMIT 1")?
                .query_row([unix_us], |r| r.get(0))
                .optional()?;
            match first_after {
                Some(o) => Ok((o as u64).saturating_sub(1)),
                None => c
                    .query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get::<_, i64>(0))
                    .map(|o| o as u64),
            }
        })
        .await
    }

    async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = rx.await;
        }
        self.threads.join().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(offset: u64, tenant: &str, partition: &str, bytes: usize) -> LogEntry {
        LogEntry {
            offset,
            id: format!("id-{offset}"),
            tenant: tenant.into(),
            source: "s".into(),
            kind: "k".into(),
            partition_key: partition.into(),
            appended_at_us: 0,
            event: vec![b'x'; bytes],
            body: None,
        }
    }

    #[test]
    fn recent_entries_answer_only_reads_they_cover() {
        let mut r = Recent::default();
        assert!(r.read(0, 10, &ReadFilter::default()).is_none(), "nothing kept: the database answers");
        for o in 1..=10 {
            r.push(logged(o, if o % 2 == 0 { "a" } else { "b" }, "p", 1));
        }
        let offsets = |v: Option<Vec<LogEntry>>| v.map(|v| v.iter().map(|e| e.offset).collect::<Vec<_>>());
        assert_eq!(offsets(r.read(0, 100, &ReadFilter::default())), Some((1..=10).collect()));
        assert_eq!(offsets(r.read(7, 2, &ReadFilter::default())), Some(vec![8, 9]));
        assert_eq!(offsets(r.read(10, 5, &ReadFilter::default())), Some(vec![]), "nothing newer yet");
        let a = ReadFilter { tenant: Some("a".into()), partition_key: None };
        assert_eq!(offsets(r.read(3, 2, &a)), Some(vec![4, 6]));
        let other = ReadFilter { tenant: None, partition_key: Some("q".into()) };
        assert_eq!(offsets(r.read(0, 5, &other)), Some(vec![]));
        // Retention: what it removed is gone; reads from before what is kept go to the database.
        r.prune(3);
        assert!(r.read(2, 10, &ReadFilter::default()).is_none());
        assert_eq!(offsets(r.read(3, 1, &ReadFilter::default())), Some(vec![4]));
        // Bounded by count and by bytes; the newest entry stays even when larger than the bound.
        for o in 11..=(10 + RECENT_ENTRIES as u64) {
            r.push(logged(o, "a", "p", 1));
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES);
        assert_eq!(r.entries.front().map(|e| e.offset), Some(11));
        r.push(logged(5000, "a", "p", RECENT_BYTES + 1));
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.bytes, RECENT_BYTES + 1);
    }

    #[test]
    fn dedupe_map_keeps_keys_that_share_a_hash() {
        let mut d = Dedupe { map: HashMap::new(), extra: HashMap::new() };
        d.insert(7, 1);
        d.insert(7, 2);
        d.insert(9, 3);
        assert_eq!(d.candidates(7).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(d.len(), 3);
        d.remove(7, 1);
        assert_eq!(d.candidates(7).collect::<Vec<_>>(), [2]);
        d.remove(7, 2);
        assert_eq!(d.candidates(7).count(), 0);
        assert_eq!(d.len(), 1);
    }
}
