//! Validation and normalization of OAuth Dynamic Client Registration requests (RFC 7591,
//! OpenID Connect DCR 1.0, RFC 8252, RFC 9700).
//!
//! Pure: no I/O, no async. [`check`] takes the raw request body and the `[dcr]` policy and
//! returns either the normalized registration to forward to the IdP or the RFC 7591 §3.2.2
//! error to answer with. The rules are documented in `docs/dcr-validation.md`.
//!
//! The modules, in reading order. Each imports (`use super::…`) only modules above it, never
//! this root's re-exports, so there is no cycle (`layering.rs` checks this list against the
//! code):
//!
//! 1. [`error`]: [`ErrorCode`] and [`RegistrationError`], the §3.2.2 error response.
//! 2. [`vocab`]: the shared vocabulary: [`SecurityMode`], [`RegistrationMode`], grant types,
//!    authentication methods, response types, [`Normalized`].
//! 3. [`host`]: host patterns (`redirect_host_allow` / `_deny`) and loopback host literals.
//! 4. [`special_use`]: special-use IP ranges (RFC 6890) and domain names, shared with the
//!    outbound fetcher.
//! 5. [`catalogue`]: the known MCP clients (`conf/known-clients.toml`): impersonation,
//!    `known:<id>` presets, the `known_client` label, hosted clients' rate-limit key.
//! 6. [`json`]: the strict JSON reader (duplicates, depth, UTF-8, trailing data).
//! 7. [`policy`]: [`Policy`], the `[dcr]` configuration section, and its defaults.
//! 8. [`uri`]: redirect URI and https metadata URI checks, registrable domains (Public Suffix
//!    List), confusable host labels.
//! 9. [`normalize`]: human text, scope strings, language tags, email addresses.
//! 10. [`screen`]: rules on the whole registration: URIs the IdP fetches (SSRF),
//!     `application_type`, impersonation of catalogued clients.
//! 11. [`validate`]: the member table and the rules between members.
//! 12. [`statement`]: software statement verification (RFC 7591 §2.3), [`StatementVerifier`].
//! 13. [`policy_check`]: [`Policy::validate`], the configuration checks, which reuse the rules
//!     above.
//! 14. [`pipeline`]: the entry points [`check`], [`check_with`] and [`check_update_with`].

// Declared in alphabetical order (as rustfmt keeps them); the reading order is the list above.
pub mod catalogue;
mod error;
mod host;
mod json;
mod normalize;
mod pipeline;
mod policy;
mod policy_check;
pub mod screen;
pub mod special_use;
mod statement;
mod uri;
mod validate;
mod vocab;

#[cfg(test)]
mod layering;
#[cfg(test)]
mod tests;

pub use error::{ErrorCode, RegistrationError};
/// The strict JSON object reader of registration payloads (duplicate members refused), for other
/// documents judged like one (Client ID Metadata Documents).
pub(crate) use json::read_object;
pub use pipeline::{check, check_update_with, check_with};
pub use policy::{Policy, StatementIssuer};
pub use policy_check::PolicyError;
pub use statement::StatementVerifier;
pub use vocab::{Normalized, RegistrationMode, SecurityMode};

/// Does `host` (ASCII lower case) match one of the host patterns (`example.com`,
/// `*.example.com`) of `list`? The `redirect_host_allow` syntax, for other lists of hosts
/// (`[cimd] host_allow`).
pub fn host_matches_any(list: &[String], host: &str) -> bool {
    host::matches_any(list, host)
}

/// Is `p` a valid host pattern (`example.com`, `*.example.com`, an IP literal)?
pub fn is_host_pattern(p: &str) -> bool {
    host::HostPattern::parse(p).is_some()
}

/// A host pattern in the form it is compared in: `example.com` or `*.example.com`, ASCII lower
/// case (IDNA applied), IPv6 literals in brackets; `None` when `p` is not a valid pattern. The
/// ACL's `client_id_hosts` indexes patterns in this form.
pub fn canonical_host_pattern(p: &str) -> Option<String> {
    match host::HostPattern::parse(p)? {
        host::HostPattern::Exact(h) => Some(h),
        host::HostPattern::Subdomains(suffix) => Some(format!("*{suffix}")),
    }
}
