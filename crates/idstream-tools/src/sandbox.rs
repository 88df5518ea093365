//! `idstream sandbox`: a local Didit, so the whole loop — start a verification, the user
//! verifies, the signed webhook, the decision, the stream — runs on one machine.
//!
//! It implements the Didit calls idstream makes (`POST /v3/session/`,
//! `GET /v3/session/{id}/decision/`, `PATCH /v3/session/{id}/update-status/`,
//! `DELETE /v3/session/{id}/delete/`, and the standalone `POST /v3/id-verification/`, a
//! multipart upload answered with a persona's document report), a hosted page per session
//! (`GET /session/{token}`), and
//! delivers signed v3 webhooks (`X-Signature-V2`, `X-Signature`, `X-Signature-Simple`) to its
//! webhook URL — set once per application in Didit's console, `--webhook-url` here — with
//! Didit's retry behaviour (a couple of retries minutes apart, then dropped).
//!
//! Results come from the simulator's personas ([`crate::personas`]), deterministic with
//! `--seed`. A session completes when its page's button is pressed, when
//! `POST /sandbox/sessions/{id}/complete` is called, or after `--complete-after-ms`.
//!
//! For tests of the caller's robustness it can be told (`PUT /sandbox/faults`) to fail the next
//! N API calls with a status (and a `Retry-After`), to answer slowly, or to drop a share of its
//! webhooks; `GET /sandbox/stats` counts calls and deliveries. None of this is Didit's: the
//! `/sandbox/*` routes are the sandbox's own controls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use idstream_core::signature::{didit, Secret};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::personas::{self, Persona, SimConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Where webhooks go (Didit's console setting): idstream's `/webhooks/{source}`.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/sandbox")]
    pub webhook_url: String,
    /// File holding the webhook secret (`idstream serve` in sandbox mode writes one).
    #[arg(long, default_value = "./idstream-data/sandbox.secret")]
    pub webhook_secret_file: PathBuf,
    /// The API key callers must send as `x-api-key` (prefer IDSTREAM_SANDBOX_API_KEY: command
    /// lines are visible); none: any key is accepted.
    #[arg(long, env = "IDSTREAM_SANDBOX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seed of the results: the same seed gives the same results in the same order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Latency added to every API call.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Complete every session by itself this long after its creation (0: only on request).
    #[arg(long, default_value_t = 0)]
    pub complete_after_ms: u64,
    /// The persona of every result (default: drawn from the simulator's mix).
    #[arg(long)]
    pub persona: Option<Persona>,
    /// Share (0..=1) of webhooks never delivered (to exercise reconciliation).
    #[arg(long, default_value_t = 0.0)]
    pub drop_webhooks: f64,
    /// Seconds between webhook delivery retries (Didit: about 1 and 4 minutes).
    #[arg(long, value_delimiter = ',', default_values_t = [60u64, 240])]
    pub retry_delays_secs: Vec<u64>,
}

/// How the sandbox runs (the CLI's arguments, resolved).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub webhook_url: Option<String>,
    pub webhook_secret: Secret,
    pub api_key: Option<Secret>,
    pub seed: u64,
    pub latency: Duration,
    pub complete_after: Option<Duration>,
    pub persona: Option<Persona>,
    pub drop_webhooks: f64,
    pub retry_delays: Vec<Duration>,
}

impl SandboxConfig {
    /// A config for tests: no latency, no automatic completion, webhooks retried after 1 s.
    pub fn for_tests(secret: &str, api_key: &str) -> SandboxConfig {
        SandboxConfig {
            webhook_url: None,
            webhook_secret: Secret::new(secret),
            api_key: Some(Secret::new(api_key)),
            seed: 1,
            latency: Duration::ZERO,
            complete_after: None,
            persona: None,
            drop_webhooks: 0.0,
            retry_delays: vec![Duration::from_secs(1)],
        }
    }
}

/// Faults to inject (`PUT /sandbox/faults`), all optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Fail this many of the next API calls ...
    #[serde(default)]
    pub fail_next: u32,
    /// ... with this status (default 503) ...
    #[serde(default)]
    pub fail_status: Option<u16>,
    /// ... and this `Retry-After` (seconds).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// Extra delay of every API call, milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Share of webhooks dropped (overrides `--drop-webhooks`).
    #[serde(default)]
    pub drop_webhooks: Option<f64>,
}

/// Counters (`GET /sandbox/stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// API calls received, by call (`create_session`, `get_decision`, ...), faults included.
    pub calls: HashMap<String, u64>,
    /// Calls answered with an injected fault.
    pub faulted: u64,
    pub webhooks_delivered: u64,
    pub webhooks_dropped: u64,
    pub webhooks_failed: u64,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    number: u64,
    token: String,
    workflow_id: String,
    vendor_data: Option<String>,
    metadata: Option<Value>,
    callback: Option<String>,
    status: String,
    /// The result's feature arrays (after completion).
    decision: Value,
    created_at: i64,
}

struct Inner {
    cfg: SandboxConfig,
    base: String,
    webhook_url: Mutex<Option<String>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The latest session of each (vendor_data, workflow), so a creation finds an unfinished one
    /// without scanning (locked after `sessions`).
    by_vendor: Mutex<HashMap<(String, String), String>>,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
    rng: Mutex<ChaCha8Rng>,
    http: reqwest::Client,
    stop: CancellationToken,
}

type St = Arc<Inner>;

/// Serves the sandbox on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: SandboxConfig,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let base = format!("http://{}", listener.local_addr()?);
    let st = Arc::new(Inner {
        webhook_url: Mutex::new(cfg.webhook_url.clone()),
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(cfg.seed)),
        cfg,
        base,
        sessions: Mutex::default(),
        by_vendor: Mutex::default(),
        faults: Mutex::default(),
        stats: Mutex::default(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("a plain client builds"),
        stop: stop.clone(),
    });
    let app = Router::new()
        .route("/v3/session/", post(create_session))
        .route("/v3/session/{id}/decision/", get(get_decision))
        .route("/v3/session/{id}/update-status/", patch(update_status))
        .route("/v3/session/{id}/delete/", delete(delete_session))
        // Two images of up to 5 MB each, and the form's other fields.
        .route("/v3/id-verification/", post(id_verification).layer(DefaultBodyLimit::max(11 * 1024 * 1024)))
        .route("/session/{token}", get(hosted_page))
        .route("/session/{token}/finish", post(hosted_finish))
        .route("/sandbox/sessions/{id}/complete", post(complete))
        .route("/sandbox/faults", put(set_faults))
        .route("/sandbox/webhook-url", put(set_webhook_url))
        .route("/sandbox/stats", get(stats))
        .with_state(st);
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

/// `idstream sandbox`.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let secret = std::fs::read_to_string(&args.webhook_secret_file).with_context(|| {
        format!(
            "reading the webhook secret from {} (start `idstream serve` in sandbox mode first, or write the secret of your Didit source there)",
            args.webhook_secret_file.display()
        )
    })?;
    anyhow::ensure!((0.0..=1.0).contains(&args.drop_webhooks), "--drop-webhooks must be between 0 and 1");
    let cfg = SandboxConfig {
        webhook_url: Some(args.webhook_url.clone()),
        webhook_secret: Secret::new(secret.trim()),
        api_key: args.api_key.clone().map(Secret::new),
        seed: args.seed,
        latency: Duration::from_millis(args.latency_ms),
        complete_after: (args.complete_after_ms > 0).then(|| Duration::from_millis(args.complete_after_ms)),
        persona: args.persona,
        drop_webhooks: args.drop_webhooks,
        retry_delays: args.retry_delays_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "idstream sandbox: a local Didit on http://{} — webhooks to {} (set [[providers]] base_url to this address)",
        listener.local_addr()?,
        args.webhook_url
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    serve(listener, cfg, stop).await?;
    Ok(())
}

fn error(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({ "detail": detail }))).into_response()
}

/// Authentication, latency and injected faults, common to every Didit call.
async fn gate(st: &St, headers: &HeaderMap, call: &str) -> Result<(), Response> {
    *st.stats.lock().unwrap().calls.entry(call.to_owned()).or_default() += 1;
    let (delay, fault) = {
        let mut f = st.faults.lock().unwrap();
        let fault = (f.fail_next > 0).then(|| {
            f.fail_next -= 1;
            (f.fail_status.unwrap_or(503), f.retry_after_secs)
        });
        (st.cfg.latency + Duration::from_millis(f.delay_ms), fault)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some((status, retry_after)) = fault {
        st.stats.lock().unwrap().faulted += 1;
        let mut r = error(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "injected fault");
        if let Some(s) = retry_after {
            r.headers_mut().insert("retry-after", s.to_string().parse().expect("digits"));
        }
        return Err(r);
    }
    let presented = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    match (&st.cfg.api_key, presented) {
        (_, None) => Err(error(StatusCode::UNAUTHORIZED, "Authentication credentials were not provided.")),
        (Some(k), Some(p)) if k.expose() != p => Err(error(StatusCode::FORBIDDEN, "Invalid API key.")),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    workflow_id: Option<String>,
    vendor_data: Option<String>,
    callback: Option<String>,
    metadata: Option<Value>,
    #[serde(flatten)]
    _rest: HashMap<String, Value>,
}

fn created_json(st: &St, s: &Session) -> Value {
    json!({
        "session_id": s.id,
        "session_number": s.number,
        "session_token": s.token,
        "url": format!("{}/session/{}", st.base, s.token),
        "status": s.status,
        "workflow_id": s.workflow_id,
        "workflow_version": 1,
        "vendor_data": s.vendor_data,
        "metadata": s.metadata,
        "callback": s.callback,
        "session_kind": "user",
    })
}

const UNFINISHED: &[&str] = &["Not Started", "In Progress"];

async fn create_session(State(st): State<St>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = gate(&st, &headers, "create_session").await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<CreateBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let Some(workflow_id) = body.workflow_id.filter(|w| !w.is_empty()) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"workflow_id": ["This field is required."]}))).into_response();
    };
    let mut sessions = st.sessions.lock().unwrap();
    // Didit answers a creation for a user with an unfinished session with that session.
    if let Some(v) = &body.vendor_data {
        let latest = st.by_vendor.lock().unwrap().get(&(v.clone(), workflow_id.clone())).cloned();
        if let Some(s) = latest.and_then(|id| sessions.get(&id)).filter(|s| UNFINISHED.contains(&s.status.as_str())) {
            return (StatusCode::CREATED, Json(created_json(&st, s))).into_response();
        }
    }
    let (id, token) = {
        let mut rng = st.rng.lock().unwrap();
        (uuid::Builder::from_random_bytes(rng.gen()).into_uuid().to_string(), hex::encode(rng.gen::<[u8; 16]>()))
    };
    let s = Session {
        id: id.clone(),
        number: 10_000 + sessions.len() as u64,
        token,
        workflow_id,
        vendor_data: body.vendor_data,
        metadata: body.metadata,
        callback: body.callback,
        status: "Not Started".into(),
        decision: json!({}),
        created_at: idstream_server::util::unix_now(),
    };
    let answer = created_json(&st, &s);
    if let Some(v) = &s.vendor_data {
        st.by_vendor.lock().unwrap().insert((v.clone(), s.workflow_id.clone()), id.clone());
    }
    sessions.insert(id.clone(), s);
    drop(sessions);
    if let Some(after) = st.cfg.complete_after {
        let st = st.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = st.stop.cancelled() => {}
                _ = tokio::time::sleep(after) => { let _ = finish(&st, &id, None).await; }
            }
        });
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// The decision answer: top-level status and feature arrays, as Didit's retrieve call.
fn decision_json(s: &Session) -> Value {
    let mut v = json!({
        "session_id": s.id,
        "session_number": s.number,
        "session_kind": "user",
        "status": s.status,
        "workflow_id": s.workflow_id,
        "vendor_data": s.vendor_data,
        "metadata": s.metadata,
        "callback": s.callback,
        "created_at": idstream_core::event::rfc3339(s.created_at),
    });
    if let (Value::Object(out), Value::Object(d)) = (&mut v, &s.decision) {
        for (k, val) in d {
            if !matches!(k.as_str(), "session_id" | "status") {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    v
}

async fn get_decision(State(st): State<St>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = gate(&st, &headers, "get_decision").await {
        return r;
    }
    match st.sessions.lock().unwrap().get(&id) {
        Some(s) => Json(decision_json(s)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not found."),
    }
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    new_status: String,
    comment: Option<String>,
}

async fn update_status(
    State(st): State<St>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = gate(&st, &headers, "update_status").await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<UpdateBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "`new_status` is required");
    };
    if !["Approved", "Declined", "Resubmitted"].contains(&body.new_status.as_str()) {
        return error(StatusCode::BAD_REQUEST, "new_status must be Approved, Declined or Resubmitted");
    }
    let snapshot = {
        let mut sessions = st.sessions.lock().unwrap();
        let Some(s) = sessions.get_mut(&id) else { return error(StatusCode::NOT_FOUND, "Not found.") };
        if !["Approved", "Declined", "In Review", "Kyc Expired", "Abandoned", "Resubmitted"]
            .contains(&s.status.as_str())
        {
            return error(StatusCode::BAD_REQUEST, "the session's status cannot be changed now");
        }
        if s.status == body.new_status {
            // Nothing changes and no webhook is sent.
            return Json(json!({ "session_id": id })).into_response();
        }
        s.status = body.new_status.clone();
        // Didit keeps the change in the decision's `reviews` (who, what, the comment).
        if let Value::Object(d) = &mut s.decision {
            let review = json!({
                "user": "api",
                "new_status": body.new_status,
                "comment": body.comment,
                "created_at": idstream_core::event::rfc3339(idstream_server::util::unix_now()),
            });
            match d.get_mut("reviews").and_then(Value::as_array_mut) {
                Some(list) => list.push(review),
                None => {
                    d.insert("reviews".into(), json!([review]));
                }
            }
        }
        s.clone()
    };
    deliver(st.clone(), vec![snapshot]);
    Json(json!({ "session_id": id })).into_response()
}

async fn delete_session(State(st): State<St>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = gate(&st, &headers, "delete_session").await {
        return r;
    }
    match st.sessions.lock().unwrap().remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "Not found."),
    }
}

async fn hosted_page(State(st): State<St>, Path(token): Path<String>) -> Response {
    let found =
        st.sessions.lock().unwrap().values().find(|s| s.token == token).map(|s| (s.id.clone(), s.status.clone()));
    match found {
        None => (StatusCode::NOT_FOUND, Html("<h1>No such session</h1>".to_owned())).into_response(),
        Some((id, status)) => Html(format!(
            "<!doctype html><title>idstream sandbox</title><h1>idstream sandbox — verification</h1>\
             <p>Session <code>{id}</code>, status <b>{status}</b>. This page stands in for Didit's hosted flow.</p>\
             <form method=post action=\"/session/{token}/finish\"><button>Finish the verification</button></form>"
        ))
        .into_response(),
    }
}

async fn hosted_finish(State(st): State<St>, Path(token): Path<String>) -> Response {
    let id = st.sessions.lock().unwrap().values().find(|s| s.token == token).map(|s| s.id.clone());
    let Some(id) = id else {
        return (StatusCode::NOT_FOUND, Html("<h1>No such session</h1>".to_owned())).into_response();
    };
    match finish(&st, &id, None).await {
        Ok(s) => {
            Html(format!("<h1>Done</h1><p>Status: <b>{}</b>. The result was sent to the webhook URL.</p>", s["status"]))
                .into_response()
        }
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    /// A persona name (`honest`, `aml_hit`, ...).
    persona: Option<String>,
}

/// `POST /sandbox/sessions/{id}/complete`: the user finished; the result is decided and sent.
async fn complete(State(st): State<St>, Path(id): Path<String>, body: Option<Json<CompleteBody>>) -> Response {
    let persona = match body.and_then(|b| b.0.persona).map(|p| p.parse::<Persona>()).transpose() {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match finish(&st, &id, persona).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// A persona (the one asked for, the sandbox's `--persona`, or one drawn from the simulator's
/// mix with the seeded generator) and the simulator's result webhook body for it.
fn simulated_result(st: &St, persona: Option<Persona>) -> (Persona, Value) {
    let (persona, sub_seed) = {
        let mut rng = st.rng.lock().unwrap();
        let persona = persona.or(st.cfg.persona).unwrap_or_else(|| {
            let mix = personas::DEFAULT_MIX;
            let total: u32 = mix.iter().map(|(_, w)| w).sum();
            let mut pick = rng.gen_range(0..total);
            mix.iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map(|(p, _)| *p)
                .unwrap_or(Persona::Honest)
        });
        (persona, rng.gen::<u64>())
    };
    // The simulator's session for this persona: its last status webhook holds the result.
    let mut sim = SimConfig::new(sub_seed, 1, idstream_server::util::unix_now());
    sim.mix = Some(vec![(persona, 1)]);
    let last = personas::generate(&sim)
        .into_iter()
        .rfind(|d| d.webhook_type == "status.updated")
        .expect("a simulated session has a status webhook");
    (persona, serde_json::from_slice(&last.body).expect("the simulator writes JSON"))
}

/// Decides the session's result from a persona and delivers its webhooks (`In Progress`, then
/// the result).
async fn finish(st: &St, id: &str, persona: Option<Persona>) -> Result<Value, Response> {
    let (persona, body) = simulated_result(st, persona);
    let (progress, done) = {
        let mut sessions = st.sessions.lock().unwrap();
        let Some(s) = sessions.get_mut(id) else { return Err(error(StatusCode::NOT_FOUND, "Not found.")) };
        if !UNFINISHED.contains(&s.status.as_str()) {
            return Err(error(StatusCode::CONFLICT, "the session is finished already"));
        }
        s.status = "In Progress".into();
        let progress = s.clone();
        s.status = body["status"].as_str().unwrap_or("Approved").to_owned();
        let mut decision = body.get("decision").cloned().unwrap_or_else(|| json!({}));
        if let Value::Object(d) = &mut decision {
            d.insert("session_id".into(), Value::String(s.id.clone()));
            d.insert("status".into(), Value::String(s.status.clone()));
        }
        s.decision = decision;
        (progress, s.clone())
    };
    let answer = json!({ "session_id": done.id, "status": done.status, "persona": persona.name() });
    deliver(st.clone(), vec![progress, done]);
    Ok(answer)
}

/// Largest image Didit takes per file.
const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/heic", "image/webp", "image/tiff", "application/pdf"];

/// A field error in Django REST framework's shape, as Didit answers them.
fn field_error(field: &str, msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ field: [msg] }))).into_response()
}

/// `POST /v3/id-verification/`: the standalone ID verification. A multipart form with
/// `front_image` (required) and `back_image` (JPEG, PNG, WebP, TIFF or PDF, up to 5 MB each),
/// `perform_document_liveness`, `minimum_age` (1–120), `save_api_request`, `vendor_data`,
/// `metadata` (a JSON object) and the `*_action` options. The images are not looked at: the
/// report is the document check of a persona (the sandbox's `--persona`, `persona` in the form —
/// a sandbox extra — or one drawn with the seeded generator), with Didit's decision logic: any
/// warning of the unconditional-decline set (`DOCUMENT_EXPIRED`, `MINIMUM_AGE_NOT_MET`, ...)
/// declines, everything else approves.
async fn id_verification(State(st): State<St>, headers: HeaderMap, mut form: Multipart) -> Response {
    if let Err(r) = gate(&st, &headers, "id_verification").await {
        return r;
    }
    let (mut front, mut back) = (false, false);
    let mut minimum_age: Option<i64> = None;
    let mut vendor_data: Option<String> = None;
    let mut metadata: Option<Value> = None;
    let mut persona: Option<Persona> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed multipart body: {e}")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "front_image" | "back_image" => {
                let ok_type = field.content_type().is_some_and(|t| IMAGE_TYPES.contains(&t));
                let bytes = match field.bytes().await {
                    Ok(b) => b,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed multipart body: {e}")),
                };
                if bytes.is_empty() {
                    return field_error(&name, "The submitted file is empty.");
                }
                if bytes.len() > MAX_IMAGE_BYTES {
                    return field_error(&name, "The file is larger than 5 MB.");
                }
                if !ok_type {
                    return field_error(&name, "Allowed formats: JPEG, PNG, WebP, TIFF, PDF.");
                }
                if name == "front_image" {
                    front = true;
                } else {
                    back = true;
                }
            }
            _ => {
                let text = match field.text().await {
                    Ok(t) => t,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed multipart body: {e}")),
                };
                match name.as_str() {
                    "minimum_age" => match text.trim().parse::<i64>() {
                        Ok(a) if (1..=120).contains(&a) => minimum_age = Some(a),
                        _ => return field_error(&name, "Ensure this value is between 1 and 120."),
                    },
                    "vendor_data" => vendor_data = Some(text),
                    "metadata" => match serde_json::from_str::<Value>(&text) {
                        Ok(v @ Value::Object(_)) => metadata = Some(v),
                        _ => return field_error(&name, "Value must be valid JSON."),
                    },
                    "perform_document_liveness" | "save_api_request"
                        if !matches!(text.trim(), "true" | "false" | "True" | "False" | "1" | "0") =>
                    {
                        return field_error(&name, "Must be a valid boolean.");
                    }
                    "persona" => match text.parse::<Persona>() {
                        Ok(p) => persona = Some(p),
                        Err(e) => return field_error(&name, &e.to_string()),
                    },
                    // `*_action` options and anything newer: accepted.
                    _ => {}
                }
            }
        }
    }
    if !front {
        return field_error("front_image", "This field is required.");
    }
    let (persona, body) = simulated_result(&st, persona);
    let request_id = uuid::Builder::from_random_bytes(st.rng.lock().unwrap().gen()).into_uuid().to_string();
    Json(id_report(&body, persona, back, minimum_age, request_id, vendor_data, metadata)).into_response()
}

/// The standalone answer built from a simulated session's document check.
fn id_report(
    body: &Value,
    persona: Persona,
    back_image: bool,
    minimum_age: Option<i64>,
    request_id: String,
    vendor_data: Option<String>,
    metadata: Option<Value>,
) -> Value {
    const DECLINING: &[&str] = &[
        "DOCUMENT_EXPIRED",
        "MINIMUM_AGE_NOT_MET",
        "PORTRAIT_IMAGE_NOT_DETECTED",
        "SCREEN_CAPTURE_DETECTED",
        "PRINTED_COPY_DETECTED",
        "PORTRAIT_MANIPULATION_DETECTED",
        "NAME_NOT_DETECTED",
        "DATE_OF_BIRTH_NOT_DETECTED",
        "DOCUMENT_NUMBER_NOT_DETECTED",
    ];
    let mut id = body["decision"]["id_verifications"].get(0).cloned().unwrap_or_else(|| json!({"warnings": []}));
    if let Value::Object(m) = &mut id {
        m.remove("node_id");
        if !back_image {
            // Without the back side, what only it carries is not read.
            m.remove("personal_number");
        }
        for k in ["address", "parsed_address"] {
            m.entry(k).or_insert(Value::Null);
        }
    }
    let age = id["age"].as_i64();
    if let (Some(min), Some(age)) = (minimum_age, age) {
        if age < min {
            if let Some(w) = id["warnings"].as_array_mut() {
                w.push(json!({
                    "risk": "MINIMUM_AGE_NOT_MET",
                    "log_type": "error",
                    "short_description": "Minimum age not met",
                    "long_description": format!("The document holder is {age}, younger than the minimum age of {min}."),
                    "additional_data": {"age": age, "minimum_age": min},
                }));
            }
        }
    }
    let declined = id["warnings"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|w| w["risk"].as_str().is_some_and(|r| DECLINING.contains(&r))));
    id["status"] = json!(if declined { "Declined" } else { "Approved" });
    json!({
        "request_id": request_id,
        "id_verification": id,
        "vendor_data": vendor_data,
        "metadata": metadata,
        "created_at": idstream_core::event::rfc3339(idstream_server::util::unix_now()),
        // The sandbox's own: which persona the report was drawn from.
        "sandbox_persona": persona.name(),
    })
}

/// The signed v3 `status.updated` webhook of the session's current status.
fn webhook(s: &Session, now: i64, event_id: &str) -> Value {
    let mut v = json!({
        "event_id": event_id,
        "webhook_type": "status.updated",
        "timestamp": now,
        "created_at": s.created_at,
        "application_id": "00000000-0000-4000-8000-00000000a001",
        "environment": "sandbox",
        "session_id": s.id,
        "status": s.status,
        "workflow_id": s.workflow_id,
        "workflow_version": 1,
    });
    if let Some(vd) = &s.vendor_data {
        v["vendor_data"] = Value::String(vd.clone());
    }
    if let Some(m) = &s.metadata {
        v["metadata"] = m.clone();
    }
    if !UNFINISHED.contains(&s.status.as_str())
        && s.decision.is_object()
        && s.decision.as_object().is_some_and(|d| !d.is_empty())
    {
        let mut d = s.decision.clone();
        d["status"] = Value::String(s.status.clone());
        v["decision"] = d;
    }
    v
}

/// Sends the sessions' webhooks in the background, one after the other in the given order
/// (a session's `In Progress` before its result), each with Didit's retries; a share is
/// dropped when told to.
fn deliver(st: St, batch: Vec<Session>) {
    tokio::spawn(async move {
        for s in batch {
            deliver_one(&st, &s).await;
        }
    });
}

async fn deliver_one(st: &St, s: &Session) {
    let drop_rate = st.faults.lock().unwrap().drop_webhooks.unwrap_or(st.cfg.drop_webhooks);
    let dropped = drop_rate > 0.0 && st.rng.lock().unwrap().gen_bool(drop_rate.min(1.0));
    if dropped {
        st.stats.lock().unwrap().webhooks_dropped += 1;
        return;
    }
    let Some(url) = st.webhook_url.lock().unwrap().clone() else { return };
    let event_id = uuid::Builder::from_random_bytes(st.rng.lock().unwrap().gen()).into_uuid().to_string();
    let mut attempt = 0;
    loop {
        let now = idstream_server::util::unix_now();
        let body = personas::didit_body_bytes(&webhook(s, now, &event_id));
        let secret = &st.cfg.webhook_secret;
        let v2 = didit::sign_v2(secret, &body).expect("our own body is canonicalisable");
        let simple = didit::sign_simple(secret, now, &s.id, &s.status, "status.updated");
        let sent = st
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-signature-v2", v2)
            .header("x-signature", didit::sign_raw(secret, &body))
            .header("x-signature-simple", simple)
            .header("x-timestamp", now.to_string())
            .body(body)
            .send()
            .await;
        // Didit retries 5xx, 404 and no answer; other 4xx are final.
        let (ok, retry) = match &sent {
            Ok(r) => (r.status().is_success(), r.status().is_server_error() || r.status() == StatusCode::NOT_FOUND),
            Err(_) => (false, true),
        };
        if ok {
            st.stats.lock().unwrap().webhooks_delivered += 1;
            return;
        }
        if !retry || attempt >= st.cfg.retry_delays.len() {
            st.stats.lock().unwrap().webhooks_failed += 1;
            return;
        }
        let wait = st.cfg.retry_delays[attempt];
        attempt += 1;
        tokio::select! {
            _ = st.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn set_faults(State(st): State<St>, Json(f): Json<Faults>) -> Response {
    if f.drop_webhooks.is_some_and(|d| !(0.0..=1.0).contains(&d)) {
        return error(StatusCode::BAD_REQUEST, "drop_webhooks must be between 0 and 1");
    }
    *st.faults.lock().unwrap() = f.clone();
    Json(f).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookUrl {
    url: String,
}

async fn set_webhook_url(State(st): State<St>, Json(w): Json<WebhookUrl>) -> Response {
    *st.webhook_url.lock().unwrap() = Some(w.url);
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(st): State<St>) -> Json<Stats> {
    Json(st.stats.lock().unwrap().clone())
}
