//! `ApiError`: every error the HTTP edge returns, mapped to a status and a JSON body in one
//! place. Server-side errors are logged once, here, where they become a response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered as `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable code (`invalid_signature`, `stale_timestamp`, ...).
    pub code: &'static str,
    pub message: String,
    /// More fields merged into the body (e.g. the list of ruleset errors).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None }
    }
    pub fn with_details(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        ApiError { status, code, message: message.into(), details: Some(details) }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl From<crate::log::LogError> for ApiError {
    fn from(e: crate::log::LogError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "log_unavailable",
            format!("{e}; nothing was stored, retry later"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        }
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let Some(serde_json::Value::Object(extra)) = self.details {
            body.as_object_mut().expect("object").extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}
