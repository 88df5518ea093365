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
use crate::store::{MoveReview, Op, ReviewFilter, ReviewRecord, Txn};
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
    /// When more cases match: pass it back as `after` for the next page (an opaque cursor).
    pub next_after: Option<String>,
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
    /// The previous page's `next_after`: cases after it in the listing's order.
    after: Option<String>,
    /// A `*` key may name one tenant (default: all).
    tenant: Option<String>,
}

/// The cursor of a page: `{opened_at µs}.{id}` of its last case.
fn cursor(r: &ReviewRecord) -> String {
    format!("{}.{}", r.opened_at_us, r.id)
}

fn parse_cursor(s: &str) -> Result<(i64, String), ApiError> {
    s.split_once('.')
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
        .filter(|(_, id)| !id.is_empty())
        .map(|(at, id)| (at, id.to_owned()))
        .ok_or_else(|| ApiError::bad_request("invalid_parameter", "`after` must be a `next_after` of an earlier page"))
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
    let after = q.after.as_deref().map(parse_cursor).transpose()?;
    // One more than asked tells whether another page exists.
    let filter = ReviewFilter {
        tenant,
        status,
        reason: q.reason,
        opened_before_us,
        session_id: q.session_id,
        after,
        limit: limit + 1,
    };
    let mut reviews = st.store.reviews(filter).await?;
    let next_after = if reviews.len() > limit {
        reviews.truncate(limit);
        reviews.last().map(cursor)
    } else {
        None
    };
    Ok(Json(ReviewList { reviews: reviews.into_iter().map(ReviewView::from).collect(), next_after }))
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
    if r.level >= 2 && !second_level(caller.role) {
        return Err(ApiError::forbidden(
            "second_level_case",
            format!("review `{id}` was escalated: only `admin` and `policy_admin` may take it"),
        ));
    }
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

/// Who may take an escalated (second-level) case.
fn second_level(role: crate::domain::Role) -> bool {
    matches!(role, crate::domain::Role::Admin | crate::domain::Role::PolicyAdmin)
}

/// A note on a claim change (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    /// Why (up to 10,000 bytes); recorded in the event.
    #[serde(default)]
    pub note: Option<String>,
}

/// Hands a case to an analyst.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignBody {
    /// The username of an enabled `analyst`, `policy_admin` or `admin` of the case's tenant
    /// (for an escalated case: `policy_admin` or `admin`).
    pub to: String,
    #[serde(default)]
    pub note: Option<String>,
}

fn check_note(note: &Option<String>) -> Result<(), ApiError> {
    if note.as_ref().is_some_and(|n| n.len() > 10_000) {
        return Err(ApiError::bad_request("invalid_body", "`note` is limited to 10,000 bytes"));
    }
    Ok(())
}

/// A move of `r` back to the queue with no condition beyond "unresolved"; callers add theirs.
fn unconditional(r: &ReviewRecord) -> MoveReview {
    MoveReview {
        tenant: r.tenant.clone(),
        id: r.id.clone(),
        claimed: false,
        holder: None,
        claimed_before_us: None,
        max_level: None,
        to: None,
        level: None,
        now_us: now_us(),
    }
}

/// Applies a claim change and records its event; answers the case as it now is.
async fn apply_move(
    st: &AppState,
    mut r: ReviewRecord,
    m: MoveReview,
    who: &str,
    how: review::Move,
    note: Option<String>,
) -> Result<ReviewView, ApiError> {
    r.status = if m.to.is_some() { ReviewStatus::Claimed } else { ReviewStatus::Open };
    r.claimed_by = m.to.clone();
    r.claimed_at_us = m.to.as_ref().map(|_| m.now_us);
    if let Some(l) = m.level {
        r.level = l;
    }
    st.store
        .commit(Txn { entries: vec![review::moved(&r, who, how, note).to_entry()], ops: vec![Op::MoveReview(m)] })
        .await?;
    Ok(r.into())
}

/// Gives up a claim: the case goes back to the queue. The holder may release it; an `admin`
/// may release anyone's.
#[utoipa::path(
    post,
    path = "/v1/reviews/{id}/release",
    operation_id = "release_review",
    tag = "reviews",
    params(("id" = String, Path, description = "The case's id")),
    request_body(content = MoveBody, description = "Optional"),
    security(("api_key" = [])),
    responses((status = 200, body = ReviewView), BadRequest, Unauthorized, NotFound, Conflict, Unavailable, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn release(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<MoveBody>,
) -> Result<Json<ReviewView>, ApiError> {
    check_note(&b.note)?;
    let r = visible(&st, &caller, &id).await?;
    let admin = caller.role == crate::domain::Role::Admin;
    let m = MoveReview { claimed: true, holder: (!admin).then(|| caller.name.clone()), ..unconditional(&r) };
    Ok(Json(apply_move(&st, r, m, &caller.name, review::Move::Released, b.note).await?))
}

/// Hands a case (open or claimed) to an analyst, who then holds its claim (`admin`).
#[utoipa::path(
    post,
    path = "/v1/reviews/{id}/reassign",
    operation_id = "reassign_review",
    tag = "reviews",
    params(("id" = String, Path, description = "The case's id")),
    request_body = ReassignBody,
    security(("api_key" = [])),
    responses((status = 200, body = ReviewView), BadRequest, Unauthorized, NotFound, Conflict, Unavailable, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn reassign(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReassignBody>,
) -> Result<Json<ReviewView>, ApiError> {
    check_note(&b.note)?;
    let r = visible(&st, &caller, &id).await?;
    let username = b.to.strip_prefix("user:").unwrap_or(&b.to);
    let user = st.store.user_by_name(username).await?;
    let acts = |role| crate::http::authz::Action::ActOnReviews.roles().contains(&role);
    let user = match user {
        Some(u) if !u.disabled && (u.tenant == r.tenant || u.tenant == "*") && acts(u.role) => u,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_assignee",
                format!("`to` must name an enabled analyst, policy_admin or admin of tenant `{}`", r.tenant),
            ))
        }
    };
    if r.level >= 2 && !second_level(user.role) {
        return Err(ApiError::bad_request(
            "invalid_assignee",
            format!("review `{id}` was escalated: assign it to a policy_admin or admin"),
        ));
    }
    let to = format!("user:{}", user.username);
    let m = MoveReview { to: Some(to.clone()), ..unconditional(&r) };
    let note = Some(match b.note {
        Some(n) if !n.is_empty() => format!("to {to}: {n}"),
        _ => format!("to {to}"),
    });
    Ok(Json(apply_move(&st, r, m, &caller.name, review::Move::Reassigned, note).await?))
}

/// Sends a case the caller holds to the second level: it goes back to the queue, where only
/// `admin` and `policy_admin` may claim it.
#[utoipa::path(
    post,
    path = "/v1/reviews/{id}/escalate",
    operation_id = "escalate_review",
    tag = "reviews",
    params(("id" = String, Path, description = "The case's id")),
    request_body(content = MoveBody, description = "Optional"),
    security(("api_key" = [])),
    responses((status = 200, body = ReviewView), BadRequest, Unauthorized, NotFound, Conflict, Unavailable, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn escalate(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<MoveBody>,
) -> Result<Json<ReviewView>, ApiError> {
    check_note(&b.note)?;
    let r = visible(&st, &caller, &id).await?;
    if r.level >= 2 {
        return Err(ApiError::conflict(format!("review `{id}` is already at the second level")));
    }
    let m = MoveReview {
        claimed: true,
        holder: Some(caller.name.clone()),
        max_level: Some(1),
        level: Some(2),
        ..unconditional(&r)
    };
    Ok(Json(apply_move(&st, r, m, &caller.name, review::Move::Escalated, b.note).await?))
}

/// Returns claims idle for longer than `idle` to the queue (`review.released` by
/// `system:idle`). Every node may run it: the change is conditional on the claim being the same
/// idle one, so one node's release wins and the others change nothing.
pub async fn return_idle_claims(st: &AppState, idle: std::time::Duration) -> Result<usize, ApiError> {
    let cutoff = now_us() - idle.as_micros() as i64;
    let filter = ReviewFilter { status: Some(ReviewStatus::Claimed), limit: 1000, ..Default::default() };
    let mut n = 0;
    for r in st.store.reviews(filter).await? {
        let Some(at) = r.claimed_at_us.filter(|at| *at <= cutoff) else { continue };
        let m = MoveReview {
            claimed: true,
            holder: r.claimed_by.clone(),
            claimed_before_us: Some(at),
            ..unconditional(&r)
        };
        let note = Some(format!("claim idle for more than {} s", idle.as_secs()));
        match apply_move(st, r, m, "system:idle", review::Move::Released, note).await {
            Ok(_) => n += 1,
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Asks the user to resubmit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResubmitBody {
    /// Why (required, up to 10,000 bytes): sent to the provider as the comment.
    pub note: String,
}

/// The closed case, and the provider account told about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resubmission {
    pub review: ReviewView,
    /// The `[[providers]] id` whose update-status was called (`Resubmitted`); null when the
    /// session's source has no provider account (tell the user yourself).
    pub provider: Option<String>,
}

/// The provider account whose webhooks brought the session's results, if one is configured.
async fn provider_of(st: &AppState, r: &ReviewRecord) -> Result<Option<Arc<crate::provider::DiditClient>>, ApiError> {
    let filter = crate::log::ReadFilter { tenant: Some(r.tenant.clone()), partition_key: Some(r.session_id.clone()) };
    let entries = st.log.read(0, 1000, &filter).await?;
    let source = entries.iter().rev().find(|e| e.source != crate::events::OWN_SOURCE).map(|e| e.source.clone());
    Ok(source.and_then(|s| st.providers.all().find(|p| p.source == s && p.tenant == r.tenant).cloned()))
}

/// Closes a case the caller holds without an outcome and asks the user to resubmit: with the
/// session's provider account configured, Didit's update-status sets the session `Resubmitted`
/// first (a provider failure answers 502 / 504 and changes nothing).
#[utoipa::path(
    post,
    path = "/v1/reviews/{id}/resubmit",
    operation_id = "request_resubmission",
    tag = "reviews",
    params(("id" = String, Path, description = "The case's id")),
    request_body = ResubmitBody,
    security(("api_key" = [])),
    responses(
        (status = 200, body = Resubmission),
        BadRequest, Unauthorized, NotFound, Conflict, Unavailable, Forbidden, TooManyRequests,
        crate::http::verifications::BadGateway, crate::http::verifications::GatewayTimeout,
        crate::http::responses::ServerError
    )
)]
pub async fn resubmit(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ResubmitBody>,
) -> Result<Json<Resubmission>, ApiError> {
    let note = b.note.trim().to_owned();
    if note.is_empty() || note.len() > 10_000 {
        return Err(ApiError::bad_request("invalid_body", "`note` is required (up to 10,000 bytes): say what to redo"));
    }
    let mut r = visible(&st, &caller, &id).await?;
    if !(r.status == ReviewStatus::Claimed && r.claimed_by.as_deref() == Some(caller.name.as_str())) {
        return Err(ApiError::conflict(match (&r.status, &r.claimed_by) {
            (ReviewStatus::Resolved, _) => format!("review `{id}` is resolved"),
            (_, Some(by)) => format!("review `{id}` is claimed by `{by}`"),
            _ => format!("review `{id}` is open; claim it first"),
        }));
    }
    let client = provider_of(&st, &r).await?;
    if let Some(c) = &client {
        if crate::provider::didit::valid_session_id(&r.session_id) {
            c.update_status(&r.session_id, "Resubmitted", Some(&note)).await?;
        }
    }
    let now = now_us();
    r.status = ReviewStatus::Resolved;
    r.resolved_by = Some(caller.name.clone());
    r.resolved_at_us = Some(now);
    r.note = Some(note.clone());
    st.store
        .commit(Txn {
            entries: vec![review::moved(&r, &caller.name, review::Move::Resubmission, Some(note.clone())).to_entry()],
            ops: vec![
                Op::ResolveReview {
                    tenant: r.tenant.clone(),
                    id: r.id.clone(),
                    actor: caller.name.clone(),
                    outcome: None,
                    note,
                    now_us: now,
                    force: false,
                },
                Op::UpsertSession(crate::store::SessionUpdate {
                    tenant: r.tenant.clone(),
                    session_id: r.session_id.clone(),
                    subject: None,
                    provider_status: client.as_ref().map(|_| "Resubmitted".to_owned()),
                    state: crate::domain::SessionState::Resubmitted,
                    decision: None,
                    now_us: now,
                }),
            ],
        })
        .await?;
    Ok(Json(Resubmission { review: r.into(), provider: client.map(|c| c.id.clone()) }))
}
