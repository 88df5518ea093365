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

/// How long after a bucket's end its decision counts are final: a decision is stored moments
/// after the time it carries, so a bucket that ended this long ago no longer changes.
pub const FINAL_AFTER_US: i64 = 120_000_000;

/// (approve, review, decline) of one bucket.
pub type OutcomeCounts = [u64; 3];

/// The overview's decision counts of finished buckets, per (tenant, bucket length in µs) and
/// bucket start: read from the decisions table once per process, so a 7-day overview counts
/// only its newest buckets on each refresh instead of every decision of the week.
#[derive(Default)]
pub struct FinishedBuckets {
    inner: Mutex<HashMap<(String, i64), std::collections::BTreeMap<i64, OutcomeCounts>>>,
}

impl FinishedBuckets {
    /// The counts of the buckets `first, first + len, …` (up to `n`) that are known, in order,
    /// stopping at the first unknown one.
    pub fn known(&self, tenant: &str, len: i64, first: i64, n: usize) -> Vec<OutcomeCounts> {
        let inner = self.inner.lock().expect("buckets lock");
        let Some(m) = inner.get(&(tenant.to_owned(), len)) else { return Vec::new() };
        (0..n).map_while(|i| m.get(&(first + i as i64 * len)).copied()).collect()
    }

    /// Keeps finished buckets (their end at least [`FINAL_AFTER_US`] before `now`); forgets
    /// buckets older than 8 days.
    pub fn keep(&self, tenant: &str, len: i64, now: i64, buckets: impl IntoIterator<Item = (i64, OutcomeCounts)>) {
        let mut inner = self.inner.lock().expect("buckets lock");
        let m = inner.entry((tenant.to_owned(), len)).or_default();
        for (start, counts) in buckets {
            if start + len + FINAL_AFTER_US <= now {
                m.insert(start, counts);
            }
        }
        let horizon = now - 8 * 86_400_000_000;
        m.retain(|&start, _| start >= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn only_finished_buckets_are_kept_and_known_stops_at_the_first_gap() {
        let b = FinishedBuckets::default();
        let now = 1_000 * MIN;
        // Buckets of 10 minutes from minute 900: the last two (ending at 1000 and 1010 minutes)
        // are not finished two minutes after their end.
        let all = (0..11).map(|i| (900 * MIN + i * 10 * MIN, [i as u64, 0, 1]));
        b.keep("t", 10 * MIN, now, all);
        let known = b.known("t", 10 * MIN, 900 * MIN, 60);
        assert_eq!(known.len(), 9, "ended ≥ 2 min ago: minutes 900–980");
        assert_eq!(known[3], [3, 0, 1]);
        assert!(b.known("t", 5 * MIN, 900 * MIN, 60).is_empty(), "another bucket length");
        assert!(b.known("u", 10 * MIN, 900 * MIN, 60).is_empty(), "another tenant");
        assert_eq!(b.known("t", 10 * MIN, 950 * MIN, 2).len(), 2, "at most n");
        // A gap: what follows it is not used.
        b.keep("t", 10 * MIN, now, [(1_200 * MIN, [1, 1, 1])]);
        assert_eq!(b.known("t", 10 * MIN, 900 * MIN, 60).len(), 9);
        // Eight days later the old buckets are forgotten.
        b.keep("t", 10 * MIN, now + 8 * 1440 * MIN + 200 * MIN, []);
        assert!(b.known("t", 10 * MIN, 900 * MIN, 60).is_empty());
    }
}
