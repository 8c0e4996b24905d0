//! End to end: the demo IdP (node-oidc-provider, a real OpenID Provider) behind the gateway,
//! and a real OpenID client library (openid-client) discovering and registering through it.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Stack {
    _idp: support::demo_idp::DemoIdp,
    gw: Gateway,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// IdP on a free port with the gateway's address as issuer, and the gateway in front.
    fn start(dcr_keys: &str) -> Stack {
        Stack::start_with(dcr_keys, Vec::new())
    }

    /// [`Stack::start`] with files placed beside the gateway's configuration.
    fn start_with(dcr_keys: &str, files: Vec<(&str, Vec<u8>)>) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let gw_port = free_port();
        let idp = support::demo_idp::DemoIdp::start(dir.path(), gw_port);
        let record = idp.record.clone();
        let mut builder = GatewayBuilder::new(&idp.origin());
        for (name, bytes) in files {
            builder = builder.file(name, bytes);
        }
        let gw = builder
            .read_timeout_ms(20_000)
            .http_port(gw_port)
            .extra("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"/reg\"")
            .dcr(dcr_keys)
            .start();
        Stack { _idp: idp, gw, record, _dir: dir }
    }

    fn client(&self, case: &str) -> serde_json::Value {
        let issuer = format!("http://{}", self.gw.http);
        let out =
            Command::new("node").arg(root().join("tests/e2e/client.mjs")).arg(&issuer).arg(case).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!("client.mjs printed no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&out.stderr))
        })
    }

    /// What the IdP received on its registration route.
    fn idp_received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn openid_client_discovers_and_registers_through_the_gateway() {
    let s = Stack::start("");
    let d = s.client("discovery");
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(d["issuer"], format!("http://{}", s.gw.http));

    let public = s.client("public");
    assert_eq!(public["ok"], true, "{public}");
    assert!(public["client_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(public["metadata"]["token_endpoint_auth_method"], "none");

    let conf = s.client("confidential");
    assert_eq!(conf["ok"], true, "{conf}");
    assert!(conf["client_secret"].as_str().is_some_and(|c| c.len() > 10));

    // The IdP received the gateway's re-serialized documents, not the client's bytes.
    let got = s.idp_received();
    let posts: Vec<_> = got.iter().filter(|r| r["method"] == "POST").collect();
    assert_eq!(posts.len(), 2, "{got:?}");
    for p in &posts {
        let body = p["body"].as_str().unwrap();
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body, serde_json::to_string(&doc).unwrap(), "compact JSON written by the gateway");
        assert!(p["headers"]["x-request-id"].is_string());
        assert_eq!(p["headers"]["x-forwarded-for"], "127.0.0.1");
    }

    // Audit lines carry the issued client_id, never a secret.
    let audit = s.gw.wait_audit(2);
    let ids: Vec<_> = audit.iter().filter_map(|l| l["client_id"].as_str()).collect();
    assert!(ids.contains(&public["client_id"].as_str().unwrap()), "{audit:?}");
    let secret = conf["client_secret"].as_str().unwrap();
    // The demo IdP issues both (issueRegistrationAccessToken): a missing one would make the
    // leak check below vacuous, so it is required.
    let rat = conf["registration_access_token"].as_str().expect("the IdP issued a registration_access_token");
    assert!(secret.len() > 10 && rat.len() > 10);
    for text in [s.gw.stdout_text(), s.gw.stderr_text(), s.gw.metrics()] {
        assert!(!text.contains(secret), "client_secret leaked");
        assert!(!text.contains(rat), "registration_access_token leaked");
    }
    assert!(s.gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"created\"}", 2.0) >= 2.0);
}

#[test]
fn the_idp_never_receives_an_invalid_registration() {
    let s = Stack::start("");
    let before = s.idp_received().len();
    for body in [
        r#"{"client_name":"x","redirect_uris":["javascript:alert(1)"]}"#,
        r#"{"client_name":"x","redirect_uris":["https://a.example/cb"],"client_name":"dup"}"#,
        r#"{"client_name":"x","redirect_uris":["https://a.example/cb"]} trailing"#,
        r#"{"client_name":"<b>x</b>","redirect_uris":["https://a.example/cb"]}"#,
        r#"{"client_name":"x","redirect_uris":["https://a.example/cb"],"grant_types":["implicit"],"response_types":["token"]}"#,
    ] {
        let (status, resp) = response_parts(
            agent().post(&s.gw.url("/oidc/register")).set("content-type", "application/json").send_string(body),
        );
        assert_eq!(status, 400, "{body} → {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("invalid_"), "{resp}");
    }
    assert_eq!(s.idp_received().len(), before, "nothing reached the IdP");

    // A valid one with noise is normalized before it reaches the IdP.
    let (status, resp) = response_parts(
        agent().post(&s.gw.url("/oidc/register")).set("content-type", "application/json; charset=utf-8").send_string(
            r#"{ "client_name" : "  Spaced Name  ", "redirect_uris":["https://a.example/cb"], "x_unknown": 1 }"#,
        ),
    );
    assert_eq!(status, 201, "{resp}");
    let last = s.idp_received().pop().unwrap();
    let doc: serde_json::Value = serde_json::from_str(last["body"].as_str().unwrap()).unwrap();
    assert_eq!(doc["client_name"], "Spaced Name");
    assert_eq!(doc["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(doc["grant_types"], serde_json::json!(["authorization_code"]));
    assert!(doc.get("x_unknown").is_none(), "strict mode drops unknown members");
}

/// The IdP receives the gateway's bytes: a registration sent with whitespace, an unknown member
/// and an untrimmed name reaches node-oidc-provider compact, without the member, trimmed — so
/// this fails if the client's bytes were passed through.
#[test]
fn the_idp_receives_the_gateways_bytes_not_the_clients() {
    let s = Stack::start("");
    let sent = "{\n  \"client_name\" :  \"  Spaced Name  \",\n  \"x_unknown_member\": 1,\n  \"redirect_uris\": [ \"https://app.example.com/cb\" ],\n  \"token_endpoint_auth_method\": \"none\"\n}";
    let (status, body) = response_parts(
        agent()
            .post(&format!("http://{}/oidc/register", s.gw.http))
            .set("content-type", "application/json")
            .send_string(sent),
    );
    assert_eq!(status, 201, "{body}");
    let got = s.idp_received();
    let post = got.iter().find(|r| r["method"] == "POST").expect("the IdP saw the registration");
    let received = post["body"].as_str().unwrap();
    assert_ne!(received, sent);
    let doc: serde_json::Value = serde_json::from_str(received).unwrap();
    assert_eq!(doc["client_name"], "Spaced Name");
    assert!(doc.get("x_unknown_member").is_none(), "{received}");
    assert!(!received.contains('\n') && !received.contains(": "), "compact: {received}");
}

/// A partner token pinned to its domain and `openid`: the client it registered at the real IdP
/// cannot be moved outside the pin by an RFC 7592 update; a change within the pin reaches the
/// IdP, which applies it. The partner's token use is spent once, by the registration only.
#[test]
fn partner_pins_hold_for_updates_at_the_real_idp() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let out = Command::new(BIN)
        .args(["token", "new", "--file"])
        .arg(&tokens)
        .args(["--label", "partner-x", "--max-uses", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let text = std::fs::read_to_string(&tokens).unwrap().replace(
        "label = \"partner-x\"",
        "label = \"partner-x\"\nredirect_host_allow = [\"*.partner-x.example\"]\nallowed_scopes = [\"openid\"]",
    );
    let s = Stack::start_with(
        "registration = \"token\"\ntoken_file = \"tokens.toml\"",
        vec![("tokens.toml", text.into_bytes())],
    );
    let base = format!("http://{}/oidc/register", s.gw.http);
    let body = r#"{"client_name":"Partner X","redirect_uris":["https://app.partner-x.example/cb"],"scope":"openid","token_endpoint_auth_method":"none","grant_types":["authorization_code"],"response_types":["code"]}"#;
    let (status, text) = response_parts(
        agent()
            .post(&base)
            .set("content-type", "application/json")
            .set("authorization", &format!("Bearer {token}"))
            .send_string(body),
    );
    assert_eq!(status, 201, "{text}");
    let reg: serde_json::Value = serde_json::from_str(&text).unwrap();
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    let rat = reg["registration_access_token"].as_str().expect("RFC 7592 token").to_string();
    let put = |doc: serde_json::Value| {
        response_parts(
            agent()
                .put(&format!("{base}/{client_id}"))
                .set("content-type", "application/json")
                .set("authorization", &format!("Bearer {rat}"))
                .send_string(&doc.to_string()),
        )
    };
    let puts_at_idp = || s.idp_received().iter().filter(|r| r["method"] == "PUT").count();
    let mut doc = serde_json::json!({
        "client_id": client_id, "redirect_uris": ["https://attacker.example/cb"], "scope": "openid",
        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"], "response_types": ["code"],
    });
    assert_eq!(put(doc.clone()).0, 400, "redirect moved outside the pin");
    doc["redirect_uris"] = serde_json::json!(["https://app.partner-x.example/cb"]);
    doc["scope"] = serde_json::json!("openid offline_access");
    assert_eq!(put(doc.clone()).0, 400, "scope widened beyond the pin");
    assert_eq!(puts_at_idp(), 0, "neither update reached the IdP");
    doc["scope"] = serde_json::json!("openid");
    doc["redirect_uris"] = serde_json::json!(["https://www.partner-x.example/cb"]);
    let (status, text) = put(doc);
    assert_eq!(status, 200, "the IdP applied the update within the pin: {text}");
    assert_eq!(puts_at_idp(), 1);
    let updated: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(updated["redirect_uris"], serde_json::json!(["https://www.partner-x.example/cb"]));
    // max_uses = 1 was spent by the registration: a second one is refused before the IdP.
    let (status, _) = response_parts(
        agent()
            .post(&base)
            .set("content-type", "application/json")
            .set("authorization", &format!("Bearer {token}"))
            .send_string(body),
    );
    assert_eq!(status, 401);
}

/// A dynamically registered client's whole life through the gateway, public and confidential,
/// with openid-client (`tests/e2e/dcr_flow.mjs`): registration, RFC 7592 read and update, an
/// authorization-code + PKCE flow ending with an ID token, RFC 7592 delete. Every step reached
/// the IdP through the gateway (its registration route saw each one), and the URLs the client
/// was given are the gateway's.
#[test]
fn registered_clients_live_their_whole_life_through_the_gateway() {
    let s = Stack::start("");
    let gateway = format!("http://{}", s.gw.http);
    for kind in ["public", "confidential"] {
        let redirect = "http://127.0.0.1:45601/cb";
        let out = Command::new("node")
            .arg(root().join("tests/e2e/dcr_flow.mjs"))
            .arg(&gateway)
            .arg(redirect)
            .arg(kind)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!("dcr_flow.mjs printed no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&out.stderr))
        });
        assert_eq!(r["ok"], true, "{kind}: {r}");
        let id = r["client_id"].as_str().unwrap();
        // On the gateway (the IdP believes it is served there, so it builds its own path on the
        // gateway's origin: `/reg/<id>`, which the gateway classes `dcr` like the public path).
        assert!(r["registration_client_uri"].as_str().unwrap().starts_with(&format!("{gateway}/")), "{kind}: {r}");
        assert!(r["authorization_endpoint"].as_str().unwrap().starts_with(&gateway), "{kind}: {r}");
        assert_eq!(
            r["read"]["token_endpoint_auth_method"],
            if kind == "public" { "none" } else { "client_secret_post" }
        );
        assert!(r["updated_name"].as_str().unwrap().ends_with("(updated)"), "{kind}: {r}");
        assert_eq!(r["id_token_claims"]["aud"], id, "{kind}: {r}");
        assert_eq!(r["id_token_claims"]["iss"], gateway, "{kind}: {r}");
        assert_eq!(r["deleted_status"], 204, "{kind}: {r}");
        assert!([401, 404].contains(&r["read_after_delete"].as_u64().unwrap()), "{kind}: {r}");
        // The IdP's registration route saw the registration and the three RFC 7592 calls (and
        // the read after the delete), all through the gateway.
        let seen: Vec<(String, String)> = s
            .idp_received()
            .iter()
            .filter(|l| {
                l["body"].as_str().is_some_and(|b| b.contains(id)) || l["path"].as_str().is_some_and(|p| p.contains(id))
            })
            .map(|l| (l["method"].as_str().unwrap().to_string(), l["path"].as_str().unwrap().to_string()))
            .collect();
        let methods: Vec<&str> = seen.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(methods, ["GET", "PUT", "DELETE", "GET"], "{kind}: {seen:?}");
        for (_, path) in &seen {
            assert!(path.starts_with("/reg/"), "{kind}: {seen:?}");
        }
    }
}
