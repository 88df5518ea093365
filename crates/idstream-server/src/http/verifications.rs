//! `POST /v1/verifications` and `GET /v1/verifications/{session_id}`: start a hosted
//! verification with the tenant's provider account and follow it.
//!
//! Creating one calls the provider first; only when it answered is anything recorded — the
//! `session.created` event (and, with `expected_details`, the subject's `expected_*`
//! attributes with their `subject.updated`) in one transaction — and only then is the caller
//! answered. A provider that fails, times out or is paused by its circuit breaker gives 502 /
//! 504 and nothing is recorded. The hosted URL and token are returned to the caller and never
//! logged or written to the event log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use idstream_core::event::{Checks, DIDIT_RESULT_STATUSES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized};
use crate::domain::SessionState;
use crate::error::{ApiError, ErrorBody};
use crate::events::{IdentityEvent, LogEvent, OwnEvent, SessionCreated, SubjectUpdated};
use crate::log::ReadFilter;
use crate::provider::didit::{valid_session_id, CreateSession};
use crate::provider::reconcile::{store_polled, Recovered};
use crate::state::AppState;
use crate::store::{Op, Txn};
use crate::util::now_us;

// Only their OpenAPI description is used; the handlers answer with `ApiError`.
#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(
    status = 502,
    description = "The provider failed, refused the call, or its circuit breaker is open (`provider_unavailable`, `provider_rate_limited`, `provider_rejected`, `provider_circuit_open`, `provider_bad_response`); nothing was recorded"
)]
pub struct BadGateway(ErrorBody);

#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(
    status = 504,
    description = "The provider did not answer in time (`provider_timeout`); nothing was recorded"
)]
pub struct GatewayTimeout(ErrorBody);

/// `POST /v1/verifications`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVerification {
    /// Your user id; sent to Didit as `vendor_data` and back in every result.
    pub subject: String,
    /// A `[[providers]] id` of your tenant; default: its first.
    pub provider: Option<String>,
    /// Default: the provider account's `workflow_id`.
    pub workflow_id: Option<String>,
    /// Where the provider sends the user's browser when they are done (http(s) URL).
    pub callback: Option<String>,
    /// Your own data, returned in every result.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Didit `contact_details` (`email`, `phone`, ...).
    #[schema(value_type = Option<Object>)]
    pub contact_details: Option<Map<String, Value>>,
    /// What you expect the document to say (`first_name`, `last_name`, `date_of_birth`, ...):
    /// sent to Didit and stored as the subject's `expected_*` attributes for the rules.
    #[schema(value_type = Option<Object>)]
    pub expected_details: Option<Map<String, Value>>,
    /// The hosted page's language (ISO 639-1).
    pub language: Option<String>,
}

/// The created session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerificationCreated {
    pub session_id: String,
    /// The hosted verification page to send the user to.
    pub url: String,
    /// For the provider's SDKs (a bearer capability for this one session: keep it private).
    pub session_token: String,
    /// The provider's status (`Not Started`).
    pub status: String,
    pub provider: String,
    pub workflow_id: String,
}

/// The tenant a `*` key acts for.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// Required with a `*` key.
    pub tenant: Option<String>,
}

/// `GET /v1/verifications/{session_id}` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Required with a `*` key.
    pub tenant: Option<String>,
    /// Also ask the provider for the session's current decision (a result found this way and
    /// not yet stored is stored, like reconciliation does).
    #[serde(default)]
    pub refresh: bool,
}

/// The latest result stored for a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultView {
    pub event_id: String,
    pub offset: u64,
    /// The provider's status (`Approved`, `Declined`, `In Review`, ...).
    pub provider_status: Option<String>,
    /// `webhook`, or `poll` when reconciliation (or a refresh) fetched it.
    pub obtained_by: String,
}

/// The provider's current view (`?refresh=true`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    pub status: String,
    pub checks: Checks,
    /// True when this refresh stored a result the webhooks had not brought.
    pub stored_now: bool,
}

/// A verification started through idstream.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationView {
    pub session_id: String,
    pub tenant: String,
    pub subject: String,
    pub provider: String,
    pub workflow_id: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// idstream's state of the session, once a result was decided.
    pub state: Option<SessionState>,
    pub outcome: Option<idstream_rules::Outcome>,
    pub decision_id: Option<String>,
    pub result: Option<ResultView>,
    pub provider_view: Option<ProviderView>,
}

fn check_create(body: &CreateVerification) -> Result<(), ApiError> {
    let subject_ok = (1..=200).contains(&body.subject.len()) && !body.subject.chars().any(char::is_control);
    if !subject_ok {
        return Err(ApiError::bad_request(
            "invalid_field",
            "`subject` must be 1 to 200 characters, no control characters",
        ));
    }
    if let Some(w) = &body.workflow_id {
        if w.is_empty() || w.len() > 100 {
            return Err(ApiError::bad_request("invalid_field", "`workflow_id` must be 1 to 100 characters"));
        }
    }
    if let Some(cb) = &body.callback {
        if !(cb.starts_with("https://") || cb.starts_with("http://")) || cb.len() > 2000 {
            return Err(ApiError::bad_request("invalid_field", "`callback` must be an http(s) URL"));
        }
    }
    if let Some(l) = &body.language {
        if !(2..=10).contains(&l.len()) || !l.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
            return Err(ApiError::bad_request("invalid_field", "`language` must be a language code such as `en`"));
        }
    }
    if let Some(d) = &body.expected_details {
        if let Some(k) = d.keys().find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("`expected_details` key `{k}` must use only letters, digits and `_`"),
            ));
        }
    }
    Ok(())
}

/// Starts a hosted verification: creates the session with the provider, records it
/// (`session.created`), and answers its URL.
#[utoipa::path(
    post,
    path = "/v1/verifications",
    operation_id = "create_verification",
    tag = "verifications",
    params(CreateParams),
    request_body = CreateVerification,
    security(("api_key" = [])),
    responses(
        (status = 201, body = VerificationCreated, description = "Created with the provider and recorded"),
        BadRequest, Unauthorized, Forbidden, TooManyRequests, BadGateway, GatewayTimeout,
        crate::http::responses::ServerError
    )
)]
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CreateParams>,
    ApiJson(body): ApiJson<CreateVerification>,
) -> Result<(StatusCode, Json<VerificationCreated>), ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    check_create(&body)?;
    let Some(client) = st.providers.for_tenant(&tenant, body.provider.as_deref()).cloned() else {
        return Err(ApiError::bad_request(
            "no_provider",
            match &body.provider {
                Some(p) => format!("tenant `{tenant}` has no provider account `{p}` (`[[providers]]`)"),
                None => format!("tenant `{tenant}` has no provider account configured (`[[providers]]`)"),
            },
        ));
    };
    let workflow_id = body.workflow_id.clone().unwrap_or_else(|| client.workflow_id.clone());
    let req = CreateSession {
        workflow_id: workflow_id.clone(),
        vendor_data: body.subject.clone(),
        callback: body.callback.clone(),
        metadata: body.metadata.clone().map(Value::Object),
        language: body.language.clone(),
        contact_details: body.contact_details.clone().map(Value::Object),
        expected_details: body.expected_details.clone().map(Value::Object),
    };
    let created = client.create_session(&req).await?;
    if !valid_session_id(&created.session_id) {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "provider_bad_response",
            "the provider answered an unusable session id; nothing was recorded",
        ));
    }

    let now = now_us();
    let at = idstream_core::event::rfc3339_us(now);
    let mut entries = vec![OwnEvent::SessionCreated(SessionCreated {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.clone(),
        session_id: created.session_id.clone(),
        subject: body.subject.clone(),
        provider: client.id.clone(),
        source: client.source.clone(),
        workflow_id: created.workflow_id.clone().unwrap_or_else(|| workflow_id.clone()),
        provider_status: created.status.clone(),
        actor: caller.name.clone(),
        at: at.clone(),
    })
    .to_entry()];
    let mut ops = Vec::new();
    if let Some(expected) = body.expected_details.as_ref().filter(|d| !d.is_empty()) {
        // Other attributes are kept; `expected_*` ones are replaced by this verification's.
        let mut attributes = match st.store.subject(&tenant, &body.subject).await? {
            Some(s) => s.attributes.as_object().cloned().unwrap_or_default(),
            None => Map::new(),
        };
        for (k, v) in expected {
            attributes.insert(format!("expected_{k}"), v.clone());
        }
        entries.push(
            OwnEvent::SubjectUpdated(SubjectUpdated {
                id: uuid::Uuid::now_v7().to_string(),
                tenant: tenant.clone(),
                subject: body.subject.clone(),
                attributes: expected.keys().map(|k| format!("expected_{k}")).collect(),
                actor: caller.name.clone(),
                at,
            })
            .to_entry(),
        );
        ops.push(Op::PutSubject {
            tenant: tenant.clone(),
            id: body.subject.clone(),
            attributes: Value::Object(attributes),
            actor: caller.name.clone(),
            now_us: now,
        });
    }
    st.store.commit(Txn { entries, ops }).await?;
    tracing::info!(provider = %client.id, session_id = %created.session_id, "verification session created");
    Ok((
        StatusCode::CREATED,
        Json(VerificationCreated {
            session_id: created.session_id,
            url: created.url,
            session_token: created.session_token,
            status: created.status,
            provider: client.id.clone(),
            workflow_id: created.workflow_id.unwrap_or(workflow_id),
        }),
    ))
}

/// A verification started through idstream: how it was created, the latest result stored for
/// it and idstream's decision; with `?refresh=true` also the provider's current view.
#[utoipa::path(
    get,
    path = "/v1/verifications/{session_id}",
    operation_id = "get_verification",
    tag = "verifications",
    params(("session_id" = String, Path, description = "The provider's session id"), GetParams),
    security(("api_key" = [])),
    responses(
        (status = 200, body = VerificationView),
        BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, BadGateway, GatewayTimeout,
        crate::http::responses::ServerError
    )
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(session_id): Path<String>,
    ApiQuery(q): ApiQuery<GetParams>,
) -> Result<Json<VerificationView>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let not_found = || {
        ApiError::not_found(
            "verification_not_found",
            format!("no verification `{session_id}` was started through idstream (see GET /v1/sessions/{{id}})"),
        )
    };
    if !valid_session_id(&session_id) {
        return Err(not_found());
    }
    let filter = ReadFilter { tenant: Some(tenant.clone()), partition_key: Some(session_id.clone()) };
    let entries = st.log.read(0, 1000, &filter).await?;
    let mut created: Option<SessionCreated> = None;
    let mut result: Option<(IdentityEvent, u64)> = None;
    for e in &entries {
        match LogEvent::from_entry(e) {
            Ok(LogEvent::Own(OwnEvent::SessionCreated(s))) => created = created.or(Some(s)),
            Ok(LogEvent::Provider(p))
                if p.provider_status.as_deref().is_some_and(|s| DIDIT_RESULT_STATUSES.contains(&s)) =>
            {
                result = Some((p, e.offset));
            }
            _ => {}
        }
    }
    let created = created.ok_or_else(not_found)?;
    let mut provider_view = None;
    if q.refresh {
        let client = st.providers.get(&created.provider).cloned().ok_or_else(|| {
            ApiError::bad_request(
                "no_provider",
                format!("provider account `{}` is no longer configured", created.provider),
            )
        })?;
        let decision = client.get_decision(&session_id).await?;
        let stored_now = matches!(store_polled(st.log.as_ref(), &client, &decision).await?, Recovered::Stored(_));
        let body = decision.get("decision").filter(|d| d.is_object()).unwrap_or(&decision);
        provider_view = Some(ProviderView {
            status: decision["status"].as_str().unwrap_or_default().to_owned(),
            checks: idstream_core::event::didit_checks(body),
            stored_now,
        });
    }
    let session = st.store.session(&tenant, &session_id).await?;
    Ok(Json(VerificationView {
        session_id: created.session_id,
        tenant,
        subject: created.subject,
        provider: created.provider,
        workflow_id: created.workflow_id,
        created_at: created.at,
        state: session.as_ref().map(|s| s.state),
        outcome: session.as_ref().and_then(|s| s.outcome),
        decision_id: session.and_then(|s| s.decision_id),
        result: result.map(|(p, offset)| ResultView {
            event_id: p.id,
            offset,
            provider_status: p.provider_status,
            obtained_by: if p.signature == idstream_core::signature::Scheme::DiditApi { "poll" } else { "webhook" }
                .into(),
        }),
        provider_view,
    }))
}
