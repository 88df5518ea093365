//! The application state shared by every handler and background task: the opened backends,
//! the sources, the API keys, the rulesets. Built once from the validated [`Config`].

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::backend::{Access, Backend, Backends, Deciders, Upkeep};
use crate::config::Config;
use crate::decide::normalize::HashKey;
use crate::decide::{DecideOptions, Rulesets};
use crate::ingest::Source;
use crate::log::EventLog;
use crate::store::Store;

/// An API key as configured: only its SHA-256 is held.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    /// The tenant it acts for, or `*`.
    pub tenant: String,
    pub role: crate::domain::Role,
    pub sha256: [u8; 32],
}

pub struct AppState {
    pub log: Arc<dyn EventLog>,
    /// Sessions, decisions, reviews, blocklists, subjects, rulesets.
    pub store: Arc<dyn Store>,
    /// The key of identity hashes (blocklists, velocity).
    pub hash_key: HashKey,
    /// How this node runs decision workers (the backend decides).
    pub deciders: Deciders,
    /// The backend's own background work, taken and started by `server::serve`.
    pub upkeep: Mutex<Vec<Upkeep>>,
    pub sources: HashMap<String, Source>,
    pub api_keys: Vec<ApiKey>,
    pub max_body_bytes: usize,
    /// False once shutdown has begun: `/readyz` then answers 503 so load balancers drain us.
    pub ready: AtomicBool,
    /// Live streams; its tailer is started by `server::serve`.
    pub stream: Arc<crate::stream::Hub>,
    pub rulesets: Arc<Rulesets>,
    pub decide: DecideOptions,
    /// Whether `server::serve` runs the decision worker.
    pub decisions_enabled: bool,
    /// How far this node's decision workers have read.
    pub decide_progress: Arc<crate::decide::Progress>,
    /// This node's rate limits.
    pub limits: crate::http::limits::RateLimits,
    pub login_policy: crate::access::users::LoginPolicy,
    /// Mark session cookies `Secure`.
    pub secure_cookies: bool,
    /// When this node last recorded each run-time key's use (at most once a minute).
    pub key_last_touch: Mutex<HashMap<String, i64>>,
    /// `[auth.oidc]`, and the issuer's metadata once fetched.
    pub oidc: Option<crate::config::OidcConfig>,
    pub oidc_cache: crate::http::oidc::OidcCache,
    /// The dashboard at `/` and its stream tokens.
    pub dashboard: crate::config::DashboardConfig,
    /// Provider accounts idstream calls (`[[providers]]`).
    pub providers: Arc<crate::provider::Providers>,
    /// Outbound notifications: the endpoints' delivery worker.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Where uploaded documents' bytes are kept.
    pub documents: Arc<crate::documents::objects::ObjectStorage>,
    pub documents_cfg: crate::config::DocumentsConfig,
    /// Claims idle this long return to the queue (`[reviews] claim_idle_secs`; none: never).
    pub claim_idle: Option<std::time::Duration>,
    /// Four-eyes ruleset activation (`decisions.require_second_approver`).
    pub require_second_approver: bool,
    /// Webhook counts per tenant and minute, added to the store every second.
    pub tenant_counters: Arc<crate::stats::TenantCounters>,
    /// Decision counts of the overview's finished buckets.
    pub finished_buckets: crate::stats::FinishedBuckets,
    /// The overview's alert: the oldest open case is older than this (none: no alert).
    pub alert_oldest_open: Option<std::time::Duration>,
}

impl AppState {
    /// Opens the backends `cfg` names and loads the active rulesets.
    pub async fn open(cfg: &Config) -> anyhow::Result<AppState> {
        let backends = crate::backend::open(&Backend::from_config(cfg), Access::Serve).await?;
        let rulesets = Rulesets::load(backends.store.as_ref()).await?;
        AppState::with_backends(cfg, backends, Arc::new(rulesets))
    }

    pub fn with_backends(cfg: &Config, backends: Backends, rulesets: Arc<Rulesets>) -> anyhow::Result<AppState> {
        // Sources register their metric handles now; the recorder must exist before that, or
        // the handles would be no-ops.
        crate::server::metrics_handle();
        let Backends { log, store, hash_key, deciders, mut upkeep } = backends;
        let providers = Arc::new(crate::provider::Providers::from_config(cfg));
        if cfg.verifications.reconcile && !providers.is_empty() {
            let r = crate::provider::reconcile::Reconciler::new(
                log.clone(),
                providers.clone(),
                cfg.verifications.clone(),
                deciders.ownership(),
            );
            upkeep.push(Box::new(move |stop| Box::pin(r.run(stop))));
        }
        if crate::provider::push_back::PushBack::wanted(&providers) {
            let p = crate::provider::push_back::PushBack::new(
                log.clone(),
                providers.clone(),
                cfg.verifications.clone(),
                deciders.ownership(),
            );
            upkeep.push(Box::new(move |stop| Box::pin(p.run(stop))));
        }
        let documents = Arc::new(crate::documents::objects::ObjectStorage::open(
            &cfg.documents.storage,
            &cfg.server.data_dir,
            &hash_key,
        )?);
        let sweeper = crate::documents::Sweeper {
            objects: documents.clone(),
            store: store.clone(),
            grace: std::time::Duration::from_secs(cfg.documents.orphan_grace_secs),
            every: std::time::Duration::from_secs(cfg.documents.orphan_sweep_secs),
        };
        upkeep.push(Box::new(move |stop| Box::pin(sweeper.run(stop))));
        let notifier = Arc::new(crate::notify::Notifier::new(
            &cfg.notifications,
            &cfg.endpoints,
            log.clone(),
            store.clone(),
            Arc::new(crate::notify::ssrf::SystemResolver),
            deciders.ownership(),
        ));
        Ok(AppState {
            documents,
            documents_cfg: cfg.documents.clone(),
            require_second_approver: cfg.decisions.require_second_approver,
            tenant_counters: Default::default(),
            finished_buckets: Default::default(),
            alert_oldest_open: (cfg.reviews.alert_oldest_open_secs > 0)
                .then(|| std::time::Duration::from_secs(cfg.reviews.alert_oldest_open_secs)),
            claim_idle: (cfg.reviews.claim_idle_secs > 0)
                .then(|| std::time::Duration::from_secs(cfg.reviews.claim_idle_secs)),
            notifier,
            stream: Arc::new(
                crate::stream::Hub::new(&cfg.stream, log.clone())
                    .with_signer(&cfg.stream, cfg.dashboard.enabled.then(|| hash_key.derive("stream-token-hs256"))),
            ),
            log,
            store,
            hash_key,
            deciders,
            upkeep: Mutex::new(upkeep),
            sources: cfg.sources.iter().map(|s| (s.id.clone(), Source::from_config(s))).collect(),
            api_keys: cfg
                .api_keys
                .iter()
                .map(|k| {
                    let mut sha256 = [0u8; 32];
                    hex::decode_to_slice(&k.sha256, &mut sha256).expect("validated at config load");
                    let role = k.role.unwrap_or_else(|| {
                        tracing::warn!(
                            key = %k.name,
                            tenant = %k.tenant,
                            "API key without a role: it is an admin of its tenant; give it `role` (README \"Access\")"
                        );
                        crate::domain::Role::Admin
                    });
                    ApiKey { name: k.name.clone(), tenant: k.tenant.clone(), role, sha256 }
                })
                .collect(),
            max_body_bytes: cfg.server.max_body_bytes,
            ready: AtomicBool::new(true),
            rulesets,
            decide: DecideOptions {
                velocity_window: std::time::Duration::from_secs(cfg.decisions.velocity_window_days * 86_400),
                lists: cfg.decisions.lists.clone(),
            },
            decisions_enabled: cfg.decisions.enabled,
            decide_progress: Default::default(),
            limits: crate::http::limits::RateLimits::new(&cfg.rate_limits),
            login_policy: crate::access::users::LoginPolicy {
                idle_us: cfg.auth.session_idle_secs as i64 * 1_000_000,
                max_us: cfg.auth.session_max_secs as i64 * 1_000_000,
                lock_after: cfg.auth.lockout_after,
                lock_for_us: cfg.auth.lockout_secs as i64 * 1_000_000,
            },
            secure_cookies: cfg.auth.secure_cookies,
            key_last_touch: Mutex::new(HashMap::new()),
            oidc: cfg.auth.oidc.clone(),
            oidc_cache: Default::default(),
            dashboard: cfg.dashboard.clone(),
            providers,
        })
    }

    /// The key whose hash matches `presented`, compared in constant time against every key.
    pub fn authenticate(&self, presented: &str) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for k in &self.api_keys {
            if bool::from(k.sha256.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found
    }

    /// A decision worker over this node's backends and rulesets.
    pub fn decider(&self) -> crate::decide::Decider {
        crate::decide::Decider {
            progress: self.decide_progress.clone(),
            log: self.log.clone(),
            store: self.store.clone(),
            rulesets: self.rulesets.clone(),
            key: self.hash_key.clone(),
            opts: self.decide.clone(),
        }
    }

    /// Whether this node's decision workers have read the log through `offset` (with shared
    /// backends: whether this node holds every partition and has read through it in each).
    pub fn decided_through(&self, offset: u64) -> bool {
        self.decide_progress.caught_up(self.deciders.workers(), offset)
    }
}

/// Hex SHA-256 of an API key, as it goes in the config.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
