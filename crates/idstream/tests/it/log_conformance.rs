//! The `EventLog` conformance suite: the contract every backend must keep (dense offsets in
//! commit order, stored dedupe, durable checkpoints, tail notification, reopen keeps all).
//! Runs against the embedded SQLite log; later backends add one `#[tokio::test]` each that
//! calls [`suite`] with their opener.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use idstream_server::log::sqlite::{SqliteLog, SqliteOptions};
use idstream_server::log::{EventLog, LogError, NewEntry, ReadFilter};

type Opener = dyn Fn(&Path) -> Pin<Box<dyn Future<Output = Arc<dyn EventLog>>>>;

fn entry(n: usize, tenant: &str, partition: &str, dedupe: Option<&str>) -> NewEntry {
    NewEntry {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.into(),
        source: "test".into(),
        kind: "verification.status_updated".into(),
        partition_key: partition.into(),
        dedupe_key: dedupe.map(str::to_owned),
        event: format!("{{\"n\":{n}}}").into_bytes(),
        body: Some(format!("body-{n}").into_bytes()),
    }
}

pub async fn suite(open: &Opener) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    assert_eq!(log.head(), 0);
    let mut tail = log.subscribe();

    // Batches get dense offsets in input order; the tail sees the new head.
    let r = log
        .append(vec![entry(1, "a", "s1", Some("k1")), entry(2, "a", "s2", Some("k2")), entry(3, "b", "s1", None)])
        .await
        .unwrap();
    assert_eq!(r.iter().map(|a| a.offset).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(r.iter().all(|a| !a.duplicate));
    tail.changed().await.unwrap();
    assert_eq!(*tail.borrow_and_update(), 3);

    // Dedupe: against stored entries and within one batch; `None` never dedupes.
    let r = log
        .append(vec![
            entry(4, "a", "s1", Some("k1")),
            entry(5, "a", "s3", Some("k5")),
            entry(6, "a", "s3", Some("k5")),
            entry(7, "b", "s1", None),
        ])
        .await
        .unwrap();
    assert_eq!(
        r.iter().map(|a| (a.offset, a.duplicate)).collect::<Vec<_>>(),
        [(1, true), (4, false), (4, true), (5, false)]
    );
    assert_eq!(r[2].id, r[1].id, "a duplicate answers with the original's id");
    assert_eq!(log.head(), 5);

    // Concurrent appenders: every offset once, no holes.
    let mut tasks = Vec::new();
    for t in 0..20 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut offs = Vec::new();
            for i in 0..10 {
                let key = format!("c-{t}-{i}");
                offs.push(log.append(vec![entry(100 + i, "a", &key, Some(&key))]).await.unwrap()[0].offset);
            }
            offs
        }));
    }
    let mut all: Vec<u64> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (6..=205).collect::<Vec<_>>());

    // Reads: after/limit, tenant and partition filters, get by id.
    let page = log.read(0, 4, &ReadFilter::default()).await.unwrap();
    assert_eq!(page.iter().map(|e| e.offset).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(page[0].body.as_deref(), Some(&b"body-1"[..]));
    assert_eq!(page[0].event, b"{\"n\":1}");
    let b = log.read(0, 100, &ReadFilter { tenant: Some("b".into()), partition_key: None }).await.unwrap();
    assert_eq!(b.iter().map(|e| e.offset).collect::<Vec<_>>(), [3, 5]);
    let s1 = log.read(1, 100, &ReadFilter { tenant: None, partition_key: Some("s1".into()) }).await.unwrap();
    assert_eq!(s1.iter().map(|e| e.offset).collect::<Vec<_>>(), [3, 5]);
    let got = log.get(&page[1].id).await.unwrap().unwrap();
    assert_eq!((got.offset, got.partition_key.as_str()), (2, "s2"));
    assert!(log.get("no-such-id").await.unwrap().is_none());
    assert!(log.read(205, 10, &ReadFilter::default()).await.unwrap().is_empty());

    // Close: later appends are refused, never silently dropped.
    log.close().await;
    assert!(matches!(log.append(vec![entry(9, "a", "x", None)]).await, Err(LogError::Closed)));
    drop(log);

    // Reopen: head, entries and dedupe keys all survived. (Consumer checkpoints are the
    // store's: store_conformance.)
    let log = open(dir.path()).await;
    assert_eq!(log.head(), 205);
    let r = log.append(vec![entry(1, "a", "s1", Some("k1")), entry(10, "a", "s9", None)]).await.unwrap();
    assert_eq!(r.iter().map(|a| (a.offset, a.duplicate)).collect::<Vec<_>>(), [(1, true), (206, false)]);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_conforms() {
    suite(&|dir: &Path| {
        let dir = dir.to_path_buf();
        Box::pin(async move {
            Arc::new(SqliteLog::open(&dir, SqliteOptions::default()).expect("open log")) as Arc<dyn EventLog>
        })
    })
    .await;
}

#[tokio::test]
async fn sqlite_log_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SqliteLog::open(dir.path(), SqliteOptions::default()).unwrap();
    let err = SqliteLog::open(dir.path(), SqliteOptions::default()).err().expect("second open must fail");
    assert!(err.to_string().contains("in use by another idstream process"), "{err}");
}

/// Retention: never past what the guarding consumer processed, offsets never reused (even when
/// every entry was removed), and the removal survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retention_prunes_safely() {
    use idstream_server::log::retention::enforce;
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SqliteLog::open(dir.path(), SqliteOptions::default()).unwrap();
        let appended = log.append((0..20).map(|i| entry(i, "t", "p", None)).collect()).await.unwrap();
        assert_eq!(appended.last().unwrap().offset, 20);
        // The guarding consumer has done 7.
        let guard: idstream_server::log::retention::Guard = std::sync::Arc::new(|| Box::pin(async { Ok(7) }));
        let far_future = i64::MAX / 2;
        // Everything is older than a zero retention, but the consumer has only done 7.
        let pruned = enforce(&log, std::time::Duration::ZERO, Some(&guard), far_future).await.unwrap();
        assert_eq!(pruned, 7);
        assert_eq!(log.read(0, 100, &Default::default()).await.unwrap()[0].offset, 8);
        // Nothing is old enough yet at "now minus a day".
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        assert_eq!(enforce(&log, std::time::Duration::from_secs(86_400), None, now_us).await.unwrap(), 7);
        // Small steps reach the same end; past the head is clamped to it.
        assert_eq!(log.prune(1000, 3).await.unwrap(), 10);
        assert_eq!(enforce(&log, std::time::Duration::ZERO, None, far_future).await.unwrap(), 20);
        assert!(log.read(0, 100, &Default::default()).await.unwrap().is_empty());
        assert_eq!(log.head(), 20);
        log.close().await;
    }
    let log = SqliteLog::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_eq!((log.head(), log.pruned_through()), (20, 20), "restart keeps the head and the pruned mark");
    let next = log.append(vec![entry(99, "t", "p", None)]).await.unwrap();
    assert_eq!(next[0].offset, 21, "offsets are never reused");
}

/// The same suite on NATS JetStream (with its PostgreSQL index): its own stream, subjects and
/// database. Run twice: with the in-memory tail cache, and with none (every read from JetStream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
async fn nats_log_conforms() {
    for cache_bytes in [64 << 20, 0] {
        let b = crate::backends::ScaleOut::fresh("logconf").await;
        suite(&move |_dir: &Path| {
            let b = b.clone();
            Box::pin(async move { Arc::new(b.open_log(cache_bytes).await) as Arc<dyn EventLog> })
        })
        .await;
    }
}

/// The dedupe lookup is planned for its keys on every append, never run from a connection's
/// cached generic plan: one made while `log_index` is nearly empty is a sequential scan, and it
/// would stay as the table grows (BENCHMARKS.md "Scale-out"). The log gets a pool of two
/// connections (the smallest there is), and the test looks at the prepared statements of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
async fn nats_dedupe_lookup_never_runs_a_cached_generic_plan() {
    let b = crate::backends::ScaleOut::fresh("generic_plan").await;
    let pool = idstream_server::store::pg::connect(&b.pg_url, 2).await.unwrap();
    let log = idstream_server::log::nats::NatsLog::open(b.options(1 << 20), pool.clone()).await.unwrap();
    // As when the hazard was found: a few hundred rows, batches of a dozen keys, and more than
    // the five executions after which PostgreSQL weighs a prepared statement's generic plan.
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO log_index (id, seq, dedupe_key, tenant, partition_key)
             SELECT 'old-' || i, 1000000 + i, 'old-' || i, 'a', 's0' FROM generate_series(1, 300) AS i",
            &[],
        )
        .await
        .unwrap();
    for i in 0..12 {
        let keys: Vec<String> = (0..12).map(|j| format!("k{i}-{j}")).collect();
        let mut batch: Vec<NewEntry> = keys.iter().map(|k| entry(i, "a", "s1", Some(k))).collect();
        batch.push(entry(i, "a", "s1", Some(&keys[0])));
        let got = log.append(batch).await.unwrap();
        assert!(!got[0].duplicate && got[12].duplicate, "a repeat in the batch is a duplicate");
    }
    let again = log.append(vec![entry(99, "a", "s1", Some("k3-5"))]).await.unwrap();
    assert!(again[0].duplicate, "a stored key is found");
    // Both connections held at once: every connection the log could have used.
    let clients = futures_util::future::try_join_all((0..2).map(|_| pool.get())).await.unwrap();
    for c in &clients {
        let generic: Vec<(String, i64)> = c
            .query(
                "SELECT statement, generic_plans FROM pg_prepared_statements
                 WHERE statement LIKE '%FROM log_index%' AND generic_plans > 0
                   AND statement NOT LIKE '%pg_prepared_statements%'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert!(generic.is_empty(), "a lookup of log_index ran a cached generic plan: {generic:?}");
    }
    drop(clients);
    log.close().await;
}

/// Past JetStream's duplicate window, PostgreSQL is the final word; within it, JetStream
/// recognises a key PostgreSQL never heard of (a node killed between the ack and the insert).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS and PostgreSQL: set IDSTREAM_TEST_NATS_URL and IDSTREAM_TEST_POSTGRES_URL"]
async fn nats_dedupe_survives_a_lost_index_row_and_prunes() {
    let b = crate::backends::ScaleOut::fresh("dedupe").await;
    let log = b.open_log(1 << 20).await;
    let first = log.append(vec![entry(1, "a", "s1", Some("k1")), entry(2, "a", "s1", None)]).await.unwrap();
    // The index row is gone, as if the node died right after JetStream's ack.
    let pool = idstream_server::store::pg::connect(&b.pg_url, 2).await.unwrap();
    pool.get().await.unwrap().execute("DELETE FROM log_index WHERE dedupe_key = 'k1'", &[]).await.unwrap();
    let again = log.append(vec![entry(3, "a", "s1", Some("k1"))]).await.unwrap();
    assert_eq!((again[0].offset, again[0].duplicate, &again[0].id), (1, true, &first[0].id));
    assert_eq!(log.head(), 2, "no second copy in the stream");
    // ...and the key is in PostgreSQL again, for after the window.
    let n: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM log_index WHERE dedupe_key = 'k1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Retention on JetStream: purge below an offset; reads past it say so through pruned_through.
    log.append((10..20).map(|i| entry(i, "t", "p", None)).collect()).await.unwrap();
    assert_eq!(log.prune(5, 1000).await.unwrap(), 5);
    assert_eq!(log.pruned_through(), 5);
    assert_eq!(log.read(0, 100, &Default::default()).await.unwrap()[0].offset, 6);
    let before = log.last_offset_before(i64::MAX / 2).await.unwrap();
    assert_eq!(before, log.head());
    assert_eq!(log.last_offset_before(0).await.unwrap(), 0);
    log.close().await;

    // Retention follows the config on the next start (the stream's max_age).
    let mut with_retention = b.clone();
    with_retention.max_age = std::time::Duration::from_secs(86_400);
    with_retention.open_log(1 << 20).await.close().await;
    let js = async_nats::jetstream::new(async_nats::connect(&b.nats_url).await.unwrap());
    let info = js.get_stream(&b.stream).await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.config.max_age, std::time::Duration::from_secs(86_400));
}

/// The embedded log answers reads near its head from the entries it committed last, in memory:
/// every read, before and after retention, gives what the database gives (a read-only open of
/// the same directory reads only the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tail_reads_from_memory_match_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path(), SqliteOptions::default()).unwrap();
    // 2,600 entries in batches of 100, two tenants, five sessions, a duplicate in each batch:
    // more than the log keeps in memory, so some reads start before what it keeps.
    for b in 0..26 {
        let mut batch: Vec<NewEntry> = (0..99)
            .map(|i| {
                let n = b * 100 + i;
                entry(n, ["a", "b"][n % 2], &format!("s{}", n % 5), Some(&format!("k{n}")))
            })
            .collect();
        batch.push(entry(b * 100 + 99, "a", "s0", Some(&format!("k{}", b * 100))));
        log.append(batch).await.unwrap();
    }
    let head = log.head();
    assert_eq!(head, 26 * 99);
    let db = SqliteLog::open_read_only(dir.path()).unwrap();
    let key = |v: Vec<idstream_server::log::LogEntry>| {
        v.into_iter()
            .map(|e| (e.offset, e.id, e.tenant, e.source, e.kind, e.partition_key, e.appended_at_us, e.event, e.body))
            .collect::<Vec<_>>()
    };
    let filters = [
        ReadFilter::default(),
        ReadFilter { tenant: Some("a".into()), partition_key: None },
        ReadFilter { tenant: None, partition_key: Some("s3".into()) },
        ReadFilter { tenant: Some("b".into()), partition_key: Some("s3".into()) },
        ReadFilter { tenant: Some("nobody".into()), partition_key: None },
    ];
    let compare = |after_values: Vec<u64>| {
        let (log, db, filters) = (&log, &db, &filters);
        async move {
            for after in after_values {
                for f in filters {
                    for limit in [1, 7, 1000, 5000] {
                        let (mem, disk) =
                            (log.read(after, limit, f).await.unwrap(), db.read(after, limit, f).await.unwrap());
                        assert_eq!(key(mem), key(disk), "after {after}, limit {limit}, {f:?}");
                    }
                }
            }
        }
    };
    compare(vec![
        0,
        1,
        99,
        500,
        545,
        546,
        547,
        600,
        head - 2049,
        head - 2048,
        head - 2047,
        head - 10,
        head - 1,
        head,
        head + 5,
    ])
    .await;
    // Retention removes the oldest entries, in memory as in the database.
    assert_eq!(log.prune(head - 100, usize::MAX).await.unwrap(), head - 100);
    compare(vec![0, head - 1000, head - 101, head - 100, head - 99, head - 1]).await;
    let left = log.read(0, 5000, &ReadFilter::default()).await.unwrap();
    assert_eq!(left.first().map(|e| e.offset), Some(head - 99));
    assert_eq!(left.len(), 100);
    log.close().await;
}
