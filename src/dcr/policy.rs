//! The `[dcr]` section of gateway.toml.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::normalize::{parse_scope, ResponseType};
use super::validate::{is_client_forbidden, is_known_member, AuthMethod, GrantType};

/// How much a registration may ask for, and what happens to members this module does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Authorization code (+ refresh token) only; unknown members dropped; no fragment,
    /// userinfo or wildcard in any URI; homograph hosts rejected; metadata URIs on the site of
    /// the redirect URIs; `<`/`>` rejected in client names; disallowed scopes rejected.
    #[default]
    Strict,
    /// Also implicit, client_credentials and device_code; unknown members forwarded;
    /// disallowed scopes removed instead of rejected.
    Permissive,
}

/// Who may register (RFC 7591 §3: open or protected registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone may register (subject to the ACL and the rest of the policy).
    #[default]
    Open,
    /// Closed registration: every request needs `Authorization: Bearer <initial access token>`
    /// matching an entry of `token_file` (see `crate::tokens`).
    Token,
}

/// A trusted issuer of software statements (RFC 7591 §2.3): `[[dcr.software_statement_issuers]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementIssuer {
    /// The exact `iss` claim of its statements.
    pub issuer: String,
    /// A JWKS file (`{"keys": [...]}`, public keys only), relative to the configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// The JWKS inline (`jwks = { keys = [ { kty = "EC", ... } ] }`). Exactly one of
    /// `jwks_file` and `jwks` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Signature algorithms accepted from this issuer (`RS256`, `PS256`, `ES256`, `EdDSA`, ...).
    /// `none` and the HMAC algorithms (`HS*`) are refused.
    #[serde(default)]
    pub algorithms: Vec<String>,
}

/// Registration policy: the `[dcr]` section of gateway.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// When false the proxy answers 403 to every registration (carried, not used here).
    pub enabled: bool,
    pub security_mode: SecurityMode,
    /// Largest accepted body; enforced by the proxy before [`check`](super::check) is called.
    pub max_body_bytes: usize,
    /// Time allowed to read the body; enforced by the proxy.
    pub body_read_timeout_ms: u64,
    /// Deepest nesting of JSON containers; the top-level object is depth 1.
    pub max_json_depth: usize,
    pub max_redirect_uris: usize,
    /// Hosts on which `http` redirect URIs are allowed (RFC 8252 §7.3), as written in a URI
    /// (`[::1]` for IPv6). Any port is accepted.
    pub loopback_hosts: Vec<String>,
    /// If non-empty, every `https` redirect URI host must match one of these patterns.
    /// A pattern is an exact host or `*.example.com` (any subdomain depth, not the apex),
    /// case-insensitive, compared with the ASCII (punycode) form of the host.
    pub redirect_host_allow: Vec<String>,
    /// No redirect URI host may match one of these patterns (same syntax as the allow-list).
    pub redirect_host_deny: Vec<String>,
    /// The `token_endpoint_auth_method` values a client may register.
    pub token_endpoint_auth_methods: Vec<String>,
    /// Filled in when a registration has no `token_endpoint_auth_method`. The shipped value,
    /// `client_secret_post`, is Auth0's default; RFC 7591 §2's own default is
    /// `client_secret_basic`.
    pub default_token_endpoint_auth_method: String,
    /// Filled in when a registration has no `grant_types` (RFC 7591 default).
    pub default_grant_types: Vec<String>,
    /// Filled in when a registration has no `response_types`, keeping only the values that
    /// match its grant types (RFC 7591 default).
    pub default_response_types: Vec<String>,
    /// Longest `client_name` (and `client_name#<lang>`), in Unicode scalar values after NFC.
    pub max_client_name_chars: usize,
    /// Names a `client_name` may not contain (case-insensitive, after confusable folding).
    pub reserved_names: Vec<String>,
    /// Unknown members forwarded in strict mode (permissive mode forwards every unknown member).
    pub keep_extension_members: Vec<String>,
    /// Scopes a client may register; `None` allows any scope.
    pub allowed_scopes: Option<Vec<String>>,
    /// The `scope` given to a registration that has none; `None` leaves it absent.
    pub default_scope: Option<String>,
    /// `open`, or `token` (initial access tokens required, RFC 7591 §3).
    pub registration: RegistrationMode,
    /// The initial access token file (`[[token]]` entries, see `crate::tokens`), relative to
    /// the configuration file. Required when `registration = "token"`.
    pub token_file: Option<String>,
    /// Strict mode: allow `'` in client names (O'Reilly). `"` and `` ` `` stay refused.
    pub allow_apostrophe: bool,
    /// Forward the client's `Cookie` header on `dcr`-scope requests (default false: an IdP
    /// session cookie is ambient authority on an API call).
    pub forward_cookie: bool,
    /// In token mode, forward the client's `Authorization` header to the IdP (default: strip
    /// it, the token is the gateway's).
    pub forward_authorization: bool,
    /// Refuse registrations without a `software_statement`.
    pub require_software_statement: bool,
    /// Clock skew allowed when checking a statement's `exp`, `nbf` and `iat`.
    pub software_statement_leeway_seconds: u64,
    /// Trusted statement issuers. Empty (and `require_software_statement` false): statements
    /// are only shape-checked and forwarded for the IdP to judge.
    pub software_statement_issuers: Vec<StatementIssuer>,
}

impl Default for Policy {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Policy {
            enabled: true,
            security_mode: SecurityMode::Strict,
            max_body_bytes: 16384,
            body_read_timeout_ms: 5000,
            max_json_depth: 16,
            max_redirect_uris: 10,
            loopback_hosts: strings(&["127.0.0.1", "[::1]", "localhost"]),
            redirect_host_allow: Vec::new(),
            redirect_host_deny: Vec::new(),
            token_endpoint_auth_methods: strings(&["none", "client_secret_post", "client_secret_basic", "private_key_jwt"]),
            default_token_endpoint_auth_method: "client_secret_post".to_string(),
            default_grant_types: strings(&["authorization_code"]),
            default_response_types: strings(&["code"]),
            max_client_name_chars: 100,
            reserved_names: Vec::new(),
            keep_extension_members: Vec::new(),
            allowed_scopes: None,
            default_scope: None,
            registration: RegistrationMode::Open,
            token_file: None,
            forward_authorization: false,
            forward_cookie: false,
            allow_apostrophe: false,
            require_software_statement: false,
            software_statement_leeway_seconds: 60,
            software_statement_issuers: Vec::new(),
        }
    }
}

/// Largest `software_statement_leeway_seconds`.
const MAX_STATEMENT_LEEWAY_SECONDS: u64 = 3600;

/// serde_json's own nesting limit; deeper documents fail in the parser anyway.
const MAX_JSON_DEPTH_LIMIT: usize = 127;

impl Policy {
    /// Checks the configuration. Each problem names its key as `dcr.<key>`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let mut err = |key: &str, msg: String| errs.push(format!("dcr.{key}: {msg}"));

        if self.max_body_bytes == 0 {
            err("max_body_bytes", "must be at least 1".into());
        }
        if self.body_read_timeout_ms == 0 {
            err("body_read_timeout_ms", "must be at least 1".into());
        }
        if !(4..=MAX_JSON_DEPTH_LIMIT).contains(&self.max_json_depth) {
            err(
                "max_json_depth",
                format!("must be between 4 (a jwks member needs 4) and {MAX_JSON_DEPTH_LIMIT}, got {}", self.max_json_depth),
            );
        }
        if self.max_redirect_uris == 0 {
            err("max_redirect_uris", "must be at least 1".into());
        }
        if self.max_client_name_chars == 0 {
            err("max_client_name_chars", "must be at least 1".into());
        }
        for (i, h) in self.loopback_hosts.iter().enumerate() {
            if !is_loopback_host_literal(h) {
                err(
                    &format!("loopback_hosts[{i}]"),
                    format!("{h:?} is not a loopback host (localhost, *.localhost, 127.0.0.0/8 or [::1])"),
                );
            }
        }
        for (key, list) in [("redirect_host_allow", &self.redirect_host_allow), ("redirect_host_deny", &self.redirect_host_deny)] {
            for (i, p) in list.iter().enumerate() {
                if HostPattern::parse(p).is_none() {
                    err(&format!("{key}[{i}]"), format!("invalid host pattern {p:?}"));
                }
            }
        }

        if self.token_endpoint_auth_methods.is_empty() {
            err("token_endpoint_auth_methods", "must not be empty".into());
        }
        for (i, m) in self.token_endpoint_auth_methods.iter().enumerate() {
            if AuthMethod::parse(m).is_none() {
                err(&format!("token_endpoint_auth_methods[{i}]"), format!("unknown method {m:?}"));
            }
        }
        let default_method = &self.default_token_endpoint_auth_method;
        match AuthMethod::parse(default_method) {
            None => err("default_token_endpoint_auth_method", format!("unknown method {default_method:?}")),
            Some(m) if m.needs_keys() || m == AuthMethod::TlsClientAuth => err(
                "default_token_endpoint_auth_method",
                format!("{default_method:?} needs client-supplied key material and cannot be a default"),
            ),
            Some(_) if !self.token_endpoint_auth_methods.contains(default_method) => err(
                "default_token_endpoint_auth_method",
                format!("{default_method:?} is not in dcr.token_endpoint_auth_methods"),
            ),
            Some(_) => {}
        }

        // Grant and response type defaults must be acceptable in the configured mode.
        let mode = self.security_mode;
        let mut grants = Vec::new();
        if self.default_grant_types.is_empty() {
            err("default_grant_types", "must not be empty".into());
        }
        for (i, g) in self.default_grant_types.iter().enumerate() {
            match GrantType::parse(g) {
                Some(gt) if gt.allowed_in(mode) => grants.push(gt),
                _ => err(&format!("default_grant_types[{i}]"), format!("{g:?} is not allowed in {mode:?} mode")),
            }
        }
        if let Err(msg) = GrantType::check_refresh(&grants, mode) {
            err("default_grant_types", msg);
        }
        for (i, r) in self.default_response_types.iter().enumerate() {
            match ResponseType::parse(r) {
                Some(rt) if rt.allowed_in(mode) => {
                    if let Some(missing) = rt.missing_grant(&grants) {
                        err(&format!("default_response_types[{i}]"), format!("{r:?} needs grant type {missing:?} in dcr.default_grant_types"));
                    }
                }
                _ => err(&format!("default_response_types[{i}]"), format!("{r:?} is not allowed in {mode:?} mode")),
            }
        }

        for (i, n) in self.reserved_names.iter().enumerate() {
            if n.trim().is_empty() {
                err(&format!("reserved_names[{i}]"), "must not be blank".into());
            }
        }
        for (i, m) in self.keep_extension_members.iter().enumerate() {
            if m.is_empty() {
                err(&format!("keep_extension_members[{i}]"), "must not be empty".into());
            } else if is_client_forbidden(m) {
                err(&format!("keep_extension_members[{i}]"), format!("{m:?} is set by the server and is always dropped"));
            } else if is_known_member(m) {
                err(&format!("keep_extension_members[{i}]"), format!("{m:?} is a registered member, not an extension"));
            }
        }
        if let Some(allowed) = &self.allowed_scopes {
            for (i, s) in allowed.iter().enumerate() {
                match parse_scope(s) {
                    Ok(tokens) if tokens.len() == 1 => {}
                    _ => err(&format!("allowed_scopes[{i}]"), format!("{s:?} is not a single scope token")),
                }
            }
        }
        if let Some(def) = &self.default_scope {
            match parse_scope(def) {
                Err(_) => err("default_scope", format!("{def:?} is not a space-separated list of scope tokens")),
                Ok(tokens) => {
                    if let Some(allowed) = &self.allowed_scopes {
                        for t in tokens.iter().filter(|t| !allowed.contains(t)) {
                            err("default_scope", format!("{t:?} is not in dcr.allowed_scopes"));
                        }
                    }
                }
            }
        }

        match (self.registration, self.token_file.as_deref()) {
            (_, Some("")) => err("token_file", "must not be empty".into()),
            (RegistrationMode::Token, None) => err("token_file", "required when dcr.registration = \"token\"".into()),
            _ => {}
        }
        if self.software_statement_leeway_seconds > MAX_STATEMENT_LEEWAY_SECONDS {
            err(
                "software_statement_leeway_seconds",
                format!("must be at most {MAX_STATEMENT_LEEWAY_SECONDS}, got {}", self.software_statement_leeway_seconds),
            );
        }
        if self.require_software_statement && self.software_statement_issuers.is_empty() {
            err("require_software_statement", "needs at least one dcr.software_statement_issuers entry".into());
        }
        for (i, iss) in self.software_statement_issuers.iter().enumerate() {
            for e in super::statement::validate_issuer(iss, &self.software_statement_issuers[..i]) {
                errs.push(format!("dcr.software_statement_issuers[{i}]{e}"));
            }
        }

        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// `localhost`, `*.localhost` names, 127.0.0.0/8, `[::1]`.
fn is_loopback_host_literal(h: &str) -> bool {
    let lower = h.to_ascii_lowercase();
    if lower == "localhost" {
        return true;
    }
    if let Some(label) = lower.strip_suffix(".localhost") {
        return !label.is_empty() && label.split('.').all(is_ldh_label);
    }
    if let Some(inner) = lower.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback() && format!("[{ip}]") == lower);
    }
    lower.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_ldh_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A parsed `redirect_host_allow` / `redirect_host_deny` entry, in ASCII lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    /// `*.suffix`: the stored value is `.suffix`.
    Subdomains(String),
}

impl HostPattern {
    pub(crate) fn parse(p: &str) -> Option<HostPattern> {
        let (wild, rest) = match p.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        if rest.contains('*') || rest.is_empty() {
            return None;
        }
        if let Some(inner) = rest.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let ip: Ipv6Addr = inner.parse().ok()?;
            return (!wild).then(|| HostPattern::Exact(format!("[{ip}]")));
        }
        if rest.parse::<IpAddr>().is_ok() {
            // A bare IPv6 address is not a host as written in a URI.
            return (!wild && rest.parse::<Ipv4Addr>().is_ok()).then(|| HostPattern::Exact(rest.to_string()));
        }
        let ascii = idna::domain_to_ascii_strict(rest).ok()?;
        if ascii.is_empty() || ascii.ends_with('.') {
            return None;
        }
        Some(if wild { HostPattern::Subdomains(format!(".{ascii}")) } else { HostPattern::Exact(ascii) })
    }

    /// `host` is the ASCII lower-case form of a URI host.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// Does `host` (ASCII lower case) match any pattern of `list`? Invalid patterns match nothing
/// ([`Policy::validate`] reports them).
pub(crate) fn matches_any(list: &[String], host: &str) -> bool {
    list.iter().any(|p| {
        // Plain ASCII patterns need no IDNA work per request.
        if p.is_ascii() && !p.contains('[') {
            let p = p.as_bytes();
            let h = host.as_bytes();
            if let Some(suffix) = p.strip_prefix(b"*.") {
                if suffix.contains(&b'*') {
                    return false;
                }
                h.len() > suffix.len() + 1
                    && h[h.len() - suffix.len() - 1] == b'.'
                    && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            } else {
                h.eq_ignore_ascii_case(p)
            }
        } else {
            HostPattern::parse(p).is_some_and(|pat| pat.matches(host))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_as_shipped() {
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert!(p.enabled);
        assert_eq!(p.security_mode, SecurityMode::Strict);
        assert_eq!((p.max_body_bytes, p.body_read_timeout_ms, p.max_json_depth, p.max_redirect_uris), (16384, 5000, 16, 10));
        assert_eq!(p.default_token_endpoint_auth_method, "client_secret_post");
        assert_eq!(p.loopback_hosts, ["127.0.0.1", "[::1]", "localhost"]);
        assert_eq!(p.allowed_scopes, None);
    }

    #[test]
    fn serde_names_and_defaults() {
        let p: Policy = serde_json::from_str(r#"{"security_mode":"permissive","max_redirect_uris":3}"#).unwrap();
        assert_eq!(p.security_mode, SecurityMode::Permissive);
        assert_eq!(p.max_redirect_uris, 3);
        assert_eq!(p.max_json_depth, 16);
        assert!(serde_json::from_str::<Policy>(r#"{"bogus":1}"#).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"security_mode":"lax"}"#).is_err());
        let back: Policy = serde_json::from_value(serde_json::to_value(Policy::default()).unwrap()).unwrap();
        assert_eq!(back, Policy::default());
        assert_eq!(serde_json::to_value(SecurityMode::Strict).unwrap(), "strict");
    }

    #[test]
    fn validate_names_the_key() {
        let p = Policy {
            max_json_depth: 1,
            max_redirect_uris: 0,
            loopback_hosts: vec!["127.0.0.1".into(), "example.com".into()],
            redirect_host_allow: vec!["example.com".into(), "*.*".into()],
            redirect_host_deny: vec!["a*.example.com".into()],
            token_endpoint_auth_methods: vec!["none".into(), "magic".into()],
            default_token_endpoint_auth_method: "client_secret_basic".into(),
            default_grant_types: vec!["implicit".into()],
            default_response_types: vec!["code".into()],
            keep_extension_members: vec!["client_secret".into(), "client_name".into(), "x_ok".into()],
            allowed_scopes: Some(vec!["openid".into(), "a b".into()]),
            default_scope: Some("openid email".into()),
            reserved_names: vec![" ".into()],
            ..Policy::default()
        };
        let errs = p.validate().unwrap_err();
        let want = [
            "dcr.max_json_depth:",
            "dcr.max_redirect_uris:",
            "dcr.loopback_hosts[1]:",
            "dcr.redirect_host_allow[1]: invalid host pattern \"*.*\"",
            "dcr.redirect_host_deny[0]:",
            "dcr.token_endpoint_auth_methods[1]:",
            "dcr.default_token_endpoint_auth_method:",
            "dcr.default_grant_types[0]:",
            "dcr.default_response_types[0]:",
            "dcr.reserved_names[0]:",
            "dcr.keep_extension_members[0]:",
            "dcr.keep_extension_members[1]:",
            "dcr.allowed_scopes[1]:",
            "dcr.default_scope: \"email\"",
        ];
        for w in want {
            assert!(errs.iter().any(|e| e.starts_with(w)), "missing {w:?} in {errs:#?}");
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn validate_rejects_key_needing_default_method() {
        let p = Policy { default_token_endpoint_auth_method: "private_key_jwt".into(), ..Policy::default() };
        assert!(p.validate().unwrap_err()[0].starts_with("dcr.default_token_endpoint_auth_method:"));
        let p = Policy { security_mode: SecurityMode::Permissive, default_grant_types: vec!["refresh_token".into()], default_response_types: vec![], ..Policy::default() };
        assert!(p.validate().unwrap_err()[0].starts_with("dcr.default_grant_types:"));
    }

    #[test]
    fn host_patterns() {
        let ok = |p: &str, h: &str| matches_any(&[p.to_string()], h);
        assert!(ok("example.com", "example.com"));
        assert!(ok("EXAMPLE.com", "example.com"));
        assert!(!ok("example.com", "a.example.com"));
        assert!(ok("*.example.com", "a.example.com"));
        assert!(ok("*.example.com", "a.b.example.com"));
        assert!(!ok("*.example.com", "example.com"));
        assert!(!ok("*.example.com", "badexample.com"));
        assert!(ok("bücher.example", "xn--bcher-kva.example"));
        assert!(ok("*.bücher.example", "a.xn--bcher-kva.example"));
        assert!(ok("[::1]", "[::1]"));
        assert!(!ok("*.*", "a.b"));
        for bad in ["*", "*.*", "a*.com", "*.", "", "[::1", "*.[::1]", "::1", "*.127.0.0.1"] {
            assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
        }
        assert!(is_loopback_host_literal("127.0.0.2"));
        assert!(is_loopback_host_literal("app.localhost"));
        assert!(!is_loopback_host_literal("10.0.0.1"));
        assert!(!is_loopback_host_literal("[::2]"));
    }
}
