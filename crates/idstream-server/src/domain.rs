//! The domain's vocabulary as types: decision outcomes, session states, review statuses,
//! blocklist kinds. Stored records, log events and API answers all use these, so a value outside
//! the vocabulary cannot be written, and each serialises as the snake_case word the API shows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use idstream_rules::Outcome;

/// idstream's state of a verification session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The provider reported `not_started`, `in_progress` or `awaiting_user`.
    InProgress,
    /// Decided `approve` (by the rules, an analyst or a re-check).
    Approved,
    /// Decided `review`: a case is open.
    Review,
    /// Decided `decline`.
    Declined,
    /// The provider asked the user to resubmit.
    Resubmitted,
    Abandoned,
    Expired,
}

impl SessionState {
    pub const ALL: [SessionState; 7] = [
        SessionState::InProgress,
        SessionState::Approved,
        SessionState::Review,
        SessionState::Declined,
        SessionState::Resubmitted,
        SessionState::Abandoned,
        SessionState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::InProgress => "in_progress",
            SessionState::Approved => "approved",
            SessionState::Review => "review",
            SessionState::Declined => "declined",
            SessionState::Resubmitted => "resubmitted",
            SessionState::Abandoned => "abandoned",
            SessionState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<SessionState> {
        SessionState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The state a decision's outcome puts a session in.
    pub fn of(outcome: Outcome) -> SessionState {
        match outcome {
            Outcome::Approve => SessionState::Approved,
            Outcome::Review => SessionState::Review,
            Outcome::Decline => SessionState::Declined,
        }
    }

    /// Whether the session can produce no further result (its review cases are moot).
    pub fn is_final_without_result(self) -> bool {
        matches!(self, SessionState::Abandoned | SessionState::Expired)
    }
}

/// A review case's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Waiting for an analyst.
    Open,
    /// An analyst holds it; only they can resolve it.
    Claimed,
    /// Closed with a final outcome (by an analyst, a blocklist re-check or the rules).
    Resolved,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Claimed => "claimed",
            ReviewStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<ReviewStatus> {
        Some(match s {
            "open" => ReviewStatus::Open,
            "claimed" => ReviewStatus::Claimed,
            "resolved" => ReviewStatus::Resolved,
            _ => return None,
        })
    }
}

/// The identity values blocklists and velocity work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlocklistKind {
    /// An identity document number (optionally per issuing country).
    Document,
    Phone,
    Email,
    /// The provider's face id (or image hash).
    Face,
}

impl BlocklistKind {
    pub const ALL: [BlocklistKind; 4] =
        [BlocklistKind::Document, BlocklistKind::Phone, BlocklistKind::Email, BlocklistKind::Face];

    pub fn as_str(self) -> &'static str {
        match self {
            BlocklistKind::Document => "document",
            BlocklistKind::Phone => "phone",
            BlocklistKind::Email => "email",
            BlocklistKind::Face => "face",
        }
    }

    pub fn parse(s: &str) -> Option<BlocklistKind> {
        BlocklistKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What an identity (an API key or a user) may do in its tenant. One role per identity; README
/// "Access" has the role × endpoint matrix (`http::authz` is where it is enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Viewer + claims and resolves reviews, sets subject attributes, adds blocklist entries.
    Analyst,
    /// Analyst + rulesets, blocklist removal, backtests.
    PolicyAdmin,
    /// Everything in its tenant, including keys, users and endpoints.
    Admin,
    /// Reads everything, including audit data; changes nothing.
    Auditor,
    /// Back ends: webhook-independent calls (verifications, decisions, subjects); no review
    /// actions.
    Service,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Viewer, Role::Analyst, Role::PolicyAdmin, Role::Admin, Role::Auditor, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::PolicyAdmin => "policy_admin",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::parse(s)
            .ok_or_else(|| format!("unknown role `{s}`: one of viewer, analyst, policy_admin, admin, auditor, service"))
    }
}

/// The prefix of a `decided_by` that names an analyst (`review:<analyst>`): the decision of a
/// review resolution, which nothing the provider reports afterwards overrides by echoing it.
pub const ANALYST: &str = "review:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name() {
        for s in SessionState::ALL {
            assert_eq!(SessionState::parse(s.as_str()), Some(s));
        }
        for k in BlocklistKind::ALL {
            assert_eq!(BlocklistKind::parse(k.as_str()), Some(k));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for s in [ReviewStatus::Open, ReviewStatus::Claimed, ReviewStatus::Resolved] {
            assert_eq!(ReviewStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BlocklistKind::parse("passport"), None);
    }
}
