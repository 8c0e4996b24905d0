//! Registrations the gateway sends to the IdP itself, to refuse those the IdP changed
//! (`[upstream] refuse_changed_registrations`).
//!
//! Through Pingora, the answer's status line reaches the client before the gateway has read
//! the body, so a registration the IdP changed (`core::verify`) can only be counted and
//! audited. To refuse one the whole answer must be held: the gateway sends the registration
//! over a connection of its own — the same request the proxy would send, its head built by
//! `forward::rewrite` — reads the answer whole, and either answers the client with it (read,
//! recorded and rewritten exactly as a proxied answer) or deletes the client at the IdP
//! (RFC 7592 `DELETE` with the registration_access_token it just issued) and refuses.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{forward, signals, Gateway, RequestCtx, Rewrite, DEFAULT_REQUEST_ID_HEADER};
use crate::dcr::{ErrorCode, RegistrationError};
use crate::errors::GatewayError;
use crate::registry::http as idp_http;
use crate::snapshot::Snapshot;
use crate::telemetry::Outcome;

/// Headers that describe one connection (RFC 9110 §7.6.1): the gateway's own connection to the
/// IdP carries its own framing.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"];

/// One `name: value` line of a head.
fn header_line(out: &mut Vec<u8>, name: &http::HeaderName, value: &http::HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The request's bytes: the rewritten head, `Connection: close`, and the gateway's body.
fn request_bytes(req: &RequestHeader, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.raw_path());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers.iter() {
        if HOP_BY_HOP.contains(&name.as_str()) || name == http::header::CONTENT_LENGTH {
            continue;
        }
        header_line(&mut out, name, value);
    }
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// The upstream failure an error of `idp_http::send_bytes` is, as the proxy counts and answers it.
fn failure(error: &str) -> (&'static str, GatewayError) {
    let e = error.to_ascii_lowercase();
    if e.contains("timed out") || e.contains("temporarily unavailable") || e.contains("would block") {
        ("timeout", GatewayError::UpstreamTimeout)
    } else if e.starts_with("connect") || e.starts_with("tls") {
        ("connect_failure", GatewayError::UpstreamUnavailable)
    } else {
        ("other", GatewayError::UpstreamUnavailable)
    }
}

/// The RFC 7592 `DELETE` of a client the IdP just issued: to its `registration_client_uri`,
/// with its `registration_access_token`, the registration's own `Host`, and the upstream's
/// static headers. `None` when the answer lacks what RFC 7592 needs.
fn undo_request(
    answer: &serde_json::Map<String, serde_json::Value>,
    host: Option<&http::HeaderValue>,
    secrets: &[(http::HeaderName, http::HeaderValue)],
) -> Option<Vec<u8>> {
    let text = |k: &str| answer.get(k).and_then(serde_json::Value::as_str);
    let token = text("registration_access_token").filter(|t| t.bytes().all(|b| (0x21..=0x7e).contains(&b)))?;
    let url = url::Url::parse(text("registration_client_uri")?).ok()?;
    // The Host the registration itself was sent with (`forward::rewrite`: the decided host, or
    // the profile's origin name), else the URI's.
    let host = match host.and_then(|h| h.to_str().ok()) {
        Some(h) => h.to_string(),
        None => match (url.host_str()?, url.port()) {
            (h, Some(p)) => format!("{h}:{p}"),
            (h, None) => h.to_string(),
        },
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut out = format!("DELETE {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n").into_bytes();
    for (name, value) in secrets {
        header_line(&mut out, name, value);
    }
    out.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
    Some(out)
}

impl Gateway {
    /// Send the admitted registration to the IdP, read the whole answer, and answer the client:
    /// with the IdP's answer, or — when the IdP changed a verified member — with 400
    /// `invalid_client_metadata` after deleting the client at the IdP. Always `Ok(true)`
    /// (answered here) unless the answer could not be written.
    pub(super) async fn registration_held(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
    ) -> Result<bool> {
        let mut req = session.req_header().clone();
        let is_tls = signals::is_tls(session, &self.tls_listeners);
        forward::rewrite(&mut req, ctx, snap, is_tls)?;
        let body = ctx.registration.body.clone().unwrap_or_default();
        let bytes = request_bytes(&req, &body);
        let Some(backend) = self.upstreams.select(b"", 256) else {
            self.metrics.upstream_errors.with_label_values(&["no_healthy_upstream"]).inc();
            return self.refuse(session, ctx, Outcome::UpstreamError, GatewayError::NoHealthyUpstream).await;
        };
        let peer = self.peers.peer(&backend);
        let Some(addr) = backend.addr.as_inet().copied() else {
            self.metrics.upstream_errors.with_label_values(&["other"]).inc();
            return self.refuse(session, ctx, Outcome::UpstreamError, GatewayError::UpstreamUnavailable).await;
        };
        let sni = peer.is_tls().then(|| peer.sni.clone());
        ctx.timing.upstream_start = Some(Instant::now());
        let answer = match self.exchange(snap, addr, sni.clone(), bytes).await {
            Ok(a) => a,
            Err(e) => {
                let (kind, err) = failure(&e);
                self.metrics.upstream_errors.with_label_values(&[kind]).inc();
                tracing::warn!(request_id = %ctx.admission.request_id, error = %e, "registration: the IdP could not be reached");
                return self.refuse(session, ctx, Outcome::UpstreamError, err).await;
            }
        };
        self.upstream_answered(ctx, answer.status);
        let success = (200..300).contains(&answer.status);
        let json = answer.content_type.as_deref().is_some_and(|t| t.contains("json"));
        let normalize = snap.config.routes.normalize_registration_status;
        if success && (json || normalize) {
            if let Some(rw) = ctx.upstream.rewriter.clone() {
                ctx.upstream.rewrite = Some((Rewrite::Registration, rw));
            }
        }
        let tree = self.read_answer(ctx, &answer.body);
        // An accepted answer the gateway cannot read cannot be verified: refused like a changed
        // one (a gzip body despite the missing Accept-Encoding, an array, a BOM).
        let unreadable = success && tree.is_none();
        if success && (unreadable || !ctx.upstream.changed_members.is_empty()) {
            let host = req.headers.get(http::header::HOST).cloned();
            let undo = tree.as_ref().and_then(|t| undo_request(t, host.as_ref(), &snap.upstream_secrets.headers));
            let deleted = match undo {
                // Only a 2xx is a deletion: a 404 may be the wrong host or path, not a gone client.
                Some(bytes) => match self.exchange(snap, addr, sni, bytes).await {
                    Ok(a) if (200..300).contains(&a.status) => true,
                    Ok(a) => {
                        tracing::warn!(request_id = %ctx.admission.request_id, status = a.status, "registration refused but not deleted: the IdP answered the RFC 7592 DELETE with an error");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %ctx.admission.request_id, error = %e, "registration refused but not deleted: the RFC 7592 DELETE failed");
                        false
                    }
                },
                None => {
                    tracing::warn!(request_id = %ctx.admission.request_id, "registration refused but not deleted: the IdP's answer has no readable registration_client_uri and registration_access_token (RFC 7592)");
                    false
                }
            };
            self.metrics.registrations_undone.with_label_values(&[if deleted { "deleted" } else { "failed" }]).inc();
            if deleted {
                // No client was kept: the use of an initial access token is given back.
                ctx.registration.token_lease = None;
                ctx.registration.store_token_use = None;
            } else {
                // The client lives on at the IdP: the use is spent, and the registry knows the
                // client (caps count it; the reaper or an operator can delete it).
                Self::spend_token_use(ctx, answer.status);
                if let Some(t) = tree.as_ref() {
                    self.registry_record(ctx, t);
                }
            }
            let what = if unreadable {
                "an answer the gateway could not read".to_string()
            } else {
                format!("other {} than requested", ctx.upstream.changed_members.join(", "))
            };
            let err = GatewayError::InvalidRegistration(RegistrationError::new(
                ErrorCode::InvalidClientMetadata,
                format!(
                    "the identity provider registered this client with {what}; the registration was {}",
                    if deleted {
                        "undone"
                    } else {
                        "refused (the client could not be deleted at the identity provider)"
                    }
                ),
            ));
            return self.refuse(session, ctx, Outcome::Invalid, err).await;
        }
        Self::spend_token_use(ctx, answer.status);
        let original = ctx.upstream.rewrite.is_none().then(|| answer.body.clone());
        let out = self.settle_answer(ctx, tree, answer.body).or(original).unwrap_or_default();
        let status = if success && answer.status != 201 && snap.config.routes.normalize_registration_status {
            201
        } else {
            answer.status
        };
        ctx.admission.status = status;
        if self.drain.is_draining() {
            session.set_keepalive(None);
        }
        let content_type = match answer.content_type.as_deref() {
            // RFC 7591 §3.2.1: client information is JSON, whatever the IdP labelled it.
            _ if success && normalize => http::HeaderValue::from_static("application/json"),
            Some(t) => http::HeaderValue::from_str(t).unwrap_or(http::HeaderValue::from_static("application/json")),
            None => http::HeaderValue::from_static("application/json"),
        };
        let mut resp = ResponseHeader::build(status, Some(5))?;
        resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        resp.insert_header(http::header::CONTENT_LENGTH, out.len().to_string())?;
        resp.insert_header(DEFAULT_REQUEST_ID_HEADER, ctx.admission.request_id.as_str())?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(Bytes::from(out)), true).await?;
        Ok(true)
    }

    /// One request of the gateway's own to the selected origin, off the async threads.
    async fn exchange(
        &self,
        snap: &Snapshot,
        addr: SocketAddr,
        sni: Option<String>,
        bytes: Vec<u8>,
    ) -> std::result::Result<idp_http::Answer, String> {
        let upstream = snap.config.upstream.clone();
        tokio::task::spawn_blocking(move || idp_http::send_bytes(&upstream, addr, sni.as_deref(), &bytes))
            .await
            .map_err(|e| format!("exchange task: {e}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_framed_by_the_gateway() {
        let mut req = RequestHeader::build("POST", b"/reg", None).unwrap();
        req.insert_header("host", "idp.example").unwrap();
        req.insert_header("transfer-encoding", "chunked").unwrap();
        req.insert_header("connection", "keep-alive").unwrap();
        req.insert_header("content-length", "99").unwrap();
        req.insert_header("x-forwarded-for", "203.0.113.9").unwrap();
        let text = String::from_utf8(request_bytes(&req, b"{}")).unwrap();
        assert!(text.starts_with("POST /reg HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("host: idp.example\r\n") && text.contains("x-forwarded-for: 203.0.113.9\r\n"), "{text}");
        assert!(!text.contains("chunked") && !text.contains("keep-alive") && !text.contains(": 99"), "{text}");
        assert!(text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n{}"), "{text}");
    }

    #[test]
    fn the_undo_is_rfc_7592_delete_with_the_issued_token() {
        let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"client_id":"c1","registration_access_token":"tok","registration_client_uri":"http://idp.internal:3000/reg/c1?x=1"}"#,
        )
        .unwrap();
        let secrets = [(http::HeaderName::from_static("cname-api-key"), http::HeaderValue::from_static("k"))];
        let text = String::from_utf8(undo_request(&answer, None, &secrets).unwrap()).unwrap();
        assert_eq!(
            text,
            "DELETE /reg/c1?x=1 HTTP/1.1\r\nHost: idp.internal:3000\r\nAuthorization: Bearer tok\r\ncname-api-key: k\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        // The registration's own Host wins (a vhost- or edge-routed IdP).
        let host = http::HeaderValue::from_static("login.example.com");
        let text = String::from_utf8(undo_request(&answer, Some(&host), &[]).unwrap()).unwrap();
        assert!(text.contains("\r\nHost: login.example.com\r\n"), "{text}");
        let mut no_token = answer.clone();
        no_token.remove("registration_access_token");
        assert!(undo_request(&no_token, None, &[]).is_none());
        let mut bad_token = answer;
        bad_token.insert("registration_access_token".into(), "a\r\nX-Injected: 1".into());
        assert!(undo_request(&bad_token, None, &[]).is_none(), "a token that would break the head is not sent");
    }

    #[test]
    fn failures_are_classified_as_the_proxy_counts_them() {
        assert_eq!(failure("read: Resource temporarily unavailable (os error 11)").0, "timeout");
        assert_eq!(failure("connect 127.0.0.1:1: Connection refused (os error 111)").0, "connect_failure");
        assert_eq!(failure("unreadable status line").0, "other");
    }
}
