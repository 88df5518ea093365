//! User accounts: Argon2id passwords, lockout after repeated failures, and login sessions
//! (the cookie holds a random id; the store keeps its SHA-256, the CSRF token, and the times).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::{changed, random_token, sha256_hex};
use crate::domain::Role;
use crate::store::access::{AccessOp, AuthSessionRecord, UserRecord};
use crate::store::{Op, Store, StoreError, Txn, TxnError};
use crate::util::now_us;

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD: usize = 12;

/// Login settings (`[auth]`).
#[derive(Debug, Clone)]
pub struct LoginPolicy {
    /// A session ends after this long without a request.
    pub idle_us: i64,
    /// ... and this long after login, whatever the activity.
    pub max_us: i64,
    /// Failed logins in a row that lock an account ...
    pub lock_after: u32,
    /// ... for this long.
    pub lock_for_us: i64,
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes), off the async threads.
pub async fn hash_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Checks a password against a stored hash (or against a fixed dummy hash when there is no
/// account, so an unknown username takes as long as a wrong password).
pub async fn verify_password(hash: Option<String>, password: String) -> bool {
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jg0mPGUaa6zoW4HMfQtDTFm6uQUWdyUXDt+rhh4gD2U";
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DUMMY.to_owned());
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && known
    })
    .await
    .unwrap_or(false)
}

/// Why a password is refused (`None`: acceptable).
pub fn weak_password(password: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD {
        return Some(format!("the password must be at least {MIN_PASSWORD} characters"));
    }
    if password.len() > 1024 {
        return Some("the password must be at most 1024 bytes".into());
    }
    None
}

/// Creates an account; `password` None for OIDC-only accounts.
#[allow(clippy::too_many_arguments)]
pub async fn create_user(
    store: &dyn Store,
    tenant: &str,
    username: &str,
    role: Role,
    password: Option<String>,
    oidc_subject: Option<String>,
    actor: &str,
) -> Result<UserRecord, TxnError> {
    let password_hash = match password {
        Some(p) => Some(hash_password(p).await.map_err(|e| TxnError::Store(StoreError::Unavailable(e)))?),
        None => None,
    };
    let now = now_us();
    let user = UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        username: username.to_owned(),
        role,
        password_hash,
        oidc_subject,
        disabled: false,
        failed_logins: 0,
        locked_until_us: None,
        created_by: actor.to_owned(),
        created_at_us: now,
        updated_at_us: now,
    };
    let event = changed("access.user_created", tenant, (&user.id, username), Some(role), actor);
    store
        .commit(Txn { entries: vec![event.to_entry()], ops: vec![Op::Access(AccessOp::PutUser(user.clone()))] })
        .await?;
    Ok(user)
}

/// A change to an account.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// Applies a change (to a user of `tenant`, unless `None`); each kind of change is its own
/// `access.*` event. Disabling or a new password ends the user's sessions.
pub async fn update_user(
    store: &dyn Store,
    tenant: Option<&str>,
    user: &UserRecord,
    change: UserChange,
    actor: &str,
) -> Result<(), TxnError> {
    let password_hash = match change.password {
        Some(p) => Some(hash_password(p).await.map_err(|e| TxnError::Store(StoreError::Unavailable(e)))?),
        None => None,
    };
    let subject = (user.id.as_str(), user.username.as_str());
    let mut entries = Vec::new();
    if let Some(role) = change.role.filter(|r| *r != user.role) {
        entries.push(changed("access.user_role_changed", &user.tenant, subject, Some(role), actor).to_entry());
    }
    match change.disabled {
        Some(true) if !user.disabled => {
            entries.push(changed("access.user_disabled", &user.tenant, subject, None, actor).to_entry())
        }
        Some(false) if user.disabled => {
            entries.push(changed("access.user_enabled", &user.tenant, subject, None, actor).to_entry())
        }
        _ => {}
    }
    if password_hash.is_some() {
        entries.push(changed("access.password_changed", &user.tenant, subject, None, actor).to_entry());
    }
    let end_sessions = change.disabled == Some(true) || password_hash.is_some();
    let mut ops = vec![Op::Access(AccessOp::UpdateUser {
        tenant: tenant.map(str::to_owned),
        id: user.id.clone(),
        role: change.role,
        disabled: change.disabled,
        password_hash,
        now_us: now_us(),
    })];
    if end_sessions {
        ops.push(Op::Access(AccessOp::DeleteUserSessions { user_id: user.id.clone() }));
    }
    store.commit(Txn { entries, ops }).await?;
    Ok(())
}

/// How a login attempt ended.
// Made once per login attempt and moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Login {
    /// A new session: the cookie value (shown once) and its record.
    Ok { cookie: String, session: AuthSessionRecord, user: UserRecord },
    /// Wrong username or password (the two are not told apart).
    Refused,
    /// Too many failures: locked for this many more seconds.
    Locked { retry_after_secs: u64 },
    /// The account is disabled.
    Disabled,
}

/// Checks a username and password; counts failures (locking the account at the limit) and
/// opens a session on success.
pub async fn password_login(
    store: &dyn Store,
    policy: &LoginPolicy,
    username: &str,
    password: String,
) -> Result<Login, TxnError> {
    let user = store.user_by_name(username).await?;
    let now = now_us();
    if let Some(u) = &user {
        if let Some(until) = u.locked_until_us.filter(|until| *until > now) {
            return Ok(Login::Locked { retry_after_secs: ((until - now) / 1_000_000).max(1) as u64 });
        }
    }
    let ok = verify_password(user.as_ref().and_then(|u| u.password_hash.clone()), password).await;
    let Some(user) = user else { return Ok(Login::Refused) };
    if !ok {
        let failures = user.failed_logins + 1;
        let mut entries = Vec::new();
        if failures >= policy.lock_after {
            entries.push(
                changed("access.user_locked", &user.tenant, (&user.id, &user.username), None, "login").to_entry(),
            );
        }
        let op = AccessOp::LoginFailed {
            user_id: user.id.clone(),
            now_us: now,
            lock_after: policy.lock_after,
            lock_for_us: policy.lock_for_us,
        };
        store.commit(Txn { entries, ops: vec![Op::Access(op)] }).await?;
        if failures >= policy.lock_after {
            return Ok(Login::Locked { retry_after_secs: (policy.lock_for_us / 1_000_000).max(1) as u64 });
        }
        return Ok(Login::Refused);
    }
    if user.disabled {
        return Ok(Login::Disabled);
    }
    open_session(store, policy, user, "access.logged_in").await
}

/// Opens a session for an authenticated user (password or OIDC).
pub async fn open_session(
    store: &dyn Store,
    policy: &LoginPolicy,
    user: UserRecord,
    kind: &'static str,
) -> Result<Login, TxnError> {
    let now = now_us();
    let cookie = random_token(32);
    let session = AuthSessionRecord {
        id_sha256: sha256_hex(&cookie),
        user_id: user.id.clone(),
        csrf: random_token(24),
        created_at_us: now,
        last_seen_at_us: now,
        expires_at_us: now + policy.max_us,
    };
    let event = changed(kind, &user.tenant, (&user.id, &user.username), Some(user.role), &user.username);
    store
        .commit(Txn {
            entries: vec![event.to_entry()],
            ops: vec![
                Op::Access(AccessOp::LoginSucceeded { user_id: user.id.clone() }),
                Op::Access(AccessOp::PutAuthSession(session.clone())),
            ],
        })
        .await?;
    Ok(Login::Ok { cookie, session, user })
}

/// Ends a session.
pub async fn logout(store: &dyn Store, session: &AuthSessionRecord, user: &UserRecord) -> Result<(), TxnError> {
    let event = changed("access.logged_out", &user.tenant, (&user.id, &user.username), None, &user.username);
    let op = AccessOp::DeleteAuthSession { id_sha256: session.id_sha256.clone() };
    store.commit(Txn { entries: vec![event.to_entry()], ops: vec![Op::Access(op)] }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(Some(h.clone()), "correct horse battery".into()).await);
        assert!(!verify_password(Some(h), "wrong horse battery".into()).await);
        // No account: always refused (after the same work).
        assert!(!verify_password(None, "anything at all".into()).await);
        assert!(weak_password("short").is_some());
        assert!(weak_password("long enough password").is_none());
    }
}
