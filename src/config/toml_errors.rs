//! Every problem the schema finds in a TOML file, in one pass — not only the first.
//!
//! serde stops at the first error (an unknown key under `deny_unknown_fields`, a wrong type, a
//! missing member). To report them all, the file is deserialized again and again: each error's
//! span is mapped to the key it points at (through `toml_edit`'s spans), that key is recorded
//! with its line in the original text and removed from the document, and the rest is tried
//! again — until the rest deserializes (the value returned is then what the file says with the
//! offending keys at their defaults) or an error carries no usable span. A syntax error stops
//! at once: the parser cannot say where the next key would start.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml_edit::{ImDocument, Item, Value};

/// One problem, at a dotted key (`server.threadz`, `listen.https[0].address`; empty when the
/// error names no key) with its 1-based line in the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// At most this many problems are collected (each costs one parse).
const MAX_PROBLEMS: usize = 100;

/// Deserialize `text` as `T`, collecting every schema problem. `Some(value)` unless the text is
/// not TOML or a problem could not be located; problems empty = the plain `toml::from_str`.
pub fn deserialize_all<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<SchemaProblem>) {
    let first = match toml::from_str::<T>(text) {
        Ok(v) => return (Some(v), Vec::new()),
        Err(e) => e,
    };
    let original = match ImDocument::parse(text.to_string()) {
        Ok(d) => d,
        Err(_) => {
            // Not TOML: toml's own message (with the line and a caret) is the best there is.
            return (
                None,
                vec![SchemaProblem {
                    key: String::new(),
                    line: None,
                    message: first.to_string().trim_end().replace('\n', "\n    "),
                }],
            );
        }
    };
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(_) => return (None, vec![unlocated(&first, text)]),
    };
    let mut problems = Vec::new();
    let mut current = text.to_string();
    let mut error = first;
    loop {
        let path = match ImDocument::parse(current.clone()) {
            Ok(doc) => error.span().and_then(|s| path_at(doc.as_table(), &s)),
            Err(_) => None,
        };
        let Some(path) = path.filter(|p| !p.is_empty()) else {
            problems.push(if current == text { unlocated(&error, text) } else { unlocated_message(&error) });
            return (None, problems);
        };
        if !remove(&mut table, &path) {
            problems.push(unlocated_message(&error));
            return (None, problems);
        }
        let line = span_of(original.as_table(), &path).map(|r| line_of(text, r.start));
        problems.push(SchemaProblem { key: dotted(&path), line, message: with_suggestion(error.message()) });
        if problems.len() >= MAX_PROBLEMS {
            return (None, problems);
        }
        current = match toml::to_string(&table) {
            Ok(s) => s,
            Err(_) => return (None, problems),
        };
        match toml::from_str::<T>(&current) {
            Ok(v) => {
                problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
                return (Some(v), problems);
            }
            Err(e) => error = e,
        }
    }
}

/// The 1-based line where a dotted key (`upstream.origins[0]`, `listen.https[1].cert`) is
/// written in `text`; `None` when it is not written there (a default) or the text is not TOML.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = ImDocument::parse(text.to_string()).ok()?;
    let mut path = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() || name.starts_with('"') {
            return None;
        }
        path.push(Seg::Key(name.to_string()));
        while let Some(r) = rest.strip_prefix('[') {
            let (n, after) = r.split_once(']')?;
            path.push(Seg::Index(n.parse().ok()?));
            rest = after;
        }
    }
    span_of(doc.as_table(), &path).map(|r| line_of(text, r.start))
}

fn unlocated(e: &toml::de::Error, text: &str) -> SchemaProblem {
    SchemaProblem {
        key: String::new(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: with_suggestion(e.message()),
    }
}

fn unlocated_message(e: &toml::de::Error) -> SchemaProblem {
    SchemaProblem { key: String::new(), line: None, message: with_suggestion(e.message()) }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn dotted(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                let bare = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    s.push_str(k);
                } else {
                    s.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn within(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The deepest key whose key or value span holds `span`.
fn path_at(t: &toml_edit::Table, span: &Range<usize>) -> Option<Vec<Seg>> {
    let mut out = Vec::new();
    in_table(t, span, &mut out).then_some(out)
}

fn in_table(t: &toml_edit::Table, span: &Range<usize>, out: &mut Vec<Seg>) -> bool {
    for (k, item) in t.iter() {
        out.push(Seg::Key(k.to_string()));
        if in_item(item, span, out) {
            return true;
        }
        let key_hit = t.key(k).and_then(|k| k.span()).is_some_and(|r| within(&r, span));
        if key_hit || item.span().is_some_and(|r| within(&r, span)) {
            return true;
        }
        out.pop();
    }
    false
}

fn in_item(item: &Item, span: &Range<usize>, out: &mut Vec<Seg>) -> bool {
    match item {
        Item::Table(t) => in_table(t, span, out),
        Item::Value(v) => in_value(v, span, out),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                out.push(Seg::Index(i));
                if in_table(t, span, out) || t.span().is_some_and(|r| within(&r, span)) {
                    return true;
                }
                out.pop();
            }
            false
        }
        Item::None => false,
    }
}

fn in_value(v: &Value, span: &Range<usize>, out: &mut Vec<Seg>) -> bool {
    match v {
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                out.push(Seg::Index(i));
                if in_value(v, span, out) || v.span().is_some_and(|r| within(&r, span)) {
                    return true;
                }
                out.pop();
            }
            false
        }
        Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                out.push(Seg::Key(k.to_string()));
                if in_value(v, span, out) {
                    return true;
                }
                let key_hit = t.key(k).and_then(|k| k.span()).is_some_and(|r| within(&r, span));
                if key_hit || v.span().is_some_and(|r| within(&r, span)) {
                    return true;
                }
                out.pop();
            }
            false
        }
        _ => false,
    }
}

/// Where `path` is written in the original document (the key when it has a span, else the value).
fn span_of(t: &toml_edit::Table, path: &[Seg]) -> Option<Range<usize>> {
    let (Seg::Key(first), rest) = path.split_first()? else { return None };
    let (key, item) = t.get_key_value(first)?;
    if rest.is_empty() {
        return key.span().or_else(|| item.span());
    }
    match item {
        Item::Table(t) => span_of(t, rest),
        Item::ArrayOfTables(a) => {
            let (Seg::Index(i), rest) = rest.split_first()? else { return None };
            let t = a.get(*i)?;
            if rest.is_empty() {
                t.span()
            } else {
                span_of(t, rest)
            }
        }
        Item::Value(v) => span_of_value(v, rest),
        Item::None => None,
    }
}

fn span_of_value(v: &Value, path: &[Seg]) -> Option<Range<usize>> {
    let Some((seg, rest)) = path.split_first() else { return v.span() };
    match (v, seg) {
        (Value::Array(a), Seg::Index(i)) => span_of_value(a.get(*i)?, rest),
        (Value::InlineTable(t), Seg::Key(k)) => {
            let (key, item) = t.get_key_value(k)?;
            if rest.is_empty() {
                key.span().or_else(|| item.span())
            } else {
                span_of_value(item.as_value()?, rest)
            }
        }
        _ => None,
    }
}

/// Remove the key or element at `path`; false when it is not there.
fn remove(t: &mut toml::Table, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut node: Option<&mut toml::Value> = None;
    for seg in parents {
        node = match (node, seg) {
            (None, Seg::Key(k)) => t.get_mut(k),
            (Some(toml::Value::Table(t)), Seg::Key(k)) => t.get_mut(k),
            (Some(toml::Value::Array(a)), Seg::Index(i)) => a.get_mut(*i),
            _ => None,
        };
        if node.is_none() {
            return false;
        }
    }
    match (node, last) {
        (None, Seg::Key(k)) => t.remove(k).is_some(),
        (Some(toml::Value::Table(t)), Seg::Key(k)) => t.remove(k).is_some(),
        (Some(toml::Value::Array(a)), Seg::Index(i)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// serde's "unknown field `threadz`, expected one of `threads`, ..." gains "did you mean
/// `threads`?" when one expected name is close.
fn with_suggestion(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((unknown, expected)) = rest.split_once('`') else { return message.to_string() };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if candidates.len() < 2 {
        return message.to_string();
    }
    let best = candidates.iter().map(|c| (distance(unknown, c), *c)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!("{message} — did you mean `{c}`?"),
        None => message.to_string(),
    }
}

/// Levenshtein distance (names are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct F {
        server: S,
        listen: L,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct S {
        threads: usize,
        pid_file: String,
    }
    impl Default for S {
        fn default() -> Self {
            S { threads: 2, pid_file: "/tmp/p".into() }
        }
    }
    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct L {
        http: Vec<String>,
        https: Vec<H>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct H {
        #[allow(dead_code)]
        address: String,
    }

    #[test]
    fn every_typo_and_type_error_is_reported_with_its_line() {
        let text = "[server]\nthreadz = 3\npid_file = 7\n\n[listen]\nhttp = [\"a\"]\nhtps = []\n\n[[listen.https]]\naddress = \"x\"\ncert = \"c\"\n\n[servr]\n";
        let (v, problems) = deserialize_all::<F>(text);
        let got: Vec<(String, Option<usize>)> = problems.iter().map(|p| (p.key.clone(), p.line)).collect();
        for want in [
            ("server.threadz", 2),
            ("server.pid_file", 3),
            ("listen.htps", 7),
            ("listen.https[0].cert", 11),
            ("servr", 13),
        ] {
            assert!(got.contains(&(want.0.to_string(), Some(want.1))), "missing {want:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let typo = problems.iter().find(|p| p.key == "server.threadz").unwrap();
        assert!(typo.message.contains("did you mean `threads`?"), "{}", typo.message);
        let v = v.expect("the rest deserializes");
        assert_eq!(v.server.threads, 2);
        assert_eq!(v.listen.http, ["a"]);
    }

    #[test]
    fn a_clean_file_has_no_problems_and_a_syntax_error_is_one() {
        let (v, p) = deserialize_all::<F>("[server]\nthreads = 4\n");
        assert_eq!(v.unwrap().server.threads, 4);
        assert!(p.is_empty());
        let (v, p) = deserialize_all::<F>("[server\nthreads = 4\n");
        assert!(v.is_none());
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("line 1"), "{p:?}");
    }

    #[test]
    fn inline_tables_and_arrays_are_located() {
        let text = "[listen]\nhttps = [{ address = \"a\" }, { adress = \"b\" }]\n";
        let (_, p) = deserialize_all::<F>(text);
        // The misspelt key, then the member it should have been, both at the element's line.
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].key.as_str(), p[0].line), ("listen.https[1].adress", Some(2)));
        assert_eq!((p[1].key.as_str(), p[1].line), ("listen.https[1]", Some(2)));
        assert!(p[1].message.contains("missing field `address`"), "{p:?}");
    }

    #[test]
    fn keys_are_found_at_their_lines() {
        let text = "[upstream]\norigins = [\n  \"a\",\n  \"b\",\n]\n[[listen.https]]\naddress = \"x\"\n";
        assert_eq!(line_of_key(text, "upstream.origins[1]"), Some(4));
        assert_eq!(line_of_key(text, "listen.https[0].address"), Some(7));
        assert_eq!(line_of_key(text, "upstream.sni"), None);
    }

    #[test]
    fn suggestions_only_when_close() {
        assert!(
            with_suggestion("unknown field `threadz`, expected one of `threads`, `pid_file`").ends_with("`threads`?")
        );
        assert!(!with_suggestion("unknown field `zzzzzz`, expected `threads` or `pid_file`").contains("did you mean"));
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
