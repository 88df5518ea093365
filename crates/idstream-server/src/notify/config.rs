//! The `[notifications]` section and `[[endpoints]]` entries of the configuration.

use std::collections::BTreeMap;

use idstream_core::signature::Secret;
use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// How deliveries are made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Run the delivery worker in this process.
    pub enabled: bool,
    /// Allow endpoint URLs on loopback and private networks (development and tests only).
    pub allow_private_addresses: bool,
    /// Networks (CIDRs) endpoints may use even though they are private (never link-local).
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// The wait before each attempt, in milliseconds: the first is the first attempt's
    /// (normally 0), and the list's length is the number of attempts.
    pub retry_schedule_ms: Vec<u64>,
    /// The longest `Retry-After` honoured (seconds).
    pub max_retry_after_secs: u64,
    /// Sessions delivered at once per endpoint (each session's events go one after another).
    pub max_in_flight: usize,
    /// Events read ahead per endpoint while earlier ones are still being delivered.
    pub max_read_ahead: usize,
    /// The timeout of an endpoint that names none.
    pub default_timeout_secs: u64,
    /// Disable an endpoint whose attempts all failed for this long (0: never).
    pub disable_after_failing_secs: u64,
}

/// An endpoint defined in the config (read-only through the API). Its `Debug` shows neither
/// the secrets nor header values.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub kinds: Vec<String>,
    #[serde(deserialize_with = "secrets")]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("kinds", &self.kinds)
            .field("secrets", &self.secrets)
            .field("filter", &self.filter)
            .field("timeout_secs", &self.timeout_secs)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .finish()
    }
}

fn secrets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?.into_iter().map(Secret::new).collect())
}

/// Which events of the matching kinds an endpoint gets.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only events whose `outcome` is one of these (`approve`, `decline`, `review`, ...).
    #[serde(default)]
    pub outcome: Option<Vec<String>>,
}

/// Checks an endpoint id: 1 to 64 letters, digits, `-` and `_`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Headers idstream sets itself; an endpoint may not override them.
pub const RESERVED_HEADERS: &[&str] =
    &["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host"];

/// Checks the fields an endpoint has wherever it comes from; `Err((field, problem))`.
pub fn check_fields(
    kinds: &[String],
    timeout_secs: Option<u64>,
    headers: &BTreeMap<String, String>,
    rate: Option<f64>,
) -> Result<(), (&'static str, String)> {
    if kinds.is_empty() {
        return Err(("kinds", "must list at least one kind pattern".into()));
    }
    for k in kinds {
        crate::stream::auth::KindPattern::parse(k).map_err(|e| ("kinds", e))?;
    }
    if timeout_secs.is_some_and(|t| !(1..=60).contains(&t)) {
        return Err(("timeout_secs", "must be between 1 and 60".into()));
    }
    for (name, value) in headers {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || axum::http::HeaderValue::from_str(value).is_err()
        {
            return Err(("headers", format!("`{name}` is not a valid header")));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(("headers", format!("`{name}` is set by idstream")));
        }
    }
    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(("rate_limit_per_sec", "must be greater than 0".into()));
    }
    Ok(())
}

/// Validates `[notifications]` and every `[[endpoints]]` entry (URLs against the address
/// policy, without resolving names: that happens before every connection).
pub fn validate(n: &NotificationsConfig, endpoints: &[EndpointConfig]) -> Result<(), ConfigError> {
    if n.retry_schedule_ms.is_empty() {
        return Err(invalid("notifications.retry_schedule_ms", "must list at least one wait (the first attempt's)"));
    }
    for (key, v) in [
        ("notifications.max_in_flight", n.max_in_flight),
        ("notifications.max_read_ahead", n.max_read_ahead),
        ("notifications.default_timeout_secs", n.default_timeout_secs as usize),
    ] {
        if v == 0 {
            return Err(invalid(key, "must be greater than 0"));
        }
    }
    let policy =
        super::ssrf::AddressPolicy::from_config(n).map_err(|e| invalid("notifications.allowed_networks", e))?;
    let mut seen = std::collections::HashSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let key = |k: &str| format!("endpoints[{i}].{k}");
        if !valid_id(&e.id) {
            return Err(invalid(key("id"), "must be 1 to 64 letters, digits, '-' and '_'"));
        }
        if !seen.insert(e.id.as_str()) {
            return Err(invalid(key("id"), format!("`{}` is used by another endpoint", e.id)));
        }
        if e.tenant.is_empty() || e.tenant == "*" {
            return Err(invalid(key("tenant"), "must be a non-empty tenant name (not `*`)"));
        }
        policy.check_url(&e.url).map_err(|p| invalid(key("url"), p))?;
        if e.secrets.is_empty() {
            return Err(invalid(key("secrets"), "must list at least one `whsec_` secret"));
        }
        for (j, s) in e.secrets.iter().enumerate() {
            idstream_core::signature::standard::decode_secret(s)
                .map_err(|p| invalid(format!("endpoints[{i}].secrets[{j}]"), p))?;
        }
        check_fields(&e.kinds, e.timeout_secs, &e.headers, e.rate_limit_per_sec)
            .map_err(|(field, p)| invalid(key(field), p))?;
    }
    Ok(())
}
