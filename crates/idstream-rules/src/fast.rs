//! A direct evaluator for the common shape of rule conditions, with the CEL interpreter as the
//! fallback for everything else.
//!
//! Most KYC conditions are field reads, literals, comparisons, `in` a list, `has()`, `!`, `&&`
//! and `||`. The `cel` interpreter handles them generically (boxed values, overload lookup by
//! name on every call), which costs a few hundred nanoseconds per rule; the budget is
//! about 3 µs for a whole ruleset. So at load each condition is also compiled, when it fits this
//! subset, into a small tree evaluated here over values borrowed straight from the context.
//!
//! It must never disagree with CEL. Semantics follow the CEL spec as `cel` implements it:
//! heterogeneous numeric comparison, `==` across types is `false`, ordering across types is an
//! error, `&&`/`||` absorb an error when the other side decides the result. Anything outside
//! the subset (other functions, macros, maps, a subject attribute holding a list or map, NaN
//! ordering) is handed to the interpreter — at load for the rule, or at run time for one
//! evaluation ([`Error::Fallback`]). A differential test runs both on many contexts.

use std::borrow::Cow;
use std::cmp::Ordering;

use cel::common::ast::{operators as ops, Expr, IdedExpr, LiteralValue};
use serde_json::Value as Json;

/// A condition in the fast subset.
#[derive(Debug)]
pub(crate) enum Node {
    Slot(usize),
    Lit(Lit),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
    List(Vec<Node>),
    LowerAscii(Box<Node>),
    UpperAscii(Box<Node>),
}

#[derive(Debug)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn op(self) -> &'static str {
        match self {
            Cmp::Eq => ops::EQUALS,
            Cmp::Ne => ops::NOT_EQUALS,
            Cmp::Lt => ops::LESS,
            Cmp::Le => ops::LESS_EQUALS,
            Cmp::Gt => ops::GREATER,
            Cmp::Ge => ops::GREATER_EQUALS,
        }
    }
}

/// A value during fast evaluation; strings and lists borrow from the context or the rule.
#[derive(Debug, Clone)]
pub(crate) enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'a, str>),
    Strs(&'a [String]),
    Vals(Vec<V<'a>>),
}

impl V<'_> {
    /// CEL's type name, for messages that read like the interpreter's.
    pub fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null_type",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::UInt(_) => "uint",
            V::Double(_) => "double",
            V::Str(_) => "string",
            V::Strs(_) | V::Vals(_) => "list",
        }
    }

    fn num(&self) -> Option<Num> {
        match *self {
            V::Int(i) => Some(Num::I(i)),
            V::UInt(u) => Some(Num::U(u)),
            V::Double(d) => Some(Num::D(d)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Num {
    I(i64),
    U(u64),
    D(f64),
}

/// Numeric comparison across int, uint and double, exact for integers.
fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::U(x), Num::U(y)) => Some(x.cmp(&y)),
        (Num::I(x), Num::U(y)) => Some(if x < 0 { Ordering::Less } else { (x as u64).cmp(&y) }),
        (Num::U(_), Num::I(_)) => num_cmp(b, a).map(Ordering::reverse),
        (Num::D(x), Num::D(y)) => x.partial_cmp(&y),
        (Num::D(x), Num::I(y)) => x.partial_cmp(&(y as f64)),
        (Num::D(x), Num::U(y)) => x.partial_cmp(&(y as f64)),
        (Num::I(_) | Num::U(_), Num::D(_)) => num_cmp(b, a).map(Ordering::reverse),
    }
}

/// Why a fast evaluation did not produce a value.
#[derive(Debug)]
pub(crate) enum Error {
    /// A CEL evaluation error (the rule errs).
    Eval(String),
    /// Outside the subset at run time: evaluate this rule with the interpreter instead.
    Fallback,
}

fn no_overload(op: &str, args: &[&V<'_>]) -> Error {
    let types: Vec<&str> = args.iter().map(|v| v.type_name()).collect();
    Error::Eval(format!("found no matching overload for '{op}' applied to '({})'", types.join(", ")))
}

/// Compiles a rewritten condition into the fast subset, or `None` if it uses anything else.
pub(crate) fn compile(e: &IdedExpr, is_group_slot: &dyn Fn(usize) -> bool) -> Option<Node> {
    let bin = |args: &[IdedExpr]| -> Option<(Box<Node>, Box<Node>)> {
        match args {
            [a, b] => Some((Box::new(compile(a, is_group_slot)?), Box::new(compile(b, is_group_slot)?))),
            _ => None,
        }
    };
    Some(match &e.expr {
        Expr::Ident(name) => {
            let i: usize = name.strip_prefix('$')?.parse().ok()?;
            if is_group_slot(i) {
                return None;
            }
            Node::Slot(i)
        }
        Expr::Literal(l) => Node::Lit(match l {
            LiteralValue::Null => Lit::Null,
            LiteralValue::Boolean(b) => Lit::Bool(*b.inner()),
            LiteralValue::Int(i) => Lit::Int(*i.inner()),
            LiteralValue::UInt(u) => Lit::UInt(*u.inner()),
            LiteralValue::Double(d) => Lit::Double(*d.inner()),
            LiteralValue::String(s) => Lit::Str(s.inner().to_owned()),
            LiteralValue::Bytes(_) => return None,
        }),
        Expr::List(l) if l.optional_indices.is_empty() => {
            Node::List(l.elements.iter().map(|x| compile(x, is_group_slot)).collect::<Option<_>>()?)
        }
        Expr::Call(c) => match (c.target.as_deref(), c.func_name.as_str(), c.args.as_slice()) {
            (None, ops::LOGICAL_NOT, [a]) => Node::Not(Box::new(compile(a, is_group_slot)?)),
            (None, ops::LOGICAL_AND, args) => bin(args).map(|(a, b)| Node::And(a, b))?,
            (None, ops::LOGICAL_OR, args) => bin(args).map(|(a, b)| Node::Or(a, b))?,
            (None, ops::IN, args) => bin(args).map(|(a, b)| Node::In(a, b))?,
            (None, op, args) => {
                let cmp = match op {
                    ops::EQUALS => Cmp::Eq,
                    ops::NOT_EQUALS => Cmp::Ne,
                    ops::LESS => Cmp::Lt,
                    ops::LESS_EQUALS => Cmp::Le,
                    ops::GREATER => Cmp::Gt,
                    ops::GREATER_EQUALS => Cmp::Ge,
                    _ => return None,
                };
                bin(args).map(|(a, b)| Node::Cmp(cmp, a, b))?
            }
            (Some(t), "lowerAscii", []) => Node::LowerAscii(Box::new(compile(t, is_group_slot)?)),
            (Some(t), "upperAscii", []) => Node::UpperAscii(Box::new(compile(t, is_group_slot)?)),
            _ => return None,
        },
        _ => return None,
    })
}

/// Where slot values come from.
pub(crate) trait Slots<'a> {
    fn value(&self, slot: usize) -> Result<V<'a>, Error>;
}

/// A subject attribute as a fast value; a list or map is beyond the subset.
pub(crate) fn json_value(v: &Json) -> Result<V<'_>, Error> {
    Ok(match v {
        Json::Null => V::Null,
        Json::Bool(b) => V::Bool(*b),
        Json::String(s) => V::Str(Cow::Borrowed(s)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                V::Int(i)
            } else if let Some(u) = n.as_u64() {
                V::UInt(u)
            } else {
                V::Double(n.as_f64().ok_or(Error::Fallback)?)
            }
        }
        Json::Array(_) | Json::Object(_) => return Err(Error::Fallback),
    })
}

fn bool_of(r: &Result<V<'_>, Error>) -> Option<bool> {
    match r {
        Ok(V::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// `&&` / `||` with CEL's error absorption: `absorbing` on either side decides the result.
fn logical<'a>(
    op: &str,
    absorbing: bool,
    left: Result<V<'a>, Error>,
    right: impl FnOnce() -> Result<V<'a>, Error>,
) -> Result<V<'a>, Error> {
    if bool_of(&left) == Some(absorbing) {
        return Ok(V::Bool(absorbing));
    }
    let right = right();
    if bool_of(&right) == Some(absorbing) {
        return Ok(V::Bool(absorbing));
    }
    match (left, right) {
        (Ok(V::Bool(_)), Ok(V::Bool(_))) => Ok(V::Bool(!absorbing)),
        (Err(Error::Fallback), _) | (_, Err(Error::Fallback)) => Err(Error::Fallback),
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(l), Ok(r)) => Err(no_overload(op, &[&l, &r])),
    }
}

/// CEL equality: numbers across types, same-typed scalars, everything else unequal. Lists are
/// left to the interpreter.
fn equal(a: &V<'_>, b: &V<'_>) -> Result<bool, Error> {
    if let (Some(x), Some(y)) = (a.num(), b.num()) {
        return Ok(num_cmp(x, y) == Some(Ordering::Equal));
    }
    Ok(match (a, b) {
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        (V::Strs(_) | V::Vals(_), _) | (_, V::Strs(_) | V::Vals(_)) => return Err(Error::Fallback),
        _ => false,
    })
}

pub(crate) fn eval<'a>(n: &'a Node, slots: &dyn Slots<'a>) -> Result<V<'a>, Error> {
    match n {
        Node::Slot(i) => slots.value(*i),
        Node::Lit(l) => Ok(match l {
            Lit::Null => V::Null,
            Lit::Bool(b) => V::Bool(*b),
            Lit::Int(i) => V::Int(*i),
            Lit::UInt(u) => V::UInt(*u),
            Lit::Double(d) => V::Double(*d),
            Lit::Str(s) => V::Str(Cow::Borrowed(s)),
        }),
        Node::Not(a) => match eval(a, slots)? {
            V::Bool(b) => Ok(V::Bool(!b)),
            v => Err(no_overload(ops::LOGICAL_NOT, &[&v])),
        },
        Node::And(a, b) => logical(ops::LOGICAL_AND, false, eval(a, slots), || eval(b, slots)),
        Node::Or(a, b) => logical(ops::LOGICAL_OR, true, eval(a, slots), || eval(b, slots)),
        Node::Cmp(op, a, b) => {
            let (a, b) = (eval(a, slots)?, eval(b, slots)?);
            let ord = match op {
                Cmp::Eq => return equal(&a, &b).map(V::Bool),
                Cmp::Ne => return equal(&a, &b).map(|e| V::Bool(!e)),
                _ => match (&a, &b) {
                    (V::Str(x), V::Str(y)) => x.cmp(y),
                    (V::Bool(x), V::Bool(y)) => x.cmp(y),
                    _ => match (a.num(), b.num()) {
                        // NaN orders in a way only the interpreter should define.
                        (Some(x), Some(y)) => num_cmp(x, y).ok_or(Error::Fallback)?,
                        _ => return Err(no_overload(op.op(), &[&a, &b])),
                    },
                },
            };
            Ok(V::Bool(match op {
                Cmp::Lt => ord == Ordering::Less,
                Cmp::Le => ord != Ordering::Greater,
                Cmp::Gt => ord == Ordering::Greater,
                Cmp::Ge => ord != Ordering::Less,
                Cmp::Eq | Cmp::Ne => unreachable!("handled above"),
            }))
        }
        Node::In(a, b) => {
            let needle = eval(a, slots)?;
            if matches!(needle, V::Strs(_) | V::Vals(_)) {
                return Err(Error::Fallback);
            }
            match eval(b, slots)? {
                V::Strs(items) => Ok(V::Bool(match &needle {
                    V::Str(s) => items.iter().any(|i| i == s),
                    _ => false,
                })),
                V::Vals(items) => {
                    for item in &items {
                        if equal(&needle, item)? {
                            return Ok(V::Bool(true));
                        }
                    }
                    Ok(V::Bool(false))
                }
                hay => Err(no_overload(ops::IN, &[&needle, &hay])),
            }
        }
        Node::List(items) => Ok(V::Vals(items.iter().map(|x| eval(x, slots)).collect::<Result<_, _>>()?)),
        Node::LowerAscii(a) | Node::UpperAscii(a) => match eval(a, slots)? {
            V::Str(s) => Ok(V::Str(Cow::Owned(if matches!(n, Node::LowerAscii(_)) {
                s.to_ascii_lowercase()
            } else {
                s.to_ascii_uppercase()
            }))),
            // The interpreter words an unsupported receiver its own way.
            _ => Err(Error::Fallback),
        },
    }
}
