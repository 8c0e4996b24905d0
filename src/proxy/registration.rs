//! The `dcr` phase: the gate's steps (`core::gate`) with the I/O between them — the rate
//! limit, and reading the body, bounded in size and time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{Gateway, RequestCtx};
use crate::core::gate::{self, Facts, Refusal, TokenVerdict};
use crate::dcr::RegistrationMode;
use crate::errors::GatewayError;
use crate::ratelimit::{RateClass, RateDecision};
use crate::snapshot::Snapshot;
use crate::telemetry::phases::{self, Phase};
use crate::telemetry::Outcome;

impl Gateway {
    async fn refuse_with(&self, session: &mut Session, ctx: &mut RequestCtx, r: Refusal) -> Result<bool> {
        self.refuse(session, ctx, r.outcome, r.error).await
    }

    /// The initial access token, in token mode: verified, and not already used up.
    fn token_verdict(&self, session: &Session, snap: &Snapshot) -> TokenVerdict {
        if snap.config.dcr.registration != RegistrationMode::Token {
            return None;
        }
        let auth = session.req_header().headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let verified = crate::tokens::bearer(auth)
            .and_then(|t| snap.registration_tokens.verify(t, std::time::SystemTime::now()).cloned());
        Some(verified.and_then(|e| match e.max_uses {
            // Refuse a used-up token before reading the body; the use itself is leased after
            // validation.
            Some(max) if self.token_uses.uses(&e) >= max => Err(crate::tokens::TokenError::Exhausted),
            _ => Ok(e),
        }))
    }

    /// After the ACL allowed a `dcr`-scope request. `Ok(true)`: answered here.
    pub(super) async fn dcr_phase(&self, session: &mut Session, ctx: &mut RequestCtx, snap: &Snapshot) -> Result<bool> {
        let Some(route) = ctx.admission.route.clone() else { return Ok(false) };
        let method = session.req_header().method.clone();
        let has_body = !session.is_body_empty();
        let headers = &session.req_header().headers;
        let facts = Facts {
            method: &method,
            route: &route,
            has_body,
            content_type: headers.get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()),
            content_length: headers.get(http::header::CONTENT_LENGTH).map(|v| v.as_bytes()),
        };
        let verdict = if route.is_registration { self.token_verdict(session, snap) } else { None };
        let pinned = route.client_id.as_deref().and_then(|id| self.pins.get(id));
        let admission = match gate::admit_head(&facts, &snap.config.dcr, verdict, pinned.as_ref()) {
            Ok(a) => a,
            Err(r) => return self.refuse_with(session, ctx, r).await,
        };
        // With a per-hosted-client limit a registration is counted once its body (its redirect
        // URIs) is read; everything else is counted here, before any body.
        let after_body = admission.counts_after_body(&snap.config.rate_limit);
        if admission.counted && !after_body {
            let counted = self.rate_limit(ctx, snap, admission.rate_class, None);
            if let Some(err) = phases::timed(Phase::RateLimit, counted).await {
                return phases::timed(Phase::Refusal, self.refuse(session, ctx, Outcome::RateLimited, err)).await;
            }
        }
        if let Err(r) = admission.after_count() {
            return self.refuse_with(session, ctx, r).await;
        }
        ctx.registration.strip_authorization = admission.strip_authorization;
        ctx.registration.token = admission.token.clone();
        let plan = admission.body_plan(&facts);
        let (limit, timeout) = match plan {
            Ok(None) => return Ok(false),
            Ok(Some(p)) => p,
            Err(r) => return self.refuse_with(session, ctx, r).await,
        };
        let body = match phases::timed(Phase::BodyRead, self.read_body(session, limit, timeout)).await {
            Ok(b) => b,
            Err(e) => return self.refuse(session, ctx, Outcome::Invalid, e).await,
        };
        if after_body {
            // The body is read whole: a 429 leaves nothing unread on the connection, and the
            // IdP is not called.
            let hosted = gate::hosted_rate_key(&body);
            let counted = self.rate_limit(ctx, snap, admission.rate_class, hosted);
            if let Some(err) = phases::timed(Phase::RateLimit, counted).await {
                return phases::timed(Phase::Refusal, self.refuse(session, ctx, Outcome::RateLimited, err)).await;
            }
        }
        let t = Instant::now();
        let pt = phases::span(Phase::Validation);
        let admitted = gate::admit_body(
            &body,
            admission.payload,
            &admission.policy,
            &snap.statements,
            route.client_id.as_deref(),
            &snap.config.idp.derive,
        );
        ctx.timing.check += t.elapsed();
        pt.stop();
        let admitted = match admitted {
            Ok(a) => a,
            Err(r) => return self.refuse_with(session, ctx, r).await,
        };
        if !admitted.metadata_hosts.is_empty() {
            // [dcr] resolve_metadata_uris: refused before the IdP is asked to fetch anything.
            let budget = Duration::from_millis(admission.policy.resolve_metadata_timeout_ms);
            if let Err(e) = self.metadata.screen(&admitted.metadata_hosts, budget).await {
                let err = GatewayError::InvalidRegistration(e);
                return self.refuse(session, ctx, Outcome::Invalid, err).await;
            }
        }
        if self.registry_admit(session, ctx, snap, &admitted.body).await? {
            return Ok(true);
        }
        if let (Some(entry), Some(reg)) = (&admission.token, self.registry.as_ref()) {
            // [registry] on PostgreSQL: max_uses counted in the store, for every replica.
            if let (Some(max), true) = (entry.max_uses, reg.counts_token_uses()) {
                let (reg, hash) = (reg.clone(), entry.sha256_hex.clone());
                match tokio::task::spawn_blocking(move || reg.take_token_use(&hash, max)).await {
                    Ok(Ok(Some(u))) => ctx.registration.store_token_use = Some(u),
                    Ok(Ok(None)) => {
                        let err = GatewayError::Unauthorized(crate::tokens::TokenError::Exhausted);
                        return self.refuse(session, ctx, Outcome::Unauthorized, err).await;
                    }
                    // The store is down: refuse rather than let a limited token register
                    // past its limit (counted in dcr_gateway_registry_store_errors_total).
                    Ok(Err(_)) | Err(_) => {
                        return self.refuse(session, ctx, Outcome::UpstreamError, GatewayError::Internal).await
                    }
                }
            }
        }
        if let Some(entry) = &admission.token {
            // Leased only for registrations that will reach the IdP; spent only when it
            // answers 2xx (upstream_response_filter), given back otherwise.
            match self.token_uses.lease(entry) {
                Some(lease) => ctx.registration.token_lease = Some(lease),
                None => {
                    let err = GatewayError::Unauthorized(crate::tokens::TokenError::Exhausted);
                    return self.refuse(session, ctx, Outcome::Unauthorized, err).await;
                }
            }
        }
        if snap.config.idp.serialize_registrations && ctx.registration.is_registration_post {
            // One registration at a time reaches this IdP; the turn is given back when the
            // request ends (its context drops). A turn not had within the upstream's own time
            // budget is a 503 like an IdP that does not answer.
            let budget = snap.config.upstream.connect_timeout + snap.config.upstream.read_timeout;
            match tokio::time::timeout(budget, self.registration_turn.clone().lock_owned()).await {
                Ok(turn) => ctx.registration.turn = Some(turn),
                Err(_) => {
                    return self.refuse(session, ctx, Outcome::UpstreamError, GatewayError::UpstreamTimeout).await
                }
            }
        }
        ctx.registration.body = Some(Bytes::from(admitted.body.clone()));
        ctx.registration.admitted = Some(admitted);
        if snap.config.idp.refuse_changed_registrations && ctx.registration.is_registration_post {
            // The whole answer is read before the client gets any of it (`verified`).
            return self.registration_held(session, ctx, snap).await;
        }
        Ok(false)
    }

    /// Read the whole body, bounded in size and time. The bytes also land in Pingora's retry
    /// buffer, which is what it replays upstream; `request_body_filter` swaps them for ours.
    pub(super) async fn read_body(
        &self,
        session: &mut Session,
        limit: usize,
        deadline: Duration,
    ) -> std::result::Result<Vec<u8>, GatewayError> {
        if session.req_header().headers.get(http::header::EXPECT).is_some() {
            let cont = ResponseHeader::build(100, Some(0)).map_err(|_| GatewayError::BadRequestBody)?;
            session.write_response_header(Box::new(cont), false).await.map_err(|_| GatewayError::BadRequestBody)?;
        }
        session.enable_retry_buffering();
        let t = Instant::now();
        let read = async {
            // Not drained past the limit: the connection ends with the refusal.
            let mut body = crate::core::body::BoundedBody::new(limit);
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => body.push(&chunk).map_err(|_| GatewayError::PayloadTooLarge { limit })?,
                    Ok(None) => return body.finish().map_err(|_| GatewayError::PayloadTooLarge { limit }),
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

    /// Count the request against `[rate_limit]` (for the catalogued hosted client `hosted`
    /// when it is one); `Some` when it must be refused.
    pub(super) async fn rate_limit(
        &self,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        class: RateClass,
        hosted: Option<&str>,
    ) -> Option<GatewayError> {
        let ip = ctx.admission.signals.as_ref()?.client_ip;
        let (decision, answered) = self.rate_limiter.check(&snap.config.rate_limit, ip, class, hosted).await;
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
}

/// The client registry's hooks (`crate::registry`): the decisions and the writes are there;
/// these only read the session and apply the answer.
impl Gateway {
    /// Caps and de-duplication of an admitted registration, before the IdP is called.
    /// `Ok(true)`: answered here (refused by a cap, or answered with the existing client).
    async fn registry_admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        sent: &[u8],
    ) -> Result<bool> {
        let (Some(reg), true) = (self.registry.clone(), ctx.registration.is_registration_post) else {
            return Ok(false);
        };
        let Some(ip) = ctx.admission.signals.as_ref().map(|s| s.client_ip) else { return Ok(false) };
        let limits = crate::registry::limits(&snap.config.registry);
        let Some(identity) = crate::registry::Registry::admission_identity(sent, ip, &limits) else {
            return Ok(false);
        };
        // Decided here when memory suffices (kept counts, no possible duplicate); else off the
        // async threads, where the store may be asked.
        let decided = match reg.admit_identity_in_memory(&identity, &limits) {
            Some(decided) => Ok(Ok(decided)),
            None => tokio::task::spawn_blocking(move || reg.admit_identity(identity, &limits)).await,
        };
        match decided {
            Ok(Ok(crate::registry::Admission::Forward(identity))) => {
                ctx.registration.identity = Some(identity);
                Ok(false)
            }
            Ok(Ok(crate::registry::Admission::Capped(cap))) => {
                let window = crate::config::schema::RegistrySection::seconds(&snap.config.registry.prefix_window);
                let err = GatewayError::ClientLimit {
                    cap: cap.as_str(),
                    retry_after_secs: (cap == crate::registry::Cap::Prefix).then_some(window.max(1) as u64),
                };
                self.refuse(session, ctx, Outcome::RateLimited, err).await
            }
            Ok(Ok(crate::registry::Admission::Duplicate { client_id, answer })) => {
                let body = match ctx.upstream.rewriter.as_ref() {
                    Some(rw) => rw.rewrite_registration_doc(answer.clone()),
                    None => None,
                }
                .unwrap_or_else(|| serde_json::to_vec(&answer).unwrap_or_default());
                ctx.upstream.client_id = Some(client_id);
                ctx.admission.status = 201;
                let mut resp = ResponseHeader::build(201, Some(5))?;
                resp.insert_header("content-type", "application/json")?;
                resp.insert_header("cache-control", "no-store")?;
                resp.insert_header("content-length", body.len().to_string())?;
                resp.insert_header("x-request-id", ctx.admission.request_id.as_str())?;
                resp.insert_header("x-dcr-gateway-deduplicated", "true")?;
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(Bytes::from(body)), true).await?;
                Ok(true)
            }
            Ok(Err(_)) | Err(_) => {
                // The store failed (counted and logged by the registry): registration is not
                // blocked by the registry; this one is neither capped nor de-duplicated.
                Ok(false)
            }
        }
    }

    /// Usage tracking on a request head the ACL allowed.
    pub(super) fn registry_observe(&self, session: &Session, ctx: &mut RequestCtx) {
        let (Some(reg), Some(route)) = (self.registry.as_ref(), ctx.admission.route.as_ref()) else { return };
        if route.scope == crate::scope::Scope::Dcr {
            // RFC 7592 calls count as use once the IdP accepted them (`registry_rfc7592`): a
            // request anyone can send with a known client_id must not keep a client alive.
            return;
        }
        let auth = session.req_header().headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        if reg.usage.observe_head(&route.upstream_target, auth) == crate::registry::usage::Observe::ReadForm {
            ctx.registration.usage_form = Some(Vec::new());
        }
    }

    /// At the end of an RFC 7592 request the IdP answered 2xx (its registration access token
    /// was good): the client was used; a PUT changed it and a DELETE removed it, so neither is a
    /// de-duplication answer any more (review finding: a shared client_id handed out after its
    /// first registrant changed or deleted it).
    pub(super) fn registry_rfc7592(&self, session: &Session, ctx: &RequestCtx) {
        let (Some(reg), Some(route), Some(status)) =
            (self.registry.as_ref(), ctx.admission.route.as_ref(), ctx.upstream.status)
        else {
            return;
        };
        let Some(id) = route.client_id.as_deref().filter(|_| route.scope == crate::scope::Scope::Dcr) else { return };
        if !(200..300).contains(&status) {
            return;
        }
        reg.usage.touch(id);
        match session.req_header().method {
            http::Method::DELETE => reg.changed(id, true),
            http::Method::PUT => reg.changed(id, false),
            _ => {}
        }
    }

    /// A bounded copy of a token/PAR/revocation body, for its `client_id`; `body` is untouched.
    pub(super) fn registry_observe_body(&self, body: &Option<Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
        let Some(buf) = ctx.registration.usage_form.as_mut() else { return };
        if let Some(b) = body {
            let room = crate::registry::usage::FORM_COPY_LIMIT.saturating_sub(buf.len());
            buf.extend_from_slice(&b[..b.len().min(room)]);
        }
        if end_of_stream {
            if let (Some(reg), Some(buf)) = (self.registry.as_ref(), ctx.registration.usage_form.take()) {
                reg.usage.observe_form(&buf);
            }
        }
    }

    /// Queue an accepted registration for the registry (the IdP's answer, before rewriting).
    pub(super) fn registry_record(&self, ctx: &RequestCtx, answer: &serde_json::Map<String, serde_json::Value>) {
        // Every accepted registration POST the gateway brokered (also when the registry's
        // admission check could not reach the store).
        let (Some(reg), true) = (self.registry.as_ref(), ctx.registration.brokered()) else { return };
        let (Some(sent), Some(signals), Some(snap)) =
            (ctx.registration.body.as_ref(), ctx.admission.signals.as_ref(), ctx.admission.snapshot.as_ref())
        else {
            return;
        };
        let admitted = ctx.registration.admitted.as_ref();
        let public_client_uri = answer
            .get("registration_client_uri")
            .and_then(|v| v.as_str())
            .map(|u| ctx.upstream.rewriter.as_ref().and_then(|rw| rw.rewrite_url(u)).unwrap_or_else(|| u.to_string()));
        let admitted_by = ctx
            .registration
            .token
            .as_ref()
            .map(|t| t.label.as_str())
            .or_else(|| admitted.and_then(|a| a.software_statement_issuer.as_deref()));
        let accepted = crate::registry::Accepted {
            client_ip: signals.client_ip,
            country: signals.country.as_deref(),
            asn: signals.asn,
            user_agent: signals.user_agent.as_deref(),
            sent,
            client_name: admitted.and_then(|a| a.client_name.as_deref()),
            redirect_hosts: admitted.map(|a| a.redirect_hosts.as_slice()).unwrap_or_default(),
            admitted_by,
            answer,
            public_client_uri,
            identity: ctx.registration.identity.as_ref(),
        };
        reg.record(&accepted, &crate::registry::limits(&snap.config.registry));
    }
}
