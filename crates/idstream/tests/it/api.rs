//! The read API: authentication, tenant scoping, paging, filters, parameter errors; health
//! and metrics.

use crate::helpers::*;

async fn seed(srv: &TestServer) {
    for i in 0..5 {
        let body =
            didit_body(&format!("a-{i}"), if i % 2 == 0 { "sess-even" } else { "sess-odd" }, "In Progress", now());
        assert_eq!(srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await.0, 200);
    }
    let body = br#"{"type":"verification.status_updated","data":{"session_id":"b-1"}}"#;
    assert_eq!(srv.post("std-main", body, &standard_headers("b-msg", now(), body)).await.0, 200);
}

#[tokio::test]
async fn authentication_and_tenant_scope() {
    let srv = TestServer::start().await;
    seed(&srv).await;
    let (s, v) = srv.get("/v1/events", None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_api_key")));
    let (s, v) = srv.get("/v1/events", Some("wrong")).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_api_key")));

    let (_, acme) = srv.get("/v1/events?limit=1000", Some(KEY_ACME)).await;
    let acme = acme["events"].as_array().unwrap().clone();
    assert_eq!(acme.len(), 5);
    assert!(acme.iter().all(|e| e["tenant"] == "acme"));
    let (_, beta) = srv.get("/v1/events", Some(KEY_BETA)).await;
    let beta = beta["events"].as_array().unwrap().clone();
    assert_eq!(beta.len(), 1);
    assert_eq!(beta[0]["tenant"], "beta");
    assert_eq!(srv.all_events().await.len(), 6);

    // Another tenant's event by id is a 404, exactly like a missing one.
    let beta_id = beta[0]["id"].as_str().unwrap();
    let (s, _) = srv.get(&format!("/v1/events/{beta_id}"), Some(KEY_ACME)).await;
    assert_eq!(s, 404);
    let (s, _) = srv.get(&format!("/v1/events/{beta_id}/body"), Some(KEY_ACME)).await;
    assert_eq!(s, 404);
    let (s, _) = srv.get(&format!("/v1/events/{beta_id}"), Some(KEY_BETA)).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn paging_and_filters() {
    let srv = TestServer::start().await;
    seed(&srv).await;
    let (_, p1) = srv.get("/v1/events?limit=2", Some(KEY_ACME)).await;
    let offs: Vec<_> = p1["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offs, [1, 2]);
    assert_eq!(p1["next_after"], 2);
    let (_, p2) = srv.get("/v1/events?after=2&limit=2", Some(KEY_ACME)).await;
    let offs: Vec<_> = p2["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offs, [3, 4]);
    let (_, odd) = srv.get("/v1/events?session_id=sess-odd", Some(KEY_ACME)).await;
    let offs: Vec<_> = odd["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offs, [2, 4]);

    for (q, text) in [
        ("after=abc", "`after`"),
        ("limit=0", "`limit`"),
        ("limit=5000", "`limit`"),
        ("bogus=1", "unknown parameter `bogus`"),
    ] {
        let (s, v) = srv.get(&format!("/v1/events?{q}"), Some(KEY_ACME)).await;
        assert_eq!(s, 400, "{q}");
        assert!(v["message"].as_str().unwrap().contains(text), "{q}: {v}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let srv = TestServer::start().await;
    seed(&srv).await;
    let body = didit_body("m-bad", "s", "Approved", now());
    srv.post("didit-main", &body, &didit_headers(&body, "wrong", Sig::All)).await;
    assert_eq!(srv.get("/healthz", None).await.0, 200);
    let (s, v) = srv.get("/readyz", None).await;
    assert_eq!((s, v["log_head"].as_u64()), (200, Some(6)));
    let text = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "idstream_webhooks_total{source=\"didit-main\",outcome=\"accepted\"",
        "idstream_webhooks_total{source=\"didit-main\",outcome=\"rejected\",reason=\"invalid_signature\"}",
        "idstream_log_append_seconds_bucket",
        "idstream_log_batch_entries_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let (s, v) = srv.get("/nope", None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
}
