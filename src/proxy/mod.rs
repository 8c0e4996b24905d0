//! The Pingora `ProxyHttp` adapter: the only module that knows Pingora's request types.
//! It gathers signals, asks the pure core (routes, acl, dcr) for decisions, and turns them
//! into responses or upstream requests.

mod drain;
pub mod listener;
pub mod server;
mod signals;
pub mod tls;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::acl::{Decision, Verdict};
use crate::dcr::{self, RegistrationError};
use crate::errors::GatewayError;
use crate::ratelimit::{RateClass, RateDecision};
use crate::config::schema::SniHostMismatch;
use crate::core::target::TargetError;
use crate::routes::Route;
use crate::scope::Scope;
use crate::signals::Signals;
use crate::snapshot::{Snapshot, Store};
use crate::telemetry::audit::{now_rfc3339, truncate_chars};
use crate::telemetry::{AuditLine, AuditLog, Metrics, Outcome};
use upstream::PeerTemplate;

/// Upper bound on the upstream response we buffer to learn the issued `client_id`.
const CLIENT_ID_CAPTURE_LIMIT: usize = 64 * 1024;

const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";

/// The one member of the IdP's registration response the gateway reads. Deserializing into
/// this skips everything else (secrets included) without building a `Value` tree.
#[derive(serde::Deserialize)]
struct IssuedClient<'a> {
    #[serde(borrow)]
    client_id: Option<std::borrow::Cow<'a, str>>,
}

pub struct Gateway {
    pub store: Arc<Store>,
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
    pub peers: Arc<PeerTemplate>,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<AuditLog>,
    /// Listener addresses that terminate TLS (for `X-Forwarded-Proto`).
    pub tls_listeners: Vec<std::net::SocketAddr>,
    pub drain: Arc<drain::Drain>,
    pub rate_limiter: Arc<crate::ratelimit::RateLimiter>,
    /// Initial access token uses (`max_uses`), per process, across reloads.
    pub token_uses: Arc<crate::tokens::UseCounter>,
}

pub struct RequestCtx {
    _inflight: drain::InFlight,
    start: Instant,
    snapshot: Option<Arc<Snapshot>>,
    request_id: String,
    route: Option<Route>,
    signals: Option<Signals>,
    peer_trusted: bool,
    verdict: Option<Verdict>,
    outcome: Outcome,
    error: Option<GatewayError>,
    /// The normalized registration forwarded instead of the client's bytes.
    replacement_body: Option<Bytes>,
    is_registration_post: bool,
    registration: Option<RegistrationAudit>,
    check_time: Duration,
    upstream_start: Option<Instant>,
    upstream_status: Option<u16>,
    upstream_latency: Option<Duration>,
    capture: Option<Vec<u8>>,
    client_id: Option<String>,
    status: u16,
    /// The initial access token that admitted this registration.
    token: Option<crate::tokens::TokenEntry>,
    /// Its `max_uses` use, committed when the IdP answers 2xx, else given back on drop.
    token_lease: Option<crate::tokens::UseLease>,
    strip_authorization: bool,
    /// The request's host as decided by `core::target` (`Host` value sent upstream).
    upstream_host: Option<http::HeaderValue>,
}

#[derive(Default)]
struct RegistrationAudit {
    software_statement_issuer: Option<String>,
    client_name: Option<String>,
    redirect_hosts: Vec<String>,
    dropped_members: Vec<String>,
    removed_scopes: Vec<String>,
}

impl RequestCtx {
    fn scope(&self) -> Scope {
        self.route.as_ref().map(|r| r.scope).unwrap_or(Scope::Authentication)
    }
}

fn generate_request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// A request id from a trusted proxy is kept only if it is short and harmless in logs.
fn acceptable_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn is_json_content_type(v: Option<&http::HeaderValue>) -> bool {
    let Some(v) = v.and_then(|v| v.to_str().ok()) else { return false };
    let mime = v.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
}

impl Gateway {
    /// Write a response the gateway generates itself.
    async fn respond(&self, session: &mut Session, ctx: &mut RequestCtx, err: GatewayError) -> Result<bool> {
        let status = err.status();
        let body = err.body(&ctx.request_id);
        let mut resp = ResponseHeader::build(status, Some(6))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        for (k, v) in err.headers() {
            resp.insert_header(k, v)?;
        }
        ctx.status = status;
        ctx.error = Some(err);
        // The body of a rejected request may still be in flight: do not reuse the connection.
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(Bytes::from(body)), true).await?;
        Ok(true)
    }

    async fn redirect(&self, session: &mut Session, ctx: &mut RequestCtx, location: &str) -> Result<bool> {
        let mut resp = ResponseHeader::build(302, Some(4))?;
        resp.insert_header("location", location)?;
        resp.insert_header("content-length", "0")?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        ctx.status = 302;
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    /// The `dcr` scope after the ACL allowed it: method, switch, media type, body, payload.
    async fn dcr_filter(&self, session: &mut Session, ctx: &mut RequestCtx, snap: &Snapshot) -> Result<bool> {
        let is_registration = ctx.route.as_ref().map_or(true, |r| r.is_registration);
        let method = session.req_header().method.clone();
        let mut policy = std::borrow::Cow::Borrowed(&snap.config.dcr);
        if method == http::Method::OPTIONS {
            // CORS preflight for browser-based clients: the IdP answers it; there is no body.
            return self.refuse_body(session, ctx).await;
        }
        // A token error is answered only after the request is counted, in its own class.
        let token_mode = policy.registration == crate::dcr::RegistrationMode::Token;
        let mut token_error = None;
        let validate_body = if is_registration {
            if method != http::Method::POST {
                ctx.outcome = Outcome::Invalid;
                return self.respond(session, ctx, GatewayError::MethodNotAllowed { allow: "POST, OPTIONS" }).await;
            }
            if !policy.enabled {
                ctx.outcome = Outcome::Disabled;
                return self.respond(session, ctx, GatewayError::RegistrationDisabled).await;
            }
            if policy.registration == crate::dcr::RegistrationMode::Token {
                let auth = session.req_header().headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                let verified = crate::tokens::bearer(auth)
                    .and_then(|t| snap.registration_tokens.verify(t, std::time::SystemTime::now()).cloned());
                let verified = verified.and_then(|e| match e.max_uses {
                    // Refuse a used-up token before reading the body; the atomic count is
                    // taken after validation.
                    Some(max) if self.token_uses.uses(&e) >= max => Err(crate::tokens::TokenError::Exhausted),
                    _ => Ok(e),
                });
                match verified {
                    Ok(entry) => {
                        if !entry.overrides.is_empty() {
                            policy = std::borrow::Cow::Owned(entry.overrides.apply(&snap.config.dcr));
                        }
                        ctx.strip_authorization = !snap.config.dcr.forward_authorization;
                        ctx.token = Some(entry);
                    }
                    Err(e) => token_error = Some(e),
                }
            }
            true
        } else {
            match method {
                http::Method::GET | http::Method::DELETE => false,
                http::Method::PUT => true,
                _ => {
                    ctx.outcome = Outcome::Invalid;
                    return self
                        .respond(session, ctx, GatewayError::MethodNotAllowed { allow: "GET, PUT, DELETE, OPTIONS" })
                        .await;
                }
            }
        };
        // Token mode: only registrations with a valid token count in the main buckets, so an
        // unauthenticated flood cannot lock token holders out.
        let class = if token_mode && ctx.token.is_none() { RateClass::Unauthenticated } else { RateClass::Main };
        if let Some(err) = self.rate_limit(ctx, snap, class).await {
            ctx.outcome = Outcome::RateLimited;
            return self.respond(session, ctx, err).await;
        }
        if let Some(e) = token_error {
            ctx.outcome = Outcome::Unauthorized;
            return self.respond(session, ctx, GatewayError::Unauthorized(e)).await;
        }
        if !validate_body {
            // A body here is either read and validated or refused — never forwarded unread
            // (an IdP may read it whatever the method).
            return self.refuse_body(session, ctx).await;
        }
        if !is_json_content_type(session.req_header().headers.get(http::header::CONTENT_TYPE)) {
            ctx.outcome = Outcome::Invalid;
            return self.respond(session, ctx, GatewayError::UnsupportedMediaType).await;
        }
        let limit = policy.max_body_bytes;
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            ctx.outcome = Outcome::Invalid;
            return self.respond(session, ctx, GatewayError::PayloadTooLarge { limit }).await;
        }
        let body = match self.read_body(session, limit, Duration::from_millis(policy.body_read_timeout_ms)).await {
            Ok(b) => b,
            Err(e) => {
                ctx.outcome = Outcome::Invalid;
                return self.respond(session, ctx, e).await;
            }
        };
        let t = Instant::now();
        let checked = if is_registration {
            dcr::check_with(&body, &policy, &snap.statements)
        } else {
            dcr::check_update_with(&body, &policy, &snap.statements)
        };
        ctx.check_time += t.elapsed();
        match checked {
            Ok(n) => {
                if let Some(entry) = &ctx.token {
                    // Leased only for registrations that will reach the IdP; spent only when
                    // it answers 2xx (upstream_response_filter), given back otherwise.
                    match self.token_uses.lease(entry) {
                        Some(lease) => ctx.token_lease = Some(lease),
                        None => {
                            ctx.outcome = Outcome::Unauthorized;
                            return self
                                .respond(session, ctx, GatewayError::Unauthorized(crate::tokens::TokenError::Exhausted))
                                .await;
                        }
                    }
                }
                let mut out = n.body;
                if !is_registration {
                    // RFC 7592 §2.2: an update carries the client_id, which must reach the IdP.
                    out = restore_client_id(&body, n.document).unwrap_or(out);
                }
                ctx.registration = Some(RegistrationAudit {
                    software_statement_issuer: n.software_statement_issuer,
                    client_name: n.client_name,
                    redirect_hosts: n.redirect_hosts,
                    dropped_members: n.dropped_members,
                    removed_scopes: n.removed_scopes,
                });
                ctx.replacement_body = Some(Bytes::from(out));
                Ok(false)
            }
            Err(e) => {
                ctx.outcome = Outcome::Invalid;
                self.respond(session, ctx, GatewayError::InvalidRegistration(e)).await
            }
        }
    }

    /// `Ok(false)` (go on) when the request has no body, else a 400 answer.
    async fn refuse_body(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if session.is_body_empty() {
            return Ok(false);
        }
        ctx.outcome = Outcome::Invalid;
        self.respond(session, ctx, GatewayError::BodyNotAllowed).await
    }

    /// Read the whole body, bounded in size and time. The bytes also land in Pingora's retry
    /// buffer, which is what it replays upstream; `request_body_filter` swaps them for ours.
    async fn read_body(&self, session: &mut Session, limit: usize, deadline: Duration) -> std::result::Result<Vec<u8>, GatewayError> {
        if session.req_header().headers.get(http::header::EXPECT).is_some() {
            let cont = ResponseHeader::build(100, Some(0)).map_err(|_| GatewayError::BadRequestBody)?;
            session
                .write_response_header(Box::new(cont), false)
                .await
                .map_err(|_| GatewayError::BadRequestBody)?;
        }
        session.enable_retry_buffering();
        let t = Instant::now();
        let read = async {
            let mut buf = Vec::new();
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => {
                        if buf.len() + chunk.len() > limit {
                            return Err(GatewayError::PayloadTooLarge { limit });
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    Ok(None) => return Ok(buf),
                    Err(_) => return Err(GatewayError::BadRequestBody),
                }
            }
        };
        let r = match tokio::time::timeout(deadline, read).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::RequestTimeout),
        };
        self.metrics.body_read_duration.observe(t.elapsed().as_secs_f64());
        r
    }

    /// Count the request against `[rate_limit]`; `Some` when it must be refused.
    async fn rate_limit(&self, ctx: &mut RequestCtx, snap: &Snapshot, class: RateClass) -> Option<GatewayError> {
        let ip = ctx.signals.as_ref()?.client_ip;
        let (decision, answered) = self.rate_limiter.check(&snap.config.rate_limit, ip, class).await;
        let result = match decision {
            RateDecision::Allow => "allowed",
            RateDecision::Limited { .. } => "limited",
            RateDecision::BackendUnavailable => "unavailable",
        };
        self.metrics.rate_limit_decisions.with_label_values(&[answered.as_str(), result]).inc();
        match decision {
            RateDecision::Allow => None,
            RateDecision::Limited { kind, retry_after_secs } => {
                self.metrics.rate_limited.with_label_values(&[kind.as_str()]).inc();
                Some(GatewayError::RateLimited { retry_after_secs })
            }
            RateDecision::BackendUnavailable => Some(GatewayError::RateLimitUnavailable),
        }
    }

    fn record_acl(&self, verdict: &Verdict) {
        for id in &verdict.logged {
            self.metrics.acl_matches.with_label_values(&[id, "log"]).inc();
        }
        if let Some(id) = &verdict.rule {
            let action = match verdict.decision {
                Decision::Allow => "allow",
                Decision::Block => "block",
                Decision::Redirect(_) => "redirect",
            };
            self.metrics.acl_matches.with_label_values(&[id, action]).inc();
        }
    }
}

/// An RFC 7239 node: IPv6 addresses quoted and bracketed.
fn forwarded_node(ip: &str) -> String {
    if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    }
}

/// Put the client's `client_id` back into a validated RFC 7592 update.
fn restore_client_id(raw: &[u8], mut doc: serde_json::Map<String, serde_json::Value>) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let id = v.get("client_id")?.as_str()?.to_string();
    doc.insert("client_id".into(), serde_json::Value::String(id));
    serde_json::to_vec(&doc).ok()
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _inflight: self.drain.enter(),
            start: Instant::now(),
            snapshot: None,
            request_id: String::new(),
            route: None,
            signals: None,
            peer_trusted: false,
            verdict: None,
            outcome: Outcome::Allowed,
            error: None,
            replacement_body: None,
            is_registration_post: false,
            registration: None,
            check_time: Duration::ZERO,
            upstream_start: None,
            upstream_status: None,
            upstream_latency: None,
            capture: None,
            client_id: None,
            status: 0,
            token: None,
            token_lease: None,
            strip_authorization: false,
            upstream_host: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<()> {
        // Answer pipelined requests one after another instead of dropping the ones that
        // arrived with the first (Pingora's default closes the connection on them).
        session.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snap = self.store.load_full();
        ctx.snapshot = Some(snap.clone());
        let t = Instant::now();
        // One parse of the head; everything below decides on this view (core::target).
        let view = signals::request_view(session);
        let host = view.as_ref().ok().and_then(|v| v.authority.as_ref()).map(|a| a.host.clone());
        let extracted = signals::extract(session, &snap, &self.metrics, host);
        ctx.peer_trusted = extracted.peer_trusted;
        ctx.request_id = extracted
            .request_id
            .filter(|id| acceptable_request_id(id))
            .unwrap_or_else(generate_request_id);
        let sni = extracted.sni;
        ctx.signals = Some(extracted.signals);
        let classified = view.and_then(|v| snap.config.router.classify(&v).map(|r| (v, r)));
        let (view, route) = match classified {
            Ok(x) => x,
            Err(e) => {
                ctx.outcome = Outcome::Invalid;
                return self.respond(session, ctx, GatewayError::BadTarget(e)).await;
            }
        };
        if let Some(err) = extracted.header_error {
            ctx.outcome = Outcome::Invalid;
            return self.respond(session, ctx, GatewayError::BadHeader(err)).await;
        }
        if let (Some(sni), Some(a)) = (sni.as_deref(), view.authority.as_ref()) {
            if snap.config.sni_host_mismatch == SniHostMismatch::Reject && !sni.eq_ignore_ascii_case(&a.host) {
                ctx.outcome = Outcome::Invalid;
                return self.respond(session, ctx, GatewayError::Misdirected).await;
            }
        }
        ctx.upstream_host = match view.authority.as_ref().map(|a| http::HeaderValue::from_str(&a.header_value())) {
            Some(Ok(h)) => Some(h),
            Some(Err(_)) => {
                ctx.outcome = Outcome::Invalid;
                return self.respond(session, ctx, GatewayError::BadTarget(TargetError::InvalidHost)).await;
            }
            None => None,
        };
        let verdict = snap.acl.evaluate(route.scope, ctx.signals.as_ref().expect("signals set above"));
        ctx.check_time += t.elapsed();
        self.record_acl(&verdict);
        ctx.is_registration_post = route.is_registration && session.req_header().method == http::Method::POST;
        let scope = route.scope;
        ctx.route = Some(route);
        let decision = verdict.decision.clone();
        ctx.verdict = Some(verdict);
        match decision {
            Decision::Block => {
                ctx.outcome = Outcome::Blocked;
                return self.respond(session, ctx, GatewayError::AccessDenied).await;
            }
            Decision::Redirect(uri) => {
                ctx.outcome = Outcome::Redirected;
                return self.redirect(session, ctx, &uri).await;
            }
            Decision::Allow => {}
        }
        if scope == Scope::Dcr {
            // Rate limits are counted in dcr_filter, after the token check.
            return self.dcr_filter(session, ctx, &snap).await;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Only the bytes the gateway wrote reach the IdP. The body was read whole before we
        // connected upstream, so this runs once per upstream attempt, with the full buffer.
        if let Some(replacement) = &ctx.replacement_body {
            *body = Some(replacement.clone());
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        match self.upstreams.select(b"", 256) {
            Some(backend) => Ok(Box::new(self.peers.peer(&backend))),
            None => {
                self.metrics.upstream_errors.with_label_values(&["no_healthy_upstream"]).inc();
                Err(Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream origin"))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(snap) = ctx.snapshot.clone() else { return Ok(()) };
        let connecting = ctx.signals.as_ref().map(|s| s.connecting_ip.to_string()).unwrap_or_default();
        let xff = if ctx.peer_trusted && req.headers.contains_key("x-forwarded-for") {
            // Read from the bytes: a non-ASCII byte must not drop the hops before it.
            let mut joined = Vec::with_capacity(64);
            for v in req.headers.get_all("x-forwarded-for").iter() {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(connecting.as_bytes());
            http::HeaderValue::from_bytes(&joined).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?
        } else {
            // An untrusted peer's X-Forwarded-For is whatever it chose to write: drop it.
            http::HeaderValue::from_str(&connecting).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?
        };
        req.insert_header("x-forwarded-for", xff)?;
        if !ctx.peer_trusted {
            // Address, port and fingerprint claims of a client that is not a trusted proxy.
            for name in &snap.config.strip_untrusted_headers {
                req.remove_header(name);
            }
        }
        // The host decided in request_filter is the host the IdP sees.
        match ctx.upstream_host.clone() {
            Some(h) => req.insert_header(http::header::HOST, h)?,
            None => {
                req.remove_header(&http::header::HOST);
            }
        }
        let is_tls = signals::is_tls(session, &self.tls_listeners);
        if !(ctx.peer_trusted && req.headers.contains_key("x-forwarded-proto")) {
            req.insert_header("x-forwarded-proto", if is_tls { "https" } else { "http" })?;
        }
        if !(ctx.peer_trusted && req.headers.contains_key("x-forwarded-host")) {
            // A HeaderValue clone shares the bytes; no copy of the Host value.
            match ctx.upstream_host.clone() {
                Some(h) => req.insert_header("x-forwarded-host", h)?,
                None => {
                    req.remove_header("x-forwarded-host");
                }
            }
        }
        if snap.config.set_forwarded {
            let proto = if is_tls { "https" } else { "http" };
            let mut fwd = format!("for={};proto={proto}", forwarded_node(&connecting));
            if let Some(h) = ctx.upstream_host.as_ref().and_then(|h| h.to_str().ok()) {
                fwd.push_str(";host=\"");
                fwd.push_str(h);
                fwd.push('"');
            }
            if ctx.peer_trusted {
                req.append_header("forwarded", fwd)?;
            } else {
                req.insert_header("forwarded", fwd)?;
            }
        }
        let request_id = http::HeaderValue::from_str(&ctx.request_id).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
        match snap.config.request_id_header.as_str() {
            // The usual name costs no allocation for the header name.
            DEFAULT_REQUEST_ID_HEADER => req.insert_header(DEFAULT_REQUEST_ID_HEADER, request_id)?,
            other => req.insert_header(other.to_string(), request_id)?,
        }
        if let Some(route) = ctx.route.as_ref() {
            // Origin-form, rebuilt from the segments the route was decided on.
            req.set_raw_path(route.upstream_target.as_bytes())?;
            if route.scope == Scope::Dcr && !snap.config.dcr.forward_cookie {
                req.remove_header(&http::header::COOKIE);
            }
        }
        if ctx.strip_authorization {
            req.remove_header(&http::header::AUTHORIZATION);
        }
        if let Some(body) = &ctx.replacement_body {
            // The body is the gateway's own bytes: nothing that described the client's stays.
            for name in crate::core::headers::BODY_DESCRIBING_HEADERS {
                req.remove_header(*name);
            }
            req.insert_header(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()))?;
            req.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        }
        if ctx.is_registration_post {
            self.metrics.registrations.with_label_values(&["forwarded", ""]).inc();
        }
        ctx.upstream_start = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        ctx.upstream_latency = ctx.upstream_start.map(|s| s.elapsed());
        self.metrics.count_upstream_response(status);
        if let Some(lease) = ctx.token_lease.take() {
            if (200..300).contains(&status) {
                // The IdP accepted the registration: the use is spent. Any other answer drops
                // the lease and gives the use back (as do 502/504 and aborted requests).
                lease.commit();
            }
        }
        if ctx.is_registration_post && resp.headers.get(http::header::CONTENT_ENCODING).is_none() {
            ctx.capture = Some(Vec::new());
        }
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        if self.drain.is_draining() {
            // Shutting down: send clients elsewhere for their next request.
            session.set_keepalive(None);
        }
        if !resp.status.is_informational() {
            ctx.status = resp.status.as_u16();
            resp.insert_header(DEFAULT_REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(buf) = ctx.capture.as_mut() {
            if let Some(b) = body {
                if buf.len() + b.len() <= CLIENT_ID_CAPTURE_LIMIT {
                    buf.extend_from_slice(b);
                } else {
                    ctx.capture = None;
                }
            }
            if end_of_stream {
                if let Some(buf) = ctx.capture.take() {
                    // Only client_id is read; the secrets in the same document are dropped here.
                    ctx.client_id = serde_json::from_slice::<IssuedClient>(&buf)
                        .ok()
                        .and_then(|v| v.client_id.map(|s| truncate_chars(&s, 256)));
                }
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let err = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                self.metrics.upstream_errors.with_label_values(&["timeout"]).inc();
                Some(GatewayError::UpstreamTimeout)
            }
            ErrorType::ConnectNoRoute => Some(GatewayError::NoHealthyUpstream),
            _ if e.esource() == &ErrorSource::Upstream => {
                let kind = match e.etype() {
                    ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::TLSHandshakeFailure => "connect_failure",
                    _ => "other",
                };
                self.metrics.upstream_errors.with_label_values(&[kind]).inc();
                Some(GatewayError::UpstreamUnavailable)
            }
            _ => None,
        };
        let code = match err {
            Some(err) => {
                ctx.outcome = Outcome::UpstreamError;
                let status = err.status();
                // Headers may already be on the wire (upstream died mid-response).
                if self.respond(session, ctx, err).await.is_err() {
                    tracing::debug!(request_id = %ctx.request_id, "could not write error response");
                }
                status
            }
            None => match e.esource() {
                ErrorSource::Downstream => 0,
                _ => {
                    // Our own answer, JSON like every other; the cause goes to the log only.
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "request failed inside the gateway");
                    if self.respond(session, ctx, GatewayError::Internal).await.is_err() {
                        tracing::debug!(request_id = %ctx.request_id, "could not write error response");
                    }
                    500
                }
            },
        };
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let scope = ctx.scope();
        let elapsed = ctx.start.elapsed();
        let Some(snap) = ctx.snapshot.clone() else { return };
        self.metrics.count_request(scope, ctx.outcome);
        self.metrics.observe_durations(scope, elapsed.as_secs_f64(), ctx.check_time.as_secs_f64());
        if ctx.status == 0 {
            ctx.status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        }
        if ctx.is_registration_post {
            let (result, code) = match (&ctx.outcome, &ctx.error) {
                (Outcome::Blocked, _) | (Outcome::Redirected, _) => ("blocked", ""),
                (Outcome::Disabled, _) => ("disabled", ""),
                (Outcome::RateLimited, _) => ("rate_limited", ""),
                (Outcome::Unauthorized, _) => ("unauthorized", ""),
                (Outcome::Invalid, Some(GatewayError::InvalidRegistration(RegistrationError { code, .. }))) => {
                    ("invalid", code.as_str())
                }
                (Outcome::Invalid, Some(e)) => ("invalid", e.code()),
                (Outcome::UpstreamError, _) => ("upstream_error", ""),
                _ => match ctx.upstream_status {
                    Some(201) => ("created", ""),
                    Some(s) if (200..300).contains(&s) => ("accepted", ""),
                    Some(_) => ("rejected_by_idp", ""),
                    None => ("aborted", ""),
                },
            };
            self.metrics.registrations.with_label_values(&[result, code]).inc();
        }
        let audited = scope == Scope::Dcr || ctx.outcome == Outcome::Blocked;
        if !audited || !self.audit.is_enabled() || !snap.config.audit_enabled {
            return;
        }
        let s = ctx.signals.clone();
        let verdict = ctx.verdict.clone();
        let reg = ctx.registration.take().unwrap_or_default();
        let (error, error_description) = match &ctx.error {
            Some(e) => (Some(e.code()), Some(e.description())),
            None => (None, None),
        };
        let decision = ctx.outcome.decision();
        let line = AuditLine {
            timestamp: now_rfc3339(),
            request_id: ctx.request_id.clone(),
            scope: scope.as_str(),
            method: session.req_header().method.to_string(),
            client_ip: s.as_ref().map(|s| s.client_ip.to_string()).unwrap_or_default(),
            connecting_ip: s.as_ref().map(|s| s.connecting_ip.to_string()).unwrap_or_default(),
            country: s.as_ref().and_then(|s| s.country.clone()),
            subdivisions: s.as_ref().map(|s| s.subdivisions.clone()).unwrap_or_default(),
            asn: s.as_ref().and_then(|s| s.asn),
            user_agent: s
                .as_ref()
                .and_then(|s| s.user_agent.as_deref())
                .map(|ua| truncate_chars(ua, snap.config.audit_user_agent_max_chars)),
            hostname: s.as_ref().and_then(|s| s.hostname.clone()),
            rule: verdict.as_ref().and_then(|v| v.rule.as_ref().map(|r| r.to_string())),
            logged_rules: verdict.map(|v| v.logged.iter().map(|r| r.to_string()).collect()).unwrap_or_default(),
            decision,
            error,
            error_description,
            client_name: reg.client_name,
            redirect_uri_hosts: reg.redirect_hosts,
            dropped_members: reg.dropped_members,
            removed_scopes: reg.removed_scopes,
            upstream_status: ctx.upstream_status,
            upstream_latency_ms: ctx.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
            client_id: ctx.client_id.clone(),
            token_label: ctx.token.as_ref().map(|t| t.label.clone()),
            token_hash_prefix: ctx.token.as_ref().map(|t| t.hash_prefix().to_string()),
            software_statement_issuer: reg.software_statement_issuer,
            status: ctx.status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        };
        if self.audit.write(&line).is_err() {
            self.metrics.audit_write_errors.inc();
        }
    }
}
