//! The analyst dashboard: its page and files (served from the binary, strict CSP) and the stream
//! tokens the page gets from its login session — signed with idstream's own key when `[stream]`
//! has none, accepted by the live stream, bound to the user's tenant, kept across restarts.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::decisions::kyc_body;
use crate::helpers::*;

const PASSWORD: &str = "correct horse battery staple";

/// Makes a user of tenant `acme` with the admin key and logs them in: (cookie, csrf token).
pub async fn login_as(srv: &TestServer, username: &str, role: &str) -> (String, String) {
    let body = json!({"username": username, "role": role, "password": PASSWORD});
    let (s, v) = srv.call("POST", "/v1/users", Some(KEY_ACME), Some(body.to_string().into_bytes())).await;
    assert_eq!(s, 201, "{v}");
    login(srv, username).await
}

pub async fn login(srv: &TestServer, username: &str) -> (String, String) {
    let resp = srv
        .client
        .post(srv.url("/v1/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let v: Value = resp.json().await.unwrap();
    (cookie, v["csrf_token"].as_str().unwrap().to_owned())
}

async fn token_call(srv: &TestServer, cookie: &str, csrf: Option<&str>, body: Value) -> (u16, Value, String) {
    let mut req = srv.client.post(srv.url("/v1/stream/token")).header("cookie", cookie).json(&body);
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    let resp = req.send().await.unwrap();
    let cache = resp.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (resp.status().as_u16(), resp.json().await.unwrap(), cache)
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Subscribes with `token` (sent as the first message, as the page does) and waits for the
/// first event of `kind`.
async fn first_event(
    srv: &TestServer,
    token: &str,
    kind: &str,
    after_subscribe: impl std::future::Future<Output = ()>,
) -> Value {
    let url = format!("{}/v1/stream", srv.base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket handshake");
    ws.send(Message::text(json!({"type": "auth", "token": token}).to_string())).await.unwrap();
    ws.send(Message::text(json!({"type": "subscribe", "id": "feed", "from": "now"}).to_string())).await.unwrap();
    let mut after = Some(Box::pin(after_subscribe));
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("a message in time");
        let m = m.expect("the stream stays open").unwrap();
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("subscribed") => {
                if let Some(f) = after.take() {
                    f.await;
                }
            }
            Some("event") if v["event"]["kind"] == kind => return v["event"].clone(),
            Some("event") => {}
            other => panic!("unexpected message {other:?}: {v}"),
        }
    }
}

#[tokio::test]
async fn the_page_is_served_from_the_binary_with_a_strict_csp() {
    let srv = TestServer::start_ingest_only().await;
    let resp = srv.client.get(srv.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in
        ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]
    {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"href="/v1/auth/oidc/login" hidden>"#), "no OIDC configured: the SSO link is hidden");
    // Every file the page and its modules load is served, from this origin, with the same CSP.
    let mut files: Vec<String> = Vec::new();
    let mut queue = vec![html.clone()];
    while let Some(text) = queue.pop() {
        for (i, _) in text.match_indices("/assets/").chain(text.match_indices("\"./")) {
            let rest = &text[i..];
            let end = rest[1..].find(['"', '\'', ')', ' ']).map(|e| e + 1).unwrap_or(rest.len());
            let name = rest[..end].trim_start_matches('"').trim_start_matches("./").trim_start_matches("/assets/");
            // Only files (a type reference in a JSDoc comment, `import("./types/…")`, is not one).
            let served = ["js", "css", "svg", "html"].iter().any(|ext| name.ends_with(&format!(".{ext}")));
            if name.is_empty() || !served || files.iter().any(|f| f == name) {
                continue;
            }
            files.push(name.to_owned());
            let r = srv.client.get(srv.url(&format!("/assets/{name}"))).send().await.unwrap();
            assert_eq!(r.status(), 200, "{name}");
            assert_eq!(r.headers()["content-security-policy"].to_str().unwrap(), csp);
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            let body = r.text().await.unwrap();
            if name.ends_with(".js") {
                assert!(ct.starts_with("text/javascript"), "{name}: {ct}");
                queue.push(body);
            } else if name.ends_with(".css") {
                assert!(ct.starts_with("text/css"), "{name}: {ct}");
            }
        }
    }
    for f in ["app.js", "api.js", "feed.js", "screens.js", "overview.js", "app.css", "favicon.svg"] {
        assert!(files.iter().any(|x| x == f), "{f} not reached from the page: {files:?}");
    }
    // Nothing from elsewhere.
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    let (s, v) = srv.get("/assets/nope.js", None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("asset_not_found")));
    let (s, v) = srv.get("/assets/..%2Fapp.js", None).await;
    assert_eq!(s, 404, "{v}");

    // Turned off: no page, no files.
    let off = TestServer::start_with(&base_config(&[SECRET_NEW], "[dashboard]\nenabled = false\n")).await;
    for path in ["/", "/assets/app.js"] {
        let (s, v) = off.get(path, None).await;
        assert_eq!((s, v["error"].as_str()), (404, Some("dashboard_disabled")), "{path}");
    }
}

#[tokio::test]
async fn a_logged_in_user_streams_with_a_page_token_signed_by_idstream() {
    // No [stream] keys: idstream signs page tokens with its own key, and the stream accepts them.
    let srv = TestServer::start().await;
    let (cookie, csrf) = login_as(&srv, "ana", "analyst").await;

    // A cookie call that changes something needs the CSRF token; no session at all is 401.
    let (s, v, _) = token_call(&srv, &cookie, None, json!({})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("csrf_token_invalid")));
    let (s, v) = srv.call("POST", "/v1/stream/token", None, None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_api_key")));
    // Another tenant's stream is refused.
    let (s, v, _) = token_call(&srv, &cookie, Some(&csrf), json!({"tenant": "beta"})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("wrong_tenant")));

    let (s, v, cache) = token_call(&srv, &cookie, Some(&csrf), json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(cache, "no-store");
    assert_eq!(v["tenant"], "acme");
    let ttl = v["expires_in_secs"].as_u64().unwrap();
    assert!((290..=300).contains(&ttl), "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let c = claims(&token);
    assert_eq!((c["tenant"].as_str(), c["sub"].as_str()), (Some("acme"), Some("user:ana")));
    assert_eq!(c["exp"].as_u64(), v["expires_at"].as_u64());

    // The token opens the live stream and the user's tenant's events arrive.
    let srv2 = &srv;
    let ev = first_event(srv2, &token, "verification.status_updated", async move {
        let body = kyc_body("dash-1", "dash-s1", "dash-u1", "Approved", |_| {});
        let (s, _) = srv2.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
        assert_eq!(s, 200);
    })
    .await;
    assert_eq!((ev["session_id"].as_str(), ev["tenant"].as_str()), (Some("dash-s1"), Some("acme")));

    // A token idstream did not sign is still refused.
    let forged = idstream_server::stream::auth::mint_hs256(
        b"not-idstreams-key-0123456789abcdef",
        &serde_json::from_value(c.clone()).unwrap(),
    );
    let (s, v) = srv.get(&format!("/v1/stream/sse?token={forged}"), None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_token")), "{v}");

    // The key lives with the data directory: a token from before a restart still works.
    let dir = srv.stop().await;
    let again = TestServer::start_in(dir, &base_config(&[SECRET_NEW, SECRET_OLD], "")).await;
    let resp = again.client.get(again.url(&format!("/v1/stream/sse?token={token}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // An all-tenant API key names the tenant; an identity with no stream rights does not exist
    // (every role reads events), so the role table is exercised by the OpenAPI test.
    let (s, v) = again.call("POST", "/v1/stream/token", Some(KEY_ALL), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("tenant_required")));
    let (s, v) = again.call("POST", "/v1/stream/token", Some(KEY_ALL), Some(br#"{"tenant":"beta"}"#.to_vec())).await;
    assert_eq!((s, v["tenant"].as_str()), (200, Some("beta")), "{v}");
}

#[tokio::test]
async fn page_tokens_are_signed_with_the_configured_secret_when_there_is_one() {
    let secret = "dashboard-test-hs256-secret-0123456789abcdef";
    let srv =
        TestServer::start_with(&base_config(&[SECRET_NEW], &format!("[stream]\nhs256_secrets = [\"{secret}\"]\n")))
            .await;
    let (s, v) = srv.call("POST", "/v1/stream/token", Some(KEY_ACME), None).await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()), &validation)
            .expect("signed with the configured secret");
    assert_eq!(data.claims["tenant"], "acme");
    assert_eq!(data.claims["kinds"], json!(["*"]));

    // With the dashboard off and no secret, there is nothing to sign with: 503.
    let off = TestServer::start_with(&base_config(&[SECRET_NEW], "[dashboard]\nenabled = false\n")).await;
    let (s, v) = off.call("POST", "/v1/stream/token", Some(KEY_ACME), None).await;
    assert_eq!((s, v["error"].as_str()), (503, Some("stream_not_configured")));
}

#[tokio::test]
async fn page_tokens_never_outlive_the_login_session() {
    let cfg = base_config(&[SECRET_NEW], "[auth]\nsession_max_secs = 120\n[dashboard]\nstream_token_ttl_secs = 3600\n");
    let srv = TestServer::start_with(&cfg).await;
    let (cookie, csrf) = login_as(&srv, "vic", "viewer").await;
    let (s, v, _) = token_call(&srv, &cookie, Some(&csrf), json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["expires_in_secs"].as_u64().unwrap() <= 120, "{v}");
    // A viewer may watch the stream; the token is bound to their tenant.
    assert_eq!(claims(v["token"].as_str().unwrap())["tenant"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
async fn on_nats_and_postgres_every_node_accepts_every_nodes_page_tokens() {
    let b = crate::backends::ScaleOut::fresh("dashtokens").await;
    let cfg = base_config(&[SECRET_NEW], &b.toml());
    let (a, other) = (TestServer::start_with(&cfg).await, TestServer::start_with(&cfg).await);
    let (cookie, csrf) = login_as(&a, "ana", "analyst").await;
    let (s, v, _) = token_call(&a, &cookie, Some(&csrf), json!({})).await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    // Logged in on node A, streaming from node B (a load balancer may send the page anywhere).
    let ev = first_event(&other, &token, "verification.status_updated", async {
        let body = kyc_body("dash-pg-1", "dash-pg-s1", "dash-pg-u1", "Approved", |_| {});
        let (s, _) = a.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
        assert_eq!(s, 200);
    })
    .await;
    assert_eq!(ev["session_id"], "dash-pg-s1");
    // And the login session works on node B too (the store is shared).
    let (s, v, _) = token_call(&other, &cookie, Some(&csrf), json!({})).await;
    assert_eq!(s, 200, "{v}");
}
