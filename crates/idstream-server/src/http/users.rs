//! People: `/v1/users` (admins manage accounts of their tenant) and `/v1/auth/*` (log in with a
//! password, who am I, log out). A login answers a session cookie (HttpOnly; Secure;
//! SameSite=Strict) and the session's CSRF token, which every state-changing call made with the
//! cookie must send as `X-CSRF-Token`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::authz::SESSION_COOKIE;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::responses::{BadRequest, Conflict, Forbidden, NotFound, ServerError, TooManyRequests, Unauthorized};
use super::sessions::TenantParam;
use crate::access::users::{self, Login, UserChange};
use crate::access::{valid_name, valid_tenant, IdentityKind};
use crate::domain::Role;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::store::access::{AuthSessionRecord, UserRecord};

fn time(us: i64) -> String {
    idstream_core::event::rfc3339_us(us)
}

/// An account as shown (never its password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub tenant: String,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    /// Logs in through OIDC.
    pub oidc: bool,
    /// Locked after failed logins until this time.
    pub locked_until: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            oidc: u.oidc_subject.is_some(),
            locked_until: u.locked_until_us.filter(|t| *t > crate::util::now_us()).map(time),
            id: u.id,
            tenant: u.tenant,
            username: u.username,
            role: u.role,
            disabled: u.disabled,
            created_by: u.created_by,
            created_at: time(u.created_at_us),
            updated_at: time(u.updated_at_us),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Letters, digits and `-_.@`, at most 100; unique.
    pub username: String,
    pub role: Role,
    /// At least 12 characters. Omit for an account that logs in through OIDC only.
    #[serde(default)]
    pub password: Option<String>,
    /// For a `*` caller: the account's tenant (`*` for an operator).
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub role: Option<Role>,
    /// Disabling ends the account's sessions.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// A new password (at least 12 characters); ends the account's sessions.
    #[serde(default)]
    pub password: Option<String>,
}

fn check_password(p: &Option<String>) -> Result<(), ApiError> {
    match p.as_deref().and_then(users::weak_password) {
        Some(why) => Err(ApiError::bad_request("invalid_body", format!("`password`: {why}"))),
        None => Ok(()),
    }
}

/// Accounts of the caller's tenant (all for a `*` caller, or the one named).
#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "list_users",
    tag = "access",
    params(TenantParam),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = UserList), BadRequest, Unauthorized, Forbidden, TooManyRequests, ServerError)
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<UserList>, ApiError> {
    let tenant = caller.listing(q.tenant.as_deref())?;
    let users = st.store.users(tenant.as_deref()).await?;
    Ok(Json(UserList { users: users.into_iter().map(UserView::from).collect() }))
}

/// Makes an account.
#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "create_user",
    tag = "access",
    request_body = NewUser,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 201, body = UserView), BadRequest, Unauthorized, Forbidden, Conflict, TooManyRequests, ServerError)
)]
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !valid_name(&b.username) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "`username`: 1 to 100 letters, digits, `-`, `_`, `.` or `@`",
        ));
    }
    check_password(&b.password)?;
    let tenant = match b.tenant.as_deref() {
        Some(t) if !valid_tenant(t) => {
            return Err(ApiError::bad_request("invalid_body", "`tenant` must be a tenant name or `*`"))
        }
        Some("*") if caller.tenant != "*" => {
            return Err(ApiError::forbidden("wrong_tenant", "only a `*` caller makes operators"));
        }
        Some("*") => "*".to_owned(),
        asked => caller.acting_for(asked)?,
    };
    let user =
        users::create_user(st.store.as_ref(), &tenant, &b.username, b.role, b.password, None, &caller.name).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

async fn visible_user(st: &AppState, caller: &Caller, id: &str) -> Result<UserRecord, ApiError> {
    st.store
        .user(id)
        .await?
        .filter(|u| caller.sees(&u.tenant))
        .ok_or_else(|| ApiError::not_found("not_found", format!("no user `{id}`")))
}

/// One account.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    operation_id = "get_user",
    tag = "access",
    params(("id" = String, Path, description = "The user's id")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = UserView), Unauthorized, Forbidden, NotFound, TooManyRequests, ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(visible_user(&st, &caller, &id).await?.into()))
}

/// Changes an account's role, disables or enables it, or sets a new password.
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    operation_id = "update_user",
    tag = "access",
    params(("id" = String, Path, description = "The user's id")),
    request_body = UserPatch,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = UserView), BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, ServerError)
)]
pub async fn update(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    check_password(&b.password)?;
    if b.role.is_none() && b.disabled.is_none() && b.password.is_none() {
        return Err(ApiError::bad_request("invalid_body", "name what to change: `role`, `disabled` or `password`"));
    }
    let user = visible_user(&st, &caller, &id).await?;
    if user.id == caller.id && (b.disabled == Some(true) || b.role.is_some_and(|r| r != Role::Admin)) {
        return Err(ApiError::bad_request("invalid_body", "an admin cannot disable or demote their own account"));
    }
    let change = UserChange { role: b.role, disabled: b.disabled, password: b.password };
    users::update_user(st.store.as_ref(), caller.tenant_filter().as_deref(), &user, change, &caller.name).await?;
    Ok(Json(visible_user(&st, &caller, &id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A login session as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginSession {
    pub user: UserView,
    /// Send it as `X-CSRF-Token` with every call that changes something.
    pub csrf_token: String,
    /// The session's absolute end.
    pub expires_at: String,
    /// It also ends after this many seconds without a request.
    pub idle_timeout_secs: u64,
}

/// `Set-Cookie` for a session (or, with `None`, clearing it).
pub fn session_cookie(st: &AppState, value: Option<(&str, i64)>) -> HeaderValue {
    let secure = if st.secure_cookies { "; Secure" } else { "" };
    let text = match value {
        Some((v, max_age_secs)) => {
            format!("{SESSION_COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}")
        }
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).expect("cookie values are URL-safe base64")
}

fn session_view(st: &AppState, user: UserRecord, session: &AuthSessionRecord) -> LoginSession {
    LoginSession {
        user: user.into(),
        csrf_token: session.csrf.clone(),
        expires_at: time(session.expires_at_us),
        idle_timeout_secs: (st.login_policy.idle_us / 1_000_000) as u64,
    }
}

/// The answer of a successful login (password or OIDC): the session cookie and its view.
pub fn logged_in(st: &AppState, cookie: &str, session: &AuthSessionRecord, user: UserRecord) -> Response {
    let max_age = (session.expires_at_us - session.created_at_us) / 1_000_000;
    let mut resp = Json(session_view(st, user, session)).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(st, Some((cookie, max_age))));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Logs in with a username and password. Five failures in a row (`auth.lockout_after`) lock the
/// account for a while; logins are also rate-limited per client IP.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    operation_id = "login",
    tag = "access",
    request_body = Credentials,
    responses(
        (status = 200, body = LoginSession, description = "Logged in: the session cookie is set",
         headers(("set-cookie" = String, description = "idstream_session=…; HttpOnly; Secure; SameSite=Strict"))),
        BadRequest,
        (status = 401, body = ErrorBody, description = "Wrong username or password (`invalid_credentials`)"),
        (status = 403, body = ErrorBody, description = "The account is disabled (`account_disabled`)"),
        (status = 429, body = ErrorBody, description = "The account is locked after failed logins (`account_locked`), or too many logins from this address (`rate_limited`); see Retry-After",
         headers(("retry-after" = u64, description = "Seconds to wait"))),
        ServerError
    )
)]
pub async fn login(State(st): State<Arc<AppState>>, ApiJson(c): ApiJson<Credentials>) -> Result<Response, ApiError> {
    match users::password_login(st.store.as_ref(), &st.login_policy, &c.username, c.password).await? {
        Login::Ok { cookie, session, user } => Ok(logged_in(&st, &cookie, &session, user)),
        Login::Refused => Err(ApiError::unauthorized("invalid_credentials", "wrong username or password")),
        Login::Disabled => Err(ApiError::forbidden("account_disabled", "this account is disabled: ask an admin")),
        Login::Locked { retry_after_secs } => {
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "account_locked",
                format!(
                    "this account is locked after {} failed logins; try again in {} minute(s) or ask an admin to reset the password",
                    st.login_policy.lock_after,
                    retry_after_secs.div_ceil(60)
                ),
            )
            .into_response();
            resp.headers_mut().insert("retry-after", HeaderValue::from(retry_after_secs));
            Ok(resp)
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    pub logged_out: bool,
}

/// Ends the caller's login session and clears its cookie.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    operation_id = "logout",
    tag = "access",
    security(("session" = [])),
    responses(
        (status = 200, body = LoggedOut, headers(("set-cookie" = String, description = "Clears the session cookie"))),
        (status = 400, body = ErrorBody, description = "The caller is an API key, not a login session (`not_a_session`)"),
        Unauthorized,
        Forbidden,
        TooManyRequests,
        ServerError
    )
)]
pub async fn logout(State(st): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    let Some(session) = &caller.session else {
        return Err(ApiError::bad_request("not_a_session", "an API key has no session to end"));
    };
    if let Some(user) = st.store.user(&caller.id).await? {
        users::logout(st.store.as_ref(), session, &user).await?;
    }
    let mut resp = Json(LoggedOut { logged_out: true }).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(&st, None));
    Ok(resp)
}

/// Who is calling.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub kind: IdentityKind,
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub role: Role,
    /// Login sessions only: the CSRF token and the session's end.
    pub csrf_token: Option<String>,
    pub expires_at: Option<String>,
}

/// The caller's identity, tenant and role (and, for a login session, its CSRF token).
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    operation_id = "whoami",
    tag = "access",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Me), Unauthorized, TooManyRequests, ServerError)
)]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        csrf_token: caller.session.as_ref().map(|s| s.csrf.clone()),
        expires_at: caller.session.as_ref().map(|s| time(s.expires_at_us)),
        kind: caller.kind,
        id: caller.id,
        name: caller.name,
        tenant: caller.tenant,
        role: caller.role,
    })
}
