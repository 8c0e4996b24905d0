//! One view of the request (issue: request-target, header-byte and forwarding bypasses).
//! Every case is sent byte for byte over a raw socket, and asserts both the answer and what
//! reached the upstream, which records the exact target, header bytes and body it received.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::raw_upstream::RawUpstream;
use support::*;

const GOOD: &str = r#"{"client_name":"Good App","redirect_uris":["https://app.example.com/cb"]}"#;
const HOSTILE: &str = r#"{"client_name":"<img src=x onerror=alert(1)>","redirect_uris":["javascript:alert(1)"]}"#;

fn post(target: &str, host: Option<&str>, body: &str, extra: &str) -> Vec<u8> {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    format!(
        "POST {target} HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn request(method: &str, target: &str, host: &str, extra: &str, body: &str) -> Vec<u8> {
    let cl = if body.is_empty() { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{cl}Connection: close\r\n{extra}\r\n{body}").into_bytes()
}

fn body_of(resp: &str) -> serde_json::Value {
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON body ({e}): {resp:?}"))
}

/// Requests the upstream received other than health checks, after the gateway answered.
fn forwarded(up: &RawUpstream) -> Vec<support::raw_upstream::RawRecorded> {
    up.recorded().into_iter().filter(|r| !r.target.starts_with(b"/.well-known")).collect()
}

fn gateway(up: &RawUpstream) -> Gateway {
    GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = [\"127.0.0.1/32\"]")
        .upstream_keys("health_check = \"none\"")
        .start()
}

#[test]
fn absolute_form_registrations_are_checked_like_origin_form() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let host = gw.http.to_string();
    for (target, with_host) in [
        (format!("http://{host}/oidc/register"), true),
        (format!("HTTP://{host}/oidc/register"), true),
        (format!("https://{host}/oidc/register?x=1"), true),
        (format!("http://{host}/oidc/register"), false),
        (format!("http://{host}/OIDC//register/"), false),
    ] {
        let resp = raw_request(gw.http, &post(&target, with_host.then_some(host.as_str()), HOSTILE, ""));
        assert_eq!(raw_status(&resp), 400, "{target}: {resp}");
        let code = body_of(&resp)["error"].as_str().unwrap_or_default().to_string();
        assert!(code == "invalid_redirect_uri" || code == "invalid_client_metadata", "{target}: {code}");
    }
    assert!(forwarded(&up).is_empty(), "no hostile registration reached the IdP: {:?}", forwarded(&up));

    // A valid one is forwarded origin-form with the decided host.
    let resp = raw_request(gw.http, &post(&format!("http://{host}/oidc/register?x=1"), None, GOOD, ""));
    assert_eq!(raw_status(&resp), 201, "{resp}");
    let got = forwarded(&up);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target_str(), "/oidc/register?x=1");
    assert_eq!(got[0].header_all("host"), vec![host.clone()]);
    assert_eq!(got[0].header("x-forwarded-host").as_deref(), Some(host.as_str()));
    let audit = gw.wait_audit(6);
    assert!(audit.iter().all(|l| l["scope"] == "dcr"), "every attempt audited as dcr: {audit:?}");
}

#[test]
fn absolute_form_rfc7592_update_is_validated() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let host = gw.http.to_string();
    let body = r#"{"client_id":"abc","redirect_uris":["javascript:alert(1)"]}"#;
    let req = format!(
        "PUT http://{host}/oidc/register/abc HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = raw_request(gw.http, req.as_bytes());
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert!(forwarded(&up).is_empty());
}

#[test]
fn other_target_forms_are_refused_with_json() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    for (req, want) in [
        (request("GET", "*", "h", "", ""), 400),
        (request("POST", "ftp://h/oidc/register", "h", "", ""), 400),
        (request("GET", "oidc/register", "h", "", ""), 400),
    ] {
        let resp = raw_request(gw.http, &req);
        assert_eq!(raw_status(&resp), want, "{resp}");
    }
    let resp = raw_request(gw.http, &request("OPTIONS", "*", "h", "", ""));
    assert_eq!(raw_status(&resp), 200, "OPTIONS * is allowed: {resp}");
    let got = forwarded(&up);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target_str(), "*");
}

#[test]
fn bodies_on_bodiless_methods_in_the_dcr_scope_are_refused() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let h = gw.http.to_string();
    for method in ["GET", "DELETE", "OPTIONS"] {
        for target in ["/oidc/register/anything", "/oidc/register"] {
            let resp =
                raw_request(gw.http, &request(method, target, &h, "Content-Type: application/json\r\n", HOSTILE));
            let status = raw_status(&resp);
            assert!(status == 400 || status == 405, "{method} {target}: {resp}");
            let b = body_of(&resp);
            assert!(b["request_id"].is_string(), "{resp}");
        }
        // Chunked, without Content-Length.
        let req = format!(
            "{method} /oidc/register/x HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{HOSTILE}\r\n0\r\n\r\n",
            HOSTILE.len()
        );
        assert_eq!(raw_status(&raw_request(gw.http, req.as_bytes())), 400, "{method} chunked");
    }
    assert!(forwarded(&up).is_empty(), "nothing with a body went upstream unread: {:?}", forwarded(&up));
    // Without a body they pass, as before.
    let resp = raw_request(gw.http, &request("GET", "/oidc/register/abc", &h, "", ""));
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(forwarded(&up)[0].target_str(), "/oidc/register/abc");
}

#[test]
fn forwarded_paths_are_exactly_what_was_judged() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let h = gw.http.to_string();
    let cases = [
        // decodes to `..` segments: resolved here; the IdP never sees a dot segment
        ("/oidc/register/%252e%252e/%252e%252e/x", "/x"),
        // an escaped `?` or `#` stays part of the client id
        ("/oidc/register/a%3Fb", "/oidc/register/a%3Fb"),
        ("/oidc/register/a%23b", "/oidc/register/a%23b"),
        // client ids with `/` and dots round-trip as one escaped segment
        ("/oidc/register/my.client%2F1", "/oidc/register/my.client%2F1"),
        ("/oidc/register/a%20b", "/oidc/register/a%20b"),
        ("/authorize/;x/./y?q=%41", "/authorize/y?q=%41"),
    ];
    for (target, want) in cases {
        let before = forwarded(&up).len();
        let resp = raw_request(gw.http, &request("GET", target, &h, "", ""));
        assert_eq!(raw_status(&resp), 200, "{target}: {resp}");
        let got = forwarded(&up);
        assert_eq!(got.len(), before + 1, "{target}");
        assert_eq!(got.last().unwrap().target_str(), want, "{target}");
    }
    for target in ["/oidc%2fregister", "/oidc/register/x%2F..", "/a/%0d%0aX:%201", "/oidc/register/%00", "/a%ff"] {
        let resp = raw_request(gw.http, &request("GET", target, &h, "", ""));
        assert_eq!(raw_status(&resp), 400, "{target}: {resp}");
        let b = body_of(&resp);
        assert_eq!(b["error"], "invalid_request", "{target}");
        assert!(b["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert_eq!(forwarded(&up).len(), cases.len());
}

#[test]
fn header_bytes_are_read_not_dropped() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = [\"127.0.0.1/32\"]")
        .upstream_keys("health_check = \"none\"")
        .rules(
            r#"[{"id":"block-net","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["203.0.113.0/24"]}}},
                {"id":"block-bot","active":true,"priority":2,"rule":{"action":{"block":true},"scope":"tenant","match":{"user_agents":["BadBot*"]}}}]"#,
        )
        .start();
    let h = gw.http.to_string();
    // What nginx's $proxy_add_x_forwarded_for makes of a client's own `café` header.
    let mut req = request("GET", "/authorize", &h, "", "");
    let xff = b"X-Forwarded-For: caf\xe9, 203.0.113.9\r\n\r\n";
    req.truncate(req.len() - 2);
    req.extend_from_slice(xff);
    let resp = raw_request(gw.http, &req);
    assert_eq!(raw_status(&resp), 403, "the real client address is judged: {resp}");

    let mut req = request("GET", "/authorize", &h, "", "");
    req.truncate(req.len() - 2);
    req.extend_from_slice(b"User-Agent: BadBot/1.0 (caf\xe9)\r\n\r\n");
    let resp = raw_request(gw.http, &req);
    assert_eq!(raw_status(&resp), 403, "a non-ASCII user agent is still matched: {resp}");

    // Two User-Agent headers: the IdP would see both, the ACL one: refused.
    let resp =
        raw_request(gw.http, &request("GET", "/authorize", &h, "User-Agent: Good\r\nUser-Agent: BadBot\r\n", ""));
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert!(forwarded(&up).is_empty());
}

#[test]
fn host_is_decided_once() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = []")
        .upstream_keys("health_check = \"none\"")
        .rules(r#"[{"id":"block-host","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"hostnames":["evil.example"]}}}]"#)
        .start();
    // Absolute-form, no Host: the target's host is the signal.
    let resp = raw_request(gw.http, b"GET http://evil.example/authorize HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&resp), 403, "{resp}");
    let resp = raw_request(gw.http, b"GET http://EVIL.example.:80/authorize HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&resp), 403, "{resp}");
    // HTTP/1.1 without any host: refused.
    let resp = raw_request(gw.http, b"GET /authorize HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert!(forwarded(&up).is_empty());
    let resp = raw_request(gw.http, b"GET http://good.example:8443/authorize HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let got = forwarded(&up);
    assert_eq!(got[0].target_str(), "/authorize");
    assert_eq!(got[0].header_all("host"), vec!["good.example:8443".to_string()]);
}

#[test]
fn untrusted_forwarding_headers_and_cookies_are_stripped() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = []\nja4_header = \"x-ja4\"")
        .upstream_keys("health_check = \"none\"")
        .start();
    let h = gw.http.to_string();
    let spoof = "Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\nX-Forwarded-Port: 1\r\nX-JA4: t13d_fake\r\nCookie: idp_session=abc\r\n";
    let resp = raw_request(gw.http, &request("GET", "/authorize", &h, spoof, ""));
    assert_eq!(raw_status(&resp), 200);
    let resp = raw_request(
        gw.http,
        &post("/oidc/register", Some(&h), GOOD, &format!("{spoof}Content-Encoding: gzip\r\nDigest: sha-256=x\r\n")),
    );
    assert_eq!(raw_status(&resp), 201, "{resp}");
    let got = forwarded(&up);
    assert_eq!(got.len(), 2);
    for r in &got {
        for name in ["forwarded", "x-real-ip", "true-client-ip", "cf-connecting-ip", "x-forwarded-port", "x-ja4"] {
            assert_eq!(r.header(name), None, "{name} reached upstream on {}", r.target_str());
        }
        assert_eq!(r.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(got[0].header("cookie").as_deref(), Some("idp_session=abc"), "authentication scope keeps cookies");
    assert_eq!(got[1].header("cookie"), None, "no ambient cookie on a registration");
    assert_eq!(got[1].header("content-encoding"), None, "the body is the gateway's, not gzip");
    assert_eq!(got[1].header("digest"), None);
    assert_eq!(got[1].header("content-length"), Some(got[1].body.len().to_string()));
    let sent: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(sent["client_name"], "Good App");
}

/// The forwarding options in their non-default settings: `set_forwarded` adds the gateway's
/// own `Forwarded`, `strip_untrusted_headers` replaces the list (what it does not name passes),
/// `forward_cookie` keeps the cookie on registrations.
#[test]
fn forwarding_options_do_what_they_say() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = []\nset_forwarded = true\nstrip_untrusted_headers = [\"x-real-ip\", \"forwarded\"]")
        .upstream_keys("health_check = \"none\"")
        .dcr("forward_cookie = true")
        .start();
    let h = gw.http.to_string();
    let spoof =
        "Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nCookie: idp_session=abc\r\n";
    let resp = raw_request(gw.http, &post("/oidc/register", Some(&h), GOOD, spoof));
    assert_eq!(raw_status(&resp), 201, "{resp}");
    let got = forwarded(&up);
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.header("x-real-ip"), None, "named in the list: stripped");
    assert_eq!(r.header("true-client-ip").as_deref(), Some("6.6.6.6"), "not named in the replaced list: passes");
    assert_eq!(
        r.header_all("forwarded"),
        vec![format!("for=127.0.0.1;proto=http;host=\"{h}\"")],
        "only the gateway's own Forwarded, never the client's"
    );
    assert_eq!(r.header("cookie").as_deref(), Some("idp_session=abc"), "forward_cookie = true");
}

#[test]
fn prototype_members_at_any_depth_never_reach_the_idp() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let h = gw.http.to_string();
    let body = r#"{"client_name":"A","redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"RSA","n":"x","e":"AQAB","__proto__":{"d":"private"}}]}}"#;
    let resp = raw_request(gw.http, &post("/oidc/register", Some(&h), body, ""));
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert_eq!(body_of(&resp)["error"], "invalid_client_metadata");
    assert!(forwarded(&up).is_empty());
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let h = gw.http.to_string();
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let two = format!(
        "GET /first HTTP/1.1\r\nHost: {h}\r\n\r\nGET /second HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(two.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    let first = out.find("/first").expect("first answered");
    let second = out.find("/second").expect("second answered");
    assert!(first < second);
    let got: Vec<String> = forwarded(&up).iter().map(|r| r.target_str()).collect();
    assert_eq!(got, ["/first", "/second"]);
}

#[test]
fn a_pipelined_registration_and_request_are_both_answered() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let h = gw.http.to_string();
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut both = post("/oidc/register", Some(&h), GOOD, "");
    // The first without `Connection: close`.
    let text = String::from_utf8(both).unwrap().replace("Connection: close\r\n", "");
    both = text.into_bytes();
    both.extend_from_slice(format!("GET /after HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n").as_bytes());
    s.write_all(&both).unwrap();
    let out = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
    let got: Vec<String> = forwarded(&up).iter().map(|r| r.target_str()).collect();
    assert_eq!(got, ["/oidc/register", "/after"]);
}

fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_trickled_head_gets_408_json_at_the_deadline() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("health_check = \"none\"")
        .server_keys("header_timeout_ms = 300")
        .start();
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /authorize HTTP/1.1\r\nHost: a\r\n").unwrap();
    // No further byte: the deadline, not a per-read timeout, ends it.
    let started = std::time::Instant::now();
    let resp = read_all(&mut s);
    assert_eq!(raw_status(&resp), 408, "{resp}");
    assert_eq!(body_of(&resp)["error"], "invalid_request");
    assert!(started.elapsed() < Duration::from_secs(9), "answered by the deadline, not the read timeout");
    assert_eq!(gw.wait_metric("dcr_gateway_request_head_errors_total{kind=\"timeout\"}", 1.0), 1.0);
    assert_eq!(forwarded(&up).len(), 0);
}

#[test]
fn malformed_and_oversized_heads_get_json() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let resp = raw_request(gw.http, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header Line\r\n\r\n");
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert!(body_of(&resp)["request_id"].is_string());
    let many: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
    let resp = raw_request(gw.http, format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes());
    assert_eq!(raw_status(&resp), 431, "{resp}");
    assert_eq!(body_of(&resp)["error"], "invalid_request");
    let big = "x".repeat(70 * 1024);
    let resp = raw_request(gw.http, format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(raw_status(&resp), 431, "{resp}");
    // Framing Pingora would answer with an empty 400 (or 405 for CONNECT): JSON here.
    for head in [
        &b"CONNECT idp.example:443 HTTP/1.1\r\nHost: idp.example:443\r\n\r\n"[..],
        b"POST /oidc/register HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
        b"POST /oidc/register HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    ] {
        let resp = raw_request(gw.http, head);
        assert_eq!(raw_status(&resp), 400, "{resp}");
        assert_eq!(body_of(&resp)["error"], "invalid_request", "{resp}");
    }
    assert!(forwarded(&up).is_empty());
}

#[test]
fn connections_beyond_the_cap_are_refused_and_counted() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .upstream_keys("health_check = \"none\"")
        .server_keys("max_connections = 2")
        .start();
    // The harness's readiness probes have come and gone; hold two idle connections.
    assert!(wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_connections_open") == 0.0));
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(gw.http).unwrap()).collect();
    assert!(wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_connections_open") == 2.0));
    let mut third = TcpStream::connect(gw.http).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let resp = read_all(&mut third);
    assert_eq!(raw_status(&resp), 503, "{resp}");
    assert_eq!(body_of(&resp)["error"], "temporarily_unavailable");
    assert_eq!(gw.wait_metric("dcr_gateway_connections_refused_total", 1.0), 1.0);
    drop(held);
    // Room again once they close.
    assert!(wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_connections_open") == 0.0));
    let resp = raw_request(gw.http, &request("GET", "/authorize", "a", "", ""));
    assert_eq!(raw_status(&resp), 200, "{resp}");
}

/// One response off a kept-alive connection: its head and `Content-Length` body.
fn read_one(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => panic!("connection ended inside a response head: {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn refused_requests_keep_the_connection_only_when_their_body_is_drained() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = []")
        .upstream_keys("health_check = \"none\"")
        .rules(r#"[{"id":"flood","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"user_agents":["flooder"]}}}]"#)
        .start();
    let h = gw.http.to_string();
    // A refused request's body that is itself a request: it must be drained, never parsed.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for req in [
        format!("GET /a HTTP/1.1\r\nHost: {h}\r\nUser-Agent: flooder\r\n\r\n"),
        format!(
            "POST /b HTTP/1.1\r\nHost: {h}\r\nUser-Agent: flooder\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        format!("DELETE /c HTTP/1.1\r\nHost: {h}\r\nUser-Agent: flooder\r\nContent-Length: 0\r\n\r\n"),
    ] {
        s.write_all(req.as_bytes()).unwrap();
        let resp = read_one(&mut s);
        assert_eq!(raw_status(&resp), 403, "{resp}");
        assert!(!resp.to_ascii_lowercase().contains("connection: close"), "kept alive: {resp}");
    }
    // The same connection still serves the next request.
    s.write_all(format!("GET /after HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let resp = read_one(&mut s);
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let got: Vec<String> = forwarded(&up).iter().map(|r| r.target_str()).collect();
    assert_eq!(got, ["/after"], "the drained body was never read as a request");

    // A body too large to drain, or of unknown length: answered, then the connection is closed
    // with the rest of the body unread — and nothing in it reaches the IdP.
    for req in [
        format!("POST /big HTTP/1.1\r\nHost: {h}\r\nUser-Agent: flooder\r\nContent-Length: 100000\r\n\r\n{smuggled}"),
        format!(
            "POST /chunked HTTP/1.1\r\nHost: {h}\r\nUser-Agent: flooder\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n",
            smuggled.len()
        ),
    ] {
        let mut s = TcpStream::connect(gw.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let resp = read_all(&mut s);
        assert_eq!(raw_status(&resp), 403, "{resp}");
        assert_eq!(resp.matches("HTTP/1.1").count(), 1, "one answer, then closed: {resp}");
    }
    // A small body sent slower than the drain allows closes the connection instead of holding it.
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("POST /slow HTTP/1.1\r\nHost: {h}\r\nUser-Agent: flooder\r\nContent-Length: 10\r\n\r\nabc").as_bytes(),
    )
    .unwrap();
    let resp = read_all(&mut s);
    assert_eq!(raw_status(&resp), 403, "{resp}");
    let got: Vec<String> = forwarded(&up).iter().map(|r| r.target_str()).collect();
    assert_eq!(got, ["/after"], "nothing else was forwarded");
}
