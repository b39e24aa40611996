//! A minimal JSON writer for [`Report::to_json`](crate::report::Report::to_json): the report is
//! numbers, strings and lists of them, which does not need a serialisation framework in the
//! recording library's dependencies.

use std::fmt::Write as _;

/// A JSON value; objects keep their keys in the order given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    U64(u64),
    /// Printed with the shortest representation that reads back the same; not finite: `null`.
    F64(f64),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(&'static str, Value)>),
}

impl Value {
    /// `Some(v)` as `f(v)`, `None` as `null`.
    pub(crate) fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }

    /// Pretty-printed, two spaces per level (the layout of `serde_json::to_string_pretty`).
    pub(crate) fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::U64(n) => {
                let _ = write!(out, "{n}");
            }
            Value::F64(x) if x.is_finite() => {
                let start = out.len();
                let _ = write!(out, "{x}");
                if !out[start..].contains(['.', 'e', 'E']) {
                    out.push_str(".0");
                }
            }
            Value::F64(_) => out.push_str("null"),
            Value::Str(s) => string(out, s),
            Value::Arr(items) if items.is_empty() => out.push_str("[]"),
            Value::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    indent(out, depth + 1);
                    v.write(out, depth + 1);
                }
                out.push('\n');
                indent(out, depth);
                out.push(']');
            }
            Value::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Value::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    indent(out, depth + 1);
                    string(out, k);
                    out.push_str(": ");
                    v.write(out, depth + 1);
                }
                out.push('\n');
                indent(out, depth);
                out.push('}');
            }
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// `s` as a JSON string: quotes, backslashes and control characters escaped.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::Value::*;

    #[test]
    fn layout_and_escapes() {
        let v = Obj(vec![
            ("n", U64(u64::MAX)),
            ("f", F64(0.25)),
            ("whole", F64(1.0)),
            ("nan", F64(f64::NAN)),
            ("s", Str("a\"b\\c\nd\u{1}é".into())),
            ("none", Null),
            ("yes", Bool(true)),
            ("empty", Arr(vec![])),
            ("list", Arr(vec![U64(1), Obj(vec![])])),
        ]);
        assert_eq!(
            v.pretty(),
            "{\n  \"n\": 18446744073709551615,\n  \"f\": 0.25,\n  \"whole\": 1.0,\n  \"nan\": null,\n  \
             \"s\": \"a\\\"b\\\\c\\nd\\u0001é\",\n  \"none\": null,\n  \"yes\": true,\n  \"empty\": [],\n  \
             \"list\": [\n    1,\n    {}\n  ]\n}"
        );
    }
}
