//! `rules check` and `rules test`: validating a ruleset, and running a compliance team's
//! example contexts against it.
//!
//! # Cases format
//! ```yaml
//! cases:
//!   - name: honest user is approved
//!     context:                        # a partial Context; anything left out is absent/zero
//!       provider: { status: approved, signature_covers_decision: true }
//!       liveness: { score: 97.5 }
//!     expect:
//!       outcome: approve
//!       reasons: [kyc.approved]        # optional; compared as a set with Decision::reasons
//! ```
//! Library functions only: the binary wires them to the CLI verbs and prints their `Display`.

use std::fmt;

use marked_yaml::Node;

use crate::context::{Context, Field, Group};
use crate::error::{ErrorKind, Pos, RuleError};
use crate::ruleset::{Decision, Outcome, Ruleset};
use crate::yaml::{map_pos, pos, to_json, Diag};

/// What `rules check` reports for a valid ruleset.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub source_name: String,
    pub version: String,
    pub version_label: String,
    pub rules: usize,
    pub decline_rules: usize,
    pub review_rules: usize,
    pub approve_rules: usize,
    pub score_rules: usize,
    pub lists: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: ok", self.source_name)?;
        writeln!(f, "  version: {}", self.version)?;
        writeln!(f, "  label:   {}", self.version_label)?;
        writeln!(
            f,
            "  rules:   {} ({} decline, {} review, {} approve, {} scoring)",
            self.rules, self.decline_rules, self.review_rules, self.approve_rules, self.score_rules
        )?;
        write!(f, "  lists:   {}", if self.lists.is_empty() { "none".to_owned() } else { self.lists.join(", ") })
    }
}

/// Validates a ruleset document (`rules check FILE`).
pub fn check(source_name: &str, text: &str) -> Result<Summary, Vec<RuleError>> {
    let rs = Ruleset::parse(source_name, text)?;
    let count = |o: Outcome| rs.rules().filter(|r| r.outcome == Some(o)).count();
    Ok(Summary {
        source_name: source_name.to_owned(),
        version: rs.version().to_owned(),
        version_label: rs.version_label().to_owned(),
        rules: rs.rules().count(),
        decline_rules: count(Outcome::Decline),
        review_rules: count(Outcome::Review),
        approve_rules: count(Outcome::Approve),
        score_rules: rs.rules().filter(|r| r.score.is_some()).count(),
        lists: rs.lists().keys().cloned().collect(),
    })
}

/// One case's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    pub name: String,
    pub pos: Option<Pos>,
    pub expected_outcome: Outcome,
    /// Expected reasons, sorted; `None` when the case does not check them.
    pub expected_reasons: Option<Vec<String>>,
    pub decision: Decision,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.decision.outcome == self.expected_outcome
            && self.expected_reasons.as_ref().is_none_or(|want| *want == sorted(&self.decision.reasons))
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The results of a cases file (`rules test FILE CASES`).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub source_name: String,
    pub ruleset_version: String,
    pub cases: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.cases.iter().all(CaseResult::passed)
    }

    pub fn failures(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed()).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cases {
            if c.passed() {
                writeln!(f, "PASS {}", c.name)?;
                continue;
            }
            let at = c.pos.map(|p| format!(" ({}:{p})", self.source_name)).unwrap_or_default();
            writeln!(f, "FAIL {}{at}", c.name)?;
            if c.decision.outcome != c.expected_outcome {
                writeln!(f, "  outcome: expected {}, got {}", c.expected_outcome, c.decision.outcome)?;
            }
            if let Some(want) = &c.expected_reasons {
                let got = sorted(&c.decision.reasons);
                let missing: Vec<&str> = want.iter().filter(|r| !got.contains(r)).map(String::as_str).collect();
                let extra: Vec<&str> = got.iter().filter(|r| !want.contains(r)).map(String::as_str).collect();
                if !missing.is_empty() {
                    writeln!(f, "  - reasons expected but not given: {}", missing.join(", "))?;
                }
                if !extra.is_empty() {
                    writeln!(f, "  + reasons given but not expected: {}", extra.join(", "))?;
                }
            }
            for line in c.decision.to_string().lines() {
                writeln!(f, "  | {line}")?;
            }
        }
        let failed = self.failures();
        write!(
            f,
            "{} passed, {failed} failed (ruleset {})",
            self.cases.len() - failed,
            self.ruleset_version.get(..12).unwrap_or(&self.ruleset_version)
        )
    }
}

const CASES_KEYS: &[&str] = &["cases"];
const CASE_KEYS: &[&str] = &["name", "context", "expect"];
const EXPECT_KEYS: &[&str] = &["outcome", "reasons"];

/// Runs every case of a cases document against `ruleset`. A malformed cases file is an error
/// (with positions, like a ruleset); a case that fails is a result, not an error.
pub fn run_cases(ruleset: &Ruleset, source_name: &str, cases_text: &str) -> Result<Report, Vec<RuleError>> {
    let mut d = Diag::new(source_name, cases_text);
    let Some(root) = d.load() else { return Err(d.errors) };
    d.check_keys(&root, CASES_KEYS, "the cases file", None);
    let mut cases = Vec::new();
    match root.get_node("cases").map(|n| (n, n.as_sequence())) {
        None => d.push(ErrorKind::MissingField, None, map_pos(&root), "the cases file is missing `cases`"),
        Some((n, None)) => d.push(ErrorKind::InvalidValue, None, pos(n.span()), "`cases` must be a list"),
        Some((_, Some(seq))) => {
            for (i, item) in seq.iter().enumerate() {
                if let Some(c) = parse_case(&mut d, ruleset, i, item) {
                    cases.push(c);
                }
            }
        }
    }
    if !d.errors.is_empty() {
        // The shared helpers file an error under `rule`; in a cases file it is a case.
        let mut errors = d.errors;
        for e in &mut errors {
            e.case = e.rule.take();
        }
        return Err(errors);
    }
    Ok(Report { source_name: source_name.to_owned(), ruleset_version: ruleset.version().to_owned(), cases })
}

fn parse_case(d: &mut Diag<'_>, ruleset: &Ruleset, index: usize, item: &Node) -> Option<CaseResult> {
    let Some(m) = item.as_mapping() else {
        d.push(ErrorKind::InvalidValue, None, pos(item.span()), format!("case #{} must be a mapping", index + 1));
        return None;
    };
    let name = d.req_str(m, "name", &format!("case #{}", index + 1), None).map(|s| s.as_str().to_owned());
    let label = name.clone().unwrap_or_else(|| format!("#{}", index + 1));
    let what = format!("case `{label}`");
    d.check_keys(m, CASE_KEYS, &what, Some(&label));

    let context = match m.get_node("context") {
        None => Some(Context::default()),
        Some(node) => {
            let before = d.errors.len();
            check_context_keys(d, node, &label);
            match serde_json::from_value::<Context>(to_json(node)) {
                Ok(c) => Some(c),
                // Already reported, with positions, by the key check.
                Err(_) if d.errors.len() > before => None,
                Err(e) => {
                    d.push(ErrorKind::InvalidValue, Some(&label), pos(node.span()), format!("invalid context: {e}"));
                    None
                }
            }
        }
    };

    let mut outcome = None;
    let mut reasons = None;
    match m.get_node("expect").map(|n| (n, n.as_mapping())) {
        None => d.push(ErrorKind::MissingField, Some(&label), map_pos(m), format!("{what} is missing `expect`")),
        Some((n, None)) => d.push(ErrorKind::InvalidValue, Some(&label), pos(n.span()), "`expect` must be a mapping"),
        Some((_, Some(e))) => {
            d.check_keys(e, EXPECT_KEYS, "`expect`", Some(&label));
            if let Some(s) = d.req_str(e, "outcome", "`expect`", Some(&label)) {
                outcome = Outcome::parse(s.as_str());
                if outcome.is_none() {
                    let msg = format!("`outcome` must be decline, review or approve, not `{}`", s.as_str());
                    d.push(ErrorKind::InvalidValue, Some(&label), pos(s.span()), msg);
                }
            }
            if let Some(n) = e.get_node("reasons") {
                let list = n.as_sequence().and_then(|seq| {
                    seq.iter().map(|i| i.as_scalar().map(|s| s.as_str().to_owned())).collect::<Option<Vec<_>>>()
                });
                match list {
                    Some(l) => reasons = Some(sorted(&l)),
                    None => d.push(
                        ErrorKind::InvalidValue,
                        Some(&label),
                        pos(n.span()),
                        "`reasons` must be a list of codes",
                    ),
                }
            }
        }
    }
    let (Some(name), Some(context), Some(expected_outcome)) = (name, context, outcome) else { return None };
    Some(CaseResult {
        name,
        pos: map_pos(m),
        expected_outcome,
        expected_reasons: reasons,
        decision: ruleset.evaluate(&context),
    })
}

/// Unknown groups and fields in a case's context, each at its own position (serde would only
/// name the first, without a position).
fn check_context_keys(d: &mut Diag<'_>, node: &Node, case: &str) {
    let Some(m) = node.as_mapping() else { return };
    let groups: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
    d.check_keys(m, &groups, "the context", Some(case));
    for (key, value) in m.iter() {
        let Some(group) = Group::from_name(key.as_str()) else { continue };
        if matches!(group, Group::Subject | Group::Lists) {
            continue;
        }
        if let Some(fields) = value.as_mapping() {
            let names: Vec<&str> = Field::ALL.iter().filter(|f| f.group() == group).map(|f| f.name()).collect();
            d.check_keys(fields, &names, &format!("`{}`", group.name()), Some(case));
        }
    }
}
