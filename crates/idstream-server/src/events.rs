//! The log's schema: every entry idstream writes to the event log is one of these types.
//!
//! An entry is either a provider's result ([`IdentityEvent`], built by the pure core from a
//! verified webhook) or one of idstream's own events ([`OwnEvent`], tagged by `kind`). Own
//! kinds live in namespaces no provider kind may use (`idstream_core::event::OWN_NAMESPACES`),
//! so the kind alone tells the two apart. The JSON on the wire is these types' serde form; the
//! published contract is `docs/events.schema.json`, generated from them (`idstream schema
//! events`) and checked for staleness in CI. New kinds are added here, as variants of
//! [`OwnEvent`], and nowhere else.
//!
//! Nothing here does I/O: building an event and turning it into a log entry are pure.

use idstream_rules::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use idstream_core::event::IdentityEvent;

pub use crate::domain::{BlocklistKind, ReviewStatus};
use crate::log::{LogEntry, NewEntry};

/// The `source` of every entry idstream writes itself.
pub const OWN_SOURCE: &str = "idstream";

/// `decision.made`: a decision by the rules, an analyst or a blocklist re-check. Compact: the
/// full inputs are in the stored decision (`GET /v1/decisions/{decision_id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionMade {
    /// The entry's id (UUIDv7).
    pub id: String,
    pub tenant: String,
    pub decision_id: String,
    pub session_id: String,
    pub subject: Option<String>,
    pub outcome: Outcome,
    pub score: f64,
    /// Reason codes behind the outcome.
    pub reasons: Vec<String>,
    /// Ids of the rules that fired.
    pub fired: Vec<String>,
    /// Null for an analyst's or a re-check's decision.
    pub ruleset_version: Option<String>,
    /// The verification event decided (null for an analyst's or a re-check's decision).
    pub event_id: Option<String>,
    pub event_offset: Option<u64>,
    /// `rules`, `review:<analyst>` or `blocklist:<actor>`.
    pub decided_by: String,
    /// RFC 3339 UTC.
    pub decided_at: String,
    /// The review case this decision opened, kept, or resolved.
    pub review_id: Option<String>,
}

/// `review.opened`, `review.claimed`, `review.resolved`: a review case changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReviewChanged {
    pub id: String,
    pub tenant: String,
    pub review_id: String,
    pub session_id: String,
    pub subject: Option<String>,
    /// The decision that asked for the review.
    pub decision_id: String,
    pub reasons: Vec<String>,
    /// The case's status after the change.
    pub status: ReviewStatus,
    /// The final outcome (resolved cases).
    pub outcome: Option<Outcome>,
    pub note: Option<String>,
    /// Who made the change (`rules` for a superseded case); null when the rules opened it.
    pub actor: Option<String>,
    /// RFC 3339 UTC.
    pub at: String,
}

/// How pushing an analyst's resolution to the provider ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushResult {
    /// The provider accepted the new status.
    Pushed,
    /// The provider refused it, or did not take it before `push_back_max_age_secs`.
    Failed,
}

/// `review.pushed_back`: an analyst's resolution was pushed to the provider (Didit's
/// update-status), or given up on. One per analyst decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReviewPushedBack {
    pub id: String,
    pub tenant: String,
    pub review_id: String,
    pub session_id: String,
    /// The analyst's decision that was pushed.
    pub decision_id: String,
    /// The `[[providers]] id`.
    pub provider: String,
    /// The status set at the provider (`Approved`, `Declined`).
    pub provider_status: String,
    pub result: PushResult,
    /// Why it failed (`provider_rejected`, `provider_unavailable`, ...).
    pub error: Option<String>,
    /// Calls made (each with the client's own retries).
    pub attempts: u32,
    /// RFC 3339 UTC.
    pub at: String,
}

/// `document.viewed`: someone fetched a stored document's bytes (`GET /v1/documents/{id}`).
/// Appended before the first byte is sent, so no view goes unrecorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentViewed {
    pub id: String,
    pub tenant: String,
    pub document_id: String,
    /// The document check (or session) the document belongs to.
    pub session_id: String,
    pub subject: String,
    /// `front` or `back`.
    pub side: String,
    /// Who viewed it (the caller's name: a user, an API key).
    pub actor: String,
    /// RFC 3339 UTC.
    pub at: String,
}

/// `ruleset.uploaded`, `ruleset.activated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RulesetChanged {
    pub id: String,
    pub tenant: String,
    /// Hex SHA-256 of the ruleset's canonical content.
    pub version: String,
    pub label: String,
    pub actor: String,
    pub at: String,
    /// `ruleset.activated` under four-eyes activation: who asked for it (`actor` approved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// `blocklist.added`, `blocklist.removed`. The value itself is never in the log: `entry_id` is
/// its keyed hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlocklistChanged {
    pub id: String,
    pub tenant: String,
    pub list: BlocklistKind,
    pub entry_id: String,
    pub reason: Option<String>,
    pub actor: String,
    pub at: String,
}

/// `subject.updated`: which attributes were set and by whom; the values (often personal data)
/// stay in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectUpdated {
    pub id: String,
    pub tenant: String,
    pub subject: String,
    /// The attribute names that were set.
    pub attributes: Vec<String>,
    pub actor: String,
    pub at: String,
}

/// `access.*`: an API key or a user account changed, or a person logged in or out. Names and
/// roles only: never a key, a password or a session id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccessChanged {
    pub id: String,
    /// The key's or user's tenant (`*` for operators).
    pub tenant: String,
    /// The key's or user's id.
    pub target_id: String,
    /// The key's name or the username.
    pub target_name: String,
    /// The role it has (after the change), where it matters.
    pub role: Option<crate::domain::Role>,
    /// Who did it (for a login: the user).
    pub actor: String,
    pub at: String,
}

/// `session.created`: idstream created a hosted verification session with a provider
/// (`POST /v1/verifications`). Never the session's URL or token (a bearer capability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionCreated {
    pub id: String,
    pub tenant: String,
    /// The provider's session id (the partition key of the session's events).
    pub session_id: String,
    pub subject: String,
    /// The `[[providers]] id` it was created with.
    pub provider: String,
    /// The webhook source its results arrive on.
    pub source: String,
    pub workflow_id: String,
    /// The provider's status at creation (Didit: `Not Started`).
    pub provider_status: String,
    pub actor: String,
    /// RFC 3339 UTC.
    pub at: String,
}

/// `notification.failed`: every attempt to deliver an event to an endpoint failed. The event
/// is in the endpoint's dead-letter list (`GET /v1/endpoints/{id}/deliveries?failed=true`) and a
/// replay delivers it again. Never the receiver's answer (that is in the attempts list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotificationFailed {
    pub id: String,
    pub tenant: String,
    /// The endpoint's id.
    pub endpoint: String,
    /// The event that was not delivered: its id, offset and kind.
    pub event_id: String,
    pub event_offset: u64,
    pub event_kind: String,
    /// The session of the event, if it has one (this event joins its timeline).
    pub session_id: Option<String>,
    /// The `webhook-id` every attempt carried.
    pub webhook_id: String,
    pub attempts: u32,
    /// The last attempt's HTTP status (none: no answer).
    pub last_status: Option<u16>,
    /// What went wrong in short: `HTTP 500`, `timed out`, `could not connect`, ...
    pub last_error: String,
    pub at: String,
}

/// `endpoint.disabled` / `endpoint.enabled`: deliveries to an endpoint stopped or resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointChanged {
    pub id: String,
    pub tenant: String,
    /// The endpoint's id.
    pub endpoint: String,
    /// Why: `the receiver answered 410 Gone`, `failing continuously for 432000 s`,
    /// `disabled by user:maria`, ...
    pub reason: String,
    /// Who: the caller, or `idstream` when the delivery worker did it.
    pub actor: String,
    pub at: String,
}

/// `endpoint.replay_requested`: a caller asked for an endpoint's events to be delivered again.
/// The endpoint's delivery worker carries it out when it reaches this entry in the log, so the
/// request survives restarts and reaches whichever node delivers the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointReplay {
    pub id: String,
    pub tenant: String,
    /// The endpoint's id.
    pub endpoint: String,
    /// The first offset delivered again.
    pub from_offset: u64,
    /// The last one (none: up to this request).
    pub to_offset: Option<u64>,
    /// Only events whose delivery was given up (the dead-letter list).
    pub failed_only: bool,
    pub actor: String,
    pub at: String,
}

/// An event idstream writes itself, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind")]
pub enum OwnEvent {
    #[serde(rename = "decision.made")]
    DecisionMade(DecisionMade),
    #[serde(rename = "review.opened")]
    ReviewOpened(ReviewChanged),
    #[serde(rename = "review.claimed")]
    ReviewClaimed(ReviewChanged),
    #[serde(rename = "review.resolved")]
    ReviewResolved(ReviewChanged),
    #[serde(rename = "review.pushed_back")]
    ReviewPushedBack(ReviewPushedBack),
    /// A claim given up: by its holder, an admin, or `system:idle` when it was idle too long.
    #[serde(rename = "review.released")]
    ReviewReleased(ReviewChanged),
    /// An admin handed the case to an analyst (`note` says to whom and why).
    #[serde(rename = "review.reassigned")]
    ReviewReassigned(ReviewChanged),
    /// Sent to the second level (`admin`, `policy_admin`), back in the queue.
    #[serde(rename = "review.escalated")]
    ReviewEscalated(ReviewChanged),
    /// The analyst asked the user to resubmit (closed without an outcome, `note` says why; the
    /// provider was told through its update-status when its account is configured).
    #[serde(rename = "review.resubmission_requested")]
    ReviewResubmissionRequested(ReviewChanged),
    #[serde(rename = "ruleset.uploaded")]
    RulesetUploaded(RulesetChanged),
    #[serde(rename = "ruleset.activated")]
    RulesetActivated(RulesetChanged),
    /// Four-eyes activation (`require_second_approver`): asked for, waiting for a second
    /// `policy_admin` or `admin` to activate the same version.
    #[serde(rename = "ruleset.activation_requested")]
    RulesetActivationRequested(RulesetChanged),
    #[serde(rename = "blocklist.added")]
    BlocklistAdded(BlocklistChanged),
    #[serde(rename = "blocklist.removed")]
    BlocklistRemoved(BlocklistChanged),
    #[serde(rename = "subject.updated")]
    SubjectUpdated(SubjectUpdated),
    #[serde(rename = "access.key_created")]
    AccessKeyCreated(AccessChanged),
    #[serde(rename = "access.key_revoked")]
    AccessKeyRevoked(AccessChanged),
    #[serde(rename = "access.user_created")]
    AccessUserCreated(AccessChanged),
    #[serde(rename = "access.user_role_changed")]
    AccessUserRoleChanged(AccessChanged),
    #[serde(rename = "access.user_disabled")]
    AccessUserDisabled(AccessChanged),
    #[serde(rename = "access.user_enabled")]
    AccessUserEnabled(AccessChanged),
    #[serde(rename = "access.password_changed")]
    AccessPasswordChanged(AccessChanged),
    #[serde(rename = "access.user_locked")]
    AccessUserLocked(AccessChanged),
    #[serde(rename = "access.logged_in")]
    AccessLoggedIn(AccessChanged),
    #[serde(rename = "access.logged_out")]
    AccessLoggedOut(AccessChanged),
    #[serde(rename = "session.created")]
    SessionCreated(SessionCreated),
    #[serde(rename = "notification.failed")]
    NotificationFailed(NotificationFailed),
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled(EndpointChanged),
    #[serde(rename = "endpoint.enabled")]
    EndpointEnabled(EndpointChanged),
    #[serde(rename = "endpoint.replay_requested")]
    EndpointReplayRequested(EndpointReplay),
    #[serde(rename = "document.viewed")]
    DocumentViewed(DocumentViewed),
}

/// Every kind [`OwnEvent`] has, for documentation and tests.
pub const OWN_KINDS: &[&str] = &[
    "decision.made",
    "review.opened",
    "review.claimed",
    "review.resolved",
    "review.pushed_back",
    "review.released",
    "review.reassigned",
    "review.escalated",
    "review.resubmission_requested",
    "ruleset.uploaded",
    "ruleset.activated",
    "ruleset.activation_requested",
    "blocklist.added",
    "blocklist.removed",
    "subject.updated",
    "access.key_created",
    "access.key_revoked",
    "access.user_created",
    "access.user_role_changed",
    "access.user_disabled",
    "access.user_enabled",
    "access.password_changed",
    "access.user_locked",
    "access.logged_in",
    "access.logged_out",
    "session.created",
    "notification.failed",
    "endpoint.disabled",
    "endpoint.enabled",
    "endpoint.replay_requested",
    "document.viewed",
];

impl OwnEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            OwnEvent::DecisionMade(_) => "decision.made",
            OwnEvent::ReviewOpened(_) => "review.opened",
            OwnEvent::ReviewClaimed(_) => "review.claimed",
            OwnEvent::ReviewResolved(_) => "review.resolved",
            OwnEvent::ReviewPushedBack(_) => "review.pushed_back",
            OwnEvent::ReviewReleased(_) => "review.released",
            OwnEvent::ReviewReassigned(_) => "review.reassigned",
            OwnEvent::ReviewEscalated(_) => "review.escalated",
            OwnEvent::ReviewResubmissionRequested(_) => "review.resubmission_requested",
            OwnEvent::RulesetUploaded(_) => "ruleset.uploaded",
            OwnEvent::RulesetActivated(_) => "ruleset.activated",
            OwnEvent::RulesetActivationRequested(_) => "ruleset.activation_requested",
            OwnEvent::BlocklistAdded(_) => "blocklist.added",
            OwnEvent::BlocklistRemoved(_) => "blocklist.removed",
            OwnEvent::SubjectUpdated(_) => "subject.updated",
            OwnEvent::AccessKeyCreated(_) => "access.key_created",
            OwnEvent::AccessKeyRevoked(_) => "access.key_revoked",
            OwnEvent::AccessUserCreated(_) => "access.user_created",
            OwnEvent::AccessUserRoleChanged(_) => "access.user_role_changed",
            OwnEvent::AccessUserDisabled(_) => "access.user_disabled",
            OwnEvent::AccessUserEnabled(_) => "access.user_enabled",
            OwnEvent::AccessPasswordChanged(_) => "access.password_changed",
            OwnEvent::AccessUserLocked(_) => "access.user_locked",
            OwnEvent::AccessLoggedIn(_) => "access.logged_in",
            OwnEvent::AccessLoggedOut(_) => "access.logged_out",
            OwnEvent::SessionCreated(_) => "session.created",
            OwnEvent::NotificationFailed(_) => "notification.failed",
            OwnEvent::EndpointDisabled(_) => "endpoint.disabled",
            OwnEvent::EndpointEnabled(_) => "endpoint.enabled",
            OwnEvent::EndpointReplayRequested(_) => "endpoint.replay_requested",
            OwnEvent::DocumentViewed(_) => "document.viewed",
        }
    }

    /// The `access.*` event of this kind.
    pub fn access(kind: &'static str, e: AccessChanged) -> OwnEvent {
        match kind {
            "access.key_created" => OwnEvent::AccessKeyCreated(e),
            "access.key_revoked" => OwnEvent::AccessKeyRevoked(e),
            "access.user_created" => OwnEvent::AccessUserCreated(e),
            "access.user_role_changed" => OwnEvent::AccessUserRoleChanged(e),
            "access.user_disabled" => OwnEvent::AccessUserDisabled(e),
            "access.user_enabled" => OwnEvent::AccessUserEnabled(e),
            "access.password_changed" => OwnEvent::AccessPasswordChanged(e),
            "access.user_locked" => OwnEvent::AccessUserLocked(e),
            "access.logged_in" => OwnEvent::AccessLoggedIn(e),
            "access.logged_out" => OwnEvent::AccessLoggedOut(e),
            other => unreachable!("no access event kind `{other}`"),
        }
    }

    /// The `access.*` payload, if this is one.
    fn access_payload(&self) -> Option<&AccessChanged> {
        match self {
            OwnEvent::AccessKeyCreated(e)
            | OwnEvent::AccessKeyRevoked(e)
            | OwnEvent::AccessUserCreated(e)
            | OwnEvent::AccessUserRoleChanged(e)
            | OwnEvent::AccessUserDisabled(e)
            | OwnEvent::AccessUserEnabled(e)
            | OwnEvent::AccessPasswordChanged(e)
            | OwnEvent::AccessUserLocked(e)
            | OwnEvent::AccessLoggedIn(e)
            | OwnEvent::AccessLoggedOut(e) => Some(e),
            _ => None,
        }
    }

    /// The entry's id.
    pub fn id(&self) -> &str {
        match self {
            OwnEvent::DecisionMade(e) => &e.id,
            OwnEvent::ReviewOpened(e)
            | OwnEvent::ReviewClaimed(e)
            | OwnEvent::ReviewResolved(e)
            | OwnEvent::ReviewReleased(e)
            | OwnEvent::ReviewReassigned(e)
            | OwnEvent::ReviewEscalated(e)
            | OwnEvent::ReviewResubmissionRequested(e) => &e.id,
            OwnEvent::ReviewPushedBack(e) => &e.id,
            OwnEvent::RulesetUploaded(e) | OwnEvent::RulesetActivated(e) | OwnEvent::RulesetActivationRequested(e) => {
                &e.id
            }
            OwnEvent::BlocklistAdded(e) | OwnEvent::BlocklistRemoved(e) => &e.id,
            OwnEvent::SubjectUpdated(e) => &e.id,
            OwnEvent::SessionCreated(e) => &e.id,
            OwnEvent::NotificationFailed(e) => &e.id,
            OwnEvent::EndpointDisabled(e) | OwnEvent::EndpointEnabled(e) => &e.id,
            OwnEvent::EndpointReplayRequested(e) => &e.id,
            OwnEvent::DocumentViewed(e) => &e.id,
            other => &other.access_payload().expect("an access event").id,
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            OwnEvent::DecisionMade(e) => &e.tenant,
            OwnEvent::ReviewOpened(e)
            | OwnEvent::ReviewClaimed(e)
            | OwnEvent::ReviewResolved(e)
            | OwnEvent::ReviewReleased(e)
            | OwnEvent::ReviewReassigned(e)
            | OwnEvent::ReviewEscalated(e)
            | OwnEvent::ReviewResubmissionRequested(e) => &e.tenant,
            OwnEvent::ReviewPushedBack(e) => &e.tenant,
            OwnEvent::RulesetUploaded(e) | OwnEvent::RulesetActivated(e) | OwnEvent::RulesetActivationRequested(e) => {
                &e.tenant
            }
            OwnEvent::BlocklistAdded(e) | OwnEvent::BlocklistRemoved(e) => &e.tenant,
            OwnEvent::SubjectUpdated(e) => &e.tenant,
            OwnEvent::SessionCreated(e) => &e.tenant,
            OwnEvent::NotificationFailed(e) => &e.tenant,
            OwnEvent::EndpointDisabled(e) | OwnEvent::EndpointEnabled(e) => &e.tenant,
            OwnEvent::EndpointReplayRequested(e) => &e.tenant,
            OwnEvent::DocumentViewed(e) => &e.tenant,
            other => &other.access_payload().expect("an access event").tenant,
        }
    }

    /// The log's partition key: a session's events share one with the session's verification
    /// events (so they are consumed in order with them); tenant-wide changes have their own.
    pub fn partition_key(&self) -> String {
        match self {
            OwnEvent::DecisionMade(e) => e.session_id.clone(),
            OwnEvent::ReviewOpened(e)
            | OwnEvent::ReviewClaimed(e)
            | OwnEvent::ReviewResolved(e)
            | OwnEvent::ReviewReleased(e)
            | OwnEvent::ReviewReassigned(e)
            | OwnEvent::ReviewEscalated(e)
            | OwnEvent::ReviewResubmissionRequested(e) => e.session_id.clone(),
            OwnEvent::ReviewPushedBack(e) => e.session_id.clone(),
            OwnEvent::RulesetUploaded(e) | OwnEvent::RulesetActivated(e) | OwnEvent::RulesetActivationRequested(e) => {
                format!("ruleset:{}", e.tenant)
            }
            OwnEvent::BlocklistAdded(e) | OwnEvent::BlocklistRemoved(e) => format!("blocklist:{}", e.tenant),
            OwnEvent::SubjectUpdated(e) => format!("subject:{}", e.subject),
            OwnEvent::SessionCreated(e) => e.session_id.clone(),
            OwnEvent::NotificationFailed(e) => {
                e.session_id.clone().unwrap_or_else(|| format!("endpoint:{}", e.endpoint))
            }
            OwnEvent::EndpointDisabled(e) | OwnEvent::EndpointEnabled(e) => format!("endpoint:{}", e.endpoint),
            OwnEvent::EndpointReplayRequested(e) => format!("endpoint:{}", e.endpoint),
            OwnEvent::DocumentViewed(e) => e.session_id.clone(),
            other => format!("access:{}", other.access_payload().expect("an access event").tenant),
        }
    }

    /// The dedupe key, where one is needed: one `decision.made` per decided event, so a
    /// replayed decision batch cannot append a second one.
    pub fn dedupe_key(&self) -> Option<String> {
        match self {
            OwnEvent::DecisionMade(e) => Some(match &e.event_id {
                Some(event) => format!("decision/{event}"),
                None => format!("decision/{}", e.decision_id),
            }),
            // Didit answers a creation for a user with an unfinished session with that session
            // again: recorded once.
            OwnEvent::SessionCreated(e) => Some(format!("session.created/{}/{}", e.provider, e.session_id)),
            // Every node may push (the provider's update is idempotent): one outcome is kept.
            OwnEvent::ReviewPushedBack(e) => Some(format!("review.pushed_back/{}", e.decision_id)),
            _ => None,
        }
    }

    /// The session the event belongs to, if any.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            OwnEvent::DecisionMade(e) => Some(&e.session_id),
            OwnEvent::ReviewOpened(e)
            | OwnEvent::ReviewClaimed(e)
            | OwnEvent::ReviewResolved(e)
            | OwnEvent::ReviewReleased(e)
            | OwnEvent::ReviewReassigned(e)
            | OwnEvent::ReviewEscalated(e)
            | OwnEvent::ReviewResubmissionRequested(e) => Some(&e.session_id),
            OwnEvent::ReviewPushedBack(e) => Some(&e.session_id),
            OwnEvent::SessionCreated(e) => Some(&e.session_id),
            OwnEvent::NotificationFailed(e) => e.session_id.as_deref(),
            OwnEvent::DocumentViewed(e) => Some(&e.session_id),
            _ => None,
        }
    }

    pub fn subject(&self) -> Option<&str> {
        match self {
            OwnEvent::DecisionMade(e) => e.subject.as_deref(),
            OwnEvent::ReviewOpened(e)
            | OwnEvent::ReviewClaimed(e)
            | OwnEvent::ReviewResolved(e)
            | OwnEvent::ReviewReleased(e)
            | OwnEvent::ReviewReassigned(e)
            | OwnEvent::ReviewEscalated(e)
            | OwnEvent::ReviewResubmissionRequested(e) => e.subject.as_deref(),
            OwnEvent::SubjectUpdated(e) => Some(&e.subject),
            OwnEvent::SessionCreated(e) => Some(&e.subject),
            OwnEvent::DocumentViewed(e) => Some(&e.subject),
            _ => None,
        }
    }

    /// The log entry carrying this event.
    pub fn to_entry(&self) -> NewEntry {
        NewEntry {
            id: self.id().to_owned(),
            tenant: self.tenant().to_owned(),
            source: OWN_SOURCE.to_owned(),
            kind: self.kind().to_owned(),
            partition_key: self.partition_key(),
            dedupe_key: self.dedupe_key(),
            event: serde_json::to_vec(self).expect("own events always serialise"),
            body: None,
        }
    }
}

/// Any entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LogEvent {
    /// One of idstream's own events.
    Own(OwnEvent),
    /// A provider's result, normalised.
    Provider(IdentityEvent),
}

/// A stored entry that is not a valid event of its kind.
#[derive(Debug, thiserror::Error)]
#[error("log entry {offset} ({kind}) is not a valid event: {error}")]
pub struct InvalidEntry {
    pub offset: u64,
    pub kind: String,
    pub error: serde_json::Error,
}

impl LogEvent {
    /// Parses a stored entry's event, choosing the type by its source and kind (so a bad entry
    /// is reported against the type it should have had).
    pub fn from_entry(e: &LogEntry) -> Result<LogEvent, InvalidEntry> {
        let invalid = |error| InvalidEntry { offset: e.offset, kind: e.kind.clone(), error };
        if e.source == OWN_SOURCE {
            serde_json::from_slice(&e.event).map(LogEvent::Own).map_err(invalid)
        } else {
            serde_json::from_slice(&e.event).map(LogEvent::Provider).map_err(invalid)
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            LogEvent::Own(e) => e.kind(),
            LogEvent::Provider(e) => &e.kind,
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match self {
            LogEvent::Own(e) => e.session_id(),
            LogEvent::Provider(e) => e.session_id.as_deref(),
        }
    }

    pub fn subject(&self) -> Option<&str> {
        match self {
            LogEvent::Own(e) => e.subject(),
            LogEvent::Provider(e) => e.subject.as_deref(),
        }
    }

    /// A `decision.made` event's outcome.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            LogEvent::Own(OwnEvent::DecisionMade(d)) => Some(d.outcome),
            _ => None,
        }
    }
}

/// An entry as the read API and the streams show it: the event with its log offset (and, in
/// the read API, a webhook's original body).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    #[serde(flatten)]
    pub event: LogEvent,
    /// The entry's position in the log.
    pub offset: u64,
    /// The original webhook body, byte-exact as UTF-8 (provider events, read API only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl EventView {
    /// The view of a stored entry; `with_body` adds a webhook's original body.
    pub fn of(e: &LogEntry, with_body: bool) -> Result<EventView, InvalidEntry> {
        let mut event = LogEvent::from_entry(e)?;
        // The stored provider event was written before its offset was known.
        if let LogEvent::Provider(p) = &mut event {
            p.offset = e.offset;
        }
        Ok(EventView { event, offset: e.offset, body: with_body.then(|| body_text(e)).flatten() })
    }
}

/// Bodies are verified JSON, hence UTF-8; `/body` serves the exact bytes anyway.
fn body_text(e: &LogEntry) -> Option<String> {
    e.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// What a reader shows for an entry. Readers never skip an offset: an entry this version
/// cannot read as an event (written by a newer version during a rolling upgrade, or damaged)
/// is shown as stored, with its offset, and a warning is logged.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Shown {
    Event(Box<EventView>),
    AsStored(serde_json::Value),
}

impl Shown {
    pub fn of(e: &LogEntry, with_body: bool) -> Shown {
        match EventView::of(e, with_body) {
            Ok(v) => Shown::Event(Box::new(v)),
            Err(err) => {
                tracing::warn!(error = %err, "showing a log entry that is not a valid event as stored");
                let mut v: serde_json::Value = serde_json::from_slice(&e.event).unwrap_or_default();
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("offset".into(), e.offset.into());
                    if let Some(body) = with_body.then(|| body_text(e)).flatten() {
                        m.insert("body".into(), body.into());
                    }
                }
                Shown::AsStored(v)
            }
        }
    }

    fn field(&self, name: &str) -> Option<&str> {
        match self {
            Shown::AsStored(v) => v.get(name).and_then(serde_json::Value::as_str),
            Shown::Event(_) => None,
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match self {
            Shown::Event(v) => v.event.session_id(),
            other => other.field("session_id"),
        }
    }

    pub fn subject(&self) -> Option<&str> {
        match self {
            Shown::Event(v) => v.event.subject(),
            other => other.field("subject"),
        }
    }

    /// A `decision.made` event's outcome.
    pub fn outcome(&self) -> Option<&str> {
        match self {
            Shown::Event(v) => v.event.outcome().map(Outcome::as_str),
            other => other.field("outcome"),
        }
    }
}

/// The JSON Schema (2020-12) of every log entry, generated from these types: the published
/// contract of the log (`docs/events.schema.json`, `idstream schema events`).
pub fn json_schema() -> serde_json::Value {
    #[derive(utoipa::OpenApi)]
    #[openapi(components(schemas(LogEvent, EventView)))]
    struct Events;
    let doc = serde_json::to_value(<Events as utoipa::OpenApi>::openapi()).expect("schemas serialise");
    let mut defs = doc["components"]["schemas"].clone();
    rewrite_refs(&mut defs);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/idstream/idstream/docs/events.schema.json",
        "title": "idstream log event",
        "description": "An entry of idstream's event log, as the read API (`GET /v1/events`), live streams and notifications show it: `EventView` (the event with its `offset`). Stored events are `LogEvent`s: a provider's normalised result (`IdentityEvent`) or one of idstream's own events (`OwnEvent`, tagged by `kind`). Own kinds are in namespaces no provider kind uses.",
        "$ref": "#/$defs/EventView",
        "$defs": defs,
    })
}

/// `#/components/schemas/X` → `#/$defs/X`.
fn rewrite_refs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                match (k.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => {
                        *r = r.replace("#/components/schemas/", "#/$defs/");
                    }
                    (_, v) => rewrite_refs(v),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reference in the published schema resolves: the generator collected every type.
    #[test]
    fn the_schema_is_complete() {
        fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                            (_, v) => refs(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let schema = json_schema();
        let mut all = Vec::new();
        refs(&schema, &mut all);
        assert!(all.len() > 10, "{all:?}");
        for r in all {
            let name = r.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("foreign reference {r}"));
            assert!(schema["$defs"][name].is_object(), "{r} is not defined");
        }
        for own in
            ["DecisionMade", "ReviewChanged", "RulesetChanged", "BlocklistChanged", "SubjectUpdated", "IdentityEvent"]
        {
            assert!(schema["$defs"][own].is_object(), "{own}");
        }
    }

    /// Entries written before the schema was typed (by the JSON builders of the previous
    /// version, in `tests/data/v0-events.json`) parse as their types and serialise back to
    /// exactly the same JSON: the wire format did not change.
    #[test]
    fn entries_written_before_the_types_parse_and_round_trip() {
        let fixture: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../tests/data/v0-events.json")).unwrap();
        let mut kinds = std::collections::BTreeSet::new();
        for f in &fixture {
            let entry = LogEntry {
                offset: f["offset"].as_u64().unwrap(),
                id: f["event"]["id"].as_str().unwrap().to_owned(),
                tenant: f["event"]["tenant"].as_str().unwrap().to_owned(),
                source: f["source"].as_str().unwrap().to_owned(),
                kind: f["kind"].as_str().unwrap().to_owned(),
                partition_key: String::new(),
                appended_at_us: 0,
                event: serde_json::to_vec(&f["event"]).unwrap(),
                body: None,
            };
            let parsed = LogEvent::from_entry(&entry).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.kind(), entry.kind);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), f["event"], "{} changed on the wire", entry.kind);
            kinds.insert(entry.kind);
        }
        for own in OWN_KINDS {
            assert!(kinds.contains(*own), "the fixture has no {own}");
        }
        assert!(kinds.iter().any(|k| k.starts_with("verification.")));
    }

    /// A provider entry whose kind looks like one of ours (a Standard Webhooks sender's
    /// `decision.made`, stored before such kinds were renamed) is still read as a provider event.
    #[test]
    fn provider_entries_are_read_as_provider_events_whatever_their_kind() {
        let ev = serde_json::json!({
            "id": "e1", "offset": 0, "tenant": "beta", "source": "std-main", "provider": "standard",
            "kind": "decision.made", "provider_kind": "decision.made", "occurred_at": "2026-01-01T00:00:00Z",
            "received_at": "2026-01-01T00:00:00Z", "signature": "standard_v1", "unauthenticated_decision": false,
            "dedupe_key": "event:m1", "checks": {}
        });
        let entry = LogEntry {
            offset: 9,
            id: "e1".into(),
            tenant: "beta".into(),
            source: "std-main".into(),
            kind: "decision.made".into(),
            partition_key: "p".into(),
            appended_at_us: 0,
            event: serde_json::to_vec(&ev).unwrap(),
            body: None,
        };
        assert!(matches!(LogEvent::from_entry(&entry).unwrap(), LogEvent::Provider(_)));
        assert_eq!(EventView::of(&entry, false).unwrap().offset, 9);
    }

    #[test]
    fn own_kinds_are_in_own_namespaces_and_match_the_enum() {
        for k in OWN_KINDS {
            assert!(idstream_core::event::is_own_kind(k), "{k}");
        }
        let e = OwnEvent::SubjectUpdated(SubjectUpdated {
            id: "i".into(),
            tenant: "t".into(),
            subject: "s".into(),
            attributes: vec!["a".into()],
            actor: "x".into(),
            at: "2026-01-01T00:00:00Z".into(),
        });
        let v: serde_json::Value = serde_json::from_slice(&e.to_entry().event).unwrap();
        assert_eq!(v["kind"], "subject.updated");
        assert!(OWN_KINDS.contains(&e.kind()));
    }
}
