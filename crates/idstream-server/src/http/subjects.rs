//! `GET` / `PUT /v1/subjects/{id}`: the company's own attributes of a user, which rules read as
//! `subject.NAME` (expected names, account age, plan, ...).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable};
use super::sessions::TenantParam;
use crate::error::ApiError;
use crate::events::{OwnEvent, SubjectUpdated};
use crate::state::AppState;
use crate::store::{Op, SubjectRecord, Txn};
use crate::util::now_us;

/// A subject's attributes, as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectView {
    #[serde(flatten)]
    pub record: SubjectRecord,
    /// RFC 3339 UTC.
    pub updated_at: String,
}

impl From<SubjectRecord> for SubjectView {
    fn from(record: SubjectRecord) -> Self {
        SubjectView { updated_at: idstream_core::event::rfc3339_us(record.updated_at_us), record }
    }
}

/// A subject's attributes.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}",
    operation_id = "get_subject",
    tag = "subjects",
    params(("id" = String, Path, description = "Your user id (Didit `vendor_data`)"), TenantParam),
    security(("api_key" = [])),
    responses((status = 200, body = SubjectView), BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<SubjectView>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let s = st
        .store
        .subject(&tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("subject_not_found", format!("no subject `{id}`")))?;
    Ok(Json(s.into()))
}

/// Replaces a subject's attributes. The log records which attributes were set and by whom
/// (`subject.updated`); the values stay in the store.
#[utoipa::path(
    put,
    path = "/v1/subjects/{id}",
    operation_id = "put_subject",
    tag = "subjects",
    params(("id" = String, Path, description = "Your user id (Didit `vendor_data`)"), TenantParam),
    request_body(content = Object, description = "Attributes: names of letters, digits and `_`; any JSON values"),
    security(("api_key" = [])),
    responses((status = 200, body = SubjectView), BadRequest, Unauthorized, Forbidden, Unavailable, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn put(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
    ApiJson(attributes): ApiJson<Map<String, Value>>,
) -> Result<Json<SubjectView>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    if let Some(k) =
        attributes.keys().find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(ApiError::bad_request(
            "invalid_attribute",
            format!("attribute name `{k}` must use only letters, digits and `_` (rules read it as subject.NAME)"),
        ));
    }
    let now = now_us();
    let record = SubjectRecord {
        tenant: tenant.clone(),
        id: id.clone(),
        attributes: Value::Object(attributes),
        updated_by: caller.name.clone(),
        updated_at_us: now,
    };
    let event = OwnEvent::SubjectUpdated(SubjectUpdated {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.clone(),
        subject: id.clone(),
        attributes: record.attributes.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default(),
        actor: caller.name.clone(),
        at: idstream_core::event::rfc3339_us(now),
    });
    let op =
        Op::PutSubject { tenant, id, attributes: record.attributes.clone(), actor: caller.name.clone(), now_us: now };
    st.store.commit(Txn { entries: vec![event.to_entry()], ops: vec![op] }).await?;
    Ok(Json(record.into()))
}
