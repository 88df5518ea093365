//! idstream's tools: what the `idstream` command offers besides the server, kept in a crate the
//! server cannot import (so the server's dependencies are only what it needs).
//!
//! # Layout
//! - [`personas`]: a deterministic generator of realistic Didit v3 traffic from synthetic
//!   personas (pure: no I/O, no clock).
//! - [`simulate`]: `idstream simulate`, which signs that traffic and posts it to a server.
//! - [`bench`], [`bench_stream`], [`bench_decide`], [`bench_notify`], [`bench_verify`]: the load
//!   harness behind BENCHMARKS.md (`idstream bench ingest|log|stream|decide|notify|verifications|documents|queries`).
//! - [`watch`]: `idstream watch`, a command-line stream client that resumes after disconnects.
//! - [`sandbox`]: `idstream sandbox`, a local Didit API (hosted sessions, decisions, signed
//!   webhooks back, injected faults) for the whole loop on one machine and for tests.

pub mod bench;
pub mod bench_decide;
pub mod bench_documents;
pub mod bench_notify;
pub mod bench_queries;
pub mod bench_stream;
pub mod bench_verify;
pub mod personas;
pub mod sandbox;
pub mod simulate;
pub mod watch;
