//! Load-time errors of a ruleset or cases document, each pointing at where it was written.
//!
//! Validation collects every error it finds instead of stopping at the first, so a compliance
//! author fixes a file in one round. Each error names the file, the rule (when inside one), the
//! line:column in the document, and for CEL problems the line:column inside the expression.

use std::fmt;

/// A 1-based line:column position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What went wrong, for callers (and tests) that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not valid YAML, or not the expected shape (a mapping where a list is needed, ...).
    Syntax,
    /// A key the format does not have (usually a typo).
    UnknownField,
    /// A required key is missing.
    MissingField,
    /// A value of the wrong type (`score: high`) or out of range.
    InvalidValue,
    /// Two rules share an id.
    DuplicateRuleId,
    /// The `when` expression is not valid CEL.
    CelSyntax,
    /// The expression reads a variable or field the context does not have.
    UnknownVariable,
    /// The expression compares or combines values of incompatible types.
    TypeMismatch,
    /// A rule without a `reason` code (or a malformed one).
    MissingReason,
    /// A rule with neither an `outcome` nor a `score`: it could never affect a decision.
    NoEffect,
    /// `thresholds.review_score` is not below `thresholds.decline_score`.
    ThresholdOrder,
}

/// One load-time error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub kind: ErrorKind,
    /// The file (or other source name) the document came from.
    pub file: String,
    /// The rule the error is in, when it is in one.
    pub rule: Option<String>,
    /// The case the error is in (cases files only).
    pub case: Option<String>,
    /// Where in the document.
    pub pos: Option<Pos>,
    /// Where inside the CEL expression, when the error is in one.
    pub expr_pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(pos) = self.pos {
            write!(f, ":{pos}")?;
        }
        write!(f, ": ")?;
        if let Some(rule) = &self.rule {
            write!(f, "rule `{rule}`: ")?;
        }
        if let Some(case) = &self.case {
            write!(f, "case `{case}`: ")?;
        }
        if let Some(pos) = self.expr_pos {
            write!(f, "in `when` at {pos}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A list of errors, one per line (what `rules check` prints).
pub struct ErrorList<'a>(pub &'a [RuleError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in self.0 {
            writeln!(f, "error: {e}")?;
        }
        write!(f, "{} error{}", self.0.len(), if self.0.len() == 1 { "" } else { "s" })
    }
}
