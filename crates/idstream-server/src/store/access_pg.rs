//! The access records in PostgreSQL: how [`AccessOp`]s apply inside a store transaction
//! (rows they condition on are locked, so two nodes see one winner), and the reads.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::access::*;
use super::TxnError;
use crate::domain::Role;

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Applies one op; the inner error is its condition not holding.
pub(crate) async fn apply(tx: &Transaction<'_>, op: &AccessOp) -> PgResult<Result<(), TxnError>> {
    match op {
        AccessOp::PutApiKey(k) => {
            let s = tx
                .prepare_cached(
                    "INSERT INTO api_keys (id, tenant, name, role, sha256, created_by, created_at, revoked_at, last_used_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .await?;
            tx.execute(
                &s,
                &[
                    &k.id,
                    &k.tenant,
                    &k.name,
                    &k.role,
                    &k.sha256,
                    &k.created_by,
                    &k.created_at_us,
                    &k.revoked_at_us,
                    &k.last_used_at_us,
                ],
            )
            .await?;
        }
        AccessOp::RevokeApiKey { tenant, id, now_us } => {
            let s = tx
                .prepare_cached(
                    "SELECT revoked_at FROM api_keys WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) FOR UPDATE",
                )
                .await?;
            match tx.query_opt(&s, &[id, tenant]).await?.map(|r| r.get::<_, Option<i64>>(0)) {
                None => return Ok(Err(TxnError::NotFound(format!("no API key `{id}`")))),
                Some(Some(_)) => return Ok(Err(TxnError::Conflict(format!("API key `{id}` is already revoked")))),
                Some(None) => {
                    tx.execute("UPDATE api_keys SET revoked_at = $2 WHERE id = $1", &[id, now_us]).await?;
                }
            }
        }
        AccessOp::TouchApiKey { id, now_us } => {
            tx.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", &[id, now_us]).await?;
        }
        AccessOp::PutUser(u) => {
            let s = tx
                .prepare_cached(
                    "INSERT INTO users (id, tenant, username, role, password_hash, oidc_subject, disabled, failed_logins,
                        locked_until, created_by, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            let n = tx
                .execute(
                    &s,
                    &[
                        &u.id,
                        &u.tenant,
                        &u.username,
                        &u.role,
                        &u.password_hash,
                        &u.oidc_subject,
                        &u.disabled,
                        &(u.failed_logins as i32),
                        &u.locked_until_us,
                        &u.created_by,
                        &u.created_at_us,
                        &u.updated_at_us,
                    ],
                )
                .await?;
            if n == 0 {
                return Ok(Err(TxnError::Conflict(format!("a user named `{}` exists", u.username))));
            }
        }
        AccessOp::UpdateUser { tenant, id, role, disabled, password_hash, now_us } => {
            let s = tx
                .prepare_cached(
                    "UPDATE users SET role = COALESCE($3, role), disabled = COALESCE($4, disabled),
                        password_hash = COALESCE($5, password_hash),
                        failed_logins = CASE WHEN $5::text IS NULL THEN failed_logins ELSE 0 END,
                        locked_until = CASE WHEN $5::text IS NULL THEN locked_until ELSE NULL END,
                        updated_at = $6
                     WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
                )
                .await?;
            if tx.execute(&s, &[id, tenant, role, disabled, password_hash, now_us]).await? == 0 {
                return Ok(Err(TxnError::NotFound(format!("no user `{id}`"))));
            }
        }
        AccessOp::LoginFailed { user_id, now_us, lock_after, lock_for_us } => {
            tx.execute(
                "UPDATE users SET failed_logins = failed_logins + 1,
                    locked_until = CASE WHEN failed_logins + 1 >= $3 THEN $2::bigint + $4::bigint ELSE locked_until END
                 WHERE id = $1",
                &[user_id, now_us, &(*lock_after as i32), lock_for_us],
            )
            .await?;
        }
        AccessOp::LoginSucceeded { user_id } => {
            tx.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1", &[user_id]).await?;
        }
        AccessOp::PutAuthSession(s) => {
            tx.execute(
                "INSERT INTO auth_sessions (id_sha256, user_id, csrf, created_at, last_seen_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&s.id_sha256, &s.user_id, &s.csrf, &s.created_at_us, &s.last_seen_at_us, &s.expires_at_us],
            )
            .await?;
        }
        AccessOp::TouchAuthSession { id_sha256, now_us } => {
            tx.execute("UPDATE auth_sessions SET last_seen_at = $2 WHERE id_sha256 = $1", &[id_sha256, now_us]).await?;
        }
        AccessOp::DeleteAuthSession { id_sha256 } => {
            tx.execute("DELETE FROM auth_sessions WHERE id_sha256 = $1", &[id_sha256]).await?;
        }
        AccessOp::DeleteUserSessions { user_id } => {
            tx.execute("DELETE FROM auth_sessions WHERE user_id = $1", &[user_id]).await?;
        }
        AccessOp::BeginIdempotent { scope, key, fingerprint, now_us, stale_before_us } => {
            let n = tx
                .execute(
                    "INSERT INTO idempotency (scope, key, fingerprint, status, body, created_at)
                     VALUES ($1, $2, $3, NULL, NULL, $4)
                     ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                        created_at = EXCLUDED.created_at
                     WHERE idempotency.status IS NULL AND idempotency.created_at < $5",
                    &[scope, key, fingerprint, now_us, stale_before_us],
                )
                .await?;
            if n == 0 {
                return Ok(Err(TxnError::Conflict("a request with this Idempotency-Key is in progress".into())));
            }
        }
        AccessOp::FinishIdempotent { scope, key, status, body } => {
            tx.execute(
                "UPDATE idempotency SET status = $3, body = $4 WHERE scope = $1 AND key = $2",
                &[scope, key, &i32::from(*status), body],
            )
            .await?;
        }
        AccessOp::AbandonIdempotent { scope, key } => {
            tx.execute("DELETE FROM idempotency WHERE scope = $1 AND key = $2 AND status IS NULL", &[scope, key])
                .await?;
        }
        AccessOp::PruneAccess { before_us, now_us } => {
            tx.execute("DELETE FROM idempotency WHERE created_at < $1", &[before_us]).await?;
            tx.execute("DELETE FROM auth_sessions WHERE expires_at < $1", &[now_us]).await?;
        }
    }
    Ok(Ok(()))
}

macro_rules! key_cols {
    () => {
        "id, tenant, name, role, sha256, created_by, created_at, revoked_at, last_used_at"
    };
}
macro_rules! user_cols {
    () => {
        "id, tenant, username, role, password_hash, oidc_subject, disabled, failed_logins, locked_until, created_by, \
         created_at, updated_at"
    };
}

pub(crate) const KEY_BY_HASH: &str = concat!("SELECT ", key_cols!(), " FROM api_keys WHERE sha256 = $1");
pub(crate) const KEYS: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys WHERE ($1::text IS NULL OR tenant = $1) ORDER BY created_at DESC, id"
);
pub(crate) const USER_BY_ID: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
pub(crate) const USER_BY_NAME: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE username = $1");
pub(crate) const USER_BY_OIDC: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE oidc_subject = $1");
pub(crate) const USERS: &str =
    concat!("SELECT ", user_cols!(), " FROM users WHERE ($1::text IS NULL OR tenant = $1) ORDER BY username");
pub(crate) const SESSION: &str = "SELECT id_sha256, user_id, csrf, created_at, last_seen_at, expires_at
    FROM auth_sessions WHERE id_sha256 = $1";
pub(crate) const IDEMPOTENT: &str =
    "SELECT scope, key, fingerprint, status, body, created_at FROM idempotency WHERE scope = $1 AND key = $2";

pub(crate) fn row_key(r: &Row) -> PgResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        name: r.try_get(2)?,
        role: r.try_get::<_, Role>(3)?,
        sha256: r.try_get(4)?,
        created_by: r.try_get(5)?,
        created_at_us: r.try_get(6)?,
        revoked_at_us: r.try_get(7)?,
        last_used_at_us: r.try_get(8)?,
    })
}

pub(crate) fn row_user(r: &Row) -> PgResult<UserRecord> {
    Ok(UserRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        username: r.try_get(2)?,
        role: r.try_get::<_, Role>(3)?,
        password_hash: r.try_get(4)?,
        oidc_subject: r.try_get(5)?,
        disabled: r.try_get(6)?,
        failed_logins: r.try_get::<_, i32>(7)? as u32,
        locked_until_us: r.try_get(8)?,
        created_by: r.try_get(9)?,
        created_at_us: r.try_get(10)?,
        updated_at_us: r.try_get(11)?,
    })
}

pub(crate) fn row_session(r: &Row) -> PgResult<AuthSessionRecord> {
    Ok(AuthSessionRecord {
        id_sha256: r.try_get(0)?,
        user_id: r.try_get(1)?,
        csrf: r.try_get(2)?,
        created_at_us: r.try_get(3)?,
        last_seen_at_us: r.try_get(4)?,
        expires_at_us: r.try_get(5)?,
    })
}

pub(crate) fn row_idempotent(r: &Row) -> PgResult<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        scope: r.try_get(0)?,
        key: r.try_get(1)?,
        fingerprint: r.try_get(2)?,
        status: r.try_get::<_, Option<i32>>(3)?.map(|s| s as u16),
        body: r.try_get(4)?,
        created_at_us: r.try_get(5)?,
    })
}
