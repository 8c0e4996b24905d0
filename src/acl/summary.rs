//! The periodic ACL summary, after Auth0's `acls_summary` tenant log event (emitted every 10
//! minutes per rule with its matches): one log line per interval with the matches of every
//! rule and action since the previous line. Pure: the caller reads the running totals (the
//! `dcr_gateway_acl_matches_total{rule,action}` counters) and logs the line.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::RuleSet;

/// Running totals by `(rule id, action)`, as the counters hold them.
pub type Totals = BTreeMap<(String, String), u64>;

/// Matches since `previous`, by `(rule id, action)`; pairs without new matches are left out.
/// A total below the previous one (a counter reset) counts from zero.
pub fn deltas(previous: &Totals, now: &Totals) -> Vec<(String, String, u64)> {
    now.iter()
        .filter_map(|((rule, action), &n)| {
            let before = previous.get(&(rule.clone(), action.clone())).copied().unwrap_or(0);
            let d = if n >= before { n - before } else { n };
            (d > 0).then(|| (rule.clone(), action.clone(), d))
        })
        .collect()
}

/// The summary line's fields: `interval_seconds`, `total_matches` and `rules`, one entry per
/// rule and recorded action with Auth0's `acls_summary` members where the rule still exists
/// (`acl_id`, `description`, `priority`, `action` as written) and `matches`.
/// `recorded` is the action counted: the rule's action when executed, `log` for a rule in
/// monitoring mode (its action recorded, not executed).
pub fn summary(rules: &RuleSet, interval_seconds: u64, deltas: &[(String, String, u64)]) -> Value {
    let entries: Vec<Value> = deltas
        .iter()
        .map(|(id, recorded, n)| {
            let mut e = json!({"acl_id": id, "recorded": recorded, "matches": n});
            if let Some(r) = rules.rule(id) {
                e["description"] = json!(r.description);
                // As written (`3`, not `3.0`).
                e["priority"] = serde_json::to_value(r).ok().and_then(|v| v.get("priority").cloned()).into();
                e["action"] = serde_json::to_value(&r.rule.action).unwrap_or(Value::Null);
                e["monitoring"] = json!(r.rule.action.log == Some(true));
            }
            e
        })
        .collect();
    json!({
        "interval_seconds": interval_seconds,
        "total_matches": deltas.iter().map(|(_, _, n)| n).sum::<u64>(),
        "rules": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::DefaultAction;

    fn totals(v: &[(&str, &str, u64)]) -> Totals {
        v.iter().map(|(r, a, n)| ((r.to_string(), a.to_string()), *n)).collect()
    }

    #[test]
    fn deltas_since_the_previous_line() {
        let prev = totals(&[("a", "block", 5), ("b", "log", 2)]);
        let now = totals(&[("a", "block", 7), ("b", "log", 2), ("c", "allow", 1)]);
        assert_eq!(deltas(&prev, &now), [("a".into(), "block".into(), 2), ("c".into(), "allow".into(), 1)]);
        // A counter that went back (new process) counts from zero.
        assert_eq!(deltas(&totals(&[("a", "block", 9)]), &totals(&[("a", "block", 3)])).len(), 1);
    }

    #[test]
    fn entries_carry_the_rule() {
        let rs = RuleSet::load(
            br#"[{"id":"m","description":"watch","active":true,"priority":3,
                 "rule":{"action":{"block":true,"log":true},"scope":"tenant","match":{"user_agents":["x"]}}}]"#,
            DefaultAction::Allow,
        )
        .unwrap();
        let v = summary(&rs, 600, &[("m".into(), "log".into(), 4), ("gone".into(), "block".into(), 1)]);
        assert_eq!(v["total_matches"], 5);
        assert_eq!(v["rules"][0]["action"], json!({"block": true, "log": true}));
        assert_eq!(v["rules"][0]["monitoring"], true);
        assert_eq!(v["rules"][0]["priority"], 3);
        assert_eq!(v["rules"][1]["acl_id"], "gone");
        assert!(v["rules"][1].get("description").is_none());
    }
}
