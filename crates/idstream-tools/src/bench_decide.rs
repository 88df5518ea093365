//! `idstream bench decide`: the whole pipeline at a fixed webhook rate.
//!
//! An `idstream serve` child process (embedded backends, decision worker on) receives realistic
//! signed simulator webhooks at `--rate` from keep-alive connections, open loop. One WebSocket
//! client subscribes to `verification.*` and `decision.made`. Measured, per event:
//! - webhook POST sent → the `decision.made` for it received over the WebSocket (end to end);
//! - webhook POST sent → the verification event itself received (the same path without the
//!   decision step: the baseline of this run);
//! - webhook accepted (its log append) → `decision.made` appended, from the log's own
//!   timestamps, read back after the run;
//! - the webhook's own acknowledgement latency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use idstream_core::signature::Secret;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_tungstenite::tungstenite::Message;

use crate::bench_stream::{now_us, Kind, Server};

#[derive(clap::Args, Debug, Clone)]
pub struct DecideArgs {
    /// Webhooks per second (open loop: sends are scheduled, not paced by answers).
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Keep-alive connections sending webhooks.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub backends: crate::bench::BackendArgs,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub(crate) fn quantiles(h: &Histogram<u64>) -> Quantiles {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Quantiles { count: h.len(), p50_ms: ms(0.5), p99_ms: ms(0.99), p999_ms: ms(0.999), max_ms: h.max() as f64 / 1000.0 }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DecideResult {
    pub rate_asked: u64,
    pub sent_per_sec: f64,
    pub failed: u64,
    pub webhook_ack: Quantiles,
    pub webhook_to_ws_verification: Quantiles,
    pub webhook_to_ws_decision: Quantiles,
    pub accepted_to_decision_in_log: Quantiles,
    pub decisions: u64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

pub async fn run(a: DecideArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.rate > 0 && a.connections > 0, "--rate and --connections must be at least 1");
    let secret = Secret::new(crate::bench_stream::WEBHOOK_SECRET);
    let count = (a.rate * a.duration) as usize;
    eprintln!("preparing {count} signed simulator webhooks ...");
    let prepared = Arc::new(crate::bench::prepare(count, &secret));
    let backends = a.backends.prepare().await?;
    eprintln!("backends: {}", a.backends.label());
    let server = Server::start_with(Kind::Idstream, &backends.toml).await?;
    let addr = server.addr;
    let mut ws = server.subscriber(0, &serde_json::json!({"kinds": ["verification.*", "decision.made"]})).await?;

    // offset of the verification event -> (sent µs, its decision received µs, itself received µs)
    let sent: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let got_event: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let got_decision: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let reader = {
        let (got_event, got_decision) = (got_event.clone(), got_decision.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else {
                    if let Message::Ping(p) = msg {
                        let _ = ws.send(Message::Pong(p)).await;
                    }
                    continue;
                };
                let t_us = now_us();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else { continue };
                let ev = &v["event"];
                match ev["kind"].as_str() {
                    Some("decision.made") => {
                        if let Some(o) = ev["event_offset"].as_u64() {
                            got_decision.lock().expect("lock").insert(o, t_us);
                        }
                    }
                    Some(_) => {
                        if let Some(o) = v["offset"].as_u64() {
                            got_event.lock().expect("lock").insert(o, t_us);
                        }
                    }
                    None => {}
                }
            }
        })
    };

    let writer_before = writer_stats(addr).await?;
    let bar = ProgressBar::new(a.duration).with_style(
        ProgressStyle::with_template("sending at {msg}/s [{elapsed_precise}] {bar:30} {pos}/{len} s")
            .expect("template"),
    );
    bar.set_message(a.rate.to_string());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.duration);
    let interval = Duration::from_secs_f64(a.connections as f64 / a.rate as f64);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let (prepared, sent, next) = (prepared.clone(), sent.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ack = hist();
            let mut failed = 0u64;
            let mut sender = crate::bench_stream::http_conn(addr).await?;
            let start = tokio::time::Instant::now() + interval.mul_f64(c as f64 / a.connections as f64);
            let mut ticker = tokio::time::interval_at(start, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while Instant::now() < deadline {
                ticker.tick().await;
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = prepared.get(i) else { break };
                let t0 = now_us();
                let mut req =
                    hyper::Request::post(format!("http://{addr}/webhooks/bench")).body(Full::new(p.body.clone()))?;
                *req.headers_mut() = p.headers.clone();
                req.headers_mut().insert(hyper::header::HOST, addr.to_string().parse()?);
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let ok = resp.status().is_success();
                let body = resp.into_body().collect().await?.to_bytes();
                ack.saturating_record(now_us() - t0);
                match serde_json::from_slice::<serde_json::Value>(&body).ok().filter(|_| ok) {
                    Some(v) if v["duplicate"] == false => {
                        if let Some(o) = v["offset"].as_u64() {
                            sent.lock().expect("lock").insert(o, t0);
                        }
                    }
                    Some(_) => {}
                    None => failed += 1,
                }
            }
            anyhow::Ok((ack, failed))
        }));
    }
    let ticker = crate::bench::tick_seconds(&bar);
    let mut ack = hist();
    let mut failed = 0;
    for t in tasks {
        let (h, f) = t.await??;
        ack.add(h).expect("same bounds");
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    let sent_n = sent.lock().expect("lock").len();
    let writer_after = writer_stats(addr).await?;
    let (commits, entries, busy) =
        (writer_after.0 - writer_before.0, writer_after.1 - writer_before.1, writer_after.2 - writer_before.2);
    eprintln!(
        "server log writer during the load: {commits:.0} commits, {:.1} entries per commit, busy {:.0}% of the run",
        entries / commits.max(1.0),
        100.0 * busy / secs
    );

    // Let the worker and the stream drain: until nothing new arrives for 2 s.
    let mut last = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = (got_event.lock().expect("lock").len(), got_decision.lock().expect("lock").len());
        if now == last {
            break;
        }
        last = now;
    }
    reader.abort();

    let (mut to_event, mut to_decision) = (hist(), hist());
    {
        let sent = sent.lock().expect("lock");
        for (o, t) in got_event.lock().expect("lock").iter() {
            if let Some(s) = sent.get(o) {
                to_event.saturating_record(t.saturating_sub(*s).max(1));
            }
        }
        for (o, t) in got_decision.lock().expect("lock").iter() {
            if let Some(s) = sent.get(o) {
                to_decision.saturating_record(t.saturating_sub(*s).max(1));
            }
        }
    }
    // From the log itself: appended (= acknowledged) -> decision.made appended.
    // (Read while the server still runs: stopping it removes its temporary data directory.)
    let entries = {
        use idstream_server::backend::{open, Access, Backend};
        let mut cfg = idstream_server::config::Config::from_toml(&backends.toml)?;
        cfg.server.data_dir = server.dir.path().join("data");
        let log = open(&Backend::from_config(&cfg), Access::ReadOnly).await.context("reading the bench log")?.log;
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |e: &idstream_server::log::LogEntry| e.offset);
            let page = log.read(after, 10_000, &Default::default()).await?;
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        log.close().await;
        all
    };
    server.stop().await;
    let appended: HashMap<u64, i64> = entries.iter().map(|e| (e.offset, e.appended_at_us)).collect();
    let mut in_log = hist();
    let mut decisions = 0;
    for e in entries.iter().filter(|e| e.kind == "decision.made") {
        decisions += 1;
        let v: serde_json::Value = serde_json::from_slice(&e.event)?;
        if let Some(at) = v["event_offset"].as_u64().and_then(|o| appended.get(&o)) {
            in_log.saturating_record((e.appended_at_us - at).max(1) as u64);
        }
    }
    let r = DecideResult {
        rate_asked: a.rate,
        sent_per_sec: sent_n as f64 / secs,
        failed,
        webhook_ack: quantiles(&ack),
        webhook_to_ws_verification: quantiles(&to_event),
        webhook_to_ws_decision: quantiles(&to_decision),
        accepted_to_decision_in_log: quantiles(&in_log),
        decisions,
    };
    println!(
        "{} webhooks/s asked, {:.0}/s accepted, {} failed; {} decisions",
        r.rate_asked, r.sent_per_sec, r.failed, r.decisions
    );
    println!("| path | count | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (name, q) in [
        ("webhook POST → 2xx", &r.webhook_ack),
        ("webhook POST → verification event on WebSocket (baseline)", &r.webhook_to_ws_verification),
        ("webhook POST → decision.made on WebSocket", &r.webhook_to_ws_decision),
        ("accepted (log append) → decision.made in the log", &r.accepted_to_decision_in_log),
    ] {
        println!("| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |", q.count, q.p50_ms, q.p99_ms, q.p999_ms, q.max_ms);
    }
    println!(
        "decision step adds {:.2} ms at p50 ({:.2}x the baseline path)",
        r.webhook_to_ws_decision.p50_ms - r.webhook_to_ws_verification.p50_ms,
        r.webhook_to_ws_decision.p50_ms / r.webhook_to_ws_verification.p50_ms.max(1e-9)
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}

/// (commits, entries, seconds spent committing) of the server's log writer, from its /metrics.
async fn writer_stats(addr: std::net::SocketAddr) -> anyhow::Result<(f64, f64, f64)> {
    let text = reqwest::get(format!("http://{addr}/metrics")).await?.text().await?;
    Ok(crate::bench::writer_stats_in(&text))
}
