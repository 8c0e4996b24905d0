//! The adapter's hooks driven in process on a Pingora `Session` built from bytes (as Pingap tests
//! its plugins): what `request_filter` and the dcr phase decide, and the request
//! `upstream_request_filter` builds from that decision — no binary spawned, no socket. Refusals
//! are driven the same way over an in-memory duplex stream: the answer the client reads, and
//! that nothing was prepared for the IdP. (Request forms curl cannot send are exercised over raw
//! sockets against the binary in `tests/request_view.rs`.)

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::{ProxyHttp, Session};

use super::{drain, upstream, Gateway};
use crate::scope::Scope;
use crate::snapshot::Snapshot;
use crate::telemetry::{AuditLog, Metrics};

/// A gateway over the configuration `extra` (in a temp dir), with an upstream it never calls.
fn gateway(dir: &std::path::Path, extra: &str) -> Gateway {
    let path = dir.join("gateway.toml");
    let text = format!(
        "[upstream]\norigins = [\"http://127.0.0.1:9\"]\nhealth_check = \"none\"\n\
         [admin]\nsettings_file = \"settings.json\"\n{extra}"
    );
    let config = crate::config::parse(&text, &path).unwrap();
    let snap = Snapshot::from_config(config.clone(), String::new()).unwrap();
    let (lb, peers) = upstream::build(&config.upstream).unwrap();
    let fetch = crate::fetch::cimd::fetch_config(&config.cimd, None).unwrap();
    let fetcher = crate::fetch::Fetcher::new(fetch, Arc::new(crate::fetch::SystemResolver)).unwrap();
    Gateway {
        store: Arc::new(arc_swap::ArcSwap::from_pointee(snap)),
        upstreams: Arc::new(lb),
        peers: Arc::new(peers),
        metrics: Arc::new(Metrics::new()),
        audit: Arc::new(AuditLog::disabled()),
        tls_listeners: Vec::new(),
        drain: Arc::new(drain::Drain::default()),
        rate_limiter: Arc::new(crate::state::ratelimiter::RateLimiter::new()),
        token_uses: Arc::new(crate::tokens::UseCounter::new()),
        pins: Arc::new(crate::tokens::ClientPins::new()),
        registration_turn: Arc::new(tokio::sync::Mutex::new(())),
        registry: None,
        cimd: None,
        metadata: Arc::new(crate::fetch::metadata::MetadataResolver::new(Arc::new(fetcher))),
        cimd_paths: Arc::new(super::cimd::endpoint_paths(&config)),
        bridge: None,
    }
}

async fn session(raw: &[u8]) -> Session {
    let io = tokio_test::io::Builder::new().read(raw).build();
    let mut s = Session::new_h1(Box::new(io));
    assert!(s.read_request().await.unwrap(), "request head parsed");
    s
}

/// A refusal driven through `request_filter`: the client's bytes in, the gateway's answer out
/// (status line, lower-case headers, body), with the request's context for what it decided.
struct Refused {
    status: u16,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
    ctx: super::RequestCtx,
}

impl Refused {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

async fn refused(gw: &Gateway, raw: &[u8]) -> Refused {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(1 << 20);
    client.write_all(raw).await.unwrap();
    let mut s = Session::new_h1(Box::new(server));
    assert!(s.read_request().await.unwrap(), "request head parsed");
    let mut ctx = gw.new_ctx();
    assert!(gw.request_filter(&mut s, &mut ctx).await.unwrap(), "answered by the gateway, not forwarded");
    assert!(ctx.registration.body.is_none(), "nothing prepared for the IdP");
    drop(s);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON body ({e}): {body:?}"));
    let r = Refused { status, headers, body, ctx };
    // Every refusal: the OAuth error shape, the request id the log line carries, never cached.
    assert_eq!(r.body["request_id"].as_str(), Some(r.ctx.admission.request_id.as_str()));
    assert_eq!(r.header("x-request-id"), Some(r.ctx.admission.request_id.as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.ctx.admission.status, r.status, "the status the audit line will carry");
    assert_eq!(r.body["error"].as_str(), r.ctx.admission.error.as_ref().map(|e| e.code()), "{}", r.body);
    r
}

fn registration(body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST /oidc/register HTTP/1.1\r\nHost: idp.example\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const GOOD: &str = r#"{"client_name":"Hook Test","redirect_uris":["https://app.example.com/cb"]}"#;

#[tokio::test]
async fn an_acl_block_is_a_403_and_nothing_reaches_the_idp() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.json"),
        r#"[{"id":"no-bots","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"dcr","match":{"user_agents":["evil-bot/*"]}}}]"#,
    )
    .unwrap();
    let gw = gateway(dir.path(), "[acl]\nrules = \"rules.json\"\n");
    let r = refused(&gw, &registration(GOOD, "User-Agent: evil-bot/2.0\r\n")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (403, Some("access_denied")));
    assert_eq!(r.ctx.admission.outcome, crate::core::outcome::Outcome::Blocked);
    let rule = r.ctx.admission.verdict.as_ref().and_then(|v| v.rule.as_ref()).map(|r| r.to_string());
    assert_eq!(rule.as_deref(), Some("no-bots"), "the rule the audit line names");
}

#[tokio::test]
async fn a_hostile_registration_is_refused_before_the_idp() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "");
    let hostile = r#"{"client_name":"x","redirect_uris":["javascript:alert(document.cookie)"]}"#;
    let r = refused(&gw, &registration(hostile, "")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalid_redirect_uri")));
    assert_eq!(r.ctx.admission.outcome, crate::core::outcome::Outcome::Invalid);
    assert!(!r.body.to_string().contains("document.cookie"), "the client's input is not echoed: {}", r.body);
}

#[tokio::test]
async fn a_registration_that_is_not_json_is_a_415() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "");
    let raw = format!(
        "POST /oidc/register HTTP/1.1\r\nHost: idp.example\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{GOOD}",
        GOOD.len()
    );
    let r = refused(&gw, raw.as_bytes()).await;
    assert_eq!((r.status, r.body["error"].as_str()), (415, Some("invalid_request")));
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_drained_when_small_and_closed_when_large() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "[dcr]\nmax_body_bytes = 64\n");
    let body =
        |n: usize| format!(r#"{{"client_name":"{}","redirect_uris":["https://app.example.com/cb"]}}"#, "a".repeat(n));
    // A small body is drained by Pingora's framing before the next head: the connection stays.
    let r = refused(&gw, &registration(&body(200), "")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (413, Some("invalid_request")));
    assert_ne!(r.header("connection"), Some("close"), "{:?}", r.headers);
    // A large one is not read at all: the connection closes, so what is left of it is never
    // read as a request.
    let large = body(super::respond::DRAIN_MAX_BYTES as usize + 1024);
    let r = refused(&gw, &registration(&large, "")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (413, Some("invalid_request")));
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
}

#[tokio::test]
async fn a_registration_without_its_initial_access_token_is_a_401() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.toml"), "").unwrap();
    let gw = gateway(dir.path(), "[dcr]\nregistration = \"token\"\ntoken_file = \"tokens.toml\"\n");
    let r = refused(&gw, &registration(GOOD, "")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("invalid_token")));
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", r.headers);
    assert!(r.ctx.registration.token_lease.is_none(), "no use leased");
}

#[tokio::test]
async fn the_registration_past_the_per_ip_limit_is_a_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "[rate_limit]\nper_ip = { requests = 1, window_seconds = 3600 }\n");
    let mut s = session(&registration(GOOD, "")).await;
    let mut ctx = gw.new_ctx();
    assert!(!gw.request_filter(&mut s, &mut ctx).await.unwrap(), "the first is admitted");
    let r = refused(&gw, &registration(GOOD, "")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (429, Some("rate_limit_exceeded")));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(r.ctx.admission.outcome, crate::core::outcome::Outcome::RateLimited);
}

/// The request the IdP would receive: the client's head through `upstream_request_filter`.
async fn forwarded(gw: &Gateway, s: &mut Session, ctx: &mut super::RequestCtx) -> RequestHeader {
    let mut req = s.req_header().clone();
    gw.upstream_request_filter(s, &mut req, ctx).await.unwrap();
    req
}

#[tokio::test]
async fn a_registration_is_admitted_and_forwarded_as_the_gateway_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "");
    // Spaced JSON with a member strict mode drops, a cookie and an untrusted forwarding claim.
    let body = br#"{ "client_name" : "Hook Test", "redirect_uris" : ["https://app.example.com/cb"], "x_unknown": 1 }"#;
    let raw = [
        format!(
            "POST /oidc/register HTTP/1.1\r\nHost: idp.example\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nCookie: idp_session=abc\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        body,
    ]
    .concat();
    let mut s = session(&raw).await;
    let mut ctx = gw.new_ctx();
    assert!(!gw.request_filter(&mut s, &mut ctx).await.unwrap(), "admitted: nothing answered here");
    let route = ctx.admission.route.clone().unwrap();
    assert_eq!((route.scope, route.is_registration), (Scope::Dcr, true));
    assert!(ctx.registration.is_registration_post);
    let sent = ctx.registration.body.clone().expect("the gateway's own body");
    let doc: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(doc["client_name"], "Hook Test");
    assert!(doc.get("x_unknown").is_none(), "strict mode dropped it: {doc}");
    assert_eq!(sent, serde_json::to_vec(&doc).unwrap(), "compact, as re-serialized");

    let req = forwarded(&gw, &mut s, &mut ctx).await;
    assert_eq!(req.raw_path(), b"/oidc/register");
    assert_eq!(req.headers.get("host").unwrap(), "idp.example");
    assert_eq!(req.headers.get("content-length").unwrap().to_str().unwrap(), sent.len().to_string());
    assert!(req.headers.get("cookie").is_none(), "no ambient cookie on a registration");
    assert!(req.headers.get("x-real-ip").is_none(), "an untrusted peer's claim is stripped");
    assert_eq!(req.headers.get("x-request-id").unwrap().to_str().unwrap(), ctx.admission.request_id.as_str());
}

#[tokio::test]
async fn an_absolute_form_request_is_decided_and_forwarded_on_one_view() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "");
    let mut s = session(b"GET http://IDP.example:8080/authorize?client_id=x HTTP/1.1\r\n\r\n").await;
    let mut ctx = gw.new_ctx();
    assert!(!gw.request_filter(&mut s, &mut ctx).await.unwrap());
    assert_eq!(ctx.admission.route.as_ref().unwrap().scope, Scope::Authentication);
    assert_eq!(ctx.admission.signals.as_ref().unwrap().hostname.as_deref(), Some("idp.example"));
    let req = forwarded(&gw, &mut s, &mut ctx).await;
    assert_eq!(req.raw_path(), b"/authorize?client_id=x", "origin-form upstream");
    assert_eq!(req.headers.get("host").unwrap(), "idp.example:8080", "the target's authority is the host");
}

#[tokio::test]
async fn a_monitoring_rule_records_and_lets_the_request_through() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.json"),
        r#"[{"id":"watch","active":true,"priority":1,"rule":{"action":{"block":true,"log":true},"scope":"tenant","match":{"user_agents":["curious/*"]}}}]"#,
    )
    .unwrap();
    let gw = gateway(dir.path(), "[acl]\nrules = \"rules.json\"\n");
    let mut s = session(b"GET /authorize HTTP/1.1\r\nHost: idp.example\r\nUser-Agent: curious/1.0\r\n\r\n").await;
    let mut ctx = gw.new_ctx();
    assert!(!gw.request_filter(&mut s, &mut ctx).await.unwrap(), "monitoring mode: not blocked");
    let verdict = ctx.admission.verdict.as_ref().unwrap();
    assert_eq!(verdict.decision, crate::acl::Decision::Allow);
    let logged: Vec<&str> = verdict.logged.iter().map(|r| r.as_ref()).collect();
    assert_eq!(logged, ["watch"]);
}
