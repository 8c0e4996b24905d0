//! The strict JSON reader: exactly one top-level object, no duplicate member names at any
//! depth, bounded nesting, valid UTF-8, nothing but whitespace after the object.
//!
//! `serde_json::Value` silently keeps the last of two duplicate members, so the document is
//! built by a visitor of our own driven by `serde_json::Deserializer::from_slice`.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::error::{display_name, ErrorCode, RegistrationError};

/// Parses `body` into its top-level object. Every failure is `invalid_client_metadata` with a
/// description starting with `body: `.
pub(crate) fn read_object(body: &[u8], max_depth: usize) -> Result<Map<String, Value>, RegistrationError> {
    let fail = |reason: String| RegistrationError::new(ErrorCode::InvalidClientMetadata, format!("body: {reason}"));
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return Err(fail(format!("not valid UTF-8 (at byte {})", e.valid_up_to()))),
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(fail("empty".to_string()));
    }
    let ctx = Ctx { max_depth, reason: RefCell::new(None) };
    // From the checked `str`: serde_json then need not validate UTF-8 again.
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = TopSeed { ctx: &ctx }.deserialize(&mut de);
    match parsed {
        Ok(map) => match de.end() {
            Ok(()) => Ok(map),
            Err(_) => Err(fail("trailing data after the JSON object".to_string())),
        },
        Err(e) => {
            if let Some(reason) = ctx.reason.borrow_mut().take() {
                return Err(fail(reason));
            }
            Err(fail(match e.classify() {
                serde_json::error::Category::Data => "the top-level JSON value must be an object".to_string(),
                serde_json::error::Category::Eof => "unexpected end of JSON input".to_string(),
                // serde_json's syntax messages name a position, never the input itself.
                _ => format!("malformed JSON ({e})"),
            }))
        }
    }
}

struct Ctx {
    max_depth: usize,
    /// Our own reason for aborting (serde's error type only carries a message string).
    reason: RefCell<Option<String>>,
}

impl Ctx {
    fn abort<E: serde::de::Error>(&self, reason: String) -> E {
        let err = E::custom(&reason);
        *self.reason.borrow_mut() = Some(reason);
        err
    }

    fn enter<E: serde::de::Error>(&self, depth: usize) -> Result<(), E> {
        if depth > self.max_depth {
            return Err(self.abort(format!("JSON nesting deeper than {} levels", self.max_depth)));
        }
        Ok(())
    }
}

struct TopSeed<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(TopVisitor { ctx: self.ctx })
    }
}

struct TopVisitor<'c> {
    ctx: &'c Ctx,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        read_map(self.ctx, 1, map)
    }
}

/// Member names refused at any depth: they address a JavaScript object's prototype.
pub(crate) const PROTOTYPE_NAMES: [&str; 3] = ["__proto__", "constructor", "prototype"];

fn read_map<'de, A: MapAccess<'de>>(ctx: &Ctx, depth: usize, mut map: A) -> Result<Map<String, Value>, A::Error> {
    ctx.enter::<A::Error>(depth)?;
    // The top-level object of a registration typically has 5 to 15 members.
    let mut out = if depth == 1 { Map::with_capacity(16) } else { Map::new() };
    while let Some(key) = map.next_key::<String>()? {
        if PROTOTYPE_NAMES.contains(&key.as_str()) {
            // A JavaScript IdP merging this object would change its prototype: `__proto__`
            // inside `jwks.keys[]` smuggled a private `d` past the top-level checks.
            return Err(ctx.abort(format!("member name \"{key}\" is not allowed")));
        }
        match out.entry(key) {
            Entry::Occupied(e) => return Err(ctx.abort(format!("duplicate member \"{}\"", display_name(e.key())))),
            Entry::Vacant(e) => {
                e.insert(map.next_value_seed(ValueSeed { ctx, depth: depth + 1 })?);
            }
        }
    }
    Ok(out)
}

/// serde_json's default float parser is fast but not always correctly rounded, so printing
/// a parsed float and parsing it again can give a neighbouring value, and the forwarded body
/// would change on each pass. Returns the nearby value that survives that round trip (found
/// in one step in practice), or `None` for a value that does not settle.
fn stable_f64(v: f64) -> Option<f64> {
    let mut cur = v;
    for _ in 0..8 {
        let printed = Number::from_f64(cur)?.to_string();
        let next: f64 = serde_json::from_str(&printed).ok()?;
        if next.to_bits() == cur.to_bits() {
            return Some(cur);
        }
        cur = next;
    }
    None
}

/// A value nested at `depth` (the top-level object is depth 1; only containers count).
struct ValueSeed<'c> {
    ctx: &'c Ctx,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        match stable_f64(v).and_then(Number::from_f64) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(self.ctx.abort(format!("a number cannot be forwarded exactly (at depth {})", self.depth))),
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.ctx.enter::<A::Error>(self.depth)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed { ctx: self.ctx, depth: self.depth + 1 })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        read_map(self.ctx, self.depth, map).map(Value::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str, depth: usize) -> String {
        match read_object(body.as_bytes(), depth) {
            Ok(m) => panic!("accepted {body:?}: {m:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
                e.description
            }
        }
    }

    #[test]
    fn accepts_objects_and_keeps_order() {
        let m = read_object(br#" {"b":1,"a":[true,null,{"x":"y"}],"c":-1.5} "#, 16).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "a", "c"]);
        assert_eq!(m["a"][2]["x"], "y");
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, usize, &str)] = &[
            (r#"{"a":1,"a":2}"#, 16, r#"body: duplicate member "a""#),
            (r#"{"a":1,"\u0061":2}"#, 16, r#"body: duplicate member "a""#),
            (r#"{"a":{"k":[{"x":1,"x":1}]}}"#, 16, r#"body: duplicate member "x""#),
            (r#"{"a":[[1]]}"#, 2, "body: JSON nesting deeper than 2 levels"),
            (r#"{"a":{}}"#, 1, "body: JSON nesting deeper than 1 levels"),
            (r#"{"a":1} x"#, 16, "body: trailing data after the JSON object"),
            (r#"{"a":1}{}"#, 16, "body: trailing data after the JSON object"),
            (r#"[{"a":1}]"#, 16, "body: the top-level JSON value must be an object"),
            (r#""secret-value""#, 16, "body: the top-level JSON value must be an object"),
            ("", 16, "body: empty"),
            (" \n", 16, "body: empty"),
            (r#"{"a":"#, 16, "body: unexpected end of JSON input"),
            (r#"{"a":1,}"#, 16, "body: malformed JSON"),
            (r#"{"a":"\ud800"}"#, 16, "body: malformed JSON"),
            ("{\"a\":1e400}", 16, "body: malformed JSON"),
            (r#"{"__proto__":{}}"#, 16, r#"body: member name "__proto__" is not allowed"#),
            (r#"{"jwks":{"keys":[{"kty":"RSA","__proto__":{"d":"x"}}]}}"#, 16, r#"body: member name "__proto__""#),
            (r#"{"a":[{"b":{"constructor":1}}]}"#, 16, r#"body: member name "constructor""#),
            (r#"{"a":{"prototype":1}}"#, 16, r#"body: member name "prototype""#),
            (r#"{"a":{"\u005f_proto__":1}}"#, 16, r#"body: member name "__proto__""#),
        ];
        for (body, depth, want) in cases {
            let got = err(body, *depth);
            assert!(got.starts_with(want), "{body:?}: got {got:?}, want {want:?}");
        }
        assert!(!err(r#""secret-value""#, 16).contains("secret"));
    }

    #[test]
    fn rejects_invalid_utf8() {
        let e = read_object(b"{\"a\":\"\xff\"}", 16).unwrap_err();
        assert!(e.description.starts_with("body: not valid UTF-8"), "{}", e.description);
    }

    #[test]
    fn depth_limit_is_exact() {
        let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(read_object(nested(16).as_bytes(), 16).is_ok());
        assert!(read_object(nested(17).as_bytes(), 16).is_err());
        // Far beyond serde_json's own recursion limit: still an error, never a stack overflow.
        assert!(read_object(nested(100_000).as_bytes(), 200).is_err());
    }
}
