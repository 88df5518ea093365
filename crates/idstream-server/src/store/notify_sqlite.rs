//! The notification records in the embedded store (`state.db`).

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::notify::*;
use super::TxnError;

fn bad_column(i: usize, e: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
}

/// Applies one op; the inner error is its condition not holding.
pub(crate) fn apply(tx: &Transaction<'_>, op: &NotifyOp) -> rusqlite::Result<Result<(), TxnError>> {
    match op {
        NotifyOp::PutEndpoint(e) => {
            let n = tx
                .prepare_cached(
                    "INSERT INTO endpoints (id, tenant, url, kinds, secrets, outcomes, timeout_secs, headers,
                        rate_limit_per_sec, disabled, disabled_reason, created_by, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    e.id,
                    e.tenant,
                    e.url,
                    to_json(&e.kinds),
                    to_json(&e.secrets),
                    e.outcomes.as_ref().map(to_json),
                    e.timeout_secs as i64,
                    to_json(&e.headers),
                    e.rate_limit_per_sec,
                    e.disabled,
                    e.disabled_reason,
                    e.created_by,
                    e.created_at_us,
                    e.updated_at_us
                ])?;
            if n == 0 {
                return Ok(Err(TxnError::Conflict(format!("an endpoint `{}` exists", e.id))));
            }
        }
        NotifyOp::UpdateEndpoint { tenant, endpoint: e } => {
            let n = tx
                .prepare_cached(
                    "UPDATE endpoints SET url = ?3, kinds = ?4, secrets = ?5, outcomes = ?6, timeout_secs = ?7,
                        headers = ?8, rate_limit_per_sec = ?9, disabled = ?10, disabled_reason = ?11, updated_at = ?12
                     WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
                )?
                .execute(params![
                    e.id,
                    tenant,
                    e.url,
                    to_json(&e.kinds),
                    to_json(&e.secrets),
                    e.outcomes.as_ref().map(to_json),
                    e.timeout_secs as i64,
                    to_json(&e.headers),
                    e.rate_limit_per_sec,
                    e.disabled,
                    e.disabled_reason,
                    e.updated_at_us
                ])?;
            if n == 0 {
                return Ok(Err(TxnError::NotFound(format!("no endpoint `{}`", e.id))));
            }
        }
        NotifyOp::DeleteEndpoint { tenant, id } => {
            let n = tx
                .prepare_cached("DELETE FROM endpoints WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)")?
                .execute(params![id, tenant])?;
            if n == 0 {
                return Ok(Err(TxnError::NotFound(format!("no endpoint `{id}`"))));
            }
        }
        NotifyOp::ResetCheckpoint { consumer, offset } => {
            tx.prepare_cached(
                "INSERT INTO checkpoints (consumer, offset, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (consumer) DO UPDATE SET offset = excluded.offset, updated_at = excluded.updated_at",
            )?
            .execute(params![consumer, *offset as i64, crate::util::now_us()])?;
        }
        NotifyOp::RecordAttempt(a) => {
            tx.prepare_cached(
                "INSERT INTO notification_attempts (endpoint, event_id, event_offset, kind, session_id, webhook_id,
                    attempt, status, latency_ms, error, outcome, next_attempt_at, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                a.endpoint,
                a.event_id,
                a.event_offset as i64,
                a.kind,
                a.session_id,
                a.webhook_id,
                a.attempt,
                a.status,
                a.latency_ms as i64,
                a.error,
                a.outcome,
                a.next_attempt_at_us,
                a.at_us
            ])?;
        }
    }
    Ok(Ok(()))
}

const ENDPOINT_COLS: &str = "id, tenant, url, kinds, secrets, outcomes, timeout_secs, headers, rate_limit_per_sec,
    disabled, disabled_reason, created_by, created_at, updated_at";

fn row_endpoint(r: &rusqlite::Row<'_>) -> rusqlite::Result<EndpointRecord> {
    let json = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    Ok(EndpointRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        url: r.get(2)?,
        kinds: from_json(&json(3)?).map_err(|e| bad_column(3, e))?,
        secrets: from_json(&json(4)?).map_err(|e| bad_column(4, e))?,
        outcomes: match r.get::<_, Option<String>>(5)? {
            Some(s) => Some(from_json(&s).map_err(|e| bad_column(5, e))?),
            None => None,
        },
        timeout_secs: r.get::<_, i64>(6)? as u64,
        headers: from_json(&json(7)?).map_err(|e| bad_column(7, e))?,
        rate_limit_per_sec: r.get(8)?,
        disabled: r.get(9)?,
        disabled_reason: r.get(10)?,
        created_by: r.get(11)?,
        created_at_us: r.get(12)?,
        updated_at_us: r.get(13)?,
    })
}

pub(crate) fn endpoints(c: &Connection, tenant: Option<&str>) -> rusqlite::Result<Vec<EndpointRecord>> {
    c.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLS} FROM endpoints WHERE (?1 IS NULL OR tenant = ?1) ORDER BY tenant, id"
    ))?
    .query_map([tenant], row_endpoint)?
    .collect()
}

pub(crate) fn endpoint(c: &Connection, id: &str) -> rusqlite::Result<Option<EndpointRecord>> {
    c.prepare_cached(&format!("SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = ?1"))?
        .query_row([id], row_endpoint)
        .optional()
}

/// An endpoint's attempts before `before_seq` (all when `None`), newest first; `failed` keeps
/// only given-up deliveries (the dead-letter list).
pub(crate) fn attempts(
    c: &Connection,
    endpoint: &str,
    before_seq: Option<i64>,
    failed_only: bool,
    limit: usize,
) -> rusqlite::Result<Vec<AttemptRecord>> {
    c.prepare_cached(
        "SELECT seq, endpoint, event_id, event_offset, kind, session_id, webhook_id, attempt, status, latency_ms,
            error, outcome, next_attempt_at, at
         FROM notification_attempts
         WHERE endpoint = ?1 AND (?2 IS NULL OR seq < ?2) AND (?3 = 0 OR outcome = 'failed')
         ORDER BY seq DESC LIMIT ?4",
    )?
    .query_map(params![endpoint, before_seq, failed_only, limit as i64], |r| {
        Ok(AttemptRecord {
            seq: r.get(0)?,
            endpoint: r.get(1)?,
            event_id: r.get(2)?,
            event_offset: r.get::<_, i64>(3)? as u64,
            kind: r.get(4)?,
            session_id: r.get(5)?,
            webhook_id: r.get(6)?,
            attempt: r.get(7)?,
            status: r.get(8)?,
            latency_ms: r.get::<_, i64>(9)? as u64,
            error: r.get(10)?,
            outcome: r.get(11)?,
            next_attempt_at_us: r.get(12)?,
            at_us: r.get(13)?,
        })
    })?
    .collect()
}
