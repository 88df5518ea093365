//! The decision worker and the decision APIs over real HTTP: simulated personas get the
//! expected outcomes, blocklists decline, reviews are claimed exclusively and resolved, rulesets
//! are validated and activated, and a backtest reports what a candidate would change.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A Didit v3 `status.updated` body with a full set of checks, every one clean unless changed.
pub fn kyc_body(event: &str, session: &str, subject: &str, status: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let ts = now();
    let mut v = json!({
        "event_id": event,
        "webhook_type": "status.updated",
        "timestamp": ts,
        "created_at": ts - 5,
        "session_id": session,
        "status": status,
        "vendor_data": subject,
        "decision": {
            "id_verifications": [{"node_id": "id_1", "status": "Approved", "document_type": "Passport",
                "document_number": format!("P-{subject}"), "first_name": "Ana", "last_name": "Lopez",
                "date_of_birth": "1990-04-02", "expiration_date": "2034-01-01", "issuing_state": "ESP"}],
            "liveness_checks": [{"node_id": "l_1", "status": "Approved", "score": 96.0, "method": "passive"}],
            "face_matches": [{"node_id": "f_1", "status": "Approved", "score": 93.0}],
            "aml_screenings": [{"node_id": "a_1", "status": "Approved", "total_hits": 0}],
            "ip_analyses": [{"node_id": "ip_1", "status": "Approved", "country": "ES", "vpn": false, "proxy": false,
                "tor": false, "hosting": false, "risk_score": 5}],
            "phone_verifications": [{"node_id": "p_1", "phone_number": format!("+3460{:07}", subject.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into())) % 10_000_000),
                "is_disposable": false, "is_virtual": false}]
        }
    });
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

async fn send(srv: &TestServer, body: &[u8]) {
    let (s, v) = srv.post("didit-main", body, &didit_headers(body, SECRET_NEW, Sig::All)).await;
    assert_eq!(s, 200, "{v}");
}

async fn session(srv: &TestServer, id: &str) -> Value {
    let (s, v) = srv.get(&format!("/v1/sessions/{id}"), Some(KEY_ACME)).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn simulated_personas_get_the_expected_outcomes(backend: String) {
    use idstream_tools::simulate::{simulate, SimulateArgs};
    // It reads every one of 300 sessions back with one key: faster than the default read limit
    // refills (100/s, bursts of 200) on a fast machine. Rate limits have their own tests.
    let extra = format!("{backend}\n[rate_limits]\nenabled = false\n");
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], &extra)).await;
    let args = SimulateArgs {
        target: srv.url("/webhooks/didit-main"),
        secret: Some(SECRET_NEW.into()),
        secret_file: "unused".into(),
        sessions: 300,
        rate: 0,
        concurrency: 8,
        seed: 7,
        duplicate_rate: 0.1,
        retry_rate: 0.05,
        out: None,
        quiet: true,
    };
    let s = simulate(&args).await.unwrap();
    assert_eq!(s.rejected + s.errors, 0, "{s}");
    srv.decided().await;

    // Each session's persona, from the original body's metadata.
    let events = srv.all_events().await;
    let mut persona: HashMap<String, String> = HashMap::new();
    let mut decidable = 0;
    for e in events.iter().filter(|e| e["kind"].as_str().unwrap().starts_with("verification.")) {
        let body: Value = serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
        persona
            .insert(e["session_id"].as_str().unwrap().into(), body["metadata"]["sim_persona"].as_str().unwrap().into());
        if matches!(e["status"].as_str(), Some("approved" | "declined" | "in_review")) {
            decidable += 1;
        }
    }
    let made: Vec<&Value> = events.iter().filter(|e| e["kind"] == "decision.made").collect();
    assert_eq!(made.len(), decidable, "one decision.made per decidable verification event");

    // persona -> final state -> sessions
    let mut table: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (sid, p) in &persona {
        let v = session(&srv, sid).await;
        let state = v["state"].as_str().unwrap_or("none").to_owned();
        *table.entry(p.clone()).or_default().entry(state).or_default() += 1;
        // Every decision explains itself: the ruleset, the reasons, the rules with their values.
        for d in v["decisions"].as_array().unwrap() {
            assert_eq!(d["decided_by"], "rules");
            assert_eq!(d["ruleset_version"].as_str().unwrap().len(), 64);
            assert!(d["detail"]["inputs"]["provider"].is_object(), "{d}");
            if d["outcome"] != "approve" {
                assert!(!d["reasons"].as_array().unwrap().is_empty(), "{d}");
            }
        }
    }
    let only = |p: &str, allowed: &[&str]| {
        let row = table.get(p).unwrap_or_else(|| panic!("no session of persona {p} was simulated: {table:#?}"));
        for (state, n) in row {
            assert!(allowed.contains(&state.as_str()), "{p}: {n} session(s) ended `{state}`; table: {table:#?}");
        }
    };
    only("honest", &["approved"]);
    only("resubmitted", &["approved"]);
    only("minor", &["declined"]);
    only("expired_document", &["declined"]);
    only("poor_liveness", &["declined"]);
    only("aml_hit", &["review"]);
    only("low_face_match", &["review"]);
    only("risky_ip", &["review", "declined"]);
    only("abandoned", &["abandoned"]);
    // Fraud rings: every member after the first is flagged by velocity.
    for ring in ["fraud_ring_document", "fraud_ring_phone"] {
        let row = &table[ring];
        let flagged = row.get("review").copied().unwrap_or(0) + row.get("declined").copied().unwrap_or(0);
        let approved = row.get("approved").copied().unwrap_or(0);
        assert!(flagged > approved, "{ring}: {row:?}");
    }
    assert!(table["honest"]["approved"] > 100, "{table:#?}");

    // The review queue holds exactly the sessions in review.
    let (st, v) = srv.get("/v1/reviews?limit=1000", Some(KEY_ACME)).await;
    assert_eq!(st, 200, "{v}");
    let in_review: usize = table.values().map(|r| r.get("review").copied().unwrap_or(0)).sum();
    assert_eq!(v["reviews"].as_array().unwrap().len(), in_review);
    assert!(v["next_after"].is_null(), "everything fit in one page: {}", v["next_after"]);
    // Keyset pages of 7 walk the same cases in the same order, each once.
    let all: Vec<Value> = v["reviews"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    let (mut walked, mut after) = (Vec::new(), None::<String>);
    loop {
        let q = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
        let (st, page) = srv.get(&format!("/v1/reviews?limit=7{q}"), Some(KEY_ACME)).await;
        assert_eq!(st, 200, "{page}");
        let got = page["reviews"].as_array().unwrap();
        assert!(got.len() <= 7);
        walked.extend(got.iter().map(|r| r["id"].clone()));
        match page["next_after"].as_str() {
            Some(a) => {
                assert_eq!(got.len(), 7, "a page that is not the last one is full");
                after = Some(a.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(walked, all);
}

async fn blocklisted_values_decline_and_are_never_stored_in_clear(backend: String) {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], &backend)).await;
    // Added in another spelling than the provider will send it.
    let (s, v) = srv
        .call(
            "POST",
            "/v1/blocklists/document",
            Some(KEY_ACME),
            json_body(json!({"value": "p-bad 007", "issuing_country": "esp", "reason": "forged passport"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    let body = kyc_body("e-blk", "s-blk", "bad007", "Approved", |v| {
        v["decision"]["id_verifications"][0]["document_number"] = "PBAD007".into();
    });
    send(&srv, &body).await;
    srv.decided().await;
    let sess = session(&srv, "s-blk").await;
    assert_eq!(sess["state"], "declined", "{sess}");
    assert!(sess["decisions"][0]["reasons"].as_array().unwrap().contains(&json!("blocklist.document")), "{sess}");

    // An honest session next to it is approved.
    send(&srv, &kyc_body("e-ok", "s-ok", "good1", "Approved", |_| {})).await;
    srv.decided().await;
    assert_eq!(session(&srv, "s-ok").await["state"], "approved");

    // Listing and the log show the hash, never the value.
    let (s, list) = srv.get("/v1/blocklists/document", Some(KEY_ACME)).await;
    assert_eq!(s, 200);
    assert_eq!(list["entries"][0]["id"], id.as_str());
    let listed = list.to_string().to_uppercase();
    assert!(!listed.contains("BAD007") && !listed.contains("BAD 007"), "{listed}");
    let log = serde_json::to_string(&srv.all_events().await).unwrap();
    assert!(log.contains("blocklist.added"));
    assert!(!log.contains("bad 007"), "the blocklist event holds the hash only");
    // Another tenant does not see it.
    let (_, other) = srv.get("/v1/blocklists/document", Some(KEY_BETA)).await;
    assert_eq!(other["entries"], json!([]));

    // Bad inputs.
    let bad = [
        ("/v1/blocklists/iban", json!({"value": "x"}), 404, "unknown_blocklist"),
        ("/v1/blocklists/phone", json!({"value": "600 11 22 33"}), 400, "invalid_value"),
        ("/v1/blocklists/email", json!({"value": "nobody"}), 400, "invalid_value"),
        ("/v1/blocklists/email", json!({"value": "a@b.c", "colour": 1}), 400, "invalid_body"),
        ("/v1/blocklists/phone", json!({"value": "+34600112233", "issuing_country": "ESP"}), 400, "invalid_body"),
    ];
    for (path, b, status, code) in bad {
        let (s, v) = srv.call("POST", path, Some(KEY_ACME), json_body(b)).await;
        assert_eq!((s, v["error"].as_str().unwrap()), (status, code), "{path}: {v}");
    }
    let (s, _) = srv.call("POST", "/v1/blocklists/email", None, json_body(json!({"value": "a@b.c"}))).await;
    assert_eq!(s, 401);

    // Remove: then gone; twice: 404.
    let (s, v) = srv.call("DELETE", &format!("/v1/blocklists/document/{id}"), Some(KEY_ACME), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = srv.call("DELETE", &format!("/v1/blocklists/document/{id}"), Some(KEY_ACME), None).await;
    assert_eq!(s, 404);
    send(
        &srv,
        &kyc_body("e-blk2", "s-blk2", "bad008", "Approved", |v| {
            v["decision"]["id_verifications"][0]["document_number"] = "PBAD007".into();
        }),
    )
    .await;
    srv.decided().await;
    // No longer blocklisted; the reused number still flags the ring.
    let sess = session(&srv, "s-blk2").await;
    assert_eq!(sess["state"], "review", "{sess}");
    assert!(sess["decisions"][0]["reasons"].as_array().unwrap().contains(&json!("fraud_ring.document")), "{sess}");
}

async fn reviews_are_claimed_by_exactly_one_analyst_and_resolved(backend: String) {
    let analysts: String = (0..10).map(|i| role_key(&format!("analyst-{i}"), "acme", "analyst")).collect();
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], &format!("{backend}{analysts}"))).await;
    let aml = |v: &mut Value| v["decision"]["aml_screenings"][0]["total_hits"] = 2.into();
    send(&srv, &kyc_body("e-r1", "s-r1", "rev1", "In Review", aml)).await;
    srv.decided().await;
    let (s, v) = srv.get("/v1/reviews?reason=aml", Some(KEY_ACME)).await;
    assert_eq!(s, 200, "{v}");
    let reviews = v["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "{v}");
    let id = reviews[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(reviews[0]["session_id"], "s-r1");
    assert!(reviews[0]["reasons"].as_array().unwrap().contains(&json!("aml.hits")));
    // Another tenant cannot see or claim it.
    let (s, _) = srv.call("POST", &format!("/v1/reviews/{id}/claim"), Some(KEY_BETA), None).await;
    assert_eq!(s, 404);

    // Ten analysts (each with their own key) claim at once: exactly one wins, the others are
    // told who holds it.
    let claims = futures_util::future::join_all((0..10).map(|i| {
        let path = format!("/v1/reviews/{id}/claim");
        let srv = &srv;
        async move { srv.call("POST", &path, Some(&format!("key-analyst-{i}")), None).await }
    }))
    .await;
    let winners: Vec<&Value> = claims.iter().filter(|(s, _)| *s == 200).map(|(_, v)| v).collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    let winner = winners[0]["claimed_by"].as_str().unwrap().to_owned();
    let winner_key = format!("key-{winner}");
    let other_key = if winner == "analyst-0" { "key-analyst-1" } else { "key-analyst-0" };
    for (s, v) in claims.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*s, 409, "{v}");
        assert!(v["message"].as_str().unwrap().contains(&winner), "{v}");
    }
    // Only the claimant resolves; bad outcomes are refused; a body naming someone else as the
    // analyst is refused rather than recorded.
    let path = format!("/v1/reviews/{id}/resolve");
    let (s, v) = srv.call("POST", &path, Some(other_key), json_body(json!({"outcome": "approve"}))).await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = srv
        .call("POST", &path, Some(&winner_key), json_body(json!({"outcome": "approve", "analyst": "someone-else"})))
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("analyst_mismatch")), "{v}");
    let (s, v) = srv.call("POST", &path, Some(&winner_key), json_body(json!({"outcome": "maybe"}))).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_body")), "{v}");
    let note = "sanctions hit is a namesake; DOB differs";
    let (s, v) = srv
        .call(
            "POST",
            &path,
            Some(&winner_key),
            json_body(json!({"outcome": "approve", "note": note, "analyst": winner})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["review"]["status"], "resolved");
    assert_eq!(v["review"]["resolved_by"], winner.as_str());
    assert_eq!(v["decision"]["decided_by"], format!("review:{winner}"));
    let (s, _) = srv.call("POST", &path, Some(&winner_key), json_body(json!({"outcome": "decline"}))).await;
    assert_eq!(s, 409, "a resolved case stays resolved");

    let sess = session(&srv, "s-r1").await;
    assert_eq!(sess["state"], "approved");
    let outcomes: Vec<&str> =
        sess["decisions"].as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["review", "approve"]);
    let kinds: Vec<String> =
        sess["history"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    for k in ["verification.status_updated", "decision.made", "review.opened", "review.claimed", "review.resolved"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    let (_, open) = srv.get("/v1/reviews", Some(KEY_ACME)).await;
    assert_eq!(open["reviews"], json!([]));

    // Blocklisting a value re-checks open sessions that used it.
    send(&srv, &kyc_body("e-r2", "s-r2", "rev2", "In Review", aml)).await;
    srv.decided().await;
    let phone = "+34 600 99 88 77";
    send(
        &srv,
        &kyc_body("e-r3", "s-r3", "rev3", "In Review", |v| {
            v["decision"]["aml_screenings"][0]["total_hits"] = 1.into();
            v["decision"]["phone_verifications"][0]["phone_number"] = "+34600998877".into();
        }),
    )
    .await;
    srv.decided().await;
    let (s, v) = srv
        .call("POST", "/v1/blocklists/phone", Some(KEY_ACME), json_body(json!({"value": phone, "recheck": true})))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["rechecked"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["rechecked"][0]["session_id"], "s-r3");
    assert_eq!(session(&srv, "s-r3").await["state"], "declined");
    assert_eq!(session(&srv, "s-r2").await["state"], "review");
}

/// A session that ends without a result (abandoned, expired) closes its review case — open or
/// claimed — as superseded; a document blocklisted with its issuing country re-checks only that
/// country's document.
async fn ended_sessions_close_their_cases_and_rechecks_honour_the_country(backend: String) {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], &backend)).await;
    let aml = |v: &mut Value| v["decision"]["aml_screenings"][0]["total_hits"] = 2.into();
    send(&srv, &kyc_body("e-x1", "s-x1", "x1", "In Review", aml)).await;
    send(&srv, &kyc_body("e-x2", "s-x2", "x2", "In Review", aml)).await;
    srv.decided().await;
    let (_, open) = srv.get("/v1/reviews", Some(KEY_ACME)).await;
    let id_of = |session: &str| {
        open["reviews"].as_array().unwrap().iter().find(|r| r["session_id"] == session).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (x1, x2) = (id_of("s-x1"), id_of("s-x2"));
    let (s, v) = srv.call("POST", &format!("/v1/reviews/{x2}/claim"), Some(KEY_ACME), None).await;
    assert_eq!(s, 200, "{v}");
    send(&srv, &kyc_body("e-x1b", "s-x1", "x1", "Abandoned", |_| {})).await;
    send(&srv, &kyc_body("e-x2b", "s-x2", "x2", "Expired", |_| {})).await;
    srv.decided().await;
    for (id, sid, state) in [(&x1, "s-x1", "abandoned"), (&x2, "s-x2", "expired")] {
        let (_, r) = srv.get(&format!("/v1/reviews/{id}"), Some(KEY_ACME)).await;
        assert_eq!((r["status"].as_str(), r["resolved_by"].as_str()), (Some("resolved"), Some("rules")), "{r}");
        assert_eq!(r["outcome"], Value::Null, "no outcome: the session ended without a result: {r}");
        assert!(r["note"].as_str().unwrap().contains(state), "{r}");
        let sess = session(&srv, sid).await;
        assert_eq!(sess["state"], state, "{sess}");
        let kinds: Vec<&str> =
            sess["history"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds.last(), Some(&"review.resolved"), "{kinds:?}");
    }
    let (_, open) = srv.get("/v1/reviews?status=all&session_id=s-x2", Some(KEY_ACME)).await;
    assert_eq!(open["reviews"].as_array().unwrap().len(), 1, "no new case: {open}");

    // The same passport number, issued by two countries, both in review.
    let doc = |country: &'static str| {
        move |v: &mut Value| {
            v["decision"]["aml_screenings"][0]["total_hits"] = 1.into();
            v["decision"]["id_verifications"][0]["document_number"] = "X7777777".into();
            v["decision"]["id_verifications"][0]["issuing_state"] = country.into();
        }
    };
    send(&srv, &kyc_body("e-esp", "s-esp", "esp", "In Review", doc("ESP"))).await;
    send(&srv, &kyc_body("e-fra", "s-fra", "fra", "In Review", doc("FRA"))).await;
    srv.decided().await;
    // The preview shows the normal form, the id and what a re-check would decline; it stores
    // nothing.
    let preview = |value: &'static str, country: Option<&'static str>| {
        let srv = &srv;
        async move {
            let mut body = json!({"value": value});
            if let Some(c) = country {
                body["issuing_country"] = c.into();
            }
            let (s, v) = srv.call("POST", "/v1/blocklists/document/preview", Some(KEY_ACME), json_body(body)).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let fra = preview("x 777-7777", Some("fra")).await;
    assert_eq!(
        (fra["normal_form"].as_str(), fra["listed"].as_bool(), fra["open_sessions"].as_u64()),
        (Some("FRA:X7777777"), Some(false), Some(1)),
        "{fra}"
    );
    let any = preview("X7777777", None).await;
    assert_eq!((any["normal_form"].as_str(), any["open_sessions"].as_u64()), (Some("*:X7777777"), Some(2)), "{any}");
    let (s, v) = srv
        .call("POST", "/v1/blocklists/phone/preview", Some(KEY_ACME), json_body(json!({"value": "0034 600-11 22 33"})))
        .await;
    assert_eq!((s, v["normal_form"].as_str()), (200, Some("+34600112233")), "{v}");
    let (s, v) =
        srv.call("POST", "/v1/blocklists/phone/preview", Some(KEY_ACME), json_body(json!({"value": "600"}))).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_value")), "{v}");
    assert!(!v.to_string().contains("600\""), "the value is not echoed in the error: {v}");
    let (_, list) = srv.get("/v1/blocklists/document", Some(KEY_ACME)).await;
    assert_eq!(list["entries"], json!([]), "a preview adds nothing");
    let (s, v) = srv
        .call(
            "POST",
            "/v1/blocklists/document",
            Some(KEY_ACME),
            json_body(json!({"value": "X7777777", "issuing_country": "FRA", "recheck": true})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let rechecked: Vec<&str> =
        v["rechecked"].as_array().unwrap().iter().map(|r| r["session_id"].as_str().unwrap()).collect();
    assert_eq!(rechecked, ["s-fra"], "{v}");
    assert_eq!(v["id"], fra["id"], "the preview's id is the entry's");
    let fra = preview("X7777777", Some("FRA")).await;
    assert_eq!((fra["listed"].as_bool(), fra["open_sessions"].as_u64()), (Some(true), Some(0)), "{fra}");
    let any = preview("X7777777", None).await;
    assert_eq!((any["listed"].as_bool(), any["open_sessions"].as_u64()), (Some(false), Some(1)), "{any}");
    assert_eq!(session(&srv, "s-fra").await["state"], "declined");
    assert_eq!(session(&srv, "s-esp").await["state"], "review");
}

const STRICT_AML: &str = "version_label: strict-aml\nthresholds: {review_score: 50, decline_score: 100}\nrules:\n  \
  - id: aml\n    when: has(aml.hits) && aml.hits > 0\n    outcome: decline\n    reason: aml.hits\n    message: AML hits decline.\n  \
  - id: ok\n    when: provider.status == 'approved' && provider.signature_covers_decision\n    outcome: approve\n    reason: ok\n    message: Clean.\n";

async fn rulesets_are_validated_activated_and_backtested(backend: String) {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], &backend)).await;
    // Broken: every error with its line, nothing stored.
    let broken = "version_label: x\nthresholds: {review_score: 50, decline_score: 100}\nrules:\n  - id: a\n    when: liveness.scor < 3\n    outcome: decline\n    reason: a\n    message: m\n";
    let (s, v) = srv.call("POST", "/v1/rulesets", Some(KEY_ACME), Some(broken.into())).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_ruleset")), "{v}");
    assert_eq!(v["errors"][0]["rule"], "a");
    assert_eq!(v["errors"][0]["line"], 5);
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("scor"), "{v}");
    let (_, list) = srv.get("/v1/rulesets", Some(KEY_ACME)).await;
    assert_eq!(list["rulesets"], json!([]));
    assert_eq!(list["active"]["default"], true);
    // A `*` key must say which tenant.
    let (s, v) = srv.call("POST", "/v1/rulesets", Some(KEY_ALL), Some(STRICT_AML.into())).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("tenant_required")));

    // Decisions under the default ruleset: AML hits review.
    let aml = |v: &mut Value| v["decision"]["aml_screenings"][0]["total_hits"] = 3.into();
    for i in 0..3 {
        send(&srv, &kyc_body(&format!("e-a{i}"), &format!("s-a{i}"), &format!("u-a{i}"), "Approved", aml)).await;
        send(&srv, &kyc_body(&format!("e-c{i}"), &format!("s-c{i}"), &format!("u-c{i}"), "Approved", |_| {})).await;
    }
    srv.decided().await;
    assert_eq!(session(&srv, "s-a0").await["state"], "review");
    // An analyst declines one of them.
    let (_, revs) = srv.get("/v1/reviews?session_id=s-a0", Some(KEY_ACME)).await;
    let rid = revs["reviews"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(srv.call("POST", &format!("/v1/reviews/{rid}/claim"), Some(KEY_ACME), None).await.0, 200);
    let (s, v) = srv
        .call("POST", &format!("/v1/reviews/{rid}/resolve"), Some(KEY_ACME), json_body(json!({"outcome": "decline"})))
        .await;
    assert_eq!(s, 200, "{v}");

    // Backtest the strict candidate over the API: the 3 reviews become declines, 3 approvals stay.
    let (s, report) =
        srv.call("POST", "/v1/backtests", Some(KEY_ACME), json_body(json!({"ruleset": STRICT_AML}))).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["decisions"], 6, "{report}");
    assert_eq!(report["changed"], 3);
    assert_eq!(report["matrix"]["review"]["decline"], 3);
    assert_eq!(report["matrix"]["approve"]["approve"], 3);
    assert_eq!(report["analysts"]["resolved_reviews"], 1);
    assert_eq!(report["analysts"]["candidate_agrees"], 1);
    assert_eq!(report["changed_sessions"].as_array().unwrap().len(), 3);
    // Each changed review links to the case its live decision opened.
    let a0 = report["changed_sessions"].as_array().unwrap().iter().find(|c| c["session_id"] == "s-a0").unwrap();
    assert_eq!(a0["review_id"], rid.as_str(), "{report}");
    assert!(report["changed_sessions"].as_array().unwrap().iter().all(|c| c["review_id"].is_string()), "{report}");
    let (_, other) = srv.call("POST", "/v1/backtests", Some(KEY_BETA), json_body(json!({"ruleset": STRICT_AML}))).await;
    assert_eq!(other["decisions"], 0, "tenant-scoped: {other}");
    let (s, v) = srv
        .call("POST", "/v1/backtests", Some(KEY_ACME), json_body(json!({"ruleset": STRICT_AML, "since": "yesterday"})))
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_body")), "{v}");

    // `rules test` cases over the API, against the draft: one passes, one fails and says why.
    let cases = "cases:\n  - name: AML hits decline\n    context: {aml: {hits: 2}}\n    expect: {outcome: decline, reasons: [aml.hits]}\n  - name: clean approved\n    context: {provider: {status: approved, signature_covers_decision: true}}\n    expect: {outcome: review}\n";
    let (s, t) = srv
        .call("POST", "/v1/rulesets/test", Some(KEY_ACME), json_body(json!({"ruleset": STRICT_AML, "cases": cases})))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        (t["passed"].as_u64(), t["failed"].as_u64(), t["ruleset_label"].as_str()),
        (Some(1), Some(1), Some("strict-aml")),
        "{t}"
    );
    assert_eq!(t["cases"][0]["passed"], true, "{t}");
    assert_eq!(t["cases"][0]["fired"][0]["values"]["aml.hits"], 2, "{t}");
    assert_eq!(
        (t["cases"][1]["passed"].as_bool(), t["cases"][1]["outcome"].as_str()),
        (Some(false), Some("approve")),
        "{t}"
    );
    assert_eq!(t["cases"][1]["line"], 5, "{t}");
    // The active ruleset (the default) against the shipped cases: the CLI's result.
    let shipped = include_str!("../../../idstream-rules/default-cases.yaml");
    let (s, t) = srv.call("POST", "/v1/rulesets/test", Some(KEY_ACME), json_body(json!({"cases": shipped}))).await;
    assert_eq!((s, t["failed"].as_u64()), (200, Some(0)), "{t}");
    assert!(t["cases"].as_array().unwrap().len() > 3, "{t}");
    let (_, d) = srv
        .call("POST", "/v1/rulesets/test", Some(KEY_ACME), json_body(json!({"cases": shipped, "version": "default"})))
        .await;
    assert_eq!(d["ruleset_version"], t["ruleset_version"], "{d}");
    // Bad documents: each error at its line, named by the document it is in.
    let bad_cases = "cases:\n  - name: x\n    context: {aml: {hitz: 1}}\n    expect: {outcome: maybe}\n";
    let (s, v) = srv
        .call(
            "POST",
            "/v1/rulesets/test",
            Some(KEY_ACME),
            json_body(json!({"ruleset": STRICT_AML, "cases": bad_cases})),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_cases")), "{v}");
    let lines: Vec<u64> = v["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [3, 4], "{v}");
    assert_eq!(v["errors"][0]["case"], "x", "{v}");
    let (s, v) = srv
        .call("POST", "/v1/rulesets/test", Some(KEY_ACME), json_body(json!({"ruleset": broken, "cases": cases})))
        .await;
    assert_eq!(
        (s, v["error"].as_str(), v["errors"][0]["line"].as_u64()),
        (422, Some("invalid_ruleset"), Some(5)),
        "{v}"
    );
    let (s, v) = srv
        .call(
            "POST",
            "/v1/rulesets/test",
            Some(KEY_ACME),
            json_body(json!({"ruleset": STRICT_AML, "version": "default", "cases": cases})),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_body")), "{v}");
    let (s, v) = srv
        .call("POST", "/v1/rulesets/test", Some(KEY_ACME), json_body(json!({"version": "nope", "cases": cases})))
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("ruleset_not_found")), "{v}");

    // Upload + activate: later decisions use it.
    let (s, v) = srv.call("POST", "/v1/rulesets", Some(KEY_ACME), Some(STRICT_AML.into())).await;
    assert_eq!(s, 201, "{v}");
    let version = v["version"].as_str().unwrap().to_owned();
    let (s, t) = srv
        .call("POST", "/v1/rulesets/test", Some(KEY_ACME), json_body(json!({"version": version, "cases": cases})))
        .await;
    assert_eq!((s, t["failed"].as_u64(), t["ruleset_version"].as_str()), (200, Some(1), Some(version.as_str())), "{t}");
    assert_eq!(v["active"], false);
    let (s, _) = srv.call("POST", &format!("/v1/rulesets/{version}/activate"), Some(KEY_BETA), None).await;
    assert_eq!(s, 404, "another tenant's version");
    let (s, v) = srv.call("POST", &format!("/v1/rulesets/{version}/activate"), Some(KEY_ACME), None).await;
    assert_eq!(s, 200, "{v}");
    let (_, list) = srv.get("/v1/rulesets", Some(KEY_ACME)).await;
    assert_eq!(list["active"]["version"], version.as_str());
    send(&srv, &kyc_body("e-a9", "s-a9", "u-a9", "Approved", aml)).await;
    srv.decided().await;
    let sess = session(&srv, "s-a9").await;
    assert_eq!(sess["state"], "declined");
    assert_eq!(sess["decisions"][0]["ruleset_version"], version.as_str());
    let did = sess["decisions"][0]["id"].as_str().unwrap();
    let (s, d) = srv.get(&format!("/v1/decisions/{did}"), Some(KEY_ACME)).await;
    assert_eq!(s, 200);
    assert_eq!(d["detail"]["fired"][0]["rule_id"], "aml");
    assert_eq!(d["detail"]["fired"][0]["values"]["aml.hits"], 3);
    assert_eq!(srv.get(&format!("/v1/decisions/{did}"), Some(KEY_BETA)).await.0, 404);

    // The activation survives a restart; the CLI backtest reads the same store.
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir.clone(), &base_config(&[SECRET_NEW, SECRET_OLD], &backend)).await;
    let (_, list) = srv.get("/v1/rulesets", Some(KEY_ACME)).await;
    assert_eq!(list["active"]["version"], version.as_str());
    let file = dir.path().join("candidate.yaml");
    std::fs::write(&file, idstream_rules::DEFAULT_RULESET).unwrap();
    // The CLI reads the data directory, or with shared backends the store its config names.
    let config = dir.path().join("backtest.toml");
    std::fs::write(&config, &backend).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idstream"))
        .args(["backtest", "--json", "--tenant", "acme", "--ruleset"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["decisions"], 7, "{cli}");
    assert_eq!(cli["matrix"]["decline"]["review"], 1, "the strict decision would be a review under the default: {cli}");
}

/// The company's own data about a subject is part of the context: an expected name that the
/// document contradicts sends the session to review.
async fn subject_attributes_reach_the_rules(backend: String) {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW, SECRET_OLD], &backend)).await;
    let (s, v) = srv
        .call(
            "PUT",
            "/v1/subjects/sub-1",
            Some(KEY_ACME),
            json_body(json!({"expected_first_name": "Maria", "account_age_days": 3})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = srv.get("/v1/subjects/sub-1", Some(KEY_ACME)).await;
    assert_eq!((s, &v["attributes"]["expected_first_name"]), (200, &json!("Maria")), "{v}");
    assert_eq!(srv.get("/v1/subjects/sub-1", Some(KEY_BETA)).await.0, 404, "tenant-scoped");
    let logged = srv.all_events().await;
    let ev = logged.iter().find(|e| e["kind"] == "subject.updated").expect("subject.updated in the log");
    assert_eq!(ev["attributes"], json!(["account_age_days", "expected_first_name"]));
    assert!(!ev.to_string().contains("Maria"), "values stay out of the log: {ev}");
    for (body, code) in [(json!([1, 2]), "invalid_body"), (json!({"bad-name": 1}), "invalid_attribute")] {
        let (s, v) = srv.call("PUT", "/v1/subjects/sub-1", Some(KEY_ACME), json_body(body)).await;
        assert_eq!((s, v["error"].as_str()), (400, Some(code)), "{v}");
    }
    let (s, _) = srv.call("PUT", "/v1/subjects/sub-1", Some(KEY_ACME), Some(b"{not json".to_vec())).await;
    assert_eq!(s, 400);

    send(&srv, &kyc_body("e-sub1", "s-sub1", "sub-1", "Approved", |_| {})).await; // document says Ana
    send(&srv, &kyc_body("e-sub2", "s-sub2", "sub-2", "Approved", |_| {})).await; // no expectations
    srv.decided().await;
    let sess = session(&srv, "s-sub1").await;
    assert_eq!(sess["state"], "review", "{sess}");
    let d = &sess["decisions"][0];
    assert!(d["reasons"].as_array().unwrap().contains(&json!("identity.name_mismatch")), "{d}");
    assert_eq!(d["detail"]["inputs"]["subject"]["expected_first_name"], "Maria");
    assert_eq!(session(&srv, "s-sub2").await["state"], "approved");
    // A `*` key must name the tenant for tenant-scoped objects.
    let (s, v) = srv.get("/v1/sessions/s-sub1", Some(KEY_ALL)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("tenant_required")));
    assert_eq!(srv.get("/v1/sessions/s-sub1?tenant=acme", Some(KEY_ALL)).await.0, 200);
    assert_eq!(srv.get("/v1/sessions/s-sub1?tenant=beta", Some(KEY_ACME)).await.0, 403);
}

/// Every result of a session is decided, and the `decision.made` entries reach the log in the
/// order of the results they decide: a batch's entries are appended while the worker decides
/// the next batch, never after the next batch's. 16 concurrent senders send 300 sessions' three
/// results each.
async fn decision_entries_reach_the_log_in_each_sessions_order(backend: String) {
    let extra = format!("{backend}\n[rate_limits]\nenabled = false\n");
    let srv = std::sync::Arc::new(TestServer::start_with(&base_config(&[SECRET_NEW], &extra)).await);
    const SESSIONS: usize = 300;
    // (A repeated result would be the same result: the provider's resend, stored once.)
    const STATUSES: [&str; 3] = ["In Review", "Declined", "Approved"];
    // Each sender sends one session's results back to back, so a session's consecutive results
    // fall into consecutive decision batches.
    let mut senders = Vec::new();
    for w in 0..16 {
        let srv = srv.clone();
        senders.push(tokio::spawn(async move {
            for n in (w..SESSIONS).step_by(16) {
                for (round, status) in STATUSES.into_iter().enumerate() {
                    let (event, session, subject) =
                        (format!("ord-{n}-{round}"), format!("s-ord-{n}"), format!("u-{n}"));
                    send(&srv, &kyc_body(&event, &session, &subject, status, |_| {})).await;
                }
            }
        }));
    }
    for t in senders {
        t.await.unwrap();
    }
    srv.decided().await;
    let events = srv.all_events().await;
    // Per session: its results' offsets in log order, and the results its decisions name, in
    // the order their `decision.made` entries are in the log.
    let mut results: HashMap<String, Vec<u64>> = HashMap::new();
    let mut decided: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &events {
        let session = e["session_id"].as_str().unwrap_or_default().to_owned();
        match e["kind"].as_str() {
            Some(k) if k.starts_with("verification.") => {
                results.entry(session).or_default().push(e["offset"].as_u64().unwrap())
            }
            Some("decision.made") => decided.entry(session).or_default().push(e["event_offset"].as_u64().unwrap()),
            _ => {}
        }
    }
    assert_eq!(results.len(), SESSIONS, "every session's results are in the log");
    for (session, offsets) in &results {
        assert_eq!(offsets.len(), STATUSES.len(), "{session}: one entry per result");
        assert_eq!(decided.get(session), Some(offsets), "{session}: each result decided once, in log order");
    }
}

/// Every decision counts every session before it in the log — a subject's earlier sessions
/// (history) and the other subjects that used the same document (velocity) — also when its
/// batch was looked up while the batch before it was still committing. 16 concurrent senders
/// send 120 sessions of one subject and 120 subjects sharing one document number. (One worker
/// decides the whole log here; scale-out workers decide their partitions independently, so
/// there a session counts the others once their partition's worker got to them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_velocity_count_every_earlier_session() {
    let extra = "[rate_limits]\nenabled = false\n";
    let srv = std::sync::Arc::new(TestServer::start_with(&base_config(&[SECRET_NEW], extra)).await);
    const SESSIONS: usize = 120;
    let mut senders = Vec::new();
    for w in 0..16 {
        let srv = srv.clone();
        senders.push(tokio::spawn(async move {
            for n in (w..SESSIONS).step_by(16) {
                let (event, session) = (format!("hist-{n}"), format!("s-hist-{n}"));
                send(&srv, &kyc_body(&event, &session, "u-hist", "Approved", |_| {})).await;
                let (event, session, subject) = (format!("vel-{n}"), format!("s-vel-{n}"), format!("u-vel-{n}"));
                send(
                    &srv,
                    &kyc_body(&event, &session, &subject, "Approved", |v| {
                        v["decision"]["id_verifications"][0]["document_number"] = json!("P-SHARED-1");
                    }),
                )
                .await;
            }
        }));
    }
    for t in senders {
        t.await.unwrap();
    }
    srv.decided().await;
    // The decisions in the log order of the results they decide.
    let mut made: Vec<(u64, String, String)> = srv
        .all_events()
        .await
        .iter()
        .filter(|e| e["kind"] == "decision.made")
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap().to_owned();
            (e["event_offset"].as_u64().unwrap(), text("session_id"), text("decision_id"))
        })
        .collect();
    made.sort();
    let (mut history, mut velocity) = (0, 0);
    for (_, session, id) in &made {
        let (s, d) = srv.get(&format!("/v1/decisions/{id}"), Some(KEY_ACME)).await;
        assert_eq!(s, 200, "{d}");
        let inputs = &d["detail"]["inputs"];
        if session.starts_with("s-hist-") {
            assert_eq!(inputs["history"]["previous_sessions"], history, "{session}: every earlier session counted");
            history += 1;
        } else {
            assert_eq!(inputs["velocity"]["document_subjects"], velocity, "{session}: every earlier subject counted");
            velocity += 1;
        }
    }
    assert_eq!((history, velocity), (SESSIONS, SESSIONS), "every session decided once");
}

/// Each test above, on the embedded backends and on NATS JetStream + PostgreSQL (own stream and
/// database per test).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(String::new()).await
                }
            )*
        }
        mod scale_out {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
                async fn $name() {
                    super::$name(crate::backends::ScaleOut::fresh(stringify!($name)).await.toml()).await
                }
            )*
        }
    };
}

on_both_backends!(
    simulated_personas_get_the_expected_outcomes,
    blocklisted_values_decline_and_are_never_stored_in_clear,
    reviews_are_claimed_by_exactly_one_analyst_and_resolved,
    rulesets_are_validated_activated_and_backtested,
    subject_attributes_reach_the_rules,
    ended_sessions_close_their_cases_and_rechecks_honour_the_country,
    decision_entries_reach_the_log_in_each_sessions_order
);

/// `GET /v1/search` finds every session where a document number or phone was seen, by its
/// keyed hash (formatting does not matter), and a session lists the other subjects it shares a
/// value with.
#[tokio::test]
async fn search_by_identity_value_and_linked_subjects() {
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], "[rate_limits]\nenabled = false\n")).await;
    // Two subjects with the same passport number, a third with another.
    let same_doc = |v: &mut Value| v["decision"]["id_verifications"][0]["document_number"] = "X-1234 567".into();
    send(&srv, &kyc_body("se-1", "se-s1", "se-u1", "Approved", same_doc)).await;
    send(&srv, &kyc_body("se-2", "se-s2", "se-u2", "Approved", same_doc)).await;
    send(&srv, &kyc_body("se-3", "se-s3", "se-u3", "Approved", |_| {})).await;
    srv.decided().await;

    let (s, v) = srv.get("/v1/search?kind=document&value=x1234567", Some(KEY_ACME)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["subjects"], 2, "{v}");
    let mut sessions: Vec<&str> =
        v["seen"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    sessions.sort();
    assert_eq!(sessions, ["se-s1", "se-s2"]);
    assert!(!v.to_string().contains("1234567"), "the value is not echoed: {v}");
    // The phone of se-u3, formatted differently.
    let phone = {
        let events = srv.all_events().await;
        let e = events.iter().find(|e| e["session_id"] == "se-s3" && e["checks"]["phone"].is_array()).unwrap().clone();
        e["checks"]["phone"][0]["phone_number"].as_str().unwrap().to_owned()
    };
    let spaced = format!("{} {} {}", &phone[..3], &phone[3..6], &phone[6..]);
    let r = srv
        .client
        .get(srv.url("/v1/search"))
        .query(&[("kind", "phone"), ("value", spaced.as_str())])
        .bearer_auth(KEY_ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["seen"][0]["subject"], "se-u3", "{v}");
    // Other tenants see nothing; bad input is named.
    let (s, v) = srv.get("/v1/search?kind=document&value=x1234567", Some(KEY_BETA)).await;
    assert_eq!((s, v["seen"].as_array().map(Vec::len)), (200, Some(0)), "{v}");
    let (s, v) = srv.get("/v1/search?kind=passport&value=1", Some(KEY_ACME)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_parameter")), "{v}");
    let (s, v) = srv.get("/v1/search?kind=email&value=not-an-email", Some(KEY_ACME)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_value")), "{v}");

    // Linked subjects in the session view.
    let sess = session(&srv, "se-s1").await;
    let linked: Vec<(&str, &str)> = sess["linked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(linked, [("document", "se-u2")], "{sess}");
    assert!(session(&srv, "se-s3").await["linked"].as_array().unwrap().is_empty());
}

/// Four-eyes activation (`require_second_approver`): the first activation is a request (202),
/// the requester cannot approve it (409), a second policy admin activates it; an upload with
/// `?activate=true` follows the same rule. Both steps are in the log.
#[tokio::test]
async fn four_eyes_activation_needs_a_second_policy_admin() {
    let extra = format!(
        "[rate_limits]\nenabled = false\n[decisions]\nrequire_second_approver = true\n{}{}",
        role_key("fe-pol1", "acme", "policy_admin"),
        role_key("fe-pol2", "acme", "policy_admin"),
    );
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], &extra)).await;
    let (p1, p2) = ("key-fe-pol1", "key-fe-pol2");
    let (s, up) = srv.call("POST", "/v1/rulesets", Some(p1), Some(STRICT_AML.as_bytes().to_vec())).await;
    assert_eq!(s, 201, "{up}");
    let version = up["version"].as_str().unwrap().to_owned();
    let activate = |key: &'static str| {
        let path = format!("/v1/rulesets/{version}/activate");
        let srv = &srv;
        async move { srv.call("POST", &path, Some(key), None).await }
    };
    let (s, v) = activate(p1).await;
    assert_eq!((s, v["requested_by"].as_str()), (202, Some("fe-pol1")), "{v}");
    let (_, list) = srv.get("/v1/rulesets", Some(p1)).await;
    assert_eq!(list["require_second_approver"], true);
    assert_eq!(list["pending_activation"]["version"], version.as_str(), "{list}");
    assert_eq!(list["active"]["default"], true, "nothing active yet: {list}");
    let (s, v) = activate(p1).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "the requester cannot approve: {v}");
    let (s, v) = activate(p2).await;
    assert_eq!((s, v["activated_by"].as_str()), (200, Some("fe-pol2")), "{v}");
    let (_, list) = srv.get("/v1/rulesets", Some(p1)).await;
    assert_eq!(list["active"]["version"], version.as_str(), "{list}");
    assert!(list["pending_activation"].is_null(), "{list}");
    let events = srv.all_events().await;
    let req = events.iter().find(|e| e["kind"] == "ruleset.activation_requested").unwrap();
    assert_eq!(req["actor"], "fe-pol1");
    let act = events.iter().find(|e| e["kind"] == "ruleset.activated").unwrap();
    assert_eq!((act["actor"].as_str(), act["requested_by"].as_str()), (Some("fe-pol2"), Some("fe-pol1")));

    // An upload with ?activate=true is a request too; the same upload by the other approves it.
    let other = STRICT_AML.replace("strict-aml", "strict-aml-2");
    let (s, v) = srv.call("POST", "/v1/rulesets?activate=true", Some(p2), Some(other.clone().into_bytes())).await;
    assert_eq!((s, v["active"].as_bool()), (201, Some(false)), "{v}");
    let (_, list) = srv.get("/v1/rulesets", Some(p1)).await;
    assert_eq!(list["pending_activation"]["requested_by"], "fe-pol2", "{list}");
    let (s, v) = srv.call("POST", "/v1/rulesets?activate=true", Some(p1), Some(other.into_bytes())).await;
    assert_eq!((s, v["active"].as_bool()), (201, Some(true)), "{v}");
}

/// `GET /v1/stats`: webhooks accepted / duplicate / rejected, decisions per outcome, the review
/// queue and its alert, for the caller's tenant only.
async fn tenant_stats_case(backend: &str) {
    let extra = format!("[rate_limits]\nenabled = false\n[reviews]\nalert_oldest_open_secs = 1\n{backend}");
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], &extra)).await;
    let aml = |v: &mut Value| v["decision"]["aml_screenings"][0]["total_hits"] = 2.into();
    let first = kyc_body("st-a0", "st-sa0", "st-ua0", "Approved", |_| {});
    send(&srv, &first).await;
    for i in 1..3 {
        send(&srv, &kyc_body(&format!("st-a{i}"), &format!("st-sa{i}"), &format!("st-ua{i}"), "Approved", |_| {}))
            .await;
    }
    for i in 0..2 {
        send(&srv, &kyc_body(&format!("st-r{i}"), &format!("st-sr{i}"), &format!("st-ur{i}"), "In Review", aml)).await;
    }
    let (s, v) = srv.post("didit-main", &first, &didit_headers(&first, SECRET_NEW, Sig::All)).await;
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    for _ in 0..2 {
        let (s, _) = srv.post("didit-main", &first, &didit_headers(&first, "not-the-secret", Sig::All)).await;
        assert_eq!(s, 401);
    }
    srv.decided().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let v = loop {
        let (s, v) = srv.get("/v1/stats", Some(KEY_ACME)).await;
        assert_eq!(s, 200, "{v}");
        if v["totals"]["webhooks_rejected"] == 2 && v["totals"]["approve"] == 3 {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "stats never caught up: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let t = &v["totals"];
    assert_eq!(
        [
            &t["webhooks_accepted"],
            &t["webhooks_duplicate"],
            &t["webhooks_rejected"],
            &t["approve"],
            &t["review"],
            &t["decline"]
        ],
        [5, 1, 2, 3, 2, 0],
        "{v}"
    );
    assert_eq!((v["bucket_secs"].as_u64(), v["buckets"].as_array().map(Vec::len)), (Some(60), Some(60)));
    let summed: u64 = v["buckets"].as_array().unwrap().iter().map(|b| b["webhooks_accepted"].as_u64().unwrap()).sum();
    assert_eq!(summed, 5);
    assert_eq!((v["reviews"]["open"].as_u64(), v["reviews"]["claimed"].as_u64()), (Some(2), Some(0)), "{v}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, v) = srv.get("/v1/stats?window_secs=86400", Some(KEY_ACME)).await;
    assert_eq!(v["bucket_secs"], 1440, "{v}");
    assert_eq!(v["totals"]["webhooks_accepted"], 5, "{v}");
    assert!(v["reviews"]["oldest_open_age_secs"].as_i64().unwrap() >= 2, "{v}");
    assert_eq!(v["alert"]["firing"], true, "{v}");
    // Another tenant sees its own (nothing); bad windows are named.
    let (_, other) = srv.get("/v1/stats", Some(KEY_BETA)).await;
    assert_eq!(other["totals"]["webhooks_accepted"], 0, "{other}");
    let (s, e) = srv.get("/v1/stats?window_secs=10", Some(KEY_ACME)).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_parameter")), "{e}");
}

#[tokio::test]
async fn tenant_stats_count_webhooks_decisions_and_the_queue() {
    tenant_stats_case("").await;
}

#[tokio::test]
#[ignore = "needs IDSTREAM_TEST_POSTGRES_URL and IDSTREAM_TEST_NATS_URL"]
async fn tenant_stats_count_webhooks_decisions_and_the_queue_on_nats_and_postgres() {
    let b = crate::backends::ScaleOut::fresh("stats").await;
    tenant_stats_case(&b.toml()).await;
}
