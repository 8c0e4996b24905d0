//! `[cimd] mode = "enforce"` through the gateway binary: an authorization request with a URL
//! client_id reaches the IdP (the recording upstream) only when the client's document, served
//! by a local HTTPS server (test CA in `[cimd] ca_file`), lists its redirect URI; a refusal
//! goes back to the redirect URI only when a valid document proves it. PAR bodies are judged
//! the same way.

#[path = "fetch_support/doc_server.rs"]
mod doc_server;
mod support;

use doc_server::{Answer, DocServer};
use serde_json::json;
use support::upstream::Upstream;
use support::*;

fn authorize(client_id: &str, redirect: &str, response_type: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", response_type)
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("state", "st1")
        .append_pair("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("/authorize?{q}")
}

/// A gateway in `enforce` mode before the recording upstream, and a valid document at `url`
/// (served over HTTPS by `docs`) listing `cb`.
struct Enforced {
    docs: DocServer,
    up: Upstream,
    gw: Gateway,
    url: String,
}

fn enforced(cb: &str) -> Enforced {
    enforced_with(cb, None)
}

/// [`enforced`], with these network ACL rules.
fn enforced_with(cb: &str, rules: Option<&str>) -> Enforced {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let url = format!("https://localhost:{}/oauth/client.json", docs.addr.port());
    let body = json!({
        "client_id": url, "client_name": "Test MCP Client", "redirect_uris": [cb],
        "token_endpoint_auth_method": "none", "response_types": ["code"], "grant_types": ["authorization_code"]
    });
    docs.set("/oauth/client.json", Answer::json(&body.to_string()));
    let up = Upstream::start();
    let mut b = GatewayBuilder::new(&up.origin())
        .file("ca.pem", cert.clone())
        .extra("[cimd]\nmode = \"enforce\"\nca_file = \"ca.pem\"\nallow_cidrs = [\"127.0.0.1/32\", \"::1/128\"]\n");
    if let Some(r) = rules {
        b = b.rules(r);
    }
    Enforced { docs, up, gw: b.start(), url }
}

#[test]
fn enforce_mode_checks_the_document_before_authorize_passes() {
    let cb = "http://127.0.0.1:45123/callback";
    let Enforced { docs, up, gw, url } = enforced(cb);
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let get = |path: &str| response_parts(agent.get(&gw.url(path)).call());

    // Listed redirect URI: passes to the IdP unchanged.
    let (status, _) = get(&authorize(&url, cb, "code"));
    assert_eq!(status, 200, "{}", gw.stderr_text());
    assert_eq!(up.count(), 1);
    assert!(up.last().url.contains("client_id=https%3A%2F%2Flocalhost"), "{}", up.last().url);

    // Unlisted redirect URI: an error page, never a redirect; the IdP sees nothing.
    let (status, text) = get(&authorize(&url, "https://evil.example/cb", "code"));
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "invalid_request");
    assert!(v["error_description"].as_str().unwrap().contains("not listed"), "{text}");
    assert_eq!(up.count(), 1);
    // A browser (Accept: text/html) gets the same refusal as a page: no script, nothing the
    // client sent unescaped, the request id to quote.
    let hostile = "https://evil.example/cb?<script>alert(1)</script>";
    let r =
        agent.get(&gw.url(&authorize(&url, hostile, "code"))).set("accept", "text/html,application/xhtml+xml").call();
    let Err(ureq::Error::Status(400, r)) = r else { panic!("expected 400") };
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.header("content-security-policy").is_some_and(|c| c.starts_with("default-src 'none'")));
    let page = r.into_string().unwrap();
    assert!(page.contains("<h1>This sign-in request was refused</h1>") && page.contains("invalid_request"), "{page}");
    assert!(!page.contains("<script"), "{page}");
    assert_eq!(up.count(), 1);

    // Proven redirect URI, unregistered response type: 302 back to it with the OAuth error.
    let r = agent.get(&gw.url(&authorize(&url, cb, "token"))).call().unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.header("location").unwrap().to_string();
    assert!(loc.starts_with(&format!("{cb}?error=unauthorized_client&")), "{loc}");
    assert!(loc.ends_with("&state=st1"), "{loc}");
    assert_eq!(up.count(), 1);

    // A document URL on a forbidden address (no allow_cidrs for it): refused, never fetched.
    let before = docs.connects();
    let (status, text) =
        get(&authorize(&format!("https://127.0.0.2:{}/oauth/client.json", docs.addr.port()), cb, "code"));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("special-use"), "{text}");
    assert_eq!(docs.connects(), before);

    // A non-URL client_id is not CIMD's business.
    let (status, _) = get(&authorize("plain-client", cb, "code"));
    assert_eq!(status, 200);
    assert_eq!(up.count(), 2);
    // The document was fetched once: later requests were served from the cache.
    assert_eq!(docs.requests_for("/oauth/client.json"), 1);

    // The path as loosely as IdPs route it: any case, a trailing slash — judged the same.
    for path in ["/Authorize", "/authorize/", "/AUTHORIZE/"] {
        let p = authorize(&url, "https://evil.example/cb", "code").replacen("/authorize", path, 1);
        let (status, text) = get(&p);
        assert_eq!(status, 400, "{path}: {text}");
    }
    assert_eq!(up.count(), 2, "none of them reached the IdP");

    // POST with a form body (OIDC Core §3.1.2.1): judged on the body the IdP receives.
    let post = |form: &str| {
        response_parts(
            agent
                .post(&gw.url("/authorize"))
                .set("content-type", "application/x-www-form-urlencoded")
                .send_string(form),
        )
    };
    let bad = authorize(&url, "https://evil.example/cb", "code").split_once('?').unwrap().1.to_string();
    let (status, text) = post(&bad);
    assert_eq!(status, 400, "{text}");
    assert_eq!(up.count(), 2);
    let good = authorize(&url, cb, "code").split_once('?').unwrap().1.to_string();
    let (status, text) = post(&good);
    assert_eq!(status, 200, "{text}");
    assert_eq!(up.count(), 3);
    assert_eq!(up.last().method, "POST");
    assert_eq!(up.last().body, good.as_bytes(), "the judged body is the forwarded body");
    // A client_id in the query and another in the body: ambiguous, refused.
    let r = agent
        .post(&gw.url("/authorize?client_id=plain-client"))
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(&good);
    assert_eq!(response_parts(r).0, 400);
    assert_eq!(up.count(), 3);

    // A request object beside a URL client_id: its redirect_uri would not be the one judged.
    let (status, text) =
        get(&format!("{}&request_uri=https%3A%2F%2Fapp.example%2Freq.jwt", authorize(&url, cb, "code")));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("request objects"), "{text}");
    assert_eq!(up.count(), 3);

    // PAR (RFC 9126): the pushed request's body is judged like an authorization request, and
    // a refusal is the JSON answer (never a redirect).
    let par = |form: &str| {
        response_parts(
            agent.post(&gw.url("/par")).set("content-type", "application/x-www-form-urlencoded").send_string(form),
        )
    };
    let (status, text) = par(&bad);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_request") && text.contains("not listed"), "{text}");
    let (status, text) = par(authorize(&url, cb, "token").split_once('?').unwrap().1);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unauthorized_client"), "{text}");
    let (status, text) = par(&format!("{good}&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Ax"));
    assert_eq!(status, 400, "a request_uri has no place in a pushed request: {text}");
    assert_eq!(up.count(), 3, "no refused PAR reached the IdP");
    let (status, text) = par(&good);
    assert_eq!(status, 200, "{text}");
    assert_eq!(up.count(), 4);
    assert_eq!((up.last().url.as_str(), up.last().body.as_slice()), ("/par", good.as_bytes()));
    assert_eq!(up.last().header("content-type").as_deref(), Some("application/x-www-form-urlencoded"));
    // The authorization request that follows carries only the IdP's request_uri: it passes
    // (the pushed request was judged).
    let q = format!(
        "client_id={}&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Ax",
        url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let (status, text) = get(&format!("/authorize?{q}"));
    assert_eq!(status, 200, "{text}");
    assert_eq!(up.count(), 5);
}

#[test]
fn check_reports_cimd_configuration_problems_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        std::fs::write(dir.path().join("gateway.toml"), toml).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "-c"])
            .arg(dir.path().join("gateway.toml"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check(
        "[cimd]\nmode = \"bridge\"\nhost_allow = [\"*.*\"]\nallow_cidrs = [\"10.0.0.0/33\"]\nauthorize_paths = [\"authorize\"]\n",
    );
    assert_eq!(code, Some(1), "{err}");
    for key in ["cimd.mode", "cimd.host_allow[0]", "cimd.allow_cidrs[0]", "cimd.authorize_paths[0]"] {
        assert!(err.contains(key), "{key} not reported: {err}");
    }
    assert!(err.contains("[registry] enabled = true"), "bridge without the registry: {err}");
    let (code, err) = check("[cimd]\nmode = \"on\"\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cimd"), "{err}");
    let (code, err) = check("[dcr]\nredirect_host_allow = [\"known:nobody\"]\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("dcr.redirect_host_allow[0]") && err.contains("known-clients.toml"), "{err}");
}

/// A client_id that a WHATWG URL parser (as an IdP with CIMD support may use) reads as an
/// https URL is judged as one, however it is spelled (`https:/h/…`, leading blank, a tab in the
/// scheme, backslashes): none reaches the IdP unjudged. `HEAD` on the authorization endpoint
/// (routed like `GET` by many IdPs, node-oidc-provider's koa router among them) is judged too.
#[test]
fn url_client_ids_in_any_spelling_and_head_requests_are_judged() {
    let cb = "http://127.0.0.1:45124/callback";
    let Enforced { docs, up, gw, url } = enforced(cb);
    let port = docs.addr.port();
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    for spelled in [
        format!("https:/localhost:{port}/oauth/client.json"),
        format!(" https://localhost:{port}/oauth/client.json"),
        format!("ht\ttps://localhost:{port}/oauth/client.json"),
        format!("\nHTTPS://localhost:{port}/oauth/client.json"),
        format!("https:\\\\localhost:{port}\\oauth\\client.json"),
    ] {
        let (status, text) = response_parts(agent.get(&gw.url(&authorize(&spelled, cb, "code"))).call());
        assert_eq!(status, 400, "{spelled:?}: {text}");
        assert!(text.contains("invalid_request") || text.contains("invalid_client"), "{spelled:?}: {text}");
        let form = authorize(&spelled, cb, "code").split_once('?').unwrap().1.to_string();
        let r = agent.post(&gw.url("/par")).set("content-type", "application/x-www-form-urlencoded").send_string(&form);
        assert_eq!(response_parts(r).0, 400, "PAR {spelled:?}");
    }
    assert_eq!(
        up.count(),
        0,
        "no spelling reached the IdP: {:?}",
        up.recorded().iter().map(|r| &r.url).collect::<Vec<_>>()
    );

    // HEAD: judged like GET (an unlisted redirect URI is refused), and a good one passes.
    let (status, _) = response_parts(agent.head(&gw.url(&authorize(&url, "https://evil.example/cb", "code"))).call());
    assert_eq!(status, 400);
    assert_eq!(up.count(), 0, "the refused HEAD did not reach the IdP");
    let (status, _) = response_parts(agent.head(&gw.url(&authorize(&url, cb, "code"))).call());
    assert_eq!(status, 200, "{}", gw.stderr_text());
    assert_eq!(up.count(), 1);
}

/// The ACL's `client_id_hosts` sees a URL client_id wherever `[cimd]` reads one: in the query,
/// and in the form body of an authorization `POST` or a pushed authorization request (read by
/// the CIMD phase); a rule blocking the host cannot be passed by moving the client_id into the
/// body.
#[test]
fn client_id_hosts_rules_apply_to_form_bodies() {
    let cb = "http://127.0.0.1:45125/callback";
    let rules = r#"[{"id":"no-local-cimd","active":true,"priority":1,"rule":{"action":{"block":true},
        "scope":"authentication","match":{"client_id_hosts":["localhost"]}}}]"#;
    let Enforced { docs: _docs, up, gw, url } = enforced_with(cb, Some(rules));
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let (status, text) = response_parts(agent.get(&gw.url(&authorize(&url, cb, "code"))).call());
    assert_eq!(status, 403, "the query: {text}");
    let form = authorize(&url, cb, "code").split_once('?').unwrap().1.to_string();
    for path in ["/par", "/authorize"] {
        let r = agent.post(&gw.url(path)).set("content-type", "application/x-www-form-urlencoded").send_string(&form);
        let (status, text) = response_parts(r);
        assert_eq!(status, 403, "{path}: {text}");
        assert!(text.contains("access_denied"), "{path}: {text}");
    }
    assert_eq!(up.count(), 0, "none reached the IdP");
    assert_eq!(gw.metric("dcr_gateway_acl_matches_total{action=\"block\",rule=\"no-local-cimd\"}"), 3.0);
    // Another client_id in the body is untouched by the rule.
    let other = form.replace(&url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>(), "plain-client");
    let r = agent.post(&gw.url("/par")).set("content-type", "application/x-www-form-urlencoded").send_string(&other);
    assert_eq!(response_parts(r).0, 200);
    assert_eq!(up.count(), 1);
}
