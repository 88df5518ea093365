//! The server: `serve(listener, state, shutdown)` runs the HTTP edge ([`crate::http`]) and the
//! background work (stream tailer, decision worker, retention, outbox relay) until shutdown.
//!
//! `serve` takes its socket and its shutdown signal as arguments, so tests bind
//! `127.0.0.1:0` and run as many servers as they like in one process.

use std::future::IntoFuture as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The process-wide Prometheus recorder, installed on first use (one per process, however many
/// servers a test starts).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency =
            [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let sizes: Vec<f64> = (0..=12).map(|i| f64::from(1u32 << i)).collect();
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .expect("buckets are non-empty")
            .set_buckets_for_metric(Matcher::Full("idstream_log_batch_entries".into()), &sizes)
            .expect("buckets are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application); then ours
        // simply renders nothing, which is better than failing start-up.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests finish
/// (at most `grace`), and closes the log so every acknowledged append is flushed.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    metrics_handle();
    let app = crate::http::router(state.clone());
    // The stream tailer stops with the server; its stop closes every open stream (1001) so
    // graceful shutdown is not held up by long-lived connections.
    let tailer_stop = shutdown.child_token();
    let tailer = tokio::spawn(state.stream.clone().run(tailer_stop.clone()));
    // The backend's own background work (log retention, outbox relay) and the decision workers
    // stop with the stream tailer.
    let upkeep: Vec<_> = std::mem::take(&mut *state.upkeep.lock().expect("upkeep lock"))
        .into_iter()
        .map(|task| tokio::spawn(task(tailer_stop.clone())))
        .collect();
    let pruner = tokio::spawn(prune_access(state.clone(), tailer_stop.clone()));
    let counters = tokio::spawn(state.tenant_counters.clone().run(state.store.clone(), tailer_stop.clone()));
    let idle_claims =
        state.claim_idle.map(|idle| tokio::spawn(return_idle_claims(state.clone(), idle, tailer_stop.clone())));
    let decider = state.decisions_enabled.then(|| {
        let st = state.clone();
        let make = move || st.decider();
        tokio::spawn(state.deciders.clone().run(make, tailer_stop.clone()))
    });
    state.notifier.start_new_endpoints().await;
    let notifier = state.notifier.enabled.then(|| tokio::spawn(state.notifier.clone().run(tailer_stop.clone())));
    let stop = shutdown.clone();
    // No Nagle: stream messages and small responses go out at once instead of waiting for the
    // peer's delayed ACK (measured: ~8 ms of p50 stream latency at 1,000 events/s).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
        });
    let mut server = std::pin::pin!(server.into_future());
    let result = tokio::select! {
        r = &mut server => r,
        _ = shutdown.cancelled() => {
            state.ready.store(false, Ordering::Relaxed);
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests still running after the grace period; closing");
                    Ok(())
                }
            }
        }
    };
    tailer_stop.cancel();
    let _ = tailer.await;
    if let Some(d) = decider {
        // The worker stops between batches; a batch in flight is committed or not at all.
        let _ = d.await;
    }
    if let Some(n) = notifier {
        // Deliveries in flight stop; their events stay after the endpoints' checkpoints.
        let _ = n.await;
    }
    for task in upkeep {
        let _ = task.await;
    }
    let _ = pruner.await;
    let _ = counters.await;
    if let Some(t) = idle_claims {
        let _ = t.await;
    }
    state.stream.drain(grace).await;
    state.store.close().await;
    state.log.close().await;
    result
}

/// Claims idle longer than `idle` go back to the review queue; checked every quarter of `idle`
/// (at most every 30 s).
async fn return_idle_claims(state: Arc<AppState>, idle: std::time::Duration, stop: CancellationToken) {
    let every = (idle / 4).clamp(std::time::Duration::from_millis(200), std::time::Duration::from_secs(30));
    loop {
        match crate::http::reviews::return_idle_claims(&state, idle).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(cases = n, "idle review claims returned to the queue"),
            Err(e) => tracing::warn!(error = %e.message, "could not return idle review claims"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Every ten minutes: login sessions past their end and idempotency records older than twice
/// their promised 24 h are removed (every node does it; the deletes are idempotent).
async fn prune_access(state: Arc<AppState>, stop: CancellationToken) {
    use crate::store::{access::AccessOp, Op, Txn};
    loop {
        let now = crate::util::now_us();
        let op = AccessOp::PruneAccess { before_us: now - 2 * crate::http::idempotency::KEEP_US, now_us: now };
        if let Err(e) = state.store.commit(Txn { entries: Vec::new(), ops: vec![Op::Access(op)] }).await {
            tracing::warn!(error = %e, "could not prune expired login sessions and idempotency records");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
        }
    }
}
