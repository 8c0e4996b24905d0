//! Closed registration through the running gateway: initial access tokens minted with the
//! real CLI, and software statements signed with keys generated here.

mod support;

use std::process::Command;

use base64::Engine;
use support::upstream::Upstream;
use support::*;

const BODY: &str = r#"{"client_name":"Partner App","redirect_uris":["https://app.partner.example/cb"]}"#;

fn mint(dir: &std::path::Path, args: &[&str]) -> String {
    let out =
        Command::new(BIN).args(["token", "new", "--file"]).arg(dir.join("tokens.toml")).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The token file with the `expires_at` of the entry labelled `label` set to 2001.
fn expire_in_the_past(text: &str, label: &str) -> String {
    let mut out = String::new();
    let mut in_entry = false;
    for line in text.lines() {
        if line.starts_with("[[token]]") {
            in_entry = false;
        }
        if line.trim() == format!("label = \"{label}\"") {
            in_entry = true;
        }
        if in_entry && line.trim_start().starts_with("expires_at") {
            out.push_str("expires_at = \"2001-01-01T00:00:00Z\"\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(out.contains("2001-01-01"), "no expires_at for {label}: {text}");
    out
}

fn register(gw: &Gateway, body: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = agent().post(&gw.url("/oidc/register")).set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    match req.send_string(body) {
        Ok(r) => (r.status(), r.header("www-authenticate").map(str::to_string), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => {
            (c, r.header("www-authenticate").map(str::to_string), r.into_string().unwrap())
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn token_mode_requires_a_valid_initial_access_token() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let basic = mint(dir.path(), &["--label", "partner-x", "--max-uses", "2"]);
    let expired = mint(dir.path(), &["--label", "old", "--expires", "1s"]);
    let permissive = mint(dir.path(), &["--label", "legacy-partner"]);
    // Give the legacy partner a permissive policy through its entry's overrides.
    let path = dir.path().join("tokens.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&basic), "the file stores hashes, never tokens");
    // "old" expired long ago: its expiry rewritten into the past instead of waiting for it.
    let text = text.replace("label = \"legacy-partner\"", "label = \"legacy-partner\"\nsecurity_mode = \"permissive\"");
    let text = expire_in_the_past(&text, "old");
    std::fs::write(&path, text).unwrap();
    let gw = GatewayBuilder::new(&up.origin())
        .file("tokens.toml", std::fs::read(&path).unwrap())
        .dcr("registration = \"token\"\ntoken_file = \"tokens.toml\"")
        .start();

    let (status, www, body) = register(&gw, BODY, None);
    assert_eq!(status, 401, "{body}");
    assert!(www.as_deref().unwrap_or("").contains("error=\"invalid_token\""), "{www:?}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "invalid_token");
    assert_eq!(register(&gw, BODY, Some("dcrgw_iat_wrong")).0, 401);
    assert_eq!(register(&gw, BODY, Some(&expired)).0, 401);
    assert_eq!(up.count(), 0, "the IdP saw none of them");

    assert_eq!(register(&gw, BODY, Some(&basic)).0, 201);
    assert!(up.last().header("authorization").is_none(), "the token is not forwarded to the IdP");
    assert_eq!(register(&gw, BODY, Some(&basic)).0, 201);
    let (status, _, body) = register(&gw, BODY, Some(&basic));
    assert_eq!(status, 401, "max_uses reached: {body}");

    // Per-partner overrides: implicit is refused in strict mode but allowed for this partner.
    let implicit = r#"{"client_name":"Legacy","redirect_uris":["https://legacy.partner.example/cb"],"grant_types":["implicit"],"response_types":["token"]}"#;
    assert_eq!(register(&gw, implicit, Some(&permissive)).0, 201);
    assert_eq!(register(&gw, implicit, Some(&basic)).0, 401, "exhausted token stays refused");

    let audit = gw.wait_audit(8);
    assert!(audit.iter().any(|l| l["token_label"] == "partner-x" && l["decision"] == "allow"));
    assert!(audit.iter().any(|l| l["decision"] == "unauthorized"));
    let everything = format!("{}{}{}", gw.stdout_text(), gw.stderr_text(), gw.metrics());
    for secret in [&basic, &expired, &permissive] {
        assert!(!everything.contains(secret.as_str()), "a token leaked into logs or metrics");
    }
    assert!(gw.wait_metric("dcr_gateway_requests_total{outcome=\"unauthorized\",scope=\"dcr\"}", 4.0) >= 4.0);
}

struct Signer {
    der: Vec<u8>,
    jwk: serde_json::Value,
}

fn rsa_signer(kid: &str) -> Signer {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({"kty":"RSA","kid":kid,"alg":"RS256","use":"sig","n":b64(rsa.n().to_vec()),"e":b64(rsa.e().to_vec())});
    Signer { der: rsa.private_key_to_der().unwrap(), jwk }
}

fn sign(s: &Signer, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = s.jwk["kid"].as_str().map(str::to_string);
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_der(&s.der)).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn software_statements_from_trusted_issuers_vouch_for_metadata() {
    let up = Upstream::start();
    let trusted = rsa_signer("k1");
    let stranger = rsa_signer("k1");
    let jwks = serde_json::json!({"keys": [trusted.jwk.clone()]});
    let gw = GatewayBuilder::new(&up.origin())
        .file("issuer-jwks.json", serde_json::to_vec(&jwks).unwrap())
        .dcr("require_software_statement = true\n[[dcr.software_statement_issuers]]\nissuer = \"https://registry.example\"\njwks_file = \"issuer-jwks.json\"\nalgorithms = [\"RS256\"]")
        .start();
    let with = |stmt: &str| {
        format!(
            r#"{{"client_name":"Plain Name","redirect_uris":["https://app.partner.example/cb"],"software_statement":"{stmt}"}}"#
        )
    };
    let good = sign(
        &trusted,
        serde_json::json!({"iss":"https://registry.example","iat":now(),"exp":now()+300,"software_id":"sw-42","client_name":"Vouched Name"}),
    );
    let (status, _, body) = register(&gw, &with(&good), None);
    assert_eq!(status, 201, "{body}");
    let doc = up.last().json();
    assert_eq!(doc["client_name"], "Vouched Name", "the statement's claims win");
    assert_eq!(doc["software_id"], "sw-42");
    assert_eq!(doc["software_statement"], good.as_str());
    assert!(doc.get("iss").is_none() && doc.get("exp").is_none(), "JWT claims are not client metadata");
    let calls = up.count();

    let untrusted = sign(&trusted, serde_json::json!({"iss":"https://other.example","exp":now()+300}));
    let forged = sign(&stranger, serde_json::json!({"iss":"https://registry.example","exp":now()+300}));
    let expired = sign(&trusted, serde_json::json!({"iss":"https://registry.example","exp":now()-3600}));
    for (stmt, code) in [
        (untrusted.as_str(), "unapproved_software_statement"),
        (forged.as_str(), "invalid_software_statement"),
        (expired.as_str(), "invalid_software_statement"),
        ("not-a-jwt", "invalid_software_statement"),
    ] {
        let (status, _, body) = register(&gw, &with(stmt), None);
        assert_eq!(status, 400, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], code, "{body}");
    }
    let (status, _, body) = register(&gw, BODY, None);
    assert_eq!(status, 400, "required: {body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"], "invalid_software_statement");
    assert_eq!(up.count(), calls, "no rejected statement reached the IdP");
    assert!(
        gw.wait_metric(
            "dcr_gateway_registrations_total{error=\"unapproved_software_statement\",result=\"invalid\"}",
            1.0
        ) >= 1.0
    );
    let audit = gw.wait_audit(1);
    let allowed = audit.iter().find(|l| l["decision"] == "allow").expect("the accepted registration's line");
    assert_eq!(allowed["software_statement_issuer"], "https://registry.example");
}

/// A partner pinned to its domain and `openid` cannot move its client elsewhere with an
/// RFC 7592 update: updates are checked against the pin of the token that registered it.
#[test]
fn partner_pins_hold_for_rfc7592_updates() {
    let up = support::raw_upstream::RawUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let token = mint(dir.path(), &["--label", "partner-x"]);
    let path = dir.path().join("tokens.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "label = \"partner-x\"",
            "label = \"partner-x\"\nredirect_host_allow = [\"*.partner-x.example\"]\nallowed_scopes = [\"openid\"]",
        ),
    )
    .unwrap();
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("health_check = \"none\"")
        .file("tokens.toml", std::fs::read(&path).unwrap())
        .dcr("registration = \"token\"\ntoken_file = \"tokens.toml\"")
        .start();
    let body = r#"{"client_name":"Partner X","redirect_uris":["https://app.partner-x.example/cb"],"scope":"openid"}"#;
    let (status, _, text) = register(&gw, body, Some(&token));
    assert_eq!(status, 201, "{text}");
    let client_id =
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["client_id"].as_str().unwrap().to_string();
    let put = |body: &str| {
        response_parts(
            agent()
                .put(&gw.url(&format!("/oidc/register/{client_id}")))
                .set("content-type", "application/json")
                .set("authorization", "Bearer RAT-1-t0k3n")
                .send_string(body),
        )
    };
    let before = up.count();
    let moved =
        format!(r#"{{"client_id":"{client_id}","redirect_uris":["https://attacker.example/cb"],"scope":"openid"}}"#);
    assert_eq!(put(&moved).0, 400, "redirect moved outside the pin");
    let widened = format!(
        r#"{{"client_id":"{client_id}","redirect_uris":["https://app.partner-x.example/cb"],"scope":"openid offline_access"}}"#
    );
    assert_eq!(put(&widened).0, 400, "scope widened beyond the pin");
    assert_eq!(up.count(), before, "neither update reached the IdP");
    let fine = format!(
        r#"{{"client_id":"{client_id}","redirect_uris":["https://www.partner-x.example/cb"],"scope":"openid"}}"#
    );
    let (status, text) = put(&fine);
    assert_eq!(status, 200, "{text}");
    let sent = up.recorded().into_iter().last().unwrap();
    assert_eq!(sent.method, "PUT");
    let doc: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(doc["client_id"], client_id.as_str());
    assert!(doc.get("token_endpoint_auth_method").is_none(), "no registration default filled into the update: {doc}");
    // The audit line of the update names the client from its path.
    let lines = gw.wait_audit(4);
    let last = lines.iter().rev().find(|l| l["method"] == "PUT").unwrap();
    assert_eq!(last["client_id"], client_id.as_str());
    assert_eq!(last["path"], format!("/oidc/register/{client_id}"));
}
