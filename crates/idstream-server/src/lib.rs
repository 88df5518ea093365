//! idstream: a self-hosted, real-time identity event platform.
//!
//! # Layout
//! The modules follow the pipeline: a webhook comes in, is verified and normalised, and is
//! appended to the durable log; everything else reads the log.
//! - [`config`]: layered configuration (defaults → file → `IDSTREAM_*`), validated once.
//! - [`ingest`]: `POST /webhooks/{source}`: signature → normalise → durable append → 2xx.
//! - [`log`]: the [`log::EventLog`] trait and its embedded SQLite implementation (group commit).
//! - [`api`]: the authenticated, tenant-scoped read API.
//! - [`decide`]: the decision worker (enrich → rules → one transaction with the log) and the
//!   decision, session, subject, ruleset, blocklist and review APIs; [`backtest`] replays past
//!   decisions through a candidate ruleset.
//! - [`store`]: the state store trait, written only through transactions shared with the log.
//! - [`stream`]: live WebSocket / SSE streams of the log: JWT auth, tenant-scoped
//!   subscriptions, resume by offset, slow consumers caught up from the log.
//! - [`server`]: the router and `serve(listener, state, shutdown)`.
//! - [`simulate`] and [`bench`]: the provider sandbox and the load harness (CLI verbs).
//!
//! The meaning of a webhook (canonical JSON, signatures, normalisation) lives in the pure
//! `idstream-core` crate; this crate does the I/O around it.

pub mod backend;
pub mod config;
pub mod decide;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod ingest;
pub mod log;
pub mod server;
pub mod state;
pub mod store;
pub mod stream;
pub mod util;
