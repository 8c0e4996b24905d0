use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::schema::{Action, Conditions, Rule, RuleBody};
use super::*;
use crate::scope::Scope;
use crate::signals::Signals;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sig(client: &str) -> Signals {
    Signals::from_ip(ip(client), ip(client))
}

fn load(v: serde_json::Value) -> RuleSet {
    load_default(v, DefaultAction::Allow)
}

fn load_default(v: serde_json::Value, d: DefaultAction) -> RuleSet {
    match RuleSet::load(v.to_string().as_bytes(), d) {
        Ok(r) => r,
        Err(e) => panic!("load failed:\n{e}"),
    }
}

fn load_err(v: serde_json::Value) -> AclErrors {
    match RuleSet::load(v.to_string().as_bytes(), DefaultAction::Allow) {
        Ok(_) => panic!("expected errors for {v}"),
        Err(e) => e,
    }
}

fn rule(id: &str, prio: f64, action: serde_json::Value, m: serde_json::Value) -> serde_json::Value {
    json!({"id": id, "active": true, "priority": prio,
           "rule": {"action": action, "scope": "tenant", "match": m}})
}

fn rule_not(id: &str, prio: f64, action: serde_json::Value, n: serde_json::Value) -> serde_json::Value {
    json!({"id": id, "active": true, "priority": prio,
           "rule": {"action": action, "scope": "tenant", "not_match": n}})
}

fn block() -> serde_json::Value {
    json!({"block": true})
}
fn allow() -> serde_json::Value {
    json!({"allow": true})
}
fn log() -> serde_json::Value {
    json!({"log": true})
}

/// (decision, deciding rule) as strings for terse asserts.
fn eval(rs: &RuleSet, scope: Scope, s: &Signals) -> (String, Option<String>) {
    let v = rs.evaluate(scope, s);
    let d = match &v.decision {
        Decision::Allow => "allow".to_string(),
        Decision::Block => "block".to_string(),
        Decision::Redirect(u) => format!("redirect {u}"),
    };
    (d, v.rule.map(|r| r.to_string()))
}

fn decided(rs: &RuleSet, s: &Signals) -> Option<String> {
    eval(rs, Scope::Dcr, s).1
}

// ------------------------------------------------------------------ semantics

#[test]
fn ipv4_and_ipv6_lists_are_one_signal_anded_with_others() {
    let rs = load(json!([rule(
        "r",
        1.0,
        block(),
        json!({
        "ipv4_cidrs": ["10.0.0.0/8"], "ipv6_cidrs": ["2001:db8::/32"], "asns": [64500]})
    )]));
    let with_asn = |a: &str, asn: u32| Signals { asn: Some(asn), ..sig(a) };
    assert_eq!(decided(&rs, &with_asn("10.1.1.1", 64500)).as_deref(), Some("r"));
    assert_eq!(decided(&rs, &with_asn("2001:db8::1", 64500)).as_deref(), Some("r"));
    assert_eq!(decided(&rs, &with_asn("10.1.1.1", 1)), None);
    assert_eq!(decided(&rs, &with_asn("11.0.0.1", 64500)), None);
    assert_eq!(decided(&rs, &with_asn("2001:db9::1", 64500)), None);
    assert_eq!(decided(&rs, &sig("10.1.1.1")), None, "asn missing: match fails");
}

#[test]
fn ipv6_only_list_does_not_match_ipv4_client() {
    let rs = load(json!([
        rule("v6", 1.0, block(), json!({"ipv6_cidrs": ["::/0"]})),
        rule_not("not-v6", 2.0, log(), json!({"ipv6_cidrs": ["::/0"]})),
    ]));
    assert_eq!(decided(&rs, &sig("2001:db8::1")).as_deref(), Some("v6"));
    let v = rs.evaluate(Scope::Dcr, &sig("1.2.3.4"));
    assert_eq!(v.rule, None);
    assert_eq!(v.logged, vec![Arc::<str>::from("not-v6")]);
}

#[test]
fn connecting_pair_tests_the_connecting_ip_only() {
    let rs = load(json!([rule(
        "c",
        1.0,
        block(),
        json!({
        "connecting_ipv4_cidrs": ["192.0.2.0/24"], "connecting_ipv6_cidrs": ["2001:db8::/32"]})
    )]));
    let s = |client: &str, conn: &str| Signals::from_ip(ip(client), ip(conn));
    assert_eq!(decided(&rs, &s("10.0.0.1", "192.0.2.7")).as_deref(), Some("c"));
    assert_eq!(decided(&rs, &s("10.0.0.1", "2001:db8::7")).as_deref(), Some("c"));
    assert_eq!(decided(&rs, &s("192.0.2.7", "10.0.0.1")), None);
    // and the client pair ignores the connecting address
    let rs = load(json!([rule("cl", 1.0, block(), json!({"ipv4_cidrs": ["192.0.2.0/24"]}))]));
    assert_eq!(decided(&rs, &s("10.0.0.1", "192.0.2.7")), None);
    assert_eq!(decided(&rs, &s("192.0.2.7", "10.0.0.1")).as_deref(), Some("cl"));
}

#[test]
fn not_match_on_a_missing_signal_holds() {
    let rs = load(json!([rule_not("outside-us", 1.0, block(), json!({"geo_country_codes": ["US"]}))]));
    let s = sig("1.2.3.4");
    assert_eq!(decided(&rs, &s).as_deref(), Some("outside-us"), "no GeoIP record is blocked");
    let us = Signals { country: Some("US".into()), ..sig("1.2.3.4") };
    assert_eq!(decided(&rs, &us), None);
    let fr = Signals { country: Some("FR".into()), ..sig("1.2.3.4") };
    assert_eq!(decided(&rs, &fr).as_deref(), Some("outside-us"));
}

#[test]
fn match_on_a_missing_signal_fails() {
    for m in [
        json!({"geo_country_codes": ["US"]}),
        json!({"geo_subdivision_codes": ["US-WA"]}),
        json!({"asns": [1]}),
        json!({"user_agents": ["*"]}),
        json!({"user_agents": ["curl"]}),
        json!({"ja3_fingerprints": ["abc"]}),
        json!({"ja4_fingerprints": ["t13d"]}),
        json!({"hostnames": ["a.example"]}),
    ] {
        let rs = load(json!([rule("m", 1.0, block(), m.clone())]));
        assert_eq!(decided(&rs, &sig("1.2.3.4")), None, "{m}");
        let rs = load(json!([rule_not("n", 1.0, block(), m.clone())]));
        assert_eq!(decided(&rs, &sig("1.2.3.4")).as_deref(), Some("n"), "{m}");
    }
}

#[test]
fn match_and_not_match_both_needed() {
    // Auth0's example: block GB except Scotland.
    let rs = load(json!([{"id": "block-gb-except-scotland", "description": "x", "active": true,
        "priority": 2, "rule": {"action": {"block": true}, "scope": "dcr",
        "match": {"geo_country_codes": ["gb"]},
        "not_match": {"geo_subdivision_codes": ["gb-sct"]}}}]));
    let s = |subs: &[&str]| Signals {
        country: Some("GB".into()),
        subdivisions: subs.iter().map(|s| s.to_string()).collect(),
        ..sig("1.2.3.4")
    };
    assert_eq!(decided(&rs, &s(&["GB-ENG"])).as_deref(), Some("block-gb-except-scotland"));
    assert_eq!(decided(&rs, &s(&[])).as_deref(), Some("block-gb-except-scotland"));
    assert_eq!(decided(&rs, &s(&["GB-SCT"])), None);
    assert_eq!(decided(&rs, &s(&["GB-XX", "GB-SCT"])), None, "any subdivision counts");
    let fr = Signals { country: Some("FR".into()), ..sig("1.2.3.4") };
    assert_eq!(decided(&rs, &fr), None);
}

#[test]
fn log_rules_are_recorded_in_order_and_evaluation_continues() {
    let rs = load(json!([
        rule("block-all", 5.0, block(), json!({"ipv4_cidrs": ["0.0.0.0/0"]})),
        rule("log-b", 2.0, log(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
        rule("log-a", 1.0, log(), json!({"ipv4_cidrs": ["10.1.0.0/16"]})),
        rule("log-late", 9.0, log(), json!({"ipv4_cidrs": ["0.0.0.0/0"]})),
    ]));
    let v = rs.evaluate(Scope::Dcr, &sig("10.1.2.3"));
    assert_eq!(v.decision, Decision::Block);
    assert_eq!(v.rule.as_deref(), Some("block-all"));
    let logged: Vec<&str> = v.logged.iter().map(|s| &**s).collect();
    assert_eq!(logged, ["log-a", "log-b"], "log rules after the decision are not reached");
    // only logs match → default applies, logs still reported
    let rs = load(json!([
        rule("l1", 1.0, log(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
        rule("l2", 1.0, log(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
    ]));
    let v = rs.evaluate(Scope::Dcr, &sig("10.9.9.9"));
    assert_eq!((v.decision, v.rule), (Decision::Allow, None));
    assert_eq!(v.logged.len(), 2);
}

#[test]
fn priority_ascending_and_ties_keep_file_order() {
    let m = json!({"ipv4_cidrs": ["10.0.0.0/8"]});
    let rs = load(json!([
        rule("late", 3.0, block(), m.clone()),
        rule("tie-first", 1.5, allow(), m.clone()),
        rule("tie-second", 1.5, block(), m.clone()),
    ]));
    assert_eq!(decided(&rs, &sig("10.0.0.1")).as_deref(), Some("tie-first"));
    let rs = load(json!([rule("b", 1.0, block(), m.clone()), rule("a", 0.0, allow(), m.clone()),]));
    assert_eq!(decided(&rs, &sig("10.0.0.1")).as_deref(), Some("a"));
    // default priority is 50
    let rs = load(json!([
        {"id": "default-prio", "active": true, "rule": {"action": {"block": true},
          "scope": "tenant", "match": {"ipv4_cidrs": ["10.0.0.0/8"]}}},
        rule("p49", 49.0, allow(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
    ]));
    assert_eq!(decided(&rs, &sig("10.0.0.1")).as_deref(), Some("p49"));
}

#[test]
fn inactive_rules_are_ignored() {
    let mut r = rule("off", 1.0, block(), json!({"ipv4_cidrs": ["10.0.0.0/8"]}));
    r["active"] = json!(false);
    let rs = load(json!([r, rule("on", 2.0, log(), json!({"ipv4_cidrs": ["10.0.0.0/8"]}))]));
    let v = rs.evaluate(Scope::Dcr, &sig("10.0.0.1"));
    assert_eq!(v.rule, None);
    assert_eq!(v.logged, vec![Arc::<str>::from("on")]);
    assert_eq!(rs.rule_count(), 2);
    assert_eq!(rs.active_rule_count(), 1);
    assert_eq!(rs.rule_ids().collect::<Vec<_>>(), ["off", "on"]);
}

#[test]
fn scope_coverage() {
    let cases = [
        ("tenant", [true, true, true]),
        ("authentication", [true, false, true]),
        ("management", [false, true, false]),
        ("dcr", [true, false, false]),
        ("dynamic_client_registration", [true, false, false]),
    ];
    for (scope, expect) in cases {
        let rs = load(json!([{"id": "s", "active": true, "priority": 1,
            "rule": {"action": {"block": true}, "scope": scope,
                     "match": {"ipv4_cidrs": ["0.0.0.0/0"]}}}]));
        for (req, want) in [Scope::Dcr, Scope::Management, Scope::Authentication].into_iter().zip(expect) {
            let got = eval(&rs, req, &sig("1.2.3.4")).1.is_some();
            assert_eq!(got, want, "rule scope {scope}, request {req}");
        }
    }
}

#[test]
fn ipv4_mapped_addresses_count_as_ipv4() {
    let rs = load(json!([
        rule("v4", 1.0, block(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
        rule("mapped-v6", 2.0, block(), json!({"ipv6_cidrs": ["::ffff:192.168.0.0/112"]})),
        rule("mapped-in-v4", 3.0, block(), json!({"ipv4_cidrs": ["::ffff:172.16.0.1"]})),
    ]));
    // Signals built by hand without folding still fold in the engine.
    let raw = |a: &str| Signals { client_ip: ip(a), ..sig("127.0.0.1") };
    assert_eq!(decided(&rs, &raw("::ffff:10.1.2.3")).as_deref(), Some("v4"));
    assert_eq!(decided(&rs, &sig("::ffff:10.1.2.3")).as_deref(), Some("v4"));
    assert_eq!(decided(&rs, &sig("192.168.7.7")).as_deref(), Some("mapped-v6"));
    assert_eq!(decided(&rs, &raw("::ffff:192.168.7.7")).as_deref(), Some("mapped-v6"));
    assert_eq!(decided(&rs, &sig("172.16.0.1")).as_deref(), Some("mapped-in-v4"));
    assert_eq!(decided(&rs, &sig("172.16.0.2")), None);
}

#[test]
fn single_addresses_and_host_bits() {
    let rs = load(json!([
        rule("host", 1.0, block(), json!({"ipv4_cidrs": ["203.0.113.9"], "ipv6_cidrs": ["2001:db8::9"]})),
        rule("hostbits", 2.0, log(), json!({"ipv4_cidrs": ["10.1.2.3/8"]})),
    ]));
    assert_eq!(decided(&rs, &sig("203.0.113.9")).as_deref(), Some("host"));
    assert_eq!(decided(&rs, &sig("203.0.113.10")), None);
    assert_eq!(decided(&rs, &sig("2001:db8::9")).as_deref(), Some("host"));
    assert_eq!(decided(&rs, &sig("2001:db8::a")), None);
    let v = rs.evaluate(Scope::Dcr, &sig("10.200.0.1"));
    assert_eq!(v.logged.len(), 1, "10.1.2.3/8 is normalized to 10.0.0.0/8");
}

#[test]
fn user_agent_wildcards() {
    let rs = load(json!([
        rule("curl", 1.0, block(), json!({"user_agents": ["curl/*"]})),
        rule("bots", 2.0, block(), json!({"user_agents": ["*bot*"]})),
        rule("exact", 3.0, block(), json!({"user_agents": ["Python-Requests/2.31"]})),
        rule_not("no-mozilla", 4.0, log(), json!({"user_agents": ["mozilla/*"]})),
    ]));
    let ua = |u: &str| Signals { user_agent: Some(u.into()), ..sig("1.2.3.4") };
    assert_eq!(decided(&rs, &ua("curl/8.4.0")).as_deref(), Some("curl"));
    assert_eq!(decided(&rs, &ua("CURL/7")).as_deref(), Some("curl"));
    assert_eq!(decided(&rs, &ua("libcurl/7")), None);
    assert_eq!(decided(&rs, &ua("Mozilla/5.0 (compatible; Googlebot/2.1)")).as_deref(), Some("bots"));
    assert_eq!(decided(&rs, &ua("python-requests/2.31")).as_deref(), Some("exact"));
    assert_eq!(decided(&rs, &ua("python-requests/2.31.0")), None);
    assert_eq!(rs.evaluate(Scope::Dcr, &ua("Mozilla/5.0")).logged.len(), 0);
    assert_eq!(rs.evaluate(Scope::Dcr, &ua("Opera")).logged.len(), 1);
    assert_eq!(rs.evaluate(Scope::Dcr, &sig("1.2.3.4")).logged.len(), 1, "no UA: not_match holds");
}

#[test]
fn text_signals_are_case_insensitive() {
    let rs = load(json!([
        rule("host", 1.0, block(), json!({"hostnames": ["Auth.Example.COM"]})),
        rule("ja3", 2.0, block(), json!({"ja3_fingerprints": ["E7D705A3286E19EA42F587B344EE6865"]})),
        rule("ja4", 3.0, block(), json!({"ja4_fingerprints": ["t13d1516h2_8daaf6152771_b186095e22b6"]})),
        rule("asn", 4.0, block(), json!({"asns": [64500, 64501]})),
        rule("country", 5.0, block(), json!({"geo_country_codes": ["de", "At"]})),
    ]));
    let base = sig("1.2.3.4");
    let host = Signals { hostname: Some("auth.example.com".into()), ..base.clone() };
    assert_eq!(decided(&rs, &host).as_deref(), Some("host"));
    let host = Signals { hostname: Some("AUTH.example.com".into()), ..base.clone() };
    assert_eq!(decided(&rs, &host).as_deref(), Some("host"));
    let ja3 = Signals { ja3: Some("e7d705a3286e19ea42f587b344ee6865".into()), ..base.clone() };
    assert_eq!(decided(&rs, &ja3).as_deref(), Some("ja3"));
    let ja4 = Signals { ja4: Some("T13D1516H2_8DAAF6152771_B186095E22B6".into()), ..base.clone() };
    assert_eq!(decided(&rs, &ja4).as_deref(), Some("ja4"));
    let asn = Signals { asn: Some(64501), ..base.clone() };
    assert_eq!(decided(&rs, &asn).as_deref(), Some("asn"));
    let at = Signals { country: Some("AT".into()), ..base.clone() };
    assert_eq!(decided(&rs, &at).as_deref(), Some("country"));
    let at = Signals { country: Some("at".into()), ..base.clone() };
    assert_eq!(decided(&rs, &at).as_deref(), Some("country"));
}

#[test]
fn default_action_block_and_redirect() {
    let rs = load_default(
        json!([{"id": "go", "active": true, "priority": 1, "rule": {
            "action": {"redirect": true, "redirect_uri": "https://example.com/denied"},
            "scope": "dcr", "match": {"geo_country_codes": ["KP"]}}}]),
        DefaultAction::Block,
    );
    let kp = Signals { country: Some("KP".into()), ..sig("1.2.3.4") };
    assert_eq!(eval(&rs, Scope::Dcr, &kp), ("redirect https://example.com/denied".into(), Some("go".into())));
    assert_eq!(eval(&rs, Scope::Dcr, &sig("1.2.3.4")), ("block".into(), None));
    assert_eq!(eval(&rs, Scope::Management, &kp), ("block".into(), None));
    let empty = RuleSet::empty(DefaultAction::Block);
    assert_eq!(eval(&empty, Scope::Dcr, &sig("1.2.3.4")), ("block".into(), None));
    let empty = RuleSet::empty(DefaultAction::Allow);
    assert_eq!(eval(&empty, Scope::Dcr, &sig("1.2.3.4")), ("allow".into(), None));
    assert_eq!(empty.rule_count(), 0);
}

#[test]
fn action_flags_false_are_ignored() {
    let rs = load(json!([rule(
        "x",
        1.0,
        json!({"block": false, "allow": true, "log": null}),
        json!({"ipv4_cidrs": ["0.0.0.0/0"]})
    )]));
    assert_eq!(eval(&rs, Scope::Dcr, &sig("1.2.3.4")), ("allow".into(), Some("x".into())));
}

#[test]
fn empty_lists_are_ignored() {
    let rs = load(json!([rule(
        "x",
        1.0,
        block(),
        json!({"ipv4_cidrs": ["0.0.0.0/0"], "asns": [], "geo_country_codes": null})
    )]));
    assert_eq!(decided(&rs, &sig("1.2.3.4")).as_deref(), Some("x"));
}

/// The one decision the snapshot, the admin API and `explain` share: which signals active
/// rules use without their database.
#[test]
fn missing_databases_name_the_active_rules_per_signal() {
    use crate::acl::{CountryDatabase, MissingDatabase};
    let rs = load(json!([
        {"id": "sub", "active": true, "priority": 1, "rule": {"action": {"block": true}, "scope": "tenant",
         "match": {"geo_subdivision_codes": ["US-WA"]}}},
        {"id": "cc", "active": true, "priority": 2, "rule": {"action": {"block": true}, "scope": "tenant",
         "not_match": {"geo_country_codes": ["NL"]}}},
        {"id": "off", "active": false, "priority": 3, "rule": {"action": {"block": true}, "scope": "tenant",
         "match": {"asns": [64500]}}},
        {"id": "asn", "active": true, "priority": 4, "rule": {"action": {"block": true}, "scope": "tenant",
         "match": {"asns": [64501]}}},
    ]));
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rs.missing_databases(CountryDatabase::Absent, false),
        vec![
            MissingDatabase::Country { country: ids(&["cc"]), subdivision: ids(&["sub"]) },
            MissingDatabase::Asn { rules: ids(&["asn"]) },
        ]
    );
    let country_only = CountryDatabase::Loaded { database_type: "GeoLite2-Country", subdivisions: false };
    assert_eq!(
        rs.missing_databases(country_only, true),
        vec![MissingDatabase::Subdivisions { rules: ids(&["sub"]), database_type: "GeoLite2-Country".into() }]
    );
    let city = CountryDatabase::Loaded { database_type: "GeoIP2-City", subdivisions: true };
    assert!(rs.missing_databases(city, true).is_empty());
    assert!(rs.missing_databases(CountryDatabase::Unread, true).is_empty(), "its read error is reported instead");
    let none = load(json!([rule("x", 1.0, block(), json!({"ipv4_cidrs": ["10.0.0.0/8"]}))]));
    assert!(none.missing_databases(CountryDatabase::Absent, false).is_empty());
}

#[test]
fn generated_ids_and_introspection() {
    let rs = load(json!([
        {"active": true, "priority": 1, "rule": {"action": {"log": true}, "scope": "tenant",
         "match": {"geo_subdivision_codes": ["US-WA"], "asns": [1]}}},
        {"id": null, "active": false, "priority": 1, "rule": {"action": {"log": true},
         "scope": "tenant", "match": {"geo_country_codes": ["US"]}}},
    ]));
    assert_eq!(rs.rule_ids().collect::<Vec<_>>(), ["rule-0", "rule-1"]);
    let [country, subdivision, asn] = rs.rules_using_databases();
    assert!(country.is_empty(), "only an inactive rule uses it");
    assert_eq!((subdivision, asn), (vec!["rule-0"], vec!["rule-0"]));
    assert_eq!(rs.entry_count(), 3);
    let s = Signals { subdivisions: vec!["US-WA".into()], asn: Some(1), ..sig("1.2.3.4") };
    assert_eq!(rs.evaluate(Scope::Dcr, &s).logged, vec![Arc::<str>::from("rule-0")]);
}

#[test]
fn many_rules_use_heap_bitsets() {
    // > 2048 active rules takes the heap path; the last one decides.
    let mut rules: Vec<serde_json::Value> = (0..3000)
        .map(|i| {
            rule(
                &format!("r{i}"),
                f64::from(i),
                block(),
                json!({"ipv4_cidrs": [format!("10.{}.{}.0/24", i / 256, i % 256)]}),
            )
        })
        .collect();
    rules.push(rule("last", 5000.0, log(), json!({"ipv4_cidrs": ["0.0.0.0/0"]})));
    let rs = load(json!(rules));
    assert_eq!(decided(&rs, &sig("10.11.183.5")).as_deref(), Some("r2999"));
    assert_eq!(decided(&rs, &sig("10.0.0.5")).as_deref(), Some("r0"));
    let v = rs.evaluate(Scope::Dcr, &sig("11.0.0.1"));
    assert_eq!((v.rule, v.logged.len()), (None, 1));
}

#[test]
fn rule_set_is_send_sync_and_round_trips() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
    assert_send_sync::<Arc<RuleSet>>();
    let src = json!([{"id": "a", "description": "d", "active": true, "priority": 2.5,
        "rule": {"action": {"redirect": true, "redirect_uri": "https://x.example/"},
                 "scope": "dynamic_client_registration",
                 "match": {"ipv4_cidrs": ["10.0.0.0/8"]},
                 "not_match": {"asns": [1]}},
        "created_at": "2025-01-01T00:00:00.000Z"},
        {"active": false, "priority": 3, "rule": {"action": {"log": true}, "scope": "tenant",
         "match": {"user_agents": ["x"]}}}]);
    let rs = load(src.clone());
    let back = serde_json::to_value(rs.rules()).unwrap();
    assert_eq!(back, src);
    let again = RuleSet::from_rules(rs.rules().to_vec(), DefaultAction::Allow).unwrap();
    assert_eq!(again.rule_ids().collect::<Vec<_>>(), ["a", "rule-1"]);
    assert_eq!(serde_json::to_string(&DefaultAction::Block).unwrap(), "\"block\"");
    let d: DefaultAction = serde_json::from_str("\"allow\"").unwrap();
    assert_eq!(d, DefaultAction::Allow);
}

#[test]
fn auth0_export_loads_unchanged() {
    let export = r#"[
      {"id": "9f5d3a7b-1111-4444-8888-0123456789ab", "description": "Block DCR from TOR exit ASN",
       "active": true, "priority": 1,
       "rule": {"action": {"block": true}, "scope": "dynamic_client_registration",
                "match": {"asns": [60729]}},
       "created_at": "2025-06-01T10:00:00.000Z", "updated_at": "2025-06-02T10:00:00.000Z"},
      {"id": "9f5d3a7b-2222-4444-8888-0123456789ab", "description": "Monitor non-US",
       "active": true, "priority": 50.5,
       "rule": {"action": {"log": true}, "scope": "authentication",
                "not_match": {"geo_country_codes": ["US"]}},
       "created_at": "2025-06-01T10:00:00.000Z", "updated_at": "2025-06-01T10:00:00.000Z"}
    ]"#;
    let rs = RuleSet::load(export.as_bytes(), DefaultAction::Allow).unwrap();
    assert_eq!(rs.rule_count(), 2);
    let s = Signals { asn: Some(60729), ..sig("1.2.3.4") };
    assert_eq!(eval(&rs, Scope::Dcr, &s).0, "block");
    assert_eq!(eval(&rs, Scope::Authentication, &s).0, "allow");
    // Auth0's paged list response shape (include_totals=true) loads too.
    let paged = format!(r#"{{"network_acls": {export}, "start": 0, "limit": 50, "total": 2}}"#);
    let rs = RuleSet::load(paged.as_bytes(), DefaultAction::Allow).unwrap();
    assert_eq!(rs.rule_count(), 2);
}

// ------------------------------------------------------------------ load errors

/// Asserts there is an error for (index, id, field) whose message contains `needle`, and
/// that its Display names all three.
fn has(errs: &AclErrors, index: usize, id: Option<&str>, field: &str, needle: &str) {
    let found = errs
        .iter()
        .find(|e| e.index == Some(index) && e.id.as_deref() == id && e.field == field && e.message.contains(needle));
    let Some(e) = found else {
        panic!("no error ({index}, {id:?}, {field}, {needle:?}) in:\n{errs}");
    };
    let line = e.to_string();
    assert!(line.starts_with(&format!("rule {index}")), "{line}");
    if let Some(id) = id {
        assert!(line.contains(&format!("(id {id:?})")), "{line}");
    }
    assert!(line.contains(&format!(": {field}: ")) || field.is_empty(), "{line}");
}

#[test]
fn message_shape() {
    let errs = load_err(json!([
        rule("ok", 1.0, block(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
        rule("a", 1.0, block(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
        rule("b", 1.0, block(), json!({"ipv4_cidrs": ["10.0.0.0/8"]})),
        rule("block-x", 1.0, block(), json!({"ipv4_cidrs": ["10.0.0.0/8", "1.1.1.1", "10.0.0.300/8"]})),
    ]));
    assert_eq!(errs.to_string(), r#"rule 3 (id "block-x"): rule.match.ipv4_cidrs[2]: malformed CIDR "10.0.0.300/8""#);
}

#[test]
fn all_errors_are_collected_across_rules() {
    let errs = load_err(json!([
        {"id": "u", "active": true, "priority": 1, "bogus": 1, "rule": {"action": {"block": true},
          "scope": "tenant", "match": {"ipv4_cidrs": [], "whatever": ["x"]}, "extra": true}},
        {"id": "t", "active": "yes", "priority": "1", "rule": {"action": {"block": 1},
          "scope": 3, "match": {"asns": [-1, "AS1", 1], "ipv4_cidrs": "10.0.0.0/8"}}},
        {"id": "v", "active": true, "priority": 1, "rule": {"action": {}, "scope": "nope",
          "match": {"ipv4_cidrs": ["2001:db8::/32", "300.1.1.1"],
                    "ipv6_cidrs": ["10.0.0.0/8"],
                    "geo_country_codes": ["USA", "U1", "us"],
                    "geo_subdivision_codes": ["WA", "US-WASH", "us-wa"]}}},
        "not an object",
        {"id": "w", "active": true, "rule": {"action": {"block": true}, "scope": "nope",
          "match": {"whatever": [1], "asns": ["AS1"], "ipv4_cidrs": ["10.0.0.0/33"]}}},
    ]));
    has(&errs, 0, Some("u"), "bogus", "unknown member");
    has(&errs, 0, Some("u"), "rule.extra", "unknown member");
    has(&errs, 0, Some("u"), "rule.match.whatever", "unknown member");
    has(&errs, 1, Some("t"), "active", "expected a boolean");
    has(&errs, 1, Some("t"), "priority", "expected a number");
    has(&errs, 1, Some("t"), "rule.action.block", "expected a boolean");
    has(&errs, 1, Some("t"), "rule.scope", "expected a string");
    has(&errs, 1, Some("t"), "rule.match.asns[0]", "AS number");
    has(&errs, 1, Some("t"), "rule.match.asns[1]", "AS number");
    has(&errs, 1, Some("t"), "rule.match.ipv4_cidrs", "expected an array");
    has(&errs, 2, Some("v"), "rule.action", "no action");
    has(&errs, 2, Some("v"), "rule.scope", "unknown scope");
    has(&errs, 2, Some("v"), "rule.match.ipv4_cidrs[0]", "IPv6 range");
    has(&errs, 2, Some("v"), "rule.match.ipv4_cidrs[1]", "malformed CIDR");
    has(&errs, 2, Some("v"), "rule.match.ipv6_cidrs[0]", "IPv4 range");
    has(&errs, 2, Some("v"), "rule.match.geo_country_codes[0]", "malformed country code");
    has(&errs, 2, Some("v"), "rule.match.geo_country_codes[1]", "malformed country code");
    has(&errs, 2, Some("v"), "rule.match.geo_subdivision_codes[0]", "malformed subdivision");
    has(&errs, 2, Some("v"), "rule.match.geo_subdivision_codes[1]", "malformed subdivision");
    has(&errs, 3, Some("rule-3"), "", "expected an object");
    // value problems of a rule that also has shape problems are reported too
    has(&errs, 4, Some("w"), "rule.match.whatever", "unknown member");
    has(&errs, 4, Some("w"), "rule.match.asns[0]", "AS number");
    has(&errs, 4, Some("w"), "rule.scope", "unknown scope");
    has(&errs, 4, Some("w"), "rule.match.ipv4_cidrs[0]", "malformed CIDR");
    assert_eq!(errs.len(), 24, "{errs}");
    assert_eq!(errs.to_string().lines().count(), 24);
    // file order
    let idx: Vec<_> = errs.iter().map(|e| e.index).collect();
    let mut sorted = idx.clone();
    sorted.sort();
    assert_eq!(idx, sorted);
}

#[test]
fn action_errors() {
    let m = json!({"ipv4_cidrs": ["10.0.0.0/8"]});
    let errs = load_err(json!([
        rule("none", 1.0, json!({}), m.clone()),
        rule("two", 1.0, json!({"allow": true, "block": true}), m.clone()),
        rule("redir-no-uri", 1.0, json!({"redirect": true}), m.clone()),
        rule("redir-bad", 1.0, json!({"redirect": true, "redirect_uri": "/relative"}), m.clone()),
        rule("redir-js", 1.0, json!({"redirect": true, "redirect_uri": "javascript:alert(1)"}), m.clone()),
        rule("uri-no-redirect", 1.0, json!({"block": true, "redirect_uri": "https://x.example"}), m.clone()),
        rule("unknown", 1.0, json!({"deny": true}), m.clone()),
    ]));
    has(&errs, 0, Some("none"), "rule.action", "no action");
    has(&errs, 1, Some("two"), "rule.action", "several actions (allow, block)");
    has(&errs, 2, Some("redir-no-uri"), "rule.action.redirect_uri", "missing");
    has(&errs, 3, Some("redir-bad"), "rule.action.redirect_uri", "absolute http");
    has(&errs, 4, Some("redir-js"), "rule.action.redirect_uri", "absolute http");
    has(&errs, 5, Some("uri-no-redirect"), "rule.action.redirect_uri", "only allowed");
    has(&errs, 6, Some("unknown"), "rule.action.deny", "unknown member");
}

#[test]
fn condition_errors() {
    let errs = load_err(json!([
        {"id": "bare", "active": true, "priority": 1, "rule": {"action": {"block": true}, "scope": "tenant"}},
        {"id": "empty", "active": true, "priority": 1, "rule": {"action": {"block": true}, "scope": "tenant",
          "match": {"ipv4_cidrs": []}, "not_match": {}}},
        rule_not("bad-not", 1.0, block(), json!({"ipv6_cidrs": ["2001:db8::/129"],
            "connecting_ipv4_cidrs": ["::1"], "connecting_ipv6_cidrs": ["1.2.3.4"]})),
        rule("texts", 1.0, block(), json!({"user_agents": [""], "hostnames": ["*.example.com", "a b"],
            "ja3_fingerprints": ["x y"], "ja4_fingerprints": [""]})),
    ]));
    has(&errs, 0, Some("bare"), "rule", "no condition");
    has(&errs, 1, Some("empty"), "rule", "no condition");
    has(&errs, 2, Some("bad-not"), "rule.not_match.ipv6_cidrs[0]", "malformed CIDR");
    has(&errs, 2, Some("bad-not"), "rule.not_match.connecting_ipv4_cidrs[0]", "IPv6 range");
    has(&errs, 2, Some("bad-not"), "rule.not_match.connecting_ipv6_cidrs[0]", "IPv4 range");
    has(&errs, 3, Some("texts"), "rule.match.user_agents[0]", "empty");
    has(&errs, 3, Some("texts"), "rule.match.hostnames[0]", "wildcards");
    has(&errs, 3, Some("texts"), "rule.match.hostnames[1]", "whitespace");
    has(&errs, 3, Some("texts"), "rule.match.ja3_fingerprints[0]", "whitespace");
    has(&errs, 3, Some("texts"), "rule.match.ja4_fingerprints[0]", "empty");
}

#[test]
fn id_and_required_member_errors() {
    let m = json!({"ipv4_cidrs": ["10.0.0.0/8"]});
    let errs = load_err(json!([
        rule("dup", 1.0, block(), m.clone()),
        rule("dup", 1.0, block(), m.clone()),
        rule("rule-3", 1.0, block(), m.clone()),
        {"active": true, "rule": {"action": {"block": true}, "scope": "tenant", "match": m.clone()}},
        {"id": 7, "rule": {"scope": "tenant", "match": m.clone()}},
        rule("", 1.0, block(), m.clone()),
    ]));
    has(&errs, 1, Some("dup"), "id", "duplicate id \"dup\" (already used by rule 0)");
    has(&errs, 3, Some("rule-3"), "id", "duplicate id \"rule-3\" (already used by rule 2)");
    has(&errs, 4, None, "id", "expected a string");
    has(&errs, 4, None, "active", "missing");
    has(&errs, 4, None, "rule.action", "missing");
    has(&errs, 5, Some(""), "id", "must not be empty");
    assert!(errs.to_string().contains("rule 4: active: missing"), "{errs}");
    let e = load_err(json!({"id": 1}));
    assert_eq!(e.0[0].index, None);
    assert!(e.to_string().starts_with("id: the rules file must be a JSON array"), "{e}");
    let e = load_err(json!("x"));
    assert!(e.to_string().contains("must be a JSON array of rules; found string"), "{e}");
    let e = RuleSet::load(b"[{", DefaultAction::Allow).unwrap_err();
    assert!(e.to_string().starts_with("invalid JSON"), "{e}");
    let e = RuleSet::load(br#"[{"id": "x", "id": "y"}]"#, DefaultAction::Allow).unwrap_err();
    assert!(!e.is_empty());
}

#[test]
fn from_rules_validates_too() {
    let r = Rule {
        id: Some("x".into()),
        description: None,
        active: true,
        priority: f64::NAN,
        rule: RuleBody {
            action: Action { block: Some(true), ..Default::default() },
            scope: "tenant".into(),
            match_: Some(Conditions { ipv4_cidrs: Some(vec!["bad".into()]), ..Default::default() }),
            not_match: None,
            match_all: None,
        },
        created_at: None,
        updated_at: None,
        tenant_id: None,
        deleted_at: None,
    };
    let errs = RuleSet::from_rules(vec![r], DefaultAction::Allow).unwrap_err();
    has(&errs, 0, Some("x"), "priority", "finite");
    has(&errs, 0, Some("x"), "rule.match.ipv4_cidrs[0]", "malformed CIDR");
}

// ------------------------------------------------------------------ engine vs reference

const V4: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3",
    "10.1.2.3/8",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "10.1.2.128/25",
];
const V6: &[&str] =
    &["2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::1", "::/0", "::ffff:10.1.0.0/112", "2001:db8:1::/128"];
const IPS: &[&str] = &[
    "10.1.2.3",
    "10.1.2.200",
    "10.2.0.1",
    "192.168.1.1",
    "8.8.8.8",
    "2001:db8:1::1",
    "2001:db8:2::5",
    "2002::1",
    "::ffff:10.1.2.3",
    "::1",
];
const COUNTRIES: &[&str] = &["US", "us", "GB", "FR"];
const SUBS: &[&str] = &["US-WA", "gb-sct", "FR-75"];
const UAS: &[&str] = &["curl/*", "*bot*", "Mozilla", "mozilla/5.0", "*", "googlebot"];
const REQ_UAS: &[&str] = &["curl/8.0", "Googlebot", "mozilla", "Mozilla/5.0", "x", ""];
const HOSTS: &[&str] = &["a.example", "B.example"];
const JA: &[&str] = &["abc", "ABC", "def"];

fn pick(pool: &'static [&'static str], max: usize) -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::weighted(
        0.35,
        prop::collection::vec(prop::sample::select(pool), 0..=max)
            .prop_map(|v| v.into_iter().map(String::from).collect()),
    )
}

fn conditions() -> impl Strategy<Value = Option<Conditions>> {
    let a = (pick(V4, 3), pick(V6, 2), pick(V4, 2), pick(V6, 2), pick(COUNTRIES, 2), pick(SUBS, 2));
    let b = (
        prop::option::weighted(0.25, prop::collection::vec(1u32..=3, 0..=2)),
        pick(UAS, 2),
        pick(JA, 2),
        pick(JA, 1),
        pick(HOSTS, 1),
    );
    prop::option::weighted(
        0.7,
        (a, b).prop_map(|((v4, v6, cv4, cv6, cc, sd), (asn, ua, ja3, ja4, host))| Conditions {
            asns: asn,
            geo_country_codes: cc,
            geo_subdivision_codes: sd,
            ipv4_cidrs: v4,
            ipv6_cidrs: v6,
            ja3_fingerprints: ja3,
            ja4_fingerprints: ja4,
            user_agents: ua,
            hostnames: host,
            connecting_ipv4_cidrs: cv4,
            connecting_ipv6_cidrs: cv6,
            auth0_managed: None,
            http_message_signature: None,
            client_id_hosts: None,
        }),
    )
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        prop::bool::weighted(0.5),
        prop::bool::weighted(0.85),
        prop::sample::select(&[0.0, 1.0, 1.0, 2.0, 2.5][..]),
        0..4usize,
        prop::sample::select(&["tenant", "authentication", "management", "dcr", "dynamic_client_registration"][..]),
        conditions(),
        conditions(),
    )
        .prop_map(|(named, active, priority, act, scope, m, n)| {
            let mut action = Action::default();
            match act {
                0 => action.allow = Some(true),
                1 => action.block = Some(true),
                2 => action.log = Some(true),
                _ => {
                    action.redirect = Some(true);
                    action.redirect_uri = Some("https://r.example/".into());
                }
            }
            let empty = m.as_ref().is_none_or(Conditions::is_empty) && n.as_ref().is_none_or(Conditions::is_empty);
            let m = if empty {
                Some(Conditions { ipv4_cidrs: Some(vec!["10.0.0.0/8".into()]), ..Default::default() })
            } else {
                m
            };
            Rule {
                id: named.then(String::new),
                description: None,
                active,
                priority,
                rule: RuleBody { action, scope: scope.into(), match_: m, not_match: n, match_all: None },
                created_at: None,
                updated_at: None,
                tenant_id: None,
                deleted_at: None,
            }
        })
}

fn arb_signals() -> impl Strategy<Value = Signals> {
    (
        (prop::sample::select(IPS), prop::sample::select(IPS)),
        prop::option::of(prop::sample::select(&["US", "GB", "FR", "DE", "us"][..])),
        prop::collection::vec(prop::sample::select(&["US-WA", "GB-SCT", "FR-75", "gb-sct"][..]), 0..=2),
        prop::option::of(1u32..=4),
        prop::option::of(prop::sample::select(REQ_UAS)),
        prop::option::of(prop::sample::select(&["abc", "Abc", "def", "zzz"][..])),
        prop::option::of(prop::sample::select(&["abc", "def"][..])),
        prop::option::of(prop::sample::select(&["a.example", "b.example", "c.example"][..])),
    )
        .prop_map(|((c, k), country, subs, asn, ua, ja3, ja4, host)| Signals {
            client_ip: ip(c),
            connecting_ip: ip(k),
            country: country.map(String::from),
            subdivisions: subs.into_iter().map(String::from).collect(),
            asn,
            user_agent: ua.map(String::from),
            ja3: ja3.map(String::from),
            ja4: ja4.map(String::from),
            hostname: host.map(String::from),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_engine_agrees_with_reference(
        mut rules in prop::collection::vec(arb_rule(), 0..14),
        requests in prop::collection::vec((arb_signals(), prop::sample::select(&Scope::ALL[..])), 1..24),
        block_default in any::<bool>(),
    ) {
        for (i, r) in rules.iter_mut().enumerate() {
            if r.id.is_some() {
                r.id = Some(format!("id{i}"));
            }
        }
        let default = if block_default { DefaultAction::Block } else { DefaultAction::Allow };
        let rs = RuleSet::from_rules(rules.clone(), default).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The same rules through the JSON loader.
        let json = serde_json::to_vec(&rules).unwrap();
        let loaded = RuleSet::load(&json, default).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (s, scope) in &requests {
            let want = reference::evaluate(&rules, default, *scope, s);
            prop_assert_eq!(&rs.evaluate(*scope, s), &want, "scope {} signals {:?}", scope, s);
            prop_assert_eq!(&loaded.evaluate(*scope, s), &want);
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop::sample::select(vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(4294967296u64),
        json!(""),
        json!("x"),
        json!("10.0.0.0/8"),
        json!("::/0"),
        json!("US"),
        json!("https://x.example"),
        json!("\u{0}"),
        json!("é*"),
    ]);
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (prop::sample::select(vec!["block", "log", "ipv4_cidrs", "zz", "match"]), inner),
                0..3
            )
            .prop_map(|kv| serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

const PATHS: &[&[&str]] = &[
    &["id"],
    &["active"],
    &["priority"],
    &["rule"],
    &["created_at"],
    &["extra"],
    &["rule", "action"],
    &["rule", "scope"],
    &["rule", "match"],
    &["rule", "not_match"],
    &["rule", "action", "block"],
    &["rule", "action", "redirect"],
    &["rule", "action", "redirect_uri"],
    &["rule", "match", "ipv4_cidrs"],
    &["rule", "match", "asns"],
    &["rule", "match", "user_agents"],
    &["rule", "not_match", "geo_subdivision_codes"],
    &["rule", "match", "ipv6_cidrs"],
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any damage to a valid rule is reported (never a panic), attributed to that rule.
    #[test]
    fn damaged_rules_are_reported_not_panicked(
        edits in prop::collection::vec((prop::sample::select(PATHS), arb_json()), 1..4),
    ) {
        let mut r = json!({"id": "r", "active": true, "priority": 1, "rule": {
            "action": {"block": true}, "scope": "tenant",
            "match": {"ipv4_cidrs": ["10.0.0.0/8"], "asns": [1]},
            "not_match": {"geo_subdivision_codes": ["US-WA"]}}});
        for (path, value) in edits {
            let mut at = &mut r;
            for (n, key) in path.iter().enumerate() {
                if !at.is_object() {
                    break;
                }
                if n + 1 == path.len() {
                    at[*key] = value.clone();
                    break;
                }
                at = &mut at[*key];
            }
        }
        let doc = json!([r]);
        match RuleSet::load(doc.to_string().as_bytes(), DefaultAction::Allow) {
            Ok(rs) => {
                let _ = rs.evaluate(Scope::Dcr, &sig("10.0.0.1"));
            }
            Err(errs) => {
                prop_assert!(!errs.is_empty());
                for e in &errs {
                    prop_assert_eq!(e.index, Some(0), "{}", e);
                    // every problem names its field (an empty one would mean the shape
                    // walk and the derived Deserialize disagree)
                    prop_assert!(!e.field.is_empty(), "{}", e);
                }
            }
        }
    }
}

/// Addresses and networks drawn from the whole address space with random prefix lengths (the
/// fixed pools above exercise rule shapes; this exercises the prefix index): networks are cut
/// around the requests' own addresses so that matches, near misses and nesting all occur.
fn arb_prefix_rules() -> impl Strategy<Value = (Vec<Rule>, Vec<std::net::IpAddr>)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    (
        prop::collection::vec(any::<u32>(), 1..6),
        prop::collection::vec(any::<u128>(), 1..4),
        prop::collection::vec((0usize..64, 0u8..=32, 0u8..=128, 0usize..3, 0u8..4), 1..10),
    )
        .prop_map(|(v4, v6, specs)| {
            let addrs: Vec<IpAddr> = v4
                .iter()
                .map(|a| IpAddr::V4(Ipv4Addr::from(*a)))
                .chain(v6.iter().map(|a| IpAddr::V6(Ipv6Addr::from(*a))))
                .collect();
            let rules = specs
                .iter()
                .enumerate()
                .map(|(i, &(pick, len4, len6, which, act))| {
                    let net = |a: &IpAddr| match a {
                        IpAddr::V4(x) => ipnet::Ipv4Net::new(*x, len4).unwrap().trunc().to_string(),
                        IpAddr::V6(x) => ipnet::Ipv6Net::new(*x, len6).unwrap().trunc().to_string(),
                    };
                    let a = &addrs[pick % addrs.len()];
                    let (mut v4n, mut v6n) = (Vec::new(), Vec::new());
                    match a {
                        IpAddr::V4(_) => v4n.push(net(a)),
                        IpAddr::V6(_) => v6n.push(net(a)),
                    }
                    let cond = Conditions {
                        ipv4_cidrs: (!v4n.is_empty()).then_some(v4n),
                        ipv6_cidrs: (!v6n.is_empty()).then_some(v6n),
                        ..Default::default()
                    };
                    let mut action = Action::default();
                    match act {
                        0 => action.allow = Some(true),
                        1 => action.block = Some(true),
                        _ => action.log = Some(true),
                    }
                    let (match_, not_match) = if which == 2 { (None, Some(cond)) } else { (Some(cond), None) };
                    Rule {
                        id: Some(format!("p{i}")),
                        description: None,
                        active: true,
                        priority: (i % 3) as f64,
                        rule: RuleBody { action, scope: "tenant".into(), match_, not_match, match_all: None },
                        created_at: None,
                        updated_at: None,
                        tenant_id: None,
                        deleted_at: None,
                    }
                })
                .collect();
            (rules, addrs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_prefixes_agree_with_reference((rules, addrs) in arb_prefix_rules(), block_default in any::<bool>()) {
        let default = if block_default { DefaultAction::Block } else { DefaultAction::Allow };
        let rs = RuleSet::from_rules(rules.clone(), default).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for a in &addrs {
            // The address itself, and its neighbours just inside/outside typical boundaries.
            let mut probes = vec![*a];
            if let std::net::IpAddr::V4(x) = a {
                let n = u32::from(*x);
                probes.push(std::net::IpAddr::V4(n.wrapping_add(1).into()));
                probes.push(std::net::IpAddr::V4(n.wrapping_sub(1).into()));
                probes.push(std::net::IpAddr::V4((n ^ 0x0100_0000).into()));
            }
            for p in probes {
                let s = Signals::from_ip(p, p);
                for scope in Scope::ALL {
                    prop_assert_eq!(rs.evaluate(scope, &s), reference::evaluate(&rules, default, scope, &s), "ip {}", p);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ Auth0 fidelity (#16)

fn managed_env(unknown: UnknownManagedLists) -> Env {
    let low = managed::parse_list("# curated\n198.51.100.0/24\n2001:db8:bad::/48\n").unwrap();
    let relay = managed::parse_list("172.224.0.0/12\n").unwrap();
    Env {
        managed: Arc::new(ManagedLists::build(vec![
            ("auth0.low_reputation".into(), low),
            ("auth0.icloud_relay_proxy".into(), relay),
        ])),
        unknown_managed: unknown,
        ..Default::default()
    }
}

fn load_env(v: serde_json::Value, env: &Env) -> Result<RuleSet, AclErrors> {
    RuleSet::load_with(v.to_string().as_bytes(), DefaultAction::Allow, env)
}

#[test]
fn auth0_managed_lists_match_the_client_ip() {
    let env = managed_env(UnknownManagedLists::Fail);
    let rs = load_env(
        json!([
            rule("low", 1.0, block(), json!({"auth0_managed": ["auth0.low_reputation"]})),
            rule_not("relay-only", 2.0, allow(), json!({"auth0_managed": ["auth0.icloud_relay_proxy"]})),
            rule(
                "both",
                3.0,
                json!({"redirect": true, "redirect_uri": "https://x.example/"}),
                json!({"auth0_managed": ["auth0.icloud_relay_proxy"], "ipv4_cidrs": ["172.224.0.0/16"]})
            ),
        ]),
        &env,
    )
    .unwrap();
    assert_eq!(decided(&rs, &sig("198.51.100.9")).as_deref(), Some("low"));
    assert_eq!(decided(&rs, &sig("2001:db8:bad::1")).as_deref(), Some("low"));
    // not_match: not in the relay list → allowed by relay-only.
    assert_eq!(decided(&rs, &sig("192.0.2.1")).as_deref(), Some("relay-only"));
    // In the relay list: relay-only does not hold; both signals of "both" hold (AND).
    assert_eq!(decided(&rs, &sig("172.224.1.1")).as_deref(), Some("both"));
    assert_eq!(decided(&rs, &sig("172.225.1.1")), None);
    // The client IP, not the connecting one.
    let s = Signals::from_ip(ip("192.0.2.1"), ip("198.51.100.9"));
    assert_eq!(decided(&rs, &s).as_deref(), Some("relay-only"));
}

#[test]
fn an_unknown_managed_list_fails_naming_rule_and_list_or_never_matches() {
    let doc = json!([
        rule("bots", 1.0, block(), json!({"auth0_managed": ["auth0.bot_categories"]})),
        rule_not("not-bots", 2.0, allow(), json!({"auth0_managed": ["auth0.bot_categories"]})),
    ]);
    let errs = load_env(doc.clone(), &managed_env(UnknownManagedLists::Fail)).unwrap_err();
    has(&errs, 0, Some("bots"), "rule.match.auth0_managed[0]", "\"auth0.bot_categories\" is not configured");
    has(&errs, 0, Some("bots"), "rule.match.auth0_managed[0]", "[acl.managed_lists]");
    let rs = load_env(doc, &managed_env(UnknownManagedLists::NeverMatch)).unwrap();
    assert_eq!(rs.unknown_managed_lists(), ["auth0.bot_categories"]);
    assert_eq!(rs.warnings().len(), 2);
    assert!(rs.warnings()[0].to_string().contains("matches no address"), "{}", rs.warnings()[0]);
    // Under match it never matches; under not_match it always holds.
    assert_eq!(decided(&rs, &sig("198.51.100.9")).as_deref(), Some("not-bots"));
}

#[test]
fn match_all_matches_every_request_of_its_scope_and_excludes_conditions() {
    let rs = load(json!([
        {"id": "dcr-closed", "active": true, "priority": 5,
         "rule": {"action": {"block": true}, "scope": "dynamic_client_registration", "match_all": true}},
    ]));
    assert_eq!(eval(&rs, Scope::Dcr, &sig("192.0.2.1")), ("block".into(), Some("dcr-closed".into())));
    assert_eq!(eval(&rs, Scope::Authentication, &sig("192.0.2.1")).1, None);
    let errs = load_err(json!([
        {"id": "both", "active": true, "rule": {"action": {"block": true}, "scope": "tenant", "match_all": true,
          "match": {"ipv4_cidrs": ["10.0.0.0/8"]}}},
        {"id": "false", "active": true, "rule": {"action": {"block": true}, "scope": "tenant", "match_all": false}},
        {"id": "typed", "active": true, "rule": {"action": {"block": true}, "scope": "tenant", "match_all": "yes"}},
    ]));
    has(&errs, 0, Some("both"), "rule.match_all", "cannot be combined");
    has(&errs, 1, Some("false"), "rule", "has no condition");
    has(&errs, 2, Some("typed"), "rule.match_all", "expected a boolean");
}

#[test]
fn monitoring_mode_records_the_action_and_evaluation_goes_on() {
    let m = json!({"ipv4_cidrs": ["10.0.0.0/8"]});
    let rs = load(json!([
        rule("watch-block", 1.0, json!({"block": true, "log": true}), m.clone()),
        rule(
            "watch-redirect",
            2.0,
            json!({"redirect": true, "redirect_uri": "https://x.example/", "log": true}),
            m.clone()
        ),
        rule("off", 3.0, json!({"block": true, "log": false}), json!({"ipv4_cidrs": ["10.1.0.0/16"]})),
        rule("then", 4.0, allow(), m.clone()),
    ]));
    let v = rs.evaluate(Scope::Dcr, &sig("10.0.0.1"));
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.rule.as_deref(), Some("then"));
    let logged: Vec<&str> = v.logged.iter().map(|s| &**s).collect();
    assert_eq!(logged, ["watch-block", "watch-redirect"]);
    // log: false is not monitoring: the block executes.
    let v = rs.evaluate(Scope::Dcr, &sig("10.1.0.1"));
    assert_eq!((v.decision, v.rule.as_deref()), (Decision::Block, Some("off")));
    assert_eq!(rs.action_of("watch-block"), Some(("block", true)));
    assert_eq!(rs.action_of("off"), Some(("block", false)));
    // Still one of allow/block/redirect at most.
    let errs = load_err(json!([rule("two", 1.0, json!({"block": true, "allow": true, "log": true}), m)]));
    has(&errs, 0, Some("two"), "rule.action", "several actions (allow, block)");
}

#[test]
fn an_auth0_get_answer_loads_unchanged() {
    // Members of Auth0's GET /api/v2/network-acls/{id} answer (Terraform recordings).
    let rs = load(json!([{"tenant_id": "acme-dev", "description": "d", "active": true, "priority": 2,
        "rule": {"match": {"hostnames": ["testa-dev.us.auth0.com"], "connecting_ipv4_cidrs": ["192.168.1.0/24"]},
                 "scope": "tenant", "action": {"block": true}},
        "created_at": "2026-07-30T11:42:44.103Z", "updated_at": "2026-07-30T11:42:44.103Z",
        "deleted_at": null, "id": "acl_4oWrXrzhXSpmREA3xN3PPz"}]));
    assert_eq!(rs.rules()[0].tenant_id.as_deref(), Some("acme-dev"));
    assert_eq!(rs.rule_ids().next(), Some("acl_4oWrXrzhXSpmREA3xN3PPz"));
}

#[test]
fn http_message_signature_matches_the_verified_key() {
    let keys = signature::KeySet::from_keys([
        signature::Key::new("key_edge", vec![7; 32]),
        signature::Key::new("key_old", vec![8; 32]),
    ]);
    let env = Env { signature_keys: Arc::new(keys), ..Default::default() };
    let rs = load_env(
        json!([rule_not("unsigned", 1.0, block(), json!({"http_message_signature": {"keys": [{"id": "key_edge"}]}})),]),
        &env,
    )
    .unwrap();
    assert!(rs.uses_signatures());
    let s = sig("192.0.2.1");
    let with =
        |k: Option<&str>| rs.evaluate_with(Scope::Dcr, &s, &Request { signature_key: k, ..Request::default() }).rule;
    assert_eq!(with(None).as_deref(), Some("unsigned"), "missing");
    assert_eq!(with(Some("key_old")).as_deref(), Some("unsigned"), "another key");
    assert_eq!(with(Some("key_edge")), None, "valid");
    let errs = load_env(
        json!([rule("k", 1.0, block(), json!({"http_message_signature": {"keys": [{"id": "key_nope"}]}}))]),
        &env,
    )
    .unwrap_err();
    has(&errs, 0, Some("k"), "rule.match.http_message_signature.keys[0].id", "not configured");
    let errs =
        load_err(json!([rule("shape", 1.0, block(), json!({"http_message_signature": {"keys": [{"kid": "x"}]}}))]));
    has(&errs, 0, Some("shape"), "rule.match.http_message_signature.keys[0].kid", "unknown member");
}

#[test]
fn client_id_hosts_match_the_url_client_id_host() {
    let rs = load(json!([
        rule(
            "evil",
            1.0,
            block(),
            json!({"client_id_hosts": ["*.evil.example", "EVIL.example", "b\u{fc}cher.example"]})
        ),
        rule_not("only-known", 2.0, block(), json!({"client_id_hosts": ["app.example", "[2001:db8::1]", "192.0.2.7"]})),
    ]));
    assert!(rs.uses_client_id_hosts());
    let s = sig("192.0.2.1");
    let with = |hosts: &[&str]| {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        rs.evaluate_with(Scope::Authentication, &s, &Request { client_id_hosts: &hosts, ..Request::default() }).rule
    };
    assert_eq!(with(&["x.evil.example"]).as_deref(), Some("evil"));
    assert_eq!(with(&["a.b.evil.example"]).as_deref(), Some("evil"), "any depth below the suffix");
    assert_eq!(with(&["evil.example"]).as_deref(), Some("evil"), "the exact entry (folded to lower case)");
    assert_eq!(with(&["xn--bcher-kva.example"]).as_deref(), Some("evil"), "IDNA applied to the pattern");
    assert_eq!(with(&["notevil.example"]).as_deref(), Some("only-known"), "a suffix match needs a dot");
    assert_eq!(with(&["app.example"]), None);
    assert_eq!(with(&["[2001:db8::1]"]), None);
    assert_eq!(with(&["192.0.2.7"]), None);
    // Every client_id host counts: a repeated client_id cannot hide the blocked one.
    assert_eq!(with(&["app.example", "x.evil.example"]).as_deref(), Some("evil"));
    // No URL client_id: `match` cannot hold, `not_match` holds.
    assert_eq!(with(&[]).as_deref(), Some("only-known"));
    // A rule file without the field does not ask for it.
    assert!(!load(json!([rule("ua", 1.0, block(), json!({"user_agents": ["x"]}))])).uses_client_id_hosts());
}

#[test]
fn client_id_hosts_patterns_are_validated() {
    let errs = load_err(json!([rule(
        "bad",
        1.0,
        block(),
        json!({"client_id_hosts": ["ok.example", "*", "a.*.example", "https://x.example/c.json", "", 7]})
    )]));
    has(&errs, 0, Some("bad"), "rule.match.client_id_hosts[5]", "expected a string");
    let errs = load_err(json!([rule(
        "bad",
        1.0,
        block(),
        json!({"client_id_hosts": ["ok.example", "*", "a.*.example", "https://x.example/c.json", ""]})
    )]));
    for i in 1..=4 {
        has(&errs, 0, Some("bad"), &format!("rule.match.client_id_hosts[{i}]"), "invalid client_id host pattern");
    }
    assert_eq!(errs.0.len(), 4, "{errs:?}");
    // The admin API's path (rules built in code) validates the same way.
    let mut r: crate::acl::schema::Rule =
        serde_json::from_value(rule("api", 1.0, block(), json!({"client_id_hosts": ["*.*"]}))).unwrap();
    let e = RuleSet::from_rules(vec![r.clone()], DefaultAction::Allow).unwrap_err();
    has(&e, 0, Some("api"), "rule.match.client_id_hosts[0]", "invalid client_id host pattern");
    r.rule.match_.as_mut().unwrap().client_id_hosts = Some(vec!["*.ok.example".into()]);
    assert!(RuleSet::from_rules(vec![r], DefaultAction::Allow).is_ok());
}
