//! One stream connection's task, shared by WebSocket and SSE: handles the client's commands,
//! sends live deliveries from the connection's queue, and catches subscriptions up from the
//! log (see the module docs of [`super`] for why this is gap- and duplicate-free).
//!
//! It must never send an entry its connection's token does not admit, nor an offset at or
//! below what a subscription has already been sent.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::protocol::{error_message, ClientMsg, Filter, Start, StreamEntry};
use super::{Conn, Delivery, Hub, Registration};
use crate::log::ReadFilter;
use crate::util::now_ms;

/// Log entries read per catch-up step: bounds a catching-up connection's extra memory.
const PAGE: usize = 256;
/// Deliveries sent before one flush.
const SEND_BATCH: usize = 64;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client closed, or its connection is gone.
    ClientGone,
    TokenExpired,
    KeepAlive,
    Shutdown,
    LogUnavailable,
    /// A subscription fell behind what log retention removed.
    OffsetExpired,
}

/// The `offset_expired` explanation.
pub(crate) fn expired_message(asked: u64, pruned: u64) -> String {
    format!(
        "offset {asked} is older than the log's retention (entries up to {pruned} were removed): \
         subscribe from `earliest` and reconcile from your own records"
    )
}

/// Something to send.
pub(crate) enum Outgoing<'a> {
    Event {
        sub_id_json: &'a str,
        entry: &'a StreamEntry,
    },
    /// A protocol message (`subscribed`, `error`, ...): its `type` and its JSON text.
    Control {
        kind: &'static str,
        text: String,
    },
    Ping,
}

/// Where a session writes: a WebSocket or an SSE response body.
pub(crate) trait Output: Send {
    /// Queues one message; it may wait while the client is slow (that is the back-pressure).
    fn feed(&mut self, msg: Outgoing<'_>) -> impl Future<Output = Result<(), ()>> + Send;
    fn flush(&mut self) -> impl Future<Output = Result<(), ()>> + Send;
}

/// A command from the client, or why its message could not be read.
/// Boxed: a parsed message is ~150 bytes, and a bounded channel (SSE's) allocates a block of 32
/// slots up front (measured when WebSocket commands came through one: ~4 KB of idle RSS per
/// connection unboxed).
pub(crate) type Command = Box<Result<ClientMsg, String>>;

/// Where a session reads the client's commands: the WebSocket itself (read in the session's own
/// task, no reader task or channel per connection), or a channel that stays silent (SSE).
pub(crate) trait Commands: Send {
    /// The next command; `None` once the client has gone.
    fn recv(&mut self) -> impl Future<Output = Option<Command>> + Send;
    /// A command that is ready now, if any.
    fn try_recv(&mut self) -> Option<Command>;
}

impl Commands for mpsc::Receiver<Command> {
    fn recv(&mut self) -> impl Future<Output = Option<Command>> + Send {
        mpsc::Receiver::recv(self)
    }

    fn try_recv(&mut self) -> Option<Command> {
        mpsc::Receiver::try_recv(self).ok()
    }
}

struct LocalSub {
    /// The id as a JSON string, escaped once.
    id_json: String,
    filter: Arc<Filter>,
    /// The highest offset sent to the client on this subscription.
    last_sent: u64,
    /// While catching up: the log has been read up to here.
    cursor: u64,
    /// When the subscription was made (Unix µs): replayed history is not delivery latency.
    created_us: i64,
    catching_up: bool,
}

pub(crate) struct Session {
    hub: Arc<Hub>,
    reg: Registration,
    queue: mpsc::Receiver<Delivery>,
    subs: HashMap<u64, LocalSub>,
    ids: HashMap<String, u64>,
    /// Server pings (WebSocket only).
    ping_every: Option<Duration>,
}

impl Session {
    pub fn new(
        hub: Arc<Hub>,
        reg: Registration,
        queue: mpsc::Receiver<Delivery>,
        ping_every: Option<Duration>,
    ) -> Session {
        Session { hub, reg, queue, subs: HashMap::new(), ids: HashMap::new(), ping_every }
    }

    /// Runs until the client goes away or an error ends the stream. The caller races this
    /// against token expiry, keep-alive and shutdown.
    pub async fn run<O: Output>(&mut self, out: &mut O, cmds: &mut impl Commands) -> End {
        match self.run_inner(out, cmds).await {
            Ok(()) => End::ClientGone,
            Err(end) => end,
        }
    }

    async fn run_inner<O: Output>(&mut self, out: &mut O, cmds: &mut impl Commands) -> Result<(), End> {
        let far = Duration::from_secs(86_400 * 365);
        // One timer for the connection's life, reset after each ping: a timer made per loop
        // turn was inserted into and removed from the timer wheel on every delivery.
        let ping = tokio::time::sleep(self.ping_every.unwrap_or(far));
        tokio::pin!(ping);
        loop {
            if let Some(every) = self.ping_every {
                if Instant::now() >= ping.deadline() {
                    out.feed(Outgoing::Ping).await.map_err(gone)?;
                    out.flush().await.map_err(gone)?;
                    ping.as_mut().reset(Instant::now() + every);
                }
            }
            if let Some(key) = self.hub.behind(&self.reg.conn) {
                self.catch_up_step(key, out).await?;
                // Stay responsive while catching up: take whatever else is ready.
                while let Some(cmd) = cmds.try_recv() {
                    self.command(cmd, out).await?;
                }
                let mut sent = 0;
                while sent < SEND_BATCH {
                    let Ok(d) = self.queue.try_recv() else { break };
                    self.deliver(d, out).await?;
                    sent += 1;
                }
                out.flush().await.map_err(gone)?;
                continue;
            }
            // In this order, and no further than the first that is ready: a delivery then
            // never registers the wake-up or the timer (the loop's top checks both every turn),
            // and the client's messages are read first, so a busy queue cannot starve them.
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    None => return Ok(()),
                    Some(cmd) => self.command(cmd, out).await?,
                },
                d = self.queue.recv() => {
                    // The registration holds the sender, so the queue stays open while we run.
                    let Some(d) = d else { return Ok(()) };
                    self.deliver(d, out).await?;
                    let mut sent = 1;
                    while sent < SEND_BATCH {
                        let Ok(d) = self.queue.try_recv() else { break };
                        self.deliver(d, out).await?;
                        sent += 1;
                    }
                    out.flush().await.map_err(gone)?;
                }
                _ = self.reg.conn.wake.notified() => {}
                _ = &mut ping => {}
            }
        }
    }

    async fn control<O: Output>(&self, out: &mut O, kind: &'static str, text: String) -> Result<(), End> {
        out.feed(Outgoing::Control { kind, text }).await.map_err(gone)?;
        out.flush().await.map_err(gone)
    }

    async fn error<O: Output>(&self, out: &mut O, id: Option<&str>, code: &str, message: &str) -> Result<(), End> {
        self.control(out, "error", error_message(id, code, message)).await
    }

    async fn command<O: Output>(&mut self, cmd: Command, out: &mut O) -> Result<(), End> {
        let msg = match *cmd {
            Ok(m) => m,
            Err(problem) => return self.error(out, None, "invalid_message", &problem).await,
        };
        match msg {
            ClientMsg::Ping => self.control(out, "pong", json!({"type": "pong"}).to_string()).await,
            ClientMsg::Auth { .. } => {
                self.error(out, None, "already_authenticated", "this connection is already authenticated").await
            }
            ClientMsg::Unsubscribe { id } => match self.ids.remove(&id) {
                None => self.error(out, Some(&id), "unknown_subscription", "no subscription with this id").await,
                Some(key) => {
                    self.subs.remove(&key);
                    self.hub.remove_sub(&self.reg.conn, key);
                    self.control(out, "unsubscribed", json!({"type": "unsubscribed", "id": id}).to_string()).await
                }
            },
            ClientMsg::Subscribe { id, filter, from } => {
                if id.is_empty() || id.len() > 128 {
                    return self.error(out, None, "invalid_subscription", "`id` must be 1 to 128 characters").await;
                }
                if self.ids.contains_key(&id) {
                    return self
                        .error(out, Some(&id), "duplicate_subscription", "a subscription with this id exists")
                        .await;
                }
                if self.ids.len() >= self.hub.limits.max_subscriptions {
                    let m = format!(
                        "at most {} subscriptions per connection (stream.max_subscriptions_per_connection)",
                        self.hub.limits.max_subscriptions
                    );
                    return self.error(out, Some(&id), "too_many_subscriptions", &m).await;
                }
                let filter = match Filter::parse(filter) {
                    Ok(f) => Arc::new(f),
                    Err(m) => return self.error(out, Some(&id), "invalid_filter", &m).await,
                };
                let head = self.hub.log().head();
                let pruned = self.hub.log().pruned_through();
                let start = match from {
                    Start::Now => head,
                    Start::Earliest => pruned,
                    Start::After(n) if n > head => {
                        let m = format!("offset {n} is beyond the log head {head}");
                        return self.error(out, Some(&id), "offset_in_future", &m).await;
                    }
                    Start::After(n) if n < pruned => {
                        let m = expired_message(n, pruned);
                        return self.error(out, Some(&id), "offset_expired", &m).await;
                    }
                    Start::After(n) => n,
                };
                self.subscribe(id, filter, start, out).await
            }
        }
    }

    /// Adds a subscription starting after `start` and confirms it to the client.
    pub async fn subscribe<O: Output>(
        &mut self,
        id: String,
        filter: Arc<Filter>,
        start: u64,
        out: &mut O,
    ) -> Result<(), End> {
        let key = self.hub.next_key();
        let id_json = serde_json::to_string(&id).expect("strings serialise");
        let confirm = json!({"type": "subscribed", "id": id, "from": start, "head": self.hub.log().head()});
        let live = self.hub.add_sub(&self.reg.conn, key, filter.clone(), start);
        self.subs.insert(
            key,
            LocalSub {
                id_json,
                filter,
                last_sent: start,
                cursor: start,
                created_us: now_ms() as i64 * 1000,
                catching_up: !live,
            },
        );
        self.ids.insert(id, key);
        self.control(out, "subscribed", confirm.to_string()).await
    }

    async fn deliver<O: Output>(&mut self, d: Delivery, out: &mut O) -> Result<(), End> {
        // A delivery for a subscription removed since it was queued has no one to go to.
        let Some(s) = self.subs.get_mut(&d.sub) else { return Ok(()) };
        // The tailer queued it because this subscription's filter matched (a key's filter never
        // changes); the token's scope is checked again below all the same.
        send_entry(&self.hub, &self.reg.conn, s, &d.entry, Matched::Yes, out).await
    }

    /// Reads one page of the log for subscription `key` and sends what matches; rejoins live
    /// delivery once the page reaches what the tailer has already offered.
    async fn catch_up_step<O: Output>(&mut self, key: u64, out: &mut O) -> Result<(), End> {
        let Some(s) = self.subs.get_mut(&key) else {
            // Unknown here means it was just removed; make sure the hub forgets it too.
            self.hub.remove_sub(&self.reg.conn, key);
            return Ok(());
        };
        if !s.catching_up {
            // The tailer switched it (queue full): read on from what the client really got.
            s.catching_up = true;
            s.cursor = s.last_sent;
        }
        let head_before = self.hub.log().head();
        if s.cursor < self.hub.log().pruned_through() {
            // Retention removed entries this client has not received: never skip them silently.
            return Err(End::OffsetExpired);
        }
        // The session filter doubles as an index: a session's entries share its partition key.
        let filter =
            ReadFilter { tenant: Some(self.reg.conn.tenant.clone()), partition_key: s.filter.session_id.clone() };
        let page = self.hub.log().read(s.cursor, PAGE, &filter).await.map_err(|e| {
            tracing::warn!(error = %e, "stream catch-up cannot read the log");
            End::LogUnavailable
        })?;
        let mut scanned = page.last().map_or(s.cursor, |e| e.offset);
        if page.len() < PAGE {
            // A short page saw everything committed before it started.
            scanned = scanned.max(head_before);
        }
        for e in &page {
            if e.offset <= s.last_sent {
                continue;
            }
            let entry = StreamEntry::from_log(e);
            send_entry(&self.hub, &self.reg.conn, s, &entry, Matched::Unknown, out).await?;
        }
        out.flush().await.map_err(gone)?;
        s.cursor = s.cursor.max(scanned);
        if self.hub.try_rejoin(&self.reg.conn, key, s.cursor) {
            s.catching_up = false;
        }
        Ok(())
    }
}

/// Whether the subscription's filter has already been matched against an entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Matched {
    /// By the tailer, before it queued the entry for this subscription.
    Yes,
    Unknown,
}

/// Sends `e` on subscription `s` if the token admits it, the filter matches, and it is newer
/// than what `s` has already sent.
async fn send_entry<O: Output>(
    hub: &Hub,
    conn: &Conn,
    s: &mut LocalSub,
    e: &StreamEntry,
    matched: Matched,
    out: &mut O,
) -> Result<(), End> {
    if e.offset <= s.last_sent {
        return Ok(());
    }
    // Checked on both paths (the tailer also checks before queueing): the token's scope is
    // the one rule that must hold whatever else is wrong.
    if !conn.admits(e) || (matched == Matched::Unknown && !s.filter.matches(e)) {
        return Ok(());
    }
    out.feed(Outgoing::Event { sub_id_json: &s.id_json, entry: e }).await.map_err(gone)?;
    s.last_sent = e.offset;
    hub.metrics.messages.increment(1);
    if e.appended_at_us >= s.created_us {
        let lag_us = (now_ms() as i64 * 1000).saturating_sub(e.appended_at_us).max(0);
        hub.metrics.delivery.record(lag_us as f64 / 1e6);
    }
    Ok(())
}

fn gone(_: ()) -> End {
    End::ClientGone
}
