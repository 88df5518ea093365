//! `GET /v1/stats`: a tenant's webhooks, decisions and review queue over a window, from the
//! store (not the process-wide `/metrics`), for the dashboard's overview.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use idstream_rules::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, TooManyRequests, Unauthorized};
use crate::error::ApiError;
use crate::state::AppState;
use crate::util::now_us;

/// `GET /v1/stats` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// The window, ending now: 600 s to 7 days (default 3600). It is cut into 60 buckets of
    /// whole minutes.
    pub window_secs: Option<u64>,
    /// Required with a `*` key.
    pub tenant: Option<String>,
}

/// Counts of one bucket (or of the whole window).
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct Counts {
    pub webhooks_accepted: u64,
    pub webhooks_duplicate: u64,
    pub webhooks_rejected: u64,
    pub approve: u64,
    pub review: u64,
    pub decline: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    /// RFC 3339 UTC: the bucket's start.
    pub start: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueNow {
    pub open: u64,
    pub claimed: u64,
    /// Age of the oldest open case (null: none open).
    pub oldest_open_age_secs: Option<i64>,
}

/// The oldest open case is older than `[reviews] alert_oldest_open_secs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alert {
    pub oldest_open_after_secs: u64,
    pub firing: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantStats {
    pub tenant: String,
    /// RFC 3339 UTC.
    pub from: String,
    pub to: String,
    pub bucket_secs: u64,
    pub totals: Counts,
    /// Oldest first.
    pub buckets: Vec<Bucket>,
    pub reviews: QueueNow,
    /// Null when no alert age is configured.
    pub alert: Option<Alert>,
}

/// A tenant's webhooks (accepted, duplicate, rejected: counted by every node, stored each
/// second), decisions per outcome, and the review queue now, over a window ending now.
#[utoipa::path(
    get,
    path = "/v1/stats",
    operation_id = "tenant_stats",
    tag = "decisions",
    params(StatsParams),
    security(("api_key" = [])),
    responses((status = 200, body = TenantStats), BadRequest, Unauthorized, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn stats(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StatsParams>,
) -> Result<Json<TenantStats>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let window = q.window_secs.unwrap_or(3600);
    if !(600..=7 * 86_400).contains(&window) {
        return Err(ApiError::bad_request("invalid_parameter", "`window_secs` must be 600 to 604800"));
    }
    let bucket_secs = (window / 60).div_ceil(60) * 60;
    let now = now_us();
    let bucket_us = bucket_secs as i64 * 1_000_000;
    // Buckets aligned to whole multiples of their length; the last one holds now.
    let last = now / bucket_us * bucket_us;
    let first = last - 59 * bucket_us;
    // Finished buckets' decisions come from the cache; the store counts from the first one it
    // does not hold.
    let known = st.finished_buckets.known(&tenant, bucket_us, first, 60);
    let decisions_from = first + known.len() as i64 * bucket_us;
    let rows = st.store.stats(&tenant, first, bucket_us, decisions_from).await?;
    let mut buckets: Vec<Counts> = vec![Counts::default(); 60];
    for (b, [approve, review, decline]) in buckets.iter_mut().zip(&known) {
        (b.approve, b.review, b.decline) = (*approve, *review, *decline);
    }
    let index = |at_us: i64| -> Option<usize> {
        let i = (at_us - first).div_euclid(bucket_us);
        (0..60).contains(&i).then_some(i as usize)
    };
    for c in rows.counts {
        let Some(i) = index(c.minute * 60_000_000) else { continue };
        let b = &mut buckets[i];
        match c.metric.as_str() {
            "webhooks_accepted" => b.webhooks_accepted += c.count,
            "webhooks_duplicate" => b.webhooks_duplicate += c.count,
            _ => b.webhooks_rejected += c.count,
        }
    }
    for (at, outcome, n) in rows.decisions {
        let Some(i) = index(at) else { continue };
        let b = &mut buckets[i];
        match outcome {
            Outcome::Approve => b.approve += n,
            Outcome::Review => b.review += n,
            Outcome::Decline => b.decline += n,
        }
    }
    st.finished_buckets.keep(
        &tenant,
        bucket_us,
        now,
        buckets
            .iter()
            .enumerate()
            .skip(known.len())
            .map(|(i, b)| (first + i as i64 * bucket_us, [b.approve, b.review, b.decline])),
    );
    let mut totals = Counts::default();
    for b in &buckets {
        totals.webhooks_accepted += b.webhooks_accepted;
        totals.webhooks_duplicate += b.webhooks_duplicate;
        totals.webhooks_rejected += b.webhooks_rejected;
        totals.approve += b.approve;
        totals.review += b.review;
        totals.decline += b.decline;
    }
    let oldest = rows.oldest_open_at_us.map(|at| (now - at) / 1_000_000);
    let rfc = idstream_core::event::rfc3339_us;
    Ok(Json(TenantStats {
        tenant,
        from: rfc(first),
        to: rfc(now),
        bucket_secs,
        totals,
        buckets: buckets
            .into_iter()
            .enumerate()
            .map(|(i, counts)| Bucket { start: rfc(first + i as i64 * bucket_us), counts })
            .collect(),
        reviews: QueueNow { open: rows.open_reviews, claimed: rows.claimed_reviews, oldest_open_age_secs: oldest },
        alert: st.alert_oldest_open.map(|a| Alert {
            oldest_open_after_secs: a.as_secs(),
            firing: oldest.is_some_and(|age| age as u64 > a.as_secs()),
        }),
    }))
}
