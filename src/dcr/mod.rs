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
//! 4. [`json`]: the strict JSON reader (duplicates, depth, UTF-8, trailing data).
//! 5. [`policy`]: [`Policy`], the `[dcr]` configuration section, and its defaults.
//! 6. [`uri`]: redirect URI and https metadata URI checks, registrable domains.
//! 7. [`normalize`]: human text, scope strings, language tags, email addresses.
//! 8. [`validate`]: the member table and the rules between members.
//! 9. [`statement`]: software statement verification (RFC 7591 §2.3), [`StatementVerifier`].
//! 10. [`policy_check`]: [`Policy::validate`], the configuration checks, which reuse the rules
//!     above.
//! 11. [`pipeline`]: the entry points [`check`], [`check_with`] and [`check_update_with`].

// Declared in alphabetical order (as rustfmt keeps them); the reading order is the list above.
mod error;
mod host;
mod json;
mod normalize;
mod pipeline;
mod policy;
mod policy_check;
mod statement;
mod uri;
mod validate;
mod vocab;

#[cfg(test)]
mod layering;
#[cfg(test)]
mod tests;

pub use error::{ErrorCode, RegistrationError};
pub use pipeline::{check, check_update_with, check_with};
pub use policy::{Policy, StatementIssuer};
pub use policy_check::PolicyError;
pub use statement::StatementVerifier;
pub use vocab::{Normalized, RegistrationMode, SecurityMode};
