//! The decision context: every fact a rule may read, and its schema.
//!
//! A [`Context`] is built once per decision from the normalised [`IdentityEvent`] plus an
//! [`Enrichment`] that the I/O layer computed (the subject's own attributes, history, velocity,
//! blocklist hits, configured lists). It is plain data: serialisable, so a decision can record
//! the exact inputs it was made from and a replay can feed them back.
//!
//! **Missing values.** A fact the provider did not report (no liveness check in the workflow, an
//! IP analysis without a risk score) is *absent*, never a made-up default. In CEL an absent field
//! reads as `null`, `has(group.field)` is `false`, and `group.field == null` is `true`. A rule
//! that compares an absent number (`liveness.score < 50.0` with no score) fails to evaluate;
//! that failure is reported and can only make the decision stricter (see `ruleset`), so rules
//! should guard with `has(...)`: `has(liveness.score) && liveness.score < 50.0`. Bool flags can
//! be tested null-safely with `== true` (`ip.vpn == true` is `false` when `vpn` is absent).
//! Facts idstream computes itself (history, velocity, blocklist, `provider.signature_covers_decision`)
//! are always present.
//!
//! **Several check entries.** When the provider ran a check more than once in a session (Didit v3
//! arrays), the most conservative value is taken: the lowest liveness and face-match score, the
//! sum of AML hits, a flag true when any entry says so, the highest IP risk score. Identity
//! fields come from the first document.
//!
//! Pure: "now" is an argument; nothing here reads a clock or a file.

use std::collections::BTreeMap;

use idstream_core::event::{IdentityEvent, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use time::{Date, Month, OffsetDateTime};

/// Everything a rule can read. Field names are the CEL names (`document.age`, `ip.vpn`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Context {
    /// The identity document (first document check of the session).
    pub document: DocumentFacts,
    /// Liveness (selfie is a live person).
    pub liveness: LivenessFacts,
    /// Selfie-to-document face match.
    pub face_match: FaceMatchFacts,
    /// AML / sanctions / PEP screening.
    pub aml: AmlFacts,
    /// The user's IP address analysis.
    pub ip: IpFacts,
    /// Phone verification.
    pub phone: PhoneFacts,
    /// Email verification.
    pub email: EmailFacts,
    /// The provider's own verdict and how far idstream could authenticate it.
    pub provider: ProviderFacts,
    /// Attributes the company pushed for this subject (`PUT /v1/subjects/{id}`), e.g.
    /// `account_age_days`, `country`, `expected_first_name`, `expected_last_name`,
    /// `expected_date_of_birth`. Open-ended: any key may be read, an unknown one is absent.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subject: BTreeMap<String, Json>,
    /// This subject's earlier sessions and decisions.
    pub history: History,
    /// How many *other* subjects used the same value within the velocity window.
    pub velocity: Velocity,
    /// Whether a value of this session is on a blocklist.
    pub blocklist: BlocklistHits,
    /// Configured lists, e.g. `high_risk_countries`. A list the context does not carry falls
    /// back to the ruleset's `lists` default of the same name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<String, Vec<String>>,
}

/// `document.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentFacts {
    /// Document type as the provider names it, e.g. `Passport`, `Identity Card`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub doc_type: Option<String>,
    /// Document number as printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Expiry date, `YYYY-MM-DD` (ISO dates compare correctly as strings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    /// Issuing country, ISO 3166 alpha-3 as Didit sends it (`DEU`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuing_country: Option<String>,
    /// Nationality, ISO 3166 alpha-3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nationality: Option<String>,
    /// First name(s) as read from the document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name as read from the document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Date of birth, `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// Age in whole years at decision time, computed from `date_of_birth` and "now".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<i64>,
    /// True when `expiry` is before today (UTC); a document expiring today is still valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
}

/// `liveness.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LivenessFacts {
    /// Score 0–100, higher is more likely a live person (lowest of several checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Method, e.g. `passive`, `active`, `flashing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// `face_match.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaceMatchFacts {
    /// Similarity 0–100 between selfie and document portrait (lowest of several checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// `aml.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmlFacts {
    /// Number of possible sanctions / PEP / adverse-media matches (sum over screenings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hits: Option<i64>,
}

/// `ip.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpFacts {
    /// Geolocated country, ISO 3166 alpha-2 (`DE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Traffic came through a VPN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpn: Option<bool>,
    /// Traffic came through an open proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<bool>,
    /// Traffic came through Tor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tor: Option<bool>,
    /// The address belongs to a hosting provider / data centre.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosting: Option<bool>,
    /// Provider's IP risk score 0–100 (highest of several analyses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk_score: Option<f64>,
}

/// `phone.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhoneFacts {
    /// The verified number, as the provider sent it (usually E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// A disposable (throw-away) number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposable: Option<bool>,
    /// A virtual (VoIP) number.
    #[serde(rename = "virtual", skip_serializing_if = "Option::is_none")]
    pub is_virtual: Option<bool>,
}

/// `email.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailFacts {
    /// The verified address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A disposable-mailbox domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposable: Option<bool>,
    /// The address appears in known data breaches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breached: Option<bool>,
}

/// `provider.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderFacts {
    /// Normalised status: `approved`, `declined`, `in_review`, `in_progress`, `not_started`,
    /// `awaiting_user`, `resubmitted`, `abandoned`, `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The provider's status exactly as sent (`Approved`, `In Review`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_status: Option<String>,
    /// True when the webhook signature covered the provider's decision. False when only
    /// Didit's Simple signature verified (it signs a few header fields, not the decision), so
    /// the status could have been altered in transit: such an event must never auto-approve.
    /// Defaults to false in a hand-written context, the safe side.
    pub signature_covers_decision: bool,
}

/// `history.*` — earlier sessions of the same subject (computed by the decision worker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct History {
    /// Verification sessions this subject had before this one.
    pub previous_sessions: i64,
    /// Of those, how many were finally declined.
    pub previous_declines: i64,
    /// Of those, how many were finally approved.
    pub previous_approvals: i64,
}

/// `velocity.*` — distinct *other* subjects that used the same value within the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Velocity {
    /// Other subjects with the same document number (whatever the issuing country: a forged
    /// copy may claim another one).
    pub document_subjects: i64,
    /// Other subjects with the same phone number.
    pub phone_subjects: i64,
    /// Other subjects with the same email address.
    pub email_subjects: i64,
    /// Other subjects with the same face (provider face id / image hash).
    pub face_subjects: i64,
}

/// `blocklist.*` — whether a value of this session matches a blocklist entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlocklistHits {
    /// The document number is blocklisted.
    pub document: bool,
    /// The phone number is blocklisted.
    pub phone: bool,
    /// The email address is blocklisted.
    pub email: bool,
    /// The face is blocklisted.
    pub face: bool,
}

/// What the I/O layer looked up for this decision; [`Context::from_event`] copies it in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Enrichment {
    /// The subject's attributes, as stored from `PUT /v1/subjects/{id}`.
    pub subject: BTreeMap<String, Json>,
    /// Counts from the subject's earlier sessions and decisions.
    pub history: History,
    /// Distinct other subjects sharing this session's values within the velocity window.
    pub velocity: Velocity,
    /// Blocklist matches of this session's (normalised, keyed-hash) values.
    pub blocklist: BlocklistHits,
    /// Configured lists; each overrides the ruleset's default of the same name.
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Context {
    /// Builds the context of one event. `now_unix` is the decision time (for age and expiry),
    /// passed in so the same inputs always give the same context.
    pub fn from_event(event: &IdentityEvent, now_unix: i64, enrich: &Enrichment) -> Context {
        let checks = &event.checks;
        let today = OffsetDateTime::from_unix_timestamp(now_unix).unwrap_or(OffsetDateTime::UNIX_EPOCH).date();
        let doc = checks.documents.first();
        let doc_str = |f: fn(&idstream_core::event::DocumentCheck) -> &Option<String>| {
            doc.and_then(|d| f(d).as_deref()).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        let date_of_birth = doc_str(|d| &d.date_of_birth);
        let expiry = doc_str(|d| &d.expiration_date);
        let document = DocumentFacts {
            doc_type: doc_str(|d| &d.document_type),
            number: doc_str(|d| &d.document_number),
            issuing_country: doc_str(|d| &d.issuing_state),
            nationality: doc_str(|d| &d.nationality),
            first_name: doc_str(|d| &d.first_name),
            last_name: doc_str(|d| &d.last_name),
            age: date_of_birth.as_deref().and_then(parse_date).map(|dob| age_on(dob, today)),
            expired: expiry.as_deref().and_then(parse_date).map(|exp| exp < today),
            date_of_birth,
            expiry,
        };
        // Conservative aggregation over repeated checks: the weakest evidence wins.
        let min =
            |it: &mut dyn Iterator<Item = f64>| it.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
        let max =
            |it: &mut dyn Iterator<Item = f64>| it.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let any =
            |it: &mut dyn Iterator<Item = bool>| it.fold(None, |a: Option<bool>, x| Some(a.unwrap_or(false) || x));
        let ip = &checks.ip;
        Context {
            document,
            liveness: LivenessFacts {
                score: min(&mut checks.liveness.iter().filter_map(|l| l.score)),
                method: checks.liveness.iter().find_map(|l| l.method.clone()),
            },
            face_match: FaceMatchFacts { score: min(&mut checks.face_matches.iter().filter_map(|f| f.score)) },
            aml: AmlFacts {
                hits: checks.aml.iter().filter_map(|a| a.total_hits).fold(None, |s: Option<i64>, h| {
                    Some(s.unwrap_or(0).saturating_add(i64::try_from(h).unwrap_or(i64::MAX)))
                }),
            },
            ip: IpFacts {
                country: ip.iter().find_map(|i| i.country.clone()),
                vpn: any(&mut ip.iter().filter_map(|i| i.vpn)),
                proxy: any(&mut ip.iter().filter_map(|i| i.proxy)),
                tor: any(&mut ip.iter().filter_map(|i| i.tor)),
                hosting: any(&mut ip.iter().filter_map(|i| i.hosting)),
                risk_score: max(&mut ip.iter().filter_map(|i| i.risk_score)),
            },
            phone: PhoneFacts {
                number: checks.phone.iter().find_map(|p| p.phone_number.clone()),
                disposable: any(&mut checks.phone.iter().filter_map(|p| p.is_disposable)),
                is_virtual: any(&mut checks.phone.iter().filter_map(|p| p.is_virtual)),
            },
            email: EmailFacts {
                address: checks.email.iter().find_map(|e| e.email.clone()),
                disposable: any(&mut checks.email.iter().filter_map(|e| e.is_disposable)),
                breached: any(&mut checks.email.iter().filter_map(|e| e.is_breached)),
            },
            provider: ProviderFacts {
                status: event.status.map(status_name),
                raw_status: event.provider_status.clone(),
                signature_covers_decision: !event.unauthenticated_decision,
            },
            subject: enrich.subject.clone(),
            history: enrich.history.clone(),
            velocity: enrich.velocity.clone(),
            blocklist: enrich.blocklist.clone(),
            lists: enrich.lists.clone(),
        }
    }

    /// The value of a known field, borrowed.
    pub fn get(&self, field: Field) -> FieldValue<'_> {
        use Field as F;
        use FieldValue as V;
        fn s(o: &Option<String>) -> FieldValue<'_> {
            o.as_deref().map_or(FieldValue::Absent, FieldValue::Str)
        }
        let b = |o: &Option<bool>| o.map_or(V::Absent, V::Bool);
        let d = |o: &Option<f64>| o.map_or(V::Absent, V::Double);
        let i = |o: &Option<i64>| o.map_or(V::Absent, V::Int);
        match field {
            F::DocumentType => s(&self.document.doc_type),
            F::DocumentNumber => s(&self.document.number),
            F::DocumentExpiry => s(&self.document.expiry),
            F::DocumentIssuingCountry => s(&self.document.issuing_country),
            F::DocumentNationality => s(&self.document.nationality),
            F::DocumentFirstName => s(&self.document.first_name),
            F::DocumentLastName => s(&self.document.last_name),
            F::DocumentDateOfBirth => s(&self.document.date_of_birth),
            F::DocumentAge => i(&self.document.age),
            F::DocumentExpired => b(&self.document.expired),
            F::LivenessScore => d(&self.liveness.score),
            F::LivenessMethod => s(&self.liveness.method),
            F::FaceMatchScore => d(&self.face_match.score),
            F::AmlHits => i(&self.aml.hits),
            F::IpCountry => s(&self.ip.country),
            F::IpVpn => b(&self.ip.vpn),
            F::IpProxy => b(&self.ip.proxy),
            F::IpTor => b(&self.ip.tor),
            F::IpHosting => b(&self.ip.hosting),
            F::IpRiskScore => d(&self.ip.risk_score),
            F::PhoneNumber => s(&self.phone.number),
            F::PhoneDisposable => b(&self.phone.disposable),
            F::PhoneVirtual => b(&self.phone.is_virtual),
            F::EmailAddress => s(&self.email.address),
            F::EmailDisposable => b(&self.email.disposable),
            F::EmailBreached => b(&self.email.breached),
            F::ProviderStatus => s(&self.provider.status),
            F::ProviderRawStatus => s(&self.provider.raw_status),
            F::ProviderSignatureCoversDecision => V::Bool(self.provider.signature_covers_decision),
            F::HistoryPreviousSessions => V::Int(self.history.previous_sessions),
            F::HistoryPreviousDeclines => V::Int(self.history.previous_declines),
            F::HistoryPreviousApprovals => V::Int(self.history.previous_approvals),
            F::VelocityDocumentSubjects => V::Int(self.velocity.document_subjects),
            F::VelocityPhoneSubjects => V::Int(self.velocity.phone_subjects),
            F::VelocityEmailSubjects => V::Int(self.velocity.email_subjects),
            F::VelocityFaceSubjects => V::Int(self.velocity.face_subjects),
            F::BlocklistDocument => V::Bool(self.blocklist.document),
            F::BlocklistPhone => V::Bool(self.blocklist.phone),
            F::BlocklistEmail => V::Bool(self.blocklist.email),
            F::BlocklistFace => V::Bool(self.blocklist.face),
        }
    }

    /// A whole group as JSON (for a rule that reads `document` itself rather than a field).
    pub fn group_json(&self, group: Group) -> Json {
        let v = match group {
            Group::Document => serde_json::to_value(&self.document),
            Group::Liveness => serde_json::to_value(&self.liveness),
            Group::FaceMatch => serde_json::to_value(&self.face_match),
            Group::Aml => serde_json::to_value(&self.aml),
            Group::Ip => serde_json::to_value(&self.ip),
            Group::Phone => serde_json::to_value(&self.phone),
            Group::Email => serde_json::to_value(&self.email),
            Group::Provider => serde_json::to_value(&self.provider),
            Group::Subject => serde_json::to_value(&self.subject),
            Group::History => serde_json::to_value(&self.history),
            Group::Velocity => serde_json::to_value(&self.velocity),
            Group::Blocklist => serde_json::to_value(&self.blocklist),
            Group::Lists => serde_json::to_value(&self.lists),
        };
        v.unwrap_or(Json::Null)
    }
}

/// `Status` in the snake_case vocabulary rules compare against.
fn status_name(s: Status) -> String {
    match serde_json::to_value(s) {
        Ok(Json::String(s)) => s,
        _ => String::new(),
    }
}

/// Parses the date part of `YYYY-MM-DD[...]`; anything else is treated as absent.
pub(crate) fn parse_date(s: &str) -> Option<Date> {
    let s = s.get(..10)?;
    let mut parts = s.splitn(3, '-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()
}

/// Whole years between `dob` and `today` (a birthday counts from its day; 29 February
/// birthdays count from 1 March in common years).
pub(crate) fn age_on(dob: Date, today: Date) -> i64 {
    let mut years = i64::from(today.year()) - i64::from(dob.year());
    if (u8::from(today.month()), today.day()) < (u8::from(dob.month()), dob.day()) {
        years -= 1;
    }
    years
}

/// A field value borrowed from a [`Context`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    Absent,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
}

impl FieldValue<'_> {
    /// As JSON, for the explanation of a decision (absent is `null`).
    pub fn to_json(self) -> Json {
        match self {
            FieldValue::Absent => Json::Null,
            FieldValue::Bool(b) => Json::Bool(b),
            FieldValue::Int(i) => Json::from(i),
            FieldValue::Double(d) => serde_json::Number::from_f64(d).map_or(Json::Null, Json::Number),
            FieldValue::Str(s) => Json::String(s.to_owned()),
        }
    }
}

/// The static type of a context value, used to catch type errors when a ruleset loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Double,
    String,
    /// A list of strings (`lists.*`).
    StringList,
    /// A map (a whole group, or a nested subject attribute).
    Map,
    Null,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Double => "double",
            Kind::String => "string",
            Kind::StringList => "list of strings",
            Kind::Map => "map",
            Kind::Null => "null",
        }
    }

    /// The name with its article, for messages ("an int", "a bool").
    pub fn with_article(self) -> String {
        match self {
            Kind::Int => "an int".to_owned(),
            k => format!("a {}", k.name()),
        }
    }

    pub(crate) fn is_number(self) -> bool {
        matches!(self, Kind::Int | Kind::Double)
    }
}

/// The top-level names a rule can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Document,
    Liveness,
    FaceMatch,
    Aml,
    Ip,
    Phone,
    Email,
    Provider,
    Subject,
    History,
    Velocity,
    Blocklist,
    Lists,
}

impl Group {
    pub const ALL: [Group; 13] = [
        Group::Document,
        Group::Liveness,
        Group::FaceMatch,
        Group::Aml,
        Group::Ip,
        Group::Phone,
        Group::Email,
        Group::Provider,
        Group::Subject,
        Group::History,
        Group::Velocity,
        Group::Blocklist,
        Group::Lists,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Document => "document",
            Group::Liveness => "liveness",
            Group::FaceMatch => "face_match",
            Group::Aml => "aml",
            Group::Ip => "ip",
            Group::Phone => "phone",
            Group::Email => "email",
            Group::Provider => "provider",
            Group::Subject => "subject",
            Group::History => "history",
            Group::Velocity => "velocity",
            Group::Blocklist => "blocklist",
            Group::Lists => "lists",
        }
    }

    pub fn from_name(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }
}

macro_rules! fields {
    ($($variant:ident => $group:ident . $name:literal : $kind:ident,)*) => {
        /// Every fixed field of the context (`subject.*` and `lists.*` are open-ended and not
        /// listed). This is the schema rules are validated against.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field { $($variant,)* }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];

            pub fn group(self) -> Group {
                match self { $(Field::$variant => Group::$group,)* }
            }

            /// The field's name within its group (`age` of `document.age`).
            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            pub fn kind(self) -> Kind {
                match self { $(Field::$variant => Kind::$kind,)* }
            }
        }
    };
}

fields! {
    DocumentType => Document."type": String,
    DocumentNumber => Document."number": String,
    DocumentExpiry => Document."expiry": String,
    DocumentIssuingCountry => Document."issuing_country": String,
    DocumentNationality => Document."nationality": String,
    DocumentFirstName => Document."first_name": String,
    DocumentLastName => Document."last_name": String,
    DocumentDateOfBirth => Document."date_of_birth": String,
    DocumentAge => Document."age": Int,
    DocumentExpired => Document."expired": Bool,
    LivenessScore => Liveness."score": Double,
    LivenessMethod => Liveness."method": String,
    FaceMatchScore => FaceMatch."score": Double,
    AmlHits => Aml."hits": Int,
    IpCountry => Ip."country": String,
    IpVpn => Ip."vpn": Bool,
    IpProxy => Ip."proxy": Bool,
    IpTor => Ip."tor": Bool,
    IpHosting => Ip."hosting": Bool,
    IpRiskScore => Ip."risk_score": Double,
    PhoneNumber => Phone."number": String,
    PhoneDisposable => Phone."disposable": Bool,
    PhoneVirtual => Phone."virtual": Bool,
    EmailAddress => Email."address": String,
    EmailDisposable => Email."disposable": Bool,
    EmailBreached => Email."breached": Bool,
    ProviderStatus => Provider."status": String,
    ProviderRawStatus => Provider."raw_status": String,
    ProviderSignatureCoversDecision => Provider."signature_covers_decision": Bool,
    HistoryPreviousSessions => History."previous_sessions": Int,
    HistoryPreviousDeclines => History."previous_declines": Int,
    HistoryPreviousApprovals => History."previous_approvals": Int,
    VelocityDocumentSubjects => Velocity."document_subjects": Int,
    VelocityPhoneSubjects => Velocity."phone_subjects": Int,
    VelocityEmailSubjects => Velocity."email_subjects": Int,
    VelocityFaceSubjects => Velocity."face_subjects": Int,
    BlocklistDocument => Blocklist."document": Bool,
    BlocklistPhone => Blocklist."phone": Bool,
    BlocklistEmail => Blocklist."email": Bool,
    BlocklistFace => Blocklist."face": Bool,
}

impl Field {
    /// `group.name`, as written in a rule.
    pub fn path(self) -> String {
        format!("{}.{}", self.group().name(), self.name())
    }

    pub fn lookup(group: Group, name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.group() == group && f.name() == name)
    }

    /// Whether the value can be absent (provider facts can, idstream's own facts cannot).
    pub fn optional(self) -> bool {
        !matches!(self.group(), Group::History | Group::Velocity | Group::Blocklist)
            && self != Field::ProviderSignatureCoversDecision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idstream_core::event::{Checks, DocumentCheck, IpCheck, LivenessCheck, Provider};
    use idstream_core::signature::Scheme;

    fn event(scheme: Scheme, checks: Checks) -> IdentityEvent {
        IdentityEvent {
            id: "e".into(),
            offset: 0,
            tenant: "t".into(),
            source: "s".into(),
            provider: Provider::Didit,
            kind: "verification.status_updated".into(),
            provider_kind: "status.updated".into(),
            provider_event_id: None,
            session_id: Some("s1".into()),
            subject: Some("u1".into()),
            status: Some(Status::Approved),
            provider_status: Some("Approved".into()),
            occurred_at: "2025-01-01T00:00:00Z".into(),
            received_at: "2025-01-01T00:00:00Z".into(),
            signature: scheme,
            unauthenticated_decision: !scheme.covers_body(),
            dedupe_key: "k".into(),
            checks,
        }
    }

    // 2025-06-15T12:00:00Z
    const NOW: i64 = 1_749_988_800;

    #[test]
    fn ages_and_expiry() {
        let d = |s| parse_date(s).unwrap();
        let table =
            [("2007-06-15", 18), ("2007-06-16", 17), ("2007-06-14", 18), ("1990-01-01", 35), ("2008-02-29", 17)];
        let today = d("2025-06-15");
        for (dob, want) in table {
            assert_eq!(age_on(d(dob), today), want, "{dob}");
        }
        assert_eq!(parse_date("2025-13-01"), None);
        assert_eq!(parse_date("15/06/2025"), None);
        assert_eq!(parse_date("2025-06-15T00:00:00Z"), Some(today));
    }

    #[test]
    fn from_event_normalises_and_aggregates() {
        let checks = Checks {
            documents: vec![DocumentCheck {
                document_number: Some("X1".into()),
                date_of_birth: Some("2000-06-16".into()),
                expiration_date: Some("2025-06-14".into()),
                issuing_state: Some("DEU".into()),
                ..Default::default()
            }],
            liveness: vec![
                LivenessCheck { score: Some(90.0), ..Default::default() },
                LivenessCheck { score: Some(40.0), method: Some("passive".into()), ..Default::default() },
            ],
            ip: vec![
                IpCheck { vpn: Some(false), risk_score: Some(10.0), ..Default::default() },
                IpCheck { vpn: Some(true), risk_score: Some(80.0), country: Some("DE".into()), ..Default::default() },
            ],
            ..Default::default()
        };
        let ctx = Context::from_event(&event(Scheme::DiditV2, checks), NOW, &Enrichment::default());
        assert_eq!(ctx.document.age, Some(24));
        assert_eq!(ctx.document.expired, Some(true));
        assert_eq!(ctx.liveness.score, Some(40.0));
        assert_eq!(ctx.liveness.method.as_deref(), Some("passive"));
        assert_eq!(ctx.ip.vpn, Some(true));
        assert_eq!(ctx.ip.tor, None);
        assert_eq!(ctx.ip.risk_score, Some(80.0));
        assert_eq!(ctx.aml.hits, None);
        assert_eq!(ctx.provider.status.as_deref(), Some("approved"));
        assert!(ctx.provider.signature_covers_decision);

        let simple = Context::from_event(&event(Scheme::DiditSimple, Checks::default()), NOW, &Enrichment::default());
        assert!(!simple.provider.signature_covers_decision);
        assert_eq!(simple.document, DocumentFacts::default());
    }

    #[test]
    fn schema_paths_match_serde_names() {
        // The CEL name of every field must be its serialised name, or `values` in a decision
        // and a hand-written case context would disagree with the rules.
        let mut ctx = Context::default();
        ctx.document.doc_type = Some("x".into());
        ctx.phone.is_virtual = Some(true);
        let json = serde_json::to_value(&ctx).unwrap();
        assert_eq!(json["document"]["type"], "x");
        assert_eq!(json["phone"]["virtual"], true);
        for f in Field::ALL {
            let group = ctx.group_json(f.group());
            if !f.optional() {
                assert!(group.get(f.name()).is_some(), "{}", f.path());
            }
        }
    }
}
