//! Webhook signature verification: Didit's three schemes and Standard Webhooks.
//!
//! Everything here is a pure function of (headers, body, secrets, now). Comparisons of MACs are
//! constant-time (`hmac::Mac::verify_slice`). Secrets are wrapped in [`Secret`] so they never
//! reach a log line through `Debug`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::canonical::{canonical_json, CanonicalError};

type HmacSha256 = Hmac<Sha256>;

/// A webhook secret. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is used as a key.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which check authenticated a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// Didit `X-Signature-V2`: HMAC of the canonical JSON; covers the whole body.
    DiditV2,
    /// Didit `X-Signature`: HMAC of the raw bytes; covers the whole body.
    DiditRaw,
    /// Didit `X-Signature-Simple`: covers only timestamp, session id, status and type. The
    /// `decision`, `metadata` and `vendor_data` of such an event are unauthenticated.
    DiditSimple,
    /// Standard Webhooks `v1` (HMAC-SHA256 over `id.timestamp.body`).
    StandardV1,
    /// Not a webhook: the result was obtained by polling Didit's decision API with the
    /// provider account's API key (reconciliation of a lost webhook, or a refresh). The whole
    /// body came over an authenticated TLS call, so it counts as covered.
    DiditApi,
}

impl Scheme {
    /// True when the scheme authenticates every byte of the body.
    pub fn covers_body(self) -> bool {
        !matches!(self, Scheme::DiditSimple)
    }
}

/// Why a webhook was refused before its content was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature: expected header {0}")]
    MissingSignature(&'static str),
    #[error("invalid signature: no configured secret matches {0}")]
    InvalidSignature(&'static str),
    #[error("stale timestamp: signed timestamp {timestamp} is {skew_secs} s away from server time (tolerance {tolerance_secs} s)")]
    StaleTimestamp { timestamp: i64, skew_secs: u64, tolerance_secs: u64 },
    #[error("X-Timestamp header ({header}) disagrees with the signed body timestamp ({body})")]
    TimestampMismatch { header: String, body: i64 },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` {problem}")]
    InvalidField { field: &'static str, problem: &'static str },
    #[error("missing required header `{0}`")]
    MissingHeader(&'static str),
    #[error("header `{header}` {problem}")]
    InvalidHeader { header: &'static str, problem: &'static str },
}

impl VerifyError {
    /// True for errors that mean "not authenticated" (HTTP 401); the rest are malformed
    /// input from an authenticated sender (HTTP 400).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            VerifyError::MissingSignature(_)
                | VerifyError::InvalidSignature(_)
                | VerifyError::StaleTimestamp { .. }
                | VerifyError::TimestampMismatch { .. }
        )
    }

    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingSignature(_) => "missing_signature",
            VerifyError::InvalidSignature(_) => "invalid_signature",
            VerifyError::StaleTimestamp { .. } => "stale_timestamp",
            VerifyError::TimestampMismatch { .. } => "timestamp_mismatch",
            VerifyError::MalformedJson(_) => "malformed_json",
            VerifyError::MissingField(_) | VerifyError::InvalidField { .. } => "invalid_field",
            VerifyError::MissingHeader(_) | VerifyError::InvalidHeader { .. } => "invalid_header",
        }
    }
}

fn check_freshness(timestamp: i64, now: i64, tolerance_secs: u64) -> Result<(), VerifyError> {
    let skew = now.abs_diff(timestamp);
    if skew > tolerance_secs {
        return Err(VerifyError::StaleTimestamp { timestamp, skew_secs: skew, tolerance_secs });
    }
    Ok(())
}

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// True when `hex_sig` is the HMAC-SHA256 of `msg` under `key` (constant-time comparison).
fn hmac_hex_matches(key: &[u8], msg: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let mut m = mac(key);
    m.update(msg);
    m.verify_slice(&sig).is_ok()
}

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut m = mac(key);
    m.update(msg);
    hex::encode(m.finalize().into_bytes())
}

pub mod didit {
    //! Didit webhooks: `X-Signature-V2`, then `X-Signature`, then `X-Signature-Simple`.

    use super::*;

    /// The signature-related headers of a Didit webhook (absent header = `None`).
    #[derive(Debug, Default, Clone)]
    pub struct Headers<'a> {
        pub signature_v2: Option<&'a str>,
        pub signature_raw: Option<&'a str>,
        pub signature_simple: Option<&'a str>,
        pub timestamp: Option<&'a str>,
    }

    /// A verified Didit webhook: the scheme that matched and the parsed body.
    #[derive(Debug, Clone)]
    pub struct Verified {
        pub scheme: Scheme,
        pub body: serde_json::Value,
        pub timestamp: i64,
    }

    /// Signs `body` the way Didit's `X-Signature-V2` does.
    pub fn sign_v2(secret: &Secret, body: &[u8]) -> Result<String, CanonicalError> {
        Ok(hmac_hex(secret.expose().as_bytes(), &canonical_json(body)?))
    }

    /// Signs `body` the way Didit's `X-Signature` does.
    pub fn sign_raw(secret: &Secret, body: &[u8]) -> String {
        hmac_hex(secret.expose().as_bytes(), body)
    }

    /// The message `X-Signature-Simple` signs.
    pub fn simple_message(timestamp: i64, session_id: &str, status: &str, webhook_type: &str) -> String {
        format!("{timestamp}:{session_id}:{status}:{webhook_type}")
    }

    /// Signs the four fields the way Didit's `X-Signature-Simple` does.
    pub fn sign_simple(secret: &Secret, timestamp: i64, session_id: &str, status: &str, webhook_type: &str) -> String {
        hmac_hex(secret.expose().as_bytes(), simple_message(timestamp, session_id, status, webhook_type).as_bytes())
    }

    fn any_secret(secrets: &[Secret], msg: &[u8], sig: &str) -> bool {
        // Check every secret even after a match so timing does not reveal which one matched.
        secrets.iter().fold(false, |ok, s| hmac_hex_matches(s.expose().as_bytes(), msg, sig) | ok)
    }

    /// The Simple message of a parsed body, if it has the four fields.
    fn simple_fields(body: &serde_json::Value) -> Option<String> {
        let ts = body.get("timestamp")?.as_i64()?;
        let sid = body.get("session_id")?.as_str()?;
        let status = body.get("status")?.as_str()?;
        let wt = body.get("webhook_type")?.as_str()?;
        Some(simple_message(ts, sid, status, wt))
    }

    /// Verifies a Didit webhook: V2, then raw, then Simple (the first present one that matches
    /// wins; a present header that does not match falls through to the next). Then freshness
    /// on the signed body `timestamp`, which must agree with `X-Timestamp` when both are sent.
    pub fn verify(
        headers: &Headers<'_>,
        body: &[u8],
        secrets: &[Secret],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<Verified, VerifyError> {
        if headers.signature_v2.is_none() && headers.signature_raw.is_none() && headers.signature_simple.is_none() {
            return Err(VerifyError::MissingSignature("X-Signature-V2, X-Signature or X-Signature-Simple"));
        }
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(body);

        let mut scheme = None;
        if let (Some(sig), Ok(_)) = (headers.signature_v2, &parsed) {
            if let Ok(canon) = canonical_json(body) {
                if any_secret(secrets, &canon, sig) {
                    scheme = Some(Scheme::DiditV2);
                }
            }
        }
        if scheme.is_none() {
            if let Some(sig) = headers.signature_raw {
                if any_secret(secrets, body, sig) {
                    scheme = Some(Scheme::DiditRaw);
                }
            }
        }
        if scheme.is_none() {
            if let (Some(sig), Ok(v)) = (headers.signature_simple, &parsed) {
                if let Some(msg) = simple_fields(v) {
                    if any_secret(secrets, msg.as_bytes(), sig) {
                        scheme = Some(Scheme::DiditSimple);
                    }
                }
            }
        }
        let Some(scheme) = scheme else {
            let which = match (headers.signature_v2, headers.signature_raw, headers.signature_simple) {
                (Some(_), None, None) => "X-Signature-V2",
                (None, Some(_), None) => "X-Signature",
                (None, None, Some(_)) => "X-Signature-Simple",
                _ => "any of the signature headers sent",
            };
            return Err(VerifyError::InvalidSignature(which));
        };

        // Authenticated from here on: errors are about content (400), except freshness.
        let body = parsed.map_err(|e| VerifyError::MalformedJson(e.to_string()))?;
        if !body.is_object() {
            return Err(VerifyError::MalformedJson("body must be a JSON object".into()));
        }
        let timestamp = match body.get("timestamp") {
            None | Some(serde_json::Value::Null) => return Err(VerifyError::MissingField("timestamp")),
            Some(v) => v.as_i64().ok_or(VerifyError::InvalidField {
                field: "timestamp",
                problem: "must be an integer Unix time in seconds",
            })?,
        };
        if let Some(h) = headers.timestamp {
            if h.trim().parse::<i64>().ok() != Some(timestamp) {
                return Err(VerifyError::TimestampMismatch { header: h.chars().take(32).collect(), body: timestamp });
            }
        }
        check_freshness(timestamp, now, tolerance_secs)?;
        Ok(Verified { scheme, body, timestamp })
    }
}

pub mod standard {
    //! Standard Webhooks (<https://www.standardwebhooks.com>), symmetric `v1` signatures.

    use super::*;

    /// The three Standard Webhooks headers.
    #[derive(Debug, Default, Clone)]
    pub struct Headers<'a> {
        pub id: Option<&'a str>,
        pub timestamp: Option<&'a str>,
        pub signature: Option<&'a str>,
    }

    #[derive(Debug, Clone)]
    pub struct Verified {
        pub webhook_id: String,
        pub timestamp: i64,
        pub body: serde_json::Value,
    }

    /// Decodes a `whsec_` secret into its key bytes.
    pub fn decode_secret(secret: &Secret) -> Result<Vec<u8>, &'static str> {
        let b64 = secret.expose().strip_prefix("whsec_").ok_or("must start with `whsec_`")?;
        base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "is not valid base64 after `whsec_`")
    }

    /// The `v1,<base64>` signature of a message.
    pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut m = mac(key);
        m.update(id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
    }

    /// Verifies a Standard Webhooks request against any of `keys` (already decoded).
    pub fn verify(
        headers: &Headers<'_>,
        body: &[u8],
        keys: &[Vec<u8>],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<Verified, VerifyError> {
        let sig_header = headers.signature.ok_or(VerifyError::MissingSignature("webhook-signature"))?;
        let id = headers.id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
        if id.is_empty() || id.len() > 256 {
            return Err(VerifyError::InvalidHeader { header: "webhook-id", problem: "must be 1 to 256 characters" });
        }
        let ts_str = headers.timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
        let timestamp: i64 = ts_str.trim().parse().map_err(|_| VerifyError::InvalidHeader {
            header: "webhook-timestamp",
            problem: "must be an integer Unix time in seconds",
        })?;

        let mut content = Vec::with_capacity(id.len() + body.len() + 24);
        content.extend_from_slice(id.as_bytes());
        content.push(b'.');
        content.extend_from_slice(ts_str.trim().as_bytes());
        content.push(b'.');
        content.extend_from_slice(body);

        let mut matched = false;
        for candidate in sig_header.split_whitespace() {
            let Some(b64) = candidate.strip_prefix("v1,") else {
                continue; // other versions (e.g. v1a, asymmetric) are not configured here
            };
            let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                continue;
            };
            for key in keys {
                let mut m = mac(key);
                m.update(&content);
                matched |= m.verify_slice(&sig).is_ok();
            }
        }
        if !matched {
            return Err(VerifyError::InvalidSignature("webhook-signature"));
        }
        check_freshness(timestamp, now, tolerance_secs)?;
        let body: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| VerifyError::MalformedJson(e.to_string()))?;
        if !body.is_object() {
            return Err(VerifyError::MalformedJson("body must be a JSON object".into()));
        }
        Ok(Verified { webhook_id: id.to_string(), timestamp, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_published_vector() {
        let key = standard::decode_secret(&Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")).unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = standard::sign(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
