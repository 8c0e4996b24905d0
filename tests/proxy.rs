//! The gateway as a reverse proxy: forwarding headers, client-IP trust, scope classification,
//! path mapping, upstream failures and graceful shutdown — through the real binary.

mod support;

use std::time::Duration;

use support::upstream::Upstream;
use support::*;

const REG: &str = r#"{"client_name":"Test App","redirect_uris":["https://app.example.com/cb"]}"#;

fn post_json(url: &str, body: &str) -> (u16, String) {
    response_parts(agent().post(url).set("content-type", "application/json").send_string(body))
}

#[test]
fn forwards_with_forwarding_headers_and_request_id() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).network("trusted_proxies = []").start();
    let resp = agent().get(&gw.url("/authorize?x=1")).set("host", "idp.example.com:8080").call().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("x-upstream"), Some("yes"), "response headers stream back unchanged");
    let rid = resp.header("x-request-id").expect("request id returned").to_string();
    assert_eq!(rid.len(), 32);
    let r = up.last();
    assert_eq!(r.url, "/authorize?x=1");
    assert_eq!(r.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.header("x-forwarded-host").as_deref(), Some("idp.example.com:8080"));
    assert_eq!(r.header("x-request-id"), Some(rid));
}

#[test]
fn spoofed_headers_from_an_untrusted_peer_are_ignored() {
    let up = Upstream::start();
    // 127.0.0.1 is not trusted here: whatever it claims is replaced.
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = [\"10.0.0.0/8\"]")
        .rules(r#"[{"id":"block-spoofed","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["6.6.6.6"]}}}]"#)
        .start();
    let resp = agent()
        .get(&gw.url("/userinfo"))
        .set("x-forwarded-for", "6.6.6.6")
        .set("x-request-id", "attacker-chosen")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200, "the spoofed address must not be judged");
    assert_ne!(resp.header("x-request-id"), Some("attacker-chosen"));
    let r = up.last();
    assert_eq!(r.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_ne!(r.header("x-request-id").as_deref(), Some("attacker-chosen"));
}

#[test]
fn trusted_peer_forwarded_for_is_believed_and_appended() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]")
        .rules(r#"[{"id":"block-evil","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["203.0.113.0/24"]}}}]"#)
        .start();
    // The client wrote 1.1.1.1 itself; our trusted edge 10.0.0.1 appended the real 203.0.113.9.
    let (status, body) = response_parts(
        agent().get(&gw.url("/authorize")).set("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.1").call(),
    );
    assert_eq!(status, 403, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "access_denied");
    assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(!body.contains("block-evil"), "the rule id is not revealed");

    let resp = agent()
        .get(&gw.url("/authorize"))
        .set("x-forwarded-for", "198.51.100.4")
        .set("x-request-id", "edge-req-42")
        .call()
        .unwrap();
    assert_eq!(resp.header("x-request-id"), Some("edge-req-42"), "a trusted proxy's request id is kept");
    let r = up.last();
    assert_eq!(r.header("x-forwarded-for").as_deref(), Some("198.51.100.4, 127.0.0.1"));
    assert_eq!(r.header("x-request-id").as_deref(), Some("edge-req-42"));
}

#[test]
fn registration_path_is_mapped_and_every_spelling_is_dcr() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).extra("[routes]\nupstream_registration_path = \"/reg\"").start();
    let (status, body) = post_json(&gw.url("/oidc/register"), REG);
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.last().url, "/reg");
    assert_eq!(up.last().method, "POST");

    // Spellings an IdP would route to its registration endpoint are classified dcr: GET is
    // refused with 405 by the gateway and never reaches the upstream.
    let before = up.count();
    for target in [
        "//oidc/register",
        "/oidc/register/",
        "/oidc/./register",
        "/OIDC/Register",
        "/oidc/%72egister",
        "/oidc/register?x=1",
        "/reg",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = raw_request(gw.http, req.as_bytes());
        assert_eq!(raw_status(&resp), 405, "{target}: {resp}");
        assert!(resp.to_ascii_lowercase().contains("allow: post"), "{target}: {resp}");
    }
    assert_eq!(up.count(), before, "nothing reached the IdP");

    // RFC 7592 client configuration paths are forwarded under the mapped path.
    let resp = agent().get(&gw.url("/oidc/register/Client-AbC?x=1")).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().url, "/reg/Client-AbC?x=1");
}

#[test]
fn management_and_authentication_scopes_end_to_end() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .rules(r#"[
          {"id":"mgmt-block","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"management","match":{"ipv4_cidrs":["127.0.0.0/8"]}}},
          {"id":"auth-log","active":true,"priority":2,"rule":{"action":{"log":true},"scope":"authentication","match":{"ipv4_cidrs":["127.0.0.0/8"]}}}
        ]"#)
        .start();
    assert_eq!(http_get(&gw.url("/api/v2/clients")).0, 403);
    assert_eq!(http_get(&gw.url("//API/v2/users")).0, 403);
    assert_eq!(http_get(&gw.url("/scim/v2/Users")).0, 403);
    assert_eq!(http_get(&gw.url("/api/v20")).0, 200);
    assert_eq!(http_get(&gw.url("/authorize")).0, 200);
}

#[test]
fn unreachable_upstream_is_502_json() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = GatewayBuilder::new(&dead).upstream_keys("health_check = \"none\"").start();
    let (status, body) = http_get(&gw.url("/authorize"));
    assert_eq!(status, 502, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "temporarily_unavailable");
    assert!(v["error_description"].as_str().unwrap().len() > 5);
    assert_eq!(v["request_id"].as_str().unwrap().len(), 32);
    // The gateway is still up.
    assert_eq!(http_get(&gw.admin_url("/healthz")).0, 200);
    assert!(gw.metric("dcr_gateway_upstream_errors_total{kind=\"connect_failure\"}") >= 1.0);
}

#[test]
fn slow_upstream_is_504_json() {
    let up = Upstream::start();
    // Health checks off: this test is about the read timeout, not about a probe that may or
    // may not run while the upstream is busy.
    let gw = GatewayBuilder::new(&up.origin()).upstream_keys("health_check = \"none\"").start();
    let (status, body) = http_get(&gw.url("/slow/4000"));
    assert_eq!(status, 504, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "temporarily_unavailable");
    assert!(v["request_id"].is_string());
    assert_eq!(http_get(&gw.url("/authorize")).0, 200, "a broken upstream does not take the gateway down");
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let up = Upstream::start();
    let mut gw = GatewayBuilder::new(&up.origin()).start();
    let url = gw.url("/slow/1000");
    let inflight = std::thread::spawn(move || http_get(&url));
    assert!(wait_until(Duration::from_secs(5), || up.count() >= 1), "request reached upstream");
    gw.signal("TERM");
    let (status, _) = inflight.join().unwrap();
    assert_eq!(status, 200, "the in-flight request completed");
    let st = gw.wait_exit(Duration::from_secs(15)).expect("gateway exited after SIGTERM");
    assert!(st.success(), "exit status {st}");
}

#[test]
fn check_command_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gateway.toml");
    std::fs::write(&p, "[upstream]\norigins = [\"ftp://idp\"]\n[network]\ntrusted_proxies = [\"10.0.0.0/40\"]\n")
        .unwrap();
    let out = std::process::Command::new(BIN).args(["check", "-c"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstream.origins[0]"), "{err}");
    assert!(err.contains("network.trusted_proxies[0]"), "{err}");
    assert!(err.contains("gateway.toml"), "{err}");

    std::fs::write(&p, "[server]\nthreadz = 1\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "-c"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("threadz"));

    std::fs::write(&p, "[upstream]\norigins = [\"http://127.0.0.1:1\"]\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "-c"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
