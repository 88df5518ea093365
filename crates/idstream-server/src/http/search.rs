//! `GET /v1/search`: the sessions and subjects where an identity value was seen — a document
//! number, phone, email or face id — matched by its keyed hash (the value itself is never
//! stored); and the subjects a session shares values with (`GET /v1/sessions/{id}` `linked`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, TooManyRequests, Unauthorized};
use crate::domain::BlocklistKind;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{IdentityQuery, Observation};

/// `GET /v1/search` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// `document`, `phone`, `email` or `face`.
    pub kind: String,
    /// The value as you have it (normalised like the blocklists: a document number's spaces and
    /// dashes, a phone's formatting and an email's case do not matter).
    pub value: String,
    /// 1–1000 (default 100).
    pub limit: Option<usize>,
    /// Required with a `*` key.
    pub tenant: Option<String>,
}

/// One place a value was seen.
#[derive(Debug, Serialize, ToSchema)]
pub struct Seen {
    pub kind: BlocklistKind,
    pub session_id: String,
    pub subject: String,
    /// RFC 3339 UTC.
    pub seen_at: String,
}

impl From<Observation> for Seen {
    fn from(o: Observation) -> Seen {
        Seen {
            kind: o.kind,
            session_id: o.session_id,
            subject: o.subject,
            seen_at: idstream_core::event::rfc3339_us(o.seen_at_us),
        }
    }
}

/// Where a value was seen, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub kind: BlocklistKind,
    /// The value's keyed hash (what the blocklists and velocity use).
    pub hash: String,
    /// How many different subjects.
    pub subjects: usize,
    pub seen: Vec<Seen>,
}

/// Sessions and subjects where a document number, phone, email or face id was seen, matched by
/// its keyed hash.
#[utoipa::path(
    get,
    path = "/v1/search",
    operation_id = "search_identity",
    tag = "decisions",
    params(SearchParams),
    security(("api_key" = [])),
    responses((status = 200, body = SearchResult), BadRequest, Unauthorized, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn search(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SearchParams>,
) -> Result<Json<SearchResult>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let kind = BlocklistKind::ALL
        .into_iter()
        .find(|k| k.as_str() == q.kind)
        .ok_or_else(|| ApiError::bad_request("invalid_parameter", "`kind` must be document, phone, email or face"))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_parameter", "`limit` must be an integer from 1 to 1000"));
    }
    let hash =
        st.hash_key.value_hash(kind.as_str(), &q.value, None).map_err(|m| ApiError::bad_request("invalid_value", m))?;
    let seen = st
        .store
        .identities(IdentityQuery { tenant, kind: Some(kind), hash: Some(hash.clone()), session_id: None, limit })
        .await?;
    let subjects = seen.iter().map(|o| o.subject.as_str()).collect::<std::collections::HashSet<_>>().len();
    Ok(Json(SearchResult { kind, hash, subjects, seen: seen.into_iter().map(Seen::from).collect() }))
}

/// Other subjects that share an identity value with the session (at most 50 per value).
pub async fn linked(st: &AppState, tenant: &str, session_id: &str) -> Result<Vec<Seen>, ApiError> {
    let mine = st
        .store
        .identities(IdentityQuery {
            tenant: tenant.to_owned(),
            session_id: Some(session_id.to_owned()),
            limit: 20,
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    // A document is observed twice (with and without its country): one row per session.
    let mut shown = std::collections::HashSet::new();
    for o in &mine {
        let others = st
            .store
            .identities(IdentityQuery {
                tenant: tenant.to_owned(),
                kind: Some(o.kind),
                hash: Some(o.hash.clone()),
                session_id: None,
                limit: 50,
            })
            .await?;
        for x in others {
            if x.subject != o.subject && shown.insert((x.kind, x.session_id.clone())) {
                out.push(Seen::from(x));
            }
        }
    }
    Ok(out)
}
