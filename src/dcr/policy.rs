//! The `[dcr]` section of gateway.toml: [`Policy`] and [`StatementIssuer`], with their
//! defaults. [`Policy::validate`] lives in `policy_check.rs`, above the rules it reuses.

use serde::{Deserialize, Serialize};

use super::vocab::{RegistrationMode, SecurityMode};

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
    /// If non-empty, a private-use redirect URI (RFC 8252 §7.1: any scheme but `http` and
    /// `https`) must use one of these schemes (case-insensitive, `cursor`, `vscode`,
    /// `com.example.app`). Empty: any scheme the built-in rules admit.
    pub redirect_scheme_allow: Vec<String>,
    /// Private-use schemes refused, on top of the built-in list (`javascript`, `data`,
    /// `file`, browser-internal and network schemes, see `docs/dcr-validation.md`).
    pub redirect_scheme_deny: Vec<String>,
    /// The `token_endpoint_auth_method` values a client may register. Default: Auth0's,
    /// `none` and `client_secret_post`.
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
    /// MCP 2026-07-28: refuse registrations without `application_type`, and check it against
    /// the redirect URIs (`web`: https on non-loopback hosts only).
    pub require_application_type: bool,
    /// Resolve the hosts of the URIs the IdP will fetch (`jwks_uri`, `logo_uri`, ...) through
    /// the outbound fetcher's resolver and refuse names that resolve to special-use addresses
    /// or do not resolve (the literal addresses are refused in strict mode without it), in
    /// either security mode. Applied by the proxy after the payload check
    /// (`fetch::metadata`).
    pub resolve_metadata_uris: bool,
    /// Time allowed to resolve all of one registration's hosts (default 2000 ms); a host not
    /// resolved by then refuses the registration.
    pub resolve_metadata_timeout_ms: u64,
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
            redirect_scheme_allow: Vec::new(),
            redirect_scheme_deny: Vec::new(),
            // Auth0's (its DCR accepts `none` and `client_secret_post`); `client_secret_basic`
            // and `private_key_jwt` are a configuration away (`[dcr] token_endpoint_auth_methods`).
            token_endpoint_auth_methods: strings(&["none", "client_secret_post"]),
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
            require_application_type: false,
            resolve_metadata_uris: false,
            resolve_metadata_timeout_ms: 2000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
