//! Outbound notifications over real HTTP: a receiver (axum on 127.0.0.1:0) that fails, answers
//! 429 with Retry-After, 410, and succeeds; signatures checked by an independent Standard
//! Webhooks verifier (HMAC-SHA256 written here, not the core's signer); order per session;
//! restarts, disabled endpoints and replays lose nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub ts: i64,
    pub sig: String,
    pub raw: Vec<u8>,
    pub body: Value,
    pub at: Instant,
    /// What the receiver answered.
    pub status: u16,
}

impl Got {
    pub fn session(&self) -> String {
        self.body["data"]["session_id"].as_str().unwrap_or_default().to_owned()
    }
    pub fn event_id(&self) -> String {
        self.body["data"]["id"].as_str().unwrap_or_default().to_owned()
    }
}

type Rule = Box<dyn FnMut(&Got, &[Got]) -> (u16, Option<u64>) + Send>;

/// A webhook receiver on 127.0.0.1:0 answering by `rule` (given the request and the earlier ones).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Got>>>,
    rule: Arc<Mutex<Rule>>,
    /// How long each answer takes (milliseconds).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Got>>> = Default::default();
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Box::new(|_, _| (200, None))));
        let delay_ms: Arc<std::sync::atomic::AtomicU64> = Default::default();
        let (g, r, d) = (got.clone(), rule.clone(), delay_ms.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, raw: axum::body::Bytes| {
                let (g, r, d) = (g.clone(), r.clone(), d.clone());
                async move {
                    let delay = d.load(std::sync::atomic::Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let mut got = Got {
                        id: h("webhook-id"),
                        ts: h("webhook-timestamp").parse().unwrap_or(0),
                        sig: h("webhook-signature"),
                        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                        raw: raw.to_vec(),
                        at: Instant::now(),
                        status: 0,
                    };
                    let mut all = g.lock().unwrap();
                    let (status, retry_after) = (r.lock().unwrap())(&got, &all);
                    got.status = status;
                    all.push(got);
                    let mut resp_headers = HeaderMap::new();
                    if let Some(s) = retry_after {
                        resp_headers.insert("retry-after", s.to_string().parse().unwrap());
                    }
                    (StatusCode::from_u16(status).unwrap(), resp_headers, "receiver says hi")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got, rule, delay_ms }
    }

    pub fn answer(&self, rule: impl FnMut(&Got, &[Got]) -> (u16, Option<u64>) + Send + 'static) {
        *self.rule.lock().unwrap() = Box::new(rule);
    }

    pub fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The requests answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Got> {
        self.all().into_iter().filter(|g| (200..300).contains(&g.status)).collect()
    }

    /// Waits until `n` distinct events were answered 2xx.
    pub async fn wait_delivered(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        loop {
            let d = self.delivered();
            let distinct: HashSet<_> = d.iter().map(|g| g.id.clone()).collect();
            if distinct.len() >= n {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events delivered: {:#?}",
                distinct.len(),
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn summary(&self) -> Vec<String> {
        self.all().iter().map(|g| format!("{} {} {}", g.session(), g.id, g.status)).collect()
    }
}

/// Standard Webhooks verification, written from the spec: HMAC-SHA256 of `id.timestamp.body`
/// under the base64 key after `whsec_`, base64, compared with each space-separated `v1,` entry.
pub fn verifies(secret: &str, g: &Got) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", g.id, g.ts).as_bytes());
    mac.update(&g.raw);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    g.sig.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

pub const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Server config with notifications to loopback allowed and short retries.
fn config(extra: &str) -> String {
    base_config(
        &[SECRET_NEW],
        &format!(
            "{NO_DECISIONS}\n[rate_limits]\nenabled = false\n\n[notifications]\nallow_private_addresses = true\n\
             retry_schedule_ms = [0, 50, 50, 50, 50, 50]\n{extra}"
        ),
    )
}

async fn ingest(srv: &TestServer, session: &str, i: usize) {
    let body = didit_body(&format!("{session}-e{i}"), session, "In Progress", now());
    let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
    assert_eq!(s, 200, "{v}");
}

/// The log offset of every event, by idstream id.
async fn offsets(srv: &TestServer) -> HashMap<String, u64> {
    srv.all_events()
        .await
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["offset"].as_u64().unwrap()))
        .collect()
}

/// Per session, the first successful delivery of each event is in log order, and nothing is
/// missing.
pub fn assert_in_order(got: &[Got], offsets: &HashMap<String, u64>, expected_events: usize) {
    let mut seen = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    for g in got.iter().filter(|g| (200..300).contains(&g.status)) {
        if !seen.insert(g.id.clone()) {
            continue;
        }
        let off = offsets[&g.event_id()];
        let prev = last.insert(g.session(), off).unwrap_or(0);
        assert!(off > prev, "session {}: offset {off} delivered after {prev}", g.session());
    }
    assert_eq!(seen.len(), expected_events);
}

#[tokio::test]
async fn config_endpoint_signs_with_every_secret_keeps_session_order_and_honours_retry_after() {
    let rx = Receiver::start().await;
    // The first event of session `slow` is refused twice with 429 Retry-After: 1.
    rx.answer(|g, earlier| {
        let refusals = earlier.iter().filter(|e| e.session() == "slow" && e.status == 429).count();
        if g.session() == "slow" && refusals < 2 {
            (429, Some(1))
        } else {
            (200, None)
        }
    });
    let srv = TestServer::start_with(&config(&format!(
        "\n[[endpoints]]\nid = \"hooks\"\ntenant = \"acme\"\nurl = \"{}\"\nkinds = [\"verification.*\"]\n\
         secrets = [\"{SECRET_A}\", \"{SECRET_B}\"]\nheaders = {{ \"x-team\" = \"kyc\" }}\n",
        rx.url
    )))
    .await;
    for i in 0..4 {
        for s in ["slow", "fast1", "fast2"] {
            ingest(&srv, s, i).await;
        }
    }
    let got = rx.wait_delivered(12, Duration::from_secs(20)).await;
    let all = rx.all();
    // Signatures: one `v1,` per secret, each verifying independently.
    for g in &all {
        assert_eq!(g.sig.split(' ').count(), 2, "{}", g.sig);
        assert!(verifies(SECRET_A, g) && verifies(SECRET_B, g), "{g:?}");
        assert!(!verifies("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", g));
        assert!((g.ts - now()).abs() < 30);
        assert_eq!(g.body["type"], "verification.status_updated");
        assert!(g.body["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(g.body["data"]["tenant"], "acme");
    }
    assert_in_order(&got, &offsets(&srv).await, 12);
    // Retries carry the same webhook-id; Retry-After was waited (about 1 s, never less).
    let slow: Vec<&Got> = all.iter().filter(|g| g.session() == "slow").collect();
    assert_eq!(slow[0].id, slow[1].id);
    assert_eq!(slow[1].id, slow[2].id);
    assert_eq!((slow[0].status, slow[1].status, slow[2].status), (429, 429, 200));
    assert!(slow[1].at - slow[0].at >= Duration::from_millis(990), "{:?}", slow[1].at - slow[0].at);
    // No head-of-line blocking: the other sessions were all delivered while `slow` waited.
    // (Each round ingests `slow` first, so the other sessions' events arrive while it waits.)
    let during = all.iter().filter(|g| g.session() != "slow" && g.at > slow[0].at && g.at < slow[2].at).count();
    assert!(during >= 2, "the other sessions waited for the slow one");
    assert_eq!(all.iter().filter(|g| g.session() != "slow").count(), 8, "fast sessions: one attempt each");

    // The attempts are visible, newest first, with status, error and next attempt.
    // (An attempt is recorded just after its answer: wait for the last one.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (s, v) = srv.get("/v1/endpoints/hooks/deliveries?limit=1000", Some(KEY_ACME)).await;
        assert_eq!(s, 200, "{v}");
        if v["deliveries"].as_array().unwrap().len() >= 14 || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let attempts = v["deliveries"].as_array().unwrap();
    assert_eq!(attempts.len(), 14);
    let retrying: Vec<&Value> = attempts.iter().filter(|a| a["outcome"] == "retrying").collect();
    assert_eq!(retrying.len(), 2);
    assert_eq!(retrying[0]["status"], 429);
    assert!(retrying[0]["error"].as_str().unwrap().contains("receiver says hi"));
    assert!(retrying[0]["next_attempt_at_us"].as_i64().unwrap() > retrying[0]["at_us"].as_i64().unwrap());
    assert!(!v.to_string().contains(SECRET_A.trim_start_matches("whsec_")));
    // Config endpoints are listed (no secrets, no header values) and read-only.
    let (s, v) = srv.get("/v1/endpoints", Some(KEY_ACME)).await;
    assert_eq!(s, 200);
    let ep = &v["endpoints"][0];
    assert_eq!(
        (ep["id"].as_str(), ep["source"].as_str(), ep["secrets"].as_u64()),
        (Some("hooks"), Some("config"), Some(2))
    );
    assert_eq!(ep["headers"], json!(["x-team"]));
    assert!(!v.to_string().contains("whsec_") && !v.to_string().contains("kyc"), "{v}");
    for (m, body) in [("PATCH", Some(br#"{"disabled": true}"#.to_vec())), ("DELETE", None)] {
        let (s, v) = srv.call(m, "/v1/endpoints/hooks", Some(KEY_ACME), body).await;
        assert_eq!(s, 409, "{v}");
        assert!(v["message"].as_str().unwrap().contains("configuration file"), "{v}");
    }
    // Other tenants do not see it.
    let (s, _) = srv.get("/v1/endpoints/hooks", Some(KEY_BETA)).await;
    assert_eq!(s, 404);
    srv.stop().await;
}

/// The deliveries verify with the Standard Webhooks reference library (PyPI `standardwebhooks`,
/// run by `tests/standardwebhooks/verify.py`), for each of two secrets; a tampered body fails.
#[tokio::test]
#[ignore = "needs python3 with the standardwebhooks package: set IDSTREAM_TEST_STANDARDWEBHOOKS_PYTHON"]
async fn deliveries_verify_with_the_standard_webhooks_reference_library() {
    let python = crate::backends::env_url("IDSTREAM_TEST_STANDARDWEBHOOKS_PYTHON");
    let rx = Receiver::start().await;
    let srv = TestServer::start_with(&config(&format!(
        "\n[[endpoints]]\nid = \"hooks\"\ntenant = \"acme\"\nurl = \"{}\"\nkinds = [\"verification.*\"]\n\
         secrets = [\"{SECRET_A}\", \"{SECRET_B}\"]\n",
        rx.url
    )))
    .await;
    for i in 0..3 {
        ingest(&srv, "py", i).await;
    }
    let got = rx.wait_delivered(3, Duration::from_secs(10)).await;
    let captured: Vec<Value> = got
        .iter()
        .map(|g| {
            json!({
                "headers": {"webhook-id": g.id, "webhook-timestamp": g.ts.to_string(), "webhook-signature": g.sig},
                "body_b64": base64::engine::general_purpose::STANDARD.encode(&g.raw),
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("captured.json");
    std::fs::write(&file, serde_json::to_vec(&captured).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/standardwebhooks/verify.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&file)
        .args([SECRET_A, SECRET_B])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 deliveries verified with 2 secrets"), "{text}");
    srv.stop().await;
}

async fn create_endpoint(srv: &TestServer, body: Value) -> (String, String) {
    let (s, v) = srv.call("POST", "/v1/endpoints", Some(KEY_ACME), Some(serde_json::to_vec(&body).unwrap())).await;
    assert_eq!(s, 201, "{v}");
    (v["id"].as_str().unwrap().to_owned(), v["secret"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn api_endpoint_disabled_or_down_across_a_restart_loses_nothing() {
    let rx = Receiver::start().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let toml = config("");
    let srv = TestServer::start_in(dir.clone(), &toml).await;
    let (id, secret) = create_endpoint(&srv, json!({"id": "crm", "url": rx.url, "kinds": ["verification.*"]})).await;
    assert!(secret.starts_with("whsec_"));
    for i in 0..3 {
        ingest(&srv, "a", i).await;
    }
    rx.wait_delivered(3, Duration::from_secs(10)).await;
    assert!(rx.all().iter().all(|g| verifies(&secret, g)));

    // Disabled: nothing goes out; the events wait.
    let (s, v) = srv.call("PATCH", "/v1/endpoints/crm", Some(KEY_ACME), Some(br#"{"disabled": true}"#.to_vec())).await;
    assert_eq!((s, v["disabled"].as_bool()), (200, Some(true)), "{v}");
    for i in 3..6 {
        ingest(&srv, "a", i).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.all().len(), 3, "a disabled endpoint got deliveries");
    // Re-enabled: it gets what it missed, in order.
    let (s, _) = srv.call("PATCH", "/v1/endpoints/crm", Some(KEY_ACME), Some(br#"{"disabled": false}"#.to_vec())).await;
    assert_eq!(s, 200);
    rx.wait_delivered(6, Duration::from_secs(10)).await;

    // Rotation: a second secret signs too, and is shown once.
    let (s, v) =
        srv.call("PATCH", "/v1/endpoints/crm", Some(KEY_ACME), Some(br#"{"rotate_secret": true}"#.to_vec())).await;
    assert_eq!((s, v["secrets"].as_u64()), (200, Some(2)), "{v}");
    let secret2 = v["secret"].as_str().unwrap().to_owned();

    // The receiver goes down; events arrive; the server restarts; the receiver comes back.
    rx.answer(|_, _| (500, None));
    for i in 6..9 {
        ingest(&srv, "b", i).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.all().iter().filter(|g| g.status == 500).count() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed_id = rx.all().iter().find(|g| g.status == 500).unwrap().id.clone();
    let dir = srv.stop().await;
    rx.answer(|_, _| (200, None));
    let srv = TestServer::start_in(dir, &toml).await;
    let got = rx.wait_delivered(9, Duration::from_secs(10)).await;
    assert!(got.iter().any(|g| g.id == failed_id), "the retried event keeps its webhook-id");
    for g in got.iter().filter(|g| g.session() == "b") {
        assert!(verifies(&secret, g) && verifies(&secret2, g));
    }
    assert_in_order(&rx.all(), &offsets(&srv).await, 9);

    // Replay from offset 1: everything again, with the same webhook-ids.
    let before: HashSet<String> = rx.delivered().iter().map(|g| g.id.clone()).collect();
    let n = rx.all().len();
    let (s, v) = srv
        .call("POST", &format!("/v1/endpoints/{id}/replay"), Some(KEY_ACME), Some(br#"{"from_offset": 1}"#.to_vec()))
        .await;
    assert_eq!((s, v["from_offset"].as_u64()), (202, Some(1)), "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.all().len() < n + 9 {
        assert!(Instant::now() < deadline, "replay delivered {} of 9", rx.all().len() - n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again: HashSet<String> = rx.all()[n..].iter().map(|g| g.id.clone()).collect();
    assert_eq!(again, before);

    // Deleted: deliveries stop.
    let (s, _) = srv.call("DELETE", "/v1/endpoints/crm", Some(KEY_ACME), None).await;
    assert_eq!(s, 200);
    let (s, _) = srv.get("/v1/endpoints/crm", Some(KEY_ACME)).await;
    assert_eq!(s, 404);
    srv.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_exhausted_retries_become_dead_letters() {
    let rx = Receiver::start().await;
    let srv = TestServer::start_with(&config("")).await;
    let (id, _) = create_endpoint(&srv, json!({"url": rx.url, "kinds": ["*"], "timeout_secs": 5})).await;
    // Session `dead` always fails: given up after 6 attempts, then its next event goes out.
    rx.answer(|g, _| {
        if g.body["data"]["provider_event_id"] == "dead-e0"
            || g.session() == "dead" && g.body.to_string().contains("dead-e0")
        {
            (500, None)
        } else {
            (200, None)
        }
    });
    ingest(&srv, "dead", 0).await;
    ingest(&srv, "dead", 1).await;
    let got = rx.wait_delivered(1, Duration::from_secs(10)).await;
    let all = rx.all();
    assert_eq!(all.iter().filter(|g| g.status == 500).count(), 6, "{all:?}");
    assert!(got[0].at > all.iter().filter(|g| g.status == 500).map(|g| g.at).max().unwrap());
    let (s, v) = srv.get(&format!("/v1/endpoints/{id}/deliveries?failed=true"), Some(KEY_ACME)).await;
    assert_eq!(s, 200);
    let dead = v["deliveries"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{v}");
    assert_eq!((dead[0]["attempt"].as_u64(), dead[0]["status"].as_u64()), (Some(6), Some(500)));
    // ... and a `notification.failed` entry in the log, on the session's timeline.
    let failed = wait_for_kind(&srv, "notification.failed", 1).await;
    assert_eq!(failed[0]["endpoint"], id.as_str());
    assert_eq!((failed[0]["attempts"].as_u64(), failed[0]["last_status"].as_u64()), (Some(6), Some(500)));
    assert_eq!((failed[0]["last_error"].as_str(), failed[0]["session_id"].as_str()), (Some("HTTP 500"), Some("dead")));
    assert_eq!(failed[0]["webhook_id"], dead[0]["webhook_id"]);

    // 410 Gone: the endpoint is disabled and the event stays undelivered until re-enabled.
    rx.answer(|_, _| (410, None));
    ingest(&srv, "g", 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = srv.get(&format!("/v1/endpoints/{id}"), Some(KEY_ACME)).await;
        if v["disabled"] == true {
            assert!(v["disabled_reason"].as_str().unwrap().contains("410"), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let disabled = wait_for_kind(&srv, "endpoint.disabled", 1).await;
    assert_eq!(
        (disabled[0]["actor"].as_str(), disabled[0]["endpoint"].as_str()),
        (Some("idstream"), Some(id.as_str()))
    );
    assert!(disabled[0]["reason"].as_str().unwrap().contains("410 Gone"), "{}", disabled[0]);
    rx.answer(|_, _| (200, None));
    let (s, v) = srv
        .call("PATCH", &format!("/v1/endpoints/{id}"), Some(KEY_ACME), Some(br#"{"disabled": false}"#.to_vec()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["backlog"].as_u64(), Some(1), "the event answered 410 waits: {v}");
    let got = rx.wait_delivered(2, Duration::from_secs(10)).await;
    assert_eq!(got.last().unwrap().session(), "g");
    assert_eq!(rx.all().iter().filter(|g| g.status == 410).count(), 1);
    let enabled = wait_for_kind(&srv, "endpoint.enabled", 1).await;
    assert_eq!(enabled[0]["actor"], "acme");
    // The endpoint takes `*` but never hears of its own failures and state changes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let own: Vec<String> = rx.all().iter().map(|g| g.body["type"].as_str().unwrap().to_owned()).collect();
    assert!(own.iter().all(|k| k.starts_with("verification.")), "{own:?}");
    srv.stop().await;
}

/// Waits until the log holds `n` entries of `kind`; returns them.
async fn wait_for_kind(srv: &TestServer, kind: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = srv.all_events().await.into_iter().filter(|e| e["kind"] == kind).collect();
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "{} of {n} `{kind}` entries in the log", found.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An endpoint failing continuously is disabled (and says so in the log); a monitoring endpoint
/// hears of it; enabling it may skip what it missed; replays take an offset range, or only the
/// given-up deliveries, with their original `webhook-id`s.
#[tokio::test]
async fn failing_endpoints_are_disabled_and_replays_take_a_range_or_the_dead_letters() {
    let rx = Receiver::start().await;
    let monitor = Receiver::start().await;
    let srv = TestServer::start_with(&config("disable_after_failing_secs = 1")).await;
    let (id, _) = create_endpoint(&srv, json!({"id": "core", "url": rx.url, "kinds": ["*"]})).await;
    let body = json!({"id": "monitor", "url": monitor.url, "kinds": ["endpoint.*", "notification.failed"]});
    create_endpoint(&srv, body).await;
    for i in 0..6 {
        ingest(&srv, &format!("r{}", i % 3), i).await;
    }
    let first = rx.wait_delivered(6, Duration::from_secs(10)).await;
    let offs = offsets(&srv).await;
    let mut delivered: Vec<(u64, String)> = first.iter().map(|g| (offs[&g.event_id()], g.id.clone())).collect();
    delivered.sort();

    // A range: offsets of the 2nd to the 4th event, nothing else.
    let n = rx.all().len();
    let range = json!({"from_offset": delivered[1].0, "to_offset": delivered[3].0});
    let (s, v) =
        srv.call("POST", &format!("/v1/endpoints/{id}/replay"), Some(KEY_ACME), Some(range.to_string().into())).await;
    assert_eq!(
        (s, v["from_offset"].as_u64(), v["to_offset"].as_u64()),
        (202, Some(delivered[1].0), Some(delivered[3].0)),
        "{v}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.all().len() < n + 3 {
        assert!(Instant::now() < deadline, "the range replay delivered {} of 3", rx.all().len() - n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again: Vec<String> = rx.all()[n..].iter().map(|g| g.id.clone()).collect();
    let mut expected: Vec<String> = delivered[1..4].iter().map(|(_, w)| w.clone()).collect();
    expected.sort();
    again.sort();
    assert_eq!(again, expected, "a range replay delivers exactly the range");
    let (s, v) = srv
        .call(
            "POST",
            &format!("/v1/endpoints/{id}/replay"),
            Some(KEY_ACME),
            Some(br#"{"from_offset": 5, "to_offset": 2}"#.to_vec()),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_body")), "{v}");

    // The receiver fails from now on: events are given up, then the endpoint is disabled.
    rx.answer(|_, _| (500, None));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 6;
    loop {
        let (_, v) = srv.get(&format!("/v1/endpoints/{id}"), Some(KEY_ACME)).await;
        if v["disabled"] == true {
            assert!(v["disabled_reason"].as_str().unwrap().contains("failing continuously for 1 s"), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "never disabled: {v}");
        ingest(&srv, "f", i).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let disabled = wait_for_kind(&srv, "endpoint.disabled", 1).await;
    assert!(disabled[0]["reason"].as_str().unwrap().contains("failing continuously"));
    let given_up = srv.get(&format!("/v1/endpoints/{id}/deliveries?failed=true"), Some(KEY_ACME)).await.1;
    let dead: HashSet<String> = given_up["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!dead.is_empty(), "no delivery was given up before the endpoint was disabled");
    assert_eq!(wait_for_kind(&srv, "notification.failed", dead.len()).await.len(), dead.len());
    // The monitor heard of every failure and of the disabling.
    let heard = monitor.wait_delivered(dead.len() + 1, Duration::from_secs(10)).await;
    assert!(heard.iter().any(|g| g.body["type"] == "endpoint.disabled" && g.body["data"]["endpoint"] == "core"));
    let failures = heard.iter().filter(|g| g.body["type"] == "notification.failed").count();
    assert_eq!(failures, dead.len());

    // Missed while disabled: counted as its backlog; enabling with `skip_backlog` drops them.
    ingest(&srv, "m", 100).await;
    ingest(&srv, "m", 101).await;
    let (_, v) = srv.get(&format!("/v1/endpoints/{id}"), Some(KEY_ACME)).await;
    assert!(v["backlog"].as_u64().unwrap() >= 2, "{v}");
    rx.answer(|_, _| (200, None));
    let (s, v) = srv
        .call(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(KEY_ACME),
            Some(br#"{"disabled": false, "skip_backlog": true}"#.to_vec()),
        )
        .await;
    assert_eq!((s, v["backlog"].as_u64()), (200, Some(0)), "{v}");
    let before: HashSet<String> = rx.delivered().iter().map(|g| g.id.clone()).collect();
    ingest(&srv, "n", 200).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rx.delivered().iter().any(|g| g.session() == "n") {
        assert!(Instant::now() < deadline, "nothing delivered after enabling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!rx.delivered().iter().any(|g| g.session() == "m"), "skip_backlog still delivered the backlog");

    // The dead letters only, with their webhook-ids.
    let (s, v) = srv
        .call("POST", &format!("/v1/endpoints/{id}/replay"), Some(KEY_ACME), Some(br#"{"failed": true}"#.to_vec()))
        .await;
    assert_eq!((s, v["failed_only"].as_bool()), (202, Some(true)), "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: HashSet<String> = rx.delivered().iter().map(|g| g.id.clone()).collect();
        if dead.is_subset(&now) {
            let extra: Vec<&String> = now.difference(&before).filter(|w| !dead.contains(*w)).collect();
            assert_eq!(extra.len(), 1, "only the dead letters and session n's event: {extra:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the dead letters were not delivered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!rx.delivered().iter().any(|g| g.session() == "m"));
    srv.stop().await;
}

/// Private and link-local URLs are refused when an endpoint is defined (without any
/// connection: the checks need no network, and the literal addresses are never dialled).
#[tokio::test]
async fn endpoint_urls_on_private_or_metadata_addresses_are_refused() {
    let strict = TestServer::start_with(&base_config(&[SECRET_NEW], NO_DECISIONS)).await;
    let open = TestServer::start_with(&config("")).await;
    for (srv, url, refused) in [
        (&strict, "http://127.0.0.1:9/hook", true),
        (&strict, "http://10.1.2.3/hook", true),
        (&strict, "http://[::1]:9/hook", true),
        (&strict, "http://localhost:9/hook", true),
        (&strict, "http://169.254.169.254/latest/meta-data", true),
        (&open, "http://169.254.169.254/latest/meta-data", true),
        (&open, "http://[fd00:ec2::254]/", true),
        (&open, "file:///etc/passwd", true),
        (&open, "http://127.0.0.1:9/hook", false),
    ] {
        let body = json!({"url": url, "kinds": ["*"]});
        let (s, v) = srv.call("POST", "/v1/endpoints", Some(KEY_ACME), Some(serde_json::to_vec(&body).unwrap())).await;
        if refused {
            assert_eq!((s, v["error"].as_str()), (400, Some("invalid_body")), "{url}: {v}");
            assert!(v["message"].as_str().unwrap().starts_with("`url`"), "{v}");
        } else {
            assert_eq!(s, 201, "{url}: {v}");
        }
    }
    // The same in the config file, with the key named.
    let bad = format!(
        "[[endpoints]]\nid = \"x\"\ntenant = \"acme\"\nurl = \"http://169.254.169.254/\"\nkinds = [\"*\"]\nsecrets = [\"{SECRET_A}\"]\n"
    );
    let e = idstream_server::config::Config::from_toml(&bad).unwrap_err().to_string();
    assert!(e.contains("endpoints[0].url") && e.contains("link-local"), "{e}");
    // Roles: an auditor reads, only admins change.
    strict.stop().await;
    open.stop().await;
}

/// `kill -9` of a real `idstream serve` mid-delivery: after a restart on the same data
/// directory every event of the log reaches the receiver (same `webhook-id`s), in order per
/// session, and redeliveries are bounded by what was in flight or not yet checkpointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_loses_no_notification() {
    let rx = Receiver::start().await;
    // A slow receiver, so the kill lands while deliveries are in flight.
    rx.delay_ms.store(200, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idstream.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        dir.path().join("data").display(),
        config(&format!(
            "\n[[endpoints]]\nid = \"hooks\"\ntenant = \"acme\"\nurl = \"{}\"\nkinds = [\"verification.*\"]\nsecrets = [\"{SECRET_A}\"]\n",
            rx.url
        ))
    );
    std::fs::write(&path, toml).unwrap();
    let proc = crate::crash::spawn_server(&path).await;
    let client = reqwest::Client::new();
    // The endpoint's checkpoint starts at the head of its first start: wait for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    const N: usize = 400;
    for i in 0..N {
        let body = didit_body(&format!("k-{i}"), &format!("ks-{}", i % 10), "In Progress", now());
        let r = signed_post(&client, &proc.base, &body).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Kill once some, not all, were delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.delivered().len() < 50 {
        assert!(Instant::now() < deadline, "no deliveries before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut proc = proc;
    proc.child.start_kill().unwrap(); // SIGKILL
    proc.child.wait().await.unwrap();
    let before_kill = rx.all().len();
    assert!(before_kill < N, "everything was delivered before the kill; the test proves nothing");
    rx.delay_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    let proc = crate::crash::spawn_server(&path).await;
    let got = rx.wait_delivered(N, Duration::from_secs(60)).await;
    let offsets: HashMap<String, u64> = events_via(&client, &proc.base)
        .await
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["offset"].as_u64().unwrap()))
        .collect();
    assert_in_order(&got, &offsets, N);
    assert!(rx.all().iter().all(|g| verifies(SECRET_A, g)));
    let redelivered = rx.all().len() - N;
    eprintln!("notification crash test: {before_kill} delivered before kill -9, {redelivered} delivered twice");
    assert!(redelivered <= 200, "{redelivered} redeliveries: more than was in flight");
    drop(proc);
}
