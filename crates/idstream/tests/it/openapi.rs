//! The OpenAPI contract against the running server: every endpoint is called with every status
//! the contract documents for it, each answer's body is validated against the contract's schema
//! for that status, and an answer with a status the contract does not document fails the test.
//! At the end, every documented (method, path, status) must have been seen.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::decisions::kyc_body;
use crate::helpers::*;

const JWT_SECRET: &str = "openapi-test-hs256-secret-0123456789abcdef";

/// The contract, and which of its answers the test has seen.
pub(crate) struct Contract {
    doc: Value,
    seen: std::sync::Mutex<BTreeSet<(String, String, String)>>,
}

/// One call: method, the path template as documented, and the concrete path (with query).
struct Call<'a> {
    method: &'a str,
    template: &'a str,
    path: String,
    key: Option<&'a str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
}

fn call<'a>(method: &'a str, template: &'a str, path: impl Into<String>, key: Option<&'a str>) -> Call<'a> {
    Call { method, template, path: path.into(), key, body: None, headers: Vec::new() }
}

impl Call<'_> {
    fn json(mut self, v: Value) -> Self {
        self.body = Some(serde_json::to_vec(&v).unwrap());
        self
    }
    fn raw(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = Some(b.into());
        self
    }
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn headers_from(mut self, h: Vec<(&'static str, String)>) -> Self {
        self.headers.extend(h);
        self
    }
}

impl Contract {
    pub(crate) fn new(doc: Value) -> Contract {
        Contract { doc, seen: Default::default() }
    }

    /// The documented answer of `method template` for `status`.
    fn response(&self, method: &str, template: &str, status: u16) -> (String, &Value) {
        let op = &self.doc["paths"][template][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the contract");
        let mut key = status.to_string();
        // A server-side failure without an answer of its own falls under the range.
        if !op["responses"][&key].is_object() && status >= 500 {
            key = "5XX".into();
        }
        let r = &op["responses"][&key];
        assert!(r.is_object(), "{method} {template} answered {status}, which the contract does not document");
        (key, r)
    }

    /// Checks an answer against the contract and records it.
    pub(crate) fn check(&self, method: &str, template: &str, status: u16, content_type: &str, body: &[u8]) {
        let (key, r) = self.response(method, template, status);
        if let Some(content) = r["content"].as_object() {
            // The documented media type the answer has (a document answers one of several).
            let media = content
                .keys()
                .find(|m| content_type.starts_with(m.split(';').next().unwrap()))
                .unwrap_or_else(|| {
                    panic!(
                        "{method} {template} {status}: content type {content_type:?}, documented {:?}",
                        content.keys()
                    )
                })
                .clone();
            if media == "application/json" {
                let instance: Value = serde_json::from_slice(body)
                    .unwrap_or_else(|e| panic!("{method} {template} {status}: body is not JSON ({e})"));
                let errors = self.errors(r, &media, &instance);
                assert!(
                    errors.is_empty(),
                    "{method} {template} {status}: body does not match the contract: {errors:#?}\n{instance}"
                );
            }
        } else {
            assert!(body.is_empty() || status == 101, "{method} {template} {status}: undocumented body");
        }
        self.seen.lock().unwrap().insert((method.to_ascii_lowercase(), template.to_owned(), key));
    }

    /// Where `instance` breaks the schema of response `r` for `media`.
    fn errors(&self, r: &Value, media: &str, instance: &Value) -> Vec<String> {
        // The response schema with the document's components beside it, so
        // `#/components/...` references resolve.
        let mut root = json!({"allOf": [r["content"][media]["schema"].clone()]});
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root).expect("the contract's schemas compile");
        validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path)).collect()
    }

    async fn send(&self, srv: &TestServer, c: Call<'_>) -> (u16, Value) {
        let mut req = srv.client.request(c.method.parse().unwrap(), srv.url(&c.path));
        if let Some(k) = c.key {
            req = req.bearer_auth(k);
        }
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        if let Some(b) = c.body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        assert!(resp.headers().contains_key("x-request-id"), "{} {}: no x-request-id", c.method, c.path);
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = if ct.starts_with("text/event-stream") { Vec::new() } else { resp.bytes().await.unwrap().to_vec() };
        self.check(c.method, c.template, status, &ct, &bytes);
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Sends and asserts the status.
    async fn expect(&self, srv: &TestServer, status: u16, c: Call<'_>) -> Value {
        let what = format!("{} {}", c.method, c.path);
        let (s, v) = self.send(srv, c).await;
        assert_eq!(s, status, "{what}: {v}");
        v
    }

    /// Every documented answer that was never seen.
    fn unseen(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        let mut missing = Vec::new();
        for (path, ops) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                // `5XX` (the log or store failing mid-call) is documented on every call; it is
                // provoked once (a corrupt stored row), besides the specific 503s above.
                for status in op["responses"].as_object().unwrap().keys().filter(|k| *k != "5XX") {
                    // OIDC answers other than "not configured" need a real OpenID provider: they
                    // are checked against this contract by access::oidc_login_against_a_real_provider.
                    if path.starts_with("/v1/auth/oidc/") && status != "404" {
                        continue;
                    }
                    if !seen.contains(&(method.clone(), path.clone(), status.clone())) {
                        missing.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        missing
    }
}

fn signed(body: &[u8]) -> Vec<(&'static str, String)> {
    didit_headers(body, SECRET_NEW, Sig::All)
}

const RULESET: &str = "version_label: openapi-test\nthresholds: {review_score: 50, decline_score: 100}\nrules:\n  \
  - id: aml\n    when: has(aml.hits) && aml.hits > 0\n    outcome: review\n    reason: aml.hits\n    message: AML hits.\n";

#[tokio::test]
async fn every_endpoint_answers_as_the_contract_says() {
    let stream = format!(
        "[stream]\nhs256_secrets = [\"{JWT_SECRET}\"]\n{}{}{}",
        role_key("ana", "acme", "analyst"),
        role_key("bo", "acme", "analyst"),
        role_key("vic", "acme", "viewer"),
    ) + &role_key("svc", "acme", "service");
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], &stream)).await;
    // The contract the server serves is the one the code generates.
    let (s, served) = srv.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(served, serde_json::to_value(idstream_server::http::openapi()).unwrap());
    assert_eq!(served["openapi"], "3.1.0");
    // Every operation of the contract has its access rule (the table README's matrix is made of).
    for (path, ops) in served["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let m: axum::http::Method = method.to_ascii_uppercase().parse().unwrap();
            assert!(idstream_server::http::authz::action_of(&m, path).is_some(), "{method} {path} has no access rule");
        }
    }
    let c = Contract::new(served);
    c.check("get", "/openapi.json", 200, "application/json", b"{}");
    // The validation has teeth: bodies that break the contract are caught.
    let (_, page) = c.response("get", "/v1/events", 200);
    for bad in [
        json!({"events": [{"kind": "decision.made", "offset": 1}], "next_after": 1, "head": 1}),
        json!({"events": [], "next_after": -1, "head": 1}),
        json!({"events": []}),
    ] {
        assert!(!c.errors(page, "application/json", &bad).is_empty(), "{bad} passed");
    }

    // --- Webhooks.
    let approve = kyc_body("oa-1", "oa-s1", "oa-u1", "Approved", |_| {});
    let v = c
        .expect(
            &srv,
            200,
            call("POST", "/webhooks/{source_id}", "/webhooks/didit-main", None)
                .raw(approve.clone())
                .headers_from(signed(&approve)),
        )
        .await;
    let event_id = v["event_id"].as_str().unwrap().to_owned();
    let review_body =
        kyc_body("oa-2", "oa-s2", "oa-u2", "Approved", |v| v["decision"]["aml_screenings"][0]["total_hits"] = 2.into());
    c.expect(
        &srv,
        200,
        call("POST", "/webhooks/{source_id}", "/webhooks/didit-main", None)
            .raw(review_body.clone())
            .headers_from(signed(&review_body)),
    )
    .await;
    let review2 =
        kyc_body("oa-3", "oa-s3", "oa-u3", "Approved", |v| v["decision"]["aml_screenings"][0]["total_hits"] = 3.into());
    c.expect(
        &srv,
        200,
        call("POST", "/webhooks/{source_id}", "/webhooks/didit-main", None)
            .raw(review2.clone())
            .headers_from(signed(&review2)),
    )
    .await;
    c.expect(
        &srv,
        400,
        call("POST", "/webhooks/{source_id}", "/webhooks/didit-main", None)
            .raw(&b"not json"[..])
            .headers_from(raw_only(b"not json", SECRET_NEW)),
    )
    .await;
    c.expect(
        &srv,
        401,
        call("POST", "/webhooks/{source_id}", "/webhooks/didit-main", None)
            .raw(approve.clone())
            .headers_from(didit_headers(&approve, "wrong-secret-0123456789", Sig::All)),
    )
    .await;
    c.expect(&srv, 404, call("POST", "/webhooks/{source_id}", "/webhooks/nope", None).raw(approve.clone())).await;
    c.expect(&srv, 413, call("POST", "/webhooks/{source_id}", "/webhooks/didit-main", None).raw(vec![b' '; 2 << 20]))
        .await;
    srv.decided().await;

    // --- Events.
    c.expect(&srv, 200, call("GET", "/v1/events", "/v1/events?limit=10", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", "/v1/events", "/v1/events?bogus=1", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", "/v1/events", "/v1/events", None)).await;
    c.expect(&srv, 200, call("GET", "/v1/events/{id}", format!("/v1/events/{event_id}"), Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", "/v1/events/{id}", format!("/v1/events/{event_id}"), Some("nope"))).await;
    c.expect(&srv, 404, call("GET", "/v1/events/{id}", format!("/v1/events/{event_id}"), Some(KEY_BETA))).await;
    c.expect(&srv, 200, call("GET", "/v1/events/{id}/body", format!("/v1/events/{event_id}/body"), Some(KEY_ACME)))
        .await;
    c.expect(&srv, 401, call("GET", "/v1/events/{id}/body", format!("/v1/events/{event_id}/body"), None)).await;
    c.expect(&srv, 404, call("GET", "/v1/events/{id}/body", "/v1/events/nope/body", Some(KEY_ACME))).await;

    // --- Decisions and sessions.
    let sess = c.expect(&srv, 200, call("GET", "/v1/sessions/{id}", "/v1/sessions/oa-s1", Some(KEY_ACME))).await;
    let decision_id = sess["decisions"][0]["id"].as_str().unwrap().to_owned();
    c.expect(&srv, 200, call("GET", "/v1/sessions/{id}", "/v1/sessions/oa-s2?tenant=acme", Some(KEY_ALL))).await;
    c.expect(&srv, 400, call("GET", "/v1/sessions/{id}", "/v1/sessions/oa-s1", Some(KEY_ALL))).await;
    c.expect(&srv, 401, call("GET", "/v1/sessions/{id}", "/v1/sessions/oa-s1", None)).await;
    c.expect(&srv, 403, call("GET", "/v1/sessions/{id}", "/v1/sessions/oa-s1?tenant=beta", Some(KEY_ACME))).await;
    let stats = "/v1/stats";
    c.expect(&srv, 200, call("GET", stats, "/v1/stats?window_secs=3600", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", stats, "/v1/stats?window_secs=1", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", stats, "/v1/stats", None)).await;
    c.expect(&srv, 403, call("GET", stats, "/v1/stats?tenant=beta", Some(KEY_ACME))).await;
    let search = "/v1/search";
    let v = c.expect(&srv, 200, call("GET", search, "/v1/search?kind=document&value=P-oa-u1", Some(KEY_ACME))).await;
    assert_eq!(v["seen"][0]["session_id"], "oa-s1", "{v}");
    c.expect(&srv, 400, call("GET", search, "/v1/search?kind=document", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", search, "/v1/search?kind=email&value=nope", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", search, "/v1/search?kind=email&value=a@example.com", None)).await;
    c.expect(&srv, 403, call("GET", search, "/v1/search?kind=email&value=a@example.com&tenant=beta", Some(KEY_ACME)))
        .await;
    c.expect(&srv, 404, call("GET", "/v1/sessions/{id}", "/v1/sessions/nope", Some(KEY_ACME))).await;
    c.expect(&srv, 200, call("GET", "/v1/decisions/{id}", format!("/v1/decisions/{decision_id}"), Some(KEY_ACME)))
        .await;
    c.expect(&srv, 401, call("GET", "/v1/decisions/{id}", format!("/v1/decisions/{decision_id}"), None)).await;
    c.expect(&srv, 404, call("GET", "/v1/decisions/{id}", format!("/v1/decisions/{decision_id}"), Some(KEY_BETA)))
        .await;

    // --- Subjects.
    let t = "/v1/subjects/{id}";
    c.expect(
        &srv,
        200,
        call("PUT", t, "/v1/subjects/oa-u1", Some(KEY_ACME)).json(json!({"expected_first_name": "Ana"})),
    )
    .await;
    c.expect(&srv, 400, call("PUT", t, "/v1/subjects/oa-u1", Some(KEY_ACME)).json(json!({"bad-name": 1}))).await;
    c.expect(&srv, 401, call("PUT", t, "/v1/subjects/oa-u1", None).json(json!({}))).await;
    c.expect(&srv, 403, call("PUT", t, "/v1/subjects/oa-u1?tenant=beta", Some(KEY_ACME)).json(json!({}))).await;
    c.expect(&srv, 200, call("GET", t, "/v1/subjects/oa-u1", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", t, "/v1/subjects/oa-u1?tenant=", Some(KEY_ALL))).await;
    c.expect(&srv, 401, call("GET", t, "/v1/subjects/oa-u1", None)).await;
    c.expect(&srv, 403, call("GET", t, "/v1/subjects/oa-u1?tenant=beta", Some(KEY_ACME))).await;
    c.expect(&srv, 404, call("GET", t, "/v1/subjects/nobody", Some(KEY_ACME))).await;

    // --- Rulesets and backtests.
    let t = "/v1/rulesets";
    let up = c.expect(&srv, 201, call("POST", t, "/v1/rulesets", Some(KEY_ACME)).raw(RULESET)).await;
    let version = up["version"].as_str().unwrap().to_owned();
    c.expect(&srv, 400, call("POST", t, "/v1/rulesets?activate=maybe", Some(KEY_ACME)).raw(RULESET)).await;
    c.expect(&srv, 401, call("POST", t, "/v1/rulesets", None).raw(RULESET)).await;
    c.expect(&srv, 403, call("POST", t, "/v1/rulesets?tenant=beta", Some(KEY_ACME)).raw(RULESET)).await;
    let bad = c
        .expect(
            &srv,
            422,
            call("POST", t, "/v1/rulesets", Some(KEY_ACME)).raw("version: x\nrules:\n  - id: a\n    when: nope >\n"),
        )
        .await;
    assert!(bad["errors"][0]["line"].is_u64(), "{bad}");
    c.expect(&srv, 200, call("GET", t, "/v1/rulesets", Some(KEY_ACME))).await;
    c.expect(&srv, 200, call("GET", t, "/v1/rulesets?tenant=beta", Some(KEY_ALL))).await;
    c.expect(&srv, 400, call("GET", t, "/v1/rulesets", Some(KEY_ALL))).await;
    c.expect(&srv, 401, call("GET", t, "/v1/rulesets", None)).await;
    c.expect(&srv, 403, call("GET", t, "/v1/rulesets?tenant=beta", Some(KEY_ACME))).await;
    let t = "/v1/rulesets/{version}";
    c.expect(&srv, 200, call("GET", t, format!("/v1/rulesets/{version}"), Some(KEY_ACME))).await;
    c.expect(&srv, 200, call("GET", t, "/v1/rulesets/default", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", t, format!("/v1/rulesets/{version}?x=1"), Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", t, format!("/v1/rulesets/{version}"), None)).await;
    c.expect(&srv, 403, call("GET", t, format!("/v1/rulesets/{version}?tenant=beta"), Some(KEY_ACME))).await;
    c.expect(&srv, 404, call("GET", t, format!("/v1/rulesets/{version}"), Some(KEY_BETA))).await;
    let t = "/v1/rulesets/{version}/activate";
    c.expect(&srv, 200, call("POST", t, format!("/v1/rulesets/{version}/activate"), Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("POST", t, format!("/v1/rulesets/{version}/activate"), Some(KEY_ALL))).await;
    c.expect(&srv, 401, call("POST", t, format!("/v1/rulesets/{version}/activate"), None)).await;
    c.expect(&srv, 403, call("POST", t, format!("/v1/rulesets/{version}/activate?tenant=beta"), Some(KEY_ACME))).await;
    c.expect(&srv, 404, call("POST", t, "/v1/rulesets/nope/activate", Some(KEY_ACME))).await;
    let t = "/v1/backtests";
    c.expect(&srv, 200, call("POST", t, "/v1/backtests", Some(KEY_ACME)).json(json!({"ruleset": RULESET}))).await;
    c.expect(
        &srv,
        400,
        call("POST", t, "/v1/backtests", Some(KEY_ACME)).json(json!({"ruleset": RULESET, "since": "yesterday"})),
    )
    .await;
    c.expect(&srv, 401, call("POST", t, "/v1/backtests", None).json(json!({"ruleset": RULESET}))).await;
    c.expect(&srv, 403, call("POST", t, "/v1/backtests?tenant=beta", Some(KEY_ACME)).json(json!({"ruleset": RULESET})))
        .await;
    c.expect(&srv, 422, call("POST", t, "/v1/backtests", Some(KEY_ACME)).json(json!({"ruleset": "rules: 5"}))).await;
    let v = "/v1/rulesets/validate";
    let ok = c.expect(&srv, 200, call("POST", v, v, Some(KEY_ACME)).raw(RULESET)).await;
    assert_eq!(ok["label"], "openapi-test", "{ok}");
    let bad = c.expect(&srv, 422, call("POST", v, v, Some(KEY_ACME)).raw("rules: 5")).await;
    assert!(bad["errors"][0]["line"].is_number(), "{bad}");
    c.expect(&srv, 400, call("POST", v, v, Some(KEY_ACME)).raw(vec![0xff, 0xfe])).await;
    c.expect(&srv, 401, call("POST", v, v, None).raw(RULESET)).await;
    c.expect(&srv, 403, call("POST", v, v, Some("key-vic")).raw(RULESET)).await;
    let v = "/v1/rulesets/test";
    let cases = "cases:\n  - name: hits review\n    context: {aml: {hits: 1}}\n    expect: {outcome: review}\n";
    let ok =
        c.expect(&srv, 200, call("POST", v, v, Some(KEY_ACME)).json(json!({"ruleset": RULESET, "cases": cases}))).await;
    assert_eq!(ok["passed"], 1, "{ok}");
    c.expect(&srv, 200, call("POST", v, v, Some("key-vic")).json(json!({"version": "default", "cases": cases}))).await;
    c.expect(&srv, 400, call("POST", v, v, Some(KEY_ALL)).json(json!({"cases": cases}))).await;
    c.expect(&srv, 401, call("POST", v, v, None).json(json!({"cases": cases}))).await;
    c.expect(&srv, 403, call("POST", v, "/v1/rulesets/test?tenant=beta", Some(KEY_ACME)).json(json!({"cases": cases})))
        .await;
    c.expect(&srv, 404, call("POST", v, v, Some(KEY_ACME)).json(json!({"version": "nope", "cases": cases}))).await;
    c.expect(&srv, 422, call("POST", v, v, Some(KEY_ACME)).json(json!({"cases": "cases: 5"}))).await;

    // --- Blocklists.
    let t = "/v1/blocklists/{kind}";
    let added = c
        .expect(
            &srv,
            201,
            call("POST", t, "/v1/blocklists/email", Some(KEY_ACME))
                .json(json!({"value": "x@example.com", "reason": "test"})),
        )
        .await;
    let entry = added["id"].as_str().unwrap().to_owned();
    c.expect(&srv, 400, call("POST", t, "/v1/blocklists/phone", Some(KEY_ACME)).json(json!({"value": "12"}))).await;
    c.expect(&srv, 401, call("POST", t, "/v1/blocklists/email", None).json(json!({"value": "a@b.c"}))).await;
    c.expect(
        &srv,
        403,
        call("POST", t, "/v1/blocklists/email?tenant=beta", Some(KEY_ACME)).json(json!({"value": "a@b.c"})),
    )
    .await;
    c.expect(&srv, 404, call("POST", t, "/v1/blocklists/passport", Some(KEY_ACME)).json(json!({"value": "a"}))).await;
    c.expect(&srv, 200, call("GET", t, "/v1/blocklists/email", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", t, "/v1/blocklists/email?limit=0", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", t, "/v1/blocklists/email", None)).await;
    c.expect(&srv, 403, call("GET", t, "/v1/blocklists/email?tenant=beta", Some(KEY_ACME))).await;
    c.expect(&srv, 404, call("GET", t, "/v1/blocklists/passport", Some(KEY_ACME))).await;
    let t = "/v1/blocklists/{kind}/preview";
    let p = c
        .expect(
            &srv,
            200,
            call("POST", t, "/v1/blocklists/email/preview", Some(KEY_ACME)).json(json!({"value": " X@Example.com"})),
        )
        .await;
    assert_eq!((p["id"].as_str(), p["listed"].as_bool()), (Some(entry.as_str()), Some(true)), "{p}");
    c.expect(&srv, 400, call("POST", t, "/v1/blocklists/phone/preview", Some(KEY_ACME)).json(json!({"value": "12"})))
        .await;
    c.expect(&srv, 401, call("POST", t, "/v1/blocklists/email/preview", None).json(json!({"value": "a@b.c"}))).await;
    c.expect(
        &srv,
        403,
        call("POST", t, "/v1/blocklists/email/preview", Some("key-vic")).json(json!({"value": "a@b.c"})),
    )
    .await;
    c.expect(&srv, 404, call("POST", t, "/v1/blocklists/passport/preview", Some(KEY_ACME)).json(json!({"value": "a"})))
        .await;
    let t = "/v1/blocklists/{kind}/{id}";
    c.expect(&srv, 400, call("DELETE", t, format!("/v1/blocklists/email/{entry}"), Some(KEY_ALL))).await;
    c.expect(&srv, 401, call("DELETE", t, format!("/v1/blocklists/email/{entry}"), None)).await;
    c.expect(&srv, 403, call("DELETE", t, format!("/v1/blocklists/email/{entry}?tenant=beta"), Some(KEY_ACME))).await;
    c.expect(&srv, 200, call("DELETE", t, format!("/v1/blocklists/email/{entry}"), Some(KEY_ACME))).await;
    c.expect(&srv, 404, call("DELETE", t, format!("/v1/blocklists/email/{entry}"), Some(KEY_ACME))).await;

    // --- Reviews.
    let list = c.expect(&srv, 200, call("GET", "/v1/reviews", "/v1/reviews", Some(KEY_ACME))).await;
    let ids: Vec<String> =
        list["reviews"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 2, "{list}");
    c.expect(&srv, 400, call("GET", "/v1/reviews", "/v1/reviews?status=paused", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", "/v1/reviews", "/v1/reviews?after=yesterday", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", "/v1/reviews", "/v1/reviews", None)).await;
    c.expect(&srv, 403, call("GET", "/v1/reviews", "/v1/reviews?tenant=beta", Some(KEY_ACME))).await;
    let t = "/v1/reviews/{id}";
    c.expect(&srv, 200, call("GET", t, format!("/v1/reviews/{}", ids[0]), Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", t, format!("/v1/reviews/{}", ids[0]), None)).await;
    c.expect(&srv, 404, call("GET", t, format!("/v1/reviews/{}", ids[0]), Some(KEY_BETA))).await;
    let t = "/v1/reviews/{id}/claim";
    c.expect(
        &srv,
        200,
        call("POST", t, format!("/v1/reviews/{}/claim", ids[0]), Some("key-ana")).json(json!({"analyst": "ana"})),
    )
    .await;
    c.expect(
        &srv,
        400,
        call("POST", t, format!("/v1/reviews/{}/claim", ids[0]), Some("key-ana")).json(json!({"analyst": "bo"})),
    )
    .await;
    c.expect(&srv, 401, call("POST", t, format!("/v1/reviews/{}/claim", ids[0]), None)).await;
    c.expect(&srv, 404, call("POST", t, "/v1/reviews/nope/claim", Some(KEY_ACME))).await;
    c.expect(&srv, 409, call("POST", t, format!("/v1/reviews/{}/claim", ids[0]), Some("key-bo"))).await;
    let t = "/v1/reviews/{id}/resolve";
    let resolve = |_analyst: &str| json!({"outcome": "approve", "note": "documents fine"});
    c.expect(
        &srv,
        400,
        call("POST", t, format!("/v1/reviews/{}/resolve", ids[0]), Some(KEY_ACME)).json(json!({"outcome": "review"})),
    )
    .await;
    c.expect(&srv, 401, call("POST", t, format!("/v1/reviews/{}/resolve", ids[0]), None).json(resolve("ana"))).await;
    c.expect(&srv, 404, call("POST", t, "/v1/reviews/nope/resolve", Some(KEY_ACME)).json(resolve("ana"))).await;
    c.expect(&srv, 409, call("POST", t, format!("/v1/reviews/{}/resolve", ids[0]), Some("key-bo")).json(resolve("bo")))
        .await;
    c.expect(
        &srv,
        200,
        call("POST", t, format!("/v1/reviews/{}/resolve", ids[0]), Some("key-ana")).json(resolve("ana")),
    )
    .await;

    // --- Access: keys, users, logins, refusals.
    access_answers(&c, &srv).await;

    // --- Streams.
    let tok = idstream_server::stream::auth::mint_hs256(
        JWT_SECRET.as_bytes(),
        &idstream_server::stream::auth::Claims {
            sub: "t".into(),
            tenant: "acme".into(),
            kinds: vec!["*".into()],
            exp: (now() + 300) as u64,
            nbf: None,
            iat: None,
        },
    );
    let t = "/v1/stream/sse";
    let mut open = srv.client.get(srv.url(&format!("/v1/stream/sse?token={tok}"))).send().await.unwrap();
    let ct = open.headers()["content-type"].to_str().unwrap().to_owned();
    c.check("get", t, open.status().as_u16(), &ct, b"");
    assert_eq!(open.status(), 200);
    assert!(open.chunk().await.unwrap().is_some(), "the stream sends its subscription first");
    drop(open);
    c.expect(&srv, 400, call("GET", t, format!("/v1/stream/sse?token={tok}&tenant=beta"), None)).await;
    c.expect(&srv, 401, call("GET", t, "/v1/stream/sse", None)).await;
    let t = "/v1/stream";
    c.expect(&srv, 426, call("GET", t, "/v1/stream", None)).await;
    let ws = format!("{}/v1/stream?token={tok}", srv.base.replacen("http://", "ws://", 1));
    let (_, resp) = tokio_tungstenite::connect_async(ws).await.expect("websocket handshake");
    c.check("get", t, resp.status().as_u16(), "", b"");

    // --- System.
    c.expect(&srv, 200, call("GET", "/healthz", "/healthz", None)).await;
    c.expect(&srv, 200, call("GET", "/readyz", "/readyz", None)).await;
    let metrics = srv.client.get(srv.url("/metrics")).send().await.unwrap();
    let ct = metrics.headers()["content-type"].to_str().unwrap().to_owned();
    c.check("get", "/metrics", metrics.status().as_u16(), &ct, b"");

    // --- Retention: an offset that was removed is 410 on the read API and on SSE.
    let head = srv.state.log.head();
    srv.state.log.prune(2, 10).await.unwrap();
    assert!(head > 2);
    c.expect(&srv, 410, call("GET", "/v1/events", "/v1/events?after=1", Some(KEY_ACME))).await;
    c.expect(&srv, 410, call("GET", "/v1/stream/sse", format!("/v1/stream/sse?token={tok}&after=1"), None)).await;

    // --- A second server without stream keys (and without the dashboard's own): streams are 503.
    let plain = TestServer::start_with(&base_config(&[SECRET_NEW], "[dashboard]\nenabled = false\n")).await;
    c.expect(&plain, 503, call("GET", "/v1/stream/sse", "/v1/stream/sse", None)).await;
    c.expect(
        &plain,
        503,
        call("GET", "/v1/stream", "/v1/stream", None)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    )
    .await;

    // --- A stored row this version cannot read: the call fails loudly (5XX, generic message,
    // the cause only in the server's log), never with a made-up default.
    {
        let db = rusqlite::Connection::open(srv.dir.path().join("state.db")).unwrap();
        db.execute("UPDATE decisions SET detail = '{not json' WHERE id = ?1", [&decision_id]).unwrap();
    }
    let v = c
        .expect(&srv, 503, call("GET", "/v1/decisions/{id}", format!("/v1/decisions/{decision_id}"), Some(KEY_ACME)))
        .await;
    assert_eq!(v["error"], "store_unavailable", "{v}");
    assert!(!v.to_string().contains("json"), "internal detail leaked: {v}");

    // --- The log and the store closed (what a failed disk looks like to a caller): every write
    // is 503 with a generic message, after the call's own checks passed.
    let more = kyc_body("oa-9", "oa-s9", "oa-u9", "Approved", |_| {});
    srv.state.store.close().await;
    srv.state.log.close().await;
    let v = c
        .expect(
            &srv,
            503,
            call("POST", "/webhooks/{source_id}", "/webhooks/didit-main", None)
                .raw(more.clone())
                .headers_from(signed(&more)),
        )
        .await;
    assert_eq!(v["error"], "log_unavailable");
    c.expect(&srv, 503, call("PUT", "/v1/subjects/{id}", "/v1/subjects/oa-u1", Some(KEY_ACME)).json(json!({"a": 1})))
        .await;
    c.expect(&srv, 503, call("POST", "/v1/rulesets", "/v1/rulesets", Some(KEY_ACME)).raw(RULESET)).await;
    c.expect(
        &srv,
        503,
        call("POST", "/v1/rulesets/{version}/activate", format!("/v1/rulesets/{version}/activate"), Some(KEY_ACME)),
    )
    .await;
    c.expect(
        &srv,
        503,
        call("POST", "/v1/blocklists/{kind}", "/v1/blocklists/email", Some(KEY_ACME))
            .json(json!({"value": "y@example.com"})),
    )
    .await;
    c.expect(
        &srv,
        503,
        call("DELETE", "/v1/blocklists/{kind}/{id}", format!("/v1/blocklists/email/{entry}"), Some(KEY_ACME)),
    )
    .await;
    c.expect(
        &srv,
        503,
        call("POST", "/v1/reviews/{id}/claim", format!("/v1/reviews/{}/claim", ids[1]), Some(KEY_ACME)),
    )
    .await;
    c.expect(
        &srv,
        503,
        call("POST", "/v1/reviews/{id}/resolve", format!("/v1/reviews/{}/resolve", ids[1]), Some(KEY_ACME))
            .json(resolve("acme")),
    )
    .await;
    srv.state.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    c.expect(&srv, 503, call("GET", "/readyz", "/readyz", None)).await;
    rate_limited_answers(&c).await;
    dashboard_answers(&c).await;
    verifications_contract(&c).await;
    documents_contract(&c).await;
    review_moves_contract(&c).await;
    four_eyes_contract(&c).await;
    notification_endpoints(&c).await;
    let missing = c.unseen();
    assert!(missing.is_empty(), "documented answers never exercised: {missing:#?}");
}

/// Every answer carries a request id: the caller's when sane, else a new one; unknown methods
/// answer JSON; an internal failure's message says nothing internal.
#[tokio::test]
async fn request_ids_are_echoed_and_internal_errors_stay_internal() {
    let srv = TestServer::start().await;
    let get = |id: Option<&'static str>| {
        let mut r = srv.client.get(srv.url("/v1/events")).bearer_auth(KEY_ACME);
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };
    let r = get(Some("req-123.abc")).await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123.abc");
    let r = get(Some("bad id with spaces")).await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let r = get(None).await.unwrap();
    assert!(uuid::Uuid::parse_str(r.headers()["x-request-id"].to_str().unwrap()).is_ok());
    // Unknown routes and methods answer JSON errors too.
    let (s, v) = srv.call("DELETE", "/v1/events", Some(KEY_ACME), None).await;
    assert_eq!((s, v["error"].as_str()), (405, Some("method_not_allowed")), "{v}");

    let body = kyc_body("ri-1", "ri-s1", "ri-u1", "Approved", |_| {});
    srv.state.log.close().await;
    let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
    assert_eq!(s, 503);
    let text = v.to_string();
    assert!(!text.contains("closed") && !text.contains("SQLite") && !text.contains("database"), "{text}");
    assert_eq!(v["message"], "the server is shutting down; nothing was stored, retry later");
}

/// Keys, users, logins, and the refusals of roles (`403`).
async fn access_answers(c: &Contract, srv: &TestServer) {
    let ids: Vec<String> = {
        let (_, v) = srv.get("/v1/reviews?status=all", Some(KEY_ACME)).await;
        v["reviews"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };
    let review = ids.first().expect("the test made review cases").clone();
    // Roles are enforced on every call.
    c.expect(srv, 403, call("GET", "/v1/reviews/{id}", format!("/v1/reviews/{review}"), Some("key-svc"))).await;
    let v = c
        .expect(
            srv,
            403,
            call("POST", "/v1/reviews/{id}/claim", format!("/v1/reviews/{review}/claim"), Some("key-vic")),
        )
        .await;
    assert_eq!(v["message"], "role viewer cannot claim or resolve review cases", "{v}");
    c.expect(
        srv,
        403,
        call("POST", "/v1/reviews/{id}/resolve", format!("/v1/reviews/{review}/resolve"), Some("key-vic"))
            .json(json!({"outcome": "approve"})),
    )
    .await;

    // --- API keys.
    let t = "/v1/api-keys";
    let v = c.expect(srv, 200, call("GET", t, t, Some(KEY_ACME))).await;
    assert!(v["keys"].as_array().unwrap().iter().any(|k| k["source"] == "config" && k["name"] == "acme"), "{v}");
    c.expect(srv, 400, call("GET", t, "/v1/api-keys?bogus=1", Some(KEY_ACME))).await;
    c.expect(srv, 401, call("GET", t, t, None)).await;
    c.expect(srv, 403, call("GET", t, t, Some("key-vic"))).await;
    let made =
        c.expect(srv, 201, call("POST", t, t, Some(KEY_ACME)).json(json!({"name": "ci", "role": "service"}))).await;
    let new_key = made["api_key"].as_str().unwrap().to_owned();
    let key_id = made["id"].as_str().unwrap().to_owned();
    c.expect(srv, 400, call("POST", t, t, Some(KEY_ACME)).json(json!({"name": "", "role": "service"}))).await;
    c.expect(srv, 401, call("POST", t, t, None).json(json!({"name": "x", "role": "service"}))).await;
    c.expect(srv, 403, call("POST", t, t, Some("key-vic")).json(json!({"name": "x", "role": "service"}))).await;
    // The new key works at once; its revocation at once too.
    let (s, _) = srv.get("/v1/events", Some(&new_key)).await;
    assert_eq!(s, 200);
    let t = "/v1/api-keys/{id}";
    c.expect(srv, 401, call("DELETE", t, format!("/v1/api-keys/{key_id}"), None)).await;
    c.expect(srv, 403, call("DELETE", t, format!("/v1/api-keys/{key_id}"), Some("key-vic"))).await;
    c.expect(srv, 404, call("DELETE", t, "/v1/api-keys/nope", Some(KEY_ACME))).await;
    c.expect(srv, 409, call("DELETE", t, "/v1/api-keys/config:acme", Some(KEY_ACME))).await;
    c.expect(srv, 200, call("DELETE", t, format!("/v1/api-keys/{key_id}"), Some(KEY_ACME))).await;
    let (s, v) = srv.get("/v1/events", Some(&new_key)).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_api_key")), "{v}");

    // --- Users.
    let t = "/v1/users";
    let body = json!({"username": "olga", "role": "analyst", "password": "correct horse battery"});
    let user = c.expect(srv, 201, call("POST", t, t, Some(KEY_ACME)).json(body.clone())).await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    c.expect(srv, 409, call("POST", t, t, Some(KEY_ACME)).json(body.clone())).await;
    c.expect(
        srv,
        400,
        call("POST", t, t, Some(KEY_ACME)).json(json!({"username": "p", "role": "analyst", "password": "short"})),
    )
    .await;
    c.expect(srv, 401, call("POST", t, t, None).json(body.clone())).await;
    c.expect(srv, 403, call("POST", t, t, Some("key-vic")).json(body.clone())).await;
    c.expect(srv, 200, call("GET", t, t, Some(KEY_ACME))).await;
    c.expect(srv, 400, call("GET", t, "/v1/users?bogus=1", Some(KEY_ACME))).await;
    c.expect(srv, 401, call("GET", t, t, None)).await;
    c.expect(srv, 403, call("GET", t, t, Some("key-vic"))).await;
    let t = "/v1/users/{id}";
    let one = format!("/v1/users/{user_id}");
    c.expect(srv, 200, call("GET", t, one.clone(), Some(KEY_ACME))).await;
    c.expect(srv, 401, call("GET", t, one.clone(), None)).await;
    c.expect(srv, 403, call("GET", t, one.clone(), Some("key-vic"))).await;
    c.expect(srv, 404, call("GET", t, "/v1/users/nope", Some(KEY_ACME))).await;
    c.expect(srv, 200, call("PATCH", t, one.clone(), Some(KEY_ACME)).json(json!({"role": "policy_admin"}))).await;
    c.expect(srv, 400, call("PATCH", t, one.clone(), Some(KEY_ACME)).json(json!({}))).await;
    c.expect(srv, 401, call("PATCH", t, one.clone(), None).json(json!({"disabled": true}))).await;
    c.expect(srv, 403, call("PATCH", t, one.clone(), Some("key-vic")).json(json!({"disabled": true}))).await;
    c.expect(srv, 404, call("PATCH", t, "/v1/users/nope", Some(KEY_ACME)).json(json!({"disabled": true}))).await;

    // --- OIDC, not configured here.
    c.expect(srv, 404, call("GET", "/v1/auth/oidc/login", "/v1/auth/oidc/login", None)).await;
    c.expect(srv, 404, call("GET", "/v1/auth/oidc/callback", "/v1/auth/oidc/callback?code=a&state=b", None)).await;

    // --- Logins.
    let t = "/v1/auth/login";
    let creds = json!({"username": "olga", "password": "correct horse battery"});
    let session = c.expect(srv, 200, call("POST", t, t, None).json(creds.clone())).await;
    assert_eq!(session["user"]["role"], "policy_admin", "{session}");
    c.expect(srv, 400, call("POST", t, t, None).json(json!({"username": "olga"}))).await;
    c.expect(srv, 401, call("POST", t, t, None).json(json!({"username": "olga", "password": "wrong password!"}))).await;
    let (cookie, csrf) = login(srv, "olga", "correct horse battery").await;
    let t = "/v1/auth/me";
    let me = c.expect(srv, 200, call("GET", t, t, None).header("cookie", cookie.clone())).await;
    assert_eq!((me["name"].as_str(), me["kind"].as_str()), (Some("user:olga"), Some("user")), "{me}");
    c.expect(srv, 401, call("GET", t, t, None)).await;
    let t = "/v1/auth/logout";
    c.expect(srv, 400, call("POST", t, t, Some(KEY_ACME))).await;
    c.expect(srv, 401, call("POST", t, t, None)).await;
    c.expect(srv, 403, call("POST", t, t, None).header("cookie", cookie.clone())).await;
    c.expect(srv, 200, call("POST", t, t, None).header("cookie", cookie.clone()).header("x-csrf-token", csrf)).await;
    c.expect(srv, 401, call("GET", "/v1/auth/me", "/v1/auth/me", None).header("cookie", cookie)).await;
    // A disabled account cannot log in.
    srv.call("PATCH", &format!("/v1/users/{user_id}"), Some(KEY_ACME), json_body(json!({"disabled": true}))).await;
    c.expect(srv, 403, call("POST", "/v1/auth/login", "/v1/auth/login", None).json(creds)).await;
}

/// Logs in; the session cookie (`name=value`) and its CSRF token.
pub async fn login(srv: &TestServer, user: &str, password: &str) -> (String, String) {
    let r = srv
        .client
        .post(srv.url("/v1/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    (cookie, v["csrf_token"].as_str().unwrap().to_owned())
}

/// Every limited endpoint answers `429` (with `Retry-After`) once its caller's budget is spent.
async fn rate_limited_answers(c: &Contract) {
    let tight = "{ per_sec = 0.001, burst = 1 }";
    let srv = TestServer::start_with(&base_config(
        &[SECRET_NEW],
        &format!("[rate_limits]\nread = {tight}\nwrite = {tight}\nbacktest = {tight}\nlogin = {tight}\n"),
    ))
    .await;
    // Spend each budget once.
    assert_eq!(srv.get("/v1/events", Some(KEY_ACME)).await.0, 200);
    srv.call("POST", "/v1/blocklists/email", Some(KEY_ACME), json_body(json!({"value": "a@example.com"}))).await;
    srv.call("POST", "/v1/backtests", Some(KEY_ACME), json_body(json!({"ruleset": RULESET}))).await;
    srv.call("POST", "/v1/auth/login", None, json_body(json!({"username": "x", "password": "y"}))).await;
    for (method, template, action) in idstream_server::http::authz::ROUTES {
        use idstream_server::http::authz::Action;
        if matches!(action, Action::Public) {
            continue;
        }
        let path = template.replace("{kind}", "email").replace("{id}", "x").replace("{version}", "x");
        let v = c.expect(&srv, 429, call(method, template, path, Some(KEY_ACME)).json(json!({}))).await;
        assert_eq!(v["error"], "rate_limited", "{method} {template}: {v}");
    }
    let r = srv.client.get(srv.url("/v1/events")).bearer_auth(KEY_ACME).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(r.headers().contains_key("ratelimit-limit") && r.headers().contains_key("ratelimit-reset"));
    // Webhooks are never limited here.
    let body = kyc_body("rl-1", "rl-s1", "rl-u1", "Approved", |_| {});
    assert_eq!(srv.post("didit-main", &body, &signed(&body)).await.0, 200);
}

/// The dashboard's page and files, and its stream tokens (issue 17).
async fn dashboard_answers(c: &Contract) {
    let limited = "[rate_limits]\nwrite = { per_sec = 0.001, burst = 2 }\n";
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], limited)).await;
    c.expect(&srv, 200, call("GET", "/", "/", None)).await;
    c.expect(&srv, 200, call("GET", "/assets/{file}", "/assets/app.js", None)).await;
    c.expect(&srv, 404, call("GET", "/assets/{file}", "/assets/nope.js", None)).await;
    let t = "/v1/stream/token";
    c.expect(&srv, 401, call("POST", t, t, None)).await;
    c.expect(&srv, 400, call("POST", t, t, Some(KEY_ALL))).await;
    c.expect(&srv, 403, call("POST", t, t, Some(KEY_ACME)).json(json!({"tenant": "beta"}))).await;
    c.expect(&srv, 200, call("POST", t, t, Some(KEY_ACME))).await;
    c.expect(&srv, 429, call("POST", t, t, Some(KEY_ACME))).await;
    let off = TestServer::start_with(&base_config(&[SECRET_NEW], "[dashboard]\nenabled = false\n")).await;
    c.expect(&off, 404, call("GET", "/", "/", None)).await;
    c.expect(&off, 503, call("POST", t, t, Some(KEY_ACME))).await;
}

/// `POST /v1/verifications` and `GET /v1/verifications/{session_id}`, against `idstream
/// sandbox`: every documented status.
async fn verifications_contract(c: &Contract) {
    use crate::verifications::{config, Sandbox, KEY_SVC};
    let sb = Sandbox::start().await;
    let srv =
        TestServer::start_with(&config(&sb, "timeout_ms = 300\nmax_retries = 0\nbreaker_failures = 100", "")).await;
    let (p, g) = ("/v1/verifications", "/v1/verifications/{session_id}");
    let v = c.expect(&srv, 201, call("POST", p, p, Some(KEY_SVC)).json(json!({"subject": "oa-v1"}))).await;
    let sid = v["session_id"].as_str().unwrap().to_owned();
    c.expect(&srv, 400, call("POST", p, p, Some(KEY_SVC)).json(json!({"subject": ""}))).await;
    c.expect(&srv, 401, call("POST", p, p, None).json(json!({"subject": "oa-v1"}))).await;
    c.expect(&srv, 403, call("POST", p, "/v1/verifications?tenant=beta", Some(KEY_SVC)).json(json!({"subject": "x"})))
        .await;
    c.expect(&srv, 200, call("GET", g, format!("/v1/verifications/{sid}"), Some(KEY_SVC))).await;
    c.expect(&srv, 200, call("GET", g, format!("/v1/verifications/{sid}?refresh=true"), Some(KEY_SVC))).await;
    c.expect(&srv, 400, call("GET", g, format!("/v1/verifications/{sid}"), Some(KEY_ALL))).await;
    c.expect(&srv, 401, call("GET", g, format!("/v1/verifications/{sid}"), None)).await;
    c.expect(&srv, 403, call("GET", g, format!("/v1/verifications/{sid}?tenant=beta"), Some(KEY_SVC))).await;
    c.expect(&srv, 404, call("GET", g, "/v1/verifications/no-such-session", Some(KEY_SVC))).await;
    sb.faults(json!({"fail_next": 2, "fail_status": 500})).await;
    c.expect(&srv, 502, call("POST", p, p, Some(KEY_SVC)).json(json!({"subject": "oa-v2"}))).await;
    c.expect(&srv, 502, call("GET", g, format!("/v1/verifications/{sid}?refresh=true"), Some(KEY_SVC))).await;
    sb.faults(json!({"delay_ms": 1000})).await;
    c.expect(&srv, 504, call("POST", p, p, Some(KEY_SVC)).json(json!({"subject": "oa-v2"}))).await;
    c.expect(&srv, 504, call("GET", g, format!("/v1/verifications/{sid}?refresh=true"), Some(KEY_SVC))).await;
    sb.faults(json!({})).await;
    // Rate limits: a server whose limits allow one call of each class.
    let limited = config(&sb, "", "").replace(
        "[rate_limits]\nenabled = false",
        "[rate_limits]\nread = { per_sec = 0.001, burst = 1 }\nwrite = { per_sec = 0.001, burst = 1 }",
    );
    let srv = TestServer::start_with(&limited).await;
    let v = c.expect(&srv, 201, call("POST", p, p, Some(KEY_SVC)).json(json!({"subject": "oa-v3"}))).await;
    let sid = v["session_id"].as_str().unwrap().to_owned();
    c.expect(&srv, 429, call("POST", p, p, Some(KEY_SVC)).json(json!({"subject": "oa-v3"}))).await;
    c.expect(&srv, 200, call("GET", g, format!("/v1/verifications/{sid}"), Some(KEY_SVC))).await;
    c.expect(&srv, 429, call("GET", g, format!("/v1/verifications/{sid}"), Some(KEY_SVC))).await;
}

impl Call<'_> {
    /// A multipart/form-data body of `(name, bytes)` parts.
    fn multipart(mut self, parts: &[(&str, &[u8])]) -> Self {
        let mut body = Vec::new();
        for (name, bytes) in parts {
            body.extend_from_slice(
                format!(
                    "--oa-boundary\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--oa-boundary--\r\n");
        self.body = Some(body);
        self.headers.push(("content-type", "multipart/form-data; boundary=oa-boundary".into()));
        self
    }
}

/// Four-eyes activation: the request (202) and the requester's own second try (409).
async fn four_eyes_contract(c: &Contract) {
    let extra = format!(
        "[rate_limits]\nenabled = false\n[decisions]\nrequire_second_approver = true\n{}",
        role_key("fe-pol", "acme", "policy_admin")
    );
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], &extra)).await;
    let up = srv.call("POST", "/v1/rulesets", Some("key-fe-pol"), Some(RULESET.as_bytes().to_vec())).await;
    let version = up.1["version"].as_str().unwrap().to_owned();
    let t = "/v1/rulesets/{version}/activate";
    let path = format!("/v1/rulesets/{version}/activate");
    c.expect(&srv, 202, call("POST", t, path.clone(), Some("key-fe-pol"))).await;
    c.expect(&srv, 409, call("POST", t, path.clone(), Some("key-fe-pol"))).await;
    c.expect(&srv, 200, call("POST", t, path, Some(KEY_ACME))).await;
}

/// Release, escalate and reassign of review cases: every documented status.
async fn review_moves_contract(c: &Contract) {
    use crate::review_queue::queue_server;
    let (rel, esc, rea) = ("/v1/reviews/{id}/release", "/v1/reviews/{id}/escalate", "/v1/reviews/{id}/reassign");
    let (srv, ids) = queue_server(&role_key("mv-vic", "acme", "viewer"), &["oa-q1", "oa-q2", "oa-q4"]).await;
    let path = |id: &str, what: &str| format!("/v1/reviews/{id}/{what}");
    let (a, b) = (&ids[0], &ids[1]);
    for (name, role) in [("oa-carla", "analyst"), ("oa-pol", "policy_admin")] {
        let body = json!({"username": name, "role": role, "password": "a long enough password"});
        assert_eq!(
            srv.call("POST", "/v1/users", Some(KEY_ACME), Some(serde_json::to_vec(&body).unwrap())).await.0,
            201
        );
    }
    c.expect(&srv, 409, call("POST", rel, path(a, "release"), Some("key-q-ana"))).await;
    c.expect(&srv, 409, call("POST", esc, path(a, "escalate"), Some("key-q-ana"))).await;
    assert_eq!(srv.call("POST", &path(a, "claim"), Some("key-q-ana"), None).await.0, 200);
    c.expect(&srv, 400, call("POST", rel, path(a, "release"), Some("key-q-ana")).json(json!({"bogus": 1}))).await;
    c.expect(&srv, 400, call("POST", esc, path(a, "escalate"), Some("key-q-ana")).json(json!({"bogus": 1}))).await;
    c.expect(&srv, 200, call("POST", rel, path(a, "release"), Some("key-q-ana")).json(json!({"note": "later"}))).await;
    assert_eq!(srv.call("POST", &path(a, "claim"), Some("key-q-ana"), None).await.0, 200);
    c.expect(&srv, 200, call("POST", esc, path(a, "escalate"), Some("key-q-ana"))).await;
    c.expect(&srv, 400, call("POST", rea, path(a, "reassign"), Some(KEY_ACME)).json(json!({"to": "oa-carla"}))).await;
    c.expect(&srv, 200, call("POST", rea, path(a, "reassign"), Some(KEY_ACME)).json(json!({"to": "oa-pol"}))).await;
    let body = |what: &str| if what == "reassign" { json!({"to": "oa-pol"}) } else { json!({}) };
    for (t, what) in [(rel, "release"), (esc, "escalate"), (rea, "reassign")] {
        c.expect(&srv, 401, call("POST", t, path(a, what), None).json(body(what))).await;
        c.expect(&srv, 403, call("POST", t, path(a, what), Some("key-mv-vic")).json(body(what))).await;
        c.expect(&srv, 404, call("POST", t, path("no-such-case", what), Some(KEY_ACME)).json(body(what))).await;
    }
    assert_eq!(srv.call("POST", &path(b, "claim"), Some("key-q-ana"), None).await.0, 200);
    let resolve = json!({"outcome": "approve", "note": "fine"});
    assert_eq!(srv.call("POST", &path(b, "resolve"), Some("key-q-ana"), json_body(resolve)).await.0, 200);
    c.expect(&srv, 409, call("POST", rea, path(b, "reassign"), Some(KEY_ACME)).json(json!({"to": "oa-carla"}))).await;
    // The store closed: a case the admin holds, every change refused with 503.
    let held = &ids[2];
    assert_eq!(srv.call("POST", &path(held, "claim"), Some(KEY_ACME), None).await.0, 200);
    srv.state.store.close().await;
    srv.state.log.close().await;
    c.expect(
        &srv,
        503,
        call("POST", "/v1/reviews/{id}/resubmit", path(held, "resubmit"), Some(KEY_ACME)).json(json!({"note": "x"})),
    )
    .await;
    for (t, what) in [(rel, "release"), (esc, "escalate"), (rea, "reassign")] {
        c.expect(&srv, 503, call("POST", t, path(held, what), Some(KEY_ACME)).json(body(what))).await;
    }
    // Rate limits: one write call allowed.
    let limited = "[rate_limits]\nread = { per_sec = 0.001, burst = 1 }\nwrite = { per_sec = 0.001, burst = 1 }\n";
    let (srv, ids) = queue_server(limited, &["oa-q3"]).await;
    let _ = srv.call("POST", &path(&ids[0], "claim"), Some("key-q-ana"), None).await;
    let _ = srv.call("POST", &path(&ids[0], "release"), Some(KEY_ACME), None).await;
    for (t, what) in [(rel, "release"), (esc, "escalate"), (rea, "reassign")] {
        let key = if what == "reassign" { KEY_ACME } else { "key-q-ana" };
        c.expect(&srv, 429, call("POST", t, path(&ids[0], what), Some(key)).json(body(what))).await;
    }
}

/// `POST /v1/verifications/document` and `GET /v1/documents/{id}`: every documented status.
async fn documents_contract(c: &Contract) {
    use crate::verifications::{config, Sandbox, KEY_SVC};
    use idstream_server::documents::content::samples;
    let sb = Sandbox::start().await;
    let extra = format!(
        "[documents]\nmax_file_bytes = 100000\nmax_request_bytes = 150000\n{}",
        role_key("doc-vic", "acme", "viewer")
    );
    let srv =
        TestServer::start_with(&config(&sb, "timeout_ms = 300\nmax_retries = 0\nbreaker_failures = 100", &extra)).await;
    let (p, g) = ("/v1/verifications/document", "/v1/documents/{id}");
    let jpeg = samples::jpeg(800, 600, 1000);
    let ok: &[(&str, &[u8])] = &[("front_image", &jpeg), ("subject", b"oa-d1")];
    let v = c.expect(&srv, 201, call("POST", p, p, Some(KEY_SVC)).multipart(ok)).await;
    let id = v["documents"][0]["id"].as_str().unwrap().to_owned();
    let v =
        c.expect(&srv, 201, call("POST", p, "/v1/verifications/document?wait=true", Some(KEY_SVC)).multipart(ok)).await;
    assert!(v["decision"].is_object(), "{v}");
    c.expect(&srv, 400, call("POST", p, p, Some(KEY_SVC)).multipart(&[("front_image", &jpeg)])).await;
    c.expect(&srv, 401, call("POST", p, p, None).multipart(ok)).await;
    c.expect(&srv, 403, call("POST", p, "/v1/verifications/document?tenant=beta", Some(KEY_SVC)).multipart(ok)).await;
    let big = samples::jpeg(800, 600, 120_000);
    c.expect(&srv, 413, call("POST", p, p, Some(KEY_SVC)).multipart(&[("front_image", &big), ("subject", b"x")])).await;
    c.expect(
        &srv,
        415,
        call("POST", p, p, Some(KEY_SVC)).multipart(&[("front_image", b"GIF89a...."), ("subject", b"x")]),
    )
    .await;
    let cut = &jpeg[..jpeg.len() - 4];
    c.expect(&srv, 422, call("POST", p, p, Some(KEY_SVC)).multipart(&[("front_image", cut), ("subject", b"x")])).await;
    sb.faults(json!({"fail_next": 1, "fail_status": 500})).await;
    c.expect(&srv, 502, call("POST", p, p, Some(KEY_SVC)).multipart(ok)).await;
    sb.faults(json!({"delay_ms": 1000})).await;
    c.expect(&srv, 504, call("POST", p, p, Some(KEY_SVC)).multipart(ok)).await;
    sb.faults(json!({})).await;

    // A resubmission request goes to the provider: its failures are 502 / 504.
    sb.webhooks_to(&srv).await;
    let (s, v) = srv.call("POST", "/v1/verifications", Some(KEY_SVC), json_body(json!({"subject": "oa-rs-u"}))).await;
    assert_eq!(s, 201, "{v}");
    let session = v["session_id"].as_str().unwrap().to_owned();
    sb.complete(&session, "aml_hit").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let case = loop {
        let (_, list) = srv.get(&format!("/v1/reviews?session_id={session}"), Some(KEY_ACME)).await;
        if let Some(id) = list["reviews"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no case for {session}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(srv.call("POST", &format!("/v1/reviews/{case}/claim"), Some(KEY_ACME), None).await.0, 200);
    let rs = "/v1/reviews/{id}/resubmit";
    let note = json!({"note": "please retake the photo"});
    sb.faults(json!({"fail_next": 1, "fail_status": 500})).await;
    c.expect(&srv, 502, call("POST", rs, format!("/v1/reviews/{case}/resubmit"), Some(KEY_ACME)).json(note.clone()))
        .await;
    sb.faults(json!({"delay_ms": 1000})).await;
    c.expect(&srv, 504, call("POST", rs, format!("/v1/reviews/{case}/resubmit"), Some(KEY_ACME)).json(note.clone()))
        .await;
    sb.faults(json!({})).await;
    c.expect(
        &srv,
        400,
        call("POST", rs, format!("/v1/reviews/{case}/resubmit"), Some(KEY_ACME)).json(json!({"note": ""})),
    )
    .await;
    c.expect(&srv, 200, call("POST", rs, format!("/v1/reviews/{case}/resubmit"), Some(KEY_ACME)).json(note.clone()))
        .await;
    c.expect(&srv, 409, call("POST", rs, format!("/v1/reviews/{case}/resubmit"), Some(KEY_ACME)).json(note.clone()))
        .await;
    c.expect(&srv, 401, call("POST", rs, format!("/v1/reviews/{case}/resubmit"), None).json(note.clone())).await;
    c.expect(&srv, 403, call("POST", rs, format!("/v1/reviews/{case}/resubmit"), Some(KEY_SVC)).json(note.clone()))
        .await;
    c.expect(&srv, 404, call("POST", rs, "/v1/reviews/no-such-case/resubmit", Some(KEY_ACME)).json(note)).await;

    c.expect(&srv, 200, call("GET", g, format!("/v1/documents/{id}"), Some(KEY_SVC))).await;
    c.expect(&srv, 400, call("GET", g, format!("/v1/documents/{id}"), Some(KEY_ALL))).await;
    c.expect(&srv, 401, call("GET", g, format!("/v1/documents/{id}"), None)).await;
    c.expect(&srv, 403, call("GET", g, format!("/v1/documents/{id}"), Some("key-doc-vic"))).await;
    c.expect(&srv, 404, call("GET", g, "/v1/documents/no-such-document", Some(KEY_SVC))).await;

    // The storage failing: its directory replaced by a file.
    let root = srv.dir.path().join("documents");
    std::fs::rename(&root, srv.dir.path().join("documents-moved")).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    c.expect(&srv, 503, call("POST", p, p, Some(KEY_SVC)).multipart(ok)).await;

    // Not decided in time (no decision worker): 202.
    let srv = TestServer::start_with(&config(&sb, "", &format!("{extra}\n[decisions]\nenabled = false\n"))).await;
    let v = c
        .expect(
            &srv,
            202,
            call("POST", p, "/v1/verifications/document?wait=true&wait_secs=1", Some(KEY_SVC)).multipart(ok),
        )
        .await;
    assert!(v["decision"].is_null(), "{v}");
    // Rate limits: one call of each class.
    let limited = config(&sb, "", &extra).replace(
        "[rate_limits]\nenabled = false",
        "[rate_limits]\nread = { per_sec = 0.001, burst = 1 }\nwrite = { per_sec = 0.001, burst = 1 }",
    );
    let srv = TestServer::start_with(&limited).await;
    let v = c.expect(&srv, 201, call("POST", p, p, Some(KEY_SVC)).multipart(ok)).await;
    let id = v["documents"][0]["id"].as_str().unwrap().to_owned();
    c.expect(&srv, 429, call("POST", p, p, Some(KEY_SVC)).multipart(ok)).await;
    c.expect(&srv, 200, call("GET", g, format!("/v1/documents/{id}"), Some(KEY_SVC))).await;
    c.expect(&srv, 429, call("GET", g, format!("/v1/documents/{id}"), Some(KEY_SVC))).await;
}

/// `/v1/endpoints` (outbound notifications): every documented answer, on servers of its own
/// (one with a config endpoint and a viewer key, one with rate limits of one call).
async fn notification_endpoints(c: &Contract) {
    const KEY_VIEWER: &str = "key-viewer";
    let extra = format!(
        "[notifications]\nallow_private_addresses = true\n\n[[api_keys]]\nname = \"viewer\"\ntenant = \"acme\"\nrole = \"viewer\"\n\
         sha256 = \"{}\"\n\n[[endpoints]]\nid = \"from-config\"\ntenant = \"acme\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         kinds = [\"decision.made\"]\nsecrets = [\"{STD_SECRET}\"]\n",
        idstream_server::state::hash_api_key(KEY_VIEWER)
    );
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], &extra)).await;
    let new = json!({"id": "oa-hook", "url": "http://127.0.0.1:9/hook", "kinds": ["decision.*"], "filter": {"outcome": ["approve"]}});
    let (l, one) = ("/v1/endpoints", "/v1/endpoints/{id}");
    let (d, r) = ("/v1/endpoints/{id}/deliveries", "/v1/endpoints/{id}/replay");
    let v = c.expect(&srv, 201, call("POST", l, l, Some(KEY_ACME)).json(new.clone())).await;
    assert!(v["secret"].as_str().unwrap().starts_with("whsec_"));
    c.expect(
        &srv,
        400,
        call("POST", l, l, Some(KEY_ACME)).json(json!({"url": "http://169.254.169.254/", "kinds": ["*"]})),
    )
    .await;
    c.expect(&srv, 401, call("POST", l, l, None).json(new.clone())).await;
    c.expect(&srv, 403, call("POST", l, l, Some(KEY_VIEWER)).json(new.clone())).await;
    c.expect(&srv, 409, call("POST", l, l, Some(KEY_ACME)).json(new.clone())).await;
    let v = c.expect(&srv, 200, call("GET", l, l, Some(KEY_ACME))).await;
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 2);
    c.expect(&srv, 400, call("GET", l, "/v1/endpoints?bogus=1", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", l, l, None)).await;
    c.expect(&srv, 403, call("GET", l, l, Some(KEY_VIEWER))).await;
    c.expect(&srv, 200, call("GET", one, "/v1/endpoints/oa-hook", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", one, "/v1/endpoints/oa-hook", None)).await;
    c.expect(&srv, 403, call("GET", one, "/v1/endpoints/oa-hook", Some(KEY_VIEWER))).await;
    c.expect(&srv, 404, call("GET", one, "/v1/endpoints/oa-hook", Some(KEY_BETA))).await;
    let v = c
        .expect(
            &srv,
            200,
            call("PATCH", one, "/v1/endpoints/oa-hook", Some(KEY_ACME)).json(json!({"rotate_secret": true})),
        )
        .await;
    assert_eq!(v["secrets"], 2);
    c.expect(&srv, 400, call("PATCH", one, "/v1/endpoints/oa-hook", Some(KEY_ACME)).json(json!({"kinds": []}))).await;
    c.expect(&srv, 401, call("PATCH", one, "/v1/endpoints/oa-hook", None).json(json!({}))).await;
    c.expect(&srv, 403, call("PATCH", one, "/v1/endpoints/oa-hook", Some(KEY_VIEWER)).json(json!({}))).await;
    c.expect(&srv, 404, call("PATCH", one, "/v1/endpoints/nope", Some(KEY_ACME)).json(json!({}))).await;
    c.expect(
        &srv,
        409,
        call("PATCH", one, "/v1/endpoints/from-config", Some(KEY_ACME)).json(json!({"disabled": true})),
    )
    .await;
    c.expect(&srv, 200, call("GET", d, "/v1/endpoints/oa-hook/deliveries?failed=true", Some(KEY_ACME))).await;
    c.expect(&srv, 400, call("GET", d, "/v1/endpoints/oa-hook/deliveries?limit=0", Some(KEY_ACME))).await;
    c.expect(&srv, 401, call("GET", d, "/v1/endpoints/oa-hook/deliveries", None)).await;
    c.expect(&srv, 403, call("GET", d, "/v1/endpoints/oa-hook/deliveries", Some(KEY_VIEWER))).await;
    c.expect(&srv, 404, call("GET", d, "/v1/endpoints/nope/deliveries", Some(KEY_ACME))).await;
    let v = c
        .expect(
            &srv,
            202,
            call("POST", r, "/v1/endpoints/oa-hook/replay", Some(KEY_ACME)).json(json!({"from_offset": 1})),
        )
        .await;
    assert_eq!(v["from_offset"], 1);
    c.expect(
        &srv,
        202,
        call("POST", r, "/v1/endpoints/from-config/replay", Some(KEY_ACME))
            .json(json!({"since": "2026-01-01T00:00:00Z"})),
    )
    .await;
    c.expect(&srv, 400, call("POST", r, "/v1/endpoints/oa-hook/replay", Some(KEY_ACME)).json(json!({}))).await;
    c.expect(&srv, 401, call("POST", r, "/v1/endpoints/oa-hook/replay", None).json(json!({"from_offset": 1}))).await;
    c.expect(
        &srv,
        403,
        call("POST", r, "/v1/endpoints/oa-hook/replay", Some(KEY_VIEWER)).json(json!({"from_offset": 1})),
    )
    .await;
    c.expect(&srv, 404, call("POST", r, "/v1/endpoints/nope/replay", Some(KEY_ACME)).json(json!({"from_offset": 1})))
        .await;
    c.expect(&srv, 401, call("DELETE", one, "/v1/endpoints/oa-hook", None)).await;
    c.expect(&srv, 403, call("DELETE", one, "/v1/endpoints/oa-hook", Some(KEY_VIEWER))).await;
    c.expect(&srv, 409, call("DELETE", one, "/v1/endpoints/from-config", Some(KEY_ACME))).await;
    c.expect(&srv, 200, call("DELETE", one, "/v1/endpoints/oa-hook", Some(KEY_ACME))).await;
    c.expect(&srv, 404, call("DELETE", one, "/v1/endpoints/oa-hook", Some(KEY_ACME))).await;
    srv.stop().await;

    // Rate limits of one call per class: the second read and the second change are 429.
    let limited = TestServer::start_with(&base_config(
        &[SECRET_NEW],
        "[notifications]\nallow_private_addresses = true\n[rate_limits]\nread = { per_sec = 0.001, burst = 1 }\n\
         write = { per_sec = 0.001, burst = 1 }\n",
    ))
    .await;
    c.expect(&limited, 200, call("GET", l, l, Some(KEY_ACME))).await;
    c.expect(&limited, 429, call("GET", l, l, Some(KEY_ACME))).await;
    c.expect(&limited, 429, call("GET", one, "/v1/endpoints/x", Some(KEY_ACME))).await;
    c.expect(&limited, 429, call("GET", d, "/v1/endpoints/x/deliveries", Some(KEY_ACME))).await;
    c.expect(&limited, 201, call("POST", l, l, Some(KEY_ACME)).json(new.clone())).await;
    c.expect(&limited, 429, call("POST", l, l, Some(KEY_ACME)).json(new.clone())).await;
    c.expect(&limited, 429, call("PATCH", one, "/v1/endpoints/oa-hook", Some(KEY_ACME)).json(json!({}))).await;
    c.expect(&limited, 429, call("DELETE", one, "/v1/endpoints/oa-hook", Some(KEY_ACME))).await;
    c.expect(
        &limited,
        429,
        call("POST", r, "/v1/endpoints/oa-hook/replay", Some(KEY_ACME)).json(json!({"from_offset": 1})),
    )
    .await;
    limited.stop().await;
}
