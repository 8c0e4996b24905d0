//! Keeping clients on the gateway: the IdP builds its discovery document and its
//! registration answers from its own idea of where it lives. Fetched through the gateway, a
//! document that still says `registration_endpoint: http://idp-internal:3000/reg` sends a
//! standard client (openid-client followed it) straight to the IdP — no validation, no ACL, no
//! audit line. These pure functions rewrite what passes through:
//!
//! - discovery documents (`/.well-known/openid-configuration`,
//!   `/.well-known/oauth-authorization-server`, issuer-path variants of both):
//!   `registration_endpoint` becomes the gateway's public registration URL, and every other
//!   endpoint URL (`*_endpoint`, `jwks_uri`, `*_uri` members holding URLs) whose origin is one
//!   of the IdP's origins is moved to the gateway's public base. `issuer` is never changed: it
//!   must equal the `iss` the IdP puts in its tokens.
//! - registration answers: `registration_client_uri` on an IdP origin under the upstream
//!   registration path becomes the public registration path.
//! - `Location` headers on an IdP origin.

use serde_json::{Map, Value};

/// What the rewrite needs to know.
#[derive(Debug, Clone)]
pub struct Rewriter {
    /// `scheme://host[:port]` clients use, no trailing slash.
    pub public_base: String,
    /// The public registration path (`[routes] registration_path`).
    pub registration_path: String,
    /// The IdP's registration path (`[routes] upstream_registration_path`).
    pub upstream_registration_path: String,
    /// Origins that mean "the IdP itself": the upstream origins and `[routes] idp_origins`.
    pub idp_origins: Vec<Origin>,
    /// `[cimd] mode = "bridge"`: discovery documents say the gateway takes client ID metadata
    /// documents (`client_id_metadata_document_supported: true`), for an IdP that does not.
    pub cimd_supported: bool,
}

/// A URL origin, normalized for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn of(url: &str) -> Option<Origin> {
        let u = url::Url::parse(url).ok()?;
        let scheme = u.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        Some(Origin { host: u.host_str()?.to_ascii_lowercase(), port: u.port_or_known_default()?, scheme })
    }
}

/// The path is a discovery document's: `…/.well-known/openid-configuration[/…]` or
/// `…/.well-known/oauth-authorization-server[/…]` (RFC 8414 §3.1 issuer-path variants).
pub fn is_discovery_path(segments: &[String]) -> bool {
    segments
        .windows(2)
        .any(|w| w[0] == ".well-known" && (w[1] == "openid-configuration" || w[1] == "oauth-authorization-server"))
}

impl Rewriter {
    fn public_registration_url(&self) -> String {
        format!("{}{}", self.public_base, self.registration_path)
    }

    /// `url` moved to the public base when its origin is the IdP's; `None` when it is not.
    pub fn rewrite_url(&self, url: &str) -> Option<String> {
        let origin = Origin::of(url)?;
        if !self.idp_origins.contains(&origin) {
            return None;
        }
        let u = url::Url::parse(url).ok()?;
        let mut path = u.path().to_string();
        // The IdP's registration path (and RFC 7592 paths below it) → the public one.
        let up = self.upstream_registration_path.trim_end_matches('/');
        if path == up || path.starts_with(&format!("{up}/")) {
            path = format!("{}{}", self.registration_path.trim_end_matches('/'), &path[up.len()..]);
        }
        let mut out = format!("{}{}", self.public_base, path);
        if let Some(q) = u.query() {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }

    /// A `Location` header: [`Rewriter::rewrite_url`] of the URL itself, and of every query
    /// parameter whose value is a URL on the IdP's origin (a login page's `callback_url`, a
    /// `redirect`/`return_to` back into the IdP: following it would take the client off the
    /// gateway). Parameters are looked at only when the location is the IdP's own (or relative):
    /// a redirect to the client (an authorization response) is not changed beyond its base, and
    /// `iss` (RFC 9207, compared with the unchanged `issuer`) never is. Other parameters keep
    /// their bytes. `None` when nothing changes.
    pub fn rewrite_location(&self, location: &str) -> Option<String> {
        let (base, query) = match location.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (location, None),
        };
        let (query, fragment) = match query.map(|q| q.split_once('#').map_or((q, None), |(q, f)| (q, Some(f)))) {
            Some((q, f)) => (Some(q), f),
            None => (None, None),
        };
        let mut changed = false;
        let new_base = match self.rewrite_url(base) {
            Some(b) => {
                changed = true;
                b
            }
            None => base.to_string(),
        };
        let own = changed || !base.contains("://");
        let new_query = query.filter(|_| own).map(|q| {
            q.split('&')
                .map(|pair| {
                    let Some((k, v)) = pair.split_once('=').filter(|(k, _)| *k != "iss") else {
                        return pair.to_string();
                    };
                    let decoded =
                        percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
                    match self.rewrite_url(&decoded) {
                        Some(u) => {
                            changed = true;
                            let enc: String = url::form_urlencoded::byte_serialize(u.as_bytes()).collect();
                            format!("{k}={enc}")
                        }
                        None => pair.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        if !changed {
            return None;
        }
        let mut out = new_base;
        if let Some(q) = new_query.or(query.map(str::to_string)) {
            out.push('?');
            out.push_str(&q);
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        Some(out)
    }

    /// A rewritten discovery document, or `None` when `body` is not a JSON object.
    pub fn rewrite_discovery(&self, body: &[u8]) -> Option<Vec<u8>> {
        self.rewrite_discovery_doc(serde_json::from_slice(body).ok()?)
    }

    /// [`Rewriter::rewrite_discovery`] of an already parsed document.
    pub fn rewrite_discovery_doc(&self, mut doc: Map<String, Value>) -> Option<Vec<u8>> {
        for (name, value) in doc.iter_mut() {
            if name == "issuer" {
                continue;
            }
            let Value::String(s) = value else { continue };
            let urlish = name.ends_with("_endpoint") || name.ends_with("_uri") || name.ends_with("_url");
            if urlish {
                if let Some(new) = self.rewrite_url(s) {
                    *s = new;
                }
            }
        }
        // `mtls_endpoint_aliases` (RFC 8705) holds endpoints too.
        if let Some(Value::Object(aliases)) = doc.get_mut("mtls_endpoint_aliases") {
            for v in aliases.values_mut() {
                if let Value::String(s) = v {
                    if let Some(new) = self.rewrite_url(s) {
                        *s = new;
                    }
                }
            }
        }
        doc.insert("registration_endpoint".into(), Value::String(self.public_registration_url()));
        if self.cimd_supported {
            doc.insert("client_id_metadata_document_supported".into(), Value::Bool(true));
        }
        serde_json::to_vec(&doc).ok()
    }

    /// A registration answer with `registration_client_uri` moved to the gateway, or `None`
    /// when nothing changes (or the body is not a JSON object).
    pub fn rewrite_registration(&self, body: &[u8]) -> Option<Vec<u8>> {
        self.rewrite_registration_doc(serde_json::from_slice(body).ok()?)
    }

    /// [`Rewriter::rewrite_registration`] of an already parsed document.
    pub fn rewrite_registration_doc(&self, mut doc: Map<String, Value>) -> Option<Vec<u8>> {
        if !self.rewrite_registration_in(&mut doc) {
            return None;
        }
        serde_json::to_vec(&doc).ok()
    }

    /// Move `registration_client_uri` onto the gateway in place; `false` when it was not on the
    /// IdP's origin (or absent).
    pub fn rewrite_registration_in(&self, doc: &mut Map<String, Value>) -> bool {
        let Some(Value::String(uri)) = doc.get("registration_client_uri") else { return false };
        let Some(new) = self.rewrite_url(uri) else { return false };
        doc.insert("registration_client_uri".into(), Value::String(new));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw() -> Rewriter {
        Rewriter {
            public_base: "https://gw.example".into(),
            registration_path: "/oidc/register".into(),
            upstream_registration_path: "/api/oidc/register".into(),
            idp_origins: vec![Origin::of("http://idp-internal:4593").unwrap()],
            cimd_supported: false,
        }
    }

    #[test]
    fn the_bridge_advertises_client_id_metadata_documents() {
        let doc = br#"{"issuer":"x","client_id_metadata_document_supported":false}"#;
        let plain: Value = serde_json::from_slice(&rw().rewrite_discovery(doc).unwrap()).unwrap();
        assert_eq!(plain["client_id_metadata_document_supported"], false, "untouched unless bridging");
        let bridged = Rewriter { cimd_supported: true, ..rw() };
        let out: Value = serde_json::from_slice(&bridged.rewrite_discovery(doc).unwrap()).unwrap();
        assert_eq!(out["client_id_metadata_document_supported"], true);
        let out: Value = serde_json::from_slice(&bridged.rewrite_discovery(br#"{"issuer":"x"}"#).unwrap()).unwrap();
        assert_eq!(out["client_id_metadata_document_supported"], true);
    }

    #[test]
    fn locations_and_their_nested_idp_urls_point_at_the_gateway() {
        let r = rw();
        let nested = "http%3A%2F%2Fidp-internal%3A4593%2Fapi%2Foidc%2Fauth%3Fclient_id%3Dc%26state%3Ds";
        let loc = format!("http://idp-internal:4593/login.html?scope=openid&callback_url={nested}&x=a%20b");
        let out = r.rewrite_location(&loc).unwrap();
        let (base, q) = out.split_once('?').unwrap();
        assert_eq!(base, "https://gw.example/login.html");
        let params: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert_eq!(params[0], ("scope".into(), "openid".into()));
        assert_eq!(params[1], ("callback_url".into(), "https://gw.example/api/oidc/auth?client_id=c&state=s".into()));
        assert!(q.ends_with("&x=a%20b"), "other parameters keep their bytes: {q}");
        // Relative: only the nested URL changes.
        let out = r.rewrite_location(&format!("/login.html?callback_url={nested}")).unwrap();
        assert!(out.starts_with("/login.html?callback_url=https%3A%2F%2Fgw.example%2Fapi%2Foidc%2Fauth"), "{out}");
        // Elsewhere, or nothing of the IdP's: unchanged.
        assert_eq!(r.rewrite_location("https://rp.example.com/cb?code=1&state=s"), None);
        assert_eq!(r.rewrite_location("https://rp.example.com/cb?next=https%3A%2F%2Fother.example%2F"), None);
        // An authorization response to the client: its parameters (RFC 9207 `iss` included) are
        // the IdP's answer, not navigation.
        assert_eq!(
            r.rewrite_location("https://rp.example.com/cb?iss=http%3A%2F%2Fidp-internal%3A4593%2Fapi%2Foidc"),
            None
        );
        let own = r.rewrite_location("http://idp-internal:4593/x?iss=http%3A%2F%2Fidp-internal%3A4593").unwrap();
        assert_eq!(own, "https://gw.example/x?iss=http%3A%2F%2Fidp-internal%3A4593");
    }

    #[test]
    fn discovery_paths() {
        let p = |s: &str| s.split('/').filter(|x| !x.is_empty()).map(String::from).collect::<Vec<_>>();
        assert!(is_discovery_path(&p("/.well-known/openid-configuration")));
        assert!(is_discovery_path(&p("/api/oidc/.well-known/openid-configuration")));
        assert!(is_discovery_path(&p("/.well-known/oauth-authorization-server/tenant1")));
        assert!(!is_discovery_path(&p("/.well-known/jwks.json")));
        assert!(!is_discovery_path(&p("/openid-configuration")));
    }

    #[test]
    fn discovery_documents_point_at_the_gateway() {
        let doc = br#"{"issuer":"http://idp-internal:4593/api/oidc","authorization_endpoint":"http://idp-internal:4593/api/oidc/auth","token_endpoint":"http://IDP-internal:4593/api/oidc/token?x=1","jwks_uri":"http://idp-internal:4593/api/oidc/jwks","registration_endpoint":"http://idp-internal:4593/api/oidc/register","service_documentation":"https://docs.example/","end_session_endpoint":"https://elsewhere.example/logout","grant_types_supported":["authorization_code"]}"#;
        let out: Value = serde_json::from_slice(&rw().rewrite_discovery(doc).unwrap()).unwrap();
        assert_eq!(out["issuer"], "http://idp-internal:4593/api/oidc", "issuer untouched");
        assert_eq!(out["authorization_endpoint"], "https://gw.example/api/oidc/auth");
        assert_eq!(out["token_endpoint"], "https://gw.example/api/oidc/token?x=1");
        assert_eq!(out["jwks_uri"], "https://gw.example/api/oidc/jwks");
        assert_eq!(out["registration_endpoint"], "https://gw.example/oidc/register");
        assert_eq!(out["end_session_endpoint"], "https://elsewhere.example/logout", "other origins untouched");
        assert_eq!(out["grant_types_supported"][0], "authorization_code");
        // Member order is kept.
        let keys: Vec<&str> = out.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys[0], "issuer");
    }

    #[test]
    fn a_document_without_registration_endpoint_gets_the_gateways() {
        let out: Value = serde_json::from_slice(&rw().rewrite_discovery(br#"{"issuer":"x"}"#).unwrap()).unwrap();
        assert_eq!(out["registration_endpoint"], "https://gw.example/oidc/register");
        assert!(rw().rewrite_discovery(b"[1]").is_none());
        assert!(rw().rewrite_discovery(b"not json").is_none());
    }

    #[test]
    fn registration_client_uri_is_moved_to_the_public_path() {
        let body = br#"{"client_id":"a/b","registration_client_uri":"http://idp-internal:4593/api/oidc/register/a%2Fb","client_secret":"s"}"#;
        let out: Value = serde_json::from_slice(&rw().rewrite_registration(body).unwrap()).unwrap();
        assert_eq!(out["registration_client_uri"], "https://gw.example/oidc/register/a%2Fb");
        assert_eq!(out["client_secret"], "s");
        assert!(rw().rewrite_registration(br#"{"registration_client_uri":"https://other.example/x"}"#).is_none());
        assert!(rw().rewrite_registration(br#"{"client_id":"x"}"#).is_none());
    }

    #[test]
    fn default_ports_compare_equal() {
        let r = Rewriter { idp_origins: vec![Origin::of("https://idp.example").unwrap()], ..rw() };
        assert_eq!(r.rewrite_url("https://idp.example:443/x").as_deref(), Some("https://gw.example/x"));
        assert_eq!(r.rewrite_url("http://idp.example/x"), None);
    }
}
