//! The admin listener (default 127.0.0.1:9464): `/metrics`, `/healthz`, `/readyz`, the
//! admin API under `/api/v2/` (see [`crate::admin`]) and the web console under `/console/`
//! (see [`crate::console`]). Never exposed on the public listener.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::protocols::http::ServerSession;

use crate::admin::{self, AdminApi, ApiBody, RequestHead};
use crate::snapshot::Store;
use crate::telemetry::Metrics;

pub struct AdminApp {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
    /// `/api/v2/...` (answers 404 while `[admin] api_enabled = false`).
    pub api: Arc<AdminApi>,
}

/// The request body of an admin API call, read from the session with a size bound and a
/// deadline.
struct SessionBody<'a> {
    session: &'a mut ServerSession,
    /// Every byte of the body was read (the connection can be kept alive).
    complete: bool,
}

/// An oversized body is still read (and dropped) up to this many bytes, so that the client,
/// still sending, gets to read the 413 instead of a reset connection.
const DISCARD_LIMIT: usize = 1024 * 1024;

#[async_trait]
impl ApiBody for SessionBody<'_> {
    async fn read(&mut self, limit: usize, timeout: std::time::Duration) -> Result<Vec<u8>, admin::error::ApiError> {
        let declared = self
            .session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > DISCARD_LIMIT as u64) {
            return Err(admin::too_large(limit));
        }
        let session = &mut *self.session;
        let read = async {
            if session.req_header().headers.get(http::header::EXPECT).is_some() {
                if declared.is_some_and(|n| n > limit as u64) {
                    return (Err(admin::too_large(limit)), false);
                }
                if session.write_continue_response().await.is_err() {
                    return (Err(bad_body()), false);
                }
            }
            let mut body = crate::core::body::BoundedBody::draining(limit, DISCARD_LIMIT);
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => {
                        if body.push(&chunk).is_err() {
                            return (Err(admin::too_large(limit)), false);
                        }
                    }
                    // Read to its end (drained when too large): the connection can be reused.
                    Ok(None) => return (body.finish().map_err(|_| admin::too_large(limit)), true),
                    Err(_) => return (Err(bad_body()), false),
                }
            }
        };
        let (r, complete) = match tokio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => (Err(admin::body_timeout()), false),
        };
        self.complete = complete;
        r
    }
}

fn bad_body() -> admin::error::ApiError {
    admin::error::ApiError::bad_request("invalid_body", "malformed request body")
}

impl AdminApp {
    /// Origins currently passing health checks.
    pub fn healthy_upstreams(&self) -> usize {
        let backends = self.upstreams.backends();
        backends.get_backend().iter().filter(|b| backends.ready(b)).count()
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    let len = resp.body().len();
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", serde_json::to_vec(&v).unwrap_or_default())
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        let console = crate::console::is_console_path(&path);
        if admin::is_api_path(&path) || console {
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            let head = RequestHead {
                method,
                path,
                query: session.req_header().uri.query().map(str::to_string),
                headers: session.req_header().headers.clone(),
                client_ip: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default(),
            };
            let mut body = SessionBody { session, complete: false };
            let resp = if console {
                // The web console (`crate::console`), over the same service.
                self.api.console.handle(&self.api, &head, &mut body, tls).await
            } else {
                self.api.handle(&head, &mut body).await
            };
            let has_body = head.headers.contains_key(http::header::CONTENT_LENGTH)
                || head.headers.contains_key(http::header::TRANSFER_ENCODING);
            if has_body && !body.complete {
                // An unread (or partly read) body: close rather than drain it.
                session.set_keepalive(None);
            }
            return resp;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "invalid_request", "error_description": "method not allowed"}),
            );
        }
        match path.as_str() {
            "/metrics" => {
                self.metrics.upstream_healthy.set(self.healthy_upstreams() as i64);
                reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.render())
            }
            "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "/readyz" => {
                let snap = self.store.load();
                let healthy = self.healthy_upstreams();
                self.metrics.upstream_healthy.set(healthy as i64);
                let mut warnings = Vec::new();
                if self.metrics.idp_discovery_off_gateway.get() > 0 {
                    warnings.push(
                        "the IdP's own discovery document advertises registration off the gateway: the IdP must not \
                         be reachable by clients except through the gateway (see the log)",
                    );
                }
                let body = serde_json::json!({
                    "status": if healthy > 0 { "ready" } else { "unready" },
                    "healthy_upstreams": healthy,
                    "rules": snap.acl.rule_count(),
                    "config_sha256": snap.config_sha256,
                    "rules_sha256": snap.rules_sha256,
                    "warnings": warnings,
                });
                json(if healthy > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
            }
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not_found", "error_description": "unknown admin endpoint"}),
            ),
        }
    }
}
