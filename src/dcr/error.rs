//! The RFC 7591 §3.2.2 error response of the registration endpoint.

use std::fmt;

/// The `error` values this module produces (RFC 7591 §3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The value of one or more `redirect_uris` is invalid.
    InvalidRedirectUri,
    /// The value of one of the other client metadata fields (or the body itself) is invalid.
    InvalidClientMetadata,
    /// The software statement presented is invalid (malformed, bad signature or algorithm,
    /// expired, not yet valid, or required and missing).
    InvalidSoftwareStatement,
    /// The software statement presented is not approved: its issuer is not trusted.
    UnapprovedSoftwareStatement,
}

impl ErrorCode {
    /// The wire value: `invalid_redirect_uri`, `invalid_client_metadata`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidSoftwareStatement => "invalid_software_statement",
            ErrorCode::UnapprovedSoftwareStatement => "unapproved_software_statement",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected registration. `description` has the form `"<member>: <reason>"`
/// (`body: ...` for problems with the JSON itself) and never contains a member's value
/// except short, non-secret fragments (a URI scheme, a grant type name, a scope token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct RegistrationError {
    pub code: ErrorCode,
    pub description: String,
}

impl RegistrationError {
    pub(crate) fn new(code: ErrorCode, description: String) -> Self {
        RegistrationError { code, description }
    }

    pub(crate) fn metadata(member: &str, reason: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidClientMetadata, format!("{member}: {reason}"))
    }

    /// The RFC 7591 §3.2.2 response body: `{"error": ..., "error_description": ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        })
    }
}

/// A member name made safe to print in a description: at most 64 characters, control and
/// other invisible characters escaped. Names are attacker-chosen; values are never printed.
pub(crate) fn display_name(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == 64 {
            out.push('…');
            break;
        }
        if c.is_control() || c.is_whitespace() && c != ' ' || is_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Format and bidi controls, which could make a printed name lie about itself.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}
