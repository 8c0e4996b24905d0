//! The Pingora `ProxyHttp` adapter: the only module that knows Pingora's request types.
//! Each hook, in phase order, reads what Pingora gives it, asks the pure core for the
//! decision (`core::target`, `routes`, `acl`, `core::gate`, `core::record`) and applies it.
//!
//! - [`listener`]: connections and request heads before Pingora parses them.
//! - `signals`: the request view and the ACL signals off a session.
//! - `registration`: the `dcr` phase (gate steps, rate limit, bounded body read).
//! - `forward`: the request the IdP receives.
//! - `respond`: the answers the gateway writes itself.

mod bind_check;
mod cimd;
mod drain;
mod forward;
pub mod h2;
#[cfg(test)]
mod hook_tests;
pub mod listener;
mod registration;
mod respond;
pub mod server;
mod signals;
pub mod tls;
pub mod upstream;
mod verified;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::acl::{Decision, Verdict};
use crate::config::schema::SniHostMismatch;
use crate::core::discovery::{self, Rewriter};
use crate::core::gate::Admitted;
use crate::core::record::{self, truncate_chars, AuditLine};
use crate::core::target::{RequestView, TargetError};
use crate::errors::GatewayError;
use crate::routes::Route;
use crate::scope::Scope;
use crate::signals::Signals;
use crate::snapshot::{Snapshot, Store};
use crate::telemetry::audit::now_rfc3339;
use crate::telemetry::phases::{self, Phase};
use crate::telemetry::{AuditLog, Metrics, Outcome};
use upstream::PeerTemplate;

/// Upper bound on the upstream answer buffered to learn the issued `client_id` or to rewrite
/// it: a 64 KiB registration can come back several times larger (an IdP that escapes `&` as
/// `\u0026`), and a lost client_id loses the client's partner pin.
const CLIENT_ID_CAPTURE_LIMIT: usize = 1024 * 1024;

const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";

/// The "IdP registered the client differently" warning: at most one log line a second.
static DIFFERENCE_WARNINGS: crate::telemetry::logging::OncePerSecond = crate::telemetry::logging::OncePerSecond::new();

/// The members of the IdP's `dcr` answers the gateway reads. Deserializing into this skips
/// everything else (secrets included) without building a `Value` tree.
#[derive(serde::Deserialize)]
struct IdpAnswer<'a> {
    #[serde(borrow)]
    client_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<std::borrow::Cow<'a, str>>,
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
    pub rate_limiter: Arc<crate::state::ratelimiter::RateLimiter>,
    /// Initial access token uses (`max_uses`), per process, across reloads.
    pub token_uses: Arc<crate::tokens::UseCounter>,
    /// The overrides of the token that registered each client, for its RFC 7592 updates.
    pub pins: Arc<crate::tokens::ClientPins>,
    /// Held by a registration on its way to an IdP whose profile serializes registrations.
    pub registration_turn: Arc<tokio::sync::Mutex<()>>,
    /// The client registry (`[registry] enabled`): caps, de-duplication, usage, records.
    pub registry: Option<Arc<crate::registry::Registry>>,
    /// Client ID Metadata Documents (`[cimd] mode` other than `off` at start): fetcher + cache.
    pub cimd: Option<Arc<crate::fetch::cimd::Documents>>,
    /// `[dcr] resolve_metadata_uris`: the hosts of the URIs the IdP will fetch, resolved.
    pub metadata: Arc<crate::fetch::metadata::MetadataResolver>,
    /// The IdP endpoints `[cimd]` judges (authorization, PAR) and, bridging, maps (token,
    /// revocation, introspection): configured, else from the IdP's discovery document at start.
    pub cimd_paths: Arc<crate::cimd::bridge::Paths>,
    /// `[cimd] mode = "bridge"`: the IdP client of each document (`registry::bridge`).
    pub bridge: Option<Arc<crate::registry::bridge::Bridge>>,
}

/// Per-request state, grouped by the phase that fills it.
pub struct RequestCtx {
    _inflight: drain::InFlight,
    timing: Timing,
    admission: AdmissionState,
    registration: RegistrationState,
    upstream: UpstreamState,
}

struct Timing {
    start: Instant,
    /// Time in the gateway's own checks (signals, ACL, payload).
    check: Duration,
    upstream_start: Option<Instant>,
    upstream_latency: Option<Duration>,
}

/// request_filter: one snapshot, the request view, its route, signals and verdict.
struct AdmissionState {
    snapshot: Option<Arc<Snapshot>>,
    request_id: String,
    route: Option<Route>,
    signals: Option<Signals>,
    peer_trusted: bool,
    verdict: Option<Verdict>,
    /// The request's host as decided by `core::target` (`Host` value sent upstream).
    upstream_host: Option<http::HeaderValue>,
    outcome: Outcome,
    error: Option<GatewayError>,
    /// The status the client got.
    status: u16,
}

/// The `dcr` phase: what the gate admitted.
#[derive(Default)]
struct RegistrationState {
    is_registration_post: bool,
    /// The normalized payload (forwarded instead of the client's bytes) and its audit facts.
    admitted: Option<Admitted>,
    body: Option<Bytes>,
    /// The initial access token that admitted this registration.
    token: Option<crate::tokens::TokenEntry>,
    /// Its `max_uses` use, committed when the IdP answers 2xx, else given back on drop.
    token_lease: Option<crate::tokens::UseLease>,
    strip_authorization: bool,
    /// This registration's turn at an IdP that takes one at a time; released with the request.
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Bounded copy of a token/PAR/revocation form body, for the registry's usage tracking.
    usage_form: Option<Vec<u8>>,
    /// What the registry judged at admission (fingerprint, prefix, software): the record of
    /// the IdP's answer takes it from here rather than reading the document again.
    identity: Option<crate::registry::Identity>,
    /// Its `max_uses` use counted in the registry's store (PostgreSQL), committed on a 2xx.
    store_token_use: Option<crate::registry::StoreTokenUse>,
    /// The `Content-Type` of `body` when it is a form the gateway read (and maybe rewrote:
    /// `[cimd]`), not a registration: forwarded as the client sent it.
    body_type: Option<http::HeaderValue>,
}

/// What the IdP answered, and what the gateway does to the answer.
#[derive(Default)]
struct UpstreamState {
    status: Option<u16>,
    /// The answer's body, buffered (bounded) to read `client_id`/`error` or to rewrite it.
    capture: Option<Vec<u8>>,
    /// Rewrite the buffered body (and hold it back until then): discovery document or
    /// registration answer (`core::discovery`).
    rewrite: Option<(Rewrite, Rewriter)>,
    /// Set in request_filter for requests whose answer may need rewriting.
    rewriter: Option<Rewriter>,
    discovery: bool,
    client_id: Option<String>,
    idp_error: Option<String>,
    /// Registration members the IdP answered differently (`core::verify`).
    changed_members: Vec<String>,
    /// The answer's tree was repaired into the RFC 7591 shape (`core::verify::repair_answer`):
    /// the body sent is the tree's.
    repaired: bool,
    /// A RFC 7592 delete answered 204 for the IdP's 200: its body is not sent.
    drop_body: bool,
}

impl RegistrationState {
    /// A registration POST the gateway admitted (its body is the gateway's).
    fn brokered(&self) -> bool {
        self.is_registration_post && self.body.is_some()
    }
}

impl UpstreamState {
    fn rewrite_expected(&self) -> bool {
        self.rewriter.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    Discovery,
    Registration,
}

impl RequestCtx {
    fn scope(&self) -> Scope {
        self.admission.route.as_ref().map(|r| r.scope).unwrap_or(Scope::Authentication)
    }

    /// Record how the request ends when the gateway answers it itself.
    fn refuse(&mut self, outcome: Outcome) {
        self.admission.outcome = outcome;
    }
}

impl Gateway {
    /// How answers are rewritten for this request: the public base is `[routes]
    /// public_base_url`, else the scheme the client used (a trusted proxy's
    /// `X-Forwarded-Proto`, else the listener's) and the request's decided host.
    fn rewriter(&self, session: &Session, ctx: &RequestCtx, snap: &Snapshot) -> Option<Rewriter> {
        let cfg = &snap.config;
        let public_base = match &cfg.public_base_url {
            Some(b) => b.clone(),
            None => {
                let host = ctx.admission.upstream_host.as_ref()?.to_str().ok()?;
                let forwarded = ctx
                    .admission
                    .peer_trusted
                    .then(|| session.req_header().headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()))
                    .flatten()
                    .map(|p| p.trim().to_ascii_lowercase());
                let scheme = match forwarded.as_deref() {
                    Some("https") => "https",
                    Some("http") => "http",
                    _ if signals::is_tls(session, &self.tls_listeners) => "https",
                    _ => "http",
                };
                format!("{scheme}://{host}")
            }
        };
        Some(Rewriter {
            public_base,
            registration_path: cfg.routes.registration_path.clone(),
            upstream_registration_path: cfg.routes.upstream_registration_path.clone(),
            idp_origins: cfg.idp_origins.clone(),
            cimd_supported: cfg.cimd.mode == crate::cimd::Mode::Bridge,
        })
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

    /// The audit line of a finished request (`core::record` decides whether there is one).
    fn audit_line(&self, session: &Session, ctx: &mut RequestCtx, snap: &Snapshot, elapsed: Duration) -> AuditLine {
        let a = &ctx.admission;
        let route = a.route.as_ref();
        AuditLine::from_facts(record::Facts {
            timestamp: now_rfc3339(),
            request_id: &a.request_id,
            scope: ctx.scope(),
            method: session.req_header().method.as_str(),
            upstream_target: route.map(|r| r.upstream_target.as_str()),
            path_client_id: route.and_then(|r| r.client_id.as_deref()),
            signals: a.signals.as_ref(),
            verdict: a.verdict.as_ref(),
            outcome: a.outcome,
            error: a.error.as_ref(),
            admitted: ctx.registration.admitted.take(),
            upstream_status: ctx.upstream.status,
            idp_error: ctx.upstream.idp_error.clone(),
            idp_changed_members: std::mem::take(&mut ctx.upstream.changed_members),
            upstream_latency: ctx.timing.upstream_latency,
            idp_client_id: ctx.upstream.client_id.clone(),
            token: ctx.registration.token.as_ref(),
            status: a.status,
            elapsed,
            user_agent_max_chars: snap.config.audit_user_agent_max_chars,
        })
    }
}

/// The IdP's answer, read once whoever carried it (Pingora's response hooks, or the gateway's
/// own exchange in `verified`): status bookkeeping, what is read in the body, and what follows.
impl Gateway {
    /// The IdP answered `status` (not informational).
    fn upstream_answered(&self, ctx: &mut RequestCtx, status: u16) {
        ctx.upstream.status = Some(status);
        ctx.timing.upstream_latency = ctx.timing.upstream_start.map(|s| s.elapsed());
        self.metrics.count_upstream_response(status);
    }

    /// An initial access token's use is spent when the IdP accepted the registration. Any
    /// other answer drops the lease and gives the use back (as do 502/504, aborted requests and
    /// registrations the gateway undid).
    fn spend_token_use(ctx: &mut RequestCtx, status: u16) {
        let accepted = (200..300).contains(&status);
        // Taken either way: one the IdP refused is given back here, before the client reads
        // the answer — not when the request's context drops, after it: a client retrying at
        // once would otherwise find its last use still leased (401 exhausted).
        let (store, lease) = (ctx.registration.store_token_use.take(), ctx.registration.token_lease.take());
        if let (Some(u), true) = (store, accepted) {
            u.commit();
        }
        if let (Some(l), true) = (lease, accepted) {
            l.commit();
        }
    }

    /// The request's head, parsed once into the view every later decision reads
    /// (`core::target`), its signals and request id, and its route; `None` when it was refused
    /// (malformed target or header, SNI/Host mismatch, a host that is not a header value).
    async fn view_phase(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        pt: phases::Span,
    ) -> Result<Option<(RequestView, Route)>> {
        let view = signals::request_view(session);
        let host = view.as_ref().ok().and_then(|v| v.authority.as_ref()).map(|a| a.host.clone());
        let extracted = signals::extract(session, snap, &self.metrics, host);
        ctx.admission.peer_trusted = extracted.peer_trusted;
        ctx.admission.request_id = crate::core::request_id::accept_or_generate(extracted.request_id.as_deref());
        ctx.admission.signals = Some(extracted.signals);
        let refusal = match view.and_then(|v| snap.config.router.classify(&v).map(|r| (v, r))) {
            Err(e) => GatewayError::BadTarget(e),
            Ok(_) if extracted.header_error.is_some() => {
                GatewayError::BadHeader(extracted.header_error.expect("checked above"))
            }
            Ok((view, route)) => {
                let sni_mismatch = extracted.sni.as_deref().zip(view.authority.as_ref()).is_some_and(|(sni, a)| {
                    snap.config.sni_host_mismatch == SniHostMismatch::Reject && !sni.eq_ignore_ascii_case(&a.host)
                });
                match view.authority.as_ref().map(|a| http::HeaderValue::from_str(&a.header_value())) {
                    _ if sni_mismatch => GatewayError::Misdirected,
                    Some(Err(_)) => GatewayError::BadTarget(TargetError::InvalidHost),
                    host => {
                        ctx.admission.upstream_host = host.and_then(|h| h.ok());
                        pt.stop();
                        return Ok(Some((view, route)));
                    }
                }
            }
        };
        // Not held across the refusal's writes (a span must not be held across an await).
        pt.stop();
        self.refuse(session, ctx, Outcome::Invalid, refusal).await?;
        Ok(None)
    }

    /// RFC 7591/7592 statuses where `[routes] normalize_registration_status`: a registration
    /// created is 201, a client deleted is 204 without a body (`true`: nothing of the answer
    /// is read or forwarded).
    fn normalize_status(
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
        status: u16,
    ) -> Result<bool> {
        let normalize = ctx.admission.snapshot.as_ref().is_some_and(|s| s.config.routes.normalize_registration_status);
        let success = (200..300).contains(&status);
        if !(normalize && success) {
            return Ok(false);
        }
        if ctx.registration.is_registration_post && status != 201 {
            // RFC 7591 §3.2.1: 201. Clients (openid-client, oauth4webapi) throw on anything
            // else — after the IdP created the client.
            tracing::debug!(request_id = %ctx.admission.request_id, upstream = status, "registration answer normalized to 201");
            resp.set_status(201)?;
        }
        if status != 204
            && session.req_header().method == http::Method::DELETE
            && ctx.admission.route.as_ref().is_some_and(|r| r.scope == Scope::Dcr && r.client_id.is_some())
        {
            // RFC 7592 §2.3: a deleted client is answered 204 No Content.
            resp.set_status(204)?;
            for h in [http::header::CONTENT_LENGTH, http::header::CONTENT_TYPE, http::header::TRANSFER_ENCODING] {
                resp.remove_header(&h);
            }
            ctx.upstream.drop_body = true;
            ctx.upstream.capture = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// A redirect to the IdP's own address (a login page, a consent step) would take the
    /// client off the gateway: any scope, when rewriting is on.
    fn rewrite_location(&self, session: &Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        if !resp.headers.contains_key(http::header::LOCATION) {
            return Ok(());
        }
        if ctx.upstream.rewriter.is_none() {
            if let Some(snap) = ctx.admission.snapshot.clone().filter(|s| s.config.routes.rewrite_discovery) {
                ctx.upstream.rewriter = self.rewriter(session, ctx, &snap);
            }
        }
        if let Some(rw) = &ctx.upstream.rewriter {
            let location = resp
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| rw.rewrite_location(l));
            if let Some(l) = location {
                resp.insert_header(http::header::LOCATION, l)?;
            }
        }
        Ok(())
    }

    /// What of the answer is read: a discovery document or registration answer that is
    /// rewritten (its head made fit for a changed body), a registration's (to learn the
    /// client_id) and a refused dcr request's (to learn the IdP's error code); nothing else.
    fn plan_answer_read(session: &Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx, status: u16) -> Result<()> {
        let success = (200..300).contains(&status);
        let encoded = resp.headers.get(http::header::CONTENT_ENCODING).is_some();
        let plain_json = !encoded
            && resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
        let kind = if ctx.upstream.discovery && status == 200 {
            Some(Rewrite::Discovery)
        } else if ctx.scope() == Scope::Dcr && success {
            Some(Rewrite::Registration)
        } else {
            None
        };
        let normalize = ctx.admission.snapshot.as_ref().is_some_and(|s| s.config.routes.normalize_registration_status);
        if let (Some(Rewrite::Registration), false, false, true) = (kind, plain_json, encoded, normalize) {
            // RFC 7591 §3.2.1 / RFC 7592 §3: client information is `application/json`, whatever
            // the IdP labelled it (or did not).
            resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        }
        let readable = plain_json || (!encoded && normalize && kind == Some(Rewrite::Registration));
        if let (Some(kind), Some(rw), true) = (kind, ctx.upstream.rewriter.clone(), readable) {
            // The body changes: its length is the new body's, sent chunked.
            resp.remove_header(&http::header::CONTENT_LENGTH);
            if !session.is_http2() && resp.version != http::Version::HTTP_10 {
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
            if ctx.admission.snapshot.as_ref().is_some_and(|s| s.config.public_base_url.is_none()) {
                // The rewritten URLs hold the request's Host: a shared cache must key on it.
                resp.append_header(http::header::VARY, "Host")?;
            }
            ctx.upstream.rewrite = Some((kind, rw));
            ctx.upstream.capture = Some(Vec::new());
        }
        let wanted = ctx.registration.is_registration_post || (ctx.scope() == Scope::Dcr && status >= 400);
        if wanted && ctx.upstream.capture.is_none() && !encoded {
            ctx.upstream.capture = Some(Vec::new());
        }
        Ok(())
    }

    /// The ACL's verdict on the request (its signals, and the extension signals a rule looks
    /// at), recorded in the context with the route; the decision is returned.
    fn acl_phase(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        view: &RequestView,
        route: Route,
        started: Instant,
    ) -> Decision {
        let pt = phases::span(Phase::Acl);
        // RFC 9421 signatures are verified only when a rule looks at them.
        let signature_key = snap.acl.uses_signatures().then(|| {
            let authority = view.authority.as_ref().map(|a| a.header_value()).unwrap_or_default();
            signals::signature_key(session, snap, &authority, signals::is_tls(session, &self.tls_listeners))
        });
        // The URL client_id's host (an extension signal) only when a rule looks at it: an empty
        // Vec does not allocate.
        let client_id_hosts = if snap.acl.uses_client_id_hosts() { view.client_id_hosts() } else { Vec::new() };
        let verdict = snap.acl.evaluate_with(
            route.scope,
            ctx.admission.signals.as_ref().expect("signals set by view_phase"),
            &crate::acl::Request {
                signature_key: signature_key.flatten().as_deref(),
                client_id_hosts: &client_id_hosts,
            },
        );
        ctx.timing.check += started.elapsed();
        self.record_acl(&verdict);
        pt.stop();
        let pt = phases::span(Phase::RequestFilter);
        ctx.registration.is_registration_post =
            route.is_registration && session.req_header().method == http::Method::POST;
        ctx.admission.route = Some(route);
        let decision = verdict.decision.clone();
        ctx.admission.verdict = Some(verdict);
        pt.stop();
        decision
    }

    /// An allowed request whose answer may be rewritten (discovery documents, registration
    /// answers) gets its rewriter: a refusal (a flood's every request) does not pay for it.
    fn prepare_rewrite(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        view: &RequestView,
        scope: Scope,
    ) {
        // The same call of request_filter as acl_phase's span: time only.
        let pt = phases::span_more(Phase::RequestFilter);
        if snap.config.routes.rewrite_discovery {
            let lower: Vec<String> = view.segments.iter().map(|s| s.to_ascii_lowercase()).collect();
            ctx.upstream.discovery =
                session.req_header().method == http::Method::GET && discovery::is_discovery_path(&lower);
            if ctx.upstream.discovery || scope == Scope::Dcr {
                ctx.upstream.rewriter = self.rewriter(session, ctx, snap);
            }
        }
        pt.stop();
    }

    /// Read the answer's body: the issued client_id and the IdP's error code, and for a
    /// registration the members the IdP changed (`core::verify`, counted). The answer is parsed
    /// once: into a tree when it is rewritten or verified (returned), else only its client_id and
    /// error (no tree; the secrets beside them are dropped here).
    fn read_answer(&self, ctx: &mut RequestCtx, buf: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
        let success = ctx.upstream.status.is_some_and(|s| (200..300).contains(&s));
        let verify = success && ctx.registration.is_registration_post && ctx.registration.body.is_some();
        let mut tree = if ctx.upstream.rewrite.is_some() || verify {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(buf).ok()
        } else {
            None
        };
        // RFC 7591 §3.2.1 shapes, when answers are normalized (`core::verify::repair_answer`),
        // before anything reads the tree: the client_id, the pin and the registry's record see
        // what the client will see.
        let normalize = ctx.admission.snapshot.as_ref().is_some_and(|s| s.config.routes.normalize_registration_status);
        if let (Some(doc), true, Some((Rewrite::Registration, _))) = (tree.as_mut(), normalize, &ctx.upstream.rewrite) {
            let repaired = crate::core::verify::repair_answer(doc);
            if !repaired.is_empty() {
                tracing::debug!(request_id = %ctx.admission.request_id, members = ?repaired, "the IdP's client information answer repaired into the RFC 7591 shape");
                ctx.upstream.repaired = true;
            }
        }
        match &tree {
            Some(doc) => {
                let text = |k: &str| doc.get(k).and_then(serde_json::Value::as_str);
                ctx.upstream.client_id = text("client_id").map(|s| truncate_chars(s, 256));
                ctx.upstream.idp_error = text("error").and_then(record::idp_error_code);
            }
            None => {
                if let Ok(v) = serde_json::from_slice::<IdpAnswer>(buf) {
                    ctx.upstream.client_id = v.client_id.map(|s| truncate_chars(&s, 256));
                    ctx.upstream.idp_error = v.error.and_then(|e| record::idp_error_code(&e));
                }
            }
        }
        if let (true, Some(sent), Some(snap), Some(answer)) =
            (verify, ctx.registration.body.as_ref(), ctx.admission.snapshot.as_ref(), tree.as_ref())
        {
            // What the IdP made of the registration, compared with what it was sent.
            let changed =
                crate::core::verify::differences_in(sent, answer, &snap.config.idp.known_drops).unwrap_or_default();
            for member in &changed {
                self.metrics.registration_differences.with_label_values(&[member]).inc();
            }
            if !changed.is_empty() && DIFFERENCE_WARNINGS.admit() {
                // Every difference is in the metric and the audit line; the log says so at
                // most once a second, not once per registration of a flood.
                tracing::warn!(request_id = %ctx.admission.request_id, members = ?changed, "the IdP registered the client differently from what the gateway sent (further differences this second: metric dcr_gateway_registration_differences_total and audit lines only)");
            }
            ctx.upstream.changed_members = changed;
        }
        tree
    }

    /// What follows an answer the client will get: the partner pin and the registry's record
    /// of an accepted registration, and the rewrite. `Some(body)` when the body was held back
    /// to be rewritten (the rewritten body, else the original).
    fn settle_answer(
        &self,
        ctx: &mut RequestCtx,
        tree: Option<serde_json::Map<String, serde_json::Value>>,
        buf: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let success = ctx.upstream.status.is_some_and(|s| (200..300).contains(&s));
        if let (Some(id), Some(token), true) = (&ctx.upstream.client_id, &ctx.registration.token, success) {
            self.pins.pin(id, &token.overrides);
        }
        let verify = success && ctx.registration.is_registration_post && ctx.registration.body.is_some();
        if let (true, Some(answer)) = (verify, tree.as_ref()) {
            self.registry_record(ctx, answer);
        }
        let (kind, rw) = ctx.upstream.rewrite.take()?;
        let repaired = ctx.upstream.repaired;
        let rewritten = tree.and_then(|mut doc| match kind {
            Rewrite::Discovery => rw.rewrite_discovery_doc(doc),
            Rewrite::Registration => {
                let moved = rw.rewrite_registration_in(&mut doc);
                (moved || repaired).then(|| serde_json::to_vec(&doc).ok()).flatten()
            }
        });
        if rewritten.is_some() {
            let label = match kind {
                Rewrite::Discovery => "discovery",
                Rewrite::Registration => "registration",
            };
            self.metrics.answers_rewritten.with_label_values(&[label]).inc();
        }
        Some(rewritten.unwrap_or(buf))
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _inflight: self.drain.enter(),
            timing: Timing {
                start: Instant::now(),
                check: Duration::ZERO,
                upstream_start: None,
                upstream_latency: None,
            },
            admission: AdmissionState {
                snapshot: None,
                request_id: String::new(),
                route: None,
                signals: None,
                peer_trusted: false,
                verdict: None,
                upstream_host: None,
                outcome: Outcome::Allowed,
                error: None,
                status: 0,
            },
            registration: RegistrationState::default(),
            upstream: UpstreamState::default(),
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<()> {
        // Answer pipelined requests one after another instead of dropping the ones that
        // arrived with the first (Pingora's default closes the connection on them).
        session.set_pipelining_enabled(true);
        Ok(())
    }

    /// One snapshot, one view of the request, its route, signals and ACL verdict; then the
    /// `dcr` phase.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        phases::register(&self.metrics);
        let pt = phases::span(Phase::RequestView);
        let snap = self.store.load_full();
        ctx.admission.snapshot = Some(snap.clone());
        let t = Instant::now();
        let Some((view, route)) = self.view_phase(session, ctx, &snap, pt).await? else { return Ok(true) };
        let scope = route.scope;
        match self.acl_phase(session, ctx, &snap, &view, route, t) {
            Decision::Block => {
                let refusal = self.refuse(session, ctx, Outcome::Blocked, GatewayError::AccessDenied);
                return phases::timed(Phase::Refusal, refusal).await;
            }
            Decision::Redirect(uri) => {
                ctx.refuse(Outcome::Redirected);
                return self.redirect(session, ctx, &uri).await;
            }
            Decision::Allow => {}
        }
        self.prepare_rewrite(session, ctx, &snap, &view, scope);
        if self.cimd.is_some() && self.cimd_phase(session, ctx, &snap).await? {
            return Ok(true);
        }
        self.registry_observe(session, ctx);
        if scope == Scope::Dcr {
            return phases::timed(Phase::DcrAdmission, self.dcr_phase(session, ctx, &snap)).await;
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
        self.registry_observe_body(body, _end_of_stream, ctx);
        // Only the bytes the gateway wrote reach the IdP. The body was read whole before we
        // connected upstream, so this runs once per upstream attempt, with the full buffer.
        if let Some(replacement) = &ctx.registration.body {
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
        let _pt = phases::span(Phase::UpstreamRequest);
        let Some(snap) = ctx.admission.snapshot.clone() else { return Ok(()) };
        let is_tls = signals::is_tls(session, &self.tls_listeners);
        forward::rewrite(req, ctx, &snap, is_tls)?;
        ctx.timing.upstream_start = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let _pt = phases::span(Phase::ResponseHooks);
        if resp.status.is_informational() {
            return Ok(());
        }
        let status = resp.status.as_u16();
        self.upstream_answered(ctx, status);
        Self::spend_token_use(ctx, status);
        if Self::normalize_status(session, resp, ctx, status)? {
            return Ok(());
        }
        self.rewrite_location(session, resp, ctx)?;
        Self::plan_answer_read(session, resp, ctx, status)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let _pt = phases::span(Phase::ResponseHooks);
        if self.drain.is_draining() {
            // Shutting down: send clients elsewhere for their next request.
            session.set_keepalive(None);
        }
        if !resp.status.is_informational() {
            ctx.admission.status = resp.status.as_u16();
            resp.insert_header(DEFAULT_REQUEST_ID_HEADER, ctx.admission.request_id.as_str())?;
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
        let _pt = phases::span(Phase::ResponseHooks);
        if ctx.upstream.drop_body {
            *body = None;
            return Ok(None);
        }
        let Some(buf) = ctx.upstream.capture.as_mut() else { return Ok(None) };
        let holding = ctx.upstream.rewrite.is_some();
        if let Some(b) = body.take() {
            if buf.len() + b.len() <= CLIENT_ID_CAPTURE_LIMIT {
                buf.extend_from_slice(&b);
                if !holding {
                    *body = Some(b);
                }
            } else {
                // Too large to read: pass through what was held back, unchanged, and stop.
                let mut out = if holding { std::mem::take(buf) } else { Vec::new() };
                out.extend_from_slice(&b);
                *body = Some(Bytes::from(out));
                ctx.upstream.capture = None;
                ctx.upstream.rewrite = None;
                return Ok(None);
            }
        }
        if end_of_stream {
            if let Some(buf) = ctx.upstream.capture.take() {
                let tree = self.read_answer(ctx, &buf);
                if let Some(rewritten) = self.settle_answer(ctx, tree, buf) {
                    *body = Some(Bytes::from(rewritten));
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
                    ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::TLSHandshakeFailure => {
                        "connect_failure"
                    }
                    _ => "other",
                };
                self.metrics.upstream_errors.with_label_values(&[kind]).inc();
                Some(GatewayError::UpstreamUnavailable)
            }
            _ => None,
        };
        let (err, outcome) = match (err, e.esource()) {
            (Some(err), _) => (err, Outcome::UpstreamError),
            (None, ErrorSource::Downstream) => return FailToProxy { error_code: 0, can_reuse_downstream: false },
            (None, _) => {
                // Our own answer, JSON like every other; the cause goes to the log only.
                tracing::warn!(request_id = %ctx.admission.request_id, error = %e, "request failed inside the gateway");
                (GatewayError::Internal, ctx.admission.outcome)
            }
        };
        let status = err.status();
        // Headers may already be on the wire (upstream died mid-response).
        if self.refuse(session, ctx, outcome, err).await.is_err() {
            tracing::debug!(request_id = %ctx.admission.request_id, "could not write error response");
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    /// Metrics and the audit line, as `core::record` maps them.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let _pt = phases::span(Phase::Logging);
        h2::stream_ended(e, &self.metrics);
        self.registry_rfc7592(session, ctx);
        if let Some(turn) = ctx.registration.turn.take() {
            // The next registration's turn comes `serialize_spacing` after this answer (an IdP
            // that names clients by the second keeps only one of two in the same second).
            let spacing = ctx.admission.snapshot.as_ref().map(|s| s.config.idp.serialize_spacing).unwrap_or_default();
            if !spacing.is_zero() {
                tokio::spawn(async move {
                    tokio::time::sleep(spacing).await;
                    drop(turn);
                });
            }
        }
        let scope = ctx.scope();
        let elapsed = ctx.timing.start.elapsed();
        let Some(snap) = ctx.admission.snapshot.clone() else { return };
        let outcome = ctx.admission.outcome;
        self.metrics.count_request(scope, outcome);
        self.metrics.observe_durations(scope, elapsed.as_secs_f64(), ctx.timing.check.as_secs_f64());
        if ctx.admission.status == 0 {
            ctx.admission.status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        }
        if ctx.registration.is_registration_post
            && ctx.upstream.status.is_some_and(|s| (200..300).contains(&s))
            && ctx.upstream.client_id.is_none()
            && ctx.registration.token.as_ref().is_some_and(|t| !t.overrides.is_empty())
        {
            tracing::warn!(
                request_id = %ctx.admission.request_id,
                "partner pin not recorded: the IdP's registration answer carried no readable client_id; \
                 updates of that client are checked against the base policy"
            );
        }
        if ctx.registration.is_registration_post {
            let (result, code) =
                record::registration_result(outcome, ctx.admission.error.as_ref(), ctx.upstream.status);
            self.metrics.registrations.with_label_values(&[result, code]).inc();
            if let Some(k) = ctx.registration.admitted.as_ref().and_then(|a| a.known_client) {
                self.metrics.known_client_registrations.with_label_values(&[k, result]).inc();
            }
        }
        if !record::is_audited(scope, outcome, ctx.admission.error.as_ref())
            || !self.audit.is_enabled()
            || !snap.config.audit_enabled
        {
            return;
        }
        let line = self.audit_line(session, ctx, &snap, elapsed);
        if self.audit.write(&line).is_err() {
            self.metrics.audit_write_errors.inc();
        }
    }
}
