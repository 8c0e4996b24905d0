//! The `dcr` scope's request handling through the running gateway: media type, size and time
//! bounds, the on/off switch, RFC 7592 updates, permissive mode, and the offline `validate`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

const GOOD: &str = r#"{"client_name":"Reg Test","redirect_uris":["https://reg.example.com/cb"]}"#;

fn post(gw: &Gateway, path: &str, content_type: &str, body: &str) -> (u16, String) {
    response_parts(agent().post(&gw.url(path)).set("content-type", content_type).send_string(body))
}

#[test]
fn media_type_size_and_switch() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).dcr("max_body_bytes = 1024").start();
    assert_eq!(post(&gw, "/oidc/register", "application/json; charset=utf-8", GOOD).0, 201);
    let (status, body) = post(&gw, "/oidc/register", "text/plain", GOOD);
    assert_eq!(status, 415, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"], "invalid_request");
    let big = format!(r#"{{"client_name":"{}","redirect_uris":["https://reg.example.com/cb"]}}"#, "x".repeat(2000));
    assert_eq!(post(&gw, "/oidc/register", "application/json", &big).0, 413);
    // Chunked (no Content-Length) over the limit is cut while reading.
    let req = format!(
        "POST /oidc/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        big.len(),
        big
    );
    assert_eq!(raw_status(&raw_request(gw.http, req.as_bytes())), 413);
    assert_eq!(up.count(), 1, "only the valid registration reached the IdP");
}

#[test]
fn a_trickling_sender_gets_408() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).dcr("body_read_timeout_ms = 300").start();
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST /oidc/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"client_name\"").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(raw_status(&text), 408, "{text}");
    assert_eq!(up.count(), 0);
}

#[test]
fn disabled_registration_is_403_and_reloadable() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).dcr("enabled = false").start();
    let (status, body) = post(&gw, "/oidc/register", "application/json", GOOD);
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "access_denied");
    assert_eq!(v["error_description"], "dynamic client registration is disabled");
    assert_eq!(up.count(), 0);
    assert_eq!(gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"disabled\"}", 1.0), 1.0);
    // Switch it on by editing the config: picked up by the file watcher.
    let cfg = std::fs::read_to_string(gw.config_path()).unwrap().replace("enabled = false", "enabled = true");
    write_file(&gw.config_path(), &cfg);
    assert!(wait_until(Duration::from_secs(10), || post(&gw, "/oidc/register", "application/json", GOOD).0 == 201));
}

#[test]
fn client_configuration_updates_are_validated_and_keep_the_client_id() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).start();
    let put = |body: &str| {
        response_parts(
            agent()
                .put(&gw.url("/oidc/register/client-7"))
                .set("content-type", "application/json")
                .set("authorization", "Bearer rat-from-idp")
                .send_string(body),
        )
    };
    let (status, _) =
        put(r#"{"client_id":"client-7","client_name":"Renamed","redirect_uris":["https://reg.example.com/cb"]}"#);
    assert_eq!(status, 200);
    let r = up.last();
    assert_eq!(r.method, "PUT");
    assert_eq!(r.url, "/oidc/register/client-7");
    let doc = r.json();
    assert_eq!(doc["client_id"], "client-7");
    assert_eq!(doc["client_name"], "Renamed");
    assert_eq!(r.header("authorization").as_deref(), Some("Bearer rat-from-idp"), "RFC 7592 access token passes");
    let (status, body) = put(r#"{"client_id":"client-7","client_name":"x","redirect_uris":["javascript:alert(1)"]}"#);
    assert_eq!(status, 400, "{body}");
    assert_eq!(up.recorded().iter().filter(|r| r.method == "PUT").count(), 1);
    // GET and DELETE pass; POST on a client path is not allowed.
    assert_eq!(response_parts(agent().get(&gw.url("/oidc/register/client-7")).call()).0, 200);
    // The IdP answers 200; RFC 7592 §2.3 says 204 (normalize_registration_status, on by default).
    assert_eq!(response_parts(agent().delete(&gw.url("/oidc/register/client-7")).call()).0, 204);
    let (status, _) = post(&gw, "/oidc/register/client-7", "application/json", GOOD);
    assert_eq!(status, 405);
    // CORS preflight reaches the IdP.
    let pre = raw_request(gw.http, b"OPTIONS /oidc/register HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&pre), 200, "{pre}");
    assert_eq!(up.last().method, "OPTIONS");
}

#[test]
fn permissive_mode_allows_legacy_grants() {
    let up = Upstream::start();
    let implicit = r#"{"client_name":"Legacy","redirect_uris":["https://legacy.example.com/cb"],"grant_types":["implicit"],"response_types":["token"],"x_vendor":"kept"}"#;
    let strict = GatewayBuilder::new(&up.origin()).start();
    assert_eq!(post(&strict, "/oidc/register", "application/json", implicit).0, 400);
    let permissive = GatewayBuilder::new(&up.origin()).dcr("security_mode = \"permissive\"").start();
    assert_eq!(post(&permissive, "/oidc/register", "application/json", implicit).0, 201);
    assert_eq!(up.last().json()["x_vendor"], "kept", "permissive forwards unknown members");
}

#[test]
fn validate_command_runs_the_same_check_offline() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.json");
    std::fs::write(&ok, r#"{"client_name":"  Offline  ","redirect_uris":["https://o.example.com/cb"]}"#).unwrap();
    let out = std::process::Command::new(BIN).arg("validate").arg(&ok).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["client_name"], "Offline");
    assert_eq!(v["token_endpoint_auth_method"], "client_secret_post");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"client_name":"x","redirect_uris":["http://not-loopback.example/cb"]}"#).unwrap();
    let out = std::process::Command::new(BIN).arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "invalid_redirect_uri");
    assert!(v["error_description"].as_str().unwrap().starts_with("redirect_uris[0]"));

    let implicit = dir.path().join("implicit.json");
    std::fs::write(&implicit, r#"{"client_name":"x","redirect_uris":["https://o.example.com/cb"],"grant_types":["implicit"],"response_types":["token"]}"#).unwrap();
    let strict = std::process::Command::new(BIN).arg("validate").arg(&implicit).output().unwrap();
    assert_eq!(strict.status.code(), Some(1));
    let permissive =
        std::process::Command::new(BIN).args(["validate", "--mode", "permissive"]).arg(&implicit).output().unwrap();
    assert_eq!(permissive.status.code(), Some(0));
}

/// `validate -c` judges with the policy the running proxy uses: `[dcr]` with the tenant
/// settings file (written by the admin API) laid over it.
#[test]
fn validate_with_a_config_uses_the_tenant_settings_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "[dcr]\nsecurity_mode = \"strict\"\n[admin]\nsettings_file = \"tenant-settings.json\"\n")
        .unwrap();
    let implicit = dir.path().join("implicit.json");
    std::fs::write(&implicit, r#"{"client_name":"x","redirect_uris":["https://o.example.com/cb"],"grant_types":["implicit"],"response_types":["token"]}"#).unwrap();
    let run = || std::process::Command::new(BIN).args(["validate", "-c"]).arg(&config).arg(&implicit).output().unwrap();
    assert_eq!(run().status.code(), Some(1), "strict as configured");
    std::fs::write(
        dir.path().join("tenant-settings.json"),
        r#"{"dynamic_client_registration_security_mode":"permissive"}"#,
    )
    .unwrap();
    let out = run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "permissive through the settings file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
