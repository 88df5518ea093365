//! One integration-test binary: real servers on 127.0.0.1:0, each with its own data
//! directory, driven over real HTTP.

mod access;
mod api;
mod backends;
mod crash;
mod dashboard;
mod decisions;
mod documents;
mod helpers;
mod ingest;
mod log_conformance;
mod notify;
mod openapi;
mod review_queue;
mod rules_cli;
mod scale_out;
mod simulate;
mod store_conformance;
mod stream;
mod upgrade;
mod verifications;
