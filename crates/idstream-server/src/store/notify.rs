//! The store's notification records: endpoints made through the API (configured ones live in
//! the config), and every delivery attempt — their records, the ops that change them (one
//! [`super::Op::Notify`] each) and the schema of both stores. Each endpoint's position in the
//! log is an ordinary consumer checkpoint (`notify:<endpoint id>`).
//!
//! Endpoint secrets are stored as given: signing needs them (HMAC). They are never listed by
//! the API after creation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A notification endpoint: where, what, and how it is signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// Kind patterns (`*`, `prefix.*`, exact kinds).
    pub kinds: Vec<String>,
    /// Standard Webhooks secrets (`whsec_...`); each signs every delivery.
    pub secrets: Vec<String>,
    /// Only events whose `outcome` is one of these (none: every matching event).
    pub outcomes: Option<Vec<String>>,
    pub timeout_secs: u64,
    pub headers: std::collections::BTreeMap<String, String>,
    pub rate_limit_per_sec: Option<f64>,
    pub disabled: bool,
    /// Why it was disabled (by a caller, or by a `410 Gone` answer).
    pub disabled_reason: Option<String>,
    pub created_by: String,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// One delivery attempt of one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptRecord {
    /// Increasing per store (newest last).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub seq: i64,
    pub endpoint: String,
    pub event_id: String,
    pub event_offset: u64,
    pub kind: String,
    /// The session (the log's partition key) the event belongs to.
    pub session_id: String,
    /// The `webhook-id` header: the same on every attempt for this event and endpoint.
    pub webhook_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The receiver's HTTP status (none when no answer came: timeout, refused, ...).
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// What went wrong (no secret, at most 500 characters of the answer).
    pub error: Option<String>,
    /// `delivered`, `retrying` (another attempt follows at `next_attempt_at_us`) or `failed`
    /// (given up: the dead-letter list).
    pub outcome: String,
    pub next_attempt_at_us: Option<i64>,
    pub at_us: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Changes of notification records.
#[derive(Debug, Clone)]
pub enum NotifyOp {
    /// Conditional: the id is free.
    PutEndpoint(EndpointRecord),
    /// Conditional: the endpoint exists (in `tenant`, unless `None`). Replaces it.
    UpdateEndpoint {
        tenant: Option<String>,
        endpoint: EndpointRecord,
    },
    /// Conditional: the endpoint exists (in `tenant`, unless `None`). Its attempts stay.
    DeleteEndpoint {
        tenant: Option<String>,
        id: String,
    },
    RecordAttempt(AttemptRecord),
    /// Sets an endpoint's checkpoint, also backwards (a replay, a new endpoint starting at the
    /// head); `Op::SetCheckpoint` only moves forward on PostgreSQL.
    ResetCheckpoint {
        consumer: String,
        offset: u64,
    },
}

impl NotifyOp {
    pub fn is_conditional(&self) -> bool {
        !matches!(self, NotifyOp::RecordAttempt(_) | NotifyOp::ResetCheckpoint { .. })
    }
}

/// The notification tables of `state.db` (SQLite `STATE` version 3).
pub const SQLITE_SCHEMA: &str = "
CREATE TABLE endpoints (
    id                 TEXT PRIMARY KEY,
    tenant             TEXT NOT NULL,
    url                TEXT NOT NULL,
    kinds              TEXT NOT NULL,
    secrets            TEXT NOT NULL,
    outcomes           TEXT,
    timeout_secs       INTEGER NOT NULL,
    headers            TEXT NOT NULL,
    rate_limit_per_sec REAL,
    disabled           INTEGER NOT NULL DEFAULT 0,
    disabled_reason    TEXT,
    created_by         TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE TABLE notification_attempts (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_offset    INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    status          INTEGER,
    latency_ms      INTEGER NOT NULL,
    error           TEXT,
    outcome         TEXT NOT NULL,
    next_attempt_at INTEGER,
    at              INTEGER NOT NULL
);
CREATE INDEX notification_attempts_by_endpoint ON notification_attempts (endpoint, seq);
";

/// The same tables in PostgreSQL (`MIGRATIONS` version 5).
pub const POSTGRES_SCHEMA: &str = "
CREATE TABLE endpoints (
    id                 TEXT PRIMARY KEY,
    tenant             TEXT NOT NULL,
    url                TEXT NOT NULL,
    kinds              TEXT NOT NULL,
    secrets            TEXT NOT NULL,
    outcomes           TEXT,
    timeout_secs       BIGINT NOT NULL,
    headers            TEXT NOT NULL,
    rate_limit_per_sec DOUBLE PRECISION,
    disabled           BOOLEAN NOT NULL DEFAULT FALSE,
    disabled_reason    TEXT,
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE TABLE notification_attempts (
    seq             BIGSERIAL PRIMARY KEY,
    endpoint        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_offset    BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    attempt         INT NOT NULL,
    status          INT,
    latency_ms      BIGINT NOT NULL,
    error           TEXT,
    outcome         TEXT NOT NULL,
    next_attempt_at BIGINT,
    at              BIGINT NOT NULL
);
CREATE INDEX notification_attempts_by_endpoint ON notification_attempts (endpoint, seq);
";

/// JSON text of a list or map column.
pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("endpoint fields always serialise")
}

/// A JSON column read back; a row this version cannot read is an error, never a default.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_str(s).map_err(|e| format!("stored endpoint column is not readable: {e}"))
}
