//! The request the IdP receives: built from the decided view and route, never from the
//! client's spelling (docs/request-handling.md states these rules).

use pingora::http::RequestHeader;
use pingora::prelude::*;

use super::{RequestCtx, DEFAULT_REQUEST_ID_HEADER};
use crate::scope::Scope;
use crate::snapshot::Snapshot;

fn header(bytes: &[u8]) -> Result<http::HeaderValue> {
    http::HeaderValue::from_bytes(bytes).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))
}

/// An RFC 7239 node: IPv6 addresses quoted and bracketed.
fn forwarded_node(ip: &str) -> String {
    if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    }
}

/// Rewrite the upstream request: target, host, forwarding headers, stripped headers, body
/// headers for the gateway's own body.
pub(super) fn rewrite(req: &mut RequestHeader, ctx: &RequestCtx, snap: &Snapshot, is_tls: bool) -> Result<()> {
    let a = &ctx.admission;
    let connecting = a.signals.as_ref().map(|s| s.connecting_ip.to_string()).unwrap_or_default();
    let xff = if a.peer_trusted && req.headers.contains_key("x-forwarded-for") {
        // Read from the bytes: a non-ASCII byte must not drop the hops before it.
        let mut joined = Vec::with_capacity(64);
        for v in req.headers.get_all("x-forwarded-for").iter() {
            joined.extend_from_slice(v.as_bytes());
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(connecting.as_bytes());
        header(&joined)?
    } else {
        // An untrusted peer's X-Forwarded-For is whatever it chose to write: drop it.
        header(connecting.as_bytes())?
    };
    req.insert_header("x-forwarded-for", xff)?;
    if !a.peer_trusted {
        // Address, port and fingerprint claims of a client that is not a trusted proxy.
        for name in &snap.config.strip_untrusted_headers {
            req.remove_header(name);
        }
    }
    // The host decided in request_filter is the host the IdP sees, unless the profile routes on
    // the origin's name ([upstream] host_header = "origin": Auth0's edge).
    match (snap.config.idp.host_header.as_deref(), a.upstream_host.clone()) {
        (Some(origin), _) => req.insert_header(http::header::HOST, header(origin.as_bytes())?)?,
        (None, Some(h)) => req.insert_header(http::header::HOST, h)?,
        (None, None) => {
            req.remove_header(&http::header::HOST);
        }
    }
    if !(a.peer_trusted && req.headers.contains_key("x-forwarded-proto")) {
        req.insert_header("x-forwarded-proto", if is_tls { "https" } else { "http" })?;
    }
    if !(a.peer_trusted && req.headers.contains_key("x-forwarded-host")) {
        // A HeaderValue clone shares the bytes; no copy of the Host value.
        match a.upstream_host.clone() {
            Some(h) => req.insert_header("x-forwarded-host", h)?,
            None => {
                req.remove_header("x-forwarded-host");
            }
        }
    }
    if snap.config.set_forwarded {
        let proto = if is_tls { "https" } else { "http" };
        let mut fwd = format!("for={};proto={proto}", forwarded_node(&connecting));
        if let Some(h) = a.upstream_host.as_ref().and_then(|h| h.to_str().ok()) {
            fwd.push_str(";host=\"");
            fwd.push_str(h);
            fwd.push('"');
        }
        if a.peer_trusted {
            req.append_header("forwarded", fwd)?;
        } else {
            req.insert_header("forwarded", fwd)?;
        }
    }
    let request_id = header(a.request_id.as_bytes())?;
    match snap.config.request_id_header.as_str() {
        // The usual name costs no allocation for the header name.
        DEFAULT_REQUEST_ID_HEADER => req.insert_header(DEFAULT_REQUEST_ID_HEADER, request_id)?,
        other => req.insert_header(other.to_string(), request_id)?,
    }
    if let Some(route) = a.route.as_ref() {
        // Origin-form, rebuilt from the segments the route was decided on.
        req.set_raw_path(route.upstream_target.as_bytes())?;
        if route.scope == Scope::Dcr && !snap.config.dcr.forward_cookie {
            req.remove_header(&http::header::COOKIE);
        }
    }
    if ctx.upstream.rewrite_expected() || a.route.as_ref().is_some_and(|r| r.scope == Scope::Dcr) {
        // An answer the gateway rewrites or reads (the issued client_id, which partner pins
        // need) must arrive uncompressed.
        req.remove_header(&http::header::ACCEPT_ENCODING);
    }
    if ctx.registration.strip_authorization {
        req.remove_header(&http::header::AUTHORIZATION);
    }
    let secrets = &snap.upstream_secrets;
    if let (true, Some(token)) = (ctx.registration.brokered(), secrets.registration_authorization.as_ref()) {
        // Brokered registration: the IdP's initial access token, on registrations the gateway
        // admitted, in place of whatever the client sent.
        req.insert_header(http::header::AUTHORIZATION, token.clone())?;
    }
    for (name, value) in &secrets.headers {
        // [upstream] headers (Auth0's cname-api-key): the client's value of the name never passes.
        req.insert_header(name.clone(), value.clone())?;
    }
    if let (Some(name), Some(s)) = (snap.config.idp.client_ip_header.as_ref(), a.signals.as_ref()) {
        req.insert_header(name.clone(), header(s.client_ip.to_string().as_bytes())?)?;
    }
    if let Some(body) = &ctx.registration.body {
        // The body is the gateway's own bytes: nothing that described the client's stays.
        for name in crate::core::headers::BODY_DESCRIBING_HEADERS {
            req.remove_header(*name);
        }
        req.insert_header(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()))?;
        match &ctx.registration.body_type {
            Some(t) => req.insert_header(http::header::CONTENT_TYPE, t.clone())?,
            None => req.insert_header(http::header::CONTENT_TYPE, "application/json")?,
        }
    }
    Ok(())
}
