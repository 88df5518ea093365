//! The analyst dashboard: static files compiled into the binary (no CDN, no build step), served
//! at `/` with a strict Content-Security-Policy, and the stream tokens its pages use
//! (`POST /v1/stream/token`).
//!
//! The page itself is plain JavaScript modules and CSS under `crates/idstream-server/dashboard/`;
//! it talks only to this server's REST API (with the login session's cookie and CSRF token) and
//! to `GET /v1/stream` (with a token from [`stream_token`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, Caller};
use super::responses::{BadRequest, Forbidden, ServerError, TooManyRequests, Unauthorized};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::stream::auth::Claims;

/// What the dashboard's pages may load: only this origin's own scripts, styles and API; no
/// inline script or style, no frames, no plugins, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

const INDEX: &str = include_str!("../../dashboard/index.html");
/// The single sign-on link of the login form, hidden unless `[auth.oidc]` is configured.
const SSO_HIDDEN: &str = r#"href="/v1/auth/oidc/login" hidden>"#;
/// The page with that link shown.
static INDEX_SSO: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| INDEX.replace(SSO_HIDDEN, r#"href="/v1/auth/oidc/login">"#));

/// The files under `/assets/`: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/api.js")),
    ("feed.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/feed.js")),
    ("screens.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/screens.js")),
    ("overview.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/overview.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../dashboard/app.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../../dashboard/favicon.svg")),
];

/// The first-load size of the page (HTML + every asset), in bytes.
pub fn first_load_bytes() -> usize {
    INDEX.len() + ASSETS.iter().map(|(_, _, body)| body.len()).sum::<usize>()
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Revalidate every time: the files change with the binary, not with a hashed name.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn disabled() -> ApiError {
    ApiError::not_found("dashboard_disabled", "the dashboard is turned off (`dashboard.enabled = false`)")
}

/// The dashboard's page (log in, then the live feed, review queue, sessions, blocklists, rules).
#[utoipa::path(
    get,
    path = "/",
    operation_id = "dashboard",
    tag = "dashboard",
    responses(
        (status = 200, content_type = "text/html", body = String, description = "The page, with a strict Content-Security-Policy",
         headers(("content-security-policy" = String, description = "Only this origin's own scripts, styles and API"))),
        (status = 404, body = ErrorBody, description = "The dashboard is turned off (`dashboard_disabled`)")
    )
)]
pub async fn index(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if !st.dashboard.enabled {
        return Err(disabled());
    }
    let body = if st.oidc.is_some() { INDEX_SSO.as_str() } else { INDEX };
    Ok(page("text/html; charset=utf-8", body))
}

/// The dashboard's scripts, styles and icon (compiled into the binary).
#[utoipa::path(
    get,
    path = "/assets/{file}",
    operation_id = "dashboard_asset",
    tag = "dashboard",
    params(("file" = String, Path, description = "`app.js`, `app.css`, ...")),
    responses(
        (status = 200, content_type = "text/javascript", body = String, description = "The file (JavaScript, CSS or SVG)"),
        (status = 404, body = ErrorBody, description = "No such file (`asset_not_found`), or the dashboard is turned off (`dashboard_disabled`)")
    )
)]
pub async fn asset(State(st): State<Arc<AppState>>, Path(file): Path<String>) -> Result<Response, ApiError> {
    if !st.dashboard.enabled {
        return Err(disabled());
    }
    let (_, ct, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::not_found("asset_not_found", "no such dashboard file"))?;
    Ok(page(ct, body))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The tenant to stream (only for an identity of every tenant; default: the caller's own).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A short-lived stream token.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamToken {
    /// An HS256 JWT for `GET /v1/stream` / `GET /v1/stream/sse` (claims `sub`, `tenant`,
    /// `kinds` = `["*"]`, `exp`).
    pub token: String,
    pub tenant: String,
    /// Unix seconds when it ends (never after the login session).
    pub expires_at: u64,
    /// Seconds it lives: ask for the next one before then.
    pub expires_in_secs: u64,
}

/// A short-lived stream token for the caller's tenant (`dashboard.stream_token_ttl_secs`, never
/// beyond the login session), signed with the first `stream.hs256_secrets` entry or, when
/// `[stream]` has none, with idstream's own key.
#[utoipa::path(
    post,
    path = "/v1/stream/token",
    operation_id = "stream_token",
    tag = "streams",
    request_body(content = Option<TokenRequest>, description = "Optional: `{\"tenant\": \"acme\"}` for an identity of every tenant"),
    security(("session" = []), ("api_key" = [])),
    responses(
        (status = 200, body = StreamToken, headers(("cache-control" = String, description = "no-store"))),
        BadRequest,
        Unauthorized,
        Forbidden,
        TooManyRequests,
        (status = 503, body = ErrorBody, description = "No signing key: the dashboard is off and `[stream]` has no HS256 secret (`stream_not_configured`)"),
        ServerError
    )
)]
pub async fn stream_token(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(b): ApiJson<TokenRequest>,
) -> Result<Response, ApiError> {
    let tenant = caller.acting_for(b.tenant.as_deref())?;
    let now = (crate::util::now_us() / 1_000_000) as u64;
    let mut exp = now + st.dashboard.stream_token_ttl_secs;
    if let Some(s) = &caller.session {
        exp = exp.min((s.expires_at_us / 1_000_000) as u64);
    }
    let claims = Claims {
        sub: caller.name.clone(),
        tenant: tenant.clone(),
        kinds: vec!["*".into()],
        exp,
        nbf: None,
        iat: Some(now),
    };
    let token = st
        .stream
        .sign(&claims)
        .map_err(|m| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stream_not_configured", m))?;
    let mut resp =
        Json(StreamToken { token, tenant, expires_at: exp, expires_in_secs: exp.saturating_sub(now) }).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        for (name, _, _) in ASSETS {
            assert!(!name.contains('/'), "{name}");
        }
        for needle in ["/assets/app.js", "/assets/app.css"] {
            assert!(INDEX.contains(needle), "index.html does not load {needle}");
        }
        // No inline script or style: the CSP would block them.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style=") && !INDEX.contains("<style"));
        // The single sign-on link is there, hidden, and the OIDC variant shows it.
        assert_eq!(INDEX.matches(SSO_HIDDEN).count(), 1);
        assert!(!INDEX_SSO.contains(SSO_HIDDEN) && INDEX_SSO.contains(r#"href="/v1/auth/oidc/login">"#));
        assert!(first_load_bytes() < 200_000);
    }
}
