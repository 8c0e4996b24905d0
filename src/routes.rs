//! Request classification: which scope a request belongs to, and where a registration
//! request goes upstream.
//!
//! The classification must agree with the upstream's router: any spelling of the path that
//! an IdP would route to its registration endpoint (`//oidc/register`, `/oidc/./register`,
//! `/OIDC/Register`, `/oidc/%72egister`, `/oidc/register;x`, ...) is `dcr`. We therefore
//! classify a canonical form of the path, and forward that canonical form upstream for `dcr`
//! requests, so gateway and IdP always look at the same path.

use crate::scope::Scope;

/// Compiled route table. Paths are stored in canonical (lower-case, no trailing slash) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    registration_path: String,
    upstream_registration_path: String,
    /// The upstream's own registration path (when it differs) is also `dcr`: a client that
    /// learned it from the discovery document must not bypass the gateway's checks.
    dcr_paths: Vec<String>,
    management_prefixes: Vec<String>,
}

/// The outcome of classifying one request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub scope: Scope,
    /// For `dcr`: true when the path is the registration endpoint itself (not a RFC 7592
    /// client configuration path below it).
    pub is_registration: bool,
    /// For `dcr`: the path (with the original query) to send upstream.
    pub upstream_path: Option<String>,
}

impl Router {
    /// `registration_path` and `upstream_registration_path` must start with `/`
    /// (checked by the config loader).
    pub fn new(
        registration_path: &str,
        upstream_registration_path: &str,
        management_prefixes: &[String],
    ) -> Router {
        let reg = canonical_path(registration_path);
        let up = canonical_path(upstream_registration_path);
        let mut dcr_paths = vec![reg.clone()];
        if up != reg {
            dcr_paths.push(up.clone());
        }
        let mut management_prefixes: Vec<String> =
            management_prefixes.iter().map(|p| canonical_path(p)).collect();
        management_prefixes.retain(|p| p != "/");
        Router {
            registration_path: reg,
            upstream_registration_path: trim_trailing_slash(upstream_registration_path),
            dcr_paths,
            management_prefixes,
        }
    }

    pub fn registration_path(&self) -> &str {
        &self.registration_path
    }

    /// Classify a request target (`path?query` as received).
    pub fn classify(&self, target: &str) -> Route {
        let (path, query) = match target.find('?') {
            Some(i) => (&target[..i], Some(&target[i..])),
            None => (target, None),
        };
        let canon = canonical_path(path);
        for dcr in &self.dcr_paths {
            if let Some(rest) = strip_segment_prefix(&canon, dcr) {
                let mut upstream = self.upstream_registration_path.clone();
                // The client id part keeps its original case: ids are case-sensitive.
                if !rest.is_empty() {
                    let original_rest = original_suffix(path, rest.len());
                    upstream.push_str(&original_rest);
                }
                if let Some(q) = query {
                    upstream.push_str(q);
                }
                return Route {
                    scope: Scope::Dcr,
                    is_registration: rest.is_empty(),
                    upstream_path: Some(upstream),
                };
            }
        }
        let scope = if self
            .management_prefixes
            .iter()
            .any(|p| strip_segment_prefix(&canon, p).is_some())
        {
            Scope::Management
        } else {
            Scope::Authentication
        };
        Route { scope, is_registration: false, upstream_path: None }
    }
}

/// `path` equals `prefix` or continues it with a `/`: returns the rest (`""` or `/...`).
fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// The canonical suffix of the decoded path has `len` bytes; recover the same segments from
/// the original path with their case preserved, by canonicalising without lower-casing.
fn original_suffix(path: &str, len: usize) -> String {
    let full = canonical_segments(path).join("/");
    let full = format!("/{full}");
    if len <= full.len() && full.is_char_boundary(full.len() - len) {
        full[full.len() - len..].to_string()
    } else {
        String::new()
    }
}

fn trim_trailing_slash(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

/// Canonical form used for classification: percent-decoded (repeatedly, so double encoding
/// does not hide a path), `\` read as `/` (as some servers do), `;params` stripped from each
/// segment (Java servlet containers ignore them), empty and `.` segments dropped, `..`
/// resolved, lower case, no trailing slash.
pub fn canonical_path(path: &str) -> String {
    let segs = canonical_segments(path);
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

fn canonical_segments(path: &str) -> Vec<String> {
    let decoded = decode_fully(path);
    let unified = decoded.replace('\\', "/");
    let mut segs: Vec<String> = Vec::new();
    for raw in unified.split('/') {
        let seg = match raw.find(';') {
            Some(i) => &raw[..i],
            None => raw,
        };
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s.to_string()),
        }
    }
    segs
}

/// Percent-decode until stable (bounded), lossily: invalid UTF-8 becomes U+FFFD, which
/// matches no configured path.
fn decode_fully(path: &str) -> String {
    let mut cur = path.to_string();
    for _ in 0..4 {
        if !cur.contains('%') {
            break;
        }
        let next = percent_encoding::percent_decode_str(&cur).decode_utf8_lossy().into_owned();
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new("/oidc/register", "/reg", &["/api/v2/".into(), "/scim/".into()])
    }

    #[test]
    fn registration_spellings_are_dcr() {
        let r = router();
        for p in [
            "/oidc/register",
            "//oidc/register",
            "/oidc//register",
            "/oidc/register/",
            "/oidc/./register",
            "/oidc/x/../register",
            "/OIDC/Register",
            "/oidc/%72egister",
            "/oidc%2fregister",
            "/oidc/%2572egister",
            "/oidc/register?foo=bar",
            "/oidc/register;jsessionid=1",
            "\\oidc\\register",
            "/./oidc/register/.",
            "/../oidc/register",
        ] {
            let route = r.classify(p);
            assert_eq!(route.scope, Scope::Dcr, "{p}");
            assert!(route.is_registration, "{p}");
            assert!(route.upstream_path.as_deref().unwrap().starts_with("/reg"), "{p}");
        }
    }

    #[test]
    fn upstream_registration_path_is_dcr_too() {
        let r = router();
        let route = r.classify("/reg");
        assert_eq!(route.scope, Scope::Dcr);
        assert_eq!(route.upstream_path.as_deref(), Some("/reg"));
        assert_eq!(r.classify("/REG/").scope, Scope::Dcr);
    }

    #[test]
    fn client_configuration_paths_are_dcr_and_keep_the_client_id_case() {
        let r = router();
        let route = r.classify("/oidc/register/AbC123?x=1");
        assert_eq!(route.scope, Scope::Dcr);
        assert!(!route.is_registration);
        assert_eq!(route.upstream_path.as_deref(), Some("/reg/AbC123?x=1"));
        let route = r.classify("//oidc/./register//Client%2DId");
        assert_eq!(route.upstream_path.as_deref(), Some("/reg/Client-Id"));
    }

    #[test]
    fn query_string_is_forwarded() {
        let r = router();
        assert_eq!(r.classify("/oidc/register?a=b").upstream_path.as_deref(), Some("/reg?a=b"));
    }

    #[test]
    fn near_misses_are_not_dcr() {
        let r = router();
        for p in ["/oidc/registerx", "/oidc/registe", "/oidc", "/register", "/oidc/reg", "/regx"] {
            assert_ne!(r.classify(p).scope, Scope::Dcr, "{p}");
        }
    }

    #[test]
    fn management_prefixes() {
        let r = router();
        assert_eq!(r.classify("/api/v2/clients").scope, Scope::Management);
        assert_eq!(r.classify("/api/v2").scope, Scope::Management);
        assert_eq!(r.classify("//API/v2/users?q=1").scope, Scope::Management);
        assert_eq!(r.classify("/api/%762/users").scope, Scope::Management);
        assert_eq!(r.classify("/scim/v2/Users").scope, Scope::Management);
        assert_eq!(r.classify("/api/v20").scope, Scope::Authentication);
        assert_eq!(r.classify("/x/../api/v2/x").scope, Scope::Management);
    }

    #[test]
    fn everything_else_is_authentication() {
        let r = router();
        for p in ["/", "", "/authorize", "/.well-known/openid-configuration", "/token?x=/oidc/register"] {
            assert_eq!(r.classify(p).scope, Scope::Authentication, "{p}");
        }
    }

    #[test]
    fn same_public_and_upstream_path() {
        let r = Router::new("/oidc/register", "/oidc/register", &[]);
        let route = r.classify("/oidc/register/");
        assert_eq!(route.upstream_path.as_deref(), Some("/oidc/register"));
    }

    #[test]
    fn canonical_path_is_idempotent() {
        for p in ["/a/b/", "//A//./b/../c", "/%2e%2e/x", "", "/"] {
            let c = canonical_path(p);
            assert_eq!(canonical_path(&c), c);
        }
    }
}
