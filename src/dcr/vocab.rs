//! The vocabulary every other part of `dcr` speaks: security and registration modes, grant
//! types, authentication methods, response types, what is being checked ([`Kind`]) and what a
//! check returns ([`Normalized`]). Imports nothing else from `dcr`.

use serde::{Deserialize, Serialize};

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

/// Grant types this module can accept (in some mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantType {
    AuthorizationCode,
    RefreshToken,
    Implicit,
    ClientCredentials,
    DeviceCode,
}

impl GrantType {
    pub(crate) fn parse(s: &str) -> Option<GrantType> {
        Some(match s {
            "authorization_code" => GrantType::AuthorizationCode,
            "refresh_token" => GrantType::RefreshToken,
            "implicit" => GrantType::Implicit,
            "client_credentials" => GrantType::ClientCredentials,
            "urn:ietf:params:oauth:grant-type:device_code" => GrantType::DeviceCode,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::Implicit => "implicit",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
        }
    }

    pub(crate) fn allowed_in(self, mode: SecurityMode) -> bool {
        mode == SecurityMode::Permissive || matches!(self, GrantType::AuthorizationCode | GrantType::RefreshToken)
    }

    /// Uses the authorization endpoint and so needs redirect URIs.
    pub(crate) fn is_redirect_based(self) -> bool {
        matches!(self, GrantType::AuthorizationCode | GrantType::Implicit)
    }

    /// `refresh_token` needs a grant that issues refresh tokens to a user's client:
    /// `authorization_code` (strict), or `authorization_code` / device_code (permissive).
    pub(crate) fn check_refresh(grants: &[GrantType], mode: SecurityMode) -> std::result::Result<(), String> {
        if !grants.contains(&GrantType::RefreshToken) || grants.contains(&GrantType::AuthorizationCode) {
            return Ok(());
        }
        match mode {
            SecurityMode::Permissive if grants.contains(&GrantType::DeviceCode) => Ok(()),
            SecurityMode::Permissive => Err(
                "\"refresh_token\" requires \"authorization_code\" or \"urn:ietf:params:oauth:grant-type:device_code\""
                    .into(),
            ),
            SecurityMode::Strict => Err("\"refresh_token\" requires \"authorization_code\"".into()),
        }
    }
}

/// `token_endpoint_auth_method` values (RFC 7591 §2, OIDC Core §9, RFC 8705 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    None,
    ClientSecretPost,
    ClientSecretBasic,
    ClientSecretJwt,
    PrivateKeyJwt,
    TlsClientAuth,
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    pub(crate) fn parse(s: &str) -> Option<AuthMethod> {
        Some(match s {
            "none" => AuthMethod::None,
            "client_secret_post" => AuthMethod::ClientSecretPost,
            "client_secret_basic" => AuthMethod::ClientSecretBasic,
            "client_secret_jwt" => AuthMethod::ClientSecretJwt,
            "private_key_jwt" => AuthMethod::PrivateKeyJwt,
            "tls_client_auth" => AuthMethod::TlsClientAuth,
            "self_signed_tls_client_auth" => AuthMethod::SelfSignedTlsClientAuth,
            _ => return None,
        })
    }

    /// Needs the client's public keys (`jwks` or `jwks_uri`).
    pub(crate) fn needs_keys(self) -> bool {
        matches!(self, AuthMethod::PrivateKeyJwt | AuthMethod::SelfSignedTlsClientAuth)
    }
}

/// A `response_types` entry as a set of OAuth response type values (order-insensitive, per
/// OAuth 2.0 Multiple Response Type Encoding Practices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseType(u8);

impl ResponseType {
    const CODE: u8 = 1;
    const TOKEN: u8 = 2;
    const ID_TOKEN: u8 = 4;
    const NONE: u8 = 8;

    /// Parses a space-separated response type; `None` for unknown or repeated values.
    pub(crate) fn parse(s: &str) -> Option<ResponseType> {
        let mut bits = 0u8;
        for tok in s.split(' ').filter(|t| !t.is_empty()) {
            let b = match tok {
                "code" => Self::CODE,
                "token" => Self::TOKEN,
                "id_token" => Self::ID_TOKEN,
                "none" => Self::NONE,
                _ => return None,
            };
            if bits & b != 0 {
                return None;
            }
            bits |= b;
        }
        (bits != 0).then_some(ResponseType(bits))
    }

    /// Strict: `code` only. Permissive: also the implicit and hybrid combinations of `code`,
    /// `token` and `id_token`. `none` (and any combination with it) is refused in both
    /// modes: it issues no credential and has no grant type in RFC 7591 §2.1 / OIDC DCR §2.
    pub(crate) fn allowed_in(self, mode: SecurityMode) -> bool {
        match mode {
            SecurityMode::Strict => self.0 == Self::CODE,
            SecurityMode::Permissive => self.0 & Self::NONE == 0,
        }
    }

    pub(crate) fn has_code(self) -> bool {
        self.0 & Self::CODE != 0
    }

    /// Returns anything from the authorization endpoint's front channel (`token`/`id_token`).
    pub(crate) fn is_implicit(self) -> bool {
        self.0 & (Self::TOKEN | Self::ID_TOKEN) != 0
    }

    /// RFC 7591 §2.1: `code` needs `authorization_code`; `token`/`id_token` need `implicit`.
    pub(crate) fn missing_grant(self, grants: &[GrantType]) -> Option<&'static str> {
        if self.has_code() && !grants.contains(&GrantType::AuthorizationCode) {
            return Some(GrantType::AuthorizationCode.as_str());
        }
        if self.is_implicit() && !grants.contains(&GrantType::Implicit) {
            return Some(GrantType::Implicit.as_str());
        }
        None
    }

    /// The canonical spelling: the values in the order `code id_token token`.
    pub(crate) fn canonical(self) -> String {
        self.canonical_str().to_string()
    }

    /// [`Self::canonical`], from a table indexed by the bits.
    pub(crate) fn canonical_str(self) -> &'static str {
        const SPELLINGS: [&str; 16] = [
            "",
            "code",
            "token",
            "code token",
            "id_token",
            "code id_token",
            "id_token token",
            "code id_token token",
            "none",
            "code none",
            "token none",
            "code token none",
            "id_token none",
            "code id_token none",
            "id_token token none",
            "code id_token token none",
        ];
        SPELLINGS[usize::from(self.0 & 15)]
    }

    /// The spelling [`Self::canonical_str`] tabulates, built part by part.
    #[cfg(test)]
    fn canonical_built(self) -> String {
        let mut parts = Vec::new();
        if self.0 & Self::CODE != 0 {
            parts.push("code");
        }
        if self.0 & Self::ID_TOKEN != 0 {
            parts.push("id_token");
        }
        if self.0 & Self::TOKEN != 0 {
            parts.push("token");
        }
        if self.0 & Self::NONE != 0 {
            parts.push("none");
        }
        parts.join(" ")
    }
}

/// What the document is: a new registration gets the policy's defaults for absent members;
/// an RFC 7592 update is the whole client as the client wants it (§2.2), checked with the
/// same rules but forwarded without defaults filled in (the IdP applies its own; filling in
/// ours changed public clients into confidential ones and dropped their refresh grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Registration,
    Update,
}

/// A registration that passed [`check`](super::check).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The normalized registration.
    pub document: serde_json::Map<String, serde_json::Value>,
    /// `serde_json::to_vec(&document)`: exactly what is forwarded to the IdP.
    pub body: Vec<u8>,
    /// The (normalized) `client_name`, else the first `client_name#<lang>`, for the audit log.
    pub client_name: Option<String>,
    /// ASCII hosts of the redirect URIs, first occurrence order, for the audit log
    /// (private-use scheme URIs have none).
    pub redirect_hosts: Vec<String>,
    /// Names of the members removed: unknown members in strict mode (unless listed in
    /// `keep_extension_members`) and, in both modes, the members only the server may set
    /// (`client_id`, `client_secret`, ...). Names only, never values.
    pub dropped_members: Vec<String>,
    /// Scope tokens removed in permissive mode because they are not in `allowed_scopes`.
    pub removed_scopes: Vec<String>,
    /// The trusted issuer whose software statement was verified and merged, for the audit log.
    pub software_statement_issuer: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_types() {
        let rt = |s| ResponseType::parse(s);
        assert_eq!(rt("code").map(|r| r.canonical()), Some("code".into()));
        assert_eq!(rt("token id_token code").map(|r| r.canonical()), Some("code id_token token".into()));
        assert_eq!(rt("code code"), None);
        assert_eq!(rt(""), None);
        assert_eq!(rt("device"), None);
        assert!(rt("code").unwrap().allowed_in(SecurityMode::Strict));
        assert!(!rt("token").unwrap().allowed_in(SecurityMode::Strict));
        assert!(rt("code id_token").unwrap().allowed_in(SecurityMode::Permissive));
        assert!(!rt("none").unwrap().allowed_in(SecurityMode::Permissive));
        for bits in 1..16u8 {
            assert_eq!(ResponseType(bits).canonical(), ResponseType(bits).canonical_built(), "{bits}");
        }
    }
}
