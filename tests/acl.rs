//! The Tenant ACL through the running proxy: client IPs via X-Forwarded-For from a trusted
//! 127.0.0.1, GeoIP fixtures generated here, hot reload under traffic.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

fn get_from(gw: &Gateway, path: &str, client_ip: &str) -> (u16, String) {
    response_parts(agent().get(&gw.url(path)).set("x-forwarded-for", client_ip).call())
}

fn register_from(gw: &Gateway, client_ip: &str) -> (u16, String) {
    response_parts(
        agent()
            .post(&gw.url("/oidc/register"))
            .set("x-forwarded-for", client_ip)
            .set("content-type", "application/json")
            .send_string(r#"{"client_name":"ACL Test","redirect_uris":["https://acl.example.com/cb"]}"#),
    )
}

fn geo_fixture() -> Vec<u8> {
    let mut w = mmdb_writer::MmdbWriter::new("GeoIP2-City", 6);
    w.insert("81.2.69.0/24", mmdb_writer::city_record("GB", &["ENG"]));
    w.insert("81.2.70.0/24", mmdb_writer::city_record("GB", &["SCT"]));
    w.insert("216.160.83.0/24", mmdb_writer::city_record("US", &["WA"]));
    w.insert("2001:218::/32", mmdb_writer::city_record("JP", &[]));
    w.to_bytes()
}

fn asn_fixture() -> Vec<u8> {
    let mut w = mmdb_writer::MmdbWriter::new("GeoLite2-ASN", 6);
    w.insert("1.128.0.0/11", mmdb_writer::asn_record(1221, "Telstra"));
    w.insert("12.81.92.0/22", mmdb_writer::asn_record(7018, "AT&T"));
    w.to_bytes()
}

#[test]
fn cidr_geo_and_asn_rules_through_the_proxy() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .file("city.mmdb", geo_fixture())
        .file("asn.mmdb", asn_fixture())
        .extra("[geoip]\ncountry_db = \"city.mmdb\"\nasn_db = \"asn.mmdb\"")
        .rules(r#"[
          {"id":"block-gb-except-scotland","active":true,"priority":2,"rule":{"action":{"block":true},"scope":"dcr",
            "match":{"geo_country_codes":["GB"]},"not_match":{"geo_subdivision_codes":["GB-SCT"]}}},
          {"id":"block-asn-7018","active":true,"priority":3,"rule":{"action":{"block":true},"scope":"tenant","match":{"asns":[7018]}}},
          {"id":"block-v6-net","active":true,"priority":4,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv6_cidrs":["2001:db8::/32"],"ipv4_cidrs":["203.0.113.0/24"]}}},
          {"id":"redirect-jp","active":true,"priority":5,"rule":{"action":{"redirect":true,"redirect_uri":"https://example.com/jp"},"scope":"dcr","match":{"geo_country_codes":["JP"]}}}
        ]"#)
        .start();
    // England is blocked for registration, Scotland is not, login is untouched.
    assert_eq!(register_from(&gw, "81.2.69.142").0, 403);
    assert_eq!(register_from(&gw, "81.2.70.1").0, 201);
    assert_eq!(get_from(&gw, "/authorize", "81.2.69.142").0, 200);
    assert_eq!(register_from(&gw, "216.160.83.56").0, 201);
    // ASN rule on every scope.
    assert_eq!(get_from(&gw, "/authorize", "12.81.92.1").0, 403);
    assert_eq!(get_from(&gw, "/authorize", "1.128.0.1").0, 200);
    // v4 and v6 lists count as one signal.
    assert_eq!(register_from(&gw, "2001:db8::1").0, 403);
    assert_eq!(register_from(&gw, "203.0.113.20").0, 403);
    // Redirect.
    let (status, _) = register_from(&gw, "2001:218::5");
    assert_eq!(status, 302);
    let resp = agent()
        .post(&gw.url("/oidc/register"))
        .set("x-forwarded-for", "2001:218::5")
        .set("content-type", "application/json")
        .send_string("{}");
    let location = match resp {
        Ok(r) => r.header("location").map(str::to_string),
        Err(ureq::Error::Status(_, r)) => r.header("location").map(str::to_string),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(location.as_deref(), Some("https://example.com/jp"));

    // Metrics count per rule; audit lines name the rule.
    assert!(gw.metric("dcr_gateway_acl_matches_total{action=\"block\",rule=\"block-gb-except-scotland\"}") >= 1.0);
    let audit = gw.wait_audit(8);
    let blocked: Vec<_> = audit.iter().filter(|l| l["decision"] == "block").collect();
    assert!(blocked
        .iter()
        .any(|l| l["rule"] == "block-asn-7018" && l["asn"] == 7018 && l["scope"] == "authentication"));
    assert!(blocked.iter().any(|l| l["country"] == "GB" && l["subdivisions"][0] == "GB-ENG"));
}

#[test]
fn user_agent_hostname_and_log_rules() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .rules(r#"[
          {"id":"log-curl","active":true,"priority":1,"rule":{"action":{"log":true},"scope":"tenant","match":{"user_agents":["curl/*"]}}},
          {"id":"block-bots","active":true,"priority":2,"rule":{"action":{"block":true},"scope":"tenant","match":{"user_agents":["*bot*"]}}},
          {"id":"block-other-hosts","active":true,"priority":3,"rule":{"action":{"block":true},"scope":"dcr","not_match":{"hostnames":["idp.example.com"]}}}
        ]"#)
        .start();
    let r = |ua: &str, host: &str| {
        response_parts(
            agent()
                .post(&gw.url("/oidc/register"))
                .set("user-agent", ua)
                .set("host", host)
                .set("content-type", "application/json")
                .send_string(r#"{"client_name":"UA","redirect_uris":["https://ua.example.com/cb"]}"#),
        )
        .0
    };
    assert_eq!(r("curl/8.0", "IDP.example.com:8080"), 201);
    assert_eq!(r("GoogleBot/2.1", "idp.example.com"), 403);
    assert_eq!(r("curl/8.0", "evil.example.com"), 403);
    let lines = gw.wait_audit(3);
    let first = lines.iter().find(|l| l["decision"] == "allow").expect("the allowed registration's line");
    assert_eq!(first["logged_rules"][0], "log-curl");
    assert_eq!(first["decision"], "allow");
    assert!(gw.metric("dcr_gateway_acl_matches_total{action=\"log\",rule=\"log-curl\"}") >= 2.0);
}

#[test]
fn fingerprint_headers_only_from_trusted_peers() {
    let up = Upstream::start();
    let rules = r#"[{"id":"block-ja4","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ja4_fingerprints":["t13d1516h2_8daaf6152771_b186095e22b6"]}}}]"#;
    let trusted = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = [\"127.0.0.1/32\"]\nja4_header = \"cf-ja4\"")
        .rules(rules)
        .start();
    let call = |gw: &Gateway| {
        response_parts(agent().get(&gw.url("/authorize")).set("cf-ja4", "t13d1516h2_8daaf6152771_b186095e22b6").call())
            .0
    };
    assert_eq!(call(&trusted), 403);
    let untrusted =
        GatewayBuilder::new(&up.origin()).network("trusted_proxies = []\nja4_header = \"cf-ja4\"").rules(rules).start();
    assert_eq!(call(&untrusted), 200, "a client cannot claim a fingerprint");
}

#[test]
fn default_action_block() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .rules(r#"[{"id":"allow-office","active":true,"priority":1,"rule":{"action":{"allow":true},"scope":"tenant","match":{"ipv4_cidrs":["10.0.0.0/8"]}}}]"#)
        .acl_keys("default_action = \"block\"")
        .start();
    assert_eq!(get_from(&gw, "/authorize", "10.1.1.1").0, 200);
    assert_eq!(get_from(&gw, "/authorize", "11.1.1.1").0, 403);
}

fn versioned_rules(v: &str) -> String {
    format!(
        r#"[
      {{"id":"{v}-log","active":true,"priority":1,"rule":{{"action":{{"log":true}},"scope":"tenant","match":{{"ipv4_cidrs":["203.0.113.0/24"]}}}}}},
      {{"id":"{v}-block","active":true,"priority":2,"rule":{{"action":{{"block":true}},"scope":"tenant","match":{{"ipv4_cidrs":["203.0.113.0/24"]}}}}}}
    ]"#
    )
}

#[test]
fn reload_under_traffic_never_fails_a_request_nor_mixes_rule_sets() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).rules(&versioned_rules("a")).start();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let url = gw.url("/authorize");
        let stop = stop.clone();
        let sent = sent.clone();
        workers.push(std::thread::spawn(move || {
            let agent = agent();
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match agent.get(&url).set("x-forwarded-for", "203.0.113.5").call() {
                    Err(ureq::Error::Status(403, _)) => {}
                    Ok(r) => bad.push(format!("status {}", r.status())),
                    Err(e) => bad.push(e.to_string()),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            bad
        }));
    }
    let rules = gw.path("rules.json");
    let reloads_before = gw.metric("dcr_gateway_reloads_total{result=\"success\"}");
    for i in 0..20 {
        let v = if i % 2 == 0 { "b" } else { "a" };
        write_file(&rules, &versioned_rules(v));
        if i % 3 == 0 {
            gw.signal("HUP");
        }
        let want = reloads_before + (i as f64) + 1.0;
        wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_reloads_total{result=\"success\"}") >= want);
    }
    // A broken file keeps the last good rules.
    write_file(&rules, "[{\"id\":\"x\",\"rule\":{\"action\":{}}}]");
    assert!(wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_reloads_total{result=\"failure\"}") >= 1.0));
    assert_eq!(get_from(&gw, "/authorize", "203.0.113.5").0, 403, "last good rules still serve");
    assert!(gw.stderr_text().contains("rules.json"), "the error names the file");
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.join().unwrap());
    }
    assert!(failures.is_empty(), "failed requests during reloads: {failures:?}");
    assert!(sent.load(Ordering::Relaxed) > 20);
    assert!(gw.metric("dcr_gateway_reloads_total{result=\"success\"}") >= reloads_before + 15.0);
    let lines = gw.audit_lines();
    // Every blocked request is audited: without lines the check below would hold vacuously.
    assert!(lines.len() >= 20, "only {} audit lines", lines.len());
    for line in lines {
        let rule = line["rule"].as_str().unwrap_or("");
        let logged = line["logged_rules"][0].as_str().unwrap_or("");
        assert!(
            (rule == "a-block" && logged == "a-log") || (rule == "b-block" && logged == "b-log"),
            "a request was judged by a mixed rule set: {line}"
        );
    }
}

#[test]
fn test_rules_and_explain_on_the_shipped_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    std::fs::write(&city, geo_fixture()).unwrap();
    let city = city.to_str().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["test-rules", "--rules", &format!("{root}/conf/rules.json"), "--geoip-db", city])
        .arg(format!("{root}/conf/rules.tests.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let cases = dir.path().join("cases.json");
    std::fs::write(&cases, r#"[{"name":"wrong on purpose","ip":"192.0.2.1","expect":"allow"}]"#).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["test-rules", "--rules", &format!("{root}/conf/rules.json"), "--geoip-db", city])
        .arg(&cases)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL wrong on purpose"));

    // Without the database the geo rules need, both refuse (exit 2) as check does, naming
    // the rules, instead of evaluating them as never matching.
    for args in [
        vec!["test-rules", "--rules", &format!("{root}/conf/rules.json"), cases.to_str().unwrap()],
        vec!["explain", "--rules", &format!("{root}/conf/rules.json"), "--ip", "81.2.69.142"],
    ] {
        let out = std::process::Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("geo_country_codes") && err.contains("--geoip-db"), "{err}");
        assert!(err.contains("rules \"block-embargoed-countries-dcr\" use"), "{err}");
        assert!(out.stdout.is_empty(), "nothing evaluated: {}", String::from_utf8_lossy(&out.stdout));
    }
    let asn_rules = dir.path().join("asn.json");
    std::fs::write(
        &asn_rules,
        r#"[{"id":"cloud","active":true,"rule":{"action":{"block":true},"scope":"dcr","match":{"asns":[64500]}}}]"#,
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["explain", "--rules", asn_rules.to_str().unwrap(), "--ip", "192.0.2.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules \"cloud\" use asns") && err.contains("--asn-db"), "{err}");

    let out = std::process::Command::new(BIN)
        .args(["explain", "--rules", &format!("{root}/conf/rules.json"), "--geoip-db", city])
        .args(["--ip", "81.2.69.142", "--ua", "curl/8", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["rule"], serde_json::Value::Null);
    assert_eq!(v["logged"][0], "log-scripted-registrations");
    assert_eq!(v["monitored"][0], serde_json::json!({"rule": "log-scripted-registrations", "action": "log"}));
    assert_eq!(v["signals"]["country"], "GB");
    assert_eq!(v["signals"]["subdivisions"][0], "GB-ENG");
}

#[test]
fn check_and_explain_name_active_asn_rules_without_an_asn_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), "[acl]\nrules = \"rules.json\"\n").unwrap();
    std::fs::write(
        dir.path().join("rules.json"),
        r#"[{"id":"by-asn","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"dcr","match":{"asns":[64500]}}},
            {"id":"idle","active":false,"priority":2,"rule":{"action":{"block":true},"scope":"dcr","match":{"asns":[64501]}}}]"#,
    )
    .unwrap();
    let out =
        std::process::Command::new(BIN).args(["check", "-c"]).arg(dir.path().join("gateway.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules use asns but geoip.asn_db is not set"), "{err}");
    let out = std::process::Command::new(BIN)
        .args(["explain", "--ip", "192.0.2.1", "--rules"])
        .arg(dir.path().join("rules.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"rules "by-asn" use asns"#) && err.contains("--asn-db"), "{err}");
    assert!(!err.contains("idle"), "an inactive rule needs nothing: {err}");
}

#[test]
fn check_rejects_geo_rules_without_a_database_and_bad_rules_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), "[acl]\nrules = \"rules.json\"\n").unwrap();
    std::fs::write(
        dir.path().join("rules.json"),
        r#"[{"id":"geo","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"dcr","match":{"geo_country_codes":["US"]}}}]"#,
    )
    .unwrap();
    let out =
        std::process::Command::new(BIN).args(["check", "-c"]).arg(dir.path().join("gateway.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("geoip.country_db"));

    std::fs::write(
        dir.path().join("rules.json"),
        r#"[{"id":"ok","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["10.0.0.0/8"]}}},
            {"id":"bad-cidr","active":true,"priority":2,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["10.0.0.300/8"]}}}]"#,
    )
    .unwrap();
    let out =
        std::process::Command::new(BIN).args(["check", "-c"]).arg(dir.path().join("gateway.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad-cidr") && err.contains("ipv4_cidrs") && err.contains("rule 1"), "{err}");
}

/// With the file watcher off, a changed rules file is not picked up until SIGHUP — and then it
/// is: the signal path alone reloads.
#[test]
fn sighup_reloads_without_the_file_watcher() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).rules(&versioned_rules("a")).reload_keys("watch = false").start();
    let before = gw.metric("dcr_gateway_reloads_total{result=\"success\"}");
    let allow_all = r#"[{"id":"allow-all","active":true,"priority":1,"rule":{"action":{"allow":true},"scope":"tenant","match":{"ipv4_cidrs":["0.0.0.0/0"]}}}]"#;
    assert_eq!(get_from(&gw, "/authorize", "203.0.113.5").0, 403);
    write_file(&gw.path("rules.json"), allow_all);
    // Nothing watches the file: the old rules keep serving (checked after a reload would have
    // been seen by a watcher: the debounce is 50 ms, give it many times that).
    assert!(
        !wait_until(Duration::from_millis(600), || gw.metric("dcr_gateway_reloads_total{result=\"success\"}") > before)
    );
    assert_eq!(get_from(&gw, "/authorize", "203.0.113.5").0, 403);
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_reloads_total{result=\"success\"}") > before));
    assert_eq!(get_from(&gw, "/authorize", "203.0.113.5").0, 200, "the signal reloaded the rules");
}

#[test]
fn client_id_hosts_block_cimd_clients_by_host() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .rules(r#"[{"id":"evil-cimd","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"authentication","match":{"client_id_hosts":["*.evil.example"]}}}]"#)
        .start();
    let authorize = |client_id: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", "https://app.example/cb")
            .finish();
        get_from(&gw, &format!("/authorize?{q}"), "198.51.100.7")
    };
    let (status, body) = authorize("https://x.evil.example/c.json");
    assert_eq!(status, 403, "{body}");
    assert_eq!(up.count(), 0, "the IdP saw nothing");
    assert_eq!(authorize("HTTPS://X.EVIL.EXAMPLE./c.json").0, 403, "read as a URL parser reads the host");
    // A repeated client_id cannot hide the blocked host.
    let (status, _) = get_from(
        &gw,
        "/authorize?client_id=https%3A%2F%2Fok.example%2Fc.json&client_id=https%3A%2F%2Fa.evil.example%2Fc.json",
        "198.51.100.7",
    );
    assert_eq!(status, 403);
    assert_eq!(up.count(), 0);
    // Other hosts, plain client_ids and the suffix itself pass.
    for ok in ["https://app.example/c.json", "s6BhdRkqt3", "https://evil.example/c.json", "https://notevil.example/c"] {
        assert_eq!(authorize(ok).0, 200, "{ok}");
    }
    assert_eq!(up.count(), 4);
    assert!(up.last().url.contains("client_id=https%3A%2F%2Fnotevil.example%2Fc"), "{}", up.last().url);
    assert_eq!(gw.metric("dcr_gateway_acl_matches_total{action=\"block\",rule=\"evil-cimd\"}"), 3.0);
}

#[test]
fn explain_and_test_rules_take_a_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"id":"evil-cimd","active":true,"rule":{"action":{"block":true},"scope":"authentication","match":{"client_id_hosts":["*.evil.example"]}}}]"#,
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let explain = |client_id: &str| {
        let out = std::process::Command::new(BIN)
            .args(["explain", "--rules", rules, "--ip", "192.0.2.1", "--scope", "authentication", "--json"])
            .args(["--client-id", client_id])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = explain("https://X.evil.example/c.json");
    assert_eq!((v["decision"].as_str(), v["rule"].as_str()), (Some("block"), Some("evil-cimd")), "{v}");
    assert_eq!(v["signals"]["client_id_hosts"], serde_json::json!(["x.evil.example"]));
    let v = explain("s6BhdRkqt3");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["signals"]["client_id_hosts"], serde_json::json!([]));
    let out = std::process::Command::new(BIN)
        .args(["explain", "--rules", rules, "--ip", "192.0.2.1", "--scope", "authentication"])
        .args(["--client-id", "https://a.evil.example/c.json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("client_id host: a.evil.example"), "{text}");

    let cases = dir.path().join("cases.json");
    std::fs::write(
        &cases,
        r#"[{"name":"evil","ip":"192.0.2.1","scope":"authentication","client_id":"https://a.evil.example/c","expect":"block","rule":"evil-cimd"},
            {"name":"fine","ip":"192.0.2.1","scope":"authentication","client_id":"https://ok.example/c","expect":"allow","rule":null}]"#,
    )
    .unwrap();
    let out = std::process::Command::new(BIN).args(["test-rules", "--rules", rules]).arg(&cases).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
