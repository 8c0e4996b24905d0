//! The scope a request is classified into, and the scopes a rule may name.

use std::fmt;

/// Where a request lands. Every request has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The registration endpoint and the RFC 7592 client configuration paths below it.
    Dcr,
    /// The management path prefixes (default `/api/v2/`, `/scim/`).
    Management,
    /// Everything else.
    Authentication,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Dcr, Scope::Management, Scope::Authentication];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Dcr => "dcr",
            Scope::Management => "management",
            Scope::Authentication => "authentication",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "dcr" | "dynamic_client_registration" => Some(Scope::Dcr),
            "management" => Some(Scope::Management),
            "authentication" => Some(Scope::Authentication),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scope a rule applies to (Auth0's `rule.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleScope {
    /// Every request.
    Tenant,
    /// Management prefixes only.
    Management,
    /// Everything not management, the registration endpoint included (as in Auth0).
    Authentication,
    /// The registration endpoint only.
    Dcr,
}

impl RuleScope {
    pub fn covers(self, scope: Scope) -> bool {
        match self {
            RuleScope::Tenant => true,
            RuleScope::Management => scope == Scope::Management,
            RuleScope::Authentication => scope != Scope::Management,
            RuleScope::Dcr => scope == Scope::Dcr,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleScope::Tenant => "tenant",
            RuleScope::Management => "management",
            RuleScope::Authentication => "authentication",
            RuleScope::Dcr => "dcr",
        }
    }

    /// Accepts Auth0's documentation spelling (`dcr`) and its API/Terraform enum
    /// (`dynamic_client_registration`).
    pub fn parse(s: &str) -> Option<RuleScope> {
        match s {
            "tenant" => Some(RuleScope::Tenant),
            "management" => Some(RuleScope::Management),
            "authentication" => Some(RuleScope::Authentication),
            "dcr" | "dynamic_client_registration" => Some(RuleScope::Dcr),
            _ => None,
        }
    }
}
