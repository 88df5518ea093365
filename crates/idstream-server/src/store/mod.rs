//! The state store: sessions, decisions, review cases, blocklists, subjects, rulesets — and
//! the one write path that changes them together with the event log.
//!
//! Every change goes through [`Store::commit`] as a [`Txn`]: log entries to append plus state
//! [`Op`]s, applied atomically with each other (and with a consumer checkpoint, when the txn
//! carries one). That is what makes the decision worker exactly-once: the decision, the
//! session's new state, the review case, the `decision.made` entry and the worker's checkpoint
//! are one commit, so a crash leaves either all of them or none.
//!
//! Conditional ops ([`Op::is_conditional`]: claim, resolve, remove a block, activate) check their
//! condition inside the transaction; when it fails, nothing of that txn is applied and the
//! caller gets [`TxnError::Conflict`] / [`TxnError::NotFound`]. Other txns committed in the same
//! group commit are unaffected.
//!
//! Blocklisted and observed identity values are only ever stored as keyed hashes
//! (`decide::normalize`); nothing here sees them in clear text.

pub mod access;
mod access_pg;
mod access_sqlite;
pub mod documents;
pub mod migrate;
pub mod notify;
mod notify_pg;
mod notify_sqlite;
pub mod pg;
pub mod postgres;
pub(crate) mod sql_types;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::domain::{BlocklistKind, Outcome, ReviewStatus, SessionState};
use crate::log::{Appended, LogError, NewEntry};

/// Log entries and state changes committed together, or not at all.
#[derive(Debug, Default, Clone)]
pub struct Txn {
    pub entries: Vec<NewEntry>,
    pub ops: Vec<Op>,
}

/// A committed [`Txn`] whose entries wait in the outbox: [`Store::publish`] appends them.
#[derive(Debug, Default)]
#[must_use = "entries left unpublished wait for the outbox relay"]
pub struct Staged {
    pub(crate) entries: Vec<NewEntry>,
    /// The outbox rows holding `entries` (the embedded store's sequence numbers; PostgreSQL finds
    /// its rows by entry id).
    pub(crate) rows: Vec<i64>,
}

impl Staged {
    /// Whether there is nothing to append.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A state change.
#[derive(Debug, Clone)]
pub enum Op {
    /// API keys, users, login sessions, idempotent answers.
    Access(access::AccessOp),
    SetCheckpoint {
        consumer: String,
        offset: u64,
    },
    PutDecision(DecisionRecord),
    UpsertSession(SessionUpdate),
    OpenReview(ReviewRecord),
    /// Identity values (keyed hashes) seen in a session, for velocity.
    Observe(Vec<Observation>),
    /// Only an `open` case can be claimed.
    ClaimReview {
        tenant: String,
        id: String,
        actor: String,
        now_us: i64,
    },
    /// Only the analyst holding the claim may resolve (`force` skips that check: system
    /// re-checks close cases they decide themselves).
    ResolveReview {
        tenant: String,
        id: String,
        actor: String,
        /// `None`: closed without an outcome (the session ended with no result).
        outcome: Option<Outcome>,
        note: String,
        now_us: i64,
        force: bool,
    },
    PutSubject {
        tenant: String,
        id: String,
        attributes: Value,
        actor: String,
        now_us: i64,
    },
    PutRuleset(RulesetRecord),
    ActivateRuleset {
        tenant: String,
        version: String,
        actor: String,
        now_us: i64,
    },
    AddBlock(BlockRecord),
    /// Fails with `NotFound` when the entry does not exist.
    RemoveBlock {
        tenant: String,
        kind: BlocklistKind,
        hash: String,
    },
    /// Notification endpoints and delivery attempts.
    Notify(notify::NotifyOp),
    /// A stored document file (an id already present is kept).
    PutDocument(documents::DocumentRecord),
    /// Conditional: see [`MoveReview`].
    MoveReview(MoveReview),
    /// Adds webhook counts to the tenants' statistics.
    AddStats(Vec<StatCount>),
}

impl Op {
    /// Whether the op checks a condition that can make its txn fail without an I/O error.
    pub fn is_conditional(&self) -> bool {
        match self {
            Op::Access(a) => a.is_conditional(),
            Op::Notify(n) => n.is_conditional(),
            op => matches!(
                op,
                Op::ClaimReview { .. }
                    | Op::ResolveReview { .. }
                    | Op::MoveReview(_)
                    | Op::RemoveBlock { .. }
                    | Op::ActivateRuleset { .. }
            ),
        }
    }
}

/// The store cannot answer now. Nothing was changed by the failed call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable (its own error text, for the log only).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

/// The embedded store reads through the log's connections.
impl From<LogError> for StoreError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Unavailable(m) => StoreError::Unavailable(m),
            LogError::Closed => StoreError::Closed,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Appending the txn's entries failed (see [`Store::commit`] for what that means per store).
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A conditional op's condition did not hold (review already claimed, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

/// A decision, as stored and as `GET /v1/decisions/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DecisionRecord {
    pub id: String,
    pub tenant: String,
    pub session_id: String,
    pub subject: Option<String>,
    /// The verification event decided (none for an analyst's or a re-check's decision).
    pub event_id: Option<String>,
    pub event_offset: Option<u64>,
    pub outcome: Outcome,
    pub score: f64,
    pub ruleset_version: Option<String>,
    pub reasons: Vec<String>,
    /// `rules`, `review:<analyst>` or `blocklist:<actor>`.
    pub decided_by: String,
    pub decided_at_us: i64,
    /// Fired rules with the values they read, evaluation errors, the full input context and,
    /// for an analyst's decision, the review id and note.
    pub detail: Value,
}

/// The new state of a session after an event or a decision.
#[derive(Debug, Clone)]
pub struct SessionUpdate {
    pub tenant: String,
    pub session_id: String,
    pub subject: Option<String>,
    /// The provider's latest status (kept when `None`).
    pub provider_status: Option<String>,
    pub state: SessionState,
    /// The decision that set this state: its outcome and id (both kept when `None`).
    pub decision: Option<(Outcome, String)>,
    pub now_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SessionRecord {
    pub tenant: String,
    pub session_id: String,
    pub subject: Option<String>,
    pub provider_status: Option<String>,
    pub state: SessionState,
    /// The latest decision's outcome (kept when a later event only moved the state).
    pub outcome: Option<Outcome>,
    pub decision_id: Option<String>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ReviewRecord {
    pub id: String,
    pub tenant: String,
    pub session_id: String,
    pub subject: Option<String>,
    /// The decision that asked for the review.
    pub decision_id: String,
    pub reasons: Vec<String>,
    pub status: ReviewStatus,
    pub opened_at_us: i64,
    pub claimed_by: Option<String>,
    pub claimed_at_us: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolved_at_us: Option<i64>,
    pub outcome: Option<Outcome>,
    pub note: Option<String>,
    /// 1, or 2 once escalated (then only `admin` and `policy_admin` may claim it).
    #[serde(default = "first_level")]
    pub level: u8,
}

fn first_level() -> u8 {
    1
}

impl ReviewRecord {
    /// A case just opened by decision `decision_id`: open, unclaimed, first level.
    pub fn open(
        id: String,
        tenant: String,
        session_id: String,
        subject: Option<String>,
        decision_id: String,
        reasons: Vec<String>,
        opened_at_us: i64,
    ) -> ReviewRecord {
        ReviewRecord {
            id,
            tenant,
            session_id,
            subject,
            decision_id,
            reasons,
            status: ReviewStatus::Open,
            opened_at_us,
            claimed_by: None,
            claimed_at_us: None,
            resolved_by: None,
            resolved_at_us: None,
            outcome: None,
            note: None,
            level: first_level(),
        }
    }
}

/// A change of a case's claim: released to the queue, handed to someone, or escalated. Applied
/// only when the case is unresolved and every given condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveReview {
    pub tenant: String,
    pub id: String,
    /// The case must be claimed (by `holder`, when given) ...
    pub claimed: bool,
    pub holder: Option<String>,
    /// ... since at least this time (idle claims).
    pub claimed_before_us: Option<i64>,
    /// ... and at most at this level.
    pub max_level: Option<u8>,
    /// The new holder (`None`: back in the queue, open).
    pub to: Option<String>,
    /// The new level (`None`: unchanged).
    pub level: Option<u8>,
    pub now_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BlockRecord {
    pub tenant: String,
    pub kind: BlocklistKind,
    /// Hex keyed hash of the normalised value; also the entry's id in the API.
    pub hash: String,
    pub reason: Option<String>,
    pub added_by: String,
    pub added_at_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    pub tenant: String,
    pub kind: BlocklistKind,
    pub hash: String,
    pub subject: String,
    pub session_id: String,
    pub seen_at_us: i64,
}

/// Webhooks of a tenant in one minute (`webhooks_accepted`, `webhooks_duplicate`,
/// `webhooks_rejected`), added to what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatCount {
    pub tenant: String,
    /// Unix time / 60.
    pub minute: i64,
    pub metric: String,
    pub count: u64,
}

/// What the statistics of a tenant are made of.
#[derive(Debug, Clone, Default)]
pub struct StatsRows {
    /// Webhook counts per bucket (`minute`: the bucket's first minute).
    pub counts: Vec<StatCount>,
    /// (bucket start in Unix µs, outcome, decisions).
    pub decisions: Vec<(i64, Outcome, u64)>,
    pub open_reviews: u64,
    pub claimed_reviews: u64,
    pub oldest_open_at_us: Option<i64>,
}

/// Which identity observations to read (`identities`, the velocity table), newest first.
#[derive(Debug, Clone, Default)]
pub struct IdentityQuery {
    pub tenant: String,
    pub kind: Option<BlocklistKind>,
    pub hash: Option<String>,
    pub session_id: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SubjectRecord {
    pub tenant: String,
    pub id: String,
    pub attributes: Value,
    pub updated_by: String,
    pub updated_at_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RulesetRecord {
    pub tenant: String,
    /// Hex SHA-256 of the canonical content.
    pub version: String,
    pub label: String,
    pub text: String,
    pub created_by: String,
    pub created_at_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ActiveRuleset {
    pub version: String,
    pub activated_by: String,
    pub activated_at_us: i64,
}

/// What the decision worker looks up for one decision.
#[derive(Debug, Clone, Default)]
pub struct LookupRequest {
    pub tenant: String,
    pub session_id: String,
    /// The subject (or a per-session stand-in when the event names none).
    pub subject: String,
    /// `(kind, hash)` pairs to check against the blocklist.
    pub block_hashes: Vec<(BlocklistKind, String)>,
    /// `(kind, hash)` pairs whose other users are counted (velocity).
    pub velocity_hashes: Vec<(BlocklistKind, String)>,
    /// Velocity only counts observations at or after this time.
    pub velocity_since_us: i64,
    /// The subject id as the company knows it, for `subjects` attributes.
    pub subject_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LookupResult {
    /// Kinds with a blocklist hit.
    pub blocked: Vec<BlocklistKind>,
    /// Per velocity kind, the distinct *other* subjects seen with the same value (at most 1000).
    pub velocity: Vec<(BlocklistKind, Vec<String>)>,
    /// The subject's other sessions: `(session_id, latest outcome)`.
    pub other_sessions: Vec<(String, Option<Outcome>)>,
    pub subject_attributes: Option<Value>,
    /// The session's open (or claimed) review case, if any.
    pub open_review: Option<ReviewRecord>,
    /// The session's latest decision, if it has one (the echo rule reads who made it).
    pub session_decision: Option<SessionDecision>,
}

/// Who made a session's latest decision, and what it was.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDecision {
    pub outcome: Outcome,
    /// `rules`, `review:<analyst>` or `blocklist:<actor>`.
    pub decided_by: String,
}

/// Filters of `GET /v1/reviews`.
#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    pub tenant: Option<String>,
    /// `None`: every status.
    pub status: Option<ReviewStatus>,
    pub reason: Option<String>,
    pub opened_before_us: Option<i64>,
    pub session_id: Option<String>,
    /// Keyset pagination: only cases after this `(opened_at, id)` in the listing's order.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

/// A parameter of a query built at run time, bound by each backend in its own way.
#[derive(Debug, Clone)]
pub enum SqlParam {
    Text(String),
    Int(i64),
}

/// A `WHERE` clause built from only the conditions that are set, so each shape of query uses
/// its index (`(? IS NULL OR …)` would hide the index from the planner). `ph(n)` spells the
/// n-th placeholder of the backend (`?n`, `$n`).
pub struct Conditions<F: Fn(usize) -> String> {
    ph: F,
    conds: Vec<String>,
    pub params: Vec<SqlParam>,
}

impl<F: Fn(usize) -> String> Conditions<F> {
    pub fn new(ph: F) -> Self {
        Conditions { ph, conds: Vec::new(), params: Vec::new() }
    }

    /// Binds `v`; returns its placeholder.
    pub fn bind(&mut self, v: SqlParam) -> String {
        self.params.push(v);
        (self.ph)(self.params.len())
    }

    pub fn push(&mut self, cond: String) {
        self.conds.push(cond);
    }

    /// `column = <v>`, when `v` is set.
    pub fn eq(&mut self, column: &str, v: Option<&str>) {
        if let Some(v) = v {
            let p = self.bind(SqlParam::Text(v.to_owned()));
            self.conds.push(format!("{column} = {p}"));
        }
    }

    /// ` WHERE a AND b …`, or nothing.
    pub fn clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }
}

fn limit_of(n: usize) -> SqlParam {
    SqlParam::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl ReviewFilter {
    /// The `SELECT … FROM reviews` listing for this filter, oldest first, keyset after `after`.
    /// `reason(p)` spells a test that the JSON array `reasons` holds the text `p` or a
    /// sub-reason of it.
    pub fn sql<F: Fn(usize) -> String>(
        &self,
        cols: &str,
        ph: F,
        reason: impl Fn(&str) -> String,
    ) -> (String, Vec<SqlParam>) {
        let mut w = Conditions::new(ph);
        w.eq("tenant", self.tenant.as_deref());
        w.eq("status", self.status.map(|s| s.as_str()));
        if let Some(b) = self.opened_before_us {
            let p = w.bind(SqlParam::Int(b));
            w.push(format!("opened_at < {p}"));
        }
        w.eq("session_id", self.session_id.as_deref());
        if let Some(r) = &self.reason {
            let p = w.bind(SqlParam::Text(r.clone()));
            w.push(reason(&p));
        }
        if let Some((at, id)) = &self.after {
            let (a, i) = (w.bind(SqlParam::Int(*at)), w.bind(SqlParam::Text(id.clone())));
            w.push(format!("opened_at >= {a} AND (opened_at > {a} OR id > {i})"));
        }
        let limit = w.bind(limit_of(self.limit));
        (format!("SELECT {cols} FROM reviews{} ORDER BY opened_at, id LIMIT {limit}", w.clause()), w.params)
    }
}

impl IdentityQuery {
    /// The `SELECT … FROM identities` of this query, newest first.
    pub fn sql<F: Fn(usize) -> String>(&self, ph: F) -> (String, Vec<SqlParam>) {
        let mut w = Conditions::new(ph);
        w.eq("tenant", Some(&self.tenant));
        w.eq("kind", self.kind.map(|k| k.as_str()));
        w.eq("hash", self.hash.as_deref());
        w.eq("session_id", self.session_id.as_deref());
        let limit = w.bind(limit_of(self.limit));
        (
            format!(
                "SELECT tenant, kind, hash, subject, session_id, seen_at FROM identities{} ORDER BY seen_at DESC LIMIT {limit}",
                w.clause()
            ),
            w.params,
        )
    }
}

/// The store's read side; writes go through [`Store::commit`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies `txn` atomically; results are the appended entries, in order (none when the
    /// change committed but its entries wait in an outbox for the log to take them).
    async fn commit(&self, txn: Txn) -> Result<Vec<Appended>, TxnError> {
        let staged = self.commit_staged(txn).await?;
        self.publish(staged).await
    }
    /// The first half of [`Store::commit`]: applies `txn` atomically, its entries written to the
    /// outbox in the same transaction. When this returns the change is durable; its entries are
    /// not in the log yet (the relay appends them if [`Store::publish`] never runs).
    async fn commit_staged(&self, txn: Txn) -> Result<Staged, TxnError>;
    /// The second half of [`Store::commit`]: appends a staged commit's entries to the log and
    /// clears their outbox rows. A caller that publishes several commits keeps their order by
    /// awaiting each before publishing the next.
    async fn publish(&self, staged: Staged) -> Result<Vec<Appended>, TxnError>;
    /// Stops writing after what is queued (shutdown).
    async fn close(&self);
    /// A consumer's stored position (the last offset it finished), as `Op::SetCheckpoint`
    /// committed it with the consumer's effects.
    async fn checkpoint(&self, consumer: &str) -> Result<Option<u64>, StoreError>;

    // Access: API keys, users, login sessions, idempotent answers (`access.rs`).
    async fn api_key_by_hash(&self, sha256: &str) -> Result<Option<access::ApiKeyRecord>, StoreError>;
    /// Every key (of one tenant, unless `None`), newest first.
    async fn api_keys(&self, tenant: Option<&str>) -> Result<Vec<access::ApiKeyRecord>, StoreError>;
    async fn user(&self, id: &str) -> Result<Option<access::UserRecord>, StoreError>;
    async fn user_by_name(&self, username: &str) -> Result<Option<access::UserRecord>, StoreError>;
    async fn user_by_oidc_subject(&self, subject: &str) -> Result<Option<access::UserRecord>, StoreError>;
    /// Every user (of one tenant, unless `None`), by username.
    async fn users(&self, tenant: Option<&str>) -> Result<Vec<access::UserRecord>, StoreError>;
    async fn auth_session(&self, id_sha256: &str) -> Result<Option<access::AuthSessionRecord>, StoreError>;
    async fn idempotent(&self, scope: &str, key: &str) -> Result<Option<access::IdempotencyRecord>, StoreError>;
    /// The enrichment lookups of a batch of decisions, in one read (one snapshot), with
    /// `consumer`'s checkpoint as that snapshot holds it (`None`: none stored). The decision
    /// worker looks a batch up while the batch before it commits; the checkpoint says whether
    /// the snapshot includes that commit (which is atomic with it).
    async fn lookup_at(
        &self,
        reqs: Vec<LookupRequest>,
        consumer: &str,
    ) -> Result<(Vec<LookupResult>, Option<u64>), StoreError>;
    async fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError>;
    /// Decisions made by the rules between the two times (decision time, Unix µs), oldest first.
    async fn decisions_between(
        &self,
        since_us: i64,
        until_us: i64,
        tenant: Option<&str>,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, StoreError>;
    async fn session(&self, tenant: &str, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    async fn session_decisions(&self, tenant: &str, id: &str) -> Result<Vec<DecisionRecord>, StoreError>;
    /// Sessions with an open or claimed review in which a value with this hash was seen.
    async fn open_sessions_with(
        &self,
        tenant: &str,
        kind: BlocklistKind,
        hash: &str,
    ) -> Result<Vec<ReviewRecord>, StoreError>;
    async fn review(&self, tenant: Option<&str>, id: &str) -> Result<Option<ReviewRecord>, StoreError>;
    async fn reviews(&self, filter: ReviewFilter) -> Result<Vec<ReviewRecord>, StoreError>;
    /// The review resolved for a session, latest first (backtest's analyst agreement).
    async fn resolved_review_for_session(&self, tenant: &str, id: &str) -> Result<Option<ReviewRecord>, StoreError>;
    async fn blocks(&self, tenant: &str, kind: BlocklistKind, limit: usize) -> Result<Vec<BlockRecord>, StoreError>;
    /// One blocklist entry by its hash (the blocklist preview's "already listed").
    async fn block(&self, tenant: &str, kind: BlocklistKind, hash: &str) -> Result<Option<BlockRecord>, StoreError>;
    async fn subject(&self, tenant: &str, id: &str) -> Result<Option<SubjectRecord>, StoreError>;
    async fn ruleset(&self, tenant: &str, version: &str) -> Result<Option<RulesetRecord>, StoreError>;
    async fn rulesets(&self, tenant: &str) -> Result<Vec<RulesetRecord>, StoreError>;
    async fn active_rulesets(&self) -> Result<Vec<(String, ActiveRuleset)>, StoreError>;

    // Notifications (`notify.rs`).
    /// API-made endpoints (of one tenant, unless `None`), by tenant and id.
    async fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<notify::EndpointRecord>, StoreError>;
    /// A tenant's statistics since `from_us`, decisions in buckets of `bucket_us`.
    /// Webhook counts from `from_us` and decisions from `decisions_from_us`, per bucket of
    /// `bucket_us`; the review queue now.
    async fn stats(
        &self,
        tenant: &str,
        from_us: i64,
        bucket_us: i64,
        decisions_from_us: i64,
    ) -> Result<StatsRows, StoreError>;
    /// Identity observations (keyed hashes seen in sessions).
    async fn identities(&self, q: IdentityQuery) -> Result<Vec<Observation>, StoreError>;
    // Documents (`documents.rs`).
    /// A document by id, within `tenant` unless `None`.
    async fn document(&self, tenant: Option<&str>, id: &str) -> Result<Option<documents::DocumentRecord>, StoreError>;
    /// A session's (a document check's) documents, oldest first.
    async fn session_documents(
        &self,
        tenant: &str,
        session_id: &str,
    ) -> Result<Vec<documents::DocumentRecord>, StoreError>;
    async fn endpoint(&self, id: &str) -> Result<Option<notify::EndpointRecord>, StoreError>;
    /// An endpoint's delivery attempts with `seq < before_seq`, newest first; `failed_only`:
    /// given-up deliveries only.
    async fn attempts(
        &self,
        endpoint: &str,
        before_seq: Option<i64>,
        failed_only: bool,
        limit: usize,
    ) -> Result<Vec<notify::AttemptRecord>, StoreError>;
}
