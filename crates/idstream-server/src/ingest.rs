//! Webhook ingest: `POST /webhooks/{source_id}`.
//!
//! verify signature (pure core) → normalise (pure core) → append to the log (durable) → 2xx.
//! The 2xx is sent only after the log has committed the event to stable storage; any failure
//! before that is a 4xx/5xx and nothing is stored. Bodies and secrets are never logged.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use idstream_core::event::{normalise_didit, normalise_standard, Envelope, IdentityEvent, Provider};
use idstream_core::signature::{didit, standard, Secret};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::log::NewEntry;
use crate::state::AppState;

/// A configured webhook source, with its secrets ready to use.
#[derive(Debug)]
pub struct Source {
    pub id: String,
    pub provider: Provider,
    pub tenant: String,
    pub secrets: Vec<Secret>,
    /// Standard Webhooks keys, decoded once from the `whsec_` secrets.
    pub standard_keys: Vec<Vec<u8>>,
    pub tolerance_secs: u64,
    /// Counters registered once, so the hot path does not build label sets per request.
    accepted: metrics::Counter,
    duplicates: metrics::Counter,
}

impl Source {
    pub fn from_config(c: &crate::config::SourceConfig) -> Source {
        let standard_keys = if c.provider == Provider::Standard {
            c.secrets.iter().map(|s| standard::decode_secret(s).expect("validated at config load")).collect()
        } else {
            Vec::new()
        };
        Source {
            id: c.id.clone(),
            provider: c.provider,
            tenant: c.tenant.clone(),
            secrets: c.secrets.clone(),
            standard_keys,
            tolerance_secs: c.timestamp_tolerance_secs,
            accepted: metrics::counter!("idstream_webhooks_total", "source" => c.id.clone(), "outcome" => "accepted", "reason" => ""),
            duplicates: metrics::counter!("idstream_webhooks_total", "source" => c.id.clone(), "outcome" => "duplicate", "reason" => ""),
        }
    }
}

/// A webhook stored in the log (or recognised as one stored before).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The event's id (the original's, for a duplicate).
    pub event_id: String,
    /// Its offset in the log.
    pub offset: u64,
    /// True when the webhook was stored before: nothing was appended.
    pub duplicate: bool,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn reject(source: &str, err: ApiError) -> ApiError {
    metrics::counter!("idstream_webhooks_total", "source" => source.to_owned(), "outcome" => "rejected", "reason" => err.code)
        .increment(1);
    err
}

/// Reads the body up to `limit` bytes; larger bodies are refused without reading them whole.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds the {limit}-byte limit"),
        )
    };
    if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        if len > limit {
            return Err(too_large());
        }
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                src = s.source();
            }
            Err(ApiError::bad_request("unreadable_body", format!("could not read the request body: {e}")))
        }
    }
}

/// Verifies and normalises one webhook: everything before the log. Pure apart from the id.
pub fn verify_and_normalise(
    src: &Source,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<IdentityEvent, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    match src.provider {
        Provider::Didit => {
            let h = didit::Headers {
                signature_v2: header(headers, "x-signature-v2"),
                signature_raw: header(headers, "x-signature"),
                signature_simple: header(headers, "x-signature-simple"),
                timestamp: header(headers, "x-timestamp"),
            };
            let v = didit::verify(&h, body, &src.secrets, now, src.tolerance_secs)?;
            let env = Envelope { id, tenant: &src.tenant, source: &src.id, received_at: now, scheme: v.scheme };
            Ok(normalise_didit(env, &v.body, v.timestamp)?)
        }
        Provider::Standard => {
            let h = standard::Headers {
                id: header(headers, "webhook-id"),
                timestamp: header(headers, "webhook-timestamp"),
                signature: header(headers, "webhook-signature"),
            };
            let v = standard::verify(&h, body, &src.standard_keys, now, src.tolerance_secs)?;
            let env = Envelope {
                id,
                tenant: &src.tenant,
                source: &src.id,
                received_at: now,
                scheme: idstream_core::signature::Scheme::StandardV1,
            };
            Ok(normalise_standard(env, &v.webhook_id, &v.body, v.timestamp)?)
        }
    }
}

/// Turns an accepted event into its log entry. The dedupe key is scoped to the source.
pub fn to_entry(event: &IdentityEvent, body: Bytes) -> NewEntry {
    NewEntry {
        id: event.id.clone(),
        tenant: event.tenant.clone(),
        source: event.source.clone(),
        kind: event.kind.clone(),
        partition_key: event.partition_key().to_owned(),
        dedupe_key: Some(format!("{}/{}", event.source, event.dedupe_key)),
        event: serde_json::to_vec(event).expect("an IdentityEvent always serialises"),
        body: Some(body.to_vec()),
    }
}

/// Receives a provider's signed webhook. The answer is sent only once the event is on stable
/// storage; anything refused is stored nowhere.
#[utoipa::path(
    post,
    path = "/webhooks/{source_id}",
    operation_id = "receive_webhook",
    tag = "webhooks",
    params(
        ("source_id" = String, Path, description = "A configured source (`[[sources]] id`)"),
        ("x-signature-v2" = Option<String>, Header, description = "Didit: HMAC-SHA256 of the canonical JSON"),
        ("x-signature" = Option<String>, Header, description = "Didit: HMAC-SHA256 of the raw body"),
        ("x-signature-simple" = Option<String>, Header, description = "Didit: HMAC of timestamp, session, status and type"),
        ("x-timestamp" = Option<String>, Header, description = "Didit: Unix seconds"),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks: the message id"),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks: Unix seconds"),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks: `v1,<base64>` signatures"),
    ),
    request_body(content = Object, description = "The provider's JSON body, exactly as signed"),
    responses(
        (status = 200, body = Accepted, description = "Stored durably (or a duplicate of a stored one)"),
        (status = 400, body = ErrorBody, description = "Malformed body or a missing required field (`invalid_json`, `invalid_field`, ...)"),
        (status = 401, body = ErrorBody, description = "No valid signature, or a stale timestamp"),
        (status = 404, body = ErrorBody, description = "No such source (`unknown_source`)"),
        (status = 413, body = ErrorBody, description = "Over `server.max_body_bytes` (`body_too_large`)"),
        crate::http::responses::Unavailable,
        crate::http::responses::ServerError
    )
)]
pub async fn webhook(
    State(st): State<Arc<AppState>>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let Some(src) = st.sources.get(&source_id) else {
        return Err(reject(
            "unknown",
            ApiError::not_found("unknown_source", format!("no webhook source `{source_id}` is configured")),
        ));
    };
    let rejected = |e: ApiError| {
        st.tenant_counters.count(&src.tenant, "webhooks_rejected");
        reject(&src.id, e)
    };
    let body = read_body(&headers, body, st.max_body_bytes).await.map_err(rejected)?;
    let event = verify_and_normalise(src, &headers, &body, crate::util::unix_now()).map_err(rejected)?;
    let entry = to_entry(&event, body);

    let started = Instant::now();
    let appended = st.log.append(vec![entry]).await.map_err(|e| reject(&src.id, e.into()))?;
    metrics::histogram!("idstream_log_append_seconds").record(started.elapsed().as_secs_f64());
    let a = appended.into_iter().next().expect("one result per entry");
    if a.duplicate { &src.duplicates } else { &src.accepted }.increment(1);
    st.tenant_counters.count(&src.tenant, if a.duplicate { "webhooks_duplicate" } else { "webhooks_accepted" });
    Ok(Json(Accepted { event_id: a.id, offset: a.offset, duplicate: a.duplicate }))
}
