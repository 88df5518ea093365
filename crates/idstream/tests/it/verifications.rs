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

const KEY_ANALYST: &str = "key-ana";

/// A server whose provider account pushes analysts' resolutions back, with an analyst key and
/// quick push retries.
fn push_back_config(sb: &Sandbox, provider: &str, backend: &str) -> String {
    config(
        sb,
        &format!("push_back = true\n{provider}"),
        &format!(
            "{}\n[verifications]\nreconcile = false\npush_back_retry_first_secs = 1\npush_back_retry_max_secs = 1\n{backend}",
            role_key("ana", "acme", "analyst")
        ),
    )
}

/// Starts a verification that Didit puts `In Review` (an AML hit), and waits for idstream's
/// review case; answers the session and the case's id.
async fn session_in_review(srv: &TestServer, sb: &Sandbox, subject: &str) -> (String, String) {
    let (s, v) = create(srv, json!({"subject": subject})).await;
    assert_eq!(s, 201, "{v}");
    let session = v["session_id"].as_str().unwrap().to_owned();
    assert_eq!(sb.complete(&session, "aml_hit").await["status"], "In Review");
    let v = wait_for(srv, &session, "a review decision", |v| v["outcome"].is_string()).await;
    assert_eq!(v["outcome"], "review", "{v}");
    let (s, v) = srv.get(&format!("/v1/reviews?session_id={session}"), Some(KEY_ANALYST)).await;
    assert_eq!(s, 200, "{v}");
    let review = v["reviews"][0]["id"].as_str().expect("an open case").to_owned();
    let (s, v) =
        srv.call("POST", &format!("/v1/reviews/{review}/claim"), Some(KEY_ANALYST), json_body(json!({}))).await;
    assert_eq!(s, 200, "{v}");
    (session, review)
}

/// Waits (up to 20 s) for the session's `review.pushed_back` event.
async fn pushed_back(srv: &TestServer, session: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = events_of(srv, session, "review.pushed_back").await.into_iter().next() {
            return e;
        }
        assert!(Instant::now() < deadline, "no review.pushed_back for {session}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the session's result events include one with this provider status.
async fn wait_result(srv: &TestServer, session: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !results_of(srv, session).await.iter().any(|e| e["provider_status"] == status) {
        assert!(Instant::now() < deadline, "no {status} result for {session}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The analyst approves; idstream sets Approved at Didit with the note; Didit's status webhook
/// for that change (the echo) is stored, and decided by nobody: the analyst's decision stays
/// the session's last, and there are exactly two decisions (the rules' review, the analyst's).
#[tokio::test]
async fn an_analysts_push_back_and_its_echo_give_no_second_decision() {
    push_back_echo_case("", "didit-push").await;
}

/// The same on NATS JetStream + PostgreSQL.
#[tokio::test]
#[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
async fn an_analysts_push_back_and_its_echo_give_no_second_decision_on_nats_and_postgres() {
    let b = crate::backends::ScaleOut::fresh("pushback").await;
    push_back_echo_case(&b.toml(), "didit-push-nats").await;
}

async fn push_back_echo_case(backend: &str, pid: &str) {
    let sb = Sandbox::start().await;
    let srv = TestServer::start_with(&with_provider_id(&push_back_config(&sb, "", backend), pid)).await;
    sb.webhooks_to(&srv).await;
    let (session, review) = session_in_review(&srv, &sb, "u-pb").await;

    let (s, v) = srv
        .call(
            "POST",
            &format!("/v1/reviews/{review}/resolve"),
            Some(KEY_ANALYST),
            json_body(json!({"outcome": "approve", "note": "sanctions hit is a namesake"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["outcome"], "approve");

    // Pushed: Didit now says Approved, with the note as the review comment.
    let pushed = pushed_back(&srv, &session).await;
    assert_eq!(pushed["result"], "pushed", "{pushed}");
    assert_eq!(pushed["provider_status"], "Approved");
    assert_eq!(pushed["provider"], pid);
    assert_eq!(pushed["review_id"], review.as_str());
    assert_eq!(pushed["attempts"], 1);
    let at_didit = sb.decision(&session).await;
    assert_eq!(at_didit["status"], "Approved");
    assert_eq!(at_didit["reviews"][0]["comment"], "sanctions hit is a namesake", "{at_didit}");
    assert_eq!(sb.calls("update_status").await, 1);

    // The echo arrives as a new result (Approved) and is not decided.
    wait_result(&srv, &session, "Approved").await;
    srv.decided().await;
    let decisions = events_of(&srv, &session, "decision.made").await;
    assert_eq!(decisions.len(), 2, "the rules' review and the analyst's approval only: {decisions:?}");
    assert_eq!(decisions[0]["outcome"], "review");
    assert_eq!(decisions[1]["outcome"], "approve");
    assert!(decisions[1]["decided_by"].as_str().unwrap().starts_with("review:"), "{decisions:?}");
    let (s, v) = srv.get(&format!("/v1/sessions/{session}"), Some(KEY_SVC)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "approved", "{v}");
    assert_eq!(v["session"]["outcome"], "approve");
    assert_eq!(v["session"]["decision_id"], decisions[1]["decision_id"], "the analyst's decision is the last");
    assert_eq!(v["session"]["provider_status"], "Approved", "the echo is recorded");
    let metrics = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let counted = format!("idstream_push_back_total{{provider=\"{pid}\",outcome=\"pushed\"}} 1");
    assert!(metrics.contains(&counted), "{metrics}");

    // A late redelivery of the echo is a duplicate; still two decisions, one push.
    let body = late_webhook(&sb.decision(&session).await);
    let (s, a) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
    assert_eq!((s, a["duplicate"].as_bool()), (200, Some(true)), "{a}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    srv.decided().await;
    assert_eq!(events_of(&srv, &session, "decision.made").await.len(), 2);
    assert_eq!(events_of(&srv, &session, "review.pushed_back").await.len(), 1);
    assert_eq!(sb.calls("update_status").await, 1);

    // Didit disagreeing later (its own reviewer declines in its console) is no echo: that
    // result is decided as usual.
    let r = reqwest::Client::new()
        .patch(format!("{}/v3/session/{session}/update-status/", sb.base))
        .header("x-api-key", DIDIT_API_KEY)
        .json(&json!({"new_status": "Declined", "comment": "console"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_result(&srv, &session, "Declined").await;
    srv.decided().await;
    let decisions = events_of(&srv, &session, "decision.made").await;
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(decisions[2]["decided_by"], "rules");
}

/// Didit is down when the analyst resolves: the resolution is answered at once and stands; the
/// push is retried (also across a restart of idstream) until Didit takes it, and its echo gives
/// no second decision.
#[tokio::test]
async fn push_back_with_the_provider_down_does_not_lose_the_resolution() {
    let sb = Sandbox::start().await;
    let cfg = with_provider_id(&push_back_config(&sb, "max_retries = 0\nbreaker_failures = 1000", ""), "didit-down");
    let srv = TestServer::start_with(&cfg).await;
    sb.webhooks_to(&srv).await;
    let (session, review) = session_in_review(&srv, &sb, "u-down").await;

    sb.faults(json!({"fail_next": 100000, "fail_status": 503})).await;
    let started = Instant::now();
    let (s, v) = srv
        .call(
            "POST",
            &format!("/v1/reviews/{review}/resolve"),
            Some(KEY_ANALYST),
            json_body(json!({"outcome": "decline", "note": "document photo is a screen capture"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(started.elapsed() < Duration::from_secs(2), "the resolution does not wait for the provider");
    let decision = v["decision"]["id"].as_str().unwrap().to_owned();

    // Retried while Didit is down; nothing recorded as pushed; the analyst's decision stands.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sb.calls("update_status").await < 2 {
        assert!(Instant::now() < deadline, "push-back is not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(events_of(&srv, &session, "review.pushed_back").await.is_empty());
    let (_, v) = srv.get(&format!("/v1/sessions/{session}"), Some(KEY_SVC)).await;
    assert_eq!((v["state"].as_str(), v["session"]["decision_id"].as_str()), (Some("declined"), Some(&*decision)));
    let metrics = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("idstream_push_back_total{provider=\"didit-down\",outcome=\"retry\"}"), "{metrics}");

    // idstream restarts (same data, same address) while Didit is still down; then Didit is back.
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let dir = srv.stop().await;
    let srv = TestServer::start_at(dir, &cfg, &addr).await;
    let before = sb.calls("update_status").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sb.calls("update_status").await == before {
        assert!(Instant::now() < deadline, "the restarted node does not retry the pending push");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sb.faults(json!({})).await;
    let pushed = pushed_back(&srv, &session).await;
    assert_eq!(pushed["result"], "pushed", "{pushed}");
    assert_eq!(pushed["decision_id"], decision.as_str());
    assert_eq!(pushed["provider_status"], "Declined");
    assert!(pushed["attempts"].as_u64().unwrap() >= 1, "{pushed}");
    assert_eq!(sb.decision(&session).await["status"], "Declined");

    wait_result(&srv, &session, "Declined").await;
    srv.decided().await;
    let decisions = events_of(&srv, &session, "decision.made").await;
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let (_, v) = srv.get(&format!("/v1/sessions/{session}"), Some(KEY_SVC)).await;
    assert_eq!(v["session"]["decision_id"], decision.as_str(), "{v}");
    assert_eq!(v["session"]["provider_status"], "Declined");
    assert_eq!(events_of(&srv, &session, "review.pushed_back").await.len(), 1);
}

/// A push Didit refuses (the session cannot change status now) is recorded as failed, once,
/// and not retried.
#[tokio::test]
async fn a_refused_push_back_is_recorded_as_failed() {
    let sb = Sandbox::start().await;
    let srv = TestServer::start_with(&with_provider_id(&push_back_config(&sb, "", ""), "didit-refused")).await;
    sb.webhooks_to(&srv).await;
    let (session, review) = session_in_review(&srv, &sb, "u-ref").await;
    sb.faults(json!({"fail_next": 1, "fail_status": 400})).await;
    let (s, v) = srv
        .call(
            "POST",
            &format!("/v1/reviews/{review}/resolve"),
            Some(KEY_ANALYST),
            json_body(json!({"outcome": "approve"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let pushed = pushed_back(&srv, &session).await;
    assert_eq!((pushed["result"].as_str(), pushed["error"].as_str()), (Some("failed"), Some("provider_rejected")));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sb.calls("update_status").await, 1, "not retried");
    assert_eq!(sb.decision(&session).await["status"], "In Review", "Didit keeps its own status");
}

/// A multipart `POST /v3/id-verification/` (front and back image) from idstream's client to the
/// sandbox: a persona's document report with Didit's decision logic, deterministic by seed;
/// bad uploads are refused; injected faults are retried like every other call.
#[tokio::test]
async fn the_standalone_id_verification_against_the_sandbox() {
    use idstream_server::provider::didit::{IdVerificationRequest, Upload};
    let sb = Sandbox::start().await;
    let cfg = idstream_server::config::ProviderConfig::didit(
        "didit-idv",
        idstream_core::signature::Secret::new(DIDIT_API_KEY),
        &sb.base,
        "wf",
        "didit-main",
    );
    let client = idstream_server::provider::DiditClient::new(&cfg, "acme");
    let image = |name: &str| Upload {
        file_name: format!("{name}.jpg"),
        content_type: "image/jpeg".into(),
        bytes: [0xFFu8, 0xD8, 0xFF, 0xE0].repeat(64 * 1024).into(),
    };
    let req = IdVerificationRequest {
        front_image: image("front"),
        back_image: Some(image("back")),
        perform_document_liveness: Some(true),
        minimum_age: None,
        save_api_request: Some(false),
        vendor_data: Some("u-idv".into()),
        metadata: Some(json!({"flow": "onboarding"})),
    };
    let first = client.id_verification(&req).await.unwrap();
    assert!(uuid::Uuid::parse_str(&first.request_id).is_ok(), "{first:?}");
    assert!(["Approved", "Declined"].contains(&first.status()), "{first:?}");
    assert_eq!(first.vendor_data.as_deref(), Some("u-idv"));
    for field in ["first_name", "last_name", "document_type", "document_number", "date_of_birth", "expiration_date"] {
        assert!(first.id_verification[field].is_string(), "{field}: {:?}", first.id_verification);
    }
    assert!(first.id_verification["warnings"].is_array());

    // Personas (a sandbox extra in the form) give Didit's decisions.
    let by_persona = |persona: &str, minimum_age: Option<u8>| {
        let form = reqwest::multipart::Form::new()
            .part(
                "front_image",
                reqwest::multipart::Part::bytes(vec![1u8; 300_000]).file_name("f.png").mime_str("image/png").unwrap(),
            )
            .text("persona", persona.to_owned());
        let form = match minimum_age {
            Some(a) => form.text("minimum_age", a.to_string()),
            None => form,
        };
        reqwest::Client::new()
            .post(format!("{}/v3/id-verification/", sb.base))
            .header("x-api-key", DIDIT_API_KEY)
            .multipart(form)
            .send()
    };
    let honest: Value = by_persona("honest", Some(18)).await.unwrap().json().await.unwrap();
    assert_eq!(honest["id_verification"]["status"], "Approved", "{honest}");
    let expired: Value = by_persona("expired_document", None).await.unwrap().json().await.unwrap();
    assert_eq!(expired["id_verification"]["status"], "Declined", "{expired}");
    assert!(expired.to_string().contains("DOCUMENT_EXPIRED"), "{expired}");
    let minor: Value = by_persona("minor", Some(18)).await.unwrap().json().await.unwrap();
    assert_eq!(minor["id_verification"]["status"], "Declined", "{minor}");
    assert!(minor.to_string().contains("MINIMUM_AGE_NOT_MET"), "{minor}");

    // Refused uploads: no front image; a text file; an age out of range.
    let post = |form: reqwest::multipart::Form| {
        reqwest::Client::new()
            .post(format!("{}/v3/id-verification/", sb.base))
            .header("x-api-key", DIDIT_API_KEY)
            .multipart(form)
            .send()
    };
    let r = post(reqwest::multipart::Form::new().text("vendor_data", "x")).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["front_image"].is_array());
    let txt = reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt").mime_str("text/plain").unwrap();
    assert_eq!(post(reqwest::multipart::Form::new().part("front_image", txt)).await.unwrap().status(), 400);
    let f = reqwest::multipart::Part::bytes(vec![1u8; 10]).file_name("f.png").mime_str("image/png").unwrap();
    let r = post(reqwest::multipart::Form::new().part("front_image", f).text("minimum_age", "0")).await.unwrap();
    assert_eq!(r.status(), 400);

    // Deterministic with the seed: a fresh sandbox with the same seed gives the same reports.
    let again = Sandbox::start().await;
    let client2 = idstream_server::provider::DiditClient::new(
        &idstream_server::config::ProviderConfig::didit(
            "didit-idv2",
            idstream_core::signature::Secret::new(DIDIT_API_KEY),
            &again.base,
            "wf",
            "didit-main",
        ),
        "acme",
    );
    let r2 = client2.id_verification(&req).await.unwrap();
    assert_eq!(r2.request_id, first.request_id);
    assert_eq!(r2.id_verification["document_number"], first.id_verification["document_number"]);

    // Faults: a 503 is retried by the client (same timeouts, retries, breaker and metrics).
    sb.faults(json!({"fail_next": 1, "fail_status": 503})).await;
    let before = sb.calls("id_verification").await;
    let r = client.id_verification(&req).await.unwrap();
    assert!(!r.request_id.is_empty());
    assert_eq!(sb.calls("id_verification").await, before + 2, "one fault, one retry");
    sb.faults(json!({"fail_next": 10, "fail_status": 403})).await;
    let err = client.id_verification(&req).await.unwrap_err();
    assert_eq!(err.code(), "provider_rejected");
}

/// An analyst asks for a resubmission: Didit's update-status sets the session `Resubmitted`
/// (a provider failure changes nothing), the case closes without an outcome, and the status
/// webhook Didit then sends makes no decision.
#[tokio::test]
async fn a_resubmission_request_goes_to_didit_and_closes_the_case() {
    let sb = Sandbox::start().await;
    let srv = TestServer::start_with(&push_back_config(&sb, "max_retries = 0", "")).await;
    sb.webhooks_to(&srv).await;
    let (session, review) = session_in_review(&srv, &sb, "u-resub").await;
    let path = format!("/v1/reviews/{review}/resubmit");
    let (s, v) = srv.call("POST", &path, Some(KEY_ANALYST), json_body(json!({"note": "  "}))).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_body")), "a note is required: {v}");
    sb.faults(json!({"fail_next": 1, "fail_status": 500})).await;
    let note = "The document photo is blurred: please take it again in daylight.";
    let (s, v) = srv.call("POST", &path, Some(KEY_ANALYST), json_body(json!({"note": note}))).await;
    assert_eq!(s, 502, "{v}");
    let (_, r) = srv.get(&format!("/v1/reviews/{review}"), Some(KEY_ANALYST)).await;
    assert_eq!(r["status"], "claimed", "nothing changed: {r}");
    let before = sb.calls("update_status").await;
    let (s, v) = srv.call("POST", &path, Some(KEY_ANALYST), json_body(json!({"note": note}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["provider"].as_str(), v["review"]["status"].as_str()), (Some("didit"), Some("resolved")), "{v}");
    assert!(v["review"]["outcome"].is_null(), "{v}");
    assert_eq!(sb.calls("update_status").await, before + 1);
    assert_eq!(sb.decision(&session).await["status"], "Resubmitted");
    let ev = events_of(&srv, &session, "review.resubmission_requested").await;
    assert_eq!((ev.len(), ev[0]["note"].as_str()), (1, Some(note)), "{ev:?}");
    // Didit's Resubmitted webhook arrives: recorded, no new decision; the session waits.
    wait_result(&srv, &session, "Resubmitted").await;
    srv.decided().await;
    assert_eq!(events_of(&srv, &session, "decision.made").await.len(), 1, "only the rules' review decision");
    let (_, sess) = srv.get(&format!("/v1/sessions/{session}"), Some(KEY_SVC)).await;
    assert_eq!(sess["state"], "resubmitted", "{sess}");
    let (s, _) = srv.call("POST", &path, Some(KEY_ANALYST), json_body(json!({"note": note}))).await;
    assert_eq!(s, 409, "a closed case");
}
