//! The event log: the durable, ordered, replayable record every other part reads.
//!
//! One trait, [`EventLog`], with one implementation per backend chosen once at start-up
//! (embedded: [`sqlite::SqliteLog`]). Its contract, which the conformance tests check:
//!
//! - `append` returns only after the batch is on stable storage; an error means nothing of the
//!   batch was stored.
//! - Offsets start at 1, are dense, and increase in commit order.
//! - An entry whose `dedupe_key` is already stored is not appended again: the original's
//!   offset and id come back with `duplicate = true`.
//! - `subscribe` yields the offset of the last committed entry, so tailing readers wake up
//!   without polling.

pub mod nats;
pub mod retention;
pub mod sqlite;

use async_trait::async_trait;
use tokio::sync::watch;

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub id: String,
    pub tenant: String,
    /// The webhook source, or the internal component that produced the entry.
    pub source: String,
    pub kind: String,
    /// Entries with the same partition key are consumed in log order (the session id).
    pub partition_key: String,
    /// Stored; a second entry with the same key is a duplicate. `None`: never a duplicate.
    pub dedupe_key: Option<String>,
    /// The normalised event, JSON.
    pub event: Vec<u8>,
    /// The original request body, byte-exact, when the entry came from a webhook.
    pub body: Option<Vec<u8>>,
}

/// The result of appending one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub offset: u64,
    pub id: String,
    pub duplicate: bool,
}

/// A stored entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub offset: u64,
    pub id: String,
    pub tenant: String,
    pub source: String,
    pub kind: String,
    pub partition_key: String,
    /// When the log committed it, Unix microseconds.
    pub appended_at_us: i64,
    pub event: Vec<u8>,
    pub body: Option<Vec<u8>>,
}

/// Which entries a read returns. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ReadFilter {
    pub tenant: Option<String>,
    pub partition_key: Option<String>,
}

impl ReadFilter {
    /// Whether the filter admits `e` (the in-memory reads; SQL reads say the same in `WHERE`).
    pub fn admits(&self, e: &LogEntry) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == e.tenant)
            && self.partition_key.as_deref().is_none_or(|p| p == e.partition_key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log cannot store entries now (disk full, read-only, I/O error). Nothing of the
    /// failed batch was stored; the caller must not acknowledge it.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The log is shutting down.
    #[error("event log is closed")]
    Closed,
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends a batch durably; results are in input order.
    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, LogError>;
    /// Entries with offset > `after`, in offset order, at most `limit`.
    async fn read(&self, after: u64, limit: usize, filter: &ReadFilter) -> Result<Vec<LogEntry>, LogError>;
    /// The entry with this idstream id.
    async fn get(&self, id: &str) -> Result<Option<LogEntry>, LogError>;
    /// Offset of the last committed entry (0 when empty).
    fn head(&self) -> u64;
    /// Wakes on every commit with the new head.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// Stops accepting appends, finishes queued ones and closes storage.
    async fn close(&self);
    /// Entries at or below this offset were removed by retention (0: none). Offsets are never
    /// reused: the head never goes below it.
    fn pruned_through(&self) -> u64;
    /// Removes entries with offset <= `through` (at most `max` of them per call); returns the
    /// new `pruned_through`.
    async fn prune(&self, through: u64, max: usize) -> Result<u64, LogError>;
    /// The offset of the last entry appended before `unix_us` (0 if none is retained).
    async fn last_offset_before(&self, unix_us: i64) -> Result<u64, LogError>;
}
