//! Health, readiness, metrics and the API contract: the endpoints operators and load balancers
//! call, without an API key.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `shutting_down` once a graceful stop has begun.
    pub status: &'static str,
    /// The offset of the last entry in the log (when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_head: Option<u64>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 503 once shutdown has begun, so load balancers drain this node.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness, description = "Shutting down"))
)]
pub async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    if st.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, Json(Readiness { status: "ready", log_head: Some(st.log.head()) }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "shutting_down", log_head: None }))
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::server::metrics_handle().render())
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| super::openapi().to_pretty_json().expect("the OpenAPI document serialises"));
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}
