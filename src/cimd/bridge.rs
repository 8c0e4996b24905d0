//! `[cimd] mode = "bridge"`, the pure part: which IdP endpoint a request is for, where its
//! `client_id` is (query, form body, HTTP Basic), how it is rewritten to the IdP's client_id,
//! and the registration the gateway sends for a document. The I/O (the store, the IdP calls,
//! single flight) is `registry::bridge`; the proxy applies the answers (`proxy::cimd`).

use serde_json::{Map, Value};

use super::Document;

/// The IdP endpoints whose `client_id` the bridge maps (and, in `enforce` mode, the PAR
/// endpoint, judged like the authorization endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Authorize,
    Par,
    Token,
    Revocation,
    Introspection,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Authorize => "authorize",
            Endpoint::Par => "par",
            Endpoint::Token => "token",
            Endpoint::Revocation => "revocation",
            Endpoint::Introspection => "introspection",
        }
    }
}

/// The endpoint paths, as the gateway forwards them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    pub authorize: Vec<String>,
    pub par: Vec<String>,
    pub token: Vec<String>,
    pub revocation: Vec<String>,
    pub introspection: Vec<String>,
}

/// The common paths, when neither the configuration nor the IdP's discovery document names
/// them.
pub const COMMON_PAR: &[&str] = &["/par", "/request", "/oauth/par", "/oauth2/par"];
pub const COMMON_TOKEN: &[&str] = &["/token", "/oauth/token", "/oauth2/token"];
pub const COMMON_REVOCATION: &[&str] =
    &["/revoke", "/revocation", "/token/revocation", "/oauth/revoke", "/oauth2/revoke"];
pub const COMMON_INTROSPECTION: &[&str] =
    &["/introspect", "/introspection", "/token/introspection", "/oauth/introspect", "/oauth2/introspect"];

impl Paths {
    /// The endpoint `path` is (matched as IdPs route: any case, a trailing slash).
    pub fn endpoint_of(&self, path: &str) -> Option<Endpoint> {
        let same = |a: &str, b: &str| a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'));
        let table = [
            (&self.authorize, Endpoint::Authorize),
            (&self.par, Endpoint::Par),
            (&self.token, Endpoint::Token),
            (&self.revocation, Endpoint::Revocation),
            (&self.introspection, Endpoint::Introspection),
        ];
        table.iter().find(|(list, _)| list.iter().any(|p| same(p, path))).map(|(_, e)| *e)
    }

    /// The paths an IdP's discovery document names (`pushed_authorization_request_endpoint`,
    /// `token_endpoint`, `revocation_endpoint`, `introspection_endpoint`), each `None` when
    /// absent. `authorize` is left empty (`[cimd] authorize_paths` has its own default).
    pub fn from_discovery(doc: &[u8]) -> [Option<String>; 4] {
        let v: Value = serde_json::from_slice(doc).unwrap_or(Value::Null);
        let path = |k: &str| {
            v.get(k).and_then(Value::as_str).and_then(|u| url::Url::parse(u).ok()).map(|u| u.path().to_string())
        };
        [
            path("pushed_authorization_request_endpoint"),
            path("token_endpoint"),
            path("revocation_endpoint"),
            path("introspection_endpoint"),
        ]
    }
}

/// Where a request's `client_id` is, and its value: at most once in the query and form
/// together (a parameter given twice is ambiguous, RFC 6749 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdAt {
    None,
    Query(String),
    Body(String),
}

/// `client_id` of a query and a form body. `Err` when it is given more than once.
pub fn client_id_in(query: &str, form: Option<&[u8]>) -> Result<ClientIdAt, &'static str> {
    let find = |bytes: &[u8]| -> Result<Option<String>, &'static str> {
        let mut found = None;
        for (k, v) in url::form_urlencoded::parse(bytes) {
            if k == "client_id" {
                if found.is_some() {
                    return Err("client_id is repeated");
                }
                found = Some(v.into_owned());
            }
        }
        Ok(found)
    };
    match (find(query.as_bytes())?, form.map(find).transpose()?.flatten()) {
        (Some(_), Some(_)) => Err("client_id is repeated"),
        (Some(q), None) => Ok(ClientIdAt::Query(q)),
        (None, Some(b)) => Ok(ClientIdAt::Body(b)),
        (None, None) => Ok(ClientIdAt::None),
    }
}

/// `form` (query or `application/x-www-form-urlencoded` body) with the value of `client_id`
/// replaced by `to`; every other pair keeps its bytes. `None` when there is no `client_id`.
pub fn rewrite_client_id(form: &str, to: &str) -> Option<String> {
    let mut changed = false;
    let enc: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
    let out: Vec<String> = form
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let decoded: String = url::form_urlencoded::parse(key.as_bytes()).map(|(k, _)| k.into_owned()).collect();
            if decoded == "client_id" {
                changed = true;
                format!("client_id={enc}")
            } else {
                pair.to_string()
            }
        })
        .collect();
    changed.then(|| out.join("&"))
}

/// The client_id of `Authorization: Basic …` (RFC 6749 §2.3.1: form-encoded, then base64),
/// `None` when the header is not Basic or not readable.
pub fn basic_client_id(authorization: &[u8]) -> Option<String> {
    use base64::Engine;
    let text = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, creds) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(creds.trim()).ok()?;
    let user = raw.split(|b| *b == b':').next()?;
    let decoded: String = url::form_urlencoded::parse(user).map(|(k, v)| format!("{k}{v}")).collect();
    Some(decoded)
}

/// A pushed authorization request's `request_uri` (RFC 9126 §2.2): issued by the IdP for a
/// request the gateway already judged at the PAR endpoint.
pub fn is_par_request_uri(v: &str) -> bool {
    v.starts_with("urn:ietf:params:oauth:request_uri:")
}

/// The registration the gateway sends the IdP for `doc` (RFC 7591): the document as the
/// registration policy normalized it (never its `client_id`, which the IdP assigns), with the
/// IdP profile's derived members.
pub fn registration_body(doc: &Document, derive: &[crate::core::verify::Derive]) -> Vec<u8> {
    let mut m: Map<String, Value> = doc.registration.document.clone();
    m.remove("client_id");
    crate::core::verify::derive(&mut m, derive);
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The RFC 7592 update of the IdP's client `idp_client_id` to a changed document: the whole
/// metadata again, with the IdP's `client_id` (§2.2).
pub fn update_body(doc: &Document, idp_client_id: &str, derive: &[crate::core::verify::Derive]) -> Vec<u8> {
    let mut m: Map<String, Value> = doc.registration.document.clone();
    crate::core::verify::derive(&mut m, derive);
    m.insert("client_id".into(), Value::String(idp_client_id.to_string()));
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_is_found_once_in_query_or_body() {
        assert_eq!(client_id_in("a=1&client_id=x", None), Ok(ClientIdAt::Query("x".into())));
        assert_eq!(
            client_id_in("", Some(b"client_id=https%3A%2F%2Fa.example%2Fc")),
            Ok(ClientIdAt::Body("https://a.example/c".into()))
        );
        assert_eq!(client_id_in("a=1", Some(b"b=2")), Ok(ClientIdAt::None));
        assert!(client_id_in("client_id=x", Some(b"client_id=x")).is_err());
        assert!(client_id_in("client_id=x&client_id=y", None).is_err());
        assert!(client_id_in("", Some(b"client_id=x&client_id=x")).is_err());
    }

    #[test]
    fn only_client_id_is_rewritten_other_bytes_kept() {
        let q = "response_type=code&client_id=https%3A%2F%2Fapp.example%2Fc.json&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&scope=a+b";
        let out = rewrite_client_id(q, "idp/42 x").unwrap();
        assert_eq!(
            out,
            "response_type=code&client_id=idp%2F42+x&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&scope=a+b"
        );
        // An encoded name is still client_id.
        assert_eq!(rewrite_client_id("client%5Fid=u&x=1", "k").unwrap(), "client_id=k&x=1");
        assert_eq!(rewrite_client_id("grant_type=x&code=y", "k"), None);
        assert_eq!(rewrite_client_id("", "k"), None);
    }

    #[test]
    fn basic_credentials_are_read() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("https%3A%2F%2Fapp.example%2Fc.json:secret");
        assert_eq!(basic_client_id(format!("Basic {b64}").as_bytes()).as_deref(), Some("https://app.example/c.json"));
        assert_eq!(basic_client_id(b"Bearer abc"), None);
        assert_eq!(basic_client_id(b"Basic !!!"), None);
    }

    #[test]
    fn endpoints_match_as_idps_route_them() {
        let p = Paths {
            authorize: vec!["/auth".into()],
            par: vec!["/request".into()],
            token: vec!["/token".into()],
            revocation: vec!["/token/revocation".into()],
            introspection: vec![],
        };
        assert_eq!(p.endpoint_of("/AUTH/"), Some(Endpoint::Authorize));
        assert_eq!(p.endpoint_of("/request"), Some(Endpoint::Par));
        assert_eq!(p.endpoint_of("/token"), Some(Endpoint::Token));
        assert_eq!(p.endpoint_of("/token/revocation/"), Some(Endpoint::Revocation));
        assert_eq!(p.endpoint_of("/auth/uid123"), None);
        let doc = br#"{"token_endpoint":"http://i.example/token","pushed_authorization_request_endpoint":"http://i.example/request","revocation_endpoint":"http://i.example/token/revocation"}"#;
        assert_eq!(
            Paths::from_discovery(doc),
            [Some("/request".into()), Some("/token".into()), Some("/token/revocation".into()), None]
        );
    }

    #[test]
    fn par_request_uris_are_told_from_others() {
        assert!(is_par_request_uri("urn:ietf:params:oauth:request_uri:abc"));
        assert!(!is_par_request_uri("https://app.example/req.jwt"));
    }

    #[test]
    fn the_registration_never_carries_the_url_and_the_update_carries_the_idp_id() {
        let url = "https://app.example.com/client.json";
        let body = format!(
            r#"{{"client_id":"{url}","client_name":"App","redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"none"}}"#
        );
        let doc =
            super::super::validate_document(url, "app.example.com", body.as_bytes(), &Default::default()).unwrap();
        let reg: Value = serde_json::from_slice(&registration_body(&doc, &[])).unwrap();
        assert!(reg.get("client_id").is_none());
        assert_eq!(reg["token_endpoint_auth_method"], "none");
        assert_eq!(reg["redirect_uris"][0], "https://app.example.com/cb");
        let upd: Value = serde_json::from_slice(&update_body(&doc, "idp-1", &[])).unwrap();
        assert_eq!(upd["client_id"], "idp-1");
        assert_eq!(upd["client_name"], "App");
    }
}
