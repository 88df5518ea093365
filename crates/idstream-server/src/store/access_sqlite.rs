//! The access records in the embedded store (`state.db`): how [`AccessOp`]s apply inside the
//! store writer's transaction, and the reads.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::access::*;
use super::TxnError;
use crate::domain::Role;

/// Applies one op; the inner error is its condition not holding.
pub(crate) fn apply(tx: &Transaction<'_>, op: &AccessOp) -> rusqlite::Result<Result<(), TxnError>> {
    match op {
        AccessOp::PutApiKey(k) => {
            tx.prepare_cached(
                "INSERT INTO api_keys (id, tenant, name, role, sha256, created_by, created_at, revoked_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                k.id,
                k.tenant,
                k.name,
                k.role,
                k.sha256,
                k.created_by,
                k.created_at_us,
                k.revoked_at_us,
                k.last_used_at_us
            ])?;
        }
        AccessOp::RevokeApiKey { tenant, id, now_us } => {
            let n = tx
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?3
                     WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2) AND revoked_at IS NULL",
                )?
                .execute(params![id, tenant, now_us])?;
            if n == 0 {
                let revoked: Option<Option<i64>> = tx
                    .prepare_cached("SELECT revoked_at FROM api_keys WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)")?
                    .query_row(params![id, tenant], |r| r.get(0))
                    .optional()?;
                return Ok(Err(match revoked {
                    Some(Some(_)) => TxnError::Conflict(format!("API key `{id}` is already revoked")),
                    _ => TxnError::NotFound(format!("no API key `{id}`")),
                }));
            }
        }
        AccessOp::TouchApiKey { id, now_us } => {
            tx.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?.execute(params![id, now_us])?;
        }
        AccessOp::PutUser(u) => {
            let n = tx
                .prepare_cached(
                    "INSERT INTO users (id, tenant, username, role, password_hash, oidc_subject, disabled, failed_logins,
                        locked_until, created_by, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    u.id,
                    u.tenant,
                    u.username,
                    u.role,
                    u.password_hash,
                    u.oidc_subject,
                    u.disabled,
                    u.failed_logins,
                    u.locked_until_us,
                    u.created_by,
                    u.created_at_us,
                    u.updated_at_us
                ])?;
            if n == 0 {
                return Ok(Err(TxnError::Conflict(format!("a user named `{}` exists", u.username))));
            }
        }
        AccessOp::UpdateUser { tenant, id, role, disabled, password_hash, now_us } => {
            let n = tx
                .prepare_cached(
                    "UPDATE users SET role = COALESCE(?3, role), disabled = COALESCE(?4, disabled),
                        password_hash = COALESCE(?5, password_hash),
                        failed_logins = CASE WHEN ?5 IS NULL THEN failed_logins ELSE 0 END,
                        locked_until = CASE WHEN ?5 IS NULL THEN locked_until ELSE NULL END,
                        updated_at = ?6
                     WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
                )?
                .execute(params![id, tenant, role, disabled, password_hash, now_us])?;
            if n == 0 {
                return Ok(Err(TxnError::NotFound(format!("no user `{id}`"))));
            }
        }
        AccessOp::LoginFailed { user_id, now_us, lock_after, lock_for_us } => {
            tx.prepare_cached(
                "UPDATE users SET failed_logins = failed_logins + 1,
                    locked_until = CASE WHEN failed_logins + 1 >= ?3 THEN ?2 + ?4 ELSE locked_until END
                 WHERE id = ?1",
            )?
            .execute(params![user_id, now_us, lock_after, lock_for_us])?;
        }
        AccessOp::LoginSucceeded { user_id } => {
            tx.prepare_cached("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?1")?
                .execute([user_id])?;
        }
        AccessOp::PutAuthSession(s) => {
            tx.prepare_cached(
                "INSERT INTO auth_sessions (id_sha256, user_id, csrf, created_at, last_seen_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                s.id_sha256,
                s.user_id,
                s.csrf,
                s.created_at_us,
                s.last_seen_at_us,
                s.expires_at_us
            ])?;
        }
        AccessOp::TouchAuthSession { id_sha256, now_us } => {
            tx.prepare_cached("UPDATE auth_sessions SET last_seen_at = ?2 WHERE id_sha256 = ?1")?
                .execute(params![id_sha256, now_us])?;
        }
        AccessOp::DeleteAuthSession { id_sha256 } => {
            tx.prepare_cached("DELETE FROM auth_sessions WHERE id_sha256 = ?1")?.execute([id_sha256])?;
        }
        AccessOp::DeleteUserSessions { user_id } => {
            tx.prepare_cached("DELETE FROM auth_sessions WHERE user_id = ?1")?.execute([user_id])?;
        }
        AccessOp::BeginIdempotent { scope, key, fingerprint, now_us, stale_before_us } => {
            let n = tx
                .prepare_cached(
                    "INSERT INTO idempotency (scope, key, fingerprint, status, body, created_at)
                     VALUES (?1, ?2, ?3, NULL, NULL, ?4)
                     ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                        created_at = excluded.created_at
                     WHERE idempotency.status IS NULL AND idempotency.created_at < ?5",
                )?
                .execute(params![scope, key, fingerprint, now_us, stale_before_us])?;
            if n == 0 {
                return Ok(Err(TxnError::Conflict("a request with this Idempotency-Key is in progress".into())));
            }
        }
        AccessOp::FinishIdempotent { scope, key, status, body } => {
            tx.prepare_cached("UPDATE idempotency SET status = ?3, body = ?4 WHERE scope = ?1 AND key = ?2")?
                .execute(params![scope, key, status, body])?;
        }
        AccessOp::AbandonIdempotent { scope, key } => {
            tx.prepare_cached("DELETE FROM idempotency WHERE scope = ?1 AND key = ?2 AND status IS NULL")?
                .execute(params![scope, key])?;
        }
        AccessOp::PruneAccess { before_us, now_us } => {
            tx.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?.execute([before_us])?;
            tx.prepare_cached("DELETE FROM auth_sessions WHERE expires_at < ?1")?.execute([now_us])?;
        }
    }
    Ok(Ok(()))
}

const KEY_COLS: &str = "id, tenant, name, role, sha256, created_by, created_at, revoked_at, last_used_at";

fn row_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        role: r.get::<_, Role>(3)?,
        sha256: r.get(4)?,
        created_by: r.get(5)?,
        created_at_us: r.get(6)?,
        revoked_at_us: r.get(7)?,
        last_used_at_us: r.get(8)?,
    })
}

const USER_COLS: &str =
    "id, tenant, username, role, password_hash, oidc_subject, disabled, failed_logins, locked_until,
    created_by, created_at, updated_at";

fn row_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        username: r.get(2)?,
        role: r.get::<_, Role>(3)?,
        password_hash: r.get(4)?,
        oidc_subject: r.get(5)?,
        disabled: r.get(6)?,
        failed_logins: r.get(7)?,
        locked_until_us: r.get(8)?,
        created_by: r.get(9)?,
        created_at_us: r.get(10)?,
        updated_at_us: r.get(11)?,
    })
}

pub(crate) fn api_key_by_hash(c: &Connection, sha256: &str) -> rusqlite::Result<Option<ApiKeyRecord>> {
    c.prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE sha256 = ?1"))?
        .query_row([sha256], row_key)
        .optional()
}

pub(crate) fn api_keys(c: &Connection, tenant: Option<&str>) -> rusqlite::Result<Vec<ApiKeyRecord>> {
    c.prepare_cached(&format!(
        "SELECT {KEY_COLS} FROM api_keys WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_at DESC, id"
    ))?
    .query_map([tenant], row_key)?
    .collect()
}

pub(crate) fn user_where(c: &Connection, column: &str, value: &str) -> rusqlite::Result<Option<UserRecord>> {
    c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE {column} = ?1"))?
        .query_row([value], row_user)
        .optional()
}

pub(crate) fn users(c: &Connection, tenant: Option<&str>) -> rusqlite::Result<Vec<UserRecord>> {
    c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE (?1 IS NULL OR tenant = ?1) ORDER BY username"))?
        .query_map([tenant], row_user)?
        .collect()
}

pub(crate) fn auth_session(c: &Connection, id_sha256: &str) -> rusqlite::Result<Option<AuthSessionRecord>> {
    c.prepare_cached(
        "SELECT id_sha256, user_id, csrf, created_at, last_seen_at, expires_at FROM auth_sessions WHERE id_sha256 = ?1",
    )?
    .query_row([id_sha256], |r| {
        Ok(AuthSessionRecord {
            id_sha256: r.get(0)?,
            user_id: r.get(1)?,
            csrf: r.get(2)?,
            created_at_us: r.get(3)?,
            last_seen_at_us: r.get(4)?,
            expires_at_us: r.get(5)?,
        })
    })
    .optional()
}

pub(crate) fn idempotent(c: &Connection, scope: &str, key: &str) -> rusqlite::Result<Option<IdempotencyRecord>> {
    c.prepare_cached(
        "SELECT scope, key, fingerprint, status, body, created_at FROM idempotency WHERE scope = ?1 AND key = ?2",
    )?
    .query_row([scope, key], |r| {
        Ok(IdempotencyRecord {
            scope: r.get(0)?,
            key: r.get(1)?,
            fingerprint: r.get(2)?,
            status: r.get(3)?,
            body: r.get(4)?,
            created_at_us: r.get(5)?,
        })
    })
    .optional()
}
