//! Log retention: entries older than `log.retention_days` are removed, oldest first, in
//! bounded steps — but never an entry the decision worker has not processed yet.
//!
//! A consumer that asks for an offset at or below what retention removed is told so
//! (`offset_expired`) instead of silently getting a gap.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{EventLog, LogError};

/// Entries removed per writer command, so a large first pass never holds the writer long.
const STEP: usize = 10_000;

/// Removes what is older than `retention` (and, when `guard` names a consumer, already
/// processed by it); returns the new `pruned_through`.
pub async fn enforce(
    log: &dyn EventLog,
    retention: Duration,
    guard: Option<&str>,
    now_us: i64,
) -> Result<u64, LogError> {
    let cutoff = now_us - retention.as_micros() as i64;
    let mut through = log.last_offset_before(cutoff).await?;
    if let Some(consumer) = guard {
        through = through.min(log.checkpoint(consumer).await?.unwrap_or(0));
    }
    let mut pruned = log.pruned_through();
    while pruned < through {
        let next = log.prune(through, STEP).await?;
        if next == pruned {
            break;
        }
        pruned = next;
        tokio::task::yield_now().await;
    }
    Ok(pruned)
}

/// Runs [`enforce`] every `every` until `stop`.
pub async fn run(
    log: Arc<dyn EventLog>,
    retention: Duration,
    guard: Option<String>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        match enforce(log.as_ref(), retention, guard.as_deref(), crate::util::now_us()).await {
            Ok(p) => {
                metrics::gauge!("idstream_log_pruned_through").set(p as f64);
            }
            Err(e) => tracing::warn!(error = %e, "log retention could not prune; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
