//! The admin listener (default 127.0.0.1:9464): `/metrics`, `/healthz`, `/readyz`.
//! Never exposed on the public listener.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::protocols::http::ServerSession;

use super::Metrics;
use crate::snapshot::Store;

pub struct AdminApp {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
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
                let body = serde_json::json!({
                    "status": if healthy > 0 { "ready" } else { "unready" },
                    "healthy_upstreams": healthy,
                    "rules": snap.acl.rule_count(),
                    "config_sha256": snap.config_sha256,
                    "rules_sha256": snap.rules_sha256,
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
