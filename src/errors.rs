//! Every response the gateway writes itself, in one place: status, headers and JSON body.
//! Bodies carry `error`, `error_description` and the request id; none reveals which rule
//! matched or echoes a secret.

use crate::dcr::RegistrationError;

#[derive(Debug, Clone)]
pub enum GatewayError {
    /// ACL block.
    AccessDenied,
    /// `[dcr] enabled = false`.
    RegistrationDisabled,
    MethodNotAllowed {
        allow: &'static str,
    },
    UnsupportedMediaType,
    PayloadTooLarge {
        limit: usize,
    },
    RequestTimeout,
    BadRequestBody,
    InvalidRegistration(RegistrationError),
    NoHealthyUpstream,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// A `[rate_limit]` limit was exceeded.
    RateLimited {
        retry_after_secs: u64,
    },
    /// The shared rate-limit store is down and the policy is `fail_closed`.
    RateLimitUnavailable,
    /// `[dcr] registration = "token"` and no valid initial access token.
    Unauthorized(crate::tokens::TokenError),
    /// The request target or host could not be made unambiguous (`core::target`).
    BadTarget(crate::core::target::TargetError),
    /// A header the gateway must understand could not be read.
    BadHeader(&'static str),
    /// A `dcr`-scope request whose method does not take a body carried one.
    BodyNotAllowed,
    /// TLS SNI names another host than the request (`[network] sni_host_mismatch = "reject"`).
    Misdirected,
    /// The request head was not complete within `[server] header_timeout_ms`.
    HeaderTimeout,
    /// A malformed request head (written for Pingora's own parse errors).
    MalformedRequest {
        status: u16,
    },
    /// Something failed inside the gateway (details in the log, never in the answer).
    Internal,
    /// `[server] max_connections` connections are open.
    TooManyConnections,
    /// A `[registry]` cap (`total`, `software`, `prefix`) is reached (docs/registry.md).
    ClientLimit {
        cap: &'static str,
        retry_after_secs: Option<u64>,
    },
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::AccessDenied | GatewayError::RegistrationDisabled => 403,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::UnsupportedMediaType => 415,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::RequestTimeout => 408,
            GatewayError::BadRequestBody | GatewayError::InvalidRegistration(_) => 400,
            GatewayError::NoHealthyUpstream | GatewayError::UpstreamUnavailable => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::RateLimitUnavailable => 503,
            GatewayError::Unauthorized(_) => 401,
            GatewayError::BadTarget(_) | GatewayError::BadHeader(_) | GatewayError::BodyNotAllowed => 400,
            GatewayError::Misdirected => 421,
            GatewayError::HeaderTimeout => 408,
            GatewayError::MalformedRequest { status } => *status,
            GatewayError::Internal => 500,
            GatewayError::TooManyConnections => 503,
            GatewayError::ClientLimit { retry_after_secs: Some(_), .. } => 429,
            GatewayError::ClientLimit { .. } => 403,
        }
    }

    /// The `error` member (RFC 7591 §3.2.2 codes where they apply, OAuth codes otherwise).
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::AccessDenied | GatewayError::RegistrationDisabled => "access_denied",
            GatewayError::MethodNotAllowed { .. }
            | GatewayError::UnsupportedMediaType
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::RequestTimeout
            | GatewayError::BadRequestBody
            | GatewayError::BadTarget(_)
            | GatewayError::BadHeader(_)
            | GatewayError::BodyNotAllowed
            | GatewayError::Misdirected
            | GatewayError::HeaderTimeout
            | GatewayError::MalformedRequest { .. } => "invalid_request",
            GatewayError::InvalidRegistration(e) => e.code.as_str(),
            GatewayError::NoHealthyUpstream
            | GatewayError::UpstreamUnavailable
            | GatewayError::UpstreamTimeout
            | GatewayError::RateLimitUnavailable
            | GatewayError::TooManyConnections => "temporarily_unavailable",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::Internal => "server_error",
            GatewayError::Unauthorized(_) => "invalid_token",
            GatewayError::ClientLimit { .. } => "client_limit_reached",
        }
    }

    pub fn description(&self) -> String {
        match self {
            GatewayError::AccessDenied => "access denied by network policy".into(),
            GatewayError::RegistrationDisabled => "dynamic client registration is disabled".into(),
            GatewayError::MethodNotAllowed { allow } => format!("method not allowed here (allowed: {allow})"),
            GatewayError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            GatewayError::PayloadTooLarge { limit } => format!("request body exceeds {limit} bytes"),
            GatewayError::RequestTimeout => "request body not received in time".into(),
            GatewayError::BadRequestBody => "malformed request body".into(),
            GatewayError::InvalidRegistration(e) => e.description.clone(),
            GatewayError::NoHealthyUpstream => "no healthy upstream identity provider".into(),
            GatewayError::UpstreamUnavailable => "the identity provider could not be reached".into(),
            GatewayError::UpstreamTimeout => "the identity provider did not answer in time".into(),
            GatewayError::RateLimited { retry_after_secs } => {
                format!("too many registration requests; retry after {retry_after_secs} seconds")
            }
            GatewayError::RateLimitUnavailable => "registration is temporarily unavailable".into(),
            GatewayError::Unauthorized(e) => format!("initial access token: {}", e.as_str()),
            GatewayError::BadTarget(e) => e.description().into(),
            GatewayError::BadHeader(what) => format!("unreadable {what} header"),
            GatewayError::BodyNotAllowed => "this request must not carry a body".into(),
            GatewayError::Misdirected => "the TLS server name does not match the requested host".into(),
            GatewayError::HeaderTimeout => "request head not received in time".into(),
            GatewayError::MalformedRequest { status: 431 } => "request header fields too large".into(),
            GatewayError::MalformedRequest { .. } => "malformed request".into(),
            GatewayError::Internal => "internal error".into(),
            GatewayError::TooManyConnections => "too many open connections".into(),
            GatewayError::ClientLimit { cap: "total", .. } => {
                "the limit of dynamically registered clients is reached".into()
            }
            GatewayError::ClientLimit { cap: "software", .. } => {
                "the limit of registered clients of this software is reached".into()
            }
            GatewayError::ClientLimit { .. } => "too many client registrations from this network".into(),
        }
    }

    /// Extra response headers.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            GatewayError::MethodNotAllowed { allow } => vec![("allow", (*allow).to_string())],
            GatewayError::NoHealthyUpstream | GatewayError::UpstreamUnavailable | GatewayError::UpstreamTimeout => {
                vec![("retry-after", "5".into())]
            }
            GatewayError::RateLimited { retry_after_secs } => vec![("retry-after", retry_after_secs.to_string())],
            GatewayError::ClientLimit { retry_after_secs: Some(s), .. } => vec![("retry-after", s.to_string())],
            GatewayError::RateLimitUnavailable | GatewayError::TooManyConnections => vec![("retry-after", "5".into())],
            // RFC 6750 §3; the issue asks for invalid_token even when the header is missing.
            GatewayError::Unauthorized(e) => vec![(
                "www-authenticate",
                format!("Bearer error=\"invalid_token\", error_description=\"{}\"", e.as_str()),
            )],
            _ => vec![],
        }
    }

    pub fn body(&self, request_id: &str) -> Vec<u8> {
        /// The same three members as a `json!` map, without building one (every refusal of a
        /// flood writes this).
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            error_description: &'a str,
            request_id: &'a str,
        }
        let description = self.description();
        let body = Body { error: self.code(), error_description: &description, request_id };
        let mut out = Vec::with_capacity(96 + description.len() + request_id.len());
        serde_json::to_writer(&mut out, &body).map(|_| out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_body_matches_auth0_wording() {
        let e = GatewayError::RegistrationDisabled;
        let v: serde_json::Value = serde_json::from_slice(&e.body("r")).unwrap();
        assert_eq!(e.status(), 403);
        assert_eq!(v["error"], "access_denied");
        assert_eq!(v["error_description"], "dynamic client registration is disabled");
        assert_eq!(v["request_id"], "r");
    }

    #[test]
    fn upstream_failures_are_temporarily_unavailable() {
        assert_eq!(GatewayError::UpstreamUnavailable.status(), 502);
        assert_eq!(GatewayError::UpstreamTimeout.status(), 504);
        assert_eq!(GatewayError::UpstreamTimeout.code(), "temporarily_unavailable");
    }
}
