//! Live streams: push every identity event, the moment it is in the log, to authenticated,
//! tenant-scoped WebSocket ([`ws`]) and SSE ([`sse`]) clients, resumable by log offset.
//!
//! # How delivery works
//! One tailer task per server ([`Hub::run`]) wakes on [`EventLog::subscribe`], reads the new
//! entries once, serialises each once ([`protocol::StreamEntry`], shared by `Arc`), and offers
//! it to every matching *live* subscription of that entry's tenant through the connection's
//! bounded queue. It never waits for a client.
//!
//! A subscription that is not live is *catching up*: its connection task reads the log itself
//! (`EventLog::read` after the last offset it sent, with the tenant filter) and sends what
//! matches, page by page, until it has read everything the tailer has already offered to this
//! connection; then it rejoins live delivery. A subscription starts that way (from an offset,
//! or `earliest`), and a live one is switched to it when its connection's queue is full. So a
//! slow client is neither disconnected nor silently skipped, and memory per connection is
//! bounded by the queue depth plus one page.
//!
//! Both paths may produce the same entry around a switch; the connection task sends an entry
//! only if its offset is above the subscription's last sent offset, so the client sees each
//! entry once, in log order.
//!
//! # What this module must never do
//! Deliver an entry of another tenant than the token's, or of a kind outside the token's
//! `kinds` claim, whatever the subscription's filter says ([`Conn::admits`] is checked on both
//! paths); block the tailer on a client; log a token.

pub mod auth;
pub mod protocol;
mod session;
pub mod sse;
pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use indexmap::IndexMap;
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::StreamConfig;
use crate::log::{EventLog, ReadFilter};
use crate::util::now_ms;
use auth::{any_matches, Authenticator, Identity, KindPattern};
use protocol::{Filter, StreamEntry};

/// Entries the tailer reads from the log at a time.
const TAIL_BATCH: usize = 1024;

/// Per-connection limits, from `[stream]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub ping_interval: Duration,
    pub max_connections: usize,
    pub max_subscriptions: usize,
    pub max_message_bytes: usize,
    pub send_queue_depth: usize,
}

pub(crate) struct StreamMetrics {
    pub connections: Gauge,
    pub subscriptions: Gauge,
    pub catching_up: Gauge,
    pub messages: Counter,
    pub catchups: Counter,
    pub delivery: Histogram,
}

/// The stream hub: the connection registry and the tailer that feeds it.
pub struct Hub {
    log: Arc<dyn EventLog>,
    auth: Option<Authenticator>,
    pub limits: Limits,
    registry: RwLock<Registry>,
    /// Last offset the tailer has offered to the registered connections. Written only while
    /// the tailer holds the registry's read lock, read under its write lock, so a connection
    /// registers at an exact point of the tailer's progress.
    dispatched: AtomicU64,
    connections: AtomicUsize,
    /// Subscriptions switched to catching up because their connection's queue was full.
    catchups: AtomicU64,
    next_key: AtomicU64,
    /// Cancelled when the server shuts down: every stream then closes (1001).
    stop: CancellationToken,
    /// Every connection task, so shutdown can wait for streams to close before the log does.
    tasks: TaskTracker,
    pub(crate) metrics: StreamMetrics,
    /// The secret page stream tokens are signed with (`POST /v1/stream/token`), if any.
    signer: Option<Signer>,
}

/// An HS256 signing secret (never printed).
struct Signer(Vec<u8>);

#[derive(Default)]
struct Registry {
    /// Connections by tenant, by key, in the order they came: a connection leaves in constant
    /// time (a list searched on every close made 19,000 closing connections quadratic, with
    /// the write lock held), and the tailer walks them in the order their memory was allocated
    /// (a hash map's random order cost ~7% more CPU per broadcast to 19,000 connections).
    by_tenant: HashMap<String, IndexMap<u64, Arc<Conn>>>,
}

/// One connection as the tailer sees it.
pub(crate) struct Conn {
    key: u64,
    pub tenant: String,
    /// The token's `kinds` claim: nothing else is ever delivered on this connection.
    claims: Vec<KindPattern>,
    queue: mpsc::Sender<Delivery>,
    /// Woken when the tailer switches a subscription to catching up.
    wake: Notify,
    state: Mutex<ConnState>,
}

struct ConnState {
    /// The last offset of this connection's tenant the tailer has offered to this connection.
    tail_seen: u64,
    subs: Vec<SharedSub>,
}

struct SharedSub {
    key: u64,
    filter: Arc<Filter>,
    /// False while the subscription is catching up from the log.
    live: bool,
}

/// One entry for one subscription, queued to its connection.
pub(crate) struct Delivery {
    pub sub: u64,
    pub entry: Arc<StreamEntry>,
}

impl Conn {
    /// The token's scope: same tenant, kind within the `kinds` claim.
    pub fn admits(&self, e: &StreamEntry) -> bool {
        e.tenant == self.tenant && any_matches(&self.claims, &e.kind)
    }
}

/// A connection's place in the registry; dropping it unregisters the connection.
pub(crate) struct Registration {
    hub: Arc<Hub>,
    pub conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = self.hub.registry.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = reg.by_tenant.get_mut(&self.conn.tenant) {
            list.swap_remove(&self.conn.key);
            if list.is_empty() {
                reg.by_tenant.remove(&self.conn.tenant);
            }
        }
        let st = self.conn.state.lock().unwrap_or_else(|e| e.into_inner());
        self.hub.metrics.subscriptions.decrement(st.subs.len() as f64);
        let behind = st.subs.iter().filter(|s| !s.live).count();
        self.hub.metrics.catching_up.decrement(behind as f64);
    }
}

/// A slot under `max_connections`; dropping it frees the slot.
pub(crate) struct Permit {
    hub: Arc<Hub>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.hub.connections.fetch_sub(1, Ordering::Relaxed);
        self.hub.metrics.connections.decrement(1.0);
    }
}

/// A snapshot of a hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Open connections (including ones still authenticating).
    pub connections: usize,
    pub subscriptions: usize,
    /// Subscriptions reading from the log right now.
    pub catching_up: usize,
    /// Times a live subscription was switched to catching up (its queue was full).
    pub catchups: u64,
    /// The last offset the tailer has offered to connections.
    pub dispatched: u64,
}

/// Why streaming is refused when no key is configured.
pub const NOT_CONFIGURED: &str = "streaming not configured: set stream.hs256_secrets, stream.public_keys or \
     stream.jwks_file (`idstream token` mints HS256 tokens), or turn the dashboard on (dashboard.enabled)";

impl Hub {
    pub fn new(cfg: &StreamConfig, log: Arc<dyn EventLog>) -> Hub {
        let auth = Authenticator::from_config(cfg).expect("stream keys were checked when the config was loaded");
        let dispatched = AtomicU64::new(log.head());
        Hub {
            log,
            auth,
            limits: Limits {
                ping_interval: Duration::from_secs(cfg.ping_interval_secs),
                max_connections: cfg.max_connections,
                max_subscriptions: cfg.max_subscriptions_per_connection,
                max_message_bytes: cfg.max_message_bytes,
                send_queue_depth: cfg.send_queue_depth,
            },
            registry: RwLock::new(Registry::default()),
            dispatched,
            connections: AtomicUsize::new(0),
            catchups: AtomicU64::new(0),
            next_key: AtomicU64::new(1),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics: StreamMetrics {
                connections: metrics::gauge!("idstream_stream_connections"),
                subscriptions: metrics::gauge!("idstream_stream_subscriptions"),
                catching_up: metrics::gauge!("idstream_stream_catching_up"),
                messages: metrics::counter!("idstream_stream_messages_total"),
                catchups: metrics::counter!("idstream_stream_catchup_total"),
                delivery: metrics::histogram!("idstream_stream_delivery_seconds"),
            },
            signer: None,
        }
    }

    /// Lets this hub sign page stream tokens: with the first configured HS256 secret, else
    /// with `own` (idstream's own key), which the verifier then also accepts. `None` (the
    /// dashboard is off): no signing, the configured keys only.
    pub fn with_signer(mut self, cfg: &StreamConfig, own: Option<[u8; 32]>) -> Hub {
        let Some(own) = own else { return self };
        if let Some(first) = cfg.hs256_secrets.first() {
            self.signer = Some(Signer(first.expose().as_bytes().to_vec()));
        } else {
            self.auth = Some(Authenticator::with_hs256(self.auth.take(), &own));
            self.signer = Some(Signer(own.to_vec()));
        }
        self
    }

    /// Signs a stream token, or explains why streams are not configured.
    pub fn sign(&self, claims: &auth::Claims) -> Result<String, &'static str> {
        let Signer(secret) = self.signer.as_ref().ok_or(NOT_CONFIGURED)?;
        Ok(auth::mint_hs256(secret, claims))
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The configured verifier, or the "not configured" explanation.
    pub fn authenticator(&self) -> Result<&Authenticator, &'static str> {
        self.auth.as_ref().ok_or(NOT_CONFIGURED)
    }

    /// This hub's counters (the Prometheus metrics are process-wide; these are per server).
    pub fn stats(&self) -> HubStats {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let (mut subscriptions, mut catching_up) = (0, 0);
        for conn in reg.by_tenant.values().flat_map(IndexMap::values) {
            let st = conn.state.lock().unwrap_or_else(|e| e.into_inner());
            subscriptions += st.subs.len();
            catching_up += st.subs.iter().filter(|s| !s.live).count();
        }
        HubStats {
            connections: self.connections.load(Ordering::Relaxed),
            subscriptions,
            catching_up,
            catchups: self.catchups.load(Ordering::Relaxed),
            dispatched: self.dispatched.load(Ordering::Acquire),
        }
    }

    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// After [`Hub::run`] has returned: waits (at most `grace`) for every stream connection to
    /// finish closing, so none still holds the log when the server closes it.
    pub async fn drain(&self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(open = self.tasks.len(), "stream connections still closing after the grace period");
        }
    }

    /// Takes a connection slot, or `None` at `max_connections`.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Permit> {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        if n >= self.limits.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.metrics.connections.increment(1.0);
        Some(Permit { hub: self.clone() })
    }

    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an authenticated connection; the receiver is its bounded queue.
    pub(crate) fn register(self: &Arc<Self>, who: &Identity) -> (Registration, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(self.limits.send_queue_depth);
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        let conn = Arc::new(Conn {
            key: self.next_key(),
            tenant: who.tenant.clone(),
            claims: who.kinds.clone(),
            queue: tx,
            wake: Notify::new(),
            state: Mutex::new(ConnState { tail_seen: self.dispatched.load(Ordering::Acquire), subs: Vec::new() }),
        });
        reg.by_tenant.entry(who.tenant.clone()).or_default().insert(conn.key, conn.clone());
        (Registration { hub: self.clone(), conn }, rx)
    }

    /// Adds a subscription to `conn`. It is live at once if it starts at or after everything
    /// the tailer has offered this connection; otherwise it starts by catching up.
    pub(crate) fn add_sub(&self, conn: &Conn, key: u64, filter: Arc<Filter>, start: u64) -> bool {
        let mut st = conn.state.lock().unwrap_or_else(|e| e.into_inner());
        let live = start >= st.tail_seen;
        st.subs.push(SharedSub { key, filter, live });
        self.metrics.subscriptions.increment(1.0);
        if !live {
            self.metrics.catching_up.increment(1.0);
        }
        live
    }

    pub(crate) fn remove_sub(&self, conn: &Conn, key: u64) {
        let mut st = conn.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = st.subs.iter().position(|s| s.key == key) {
            let s = st.subs.swap_remove(i);
            self.metrics.subscriptions.decrement(1.0);
            if !s.live {
                self.metrics.catching_up.decrement(1.0);
            }
        }
    }

    /// A subscription of `conn` that is catching up, if any.
    pub(crate) fn behind(&self, conn: &Conn) -> Option<u64> {
        let st = conn.state.lock().unwrap_or_else(|e| e.into_inner());
        st.subs.iter().find(|s| !s.live).map(|s| s.key)
    }

    /// Makes `key` live again if its catch-up has read the log at least up to everything the
    /// tailer has offered this connection (`scanned >= tail_seen`): entries after that are
    /// then the tailer's to offer, and none can fall between the two.
    pub(crate) fn try_rejoin(&self, conn: &Conn, key: u64, scanned: u64) -> bool {
        let mut st = conn.state.lock().unwrap_or_else(|e| e.into_inner());
        if scanned < st.tail_seen {
            return false;
        }
        if let Some(s) = st.subs.iter_mut().find(|s| s.key == key) {
            if !s.live {
                s.live = true;
                self.metrics.catching_up.decrement(1.0);
            }
        }
        true
    }

    /// Runs the tailer until `shutdown`; [`Hub::drain`] then closes the streams. Run at most
    /// one at a time; a new one continues where the last stopped.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut head = self.log.subscribe();
        let mut pos = self.dispatched.load(Ordering::Acquire);
        let everything = ReadFilter::default();
        loop {
            let h = *head.borrow_and_update();
            if h <= pos {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = head.changed() => if changed.is_err() { break },
                }
                continue;
            }
            if self.skip_unwatched(h) {
                // No connection at all: nothing to read or serialise. A connection that
                // registers later starts at `h` (it catches up from the log for anything older).
                pos = h;
                continue;
            }
            let entries = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.log.read(pos, TAIL_BATCH, &everything) => r,
            };
            match entries {
                Ok(entries) if !entries.is_empty() => {
                    pos = entries.last().map_or(pos, |e| e.offset);
                    self.dispatch(&entries, pos);
                }
                Ok(_) => {
                    // The head moved but nothing is readable yet; wait for the next commit.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream tailer cannot read the log; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// With no connection registered, marks everything up to `head` as offered and answers
    /// true (under the registry's read lock, like [`Hub::dispatch`], so a connection registers
    /// either before this, and the entries are read for it, or after, at `head`).
    fn skip_unwatched(&self, head: u64) -> bool {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        if !reg.by_tenant.is_empty() {
            return false;
        }
        self.dispatched.store(head, Ordering::Release);
        true
    }

    /// Offers `entries` (in log order, ending at `last`) to every live, matching subscription.
    /// Each entry is serialised once, and only when its tenant has a connection.
    fn dispatch(&self, entries: &[crate::log::LogEntry], last: u64) {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let mut tenants: Vec<&str> = entries.iter().map(|e| e.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        for tenant in tenants {
            let Some(conns) = reg.by_tenant.get(tenant) else { continue };
            let entries: Vec<Arc<StreamEntry>> =
                entries.iter().filter(|e| e.tenant == tenant).map(|e| Arc::new(StreamEntry::from_log(e))).collect();
            for conn in conns.values() {
                let mut st = conn.state.lock().unwrap_or_else(|e| e.into_inner());
                let mut switched = false;
                for e in &entries {
                    st.tail_seen = e.offset;
                    if !conn.admits(e) {
                        continue;
                    }
                    for s in st.subs.iter_mut().filter(|s| s.live && s.filter.matches(e)) {
                        match conn.queue.try_send(Delivery { sub: s.key, entry: e.clone() }) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                // Not dropped: the connection reads it (and what follows)
                                // from the log, then rejoins.
                                s.live = false;
                                switched = true;
                                self.metrics.catchups.increment(1);
                                self.catchups.fetch_add(1, Ordering::Relaxed);
                                self.metrics.catching_up.increment(1.0);
                            }
                            // The connection is going away; its registration goes with it.
                            Err(mpsc::error::TrySendError::Closed(_)) => {}
                        }
                    }
                }
                drop(st);
                if switched {
                    conn.wake.notify_one();
                }
            }
        }
        self.dispatched.store(last, Ordering::Release);
    }
}

/// How long until a token with this `exp` (Unix seconds) expires.
pub(crate) fn until_exp(exp: u64) -> Duration {
    Duration::from_millis((exp.saturating_mul(1000)).saturating_sub(now_ms()))
}
