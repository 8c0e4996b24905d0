//! Request classification: which scope a request belongs to, and the origin-form target the
//! upstream receives.
//!
//! The router reads the canonical [`RequestView`] (one parse of the request target, see
//! `core::target`), never the raw target. It classifies both readings of the path
//! (split-then-decode and decode-then-split); when they land on different routes the request
//! is refused as ambiguous rather than guessing which reading the IdP uses. The target sent
//! upstream is rebuilt from the same segments that were classified — for `dcr` with the
//! upstream's registration path in front — so the scope the gateway decided and the request
//! the IdP receives cannot disagree.

use crate::core::target::{self, RequestView, TargetError};
use crate::scope::Scope;

/// Compiled route table. Paths are stored as lower-case canonical segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    registration_path: String,
    registration: Vec<String>,
    /// The upstream's registration path, case kept (it is sent as is).
    upstream_registration: Vec<String>,
    /// The upstream's own registration path (when it differs) is also `dcr`: a client that
    /// learned it from the discovery document must not bypass the gateway's checks.
    dcr_paths: Vec<Vec<String>>,
    management_prefixes: Vec<Vec<String>>,
    /// Prefixes refused outright (400) unless a dcr path matches first: other registration
    /// providers of the IdP that the gateway cannot validate.
    refused: Vec<Vec<String>>,
}

/// The outcome of classifying one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub scope: Scope,
    /// For `dcr`: true when the path is the registration endpoint itself (not a RFC 7592
    /// client configuration path below it).
    pub is_registration: bool,
    /// For RFC 7592 paths: the client id (the decoded segments below the registration path).
    pub client_id: Option<String>,
    /// The origin-form target to send upstream (path and query), built from the view.
    pub upstream_target: String,
}

fn segments_of(path: &str) -> Vec<String> {
    canonical_path(path).split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// `seg` lower-cased (`str::to_lowercase`) equals `lower`, a lower-case table segment. ASCII
/// segments compare without building the lower-case copy (every request's path is classified
/// twice, each with both readings: the copies were a measurable share of a refusal).
fn seg_eq(seg: &str, lower: &str) -> bool {
    if seg.is_ascii() {
        // ASCII lower-cases to ASCII; `lower` holds no upper-case ASCII letter.
        seg.eq_ignore_ascii_case(lower)
    } else {
        seg.to_lowercase() == lower
    }
}

/// `segs` starts with `prefix` (lower case) segment by segment, compared as lower case: the
/// number of segments matched.
fn strip_prefix(segs: &[String], prefix: &[String]) -> Option<usize> {
    (segs.len() >= prefix.len() && segs.iter().zip(prefix).all(|(s, p)| seg_eq(s, p))).then_some(prefix.len())
}

impl Router {
    /// `registration_path` and `upstream_registration_path` must start with `/`
    /// (checked by the config loader).
    pub fn new(registration_path: &str, upstream_registration_path: &str, management_prefixes: &[String]) -> Router {
        let reg = segments_of(registration_path);
        let up_lower = segments_of(upstream_registration_path);
        let mut dcr_paths = vec![reg.clone()];
        // Keycloak serves other client-registration providers beside `openid-connect`
        // (`…/clients-registrations/default`, `…/saml2-entity-descriptor`) that create clients
        // from their own formats: unvalidated ways around the gateway. They are refused.
        let refused = match up_lower.as_slice() {
            [parent @ .., last, provider] if last == "clients-registrations" && provider == "openid-connect" => {
                let mut p = parent.to_vec();
                p.push(last.clone());
                vec![p]
            }
            _ => Vec::new(),
        };
        if up_lower != reg {
            dcr_paths.push(up_lower);
        }
        let upstream_registration =
            upstream_registration_path.split('/').filter(|s| !s.is_empty() && *s != ".").map(str::to_string).collect();
        let management_prefixes =
            management_prefixes.iter().map(|p| segments_of(p)).filter(|p| !p.is_empty()).collect();
        Router {
            refused,
            registration_path: canonical_path(registration_path),
            registration: reg,
            upstream_registration,
            dcr_paths,
            management_prefixes,
        }
    }

    pub fn registration_path(&self) -> &str {
        &self.registration_path
    }

    /// (scope, is_registration, segments matched by the dcr prefix) of segments in any case.
    fn route_of(&self, segs: &[String]) -> (Scope, bool, usize) {
        for dcr in &self.dcr_paths {
            if let Some(n) = strip_prefix(segs, dcr) {
                return (Scope::Dcr, n == segs.len(), n);
            }
        }
        if self.management_prefixes.iter().any(|p| strip_prefix(segs, p).is_some()) {
            (Scope::Management, false, 0)
        } else {
            (Scope::Authentication, false, 0)
        }
    }

    /// Classify a parsed request; refuses a path whose two readings disagree, and a request
    /// whose forwarded target would itself be read as another route (the decision is made on
    /// exactly the bytes the IdP receives: `/%2f/api/v2/%3b/%2E%2e` agrees with itself as
    /// `authentication`, but its rebuilt `/%2F/api/v2` reads as `management` decode-first).
    pub fn classify(&self, view: &RequestView) -> Result<Route, TargetError> {
        let route = self.classify_view(view)?;
        if view.form == target::TargetForm::Asterisk {
            return Ok(route);
        }
        let head = target::Head {
            method_is_options: false,
            target: route.upstream_target.as_bytes(),
            hosts: &[],
            host_required: false,
        };
        let again = target::parse(&head).and_then(|v| self.classify_view(&v)).map_err(|_| TargetError::Ambiguous)?;
        if (again.scope, again.is_registration) != (route.scope, route.is_registration)
            || again.upstream_target != route.upstream_target
        {
            return Err(TargetError::Ambiguous);
        }
        Ok(route)
    }

    fn classify_view(&self, view: &RequestView) -> Result<Route, TargetError> {
        let segs = &view.segments;
        let (scope, is_registration, matched) = self.route_of(segs);
        if scope != Scope::Dcr && self.refused.iter().any(|p| strip_prefix(segs, p).is_some()) {
            return Err(TargetError::RefusedPath);
        }
        let (flat_scope, flat_reg, _) = self.route_of(&view.flat_segments);
        if (scope, is_registration) != (flat_scope, flat_reg) {
            return Err(TargetError::Ambiguous);
        }
        if scope != Scope::Dcr {
            return Ok(Route { scope, is_registration: false, client_id: None, upstream_target: view.origin_form() });
        }
        // The client id part keeps its case (ids are case-sensitive) and is re-encoded, so an
        // id holding `/`, `.` or `..` reaches the IdP as one escaped segment.
        let rest = &view.segments[matched..];
        let client_id = (!rest.is_empty()).then(|| rest.join("/"));
        Ok(Route {
            scope,
            is_registration,
            client_id,
            upstream_target: view.origin_form_with(&self.upstream_registration, rest),
        })
    }

    /// Parse and classify an origin-form target (CLI, tests, the properties).
    pub fn classify_target(&self, target: &str) -> Result<Route, TargetError> {
        let head =
            target::Head { method_is_options: false, target: target.as_bytes(), hosts: &[], host_required: false };
        self.classify(&target::parse(&head)?)
    }
}

/// Canonical form of a configured path: segments decoded and dot-resolved, lower case, no
/// trailing slash (used for configuration checks and the route table).
pub fn canonical_path(path: &str) -> String {
    let head = target::Head { method_is_options: false, target: path.as_bytes(), hosts: &[], host_required: false };
    let segs = match target::parse(&head) {
        Ok(v) => v.segments,
        Err(_) => path.split('/').filter(|s| !s.is_empty() && *s != ".").map(str::to_string).collect(),
    };
    let mut out = String::with_capacity(path.len() + 1);
    for s in segs {
        out.push('/');
        out.push_str(&s.to_lowercase());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new("/oidc/register", "/reg", &["/api/v2/".into(), "/scim/".into()])
    }

    fn classify(p: &str) -> Route {
        router().classify_target(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn segments_compare_as_their_lower_case() {
        // What the table comparison replaced: lower-casing the segment (Unicode rules), then
        // comparing. The Kelvin sign lower-cases to an ASCII `k`, `İ` to two characters.
        let words =
            ["register", "REGISTER", "Register", "\u{212A}", "k", "K", "\u{130}", "i\u{307}", "i", "ß", "SS", ""];
        for seg in words {
            for table in words {
                let table = table.to_lowercase();
                assert_eq!(seg_eq(seg, &table), seg.to_lowercase() == table, "{seg:?} vs {table:?}");
            }
        }
        let r = Router::new("/oidc/k", "/reg", &[]);
        assert_eq!(r.classify_target("/oidc/%E2%84%AA").map(|r| r.scope), Ok(Scope::Dcr));
    }

    #[test]
    fn registration_spellings_are_dcr() {
        for p in [
            "/oidc/register",
            "//oidc/register",
            "/oidc//register",
            "/oidc/register/",
            "/oidc/./register",
            "/oidc/x/../register",
            "/OIDC/Register",
            "/oidc/%72egister",
            "/oidc/%2572egister",
            "/oidc/register?foo=bar",
            "/oidc/register;jsessionid=1",
            "/\\oidc\\register",
            "/./oidc/register/.",
            "/../oidc/register",
            "/oidc/%2e/register",
            "/oidc/x/%2e%2e/register",
        ] {
            let route = classify(p);
            assert_eq!(route.scope, Scope::Dcr, "{p}");
            assert!(route.is_registration, "{p}");
            assert!(route.upstream_target.starts_with("/reg"), "{p}");
        }
    }

    #[test]
    fn readings_that_disagree_are_refused() {
        for p in [
            "/oidc%2fregister",
            "/oidc%5Cregister",
            "/oidc/register%3Bx",
            "/oidc/register/x%2F..",
            "/a/..%2F..%2Foidc%2Fregister",
        ] {
            assert_eq!(router().classify_target(p), Err(TargetError::Ambiguous), "{p}");
        }
    }

    #[test]
    fn other_keycloak_registration_providers_are_refused() {
        let r = Router::new("/oidc/register", "/realms/mcp/clients-registrations/openid-connect", &["/admin/".into()]);
        let ok = r.classify_target("/realms/mcp/clients-registrations/openid-connect").unwrap();
        assert!(ok.scope == Scope::Dcr && ok.is_registration);
        assert_eq!(
            r.classify_target("/realms/mcp/clients-registrations/openid-connect/abc").unwrap().scope,
            Scope::Dcr
        );
        for p in [
            "/realms/mcp/clients-registrations/default",
            "/realms/MCP/clients-registrations/saml2-entity-descriptor",
            "/realms/mcp/clients-registrations",
        ] {
            assert_eq!(r.classify_target(p), Err(TargetError::RefusedPath), "{p}");
        }
        assert_eq!(r.classify_target("/realms/mcp/protocol/openid-connect/auth").unwrap().scope, Scope::Authentication);
    }

    #[test]
    fn a_target_not_starting_with_a_slash_is_refused() {
        assert_eq!(router().classify_target("\\oidc\\register"), Err(TargetError::UnsupportedForm));
    }

    #[test]
    fn a_forwarded_target_read_as_another_route_is_refused() {
        // Found by the property below: both readings say authentication, the rebuilt target
        // would read as management decode-first.
        assert_eq!(router().classify_target("/%2f/api/v2/%3b/%2E%2e"), Err(TargetError::Ambiguous));
    }

    #[test]
    fn upstream_registration_path_is_dcr_too() {
        let route = classify("/reg");
        assert_eq!(route.scope, Scope::Dcr);
        assert_eq!(route.upstream_target, "/reg");
        assert_eq!(classify("/REG/").scope, Scope::Dcr);
    }

    #[test]
    fn client_configuration_paths_are_dcr_and_keep_the_client_id_case() {
        let route = classify("/oidc/register/AbC123?x=1");
        assert_eq!(route.scope, Scope::Dcr);
        assert!(!route.is_registration);
        assert_eq!(route.upstream_target, "/reg/AbC123?x=1");
        assert_eq!(route.client_id.as_deref(), Some("AbC123"));
        let route = classify("//oidc/./register//Client%2DId");
        assert_eq!(route.upstream_target, "/reg/Client-Id");
    }

    #[test]
    fn client_ids_with_slashes_and_dots_round_trip_escaped() {
        let route = classify("/oidc/register/a%2Fb.c");
        assert_eq!(route.client_id.as_deref(), Some("a/b.c"));
        assert_eq!(route.upstream_target, "/reg/a%2Fb.c");
        let route = classify("/oidc/register/x..y%3F");
        assert_eq!(route.upstream_target, "/reg/x..y%3F");
    }

    #[test]
    fn encoded_dot_segments_never_reach_upstream_as_dots() {
        // `%252e%252e` decodes to `..`: resolved here, so the IdP gets no dot segment.
        let route = classify("/oidc/register/%252e%252e/%252e%252e/api/v2/clients");
        assert_eq!(route.scope, Scope::Management);
        assert_eq!(route.upstream_target, "/api/v2/clients");
    }

    #[test]
    fn query_string_is_forwarded() {
        assert_eq!(classify("/oidc/register?a=b").upstream_target, "/reg?a=b");
    }

    #[test]
    fn near_misses_are_not_dcr() {
        for p in ["/oidc/registerx", "/oidc/registe", "/oidc", "/register", "/oidc/reg", "/regx"] {
            assert_ne!(classify(p).scope, Scope::Dcr, "{p}");
        }
    }

    #[test]
    fn management_prefixes() {
        assert_eq!(classify("/api/v2/clients").scope, Scope::Management);
        assert_eq!(classify("/api/v2").scope, Scope::Management);
        assert_eq!(classify("//API/v2/users?q=1").scope, Scope::Management);
        assert_eq!(classify("/api/%762/users").scope, Scope::Management);
        assert_eq!(classify("/scim/v2/Users").scope, Scope::Management);
        assert_eq!(classify("/api/v20").scope, Scope::Authentication);
        assert_eq!(classify("/x/../api/v2/x").scope, Scope::Management);
    }

    #[test]
    fn everything_else_is_authentication() {
        for p in ["/", "/authorize", "/.well-known/openid-configuration", "/token?x=/oidc/register"] {
            assert_eq!(classify(p).scope, Scope::Authentication, "{p}");
        }
    }

    #[test]
    fn same_public_and_upstream_path() {
        let r = Router::new("/oidc/register", "/oidc/register", &[]);
        let route = r.classify_target("/oidc/register/").unwrap();
        assert_eq!(route.upstream_target, "/oidc/register");
    }

    #[test]
    fn canonical_path_is_idempotent() {
        for p in ["/a/b/", "//A//./b/../c", "/%2e%2e/x", "", "/"] {
            let c = canonical_path(p);
            assert_eq!(canonical_path(&c), c);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Path pieces that have fooled routers: separators and their escapes, dots and
        /// encoded dots at several depths, params, the configured paths in any case.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("oidc".to_string()),
                Just("OIDC".to_string()),
                Just("register".to_string()),
                Just("ReGiStEr".to_string()),
                Just("reg".to_string()),
                Just("api".to_string()),
                Just("v2".to_string()),
                Just("x".to_string()),
                Just(".".to_string()),
                Just("..".to_string()),
                Just("%2e".to_string()),
                Just("%2E%2e".to_string()),
                Just("%252e%252e".to_string()),
                Just("%2f".to_string()),
                Just("%252F".to_string()),
                Just("%5c".to_string()),
                Just(";p=1".to_string()),
                Just("%3b".to_string()),
                Just("%3F".to_string()),
                Just("%23".to_string()),
                Just("%25".to_string()),
                Just("%72".to_string()),
                Just("%2572".to_string()),
                Just("%20".to_string()),
                Just("\\".to_string()),
                "[a-zA-Z0-9._~-]{0,4}",
            ]
        }

        fn target() -> impl Strategy<Value = (String, bool, String)> {
            let sep = prop_oneof![Just("/"), Just("//"), Just("\\"), Just("/./")];
            (
                proptest::collection::vec((sep, proptest::collection::vec(piece(), 0..3)), 0..7),
                any::<bool>(),
                prop_oneof![Just(""), Just("?a=b"), Just("?x=/oidc/register"), Just("?%2F")],
                prop_oneof![Just(""), Just("http://h"), Just("HTTP://h:1"), Just("https://H.example")],
            )
                .prop_map(|(parts, trailing, query, abs)| {
                    let mut path = String::new();
                    for (sep, seg) in parts {
                        path.push_str(sep);
                        path.push_str(&seg.concat());
                    }
                    if path.is_empty() || trailing {
                        path.push('/');
                    }
                    if !path.starts_with('/') {
                        path.insert(0, '/');
                    }
                    (format!("{abs}{path}{query}"), !abs.is_empty(), path)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

            /// The scope decided and the scope of the target forwarded never disagree, and a
            /// forwarded target is a fixed point (forwarding it again changes nothing).
            #[test]
            fn decision_and_forwarded_target_agree((t, absolute, _path) in target()) {
                for r in [router(), Router::new("/oidc/register", "/oidc/register", &["/api/v2/".into()])] {
                    let head = target::Head { method_is_options: false, target: t.as_bytes(), hosts: &[b"gw"], host_required: true };
                    let Ok(view) = target::parse(&head) else { continue };
                    prop_assert!(!absolute || view.form == target::TargetForm::Absolute);
                    let Ok(route) = r.classify(&view) else { continue };
                    prop_assert!(route.upstream_target.starts_with('/'));
                    let again = r.classify_target(&route.upstream_target);
                    prop_assert!(again.is_ok(), "forwarded {:?} is refused: {:?}", route.upstream_target, again);
                    let again = again.unwrap();
                    // The IdP of this router serves the registration at the upstream path, which
                    // the router also classifies as dcr: compare scope and kind.
                    prop_assert_eq!((route.scope, route.is_registration), (again.scope, again.is_registration), "{} -> {}", t, route.upstream_target);
                    prop_assert_eq!(&again.upstream_target, &route.upstream_target);
                    prop_assert_eq!(again.client_id, route.client_id);
                }
            }

            /// Nothing panics on arbitrary bytes.
            #[test]
            fn arbitrary_targets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let head = target::Head { method_is_options: false, target: &bytes, hosts: &[&bytes], host_required: true };
                if let Ok(view) = target::parse(&head) {
                    let _ = router().classify(&view);
                }
            }
        }
    }
}
