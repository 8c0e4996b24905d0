//! `dcr-gateway check --auth0-compat`: what Auth0's Management API would refuse in a rule file
//! the gateway loads, so that a team can push the file back to Auth0.
//!
//! The gateway's files go beyond Auth0's limits on purpose (100k entries, any priority); this
//! lists, rule by rule, each place where they do. The limits are those of Auth0's
//! `network-acls` OpenAPI description and the Terraform `auth0_network_acl` resource (see
//! `docs/acl.md`, "Limits compared with Auth0"). Pure.

use std::collections::{HashMap, HashSet};

use super::error::AclError;
use super::managed::AUTH0_LIST_NAMES;
use super::schema::{Conditions, Rule};

/// Rules a tenant holds (Enterprise with the Attack Protection add-on).
pub const AUTH0_MAX_RULES: usize = 10;
/// `description` (`maxLength` in the OpenAPI description).
pub const AUTH0_MAX_DESCRIPTION: usize = 255;
/// `rule.action.redirect_uri`.
pub const AUTH0_MAX_REDIRECT_URI: usize = 2000;
/// `priority` range.
pub const AUTH0_PRIORITY: (f64, f64) = (1.0, 100.0);

/// Entries Auth0 takes per signal list.
pub fn auth0_max_entries(signal: &str) -> usize {
    match signal {
        "hostnames" | "connecting_ipv4_cidrs" | "connecting_ipv6_cidrs" => 20,
        _ => 10,
    }
}

fn lists(c: &Conditions) -> Vec<(&'static str, Vec<String>)> {
    let s = |v: &Option<Vec<String>>| v.clone();
    let mut out: Vec<(&'static str, Option<Vec<String>>)> = vec![
        ("asns", c.asns.as_ref().map(|v| v.iter().map(u32::to_string).collect())),
        ("geo_country_codes", s(&c.geo_country_codes)),
        ("geo_subdivision_codes", s(&c.geo_subdivision_codes)),
        ("ipv4_cidrs", s(&c.ipv4_cidrs)),
        ("ipv6_cidrs", s(&c.ipv6_cidrs)),
        ("ja3_fingerprints", s(&c.ja3_fingerprints)),
        ("ja4_fingerprints", s(&c.ja4_fingerprints)),
        ("user_agents", s(&c.user_agents)),
        ("hostnames", s(&c.hostnames)),
        ("connecting_ipv4_cidrs", s(&c.connecting_ipv4_cidrs)),
        ("connecting_ipv6_cidrs", s(&c.connecting_ipv6_cidrs)),
        ("auth0_managed", s(&c.auth0_managed)),
    ];
    if let Some(h) = &c.http_message_signature {
        out.push(("http_message_signature.keys", Some(h.keys.iter().map(|k| k.id.clone()).collect())));
    }
    out.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))).collect()
}

/// Every reason Auth0 would refuse each rule (`rules` with their effective ids, file order),
/// plus file-level ones (no index). Empty: the file can be pushed to Auth0 as it is.
pub fn auth0_compat(rules: &[Rule], ids: &[&str]) -> Vec<AclError> {
    let mut out = Vec::new();
    let mut priorities: HashMap<u64, usize> = HashMap::new();
    for (index, rule) in rules.iter().enumerate() {
        let id = ids.get(index).map(|s| s.to_string());
        let mut push = |field: &str, message: String| {
            out.push(AclError { index: Some(index), id: id.clone(), field: field.into(), message })
        };
        match &rule.description {
            None => push("description", "missing: Auth0 requires a description".into()),
            Some(d) if d.chars().count() > AUTH0_MAX_DESCRIPTION => push(
                "description",
                format!("{} characters; Auth0 takes at most {AUTH0_MAX_DESCRIPTION}", d.chars().count()),
            ),
            _ => {}
        }
        let (lo, hi) = AUTH0_PRIORITY;
        if !(lo..=hi).contains(&rule.priority) {
            push("priority", format!("{} is outside Auth0's range {lo}–{hi}", rule.priority));
        }
        match priorities.get(&rule.priority.to_bits()) {
            Some(first) => push(
                "priority",
                format!(
                    "{} is also the priority of rule {first}: Auth0 answers 409 \"A Network ACL with this \
                     priority number has already been created.\"",
                    rule.priority
                ),
            ),
            None => {
                priorities.insert(rule.priority.to_bits(), index);
            }
        }
        if rule.rule.scope == "dcr" {
            push(
                "rule.scope",
                "\"dcr\" is how Auth0's documentation writes it; its API takes \"dynamic_client_registration\"".into(),
            );
        }
        if let Some(uri) = &rule.rule.action.redirect_uri {
            if uri.chars().count() > AUTH0_MAX_REDIRECT_URI {
                push(
                    "rule.action.redirect_uri",
                    format!("{} characters; Auth0 takes at most {AUTH0_MAX_REDIRECT_URI}", uri.chars().count()),
                );
            }
        }
        for (side, cond) in [("rule.match", &rule.rule.match_), ("rule.not_match", &rule.rule.not_match)] {
            let Some(c) = cond else { continue };
            if c.client_id_hosts.is_some() {
                push(
                    &format!("{side}.client_id_hosts"),
                    "a dcr-gateway extension (the host of a URL client_id): Auth0 has no such signal and refuses the \
                     member"
                        .into(),
                );
            }
            for (name, values) in lists(c) {
                let field = format!("{side}.{name}");
                let max = auth0_max_entries(name);
                if values.is_empty() {
                    push(&field, "empty list: Auth0 takes 1 or more items (leave the member out instead)".into());
                }
                if values.len() > max {
                    push(&field, format!("{} entries; Auth0 takes at most {max}", values.len()));
                }
                let mut seen = HashSet::new();
                if let Some(dup) = values.iter().find(|v| !seen.insert(v.as_str())) {
                    push(&field, format!("{dup:?} is listed twice: Auth0 refuses lists whose items are not unique"));
                }
                if name == "auth0_managed" {
                    let bad: Vec<&str> =
                        values.iter().map(String::as_str).filter(|v| !AUTH0_LIST_NAMES.contains(v)).collect();
                    if !bad.is_empty() {
                        push(
                            &field,
                            format!(
                                "Invalid curated list name(s): {}. Allowed curated list names are: {}",
                                bad.join(", "),
                                AUTH0_LIST_NAMES.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
    if rules.len() > AUTH0_MAX_RULES {
        out.push(AclError::file(
            "",
            format!(
                "{} rules: an Auth0 tenant holds at most {AUTH0_MAX_RULES} (Enterprise with Attack Protection)",
                rules.len()
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{DefaultAction, RuleSet};

    fn problems(json: &str) -> Vec<String> {
        let rs = RuleSet::load(json.as_bytes(), DefaultAction::Allow).unwrap();
        let ids: Vec<&str> = rs.rule_ids().collect();
        auth0_compat(rs.rules(), &ids).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_file_auth0_takes_has_no_problem() {
        let ok = r#"[{"description":"d","active":true,"priority":1,
            "rule":{"action":{"block":true},"scope":"dynamic_client_registration","match":{"ipv4_cidrs":["10.0.0.0/8"]}}}]"#;
        assert!(problems(ok).is_empty(), "{:?}", problems(ok));
    }

    #[test]
    fn client_id_hosts_is_marked_as_an_extension() {
        let json = r#"[{"description":"d","active":true,"priority":1,
            "rule":{"action":{"block":true},"scope":"authentication","match":{"client_id_hosts":["*.evil.example"]}}}]"#;
        let p = problems(json);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("rule.match.client_id_hosts: a dcr-gateway extension"), "{p:?}");
    }

    #[test]
    fn every_refusal_is_named() {
        let cidrs: Vec<String> = (0..11).map(|i| format!("\"10.0.{i}.0/24\"")).collect();
        let json = format!(
            r#"[{{"id":"a","active":true,"priority":500,
                 "rule":{{"action":{{"block":true}},"scope":"dcr","match":{{"ipv4_cidrs":[{}],"asns":[]}}}}}},
                {{"id":"b","description":"{}","active":true,"priority":50,
                 "rule":{{"action":{{"redirect":true,"redirect_uri":"https://x.example/{}"}},"scope":"tenant",
                 "match":{{"auth0_managed":["auth0.bogus","auth0.low_reputation","auth0.low_reputation"]}}}}}},
                {{"id":"c","description":"x","active":true,
                 "rule":{{"action":{{"log":true}},"scope":"tenant","match":{{"user_agents":["u"]}}}}}}]"#,
            cidrs.join(","),
            "d".repeat(256),
            "p".repeat(2000)
        );
        let env =
            crate::acl::Env { unknown_managed: crate::acl::UnknownManagedLists::NeverMatch, ..Default::default() };
        let rs = RuleSet::load_with(json.as_bytes(), DefaultAction::Allow, &env).unwrap();
        let ids: Vec<&str> = rs.rule_ids().collect();
        let p: Vec<String> = auth0_compat(rs.rules(), &ids).iter().map(ToString::to_string).collect();
        for want in [
            "rule 0 (id \"a\"): description: missing",
            "rule 0 (id \"a\"): priority: 500 is outside Auth0's range 1–100",
            "rule 0 (id \"a\"): rule.scope: \"dcr\"",
            "rule 0 (id \"a\"): rule.match.ipv4_cidrs: 11 entries; Auth0 takes at most 10",
            "rule 0 (id \"a\"): rule.match.asns: empty list",
            "rule 1 (id \"b\"): description: 256 characters",
            "rule 1 (id \"b\"): rule.action.redirect_uri: 2018 characters",
            "rule 1 (id \"b\"): rule.match.auth0_managed: \"auth0.low_reputation\" is listed twice",
            "rule 1 (id \"b\"): rule.match.auth0_managed: Invalid curated list name(s): auth0.bogus.",
            "rule 2 (id \"c\"): priority: 50 is also the priority of rule 1",
        ] {
            assert!(p.iter().any(|l| l.starts_with(want)), "missing {want:?} in {p:#?}");
        }
        assert_eq!(p.len(), 10, "{p:#?}");
    }
}
