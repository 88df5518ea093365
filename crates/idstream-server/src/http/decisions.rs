//! `GET /v1/decisions/{id}`: one decision with everything that explains it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Caller;
use super::responses::{NotFound, TooManyRequests, Unauthorized};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::DecisionRecord;

/// A decision as the API shows it: the stored record and its time in RFC 3339.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    #[serde(flatten)]
    pub record: DecisionRecord,
    /// RFC 3339 UTC.
    pub decided_at: String,
}

impl From<DecisionRecord> for DecisionView {
    fn from(record: DecisionRecord) -> Self {
        DecisionView { decided_at: idstream_core::event::rfc3339_us(record.decided_at_us), record }
    }
}

/// One decision: outcome, score, reasons, the rules that fired with the values they read, and
/// the full input context (what backtests replay).
#[utoipa::path(
    get,
    path = "/v1/decisions/{id}",
    operation_id = "get_decision",
    tag = "decisions",
    params(("id" = String, Path, description = "The decision's id")),
    security(("api_key" = [])),
    responses((status = 200, body = DecisionView), Unauthorized, NotFound, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DecisionView>, ApiError> {
    match st.store.decision(&id).await? {
        Some(d) if caller.sees(&d.tenant) => Ok(Json(d.into())),
        _ => Err(ApiError::not_found("decision_not_found", format!("no decision `{id}`"))),
    }
}
