//! The review queue's claim changes over real HTTP: release (holder or admin), reassign (admin,
//! to an analyst user), escalate (to the second level, which only admins and policy admins may
//! take), and idle claims returned to the queue — each recorded as its `review.*` event.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::decisions::kyc_body;
use crate::helpers::*;

const ANA: &str = "key-q-ana";
const BOB: &str = "key-q-bob";
const POL: &str = "key-q-pol";

/// A server with two analysts, a policy admin, and a case per session in `sessions`.
pub async fn queue_server(extra: &str, sessions: &[&str]) -> (TestServer, Vec<String>) {
    // `extra` may bring its own `[rate_limits]`.
    let limits = if extra.contains("[rate_limits]") { "" } else { "[rate_limits]\nenabled = false\n" };
    let keys = format!(
        "{limits}{}{}{}{extra}",
        role_key("q-ana", "acme", "analyst"),
        role_key("q-bob", "acme", "analyst"),
        role_key("q-pol", "acme", "policy_admin"),
    );
    let srv = TestServer::start_with(&base_config(&[SECRET_NEW], &keys)).await;
    for s in sessions {
        let body = kyc_body(&format!("e-{s}"), s, &format!("u-{s}"), "In Review", |v| {
            v["decision"]["aml_screenings"][0]["total_hits"] = 2.into()
        });
        let (st, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
        assert_eq!(st, 200, "{v}");
    }
    srv.decided().await;
    let mut ids = Vec::new();
    for s in sessions {
        let (_, v) = srv.get(&format!("/v1/reviews?session_id={s}"), Some(KEY_ACME)).await;
        ids.push(v["reviews"][0]["id"].as_str().expect("a case").to_owned());
    }
    (srv, ids)
}

async fn post(srv: &TestServer, path: &str, key: &str, body: Value) -> (u16, Value) {
    srv.call("POST", path, Some(key), json_body(body)).await
}

async fn events_of_case(srv: &TestServer, id: &str) -> Vec<(String, Option<String>, Option<String>)> {
    srv.all_events()
        .await
        .into_iter()
        .filter(|e| e["review_id"] == id && e["kind"].as_str().unwrap().starts_with("review."))
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["actor"].as_str().map(str::to_owned),
                e["note"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn claims_are_released_reassigned_and_escalated() {
    let (srv, ids) = queue_server("", &["q-s1"]).await;
    let id = &ids[0];
    let p = |what: &str| format!("/v1/reviews/{id}/{what}");

    // Release: only a held claim, only by its holder.
    let (s, v) = post(&srv, &p("release"), ANA, json!({})).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "an open case: {v}");
    assert_eq!(post(&srv, &p("claim"), ANA, json!({})).await.0, 200);
    let (s, v) = post(&srv, &p("release"), BOB, json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("claimed by `q-ana`"), "{v}");
    let (s, v) = post(&srv, &p("release"), ANA, json!({"note": "need a break"})).await;
    assert_eq!((s, v["status"].as_str(), v["claimed_by"].is_null()), (200, Some("open"), true), "{v}");
    // Now bob may take it.
    assert_eq!(post(&srv, &p("claim"), BOB, json!({})).await.0, 200);
    // An admin may release anyone's claim.
    let (s, v) = post(&srv, &p("release"), KEY_ACME, json!({})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("open")), "{v}");

    // Reassign (admin only) to an analyst *user*; then only that user holds it.
    let (s, v) = post(&srv, &p("reassign"), ANA, json!({"to": "carla"})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = post(&srv, &p("reassign"), KEY_ACME, json!({"to": "carla"})).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_assignee")), "no such user: {v}");
    for (name, role) in [("carla", "analyst"), ("vera", "viewer")] {
        let body = json!({"username": name, "role": role, "password": "a long enough password"});
        assert_eq!(srv.call("POST", "/v1/users", Some(KEY_ACME), json_body(body)).await.0, 201);
    }
    let (s, v) = post(&srv, &p("reassign"), KEY_ACME, json!({"to": "vera"})).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_assignee")), "a viewer: {v}");
    let (s, v) = post(&srv, &p("reassign"), KEY_ACME, json!({"to": "carla", "note": "she knows the case"})).await;
    assert_eq!((s, v["status"].as_str(), v["claimed_by"].as_str()), (200, Some("claimed"), Some("user:carla")), "{v}");
    let (s, _) = post(&srv, &p("resolve"), ANA, json!({"outcome": "approve", "note": "x"})).await;
    assert_eq!(s, 409, "only the assignee resolves");

    // Escalate: by the holder only; the case returns to the queue at level 2, which analysts
    // cannot take and a policy admin can.
    let (s, _) = post(&srv, &p("escalate"), ANA, json!({})).await;
    assert_eq!(s, 409, "not the holder");
    assert_eq!(post(&srv, &p("release"), KEY_ACME, json!({})).await.0, 200);
    assert_eq!(post(&srv, &p("claim"), ANA, json!({})).await.0, 200);
    let (s, v) = post(&srv, &p("escalate"), ANA, json!({"note": "possible sanctions match"})).await;
    assert_eq!((s, v["status"].as_str(), v["level"].as_u64()), (200, Some("open"), Some(2)), "{v}");
    let (s, v) = post(&srv, &p("escalate"), ANA, json!({})).await;
    assert_eq!(s, 409, "already at the second level: {v}");
    let (s, v) = post(&srv, &p("claim"), BOB, json!({})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("second_level_case")), "{v}");
    let (s, v) = post(&srv, &p("reassign"), KEY_ACME, json!({"to": "carla"})).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_assignee")), "an analyst for a second-level case: {v}");
    assert_eq!(post(&srv, &p("claim"), POL, json!({})).await.0, 200);
    let (s, v) = post(&srv, &p("resolve"), POL, json!({"outcome": "decline", "note": "confirmed match"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["outcome"], "decline");
    let (s, _) = post(&srv, &p("release"), KEY_ACME, json!({})).await;
    assert_eq!(s, 409, "a resolved case stays resolved");

    // Every change is on the case's timeline, with who and why.
    let kinds: Vec<(String, Option<String>, Option<String>)> = events_of_case(&srv, id).await;
    let short: Vec<(&str, Option<&str>)> = kinds.iter().map(|(k, a, _)| (k.as_str(), a.as_deref())).collect();
    assert_eq!(
        short,
        [
            ("review.opened", None),
            ("review.claimed", Some("q-ana")),
            ("review.released", Some("q-ana")),
            ("review.claimed", Some("q-bob")),
            ("review.released", Some("acme")),
            ("review.reassigned", Some("acme")),
            ("review.released", Some("acme")),
            ("review.claimed", Some("q-ana")),
            ("review.escalated", Some("q-ana")),
            ("review.claimed", Some("q-pol")),
            ("review.resolved", Some("q-pol")),
        ]
    );
    assert_eq!(kinds[2].2.as_deref(), Some("need a break"));
    assert_eq!(kinds[5].2.as_deref(), Some("to user:carla: she knows the case"));
    assert_eq!(kinds[8].2.as_deref(), Some("possible sanctions match"));
}

#[tokio::test]
async fn idle_claims_return_to_the_queue() {
    let (srv, ids) = queue_server("[reviews]\nclaim_idle_secs = 2\n", &["q-i1", "q-i2"]).await;
    assert_eq!(post(&srv, &format!("/v1/reviews/{}/claim", ids[0]), ANA, json!({})).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(post(&srv, &format!("/v1/reviews/{}/claim", ids[1]), BOB, json!({})).await.0, 200);
    // The first claim passes 2 s idle first and returns; the second is still held then.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = srv.get(&format!("/v1/reviews/{}", ids[0]), Some(KEY_ACME)).await;
        if v["status"] == "open" {
            break;
        }
        assert!(Instant::now() < deadline, "the idle claim was not returned: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, second) = srv.get(&format!("/v1/reviews/{}", ids[1]), Some(KEY_ACME)).await;
    assert_eq!(second["claimed_by"], "q-bob", "claimed more recently: still held: {second}");
    let ev = events_of_case(&srv, &ids[0]).await;
    let last = ev.last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_deref()), ("review.released", Some("system:idle")));
    assert!(last.2.as_deref().unwrap().contains("idle for more than 2 s"), "{last:?}");
    // And then the second one too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = srv.get(&format!("/v1/reviews/{}", ids[1]), Some(KEY_ACME)).await;
        if v["status"] == "open" {
            break;
        }
        assert!(Instant::now() < deadline, "the second idle claim was not returned: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
