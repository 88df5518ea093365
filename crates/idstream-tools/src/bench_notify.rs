//! `idstream bench notify`: outbound notifications (issue #14).
//!
//! The server runs in this process on its own 2-thread runtime (as in `bench ingest`), on the
//! embedded backends in a temporary directory, with the decision worker off: the log holds only
//! the webhooks' events, and every delivery is one of them. The receivers are axum handlers on
//! 127.0.0.1:0 (one port per endpoint, on their own runtime) that answer 200 at once and count.
//!
//! - **Throughput.** The log is filled first with realistic events: signed simulator webhooks
//!   posted to the server (ingest, normalisation, durable append), ~3 events per session. Then
//!   the endpoints are configured with their checkpoint set back (1 endpoint: to 0; the fan-out
//!   run: `--fanout-events` before the head, every endpoint taking every event) and the time
//!   from the server's start until the receivers have every event is measured.
//! - **Latency.** Webhooks are posted at a fixed `--rate`, open loop, to a server with one
//!   endpoint. Per event: the log's commit (the payload's `timestamp`) → the receiver has it,
//!   and the webhook's *scheduled* send time → the receiver has it, which also counts any stall
//!   of ingest (no coordinated omission).
//!
//! The baseline of each, in the same run: a bare reqwest client (the notifier's HTTP library,
//! with its pool settings) on its own 2-thread runtime, posting the same bodies with the same
//! Standard Webhooks headers (signed beforehand) to the same receivers, with the same
//! concurrency (throughput) or at the same rate (latency). It stores nothing and keeps no order.
//!
//! CPU per thread group (from `/proc/self/task`) and the store and log writers' busy time (from
//! the process's own metrics) are printed with each figure: they say what bounds it. Like every
//! bench, this is never used by a test to assert a speed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use idstream_core::signature::{standard, Secret};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use idstream_server::config::Config;
use idstream_server::log::{LogEntry, ReadFilter};
use idstream_server::notify;
use idstream_server::state::AppState;
use idstream_server::store::{Op, Txn};
use idstream_server::util::{now_us, unix_now};

use crate::bench::Prepared;
use crate::bench_decide::{quantiles, Quantiles};

/// The endpoints' Standard Webhooks secret.
const ENDPOINT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The tenant (and webhook source) of every event.
const TENANT: &str = "bench";
/// The header in which the baseline client tells the receiver when a request was scheduled.
const SENT_HEADER: &str = "bench-sent-us";
/// Linux's clock tick for `/proc/*/stat` CPU times (`sysconf(_SC_CLK_TCK)`, 100 on x86-64).
pub(crate) const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[derive(clap::Args, Debug, Clone)]
pub struct NotifyArgs {
    /// Events in the log for the throughput runs; the 1-endpoint run delivers all of them.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Endpoints of the fan-out run; each one takes every event.
    #[arg(long, default_value_t = 50)]
    pub endpoints: usize,
    /// Events each endpoint of the fan-out run delivers (the last ones of the log).
    #[arg(long, default_value_t = 1_000)]
    pub fanout_events: usize,
    /// Rates of the latency runs, events per second (comma-separated; webhooks posted open loop).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub rate: Vec<u64>,
    /// Seconds of load per latency run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Keep-alive connections posting the webhooks.
    #[arg(long, default_value_t = 128)]
    pub connections: usize,
    /// `[notifications] max_in_flight`: sessions delivered at once per endpoint (the baseline
    /// gets the same concurrency per endpoint).
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// Skip the throughput runs.
    #[arg(long)]
    pub no_throughput: bool,
    /// Skip the latency runs.
    #[arg(long)]
    pub no_latency: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Where the CPU went and how busy the SQLite writers were, during one measured interval.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Cores in use on average, by thread group.
    pub cpu_cores: BTreeMap<String, f64>,
    pub cpu_total_cores: f64,
    /// Store writer transactions (batches) and the txns in them.
    pub store_batches: f64,
    pub store_txns: f64,
    pub store_busy_pct: f64,
    pub log_busy_pct: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ThroughputResult {
    pub endpoints: usize,
    pub expected: u64,
    pub delivered: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub usage: Usage,
    pub baseline_per_sec: f64,
    pub baseline_usage: Usage,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyResult {
    pub rate_asked: u64,
    pub accepted_per_sec: f64,
    pub failed: u64,
    pub expected: u64,
    pub delivered: u64,
    pub append_to_received: Quantiles,
    pub sent_to_received: Quantiles,
    pub usage: Usage,
    pub baseline: Quantiles,
    pub baseline_per_sec: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NotifyResult {
    pub max_in_flight: usize,
    pub throughput: Vec<ThroughputResult>,
    pub latency: Vec<LatencyResult>,
}

pub async fn run(a: NotifyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.events > 0 && a.endpoints > 0 && a.fanout_events > 0, "counts must be at least 1");
    anyhow::ensure!(a.connections > 0 && a.max_in_flight > 0, "--connections and --max-in-flight must be at least 1");
    anyhow::ensure!(a.rate.iter().all(|r| *r > 0), "--rate must be at least 1");
    let dir = tempfile::tempdir()?;
    let receivers = Receivers::start(a.endpoints.max(1))?;
    let mut result = NotifyResult { max_in_flight: a.max_in_flight, ..Default::default() };
    let webhook_secret = Secret::new(crate::bench_stream::WEBHOOK_SECRET);

    if !a.no_throughput {
        eprintln!("preparing {} signed simulator webhooks ...", a.events);
        let prepared = Arc::new(crate::bench::prepare_seeded(a.events, &webhook_secret, 11));
        let fill = Running::start(dir.path(), &a, &[], None).await?;
        let posted = post_webhooks(fill.addr, prepared, a.connections, None, "filling the log").await?;
        let entries = read_all(&fill.state, 0).await?;
        fill.stop().await;
        let sessions = entries.iter().map(|e| e.partition_key.as_str()).collect::<std::collections::HashSet<_>>();
        eprintln!(
            "log filled: {} events ({} accepted/s, {} failed), {} sessions, payload mean {} bytes",
            entries.len(),
            (posted.accepted as f64 / posted.secs) as u64,
            posted.failed,
            sessions.len(),
            entries.iter().map(|e| notify::payload(e).len()).sum::<usize>() / entries.len().max(1)
        );
        result.throughput.push(throughput(dir.path(), &a, &receivers, &entries, 1).await?);
        let last = entries.len().saturating_sub(a.fanout_events);
        result.throughput.push(throughput(dir.path(), &a, &receivers, &entries[last..], a.endpoints).await?);
    }
    if !a.no_latency {
        for (i, rate) in a.rate.iter().enumerate() {
            result.latency.push(latency(dir.path(), &a, &receivers, *rate, 101 + i as u64).await?);
        }
    }
    receivers.stop().await;
    print_tables(&result);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}

fn print_tables(r: &NotifyResult) {
    let cores = |u: &Usage| {
        let groups: Vec<String> = u.cpu_cores.iter().map(|(g, c)| format!("{g} {c:.2}")).collect();
        format!("{:.2} ({})", u.cpu_total_cores, groups.join(", "))
    };
    if !r.throughput.is_empty() {
        println!(
            "throughput (max_in_flight = {} per endpoint; baseline: bare reqwest client, same run)",
            r.max_in_flight
        );
        println!("| endpoints | deliveries | delivered | secs | deliveries/s | baseline/s | ratio | store txns per delivery | store writer busy | CPU cores (groups) |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for t in &r.throughput {
            println!(
                "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0}% | {} |",
                t.endpoints,
                t.expected,
                t.delivered,
                t.secs,
                t.per_sec,
                t.baseline_per_sec,
                t.per_sec / t.baseline_per_sec.max(1e-9),
                t.usage.store_txns / (t.delivered.max(1) as f64),
                t.usage.store_busy_pct,
                cores(&t.usage)
            );
        }
        for t in &r.throughput {
            println!("baseline CPU, {} endpoint(s): {}", t.endpoints, cores(&t.baseline_usage));
        }
    }
    if !r.latency.is_empty() {
        println!("latency (1 endpoint; ms)");
        println!("| rate asked | accepted/s | delivered / expected | append → received p50 / p99 / p99.9 / max | scheduled POST → received p50 / p99 / p99.9 | baseline scheduled → received p50 / p99 / p99.9 | store / log writer busy | CPU cores (groups) |");
        println!("|---|---|---|---|---|---|---|---|");
        for l in &r.latency {
            let q = |q: &Quantiles| format!("{:.2} / {:.2} / {:.2}", q.p50_ms, q.p99_ms, q.p999_ms);
            println!(
                "| {} | {:.0} | {} / {} | {} / {:.2} | {} | {} | {:.0}% / {:.0}% | {} |",
                l.rate_asked,
                l.accepted_per_sec,
                l.delivered,
                l.expected,
                q(&l.append_to_received),
                l.append_to_received.max_ms,
                q(&l.sent_to_received),
                q(&l.baseline),
                l.usage.store_busy_pct,
                l.usage.log_busy_pct,
                cores(&l.usage)
            );
        }
    }
}

/// Delivers `entries` to each of `n` endpoints from a checkpoint just below the first, then the
/// same requests with the bare client.
async fn throughput(
    dir: &Path,
    a: &NotifyArgs,
    rx: &Receivers,
    entries: &[LogEntry],
    n: usize,
) -> anyhow::Result<ThroughputResult> {
    let endpoints: Vec<Endpoint> =
        (0..n).map(|i| Endpoint { id: format!("tp{n}-{i}"), url: rx.urls[i].clone() }).collect();
    let expected = (entries.len() * n) as u64;
    let from = entries.first().map_or(0, |e| e.offset.saturating_sub(1));
    rx.tally.reset(false);
    let before = Snapshot::take();
    let server = Running::start(dir, a, &endpoints, Some(from)).await?;
    let t0 = now_us();
    let delivered =
        wait_for(&rx.tally, expected, &format!("{n} endpoint(s): delivering"), Duration::from_secs(10)).await;
    let secs = (rx.tally.last_us() - t0).max(1) as f64 / 1e6;
    let usage = before.usage_since(secs);
    server.stop().await;
    let per_sec = delivered as f64 / secs;
    eprintln!("{n} endpoint(s): {delivered} of {expected} delivered in {secs:.2} s: {per_sec:.0}/s");

    rx.tally.reset(false);
    let requests = Arc::new(signed_requests(entries, &endpoints));
    let before = Snapshot::take();
    let concurrency = n * a.max_in_flight;
    let (ok, base_secs) = on_own_runtime("bench-client", move || burst(requests, concurrency)).await?;
    let baseline_usage = before.usage_since(base_secs);
    let baseline_per_sec = ok as f64 / base_secs;
    eprintln!("baseline, {n} endpoint(s): {ok} posted in {base_secs:.2} s: {baseline_per_sec:.0}/s");
    Ok(ThroughputResult { endpoints: n, expected, delivered, secs, per_sec, usage, baseline_per_sec, baseline_usage })
}

/// One endpoint; webhooks at `rate` for `--duration` seconds; then the bare client at `rate`.
async fn latency(dir: &Path, a: &NotifyArgs, rx: &Receivers, rate: u64, seed: u64) -> anyhow::Result<LatencyResult> {
    let count = (rate * a.duration) as usize;
    eprintln!("preparing {count} signed simulator webhooks ...");
    let prepared =
        Arc::new(crate::bench::prepare_seeded(count, &Secret::new(crate::bench_stream::WEBHOOK_SECRET), seed));
    let endpoints = [Endpoint { id: format!("lat-{rate}"), url: rx.urls[0].clone() }];
    let server = Running::start(dir, a, &endpoints, None).await?;
    let head = server.state.log.head();
    rx.tally.reset(true);
    let (before, started) = (Snapshot::take(), Instant::now());
    let posted =
        post_webhooks(server.addr, prepared, a.connections, Some(rate), &format!("posting at {rate}/s")).await?;
    let delivered = wait_for(&rx.tally, posted.accepted, "delivering the rest", Duration::from_secs(5)).await;
    let usage = before.usage_since(started.elapsed().as_secs_f64());
    let seen = rx.tally.take_seen();
    let (mut from_append, mut from_sent) = (hist(), hist());
    for s in &seen {
        if let Some(appended) = s.appended_us {
            from_append.saturating_record((s.received_us - appended).max(1) as u64);
        }
        if let Some(sent) = s.event_id.as_ref().and_then(|id| posted.sent_us.get(id)) {
            from_sent.saturating_record((s.received_us - sent).max(1) as u64);
        }
    }
    let entries = read_all(&server.state, head).await?;
    server.stop().await;
    let (append_to_received, sent_to_received) = (quantiles(&from_append), quantiles(&from_sent));
    eprintln!(
        "{rate}/s: {delivered} of {} delivered; append → received p50 {:.2} ms, p99 {:.2} ms",
        posted.accepted, append_to_received.p50_ms, append_to_received.p99_ms
    );

    rx.tally.reset(true);
    let requests = Arc::new(signed_requests(&entries, &endpoints));
    let total = requests.len() as u64;
    let workers = a.max_in_flight;
    let (ok, secs) = on_own_runtime("bench-client", move || paced(requests, rate, workers)).await?;
    wait_for(&rx.tally, total, "baseline", Duration::from_secs(5)).await;
    let mut base = hist();
    for s in rx.tally.take_seen() {
        if let Some(sent) = s.sent_us {
            base.saturating_record((s.received_us - sent).max(1) as u64);
        }
    }
    let baseline = quantiles(&base);
    eprintln!("baseline {rate}/s: p50 {:.2} ms, p99 {:.2} ms", baseline.p50_ms, baseline.p99_ms);
    Ok(LatencyResult {
        rate_asked: rate,
        accepted_per_sec: posted.accepted as f64 / posted.secs,
        failed: posted.failed,
        expected: posted.accepted,
        delivered,
        append_to_received,
        sent_to_received,
        usage,
        baseline,
        baseline_per_sec: ok as f64 / secs,
    })
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

/// An endpoint of a run: its id and its receiver's URL.
struct Endpoint {
    id: String,
    url: String,
}

/// A server of one phase, on its own runtime, over the run's data directory.
struct Running {
    state: Arc<AppState>,
    addr: SocketAddr,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Opens the data directory with these endpoints, sets their checkpoints to `from` (the
    /// log's head when `None`) and serves.
    async fn start(dir: &Path, a: &NotifyArgs, endpoints: &[Endpoint], from: Option<u64>) -> anyhow::Result<Running> {
        let mut toml = format!(
            "[decisions]\nenabled = false\n\n[notifications]\nenabled = {}\nallow_private_addresses = true\n\
             max_in_flight = {}\n\n[[sources]]\nid = \"{TENANT}\"\nprovider = \"didit\"\ntenant = \"{TENANT}\"\n\
             secrets = [\"{}\"]\n\n",
            !endpoints.is_empty(),
            a.max_in_flight,
            crate::bench_stream::WEBHOOK_SECRET
        );
        for e in endpoints {
            toml.push_str(&format!(
                "[[endpoints]]\nid = \"{}\"\ntenant = \"{TENANT}\"\nurl = \"{}\"\nkinds = [\"*\"]\nsecrets = [\"{ENDPOINT_SECRET}\"]\n\n",
                e.id, e.url
            ));
        }
        let mut cfg = Config::from_toml(&toml)?;
        cfg.server.data_dir = dir.to_path_buf();
        let state = Arc::new(AppState::open(&cfg).await?);
        if !endpoints.is_empty() {
            let offset = from.unwrap_or_else(|| state.log.head());
            let ops =
                endpoints.iter().map(|e| Op::SetCheckpoint { consumer: notify::consumer(&e.id), offset }).collect();
            state.store.commit(Txn { entries: Vec::new(), ops }).await.context("setting the endpoints' checkpoints")?;
        }
        let st = state.clone();
        let (addr, stop, thread) = crate::bench::spawn_server(move |l, t| async move {
            let _ = idstream_server::server::serve(l, st, t, Duration::from_secs(5)).await;
        })?;
        Ok(Running { state, addr, stop, thread })
    }

    /// Stops the server; it closes the store and the log, so the next phase can open them.
    async fn stop(self) {
        self.stop.cancel();
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// The tenant's entries after `after`, without their original bodies.
async fn read_all(state: &AppState, after: u64) -> anyhow::Result<Vec<LogEntry>> {
    let filter = ReadFilter { tenant: Some(TENANT.into()), partition_key: None };
    let mut all: Vec<LogEntry> = Vec::new();
    loop {
        let from = all.last().map_or(after, |e| e.offset);
        let page = state.log.read(from, 10_000, &filter).await?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page.into_iter().map(|e| LogEntry { body: None, ..e }));
    }
}

/// What posting webhooks gave.
struct Posted {
    /// Scheduled send time (wall clock, µs) by the event id the server answered.
    sent_us: HashMap<String, i64>,
    accepted: u64,
    failed: u64,
    secs: f64,
}

/// The part of the webhook answer the bench reads.
#[derive(serde::Deserialize)]
struct Ack {
    event_id: String,
    duplicate: bool,
}

/// Posts every prepared webhook over `connections` keep-alive connections: as fast as they go,
/// or at `rate` per second in total (open loop: each send is scheduled, and a late one counts
/// from its scheduled time).
async fn post_webhooks(
    addr: SocketAddr,
    prepared: Arc<Vec<Prepared>>,
    connections: usize,
    rate: Option<u64>,
    label: &str,
) -> anyhow::Result<Posted> {
    let bar = ProgressBar::new(prepared.len() as u64)
        .with_style(ProgressStyle::with_template("{msg} [{elapsed_precise}] {bar:30} {pos}/{len}").expect("template"));
    bar.set_message(label.to_owned());
    let next = Arc::new(AtomicUsize::new(0));
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
    let uri: hyper::Uri = format!("http://{addr}/webhooks/{TENANT}").parse()?;
    let host: hyper::header::HeaderValue = addr.to_string().parse()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (prepared, next, bar, uri, host) = (prepared.clone(), next.clone(), bar.clone(), uri.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = crate::bench_stream::http_conn(addr).await?;
            let mut ticker = interval.map(|iv| {
                // Staggered, so a fixed rate is spread evenly rather than sent in bursts.
                let start = tokio::time::Instant::now() + iv.mul_f64(c as f64 / connections as f64);
                let mut t = tokio::time::interval_at(start, iv);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let (mut sent, mut failed) = (Vec::new(), 0u64);
            loop {
                let scheduled = match &mut ticker {
                    Some(t) => t.tick().await.into_std(),
                    None => Instant::now(),
                };
                let Some(p) = prepared.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                let at_us = now_us() - scheduled.elapsed().as_micros() as i64;
                let mut req = hyper::Request::post(uri.clone()).body(Full::new(p.body.clone()))?;
                *req.headers_mut() = p.headers.clone();
                req.headers_mut().insert(hyper::header::HOST, host.clone());
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let ok = resp.status().is_success();
                let body = resp.into_body().collect().await?.to_bytes();
                bar.inc(1);
                match serde_json::from_slice::<Ack>(&body).ok().filter(|_| ok) {
                    Some(ack) if !ack.duplicate => sent.push((ack.event_id, at_us)),
                    Some(_) => {}
                    None => failed += 1,
                }
            }
            anyhow::Ok((sent, failed))
        }));
    }
    let mut posted = Posted { sent_us: HashMap::new(), accepted: 0, failed: 0, secs: 0.0 };
    for t in tasks {
        let (sent, failed) = t.await??;
        posted.accepted += sent.len() as u64;
        posted.sent_us.extend(sent);
        posted.failed += failed;
    }
    posted.secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(posted)
}

/// A notification as the notifier would send it, signed beforehand.
struct SignedRequest {
    url: String,
    webhook_id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
}

/// Every entry for every endpoint (interleaved by entry, as the endpoints' tasks run side by
/// side), with the notifier's own payload, webhook id and signature.
fn signed_requests(entries: &[LogEntry], endpoints: &[Endpoint]) -> Vec<SignedRequest> {
    let key = standard::decode_secret(&Secret::new(ENDPOINT_SECRET)).expect("a valid secret");
    let ts = unix_now();
    let mut out = Vec::with_capacity(entries.len() * endpoints.len());
    for e in entries {
        let body = Bytes::from(notify::payload(e));
        for ep in endpoints {
            let webhook_id = notify::webhook_id(&ep.id, &e.id);
            out.push(SignedRequest {
                url: ep.url.clone(),
                signature: standard::sign(&key, &webhook_id, ts, &body),
                webhook_id,
                timestamp: ts.to_string(),
                body: body.clone(),
            });
        }
    }
    out
}

/// A client configured as the notifier's (`notify::ssrf::client`), minus its address guard.
fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .expect("the client builds")
}

async fn post_one(client: &reqwest::Client, r: &SignedRequest, sent_us: Option<i64>) -> bool {
    let mut req = client
        .post(&r.url)
        .header("content-type", "application/json")
        .header("webhook-id", &r.webhook_id)
        .header("webhook-timestamp", &r.timestamp)
        .header("webhook-signature", &r.signature);
    if let Some(at) = sent_us {
        req = req.header(SENT_HEADER, at.to_string());
    }
    matches!(req.body(r.body.clone()).send().await, Ok(resp) if resp.status().is_success())
}

/// Posts every request from `concurrency` tasks, each as soon as the previous one is answered;
/// (answered 2xx, seconds).
async fn burst(requests: Arc<Vec<SignedRequest>>, concurrency: usize) -> anyhow::Result<(u64, f64)> {
    let client = bare_client();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                while let Some(r) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                    ok += u64::from(post_one(&client, r, None).await);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    Ok((ok, started.elapsed().as_secs_f64()))
}

/// Posts every request at `rate` per second in total from `workers` tasks, open loop; each
/// request carries its scheduled time for the receiver. (answered 2xx, seconds).
async fn paced(requests: Arc<Vec<SignedRequest>>, rate: u64, workers: usize) -> anyhow::Result<(u64, f64)> {
    let client = bare_client();
    let next = Arc::new(AtomicUsize::new(0));
    let interval = Duration::from_secs_f64(workers as f64 / rate as f64);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + interval.mul_f64(w as f64 / workers as f64);
                let mut ticker = tokio::time::interval_at(start, interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut ok = 0u64;
                loop {
                    let scheduled = ticker.tick().await.into_std();
                    let Some(r) = requests.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                    let at_us = now_us() - scheduled.elapsed().as_micros() as i64;
                    ok += u64::from(post_one(&client, r, Some(at_us)).await);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    Ok((ok, started.elapsed().as_secs_f64()))
}

/// Runs `make()`'s future on a new 2-thread runtime named `name` (as a separate process would
/// have), in its own thread, and returns its output.
async fn on_own_runtime<T, F>(name: &str, make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = name.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(runtime(&name).block_on(make()));
    });
    rx.await.expect("the runtime's thread returns its output")
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// One request a receiver answered, kept in latency runs.
struct Seen {
    /// The event's id (`data.id` of the payload).
    event_id: Option<String>,
    received_us: i64,
    /// The payload's `timestamp`: when the log committed the event.
    appended_us: Option<i64>,
    /// The baseline client's scheduled send time.
    sent_us: Option<i64>,
}

/// What the receivers got since the last reset.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    /// Wall clock (µs) of the latest request.
    last_us: AtomicU64,
    /// Keep every request's times (latency runs) rather than only count them.
    record: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

impl Tally {
    fn reset(&self, record: bool) {
        self.seen.lock().expect("tally lock").clear();
        self.record.store(record, Ordering::SeqCst);
        self.last_us.store(0, Ordering::SeqCst);
        self.received.store(0, Ordering::SeqCst);
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    fn last_us(&self) -> i64 {
        self.last_us.load(Ordering::SeqCst) as i64
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("tally lock"))
    }
}

/// The payload fields a latency run reads.
#[derive(serde::Deserialize)]
struct Payload {
    timestamp: String,
    data: PayloadData,
}

#[derive(serde::Deserialize)]
struct PayloadData {
    id: String,
}

fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1000) as i64)
}

/// The receiver: answers 200 at once; in latency runs it also keeps the request's times.
async fn receive(State(tally): State<Arc<Tally>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = now_us();
    if tally.record.load(Ordering::Relaxed) {
        let payload = serde_json::from_slice::<Payload>(&body).ok();
        let sent_us = headers.get(SENT_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let seen = Seen {
            appended_us: payload.as_ref().and_then(|p| parse_rfc3339_us(&p.timestamp)),
            event_id: payload.map(|p| p.data.id),
            received_us: at,
            sent_us,
        };
        tally.seen.lock().expect("tally lock").push(seen);
    }
    tally.last_us.fetch_max(at as u64, Ordering::SeqCst);
    tally.received.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

/// One receiver per endpoint (its own port), all on one runtime, sharing one tally.
struct Receivers {
    urls: Vec<String>,
    tally: Arc<Tally>,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Receivers {
    fn start(n: usize) -> anyhow::Result<Receivers> {
        let tally = Arc::<Tally>::default();
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (t, s) = (tally.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            runtime("bench-receiver").block_on(async move {
                let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(t);
                let mut urls = Vec::new();
                for _ in 0..n {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    urls.push(format!("http://{}/hook", listener.local_addr().expect("addr")));
                    // No Nagle, as on idstream's own sockets.
                    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let serve = axum::serve(listener, app.clone()).with_graceful_shutdown(s.clone().cancelled_owned());
                    tokio::spawn(async move {
                        let _ = serve.await;
                    });
                }
                tx.send(urls).expect("report the URLs");
                s.cancelled().await;
            });
        });
        let urls = rx.recv().context("the receivers failed to start")?;
        Ok(Receivers { urls, tally, stop, thread })
    }

    async fn stop(self) {
        self.stop.cancel();
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Waits until the receivers have `expected` requests, or nothing arrived for `stall`; returns
/// how many they have.
async fn wait_for(tally: &Tally, expected: u64, label: &str, stall: Duration) -> u64 {
    let bar = ProgressBar::new(expected)
        .with_style(ProgressStyle::with_template("{msg} [{elapsed_precise}] {bar:30} {pos}/{len}").expect("template"));
    bar.set_message(label.to_owned());
    let (mut last, mut since) = (0, Instant::now());
    let n = loop {
        let n = tally.received();
        bar.set_position(n);
        if n >= expected {
            break n;
        }
        if n != last {
            (last, since) = (n, Instant::now());
        } else if since.elapsed() > stall {
            eprintln!("warning: {label}: nothing more arrived for {} s; {n} of {expected}", stall.as_secs());
            break n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    bar.finish_and_clear();
    n
}

/// CPU ticks per thread and the SQLite writers' metrics at one moment.
struct Snapshot {
    threads: HashMap<u32, (String, u64)>,
    metrics: Writers,
}

/// Counters of the store and log writers (from the process's Prometheus page).
#[derive(Default)]
struct Writers {
    store_batches: f64,
    store_txns: f64,
    store_busy_secs: f64,
    log_busy_secs: f64,
}

impl Writers {
    fn read() -> Writers {
        let text = idstream_server::server::metrics_handle().render();
        let value = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
        };
        Writers {
            store_batches: value("idstream_store_commit_seconds_count"),
            store_txns: value("idstream_store_batch_ops_sum"),
            store_busy_secs: value("idstream_store_commit_seconds_sum"),
            log_busy_secs: value("idstream_log_commit_seconds_sum"),
        }
    }
}

impl Snapshot {
    fn take() -> Snapshot {
        Snapshot { threads: thread_ticks(), metrics: Writers::read() }
    }

    /// What was used from this snapshot until now, over `secs` seconds.
    fn usage_since(&self, secs: f64) -> Usage {
        let now = Snapshot::take();
        let mut cpu_cores: BTreeMap<String, f64> = BTreeMap::new();
        for (tid, (comm, ticks)) in &now.threads {
            let before = self.threads.get(tid).map_or(0, |(_, t)| *t);
            let cores = ticks.saturating_sub(before) as f64 / CLOCK_TICKS_PER_SEC / secs;
            *cpu_cores.entry(thread_group(comm).to_owned()).or_default() += cores;
        }
        cpu_cores.retain(|_, c| *c >= 0.005);
        let (m0, m1) = (&self.metrics, &now.metrics);
        Usage {
            cpu_total_cores: cpu_cores.values().sum(),
            cpu_cores,
            store_batches: m1.store_batches - m0.store_batches,
            store_txns: m1.store_txns - m0.store_txns,
            store_busy_pct: 100.0 * (m1.store_busy_secs - m0.store_busy_secs) / secs,
            log_busy_pct: 100.0 * (m1.log_busy_secs - m0.log_busy_secs) / secs,
        }
    }
}

/// The group a thread's CPU is reported under, by its name (`comm`, at most 15 bytes).
fn thread_group(comm: &str) -> &str {
    match comm {
        "bench-server" => "server",
        "bench-receiver" => "receivers",
        "bench-client" => "baseline client",
        // The command's own runtime: the webhooks posted by the bench.
        "tokio-rt-worker" | "tokio-runtime-w" => "load generator",
        c if c.starts_with("store-") => "store (SQLite)",
        c if c.starts_with("log-") => "log (SQLite)",
        // The main thread: the bench's own bookkeeping, preparing requests.
        "idstream" => "main",
        _ => "other",
    }
}

/// (name, user + system CPU ticks) of every thread of this process, by thread id.
fn thread_ticks() -> HashMap<u32, (String, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return HashMap::new() };
    dir.filter_map(|d| {
        let d = d.ok()?;
        let tid = d.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(d.path().join("stat")).ok()?;
        let (comm, ticks) = stat_cpu_ticks(&stat)?;
        Some((tid, (comm.to_owned(), ticks)))
    })
    .collect()
}

/// (comm, user + system CPU ticks) of a `/proc/*/stat` line.
pub(crate) fn stat_cpu_ticks(stat: &str) -> Option<(&str, u64)> {
    // `pid (comm) state ...`: comm may hold spaces, so split at the last `)`.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd.
    Some((comm, fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?))
}
