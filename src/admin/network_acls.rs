//! `/api/v2/network-acls`: Auth0's network ACL resource over the rules file. Pure: the
//! handlers in `mod.rs` read and write the file; this computes the new file.
//!
//! A write builds the whole new rules document and validates it with [`RuleSet::load`] —
//! the very function a file load uses — so the API can store nothing a reload would refuse.
//! Rules without an id are known by their position (`rule-<index>`); the first write through
//! the API writes those ids into the file, so an id keeps naming the same rule after a delete.

use serde_json::{Map, Value};

use super::audit::{diff, Change};
use super::error::{ApiError, FieldError};
use crate::acl::schema::Rule;
use crate::acl::{AclErrors, DefaultAction, RuleSet};

/// Members the server maintains; a request may not set them.
const READ_ONLY: &[&str] = &["created_at", "updated_at"];

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
pub struct Outcome {
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

/// Apply `op` to the file's rules (`current`, ids written in by [`with_ids`]) and validate the
/// result like a file load. `now` is an RFC 3339 timestamp; `new_id` makes an id for a
/// create without one.
pub fn apply(
    current: Vec<Rule>,
    op: Op,
    now: &str,
    default_action: DefaultAction,
    new_id: impl FnOnce() -> String,
) -> Result<Outcome, ApiError> {
    let mut docs: Vec<Value> = current.iter().map(to_value).collect();
    let now_v = Value::String(now.to_string());
    let (index, id, before) = match op {
        Op::Create(body) => {
            let mut body = body_object(body)?;
            check_read_only(&body, None)?;
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
            let body = body_object(body)?;
            check_read_only(&body, Some(&id))?;
            let before = docs[i].clone();
            let Value::Object(doc) = &mut docs[i] else { unreachable!("a rule serializes to an object") };
            for (k, v) in body {
                if v.is_null() && matches!(k.as_str(), "description" | "priority") {
                    doc.shift_remove(&k);
                } else {
                    doc.insert(k, v);
                }
            }
            doc.insert("updated_at".into(), now_v);
            (i, id, before)
        }
        Op::Put(id, body) => {
            let i = find(&current, &id)?;
            let body = body_object(body)?;
            check_read_only(&body, Some(&id))?;
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
            let ruleset = load(&bytes, default_action, None)?;
            return Ok(Outcome { bytes, ruleset, id, rule: None, changes: Vec::new() });
        }
    };
    let bytes = render(&docs);
    let ruleset = load(&bytes, default_action, Some(index))?;
    let rule = ruleset.rules().get(index).cloned();
    let after = rule.as_ref().map(to_value).unwrap_or(Value::Null);
    Ok(Outcome { changes: diff(&before, &after), bytes, ruleset, id, rule })
}

/// The rules file as the API writes it: a pretty-printed JSON array, newline-terminated.
fn render(docs: &[Value]) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(docs).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Validate like a file load. Problems in the rule being written are named by their member
/// path (`rule.match.ipv4_cidrs[0]`); problems elsewhere (a duplicate id) name their rule.
fn load(bytes: &[u8], default_action: DefaultAction, target: Option<usize>) -> Result<RuleSet, ApiError> {
    RuleSet::load(bytes, default_action).map_err(|errs| ApiError::invalid_body(field_errors(&errs, target)))
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
pub fn current(bytes: &[u8], default_action: DefaultAction) -> Result<Vec<Rule>, AclErrors> {
    RuleSet::load(bytes, default_action).map(|rs| with_ids(rs.rules()))
}

/// A random id in the form Auth0 uses for network ACLs (a UUID v4).
pub fn generate_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-01-02T03:04:05.000Z";

    fn rules(json: &str) -> Vec<Rule> {
        current(json.as_bytes(), DefaultAction::Allow).unwrap()
    }

    fn base() -> Vec<Rule> {
        rules(
            r#"[{"active":true,"rule":{"action":{"log":true},"scope":"tenant","match":{"ipv4_cidrs":["10.0.0.0/8"]}}},
                  {"id":"b","active":true,"priority":3,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["192.0.2.0/24"]}}}]"#,
        )
    }

    fn run(op: Op) -> Result<Outcome, ApiError> {
        apply(base(), op, NOW, DefaultAction::Allow, || "gen-1".into())
    }

    #[test]
    fn ids_are_written_in() {
        let r = base();
        assert_eq!(r[0].id.as_deref(), Some("rule-0"));
        assert_eq!(r[1].id.as_deref(), Some("b"));
    }

    #[test]
    fn create_generates_id_and_timestamps() {
        let o = run(Op::Create(json!({"description":"x","active":true,"rule":{"action":{"block":true},"scope":"dcr","match":{"user_agents":["bad"]}}}))).unwrap();
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
    fn generated_ids_look_like_uuids() {
        let id = generate_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
