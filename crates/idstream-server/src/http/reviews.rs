//! Review cases: list, read, claim (exclusive), resolve (a decision of its own).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use idstream_rules::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::decisions::DecisionView;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable};
use crate::decide::review;
use crate::domain::ReviewStatus;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Op, ReviewFilter, ReviewRecord, Txn};
use crate::util::now_us;

/// A review case as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    #[serde(flatten)]
    pub record: ReviewRecord,
    /// RFC 3339 UTC.
    pub opened_at: String,
    /// Seconds since the case was opened.
    pub age_secs: i64,
}

impl From<ReviewRecord> for ReviewView {
    fn from(record: ReviewRecord) -> Self {
        ReviewView {
            opened_at: idstream_core::event::rfc3339_us(record.opened_at_us),
            age_secs: (now_us() - record.opened_at_us) / 1_000_000,
            record,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewList {
    /// Oldest first.
    pub reviews: Vec<ReviewView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Resolution {
    pub review: ReviewView,
    /// The analyst's decision (`decided_by: review:<analyst>`).
    pub decision: DecisionView,
}

/// Which cases a listing shows.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    #[default]
    Open,
    Claimed,
    Resolved,
    All,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `open` (default), `claimed`, `resolved` or `all`.
    #[param(inline)]
    status: Option<StatusFilter>,
    /// A reason code (`aml.hits`) or its prefix (`aml`).
    reason: Option<String>,
    /// Only cases opened at least this many seconds ago.
    older_than_secs: Option<u64>,
    session_id: Option<String>,
    /// 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// A `*` key may name one tenant (default: all).
    tenant: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Deprecated: the analyst is the authenticated caller; any other name is refused (400).
    #[serde(default)]
    pub analyst: Option<String>,
}

/// The final outcome an analyst gives.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Decline,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    pub outcome: Verdict,
    /// Up to 10,000 bytes.
    #[serde(default)]
    pub note: String,
    /// Deprecated: the analyst is the authenticated caller (who must hold the claim); any other
    /// name is refused (400).
    #[serde(default)]
    pub analyst: Option<String>,
}

/// The actor of a review action is the authenticated caller. A body may still name the analyst
/// (older clients did), but only the caller itself: naming anyone else is refused, never recorded.
fn actor(caller: &Caller, analyst: Option<String>) -> Result<String, ApiError> {
    match analyst {
        Some(a) if a.trim() != caller.name && a.trim() != caller.name.split_once(':').map_or("", |(_, n)| n) => {
            Err(ApiError::bad_request(
                "analyst_mismatch",
                format!(
                    "`analyst` must be the caller ({}) or left out: the actor is the authenticated identity",
                    caller.name
                ),
            ))
        }
        _ => Ok(caller.name.clone()),
    }
}

async fn visible(st: &AppState, caller: &Caller, id: &str) -> Result<ReviewRecord, ApiError> {
    st.store
        .review(caller.tenant_filter().as_deref(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("review_not_found", format!("no review `{id}`")))
}

/// Review cases, oldest first.
#[utoipa::path(
    get,
    path = "/v1/reviews",
    operation_id = "list_reviews",
    tag = "reviews",
    params(ListParams),
    security(("api_key" = [])),
    responses((status = 200, body = ReviewList), BadRequest, Unauthorized, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<ReviewList>, ApiError> {
    let tenant = caller.listing(q.tenant.as_deref())?;
    let status = match q.status.unwrap_or_default() {
        StatusFilter::Open => Some(ReviewStatus::Open),
        StatusFilter::Claimed => Some(ReviewStatus::Claimed),
        StatusFilter::Resolved => Some(ReviewStatus::Resolved),
        StatusFilter::All => None,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_parameter", "`limit` must be an integer from 1 to 1000"));
    }
    let opened_before_us =
        q.older_than_secs.map(|s| now_us() - (s.min(i64::MAX as u64 / 1_000_000) as i64) * 1_000_000);
    let filter = ReviewFilter { tenant, status, reason: q.reason, opened_before_us, session_id: q.session_id, limit };
    let reviews = st.store.reviews(filter).await?;
    Ok(Json(ReviewList { reviews: reviews.into_iter().map(ReviewView::from).collect() }))
}

/// One review case.
#[utoipa::path(
    get,
    path = "/v1/reviews/{id}",
    operation_id = "get_review",
    tag = "reviews",
    params(("id" = String, Path, description = "The case's id")),
    security(("api_key" = [])),
    responses((status = 200, body = ReviewView), Unauthorized, NotFound, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReviewView>, ApiError> {
    Ok(Json(visible(&st, &caller, &id).await?.into()))
}

/// Claims an open case; of concurrent claims, one wins and the others get 409 naming the holder.
#[utoipa::path(
    post,
    path = "/v1/reviews/{id}/claim",
    operation_id = "claim_review",
    tag = "reviews",
    params(("id" = String, Path, description = "The case's id")),
    request_body(content = ClaimBody, description = "Optional"),
    security(("api_key" = [])),
    responses((status = 200, body = ReviewView), BadRequest, Unauthorized, NotFound, Conflict, Unavailable, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn claim(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ClaimBody>,
) -> Result<Json<ReviewView>, ApiError> {
    let who = actor(&caller, b.analyst)?;
    let mut r = visible(&st, &caller, &id).await?;
    let now = now_us();
    r.status = ReviewStatus::Claimed;
    r.claimed_by = Some(who.clone());
    r.claimed_at_us = Some(now);
    st.store
        .commit(Txn {
            entries: vec![review::changed(&r, Some(&who)).to_entry()],
            ops: vec![Op::ClaimReview { tenant: r.tenant.clone(), id, actor: who, now_us: now }],
        })
        .await?;
    Ok(Json(r.into()))
}

/// Resolves a case the caller holds: the analyst's decision replaces the rules' one.
#[utoipa::path(
    post,
    path = "/v1/reviews/{id}/resolve",
    operation_id = "resolve_review",
    tag = "reviews",
    params(("id" = String, Path, description = "The case's id")),
    request_body = ResolveBody,
    security(("api_key" = [])),
    responses((status = 200, body = Resolution), BadRequest, Unauthorized, NotFound, Conflict, Unavailable, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn resolve(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ResolveBody>,
) -> Result<Json<Resolution>, ApiError> {
    if b.note.len() > 10_000 {
        return Err(ApiError::bad_request("invalid_body", "`note` is limited to 10,000 bytes"));
    }
    let who = actor(&caller, b.analyst)?;
    let r = visible(&st, &caller, &id).await?;
    let outcome = match b.outcome {
        Verdict::Approve => Outcome::Approve,
        Verdict::Decline => Outcome::Decline,
    };
    let reason = format!("review.{}", outcome.as_str());
    let (d, r) = review::resolve(st.store.as_ref(), &r, &who, outcome, &reason, &b.note, false).await?;
    Ok(Json(Resolution { review: r.into(), decision: d.into() }))
}
