//! Schema migrations, one mechanism for both backends: an ordered list of numbered steps per
//! database, each applied once in its own transaction and recorded in `idstream_migrations`
//! (version, description, applied_at). A database that records a version this binary does not
//! know was written by a newer idstream: it is refused with a message, never opened.
//!
//! Never edit a released migration; add a new one at the end of its list.

/// One schema step: SQL, and for an embedded database optionally code run after it in the same
/// transaction (given the data directory), for what SQL alone cannot do.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
    pub code: Option<fn(&rusqlite::Transaction<'_>, &std::path::Path) -> anyhow::Result<()>>,
}

/// The table both backends record applied versions in.
pub const TABLE: &str = "idstream_migrations";

/// Description and SQL of the indexes behind keyset pages and the overview: the same statements
/// on both backends (SQLite `STATE` v8, PostgreSQL v10).
pub const KEYSET_INDEXES: (&str, &str) = (
    "reviews: keyset pages in (opened_at, id) order, per tenant and status, per tenant, per status, per session; \
                      decisions per tenant and time with their outcome (the overview reads only the index); \
                      identities per session in time order",
    "DROP INDEX reviews_by_status;
DROP INDEX decisions_by_tenant_time;
CREATE INDEX decisions_by_tenant_time ON decisions (tenant, decided_at, outcome);
CREATE INDEX reviews_by_status ON reviews (tenant, status, opened_at, id);
CREATE INDEX reviews_by_tenant_time ON reviews (tenant, opened_at, id);
CREATE INDEX reviews_by_status_time ON reviews (status, opened_at, id);
DROP INDEX reviews_by_session;
CREATE INDEX reviews_by_session ON reviews (tenant, session_id, opened_at, id);
DROP INDEX identities_by_session;
CREATE INDEX identities_by_session ON identities (tenant, session_id, seen_at);",
);

/// A database this binary must not open.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {database} is at schema version {found}, newer than this idstream knows (up to {latest}): \
     it was upgraded by a newer idstream; run that version (or restore a backup made before the upgrade)"
)]
pub struct TooNew {
    pub database: String,
    pub found: i32,
    pub latest: i32,
}

/// The steps of `migrations` not yet in `applied`, in order; an error when `applied` holds a
/// version newer than the last step.
pub fn pending<'m>(database: &str, migrations: &'m [Migration], applied: &[i32]) -> Result<Vec<&'m Migration>, TooNew> {
    let latest = latest(migrations);
    if let Some(&found) = applied.iter().max().filter(|&&v| v > latest) {
        return Err(TooNew { database: database.to_owned(), found, latest });
    }
    Ok(migrations.iter().filter(|m| !applied.contains(&m.version)).collect())
}

/// The newest version of a list.
pub fn latest(migrations: &[Migration]) -> i32 {
    migrations.last().map_or(0, |m| m.version)
}

/// Applies the pending steps of `steps` to an embedded database, each in its own transaction;
/// returns the versions applied now. (`events.db` written before versions were recorded holds
/// the version-1 tables already; step 1 creates them only if missing, so it is recorded as
/// applied.)
pub fn apply_sqlite(
    conn: &mut rusqlite::Connection,
    steps: &[Migration],
    database: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<i32>> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL)"
    ))?;
    let applied = sqlite_versions(conn)?;
    let mut done = Vec::new();
    for m in pending(database, steps, &applied)? {
        // A new database takes every step in milliseconds; an upgrade says what it is doing.
        let started = std::time::Instant::now();
        if !applied.is_empty() {
            tracing::info!(version = m.version, "{database}: applying migration: {}", m.description);
        }
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)
            .map_err(|e| anyhow::anyhow!("{database}: migration {} ({}): {e}", m.version, m.description))?;
        if let Some(code) = m.code {
            code(&tx, data_dir)
                .map_err(|e| anyhow::anyhow!("{database}: migration {} ({}): {e:#}", m.version, m.description))?;
        }
        tx.execute(
            &format!("INSERT INTO {TABLE} (version, description, applied_at) VALUES (?1, ?2, ?3)"),
            rusqlite::params![m.version, m.description, crate::util::now_us()],
        )?;
        tx.commit()?;
        if !applied.is_empty() {
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(version = m.version, ms, "{database}: migration {} applied", m.version);
        }
        done.push(m.version);
    }
    Ok(done)
}

/// The versions recorded in an embedded database (none before versions were recorded).
pub fn sqlite_versions(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<i32>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    conn.prepare(&format!("SELECT version FROM {TABLE} ORDER BY version"))?.query_map([], |r| r.get(0))?.collect()
}

/// The store's tables as version 1 created them (in `events.db`, then in `state.db`).
macro_rules! store_tables_v1 {
    () => {
        "
CREATE TABLE IF NOT EXISTS sessions (
    tenant          TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    subject         TEXT,
    provider_status TEXT,
    state           TEXT NOT NULL,
    outcome         TEXT,
    decision_id     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant, session_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_subject ON sessions (tenant, subject);
CREATE TABLE IF NOT EXISTS decisions (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    subject         TEXT,
    event_id        TEXT UNIQUE,
    event_offset    INTEGER,
    outcome         TEXT NOT NULL,
    score           REAL NOT NULL,
    ruleset_version TEXT,
    reasons         TEXT NOT NULL,
    decided_by      TEXT NOT NULL,
    decided_at      INTEGER NOT NULL,
    detail          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_session ON decisions (tenant, session_id, decided_at);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (decided_at, id);
CREATE TABLE IF NOT EXISTS reviews (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    subject      TEXT,
    decision_id  TEXT NOT NULL,
    reasons      TEXT NOT NULL,
    status       TEXT NOT NULL,
    opened_at    INTEGER NOT NULL,
    claimed_by   TEXT,
    claimed_at   INTEGER,
    resolved_by  TEXT,
    resolved_at  INTEGER,
    outcome      TEXT,
    note         TEXT
);
CREATE INDEX IF NOT EXISTS reviews_by_status ON reviews (tenant, status, opened_at);
CREATE INDEX IF NOT EXISTS reviews_by_session ON reviews (tenant, session_id);
CREATE TABLE IF NOT EXISTS blocklist (
    tenant    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    hash      TEXT NOT NULL,
    reason    TEXT,
    added_by  TEXT NOT NULL,
    added_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, kind, hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identities (
    tenant     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    session_id TEXT NOT NULL,
    subject    TEXT NOT NULL,
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, kind, hash, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subjects (
    tenant     TEXT NOT NULL,
    id         TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rulesets (
    tenant     TEXT NOT NULL,
    version    TEXT NOT NULL,
    label      TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS active_rulesets (
    tenant       TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    activated_by TEXT NOT NULL,
    activated_at INTEGER NOT NULL
) WITHOUT ROWID;
"
    };
}

/// The embedded log (`events.db`). Version 1 held the store's tables too; version 2 moved them
/// to `state.db` (so the log and the store have a writer each).
pub const EVENTS: &[Migration] = &[
    Migration {
        version: 1,
        description: "event log, checkpoints; sessions, decisions, reviews, blocklist, identities, subjects, rulesets",
        code: None,
        sql: V1,
    },
    Migration {
        version: 2,
        description: "log only: the store's tables moved to state.db; dedupe keys in an append-only table; \
                      the partition index in index.db",
        sql: "
CREATE TABLE IF NOT EXISTS dedupe (
    offset INTEGER PRIMARY KEY,
    hash   INTEGER NOT NULL,
    key    TEXT NOT NULL
);
DROP INDEX IF EXISTS events_by_partition;
",
        code: Some(split_v1),
    },
];

/// Version 2 of `events.db`: copies the store's tables into `state.db` (migrated first; a
/// committed copy there is repeated harmlessly if this transaction is lost), drops them here,
/// and fills the dedupe table from the events' own keys.
fn split_v1(tx: &rusqlite::Transaction<'_>, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let events_db = data_dir.join("events.db");
    let mut state = crate::sqlite::open_durable(&data_dir.join("state.db"))?;
    apply_sqlite(&mut state, STATE, "embedded store state.db", data_dir)?;
    let has = |name: &str| -> rusqlite::Result<bool> {
        tx.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)", [name], |r| {
            r.get(0)
        })
    };
    if has("decisions")? {
        state.execute("ATTACH DATABASE ?1 AS v1", [events_db.to_string_lossy()])?;
        let copy = state.transaction()?;
        for table in STORE_TABLES {
            // The v1 columns by name: later versions added columns (with defaults) to some.
            let cols: Vec<String> = copy
                .prepare("SELECT name FROM pragma_table_info(?1, 'v1')")?
                .query_map([table], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let cols = cols.join(", ");
            copy.execute_batch(&format!("INSERT OR IGNORE INTO main.{table} ({cols}) SELECT {cols} FROM v1.{table}"))?;
        }
        copy.execute_batch(
            "INSERT OR IGNORE INTO main.checkpoints (consumer, offset, updated_at)
             SELECT consumer, offset, updated_at FROM v1.checkpoints",
        )?;
        fill_session_identities(&copy, data_dir)?;
        copy.commit()?;
        state.execute("DETACH DATABASE v1", [])?;
        for table in STORE_TABLES {
            tx.execute_batch(&format!("DROP TABLE {table}"))?;
        }
    }
    if has("checkpoints")? {
        tx.execute_batch("DROP TABLE checkpoints")?;
    }
    // The v1 rows kept their keys in `events.dedupe_key`.
    let mut read = tx.prepare("SELECT offset, dedupe_key FROM events WHERE dedupe_key IS NOT NULL ORDER BY offset")?;
    let rows = read.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut insert = tx.prepare("INSERT OR IGNORE INTO dedupe (offset, hash, key) VALUES (?1, ?2, ?3)")?;
    for row in rows {
        let (offset, key) = row?;
        insert.execute(rusqlite::params![offset, dedupe_hash(&key), key])?;
    }
    Ok(())
}

/// The hash of a dedupe key as the log stores it (FNV-1a, stable across versions).
pub fn dedupe_hash(key: &str) -> i64 {
    crate::util::fnv1a(key) as i64
}

/// The store's tables, in `events.db` before version 2 and in `state.db` since.
const STORE_TABLES: &[&str] =
    &["sessions", "decisions", "reviews", "blocklist", "identities", "subjects", "rulesets", "active_rulesets"];

/// The embedded store (`state.db`): state, consumer checkpoints, and the outbox of log entries
/// committed with the state (appended to the log right after, again on restart if need be).
pub const STATE: &[Migration] = &[
    Migration {
        version: 1,
        description: "sessions, decisions, reviews, blocklist, identities, subjects, rulesets; checkpoints; outbox",
        code: None,
        sql: concat!(
            "
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer   TEXT PRIMARY KEY,
    offset     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL,
    event         BLOB NOT NULL,
    created_at    INTEGER NOT NULL
);
",
            store_tables_v1!()
        ),
    },
    Migration {
        version: 2,
        description: "access: API keys, users, login sessions, idempotent answers",
        sql: super::access::SQLITE_SCHEMA,
        code: None,
    },
    Migration {
        version: 3,
        description: "notifications: endpoints, delivery attempts",
        sql: super::notify::SQLITE_SCHEMA,
        code: None,
    },
    Migration {
        version: 4,
        description: "documents: uploaded files and where their bytes are",
        sql: super::documents::SQLITE_SCHEMA,
        code: None,
    },
    Migration {
        version: 5,
        description: "reviews: escalation level",
        sql: "ALTER TABLE reviews ADD COLUMN level INTEGER NOT NULL DEFAULT 1;",
        code: None,
    },
    Migration {
        version: 6,
        description: "identities: by session (linked subjects)",
        sql: "CREATE INDEX identities_by_session ON identities (tenant, session_id);",
        code: None,
    },
    Migration {
        version: 7,
        description: "tenant statistics: webhooks per minute; decisions by tenant and time",
        sql: "CREATE TABLE tenant_stats (
    tenant TEXT NOT NULL,
    minute INTEGER NOT NULL,
    metric TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (tenant, minute, metric)
) WITHOUT ROWID;
CREATE INDEX decisions_by_tenant_time ON decisions (tenant, decided_at);",
        code: None,
    },
    Migration { version: 8, description: KEYSET_INDEXES.0, sql: KEYSET_INDEXES.1, code: None },
    Migration {
        version: 9,
        description: "identities: one row per session listing its values, instead of an index by session",
        code: Some(fill_session_identities),
        sql: "CREATE TABLE session_identities (
    tenant     TEXT NOT NULL,
    session_id TEXT NOT NULL,
    pairs      TEXT NOT NULL,
    PRIMARY KEY (tenant, session_id)
) WITHOUT ROWID;
DROP INDEX identities_by_session;",
    },
];

/// Fills `session_identities` from the observations in `identities` (state.db v9; again after
/// `split_v1` copied a version-1 store's observations in). Repeating it changes nothing.
fn fill_session_identities(tx: &rusqlite::Transaction<'_>, _: &std::path::Path) -> anyhow::Result<()> {
    let observations: i64 = tx.query_row("SELECT count(*) FROM main.identities", [], |r| r.get(0))?;
    if observations == 0 {
        return Ok(());
    }
    // One statement, so no progress within it: say up front how long it may take (3.9 s per
    // million observations measured, BENCHMARKS.md "Identities by session").
    let started = std::time::Instant::now();
    tracing::info!(
        observations,
        "listing each session's identity values (one statement; about 4 s per million observations)"
    );
    // One row written per session: the statement's row count is the number of sessions.
    let sessions = tx.execute(
        "INSERT OR REPLACE INTO main.session_identities (tenant, session_id, pairs)
         SELECT tenant, session_id, json_group_array(json_array(kind, hash)) FROM main.identities GROUP BY tenant, session_id",
        [],
    )?;
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(observations, sessions, ms, "each session's identity values listed");
    Ok(())
}

/// Version 1 of `events.db`: the log and the store in one file.
const V1: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS events (
    offset        INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    tenant        TEXT NOT NULL,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    dedupe_key    TEXT UNIQUE,
    appended_at   INTEGER NOT NULL,
    event         BLOB NOT NULL,
    body          BLOB
);
CREATE INDEX IF NOT EXISTS events_by_partition ON events (partition_key, offset);
CREATE INDEX IF NOT EXISTS events_by_tenant ON events (tenant, offset);
CREATE TABLE IF NOT EXISTS log_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer   TEXT PRIMARY KEY,
    offset     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
",
    store_tables_v1!()
);

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration { version: 1, description: "a", sql: "", code: None },
        Migration { version: 2, description: "b", sql: "", code: None },
    ];

    #[test]
    fn pending_steps_in_order_and_newer_databases_refused() {
        let v = |p: Vec<&Migration>| p.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(v(pending("db", STEPS, &[]).unwrap()), [1, 2]);
        assert_eq!(v(pending("db", STEPS, &[1]).unwrap()), [2]);
        assert!(pending("db", STEPS, &[1, 2]).unwrap().is_empty());
        let e = pending("embedded database", STEPS, &[1, 2, 3]).unwrap_err().to_string();
        assert!(e.contains("schema version 3") && e.contains("up to 2"), "{e}");
    }

    #[test]
    fn sqlite_upgrades_in_place_and_refuses_a_newer_file() {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        // A file from before versions were recorded: the v1 tables without the version table.
        c.execute_batch(EVENTS[0].sql).unwrap();
        c.execute("INSERT INTO checkpoints VALUES ('decisions', 7, 0)", []).unwrap();
        assert_eq!(apply_sqlite(&mut c, &EVENTS[..1], "events.db", std::path::Path::new(".")).unwrap(), [1]);
        assert_eq!(
            apply_sqlite(&mut c, &EVENTS[..1], "events.db", std::path::Path::new(".")).unwrap(),
            Vec::<i32>::new()
        );
        let kept: i64 = c.query_row("SELECT offset FROM checkpoints", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 7);
        c.execute(&format!("INSERT INTO {TABLE} VALUES (99, 'future', 0)"), []).unwrap();
        let e = apply_sqlite(&mut c, EVENTS, "events.db", std::path::Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }
}
