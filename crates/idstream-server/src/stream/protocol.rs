//! The stream wire protocol: JSON messages in both directions, and the filter a subscription
//! applies to log entries.
//!
//! Client → server: `auth`, `subscribe`, `unsubscribe`, `ping`. Server → client: `subscribed`,
//! `unsubscribed`, `event`, `error`, `pong`. README.md ("Live streams") documents them.
//!
//! Pure: parsing, matching and building messages. It must never decide tenant or claims scope
//! on its own — [`Filter::matches`] is always applied *in addition to* the token's scope by
//! the hub.

use std::sync::OnceLock;

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::json;

use super::auth::{any_matches, KindPattern};

/// WebSocket close codes (4000–4999 are the application's own).
pub mod close {
    /// The token is missing, malformed, badly signed, of a refused algorithm, or expired at
    /// connection time.
    pub const INVALID_TOKEN: u16 = 4401;
    /// The token expired while the stream was open: mint a new one and reconnect (resume from
    /// the last offset).
    pub const TOKEN_EXPIRED: u16 = 4403;
    /// No frame (pong or anything else) from the client for two ping intervals.
    pub const KEEPALIVE_TIMEOUT: u16 = 4408;
    /// The log could not be read; reconnect and resume.
    pub const LOG_UNAVAILABLE: u16 = 1011;
    /// The server is shutting down; reconnect and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// A subscription fell behind log retention: what it missed no longer exists.
    pub const OFFSET_EXPIRED: u16 = 4410;
}

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    Auth {
        token: String,
    },
    Subscribe {
        id: String,
        #[serde(default)]
        filter: FilterSpec,
        #[serde(default)]
        from: Start,
    },
    Unsubscribe {
        id: String,
    },
    Ping,
}

/// A subscription filter as the client sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StartRepr")]
pub enum Start {
    /// Only entries appended after the subscription was made.
    #[default]
    Now,
    /// Everything still in the log.
    Earliest,
    /// Every entry with an offset greater than this one (the last offset the client has).
    After(u64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StartRepr {
    Word(String),
    Offset { offset: u64 },
}

impl TryFrom<StartRepr> for Start {
    type Error = String;
    fn try_from(r: StartRepr) -> Result<Start, String> {
        match r {
            StartRepr::Word(w) if w == "now" => Ok(Start::Now),
            StartRepr::Word(w) if w == "earliest" => Ok(Start::Earliest),
            StartRepr::Word(w) => Err(format!("`from` must be \"now\", \"earliest\" or {{\"offset\": N}}, got {w:?}")),
            StartRepr::Offset { offset } => Ok(Start::After(offset)),
        }
    }
}

/// A validated filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None`: every kind the token allows.
    pub kinds: Option<Vec<KindPattern>>,
    pub session_id: Option<String>,
    pub subject: Option<String>,
    pub outcome: Option<String>,
}

impl Filter {
    pub fn parse(spec: FilterSpec) -> Result<Filter, String> {
        let kinds = match spec.kinds {
            None => None,
            Some(ks) if ks.is_empty() => return Err("`filter.kinds` must not be empty (omit it for all kinds)".into()),
            Some(ks) => Some(ks.iter().map(|k| KindPattern::parse(k)).collect::<Result<Vec<_>, _>>()?),
        };
        Ok(Filter { kinds, session_id: spec.session_id, subject: spec.subject, outcome: spec.outcome })
    }

    /// Whether the entry passes this filter. The tenant and the token's kinds are checked by
    /// the hub, never here.
    pub fn matches(&self, e: &StreamEntry) -> bool {
        if let Some(ks) = &self.kinds {
            if !any_matches(ks, &e.kind) {
                return false;
            }
        }
        fn eq(want: &Option<String>, have: &Option<String>) -> bool {
            match want {
                None => true,
                Some(w) => have.as_deref() == Some(w.as_str()),
            }
        }
        eq(&self.session_id, &e.session_id) && eq(&self.subject, &e.subject) && eq(&self.outcome, &e.outcome)
    }
}

/// A log entry prepared for delivery: the fields filters look at, and the event JSON
/// serialised once and shared by every subscriber.
#[derive(Debug)]
pub struct StreamEntry {
    pub offset: u64,
    pub tenant: String,
    pub kind: String,
    pub session_id: Option<String>,
    pub subject: Option<String>,
    /// `decision.made` events' `outcome`.
    pub outcome: Option<String>,
    pub appended_at_us: i64,
    /// The stored event JSON with its `offset` (without the original webhook body).
    pub json: String,
    /// The first `event` message built from this entry, with the subscription id (as JSON) it
    /// was built for: connections whose subscriptions share that id (every dashboard, a fleet
    /// of one client) send one shared buffer instead of each building a copy. Set once and then
    /// only read (a lock here was contended by every connection of a broadcast).
    rendered: OnceLock<(String, Utf8Bytes)>,
}

impl StreamEntry {
    pub fn from_log(e: &crate::log::LogEntry) -> StreamEntry {
        let shown = crate::events::Shown::of(e, false);
        StreamEntry {
            offset: e.offset,
            tenant: e.tenant.clone(),
            kind: e.kind.clone(),
            session_id: shown.session_id().map(str::to_owned),
            subject: shown.subject().map(str::to_owned),
            outcome: shown.outcome().map(str::to_owned),
            appended_at_us: e.appended_at_us,
            json: serde_json::to_string(&shown).expect("events serialise"),
            rendered: OnceLock::new(),
        }
    }

    /// This entry's `event` message for the subscription `sub_id_json`: shared (a clone is a
    /// reference count) for the first id it was built for, built anew for any other.
    pub fn message(&self, sub_id_json: &str) -> Utf8Bytes {
        let (id, text) =
            self.rendered.get_or_init(|| (sub_id_json.to_owned(), Utf8Bytes::from(event_message(sub_id_json, self))));
        if id == sub_id_json {
            text.clone()
        } else {
            Utf8Bytes::from(event_message(sub_id_json, self))
        }
    }
}

/// `{"type":"event","subscription":ID,"offset":N,"event":{...}}`, built around the shared event
/// JSON rather than re-serialising it for every subscriber.
pub fn event_message(sub_id_json: &str, e: &StreamEntry) -> String {
    let mut s = String::with_capacity(e.json.len() + sub_id_json.len() + 64);
    s.push_str(r#"{"type":"event","subscription":"#);
    s.push_str(sub_id_json);
    s.push_str(r#","offset":"#);
    s.push_str(&e.offset.to_string());
    s.push_str(r#","event":"#);
    s.push_str(&e.json);
    s.push('}');
    s
}

pub fn error_message(id: Option<&str>, code: &str, message: &str) -> String {
    let mut v = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = id {
        v["id"] = id.into();
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, session: Option<&str>, outcome: Option<&str>) -> StreamEntry {
        StreamEntry {
            offset: 7,
            tenant: "t".into(),
            kind: kind.into(),
            session_id: session.map(Into::into),
            subject: Some("user-1".into()),
            outcome: outcome.map(Into::into),
            appended_at_us: 0,
            json: "{}".into(),
            rendered: OnceLock::new(),
        }
    }

    #[test]
    fn parse_messages() {
        let m: ClientMsg = serde_json::from_str(
            r#"{"type":"subscribe","id":"s1","filter":{"kinds":["verification.*"]},"from":{"offset":5}}"#,
        )
        .unwrap();
        assert!(matches!(m, ClientMsg::Subscribe { from: Start::After(5), .. }));
        let m: ClientMsg = serde_json::from_str(r#"{"type":"subscribe","id":"s1","from":"earliest"}"#).unwrap();
        assert!(matches!(m, ClientMsg::Subscribe { from: Start::Earliest, .. }));
        let m: ClientMsg = serde_json::from_str(r#"{"type":"subscribe","id":"s1"}"#).unwrap();
        assert!(matches!(m, ClientMsg::Subscribe { from: Start::Now, .. }));
        for bad in [
            r#"{"type":"subscribe","id":"s1","from":"yesterday"}"#,
            r#"{"type":"subscribe","id":"s1","filter":{"tenant":"other"}}"#,
            r#"{"type":"launch"}"#,
        ] {
            assert!(serde_json::from_str::<ClientMsg>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f = |kinds: Option<Vec<&str>>, session: Option<&str>, outcome: Option<&str>| {
            Filter::parse(FilterSpec {
                kinds: kinds.map(|k| k.into_iter().map(String::from).collect()),
                session_id: session.map(Into::into),
                subject: None,
                outcome: outcome.map(Into::into),
            })
            .unwrap()
        };
        let e = entry("verification.status_updated", Some("s-1"), None);
        assert!(f(None, None, None).matches(&e));
        assert!(f(Some(vec!["verification.*"]), Some("s-1"), None).matches(&e));
        assert!(!f(Some(vec!["decision.made"]), None, None).matches(&e));
        assert!(!f(None, Some("s-2"), None).matches(&e));
        assert!(!f(None, None, Some("approve")).matches(&e));
        let d = entry("decision.made", Some("s-1"), Some("approve"));
        assert!(f(Some(vec!["decision.made"]), None, Some("approve")).matches(&d));
        assert!(!f(None, None, Some("decline")).matches(&d));
    }

    #[test]
    fn event_message_is_valid_json() {
        let mut e = entry("k", None, None);
        e.json = r#"{"id":"x","offset":7}"#.into();
        let id = serde_json::to_string("s\"1").unwrap();
        let v: serde_json::Value = serde_json::from_str(&event_message(&id, &e)).unwrap();
        assert_eq!(v["subscription"], "s\"1");
        assert_eq!(v["event"]["offset"], 7);
    }

    #[test]
    fn a_shared_message_is_built_for_its_own_subscription_id() {
        let mut e = entry("k", None, None);
        e.json = r#"{"id":"x","offset":7}"#.into();
        let (a, b) = (serde_json::to_string("a").unwrap(), serde_json::to_string("b").unwrap());
        let first = e.message(&a);
        assert_eq!(first.as_str(), event_message(&a, &e));
        // The same id again: the same buffer, not a copy.
        assert_eq!(e.message(&a).as_str().as_ptr(), first.as_str().as_ptr());
        // Another id gets its own message; the first id still gets the shared one.
        assert_eq!(e.message(&b).as_str(), event_message(&b, &e));
        assert_eq!(e.message(&a).as_str().as_ptr(), first.as_str().as_ptr());
    }
}
