//! The backends, chosen once: configuration resolves to a [`Backend`], and [`open`] returns
//! everything the rest of the process needs from it — the log, the store, the identity-hash key,
//! how decision workers run, and the background upkeep the backend itself needs. Nothing else
//! in the server branches on which backend it runs on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decide::normalize::HashKey;
use crate::decide::partitions::Cluster;
use crate::decide::Decider;
use crate::log::nats::{NatsLog, NatsOptions};
use crate::log::sqlite::{SqliteLog, SqliteOptions};
use crate::log::EventLog;
use crate::store::migrate::Migration;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{pg, Store};

/// Where the log and the store live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// One machine: the log and the store in one SQLite file under `data_dir`.
    Embedded {
        data_dir: PathBuf,
        options: SqliteOptions,
        /// The identity-hash key's file.
        hash_key_file: PathBuf,
        /// Remove entries older than this (zero: keep everything), never past `guard`'s
        /// checkpoint.
        retention: Duration,
        guard: Option<String>,
    },
    /// Any number of nodes: a NATS JetStream log and a PostgreSQL store.
    Shared {
        nats: NatsOptions,
        postgres_url: String,
        pool_size: usize,
        partitions: u32,
        /// Default: the key is created once in PostgreSQL and shared by every node.
        hash_key_file: Option<PathBuf>,
    },
}

/// How much a caller will do with an opened backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The server: migrate, write, run upkeep.
    Serve,
    /// Readers beside a running server (backtests): nothing is written, migrated or warmed.
    ReadOnly,
}

/// What an opened backend gives the process.
pub struct Backends {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn Store>,
    pub hash_key: HashKey,
    pub deciders: Deciders,
    /// Background work the backend needs (log retention, the outbox relay), started by
    /// `server::serve` and stopped with it.
    pub upkeep: Vec<Upkeep>,
}

/// A background task: runs until its token is cancelled.
pub type Upkeep = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// How this node runs decision workers.
#[derive(Clone)]
pub enum Deciders {
    /// One worker over the whole log.
    Whole,
    /// One worker per partition whose lease this node holds.
    Partitioned(Cluster),
}

impl Deciders {
    /// What this node works on besides deciding (notifications, reconciliation).
    pub fn ownership(&self) -> crate::decide::partitions::Ownership {
        match self {
            Deciders::Whole => crate::decide::partitions::Ownership::All,
            Deciders::Partitioned(c) => c.ownership(),
        }
    }

    /// How many workers run when this node decides everything it can.
    pub fn workers(&self) -> usize {
        match self {
            Deciders::Whole => 1,
            Deciders::Partitioned(c) => c.partitions as usize,
        }
    }

    /// Runs the workers until `stop`.
    pub async fn run(self, make: impl Fn() -> Decider + Send + 'static, stop: CancellationToken) {
        match self {
            Deciders::Whole => make().run(stop).await,
            Deciders::Partitioned(cluster) => cluster.run_deciders(make, stop).await,
        }
    }
}

impl Backend {
    /// The backend `cfg` names (validated: both URLs or neither).
    pub fn from_config(cfg: &Config) -> Backend {
        let retention = Duration::from_secs(cfg.log.retention_days * 86_400);
        if cfg.log.url.is_empty() {
            Backend::Embedded {
                data_dir: cfg.server.data_dir.clone(),
                options: SqliteOptions {
                    max_batch: cfg.log.max_batch,
                    queue_depth: cfg.log.queue_depth,
                    max_db_bytes: cfg.log.max_db_bytes,
                },
                hash_key_file: cfg
                    .decisions
                    .hash_key_file
                    .clone()
                    .unwrap_or_else(|| cfg.server.data_dir.join("blocklist.key")),
                retention,
                guard: cfg.decisions.enabled.then(|| crate::decide::CONSUMER.to_owned()),
            }
        } else {
            Backend::Shared {
                nats: NatsOptions {
                    url: cfg.log.url.clone(),
                    stream: cfg.log.nats_stream.clone(),
                    subject_prefix: cfg.log.nats_subject_prefix.clone(),
                    replicas: cfg.log.nats_replicas,
                    // JetStream's own `max_age` is the retention.
                    max_age: retention,
                    duplicate_window: Duration::from_secs(cfg.log.nats_duplicate_window_secs),
                    cache_bytes: cfg.log.nats_cache_mb << 20,
                },
                postgres_url: cfg.store.url.clone(),
                pool_size: cfg.store.pool_size,
                partitions: cfg.decisions.partitions,
                hash_key_file: cfg.decisions.hash_key_file.clone(),
            }
        }
    }
}

/// Opens `backend`: migrates its schema (with [`Access::Serve`]), connects, and loads the hash
/// key.
pub async fn open(backend: &Backend, access: Access) -> anyhow::Result<Backends> {
    match backend {
        Backend::Embedded { data_dir, options, hash_key_file, retention, guard } => {
            let (log, store) = match access {
                Access::Serve => {
                    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(data_dir, options.clone())?);
                    let store = SqliteStore::open(data_dir, log.clone(), options.max_batch, options.queue_depth)?;
                    (log, Arc::new(store))
                }
                Access::ReadOnly => {
                    let what = || format!("opening the data directory {}", data_dir.display());
                    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open_read_only(data_dir).with_context(what)?);
                    (log.clone(), Arc::new(SqliteStore::open_read_only(data_dir, log).with_context(what)?))
                }
            };
            let hash_key = match access {
                Access::Serve => HashKey::load_or_create(hash_key_file)?,
                // A reader never creates files in the server's data directory.
                Access::ReadOnly => HashKey::load(hash_key_file).unwrap_or_else(|_| HashKey::ephemeral()),
            };
            let mut upkeep: Vec<Upkeep> = Vec::new();
            if access == Access::Serve {
                // Entries a crash left in the outbox reach the log before anything else runs.
                let relayed = store.relay_outbox(Duration::ZERO).await?;
                if relayed > 0 {
                    tracing::info!(relayed, "outbox entries left by an earlier run appended to the log");
                }
                let relay = store.clone();
                upkeep.push(Box::new(move |stop| Box::pin(relay.run_relay(stop))));
                if !retention.is_zero() {
                    let guard = guard.clone().map(|consumer| {
                        let store = store.clone();
                        let g: crate::log::retention::Guard = Arc::new(move || {
                            let (store, consumer) = (store.clone(), consumer.clone());
                            Box::pin(async move {
                                store.checkpoint(&consumer).await.map(|c| c.unwrap_or(0)).map_err(|e| e.to_string())
                            })
                        });
                        g
                    });
                    let (log, retention) = (log.clone(), *retention);
                    upkeep.push(Box::new(move |stop| {
                        Box::pin(crate::log::retention::run(log, retention, guard, Duration::from_secs(60), stop))
                    }));
                }
            }
            Ok(Backends { log, store, hash_key, deciders: Deciders::Whole, upkeep })
        }
        Backend::Shared { nats, postgres_url, pool_size, partitions, hash_key_file } => {
            let pool = pg::connect(postgres_url, *pool_size).await?;
            let mut nats = nats.clone();
            if access == Access::Serve {
                let applied = pg::migrate(&pool).await?;
                if !applied.is_empty() {
                    tracing::info!(?applied, "PostgreSQL migrations applied");
                }
            } else {
                // A reader needs a log handle, not a warmed cache of recent events.
                nats.cache_bytes = 0;
            }
            let log = Arc::new(NatsLog::open(nats, pool.clone()).await?);
            let store = Arc::new(PgStore::new(pool.clone(), log.clone()));
            let hash_key = match hash_key_file {
                Some(path) => HashKey::load_or_create(path)?,
                None => HashKey::new(shared_hash_key(&pool).await?),
            };
            let mut upkeep: Vec<Upkeep> = Vec::new();
            if access == Access::Serve {
                // Log entries of committed state changes whose publish failed (NATS down) are
                // published by every node's outbox relay.
                let relay = store.clone();
                upkeep.push(Box::new(move |stop| Box::pin(relay.run_relay(stop))));
            }
            let deciders = Deciders::Partitioned(Cluster::new(pool, *partitions));
            Ok(Backends { log, store, hash_key, deciders, upkeep })
        }
    }
}

/// Brings the backend's schemas up to date (what [`open`] does at start-up, ahead of a deploy).
/// `report` hears about each database as soon as it is done: `(database, steps applied now,
/// version it is at)`. Returns a line about the log (what it is, its head offset).
pub async fn migrate(backend: &Backend, report: &mut dyn FnMut(&str, &[&Migration], i32)) -> anyhow::Result<String> {
    use crate::store::migrate::{latest, EVENTS, STATE};
    let steps = |list: &'static [Migration], versions: &[i32]| -> Vec<&'static Migration> {
        list.iter().filter(|m| versions.contains(&m.version)).collect()
    };
    match backend {
        Backend::Embedded { data_dir, options, .. } => {
            let log = Arc::new(SqliteLog::open(data_dir, options.clone())?);
            let events = data_dir.join("events.db");
            report(
                &format!("embedded log {}", events.display()),
                &steps(EVENTS, log.migrations_applied()),
                latest(EVENTS),
            );
            let store = SqliteStore::open(data_dir, log.clone(), options.max_batch, options.queue_depth)?;
            let state = data_dir.join("state.db");
            report(
                &format!("embedded store {}", state.display()),
                &steps(STATE, store.migrations_applied()),
                latest(STATE),
            );
            store.relay_outbox(Duration::ZERO).await?;
            Store::close(&store).await;
            let head = log.head();
            log.close().await;
            Ok(format!("embedded log {}: ready, head offset {head}", events.display()))
        }
        Backend::Shared { nats, postgres_url, .. } => {
            let pool = pg::connect(postgres_url, 2).await?;
            let applied = pg::migrate(&pool).await?;
            let name = format!("PostgreSQL {}", pg::redact(postgres_url));
            report(&name, &steps(pg::MIGRATIONS, &applied), latest(pg::MIGRATIONS));
            let log = NatsLog::open(nats.clone(), pool).await?;
            let head = log.head();
            log.close().await;
            Ok(format!("NATS {}: stream `{}` ready, head offset {head}", nats.url, nats.stream))
        }
    }
}

/// The identity-hash key every node shares: created once in PostgreSQL (`settings`).
async fn shared_hash_key(pool: &deadpool_postgres::Pool) -> anyhow::Result<Vec<u8>> {
    let client = pool.get().await.map_err(|e| anyhow::anyhow!("PostgreSQL: {}", pg::error_text(&e)))?;
    let fresh: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
    client
        .execute("INSERT INTO settings (name, value) VALUES ('hash_key', $1) ON CONFLICT DO NOTHING", &[&fresh])
        .await?;
    Ok(client.query_one("SELECT value FROM settings WHERE name = 'hash_key'", &[]).await?.get(0))
}
