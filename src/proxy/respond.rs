//! The answers the gateway writes itself: JSON errors (`errors::GatewayError` holds the one
//! status/body map) and ACL redirects.

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
        let status = err.status();
        let body = err.body(&ctx.admission.request_id);
        let mut resp = ResponseHeader::build(status, Some(6))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.admission.request_id.as_str())?;
        for (k, v) in err.headers() {
            resp.insert_header(k, v)?;
        }
        ctx.admission.status = status;
        ctx.admission.error = Some(err);
        // The body of a refused request may still be in flight: do not reuse the connection.
        session.set_keepalive(None);
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
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }
}
