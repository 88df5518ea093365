//! `idstream watch`: a command-line stream client. Prints one JSON line per event (the event
//! with its `offset`) and, after any disconnect, reconnects with backoff and resumes after the
//! last offset it printed, so its output has no gap and no duplicate.
//!
//! It must never print or log the token. It gives up only when reconnecting cannot help: the
//! token is refused (4401) or expired (4403), or the server refuses the subscription.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use idstream_server::stream::protocol::close;

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/stream")]
    pub url: String,
    /// The JWT (prefer --token-file or IDSTREAM_TOKEN: command lines are visible).
    #[arg(long, env = "IDSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the JWT.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Kind patterns, comma-separated (`verification.*,decision.made`); default: all the token allows.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Only this verification session.
    #[arg(long)]
    pub session: Option<String>,
    /// Only this subject (your user id).
    #[arg(long)]
    pub subject: Option<String>,
    /// Where to start: `now`, `earliest`, or an offset (events after it).
    #[arg(long, default_value = "now")]
    pub from: String,
    /// Exit after printing this many events.
    #[arg(long)]
    pub max_events: Option<u64>,
}

/// Runs `watch`, printing to stdout.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    watch(&args, &mut std::io::stdout().lock()).await.map(|_| ())
}

enum Outcome {
    /// Printed `--max-events` events.
    Done,
    /// The connection ended; reconnecting may help.
    Lost(String),
}

/// Streams events into `out` until `--max-events` or a fatal error; returns how many it printed.
pub async fn watch<W: Write>(args: &WatchArgs, out: &mut W) -> anyhow::Result<u64> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_owned(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?.trim().to_owned()
        }
        (None, None) => bail!("give a token with --token, --token-file or IDSTREAM_TOKEN (`idstream token` mints one)"),
    };
    let mut from = match args.from.as_str() {
        "now" | "earliest" => json!(args.from),
        n => json!({"offset": n.parse::<u64>().context("--from must be now, earliest or an offset")?}),
    };
    let mut printed = 0u64;
    let mut last: Option<u64> = None;
    let mut backoff = idstream_server::util::Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        let before = printed;
        match session(args, &token, &from, out, &mut printed, &mut last).await? {
            Outcome::Done => return Ok(printed),
            Outcome::Lost(why) => {
                // A connection that delivered something was healthy: start the backoff over.
                if printed > before {
                    backoff.reset();
                }
                let wait = backoff.next_wait();
                eprintln!("idstream watch: {why}; reconnecting in {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
            }
        }
        // Resume after the last event printed: the server sends everything after it.
        if let Some(last) = last {
            from = json!({"offset": last});
        }
    }
}

/// One connection: subscribe, then print events until it ends.
async fn session<W: Write>(
    args: &WatchArgs,
    token: &str,
    from: &Value,
    out: &mut W,
    printed: &mut u64,
    last: &mut Option<u64>,
) -> anyhow::Result<Outcome> {
    let mut req = args.url.as_str().into_client_request().context("--url is not a WebSocket URL")?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().context("the token is not header-safe")?);
    let mut ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(e) => return Ok(Outcome::Lost(format!("cannot connect: {e}"))),
    };
    let mut filter = json!({});
    if !args.kinds.is_empty() {
        filter["kinds"] = json!(args.kinds);
    }
    if let Some(s) = &args.session {
        filter["session_id"] = json!(s);
    }
    if let Some(s) = &args.subject {
        filter["subject"] = json!(s);
    }
    let sub = json!({"type": "subscribe", "id": "watch", "filter": filter, "from": from});
    if let Err(e) = ws.send(Message::text(sub.to_string())).await {
        return Ok(Outcome::Lost(format!("connection lost: {e}")));
    }
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame.map_or((0, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                if code == close::INVALID_TOKEN || code == close::TOKEN_EXPIRED {
                    bail!("the server closed the stream ({code}): {reason}");
                }
                return Ok(Outcome::Lost(format!("closed by the server ({code}): {reason}")));
            }
            Ok(_) => continue,
            Err(e) => return Ok(Outcome::Lost(format!("connection lost: {e}"))),
        };
        let v: Value = serde_json::from_str(&text).context("the server sent a message that is not JSON")?;
        match v["type"].as_str() {
            Some("event") => {
                let offset = v["offset"].as_u64().context("an event without an offset")?;
                // The server never repeats an offset; this guard keeps the output exact even
                // across reconnects if one ever did.
                if last.is_some_and(|l| offset <= l) {
                    continue;
                }
                writeln!(out, "{}", v["event"])?;
                out.flush()?;
                *last = Some(offset);
                *printed += 1;
                if args.max_events.is_some_and(|m| *printed >= m) {
                    let _ = ws.close(None).await;
                    return Ok(Outcome::Done);
                }
            }
            Some("error") => bail!("the server refused the subscription: {} ({})", v["message"], v["code"]),
            _ => {}
        }
    }
    Ok(Outcome::Lost("connection closed".into()))
}
