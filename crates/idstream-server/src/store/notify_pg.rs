//! The notification records in PostgreSQL: how [`NotifyOp`]s apply inside a store transaction,
//! and the reads.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::notify::*;
use super::{StoreError, TxnError};

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Applies one op; the inner error is its condition not holding.
pub(crate) async fn apply(tx: &Transaction<'_>, op: &NotifyOp) -> PgResult<Result<(), TxnError>> {
    match op {
        NotifyOp::PutEndpoint(e) => {
            let n = tx
                .execute(
                    "INSERT INTO endpoints (id, tenant, url, kinds, secrets, outcomes, timeout_secs, headers,
                        rate_limit_per_sec, disabled, disabled_reason, created_by, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                     ON CONFLICT DO NOTHING",
                    &[
                        &e.id,
                        &e.tenant,
                        &e.url,
                        &to_json(&e.kinds),
                        &to_json(&e.secrets),
                        &e.outcomes.as_ref().map(to_json),
                        &(e.timeout_secs as i64),
                        &to_json(&e.headers),
                        &e.rate_limit_per_sec,
                        &e.disabled,
                        &e.disabled_reason,
                        &e.created_by,
                        &e.created_at_us,
                        &e.updated_at_us,
                    ],
                )
                .await?;
            if n == 0 {
                return Ok(Err(TxnError::Conflict(format!("an endpoint `{}` exists", e.id))));
            }
        }
        NotifyOp::UpdateEndpoint { tenant, endpoint: e } => {
            let n = tx
                .execute(
                    "UPDATE endpoints SET url = $3, kinds = $4, secrets = $5, outcomes = $6, timeout_secs = $7,
                        headers = $8, rate_limit_per_sec = $9, disabled = $10, disabled_reason = $11, updated_at = $12
                     WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
                    &[
                        &e.id,
                        tenant,
                        &e.url,
                        &to_json(&e.kinds),
                        &to_json(&e.secrets),
                        &e.outcomes.as_ref().map(to_json),
                        &(e.timeout_secs as i64),
                        &to_json(&e.headers),
                        &e.rate_limit_per_sec,
                        &e.disabled,
                        &e.disabled_reason,
                        &e.updated_at_us,
                    ],
                )
                .await?;
            if n == 0 {
                return Ok(Err(TxnError::NotFound(format!("no endpoint `{}`", e.id))));
            }
        }
        NotifyOp::DeleteEndpoint { tenant, id } => {
            let n = tx
                .execute("DELETE FROM endpoints WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)", &[id, tenant])
                .await?;
            if n == 0 {
                return Ok(Err(TxnError::NotFound(format!("no endpoint `{id}`"))));
            }
        }
        NotifyOp::ResetCheckpoint { consumer, offset } => {
            tx.execute(
                "INSERT INTO checkpoints (consumer, position) VALUES ($1, $2)
                 ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position",
                &[consumer, &(*offset as i64)],
            )
            .await?;
        }
        NotifyOp::RecordAttempt(a) => {
            tx.execute(
                "INSERT INTO notification_attempts (endpoint, event_id, event_offset, kind, session_id, webhook_id,
                    attempt, status, latency_ms, error, outcome, next_attempt_at, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &a.endpoint,
                    &a.event_id,
                    &(a.event_offset as i64),
                    &a.kind,
                    &a.session_id,
                    &a.webhook_id,
                    &(a.attempt as i32),
                    &a.status.map(i32::from),
                    &(a.latency_ms as i64),
                    &a.error,
                    &a.outcome,
                    &a.next_attempt_at_us,
                    &a.at_us,
                ],
            )
            .await?;
        }
    }
    Ok(Ok(()))
}

pub(crate) const ENDPOINTS: &str = "SELECT id, tenant, url, kinds, secrets, outcomes, timeout_secs, headers,
    rate_limit_per_sec, disabled, disabled_reason, created_by, created_at, updated_at
    FROM endpoints WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR id = $2) ORDER BY tenant, id";

pub(crate) const ATTEMPTS: &str = "SELECT seq, endpoint, event_id, event_offset, kind, session_id, webhook_id,
    attempt, status, latency_ms, error, outcome, next_attempt_at, at
    FROM notification_attempts
    WHERE endpoint = $1 AND ($2::bigint IS NULL OR seq < $2) AND (NOT $3 OR outcome = 'failed')
    ORDER BY seq DESC LIMIT $4";

fn bad(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn row_endpoint(r: &Row) -> Result<EndpointRecord, StoreError> {
    let text = |i: usize| r.try_get::<_, String>(i).map_err(bad);
    Ok(EndpointRecord {
        id: text(0)?,
        tenant: text(1)?,
        url: text(2)?,
        kinds: from_json(&text(3)?).map_err(bad)?,
        secrets: from_json(&text(4)?).map_err(bad)?,
        outcomes: match r.try_get::<_, Option<String>>(5).map_err(bad)? {
            Some(s) => Some(from_json(&s).map_err(bad)?),
            None => None,
        },
        timeout_secs: r.try_get::<_, i64>(6).map_err(bad)? as u64,
        headers: from_json(&text(7)?).map_err(bad)?,
        rate_limit_per_sec: r.try_get(8).map_err(bad)?,
        disabled: r.try_get(9).map_err(bad)?,
        disabled_reason: r.try_get(10).map_err(bad)?,
        created_by: text(11)?,
        created_at_us: r.try_get(12).map_err(bad)?,
        updated_at_us: r.try_get(13).map_err(bad)?,
    })
}

pub(crate) fn row_attempt(r: &Row) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        seq: r.try_get(0).map_err(bad)?,
        endpoint: r.try_get(1).map_err(bad)?,
        event_id: r.try_get(2).map_err(bad)?,
        event_offset: r.try_get::<_, i64>(3).map_err(bad)? as u64,
        kind: r.try_get(4).map_err(bad)?,
        session_id: r.try_get(5).map_err(bad)?,
        webhook_id: r.try_get(6).map_err(bad)?,
        attempt: r.try_get::<_, i32>(7).map_err(bad)? as u32,
        status: r.try_get::<_, Option<i32>>(8).map_err(bad)?.map(|s| s as u16),
        latency_ms: r.try_get::<_, i64>(9).map_err(bad)? as u64,
        error: r.try_get(10).map_err(bad)?,
        outcome: r.try_get(11).map_err(bad)?,
        next_attempt_at_us: r.try_get(12).map_err(bad)?,
        at_us: r.try_get(13).map_err(bad)?,
    })
}
