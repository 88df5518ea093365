//! Stream authentication: JWT verification and minting.
//!
//! A stream client presents a JWT whose claims say which tenant it belongs to and which event
//! kinds it may read. Every key accepts exactly one algorithm, fixed by the key's type
//! (HS256 secret → HS256, RSA public key → RS256, EC P-256 public key → ES256), so a token
//! cannot choose how it is checked: `alg: none` and algorithm confusion (an RS256 public key
//! used as an HMAC secret) are refused before any signature is computed.
//!
//! This module must never log or return a token or a secret; errors say what is wrong with a
//! token, not what it contains.

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError, StreamConfig};

/// A pattern over event kinds: `*` (everything), `prefix.*` (every kind starting `prefix.`), or
/// an exact kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindPattern(String);

impl KindPattern {
    pub fn parse(s: &str) -> Result<KindPattern, String> {
        let s = s.trim();
        let body = s.strip_suffix(".*").unwrap_or(s);
        if s != "*" && (body.is_empty() || body.contains('*') || body.chars().any(char::is_whitespace)) {
            return Err(format!(
                "kind pattern `{s}` is not valid: use `*`, `prefix.*` or an exact kind such as `decision.made`"
            ));
        }
        Ok(KindPattern(s.to_owned()))
    }

    pub fn matches(&self, kind: &str) -> bool {
        let p = self.0.as_str();
        if p == "*" {
            return true;
        }
        match p.strip_suffix('*') {
            // `verification.*`: the prefix keeps its dot, so `verificationx` does not match.
            Some(prefix) => kind.starts_with(prefix),
            None => kind == p,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `kind` matches any of `patterns`.
pub fn any_matches(patterns: &[KindPattern], kind: &str) -> bool {
    patterns.iter().any(|p| p.matches(kind))
}

/// The claims of a stream token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub kinds: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub tenant: String,
    pub kinds: Vec<KindPattern>,
    /// Unix seconds; the stream is closed (4403) when this passes.
    pub exp: u64,
}

/// Why a token was refused. The text goes into a WebSocket close reason (≤ 123 bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: send `Authorization: Bearer <jwt>`, `?token=` or an auth message")]
    Missing,
    #[error("invalid token: malformed")]
    Malformed,
    #[error("invalid token: algorithm {0} is not accepted")]
    AlgorithmNotAllowed(String),
    #[error("invalid token: signature does not verify")]
    BadSignature,
    #[error("invalid token: expired")]
    Expired,
    #[error("invalid token: not valid yet (nbf)")]
    NotYetValid,
    #[error("invalid token: {0}")]
    InvalidClaims(String),
}

impl AuthError {
    /// Stable, machine-readable code (used by SSE answers and the error message).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "token_expired",
            _ => "invalid_token",
        }
    }
}

struct VerifyKey {
    alg: Algorithm,
    /// JWKS keys are chosen by `kid`; configured secrets and PEM files have none.
    kid: Option<String>,
    key: DecodingKey,
}

/// Verifies stream tokens against the configured keys.
pub struct Authenticator {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys include HMAC secrets: print only what kinds of keys there are.
        let algs: Vec<_> = self.keys.iter().map(|k| format!("{:?}", k.alg)).collect();
        f.debug_struct("Authenticator").field("algorithms", &algs).finish()
    }
}

impl Authenticator {
    /// Builds the key set; `None` when no key is configured (streaming disabled).
    pub fn from_config(cfg: &StreamConfig) -> Result<Option<Authenticator>, ConfigError> {
        let mut keys = Vec::new();
        for s in &cfg.hs256_secrets {
            keys.push(VerifyKey {
                alg: Algorithm::HS256,
                kid: None,
                key: DecodingKey::from_secret(s.expose().as_bytes()),
            });
        }
        for (i, path) in cfg.public_keys.iter().enumerate() {
            let key = format!("stream.public_keys[{i}]");
            let pem = std::fs::read(path).map_err(|e| invalid(&key, format!("cannot read {}: {e}", path.display())))?;
            keys.push(pem_key(&pem).map_err(|p| invalid(&key, format!("{}: {p}", path.display())))?);
        }
        if let Some(path) = &cfg.jwks_file {
            keys.extend(jwks_keys(path).map_err(|p| invalid("stream.jwks_file", format!("{}: {p}", path.display())))?);
        }
        Ok((!keys.is_empty()).then_some(Authenticator { keys }))
    }

    /// Adds an HS256 secret (idstream's own page-token key) to `auth`, making one if needed.
    pub fn with_hs256(auth: Option<Authenticator>, secret: &[u8]) -> Authenticator {
        let mut auth = auth.unwrap_or(Authenticator { keys: Vec::new() });
        auth.keys.push(VerifyKey { alg: Algorithm::HS256, kid: None, key: DecodingKey::from_secret(secret) });
        auth
    }

    /// Verifies `token` (signature with a key of the token's own, allowed algorithm; `exp`,
    /// `nbf`; the claims idstream needs).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let alg_name = header_alg(token)?;
        // `none` and any unknown algorithm are refused here, before jsonwebtoken sees them.
        let alg: Algorithm = alg_name.parse().map_err(|_| AuthError::AlgorithmNotAllowed(short(&alg_name)))?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let candidates: Vec<&VerifyKey> = self
            .keys
            .iter()
            .filter(|k| k.alg == alg)
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::AlgorithmNotAllowed(alg_name));
        }
        let mut validation = Validation::new(alg);
        // No leeway: the connection is closed at exactly `exp`, the same instant checked here.
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let mut last = AuthError::BadSignature;
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => return identity(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => {
                            AuthError::InvalidClaims("claims must include sub, tenant, kinds (array) and exp".into())
                        }
                        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed(alg_name.clone()),
                        _ => AuthError::Malformed,
                    };
                    // A well-signed but expired token is expired whichever key comes next.
                    break;
                }
            }
        }
        Err(last)
    }
}

fn short(s: &str) -> String {
    s.chars().take(16).collect()
}

/// The header's `alg`, read without trusting anything else in the token.
fn header_alg(token: &str) -> Result<String, AuthError> {
    let head = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    #[derive(Deserialize)]
    struct H {
        alg: String,
    }
    let h: H = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    Ok(h.alg)
}

fn identity(c: Claims) -> Result<Identity, AuthError> {
    if c.tenant.is_empty() || c.tenant == "*" {
        return Err(AuthError::InvalidClaims("`tenant` must name one tenant".into()));
    }
    if c.kinds.is_empty() {
        return Err(AuthError::InvalidClaims("`kinds` must list at least one pattern".into()));
    }
    let kinds = c
        .kinds
        .iter()
        .map(|k| KindPattern::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AuthError::InvalidClaims("`kinds` has an invalid pattern".into()))?;
    Ok(Identity { sub: c.sub, tenant: c.tenant, kinds, exp: c.exp })
}

fn pem_key(pem: &[u8]) -> Result<VerifyKey, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(VerifyKey { alg: Algorithm::RS256, kid: None, key });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(VerifyKey { alg: Algorithm::ES256, kid: None, key });
    }
    Err("not a PEM RSA or EC public key".into())
}

fn jwks_keys(path: &Path) -> Result<Vec<VerifyKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => return Err(format!("keys[{i}]: only RSA and EC P-256 public keys are accepted")),
        };
        if let Some(declared) = jwk.common.key_algorithm {
            if format!("{declared:?}") != format!("{alg:?}") {
                return Err(format!("keys[{i}]: `alg` {declared:?} does not fit the key type (expected {alg:?})"));
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
        keys.push(VerifyKey { alg, kid: jwk.common.key_id.clone(), key });
    }
    if keys.is_empty() {
        return Err("holds no key".into());
    }
    Ok(keys)
}

/// Mints an HS256 token (for `idstream token`, tests and operations).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_patterns() {
        let cases = [
            ("*", "anything.at_all", true),
            ("verification.*", "verification.status_updated", true),
            ("verification.*", "verificationx.status", false),
            ("verification.*", "decision.made", false),
            ("decision.made", "decision.made", true),
            ("decision.made", "decision.made2", false),
        ];
        for (p, kind, want) in cases {
            assert_eq!(KindPattern::parse(p).unwrap().matches(kind), want, "{p} vs {kind}");
        }
        for bad in ["", "a*", "*.x", "a.*.b", ".*", "a b"] {
            assert!(KindPattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
