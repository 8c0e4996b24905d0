//! The audit line of an admin change: who (the token's label, never the token), what
//! (`network_acls.create`, `tenant_settings.update`, …), on which id, which members changed,
//! and the file's SHA-256 before and after. Written through the same `AuditLog` as the
//! proxy's lines, told apart by `"scope": "admin"`.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Serialize)]
pub struct AdminAuditLine {
    pub timestamp: String,
    pub request_id: String,
    /// Always `"admin"`.
    pub scope: &'static str,
    pub method: String,
    pub path: String,
    pub client_ip: String,
    /// The label of the admin token that made the change.
    pub actor: String,
    pub action: &'static str,
    /// The rule id, for network ACL changes.
    pub target: Option<String>,
    pub file: String,
    pub sha256_before: String,
    pub sha256_after: String,
    pub changes: Vec<Change>,
    pub status: u16,
}

/// One changed member. `from`/`to` are given for scalar values only (booleans, numbers,
/// strings, null); lists and objects are named, not copied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

fn scalar(v: Option<&Value>) -> Option<Value> {
    match v {
        Some(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Null)) => Some(v.clone()),
        _ => None,
    }
}

impl Change {
    pub fn new(field: impl Into<String>, from: Option<&Value>, to: Option<&Value>) -> Change {
        Change { field: field.into(), from: scalar(from), to: scalar(to) }
    }
}

/// Members that differ between two JSON objects (a rule before and after), one level into
/// `rule` (`rule.action`, `rule.match`, …). Bookkeeping members are left out.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for k in keys {
        if !seen.insert(k.as_str()) || k == "created_at" || k == "updated_at" {
            continue;
        }
        let (x, y) = (b.get(k), a.get(k));
        if x == y {
            continue;
        }
        if k == "rule" && (x.is_some_and(Value::is_object) || y.is_some_and(Value::is_object)) {
            out.extend(diff(x.unwrap_or(&Value::Null), y.unwrap_or(&Value::Null)).into_iter().map(|mut c| {
                c.field = format!("rule.{}", c.field);
                c
            }));
        } else {
            out.push(Change::new(k.clone(), x, y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_members_and_copies_scalars_only() {
        let before = json!({"id": "a", "active": true, "priority": 5, "rule": {"action": {"block": true}, "scope": "dcr", "match": {"ipv4_cidrs": ["1.2.3.4"]}}, "updated_at": "x"});
        let after = json!({"id": "a", "active": false, "description": "d", "rule": {"action": {"block": true}, "scope": "tenant", "match": {"ipv4_cidrs": ["5.6.7.8"]}}, "updated_at": "y"});
        let d = diff(&before, &after);
        let fields: Vec<&str> = d.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["active", "priority", "rule.scope", "rule.match", "description"]);
        assert_eq!(d[0].from, Some(json!(true)));
        assert_eq!(d[3].from, None);
        assert_eq!(d[4].to, Some(json!("d")));
    }
}
