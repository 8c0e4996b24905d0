//! [`Policy::validate`]: the checks of the `[dcr]` configuration section. They reuse the
//! rules below them (grant and response types, host patterns, scope syntax, the member table,
//! statement issuers), so they live here, above those rules, and not beside [`Policy`].

use super::catalogue::{find, PRESET_PREFIX};
use super::host::{is_loopback_host_literal, HostPattern};
use super::normalize::parse_scope;
use super::policy::Policy;
use super::statement::validate_issuer;
use super::uri::{is_rfc3986_scheme, REFUSED_REDIRECT_SCHEMES};
use super::validate::{is_client_forbidden, is_known_member};
use super::vocab::{AuthMethod, GrantType, RegistrationMode, ResponseType};

/// Largest `software_statement_leeway_seconds`.
const MAX_STATEMENT_LEEWAY_SECONDS: u64 = 3600;

/// Longest `resolve_metadata_timeout_ms`: a registration waits this long at most.
const MAX_RESOLVE_TIMEOUT_MS: u64 = 30_000;

/// serde_json's own nesting limit; deeper documents fail in the parser anyway.
const MAX_JSON_DEPTH_LIMIT: usize = 127;

/// A `[dcr]` configuration problem: the key below `dcr.` and what is wrong with it. Typed, so
/// the configuration loader and the tenant-settings API place it without parsing text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// `default_scope`, `allowed_scopes[2]`, `software_statement_issuers[0].jwks.keys[1]`, ...
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dcr.{}: {}", self.key, self.message)
    }
}

impl Policy {
    /// Checks the configuration. Each problem names its key as `dcr.<key>`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        self.check().map_err(|errs| errs.iter().map(ToString::to_string).collect())
    }

    /// [`Policy::validate`], typed.
    pub fn check(&self) -> Result<(), Vec<PolicyError>> {
        let mut errs = Vec::new();
        let mut err = |key: &str, msg: String| errs.push(PolicyError { key: key.to_string(), message: msg });

        if !(1..=MAX_RESOLVE_TIMEOUT_MS).contains(&self.resolve_metadata_timeout_ms) {
            err(
                "resolve_metadata_timeout_ms",
                format!("must be between 1 and {MAX_RESOLVE_TIMEOUT_MS}, got {}", self.resolve_metadata_timeout_ms),
            );
        }
        if self.max_body_bytes == 0 {
            err("max_body_bytes", "must be at least 1".into());
        }
        if self.body_read_timeout_ms == 0 {
            err("body_read_timeout_ms", "must be at least 1".into());
        }
        if !(4..=MAX_JSON_DEPTH_LIMIT).contains(&self.max_json_depth) {
            err(
                "max_json_depth",
                format!(
                    "must be between 4 (a jwks member needs 4) and {MAX_JSON_DEPTH_LIMIT}, got {}",
                    self.max_json_depth
                ),
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
        for (key, list) in
            [("redirect_host_allow", &self.redirect_host_allow), ("redirect_host_deny", &self.redirect_host_deny)]
        {
            for (i, p) in list.iter().enumerate() {
                if let Some(id) = p.strip_prefix(PRESET_PREFIX) {
                    if key != "redirect_host_allow" || find(id).is_none_or(|c| c.https_hosts().next().is_none()) {
                        err(
                            &format!("{key}[{i}]"),
                            format!("{p:?}: not a catalogue entry with https redirect hosts (conf/known-clients.toml)"),
                        );
                    }
                } else if HostPattern::parse(p).is_none() {
                    err(&format!("{key}[{i}]"), format!("invalid host pattern {p:?}"));
                }
            }
        }
        for (key, list) in [
            ("redirect_scheme_allow", &self.redirect_scheme_allow),
            ("redirect_scheme_deny", &self.redirect_scheme_deny),
        ] {
            for (i, s) in list.iter().enumerate() {
                let lower = s.to_ascii_lowercase();
                let problem = if !is_rfc3986_scheme(s) {
                    Some(format!("{s:?} is not a URI scheme (a letter, then letters, digits, '+', '-', '.'; no ':')"))
                } else if lower == "http" || lower == "https" {
                    Some(format!(
                        "{s:?}: http and https redirect URIs are governed by loopback_hosts and redirect_host_allow / _deny"
                    ))
                } else if key == "redirect_scheme_allow" && REFUSED_REDIRECT_SCHEMES.contains(&lower.as_str()) {
                    Some(format!("{s:?} is always refused and cannot be allowed"))
                } else if key == "redirect_scheme_allow"
                    && self.redirect_scheme_deny.iter().any(|d| d.eq_ignore_ascii_case(s))
                {
                    Some(format!("{s:?} is also in dcr.redirect_scheme_deny"))
                } else if lower.len() < 2 {
                    Some(format!("{s:?} reads as a drive letter and is always refused"))
                } else {
                    None
                };
                if let Some(msg) = problem {
                    err(&format!("{key}[{i}]"), msg);
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
                        err(
                            &format!("default_response_types[{i}]"),
                            format!("{r:?} needs grant type {missing:?} in dcr.default_grant_types"),
                        );
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
                err(
                    &format!("keep_extension_members[{i}]"),
                    format!("{m:?} is set by the server and is always dropped"),
                );
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
                format!(
                    "must be at most {MAX_STATEMENT_LEEWAY_SECONDS}, got {}",
                    self.software_statement_leeway_seconds
                ),
            );
        }
        if self.require_software_statement && self.software_statement_issuers.is_empty() {
            err("require_software_statement", "needs at least one dcr.software_statement_issuers entry".into());
        }
        for (i, iss) in self.software_statement_issuers.iter().enumerate() {
            for e in validate_issuer(iss, &self.software_statement_issuers[..i]) {
                // `validate_issuer` says `<suffix>: <message>` (suffix `.jwks.keys[0]` or empty).
                let (suffix, message) = e.split_once(": ").unwrap_or(("", e.as_str()));
                errs.push(PolicyError {
                    key: format!("software_statement_issuers[{i}]{suffix}"),
                    message: message.to_string(),
                });
            }
        }

        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcr::SecurityMode;

    #[test]
    fn default_policy_is_valid_and_as_shipped() {
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert!(p.enabled);
        assert_eq!(p.security_mode, SecurityMode::Strict);
        assert_eq!(
            (p.max_body_bytes, p.body_read_timeout_ms, p.max_json_depth, p.max_redirect_uris),
            (16384, 5000, 16, 10)
        );
        assert_eq!(p.default_token_endpoint_auth_method, "client_secret_post");
        assert_eq!(p.loopback_hosts, ["127.0.0.1", "[::1]", "localhost"]);
        assert_eq!(p.allowed_scopes, None);
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
            redirect_scheme_allow: vec![
                "cursor".into(),
                "javascript".into(),
                "https".into(),
                "my app".into(),
                "x".into(),
                "vscode".into(),
            ],
            redirect_scheme_deny: vec!["vscode".into(), "ok-scheme".into(), "1bad".into()],
            ..Policy::default()
        };
        let errs = p.validate().unwrap_err();
        let want = [
            "dcr.max_json_depth:",
            "dcr.max_redirect_uris:",
            "dcr.loopback_hosts[1]:",
            "dcr.redirect_host_allow[1]: invalid host pattern \"*.*\"",
            "dcr.redirect_host_deny[0]:",
            "dcr.redirect_scheme_allow[1]: \"javascript\" is always refused",
            "dcr.redirect_scheme_allow[2]: \"https\": http and https",
            "dcr.redirect_scheme_allow[3]: \"my app\" is not a URI scheme",
            "dcr.redirect_scheme_allow[4]: \"x\" reads as a drive letter",
            "dcr.redirect_scheme_allow[5]: \"vscode\" is also in dcr.redirect_scheme_deny",
            "dcr.redirect_scheme_deny[2]: \"1bad\" is not a URI scheme",
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
        let p = Policy {
            security_mode: SecurityMode::Permissive,
            default_grant_types: vec!["refresh_token".into()],
            default_response_types: vec![],
            ..Policy::default()
        };
        assert!(p.validate().unwrap_err()[0].starts_with("dcr.default_grant_types:"));
    }
}
