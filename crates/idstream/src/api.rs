//! The read API: `GET /v1/events`, `GET /v1/events/{id}`, `GET /v1/events/{id}/body`.
//!
//! Every call needs `Authorization: Bearer <api key>`; a key reads only its own tenant's
//! events (or all, for a `*` key). Another tenant's event is answered 404, exactly as a
//! missing one, so ids cannot be probed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::error::ApiError;
use crate::log::{LogEntry, ReadFilter};
use crate::state::{ApiKey, AppState};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The caller's API key, from `Authorization: Bearer`.
pub fn authorize<'s>(st: &'s AppState, headers: &HeaderMap) -> Result<&'s ApiKey, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing_api_key", "send `Authorization: Bearer <api key>`"))?;
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).ok_or_else(|| {
        ApiError::unauthorized("invalid_api_key", "the Authorization header must be `Bearer <api key>`")
    })?;
    st.authenticate(token).ok_or_else(|| ApiError::unauthorized("invalid_api_key", "unknown API key"))
}

fn tenant_filter(key: &ApiKey) -> Option<String> {
    (key.tenant != "*").then(|| key.tenant.clone())
}

/// An entry as the API shows it: the normalised event with its offset, and the original body.
pub fn entry_json(e: &LogEntry) -> Value {
    let mut v: Value = serde_json::from_slice(&e.event).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("offset".into(), e.offset.into());
        if let Some(body) = &e.body {
            // Bodies are verified JSON, hence UTF-8; a lossy conversion can only happen for
            // entries written by something else, and /body serves the exact bytes anyway.
            m.insert("body".into(), String::from_utf8_lossy(body).into_owned().into());
        }
    }
    v
}

fn parse_param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request("invalid_parameter", format!("`{name}` must be {what}, got `{s}`"))),
    }
}

pub async fn list_events(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    for k in q.keys() {
        if !matches!(k.as_str(), "after" | "limit" | "session_id") {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("unknown parameter `{k}` (expected after, limit, session_id)"),
            ));
        }
    }
    let asked: Option<u64> = parse_param(&q, "after", "a non-negative integer offset")?;
    let limit: usize = parse_param(&q, "limit", "an integer from 1 to 1000")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request("invalid_parameter", "`limit` must be from 1 to 1000"));
    }
    // Without `after`, reading starts at the oldest retained entry; an explicit offset that
    // retention already removed is an error, never a silent gap.
    let pruned = st.log.pruned_through();
    let after = asked.unwrap_or(pruned);
    if after < pruned {
        return Err(ApiError::new(
            StatusCode::GONE,
            "offset_expired",
            format!("entries up to offset {pruned} were removed by retention; read from after={pruned}"),
        ));
    }
    let filter = ReadFilter { tenant: tenant_filter(key), partition_key: q.get("session_id").cloned() };
    let entries = st.log.read(after, limit, &filter).await?;
    let next_after = entries.last().map(|e| e.offset).unwrap_or(after);
    Ok(Json(serde_json::json!({
        "events": entries.iter().map(entry_json).collect::<Vec<_>>(),
        "next_after": next_after,
        "head": st.log.head(),
    })))
}

async fn visible_entry(st: &AppState, headers: &HeaderMap, id: &str) -> Result<LogEntry, ApiError> {
    let key = authorize(st, headers)?;
    match st.log.get(id).await? {
        Some(e) if key.tenant == "*" || key.tenant == e.tenant => Ok(e),
        _ => Err(ApiError::not_found("event_not_found", format!("no event `{id}`"))),
    }
}

pub async fn get_event(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(entry_json(&visible_entry(&st, &headers, &id).await?)))
}

/// The original webhook body, byte for byte.
pub async fn get_event_body(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = visible_entry(&st, &headers, &id).await?;
    let body =
        e.body.ok_or_else(|| ApiError::not_found("no_body", format!("event `{id}` did not come from a webhook")))?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}
