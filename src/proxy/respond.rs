//! The answers the gateway writes itself: JSON errors (`errors::GatewayError` holds the one
//! status/body map) and ACL redirects.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{Gateway, RequestCtx};
use crate::errors::GatewayError;
use crate::telemetry::Outcome;

impl Gateway {
    /// Refuse the request with `err`, counted as `outcome`; `Ok(true)`: the request is done.
    pub(super) async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        outcome: Outcome,
        err: GatewayError,
    ) -> Result<bool> {
        ctx.refuse(outcome);
        // A refused request spends no initial-access-token use: a leased one is given back
        // before the answer is written (a client retrying at once must find it free).
        drop((ctx.registration.token_lease.take(), ctx.registration.store_token_use.take()));
        let status = err.status();
        let body = err.body(&ctx.admission.request_id);
        let mut resp = ResponseHeader::build(status, Some(6))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("content-length", http::HeaderValue::from(body.len()))?;
        resp.insert_header("x-request-id", ctx.admission.request_id.as_str())?;
        for (k, v) in err.headers() {
            resp.insert_header(k, v)?;
        }
        ctx.admission.status = status;
        ctx.admission.error = Some(err);
        keep_alive_if_drainable(session, self.drain.is_draining());
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(Bytes::from(body)), true).await?;
        Ok(true)
    }

    pub(super) async fn redirect(&self, session: &mut Session, ctx: &mut RequestCtx, location: &str) -> Result<bool> {
        let mut resp = ResponseHeader::build(302, Some(4))?;
        resp.insert_header("location", location)?;
        resp.insert_header("content-length", "0")?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("x-request-id", ctx.admission.request_id.as_str())?;
        ctx.admission.status = 302;
        keep_alive_if_drainable(session, self.drain.is_draining());
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }
}

/// The largest unread request body drained after a refusal so that the connection stays open.
pub(super) const DRAIN_MAX_BYTES: u64 = 16 * 1024;
/// How long that drain may take before the connection is closed instead.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Keep the connection for the client's next request when the refused request's body is known
/// to end soon: none or all of it read, or a `Content-Length` of at most [`DRAIN_MAX_BYTES`]
/// that Pingora drains (within [`DRAIN_TIMEOUT`]) before it reads the next head. Otherwise —
/// chunked, large or unparsable length — close. Why: a flood of refused requests that each
/// cost the client a reconnect cost the gateway an accept (and a TLS handshake) per request;
/// and the framing is Pingora's own, so an unread body is never read as the next request.
/// Shutting down (`draining`), the client is sent elsewhere for its next request.
fn keep_alive_if_drainable(session: &mut Session, draining: bool) {
    if draining {
        session.set_keepalive(None);
        return;
    }
    if session.is_body_done() {
        return;
    }
    let small = !session.req_header().headers.contains_key(http::header::TRANSFER_ENCODING)
        && session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n <= DRAIN_MAX_BYTES);
    if small {
        // Pingora would otherwise close a connection whose request body is unfinished when the
        // answer is written; it drains the body (bounded by the timeout) before the next head.
        session.set_close_on_response_before_downstream_finish(false);
        session.set_total_drain_timeout(Some(DRAIN_TIMEOUT));
    } else {
        session.set_keepalive(None);
    }
}
