//! Configuration: compiled-in commented defaults, then an optional TOML file, then `IDSTREAM_*`
//! environment variables (figment), validated once at start-up.
//!
//! Secrets are held as [`Secret`], whose `Debug` never prints them, so the config can be
//! logged. Validation errors name the key (`sources[1].secrets`) so a user can act on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use idstream_core::event::Provider;
use idstream_core::signature::{standard, Secret};

use crate::domain::Role;
use serde::Deserialize;

/// The commented defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../config.default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    pub stream: StreamConfig,
    pub decisions: DecisionsConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitsConfig,
    pub notifications: crate::notify::config::NotificationsConfig,
    #[serde(default)]
    pub endpoints: Vec<crate::notify::config::EndpointConfig>,
    pub dashboard: DashboardConfig,
    /// Provider accounts idstream calls (start verifications, poll results).
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    pub verifications: VerificationsConfig,
    pub documents: DocumentsConfig,
    pub reviews: ReviewsConfig,
}

/// The review queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewsConfig {
    /// A claim held this long returns the case to the queue (`review.released` by
    /// `system:idle`); 0 keeps claims until released.
    pub claim_idle_secs: u64,
    /// The dashboard's overview alerts when the oldest open case is older than this; 0: never.
    pub alert_oldest_open_secs: u64,
}

/// Document uploads (`POST /v1/verifications/document`) and where their bytes are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsConfig {
    /// Largest accepted file (each of `front_image`, `back_image`).
    pub max_file_bytes: u64,
    /// Largest accepted request (all parts together).
    pub max_request_bytes: u64,
    /// Each side of an image must be within these bounds (pixels).
    pub min_image_side_px: u32,
    pub max_image_side_px: u32,
    /// Stored bytes no document record refers to (a crash between storing and the provider's
    /// answer) are deleted once they are this old; checked every `orphan_sweep_secs`.
    pub orphan_grace_secs: u64,
    pub orphan_sweep_secs: u64,
    pub storage: DocumentStorageConfig,
}

/// Where documents' bytes go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentStorageConfig {
    pub kind: DocumentStorageKind,
    /// `local`: the directory; empty = `{data_dir}/documents`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3`: the bucket, and the key prefix every object is under.
    #[serde(default)]
    pub bucket: Option<String>,
    pub prefix: String,
    /// `s3`: an S3-compatible endpoint (MinIO, Ceph, ...); empty = AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `s3`: static credentials; without them the standard AWS chain is used (environment,
    /// web identity, container or instance credentials).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default, deserialize_with = "opt_secret")]
    pub secret_access_key: Option<Secret>,
    /// `s3`: allow a plain-http endpoint.
    #[serde(default)]
    pub allow_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStorageKind {
    Local,
    S3,
}

/// The kind of provider account (`[[providers]] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Didit,
}

/// A provider account (`[[providers]]`): the API key idstream calls the provider with. Its
/// tenant is its webhook source's tenant, where its results arrive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub id: String,
    pub kind: ProviderKind,
    /// Sent as `x-api-key`; never logged (`Secret`).
    #[serde(deserialize_with = "secret")]
    pub api_key: Secret,
    #[serde(default = "default_didit_url")]
    pub base_url: String,
    /// The workflow of sessions created without one.
    pub workflow_id: String,
    /// The `[[sources]] id` whose webhooks carry this account's results.
    pub source: String,
    /// Per attempt, connect to last byte.
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after the first attempt (5xx, 429, connection errors).
    #[serde(default = "default_provider_retries")]
    pub max_retries: u32,
    /// The first back-off; doubles per retry, with full jitter, up to `backoff_max_ms`.
    #[serde(default = "default_backoff_first_ms")]
    pub backoff_first_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A `Retry-After` longer than this is not waited for: the call fails at once.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
    /// Failed calls in a row that open the circuit breaker ...
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// ... for this long; then one trial call decides whether it closes.
    #[serde(default = "default_breaker_open_secs")]
    pub breaker_open_secs: u64,
    /// Push an analyst's resolution of this account's sessions back to the provider (Didit's
    /// update-status), so both systems agree (README "Verifications").
    #[serde(default)]
    pub push_back: bool,
}

impl ProviderConfig {
    /// A Didit account with the default timeouts, retries and breaker.
    pub fn didit(id: &str, api_key: Secret, base_url: &str, workflow_id: &str, source: &str) -> ProviderConfig {
        ProviderConfig {
            id: id.into(),
            kind: ProviderKind::Didit,
            api_key,
            base_url: base_url.into(),
            workflow_id: workflow_id.into(),
            source: source.into(),
            timeout_ms: default_provider_timeout_ms(),
            max_retries: default_provider_retries(),
            backoff_first_ms: default_backoff_first_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_retry_after_secs: default_max_retry_after_secs(),
            breaker_failures: default_breaker_failures(),
            breaker_open_secs: default_breaker_open_secs(),
            push_back: false,
        }
    }
}

fn default_didit_url() -> String {
    "https://verification.didit.me".into()
}
fn default_provider_timeout_ms() -> u64 {
    10_000
}
fn default_provider_retries() -> u32 {
    2
}
fn default_backoff_first_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    2_000
}
fn default_max_retry_after_secs() -> u64 {
    10
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_secs() -> u64 {
    30
}

/// Verifications started through idstream and the reconciliation of their results.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationsConfig {
    /// Poll the provider for sessions created through idstream that have no result yet.
    pub reconcile: bool,
    /// A session is polled once it is this old without a result ...
    pub reconcile_after_secs: u64,
    /// ... at most every this many seconds ...
    pub reconcile_interval_secs: u64,
    /// ... until it is this old (then it is left alone).
    pub reconcile_max_age_secs: u64,
    /// Push-back of analysts' resolutions (`[[providers]] push_back`): a failed push is retried
    /// after this long, doubling ...
    pub push_back_retry_first_secs: u64,
    /// ... up to this long ...
    pub push_back_retry_max_secs: u64,
    /// ... until the resolution is this old; then it is recorded as failed.
    pub push_back_max_age_secs: u64,
}

/// The analyst dashboard served at `/`, and the stream tokens its pages get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve the dashboard at `/` and sign page stream tokens (with idstream's own key when
    /// `[stream]` has no HS256 secret).
    pub enabled: bool,
    /// Lifetime of a stream token from `POST /v1/stream/token` (the page renews before it ends).
    pub stream_token_ttl_secs: u64,
}

/// Logins, sessions and OIDC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub session_idle_secs: u64,
    pub session_max_secs: u64,
    pub lockout_after: u32,
    pub lockout_secs: u64,
    pub secure_cookies: bool,
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// An OpenID Connect issuer people log in with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    #[serde(deserialize_with = "secret")]
    pub client_secret: Secret,
    pub redirect_url: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    #[serde(default)]
    pub role_claim: Option<String>,
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Role>,
    #[serde(default)]
    pub default_role: Option<Role>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub tenant_claim: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

fn default_username_claim() -> String {
    "preferred_username".into()
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    Ok(Secret::new(String::deserialize(d)?))
}

fn opt_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

/// Rate limits of the REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub read: Limit,
    pub write: Limit,
    pub backtest: Limit,
    pub login: Limit,
    pub per_ip: Limit,
}

/// A token bucket: `per_sec` on average, bursts of `burst`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub per_sec: f64,
    pub burst: u32,
}

/// Where the state lives: empty URL = the embedded SQLite file; `postgres://...` = PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: String,
    pub pool_size: usize,
}

/// The decision worker and the decision APIs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsConfig {
    /// Run the decision worker in this process.
    pub enabled: bool,
    /// Velocity counts other subjects seen with the same value within this many days.
    pub velocity_window_days: u64,
    /// The key of the identity hashes (blocklists, velocity); empty = `{data_dir}/blocklist.key`,
    /// created on first start.
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
    /// Lists rules read (`lists.high_risk_countries`), overriding the ruleset's defaults.
    #[serde(default)]
    pub lists: std::collections::BTreeMap<String, Vec<String>>,
    /// Scale-out: decision partitions (by session id), each decided by one node at a time.
    pub partitions: u32,
    /// Four-eyes activation: a ruleset is activated only when a second `policy_admin` or
    /// `admin` (not the one who asked) activates the same version.
    #[serde(default)]
    pub require_second_approver: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Empty: the embedded SQLite log; `nats://...`: NATS JetStream.
    pub url: String,
    pub nats_stream: String,
    pub nats_subject_prefix: String,
    pub nats_replicas: usize,
    pub nats_duplicate_window_secs: u64,
    pub nats_cache_mb: usize,
    pub max_batch: usize,
    pub queue_depth: usize,
    /// Refuse new events (503) once the log file reaches this size; 0 = no limit.
    pub max_db_bytes: u64,
    /// Remove entries older than this many days; 0 = keep everything.
    pub retention_days: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub id: String,
    pub provider: Provider,
    pub tenant: String,
    #[serde(deserialize_with = "secrets")]
    pub secrets: Vec<Secret>,
    #[serde(default = "default_tolerance")]
    pub timestamp_tolerance_secs: u64,
}

fn default_tolerance() -> u64 {
    300
}

fn secrets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?.into_iter().map(Secret::new).collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// The tenant this key acts for, or `*` for all.
    pub tenant: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// What it may do; absent: `admin` of its tenant (as before roles existed), with a warning.
    #[serde(default)]
    pub role: Option<Role>,
}

/// Live streams (`GET /v1/stream`, `GET /v1/stream/sse`): who may connect and how much each
/// connection may use. With no key configured the stream endpoints answer 503.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// HS256 secrets (raw bytes of the string); any may sign a token (rotation).
    #[serde(default, deserialize_with = "secrets")]
    pub hs256_secrets: Vec<Secret>,
    /// PEM public keys (RSA → RS256, EC P-256 → ES256).
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// A JWKS file of RSA / EC P-256 public keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    pub ping_interval_secs: u64,
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_message_bytes: usize,
    pub send_queue_depth: usize,
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: not found")]
    FileNotFound(PathBuf),
    /// Figment's message, which names the key and the file it came from.
    #[error("config: {0}")]
    Parse(String),
    #[error("config: `{key}` {problem}")]
    Invalid { key: String, problem: String },
}

pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

/// Top-level sections an `IDSTREAM_*` variable may set (`IDSTREAM_LOG__MAX_BATCH`); other
/// `IDSTREAM_*` variables (the log filter `IDSTREAM_LOG`, the test suite's
/// `IDSTREAM_TEST_POSTGRES_URL`) are not configuration.
const ENV_SECTIONS: &[&str] = &[
    "server",
    "log",
    "sources",
    "api_keys",
    "stream",
    "decisions",
    "store",
    "auth",
    "rate_limits",
    "providers",
    "verifications",
    "dashboard",
    "notifications",
    "endpoints",
];

impl Config {
    /// Loads defaults → `file` → environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::FileNotFound(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Env::prefixed("IDSTREAM_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            ENV_SECTIONS
                .iter()
                .any(|s| k.strip_prefix(s).is_some_and(|rest| rest.starts_with("__") || rest.starts_with('.')))
        }));
        Self::from_figment(fig)
    }

    /// Loads from a TOML string layered over the defaults (tests and embedding).
    pub fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml)))
    }

    fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        // Figment names keys with its profile prefix (`default.server.listen`); users wrote
        // `server.listen`, so show that.
        let cfg: Config =
            fig.extract().map_err(|e| ConfigError::Parse(e.to_string().replace("key \"default.", "key \"")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        if self.log.max_batch == 0 {
            return Err(invalid("log.max_batch", "must be greater than 0"));
        }
        if self.log.queue_depth == 0 {
            return Err(invalid("log.queue_depth", "must be greater than 0"));
        }
        self.validate_backends()?;
        self.validate_documents()?;
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = |k: &str| format!("sources[{i}].{k}");
            if s.id.is_empty() || !s.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(key("id"), "must be non-empty and use only letters, digits, '-' and '_'"));
            }
            if !seen.insert(s.id.as_str()) {
                return Err(invalid(key("id"), format!("`{}` is used by another source", s.id)));
            }
            if s.tenant.is_empty() || s.tenant == "*" {
                return Err(invalid(key("tenant"), "must be a non-empty tenant name (not `*`)"));
            }
            if s.secrets.is_empty() {
                return Err(invalid(key("secrets"), "must list at least one secret"));
            }
            for (j, secret) in s.secrets.iter().enumerate() {
                if secret.expose().is_empty() {
                    return Err(invalid(format!("sources[{i}].secrets[{j}]"), "is empty"));
                }
                if s.provider == Provider::Standard {
                    standard::decode_secret(secret).map_err(|p| invalid(format!("sources[{i}].secrets[{j}]"), p))?;
                }
            }
            if s.timestamp_tolerance_secs == 0 {
                return Err(invalid(key("timestamp_tolerance_secs"), "must be greater than 0"));
            }
        }
        self.validate_stream()?;
        if !(30..=86_400).contains(&self.dashboard.stream_token_ttl_secs) {
            return Err(invalid("dashboard.stream_token_ttl_secs", "must be between 30 and 86400"));
        }
        if self.decisions.velocity_window_days == 0 {
            return Err(invalid("decisions.velocity_window_days", "must be greater than 0"));
        }
        for (i, k) in self.api_keys.iter().enumerate() {
            if k.sha256.len() != 64 || hex::decode(&k.sha256).is_err() {
                return Err(invalid(
                    format!("api_keys[{i}].sha256"),
                    "must be 64 hex digits (the SHA-256 of the key; `idstream apikey new` makes one)",
                ));
            }
            if k.tenant.is_empty() {
                return Err(invalid(format!("api_keys[{i}].tenant"), "must be a tenant name or `*`"));
            }
        }
        self.validate_access()?;
        crate::notify::config::validate(&self.notifications, &self.endpoints)?;
        self.validate_providers()?;
        Ok(())
    }

    fn validate_documents(&self) -> Result<(), ConfigError> {
        let d = &self.documents;
        if d.max_file_bytes == 0 {
            return Err(invalid("documents.max_file_bytes", "must be greater than 0"));
        }
        if d.max_request_bytes < d.max_file_bytes {
            return Err(invalid("documents.max_request_bytes", "must be at least documents.max_file_bytes"));
        }
        if d.min_image_side_px == 0 || d.min_image_side_px > d.max_image_side_px {
            return Err(invalid(
                "documents.min_image_side_px",
                "must be greater than 0 and at most documents.max_image_side_px",
            ));
        }
        if d.orphan_sweep_secs == 0 {
            return Err(invalid("documents.orphan_sweep_secs", "must be greater than 0"));
        }
        let st = &d.storage;
        let prefix_ok = !st.prefix.is_empty()
            && st.prefix.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
            && st.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !prefix_ok {
            return Err(invalid(
                "documents.storage.prefix",
                "must be a non-empty path of letters, digits, '-', '_', '.' separated by '/'",
            ));
        }
        if st.kind == DocumentStorageKind::S3 {
            if st.bucket.as_deref().is_none_or(str::is_empty) {
                return Err(invalid("documents.storage.bucket", "is required with kind = \"s3\""));
            }
            if st.access_key_id.is_some() != st.secret_access_key.is_some() {
                return Err(invalid(
                    "documents.storage.secret_access_key",
                    "access_key_id and secret_access_key are set together (or neither, for the standard AWS chain)",
                ));
            }
            if let Some(e) = &st.endpoint {
                if !(e.starts_with("https://") || (e.starts_with("http://") && st.allow_http)) {
                    return Err(invalid(
                        "documents.storage.endpoint",
                        "must be an https URL (http only with allow_http = true)",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_providers(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |k: &str| format!("providers[{i}].{k}");
            if p.id.is_empty() || !p.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(key("id"), "must be non-empty and use only letters, digits, '-' and '_'"));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(invalid(key("id"), format!("`{}` is used by another provider", p.id)));
            }
            if p.api_key.expose().is_empty() {
                return Err(invalid(key("api_key"), "is empty"));
            }
            if !(p.base_url.starts_with("https://") || p.base_url.starts_with("http://")) {
                return Err(invalid(key("base_url"), "must be an http(s) URL"));
            }
            if p.workflow_id.is_empty() {
                return Err(invalid(key("workflow_id"), "must name the default workflow"));
            }
            match self.sources.iter().find(|s| s.id == p.source) {
                None => return Err(invalid(key("source"), format!("names no configured source (`{}`)", p.source))),
                Some(s) if s.provider != Provider::Didit => {
                    return Err(invalid(key("source"), "must be a source with provider = \"didit\""));
                }
                Some(_) => {}
            }
            if p.timeout_ms == 0 || p.breaker_failures == 0 || p.breaker_open_secs == 0 {
                return Err(invalid(
                    key("timeout_ms"),
                    "timeout_ms, breaker_failures and breaker_open_secs must be greater than 0",
                ));
            }
        }
        let v = &self.verifications;
        if v.reconcile_interval_secs == 0 {
            return Err(invalid("verifications.reconcile_interval_secs", "must be greater than 0"));
        }
        if v.reconcile_max_age_secs <= v.reconcile_after_secs {
            return Err(invalid("verifications.reconcile_max_age_secs", "must be greater than reconcile_after_secs"));
        }
        if v.push_back_retry_first_secs == 0 || v.push_back_retry_max_secs < v.push_back_retry_first_secs {
            return Err(invalid(
                "verifications.push_back_retry_first_secs",
                "must be greater than 0 and at most push_back_retry_max_secs",
            ));
        }
        if v.push_back_max_age_secs == 0 {
            return Err(invalid("verifications.push_back_max_age_secs", "must be greater than 0"));
        }
        Ok(())
    }

    fn validate_access(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        for (key, v) in [
            ("auth.session_idle_secs", a.session_idle_secs),
            ("auth.session_max_secs", a.session_max_secs),
            ("auth.lockout_secs", a.lockout_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if a.lockout_after == 0 {
            return Err(invalid("auth.lockout_after", "must be greater than 0"));
        }
        if let Some(o) = &a.oidc {
            for (key, url) in [("auth.oidc.issuer", &o.issuer), ("auth.oidc.redirect_url", &o.redirect_url)] {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(invalid(key, "must be an http(s) URL"));
                }
            }
            if o.client_id.is_empty() {
                return Err(invalid("auth.oidc.client_id", "must not be empty"));
            }
            if o.tenant.is_none() && o.tenant_claim.is_none() {
                return Err(invalid(
                    "auth.oidc.tenant",
                    "name the tenant of OIDC users (or set auth.oidc.tenant_claim)",
                ));
            }
            if o.role_claim.is_none() && o.default_role.is_none() {
                return Err(invalid("auth.oidc.default_role", "set a default role or a role_claim with roles"));
            }
        }
        let r = &self.rate_limits;
        for (key, l) in [
            ("rate_limits.read", r.read),
            ("rate_limits.write", r.write),
            ("rate_limits.backtest", r.backtest),
            ("rate_limits.login", r.login),
            ("rate_limits.per_ip", r.per_ip),
        ] {
            if !(l.per_sec > 0.0 && l.per_sec.is_finite()) || l.burst == 0 {
                return Err(invalid(key, "per_sec must be a positive number and burst at least 1"));
            }
        }
        for (i, p) in r.trusted_proxies.iter().enumerate() {
            if p.parse::<ipnet::IpNet>().is_err() && p.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    format!("rate_limits.trusted_proxies[{i}]"),
                    "must be an IP address or a CIDR network",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_backends(&self) -> Result<(), ConfigError> {
        let (log, store) = (&self.log, &self.store);
        if !log.url.is_empty()
            && !log.url.split(',').all(|u| u.trim().starts_with("nats://") || u.trim().starts_with("tls://"))
        {
            return Err(invalid("log.url", "must be empty (embedded) or nats://host:port[,nats://host:port...]"));
        }
        if !store.url.is_empty() && !store.url.starts_with("postgres://") && !store.url.starts_with("postgresql://") {
            return Err(invalid("store.url", "must be empty (embedded) or postgres://user@host:port/database"));
        }
        match (log.url.is_empty(), store.url.is_empty()) {
            (false, true) => {
                return Err(invalid("store.url", "is required with a NATS log (log.url): set a postgres:// URL"));
            }
            (true, false) => {
                return Err(invalid(
                    "log.url",
                    "is required with a PostgreSQL store: nodes share state only with a shared log (nats://...)",
                ));
            }
            _ => {}
        }
        let token_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !token_ok(&log.nats_stream) {
            return Err(invalid("log.nats_stream", "must be non-empty and use only letters, digits, '-' and '_'"));
        }
        if !token_ok(&log.nats_subject_prefix) {
            return Err(invalid("log.nats_subject_prefix", "must be one subject token: letters, digits, '-' and '_'"));
        }
        if !(1..=5).contains(&log.nats_replicas) {
            return Err(invalid("log.nats_replicas", "must be between 1 and 5"));
        }
        if log.nats_duplicate_window_secs == 0 {
            return Err(invalid("log.nats_duplicate_window_secs", "must be greater than 0"));
        }
        if store.pool_size < 2 {
            return Err(invalid("store.pool_size", "must be at least 2"));
        }
        if !(1..=1024).contains(&self.decisions.partitions) {
            return Err(invalid("decisions.partitions", "must be between 1 and 1024"));
        }
        Ok(())
    }

    fn validate_stream(&self) -> Result<(), ConfigError> {
        let s = &self.stream;
        for (key, value) in [
            ("stream.ping_interval_secs", s.ping_interval_secs as usize),
            ("stream.max_connections", s.max_connections),
            ("stream.max_subscriptions_per_connection", s.max_subscriptions_per_connection),
            ("stream.send_queue_depth", s.send_queue_depth),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if s.max_message_bytes < 256 {
            return Err(invalid("stream.max_message_bytes", "must be at least 256 (a subscribe message must fit)"));
        }
        for (i, secret) in s.hs256_secrets.iter().enumerate() {
            // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
            if secret.expose().len() < 32 {
                return Err(invalid(format!("stream.hs256_secrets[{i}]"), "must be at least 32 bytes long"));
            }
        }
        // Loads the key files now, so a bad path or key stops start-up with the key named.
        crate::stream::auth::Authenticator::from_config(s)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.max_body_bytes, 1 << 20);
        assert!(c.sources.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nbogus = 1", "bogus"),
            ("[[sources]]\nid = \"a b\"\nprovider = \"didit\"\ntenant = \"t\"\nsecrets = [\"s\"]", "sources[0].id"),
            ("[[sources]]\nid = \"a\"\nprovider = \"sumsub\"\ntenant = \"t\"\nsecrets = [\"s\"]", "provider"),
            ("[[sources]]\nid = \"a\"\nprovider = \"didit\"\ntenant = \"t\"\nsecrets = []", "sources[0].secrets"),
            (
                "[[sources]]\nid = \"a\"\nprovider = \"standard\"\ntenant = \"t\"\nsecrets = [\"nope\"]",
                "sources[0].secrets[0]",
            ),
            ("[[api_keys]]\nname = \"k\"\ntenant = \"t\"\nsha256 = \"xyz\"", "api_keys[0].sha256"),
            ("[stream]\nhs256_secrets = [\"short\"]", "stream.hs256_secrets[0]"),
            ("[stream]\nsend_queue_depth = 0", "stream.send_queue_depth"),
            ("[stream]\npublic_keys = [\"/nonexistent.pem\"]", "stream.public_keys[0]"),
            ("[stream]\njwks_file = \"/nonexistent.json\"", "stream.jwks_file"),
            ("[log]\nurl = \"nats://127.0.0.1:4222\"", "store.url"),
            ("[store]\nurl = \"postgres://u@h/db\"", "log.url"),
            ("[log]\nurl = \"http://x\"", "log.url"),
            ("[log]\nnats_stream = \"a.b\"", "log.nats_stream"),
            ("[decisions]\npartitions = 0", "decisions.partitions"),
            ("[[api_keys]]\nname = \"k\"\ntenant = \"t\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrole = \"boss\"", "role"),
            ("[rate_limits]\nread = { per_sec = 0.0, burst = 1 }", "rate_limits.read"),
            ("[rate_limits]\ntrusted_proxies = [\"not-a-net\"]", "rate_limits.trusted_proxies[0]"),
            ("[auth]\nlockout_after = 0", "auth.lockout_after"),
            (
                "[[providers]]\nid = \"d\"\nkind = \"didit\"\napi_key = \"k\"\nworkflow_id = \"w\"\nsource = \"nope\"",
                "providers[0].source",
            ),
            ("[verifications]\nreconcile_interval_secs = 0", "verifications.reconcile_interval_secs"),
        ];
        for (toml, key) in cases {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?}: error {err:?} does not name {key}");
        }
    }

    /// `IDSTREAM_LOG` is the log filter, not the `[log]` section.
    #[test]
    #[allow(clippy::result_large_err)] // figment's own Jail signature
    fn the_log_filter_variable_is_not_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("IDSTREAM_LOG", "warn");
            jail.set_env("IDSTREAM_LOG__MAX_BATCH", "77");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.log.max_batch, 77);
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_toml(
            "[[sources]]\nid = \"a\"\nprovider = \"didit\"\ntenant = \"t\"\nsecrets = [\"topsecret\"]",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn provider_api_keys_never_print_and_defaults_apply() {
        let c = Config::from_toml(
            "[[sources]]\nid = \"a\"\nprovider = \"didit\"\ntenant = \"t\"\nsecrets = [\"s\"]\n\
             [[providers]]\nid = \"d\"\nkind = \"didit\"\napi_key = \"topsecret-api\"\nworkflow_id = \"w\"\nsource = \"a\"",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("topsecret-api"));
        assert_eq!(c.providers[0].base_url, "https://verification.didit.me");
        assert_eq!(c.providers[0].max_retries, 2);
    }
}
