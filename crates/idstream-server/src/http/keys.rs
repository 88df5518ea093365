//! `/v1/api-keys`: admins make, list and revoke API keys at run time. A key is shown once, when
//! made; only its hash is stored. Keys from the config are listed but read-only here.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Conflict, Forbidden, NotFound, ServerError, TooManyRequests, Unauthorized};
use super::sessions::TenantParam;
use crate::access::{self, valid_name, valid_tenant};
use crate::domain::Role;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::access::ApiKeyRecord;

/// An API key as listed (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub role: Role,
    /// `config` (read-only here) or `api`.
    pub source: &'static str,
    pub created_by: Option<String>,
    pub created_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

fn time(us: i64) -> String {
    idstream_core::event::rfc3339_us(us)
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            tenant: k.tenant,
            role: k.role,
            source: "api",
            created_by: Some(k.created_by),
            created_at: Some(time(k.created_at_us)),
            revoked_at: k.revoked_at_us.map(time),
            last_used_at: k.last_used_at_us.map(time),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// A key just made: the only time the key is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyView {
    #[serde(flatten)]
    pub key: KeyView,
    /// The key: give it to the client now; idstream keeps only its hash.
    pub api_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Letters, digits and `-_.@`, at most 100.
    pub name: String,
    pub role: Role,
    /// For a `*` caller: the key's tenant (`*` for every tenant); others make keys of their own.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// API keys of the caller's tenant (all tenants for a `*` caller, or the one named).
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "access",
    params(TenantParam),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = KeyList), BadRequest, Unauthorized, Forbidden, TooManyRequests, ServerError)
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<KeyList>, ApiError> {
    let tenant = caller.listing(q.tenant.as_deref())?;
    let mut keys: Vec<KeyView> = st
        .api_keys
        .iter()
        .filter(|k| tenant.as_deref().is_none_or(|t| k.tenant == t))
        .map(|k| KeyView {
            id: format!("config:{}", k.name),
            name: k.name.clone(),
            tenant: k.tenant.clone(),
            role: k.role,
            source: "config",
            created_by: None,
            created_at: None,
            revoked_at: None,
            last_used_at: None,
        })
        .collect();
    keys.extend(st.store.api_keys(tenant.as_deref()).await?.into_iter().map(KeyView::from));
    Ok(Json(KeyList { keys }))
}

/// Makes a key; the answer holds it, once.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "create_api_key",
    tag = "access",
    request_body = NewKey,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (without the key itself)")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 201, body = NewKeyView), BadRequest, Unauthorized, Forbidden, TooManyRequests, ServerError)
)]
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(b): ApiJson<NewKey>,
) -> Result<(StatusCode, super::idempotency::Secret<Json<NewKeyView>>), ApiError> {
    if !valid_name(&b.name) {
        return Err(ApiError::bad_request("invalid_body", "`name`: 1 to 100 letters, digits, `-`, `_`, `.` or `@`"));
    }
    let tenant = match b.tenant.as_deref() {
        Some(t) if !valid_tenant(t) => {
            return Err(ApiError::bad_request("invalid_body", "`tenant` must be a tenant name or `*`"));
        }
        Some("*") if caller.tenant != "*" => {
            return Err(ApiError::forbidden("wrong_tenant", "only a `*` caller makes keys for every tenant"));
        }
        Some("*") => "*".to_owned(),
        asked => caller.acting_for(asked)?,
    };
    let (rec, key) = access::create_key(st.store.as_ref(), &tenant, &b.name, b.role, &caller.name).await?;
    let view = NewKeyView { key: rec.into(), api_key: key };
    Ok((StatusCode::CREATED, super::idempotency::Secret::new(Json(view), &["api_key"])))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: String,
}

/// Revokes a key: refused from the next request on, on every node.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "revoke_api_key",
    tag = "access",
    params(("id" = String, Path, description = "The key's id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = Revoked),
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooManyRequests,
        ServerError
    )
)]
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    if id.starts_with("config:") {
        return Err(ApiError::conflict(
            "this key is defined in the configuration file: remove it there (keys made through the API can be revoked here)",
        ));
    }
    let scope = caller.tenant_filter();
    let key = st
        .store
        .api_keys(scope.as_deref())
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("not_found", format!("no API key `{id}`")))?;
    access::revoke_key(st.store.as_ref(), scope.as_deref(), &key, &caller.name).await?;
    Ok(Json(Revoked { revoked: id }))
}
