//! `GET /v1/stream`: the WebSocket endpoint.
//!
//! The token comes from `Authorization: Bearer`, the `token` query parameter, or (browsers,
//! which cannot set headers on a WebSocket) a first message `{"type":"auth","token":"..."}`.
//! A refused token is answered by upgrading and closing with 4401 and a reason, because a
//! browser cannot read the HTTP status of a failed upgrade. The stream closes with 4403 when
//! the token expires, 4408 when the client stops answering pings, 1001 on shutdown.
//!
//! This module must never log a token or echo one back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};

use super::auth::AuthError;
use super::protocol::{close, ClientMsg};
use super::session::{Command, Commands, End, Outgoing, Output, Session};
use super::{until_exp, Hub, Permit};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::util::now_ms;

/// How long a closed connection waits for the client's Close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// How long a connection without a header or query token may take to send its auth message.
const AUTH_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bearer token of an `Authorization` header, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

/// The live stream over a WebSocket. A refused token upgrades and closes with 4401 (browsers
/// cannot read a failed upgrade's status); README "Live streams" documents the messages.
#[utoipa::path(
    get,
    path = "/v1/stream",
    operation_id = "stream_websocket",
    tag = "streams",
    params(("token" = Option<String>, Query, description = "The stream token, for clients that cannot set `Authorization` (or send it as the first message)")),
    security(("stream_token" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 426, body = ErrorBody, description = "Not a WebSocket upgrade request (`upgrade_required`)"),
        (status = 503, body = ErrorBody, description = "Streams are not configured (`stream_not_configured`) or the connection limit is reached (`too_many_connections`)"),
        crate::http::responses::ServerError
    )
)]
pub async fn handler(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                format!("this endpoint speaks WebSocket: {e} (or use GET /v1/stream/sse)"),
            )
            .into_response()
        }
    };
    let hub = st.stream.clone();
    if let Err(m) = hub.authenticator() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stream_not_configured", m).into_response();
    }
    let Some(permit) = hub.admit() else {
        let m = format!("the server holds its maximum of {} stream connections", hub.limits.max_connections);
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", m).into_response();
    };
    let query: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let token = bearer(&headers).or_else(|| query.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    let max = hub.limits.max_message_bytes;
    let tasks = hub.tasks().clone();
    // tungstenite allocates its read buffer per connection up front (128 KiB by default): with
    // 19,000 connections that was ~142 KB of RSS each (BENCHMARKS.md). Clients only send small
    // control messages (auth, subscribe, ping: well under 1 KiB; a larger one grows the buffer
    // as needed), so 1 KiB reads suffice; outgoing events are batched and flushed by the
    // session, so an 8 KiB write threshold costs no throughput.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| tasks.track_future(connection(socket, hub, token, permit)))
}

struct WsOut {
    sink: SplitSink<WebSocket, Message>,
}

impl Output for WsOut {
    async fn feed(&mut self, msg: Outgoing<'_>) -> Result<(), ()> {
        let m = match msg {
            Outgoing::Event { sub_id_json, entry } => Message::Text(entry.message(sub_id_json)),
            Outgoing::Control { text, .. } => Message::Text(text.into()),
            Outgoing::Ping => Message::Ping(Default::default()),
        };
        self.sink.feed(m).await.map_err(|_| ())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        self.sink.flush().await.map_err(|_| ())
    }
}

async fn close_with(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.to_owned().into() };
    // A client that does not read may never take the close frame; don't wait for it forever.
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
}

/// The token from the first message, for clients that could not send it with the upgrade.
async fn token_from_first_message(stream: &mut SplitStream<WebSocket>) -> Result<String, AuthError> {
    let first = tokio::time::timeout(AUTH_MESSAGE_TIMEOUT, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => return Some(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await;
    match first {
        Ok(Some(text)) => match serde_json::from_str::<ClientMsg>(&text) {
            Ok(ClientMsg::Auth { token }) => Ok(token),
            _ => Err(AuthError::Missing),
        },
        _ => Err(AuthError::Missing),
    }
}

async fn connection(socket: WebSocket, hub: Arc<Hub>, token: Option<String>, _permit: Permit) {
    let (mut sink, mut stream) = socket.split();
    let token = match token {
        Some(t) => Ok(t),
        None => token_from_first_message(&mut stream).await,
    };
    let auth = hub.authenticator().expect("the handler refused the upgrade if unconfigured");
    let who = match token.and_then(|t| auth.verify(&t)) {
        Ok(who) => who,
        Err(e) => {
            tracing::debug!(reason = %e, "stream token refused");
            close_with(&mut sink, close::INVALID_TOKEN, &e.to_string()).await;
            return;
        }
    };
    let (reg, queue) = hub.register(&who);
    let every = hub.limits.ping_interval;
    // The client's messages are read in this task, by the session (one task per connection,
    // no reader task or channel: ~1 KB less per idle connection).
    let last_seen = AtomicU64::new(now_ms());
    let mut input = WsIn { stream, last_seen: &last_seen, gone: false };
    let mut session = Session::new(hub.clone(), reg, queue, Some(every));
    let mut out = WsOut { sink };
    let end = tokio::select! {
        end = session.run(&mut out, &mut input) => end,
        _ = tokio::time::sleep(until_exp(who.exp)) => End::TokenExpired,
        _ = hub.stopping().cancelled() => End::Shutdown,
        _ = watchdog(&last_seen, every) => End::KeepAlive,
    };
    // Unregister before the (possibly slow) close, so the tailer stops offering entries.
    drop(session);
    let (code, reason) = match end {
        End::ClientGone => return,
        End::TokenExpired => (close::TOKEN_EXPIRED, "token expired: reconnect with a new token and resume"),
        End::KeepAlive => (close::KEEPALIVE_TIMEOUT, "no pong for two ping intervals"),
        End::Shutdown => (close::GOING_AWAY, "server shutting down: reconnect and resume"),
        End::LogUnavailable => (close::LOG_UNAVAILABLE, "event log unavailable: reconnect and resume"),
        End::OffsetExpired => {
            (close::OFFSET_EXPIRED, "fell behind the log's retention: resubscribe from `earliest` and reconcile")
        }
    };
    close_with(&mut out.sink, code, reason).await;
    // The closing handshake: keep reading until the client answers with its own Close (or a
    // few seconds pass). Dropping the socket at once would make the client's next write
    // (an automatic pong) reset the connection, and it might never read the close reason.
    let _ = tokio::time::timeout(CLOSE_LINGER, async { while input.recv().await.is_some() {} }).await;
}

/// The client's side of the WebSocket, read by the session; any frame proves the client alive.
struct WsIn<'a> {
    stream: SplitStream<WebSocket>,
    last_seen: &'a AtomicU64,
    /// The client closed (or the connection failed): nothing more will come.
    gone: bool,
}

impl WsIn<'_> {
    /// What one frame means: a command, nothing (ping, pong), or the end (`Err`).
    fn command(&self, msg: Option<Result<Message, axum::Error>>) -> Result<Option<Command>, ()> {
        let Some(msg) = msg else { return Err(()) };
        self.last_seen.store(now_ms(), Ordering::Relaxed);
        let cmd = match msg {
            Ok(Message::Text(t)) => serde_json::from_str::<ClientMsg>(&t).map_err(|e| e.to_string()),
            Ok(Message::Binary(_)) => Err("binary messages are not accepted: send JSON text".to_owned()),
            Ok(Message::Ping(_) | Message::Pong(_)) => return Ok(None),
            Ok(Message::Close(_)) | Err(_) => return Err(()),
        };
        Ok(Some(Box::new(cmd)))
    }
}

impl Commands for WsIn<'_> {
    async fn recv(&mut self) -> Option<Command> {
        while !self.gone {
            // `next` is cancel-safe: a frame is either returned or still in the socket.
            let msg = self.stream.next().await;
            match self.command(msg) {
                Ok(Some(cmd)) => return Some(cmd),
                Ok(None) => {}
                Err(()) => self.gone = true,
            }
        }
        None
    }

    fn try_recv(&mut self) -> Option<Command> {
        while !self.gone {
            let msg = self.stream.next().now_or_never()?;
            match self.command(msg) {
                Ok(Some(cmd)) => return Some(cmd),
                Ok(None) => {}
                Err(()) => self.gone = true,
            }
        }
        None
    }
}

/// Resolves once the client has been silent for two ping intervals.
async fn watchdog(last_seen: &AtomicU64, every: Duration) {
    let limit = 2 * every.as_millis() as u64;
    loop {
        tokio::time::sleep(every / 4).await;
        if now_ms().saturating_sub(last_seen.load(Ordering::Relaxed)) > limit {
            return;
        }
    }
}
