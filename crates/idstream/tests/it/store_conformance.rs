//! The `Store` conformance suite: every method and op, with the answers both backends must
//! give (ordering, limits, filters, conflict and not-found messages, JSON round trips), that a
//! failed condition applies nothing, and that concurrent claims of one case have one winner.
//! Runs on the embedded SQLite store and on PostgreSQL (with a SQLite log to publish to);
//! PostgreSQL also gets its checkpoint fence and its outbox relay checked.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use idstream_server::log::sqlite::{SqliteLog, SqliteOptions};
use idstream_server::log::{Appended, EventLog, NewEntry, ReadFilter};
use idstream_server::store::postgres::PgStore;
use idstream_server::store::*;
use serde_json::json;

// The domain words as the suite writes them.
fn oc(s: &str) -> Outcome {
    Outcome::parse(s).unwrap()
}
fn st(s: &str) -> SessionState {
    SessionState::parse(s).unwrap()
}
fn rs(s: &str) -> ReviewStatus {
    ReviewStatus::parse(s).unwrap()
}
fn bk(s: &str) -> BlocklistKind {
    BlocklistKind::parse(s).unwrap()
}
use tokio_util::sync::CancellationToken;

/// A store under test, with what the suite needs to see its effects.
struct Backend {
    store: Arc<dyn Store>,
    /// Where the store publishes committed entries.
    log: Arc<dyn EventLog>,
    /// A consumer's checkpoint as `Op::SetCheckpoint` stored it.
    checkpoint: Box<dyn Fn(&'static str) -> BoxFuture<'static, Option<u64>> + Send + Sync>,
    /// PostgreSQL only moves a checkpoint forward (several nodes run decision workers).
    fenced_checkpoints: bool,
}

fn entry(n: usize, tenant: &str, partition: &str, dedupe: Option<&str>) -> NewEntry {
    NewEntry {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.into(),
        source: "test".into(),
        kind: "decision.made".into(),
        partition_key: partition.into(),
        dedupe_key: dedupe.map(str::to_owned),
        event: format!("{{\"n\":{n}}}").into_bytes(),
        body: n.is_multiple_of(2).then(|| format!("body-{n}").into_bytes()),
    }
}

fn decision(id: &str, tenant: &str, session: &str, event_id: Option<&str>, by: &str, at: i64) -> DecisionRecord {
    DecisionRecord {
        id: id.into(),
        tenant: tenant.into(),
        session_id: session.into(),
        subject: Some(format!("subject-of-{session}")),
        event_id: event_id.map(str::to_owned),
        event_offset: event_id.map(|_| 4_000_000_000),
        outcome: oc("approve"),
        score: 0.125,
        ruleset_version: event_id.map(|_| "v1".to_owned()),
        reasons: vec!["velocity.document".into(), "ok \"quoted\" ü".into()],
        decided_by: by.into(),
        decided_at_us: at,
        detail: json!({"fired": [{"rule": "r1", "values": {"x": 1.5, "big": 12345678901234_i64}}], "note": null}),
    }
}

fn review(id: &str, tenant: &str, session: &str, reasons: &[&str], opened_at: i64) -> ReviewRecord {
    ReviewRecord::open(
        id.into(),
        tenant.into(),
        session.into(),
        Some(format!("subject-of-{session}")),
        format!("decision-of-{id}"),
        reasons.iter().map(|r| r.to_string()).collect(),
        opened_at,
    )
}

fn upsert(
    tenant: &str,
    session: &str,
    subject: Option<&str>,
    provider_status: Option<&str>,
    state: &str,
    decision: Option<(&str, &str)>,
    now: i64,
) -> Op {
    Op::UpsertSession(SessionUpdate {
        tenant: tenant.into(),
        session_id: session.into(),
        subject: subject.map(str::to_owned),
        provider_status: provider_status.map(str::to_owned),
        state: st(state),
        decision: decision.map(|(o, d)| (oc(o), d.to_owned())),
        now_us: now,
    })
}

fn claim(tenant: &str, id: &str, actor: &str, now: i64) -> Op {
    Op::ClaimReview { tenant: tenant.into(), id: id.into(), actor: actor.into(), now_us: now }
}

fn resolve(tenant: &str, id: &str, actor: &str, outcome: &str, now: i64, force: bool) -> Op {
    Op::ResolveReview {
        tenant: tenant.into(),
        id: id.into(),
        actor: actor.into(),
        outcome: Some(oc(outcome)),
        note: format!("{actor} says {outcome}"),
        now_us: now,
        force,
    }
}

fn observation(tenant: &str, kind: &str, hash: &str, subject: &str, session: &str, at: i64) -> Observation {
    Observation {
        tenant: tenant.into(),
        kind: bk(kind),
        hash: hash.into(),
        subject: subject.into(),
        session_id: session.into(),
        seen_at_us: at,
    }
}

fn block(tenant: &str, kind: &str, hash: &str, reason: Option<&str>, by: &str, at: i64) -> BlockRecord {
    BlockRecord {
        tenant: tenant.into(),
        kind: bk(kind),
        hash: hash.into(),
        reason: reason.map(str::to_owned),
        added_by: by.into(),
        added_at_us: at,
    }
}

fn ruleset(tenant: &str, version: &str, label: &str, at: i64) -> RulesetRecord {
    RulesetRecord {
        tenant: tenant.into(),
        version: version.into(),
        label: label.into(),
        text: format!("rules of {version}"),
        created_by: "alice".into(),
        created_at_us: at,
    }
}

fn put_subject(tenant: &str, id: &str, attributes: serde_json::Value, actor: &str, now: i64) -> Op {
    Op::PutSubject { tenant: tenant.into(), id: id.into(), attributes, actor: actor.into(), now_us: now }
}

fn activate(tenant: &str, version: &str, actor: &str, now: i64) -> Op {
    Op::ActivateRuleset { tenant: tenant.into(), version: version.into(), actor: actor.into(), now_us: now }
}

fn checkpoint(offset: u64) -> Op {
    Op::SetCheckpoint { consumer: "decisions".into(), offset }
}

async fn apply(store: &Arc<dyn Store>, ops: Vec<Op>) -> Vec<Appended> {
    store.commit(Txn { entries: Vec::new(), ops }).await.expect("txn applies")
}

fn conflict(r: Result<Vec<Appended>, TxnError>) -> String {
    match r {
        Err(TxnError::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn not_found(r: Result<Vec<Appended>, TxnError>) -> String {
    match r {
        Err(TxnError::NotFound(m)) => m,
        other => panic!("expected not-found, got {other:?}"),
    }
}

async fn all_reviews(store: &Arc<dyn Store>, f: ReviewFilter) -> Vec<String> {
    store.reviews(f).await.unwrap().into_iter().map(|r| r.id).collect()
}

async fn suite(b: &Backend) {
    let store = &b.store;
    let log = &b.log;
    assert_eq!(log.head(), 0, "the suite starts on an empty log");

    // --- Commit: entries get dense offsets in order, are readable, and come with their ops.
    let first = vec![entry(1, "a", "s1", Some("k-1")), entry(2, "a", "s1", None), entry(3, "b", "s2", None)];
    let r = store
        .commit(Txn {
            entries: first.clone(),
            ops: vec![
                Op::PutDecision(decision("dec-0", "t0", "s0", Some("ev-0"), "rules", 1)),
                upsert("t0", "s0", Some("u0"), None, "approved", Some(("approve", "dec-0")), 1),
                checkpoint(3),
            ],
        })
        .await
        .unwrap();
    assert_eq!(r.iter().map(|a| (a.offset, a.duplicate)).collect::<Vec<_>>(), [(1, false), (2, false), (3, false)]);
    assert_eq!(
        r.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>()
    );
    let stored = log.read(0, 100, &ReadFilter::default()).await.unwrap();
    assert_eq!(stored.len(), 3);
    for (s, e) in stored.iter().zip(&first) {
        assert_eq!((&s.id, &s.tenant, &s.source, &s.kind), (&e.id, &e.tenant, &e.source, &e.kind));
        assert_eq!((&s.partition_key, &s.event, &s.body), (&e.partition_key, &e.event, &e.body));
    }
    assert!(store.decision("dec-0").await.unwrap().is_some());
    assert_eq!(store.session("t0", "s0").await.unwrap().unwrap().decision_id.as_deref(), Some("dec-0"));
    assert_eq!((b.checkpoint)("decisions").await, Some(3));
    // An entry whose dedupe key is stored answers with the original; the rest is applied.
    let again = vec![entry(4, "a", "s1", Some("k-1")), entry(5, "a", "s3", None)];
    let r = store.commit(Txn { entries: again.clone(), ops: vec![checkpoint(5)] }).await.unwrap();
    assert_eq!(r.iter().map(|a| (a.offset, a.duplicate)).collect::<Vec<_>>(), [(1, true), (4, false)]);
    assert_eq!(r[0].id, first[0].id, "a duplicate answers with the original's id");
    assert_eq!(r[1].id, again[1].id);
    assert_eq!(log.head(), 4);
    assert_eq!((b.checkpoint)("decisions").await, Some(5));
    assert!(store.commit(Txn::default()).await.unwrap().is_empty());
    assert!(apply(store, vec![upsert("t0", "s0", None, None, "approved", None, 2)]).await.is_empty());

    // --- Decisions. Two at the same time with ids whose byte order differs from a locale's.
    let (da, db) = (
        decision("dec-a", "t1", "s1", Some("ev-1"), "rules", 1000),
        decision("dec-B", "t1", "s1", Some("ev-2"), "rules", 2000),
    );
    let dc = decision("dec-a2", "t2", "s2", Some("ev-3"), "rules", 2000);
    let dd = decision("dec-d", "t1", "s1", None, "review:alice", 3000);
    let de = decision("dec-e", "t1", "s3", Some("ev-5"), "rules", 4000);
    apply(store, vec![Op::PutDecision(de.clone()), Op::PutDecision(dd.clone()), Op::PutDecision(dc.clone())]).await;
    apply(store, vec![Op::PutDecision(db.clone()), Op::PutDecision(da.clone())]).await;
    assert_eq!(store.decision("dec-a").await.unwrap(), Some(da.clone()), "every field round-trips");
    assert_eq!(store.decision("dec-d").await.unwrap(), Some(dd.clone()));
    assert_eq!(store.decision("no-such-decision").await.unwrap(), None);
    assert_eq!(store.session_decisions("t1", "s1").await.unwrap(), [da.clone(), db.clone(), dd.clone()]);
    assert!(store.session_decisions("t2", "s1").await.unwrap().is_empty());
    let between = |since, until, tenant: Option<&'static str>, after: Option<String>, limit| {
        let store = store.clone();
        async move {
            let got = store.decisions_between(since, until, tenant, after.as_deref(), limit).await.unwrap();
            got.into_iter().map(|d| (d.decided_at_us, d.id)).collect::<Vec<_>>()
        }
    };
    let ids_of = |v: &[(i64, String)]| v.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    // Rules' decisions only, by (time, id) in byte order; since inclusive, until exclusive.
    assert_eq!(ids_of(&between(1000, 5000, None, None, 100).await), ["dec-a", "dec-B", "dec-a2", "dec-e"]);
    assert_eq!(ids_of(&between(2000, 4000, None, None, 100).await), ["dec-B", "dec-a2"]);
    assert_eq!(ids_of(&between(1001, 4001, Some("t1"), None, 100).await), ["dec-B", "dec-e"]);
    assert_eq!(ids_of(&between(0, 5000, Some("t2"), None, 100).await), ["dec-a2"]);
    assert!(between(5000, 9000, None, None, 100).await.is_empty());
    assert!(between(1000, 5000, None, None, 0).await.is_empty());
    // Paging with after_id: each page starts after the last one's (time, id).
    let page1 = between(1000, 5000, None, None, 2).await;
    assert_eq!(ids_of(&page1), ["dec-a", "dec-B"]);
    let (t, last) = page1.last().unwrap().clone();
    let page2 = between(t, 5000, None, Some(last), 2).await;
    assert_eq!(ids_of(&page2), ["dec-a2", "dec-e"]);
    let (t, last) = page2.last().unwrap().clone();
    assert!(between(t, 5000, None, Some(last), 2).await.is_empty());
    // A second decision of one event fails the whole txn: nothing of it is applied or published.
    let head = log.head();
    let dup_entry = entry(6, "t1", "s-dup", None);
    let r = store
        .commit(Txn {
            entries: vec![dup_entry.clone()],
            ops: vec![
                upsert("t1", "s-dup", Some("u"), None, "approved", None, 10),
                Op::PutDecision(decision("dec-dup", "t1", "s-dup", Some("ev-1"), "rules", 10)),
            ],
        })
        .await;
    assert!(matches!(r, Err(TxnError::Log(_) | TxnError::Store(_))), "{r:?}");
    assert_eq!(store.decision("dec-dup").await.unwrap(), None);
    assert_eq!(store.session("t1", "s-dup").await.unwrap(), None);
    assert_eq!(log.head(), head);
    assert!(log.get(&dup_entry.id).await.unwrap().is_none());

    // --- Sessions: provider status and decision are kept when an update has none.
    apply(store, vec![upsert("t1", "sess-1", Some("u1"), Some("pending"), "in_progress", None, 100)]).await;
    let mut want = SessionRecord {
        tenant: "t1".into(),
        session_id: "sess-1".into(),
        subject: Some("u1".into()),
        provider_status: Some("pending".into()),
        state: st("in_progress"),
        outcome: None,
        decision_id: None,
        created_at_us: 100,
        updated_at_us: 100,
    };
    assert_eq!(store.session("t1", "sess-1").await.unwrap(), Some(want.clone()));
    apply(store, vec![upsert("t1", "sess-1", None, None, "approved", Some(("approve", "dec-x")), 200)]).await;
    (want.state, want.outcome, want.decision_id, want.updated_at_us) =
        (st("approved"), Some(oc("approve")), Some("dec-x".into()), 200);
    assert_eq!(store.session("t1", "sess-1").await.unwrap(), Some(want.clone()));
    apply(store, vec![upsert("t1", "sess-1", Some("u2"), Some("done"), "review", None, 300)]).await;
    (want.subject, want.provider_status, want.state, want.updated_at_us) =
        (Some("u2".into()), Some("done".into()), st("review"), 300);
    assert_eq!(store.session("t1", "sess-1").await.unwrap(), Some(want));
    assert_eq!(store.session("t2", "sess-1").await.unwrap(), None);
    // The subject's sessions follow the change (the embedded store updates its by-subject
    // index only when the subject changes): the session is u2's now, no longer u1's.
    let others = |subject: &str| LookupRequest {
        tenant: "t1".into(),
        session_id: "sess-other".into(),
        subject: subject.into(),
        block_hashes: Vec::new(),
        velocity_hashes: Vec::new(),
        velocity_since_us: 0,
        subject_id: None,
    };
    let found = store.lookup_at(vec![others("u2"), others("u1")], "").await.unwrap().0;
    assert_eq!(found[0].other_sessions, [("sess-1".to_owned(), Some(oc("approve")))]);
    assert!(found[1].other_sessions.is_empty(), "{:?}", found[1].other_sessions);
    // A session first seen without a subject gets it from a later update, which keeps it.
    apply(store, vec![upsert("t1", "sess-2", None, None, "in_progress", None, 400)]).await;
    assert_eq!(store.session("t1", "sess-2").await.unwrap().unwrap().subject, None);
    apply(store, vec![upsert("t1", "sess-2", Some("u3"), None, "in_progress", None, 410)]).await;
    apply(store, vec![upsert("t1", "sess-2", None, None, "approved", None, 420)]).await;
    assert_eq!(store.session("t1", "sess-2").await.unwrap().unwrap().subject.as_deref(), Some("u3"));
    let found = store.lookup_at(vec![others("u3")], "").await.unwrap().0;
    assert_eq!(found[0].other_sessions, [("sess-2".to_owned(), None)]);

    // --- Reviews: open, claim, resolve, with the conditions and their messages.
    apply(
        store,
        vec![
            Op::OpenReview(review("rv-1", "r1t", "rs1", &["velocity.document", "blocklist.phone"], 100)),
            Op::OpenReview(review("rv-2", "r1t", "rs2", &["manual"], 200)),
            Op::OpenReview(review("rv-3", "r2t", "rs3", &["velocity"], 300)),
            Op::OpenReview(review("rv-4", "r1t", "rs4", &["velocityx"], 400)),
        ],
    )
    .await;
    let rv1 = review("rv-1", "r1t", "rs1", &["velocity.document", "blocklist.phone"], 100);
    assert_eq!(store.review(None, "rv-1").await.unwrap(), Some(rv1.clone()));
    assert_eq!(store.review(Some("r1t"), "rv-1").await.unwrap(), Some(rv1.clone()));
    assert_eq!(store.review(Some("r2t"), "rv-1").await.unwrap(), None);
    assert_eq!(store.review(None, "rv-nope").await.unwrap(), None);
    apply(store, vec![claim("r1t", "rv-1", "alice", 150)]).await;
    let got = store.review(None, "rv-1").await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.claimed_by.as_deref(), got.claimed_at_us),
        ("claimed", Some("alice"), Some(150))
    );
    let claimed = |r: &ReviewRecord| (r.status, r.claimed_by.clone(), r.resolved_by.clone());
    assert_eq!(
        conflict(store.commit(Txn { entries: vec![], ops: vec![claim("r1t", "rv-1", "bob", 160)] }).await),
        "review `rv-1` is claimed by `alice`"
    );
    assert_eq!(
        claimed(&store.review(None, "rv-1").await.unwrap().unwrap()),
        (rs("claimed"), Some("alice".into()), None)
    );
    let txn = |op: Op| Txn { entries: vec![], ops: vec![op] };
    assert_eq!(not_found(store.commit(txn(claim("r1t", "rv-nope", "bob", 160))).await), "no review `rv-nope`");
    assert_eq!(
        not_found(store.commit(txn(claim("r1t", "rv-3", "bob", 160))).await),
        "no review `rv-3`",
        "other tenant's case"
    );
    assert_eq!(
        conflict(store.commit(txn(resolve("r1t", "rv-1", "bob", "approve", 170, false))).await),
        "review `rv-1` is claimed by `alice`"
    );
    assert_eq!(
        conflict(store.commit(txn(resolve("r1t", "rv-2", "bob", "approve", 170, false))).await),
        "review `rv-2` is open; claim it first"
    );
    assert_eq!(
        not_found(store.commit(txn(resolve("r1t", "rv-nope", "bob", "approve", 170, true))).await),
        "no review `rv-nope`"
    );
    // Claims change hands: assigned, released, escalated, returned when idle.
    let mv = |claimed: bool, holder: Option<&str>, to: Option<&str>, now: i64| MoveReview {
        tenant: "r1t".into(),
        id: "rv-2".into(),
        claimed,
        holder: holder.map(Into::into),
        claimed_before_us: None,
        max_level: None,
        to: to.map(Into::into),
        level: None,
        now_us: now,
    };
    let state = |r: ReviewRecord| (r.status, r.claimed_by, r.claimed_at_us, r.level);
    assert_eq!(
        conflict(store.commit(txn(Op::MoveReview(mv(true, None, None, 180)))).await),
        "review `rv-2` is open; claim it first",
        "an open case cannot be released"
    );
    apply(store, vec![Op::MoveReview(mv(false, None, Some("bob"), 181))]).await;
    assert_eq!(
        state(store.review(None, "rv-2").await.unwrap().unwrap()),
        (rs("claimed"), Some("bob".into()), Some(181), 1)
    );
    assert_eq!(
        conflict(store.commit(txn(Op::MoveReview(mv(true, Some("carol"), None, 182)))).await),
        "review `rv-2` is claimed by `bob`",
        "only the holder releases"
    );
    let escalate = MoveReview { max_level: Some(1), level: Some(2), ..mv(true, Some("bob"), None, 182) };
    apply(store, vec![Op::MoveReview(escalate.clone())]).await;
    assert_eq!(state(store.review(None, "rv-2").await.unwrap().unwrap()), (rs("open"), None, None, 2));
    apply(store, vec![claim("r1t", "rv-2", "dave", 183)]).await;
    assert_eq!(
        conflict(store.commit(txn(Op::MoveReview(MoveReview { holder: Some("dave".into()), ..escalate }))).await),
        "review `rv-2` is claimed by `dave`",
        "a second-level case is not escalated again"
    );
    let idle = |before: i64| MoveReview { claimed_before_us: Some(before), ..mv(true, None, None, 190) };
    assert!(store.commit(txn(Op::MoveReview(idle(182)))).await.is_err(), "claimed after the cut-off: kept");
    apply(store, vec![Op::MoveReview(idle(183))]).await;
    assert_eq!(state(store.review(None, "rv-2").await.unwrap().unwrap()), (rs("open"), None, None, 2));
    assert_eq!(
        not_found(
            store
                .commit(txn(Op::MoveReview(MoveReview { id: "rv-nope".into(), ..mv(false, None, Some("x"), 1) })))
                .await
        ),
        "no review `rv-nope`"
    );

    apply(store, vec![resolve("r1t", "rv-1", "alice", "decline", 250, false)]).await;
    let got = store.review(Some("r1t"), "rv-1").await.unwrap().unwrap();
    assert_eq!(
        got,
        ReviewRecord {
            status: rs("resolved"),
            claimed_by: Some("alice".into()),
            claimed_at_us: Some(150),
            resolved_by: Some("alice".into()),
            resolved_at_us: Some(250),
            outcome: Some(oc("decline")),
            note: Some("alice says decline".into()),
            ..rv1.clone()
        }
    );
    let resolved_msg = "review `rv-1` was already resolved by `alice`";
    assert_eq!(conflict(store.commit(txn(resolve("r1t", "rv-1", "alice", "approve", 260, false))).await), resolved_msg);
    assert_eq!(
        conflict(store.commit(txn(resolve("r1t", "rv-1", "rules", "approve", 260, true))).await),
        resolved_msg,
        "force never reopens"
    );
    assert_eq!(conflict(store.commit(txn(claim("r1t", "rv-1", "carol", 260))).await), resolved_msg);
    // `force`: a system re-check closes an open case it decides itself.
    apply(store, vec![resolve("r1t", "rv-2", "rules", "approve", 260, true)]).await;
    assert_eq!(
        claimed(&store.review(None, "rv-2").await.unwrap().unwrap()),
        (rs("resolved"), None, Some("rules".into()))
    );
    apply(
        store,
        vec![
            Op::OpenReview(review("rv-5", "r1t", "rs5", &["blocklist"], 450)),
            resolve("r1t", "rv-5", "blocklist:ops", "decline", 460, true),
        ],
    )
    .await;
    // The analyst's resolution, latest first; the rules' and the blocklist's do not count.
    assert_eq!(store.resolved_review_for_session("r1t", "rs1").await.unwrap().map(|r| r.id), Some("rv-1".into()));
    assert_eq!(store.resolved_review_for_session("r1t", "rs2").await.unwrap(), None);
    assert_eq!(store.resolved_review_for_session("r1t", "rs5").await.unwrap(), None);
    assert_eq!(store.resolved_review_for_session("r1t", "rs4").await.unwrap(), None, "open, not resolved");
    assert_eq!(store.resolved_review_for_session("r2t", "rs1").await.unwrap(), None);
    apply(
        store,
        vec![
            Op::OpenReview(review("rv-6", "r1t", "rs1", &["manual"], 500)),
            claim("r1t", "rv-6", "dave", 550),
            resolve("r1t", "rv-6", "dave", "approve", 600, false),
        ],
    )
    .await;
    assert_eq!(store.resolved_review_for_session("r1t", "rs1").await.unwrap().map(|r| r.id), Some("rv-6".into()));
    // Filters of GET /v1/reviews, oldest first.
    let f = |tenant: Option<&str>,
             status: Option<&str>,
             reason: Option<&str>,
             before: Option<i64>,
             session: Option<&str>,
             limit| ReviewFilter {
        tenant: tenant.map(str::to_owned),
        status: status.map(rs),
        reason: reason.map(str::to_owned),
        opened_before_us: before,
        session_id: session.map(str::to_owned),
        after: None,
        limit,
    };
    assert_eq!(
        all_reviews(store, f(None, None, None, None, None, 100)).await,
        ["rv-1", "rv-2", "rv-3", "rv-4", "rv-5", "rv-6"]
    );
    assert_eq!(
        all_reviews(store, f(Some("r1t"), None, None, None, None, 100)).await,
        ["rv-1", "rv-2", "rv-4", "rv-5", "rv-6"]
    );
    assert_eq!(all_reviews(store, f(Some("r2t"), None, None, None, None, 100)).await, ["rv-3"]);
    assert_eq!(all_reviews(store, f(None, Some("open"), None, None, None, 100)).await, ["rv-3", "rv-4"]);
    assert_eq!(all_reviews(store, f(Some("r1t"), Some("resolved"), None, None, None, 2)).await, ["rv-1", "rv-2"]);
    // A reason matches itself and its sub-reasons, not a longer word.
    assert_eq!(all_reviews(store, f(None, None, Some("velocity"), None, None, 100)).await, ["rv-1", "rv-3"]);
    assert_eq!(all_reviews(store, f(None, None, Some("blocklist"), None, None, 100)).await, ["rv-1", "rv-5"]);
    assert_eq!(all_reviews(store, f(None, None, Some("blocklist.phone"), None, None, 100)).await, ["rv-1"]);
    assert_eq!(all_reviews(store, f(None, None, Some("velocity"), None, None, 1)).await, ["rv-1"]);
    assert_eq!(all_reviews(store, f(Some("r1t"), None, Some("velocity"), None, None, 100)).await, ["rv-1"]);
    assert!(all_reviews(store, f(None, None, Some("veloc"), None, None, 100)).await.is_empty());
    assert_eq!(all_reviews(store, f(None, None, None, Some(300), None, 100)).await, ["rv-1", "rv-2"]);
    assert_eq!(all_reviews(store, f(None, None, None, None, Some("rs1"), 100)).await, ["rv-1", "rv-6"]);
    assert_eq!(all_reviews(store, f(None, None, None, None, None, 2)).await, ["rv-1", "rv-2"]);
    assert!(all_reviews(store, f(None, None, None, None, None, 0)).await.is_empty());
    // Keyset pages: walking pages of 1 and of 2 gives the whole listing once, in order; a tie on
    // `opened_at` is broken by id.
    for (tenant, size) in [(None, 1), (None, 2), (Some("r1t"), 2)] {
        let (mut walked, mut after) = (Vec::new(), None);
        loop {
            let page = store
                .reviews(ReviewFilter { after: after.clone(), ..f(tenant, None, None, None, None, size) })
                .await
                .unwrap();
            assert!(page.len() <= size);
            after = page.last().map(|r| (r.opened_at_us, r.id.clone()));
            walked.extend(page.into_iter().map(|r| r.id));
            if after.is_none() {
                break;
            }
        }
        assert_eq!(walked, all_reviews(store, f(tenant, None, None, None, None, 100)).await, "{tenant:?} by {size}");
    }
    let after =
        |at: i64, id: &str| ReviewFilter { after: Some((at, id.to_owned())), ..f(None, None, None, None, None, 100) };
    assert_eq!(all_reviews(store, after(500, "rv-5")).await, ["rv-6"]);
    assert!(all_reviews(store, after(500, "rv-6")).await.is_empty());
    assert_eq!(
        all_reviews(
            store,
            ReviewFilter {
                after: Some((0, String::new())),
                ..f(None, Some("open"), Some("velocity"), None, None, 100)
            }
        )
        .await,
        ["rv-3"]
    );

    // --- A failed condition applies nothing of its txn: no state, no entries, no checkpoint.
    let head = log.head();
    let lost = entry(7, "t1", "sess-f", Some("k-lost"));
    let r = store
        .commit(Txn {
            entries: vec![lost.clone()],
            ops: vec![
                Op::PutDecision(decision("dec-f", "t1", "sess-f", Some("ev-f"), "rules", 1500)),
                upsert("t1", "sess-f", Some("u"), None, "review", Some(("review", "dec-f")), 1500),
                Op::OpenReview(review("rv-f", "r1t", "sess-f", &["manual"], 1500)),
                Op::AddBlock(block("t1", "document", "h-f", None, "alice", 1500)),
                Op::Observe(vec![observation("r1t", "document", "h-f", "u", "sess-f", 1500)]),
                put_subject("t1", "u-f", json!({"a": 1}), "alice", 1500),
                Op::PutRuleset(ruleset("t1", "v-f", "lost", 1500)),
                checkpoint(1000),
                claim("r1t", "rv-1", "mallory", 1500),
            ],
        })
        .await;
    assert_eq!(conflict(r), resolved_msg);
    assert_eq!(store.decision("dec-f").await.unwrap(), None);
    assert_eq!(store.session("t1", "sess-f").await.unwrap(), None);
    assert_eq!(store.review(None, "rv-f").await.unwrap(), None);
    assert!(store.blocks("t1", bk("document"), 100).await.unwrap().is_empty());
    assert!(store.open_sessions_with("r1t", bk("document"), "h-f").await.unwrap().is_empty());
    assert_eq!(store.subject("t1", "u-f").await.unwrap(), None);
    assert_eq!(store.ruleset("t1", "v-f").await.unwrap(), None);
    assert_eq!((b.checkpoint)("decisions").await, Some(5));
    assert_eq!(log.head(), head);
    assert!(log.get(&lost.id).await.unwrap().is_none());
    // Its dedupe key was not stored either: the same entry commits now.
    let r = store.commit(Txn { entries: vec![lost.clone()], ops: vec![] }).await.unwrap();
    assert_eq!((r[0].offset, r[0].duplicate), (head + 1, false));

    // --- Sessions with an open (or claimed) case in which a value was seen.
    apply(
        store,
        vec![
            Op::Observe(vec![
                observation("o1", "document", "hd", "u1", "os1", 100),
                observation("o1", "document", "hd", "u2", "os2", 100),
                observation("o1", "document", "hd", "u3", "os3", 100),
                observation("o1", "phone", "hp", "u1", "os1", 100),
                observation("o2", "document", "hd", "u9", "os9", 100),
            ]),
            Op::OpenReview(review("rv-o1", "o1", "os1", &["velocity"], 10)),
            Op::OpenReview(review("rv-o2", "o1", "os2", &["velocity"], 20)),
            Op::OpenReview(review("rv-o3", "o1", "os3", &["velocity"], 30)),
            Op::OpenReview(review("rv-o9", "o2", "os9", &["velocity"], 5)),
            claim("o1", "rv-o2", "ann", 40),
            resolve("o1", "rv-o3", "rules", "approve", 50, true),
        ],
    )
    .await;
    let sorted_ids = |mut v: Vec<ReviewRecord>| {
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(sorted_ids(store.open_sessions_with("o1", bk("document"), "hd").await.unwrap()), ["rv-o1", "rv-o2"]);
    assert_eq!(sorted_ids(store.open_sessions_with("o1", bk("phone"), "hp").await.unwrap()), ["rv-o1"]);
    assert!(store.open_sessions_with("o1", bk("email"), "hd").await.unwrap().is_empty());
    assert_eq!(sorted_ids(store.open_sessions_with("o2", bk("document"), "hd").await.unwrap()), ["rv-o9"]);
    let o2 = store
        .open_sessions_with("o1", bk("document"), "hd")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == "rv-o2")
        .unwrap();
    assert_eq!((o2.status.as_str(), o2.claimed_by.as_deref()), ("claimed", Some("ann")));

    // --- Blocklist: newest first, re-adding updates, removing a missing entry is not-found.
    apply(
        store,
        vec![
            Op::AddBlock(block("b1", "document", "h1", Some("fraud"), "alice", 100)),
            Op::AddBlock(block("b1", "document", "h2", None, "bob", 200)),
            Op::AddBlock(block("b1", "phone", "h3", None, "bob", 300)),
            Op::AddBlock(block("b2", "document", "h1", None, "bob", 400)),
        ],
    )
    .await;
    assert_eq!(
        store.blocks("b1", bk("document"), 10).await.unwrap(),
        [block("b1", "document", "h2", None, "bob", 200), block("b1", "document", "h1", Some("fraud"), "alice", 100)]
    );
    assert_eq!(store.blocks("b1", bk("document"), 1).await.unwrap(), [block("b1", "document", "h2", None, "bob", 200)]);
    assert!(store.blocks("b1", bk("email"), 10).await.unwrap().is_empty());
    assert_eq!(
        store.block("b1", bk("document"), "h1").await.unwrap(),
        Some(block("b1", "document", "h1", Some("fraud"), "alice", 100))
    );
    assert_eq!(store.block("b2", bk("document"), "h2").await.unwrap(), None, "another tenant's entry");
    assert_eq!(store.block("b1", bk("phone"), "h1").await.unwrap(), None, "another list's entry");
    assert!(store.blocks("b1", bk("document"), 0).await.unwrap().is_empty());
    apply(store, vec![Op::AddBlock(block("b1", "document", "h1", Some("again"), "carol", 500))]).await;
    assert_eq!(
        store.blocks("b1", bk("document"), 10).await.unwrap()[0],
        block("b1", "document", "h1", Some("again"), "carol", 500)
    );
    let remove = |tenant: &str, kind: &str, hash: &str| Txn {
        entries: vec![],
        ops: vec![Op::RemoveBlock { tenant: tenant.into(), kind: bk(kind), hash: hash.into() }],
    };
    store.commit(remove("b1", "document", "h2")).await.unwrap();
    assert_eq!(not_found(store.commit(remove("b1", "document", "h2")).await), "no document blocklist entry `h2`");
    assert_eq!(not_found(store.commit(remove("b1", "email", "h1")).await), "no email blocklist entry `h1`");
    assert_eq!(not_found(store.commit(remove("b3", "document", "h1")).await), "no document blocklist entry `h1`");
    assert_eq!(
        store.blocks("b1", bk("document"), 10).await.unwrap(),
        [block("b1", "document", "h1", Some("again"), "carol", 500)]
    );
    assert_eq!(store.blocks("b2", bk("document"), 10).await.unwrap().len(), 1);

    // --- Subjects: attributes replaced as a whole, JSON kept exactly.
    let attrs = json!({"tier": "gold", "score": 0.5, "tags": ["a", "b"], "nested": {"n": null, "ü": "✓"}});
    apply(store, vec![put_subject("s1t", "u1", attrs.clone(), "alice", 100)]).await;
    let want = SubjectRecord {
        tenant: "s1t".into(),
        id: "u1".into(),
        attributes: attrs,
        updated_by: "alice".into(),
        updated_at_us: 100,
    };
    assert_eq!(store.subject("s1t", "u1").await.unwrap(), Some(want));
    apply(store, vec![put_subject("s1t", "u1", json!({"tier": "silver"}), "bob", 200)]).await;
    let got = store.subject("s1t", "u1").await.unwrap().unwrap();
    assert_eq!((got.attributes, got.updated_by.as_str(), got.updated_at_us), (json!({"tier": "silver"}), "bob", 200));
    assert_eq!(store.subject("s1t", "nobody").await.unwrap(), None);
    assert_eq!(store.subject("other", "u1").await.unwrap(), None);

    // --- Rulesets: versions are immutable; activation needs the version uploaded.
    assert!(store.active_rulesets().await.unwrap().is_empty());
    apply(
        store,
        vec![Op::PutRuleset(ruleset("rs-t", "v1", "first", 100)), Op::PutRuleset(ruleset("rs-t", "v2", "second", 200))],
    )
    .await;
    apply(store, vec![Op::PutRuleset(ruleset("rs-t", "v1", "changed", 300))]).await;
    assert_eq!(store.ruleset("rs-t", "v1").await.unwrap(), Some(ruleset("rs-t", "v1", "first", 100)));
    assert_eq!(
        store.rulesets("rs-t").await.unwrap(),
        [ruleset("rs-t", "v2", "second", 200), ruleset("rs-t", "v1", "first", 100)]
    );
    assert_eq!(store.ruleset("rs-t", "v3").await.unwrap(), None);
    assert_eq!(store.ruleset("other", "v1").await.unwrap(), None);
    assert!(store.rulesets("other").await.unwrap().is_empty());
    apply(store, vec![activate("rs-t", "v1", "alice", 300)]).await;
    let active = |version: &str, by: &str, at: i64| ActiveRuleset {
        version: version.into(),
        activated_by: by.into(),
        activated_at_us: at,
    };
    assert_eq!(store.active_rulesets().await.unwrap(), [("rs-t".to_owned(), active("v1", "alice", 300))]);
    let r = store
        .commit(Txn {
            entries: vec![],
            ops: vec![Op::PutRuleset(ruleset("rs-t", "v3", "third", 350)), activate("rs-t", "v9", "bob", 350)],
        })
        .await;
    assert_eq!(not_found(r), "no ruleset version `v9` (upload it first)");
    assert_eq!(store.ruleset("rs-t", "v3").await.unwrap(), None, "the failed txn's upload is not applied");
    assert_eq!(store.active_rulesets().await.unwrap(), [("rs-t".to_owned(), active("v1", "alice", 300))]);
    assert_eq!(
        not_found(store.commit(txn(activate("rs-u", "v1", "bob", 350))).await),
        "no ruleset version `v1` (upload it first)",
        "per tenant"
    );
    // Activation sees a version uploaded earlier in the same txn.
    apply(
        store,
        vec![
            activate("rs-t", "v2", "bob", 400),
            Op::PutRuleset(ruleset("rs-u", "v1", "u", 400)),
            activate("rs-u", "v1", "carol", 400),
        ],
    )
    .await;
    let mut got = store.active_rulesets().await.unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, [("rs-t".to_owned(), active("v2", "bob", 400)), ("rs-u".to_owned(), active("v1", "carol", 400))]);

    // --- Lookup: a batch of requests, each answered as if alone.
    apply(
        store,
        vec![
            Op::AddBlock(block("l1", "document", "hb-doc", None, "ops", 1)),
            Op::AddBlock(block("l1", "email", "hb-mail", None, "ops", 1)),
            Op::AddBlock(block("l2", "phone", "hb-phone", None, "ops", 1)),
            Op::Observe(vec![
                observation("l1", "document", "hv", "x", "lx", 1000),
                observation("l1", "document", "hv", "y", "ly", 5000),
                observation("l1", "document", "hv", "me", "lme", 5000),
                observation("l1", "document", "hv", "y", "ly2", 6000),
                observation("l1", "phone", "hvp", "z", "lz", 5000),
                observation("l2", "document", "hv", "w", "lw", 5000),
            ]),
            // A later observation of the same (value, session) replaces the earlier one.
            Op::Observe(vec![
                observation("l1", "document", "hv2", "old", "lq", 9000),
                observation("l1", "document", "hv2", "new", "lq", 9001),
            ]),
            upsert("l1", "lme", Some("me"), None, "in_progress", None, 1),
            upsert("l1", "l-other-a", Some("me"), None, "in_progress", None, 1),
            upsert("l1", "l-other-B", Some("me"), None, "declined", Some(("decline", "dec-l")), 1),
            upsert("l1", "lx", Some("x"), None, "in_progress", None, 1),
            upsert("l2", "l-me2", Some("me"), None, "in_progress", None, 1),
            put_subject("l1", "me", json!({"vip": true, "since": 2019}), "crm", 1),
            Op::OpenReview(review("rv-l1", "l1", "lme", &["manual"], 10)),
            Op::OpenReview(review("rv-l2", "l1", "lme", &["velocity"], 20)),
            Op::OpenReview(review("rv-l3", "l1", "lme", &["velocity"], 30)),
            claim("l1", "rv-l2", "ann", 25),
            resolve("l1", "rv-l3", "rules", "approve", 35, true),
        ],
    )
    .await;
    // Identity observations by value (newest first, within the tenant) and by session.
    let ids = |kind: Option<&str>, hash: Option<&str>, session: Option<&str>| IdentityQuery {
        tenant: "l1".into(),
        kind: kind.map(bk),
        hash: hash.map(Into::into),
        session_id: session.map(Into::into),
        limit: 100,
    };
    let seen = |v: Vec<Observation>| v.into_iter().map(|o| (o.session_id, o.subject, o.seen_at_us)).collect::<Vec<_>>();
    let by_value = seen(store.identities(ids(Some("document"), Some("hv"), None)).await.unwrap());
    assert_eq!(by_value[0], ("ly2".to_owned(), "y".to_owned(), 6000));
    assert_eq!(by_value.len(), 4, "{by_value:?}");
    assert!(by_value.iter().all(|(s, _, _)| s != "lw"), "another tenant's");
    let by_session = store.identities(ids(None, None, Some("lq"))).await.unwrap();
    assert_eq!(by_session.len(), 1);
    assert_eq!((by_session[0].kind, by_session[0].subject.as_str()), (bk("document"), "new"));
    let limited =
        store.identities(IdentityQuery { limit: 2, ..ids(Some("document"), Some("hv"), None) }).await.unwrap();
    assert_eq!(limited.len(), 2);
    // By session across several commits: every value the session was seen with once, at its
    // latest sighting, newest first; filters and the limit apply; another tenant's session of
    // the same id and another session in the same op stay apart.
    apply(
        store,
        vec![Op::Observe(vec![
            observation("l1", "document", "hm-doc", "m", "lmulti", 100),
            observation("l1", "phone", "hm-phone", "m", "lmulti", 100),
            observation("l1", "phone", "hm-phone", "m2", "lmulti2", 100),
        ])],
    )
    .await;
    apply(
        store,
        vec![
            Op::Observe(vec![
                observation("l1", "email", "hm-mail", "m", "lmulti", 200),
                observation("l1", "document", "hm-doc", "m", "lmulti", 300),
            ]),
            Op::Observe(vec![observation("l2", "face", "hm-face", "m", "lmulti", 400)]),
        ],
    )
    .await;
    let kinds =
        |v: Vec<Observation>| v.into_iter().map(|o| (o.kind.as_str(), o.hash, o.seen_at_us)).collect::<Vec<_>>();
    assert_eq!(
        kinds(store.identities(ids(None, None, Some("lmulti"))).await.unwrap()),
        [("document", "hm-doc".into(), 300), ("email", "hm-mail".into(), 200), ("phone", "hm-phone".into(), 100)]
    );
    assert_eq!(
        kinds(store.identities(ids(Some("phone"), None, Some("lmulti"))).await.unwrap()),
        [("phone", "hm-phone".into(), 100)]
    );
    assert_eq!(kinds(store.identities(ids(None, Some("hm-mail"), Some("lmulti"))).await.unwrap()).len(), 1);
    assert!(store.identities(ids(None, Some("hm-face"), Some("lmulti"))).await.unwrap().is_empty(), "another tenant's");
    assert_eq!(store.identities(IdentityQuery { limit: 2, ..ids(None, None, Some("lmulti")) }).await.unwrap().len(), 2);
    assert_eq!(
        kinds(store.identities(ids(None, None, Some("lmulti2"))).await.unwrap()),
        [("phone", "hm-phone".into(), 100)]
    );
    assert!(store.identities(ids(None, None, Some("l-never-seen"))).await.unwrap().is_empty());

    let pairs = |v: &[(&str, &str)]| v.iter().map(|(k, h)| (bk(k), h.to_string())).collect::<Vec<_>>();
    let req = |tenant: &str, session: &str, subject: &str, since: i64, subject_id: Option<&str>| LookupRequest {
        tenant: tenant.into(),
        session_id: session.into(),
        subject: subject.into(),
        block_hashes: Vec::new(),
        velocity_hashes: Vec::new(),
        velocity_since_us: since,
        subject_id: subject_id.map(str::to_owned),
    };
    let reqs = vec![
        LookupRequest {
            block_hashes: pairs(&[
                ("document", "hb-doc"),
                ("phone", "hb-doc"),
                ("email", "hb-mail"),
                ("document", "hb-other"),
                ("email", "hb-mail"),
            ]),
            velocity_hashes: pairs(&[("document", "hv"), ("phone", "hv-none"), ("phone", "hvp")]),
            ..req("l1", "lme", "me", 2000, Some("me"))
        },
        LookupRequest {
            block_hashes: pairs(&[("phone", "hb-phone")]),
            velocity_hashes: pairs(&[("document", "hv"), ("document", "hv2")]),
            ..req("l1", "lme", "me", 0, None)
        },
        LookupRequest {
            block_hashes: pairs(&[("phone", "hb-phone"), ("document", "hb-doc")]),
            velocity_hashes: pairs(&[("document", "hv")]),
            ..req("l2", "l-me2", "me", 0, Some("me"))
        },
        req("l1", "nobody", "nobody", 0, Some("nobody")),
    ];
    let found = store.lookup_at(reqs, "").await.unwrap().0;
    assert_eq!(found.len(), 4);
    let velocity = |r: &LookupResult| {
        r.velocity
            .iter()
            .map(|(k, s)| {
                let mut s = s.clone();
                s.sort();
                (k.as_str().to_owned(), s)
            })
            .collect::<Vec<_>>()
    };
    let v = |k: &str, s: &[&str]| (k.to_owned(), s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let kinds = |ks: &[BlocklistKind]| ks.iter().map(|k| k.as_str()).collect::<Vec<_>>();
    assert_eq!(kinds(&found[0].blocked), ["document", "email"], "each blocked kind once, in asking order");
    assert_eq!(
        velocity(&found[0]),
        [v("document", &["y"]), v("phone", &[]), v("phone", &["z"])],
        "other subjects since the window"
    );
    assert_eq!(
        found[0].other_sessions,
        [("l-other-B".to_owned(), Some(oc("decline"))), ("l-other-a".to_owned(), None)]
    );
    assert_eq!(found[0].subject_attributes, Some(json!({"vip": true, "since": 2019})));
    let open = found[0].open_review.clone().expect("the session's open case");
    assert_eq!((open.id.as_str(), open.status.as_str(), open.claimed_by.as_deref()), ("rv-l2", "claimed", Some("ann")));
    assert!(found[1].blocked.is_empty(), "another tenant's block");
    assert_eq!(velocity(&found[1]), [v("document", &["x", "y"]), v("document", &["new"])]);
    assert_eq!(found[1].subject_attributes, None, "no subject id asked");
    assert_eq!(found[1].open_review.as_ref().map(|r| r.id.as_str()), Some("rv-l2"));
    assert_eq!(kinds(&found[2].blocked), ["phone"]);
    assert_eq!(velocity(&found[2]), [v("document", &["w"])]);
    assert!(found[2].other_sessions.is_empty(), "its own session is not another");
    assert_eq!((found[2].subject_attributes.clone(), found[2].open_review.clone()), (None, None));
    assert!(found[3].blocked.is_empty() && found[3].velocity.is_empty() && found[3].other_sessions.is_empty());
    assert_eq!((found[3].subject_attributes.clone(), found[3].open_review.clone()), (None, None));
    assert!(store.lookup_at(Vec::new(), "").await.unwrap().0.is_empty());

    // --- Checkpoints committed with a txn.
    if b.fenced_checkpoints {
        // Only forward: a stale worker's batch is refused whole.
        for stale in [5, 4] {
            let e = entry(8, "t1", "s-stale", None);
            let r = store
                .commit(Txn {
                    entries: vec![e.clone()],
                    ops: vec![
                        Op::PutDecision(decision("dec-stale", "t1", "s-stale", Some("ev-stale"), "rules", 1)),
                        checkpoint(stale),
                    ],
                })
                .await;
            assert_eq!(conflict(r), "checkpoint `decisions` is already at 5: another worker has processed this batch");
            assert_eq!(store.decision("dec-stale").await.unwrap(), None);
            assert!(log.get(&e.id).await.unwrap().is_none());
        }
        assert_eq!((b.checkpoint)("decisions").await, Some(5));
    } else {
        // The embedded store has one worker; its checkpoint is simply set.
        apply(store, vec![checkpoint(4)]).await;
        assert_eq!((b.checkpoint)("decisions").await, Some(4));
    }
    apply(store, vec![checkpoint(6), Op::SetCheckpoint { consumer: "other".into(), offset: 1 }]).await;
    assert_eq!(((b.checkpoint)("decisions").await, (b.checkpoint)("other").await), (Some(6), Some(1)));
    assert_eq!((b.checkpoint)("never").await, None);

    // --- Ten analysts claim one case at once: exactly one wins; the others are told who.
    apply(store, vec![Op::OpenReview(review("rv-c", "c1", "cs", &["manual"], 1))]).await;
    let claims = (0..10).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            (i, store.commit(Txn { entries: vec![], ops: vec![claim("c1", "rv-c", &format!("analyst-{i}"), i)] }).await)
        })
    });
    let mut winners = Vec::new();
    let mut messages = Vec::new();
    for t in claims.collect::<Vec<_>>() {
        match t.await.unwrap() {
            (i, Ok(_)) => winners.push(format!("analyst-{i}")),
            (_, r) => messages.push(conflict(r)),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?} {messages:?}");
    let winner = &winners[0];
    assert!(messages.iter().all(|m| *m == format!("review `rv-c` is claimed by `{winner}`")), "{messages:?}");
    assert_eq!(store.review(None, "rv-c").await.unwrap().unwrap().claimed_by.as_ref(), Some(winner));

    notify_records(b).await;
}

/// Notification endpoints and delivery attempts (`Op::Notify`).
async fn notify_records(b: &Backend) {
    use idstream_server::store::notify::{AttemptRecord, EndpointRecord, NotifyOp};
    let store = &b.store;
    let ep = |id: &str, tenant: &str| EndpointRecord {
        id: id.into(),
        tenant: tenant.into(),
        url: "https://hooks.example.com/x".into(),
        kinds: vec!["decision.*".into()],
        secrets: vec!["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()],
        outcomes: Some(vec!["approve".into()]),
        timeout_secs: 7,
        headers: [("x-team".to_owned(), "kyc".to_owned())].into(),
        rate_limit_per_sec: Some(2.5),
        disabled: false,
        disabled_reason: None,
        created_by: "ops".into(),
        created_at_us: 10,
        updated_at_us: 10,
    };
    let n = |op: NotifyOp| Op::Notify(op);
    apply(store, vec![n(NotifyOp::PutEndpoint(ep("ep-b", "acme"))), n(NotifyOp::PutEndpoint(ep("ep-a", "beta")))])
        .await;
    let dup = store.commit(Txn { entries: vec![], ops: vec![n(NotifyOp::PutEndpoint(ep("ep-b", "beta")))] }).await;
    assert_eq!(conflict(dup), "an endpoint `ep-b` exists");
    assert_eq!(store.endpoint("ep-b").await.unwrap(), Some(ep("ep-b", "acme")));
    let ids = |v: Vec<EndpointRecord>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(store.endpoints(None).await.unwrap()), ["ep-b", "ep-a"]);
    assert_eq!(ids(store.endpoints(Some("beta")).await.unwrap()), ["ep-a"]);
    // Updates are scoped to the tenant; absent rows are not found.
    let mut changed = ep("ep-b", "acme");
    changed.disabled = true;
    changed.disabled_reason = Some("410".into());
    changed.outcomes = None;
    changed.secrets.push("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    changed.updated_at_us = 20;
    let wrong = n(NotifyOp::UpdateEndpoint { tenant: Some("beta".into()), endpoint: changed.clone() });
    assert_eq!(not_found(store.commit(Txn { entries: vec![], ops: vec![wrong] }).await), "no endpoint `ep-b`");
    apply(store, vec![n(NotifyOp::UpdateEndpoint { tenant: Some("acme".into()), endpoint: changed.clone() })]).await;
    assert_eq!(store.endpoint("ep-b").await.unwrap(), Some(changed));
    // Attempts: newest first, pages by seq, the dead-letter filter.
    for (i, outcome) in ["retrying", "failed", "delivered"].into_iter().enumerate() {
        let a = AttemptRecord {
            seq: 0,
            endpoint: "ep-b".into(),
            event_id: format!("ev-{i}"),
            event_offset: 40 + i as u64,
            kind: "decision.made".into(),
            session_id: "s1".into(),
            webhook_id: format!("msg_{i}"),
            attempt: i as u32 + 1,
            status: (i > 0).then_some(500),
            latency_ms: 12,
            error: (i < 2).then(|| "HTTP 500: nope".to_owned()),
            outcome: outcome.into(),
            next_attempt_at_us: (i == 0).then_some(99),
            at_us: 50 + i as i64,
        };
        apply(store, vec![n(NotifyOp::RecordAttempt(a))]).await;
    }
    let all = store.attempts("ep-b", None, false, 10).await.unwrap();
    assert_eq!(all.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(), ["ev-2", "ev-1", "ev-0"]);
    assert!(all[0].seq > all[1].seq && all[1].seq > all[2].seq);
    assert_eq!((all[2].status, all[2].next_attempt_at_us, all[1].status), (None, Some(99), Some(500)));
    assert_eq!(all[1].error.as_deref(), Some("HTTP 500: nope"));
    let page = store.attempts("ep-b", Some(all[0].seq), false, 1).await.unwrap();
    assert_eq!(page[0].event_id, "ev-1");
    let failed = store.attempts("ep-b", None, true, 10).await.unwrap();
    assert_eq!(failed.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(), ["ev-1"]);
    assert!(store.attempts("ep-a", None, false, 10).await.unwrap().is_empty());
    // A replay sets a checkpoint backwards (SetCheckpoint only moves forward on PostgreSQL).
    let reset = |offset| n(NotifyOp::ResetCheckpoint { consumer: "notify:ep-b".into(), offset });
    apply(store, vec![reset(30)]).await;
    apply(store, vec![reset(5)]).await;
    assert_eq!(store.checkpoint("notify:ep-b").await.unwrap(), Some(5));
    // Deleting: scoped, then gone; its attempts stay.
    let del = |t: &str| n(NotifyOp::DeleteEndpoint { tenant: Some(t.into()), id: "ep-b".into() });
    assert_eq!(not_found(store.commit(Txn { entries: vec![], ops: vec![del("beta")] }).await), "no endpoint `ep-b`");
    apply(store, vec![del("acme")]).await;
    assert_eq!(store.endpoint("ep-b").await.unwrap(), None);
    assert_eq!(store.attempts("ep-b", None, false, 10).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteLog::open(dir.path(), SqliteOptions::default()).expect("open log"));
    let store = Arc::new(
        idstream_server::store::sqlite::SqliteStore::open(dir.path(), log.clone(), 2048, 1024).expect("open store"),
    );
    let reader = store.clone();
    suite(&Backend {
        store: store.clone(),
        log: log.clone(),
        checkpoint: Box::new(move |consumer: &'static str| {
            let store = reader.clone();
            async move { store.checkpoint(consumer).await.unwrap() }.boxed()
        }),
        fenced_checkpoints: false,
    })
    .await;
    store.close().await;
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set IDSTREAM_TEST_POSTGRES_URL"]
async fn postgres_store_conforms() {
    let base = std::env::var("IDSTREAM_TEST_POSTGRES_URL")
        .expect("set IDSTREAM_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run this test");
    let name = format!("idstream_store_{}", uuid::Uuid::now_v7().simple());
    let url = idstream_server::store::pg::create_database(&base, &name).await.expect("create the test database");
    let pool = idstream_server::store::pg::connect(&url, 16).await.expect("connect");
    idstream_server::store::pg::migrate(&pool).await.expect("migrate");
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteLog::open(dir.path(), SqliteOptions::default()).expect("open log"));
    let store = Arc::new(PgStore::new(pool.clone(), log.clone()));
    let reader = pool.clone();
    suite(&Backend {
        store: store.clone(),
        log: log.clone(),
        checkpoint: Box::new(move |consumer: &'static str| {
            let pool = reader.clone();
            (async move {
                let row = pool
                    .get()
                    .await
                    .unwrap()
                    .query_opt("SELECT position FROM checkpoints WHERE consumer = $1", &[&consumer])
                    .await
                    .unwrap();
                row.map(|r| r.get::<_, i64>(0) as u64)
            })
            .boxed()
        }),
        fenced_checkpoints: true,
    })
    .await;
    assert_eq!(outbox_len(&pool).await, 0, "published entries leave the outbox");
    outbox_relay(&pool).await;
    log.close().await;

    // Clean up (a failed run leaves its database for inspection).
    drop(store);
    pool.close();
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).await.unwrap();
}

async fn outbox_len(pool: &deadpool_postgres::Pool) -> i64 {
    pool.get().await.unwrap().query_one("SELECT count(*) FROM outbox", &[]).await.unwrap().get(0)
}

/// A txn whose log append fails is committed; its entries wait in the outbox until the relay
/// publishes them, exactly once.
async fn outbox_relay(pool: &deadpool_postgres::Pool) {
    let dead_dir = tempfile::tempdir().unwrap();
    let dead = Arc::new(SqliteLog::open(dead_dir.path(), SqliteOptions::default()).unwrap());
    dead.close().await;
    let broken = PgStore::new(pool.clone(), dead);
    let stuck = vec![entry(1, "t9", "s9", Some("relay-k1")), entry(2, "t9", "s9", None)];
    let r = broken
        .commit(Txn {
            entries: stuck.clone(),
            ops: vec![
                Op::PutDecision(decision("dec-relay", "t9", "s9", Some("ev-relay"), "rules", 1)),
                upsert("t9", "s9", Some("u9"), None, "approved", Some(("approve", "dec-relay")), 1),
            ],
        })
        .await;
    assert!(matches!(r, Err(TxnError::Log(_))), "{r:?}");
    assert!(broken.decision("dec-relay").await.unwrap().is_some(), "the state is committed");
    assert_eq!(broken.session("t9", "s9").await.unwrap().unwrap().decision_id.as_deref(), Some("dec-relay"));
    assert_eq!(outbox_len(pool).await, 2);

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(SqliteLog::open(fresh_dir.path(), SqliteOptions::default()).unwrap());
    let relay = PgStore::new(pool.clone(), fresh.clone());
    assert_eq!(relay.relay_outbox(Duration::from_secs(3600)).await.unwrap(), 0, "not old enough yet");
    assert_eq!(fresh.head(), 0, "not published yet");
    assert_eq!(relay.relay_outbox(Duration::ZERO).await.unwrap(), 2);
    let published = fresh.read(0, 100, &ReadFilter::default()).await.unwrap();
    assert_eq!(
        published.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [stuck[0].id.as_str(), stuck[1].id.as_str()]
    );
    assert_eq!((&published[0].event, &published[1].body), (&stuck[0].event, &stuck[1].body));
    assert_eq!(relay.relay_outbox(Duration::ZERO).await.unwrap(), 0);
    assert_eq!((fresh.head(), outbox_len(pool).await), (2, 0));

    // An entry published by its commit and again by the relay (its row survived) is stored once.
    let e = entry(3, "t9", "s9", None);
    let r = relay.commit(Txn { entries: vec![e.clone()], ops: vec![] }).await.unwrap();
    assert_eq!((r[0].offset, r[0].duplicate), (3, false));
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO outbox (id, tenant, source, kind, partition_key, dedupe_key, event, body, created_at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
            &[&e.id, &e.tenant, &e.source, &e.kind, &e.partition_key, &format!("entry:{}", e.id), &e.event, &e.body],
        )
        .await
        .unwrap();
    assert_eq!(relay.relay_outbox(Duration::ZERO).await.unwrap(), 1);
    assert_eq!((fresh.head(), outbox_len(pool).await), (3, 0), "the log's dedupe kept one copy");

    // The background relay publishes what a failed append left behind.
    let late = entry(4, "t9", "s9", None);
    let r = broken.commit(Txn { entries: vec![late.clone()], ops: vec![] }).await;
    assert!(matches!(r, Err(TxnError::Log(_))), "{r:?}");
    let stop = CancellationToken::new();
    let task = tokio::spawn(Arc::new(relay).run_relay(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while fresh.get(&late.id).await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the relay did not publish within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!((fresh.head(), outbox_len(pool).await), (4, 0));
    fresh.close().await;
}
