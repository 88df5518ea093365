//! idstream's pure core: everything that decides what a webhook *means*, with no I/O.
//!
//! # Layout
//! - [`canonical`]: canonical JSON byte-exact with Didit's signer (Python's `json.dumps`).
//! - [`signature`]: Didit (`X-Signature-V2`, `X-Signature`, `X-Signature-Simple`) and Standard
//!   Webhooks verification; secrets that never print.
//! - [`event`]: the normalised [`event::IdentityEvent`] and the provider normalisers.
//!
//! # Invariant
//! Nothing in this crate reads a clock, a file, a socket or the environment: time and secrets
//! are arguments, so every function is tested with tables of data.

pub mod canonical;
pub mod event;
pub mod signature;
