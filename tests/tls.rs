//! The HTTPS listener: certificate served, one host decided (SNI must agree with the
//! request's host unless allowed), `X-Forwarded-Proto: https` sent upstream.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

fn https_get(addr: std::net::SocketAddr, sni: &str, host: &str, path: &str) -> (u16, String) {
    let (cn, text) = support::certs::https_get(addr, sni, host, path);
    assert_eq!(cn, "idp.example.com");
    (raw_status(&text), text)
}

fn tls_gateway(up: &Upstream, network: &str) -> (Gateway, std::net::SocketAddr) {
    let (cert, key) = support::certs::self_signed("idp.example.com");
    let tls_port = free_port();
    let gw = GatewayBuilder::new(&up.origin())
        .network(network)
        .file("cert.pem", cert)
        .file("key.pem", key)
        .listen_extra(&format!("https = [{{ address = \"127.0.0.1:{tls_port}\", cert = \"cert.pem\", key = \"key.pem\" }}]"))
        .rules(r#"[{"id":"only-our-name","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","not_match":{"hostnames":["idp.example.com"]}}}]"#)
        .start();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()));
    (gw, addr)
}

#[test]
fn https_listener_decides_the_host_once_and_sets_forwarded_proto() {
    let up = Upstream::start();
    let (gw, addr) = tls_gateway(&up, "trusted_proxies = []");
    let (status, text) = https_get(addr, "idp.example.com", "idp.example.com", "/authorize");
    assert_eq!(status, 200, "{text}");
    let r = up.last();
    assert_eq!(r.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.header("host").as_deref(), Some("idp.example.com"));
    let seen = up.count();
    // SNI and Host disagree: 421 by default, whichever of the two is the allowed name.
    for (sni, host) in [("idp.example.com", "other.example.com"), ("evil.example.com", "idp.example.com")] {
        let (status, text) = https_get(addr, sni, host, "/authorize");
        assert_eq!(status, 421, "{sni} / {host}: {text}");
        assert!(text.contains("\"request_id\""), "{text}");
    }
    assert_eq!(up.count(), seen, "nothing forwarded on a mismatch");
    // Plain HTTP: the Host header is the host.
    assert_eq!(response_parts(agent().get(&gw.url("/authorize")).set("host", "idp.example.com").call()).0, 200);
    assert_eq!(response_parts(agent().get(&gw.url("/authorize")).set("host", "nope.example.com").call()).0, 403);
}

#[test]
fn sni_host_mismatch_allowed_judges_and_forwards_the_request_host() {
    let up = Upstream::start();
    let (_gw, addr) = tls_gateway(&up, "trusted_proxies = []\nsni_host_mismatch = \"allow\"");
    // The client-chosen SNI does not win: the Host it sends is judged and forwarded.
    let (status, _) = https_get(addr, "idp.example.com", "other.example.com", "/authorize");
    assert_eq!(status, 403);
    let (status, text) = https_get(addr, "evil.example.com", "idp.example.com", "/authorize");
    assert_eq!(status, 200, "{text}");
    assert_eq!(up.last().header("host").as_deref(), Some("idp.example.com"));
}

/// Absolute-form over the TLS listener is judged like origin-form: the target's authority is the
/// host (and must agree with SNI), the path is classified, and only what was validated reaches
/// the IdP, origin-form.
#[test]
fn absolute_form_over_tls_is_checked_like_origin_form() {
    let up = Upstream::start();
    let (_gw, addr) = tls_gateway(&up, "trusted_proxies = []");
    let post = |target: &str, body: &str| {
        let req = format!(
            "POST {target} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (_, text) = support::certs::https_raw(addr, "idp.example.com", req.as_bytes());
        text
    };
    let seen = up.count();
    let hostile = r#"{"client_name":"<img src=x onerror=alert(1)>","redirect_uris":["javascript:alert(1)"]}"#;
    for target in ["https://idp.example.com/oidc/register", "HTTPS://IDP.EXAMPLE.COM/oidc/register?x=1"] {
        let text = post(target, hostile);
        assert_eq!(raw_status(&text), 400, "{target}: {text}");
    }
    assert_eq!(up.count(), seen, "nothing hostile forwarded");
    // The target's authority is the host: another name than SNI's is misdirected.
    let text = post("https://other.example.com/oidc/register", hostile);
    assert_eq!(raw_status(&text), 421, "{text}");
    let good = r#"{"client_name":"Good App","redirect_uris":["https://app.example.com/cb"]}"#;
    let text = post("https://idp.example.com/oidc/register", good);
    assert_eq!(raw_status(&text), 201, "{text}");
    let r = up.last();
    assert_eq!(r.method, "POST");
    assert!(r.url.starts_with('/'), "origin-form upstream: {}", r.url);
    assert_eq!(r.header("host").as_deref(), Some("idp.example.com"));
    let sent: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(sent["client_name"], "Good App");
}
