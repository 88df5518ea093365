//! OpenID Connect login (authorization code + PKCE) against the issuer in `[auth.oidc]`.
//!
//! `GET /v1/auth/oidc/login` sends the browser to the issuer with a fresh state, nonce and PKCE
//! challenge, remembered in a short-lived cookie MACed under the installation key (so the
//! callback may reach any node); `GET /v1/auth/oidc/callback` checks the state, exchanges the
//! code (with the PKCE verifier), verifies the ID token (signature, issuer, audience, expiry,
//! nonce) with the `openidconnect` crate, maps its claims to a username, tenant and role, and
//! opens the same server-side session a password login opens. Tokens are never logged or kept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq as _;

use crate::access::users::{self, Login};
use crate::config::OidcConfig;
use crate::domain::Role;
use crate::error::ApiError;
use crate::state::AppState;
use crate::util::unix_now;

/// The cookie holding the login attempt's state, nonce and PKCE verifier.
const STATE_COOKIE: &str = "idstream_oidc";
/// How long a login attempt may take at the issuer.
const ATTEMPT_SECS: u64 = 600;
/// How long the issuer's discovery document is cached.
const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// The issuer's metadata, fetched at the first login and cached.
#[derive(Default)]
pub struct OidcCache(Mutex<Option<(Instant, CoreProviderMetadata)>>);

#[derive(Serialize, Deserialize)]
struct Attempt {
    state: String,
    nonce: String,
    verifier: String,
    exp: i64,
}

fn http_client() -> Result<openidconnect::reqwest::Client, ApiError> {
    openidconnect::reqwest::ClientBuilder::new()
        // Following redirects would open the client to SSRF.
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| internal(format!("building the OIDC HTTP client: {e}")))
}

fn internal(what: String) -> ApiError {
    ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error", what)
}

fn config(st: &AppState) -> Result<&OidcConfig, ApiError> {
    st.oidc
        .as_ref()
        .ok_or_else(|| ApiError::not_found("oidc_not_configured", "OIDC login is not configured ([auth.oidc])"))
}

async fn metadata(
    st: &AppState,
    cfg: &OidcConfig,
    http: &openidconnect::reqwest::Client,
) -> Result<CoreProviderMetadata, ApiError> {
    if let Some((at, m)) = st.oidc_cache.0.lock().expect("oidc cache lock").as_ref() {
        if at.elapsed() < DISCOVERY_TTL {
            return Ok(m.clone());
        }
    }
    let issuer = IssuerUrl::new(cfg.issuer.clone()).map_err(|e| internal(format!("auth.oidc.issuer: {e}")))?;
    let m = CoreProviderMetadata::discover_async(issuer, http).await.map_err(|e| {
        tracing::warn!(error = %e, "OIDC discovery failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "oidc_unavailable",
            "the OIDC issuer could not be reached; try again later",
        )
    })?;
    *st.oidc_cache.0.lock().expect("oidc cache lock") = Some((Instant::now(), m.clone()));
    Ok(m)
}

fn seal(st: &AppState, a: &Attempt) -> String {
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(a).expect("serialises"));
    let mac = st.hash_key.sign("oidc-state", &body);
    format!("{body}.{mac}")
}

fn open_sealed(st: &AppState, text: &str) -> Option<Attempt> {
    let (body, mac) = text.split_once('.')?;
    let want = st.hash_key.sign("oidc-state", body);
    if !bool::from(want.as_bytes().ct_eq(mac.as_bytes())) {
        return None;
    }
    let a: Attempt =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
    (a.exp > unix_now()).then_some(a)
}

fn state_cookie(st: &AppState, value: Option<&str>) -> HeaderValue {
    let secure = if st.secure_cookies { "; Secure" } else { "" };
    // Lax: the issuer sends the browser back with a top-level GET from another site.
    let text = match value {
        Some(v) => {
            format!("{STATE_COOKIE}={v}; Path=/v1/auth/oidc; HttpOnly; SameSite=Lax; Max-Age={ATTEMPT_SECS}{secure}")
        }
        None => format!("{STATE_COOKIE}=; Path=/v1/auth/oidc; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).expect("cookie values are URL-safe")
}

/// Starts an OIDC login: redirects to the issuer.
#[utoipa::path(
    get,
    path = "/v1/auth/oidc/login",
    operation_id = "oidc_login",
    tag = "access",
    responses(
        (status = 303, description = "To the issuer's authorization endpoint", headers(("location" = String))),
        (status = 404, body = crate::error::ErrorBody, description = "OIDC is not configured (`oidc_not_configured`)"),
        (status = 502, body = crate::error::ErrorBody, description = "The issuer could not be reached (`oidc_unavailable`)"),
        crate::http::responses::ServerError
    )
)]
pub async fn login(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let cfg = config(&st)?;
    let http = http_client()?;
    let client = client(cfg, metadata(&st, cfg, &http).await?)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req =
        client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
    for s in cfg.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    let attempt = Attempt {
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        exp: unix_now() + ATTEMPT_SECS as i64,
    };
    let mut resp = Redirect::to(url.as_str()).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, state_cookie(&st, Some(&seal(&st, &attempt))));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

type Client = openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn client(cfg: &OidcConfig, m: CoreProviderMetadata) -> Result<Client, ApiError> {
    let redirect =
        RedirectUrl::new(cfg.redirect_url.clone()).map_err(|e| internal(format!("auth.oidc.redirect_url: {e}")))?;
    Ok(CoreClient::from_provider_metadata(
        m,
        ClientId::new(cfg.client_id.clone()),
        Some(ClientSecret::new(cfg.client_secret.expose().to_owned())),
    )
    .set_redirect_uri(redirect))
}

/// The issuer's answer.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Finishes an OIDC login: verifies the issuer's answer and opens a session.
#[utoipa::path(
    get,
    path = "/v1/auth/oidc/callback",
    operation_id = "oidc_callback",
    tag = "access",
    params(Callback),
    responses(
        (status = 200, description = "Logged in: the session cookie is set and the page continues to the dashboard", content_type = "text/html", body = String),
        (status = 400, body = crate::error::ErrorBody, description = "The answer does not match a login started here (`oidc_state_invalid`), or the issuer refused (`oidc_refused`)"),
        (status = 403, body = crate::error::ErrorBody, description = "The account is disabled, or its claims map to no role (`oidc_no_role`)"),
        (status = 404, body = crate::error::ErrorBody, description = "OIDC is not configured (`oidc_not_configured`)"),
        (status = 502, body = crate::error::ErrorBody, description = "The issuer could not be reached or its token was invalid (`oidc_unavailable`, `oidc_token_invalid`)"),
        crate::http::responses::ServerError
    )
)]
pub async fn callback(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Result<Response, ApiError> {
    let cfg = config(&st)?;
    if let Some(err) = q.error {
        let why = q.error_description.unwrap_or_default();
        return Err(ApiError::bad_request(
            "oidc_refused",
            format!("the issuer refused the login: {err} {why}").trim_end().to_owned(),
        ));
    }
    let invalid = || {
        ApiError::bad_request(
            "oidc_state_invalid",
            "this answer does not match a login started here: start again at /v1/auth/oidc/login",
        )
    };
    let attempt =
        super::authz::cookie(&headers, STATE_COOKIE).and_then(|c| open_sealed(&st, &c)).ok_or_else(invalid)?;
    let state = q.state.ok_or_else(invalid)?;
    if !bool::from(state.as_bytes().ct_eq(attempt.state.as_bytes())) {
        return Err(invalid());
    }
    let code = q.code.ok_or_else(invalid)?;
    let http = http_client()?;
    let client = client(cfg, metadata(&st, cfg, &http).await?)?;
    let token_invalid = |what: String| {
        tracing::warn!(error = %what, "OIDC token exchange or verification failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "oidc_token_invalid",
            "the issuer's token could not be verified; try again",
        )
    };
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| token_invalid(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(attempt.verifier))
        .request_async(&http)
        .await
        .map_err(|e| token_invalid(e.to_string()))?;
    let id_token = tokens.id_token().ok_or_else(|| token_invalid("no ID token".into()))?;
    let verified = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(attempt.nonce))
        .map_err(|e| token_invalid(e.to_string()))?;
    let subject = format!("{}#{}", cfg.issuer, verified.subject().as_str());
    // The verified token's own claims, for the configured ones the standard types do not hold.
    let raw = serde_json::to_value(id_token).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let claims: Value = raw
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let user = oidc_user(&st, cfg, &subject, &claims).await?;
    let resp = match users::open_session(st.store.as_ref(), &st.login_policy, user, "access.logged_in").await? {
        Login::Ok { cookie, session, .. } => {
            let max_age = (session.expires_at_us - session.created_at_us) / 1_000_000;
            // A page, not a redirect: the session cookie is SameSite=Strict, which a redirect
            // chain that began at the issuer would not carry.
            let mut resp = Html(
                "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url=/\"><title>Logged in</title><a href=\"/\">Continue</a>",
            )
            .into_response();
            let h = resp.headers_mut();
            h.append(header::SET_COOKIE, crate::http::users::session_cookie(&st, Some((&cookie, max_age))));
            h.append(header::SET_COOKIE, state_cookie(&st, None));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        _ => return Err(ApiError::forbidden("account_disabled", "this account is disabled: ask an admin")),
    };
    Ok(resp)
}

/// The account of an OIDC identity: found by issuer + subject, or made at its first login. Its
/// role follows the claims at every login.
async fn oidc_user(
    st: &AppState,
    cfg: &OidcConfig,
    subject: &str,
    claims: &Value,
) -> Result<crate::store::access::UserRecord, ApiError> {
    let role = role_of(cfg, claims).ok_or_else(|| {
        ApiError::forbidden(
            "oidc_no_role",
            "your identity provider's claims give you no role in idstream: ask an admin",
        )
    })?;
    let tenant = match (&cfg.tenant_claim, &cfg.tenant) {
        (Some(c), _) if claims[c].is_string() => claims[c].as_str().unwrap_or_default().to_owned(),
        (_, Some(t)) => t.clone(),
        _ => return Err(ApiError::forbidden("oidc_no_tenant", "your identity provider's claims name no tenant")),
    };
    let username = claims[&cfg.username_claim].as_str().unwrap_or_default().to_owned();
    if !crate::access::valid_name(&username) || !crate::access::valid_tenant(&tenant) {
        return Err(ApiError::forbidden(
            "oidc_claims_invalid",
            format!("the `{}` claim must be a username of letters, digits, `-`, `_`, `.` or `@`", cfg.username_claim),
        ));
    }
    if let Some(user) = st.store.user_by_oidc_subject(subject).await? {
        if user.disabled {
            return Err(ApiError::forbidden("account_disabled", "this account is disabled: ask an admin"));
        }
        if user.role != role {
            let change = users::UserChange { role: Some(role), ..Default::default() };
            users::update_user(st.store.as_ref(), None, &user, change, "oidc").await?;
            return st.store.user(&user.id).await?.ok_or_else(|| internal("OIDC user vanished".into()));
        }
        return Ok(user);
    }
    if st.store.user_by_name(&username).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "a local account is already called `{username}`; ask an admin to rename one of them"
        )));
    }
    Ok(users::create_user(st.store.as_ref(), &tenant, &username, role, None, Some(subject.to_owned()), "oidc").await?)
}

/// The role the claims map to: the role claim's value (or the first mapped one of a list) looked
/// up in `roles`, else the default role.
fn role_of(cfg: &OidcConfig, claims: &Value) -> Option<Role> {
    let mapped = cfg.role_claim.as_ref().and_then(|c| {
        let values: Vec<&str> = match &claims[c] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        values.into_iter().find_map(|v| cfg.roles.get(v).copied())
    });
    mapped.or(cfg.default_role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OidcConfig {
        let toml = "[auth.oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
            redirect_url = \"http://127.0.0.1:2/v1/auth/oidc/callback\"\ntenant = \"acme\"\nrole_claim = \"groups\"\n\
            roles = { \"kyc-admins\" = \"admin\", \"kyc\" = \"analyst\" }\n";
        crate::config::Config::from_toml(toml).unwrap().auth.oidc.unwrap()
    }

    #[test]
    fn claims_map_to_roles() {
        let c = cfg();
        assert_eq!(role_of(&c, &serde_json::json!({"groups": "kyc"})), Some(Role::Analyst));
        assert_eq!(role_of(&c, &serde_json::json!({"groups": ["other", "kyc-admins"]})), Some(Role::Admin));
        assert_eq!(role_of(&c, &serde_json::json!({"groups": ["other"]})), None);
        assert_eq!(role_of(&c, &serde_json::json!({})), None);
        let c = OidcConfig { default_role: Some(Role::Viewer), ..c };
        assert_eq!(role_of(&c, &serde_json::json!({})), Some(Role::Viewer));
    }
}
