//! The read API of the log: `GET /v1/events`, `GET /v1/events/{id}`, `GET /v1/events/{id}/body`.
//!
//! A key reads only its own tenant's events (or all, for a `*` key). Another tenant's event is
//! answered 404, exactly as a missing one, so ids cannot be probed.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, Caller};
use super::responses::{BadRequest, NotFound, TooManyRequests, Unauthorized};
use crate::error::{ApiError, ErrorBody};
use crate::events::{EventView, Shown};
use crate::log::{LogEntry, ReadFilter};
use crate::state::AppState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// Events with an offset greater than this one (default: from the oldest retained event).
    after: Option<u64>,
    /// How many, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only this session's events.
    session_id: Option<String>,
}

/// A page of events, in log order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<EventView>)]
    pub events: Vec<Shown>,
    /// The last offset returned (or `after` when none was): pass it back as `after`.
    pub next_after: u64,
    /// The offset of the last entry in the log.
    pub head: u64,
}

/// Events after an offset, in log order.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "list_events",
    tag = "events",
    params(ListEvents),
    security(("api_key" = [])),
    responses(
        (status = 200, body = EventPage),
        BadRequest,
        Unauthorized,
        (status = 410, body = ErrorBody, description = "`after` was removed by log retention (`offset_expired`)"),
        TooManyRequests, crate::http::responses::ServerError
    )
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListEvents>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request("invalid_parameter", "`limit` must be from 1 to 1000"));
    }
    // Without `after`, reading starts at the oldest retained entry; an explicit offset that
    // retention already removed is an error, never a silent gap.
    let pruned = st.log.pruned_through();
    let after = q.after.unwrap_or(pruned);
    if after < pruned {
        return Err(ApiError::new(
            StatusCode::GONE,
            "offset_expired",
            format!("entries up to offset {pruned} were removed by retention; read from after={pruned}"),
        ));
    }
    let filter = ReadFilter { tenant: caller.tenant_filter(), partition_key: q.session_id };
    let entries = st.log.read(after, limit, &filter).await?;
    let next_after = entries.last().map(|e| e.offset).unwrap_or(after);
    let events = entries.iter().map(|e| Shown::of(e, true)).collect();
    Ok(Json(EventPage { events, next_after, head: st.log.head() }))
}

async fn visible_entry(st: &AppState, caller: &Caller, id: &str) -> Result<LogEntry, ApiError> {
    match st.log.get(id).await? {
        Some(e) if caller.sees(&e.tenant) => Ok(e),
        _ => Err(ApiError::not_found("event_not_found", format!("no event `{id}`"))),
    }
}

/// One event.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    operation_id = "get_event",
    tag = "events",
    params(("id" = String, Path, description = "The event's id")),
    security(("api_key" = [])),
    responses((status = 200, body = EventView), Unauthorized, NotFound, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Shown>, ApiError> {
    Ok(Json(Shown::of(&visible_entry(&st, &caller, &id).await?, true)))
}

/// The original webhook body, byte for byte.
#[utoipa::path(
    get,
    path = "/v1/events/{id}/body",
    operation_id = "get_event_body",
    tag = "events",
    params(("id" = String, Path, description = "The event's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The body exactly as the provider sent it", content_type = "application/json", body = Object),
        Unauthorized,
        (status = 404, body = ErrorBody, description = "No such event (`event_not_found`), or it did not come from a webhook (`no_body`)"),
        TooManyRequests, crate::http::responses::ServerError
    )
)]
pub async fn body(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = visible_entry(&st, &caller, &id).await?;
    let body =
        e.body.ok_or_else(|| ApiError::not_found("no_body", format!("event `{id}` did not come from a webhook")))?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}
