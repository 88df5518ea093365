//! The application state shared by every handler: the log, the sources, the API keys.
//! Built once from the validated [`Config`]; backends are chosen here, once.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::decide::normalize::HashKey;
use crate::decide::{DecideOptions, Rulesets};
use crate::ingest::Source;
use crate::log::sqlite::{SqliteLog, SqliteOptions};
use crate::log::EventLog;
use crate::store::Store;

/// An API key as configured: only its SHA-256 is held.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    /// The tenant it may read, or `*`.
    pub tenant: String,
    pub sha256: [u8; 32],
}

pub struct AppState {
    pub log: Arc<dyn EventLog>,
    pub sources: HashMap<String, Source>,
    pub api_keys: Vec<ApiKey>,
    pub max_body_bytes: usize,
    /// False once shutdown has begun: `/readyz` then answers 503 so load balancers drain us.
    pub ready: AtomicBool,
    /// Live streams; its tailer is started by `server::serve`.
    pub stream: Arc<crate::stream::Hub>,
    /// Sessions, decisions, reviews, blocklists, subjects, rulesets.
    pub store: Arc<dyn Store>,
    pub rulesets: Arc<Rulesets>,
    /// The key of identity hashes (blocklists, velocity).
    pub hash_key: HashKey,
    pub decide: DecideOptions,
    /// Whether `server::serve` runs the decision worker.
    pub decisions_enabled: bool,
    /// `log.retention_days` (zero: keep everything).
    pub retention: std::time::Duration,
    /// How far this node's decision workers have read.
    pub decide_progress: Arc<crate::decide::Progress>,
    /// Scale-out backends: this node's place in the cluster and the store's outbox relay.
    pub scale_out: Option<ScaleOut>,
}

/// What `server::serve` runs besides the embedded set when the backends are shared.
#[derive(Clone)]
pub struct ScaleOut {
    pub cluster: crate::cluster::Cluster,
    pub store: Arc<crate::store::postgres::PgStore>,
}

impl AppState {
    /// Opens the embedded backends named by `cfg` (the log and store in `server.data_dir`),
    /// loads the active rulesets and the hash key.
    pub async fn open(cfg: &Config) -> anyhow::Result<AppState> {
        if cfg.scale_out() {
            return Self::open_scale_out(cfg).await;
        }
        let log = Arc::new(SqliteLog::open(
            &cfg.server.data_dir,
            SqliteOptions {
                max_batch: cfg.log.max_batch,
                queue_depth: cfg.log.queue_depth,
                max_db_bytes: cfg.log.max_db_bytes,
            },
        )?);
        let key_path = cfg.decisions.hash_key_file.clone().unwrap_or_else(|| cfg.server.data_dir.join("blocklist.key"));
        let key = HashKey::load_or_create(&key_path)?;
        let rulesets = Rulesets::load(log.as_ref()).await?;
        Ok(AppState::with_backends(cfg, log.clone(), log, Arc::new(rulesets), key))
    }

    /// Connects to NATS JetStream and PostgreSQL (migrating it), creating the stream if needed.
    pub async fn open_scale_out(cfg: &Config) -> anyhow::Result<AppState> {
        let pool = crate::pg::connect(&cfg.store.url, cfg.store.pool_size).await?;
        let applied = crate::pg::migrate(&pool).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "PostgreSQL migrations applied");
        }
        let log = Arc::new(crate::log::nats::NatsLog::open(nats_options(cfg), pool.clone()).await?);
        let store = Arc::new(crate::store::postgres::PgStore::new(pool.clone(), log.clone()));
        let key = match &cfg.decisions.hash_key_file {
            Some(path) => HashKey::load_or_create(path)?,
            None => HashKey::new(shared_hash_key(&pool).await?),
        };
        let rulesets = Rulesets::load(store.as_ref()).await?;
        let mut st = AppState::with_backends(cfg, log, store.clone(), Arc::new(rulesets), key);
        st.scale_out = Some(ScaleOut { cluster: crate::cluster::Cluster::new(pool, cfg.decisions.partitions), store });
        Ok(st)
    }

    /// The embedded log as log and store, the default ruleset, and a throw-away hash key
    /// (benchmarks and tests that do not restart).
    pub fn new(cfg: &Config, log: Arc<SqliteLog>) -> AppState {
        let rulesets = Arc::new(Rulesets::default_only());
        AppState::with_backends(cfg, log.clone(), log, rulesets, HashKey::new(rand::random::<[u8; 32]>().to_vec()))
    }

    pub fn with_backends(
        cfg: &Config,
        log: Arc<dyn EventLog>,
        store: Arc<dyn Store>,
        rulesets: Arc<Rulesets>,
        hash_key: HashKey,
    ) -> AppState {
        // Sources register their metric handles now; the recorder must exist before that, or
        // the handles would be no-ops.
        crate::server::metrics_handle();
        AppState {
            log: log.clone(),
            sources: cfg.sources.iter().map(|s| (s.id.clone(), Source::from_config(s))).collect(),
            api_keys: cfg
                .api_keys
                .iter()
                .map(|k| {
                    let mut sha256 = [0u8; 32];
                    hex::decode_to_slice(&k.sha256, &mut sha256).expect("validated at config load");
                    ApiKey { name: k.name.clone(), tenant: k.tenant.clone(), sha256 }
                })
                .collect(),
            max_body_bytes: cfg.server.max_body_bytes,
            ready: AtomicBool::new(true),
            stream: Arc::new(crate::stream::Hub::new(&cfg.stream, log.clone())),
            store,
            rulesets,
            hash_key,
            decide: DecideOptions {
                velocity_window: std::time::Duration::from_secs(cfg.decisions.velocity_window_days * 86_400),
                lists: cfg.decisions.lists.clone(),
            },
            decisions_enabled: cfg.decisions.enabled,
            retention: std::time::Duration::from_secs(cfg.log.retention_days * 86_400),
            decide_progress: Default::default(),
            scale_out: None,
        }
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
}

impl AppState {
    /// Whether this node's decision workers have read the log through `offset` (with shared
    /// backends: whether this node holds every partition and has read through it in each).
    pub fn decided_through(&self, offset: u64) -> bool {
        let workers = self.scale_out.as_ref().map_or(1, |so| so.cluster.partitions as usize);
        self.decide_progress.caught_up(workers, offset)
    }
}

/// The NATS settings of `cfg`.
pub fn nats_options(cfg: &Config) -> crate::log::nats::NatsOptions {
    crate::log::nats::NatsOptions {
        url: cfg.log.url.clone(),
        stream: cfg.log.nats_stream.clone(),
        subject_prefix: cfg.log.nats_subject_prefix.clone(),
        replicas: cfg.log.nats_replicas,
        max_age: std::time::Duration::from_secs(cfg.log.retention_days * 86_400),
        duplicate_window: std::time::Duration::from_secs(cfg.log.nats_duplicate_window_secs),
        cache_bytes: cfg.log.nats_cache_mb << 20,
    }
}

/// The identity-hash key every node shares: created once in PostgreSQL (`settings`).
async fn shared_hash_key(pool: &deadpool_postgres::Pool) -> anyhow::Result<Vec<u8>> {
    let client = pool.get().await.map_err(|e| anyhow::anyhow!("PostgreSQL: {}", crate::pg::error_text(&e)))?;
    let fresh: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
    client
        .execute("INSERT INTO settings (name, value) VALUES ('hash_key', $1) ON CONFLICT DO NOTHING", &[&fresh])
        .await?;
    Ok(client.query_one("SELECT value FROM settings WHERE name = 'hash_key'", &[]).await?.get(0))
}

/// Hex SHA-256 of an API key, as it goes in the config.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
