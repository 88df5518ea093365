//! `idstream bench`: the load harness behind BENCHMARKS.md.
//!
//! `bench ingest` measures durable webhook ingest and, in the same run with the same client,
//! a bare axum handler that answers 200 without work, so the figures are a ratio against a
//! baseline on the same (noisy, shared) machine rather than absolute claims. The servers run
//! on their own runtime thread; the load generator uses raw keep-alive HTTP/1.1 connections
//! (hyper) with pre-signed requests, so the client spends as little CPU as possible.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::personas::{self as sim, SimConfig};
use anyhow::Context as _;
use axum::body::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use idstream_core::signature::{didit, Secret};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use idstream_server::config::Config;
use idstream_server::log::sqlite::{SqliteLog, SqliteOptions};
use idstream_server::state::AppState;
use idstream_server::util::unix_now;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchWhat {
    /// Durable ingest of unique signed Didit v3 webhooks vs. a bare axum handler.
    Ingest(IngestArgs),
    /// The embedded log alone: concurrent appenders, no HTTP (what the writer can do).
    Log(LogArgs),
    /// Live streams (WebSocket) vs. a minimal broadcast server: idle memory, fan-out, broadcast.
    Stream(crate::bench_stream::StreamArgs),
    /// The whole pipeline at a fixed rate: webhook → decision → WebSocket, end to end.
    Decide(crate::bench_decide::DecideArgs),
    /// Outbound notifications: deliveries/s (1 and N endpoints) and log append → delivered
    /// latency at fixed rates, vs. a bare HTTP client posting the same requests.
    Notify(crate::bench_notify::NotifyArgs),
    /// `POST /v1/verifications` against a zero-latency sandbox vs. the sandbox's create-session
    /// called directly: idstream's own overhead in starting a verification.
    Verifications(crate::bench_verify::VerifyArgs),
    /// `POST /v1/verifications/document` at a fixed rate (small and large images): upload →
    /// decision latency and the server's memory, vs. the sandbox's ID verification directly.
    Documents(crate::bench_documents::DocumentsArgs),
    /// The dashboard's read API over a large store (1,000,000 decisions by default): review
    /// queue pages, identity search, the session view and statistics, vs. `/healthz`.
    Queries(crate::bench_queries::QueriesArgs),
    /// Write unique signed Didit v3 webhooks to a file for an external load generator
    /// (`scripts/wrk-ingest.lua`): one line each, `x-timestamp`, the three signatures and the
    /// body, tab-separated.
    Prepare(PrepareArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct PrepareArgs {
    /// How many (each unique: the load generator wraps around after the last, sending
    /// duplicates).
    #[arg(long, default_value_t = 300_000)]
    pub count: usize,
    /// The source's webhook secret.
    #[arg(long, env = "IDSTREAM_BENCH_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Output file.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Concurrent appenders (each waits for its append before the next, like a request).
    #[arg(long, default_value_t = 64)]
    pub appenders: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of measured load per target.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Target request rate (per second, all connections together); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Data directory for the idstream server (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Skip the bare-handler baseline.
    #[arg(long)]
    pub no_baseline: bool,
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// Which backends the measured idstream uses: embedded (default), or NATS JetStream +
/// PostgreSQL with a fresh stream and database for the run, removed when the run ends.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BackendArgs {
    /// Run on NATS JetStream at this URL (with --postgres); the run gets its own stream.
    #[arg(long, requires = "postgres")]
    pub nats: Option<String>,
    /// Run on PostgreSQL (with --nats); the run gets its own database, created beside this URL's.
    #[arg(long, requires = "nats")]
    pub postgres: Option<String>,
    /// Leave the run's database and stream behind when it ends (to inspect them).
    #[arg(long, requires = "nats")]
    pub keep_backends: bool,
}

impl BackendArgs {
    pub fn label(&self) -> &'static str {
        if self.nats.is_some() {
            "NATS + PostgreSQL"
        } else {
            "embedded"
        }
    }

    /// The `[log]` / `[store]` config of the run (empty for embedded); creates the database.
    /// Keep the answer until the servers using it have stopped: dropping it removes what it made.
    pub async fn prepare(&self) -> anyhow::Result<RunBackends> {
        let (Some(nats), Some(pg)) = (&self.nats, &self.postgres) else { return Ok(RunBackends::default()) };
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let tag = &tag[tag.len() - 12..];
        let (database, stream) = (format!("idstream_bench_{tag}"), format!("BENCH_{tag}"));
        let url = idstream_server::store::pg::create_database(pg, &database).await?;
        eprintln!("scale-out backends: database {database}, stream {stream}");
        Ok(RunBackends {
            toml: format!(
                "[log]\nurl = \"{nats}\"\nnats_stream = \"{stream}\"\nnats_subject_prefix = \"bench_{tag}\"\n\n[store]\nurl = \"{url}\"\n\n"
            ),
            made: (!self.keep_backends).then(|| Made { postgres: pg.clone(), database, nats: nats.clone(), stream }),
        })
    }
}

/// A run's backend config; the database and stream it made are dropped with it (each bench run
/// would otherwise leave a database and a stream of its events behind).
#[derive(Default)]
pub struct RunBackends {
    pub toml: String,
    made: Option<Made>,
}

struct Made {
    postgres: String,
    database: String,
    nats: String,
    stream: String,
}

impl Drop for RunBackends {
    fn drop(&mut self) {
        let Some(m) = self.made.take() else { return };
        // Drop may run inside the bench's runtime, which cannot block on itself: a thread of its own.
        let removed = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                idstream_server::store::pg::drop_database(&m.postgres, &m.database).await?;
                idstream_server::log::nats::delete_stream(&m.nats, &m.stream).await?;
                eprintln!("scale-out backends: dropped database {} and stream {}", m.database, m.stream);
                anyhow::Ok(())
            })
        })
        .join();
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("scale-out backends: could not remove the run's database or stream: {e:#}"),
            Err(_) => eprintln!("scale-out backends: removing the run's database and stream panicked"),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    pub target: String,
    pub connections: usize,
    pub requested_rate: u64,
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Starts `idstream serve --config <cfg>` (this binary) as its own process, killed when the
/// handle drops; answers when it serves, with its address. Its log goes to a drain.
pub async fn spawn_serve(cfg: &std::path::Path) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(cfg)
        .env("IDSTREAM_SERVER__LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,idstream=info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["fields"]["message"] == "idstream serving" {
                return Ok(v["fields"]["listen"].as_str().unwrap_or_default().to_owned());
            }
        }
        anyhow::bail!("idstream serve exited before serving")
    })
    .await
    .map_err(|_| anyhow::anyhow!("idstream serve did not start within 120 s"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Ingest(a) => ingest(a).await,
        BenchWhat::Log(a) => log_only(a).await,
        BenchWhat::Stream(a) => crate::bench_stream::run(a).await,
        BenchWhat::Decide(a) => crate::bench_decide::run(a).await,
        BenchWhat::Notify(a) => crate::bench_notify::run(a).await,
        BenchWhat::Verifications(a) => crate::bench_verify::run(a).await,
        BenchWhat::Documents(a) => crate::bench_documents::run(a).await,
        BenchWhat::Queries(a) => crate::bench_queries::run(a).await,
        BenchWhat::Prepare(a) => prepare_file(a),
    }
}

/// `bench prepare`: the signed requests, one line each (timestamp, signature V2, raw signature,
/// simple signature, body). Bodies are compact JSON, so they hold no tab or newline.
fn prepare_file(a: PrepareArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    anyhow::ensure!(a.count > 0, "--count must be at least 1");
    let secret = Secret::new(a.secret.clone());
    let bar = indicatif::ProgressBar::new(a.count as u64);
    let file = std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for chunk_start in (0..a.count).step_by(50_000) {
        let n = (a.count - chunk_start).min(50_000);
        // Each chunk its own sessions (the seed varies), so no two lines share a dedupe key.
        for p in prepare_seeded(n, &secret, 7 + chunk_start as u64) {
            let h = |k: &str| p.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            out.write_all(
                format!(
                    "{}\t{}\t{}\t{}\t",
                    h("x-timestamp"),
                    h("x-signature-v2"),
                    h("x-signature"),
                    h("x-signature-simple")
                )
                .as_bytes(),
            )?;
            out.write_all(&p.body)?;
            out.write_all(b"\n")?;
        }
        bar.inc(n as u64);
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("wrote {} signed webhooks to {} (valid for the source's timestamp tolerance)", a.count, a.out.display());
    Ok(())
}

/// A pre-signed request: body and Didit headers.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) body: Bytes,
    pub(crate) headers: hyper::HeaderMap,
}

/// Unique signed Didit v3 deliveries (no duplicates), realistic bodies from the simulator.
pub(crate) fn prepare(count: usize, secret: &Secret) -> Vec<Prepared> {
    prepare_seeded(count, secret, 7)
}

pub(crate) fn prepare_seeded(count: usize, secret: &Secret, seed: u64) -> Vec<Prepared> {
    let deliveries = sim::generate(&SimConfig {
        seed,
        sessions: count / 3 + 1,
        start_unix: unix_now(),
        duplicate_rate: 0.0,
        retry_rate: 0.0,
        mix: None,
    });
    deliveries
        .into_iter()
        .take(count)
        .map(|d| {
            let pairs = [
                ("content-type", "application/json".to_owned()),
                ("x-timestamp", d.timestamp.to_string()),
                ("x-signature-v2", didit::sign_v2(secret, &d.body).expect("generated JSON")),
                ("x-signature", didit::sign_raw(secret, &d.body)),
                (
                    "x-signature-simple",
                    didit::sign_simple(secret, d.timestamp, &d.session_id, &d.status, &d.webhook_type),
                ),
            ];
            let headers = pairs
                .into_iter()
                .map(|(k, v)| (k.parse().expect("static name"), v.parse().expect("ASCII value")))
                .collect();
            Prepared { body: Bytes::from(d.body), headers }
        })
        .collect()
}

/// Starts a server on its own 2-thread runtime (threads named `bench-server`, as a separate
/// process would have), returning its address and the token that stops it.
pub(crate) fn spawn_server<F, Fut>(
    make: F,
) -> anyhow::Result<(SocketAddr, CancellationToken, std::thread::JoinHandle<()>)>
where
    F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-server")
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("report addr");
            make(listener, t).await;
        });
    });
    let addr = rx.recv().context("server thread failed to start")?;
    Ok((addr, token, handle))
}

async fn ingest(a: IngestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.connections > 0, "--connections must be at least 1");
    let secret = Secret::new("bench-secret-0123456789abcdefghijklmnopqrstuv");
    // Enough unique events for the whole run at a generous 60k/s (or the fixed rate).
    let per_sec = if a.rate > 0 { a.rate as usize + a.rate as usize / 5 } else { 60_000 };
    let count = per_sec * (a.duration as usize + 2);
    eprintln!("preparing {count} unique signed Didit v3 webhooks ...");
    let prepared = Arc::new(prepare(count, &secret));
    let avg = prepared.iter().map(|p| p.body.len()).sum::<usize>() / prepared.len().max(1);
    eprintln!("average body {avg} bytes");

    let tmp;
    let data_dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let backends = a.backends.prepare().await?;
    let mut cfg = Config::from_toml(&format!(
        "{}[decisions]\nenabled = false\n\n[[sources]]\nid = \"bench\"\nprovider = \"didit\"\ntenant = \"bench\"\nsecrets = [\"{}\"]\n",
        backends.toml,
        secret.expose()
    ))?;
    cfg.server.data_dir = data_dir.clone();
    let state = Arc::new(AppState::open(&cfg).await?);
    let st = state.clone();
    let (addr, stop, handle) = spawn_server(move |l, t| async move {
        let _ = idstream_server::server::serve(l, st, t, Duration::from_secs(5)).await;
    })?;
    let before = writer_stats();
    let name = format!("idstream (durable ingest, {})", a.backends.label());
    let mut results = vec![load(&name, addr, prepared.clone(), &a).await?];
    let after = writer_stats();
    stop.cancel();
    handle.join().ok();
    let head = state.log.head();
    if a.backends.nats.is_some() {
        eprintln!("NATS JetStream: {head} events in the stream");
    } else {
        let (commits, entries, busy) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        eprintln!(
            "log writer: {head} events on disk; {commits:.0} commits, {:.1} events per commit, {:.2} ms per commit, busy {:.0}% of the run",
            entries / commits.max(1.0),
            busy * 1000.0 / commits.max(1.0),
            100.0 * busy / results[0].secs
        );
    }

    if !a.no_baseline {
        let (addr, stop, handle) = spawn_server(|l, t| async move {
            let app = axum::Router::new().route(
                "/webhooks/{source}",
                axum::routing::post(|_body: Bytes| async { axum::Json(serde_json::json!({})) }),
            );
            let _ = axum::serve(l, app).with_graceful_shutdown(t.cancelled_owned()).await;
        })?;
        results.push(load("bare axum handler (baseline)", addr, prepared.clone(), &a).await?);
        stop.cancel();
        handle.join().ok();
    }

    println!("| target | conns | rate asked | ok/s | p50 ms | p99 ms | p99.9 ms | max ms | failed |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.target,
            r.connections,
            if r.requested_rate == 0 { "max".to_string() } else { r.requested_rate.to_string() },
            r.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.failed
        );
    }
    if results.len() == 2 {
        println!("ratio idstream / bare handler: {:.2}", results[0].per_sec / results[1].per_sec.max(1e-9));
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

/// Drives `addr` with `a.connections` keep-alive connections for `a.duration` seconds.
async fn load(
    name: &str,
    addr: SocketAddr,
    prepared: Arc<Vec<Prepared>>,
    a: &IngestArgs,
) -> anyhow::Result<LoadResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let bar = ProgressBar::new(a.duration).with_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {bar:30} {pos}/{len} s").expect("static template"),
    );
    bar.set_message(name.to_owned());
    let ticker = tick_seconds(&bar);
    let per_conn_interval = (a.rate > 0).then(|| Duration::from_secs_f64(a.connections as f64 / a.rate as f64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let conns = a.connections as f64;
    let uri: hyper::Uri = format!("http://{addr}/webhooks/bench").parse()?;
    let host: hyper::header::HeaderValue = addr.to_string().parse()?;
    for c in 0..a.connections {
        let prepared = prepared.clone();
        let next = next.clone();
        let (uri, host) = (uri.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut ok, mut failed) = (0u64, 0u64);
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut ticker = per_conn_interval.map(|iv| {
                // Stagger connections so a fixed rate is spread evenly, not in bursts.
                let start = tokio::time::Instant::now() + iv.mul_f64(c as f64 / conns);
                let mut t = tokio::time::interval_at(start, iv);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while Instant::now() < deadline {
                // Latency counts from the scheduled send time in fixed-rate mode, so a stalled
                // server is not hidden by the client waiting (coordinated omission).
                let scheduled = match &mut ticker {
                    Some(t) => t.tick().await.into_std(),
                    None => Instant::now(),
                };
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = prepared.get(i) else { break };
                let mut req = hyper::Request::post(uri.clone()).body(Full::new(p.body.clone()))?;
                *req.headers_mut() = p.headers.clone();
                req.headers_mut().insert(hyper::header::HOST, host.clone());
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                if status.is_success() {
                    ok += 1;
                    hist.saturating_record(scheduled.elapsed().as_micros() as u64);
                } else {
                    failed += 1;
                }
            }
            anyhow::Ok((ok, failed, hist))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f, h) = t.await??;
        ok += o;
        failed += f;
        hist.add(h).expect("same bounds");
    }
    let secs = started.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    if next.load(Ordering::Relaxed) >= prepared.len() {
        eprintln!("warning: ran out of prepared events before the deadline; the rate below is still correct");
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let r = LoadResult {
        target: name.to_owned(),
        connections: a.connections,
        requested_rate: a.rate,
        ok,
        failed,
        secs,
        per_sec: ok as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
    };
    eprintln!("{name}: {:.0} ok/s, p50 {:.2} ms, p99 {:.2} ms, {failed} failed", r.per_sec, r.p50_ms, r.p99_ms);
    Ok(r)
}

/// Advances `bar` by one every second (a progress bar counting seconds); abort it when done.
pub(crate) fn tick_seconds(bar: &ProgressBar) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    tokio::spawn(async move {
        let mut i = tokio::time::interval(Duration::from_secs(1));
        i.tick().await;
        loop {
            i.tick().await;
            bar.inc(1);
        }
    })
}

/// (commits, entries, seconds spent committing) so far, read from the process's own metrics.
fn writer_stats() -> (f64, f64, f64) {
    writer_stats_in(&idstream_server::server::metrics_handle().render())
}

/// (commits, entries, seconds spent committing) of the log writer, from a Prometheus text page.
pub(crate) fn writer_stats_in(text: &str) -> (f64, f64, f64) {
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    (
        value("idstream_log_batch_entries_count"),
        value("idstream_log_batch_entries_sum"),
        value("idstream_log_commit_seconds_sum"),
    )
}

/// Appends realistic entries (event JSON + original body of simulator webhooks) straight to
/// the embedded log from `appenders` concurrent tasks.
async fn log_only(a: LogArgs) -> anyhow::Result<()> {
    use idstream_server::log::{EventLog as _, NewEntry};
    anyhow::ensure!(a.appenders > 0, "--appenders must be at least 1");
    let secret = Secret::new("bench-secret");
    let samples = prepare(2000, &secret);
    let dir = tempfile::tempdir()?;
    let log = Arc::new(SqliteLog::open(dir.path(), SqliteOptions::default())?);
    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let started = Instant::now();
    let before = writer_stats();
    let mut tasks = Vec::new();
    for t in 0..a.appenders {
        let (log, samples) = (log.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut n = 0usize;
            while Instant::now() < deadline {
                let p = &samples[(t * 31 + n) % samples.len()];
                let key = format!("bench/{t}/{n}");
                let entry = NewEntry {
                    id: uuid::Uuid::now_v7().to_string(),
                    tenant: "bench".into(),
                    source: "bench".into(),
                    kind: "verification.status_updated".into(),
                    partition_key: format!("session-{}", crate::simulate::stable_hash(&format!("{t}/{n}"))),
                    dedupe_key: Some(key),
                    event: p.body[..p.body.len().min(600)].to_vec(),
                    body: Some(p.body.to_vec()),
                };
                let t0 = Instant::now();
                log.append(vec![entry]).await?;
                hist.saturating_record(t0.elapsed().as_micros() as u64);
                n += 1;
            }
            anyhow::Ok(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for t in tasks {
        hist.add(t.await??).expect("same bounds");
    }
    let secs = started.elapsed().as_secs_f64();
    let after = writer_stats();
    let (commits, entries, busy) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    println!(
        "log only: {:.0} appends/s with {} appenders; p50 {:.2} ms, p99 {:.2} ms; {:.1} events per commit, {:.2} ms per commit, writer busy {:.0}%",
        hist.len() as f64 / secs,
        a.appenders,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        entries / commits.max(1.0),
        busy * 1000.0 / commits.max(1.0),
        100.0 * busy / secs
    );
    log.close().await;
    Ok(())
}
