//! Live streams over real WebSocket and SSE clients: tenant isolation, claims, token checks,
//! resume without gaps or duplicates, slow consumers caught up from the log, token expiry,
//! keep-alive, limits.
//!
//! `data/stream-*.pem` are throwaway keys made for these tests only (openssl); they protect
//! nothing.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use idstream_server::log::NewEntry;
use idstream_server::stream::auth::{mint_hs256, Claims};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::helpers::*;

const JWT_SECRET: &str = "stream-test-hs256-secret-0123456789abcdef";
const RSA_PRIVATE: &[u8] = include_bytes!("data/stream-rsa.pem");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("data/stream-rsa-other.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("data/stream-rsa.pub.pem");
const EC_PRIVATE: &[u8] = include_bytes!("data/stream-ec.pem");
/// How long any single expected message may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn data_path(name: &str) -> String {
    format!("{}/tests/it/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The base test config plus a `[stream]` section with the HS256 test secret.
fn config(stream_extra: &str) -> String {
    base_config(&[SECRET_NEW], &format!("[stream]\nhs256_secrets = [\"{JWT_SECRET}\"]\n{stream_extra}"))
}

fn claims(tenant: &str, kinds: &[&str], ttl_secs: i64) -> Claims {
    Claims {
        sub: "test-client".into(),
        tenant: tenant.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        exp: (now() + ttl_secs) as u64,
        nbf: None,
        iat: Some(now() as u64),
    }
}

fn token(tenant: &str, kinds: &[&str]) -> String {
    mint_hs256(JWT_SECRET.as_bytes(), &claims(tenant, kinds, 300))
}

fn signed(alg: Algorithm, key: &EncodingKey, c: &Claims) -> String {
    jsonwebtoken::encode(&Header::new(alg), c, key).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Clients

enum Msg {
    Json(Value),
    Closed(u16, String),
}

struct Client {
    ws: WebSocketStream<TcpStream>,
    /// Events that arrived while waiting for something else (a `subscribed` confirmation).
    pending: std::collections::VecDeque<Value>,
}

fn ws_url(srv: &TestServer, query: &str) -> String {
    format!("{}/v1/stream{query}", srv.base.replacen("http://", "ws://", 1))
}

/// Connects with a small receive buffer, so a client that stops reading pushes back on the
/// server quickly (as a slow client on a real network would).
async fn try_connect(srv: &TestServer, query: &str, bearer: Option<&str>) -> Result<Client, tungstenite::Error> {
    try_connect_base(&srv.base, query, bearer).await
}

async fn try_connect_base(base: &str, query: &str, bearer: Option<&str>) -> Result<Client, tungstenite::Error> {
    let mut req = format!("{}/v1/stream{query}", base.replacen("http://", "ws://", 1)).into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(base.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    Ok(Client { ws, pending: Default::default() })
}

async fn connect(srv: &TestServer, tok: &str) -> Client {
    try_connect(srv, "", Some(tok)).await.expect("websocket handshake")
}

impl Client {
    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    async fn recv(&mut self) -> Msg {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a message within the wait");
            match m {
                Some(Ok(Message::Text(t))) => return Msg::Json(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => {
                    return f
                        .map_or(Msg::Closed(0, String::new()), |f| Msg::Closed(f.code.into(), f.reason.to_string()))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Msg::Closed(0, String::new()),
            }
        }
    }

    async fn json(&mut self) -> Value {
        match self.recv().await {
            Msg::Json(v) => v,
            Msg::Closed(code, reason) => panic!("closed ({code}, {reason}) while expecting a message"),
        }
    }

    async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                Msg::Closed(code, reason) => return (code, reason),
                Msg::Json(v) => assert_ne!(v["type"], "event", "no event may arrive before this close: {v}"),
            }
        }
    }

    async fn subscribe(&mut self, id: &str, filter: Value, from: Value) -> Value {
        self.send(json!({"type": "subscribe", "id": id, "filter": filter, "from": from})).await;
        let mut v = self.json().await;
        while v["type"] == "event" {
            self.pending.push_back(v);
            v = self.json().await;
        }
        assert_eq!(v["type"], "subscribed", "{v}");
        assert_eq!(v["id"], id);
        v
    }

    /// Event messages until `done` says enough; fails on any non-event message.
    async fn events_until(&mut self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        while !done(&got) {
            let v = match self.pending.pop_front() {
                Some(v) => v,
                None => self.json().await,
            };
            assert_eq!(v["type"], "event", "{v}");
            assert_eq!(v["offset"], v["event"]["offset"], "{v}");
            got.push(v);
        }
        got
    }
}

/// Offsets of the events delivered on subscription `sub`.
fn offsets(events: &[Value], sub: &str) -> Vec<u64> {
    events.iter().filter(|e| e["subscription"] == sub).map(|e| e["offset"].as_u64().unwrap()).collect()
}

fn reached(sub: &'static str, offset: u64) -> impl Fn(&[Value]) -> bool {
    move |evs| offsets(evs, sub).last().is_some_and(|&o| o >= offset)
}

// ---------------------------------------------------------------------------------------------
// Ingest

/// A Didit webhook for tenant `acme` (kind `verification.status_updated`); its offset.
async fn didit(srv: &TestServer, id: &str, session: &str) -> u64 {
    let body = didit_body(id, session, "In Progress", now());
    let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::V2)).await;
    assert_eq!(s, 200, "{v}");
    v["offset"].as_u64().unwrap()
}

/// A Standard Webhooks event for tenant `beta` with any kind; its offset.
async fn standard(srv: &TestServer, id: &str, kind: &str, session: &str) -> u64 {
    let body = serde_json::to_vec(&json!({"type": kind, "data": {"session_id": session}})).unwrap();
    let (s, v) = srv.post("std-main", &body, &standard_headers(id, now(), &body)).await;
    assert_eq!(s, 200, "{v}");
    v["offset"].as_u64().unwrap()
}

/// `n` entries for `tenant` appended in one commit, straight to the log: the tailer then
/// offers them all at once, faster than any connection can drain its queue.
async fn bulk(srv: &TestServer, tag: &str, tenant: &str, n: usize) -> Vec<u64> {
    let entries = (0..n).map(|i| bulk_entry(&format!("{tag}-{i}"), tenant)).collect();
    srv.state.log.append(entries).await.unwrap().iter().map(|a| a.offset).collect()
}

/// An entry of kind `verification.status_updated` whose session is `{id minus its last
/// -part}-s0|1` (`slow-7` → `slow-s1`).
fn bulk_entry(id: &str, tenant: &str) -> NewEntry {
    let (tag, n) = id.rsplit_once('-').unwrap_or((id, "0"));
    let session = format!("{tag}-s{}", n.parse::<u64>().unwrap_or(0) % 2);
    NewEntry {
        id: id.into(),
        tenant: tenant.into(),
        source: "bulk".into(),
        kind: "verification.status_updated".into(),
        partition_key: session.clone(),
        dedupe_key: None,
        event: serde_json::to_vec(&json!({
            "id": id, "tenant": tenant, "kind": "verification.status_updated",
            "session_id": session, "offset": 0, "pad": "x".repeat(2000),
        }))
        .unwrap(),
        body: None,
    }
}

async fn tenant_offsets(srv: &TestServer, tenant: &str) -> Vec<u64> {
    srv.all_events().await.iter().filter(|e| e["tenant"] == tenant).map(|e| e["offset"].as_u64().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tenant_isolation() {
    let srv = TestServer::start_with(&config("")).await;
    // History before anyone connects, both tenants interleaved.
    for i in 0..3 {
        didit(&srv, &format!("a-old-{i}"), "acme-s1").await;
        standard(&srv, &format!("b-old-{i}"), "verification.status_updated", "beta-s1").await;
    }
    let mut acme = connect(&srv, &token("acme", &["*"])).await;
    let mut beta = connect(&srv, &token("beta", &["*"])).await;
    acme.subscribe("all", json!({"kinds": ["*"]}), json!("earliest")).await;
    // Asking for the other tenant's session by id must not reveal it.
    acme.subscribe("theirs", json!({"kinds": ["*"], "session_id": "beta-s1"}), json!("earliest")).await;
    beta.subscribe("all", json!({}), json!("earliest")).await;
    // Live traffic after subscribing.
    for i in 0..3 {
        standard(&srv, &format!("b-new-{i}"), "verification.status_updated", "beta-s1").await;
        didit(&srv, &format!("a-new-{i}"), "acme-s1").await;
    }
    let last_acme = didit(&srv, "a-last", "acme-s1").await;
    let last_beta = standard(&srv, "b-last", "verification.status_updated", "beta-s1").await;

    let got = acme.events_until(reached("all", last_acme)).await;
    assert!(got.iter().all(|e| e["event"]["tenant"] == "acme"), "acme saw another tenant: {got:?}");
    assert_eq!(offsets(&got, "all"), tenant_offsets(&srv, "acme").await);
    assert!(offsets(&got, "theirs").is_empty());
    let got = beta.events_until(reached("all", last_beta)).await;
    assert!(got.iter().all(|e| e["event"]["tenant"] == "beta"));
    assert_eq!(offsets(&got, "all"), tenant_offsets(&srv, "beta").await);

    // Nothing else is pending for acme: a ping is answered next, with no event before it.
    acme.send(json!({"type": "ping"})).await;
    assert_eq!(acme.json().await["type"], "pong");
}

#[tokio::test]
async fn claims_limit_kinds_whatever_the_filter() {
    let srv = TestServer::start_with(&config("")).await;
    let mut users = connect(&srv, &token("beta", &["user.*"])).await;
    let mut decisions = connect(&srv, &token("beta", &["decision.made"])).await;
    let mut provider = connect(&srv, &token("beta", &["standard.*"])).await;
    users.subscribe("everything", json!({"kinds": ["*"]}), json!("now")).await;
    users.subscribe("verifications", json!({"kinds": ["verification.*"]}), json!("now")).await;
    decisions.subscribe("d", json!({}), json!("now")).await;
    provider.subscribe("p", json!({}), json!("now")).await;

    let mut expect_users = Vec::new();
    let mut expect_renamed = Vec::new();
    for (i, kind) in ["verification.status_updated", "user.status_updated", "decision.made", "user.data_updated"]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let o = standard(&srv, &format!("c-{i}"), kind, "s").await;
        if kind.starts_with("user.") {
            expect_users.push(o);
        }
        if *kind == "decision.made" {
            expect_renamed.push(o);
        }
    }
    let last_user = *expect_users.last().unwrap();
    let got = users.events_until(reached("everything", last_user)).await;
    assert_eq!(offsets(&got, "everything"), expect_users);
    assert!(offsets(&got, "verifications").is_empty(), "kinds outside the claims were delivered");
    assert!(got.iter().all(|e| e["event"]["kind"].as_str().unwrap().starts_with("user.")));
    // A provider cannot write idstream's own kinds: its `decision.made` is kept as
    // `standard.decision.made`, which a `decision.made` token never receives.
    let got = provider.events_until(reached("p", *expect_renamed.last().unwrap())).await;
    assert_eq!(offsets(&got, "p"), expect_renamed);
    assert!(got.iter().all(|e| e["event"]["kind"] == "standard.decision.made"), "{got:?}");
    // Nothing queued behind them, and nothing for the `decision.made` token.
    for c in [&mut users, &mut decisions, &mut provider] {
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.json().await["type"], "pong");
    }
}

/// Every refused token closes the stream with 4401 and a reason saying why.
#[tokio::test]
async fn bad_tokens_are_refused_with_4401() {
    let srv =
        TestServer::start_with(&config(&format!("public_keys = [\"{}\"]", data_path("stream-rsa.pub.pem")))).await;
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let rsa_other = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).unwrap();
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let good = claims("acme", &["*"], 300);
    let b64 = |v: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = serde_json::to_value(&good).unwrap();
    let mut no_tenant = payload.clone();
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let mut not_yet = good.clone();
    not_yet.nbf = Some((now() + 600) as u64);

    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong HS256 secret", mint_hs256(b"another-secret-0123456789abcdefghijk", &good), "signature"),
        ("expired", mint_hs256(JWT_SECRET.as_bytes(), &claims("acme", &["*"], -30)), "expired"),
        ("not yet valid", mint_hs256(JWT_SECRET.as_bytes(), &not_yet), "not valid yet"),
        ("alg none", format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(payload.clone())), "none"),
        ("RS256 with another key", signed(Algorithm::RS256, &rsa_other, &good), "signature"),
        ("ES256 with no EC key configured", signed(Algorithm::ES256, &ec, &good), "ES256"),
        // Algorithm confusion: the RSA public key used as an HMAC secret.
        ("HS256 keyed with the RSA public key", mint_hs256(RSA_PUBLIC, &good), "signature"),
        ("HS512", signed(Algorithm::HS512, &EncodingKey::from_secret(JWT_SECRET.as_bytes()), &good), "HS512"),
        (
            "missing tenant claim",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &no_tenant,
                &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            )
            .unwrap(),
            "claims",
        ),
        ("garbage", "not.a.jwt".into(), "malformed"),
    ];
    for (what, tok, reason) in cases {
        let mut c = connect(&srv, &tok).await;
        let (code, text) = c.closed().await;
        assert_eq!(code, 4401, "{what}: closed with {code} {text:?}");
        assert!(text.contains(reason), "{what}: reason {text:?} should mention {reason:?}");
        assert!(!text.contains(&tok), "{what}: the close reason echoes the token");
    }
    // The same RSA key's own RS256 token is accepted (so the refusals above are about the
    // tokens, not the key set), via the query parameter this time.
    let mut c = try_connect(&srv, &format!("?token={}", signed(Algorithm::RS256, &rsa, &good)), None).await.unwrap();
    c.subscribe("s", json!({}), json!("now")).await;
    // No token at all: the first message must be an auth message.
    let mut c = try_connect(&srv, "", None).await.unwrap();
    c.send(json!({"type": "subscribe", "id": "s"})).await;
    let (code, text) = c.closed().await;
    assert_eq!((code, text.contains("missing token")), (4401, true), "{text}");
}

/// Browsers cannot set headers: they send the token as the first message. ES256 and JWKS keys.
#[tokio::test]
async fn auth_message_es256_and_jwks() {
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let srv = TestServer::start_with(&config(&format!(
        "public_keys = [\"{}\"]\njwks_file = \"{}\"",
        data_path("stream-ec.pub.pem"),
        jwks.display()
    )))
    .await;
    let good = claims("acme", &["*"], 300);
    let mut kid = Header::new(Algorithm::RS256);
    kid.kid = Some("k1".into());
    let mut unknown_kid = kid.clone();
    unknown_kid.kid = Some("k2".into());
    for (what, tok, ok) in [
        ("ES256", signed(Algorithm::ES256, &ec, &good), true),
        ("RS256 from the JWKS", jsonwebtoken::encode(&kid, &good, &rsa).unwrap(), true),
        ("RS256 with an unknown kid", jsonwebtoken::encode(&unknown_kid, &good, &rsa).unwrap(), false),
    ] {
        let mut c = try_connect(&srv, "", None).await.unwrap();
        c.send(json!({"type": "auth", "token": tok})).await;
        c.send(json!({"type": "subscribe", "id": "s"})).await;
        match c.recv().await {
            Msg::Json(v) => assert!(ok && v["type"] == "subscribed", "{what}: {v}"),
            Msg::Closed(code, reason) => assert!(!ok && code == 4401, "{what}: closed {code} {reason}"),
        }
    }
}

#[tokio::test]
async fn not_configured_answers_503() {
    // Without the dashboard (whose own key would enable streams) and without a key.
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], "[dashboard]\nenabled = false\n")).await;
    match try_connect(&srv, "", Some("x")).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("stream.hs256_secrets"), "{body}");
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    let (s, v) = srv.get("/v1/stream/sse?token=x", None).await;
    assert_eq!((s, v["error"].as_str()), (503, Some("stream_not_configured")));
}

#[tokio::test]
async fn resume_after_disconnect_has_no_gap_and_no_duplicate() {
    let srv = TestServer::start_with(&config("")).await;
    let tok = token("acme", &["verification.*"]);
    let mut c = connect(&srv, &tok).await;
    c.subscribe("s", json!({"kinds": ["verification.*"]}), json!("earliest")).await;
    let mut first = Vec::new();
    for i in 0..6 {
        first.push(didit(&srv, &format!("r1-{i}"), "sess").await);
        standard(&srv, &format!("r1b-{i}"), "verification.status_updated", "sess").await;
    }
    // Read only some of them, then drop the connection without a goodbye.
    let got = c.events_until(|e| e.len() == 4).await;
    let mut seen = offsets(&got, "s");
    drop(c);
    for i in 0..6 {
        didit(&srv, &format!("r2-{i}"), "sess").await;
    }
    let last = didit(&srv, "r2-last", "sess").await;
    let mut c = connect(&srv, &tok).await;
    let resumed = c.subscribe("s", json!({"kinds": ["verification.*"]}), json!({"offset": seen[3]})).await;
    assert_eq!(resumed["from"], seen[3]);
    let got = c.events_until(reached("s", last)).await;
    seen.extend(offsets(&got, "s"));
    assert_eq!(seen, tenant_offsets(&srv, "acme").await, "resume lost or repeated events");

    // A start beyond the head is refused explicitly.
    c.send(json!({"type": "subscribe", "id": "f", "from": {"offset": last + 1000}})).await;
    let v = c.json().await;
    assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some("offset_in_future")), "{v}");
}

/// The core property: a client that stops reading while far more than its queue depth is
/// appended is switched to catching up from the log, and then receives every event exactly
/// once, in order — on each of its subscriptions — and rejoins live delivery.
#[tokio::test]
async fn slow_consumer_catches_up_without_loss() {
    let srv = TestServer::start_with(&config("send_queue_depth = 4")).await;
    let mut c = connect(&srv, &token("acme", &["*"])).await;
    c.subscribe("all", json!({}), json!("now")).await;
    c.subscribe("s1", json!({"session_id": "slow-s1"}), json!("now")).await;
    // The client reads nothing while all this arrives (beta's entries are noise).
    let mut expected = bulk(&srv, "slow", "acme", 600).await;
    bulk(&srv, "noise", "beta", 50).await;
    for i in 0..5 {
        expected.push(didit(&srv, &format!("slow-live-{i}"), "slow-s1").await);
    }
    expected.extend(bulk(&srv, "slow2", "acme", 300).await);
    let stats = srv.state.stream.stats();
    assert!(stats.catchups >= 1, "the queue never overflowed, so the test proves nothing: {stats:?}");

    let last = *expected.last().unwrap();
    let all_s1: Vec<u64> = srv
        .all_events()
        .await
        .iter()
        .filter(|e| e["tenant"] == "acme" && e["session_id"] == "slow-s1")
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    let got = c.events_until(|e| reached("all", last)(e) && reached("s1", *all_s1.last().unwrap())(e)).await;
    assert_eq!(offsets(&got, "all"), expected, "events lost, repeated or reordered on `all`");
    assert_eq!(offsets(&got, "s1"), all_s1, "events lost, repeated or reordered on `s1`");

    // Caught up: both subscriptions are live again, and new events arrive live.
    let deadline = tokio::time::Instant::now() + WAIT;
    while srv.state.stream.stats().catching_up > 0 {
        assert!(tokio::time::Instant::now() < deadline, "still catching up: {:?}", srv.state.stream.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let next = didit(&srv, "slow-after", "slow-s1").await;
    let got = c.events_until(|e| reached("all", next)(e) && reached("s1", next)(e)).await;
    assert_eq!((offsets(&got, "all"), offsets(&got, "s1")), (vec![next], vec![next]));
}

#[tokio::test]
async fn token_expiring_mid_stream_closes_with_4403() {
    let srv = TestServer::start_with(&config("")).await;
    let mut c = connect(&srv, &mint_hs256(JWT_SECRET.as_bytes(), &claims("acme", &["*"], 2))).await;
    c.subscribe("s", json!({}), json!("now")).await;
    let o = didit(&srv, "exp-1", "sess").await;
    assert_eq!(offsets(&c.events_until(|e| !e.is_empty()).await, "s"), [o]);
    let started = std::time::Instant::now();
    let (code, reason) = c.closed().await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn keepalive_reaps_silent_clients_only() {
    let srv = TestServer::start_with(&config("ping_interval_secs = 1")).await;
    let tok = token("acme", &["*"]);
    let mut silent = connect(&srv, &tok).await;
    let mut alive = connect(&srv, &tok).await;
    alive.subscribe("s", json!({}), json!("now")).await;
    // `alive` keeps reading (its library answers pings); `silent` reads nothing at all.
    let reader = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(3500);
        while let Ok(m) = tokio::time::timeout_at(until, alive.ws.next()).await {
            assert!(matches!(m, Some(Ok(Message::Ping(_)))), "unexpected {m:?}");
        }
        alive
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (code, _) = silent.closed().await;
    assert_eq!(code, 4408);
    let mut alive = reader.await.unwrap();
    alive.send(json!({"type": "ping"})).await;
    assert_eq!(alive.json().await["type"], "pong");
}

#[tokio::test]
async fn subscription_limits_and_protocol_errors() {
    let srv = TestServer::start_with(&config(
        "max_subscriptions_per_connection = 2\nmax_connections = 2\nmax_message_bytes = 1024",
    ))
    .await;
    let tok = token("acme", &["*"]);
    let mut c = connect(&srv, &tok).await;
    c.subscribe("a", json!({}), json!("now")).await;
    expect_error(&mut c, json!({"type": "subscribe", "id": "a"}), "duplicate_subscription").await;
    expect_error(&mut c, json!({"type": "unsubscribe", "id": "zz"}), "unknown_subscription").await;
    expect_error(&mut c, json!({"type": "subscribe", "id": "x", "filter": {"kinds": ["a*b"]}}), "invalid_filter").await;
    expect_error(&mut c, json!({"type": "subscribe", "id": "x", "filter": {"tenant": "beta"}}), "invalid_message")
        .await;
    expect_error(&mut c, json!({"type": "fly"}), "invalid_message").await;
    c.subscribe("b", json!({}), json!("now")).await;
    expect_error(&mut c, json!({"type": "subscribe", "id": "c"}), "too_many_subscriptions").await;
    c.send(json!({"type": "unsubscribe", "id": "a"})).await;
    assert_eq!(c.json().await["type"], "unsubscribed");
    c.subscribe("c", json!({}), json!("now")).await;
    assert_eq!(srv.state.stream.stats().subscriptions, 2);

    // max_connections = 2: a third is refused before the upgrade.
    let _second = connect(&srv, &tok).await;
    match try_connect(&srv, "", Some(&tok)).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // An oversize message ends the connection (and frees its slot).
    c.send(json!({"type": "subscribe", "id": "x".repeat(2000)})).await;
    assert!(matches!(c.recv().await, Msg::Closed(..)));
    let deadline = tokio::time::Instant::now() + WAIT;
    while srv.state.stream.stats().connections > 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    connect(&srv, &tok).await.subscribe("ok", json!({}), json!("now")).await;
}

async fn expect_error(c: &mut Client, msg: Value, code: &str) {
    c.send(msg).await;
    let v = c.json().await;
    assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some(code)), "{v}");
}

// ---------------------------------------------------------------------------------------------
// SSE

struct Sse {
    resp: reqwest::Response,
    buf: String,
}

/// One SSE event: (event name, id, data).
type SseEvent = (Option<String>, Option<String>, String);

impl Sse {
    async fn open(srv: &TestServer, query: &str, last_event_id: Option<u64>) -> Result<Sse, (u16, Value)> {
        let mut req = srv.client.get(srv.url(&format!("/v1/stream/sse{query}")));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        if resp.status() != 200 {
            let s = resp.status().as_u16();
            return Err((s, resp.json().await.unwrap_or(Value::Null)));
        }
        Ok(Sse { resp, buf: String::new() })
    }

    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let (mut event, mut id, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() && event.is_none() {
                    continue; // a keep-alive comment
                }
                return (event, id, data);
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk()).await.expect("SSE data within the wait");
            self.buf.push_str(std::str::from_utf8(&chunk.unwrap().expect("stream open")).unwrap());
        }
    }

    /// Event ids (offsets) until `last`, checking that each id is the event's own offset.
    async fn offsets_until(&mut self, last: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while out.last().is_none_or(|&o| o < last) {
            let (event, id, data) = self.next().await;
            if event.as_deref() == Some("subscribed") {
                continue;
            }
            assert_eq!(event, None, "{data}");
            let v: Value = serde_json::from_str(&data).unwrap();
            let id: u64 = id.unwrap().parse().unwrap();
            assert_eq!(v["offset"], id);
            assert_eq!(v["tenant"], "acme", "SSE leaked another tenant: {v}");
            out.push(id);
        }
        out
    }
}

#[tokio::test]
async fn sse_filters_and_resumes_with_last_event_id() {
    let srv = TestServer::start_with(&config("")).await;
    let tok = token("acme", &["verification.*"]);
    let mut acme = Vec::new();
    for i in 0..4 {
        acme.push(didit(&srv, &format!("sse-{i}"), "sse-s").await);
        standard(&srv, &format!("sse-b-{i}"), "verification.status_updated", "sse-s").await;
    }
    // Resume from the second acme event: everything after it, in order.
    let mut sse = Sse::open(&srv, &format!("?kinds=verification.*&token={tok}"), Some(acme[1])).await.unwrap();
    for i in 4..6 {
        acme.push(didit(&srv, &format!("sse-{i}"), "sse-s").await);
    }
    let got = sse.offsets_until(*acme.last().unwrap()).await;
    assert_eq!(got, acme[2..]);
    // `?after=` and a bearer header work too; a session filter narrows it.
    let other = didit(&srv, "sse-other", "sse-other").await;
    let resp = srv
        .client
        .get(srv.url(&format!("/v1/stream/sse?after={}&session_id=sse-other", acme[0])))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let mut sse = Sse { resp, buf: String::new() };
    assert_eq!(sse.offsets_until(other).await, [other]);

    for (query, status, code) in [
        ("?token=nope".to_owned(), 401, "invalid_token"),
        (format!("?token={}", mint_hs256(JWT_SECRET.as_bytes(), &claims("acme", &["*"], -30))), 401, "token_expired"),
        (format!("?token={tok}&after=999999"), 400, "offset_in_future"),
        (format!("?token={tok}&tenant=beta"), 400, "invalid_parameter"),
    ] {
        let err = Sse::open(&srv, &query, None).await.err().expect("refused");
        assert_eq!((err.0, err.1["error"].as_str()), (status, Some(code)), "{query}: {}", err.1);
    }
}

// ---------------------------------------------------------------------------------------------
// `idstream watch`

/// A `Write` the test can read while `watch` writes.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn offsets(&self) -> Vec<u64> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["offset"].as_u64().unwrap()).collect()
    }
}

/// `watch` prints every event once across a server restart: it reconnects with backoff and
/// resumes after the last offset it printed.
#[tokio::test]
async fn watch_resumes_across_a_server_restart() {
    let toml = config("");
    let srv = TestServer::start_with(&toml).await;
    let addr = srv.base.trim_start_matches("http://").to_owned();
    for i in 0..3 {
        didit(&srv, &format!("w1-{i}"), "w").await;
    }
    let args = idstream_tools::watch::WatchArgs {
        url: ws_url(&srv, ""),
        token: Some(token("acme", &["verification.*"])),
        token_file: None,
        kinds: vec!["verification.*".into()],
        session: None,
        subject: None,
        from: "earliest".into(),
        max_events: Some(6),
    };
    let out = Shared::default();
    let watcher = tokio::spawn({
        let mut out = out.clone();
        async move { idstream_tools::watch::watch(&args, &mut out).await }
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.offsets().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "watch printed {:?}", out.offsets());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = srv.stop().await;
    let srv = TestServer::start_at(dir, &toml, &addr).await;
    for i in 0..3 {
        didit(&srv, &format!("w2-{i}"), "w").await;
    }
    let printed = tokio::time::timeout(WAIT, watcher).await.expect("watch finishes").unwrap().unwrap();
    assert_eq!(printed, 6);
    assert_eq!(out.offsets(), tenant_offsets(&srv, "acme").await);
}

/// When the tailer lags behind a subscription that caught up from the log, it offers entries
/// the client already has; they must not be sent twice. Made deterministic by running the
/// server's router with a tailer the test stops and restarts.
#[tokio::test]
async fn lagging_tailer_never_duplicates() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = idstream_server::config::Config::from_toml(&config("")).unwrap();
    cfg.server.data_dir = dir.path().to_path_buf();
    // Opened, not served: no tailer or worker runs until the test starts one.
    let state = Arc::new(idstream_server::state::AppState::open(&cfg).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        idstream_server::http::router(state.clone()),
    )));
    let append = |ids: std::ops::Range<usize>| {
        let state = state.clone();
        async move {
            let entries = ids.map(|i| bulk_entry(&format!("lag-{i}"), "acme")).collect();
            state.log.append(entries).await.unwrap().iter().map(|a| a.offset).collect::<Vec<u64>>()
        }
    };
    let tailer = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(state.stream.clone().run(tailer.clone()));
    let first = append(0..10).await;
    // The tailer offers 1..=10 (to nobody); the connection registers after that point.
    while state.stream.stats().dispatched < first[9] {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = try_connect_base(&base, "", Some(&token("acme", &["*"]))).await.unwrap();
    tailer.cancel();
    running.await.unwrap();
    let second = append(10..20).await;
    // Catches up from the log through 20 while the tailer has offered only up to 10.
    c.subscribe("s", json!({}), json!({"offset": first[4]})).await;
    let got = c.events_until(reached("s", second[9])).await;
    let want: Vec<u64> = first[5..].iter().chain(&second).copied().collect();
    assert_eq!(offsets(&got, "s"), want);
    assert_eq!(state.stream.stats().catching_up, 0, "the subscription should have rejoined");
    // A new tailer continues from 10 and offers 11..=20 again, then the new entry.
    let tailer = tokio_util::sync::CancellationToken::new();
    tokio::spawn(state.stream.clone().run(tailer.clone()));
    let next = append(20..21).await[0];
    let got = c.events_until(reached("s", next)).await;
    assert_eq!(offsets(&got, "s"), [next], "entries already delivered were sent again");
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.json().await["type"], "pong");
    tailer.cancel();
}

/// Retention removes old entries; a client asking for one of them is told so explicitly
/// (WebSocket error, SSE and read API 410), never handed a silent gap.
#[tokio::test]
async fn offsets_older_than_retention_are_refused_explicitly() {
    let srv = TestServer::start_with(&config("")).await;
    let offs = bulk(&srv, "old", "acme", 10).await;
    assert_eq!(srv.state.log.prune(offs[4], 1000).await.unwrap(), offs[4]);
    let tok = token("acme", &["*"]);
    let mut c = connect(&srv, &tok).await;
    c.send(json!({"type": "subscribe", "id": "old", "from": {"offset": offs[1]}})).await;
    let v = c.json().await;
    assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some("offset_expired")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("retention"), "{v}");
    // From the last removed offset, or from `earliest`: everything retained, nothing missing.
    for (id, from) in [("edge", json!({"offset": offs[4]})), ("first", json!("earliest"))] {
        c.subscribe(id, json!({}), from).await;
        let mut got = Vec::new();
        while got.len() < 5 {
            let v = c.json().await;
            if v["type"] == "event" && v["subscription"] == id {
                got.push(v["offset"].as_u64().unwrap());
            }
        }
        assert_eq!(got, offs[5..].to_vec(), "{id}");
    }
    let err = Sse::open(&srv, &format!("?token={tok}"), Some(offs[2])).await.err().expect("refused");
    assert_eq!((err.0, err.1["error"].as_str()), (410, Some("offset_expired")), "{}", err.1);
    let (s, v) = srv.get(&format!("/v1/events?after={}", offs[0]), Some(KEY_ACME)).await;
    assert_eq!((s, v["error"].as_str()), (410, Some("offset_expired")), "{v}");
    let (s, v) = srv.get("/v1/events", Some(KEY_ACME)).await;
    assert_eq!(s, 200);
    let first: Vec<u64> = v["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(first, offs[5..].to_vec());
}
