//! Shared test fixtures: a real server on 127.0.0.1:0 with its own data directory, and
//! signing helpers that use the core's signers (whose own correctness is checked against
//! Python-generated and Didit-published vectors in idstream-core's tests).

use std::sync::Arc;
use std::time::Duration;

use idstream_core::signature::{didit, standard, Secret};
use idstream_server::config::Config;
use idstream_server::state::{hash_api_key, AppState};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const SECRET_NEW: &str = "didit-secret-new-0123456789abcdefghijklmnopq";
pub const SECRET_OLD: &str = "didit-secret-old-0123456789abcdefghijklmnopq";
pub const STD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const KEY_ACME: &str = "key-acme";
pub const KEY_BETA: &str = "key-beta";
pub const KEY_ALL: &str = "key-all";

/// Config fragment that turns the decision worker off.
pub const NO_DECISIONS: &str = "[decisions]\nenabled = false\n";

pub fn base_config(didit_secrets: &[&str], extra: &str) -> String {
    let secrets = didit_secrets.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[[sources]]
id = "didit-main"
provider = "didit"
tenant = "acme"
secrets = [{secrets}]

[[sources]]
id = "std-main"
provider = "standard"
tenant = "beta"
secrets = ["{STD_SECRET}"]

[[api_keys]]
name = "acme"
tenant = "acme"
sha256 = "{}"

[[api_keys]]
name = "beta"
tenant = "beta"
sha256 = "{}"

[[api_keys]]
name = "ops"
tenant = "*"
sha256 = "{}"
{extra}
"#,
        hash_api_key(KEY_ACME),
        hash_api_key(KEY_BETA),
        hash_api_key(KEY_ALL)
    )
}

/// A JSON request body for [`TestServer::call`].
pub fn json_body(v: Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&v).unwrap())
}

/// Config for one more API key: `key-<name>`, acting for `tenant` with `role`.
pub fn role_key(name: &str, tenant: &str, role: &str) -> String {
    format!(
        "\n[[api_keys]]\nname = \"{name}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        hash_api_key(&format!("key-{name}"))
    )
}

pub struct TestServer {
    pub base: String,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    pub dir: Arc<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], "")).await
    }

    /// Webhook ingest and the log alone, without the decision worker appending decisions (for
    /// tests that count offsets).
    pub async fn start_ingest_only() -> TestServer {
        Self::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], NO_DECISIONS)).await
    }

    pub async fn start_with(toml: &str) -> TestServer {
        Self::start_in(Arc::new(tempfile::tempdir().unwrap()), toml).await
    }

    pub async fn start_in(dir: Arc<tempfile::TempDir>, toml: &str) -> TestServer {
        Self::start_at(dir, toml, "127.0.0.1:0").await
    }

    /// Like `start_in`, on a given address (to restart a server where its clients expect it).
    pub async fn start_at(dir: Arc<tempfile::TempDir>, toml: &str, addr: &str) -> TestServer {
        let mut cfg = Config::from_toml(toml).expect("test config is valid");
        cfg.server.data_dir = dir.path().to_path_buf();
        let state = Arc::new(AppState::open(&cfg).await.unwrap());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (state, stop) = (state.clone(), stop.clone());
            async move {
                idstream_server::server::serve(listener, state, stop, Duration::from_secs(5)).await.unwrap();
            }
        });
        TestServer { base, state, client: reqwest::Client::new(), stop, task: Some(task), dir }
    }

    /// Stops the server gracefully (the log is closed, releasing the data directory).
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        self.stop.cancel();
        self.task.take().unwrap().await.unwrap();
        self.dir.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, source: &str, body: &[u8], headers: &[(&str, String)]) -> (u16, Value) {
        let mut req = self
            .client
            .post(self.url(&format!("/webhooks/{source}")))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Any method with an optional API key and JSON (or raw) body.
    pub async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the decision worker has processed everything in the log.
    pub async fn decided(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let head = self.state.log.head();
            if head > 0 && self.state.decided_through(head) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "decision worker stuck before {head}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every event in the log, read through the API with the all-tenant key.
    pub async fn all_events(&self) -> Vec<Value> {
        events_via(&self.client, &self.base).await
    }
}

/// Every event in the log, read through one node's API.
pub async fn events_via(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let r =
            client.get(format!("{base}/v1/events?after={after}&limit=1000")).bearer_auth(KEY_ALL).send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{v}");
        let page = v["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return events;
        }
        after = v["next_after"].as_u64().unwrap();
        events.extend(page);
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A realistic Didit v3 status.updated body (compact, as Didit sends).
pub fn didit_body(event_id: &str, session: &str, status: &str, ts: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event_id": event_id,
        "webhook_type": "status.updated",
        "timestamp": ts,
        "created_at": ts - 5,
        "application_id": "11111111-2222-3333-4444-555555555555",
        "environment": "sandbox",
        "session_id": session,
        "status": status,
        "workflow_id": "22222222-3333-4444-5555-666666666666",
        "workflow_version": 3,
        "vendor_data": "user-42",
        "metadata": {"plan": "gold"},
        "decision": {
            "id_verifications": [{"node_id": "id_1", "status": "Approved", "document_number": "X123", "first_name": "José"}],
            "liveness_checks": [{"node_id": "l_1", "status": "Approved", "score": 96.15, "method": "passive"}]
        }
    }))
    .unwrap()
}

pub enum Sig {
    V2,
    Raw,
    Simple,
    All,
}

/// Didit headers for `body` signed with `secret` using the given scheme(s).
pub fn didit_headers(body: &[u8], secret: &str, which: Sig) -> Vec<(&'static str, String)> {
    let s = Secret::new(secret);
    let v: Value = serde_json::from_slice(body).unwrap();
    let simple = || {
        didit::sign_simple(
            &s,
            v["timestamp"].as_i64().unwrap(),
            v["session_id"].as_str().unwrap(),
            v["status"].as_str().unwrap(),
            v["webhook_type"].as_str().unwrap(),
        )
    };
    let mut h = Vec::new();
    if matches!(which, Sig::V2 | Sig::All) {
        h.push(("x-signature-v2", didit::sign_v2(&s, body).unwrap()));
    }
    if matches!(which, Sig::Raw | Sig::All) {
        h.push(("x-signature", didit::sign_raw(&s, body)));
    }
    if matches!(which, Sig::Simple | Sig::All) {
        h.push(("x-signature-simple", simple()));
    }
    h
}

/// Standard Webhooks headers.
pub fn standard_headers(id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = standard::decode_secret(&Secret::new(STD_SECRET)).unwrap();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", standard::sign(&key, id, ts, body)),
    ]
}

/// A POST of `body` to `{base}/webhooks/didit-main`, signed with every Didit scheme.
pub fn signed_post(client: &reqwest::Client, base: &str, body: &[u8]) -> reqwest::RequestBuilder {
    let mut req = client.post(format!("{base}/webhooks/didit-main")).body(body.to_vec());
    for (k, v) in didit_headers(body, SECRET_NEW, Sig::All) {
        req = req.header(k, v);
    }
    req
}

/// Only `X-Signature` (raw bytes): works for bodies that are not even JSON.
pub fn raw_only(body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    vec![("x-signature", didit::sign_raw(&Secret::new(secret), body))]
}
