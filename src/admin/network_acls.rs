//! `/api/v2/network-acls`: Auth0's network ACL resource over the rules file. Pure: the
//! handlers in `mod.rs` read and write the file; this computes the new file.
//!
//! A write builds the whole new rules document and validates it with [`RuleSet::load`] —
//! the very function a file load uses — so the API can store nothing a reload would refuse.
//! Rules without an id are known by their position (`rule-<index>`); the first write through
//! the API writes those ids into the file, so an id keeps naming the same rule after a delete.
//!
//! As Auth0's Management API: a PATCH merges the members sent into the rule (JSON merge
//! patch, RFC 7396: objects merge member by member, `null` removes, anything else replaces),
//! so Auth0's monitoring-mode body `{"rule": {"action": {"log": true}, …}}` keeps the rule's
//! conditions and action; a write that sets `priority` gets it checked against Auth0's range
//! and the other rules (409 with Auth0's wording); `description` and `redirect_uri` keep
//! Auth0's lengths; new ids are shaped like Auth0's (`acl_` + 22 letters and digits). Files
//! may go beyond these limits (`dcr-gateway check --auth0-compat` lists where).

use serde_json::{Map, Value};

use super::audit::{diff, Change};
use super::error::{ApiError, FieldError};
use crate::acl::compat::{AUTH0_MAX_DESCRIPTION, AUTH0_MAX_REDIRECT_URI, AUTH0_PRIORITY};
use crate::acl::schema::Rule;
use crate::acl::{AclErrors, DefaultAction, Env, RuleSet};

/// Members the server maintains; a request may not set them.
const READ_ONLY: &[&str] = &["created_at", "updated_at", "tenant_id", "deleted_at"];

/// Auth0's answer when a priority is taken (its OpenAPI description of the 409).
pub const PRIORITY_TAKEN: &str = "A Network ACL with this priority number has already been created.";

/// The rules of the file, each with its effective id written in.
pub fn with_ids(rules: &[Rule]) -> Vec<Rule> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            if r.id.is_none() {
                r.id = Some(format!("rule-{i}"));
            }
            r
        })
        .collect()
}

/// A rule as the API returns it (Auth0's `NetworkAclsResponseContent`): `id` first.
pub fn view(rule: &Rule, id: &str) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id.to_string()));
    if let Ok(Value::Object(m)) = serde_json::to_value(rule) {
        for (k, v) in m {
            if k != "id" {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

/// `GET /api/v2/network-acls`: Auth0's list. No paging parameters: a plain array of every
/// rule. `page`/`per_page` page it; `include_totals=true` wraps it as
/// `{"network_acls": [...], "start", "limit", "total"}`.
pub fn list(rules: &[Rule], ids: &[&str], query: Option<&str>) -> Result<Value, ApiError> {
    let mut page: Option<usize> = None;
    let mut per_page: Option<usize> = None;
    let mut totals = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let num = |v: &str, max: usize| {
            v.parse::<usize>().ok().filter(|n| *n <= max).ok_or_else(|| {
                ApiError::bad_request("invalid_query_string", format!("{k}: expected an integer 0..={max}, got {v:?}"))
            })
        };
        match k {
            "page" => page = Some(num(v, 1_000_000)?),
            "per_page" => per_page = Some(num(v, 100)?.max(1)),
            "include_totals" => {
                totals = match v {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_query_string",
                            format!("include_totals: expected true or false, got {v:?}"),
                        ))
                    }
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query_string",
                    format!("unknown query parameter {k:?} (supported: page, per_page, include_totals)"),
                ))
            }
        }
    }
    let total = rules.len();
    let (start, limit) = match (page, per_page) {
        (None, None) => (0, total),
        (p, pp) => {
            let pp = pp.unwrap_or(50);
            (p.unwrap_or(0).saturating_mul(pp), pp)
        }
    };
    let items: Vec<Value> = rules.iter().zip(ids).skip(start).take(limit).map(|(r, id)| view(r, id)).collect();
    Ok(if totals {
        serde_json::json!({"network_acls": items, "start": start, "limit": limit, "total": total})
    } else {
        Value::Array(items)
    })
}

/// A change to the rules file.
#[derive(Debug, Clone)]
pub enum Op {
    Create(Value),
    Patch(String, Value),
    Put(String, Value),
    Delete(String),
}

impl Op {
    pub fn action(&self) -> &'static str {
        match self {
            Op::Create(_) => "network_acls.create",
            Op::Patch(..) => "network_acls.update",
            Op::Put(..) => "network_acls.replace",
            Op::Delete(_) => "network_acls.delete",
        }
    }
}

/// The new rules file, compiled.
#[derive(Debug)]
pub struct WriteOutcome {
    pub bytes: Vec<u8>,
    pub ruleset: RuleSet,
    pub id: String,
    /// The rule after the change (`None` after a delete).
    pub rule: Option<Rule>,
    pub changes: Vec<Change>,
}

fn body_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::invalid_body(vec![FieldError::new(
            "",
            format!(
                "expected a JSON object, found {}",
                if other.is_array() { "an array" } else { "another JSON value" }
            ),
        )])),
    }
}

fn check_read_only(body: &Map<String, Value>, path_id: Option<&str>) -> Result<(), ApiError> {
    let mut errors: Vec<FieldError> = READ_ONLY
        .iter()
        .filter(|k| body.contains_key(**k))
        .map(|k| FieldError::new(*k, "read-only (maintained by the gateway)"))
        .collect();
    if let (Some(path_id), Some(id)) = (path_id, body.get("id")) {
        if id.as_str() != Some(path_id) {
            errors.push(FieldError::new("id", format!("cannot be changed (the rule is {path_id:?})")));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_body(errors))
    }
}

fn find(rules: &[Rule], id: &str) -> Result<usize, ApiError> {
    rules
        .iter()
        .position(|r| r.id.as_deref() == Some(id))
        .ok_or_else(|| ApiError::not_found(format!("no network ACL with id {id:?}")))
}

fn to_value(rule: &Rule) -> Value {
    serde_json::to_value(rule).unwrap_or(Value::Null)
}

/// RFC 7396 JSON merge patch: objects merge member by member, `null` removes a member, any
/// other value (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(members) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in members {
                    if v.is_null() {
                        t.shift_remove(&k);
                    } else {
                        merge_patch(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// Auth0's limits on the members a request sets (`priority` range, `description` and
/// `redirect_uri` lengths); a rules file may go beyond them.
fn check_auth0_limits(body: &Map<String, Value>) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(p) = body.get("priority").and_then(Value::as_f64) {
        let (lo, hi) = AUTH0_PRIORITY;
        if !(lo..=hi).contains(&p) {
            errors.push(FieldError::new(
                "priority",
                format!("{p} is outside {lo}–{hi} (Auth0's range; a rules file may use any number)"),
            ));
        }
    }
    if let Some(d) = body.get("description").and_then(Value::as_str) {
        if d.chars().count() > AUTH0_MAX_DESCRIPTION {
            errors.push(FieldError::new("description", format!("longer than {AUTH0_MAX_DESCRIPTION} characters")));
        }
    }
    let uri = body.get("rule").and_then(|r| r.get("action")).and_then(|a| a.get("redirect_uri"));
    if let Some(u) = uri.and_then(Value::as_str) {
        if u.chars().count() > AUTH0_MAX_REDIRECT_URI {
            errors.push(FieldError::new(
                "rule.action.redirect_uri",
                format!("longer than {AUTH0_MAX_REDIRECT_URI} characters"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_body(errors))
    }
}

/// 409 when another rule has the priority the written rule now has.
fn check_priority_free(rules: &[Rule], index: usize) -> Result<(), ApiError> {
    let Some(mine) = rules.get(index).map(|r| r.priority) else { return Ok(()) };
    if rules.iter().enumerate().any(|(i, r)| i != index && r.priority == mine) {
        return Err(ApiError::conflict("conflict", PRIORITY_TAKEN));
    }
    Ok(())
}

/// Apply `op` to the file's rules (`current`, ids written in by [`with_ids`]) and validate the
/// result like a file load. `now` is an RFC 3339 timestamp; `new_id` makes an id for a
/// create without one.
pub fn apply(
    current: Vec<Rule>,
    op: Op,
    now: &str,
    default_action: DefaultAction,
    env: &Env,
    new_id: impl FnOnce() -> String,
) -> Result<WriteOutcome, ApiError> {
    let mut docs: Vec<Value> = current.iter().map(to_value).collect();
    let now_v = Value::String(now.to_string());
    // Whether the request sets the priority (a create always does: Auth0's default is 50).
    let mut sets_priority = true;
    let (index, id, before) = match op {
        Op::Create(body) => {
            let mut body = body_object(body)?;
            check_read_only(&body, None)?;
            check_auth0_limits(&body)?;
            let id = match body.get("id") {
                None | Some(Value::Null) => new_id(),
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(_) => {
                    return Err(ApiError::invalid_body(vec![FieldError::new("id", "expected a non-empty string")]))
                }
            };
            if current.iter().any(|r| r.id.as_deref() == Some(id.as_str())) {
                return Err(ApiError::conflict(
                    "network_acl_conflict",
                    format!("a network ACL with id {id:?} already exists"),
                ));
            }
            // `id` first, as in every response.
            let mut doc = Map::new();
            doc.insert("id".into(), Value::String(id.clone()));
            body.remove("id");
            doc.extend(body);
            doc.insert("created_at".into(), now_v.clone());
            doc.insert("updated_at".into(), now_v);
            docs.push(Value::Object(doc));
            (docs.len() - 1, id, Value::Object(Map::new()))
        }
        Op::Patch(id, body) => {
            let i = find(&current, &id)?;
            let mut body = body_object(body)?;
            check_read_only(&body, Some(&id))?;
            check_auth0_limits(&body)?;
            sets_priority = body.get("priority").is_some_and(|p| !p.is_null());
            body.remove("id");
            let before = docs[i].clone();
            merge_patch(&mut docs[i], Value::Object(body));
            if let Value::Object(doc) = &mut docs[i] {
                doc.insert("updated_at".into(), now_v);
            }
            (i, id, before)
        }
        Op::Put(id, body) => {
            let i = find(&current, &id)?;
            let body = body_object(body)?;
            check_read_only(&body, Some(&id))?;
            check_auth0_limits(&body)?;
            let before = docs[i].clone();
            let mut doc = Map::new();
            doc.insert("id".into(), Value::String(id.clone()));
            for (k, v) in body {
                if k != "id" {
                    doc.insert(k, v);
                }
            }
            if let Some(c) = before.get("created_at") {
                doc.insert("created_at".into(), c.clone());
            }
            doc.insert("updated_at".into(), now_v);
            docs[i] = Value::Object(doc);
            (i, id, before)
        }
        Op::Delete(id) => {
            let i = find(&current, &id)?;
            docs.remove(i);
            let bytes = render(&docs);
            let ruleset = load(&bytes, default_action, env, None)?;
            return Ok(WriteOutcome { bytes, ruleset, id, rule: None, changes: Vec::new() });
        }
    };
    let bytes = render(&docs);
    let ruleset = load(&bytes, default_action, env, Some(index))?;
    if sets_priority {
        check_priority_free(ruleset.rules(), index)?;
    }
    let rule = ruleset.rules().get(index).cloned();
    let after = rule.as_ref().map(to_value).unwrap_or(Value::Null);
    Ok(WriteOutcome { changes: diff(&before, &after), bytes, ruleset, id, rule })
}

/// The rules file as the API writes it: a pretty-printed JSON array, newline-terminated.
fn render(docs: &[Value]) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(docs).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Validate like a file load. Problems in the rule being written are named by their member
/// path (`rule.match.ipv4_cidrs[0]`); problems elsewhere (a duplicate id) name their rule.
fn load(bytes: &[u8], default_action: DefaultAction, env: &Env, target: Option<usize>) -> Result<RuleSet, ApiError> {
    RuleSet::load_with(bytes, default_action, env).map_err(|errs| ApiError::invalid_body(field_errors(&errs, target)))
}

fn field_errors(errs: &AclErrors, target: Option<usize>) -> Vec<FieldError> {
    errs.iter()
        .map(|e| {
            if e.index.is_some() && e.index == target {
                FieldError::new(e.field.clone(), e.message.clone())
            } else {
                FieldError::new("", format!("rules file: {e}"))
            }
        })
        .collect()
}

/// Rules file bytes → the rules with their ids written in; `Err` when the file on disk does
/// not load (then the API does not touch it).
pub fn current(bytes: &[u8], default_action: DefaultAction, env: &Env) -> Result<Vec<Rule>, AclErrors> {
    RuleSet::load_with(bytes, default_action, env).map(|rs| with_ids(rs.rules()))
}

/// A random id in the form Auth0 gives network ACLs: `acl_` and 22 letters and digits
/// (`acl_4oWrXrzhXSpmREA3xN3PPz`; Auth0 answers 400 for ids "not a valid ACL ID in the form
/// 'acl_XXXXXXXXXXXXXXXXXXXXXX'"). 22 base-62 characters carry 131 random bits.
pub fn generate_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let tail: String = (0..22).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("acl_{tail}")
}

/// `id` has the shape of an Auth0 network ACL id.
pub fn is_auth0_id(id: &str) -> bool {
    id.strip_prefix("acl_").is_some_and(|t| t.len() == 22 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-01-02T03:04:05.000Z";

    fn rules(json: &str) -> Vec<Rule> {
        current(json.as_bytes(), DefaultAction::Allow, &Env::default()).unwrap()
    }

    fn base() -> Vec<Rule> {
        rules(
            r#"[{"active":true,"rule":{"action":{"log":true},"scope":"tenant","match":{"ipv4_cidrs":["10.0.0.0/8"]}}},
                  {"id":"b","active":true,"priority":3,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["192.0.2.0/24"]}}}]"#,
        )
    }

    fn run(op: Op) -> Result<WriteOutcome, ApiError> {
        apply(base(), op, NOW, DefaultAction::Allow, &Env::default(), || "gen-1".into())
    }

    #[test]
    fn ids_are_written_in() {
        let r = base();
        assert_eq!(r[0].id.as_deref(), Some("rule-0"));
        assert_eq!(r[1].id.as_deref(), Some("b"));
    }

    #[test]
    fn create_generates_id_and_timestamps() {
        let o = run(Op::Create(json!({"description":"x","active":true,"priority":7,"rule":{"action":{"block":true},"scope":"dcr","match":{"user_agents":["bad"]}}}))).unwrap();
        assert_eq!(o.id, "gen-1");
        let r = o.rule.unwrap();
        assert_eq!(r.created_at.as_deref(), Some(NOW));
        assert_eq!(r.updated_at.as_deref(), Some(NOW));
        assert_eq!(o.ruleset.rule_count(), 3);
        let text = String::from_utf8(o.bytes).unwrap();
        assert!(text.contains("\"id\": \"rule-0\""), "{text}");
        assert!(o.changes.iter().any(|c| c.field == "active"));
    }

    #[test]
    fn bad_rule_names_the_field() {
        let e = run(Op::Create(json!({"active":true,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["10.0.0.300/8"]}}}))).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.fields[0].field, "rule.match.ipv4_cidrs[0]");
        let e = run(Op::Create(json!({"active":true,"created_at":"x","rule":{}}))).unwrap_err();
        assert_eq!(e.fields[0].field, "created_at");
        let e = run(Op::Create(json!({"id":"b","active":true,"rule":{"action":{"block":true},"scope":"dcr"}})))
            .unwrap_err();
        assert_eq!(e.status, 409);
    }

    #[test]
    fn patch_put_delete() {
        let o = run(Op::Patch("b".into(), json!({"active": false, "priority": null}))).unwrap();
        let r = o.rule.unwrap();
        assert!(!r.active);
        assert_eq!(r.priority, 50.0);
        assert_eq!(r.rule.scope, "dcr");
        let fields: Vec<&str> = o.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["active", "priority"]);

        let o = run(Op::Put("rule-0".into(), json!({"active": true, "rule": {"action": {"allow": true}, "scope": "tenant", "not_match": {"user_agents": ["x"]}}}))).unwrap();
        let r = o.rule.unwrap();
        assert!(r.rule.match_.is_none() && r.description.is_none());
        assert_eq!(r.id.as_deref(), Some("rule-0"));

        let e = run(Op::Patch("b".into(), json!({"id": "c"}))).unwrap_err();
        assert_eq!(e.fields[0].field, "id");
        assert_eq!(run(Op::Patch("zz".into(), json!({}))).unwrap_err().status, 404);

        let o = run(Op::Delete("rule-0".into())).unwrap();
        assert_eq!(o.ruleset.rule_count(), 1);
        assert_eq!(o.ruleset.rules()[0].id.as_deref(), Some("b"));
    }

    #[test]
    fn list_shapes() {
        let r = base();
        let ids: Vec<&str> = r.iter().map(|r| r.id.as_deref().unwrap()).collect();
        let all = list(&r, &ids, None).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 2);
        assert_eq!(all[0]["id"], "rule-0");
        let paged = list(&r, &ids, Some("page=1&per_page=1&include_totals=true")).unwrap();
        assert_eq!(paged["total"], 2);
        assert_eq!(paged["start"], 1);
        assert_eq!(paged["network_acls"][0]["id"], "b");
        assert!(list(&r, &ids, Some("per_page=1000")).is_err());
        assert!(list(&r, &ids, Some("q=x")).is_err());
    }

    #[test]
    fn generated_ids_are_shaped_like_auth0s() {
        let id = generate_id();
        assert!(is_auth0_id(&id), "{id}");
        assert_ne!(id, generate_id());
        assert!(is_auth0_id("acl_4oWrXrzhXSpmREA3xN3PPz"));
        assert!(!is_auth0_id("acl_4oWrXrzhXSpmREA3xN3PP") && !is_auth0_id("rule-0"));
    }

    #[test]
    fn patch_merges_members_as_auth0_does() {
        // Auth0's monitoring-mode body: the action gains log, the conditions stay.
        let o =
            run(Op::Patch("b".into(), json!({"rule": {"action": {"log": true}, "scope": "authentication"}}))).unwrap();
        let r = o.rule.unwrap();
        assert_eq!(r.rule.action.block, Some(true));
        assert_eq!(r.rule.action.log, Some(true));
        assert_eq!(r.rule.scope, "authentication");
        assert_eq!(r.rule.match_.unwrap().ipv4_cidrs.unwrap(), ["192.0.2.0/24"]);
        // Lists are replaced whole; null removes a member.
        let o = run(Op::Patch(
            "b".into(),
            json!({"description": "d", "rule": {"match": {"ipv4_cidrs": ["198.51.100.0/24"], "asns": null}}}),
        ))
        .unwrap();
        assert_eq!(o.rule.unwrap().rule.match_.unwrap().ipv4_cidrs.unwrap(), ["198.51.100.0/24"]);
        let mut v = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge_patch(&mut v, json!({"a": {"b": null, "c": [3]}, "e": {"f": 1}}));
        assert_eq!(v, json!({"a": {"c": [3]}, "d": 1, "e": {"f": 1}}));
    }

    #[test]
    fn auth0_limits_on_what_a_request_sets() {
        let body = |extra: Value| {
            let mut b = json!({"active": true, "rule": {"action": {"block": true}, "scope": "dcr", "match": {"user_agents": ["x"]}}});
            merge_patch(&mut b, extra);
            b
        };
        let e = run(Op::Create(body(json!({"priority": 3})))).unwrap_err();
        assert_eq!((e.status.as_u16(), e.message.as_str()), (409, PRIORITY_TAKEN));
        assert_eq!(run(Op::Create(body(json!({"priority": 101})))).unwrap_err().fields[0].field, "priority");
        assert_eq!(run(Op::Create(body(json!({"priority": 0.5})))).unwrap_err().status, 400);
        let long = "d".repeat(256);
        assert_eq!(
            run(Op::Create(body(json!({"priority": 4, "description": long})))).unwrap_err().fields[0].field,
            "description"
        );
        let uri = format!("https://example.com/{}", "p".repeat(2000));
        let e = run(Op::Create(body(
            json!({"priority": 4, "rule": {"action": {"block": null, "redirect": true, "redirect_uri": uri}}}),
        )))
        .unwrap_err();
        assert_eq!(e.fields[0].field, "rule.action.redirect_uri");
        assert!(run(Op::Create(body(json!({"priority": 4})))).is_ok());
        // Moving a rule onto a taken priority is refused; a PATCH that leaves it alone is not
        // (rule-0 has the default 50, as a new rule without priority would).
        assert_eq!(run(Op::Patch("rule-0".into(), json!({"priority": 3}))).unwrap_err().status, 409);
        assert!(run(Op::Patch("rule-0".into(), json!({"description": "x"}))).is_ok());
        assert_eq!(run(Op::Create(body(json!({})))).unwrap_err().status, 409);
    }
}
