//! Clients stay on the gateway: discovery documents, registration answers and `Location`
//! headers that point at the IdP are rewritten to the gateway's public address, and a
//! successful registration is answered 201 whatever 2xx the IdP used.

mod support;

use support::raw_upstream::RawUpstream;
use support::*;

const DISCOVERY: &str = r#"{"issuer":"{origin}/api/oidc","authorization_endpoint":"{origin}/api/oidc/auth","token_endpoint":"{origin}/api/oidc/token","jwks_uri":"{origin}/api/oidc/jwks","registration_endpoint":"{origin}/api/oidc/register","end_session_endpoint":"https://elsewhere.example/logout"}"#;

fn gateway(up: &RawUpstream, extra_routes: &str) -> Gateway {
    GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = []")
        .upstream_keys("health_check = \"none\"")
        .extra(&format!("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"/api/oidc/register\"\n{extra_routes}"))
        .start()
}

fn get_json(url: &str, host: &str) -> (u16, serde_json::Value, Option<String>) {
    let r = agent().get(url).set("host", host).call().unwrap();
    let len = r.header("content-length").map(str::to_string);
    let status = r.status();
    (status, serde_json::from_str(&r.into_string().unwrap()).unwrap(), len)
}

#[test]
fn discovery_documents_point_at_the_gateway() {
    let up = RawUpstream::start();
    up.respond_with("/.well-known/openid-configuration", 200, "application/json; charset=utf-8", DISCOVERY);
    up.respond_with("/api/oidc/.well-known/oauth-authorization-server", 200, "application/json", DISCOVERY);
    let gw = gateway(&up, "");
    for path in ["/.well-known/openid-configuration", "/api/oidc/.well-known/oauth-authorization-server"] {
        let (status, doc, _) = get_json(&gw.url(path), "auth.example.com");
        assert_eq!(status, 200);
        assert_eq!(doc["registration_endpoint"], "http://auth.example.com/oidc/register", "{path}: {doc}");
        assert_eq!(doc["token_endpoint"], "http://auth.example.com/api/oidc/token");
        assert_eq!(doc["jwks_uri"], "http://auth.example.com/api/oidc/jwks");
        assert_eq!(doc["issuer"], format!("{}/api/oidc", up.origin()), "issuer is the IdP's");
        assert_eq!(doc["end_session_endpoint"], "https://elsewhere.example/logout");
    }
    // The rewritten document holds the request's Host: caches must key on it.
    let r = agent().get(&gw.url("/.well-known/openid-configuration")).set("host", "x.example").call().unwrap();
    assert!(r.header("vary").is_some_and(|v| v.to_ascii_lowercase().contains("host")));
    // The IdP was asked for an uncompressed document.
    let seen = up.recorded();
    assert!(seen.iter().all(|r| r.header("accept-encoding").is_none()));
    assert_eq!(gw.wait_metric("dcr_gateway_answers_rewritten_total{kind=\"discovery\"}", 3.0), 3.0);
}

#[test]
fn public_base_url_wins_and_can_be_turned_off() {
    let up = RawUpstream::start();
    up.respond_with("/.well-known/openid-configuration", 200, "application/json", DISCOVERY);
    let gw = gateway(&up, "public_base_url = \"https://login.example.com/\"");
    let (_, doc, _) = get_json(&gw.url("/.well-known/openid-configuration"), "whatever");
    assert_eq!(doc["registration_endpoint"], "https://login.example.com/oidc/register");
    drop(gw);
    let gw = gateway(&up, "rewrite_discovery = false");
    let (_, doc, _) = get_json(&gw.url("/.well-known/openid-configuration"), "whatever");
    assert_eq!(doc["registration_endpoint"], format!("{}/api/oidc/register", up.origin()));
}

#[test]
fn registration_answers_are_201_and_point_at_the_gateway() {
    let up = RawUpstream::start();
    // An IdP that answers 200 (Glewlwyd does) with its own registration_client_uri.
    up.respond_with(
        "/api/oidc/register",
        200,
        "application/json",
        r#"{"client_id":"c{n}","client_secret":"SECRET-s3cr3t","registration_access_token":"RAT-t0k3n","registration_client_uri":"{origin}/api/oidc/register/c{n}"}"#,
    );
    let gw = gateway(&up, "");
    let body = r#"{"client_name":"App","redirect_uris":["https://app.example.com/cb"]}"#;
    let r = agent()
        .post(&gw.url("/oidc/register"))
        .set("host", "auth.example.com")
        .set("content-type", "application/json")
        .send_string(body)
        .unwrap();
    assert_eq!(r.status(), 201, "normalized to RFC 7591's 201");
    let doc: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(doc["registration_client_uri"], "http://auth.example.com/oidc/register/c1");
    assert_eq!(doc["client_secret"], "SECRET-s3cr3t", "the rest of the answer is the IdP's");
    gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"accepted\"}", 1.0);
    let audit = gw.wait_audit(1);
    assert_eq!(audit[0]["client_id"], "c1");
    assert_eq!(audit[0]["upstream_status"], 200);
    assert_eq!(audit[0]["status"], 201);
    // RFC 7592 read through the gateway: rewritten too.
    let r = agent().get(&gw.url("/oidc/register/c1")).set("host", "auth.example.com").call().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(doc["registration_client_uri"], "http://auth.example.com/oidc/register/c2");
}

#[test]
fn idp_rejections_are_audited_with_the_idps_error_code() {
    let up = RawUpstream::start();
    up.respond_with(
        "/api/oidc/register",
        400,
        "application/json",
        r#"{"error":"invalid_client_metadata","error_description":"<b>nope</b>"}"#,
    );
    let gw = gateway(&up, "");
    let body = r#"{"client_name":"App","redirect_uris":["https://app.example.com/cb"]}"#;
    let (status, _) = response_parts(
        agent().post(&gw.url("/oidc/register")).set("content-type", "application/json").send_string(body),
    );
    assert_eq!(status, 400);
    let audit = gw.wait_audit(1);
    assert_eq!(audit[0]["idp_error"], "invalid_client_metadata");
    assert_eq!(audit[0]["upstream_status"], 400);
    assert_eq!(audit[0]["method"], "POST");
    assert_eq!(audit[0]["path"], "/api/oidc/register");
    gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"rejected_by_idp\"}", 1.0);
}

#[test]
fn redirects_to_the_idps_own_address_stay_on_the_gateway() {
    let up = RawUpstream::start();
    up.respond_with_headers("/api/oidc/auth", 302, &["Location: {origin}/login.html?x=1"], "");
    up.respond_with_headers("/elsewhere", 302, &["Location: https://accounts.example.org/login"], "");
    let gw = gateway(&up, "");
    let r = agent().get(&gw.url("/api/oidc/auth?client_id=a")).set("host", "auth.example.com").call().unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.header("location"), Some("http://auth.example.com/login.html?x=1"));
    let r = agent().get(&gw.url("/elsewhere")).set("host", "auth.example.com").call().unwrap();
    assert_eq!(r.header("location"), Some("https://accounts.example.org/login"), "other origins untouched");
}

/// The IdP advertises registration at a path the gateway does not guard: refuse to start, and
/// `check` fails naming both paths; when they agree, it starts.
#[test]
fn a_registration_path_the_idp_does_not_use_refuses_to_start() {
    let up = RawUpstream::start();
    up.respond_with(
        "/.well-known/openid-configuration",
        200,
        "application/json",
        r#"{"issuer":"{origin}","registration_endpoint":"{origin}/reg"}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    let port = free_port();
    let admin = free_port();
    let text = |up_path: &str| {
        format!(
            "[server]\npid_file = \"{d}/p\"\nupgrade_sock = \"{d}/s\"\n[listen]\nhttp = [\"127.0.0.1:{port}\"]\nadmin = \"127.0.0.1:{admin}\"\n\
             [upstream]\norigins = [\"{o}\"]\nhealth_check = \"none\"\n[routes]\nupstream_registration_path = \"{up_path}\"\n",
            d = dir.path().display(),
            o = up.origin()
        )
    };
    std::fs::write(&cfg, text("/oidc/register")).unwrap();
    let check = std::process::Command::new(BIN).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(err.contains("\"/reg\"") && err.contains("\"/oidc/register\""), "{err}");
    let run = std::process::Command::new(BIN).args(["run", "-c"]).arg(&cfg).output().unwrap();
    assert!(!run.status.success(), "refused to start");
    assert!(String::from_utf8_lossy(&run.stderr).contains("advertises registration at \"/reg\""));
    // Agreeing configuration: check passes that point.
    std::fs::write(&cfg, text("/reg")).unwrap();
    let check = std::process::Command::new(BIN).args(["check", "-c"]).arg(&cfg).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}
