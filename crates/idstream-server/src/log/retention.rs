//! Log retention: entries older than `log.retention_days` are removed, oldest first, in
//! bounded steps — but never an entry the decision worker has not processed yet.
//!
//! A consumer that asks for an offset at or below what retention removed is told so
//! (`offset_expired`) instead of silently getting a gap.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{EventLog, LogError};

/// Entries removed per writer command, so a large first pass never holds the writer long.
const STEP: usize = 10_000;

/// How far a consumer has read: retention never removes what it has not processed.
pub type Guard = Arc<dyn Fn() -> BoxFuture<'static, Result<u64, String>> + Send + Sync>;

/// Removes what is older than `retention` (and, with a `guard`, already processed by its
/// consumer); returns the new `pruned_through`.
pub async fn enforce(
    log: &dyn EventLog,
    retention: Duration,
    guard: Option<&Guard>,
    now_us: i64,
) -> Result<u64, LogError> {
    let cutoff = now_us - retention.as_micros() as i64;
    let mut through = log.last_offset_before(cutoff).await?;
    if let Some(guard) = guard {
        through = through.min(guard().await.map_err(LogError::Unavailable)?);
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
    guard: Option<Guard>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        match enforce(log.as_ref(), retention, guard.as_ref(), crate::util::now_us()).await {
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
