//! Webhook ingest over real HTTP: every accepted input, every rejected one, and that a
//! rejection appends nothing.

use serde_json::json;

use crate::helpers::*;

type Case = (&'static str, Vec<u8>, Vec<(&'static str, String)>, u16, &'static str, &'static str);

#[tokio::test]
async fn each_didit_scheme_alone_is_accepted() {
    let srv = TestServer::start_ingest_only().await;
    for (i, sig) in [Sig::V2, Sig::Raw, Sig::Simple].into_iter().enumerate() {
        let body = didit_body(&format!("evt-{i}"), &format!("sess-{i}"), "Approved", now());
        let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, sig)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["offset"], i as u64 + 1);
        assert_eq!(v["duplicate"], false);
    }
    let events = srv.all_events().await;
    let schemes: Vec<_> = events.iter().map(|e| e["signature"].as_str().unwrap().to_owned()).collect();
    assert_eq!(schemes, ["didit_v2", "didit_raw", "didit_simple"]);
    let flags: Vec<_> = events.iter().map(|e| e["unauthenticated_decision"].as_bool().unwrap()).collect();
    assert_eq!(flags, [false, false, true], "only the Simple-verified event is flagged");
    let e = &events[0];
    assert_eq!(e["kind"], "verification.status_updated");
    assert_eq!(e["status"], "approved");
    assert_eq!(e["provider_status"], "Approved");
    assert_eq!(e["subject"], "user-42");
    assert_eq!(e["tenant"], "acme");
    assert_eq!(e["checks"]["liveness"][0]["score"], 96.15);
    assert_eq!(e["checks"]["documents"][0]["first_name"], "José");
}

#[tokio::test]
async fn bad_inputs_get_their_status_and_append_nothing() {
    let srv = TestServer::start_ingest_only().await;
    let ts = now();
    let good = didit_body("e1", "s1", "Approved", ts);
    let stale = didit_body("e2", "s2", "Approved", ts - 360);
    let future = didit_body("e3", "s3", "Approved", ts + 360);
    let malformed = br#"{"webhook_type": "status.updated", "timestamp": 1"#.to_vec();
    let missing_type = serde_json::to_vec(&json!({"timestamp": ts, "session_id": "s", "status": "Approved"})).unwrap();
    let missing_session =
        serde_json::to_vec(&json!({"timestamp": ts, "webhook_type": "status.updated", "status": "Approved"})).unwrap();
    let bad_ts_type = serde_json::to_vec(&json!({"timestamp": "yesterday", "webhook_type": "status.updated"})).unwrap();
    let oversize = {
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["metadata"]["pad"] = "x".repeat(1 << 20).into();
        serde_json::to_vec(&v).unwrap()
    };
    let mut tampered = good.clone();
    let pos = tampered.windows(7).position(|w| w == b"user-42").unwrap();
    tampered[pos + 5] = b'9';

    // (name, body, headers, status, error code, text the message must contain)
    let cases: Vec<Case> = vec![
        ("no signature", good.clone(), vec![], 401, "missing_signature", "missing signature"),
        (
            "wrong secret",
            good.clone(),
            didit_headers(&good, "not-the-secret", Sig::All),
            401,
            "invalid_signature",
            "invalid signature",
        ),
        (
            "tampered body, v2",
            tampered.clone(),
            didit_headers(&good, SECRET_NEW, Sig::V2),
            401,
            "invalid_signature",
            "",
        ),
        (
            "tampered body, raw",
            tampered.clone(),
            didit_headers(&good, SECRET_NEW, Sig::Raw),
            401,
            "invalid_signature",
            "",
        ),
        ("garbage signature", good.clone(), vec![("x-signature-v2", "zz".into())], 401, "invalid_signature", ""),
        (
            "stale timestamp",
            stale.clone(),
            didit_headers(&stale, SECRET_NEW, Sig::All),
            401,
            "stale_timestamp",
            "stale timestamp",
        ),
        (
            "future timestamp",
            future.clone(),
            didit_headers(&future, SECRET_NEW, Sig::All),
            401,
            "stale_timestamp",
            "tolerance 300",
        ),
        (
            "X-Timestamp disagrees",
            good.clone(),
            [didit_headers(&good, SECRET_NEW, Sig::V2), vec![("x-timestamp", (ts - 100).to_string())]].concat(),
            401,
            "timestamp_mismatch",
            "disagrees",
        ),
        (
            "malformed JSON",
            malformed.clone(),
            raw_only(&malformed, SECRET_NEW),
            400,
            "malformed_json",
            "malformed JSON",
        ),
        (
            "missing webhook_type",
            missing_type.clone(),
            didit_headers(&missing_type, SECRET_NEW, Sig::Raw),
            400,
            "invalid_field",
            "`webhook_type`",
        ),
        (
            "missing session_id",
            missing_session.clone(),
            didit_headers(&missing_session, SECRET_NEW, Sig::Raw),
            400,
            "invalid_field",
            "`session_id`",
        ),
        (
            "timestamp not an integer",
            bad_ts_type.clone(),
            didit_headers(&bad_ts_type, SECRET_NEW, Sig::Raw),
            400,
            "invalid_field",
            "`timestamp`",
        ),
        (
            "oversize body",
            oversize.clone(),
            didit_headers(&oversize, SECRET_NEW, Sig::Raw),
            413,
            "body_too_large",
            "1048576",
        ),
    ];
    for (name, body, headers, status, code, text) in cases {
        let (s, v) = srv.post("didit-main", &body, &headers).await;
        assert_eq!(s, status, "{name}: {v}");
        assert_eq!(v["error"], code, "{name}: {v}");
        assert!(v["message"].as_str().unwrap().contains(text), "{name}: {v}");
    }
    let (s, v) = srv.post("nope", &good, &didit_headers(&good, SECRET_NEW, Sig::All)).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_source")), "{v}");

    assert_eq!(srv.state.log.head(), 0, "a rejected webhook must append nothing");
    // And the good one still goes through afterwards.
    let (s, _) = srv.post("didit-main", &good, &didit_headers(&good, SECRET_NEW, Sig::All)).await;
    assert_eq!(s, 200);
    assert_eq!(srv.state.log.head(), 1);
}

#[tokio::test]
async fn oversize_body_without_content_length_is_refused() {
    // A chunked body has no Content-Length: the limit must still hold while streaming.
    let srv = TestServer::start_ingest_only().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let resp = srv
        .client
        .post(srv.url("/webhooks/didit-main"))
        .header("x-signature", "00")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(srv.state.log.head(), 0);
}

#[tokio::test]
async fn secret_rotation() {
    let srv = TestServer::start_ingest_only().await; // configured with [new, old]
    for (i, secret) in [SECRET_NEW, SECRET_OLD].into_iter().enumerate() {
        let body = didit_body(&format!("rot-{i}"), "s", "In Progress", now());
        let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, secret, Sig::All)).await;
        assert_eq!(s, 200, "secret #{i}: {v}");
    }
    // Rotation finished: the old secret is removed from the config and must be refused.
    let dir = srv.stop().await;
    // (Still ingest only: a decision.made entry would change the head this test counts.)
    let srv = TestServer::start_in(dir, &base_config(&[SECRET_NEW], NO_DECISIONS)).await;
    let body = didit_body("rot-2", "s", "Approved", now());
    let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_OLD, Sig::All)).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_signature")));
    let (s, _) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
    assert_eq!(s, 200);
    assert_eq!(srv.state.log.head(), 3, "the restarted server kept the two earlier events");
}

#[tokio::test]
async fn duplicates_return_the_original_and_append_nothing() {
    let srv = TestServer::start_ingest_only().await;
    let body = didit_body("dup-1", "s1", "Approved", now());
    let h = didit_headers(&body, SECRET_NEW, Sig::All);
    let (s1, first) = srv.post("didit-main", &body, &h).await;
    assert_eq!(s1, 200);
    let (s2, second) = srv.post("didit-main", &body, &h).await;
    assert_eq!(s2, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["event_id"], first["event_id"]);
    assert_eq!(second["offset"], first["offset"]);

    // A provider retry re-signed with the other (rotating) secret is the same event.
    let (_, third) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_OLD, Sig::All)).await;
    assert_eq!(third["duplicate"], true);

    // Concurrent deliveries of one new event: exactly one append.
    let body = didit_body("dup-2", "s2", "Approved", now());
    let h = didit_headers(&body, SECRET_NEW, Sig::All);
    let answers = futures_util::future::join_all((0..20).map(|_| srv.post("didit-main", &body, &h))).await;
    let fresh = answers.iter().filter(|(s, v)| *s == 200 && v["duplicate"] == false).count();
    assert_eq!(fresh, 1, "{answers:?}");
    assert!(answers.iter().all(|(s, v)| *s == 200 && v["offset"] == 2));
    assert_eq!(srv.state.log.head(), 2);

    // Without an event_id the composite key (session, type, timestamp, status) dedupes.
    let ts = now();
    let mut v: serde_json::Value = serde_json::from_slice(&didit_body("x", "s3", "Declined", ts)).unwrap();
    v.as_object_mut().unwrap().remove("event_id");
    let body = serde_json::to_vec(&v).unwrap();
    let h = didit_headers(&body, SECRET_NEW, Sig::All);
    assert_eq!(srv.post("didit-main", &body, &h).await.1["duplicate"], false);
    assert_eq!(srv.post("didit-main", &body, &h).await.1["duplicate"], true);
    assert_eq!(srv.state.log.head(), 3);
}

#[tokio::test]
async fn body_round_trips_byte_exact() {
    let srv = TestServer::start_ingest_only().await;
    let ts = now();
    // Odd spacing, escapes, non-ASCII, an unknown field: all must come back byte for byte.
    let body = format!(
        "{{ \"webhook_type\":\"status.updated\" ,\n\t\"timestamp\": {ts}, \"session_id\":\"s-rt\", \"status\":\"In Review\",\n \"vendor_data\":\"M\\u00fcller \\\"q\\\" \\/ 北京 😀\", \"future_field\": {{\"x\": [1, 2.50, 1e3]}}, \"event_id\":\"rt-1\" }}"
    )
    .into_bytes();
    let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::V2)).await;
    assert_eq!(s, 200, "{v}");
    let id = v["event_id"].as_str().unwrap();
    let raw = srv.client.get(srv.url(&format!("/v1/events/{id}/body"))).bearer_auth(KEY_ACME).send().await.unwrap();
    assert_eq!(raw.status().as_u16(), 200);
    assert_eq!(raw.bytes().await.unwrap().as_ref(), body.as_slice());
    let (s, e) = srv.get(&format!("/v1/events/{id}"), Some(KEY_ACME)).await;
    assert_eq!(s, 200);
    assert_eq!(e["body"].as_str().unwrap().as_bytes(), body.as_slice());
    assert_eq!(e["subject"], "Müller \"q\" / 北京 😀");
    assert_eq!(e["status"], "in_review");
}

#[tokio::test]
async fn standard_webhooks() {
    let srv = TestServer::start_ingest_only().await;
    let ts = now();
    let body = serde_json::to_vec(&json!({"type": "verification.status_updated", "timestamp": "2026-01-01T00:00:00Z",
        "data": {"session_id": "std-s1", "status": "approved", "subject": "u-7"}}))
    .unwrap();
    let h = standard_headers("msg_1", ts, &body);
    let (s, v) = srv.post("std-main", &body, &h).await;
    assert_eq!(s, 200, "{v}");
    // Several signatures in one header (rotation): one right one is enough.
    let mut h2 = standard_headers("msg_2", ts, &body);
    h2[2].1 = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {} v1a,xyz", h2[2].1);
    assert_eq!(srv.post("std-main", &body, &h2).await.0, 200);
    // Same webhook-id again: duplicate.
    assert_eq!(srv.post("std-main", &body, &h).await.1["duplicate"], true);
    // Stale, wrong signature, missing header.
    let stale = standard_headers("msg_3", ts - 400, &body);
    assert_eq!(srv.post("std-main", &body, &stale).await.1["error"], "stale_timestamp");
    let mut wrong = standard_headers("msg_4", ts, &body);
    wrong[2].1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    assert_eq!(srv.post("std-main", &body, &wrong).await.0, 401);
    let (s, v) = srv.post("std-main", &body, &standard_headers("msg_5", ts, &body)[1..]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_header")), "{v}");
    assert_eq!(srv.state.log.head(), 2);
    let events = srv.all_events().await;
    assert_eq!(events[0]["tenant"], "beta");
    assert_eq!(events[0]["status"], "approved");
    assert_eq!(events[0]["session_id"], "std-s1");
}

#[tokio::test]
async fn full_log_answers_503_and_keeps_every_acknowledged_event() {
    // A log capped at 256 KiB fills up: the server must answer 503, never a 2xx for an event
    // it did not store, and keep every event it did acknowledge.
    let srv =
        TestServer::start_with(&base_config(&[SECRET_NEW], &format!("[log]\nmax_db_bytes = 262144\n{NO_DECISIONS}")))
            .await;
    let mut acked = Vec::new();
    let mut unavailable = 0;
    for i in 0..2000 {
        let mut v: serde_json::Value =
            serde_json::from_slice(&didit_body(&format!("full-{i}"), &format!("s{i}"), "Approved", now())).unwrap();
        v["metadata"]["pad"] = "p".repeat(2000).into();
        let body = serde_json::to_vec(&v).unwrap();
        let (s, v) = srv.post("didit-main", &body, &didit_headers(&body, SECRET_NEW, Sig::Raw)).await;
        match s {
            200 => acked.push(v["offset"].as_u64().unwrap()),
            503 => {
                assert_eq!(v["error"], "log_unavailable", "{v}");
                unavailable += 1;
                if unavailable >= 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(unavailable >= 3, "the log never filled up");
    assert!(!acked.is_empty());
    assert_eq!(acked, (1..=acked.len() as u64).collect::<Vec<_>>(), "dense offsets");
    assert_eq!(srv.state.log.head(), acked.len() as u64);
    assert_eq!(srv.all_events().await.len(), acked.len());
    let (s, _) = srv.get("/readyz", None).await;
    assert_eq!(s, 200);
}
