// Generated from docs/events.schema.json by types/gen-events.mjs: do not edit.

/**
 * An entry as the read API and the streams show it: the event with its log offset (and, in
 * the read API, a webhook's original body).
 */
export type EventView = LogEvent & {
  /**
   * The original webhook body, byte-exact as UTF-8 (provider events, read API only).
   */
  body?: string | null;
  /**
   * The entry's position in the log.
   */
  offset: number;
};
/**
 * Any entry of the log.
 */
export type LogEvent =
  | (
      | (DecisionMade & {
          kind: "decision.made";
        })
      | (ReviewChanged & {
          kind: "review.opened";
        })
      | (ReviewChanged & {
          kind: "review.claimed";
        })
      | (ReviewChanged & {
          kind: "review.resolved";
        })
      | (ReviewPushedBack & {
          kind: "review.pushed_back";
        })
      | (ReviewChanged1 & {
          kind: "review.released";
        })
      | (ReviewChanged2 & {
          kind: "review.reassigned";
        })
      | (ReviewChanged3 & {
          kind: "review.escalated";
        })
      | (ReviewChanged4 & {
          kind: "review.resubmission_requested";
        })
      | (RulesetChanged & {
          kind: "ruleset.uploaded";
        })
      | (RulesetChanged & {
          kind: "ruleset.activated";
        })
      | (RulesetChanged1 & {
          kind: "ruleset.activation_requested";
        })
      | (BlocklistChanged & {
          kind: "blocklist.added";
        })
      | (BlocklistChanged & {
          kind: "blocklist.removed";
        })
      | (SubjectUpdated & {
          kind: "subject.updated";
        })
      | (AccessChanged & {
          kind: "access.key_created";
        })
      | (AccessChanged & {
          kind: "access.key_revoked";
        })
      | (AccessChanged & {
          kind: "access.user_created";
        })
      | (AccessChanged & {
          kind: "access.user_role_changed";
        })
      | (AccessChanged & {
          kind: "access.user_disabled";
        })
      | (AccessChanged & {
          kind: "access.user_enabled";
        })
      | (AccessChanged & {
          kind: "access.password_changed";
        })
      | (AccessChanged & {
          kind: "access.user_locked";
        })
      | (AccessChanged & {
          kind: "access.logged_in";
        })
      | (AccessChanged & {
          kind: "access.logged_out";
        })
      | (SessionCreated & {
          kind: "session.created";
        })
      | (NotificationFailed & {
          kind: "notification.failed";
        })
      | (EndpointChanged & {
          kind: "endpoint.disabled";
        })
      | (EndpointChanged & {
          kind: "endpoint.enabled";
        })
      | (EndpointReplay & {
          kind: "endpoint.replay_requested";
        })
      | (DocumentViewed & {
          kind: "document.viewed";
        })
    )
  | IdentityEvent;
/**
 * A decision outcome, ordered by strictness.
 */
export type Outcome = "approve" | "review" | "decline";
/**
 * How pushing an analyst's resolution to the provider ended.
 */
export type PushResult = "pushed" | "failed";
/**
 * The identity values blocklists and velocity work on.
 */
export type BlocklistKind = "document" | "phone" | "email" | "face";
/**
 * Which provider a source speaks.
 */
export type Provider = "didit" | "standard";
/**
 * Normalised verification status, shared by every provider.
 */
export type Status =
  | "not_started"
  | "in_progress"
  | "awaiting_user"
  | "in_review"
  | "approved"
  | "declined"
  | "resubmitted"
  | "abandoned"
  | "expired";

/**
 * `decision.made`: a decision by the rules, an analyst or a blocklist re-check. Compact: the
 * full inputs are in the stored decision (`GET /v1/decisions/{decision_id}`).
 */
export interface DecisionMade {
  /**
   * RFC 3339 UTC.
   */
  decided_at: string;
  /**
   * `rules`, `review:<analyst>` or `blocklist:<actor>`.
   */
  decided_by: string;
  decision_id: string;
  /**
   * The verification event decided (null for an analyst's or a re-check's decision).
   */
  event_id?: string | null;
  event_offset?: number | null;
  /**
   * Ids of the rules that fired.
   */
  fired: string[];
  /**
   * The entry's id (UUIDv7).
   */
  id: string;
  outcome: Outcome;
  /**
   * Reason codes behind the outcome.
   */
  reasons: string[];
  /**
   * The review case this decision opened, kept, or resolved.
   */
  review_id?: string | null;
  /**
   * Null for an analyst's or a re-check's decision.
   */
  ruleset_version?: string | null;
  score: number;
  session_id: string;
  subject?: string | null;
  tenant: string;
}
/**
 * `review.opened`, `review.claimed`, `review.resolved`: a review case changed.
 */
export interface ReviewChanged {
  /**
   * Who made the change (`rules` for a superseded case); null when the rules opened it.
   */
  actor?: string | null;
  /**
   * RFC 3339 UTC.
   */
  at: string;
  /**
   * The decision that asked for the review.
   */
  decision_id: string;
  id: string;
  note?: string | null;
  outcome?: null | ("approve" | "review" | "decline");
  reasons: string[];
  review_id: string;
  session_id: string;
  /**
   * The case's status after the change.
   */
  status: "open" | "claimed" | "resolved";
  subject?: string | null;
  tenant: string;
}
/**
 * `review.pushed_back`: an analyst's resolution was pushed to the provider (Didit's
 * update-status), or given up on. One per analyst decision.
 */
export interface ReviewPushedBack {
  /**
   * RFC 3339 UTC.
   */
  at: string;
  /**
   * Calls made (each with the client's own retries).
   */
  attempts: number;
  /**
   * The analyst's decision that was pushed.
   */
  decision_id: string;
  /**
   * Why it failed (`provider_rejected`, `provider_unavailable`, ...).
   */
  error?: string | null;
  id: string;
  /**
   * The `[[providers]] id`.
   */
  provider: string;
  /**
   * The status set at the provider (`Approved`, `Declined`).
   */
  provider_status: string;
  result: PushResult;
  review_id: string;
  session_id: string;
  tenant: string;
}
/**
 * `review.opened`, `review.claimed`, `review.resolved`: a review case changed.
 */
export interface ReviewChanged1 {
  /**
   * Who made the change (`rules` for a superseded case); null when the rules opened it.
   */
  actor?: string | null;
  /**
   * RFC 3339 UTC.
   */
  at: string;
  /**
   * The decision that asked for the review.
   */
  decision_id: string;
  id: string;
  note?: string | null;
  outcome?: null | ("approve" | "review" | "decline");
  reasons: string[];
  review_id: string;
  session_id: string;
  /**
   * The case's status after the change.
   */
  status: "open" | "claimed" | "resolved";
  subject?: string | null;
  tenant: string;
}
/**
 * `review.opened`, `review.claimed`, `review.resolved`: a review case changed.
 */
export interface ReviewChanged2 {
  /**
   * Who made the change (`rules` for a superseded case); null when the rules opened it.
   */
  actor?: string | null;
  /**
   * RFC 3339 UTC.
   */
  at: string;
  /**
   * The decision that asked for the review.
   */
  decision_id: string;
  id: string;
  note?: string | null;
  outcome?: null | ("approve" | "review" | "decline");
  reasons: string[];
  review_id: string;
  session_id: string;
  /**
   * The case's status after the change.
   */
  status: "open" | "claimed" | "resolved";
  subject?: string | null;
  tenant: string;
}
/**
 * `review.opened`, `review.claimed`, `review.resolved`: a review case changed.
 */
export interface ReviewChanged3 {
  /**
   * Who made the change (`rules` for a superseded case); null when the rules opened it.
   */
  actor?: string | null;
  /**
   * RFC 3339 UTC.
   */
  at: string;
  /**
   * The decision that asked for the review.
   */
  decision_id: string;
  id: string;
  note?: string | null;
  outcome?: null | ("approve" | "review" | "decline");
  reasons: string[];
  review_id: string;
  session_id: string;
  /**
   * The case's status after the change.
   */
  status: "open" | "claimed" | "resolved";
  subject?: string | null;
  tenant: string;
}
/**
 * `review.opened`, `review.claimed`, `review.resolved`: a review case changed.
 */
export interface ReviewChanged4 {
  /**
   * Who made the change (`rules` for a superseded case); null when the rules opened it.
   */
  actor?: string | null;
  /**
   * RFC 3339 UTC.
   */
  at: string;
  /**
   * The decision that asked for the review.
   */
  decision_id: string;
  id: string;
  note?: string | null;
  outcome?: null | ("approve" | "review" | "decline");
  reasons: string[];
  review_id: string;
  session_id: string;
  /**
   * The case's status after the change.
   */
  status: "open" | "claimed" | "resolved";
  subject?: string | null;
  tenant: string;
}
/**
 * `ruleset.uploaded`, `ruleset.activated`.
 */
export interface RulesetChanged {
  actor: string;
  at: string;
  id: string;
  label: string;
  /**
   * `ruleset.activated` under four-eyes activation: who asked for it (`actor` approved it).
   */
  requested_by?: string | null;
  tenant: string;
  /**
   * Hex SHA-256 of the ruleset's canonical content.
   */
  version: string;
}
/**
 * `ruleset.uploaded`, `ruleset.activated`.
 */
export interface RulesetChanged1 {
  actor: string;
  at: string;
  id: string;
  label: string;
  /**
   * `ruleset.activated` under four-eyes activation: who asked for it (`actor` approved it).
   */
  requested_by?: string | null;
  tenant: string;
  /**
   * Hex SHA-256 of the ruleset's canonical content.
   */
  version: string;
}
/**
 * `blocklist.added`, `blocklist.removed`. The value itself is never in the log: `entry_id` is
 * its keyed hash.
 */
export interface BlocklistChanged {
  actor: string;
  at: string;
  entry_id: string;
  id: string;
  list: BlocklistKind;
  reason?: string | null;
  tenant: string;
}
/**
 * `subject.updated`: which attributes were set and by whom; the values (often personal data)
 * stay in the store.
 */
export interface SubjectUpdated {
  actor: string;
  at: string;
  /**
   * The attribute names that were set.
   */
  attributes: string[];
  id: string;
  subject: string;
  tenant: string;
}
/**
 * `access.*`: an API key or a user account changed, or a person logged in or out. Names and
 * roles only: never a key, a password or a session id.
 */
export interface AccessChanged {
  /**
   * Who did it (for a login: the user).
   */
  actor: string;
  at: string;
  id: string;
  role?: null | ("viewer" | "analyst" | "policy_admin" | "admin" | "auditor" | "service");
  /**
   * The key's or user's id.
   */
  target_id: string;
  /**
   * The key's name or the username.
   */
  target_name: string;
  /**
   * The key's or user's tenant (`*` for operators).
   */
  tenant: string;
}
/**
 * `session.created`: idstream created a hosted verification session with a provider
 * (`POST /v1/verifications`). Never the session's URL or token (a bearer capability).
 */
export interface SessionCreated {
  actor: string;
  /**
   * RFC 3339 UTC.
   */
  at: string;
  id: string;
  /**
   * The `[[providers]] id` it was created with.
   */
  provider: string;
  /**
   * The provider's status at creation (Didit: `Not Started`).
   */
  provider_status: string;
  /**
   * The provider's session id (the partition key of the session's events).
   */
  session_id: string;
  /**
   * The webhook source its results arrive on.
   */
  source: string;
  subject: string;
  tenant: string;
  workflow_id: string;
}
/**
 * `notification.failed`: every attempt to deliver an event to an endpoint failed. The event
 * is in the endpoint's dead-letter list (`GET /v1/endpoints/{id}/deliveries?failed=true`) and a
 * replay delivers it again. Never the receiver's answer (that is in the attempts list).
 */
export interface NotificationFailed {
  at: string;
  attempts: number;
  /**
   * The endpoint's id.
   */
  endpoint: string;
  /**
   * The event that was not delivered: its id, offset and kind.
   */
  event_id: string;
  event_kind: string;
  event_offset: number;
  id: string;
  /**
   * What went wrong in short: `HTTP 500`, `timed out`, `could not connect`, ...
   */
  last_error: string;
  /**
   * The last attempt's HTTP status (none: no answer).
   */
  last_status?: number | null;
  /**
   * The session of the event, if it has one (this event joins its timeline).
   */
  session_id?: string | null;
  tenant: string;
  /**
   * The `webhook-id` every attempt carried.
   */
  webhook_id: string;
}
/**
 * `endpoint.disabled` / `endpoint.enabled`: deliveries to an endpoint stopped or resumed.
 */
export interface EndpointChanged {
  /**
   * Who: the caller, or `idstream` when the delivery worker did it.
   */
  actor: string;
  at: string;
  /**
   * The endpoint's id.
   */
  endpoint: string;
  id: string;
  /**
   * Why: `the receiver answered 410 Gone`, `failing continuously for 432000 s`,
   * `disabled by user:maria`, ...
   */
  reason: string;
  tenant: string;
}
/**
 * `endpoint.replay_requested`: a caller asked for an endpoint's events to be delivered again.
 * The endpoint's delivery worker carries it out when it reaches this entry in the log, so the
 * request survives restarts and reaches whichever node delivers the endpoint.
 */
export interface EndpointReplay {
  actor: string;
  at: string;
  /**
   * The endpoint's id.
   */
  endpoint: string;
  /**
   * Only events whose delivery was given up (the dead-letter list).
   */
  failed_only: boolean;
  /**
   * The first offset delivered again.
   */
  from_offset: number;
  id: string;
  tenant: string;
  /**
   * The last one (none: up to this request).
   */
  to_offset?: number | null;
}
/**
 * `document.viewed`: someone fetched a stored document's bytes (`GET /v1/documents/{id}`).
 * Appended before the first byte is sent, so no view goes unrecorded.
 */
export interface DocumentViewed {
  /**
   * Who viewed it (the caller's name: a user, an API key).
   */
  actor: string;
  /**
   * RFC 3339 UTC.
   */
  at: string;
  document_id: string;
  id: string;
  /**
   * The document check (or session) the document belongs to.
   */
  session_id: string;
  /**
   * `front` or `back`.
   */
  side: string;
  subject: string;
  tenant: string;
}
/**
 * A provider's result, normalised.
 */
export interface IdentityEvent {
  checks: Checks;
  /**
   * The key duplicates are recognised by (unique within a source).
   */
  dedupe_key: string;
  /**
   * idstream's own id for the event (UUIDv7, time-ordered).
   */
  id: string;
  /**
   * Normalised kind, e.g. `verification.status_updated`.
   */
  kind: string;
  /**
   * When the provider says it happened (RFC 3339, UTC).
   */
  occurred_at: string;
  /**
   * Position in the event log; 0 until the log assigns it.
   */
  offset?: number;
  provider: Provider;
  /**
   * The provider's event id, when it sends one.
   */
  provider_event_id?: string | null;
  /**
   * The provider's own event type, e.g. Didit `status.updated`.
   */
  provider_kind: string;
  /**
   * The provider's status exactly as sent.
   */
  provider_status?: string | null;
  /**
   * When idstream received it (RFC 3339, UTC).
   */
  received_at: string;
  /**
   * The provider's verification session id; the log's partition key.
   */
  session_id?: string | null;
  /**
   * The signature scheme that authenticated the webhook.
   */
  signature: "didit_v2" | "didit_raw" | "didit_simple" | "standard_v1" | "didit_api";
  source: string;
  status?: null | Status;
  /**
   * The company's own user id (Didit `vendor_data`).
   */
  subject?: string | null;
  tenant: string;
  /**
   * True when only part of the body was authenticated (Didit Simple signature): the
   * decision, metadata and subject of this event must never be trusted as an approval.
   */
  unauthenticated_decision: boolean;
}
/**
 * Normalised check results. Each list holds one entry per check node (Didit v3 arrays); an
 * older v2 payload's single object becomes a one-entry list.
 */
export interface Checks {
  aml?: AmlCheck[];
  documents?: DocumentCheck[];
  email?: EmailCheck[];
  face_matches?: FaceMatchCheck[];
  ip?: IpCheck[];
  liveness?: LivenessCheck[];
  phone?: PhoneCheck[];
}
/**
 * AML / sanctions / PEP screening.
 */
export interface AmlCheck {
  entity_type?: string | null;
  node_id?: string | null;
  /**
   * The provider's status for this check, as sent.
   */
  status?: string | null;
  total_hits?: number | null;
}
/**
 * Identity document check.
 */
export interface DocumentCheck {
  date_of_birth?: string | null;
  document_number?: string | null;
  document_type?: string | null;
  expiration_date?: string | null;
  first_name?: string | null;
  issuing_state?: string | null;
  last_name?: string | null;
  nationality?: string | null;
  node_id?: string | null;
  personal_number?: string | null;
  /**
   * The provider's status for this check, as sent.
   */
  status?: string | null;
  warnings?: unknown[] | null;
}
/**
 * Email verification.
 */
export interface EmailCheck {
  email?: string | null;
  is_breached?: boolean | null;
  is_disposable?: boolean | null;
  is_undeliverable?: boolean | null;
  node_id?: string | null;
  /**
   * The provider's status for this check, as sent.
   */
  status?: string | null;
}
/**
 * Selfie-to-document face match; score 0–100.
 */
export interface FaceMatchCheck {
  node_id?: string | null;
  score?: number | null;
  /**
   * The provider's status for this check, as sent.
   */
  status?: string | null;
}
/**
 * IP address analysis.
 */
export interface IpCheck {
  country?: string | null;
  hosting?: boolean | null;
  ip_address?: string | null;
  node_id?: string | null;
  proxy?: boolean | null;
  risk_score?: number | null;
  /**
   * The provider's status for this check, as sent.
   */
  status?: string | null;
  tor?: boolean | null;
  vpn?: boolean | null;
}
/**
 * Liveness check; score 0–100. `face_id`: the provider's id (or image hash) of the face,
 * when it sends one (`face_id`), which face blocklists match on.
 */
export interface LivenessCheck {
  face_id?: string | null;
  method?: string | null;
  node_id?: string | null;
  score?: number | null;
  /**
   * The provider's status for this check, as sent.
   */
  status?: string | null;
}
/**
 * Phone number verification.
 */
export interface PhoneCheck {
  carrier?: string | null;
  is_disposable?: boolean | null;
  is_virtual?: boolean | null;
  node_id?: string | null;
  phone_number?: string | null;
  /**
   * The provider's status for this check, as sent.
   */
  status?: string | null;
}
