//! The embedded event log: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the only writing connection. Appends from every request queue up
//! in front of it; it takes everything queued (up to `max_batch` entries), writes it in one
//! transaction and commits, which fsyncs the WAL once for the whole batch (group commit).
//! Only then are the callers answered, so an acknowledged entry is on disk. Because there is
//! exactly one writer, offsets are assigned in commit order with no holes: a failed batch is
//! rolled back and its offsets are reused by the next one.
//!
//! Readers use a small pool of separate connections; WAL lets them read committed data while
//! the writer works. A lock file in the data directory keeps a second process from opening
//! the same log (two writers would break the offset invariant).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Appended, EventLog, LogEntry, LogError, NewEntry, ReadFilter};
use crate::store::{Txn, TxnError};

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

pub(crate) enum Cmd {
    Append { entries: Vec<NewEntry>, reply: oneshot::Sender<Result<Vec<Appended>, LogError>> },
    Checkpoint { consumer: String, offset: u64, reply: oneshot::Sender<Result<(), LogError>> },
    Txn { txn: Txn, reply: oneshot::Sender<Result<Vec<Appended>, TxnError>> },
    Prune { through: u64, max: usize, reply: oneshot::Sender<Result<u64, LogError>> },
    Shutdown(oneshot::Sender<()>),
}

pub struct SqliteLog {
    pub(crate) tx: mpsc::Sender<Cmd>,
    pruned: Arc<std::sync::atomic::AtomicU64>,
    head: watch::Receiver<u64>,
    readers: Arc<ReaderPool>,
    /// Schema versions this open applied.
    applied: Vec<i32>,
    _lock: File,
}

impl SqliteLog {
    /// Opens (creating if needed) the log in `dir/events.db` and starts its writer thread.
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<SqliteLog, LogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::Unavailable(format!("cannot create data directory {}: {e}", dir.display())))?;
        let lock_path = dir.join("idstream.lock");
        let lock = File::create(&lock_path)
            .map_err(|e| LogError::Unavailable(format!("cannot create {}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|_| {
            LogError::Unavailable(format!(
                "{} is in use by another idstream process (lock file {})",
                dir.display(),
                lock_path.display()
            ))
        })?;

        let path = dir.join("events.db");
        let mut conn = open_conn(&path).map_err(unavailable)?;
        let applied = crate::store::migrate::apply_sqlite(&mut conn, &format!("embedded database {}", path.display()))
            .map_err(|e| LogError::Unavailable(format!("{e:#}")))?;
        if !applied.is_empty() {
            tracing::info!(?applied, path = %path.display(), "embedded database migrated");
        }
        // Checkpoints (copying the WAL back into the database) are mostly done by a
        // background thread (`run_checkpointer`) so the writer rarely stalls on one. The
        // writer still runs its own auto-checkpoint every 4000 frames: by then the background
        // thread has copied nearly everything, so it is short, and because it completes, the
        // next commit restarts the WAL from its beginning. Without that the WAL grows without
        // bound under sustained load, and every commit pays for the kernel allocating and
        // zeroing fresh file blocks (measured: ~30% of the writer's time).
        conn.pragma_update(None, "wal_autocheckpoint", 4000).map_err(unavailable)?;
        // The dedupe and partition indexes have random keys: keep their hot pages cached.
        conn.pragma_update(None, "cache_size", -32768).map_err(unavailable)?;
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(unavailable)?;
        let checkpointer = open_conn(&path).map_err(unavailable)?;
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
        let pruned = Arc::new(std::sync::atomic::AtomicU64::new(pruned));
        let (head_tx, head_rx) = watch::channel(head);
        let ckpt_head = head_rx.clone();
        std::thread::Builder::new()
            .name("idstream-log-ckpt".into())
            .spawn(move || run_checkpointer(checkpointer, ckpt_head))
            .map_err(|e| LogError::Unavailable(format!("cannot start the log checkpointer: {e}")))?;
        let (tx, rx) = mpsc::channel(opts.queue_depth);
        let max_batch = opts.max_batch;
        std::thread::Builder::new()
            .name("idstream-log-writer".into())
            .spawn({
                let pruned = pruned.clone();
                move || Writer { conn, next: head + 1, head_tx, max_batch, pruned }.run(rx)
            })
            .map_err(|e| LogError::Unavailable(format!("cannot start the log writer: {e}")))?;
        Ok(SqliteLog {
            tx,
            pruned,
            head: head_rx,
            readers: Arc::new(ReaderPool { path, idle: Mutex::new(Vec::new()) }),
            applied,
            _lock: lock,
        })
    }

    /// The schema versions this open applied (empty when the file was current).
    pub fn migrations_applied(&self) -> &[i32] {
        &self.applied
    }

    /// Opens an existing log for reading only, beside a server that may be running on it
    /// (backtests, audits). Appends and commits answer `Closed`.
    pub fn open_read_only(dir: &Path) -> Result<SqliteLog, LogError> {
        let path = dir.join("events.db");
        if !path.is_file() {
            return Err(LogError::Unavailable(format!("no event log at {}", path.display())));
        }
        let conn = open_conn(&path).map_err(unavailable)?;
        conn.pragma_update(None, "query_only", true).map_err(unavailable)?;
        // Read-only: an older file is read as it is; a newer one is refused.
        let versions = crate::store::migrate::sqlite_versions(&conn).map_err(unavailable)?;
        crate::store::migrate::pending(
            &format!("embedded database {}", path.display()),
            crate::store::migrate::SQLITE,
            &versions,
        )
        .map_err(|e| LogError::Unavailable(e.to_string()))?;
        let head: u64 = conn
            .query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get::<_, i64>(0))
            .map_err(unavailable)? as u64;
        let pruned = read_pruned(&conn).map_err(unavailable)?;
        let (_, head_rx) = watch::channel(head.max(pruned));
        let (tx, _) = mpsc::channel(1);
        let lock = File::open(&path).map_err(|e| LogError::Unavailable(format!("{}: {e}", path.display())))?;
        Ok(SqliteLog {
            tx,
            pruned: Arc::new(std::sync::atomic::AtomicU64::new(pruned)),
            head: head_rx,
            readers: Arc::new(ReaderPool { path, idle: Mutex::new(vec![conn]) }),
            applied: Vec::new(),
            _lock: lock,
        })
    }

    pub(crate) async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LogError> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn).map_err(unavailable);
            pool.give(conn);
            out
        })
        .await
        .map_err(|e| LogError::Unavailable(format!("reader task failed: {e}")))?
    }
}

fn read_pruned(conn: &Connection) -> rusqlite::Result<u64> {
    // A read-only open of a log written before retention existed has no log_meta table.
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log_meta')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> =
        conn.query_row("SELECT value FROM log_meta WHERE key = 'pruned_through'", [], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0) as u64)
}

fn unavailable(e: rusqlite::Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // WAL + FULL: a commit returns only after the WAL is fsync'd. This is what makes an
    // acknowledgement mean "on disk".
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

/// Copies committed WAL frames into the database file in the background: every 50 ms with
/// new commits, a PASSIVE checkpoint, which never blocks the writer or readers. (A RESTART
/// checkpoint here was measured to make tail latency worse: it waits for the writer.) Stops
/// when the log closes (the head channel's sender is dropped with the writer).
fn run_checkpointer(conn: Connection, mut head: watch::Receiver<u64>) {
    let checkpoint = |mode: &str| conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        match head.has_changed() {
            Ok(true) => {
                head.mark_unchanged();
                if let Err(e) = checkpoint("PASSIVE") {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
            Ok(false) => {}
            Err(_) => {
                // Writer gone: one last full checkpoint so the WAL does not outlive the process.
                let _ = checkpoint("TRUNCATE");
                return;
            }
        }
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, LogError> {
        if let Some(c) = self.idle.lock().expect("reader pool poisoned").pop() {
            return Ok(c);
        }
        let c = open_conn(&self.path).map_err(unavailable)?;
        c.pragma_update(None, "query_only", true).map_err(unavailable)?;
        Ok(c)
    }
    fn give(&self, c: Connection) {
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < 16 {
            idle.push(c);
        }
    }
}

struct Writer {
    conn: Connection,
    /// The offset the next appended entry gets.
    next: u64,
    head_tx: watch::Sender<u64>,
    max_batch: usize,
    pruned: Arc<std::sync::atomic::AtomicU64>,
}

/// What one queued command produced inside the batch transaction.
enum Outcome {
    Appended(Vec<Appended>),
    Checkpointed,
    /// A txn: applied, or its condition failed and it was rolled back to its savepoint.
    Txn(Result<Vec<Appended>, TxnError>),
    Pruned(u64),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut batch: Vec<Cmd> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut size = cmd_size(&first);
            batch.push(first);
            while size < self.max_batch {
                match rx.try_recv() {
                    Ok(cmd) => {
                        size += cmd_size(&cmd);
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            let mut shutdown = None;
            let work: Vec<Cmd> = batch
                .drain(..)
                .filter_map(|c| match c {
                    Cmd::Shutdown(done) => {
                        shutdown = Some(done);
                        None
                    }
                    other => Some(other),
                })
                .collect();
            if !work.is_empty() {
                self.commit(work, size);
            }
            if let Some(done) = shutdown {
                // Commands queued after the shutdown request are answered `Closed` when the
                // receiver drops.
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    fail(cmd, || LogError::Closed);
                }
                let _ = done.send(());
                return;
            }
        }
    }

    fn commit(&mut self, work: Vec<Cmd>, size: usize) {
        let started = Instant::now();
        let first_offset = self.next;
        match self.write(&work) {
            Ok(outcomes) => {
                metrics::histogram!("idstream_log_batch_entries").record(size as f64);
                metrics::histogram!("idstream_log_commit_seconds").record(started.elapsed().as_secs_f64());
                if self.next != first_offset {
                    self.head_tx.send_replace(self.next - 1);
                }
                for (cmd, outcome) in work.into_iter().zip(outcomes) {
                    match (cmd, outcome) {
                        (Cmd::Append { reply, .. }, Outcome::Appended(r)) => {
                            let _ = reply.send(Ok(r));
                        }
                        (Cmd::Checkpoint { reply, .. }, Outcome::Checkpointed) => {
                            let _ = reply.send(Ok(()));
                        }
                        (Cmd::Txn { reply, .. }, Outcome::Txn(r)) => {
                            let _ = reply.send(r);
                        }
                        (Cmd::Prune { reply, .. }, Outcome::Pruned(p)) => {
                            self.pruned.store(p, std::sync::atomic::Ordering::Release);
                            let _ = reply.send(Ok(p));
                        }
                        _ => unreachable!("outcomes are produced in command order"),
                    }
                }
            }
            Err(e) => {
                // Rolled back: none of these offsets exist, so the next batch reuses them.
                self.next = first_offset;
                metrics::counter!("idstream_log_failed_batches_total").increment(1);
                tracing::error!(error = %e, entries = size, "event log batch failed; nothing of it was stored");
                let msg = e.to_string();
                for cmd in work {
                    fail(cmd, || LogError::Unavailable(msg.clone()));
                }
            }
        }
    }

    fn write(&mut self, work: &[Cmd]) -> rusqlite::Result<Vec<Outcome>> {
        let now_us = crate::util::now_us();
        let mut next = self.next;
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(work.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (offset, id, tenant, source, kind, partition_key, dedupe_key, appended_at, event, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (dedupe_key) DO NOTHING",
            )?;
            let mut find = tx.prepare_cached("SELECT offset, id FROM events WHERE dedupe_key = ?1")?;
            let mut checkpoint = tx.prepare_cached(
                "INSERT INTO checkpoints (consumer, offset, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (consumer) DO UPDATE SET offset = excluded.offset, updated_at = excluded.updated_at",
            )?;
            for cmd in work {
                match cmd {
                    Cmd::Append { entries, .. } => {
                        let mut results = Vec::with_capacity(entries.len());
                        for e in entries {
                            results.push(insert_entry(&mut insert, &mut find, e, &mut next, now_us)?);
                        }
                        outcomes.push(Outcome::Appended(results));
                    }
                    Cmd::Txn { txn, .. } => {
                        // A txn with a condition gets a savepoint, so a failed condition undoes
                        // this txn only. (Savepoints cost a sub-journal copy of every page they
                        // touch, so txns that cannot fail a condition go without.)
                        let before = next;
                        let conditional = txn.ops.iter().any(crate::store::Op::is_conditional);
                        if conditional {
                            tx.execute_batch("SAVEPOINT txn")?;
                        }
                        let mut results = Vec::with_capacity(txn.entries.len());
                        for e in &txn.entries {
                            results.push(insert_entry(&mut insert, &mut find, e, &mut next, now_us)?);
                        }
                        let mut failed = None;
                        for op in &txn.ops {
                            if let Err(e) = crate::store::sqlite::apply(&tx, op)? {
                                failed = Some(e);
                                break;
                            }
                        }
                        match failed {
                            None if !conditional => outcomes.push(Outcome::Txn(Ok(results))),
                            None => {
                                tx.execute_batch("RELEASE txn")?;
                                outcomes.push(Outcome::Txn(Ok(results)));
                            }
                            Some(e) => {
                                tx.execute_batch("ROLLBACK TO txn; RELEASE txn")?;
                                next = before;
                                outcomes.push(Outcome::Txn(Err(e)));
                            }
                        }
                    }
                    Cmd::Checkpoint { consumer, offset, .. } => {
                        checkpoint.execute(params![consumer, *offset as i64, now_us])?;
                        outcomes.push(Outcome::Checkpointed);
                    }
                    Cmd::Prune { through, max, .. } => {
                        // Never past the head: offsets are not reused.
                        let through = (*through).min(next - 1);
                        let current = read_pruned(&tx)?;
                        let mut upto = current;
                        if through > current {
                            // At most `max` entries per call: stop below the (max+1)-th.
                            let beyond: Option<i64> = tx
                                .prepare_cached(
                                    "SELECT offset FROM events WHERE offset <= ?1 ORDER BY offset LIMIT 1 OFFSET ?2",
                                )?
                                .query_row(params![through as i64, *max as i64], |r| r.get(0))
                                .optional()?;
                            upto = beyond.map_or(through, |o| o as u64 - 1);
                            tx.prepare_cached("DELETE FROM events WHERE offset <= ?1")?.execute([upto as i64])?;
                            tx.prepare_cached(
                                "INSERT INTO log_meta (key, value) VALUES ('pruned_through', ?1)
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            )?
                            .execute([upto as i64])?;
                        }
                        outcomes.push(Outcome::Pruned(upto));
                    }
                    Cmd::Shutdown(_) => unreachable!("shutdown is handled before the batch"),
                }
            }
        }
        tx.commit()?;
        self.next = next;
        Ok(outcomes)
    }
}

fn insert_entry(
    insert: &mut rusqlite::CachedStatement<'_>,
    find: &mut rusqlite::CachedStatement<'_>,
    e: &NewEntry,
    next: &mut u64,
    now_us: i64,
) -> rusqlite::Result<Appended> {
    let inserted = insert.execute(params![
        *next as i64,
        e.id,
        e.tenant,
        e.source,
        e.kind,
        e.partition_key,
        e.dedupe_key,
        now_us,
        e.event,
        e.body
    ])?;
    if inserted == 1 {
        *next += 1;
        Ok(Appended { offset: *next - 1, id: e.id.clone(), duplicate: false })
    } else {
        let (offset, id): (i64, String) = find.query_row([&e.dedupe_key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(Appended { offset: offset as u64, id, duplicate: true })
    }
}

fn cmd_size(cmd: &Cmd) -> usize {
    match cmd {
        Cmd::Append { entries, .. } => entries.len(),
        Cmd::Txn { txn, .. } => txn.entries.len() + txn.ops.len(),
        _ => 1,
    }
}

fn fail(cmd: Cmd, err: impl Fn() -> LogError) {
    match cmd {
        Cmd::Append { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Cmd::Checkpoint { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Cmd::Txn { reply, .. } => {
            let _ = reply.send(Err(TxnError::Log(err())));
        }
        Cmd::Prune { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Cmd::Shutdown(done) => {
            let _ = done.send(());
        }
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

#[async_trait]
impl EventLog for SqliteLog {
    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Append { entries, reply }).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn read(&self, after: u64, limit: usize, filter: &ReadFilter) -> Result<Vec<LogEntry>, LogError> {
        let filter = filter.clone();
        self.with_reader(move |c| {
            let mut sql = format!("SELECT {COLUMNS} FROM events WHERE offset > ?1");
            let mut args: Vec<rusqlite::types::Value> = vec![(after as i64).into()];
            if let Some(t) = filter.tenant {
                args.push(t.into());
                sql.push_str(&format!(" AND tenant = ?{}", args.len()));
            }
            if let Some(p) = filter.partition_key {
                args.push(p.into());
                sql.push_str(&format!(" AND partition_key = ?{}", args.len()));
            }
            args.push((limit as i64).into());
            sql.push_str(&format!(" ORDER BY offset LIMIT ?{}", args.len()));
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), row_to_entry)?;
            rows.collect()
        })
        .await
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

    async fn checkpoint(&self, consumer: &str) -> Result<Option<u64>, LogError> {
        let consumer = consumer.to_owned();
        self.with_reader(move |c| {
            c.prepare_cached("SELECT offset FROM checkpoints WHERE consumer = ?1")?
                .query_row([consumer], |r| r.get::<_, i64>(0).map(|o| o as u64))
                .optional()
        })
        .await
    }

    async fn set_checkpoint(&self, consumer: &str, offset: u64) -> Result<(), LogError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Checkpoint { consumer: consumer.to_owned(), offset, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    fn pruned_through(&self) -> u64 {
        self.pruned.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn prune(&self, through: u64, max: usize) -> Result<u64, LogError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Prune { through, max: max.max(1), reply }).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
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
        if self.tx.send(Cmd::Shutdown(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
