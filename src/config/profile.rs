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
    ("lemonldap-ng", include_str!("../../conf/profiles/lemonldap-ng.toml")),
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
    /// Forward one registration at a time: an IdP that names clients by the current second
    /// (LemonLDAP::NG) keeps only one of parallel registrations while answering each 201.
    #[serde(default)]
    pub serialize: bool,
    /// With `serialize`: how long the next registration waits after the IdP answered the
    /// previous one (an IdP that names clients by the second needs 1000).
    #[serde(default)]
    pub serialize_spacing_ms: u64,
}

/// The embedded profile an IdP's discovery document looks like, from what each IdP is known to
/// advertise (its registration path shape, endpoint names, issuer). Used to *suggest* a profile
/// (`check`, the start-up log); the configuration chooses — a document fetched from the network
/// never changes what the gateway enforces by itself.
pub fn detect(doc: &serde_json::Value) -> Option<&'static str> {
    let url_path = |key: &str| {
        doc.get(key).and_then(|v| v.as_str()).and_then(|s| url::Url::parse(s).ok()).map(|u| u.path().to_string())
    };
    let issuer_host = doc
        .get("issuer")
        .and_then(|v| v.as_str())
        .and_then(|s| url::Url::parse(s).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let reg = url_path("registration_endpoint").unwrap_or_default();
    let authz = url_path("authorization_endpoint").unwrap_or_default();
    if issuer_host.as_deref().is_some_and(|h| h.ends_with(".auth0.com"))
        || reg.ends_with("/oidc/register")
            && authz.ends_with("/authorize")
            && doc.get("mfa_challenge_endpoint").is_some()
    {
        return Some("auth0");
    }
    if reg.contains("/clients-registrations/") {
        return Some("keycloak");
    }
    if reg.starts_with("/api/") && reg.ends_with("/register") {
        return Some("glewlwyd");
    }
    if reg.ends_with("/oauth2/register") {
        // Both serve /oauth2/register: Hydra authorizes at /oauth2/auth, LemonLDAP::NG at
        // /oauth2/authorize.
        if authz.ends_with("/oauth2/auth") {
            return Some("hydra");
        }
        if authz.ends_with("/oauth2/authorize") {
            return Some("lemonldap-ng");
        }
        return None;
    }
    if reg.ends_with("/reg") && doc.get("claims_parameter_supported").is_some() {
        return Some("node-oidc-provider");
    }
    None
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
    fn profiles_are_suggested_from_discovery_documents() {
        let doc = |reg: &str, authz: &str, extra: serde_json::Value| {
            let mut d = serde_json::json!({"issuer": "https://idp.example.com", "registration_endpoint": reg, "authorization_endpoint": authz});
            if let (Some(d), Some(e)) = (d.as_object_mut(), extra.as_object()) {
                d.extend(e.clone());
            }
            d
        };
        let none = serde_json::json!({});
        let cases = [
            (
                doc(
                    "https://kc/realms/demo/clients-registrations/openid-connect",
                    "https://kc/realms/demo/protocol/openid-connect/auth",
                    none.clone(),
                ),
                Some("keycloak"),
            ),
            (
                doc("http://localhost:4593/api/oidc/register", "http://localhost:4593/api/oidc/auth", none.clone()),
                Some("glewlwyd"),
            ),
            (
                doc("http://127.0.0.1:4444/oauth2/register", "http://127.0.0.1:4444/oauth2/auth", none.clone()),
                Some("hydra"),
            ),
            (
                doc(
                    "https://auth.example.com/oauth2/register",
                    "https://auth.example.com/oauth2/authorize",
                    none.clone(),
                ),
                Some("lemonldap-ng"),
            ),
            (
                doc(
                    "http://localhost:3000/reg",
                    "http://localhost:3000/auth",
                    serde_json::json!({"claims_parameter_supported": false}),
                ),
                Some("node-oidc-provider"),
            ),
            (
                serde_json::json!({"issuer": "https://tenant.us.auth0.com/", "registration_endpoint": "https://tenant.us.auth0.com/oidc/register"}),
                Some("auth0"),
            ),
            (
                doc(
                    "https://idp.example.com/connect/register",
                    "https://idp.example.com/connect/authorize",
                    none.clone(),
                ),
                None,
            ),
            (serde_json::json!({"issuer": "x"}), None),
        ];
        for (d, want) in cases {
            assert_eq!(detect(&d), want, "{d}");
        }
    }

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
