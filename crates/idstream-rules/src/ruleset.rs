//! Rulesets: the YAML document, its validation, and evaluating it against a [`Context`].
//!
//! # Format
//! ```yaml
//! version_label: "kyc-2025-06"            # free text for humans; the real version is the hash
//! thresholds: { review_score: 50, decline_score: 120 }
//! lists:                                    # defaults; the server config may override them
//!   high_risk_countries: [KP, PRK, IR, IRN]
//! rules:
//!   - id: liveness_low
//!     description: Optional longer text.
//!     when: has(liveness.score) && liveness.score < 50.0     # CEL, must be a bool
//!     outcome: decline                      # decline | review | approve (optional)
//!     score: 10                             # added to the decision's score (optional)
//!     reason: liveness.low                  # machine code, `lower_case.dotted`
//!     message: Liveness score below 50.     # for analysts
//! ```
//!
//! # Decision procedure
//! Every rule is evaluated (no short-circuit between rules, so `fired` is the full picture).
//! 1. Outcomes of fired rules combine by precedence: any `decline` beats any `review`, which
//!    beats `approve`.
//! 2. Score contributions of fired rules are summed; `score >= decline_score` declines
//!    (`score.decline`), else `score >= review_score` reviews (`score.review`). The stricter
//!    of (1) and (2) wins.
//! 3. A rule that fails to evaluate is recorded in `errors` and makes the outcome at least
//!    `review` (`rules.error`): an error can make a decision stricter, never looser, so a
//!    decline found by another rule stands.
//! 4. If nothing asked for decline or review, the outcome is `approve` **only if an explicit
//!    approve rule fired**; otherwise `review` (`rules.no_approval`). Silence never approves.
//!
//! The version of a ruleset is the hex SHA-256 of its canonical content (the parsed document
//! serialised as JSON with a fixed field order), so comments and formatting do not change it
//! and any change of meaning or wording does.
//!
//! Pure: evaluation reads only the [`Context`] it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use cel::common::ast::IdedExpr;
use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelNull, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::compile::{analyse, Slot, Slots};
use crate::context::{Context, FieldValue};
use crate::error::{ErrorKind, Pos, RuleError};
use crate::fast;
use crate::yaml::{map_pos, pos, Diag};

/// The list every ruleset knows even when it declares no default (empty then).
pub const BUILTIN_LISTS: &[&str] = &["high_risk_countries"];

/// A decision outcome, ordered by strictness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Approve,
    Review,
    Decline,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approve => "approve",
            Outcome::Review => "review",
            Outcome::Decline => "decline",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "approve" => Some(Outcome::Approve),
            "review" => Some(Outcome::Review),
            "decline" => Some(Outcome::Decline),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Score thresholds; `review_score < decline_score`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub review_score: f64,
    pub decline_score: f64,
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub description: Option<String>,
    pub when: String,
    pub outcome: Option<Outcome>,
    pub score: Option<f64>,
    pub reason: String,
    pub message: String,
}

/// A rule ready to run: its expression rewritten to slots, the fast form when it has one, and
/// the slots it reads.
#[derive(Debug)]
struct Compiled {
    rule: Rule,
    expr: IdedExpr,
    fast: Option<fast::Node>,
    reads: Vec<usize>,
}

/// A validated, compiled ruleset. Immutable and shareable across threads.
pub struct Ruleset {
    source_name: String,
    version: String,
    version_label: String,
    thresholds: Thresholds,
    lists: BTreeMap<String, Vec<String>>,
    rules: Vec<Compiled>,
    slots: Slots,
    /// `slots.list[i].path()`, computed once so a fired rule's explanation does not format.
    slot_paths: Vec<String>,
    env: Arc<cel::Env>,
}

impl fmt::Debug for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ruleset")
            .field("source_name", &self.source_name)
            .field("version", &self.version)
            .field("version_label", &self.version_label)
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// The shape the version hash is computed over. Field order is fixed by this declaration, so
/// the hash does not depend on `serde_json` map ordering features.
#[derive(Serialize)]
struct Canonical<'a> {
    version_label: &'a str,
    thresholds: &'a Thresholds,
    lists: &'a BTreeMap<String, Vec<String>>,
    rules: Vec<&'a Rule>,
}

const TOP_KEYS: &[&str] = &["version_label", "thresholds", "lists", "rules"];
const THRESHOLD_KEYS: &[&str] = &["review_score", "decline_score"];
const RULE_KEYS: &[&str] = &["id", "description", "when", "outcome", "score", "reason", "message"];

/// Reason codes the engine itself gives; rules may not use them.
pub const ENGINE_REASONS: &[&str] = &["rules.error", "rules.no_approval", "score.review", "score.decline"];

/// `lower_case.dotted.code`
fn valid_reason(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
}

fn cel_env() -> Arc<cel::Env> {
    let mut env = cel::Env::stdlib();
    // `lowerAscii`, `trim`, ... for comparing names; registering a built-in extension on a fresh
    // environment cannot conflict.
    env.add_extension(cel::extensions::strings).expect("the strings extension registers on a fresh Env");
    Arc::new(env)
}

impl Ruleset {
    /// Parses and validates a ruleset document. Every error found is returned, each with the
    /// file name, rule id and position; a document with any error is never returned.
    pub fn parse(source_name: &str, text: &str) -> Result<Ruleset, Vec<RuleError>> {
        let mut d = Diag::new(source_name, text);
        let Some(root) = d.load() else { return Err(d.errors) };
        d.check_keys(&root, TOP_KEYS, "the ruleset", None);

        let version_label = d.req_str(&root, "version_label", "the ruleset", None).map(|s| s.as_str().to_owned());

        let thresholds = match root.get_node("thresholds") {
            None => {
                d.push(ErrorKind::MissingField, None, map_pos(&root), "the ruleset is missing `thresholds`");
                None
            }
            Some(node) => match node.as_mapping() {
                None => {
                    d.push(ErrorKind::InvalidValue, None, pos(node.span()), "`thresholds` must be a mapping");
                    None
                }
                Some(m) => {
                    d.check_keys(m, THRESHOLD_KEYS, "`thresholds`", None);
                    let mut get = |key: &str| {
                        if m.get_node(key).is_none() {
                            d.push(
                                ErrorKind::MissingField,
                                None,
                                map_pos(m),
                                format!("`thresholds` is missing `{key}`"),
                            );
                        }
                        d.opt_num(m, key, None)
                    };
                    let review = get("review_score");
                    let decline = get("decline_score");
                    match (review, decline) {
                        (Some(review_score), Some(decline_score)) => {
                            if review_score >= decline_score {
                                d.push(
                                    ErrorKind::ThresholdOrder,
                                    None,
                                    map_pos(m),
                                    format!(
                                        "`thresholds.review_score` ({review_score}) must be below `decline_score` ({decline_score})"
                                    ),
                                );
                            }
                            Some(Thresholds { review_score, decline_score })
                        }
                        _ => None,
                    }
                }
            },
        };

        let mut lists = BTreeMap::new();
        if let Some(node) = root.get_node("lists") {
            match node.as_mapping() {
                None => {
                    d.push(ErrorKind::InvalidValue, None, pos(node.span()), "`lists` must be a mapping of name to list")
                }
                Some(m) => {
                    for (name, value) in m.iter() {
                        let items = value.as_sequence().and_then(|seq| {
                            seq.iter().map(|i| i.as_scalar().map(|s| s.as_str().to_owned())).collect::<Option<Vec<_>>>()
                        });
                        match items {
                            Some(items) => {
                                lists.insert(name.as_str().to_owned(), items);
                            }
                            None => d.push(
                                ErrorKind::InvalidValue,
                                None,
                                pos(value.span()),
                                format!("`lists.{}` must be a list of strings", name.as_str()),
                            ),
                        }
                    }
                }
            }
        }
        let known_lists: BTreeSet<String> =
            lists.keys().cloned().chain(BUILTIN_LISTS.iter().map(|s| (*s).to_owned())).collect();

        let env = cel_env();
        let mut slots = Slots::default();
        let mut rules = Vec::new();
        match root.get_node("rules") {
            None => d.push(ErrorKind::MissingField, None, map_pos(&root), "the ruleset is missing `rules`"),
            Some(node) => match node.as_sequence() {
                None => d.push(ErrorKind::InvalidValue, None, pos(node.span()), "`rules` must be a list"),
                Some(seq) => {
                    let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
                    for (i, item) in seq.iter().enumerate() {
                        if let Some(c) = parse_rule(&mut d, &env, &mut slots, &known_lists, &mut seen, i, item) {
                            rules.push(c);
                        }
                    }
                }
            },
        }

        if !d.errors.is_empty() {
            // Position order reads naturally; the sort is stable so one position's errors keep
            // their discovery order.
            let mut errors = d.errors;
            errors.sort_by_key(|e| e.pos);
            return Err(errors);
        }
        let (Some(version_label), Some(thresholds)) = (version_label, thresholds) else {
            unreachable!("a missing label or thresholds was reported as an error")
        };
        let canonical = Canonical {
            version_label: &version_label,
            thresholds: &thresholds,
            lists: &lists,
            rules: rules.iter().map(|c| &c.rule).collect(),
        };
        let bytes = serde_json::to_vec(&canonical).expect("plain data always serialises");
        let version = hex::encode(Sha256::digest(&bytes));
        Ok(Ruleset {
            source_name: source_name.to_owned(),
            version,
            version_label,
            thresholds,
            lists,
            rules,
            slot_paths: slots.list.iter().map(Slot::path).collect(),
            slots,
            env,
        })
    }

    /// The ruleset shipped with idstream (`default-ruleset.yaml`).
    pub fn default_ruleset() -> Ruleset {
        Ruleset::parse("default-ruleset.yaml", crate::DEFAULT_RULESET).expect("the shipped default ruleset is valid")
    }

    /// Reads and parses a ruleset file (the only I/O in this crate, kept at the edge).
    pub fn load_file(path: &std::path::Path) -> Result<Ruleset, Vec<RuleError>> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![RuleError {
                kind: ErrorKind::Syntax,
                file: name.clone(),
                rule: None,
                case: None,
                pos: None,
                expr_pos: None,
                message: format!("cannot read the file: {e}"),
            }]
        })?;
        Ruleset::parse(&name, &text)
    }

    /// Hex SHA-256 of the canonical content.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn version_label(&self) -> &str {
        &self.version_label
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The `lists` defaults declared by the document.
    pub fn lists(&self) -> &BTreeMap<String, Vec<String>> {
        &self.lists
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|c| &c.rule)
    }

    /// Context paths a rule reads, in slot order (for documentation and tooling).
    pub fn reads_of(&self, rule_id: &str) -> Option<Vec<String>> {
        let c = self.rules.iter().find(|c| c.rule.id == rule_id)?;
        let paths: BTreeSet<&String> = c.reads.iter().map(|&i| &self.slot_paths[i]).collect();
        Some(paths.into_iter().cloned().collect())
    }

    /// Evaluates every rule against `ctx` and combines them into a decision.
    pub fn evaluate(&self, ctx: &Context) -> Decision {
        let resolver = Resolver {
            ctx,
            slots: &self.slots.list,
            defaults: &self.lists,
            yes: CelBool::from(true),
            no: CelBool::from(false),
        };
        // The interpreter context is built at most once per decision, and only when a rule
        // needs the interpreter (most run on the fast path).
        let mut cel_ctx: Option<cel::Context<'_, '_>> = None;

        let mut fired = Vec::new();
        let mut errors = Vec::new();
        let mut score = 0.0;
        for c in &self.rules {
            let fast_result = c.fast.as_ref().map(|n| fast::eval(n, &resolver));
            let result: Result<bool, String> = match fast_result {
                Some(Ok(fast::V::Bool(b))) => Ok(b),
                Some(Ok(v)) => Err(format!("the condition gave a {}, not a bool", v.type_name())),
                Some(Err(fast::Error::Eval(e))) => Err(format!("evaluation failed: {e}")),
                None | Some(Err(fast::Error::Fallback)) => {
                    let cc = cel_ctx.get_or_insert_with(|| {
                        let mut cc = cel::Context::with_env(Arc::clone(&self.env));
                        cc.set_variable_resolver(&resolver);
                        cc
                    });
                    match cel::Value::resolve_val(&c.expr, cc) {
                        Ok(v) => match v.downcast_ref::<CelBool>() {
                            Some(b) => Ok(*b.inner()),
                            None => Err(format!("the condition gave a {}, not a bool", v.get_type().name())),
                        },
                        Err(e) => Err(format!("evaluation failed: {e}")),
                    }
                }
            };
            let matched = match result {
                Ok(b) => b,
                Err(message) => {
                    errors.push(EvalError { rule_id: c.rule.id.clone(), message: self.explain_error(c, ctx, message) });
                    false
                }
            };
            if matched {
                score += c.rule.score.unwrap_or(0.0);
                fired.push(Fired {
                    rule_id: c.rule.id.clone(),
                    reason: c.rule.reason.clone(),
                    message: c.rule.message.clone(),
                    outcome: c.rule.outcome,
                    score: c.rule.score,
                    values: c.reads.iter().map(|&i| (self.slot_paths[i].clone(), resolver.json(i))).collect(),
                });
            }
        }
        self.combine(score, fired, errors)
    }

    /// Steps 1–4 of the decision procedure (module docs).
    fn combine(&self, score: f64, fired: Vec<Fired>, errors: Vec<EvalError>) -> Decision {
        let by_rule = fired.iter().filter_map(|f| f.outcome).filter(|o| *o != Outcome::Approve).max();
        let by_score = if score >= self.thresholds.decline_score {
            Some(Outcome::Decline)
        } else if score >= self.thresholds.review_score {
            Some(Outcome::Review)
        } else {
            None
        };
        let by_error = (!errors.is_empty()).then_some(Outcome::Review);
        let approved = fired.iter().any(|f| f.outcome == Some(Outcome::Approve));
        let strict = [by_rule, by_score, by_error].into_iter().flatten().max();
        let outcome = match strict {
            Some(o) => o,
            None if approved => Outcome::Approve,
            None => Outcome::Review,
        };

        let mut reasons: Vec<String> = Vec::new();
        let mut add = |r: &str| {
            if !reasons.iter().any(|x| x == r) {
                reasons.push(r.to_owned());
            }
        };
        for f in &fired {
            let supports =
                f.outcome == Some(outcome) || (by_score == Some(outcome) && f.score.is_some_and(|s| s > 0.0));
            if supports {
                add(&f.reason);
            }
        }
        if by_score == Some(outcome) {
            add(if outcome == Outcome::Decline { "score.decline" } else { "score.review" });
        }
        if by_error.is_some() && outcome == Outcome::Review {
            add("rules.error");
        }
        if strict.is_none() && !approved {
            add("rules.no_approval");
        }
        Decision { outcome, score, ruleset_version: self.version.clone(), reasons, fired, errors }
    }

    /// A runtime error, with the absent fields the rule read (the usual cause).
    fn explain_error(&self, c: &Compiled, ctx: &Context, message: String) -> String {
        let absent: Vec<String> = c
            .reads
            .iter()
            .filter_map(|&i| match &self.slots.list[i] {
                Slot::Field(f) if ctx.get(*f) == FieldValue::Absent => Some(f.path()),
                Slot::Subject(k) if ctx.subject.get(k).is_none_or(Json::is_null) => Some(format!("subject.{k}")),
                _ => None,
            })
            .collect();
        if absent.is_empty() {
            message
        } else {
            format!("{message} (absent: {}; guard with has())", absent.join(", "))
        }
    }
}

/// Parses and compiles one rule, reporting its problems.
fn parse_rule(
    d: &mut Diag<'_>,
    env: &cel::Env,
    slots: &mut Slots,
    known_lists: &BTreeSet<String>,
    seen: &mut BTreeMap<String, Pos>,
    index: usize,
    item: &marked_yaml::Node,
) -> Option<Compiled> {
    let Some(m) = item.as_mapping() else {
        d.push(ErrorKind::InvalidValue, None, pos(item.span()), format!("rule #{} must be a mapping", index + 1));
        return None;
    };
    let here = map_pos(m);
    let id = d.req_str(m, "id", &format!("rule #{}", index + 1), None).map(|s| s.as_str().to_owned());
    let label = id.clone().unwrap_or_else(|| format!("#{}", index + 1));
    let rule = Some(label.as_str());
    let what = format!("rule `{label}`");
    d.check_keys(m, RULE_KEYS, &what, rule);

    if let Some(id) = &id {
        if id.trim().is_empty() {
            d.push(ErrorKind::InvalidValue, rule, here, "`id` must not be empty");
        } else if let Some(first) = seen.get(id) {
            d.push(
                ErrorKind::DuplicateRuleId,
                rule,
                here,
                format!("duplicate rule id `{id}` (first defined at {first})"),
            );
        } else if let Some(p) = here {
            seen.insert(id.clone(), p);
        }
    }

    let description = d.opt_str(m, "description", rule).map(|s| s.as_str().to_owned());
    let message = d.req_str(m, "message", &what, rule).map(|s| s.as_str().to_owned());
    let outcome = d.opt_str(m, "outcome", rule).and_then(|s| match Outcome::parse(s.as_str()) {
        Some(o) => Some(o),
        None => {
            let msg = format!("`outcome` must be decline, review or approve, not `{}`", s.as_str());
            d.push(ErrorKind::InvalidValue, rule, pos(s.span()), msg);
            None
        }
    });
    let score = d.opt_num(m, "score", rule);
    if m.get_node("outcome").is_none() && m.get_node("score").is_none() {
        d.push(ErrorKind::NoEffect, rule, here, "the rule has neither `outcome` nor `score`, so it can never matter");
    }
    let reason = match m.get_node("reason") {
        None => {
            d.push(ErrorKind::MissingReason, rule, here, "the rule has no `reason` code");
            None
        }
        Some(_) => d.opt_str(m, "reason", rule).and_then(|s| {
            let r = s.as_str();
            if !valid_reason(r) {
                let msg = format!("`reason` must look like `code.like.this` (lower case, digits, `_`), not `{r}`");
                d.push(ErrorKind::MissingReason, rule, pos(s.span()), msg);
                None
            } else if ENGINE_REASONS.contains(&r) {
                d.push(ErrorKind::MissingReason, rule, pos(s.span()), format!("`{r}` is reserved for the engine"));
                None
            } else {
                Some(r.to_owned())
            }
        }),
    };

    let when_node = d.req_str(m, "when", &what, rule)?;
    let when = when_node.as_str().to_owned();
    let mut compiled = None;
    match env.parser().parse_with_source_info(&when) {
        Err(errs) => {
            for e in errs.errors {
                let at = Pos { line: e.pos.0.max(1) as usize, column: e.pos.1.max(1) as usize };
                d.errors.push(RuleError {
                    kind: ErrorKind::CelSyntax,
                    file: d.file.to_owned(),
                    rule: Some(label.clone()),
                    case: None,
                    pos: d.expr_to_doc(when_node, at),
                    expr_pos: Some(at),
                    message: format!("invalid CEL: {}", e.msg),
                });
            }
        }
        Ok((mut expr, info)) => {
            let (reads, problems) = analyse(&mut expr, &info, &when, slots, known_lists);
            for p in problems {
                d.errors.push(RuleError {
                    kind: p.kind,
                    file: d.file.to_owned(),
                    rule: Some(label.clone()),
                    case: None,
                    pos: p.at.and_then(|at| d.expr_to_doc(when_node, at)).or(pos(when_node.span())),
                    expr_pos: p.at,
                    message: p.message,
                });
            }
            let is_group = |i: usize| matches!(slots.list.get(i), Some(Slot::Group(_)));
            let fast = fast::compile(&expr, &is_group);
            compiled = Some((expr, fast, reads));
        }
    }
    let (expr, fast, reads) = compiled?;
    Some(Compiled {
        rule: Rule { id: id?, description, when, outcome, score, reason: reason?, message: message? },
        expr,
        fast,
        reads,
    })
}

/// Answers the interpreter's variable look-ups from the slot table and the borrowed context.
/// Values borrow the context's strings; nothing is copied up front.
struct Resolver<'a> {
    ctx: &'a Context,
    slots: &'a [Slot],
    defaults: &'a BTreeMap<String, Vec<String>>,
    yes: CelBool,
    no: CelBool,
}

static NULL: CelNull = CelNull;

impl<'a> Resolver<'a> {
    fn list(&self, name: &str) -> Option<&'a [String]> {
        self.ctx.lists.get(name).or_else(|| self.defaults.get(name)).map(Vec::as_slice)
    }

    fn bool<'b>(&'b self, b: bool) -> CowVal<'b, 'b> {
        CowVal::Borrowed(if b { &self.yes } else { &self.no })
    }

    /// The JSON value of slot `i`, for the decision's explanation.
    fn json(&self, i: usize) -> Json {
        match &self.slots[i] {
            Slot::Field(f) | Slot::Has(f) => self.ctx.get(*f).to_json(),
            Slot::Subject(k) | Slot::HasSubject(k) => self.ctx.subject.get(k).cloned().unwrap_or(Json::Null),
            Slot::List(k) | Slot::HasList(k) => self.list(k).map_or(Json::Null, |l| Json::from(l.to_vec())),
            Slot::Group(g) => self.group(*g),
        }
    }

    fn group(&self, g: crate::context::Group) -> Json {
        if g == crate::context::Group::Lists {
            let mut all = self.defaults.clone();
            all.extend(self.ctx.lists.iter().map(|(k, v)| (k.clone(), v.clone())));
            return serde_json::to_value(all).unwrap_or(Json::Null);
        }
        self.ctx.group_json(g)
    }
}

impl<'a> fast::Slots<'a> for Resolver<'a> {
    fn value(&self, slot: usize) -> Result<fast::V<'a>, fast::Error> {
        use fast::V;
        let ctx: &'a Context = self.ctx;
        Ok(match &self.slots[slot] {
            Slot::Field(f) => match ctx.get(*f) {
                FieldValue::Absent => V::Null,
                FieldValue::Bool(b) => V::Bool(b),
                FieldValue::Int(n) => V::Int(n),
                FieldValue::Double(x) => V::Double(x),
                FieldValue::Str(s) => V::Str(std::borrow::Cow::Borrowed(s)),
            },
            Slot::Has(f) => V::Bool(ctx.get(*f) != FieldValue::Absent),
            Slot::Subject(k) => match ctx.subject.get(k) {
                None => V::Null,
                Some(v) => fast::json_value(v)?,
            },
            Slot::HasSubject(k) => V::Bool(ctx.subject.get(k).is_some_and(|v| !v.is_null())),
            Slot::List(k) => V::Strs(self.list(k).unwrap_or_default()),
            Slot::HasList(k) => V::Bool(self.list(k).is_some()),
            Slot::Group(_) => return Err(fast::Error::Fallback),
        })
    }
}

fn json_to_cel<'b>(v: &Json) -> Option<CowVal<'b, 'b>> {
    let value = cel::to_value(v).ok()?;
    let boxed: Box<dyn Val> = value.try_into().ok()?;
    Some(CowVal::Owned(boxed))
}

impl VariableResolver for Resolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let i: usize = variable.strip_prefix('$')?.parse().ok()?;
        Some(match self.slots.get(i)? {
            Slot::Field(f) => match self.ctx.get(*f) {
                FieldValue::Absent => CowVal::Borrowed(&NULL),
                FieldValue::Bool(b) => self.bool(b),
                FieldValue::Int(n) => CowVal::owned(CelInt::from(n)),
                FieldValue::Double(x) => CowVal::owned(CelDouble::from(x)),
                FieldValue::Str(s) => CowVal::owned(CelString::from(s)),
            },
            Slot::Has(f) => self.bool(self.ctx.get(*f) != FieldValue::Absent),
            Slot::Subject(k) => match self.ctx.subject.get(k) {
                None | Some(Json::Null) => CowVal::Borrowed(&NULL),
                Some(Json::String(s)) => CowVal::owned(CelString::from(s.as_str())),
                Some(Json::Bool(b)) => self.bool(*b),
                Some(v) => json_to_cel(v)?,
            },
            Slot::HasSubject(k) => self.bool(self.ctx.subject.get(k).is_some_and(|v| !v.is_null())),
            Slot::List(k) => {
                let items: Vec<Box<dyn Val + 'b>> = self
                    .list(k)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| Box::new(CelString::from(s.as_str())) as Box<dyn Val + 'b>)
                    .collect();
                CowVal::owned(CelList::from(items))
            }
            Slot::HasList(k) => self.bool(self.list(k).is_some()),
            Slot::Group(g) => json_to_cel(&self.group(*g))?,
        })
    }
}

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fired {
    pub rule_id: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Every context field the condition reads, with its value (`null` when absent).
    pub values: BTreeMap<String, Json>,
}

/// A rule whose condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalError {
    pub rule_id: String,
    pub message: String,
}

/// The result of evaluating a ruleset: what to do, why, and under which ruleset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// Sum of the score contributions of the fired rules.
    pub score: f64,
    pub ruleset_version: String,
    /// The reason codes behind the outcome: those of the fired rules that ask for it (or, when
    /// the score decided, that contributed to it), plus the engine's own (`score.review`,
    /// `score.decline`, `rules.error`, `rules.no_approval`).
    pub reasons: Vec<String>,
    /// Every rule that matched, in ruleset order, with the values it read.
    pub fired: Vec<Fired>,
    /// Rules that failed to evaluate.
    pub errors: Vec<EvalError>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.ruleset_version.get(..12).unwrap_or(&self.ruleset_version);
        writeln!(f, "{} (score {}, ruleset {short})", self.outcome, self.score)?;
        if !self.reasons.is_empty() {
            writeln!(f, "  reasons: {}", self.reasons.join(", "))?;
        }
        for r in &self.fired {
            let effect = match (r.outcome, r.score) {
                (Some(o), Some(s)) => format!("{o}, +{s}"),
                (Some(o), None) => o.to_string(),
                (None, Some(s)) => format!("+{s}"),
                (None, None) => String::new(),
            };
            let values: Vec<String> = r.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "  fired {} [{effect}] {}: {} ({})", r.rule_id, r.reason, r.message, values.join(", "))?;
        }
        for e in &self.errors {
            writeln!(f, "  error in {}: {}", e.rule_id, e.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ruleset>();
    }

    /// Runs one rule on both paths: `None` when the fast path defers to the interpreter.
    fn both(rs: &Ruleset, c: &Compiled, ctx: &Context) -> (Option<Result<bool, ()>>, Result<bool, ()>) {
        let resolver = Resolver {
            ctx,
            slots: &rs.slots.list,
            defaults: &rs.lists,
            yes: CelBool::from(true),
            no: CelBool::from(false),
        };
        let fast = match c.fast.as_ref().map(|n| fast::eval(n, &resolver)) {
            None | Some(Err(fast::Error::Fallback)) => None,
            Some(Ok(fast::V::Bool(b))) => Some(Ok(b)),
            Some(_) => Some(Err(())),
        };
        let mut cc = cel::Context::with_env(Arc::clone(&rs.env));
        cc.set_variable_resolver(&resolver);
        let slow = match cel::Value::resolve_val(&c.expr, &cc) {
            Ok(v) => v.downcast_ref::<CelBool>().map(|b| *b.inner()).ok_or(()),
            Err(_) => Err(()),
        };
        (fast, slow)
    }

    /// The fast path and the interpreter agree on every rule, for contexts covering every
    /// type combination the subset handles (and some it defers).
    #[test]
    fn fast_path_agrees_with_the_interpreter() {
        let conditions = [
            "subject.x == 1",
            "subject.x != 1",
            "subject.x == 1.0",
            "subject.x == 'a'",
            "subject.x == null",
            "subject.x == true",
            "subject.x < 2.5",
            "subject.x <= 1u",
            "subject.x > 'a'",
            "subject.x >= false",
            "subject.x in ['a', 1, 2.5, null, true]",
            "subject.x in lists.l",
            "subject.x in subject.y",
            "!subject.x",
            "subject.x && subject.y",
            "subject.x || subject.y",
            "subject.x && false",
            "true || subject.x",
            "subject.x.lowerAscii() == 'abc'",
            "subject.x.upperAscii() == subject.y",
            "has(subject.x) && subject.x > 0",
            "liveness.score < 50",
            "liveness.score < 50.0 || ip.vpn",
            "ip.vpn == true",
            "document.age >= 18",
            "subject.x == subject.y",
            "subject.x < subject.y",
            "[subject.x] == [1]",
            "subject.x",
            "-1 < subject.x",
            "subject.x == -0.0",
            "subject.x < 18446744073709551615u",
        ];
        let mut text = String::from(
            "version_label: d\nthresholds: {review_score: 1, decline_score: 2}\nlists: {l: [a, b]}\nrules:\n",
        );
        for (i, c) in conditions.iter().enumerate() {
            text.push_str(&format!("  - {{id: r{i}, when: {c:?}, outcome: review, reason: a.b, message: m}}\n"));
        }
        let custom = Ruleset::parse("diff.yaml", &text).unwrap();
        let default = Ruleset::default_ruleset();
        assert!(custom.rules.iter().filter(|c| c.fast.is_some()).count() >= conditions.len() - 2);

        let values = [
            Json::Null,
            Json::Bool(true),
            Json::Bool(false),
            serde_json::json!(1),
            serde_json::json!(-1),
            serde_json::json!(2.5),
            serde_json::json!(u64::MAX),
            serde_json::json!("a"),
            serde_json::json!("ABC"),
            serde_json::json!("abc"),
            serde_json::json!([1]),
            serde_json::json!({"k": 1}),
            serde_json::json!(0.0),
        ];
        let mut compared = 0;
        for x in values.iter().map(Some).chain([None]) {
            for y in values.iter().map(Some).chain([None]) {
                let mut ctx = Context::default();
                if let Some(x) = x {
                    ctx.subject.insert("x".into(), x.clone());
                }
                if let Some(y) = y {
                    ctx.subject.insert("y".into(), y.clone());
                }
                // Vary the default ruleset's facts from the same values.
                ctx.liveness.score = x.and_then(Json::as_f64);
                ctx.ip.vpn = y.and_then(Json::as_bool);
                ctx.document.age = x.and_then(Json::as_i64);
                ctx.provider.status = y.and_then(Json::as_str).map(str::to_owned);
                ctx.subject.insert("expected_first_name".into(), y.cloned().unwrap_or(Json::Null));
                ctx.document.first_name = x.and_then(Json::as_str).map(str::to_owned);
                for rs in [&custom, &default] {
                    for c in &rs.rules {
                        let (fast, slow) = both(rs, c, &ctx);
                        if let Some(fast) = fast {
                            assert_eq!(fast, slow, "rule `{}` with x={x:?} y={y:?}", c.rule.when);
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared > 5000, "{compared}");
    }

    #[test]
    fn reason_format() {
        for ok in ["a", "blocklist.document", "fraud_ring.phone", "x1.y_2"] {
            assert!(valid_reason(ok), "{ok}");
        }
        for bad in ["", "A.b", "a..b", "a.", ".a", "a b", "a-b"] {
            assert!(!valid_reason(bad), "{bad}");
        }
    }
}
