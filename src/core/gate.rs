//! Registration admission: what happens to a `dcr`-scope request after the ACL allowed it.
//! Pure — the adapter supplies the facts (method, route, body presence, headers, the token
//! verdict) and does the I/O between the steps (rate limiting, reading the body).
//!
//! The steps, in the order the adapter calls them:
//! 1. [`admit_head`]: method, the enable switch, the initial access token; chooses the policy
//!    (base, the token's overrides, or for an RFC 7592 update the overrides of the token
//!    that registered the client) and the rate-limit class.
//! 2. the adapter counts the request ([`Admission::rate_class`]), then [`Admission::after_count`]
//!    answers a token problem (after counting, in its own class, so a flood of bad tokens
//!    cannot lock token holders out).
//! 3. [`Admission::body_plan`]: no body allowed (refused if present) or read it, after the
//!    media type and declared length are checked.
//! 4. [`admit_body`]: the payload check; the forwarded bytes are the gateway's.
//!
//! With a `[rate_limit] per_hosted_client` limit, a registration POST that is not refused for
//! its token ([`Admission::counts_after_body`]) is counted after step 3 instead: its redirect
//! URIs ([`hosted_rate_key`]) decide whether it counts for a catalogued hosted client or for
//! its address. The body is read whole (bounded by `max_body_bytes` and
//! `body_read_timeout_ms`) before a 429, so no unread body is left on the connection.

use std::borrow::Cow;
use std::time::Duration;

use crate::dcr::{self, Policy, RegistrationMode, StatementVerifier};
use crate::errors::GatewayError;
use crate::ratelimit::RateClass;
use crate::routes::Route;
use crate::tokens::{PolicyOverrides, TokenEntry, TokenError};

use super::outcome::Outcome;

/// A refused request: the answer and how it is counted.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub error: GatewayError,
    pub outcome: Outcome,
}

impl Refusal {
    fn new(outcome: Outcome, error: GatewayError) -> Refusal {
        Refusal { error, outcome }
    }
}

/// What the adapter read off the request head.
pub struct Facts<'a> {
    pub method: &'a http::Method,
    pub route: &'a Route,
    /// The request carries a body (chunked, or a non-zero length).
    pub has_body: bool,
    pub content_type: Option<&'a [u8]>,
    pub content_length: Option<&'a [u8]>,
}

/// The initial access token, in token mode: verified (and not used up) or why not.
pub type TokenVerdict = Option<Result<TokenEntry, TokenError>>;

/// What the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// GET, DELETE, OPTIONS: a body is refused, never forwarded unread.
    None,
    /// POST to the registration path.
    Registration,
    /// PUT to a client configuration path (RFC 7592 §2.2).
    Update,
}

/// The decision after step 1.
#[derive(Debug)]
pub struct Admission<'p> {
    pub payload: Payload,
    /// The policy the payload is checked against.
    pub policy: Cow<'p, Policy>,
    /// The token that admitted a registration.
    pub token: Option<TokenEntry>,
    token_error: Option<TokenError>,
    pub rate_class: RateClass,
    /// Token mode: the client's `Authorization` is the gateway's business, not the IdP's.
    pub strip_authorization: bool,
    /// Counted against the rate limits (OPTIONS preflights are not).
    pub counted: bool,
}

/// Step 1. `pinned`: the overrides of the token that registered the client an RFC 7592
/// request names (their pin holds for its updates too).
pub fn admit_head<'p>(
    facts: &Facts<'_>,
    base: &'p Policy,
    token: TokenVerdict,
    pinned: Option<&PolicyOverrides>,
) -> Result<Admission<'p>, Refusal> {
    let m = facts.method;
    let mut adm = Admission {
        payload: Payload::None,
        policy: Cow::Borrowed(base),
        token: None,
        token_error: None,
        rate_class: RateClass::Main,
        strip_authorization: false,
        counted: true,
    };
    if *m == http::Method::OPTIONS {
        // CORS preflight for browser-based clients: the IdP answers it.
        adm.counted = false;
        return Ok(adm);
    }
    if facts.route.is_registration {
        if *m != http::Method::POST {
            return Err(Refusal::new(Outcome::Invalid, GatewayError::MethodNotAllowed { allow: "POST, OPTIONS" }));
        }
        if !base.enabled {
            return Err(Refusal::new(Outcome::Disabled, GatewayError::RegistrationDisabled));
        }
        adm.payload = Payload::Registration;
        if base.registration == RegistrationMode::Token {
            match token {
                Some(Ok(entry)) => {
                    if !entry.overrides.is_empty() {
                        adm.policy = Cow::Owned(entry.overrides.apply(base));
                    }
                    adm.strip_authorization = !base.forward_authorization;
                    adm.token = Some(entry);
                }
                Some(Err(e)) => adm.token_error = Some(e),
                None => adm.token_error = Some(TokenError::Missing),
            }
            if adm.token.is_none() {
                adm.rate_class = RateClass::Unauthenticated;
            }
        }
        return Ok(adm);
    }
    adm.payload = match *m {
        http::Method::GET | http::Method::DELETE => Payload::None,
        http::Method::PUT => Payload::Update,
        _ => {
            return Err(Refusal::new(
                Outcome::Invalid,
                GatewayError::MethodNotAllowed { allow: "GET, PUT, DELETE, OPTIONS" },
            ))
        }
    };
    if base.registration == RegistrationMode::Token {
        // RFC 7592 calls carry the registration access token, not an initial access token:
        // counted apart from the registrations that presented one.
        adm.rate_class = RateClass::Unauthenticated;
    }
    if let Some(p) = pinned.filter(|p| !p.is_empty()) {
        adm.policy = Cow::Owned(p.apply(base));
    }
    Ok(adm)
}

impl Admission<'_> {
    /// Count this request after its body is read (keyed by [`hosted_rate_key`]) rather than
    /// before: a registration POST in the main class (open registration or a valid token —
    /// requests without a valid token are counted, and answered, before any body is read)
    /// while `per_hosted_client` is in force.
    pub fn counts_after_body(&self, limits: &crate::ratelimit::RateLimitPolicy) -> bool {
        self.counted
            && self.payload == Payload::Registration
            && self.rate_class == RateClass::Main
            && self.token_error.is_none()
            && limits.enabled
            && limits.hosted_limit().is_some()
    }

    /// Step 2, after the request was counted: a token problem is answered now.
    pub fn after_count(&self) -> Result<(), Refusal> {
        match self.token_error {
            Some(e) => Err(Refusal::new(Outcome::Unauthorized, GatewayError::Unauthorized(e))),
            None => Ok(()),
        }
    }

    /// Step 3: `Ok(None)` forward without a body, `Ok(Some((limit, timeout)))` read the body.
    pub fn body_plan(&self, facts: &Facts<'_>) -> Result<Option<(usize, Duration)>, Refusal> {
        if self.payload == Payload::None {
            return if facts.has_body {
                Err(Refusal::new(Outcome::Invalid, GatewayError::BodyNotAllowed))
            } else {
                Ok(None)
            };
        }
        if !is_json(facts.content_type) {
            return Err(Refusal::new(Outcome::Invalid, GatewayError::UnsupportedMediaType));
        }
        let limit = self.policy.max_body_bytes;
        let declared =
            facts.content_length.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(Refusal::new(Outcome::Invalid, GatewayError::PayloadTooLarge { limit }));
        }
        Ok(Some((limit, Duration::from_millis(self.policy.body_read_timeout_ms))))
    }
}

/// The catalogued hosted client a registration body is proven to come from: every one of its
/// `redirect_uris` on that client's own https callbacks (`dcr::catalogue::hosted_rate_key`).
/// Read before validation, only to choose a rate-limit bucket; a body that is not a JSON
/// object with string `redirect_uris` has no key (and is refused by the check after it).
pub fn hosted_rate_key(body: &[u8]) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct Uris<'a> {
        #[serde(borrow, default)]
        redirect_uris: Vec<Cow<'a, str>>,
    }
    let uris: Uris<'_> = serde_json::from_slice(body).ok()?;
    let uris: Vec<&str> = uris.redirect_uris.iter().map(|u| u.as_ref()).collect();
    dcr::catalogue::hosted_rate_key(&uris)
}

/// `application/json`, any parameters, any case.
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(v) = content_type.and_then(|v| std::str::from_utf8(v).ok()) else { return false };
    v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json")
}

/// A payload that passed: the bytes to forward and what the audit line says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub body: Vec<u8>,
    pub software_statement_issuer: Option<String>,
    pub client_name: Option<String>,
    pub redirect_hosts: Vec<String>,
    pub dropped_members: Vec<String>,
    pub removed_scopes: Vec<String>,
    /// The catalogue entry (conf/known-clients.toml) the registration is proven to be: the
    /// `known_client` label of metrics and audit lines.
    pub known_client: Option<&'static str>,
    /// `[dcr] resolve_metadata_uris`: the hosts of the URIs the IdP would fetch, for the
    /// adapter to resolve and [`dcr::screen::judge_resolved`] to judge before the IdP is
    /// called (empty when the option is off).
    pub metadata_hosts: Vec<dcr::screen::MetadataHost>,
}

/// Step 4: check the payload. An update is checked whole without registration defaults and
/// carries the client id of its path (RFC 7592 §2.2), not whatever the body said. The IdP
/// profile's derived members (`derive`, e.g. Glewlwyd's `client_confidential`) are added to
/// the checked document, after validation.
pub fn admit_body(
    body: &[u8],
    payload: Payload,
    policy: &Policy,
    statements: &StatementVerifier,
    client_id: Option<&str>,
    derive: &[super::verify::Derive],
) -> Result<Admitted, Refusal> {
    let checked = match payload {
        Payload::Update => dcr::check_update_with(body, policy, statements),
        _ => dcr::check_with(body, policy, statements),
    };
    let invalid = |e| Refusal::new(Outcome::Invalid, GatewayError::InvalidRegistration(e));
    let n = checked.map_err(invalid)?;
    let metadata_hosts = if policy.resolve_metadata_uris {
        dcr::screen::metadata_hosts(&n.document).map_err(invalid)?
    } else {
        Vec::new()
    };
    let known_client = {
        let uris: Vec<&str> = n
            .document
            .get("redirect_uris")
            .and_then(|v| v.as_array())
            .map_or(Vec::new(), |a| a.iter().filter_map(|v| v.as_str()).collect());
        dcr::catalogue::identify(n.client_name.as_deref(), &uris).map(|c| c.id.as_str())
    };
    let id = match (payload, client_id) {
        (Payload::Update, Some(id)) => Some(id),
        _ => None,
    };
    let body = if id.is_none() && derive.is_empty() {
        n.body
    } else {
        let mut doc = n.document;
        if let Some(id) = id {
            doc.insert("client_id".into(), serde_json::Value::String(id.to_string()));
        }
        super::verify::derive(&mut doc, derive);
        serde_json::to_vec(&doc).map_err(|_| Refusal::new(Outcome::Invalid, GatewayError::BadRequestBody))?
    };
    Ok(Admitted {
        body,
        software_statement_issuer: n.software_statement_issuer,
        client_name: n.client_name,
        redirect_hosts: n.redirect_hosts,
        dropped_members: n.dropped_members,
        removed_scopes: n.removed_scopes,
        known_client,
        metadata_hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    fn route(is_registration: bool) -> Route {
        Route {
            scope: Scope::Dcr,
            is_registration,
            client_id: (!is_registration).then(|| "abc".to_string()),
            upstream_target: "/reg".into(),
        }
    }

    fn facts<'a>(m: &'a http::Method, r: &'a Route, has_body: bool) -> Facts<'a> {
        Facts { method: m, route: r, has_body, content_type: Some(b"application/json"), content_length: None }
    }

    fn entry(overrides: PolicyOverrides) -> TokenEntry {
        let set = crate::tokens::TokenSet::parse(&format!(
            "[[token]]\nlabel = \"partner\"\nsha256 = \"{}\"\n",
            crate::tokens::hash_token("t")
        ))
        .unwrap();
        let mut e = set.entries()[0].clone();
        e.overrides = overrides;
        e
    }

    #[test]
    fn hosted_clients_are_known_by_their_redirect_uris() {
        let claude = br#"{"client_name":"x","redirect_uris":["https://claude.ai/api/mcp/auth_callback"]}"#;
        assert_eq!(hosted_rate_key(claude), Some("claude"));
        let escaped = br#"{"redirect_uris":["https:\/\/chatgpt.com\/connector_platform_oauth_redirect"]}"#;
        assert_eq!(hosted_rate_key(escaped), Some("chatgpt"));
        for other in [
            &br#"{"redirect_uris":["https://claude.ai/api/mcp/auth_callback","https://evil.example/cb"]}"#[..],
            br#"{"redirect_uris":[]}"#,
            br#"{"redirect_uris":"https://claude.ai/api/mcp/auth_callback"}"#,
            br#"["https://claude.ai/api/mcp/auth_callback"]"#,
            b"not json",
        ] {
            assert_eq!(hosted_rate_key(other), None, "{}", String::from_utf8_lossy(other));
        }
        // Which requests wait for their body to be counted.
        let limits = crate::ratelimit::RateLimitPolicy::default();
        let reg = route(true);
        let f = facts(&http::Method::POST, &reg, true);
        assert!(admit_head(&f, &Policy::default(), None, None).unwrap().counts_after_body(&limits));
        let none = crate::ratelimit::RateLimitPolicy { per_hosted_client: None, ..limits.clone() };
        assert!(!admit_head(&f, &Policy::default(), None, None).unwrap().counts_after_body(&none));
        let token = Policy { registration: RegistrationMode::Token, ..Policy::default() };
        let bad = admit_head(&f, &token, Some(Err(TokenError::Unknown)), None).unwrap();
        assert!(!bad.counts_after_body(&limits), "no valid token: counted and answered before the body");
        let cfg = route(false);
        let put = facts(&http::Method::PUT, &cfg, true);
        assert!(!admit_head(&put, &Policy::default(), None, None).unwrap().counts_after_body(&limits));
    }

    #[test]
    fn methods_and_switch() {
        let p = Policy::default();
        let reg = route(true);
        let e = admit_head(&facts(&http::Method::GET, &reg, false), &p, None, None).unwrap_err();
        assert_eq!(e.error.status(), 405);
        let off = Policy { enabled: false, ..Policy::default() };
        let e = admit_head(&facts(&http::Method::POST, &reg, true), &off, None, None).unwrap_err();
        assert_eq!(e.outcome, Outcome::Disabled);
        let cfg = route(false);
        let e = admit_head(&facts(&http::Method::PATCH, &cfg, true), &p, None, None).unwrap_err();
        assert_eq!(e.error.status(), 405);
        let a = admit_head(&facts(&http::Method::OPTIONS, &reg, false), &p, None, None).unwrap();
        assert!(!a.counted);
    }

    #[test]
    fn bodies_are_read_or_refused_never_passed_unread() {
        let p = Policy::default();
        let cfg = route(false);
        for m in [http::Method::GET, http::Method::DELETE, http::Method::OPTIONS] {
            let f = facts(&m, &cfg, true);
            let a = admit_head(&f, &p, None, None).unwrap();
            assert_eq!(a.body_plan(&f).unwrap_err().error.status(), 400, "{m}");
            let f = facts(&m, &cfg, false);
            assert_eq!(a.body_plan(&f).unwrap(), None);
        }
        let f = facts(&http::Method::PUT, &cfg, true);
        let a = admit_head(&f, &p, None, None).unwrap();
        assert_eq!(a.payload, Payload::Update);
        assert!(a.body_plan(&f).unwrap().is_some());
        let f = Facts { content_type: Some(b"text/plain"), ..facts(&http::Method::PUT, &cfg, true) };
        assert_eq!(a.body_plan(&f).unwrap_err().error.status(), 415);
        let f = Facts { content_length: Some(b"99999999"), ..facts(&http::Method::PUT, &cfg, true) };
        assert_eq!(a.body_plan(&f).unwrap_err().error.status(), 413);
    }

    #[test]
    fn token_mode_counts_first_then_answers() {
        let p = Policy { registration: RegistrationMode::Token, ..Policy::default() };
        let reg = route(true);
        let f = facts(&http::Method::POST, &reg, true);
        let a = admit_head(&f, &p, Some(Err(TokenError::Unknown)), None).unwrap();
        assert_eq!(a.rate_class, RateClass::Unauthenticated);
        assert_eq!(a.after_count().unwrap_err().outcome, Outcome::Unauthorized);
        let a = admit_head(&f, &p, Some(Ok(entry(PolicyOverrides::default()))), None).unwrap();
        assert_eq!(a.rate_class, RateClass::Main);
        assert!(a.after_count().is_ok());
        assert!(a.strip_authorization);
    }

    #[test]
    fn updates_keep_the_pin_of_the_token_that_registered_the_client() {
        let base = Policy::default();
        let pin = PolicyOverrides { allowed_scopes: Some(vec!["openid".into()]), ..PolicyOverrides::default() };
        let cfg = route(false);
        let f = facts(&http::Method::PUT, &cfg, true);
        let a = admit_head(&f, &base, None, Some(&pin)).unwrap();
        let body =
            br#"{"client_id":"other","redirect_uris":["https://app.example.com/cb"],"scope":"openid offline_access"}"#;
        let e = admit_body(body, a.payload, &a.policy, &StatementVerifier::empty(), Some("abc"), &[]).unwrap_err();
        assert_eq!(e.error.status(), 400);
        let ok = br#"{"client_id":"other","redirect_uris":["https://app.example.com/cb"],"scope":"openid"}"#;
        let admitted = admit_body(ok, a.payload, &a.policy, &StatementVerifier::empty(), Some("abc"), &[]).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&admitted.body).unwrap();
        assert_eq!(sent["client_id"], "abc", "the path's client id, not the body's");
        assert!(sent.get("token_endpoint_auth_method").is_none(), "no registration default in an update");
    }

    #[test]
    fn a_profile_adds_its_members_after_validation() {
        let p = Policy::default();
        let derive = crate::core::verify::glewlwyd_rule();
        let public = br#"{"redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none","client_confidential":true}"#;
        let a = admit_body(public, Payload::Registration, &p, &StatementVerifier::empty(), None, &derive).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(sent["client_confidential"], false, "{sent}");
        // Strict mode dropped the client's own member; the profile's is added after that.
        assert!(a.dropped_members.contains(&"client_confidential".to_string()), "{:?}", a.dropped_members);
        // Without the method, the registration default decides.
        let a = admit_body(
            br#"{"redirect_uris":["https://a.example/cb"]}"#,
            Payload::Registration,
            &p,
            &StatementVerifier::empty(),
            None,
            &derive,
        )
        .unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(sent["client_confidential"], true, "{sent}");
        // An update without the method gets nothing.
        let a = admit_body(
            br#"{"redirect_uris":["https://a.example/cb"]}"#,
            Payload::Update,
            &p,
            &StatementVerifier::empty(),
            Some("abc"),
            &derive,
        )
        .unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert!(sent.get("client_confidential").is_none(), "{sent}");
    }
}
