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

/// What the adapter collected about a finished request, borrowed from its context: the audit
/// line is decided from these alone ([`AuditLine::from_facts`]).
pub struct Facts<'a> {
    pub timestamp: String,
    pub request_id: &'a str,
    pub scope: Scope,
    pub method: &'a str,
    /// The request target as forwarded (query included; the line keeps the path only).
    pub upstream_target: Option<&'a str>,
    /// The client id named by an RFC 7592 path.
    pub path_client_id: Option<&'a str>,
    pub signals: Option<&'a crate::signals::Signals>,
    pub verdict: Option<&'a crate::acl::Verdict>,
    pub outcome: Outcome,
    pub error: Option<&'a GatewayError>,
    /// What the registration gate admitted (taken: its lists move into the line).
    pub admitted: Option<super::gate::Admitted>,
    pub upstream_status: Option<u16>,
    pub idp_error: Option<String>,
    pub idp_changed_members: Vec<String>,
    pub upstream_latency: Option<std::time::Duration>,
    /// The client the IdP issued, read from its answer.
    pub idp_client_id: Option<String>,
    pub token: Option<&'a crate::tokens::TokenEntry>,
    /// The status the client got.
    pub status: u16,
    pub elapsed: std::time::Duration,
    /// `audit_user_agent_max_chars`.
    pub user_agent_max_chars: usize,
}

impl AuditLine {
    /// The line for a finished request. The IdP's client id wins over the path's; the path is
    /// kept without its query (a query can carry anything); the user agent is cut to its
    /// configured length; the token appears as its label and hash prefix only.
    pub fn from_facts(f: Facts<'_>) -> AuditLine {
        let s = f.signals;
        let (client_name, redirect_uri_hosts, dropped_members, removed_scopes, known_client, software_statement_issuer) =
            match f.admitted {
                Some(a) => (
                    a.client_name,
                    a.redirect_hosts,
                    a.dropped_members,
                    a.removed_scopes,
                    a.known_client,
                    a.software_statement_issuer,
                ),
                None => Default::default(),
            };
        AuditLine {
            timestamp: f.timestamp,
            request_id: f.request_id.to_string(),
            scope: f.scope.as_str(),
            method: f.method.to_string(),
            path: f.upstream_target.map(|t| t.split('?').next().unwrap_or("").to_string()),
            client_ip: s.map(|s| s.client_ip.to_string()).unwrap_or_default(),
            connecting_ip: s.map(|s| s.connecting_ip.to_string()).unwrap_or_default(),
            country: s.and_then(|s| s.country.clone()),
            subdivisions: s.map(|s| s.subdivisions.clone()).unwrap_or_default(),
            asn: s.and_then(|s| s.asn),
            user_agent: s.and_then(|s| s.user_agent.as_deref()).map(|ua| truncate_chars(ua, f.user_agent_max_chars)),
            hostname: s.and_then(|s| s.hostname.clone()),
            rule: f.verdict.and_then(|v| v.rule.as_ref().map(|r| r.to_string())),
            logged_rules: f.verdict.map(|v| v.logged.iter().map(|r| r.to_string()).collect()).unwrap_or_default(),
            decision: f.outcome.decision(),
            error: f.error.map(|e| e.code()),
            error_description: f.error.map(|e| e.description()),
            upstream_status: f.upstream_status,
            idp_error: f.idp_error,
            idp_changed_members: f.idp_changed_members,
            upstream_latency_ms: f.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
            client_id: f.idp_client_id.or_else(|| f.path_client_id.map(str::to_string)),
            token_label: f.token.map(|t| t.label.clone()),
            token_hash_prefix: f.token.map(|t| t.hash_prefix().to_string()),
            status: f.status,
            duration_ms: f.elapsed.as_secs_f64() * 1000.0,
            known_client,
            client_name,
            software_statement_issuer,
            redirect_uri_hosts,
            dropped_members,
            removed_scopes,
        }
    }
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

    fn facts<'a>(
        signals: &'a crate::signals::Signals,
        verdict: &'a crate::acl::Verdict,
        token: &'a crate::tokens::TokenEntry,
    ) -> Facts<'a> {
        Facts {
            timestamp: "2026-12-01T00:00:00Z".into(),
            request_id: "rid-1",
            scope: Scope::Dcr,
            method: "PUT",
            upstream_target: Some("/oidc/register/abc?secret=query"),
            path_client_id: Some("abc"),
            signals: Some(signals),
            verdict: Some(verdict),
            outcome: Outcome::Allowed,
            error: None,
            admitted: None,
            upstream_status: Some(200),
            idp_error: None,
            idp_changed_members: vec!["scope".into()],
            upstream_latency: Some(std::time::Duration::from_millis(12)),
            idp_client_id: None,
            token: Some(token),
            status: 200,
            elapsed: std::time::Duration::from_millis(15),
            user_agent_max_chars: 4,
        }
    }

    #[test]
    fn the_audit_line_is_decided_from_the_facts_alone() {
        let mut signals = crate::signals::Signals::from_ip([203, 0, 113, 9].into(), [10, 0, 0, 1].into());
        signals.user_agent = Some("ÄÖÜß-agent/1.0".into());
        signals.country = Some("NL".into());
        let verdict = crate::acl::Verdict {
            decision: crate::acl::Decision::Allow,
            rule: Some("allow-partners".into()),
            logged: vec!["watch".into()],
        };
        let token = crate::tokens::TokenEntry {
            label: "ci".into(),
            sha256_hex: "0123456789abcdef".repeat(4),
            created_at: None,
            expires_at: None,
            max_uses: None,
            scopes: Vec::new(),
            overrides: Default::default(),
        };
        let line = AuditLine::from_facts(facts(&signals, &verdict, &token));
        assert_eq!(line.path.as_deref(), Some("/oidc/register/abc"), "the query never reaches the line");
        assert_eq!(line.client_id.as_deref(), Some("abc"), "the RFC 7592 path's client");
        assert_eq!(line.user_agent.as_deref(), Some("ÄÖÜß"), "cut on a character boundary");
        assert_eq!((line.client_ip.as_str(), line.connecting_ip.as_str()), ("203.0.113.9", "10.0.0.1"));
        assert_eq!(
            (line.rule.as_deref(), line.logged_rules.clone()),
            (Some("allow-partners"), vec!["watch".to_string()])
        );
        assert_eq!((line.token_label.as_deref(), line.token_hash_prefix.as_deref()), (Some("ci"), Some("01234567")));
        assert_eq!((line.decision, line.error, line.status), ("allow", None, 200));
        assert_eq!(line.upstream_latency_ms, Some(12.0));
        let json = serde_json::to_string(&line).unwrap();
        assert!(!json.contains(&token.sha256_hex), "never the token's hash, only its prefix: {json}");
        assert!(!json.contains("secret=query"));

        // A registration: the IdP's client id wins; the gate's facts move into the line.
        let mut f = facts(&signals, &verdict, &token);
        f.idp_client_id = Some("issued-1".into());
        f.method = "POST";
        f.upstream_target = Some("/oidc/register");
        f.admitted = Some(crate::core::gate::Admitted {
            body: b"{}".to_vec(),
            software_statement_issuer: Some("https://issuer.example".into()),
            client_name: Some("Agent".into()),
            redirect_hosts: vec!["app.example".into()],
            dropped_members: vec!["x_unknown".into()],
            removed_scopes: vec!["admin".into()],
            known_client: Some("cursor"),
            metadata_hosts: Vec::new(),
        });
        let e = GatewayError::InvalidRegistration(RegistrationError::new(ErrorCode::InvalidRedirectUri, "bad".into()));
        f.error = Some(&e);
        f.outcome = Outcome::Invalid;
        let line = AuditLine::from_facts(f);
        assert_eq!(line.client_id.as_deref(), Some("issued-1"));
        assert_eq!((line.client_name.as_deref(), line.known_client), (Some("Agent"), Some("cursor")));
        assert_eq!(line.software_statement_issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!((line.redirect_uri_hosts.len(), line.dropped_members.len(), line.removed_scopes.len()), (1, 1, 1));
        assert_eq!((line.error, line.error_description.as_deref()), (Some("invalid_redirect_uri"), Some("bad")));
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
