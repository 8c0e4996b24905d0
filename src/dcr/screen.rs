//! Rules on a registration as a whole, after the member rules: the URIs the IdP itself will
//! fetch (server-side request forgery screening), the MCP 2026-07-28 `application_type`
//! rules, and the impersonation of catalogued clients.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::catalogue;
use super::error::{ErrorCode, RegistrationError};
use super::policy::Policy;
use super::special_use::{forbidden_range, special_use_name, special_use_range};
use super::vocab::SecurityMode;

/// Members whose URIs the IdP fetches or calls itself (server-side): `jwks_uri`,
/// `sector_identifier_uri`, `request_uris`, `logo_uri` (and its localized variants),
/// `initiate_login_uri` (a login is started through it), back-channel logout and the CIBA
/// client notification endpoint. Keycloak's SSRF CVEs came through the first three, MITREid's
/// through `logo_uri`.
pub const FETCHED_MEMBERS: [&str; 7] = [
    "jwks_uri",
    "sector_identifier_uri",
    "request_uris",
    "logo_uri",
    "initiate_login_uri",
    "backchannel_logout_uri",
    "backchannel_client_notification_endpoint",
];

/// Each URI the IdP would fetch, with the member name an error should carry: `(member, uri)`.
pub fn fetched_uris(doc: &Map<String, Value>) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for (name, value) in doc {
        let base = name.split_once('#').map_or(name.as_str(), |(b, _)| b);
        if !FETCHED_MEMBERS.contains(&base) {
            continue;
        }
        match value {
            Value::String(s) => out.push((name.clone(), s.as_str())),
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    if let Some(s) = v.as_str() {
                        out.push((format!("{name}[{i}]"), s));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Why the host of `uri` must not be fetched by a server: a literal special-use address
/// (RFC 6890; decimal, octal, hexadecimal and IPv4-mapped spellings read as the address they
/// denote) or a special-use name (`localhost`, `.internal`, ...). `None` for an ordinary host
/// name or a global address, and for what is not a URL with a host (the member rules judge
/// those).
pub fn literal_special_use(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.host()? {
        url::Host::Ipv4(ip) => special_use_range(ip.into()).map(|r| format!("address {ip} is special-use ({r})")),
        url::Host::Ipv6(ip) => special_use_range(ip.into()).map(|r| format!("address [{ip}] is special-use ({r})")),
        url::Host::Domain(d) => {
            let lower = d.to_ascii_lowercase();
            special_use_name(&lower).map(|r| format!("host name under special-use domain {r:?}"))
        }
    }
}

/// Strict mode: no URI the IdP fetches may name a special-use address or name literally.
pub(crate) fn screen_fetched(doc: &Map<String, Value>, policy: &Policy) -> Result<(), RegistrationError> {
    if policy.security_mode != SecurityMode::Strict {
        return Ok(());
    }
    for (member, uri) in fetched_uris(doc) {
        if let Some(why) = literal_special_use(uri) {
            return Err(RegistrationError::metadata(&member, format!("{why}; the IdP would fetch it")));
        }
    }
    Ok(())
}

/// Most distinct hosts a registration's fetched URIs may name when they are resolved
/// (`[dcr] resolve_metadata_uris`): each is a DNS lookup the registration costs.
pub const MAX_RESOLVED_HOSTS: usize = 10;

/// A host the IdP would fetch from, to be resolved (`[dcr] resolve_metadata_uris`): the first
/// member naming it (the error names that member), the host as the URL parser reads it (ASCII
/// lower case) and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataHost {
    pub member: String,
    pub host: String,
    pub port: u16,
    /// An IP literal is its own resolution.
    pub literal: Option<IpAddr>,
}

/// What resolving a [`MetadataHost`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Addresses(Vec<IpAddr>),
    /// The name does not resolve (or resolves to nothing).
    Failed,
    /// No answer within the registration's time budget.
    TimedOut,
}

/// The distinct hosts of the URIs the IdP would fetch (first member first), or the error for a
/// registration naming more than [`MAX_RESOLVED_HOSTS`]. Pure: the adapter resolves them and
/// [`judge_resolved`] decides.
pub fn metadata_hosts(doc: &Map<String, Value>) -> Result<Vec<MetadataHost>, RegistrationError> {
    let mut out: Vec<MetadataHost> = Vec::new();
    for (member, uri) in fetched_uris(doc) {
        let Ok(url) = url::Url::parse(uri) else { continue };
        let (host, literal) = match url.host() {
            Some(url::Host::Domain(d)) => (d.trim_end_matches('.').to_ascii_lowercase(), None),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (format!("[{ip}]"), Some(IpAddr::V6(ip))),
            None => continue,
        };
        if host.is_empty() || out.iter().any(|h| h.host == host) {
            continue;
        }
        if out.len() == MAX_RESOLVED_HOSTS {
            return Err(RegistrationError::metadata(
                &member,
                format!("the URIs the IdP would fetch name more than {MAX_RESOLVED_HOSTS} hosts"),
            ));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        out.push(MetadataHost { member, host, port, literal });
    }
    Ok(out)
}

/// `[dcr] resolve_metadata_uris`: a host the IdP would fetch from must resolve, and to no
/// special-use address (the outbound fetcher's table and `allow` list, `[cimd] allow_cidrs`).
/// One forbidden address refuses the registration, as it refuses a fetch.
pub fn judge_resolved(
    host: &MetadataHost,
    resolved: &Resolution,
    allow: &[ipnet::IpNet],
) -> Result<(), RegistrationError> {
    let why = match resolved {
        Resolution::Addresses(addrs) if addrs.is_empty() => "does not resolve".to_string(),
        Resolution::Addresses(addrs) => {
            match addrs.iter().find_map(|&ip| forbidden_range(ip, allow).map(|r| (ip, r))) {
                None => return Ok(()),
                Some((ip, range)) => format!("resolves to {ip}, a special-use address ({range})"),
            }
        }
        Resolution::Failed => "does not resolve".to_string(),
        Resolution::TimedOut => "could not be resolved in time".to_string(),
    };
    Err(RegistrationError::metadata(&host.member, format!("host {:?} {why}; the IdP would fetch it", host.host)))
}

/// `application_type` (MCP 2026-07-28), when `require_application_type` is set: required, and
/// checked against the redirect URIs: `web` → https on a non-loopback host only (OpenID
/// Connect DCR §2); `native` → loopback http, a private-use scheme, or https (a claimed https
/// URI, RFC 8252 §7.2 — VS Code registers `https://vscode.dev/redirect` as a native app).
/// Without the key, a given `application_type` keeps the rules it had (a public client may
/// say `web` and use a private-use scheme, as MCP IDEs do).
pub(crate) fn check_application_type(
    doc: &Map<String, Value>,
    policy: &Policy,
    redirect_uris: &[&str],
    loopback: impl Fn(&str) -> bool,
) -> Result<(), RegistrationError> {
    if !policy.require_application_type {
        return Ok(());
    }
    let Some(kind) = doc.get("application_type").and_then(Value::as_str) else {
        return Err(RegistrationError::metadata("application_type", "required (\"web\" or \"native\")"));
    };
    if kind != "web" {
        return Ok(());
    }
    for (i, u) in redirect_uris.iter().enumerate() {
        let https = u.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if !https || loopback(u) {
            return Err(RegistrationError::new(
                ErrorCode::InvalidRedirectUri,
                format!(
                    "redirect_uris[{i}]: application_type \"web\" needs https redirect URIs on non-loopback hosts \
                     (native apps register application_type \"native\")"
                ),
            ));
        }
    }
    Ok(())
}

/// Strict mode: a `client_name` that names a catalogued client (confusables folded) with
/// redirect URIs that are not that client's is an impersonation.
pub(crate) fn check_impersonation(
    policy: &Policy,
    client_name: Option<&str>,
    redirect_uris: &[&str],
) -> Result<(), RegistrationError> {
    if policy.security_mode != SecurityMode::Strict {
        return Ok(());
    }
    match catalogue::impersonated(client_name, redirect_uris) {
        Some(c) => Err(RegistrationError::metadata(
            "client_name",
            format!("names the known client {:?}, but the redirect URIs are not that client's", c.id),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_forms() {
        for (uri, want) in [
            ("https://127.0.0.1/jwks", "loopback"),
            ("https://2130706433/jwks", "loopback"),
            ("https://0177.0.0.1/jwks", "loopback"),
            ("https://0x7f.1/jwks", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://[::ffff:169.254.169.254]/", "link-local"),
            ("https://[::ffff:a9fe:a9fe]/", "link-local"),
            ("https://[fd00::1]/", "unique-local"),
            ("https://10.0.0.1:8443/", "private"),
            ("https://100.100.100.200/", "shared-address-space"),
            ("https://metadata.google.internal/", "internal"),
            ("https://LOCALHOST/", "localhost"),
            ("https://a.localhost/", "localhost"),
        ] {
            let why = literal_special_use(uri).unwrap_or_else(|| panic!("{uri} passed"));
            assert!(why.contains(want), "{uri}: {why}");
        }
        for ok in ["https://example.com/jwks", "https://8.8.8.8/", "https://[2606:4700::1]/", "not a uri"] {
            assert_eq!(literal_special_use(ok), None, "{ok}");
        }
    }

    #[test]
    fn resolved_hosts_are_judged_by_the_fetchers_rules() {
        let doc: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "jwks_uri": "https://Keys.Example.com./jwks",
            "logo_uri": "https://keys.example.com/logo.png",
            "request_uris": ["https://r.example:8443/a", "https://[::ffff:7f00:1]/b"],
            "client_uri": "https://home.example/",
            "sector_identifier_uri": "https://10.0.0.7/s.json",
        }))
        .unwrap();
        let hosts = metadata_hosts(&doc).unwrap();
        let names: Vec<(&str, &str, u16)> =
            hosts.iter().map(|h| (h.member.as_str(), h.host.as_str(), h.port)).collect();
        assert_eq!(
            names,
            [
                ("jwks_uri", "keys.example.com", 443),
                ("request_uris[0]", "r.example", 8443),
                ("request_uris[1]", "[::ffff:127.0.0.1]", 443),
                ("sector_identifier_uri", "10.0.0.7", 443)
            ],
            "distinct hosts of fetched members only (client_uri is not fetched by the IdP)"
        );
        assert_eq!(hosts[3].literal, Some("10.0.0.7".parse().unwrap()));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let addrs = |list: &[&str]| Resolution::Addresses(list.iter().map(|s| ip(s)).collect());
        let h = &hosts[0];
        for (resolved, want) in [
            (addrs(&["169.254.169.254"]), "resolves to 169.254.169.254, a special-use address (link-local)"),
            (addrs(&["93.184.215.14", "10.1.2.3"]), "resolves to 10.1.2.3, a special-use address (private)"),
            (addrs(&["::ffff:127.0.0.1"]), "resolves to ::ffff:127.0.0.1, a special-use address (loopback)"),
            (addrs(&[]), "does not resolve"),
            (Resolution::Failed, "does not resolve"),
            (Resolution::TimedOut, "could not be resolved in time"),
        ] {
            let e = judge_resolved(h, &resolved, &[]).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
            assert_eq!(
                e.description,
                format!("jwks_uri: host \"keys.example.com\" {want}; the IdP would fetch it"),
                "{resolved:?}"
            );
        }
        assert!(judge_resolved(h, &addrs(&["93.184.215.14", "2606:4700::1"]), &[]).is_ok());
        let allow: Vec<ipnet::IpNet> = vec!["10.1.0.0/16".parse().unwrap()];
        assert!(judge_resolved(h, &addrs(&["10.1.2.3"]), &allow).is_ok(), "the fetcher's allow list");
        assert!(judge_resolved(h, &addrs(&["10.2.0.1"]), &allow).is_err());
        // Too many hosts to resolve.
        let many: Vec<String> = (0..=MAX_RESOLVED_HOSTS).map(|i| format!("https://h{i}.example/r")).collect();
        let doc: Map<String, Value> = serde_json::from_value(serde_json::json!({ "request_uris": many })).unwrap();
        let e = metadata_hosts(&doc).unwrap_err();
        assert_eq!(e.description, "request_uris[10]: the URIs the IdP would fetch name more than 10 hosts");
    }

    /// The rules of this module and the catalogue, through `check`.
    mod through_check {
        use serde_json::json;

        use crate::dcr::{
            check, check_update_with, ErrorCode, Normalized, Policy, RegistrationError, SecurityMode, StatementVerifier,
        };

        fn run(v: serde_json::Value, policy: &Policy) -> Result<Normalized, RegistrationError> {
            check(&serde_json::to_vec(&v).unwrap(), policy)
        }

        fn web(extra: serde_json::Value) -> serde_json::Value {
            let mut v = json!({"redirect_uris": ["https://app.example.com/cb"], "client_name": "App"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        }

        #[test]
        fn fetched_uris_with_special_use_hosts_are_refused_in_strict_mode() {
            let strict = Policy::default();
            let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
            let cases = [
                ("jwks_uri", json!("https://169.254.169.254/latest/meta-data/"), "jwks_uri: address 169.254.169.254"),
                ("sector_identifier_uri", json!("https://10.0.0.7/s.json"), "sector_identifier_uri: address 10.0.0.7"),
                ("request_uris", json!(["https://example.com/r", "https://[::1]/r"]), "request_uris[1]: address [::1]"),
                ("logo_uri", json!("https://192.168.0.1/logo.png"), "logo_uri: address 192.168.0.1"),
                (
                    "initiate_login_uri",
                    json!("https://metadata.google.internal/x"),
                    "initiate_login_uri: host name under",
                ),
                ("jwks_uri", json!("https://[fd00::1]/jwks"), "special-use (unique-local)"),
            ];
            for (member, value, want) in cases {
                let mut body = web(json!({}));
                body[member] = value.clone();
                if member == "logo_uri" {
                    body["logo_uri"] = value.clone();
                }
                let e = run(body.clone(), &strict).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidClientMetadata, "{member}");
                assert!(e.description.contains(want), "{member}: {}", e.description);
                // Permissive mode leaves the literal check to [dcr] resolve_metadata_uris / the IdP.
                assert!(run(body, &permissive).is_ok(), "{member} permissive");
            }
            // Members unknown to the table are screened when they are forwarded (kept extensions).
            let keep = Policy { keep_extension_members: vec!["backchannel_logout_uri".into()], ..Policy::default() };
            let e = run(web(json!({"backchannel_logout_uri": "https://127.0.0.1/logout"})), &keep).unwrap_err();
            assert!(e.description.starts_with("backchannel_logout_uri: address 127.0.0.1"), "{}", e.description);
            let e = run(
                web(json!({"backchannel_client_notification_endpoint": "https://0x7f.1/n"})),
                &Policy {
                    keep_extension_members: vec!["backchannel_client_notification_endpoint".into()],
                    ..Policy::default()
                },
            )
            .unwrap_err();
            assert!(e.description.contains("loopback"), "{}", e.description);
            // Ordinary hosts pass.
            assert!(run(
                web(json!({"jwks_uri": "https://app.example.com/jwks", "logo_uri": "https://app.example.com/l.png"})),
                &strict
            )
            .is_ok());
        }

        #[test]
        fn application_type_rules_when_required() {
            let req = Policy { require_application_type: true, ..Policy::default() };
            let e = run(web(json!({})), &req).unwrap_err();
            assert_eq!(e.description, "application_type: required (\"web\" or \"native\")");
            assert!(run(web(json!({"application_type": "web"})), &req).is_ok());
            for bad in ["http://127.0.0.1:3000/cb", "https://localhost/cb"] {
                let e = run(
                    json!({"application_type": "web", "redirect_uris": [bad], "token_endpoint_auth_method": "none"}),
                    &req,
                )
                .unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidRedirectUri, "{bad}");
                assert!(e.description.contains("application_type \"web\" needs https"), "{bad}: {}", e.description);
            }
            let e = run(
                json!({"application_type": "web", "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"], "token_endpoint_auth_method": "none"}),
                &req,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRedirectUri);
            for ok in [
                "http://127.0.0.1:3000/cb",
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "https://vscode.dev/redirect",
            ] {
                let v =
                    json!({"application_type": "native", "redirect_uris": [ok], "token_endpoint_auth_method": "none"});
                assert!(run(v, &req).is_ok(), "{ok}");
            }
            // Updates are held to it too.
            let e = check_update_with(&serde_json::to_vec(&web(json!({}))).unwrap(), &req, &StatementVerifier::empty())
                .unwrap_err();
            assert!(e.description.starts_with("application_type: required"));
            // Without the key nothing changes.
            assert!(run(web(json!({})), &Policy::default()).is_ok());
        }

        #[test]
        fn whole_script_lookalike_hosts_are_refused_in_strict_mode() {
            // All-Cyrillic "аррӏе": a single script, caught by the skeleton only.
            let e = run(
                json!({"redirect_uris": ["https://\u{430}\u{440}\u{440}\u{4cf}\u{435}.com/cb"]}),
                &Policy::default(),
            )
            .unwrap_err();
            assert!(e.description.contains("confusable with the ASCII label \"apple\""), "{}", e.description);
            let e =
                run(web(json!({"logo_uri": "https://xn--80ak6aa92e.com/logo.png"})), &Policy::default()).unwrap_err();
            assert!(e.description.starts_with("logo_uri: host label"), "{}", e.description);
            // Non-ASCII labels without an ASCII look-alike pass.
            for ok in ["https://bücher.example/cb", "https://пример.рф/cb", "https://例え.テスト/cb"] {
                assert!(run(json!({"redirect_uris": [ok]}), &Policy::default()).is_ok(), "{ok}");
            }
        }

        #[test]
        fn impersonating_a_catalogued_client_is_refused_in_strict_mode() {
            let strict = Policy::default();
            for (name, uris) in [
                ("Claude", json!(["https://claude-connector.example/cb"])),
                ("\u{421}laude", json!(["https://evil.example/api/mcp/auth_callback"])),
                ("ChatGPT Connector", json!(["https://chatgpt.com.evil.example/connector_platform_oauth_redirect"])),
                ("Cursor", json!(["cursor://anysphere.cursor-mcp/oauth/callback", "https://evil.example/cb"])),
                ("Visual Studio Code", json!(["https://vscode.dev.evil.example/redirect"])),
            ] {
                let v = json!({"client_name": name, "redirect_uris": uris, "token_endpoint_auth_method": "none"});
                let e = run(v.clone(), &strict).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidClientMetadata, "{name}");
                assert!(e.description.starts_with("client_name: names the known client"), "{name}: {}", e.description);
                let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
                assert!(run(v, &permissive).is_ok(), "{name} permissive");
            }
            // The genuine patterns.
            for (name, uris) in [
                ("Claude", json!(["https://claude.ai/api/mcp/auth_callback"])),
                ("Claude", json!(["https://claude.com/api/mcp/auth_callback"])),
                ("Claude Code (docs)", json!(["http://localhost:53219/callback"])),
                ("ChatGPT", json!(["https://chatgpt.com/connector/oauth/4b1c3b0f"])),
                (
                    "Cursor",
                    json!([
                        "cursor://anysphere.cursor-mcp/oauth/callback",
                        "https://www.cursor.com/agents/mcp/oauth/callback",
                        "http://localhost:8787/callback"
                    ]),
                ),
                ("Cline", json!(["vscode://saoudrizwan.claude-dev/mcp-auth/callback/5d41"])),
                ("Codex", json!(["http://127.0.0.1:63546/callback/6MFB"])),
                ("Visual Studio Code", json!(["https://vscode.dev/redirect", "http://127.0.0.1:33418/"])),
                ("Acme Claudette", json!(["https://acme.example/cb"])),
            ] {
                let v = json!({"client_name": name, "redirect_uris": uris, "token_endpoint_auth_method": "none"});
                assert!(run(v, &strict).is_ok(), "{name}");
            }
        }

        #[test]
        fn known_presets_in_redirect_host_allow() {
            let p = Policy {
                redirect_host_allow: vec!["known:claude".into(), "app.example.com".into()],
                ..Policy::default()
            };
            assert!(p.validate().is_ok());
            let ok = |u: &str| run(json!({"redirect_uris": [u]}), &p).is_ok();
            assert!(ok("https://claude.ai/api/mcp/auth_callback"));
            assert!(ok("https://claude.com/api/mcp/auth_callback"));
            assert!(ok("https://app.example.com/cb"));
            assert!(!ok("https://chatgpt.com/connector_platform_oauth_redirect"));
            for bad in ["known:nope", "known:claude-code"] {
                let p = Policy { redirect_host_allow: vec![bad.into()], ..Policy::default() };
                assert!(p.validate().is_err(), "{bad}");
            }
            let p = Policy { redirect_host_deny: vec!["known:claude".into()], ..Policy::default() };
            assert!(p.validate().is_err());
        }
    }
}
