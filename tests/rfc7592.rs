//! RFC 7592 answers as the RFC says when `[routes] normalize_registration_status` is on: a
//! deleted client is answered 204 No Content whatever 2xx the IdP used (§2.3), and nothing of
//! the IdP's body reaches the client; with it off the IdP's answer passes unchanged.

mod support;

use support::raw_upstream::RawUpstream;
use support::*;

fn delete(gw: &Gateway, path: &str) -> String {
    let req = format!(
        "DELETE {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer rat-1\r\nConnection: close\r\n\r\n",
        gw.http
    );
    raw_request(gw.http, req.as_bytes())
}

#[test]
fn a_deleted_client_is_answered_204_when_normalizing() {
    let up = RawUpstream::start();
    up.respond_with("/oidc/register/client-1", 200, "application/json", r#"{"deleted":"client-1"}"#);
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("health_check = \"none\"")
        .extra("[routes]\nnormalize_registration_status = true\n")
        .start();
    let resp = delete(&gw, "/oidc/register/client-1");
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "", "no body after 204: {resp}");
    assert!(!head.to_ascii_lowercase().contains("content-type"), "{head}");
    assert!(up.recorded().iter().any(|r| r.method == "DELETE" && r.target_str() == "/oidc/register/client-1"));
    // Other RFC 7592 methods and other 2xx keep their status and body.
    let req = format!(
        "GET /oidc/register/client-1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer rat-1\r\nConnection: close\r\n\r\n",
        gw.http
    );
    let resp = raw_request(gw.http, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("\"deleted\""), "{resp}");
}

#[test]
fn the_idp_answer_passes_unchanged_without_normalizing() {
    let up = RawUpstream::start();
    up.respond_with("/oidc/register/client-1", 200, "application/json", r#"{"deleted":"client-1"}"#);
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("health_check = \"none\"")
        .extra("[routes]\nnormalize_registration_status = false\n")
        .start();
    let resp = delete(&gw, "/oidc/register/client-1");
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains(r#"{"deleted":"client-1"}"#), "{resp}");
}
