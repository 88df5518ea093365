//! Reading YAML documents with positions, and collecting every shape error on the way.
//!
//! `serde`-driven YAML stops at the first error and forgets positions once a value parsed, so
//! documents are loaded as a marked tree (`marked-yaml`, on the maintained `yaml-rust2`) and
//! walked by hand: each mapping is checked against the keys its format allows, and every
//! problem becomes a [`RuleError`] with its line:column.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};
use serde_json::Value as Json;

use crate::error::{ErrorKind, Pos, RuleError};

/// Collects errors for one document.
pub(crate) struct Diag<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub errors: Vec<RuleError>,
}

impl<'a> Diag<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Diag { file, text, errors: Vec::new() }
    }

    pub fn push(&mut self, kind: ErrorKind, rule: Option<&str>, pos: Option<Pos>, message: impl Into<String>) {
        self.errors.push(RuleError {
            kind,
            file: self.file.to_owned(),
            rule: rule.map(str::to_owned),
            case: None,
            pos,
            expr_pos: None,
            message: message.into(),
        });
    }

    /// Loads the document; a YAML syntax error is fatal (nothing after it can be trusted).
    pub fn load(&mut self) -> Option<MarkedMappingNode> {
        match parse(self.text) {
            Ok(Node::Mapping(m)) => Some(m),
            Ok(other) => {
                self.push(ErrorKind::Syntax, None, pos(other.span()), "the document must be a mapping");
                None
            }
            Err(e) => {
                use marked_yaml::LoadError as L;
                let (at, msg) = match &e {
                    L::TopLevelMustBeMapping(m) => (Some(*m), "the document must be a mapping".to_owned()),
                    L::DuplicateKey(d) => {
                        (d.key.span().start().copied(), format!("duplicate key `{}`", d.key.as_str()))
                    }
                    L::ScanError(m, se) => (Some(*m), format!("invalid YAML: {}", se.info())),
                    L::MappingKeyMustBeScalar(m) | L::UnexpectedAnchor(m) | L::UnexpectedTag(m) => {
                        (Some(*m), format!("unsupported YAML: {}", strip_marker(&e.to_string())))
                    }
                    other => (None, format!("invalid YAML: {other}")),
                };
                let p = at.map(|m| Pos { line: m.line(), column: m.column() });
                self.push(ErrorKind::Syntax, None, p, msg);
                None
            }
        }
    }

    /// Checks a mapping's keys against `allowed`; reports each unknown one.
    pub fn check_keys(&mut self, map: &MarkedMappingNode, allowed: &[&str], what: &str, rule: Option<&str>) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let hint = allowed.iter().find(|a| close(a, key.as_str()));
                let message = match hint {
                    Some(h) => format!("unknown field `{}` in {what} (did you mean `{h}`?)", key.as_str()),
                    None => {
                        format!("unknown field `{}` in {what}; expected one of: {}", key.as_str(), allowed.join(", "))
                    }
                };
                self.push(ErrorKind::UnknownField, rule, pos(key.span()), message);
            }
        }
    }

    /// A required string scalar.
    pub fn req_str<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
        what: &str,
        rule: Option<&str>,
    ) -> Option<&'n MarkedScalarNode> {
        match map.get_node(key) {
            None => {
                self.push(ErrorKind::MissingField, rule, map_pos(map), format!("{what} is missing `{key}`"));
                None
            }
            Some(n) => self.str_node(n, key, rule),
        }
    }

    /// An optional string scalar.
    pub fn opt_str<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
        rule: Option<&str>,
    ) -> Option<&'n MarkedScalarNode> {
        map.get_node(key).and_then(|n| self.str_node(n, key, rule))
    }

    fn str_node<'n>(&mut self, n: &'n Node, key: &str, rule: Option<&str>) -> Option<&'n MarkedScalarNode> {
        match n {
            Node::Scalar(s) => Some(s),
            other => {
                self.push(ErrorKind::InvalidValue, rule, pos(other.span()), format!("`{key}` must be a string"));
                None
            }
        }
    }

    /// An optional finite number.
    pub fn opt_num(&mut self, map: &MarkedMappingNode, key: &str, rule: Option<&str>) -> Option<f64> {
        let n = map.get_node(key)?;
        match n.as_scalar().and_then(|s| s.as_f64()).filter(|f| f.is_finite()) {
            Some(f) => Some(f),
            None => {
                self.push(ErrorKind::InvalidValue, rule, pos(n.span()), format!("`{key}` must be a number"));
                None
            }
        }
    }

    /// Where the CEL position `at` (1-based, inside the expression held by `scalar`) is in the
    /// document. YAML folding and block indentation only ever change whitespace, so the n-th
    /// non-whitespace character of the expression is the n-th of the scalar in the document:
    /// exact for plain, `|` and `>` scalars, and for quoted ones up to an escape sequence.
    pub fn expr_to_doc(&self, scalar: &MarkedScalarNode, at: Pos) -> Option<Pos> {
        let start = scalar.span().start()?;
        let expr = scalar.as_str();
        let offset = pos_to_offset(expr, at);
        let k = expr.chars().take(offset).filter(|c| !c.is_whitespace()).count();
        let total = expr.chars().filter(|c| !c.is_whitespace()).count();
        let mut cur = Pos { line: start.line(), column: start.column() };
        let mut chars = self.text.chars().skip(start.character()).peekable();
        if matches!(chars.peek(), Some('"' | '\'')) && !scalar.may_coerce() {
            chars.next();
            cur.column += 1;
        }
        let mut seen = 0;
        let mut after_last = cur;
        for c in chars {
            if !c.is_whitespace() {
                if seen == k && k < total {
                    return Some(cur);
                }
                seen += 1;
                if seen == total {
                    after_last = Pos { line: cur.line, column: cur.column + 1 };
                    if k >= total {
                        return Some(after_last);
                    }
                }
            }
            if c == '\n' {
                cur = Pos { line: cur.line + 1, column: 1 };
            } else {
                cur.column += 1;
            }
        }
        Some(after_last)
    }
}

/// The character offset of a 1-based line:column in `text`.
fn pos_to_offset(text: &str, at: Pos) -> usize {
    let mut line = 1;
    let mut offset = 0;
    for (i, c) in text.chars().enumerate() {
        if line == at.line {
            return i + at.column.saturating_sub(1);
        }
        if c == '\n' {
            line += 1;
        }
        offset = i + 1;
    }
    offset + at.column.saturating_sub(1)
}

/// Parses YAML the way every idstream document is read: duplicate keys are errors, and
/// `prevent_coercion` keeps quoted scalars strings (`'1'` is text, `1` a number).
fn parse(text: &str) -> Result<Node, marked_yaml::LoadError> {
    let opts = LoaderOptions::default().error_on_duplicate_keys(true).prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(0, text, opts)
}

/// Marked-yaml prefixes its messages with the marker; ours carry the position separately.
fn strip_marker(s: &str) -> &str {
    s.split_once(": ").map_or(s, |(_, rest)| rest)
}

/// Whether `a` is plausibly a typo of `b` (edit distance at most 2).
fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

/// Where a mapping starts, for errors about the whole mapping: its first key (a block
/// mapping's own marker lands after that key, which reads oddly in a message).
pub(crate) fn map_pos(map: &MarkedMappingNode) -> Option<Pos> {
    map.keys().next().and_then(|k| pos(k.span())).or_else(|| pos(map.span()))
}

/// The start of a node.
pub(crate) fn pos(span: &Span) -> Option<Pos> {
    span.start().map(|m| Pos { line: m.line(), column: m.column() })
}

/// A node as JSON. Plain scalars are typed the YAML way (`true`, `12`, `1.5`, `null`/`~`/empty);
/// quoted and block scalars are always strings.
pub(crate) fn to_json(node: &Node) -> Json {
    match node {
        Node::Scalar(s) => scalar_json(s),
        Node::Sequence(seq) => Json::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(m) => Json::Object(m.iter().map(|(k, v)| (k.as_str().to_owned(), to_json(v))).collect()),
    }
}

fn scalar_json(s: &MarkedScalarNode) -> Json {
    if !s.may_coerce() {
        return Json::String(s.as_str().to_owned());
    }
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Json::Null,
        _ => {}
    }
    if let Some(b) = s.as_bool() {
        return Json::Bool(b);
    }
    if let Some(i) = s.as_i64() {
        return Json::from(i);
    }
    if let Some(n) = s.as_f64().and_then(serde_json::Number::from_f64) {
        return Json::Number(n);
    }
    Json::String(s.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_distance() {
        assert!(close("outcom", "outcome"));
        assert!(close("reson", "reason"));
        assert!(!close("severity", "score"));
    }

    #[test]
    fn scalars_are_typed_like_yaml() {
        let node = parse("a: 1\nb: '1'\nc: true\nd: 1.5\ne: ~\nf: x\n").unwrap();
        let json = to_json(&node);
        assert_eq!(json, serde_json::json!({"a": 1, "b": "1", "c": true, "d": 1.5, "e": null, "f": "x"}));
    }
}
