//! `idstream simulate`: a Didit sandbox that posts realistic signed v3 webhooks.
//!
//! The traffic itself (personas, status sequences, duplicates, retries) comes from the pure,
//! seeded generator in `idstream_core::sim`; this module signs each delivery with all three
//! Didit schemes, sends it over keep-alive HTTP at the requested rate, and reports what the
//! receiver answered. Deliveries of one session always go through the same connection in
//! order, as a provider delivers them.

use std::collections::HashMap;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::personas::{self as sim, Delivery, DeliveryKind, SimConfig};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use idstream_core::signature::{didit, Secret};
use indicatif::{ProgressBar, ProgressStyle};

use idstream_server::util::unix_now;
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Webhook endpoint to post to.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/sandbox")]
    pub target: String,
    /// Webhook secret (prefer --secret-file or IDSTREAM_SIM_SECRET: command lines are visible).
    #[arg(long, env = "IDSTREAM_SIM_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the webhook secret (sandbox mode writes one).
    #[arg(long, default_value = "./idstream-data/sandbox.secret")]
    pub secret_file: PathBuf,
    /// Number of verification sessions to simulate.
    #[arg(long, default_value_t = 200)]
    pub sessions: usize,
    /// Deliveries per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seed: the same seed gives the same sessions, personas and deliveries.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraction of deliveries sent twice in a row (duplicate delivery).
    #[arg(long, default_value_t = 0.03)]
    pub duplicate_rate: f64,
    /// Fraction of deliveries redelivered later (provider retry).
    #[arg(long, default_value_t = 0.02)]
    pub retry_rate: f64,
    /// Write one JSON line per delivery (session, persona, answer) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What the receiver made of the traffic.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Duplicates the generator deliberately sent (duplicate deliveries + retries).
    pub expected_duplicates: u64,
    pub rejected: u64,
    pub rejected_by_status: HashMap<u16, u64>,
    pub errors: u64,
    pub elapsed_secs: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sent        {:>8}  in {:.2} s ({:.0}/s)",
            self.sent,
            self.elapsed_secs,
            self.sent as f64 / self.elapsed_secs.max(1e-9)
        )?;
        writeln!(f, "accepted    {:>8}", self.accepted)?;
        writeln!(
            f,
            "duplicates  {:>8}  (the generator sent {} on purpose)",
            self.duplicates, self.expected_duplicates
        )?;
        let mut by: Vec<_> = self.rejected_by_status.iter().collect();
        by.sort();
        writeln!(f, "rejected    {:>8}  {:?}", self.rejected, by)?;
        writeln!(f, "errors      {:>8}  (no HTTP answer)", self.errors)?;
        write!(
            f,
            "latency     p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Re-stamps bodies whose timestamp has aged (slow runs) so the receiver's freshness check
/// passes, as a real sender signs at send time. A duplicate or retry must carry exactly the
/// bytes of its original, so re-stamped bodies are remembered by their original bytes.
#[derive(Default)]
struct Restamper {
    /// original bytes -> (bytes actually sent, their timestamp)
    sent: Mutex<HashMap<Vec<u8>, Stamped>>,
}

type Stamped = (Vec<u8>, i64);

impl Restamper {
    fn body_for(&self, d: &Delivery) -> (Vec<u8>, i64) {
        let mut sent = self.sent.lock().expect("restamper poisoned");
        if let Some(b) = sent.get(&d.body) {
            return b.clone();
        }
        let now = unix_now();
        let out = if now - d.timestamp > 30 {
            let mut v: Value = serde_json::from_slice(&d.body).expect("generated bodies are JSON");
            v["timestamp"] = now.into();
            (sim::didit_body_bytes(&v), now)
        } else {
            (d.body.clone(), d.timestamp)
        };
        sent.insert(d.body.clone(), out.clone());
        out
    }
}

/// Loads the secret from the flag, the environment or the file.
pub fn load_secret(args: &SimulateArgs) -> anyhow::Result<Secret> {
    if let Some(s) = &args.secret {
        return Ok(Secret::new(s.clone()));
    }
    let s = std::fs::read_to_string(&args.secret_file).with_context(|| {
        format!(
            "reading the webhook secret from {} (start `idstream serve` in sandbox mode first, or pass --secret / IDSTREAM_SIM_SECRET)",
            args.secret_file.display()
        )
    })?;
    Ok(Secret::new(s.trim().to_owned()))
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let summary = simulate(&args).await?;
    println!("{summary}");
    if summary.errors > 0 || summary.rejected > 0 {
        anyhow::bail!("{} deliveries were rejected and {} got no answer", summary.rejected, summary.errors);
    }
    Ok(())
}

/// Runs a simulation and returns its summary (used by `run` and by the tests).
pub async fn simulate(args: &SimulateArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!((0.0..=1.0).contains(&args.duplicate_rate), "--duplicate-rate must be within 0..1");
    anyhow::ensure!((0.0..=1.0).contains(&args.retry_rate), "--retry-rate must be within 0..1");
    let secret = load_secret(args)?;
    let deliveries = sim::generate(&SimConfig {
        seed: args.seed,
        sessions: args.sessions,
        start_unix: unix_now(),
        duplicate_rate: args.duplicate_rate,
        retry_rate: args.retry_rate,
        mix: None,
    });
    let expected_duplicates = deliveries.iter().filter(|d| !matches!(d.kind, DeliveryKind::Original)).count() as u64;

    // Shard by session so one session's deliveries go, in order, over one connection.
    let mut shards: Vec<Vec<Delivery>> = vec![Vec::new(); args.concurrency];
    for d in deliveries {
        let shard = stable_hash(&d.session_id) as usize % args.concurrency;
        shards[shard].push(d);
    }
    let total: u64 = shards.iter().map(|s| s.len() as u64).sum();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} deliveries ({per_sec}, eta {eta})",
            )
            .expect("static template"),
        )
    };
    let limiter =
        NonZeroU32::new(args.rate).map(|r| Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(r))));
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).timeout(Duration::from_secs(30)).build()?;
    let restamper = Arc::new(Restamper::default());
    let out = match &args.out {
        Some(p) => Some(Arc::new(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )))),
        None => None,
    };

    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in shards {
        let client = client.clone();
        let target = args.target.clone();
        let secret = secret.clone();
        let limiter = limiter.clone();
        let restamper = restamper.clone();
        let bar = bar.clone();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut s = Summary::default();
            for d in shard {
                if let Some(l) = &limiter {
                    l.until_ready().await;
                }
                let (body, ts) = restamper.body_for(&d);
                let req = client
                    .post(&target)
                    .header("content-type", "application/json")
                    .header("user-agent", "DiditWebhook/2.0 (idstream-simulate)")
                    .header("x-timestamp", ts.to_string())
                    .header("x-signature", didit::sign_raw(&secret, &body))
                    .header(
                        "x-signature-simple",
                        didit::sign_simple(&secret, ts, &d.session_id, &d.status, &d.webhook_type),
                    )
                    .header(
                        "x-signature-v2",
                        didit::sign_v2(&secret, &body).expect("generated bodies are canonicalisable"),
                    )
                    .body(body);
                let t = Instant::now();
                let res = req.send().await;
                s.sent += 1;
                let (status, answer) = match res {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let answer: Value = r.json().await.unwrap_or(Value::Null);
                        hist.saturating_record(t.elapsed().as_micros() as u64);
                        (Some(status), answer)
                    }
                    Err(_) => (None, Value::Null),
                };
                match status {
                    Some(200) if answer["duplicate"] == Value::Bool(true) => s.duplicates += 1,
                    Some(200) => s.accepted += 1,
                    Some(code) => {
                        s.rejected += 1;
                        *s.rejected_by_status.entry(code).or_default() += 1;
                    }
                    None => s.errors += 1,
                }
                if let Some(out) = &out {
                    let line = serde_json::json!({
                        "session_id": d.session_id,
                        "subject": d.subject,
                        "persona": d.persona.name(),
                        "delivery": format!("{:?}", d.kind).to_lowercase(),
                        "webhook_type": d.webhook_type,
                        "status": d.status,
                        "http_status": status,
                        "answer": answer,
                    });
                    let mut w = out.lock().expect("output poisoned");
                    let _ = writeln!(w, "{line}");
                }
                bar.inc(1);
            }
            (s, hist)
        }));
    }
    let mut total_summary = Summary { expected_duplicates, ..Summary::default() };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for t in tasks {
        let (s, h) = t.await?;
        total_summary.sent += s.sent;
        total_summary.accepted += s.accepted;
        total_summary.duplicates += s.duplicates;
        total_summary.rejected += s.rejected;
        total_summary.errors += s.errors;
        for (k, v) in s.rejected_by_status {
            *total_summary.rejected_by_status.entry(k).or_default() += v;
        }
        hist.add(h).expect("same bounds");
    }
    bar.finish_and_clear();
    if let Some(out) = out {
        out.lock().expect("output poisoned").flush()?;
    }
    total_summary.elapsed_secs = started.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    total_summary.p50_ms = ms(0.5);
    total_summary.p90_ms = ms(0.9);
    total_summary.p99_ms = ms(0.99);
    total_summary.max_ms = hist.max() as f64 / 1000.0;
    Ok(total_summary)
}

/// A stable string hash (FNV-1a) for sharding; std's hasher is randomly seeded per process.
pub(crate) fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}
