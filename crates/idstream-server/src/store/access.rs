//! The store's access records: API keys made at run time, user accounts, login sessions and
//! stored answers of idempotent requests — their records, the ops that change them (one
//! [`super::Op::Access`] each) and the schema of both stores.
//!
//! Secrets are never stored in a form that gives them back: keys and session ids as SHA-256,
//! passwords as Argon2id hashes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Role;

/// An API key created through the API (configured keys live in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyRecord {
    pub id: String,
    /// Its tenant, or `*`.
    pub tenant: String,
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the key (never the key).
    #[serde(skip_serializing)]
    pub sha256: String,
    pub created_by: String,
    pub created_at_us: i64,
    pub revoked_at_us: Option<i64>,
    pub last_used_at_us: Option<i64>,
}

/// A person's account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserRecord {
    pub id: String,
    /// Its tenant, or `*` for operators.
    pub tenant: String,
    pub username: String,
    pub role: Role,
    /// Argon2id (PHC string); `None` for accounts that log in through OIDC only.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    /// The OIDC issuer's subject, for accounts created by an OIDC login.
    pub oidc_subject: Option<String>,
    pub disabled: bool,
    /// Failed logins since the last success (locks the account at the configured count).
    pub failed_logins: u32,
    pub locked_until_us: Option<i64>,
    pub created_by: String,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// A login session (the cookie holds its id; only the id's SHA-256 is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSessionRecord {
    pub id_sha256: String,
    pub user_id: String,
    /// The session's CSRF token: every state-changing call with the cookie must send it.
    pub csrf: String,
    pub created_at_us: i64,
    pub last_seen_at_us: i64,
    /// The absolute end, whatever the activity.
    pub expires_at_us: i64,
}

/// A stored answer of a request with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// Who asked (the caller's identity) — keys are scoped per caller.
    pub scope: String,
    pub key: String,
    /// SHA-256 of method, path and body: a retry must be the same request.
    pub fingerprint: String,
    /// `None` while the first request is still running.
    pub status: Option<u16>,
    pub body: Option<Vec<u8>>,
    pub created_at_us: i64,
}

/// Changes of access records.
#[derive(Debug, Clone)]
pub enum AccessOp {
    PutApiKey(ApiKeyRecord),
    /// Conditional: the key exists (in `tenant`, unless `None`) and is not revoked yet.
    RevokeApiKey {
        tenant: Option<String>,
        id: String,
        now_us: i64,
    },
    TouchApiKey {
        id: String,
        now_us: i64,
    },
    /// Conditional: the username is free.
    PutUser(UserRecord),
    /// Conditional: the user exists (in `tenant`, unless `None`). Fields left `None` stay.
    UpdateUser {
        tenant: Option<String>,
        id: String,
        role: Option<Role>,
        disabled: Option<bool>,
        password_hash: Option<String>,
        now_us: i64,
    },
    /// Counts a failed login; at `lock_after` failures the account locks until `now + lock_for`.
    LoginFailed {
        user_id: String,
        now_us: i64,
        lock_after: u32,
        lock_for_us: i64,
    },
    LoginSucceeded {
        user_id: String,
    },
    PutAuthSession(AuthSessionRecord),
    TouchAuthSession {
        id_sha256: String,
        now_us: i64,
    },
    DeleteAuthSession {
        id_sha256: String,
    },
    /// Ends every session of a user (disabled, password changed).
    DeleteUserSessions {
        user_id: String,
    },
    /// Conditional: no record for (scope, key), or only one left running longer than
    /// `stale_before_us` ago (its request died), which this one takes over.
    BeginIdempotent {
        scope: String,
        key: String,
        fingerprint: String,
        now_us: i64,
        stale_before_us: i64,
    },
    FinishIdempotent {
        scope: String,
        key: String,
        status: u16,
        body: Vec<u8>,
    },
    /// Forgets an unfinished record (its request failed before answering).
    AbandonIdempotent {
        scope: String,
        key: String,
    },
    /// Removes records older than this, and sessions past their end.
    PruneAccess {
        before_us: i64,
        now_us: i64,
    },
}

impl AccessOp {
    pub fn is_conditional(&self) -> bool {
        matches!(
            self,
            AccessOp::RevokeApiKey { .. }
                | AccessOp::PutUser(_)
                | AccessOp::UpdateUser { .. }
                | AccessOp::BeginIdempotent { .. }
        )
    }
}

/// The access tables of `state.db` (SQLite `STATE` version 2).
pub const SQLITE_SCHEMA: &str = "
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    sha256       TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT,
    oidc_subject  TEXT UNIQUE,
    disabled      INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE auth_sessions (
    id_sha256    TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX auth_sessions_by_user ON auth_sessions (user_id);
CREATE TABLE idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER,
    body        BLOB,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency (created_at);
";

/// The same tables in PostgreSQL (`MIGRATIONS` version 4).
pub const POSTGRES_SCHEMA: &str = r#"
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    sha256       TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT,
    oidc_subject  TEXT UNIQUE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins INT NOT NULL DEFAULT 0,
    locked_until  BIGINT,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE auth_sessions (
    id_sha256    TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX auth_sessions_by_user ON auth_sessions (user_id);
CREATE TABLE idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INT,
    body        BYTEA,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
"#;
