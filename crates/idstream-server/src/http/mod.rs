//! The HTTP edge: the router, the OpenAPI contract generated from the handlers, and what every
//! request goes through (request ids, JSON errors for unknown routes and methods).
//!
//! Handlers are grouped by resource, one module each; every route is registered through
//! [`api_router`] with its `#[utoipa::path]`, so a route cannot exist without its entry in the
//! contract (`GET /openapi.json`, committed as `docs/openapi.json`).

pub mod authz;
pub mod backtests;
pub mod blocklists;
pub mod dashboard;
pub mod decisions;
pub mod documents;
pub mod endpoints;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod keys;
pub mod limits;
pub mod oidc;
pub mod reviews;
pub mod rulesets;
pub mod search;
pub mod sessions;
pub mod stats;
pub mod subjects;
pub mod system;
pub mod users;
pub mod verifications;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tracing::Instrument as _;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The header carrying a request's id, in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "idstream",
        description = "Self-hosted real-time identity event platform: signed webhook ingest, a durable \
            event log, decisions, review cases, blocklists, live streams. Every answer carries \
            `x-request-id`; every error is `{\"error\": code, \"message\": text}`. Events in the log \
            are documented by `docs/events.schema.json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(ErrorBody, crate::events::LogEvent)),
    tags(
        (name = "webhooks", description = "Provider webhooks (signed by the provider, not by an API key)"),
        (name = "events", description = "The event log"),
        (name = "decisions", description = "Decisions and sessions"),
        (name = "subjects", description = "The company's own data about its users, read by rules"),
        (name = "rulesets", description = "Decision rulesets and backtests"),
        (name = "blocklists", description = "Blocked documents, phones, emails and faces (keyed hashes)"),
        (name = "reviews", description = "Manual review cases"),
        (name = "streams", description = "Live WebSocket and Server-Sent Events streams (JWT)"),
        (name = "access", description = "API keys, users, logins (README \"Access\" has the role × endpoint matrix)"),
        (name = "system", description = "Health, readiness, metrics and this contract"),
        (name = "dashboard", description = "The analyst dashboard's page and files (README \"Dashboard\")"),
        (name = "verifications", description = "Hosted verification sessions started with the provider"),
        (name = "notifications", description = "Outbound notifications: endpoints, deliveries, replay (README \"Notifications\")")
    )
)]
struct ApiDoc;

/// The security schemes: API keys for the REST API, JWTs for streams.
struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer <key>` (`idstream apikey new`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "idstream_session",
                "A login session (POST /v1/auth/login); calls that change something also send its CSRF token as `X-CSRF-Token`",
            ))),
        );
        // Every call an API key may make, a login session may make too.
        for item in api.paths.paths.values_mut() {
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
            {
                let Some(security) = op.security.as_mut() else { continue };
                let text = serde_json::to_string(&*security).unwrap_or_default();
                if text.contains("\"api_key\"") && !text.contains("\"session\"") {
                    security.push(SecurityRequirement::new("session", Vec::<String>::new()));
                }
            }
        }
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "stream_token",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A stream token (JWT with `tenant` and `kinds` claims) as `Authorization: Bearer`, \
                         the `token` query parameter, or the WebSocket's first message",
                    ))
                    .build(),
            ),
        );
    }
}

/// Error answers shared by many endpoints, each a documented response with the error body.
/// (Only their OpenAPI description is used; handlers answer with [`ApiError`].)
#[allow(dead_code)]
pub mod responses {
    use super::*;

    #[derive(IntoResponses)]
    #[response(
        status = 400,
        description = "A bad or unknown parameter or body field (`invalid_parameter`, `invalid_body`, `tenant_required`, ...); the message names it"
    )]
    pub struct BadRequest(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = 401,
        description = "No credentials (`missing_api_key`), an unknown or revoked key (`invalid_api_key`), or an ended login session (`session_expired`)"
    )]
    pub struct Unauthorized(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = 403,
        description = "The caller's role cannot do this (`forbidden`: \"role viewer cannot …\"), it acts for another tenant (`wrong_tenant`), or a cookie call lacks its CSRF token (`csrf_token_invalid`)"
    )]
    pub struct Forbidden(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = 429,
        description = "Rate-limited (`rate_limited`): wait the `Retry-After` seconds",
        headers(
            ("retry-after" = u64, description = "Seconds to wait"),
            ("ratelimit-limit" = u32, description = "The bucket's size"),
            ("ratelimit-remaining" = u32, description = "Requests left now"),
            ("ratelimit-reset" = u64, description = "Seconds until the bucket is full again")
        )
    )]
    pub struct TooManyRequests(ErrorBody);

    #[derive(IntoResponses)]
    #[response(status = 404, description = "No such object for this tenant (another tenant's answers the same)")]
    pub struct NotFound(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = 409,
        description = "The change conflicts with the object's state (`conflict`); the message says why"
    )]
    pub struct Conflict(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = 422,
        description = "The ruleset does not validate (`invalid_ruleset`); `errors` lists each at its line and column"
    )]
    pub struct InvalidRuleset(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = 422,
        description = "The ruleset (`invalid_ruleset`) or the cases document (`invalid_cases`) does not parse; `errors` lists each at its line and column"
    )]
    pub struct InvalidRulesTest(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = 503,
        description = "The event log or the store cannot take the change now (`log_unavailable`, `store_unavailable`); nothing was changed, retry later"
    )]
    pub struct Unavailable(ErrorBody);

    #[derive(IntoResponses)]
    #[response(
        status = "5XX",
        description = "A server-side failure: the log or the store is unavailable (`log_unavailable`, `store_unavailable`) or an internal error; the cause is logged with the request id, never sent"
    )]
    pub struct ServerError(ErrorBody);
}

/// Every documented route, with its handler.
pub fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::ingest::webhook))
        .routes(routes!(events::list))
        .routes(routes!(events::get))
        .routes(routes!(events::body))
        .routes(routes!(decisions::get))
        .routes(routes!(sessions::get))
        .routes(routes!(search::search))
        .routes(routes!(stats::stats))
        .routes(routes!(subjects::get, subjects::put))
        .routes(routes!(rulesets::list, rulesets::upload))
        .routes(routes!(rulesets::get))
        .routes(routes!(rulesets::activate))
        .routes(routes!(rulesets::validate))
        .routes(routes!(rulesets::test))
        .routes(routes!(blocklists::list, blocklists::add))
        .routes(routes!(blocklists::remove))
        .routes(routes!(blocklists::preview))
        .routes(routes!(reviews::list))
        .routes(routes!(reviews::get))
        .routes(routes!(reviews::claim))
        .routes(routes!(reviews::resolve))
        .routes(routes!(reviews::release))
        .routes(routes!(reviews::reassign))
        .routes(routes!(reviews::escalate))
        .routes(routes!(reviews::resubmit))
        .routes(routes!(backtests::run))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::login))
        .routes(routes!(users::logout))
        .routes(routes!(users::me))
        .routes(routes!(oidc::login))
        .routes(routes!(oidc::callback))
        .routes(routes!(crate::stream::ws::handler))
        .routes(routes!(crate::stream::sse::handler))
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi_json))
        .routes(routes!(dashboard::stream_token))
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::asset))
        .routes(routes!(verifications::create))
        .routes(routes!(verifications::get))
        .routes(routes!(documents::upload))
        .routes(routes!(documents::get))
        .routes(routes!(endpoints::list, endpoints::create))
        .routes(routes!(endpoints::get, endpoints::update, endpoints::delete))
        .routes(routes!(endpoints::deliveries))
        .routes(routes!(endpoints::replay))
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The router of every route, with request ids and JSON answers for unknown routes and methods.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = api_router().split_for_parts();
    router
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::idempotent))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authz::authorize))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Whether a caller's request id is safe to adopt (it ends up in our logs and answers).
fn sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Gives every request an id (the caller's `x-request-id` when present and sane, else a new
/// UUIDv7), runs it inside a span carrying that id (so every log line of the request names it),
/// and echoes the id on the answer.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // The route's template, never the path itself (paths carry subject and session ids).
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), route = %route);
    let mut resp = next.run(req).instrument(span).await;
    resp.headers_mut().insert(REQUEST_ID, HeaderValue::from_str(&id).expect("sane ids are valid header values"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_adopted_only_when_sane() {
        for ok in ["abc", "0193-ab_cd.ef:1", &"a".repeat(128)] {
            assert!(sane_request_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a\nb", "é", &"a".repeat(129), "<script>"] {
            assert!(!sane_request_id(bad), "{bad:?}");
        }
    }
}
