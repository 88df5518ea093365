//! idstream's decision core: versioned, explainable KYC rules, with no I/O.
//!
//! # Layout
//! - [`context`]: the [`Context`] a rule sees (every field documented), built from an
//!   [`idstream_core::event::IdentityEvent`] plus the I/O layer's [`Enrichment`].
//! - [`ruleset`]: the YAML ruleset document, its validation ([`Ruleset::parse`]) and
//!   evaluation ([`Ruleset::evaluate`] → [`Decision`]).
//! - `compile`: the CEL analysis done once at load (unknown variables, type errors, and the
//!   rewrite of field reads to slots that makes evaluation fast).
//! - `fast`: a direct evaluator for the common subset of CEL (comparisons, `in`, `has`, logic),
//!   with the interpreter as fallback; proven equal to the interpreter by a differential test.
//! - [`cases`]: `rules check` ([`check`]) and `rules test` ([`run_cases`]).
//! - [`error`]: load-time errors with file, rule id and positions.
//! - `default-ruleset.yaml`: the shipped KYC policy ([`DEFAULT_RULESET`]).
//!
//! # Invariants
//! - **No I/O.** No clock (decision time is an argument of [`Context::from_event`]), no
//!   network, no files except [`Ruleset::load_file`], a thin convenience at the edge. The same
//!   ruleset and context always give the same [`Decision`], so a replay reproduces it.
//! - **A broken ruleset is never returned.** [`Ruleset::parse`] returns every error or a fully
//!   compiled ruleset, nothing in between.
//! - **Silence never approves.** Only an explicit approve rule can approve, and any decline,
//!   review, threshold or evaluation error overrides it.

pub mod cases;
mod compile;
pub mod context;
pub mod error;
mod fast;
pub mod ruleset;
mod yaml;

pub use cases::{check, run_cases, CaseResult, Report, Summary};
pub use context::{Context, Enrichment};
pub use error::{ErrorKind, ErrorList, Pos, RuleError};
pub use ruleset::{Decision, EvalError, Fired, Outcome, Rule, Ruleset, Thresholds};

/// The default KYC ruleset, as shipped (each rule justified in its comments).
pub const DEFAULT_RULESET: &str = include_str!("../default-ruleset.yaml");
