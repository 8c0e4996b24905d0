//! Error responses of the admin API, in the shape of Auth0's Management API errors
//! (`statusCode`, `error`, `message`, `errorCode`), plus the gateway's own members
//! (`error_description`, `request_id`) so that every response the gateway writes carries them.
//!
//! `error` is the HTTP reason phrase, as Auth0 writes it (`"Unauthorized"`, `"Bad Request"`,
//! `"Forbidden"`). A missing scope is Auth0's 403: `"error": "Forbidden"`, `"errorCode":
//! "insufficient_scope"`, `"message": "Insufficient scope, expected any of: <scope>"`, with the
//! RFC 6750 `insufficient_scope` challenge in `WWW-Authenticate`.

use http::StatusCode;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable code (`errorCode`).
    pub code: &'static str,
    pub message: String,
    /// Per-field validation problems (`errors`), for 400 answers to writes.
    pub fields: Vec<FieldError>,
    /// Extra response headers (`WWW-Authenticate`, `Allow`).
    pub headers: Vec<(http::HeaderName, String)>,
}

/// One validation problem: the member path in the request body and what is wrong with it.
pub use crate::config::FieldError;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), fields: Vec::new(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// 401: no token, or one that does not verify. `www_authenticate` is the RFC 6750
    /// challenge (`Bearer`, with `error=` when a token was presented).
    pub fn unauthorized(code: &'static str, message: impl Into<String>, www_authenticate: String) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
            .with_header(http::header::WWW_AUTHENTICATE, www_authenticate)
    }

    /// 403: the token lacks the endpoint's scope.
    pub fn insufficient_scope(required: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("Insufficient scope, expected any of: {required}"),
        )
        .with_header(
            http::header::WWW_AUTHENTICATE,
            format!("Bearer error=\"insufficient_scope\", scope=\"{required}\""),
        )
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 for a body that does not validate; `message` lists every problem.
    pub fn invalid_body(fields: Vec<FieldError>) -> ApiError {
        let list: Vec<String> = fields.iter().map(ToString::to_string).collect();
        let mut e = ApiError::bad_request("invalid_body", format!("Payload validation error: {}", list.join("; ")));
        e.fields = fields;
        e
    }

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method not allowed here (allowed: {allow})"),
        )
        .with_header(http::header::ALLOW, allow)
    }

    pub fn precondition_failed(current: &str) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("If-Match does not match the current version (ETag \"{current}\"); read it again and retry"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// The `error` member: the reason phrase, as Auth0 writes it.
    pub fn error_name(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    pub fn body(&self, request_id: &str) -> Value {
        let mut v = json!({
            "statusCode": self.status.as_u16(),
            "error": self.error_name(),
            "message": self.message,
            "errorCode": self.code,
            "error_description": self.message,
            "request_id": request_id,
        });
        if !self.fields.is_empty() {
            v["errors"] = serde_json::to_value(&self.fields).unwrap_or(Value::Null);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let v = ApiError::unauthorized("invalid_token", "unknown token", "Bearer".into()).body("r1");
        assert_eq!(v["statusCode"], 401);
        assert_eq!(v["error"], "Unauthorized");
        assert_eq!(v["errorCode"], "invalid_token");
        assert_eq!(v["request_id"], "r1");
        let e = ApiError::insufficient_scope("read:network_acls");
        let v = e.body("r2");
        assert_eq!(v["error"], "Forbidden");
        assert_eq!(v["errorCode"], "insufficient_scope");
        assert_eq!(v["message"], "Insufficient scope, expected any of: read:network_acls");
        assert_eq!(v["statusCode"], 403);
        assert!(e.headers.iter().any(|(n, v)| n == http::header::WWW_AUTHENTICATE && v.contains("insufficient_scope")));
        let v = ApiError::invalid_body(vec![FieldError::new("rule.match.ipv4_cidrs[0]", "malformed CIDR")]).body("r");
        assert_eq!(v["error"], "Bad Request");
        assert!(v["message"].as_str().unwrap().contains("rule.match.ipv4_cidrs[0]: malformed CIDR"));
        assert_eq!(v["errors"][0]["field"], "rule.match.ipv4_cidrs[0]");
    }
}
