//! End to end with a second, independently written OpenID Provider: Glewlwyd 2.7 from
//! Debian (tests/support/glewlwyd.rs, deploy/glewlwyd/README.md) behind the gateway.
//!
//! Glewlwyd runs at its own address (its `external_url` and issuer are NOT the gateway's), as
//! an IdP deployed behind a gateway usually is: what it advertises is what a client would
//! follow. Its registration endpoint is `/api/oidc/register` (its discovery document says so,
//! checked below); the gateway's public one stays `/oidc/register`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use support::glewlwyd::{self, Glewlwyd};
use support::*;

/// Glewlwyd writes each registration to SQLite and hashes its secret: on a loaded machine
/// (parallel tests, CI) that took over the harness's 2 s default once.
const REAL_IDP_READ_TIMEOUT_MS: u64 = 20_000;

struct Stack {
    idp: Glewlwyd,
    gw: Gateway,
}

/// `[upstream] profile = "glewlwyd"` (conf/profiles/glewlwyd.toml): Glewlwyd's registration
/// path and admin API prefixes, and `client_confidential` derived from
/// `token_endpoint_auth_method` — nothing Glewlwyd-specific in gateway.toml.
const PROFILE: &str = "profile = \"glewlwyd\"";

impl Stack {
    fn start(dcr_keys: &str) -> Stack {
        let idp = Glewlwyd::start();
        let gw = GatewayBuilder::new(&idp.origin())
            .read_timeout_ms(REAL_IDP_READ_TIMEOUT_MS)
            .upstream_keys(PROFILE)
            .dcr(dcr_keys)
            .start();
        Stack { idp, gw }
    }

    /// Glewlwyd whose issuer is the gateway's public URL (`<gateway>/api/oidc`), as a
    /// deployment where clients only know the gateway has it; external_url stays its own.
    fn start_public_issuer(dcr_keys: &str) -> Stack {
        let gw_port = free_port();
        let idp = Glewlwyd::start_with_issuer(&format!("http://127.0.0.1:{gw_port}/api/{}", glewlwyd::PLUGIN));
        let gw = GatewayBuilder::new(&idp.origin())
            .http_port(gw_port)
            .read_timeout_ms(REAL_IDP_READ_TIMEOUT_MS)
            .upstream_keys(PROFILE)
            .dcr(dcr_keys)
            .start();
        Stack { idp, gw }
    }

    /// deploy/glewlwyd/flow.mjs (openid-client): register a public client through the
    /// gateway, log in, consent, authorization code + PKCE, redeem the code.
    fn flow(&self, extra_metadata: Option<&Value>) -> Value {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new("node");
        cmd.arg(root.join("deploy/glewlwyd/flow.mjs"))
            .arg(self.idp.issuer())
            .arg(glewlwyd::USER)
            .arg(glewlwyd::USER_PASSWORD);
        if let Some(extra) = extra_metadata {
            cmd.arg(extra.to_string());
        }
        let out = cmd.output().expect("node is installed (scripts/prereqs.sh)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!("flow.mjs printed no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&out.stderr))
        })
    }

    fn register(&self, body: &Value) -> (u16, Value) {
        let (status, text) = response_parts(
            agent()
                .post(&self.gw.url("/oidc/register"))
                .set("content-type", "application/json")
                .send_string(&body.to_string()),
        );
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text}"));
        (status, v)
    }
}

fn confidential_client() -> Value {
    json!({
        "client_name": "dcr-gateway glewlwyd confidential",
        "redirect_uris": ["https://rp.example.com/cb"],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post",
    })
}

fn public_client() -> Value {
    json!({
        "client_name": "dcr-gateway glewlwyd public",
        "redirect_uris": ["http://127.0.0.1:8976/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// Glewlwyd's own discovery document (fetched from Glewlwyd, not through the gateway):
/// the registration path the gateway is configured with is the one it advertises.
#[test]
fn glewlwyd_advertises_the_registration_path_the_gateway_guards() {
    let idp = Glewlwyd::start();
    let (status, body) = http_get(&idp.url(&format!("/api/{}/.well-known/openid-configuration", glewlwyd::PLUGIN)));
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["issuer"], idp.issuer());
    assert_eq!(d["registration_endpoint"], idp.url(glewlwyd::REGISTRATION_PATH));
    assert_eq!(d["authorization_endpoint"], idp.url("/api/oidc/auth"));
    assert_eq!(d["token_endpoint"], idp.url("/api/oidc/token"));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    // Observed with 2.7.5: no "none" here although public clients exist, no "refresh_token"
    // grant although refresh tokens are issued.
    assert_eq!(d["token_endpoint_auth_methods_supported"], json!(["client_secret_basic", "client_secret_post"]));
    assert_eq!(d["grant_types_supported"], json!(["authorization_code", "implicit"]));
}

/// What Glewlwyd itself answers a registration (no gateway): 200, not RFC 7591's 201, and a
/// `token_endpoint_auth_method: none` client is stored confidential unless the request carries
/// Glewlwyd's own `client_confidential: false`.
#[test]
fn glewlwyd_alone_answers_200_and_makes_none_clients_confidential() {
    let idp = Glewlwyd::start();
    let post = |body: &Value| {
        let (status, text) =
            response_parts(agent().post(&idp.url(glewlwyd::REGISTRATION_PATH)).send_json(body.clone()));
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    let (status, reg) = post(&public_client());
    assert_eq!(status, 200, "{reg}");
    let id = reg["client_id"].as_str().unwrap();
    assert!(reg.get("client_secret").is_none(), "{reg}");
    assert_eq!(reg["registration_client_uri"], idp.url(&format!("{}/{id}", glewlwyd::REGISTRATION_PATH)));
    assert!(reg["client_id_issued_at"].is_u64(), "{reg}");
    assert_eq!(reg["client_secret_expires_at"], 0);
    let stored = idp.client(id).unwrap();
    assert_eq!(stored["confidential"], true, "{stored}");
    assert_eq!(stored["token_endpoint_auth_method"], json!(["none"]));

    // RFC 7592 directly at Glewlwyd: GET gives token_endpoint_auth_method as an array and
    // no registration_client_uri; PUT without client_id in the body is refused; PUT issues a
    // new client_secret to a confidential client; DELETE answers 200 with an empty body and
    // only disables the client.
    let (_, conf) = post(&confidential_client());
    let conf_id = conf["client_id"].as_str().unwrap();
    let token = conf["registration_access_token"].as_str().unwrap();
    let uri = idp.url(&format!("{}/{conf_id}", glewlwyd::REGISTRATION_PATH));
    let bearer = format!("Bearer {token}");
    let (status, text) = response_parts(agent().get(&uri).set("authorization", &bearer).call());
    assert_eq!(status, 200, "{text}");
    let read: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(read["token_endpoint_auth_method"], json!(["client_secret_post"]), "{read}");
    assert!(read.get("registration_client_uri").is_none(), "{read}");
    let mut update = confidential_client();
    let (status, text) = response_parts(agent().put(&uri).set("authorization", &bearer).send_json(update.clone()));
    assert_eq!(status, 400, "{text}");
    update["client_id"] = conf_id.into();
    let (status, text) = response_parts(agent().put(&uri).set("authorization", &bearer).send_json(update));
    assert_eq!(status, 200, "{text}");
    let updated: Value = serde_json::from_str(&text).unwrap();
    assert_ne!(updated["client_secret"], conf["client_secret"], "{updated}");
    let (status, text) = response_parts(agent().delete(&uri).set("authorization", &bearer).call());
    assert_eq!((status, text.as_str()), (200, ""));
    assert_eq!(idp.client(conf_id).unwrap()["enabled"], false);

    // Glewlwyd refuses a javascript: redirect itself too (400 invalid_redirect_uri).
    let (status, err) = post(&json!({"client_name": "x", "redirect_uris": ["javascript:alert(1)"]}));
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_redirect_uri")), "{err}");

    let mut body = public_client();
    body["client_confidential"] = false.into();
    let (status, reg) = post(&body);
    assert_eq!(status, 200, "{reg}");
    let stored = idp.client(reg["client_id"].as_str().unwrap()).unwrap();
    assert_eq!(stored["confidential"], false, "{stored}");
}

/// (a) A registration through the gateway reaches Glewlwyd and returns its client_id.
#[test]
fn a_registration_through_the_gateway_reaches_glewlwyd() {
    let s = Stack::start("");
    assert_eq!(s.idp.clients().len(), 0);

    let (status, reg) = s.register(&confidential_client());
    // Glewlwyd answers 200; the gateway answers RFC 7591's 201 when it normalizes the status
    // ([routes] normalize_registration_status), Glewlwyd's 200 otherwise.
    assert!(status == 201 || status == 200, "{status} {reg}");
    let id = reg["client_id"].as_str().expect("a client_id");
    assert!(reg["client_secret"].as_str().is_some_and(|s| s.len() >= 16), "{reg}");
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(reg["redirect_uris"], json!(["https://rp.example.com/cb"]));

    let stored = s.idp.client(id).expect("Glewlwyd stored the client");
    assert_eq!(stored["confidential"], true);
    assert_eq!(stored["redirect_uri"], json!(["https://rp.example.com/cb"]));
    assert_eq!(s.idp.client_rows(), 1);

    // The audit line carries Glewlwyd's client_id, never the secret.
    let audit = s.gw.wait_audit(1);
    assert!(audit.iter().any(|l| l["client_id"] == id), "{audit:?}");
    let secret = reg["client_secret"].as_str().unwrap();
    let rat = reg["registration_access_token"].as_str().unwrap();
    for text in [s.gw.stdout_text(), s.gw.stderr_text()] {
        assert!(!text.contains(secret), "client_secret leaked");
        assert!(!text.contains(rat), "registration_access_token leaked");
    }
}

/// (a') Status normalization: the client gets 201 although Glewlwyd said 200.
#[test]
fn a_glewlwyd_200_reaches_the_client_as_201() {
    let s = Stack::start("");
    let (status, reg) = s.register(&confidential_client());
    assert_eq!(status, 201, "{reg}");
}

/// (b) Hostile registrations are refused by the gateway and never reach Glewlwyd.
#[test]
fn a_hostile_registration_never_reaches_glewlwyd() {
    let s = Stack::start("");
    for body in [
        json!({"client_name": "x", "redirect_uris": ["javascript:alert(1)"]}),
        json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"], "response_types": ["token"]}),
        json!({"client_name": "<script>x</script>", "redirect_uris": ["https://a.example/cb"]}),
        json!({"client_name": "x", "redirect_uris": ["data:text/html,<script>alert(1)</script>"]}),
    ] {
        let (status, resp) = s.register(&body);
        assert_eq!(status, 400, "{body} → {resp}");
        assert!(resp["error"].as_str().unwrap().starts_with("invalid_"), "{resp}");
    }
    // Nothing reached Glewlwyd: no client in its admin API nor in its database.
    assert_eq!(s.idp.clients(), Vec::<Value>::new());
    assert_eq!(s.idp.client_rows(), 0);

    // The same gateway does let a valid one through (so the zero above means something).
    let (status, reg) = s.register(&confidential_client());
    assert_eq!(status, 201, "{reg}");
    assert_eq!(s.idp.client_rows(), 1);
}

/// (c) Discovery fetched through the gateway must send clients back to the gateway.
#[test]
fn discovery_through_the_gateway_advertises_the_gateway() {
    let s = Stack::start("");
    let (status, body) = http_get(&s.gw.url("/api/oidc/.well-known/openid-configuration"));
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["registration_endpoint"], s.gw.url("/oidc/register"), "{d}");
    for key in ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"] {
        let url = d[key].as_str().unwrap();
        assert!(!url.starts_with(&s.idp.origin()), "{key} still points at the IdP: {url}");
    }
}

/// (d) RFC 7592 read / update / delete through the gateway, at the `registration_client_uri`
/// Glewlwyd returned (rewritten to the gateway or not, the path is under the guarded prefix).
#[test]
fn rfc7592_read_update_delete_through_the_gateway() {
    let s = Stack::start("");
    let (status, reg) = s.register(&confidential_client());
    assert!(status == 201 || status == 200, "{status} {reg}");
    let id = reg["client_id"].as_str().unwrap().to_string();
    let mut token = reg["registration_access_token"].as_str().unwrap().to_string();
    // Whatever origin the IdP put in registration_client_uri, talk to the gateway.
    let uri = reg["registration_client_uri"].as_str().unwrap();
    let path = &uri[uri.find("/api/").or_else(|| uri.find("/oidc/")).unwrap()..];
    let url = s.gw.url(path);

    let (status, body) = response_parts(agent().get(&url).set("authorization", &format!("Bearer {token}")).call());
    assert_eq!(status, 200, "GET {url}: {body}");
    let read: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read["client_id"], id.as_str());
    if let Some(t) = read["registration_access_token"].as_str() {
        // register-client-token-one-use: each management call hands out the next token.
        token = t.to_string();
    }

    let mut update = confidential_client();
    update["client_id"] = id.clone().into();
    update["client_name"] = "renamed through the gateway".into();
    update["redirect_uris"] = json!(["https://rp.example.com/cb2"]);
    let (status, body) = response_parts(
        agent()
            .put(&url)
            .set("authorization", &format!("Bearer {token}"))
            .set("content-type", "application/json")
            .send_string(&update.to_string()),
    );
    assert_eq!(status, 200, "PUT {url}: {body}");
    let updated: Value = serde_json::from_str(&body).unwrap();
    if let Some(t) = updated["registration_access_token"].as_str() {
        token = t.to_string();
    }
    let stored = s.idp.client(&id).unwrap();
    assert_eq!(stored["name"], "renamed through the gateway", "{stored}");
    assert_eq!(stored["redirect_uri"], json!(["https://rp.example.com/cb2"]));

    // A hostile update is refused by the gateway and changes nothing.
    let mut hostile = update.clone();
    hostile["redirect_uris"] = json!(["javascript:alert(1)"]);
    let (status, body) = response_parts(
        agent()
            .put(&url)
            .set("authorization", &format!("Bearer {token}"))
            .set("content-type", "application/json")
            .send_string(&hostile.to_string()),
    );
    assert_eq!(status, 400, "hostile PUT: {body}");
    assert_eq!(s.idp.client(&id).unwrap()["redirect_uri"], json!(["https://rp.example.com/cb2"]));

    let (status, body) = response_parts(agent().delete(&url).set("authorization", &format!("Bearer {token}")).call());
    // Glewlwyd answers 200 with an empty body; RFC 7592 §2.3 says 204, and the profile
    // normalizes it.
    assert_eq!((status, body.as_str()), (204, ""), "DELETE {url}");
    // Glewlwyd disables the client rather than removing it.
    assert_eq!(s.idp.client(&id).unwrap()["enabled"], false);
}

/// (c') `registration_client_uri` in the registration answer points at the gateway, not at
/// the IdP's own address (Glewlwyd builds it from its external_url).
#[test]
fn registration_client_uri_points_at_the_gateway() {
    let s = Stack::start("");
    let (_, reg) = s.register(&confidential_client());
    let id = reg["client_id"].as_str().unwrap();
    assert_eq!(reg["registration_client_uri"], s.gw.url(&format!("/oidc/register/{id}")), "{reg}");
}

/// (d) A public client's whole life through the gateway with openid-client: discovery,
/// registration, login and consent, authorization code + PKCE, the code redeemed without a
/// secret — as the client would send it (`token_endpoint_auth_method: none`, nothing
/// Glewlwyd-specific).
///
/// Glewlwyd makes a client public only on its own `client_confidential: false` (without it
/// the token endpoint answers 403 `unauthorized_client`); the glewlwyd profile derives that
/// member from the validated `token_endpoint_auth_method`.
#[test]
fn openid_client_public_client_pkce_flow_through_the_gateway() {
    let s = Stack::start_public_issuer("");
    let r = s.flow(None);
    assert_eq!(r["ok"], true, "{r}\n{}", s.idp.log());
    check_flow(&s, &r);
    // Glewlwyd kept what the gateway sent: no difference audited.
    let audit = s.gw.wait_audit(1);
    let line = audit.iter().find(|l| l["client_id"] == r["client_id"]).unwrap_or_else(|| panic!("{audit:?}"));
    assert!(line.get("idp_changed_members").is_none(), "{line}");
}

/// The same flow with Glewlwyd's own member `client_confidential: false`, kept by permissive
/// mode: what makes the client public at Glewlwyd today.
#[test]
fn openid_client_pkce_flow_with_client_confidential_false() {
    let s = Stack::start_public_issuer("security_mode = \"permissive\"");
    let r = s.flow(Some(&json!({"client_confidential": false})));
    assert_eq!(r["ok"], true, "{r}\n{}", s.idp.log());
    check_flow(&s, &r);
}

/// A confidential client's flow: registered with `client_secret_post`, the code redeemed with
/// the secret Glewlwyd issued; Glewlwyd stored a confidential client.
#[test]
fn openid_client_confidential_client_pkce_flow_through_the_gateway() {
    let s = Stack::start_public_issuer("");
    let r = s.flow(Some(&json!({"token_endpoint_auth_method": "client_secret_post"})));
    assert_eq!(r["ok"], true, "{r}\n{}", s.idp.log());
    let id = r["client_id"].as_str().unwrap();
    assert_eq!(r["registration"]["token_endpoint_auth_method"], "client_secret_post", "{r}");
    assert!(r["registration"]["client_secret"].as_str().is_some_and(|x| !x.is_empty()), "{r}");
    assert_eq!(r["has_access_token"], true, "{r}");
    assert_eq!(r["id_token_claims"]["iss"], s.idp.issuer(), "{r}");
    assert_eq!(r["id_token_claims"]["aud"], id, "{r}");
    assert_eq!(s.idp.client(id).unwrap()["confidential"], true, "Glewlwyd stored a confidential client");
}

fn check_flow(s: &Stack, r: &Value) {
    let id = r["client_id"].as_str().unwrap();
    assert_eq!(r["registration"]["token_endpoint_auth_method"], "none", "{r}");
    assert!(r["registration"].get("client_secret").is_none(), "{r}");
    assert_eq!(r["has_access_token"], true, "{r}");
    assert_eq!(r["id_token_claims"]["iss"], s.idp.issuer(), "{r}");
    assert_eq!(r["id_token_claims"]["aud"], id, "{r}");
    assert_eq!(s.idp.client(id).unwrap()["confidential"], false, "Glewlwyd stored a public client");
}

/// A browser sent through the gateway to Glewlwyd's authorization endpoint is redirected to
/// Glewlwyd's login page at Glewlwyd's own `external_url`, with the authorization URL, on its own
/// origin, nested in the login page's `callback_url` parameter: the gateway rewrites both, so
/// neither leads the browser to the IdP directly.
#[test]
fn the_authorization_endpoints_login_redirect_stays_on_the_gateway() {
    let s = Stack::start("");
    let (_, reg) = s.register(&confidential_client());
    let id = reg["client_id"].as_str().unwrap();
    let url = s.gw.url(&format!(
        "/api/oidc/auth?response_type=code&client_id={id}&redirect_uri=https%3A%2F%2Frp.example.com%2Fcb&scope=openid&state=s1"
    ));
    let resp = agent().get(&url).call().unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.header("location").unwrap();
    assert!(location.contains("/login.html?"), "{location}");
    assert!(location.starts_with(&s.gw.url("/")), "the login redirect leaves the gateway: {location}");
    // The login page's way back (its callback_url) is the gateway's too.
    let query = location.split_once('?').unwrap().1;
    let callback = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "callback_url")
        .map(|(_, v)| v.into_owned())
        .expect("callback_url");
    assert!(callback.starts_with(&s.gw.url("/api/oidc/auth")), "callback_url leaves the gateway: {callback}");
}
