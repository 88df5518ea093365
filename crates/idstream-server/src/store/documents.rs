//! The store's document records: one per uploaded file, pointing at its bytes in object
//! storage ([`crate::documents::objects`]). A record is written in the same transaction as the
//! verification event of its check, so a document exists for the API exactly when its check
//! is in the log.

use serde::{Deserialize, Serialize};

/// One stored document file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub id: String,
    pub tenant: String,
    pub subject: String,
    /// The check it was sent in (idstream's id, the verification event's `session_id`).
    pub session_id: String,
    /// `front` or `back`.
    pub side: String,
    /// Recognised from the bytes (`image/jpeg`, `image/png`, `image/heic`, `application/pdf`).
    pub content_type: String,
    pub size_bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Keyed digest of the bytes within the tenant (the same image uploaded twice matches).
    pub content_mac: String,
    /// The object's path in the object store.
    pub address: String,
    /// The verification event of the check.
    pub event_id: String,
    pub created_by: String,
    pub created_at_us: i64,
}

/// The document tables of `state.db` (SQLite `STATE` version 4).
pub const SQLITE_SCHEMA: &str = "
CREATE TABLE documents (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    side         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    width        INTEGER,
    height       INTEGER,
    content_mac  TEXT NOT NULL,
    address      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX documents_by_session ON documents (tenant, session_id);
CREATE INDEX documents_by_subject ON documents (tenant, subject);
CREATE INDEX documents_by_content ON documents (tenant, content_mac);
";

/// The same in PostgreSQL (`MIGRATIONS` version 6).
pub const POSTGRES_SCHEMA: &str = "
CREATE TABLE documents (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    side         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    width        INT,
    height       INT,
    content_mac  TEXT NOT NULL,
    address      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX documents_by_session ON documents (tenant, session_id);
CREATE INDEX documents_by_subject ON documents (tenant, subject);
CREATE INDEX documents_by_content ON documents (tenant, content_mac);
";

const COLS: &str = "id, tenant, subject, session_id, side, content_type, size_bytes, width, height, content_mac,
    address, event_id, created_by, created_at";

/// `WHERE` of [`Store::document`](super::Store::document): by id, within a tenant unless `None`.
pub(crate) const SQLITE_BY_ID: &str = "WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)";
pub(crate) const SQLITE_BY_SESSION: &str = "WHERE tenant = ?1 AND session_id = ?2 ORDER BY created_at, side DESC";
pub(crate) const PG_BY_ID: &str = "WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)";
pub(crate) const PG_BY_SESSION: &str = "WHERE tenant = $1 AND session_id = $2 ORDER BY created_at, side DESC";

pub(crate) fn select(filter: &str) -> String {
    format!("SELECT {COLS} FROM documents {filter}")
}

pub(crate) const INSERT_SQLITE: &str = "INSERT INTO documents (id, tenant, subject, session_id, side, content_type,
    size_bytes, width, height, content_mac, address, event_id, created_by, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT (id) DO NOTHING";
pub(crate) const INSERT_PG: &str = "INSERT INTO documents (id, tenant, subject, session_id, side, content_type,
    size_bytes, width, height, content_mac, address, event_id, created_by, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING";

pub(crate) fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentRecord> {
    Ok(DocumentRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        subject: r.get(2)?,
        session_id: r.get(3)?,
        side: r.get(4)?,
        content_type: r.get(5)?,
        size_bytes: r.get::<_, i64>(6)? as u64,
        width: r.get(7)?,
        height: r.get(8)?,
        content_mac: r.get(9)?,
        address: r.get(10)?,
        event_id: r.get(11)?,
        created_by: r.get(12)?,
        created_at_us: r.get(13)?,
    })
}

pub(crate) fn pg_row(r: &tokio_postgres::Row) -> DocumentRecord {
    DocumentRecord {
        id: r.get(0),
        tenant: r.get(1),
        subject: r.get(2),
        session_id: r.get(3),
        side: r.get(4),
        content_type: r.get(5),
        size_bytes: r.get::<_, i64>(6) as u64,
        width: r.get::<_, Option<i32>>(7).map(|v| v as u32),
        height: r.get::<_, Option<i32>>(8).map(|v| v as u32),
        content_mac: r.get(9),
        address: r.get(10),
        event_id: r.get(11),
        created_by: r.get(12),
        created_at_us: r.get(13),
    }
}

/// The parameters of an insert, in column order (SQLite).
pub(crate) fn sqlite_params(d: &DocumentRecord) -> [Box<dyn rusqlite::ToSql + '_>; 14] {
    [
        Box::new(&d.id),
        Box::new(&d.tenant),
        Box::new(&d.subject),
        Box::new(&d.session_id),
        Box::new(&d.side),
        Box::new(&d.content_type),
        Box::new(d.size_bytes as i64),
        Box::new(d.width),
        Box::new(d.height),
        Box::new(&d.content_mac),
        Box::new(&d.address),
        Box::new(&d.event_id),
        Box::new(&d.created_by),
        Box::new(d.created_at_us),
    ]
}
