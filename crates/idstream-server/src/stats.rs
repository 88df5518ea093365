//! Tenant statistics for the dashboard's overview (`GET /v1/stats`): webhooks accepted,
//! duplicate and rejected per minute, counted in memory by the ingest path and added to the
//! store's `tenant_stats` table every second (each node adds its own counts, so the figures are
//! the installation's). Decisions and the review queue are read from their own tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Op, StatCount, Store, Txn};

/// (minute, metric) → count, of one tenant.
type MinuteCounts = HashMap<(i64, &'static str), u64>;

/// Webhook counters not yet in the store.
#[derive(Default)]
pub struct TenantCounters {
    /// tenant → (minute, metric) → count: looked up by `&str`, so counting allocates nothing
    /// once the tenant is known (this runs per webhook on the ingest path).
    pending: Mutex<HashMap<String, MinuteCounts>>,
}

impl TenantCounters {
    /// Counts one webhook of `tenant` (`metric`: `webhooks_accepted`, `webhooks_duplicate`,
    /// `webhooks_rejected`) in the current minute.
    pub fn count(&self, tenant: &str, metric: &'static str) {
        let minute = crate::util::unix_now() / 60;
        let mut p = self.pending.lock().expect("counters lock");
        let per_tenant = match p.get_mut(tenant) {
            Some(t) => t,
            None => p.entry(tenant.to_owned()).or_default(),
        };
        *per_tenant.entry((minute, metric)).or_default() += 1;
    }

    fn drain(&self) -> Vec<StatCount> {
        let mut p = self.pending.lock().expect("counters lock");
        p.drain()
            .flat_map(|(tenant, counts)| {
                counts.into_iter().map(move |((minute, metric), count)| StatCount {
                    tenant: tenant.clone(),
                    minute,
                    metric: metric.to_owned(),
                    count,
                })
            })
            .collect()
    }

    fn put_back(&self, counts: Vec<StatCount>) {
        let mut p = self.pending.lock().expect("counters lock");
        for c in counts {
            let metric = match c.metric.as_str() {
                "webhooks_accepted" => "webhooks_accepted",
                "webhooks_duplicate" => "webhooks_duplicate",
                _ => "webhooks_rejected",
            };
            *p.entry(c.tenant).or_default().entry((c.minute, metric)).or_default() += c.count;
        }
    }

    /// Adds the pending counts to the store (kept for the next try if it fails).
    pub async fn flush(&self, store: &dyn Store) {
        let counts = self.drain();
        if counts.is_empty() {
            return;
        }
        if let Err(e) = store.commit(Txn { entries: Vec::new(), ops: vec![Op::AddStats(counts.clone())] }).await {
            tracing::warn!(error = %e, "tenant statistics not stored yet; retrying");
            self.put_back(counts);
        }
    }

    /// Flushes every second until `stop`, then once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.flush(store.as_ref()).await;
        }
        self.flush(store.as_ref()).await;
    }
}
