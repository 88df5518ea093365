//! The idstream server: signed webhooks in, a durable event log, decisions, live streams, the
//! REST API. The meaning of a webhook (canonical JSON, signatures, normalisation) is in the pure
//! `idstream-core` crate and the decision rules in the pure `idstream-rules`; this crate does
//! the I/O around them. Tools (load harness, simulator, stream watcher) are in `idstream-tools`,
//! which this crate cannot import.
//!
//! # Layout, in pipeline order
//! - [`ingest`]: `POST /webhooks/{source}`: signature → normalise → durable append → 2xx.
//! - [`log`]: the [`log::EventLog`] trait; embedded SQLite (group commit) and NATS JetStream.
//! - [`store`]: the [`store::Store`] trait — state written only through transactions with the
//!   log; SQLite and PostgreSQL side by side, their schema migrations, the domain enums as SQL.
//! - [`decide`]: the decision worker (enrich → rules → one transaction), decision partitions
//!   across nodes, review resolutions, backtests, normal forms and keyed hashes of identities.
//! - [`stream`]: live WebSocket / SSE streams of the log (JWT, tenant scope, resume by offset).
//! - [`http`]: the REST API, handlers grouped by resource, and its OpenAPI contract.
//! - [`provider`]: calls to providers (the Didit client, its circuit breaker) and the
//!   reconciliation of results whose webhooks were lost.
//!
//! Around them: [`events`] (the log's typed schema), [`domain`] (outcome, session state,
//! review status, blocklist kind), [`config`], [`backend`] (chooses and opens the backends once),
//! [`state`], [`server`] (`serve(listener, state, shutdown)`), [`error`] (every error →
//! `ApiError`), [`util`] (clock, back-off, hashing, private files), [`sqlite`] (the embedded databases' plumbing).
//!
//! # Imports point down the pipeline
//! `util`, `domain` ← `events` ← `log` ← `store` ← `decide` ← `stream` / `http` ← `backend`,
//! `state`, `server`. Storage (`log`, `store`) never imports `decide`, `stream` or `http`; the
//! decision worker never imports `http`.

pub mod access;
pub mod backend;
pub mod config;
pub mod decide;
pub mod documents;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod ingest;
pub mod log;
pub mod notify;
pub mod provider;
pub mod server;
pub mod sqlite;
pub mod state;
pub mod stats;
pub mod store;
pub mod stream;
pub mod util;
