//! The embedded [`Store`]: `state.db` (schema: [`super::migrate::STATE`]), beside the log's
//! `events.db`, with a writer thread of its own so decisions commit in parallel with ingest.
//!
//! A [`Txn`] is one SQLite transaction here: its ops, the consumer checkpoint, and its log
//! entries written to `outbox` — the transactional-outbox pattern the PostgreSQL store uses.
//! After the commit, the entries are appended to the log and their outbox rows deleted; entries
//! left behind (a crash, the log unavailable) are appended by [`SqliteStore::relay_outbox`] at
//! start-up and every second. Every outbox entry carries a dedupe key (its own, or
//! `entry:<id>`), so appending one twice stores it once: state and its log entries are
//! committed together, and appear in the log exactly once.
//!
//! Writers batch: queued txns share one transaction (one fsync); a txn with a conditional op
//! (claim, resolve, remove, activate) runs under a savepoint, so a failed condition undoes that
//! txn alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::log::{Appended, EventLog, NewEntry};
use crate::sqlite::{self as db, Msg, ReaderPool};
use crate::store::migrate::{self, STATE};
use crate::store::sql_types::{JsonCol, OutcomeCol};
use crate::store::*;

/// The embedded store.
pub struct SqliteStore {
    tx: mpsc::Sender<Msg<Cmd>>,
    /// Outbox rows whose entries are in the log, deleted with the next commit (or by the
    /// relay's next round, or at close) rather than in a commit of their own: one fsync less
    /// per transaction with entries. A row whose delete is lost is appended again by the
    /// relay, harmlessly (the log's dedupe).
    appended: std::sync::Mutex<Vec<i64>>,
    readers: Arc<ReaderPool>,
    log: Arc<dyn EventLog>,
    applied: Vec<i32>,
    threads: db::Threads,
}

enum Cmd {
    /// Applies ops, writes entries to the outbox; answers their outbox sequence numbers. Also
    /// deletes the outbox rows `appended` (earlier entries now in the log), whatever the txn's
    /// own outcome.
    Txn { txn: Txn, appended: Vec<i64>, reply: oneshot::Sender<Result<Vec<i64>, TxnError>> },
    /// Deletes appended outbox rows (no answer: a row left behind is appended again harmlessly).
    Delete(Vec<i64>),
}

impl SqliteStore {
    /// Opens (creating, migrating) `dir/state.db` and starts its writer. The caller holds the
    /// data directory's lock (the log took it).
    pub fn open(
        dir: &Path,
        log: Arc<dyn EventLog>,
        max_batch: usize,
        queue_depth: usize,
    ) -> Result<SqliteStore, StoreError> {
        let path = dir.join("state.db");
        let mut conn = db::open_durable(&path).map_err(unavailable)?;
        let applied = migrate::apply_sqlite(&mut conn, STATE, &format!("embedded store {}", path.display()), dir)
            .map_err(|e| StoreError::Unavailable(format!("{e:#}")))?;
        // The background checkpointer copies the WAL into the file; the writer itself checkpoints
        // only when the WAL passes 64 MiB (at the log's 16 MiB, checkpoints took ~20% of the
        // store writer's time under load: BENCHMARKS.md "What bounds each figure").
        conn.pragma_update(None, "wal_autocheckpoint", STORE_WAL_AUTOCHECKPOINT).map_err(unavailable)?;
        conn.pragma_update(None, "cache_size", -65536).map_err(unavailable)?;
        let (changed_tx, changed_rx) = watch::channel(());
        let threads = db::Threads::default();
        let thread_failed = |e: std::io::Error| StoreError::Unavailable(format!("cannot start a store thread: {e}"));
        threads.add(
            db::spawn_checkpointer("store-ckpt", db::open_durable(&path).map_err(unavailable)?, changed_rx)
                .map_err(thread_failed)?,
        );
        let (tx, rx) = mpsc::channel(queue_depth);
        let mut writer = Writer { conn, changed: changed_tx };
        threads.add(
            db::spawn_writer("store-writer", max_batch, rx, cmd_size, move |b, n| writer.commit(b, n), closed)
                .map_err(thread_failed)?,
        );
        Ok(SqliteStore {
            tx,
            appended: Default::default(),
            readers: Arc::new(ReaderPool::new(path, None)),
            log,
            applied,
            threads,
        })
    }

    /// Opens an existing store for reading only, beside a running server (backtests). Commits
    /// answer `Closed`; a newer schema is refused.
    pub fn open_read_only(dir: &Path, log: Arc<dyn EventLog>) -> Result<SqliteStore, StoreError> {
        let path = dir.join("state.db");
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!("no embedded store at {}", path.display())));
        }
        let conn = db::open_durable(&path).map_err(unavailable)?;
        conn.pragma_update(None, "query_only", true).map_err(unavailable)?;
        let versions = migrate::sqlite_versions(&conn).map_err(unavailable)?;
        migrate::pending(&format!("embedded store {}", path.display()), STATE, &versions)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (tx, _) = mpsc::channel(1);
        Ok(SqliteStore {
            tx,
            appended: Default::default(),
            readers: Arc::new(ReaderPool::new(path, Some(conn))),
            log,
            applied: Vec::new(),
            threads: db::Threads::default(),
        })
    }

    /// The schema versions this open applied.
    pub fn migrations_applied(&self) -> &[i32] {
        &self.applied
    }

    /// A read on one of the store's reader connections.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers.read(f).await.map_err(StoreError::Unavailable)
    }

    /// Appends outbox entries older than `min_age` to the log and deletes them; returns how many.
    pub async fn relay_outbox(&self, min_age: Duration) -> Result<usize, TxnError> {
        let before = crate::util::now_us() - min_age.as_micros() as i64;
        let mut total = 0;
        loop {
            let rows: Vec<(i64, NewEntry)> = self
                .read(move |c| {
                    c.prepare_cached(
                        "SELECT seq, id, tenant, source, kind, partition_key, dedupe_key, event FROM outbox
                         WHERE created_at <= ?1 ORDER BY seq LIMIT 500",
                    )?
                    .query_map([before], |r| {
                        Ok((
                            r.get(0)?,
                            NewEntry {
                                id: r.get(1)?,
                                tenant: r.get(2)?,
                                source: r.get(3)?,
                                kind: r.get(4)?,
                                partition_key: r.get(5)?,
                                dedupe_key: Some(r.get(6)?),
                                event: r.get(7)?,
                                body: None,
                            },
                        ))
                    })?
                    .collect()
                })
                .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let (seqs, entries): (Vec<i64>, Vec<NewEntry>) = rows.into_iter().unzip();
            let n = entries.len();
            self.log.append(entries).await?;
            self.delete_outbox(seqs).await?;
            metrics::counter!("idstream_outbox_relayed_total").increment(n as u64);
            total += n;
        }
    }

    async fn delete_outbox(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        self.tx.send(Msg::Cmd(Cmd::Delete(seqs))).await.map_err(|_| StoreError::Closed)
    }

    /// The rows of appended entries not deleted yet (they go with the next commit).
    fn take_appended(&self) -> Vec<i64> {
        std::mem::take(&mut *self.appended.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Deletes the rows of appended entries now, in a commit of their own.
    async fn flush_appended(&self) -> Result<(), StoreError> {
        let seqs = self.take_appended();
        if seqs.is_empty() {
            return Ok(());
        }
        self.delete_outbox(seqs).await
    }

    /// Every second until `stop`, appends outbox entries older than 2 s (their committer has
    /// normally appended them long before).
    pub async fn run_relay(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Rows of entries appended in the last second, when no commit came to take them.
            let _ = self.flush_appended().await;
            if let Err(e) = self.relay_outbox(Duration::from_secs(2)).await {
                tracing::warn!(error = %e, "outbox relay: cannot append; will retry");
            }
        }
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

struct Writer {
    conn: Connection,
    /// Wakes the checkpointer.
    changed: watch::Sender<()>,
}

impl Writer {
    fn commit(&mut self, work: Vec<Cmd>, size: usize) {
        let started = Instant::now();
        match self.write(&work) {
            Ok(outcomes) => {
                metrics::histogram!("idstream_store_commit_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("idstream_store_batch_ops").record(size as f64);
                self.changed.send_replace(());
                for (cmd, outcome) in work.into_iter().zip(outcomes) {
                    if let (Cmd::Txn { reply, .. }, Some(r)) = (cmd, outcome) {
                        let _ = reply.send(r);
                    }
                }
            }
            Err(e) => {
                metrics::counter!("idstream_store_failed_batches_total").increment(1);
                tracing::error!(error = %e, ops = size, "store batch failed; nothing of it was stored");
                let msg = e.to_string();
                for cmd in work {
                    if let Cmd::Txn { reply, .. } = cmd {
                        let _ = reply.send(Err(TxnError::Store(StoreError::Unavailable(msg.clone()))));
                    }
                }
            }
        }
    }

    /// One transaction for the batch; per txn, its outcome (`None` for deletes).
    #[allow(clippy::type_complexity)]
    fn write(&mut self, work: &[Cmd]) -> rusqlite::Result<Vec<Option<Result<Vec<i64>, TxnError>>>> {
        let now_us = crate::util::now_us();
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(work.len());
        for cmd in work {
            match cmd {
                Cmd::Txn { txn, appended, .. } => {
                    if !appended.is_empty() {
                        let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
                        for s in appended {
                            delete.execute([s])?;
                        }
                    }
                    // A txn with a condition gets a savepoint, so a failed condition undoes this
                    // txn only. (Savepoints cost a sub-journal copy of every page they touch, so
                    // txns that cannot fail a condition go without.)
                    let conditional = txn.ops.iter().any(Op::is_conditional);
                    if conditional {
                        tx.execute_batch("SAVEPOINT txn")?;
                    }
                    let mut failed = None;
                    for op in &txn.ops {
                        if let Err(e) = apply(&tx, op)? {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        tx.execute_batch("ROLLBACK TO txn; RELEASE txn")?;
                        outcomes.push(Some(Err(e)));
                        continue;
                    }
                    let mut seqs = Vec::with_capacity(txn.entries.len());
                    {
                        let mut insert = tx.prepare_cached(
                            "INSERT INTO outbox (id, tenant, source, kind, partition_key, dedupe_key, event, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        )?;
                        for e in &txn.entries {
                            insert.execute(params![
                                e.id,
                                e.tenant,
                                e.source,
                                e.kind,
                                e.partition_key,
                                outbox_key(e),
                                e.event,
                                now_us
                            ])?;
                            seqs.push(tx.last_insert_rowid());
                        }
                    }
                    if conditional {
                        tx.execute_batch("RELEASE txn")?;
                    }
                    outcomes.push(Some(Ok(seqs)));
                }
                Cmd::Delete(seqs) => {
                    let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
                    for s in seqs {
                        delete.execute([s])?;
                    }
                    outcomes.push(None);
                }
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }
}

/// The dedupe key an outbox entry is appended with: its own, or one made from its id, so a
/// second append (the relay after a crash) is recognised.
fn outbox_key(e: &NewEntry) -> String {
    e.dedupe_key.clone().unwrap_or_else(|| format!("entry:{}", e.id))
}

/// WAL frames (4 KiB pages) after which the store's writer checkpoints itself.
const STORE_WAL_AUTOCHECKPOINT: i64 = 16_000;

/// Appended rows kept for the next commit at most; beyond, they are deleted at once.
const MAX_APPENDED: usize = 4096;

fn cmd_size(cmd: &Cmd) -> usize {
    match cmd {
        Cmd::Txn { txn, appended, .. } => txn.entries.len() + txn.ops.len() + appended.len(),
        Cmd::Delete(seqs) => seqs.len(),
    }
}

fn closed(cmd: Cmd) {
    if let Cmd::Txn { reply, .. } = cmd {
        let _ = reply.send(Err(TxnError::Store(StoreError::Closed)));
    }
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store records always serialise")
}

/// Applies one op inside the writer's transaction. The outer error is SQLite failing (the whole
/// batch rolls back); the inner one is the op's condition not holding (this txn rolls back).
pub(crate) fn apply(tx: &Transaction<'_>, op: &Op) -> rusqlite::Result<Result<(), TxnError>> {
    match op {
        Op::Access(a) => return super::access_sqlite::apply(tx, a),
        Op::Notify(n) => return super::notify_sqlite::apply(tx, n),
        Op::SetCheckpoint { consumer, offset } => {
            tx.prepare_cached(
                "INSERT INTO checkpoints (consumer, offset, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (consumer) DO UPDATE SET offset = excluded.offset, updated_at = excluded.updated_at",
            )?
            .execute(params![consumer, *offset as i64, crate::util::now_us()])?;
        }
        Op::PutDecision(d) => {
            tx.prepare_cached(
                "INSERT INTO decisions (id, tenant, session_id, subject, event_id, event_offset, outcome, score,
                    ruleset_version, reasons, decided_by, decided_at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                d.id,
                d.tenant,
                d.session_id,
                d.subject,
                d.event_id,
                d.event_offset.map(|o| o as i64),
                d.outcome.as_str(),
                d.score,
                d.ruleset_version,
                json_text(&d.reasons),
                d.decided_by,
                d.decided_at_us,
                json_text(&d.detail),
            ])?;
        }
        Op::UpsertSession(s) => {
            let (outcome, decision_id) = s.decision.clone().unzip();
            let outcome = outcome.map(Outcome::as_str);
            // The subject is set apart, only when it changes: SQLite rewrites an index whose
            // column is in an UPDATE's SET list even when the value stays the same, and
            // `sessions_by_subject` is keyed at random, so every status webhook of a session
            // dirtied one more page (scripts/bench-session-pages.py: 1.95 pages written per status
            // update before, 0.94 after).
            tx.prepare_cached(
                "INSERT INTO sessions (tenant, session_id, subject, provider_status, state, outcome, decision_id,
                    created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (tenant, session_id) DO UPDATE SET
                    provider_status = COALESCE(excluded.provider_status, provider_status),
                    state = excluded.state,
                    outcome = COALESCE(excluded.outcome, outcome),
                    decision_id = COALESCE(excluded.decision_id, decision_id),
                    updated_at = excluded.updated_at",
            )?
            .execute(params![
                s.tenant,
                s.session_id,
                s.subject,
                s.provider_status,
                s.state,
                outcome,
                decision_id,
                s.now_us
            ])?;
            if s.subject.is_some() {
                tx.prepare_cached(
                    "UPDATE sessions SET subject = ?3 WHERE tenant = ?1 AND session_id = ?2 AND subject IS NOT ?3",
                )?
                .execute(params![s.tenant, s.session_id, s.subject])?;
            }
        }
        Op::OpenReview(r) => {
            tx.prepare_cached(
                "INSERT INTO reviews (id, tenant, session_id, subject, decision_id, reasons, status, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7)",
            )?
            .execute(params![
                r.id,
                r.tenant,
                r.session_id,
                r.subject,
                r.decision_id,
                json_text(&r.reasons),
                r.opened_at_us
            ])?;
        }
        Op::Observe(obs) => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO identities (tenant, kind, hash, session_id, subject, seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, kind, hash, session_id) DO UPDATE SET subject = excluded.subject, seen_at = excluded.seen_at",
            )?;
            for o in obs {
                stmt.execute(params![o.tenant, o.kind, o.hash, o.session_id, o.subject, o.seen_at_us])?;
            }
            note_session_identities(tx, obs)?;
        }
        Op::ClaimReview { tenant, id, actor, now_us } => {
            let n = tx
                .prepare_cached(
                    "UPDATE reviews SET status = 'claimed', claimed_by = ?3, claimed_at = ?4
                     WHERE tenant = ?1 AND id = ?2 AND status = 'open'",
                )?
                .execute(params![tenant, id, actor, now_us])?;
            if n == 0 {
                return review_conflict(tx, tenant, id);
            }
        }
        Op::MoveReview(m) => {
            let n = tx
                .prepare_cached(
                    "UPDATE reviews SET status = CASE WHEN ?3 IS NULL THEN 'open' ELSE 'claimed' END,
                        claimed_by = ?3, claimed_at = CASE WHEN ?3 IS NULL THEN NULL ELSE ?4 END,
                        level = COALESCE(?5, level)
                     WHERE tenant = ?1 AND id = ?2 AND status != 'resolved'
                       AND (?6 = 0 OR status = 'claimed') AND (?7 IS NULL OR claimed_by = ?7)
                       AND (?8 IS NULL OR claimed_at <= ?8) AND (?9 IS NULL OR level <= ?9)",
                )?
                .execute(params![
                    m.tenant,
                    m.id,
                    m.to,
                    m.now_us,
                    m.level,
                    m.claimed,
                    m.holder,
                    m.claimed_before_us,
                    m.max_level
                ])?;
            if n == 0 {
                return review_conflict(tx, &m.tenant, &m.id);
            }
        }
        Op::ResolveReview { tenant, id, actor, outcome, note, now_us, force } => {
            let n = tx
                .prepare_cached(
                    "UPDATE reviews SET status = 'resolved', resolved_by = ?3, resolved_at = ?4, outcome = ?5, note = ?6
                     WHERE tenant = ?1 AND id = ?2
                       AND (status = 'claimed' AND claimed_by = ?3 OR ?7 AND status != 'resolved')",
                )?
                .execute(params![tenant, id, actor, now_us, outcome.map(Outcome::as_str), note, force])?;
            if n == 0 {
                return review_conflict(tx, tenant, id);
            }
        }
        Op::AddStats(counts) => {
            let mut st = tx.prepare_cached(
                "INSERT INTO tenant_stats (tenant, minute, metric, count) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, minute, metric) DO UPDATE SET count = count + excluded.count",
            )?;
            for c in counts {
                st.execute(params![c.tenant, c.minute, c.metric, c.count as i64])?;
            }
        }
        Op::PutDocument(d) => {
            tx.prepare_cached(super::documents::INSERT_SQLITE)?
                .execute(rusqlite::params_from_iter(super::documents::sqlite_params(d)))?;
        }
        Op::PutSubject { tenant, id, attributes, actor, now_us } => {
            tx.prepare_cached(
                "INSERT INTO subjects (tenant, id, attributes, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, id) DO UPDATE SET attributes = excluded.attributes,
                    updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )?
            .execute(params![tenant, id, json_text(attributes), actor, now_us])?;
        }
        Op::PutRuleset(r) => {
            tx.prepare_cached(
                "INSERT INTO rulesets (tenant, version, label, text, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, version) DO NOTHING",
            )?
            .execute(params![r.tenant, r.version, r.label, r.text, r.created_by, r.created_at_us])?;
        }
        Op::ActivateRuleset { tenant, version, actor, now_us } => {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM rulesets WHERE tenant = ?1 AND version = ?2")?
                .query_row(params![tenant, version], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Ok(Err(TxnError::NotFound(format!("no ruleset version `{version}` (upload it first)"))));
            }
            tx.prepare_cached(
                "INSERT INTO active_rulesets (tenant, version, activated_by, activated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant) DO UPDATE SET version = excluded.version,
                    activated_by = excluded.activated_by, activated_at = excluded.activated_at",
            )?
            .execute(params![tenant, version, actor, now_us])?;
        }
        Op::AddBlock(b) => {
            tx.prepare_cached(
                "INSERT INTO blocklist (tenant, kind, hash, reason, added_by, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, kind, hash) DO UPDATE SET reason = excluded.reason,
                    added_by = excluded.added_by, added_at = excluded.added_at",
            )?
            .execute(params![b.tenant, b.kind, b.hash, b.reason, b.added_by, b.added_at_us])?;
        }
        Op::RemoveBlock { tenant, kind, hash } => {
            let n = tx
                .prepare_cached("DELETE FROM blocklist WHERE tenant = ?1 AND kind = ?2 AND hash = ?3")?
                .execute(params![tenant, kind, hash])?;
            if n == 0 {
                return Ok(Err(TxnError::NotFound(format!("no {} blocklist entry `{hash}`", kind.as_str()))));
            }
        }
    }
    Ok(Ok(()))
}

/// Adds the observed `(kind, hash)` pairs to their session's row of `session_identities`, the
/// list the session view's linked subjects start from. One row per session instead of an index
/// entry per observation: an index of `identities` by session cost each decision ~5 random-key
/// B-tree inserts in the store writer (BENCHMARKS.md "Identities by session").
fn note_session_identities(tx: &Transaction<'_>, obs: &[Observation]) -> rusqlite::Result<()> {
    let mut pairs: Vec<(&str, &str, &str, &str)> =
        obs.iter().map(|o| (o.tenant.as_str(), o.session_id.as_str(), o.kind.as_str(), o.hash.as_str())).collect();
    pairs.sort_unstable();
    pairs.dedup();
    // One statement per session: the union with the stored list is made in SQL (no read first).
    let mut write = tx.prepare_cached(
        "INSERT INTO session_identities (tenant, session_id, pairs) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant, session_id) DO UPDATE SET pairs = (
            SELECT json_group_array(json(value)) FROM (
                SELECT value FROM json_each(session_identities.pairs) UNION SELECT value FROM json_each(excluded.pairs)))",
    )?;
    for session in pairs.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let list: Vec<(&str, &str)> = session.iter().map(|p| (p.2, p.3)).collect();
        write.execute(params![session[0].0, session[0].1, json_text(&list)])?;
    }
    Ok(())
}

/// The identity observations of one session (`q.session_id` set), newest first: the pairs its
/// `session_identities` row lists, each read from `identities` by primary key.
fn session_identities_sql(q: &IdentityQuery) -> (String, Vec<SqlParam>) {
    let mut w = Conditions::new(|n| format!("?{n}"));
    w.eq("s.tenant", Some(&q.tenant));
    w.eq("s.session_id", q.session_id.as_deref());
    w.eq("i.kind", q.kind.map(|k| k.as_str()));
    w.eq("i.hash", q.hash.as_deref());
    let limit = w.bind(super::limit_of(q.limit));
    (
        format!(
            "SELECT i.tenant, i.kind, i.hash, i.subject, i.session_id, i.seen_at
             FROM session_identities s JOIN json_each(s.pairs) p JOIN identities i
               ON i.tenant = s.tenant AND i.kind = json_extract(p.value, '$[0]')
              AND i.hash = json_extract(p.value, '$[1]') AND i.session_id = s.session_id{}
             ORDER BY i.seen_at DESC LIMIT {limit}",
            w.clause()
        ),
        w.params,
    )
}

fn review_conflict(tx: &Transaction<'_>, tenant: &str, id: &str) -> rusqlite::Result<Result<(), TxnError>> {
    let row: Option<(String, Option<String>, Option<String>)> = tx
        .prepare_cached("SELECT status, claimed_by, resolved_by FROM reviews WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(Err(match row {
        None => TxnError::NotFound(format!("no review `{id}`")),
        Some((status, _, Some(by))) if status == "resolved" => {
            TxnError::Conflict(format!("review `{id}` was already resolved by `{by}`"))
        }
        Some((_, Some(by), _)) => TxnError::Conflict(format!("review `{id}` is claimed by `{by}`")),
        Some((status, _, _)) => TxnError::Conflict(format!("review `{id}` is {status}; claim it first")),
    }))
}

const BLOCK_COLS: &str = "tenant, kind, hash, reason, added_by, added_at";

fn row_block(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlockRecord> {
    Ok(BlockRecord {
        tenant: r.get(0)?,
        kind: r.get(1)?,
        hash: r.get(2)?,
        reason: r.get(3)?,
        added_by: r.get(4)?,
        added_at_us: r.get(5)?,
    })
}

fn lookup_one(c: &rusqlite::Connection, req: &LookupRequest) -> rusqlite::Result<LookupResult> {
    let mut out = LookupResult::default();
    let mut block = c.prepare_cached("SELECT 1 FROM blocklist WHERE tenant = ?1 AND kind = ?2 AND hash = ?3")?;
    for (kind, hash) in &req.block_hashes {
        if block.query_row(params![req.tenant, kind, hash], |_| Ok(())).optional()?.is_some()
            && !out.blocked.contains(kind)
        {
            out.blocked.push(*kind);
        }
    }
    let mut vel = c.prepare_cached(
        "SELECT DISTINCT subject FROM identities
         WHERE tenant = ?1 AND kind = ?2 AND hash = ?3 AND seen_at >= ?4 AND subject != ?5 LIMIT 1000",
    )?;
    for (kind, hash) in &req.velocity_hashes {
        let subjects = vel
            .query_map(params![req.tenant, kind, hash, req.velocity_since_us, req.subject], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        out.velocity.push((*kind, subjects));
    }
    // (`session_id != ?` in SQL would make the planner scan the tenant's sessions by primary key.)
    out.other_sessions = c
        .prepare_cached("SELECT session_id, outcome FROM sessions INDEXED BY sessions_by_subject WHERE tenant = ?1 AND subject = ?2")?
        .query_map(params![req.tenant, req.subject], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<OutcomeCol>>(1)?.map(|o| o.0))))?
        .filter(|r| r.as_ref().map_or(true, |(s, _)| *s != req.session_id))
        .collect::<rusqlite::Result<_>>()?;
    out.open_review = c
        .prepare_cached(&format!(
            "SELECT {REVIEW_COLS} FROM reviews WHERE tenant = ?1 AND session_id = ?2 AND status != 'resolved'
             ORDER BY opened_at DESC LIMIT 1"
        ))?
        .query_row(params![req.tenant, req.session_id], row_review)
        .optional()?;
    out.session_decision = c
        .prepare_cached(
            "SELECT d.outcome, d.decided_by FROM sessions s JOIN decisions d ON d.id = s.decision_id
             WHERE s.tenant = ?1 AND s.session_id = ?2",
        )?
        .query_row(params![req.tenant, req.session_id], |r| {
            Ok(SessionDecision { outcome: r.get::<_, OutcomeCol>(0)?.0, decided_by: r.get(1)? })
        })
        .optional()?;
    if let Some(id) = &req.subject_id {
        out.subject_attributes = c
            .prepare_cached("SELECT attributes FROM subjects WHERE tenant = ?1 AND id = ?2")?
            .query_row(params![req.tenant, id], |r| r.get::<_, JsonCol<Value>>(0))
            .optional()?
            .map(|j| j.0);
    }
    Ok(out)
}

const DECISION_COLS: &str = "id, tenant, session_id, subject, event_id, event_offset, outcome, score, ruleset_version,
    reasons, decided_by, decided_at, detail";

fn row_decision(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRecord> {
    Ok(DecisionRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        session_id: r.get(2)?,
        subject: r.get(3)?,
        event_id: r.get(4)?,
        event_offset: r.get::<_, Option<i64>>(5)?.map(|o| o as u64),
        outcome: r.get::<_, OutcomeCol>(6)?.0,
        score: r.get(7)?,
        ruleset_version: r.get(8)?,
        reasons: r.get::<_, JsonCol<_>>(9)?.0,
        decided_by: r.get(10)?,
        decided_at_us: r.get(11)?,
        detail: r.get::<_, JsonCol<_>>(12)?.0,
    })
}

const REVIEW_COLS: &str = "id, tenant, session_id, subject, decision_id, reasons, status, opened_at, claimed_by,
    claimed_at, resolved_by, resolved_at, outcome, note, level";

/// Run-time built query parameters as SQLite values.
fn bound(params: Vec<SqlParam>) -> rusqlite::ParamsFromIter<Vec<rusqlite::types::Value>> {
    rusqlite::params_from_iter(
        params
            .into_iter()
            .map(|p| match p {
                SqlParam::Text(t) => rusqlite::types::Value::Text(t),
                SqlParam::Int(i) => rusqlite::types::Value::Integer(i),
            })
            .collect::<Vec<_>>(),
    )
}

fn row_review(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReviewRecord> {
    Ok(ReviewRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        session_id: r.get(2)?,
        subject: r.get(3)?,
        decision_id: r.get(4)?,
        reasons: r.get::<_, JsonCol<_>>(5)?.0,
        status: r.get(6)?,
        opened_at_us: r.get(7)?,
        claimed_by: r.get(8)?,
        claimed_at_us: r.get(9)?,
        resolved_by: r.get(10)?,
        resolved_at_us: r.get(11)?,
        outcome: r.get::<_, Option<OutcomeCol>>(12)?.map(|o| o.0),
        note: r.get(13)?,
        level: r.get(14)?,
    })
}

fn row_ruleset(r: &rusqlite::Row<'_>) -> rusqlite::Result<RulesetRecord> {
    Ok(RulesetRecord {
        tenant: r.get(0)?,
        version: r.get(1)?,
        label: r.get(2)?,
        text: r.get(3)?,
        created_by: r.get(4)?,
        created_at_us: r.get(5)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit_staged(&self, mut txn: Txn) -> Result<Staged, TxnError> {
        for e in &mut txn.entries {
            e.dedupe_key = Some(outbox_key(e));
        }
        let entries = txn.entries.clone();
        let (reply, rx) = oneshot::channel();
        let appended = self.take_appended();
        self.tx.send(Msg::Cmd(Cmd::Txn { txn, appended, reply })).await.map_err(|_| StoreError::Closed)?;
        let rows = rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Staged { entries, rows })
    }

    async fn publish(&self, staged: Staged) -> Result<Vec<Appended>, TxnError> {
        let Staged { entries, rows } = staged;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Committed: the change took effect and its entries are durable in the outbox. If the
        // log cannot take them now, the relay appends them when it can; the change stands.
        match self.log.append(entries).await {
            Ok(appended) => {
                // Best effort: a row not deleted is appended again by the relay, as a duplicate.
                let flush = {
                    let mut pending = self.appended.lock().unwrap_or_else(|e| e.into_inner());
                    pending.extend(rows);
                    pending.len() >= MAX_APPENDED
                };
                if flush {
                    let _ = self.flush_appended().await;
                }
                Ok(appended)
            }
            Err(e) => {
                tracing::warn!(error = %e, "committed; its log entries wait in the outbox for the relay");
                Ok(Vec::new())
            }
        }
    }

    async fn close(&self) {
        let _ = self.flush_appended().await;
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = rx.await;
        }
        self.threads.join().await;
    }

    async fn stats(
        &self,
        tenant: &str,
        from_us: i64,
        bucket_us: i64,
        decisions_from_us: i64,
    ) -> Result<StatsRows, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let counts = c
                .prepare_cached(
                    "SELECT tenant, (minute / ?3) * ?3, metric, sum(count) FROM tenant_stats
                     WHERE tenant = ?1 AND minute >= ?2 GROUP BY 2, 3",
                )?
                .query_map(params![tenant, from_us / 60_000_000, (bucket_us / 60_000_000).max(1)], |r| {
                    Ok(StatCount {
                        tenant: r.get(0)?,
                        minute: r.get(1)?,
                        metric: r.get(2)?,
                        count: r.get::<_, i64>(3)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let decisions = c
                .prepare_cached(
                    "SELECT (decided_at / ?3) * ?3, outcome, count(*) FROM decisions
                     WHERE tenant = ?1 AND decided_at >= ?2 GROUP BY 1, 2",
                )?
                .query_map(params![tenant, decisions_from_us, bucket_us], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, OutcomeCol>(1)?.0, r.get::<_, i64>(2)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let (open_reviews, claimed_reviews, oldest_open_at_us) = c
                .prepare_cached(
                    "SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'claimed'),
                        min(opened_at) FILTER (WHERE status = 'open')
                     FROM reviews WHERE tenant = ?1 AND status IN ('open', 'claimed')",
                )?
                .query_row(params![tenant], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, Option<i64>>(2)?))
                })?;
            Ok(StatsRows { counts, decisions, open_reviews, claimed_reviews, oldest_open_at_us })
        })
        .await
    }

    async fn identities(&self, q: IdentityQuery) -> Result<Vec<Observation>, StoreError> {
        let (sql, params) =
            if q.session_id.is_some() { session_identities_sql(&q) } else { q.sql(|n| format!("?{n}")) };
        self.read(move |c| {
            c.prepare_cached(&sql)?
                .query_map(bound(params), |r| {
                    Ok(Observation {
                        tenant: r.get(0)?,
                        kind: r.get(1)?,
                        hash: r.get(2)?,
                        subject: r.get(3)?,
                        session_id: r.get(4)?,
                        seen_at_us: r.get(5)?,
                    })
                })?
                .collect()
        })
        .await
    }

    async fn document(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<super::documents::DocumentRecord>, StoreError> {
        let (tenant, id) = (tenant.map(str::to_owned), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&super::documents::select(super::documents::SQLITE_BY_ID))?
                .query_row(params![id, tenant], super::documents::sqlite_row)
                .optional()
        })
        .await
    }

    async fn session_documents(
        &self,
        tenant: &str,
        session_id: &str,
    ) -> Result<Vec<super::documents::DocumentRecord>, StoreError> {
        let (tenant, session_id) = (tenant.to_owned(), session_id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&super::documents::select(super::documents::SQLITE_BY_SESSION))?
                .query_map(params![tenant, session_id], super::documents::sqlite_row)?
                .collect()
        })
        .await
    }

    async fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<notify::EndpointRecord>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |c| super::notify_sqlite::endpoints(c, tenant.as_deref())).await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<notify::EndpointRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| super::notify_sqlite::endpoint(c, &id)).await
    }

    async fn attempts(
        &self,
        endpoint: &str,
        before_seq: Option<i64>,
        failed_only: bool,
        limit: usize,
    ) -> Result<Vec<notify::AttemptRecord>, StoreError> {
        let endpoint = endpoint.to_owned();
        self.read(move |c| super::notify_sqlite::attempts(c, &endpoint, before_seq, failed_only, limit)).await
    }

    async fn api_key_by_hash(&self, sha256: &str) -> Result<Option<access::ApiKeyRecord>, StoreError> {
        let sha256 = sha256.to_owned();
        self.read(move |c| super::access_sqlite::api_key_by_hash(c, &sha256)).await
    }

    async fn api_keys(&self, tenant: Option<&str>) -> Result<Vec<access::ApiKeyRecord>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |c| super::access_sqlite::api_keys(c, tenant.as_deref())).await
    }

    async fn user(&self, id: &str) -> Result<Option<access::UserRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| super::access_sqlite::user_where(c, "id", &id)).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<access::UserRecord>, StoreError> {
        let name = username.to_owned();
        self.read(move |c| super::access_sqlite::user_where(c, "username", &name)).await
    }

    async fn user_by_oidc_subject(&self, subject: &str) -> Result<Option<access::UserRecord>, StoreError> {
        let subject = subject.to_owned();
        self.read(move |c| super::access_sqlite::user_where(c, "oidc_subject", &subject)).await
    }

    async fn users(&self, tenant: Option<&str>) -> Result<Vec<access::UserRecord>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |c| super::access_sqlite::users(c, tenant.as_deref())).await
    }

    async fn auth_session(&self, id_sha256: &str) -> Result<Option<access::AuthSessionRecord>, StoreError> {
        let id = id_sha256.to_owned();
        self.read(move |c| super::access_sqlite::auth_session(c, &id)).await
    }

    async fn idempotent(&self, scope: &str, key: &str) -> Result<Option<access::IdempotencyRecord>, StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.read(move |c| super::access_sqlite::idempotent(c, &scope, &key)).await
    }

    async fn checkpoint(&self, consumer: &str) -> Result<Option<u64>, StoreError> {
        let consumer = consumer.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT offset FROM checkpoints WHERE consumer = ?1")?
                .query_row([consumer], |r| r.get::<_, i64>(0).map(|o| o as u64))
                .optional()
        })
        .await
    }

    async fn lookup_at(
        &self,
        reqs: Vec<LookupRequest>,
        consumer: &str,
    ) -> Result<(Vec<LookupResult>, Option<u64>), StoreError> {
        let consumer = consumer.to_owned();
        self.read(move |c| {
            // One read transaction: every lookup of the batch, and the checkpoint, see the same
            // snapshot (taken by the first SELECT).
            c.execute_batch("BEGIN")?;
            let out = (|| -> rusqlite::Result<(Vec<LookupResult>, Option<u64>)> {
                let at = c
                    .prepare_cached("SELECT offset FROM checkpoints WHERE consumer = ?1")?
                    .query_row([&consumer], |r| r.get::<_, i64>(0).map(|o| o as u64))
                    .optional()?;
                let found = reqs.iter().map(|req| lookup_one(c, req)).collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((found, at))
            })();
            // Ended even when a lookup failed, so the pooled connection holds no snapshot.
            let end = c.execute_batch("COMMIT");
            let out = out?;
            end?;
            Ok(out)
        })
        .await
    }

    async fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {DECISION_COLS} FROM decisions WHERE id = ?1"))?
                .query_row([id], row_decision)
                .optional()
        })
        .await
    }

    async fn decisions_between(
        &self,
        since_us: i64,
        until_us: i64,
        tenant: Option<&str>,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let (tenant, after_id) = (tenant.map(str::to_owned), after_id.unwrap_or("").to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DECISION_COLS} FROM decisions
                 WHERE decided_by = 'rules' AND (decided_at, id) > (?1, ?2) AND decided_at < ?3
                   AND (?4 IS NULL OR tenant = ?4)
                 ORDER BY decided_at, id LIMIT ?5"
            ))?
            .query_map(params![since_us, after_id, until_us, tenant, limit as i64], row_decision)?
            .collect()
        })
        .await
    }

    async fn session(&self, tenant: &str, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, session_id, subject, provider_status, state, outcome, decision_id, created_at, updated_at
                 FROM sessions WHERE tenant = ?1 AND session_id = ?2",
            )?
            .query_row(params![tenant, id], |r| {
                Ok(SessionRecord {
                    tenant: r.get(0)?,
                    session_id: r.get(1)?,
                    subject: r.get(2)?,
                    provider_status: r.get(3)?,
                    state: r.get(4)?,
                    outcome: r.get::<_, Option<OutcomeCol>>(5)?.map(|o| o.0),
                    decision_id: r.get(6)?,
                    created_at_us: r.get(7)?,
                    updated_at_us: r.get(8)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn session_decisions(&self, tenant: &str, id: &str) -> Result<Vec<DecisionRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DECISION_COLS} FROM decisions WHERE tenant = ?1 AND session_id = ?2 ORDER BY decided_at, id"
            ))?
            .query_map(params![tenant, id], row_decision)?
            .collect()
        })
        .await
    }

    async fn open_sessions_with(
        &self,
        tenant: &str,
        kind: BlocklistKind,
        hash: &str,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let (tenant, hash) = (tenant.to_owned(), hash.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE tenant = ?1 AND status != 'resolved' AND session_id IN
                   (SELECT session_id FROM identities WHERE tenant = ?1 AND kind = ?2 AND hash = ?3)"
            ))?
            .query_map(params![tenant, kind, hash], row_review)?
            .collect()
        })
        .await
    }

    async fn review(&self, tenant: Option<&str>, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        let (tenant, id) = (tenant.map(str::to_owned), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)"
            ))?
            .query_row(params![id, tenant], row_review)
            .optional()
        })
        .await
    }

    async fn reviews(&self, f: ReviewFilter) -> Result<Vec<ReviewRecord>, StoreError> {
        // A reason matches itself and its sub-reasons (`velocity` matches `velocity.document`).
        let (sql, params) = f.sql(
            REVIEW_COLS,
            |n| format!("?{n}"),
            |p| {
                format!(
                    "EXISTS (SELECT 1 FROM json_each(reviews.reasons) AS r
                     WHERE r.value = {p} OR substr(r.value, 1, length({p}) + 1) = {p} || '.')"
                )
            },
        );
        self.read(move |c| c.prepare_cached(&sql)?.query_map(bound(params), row_review)?.collect()).await
    }

    async fn resolved_review_for_session(&self, tenant: &str, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE tenant = ?1 AND session_id = ?2 AND status = 'resolved'
                 AND resolved_by != 'rules' AND resolved_by NOT LIKE 'blocklist:%' ORDER BY resolved_at DESC LIMIT 1"
            ))?
            .query_row(params![tenant, id], row_review)
            .optional()
        })
        .await
    }

    async fn blocks(&self, tenant: &str, kind: BlocklistKind, limit: usize) -> Result<Vec<BlockRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {BLOCK_COLS} FROM blocklist WHERE tenant = ?1 AND kind = ?2 ORDER BY added_at DESC LIMIT ?3"
            ))?
            .query_map(params![tenant, kind, limit as i64], row_block)?
            .collect()
        })
        .await
    }

    async fn block(&self, tenant: &str, kind: BlocklistKind, hash: &str) -> Result<Option<BlockRecord>, StoreError> {
        let (tenant, hash) = (tenant.to_owned(), hash.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {BLOCK_COLS} FROM blocklist WHERE tenant = ?1 AND kind = ?2 AND hash = ?3"
            ))?
            .query_row(params![tenant, kind, hash], row_block)
            .optional()
        })
        .await
    }

    async fn subject(&self, tenant: &str, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, id, attributes, updated_by, updated_at FROM subjects WHERE tenant = ?1 AND id = ?2",
            )?
            .query_row(params![tenant, id], |r| {
                Ok(SubjectRecord {
                    tenant: r.get(0)?,
                    id: r.get(1)?,
                    attributes: r.get::<_, JsonCol<_>>(2)?.0,
                    updated_by: r.get(3)?,
                    updated_at_us: r.get(4)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn ruleset(&self, tenant: &str, version: &str) -> Result<Option<RulesetRecord>, StoreError> {
        let (tenant, version) = (tenant.to_owned(), version.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, version, label, text, created_by, created_at FROM rulesets WHERE tenant = ?1 AND version = ?2",
            )?
            .query_row(params![tenant, version], row_ruleset)
            .optional()
        })
        .await
    }

    async fn rulesets(&self, tenant: &str) -> Result<Vec<RulesetRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, version, label, text, created_by, created_at FROM rulesets WHERE tenant = ?1
                 ORDER BY created_at DESC",
            )?
            .query_map(params![tenant], row_ruleset)?
            .collect()
        })
        .await
    }

    async fn active_rulesets(&self) -> Result<Vec<(String, ActiveRuleset)>, StoreError> {
        self.read(move |c| {
            c.prepare_cached("SELECT tenant, version, activated_by, activated_at FROM active_rulesets")?
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        ActiveRuleset { version: r.get(1)?, activated_by: r.get(2)?, activated_at_us: r.get(3)? },
                    ))
                })?
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state.db at version 8 with observations of two sessions in `identities`.
    fn v8_with_observations() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        migrate::apply_sqlite(&mut c, &STATE[..8], "state.db", Path::new(".")).unwrap();
        c.execute_batch(
            "INSERT INTO identities VALUES ('t', 'document', 'hd', 's1', 'u1', 10), ('t', 'phone', 'hp', 's1', 'u1', 20),
                                           ('t', 'document', 'hd', 's2', 'u2', 30), ('t2', 'email', 'he', 's1', 'u9', 40);",
        )
        .unwrap();
        c
    }

    #[test]
    fn version_9_lists_each_sessions_values_and_drops_the_index_by_session() {
        let mut c = v8_with_observations();
        assert_eq!(migrate::apply_sqlite(&mut c, STATE, "state.db", Path::new(".")).unwrap(), [9]);
        let lists: Vec<(String, String, String)> = c
            .prepare("SELECT tenant, session_id, pairs FROM session_identities ORDER BY 1, 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        type Pairs = Vec<(String, String)>;
        let mut lists: Vec<(String, String, Pairs)> =
            lists.into_iter().map(|(t, s, p)| (t, s, serde_json::from_str(&p).unwrap())).collect();
        lists.iter_mut().for_each(|l| l.2.sort());
        let pair = |k: &str, h: &str| (k.to_owned(), h.to_owned());
        assert_eq!(
            lists,
            [
                ("t".into(), "s1".into(), vec![pair("document", "hd"), pair("phone", "hp")]),
                ("t".into(), "s2".into(), vec![pair("document", "hd")]),
                ("t2".into(), "s1".into(), vec![pair("email", "he")]),
            ]
        );
        let indexes: i64 = c
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'identities_by_session'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(indexes, 0);
    }

    #[test]
    fn a_sessions_observations_are_read_by_primary_keys() {
        let mut c = v8_with_observations();
        migrate::apply_sqlite(&mut c, STATE, "state.db", Path::new(".")).unwrap();
        for (kind, hash) in [(None, None), (Some(BlocklistKind::Phone), None), (None, Some("hd"))] {
            let q = IdentityQuery {
                tenant: "t".into(),
                kind,
                hash: hash.map(str::to_owned),
                session_id: Some("s1".into()),
                limit: 20,
            };
            let (sql, params) = session_identities_sql(&q);
            let plan: Vec<String> = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(rusqlite::params_from_iter(params.iter().map(|_| "x")), |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains("SEARCH s USING PRIMARY KEY"), "{plan}");
            assert!(
                plan.contains("SEARCH i USING PRIMARY KEY (tenant=? AND kind=? AND hash=? AND session_id=?)"),
                "{plan}"
            );
            assert!(!plan.contains("SCAN s") && !plan.contains("SCAN i"), "{plan}");
        }
    }
}
