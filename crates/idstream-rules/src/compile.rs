//! Static analysis of a rule's CEL condition, done once when a ruleset loads.
//!
//! The parsed AST is walked for two reasons:
//! - **Validation**: every identifier and field selection is checked against the context
//!   schema ([`crate::context::Field`]; `subject.*` is open-ended, `lists.*` must be declared),
//!   and comparisons whose operand types are known from the schema or from literals are
//!   type-checked (`ip.vpn == 1`, `document.age > '18'`).
//! - **Speed and explanation**: each `group.field` (and `has(group.field)`) is rewritten to a
//!   *slot* identifier `$N`. At evaluation the interpreter resolves `$N` with one index into
//!   the slot table and one borrow from the [`crate::Context`], instead of a map lookup per
//!   segment on a CEL value built for every decision. The slots a rule uses are also exactly
//!   "the values it read", recorded when it fires. `$` cannot start a CEL identifier, so a
//!   slot can never collide with a name a rule author wrote.

use std::collections::{BTreeSet, HashMap};

use cel::common::ast::{operators as ops, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo};

use crate::context::{Field, Group, Kind};
use crate::error::{ErrorKind, Pos};

/// What a slot identifier stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Slot {
    /// A fixed field of the schema.
    Field(Field),
    /// `has(group.field)` of a fixed field: present (not absent).
    Has(Field),
    /// `subject.<key>`: a subject attribute, any JSON value; absent is `null`.
    Subject(String),
    /// `has(subject.<key>)`.
    HasSubject(String),
    /// `lists.<name>`: a configured list of strings.
    List(String),
    /// `has(lists.<name>)`.
    HasList(String),
    /// A whole group used as a map (`document`, `subject`, ...): rare and slower.
    Group(Group),
}

impl Slot {
    /// The static type of the slot's value, when the schema fixes it.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Slot::Field(f) => Some(f.kind()),
            Slot::Has(_) | Slot::HasSubject(_) | Slot::HasList(_) => Some(Kind::Bool),
            Slot::Subject(_) => None,
            Slot::List(_) => Some(Kind::StringList),
            Slot::Group(_) => Some(Kind::Map),
        }
    }

    /// The context path the slot reads (`has(x)` reads `x`).
    pub fn path(&self) -> String {
        match self {
            Slot::Field(f) | Slot::Has(f) => f.path(),
            Slot::Subject(k) | Slot::HasSubject(k) => format!("subject.{k}"),
            Slot::List(k) | Slot::HasList(k) => format!("lists.{k}"),
            Slot::Group(g) => g.name().to_owned(),
        }
    }
}

/// The slots of a whole ruleset, shared by its rules (a field read by ten rules is one slot).
#[derive(Debug, Default)]
pub(crate) struct Slots {
    pub list: Vec<Slot>,
    index: HashMap<Slot, usize>,
}

impl Slots {
    fn intern(&mut self, slot: Slot) -> usize {
        if let Some(&i) = self.index.get(&slot) {
            return i;
        }
        self.list.push(slot.clone());
        self.index.insert(slot, self.list.len() - 1);
        self.list.len() - 1
    }

    fn of_ident(&self, name: &str) -> Option<&Slot> {
        name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).and_then(|i| self.list.get(i))
    }
}

/// One problem found in an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub kind: ErrorKind,
    pub at: Option<Pos>,
    pub message: String,
}

/// Identifiers CEL itself defines (type names used in `type(x) == int`).
const BUILTIN_IDENTS: &[&str] =
    &["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"];

struct Analyser<'a> {
    slots: &'a mut Slots,
    lists: &'a BTreeSet<String>,
    source: &'a SourceInfo,
    text: &'a str,
    reads: BTreeSet<usize>,
    problems: Vec<Problem>,
}

/// Rewrites `expr` to slots and validates it. Returns the slots it reads (sorted, deduplicated)
/// and every problem found.
pub(crate) fn analyse(
    expr: &mut IdedExpr,
    source: &SourceInfo,
    text: &str,
    slots: &mut Slots,
    lists: &BTreeSet<String>,
) -> (Vec<usize>, Vec<Problem>) {
    let mut a = Analyser { slots, lists, source, text, reads: BTreeSet::new(), problems: Vec::new() };
    a.rewrite(expr, &mut Vec::new());
    a.check(expr);
    if let Some(k) = a.kind_of(expr) {
        if k != Kind::Bool {
            let what = a.describe(expr);
            a.problem(
                ErrorKind::TypeMismatch,
                expr.id,
                format!("the condition must be a bool, but {what} is {}", k.with_article()),
            );
        }
    }
    (a.reads.into_iter().collect(), a.problems)
}

/// Line:column (1-based) of a character offset in `text`.
pub(crate) fn offset_pos(text: &str, offset: usize) -> Pos {
    let mut line = 1;
    let mut column = 1;
    for c in text.chars().take(offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Pos { line, column }
}

impl Analyser<'_> {
    fn at(&self, id: u64) -> Option<Pos> {
        self.source.offset_for(id).map(|(start, _)| offset_pos(self.text, start as usize))
    }

    fn problem(&mut self, kind: ErrorKind, id: u64, message: String) {
        let at = self.at(id);
        self.problems.push(Problem { kind, at, message });
    }

    fn use_slot(&mut self, e: &mut IdedExpr, slot: Slot) {
        let i = self.slots.intern(slot);
        self.reads.insert(i);
        e.expr = Expr::Ident(format!("${i}"));
    }

    /// The slot for `group.field` (or `has(group.field)`), or a problem.
    fn field_slot(&mut self, group: Group, field: &str, test: bool, id: u64) -> Option<Slot> {
        match group {
            Group::Subject => {
                Some(if test { Slot::HasSubject(field.to_owned()) } else { Slot::Subject(field.to_owned()) })
            }
            Group::Lists => {
                if !self.lists.contains(field) {
                    let known: Vec<&str> = self.lists.iter().map(String::as_str).collect();
                    self.problem(
                        ErrorKind::UnknownVariable,
                        id,
                        format!(
                            "unknown list `lists.{field}`; declare it under `lists:` (declared: {})",
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    );
                    return None;
                }
                Some(if test { Slot::HasList(field.to_owned()) } else { Slot::List(field.to_owned()) })
            }
            _ => match Field::lookup(group, field) {
                Some(f) => Some(if test { Slot::Has(f) } else { Slot::Field(f) }),
                None => {
                    let known: Vec<&str> = Field::ALL.iter().filter(|f| f.group() == group).map(|f| f.name()).collect();
                    self.problem(
                        ErrorKind::UnknownVariable,
                        id,
                        format!(
                            "unknown field `{}.{field}`; `{}` has: {}",
                            group.name(),
                            group.name(),
                            known.join(", ")
                        ),
                    );
                    None
                }
            },
        }
    }

    fn rewrite(&mut self, e: &mut IdedExpr, bound: &mut Vec<String>) {
        let id = e.id;
        match &mut e.expr {
            Expr::Select(sel) => {
                if let Expr::Ident(name) = &sel.operand.expr {
                    if !bound.contains(name) {
                        if let Some(group) = Group::from_name(name) {
                            let (field, test) = (sel.field.clone(), sel.test);
                            if let Some(slot) = self.field_slot(group, &field, test, id) {
                                self.use_slot(e, slot);
                            }
                            return;
                        }
                    }
                }
                self.rewrite(&mut sel.operand, bound);
                // Selecting on a slot: fine on a map-like value, a type error on a scalar.
                if let Expr::Ident(name) = &sel.operand.expr {
                    if let Some(slot) = self.slots.of_ident(name) {
                        if let Some(k @ (Kind::Bool | Kind::Int | Kind::Double | Kind::String | Kind::StringList)) =
                            slot.kind()
                        {
                            let (path, field) = (slot.path(), sel.field.clone());
                            self.problem(
                                ErrorKind::TypeMismatch,
                                id,
                                format!("`{path}` is {}; it has no field `{field}`", k.with_article()),
                            );
                        }
                    }
                }
            }
            Expr::Ident(name) => {
                if bound.contains(name) || BUILTIN_IDENTS.contains(&name.as_str()) {
                    return;
                }
                match Group::from_name(name) {
                    Some(g) => self.use_slot(e, Slot::Group(g)),
                    None => {
                        let groups: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
                        let msg = format!("unknown variable `{name}`; the context has: {}", groups.join(", "));
                        self.problem(ErrorKind::UnknownVariable, id, msg);
                    }
                }
            }
            Expr::Call(call) => {
                if let Some(t) = call.target.as_deref_mut() {
                    self.rewrite(t, bound);
                }
                for a in &mut call.args {
                    self.rewrite(a, bound);
                }
            }
            Expr::Comprehension(c) => {
                self.rewrite(&mut c.iter_range, bound);
                self.rewrite(&mut c.accu_init, bound);
                let before = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                self.rewrite(&mut c.loop_cond, bound);
                self.rewrite(&mut c.loop_step, bound);
                self.rewrite(&mut c.result, bound);
                bound.truncate(before);
            }
            Expr::List(l) => {
                for x in &mut l.elements {
                    self.rewrite(x, bound);
                }
            }
            Expr::Map(m) => {
                for entry in &mut m.entries {
                    if let EntryExpr::MapEntry(me) = &mut entry.expr {
                        self.rewrite(&mut me.key, bound);
                        self.rewrite(&mut me.value, bound);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &mut s.entries {
                    if let EntryExpr::StructField(f) = &mut entry.expr {
                        self.rewrite(&mut f.value, bound);
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// The static type of an expression, when it is evident.
    fn kind_of(&self, e: &IdedExpr) -> Option<Kind> {
        match &e.expr {
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => Some(Kind::Bool),
                LiteralValue::Int(_) | LiteralValue::UInt(_) => Some(Kind::Int),
                LiteralValue::Double(_) => Some(Kind::Double),
                LiteralValue::String(_) => Some(Kind::String),
                LiteralValue::Null => Some(Kind::Null),
                LiteralValue::Bytes(_) => None,
            },
            Expr::Ident(name) => self.slots.of_ident(name).and_then(Slot::kind),
            Expr::Call(c) => match c.func_name.as_str() {
                ops::EQUALS
                | ops::NOT_EQUALS
                | ops::LESS
                | ops::LESS_EQUALS
                | ops::GREATER
                | ops::GREATER_EQUALS
                | ops::LOGICAL_AND
                | ops::LOGICAL_OR
                | ops::LOGICAL_NOT
                | ops::IN
                | "startsWith"
                | "endsWith"
                | "contains"
                | "matches" => Some(Kind::Bool),
                "size" => Some(Kind::Int),
                _ => None,
            },
            Expr::Map(_) => Some(Kind::Map),
            _ => None,
        }
    }

    /// How to name an operand in a message: the field path, the literal as written, or "the
    /// expression".
    fn describe(&self, e: &IdedExpr) -> String {
        if let Expr::Ident(name) = &e.expr {
            if let Some(slot) = self.slots.of_ident(name) {
                return format!("`{}`", slot.path());
            }
        }
        if let Expr::Literal(l) = &e.expr {
            let text = match l {
                LiteralValue::Boolean(b) => b.inner().to_string(),
                LiteralValue::Int(i) => i.inner().to_string(),
                LiteralValue::UInt(u) => format!("{}u", u.inner()),
                LiteralValue::Double(d) => format!("{:?}", d.inner()),
                LiteralValue::String(s) => format!("'{}'", s.inner()),
                LiteralValue::Null => "null".to_owned(),
                LiteralValue::Bytes(_) => "bytes".to_owned(),
            };
            return format!("`{text}`");
        }
        "the expression".to_owned()
    }

    fn check(&mut self, e: &IdedExpr) {
        match &e.expr {
            Expr::Call(c) => {
                if let Some(t) = c.target.as_deref() {
                    self.check(t);
                }
                for a in &c.args {
                    self.check(a);
                }
                self.check_call(e.id, &c.func_name, &c.args);
            }
            Expr::Select(s) => self.check(&s.operand),
            Expr::Comprehension(c) => {
                for x in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.check(x);
                }
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.check(x)),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.check(&me.key);
                        self.check(&me.value);
                    }
                }
            }
            _ => {}
        }
    }

    fn check_call(&mut self, id: u64, func: &str, args: &[IdedExpr]) {
        let kinds: Vec<Option<Kind>> = args.iter().map(|a| self.kind_of(a)).collect();
        match (func, kinds.as_slice()) {
            (ops::EQUALS | ops::NOT_EQUALS, [Some(a), Some(b)]) => {
                let ok = a == b || (a.is_number() && b.is_number()) || *a == Kind::Null || *b == Kind::Null;
                if !ok {
                    self.mismatch(id, "compares", &args[0], *a, &args[1], *b);
                }
            }
            (ops::LESS | ops::LESS_EQUALS | ops::GREATER | ops::GREATER_EQUALS, [Some(a), Some(b)]) => {
                let ok = (a.is_number() && b.is_number()) || (a == b && matches!(a, Kind::String | Kind::Bool));
                if !ok {
                    self.mismatch(id, "orders", &args[0], *a, &args[1], *b);
                }
            }
            (ops::LOGICAL_AND | ops::LOGICAL_OR | ops::LOGICAL_NOT, _) => {
                for (arg, k) in args.iter().zip(&kinds) {
                    if let Some(k) = k.filter(|k| *k != Kind::Bool) {
                        let what = self.describe(arg);
                        let op = match func {
                            ops::LOGICAL_AND => "&&",
                            ops::LOGICAL_OR => "||",
                            _ => "!",
                        };
                        self.problem(
                            ErrorKind::TypeMismatch,
                            arg.id,
                            format!("`{op}` needs a bool, but {what} is {}", k.with_article()),
                        );
                    }
                }
            }
            (ops::CONDITIONAL, [Some(k), ..]) if *k != Kind::Bool => {
                let what = self.describe(&args[0]);
                self.problem(
                    ErrorKind::TypeMismatch,
                    args[0].id,
                    format!("`?:` needs a bool, but {what} is {}", k.with_article()),
                );
            }
            (ops::IN, [lhs, rhs]) => {
                let elem = match (&args[1].expr, rhs) {
                    (_, Some(Kind::StringList)) => Some(Kind::String),
                    (Expr::List(l), _) => {
                        let ks: Vec<Option<Kind>> = l.elements.iter().map(|x| self.kind_of(x)).collect();
                        match ks.first() {
                            Some(Some(first)) if ks.iter().all(|k| *k == Some(*first)) => Some(*first),
                            _ => None,
                        }
                    }
                    (_, Some(k @ (Kind::Bool | Kind::Int | Kind::Double | Kind::String))) => {
                        let what = self.describe(&args[1]);
                        self.problem(
                            ErrorKind::TypeMismatch,
                            id,
                            format!("`in` needs a list or map, but {what} is {}", k.with_article()),
                        );
                        None
                    }
                    _ => None,
                };
                if let (Some(l), Some(el)) = (lhs, elem) {
                    if !(*l == el || (l.is_number() && el.is_number())) {
                        let what = self.describe(&args[0]);
                        self.problem(
                            ErrorKind::TypeMismatch,
                            id,
                            format!("{what} is {}, but the list holds {}s", l.with_article(), el.name()),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn mismatch(&mut self, id: u64, verb: &str, a: &IdedExpr, ka: Kind, b: &IdedExpr, kb: Kind) {
        let (da, db) = (self.describe(a), self.describe(b));
        self.problem(ErrorKind::TypeMismatch, id, format!("{verb} {da} ({}) with {db} ({})", ka.name(), kb.name()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_to_positions() {
        assert_eq!(offset_pos("abc", 0), Pos { line: 1, column: 1 });
        assert_eq!(offset_pos("a\nbc", 3), Pos { line: 2, column: 2 });
    }
}
