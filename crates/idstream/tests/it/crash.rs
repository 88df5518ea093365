//! Crash test: flood a real `idstream serve` process with unique signed events, `kill -9` it
//! mid-flood, restart it on the same data directory, and check that every event that got a
//! 2xx is in the log exactly once and that offsets have no holes.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

/// provider event id -> (idstream id, offset, body) of every acknowledged delivery.
type Acked = HashMap<String, (String, u64, Vec<u8>)>;

pub struct Proc {
    pub child: tokio::process::Child,
    pub base: String,
}

/// Starts the real binary; returns once it logged the address it listens on.
pub async fn spawn_server(config: &std::path::Path) -> Proc {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_idstream"))
        .args(["serve", "--config"])
        .arg(config)
        .env("IDSTREAM_SERVER__LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start idstream");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["fields"]["message"] == "idstream serving" {
                return format!("http://{}", v["fields"]["listen"].as_str().unwrap());
            }
        }
        panic!("idstream exited before serving");
    })
    .await
    .expect("idstream did not start within 30 s");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc { child, base }
}

/// The embedded backends of a data directory, opened read-only beside a running server.
pub async fn read_only(data: &std::path::Path) -> idstream_server::backend::Backends {
    use idstream_server::backend::{open, Access, Backend};
    let mut cfg = idstream_server::config::Config::from_toml("").unwrap();
    cfg.server.data_dir = data.to_path_buf();
    open(&Backend::from_config(&cfg), Access::ReadOnly).await.unwrap()
}

/// Writes a config for the real binary: port 0, data in `dir/data`, the test sources and keys.
fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("idstream.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        dir.join("data").display(),
        base_config(&[SECRET_NEW], "[rate_limits]\nenabled = false\n")
    );
    std::fs::write(&config, toml).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_flood_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());

    let mut proc = spawn_server(&config).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    // provider event id -> (idstream id, offset, body) for every 2xx.
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flooders = Vec::new();
    for w in 0..16 {
        let (client, base, acked, stop) = (client.clone(), proc.base.clone(), acked.clone(), stop.clone());
        flooders.push(tokio::spawn(async move {
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let pid = format!("crash-{w}-{n}");
                let body = didit_body(&pid, &format!("sess-{w}-{}", n / 4), "In Progress", now());
                match signed_post(&client, &base, &body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        assert_eq!(v["duplicate"], false);
                        acked.lock().unwrap().insert(
                            pid,
                            (v["event_id"].as_str().unwrap().to_owned(), v["offset"].as_u64().unwrap(), body),
                        );
                    }
                    Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                    // The server died under us: this event may or may not be stored.
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the flood run, then kill -9 while requests are in flight.
    let t0 = std::time::Instant::now();
    while acked.lock().unwrap().len() < 3000 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc.child.start_kill().unwrap(); // SIGKILL
    proc.child.wait().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    let acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    assert!(acked.len() >= 100, "the flood acknowledged only {} events", acked.len());

    // Restart on the same data directory and read the whole log back.
    let proc = spawn_server(&config).await;
    let events = events_via(&client, &proc.base).await;
    let offsets: Vec<u64> = events.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=events.len() as u64).collect::<Vec<_>>(), "offsets have holes");
    let mut by_provider_id: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
    for e in &events {
        by_provider_id
            .entry(e["provider_event_id"].as_str().unwrap())
            .or_default()
            .push((e["id"].as_str().unwrap(), e["offset"].as_u64().unwrap()));
    }
    assert!(by_provider_id.values().all(|v| v.len() == 1), "an event is in the log twice");
    for (pid, (id, offset, _)) in &acked {
        let stored = by_provider_id.get(pid.as_str()).unwrap_or_else(|| panic!("acknowledged event {pid} was lost"));
        assert_eq!(stored[0], (id.as_str(), *offset), "{pid} changed id or offset");
    }
    eprintln!(
        "crash test: {} acknowledged before kill -9, {} in the log after restart ({} unacknowledged in-flight ones committed)",
        acked.len(),
        events.len(),
        events.len() - acked.len()
    );

    // The dedupe keys survived the crash too: redelivering acknowledged events appends nothing.
    let head = events.len() as u64;
    let sample: Vec<_> = acked.iter().take(200).collect();
    let mut seen = HashSet::new();
    for (pid, (id, offset, body)) in sample {
        // Redeliveries re-sign at the same timestamp; still fresh within this test's runtime.
        let v: serde_json::Value = signed_post(&client, &proc.base, body).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["duplicate"], true, "{pid}: {v}");
        assert_eq!((v["event_id"].as_str().unwrap(), v["offset"].as_u64().unwrap()), (id.as_str(), *offset));
        seen.insert(pid);
    }
    let v: serde_json::Value = client.get(format!("{}/readyz", proc.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["log_head"].as_u64(), Some(head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut proc = spawn_server(&config).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut flooders = Vec::new();
    for w in 0..8 {
        let (client, base, acked) = (client.clone(), proc.base.clone(), acked.clone());
        flooders.push(tokio::spawn(async move {
            for n in 0.. {
                let body = didit_body(&format!("term-{w}-{n}"), &format!("s-{w}"), "In Progress", now());
                match signed_post(&client, &base, &body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        acked.lock().unwrap().push(v["event_id"].as_str().unwrap().to_owned());
                    }
                    // 503 while draining, or the connection closed: not acknowledged, fine.
                    _ => break,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = proc.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        tokio::time::timeout(Duration::from_secs(30), proc.child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "graceful shutdown must exit 0, got {status}");
    for f in flooders {
        f.await.unwrap();
    }
    let acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    let proc = spawn_server(&config).await;
    for id in &acked {
        let r = client.get(format!("{}/v1/events/{id}", proc.base)).bearer_auth(KEY_ALL).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "acknowledged event {id} missing after graceful shutdown");
    }
}

/// Decisions under `kill -9`: the worker's decision, session state, review case, `decision.made`
/// entry and checkpoint are one transaction, so after a crash and restart every verification
/// event has exactly one decision and one `decision.made` entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_leaves_exactly_one_decision_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let mut proc = spawn_server(&config).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = |base: String, tag: &'static str| {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (client, base, acked, stop) = (client.clone(), base.clone(), acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || (tag == "after" && n >= 100) {
                        break;
                    }
                    let id = format!("{tag}-{w}-{n}");
                    let body =
                        didit_body(&id, &format!("s-{id}"), if n % 3 == 0 { "In Review" } else { "Approved" }, now());
                    match signed_post(&client, &base, &body).send().await {
                        Ok(r) if r.status().is_success() => {
                            acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => break,
                    }
                }
            }));
        }
        tasks
    };
    let tasks = flood(proc.base.clone(), "before");
    let t0 = std::time::Instant::now();
    while acked.load(std::sync::atomic::Ordering::Relaxed) < 1500 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc.child.start_kill().unwrap();
    proc.child.wait().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let store = read_only(&data).await.store;
    let decided_before = store.decisions_between(0, i64::MAX, None, None, 1_000_000).await.unwrap().len();
    drop(store);

    // Restart, send more, and let the worker catch up.
    let mut proc = spawn_server(&config).await;
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    for t in flood(proc.base.clone(), "after") {
        t.await.unwrap();
    }
    // Caught up: the checkpoint is at the log's head and the outbox is empty (a batch's
    // `decision.made` entries are appended after its commit; the rows of appended entries go
    // with the next commit or the relay's next round).
    let outbox_len = |data: &std::path::Path| -> i64 {
        let db = rusqlite::Connection::open(data.join("state.db")).unwrap();
        db.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (log, store) = loop {
        let b = read_only(&data).await;
        if b.store.checkpoint("decisions").await.unwrap() == Some(b.log.head()) && outbox_len(&data) == 0 {
            break (b.log, b.store);
        }
        assert!(std::time::Instant::now() < deadline, "the decision worker did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    proc.child.start_kill().unwrap();
    proc.child.wait().await.unwrap();

    let entries = log.read(0, 1_000_000, &Default::default()).await.unwrap();
    let verifications: HashSet<&str> =
        entries.iter().filter(|e| e.kind.starts_with("verification.")).map(|e| e.id.as_str()).collect();
    let decisions = store.decisions_between(0, i64::MAX, None, None, 1_000_000).await.unwrap();
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for d in &decisions {
        *per_event.entry(d.event_id.as_deref().unwrap()).or_default() += 1;
    }
    assert!(per_event.values().all(|n| *n == 1), "an event was decided twice");
    let decided: HashSet<&str> = per_event.keys().copied().collect();
    assert_eq!(decided, verifications, "every verification event is decided, and only those");
    let made = entries.iter().filter(|e| e.kind == "decision.made").count();
    assert_eq!(made, decisions.len(), "one decision.made entry per decision");
    eprintln!(
        "decision crash test: {decided_before} decided before kill -9, {} after restart; {} verification events, {} decisions",
        decisions.len() - decided_before,
        verifications.len(),
        decisions.len()
    );
}

/// The embedded store commits a change with its log entries in `state.db`'s outbox, then
/// appends them to `events.db`. A crash between the two (here: a staged commit never published,
/// and the log closed under a commit), or between the append and the outbox delete (here: a row
/// put back), leaves work for the relay at the next start: every entry reaches the log exactly
/// once, and the change itself is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_entries_left_by_a_crash_reach_the_log_exactly_once() {
    use idstream_server::log::sqlite::{SqliteLog, SqliteOptions};
    use idstream_server::log::{EventLog, NewEntry};
    use idstream_server::store::sqlite::SqliteStore;
    use idstream_server::store::{Op, Store, Txn};
    let dir = tempfile::tempdir().unwrap();
    let entry = |id: &str, dedupe: Option<&str>| NewEntry {
        id: id.into(),
        tenant: "acme".into(),
        source: "idstream".into(),
        kind: "subject.updated".into(),
        partition_key: format!("subject:{id}"),
        dedupe_key: dedupe.map(str::to_owned),
        event: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        body: None,
    };
    let subject = |id: &str| Op::PutSubject {
        tenant: "acme".into(),
        id: id.into(),
        attributes: serde_json::json!({"plan": "gold"}),
        actor: "test".into(),
        now_us: 1,
    };
    {
        let log = Arc::new(SqliteLog::open(dir.path(), SqliteOptions::default()).unwrap());
        let store = SqliteStore::open(dir.path(), log.clone(), 64, 64).unwrap();
        // Appended normally...
        let ok = store.commit(Txn { entries: vec![entry("e-ok", None)], ops: vec![subject("u-ok")] }).await.unwrap();
        assert_eq!(ok.len(), 1);
        // Committed, and never published: the decision worker appends a batch's entries while
        // it decides the next, so a crash can come between its commit and the append.
        let staged =
            store.commit_staged(Txn { entries: vec![entry("e-0", None)], ops: vec![subject("u-0")] }).await.unwrap();
        drop(staged);
        // ... then the log goes away under a commit: the change stands, its entries wait.
        log.close().await;
        let pending = store
            .commit(Txn {
                entries: vec![entry("e-1", None), entry("e-2", Some("decision/ev-2"))],
                ops: vec![subject("u-1")],
            })
            .await
            .unwrap();
        assert!(pending.is_empty(), "committed, entries in the outbox");
        store.close().await;
    }
    // A lost outbox delete: the appended entry's row is back, as if the crash came just after
    // the append.
    {
        let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
        db.execute(
            "INSERT INTO outbox (id, tenant, source, kind, partition_key, dedupe_key, event, created_at)
             VALUES ('e-ok', 'acme', 'idstream', 'subject.updated', 'subject:e-ok', 'entry:e-ok', X'7B7D', 0)",
            [],
        )
        .unwrap();
    }
    for round in 0..2 {
        let mut cfg = idstream_server::config::Config::from_toml("").unwrap();
        cfg.server.data_dir = dir.path().to_path_buf();
        let b = idstream_server::backend::open(
            &idstream_server::backend::Backend::from_config(&cfg),
            idstream_server::backend::Access::Serve,
        )
        .await
        .unwrap();
        let all = b.log.read(0, 100, &Default::default()).await.unwrap();
        let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e-ok", "e-0", "e-1", "e-2"], "round {round}: every entry once, in commit order");
        for id in ["u-0", "u-1"] {
            assert!(b.store.subject("acme", id).await.unwrap().is_some(), "the change itself committed");
        }
        b.store.close().await;
        b.log.close().await;
    }
}

/// The outbox rows of entries already in the log are deleted with the store's next commit
/// (not in a commit of their own), by the relay's next round when no commit comes, or at
/// close; either way every entry is in the log once and the outbox ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_outbox_rows_go_with_the_next_commit_the_relay_or_close() {
    use idstream_server::log::sqlite::{SqliteLog, SqliteOptions};
    use idstream_server::log::{EventLog, NewEntry};
    use idstream_server::store::sqlite::SqliteStore;
    use idstream_server::store::{Store, Txn};
    let dir = tempfile::tempdir().unwrap();
    let entry = |id: &str| NewEntry {
        id: id.into(),
        tenant: "acme".into(),
        source: "idstream".into(),
        kind: "subject.updated".into(),
        partition_key: format!("subject:{id}"),
        dedupe_key: None,
        event: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        body: None,
    };
    let outbox = |dir: &std::path::Path| -> Vec<String> {
        let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
        let mut stmt = db.prepare("SELECT id FROM outbox ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let log = Arc::new(SqliteLog::open(dir.path(), SqliteOptions::default()).unwrap());
    let store = Arc::new(SqliteStore::open(dir.path(), log.clone(), 64, 64).unwrap());
    let commit = |id: &'static str| {
        let store = store.clone();
        async move { store.commit(Txn { entries: vec![entry(id)], ops: vec![] }).await.unwrap() }
    };
    assert_eq!(commit("e-1").await.len(), 1);
    assert_eq!(outbox(dir.path()), ["e-1"], "appended; its row goes with the next commit");
    assert_eq!(commit("e-2").await.len(), 1);
    assert_eq!(outbox(dir.path()), ["e-2"], "e-1's row went with e-2's commit");
    // No commit follows: the relay's next round deletes the row (and appends nothing again).
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(store.clone().run_relay(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !outbox(dir.path()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the relay never deleted the appended row");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    relay.await.unwrap();
    assert_eq!(commit("e-3").await.len(), 1);
    store.close().await;
    assert!(outbox(dir.path()).is_empty(), "close deletes the rows of appended entries");
    let ids: Vec<String> = log.read(0, 100, &Default::default()).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["e-1", "e-2", "e-3"], "every entry once, in commit order");
    log.close().await;
}
