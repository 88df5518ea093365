//! The PostgreSQL [`Store`] (scale-out): the same tables and the same answers as the embedded
//! store (`log/sqlite_store.rs`), shared by every node.
//!
//! The event log is a separate system here, so a [`Txn`] cannot be one transaction with its
//! log entries. It uses a transactional outbox instead: the state ops and the txn's entries
//! (in `outbox`) commit in one PostgreSQL transaction; the entries are then appended to the
//! log and their outbox rows deleted. An entry whose append failed (or whose node died before
//! appending) stays in the outbox, and [`PgStore::run_relay`] on any node publishes it later.
//! Every outbox entry carries a dedupe key, so an entry published twice (by its committer and
//! by the relay) is stored in the log once.
//!
//! Invariants: a failed condition or a database error applies nothing of the txn and
//! publishes none of its entries; an entry of a committed txn is published at least once and
//! stored once.
//!
//! Consumer checkpoints written by a txn are fenced (they only move forward), because several
//! nodes run decision workers: a stale worker must not commit a batch a second time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, Transaction};
use futures_util::future::{maybe_done, MaybeDone};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row, Statement};
use tokio_util::sync::CancellationToken;

use crate::log::{Appended, EventLog, NewEntry};
use crate::store::pg;
use crate::store::sql_types::{JsonCol, OutcomeCol};
use crate::store::*;

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// The store on a PostgreSQL pool; committed entries are published to `log`.
pub struct PgStore {
    pool: Pool,
    log: Arc<dyn EventLog>,
}

/// At most this many outbox entries are published per log append by the relay.
const RELAY_BATCH: i64 = 500;

/// The database's clock, Unix µs: outbox ages are measured by one clock for every node.
macro_rules! db_now_us {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT"
    };
}

macro_rules! decision_cols {
    () => {
        "id, tenant, session_id, subject, event_id, event_offset, outcome, score, ruleset_version, reasons, \
         decided_by, decided_at, detail"
    };
}

macro_rules! review_cols {
    () => {
        "id, tenant, session_id, subject, decision_id, reasons, status, opened_at, claimed_by, claimed_at, \
         resolved_by, resolved_at, outcome, note, level"
    };
}

impl PgStore {
    pub fn new(pool: Pool, log: Arc<dyn EventLog>) -> PgStore {
        PgStore { pool, log }
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Unavailable(pg::error_text(&e)))
    }

    /// Runs one read statement on a pooled connection.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(unavailable)?;
        client.query(&stmt, params).await.map_err(unavailable)
    }

    /// [`Self::query`] with parameters of a query built at run time.
    async fn query_built(&self, sql: &str, params: Vec<SqlParam>) -> Result<Vec<Row>, StoreError> {
        let params: Vec<Box<dyn ToSql + Sync + Send>> = params
            .into_iter()
            .map(|p| -> Box<dyn ToSql + Sync + Send> {
                match p {
                    SqlParam::Text(t) => Box::new(t),
                    SqlParam::Int(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        self.query(sql, &refs).await
    }

    /// Publishes outbox entries older than `min_age` (oldest first) through the log and deletes
    /// them; returns how many. Rows are taken `FOR UPDATE SKIP LOCKED`, so several nodes can
    /// relay at once without waiting on each other; an entry that its committer is publishing
    /// at the same moment is stored once, by its dedupe key.
    pub async fn relay_outbox(&self, min_age: Duration) -> Result<usize, TxnError> {
        let min_age_us = i64::try_from(min_age.as_micros()).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(unavailable)?;
            let due = tx
                .prepare_cached(concat!(
                    "SELECT seq, id, tenant, source, kind, partition_key, dedupe_key, event, body FROM outbox
                     WHERE created_at_us <= ",
                    db_now_us!(),
                    " - $1 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                ))
                .await
                .map_err(unavailable)?;
            let rows = tx.query(&due, &[&min_age_us, &RELAY_BATCH]).await.map_err(unavailable)?;
            if rows.is_empty() {
                return Ok(total);
            }
            let (seqs, entries): (Vec<i64>, Vec<NewEntry>) =
                rows.iter().map(row_outbox).collect::<PgResult<Vec<_>>>().map_err(unavailable)?.into_iter().unzip();
            // On failure the transaction rolls back: the rows stay for the next round.
            self.log.append(entries).await?;
            tx.execute("DELETE FROM outbox WHERE seq = ANY($1)", &[&seqs]).await.map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            total += seqs.len();
            if (seqs.len() as i64) < RELAY_BATCH {
                return Ok(total);
            }
        }
    }

    /// Every second until `stop`, publishes the outbox entries older than 2 s (their committer
    /// has normally published them long before).
    pub async fn run_relay(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.relay_outbox(Duration::from_secs(2)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "published outbox entries whose commit did not publish them"),
                Err(e) => tracing::warn!(error = %e, "outbox relay failed; will retry"),
            }
        }
    }

    /// Deletes published outbox rows without waiting for PostgreSQL's fsync: a row a crash
    /// brings back is published again by the relay and recognised by its dedupe key.
    async fn delete_outbox(&self, ids: &[&str]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await.map_err(unavailable)?;
        tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids]).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

fn unavailable(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(pg::db_error_text(&e))
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store records always serialise")
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

type PgFuture<'a> = Pin<Box<dyn Future<Output = PgResult<u64>> + Send + 'a>>;

/// Statements sent to the server without waiting for each other's results (one round trip for
/// the lot instead of one each). They run in the order sent.
#[derive(Default)]
struct Pipeline<'a> {
    sent: Vec<MaybeDone<PgFuture<'a>>>,
}

impl<'a> Pipeline<'a> {
    /// Sends the statement now: tokio-postgres queues a query's message on its future's first
    /// poll, so polling once here fixes the order. The result is collected by `flush`, which
    /// polls again with a real waker.
    fn send(&mut self, fut: PgFuture<'a>) {
        let mut fut = maybe_done(fut);
        let _ = Pin::new(&mut fut).poll(&mut Context::from_waker(futures_util::task::noop_waker_ref()));
        self.sent.push(fut);
    }

    /// Waits for every sent statement; the first error in sending order is the cause (the
    /// statements after it fail only because the transaction is aborted).
    async fn flush(&mut self) -> PgResult<()> {
        for mut fut in self.sent.drain(..) {
            (&mut fut).await;
            if let Some(Err(e)) = Pin::new(&mut fut).take_output() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// A cached statement; a failure to prepare it reports an earlier statement's error first.
    async fn prepare(&mut self, tx: &Transaction<'_>, sql: &str) -> PgResult<Statement> {
        match tx.prepare_cached(sql).await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.flush().await?;
                Err(e)
            }
        }
    }
}

/// Applies a txn's ops and queues its entries in the outbox, inside `tx`. The outer error is
/// PostgreSQL failing; the inner one is a condition not holding. Either way the caller rolls
/// back.
async fn apply_txn(tx: &Transaction<'_>, ops: &[Op], entries: &[NewEntry]) -> PgResult<Result<(), TxnError>> {
    // Checkpoints first: they touch no table another op reads, so the order changes no result,
    // and a stale worker is stopped at the fence before doing any work (its rival holds the
    // checkpoint's row lock until it commits).
    for op in ops {
        if let Op::SetCheckpoint { consumer, offset } = op {
            if let Err(e) = set_checkpoint(tx, consumer, *offset).await? {
                return Ok(Err(e));
            }
        }
    }
    let mut pipe = Pipeline::default();
    for op in ops {
        if matches!(op, Op::SetCheckpoint { .. }) {
            continue;
        }
        if op.is_conditional() || matches!(op, Op::Access(_) | Op::Notify(_)) {
            // A condition reads the state the ops before it left. (Access ops are rare: applied
            // one by one.)
            pipe.flush().await?;
            if let Err(e) = apply_conditional(tx, op).await? {
                return Ok(Err(e));
            }
        } else {
            send_op(tx, &mut pipe, op).await?;
        }
    }
    if !entries.is_empty() {
        let insert = pipe
            .prepare(
                tx,
                concat!(
                    "INSERT INTO outbox (id, tenant, source, kind, partition_key, dedupe_key, event, body, created_at_us)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ",
                    db_now_us!(),
                    ")"
                ),
            )
            .await?;
        for e in entries {
            let insert = insert.clone();
            pipe.send(Box::pin(async move {
                tx.execute(
                    &insert,
                    &[&e.id, &e.tenant, &e.source, &e.kind, &e.partition_key, &e.dedupe_key, &e.event, &e.body],
                )
                .await
            }));
        }
    }
    pipe.flush().await?;
    Ok(Ok(()))
}

/// Moves a consumer's checkpoint forward; refuses to move it back or keep it in place.
async fn set_checkpoint(tx: &Transaction<'_>, consumer: &str, offset: u64) -> PgResult<Result<(), TxnError>> {
    let upsert = tx
        .prepare_cached(
            "INSERT INTO checkpoints (consumer, position) VALUES ($1, $2)
             ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position
             WHERE checkpoints.position < EXCLUDED.position",
        )
        .await?;
    if tx.execute(&upsert, &[&consumer, &(offset as i64)]).await? == 1 {
        return Ok(Ok(()));
    }
    let pos: i64 =
        tx.query_one("SELECT position FROM checkpoints WHERE consumer = $1", &[&consumer]).await?.try_get(0)?;
    Ok(Err(TxnError::Conflict(format!(
        "checkpoint `{consumer}` is already at {pos}: another worker has processed this batch"
    ))))
}

/// Sends an op that has no condition.
async fn send_op<'a>(tx: &'a Transaction<'_>, pipe: &mut Pipeline<'a>, op: &'a Op) -> PgResult<()> {
    match op {
        Op::PutDecision(d) => {
            // No ON CONFLICT: a second decision of the same event fails the whole txn.
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO decisions (id, tenant, session_id, subject, event_id, event_offset, outcome, score,
                        ruleset_version, reasons, decided_by, decided_at, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .await?;
            pipe.send(Box::pin(async move {
                let (offset, reasons, detail) =
                    (d.event_offset.map(|o| o as i64), json_text(&d.reasons), json_text(&d.detail));
                tx.execute(
                    &s,
                    &[
                        &d.id,
                        &d.tenant,
                        &d.session_id,
                        &d.subject,
                        &d.event_id,
                        &offset,
                        &d.outcome.as_str(),
                        &d.score,
                        &d.ruleset_version,
                        &reasons,
                        &d.decided_by,
                        &d.decided_at_us,
                        &detail,
                    ],
                )
                .await
            }));
        }
        Op::UpsertSession(u) => {
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO sessions (tenant, session_id, subject, provider_status, state, outcome, decision_id,
                        created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                     ON CONFLICT (tenant, session_id) DO UPDATE SET
                        subject = COALESCE(EXCLUDED.subject, sessions.subject),
                        provider_status = COALESCE(EXCLUDED.provider_status, sessions.provider_status),
                        state = EXCLUDED.state,
                        outcome = COALESCE(EXCLUDED.outcome, sessions.outcome),
                        decision_id = COALESCE(EXCLUDED.decision_id, sessions.decision_id),
                        updated_at = EXCLUDED.updated_at",
                )
                .await?;
            pipe.send(Box::pin(async move {
                let (outcome, decision_id) = u.decision.as_ref().map(|(o, d)| (o.as_str(), d)).unzip();
                tx.execute(
                    &s,
                    &[
                        &u.tenant,
                        &u.session_id,
                        &u.subject,
                        &u.provider_status,
                        &u.state,
                        &outcome,
                        &decision_id,
                        &u.now_us,
                    ],
                )
                .await
            }));
        }
        Op::OpenReview(r) => {
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO reviews (id, tenant, session_id, subject, decision_id, reasons, status, opened_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)",
                )
                .await?;
            pipe.send(Box::pin(async move {
                let reasons = json_text(&r.reasons);
                tx.execute(
                    &s,
                    &[&r.id, &r.tenant, &r.session_id, &r.subject, &r.decision_id, &reasons, &r.opened_at_us],
                )
                .await
            }));
        }
        Op::Observe(obs) => {
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO identities (tenant, kind, hash, session_id, subject, seen_at) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant, kind, hash, session_id) DO UPDATE SET subject = EXCLUDED.subject,
                        seen_at = EXCLUDED.seen_at",
                )
                .await?;
            for o in obs {
                let s = s.clone();
                pipe.send(Box::pin(async move {
                    tx.execute(&s, &[&o.tenant, &o.kind, &o.hash, &o.session_id, &o.subject, &o.seen_at_us]).await
                }));
            }
        }
        Op::AddStats(counts) => {
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO tenant_stats (tenant, minute, metric, count) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant, minute, metric) DO UPDATE SET count = tenant_stats.count + EXCLUDED.count",
                )
                .await?;
            for c in counts {
                let s = s.clone();
                pipe.send(Box::pin(async move {
                    tx.execute(&s, &[&c.tenant, &c.minute, &c.metric, &(c.count as i64)]).await
                }));
            }
        }
        Op::PutDocument(d) => {
            let s = pipe.prepare(tx, super::documents::INSERT_PG).await?;
            pipe.send(Box::pin(async move {
                let (size, w, h) = (d.size_bytes as i64, d.width.map(|v| v as i32), d.height.map(|v| v as i32));
                tx.execute(
                    &s,
                    &[
                        &d.id,
                        &d.tenant,
                        &d.subject,
                        &d.session_id,
                        &d.side,
                        &d.content_type,
                        &size,
                        &w,
                        &h,
                        &d.content_mac,
                        &d.address,
                        &d.event_id,
                        &d.created_by,
                        &d.created_at_us,
                    ],
                )
                .await
            }));
        }
        Op::PutSubject { tenant, id, attributes, actor, now_us } => {
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO subjects (tenant, id, attributes, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, id) DO UPDATE SET attributes = EXCLUDED.attributes,
                        updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
                )
                .await?;
            pipe.send(Box::pin(async move {
                let attributes = json_text(attributes);
                tx.execute(&s, &[tenant, id, &attributes, actor, now_us]).await
            }));
        }
        Op::PutRuleset(r) => {
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO rulesets (tenant, version, label, text, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, version) DO NOTHING",
                )
                .await?;
            pipe.send(Box::pin(async move {
                tx.execute(&s, &[&r.tenant, &r.version, &r.label, &r.text, &r.created_by, &r.created_at_us]).await
            }));
        }
        Op::AddBlock(b) => {
            let s = pipe
                .prepare(
                    tx,
                    "INSERT INTO blocklist (tenant, kind, hash, reason, added_by, added_at) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant, kind, hash) DO UPDATE SET reason = EXCLUDED.reason,
                        added_by = EXCLUDED.added_by, added_at = EXCLUDED.added_at",
                )
                .await?;
            pipe.send(Box::pin(async move {
                tx.execute(&s, &[&b.tenant, &b.kind, &b.hash, &b.reason, &b.added_by, &b.added_at_us]).await
            }));
        }
        Op::SetCheckpoint { .. }
        | Op::Access(_)
        | Op::Notify(_)
        | Op::ClaimReview { .. }
        | Op::MoveReview(_)
        | Op::ResolveReview { .. }
        | Op::ActivateRuleset { .. }
        | Op::RemoveBlock { .. } => unreachable!("applied on their own: {op:?}"),
    }
    Ok(())
}

/// Applies an op with a condition. The row a condition reads is locked (`FOR UPDATE`) until
/// the commit, so of two nodes claiming one case, the second waits and then sees the claim.
async fn apply_conditional(tx: &Transaction<'_>, op: &Op) -> PgResult<Result<(), TxnError>> {
    match op {
        Op::Access(a) => return super::access_pg::apply(tx, a).await,
        Op::Notify(n) => return super::notify_pg::apply(tx, n).await,
        Op::ClaimReview { tenant, id, actor, now_us } => {
            let Some(state) = review_state(tx, tenant, id).await? else {
                return Ok(Err(review_conflict(id, None)));
            };
            if state.0 != "open" {
                return Ok(Err(review_conflict(id, Some(state))));
            }
            let s = tx
                .prepare_cached(
                    "UPDATE reviews SET status = 'claimed', claimed_by = $3, claimed_at = $4
                     WHERE tenant = $1 AND id = $2",
                )
                .await?;
            tx.execute(&s, &[tenant, id, actor, now_us]).await?;
        }
        Op::MoveReview(m) => {
            if review_state(tx, &m.tenant, &m.id).await?.is_none() {
                return Ok(Err(review_conflict(&m.id, None)));
            }
            let s = tx
                .prepare_cached(
                    "UPDATE reviews SET status = CASE WHEN $3::text IS NULL THEN 'open' ELSE 'claimed' END,
                        claimed_by = $3, claimed_at = CASE WHEN $3::text IS NULL THEN NULL ELSE $4::bigint END,
                        level = COALESCE($5::smallint, level)
                     WHERE tenant = $1 AND id = $2 AND status != 'resolved'
                       AND (NOT $6::bool OR status = 'claimed') AND ($7::text IS NULL OR claimed_by = $7)
                       AND ($8::bigint IS NULL OR claimed_at <= $8) AND ($9::smallint IS NULL OR level <= $9)",
                )
                .await?;
            let (level, max_level) = (m.level.map(i16::from), m.max_level.map(i16::from));
            let n = tx
                .execute(
                    &s,
                    &[
                        &m.tenant,
                        &m.id,
                        &m.to,
                        &m.now_us,
                        &level,
                        &m.claimed,
                        &m.holder,
                        &m.claimed_before_us,
                        &max_level,
                    ],
                )
                .await?;
            if n == 0 {
                let state = review_state(tx, &m.tenant, &m.id).await?;
                return Ok(Err(review_conflict(&m.id, state)));
            }
        }
        Op::ResolveReview { tenant, id, actor, outcome, note, now_us, force } => {
            let Some(state) = review_state(tx, tenant, id).await? else {
                return Ok(Err(review_conflict(id, None)));
            };
            let (status, claimed_by, _) = &state;
            let holds_claim = status == "claimed" && claimed_by.as_ref() == Some(actor);
            let outcome = outcome.map(Outcome::as_str);
            if !(holds_claim || (*force && status != "resolved")) {
                return Ok(Err(review_conflict(id, Some(state))));
            }
            let s = tx
                .prepare_cached(
                    "UPDATE reviews SET status = 'resolved', resolved_by = $3, resolved_at = $4, outcome = $5, note = $6
                     WHERE tenant = $1 AND id = $2",
                )
                .await?;
            tx.execute(&s, &[tenant, id, actor, now_us, &outcome, note]).await?;
        }
        Op::ActivateRuleset { tenant, version, actor, now_us } => {
            let exists =
                tx.prepare_cached("SELECT 1 FROM rulesets WHERE tenant = $1 AND version = $2 FOR KEY SHARE").await?;
            if tx.query_opt(&exists, &[tenant, version]).await?.is_none() {
                return Ok(Err(TxnError::NotFound(format!("no ruleset version `{version}` (upload it first)"))));
            }
            let s = tx
                .prepare_cached(
                    "INSERT INTO active_rulesets (tenant, version, activated_by, activated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant) DO UPDATE SET version = EXCLUDED.version,
                        activated_by = EXCLUDED.activated_by, activated_at = EXCLUDED.activated_at",
                )
                .await?;
            tx.execute(&s, &[tenant, version, actor, now_us]).await?;
        }
        Op::RemoveBlock { tenant, kind, hash } => {
            let s = tx.prepare_cached("DELETE FROM blocklist WHERE tenant = $1 AND kind = $2 AND hash = $3").await?;
            if tx.execute(&s, &[tenant, kind, hash]).await? == 0 {
                return Ok(Err(TxnError::NotFound(format!("no {} blocklist entry `{hash}`", kind.as_str()))));
            }
        }
        _ => unreachable!("not a conditional op: {op:?}"),
    }
    Ok(Ok(()))
}

/// `(status, claimed_by, resolved_by)` of a review, locked for this transaction.
type ReviewState = (String, Option<String>, Option<String>);

async fn review_state(tx: &Transaction<'_>, tenant: &str, id: &str) -> PgResult<Option<ReviewState>> {
    let s = tx
        .prepare_cached("SELECT status, claimed_by, resolved_by FROM reviews WHERE tenant = $1 AND id = $2 FOR UPDATE")
        .await?;
    tx.query_opt(&s, &[&tenant, &id]).await?.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).transpose()
}

/// Why a claim or resolution of review `id` was refused (the embedded store's messages).
fn review_conflict(id: &str, state: Option<ReviewState>) -> TxnError {
    match state {
        None => TxnError::NotFound(format!("no review `{id}`")),
        Some((status, _, Some(by))) if status == "resolved" => {
            TxnError::Conflict(format!("review `{id}` was already resolved by `{by}`"))
        }
        Some((_, Some(by), _)) => TxnError::Conflict(format!("review `{id}` is claimed by `{by}`")),
        Some((status, _, _)) => TxnError::Conflict(format!("review `{id}` is {status}; claim it first")),
    }
}

/// The enrichment lookups of a whole batch: six statements, whatever its size. Each takes
/// the batch's values as parallel arrays (one element per request, or per asked value) and
/// answers with the element's index, so results go back to their request; the statements are
/// sent together and the connection pipelines them.
async fn lookup_batch(tx: &Transaction<'_>, reqs: &[LookupRequest]) -> PgResult<Vec<LookupResult>> {
    let (blocked, velocity, others, open_review, subject, decided) = futures_util::try_join!(
        tx.prepare_cached(
            "SELECT q.i FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[]) AS q (i, tenant, kind, hash)
             WHERE EXISTS (SELECT 1 FROM blocklist b WHERE b.tenant = q.tenant AND b.kind = q.kind AND b.hash = q.hash)"
        ),
        tx.prepare_cached(
            "SELECT q.i, v.subject
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
                AS q (i, tenant, kind, hash, since, subject)
             CROSS JOIN LATERAL (
                SELECT DISTINCT d.subject FROM identities d
                WHERE d.tenant = q.tenant AND d.kind = q.kind AND d.hash = q.hash AND d.seen_at >= q.since
                  AND d.subject <> q.subject
                ORDER BY d.subject LIMIT 1000
             ) v
             ORDER BY q.i, v.subject"
        ),
        tx.prepare_cached(
            "SELECT q.i, s.session_id, s.outcome
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[]) AS q (i, tenant, subject, session_id)
             JOIN sessions s ON s.tenant = q.tenant AND s.subject = q.subject AND s.session_id <> q.session_id
             ORDER BY q.i, s.session_id"
        ),
        tx.prepare_cached(concat!(
            "SELECT r.*, q.i FROM unnest($1::int8[], $2::text[], $3::text[]) AS q (i, tenant, session_id)
             CROSS JOIN LATERAL (
                SELECT ",
            review_cols!(),
            " FROM reviews WHERE tenant = q.tenant AND session_id = q.session_id AND status <> 'resolved'
                ORDER BY opened_at DESC LIMIT 1
             ) r"
        )),
        tx.prepare_cached(
            "SELECT q.i, s.attributes FROM unnest($1::int8[], $2::text[], $3::text[]) AS q (i, tenant, id)
             JOIN subjects s ON s.tenant = q.tenant AND s.id = q.id"
        ),
        tx.prepare_cached(
            "SELECT q.i, d.outcome, d.decided_by FROM unnest($1::int8[], $2::text[], $3::text[]) AS q (i, tenant, session_id)
             JOIN sessions s ON s.tenant = q.tenant AND s.session_id = q.session_id
             JOIN decisions d ON d.id = s.decision_id"
        ),
    )?;

    // Per request.
    let all: Vec<i64> = (0..reqs.len() as i64).collect();
    let tenants: Vec<&str> = reqs.iter().map(|r| r.tenant.as_str()).collect();
    let subjects: Vec<&str> = reqs.iter().map(|r| r.subject.as_str()).collect();
    let sessions: Vec<&str> = reqs.iter().map(|r| r.session_id.as_str()).collect();
    let (mut id_req, mut id_tenant, mut id_id) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in reqs.iter().enumerate() {
        if let Some(id) = &r.subject_id {
            id_req.push(i as i64);
            id_tenant.push(r.tenant.as_str());
            id_id.push(id.as_str());
        }
    }
    let b = Asked::of(reqs, |r| &r.block_hashes);
    let v = Asked::of(reqs, |r| &r.velocity_hashes);

    let (hits, velocity, others, open_review, subject, decided) = futures_util::try_join!(
        async { tx.query(&blocked, &[&b.index, &b.tenant, &b.kind, &b.hash]).await },
        async { tx.query(&velocity, &[&v.index, &v.tenant, &v.kind, &v.hash, &v.since, &v.subject]).await },
        async { tx.query(&others, &[&all, &tenants, &subjects, &sessions]).await },
        async { tx.query(&open_review, &[&all, &tenants, &sessions]).await },
        async { tx.query(&subject, &[&id_req, &id_tenant, &id_id]).await },
        async { tx.query(&decided, &[&all, &tenants, &sessions]).await },
    )?;

    let mut out: Vec<LookupResult> = reqs
        .iter()
        .map(|r| LookupResult {
            velocity: r.velocity_hashes.iter().map(|(kind, _)| (*kind, Vec::new())).collect(),
            ..LookupResult::default()
        })
        .collect();
    let mut hit = vec![false; b.req.len()];
    for r in &hits {
        hit[r.try_get::<_, i64>(0)? as usize] = true;
    }
    // Each blocked kind once, in the order asked.
    for (j, _) in hit.iter().enumerate().filter(|(_, &h)| h) {
        let (i, kind) = (b.req[j], b.kinds[j]);
        if !out[i].blocked.contains(&kind) {
            out[i].blocked.push(kind);
        }
    }
    for r in &velocity {
        let j = r.try_get::<_, i64>(0)? as usize;
        out[v.req[j]].velocity[v.position[j]].1.push(r.try_get(1)?);
    }
    for r in &others {
        let outcome = r.try_get::<_, Option<OutcomeCol>>(2)?.map(|o| o.0);
        out[r.try_get::<_, i64>(0)? as usize].other_sessions.push((r.try_get(1)?, outcome));
    }
    for r in &open_review {
        out[r.try_get::<_, i64>(15)? as usize].open_review = Some(row_review(r)?);
    }
    for r in &subject {
        out[r.try_get::<_, i64>(0)? as usize].subject_attributes = Some(r.try_get::<_, JsonCol<Value>>(1)?.0);
    }
    for r in &decided {
        out[r.try_get::<_, i64>(0)? as usize].session_decision =
            Some(SessionDecision { outcome: r.try_get::<_, OutcomeCol>(1)?.0, decided_by: r.try_get(2)? });
    }
    Ok(out)
}

/// The values a batch asks about (blocklist or velocity), flattened into parallel columns: one
/// element per (request, value), whose index is its position here.
#[derive(Default)]
struct Asked<'a> {
    index: Vec<i64>,
    /// The request it belongs to, and its position among that request's values.
    req: Vec<usize>,
    position: Vec<usize>,
    tenant: Vec<&'a str>,
    kind: Vec<&'static str>,
    kinds: Vec<BlocklistKind>,
    hash: Vec<&'a str>,
    since: Vec<i64>,
    subject: Vec<&'a str>,
}

impl<'a> Asked<'a> {
    fn of(reqs: &'a [LookupRequest], values: fn(&LookupRequest) -> &Vec<(BlocklistKind, String)>) -> Asked<'a> {
        let mut a = Asked::default();
        for (i, r) in reqs.iter().enumerate() {
            for (p, (kind, hash)) in values(r).iter().enumerate() {
                a.index.push(a.index.len() as i64);
                a.req.push(i);
                a.position.push(p);
                a.tenant.push(&r.tenant);
                a.kind.push(kind.as_str());
                a.kinds.push(*kind);
                a.hash.push(hash);
                a.since.push(r.velocity_since_us);
                a.subject.push(&r.subject);
            }
        }
        a
    }
}

fn row_decision(r: &Row) -> PgResult<DecisionRecord> {
    Ok(DecisionRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        session_id: r.try_get(2)?,
        subject: r.try_get(3)?,
        event_id: r.try_get(4)?,
        event_offset: r.try_get::<_, Option<i64>>(5)?.map(|o| o as u64),
        outcome: r.try_get::<_, OutcomeCol>(6)?.0,
        score: r.try_get(7)?,
        ruleset_version: r.try_get(8)?,
        reasons: r.try_get::<_, JsonCol<_>>(9)?.0,
        decided_by: r.try_get(10)?,
        decided_at_us: r.try_get(11)?,
        detail: r.try_get::<_, JsonCol<_>>(12)?.0,
    })
}

fn row_review(r: &Row) -> PgResult<ReviewRecord> {
    Ok(ReviewRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        session_id: r.try_get(2)?,
        subject: r.try_get(3)?,
        decision_id: r.try_get(4)?,
        reasons: r.try_get::<_, JsonCol<_>>(5)?.0,
        status: r.try_get(6)?,
        opened_at_us: r.try_get(7)?,
        claimed_by: r.try_get(8)?,
        claimed_at_us: r.try_get(9)?,
        resolved_by: r.try_get(10)?,
        resolved_at_us: r.try_get(11)?,
        outcome: r.try_get::<_, Option<OutcomeCol>>(12)?.map(|o| o.0),
        note: r.try_get(13)?,
        level: r.try_get::<_, i16>(14)? as u8,
    })
}

fn row_session(r: &Row) -> PgResult<SessionRecord> {
    Ok(SessionRecord {
        tenant: r.try_get(0)?,
        session_id: r.try_get(1)?,
        subject: r.try_get(2)?,
        provider_status: r.try_get(3)?,
        state: r.try_get(4)?,
        outcome: r.try_get::<_, Option<OutcomeCol>>(5)?.map(|o| o.0),
        decision_id: r.try_get(6)?,
        created_at_us: r.try_get(7)?,
        updated_at_us: r.try_get(8)?,
    })
}

fn row_block(r: &Row) -> PgResult<BlockRecord> {
    Ok(BlockRecord {
        tenant: r.try_get(0)?,
        kind: r.try_get(1)?,
        hash: r.try_get(2)?,
        reason: r.try_get(3)?,
        added_by: r.try_get(4)?,
        added_at_us: r.try_get(5)?,
    })
}

fn row_subject(r: &Row) -> PgResult<SubjectRecord> {
    Ok(SubjectRecord {
        tenant: r.try_get(0)?,
        id: r.try_get(1)?,
        attributes: r.try_get::<_, JsonCol<_>>(2)?.0,
        updated_by: r.try_get(3)?,
        updated_at_us: r.try_get(4)?,
    })
}

fn row_ruleset(r: &Row) -> PgResult<RulesetRecord> {
    Ok(RulesetRecord {
        tenant: r.try_get(0)?,
        version: r.try_get(1)?,
        label: r.try_get(2)?,
        text: r.try_get(3)?,
        created_by: r.try_get(4)?,
        created_at_us: r.try_get(5)?,
    })
}

fn row_outbox(r: &Row) -> PgResult<(i64, NewEntry)> {
    Ok((
        r.try_get(0)?,
        NewEntry {
            id: r.try_get(1)?,
            tenant: r.try_get(2)?,
            source: r.try_get(3)?,
            kind: r.try_get(4)?,
            partition_key: r.try_get(5)?,
            dedupe_key: Some(r.try_get(6)?),
            event: r.try_get(7)?,
            body: r.try_get(8)?,
        },
    ))
}

/// Converts every row, or reports the first that does not convert.
fn all<T>(rows: Vec<Row>, f: fn(&Row) -> PgResult<T>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect::<PgResult<_>>().map_err(unavailable)
}

/// Converts the first row, if any.
fn first<T>(rows: Vec<Row>, f: fn(&Row) -> PgResult<T>) -> Result<Option<T>, StoreError> {
    rows.first().map(f).transpose().map_err(unavailable)
}

#[async_trait]
impl Store for PgStore {
    /// Commits the txn's ops and entries in one PostgreSQL transaction ([`Store::publish`] then
    /// appends the entries to the log, each with a dedupe key: its own, or `entry:<id>`).
    ///
    /// An error means nothing was committed — unless the connection broke during `COMMIT`
    /// itself, when, as with any database, the outcome is unknown (if it did commit, the relay
    /// publishes). `Err(TxnError::Log)` from `publish` (and so from `commit`) means the log
    /// append failed: the state **is** committed, and the entries wait in the outbox until
    /// [`PgStore::run_relay`] (on any node) publishes them. Do not re-apply such a txn.
    async fn commit_staged(&self, txn: Txn) -> Result<Staged, TxnError> {
        if txn.entries.is_empty() && txn.ops.is_empty() {
            return Ok(Staged::default());
        }
        let entries: Vec<NewEntry> = txn
            .entries
            .into_iter()
            .map(|mut e| {
                e.dedupe_key.get_or_insert_with(|| format!("entry:{}", e.id));
                e
            })
            .collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // A database error drops `tx`, which rolls it back.
        match apply_txn(&tx, &txn.ops, &entries).await.map_err(unavailable)? {
            Ok(()) => tx.commit().await.map_err(unavailable)?,
            Err(failed) => {
                // A failed rollback leaves the transaction uncommitted all the same.
                let _ = tx.rollback().await;
                return Err(failed);
            }
        }
        Ok(Staged { entries, rows: Vec::new() })
    }

    async fn publish(&self, staged: Staged) -> Result<Vec<Appended>, TxnError> {
        let entries = staged.entries;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let appended = self.log.append(entries).await?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        if let Err(e) = self.delete_outbox(&ids).await {
            // Published; the relay publishes them again later, which the log's dedupe ignores.
            tracing::warn!(error = %e, "published entries stay in the outbox");
        }
        Ok(appended)
    }

    async fn close(&self) {
        // Every commit is awaited by its caller; connections close with the pool.
    }

    async fn stats(
        &self,
        tenant: &str,
        from_us: i64,
        bucket_us: i64,
        decisions_from_us: i64,
    ) -> Result<StatsRows, StoreError> {
        let counts = self
            .query(
                "SELECT tenant, (minute / $3) * $3, metric, sum(count)::bigint FROM tenant_stats
                 WHERE tenant = $1 AND minute >= $2 GROUP BY 1, 2, 3",
                &[&tenant, &(from_us / 60_000_000), &(bucket_us / 60_000_000).max(1)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(StatCount {
                    tenant: r.try_get(0)?,
                    minute: r.try_get(1)?,
                    metric: r.try_get(2)?,
                    count: r.try_get::<_, i64>(3)? as u64,
                })
            })
            .collect::<PgResult<_>>()
            .map_err(unavailable)?;
        let decisions = self
            .query(
                "SELECT (decided_at / $3) * $3, outcome, count(*) FROM decisions
                 WHERE tenant = $1 AND decided_at >= $2 GROUP BY 1, 2",
                &[&tenant, &decisions_from_us, &bucket_us],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, OutcomeCol>(1)?.0, r.try_get::<_, i64>(2)? as u64)))
            .collect::<PgResult<_>>()
            .map_err(unavailable)?;
        let rows = self
            .query(
                "SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'claimed'),
                    min(opened_at) FILTER (WHERE status = 'open')
                 FROM reviews WHERE tenant = $1 AND status IN ('open', 'claimed')",
                &[&tenant],
            )
            .await?;
        let r = rows.first().expect("an aggregate answers one row");
        let (open, claimed, oldest): (i64, i64, Option<i64>) = (
            r.try_get(0).map_err(unavailable)?,
            r.try_get(1).map_err(unavailable)?,
            r.try_get(2).map_err(unavailable)?,
        );
        Ok(StatsRows {
            counts,
            decisions,
            open_reviews: open as u64,
            claimed_reviews: claimed as u64,
            oldest_open_at_us: oldest,
        })
    }

    async fn identities(&self, q: IdentityQuery) -> Result<Vec<Observation>, StoreError> {
        let (sql, params) = q.sql(|n| format!("${n}"));
        let rows = self.query_built(&sql, params).await?;
        rows.iter()
            .map(|r| {
                Ok(Observation {
                    tenant: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    hash: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    session_id: r.try_get(4)?,
                    seen_at_us: r.try_get(5)?,
                })
            })
            .collect::<PgResult<_>>()
            .map_err(unavailable)
    }

    async fn document(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<super::documents::DocumentRecord>, StoreError> {
        let rows = self.query(&super::documents::select(super::documents::PG_BY_ID), &[&id, &tenant]).await?;
        Ok(rows.first().map(super::documents::pg_row))
    }

    async fn session_documents(
        &self,
        tenant: &str,
        session_id: &str,
    ) -> Result<Vec<super::documents::DocumentRecord>, StoreError> {
        let rows =
            self.query(&super::documents::select(super::documents::PG_BY_SESSION), &[&tenant, &session_id]).await?;
        Ok(rows.iter().map(super::documents::pg_row).collect())
    }

    async fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<notify::EndpointRecord>, StoreError> {
        let rows = self.query(super::notify_pg::ENDPOINTS, &[&tenant, &None::<String>]).await?;
        rows.iter().map(super::notify_pg::row_endpoint).collect()
    }

    async fn endpoint(&self, id: &str) -> Result<Option<notify::EndpointRecord>, StoreError> {
        let rows = self.query(super::notify_pg::ENDPOINTS, &[&None::<String>, &id]).await?;
        rows.first().map(super::notify_pg::row_endpoint).transpose()
    }

    async fn attempts(
        &self,
        endpoint: &str,
        before_seq: Option<i64>,
        failed_only: bool,
        limit: usize,
    ) -> Result<Vec<notify::AttemptRecord>, StoreError> {
        let rows =
            self.query(super::notify_pg::ATTEMPTS, &[&endpoint, &before_seq, &failed_only, &(limit as i64)]).await?;
        rows.iter().map(super::notify_pg::row_attempt).collect()
    }

    async fn api_key_by_hash(&self, sha256: &str) -> Result<Option<access::ApiKeyRecord>, StoreError> {
        let rows = self.query(super::access_pg::KEY_BY_HASH, &[&sha256]).await?;
        first(rows, super::access_pg::row_key)
    }

    async fn api_keys(&self, tenant: Option<&str>) -> Result<Vec<access::ApiKeyRecord>, StoreError> {
        all(self.query(super::access_pg::KEYS, &[&tenant]).await?, super::access_pg::row_key)
    }

    async fn user(&self, id: &str) -> Result<Option<access::UserRecord>, StoreError> {
        first(self.query(super::access_pg::USER_BY_ID, &[&id]).await?, super::access_pg::row_user)
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<access::UserRecord>, StoreError> {
        first(self.query(super::access_pg::USER_BY_NAME, &[&username]).await?, super::access_pg::row_user)
    }

    async fn user_by_oidc_subject(&self, subject: &str) -> Result<Option<access::UserRecord>, StoreError> {
        first(self.query(super::access_pg::USER_BY_OIDC, &[&subject]).await?, super::access_pg::row_user)
    }

    async fn users(&self, tenant: Option<&str>) -> Result<Vec<access::UserRecord>, StoreError> {
        all(self.query(super::access_pg::USERS, &[&tenant]).await?, super::access_pg::row_user)
    }

    async fn auth_session(&self, id_sha256: &str) -> Result<Option<access::AuthSessionRecord>, StoreError> {
        first(self.query(super::access_pg::SESSION, &[&id_sha256]).await?, super::access_pg::row_session)
    }

    async fn idempotent(&self, scope: &str, key: &str) -> Result<Option<access::IdempotencyRecord>, StoreError> {
        first(self.query(super::access_pg::IDEMPOTENT, &[&scope, &key]).await?, super::access_pg::row_idempotent)
    }

    async fn checkpoint(&self, consumer: &str) -> Result<Option<u64>, StoreError> {
        let rows = self.query("SELECT position FROM checkpoints WHERE consumer = $1", &[&consumer]).await?;
        first(rows, |r| r.try_get::<_, i64>(0).map(|p| p as u64))
    }

    async fn lookup_at(
        &self,
        reqs: Vec<LookupRequest>,
        consumer: &str,
    ) -> Result<(Vec<LookupResult>, Option<u64>), StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the whole batch and the checkpoint, as the embedded store's one read
        // transaction.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(unavailable)?;
        let checkpoint =
            tx.prepare_cached("SELECT position FROM checkpoints WHERE consumer = $1").await.map_err(unavailable)?;
        let at = match tx.query_opt(&checkpoint, &[&consumer]).await.map_err(unavailable)? {
            Some(r) => Some(r.try_get::<_, i64>(0).map_err(unavailable)? as u64),
            None => None,
        };
        let out = if reqs.is_empty() { Vec::new() } else { lookup_batch(&tx, &reqs).await.map_err(unavailable)? };
        tx.commit().await.map_err(unavailable)?;
        Ok((out, at))
    }

    async fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError> {
        let rows = self.query(concat!("SELECT ", decision_cols!(), " FROM decisions WHERE id = $1"), &[&id]).await?;
        first(rows, row_decision)
    }

    async fn decisions_between(
        &self,
        since_us: i64,
        until_us: i64,
        tenant: Option<&str>,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    decision_cols!(),
                    " FROM decisions
                     WHERE decided_by = 'rules' AND (decided_at, id) > ($1, $2) AND decided_at < $3
                       AND ($4::text IS NULL OR tenant = $4)
                     ORDER BY decided_at, id LIMIT $5"
                ),
                &[&since_us, &after_id.unwrap_or(""), &until_us, &tenant, &limit_param(limit)],
            )
            .await?;
        all(rows, row_decision)
    }

    async fn session(&self, tenant: &str, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT tenant, session_id, subject, provider_status, state, outcome, decision_id, created_at, updated_at
                 FROM sessions WHERE tenant = $1 AND session_id = $2",
                &[&tenant, &id],
            )
            .await?;
        first(rows, row_session)
    }

    async fn session_decisions(&self, tenant: &str, id: &str) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    decision_cols!(),
                    " FROM decisions WHERE tenant = $1 AND session_id = $2 ORDER BY decided_at, id"
                ),
                &[&tenant, &id],
            )
            .await?;
        all(rows, row_decision)
    }

    async fn open_sessions_with(
        &self,
        tenant: &str,
        kind: BlocklistKind,
        hash: &str,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    review_cols!(),
                    " FROM reviews WHERE tenant = $1 AND status <> 'resolved' AND session_id IN
                       (SELECT session_id FROM identities WHERE tenant = $1 AND kind = $2 AND hash = $3)
                     ORDER BY opened_at, id"
                ),
                &[&tenant, &kind, &hash],
            )
            .await?;
        all(rows, row_review)
    }

    async fn review(&self, tenant: Option<&str>, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        let rows = self
            .query(
                concat!("SELECT ", review_cols!(), " FROM reviews WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"),
                &[&id, &tenant],
            )
            .await?;
        first(rows, row_review)
    }

    async fn reviews(&self, f: ReviewFilter) -> Result<Vec<ReviewRecord>, StoreError> {
        // A reason matches itself and its sub-reasons (`velocity` matches `velocity.document`).
        let (sql, params) = f.sql(
            review_cols!(),
            |n| format!("${n}"),
            |p| {
                format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements_text(reasons::jsonb) AS r (reason)
                     WHERE r.reason = {p}::text OR starts_with(r.reason, {p}::text || '.'))"
                )
            },
        );
        all(self.query_built(&sql, params).await?, row_review)
    }

    async fn resolved_review_for_session(&self, tenant: &str, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        // ILIKE: SQLite's LIKE ignores ASCII case.
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    review_cols!(),
                    " FROM reviews WHERE tenant = $1 AND session_id = $2 AND status = 'resolved'
                     AND resolved_by <> 'rules' AND resolved_by NOT ILIKE 'blocklist:%'
                     ORDER BY resolved_at DESC LIMIT 1"
                ),
                &[&tenant, &id],
            )
            .await?;
        first(rows, row_review)
    }

    async fn blocks(&self, tenant: &str, kind: BlocklistKind, limit: usize) -> Result<Vec<BlockRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT tenant, kind, hash, reason, added_by, added_at FROM blocklist WHERE tenant = $1 AND kind = $2
                 ORDER BY added_at DESC, hash LIMIT $3",
                &[&tenant, &kind, &limit_param(limit)],
            )
            .await?;
        all(rows, row_block)
    }

    async fn block(&self, tenant: &str, kind: BlocklistKind, hash: &str) -> Result<Option<BlockRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT tenant, kind, hash, reason, added_by, added_at FROM blocklist
                 WHERE tenant = $1 AND kind = $2 AND hash = $3",
                &[&tenant, &kind, &hash],
            )
            .await?;
        first(rows, row_block)
    }

    async fn subject(&self, tenant: &str, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT tenant, id, attributes, updated_by, updated_at FROM subjects WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        first(rows, row_subject)
    }

    async fn ruleset(&self, tenant: &str, version: &str) -> Result<Option<RulesetRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT tenant, version, label, text, created_by, created_at FROM rulesets
                 WHERE tenant = $1 AND version = $2",
                &[&tenant, &version],
            )
            .await?;
        first(rows, row_ruleset)
    }

    async fn rulesets(&self, tenant: &str) -> Result<Vec<RulesetRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT tenant, version, label, text, created_by, created_at FROM rulesets WHERE tenant = $1
                 ORDER BY created_at DESC, version",
                &[&tenant],
            )
            .await?;
        all(rows, row_ruleset)
    }

    async fn active_rulesets(&self) -> Result<Vec<(String, ActiveRuleset)>, StoreError> {
        let rows = self
            .query("SELECT tenant, version, activated_by, activated_at FROM active_rulesets ORDER BY tenant", &[])
            .await?;
        all(rows, |r| {
            Ok((
                r.try_get(0)?,
                ActiveRuleset { version: r.try_get(1)?, activated_by: r.try_get(2)?, activated_at_us: r.try_get(3)? },
            ))
        })
    }
}
