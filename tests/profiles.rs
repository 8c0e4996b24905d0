//! IdP profiles and the keys that talk to the IdP, checked on what reached the upstream (the
//! raw recording upstream keeps the exact bytes): profile paths and derived members, response
//! verification, brokered registration, Auth0 fronting — and that no secret reaches a log, an
//! audit line or the metrics.

mod support;

use serde_json::{json, Value};
use support::raw_upstream::RawUpstream;
use support::*;

fn register(gw: &Gateway, body: &Value, authorization: Option<&str>) -> (u16, Value) {
    let mut req = agent().post(&gw.url("/oidc/register")).set("content-type", "application/json");
    if let Some(a) = authorization {
        req = req.set("authorization", a);
    }
    let (status, text) = response_parts(req.send_string(&body.to_string()));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text}")))
}

fn public_client() -> Value {
    json!({
        "client_name": "profile test",
        "redirect_uris": ["http://127.0.0.1:8976/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

fn registrations(up: &RawUpstream) -> Vec<support::raw_upstream::RawRecorded> {
    up.recorded().into_iter().filter(|r| r.method == "POST").collect()
}

fn assert_nowhere(gw: &Gateway, secret: &str) {
    for (what, text) in [("stdout", gw.stdout_text()), ("stderr", gw.stderr_text()), ("metrics", gw.metrics())] {
        assert!(!text.contains(secret), "the secret is in {what}");
    }
}

#[test]
fn the_glewlwyd_profile_sets_the_path_and_client_confidential() {
    let up = RawUpstream::start();
    up.respond_with(
        "/api/oidc/register",
        200,
        "application/json",
        r#"{"client_id":"c{n}","token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"redirect_uris":["http://127.0.0.1:8976/cb"]}"#,
    );
    let gw = GatewayBuilder::new(&up.origin()).upstream_keys("profile = \"glewlwyd\"").start();
    let (status, reg) = register(&gw, &public_client(), None);
    assert_eq!(status, 201, "{reg}");
    let sent = registrations(&up);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target_str(), "/api/oidc/register");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["client_confidential"], false, "{body}");

    let mut confidential = public_client();
    confidential["token_endpoint_auth_method"] = "client_secret_post".into();
    confidential["client_confidential"] = false.into();
    register(&gw, &confidential, None);
    let body: Value = serde_json::from_slice(&registrations(&up)[1].body).unwrap();
    assert_eq!(body["client_confidential"], true, "derived from the validated method, not the client's: {body}");

    // The IdP's own registration path is guarded too.
    let (status, _) = response_parts(
        agent()
            .post(&gw.url("/api/oidc/register"))
            .set("content-type", "application/json")
            .send_string(&json!({"redirect_uris": ["javascript:alert(1)"]}).to_string()),
    );
    assert_eq!(status, 400);
    assert_eq!(registrations(&up).len(), 2);
}

#[test]
fn an_idp_that_changes_the_registration_is_counted_and_audited() {
    let up = RawUpstream::start();
    // LemonLDAP::NG-shaped: auth method replaced, grants and response types dropped.
    up.respond_with(
        "/reg",
        201,
        "application/json",
        r#"{"client_id":"c{n}","client_secret":"SECRET-from-idp","token_endpoint_auth_method":"client_secret_basic","redirect_uris":["http://127.0.0.1:8976/cb"]}"#,
    );
    let gw = GatewayBuilder::new(&up.origin()).upstream_keys("profile = \"node-oidc-provider\"").start();
    let (status, reg) = register(&gw, &public_client(), None);
    assert_eq!(status, 201, "{reg}");
    let audit = gw.wait_audit(1);
    let line = audit.iter().find(|l| l["client_id"] == "c1").unwrap_or_else(|| panic!("{audit:?}"));
    assert_eq!(line["idp_changed_members"], json!(["grant_types", "response_types", "token_endpoint_auth_method"]));
    for m in ["grant_types", "response_types", "token_endpoint_auth_method"] {
        assert_eq!(gw.wait_metric(&format!("dcr_gateway_registration_differences_total{{member=\"{m}\"}}"), 1.0), 1.0);
    }
    assert_eq!(gw.metric("dcr_gateway_registration_differences_total{member=\"redirect_uris\"}"), 0.0);
    assert_nowhere(&gw, "SECRET-from-idp");
}

#[test]
fn an_idp_that_echoes_the_registration_leaves_no_difference() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin()).upstream_keys("profile = \"node-oidc-provider\"").start();
    let (status, reg) = register(&gw, &public_client(), None);
    assert_eq!(status, 201, "{reg}");
    let audit = gw.wait_audit(1);
    assert!(audit[0].get("idp_changed_members").is_none(), "{audit:?}");
}

#[test]
fn brokered_registration_sends_the_gateways_token_only() {
    const TOKEN: &str = "iat-Zq9w1fGmK3pL0xYv";
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .file("iat.txt", format!("{TOKEN}\n").into_bytes())
        .upstream_keys("profile = \"node-oidc-provider\"\nregistration_token_file = \"iat.txt\"")
        .start();
    let (status, _) = register(&gw, &public_client(), Some("Bearer client-chosen-token"));
    assert_eq!(status, 201);
    let (status, _) = register(&gw, &public_client(), None);
    assert_eq!(status, 201);
    let sent = registrations(&up);
    assert_eq!(sent.len(), 2);
    for r in &sent {
        assert_eq!(r.header_all("authorization"), [format!("Bearer {TOKEN}")], "exactly the gateway's token");
    }
    // A refused registration never carries it anywhere; RFC 7592 calls keep their own token.
    let (status, _) = register(&gw, &json!({"redirect_uris": ["javascript:alert(1)"]}), None);
    assert_eq!(status, 400);
    let (status, _) =
        response_parts(agent().get(&gw.url("/oidc/register/client-1")).set("authorization", "Bearer RAT-1").call());
    assert_eq!(status, 200);
    let read = up.recorded().into_iter().find(|r| r.method == "GET" && r.target_str() == "/reg/client-1").unwrap();
    assert_eq!(read.header("authorization").as_deref(), Some("Bearer RAT-1"));
    gw.wait_audit(4);
    assert_nowhere(&gw, TOKEN);
}

#[test]
fn auth0_fronting_headers_host_and_client_ip() {
    const KEY: &str = "cname-key-7f3a9b2c4d";
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .file("cname-api-key", KEY.as_bytes().to_vec())
        .upstream_keys(
            "profile = \"auth0\"\nheaders = [{ name = \"cname-api-key\", value_file = \"cname-api-key\" }]\n\
             client_ip_header = \"true-client-ip\"",
        )
        .network("trusted_proxies = [\"127.0.0.1/32\"]")
        .start();
    let (status, _) = response_parts(
        agent()
            .get(&gw.url("/authorize?client_id=x"))
            .set("host", "login.example.com")
            .set("x-forwarded-for", "203.0.113.9")
            .set("cname-api-key", "client-forged")
            .set("true-client-ip", "198.51.100.1")
            .call(),
    );
    assert_eq!(status, 200);
    let (status, _) = register(&gw, &public_client(), None);
    assert_eq!(status, 201);
    let recorded: Vec<_> = up.recorded().into_iter().filter(|r| !r.target.starts_with(b"/.well-known")).collect();
    assert_eq!(recorded.len(), 2);
    let authorize = &recorded[0];
    assert_eq!(authorize.header_all("cname-api-key"), [KEY]);
    assert_eq!(authorize.header_all("true-client-ip"), ["203.0.113.9"], "the resolved client IP");
    assert_eq!(authorize.header("host"), Some(up.addr.to_string()), "Host: the origin's");
    assert_eq!(authorize.header("x-forwarded-host").as_deref(), Some("login.example.com"));
    assert_eq!(recorded[1].header_all("cname-api-key"), [KEY]);
    assert_eq!(recorded[1].target_str(), "/oidc/register");
    gw.wait_audit(1);
    assert_nowhere(&gw, KEY);
}

#[test]
fn a_missing_or_empty_secret_file_fails_check_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[upstream]\nregistration_token_file = \"empty\"\nheaders = [{ name = \"x-k\", value_file = \"missing\" }]\n",
    )
    .unwrap();
    let out =
        std::process::Command::new(BIN).args(["check", "-c"]).arg(dir.path().join("gateway.toml")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("upstream.registration_token_file"), "{text}");
    assert!(text.contains("upstream.headers[0].value_file"), "{text}");
}

/// `[upstream] refuse_changed_registrations`: a registration the IdP changed is deleted at the
/// IdP with the token it issued (RFC 7592) and refused; nothing the IdP issued reaches the
/// client, a log line or the metrics.
#[test]
fn a_changed_registration_is_undone_and_refused_when_configured() {
    let up = RawUpstream::start();
    up.respond_with(
        "/reg",
        201,
        "application/json",
        r#"{"client_id":"c-changed","client_secret":"SECRET-from-idp","registration_access_token":"RAT-changed-t0k3n","registration_client_uri":"{origin}/reg/c-changed","token_endpoint_auth_method":"client_secret_basic","redirect_uris":["http://127.0.0.1:8976/cb"]}"#,
    );
    up.respond_with("/reg/c-changed", 204, "application/json", "");
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("profile = \"node-oidc-provider\"\nrefuse_changed_registrations = true")
        .start();
    let (status, answer) = register(&gw, &public_client(), None);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_client_metadata");
    let description = answer["error_description"].as_str().unwrap();
    assert!(description.contains("token_endpoint_auth_method") && description.contains("undone"), "{description}");
    assert!(answer.get("client_id").is_none() && answer.get("client_secret").is_none(), "{answer}");

    // What reached the IdP: the registration as the proxy sends it, then its RFC 7592 DELETE.
    let seen: Vec<_> = up.recorded().into_iter().filter(|r| !r.target_str().starts_with("/.well-known")).collect();
    assert_eq!(seen.len(), 2, "{:?}", seen.iter().map(|r| (&r.method, r.target_str())).collect::<Vec<_>>());
    assert_eq!((seen[0].method.as_str(), seen[0].target_str().as_str()), ("POST", "/reg"));
    assert!(seen[0].header("x-forwarded-for").is_some() && seen[0].header("x-request-id").is_some());
    let sent: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(sent["token_endpoint_auth_method"], "none", "{sent}");
    assert_eq!((seen[1].method.as_str(), seen[1].target_str().as_str()), ("DELETE", "/reg/c-changed"));
    assert_eq!(seen[1].header("authorization").as_deref(), Some("Bearer RAT-changed-t0k3n"));

    assert_eq!(gw.wait_metric("dcr_gateway_registrations_undone_total{result=\"deleted\"}", 1.0), 1.0);
    assert_eq!(gw.metric("dcr_gateway_registrations_undone_total{result=\"failed\"}"), 0.0);
    let audit = gw.wait_audit(1);
    let line = audit.iter().find(|l| l["client_id"] == "c-changed").unwrap_or_else(|| panic!("{audit:?}"));
    assert_eq!(line["status"], 400, "{line}");
    assert!(line["idp_changed_members"].as_array().is_some_and(|m| !m.is_empty()), "{line}");
    assert_nowhere(&gw, "SECRET-from-idp");
    assert_nowhere(&gw, "RAT-changed-t0k3n");
}

/// With `refuse_changed_registrations`, a registration the IdP kept as sent is answered as a
/// proxied one would be: 201 (normalized from the IdP's 200), JSON, `no-store`, the
/// `registration_client_uri` on the gateway; one request reached the IdP.
#[test]
fn an_unchanged_registration_passes_when_changes_are_refused() {
    let up = RawUpstream::start();
    up.respond_with(
        "/reg",
        200,
        "application/json",
        r#"{"client_id":"c-kept","registration_access_token":"RAT-kept-t0k3n","registration_client_uri":"{origin}/reg/c-kept","token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"redirect_uris":["http://127.0.0.1:8976/cb"]}"#,
    );
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("profile = \"node-oidc-provider\"\nrefuse_changed_registrations = true")
        .start();
    let r = agent()
        .post(&gw.url("/oidc/register"))
        .set("content-type", "application/json")
        .send_string(&public_client().to_string())
        .expect("201");
    assert_eq!(r.status(), 201);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("x-request-id").is_some());
    let answer: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(answer["client_id"], "c-kept");
    let uri = answer["registration_client_uri"].as_str().unwrap();
    assert!(uri.starts_with(&gw.url("/oidc/register/")), "rewritten onto the gateway: {uri}");
    let seen: Vec<_> = up.recorded().into_iter().filter(|r| !r.target_str().starts_with("/.well-known")).collect();
    assert_eq!(seen.len(), 1, "no DELETE: {:?}", seen.iter().map(|r| (&r.method, r.target_str())).collect::<Vec<_>>());
    assert_eq!(gw.metric("dcr_gateway_registrations_undone_total{result=\"deleted\"}"), 0.0);
    let audit = gw.wait_audit(1);
    assert_eq!(audit[0]["client_id"], "c-kept", "{audit:?}");
    assert_eq!(gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"accepted\"}", 1.0), 1.0);
}

/// RFC 7591 §3.2.1 answers for the client libraries that check them: LemonLDAP::NG 2.16's
/// string `client_id_issued_at` and missing `client_secret_expires_at`, labelled as anything,
/// reach the client as numbers, as `application/json`; with normalization off they pass as sent.
#[test]
fn client_information_answers_are_repaired_into_the_rfc_shape() {
    // As LemonLDAP::NG 2.16 answers: its profile knows it drops the grants, response types and
    // scope, so only the shape is at stake here.
    let lemon = r#"{"client_id":"c-lemon","client_secret":"SECRET-lemon","client_id_issued_at":"1764547200","token_endpoint_auth_method":"client_secret_post","redirect_uris":["http://127.0.0.1:8976/cb"]}"#;
    let mut confidential = public_client();
    confidential["token_endpoint_auth_method"] = "client_secret_post".into();
    for refuse in [false, true] {
        let up = RawUpstream::start();
        up.respond_with("/oauth2/register", 201, "text/plain", lemon);
        let gw = GatewayBuilder::new(&up.origin())
            .upstream_keys(&format!("profile = \"lemonldap-ng\"\nrefuse_changed_registrations = {refuse}"))
            .start();
        let r = agent()
            .post(&gw.url("/oidc/register"))
            .set("content-type", "application/json")
            .send_string(&confidential.to_string())
            .unwrap_or_else(|e| panic!("refuse = {refuse}: {e}"));
        assert_eq!(r.status(), 201);
        assert_eq!(r.header("content-type"), Some("application/json"), "refuse = {refuse}");
        let answer: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
        assert_eq!(answer["client_id_issued_at"], 1764547200u64, "refuse = {refuse}: {answer}");
        assert_eq!(answer["client_secret_expires_at"], 0, "refuse = {refuse}: {answer}");
        assert_eq!(answer["client_secret"], "SECRET-lemon");
    }
    let up = RawUpstream::start();
    up.respond_with("/oauth2/register", 201, "application/json", lemon);
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("profile = \"lemonldap-ng\"")
        .extra("[routes]\nnormalize_registration_status = false")
        .start();
    let (status, answer) = register(&gw, &confidential, None);
    assert_eq!(status, 201);
    assert_eq!(answer["client_id_issued_at"], "1764547200", "not normalized: as the IdP sent it");
    assert!(answer.get("client_secret_expires_at").is_none());
}

/// The glewlwyd profile's management prefixes put Glewlwyd's admin APIs in the `management`
/// scope (a rule on it applies), and leave its end-user login API in `authentication`.
#[test]
fn the_glewlwyd_profile_classes_its_admin_apis_as_management() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("profile = \"glewlwyd\"\nhealth_check = \"none\"")
        .rules(r#"[{"id":"mgmt","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"management","match":{"ipv4_cidrs":["127.0.0.0/8"]}}}]"#)
        .start();
    for path in ["/api/client/", "/api/user/alice", "/api/mod/user/", "/api/scope/", "/api/key/", "/api/delegate/x"] {
        let (status, _) = response_parts(agent().get(&gw.url(path)).call());
        assert_eq!(status, 403, "{path} is management");
    }
    for path in ["/api/auth/", "/api/profile/", "/api/oidc/auth"] {
        let (status, _) = response_parts(agent().get(&gw.url(path)).call());
        assert_eq!(status, 200, "{path} is not management");
    }
    assert!(up.recorded().iter().all(|r| !r.target_str().starts_with("/api/client")));
}

/// With `refuse_changed_registrations`, a changed registration the IdP's answer gives no way to
/// delete (no RFC 7592 token), and an accepted answer the gateway cannot read, are refused all
/// the same; nothing is sent to delete, and the failure is counted.
#[test]
fn changed_or_unreadable_registrations_that_cannot_be_undone_are_refused_and_counted() {
    for answer in [
        r#"{"client_id":"c-kept-at-idp","token_endpoint_auth_method":"client_secret_basic","redirect_uris":["http://127.0.0.1:8976/cb"]}"#,
        "not json at all",
    ] {
        let up = RawUpstream::start();
        up.respond_with("/reg", 201, "application/json", answer);
        let gw = GatewayBuilder::new(&up.origin())
            .upstream_keys("profile = \"node-oidc-provider\"\nrefuse_changed_registrations = true")
            .start();
        let (status, body) = register(&gw, &public_client(), None);
        assert_eq!(status, 400, "{answer}: {body}");
        assert_eq!(body["error"], "invalid_client_metadata");
        assert!(body["error_description"].as_str().unwrap().contains("could not be deleted"), "{body}");
        let seen: Vec<_> = up.recorded().into_iter().filter(|r| !r.target_str().starts_with("/.well-known")).collect();
        assert_eq!(seen.len(), 1, "no DELETE could be sent: {:?}", seen.iter().map(|r| &r.method).collect::<Vec<_>>());
        assert_eq!(gw.wait_metric("dcr_gateway_registrations_undone_total{result=\"failed\"}", 1.0), 1.0);
        assert_eq!(gw.metric("dcr_gateway_registrations_undone_total{result=\"deleted\"}"), 0.0);
    }
}
