//! `idstream simulate` against a real server: every delivery is accepted, exactly the
//! deliberate duplicates and retries are answered as duplicates.

use idstream_tools::simulate::{simulate, SimulateArgs};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_traffic_is_accepted_and_deduplicated() {
    let srv = TestServer::start().await;
    let out = srv.dir.path().join("deliveries.jsonl");
    let args = SimulateArgs {
        target: srv.url("/webhooks/didit-main"),
        secret: Some(SECRET_NEW.into()),
        secret_file: "unused".into(),
        sessions: 80,
        rate: 0,
        concurrency: 4,
        seed: 42,
        duplicate_rate: 0.1,
        retry_rate: 0.05,
        out: Some(out.clone()),
        quiet: true,
    };
    let s = simulate(&args).await.unwrap();
    assert_eq!(s.rejected, 0, "{s}");
    assert_eq!(s.errors, 0, "{s}");
    assert!(s.expected_duplicates > 0, "{s}");
    assert_eq!(s.duplicates, s.expected_duplicates, "{s}");
    assert_eq!(s.accepted + s.duplicates, s.sent);
    let events = srv.all_events().await;
    let verifications = events.iter().filter(|e| e["kind"].as_str().unwrap().starts_with("verification.")).count();
    assert_eq!(verifications as u64, s.accepted);
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count() as u64, s.sent);

    // Per-session order: each session's events are in the log in its status order.
    let mut last: std::collections::HashMap<String, String> = Default::default();
    for e in &events {
        if e["kind"] != "verification.status_updated" {
            continue;
        }
        let sid = e["session_id"].as_str().unwrap().to_owned();
        let occurred = e["occurred_at"].as_str().unwrap().to_owned();
        if let Some(prev) = last.get(&sid) {
            assert!(prev <= &occurred, "session {sid} out of order");
        }
        last.insert(sid, occurred);
    }
    // Personas are visible to downstream tests through the event's original metadata.
    assert!(events.iter().any(|e| e["body"].as_str().is_some_and(|b| b.contains("fraud_ring_document"))));
}
