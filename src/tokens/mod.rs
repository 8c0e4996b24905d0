//! Bearer tokens the gateway itself checks: initial access tokens for closed registration
//! (RFC 7591 §3, `[dcr] registration = "token"`) and admin API tokens.
//!
//! Pure: no I/O (the `token` CLI reads and writes the files). Only SHA-256 digests of tokens
//! are stored; a presented token is hashed and looked up by digest, and the digest is then
//! compared in constant time. Nothing in this module prints a token: `Debug`/`Display` of
//! [`TokenEntry`] show the label and a hash prefix, [`TokenError`] shows fixed reasons.
//!
//! - [`set`]: the token file (`[[token]]` entries), [`TokenSet`], [`PolicyOverrides`].
//! - [`counter`]: [`UseCounter`] and [`UseLease`], the per-process `max_uses` accounting.
//!
//! The file format and the wiring are documented in `docs/tokens-and-statements.md`.

mod counter;
mod pins;
mod set;

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use counter::{UseCounter, UseLease};
pub use pins::ClientPins;
pub use set::{PolicyOverrides, TokenEntry, TokenSet};

/// Prefix of generated initial access tokens (greppable by secret scanners).
pub const INITIAL_ACCESS_TOKEN_PREFIX: &str = "dcrgw_iat_";
/// Prefix of generated admin tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "dcrgw_adm_";

/// The scopes an admin token may carry (the admin API's permissions).
pub const ADMIN_SCOPES: [&str; 8] = [
    "read:clients",
    "delete:clients",
    "read:network_acls",
    "create:network_acls",
    "update:network_acls",
    "delete:network_acls",
    "read:tenant_settings",
    "update:tenant_settings",
];

/// Longest bearer token accepted (generated ones are 53 characters).
const MAX_TOKEN_LEN: usize = 512;

/// Why a bearer token was not accepted. `Display` never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenError {
    /// No `Authorization` header, or one with another scheme (RFC 6750 §3.1: no error code).
    Missing,
    /// `Bearer` without a well-formed token (RFC 6750 `invalid_request`).
    Malformed,
    /// Not a token of the set (`invalid_token`).
    Unknown,
    /// Past its `expires_at` (`invalid_token`).
    Expired,
    /// Its `max_uses` are used up (`invalid_token`).
    Exhausted,
}

impl TokenError {
    /// The RFC 6750 §3.1 error code, if any.
    pub fn oauth_error(self) -> Option<&'static str> {
        match self {
            TokenError::Missing => None,
            TokenError::Malformed => Some("invalid_request"),
            TokenError::Unknown | TokenError::Expired | TokenError::Exhausted => Some("invalid_token"),
        }
    }

    /// A short reason, safe for logs and `error_description`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Missing => "a bearer token is required",
            TokenError::Malformed => "malformed bearer token",
            TokenError::Unknown => "unknown token",
            TokenError::Expired => "token expired",
            TokenError::Exhausted => "token use limit reached",
        }
    }

    /// The `WWW-Authenticate` value of the 401 answer (RFC 6750 §3).
    pub fn www_authenticate(self) -> String {
        match self.oauth_error() {
            None => "Bearer".to_string(),
            Some(code) => format!("Bearer error=\"{code}\", error_description=\"{}\"", self.as_str()),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TokenError {}

/// The token of an `Authorization: Bearer <token>` header value (RFC 6750 §2.1): the scheme
/// is case-insensitive, one or more spaces may follow it, surrounding whitespace is ignored,
/// and the token must be a non-empty `b64token` (`A-Z a-z 0-9 - . _ ~ + /`, then `=`s).
/// No header or another scheme (`Basic ...`) is [`TokenError::Missing`].
pub fn bearer(authorization: Option<&str>) -> Result<&str, TokenError> {
    let value = authorization.ok_or(TokenError::Missing)?.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !is_b64token(token) {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Lower-case hex SHA-256 of the token: what the token file stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest(token))
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: 32 bytes from the OS random generator, base64url without padding, prefixed
/// `dcrgw_adm_` (admin) or `dcrgw_iat_` (initial access token).
pub fn generate_token(admin: bool) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let prefix = if admin { ADMIN_TOKEN_PREFIX } else { INITIAL_ACCESS_TOKEN_PREFIX };
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A token label: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_label(label: &str) -> bool {
    (1..=64).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests;
