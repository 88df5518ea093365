//! Schema migrations, one mechanism for both backends: an ordered list of numbered steps per
//! database, each applied once in its own transaction and recorded in `idstream_migrations`
//! (version, description, applied_at). A database that records a version this binary does not
//! know was written by a newer idstream: it is refused with a message, never opened.
//!
//! Never edit a released migration; add a new one at the end of its list.

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// The table both backends record applied versions in.
pub const TABLE: &str = "idstream_migrations";

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

/// Applies the embedded database's pending steps (`SQLITE`), each in its own transaction;
/// returns the versions applied now. A file written before versions were recorded holds the
/// version-1 tables already; step 1 creates them only if missing, so it is recorded as applied.
pub fn apply_sqlite(conn: &mut rusqlite::Connection, database: &str) -> anyhow::Result<Vec<i32>> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL)"
    ))?;
    let applied = sqlite_versions(conn)?;
    let mut done = Vec::new();
    for m in pending(database, SQLITE, &applied)? {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)
            .map_err(|e| anyhow::anyhow!("{database}: migration {} ({}): {e}", m.version, m.description))?;
        tx.execute(
            &format!("INSERT INTO {TABLE} (version, description, applied_at) VALUES (?1, ?2, ?3)"),
            rusqlite::params![m.version, m.description, crate::util::now_us()],
        )?;
        tx.commit()?;
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

/// The embedded database (`events.db`): the log and the store in one file.
pub const SQLITE: &[Migration] = &[Migration {
    version: 1,
    description: "event log, checkpoints; sessions, decisions, reviews, blocklist, identities, subjects, rulesets",
    sql: "
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
",
}];

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] =
        &[Migration { version: 1, description: "a", sql: "" }, Migration { version: 2, description: "b", sql: "" }];

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
        c.execute_batch(SQLITE[0].sql).unwrap();
        c.execute("INSERT INTO checkpoints VALUES ('decisions', 7, 0)", []).unwrap();
        assert_eq!(apply_sqlite(&mut c, "events.db").unwrap(), [1]);
        assert_eq!(apply_sqlite(&mut c, "events.db").unwrap(), Vec::<i32>::new());
        let kept: i64 = c.query_row("SELECT offset FROM checkpoints", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 7);
        c.execute(&format!("INSERT INTO {TABLE} VALUES (99, 'future', 0)"), []).unwrap();
        let e = apply_sqlite(&mut c, "events.db").unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }
}
