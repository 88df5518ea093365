//! Canonical JSON exactly as Didit's `X-Signature-V2` signs it.
//!
//! The signed bytes are Python's
//! `json.dumps(shorten_floats(json.loads(body)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
//! We do not round-trip through `serde_json::Value` because Python's model differs from it in
//! ways that change bytes: integers are unbounded (no `u64` limit), a float is printed with
//! Python's `repr` (shortest round trip, exponent form outside `1e-4 <= |x| < 1e16`), and
//! `shorten_floats` turns a float with no fractional part into the exact integer it denotes
//! (`1e23` becomes `99999999999999991611392`). So this module parses the body itself and writes
//! the canonical form in one pass.
//!
//! Pure: bytes in, bytes out. Never logs the input (it carries personal data).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Why a body has no canonical form (it is not the JSON Python's `json.loads` would accept as a
/// document we can sign, e.g. malformed, or containing a lone UTF-16 surrogate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed JSON at byte {offset}: {message}")]
pub struct CanonicalError {
    pub offset: usize,
    pub message: &'static str,
}

/// Maximum nesting depth accepted; deeper documents are refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

/// Returns the canonical JSON of `body` (see the module docs).
pub fn canonical_json(body: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| CanonicalError { offset: e.valid_up_to(), message: "body is not valid UTF-8" })?;
    let mut p = Parser { s: text.as_bytes(), src: text, pos: 0 };
    // Python's json.loads tolerates a UTF-8 byte-order mark only when decoding bytes; Didit
    // never sends one, and treating it as whitespace would accept bodies the sender never signed.
    let mut out = String::with_capacity(body.len());
    p.skip_ws();
    p.value(&mut out, 0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err("trailing characters after the JSON document"));
    }
    Ok(out.into_bytes())
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, message: &'static str) -> CanonicalError {
        CanonicalError { offset: self.pos, message }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, out: &mut String, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting deeper than 128 levels"));
        }
        match self.s.get(self.pos) {
            Some(b'{') => self.object(out, depth),
            Some(b'[') => self.array(out, depth),
            Some(b'"') => {
                let s = self.string()?;
                write_json_string(out, &s, false);
                Ok(())
            }
            Some(b't') => self.literal(out, "true"),
            Some(b'f') => self.literal(out, "false"),
            Some(b'n') => self.literal(out, "null"),
            Some(b'-' | b'0'..=b'9') => self.number(out),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn literal(&mut self, out: &mut String, word: &'static str) -> Result<(), CanonicalError> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            out.push_str(word);
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn object(&mut self, out: &mut String, depth: usize) -> Result<(), CanonicalError> {
        self.pos += 1; // '{'
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            out.push_str("{}");
            return Ok(());
        }
        // Each member's value is rendered into one buffer of this object (its range kept with
        // its key), then written out in key order: one allocation per object, not per member.
        let mut members: Vec<(Cow<'_, str>, std::ops::Range<usize>)> = Vec::new();
        let mut values = String::new();
        loop {
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b':') {
                return Err(self.err("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let start = values.len();
            self.value(&mut values, depth + 1)?;
            members.push((key, start..values.len()));
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
        // Python keeps the last value of a repeated key (dict assignment); a stable sort keeps
        // insertion order among equal keys, so we keep the last of each run. Rust's `str`
        // ordering is byte order of UTF-8, which equals Python's code-point order.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        out.reserve(values.len() + members.iter().map(|m| m.0.len() + 4).sum::<usize>() + 2);
        out.push('{');
        let mut first = true;
        for i in 0..members.len() {
            if i + 1 < members.len() && members[i].0 == members[i + 1].0 {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            write_json_string(out, &members[i].0, false);
            out.push(':');
            out.push_str(&values[members[i].1.clone()]);
        }
        out.push('}');
        Ok(())
    }

    fn array(&mut self, out: &mut String, depth: usize) -> Result<(), CanonicalError> {
        self.pos += 1; // '['
        out.push('[');
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b']') {
            self.pos += 1;
            out.push(']');
            return Ok(());
        }
        let mut first = true;
        loop {
            self.skip_ws();
            if !first {
                out.push(',');
            }
            first = false;
            self.value(out, depth + 1)?;
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    out.push(']');
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    /// Parses a JSON string starting at the opening quote and returns its decoded text
    /// (borrowed from the input when it has no escapes).
    fn string(&mut self) -> Result<Cow<'a, str>, CanonicalError> {
        self.pos += 1; // opening quote
        let begin = self.pos;
        let mut text = String::new();
        loop {
            let start = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            if start == begin && self.s.get(self.pos) == Some(&b'"') {
                // No escape anywhere: the text is the input itself.
                self.pos += 1;
                return Ok(Cow::Borrowed(&self.src[begin..self.pos - 1]));
            }
            text.push_str(&self.src[start..self.pos]);
            match self.s.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(text));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = *self.s.get(self.pos).ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => text.push('"'),
                        b'\\' => text.push('\\'),
                        b'/' => text.push('/'),
                        b'b' => text.push('\u{8}'),
                        b'f' => text.push('\u{c}'),
                        b'n' => text.push('\n'),
                        b'r' => text.push('\r'),
                        b't' => text.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(self.err("lone UTF-16 surrogate in \\u escape"));
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("lone UTF-16 surrogate in \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err("lone UTF-16 surrogate in \\u escape"));
                            } else {
                                hi
                            };
                            text.push(char::from_u32(c).ok_or_else(|| self.err("invalid \\u escape"))?);
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.err("invalid escape in string"));
                        }
                    }
                }
                Some(_) => return Err(self.err("unescaped control character in string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, CanonicalError> {
        let digits = self.s.get(self.pos..self.pos + 4).ok_or_else(|| self.err("truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or_else(|| self.err("invalid hex digit in \\u escape"))?;
            v = v * 16 + n;
        }
        self.pos += 4;
        Ok(v)
    }

    fn number(&mut self, out: &mut String) -> Result<(), CanonicalError> {
        let start = self.pos;
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.s.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        let mut is_float = false;
        if self.s.get(self.pos) == Some(&b'.') {
            is_float = true;
            self.pos += 1;
            if !matches!(self.s.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number: digits expected after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.s.get(self.pos) {
            is_float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.s.get(self.pos) {
                self.pos += 1;
            }
            if !matches!(self.s.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number: digits expected in exponent"));
            }
            self.digits();
        }
        let lexeme = &self.src[start..self.pos];
        if is_float {
            let f: f64 = lexeme.parse().map_err(|_| self.err("invalid number"))?;
            write_python_float(out, f);
        } else if lexeme == "-0" {
            // Python: int("-0") == 0.
            out.push('0');
        } else {
            out.push_str(lexeme);
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }
}

/// Writes a JSON string as Python's `json` encoder does. `ensure_ascii=False` (canonical
/// form): only `"`, `\` and control characters below U+0020 are escaped (`/` and U+007F are
/// not). `ensure_ascii=True` (how Didit's sender writes bodies): additionally everything
/// outside printable ASCII becomes `\uXXXX`, astral characters as a surrogate pair.
pub fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    // Most strings need no escaping at all: copy those in one go.
    let plain = |b: u8| b >= 0x20 && b != b'"' && b != b'\\' && !(ensure_ascii && b >= 0x7f);
    if s.bytes().all(plain) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `shorten_floats(f)` as Python would print it.
fn write_python_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        // Only reachable through literals like 1e999, which Python parses to inf and prints
        // as `Infinity`; mirror it so the signature still matches what the sender computed.
        out.push_str(if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    if f.fract() == 0.0 {
        // `int(f)`: the exact integer value, printed in full; -0.0 becomes 0.
        if f == 0.0 {
            out.push('0');
        } else {
            let _ = write!(out, "{f:.0}");
        }
        return;
    }
    out.push_str(&python_float_repr(f));
}

/// Python's `repr(float)`: the shortest digits that round trip (ties to even, as Python), in
/// positional form when the decimal exponent is in `-4..16` (integral values keep a `.0`), else
/// `d.ddde±XX`; `NaN`, `Infinity`, `-Infinity` as `json.dumps` writes them.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives Rust's shortest round-trip digits in scientific form, e.g. `9.615e1`.
    let shortest = format!("{:e}", f.abs());
    // Among the shortest strings that round trip, Python takes the one nearest the exact value,
    // ties to even. Rust's shortest formatter breaks an exact tie upwards instead (16 or 17
    // digits, e.g. 2119513591211832.25: Python `…832.2`, `{:e}` `…832.3`). So round the exact
    // value to the same number of digits (`{:.*e}` is correctly rounded, ties to even) and keep
    // that when it still round trips.
    let n = shortest.split_once('e').map_or(1, |(m, _)| m.bytes().filter(u8::is_ascii_digit).count());
    let nearest = format!("{:.*e}", n - 1, f.abs());
    let sci = if nearest.parse::<f64>() == Ok(f.abs()) { nearest } else { shortest };
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            format!("{sign}0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{sign}{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = canonical_json(input.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expect, "input: {input}");
    }

    #[test]
    fn table() {
        // Expectations written from Python 3.11; the full generated set lives in tests/.
        let cases = [
            (r#"{"b":1,"a":2}"#, r#"{"a":2,"b":1}"#),
            (r#" { "a" : [ 1 , 2 ] } "#, r#"{"a":[1,2]}"#),
            (r#"{"a":100.0}"#, r#"{"a":100}"#),
            (r#"{"a":96.15}"#, r#"{"a":96.15}"#),
            (r#"{"a":1e-5}"#, r#"{"a":1e-05}"#),
            (r#"{"a":1.5e16}"#, r#"{"a":15000000000000000}"#),
            (r#"{"a":1.25e16}"#, r#"{"a":12500000000000000}"#),
            (r#"{"a":1e23}"#, r#"{"a":99999999999999991611392}"#),
            (r#"{"a":0.0001}"#, r#"{"a":0.0001}"#),
            (r#"{"a":-0.0}"#, r#"{"a":0}"#),
            (r#"{"a":-0}"#, r#"{"a":0}"#),
            (r#"{"a":123456789012345678901234567890}"#, r#"{"a":123456789012345678901234567890}"#),
            (r#"{"a":"Jos\u00e9 \/ \u5317"}"#, "{\"a\":\"José / 北\"}"),
            (r#"{"a":"\u0001\u007f\b\f"}"#, "{\"a\":\"\\u0001\u{7f}\\b\\f\"}"),
            (r#"{"a":"\ud83d\ude00"}"#, "{\"a\":\"😀\"}"),
            (r#"{"10":1,"9":2,"a":{}}"#, r#"{"10":1,"9":2,"a":{}}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{"é":1,"z":2,"Z":3}"#, "{\"Z\":3,\"z\":2,\"é\":1}"),
        ];
        for (i, e) in cases {
            check(i, e);
        }
    }

    #[test]
    fn strings_with_and_without_escapes() {
        // Keys and values without escapes are borrowed from the body and written whole; with
        // escapes they are decoded first. Both must give Python's output, also for repeated
        // keys of either kind and for nested objects.
        check(r#"{"k\u0062":1,"kb":2,"ka":"x\ty"}"#, r#"{"ka":"x\ty","kb":2}"#);
        check(r#"{"o":{"z":"\"","a":[{"y":1,"x":"\/"}]}}"#, r#"{"o":{"a":[{"x":"/","y":1}],"z":"\""}}"#);
        // `ensure_ascii` (how Didit's sender writes bodies): the escaping path, never the
        // whole-string copy, for anything outside printable ASCII.
        let ascii = |s: &str| {
            let mut out = String::new();
            write_json_string(&mut out, s, true);
            out
        };
        assert_eq!(ascii("plain ~"), r#""plain ~""#);
        assert_eq!(ascii("caf\u{e9}\u{7f}"), r#""caf\u00e9\u007f""#);
        assert_eq!(ascii("\u{1F600}"), r#""\ud83d\ude00""#);
    }

    #[test]
    fn errors() {
        for bad in
            ["", "{", "{\"a\":}", "[1,]", "{\"a\":1,}", "01", "1.", "\"\\ud800\"", "\"\\x\"", "nul", "{} x", "\"a\nb\""]
        {
            assert!(canonical_json(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
    }
}
