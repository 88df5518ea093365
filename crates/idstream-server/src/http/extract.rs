//! Extractors of the REST API: who is calling ([`Caller`]), typed query strings
//! ([`ApiQuery`]) and JSON bodies ([`ApiJson`]), each refusing bad input with the API's own
//! error codes instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::access::{Identity, IdentityKind};
use crate::domain::Role;
use crate::error::ApiError;
use crate::store::access::AuthSessionRecord;

/// The authenticated caller of a REST call — an API key or a logged-in user — with its tenant
/// and role. Set by the access middleware (`authz::authorize`), which has already checked the
/// role against the route; handlers take it as an argument.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity's name (key name or username): the actor recorded for its changes.
    pub name: String,
    /// The identity's tenant, or `*` for every tenant.
    pub tenant: String,
    pub role: Role,
    /// The identity's stable id (idempotency keys and rate limits are scoped by it).
    pub id: String,
    pub kind: IdentityKind,
    /// The login session, for a cookie-authenticated caller.
    pub session: Option<AuthSessionRecord>,
}

impl Caller {
    pub fn from_identity(i: Identity, session: Option<AuthSessionRecord>) -> Caller {
        Caller { name: i.name, tenant: i.tenant, role: i.role, id: i.id, kind: i.kind, session }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(super::authz::unauthenticated)
    }
}

impl Caller {
    /// Whether the caller may see objects of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant == "*" || self.tenant == tenant
    }

    /// The tenant filter of the caller's reads: `None` for an all-tenant key.
    pub fn tenant_filter(&self) -> Option<String> {
        (self.tenant != "*").then(|| self.tenant.clone())
    }

    /// The one tenant a call acts on: the key's own, or for a `*` key the `tenant` parameter.
    pub fn acting_for(&self, asked: Option<&str>) -> Result<String, ApiError> {
        match (self.tenant.as_str(), asked) {
            ("*", Some(t)) if !t.is_empty() => Ok(t.to_owned()),
            ("*", _) => Err(ApiError::bad_request(
                "tenant_required",
                "this API key is for all tenants: name one with `?tenant=`",
            )),
            (own, Some(t)) if t != own => {
                Err(ApiError::forbidden("wrong_tenant", format!("this API key acts for tenant `{own}`, not `{t}`")))
            }
            (own, _) => Ok(own.to_owned()),
        }
    }

    /// The tenants a listing covers: the key's own (checked against `asked`), or for a `*` key
    /// the one it names, or all.
    pub fn listing(&self, asked: Option<&str>) -> Result<Option<String>, ApiError> {
        if self.tenant == "*" {
            Ok(asked.filter(|t| !t.is_empty()).map(str::to_owned))
        } else {
            self.acting_for(asked).map(Some)
        }
    }
}

/// A typed query string. Unknown parameters and bad values are `400 invalid_parameter` naming
/// the parameter (structs use `#[serde(deny_unknown_fields)]`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

/// Parses a query string into `T`, with errors that name the parameter.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let message = match inner.strip_prefix("unknown field ") {
            // serde: "unknown field `x`, expected one of `a`, `b`" → our wording.
            Some(rest) => {
                let (name, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
                let expected = expected.trim_start_matches(" one of").replace('`', "");
                format!("unknown parameter {name} (expected{expected})")
            }
            None if path == "." => format!("invalid query string: {inner}"),
            None => format!("`{path}` {inner}"),
        };
        ApiError::bad_request("invalid_parameter", message)
    })
}

/// A JSON body. An empty body reads as `{}` (so calls whose fields are all optional need none);
/// invalid JSON, an unknown field or a bad value is `400 invalid_body` naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let invalid = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = redact(&e.into_inner().to_string());
            invalid(if path == "." {
                format!("invalid JSON body: {inner}")
            } else {
                format!("invalid JSON body: `{path}`: {inner}")
            })
        })?;
        de.end().map_err(|e| invalid(format!("invalid JSON body: {e}")))?;
        Ok(ApiJson(value))
    }
}

/// serde's message without the offending string value (`invalid type: string "…", expected
/// u64` → `invalid type: a string, expected u64`): a value may be personal data, and error
/// bodies end up in logs.
fn redact(message: &str) -> String {
    for prefix in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(end) = rest.find("\", expected") {
                let head = &prefix[..prefix.len() - "string \"".len()];
                return format!("{head}a string{}", &rest[end + 1..]);
            }
        }
    }
    message.to_owned()
}

/// The body as UTF-8 text (rulesets are YAML).
pub struct TextBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TextBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        String::from_utf8(bytes.to_vec())
            .map(TextBody)
            .map_err(|_| ApiError::bad_request("invalid_body", "the body must be UTF-8 text"))
    }
}
