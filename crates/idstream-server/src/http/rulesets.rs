//! Rulesets: upload (validated, versioned by content), list, read, activate.
//!
//! An upload or activation is a transaction with its log entry (`ruleset.uploaded`,
//! `ruleset.activated`); every node's decision workers switch at that entry's place in the log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use idstream_rules::Ruleset;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, Caller, TextBody};
use super::responses::{
    BadRequest, Conflict, Forbidden, InvalidRulesTest, InvalidRuleset, NotFound, TooManyRequests, Unauthorized,
    Unavailable,
};
use super::sessions::TenantParam;
use crate::error::ApiError;
use crate::events::{LogEvent, OwnEvent, RulesetChanged};
use crate::log::ReadFilter;
use crate::state::AppState;
use crate::store::{Op, RulesetRecord, Txn};
use crate::util::now_us;

fn time(us: i64) -> String {
    idstream_core::event::rfc3339_us(us)
}

/// A stored ruleset, without its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetSummary {
    /// Hex SHA-256 of the canonical content.
    pub version: String,
    pub label: String,
    pub created_by: String,
    pub created_at: String,
    /// Whether it is the tenant's active ruleset.
    pub active: bool,
}

/// The ruleset a tenant's decisions use.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ActiveView {
    /// An uploaded ruleset was activated.
    Stored { version: String, activated_by: String, activated_at: String },
    /// None was: the shipped default applies.
    Default { version: String, label: String, default: bool },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetList {
    pub tenant: String,
    pub active: ActiveView,
    /// Whether activations need a second approver (`decisions.require_second_approver`).
    pub require_second_approver: bool,
    /// An activation waiting for its second approver.
    pub pending_activation: Option<PendingActivation>,
    /// Every uploaded version.
    pub rulesets: Vec<RulesetSummary>,
}

/// A ruleset with its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetDocument {
    pub version: String,
    pub label: String,
    /// Absent for the shipped default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The YAML document.
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetUploaded {
    pub version: String,
    pub label: String,
    pub tenant: String,
    /// How many rules it has.
    pub rules: usize,
    /// Whether it was activated in the same transaction.
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetActivation {
    pub tenant: String,
    pub version: String,
    pub label: String,
    pub activated_by: String,
    pub activated_at: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// Required with a `*` key.
    tenant: Option<String>,
    /// Activate it in the same transaction (default false).
    activate: Option<bool>,
}

fn parse(text: &str) -> Result<Ruleset, ApiError> {
    Ruleset::parse("ruleset", text).map_err(|errors| ApiError::invalid_ruleset(&errors))
}

fn changed(tenant: &str, version: &str, label: &str, actor: &str, now: i64) -> RulesetChanged {
    RulesetChanged {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        version: version.to_owned(),
        label: label.to_owned(),
        actor: actor.to_owned(),
        at: time(now),
        requested_by: None,
    }
}

/// A four-eyes activation waiting for its second approver.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingActivation {
    pub version: String,
    pub label: String,
    pub requested_by: String,
    /// RFC 3339 UTC.
    pub requested_at: String,
}

/// The tenant's pending activation request, if any: the latest `ruleset.activation_requested`
/// not followed by an activation (read from the tenant's ruleset history in the log).
async fn pending_activation(st: &AppState, tenant: &str) -> Result<Option<PendingActivation>, ApiError> {
    let filter = ReadFilter { tenant: Some(tenant.to_owned()), partition_key: Some(format!("ruleset:{tenant}")) };
    let mut pending = None;
    let mut after = 0;
    loop {
        let page = st.log.read(after, 1000, &filter).await?;
        let Some(last) = page.last() else { break };
        after = last.offset;
        for e in &page {
            match LogEvent::from_entry(e) {
                Ok(LogEvent::Own(OwnEvent::RulesetActivationRequested(r))) => {
                    pending = Some(PendingActivation {
                        version: r.version,
                        label: r.label,
                        requested_by: r.actor,
                        requested_at: r.at,
                    })
                }
                Ok(LogEvent::Own(OwnEvent::RulesetActivated(_))) => pending = None,
                _ => {}
            }
        }
    }
    Ok(pending)
}

/// What an activation does under four-eyes: asks (the first), or approves (a second person,
/// the same version).
enum FourEyes {
    Request,
    Approve { requested_by: String },
}

async fn four_eyes(st: &AppState, tenant: &str, version: &str, caller: &str) -> Result<FourEyes, ApiError> {
    match pending_activation(st, tenant).await? {
        Some(p) if p.version == version && p.requested_by == caller => Err(ApiError::conflict(format!(
            "you asked for the activation of `{version}`: a second policy_admin or admin must activate it (four-eyes)"
        ))),
        Some(p) if p.version == version => Ok(FourEyes::Approve { requested_by: p.requested_by }),
        _ => Ok(FourEyes::Request),
    }
}

/// The tenant's rulesets and which one is active.
#[utoipa::path(
    get,
    path = "/v1/rulesets",
    operation_id = "list_rulesets",
    tag = "rulesets",
    params(TenantParam),
    security(("api_key" = [])),
    responses((status = 200, body = RulesetList), BadRequest, Unauthorized, Forbidden, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<RulesetList>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let active = st.store.active_rulesets().await?.into_iter().find(|(t, _)| *t == tenant).map(|(_, a)| a);
    let active_version = active.as_ref().map(|a| a.version.clone());
    let rulesets = st
        .store
        .rulesets(&tenant)
        .await?
        .into_iter()
        .map(|r| RulesetSummary {
            active: active_version.as_deref() == Some(r.version.as_str()),
            created_at: time(r.created_at_us),
            version: r.version,
            label: r.label,
            created_by: r.created_by,
        })
        .collect();
    let active = match active {
        Some(a) => ActiveView::Stored {
            version: a.version,
            activated_by: a.activated_by,
            activated_at: time(a.activated_at_us),
        },
        None => {
            let d = st.rulesets.default_ruleset();
            ActiveView::Default { version: d.version().to_owned(), label: d.version_label().to_owned(), default: true }
        }
    };
    let pending_activation = if st.require_second_approver { pending_activation(&st, &tenant).await? } else { None };
    Ok(Json(RulesetList {
        tenant,
        active,
        require_second_approver: st.require_second_approver,
        pending_activation,
        rulesets,
    }))
}

/// Uploads a ruleset (YAML). It is validated first: any error answers 422 with every error at
/// its line and column, and nothing is stored.
#[utoipa::path(
    post,
    path = "/v1/rulesets",
    operation_id = "upload_ruleset",
    tag = "rulesets",
    params(UploadParams),
    request_body(content = String, content_type = "application/yaml", description = "The ruleset document"),
    security(("api_key" = [])),
    responses(
        (status = 201, body = RulesetUploaded),
        BadRequest,
        Unauthorized,
        Forbidden,
        InvalidRuleset,
        Unavailable,
        TooManyRequests, crate::http::responses::ServerError
    )
)]
pub async fn upload(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadParams>,
    TextBody(text): TextBody,
) -> Result<(StatusCode, Json<RulesetUploaded>), ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let activate = q.activate.unwrap_or(false);
    let ruleset = parse(&text)?;
    let now = now_us();
    let rec = RulesetRecord {
        tenant: tenant.clone(),
        version: ruleset.version().to_owned(),
        label: ruleset.version_label().to_owned(),
        text,
        created_by: caller.name.clone(),
        created_at_us: now,
    };
    let uploaded = changed(&tenant, &rec.version, &rec.label, &caller.name, now);
    let mut txn =
        Txn { entries: vec![OwnEvent::RulesetUploaded(uploaded).to_entry()], ops: vec![Op::PutRuleset(rec.clone())] };
    // Under four-eyes an upload's activation is a request (or the approval of one).
    let mut activate = activate;
    let mut requested_by = None;
    if activate && st.require_second_approver {
        match four_eyes(&st, &tenant, &rec.version, &caller.name).await? {
            FourEyes::Request => {
                let req = changed(&tenant, &rec.version, &rec.label, &caller.name, now);
                txn.entries.push(OwnEvent::RulesetActivationRequested(req).to_entry());
                activate = false;
            }
            FourEyes::Approve { requested_by: by } => requested_by = Some(by),
        }
    }
    if activate {
        let activated =
            RulesetChanged { requested_by, ..changed(&tenant, &rec.version, &rec.label, &caller.name, now) };
        txn.entries.push(OwnEvent::RulesetActivated(activated).to_entry());
        txn.ops.push(Op::ActivateRuleset {
            tenant: tenant.clone(),
            version: rec.version.clone(),
            actor: caller.name.clone(),
            now_us: now,
        });
    }
    st.store.commit(txn).await?;
    let rules = ruleset.rules().count();
    if activate {
        st.rulesets.set(&tenant, Arc::new(ruleset));
    }
    let body = RulesetUploaded { version: rec.version, label: rec.label, tenant, rules, active: activate };
    Ok((StatusCode::CREATED, Json(body)))
}

/// One ruleset with its text; `default` is the shipped default policy.
#[utoipa::path(
    get,
    path = "/v1/rulesets/{version}",
    operation_id = "get_ruleset",
    tag = "rulesets",
    params(("version" = String, Path, description = "A version (hex SHA-256), or `default`"), TenantParam),
    security(("api_key" = [])),
    responses((status = 200, body = RulesetDocument), BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, crate::http::responses::ServerError)
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(version): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<Json<RulesetDocument>, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    if version == "default" {
        let d = st.rulesets.default_ruleset();
        return Ok(Json(RulesetDocument {
            version: d.version().to_owned(),
            label: d.version_label().to_owned(),
            created_by: None,
            created_at: None,
            text: idstream_rules::DEFAULT_RULESET.to_owned(),
        }));
    }
    let r = st
        .store
        .ruleset(&tenant, &version)
        .await?
        .ok_or_else(|| ApiError::not_found("ruleset_not_found", format!("no ruleset version `{version}`")))?;
    Ok(Json(RulesetDocument {
        created_at: Some(time(r.created_at_us)),
        version: r.version,
        label: r.label,
        created_by: Some(r.created_by),
        text: r.text,
    }))
}

/// Makes a stored ruleset the tenant's active one.
#[utoipa::path(
    post,
    path = "/v1/rulesets/{version}/activate",
    operation_id = "activate_ruleset",
    tag = "rulesets",
    params(("version" = String, Path, description = "The version to activate"), TenantParam),
    security(("api_key" = [])),
    responses(
        (status = 200, body = RulesetActivation, description = "Active now"),
        (status = 202, body = PendingActivation, description = "Four-eyes (`decisions.require_second_approver`): the activation is requested; a second policy_admin or admin activates the same version"),
        BadRequest, Unauthorized, Forbidden, NotFound, Conflict, Unavailable, TooManyRequests, crate::http::responses::ServerError
    )
)]
pub async fn activate(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(version): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let r = st.store.ruleset(&tenant, &version).await?.ok_or_else(|| {
        ApiError::not_found("ruleset_not_found", format!("no ruleset version `{version}` (upload it first)"))
    })?;
    let ruleset = parse(&r.text)?;
    let now = now_us();
    let mut requested_by = None;
    if st.require_second_approver {
        match four_eyes(&st, &tenant, &version, &caller.name).await? {
            FourEyes::Request => {
                let req = changed(&tenant, &r.version, &r.label, &caller.name, now);
                st.store
                    .commit(Txn {
                        entries: vec![OwnEvent::RulesetActivationRequested(req).to_entry()],
                        ops: Vec::new(),
                    })
                    .await?;
                let pending =
                    PendingActivation { version, label: r.label, requested_by: caller.name, requested_at: time(now) };
                return Ok((StatusCode::ACCEPTED, Json(pending)).into_response());
            }
            FourEyes::Approve { requested_by: by } => requested_by = Some(by),
        }
    }
    let activated = RulesetChanged { requested_by, ..changed(&tenant, &r.version, &r.label, &caller.name, now) };
    st.store
        .commit(Txn {
            entries: vec![OwnEvent::RulesetActivated(activated).to_entry()],
            ops: vec![Op::ActivateRuleset {
                tenant: tenant.clone(),
                version: version.clone(),
                actor: caller.name.clone(),
                now_us: now,
            }],
        })
        .await?;
    st.rulesets.set(&tenant, Arc::new(ruleset));
    Ok(Json(RulesetActivation { tenant, version, label: r.label, activated_by: caller.name, activated_at: time(now) })
        .into_response())
}

/// A ruleset that validates.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetValid {
    pub version: String,
    pub label: String,
    pub rules: usize,
}

/// Validates a ruleset without storing it (the editor checks as you type): the same validator
/// as an upload; errors answer 422 with each at its line and column.
#[utoipa::path(
    post,
    path = "/v1/rulesets/validate",
    operation_id = "validate_ruleset",
    tag = "rulesets",
    request_body(content = String, content_type = "application/yaml", description = "The ruleset document"),
    security(("api_key" = [])),
    responses(
        (status = 200, body = RulesetValid),
        BadRequest, Unauthorized, Forbidden, InvalidRuleset, TooManyRequests, crate::http::responses::ServerError
    )
)]
pub async fn validate(_caller: Caller, TextBody(text): TextBody) -> Result<Json<RulesetValid>, ApiError> {
    let r = parse(&text)?;
    Ok(Json(RulesetValid {
        version: r.version().to_owned(),
        label: r.version_label().to_owned(),
        rules: r.rules().count(),
    }))
}

/// A `rules test` run: a cases file (the CLI's format) against a ruleset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesTestBody {
    /// The cases document (YAML, as `idstream rules test` reads it).
    pub cases: String,
    /// A ruleset document to test (e.g. the editor's draft). Without it and `version`, the
    /// tenant's active ruleset is tested.
    #[serde(default)]
    pub ruleset: Option<String>,
    /// A stored version, or `default` (the shipped policy), instead of `ruleset`.
    #[serde(default)]
    pub version: Option<String>,
}

/// One case's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestCase {
    pub name: String,
    /// Where the case starts in the cases document.
    pub line: Option<usize>,
    pub passed: bool,
    pub expected_outcome: idstream_rules::Outcome,
    /// Expected reasons, sorted; absent when the case does not check them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_reasons: Option<Vec<String>>,
    pub outcome: idstream_rules::Outcome,
    pub score: f64,
    pub reasons: Vec<String>,
    /// Every rule that matched, in ruleset order, with the values it read.
    pub fired: Vec<idstream_rules::Fired>,
    /// Rules that could not be evaluated (`rule_id: message`).
    pub errors: Vec<String>,
}

/// The results of a cases document.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesTestReport {
    pub ruleset_version: String,
    pub ruleset_label: String,
    pub passed: usize,
    pub failed: usize,
    pub cases: Vec<TestCase>,
}

/// Runs a cases document (the format of `idstream rules test`) against a draft, a stored
/// version or the active ruleset; stores nothing. A case that fails is a result (200); a
/// document that does not parse is 422 with each error at its line and column
/// (`invalid_ruleset` for the ruleset, `invalid_cases` for the cases).
#[utoipa::path(
    post,
    path = "/v1/rulesets/test",
    operation_id = "test_ruleset",
    tag = "rulesets",
    params(TenantParam),
    request_body = RulesTestBody,
    security(("api_key" = [])),
    responses(
        (status = 200, body = RulesTestReport),
        BadRequest, Unauthorized, Forbidden, NotFound, InvalidRulesTest, TooManyRequests, crate::http::responses::ServerError
    )
)]
pub async fn test(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
    ApiJson(b): ApiJson<RulesTestBody>,
) -> Result<Json<RulesTestReport>, ApiError> {
    let ruleset: Arc<Ruleset> = match (b.ruleset, b.version.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid_body", "give either `ruleset` or `version`, not both"));
        }
        (Some(text), None) => Arc::new(parse(&text)?),
        (None, Some("default")) => st.rulesets.default_ruleset().clone(),
        (None, Some(version)) => {
            let tenant = caller.acting_for(q.tenant.as_deref())?;
            let r =
                st.store.ruleset(&tenant, version).await?.ok_or_else(|| {
                    ApiError::not_found("ruleset_not_found", format!("no ruleset version `{version}`"))
                })?;
            Arc::new(parse(&r.text)?)
        }
        (None, None) => {
            let tenant = caller.acting_for(q.tenant.as_deref())?;
            st.rulesets.for_tenant(&tenant)
        }
    };
    let report = idstream_rules::run_cases(&ruleset, "cases", &b.cases)
        .map_err(|errors| ApiError::document_errors("invalid_cases", "the cases document", &errors))?;
    let failed = report.failures();
    let cases = report
        .cases
        .into_iter()
        .map(|c| TestCase {
            passed: c.passed(),
            name: c.name,
            line: c.pos.map(|p| p.line),
            expected_outcome: c.expected_outcome,
            expected_reasons: c.expected_reasons,
            outcome: c.decision.outcome,
            score: c.decision.score,
            reasons: c.decision.reasons,
            fired: c.decision.fired,
            errors: c.decision.errors.into_iter().map(|e| format!("{}: {}", e.rule_id, e.message)).collect(),
        })
        .collect::<Vec<_>>();
    Ok(Json(RulesTestReport {
        ruleset_version: ruleset.version().to_owned(),
        ruleset_label: ruleset.version_label().to_owned(),
        passed: cases.len() - failed,
        failed,
        cases,
    }))
}
