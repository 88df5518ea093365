//! The normalised identity event and the provider normalisers that build it.
//!
//! A provider webhook that passed its signature check becomes exactly one [`IdentityEvent`]:
//! the provider's vocabulary mapped onto ours (kind, status, check results), with the provider's
//! raw values kept beside the normalised ones. Normalisation is lenient about what it does not
//! know (unknown fields and unknown check entries are kept in the original body) and strict
//! about what it needs (a missing required field is an error naming the field).
//!
//! Pure: values in, values out. No clock (times are passed in), no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::signature::Scheme;

/// Normalised verification status, shared by every provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    NotStarted,
    InProgress,
    AwaitingUser,
    InReview,
    Approved,
    Declined,
    Resubmitted,
    Abandoned,
    Expired,
}

impl Status {
    /// Maps a Didit session status (case-sensitive, as Didit sends it).
    pub fn from_didit(s: &str) -> Option<Status> {
        Some(match s {
            "Not Started" => Status::NotStarted,
            "In Progress" => Status::InProgress,
            "Awaiting User" => Status::AwaitingUser,
            "In Review" => Status::InReview,
            "Approved" => Status::Approved,
            "Declined" => Status::Declined,
            "Resubmitted" => Status::Resubmitted,
            "Abandoned" => Status::Abandoned,
            "Expired" | "Kyc Expired" => Status::Expired,
            _ => return None,
        })
    }

    /// Maps the snake_case vocabulary (our own, used by Standard Webhooks senders).
    pub fn from_snake(s: &str) -> Option<Status> {
        serde_json::from_value(Value::String(s.to_ascii_lowercase().replace([' ', '-'], "_"))).ok()
    }
}

/// Which provider a source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Didit,
    Standard,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Didit => "didit",
            Provider::Standard => "standard",
        }
    }
}

/// One accepted webhook, normalised. The log stores it as JSON beside the original body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdentityEvent {
    /// idstream's own id for the event (UUIDv7, time-ordered).
    pub id: String,
    /// Position in the event log; 0 until the log assigns it.
    #[serde(default)]
    pub offset: u64,
    pub tenant: String,
    pub source: String,
    pub provider: Provider,
    /// Normalised kind, e.g. `verification.status_updated`.
    pub kind: String,
    /// The provider's own event type, e.g. Didit `status.updated`.
    pub provider_kind: String,
    /// The provider's event id, when it sends one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_event_id: Option<String>,
    /// The provider's verification session id; the log's partition key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The company's own user id (Didit `vendor_data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The provider's status exactly as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<String>,
    /// When the provider says it happened (RFC 3339, UTC).
    pub occurred_at: String,
    /// When idstream received it (RFC 3339, UTC).
    pub received_at: String,
    /// The signature scheme that authenticated the webhook.
    pub signature: Scheme,
    /// True when only part of the body was authenticated (Didit Simple signature): the
    /// decision, metadata and subject of this event must never be trusted as an approval.
    pub unauthenticated_decision: bool,
    /// The key duplicates are recognised by (unique within a source).
    pub dedupe_key: String,
    pub checks: Checks,
}

impl IdentityEvent {
    /// The log's partition key: the session, else the subject, else the event itself.
    pub fn partition_key(&self) -> &str {
        self.session_id.as_deref().or(self.subject.as_deref()).unwrap_or(&self.dedupe_key)
    }
}

/// Normalised check results. Each list holds one entry per check node (Didit v3 arrays); an
/// older v2 payload's single object becomes a one-entry list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<DocumentCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub liveness: Vec<LivenessCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub face_matches: Vec<FaceMatchCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aml: Vec<AmlCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<IpCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone: Vec<PhoneCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<EmailCheck>,
}

impl Checks {
    pub fn is_empty(&self) -> bool {
        self == &Checks::default()
    }
}

macro_rules! check_struct {
    ($(#[$m:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub node_id: Option<String>,
            /// The provider's status for this check, as sent.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<String>,
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }
    };
}

check_struct!(
    /// Identity document check.
    DocumentCheck {
        document_type: String,
        document_number: String,
        personal_number: String,
        first_name: String,
        last_name: String,
        date_of_birth: String,
        nationality: String,
        issuing_state: String,
        expiration_date: String,
        warnings: Vec<Value>,
    }
);
check_struct!(
    /// Liveness check; score 0–100. `face_id`: the provider's id (or image hash) of the face,
    /// when it sends one (`face_id`), which face blocklists match on.
    LivenessCheck { score: f64, method: String, face_id: String }
);
check_struct!(
    /// Selfie-to-document face match; score 0–100.
    FaceMatchCheck { score: f64 }
);
check_struct!(
    /// AML / sanctions / PEP screening.
    AmlCheck { total_hits: u64, entity_type: String }
);
check_struct!(
    /// IP address analysis.
    IpCheck {
        ip_address: String,
        country: String,
        vpn: bool,
        proxy: bool,
        tor: bool,
        hosting: bool,
        risk_score: f64,
    }
);
check_struct!(
    /// Phone number verification.
    PhoneCheck {
        phone_number: String,
        carrier: String,
        is_disposable: bool,
        is_virtual: bool,
    }
);
check_struct!(
    /// Email verification.
    EmailCheck {
        email: String,
        is_breached: bool,
        is_disposable: bool,
        is_undeliverable: bool,
    }
);

/// A webhook that authenticated but cannot be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` {problem}")]
    InvalidField { field: &'static str, problem: &'static str },
}

/// What every normaliser needs besides the body.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub id: String,
    pub tenant: &'a str,
    pub source: &'a str,
    pub received_at: i64,
    pub scheme: Scheme,
}

/// Formats Unix seconds as RFC 3339 UTC (out-of-range values clamp to the epoch).
pub fn rfc3339(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).expect("a valid timestamp always formats")
}

/// RFC 3339 UTC with microseconds, from Unix microseconds.
pub fn rfc3339_us(unix_us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).expect("a valid timestamp always formats")
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Required string field: absent/null is `MissingField`, another type is `InvalidField`.
fn req_str<'v>(v: &'v Value, key: &'static str) -> Result<&'v str, NormaliseError> {
    match v.get(key) {
        None | Some(Value::Null) => Err(NormaliseError::MissingField(key)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(NormaliseError::InvalidField { field: key, problem: "must not be empty" }),
        Some(_) => Err(NormaliseError::InvalidField { field: key, problem: "must be a string" }),
    }
}

fn opt_f64(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn opt_bool(v: &Value, key: &str) -> Option<bool> {
    match v.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" => Some(true),
            "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Entries of a v3 array (`plural`) or a v2 singular object (`singular`).
fn entries<'v>(decision: &'v Value, plural: &str, singular: &str) -> Vec<&'v Value> {
    if let Some(Value::Array(items)) = decision.get(plural) {
        return items.iter().filter(|v| v.is_object()).collect();
    }
    match decision.get(singular) {
        Some(v @ Value::Object(_)) => vec![v],
        Some(Value::Array(items)) => items.iter().filter(|v| v.is_object()).collect(),
        _ => Vec::new(),
    }
}

/// Normalises the `decision` object of a Didit webhook (v3 arrays or v2 singular objects).
pub fn didit_checks(decision: &Value) -> Checks {
    let base = |e: &Value| (opt_str(e, "node_id"), opt_str(e, "status"));
    Checks {
        documents: entries(decision, "id_verifications", "id_verification")
            .into_iter()
            .map(|e| {
                let (node_id, status) = base(e);
                DocumentCheck {
                    node_id,
                    status,
                    document_type: opt_str(e, "document_type"),
                    document_number: opt_str(e, "document_number"),
                    personal_number: opt_str(e, "personal_number"),
                    first_name: opt_str(e, "first_name"),
                    last_name: opt_str(e, "last_name"),
                    date_of_birth: opt_str(e, "date_of_birth"),
                    nationality: opt_str(e, "nationality"),
                    issuing_state: opt_str(e, "issuing_state").or_else(|| opt_str(e, "issuing_state_name")),
                    expiration_date: opt_str(e, "expiration_date"),
                    warnings: e.get("warnings").and_then(Value::as_array).cloned(),
                }
            })
            .collect(),
        liveness: entries(decision, "liveness_checks", "liveness")
            .into_iter()
            .map(|e| {
                let (node_id, status) = base(e);
                LivenessCheck {
                    node_id,
                    status,
                    score: opt_f64(e, "score"),
                    method: opt_str(e, "method"),
                    face_id: opt_str(e, "face_id"),
                }
            })
            .collect(),
        face_matches: entries(decision, "face_matches", "face_match")
            .into_iter()
            .map(|e| {
                let (node_id, status) = base(e);
                FaceMatchCheck { node_id, status, score: opt_f64(e, "score") }
            })
            .collect(),
        aml: entries(decision, "aml_screenings", "aml")
            .into_iter()
            .map(|e| {
                let (node_id, status) = base(e);
                let total_hits = e
                    .get("total_hits")
                    .and_then(Value::as_u64)
                    .or_else(|| e.get("hits").and_then(Value::as_array).map(|h| h.len() as u64));
                AmlCheck { node_id, status, total_hits, entity_type: opt_str(e, "entity_type") }
            })
            .collect(),
        ip: entries(decision, "ip_analyses", "ip_analysis")
            .into_iter()
            .map(|e| {
                let (node_id, status) = base(e);
                IpCheck {
                    node_id,
                    status,
                    ip_address: opt_str(e, "ip_address"),
                    country: opt_str(e, "country").or_else(|| opt_str(e, "ip_country_code")),
                    vpn: opt_bool(e, "vpn").or_else(|| opt_bool(e, "is_vpn_or_tor")),
                    proxy: opt_bool(e, "proxy"),
                    tor: opt_bool(e, "tor"),
                    hosting: opt_bool(e, "hosting").or_else(|| opt_bool(e, "is_data_center")),
                    risk_score: opt_f64(e, "risk_score"),
                }
            })
            .collect(),
        phone: entries(decision, "phone_verifications", "phone")
            .into_iter()
            .map(|e| {
                let (node_id, status) = base(e);
                PhoneCheck {
                    node_id,
                    status,
                    phone_number: opt_str(e, "phone_number").or_else(|| opt_str(e, "full_number")),
                    carrier: match e.get("carrier") {
                        Some(Value::Object(c)) => c.get("name").and_then(Value::as_str).map(str::to_owned),
                        _ => opt_str(e, "carrier"),
                    },
                    is_disposable: opt_bool(e, "is_disposable"),
                    is_virtual: opt_bool(e, "is_virtual"),
                }
            })
            .collect(),
        email: entries(decision, "email_verifications", "email")
            .into_iter()
            .map(|e| {
                let (node_id, status) = base(e);
                EmailCheck {
                    node_id,
                    status,
                    email: opt_str(e, "email"),
                    is_breached: opt_bool(e, "is_breached"),
                    is_disposable: opt_bool(e, "is_disposable"),
                    is_undeliverable: opt_bool(e, "is_undeliverable"),
                }
            })
            .collect(),
    }
}

/// Maps a Didit `webhook_type` onto our kind vocabulary.
pub fn didit_kind(webhook_type: &str) -> String {
    match webhook_type {
        "status.updated" => "verification.status_updated".into(),
        "data.updated" => "verification.data_updated".into(),
        "user.status.updated" => "user.status_updated".into(),
        "user.data.updated" => "user.data_updated".into(),
        "business.status.updated" => "business.status_updated".into(),
        "business.data.updated" => "business.data_updated".into(),
        "activity.created" => "activity.created".into(),
        "transaction.created" => "transaction.created".into(),
        "transaction.status.updated" => "transaction.status_updated".into(),
        // A type Didit adds later is kept, not refused: it is namespaced so it cannot collide.
        other => format!("didit.{other}"),
    }
}

/// Didit statuses that are a session's result (a decision, or the end of the session without
/// one). Their events are keyed by [`didit_result_key`].
pub const DIDIT_RESULT_STATUSES: &[&str] =
    &["Approved", "Declined", "In Review", "Resubmitted", "Abandoned", "Expired", "Kyc Expired"];

/// The dedupe key of a Didit session *result*, the same whether the result arrived by webhook
/// (`status.updated`) or was obtained by polling `GET /v3/session/{id}/decision/`, so the two
/// paths, in either order, store one event and give one decision.
///
/// Pinned as `result:{session_id}|{status}|{fingerprint}`, where the fingerprint lists every
/// check entry of the decision as `array/node_id=status`, sorted, then `reviews=N`. Didit's
/// `event_id` cannot be used: it differs per delivery attempt and a polled decision has none.
/// The fingerprint separates two results with the same status (declined, resubmitted, declined
/// again) as long as a check or a review changed in between. `None` for a status that is not a
/// result (`Not Started`, `In Progress`, ...): those keep their per-delivery key.
pub fn didit_result_key(session_id: &str, status: &str, decision: Option<&Value>) -> Option<String> {
    if !DIDIT_RESULT_STATUSES.contains(&status) {
        return None;
    }
    let mut parts = Vec::new();
    let mut reviews = 0;
    if let Some(Value::Object(d)) = decision {
        for (name, v) in d {
            match (name.as_str(), v) {
                ("reviews", Value::Array(a)) => reviews = a.len(),
                (_, Value::Array(items)) => {
                    for item in items {
                        let node = item.get("node_id").and_then(Value::as_str).unwrap_or("");
                        let st = item.get("status").and_then(Value::as_str).unwrap_or("");
                        parts.push(format!("{name}/{node}={st}"));
                    }
                }
                _ => {}
            }
        }
    }
    parts.sort();
    Some(format!("result:{session_id}|{status}|{};reviews={reviews}", parts.join(",")))
}

/// Normalises the answer of Didit's `GET /v3/session/{id}/decision/` into the same event a
/// `status.updated` webhook with that result would give (kind `verification.status_updated`,
/// the same [`didit_result_key`]), marked as polled: `signature` is [`Scheme::DiditApi`] and
/// `provider_kind` is `session.decision`. The feature arrays sit at the top level of the answer
/// (a webhook carries them under `decision`); an answer with a `decision` object is read
/// from there. `None` when the status is not a result yet.
pub fn normalise_didit_poll(env: Envelope<'_>, body: &Value) -> Result<Option<IdentityEvent>, NormaliseError> {
    let session_id = req_str(body, "session_id")?.to_owned();
    let provider_status = req_str(body, "status")?.to_owned();
    let decision = body.get("decision").filter(|d| d.is_object()).unwrap_or(body);
    let Some(dedupe_key) = didit_result_key(&session_id, &provider_status, Some(decision)) else {
        return Ok(None);
    };
    let subject = opt_str(body, "vendor_data").filter(|s| !s.is_empty());
    Ok(Some(IdentityEvent {
        id: env.id,
        offset: 0,
        tenant: env.tenant.to_owned(),
        source: env.source.to_owned(),
        provider: Provider::Didit,
        kind: didit_kind("status.updated"),
        provider_kind: "session.decision".into(),
        provider_event_id: None,
        session_id: Some(session_id),
        subject,
        status: Status::from_didit(&provider_status),
        provider_status: Some(provider_status),
        occurred_at: rfc3339(env.received_at),
        received_at: rfc3339(env.received_at),
        signature: Scheme::DiditApi,
        unauthenticated_decision: false,
        dedupe_key,
        checks: didit_checks(decision),
    }))
}

/// Normalises a verified Didit webhook body.
pub fn normalise_didit(env: Envelope<'_>, body: &Value, timestamp: i64) -> Result<IdentityEvent, NormaliseError> {
    let webhook_type = req_str(body, "webhook_type")?;
    let session_scoped = matches!(webhook_type, "status.updated" | "data.updated");
    let session_id = if session_scoped {
        Some(req_str(body, "session_id")?.to_owned())
    } else {
        opt_str(body, "session_id").or_else(|| opt_str(body, "business_session_id"))
    };
    let provider_status = if webhook_type == "status.updated" {
        Some(req_str(body, "status")?.to_owned())
    } else {
        opt_str(body, "status")
    };
    let status = provider_status.as_deref().and_then(Status::from_didit);
    let provider_event_id = opt_str(body, "event_id");
    let result_key = match (webhook_type, session_id.as_deref(), provider_status.as_deref()) {
        ("status.updated", Some(session), Some(st)) => didit_result_key(session, st, body.get("decision")),
        _ => None,
    };
    let dedupe_key = match (result_key, &provider_event_id) {
        (Some(key), _) => key,
        (None, Some(id)) => format!("event:{id}"),
        (None, None) => format!(
            "composite:{}|{}|{}|{}",
            session_id.as_deref().unwrap_or(""),
            webhook_type,
            timestamp,
            provider_status.as_deref().unwrap_or("")
        ),
    };
    let checks = body.get("decision").map(didit_checks).unwrap_or_default();
    let subject =
        opt_str(body, "vendor_data").or_else(|| opt_str(body, "vendor_business_id")).filter(|s| !s.is_empty());
    Ok(IdentityEvent {
        id: env.id,
        offset: 0,
        tenant: env.tenant.to_owned(),
        source: env.source.to_owned(),
        provider: Provider::Didit,
        kind: didit_kind(webhook_type),
        provider_kind: webhook_type.to_owned(),
        provider_event_id,
        session_id,
        subject,
        status,
        provider_status,
        occurred_at: rfc3339(timestamp),
        received_at: rfc3339(env.received_at),
        signature: env.scheme,
        unauthenticated_decision: !env.scheme.covers_body(),
        dedupe_key,
        checks,
    })
}

/// Namespaces of the kinds idstream writes itself (`decision.made`, `review.opened`, ...). No
/// provider kind may use them, so a reader can tell idstream's own entries from a provider's
/// by the kind alone: Didit's types map onto other namespaces (`verification.*`, `user.*`, ...,
/// or `didit.*` for types we do not know yet), and a Standard Webhooks sender's `type` in one of
/// these namespaces is kept under `standard.` (`decision.made` → `standard.decision.made`).
pub const OWN_NAMESPACES: &[&str] = &[
    "decision",
    "review",
    "ruleset",
    "blocklist",
    "subject",
    "session",
    "access",
    "endpoint",
    "notification",
    "document",
    "idstream",
];

/// Whether `kind` is in one of idstream's own namespaces ([`OWN_NAMESPACES`]).
pub fn is_own_kind(kind: &str) -> bool {
    let ns = kind.split('.').next().unwrap_or(kind);
    OWN_NAMESPACES.contains(&ns)
}

/// The kind a Standard Webhooks `type` is stored under: itself, unless it would collide with one
/// of idstream's own kinds.
pub fn standard_kind(webhook_type: &str) -> String {
    if is_own_kind(webhook_type) {
        format!("standard.{webhook_type}")
    } else {
        webhook_type.to_owned()
    }
}

/// Normalises a verified Standard Webhooks body: `{"type", "timestamp"?, "data": {...}}`, the
/// structure the specification recommends. `data` may carry `session_id` (or `id`), `subject`
/// (or `vendor_data` / `user_id`), `status` (our snake_case vocabulary or Didit's) and a
/// `decision` object in Didit's shape.
pub fn normalise_standard(
    env: Envelope<'_>,
    webhook_id: &str,
    body: &Value,
    timestamp: i64,
) -> Result<IdentityEvent, NormaliseError> {
    let kind = req_str(body, "type")?;
    let empty = Value::Object(Default::default());
    let data = match body.get("data") {
        None | Some(Value::Null) => &empty,
        Some(d @ Value::Object(_)) => d,
        Some(_) => return Err(NormaliseError::InvalidField { field: "data", problem: "must be an object" }),
    };
    let provider_status = opt_str(data, "status");
    let status = provider_status.as_deref().and_then(|s| Status::from_didit(s).or_else(|| Status::from_snake(s)));
    Ok(IdentityEvent {
        id: env.id,
        offset: 0,
        tenant: env.tenant.to_owned(),
        source: env.source.to_owned(),
        provider: Provider::Standard,
        kind: standard_kind(kind),
        provider_kind: kind.to_owned(),
        provider_event_id: Some(webhook_id.to_owned()),
        session_id: opt_str(data, "session_id").or_else(|| opt_str(data, "id")),
        subject: opt_str(data, "subject").or_else(|| opt_str(data, "vendor_data")).or_else(|| opt_str(data, "user_id")),
        status,
        provider_status,
        occurred_at: rfc3339(timestamp),
        received_at: rfc3339(env.received_at),
        signature: env.scheme,
        unauthenticated_decision: false,
        dedupe_key: format!("event:{webhook_id}"),
        checks: data.get("decision").map(didit_checks).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Envelope<'static> {
        Envelope {
            id: "evt".into(),
            tenant: "acme",
            source: "didit-main",
            received_at: 1_700_000_005,
            scheme: Scheme::DiditV2,
        }
    }

    #[test]
    fn didit_statuses() {
        let table = [
            ("Not Started", Some(Status::NotStarted)),
            ("In Progress", Some(Status::InProgress)),
            ("Awaiting User", Some(Status::AwaitingUser)),
            ("In Review", Some(Status::InReview)),
            ("Approved", Some(Status::Approved)),
            ("Declined", Some(Status::Declined)),
            ("Resubmitted", Some(Status::Resubmitted)),
            ("Abandoned", Some(Status::Abandoned)),
            ("Expired", Some(Status::Expired)),
            ("Kyc Expired", Some(Status::Expired)),
            ("approved", None),
        ];
        for (raw, want) in table {
            assert_eq!(Status::from_didit(raw), want, "{raw}");
        }
        assert_eq!(Status::from_snake("in_review"), Some(Status::InReview));
    }

    #[test]
    fn v3_arrays_and_v2_objects_normalise_alike() {
        let v3 = json!({
            "id_verifications": [{"node_id": "id_1", "status": "Approved", "document_number": "X1", "expiration_date": "2030-01-01"}],
            "liveness_checks": [{"node_id": "l_1", "status": "Approved", "score": 96.15, "method": "passive"}],
            "face_matches": [{"status": "Approved", "score": 88}],
            "aml_screenings": [{"status": "In Review", "total_hits": 2}],
            "ip_analyses": [{"country": "DE", "vpn": true, "tor": false}],
            "phone_verifications": [{"phone_number": "+4915112345678", "is_virtual": false}],
            "email_verifications": [{"email": "a@b.de", "is_breached": true}]
        });
        let v2 = json!({
            "id_verification": {"node_id": "id_1", "status": "Approved", "document_number": "X1", "expiration_date": "2030-01-01"},
            "liveness": {"node_id": "l_1", "status": "Approved", "score": 96.15, "method": "passive"},
            "face_match": {"status": "Approved", "score": 88},
            "aml": {"status": "In Review", "total_hits": 2},
            "ip_analysis": {"country": "DE", "vpn": true, "tor": false},
            "phone": {"phone_number": "+4915112345678", "is_virtual": false},
            "email": {"email": "a@b.de", "is_breached": true}
        });
        let a = didit_checks(&v3);
        assert_eq!(a, didit_checks(&v2));
        assert_eq!(a.liveness[0].score, Some(96.15));
        assert_eq!(a.aml[0].total_hits, Some(2));
        assert_eq!(a.ip[0].vpn, Some(true));
        assert_eq!(a.documents[0].document_number.as_deref(), Some("X1"));
    }

    #[test]
    fn required_fields_are_named() {
        let cases = [
            (json!({"timestamp": 1}), NormaliseError::MissingField("webhook_type")),
            (
                json!({"webhook_type": "status.updated", "status": "Approved"}),
                NormaliseError::MissingField("session_id"),
            ),
            (json!({"webhook_type": "status.updated", "session_id": "s"}), NormaliseError::MissingField("status")),
            (
                json!({"webhook_type": 5}),
                NormaliseError::InvalidField { field: "webhook_type", problem: "must be a string" },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(normalise_didit(env(), &body, 1).unwrap_err(), want, "{body}");
        }
    }

    #[test]
    fn dedupe_key_prefers_event_id_then_composite() {
        let body =
            json!({"webhook_type": "status.updated", "session_id": "s1", "status": "In Progress", "event_id": "e1"});
        assert_eq!(normalise_didit(env(), &body, 7).unwrap().dedupe_key, "event:e1");
        let body = json!({"webhook_type": "status.updated", "session_id": "s1", "status": "In Progress"});
        assert_eq!(normalise_didit(env(), &body, 7).unwrap().dedupe_key, "composite:s1|status.updated|7|In Progress");
        // A result is keyed by the result, not the delivery (see `didit_result_key`).
        let body =
            json!({"webhook_type": "status.updated", "session_id": "s1", "status": "Approved", "event_id": "e1"});
        let ev = normalise_didit(env(), &body, 7).unwrap();
        assert_eq!(ev.dedupe_key, "result:s1|Approved|;reviews=0");
        assert_eq!(ev.kind, "verification.status_updated");
        assert_eq!(ev.status, Some(Status::Approved));
        assert_eq!(ev.occurred_at, "1970-01-01T00:00:07Z");
    }

    /// The pinned result key: a webhook and a poll of the same result agree; another delivery
    /// attempt (new `event_id`, new timestamp) of the same result is the same key; a changed
    /// check or another review is a different result.
    #[test]
    fn result_key_is_the_same_by_webhook_and_by_poll() {
        let decision = json!({
            "session_id": "s1", "status": "Declined",
            "id_verifications": [{"node_id": "id_1", "status": "Declined"}],
            "liveness_checks": [{"node_id": "l_1", "status": "Approved", "score": 91}],
            "reviews": []
        });
        let hook = |event_id: &str, ts: i64| {
            let body = json!({"webhook_type": "status.updated", "session_id": "s1", "status": "Declined",
                "event_id": event_id, "timestamp": ts, "vendor_data": "u1", "decision": decision});
            normalise_didit(env(), &body, ts).unwrap()
        };
        let mut polled_body = decision.clone();
        polled_body["vendor_data"] = json!("u1");
        let polled = normalise_didit_poll(env(), &polled_body).unwrap().unwrap();
        let want = "result:s1|Declined|id_verifications/id_1=Declined,liveness_checks/l_1=Approved;reviews=0";
        assert_eq!(hook("e1", 10).dedupe_key, want);
        assert_eq!(hook("e2", 99).dedupe_key, want);
        assert_eq!(polled.dedupe_key, want);
        assert_eq!(polled.kind, "verification.status_updated");
        assert_eq!(polled.signature, Scheme::DiditApi);
        assert_eq!(polled.subject.as_deref(), Some("u1"));
        assert_eq!(polled.checks, hook("e1", 10).checks);
        let mut other = decision.clone();
        other["reviews"] = json!([{"id": "r1"}]);
        assert_ne!(didit_result_key("s1", "Declined", Some(&other)).unwrap(), want);
        assert!(didit_result_key("s1", "In Progress", Some(&decision)).is_none());
        let not_yet = json!({"session_id": "s1", "status": "In Progress"});
        assert!(normalise_didit_poll(env(), &not_yet).unwrap().is_none());
    }

    #[test]
    fn simple_signature_marks_decision_unauthenticated() {
        let mut e = env();
        e.scheme = Scheme::DiditSimple;
        let body = json!({"webhook_type": "status.updated", "session_id": "s1", "status": "Approved"});
        assert!(normalise_didit(e, &body, 7).unwrap().unauthenticated_decision);
    }

    #[test]
    fn provider_kinds_never_collide_with_own_kinds() {
        for t in [
            "status.updated",
            "data.updated",
            "user.status.updated",
            "user.data.updated",
            "business.status.updated",
            "business.data.updated",
            "activity.created",
            "transaction.created",
            "transaction.status.updated",
            "session.created",
            "decision.made",
            "review.resolved",
        ] {
            assert!(!is_own_kind(&didit_kind(t)), "Didit {t} -> {}", didit_kind(t));
            assert!(!is_own_kind(&standard_kind(t)), "Standard {t} -> {}", standard_kind(t));
        }
        for own in ["decision.made", "review.opened", "ruleset.activated", "subject.updated", "access.key_created"] {
            assert!(is_own_kind(own), "{own}");
        }
    }

    #[test]
    fn user_webhooks_need_no_session() {
        let body = json!({"webhook_type": "user.status.updated", "vendor_data": "u1", "status": "FLAGGED", "previous_status": "ACTIVE"});
        let ev = normalise_didit(env(), &body, 7).unwrap();
        assert_eq!(ev.kind, "user.status_updated");
        assert_eq!(ev.partition_key(), "u1");
        assert_eq!(ev.status, None);
        assert_eq!(ev.provider_status.as_deref(), Some("FLAGGED"));
    }

    #[test]
    fn standard_body() {
        let mut e = env();
        e.scheme = Scheme::StandardV1;
        let body = json!({"type": "verification.status_updated", "data": {"session_id": "s9", "status": "approved", "subject": "u9"}});
        let ev = normalise_standard(e, "msg_1", &body, 9).unwrap();
        assert_eq!(ev.status, Some(Status::Approved));
        assert_eq!(ev.session_id.as_deref(), Some("s9"));
        assert_eq!(ev.dedupe_key, "event:msg_1");
        // A sender cannot write one of idstream's own kinds.
        let mut e3 = env();
        e3.scheme = Scheme::StandardV1;
        let ev =
            normalise_standard(e3, "m2", &json!({"type": "decision.made", "data": {"outcome": "approve"}}), 9).unwrap();
        assert_eq!((ev.kind.as_str(), ev.provider_kind.as_str()), ("standard.decision.made", "decision.made"));
        assert!(!is_own_kind(&ev.kind));
        let e2 = env();
        assert_eq!(
            normalise_standard(e2, "m", &json!({"data": {}}), 1).unwrap_err(),
            NormaliseError::MissingField("type")
        );
    }
}
