//! Calls idstream makes *to* identity providers: starting hosted verification sessions and
//! fetching results whose webhooks never arrived.
//!
//! - [`didit`]: the Didit API client (timeouts, retries with back-off and jitter honouring
//!   `Retry-After`, metrics per provider, call and outcome).
//! - [`breaker`]: a circuit breaker per provider account.
//! - [`push_back`]: the background task that sets an analyst's resolution at the provider
//!   (optional per account), recording the outcome as a `review.pushed_back` event.
//! - [`reconcile`]: the background task that polls sessions created through idstream which
//!   have no result yet, and appends what it finds as the verification event a webhook would
//!   have brought (same dedupe key, so a late webhook is not a second result).
//!
//! This module never logs an API key, a response body or a hosted-session URL (a bearer
//! capability to do the user's verification).

pub mod breaker;
pub mod didit;
pub mod push_back;
pub mod reconcile;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Config;
pub use didit::DiditClient;

/// Why a provider call failed. The API answers these as 502 or 504 with the code below; no
/// variant carries provider text (it could echo personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider `{provider}` did not answer in time")]
    Timeout { provider: String },
    #[error("provider `{provider}` is unavailable{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Unavailable { provider: String, status: Option<u16> },
    #[error("provider `{provider}` is rate limiting our calls")]
    RateLimited { provider: String },
    #[error("provider `{provider}` has failed repeatedly; calls are paused for {retry_after_secs} s (circuit open)")]
    CircuitOpen { provider: String, retry_after_secs: u64 },
    #[error("provider `{provider}` refused the call (HTTP {status})")]
    Rejected { provider: String, status: u16 },
    #[error("provider `{provider}` answered something idstream does not understand")]
    BadResponse { provider: String },
}

impl ProviderError {
    /// The metric label and API error code.
    pub fn outcome(&self) -> &'static str {
        match self {
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::CircuitOpen { .. } => "circuit_open",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::BadResponse { .. } => "bad_response",
        }
    }

    /// The API error code (`provider_unavailable`, ...), as `ApiError` answers it.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Timeout { .. } => "provider_timeout",
            ProviderError::Unavailable { .. } => "provider_unavailable",
            ProviderError::RateLimited { .. } => "provider_rate_limited",
            ProviderError::CircuitOpen { .. } => "provider_circuit_open",
            ProviderError::Rejected { .. } => "provider_rejected",
            ProviderError::BadResponse { .. } => "provider_bad_response",
        }
    }

    /// Whether the failure says the provider is unwell (counts for the circuit breaker). A
    /// refusal (4xx) or an odd answer means it is up.
    pub fn is_provider_fault(&self) -> bool {
        matches!(
            self,
            ProviderError::Timeout { .. } | ProviderError::Unavailable { .. } | ProviderError::RateLimited { .. }
        )
    }
}

/// The configured provider accounts, by id (ordered, so "the first of a tenant" is stable).
#[derive(Debug, Default)]
pub struct Providers {
    by_id: BTreeMap<String, Arc<DiditClient>>,
}

impl Providers {
    pub fn from_config(cfg: &Config) -> Providers {
        let by_id = cfg
            .providers
            .iter()
            .map(|p| {
                let tenant = cfg
                    .sources
                    .iter()
                    .find(|s| s.id == p.source)
                    .map(|s| s.tenant.clone())
                    .expect("validated at config load: the provider's source exists");
                (p.id.clone(), Arc::new(DiditClient::new(p, &tenant)))
            })
            .collect();
        Providers { by_id }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<DiditClient>> {
        self.by_id.get(id)
    }

    /// The tenant's account named `id`, or its first one.
    pub fn for_tenant(&self, tenant: &str, id: Option<&str>) -> Option<&Arc<DiditClient>> {
        match id {
            Some(id) => self.by_id.get(id).filter(|p| p.tenant == tenant),
            None => self.by_id.values().find(|p| p.tenant == tenant),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<DiditClient>> {
        self.by_id.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
