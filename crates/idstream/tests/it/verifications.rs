//! Verifications started through idstream, against `idstream sandbox` (our local Didit) over
//! real HTTP: create → the user finishes → signed webhook → decision; provider failures
//! (502/504, nothing recorded), retries honouring `Retry-After`, the circuit breaker, the
//! reconciliation of dropped webhooks, and results arriving by poll and by webhook in either
//! order giving one event and one decision.

use std::time::{Duration, Instant};

use idstream_server::state::hash_api_key;
use idstream_server::stream::auth::{mint_hs256, Claims};
use idstream_tools::sandbox::{self, SandboxConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

pub const DIDIT_API_KEY: &str = "sandbox-didit-api-key-0123456789";
pub const KEY_SVC: &str = "key-acme-service";
const KEY_VIEWER: &str = "key-acme-viewer";
const JWT_SECRET: &str = "verifications-test-hs256-secret-0123456789";

/// A running `idstream sandbox`.
pub struct Sandbox {
    pub base: String,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sandbox {
    pub async fn start() -> Sandbox {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let cfg = SandboxConfig::for_tests(SECRET_NEW, DIDIT_API_KEY);
        tokio::spawn(sandbox::serve(listener, cfg, stop.clone()));
        Sandbox { base, client: reqwest::Client::new(), stop }
    }

    pub async fn control(&self, method: &str, path: &str, body: Value) -> Value {
        let r = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "sandbox {path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    pub async fn webhooks_to(&self, srv: &TestServer) {
        self.control("PUT", "/sandbox/webhook-url", json!({"url": srv.url("/webhooks/didit-main")})).await;
    }

    pub async fn faults(&self, f: Value) {
        self.control("PUT", "/sandbox/faults", f).await;
    }

    pub async fn complete(&self, session: &str, persona: &str) -> Value {
        self.control("POST", &format!("/sandbox/sessions/{session}/complete"), json!({"persona": persona})).await
    }

    pub async fn stats(&self) -> Value {
        self.client.get(format!("{}/sandbox/stats", self.base)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn calls(&self, call: &str) -> u64 {
        self.stats().await["calls"][call].as_u64().unwrap_or(0)
    }

    /// Didit's decision answer, as idstream's client gets it.
    pub async fn decision(&self, session: &str) -> Value {
        self.client
            .get(format!("{}/v3/session/{session}/decision/", self.base))
            .header("x-api-key", DIDIT_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A server whose tenant `acme` has the sandbox as its Didit account; `provider` and `extra`
/// add keys to `[[providers]]` and to the file.
pub fn config(sandbox: &Sandbox, provider: &str, extra: &str) -> String {
    base_config(
        &[SECRET_NEW],
        &format!(
            r#"
[[api_keys]]
name = "svc"
tenant = "acme"
role = "service"
sha256 = "{svc}"

[[api_keys]]
name = "viewer"
tenant = "acme"
role = "viewer"
sha256 = "{viewer}"

[rate_limits]
enabled = false

[[providers]]
id = "didit"
kind = "didit"
api_key = "{DIDIT_API_KEY}"
base_url = "{base}"
workflow_id = "wf-default"
source = "didit-main"
backoff_first_ms = 20
backoff_max_ms = 100
{provider}
{extra}
"#,
            svc = hash_api_key(KEY_SVC),
            viewer = hash_api_key(KEY_VIEWER),
            base = sandbox.base,
        ),
    )
}

/// The config with the provider account named `id` (metrics are labelled by it).
fn with_provider_id(cfg: &str, id: &str) -> String {
    cfg.replace("id = \"didit\"\nkind", &format!("id = \"{id}\"\nkind"))
}

pub async fn create(srv: &TestServer, body: Value) -> (u16, Value) {
    srv.call("POST", "/v1/verifications", Some(KEY_SVC), Some(serde_json::to_vec(&body).unwrap())).await
}

/// Waits (up to 20 s) until `check` holds for `GET /v1/verifications/{id}`.
pub async fn wait_for(srv: &TestServer, session: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = srv.get(&format!("/v1/verifications/{session}"), Some(KEY_SVC)).await;
        assert_eq!(s, 200, "{v}");
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session's events of `kind` in the log.
async fn events_of(srv: &TestServer, session: &str, kind: &str) -> Vec<Value> {
    srv.all_events().await.into_iter().filter(|e| e["kind"] == kind && e["session_id"] == session).collect()
}

/// The session's result events (verification events with a result status).
async fn results_of(srv: &TestServer, session: &str) -> Vec<Value> {
    events_of(srv, session, "verification.status_updated")
        .await
        .into_iter()
        .filter(|e| e["provider_status"] != "In Progress" && e["provider_status"] != "Not Started")
        .collect()
}

#[tokio::test]
async fn a_hosted_session_runs_end_to_end_against_the_sandbox() {
    let sb = Sandbox::start().await;
    let stream = format!("[stream]\nhs256_secrets = [\"{JWT_SECRET}\"]\n");
    let srv = TestServer::start_with(&config(&sb, "", &stream)).await;
    sb.webhooks_to(&srv).await;
    // An attribute set before is kept; expected details are merged in beside it.
    let (s, _) = srv.call("PUT", "/v1/subjects/u-1", Some(KEY_SVC), Some(br#"{"plan":"gold"}"#.to_vec())).await;
    assert_eq!(s, 200);

    let (s, v) = create(
        &srv,
        json!({"subject": "u-1", "callback": "https://app.example/done", "metadata": {"order": 7},
               "expected_details": {"first_name": "Ana", "date_of_birth": "1990-01-02"}, "language": "en"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let session = v["session_id"].as_str().unwrap().to_owned();
    assert!(v["url"].as_str().unwrap().starts_with(&format!("{}/session/", sb.base)), "{v}");
    assert!(!v["session_token"].as_str().unwrap().is_empty());
    assert_eq!(v["status"], "Not Started");
    assert_eq!(v["workflow_id"], "wf-default");

    // Recorded before the answer: visible at once, in the session's history and the log.
    let (s, sess) = srv.get(&format!("/v1/sessions/{session}"), Some(KEY_SVC)).await;
    assert_eq!(s, 200, "{sess}");
    assert_eq!(sess["history"][0]["kind"], "session.created", "{sess}");
    assert_eq!(sess["history"][0]["subject"], "u-1");
    let created = events_of(&srv, &session, "session.created").await;
    assert_eq!(created.len(), 1);
    assert!(!created[0].to_string().contains(v["session_token"].as_str().unwrap()), "the token is not logged");
    let (_, subj) = srv.get("/v1/subjects/u-1", Some(KEY_SVC)).await;
    assert_eq!(
        subj["attributes"],
        json!({"plan": "gold", "expected_first_name": "Ana", "expected_date_of_birth": "1990-01-02"})
    );

    // The user finishes; the sandbox sends its signed webhooks; idstream decides.
    let done = sb.complete(&session, "honest").await;
    assert_eq!(done["status"], "Approved");
    let v = wait_for(&srv, &session, "a decision", |v| v["outcome"].is_string()).await;
    assert_eq!(v["result"]["obtained_by"], "webhook", "{v}");
    assert_eq!(v["result"]["provider_status"], "Approved");
    assert_eq!(v["subject"], "u-1");
    srv.decided().await;
    assert_eq!(events_of(&srv, &session, "decision.made").await.len(), 1);
    assert_eq!(sb.stats().await["webhooks_delivered"], 2, "In Progress, then the result");

    // The whole story on a live stream of the session, in order.
    let claims = Claims {
        sub: "test".into(),
        tenant: "acme".into(),
        kinds: vec!["*".into()],
        exp: (now() + 300) as u64,
        nbf: None,
        iat: None,
    };
    let tok = mint_hs256(JWT_SECRET.as_bytes(), &claims);
    let mut resp = srv
        .client
        .get(srv.url(&format!("/v1/stream/sse?after=0&session_id={session}&token={tok}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("decision.made") {
        let chunk = tokio::time::timeout_at(deadline.into(), resp.chunk()).await.expect("stream stalled").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk.expect("stream ended")));
    }
    let kinds: Vec<&str> = ["session.created", "\"In Progress\"", "\"Approved\"", "decision.made"]
        .into_iter()
        .filter(|k| text.contains(k))
        .collect();
    assert_eq!(kinds.len(), 4, "{text}");
    let at = |k: &str| text.find(k).unwrap();
    assert!(at("session.created") < at("\"In Progress\"") && at("\"Approved\"") < at("decision.made"), "{text}");

    // Only service and admin keys start verifications.
    let (s, v) = srv.call("POST", "/v1/verifications", Some(KEY_VIEWER), Some(br#"{"subject":"u-2"}"#.to_vec())).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(sb.calls("create_session").await, 1);
    // Bad input is refused before the provider is called.
    for bad in
        [json!({"subject": ""}), json!({"subject": "u", "callback": "ftp://x"}), json!({"subject": "u", "nope": 1})]
    {
        let (s, v) = create(&srv, bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    assert_eq!(sb.calls("create_session").await, 1);
}

#[tokio::test]
async fn provider_failures_answer_502_or_504_and_record_nothing() {
    let sb = Sandbox::start().await;
    let srv = TestServer::start_with(&config(&sb, "timeout_ms = 400\nbreaker_failures = 100", "")).await;
    let head = srv.state.log.head();

    sb.faults(json!({"fail_next": 100, "fail_status": 500})).await;
    let (s, v) = create(&srv, json!({"subject": "u-1"})).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"], "provider_unavailable");
    assert!(v["message"].as_str().unwrap().contains("nothing was recorded"), "{v}");
    assert_eq!(sb.calls("create_session").await, 3, "the first attempt and max_retries = 2 retries");

    // Slow: a creation that timed out is not retried (it may have happened).
    sb.faults(json!({"delay_ms": 1500})).await;
    let (s, v) = create(&srv, json!({"subject": "u-1"})).await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["error"], "provider_timeout");
    assert_eq!(sb.calls("create_session").await, 4);

    // Didit refusing the call (a wrong API key here) is a 502 too, never retried.
    sb.faults(json!({"fail_next": 1, "fail_status": 403})).await;
    let (s, v) = create(&srv, json!({"subject": "u-1"})).await;
    assert_eq!((s, v["error"].as_str()), (502, Some("provider_rejected")), "{v}");
    assert_eq!(sb.calls("create_session").await, 5);

    assert_eq!(srv.state.log.head(), head, "nothing was recorded");
    assert!(!v.to_string().contains(DIDIT_API_KEY));
    let metrics = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains(DIDIT_API_KEY));
    for outcome in ["unavailable", "timeout", "rejected"] {
        assert!(
            metrics.contains(&format!(
                "idstream_provider_calls_total{{provider=\"didit\",call=\"create_session\",outcome=\"{outcome}\"}}"
            )) || metrics.lines().any(
                |l| l.starts_with("idstream_provider_calls_total") && l.contains(&format!("outcome=\"{outcome}\""))
            ),
            "no {outcome} in metrics"
        );
    }
}

#[tokio::test]
async fn retries_honour_retry_after_on_429() {
    let sb = Sandbox::start().await;
    let srv = TestServer::start_with(&config(&sb, "max_retry_after_secs = 3", "")).await;
    sb.faults(json!({"fail_next": 1, "fail_status": 429, "retry_after_secs": 1})).await;
    let started = Instant::now();
    let (s, v) = create(&srv, json!({"subject": "u-1"})).await;
    assert_eq!(s, 201, "{v}");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited what Retry-After asked");
    assert_eq!(sb.calls("create_session").await, 2);

    // A Retry-After longer than max_retry_after_secs is not waited for.
    sb.faults(json!({"fail_next": 5, "fail_status": 429, "retry_after_secs": 60})).await;
    let started = Instant::now();
    let (s, v) = create(&srv, json!({"subject": "u-2"})).await;
    assert_eq!((s, v["error"].as_str()), (502, Some("provider_rate_limited")), "{v}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(sb.calls("create_session").await, 3);
}

#[tokio::test]
async fn the_circuit_breaker_opens_and_recovers() {
    let sb = Sandbox::start().await;
    let cfg = config(&sb, "max_retries = 0\nbreaker_failures = 2\nbreaker_open_secs = 1", "");
    let srv = TestServer::start_with(&with_provider_id(&cfg, "didit-breaker")).await;
    sb.faults(json!({"fail_next": 1000, "fail_status": 503})).await;
    for _ in 0..2 {
        let (s, v) = create(&srv, json!({"subject": "u-1"})).await;
        assert_eq!((s, v["error"].as_str()), (502, Some("provider_unavailable")), "{v}");
    }
    // Open: answered at once, the provider is not called.
    let (s, v) = create(&srv, json!({"subject": "u-1"})).await;
    assert_eq!((s, v["error"].as_str()), (502, Some("provider_circuit_open")), "{v}");
    assert_eq!(sb.calls("create_session").await, 2);
    let metrics = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("idstream_provider_circuit_open{provider=\"didit-breaker\"} 1"), "{metrics}");

    // After breaker_open_secs one trial goes out; the provider is back, the circuit closes.
    sb.faults(json!({})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, v) = create(&srv, json!({"subject": "u-1"})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = create(&srv, json!({"subject": "u-3"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(sb.calls("create_session").await, 4);
}

#[tokio::test]
async fn an_idempotency_key_retry_makes_one_provider_call() {
    let sb = Sandbox::start().await;
    let srv = TestServer::start_with(&config(&sb, "", "")).await;
    let send = || {
        srv.client
            .post(srv.url("/v1/verifications"))
            .bearer_auth(KEY_SVC)
            .header("idempotency-key", "create-u-9")
            .json(&json!({"subject": "u-9"}))
            .send()
    };
    let a = send().await.unwrap();
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await.unwrap();
    let b = send().await.unwrap();
    assert_eq!(b.status(), 201);
    assert_eq!(b.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let b: Value = b.json().await.unwrap();
    assert_eq!(a["session_id"], b["session_id"]);
    assert_eq!(sb.calls("create_session").await, 1);
}

/// The signed `status.updated` webhook Didit would send for the sandbox's current result.
fn late_webhook(decision: &Value) -> Vec<u8> {
    let mut d = decision.clone();
    for k in ["session_number", "session_kind", "workflow_id", "vendor_data", "metadata", "callback", "created_at"] {
        d.as_object_mut().unwrap().remove(k);
    }
    serde_json::to_vec(&json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "webhook_type": "status.updated",
        "timestamp": now(),
        "created_at": now(),
        "environment": "sandbox",
        "session_id": decision["session_id"],
        "status": decision["status"],
        "workflow_id": decision["workflow_id"],
        "vendor_data": decision["vendor_data"],
        "decision": d,
    }))
    .unwrap()
}

#[tokio::test]
async fn dropped_webhooks_are_recovered_once_whatever_the_order() {
    dropped_webhooks_case("", "didit-emb").await;
}

/// The same on NATS JetStream + PostgreSQL.
#[tokio::test]
#[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
async fn dropped_webhooks_are_recovered_once_on_nats_and_postgres() {
    let b = crate::backends::ScaleOut::fresh("verif").await;
    dropped_webhooks_case(&b.toml(), "didit-nats").await;
}

/// Metrics are process-wide: each test names its provider account `pid`, so its counters are
/// its own.
async fn dropped_webhooks_case(backend: &str, pid: &str) {
    let sb = Sandbox::start().await;
    let recon =
        format!("[verifications]\nreconcile = true\nreconcile_after_secs = 1\nreconcile_interval_secs = 1\n{backend}");
    let srv = TestServer::start_with(&with_provider_id(&config(&sb, "", &recon), pid)).await;
    sb.webhooks_to(&srv).await;

    // 1. Every webhook lost: reconciliation polls and stores the result, once.
    sb.faults(json!({"drop_webhooks": 1.0})).await;
    let (s, v) = create(&srv, json!({"subject": "u-lost"})).await;
    assert_eq!(s, 201, "{v}");
    let lost = v["session_id"].as_str().unwrap().to_owned();
    assert!(sb.complete(&lost, "aml_hit").await["status"].is_string());
    let v = wait_for(&srv, &lost, "a recovered decision", |v| v["outcome"].is_string()).await;
    assert_eq!(v["result"]["obtained_by"], "poll", "{v}");
    assert_eq!(sb.stats().await["webhooks_dropped"], 2);
    let metrics = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let recovered = format!("idstream_reconcile_recovered_total{{provider=\"{pid}\"}} 1");
    assert!(metrics.contains(&recovered), "{metrics}");

    // Poll first, then the webhook after all (Didit's late retry, with its own event id and
    // timestamp): the result key matches, so it is a duplicate and nothing new is stored.
    let body = late_webhook(&sb.decision(&lost).await);
    let (s, a) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
    assert_eq!((s, a["duplicate"].as_bool()), (200, Some(true)), "{a}");
    // Reconciliation keeps running and polls nothing more for it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    srv.decided().await;
    assert_eq!(results_of(&srv, &lost).await.len(), 1);
    assert_eq!(events_of(&srv, &lost, "decision.made").await.len(), 1);

    // 2. Webhook first, then a poll (a refresh): one event, one decision.
    sb.faults(json!({})).await;
    let (s, v) = create(&srv, json!({"subject": "u-ok"})).await;
    assert_eq!(s, 201, "{v}");
    let ok = v["session_id"].as_str().unwrap().to_owned();
    sb.complete(&ok, "honest").await;
    wait_for(&srv, &ok, "a decision", |v| v["outcome"].is_string()).await;
    let (s, v) = srv.get(&format!("/v1/verifications/{ok}?refresh=true"), Some(KEY_SVC)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["provider_view"]["status"], "Approved");
    assert_eq!(v["provider_view"]["stored_now"], false, "{v}");
    assert_eq!(v["result"]["obtained_by"], "webhook");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    srv.decided().await;
    assert_eq!(results_of(&srv, &ok).await.len(), 1);
    assert_eq!(events_of(&srv, &ok, "decision.made").await.len(), 1);
    // Nothing was polled for a session whose result came by webhook in time (the reconciler
    // sees it within a tick, well under reconcile_after_secs... or one poll at most, which
    // stores nothing).
    let metrics = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&recovered), "still one: {metrics}");
}
