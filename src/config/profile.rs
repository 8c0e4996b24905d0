//! IdP profiles: what differs between identity providers, as data. One TOML file per IdP under
//! `conf/profiles/`, embedded in the binary and parsed when a configuration is loaded;
//! `[upstream] profile` chooses one (default `generic`) and explicit keys in `gateway.toml`
//! override what it says. docs/idps.md describes each IdP.

use serde::Deserialize;

pub use crate::core::verify::Derive;

/// The embedded profiles: (name, file text).
pub const PROFILES: &[(&str, &str)] = &[
    ("generic", include_str!("../../conf/profiles/generic.toml")),
    ("node-oidc-provider", include_str!("../../conf/profiles/node-oidc-provider.toml")),
    ("keycloak", include_str!("../../conf/profiles/keycloak.toml")),
    ("auth0", include_str!("../../conf/profiles/auth0.toml")),
    ("hydra", include_str!("../../conf/profiles/hydra.toml")),
    ("glewlwyd", include_str!("../../conf/profiles/glewlwyd.toml")),
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub summary: String,
    #[serde(default)]
    pub routes: ProfileRoutes,
    #[serde(default)]
    pub upstream: ProfileUpstream,
    #[serde(default)]
    pub registration: ProfileRegistration,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRoutes {
    pub upstream_registration_path: Option<String>,
    pub management_prefixes: Option<Vec<String>>,
    pub normalize_registration_status: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpstream {
    pub host_header: Option<UpstreamHost>,
}

/// The `Host` header the IdP receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamHost {
    /// The request's host, as decided by `core::target`.
    #[default]
    Request,
    /// The origin's host (or `[upstream] sni`): an edge that routes on it (Auth0's Origin
    /// Domain Name). The client's host still travels in `X-Forwarded-Host`.
    Origin,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRegistration {
    /// Members of a registration the IdP is known to leave out of its answer: their absence is
    /// not a difference (`core::verify`).
    #[serde(default)]
    pub known_drops: Vec<String>,
    /// Members added to the forwarded registration, derived from a member the gateway
    /// validated.
    #[serde(default)]
    pub derive: Vec<Derive>,
}

/// The names of the embedded profiles.
pub fn names() -> Vec<&'static str> {
    PROFILES.iter().map(|(n, _)| *n).collect()
}

/// The embedded profile `name`, parsed.
pub fn load(name: &str) -> Result<Profile, String> {
    let Some((_, text)) = PROFILES.iter().find(|(n, _)| *n == name) else {
        return Err(format!("unknown profile {name:?} (known: {})", names().join(", ")));
    };
    let p: Profile = toml::from_str(text).map_err(|e| format!("profile {name:?}: {e}"))?;
    if p.name != name {
        return Err(format!("profile {name:?} names itself {:?}", p.name));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_profile_parses_and_has_a_file() {
        for name in names() {
            let p = load(name).unwrap();
            assert!(!p.summary.is_empty());
            let path = format!("{}/conf/profiles/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            assert!(std::path::Path::new(&path).exists(), "{path}");
        }
        let files = std::fs::read_dir(format!("{}/conf/profiles", env!("CARGO_MANIFEST_DIR"))).unwrap().count();
        assert_eq!(files, PROFILES.len(), "a file under conf/profiles/ is not embedded");
        assert!(load("okta").unwrap_err().contains("glewlwyd"));
    }

    #[test]
    fn glewlwyd_derives_client_confidential() {
        let p = load("glewlwyd").unwrap();
        // The rule core's tests use is the shipped one.
        assert_eq!(p.registration.derive, crate::core::verify::glewlwyd_rule());
    }
}
