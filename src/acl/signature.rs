//! The `http_message_signature` signal: RFC 9421 HTTP message signatures made with HMAC-SHA256
//! keys of Auth0's Network ACL keys API (`POST /api/v2/keys/network-acls`), kept in a local
//! file (`[acl] signature_keys`).
//!
//! The keys file is a JSON array of the key objects Auth0's API takes and answers:
//! `{"id": "key_…", "name": "edge", "alg": "hmac-sha256", "value": "<base64 key>"}`
//! (`fingerprint`, `created_at`, `updated_at` are accepted and ignored). Key material never
//! reaches a message, a log line or `Debug`.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One HMAC-SHA256 key.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub name: Option<String>,
    secret: Vec<u8>,
}

impl Key {
    pub fn new(id: impl Into<String>, secret: Vec<u8>) -> Key {
        Key { id: id.into(), name: None, secret }
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

/// The configured keys, by id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Key>,
}

const KEY_MEMBERS: &[&str] = &["id", "name", "alg", "value", "fingerprint", "created_at", "updated_at"];

impl KeySet {
    pub fn from_keys(keys: impl IntoIterator<Item = Key>) -> KeySet {
        KeySet { keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect() }
    }

    /// Parses a keys file, reporting every problem (`[2].alg: …`); never the key material.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, Vec<String>> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| vec![format!("invalid JSON: {e}")])?;
        let Value::Array(items) = doc else {
            return Err(vec!["expected a JSON array of keys ({\"id\", \"alg\": \"hmac-sha256\", \"value\"})".into()]);
        };
        let mut errors = Vec::new();
        let mut keys: HashMap<String, Key> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Object(m) = item else {
                errors.push(format!("[{i}]: expected an object"));
                continue;
            };
            for k in m.keys().filter(|k| !KEY_MEMBERS.contains(&k.as_str())) {
                errors.push(format!("[{i}].{k}: unknown member (expected one of: {})", KEY_MEMBERS.join(", ")));
            }
            let id = match m.get("id") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => {
                    errors.push(format!("[{i}].id: required, a non-empty string"));
                    None
                }
            };
            match m.get("alg") {
                Some(Value::String(s)) if s == "hmac-sha256" => {}
                _ => errors.push(format!("[{i}].alg: required, \"hmac-sha256\" (the only algorithm Auth0 supports)")),
            }
            let secret = match m.get("value") {
                Some(Value::String(s)) => match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                    Ok(b) if b.len() >= 16 => Some(b),
                    Ok(_) => {
                        errors.push(format!("[{i}].value: the key is shorter than 16 bytes"));
                        None
                    }
                    Err(_) => {
                        errors.push(format!("[{i}].value: not standard base64"));
                        None
                    }
                },
                _ => {
                    errors.push(format!("[{i}].value: required, the base64 key material"));
                    None
                }
            };
            let name = m.get("name").and_then(Value::as_str).map(str::to_owned);
            if let (Some(id), Some(secret)) = (id, secret) {
                if keys.contains_key(&id) {
                    errors.push(format!("[{i}].id: duplicate key id {id:?}"));
                } else {
                    keys.insert(id.clone(), Key { id, name, secret });
                }
            }
        }
        if errors.is_empty() {
            Ok(KeySet { keys })
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Longest lifetime Auth0 takes (`expires - created`, seconds).
pub const MAX_LIFETIME: i64 = 3600;
/// Clock skew Auth0 allows on `created` and `expires`, seconds.
pub const SKEW: i64 = 60;

/// The parts of a request a signature may cover (RFC 9421 §2.2 derived components, and
/// header fields). `path` is the request path as sent, `query` without its `?`.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

/// What the signature fields of a request amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureOutcome {
    /// No `Signature-Input` / `Signature` field.
    Missing,
    /// Present but not acceptable (the reason, for logs; never key material).
    Invalid(String),
    /// Verified with this key id.
    Valid(String),
}

fn invalid(why: impl Into<String>) -> SignatureOutcome {
    SignatureOutcome::Invalid(why.into())
}

fn field_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> =
        headers.get_all(name).iter().map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("").trim()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// `@query-param;name="…"`: the value of the named parameter, as sent (RFC 9421 §2.2.8; the
/// names are compared after percent-decoding, the value is re-encoded the same way).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let mut found = None;
    for pair in query?.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k) == name {
            if found.is_some() {
                return None; // repeated: ambiguous, refuse
            }
            found = Some(percent_encoding::utf8_percent_encode(&decode(v), SET).to_string());
        }
    }
    found
}

/// The value of one covered component, or why it cannot be had.
fn component(m: &Message<'_>, item: &sfv::Item) -> Result<(String, String), String> {
    let sfv::BareItem::String(name) = &item.bare_item else {
        return Err("a covered component is not a string".into());
    };
    let params: Vec<&str> = item.params.keys().map(String::as_str).collect();
    let line_id = sfv::SerializeValue::serialize_value(item).map_err(|e| e.to_string())?;
    let value = match name.as_str() {
        "@method" => m.method.to_string(),
        "@authority" => m.authority.to_ascii_lowercase(),
        "@scheme" => m.scheme.to_ascii_lowercase(),
        "@path" => m.path.to_string(),
        "@query" => format!("?{}", m.query.unwrap_or("")),
        "@request-target" => match m.query {
            Some(q) => format!("{}?{q}", m.path),
            None => m.path.to_string(),
        },
        "@target-uri" => {
            let q = m.query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{}://{}{}{q}", m.scheme.to_ascii_lowercase(), m.authority.to_ascii_lowercase(), m.path)
        }
        "@query-param" => {
            let Some(sfv::BareItem::String(p)) = item.params.get("name") else {
                return Err("@query-param without a name parameter".into());
            };
            query_param(m.query, p).ok_or_else(|| format!("@query-param {p:?} is not in the request once"))?
        }
        n if n.starts_with('@') => return Err(format!("derived component {n} is not supported")),
        n => {
            if !params.is_empty() {
                return Err(format!("component parameters on {n:?} are not supported"));
            }
            if n.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(format!("header name {n:?} must be lower case"));
            }
            field_value(m.headers, n).ok_or_else(|| format!("covered header {n:?} is missing"))?
        }
    };
    if name.starts_with('@') && name != "@query-param" && !params.is_empty() {
        return Err(format!("component parameters on {name} are not supported"));
    }
    Ok((line_id, value))
}

/// RFC 9421 §2.5: the signature base for the covered components and parameters of one
/// signature (`label=(…);params` as parsed).
pub fn signature_base(m: &Message<'_>, covered: &sfv::InnerList) -> Result<String, String> {
    let mut base = String::new();
    let mut seen = std::collections::HashSet::new();
    for item in &covered.items {
        let (id, value) = component(m, item)?;
        if !seen.insert(id.clone()) {
            return Err(format!("component {id} is covered twice"));
        }
        if value.contains('\n') {
            return Err("a component value holds a line break".into());
        }
        base.push_str(&format!("{id}: {value}\n"));
    }
    let mut dict = sfv::Dictionary::new();
    dict.insert("s".into(), sfv::ListEntry::InnerList(covered.clone()));
    let params = sfv::SerializeValue::serialize_value(&dict).map_err(|e| e.to_string())?;
    base.push_str("\"@signature-params\": ");
    base.push_str(params.strip_prefix("s=").unwrap_or(&params));
    Ok(base)
}

/// HMAC-SHA256 of `base` with `secret` (constant-time comparison with `signature`).
pub fn hmac_ok(secret: &[u8], base: &[u8], signature: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(base);
    mac.verify_slice(signature).is_ok()
}

/// HMAC-SHA256 of `base` (for signers: tests, tools).
pub fn hmac_sign(secret: &[u8], base: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(base);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies the request's signature as Auth0's Tenant ACL does: exactly one signature label;
/// `created`, `expires` and `keyid` present; `alg`, when given, `hmac-sha256`; a lifetime of
/// at most an hour; 60 seconds of clock skew either side (`created <= now + 60`,
/// `now <= expires + 60`); the key known; the HMAC-SHA256 over the RFC 9421 signature base.
pub fn verify(keys: &KeySet, m: &Message<'_>, now: i64) -> SignatureOutcome {
    let input = field_value(m.headers, "signature-input");
    let signature = field_value(m.headers, "signature");
    let (input, signature) = match (input, signature) {
        (None, None) => return SignatureOutcome::Missing,
        (Some(i), Some(s)) => (i, s),
        _ => return invalid("Signature-Input and Signature must come together"),
    };
    let Ok(inputs) = sfv::Parser::parse_dictionary(input.as_bytes()) else {
        return invalid("Signature-Input is not a structured field dictionary");
    };
    let Ok(sigs) = sfv::Parser::parse_dictionary(signature.as_bytes()) else {
        return invalid("Signature is not a structured field dictionary");
    };
    if inputs.len() != 1 || sigs.len() != 1 {
        return invalid("more than one signature label");
    }
    let Some((label, sfv::ListEntry::InnerList(covered))) = inputs.iter().next() else {
        return invalid("Signature-Input member is not an inner list");
    };
    let Some(sfv::ListEntry::Item(sfv::Item { bare_item: sfv::BareItem::ByteSeq(sig), .. })) = sigs.get(label) else {
        return invalid("no Signature member with the Signature-Input label");
    };
    let int = |k: &str| match covered.params.get(k) {
        Some(sfv::BareItem::Integer(n)) => Some(*n),
        _ => None,
    };
    let (Some(created), Some(expires)) = (int("created"), int("expires")) else {
        return invalid("created and expires are required");
    };
    let Some(sfv::BareItem::String(keyid)) = covered.params.get("keyid") else {
        return invalid("keyid is required");
    };
    match covered.params.get("alg") {
        None => {}
        Some(sfv::BareItem::String(a)) if a == "hmac-sha256" => {}
        Some(_) => return invalid("alg must be hmac-sha256"),
    }
    if expires < created || expires - created > MAX_LIFETIME {
        return invalid("lifetime longer than an hour (or negative)");
    }
    if created > now + SKEW {
        return invalid("created is in the future");
    }
    if now > expires + SKEW {
        return invalid("expired");
    }
    // A signature must be bound to the request it signs: one covering nothing (or only
    // headers) could be replayed on any request for its lifetime (review finding).
    let names: Vec<&str> = covered
        .items
        .iter()
        .filter_map(|i| match &i.bare_item {
            sfv::BareItem::String(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let has = |n: &str| names.contains(&n);
    if !has("@method") || !(has("@target-uri") || has("@authority") && (has("@path") || has("@request-target"))) {
        return invalid("the signature must cover @method and the target (@target-uri, or @authority with @path)");
    }
    let Some(key) = keys.get(keyid) else {
        return invalid("unknown keyid");
    };
    let base = match signature_base(m, covered) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    if hmac_ok(key.secret(), base.as_bytes(), sig) {
        SignatureOutcome::Valid(key.id.clone())
    } else {
        invalid("signature does not verify")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auth0_key_objects_and_hides_material() {
        let ks = KeySet::parse(
            br#"[{"id":"key_1","name":"edge","alg":"hmac-sha256","value":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","fingerprint":"x"}]"#,
        )
        .unwrap();
        let k = ks.get("key_1").unwrap();
        assert_eq!(k.secret().len(), 32);
        assert!(!format!("{ks:?}").contains("AAEC"));
        let e = KeySet::parse(br#"[{"id":"a","alg":"rsa","value":"!!"},{"alg":"hmac-sha256","value":"AAAA","x":1}]"#)
            .unwrap_err();
        for want in ["[0].alg", "[0].value", "[1].x", "[1].id", "[1].value"] {
            assert!(e.iter().any(|m| m.starts_with(want)), "{want} in {e:?}");
        }
        assert!(!e.iter().any(|m| m.contains("AAAA")));
    }
}

#[cfg(test)]
mod rfc9421 {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// RFC 9421 Appendix B.2.5: HMAC-SHA256 with the published `test-shared-secret`.
    #[test]
    fn appendix_b_2_5_vector() {
        let secret = base64::engine::general_purpose::STANDARD
            .decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
            .unwrap();
        let h = headers(&[
            ("host", "example.com"),
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("content-type", "application/json"),
            ("content-length", "18"),
        ]);
        let m = Message {
            method: "POST",
            scheme: "https",
            authority: "example.com",
            path: "/foo",
            query: Some("param=Value&Pet=dog"),
            headers: &h,
        };
        let input = sfv::Parser::parse_dictionary(
            br#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
        )
        .unwrap();
        let sfv::ListEntry::InnerList(covered) = &input["sig-b25"] else { panic!() };
        let base = signature_base(&m, covered).unwrap();
        assert_eq!(
            base,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\
             \"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        );
        let sig =
            base64::engine::general_purpose::STANDARD.decode("pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=").unwrap();
        assert!(hmac_ok(&secret, base.as_bytes(), &sig));
        assert_eq!(hmac_sign(&secret, base.as_bytes()), sig);
        assert!(!hmac_ok(&secret, base.replace("example.com", "example.org").as_bytes(), &sig));
        // The same signature as a request: Auth0 needs expires, so it is refused there.
        let mut h2 = h.clone();
        h2.insert(
            "signature-input",
            http::HeaderValue::from_static(
                r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
            ),
        );
        h2.insert(
            "signature",
            http::HeaderValue::from_static("sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"),
        );
        let keys = KeySet::from_keys([Key::new("test-shared-secret", secret)]);
        let m2 = Message { headers: &h2, ..m };
        assert_eq!(
            verify(&keys, &m2, 1618884473),
            SignatureOutcome::Invalid("created and expires are required".into())
        );
    }

    /// A valid HMAC over components that do not bind the request (nothing, or headers only)
    /// is refused: it could be replayed on any request.
    #[test]
    fn a_signature_must_cover_the_method_and_target() {
        let keys = KeySet::from_keys([Key::new("k", vec![7; 32])]);
        let now = 1_700_000_000;
        for (covered, ok) in [
            ("()", false),
            (r#"("content-type")"#, false),
            (r#"("@method")"#, false),
            (r#"("@authority" "@path")"#, false),
            (r#"("@method" "@authority" "@path")"#, true),
            (r#"("@method" "@target-uri")"#, true),
        ] {
            let input = format!(r#"s={covered};created={now};expires={};keyid="k""#, now + 60);
            let mut h = headers(&[("host", "auth.example.com"), ("content-type", "application/json")]);
            let d = sfv::Parser::parse_dictionary(input.as_bytes()).unwrap();
            let sfv::ListEntry::InnerList(list) = &d["s"] else { panic!() };
            let msg = |h: &http::HeaderMap| -> String {
                let m = Message {
                    method: "POST",
                    scheme: "https",
                    authority: "auth.example.com",
                    path: "/oidc/register",
                    query: None,
                    headers: h,
                };
                signature_base(&m, list).unwrap()
            };
            let base = msg(&h);
            let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sign(&[7; 32], base.as_bytes()));
            h.insert("signature-input", http::HeaderValue::from_str(&input).unwrap());
            h.insert("signature", http::HeaderValue::from_str(&format!("s=:{sig}:")).unwrap());
            let m = Message {
                method: "POST",
                scheme: "https",
                authority: "auth.example.com",
                path: "/oidc/register",
                query: None,
                headers: &h,
            };
            let got = verify(&keys, &m, now);
            assert_eq!(matches!(got, SignatureOutcome::Valid(_)), ok, "{covered}: {got:?}");
        }
    }

    /// Auth0's rules, with signatures made here by the signer half.
    #[test]
    fn auth0_requirements() {
        let keys = KeySet::from_keys([Key::new("key_edge", vec![9; 32])]);
        let now = 1_700_000_000;
        let sign = |params: &str, secret: &[u8], extra: &[(&str, &str)]| -> http::HeaderMap {
            let mut h = headers(&[("host", "auth.example.com"), ("content-type", "application/json")]);
            for (k, v) in extra {
                h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
            }
            let input = format!(r#"edge=("@method" "@path" "@authority" "@query-param";name="client_id"){params}"#);
            let d = sfv::Parser::parse_dictionary(input.as_bytes()).unwrap();
            let sfv::ListEntry::InnerList(covered) = &d["edge"] else { panic!() };
            let m = Message {
                method: "POST",
                scheme: "https",
                authority: "auth.example.com",
                path: "/oidc/register",
                query: Some("client_id=abc&x=1"),
                headers: &h,
            };
            let base = signature_base(&m, covered).unwrap();
            let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sign(secret, base.as_bytes()));
            h.insert("signature-input", http::HeaderValue::from_str(&input).unwrap());
            h.insert("signature", http::HeaderValue::from_str(&format!("edge=:{sig}:")).unwrap());
            h
        };
        let check = |h: &http::HeaderMap, query: &str| {
            let m = Message {
                method: "POST",
                scheme: "https",
                authority: "auth.example.com",
                path: "/oidc/register",
                query: Some(query),
                headers: h,
            };
            verify(&keys, &m, now)
        };
        let ok = format!(r#";created={};expires={};keyid="key_edge";alg="hmac-sha256""#, now - 10, now + 300);
        assert_eq!(check(&sign(&ok, &[9; 32], &[]), "client_id=abc&x=1"), SignatureOutcome::Valid("key_edge".into()));
        // Tampered parameter, wrong key, unknown key, missing expires, too long, expired, future.
        assert!(matches!(check(&sign(&ok, &[9; 32], &[]), "client_id=evil&x=1"), SignatureOutcome::Invalid(_)));
        assert_eq!(
            check(&sign(&ok, &[8; 32], &[]), "client_id=abc&x=1"),
            SignatureOutcome::Invalid("signature does not verify".into())
        );
        let other = ok.replace("key_edge", "key_other");
        assert_eq!(
            check(&sign(&other, &[9; 32], &[]), "client_id=abc&x=1"),
            SignatureOutcome::Invalid("unknown keyid".into())
        );
        let no_exp = format!(r#";created={};keyid="key_edge""#, now);
        assert!(matches!(check(&sign(&no_exp, &[9; 32], &[]), "client_id=abc"), SignatureOutcome::Invalid(_)));
        let long = format!(r#";created={};expires={};keyid="key_edge""#, now - 10, now + 3600);
        assert!(
            matches!(check(&sign(&long, &[9; 32], &[]), "client_id=abc&x=1"), SignatureOutcome::Invalid(m) if m.contains("hour"))
        );
        let old = format!(r#";created={};expires={};keyid="key_edge""#, now - 1000, now - 61);
        assert_eq!(check(&sign(&old, &[9; 32], &[]), "client_id=abc&x=1"), SignatureOutcome::Invalid("expired".into()));
        let skewed = format!(r#";created={};expires={};keyid="key_edge""#, now - 1000, now - 60);
        assert_eq!(
            check(&sign(&skewed, &[9; 32], &[]), "client_id=abc&x=1"),
            SignatureOutcome::Valid("key_edge".into())
        );
        let future = format!(r#";created={};expires={};keyid="key_edge""#, now + 61, now + 100);
        assert_eq!(
            check(&sign(&future, &[9; 32], &[]), "client_id=abc&x=1"),
            SignatureOutcome::Invalid("created is in the future".into())
        );
        // Two labels are refused; none is Missing.
        let mut two = sign(&ok, &[9; 32], &[]);
        let first = two.get("signature-input").unwrap().to_str().unwrap().to_string();
        two.insert(
            "signature-input",
            http::HeaderValue::from_str(&format!("{first}, b=(\"@method\");created=1;expires=2;keyid=\"k\"")).unwrap(),
        );
        assert_eq!(check(&two, "client_id=abc&x=1"), SignatureOutcome::Invalid("more than one signature label".into()));
        assert_eq!(check(&headers(&[("host", "x")]), ""), SignatureOutcome::Missing);
    }
}
