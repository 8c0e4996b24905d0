//! The rule file as written (Auth0 Tenant ACL JSON shape), kept apart from the compiled
//! runtime structure so that an admin API can serialize rules back unchanged.
//!
//! These types only describe *shape*. Values (CIDRs, country codes, the action choice, …)
//! are validated when a rule set is compiled (`RuleSet::load` / `RuleSet::from_rules`).
//!
//! `load` does not deserialize these types straight from the file: it first walks each
//! array element as a `serde_json::Value` ([`check_rule_value`]) so that every problem in
//! every rule is reported with its path, and only then converts it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::error::AclError;

/// Auth0's documented default priority when a rule omits it.
pub const DEFAULT_PRIORITY: f64 = 50.0;

/// One rule of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique id. When absent the rule is known as `rule-<index>` (0-based file position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Required, as in Auth0.
    pub active: bool,
    /// Lower runs first; ties keep file order. Defaults to 50 (Auth0's default).
    #[serde(
        default = "default_priority",
        serialize_with = "serialize_priority",
        deserialize_with = "deserialize_priority"
    )]
    pub priority: f64,
    pub rule: RuleBody,
    /// Read-only member of an Auth0 export; kept for round trips, ignored by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Read-only member of an Auth0 export; kept for round trips, ignored by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Read-only member of an Auth0 `GET /api/v2/network-acls/{id}` answer (the tenant's
    /// name); kept for round trips, ignored by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Read-only member of an Auth0 answer (`null` on live rules); kept for round trips,
    /// ignored by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

fn default_priority() -> f64 {
    DEFAULT_PRIORITY
}

fn serialize_priority<S: Serializer>(p: &f64, s: S) -> Result<S::Ok, S::Error> {
    // Whole numbers go back out as integers (`2`, not `2.0`), as Auth0 writes them.
    if p.fract() == 0.0 && p.abs() < 9.0e15 {
        s.serialize_i64(*p as i64)
    } else {
        s.serialize_f64(*p)
    }
}

fn deserialize_priority<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    // `null` counts as absent, like every optional member.
    let p = Option::<f64>::deserialize(d)?.unwrap_or(DEFAULT_PRIORITY);
    if p.is_finite() {
        Ok(p)
    } else {
        Err(serde::de::Error::custom("priority must be a finite number"))
    }
}

/// Auth0's `rule` member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    pub action: Action,
    /// `tenant`, `authentication`, `management`, `dcr` or `dynamic_client_registration`;
    /// kept as written so it round-trips. Checked with `RuleScope::parse` when compiling.
    pub scope: String,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<Conditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_match: Option<Conditions>,
    /// Auth0's `match_all`: `true` matches every request of the scope, whatever its
    /// signals; Auth0 makes it exclusive of `match` and `not_match`, and so does the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_all: Option<bool>,
}

/// Auth0's `rule.action`: exactly one of `allow`, `block`, `redirect` may be `true`; `log`
/// alone is monitoring, and `log` with one of the others is that action in monitoring mode
/// (recorded, not executed, evaluation goes on), as Auth0's monitoring-mode PATCH makes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<bool>,
}

impl Action {
    /// The action a rule takes or, in monitoring mode, would take: `allow`, `block`,
    /// `redirect` or `log` (log alone), and whether it is monitoring (`log` is true).
    pub fn describe(&self) -> (&'static str, bool) {
        let monitor = self.log == Some(true);
        let name = if self.allow == Some(true) {
            "allow"
        } else if self.block == Some(true) {
            "block"
        } else if self.redirect == Some(true) {
            "redirect"
        } else {
            "log"
        };
        (name, monitor)
    }
}

/// Auth0's `rule.match` / `rule.not_match`. An absent or empty list means the rule does not
/// look at that signal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asns: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_country_codes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_subdivision_codes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_cidrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_cidrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja3_fingerprints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja4_fingerprints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connecting_ipv4_cidrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connecting_ipv6_cidrs: Option<Vec<String>>,
    /// Auth0-curated lists (`auth0.low_reputation`, `auth0.icloud_relay_proxy`): the client
    /// IP is in one of the named lists, each mapped to a local file in `[acl.managed_lists]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth0_managed: Option<Vec<String>>,
    /// RFC 9421 message signature made with one of these keys (`[acl] signature_keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_message_signature: Option<HttpMessageSignature>,
    /// Extension beyond Auth0's schema: the host of a URL `client_id` (a Client ID Metadata
    /// Document) in the request's query, as `example.com` or `*.example.com` (the
    /// `redirect_host_allow` syntax). Auth0 refuses rules carrying it (`acl::compat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_hosts: Option<Vec<String>>,
}

/// Auth0's `NetworkAclHttpMessageSignature`: `{"keys": [{"id": "…"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMessageSignature {
    pub keys: Vec<KeyRef>,
}

/// Auth0's `NetworkAclHttpMessageSignatureKey`: the id of a key of the keys API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub id: String,
}

impl Conditions {
    /// True when no signal has a value (every list absent or empty).
    pub fn is_empty(&self) -> bool {
        fn e<T>(v: &Option<Vec<T>>) -> bool {
            v.as_ref().is_none_or(Vec::is_empty)
        }
        e(&self.asns)
            && e(&self.geo_country_codes)
            && e(&self.geo_subdivision_codes)
            && e(&self.ipv4_cidrs)
            && e(&self.ipv6_cidrs)
            && e(&self.ja3_fingerprints)
            && e(&self.ja4_fingerprints)
            && e(&self.user_agents)
            && e(&self.hostnames)
            && e(&self.connecting_ipv4_cidrs)
            && e(&self.connecting_ipv6_cidrs)
            && e(&self.auth0_managed)
            && e(&self.client_id_hosts)
            && self.http_message_signature.as_ref().is_none_or(|h| h.keys.is_empty())
    }
}

// ---------------------------------------------------------------------------------------
// Structural check of one array element, reporting every problem with its path.

const RULE_MEMBERS: &[&str] =
    &["id", "description", "active", "priority", "rule", "created_at", "updated_at", "tenant_id", "deleted_at"];
const BODY_MEMBERS: &[&str] = &["action", "scope", "match", "not_match", "match_all"];
const ACTION_MEMBERS: &[&str] = &["allow", "block", "redirect", "redirect_uri", "log"];
/// Every signal name, as written in `match` / `not_match`.
pub const SIGNAL_NAMES: &[&str] = &[
    "asns",
    "geo_country_codes",
    "geo_subdivision_codes",
    "ipv4_cidrs",
    "ipv6_cidrs",
    "ja3_fingerprints",
    "ja4_fingerprints",
    "user_agents",
    "hostnames",
    "connecting_ipv4_cidrs",
    "connecting_ipv6_cidrs",
    "auth0_managed",
    "http_message_signature",
    "client_id_hosts",
];

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                format!("string {short:?}…")
            } else {
                format!("string {short:?}")
            }
        }
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn type_error(expected: &str, found: &Value) -> String {
    format!("expected {expected}, found {}", kind(found))
}

/// Collects `(field, message)` problems for one rule while removing what is wrong from the
/// value (unknown members, mistyped members and list items), so that the values left can
/// still be checked.
struct Checker {
    problems: Vec<(String, String)>,
}

fn join(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_owned()
    } else {
        format!("{field}.{key}")
    }
}

type Map = serde_json::Map<String, Value>;

impl Checker {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push((field.into(), message.into()));
    }

    /// Reports and removes unknown members; `None` (and a report) when `v` is no object.
    fn object<'a>(&mut self, field: &str, v: &'a mut Value, allowed: &[&str]) -> Option<&'a mut Map> {
        let Value::Object(map) = v else {
            self.push(field, type_error("an object", v));
            return None;
        };
        let unknown: Vec<String> = map.keys().filter(|k| !allowed.contains(&k.as_str())).cloned().collect();
        for key in unknown {
            self.push(join(field, &key), format!("unknown member (expected one of: {})", allowed.join(", ")));
            map.shift_remove(&key);
        }
        Some(map)
    }

    /// An optional member that must satisfy `ok` (null counts as absent); removed if not.
    fn optional(&mut self, field: &str, map: &mut Map, key: &str, expected: &str, ok: fn(&Value) -> bool) {
        if let Some(v) = map.get(key) {
            if !v.is_null() && !ok(v) {
                self.push(join(field, key), type_error(expected, v));
                map.shift_remove(key);
            }
        }
    }

    /// A required member; replaced by `placeholder` (which must not cause value errors of
    /// its own) when missing or mistyped.
    fn required(
        &mut self,
        field: &str,
        map: &mut Map,
        key: &str,
        expected: &str,
        ok: fn(&Value) -> bool,
        placeholder: Value,
    ) {
        match map.get(key) {
            Some(v) if ok(v) => return,
            None => self.push(join(field, key), format!("missing (required, {expected})")),
            Some(v) => self.push(join(field, key), type_error(expected, v)),
        }
        map.insert(key.to_owned(), placeholder);
    }

    fn conditions(&mut self, field: &str, v: &mut Value) {
        if v.is_null() {
            return;
        }
        let Some(map) = self.object(field, v, SIGNAL_NAMES) else {
            *v = Value::Null;
            return;
        };
        for (name, list) in map.iter_mut() {
            let path = join(field, name);
            if name == "http_message_signature" {
                self.signature(&path, list);
                continue;
            }
            let items = match list {
                Value::Null => continue,
                Value::Array(items) => items,
                other => {
                    self.push(path, type_error("an array", other));
                    *other = Value::Null;
                    continue;
                }
            };
            let asns = name == "asns";
            let mut i = 0;
            items.retain(|item| {
                let ok = if asns { item.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) } else { item.is_string() };
                if !ok {
                    let expected = if asns { "an AS number (integer 0..=4294967295)" } else { "a string" };
                    self.problems.push((format!("{path}[{i}]"), type_error(expected, item)));
                }
                i += 1;
                ok
            });
        }
    }
}

impl Checker {
    /// `{"keys": [{"id": "…"}, …]}`; what is malformed is removed.
    fn signature(&mut self, field: &str, v: &mut Value) {
        if v.is_null() {
            return;
        }
        let Some(map) = self.object(field, v, &["keys"]) else {
            *v = Value::Null;
            return;
        };
        let keys_path = join(field, "keys");
        match map.get_mut("keys") {
            None => {
                self.push(keys_path, "missing (required, an array of {\"id\": …})");
                map.insert("keys".into(), Value::Array(Vec::new()));
            }
            Some(Value::Array(items)) => {
                let mut i = 0;
                items.retain_mut(|item| {
                    let path = format!("{keys_path}[{i}]");
                    i += 1;
                    let Some(key) = self.object(&path, item, &["id"]) else { return false };
                    match key.get("id") {
                        Some(Value::String(_)) => true,
                        None => {
                            self.problems.push((join(&path, "id"), "missing (required, a string)".into()));
                            false
                        }
                        Some(other) => {
                            self.problems.push((join(&path, "id"), type_error("a string", other)));
                            false
                        }
                    }
                });
            }
            Some(other) => {
                self.push(keys_path, type_error("an array", other));
                *other = Value::Array(Vec::new());
            }
        }
    }
}

/// A rule element that failed the shape check.
pub(crate) struct ShapeErrors {
    /// `(field, message)`, document order.
    pub(crate) problems: Vec<(String, String)>,
    /// The rule with the offending parts removed (placeholders for required members), so
    /// that its remaining values can be checked too. `None` if even that does not convert.
    pub(crate) salvaged: Option<Box<Rule>>,
}

/// Checks the shape of one rule object and converts it, reporting every problem with its
/// path rather than stopping at the first.
pub(crate) fn check_rule_value(mut v: Value) -> Result<Rule, ShapeErrors> {
    let mut c = Checker { problems: Vec::new() };
    let is_str: fn(&Value) -> bool = Value::is_string;
    let is_bool: fn(&Value) -> bool = Value::is_boolean;
    let is_obj: fn(&Value) -> bool = Value::is_object;
    if let Some(top) = c.object("", &mut v, RULE_MEMBERS) {
        for key in ["id", "description", "created_at", "updated_at", "tenant_id", "deleted_at"] {
            c.optional("", top, key, "a string", is_str);
        }
        c.optional("", top, "priority", "a number", Value::is_number);
        c.required("", top, "active", "a boolean", is_bool, Value::Bool(false));
        let placeholder_action = serde_json::json!({"log": true});
        let placeholder = serde_json::json!({"action": placeholder_action, "scope": "tenant"});
        c.required("", top, "rule", "an object", is_obj, placeholder);
        if let Some(body) = top.get_mut("rule") {
            if let Some(body) = c.object("rule", body, BODY_MEMBERS) {
                c.required("rule", body, "action", "an object", is_obj, placeholder_action);
                if let Some(action) = body.get_mut("action") {
                    if let Some(a) = c.object("rule.action", action, ACTION_MEMBERS) {
                        for flag in ["allow", "block", "redirect", "log"] {
                            c.optional("rule.action", a, flag, "a boolean", is_bool);
                        }
                        c.optional("rule.action", a, "redirect_uri", "a string", is_str);
                    }
                }
                c.required("rule", body, "scope", "a string", is_str, "tenant".into());
                c.optional("rule", body, "match_all", "a boolean", is_bool);
                for key in ["match", "not_match"] {
                    if let Some(m) = body.get_mut(key) {
                        c.conditions(&join("rule", key), m);
                    }
                }
            }
        }
    }
    let converted = serde_json::from_value::<Rule>(v);
    if c.problems.is_empty() {
        // The walk accepts exactly what the derived Deserialize accepts, so this only fails
        // if the two drift apart; report it rather than panic.
        converted.map_err(|e| ShapeErrors { problems: vec![(String::new(), e.to_string())], salvaged: None })
    } else {
        Err(ShapeErrors { problems: c.problems, salvaged: converted.ok().map(Box::new) })
    }
}

/// The `id` member of a raw rule, when it is a string (used to name a rule in errors even
/// when the rest of it is malformed).
pub(crate) fn raw_id(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

/// Turns a top-level document into its rule elements. Accepts a JSON array of rules, or
/// Auth0's paged list response `{"network_acls": [...], "start", "limit", "total"}`.
pub(crate) fn rule_elements(doc: Value) -> Result<Vec<Value>, AclError> {
    match doc {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) => {
            let paged_members = ["network_acls", "start", "limit", "total"];
            if let Some(k) = map.keys().find(|k| !paged_members.contains(&k.as_str())) {
                return Err(AclError::file(
                    k.clone(),
                    "the rules file must be a JSON array of rules (or an Auth0 paged list \
                     response with a \"network_acls\" array); found an object with this member",
                ));
            }
            match map.remove("network_acls") {
                Some(Value::Array(items)) => Ok(items),
                Some(other) => Err(AclError::file("network_acls", type_error("an array", &other))),
                None => Err(AclError::file(
                    "",
                    "the rules file must be a JSON array of rules; found an object without \
                     \"network_acls\"",
                )),
            }
        }
        other => {
            Err(AclError::file("", format!("the rules file must be a JSON array of rules; found {}", kind(&other))))
        }
    }
}
