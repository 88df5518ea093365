//! `idstream bench documents`: upload → decision latency of `POST /v1/verifications/document`
//! at a fixed rate, for a small and a large image, and the server's memory while it uploads.
//!
//! The server runs as its own process (`idstream serve`, this binary), so its resident memory
//! is its own: sampled from `/proc/<pid>/status` every 20 ms. A zero-latency `idstream sandbox`
//! runs in this process. Each request uploads one image with `?wait=true`: its answer comes when
//! idstream has stored the image, had it checked by the sandbox, recorded the result and decided
//! it. The baseline is the same upload posted at the same rate to the sandbox's
//! `POST /v3/id-verification/` directly (what the provider call alone costs here).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::sandbox::{self, SandboxConfig};
use idstream_server::documents::content::samples;

#[derive(clap::Args, Debug, Clone)]
pub struct DocumentsArgs {
    /// Uploads per second (open loop: sent on schedule whether or not earlier ones answered).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of measured load per target and size (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Concurrent uploads of the memory phase (closed loop: each sends its next upload when
    /// the previous one was answered).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Image sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [500_000u64, 5_000_000])]
    pub sizes: Vec<u64>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub target: String,
    pub size_bytes: u64,
    pub rate: f64,
    pub ok: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The idstream server's resident memory: before the run and its peak during it (MiB).
    pub rss_before_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
}

const API_KEY: &str = "bench-documents-service-key";
const DIDIT_KEY: &str = "bench-didit-api-key";
const SECRET: &str = "bench-secret-0123456789abcdefghijklmnopqrstuv";

/// The upload form: `image` as `front_image` (streamed from the shared buffer, not copied) and
/// the subject in `field`.
fn form(image: &bytes::Bytes, field: &'static str, subject: String) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::stream_with_length(image.clone(), image.len() as u64)
        .file_name("front.jpg")
        .mime_str("image/jpeg")
        .expect("a valid type");
    reqwest::multipart::Form::new().part("front_image", part).text(field, subject)
}

/// The server's resident set size in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

pub async fn run(a: DocumentsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.rate > 0.0, "--rate must be positive");
    let (sb_addr, sb_stop, sb_handle) = crate::bench::spawn_server(|l, t| async move {
        let cfg = SandboxConfig { seed: 1, ..SandboxConfig::for_tests(SECRET, DIDIT_KEY) };
        let _ = sandbox::serve(l, cfg, t).await;
    })?;
    let tmp = tempfile::tempdir()?;
    let cfg_path = tmp.path().join("idstream.toml");
    let max = a.sizes.iter().max().copied().unwrap_or(0).max(5_242_880);
    std::fs::write(
        &cfg_path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "{data}"

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

[documents]
max_file_bytes = {max}
max_request_bytes = {req}
"#,
            data = tmp.path().join("data").display(),
            key = idstream_server::state::hash_api_key(API_KEY),
            req = max * 2 + 65_536,
        ),
    )?;
    let (mut child, addr) = crate::bench::spawn_serve(&cfg_path).await?;
    let pid = child.id().expect("a running child has a pid");
    eprintln!("server pid {pid} at {addr}, sandbox at {sb_addr}");

    let client = reqwest::Client::new();
    let mut results = Vec::new();
    let mut memory = Vec::new();
    for &size in &a.sizes {
        let image = bytes::Bytes::from(samples::jpeg(1600, 1000, size.saturating_sub(60) as usize));
        let url = format!("http://{addr}/v1/verifications/document?wait=true");
        let (c, img) = (client.clone(), image.clone());
        let mine = measure(&format!("idstream upload → decision ({size} B)"), &a, size, Some(pid), move |n| {
            c.post(&url).bearer_auth(API_KEY).multipart(form(&img, "subject", format!("bench-{n}"))).send()
        })
        .await?;
        let url = format!("http://{sb_addr}/v3/id-verification/");
        let (c, img) = (client.clone(), image.clone());
        let base =
            measure(&format!("sandbox id-verification directly ({size} B, baseline)"), &a, size, None, move |n| {
                c.post(&url)
                    .header("x-api-key", DIDIT_KEY)
                    .multipart(form(&img, "vendor_data", format!("bench-{n}")))
                    .send()
            })
            .await?;
        results.push(mine);
        results.push(base);
        // Memory with the same number of uploads in flight, whatever their size.
        let url = format!("http://{addr}/v1/verifications/document");
        let (c, img) = (client.clone(), image.clone());
        memory.push(
            memory_phase(a.concurrency, a.duration.div_ceil(2), pid, size, move |n| {
                c.post(&url).bearer_auth(API_KEY).multipart(form(&img, "subject", format!("bench-mem-{n}"))).send()
            })
            .await,
        );
    }
    child.kill().await.ok();
    sb_stop.cancel();
    sb_handle.join().ok();

    println!("| target | rate/s | ok | p50 ms | p99 ms | max ms | failed | server RSS before → peak MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &results {
        let rss = match (r.rss_before_mib, r.rss_peak_mib) {
            (Some(b), Some(p)) => format!("{b:.1} → {p:.1}"),
            _ => "—".into(),
        };
        println!(
            "| {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.target, r.rate, r.ok, r.p50_ms, r.p99_ms, r.max_ms, r.failed, rss
        );
    }
    println!();
    println!("| image | concurrent uploads | uploads | server RSS before → peak MiB |");
    println!("|---|---|---|---|");
    for m in &memory {
        println!(
            "| {} B | {} | {} | {:.1} → {:.1} |",
            m.size_bytes, m.concurrency, m.uploads, m.rss_before_mib, m.rss_peak_mib
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&serde_json::json!({"latency": results, "memory": memory}))?)?;
    }
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Memory {
    pub size_bytes: u64,
    pub concurrency: usize,
    pub uploads: u64,
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
}

/// `concurrency` clients uploading back to back for `secs`; the server's peak RSS.
async fn memory_phase<F, Fut>(concurrency: usize, secs: u64, pid: u32, size: u64, send: F) -> Memory
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send,
{
    eprintln!("memory: {concurrency} concurrent uploads of {size} B for {secs} s ...");
    let before = rss_kib(pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(before));
    let until = Instant::now() + Duration::from_secs(secs);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while Instant::now() < until + Duration::from_millis(200) {
                if let Some(k) = rss_kib(pid) {
                    peak.fetch_max(k, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (send, next, done) = (send.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if let Ok(r) = send(n).await {
                    if r.status().is_success() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = r.bytes().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.ok();
    }
    sampler.await.ok();
    let m = Memory {
        size_bytes: size,
        concurrency,
        uploads: done.load(Ordering::Relaxed),
        rss_before_mib: before as f64 / 1024.0,
        rss_peak_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
    };
    eprintln!("  done: {} uploads, RSS {:.1} → {:.1} MiB", m.uploads, m.rss_before_mib, m.rss_peak_mib);
    m
}

/// Open-loop load at `a.rate`; latencies of answered 2xx requests after a one-second warm-up.
async fn measure<F, Fut>(
    target: &str,
    a: &DocumentsArgs,
    size: u64,
    pid: Option<u32>,
    send: F,
) -> anyhow::Result<Measured>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    eprintln!("{target}: {:.0}/s for {} s ...", a.rate, a.duration);
    let rss_before = pid.and_then(rss_kib);
    let peak = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = pid.map(|pid| {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(k) = rss_kib(pid) {
                    peak.fetch_max(k, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let send = Arc::new(send);
    let started = Instant::now();
    let warmup = Duration::from_secs(1);
    let total = warmup + Duration::from_secs(a.duration);
    let every = Duration::from_secs_f64(1.0 / a.rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, Duration, bool)>();
    let mut n = 0u64;
    let mut next = started;
    let mut last_report = started;
    while next < started + total {
        tokio::time::sleep_until(next.into()).await;
        let (send, tx) = (send.clone(), tx.clone());
        let measured = next >= started + warmup;
        let t0 = Instant::now();
        tokio::spawn(async move {
            let good = match send(n).await {
                Ok(r) => {
                    let ok = r.status().is_success();
                    let _ = r.bytes().await;
                    ok
                }
                Err(_) => false,
            };
            let _ = tx.send((good, t0.elapsed(), measured));
        });
        n += 1;
        next += every;
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("  {:.0} s: {n} sent", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    drop(tx);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    let (mut ok, mut failed) = (0, 0);
    while let Some((good, took, measured)) = rx.recv().await {
        if !measured {
            continue;
        }
        if good {
            ok += 1;
            hist.record(took.as_micros().max(1) as u64).expect("in bounds");
        } else {
            failed += 1;
        }
    }
    sampling.store(false, Ordering::Relaxed);
    if let Some(s) = sampler {
        s.await.ok();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let m = Measured {
        target: target.to_owned(),
        size_bytes: size,
        rate: a.rate,
        ok,
        failed,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
        rss_before_mib: rss_before.map(|k| k as f64 / 1024.0),
        rss_peak_mib: pid.map(|_| peak.load(Ordering::Relaxed) as f64 / 1024.0),
    };
    eprintln!("  done: {ok} ok, {failed} failed, p50 {:.2} ms, p99 {:.2} ms", m.p50_ms, m.p99_ms);
    Ok(m)
}
