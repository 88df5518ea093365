//! PostgreSQL plumbing shared by the scale-out backends: the connection pool and the schema
//! migrations (`idstream migrate`, also run at start-up).
//!
//! Migrations are numbered and applied in order, each in its own transaction, under an advisory
//! lock: several nodes starting at once apply each migration exactly once.

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::migrate::{self, Migration};

/// The schema, in order. Never edit a released migration; add a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        code: None,
        description: "event log index, dedupe keys, consumer checkpoints, settings, partition leases",
        sql: r#"
CREATE TABLE log_index (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    dedupe_key TEXT UNIQUE,
    tenant TEXT NOT NULL,
    partition_key TEXT NOT NULL
);
CREATE INDEX log_index_by_partition ON log_index (partition_key, seq);
CREATE TABLE checkpoints (
    consumer TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE partition_leases (
    partition INT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at_us BIGINT NOT NULL
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    seen_at_us BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        code: None,
        description: "store: sessions, decisions, reviews, blocklist, identities, subjects, rulesets, outbox",
        // The columns mirror the embedded store's (`store/sqlite.rs`); JSON stays TEXT so
        // both backends store the same encoding. Ids that results are ordered or paged by use
        // the "C" collation: byte order, as SQLite compares them, whatever the database's locale.
        sql: r#"
CREATE TABLE sessions (
    tenant          TEXT NOT NULL,
    session_id      TEXT COLLATE "C" NOT NULL,
    subject         TEXT,
    provider_status TEXT,
    state           TEXT NOT NULL,
    outcome         TEXT,
    decision_id     TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant, session_id)
);
CREATE INDEX sessions_by_subject ON sessions (tenant, subject);
CREATE TABLE decisions (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant          TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    subject         TEXT,
    event_id        TEXT UNIQUE,
    event_offset    BIGINT,
    outcome         TEXT NOT NULL,
    score           DOUBLE PRECISION NOT NULL,
    ruleset_version TEXT,
    reasons         TEXT NOT NULL,
    decided_by      TEXT NOT NULL,
    decided_at      BIGINT NOT NULL,
    detail          TEXT NOT NULL
);
CREATE INDEX decisions_by_session ON decisions (tenant, session_id, decided_at);
CREATE INDEX decisions_by_time ON decisions (decided_at, id);
CREATE TABLE reviews (
    id           TEXT COLLATE "C" PRIMARY KEY,
    tenant       TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    subject      TEXT,
    decision_id  TEXT NOT NULL,
    reasons      TEXT NOT NULL,
    status       TEXT NOT NULL,
    opened_at    BIGINT NOT NULL,
    claimed_by   TEXT,
    claimed_at   BIGINT,
    resolved_by  TEXT,
    resolved_at  BIGINT,
    outcome      TEXT,
    note         TEXT
);
CREATE INDEX reviews_by_status ON reviews (tenant, status, opened_at);
CREATE INDEX reviews_by_session ON reviews (tenant, session_id);
CREATE TABLE blocklist (
    tenant    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    hash      TEXT NOT NULL,
    reason    TEXT,
    added_by  TEXT NOT NULL,
    added_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, kind, hash)
);
CREATE TABLE identities (
    tenant     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    session_id TEXT NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant, kind, hash, session_id)
);
CREATE TABLE subjects (
    tenant     TEXT NOT NULL,
    id         TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE rulesets (
    tenant     TEXT NOT NULL,
    version    TEXT COLLATE "C" NOT NULL,
    label      TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE active_rulesets (
    tenant       TEXT COLLATE "C" PRIMARY KEY,
    version      TEXT NOT NULL,
    activated_by TEXT NOT NULL,
    activated_at BIGINT NOT NULL
);
CREATE TABLE outbox (
    seq           BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    tenant        TEXT NOT NULL,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL,
    event         BYTEA NOT NULL,
    body          BYTEA,
    created_at_us BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 4,
        description: "access: API keys, users, login sessions, idempotent answers",
        sql: super::access::POSTGRES_SCHEMA,
        code: None,
    },
    Migration {
        version: 5,
        description: "notifications: endpoints, delivery attempts",
        sql: super::notify::POSTGRES_SCHEMA,
        code: None,
    },
    Migration {
        version: 6,
        description: "documents: uploaded files and where their bytes are",
        sql: super::documents::POSTGRES_SCHEMA,
        code: None,
    },
    Migration {
        version: 7,
        description: "reviews: escalation level",
        sql: "ALTER TABLE reviews ADD COLUMN level SMALLINT NOT NULL DEFAULT 1;",
        code: None,
    },
    Migration {
        version: 8,
        description: "identities: by session (linked subjects)",
        sql: "CREATE INDEX identities_by_session ON identities (tenant, session_id);",
        code: None,
    },
    Migration {
        version: 9,
        description: "tenant statistics: webhooks per minute; decisions by tenant and time",
        sql: "CREATE TABLE tenant_stats (
    tenant TEXT NOT NULL,
    minute BIGINT NOT NULL,
    metric TEXT NOT NULL,
    count  BIGINT NOT NULL,
    PRIMARY KEY (tenant, minute, metric)
);
CREATE INDEX decisions_by_tenant_time ON decisions (tenant, decided_at);",
        code: None,
    },
    Migration {
        version: 10,
        description: super::migrate::KEYSET_INDEXES.0,
        sql: super::migrate::KEYSET_INDEXES.1,
        code: None,
    },
];

/// A pool of connections to `url` (`postgres://user@host:port/db`); checks one connection so
/// an unreachable or misconfigured database fails here with its address named.
pub async fn connect(url: &str, size: usize) -> anyhow::Result<Pool> {
    let pg: tokio_postgres::Config =
        url.parse().with_context(|| format!("store.url `{}`: not a PostgreSQL URL", redact(url)))?;
    let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    // Bounded waits: with PostgreSQL away or every connection busy, a request fails (503) after
    // seconds instead of hanging until the TCP stack gives up.
    let pool = Pool::builder(mgr)
        .max_size(size.max(2))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .build()
        .context("PostgreSQL pool")?;
    let client = tokio::time::timeout(std::time::Duration::from_secs(10), pool.get())
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL at {}: no connection within 10 s", redact(url)))?
        .map_err(|e| anyhow::anyhow!("PostgreSQL at {}: {}", redact(url), error_text(&e)))?;
    client.simple_query("SELECT 1").await.with_context(|| format!("PostgreSQL at {}", redact(url)))?;
    Ok(pool)
}

/// Applies the migrations not yet applied; returns the versions applied now.
pub async fn migrate(pool: &Pool) -> anyhow::Result<Vec<i32>> {
    let mut client = pool.get().await.map_err(|e| anyhow::anyhow!("PostgreSQL: {}", error_text(&e)))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS idstream_migrations (
                version INT PRIMARY KEY,
                description TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .or_else(|e| {
            // Two nodes creating the table at the same moment: one wins, the other sees it.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })
        .context("creating idstream_migrations")?;
    // Refuse a database a newer idstream upgraded, before touching anything.
    let recorded: Vec<i32> =
        client.query("SELECT version FROM idstream_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    migrate::pending("PostgreSQL database", MIGRATIONS, &recorded)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(7314159265)", &[]).await?;
        let done = tx.query_opt("SELECT 1 FROM idstream_migrations WHERE version = $1", &[&m.version]).await?.is_some();
        if !done {
            tx.batch_execute(m.sql).await.with_context(|| format!("migration {} ({})", m.version, m.description))?;
            tx.execute(
                "INSERT INTO idstream_migrations (version, description) VALUES ($1, $2)",
                &[&m.version, &m.description],
            )
            .await?;
            applied.push(m.version);
        }
        tx.commit().await?;
    }
    Ok(applied)
}

/// Creates a fresh database next to the one `base_url` names and returns its URL (tests and
/// benchmarks: each gets its own).
pub async fn create_database(base_url: &str, name: &str) -> anyhow::Result<String> {
    execute_once(base_url, &format!("CREATE DATABASE \"{name}\"")).await?;
    let mut url = url_without_db(base_url);
    url.push('/');
    url.push_str(name);
    Ok(url)
}

/// Drops the database `name` beside `base_url`'s (for tools that made one with
/// [`create_database`]); its open connections are ended first. No error when it is gone.
pub async fn drop_database(base_url: &str, name: &str) -> anyhow::Result<()> {
    execute_once(base_url, &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
}

/// Runs one statement on a connection of its own (statements that cannot run in a transaction).
async fn execute_once(base_url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(base_url, NoTls)
        .await
        .with_context(|| format!("PostgreSQL at {}", redact(base_url)))?;
    tokio::spawn(conn);
    client.batch_execute(sql).await.with_context(|| sql.to_owned())?;
    Ok(())
}

fn url_without_db(url: &str) -> String {
    let head = url.split_once('?').map(|(h, _)| h).unwrap_or(url);
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    base.to_owned()
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    match rest.find('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = &rest[..rest[..at].find(':').unwrap_or(at)];
            format!("{}{}:***{}", &url[..scheme_end], user, &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// The most specific text of a pool error (the database's own message when there is one).
pub fn error_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error_text(e),
        other => other.to_string(),
    }
}

/// A PostgreSQL error with the server's message (tokio-postgres' `Display` alone says only "db error").
pub fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(url_without_db("postgres://u@h:5432/test?sslmode=disable"), "postgres://u@h:5432");
    }
}
