//! Access: the role × endpoint matrix over real HTTP, API keys made and revoked at run time
//! (also across two scale-out nodes), login sessions (cookie flags, CSRF, idle and absolute
//! expiry, logout, lockout), the recorded actor, rate limits, `Idempotency-Key`, and a scan of
//! a real server's log output for every secret the suite used.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::backends::ScaleOut;
use crate::decisions::kyc_body;
use crate::helpers::*;
use idstream_server::domain::Role;
use idstream_server::http::authz::{Action, ROUTES};

const RULESET: &str = "version_label: LABEL\nthresholds: {review_score: 50, decline_score: 100}\nrules:\n  \
  - id: aml\n    when: has(aml.hits) && aml.hits > 0\n    outcome: review\n    reason: aml.hits\n    message: AML hits.\n";

fn keys_for_every_role() -> String {
    Role::ALL.iter().map(|r| role_key(&format!("as-{}", r.as_str()), "acme", r.as_str())).collect()
}

async fn post_webhook(srv: &TestServer, body: Vec<u8>) -> (u16, Value) {
    srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await
}

/// Every route of the table, called by every role with a request that succeeds when the role
/// may make it: `2xx` for the allowed roles, `403` naming the role for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_what_the_matrix_allows() {
    // A provider account (our own Didit sandbox) for the verification calls.
    let sb = crate::verifications::Sandbox::start().await;
    let provider = format!(
        "[[providers]]\nid = \"didit\"\nkind = \"didit\"\napi_key = \"{}\"\nbase_url = \"{}\"\n\
         workflow_id = \"wf-default\"\nsource = \"didit-main\"\n",
        crate::verifications::DIDIT_API_KEY,
        sb.base
    );
    let srv = TestServer::start_with(&base_config(
        &[SECRET_NEW],
        &format!(
            "[rate_limits]\nenabled = false\n[notifications]\nallow_private_addresses = true\n{}{provider}",
            keys_for_every_role()
        ),
    ))
    .await;
    let n = Role::ALL.len();
    // One of everything per role, so each allowed call has something to act on.
    let aml = |v: &mut Value| v["decision"]["aml_screenings"][0]["total_hits"] = 2.into();
    for i in 0..n {
        let (s, v) =
            post_webhook(&srv, kyc_body(&format!("m-e{i}"), &format!("m-s{i}"), &format!("m-u{i}"), "In Review", aml))
                .await;
        assert_eq!(s, 200, "{v}");
    }
    // Cases to release and to escalate: each claimed beforehand by the role that may.
    for prefix in ["m-rel", "m-esc"] {
        for i in 0..n {
            let body =
                kyc_body(&format!("{prefix}-e{i}"), &format!("{prefix}{i}"), &format!("m-u{i}"), "In Review", aml);
            assert_eq!(post_webhook(&srv, body).await.0, 200);
        }
    }
    srv.decided().await;
    let (_, v) = srv.get("/v1/reviews", Some(KEY_ACME)).await;
    let mut reviews: Vec<(String, String)> = v["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["session_id"].as_str().unwrap().to_owned(), r["id"].as_str().unwrap().to_owned()))
        .collect();
    reviews.sort();
    let mut moves = std::collections::HashMap::new();
    // Cases to ask a resubmission for: real sandbox sessions (Didit is told), one per role.
    sb.webhooks_to(&srv).await;
    let mut resubmit_sessions = Vec::new();
    for i in 0..n {
        let body = json!({"subject": format!("m-rsb-u{i}")});
        let (s, v) = srv.call("POST", "/v1/verifications", Some(KEY_ACME), json_body(body)).await;
        assert_eq!(s, 201, "{v}");
        let session = v["session_id"].as_str().unwrap().to_owned();
        sb.complete(&session, "aml_hit").await;
        resubmit_sessions.push(session);
    }
    for prefix in ["m-rel", "m-esc", "m-rsb"] {
        let mut ids = Vec::new();
        for (i, role) in Role::ALL.iter().enumerate() {
            let session = if prefix == "m-rsb" { resubmit_sessions[i].clone() } else { format!("{prefix}{i}") };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let id = loop {
                let (_, v) = srv.get(&format!("/v1/reviews?session_id={session}"), Some(KEY_ACME)).await;
                if let Some(id) = v["reviews"][0]["id"].as_str() {
                    break id.to_owned();
                }
                assert!(std::time::Instant::now() < deadline, "no case for {session}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            if Action::ActOnReviews.roles().contains(role) {
                let key = format!("key-as-{}", role.as_str());
                let (s, v) = srv.call("POST", &format!("/v1/reviews/{id}/claim"), Some(&key), None).await;
                assert_eq!(s, 200, "{v}");
            }
            ids.push(id);
        }
        moves.insert(prefix, ids);
    }
    reviews.retain(|(s, _)| s.starts_with("m-s"));
    assert_eq!(reviews.len(), n, "{v}");
    let body = json!({"username": "m-analyst", "role": "analyst", "password": "a long enough password"});
    assert_eq!(srv.call("POST", "/v1/users", Some(KEY_ACME), json_body(body)).await.0, 201);
    let (_, events) = srv.get("/v1/events?limit=1", Some(KEY_ACME)).await;
    let event_id = events["events"][0]["id"].as_str().unwrap().to_owned();
    let sess = srv.get("/v1/sessions/m-s0", Some(KEY_ACME)).await.1;
    let decision_id = sess["decisions"][0]["id"].as_str().expect("a decision id").to_owned();
    srv.call("PUT", "/v1/subjects/m-u0", Some(KEY_ACME), json_body(json!({"country": "DE"}))).await;
    let up =
        srv.call("POST", "/v1/rulesets", Some(KEY_ACME), Some(RULESET.replace("LABEL", "base").into_bytes())).await;
    let version = up.1["version"].as_str().unwrap().to_owned();
    let (s, v) = srv.call("POST", "/v1/verifications", Some(KEY_ACME), json_body(json!({"subject": "m-v"}))).await;
    assert_eq!(s, 201, "{v}");
    let verification = v["session_id"].as_str().unwrap().to_owned();
    let (s, v) = upload_document(&srv, KEY_ACME, "m-doc").await;
    assert_eq!(s, 201, "{v}");
    let document = v["documents"][0]["id"].as_str().unwrap().to_owned();
    // One notification endpoint per role (each may delete its own).
    for id in (0..n).flat_map(|i| [format!("m-hook-{i}"), format!("m-del-{i}")]) {
        let body = json!({"id": id, "url": "http://127.0.0.1:9/hook", "kinds": ["decision.*"]});
        let (s, v) = srv.call("POST", "/v1/endpoints", Some(KEY_ACME), json_body(body)).await;
        assert_eq!(s, 201, "{v}");
    }
    let mut entries = Vec::new();
    let mut keys = Vec::new();
    let mut users = Vec::new();
    for i in 0..n {
        let (s, v) = srv
            .call(
                "POST",
                "/v1/blocklists/email",
                Some(KEY_ACME),
                json_body(json!({"value": format!("m{i}@example.com")})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        entries.push(v["id"].as_str().unwrap().to_owned());
        let (s, v) = srv
            .call(
                "POST",
                "/v1/api-keys",
                Some(KEY_ACME),
                json_body(json!({"name": format!("m-{i}"), "role": "viewer"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        keys.push(v["id"].as_str().unwrap().to_owned());
        let body = json!({"username": format!("m-user-{i}"), "role": "viewer", "password": "a long enough password"});
        let (s, v) = srv.call("POST", "/v1/users", Some(KEY_ACME), json_body(body)).await;
        assert_eq!(s, 201, "{v}");
        users.push(v["id"].as_str().unwrap().to_owned());
    }

    let mut table = Vec::new();
    for (i, role) in Role::ALL.iter().enumerate() {
        let key = format!("key-as-{}", role.as_str());
        for (method, template, action) in ROUTES {
            if matches!(action, Action::Public | Action::Login) {
                continue;
            }
            let (path, body): (String, Option<Vec<u8>>) = match *template {
                "/v1/events" => ("/v1/events".into(), None),
                "/v1/events/{id}" => (format!("/v1/events/{event_id}"), None),
                "/v1/events/{id}/body" => (format!("/v1/events/{event_id}/body"), None),
                "/v1/decisions/{id}" => (format!("/v1/decisions/{decision_id}"), None),
                "/v1/sessions/{id}" => ("/v1/sessions/m-s0".into(), None),
                "/v1/search" => ("/v1/search?kind=document&value=P-m-u0".into(), None),
                "/v1/stats" => ("/v1/stats".into(), None),
                "/v1/subjects/{id}" => ("/v1/subjects/m-u0".into(), json_body(json!({"role_test": role.as_str()}))),
                "/v1/rulesets" => ("/v1/rulesets".into(), Some(RULESET.replace("LABEL", role.as_str()).into_bytes())),
                "/v1/rulesets/{version}" => (format!("/v1/rulesets/{version}"), None),
                "/v1/rulesets/{version}/activate" => (format!("/v1/rulesets/{version}/activate"), None),
                "/v1/rulesets/validate" => {
                    ("/v1/rulesets/validate".into(), Some(RULESET.replace("LABEL", "v").into_bytes()))
                }
                "/v1/backtests" => {
                    ("/v1/backtests".into(), json_body(json!({"ruleset": RULESET.replace("LABEL", "bt")})))
                }
                "/v1/blocklists/{kind}" => (
                    "/v1/blocklists/email".into(),
                    json_body(json!({"value": format!("{}@example.com", role.as_str())})),
                ),
                "/v1/blocklists/{kind}/preview" => {
                    ("/v1/blocklists/email/preview".into(), json_body(json!({"value": "p@example.com"})))
                }
                "/v1/rulesets/test" => (
                    "/v1/rulesets/test".into(),
                    json_body(json!({"cases": "cases:\n  - name: a\n    expect: {outcome: review}\n"})),
                ),
                "/v1/blocklists/{kind}/{id}" => (format!("/v1/blocklists/email/{}", entries[i]), None),
                "/v1/reviews" => ("/v1/reviews".into(), None),
                "/v1/reviews/{id}" => (format!("/v1/reviews/{}", reviews[i].1), None),
                "/v1/reviews/{id}/claim" => (format!("/v1/reviews/{}/claim", reviews[i].1), None),
                "/v1/reviews/{id}/release" => (format!("/v1/reviews/{}/release", moves["m-rel"][i]), None),
                "/v1/reviews/{id}/escalate" => (format!("/v1/reviews/{}/escalate", moves["m-esc"][i]), None),
                "/v1/reviews/{id}/resubmit" => (
                    format!("/v1/reviews/{}/resubmit", moves["m-rsb"][i]),
                    json_body(json!({"note": "please retake the photo"})),
                ),
                "/v1/reviews/{id}/reassign" => {
                    (format!("/v1/reviews/{}/reassign", moves["m-rel"][i]), json_body(json!({"to": "m-analyst"})))
                }
                "/v1/reviews/{id}/resolve" => (
                    format!("/v1/reviews/{}/resolve", reviews[i].1),
                    json_body(json!({"outcome": "approve", "note": "ok"})),
                ),
                "/v1/api-keys" if *method == "GET" => ("/v1/api-keys".into(), None),
                "/v1/api-keys" => (
                    "/v1/api-keys".into(),
                    json_body(json!({"name": format!("made-by-{}", role.as_str()), "role": "viewer"})),
                ),
                "/v1/api-keys/{id}" => (format!("/v1/api-keys/{}", keys[i]), None),
                "/v1/users" if *method == "GET" => ("/v1/users".into(), None),
                "/v1/users" => (
                    "/v1/users".into(),
                    json_body(
                        json!({"username": format!("by-{}", role.as_str()), "role": "viewer", "password": "another long password"}),
                    ),
                ),
                "/v1/users/{id}" if *method == "GET" => (format!("/v1/users/{}", users[i]), None),
                "/v1/users/{id}" => (format!("/v1/users/{}", users[i]), json_body(json!({"role": "analyst"}))),
                // Own: an API key has no session to end.
                "/v1/auth/logout" => continue,
                "/v1/auth/me" => ("/v1/auth/me".into(), None),
                "/v1/stream/token" => ("/v1/stream/token".into(), None),
                "/v1/verifications" => {
                    ("/v1/verifications".into(), json_body(json!({"subject": format!("m-v-{}", role.as_str())})))
                }
                "/v1/verifications/{session_id}" => (format!("/v1/verifications/{verification}"), None),
                // Multipart: sent below.
                "/v1/verifications/document" => ("/v1/verifications/document".into(), None),
                "/v1/documents/{id}" => (format!("/v1/documents/{document}"), None),
                "/v1/endpoints" if *method == "GET" => ("/v1/endpoints".into(), None),
                "/v1/endpoints" => (
                    "/v1/endpoints".into(),
                    json_body(json!({"url": "http://127.0.0.1:9/by-role", "kinds": ["decision.*"]})),
                ),
                "/v1/endpoints/{id}" if *method == "PATCH" => {
                    (format!("/v1/endpoints/m-hook-{i}"), json_body(json!({"disabled": true})))
                }
                "/v1/endpoints/{id}" if *method == "DELETE" => (format!("/v1/endpoints/m-del-{i}"), None),
                "/v1/endpoints/{id}" => (format!("/v1/endpoints/m-hook-{i}"), None),
                "/v1/endpoints/{id}/deliveries" => (format!("/v1/endpoints/m-hook-{i}/deliveries"), None),
                "/v1/endpoints/{id}/replay" => {
                    (format!("/v1/endpoints/m-hook-{i}/replay"), json_body(json!({"from_offset": 1})))
                }
                other => panic!("the matrix test has no request for {method} {other}: add one"),
            };
            let (status, v) = if *template == "/v1/verifications/document" {
                upload_document(&srv, &key, &format!("m-doc-{}", role.as_str())).await
            } else {
                srv.call(method, &path, Some(&key), body).await
            };
            let allowed = action.roles().contains(role);
            if allowed {
                assert!((200..300).contains(&status), "{} {method} {template}: {status} {v}", role.as_str());
            } else {
                assert_eq!(status, 403, "{} {method} {template}: {v}", role.as_str());
                assert_eq!(v["error"], "forbidden");
                let msg = v["message"].as_str().unwrap();
                assert!(msg.starts_with(&format!("role {} cannot ", role.as_str())), "{msg}");
            }
            table.push(format!("{} {method} {template} {status}", role.as_str()));
        }
    }
    // Every (role, route) pair was called.
    let routes =
        ROUTES.iter().filter(|(_, p, a)| !matches!(a, Action::Public | Action::Login) && *p != "/v1/auth/logout");
    assert_eq!(table.len(), routes.count() * n);
}

/// Keys made through the API are shown once, work at once, record their last use, and once
/// revoked are refused from the next request on; config keys are read-only; every change is an
/// `access.*` event naming the admin who made it.
#[tokio::test]
async fn api_keys_are_made_used_and_revoked_at_run_time() {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], &role_key("vic", "acme", "viewer"))).await;
    let (s, made) =
        srv.call("POST", "/v1/api-keys", Some(KEY_ACME), json_body(json!({"name": "ci", "role": "service"}))).await;
    assert_eq!(s, 201, "{made}");
    let key = made["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ids_") && key.len() > 40, "{key}");
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!((made["tenant"].as_str(), made["role"].as_str()), (Some("acme"), Some("service")));
    // The list never shows a key, only its metadata; the other tenant's keys are not listed.
    let (_, list) = srv.get("/v1/api-keys", Some(KEY_ACME)).await;
    assert!(!list.to_string().contains(&key));
    let (_, beta) = srv.get("/v1/api-keys", Some(KEY_BETA)).await;
    assert!(!beta.to_string().contains(&id), "{beta}");
    // A service key reads decisions but cannot act on reviews or manage keys.
    assert_eq!(srv.get("/v1/events", Some(&key)).await.0, 200);
    let (s, v) = srv.call("POST", "/v1/api-keys", Some(&key), json_body(json!({"name": "x", "role": "admin"}))).await;
    assert_eq!((s, v["message"].as_str()), (403, Some("role service cannot create or revoke API keys")), "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, list) = srv.get("/v1/api-keys", Some(KEY_ACME)).await;
    let rec = list["keys"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap().clone();
    assert!(rec["last_used_at"].is_string(), "last use is recorded: {rec}");
    assert_eq!(rec["created_by"], "acme");
    // Config keys cannot be revoked through the API.
    let (s, v) = srv.call("DELETE", "/v1/api-keys/config:acme", Some(KEY_ACME), None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("config"), "{v}");
    // Another tenant's admin cannot revoke it.
    assert_eq!(srv.call("DELETE", &format!("/v1/api-keys/{id}"), Some(KEY_BETA), None).await.0, 404);
    assert_eq!(srv.call("DELETE", &format!("/v1/api-keys/{id}"), Some(KEY_ACME), None).await.0, 200);
    let (s, v) = srv.get("/v1/events", Some(&key)).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_api_key")), "{v}");
    // The changes are in the log under idstream's own kinds, attributed to the admin.
    let (_, ev) = srv.get("/v1/events?limit=1000", Some(KEY_ACME)).await;
    let kinds: Vec<(&str, &str)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("access."))
        .map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(kinds, [("access.key_created", "acme"), ("access.key_revoked", "acme")], "{ev}");
    assert!(!ev.to_string().contains(&key));
}

/// Two scale-out nodes share keys: one made on node A works on node B, and revoked on A it is
/// refused by B on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
async fn keys_and_sessions_work_across_two_nodes() {
    let b = ScaleOut::fresh("access").await;
    let toml = base_config(&[SECRET_NEW], &format!("{}[auth]\nlockout_after = 3\nlockout_secs = 60\n", b.toml()));
    let a = TestServer::start_with(&toml).await;
    let bnode = TestServer::start_with(&toml).await;
    let (s, made) =
        a.call("POST", "/v1/api-keys", Some(KEY_ACME), json_body(json!({"name": "two", "role": "viewer"}))).await;
    assert_eq!(s, 201, "{made}");
    let key = made["api_key"].as_str().unwrap().to_owned();
    assert_eq!(bnode.get("/v1/events", Some(&key)).await.0, 200);
    // A user made on A logs in on B; the session made on B works on A.
    let body = json!({"username": "nina", "role": "analyst", "password": "a long enough password"});
    assert_eq!(a.call("POST", "/v1/users", Some(KEY_ACME), json_body(body)).await.0, 201);
    let (cookie, _) = crate::openapi::login(&bnode, "nina", "a long enough password").await;
    let r = a.client.get(a.url("/v1/auth/me")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = made["id"].as_str().unwrap();
    assert_eq!(a.call("DELETE", &format!("/v1/api-keys/{id}"), Some(KEY_ACME), None).await.0, 200);
    let (s, v) = bnode.get("/v1/events", Some(&key)).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_api_key")), "{v}");
    // Failed passwords count across nodes: two on B, the third on A locks the account for both.
    let login = |node: &TestServer, pw: &'static str| {
        let r = node.client.post(node.url("/v1/auth/login")).json(&json!({"username": "nina", "password": pw}));
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    for _ in 0..2 {
        let (s, v) = login(&bnode, "a wrong password").await;
        assert_eq!((s, v["error"].as_str()), (401, Some("invalid_credentials")), "{v}");
    }
    let (s, v) = login(&a, "a wrong password").await;
    assert_eq!((s, v["error"].as_str()), (429, Some("account_locked")), "{v}");
    let (s, v) = login(&bnode, "a long enough password").await;
    assert_eq!((s, v["error"].as_str()), (429, Some("account_locked")), "{v}");
}

/// Login sessions: the cookie's flags, CSRF on changes, idle and absolute expiry, logout, and
/// the lockout after failed passwords.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_expire_need_csrf_and_lock_out() {
    let auth = "[auth]\nsession_idle_secs = 2\nsession_max_secs = 6\nlockout_after = 3\nlockout_secs = 60\n";
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], auth)).await;
    for (name, role) in [("ann", "analyst"), ("lou", "viewer")] {
        let body = json!({"username": name, "role": role, "password": "a long enough password"});
        assert_eq!(srv.call("POST", "/v1/users", Some(KEY_ACME), json_body(body)).await.0, 201);
    }
    // Bounds of the session's age on the server: it began after `login_sent` and before
    // `logged_in` (so timing checks hold however slow a loaded machine answers).
    let login_sent = Instant::now();
    let r = srv
        .client
        .post(srv.url("/v1/auth/login"))
        .json(&json!({"username": "ann", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let logged_in = Instant::now();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let me = |cookie: String| {
        let srv = &srv;
        async move { srv.client.get(srv.url("/v1/auth/me")).header("cookie", cookie).send().await.unwrap() }
    };
    assert_eq!(me(cookie.clone()).await.status(), 200);
    // A change made with the cookie needs the CSRF token.
    let put = |cookie: &str, csrf: Option<&str>| {
        let mut r = srv.client.put(srv.url("/v1/subjects/ann-1")).header("cookie", cookie).json(&json!({"a": 1}));
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    let r = put(&cookie, None).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "csrf_token_invalid");
    assert_eq!(put(&cookie, Some("not-the-token")).await.unwrap().status(), 403);
    assert_eq!(put(&cookie, Some(&csrf)).await.unwrap().status(), 200);
    // Active use keeps it past the idle timeout (2 s), but not past the absolute one (6 s):
    // a touch every 1.1 s answered surely before 6 s is 200, one sent surely after 6 s is 401.
    let max = Duration::from_secs(6);
    let mut kept_past_idle = false;
    let r = loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let sent_after = logged_in.elapsed();
        let r = me(cookie.clone()).await;
        let answered_within = login_sent.elapsed();
        if answered_within < max {
            assert_eq!(r.status(), 200, "touched {sent_after:?} after login");
            kept_past_idle |= sent_after > Duration::from_secs(2);
        } else if sent_after > max {
            break r;
        }
        assert!(sent_after < Duration::from_secs(20), "the session never expired");
    };
    assert!(kept_past_idle, "no touch landed between the idle and the absolute timeout");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "session_expired");
    // Idle: unused for longer than the idle timeout.
    let (cookie, _) = crate::openapi::login(&srv, "ann", "a long enough password").await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(me(cookie).await.status(), 401);
    // Logout ends it at once.
    let (cookie, csrf) = crate::openapi::login(&srv, "ann", "a long enough password").await;
    let r = srv.client.post(srv.url("/v1/auth/logout")).header("cookie", &cookie).header("x-csrf-token", csrf);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(me(cookie).await.status(), 401);
    // Three wrong passwords lock the account, even against the right one, with a clear message.
    let login = |pw: &'static str| {
        let srv = &srv;
        async move {
            let r = srv.client.post(srv.url("/v1/auth/login")).json(&json!({"username": "lou", "password": pw}));
            let r = r.send().await.unwrap();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
        }
    };
    for _ in 0..2 {
        let (s, _, v) = login("wrong password").await;
        assert_eq!((s, v["error"].as_str()), (401, Some("invalid_credentials")), "{v}");
    }
    // The third failure locks, and says so.
    let (s, _, v) = login("wrong password").await;
    assert_eq!((s, v["error"].as_str()), (429, Some("account_locked")), "{v}");
    let (s, retry, v) = login("a long enough password").await;
    assert_eq!((s, v["error"].as_str()), (429, Some("account_locked")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("locked"), "{v}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Unknown users get the same answer as wrong passwords.
    let r =
        srv.client.post(srv.url("/v1/auth/login")).json(&json!({"username": "nobody", "password": "whatever it is"}));
    let v: Value = r.send().await.unwrap().json().await.unwrap();
    assert_eq!(v["error"], "invalid_credentials");
}

/// The actor recorded for a change is the authenticated identity, never a name in the body.
#[tokio::test]
async fn the_recorded_actor_is_the_authenticated_identity() {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], "")).await;
    let body = json!({"username": "alice", "role": "analyst", "password": "a long enough password"});
    assert_eq!(srv.call("POST", "/v1/users", Some(KEY_ACME), json_body(body)).await.0, 201);
    let aml = |v: &mut Value| v["decision"]["aml_screenings"][0]["total_hits"] = 2.into();
    assert_eq!(post_webhook(&srv, kyc_body("ac-1", "ac-s1", "ac-u1", "In Review", aml)).await.0, 200);
    srv.decided().await;
    let (_, v) = srv.get("/v1/reviews", Some(KEY_ACME)).await;
    let review = v["reviews"][0]["id"].as_str().unwrap().to_owned();
    let (cookie, csrf) = crate::openapi::login(&srv, "alice", "a long enough password").await;
    let post = |path: String, body: Value| {
        let srv = &srv;
        let (cookie, csrf) = (cookie.clone(), csrf.clone());
        async move {
            let r = srv.client.post(srv.url(&path)).header("cookie", cookie).header("x-csrf-token", csrf).json(&body);
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = post(format!("/v1/reviews/{review}/claim"), json!({"analyst": "mallory"})).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("analyst_mismatch")), "{v}");
    let (s, v) = post(format!("/v1/reviews/{review}/claim"), json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["claimed_by"], "user:alice");
    let (s, v) = post(format!("/v1/reviews/{review}/resolve"), json!({"outcome": "decline", "note": "forged"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["decided_by"], "review:user:alice");
    let (s, v) = post("/v1/blocklists/email".into(), json!({"value": "bad@example.com"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["added_by"], "user:alice", "{v}");
    let (_, ev) = srv.get("/v1/events?limit=1000", Some(KEY_ACME)).await;
    let ours: Vec<&Value> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ["review.claimed", "review.resolved", "blocklist.added"].contains(&e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(ours.len(), 3, "{ev}");
    let text = serde_json::to_string(&ours).unwrap();
    assert!(text.contains("user:alice") && !text.contains("mallory"), "{text}");
}

/// Rate limits: per identity and per client IP, `X-Forwarded-For` believed only from trusted
/// proxies, `429` with `Retry-After` and `RateLimit-*`; webhooks are not limited.
#[tokio::test]
async fn rate_limits_apply_per_key_and_per_client_ip() {
    let limits = "[rate_limits]\nread = { per_sec = 0.5, burst = 3 }\nper_ip = { per_sec = 0.5, burst = 5 }\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], limits)).await;
    let get = |key: &'static str, ip: &'static str| {
        let srv = &srv;
        async move {
            let r = srv
                .client
                .get(srv.url("/v1/events"))
                .bearer_auth(key)
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().clone())
        }
    };
    for _ in 0..3 {
        let (s, h) = get(KEY_ACME, "10.0.0.1").await;
        assert_eq!(s, 200);
        assert!(h.contains_key("ratelimit-remaining"), "{h:?}");
    }
    let (s, h) = get(KEY_ACME, "10.0.0.1").await;
    assert_eq!(s, 429);
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(h["ratelimit-remaining"], "0");
    // Another key from another client is not affected by the first one's budget...
    assert_eq!(get(KEY_BETA, "10.0.0.2").await.0, 200);
    // ...but one client address has a budget across keys: 3 + 1 + 1 of 5 spent from 10.0.0.1.
    assert_eq!(get(KEY_BETA, "10.0.0.1").await.0, 200);
    assert_eq!(get(KEY_BETA, "10.0.0.1").await.0, 429);
    // Webhooks are never limited.
    for i in 0..20 {
        let (s, v) = post_webhook(&srv, kyc_body(&format!("rl-{i}"), "rl-s", "rl-u", "In Progress", |_| {})).await;
        assert_eq!(s, 200, "{v}");
    }

    // Without a trusted proxy, X-Forwarded-For is ignored: every request is from 127.0.0.1.
    let limits = "[rate_limits]\nper_ip = { per_sec = 0.5, burst = 2 }\n";
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], limits)).await;
    let mut statuses = Vec::new();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        let r = srv.client.get(srv.url("/v1/events")).bearer_auth(KEY_ACME).header("x-forwarded-for", ip);
        statuses.push(r.send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

/// `Idempotency-Key`: a retry gets the first answer again, once; another body with the same key
/// is `422`; a retry while the first is running is `409`; a key's secret is never replayed.
#[tokio::test]
async fn idempotency_keys_replay_refuse_and_conflict() {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], "")).await;
    let send = |key: &'static str, body: Value| {
        let srv = &srv;
        async move {
            let r = srv
                .client
                .post(srv.url("/v1/blocklists/email"))
                .bearer_auth(KEY_ACME)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (r.status().as_u16(), replayed, r.json::<Value>().await.unwrap())
        }
    };
    let (s, replayed, first) = send("k-1", json!({"value": "once@example.com"})).await;
    assert_eq!((s, replayed), (201, false), "{first}");
    let (s, replayed, again) = send("k-1", json!({"value": "once@example.com"})).await;
    assert_eq!((s, replayed), (201, true));
    assert_eq!(again, first);
    let (_, list) = srv.get("/v1/blocklists/email", Some(KEY_ACME)).await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 1, "one entry, not two: {list}");
    let (s, _, v) = send("k-1", json!({"value": "other@example.com"})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("idempotency_key_reused")), "{v}");
    // Another caller's identical key is its own.
    let r = srv
        .client
        .post(srv.url("/v1/blocklists/email"))
        .bearer_auth(KEY_BETA)
        .header("idempotency-key", "k-1")
        .json(&json!({"value": "once@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotent-replayed").is_none());
    // Still running (another node began it a moment ago): 409.
    use idstream_server::store::{access::AccessOp, Op, Txn};
    let now = idstream_server::util::now_us();
    let begin = AccessOp::BeginIdempotent {
        scope: "acme/config:acme".into(),
        key: "k-running".into(),
        // What the middleware computes for `POST /v1/rulesets/x/activate` with no body.
        fingerprint: idstream_server::access::sha256_hex("POST\0/v1/rulesets/x/activate\0"),
        now_us: now,
        stale_before_us: now - 60_000_000,
    };
    srv.state.store.commit(Txn { entries: vec![], ops: vec![Op::Access(begin)] }).await.unwrap();
    let r = srv
        .client
        .post(srv.url("/v1/rulesets/x/activate"))
        .bearer_auth(KEY_ACME)
        .header("idempotency-key", "k-running")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "idempotency_in_progress", "{v}");
    // A new API key is shown once; its replay says it is left out.
    let make = || {
        srv.client
            .post(srv.url("/v1/api-keys"))
            .bearer_auth(KEY_ACME)
            .header("idempotency-key", "mk-1")
            .json(&json!({"name": "retry", "role": "viewer"}))
            .send()
    };
    let first: Value = make().await.unwrap().json().await.unwrap();
    let secret = first["api_key"].as_str().unwrap().to_owned();
    let r = make().await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert!(again.get("api_key").is_none() && again["secret_omitted"].is_string(), "{again}");
    assert_eq!(again["id"], first["id"]);
    assert!(!again.to_string().contains(&secret));
    let (_, keys) = srv.get("/v1/api-keys", Some(KEY_ACME)).await;
    let made = keys["keys"].as_array().unwrap().iter().filter(|k| k["name"] == "retry").count();
    assert_eq!(made, 1, "{keys}");
    // Bad keys are refused.
    let r = srv.client.post(srv.url("/v1/blocklists/email")).bearer_auth(KEY_ACME).header("idempotency-key", "");
    assert_eq!(r.json(&json!({"value": "z@example.com"})).send().await.unwrap().status(), 400);
}

/// A real server's log output at debug level never contains a password, key, session cookie,
/// CSRF token or webhook secret used against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idstream.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
            dir.path().join("data").display(),
            base_config(&[SECRET_NEW], "")
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_idstream"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("IDSTREAM_SERVER__LOG_FORMAT", "json")
        .env("IDSTREAM_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let err_lines = lines.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(line)) = err.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "idstream serving" {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(v["fields"]["listen"].as_str().unwrap().to_owned());
                        }
                    }
                }
                err_lines.lock().unwrap().push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let base = format!("http://{}", tokio::time::timeout(Duration::from_secs(30), rx).await.unwrap().unwrap());
    let client = reqwest::Client::new();
    let password = "pw-Very-Secret-Horse-42";
    let r = client
        .post(format!("{base}/v1/users"))
        .bearer_auth(KEY_ACME)
        .json(&json!({"username": "sam", "role": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client.post(format!("{base}/v1/auth/login")).json(&json!({"username": "sam", "password": password}));
    let r = r.send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let r = client
        .post(format!("{base}/v1/api-keys"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "logged", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["api_key"].as_str().unwrap().to_owned();
    client.get(format!("{base}/v1/events")).bearer_auth(&key).send().await.unwrap();
    client.get(format!("{base}/v1/events")).bearer_auth("ids_guessed-key-not-real").send().await.unwrap();
    client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"username": "sam", "password": "pw-wrong-Guess-77"}))
        .send()
        .await
        .unwrap();
    let body = kyc_body("log-1", "log-s1", "log-u1", "Approved", |_| {});
    let bad_sig = didit_headers(&body, "not-the-secret-0123456789abcdefghijklmnop", Sig::All);
    let mut req = client.post(format!("{base}/webhooks/didit-main")).body(body.clone());
    for (k, v) in bad_sig.iter().chain([("content-type", "application/json".to_owned())].iter()) {
        req = req.header(*k, v);
    }
    req.send().await.unwrap();
    let r = client.post(format!("{base}/v1/auth/logout")).header("cookie", &cookie).header("x-csrf-token", &csrf);
    r.send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let text = lines.lock().unwrap().join("\n");
    assert!(text.lines().count() > 5, "the server logged: {text}");
    let session = cookie.split_once('=').unwrap().1;
    for (what, secret) in [
        ("password", password),
        ("wrong password", "pw-wrong-Guess-77"),
        ("api key", key.as_str()),
        ("guessed key", "ids_guessed-key-not-real"),
        ("session cookie", session),
        ("csrf token", csrf.as_str()),
        ("webhook secret", SECRET_NEW),
        ("config key", KEY_ACME),
    ] {
        assert!(!text.contains(secret), "the {what} appears in the log");
    }
}

/// OIDC login against a real OpenID Connect provider (`tests/oidc/provider.mjs`, npm
/// `oidc-provider`) started here: authorization code + PKCE, the ID token verified, the group
/// claim mapped to a role, the user made at the first login and found again at the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and tests/oidc's npm packages: set IDSTREAM_TEST_OIDC_PROVIDER to tests/oidc/provider.mjs"]
async fn oidc_login_against_a_real_provider() {
    let script = crate::backends::env_url("IDSTREAM_TEST_OIDC_PROVIDER");
    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (idp_port, our_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{our_port}");
    let redirect = format!("{base}/v1/auth/oidc/callback");
    let mut idp = tokio::process::Command::new("node")
        .arg(&script)
        .arg(idp_port.to_string())
        .arg(&redirect)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut out = BufReader::new(idp.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line.contains("ready") {
                return;
            }
        }
        panic!("the OIDC provider exited");
    })
    .await
    .expect("the OIDC provider did not start in 30 s");
    let oidc = format!(
        "[auth]\nsecure_cookies = false\n[auth.oidc]\nissuer = \"http://127.0.0.1:{idp_port}\"\nclient_id = \"idstream\"\n\
         client_secret = \"idstream-oidc-test-secret\"\nredirect_url = \"{redirect}\"\nscopes = [\"openid\", \"profile\"]\n\
         tenant = \"acme\"\nrole_claim = \"groups\"\nroles = {{ \"kyc\" = \"analyst\", \"kyc-admins\" = \"admin\" }}\n"
    );
    let srv = TestServer::start_at(
        Arc::new(tempfile::tempdir().unwrap()),
        &base_config(&[SECRET_NEW], &oidc),
        &format!("127.0.0.1:{our_port}"),
    )
    .await;

    // The dashboard's login form offers single sign-on when OIDC is configured.
    let page = srv.client.get(srv.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"<a id="login-oidc" class="sso" href="/v1/auth/oidc/login">"#), "{page}");
    let contract = crate::openapi::Contract::new(serde_json::to_value(idstream_server::http::openapi()).unwrap());
    let check = |template: &str, status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]| {
        let ct = headers.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        contract.check("get", template, status, &ct, body);
    };
    for (name, role) in [("alice", "analyst"), ("admin-bob", "admin"), ("alice", "analyst")] {
        let browser =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let (state_cookie, callback) = oidc_attempt(&browser, &base, &redirect, name, &check).await;
        let page = browser.get(&callback).send().await.unwrap();
        let (status, headers) = (page.status().as_u16(), page.headers().clone());
        let body = page.bytes().await.unwrap();
        check("/v1/auth/oidc/callback", status, &headers, &body);
        assert_eq!(status, 200, "{name}");
        let cookies: Vec<String> =
            headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        let session = cookies.iter().find(|c| c.starts_with("idstream_session=")).expect("a session cookie");
        assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");
        let me: Value = browser.get(format!("{base}/v1/auth/me")).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            (me["name"].as_str(), me["role"].as_str(), me["tenant"].as_str()),
            (Some(&*format!("user:{name}")), Some(role), Some("acme")),
            "{me}"
        );
        // The same answer again (its code is spent): the issuer refuses the exchange.
        let r = srv.client.get(&callback).header("cookie", &state_cookie).send().await.unwrap();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let body = r.bytes().await.unwrap();
        check("/v1/auth/oidc/callback", status, &headers, &body);
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    }
    // Claims that map to no role (and no default role): refused.
    let browser =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (_, callback) = oidc_attempt(&browser, &base, &redirect, "nobody", &check).await;
    let r = browser.get(&callback).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.bytes().await.unwrap();
    check("/v1/auth/oidc/callback", status, &headers, &body);
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("oidc_no_role"));
    // The first login made the account (once), marked as OIDC, without a password.
    let (_, users) = srv.get("/v1/users", Some(KEY_ACME)).await;
    let alices: Vec<&Value> = users["users"].as_array().unwrap().iter().filter(|u| u["username"] == "alice").collect();
    assert_eq!(alices.len(), 1, "{users}");
    assert_eq!(alices[0]["oidc"], true);
    // An answer that does not belong to a login started here is refused.
    let r = srv.client.get(format!("{redirect}?code=abc&state=forged")).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.bytes().await.unwrap();
    check("/v1/auth/oidc/callback", status, &headers, &body);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["error"], "oidc_state_invalid");
    let r = srv.client.get(format!("{redirect}?error=access_denied&error_description=nope")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "oidc_refused");
    // An issuer that cannot be reached: 502, with nothing internal in the message.
    let gone = oidc.replace(&format!("127.0.0.1:{idp_port}"), &format!("127.0.0.1:{}", free_port()));
    let other = TestServer::start_with(&base_config(&[SECRET_NEW], &gone)).await;
    let r = other.client.get(other.url("/v1/auth/oidc/login")).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.bytes().await.unwrap();
    check("/v1/auth/oidc/login", status, &headers, &body);
    assert_eq!(status, 502);
    drop(idp);
}

/// Starts an OIDC login in `browser` and walks the provider's pages as `name`; the login's state
/// cookie (`name=value`) and the callback URL the provider sends the browser to (not yet called).
async fn oidc_attempt(
    browser: &reqwest::Client,
    base: &str,
    redirect: &str,
    name: &str,
    check: &impl Fn(&str, u16, &reqwest::header::HeaderMap, &[u8]),
) -> (String, String) {
    let r = browser.get(format!("{base}/v1/auth/oidc/login")).send().await.unwrap();
    check("/v1/auth/oidc/login", r.status().as_u16(), r.headers(), b"");
    assert_eq!(r.status(), 303);
    let state_cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(state_cookie.starts_with("idstream_oidc="), "{state_cookie}");
    let mut next = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(next.contains("code_challenge_method=S256") && next.contains("nonce="), "{next}");
    // The provider's pages: follow redirects, fill its login and consent forms.
    loop {
        let r = browser.get(&next).send().await.unwrap();
        if r.status().is_redirection() {
            next = absolute(&next, r.headers()["location"].to_str().unwrap());
        } else {
            let html = r.text().await.unwrap();
            let action = between(&html, "action=\"", "\"").expect("a form on the provider's page");
            let mut form: Vec<(String, String)> = html
                .split("<input")
                .skip(1)
                .filter(|i| i.contains("type=\"hidden\""))
                .filter_map(|i| Some((between(i, "name=\"", "\"")?, between(i, "value=\"", "\"")?)))
                .collect();
            if html.contains("name=\"login\"") {
                form.push(("login".into(), name.into()));
                form.push(("password".into(), "anything".into()));
            }
            let r = browser.post(absolute(&next, &action)).form(&form).send().await.unwrap();
            assert!(r.status().is_redirection(), "{}", r.status());
            next = absolute(&next, r.headers()["location"].to_str().unwrap());
        }
        if next.starts_with(redirect) {
            return (state_cookie, next);
        }
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].replace("&amp;", "&"))
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        return location.to_owned();
    }
    let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    format!("{origin}{location}")
}

/// `idstream user add|list|disable` write accounts into the configured store (the way to make
/// the first admin), and the server logs them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_cli_makes_accounts_the_server_logs_in() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let toml = base_config(&[SECRET_NEW], "");
    let config = dir.path().join("idstream.toml");
    std::fs::write(&config, format!("[server]\ndata_dir = \"{}\"\n{toml}", dir.path().display())).unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_idstream"))
            .arg("user")
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(
        &["add", "dana", "--role", "admin", "--tenant", "acme", "--password-stdin"],
        Some("dana's long password\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&["add", "eve", "--role", "viewer", "--tenant", "acme"], None);
    assert!(ok, "{out}");
    let generated =
        out.lines().find_map(|l| l.strip_prefix("password (shown once): ")).expect("a generated password").to_owned();
    let (ok, out) = cli(&["add", "dana", "--role", "viewer", "--tenant", "acme"], None);
    assert!(!ok && out.contains("exists already"), "{out}");
    let (ok, out) = cli(&["add", "frank", "--role", "boss", "--tenant", "acme"], None);
    assert!(!ok && out.contains("unknown role `boss`"), "{out}");
    let (ok, out) = cli(&["add", "gil", "--role", "viewer", "--tenant", "acme", "--password-stdin"], Some("short\n"));
    assert!(!ok && out.contains("at least 12"), "{out}");
    let (ok, out) = cli(&["disable", "eve"], None);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["list"], None);
    assert!(ok && out.contains("dana") && out.contains("disabled"), "{out}");

    let srv = TestServer::start_in(dir.clone(), &toml).await;
    let (cookie, _) = crate::openapi::login(&srv, "dana", "dana's long password").await;
    let me: Value =
        srv.client.get(srv.url("/v1/auth/me")).header("cookie", cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!((me["role"].as_str(), me["tenant"].as_str()), (Some("admin"), Some("acme")), "{me}");
    let r = srv.client.post(srv.url("/v1/auth/login")).json(&json!({"username": "eve", "password": generated}));
    assert_eq!(r.send().await.unwrap().status(), 403, "a disabled account cannot log in");
    // The changes are attributed to the CLI in the log.
    let (_, ev) = srv.get("/v1/events?limit=1000", Some(KEY_ACME)).await;
    let created = ev["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "access.user_created").count();
    assert_eq!(created, 2, "{ev}");
    assert!(ev.to_string().contains("\"actor\":\"cli:"), "{ev}");
}

/// In sandbox mode `serve` makes an `admin` user whose password is in a 0600 file beside the
/// sandbox secret (and nowhere in the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_mode_makes_an_admin_whose_password_is_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idstream.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n", dir.path().join("data").display()),
    )
    .unwrap();
    let proc = crate::crash::spawn_server(&config).await;
    let path = dir.path().join("data/sandbox.admin-password");
    let password = std::fs::read_to_string(&path).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/auth/login", proc.base))
        .json(&json!({"username": "admin", "password": password.trim()}));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["user"]["role"].as_str(), v["user"]["tenant"].as_str()), (Some("admin"), Some("sandbox")), "{v}");
}

/// `POST /v1/verifications/document` with one small JPEG.
async fn upload_document(srv: &TestServer, key: &str, subject: &str) -> (u16, Value) {
    let jpeg = idstream_server::documents::content::samples::jpeg(800, 600, 100);
    let form = reqwest::multipart::Form::new()
        .part("front_image", reqwest::multipart::Part::bytes(jpeg).file_name("f.jpg"))
        .text("subject", subject.to_owned());
    let r =
        srv.client.post(srv.url("/v1/verifications/document")).bearer_auth(key).multipart(form).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}
