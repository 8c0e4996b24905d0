//! What happened to a request, as metrics and the audit line name it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Blocked,
    Redirected,
    Invalid,
    Disabled,
    UpstreamError,
    RateLimited,
    Unauthorized,
}

impl Outcome {
    /// Number of outcomes; `self as usize` is below it.
    pub const COUNT: usize = Outcome::Unauthorized as usize + 1;

    /// The audit line's `decision`: the outcome, with ACL actions in the rule file's words.
    pub fn decision(self) -> &'static str {
        match self {
            Outcome::Allowed => "allow",
            Outcome::Blocked => "block",
            Outcome::Redirected => "redirect",
            other => other.as_str(),
        }
    }

    /// The `outcome` label of `dcr_gateway_requests_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Blocked => "blocked",
            Outcome::Redirected => "redirected",
            Outcome::Invalid => "invalid",
            Outcome::Disabled => "disabled",
            Outcome::UpstreamError => "upstream_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::Unauthorized => "unauthorized",
        }
    }
}
