//! Scale-out: how several identical nodes share the decision work.
//!
//! Sessions are spread over `decisions.partitions` partitions by their id
//! ([`crate::decide::partition_of`]). Each partition is decided by one node at a time: the one
//! holding its lease in PostgreSQL (`partition_leases`, renewed every [`RENEW`], expiring after
//! [`LEASE`]). Every node heartbeats in `nodes` and holds at most its fair share
//! (`ceil(partitions / live nodes)`), so work spreads when a node joins and is taken over when
//! one dies (after its leases expire).
//!
//! A partition's worker reads the log from the partition's checkpoint (`decisions.pNN`), which
//! is stored in the same PostgreSQL transaction as the decisions it covers and can only move
//! forward; the decisions table is unique on the event. A worker that lost its lease without
//! noticing (a paused node) therefore cannot commit a batch another node has committed: its
//! transaction fails and it stops at the next renewal.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::decide::Decider;
use crate::store::pg;
use crate::util::now_us;

/// How long a lease lasts without renewal: a dead node's partitions are taken over within
/// `LEASE + RENEW` (≤ 3 s). Short, because the fencing (checkpoints only move forward) keeps a
/// node that lost its lease during a pause from deciding twice; a lost lease costs a hand-over.
pub const LEASE: Duration = Duration::from_millis(2500);
/// How often a node renews its leases and takes free ones (a graceful stop releases its leases,
/// so another node takes them within this).
pub const RENEW: Duration = Duration::from_millis(500);

/// This node in the cluster.
#[derive(Clone)]
pub struct Cluster {
    pub pool: Pool,
    pub node_id: String,
    pub partitions: u32,
    /// The partitions this node holds now (what [`Ownership`] reads).
    held: Arc<tokio::sync::watch::Sender<BTreeSet<u32>>>,
}

/// Which sessions and endpoints this node works on besides deciding: outbound notifications
/// and reconciliation follow the decision partitions, so of several nodes exactly one (the
/// partition's lease holder) delivers an endpoint's events or polls a session.
#[derive(Clone)]
pub enum Ownership {
    /// One node: everything.
    All,
    /// Scale-out: the keys whose partition this node holds.
    Partitions { partitions: u32, held: tokio::sync::watch::Receiver<BTreeSet<u32>> },
}

impl Ownership {
    /// Whether this node works on `key` (a session id or an endpoint id) now.
    pub fn owns(&self, key: &str) -> bool {
        match self {
            Ownership::All => true,
            Ownership::Partitions { partitions, held } => {
                held.borrow().contains(&crate::decide::partition_of(key, *partitions))
            }
        }
    }

    /// Resolves when what this node owns changes (never for [`Ownership::All`]).
    pub async fn changed(&mut self) {
        match self {
            Ownership::All => std::future::pending().await,
            Ownership::Partitions { held, .. } => {
                if held.changed().await.is_err() {
                    std::future::pending::<()>().await
                }
            }
        }
    }
}

/// The checkpoint name of a partition's decision worker.
pub fn consumer_name(partition: u32) -> String {
    format!("decisions.p{partition:03}")
}

impl Cluster {
    pub fn new(pool: Pool, partitions: u32) -> Cluster {
        Cluster {
            pool,
            node_id: uuid::Uuid::now_v7().to_string(),
            partitions,
            held: Arc::new(tokio::sync::watch::Sender::new(BTreeSet::new())),
        }
    }

    /// What this node owns, following its leases.
    pub fn ownership(&self) -> Ownership {
        Ownership::Partitions { partitions: self.partitions, held: self.held.subscribe() }
    }

    /// Holds this node's share of partition leases and runs a decision worker for each, until
    /// `stop`; then releases them.
    pub async fn run_deciders(self, make: impl Fn() -> Decider + Send + 'static, stop: CancellationToken) {
        let mut running: HashMap<u32, (CancellationToken, JoinHandle<()>)> = HashMap::new();
        let mut renewed = std::time::Instant::now();
        loop {
            match self.renew_and_acquire().await {
                Ok(held) => {
                    renewed = std::time::Instant::now();
                    // Lost (expired and taken) or released: stop those workers.
                    let lost: Vec<u32> = running.keys().copied().filter(|p| !held.contains(p)).collect();
                    // Notifications and reconciliation of those partitions stop first.
                    self.held.send_if_modified(|h| {
                        let before = h.len();
                        h.retain(|p| held.contains(p));
                        h.len() != before
                    });
                    for p in lost {
                        let (token, handle) = running.remove(&p).expect("running");
                        token.cancel();
                        let _ = handle.await;
                        tracing::info!(partition = p, "decision partition released");
                    }
                    for p in held {
                        running.entry(p).or_insert_with(|| {
                            tracing::info!(partition = p, node = %self.node_id, "decision partition acquired");
                            let token = stop.child_token();
                            let scope = (p, self.partitions);
                            let name = consumer_name(p);
                            let d = make();
                            let t = token.clone();
                            (token, tokio::spawn(async move { d.run_scope(&name, Some(scope), t).await }))
                        });
                    }
                    let now: BTreeSet<u32> = running.keys().copied().collect();
                    self.held.send_if_modified(|h| {
                        let changed = *h != now;
                        *h = now;
                        changed
                    });
                    metrics::gauge!("idstream_decision_partitions_held").set(running.len() as f64);
                }
                Err(e) => {
                    // Without PostgreSQL no worker can commit anyway; leases expire on their own
                    // and the fencing keeps a stale worker from committing twice.
                    tracing::warn!(error = %e, "cluster: cannot renew decision leases; retrying");
                    // Unfenced work (notifications, polls) stops before another node can take
                    // the leases over.
                    if renewed.elapsed() >= LEASE - RENEW {
                        self.held.send_if_modified(|h| !std::mem::take(h).is_empty());
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(RENEW) => {}
            }
        }
        self.held.send_replace(BTreeSet::new());
        for (_, (token, handle)) in running.drain() {
            token.cancel();
            let _ = handle.await;
        }
        if let Err(e) = self.leave().await {
            tracing::warn!(error = %e, "cluster: could not release leases on shutdown; they expire in {LEASE:?}");
        }
    }

    /// Heartbeats, renews this node's leases, gives back what exceeds its fair share, takes free
    /// or expired ones up to it; returns the partitions held.
    async fn renew_and_acquire(&self) -> anyhow::Result<Vec<u32>> {
        let mut client = self.pool.get().await.map_err(|e| anyhow::anyhow!("PostgreSQL: {}", pg::error_text(&e)))?;
        let now = now_us();
        let until = now + LEASE.as_micros() as i64;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO nodes (id, seen_at_us) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seen_at_us = $2",
            &[&self.node_id, &now],
        )
        .await?;
        tx.execute("DELETE FROM nodes WHERE seen_at_us < $1", &[&(now - 6 * LEASE.as_micros() as i64)]).await?;
        let live: i64 = tx
            .query_one("SELECT count(*) FROM nodes WHERE seen_at_us >= $1", &[&(now - LEASE.as_micros() as i64)])
            .await?
            .get(0);
        let live = live.max(1);
        let share = (self.partitions as i64 + live - 1) / live;
        let mut held: Vec<u32> = tx
            .query(
                "UPDATE partition_leases SET expires_at_us = $2 WHERE holder = $1 AND partition < $3 RETURNING partition",
                &[&self.node_id, &until, &(self.partitions as i32)],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, i32>(0) as u32)
            .collect();
        held.sort_unstable();
        // More than the fair share (a node joined): give back the highest ones.
        while held.len() as i64 > share {
            let p = held.pop().expect("non-empty");
            tx.execute(
                "DELETE FROM partition_leases WHERE partition = $1 AND holder = $2",
                &[&(p as i32), &self.node_id],
            )
            .await?;
        }
        let want = share - held.len() as i64;
        if want > 0 {
            // Partitions never leased, then expired leases; SKIP LOCKED keeps nodes from waiting
            // on each other.
            tx.execute(
                "INSERT INTO partition_leases (partition, holder, expires_at_us)
                 SELECT g, '', 0 FROM generate_series(0, $1 - 1) g ON CONFLICT DO NOTHING",
                &[&(self.partitions as i32)],
            )
            .await?;
            let taken = tx
                .query(
                    "UPDATE partition_leases SET holder = $1, expires_at_us = $2
                     WHERE partition IN (
                        SELECT partition FROM partition_leases
                        WHERE expires_at_us < $3 AND partition < $5
                        ORDER BY partition LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING partition",
                    &[&self.node_id, &until, &now, &want, &(self.partitions as i32)],
                )
                .await?;
            held.extend(taken.iter().map(|r| r.get::<_, i32>(0) as u32));
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn leave(&self) -> anyhow::Result<()> {
        let client = self.pool.get().await.map_err(|e| anyhow::anyhow!("PostgreSQL: {}", pg::error_text(&e)))?;
        client.execute("DELETE FROM partition_leases WHERE holder = $1", &[&self.node_id]).await?;
        client.execute("DELETE FROM nodes WHERE id = $1", &[&self.node_id]).await?;
        Ok(())
    }
}
