//! The entry points: read the body strictly, verify and merge a software statement when the
//! policy asks for it, then run the member rules. [`check`], [`check_with`] and
//! [`check_update_with`] are re-exported as `crate::dcr::{check, check_with, ...}`.

use std::time::SystemTime;

use serde_json::Value;

use super::error::{ErrorCode, RegistrationError};
use super::json;
use super::policy::Policy;
use super::statement::StatementVerifier;
use super::validate;
use super::vocab::{Kind, Normalized};

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

/// [`check`] with software statement verification (RFC 7591 §2.3): a statement from a
/// trusted issuer is verified and its claims are merged over the plain members before the
/// member rules run.
pub fn check_with(
    body: &[u8],
    policy: &Policy,
    statements: &StatementVerifier,
) -> Result<Normalized, RegistrationError> {
    check_at(body, policy, statements, SystemTime::now(), Kind::Registration)
}

/// [`check_with`] for an RFC 7592 client update (PUT): the same rules, no registration
/// defaults filled in.
pub fn check_update_with(
    body: &[u8],
    policy: &Policy,
    statements: &StatementVerifier,
) -> Result<Normalized, RegistrationError> {
    check_at(body, policy, statements, SystemTime::now(), Kind::Update)
}

/// Whether statements are verified at all: when the policy or the verifier names an issuer,
/// or statements are required. Otherwise they are shape-checked and forwarded unverified.
fn verifying(policy: &Policy, statements: &StatementVerifier) -> bool {
    !statements.is_empty() || !policy.software_statement_issuers.is_empty() || policy.require_software_statement
}

/// [`check_with`] / [`check_update_with`] at a given time.
pub(crate) fn check_at(
    body: &[u8],
    policy: &Policy,
    statements: &StatementVerifier,
    now: SystemTime,
    kind: Kind,
) -> Result<Normalized, RegistrationError> {
    let mut input = json::read_object(body, policy.max_json_depth)?;
    let mut issuer = None;
    if verifying(policy, statements) {
        match input.get("software_statement") {
            None | Some(Value::Null) => {
                if policy.require_software_statement {
                    return Err(RegistrationError::new(
                        ErrorCode::InvalidSoftwareStatement,
                        "software_statement: required".into(),
                    ));
                }
            }
            Some(Value::String(s)) => {
                let v = statements.verify(s, policy.software_statement_leeway_seconds, policy.max_json_depth, now)?;
                issuer = Some(v.merge_into(&mut input));
            }
            // Any other type: the normal validation reports it.
            Some(_) => {}
        }
    }
    let mut n = validate::check_object(input, policy, body.len(), kind)?;
    n.software_statement_issuer = issuer;
    Ok(n)
}
