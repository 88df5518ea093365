//! `Idempotency-Key` on every POST: the first answer is stored (per caller and key, at least
//! 24 h); a retry with the same key and the same request gets it again with
//! `Idempotent-Replayed: true`; the same key with a different request is `422`; a retry while
//! the first is still running is `409`. Answers that carried a secret (a new API key or endpoint
//! secret, shown once) are stored without it, and a replay says so.
//!
//! Stored in the store, so a retry reaching another node is answered the same way.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::extract::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::access::AccessOp;
use crate::store::{Op, Txn, TxnError};
use crate::util::now_us;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// How long answers are kept (a record is removed after twice this).
pub const KEEP_US: i64 = 24 * 3600 * 1_000_000;
/// A first request still unanswered after this long is taken to have died: a retry runs again.
const STALE_US: i64 = 60 * 1_000_000;
/// Largest request body the middleware reads to fingerprint it.
const MAX_BODY: usize = 64 << 20;

/// JSON fields of an answer that must never be stored (shown once).
#[derive(Debug, Clone, Copy)]
struct SecretFields(&'static [&'static str]);

/// An answer holding secrets: stored for replays without `fields`.
pub struct Secret<T> {
    inner: T,
    fields: &'static [&'static str],
}

impl<T> Secret<T> {
    pub fn new(inner: T, fields: &'static [&'static str]) -> Secret<T> {
        Secret { inner, fields }
    }
}

impl<T: IntoResponse> IntoResponse for Secret<T> {
    fn into_response(self) -> Response {
        let mut resp = self.inner.into_response();
        resp.extensions_mut().insert(SecretFields(self.fields));
        resp
    }
}

/// The middleware (after authentication: the caller scopes the keys).
pub async fn idempotent(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).map(|v| v.to_str().map(str::to_owned)) else {
        return next.run(req).await;
    };
    let key = match key {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => k,
        _ => {
            return ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
            .into_response()
        }
    };
    // Public routes (logins) are not replayed: no caller to scope them to.
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return next.run(req).await;
    };
    let scope = format!("{}/{}", caller.tenant, caller.id);
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
                .into_response()
        }
    };
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(parts.method.as_str());
        h.update([0]);
        h.update(parts.uri.to_string());
        h.update([0]);
        h.update(&bytes);
        hex::encode(h.finalize())
    };
    match st.store.idempotent(&scope, &key).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Some(r)) if r.fingerprint != fingerprint => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request: use a new key for a new request",
            )
            .into_response()
        }
        Ok(Some(r)) => match r.status {
            Some(status) => return replay(status, r.body.unwrap_or_default()),
            None if r.created_at_us >= now_us() - STALE_US => return in_progress(),
            None => {}
        },
        Ok(None) => {}
    }
    let now = now_us();
    let begin = AccessOp::BeginIdempotent {
        scope: scope.clone(),
        key: key.clone(),
        fingerprint,
        now_us: now,
        stale_before_us: now - STALE_US,
    };
    match st.store.commit(Txn { entries: Vec::new(), ops: vec![Op::Access(begin)] }).await {
        Ok(_) => {}
        Err(TxnError::Conflict(_)) => return in_progress(),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = resp.status();
    // A server-side failure is not kept: the retry should run again.
    let op = if status.is_server_error() {
        AccessOp::AbandonIdempotent { scope, key }
    } else {
        let secrets = resp.extensions().get::<SecretFields>().copied();
        let (resp_parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY).await.unwrap_or_default();
        let stored = stored_body(&body, secrets);
        let op = AccessOp::FinishIdempotent { scope, key, status: status.as_u16(), body: stored };
        if let Err(e) = st.store.commit(Txn { entries: Vec::new(), ops: vec![Op::Access(op)] }).await {
            tracing::warn!(error = %e, "could not store an idempotent answer; a retry will run again");
        }
        return Response::from_parts(resp_parts, Body::from(body));
    };
    if let Err(e) = st.store.commit(Txn { entries: Vec::new(), ops: vec![Op::Access(op)] }).await {
        tracing::warn!(error = %e, "could not forget an idempotent request");
    }
    resp
}

/// The answer as stored: without its secret fields, saying which were left out.
fn stored_body(body: &Bytes, secrets: Option<SecretFields>) -> Vec<u8> {
    let Some(SecretFields(fields)) = secrets else { return body.to_vec() };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut m)) => {
            for f in fields {
                m.remove(*f);
            }
            m.insert(
                "secret_omitted".into(),
                format!("{} was shown only in the first answer; it is not kept", fields.join(", ")).into(),
            );
            serde_json::to_vec(&m).expect("JSON serialises")
        }
        // Not an object: keep nothing rather than a secret.
        _ => b"{}".to_vec(),
    }
}

fn replay(status: u16, body: Vec<u8>) -> Response {
    let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

fn in_progress() -> Response {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "a request with this Idempotency-Key is still running: retry later",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_left_out_of_stored_answers() {
        let body = Bytes::from(r#"{"id":"k1","api_key":"ids_secret","name":"ci"}"#);
        let stored = stored_body(&body, Some(SecretFields(&["api_key"])));
        let v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(v["id"], "k1");
        assert!(v.get("api_key").is_none());
        assert!(v["secret_omitted"].as_str().unwrap().contains("api_key"));
        assert!(!String::from_utf8(stored).unwrap().contains("ids_secret"));
        assert_eq!(stored_body(&Bytes::from("[1]"), Some(SecretFields(&["x"]))), b"{}");
        assert_eq!(stored_body(&body, None), body.to_vec());
    }
}
