//! Blocklists of documents, phones, emails and faces. Values are normalised and stored only as
//! keyed hashes; the hash is the entry's id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable};
use super::sessions::TenantParam;
use crate::error::ApiError;
use crate::events::{BlocklistChanged, BlocklistKind, OwnEvent};
use crate::state::AppState;
use crate::store::{BlockRecord, Op, Txn, TxnError};
use crate::util::now_us;

/// A blocklist entry as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockView {
    #[serde(flatten)]
    pub record: BlockRecord,
    /// The entry's id: the keyed hash of the normalised value.
    pub id: String,
    pub added_at: String,
}

impl From<BlockRecord> for BlockView {
    fn from(record: BlockRecord) -> Self {
        BlockView { id: record.hash.clone(), added_at: idstream_core::event::rfc3339_us(record.added_at_us), record }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockList {
    pub tenant: String,
    pub kind: BlocklistKind,
    pub entries: Vec<BlockView>,
}

/// A session an addition declined because its open review used the value.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rechecked {
    pub session_id: String,
    pub review_id: String,
    pub decision_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockAdded {
    #[serde(flatten)]
    pub entry: BlockView,
    /// Sessions declined by the re-check (`recheck: true`).
    pub rechecked: Vec<Rechecked>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockRemoved {
    /// The id of the removed entry.
    pub removed: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBlock {
    /// The value in clear (normalised and hashed before anything is stored).
    pub value: String,
    /// Documents only: the issuing country (ISO 3166 alpha-3); without it the entry matches the
    /// number from any country.
    #[serde(default)]
    pub issuing_country: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Decline the sessions with an open review that used this value.
    #[serde(default)]
    pub recheck: bool,
}

/// A value to preview: what `POST /v1/blocklists/{kind}` would store for it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBlock {
    /// The value in clear (nothing is stored).
    pub value: String,
    /// Documents only, as for an addition.
    #[serde(default)]
    pub issuing_country: Option<String>,
}

/// What adding a value would do, computed without storing anything.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockPreview {
    pub kind: BlocklistKind,
    /// The normal form that is hashed: a document is `COUNTRY:NUMBER` (`*:` = issued by any
    /// country), a phone E.164, an email case-folded, a face id trimmed.
    pub normal_form: String,
    /// The id the entry would have (the keyed hash of the normal form).
    pub id: String,
    /// Whether an entry with this id is already on the list.
    pub listed: bool,
    /// Sessions with an open or claimed review that used this value: those `recheck: true`
    /// would decline.
    pub open_sessions: usize,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Required with a `*` key.
    tenant: Option<String>,
    /// 1–10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

fn kind_of(kind: &str) -> Result<BlocklistKind, ApiError> {
    BlocklistKind::parse(kind).ok_or_else(|| {
        ApiError::not_found(
            "unknown_blocklist",
            format!("no blocklist `{kind}` (there are: document, phone, email, face)"),
        )
    })
}

fn changed(b: &BlockRecord, actor: &str) -> BlocklistChanged {
    BlocklistChanged {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: b.tenant.clone(),
        list: b.kind,
        entry_id: b.hash.clone(),
        reason: b.reason.clone(),
        actor: actor.to_owned(),
        at: idstream_core::event::rfc3339_us(now_us()),
    }
}

const KIND: &str = "`document`, `phone`, `email` or `face`";

/// A value's normal form and its keyed hash (the entry id), or why it cannot be one.
fn normalised(
    st: &AppState,
    kind: BlocklistKind,
    value: &str,
    country: Option<&str>,
) -> Result<(String, String), ApiError> {
    if country.is_some() && kind != BlocklistKind::Document {
        return Err(ApiError::bad_request("invalid_body", "`issuing_country` applies to the document blocklist only"));
    }
    let invalid = |m| ApiError::bad_request("invalid_value", m);
    let normal = crate::decide::normalize::normal_form(kind.as_str(), value, country).map_err(invalid)?;
    let hash = st.hash_key.normal_hash(kind.as_str(), &normal);
    Ok((normal, hash))
}

/// Shows the normal form a value would be stored as (its keyed hash), whether it is already
/// listed, and how many open reviews used it, without storing anything: the check before an
/// addition.
#[utoipa::path(
    post,
    path = "/v1/blocklists/{kind}/preview",
    operation_id = "preview_blocklist_entry",
    tag = "blocklists",
    params(("kind" = String, Path, description = KIND), TenantParam),
    request_body = PreviewBlock,
    security(("api_key" = [])),
    responses((status = 200, body = BlockPreview), BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn preview(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
    ApiJson(b): ApiJson<PreviewBlock>,
) -> Result<Json<BlockPreview>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let kind = kind_of(&kind)?;
    let (normal_form, id) = normalised(&st, kind, &b.value, b.issuing_country.as_deref())?;
    let listed = st.store.block(&tenant, kind, &id).await?.is_some();
    let open_sessions = st.store.open_sessions_with(&tenant, kind, &id).await?.len();
    Ok(Json(BlockPreview { kind, normal_form, id, listed, open_sessions }))
}

/// The entries of one blocklist, newest first.
#[utoipa::path(
    get,
    path = "/v1/blocklists/{kind}",
    operation_id = "list_blocklist",
    tag = "blocklists",
    params(("kind" = String, Path, description = KIND), ListParams),
    security(("api_key" = [])),
    responses((status = 200, body = BlockList), BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<BlockList>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let kind = kind_of(&kind)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_parameter", "`limit` must be an integer from 1 to 10000"));
    }
    let entries = st.store.blocks(&tenant, kind, limit).await?.into_iter().map(BlockView::from).collect();
    Ok(Json(BlockList { tenant, kind, entries }))
}

/// Adds a value to a blocklist; `recheck` declines sessions with an open review that used it.
#[utoipa::path(
    post,
    path = "/v1/blocklists/{kind}",
    operation_id = "add_to_blocklist",
    tag = "blocklists",
    params(("kind" = String, Path, description = KIND), TenantParam),
    request_body = NewBlock,
    security(("api_key" = [])),
    responses((status = 201, body = BlockAdded), BadRequest, Unauthorized, Forbidden, NotFound, Unavailable, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn add(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
    ApiJson(b): ApiJson<NewBlock>,
) -> Result<(StatusCode, Json<BlockAdded>), ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let kind = kind_of(&kind)?;
    let (_, hash) = normalised(&st, kind, &b.value, b.issuing_country.as_deref())?;
    let rec = BlockRecord {
        tenant: tenant.clone(),
        kind,
        hash: hash.clone(),
        reason: b.reason.clone(),
        added_by: caller.name.clone(),
        added_at_us: now_us(),
    };
    st.store
        .commit(Txn {
            entries: vec![OwnEvent::BlocklistAdded(changed(&rec, &caller.name)).to_entry()],
            ops: vec![Op::AddBlock(rec.clone())],
        })
        .await?;
    let mut rechecked = Vec::new();
    if b.recheck {
        let actor = format!("blocklist:{}", caller.name);
        let reason = format!("blocklist.{}", kind.as_str());
        // Sessions observed with this entry's own hash: for a document added with its issuing
        // country, only that country's document (sessions decided before both hashes were
        // observed are matched by the country-independent hash only, so are not re-checked).
        for r in st.store.open_sessions_with(&tenant, kind, &hash).await? {
            match crate::decide::review::resolve(
                st.store.as_ref(),
                &r,
                &actor,
                idstream_rules::Outcome::Decline,
                &reason,
                "value added to the blocklist",
                true,
            )
            .await
            {
                Ok((d, _)) => {
                    rechecked.push(Rechecked { session_id: r.session_id, review_id: r.id, decision_id: d.id })
                }
                // Resolved by an analyst meanwhile: their decision stands.
                Err(TxnError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((StatusCode::CREATED, Json(BlockAdded { entry: rec.into(), rechecked })))
}

/// Removes an entry.
#[utoipa::path(
    delete,
    path = "/v1/blocklists/{kind}/{id}",
    operation_id = "remove_from_blocklist",
    tag = "blocklists",
    params(("kind" = String, Path, description = KIND), ("id" = String, Path, description = "The entry's id"), TenantParam),
    security(("api_key" = [])),
    responses((status = 200, body = BlockRemoved), BadRequest, Unauthorized, Forbidden, NotFound, Unavailable, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn remove(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<BlockRemoved>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let kind = kind_of(&kind)?;
    let rec = BlockRecord {
        tenant: tenant.clone(),
        kind,
        hash: id.clone(),
        reason: None,
        added_by: caller.name.clone(),
        added_at_us: now_us(),
    };
    st.store
        .commit(Txn {
            entries: vec![OwnEvent::BlocklistRemoved(changed(&rec, &caller.name)).to_entry()],
            ops: vec![Op::RemoveBlock { tenant, kind, hash: id.clone() }],
        })
        .await?;
    Ok(Json(BlockRemoved { removed: id }))
}
