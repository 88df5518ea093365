//! `GET /v1/stream/sse`: the Server-Sent Events fallback, for clients that cannot use
//! WebSockets. One subscription per request, given by query parameters; the same token check,
//! tenant and claims scope, and delivery engine as the WebSocket.
//!
//! Each event is `id: <offset>` + `data: <event JSON>`, so a browser's `EventSource` resumes by
//! itself (`Last-Event-ID`). Protocol messages (`subscribed`, `error`) are named events.
//!
//! This module must never log a token.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::protocol::{error_message, Filter, FilterSpec};
use super::session::{End, Outgoing, Output, Session};
use super::{until_exp, ws::bearer};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

struct SseOut {
    tx: mpsc::Sender<Event>,
}

impl Output for SseOut {
    async fn feed(&mut self, msg: Outgoing<'_>) -> Result<(), ()> {
        let ev = match msg {
            Outgoing::Event { entry, .. } => Event::default().id(entry.offset.to_string()).data(&entry.json),
            Outgoing::Control { kind, text } => Event::default().event(kind).data(text),
            // SSE keeps the connection alive with comments (`KeepAlive`), not pings.
            Outgoing::Ping => return Ok(()),
        };
        self.tx.send(ev).await.map_err(|_| ())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid_parameter", message)
}

/// The subscription of an SSE request.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SseParams {
    /// Kind patterns, comma-separated (`verification.*,decision.made`); default: all the token allows.
    kinds: Option<String>,
    session_id: Option<String>,
    subject: Option<String>,
    /// `decision.made` events with this outcome only.
    outcome: Option<String>,
    /// Resume after this offset (`Last-Event-ID` wins); default: from now.
    after: Option<u64>,
    /// The stream token, for clients that cannot set `Authorization`. (Read before the other
    /// parameters are parsed: the token is checked first.)
    #[allow(dead_code)]
    token: Option<String>,
}

/// A live stream of the log as Server-Sent Events: `id: <offset>` + `data: <event>`, resumable
/// with `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/v1/stream/sse",
    operation_id = "stream_sse",
    tag = "streams",
    params(SseParams, ("last-event-id" = Option<u64>, Header, description = "Resume after this offset")),
    security(("stream_token" = [])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody, description = "A bad parameter (`invalid_parameter`) or an offset beyond the head (`offset_in_future`)"),
        (status = 401, body = ErrorBody, description = "No valid stream token"),
        (status = 410, body = ErrorBody, description = "The offset was removed by retention (`offset_expired`)"),
        (status = 503, body = ErrorBody, description = "Streams are not configured (`stream_not_configured`) or the connection limit is reached (`too_many_connections`)"),
        crate::http::responses::ServerError
    )
)]
pub async fn handler(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let hub = st.stream.clone();
    let auth =
        hub.authenticator().map_err(|m| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stream_not_configured", m))?;
    // The token is checked before the parameters: an unauthenticated caller learns nothing.
    let raw: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let query_token = raw.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone());
    let token = bearer(&headers).or(query_token).unwrap_or_default();
    let who = auth.verify(&token).map_err(|e| ApiError::unauthorized(e.code(), e.to_string()))?;
    let q: SseParams = crate::http::extract::parse_query(query.as_deref().unwrap_or(""))?;
    let spec = FilterSpec {
        kinds: q.kinds.map(|k| k.split(',').map(|s| s.trim().to_owned()).collect()),
        session_id: q.session_id,
        subject: q.subject,
        outcome: q.outcome,
    };
    let filter = Arc::new(Filter::parse(spec).map_err(bad)?);
    // `Last-Event-ID` is what a reconnecting EventSource sends; it wins over the original URL.
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("`Last-Event-ID` must be the offset of the last event received".into()))?,
        ),
        None => q.after,
    };
    let head = hub.log().head();
    let start = match resume {
        Some(n) if n > head => {
            return Err(ApiError::bad_request("offset_in_future", format!("offset {n} is beyond the log head {head}")))
        }
        Some(n) if n < hub.log().pruned_through() => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "offset_expired",
                super::session::expired_message(n, hub.log().pruned_through()),
            ))
        }
        Some(n) => n,
        None => head,
    };
    let permit = hub.admit().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("the server holds its maximum of {} stream connections", hub.limits.max_connections),
        )
    })?;
    let (reg, queue) = hub.register(&who);
    let (tx, rx) = mpsc::channel::<Event>(16);
    let keep_alive = KeepAlive::new().interval(hub.limits.ping_interval);
    hub.tasks().clone().spawn(async move {
        let _permit = permit;
        let mut session = Session::new(hub.clone(), reg, queue, None);
        let gone = tx.clone();
        let mut out = SseOut { tx };
        // SSE clients send nothing: this channel only stays open for the session's lifetime.
        let (_cmd_tx, mut cmd_rx) = mpsc::channel(1);
        if session.subscribe("sse".into(), filter, start, &mut out).await.is_err() {
            return;
        }
        let end = tokio::select! {
            end = session.run(&mut out, &mut cmd_rx) => end,
            _ = tokio::time::sleep(until_exp(who.exp)) => End::TokenExpired,
            _ = hub.stopping().cancelled() => End::Shutdown,
            _ = gone.closed() => End::ClientGone,
        };
        drop(session);
        let (code, message) = match end {
            End::ClientGone | End::KeepAlive => return,
            End::TokenExpired => ("token_expired", "token expired: reconnect with a new token (Last-Event-ID resumes)"),
            End::Shutdown => ("shutting_down", "server shutting down: reconnect (Last-Event-ID resumes)"),
            End::LogUnavailable => ("log_unavailable", "event log unavailable: reconnect (Last-Event-ID resumes)"),
            End::OffsetExpired => {
                ("offset_expired", "fell behind the log's retention: reconnect without Last-Event-ID and reconcile")
            }
        };
        let _ = out.feed(Outgoing::Control { kind: "error", text: error_message(None, code, message) }).await;
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}
