//! `ApiError`: every error the HTTP edge returns, and the one place where every other error
//! type becomes one.
//!
//! A client gets `{"error": code, "message": text}` (plus `details` for some codes) and the
//! request's `x-request-id`. Server-side failures (the log or store unavailable, a stored entry
//! that cannot be read) answer a generic message: their internal text (SQLSTATE, NATS, I/O
//! errors, paths) is logged here, once, inside the request's span (which carries the request
//! id), and never sent.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use idstream_core::event::NormaliseError;
use idstream_core::signature::VerifyError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::log::LogError;
use crate::store::{StoreError, TxnError};

/// An error answered as `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable code (`invalid_signature`, `stale_timestamp`, ...).
    pub code: &'static str,
    /// What the client is told.
    pub message: String,
    /// More fields merged into the body (e.g. the list of ruleset errors).
    pub details: Option<serde_json::Value>,
    /// What went wrong inside (logged with the request id, never sent).
    pub internal: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code.
    pub error: String,
    /// What went wrong, for a person; names the field or parameter at fault, never a value
    /// that could be personal data or a secret.
    pub message: String,
    /// `invalid_ruleset` and `invalid_cases` only: every error in the document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<RulesetErrorItem>>,
}

/// One error of a ruleset document, at its position.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetErrorItem {
    pub message: String,
    /// The rule's id, when the error is inside one.
    pub rule: Option<String>,
    /// The case's name, when the error is inside one (cases documents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None, internal: None }
    }
    pub fn with_details(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        ApiError { details: Some(details), ..Self::new(status, code, message) }
    }
    /// A server-side failure: the client learns `message`, the log learns `internal`.
    pub fn internal(status: StatusCode, code: &'static str, message: &str, internal: impl ToString) -> Self {
        ApiError { internal: Some(internal.to_string()), ..Self::new(status, code, message) }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        let message = match e {
            LogError::Closed => "the server is shutting down; nothing was stored, retry later",
            LogError::Unavailable(_) => "the event log is unavailable; nothing was stored, retry later",
        };
        ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", message, e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = match e {
            StoreError::Closed => "the server is shutting down; retry later",
            StoreError::Unavailable(_) => "the store is unavailable; nothing was changed, retry later",
        };
        ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message, e)
    }
}

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> Self {
        match e {
            TxnError::Log(e) => e.into(),
            TxnError::Store(e) => e.into(),
            // Conflict and not-found messages are written for the client (who holds a review,
            // which version is missing); they carry no internal detail.
            TxnError::Conflict(m) => ApiError::conflict(m),
            TxnError::NotFound(m) => ApiError::not_found("not_found", m),
        }
    }
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        let status = if e.is_auth() { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, e.reason(), e.to_string())
    }
}

impl From<NormaliseError> for ApiError {
    fn from(e: NormaliseError) -> Self {
        ApiError::bad_request("invalid_field", e.to_string())
    }
}

/// A provider call that failed: 504 when it timed out, 502 otherwise. Nothing was recorded.
impl From<crate::provider::ProviderError> for ApiError {
    fn from(e: crate::provider::ProviderError) -> Self {
        use crate::provider::ProviderError as P;
        let (status, code) = match &e {
            P::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "provider_timeout"),
            P::Unavailable { .. } => (StatusCode::BAD_GATEWAY, "provider_unavailable"),
            P::RateLimited { .. } => (StatusCode::BAD_GATEWAY, "provider_rate_limited"),
            P::CircuitOpen { .. } => (StatusCode::BAD_GATEWAY, "provider_circuit_open"),
            P::Rejected { .. } => (StatusCode::BAD_GATEWAY, "provider_rejected"),
            P::BadResponse { .. } => (StatusCode::BAD_GATEWAY, "provider_bad_response"),
        };
        ApiError::new(status, code, format!("{e}; nothing was recorded"))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
        } else {
            ApiError::bad_request("unreadable_body", "could not read the request body")
        }
    }
}

impl ApiError {
    /// `422 invalid_ruleset` with every error of the document at its position.
    pub fn invalid_ruleset(errors: &[idstream_rules::RuleError]) -> Self {
        let mut e = ApiError::document_errors("invalid_ruleset", "the ruleset", errors);
        e.message.push_str("; nothing was stored");
        e
    }

    /// `422 code` with every error of a YAML document (`what`: "the ruleset") at its position.
    pub fn document_errors(code: &'static str, what: &str, errors: &[idstream_rules::RuleError]) -> Self {
        let list: Vec<RulesetErrorItem> = errors
            .iter()
            .map(|e| RulesetErrorItem {
                message: e.to_string(),
                rule: e.rule.clone(),
                case: e.case.clone(),
                line: e.pos.map(|p| p.line),
                column: e.pos.map(|p| p.column),
            })
            .collect();
        ApiError::with_details(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            format!("{what} has {} error(s)", list.len()),
            serde_json::json!({ "errors": list }),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // Inside the request's span: the line carries the request id.
            tracing::error!(
                status = self.status.as_u16(),
                code = self.code,
                internal = self.internal.as_deref().unwrap_or(&self.message),
                "request failed"
            );
        }
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let Some(serde_json::Value::Object(extra)) = self.details {
            body.as_object_mut().expect("object").extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}
