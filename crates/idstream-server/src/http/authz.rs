//! Who may call what: the one table of every route's [`Action`], which roles each action
//! allows, and the middleware that enforces it on every request — authentication (API key or
//! login session), CSRF for cookie sessions, the role check, and rate limits.
//!
//! A route without an entry in [`ROUTES`] is refused (fail closed); a test checks that every
//! route of the OpenAPI document has one, and README's role × endpoint matrix is generated from
//! this table (`idstream schema access`). Add new endpoints here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::extract::Caller;
use super::limits::Class;
use crate::access::{sha256_hex, Identity, IdentityKind};
use crate::domain::Role;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::access::AccessOp;
use crate::store::{Op, Txn};
use crate::util::now_us;

/// The name of the login-session cookie.
pub const SESSION_COOKIE: &str = "idstream_session";
/// The header a cookie-authenticated state-changing call must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a route does, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No identity: webhooks (signed by the provider), health, metrics, the contract, streams
    /// (JWT), OIDC redirects.
    Public,
    /// Logging in (rate-limited per client IP).
    Login,
    /// Any authenticated identity, about itself (who am I, log out).
    Own,
    ReadEvents,
    ReadDecisions,
    ReadSubjects,
    WriteSubjects,
    ReadRulesets,
    /// Running test cases against a ruleset: a POST that stores nothing.
    TestRulesets,
    ManageRulesets,
    RunBacktests,
    ReadBlocklists,
    AddToBlocklist,
    RemoveFromBlocklist,
    ReadReviews,
    ActOnReviews,
    ReadKeys,
    ManageKeys,
    ReadUsers,
    ManageUsers,
    StartVerifications,
    ReadVerifications,
    ReadEndpoints,
    ManageEndpoints,
    ReadDocuments,
    ManageReviews,
}

use Role::{Admin as AD, Analyst as AN, Auditor as AU, PolicyAdmin as PA, Service as SV, Viewer as VW};

impl Action {
    /// The roles allowed to do it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Public | Action::Login | Action::Own => &[VW, AN, PA, AD, AU, SV],
            Action::ReadEvents | Action::ReadDecisions | Action::ReadSubjects => &[VW, AN, PA, AD, AU, SV],
            Action::WriteSubjects => &[AN, PA, AD, SV],
            Action::ReadRulesets | Action::TestRulesets | Action::ReadBlocklists | Action::ReadReviews => {
                &[VW, AN, PA, AD, AU]
            }
            Action::ManageRulesets | Action::RunBacktests | Action::RemoveFromBlocklist => &[PA, AD],
            Action::AddToBlocklist | Action::ActOnReviews => &[AN, PA, AD],
            Action::ReadKeys | Action::ReadUsers => &[AD, AU],
            Action::ManageKeys | Action::ManageUsers => &[AD],
            Action::StartVerifications | Action::ReadVerifications => &[AD, SV],
            Action::ReadEndpoints => &[AD, AU],
            Action::ManageEndpoints => &[AD],
            // Identity documents: those who review cases, and the back end that uploads them.
            Action::ReadDocuments => &[AN, AD, SV],
            Action::ManageReviews => &[AD],
        }
    }

    /// What a refused role cannot do, for the 403 message.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Public | Action::Login | Action::Own => "call this endpoint",
            Action::ReadEvents => "read events",
            Action::ReadDecisions => "read decisions and sessions",
            Action::ReadSubjects => "read subjects",
            Action::WriteSubjects => "change subject attributes",
            Action::ReadRulesets => "read rulesets",
            Action::TestRulesets => "run ruleset test cases",
            Action::ManageRulesets => "upload or activate rulesets",
            Action::RunBacktests => "run backtests",
            Action::ReadBlocklists => "read blocklists",
            Action::AddToBlocklist => "add blocklist entries",
            Action::RemoveFromBlocklist => "remove blocklist entries",
            Action::ReadReviews => "read review cases",
            Action::ActOnReviews => "claim or resolve review cases",
            Action::ReadKeys => "list API keys",
            Action::ManageKeys => "create or revoke API keys",
            Action::ReadUsers => "list users",
            Action::ManageUsers => "create or change users",
            Action::StartVerifications => "start verifications",
            Action::ReadVerifications => "read verifications",
            Action::ReadEndpoints => "read notification endpoints and deliveries",
            Action::ManageEndpoints => "create, change, replay or delete notification endpoints",
            Action::ReadDocuments => "read identity documents",
            Action::ManageReviews => "reassign review cases",
        }
    }

    fn class(self, method: &Method) -> Class {
        match self {
            Action::Login => Class::Login,
            Action::RunBacktests => Class::Backtest,
            _ if method == Method::GET || method == Method::HEAD => Class::Read,
            _ => Class::Write,
        }
    }
}

/// Every route: method, path template, action. The single place endpoints get permissions.
pub const ROUTES: &[(&str, &str, Action)] = &[
    ("POST", "/webhooks/{source_id}", Action::Public),
    ("GET", "/v1/events", Action::ReadEvents),
    ("GET", "/v1/events/{id}", Action::ReadEvents),
    ("GET", "/v1/events/{id}/body", Action::ReadEvents),
    ("GET", "/v1/decisions/{id}", Action::ReadDecisions),
    ("GET", "/v1/sessions/{id}", Action::ReadDecisions),
    ("GET", "/v1/search", Action::ReadDecisions),
    ("GET", "/v1/stats", Action::ReadDecisions),
    ("GET", "/v1/subjects/{id}", Action::ReadSubjects),
    ("PUT", "/v1/subjects/{id}", Action::WriteSubjects),
    ("GET", "/v1/rulesets", Action::ReadRulesets),
    ("POST", "/v1/rulesets", Action::ManageRulesets),
    ("GET", "/v1/rulesets/{version}", Action::ReadRulesets),
    ("POST", "/v1/rulesets/{version}/activate", Action::ManageRulesets),
    ("POST", "/v1/rulesets/validate", Action::ManageRulesets),
    ("POST", "/v1/rulesets/test", Action::TestRulesets),
    ("POST", "/v1/backtests", Action::RunBacktests),
    ("GET", "/v1/blocklists/{kind}", Action::ReadBlocklists),
    ("POST", "/v1/blocklists/{kind}", Action::AddToBlocklist),
    ("DELETE", "/v1/blocklists/{kind}/{id}", Action::RemoveFromBlocklist),
    ("POST", "/v1/blocklists/{kind}/preview", Action::AddToBlocklist),
    ("GET", "/v1/reviews", Action::ReadReviews),
    ("GET", "/v1/reviews/{id}", Action::ReadReviews),
    ("POST", "/v1/reviews/{id}/claim", Action::ActOnReviews),
    ("POST", "/v1/reviews/{id}/resolve", Action::ActOnReviews),
    ("POST", "/v1/reviews/{id}/release", Action::ActOnReviews),
    ("POST", "/v1/reviews/{id}/escalate", Action::ActOnReviews),
    ("POST", "/v1/reviews/{id}/resubmit", Action::ActOnReviews),
    ("POST", "/v1/reviews/{id}/reassign", Action::ManageReviews),
    ("GET", "/v1/api-keys", Action::ReadKeys),
    ("POST", "/v1/api-keys", Action::ManageKeys),
    ("DELETE", "/v1/api-keys/{id}", Action::ManageKeys),
    ("GET", "/v1/users", Action::ReadUsers),
    ("POST", "/v1/users", Action::ManageUsers),
    ("GET", "/v1/users/{id}", Action::ReadUsers),
    ("PATCH", "/v1/users/{id}", Action::ManageUsers),
    ("POST", "/v1/auth/login", Action::Login),
    ("POST", "/v1/auth/logout", Action::Own),
    ("GET", "/v1/auth/me", Action::Own),
    ("GET", "/v1/auth/oidc/login", Action::Public),
    ("GET", "/v1/auth/oidc/callback", Action::Public),
    ("GET", "/v1/stream", Action::Public),
    ("GET", "/v1/stream/sse", Action::Public),
    ("GET", "/healthz", Action::Public),
    ("GET", "/readyz", Action::Public),
    ("GET", "/metrics", Action::Public),
    ("GET", "/openapi.json", Action::Public),
    // Own: a token to read the caller's own tenant's events, which every role may read.
    ("POST", "/v1/stream/token", Action::Own),
    ("GET", "/", Action::Public),
    ("GET", "/assets/{file}", Action::Public),
    ("POST", "/v1/verifications", Action::StartVerifications),
    ("GET", "/v1/verifications/{session_id}", Action::ReadVerifications),
    ("POST", "/v1/verifications/document", Action::StartVerifications),
    ("GET", "/v1/documents/{id}", Action::ReadDocuments),
    ("GET", "/v1/endpoints", Action::ReadEndpoints),
    ("POST", "/v1/endpoints", Action::ManageEndpoints),
    ("GET", "/v1/endpoints/{id}", Action::ReadEndpoints),
    ("PATCH", "/v1/endpoints/{id}", Action::ManageEndpoints),
    ("DELETE", "/v1/endpoints/{id}", Action::ManageEndpoints),
    ("GET", "/v1/endpoints/{id}/deliveries", Action::ReadEndpoints),
    ("POST", "/v1/endpoints/{id}/replay", Action::ManageEndpoints),
];

/// The action of a route, if it has one.
pub fn action_of(method: &Method, path: &str) -> Option<Action> {
    ROUTES.iter().find(|(m, p, _)| *m == method.as_str() && *p == path).map(|(_, _, a)| *a)
}

/// README's role × endpoint matrix, from [`ROUTES`].
pub fn matrix_markdown() -> String {
    let mut out = String::from("| endpoint |");
    for r in Role::ALL {
        out.push_str(&format!(" `{}` |", r.as_str()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(Role::ALL.len()));
    out.push('\n');
    for (m, p, a) in ROUTES.iter().filter(|(_, _, a)| !matches!(a, Action::Public | Action::Login)) {
        out.push_str(&format!("| `{m} {p}` |"));
        for r in Role::ALL {
            out.push_str(if a.roles().contains(&r) { " ✓ |" } else { " — |" });
        }
        out.push('\n');
    }
    out
}

/// Authenticates, checks the role and the rate limits, and hands the handler its [`Caller`].
pub async fn authorize(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()) else {
        // No route matched: the fallbacks answer (404, 405).
        return next.run(req).await;
    };
    let method = req.method().clone();
    let Some(action) = action_of(&method, &route) else {
        if ROUTES.iter().any(|(_, p, _)| *p == route) {
            // A known path with another method: the router answers 405.
            return next.run(req).await;
        }
        tracing::error!(route = %route, method = %method, "route without an access rule; refused");
        return ApiError::forbidden("forbidden", "this endpoint has no access rule").into_response();
    };
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = st.limits.client_ip(peer, req.headers());
    match action {
        Action::Public => return next.run(req).await,
        Action::Login => {
            return match st.limits.check(Class::Login, None, ip) {
                Ok(_) => next.run(req).await,
                Err(limited) => limited.into_response(),
            }
        }
        _ => {}
    }
    let caller = match authenticate(&st, req.headers(), &method).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if !action.roles().contains(&caller.role) {
        return ApiError::forbidden("forbidden", format!("role {} cannot {}", caller.role.as_str(), action.describe()))
            .into_response();
    }
    let headers = match st.limits.check(action.class(&method), Some(&caller.id), ip) {
        Ok(h) => h,
        Err(limited) => return limited.into_response(),
    };
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    if let Some(h) = headers {
        h.apply(resp.headers_mut());
    }
    resp
}

/// The caller of a request: an API key (`Authorization: Bearer`) or a login session (cookie;
/// state-changing calls must also send its CSRF token).
async fn authenticate(st: &AppState, headers: &HeaderMap, method: &Method) -> Result<Caller, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).ok_or_else(|| {
            ApiError::unauthorized("invalid_api_key", "the Authorization header must be `Bearer <api key>`")
        })?;
        let id = key_identity(st, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid_api_key", "unknown API key"))?;
        return Ok(Caller::from_identity(id, None));
    }
    if let Some(cookie) = session_cookie(headers) {
        return session_caller(st, &cookie, headers, method).await;
    }
    Err(ApiError::unauthorized(
        "missing_api_key",
        "send `Authorization: Bearer <api key>`, or log in (POST /v1/auth/login) and send the session cookie",
    ))
}

/// The identity of a presented API key: a configured one, else one made at run time (revoked
/// keys are refused from the next request on, on every node: the store is asked each time).
pub async fn key_identity(st: &AppState, token: &str) -> Result<Option<Identity>, ApiError> {
    if let Some(k) = st.authenticate(token) {
        return Ok(Some(Identity {
            kind: IdentityKind::ConfigKey,
            id: format!("config:{}", k.name),
            name: k.name.clone(),
            tenant: k.tenant.clone(),
            role: k.role,
        }));
    }
    let Some(k) = st.store.api_key_by_hash(&sha256_hex(token)).await? else { return Ok(None) };
    if k.revoked_at_us.is_some() {
        return Ok(None);
    }
    touch_key(st, &k.id);
    // Recorded as `key:<name>`: run-time key names are chosen by admins, so the prefix keeps
    // them apart from config keys and users.
    Ok(Some(Identity {
        kind: IdentityKind::Key,
        id: k.id,
        name: format!("key:{}", k.name),
        tenant: k.tenant,
        role: k.role,
    }))
}

/// Records a key's use, at most once a minute per key and node (not a write per request).
fn touch_key(st: &AppState, id: &str) {
    let now = now_us();
    {
        let mut seen = st.key_last_touch.lock().expect("key touch lock");
        if seen.get(id).is_some_and(|t| now - *t < 60_000_000) {
            return;
        }
        seen.insert(id.to_owned(), now);
    }
    let (store, id) = (st.store.clone(), id.to_owned());
    tokio::spawn(async move {
        let op = Op::Access(AccessOp::TouchApiKey { id, now_us: now });
        if let Err(e) = store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await {
            tracing::debug!(error = %e, "could not record an API key's last use");
        }
    });
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of the request's cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

async fn session_caller(st: &AppState, cookie: &str, headers: &HeaderMap, method: &Method) -> Result<Caller, ApiError> {
    let expired = || ApiError::unauthorized("session_expired", "the session has ended: log in again");
    let session = st.store.auth_session(&sha256_hex(cookie)).await?.ok_or_else(expired)?;
    let now = now_us();
    if now >= session.expires_at_us || now - session.last_seen_at_us > st.login_policy.idle_us {
        let op = Op::Access(AccessOp::DeleteAuthSession { id_sha256: session.id_sha256.clone() });
        let _ = st.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await;
        return Err(expired());
    }
    let user = st.store.user(&session.user_id).await?.filter(|u| !u.disabled).ok_or_else(expired)?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(ApiError::forbidden(
                "csrf_token_invalid",
                "a call with the session cookie that changes something must send its CSRF token in X-CSRF-Token",
            ));
        }
    }
    // Activity is recorded at most once a minute (or a quarter of the idle timeout, if shorter),
    // not on every request.
    if now - session.last_seen_at_us > (st.login_policy.idle_us / 4).min(60_000_000) {
        let op = Op::Access(AccessOp::TouchAuthSession { id_sha256: session.id_sha256.clone(), now_us: now });
        let _ = st.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await;
    }
    let identity = Identity {
        kind: IdentityKind::User,
        id: user.id,
        name: format!("user:{}", user.username),
        tenant: user.tenant,
        role: user.role,
    };
    Ok(Caller::from_identity(identity, Some(session)))
}

/// `401` for a caller with no identity at all (used where the middleware did not run).
pub fn unauthenticated() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "missing_api_key", "send `Authorization: Bearer <api key>`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_names_what_it_allows() {
        for (m, p, a) in ROUTES {
            assert!(!a.roles().is_empty(), "{m} {p}");
            assert!(m.parse::<Method>().is_ok(), "{m}");
        }
        // Auditors never change anything (a POST that stores nothing has its own action);
        // services never act on reviews.
        for (m, p, a) in ROUTES.iter().filter(|(m, _, _)| *m != "GET") {
            if !matches!(a, Action::Public | Action::Login | Action::Own | Action::TestRulesets) {
                assert!(!a.roles().contains(&Role::Auditor), "auditor may {m} {p}");
            }
        }
        assert!(!Action::ActOnReviews.roles().contains(&Role::Service));
        assert!(matrix_markdown().contains("| `POST /v1/rulesets/{version}/activate` | — | — | ✓ | ✓ | — | — |"));
    }
}
