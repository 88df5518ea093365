//! `/v1/endpoints`: where outbound notifications go (README "Notifications"). Admins make,
//! change, disable and delete endpoints of their tenant, see every delivery attempt, and replay
//! from an offset or a time. Endpoints from the config are listed but read-only here (409).
//! A secret is shown once: when the endpoint is made, or when a new one is rotated in.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Conflict, Forbidden, NotFound, ServerError, TooManyRequests, Unauthorized};
use super::sessions::TenantParam;
use crate::error::ApiError;
use crate::notify::config::{check_fields, valid_id, Filter};
use crate::state::AppState;
use crate::store::notify::{AttemptRecord, EndpointRecord, NotifyOp};
use crate::store::{Op, Txn};
use crate::util::now_us;

/// An endpoint as listed: never its secrets, nor its header values.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub kinds: Vec<String>,
    pub filter: Filter,
    /// Seconds; null: `notifications.default_timeout_secs`.
    pub timeout_secs: Option<u64>,
    /// The names of the extra headers sent (their values are not shown).
    pub headers: Vec<String>,
    pub rate_limit_per_sec: Option<f64>,
    pub disabled: bool,
    /// Why it is disabled (a caller, or a `410 Gone` answer).
    pub disabled_reason: Option<String>,
    /// How many secrets sign each delivery (two during a rotation).
    pub secrets: usize,
    /// `config` (read-only here) or `api`.
    pub source: &'static str,
    pub created_by: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// The last log offset delivered or given up (everything at or below it is done).
    pub delivered_through: Option<u64>,
    /// How many matching events it has yet to get (after `delivered_through`, counted up to
    /// 10,000 within the next 100,000 entries of its tenant): what a disabled endpoint missed and gets when enabled again (unless enabled with
    /// `skip_backlog`). Shown for one endpoint (`GET /v1/endpoints/{id}`, `PATCH`), not in lists.
    pub backlog: Option<u64>,
}

/// The most events `backlog` counts.
const BACKLOG_CAP: u64 = 10_000;

fn time(us: i64) -> Option<String> {
    (us > 0).then(|| idstream_core::event::rfc3339_us(us))
}

impl EndpointView {
    fn of(e: EndpointRecord, source: &'static str, gone: Option<String>, checkpoint: Option<u64>) -> EndpointView {
        EndpointView {
            source,
            disabled: e.disabled || gone.is_some(),
            disabled_reason: gone.or(e.disabled_reason),
            backlog: None,
            secrets: e.secrets.len(),
            headers: e.headers.into_keys().collect(),
            filter: Filter { outcome: e.outcomes },
            timeout_secs: (e.timeout_secs > 0).then_some(e.timeout_secs),
            created_at: time(e.created_at_us),
            updated_at: time(e.updated_at_us),
            delivered_through: checkpoint,
            id: e.id,
            tenant: e.tenant,
            url: e.url,
            kinds: e.kinds,
            rate_limit_per_sec: e.rate_limit_per_sec,
            created_by: e.created_by,
        }
    }
}

async fn view(st: &AppState, e: EndpointRecord, source: &'static str) -> Result<EndpointView, ApiError> {
    let checkpoint = st.store.checkpoint(&crate::notify::consumer(&e.id)).await?;
    let gone = if source == "config" { st.notifier.is_gone(&e.id) } else { None };
    Ok(EndpointView::of(e, source, gone, checkpoint))
}

/// One endpoint's view with its backlog counted.
async fn full_view(st: &AppState, e: EndpointRecord, source: &'static str) -> Result<EndpointView, ApiError> {
    let backlog = st.notifier.backlog(&e, BACKLOG_CAP).await?;
    let mut v = view(st, e, source).await?;
    v.backlog = backlog;
    Ok(v)
}

/// The `endpoint.disabled` / `endpoint.enabled` entry of a caller's change.
fn endpoint_changed(e: &EndpointRecord, disabled: bool, caller: &Caller) -> crate::log::NewEntry {
    let verb = if disabled { "disabled" } else { "enabled" };
    let change = crate::events::EndpointChanged {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: e.tenant.clone(),
        endpoint: e.id.clone(),
        reason: format!("{verb} by {}", caller.name),
        actor: caller.name.clone(),
        at: idstream_core::event::rfc3339_us(now_us()),
    };
    let ev = if disabled {
        crate::events::OwnEvent::EndpointDisabled(change)
    } else {
        crate::events::OwnEvent::EndpointEnabled(change)
    };
    ev.to_entry()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// An endpoint just made, or with a secret just rotated in: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// The new `whsec_` secret: give it to the receiver now (it verifies signatures with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// 1 to 64 letters, digits, `-` and `_` (default: generated).
    #[serde(default)]
    pub id: Option<String>,
    /// For a `*` caller: the endpoint's tenant; others make endpoints of their own.
    #[serde(default)]
    pub tenant: Option<String>,
    pub url: String,
    /// Kind patterns: `*`, `prefix.*` or exact kinds.
    pub kinds: Vec<String>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
}

/// Changes; absent fields stay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// `{"outcome": null}` removes the filter.
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
    /// Stops (true) or resumes (false) deliveries; a resumed endpoint gets what it missed
    /// (its `backlog`) unless `skip_backlog`.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// With `"disabled": false`: start at the log's head instead of delivering the backlog.
    #[serde(default)]
    pub skip_backlog: bool,
    /// Adds a new secret (returned once); the old one keeps signing too until
    /// `drop_previous_secrets`.
    #[serde(default)]
    pub rotate_secret: bool,
    /// Keeps only the newest secret.
    #[serde(default)]
    pub drop_previous_secrets: bool,
}

fn bad(field: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_body", format!("`{field}` {problem}"))
}

/// Finds an endpoint the caller may see: `(record, from config)`.
async fn find(st: &AppState, caller: &Caller, id: &str) -> Result<(EndpointRecord, bool), ApiError> {
    let scope = caller.tenant_filter();
    let visible = |e: &EndpointRecord| scope.as_deref().is_none_or(|t| e.tenant == t);
    if let Some(e) = st.notifier.config_endpoint(id).filter(|e| visible(e)) {
        return Ok((e.clone(), true));
    }
    match st.store.endpoint(id).await? {
        Some(e) if visible(&e) => Ok((e, false)),
        _ => Err(ApiError::not_found("not_found", format!("no endpoint `{id}`"))),
    }
}

fn read_only(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "endpoint `{id}` is defined in the configuration file ([[endpoints]]): change or remove it there \
         (endpoints made through the API can be changed here)"
    ))
}

/// Endpoints of the caller's tenant (all tenants for a `*` caller, or the one named).
#[utoipa::path(
    get,
    path = "/v1/endpoints",
    operation_id = "list_endpoints",
    tag = "notifications",
    params(TenantParam),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = EndpointList), BadRequest, Unauthorized, Forbidden, TooManyRequests, ServerError)
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<EndpointList>, ApiError> {
    let tenant = caller.listing(q.tenant.as_deref())?;
    let mut endpoints = Vec::new();
    for e in st.notifier.config_endpoints.iter().filter(|e| tenant.as_deref().is_none_or(|t| e.tenant == t)) {
        endpoints.push(view(&st, e.clone(), "config").await?);
    }
    for e in st.store.endpoints(tenant.as_deref()).await? {
        endpoints.push(view(&st, e, "api").await?);
    }
    Ok(Json(EndpointList { endpoints }))
}

/// Makes an endpoint; it gets the events appended from now on (replay reaches back). The answer
/// holds its secret, once.
#[utoipa::path(
    post,
    path = "/v1/endpoints",
    operation_id = "create_endpoint",
    tag = "notifications",
    request_body = NewEndpoint,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (without the secret)")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, body = EndpointWithSecret),
        BadRequest,
        Unauthorized,
        Forbidden,
        Conflict,
        TooManyRequests,
        ServerError
    )
)]
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(b): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, super::idempotency::Secret<Json<EndpointWithSecret>>), ApiError> {
    let id = b.id.unwrap_or_else(|| format!("ep_{}", uuid::Uuid::now_v7().simple()));
    if !valid_id(&id) {
        return Err(bad("id", "must be 1 to 64 letters, digits, `-` and `_`"));
    }
    let tenant = caller.acting_for(b.tenant.as_deref())?;
    if tenant == "*" {
        return Err(bad("tenant", "must name one tenant"));
    }
    check_fields(&b.kinds, b.timeout_secs, &b.headers, b.rate_limit_per_sec).map_err(|(f, p)| bad(f, p))?;
    st.notifier.check_url(&b.url).await.map_err(|p| bad("url", p))?;
    if st.notifier.config_endpoint(&id).is_some() {
        return Err(ApiError::conflict(format!("endpoint `{id}` is defined in the configuration file")));
    }
    let secret = crate::notify::new_secret();
    let now = now_us();
    let rec = EndpointRecord {
        id: id.clone(),
        tenant,
        url: b.url,
        kinds: b.kinds,
        secrets: vec![secret.clone()],
        outcomes: b.filter.and_then(|f| f.outcome),
        timeout_secs: b.timeout_secs.unwrap_or(0),
        headers: b.headers,
        rate_limit_per_sec: b.rate_limit_per_sec,
        disabled: false,
        disabled_reason: None,
        created_by: caller.name.clone(),
        created_at_us: now,
        updated_at_us: now,
    };
    // It starts at the head: what is appended from now on.
    let ops = vec![
        Op::Notify(NotifyOp::PutEndpoint(rec.clone())),
        Op::Notify(NotifyOp::ResetCheckpoint { consumer: crate::notify::consumer(&id), offset: st.log.head() }),
    ];
    st.store.commit(Txn { entries: Vec::new(), ops }).await?;
    st.notifier.changed();
    let endpoint = view(&st, rec, "api").await?;
    let body = EndpointWithSecret { endpoint, secret: Some(secret) };
    Ok((StatusCode::CREATED, super::idempotency::Secret::new(Json(body), &["secret"])))
}

/// One endpoint.
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}",
    operation_id = "get_endpoint",
    tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = EndpointView), Unauthorized, Forbidden, NotFound, TooManyRequests, ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let (e, config) = find(&st, &caller, &id).await?;
    Ok(Json(full_view(&st, e, if config { "config" } else { "api" }).await?))
}

/// Changes an endpoint: its URL, kinds, filter, headers, limits; disables or re-enables it;
/// rotates its secret.
#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    operation_id = "update_endpoint",
    tag = "notifications",
    request_body = EndpointPatch,
    params(("id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = EndpointWithSecret),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooManyRequests,
        ServerError
    )
)]
pub async fn update(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<EndpointPatch>,
) -> Result<super::idempotency::Secret<Json<EndpointWithSecret>>, ApiError> {
    let (mut e, config) = find(&st, &caller, &id).await?;
    if config {
        return Err(read_only(&id));
    }
    if let Some(url) = p.url {
        st.notifier.check_url(&url).await.map_err(|p| bad("url", p))?;
        e.url = url;
    }
    if let Some(k) = p.kinds {
        e.kinds = k;
    }
    if let Some(f) = p.filter {
        e.outcomes = f.outcome;
    }
    if let Some(t) = p.timeout_secs {
        e.timeout_secs = t;
    }
    if let Some(h) = p.headers {
        e.headers = h;
    }
    if let Some(r) = p.rate_limit_per_sec {
        e.rate_limit_per_sec = Some(r);
    }
    check_fields(&e.kinds, (e.timeout_secs > 0).then_some(e.timeout_secs), &e.headers, e.rate_limit_per_sec)
        .map_err(|(f, p)| bad(f, p))?;
    let mut entries = Vec::new();
    let mut ops = Vec::new();
    if p.skip_backlog && p.disabled != Some(false) {
        return Err(bad("skip_backlog", "goes with `\"disabled\": false` (enabling the endpoint)"));
    }
    match p.disabled {
        Some(true) if !e.disabled => {
            e.disabled = true;
            e.disabled_reason = Some(format!("disabled by {}", caller.name));
            entries.push(endpoint_changed(&e, true, &caller));
        }
        Some(false) if e.disabled => {
            e.disabled = false;
            e.disabled_reason = None;
            entries.push(endpoint_changed(&e, false, &caller));
            if p.skip_backlog {
                let at = st.log.head();
                ops.push(Op::SetCheckpoint { consumer: crate::notify::consumer(&e.id), offset: at });
            }
        }
        _ => {}
    }
    let mut secret = None;
    if p.rotate_secret {
        let s = crate::notify::new_secret();
        e.secrets.push(s.clone());
        secret = Some(s);
    }
    if p.drop_previous_secrets {
        let keep = e.secrets.split_off(e.secrets.len() - 1);
        e.secrets = keep;
    }
    if e.secrets.len() > 3 {
        return Err(bad("rotate_secret", "an endpoint has at most 3 secrets: drop the previous ones first"));
    }
    e.updated_at_us = now_us();
    ops.insert(0, Op::Notify(NotifyOp::UpdateEndpoint { tenant: caller.tenant_filter(), endpoint: e.clone() }));
    st.store.commit(Txn { entries, ops }).await?;
    st.notifier.changed();
    let endpoint = full_view(&st, e, "api").await?;
    Ok(super::idempotency::Secret::new(Json(EndpointWithSecret { endpoint, secret }), &["secret"]))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
}

/// Deletes an endpoint: deliveries stop; its attempts stay listed.
#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    operation_id = "delete_endpoint",
    tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = Deleted),
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooManyRequests,
        ServerError
    )
)]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let (_, config) = find(&st, &caller, &id).await?;
    if config {
        return Err(read_only(&id));
    }
    let op = Op::Notify(NotifyOp::DeleteEndpoint { tenant: caller.tenant_filter(), id: id.clone() });
    st.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await?;
    st.notifier.changed();
    Ok(Json(Deleted { deleted: id }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only given-up deliveries (the dead-letter list).
    pub failed: Option<bool>,
    /// Attempts older than this `seq` (the previous page's `next_before`).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<AttemptRecord>,
    /// `before` of the next page (none: this was the last).
    pub next_before: Option<i64>,
}

/// Every delivery attempt of an endpoint, newest first: status, latency, error, next attempt.
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}/deliveries",
    operation_id = "list_endpoint_deliveries",
    tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id"), DeliveriesQuery),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, body = DeliveryPage),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        TooManyRequests,
        ServerError
    )
)]
pub async fn deliveries(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_parameter", "`limit` must be between 1 and 1000"));
    }
    find(&st, &caller, &id).await?;
    let deliveries = st.store.attempts(&id, q.before, q.failed.unwrap_or(false), limit).await?;
    let next_before = (deliveries.len() == limit).then(|| deliveries.last().map(|a| a.seq)).flatten();
    Ok(Json(DeliveryPage { deliveries, next_before }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Deliver again every matching event from this log offset on.
    #[serde(default)]
    pub from_offset: Option<u64>,
    /// Or: from the first event appended at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Up to this offset (inclusive; default: up to this request).
    #[serde(default)]
    pub to_offset: Option<u64>,
    /// Or: up to the last event appended before this time (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
    /// Only the events whose delivery was given up (the dead-letter list); without a start,
    /// every one of them.
    #[serde(default)]
    pub failed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStarted {
    pub endpoint: String,
    /// Deliveries start again at this offset (same `webhook-id` as before for each event).
    pub from_offset: u64,
    /// And end at this one (none: the request's own offset).
    pub to_offset: Option<u64>,
    pub failed_only: bool,
    /// The offset of the `endpoint.replay_requested` entry: the replay covers what is below
    /// it, and the endpoint's `delivered_through` stays below it until the replay is done.
    pub request_offset: u64,
}

fn parse_time(field: &str, t: &str) -> Result<i64, ApiError> {
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad(field, "must be an RFC 3339 time such as 2026-01-31T12:00:00Z"))?;
    Ok((at.unix_timestamp_nanos() / 1000) as i64)
}

/// Delivers an endpoint's events again: from an offset or a time, up to an offset or a time
/// (default: now), all of them or only the given-up ones; each session's in log order, with
/// the same `webhook-id`s, while new events keep flowing. Recorded as an
/// `endpoint.replay_requested` entry, which the endpoint's delivery worker carries out (a
/// restart repeats it rather than losing it). A disabled endpoint replays once enabled.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/replay",
    operation_id = "replay_endpoint",
    tag = "notifications",
    request_body = ReplayRequest,
    params(("id" = String, Path, description = "The endpoint's id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 202, body = ReplayStarted),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        TooManyRequests,
        ServerError
    )
)]
pub async fn replay(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReplayRequest>,
) -> Result<(StatusCode, Json<ReplayStarted>), ApiError> {
    let from_offset = match (b.from_offset, b.since.as_deref()) {
        (Some(0), None) => return Err(bad("from_offset", "must be 1 or more")),
        (Some(o), None) => o,
        (None, Some(t)) => st.log.last_offset_before(parse_time("since", t)?).await? + 1,
        (None, None) if b.failed => 1,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give one of `from_offset` (1 or more) or `since` (or `failed: true` alone)",
            ))
        }
    };
    let to_offset = match (b.to_offset, b.until.as_deref()) {
        (Some(o), None) => Some(o),
        (None, Some(t)) => Some(st.log.last_offset_before(parse_time("until", t)?).await?),
        (None, None) => None,
        _ => return Err(ApiError::bad_request("invalid_body", "give at most one of `to_offset` and `until`")),
    };
    if to_offset.is_some_and(|to| to < from_offset) {
        return Err(bad("to_offset", format!("is before the start (offset {from_offset}): nothing to replay")));
    }
    let (e, _) = find(&st, &caller, &id).await?;
    let request = crate::events::OwnEvent::EndpointReplayRequested(crate::events::EndpointReplay {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: e.tenant.clone(),
        endpoint: id.clone(),
        from_offset,
        to_offset,
        failed_only: b.failed,
        actor: caller.name.clone(),
        at: idstream_core::event::rfc3339_us(now_us()),
    });
    let appended = st.log.append(vec![request.to_entry()]).await?;
    let request_offset = appended.first().map_or(0, |a| a.offset);
    st.notifier.changed();
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayStarted { endpoint: id, from_offset, to_offset, failed_only: b.failed, request_offset }),
    ))
}
