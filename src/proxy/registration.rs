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
        if admission.counted {
            if let Some(err) = self.rate_limit(ctx, snap, admission.rate_class).await {
                return self.refuse(session, ctx, Outcome::RateLimited, err).await;
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
        let body = match self.read_body(session, limit, timeout).await {
            Ok(b) => b,
            Err(e) => return self.refuse(session, ctx, Outcome::Invalid, e).await,
        };
        let t = Instant::now();
        let admitted = gate::admit_body(
            &body,
            admission.payload,
            &admission.policy,
            &snap.statements,
            route.client_id.as_deref(),
            &snap.config.idp.derive,
        );
        ctx.timing.check += t.elapsed();
        let admitted = match admitted {
            Ok(a) => a,
            Err(r) => return self.refuse_with(session, ctx, r).await,
        };
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
        ctx.registration.body = Some(Bytes::from(admitted.body.clone()));
        ctx.registration.admitted = Some(admitted);
        Ok(false)
    }

    /// Read the whole body, bounded in size and time. The bytes also land in Pingora's retry
    /// buffer, which is what it replays upstream; `request_body_filter` swaps them for ours.
    async fn read_body(
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
        let ip = ctx.admission.signals.as_ref()?.client_ip;
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
}
