//! The decision APIs: decisions, sessions, subjects, rulesets, blocklists, reviews, backtests.
//!
//! Same rules as the read API: `Authorization: Bearer <api key>`, a key acts on its own tenant
//! (a `*` key names one with `?tenant=` where the call needs one), another tenant's objects are
//! 404. Every change is also appended to the event log (`ruleset.*`, `blocklist.*`, `review.*`,
//! `decision.made`) in the same transaction, and records who made it: the `analyst` given in the
//! body, else the API key's name.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idstream_rules::Ruleset;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::normalize::KINDS;
use super::{decision_event, internal_entry, now_us, review_event};
use crate::api::{authorize, entry_json};
use crate::error::ApiError;
use crate::log::ReadFilter;
use crate::state::{ApiKey, AppState};
use crate::store::*;

type Q = Query<HashMap<String, String>>;

fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", msg)
}

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> Self {
        match e {
            TxnError::Log(e) => e.into(),
            TxnError::Conflict(m) => conflict(m),
            TxnError::NotFound(m) => ApiError::not_found("not_found", m),
        }
    }
}

/// The tenant a call acts on: the key's own, or for a `*` key the `tenant` parameter.
fn tenant_of(key: &ApiKey, q: &HashMap<String, String>) -> Result<String, ApiError> {
    match (key.tenant.as_str(), q.get("tenant")) {
        ("*", Some(t)) if !t.is_empty() => Ok(t.clone()),
        ("*", _) => {
            Err(ApiError::bad_request("tenant_required", "this API key is for all tenants: name one with `?tenant=`"))
        }
        (own, Some(t)) if t != own => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_tenant",
            format!("this API key acts for tenant `{own}`, not `{t}`"),
        )),
        (own, _) => Ok(own.to_owned()),
    }
}

fn visible(key: &ApiKey, tenant: &str) -> bool {
    key.tenant == "*" || key.tenant == tenant
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|_| ApiError::bad_request("invalid_body", "a JSON object body is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}")))
}

fn time_json(us: i64) -> Value {
    idstream_core::event::rfc3339_us(us).into()
}

fn decision_json(d: &DecisionRecord) -> Value {
    let mut v = serde_json::to_value(d).expect("records serialise");
    v["decided_at"] = time_json(d.decided_at_us);
    v
}

fn review_json(r: &ReviewRecord) -> Value {
    let mut v = serde_json::to_value(r).expect("records serialise");
    v["opened_at"] = time_json(r.opened_at_us);
    v["age_secs"] = ((now_us() - r.opened_at_us) / 1_000_000).into();
    v
}

pub async fn get_decision(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    match st.store.decision(&id).await? {
        Some(d) if visible(key, &d.tenant) => Ok(Json(decision_json(&d))),
        _ => Err(ApiError::not_found("decision_not_found", format!("no decision `{id}`"))),
    }
}

pub async fn get_session(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    let session = st.store.session(&tenant, &id).await?;
    let filter = ReadFilter { tenant: Some(tenant.clone()), partition_key: Some(id.clone()) };
    let events = st.log.read(0, 1000, &filter).await?;
    if session.is_none() && events.is_empty() {
        return Err(ApiError::not_found("session_not_found", format!("no session `{id}`")));
    }
    let decisions = st.store.session_decisions(&tenant, &id).await?;
    let reviews = st
        .store
        .reviews(ReviewFilter {
            tenant: Some(tenant.clone()),
            session_id: Some(id.clone()),
            limit: 100,
            ..Default::default()
        })
        .await?;
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut v = entry_json(e);
            if let Value::Object(m) = &mut v {
                m.remove("body");
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "session_id": id,
        "tenant": tenant,
        "state": session.as_ref().map(|s| s.state.clone()),
        "session": session,
        "decisions": decisions.iter().map(decision_json).collect::<Vec<_>>(),
        "reviews": reviews.iter().map(review_json).collect::<Vec<_>>(),
        "history": events,
    })))
}

pub async fn put_subject(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    let attributes: Value = body(&bytes)?;
    let Value::Object(map) = &attributes else {
        return Err(ApiError::bad_request("invalid_body", "the body must be a JSON object of attributes"));
    };
    if let Some((k, _)) =
        map.iter().find(|(k, _)| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(ApiError::bad_request(
            "invalid_attribute",
            format!("attribute name `{k}` must use only letters, digits and `_` (rules read it as subject.NAME)"),
        ));
    }
    let now = now_us();
    let op = Op::PutSubject {
        tenant: tenant.clone(),
        id: id.clone(),
        attributes: attributes.clone(),
        actor: key.name.clone(),
        now_us: now,
    };
    // The log records that (and which) attributes changed, and who changed them; the values
    // (often personal data such as expected names) stay in the store.
    let ev = json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "kind": "subject.updated",
        "tenant": tenant,
        "subject": id,
        "attributes": map.keys().collect::<Vec<_>>(),
        "actor": key.name,
        "at": time_json(now),
    });
    let entry = internal_entry(&tenant, "subject.updated", &format!("subject:{id}"), None, &ev);
    st.store.commit(Txn { entries: vec![entry], ops: vec![op] }).await?;
    Ok(Json(
        json!({"tenant": tenant, "id": id, "attributes": attributes, "updated_by": key.name, "updated_at": time_json(now)}),
    ))
}

pub async fn get_subject(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    let s = st
        .store
        .subject(&tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("subject_not_found", format!("no subject `{id}`")))?;
    let mut v = serde_json::to_value(&s).expect("records serialise");
    v["updated_at"] = time_json(s.updated_at_us);
    Ok(Json(v))
}

// ------------------------------------------------------------------------------ rulesets

fn ruleset_meta(r: &RulesetRecord, active: Option<&str>) -> Value {
    json!({
        "version": r.version,
        "label": r.label,
        "created_by": r.created_by,
        "created_at": time_json(r.created_at_us),
        "active": active == Some(r.version.as_str()),
    })
}

fn parse_ruleset(text: &str) -> Result<Ruleset, ApiError> {
    Ruleset::parse("ruleset", text).map_err(|errors| {
        let list: Vec<Value> = errors
            .iter()
            .map(|e| {
                json!({
                    "message": e.to_string(),
                    "rule": e.rule,
                    "line": e.pos.map(|p| p.line),
                    "column": e.pos.map(|p| p.column),
                })
            })
            .collect();
        ApiError::with_details(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_ruleset",
            format!("the ruleset has {} error(s); nothing was stored", errors.len()),
            json!({ "errors": list }),
        )
    })
}

fn ruleset_entry(tenant: &str, kind: &str, version: &str, label: &str, actor: &str) -> crate::log::NewEntry {
    let ev = json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "kind": kind,
        "tenant": tenant,
        "version": version,
        "label": label,
        "actor": actor,
        "at": time_json(now_us()),
    });
    internal_entry(tenant, kind, &format!("ruleset:{tenant}"), None, &ev)
}

/// `POST /v1/rulesets`: the body is the ruleset document (YAML). `?activate=true` activates it
/// in the same transaction.
pub async fn post_ruleset(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Q,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    let activate = match q.get("activate").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`activate` must be true or false, got `{other}`"),
            ))
        }
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_body", "the ruleset must be UTF-8 text (YAML)"))?;
    let ruleset = parse_ruleset(text)?;
    let now = now_us();
    let rec = RulesetRecord {
        tenant: tenant.clone(),
        version: ruleset.version().to_owned(),
        label: ruleset.version_label().to_owned(),
        text: text.to_owned(),
        created_by: key.name.clone(),
        created_at_us: now,
    };
    let mut txn = Txn {
        entries: vec![ruleset_entry(&tenant, "ruleset.uploaded", &rec.version, &rec.label, &key.name)],
        ops: vec![Op::PutRuleset(rec.clone())],
    };
    if activate {
        txn.entries.push(ruleset_entry(&tenant, "ruleset.activated", &rec.version, &rec.label, &key.name));
        txn.ops.push(Op::ActivateRuleset {
            tenant: tenant.clone(),
            version: rec.version.clone(),
            actor: key.name.clone(),
            now_us: now,
        });
    }
    st.store.commit(txn).await?;
    let rules = ruleset.rules().count();
    if activate {
        st.rulesets.set(&tenant, Arc::new(ruleset));
    }
    let body = json!({
        "version": rec.version,
        "label": rec.label,
        "tenant": tenant,
        "rules": rules,
        "active": activate,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list_rulesets(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    let active = st.store.active_rulesets().await?.into_iter().find(|(t, _)| *t == tenant).map(|(_, a)| a);
    let all = st.store.rulesets(&tenant).await?;
    let default = st.rulesets.default_ruleset();
    Ok(Json(json!({
        "tenant": tenant,
        "active": match &active {
            Some(a) => json!({"version": a.version, "activated_by": a.activated_by, "activated_at": time_json(a.activated_at_us)}),
            None => json!({"version": default.version(), "label": default.version_label(), "default": true}),
        },
        "rulesets": all.iter().map(|r| ruleset_meta(r, active.as_ref().map(|a| a.version.as_str()))).collect::<Vec<_>>(),
    })))
}

pub async fn get_ruleset(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(version): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    if version == "default" {
        let d = st.rulesets.default_ruleset();
        return Ok(Json(
            json!({"version": d.version(), "label": d.version_label(), "text": idstream_rules::DEFAULT_RULESET}),
        ));
    }
    let r = st
        .store
        .ruleset(&tenant, &version)
        .await?
        .ok_or_else(|| ApiError::not_found("ruleset_not_found", format!("no ruleset version `{version}`")))?;
    let mut v = ruleset_meta(&r, None);
    v["text"] = r.text.into();
    v.as_object_mut().expect("object").remove("active");
    Ok(Json(v))
}

pub async fn activate_ruleset(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(version): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    let r = st.store.ruleset(&tenant, &version).await?.ok_or_else(|| {
        ApiError::not_found("ruleset_not_found", format!("no ruleset version `{version}` (upload it first)"))
    })?;
    let ruleset = parse_ruleset(&r.text)?;
    let now = now_us();
    st.store
        .commit(Txn {
            entries: vec![ruleset_entry(&tenant, "ruleset.activated", &r.version, &r.label, &key.name)],
            ops: vec![Op::ActivateRuleset {
                tenant: tenant.clone(),
                version: version.clone(),
                actor: key.name.clone(),
                now_us: now,
            }],
        })
        .await?;
    st.rulesets.set(&tenant, Arc::new(ruleset));
    Ok(Json(
        json!({"tenant": tenant, "version": version, "label": r.label, "activated_by": key.name, "activated_at": time_json(now)}),
    ))
}

// ---------------------------------------------------------------------------- blocklists

fn check_kind(kind: &str) -> Result<(), ApiError> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "unknown_blocklist",
            format!("no blocklist `{kind}` (there are: document, phone, email, face)"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    value: String,
    #[serde(default)]
    issuing_country: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// Decline sessions with an open review that used this value.
    #[serde(default)]
    recheck: bool,
}

fn block_entry(kind: &str, b: &BlockRecord, actor: &str) -> crate::log::NewEntry {
    let ev = json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "kind": kind,
        "tenant": b.tenant,
        "list": b.kind,
        "entry_id": b.hash,
        "reason": b.reason,
        "actor": actor,
        "at": time_json(now_us()),
    });
    internal_entry(&b.tenant, kind, &format!("blocklist:{}", b.tenant), None, &ev)
}

pub async fn add_block(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    Query(q): Q,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    check_kind(&kind)?;
    let b: BlockBody = body(&bytes)?;
    if b.issuing_country.is_some() && kind != "document" {
        return Err(ApiError::bad_request("invalid_body", "`issuing_country` applies to the document blocklist only"));
    }
    let hash = st
        .hash_key
        .value_hash(&kind, &b.value, b.issuing_country.as_deref())
        .map_err(|m| ApiError::bad_request("invalid_value", m))?;
    let rec = BlockRecord {
        tenant: tenant.clone(),
        kind: kind.clone(),
        hash: hash.clone(),
        reason: b.reason.clone(),
        added_by: key.name.clone(),
        added_at_us: now_us(),
    };
    st.store
        .commit(Txn {
            entries: vec![block_entry("blocklist.added", &rec, &key.name)],
            ops: vec![Op::AddBlock(rec.clone())],
        })
        .await?;
    let mut rechecked = Vec::new();
    if b.recheck {
        // The hash sessions were observed under: for documents, the any-country one.
        let seen_hash = if kind == "document" {
            st.hash_key.value_hash("document", &b.value, None).map_err(|m| ApiError::bad_request("invalid_value", m))?
        } else {
            hash.clone()
        };
        for r in st.store.open_sessions_with(&tenant, &kind, &seen_hash).await? {
            let actor = format!("blocklist:{}", key.name);
            let reason = format!("blocklist.{kind}");
            match resolve(&st, &r, &actor, "decline", &reason, "value added to the blocklist", true).await {
                Ok((d, _)) => {
                    rechecked.push(json!({"session_id": r.session_id, "review_id": r.id, "decision_id": d.id}))
                }
                // Resolved by an analyst meanwhile: their decision stands.
                Err(TxnError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut v = serde_json::to_value(&rec).expect("records serialise");
    v["id"] = hash.into();
    v["added_at"] = time_json(rec.added_at_us);
    v["rechecked"] = rechecked.into();
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list_blocks(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    check_kind(&kind)?;
    let limit = limit_param(&q, 1000, 10_000)?;
    let entries: Vec<Value> = st
        .store
        .blocks(&tenant, &kind, limit)
        .await?
        .iter()
        .map(|b| {
            let mut v = serde_json::to_value(b).expect("records serialise");
            v["id"] = b.hash.clone().into();
            v["added_at"] = time_json(b.added_at_us);
            v
        })
        .collect();
    Ok(Json(json!({"tenant": tenant, "kind": kind, "entries": entries})))
}

pub async fn remove_block(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    check_kind(&kind)?;
    let rec = BlockRecord {
        tenant: tenant.clone(),
        kind: kind.clone(),
        hash: id.clone(),
        reason: None,
        added_by: key.name.clone(),
        added_at_us: now_us(),
    };
    st.store
        .commit(Txn {
            entries: vec![block_entry("blocklist.removed", &rec, &key.name)],
            ops: vec![Op::RemoveBlock { tenant, kind, hash: id.clone() }],
        })
        .await?;
    Ok(Json(json!({"removed": id})))
}

// ------------------------------------------------------------------------------- reviews

fn limit_param(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(s) => s.parse().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::bad_request("invalid_parameter", format!("`limit` must be an integer from 1 to {max}, got `{s}`"))
        }),
    }
}

pub async fn list_reviews(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    for k in q.keys() {
        if !matches!(k.as_str(), "status" | "reason" | "older_than_secs" | "limit" | "tenant" | "session_id") {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "unknown parameter `{k}` (expected status, reason, older_than_secs, session_id, limit, tenant)"
                ),
            ));
        }
    }
    let tenant = if key.tenant == "*" { q.get("tenant").cloned() } else { Some(tenant_of(key, &q)?) };
    let status = match q.get("status").map(String::as_str) {
        None | Some("open") => Some("open".to_owned()),
        Some("all") => None,
        Some(s @ ("claimed" | "resolved")) => Some(s.to_owned()),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`status` must be open, claimed, resolved or all, got `{other}`"),
            ))
        }
    };
    let opened_before_us = match q.get("older_than_secs") {
        None => None,
        Some(s) => Some(
            now_us()
                - s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("`older_than_secs` must be a non-negative integer, got `{s}`"),
                    )
                })? * 1_000_000,
        ),
    };
    let filter = ReviewFilter {
        tenant,
        status,
        reason: q.get("reason").cloned(),
        opened_before_us,
        session_id: q.get("session_id").cloned(),
        limit: limit_param(&q, 100, 1000)?,
    };
    let reviews = st.store.reviews(filter).await?;
    Ok(Json(json!({"reviews": reviews.iter().map(review_json).collect::<Vec<_>>()})))
}

async fn visible_review(st: &AppState, key: &ApiKey, id: &str) -> Result<ReviewRecord, ApiError> {
    let tenant = (key.tenant != "*").then_some(key.tenant.as_str());
    st.store
        .review(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("review_not_found", format!("no review `{id}`")))
}

pub async fn get_review(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    Ok(Json(review_json(&visible_review(&st, key, &id).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    #[serde(default)]
    analyst: Option<String>,
}

fn actor(key: &ApiKey, analyst: Option<String>) -> Result<String, ApiError> {
    match analyst {
        Some(a) if a.trim().is_empty() || a.len() > 200 => {
            Err(ApiError::bad_request("invalid_body", "`analyst` must be a non-empty name of at most 200 bytes"))
        }
        Some(a) => Ok(a.trim().to_owned()),
        None => Ok(key.name.clone()),
    }
}

pub async fn claim_review(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let b: ClaimBody = body(&bytes)?;
    let who = actor(key, b.analyst)?;
    let mut r = visible_review(&st, key, &id).await?;
    let now = now_us();
    r.status = "claimed".into();
    r.claimed_by = Some(who.clone());
    r.claimed_at_us = Some(now);
    st.store
        .commit(Txn {
            entries: vec![review_event("review.claimed", &r, Some(&who))],
            ops: vec![Op::ClaimReview { tenant: r.tenant.clone(), id: id.clone(), actor: who, now_us: now }],
        })
        .await?;
    Ok(Json(review_json(&r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    outcome: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    analyst: Option<String>,
}

pub async fn resolve_review(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let b: ResolveBody = body(&bytes)?;
    if !matches!(b.outcome.as_str(), "approve" | "decline") {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("`outcome` must be approve or decline, got `{}`", b.outcome),
        ));
    }
    if b.note.len() > 10_000 {
        return Err(ApiError::bad_request("invalid_body", "`note` is limited to 10,000 bytes"));
    }
    let who = actor(key, b.analyst)?;
    let r = visible_review(&st, key, &id).await?;
    let reason = format!("review.{}", b.outcome);
    let (d, r) = resolve(&st, &r, &who, &b.outcome, &reason, &b.note, false).await?;
    Ok(Json(json!({"review": review_json(&r), "decision": decision_json(&d)})))
}

/// Closes a review with a final decision: review resolved, decision stored, session updated,
/// `review.resolved` and `decision.made` appended — one transaction. Returns the decision and
/// the review as resolved.
async fn resolve(
    st: &AppState,
    r: &ReviewRecord,
    who: &str,
    outcome: &str,
    reason: &str,
    note: &str,
    force: bool,
) -> Result<(DecisionRecord, ReviewRecord), TxnError> {
    let now = now_us();
    let decided_by = if force { who.to_owned() } else { format!("review:{who}") };
    let d = DecisionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: r.tenant.clone(),
        session_id: r.session_id.clone(),
        subject: r.subject.clone(),
        event_id: None,
        event_offset: None,
        outcome: outcome.to_owned(),
        score: 0.0,
        ruleset_version: None,
        reasons: vec![reason.to_owned()],
        decided_by,
        decided_at_us: now,
        detail: json!({"review_id": r.id, "note": note, "replaces_decision": r.decision_id}),
    };
    let mut resolved = r.clone();
    resolved.status = "resolved".into();
    resolved.resolved_by = Some(who.to_owned());
    resolved.resolved_at_us = Some(now);
    resolved.outcome = Some(outcome.to_owned());
    resolved.note = Some(note.to_owned());
    let state = if outcome == "approve" { "approved" } else { "declined" };
    st.store
        .commit(Txn {
            entries: vec![review_event("review.resolved", &resolved, Some(who)), decision_event(&d, Some(&r.id))],
            ops: vec![
                Op::ResolveReview {
                    tenant: r.tenant.clone(),
                    id: r.id.clone(),
                    actor: who.to_owned(),
                    outcome: outcome.to_owned(),
                    note: note.to_owned(),
                    now_us: now,
                    force,
                },
                Op::PutDecision(d.clone()),
                Op::UpsertSession(SessionUpdate {
                    tenant: r.tenant.clone(),
                    session_id: r.session_id.clone(),
                    subject: None,
                    provider_status: None,
                    state: state.into(),
                    decision: Some((outcome.to_owned(), d.id.clone())),
                    now_us: now,
                }),
            ],
        })
        .await?;
    Ok((d, resolved))
}

// ----------------------------------------------------------------------------- backtests

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    /// The candidate ruleset document (YAML).
    ruleset: String,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

pub async fn post_backtest(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Q,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers)?;
    let tenant = tenant_of(key, &q)?;
    let b: BacktestBody = body(&bytes)?;
    let ruleset = parse_ruleset(&b.ruleset)?;
    let time = |name: &str, v: &Option<String>, default: i64| -> Result<i64, ApiError> {
        match v {
            None => Ok(default),
            Some(s) => crate::backtest::parse_time(s)
                .map_err(|m| ApiError::bad_request("invalid_body", format!("`{name}`: {m}"))),
        }
    };
    let since = time("since", &b.since, 0)?;
    let until = time("until", &b.until, i64::MAX)?;
    let report = crate::backtest::run(st.store.as_ref(), &ruleset, since, until, Some(&tenant), &|_| {}).await?;
    Ok(Json(serde_json::to_value(report).expect("reports serialise")))
}
