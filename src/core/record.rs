//! What a finished request leaves behind: its registration metric labels and its audit
//! line, computed from the facts the adapter collected — pure, so the mapping is tested here
//! and not only through a spawned binary.
//!
//! The audit line is built only from fields chosen here: no header dump and no body, so a
//! `client_secret`, `registration_access_token`, `Authorization` header or initial access
//! token has no way in.

use serde::Serialize;

use super::outcome::Outcome;
use crate::errors::GatewayError;
use crate::scope::Scope;

#[derive(Debug, Default, Serialize)]
pub struct AuditLine {
    pub timestamp: String,
    pub request_id: String,
    pub scope: &'static str,
    pub method: String,
    /// The path as forwarded (canonical, query omitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub client_ip: String,
    pub connecting_ip: String,
    pub country: Option<String>,
    pub subdivisions: Vec<String>,
    pub asn: Option<u32>,
    pub user_agent: Option<String>,
    pub hostname: Option<String>,
    /// The deciding ACL rule, when one decided.
    pub rule: Option<String>,
    /// `log` rules that matched on the way.
    pub logged_rules: Vec<String>,
    pub decision: &'static str,
    pub error: Option<&'static str>,
    pub error_description: Option<String>,
    pub client_name: Option<String>,
    pub redirect_uri_hosts: Vec<String>,
    pub dropped_members: Vec<String>,
    pub removed_scopes: Vec<String>,
    pub upstream_status: Option<u16>,
    /// The OAuth `error` code of an IdP that refused the request (RFC 7591 §3.2.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_error: Option<String>,
    /// Registration members the IdP answered differently from what the gateway sent
    /// (`core::verify`): names only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub idp_changed_members: Vec<String>,
    pub upstream_latency_ms: Option<f64>,
    /// The client the IdP issued (registration) or the one the RFC 7592 path names.
    pub client_id: Option<String>,
    /// Label of the initial access token that admitted the registration (never the token).
    pub token_label: Option<String>,
    /// First hex digits of the token's SHA-256, to tell rotated tokens apart.
    pub token_hash_prefix: Option<String>,
    /// `iss` of a verified software statement.
    pub software_statement_issuer: Option<String>,
    /// The catalogued client (conf/known-clients.toml) the registration is proven to be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_client: Option<&'static str>,
    pub status: u16,
    pub duration_ms: f64,
}

/// Truncate to at most `max` characters, on a character boundary.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// `dcr_gateway_registrations_total{result, error}` for a registration POST: each
/// registration counted once, by how it ended. No label value is empty (`error="none"`), and a
/// redirect is `redirected`, as in `requests_total{outcome}`.
pub fn registration_result(
    outcome: Outcome,
    error: Option<&GatewayError>,
    upstream_status: Option<u16>,
) -> (&'static str, &'static str) {
    match (outcome, error) {
        (Outcome::Blocked, _) => ("blocked", "none"),
        (Outcome::Redirected, _) => ("redirected", "none"),
        (Outcome::Disabled, _) => ("disabled", "none"),
        (Outcome::RateLimited, _) => ("rate_limited", "none"),
        (Outcome::Unauthorized, _) => ("unauthorized", "none"),
        (Outcome::Invalid, Some(GatewayError::InvalidRegistration(e))) => ("invalid", e.code.as_str()),
        (Outcome::Invalid, Some(e)) => ("invalid", e.code()),
        (Outcome::Invalid, None) => ("invalid", "invalid_request"),
        (Outcome::UpstreamError, _) => ("upstream_error", "none"),
        (Outcome::Allowed, _) => match upstream_status {
            Some(201) => ("created", "none"),
            Some(s) if (200..300).contains(&s) => ("accepted", "none"),
            Some(_) => ("rejected_by_idp", "none"),
            None => ("aborted", "none"),
        },
    }
}

/// Which requests get an audit line: every `dcr`-scope request, every blocked one, and every
/// request refused because its head could not be read unambiguously (a probe for bypasses).
pub fn is_audited(scope: Scope, outcome: Outcome, error: Option<&GatewayError>) -> bool {
    scope == Scope::Dcr
        || outcome == Outcome::Blocked
        || matches!(error, Some(GatewayError::BadTarget(_) | GatewayError::BadHeader(_) | GatewayError::Misdirected))
}

/// An IdP's OAuth `error` code, kept only when it looks like one (`invalid_client_metadata`):
/// a bounded token of lower-case letters and `_`, never free text.
pub fn idp_error_code(raw: &str) -> Option<String> {
    let ok = (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    ok.then(|| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcr::{ErrorCode, RegistrationError};

    #[test]
    fn each_registration_is_counted_once_by_how_it_ended() {
        assert_eq!(registration_result(Outcome::Allowed, None, Some(201)), ("created", "none"));
        assert_eq!(registration_result(Outcome::Allowed, None, Some(200)), ("accepted", "none"));
        assert_eq!(registration_result(Outcome::Allowed, None, Some(400)), ("rejected_by_idp", "none"));
        assert_eq!(registration_result(Outcome::Allowed, None, None), ("aborted", "none"));
        assert_eq!(registration_result(Outcome::Redirected, None, None), ("redirected", "none"));
        let e = GatewayError::InvalidRegistration(RegistrationError::new(ErrorCode::InvalidRedirectUri, "x".into()));
        assert_eq!(registration_result(Outcome::Invalid, Some(&e), None), ("invalid", "invalid_redirect_uri"));
        assert_eq!(
            registration_result(Outcome::Invalid, Some(&GatewayError::UnsupportedMediaType), None),
            ("invalid", "invalid_request")
        );
        assert_eq!(
            registration_result(Outcome::UpstreamError, Some(&GatewayError::UpstreamTimeout), None),
            ("upstream_error", "none")
        );
    }

    #[test]
    fn what_is_audited() {
        assert!(is_audited(Scope::Dcr, Outcome::Allowed, None));
        assert!(is_audited(Scope::Authentication, Outcome::Blocked, None));
        assert!(!is_audited(Scope::Authentication, Outcome::Allowed, None));
        let bad = GatewayError::BadTarget(crate::core::target::TargetError::Ambiguous);
        assert!(is_audited(Scope::Authentication, Outcome::Invalid, Some(&bad)));
    }

    #[test]
    fn idp_error_codes_are_tokens_not_text() {
        assert_eq!(idp_error_code("invalid_client_metadata").as_deref(), Some("invalid_client_metadata"));
        assert_eq!(idp_error_code("Invalid <b>x</b>"), None);
        assert_eq!(idp_error_code(&"a".repeat(65)), None);
    }

    #[test]
    fn an_audit_line_serializes_without_absent_extras() {
        let v = serde_json::to_value(AuditLine { request_id: "r".into(), decision: "allow", ..Default::default() })
            .unwrap();
        assert!(v.get("path").is_none() && v.get("idp_error").is_none() && v.get("idp_changed_members").is_none());
        assert_eq!(v["client_id"], serde_json::Value::Null);
    }
}
