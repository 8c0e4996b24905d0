//! Validation and normalization of OAuth Dynamic Client Registration requests (RFC 7591,
//! OpenID Connect DCR 1.0, RFC 8252, RFC 9700).
//!
//! Pure: no I/O, no async. [`check`] takes the raw request body and the `[dcr]` policy and
//! returns either the normalized registration to forward to the IdP or the RFC 7591 §3.2.2
//! error to answer with. The rules are documented in `docs/dcr-validation.md`.
//!
//! - [`json`]: the strict JSON reader (duplicates, depth, UTF-8, trailing data).
//! - [`policy`]: [`Policy`], the `[dcr]` configuration section, and host patterns.
//! - [`uri`]: redirect URI and https metadata URI checks, registrable domains.
//! - [`normalize`]: human text, scope strings, response types, language tags.
//! - [`validate`]: the member table and the rules between members.
//! - [`statement`]: software statement verification (RFC 7591 §2.3) and [`check_with`].

mod error;
mod json;
mod normalize;
mod policy;
mod statement;
mod uri;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ErrorCode, RegistrationError};
pub use policy::{Policy, RegistrationMode, SecurityMode, StatementIssuer};
pub use statement::{check_update_with, check_with, StatementVerifier};

/// A registration that passed [`check`].
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

/// Validates and normalizes a registration request body.
///
/// The body size (`max_body_bytes`) is the proxy's to enforce before calling this.
/// Normalization is idempotent: checking `Normalized::body` again yields the same body.
///
/// Software statements are not verified without a [`StatementVerifier`]: this is
/// [`check_with`] with [`StatementVerifier::empty`], so a policy that names trusted issuers
/// refuses every statement here (`unapproved_software_statement`), and one that names none
/// forwards statements after a shape check.
pub fn check(body: &[u8], policy: &Policy) -> Result<Normalized, RegistrationError> {
    check_with(body, policy, &StatementVerifier::empty())
}
