//! `idstream bench stream`: the live-stream gateway against a minimal broadcast server, in the
//! same run.
//!
//! Both servers run as child processes of the bench (one process may open at most 20,000 files
//! on the project machine, and 19,000 connections need a socket on each side): `idstream serve`
//! with a temporary data directory and config, and the baseline, a minimal tokio +
//! tokio-tungstenite broadcast server with 4 KiB buffers (`bench stream --serve-baseline ADDR`,
//! hidden). Clients bind source addresses spread over 127.0.0.2–127.0.0.250.
//!
//! - `idle`: server RSS (`/proc/PID/status` VmRSS) before connecting and after N connections
//!   have authenticated, subscribed and sat idle; KB per connection.
//! - `fanout`: ~2,000 subscribers, each event matching one `subject` filter shared by
//!   `--fanout` connections; events are signed Didit webhooks POSTed at `--rate`. Latency is
//!   POST sent → client received (it includes verification, the durable append with fsync and
//!   the tailer), found by the event's `provider_event_id` (`bseq-N`): the normalised event
//!   does not carry the webhook's `metadata`, so the send time is kept in a table indexed by N.
//! - `broadcast`: one event to all N connections (`kinds: ["*"]`): POST sent → last client has
//!   it, repeated; median.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use idstream_core::signature::{didit, Secret};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use idstream_server::stream::auth::{mint_hs256, Claims};

pub(crate) const WEBHOOK_SECRET: &str = "bench-secret-0123456789abcdefghijklmnopqrstuv";
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdefghijklmnop";
/// Marks the sequence number in an event (`provider_event_id`) or a baseline message.
const SEQ_MARK: &str = "bseq-";
/// Connection handshakes in flight at once.
const CONNECT_CONCURRENCY: usize = 128;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Server memory per idle, subscribed connection.
    Idle,
    /// Deliveries/s and latency with ~2,000 subscribers, each event matching `--fanout` of them.
    Fanout,
    /// One event to every connection: time until the last one has it.
    Broadcast,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StreamArgs {
    #[arg(long, value_enum, default_value = "idle")]
    pub mode: Mode,
    /// Client connections (default: 19,000 for idle and broadcast, 2,000 for fanout).
    #[arg(long)]
    pub connections: Option<usize>,
    /// fanout: events per second POSTed to idstream.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// fanout: seconds of publishing per target.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// fanout: connections subscribed to each subject (deliveries per event).
    #[arg(long, default_value_t = 10)]
    pub fanout: usize,
    /// fanout: sessions sharing one subject.
    #[arg(long, default_value_t = 10)]
    pub sessions_per_subject: usize,
    /// fanout: concurrent HTTP connections POSTing webhooks.
    #[arg(long, default_value_t = 128)]
    pub publishers: usize,
    /// broadcast: rounds (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// idle: seconds to stay idle before measuring RSS.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// Skip the baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Internal: run the baseline broadcast server on this address.
    #[arg(long, hide = true)]
    pub serve_baseline: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamResult {
    pub target: String,
    pub mode: String,
    pub connections: usize,
    pub failed_connections: usize,
    pub connect_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_after_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kb_per_connection: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_deliveries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_message_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// broadcast: per round, sent → last client received.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_ms_runs: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ms_median: Option<f64>,
    /// broadcast: the server's user + system CPU time over the rounds, per round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_ms_per_round: Option<f64>,
}

pub async fn run(a: StreamArgs) -> anyhow::Result<()> {
    if let Some(addr) = a.serve_baseline {
        return serve_baseline(addr).await;
    }
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => eprintln!("open-file limit: {n}"),
        Err(e) => eprintln!("warning: cannot raise the open-file limit: {e}"),
    }
    let mut results = Vec::new();
    let kinds = if a.no_baseline { vec![Kind::Idstream] } else { vec![Kind::Idstream, Kind::Baseline] };
    let mut msg_bytes = 0.0;
    for kind in kinds {
        let r = match a.mode {
            Mode::Idle => idle(kind, &a).await?,
            Mode::Fanout => fanout(kind, &a, msg_bytes).await?,
            Mode::Broadcast => broadcast_mode(kind, &a).await?,
        };
        msg_bytes = r.mean_message_bytes.unwrap_or(msg_bytes);
        results.push(r);
    }
    print_table(a.mode, &results);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

fn print_table(mode: Mode, results: &[StreamResult]) {
    let f = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    match mode {
        Mode::Idle => {
            println!("| target | connections | RSS before MB | RSS after MB | KB per connection | connect s |");
            println!("|---|---|---|---|---|---|");
            for r in results {
                println!(
                    "| {} | {} | {} | {} | {} | {:.1} |",
                    r.target,
                    r.connections,
                    f(r.rss_before_kb.map(|k| k as f64 / 1024.0), 1),
                    f(r.rss_after_kb.map(|k| k as f64 / 1024.0), 1),
                    f(r.kb_per_connection, 2),
                    r.connect_secs
                );
            }
        }
        Mode::Fanout => {
            println!(
                "| target | connections | published/s | deliveries/s | delivered / expected | msg bytes | p50 ms | p99 ms | p99.9 ms | max ms |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|");
            for r in results {
                println!(
                    "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.connections,
                    f(r.published_per_sec, 0),
                    f(r.deliveries_per_sec, 0),
                    r.deliveries.unwrap_or(0),
                    r.expected_deliveries.unwrap_or(0),
                    f(r.mean_message_bytes, 0),
                    f(r.p50_ms, 2),
                    f(r.p99_ms, 2),
                    f(r.p999_ms, 2),
                    f(r.max_ms, 2)
                );
            }
        }
        Mode::Broadcast => {
            println!(
                "| target | connections | last client ms (median) | runs ms | p50 delivery ms | server CPU ms per round |"
            );
            println!("|---|---|---|---|---|---|");
            for r in results {
                let runs: Vec<String> = r.last_ms_runs.iter().map(|v| format!("{v:.1}")).collect();
                println!(
                    "| {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.connections,
                    f(r.last_ms_median, 1),
                    runs.join(", "),
                    f(r.p50_ms, 1),
                    f(r.server_cpu_ms_per_round, 0)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Idstream,
    Baseline,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Idstream => "idstream",
            Kind::Baseline => "minimal tokio-tungstenite broadcast (baseline)",
        }
    }
}

/// A server child process; killed when dropped.
pub(crate) struct Server {
    pub(crate) kind: Kind,
    child: tokio::process::Child,
    pid: u32,
    pub(crate) addr: SocketAddr,
    token: String,
    pub(crate) dir: tempfile::TempDir,
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    // The kernel picks a free port; the child binds it right after (a small, harmless race).
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Server {
    pub(crate) async fn start(kind: Kind) -> anyhow::Result<Server> {
        Self::start_with(kind, "").await
    }

    /// Like `start`; `extra` is appended to idstream's config (e.g. the scale-out backends).
    pub(crate) async fn start_with(kind: Kind, extra: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let addr = free_addr()?;
        let exe = std::env::current_exe()?;
        let mut cmd = tokio::process::Command::new(exe);
        match kind {
            Kind::Idstream => {
                let config = format!(
                    "[server]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nlog_format = \"json\"\n\n\
                     [stream]\nhs256_secrets = [\"{JWT_SECRET}\"]\nmax_connections = 100000\n\n\
                     [[sources]]\nid = \"bench\"\nprovider = \"didit\"\ntenant = \"bench\"\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}",
                    dir.path().join("data").display()
                );
                let path = dir.path().join("idstream.toml");
                std::fs::write(&path, config)?;
                cmd.arg("serve").arg("--config").arg(path);
            }
            Kind::Baseline => {
                cmd.args(["bench", "stream", "--serve-baseline", &addr.to_string()]);
            }
        }
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        cmd.stdout(log.try_clone()?).stderr(log).stdin(std::process::Stdio::null()).kill_on_drop(true);
        let mut child = cmd.spawn().context("starting the server process")?;
        let pid = child.id().context("server pid")?;
        let started = Instant::now();
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                anyhow::bail!("{} exited ({status}) before listening:\n{log}", kind.name());
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{} did not start listening", kind.name());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let exp = idstream_server::util::unix_now() as u64 + 3600;
        let claims =
            Claims { sub: "bench".into(), tenant: "bench".into(), kinds: vec!["*".into()], exp, nbf: None, iat: None };
        let token = mint_hs256(JWT_SECRET.as_bytes(), &claims);
        Ok(Server { kind, child, pid, addr, token, dir })
    }

    /// The server process's user + system CPU time so far, in ms (`/proc/PID/stat`, 10 ms
    /// ticks).
    fn cpu_ms(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let (_, ticks) = crate::bench_notify::stat_cpu_ticks(&stat).context("malformed /proc/PID/stat")?;
        Ok(ticks as f64 * 1000.0 / crate::bench_notify::CLOCK_TICKS_PER_SEC)
    }

    /// VmRSS of the server process, in KiB.
    fn rss_kb(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
        if std::env::var_os("IDSTREAM_BENCH_KEEP_LOG").is_some() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            eprintln!("--- {} log ---\n{log}", self.kind.name());
        }
    }

    /// One subscriber connection: idstream authenticates (bearer header) and subscribes with
    /// `filter` from `now`, waiting for the `subscribed` answer; the baseline just connects.
    pub(crate) async fn subscriber(&self, i: usize, filter: &serde_json::Value) -> anyhow::Result<Ws> {
        match self.kind {
            Kind::Idstream => {
                let mut ws = ws_connect(self.addr, i, "/v1/stream", Some(&self.token)).await?;
                let sub = serde_json::json!({"type": "subscribe", "id": "s", "filter": filter, "from": "now"});
                ws.send(Message::Text(sub.to_string().into())).await?;
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains(r#""type":"subscribed""#) => break,
                        Ok(Some(Ok(Message::Text(t)))) => anyhow::bail!("unexpected answer to subscribe: {t}"),
                        Ok(Some(Ok(Message::Close(c)))) => anyhow::bail!("closed: {c:?}"),
                        Ok(Some(Ok(_))) => continue,
                        Ok(Some(Err(e))) => return Err(e.into()),
                        Ok(None) => anyhow::bail!("closed before subscribed"),
                        Err(_) => anyhow::bail!("no answer to subscribe in 30 s"),
                    }
                }
                Ok(ws)
            }
            Kind::Baseline => ws_connect(self.addr, i, "/", None).await,
        }
    }
}

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// 4 KiB read and write buffers (clients and the baseline server).
fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(4096)
}

/// Connects from 127.0.0.(2 + i % 249), so 19,000 connections do not share one source address.
async fn ws_connect(addr: SocketAddr, i: usize, path: &str, bearer: Option<&str>) -> anyhow::Result<Ws> {
    let src = Ipv4Addr::new(127, 0, 0, 2 + (i % 249) as u8);
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((src, 0)))?;
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    if let Some(t) = bearer {
        req.headers_mut().insert(hyper::header::AUTHORIZATION, format!("Bearer {t}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(small_buffers())).await?;
    Ok(ws)
}

/// Opens `n` subscribers (`filter(i)` for connection i) with a progress bar. Failed connections
/// are counted, not fatal (the first error is printed).
async fn connect_all(
    server: &Server,
    n: usize,
    filter: impl Fn(usize) -> serde_json::Value,
) -> anyhow::Result<(Vec<Ws>, usize, f64)> {
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {bar:30} {pos}/{len} connections ({per_sec})")
            .expect("static template"),
    );
    bar.set_message(format!("connecting to {}", server.kind.name()));
    let started = Instant::now();
    let filters: Vec<serde_json::Value> = (0..n).map(filter).collect();
    let mut attempts = futures_util::stream::iter(filters.iter().enumerate())
        .map(|(i, f)| server.subscriber(i, f))
        .buffer_unordered(CONNECT_CONCURRENCY);
    let (mut conns, mut failed, mut first_err) = (Vec::with_capacity(n), 0, None);
    while let Some(r) = attempts.next().await {
        match r {
            Ok(ws) => conns.push(ws),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
        bar.inc(1);
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    eprintln!("{}: {} connected in {secs:.1} s, {failed} failed", server.kind.name(), conns.len());
    if let Some(e) = first_err {
        eprintln!("first connection error: {e:#}");
    }
    anyhow::ensure!(!conns.is_empty(), "no connection succeeded");
    Ok((conns, failed, secs))
}

// ---------------------------------------------------------------------------------------------
// Receiving

/// Microseconds since the bench started (one clock for sending and receiving).
pub(crate) fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// What every client reader updates.
struct Shared {
    /// Send time (µs) by sequence number; 0 = not sent.
    sent: Vec<AtomicU64>,
    received: AtomicU64,
    bytes: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

impl Shared {
    fn new(seqs: usize) -> Arc<Shared> {
        Arc::new(Shared {
            sent: (0..seqs).map(|_| AtomicU64::new(0)).collect(),
            received: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
            hist: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")),
        })
    }

    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.first_us.store(u64::MAX, Ordering::Relaxed);
        self.last_us.store(0, Ordering::Relaxed);
    }

    fn on_message(&self, text: &str) {
        let now = now_us();
        let Some(seq) = parse_seq(text) else { return };
        let Some(sent) = self.sent.get(seq).map(|s| s.load(Ordering::Acquire)) else { return };
        if sent > 0 {
            self.hist.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(now.saturating_sub(sent).max(1));
        }
        self.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        self.first_us.fetch_min(now, Ordering::Relaxed);
        self.last_us.fetch_max(now, Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Release);
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.lock().unwrap_or_else(|e| e.into_inner()).value_at_quantile(q) as f64 / 1000.0
    }
}

fn parse_seq(text: &str) -> Option<usize> {
    let at = text.find(SEQ_MARK)? + SEQ_MARK.len();
    let digits = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Starts one reader task per connection; they stop when `stop` is cancelled.
fn spawn_readers(conns: Vec<Ws>, shared: &Arc<Shared>, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    conns
        .into_iter()
        .map(|mut ws| {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        m = ws.next() => match m {
                            Some(Ok(Message::Text(t))) => shared.on_message(t.as_str()),
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        },
                    }
                }
            })
        })
        .collect()
}

/// Waits until `received` reaches `want`, or `patience` passes without progress.
async fn wait_for(shared: &Shared, want: u64, patience: Duration) -> bool {
    let mut last = (shared.received.load(Ordering::Acquire), Instant::now());
    loop {
        let got = shared.received.load(Ordering::Acquire);
        if got >= want {
            return true;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > patience {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Publishing

/// A signed Didit v3 `status.updated` webhook whose `event_id` carries the sequence number.
struct Prepared {
    body: Bytes,
    headers: hyper::HeaderMap,
}

fn prepare(seq: usize, session: &str, subject: &str) -> Prepared {
    let secret = Secret::new(WEBHOOK_SECRET);
    let ts = idstream_server::util::unix_now();
    let (status, webhook_type) = ("In Progress", "status.updated");
    let body = serde_json::json!({
        "created_at": ts,
        "environment": "sandbox",
        "event_id": format!("{SEQ_MARK}{seq}"),
        "metadata": {"bench": "stream"},
        "session_id": session,
        "status": status,
        "timestamp": ts,
        "vendor_data": subject,
        "webhook_type": webhook_type,
    })
    .to_string()
    .into_bytes();
    let pairs = [
        ("content-type", "application/json".to_owned()),
        ("x-timestamp", ts.to_string()),
        ("x-signature-v2", didit::sign_v2(&secret, &body).expect("generated JSON")),
        ("x-signature", didit::sign_raw(&secret, &body)),
        ("x-signature-simple", didit::sign_simple(&secret, ts, session, status, webhook_type)),
    ];
    let headers =
        pairs.into_iter().map(|(k, v)| (k.parse().expect("static name"), v.parse().expect("ASCII value"))).collect();
    Prepared { body: Bytes::from(body), headers }
}

pub(crate) type HttpSender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub(crate) async fn http_conn(addr: SocketAddr) -> anyhow::Result<HttpSender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// POSTs one webhook to `/webhooks/bench`; true on 2xx.
async fn post(sender: &mut HttpSender, addr: SocketAddr, p: &Prepared) -> anyhow::Result<bool> {
    let mut req = hyper::Request::post(format!("http://{addr}/webhooks/bench")).body(Full::new(p.body.clone()))?;
    *req.headers_mut() = p.headers.clone();
    req.headers_mut().insert(hyper::header::HOST, addr.to_string().parse()?);
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let ok = resp.status().is_success();
    resp.into_body().collect().await?;
    Ok(ok)
}

/// A baseline message of about `size` bytes carrying `seq`.
fn baseline_message(seq: usize, size: usize) -> String {
    let head = format!(r#"{{"type":"event","event_id":"{SEQ_MARK}{seq}","pad":""#);
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The publisher connection of the baseline (path `/publish`).
async fn baseline_publisher(addr: SocketAddr) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}/publish"), stream, Some(small_buffers()))
            .await?;
    Ok(ws)
}

// ---------------------------------------------------------------------------------------------
// Modes

fn all_kinds() -> serde_json::Value {
    serde_json::json!({"kinds": ["*"]})
}

async fn idle(kind: Kind, a: &StreamArgs) -> anyhow::Result<StreamResult> {
    let n = a.connections.unwrap_or(19_000);
    let server = Server::start(kind).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss_kb()?;
    let (conns, failed, connect_secs) = connect_all(&server, n, |_| all_kinds()).await?;
    let connected = conns.len();
    let shared = Shared::new(1);
    let stop = CancellationToken::new();
    let readers = spawn_readers(conns, &shared, &stop);
    eprintln!("idle for {} s ...", a.idle_secs);
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let after = server.rss_kb()?;
    let kb = (after as f64 - before as f64) / connected as f64;
    eprintln!("{}: RSS {before} kB → {after} kB: {kb:.2} KB per connection", kind.name());
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    server.stop().await;
    Ok(StreamResult {
        target: kind.name().into(),
        mode: "idle".into(),
        connections: connected,
        failed_connections: failed,
        connect_secs,
        rss_before_kb: Some(before),
        rss_after_kb: Some(after),
        kb_per_connection: Some(kb),
        ..Default::default()
    })
}

async fn broadcast_mode(kind: Kind, a: &StreamArgs) -> anyhow::Result<StreamResult> {
    let n = a.connections.unwrap_or(19_000);
    let server = Server::start(kind).await?;
    let (conns, failed, connect_secs) = connect_all(&server, n, |_| all_kinds()).await?;
    let connected = conns.len() as u64;
    let shared = Shared::new(a.repeats + 1);
    let stop = CancellationToken::new();
    let readers = spawn_readers(conns, &shared, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut http = match kind {
        Kind::Idstream => Some(http_conn(server.addr).await?),
        Kind::Baseline => None,
    };
    let mut publisher = match kind {
        Kind::Baseline => Some(baseline_publisher(server.addr).await?),
        Kind::Idstream => None,
    };
    let mut runs = Vec::new();
    let cpu_before = server.cpu_ms()?;
    for round in 0..a.repeats {
        shared.reset();
        let prepared = prepare(round, "bench-session-broadcast", "bench-user-broadcast");
        let sent = now_us();
        shared.sent[round].store(sent, Ordering::Release);
        if let Some(h) = &mut http {
            anyhow::ensure!(post(h, server.addr, &prepared).await?, "webhook refused");
        }
        if let Some(p) = &mut publisher {
            p.send(Message::Text(baseline_message(round, 700).into())).await?;
        }
        let complete = wait_for(&shared, connected, Duration::from_secs(10)).await;
        let got = shared.received.load(Ordering::Acquire);
        let last_ms = (shared.last_us.load(Ordering::Relaxed).saturating_sub(sent)) as f64 / 1000.0;
        let first_ms = (shared.first_us.load(Ordering::Relaxed).saturating_sub(sent)) as f64 / 1000.0;
        eprintln!(
            "{} round {}: {got}/{connected} clients, first after {first_ms:.1} ms, last after {last_ms:.1} ms{}",
            kind.name(),
            round + 1,
            if complete { "" } else { " (INCOMPLETE)" }
        );
        runs.push(last_ms);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_ms_per_round = (server.cpu_ms()? - cpu_before) / a.repeats.max(1) as f64;
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    server.stop().await;
    Ok(StreamResult {
        target: kind.name().into(),
        mode: "broadcast".into(),
        connections: connected as usize,
        failed_connections: failed,
        connect_secs,
        last_ms_median: Some(median(&runs)),
        last_ms_runs: runs,
        server_cpu_ms_per_round: Some(cpu_ms_per_round),
        p50_ms: Some(shared.ms(0.5)),
        p99_ms: Some(shared.ms(0.99)),
        ..Default::default()
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

/// `baseline_bytes`: the mean idstream message size measured just before, so the baseline
/// sends messages of the same size.
async fn fanout(kind: Kind, a: &StreamArgs, baseline_bytes: f64) -> anyhow::Result<StreamResult> {
    let n = a.connections.unwrap_or(2_000);
    anyhow::ensure!(a.fanout >= 1 && a.fanout <= n, "--fanout must be between 1 and --connections");
    anyhow::ensure!(a.rate > 0 && a.duration > 0, "--rate and --duration must be positive");
    let subjects = (n / a.fanout).max(1);
    let sessions = subjects * a.sessions_per_subject.max(1);
    let server = Server::start(kind).await?;
    let (conns, failed, connect_secs) =
        connect_all(&server, n, |i| serde_json::json!({"subject": format!("bench-user-{}", i % subjects)})).await?;
    let connected = conns.len();
    // The baseline delivers every message to every client: it publishes rate × fanout /
    // clients messages per second, so both targets are asked for the same deliveries/s.
    let (msg_rate, per_msg) = match kind {
        Kind::Idstream => (a.rate as f64, a.fanout as u64),
        Kind::Baseline => (a.rate as f64 * a.fanout as f64 / connected as f64, connected as u64),
    };
    let total = (msg_rate * a.duration as f64).ceil() as usize;
    let shared = Shared::new(total + 1);
    let prepared: Arc<Vec<Prepared>> = Arc::new(match kind {
        Kind::Idstream => {
            eprintln!("signing {total} webhooks ...");
            (0..total)
                .map(|seq| {
                    let s = seq % sessions;
                    prepare(seq, &format!("bench-session-{s}"), &format!("bench-user-{}", s % subjects))
                })
                .collect()
        }
        Kind::Baseline => Vec::new(),
    });
    let stop = CancellationToken::new();
    let readers = spawn_readers(conns, &shared, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let bar = ProgressBar::new(a.duration).with_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {bar:30} {pos}/{len} s").expect("static template"),
    );
    bar.set_message(format!("{} at {msg_rate:.0} messages/s", kind.name()));
    let ticker = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            let mut i = tokio::time::interval(Duration::from_secs(1));
            i.tick().await;
            loop {
                i.tick().await;
                bar.inc(1);
                bar.set_message(format!("{} deliveries", shared.received.load(Ordering::Relaxed)));
            }
        })
    };
    let started_us = now_us();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.duration);
    let (published, refused) = match kind {
        Kind::Idstream => {
            let next = Arc::new(AtomicUsize::new(0));
            let pubs = a.publishers.max(1);
            let iv = Duration::from_secs_f64(pubs as f64 / msg_rate);
            let mut tasks = Vec::new();
            for c in 0..pubs {
                let (prepared, next, shared) = (prepared.clone(), next.clone(), shared.clone());
                let addr = server.addr;
                tasks.push(tokio::spawn(async move {
                    let mut sender = http_conn(addr).await?;
                    let start = tokio::time::Instant::now() + iv.mul_f64(c as f64 / pubs as f64);
                    let mut t = tokio::time::interval_at(start, iv);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let (mut ok, mut bad) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        t.tick().await;
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = prepared.get(i) else { break };
                        shared.sent[i].store(now_us(), Ordering::Release);
                        if post(&mut sender, addr, p).await? {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                    }
                    anyhow::Ok((ok, bad))
                }));
            }
            let (mut ok, mut bad) = (0, 0);
            for t in tasks {
                let (o, b) = t.await??;
                ok += o;
                bad += b;
            }
            (ok, bad)
        }
        Kind::Baseline => {
            let size = if baseline_bytes > 0.0 { baseline_bytes as usize } else { 700 };
            let mut ws = baseline_publisher(server.addr).await?;
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / msg_rate));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0u64;
            for seq in 0..total {
                t.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                shared.sent[seq].store(now_us(), Ordering::Release);
                ws.send(Message::Text(baseline_message(seq, size).into())).await?;
                sent += 1;
            }
            (sent, 0)
        }
    };
    let publish_secs = started.elapsed().as_secs_f64();
    let expected = published * per_msg;
    let complete = wait_for(&shared, expected, Duration::from_secs(5)).await;
    ticker.abort();
    bar.finish_and_clear();
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    server.stop().await;
    let delivered = shared.received.load(Ordering::Acquire);
    let span = (shared.last_us.load(Ordering::Relaxed).saturating_sub(started_us)) as f64 / 1e6;
    let r = StreamResult {
        target: kind.name().into(),
        mode: "fanout".into(),
        connections: connected,
        failed_connections: failed,
        connect_secs,
        published: Some(published),
        published_per_sec: Some(published as f64 / publish_secs),
        expected_deliveries: Some(expected),
        deliveries: Some(delivered),
        deliveries_per_sec: Some(delivered as f64 / span.max(publish_secs)),
        mean_message_bytes: Some(shared.bytes.load(Ordering::Relaxed) as f64 / delivered.max(1) as f64),
        p50_ms: Some(shared.ms(0.5)),
        p99_ms: Some(shared.ms(0.99)),
        p999_ms: Some(shared.ms(0.999)),
        max_ms: Some(shared.hist.lock().unwrap_or_else(|e| e.into_inner()).max() as f64 / 1000.0),
        ..Default::default()
    };
    eprintln!(
        "{}: published {published} ({:.0}/s, {refused} refused), delivered {delivered}/{expected}{} = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        kind.name(),
        r.published_per_sec.unwrap_or(0.0),
        if complete { "" } else { " (INCOMPLETE)" },
        r.deliveries_per_sec.unwrap_or(0.0),
        r.p50_ms.unwrap_or(0.0),
        r.p99_ms.unwrap_or(0.0)
    );
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// The baseline server

/// A minimal WebSocket broadcast server: every connection gets every message published on a
/// `/publish` connection, through one `tokio::sync::broadcast` channel; subscribers' own
/// messages are ignored. 4 KiB read and write buffers.
async fn serve_baseline(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (tx, _) = broadcast::channel::<Utf8Bytes>(1024);
    loop {
        let (sock, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            let mut publisher = false;
            // The callback's signature (and its large error type) is tungstenite's.
            #[allow(clippy::result_large_err)]
            let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                      resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                publisher = req.uri().path() == "/publish";
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(sock, cb, Some(small_buffers())).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            if publisher {
                while let Some(Ok(m)) = stream.next().await {
                    if let Message::Text(t) = m {
                        let _ = tx.send(t);
                    }
                }
                return;
            }
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(t) => {
                            // Write what is queued, then flush once.
                            if sink.feed(Message::Text(t)).await.is_err() {
                                break;
                            }
                            while let Ok(t) = rx.try_recv() {
                                if sink.feed(Message::Text(t)).await.is_err() {
                                    return;
                                }
                            }
                            if sink.flush().await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    m = stream.next() => match m {
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers() {
        assert_eq!(parse_seq(r#"{"provider_event_id":"bseq-42","x":1}"#), Some(42));
        assert_eq!(parse_seq(&baseline_message(7, 700)), Some(7));
        assert_eq!(baseline_message(7, 700).len(), 700);
        assert!(serde_json::from_str::<serde_json::Value>(&baseline_message(7, 700)).is_ok());
        assert_eq!(parse_seq("{}"), None);
    }
}
