//! `idstream bench verifications`: what `POST /v1/verifications` costs on top of the provider.
//!
//! Two targets, one after the other, with the same HTTP client, the same concurrency and the
//! same duration, each against a fresh `idstream sandbox` whose simulated latency is zero:
//!
//! 1. **idstream**: `POST /v1/verifications` (authentication, validation, the Didit client with
//!    its breaker and metrics, the call to the sandbox, the durable `session.created` commit);
//! 2. **baseline**: the sandbox's `POST /v3/session/` called directly (what the provider call
//!    alone costs here).
//!
//! The difference is idstream's own overhead. The sandbox and the idstream server each run on
//! their own 2-thread runtime, as separate processes would; every request creates a new
//! session (a new subject each time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{self, SandboxConfig};
use idstream_server::config::Config;
use idstream_server::state::AppState;

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Concurrent clients (each sends its next request when the previous one was answered).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Seconds of measured load per target.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub backends: crate::bench::BackendArgs,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub target: String,
    pub connections: usize,
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

const API_KEY: &str = "bench-verifications-service-key";
const DIDIT_KEY: &str = "bench-didit-api-key";
const SECRET: &str = "bench-secret-0123456789abcdefghijklmnopqrstuv";

/// A sandbox with no latency, on its own runtime thread.
fn start_sandbox() -> anyhow::Result<(SocketAddr, CancellationToken, std::thread::JoinHandle<()>)> {
    crate::bench::spawn_server(|l, t| async move {
        let cfg = SandboxConfig { seed: 1, ..SandboxConfig::for_tests(SECRET, DIDIT_KEY) };
        let _ = sandbox::serve(l, cfg, t).await;
    })
}

pub async fn run(a: VerifyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.connections > 0, "--connections must be at least 1");
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.connections).build()?;

    // 1. idstream in front of a sandbox.
    let (sb_addr, sb_stop, sb_handle) = start_sandbox()?;
    let tmp = tempfile::tempdir()?;
    let backends = a.backends.prepare().await?;
    let mut cfg = Config::from_toml(&format!(
        r#"{backend}
[rate_limits]
enabled = false

[[sources]]
id = "bench"
provider = "didit"
tenant = "bench"
secrets = ["{SECRET}"]

[[api_keys]]
name = "svc"
tenant = "bench"
role = "service"
sha256 = "{key}"

[[providers]]
id = "didit"
kind = "didit"
api_key = "{DIDIT_KEY}"
base_url = "http://{sb_addr}"
workflow_id = "wf-bench"
source = "bench"

[verifications]
reconcile = false
"#,
        backend = backends.toml,
        key = idstream_server::state::hash_api_key(API_KEY),
    ))?;
    cfg.server.data_dir = tmp.path().to_path_buf();
    let state = Arc::new(AppState::open(&cfg).await?);
    let st = state.clone();
    let (addr, stop, handle) = crate::bench::spawn_server(move |l, t| async move {
        let _ = idstream_server::server::serve(l, st, t, Duration::from_secs(5)).await;
    })?;
    let url = format!("http://{addr}/v1/verifications");
    let name = format!("idstream POST /v1/verifications ({})", a.backends.label());
    let c = client.clone();
    let mine = measure(&name, &a, move |n| {
        c.post(&url).bearer_auth(API_KEY).json(&json!({"subject": format!("bench-{n}")})).send()
    })
    .await?;
    stop.cancel();
    handle.join().ok();
    sb_stop.cancel();
    sb_handle.join().ok();
    eprintln!("idstream: {} events in the log", state.log.head());

    // 2. The baseline: the same client calling a fresh sandbox's create-session directly.
    let (sb_addr, sb_stop, sb_handle) = start_sandbox()?;
    let url = format!("http://{sb_addr}/v3/session/");
    let c = client.clone();
    let base = measure("sandbox POST /v3/session/ directly (baseline)", &a, move |n| {
        c.post(&url)
            .header("x-api-key", DIDIT_KEY)
            .json(&json!({"workflow_id": "wf-bench", "vendor_data": format!("bench-{n}")}))
            .send()
    })
    .await?;
    sb_stop.cancel();
    sb_handle.join().ok();

    let results = [mine, base];
    println!("| target | conns | ok/s | p50 ms | p99 ms | max ms | failed |");
    println!("|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            r.target, r.connections, r.per_sec, r.p50_ms, r.p99_ms, r.max_ms, r.failed
        );
    }
    println!(
        "idstream's own overhead: {:+.2} ms at p50, {:+.2} ms at p99; throughput {:.0}% of the baseline",
        results[0].p50_ms - results[1].p50_ms,
        results[0].p99_ms - results[1].p99_ms,
        100.0 * results[0].per_sec / results[1].per_sec.max(1.0)
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

/// Closed-loop load: `connections` clients, each sending request `n` (a unique number) as soon
/// as the previous one was answered, for `duration` seconds after a one-second warm-up.
async fn measure<F, Fut>(target: &str, a: &VerifyArgs, send: F) -> anyhow::Result<Measured>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send,
{
    eprintln!("{target}: {} connections, {} s ...", a.connections, a.duration);
    let next = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let measured_from = started + warmup;
    let until = measured_from + Duration::from_secs(a.duration);
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let (send, next) = (send.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut ok, mut failed) = (0u64, 0u64);
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let good = match send(n).await {
                    Ok(r) => {
                        let good = r.status().is_success();
                        let _ = r.bytes().await;
                        good
                    }
                    Err(_) => false,
                };
                if t0 < measured_from {
                    continue;
                }
                if good {
                    ok += 1;
                    hist.record(t0.elapsed().as_micros().max(1) as u64).expect("in bounds");
                } else {
                    failed += 1;
                }
            }
            (hist, ok, failed)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (h, o, f) = t.await?;
        hist.add(h).expect("same bounds");
        ok += o;
        failed += f;
    }
    let secs = (Instant::now().min(until + Duration::from_secs(60)) - measured_from).as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(Measured {
        target: target.to_owned(),
        connections: a.connections,
        ok,
        failed,
        secs,
        per_sec: ok as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
    })
}
