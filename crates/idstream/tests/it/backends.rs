//! The real services the scale-out suites run against: PostgreSQL and NATS JetStream, named by
//! `IDSTREAM_TEST_POSTGRES_URL` and `IDSTREAM_TEST_NATS_URL`. Each test gets its own database,
//! stream and subject prefix, so tests never see each other's data.

use idstream_server::log::nats::{NatsLog, NatsOptions};

pub fn env_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: this test needs the real service (see .ci/run)"))
}

#[derive(Clone)]
pub struct ScaleOut {
    pub pg_url: String,
    pub nats_url: String,
    pub stream: String,
    pub prefix: String,
    /// The stream's `max_age` (zero: keep everything).
    pub max_age: std::time::Duration,
}

impl ScaleOut {
    /// A fresh database (migrated) and a stream name nobody else uses.
    pub async fn fresh(what: &str) -> ScaleOut {
        let base = env_url("IDSTREAM_TEST_POSTGRES_URL");
        let nats_url = env_url("IDSTREAM_TEST_NATS_URL");
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let what: String = what.chars().take(24).collect();
        let tag = format!("{what}_{}", &unique[unique.len() - 12..]);
        let pg_url = idstream_server::store::pg::create_database(&base, &format!("idstream_{tag}"))
            .await
            .expect("create test database");
        let pool = idstream_server::store::pg::connect(&pg_url, 2).await.expect("connect test database");
        idstream_server::store::pg::migrate(&pool).await.expect("migrate test database");
        ScaleOut {
            pg_url,
            nats_url,
            stream: format!("T_{tag}"),
            prefix: format!("t_{tag}"),
            max_age: std::time::Duration::ZERO,
        }
    }

    pub async fn open_log(&self, cache_bytes: usize) -> NatsLog {
        let pool = idstream_server::store::pg::connect(&self.pg_url, 4).await.expect("connect test database");
        NatsLog::open(self.options(cache_bytes), pool).await.expect("open NATS log")
    }

    /// The log options for these backends.
    pub fn options(&self, cache_bytes: usize) -> NatsOptions {
        NatsOptions {
            url: self.nats_url.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.prefix.clone(),
            replicas: 1,
            max_age: self.max_age,
            duplicate_window: std::time::Duration::from_secs(120),
            cache_bytes,
        }
    }

    /// The config lines that point a server at these backends.
    pub fn toml(&self) -> String {
        format!(
            "[log]\nurl = \"{}\"\nnats_stream = \"{}\"\nnats_subject_prefix = \"{}\"\n[store]\nurl = \"{}\"\n",
            self.nats_url, self.stream, self.prefix, self.pg_url
        )
    }
}
