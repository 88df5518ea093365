//! The Didit API client: create a hosted session, retrieve a session's decision, update a
//! session's status (docs.didit.me, "Sessions API"), and the standalone ID verification
//! (`POST /v3/id-verification/`, "Standalone APIs").
//!
//! Every call goes through [`DiditClient::send`]: a timeout per attempt; retries with
//! exponential back-off and full jitter on 5xx, 429 and connection errors, waiting what
//! `Retry-After` asks when it is reasonable; the account's circuit breaker; and a metric per
//! attempt (`idstream_provider_call_seconds{provider, call, outcome}`). A creation that timed
//! out is not retried: Didit may have created the session, and the caller's own retry (or
//! Didit returning the unfinished session of the same `vendor_data`) is the safe way back. A
//! standalone ID verification that timed out is not retried either: it may have been run (and
//! billed, and saved) already.
//!
//! The API key is a [`Secret`]: it goes in the `x-api-key` header and nowhere else (no log
//! line, no error message). Response bodies are never logged either (personal data).

use std::time::{Duration, Instant};

use futures_util::TryStreamExt as _;
use idstream_core::signature::Secret;
use rand::Rng as _;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::breaker::Breaker;
use super::ProviderError;
use crate::config::ProviderConfig;

/// Which call, for metrics and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    CreateSession,
    GetDecision,
    UpdateStatus,
    IdVerification,
}

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::CreateSession => "create_session",
            Call::GetDecision => "get_decision",
            Call::UpdateStatus => "update_status",
            Call::IdVerification => "id_verification",
        }
    }

    /// Whether a timed-out attempt may have taken effect at the provider, so it is not retried.
    fn not_idempotent(self) -> bool {
        matches!(self, Call::CreateSession | Call::IdVerification)
    }
}

/// `POST /v3/session/` body. Absent fields are not sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateSession {
    pub workflow_id: String,
    /// The company's user id: comes back in every webhook as `vendor_data`.
    pub vendor_data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_details: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_details: Option<Value>,
}

/// What `POST /v3/session/` answers (the fields idstream uses).
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedSession {
    pub session_id: String,
    #[serde(default)]
    pub session_number: Option<u64>,
    pub session_token: String,
    pub url: String,
    #[serde(default = "not_started")]
    pub status: String,
    #[serde(default)]
    pub workflow_id: Option<String>,
}

/// An image file sent to a standalone check (JPEG, PNG, WebP, TIFF or PDF; Didit takes up to
/// 5 MB per file).
#[derive(Clone)]
pub struct Upload {
    pub file_name: String,
    /// `image/jpeg`, `image/png`, ...
    pub content_type: String,
    pub bytes: UploadBytes,
}

/// Where an upload's bytes are: in memory, or in a file streamed from disk on every attempt
/// (memory does not grow with the file's size).
#[derive(Clone)]
pub enum UploadBytes {
    Memory(bytes::Bytes),
    File { path: std::path::PathBuf, len: u64 },
}

impl UploadBytes {
    pub fn len(&self) -> u64 {
        match self {
            UploadBytes::Memory(b) => b.len() as u64,
            UploadBytes::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn body(&self) -> reqwest::Body {
        match self {
            UploadBytes::Memory(b) => reqwest::Body::from(b.clone()),
            UploadBytes::File { path, .. } => {
                let path = path.clone();
                // Opened when the body is first polled; a file that vanished fails the attempt.
                let stream = futures_util::stream::once(async move { tokio::fs::File::open(path).await })
                    .map_ok(tokio_util::io::ReaderStream::new)
                    .try_flatten();
                reqwest::Body::wrap_stream(stream)
            }
        }
    }
}

impl From<Vec<u8>> for UploadBytes {
    fn from(b: Vec<u8>) -> UploadBytes {
        UploadBytes::Memory(b.into())
    }
}

impl From<bytes::Bytes> for UploadBytes {
    fn from(b: bytes::Bytes) -> UploadBytes {
        UploadBytes::Memory(b)
    }
}

impl std::fmt::Debug for Upload {
    // The bytes are an identity document: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// `POST /v3/id-verification/` (multipart form). Absent fields are not sent.
#[derive(Debug, Clone)]
pub struct IdVerificationRequest {
    pub front_image: Upload,
    /// For two-sided documents (ID cards).
    pub back_image: Option<Upload>,
    /// Screen replays, printed copies and portrait manipulation are also checked.
    pub perform_document_liveness: Option<bool>,
    /// Holders younger than this (1–120) are declined.
    pub minimum_age: Option<u8>,
    /// Keep the request in Didit's console.
    pub save_api_request: Option<bool>,
    pub vendor_data: Option<String>,
    pub metadata: Option<Value>,
}

impl IdVerificationRequest {
    /// The form, built anew for every attempt (a form is consumed by sending it).
    fn form(&self) -> reqwest::multipart::Form {
        let file = |u: &Upload| {
            let part = || reqwest::multipart::Part::stream_with_length(u.bytes.body(), u.bytes.len());
            part()
                .file_name(u.file_name.clone())
                .mime_str(&u.content_type)
                .unwrap_or_else(|_| part().file_name(u.file_name.clone()))
        };
        let mut form = reqwest::multipart::Form::new().part("front_image", file(&self.front_image));
        if let Some(b) = &self.back_image {
            form = form.part("back_image", file(b));
        }
        if let Some(v) = self.perform_document_liveness {
            form = form.text("perform_document_liveness", v.to_string());
        }
        if let Some(v) = self.minimum_age {
            form = form.text("minimum_age", v.to_string());
        }
        if let Some(v) = self.save_api_request {
            form = form.text("save_api_request", v.to_string());
        }
        if let Some(v) = &self.vendor_data {
            form = form.text("vendor_data", v.clone());
        }
        if let Some(v) = &self.metadata {
            form = form.text("metadata", v.to_string());
        }
        form
    }
}

/// What `POST /v3/id-verification/` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct IdVerificationResult {
    pub request_id: String,
    /// `status` (`Approved`, `Declined`), the extracted holder fields (`first_name`,
    /// `document_number`, `date_of_birth`, `expiration_date`, `issuing_state`, ...) and
    /// `warnings[]`.
    pub id_verification: Value,
    #[serde(default)]
    pub vendor_data: Option<String>,
}

impl IdVerificationResult {
    pub fn status(&self) -> &str {
        self.id_verification["status"].as_str().unwrap_or_default()
    }
}

/// A request body.
enum Body<'a> {
    None,
    Json(Value),
    Form(&'a IdVerificationRequest),
}

fn not_started() -> String {
    "Not Started".into()
}

/// The status an analyst's outcome is set as with update-status (`Approved`, `Declined`); a
/// `review` is no final outcome and is never pushed.
pub fn status_of(outcome: idstream_rules::Outcome) -> Option<&'static str> {
    match outcome {
        idstream_rules::Outcome::Approve => Some("Approved"),
        idstream_rules::Outcome::Decline => Some("Declined"),
        idstream_rules::Outcome::Review => None,
    }
}

/// Whether `id` can go into a URL path as it is (Didit's ids are UUIDs).
pub fn valid_session_id(id: &str) -> bool {
    (1..=100).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How calls are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): full jitter over the doubled back-off.
    fn backoff(&self, retry: u32) -> Duration {
        let cap = self.backoff_first.saturating_mul(1u32 << retry.min(16)).min(self.backoff_max);
        Duration::from_micros(rand::thread_rng().gen_range(0..=cap.as_micros() as u64))
    }
}

/// One Didit account.
#[derive(Debug)]
pub struct DiditClient {
    pub id: String,
    /// The webhook source of this account's results (its tenant is the account's).
    pub source: String,
    pub tenant: String,
    pub workflow_id: String,
    /// Push analysts' resolutions back (`[[providers]] push_back`).
    pub push_back: bool,
    base_url: String,
    api_key: Secret,
    http: reqwest::Client,
    policy: RetryPolicy,
    pub breaker: Breaker,
}

/// One attempt's result, before the retry decision.
enum Attempt {
    Done(Value),
    /// Retry after this long (or give up with the error).
    Retry(ProviderError, Option<Duration>),
    Fail(ProviderError),
}

impl DiditClient {
    pub fn new(c: &ProviderConfig, tenant: &str) -> DiditClient {
        DiditClient {
            id: c.id.clone(),
            source: c.source.clone(),
            tenant: tenant.to_owned(),
            workflow_id: c.workflow_id.clone(),
            push_back: c.push_back,
            base_url: c.base_url.trim_end_matches('/').to_owned(),
            api_key: c.api_key.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(c.timeout_ms))
                .user_agent(concat!("idstream/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("a client without custom TLS settings builds"),
            policy: RetryPolicy {
                timeout: Duration::from_millis(c.timeout_ms),
                max_retries: c.max_retries,
                backoff_first: Duration::from_millis(c.backoff_first_ms),
                backoff_max: Duration::from_millis(c.backoff_max_ms),
                max_retry_after: Duration::from_secs(c.max_retry_after_secs),
            },
            breaker: Breaker::new(&c.id, c.breaker_failures, Duration::from_secs(c.breaker_open_secs)),
        }
    }

    /// `POST /v3/session/`.
    pub async fn create_session(&self, req: &CreateSession) -> Result<CreatedSession, ProviderError> {
        let body = serde_json::to_value(req).expect("a CreateSession serialises");
        let v = self.send(Call::CreateSession, Method::POST, "/v3/session/".into(), Body::Json(body)).await?;
        serde_json::from_value(v).map_err(|e| self.bad_response(Call::CreateSession, e))
    }

    /// `GET /v3/session/{id}/decision/`: the session's status and its feature reports.
    pub async fn get_decision(&self, session_id: &str) -> Result<Value, ProviderError> {
        assert!(valid_session_id(session_id), "callers check session ids");
        let v = self
            .send(Call::GetDecision, Method::GET, format!("/v3/session/{session_id}/decision/"), Body::None)
            .await?;
        if v.get("status").and_then(Value::as_str).is_none() {
            return Err(self.bad_response(Call::GetDecision, "no `status` in the decision"));
        }
        Ok(v)
    }

    /// `PATCH /v3/session/{id}/update-status/` with `Approved`, `Declined` or `Resubmitted`.
    pub async fn update_status(
        &self,
        session_id: &str,
        new_status: &str,
        comment: Option<&str>,
    ) -> Result<Value, ProviderError> {
        assert!(valid_session_id(session_id), "callers check session ids");
        let mut body = serde_json::json!({ "new_status": new_status });
        if let Some(c) = comment {
            body["comment"] = Value::String(c.to_owned());
        }
        self.send(
            Call::UpdateStatus,
            Method::PATCH,
            format!("/v3/session/{session_id}/update-status/"),
            Body::Json(body),
        )
        .await
    }

    /// `POST /v3/id-verification/`: OCR and fraud checks of one identity document, outside any
    /// session.
    pub async fn id_verification(&self, req: &IdVerificationRequest) -> Result<IdVerificationResult, ProviderError> {
        let v = self.send(Call::IdVerification, Method::POST, "/v3/id-verification/".into(), Body::Form(req)).await?;
        let r: IdVerificationResult =
            serde_json::from_value(v).map_err(|e| self.bad_response(Call::IdVerification, e))?;
        if r.id_verification.get("status").and_then(Value::as_str).is_none() {
            return Err(self.bad_response(Call::IdVerification, "no `id_verification.status` in the answer"));
        }
        Ok(r)
    }

    fn bad_response(&self, call: Call, e: impl std::fmt::Display) -> ProviderError {
        tracing::warn!(provider = %self.id, call = call.name(), error = %e, "provider answer not understood");
        ProviderError::BadResponse { provider: self.id.clone() }
    }

    /// One logical call: breaker, attempts with retries, metrics.
    async fn send(&self, call: Call, method: Method, path: String, body: Body<'_>) -> Result<Value, ProviderError> {
        if let Err(wait) = self.breaker.admit() {
            self.count(call, "circuit_open", None);
            return Err(ProviderError::CircuitOpen {
                provider: self.id.clone(),
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let url = format!("{}{}", self.base_url, path);
        let mut retry = 0;
        loop {
            let started = Instant::now();
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.policy.timeout)
                .header("x-api-key", self.api_key.expose())
                .header("accept", "application/json");
            req = match &body {
                Body::None => req,
                Body::Json(b) => req.json(b),
                Body::Form(f) => req.multipart(f.form()),
            };
            let attempt = self.attempt(call, req.send().await).await;
            let outcome = match &attempt {
                Attempt::Done(_) => "ok",
                Attempt::Retry(e, _) | Attempt::Fail(e) => e.outcome(),
            };
            self.count(call, outcome, Some(started.elapsed()));
            match attempt {
                Attempt::Done(v) => {
                    self.breaker.record(true);
                    return Ok(v);
                }
                Attempt::Fail(e) => {
                    self.breaker.record(!e.is_provider_fault());
                    return Err(e);
                }
                Attempt::Retry(e, retry_after) => {
                    if retry >= self.policy.max_retries {
                        self.breaker.record(false);
                        return Err(e);
                    }
                    let wait = match retry_after {
                        Some(w) if w > self.policy.max_retry_after => {
                            tracing::warn!(provider = %self.id, call = call.name(), retry_after_secs = w.as_secs(), "provider asks to wait longer than max_retry_after_secs; giving up");
                            self.breaker.record(false);
                            return Err(e);
                        }
                        Some(w) => w,
                        None => self.policy.backoff(retry),
                    };
                    metrics::counter!("idstream_provider_retries_total", "provider" => self.id.clone(), "call" => call.name()).increment(1);
                    tracing::debug!(provider = %self.id, call = call.name(), outcome, wait_ms = wait.as_millis() as u64, "retrying provider call");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
            }
        }
    }

    async fn attempt(&self, call: Call, sent: reqwest::Result<reqwest::Response>) -> Attempt {
        let provider = || self.id.clone();
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                let err = ProviderError::Timeout { provider: provider() };
                // A creation (or a standalone check) that timed out may have happened: not
                // retried (module docs).
                return if call.not_idempotent() { Attempt::Fail(err) } else { Attempt::Retry(err, None) };
            }
            Err(e) => {
                // The error names the URL (no secret in it) and the cause.
                tracing::debug!(provider = %self.id, call = call.name(), error = %e, "provider unreachable");
                return Attempt::Retry(ProviderError::Unavailable { provider: provider(), status: None }, None);
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Attempt::Retry(ProviderError::RateLimited { provider: provider() }, retry_after);
        }
        if status.is_server_error() {
            return Attempt::Retry(
                ProviderError::Unavailable { provider: provider(), status: Some(status.as_u16()) },
                retry_after,
            );
        }
        if !status.is_success() {
            return Attempt::Fail(ProviderError::Rejected { provider: provider(), status: status.as_u16() });
        }
        match resp.bytes().await {
            // The provider answered, so the call took effect: a non-idempotent one is not repeated.
            Err(e) if e.is_timeout() && call.not_idempotent() => {
                Attempt::Fail(ProviderError::Timeout { provider: provider() })
            }
            Err(e) if e.is_timeout() => Attempt::Retry(ProviderError::Timeout { provider: provider() }, None),
            Err(_) => Attempt::Retry(ProviderError::Unavailable { provider: provider(), status: None }, None),
            Ok(b) if b.is_empty() => Attempt::Done(Value::Object(Default::default())),
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Fail(self.bad_response(call, e)),
            },
        }
    }

    fn count(&self, call: Call, outcome: &'static str, took: Option<Duration>) {
        metrics::counter!("idstream_provider_calls_total", "provider" => self.id.clone(), "call" => call.name(), "outcome" => outcome).increment(1);
        if let Some(t) = took {
            metrics::histogram!("idstream_provider_call_seconds", "provider" => self.id.clone(), "call" => call.name(), "outcome" => outcome)
                .record(t.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_a_doubling_cap() {
        let p = RetryPolicy {
            timeout: Duration::from_secs(1),
            max_retries: 5,
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..200 {
            assert!(p.backoff(0) <= Duration::from_millis(100));
            assert!(p.backoff(2) <= Duration::from_millis(400));
            assert!(p.backoff(10) <= Duration::from_millis(1000));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }

    #[test]
    fn session_ids_that_could_leave_the_path_are_refused() {
        assert!(valid_session_id("11111111-2222-3333-4444-555555555555"));
        for bad in ["", "../x", "a/b", "a?b", "a b", "%2e"] {
            assert!(!valid_session_id(bad), "{bad}");
        }
    }
}
