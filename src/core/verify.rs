//! What the IdP made of a registration: members a profile adds on the way in ([`derive`]),
//! and the comparison of the IdP's answer with what the gateway sent ([`differences`]).
//!
//! An IdP that silently drops `token_endpoint_auth_method: none`, `grant_types` or
//! `response_types` (LemonLDAP::NG 2.16 does, and issues a secret anyway) "registers" public
//! clients that can never get a token, and nobody is told. The gateway compares the members it
//! validated with the answer and counts and audits every difference by member name — never by
//! value.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A member an IdP profile adds to registrations (`[[registration.derive]]` in
/// `conf/profiles/*.toml`): `member` = `map[document[from]]`, else `otherwise`, when `from` is
/// a string in the document; nothing is added when it is absent.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    pub member: String,
    pub from: String,
    #[serde(default)]
    pub map: BTreeMap<String, Value>,
    pub otherwise: Option<Value>,
}

/// Add the profile's derived members to a validated document. A rule applies when its `from`
/// member is a string in the document; the derived value replaces whatever the client sent
/// under that name (the gateway validated `from`, not the IdP-specific member).
pub fn derive(doc: &mut Map<String, Value>, rules: &[Derive]) {
    for rule in rules {
        let Some(Value::String(from)) = doc.get(&rule.from) else { continue };
        let value = rule.map.get(from).cloned().or_else(|| rule.otherwise.clone());
        if let Some(v) = value {
            doc.insert(rule.member.clone(), v);
        }
    }
}

/// The verified members whose value in the IdP's `answer` differs from the document the
/// gateway `sent`, sorted. A member the gateway did not send is not compared; one the answer
/// leaves out is a difference unless `known_drops` names it. Arrays compare as sets, `scope` as
/// a set of space-separated tokens, and a one-element array equals its string. `None` when
/// either body is not a JSON object.
pub fn differences(sent: &[u8], answer: &[u8], known_drops: &[String]) -> Option<Vec<String>> {
    let answer: Map<String, Value> = serde_json::from_slice(answer).ok()?;
    differences_in(sent, &answer, known_drops)
}

/// [`differences`] with the answer already parsed (the proxy parses it once for everything it
/// reads in it).
pub fn differences_in(sent: &[u8], answer: &Map<String, Value>, known_drops: &[String]) -> Option<Vec<String>> {
    // Only the verified members of what was sent are built; the rest is skipped (this ran on
    // every registration's answer and built the whole document).
    if sent.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let sent: Sent = serde_json::from_slice(sent).ok()?;
    let mut out = Vec::new();
    for &member in VERIFIED_MEMBERS {
        let Some(ours) = sent.get(member) else { continue };
        let same = match answer.get(member) {
            None | Some(Value::Null) => known_drops.iter().any(|d| d == member),
            Some(theirs) => tokens(member, ours) == tokens(member, theirs),
        };
        if !same {
            out.push(member.to_string());
        }
    }
    out.sort();
    Some(out)
}

/// The [`VERIFIED_MEMBERS`] of the document the gateway sent (its own serialization: an object,
/// each member once); a member given as `null` is `Some(Null)`, as in a map.
#[derive(serde::Deserialize)]
struct Sent {
    #[serde(default, deserialize_with = "present")]
    token_endpoint_auth_method: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    grant_types: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    response_types: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    redirect_uris: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

impl Sent {
    fn get(&self, member: &str) -> Option<&Value> {
        match member {
            "token_endpoint_auth_method" => self.token_endpoint_auth_method.as_ref(),
            "grant_types" => self.grant_types.as_ref(),
            "response_types" => self.response_types.as_ref(),
            "redirect_uris" => self.redirect_uris.as_ref(),
            "scope" => self.scope.as_ref(),
            _ => None,
        }
    }
}

/// A member's value as a sorted set of strings (`None` for a shape that is neither).
fn tokens(member: &str, v: &Value) -> Option<Vec<String>> {
    let mut t: Vec<String> = match v {
        Value::String(s) if member == "scope" => s.split_ascii_whitespace().map(String::from).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect::<Option<_>>()?,
        _ => return None,
    };
    t.sort();
    t.dedup();
    Some(t)
}

/// Bring an IdP's client information answer (RFC 7591 §3.2.1, RFC 7592 §3) into the shape
/// client libraries check — openid-client and oauth4webapi throw on a wrong type *after* the IdP
/// created the client. Returns the members repaired (names only), empty when none was:
/// - `client_id` given as a number: its decimal string;
/// - `client_id_issued_at` / `client_secret_expires_at` given as a string of digits (LemonLDAP::NG
///   2.16): that number; any other non-number: removed (then, for the expiry, the next rule);
/// - `client_secret` without `client_secret_expires_at` (LemonLDAP::NG 2.16; REQUIRED with a
///   secret): `0`, "does not expire" — what an IdP that states no expiry gives.
pub fn repair_answer(doc: &mut Map<String, Value>) -> Vec<&'static str> {
    let mut repaired = Vec::new();
    if let Some(Value::Number(n)) = doc.get("client_id") {
        let id = n.to_string();
        doc.insert("client_id".into(), Value::String(id));
        repaired.push("client_id");
    }
    for member in ["client_id_issued_at", "client_secret_expires_at"] {
        match doc.get(member) {
            None | Some(Value::Number(_)) => {}
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u64 = s.parse().unwrap_or(0);
                doc.insert(member.into(), Value::from(n));
                repaired.push(member);
            }
            Some(_) => {
                doc.remove(member);
                repaired.push(member);
            }
        }
    }
    let secret = doc.get("client_secret").is_some_and(|s| !s.is_null());
    if secret && !doc.contains_key("client_secret_expires_at") {
        doc.insert("client_secret_expires_at".into(), Value::from(0u64));
        if !repaired.contains(&"client_secret_expires_at") {
            repaired.push("client_secret_expires_at");
        }
    }
    repaired
}

/// Glewlwyd's rule (conf/profiles/glewlwyd.toml), for tests.
#[cfg(test)]
pub fn glewlwyd_rule() -> Vec<Derive> {
    vec![Derive {
        member: "client_confidential".into(),
        from: "token_endpoint_auth_method".into(),
        map: [("none".to_string(), Value::Bool(false))].into(),
        otherwise: Some(Value::Bool(true)),
    }]
}

/// The members compared: what the gateway's policy decided about the client.
pub const VERIFIED_MEMBERS: &[&str] =
    &["token_endpoint_auth_method", "grant_types", "response_types", "redirect_uris", "scope"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn glewlwyd() -> Vec<Derive> {
        glewlwyd_rule()
    }

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn client_confidential_follows_the_validated_auth_method() {
        let mut d = doc(json!({"token_endpoint_auth_method": "none", "client_confidential": true}));
        derive(&mut d, &glewlwyd());
        assert_eq!(d["client_confidential"], false, "the client's own value does not win");
        let mut d = doc(json!({"token_endpoint_auth_method": "private_key_jwt"}));
        derive(&mut d, &glewlwyd());
        assert_eq!(d["client_confidential"], true);
        let mut d = doc(json!({"client_name": "an update without the method"}));
        derive(&mut d, &glewlwyd());
        assert!(!d.contains_key("client_confidential"));
    }

    #[test]
    fn answers_are_repaired_into_the_rfc_7591_shape() {
        // LemonLDAP::NG 2.16: the issue time as a string, a secret without its expiry.
        let mut d = doc(json!({"client_id": "x", "client_secret": "s", "client_id_issued_at": "1764547200"}));
        assert_eq!(repair_answer(&mut d), ["client_id_issued_at", "client_secret_expires_at"]);
        assert_eq!(d["client_id_issued_at"], 1764547200u64);
        assert_eq!(d["client_secret_expires_at"], 0);
        // Already RFC-shaped: untouched.
        let good =
            json!({"client_id": "x", "client_secret": "s", "client_id_issued_at": 1, "client_secret_expires_at": 0});
        let mut d = doc(good.clone());
        assert!(repair_answer(&mut d).is_empty());
        assert_eq!(Value::Object(d), good);
        // A public client has no secret and needs no expiry.
        let mut d = doc(json!({"client_id": "x", "token_endpoint_auth_method": "none"}));
        assert!(repair_answer(&mut d).is_empty());
        assert!(!d.contains_key("client_secret_expires_at"));
        // A number as client_id; an unreadable issue time and expiry.
        let mut d = doc(
            json!({"client_id": 42, "client_id_issued_at": "yesterday", "client_secret": "s", "client_secret_expires_at": "never"}),
        );
        assert_eq!(repair_answer(&mut d), ["client_id", "client_id_issued_at", "client_secret_expires_at"]);
        assert_eq!(d["client_id"], "42");
        assert!(!d.contains_key("client_id_issued_at"));
        assert_eq!(d["client_secret_expires_at"], 0);
    }

    #[test]
    fn what_counts_as_a_difference() {
        let sent = json!({
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": ["http://127.0.0.1:1/cb"],
            "scope": "openid profile",
        })
        .to_string();
        // The same, reordered and reshaped: no difference.
        let same = json!({
            "client_id": "x",
            "token_endpoint_auth_method": ["none"],
            "grant_types": ["refresh_token", "authorization_code"],
            "response_types": "code",
            "redirect_uris": ["http://127.0.0.1:1/cb"],
            "scope": "profile  openid",
        })
        .to_string();
        assert_eq!(differences(sent.as_bytes(), same.as_bytes(), &[]), Some(vec![]));
        // LemonLDAP::NG: the auth method and the grants dropped, a secret issued.
        let lemon = json!({
            "client_id": "x",
            "client_secret": "s",
            "token_endpoint_auth_method": "client_secret_basic",
            "redirect_uris": ["http://127.0.0.1:1/cb"],
        })
        .to_string();
        assert_eq!(
            differences(sent.as_bytes(), lemon.as_bytes(), &[]).unwrap(),
            ["grant_types", "response_types", "scope", "token_endpoint_auth_method"]
        );
        // A known drop is not counted; a changed value still is.
        let known = ["scope".to_string(), "grant_types".to_string(), "response_types".to_string()];
        assert_eq!(differences(sent.as_bytes(), lemon.as_bytes(), &known).unwrap(), ["token_endpoint_auth_method"]);
        // Members the gateway did not send are not compared.
        assert_eq!(differences(br#"{"client_name":"x"}"#, lemon.as_bytes(), &[]), Some(vec![]));
        assert_eq!(differences(sent.as_bytes(), b"not json", &[]), None);
    }

    #[test]
    fn every_verified_member_of_the_sent_document_is_read() {
        // The sent document is read into a struct of the verified members only: each one
        // must be compared (a member added to the list but not to the struct would not be).
        for &member in VERIFIED_MEMBERS {
            let sent = json!({ member: ["a"], "client_name": "x" }).to_string();
            assert_eq!(differences(sent.as_bytes(), b"{}", &[]), Some(vec![member.to_string()]), "{member}");
            let answer = json!({ member: "a" }).to_string();
            assert_eq!(differences(sent.as_bytes(), answer.as_bytes(), &[]), Some(vec![]), "{member}");
        }
        // Not an object, as before: nothing compared.
        assert_eq!(differences(br#"[["none"]]"#, b"{}", &[]), None);
        assert_eq!(differences(br#"{"scope":null}"#, br#"{"scope":"a"}"#, &[]), Some(vec!["scope".into()]));
    }
}
