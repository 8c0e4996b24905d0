//! The adapter's hooks driven in process on a Pingora `Session` built from bytes (as Pingap tests
//! its plugins): what `request_filter` and the dcr phase decide, and the request
//! `upstream_request_filter` builds from that decision — no binary spawned, no socket. Refusals
//! (which write an answer) are covered by the spawned-binary suites (`tests/request_view.rs`).

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
