//! `POST /v1/backtests`: replays past decisions through a candidate ruleset, writing nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use idstream_rules::Ruleset;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, InvalidRuleset, TooManyRequests, Unauthorized};
use super::sessions::TenantParam;
use crate::decide::backtest::Report;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestBody {
    /// The candidate ruleset document (YAML).
    pub ruleset: String,
    /// Replay decisions made at or after this time (RFC 3339 or a date; default: the beginning).
    #[serde(default)]
    pub since: Option<String>,
    /// ... and before this one (default: now).
    #[serde(default)]
    pub until: Option<String>,
}

/// What the candidate would have decided differently: the live × candidate matrix, the changed
/// sessions, and agreement with analysts' resolutions.
#[utoipa::path(
    post,
    path = "/v1/backtests",
    operation_id = "run_backtest",
    tag = "rulesets",
    params(TenantParam),
    request_body = BacktestBody,
    security(("api_key" = [])),
    responses((status = 200, body = Report), BadRequest, Unauthorized, Forbidden, InvalidRuleset, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn run(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
    ApiJson(b): ApiJson<BacktestBody>,
) -> Result<Json<Report>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let ruleset = Ruleset::parse("ruleset", &b.ruleset).map_err(|errors| ApiError::invalid_ruleset(&errors))?;
    let time = |name: &str, v: &Option<String>, default: i64| -> Result<i64, ApiError> {
        match v {
            None => Ok(default),
            Some(s) => crate::decide::backtest::parse_time(s)
                .map_err(|m| ApiError::bad_request("invalid_body", format!("`{name}`: {m}"))),
        }
    };
    let since = time("since", &b.since, 0)?;
    let until = time("until", &b.until, i64::MAX)?;
    let report =
        crate::decide::backtest::run(st.store.as_ref(), &ruleset, since, until, Some(&tenant), &|_| {}).await?;
    Ok(Json(report))
}
