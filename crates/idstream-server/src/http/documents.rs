//! `POST /v1/verifications/document`: a document photo checked by the provider's standalone ID
//! verification, stored, and decided like any result; `GET /v1/documents/{id}`: a stored
//! document, streamed, each view recorded (`document.viewed`).
//!
//! The upload is read as a stream (`multer` with the `[documents]` limits); each file is
//! spooled to disk, so memory does not grow with file size. See [`crate::documents`] for the
//! order of storing, the provider call and the record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::decisions::DecisionView;
use super::extract::{ApiQuery, Caller};
use super::responses::{BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized};
use super::verifications::{BadGateway, GatewayTimeout};
use crate::documents::content::{self, Bounds, ContentError, Recognised};
use crate::documents::objects::ObjectStorage;
use crate::error::{ApiError, ErrorBody};
use crate::events::{DocumentViewed, OwnEvent};
use crate::provider::didit::{IdVerificationRequest, Upload, UploadBytes};
use crate::state::AppState;
use crate::store::documents::DocumentRecord;
use crate::store::{Op, Txn};
use crate::util::now_us;

/// The kind of the verification event a document check appends.
pub const DOCUMENT_CHECKED: &str = "verification.document_checked";
/// Longest `wait_secs`.
const MAX_WAIT_SECS: u64 = 30;
/// Text fields are short.
const MAX_TEXT_BYTES: usize = 64 * 1024;

#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(
    status = 413,
    description = "A file is larger than `documents.max_file_bytes` (`file_too_large`, naming the part) or the request larger than `documents.max_request_bytes` (`request_too_large`); nothing was stored or sent"
)]
pub struct TooLarge(ErrorBody);

#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(
    status = 415,
    description = "A file is not a JPEG, PNG, HEIC or PDF by its content (`unsupported_document_type`, naming the part), or the body is not multipart/form-data (`not_multipart`); nothing was stored or sent"
)]
pub struct Unsupported(ErrorBody);

#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(
    status = 422,
    description = "A file is truncated or malformed (`malformed_document`) or an image's sides are out of bounds (`image_dimensions`); the message names the part; nothing was stored or sent"
)]
pub struct Unprocessable(ErrorBody);

#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "The document storage or the store cannot take the upload now (`storage_unavailable`, `store_unavailable`); nothing was recorded, retry later"
)]
pub struct Unavailable(ErrorBody);

/// `POST /v1/verifications/document` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// Required with a `*` key.
    pub tenant: Option<String>,
    /// A `[[providers]] id` of your tenant; default: its first.
    pub provider: Option<String>,
    /// Also wait for idstream's decision (at most `wait_secs`).
    #[serde(default)]
    pub wait: bool,
    /// With `wait=true`: seconds to wait, 1 to 30 (default 10).
    pub wait_secs: Option<u64>,
}

/// The multipart form of `POST /v1/verifications/document`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct DocumentUpload {
    /// The document's front (JPEG, PNG, HEIC or PDF, recognised by its content).
    #[schema(value_type = String, format = Binary)]
    front_image: Vec<u8>,
    /// The back, for two-sided documents.
    #[schema(value_type = Option<String>, format = Binary)]
    back_image: Option<Vec<u8>>,
    /// Your user id (sent to the provider as `vendor_data`).
    subject: String,
    /// A JSON object of your own, returned by the provider.
    metadata: Option<String>,
    /// Holders younger than this (1–120) are declined by the provider.
    minimum_age: Option<u8>,
    /// Also check for screen replays, printed copies and portrait manipulation.
    perform_document_liveness: Option<bool>,
}

/// A stored document, as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DocumentView {
    pub id: String,
    pub session_id: String,
    pub subject: String,
    /// `front` or `back`.
    pub side: String,
    /// Recognised from the bytes.
    pub content_type: String,
    pub size_bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Keyed digest of the content within the tenant: the same image uploaded twice (also for
    /// another subject) has the same value; it reveals nothing about the image.
    pub content_mac: String,
    pub created_by: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl From<DocumentRecord> for DocumentView {
    fn from(d: DocumentRecord) -> DocumentView {
        DocumentView {
            created_at: idstream_core::event::rfc3339_us(d.created_at_us),
            id: d.id,
            session_id: d.session_id,
            subject: d.subject,
            side: d.side,
            content_type: d.content_type,
            size_bytes: d.size_bytes,
            width: d.width,
            height: d.height,
            content_mac: d.content_mac,
            created_by: d.created_by,
        }
    }
}

/// A document check: the provider's answer, the event it was recorded as, and (with
/// `wait=true`) idstream's decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentCheckAnswer {
    /// idstream's id of this check (`idv_...`): the verification event's `session_id`, under
    /// which its decision, review case and documents are found (`GET /v1/sessions/{id}`).
    pub session_id: String,
    pub event_id: String,
    pub offset: u64,
    pub provider: String,
    /// The provider's id of the check.
    pub request_id: String,
    /// `Approved` or `Declined` (the provider's own verdict; idstream's decision may differ).
    pub provider_status: String,
    /// The provider's `id_verification` report: extracted fields and `warnings`.
    #[schema(value_type = Object)]
    pub result: Value,
    pub documents: Vec<DocumentView>,
    /// idstream's decision (with `wait=true`, when it was made in time).
    pub decision: Option<DecisionView>,
}

/// A file being received: deleted when dropped (whether or not it was stored).
struct Spooled {
    path: std::path::PathBuf,
    len: u64,
    sha256: String,
    found: Recognised,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes a spool file whose content was refused.
struct SpoolGuard(Option<std::path::PathBuf>);

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Default)]
struct Form {
    front: Option<Spooled>,
    back: Option<Spooled>,
    subject: Option<String>,
    metadata: Option<Value>,
    minimum_age: Option<u8>,
    liveness: Option<bool>,
}

fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "the request is larger than {limit} bytes (documents.max_request_bytes); nothing was stored or sent"
            ),
        ),
        multer::Error::FieldSizeExceeded { limit, field_name } => {
            file_too_large(field_name.as_deref().unwrap_or("a part"), limit)
        }
        other => ApiError::bad_request(
            "malformed_multipart",
            format!("the multipart body is malformed ({other}); nothing was stored or sent"),
        ),
    }
}

fn file_too_large(field: &str, limit: u64) -> ApiError {
    ApiError::with_details(
        StatusCode::PAYLOAD_TOO_LARGE,
        "file_too_large",
        format!("`{field}` is larger than {limit} bytes (documents.max_file_bytes); nothing was stored or sent"),
        json!({ "field": field }),
    )
}

fn field_error(status: StatusCode, code: &'static str, field: &str, message: String) -> ApiError {
    ApiError::with_details(status, code, message, json!({ "field": field }))
}

async fn read_form(st: &AppState, req: Request) -> Result<Form, ApiError> {
    let cfg = &st.documents_cfg;
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(ctype).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_multipart",
            "the body must be multipart/form-data with a boundary (fields front_image, back_image, subject, ...)",
        )
    })?;
    let limits = multer::SizeLimit::new().whole_stream(cfg.max_request_bytes).per_field(cfg.max_file_bytes);
    let mut mp = multer::Multipart::with_constraints(
        req.into_body().into_data_stream(),
        boundary,
        multer::Constraints::new().size_limit(limits),
    );
    let bounds = Bounds { min_side_px: cfg.min_image_side_px, max_side_px: cfg.max_image_side_px };
    let mut form = Form::default();
    while let Some(mut field) = mp.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "front_image" | "back_image" => {
                let slot = if name == "front_image" { &mut form.front } else { &mut form.back };
                if slot.is_some() {
                    return Err(field_error(StatusCode::BAD_REQUEST, "duplicate_field", &name, format!("`{name}` is given twice")));
                }
                *slot = Some(spool(&st.documents, &mut field, &name, cfg.max_file_bytes, bounds).await?);
            }
            "subject" | "metadata" | "minimum_age" | "perform_document_liveness" => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    text.extend_from_slice(&chunk);
                    if text.len() > MAX_TEXT_BYTES {
                        return Err(field_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_field",
                            &name,
                            format!("`{name}` is longer than {MAX_TEXT_BYTES} bytes"),
                        ));
                    }
                }
                let bad = |m: &str| field_error(StatusCode::BAD_REQUEST, "invalid_field", &name, format!("`{name}` {m}"));
                let text = String::from_utf8(text).map_err(|_| bad("is not UTF-8 text"))?;
                match name.as_str() {
                    "subject" => {
                        if !(1..=200).contains(&text.len()) || text.chars().any(char::is_control) {
                            return Err(bad("must be 1 to 200 characters, no control characters"));
                        }
                        form.subject = Some(text);
                    }
                    "metadata" => match serde_json::from_str::<Value>(&text) {
                        Ok(v @ Value::Object(_)) => form.metadata = Some(v),
                        _ => return Err(bad("must be a JSON object")),
                    },
                    "minimum_age" => match text.trim().parse::<u8>() {
                        Ok(a) if (1..=120).contains(&a) => form.minimum_age = Some(a),
                        _ => return Err(bad("must be a whole number from 1 to 120")),
                    },
                    _ => match text.trim() {
                        "true" => form.liveness = Some(true),
                        "false" => form.liveness = Some(false),
                        _ => return Err(bad("must be `true` or `false`")),
                    },
                }
            }
            "" => return Err(ApiError::bad_request("malformed_multipart", "a part has no name")),
            other => {
                return Err(field_error(
                    StatusCode::BAD_REQUEST,
                    "unknown_field",
                    other,
                    format!(
                        "unknown part `{other}` (expected front_image, back_image, subject, metadata, minimum_age, perform_document_liveness)"
                    ),
                ))
            }
        }
    }
    if form.front.is_none() {
        return Err(field_error(
            StatusCode::BAD_REQUEST,
            "missing_field",
            "front_image",
            "`front_image` is required".into(),
        ));
    }
    if form.subject.is_none() {
        return Err(field_error(StatusCode::BAD_REQUEST, "missing_field", "subject", "`subject` is required".into()));
    }
    Ok(form)
}

/// Receives one file into the spool, then checks its content.
async fn spool(
    objects: &ObjectStorage,
    field: &mut multer::Field<'static>,
    name: &str,
    max: u64,
    bounds: Bounds,
) -> Result<Spooled, ApiError> {
    let storage_error = |e: std::io::Error| {
        ApiError::internal(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the upload cannot be received now; nothing was stored or sent",
            e,
        )
    };
    let path = objects.spool_file().map_err(storage_error)?;
    let mut guard = SpoolGuard(Some(path.clone()));
    let mut file = tokio::fs::OpenOptions::new().write(true).open(&path).await.map_err(storage_error)?;
    // tokio copies each write into its buffer (at most 2 MiB) and writes it on a blocking
    // thread: an upload in flight holds at most that much, whatever the file's size. (A 128 KiB
    // buffer was measured: 5 MB uploads took 2.5× as long, for no lower peak memory.)
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        len += chunk.len() as u64;
        if len > max {
            return Err(file_too_large(name, max));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(storage_error)?;
    }
    file.flush().await.map_err(storage_error)?;
    // Durable before it is linked into the local store (cheap for the S3 store's spool too).
    file.sync_all().await.map_err(storage_error)?;
    drop(file);
    let p = path.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        Ok::<_, std::io::Error>(content::check(&mut f, len, bounds))
    })
    .await
    .expect("the check does not panic")
    .map_err(storage_error)?;
    let found = checked.map_err(|e| {
        let (status, code) = match e {
            ContentError::Empty => (StatusCode::BAD_REQUEST, "empty_file"),
            ContentError::UnknownFormat => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_document_type"),
            ContentError::Malformed(..) => (StatusCode::UNPROCESSABLE_ENTITY, "malformed_document"),
            ContentError::Dimensions { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_dimensions"),
        };
        field_error(status, code, name, format!("`{name}` {e}; nothing was stored or sent"))
    })?;
    guard.0 = None;
    Ok(Spooled { path, len, sha256: hex::encode(hasher.finalize()), found })
}

/// Checks an identity document with the provider: the images are validated by their content,
/// stored, sent to the provider's standalone ID verification, and its answer is recorded as a
/// `verification.document_checked` event that the decision worker decides like any result.
#[utoipa::path(
    post,
    path = "/v1/verifications/document",
    operation_id = "check_document",
    tag = "verifications",
    params(UploadParams),
    request_body(content = DocumentUpload, content_type = "multipart/form-data"),
    security(("api_key" = [])),
    responses(
        (status = 201, body = DocumentCheckAnswer, description = "Checked by the provider, stored and recorded (with `wait=true`: and decided, `decision` set)"),
        (status = 202, body = DocumentCheckAnswer, description = "`wait=true`: recorded, but not decided within `wait_secs` (`decision` is null; follow `GET /v1/sessions/{session_id}`)"),
        BadRequest, Unauthorized, Forbidden, TooLarge, Unsupported, Unprocessable, TooManyRequests, BadGateway, Unavailable, GatewayTimeout,
        crate::http::responses::ServerError
    )
)]
pub async fn upload(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadParams>,
    req: Request,
) -> Result<Response, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let wait = match (q.wait, q.wait_secs) {
        (_, Some(s)) if !(1..=MAX_WAIT_SECS).contains(&s) => {
            return Err(ApiError::bad_request("invalid_parameter", "`wait_secs` must be 1 to 30"));
        }
        (true, s) => Some(Duration::from_secs(s.unwrap_or(10))),
        (false, _) => None,
    };
    let Some(client) = st.providers.for_tenant(&tenant, q.provider.as_deref()).cloned() else {
        return Err(ApiError::bad_request(
            "no_provider",
            match &q.provider {
                Some(p) => format!("tenant `{tenant}` has no provider account `{p}` (`[[providers]]`)"),
                None => format!("tenant `{tenant}` has no provider account configured (`[[providers]]`)"),
            },
        ));
    };
    let form = read_form(&st, req).await?;
    let subject = form.subject.clone().expect("checked");
    let check_id = format!("idv_{}", uuid::Uuid::now_v7().simple());
    let files: Vec<(&str, &Spooled)> = [("front", form.front.as_ref()), ("back", form.back.as_ref())]
        .into_iter()
        .filter_map(|(s, f)| Some((s, f?)))
        .collect();

    // Store the bytes.
    let objects = &st.documents;
    let mut stored: Vec<(object_store::path::Path, &str, &Spooled, String)> = Vec::new();
    for (side, f) in &files {
        let id = uuid::Uuid::now_v7().to_string();
        let address = objects.address(&tenant, &subject, &id);
        if let Err(e) = objects.put_file(&address, &f.path).await {
            remove(objects, &stored).await;
            return Err(ApiError::internal(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the document storage cannot take the upload now; nothing was recorded",
                e,
            ));
        }
        stored.push((address, side, f, id));
    }

    // The provider's check.
    let upload = |side: &str, f: &Spooled| Upload {
        file_name: format!("{side}.{}", extension(f.found.format)),
        content_type: f.found.format.content_type().into(),
        bytes: UploadBytes::File { path: f.path.clone(), len: f.len },
    };
    let request = IdVerificationRequest {
        front_image: upload("front", form.front.as_ref().expect("checked")),
        back_image: form.back.as_ref().map(|b| upload("back", b)),
        perform_document_liveness: form.liveness,
        minimum_age: form.minimum_age,
        save_api_request: None,
        vendor_data: Some(subject.clone()),
        metadata: form.metadata.clone(),
    };
    let answer = match client.id_verification(&request).await {
        Ok(a) => a,
        Err(e) => {
            remove(objects, &stored).await;
            return Err(e.into());
        }
    };

    // The event and the documents' records, in one transaction.
    let now = now_us();
    let received = idstream_core::event::rfc3339_us(now);
    let provider_status = answer.status().to_owned();
    let mut report = answer.id_verification.clone();
    if let Value::Object(m) = &mut report {
        m.entry("node_id").or_insert_with(|| Value::String("id_verification".into()));
    }
    let event = idstream_core::event::IdentityEvent {
        id: uuid::Uuid::now_v7().to_string(),
        offset: 0,
        tenant: tenant.clone(),
        source: client.source.clone(),
        provider: idstream_core::event::Provider::Didit,
        kind: DOCUMENT_CHECKED.into(),
        provider_kind: "id_verification".into(),
        provider_event_id: Some(answer.request_id.clone()),
        session_id: Some(check_id.clone()),
        subject: Some(subject.clone()),
        status: idstream_core::event::Status::from_didit(&provider_status),
        provider_status: Some(provider_status.clone()),
        occurred_at: received.clone(),
        received_at: received,
        signature: idstream_core::signature::Scheme::DiditApi,
        unauthenticated_decision: false,
        dedupe_key: format!("id_verification:{}:{}", client.id, answer.request_id),
        checks: idstream_core::event::didit_checks(&json!({ "id_verifications": [report] })),
    };
    let body = serde_json::to_vec(&json!({
        "request_id": answer.request_id,
        "id_verification": answer.id_verification,
        "vendor_data": answer.vendor_data,
    }))
    .expect("a Value serialises");
    let records: Vec<DocumentRecord> = stored
        .iter()
        .map(|(address, side, f, id)| DocumentRecord {
            id: id.clone(),
            tenant: tenant.clone(),
            subject: subject.clone(),
            session_id: check_id.clone(),
            side: (*side).to_owned(),
            content_type: f.found.format.content_type().into(),
            size_bytes: f.len,
            width: f.found.width,
            height: f.found.height,
            content_mac: objects.content_mac(&tenant, &f.sha256),
            address: address.to_string(),
            event_id: event.id.clone(),
            created_by: caller.name.clone(),
            created_at_us: now,
        })
        .collect();
    let txn = Txn {
        entries: vec![crate::ingest::to_entry(&event, body.into())],
        ops: records.iter().cloned().map(Op::PutDocument).collect(),
    };
    let appended = match st.store.commit(txn).await {
        Ok(a) => a,
        Err(e) => {
            remove(objects, &stored).await;
            return Err(e.into());
        }
    };
    let offset = appended.first().map_or(0, |a| a.offset);
    metrics::counter!("idstream_documents_checked_total", "status" => provider_status.clone()).increment(1);
    tracing::info!(provider = %client.id, session_id = %check_id, files = records.len(), "document checked");

    let mut decision = None;
    if let Some(limit) = wait {
        decision = wait_for_decision(&st, &tenant, &check_id, limit).await?;
    }
    let status = if wait.is_some() && decision.is_none() { StatusCode::ACCEPTED } else { StatusCode::CREATED };
    let out = DocumentCheckAnswer {
        session_id: check_id,
        event_id: event.id,
        offset,
        provider: client.id.clone(),
        request_id: answer.request_id,
        provider_status,
        result: answer.id_verification,
        documents: records.into_iter().map(DocumentView::from).collect(),
        decision,
    };
    Ok((status, Json(out)).into_response())
}

fn extension(f: content::Format) -> &'static str {
    match f {
        content::Format::Jpeg => "jpg",
        content::Format::Png => "png",
        content::Format::Heic => "heic",
        content::Format::Pdf => "pdf",
    }
}

/// Deletes what an upload stored before it failed (best effort: the sweeper gets the rest).
async fn remove(objects: &ObjectStorage, stored: &[(object_store::path::Path, &str, &Spooled, String)]) {
    for (address, ..) in stored {
        if let Err(e) = objects.delete(address).await {
            tracing::warn!(error = %e, "a failed upload's bytes could not be deleted; the sweep will");
        }
    }
}

/// The session's decision, once made (polled: any node's decision worker may make it).
async fn wait_for_decision(
    st: &AppState,
    tenant: &str,
    session_id: &str,
    limit: Duration,
) -> Result<Option<DecisionView>, ApiError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(s) = st.store.session(tenant, session_id).await? {
            if let Some(id) = s.decision_id {
                return Ok(st.store.decision(&id).await?.map(DecisionView::from));
            }
        }
        if started.elapsed() >= limit {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The tenant a `*` key acts for.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Required with a `*` key.
    pub tenant: Option<String>,
}

/// A stored document's bytes, streamed. Each fetch is recorded as a `document.viewed` event
/// (who, when) on the check's timeline before the first byte is sent.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}",
    operation_id = "get_document",
    tag = "verifications",
    params(("id" = String, Path, description = "The document's id"), GetParams),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The document's bytes, as uploaded", content(
            (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/heic"), (Vec<u8> = "application/pdf")
        )),
        BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, crate::http::responses::ServerError
    )
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<GetParams>,
) -> Result<Response, ApiError> {
    let tenant = caller.acting_for(q.tenant.as_deref())?;
    let not_found = || ApiError::not_found("document_not_found", format!("no document `{id}`"));
    if id.len() > 100 {
        return Err(not_found());
    }
    let doc = st.store.document(Some(&tenant), &id).await?.ok_or_else(not_found)?;
    let address = object_store::path::Path::from(doc.address.as_str());
    let object = st.documents.get(&address, None).await.map_err(|e| {
        ApiError::internal(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the document storage cannot be read now",
            e,
        )
    })?;
    let viewed = OwnEvent::DocumentViewed(DocumentViewed {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.clone(),
        document_id: doc.id.clone(),
        session_id: doc.session_id.clone(),
        subject: doc.subject.clone(),
        side: doc.side.clone(),
        actor: caller.name.clone(),
        at: idstream_core::event::rfc3339_us(now_us()),
    });
    st.store.commit(Txn { entries: vec![viewed.to_entry()], ops: Vec::new() }).await?;
    let size = object.meta.size;
    let stream = object.into_stream().map_err(std::io::Error::other);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&doc.content_type).expect("a known content type"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let disposition = format!(
        "attachment; filename=\"{}.{}\"",
        doc.id,
        content::Format::parse(&doc.content_type).map_or("bin", extension)
    );
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).expect("ids are header-safe"));
    Ok(resp)
}

/// The documents of a session, for `GET /v1/sessions/{id}`.
pub async fn of_session(st: &AppState, tenant: &str, session_id: &str) -> Result<Vec<DocumentView>, ApiError> {
    Ok(st.store.session_documents(tenant, session_id).await?.into_iter().map(DocumentView::from).collect())
}
