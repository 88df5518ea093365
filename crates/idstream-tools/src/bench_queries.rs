//! `idstream bench queries`: the dashboard's read API over a large store — the review queue
//! (first page, a page deep in the list, a reason filter, walking every page), identity search,
//! the session view and the overview's statistics — each measured over HTTP against
//! `idstream serve`, next to the same server's `/healthz` in the same run.
//!
//! The store is filled first, in this process, through the store's own `commit` (the write path
//! the decision worker uses): `--decisions` decisions over `--days` days, ~12 % of them opening
//! a review case (resolved after a while, except the last two days'), three identity values per
//! session (a document number, an email and a phone; 1 % of the documents shared by a ring of
//! sessions), and the per-minute webhook counts of the overview. One tenant in ten is another
//! tenant, so every query also filters. Then the server is started on that store and each query
//! is sent `--requests` times, one after another on one keep-alive connection, `--runs` times;
//! the table shows the medians over the runs.

use std::time::Instant;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use crate::bench::{BackendArgs, RunBackends};
use idstream_server::backend::{self, Access, Backend};
use idstream_server::config::Config;
use idstream_server::domain::{BlocklistKind, Outcome, SessionState};
use idstream_server::store::{DecisionRecord, Observation, Op, ReviewRecord, SessionUpdate, StatCount, Txn};

#[derive(clap::Args, Debug, Clone)]
pub struct QueriesArgs {
    /// Decisions in the store.
    #[arg(long, default_value_t = 1_000_000)]
    pub decisions: u64,
    /// Spread over this many days, ending now.
    #[arg(long, default_value_t = 30)]
    pub days: u64,
    /// Requests per query and run (after 20 unmeasured ones).
    #[arg(long, default_value_t = 200)]
    pub requests: u64,
    /// Measured runs (the table shows the median of their p50s and p99s).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Keep the config and the embedded data directory here (an empty or new directory)
    /// instead of a temporary one.
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
    /// Measure the store an earlier `--keep` run filled (its directory; give the same
    /// --decisions): nothing is seeded.
    #[arg(long, conflicts_with = "keep")]
    pub reuse: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub backends: BackendArgs,
}

const TENANT: &str = "bench";
const API_KEY: &str = "bench-queries-analyst-key";
const BATCH: u64 = 1000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryResult {
    pub query: String,
    pub rows: u64,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub median_p50_ms: f64,
    pub median_p99_ms: f64,
    /// The query's very first request after the server started (cold caches).
    pub first_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn tenant_of(i: u64) -> &'static str {
    if i % 10 == 9 {
        "other"
    } else {
        TENANT
    }
}

/// The document number of session `i`: one in a hundred belongs to a ring of 5 sessions.
fn document(i: u64) -> String {
    if i % 100 == 7 {
        format!("RING{:07}", i / 500)
    } else {
        format!("D{i:09}")
    }
}

const REVIEW_REASONS: [&str; 5] = ["aml.hits", "face_match.low", "velocity.document", "provider.in_review", "ip.risky"];

/// One batch of seeded decisions `from..to`, as one transaction.
fn batch(from: u64, to: u64, a: &QueriesArgs, now_us: i64, hash: &idstream_server::decide::normalize::HashKey) -> Txn {
    let span_us = a.days as i64 * 86_400_000_000;
    let start = now_us - span_us;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(from);
    let mut ops = Vec::with_capacity(((to - from) * 4) as usize);
    let mut minutes: std::collections::BTreeMap<(&'static str, i64), u64> = Default::default();
    for i in from..to {
        let at = start + (i as i128 * span_us as i128 / a.decisions as i128) as i64;
        let tenant = tenant_of(i);
        let (session, subject, id) = (format!("s-{i:09}"), format!("u-{i:09}"), format!("dec-{i:09}"));
        let roll: f64 = rng.gen();
        let (outcome, reasons, state) = if roll < 0.80 {
            (Outcome::Approve, vec![], SessionState::Approved)
        } else if roll < 0.92 {
            (Outcome::Review, vec![REVIEW_REASONS[(i % 5) as usize].to_owned()], SessionState::Review)
        } else {
            (Outcome::Decline, vec!["document.expired".to_owned()], SessionState::Declined)
        };
        ops.push(Op::PutDecision(DecisionRecord {
            id: id.clone(),
            tenant: tenant.to_owned(),
            session_id: session.clone(),
            subject: Some(subject.clone()),
            event_id: Some(format!("ev-{i:09}")),
            event_offset: Some(i + 1),
            outcome,
            score: rng.gen_range(0.0..1.0),
            ruleset_version: Some("2026-11-01".into()),
            reasons: reasons.clone(),
            decided_by: "rules".into(),
            decided_at_us: at,
            // About the size of a real decision's explanation and input context.
            detail: json!({
                "fired": reasons.iter().map(|r| json!({"rule": r, "read": {"score": 0.42, "hits": 1}})).collect::<Vec<_>>(),
                "context": {
                    "status": "Approved", "document": {"type": "P", "country": "ESP", "expiry": "2031-04-02"},
                    "liveness": {"score": 97.5, "status": "Approved"}, "face_match": {"similarity": 93.1},
                    "ip": {"country": "ES", "vpn": false, "tor": false}, "aml": {"hits": 0},
                    "phone": {"carrier": "Movistar", "type": "mobile"}, "email": {"breaches": 0},
                    "padding": "x".repeat(600),
                },
            }),
        }));
        ops.push(Op::UpsertSession(SessionUpdate {
            tenant: tenant.to_owned(),
            session_id: session.clone(),
            subject: Some(subject.clone()),
            provider_status: Some("Approved".into()),
            state,
            decision: Some((outcome, id.clone())),
            now_us: at,
        }));
        let observe = |kind: BlocklistKind, value: &str| Observation {
            tenant: tenant.to_owned(),
            kind,
            hash: hash.value_hash(kind.as_str(), value, None).expect("a valid value"),
            subject: subject.clone(),
            session_id: session.clone(),
            seen_at_us: at,
        };
        ops.push(Op::Observe(vec![
            observe(BlocklistKind::Document, &document(i)),
            observe(BlocklistKind::Email, &format!("user{i}@example.com")),
            observe(BlocklistKind::Phone, &format!("+1 555 {:07}", i % 10_000_000)),
        ]));
        if outcome == Outcome::Review {
            // Cases of the last two days are still open (one in five claimed); older ones were
            // resolved ten minutes after they opened.
            let recent = now_us - at < 2 * 86_400_000_000;
            let (claimed_by, resolved) = match (recent, i % 5) {
                (true, 0) => (Some("user:ana".to_owned()), false),
                (true, _) => (None, false),
                (false, _) => (Some("user:ana".to_owned()), true),
            };
            ops.push(Op::OpenReview(ReviewRecord::open(
                format!("rev-{i:09}"),
                tenant.to_owned(),
                session.clone(),
                Some(subject.clone()),
                id.clone(),
                reasons.clone(),
                at,
            )));
            let rid = format!("rev-{i:09}");
            if let Some(actor) = claimed_by {
                ops.push(Op::ClaimReview {
                    tenant: tenant.to_owned(),
                    id: rid.clone(),
                    actor,
                    now_us: at + 60_000_000,
                });
            }
            if resolved {
                ops.push(Op::ResolveReview {
                    tenant: tenant.to_owned(),
                    id: rid,
                    actor: "user:ana".into(),
                    outcome: Some(Outcome::Approve),
                    note: "documents checked by hand".into(),
                    now_us: at + 600_000_000,
                    force: false,
                });
            }
        }
        let minute = at / 60_000_000;
        *minutes.entry((tenant, minute)).or_default() += 1;
    }
    let mut stats = Vec::new();
    for ((tenant, minute), n) in minutes {
        let count =
            |metric: &str, count: u64| StatCount { tenant: tenant.to_owned(), minute, metric: metric.into(), count };
        stats.push(count("webhooks_accepted", n * 3));
        stats.push(count("webhooks_duplicate", n / 20 + 1));
        stats.push(count("webhooks_rejected", u64::from(minute % 7 == 0)));
    }
    ops.push(Op::AddStats(stats));
    Txn { entries: Vec::new(), ops }
}

pub async fn run(a: QueriesArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.decisions >= 1000, "--decisions must be at least 1000");
    anyhow::ensure!(a.days >= 1 && a.runs >= 1 && a.requests >= 1, "--days, --runs and --requests must be positive");
    // Only a fresh, unkept store lives in a temporary directory (removed at the end).
    let tmp = if a.reuse.is_none() && a.keep.is_none() { Some(tempfile::tempdir()?) } else { None };
    // A kept run's config names its database and stream: they stay too.
    let backends = match &a.reuse {
        Some(_) => RunBackends::default(),
        None => {
            BackendArgs { keep_backends: a.backends.keep_backends || a.keep.is_some(), ..a.backends.clone() }
                .prepare()
                .await?
        }
    };
    let (cfg_path, cfg, dir) = match &a.reuse {
        Some(d) => {
            let path = d.join("idstream.toml");
            let toml = std::fs::read_to_string(&path).with_context(|| format!("--reuse: {}", path.display()))?;
            (path, Config::from_toml(&toml).context("bench config")?, d.clone())
        }
        None => {
            let dir = match &a.keep {
                Some(d) => {
                    std::fs::create_dir_all(d)?;
                    anyhow::ensure!(std::fs::read_dir(d)?.next().is_none(), "--keep {}: not empty", d.display());
                    d.clone()
                }
                None => tmp.as_ref().expect("made above when neither --keep nor --reuse").path().to_owned(),
            };
            let cfg_path = dir.join("idstream.toml");
            let toml = format!(
                r#"{backend}[server]
listen = "127.0.0.1:0"
data_dir = "{data}"

[rate_limits]
enabled = false

[decisions]
enabled = false

[[api_keys]]
name = "analyst"
tenant = "{TENANT}"
role = "analyst"
sha256 = "{key}"
"#,
                backend = backends.toml,
                data = dir.join("data").display(),
                key = idstream_server::state::hash_api_key(API_KEY),
            );
            std::fs::write(&cfg_path, &toml)?;
            let cfg = Config::from_toml(&toml).context("bench config")?;
            (cfg_path, cfg, dir)
        }
    };

    // --- Fill the store.
    let started = Instant::now();
    if a.reuse.is_none() {
        let opened = backend::open(&Backend::from_config(&cfg), Access::Serve).await?;
        let (store, hash) = (opened.store.clone(), opened.hash_key.clone());
        let now_us = idstream_server::util::now_us();
        let bar = ProgressBar::new(a.decisions).with_style(
            ProgressStyle::with_template("seeding {bar:40} {pos}/{len} decisions ({per_sec}, eta {eta})")
                .expect("template"),
        );
        // Four transactions in flight: the store batches or pools them as it does under load.
        let mut inflight = tokio::task::JoinSet::new();
        for b in 0..a.decisions.div_ceil(BATCH) {
            if inflight.len() >= 4 {
                inflight.join_next().await.expect("a task")??;
            }
            let (from, to) = (b * BATCH, ((b + 1) * BATCH).min(a.decisions));
            let (store, hash, a, bar) = (store.clone(), hash.clone(), a.clone(), bar.clone());
            inflight.spawn(async move {
                let txn = tokio::task::spawn_blocking(move || batch(from, to, &a, now_us, &hash)).await?;
                store.commit(txn).await.map_err(|e| anyhow::anyhow!("seeding {from}..{to}: {e}"))?;
                bar.inc(to - from);
                // Without a terminal the bar is hidden: a line every 100,000 decisions.
                if bar.is_hidden() && to % 100_000 == 0 {
                    eprintln!("seeded {to} decisions");
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = inflight.join_next().await {
            r??;
        }
        bar.finish();
        store.close().await;
    }
    if a.reuse.is_none() {
        eprintln!(
            "seeded {} decisions in {:.0} s ({})",
            a.decisions,
            started.elapsed().as_secs_f64(),
            a.backends.label()
        );
    }
    if !cfg.store.url.is_empty() {
        // What autovacuum does over weeks of traffic: dead row versions of the cases' changes
        // removed, the planner's statistics current.
        let pool = idstream_server::store::pg::connect(&cfg.store.url, 2).await?;
        let client = pool.get().await.map_err(|e| anyhow::anyhow!("PostgreSQL: {e}"))?;
        let t = Instant::now();
        client.batch_execute("VACUUM ANALYZE").await?;
        eprintln!("VACUUM ANALYZE: {:.0} s", t.elapsed().as_secs_f64());
    } else {
        let bytes: u64 =
            std::fs::read_dir(dir.join("data"))?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        eprintln!("data directory: {:.0} MiB", bytes as f64 / 1048576.0);
    }

    // --- Serve it and measure.
    let (mut child, addr) = crate::bench::spawn_serve(&cfg_path).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
    let base = format!("http://{addr}");
    let get = |path: String| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move {
            let r = client.get(&url).bearer_auth(API_KEY).send().await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await?;
            anyhow::ensure!(status.is_success(), "GET {url}: {status} {body}");
            anyhow::Ok(body)
        }
    };

    // Walk every resolved case of the tenant a thousand at a time (what the CSV export does),
    // and keep the cursor of the middle page for the deep-page query.
    let walk = Instant::now();
    let (mut after, mut pages, mut walked, mut cursors) = (None::<String>, 0u64, 0u64, Vec::new());
    loop {
        let q = after.as_ref().map(|c| format!("&after={c}")).unwrap_or_default();
        let page = get(format!("/v1/reviews?status=resolved&limit=1000{q}")).await?;
        pages += 1;
        walked += page["reviews"].as_array().map_or(0, |r| r.len() as u64);
        match page["next_after"].as_str() {
            Some(c) => {
                cursors.push(c.to_owned());
                after = Some(c.to_owned());
            }
            None => break,
        }
    }
    let walk_secs = walk.elapsed().as_secs_f64();
    eprintln!("walked {walked} resolved cases in {pages} pages of 1000: {walk_secs:.2} s");
    let middle = cursors.get(cursors.len() / 2).cloned().context("more than one page of resolved cases")?;

    type Make = Box<dyn Fn(u64) -> String>;
    let n_bench = a.decisions;
    let sample = move |n: u64| {
        // A session of the measured tenant, spread over the whole history.
        let i = (n.wrapping_mul(2_654_435_761) % n_bench) / 10 * 10;
        i.min(n_bench - 1) - (i % 10 == 9) as u64
    };
    let queries: Vec<(&str, Make)> = vec![
        ("GET /healthz (baseline)", Box::new(|_| "/healthz".to_owned())),
        ("reviews: open queue, first page of 100", Box::new(|_| "/v1/reviews?limit=100".to_owned())),
        (
            "reviews: resolved, page of 100 in the middle",
            Box::new(move |_| format!("/v1/reviews?status=resolved&limit=100&after={middle}")),
        ),
        (
            "reviews: all statuses, reason `aml`, first 100",
            Box::new(|_| "/v1/reviews?status=all&reason=aml&limit=100".to_owned()),
        ),
        (
            "search: a document number",
            Box::new(move |n| format!("/v1/search?kind=document&value={}", document(sample(n)))),
        ),
        (
            "search: a ring's document (5 sessions)",
            Box::new(move |n| format!("/v1/search?kind=document&value={}", document(sample(n) / 100 * 100 + 7))),
        ),
        ("search: an email", Box::new(move |n| format!("/v1/search?kind=email&value=user{}@example.com", sample(n)))),
        (
            "session view (decisions, cases, linked subjects)",
            Box::new(move |n| format!("/v1/sessions/s-{:09}", sample(n))),
        ),
        ("stats: last hour", Box::new(|_| "/v1/stats?window_secs=3600".to_owned())),
        ("stats: last 24 hours", Box::new(|_| "/v1/stats?window_secs=86400".to_owned())),
        ("stats: last 7 days", Box::new(|_| "/v1/stats?window_secs=604800".to_owned())),
    ];
    let mut results: Vec<QueryResult> = Vec::new();
    for (name, make) in &queries {
        let mut r = QueryResult {
            query: name.to_string(),
            rows: 0,
            p50_ms: vec![],
            p99_ms: vec![],
            median_p50_ms: 0.0,
            median_p99_ms: 0.0,
            first_ms: 0.0,
        };
        let t0 = Instant::now();
        get(make(2_000_000)).await?;
        r.first_ms = t0.elapsed().as_secs_f64() * 1000.0;
        for run in 0..a.runs {
            for n in 0..20 {
                get(make(n + 1_000_000)).await?;
            }
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            for n in 0..a.requests {
                let t0 = Instant::now();
                let body = get(make(n + run as u64 * a.requests)).await?;
                hist.record(t0.elapsed().as_micros().max(1) as u64).expect("in bounds");
                r.rows = r.rows.max(rows(&body));
            }
            r.p50_ms.push(hist.value_at_quantile(0.5) as f64 / 1000.0);
            r.p99_ms.push(hist.value_at_quantile(0.99) as f64 / 1000.0);
        }
        r.median_p50_ms = median(r.p50_ms.clone());
        r.median_p99_ms = median(r.p99_ms.clone());
        eprintln!("  {name}: p50 {:.2} ms, p99 {:.2} ms ({} rows)", r.median_p50_ms, r.median_p99_ms, r.rows);
        results.push(r);
    }
    child.kill().await.ok();

    println!(
        "{} decisions over {} days, {}; {} requests per query and run, medians of {} runs",
        a.decisions,
        a.days,
        a.backends.label(),
        a.requests,
        a.runs
    );
    println!();
    println!("| query | rows answered (stats: items counted) | p50 ms | p99 ms | first request ms | p50 of each run | p99 of each run |");
    println!("|---|---|---|---|---|---|---|");
    let each = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / ");
    for r in &results {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.query,
            r.rows,
            r.median_p50_ms,
            r.median_p99_ms,
            r.first_ms,
            each(&r.p50_ms),
            each(&r.p99_ms)
        );
    }
    println!();
    println!("walking every resolved case ({walked}) in pages of 1,000: {walk_secs:.2} s ({pages} pages)");
    if let Some(path) = &a.json {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&json!({
                "decisions": a.decisions, "days": a.days, "backend": a.backends.label(),
                "queries": results, "walk": {"cases": walked, "pages": pages, "secs": walk_secs},
            }))?,
        )?;
    }
    Ok(())
}

/// How many rows an answer holds (cases, places seen, decisions, buckets).
fn rows(v: &serde_json::Value) -> u64 {
    for k in ["reviews", "seen", "decisions"] {
        if let Some(a) = v[k].as_array() {
            return a.len() as u64;
        }
    }
    v["totals"].as_object().map_or(0, |t| t.values().filter_map(|x| x.as_u64()).sum())
}
