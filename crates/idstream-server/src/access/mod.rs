//! Identities and what they may do: API keys (configured or made at run time), user accounts
//! with Argon2id passwords, login sessions — and the operations on them, each a store
//! transaction with its `access.*` event, so every change is attributed to a proven identity.
//!
//! This module never sees a secret it keeps: keys and session ids are stored as SHA-256,
//! passwords as Argon2id hashes, and none is ever logged or put in an event.

pub mod users;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::domain::Role;
use crate::events::{AccessChanged, OwnEvent};
use crate::store::access::{AccessOp, ApiKeyRecord};
use crate::store::{Op, Store, Txn, TxnError};
use crate::util::now_us;

/// Who is calling: an API key or a logged-in person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A key from the config file.
    ConfigKey,
    /// A key made through the API.
    Key,
    /// A user logged in with a password or OIDC (cookie session).
    User,
}

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: IdentityKind,
    /// Stable id: the key's or user's id (for config keys, `config:<name>`).
    pub id: String,
    /// What is recorded as the actor of its changes: the key's name or the username.
    pub name: String,
    /// Its tenant, or `*`.
    pub tenant: String,
    pub role: Role,
}

/// A fresh API key (`ids_` + 32 random bytes, URL-safe base64).
pub fn generate_key() -> String {
    format!("ids_{}", random_token(32))
}

/// `bytes` random bytes from the OS, URL-safe base64 without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256: how keys and session ids are stored (they are random, so a fast hash is enough).
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// An `access.*` event about a key or a user.
pub fn changed(kind: &'static str, tenant: &str, subject: (&str, &str), role: Option<Role>, actor: &str) -> OwnEvent {
    let ev = AccessChanged {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        target_id: subject.0.to_owned(),
        target_name: subject.1.to_owned(),
        role,
        actor: actor.to_owned(),
        at: idstream_core::event::rfc3339_us(now_us()),
    };
    OwnEvent::access(kind, ev)
}

/// Makes an API key: stored as its hash, announced by `access.key_created`; the key itself is
/// returned once, here.
pub async fn create_key(
    store: &dyn Store,
    tenant: &str,
    name: &str,
    role: Role,
    actor: &str,
) -> Result<(ApiKeyRecord, String), TxnError> {
    let key = generate_key();
    let rec = ApiKeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        role,
        sha256: sha256_hex(&key),
        created_by: actor.to_owned(),
        created_at_us: now_us(),
        revoked_at_us: None,
        last_used_at_us: None,
    };
    let event = changed("access.key_created", tenant, (&rec.id, name), Some(role), actor);
    store
        .commit(Txn { entries: vec![event.to_entry()], ops: vec![Op::Access(AccessOp::PutApiKey(rec.clone()))] })
        .await?;
    Ok((rec, key))
}

/// Revokes a key (of `tenant`, unless `None`): refused from the next request on, on every node.
pub async fn revoke_key(
    store: &dyn Store,
    tenant: Option<&str>,
    key: &ApiKeyRecord,
    actor: &str,
) -> Result<(), TxnError> {
    let event = changed("access.key_revoked", &key.tenant, (&key.id, &key.name), Some(key.role), actor);
    let op = AccessOp::RevokeApiKey { tenant: tenant.map(str::to_owned), id: key.id.clone(), now_us: now_us() };
    store.commit(Txn { entries: vec![event.to_entry()], ops: vec![Op::Access(op)] }).await?;
    Ok(())
}

/// Validates a name given to a key or a user: 1–100 letters, digits, `-_.@`.
pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// Validates a tenant name given through the API or the CLI.
pub fn valid_tenant(tenant: &str) -> bool {
    tenant == "*"
        || (1..=100).contains(&tenant.len()) && tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
