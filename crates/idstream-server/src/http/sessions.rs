//! `GET /v1/sessions/{id}`: a verification session as idstream sees it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::decisions::DecisionView;
use super::extract::{ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized};
use super::reviews::ReviewView;
use crate::domain::SessionState;
use crate::error::ApiError;
use crate::events::{EventView, Shown};
use crate::log::ReadFilter;
use crate::state::AppState;
use crate::store::{ReviewFilter, SessionRecord};

/// `?tenant=`: the tenant a `*` key acts for (a tenant key may name only its own).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantParam {
    /// Required with a `*` key; a tenant key may omit it or name its own tenant.
    pub tenant: Option<String>,
}

/// A session: its state, decisions, review cases and event history.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub tenant: String,
    /// idstream's state of the session (null when only events were seen).
    pub state: Option<SessionState>,
    pub session: Option<SessionRecord>,
    pub decisions: Vec<DecisionView>,
    pub reviews: Vec<ReviewView>,
    /// Documents uploaded in this session (a document check), oldest first.
    pub documents: Vec<super::documents::DocumentView>,
    /// Other subjects sharing a document number, phone, email or face with this session (by
    /// keyed hash), newest first.
    pub linked: Vec<super::search::Seen>,
    /// The session's events in log order (without webhook bodies), at most 1000.
    #[schema(value_type = Vec<EventView>)]
    pub history: Vec<Shown>,
}

/// One session, with its decisions, review cases and event history.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "get_session",
    tag = "decisions",
    params(("id" = String, Path, description = "The provider's session id"), TenantParam),
    security(("api_key" = [])),
    responses((status = 200, body = SessionView), BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<SessionView>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let session = st.store.session(&tenant, &id).await?;
    let filter = ReadFilter { tenant: Some(tenant.clone()), partition_key: Some(id.clone()) };
    let events = st.log.read(0, 1000, &filter).await?;
    if session.is_none() && events.is_empty() {
        return Err(ApiError::not_found("session_not_found", format!("no session `{id}`")));
    }
    let decisions = st.store.session_decisions(&tenant, &id).await?;
    let reviews = st
        .store
        .reviews(ReviewFilter {
            tenant: Some(tenant.clone()),
            session_id: Some(id.clone()),
            limit: 100,
            ..Default::default()
        })
        .await?;
    let documents = super::documents::of_session(&st, &tenant, &id).await?;
    let linked = super::search::linked(&st, &tenant, &id).await?;
    Ok(Json(SessionView {
        session_id: id,
        tenant,
        state: session.as_ref().map(|s| s.state),
        session,
        decisions: decisions.into_iter().map(DecisionView::from).collect(),
        reviews: reviews.into_iter().map(ReviewView::from).collect(),
        documents,
        linked,
        history: events.iter().map(|e| Shown::of(e, false)).collect(),
    }))
}
