//! The admin API (`/api/v2/...` on the admin listener) through the real binary: tenant
//! settings that change what registration answers, network ACLs written to the rules file,
//! validation that leaves the file alone, If-Match, scopes, the public listener still
//! proxying `/api/v2/`, and the audit line.

mod support;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::upstream::Upstream;
use support::*;

const REG: &str = r#"{"client_name":"Test App","redirect_uris":["https://app.example.com/cb"]}"#;

const ALL_SCOPES: &[&str] = &dcr_gateway::tokens::ADMIN_SCOPES;

struct Token {
    label: &'static str,
    secret: String,
    scopes: Vec<&'static str>,
}

impl Token {
    fn new(label: &'static str, scopes: &[&'static str]) -> Token {
        let secret = format!("dcrgw_adm_test{}", hex::encode(rand::random::<[u8; 24]>()));
        Token { label, secret, scopes: scopes.to_vec() }
    }
    fn bearer(&self) -> String {
        format!("Bearer {}", self.secret)
    }
}

/// The token file, written the way an operator would: SHA-256 hashes only.
fn tokens_file(tokens: &[&Token]) -> Vec<u8> {
    let mut out = String::new();
    for t in tokens {
        let scopes: Vec<String> = t.scopes.iter().map(|s| format!("{s:?}")).collect();
        out.push_str(&format!(
            "[[token]]\nlabel = {:?}\nsha256 = {:?}\nscopes = [{}]\n\n",
            t.label,
            hex::encode(Sha256::digest(t.secret.as_bytes())),
            scopes.join(", ")
        ));
    }
    out.into_bytes()
}

fn builder(up: &Upstream, tokens: &[&Token]) -> GatewayBuilder {
    GatewayBuilder::new(&up.origin())
        .file("admin-tokens.toml", tokens_file(tokens))
        .extra("[admin]\ntokens_file = \"admin-tokens.toml\"\n")
}

struct Resp {
    status: u16,
    body: String,
    etag: Option<String>,
    headers: Vec<(String, String)>,
}

impl Resp {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn call(method: &str, url: &str, token: Option<&Token>, if_match: Option<&str>, body: Option<&str>) -> Resp {
    let mut req = agent().request(method, url);
    if let Some(t) = token {
        req = req.set("authorization", &t.bearer());
    }
    if let Some(m) = if_match {
        req = req.set("if-match", m);
    }
    let r = match body {
        Some(b) => req.set("content-type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let headers =
        resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string())).collect();
    let etag = resp.header("etag").map(str::to_string);
    Resp { status: resp.status(), etag, headers, body: resp.into_string().unwrap_or_default() }
}

fn register(gw: &Gateway, xff: Option<&str>) -> (u16, String) {
    let mut req = agent().post(&gw.url("/oidc/register")).set("content-type", "application/json");
    if let Some(x) = xff {
        req = req.set("x-forwarded-for", x);
    }
    response_parts(req.send_string(REG))
}

fn sha256_file(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn toggling_dcr_changes_what_registration_answers_as_soon_as_patch_returns() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).start();
    let settings = gw.admin_url("/api/v2/tenants/settings");

    let r = call("GET", &settings, Some(&admin), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["flags"]["enable_dynamic_client_registration"], true);
    assert_eq!(v["dynamic_client_registration_security_mode"], "strict");
    assert_eq!(r.etag.as_deref(), Some(&*format!("\"{}\"", hex::encode(Sha256::digest(b"")))), "no settings file yet");
    assert_eq!(register(&gw, None).0, 201);

    // Auth0's own request shape.
    let r =
        call("PATCH", &settings, Some(&admin), None, Some(r#"{"flags":{"enable_dynamic_client_registration":false}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["flags"]["enable_dynamic_client_registration"], false);
    let (status, body) = register(&gw, None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("dynamic client registration is disabled"), "{body}");
    let file = gw.path("tenant-settings.json");
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk, serde_json::json!({"flags": {"enable_dynamic_client_registration": false}}));
    assert_eq!(r.etag, Some(format!("\"{}\"", sha256_file(&file))));

    // The issue's top-level name works too.
    let r = call("PATCH", &settings, Some(&admin), None, Some(r#"{"enable_dynamic_client_registration":true}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(register(&gw, None).0, 201);

    // Bad values: 400 naming them, nothing written (members the gateway does not use, as
    // Terraform's auth0_tenant sends, are no error: kept and not enforced).
    let before = std::fs::read(&file).unwrap();
    let r = call(
        "PATCH",
        &settings,
        Some(&admin),
        None,
        Some(r#"{"friendly_name":"x","dynamic_client_registration_security_mode":"lax"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        !r.body.contains("friendly_name") && r.body.contains("dynamic_client_registration_security_mode"),
        "{}",
        r.body
    );
    let r = call(
        "PATCH",
        &settings,
        Some(&admin),
        None,
        Some(r#"{"default_dcr_scopes":{"allowed":["openid"],"default":"openid email"}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("default_dcr_scopes.default"), "{}", r.body);
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_rule_created_through_the_api_blocks_the_next_matching_request() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).rules("[]").start();
    let acls = gw.admin_url("/api/v2/network-acls");

    assert_eq!(register(&gw, Some("203.0.113.7")).0, 201);
    let r = call(
        "POST",
        &acls,
        Some(&admin),
        None,
        Some(
            r#"{"description":"block a bad network","active":true,"priority":1,
                 "rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["203.0.113.0/24"]}}}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let id = v["id"].as_str().expect("an id is generated").to_string();
    assert_eq!(r.header("location"), Some(&*format!("/api/v2/network-acls/{id}")));
    assert!(humantime::parse_rfc3339(v["created_at"].as_str().unwrap()).is_ok(), "{v}");
    assert_eq!(v["created_at"], v["updated_at"]);
    assert_eq!(v["rule"]["match"]["ipv4_cidrs"][0], "203.0.113.0/24");
    assert_eq!(r.etag, Some(format!("\"{}\"", sha256_file(&gw.path("rules.json")))));

    // Enforced as soon as the response is back.
    let (status, body) = register(&gw, Some("203.0.113.7"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(register(&gw, Some("198.51.100.1")).0, 201);

    let r = call("GET", &format!("{acls}/{id}"), Some(&admin), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["description"], "block a bad network");
    assert_eq!(r.etag, Some(format!("\"{}\"", sha256_file(&gw.path("rules.json")))));
    let list = call("GET", &acls, Some(&admin), None, None).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let paged = call("GET", &format!("{acls}?include_totals=true&page=0&per_page=10"), Some(&admin), None, None).json();
    assert_eq!(paged["total"], 1);

    // PATCH deactivates it, DELETE removes it; both enforced immediately.
    let r = call("PATCH", &format!("{acls}/{id}"), Some(&admin), None, Some(r#"{"active":false}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"], false);
    assert_eq!(register(&gw, Some("203.0.113.7")).0, 201);
    let r = call(
        "PUT",
        &format!("{acls}/{id}"),
        Some(&admin),
        None,
        Some(
            r#"{"active":true,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["203.0.113.0/24"]}}}"#,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("description").is_none(), "PUT replaces the whole rule");
    assert_eq!(register(&gw, Some("203.0.113.7")).0, 403);
    let r = call("DELETE", &format!("{acls}/{id}"), Some(&admin), None, None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.body.is_empty());
    assert_eq!(register(&gw, Some("203.0.113.7")).0, 201);
    let r = call("GET", &format!("{acls}/{id}"), Some(&admin), None, None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["statusCode"], 404);
}

#[test]
fn a_bad_rule_is_refused_naming_the_field_and_the_file_is_untouched() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let rules = r#"[ {"active": true, "rule": {"action": {"log": true}, "scope": "tenant", "match": {"ipv4_cidrs": ["10.0.0.0/8"]}}} ]"#;
    let gw = builder(&up, &[&admin]).rules(rules).start();
    let acls = gw.admin_url("/api/v2/network-acls");
    let path = gw.path("rules.json");

    let r = call(
        "POST",
        &acls,
        Some(&admin),
        None,
        Some(
            r#"{"active":true,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["10.0.0.300/8"]}}}"#,
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"], "Bad Request");
    assert!(v["message"].as_str().unwrap().contains("rule.match.ipv4_cidrs[0]"), "{v}");
    assert_eq!(v["errors"][0]["field"], "rule.match.ipv4_cidrs[0]");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), rules, "byte-identical");

    let r = call(
        "PATCH",
        &format!("{acls}/rule-0"),
        Some(&admin),
        None,
        Some(r#"{"rule":{"action":{"block":true,"allow":true},"scope":"dcr"}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("rule.action"), "{}", r.body);
    let r =
        call("PATCH", &format!("{acls}/rule-0"), Some(&admin), None, Some(r#"{"created_at":"2020-01-01T00:00:00Z"}"#));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call("PATCH", &format!("{acls}/rule-0"), Some(&admin), None, Some("{not json"));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call("PATCH", &format!("{acls}/nope"), Some(&admin), None, Some("{}"));
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), rules, "byte-identical");

    // Bodies are bounded.
    let big = format!(r#"{{"description":"{}","active":true}}"#, "x".repeat(70 * 1024));
    let r = call("POST", &acls, Some(&admin), None, Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), rules, "byte-identical");

    // The id-less rule gets its id written in by the first successful write.
    let r = call("PATCH", &format!("{acls}/rule-0"), Some(&admin), None, Some(r#"{"description":"internal"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let on_disk: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(on_disk[0]["id"], "rule-0");
    assert_eq!(on_disk[0]["description"], "internal");
}

#[test]
fn concurrent_writers_get_412_with_a_stale_if_match_and_both_land_without() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = Arc::new(
        builder(&up, &[&admin])
            .rules(
                r#"[{"id":"a","active":true,"rule":{"action":{"log":true},"scope":"tenant","match":{"ipv4_cidrs":["192.0.2.1"]}}},
                    {"id":"b","active":true,"rule":{"action":{"log":true},"scope":"tenant","match":{"ipv4_cidrs":["192.0.2.2"]}}}]"#,
            )
            .start(),
    );
    let admin = Arc::new(admin);
    let settings = gw.admin_url("/api/v2/tenants/settings");
    let etag = call("GET", &settings, Some(&admin), None, None).etag.unwrap();

    let race = |bodies: [(String, &'static str); 2], if_match: Option<String>| -> Vec<Resp> {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = bodies
            .into_iter()
            .map(|(url, body)| {
                let (barrier, admin, if_match) = (barrier.clone(), admin.clone(), if_match.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    call("PATCH", &url, Some(&admin), if_match.as_deref(), Some(body))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };

    let rs = race(
        [
            (settings.clone(), r#"{"dynamic_client_registration_security_mode":"permissive"}"#),
            (settings.clone(), r#"{"default_dcr_scopes":{"allowed":["openid","profile"]}}"#),
        ],
        Some(etag.clone()),
    );
    let mut statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{:?}", rs.iter().map(|r| &r.body).collect::<Vec<_>>());
    let failed = rs.iter().find(|r| r.status == 412).unwrap();
    assert_eq!(failed.json()["statusCode"], 412);
    // A stale tag stays stale.
    let r = call("PATCH", &settings, Some(&admin), Some(&etag), Some(r#"{"enable_dynamic_client_registration":true}"#));
    assert_eq!(r.status, 412, "{}", r.body);

    // Without If-Match both land, one after the other.
    let rs = race(
        [
            (settings.clone(), r#"{"dynamic_client_registration_security_mode":"strict"}"#),
            (settings.clone(), r#"{"default_dcr_scopes":{"allowed":["openid","email"],"default":"openid"}}"#),
        ],
        None,
    );
    assert!(rs.iter().all(|r| r.status == 200), "{:?}", rs.iter().map(|r| &r.body).collect::<Vec<_>>());
    let v = call("GET", &settings, Some(&admin), None, None).json();
    assert_eq!(v["dynamic_client_registration_security_mode"], "strict");
    assert_eq!(v["default_dcr_scopes"], serde_json::json!({"allowed": ["openid", "email"], "default": "openid"}));

    let acls = gw.admin_url("/api/v2/network-acls");
    let rs = race(
        [(format!("{acls}/a"), r#"{"description":"first"}"#), (format!("{acls}/b"), r#"{"description":"second"}"#)],
        None,
    );
    assert!(rs.iter().all(|r| r.status == 200), "{:?}", rs.iter().map(|r| &r.body).collect::<Vec<_>>());
    let list = call("GET", &acls, Some(&admin), None, None).json();
    assert_eq!(list[0]["description"], "first");
    assert_eq!(list[1]["description"], "second");
}

#[test]
fn scopes_are_enforced_per_endpoint() {
    let up = Upstream::start();
    let reader = Token::new("auditor", &["read:network_acls", "read:tenant_settings"]);
    let creator = Token::new("ci", &["create:network_acls"]);
    let gw = builder(&up, &[&reader, &creator]).rules("[]").start();
    let acls = gw.admin_url("/api/v2/network-acls");
    let rule =
        r#"{"active":true,"rule":{"action":{"log":true},"scope":"tenant","match":{"ipv4_cidrs":["192.0.2.1"]}}}"#;

    let r = call("GET", &acls, None, None, None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", r.headers);
    let v = r.json();
    assert_eq!((v["statusCode"].as_u64(), v["error"].as_str()), (Some(401), Some("Unauthorized")));

    let bogus = Token::new("nobody", ALL_SCOPES);
    let r = call("GET", &acls, Some(&bogus), None, None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").is_some_and(|v| v.contains("invalid_token")), "{:?}", r.headers);

    assert_eq!(call("GET", &acls, Some(&reader), None, None).status, 200);
    assert_eq!(call("GET", &gw.admin_url("/api/v2/tenants/settings"), Some(&reader), None, None).status, 200);
    let r = call("POST", &acls, Some(&reader), None, Some(rule));
    assert_eq!(r.status, 403, "{}", r.body);
    // Auth0's 403 body: the reason phrase in `error`, the code in `errorCode`.
    let v = r.json();
    assert_eq!(v["error"], "Forbidden", "{v}");
    assert_eq!(v["errorCode"], "insufficient_scope", "{v}");
    assert_eq!(v["message"], "Insufficient scope, expected any of: create:network_acls", "{v}");
    let r = call("PATCH", &gw.admin_url("/api/v2/tenants/settings"), Some(&reader), None, Some("{}"));
    assert_eq!(r.status, 403, "{}", r.body);

    let r = call("POST", &acls, Some(&creator), None, Some(rule));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(call("GET", &acls, Some(&creator), None, None).status, 403);
    assert_eq!(call("DELETE", &format!("{acls}/{id}"), Some(&creator), None, None).status, 403);
    assert_eq!(call("DELETE", &format!("{acls}/{id}"), Some(&reader), None, None).status, 403);
    assert_eq!(call("PATCH", &format!("{acls}/{id}"), Some(&reader), None, Some("{}")).status, 403);
    assert_eq!(call("PUT", &format!("{acls}/{id}"), Some(&reader), None, Some(rule)).status, 403);
}

#[test]
fn the_public_listener_proxies_api_v2_to_the_idp() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).rules("[]").start();
    for (method, body) in [("GET", None), ("POST", Some(r#"{"active":true}"#))] {
        let before = up.count();
        let r = call(method, &gw.url("/api/v2/network-acls"), Some(&admin), None, body);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["ok"], true, "answered by the upstream: {}", r.body);
        assert_eq!(up.count(), before + 1);
        let rec = up.last();
        assert_eq!((rec.method.as_str(), rec.url.as_str()), (method, "/api/v2/network-acls"));
    }
    assert_eq!(std::fs::read_to_string(gw.path("rules.json")).unwrap(), "[]", "the admin API did not act");
    let r = call("GET", &gw.url("/api/v2/tenants/settings"), Some(&admin), None, None);
    assert_eq!(r.json()["path"], "/api/v2/tenants/settings");
}

#[test]
fn an_admin_change_is_one_audit_line_with_the_label_and_never_the_token() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).rules("[]").start();
    let r = call(
        "POST",
        &gw.admin_url("/api/v2/network-acls"),
        Some(&admin),
        None,
        Some(
            r#"{"id":"block-bots","active":true,"rule":{"action":{"block":true},"scope":"dcr","match":{"user_agents":["evilbot*"]}}}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let rid = r.header("x-request-id").unwrap().to_string();
    let r = call(
        "PATCH",
        &gw.admin_url("/api/v2/tenants/settings"),
        Some(&admin),
        None,
        Some(r#"{"flags":{"enable_dynamic_client_registration":false}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Reads are not changes.
    call("GET", &gw.admin_url("/api/v2/network-acls"), Some(&admin), None, None);

    assert!(
        wait_until(Duration::from_secs(5), || gw.audit_lines().iter().filter(|l| l["scope"] == "admin").count() >= 2)
    );
    let lines: Vec<serde_json::Value> = gw.audit_lines().into_iter().filter(|l| l["scope"] == "admin").collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let create = &lines[0];
    assert_eq!(create["actor"], "sec-team");
    assert_eq!(create["action"], "network_acls.create");
    assert_eq!(create["target"], "block-bots");
    assert_eq!(create["request_id"], rid.as_str());
    assert_eq!(create["status"], 201);
    assert!(create["changes"].as_array().unwrap().iter().any(|c| c["field"] == "rule.match"), "{create}");
    let settings = &lines[1];
    assert_eq!(settings["action"], "tenant_settings.update");
    assert_eq!(
        settings["changes"],
        serde_json::json!([{"field": "flags.enable_dynamic_client_registration", "from": true, "to": false}])
    );
    let everything = format!("{}{}", gw.stdout_text(), gw.stderr_text());
    assert!(!everything.contains(&admin.secret), "the token never reaches a log");
}

#[test]
fn the_api_can_be_switched_off_and_needs_a_rules_file_for_network_acls() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = GatewayBuilder::new(&up.origin())
        .file("admin-tokens.toml", tokens_file(&[&admin]))
        .extra("[admin]\napi_enabled = false\ntokens_file = \"admin-tokens.toml\"\n")
        .start();
    for method in ["GET", "POST", "DELETE"] {
        let body = (method == "POST").then_some("{}");
        let r = call(method, &gw.admin_url("/api/v2/network-acls"), Some(&admin), None, body);
        assert_eq!(r.status, 404, "{method}: {}", r.body);
    }
    assert_eq!(http_get(&gw.admin_url("/healthz")).0, 200);
    drop(gw);

    // On, but no [acl] rules: network ACLs explain themselves, settings still work.
    let gw = builder(&up, &[&admin]).start();
    let r = call("GET", &gw.admin_url("/api/v2/network-acls"), Some(&admin), None, None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("[acl] rules"), "{}", r.body);
    assert_eq!(call("GET", &gw.admin_url("/api/v2/tenants/settings"), Some(&admin), None, None).status, 200);
    let r = call("GET", &gw.admin_url("/api/v2/clients"), Some(&admin), None, None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(http_get(&gw.admin_url("/metrics")).0, 200);
}

#[test]
fn the_settings_file_is_reloadable_and_a_bad_one_is_rejected_naming_it() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin])
        .file("tenant-settings.json", br#"{"flags":{"enable_dynamic_client_registration":false}}"#.to_vec())
        .start();
    assert_eq!(register(&gw, None).0, 403, "the settings file is laid over [dcr] at start");
    // Hand edits are reloaded like any other file.
    write_file(&gw.path("tenant-settings.json"), r#"{"flags":{"enable_dynamic_client_registration":true}}"#);
    assert!(wait_until(Duration::from_secs(5), || register(&gw, None).0 == 201));
    // A bad one is refused with its name, the last good snapshot stays.
    write_file(&gw.path("tenant-settings.json"), r#"{"flags":{"enable_dynamic_client_registration":"maybe"}}"#);
    assert!(
        wait_until(Duration::from_secs(5), || gw.stderr_text().contains("tenant-settings.json")),
        "{}",
        gw.stderr_text()
    );
    assert!(gw.stderr_text().contains("flags.enable_dynamic_client_registration"), "{}", gw.stderr_text());
    assert_eq!(register(&gw, None).0, 201);
    // A write on top of the bad file is refused, not silently merged.
    let r = call(
        "PATCH",
        &gw.admin_url("/api/v2/tenants/settings"),
        Some(&admin),
        None,
        Some(r#"{"enable_dynamic_client_registration":false}"#),
    );
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn a_write_the_reload_refuses_is_rolled_back() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).rules("[]").start();
    let acls = gw.admin_url("/api/v2/network-acls");
    let rule = r#"{"active":true,"rule":{"action":{"block":true},"scope":"dcr","match":{"geo_country_codes":["GB"]}}}"#;

    // A rule needing a database the gateway does not have: 400 naming the signal.
    let r = call("POST", &acls, Some(&admin), None, Some(rule));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("geo_country_codes") && r.body.contains("geoip.country_db"), "{}", r.body);

    // gateway.toml broken on disk (not yet fixed by its editor): the rule itself is fine, but
    // the reload that would enforce it fails, so the rules file is put back.
    let cfg = gw.config_path();
    let good = std::fs::read_to_string(&cfg).unwrap();
    write_file(&cfg, &format!("{good}\n[bogus]\nx = 1\n"));
    // The watcher sees it too; the signal makes the failed reload happen now, whatever the load.
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || gw.stderr_text().contains("bogus")));
    let r = call(
        "POST",
        &acls,
        Some(&admin),
        None,
        Some(r#"{"active":true,"rule":{"action":{"log":true},"scope":"dcr","match":{"user_agents":["x"]}}}"#),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("restored") && r.body.contains("bogus"), "{}", r.body);
    assert_eq!(std::fs::read_to_string(gw.path("rules.json")).unwrap(), "[]", "byte-identical");
    let r = call(
        "PATCH",
        &gw.admin_url("/api/v2/tenants/settings"),
        Some(&admin),
        None,
        Some(r#"{"enable_dynamic_client_registration":false}"#),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(!gw.path("tenant-settings.json").exists());
    assert_eq!(call("GET", &acls, Some(&admin), None, None).json(), serde_json::json!([]));
    assert!(gw.audit_lines().iter().all(|l| l["scope"] != "admin"), "nothing changed, nothing audited");
}

// ------------------------------------------------------------------ Auth0 fidelity (#16)

fn auth0_fixture(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth0").join(name))
        .unwrap()
}

fn call_form(method: &str, url: &str, token: &Token, body: &str) -> Resp {
    let r = agent()
        .request(method, url)
        .set("authorization", &token.bearer())
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let etag = resp.header("etag").map(str::to_string);
    Resp { status: resp.status(), etag, headers: Vec::new(), body: resp.into_string().unwrap_or_default() }
}

#[test]
fn auth0s_monitoring_mode_patch_records_the_block_and_lets_the_request_through() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let rules = r#"[{"id":"bad-net","description":"block a bad network","active":true,"priority":1,
        "rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["203.0.113.0/24"]}}}]"#;
    let gw = builder(&up, &[&admin]).rules(rules).start();
    let rule_url = gw.admin_url("/api/v2/network-acls/bad-net");
    assert_eq!(register(&gw, Some("203.0.113.7")).0, 403);
    let before = up.count();

    // The body on Auth0's "Enable monitoring mode" page, verbatim.
    let r = call("PATCH", &rule_url, Some(&admin), None, Some(&auth0_fixture("monitoring-mode-patch.json")));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["rule"]["action"], serde_json::json!({"block": true, "log": true}), "{v}");
    assert_eq!(v["rule"]["scope"], "authentication");
    assert_eq!(v["rule"]["match"]["ipv4_cidrs"][0], "203.0.113.0/24", "the conditions are kept: {v}");
    assert_eq!(v["description"], "block a bad network");

    // Recorded, not executed: the IdP gets the registration; the audit line names the rule.
    let (status, body) = register(&gw, Some("203.0.113.7"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.count(), before + 1);
    let logged = || gw.audit_lines().iter().any(|l| l["logged_rules"] == serde_json::json!(["bad-net"]));
    assert!(wait_until(Duration::from_secs(5), logged), "{:?}", gw.audit_lines());
    assert!(gw.wait_metric("dcr_gateway_acl_matches_total{action=\"log\",rule=\"bad-net\"}", 1.0) >= 1.0);

    // Off again the Auth0 way (log false): the block executes.
    let r = call("PATCH", &rule_url, Some(&admin), None, Some(r#"{"rule":{"action":{"log":false}}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(register(&gw, Some("203.0.113.7")).0, 403);
    assert_eq!(up.count(), before + 1);

    // Switching the action: null removes the old flag (JSON merge patch).
    let r = call("PATCH", &rule_url, Some(&admin), None, Some(r#"{"rule":{"action":{"block":null,"allow":true}}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rule"]["action"], serde_json::json!({"allow": true, "log": false}));
}

#[test]
fn auth0s_constraints_unique_priorities_lengths_and_ids() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).rules("[]").start();
    let acls = gw.admin_url("/api/v2/network-acls");
    let path = gw.path("rules.json");

    // Auth0's documented create body, verbatim.
    let china = auth0_fixture("create-block-china.json")
        .replace("\"geo_country_codes\": [\"CN\"]", "\"user_agents\": [\"cn-bot/*\"]");
    let r = call("POST", &acls, Some(&admin), None, Some(&china));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(dcr_gateway::admin::network_acls::is_auth0_id(&id), "{id}");

    let before = std::fs::read(&path).unwrap();
    let r = call("POST", &acls, Some(&admin), None, Some(&china));
    assert_eq!(r.status, 409, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["error"].as_str(), v["message"].as_str()),
        (Some("Conflict"), Some("A Network ACL with this priority number has already been created."))
    );
    for (body, field) in [
        (china.replace("\"priority\": 1", "\"priority\": 101"), "priority"),
        (
            china
                .replace("Block all traffic from China", &"d".repeat(256))
                .replace("\"priority\": 1", "\"priority\": 2"),
            "description",
        ),
    ] {
        let r = call("POST", &acls, Some(&admin), None, Some(&body));
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["errors"][0]["field"], field, "{}", r.body);
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
    // A rules file may go beyond Auth0's range; the API keeps to it.
    let r = call("PATCH", &format!("{acls}/{id}"), Some(&admin), None, Some(r#"{"priority": 0}"#));
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn form_bodies_and_terraforms_tenant_settings_are_accepted() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).rules("[]").start();
    let settings = gw.admin_url("/api/v2/tenants/settings");
    let file = gw.path("tenant-settings.json");

    // What Terraform's auth0_tenant sent (a recording): members the gateway does not use are
    // kept and returned; the DCR member is enforced.
    let r = call("PATCH", &settings, Some(&admin), None, Some(&auth0_fixture("tenant-settings-terraform-patch.json")));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["friendly_name"], "My Test Tenant");
    assert_eq!(v["flags"]["remove_alg_from_jwks"], true);
    assert_eq!(v["flags"]["enable_dynamic_client_registration"], true, "the gateway's own member is there too");
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk["session_cookie"]["mode"], "non-persistent");
    let r =
        call("PATCH", &settings, Some(&admin), None, Some(&auth0_fixture("tenant-settings-terraform-dcr-patch.json")));
    assert_eq!(r.status, 200, "{}", r.body);
    let got = call("GET", &settings, Some(&admin), None, None).json();
    assert_eq!(got["friendly_name"], "DCR Security Mode Test");
    assert_eq!(got["session_lifetime"], 168);
    assert_eq!(got["flags"]["remove_alg_from_jwks"], true, "merged, not replaced");

    // A form body, as Auth0 takes: DCR off, enforced at once.
    let r = call_form("PATCH", &settings, &admin, "flags[enable_dynamic_client_registration]=false");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(register(&gw, None).0, 403);
    let r = call_form("PATCH", &settings, &admin, "enable_dynamic_client_registration=true");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(register(&gw, None).0, 201);

    // A network ACL created from a form body.
    let r = call_form(
        "POST",
        &gw.admin_url("/api/v2/network-acls"),
        &admin,
        "description=form+made&active=true&priority=4&rule[action][block]=true&rule[scope]=dcr\
         &rule[match][ipv4_cidrs][]=203.0.113.0%2F24",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["rule"]["match"]["ipv4_cidrs"], serde_json::json!(["203.0.113.0/24"]));
    assert_eq!(register(&gw, Some("203.0.113.9")).0, 403);
}

#[test]
fn client_id_hosts_rules_are_validated_and_enforced_through_the_api() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).rules("[]").start();
    let acls = gw.admin_url("/api/v2/network-acls");
    let rule = |hosts: &str| {
        format!(
            r#"{{"description":"no evil CIMD clients","active":true,"priority":1,
                 "rule":{{"action":{{"block":true}},"scope":"authentication","match":{{"client_id_hosts":{hosts}}}}}}}"#
        )
    };
    // The loader's validation, through the API: 400 naming the entry, nothing written.
    let r = call("POST", &acls, Some(&admin), None, Some(&rule(r#"["ok.example", "a.*.example"]"#)));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["errors"][0]["field"], "rule.match.client_id_hosts[1]", "{}", r.body);
    assert_eq!(std::fs::read_to_string(gw.path("rules.json")).unwrap(), "[]");

    let r = call("POST", &acls, Some(&admin), None, Some(&rule(r#"["*.evil.example"]"#)));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["rule"]["match"]["client_id_hosts"][0], "*.evil.example");
    let authorize = |client_id: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("client_id", client_id).finish();
        response_parts(agent().get(&gw.url(&format!("/authorize?{q}"))).call()).0
    };
    assert_eq!(authorize("https://x.evil.example/c.json"), 403);
    assert_eq!(up.count(), 0, "the IdP saw nothing");
    assert_eq!(authorize("https://app.example/c.json"), 200);
    assert_eq!(up.count(), 1);
}

/// An oversized API body is drained (up to 1 MiB: `core::body::BoundedBody::draining`) so the
/// client reads its 413 and the connection stays usable: the next request on it is answered.
/// One declared past that bound ends the connection with the 413.
#[test]
fn an_oversized_api_body_is_drained_and_the_connection_kept() {
    let up = Upstream::start();
    let admin = Token::new("sec-team", ALL_SCOPES);
    let gw = builder(&up, &[&admin]).start();
    let head = |len: usize| {
        format!(
            "POST /api/v2/network-acls HTTP/1.1\r\nHost: admin\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            admin.bearer()
        )
    };
    let next = "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    let body = format!(r#"{{"description":"{}","active":true}}"#, "x".repeat(70 * 1024));
    let resp = raw_request(gw.admin, format!("{}{body}{next}", head(body.len())).as_bytes());
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "the next request on the connection is answered: {resp}");
    assert!(resp.contains("HTTP/1.1 200"), "{resp}");
    let resp = raw_request(gw.admin, format!("{}{next}", head(2 * 1024 * 1024)).as_bytes());
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "not drained: the connection ends: {resp}");
}
