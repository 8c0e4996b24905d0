//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; the MCP
//! authorization specification's recommended client identification since 2025-11-25): the
//! pure rules. A `client_id` that is an https URL names a JSON document describing the
//! client; the gateway fetches it (through `src/fetch`, never from here) and judges it here.
//!
//! - [`Settings`]: the `[cimd]` section (mode, host lists, cache bounds, fetch limits).
//! - [`check_client_id_url`]: the URL rules (https, a path, no fragment, no userinfo, no dot
//!   segments, a length bound, the host lists).
//! - [`validate_document`]: the fetched document: `client_id` equal to the URL, no shared
//!   secret, and the same registration policy as a DCR payload (`dcr::check`: strict or
//!   permissive, redirect rules, anti-phishing, catalogue impersonation).
//! - [`check_redirect_uri`]: the authorization request's `redirect_uri` listed exactly.
//! - [`cache_ttl`] and [`DocumentCache`]: caching by the answer's headers within bounds;
//!   errors and invalid documents are never stored.
//! - [`bridge`]: `mode = "bridge"` — the endpoints whose `client_id` is mapped, where a request
//!   carries it, its rewriting, and the registration sent to the IdP for a document.
//!
//! Pure: no I/O, no clock of its own (every time is passed in).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dcr::{self, catalogue, Normalized, Policy};

pub mod bridge;

/// `[cimd] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// URL client_ids are not looked at (the IdP gets them as they are).
    #[default]
    Off,
    /// The IdP supports CIMD itself; the gateway checks the document before `/authorize` and
    /// PAR pass.
    Enforce,
    /// The IdP does not support CIMD; the gateway registers the client at the IdP and maps the
    /// URL client_id to the IdP's.
    Bridge,
}

/// The `[cimd]` section of gateway.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub mode: Mode,
    /// If non-empty, a client_id URL's host must match one of these patterns (the
    /// `redirect_host_allow` syntax: `example.com`, `*.example.com`).
    pub host_allow: Vec<String>,
    /// A client_id URL whose host matches one of these is refused.
    pub host_deny: Vec<String>,
    /// Longest client_id URL, in bytes.
    pub max_url_bytes: usize,
    /// Cache lifetime bounds: the answer's `Cache-Control` / `Expires` are clamped to them.
    pub cache_min_seconds: u64,
    pub cache_max_seconds: u64,
    /// Documents cached at most (least recently fetched evicted first).
    pub cache_entries: usize,
    /// Fetch limits (see src/fetch).
    pub max_document_bytes: usize,
    pub connect_timeout_ms: u64,
    pub total_timeout_ms: u64,
    pub per_host_concurrency: usize,
    pub per_host_per_minute: u32,
    /// Special-use addresses that may be fetched all the same (CIDRs).
    pub allow_cidrs: Vec<String>,
    /// `http` client_id URLs on loopback addresses (development only).
    pub allow_http_loopback: bool,
    /// A PEM file of CAs trusted besides the system's, relative to the configuration file.
    pub ca_file: Option<String>,
    /// Paths of the IdP's authorization endpoint (as the gateway forwards them): a GET or POST
    /// there with a URL `client_id` is decided on the client's document.
    pub authorize_paths: Vec<String>,
    /// Paths of the IdP's pushed authorization request endpoint (RFC 9126), judged like the
    /// authorization endpoint. Empty: the IdP's discovery document's, else the common ones.
    pub par_paths: Vec<String>,
    /// `bridge`: the token, revocation and introspection endpoint paths whose `client_id` is
    /// mapped. Empty: the IdP's discovery document's, else the common ones.
    pub token_paths: Vec<String>,
    pub revocation_paths: Vec<String>,
    pub introspection_paths: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Off,
            host_allow: Vec::new(),
            host_deny: Vec::new(),
            max_url_bytes: 2048,
            cache_min_seconds: 300,
            cache_max_seconds: 86_400,
            cache_entries: 10_000,
            max_document_bytes: 5120,
            connect_timeout_ms: 2000,
            total_timeout_ms: 5000,
            per_host_concurrency: 2,
            per_host_per_minute: 30,
            allow_cidrs: Vec::new(),
            allow_http_loopback: false,
            ca_file: None,
            authorize_paths: vec!["/authorize".into()],
            par_paths: Vec::new(),
            token_paths: Vec::new(),
            revocation_paths: Vec::new(),
            introspection_paths: Vec::new(),
        }
    }
}

impl Settings {
    /// Configuration problems, `(key, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, list) in [
            ("cimd.authorize_paths", &self.authorize_paths),
            ("cimd.par_paths", &self.par_paths),
            ("cimd.token_paths", &self.token_paths),
            ("cimd.revocation_paths", &self.revocation_paths),
            ("cimd.introspection_paths", &self.introspection_paths),
        ] {
            for (i, p) in list.iter().enumerate() {
                if !p.starts_with('/') {
                    out.push((format!("{key}[{i}]"), format!("{p:?}: a path starts with /")));
                }
            }
        }
        for (key, list) in [("cimd.host_allow", &self.host_allow), ("cimd.host_deny", &self.host_deny)] {
            for (i, p) in list.iter().enumerate() {
                if !dcr::is_host_pattern(p) {
                    out.push((format!("{key}[{i}]"), format!("invalid host pattern {p:?}")));
                }
            }
        }
        for (i, c) in self.allow_cidrs.iter().enumerate() {
            if c.parse::<ipnet::IpNet>().is_err() {
                out.push((format!("cimd.allow_cidrs[{i}]"), format!("{c:?} is not a CIDR")));
            }
        }
        if self.cache_min_seconds > self.cache_max_seconds {
            out.push(("cimd.cache_min_seconds".into(), "must not exceed cache_max_seconds".into()));
        }
        for (key, v) in [
            ("cimd.max_url_bytes", self.max_url_bytes),
            ("cimd.max_document_bytes", self.max_document_bytes),
            ("cimd.cache_entries", self.cache_entries),
            ("cimd.per_host_concurrency", self.per_host_concurrency),
        ] {
            if v == 0 {
                out.push((key.into(), "must be at least 1".into()));
            }
        }
        out
    }
}

/// Why a URL client_id or its document is refused. The description names the rule, never
/// the document's content beyond short fragments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", self.code())]
pub struct CimdError {
    pub kind: ErrorKind,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client_id URL breaks a rule, or its host is not allowed.
    BadClientId,
    /// The document could not be fetched (the fetcher's outcome is in the description).
    Unreachable,
    /// The document is not a valid client metadata document.
    InvalidDocument,
    /// The request's `redirect_uri` is not one the document lists.
    RedirectUriNotListed,
    /// The request's `response_type` is not one the document registers.
    ResponseTypeNotRegistered,
}

impl CimdError {
    fn new(kind: ErrorKind, description: impl Into<String>) -> CimdError {
        CimdError { kind, description: description.into() }
    }

    /// The OAuth error code for the authorization request (RFC 6749 §4.1.2.1).
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::RedirectUriNotListed => "invalid_request",
            ErrorKind::ResponseTypeNotRegistered => "unauthorized_client",
            _ => "invalid_client",
        }
    }

    /// The document failed to load (no answer to judge), as opposed to a judged refusal.
    pub fn unreachable(description: impl Into<String>) -> CimdError {
        CimdError::new(ErrorKind::Unreachable, description)
    }

    /// A request the gateway cannot judge as the IdP will read it (a request object, a
    /// `client_id` both in the query and the body).
    pub fn unjudgeable(description: impl Into<String>) -> CimdError {
        CimdError::new(ErrorKind::BadClientId, description)
    }
}

/// Does this `client_id` claim to be a metadata document URL (and so fall under CIMD)?
/// Any value a WHATWG URL parser reads with the `https` or `http` scheme — what an IdP with
/// CIMD support may use to tell URLs: leading controls and spaces skipped, tabs and newlines
/// anywhere ignored, the scheme in any case, then `:` (`https:/h/x`, ` https://h/x`,
/// `https:\\h\x` are all URLs to it). A narrower test here would let such a spelling reach the
/// IdP unjudged; [`check_client_id_url`] then refuses every spelling but the plain one (and
/// `http` unless development loopback is allowed).
pub fn is_url_client_id(client_id: &str) -> bool {
    let mut head = [0u8; 6];
    let mut n = 0;
    for b in client_id.bytes().skip_while(|b| *b <= b' ').filter(|b| !matches!(b, b'\t' | b'\n' | b'\r')) {
        if n == head.len() {
            break;
        }
        head[n] = b.to_ascii_lowercase();
        n += 1;
    }
    head[..n].starts_with(b"https:") || head[..n].starts_with(b"http:")
}

/// The URL rules of the draft (§3): `https`, a path other than `/`, no single- or double-dot
/// path segment (also percent-encoded), no fragment, no username or password, at most
/// `max_url_bytes`; then the host lists. A query is allowed (the draft says SHOULD NOT).
/// Returns the host (ASCII lower case).
pub fn check_client_id_url(raw: &str, settings: &Settings) -> Result<String, CimdError> {
    let err = |d: &str| CimdError::new(ErrorKind::BadClientId, format!("client_id URL: {d}"));
    let bad = |d: &str| Err(err(d));
    if raw.len() > settings.max_url_bytes {
        return bad(&format!("longer than {} bytes", settings.max_url_bytes));
    }
    if raw.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
        return bad("contains whitespace, a control character or a backslash");
    }
    let http_dev = settings.allow_http_loopback && raw.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if !raw.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) && !http_dev {
        return bad("the scheme must be https");
    }
    if raw.contains('#') {
        return bad("must not contain a fragment");
    }
    let after = &raw[raw.find("://").map_or(0, |i| i + 3)..];
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    if after[..authority_end].is_empty() {
        return bad("has no host");
    }
    if after[..authority_end].contains('@') {
        return bad("must not contain a username or password");
    }
    let path_and_query = &after[authority_end..];
    let path = path_and_query.split('?').next().unwrap_or("");
    if path.is_empty() || path == "/" {
        return bad("must contain a path");
    }
    for seg in path.split('/') {
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return bad("must not contain . or .. path segments");
        }
    }
    let url = url::Url::parse(raw).map_err(|_| err("not a valid URL"))?;
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        None => return bad("has no host"),
    };
    if dcr::host_matches_any(&settings.host_deny, &host) {
        return bad(&format!("host {host:?} is denied"));
    }
    if !settings.host_allow.is_empty() && !dcr::host_matches_any(&settings.host_allow, &host) {
        return bad(&format!("host {host:?} is not in the allowed client_id hosts"));
    }
    Ok(host)
}

/// A document judged valid.
#[derive(Debug, Clone)]
pub struct Document {
    /// The URL (= its `client_id`).
    pub client_id: String,
    /// The host of the URL (ASCII lower case): the ACL's request signal for URL client_ids.
    pub host: String,
    /// The document as the registration policy normalized it, without `client_id`: what the
    /// bridge registers at the IdP.
    pub registration: Normalized,
    /// `redirect_uris` as the document lists them.
    pub redirect_uris: Vec<String>,
    /// The catalogue entry it is, when the URL is a catalogued client's CIMD URL or the
    /// document is proven to be one (`known_client` label).
    pub known_client: Option<&'static str>,
    /// SHA-256 of the normalized registration: the bridge's "has it changed?" test.
    pub fingerprint: String,
}

/// Members a metadata document must not carry: a shared secret has no place in a public
/// document (draft §4.1).
const SECRET_MEMBERS: [&str; 2] = ["client_secret", "client_secret_expires_at"];

/// Judges a fetched document for `url` (already through [`check_client_id_url`]).
pub fn validate_document(url: &str, host: &str, body: &[u8], policy: &Policy) -> Result<Document, CimdError> {
    let bad = |d: String| Err(CimdError::new(ErrorKind::InvalidDocument, d));
    // The registration payload's strict reader: a member given twice (judged on one copy, used
    // on the other by an IdP that keeps the first) is refused, as in a DCR body.
    let mut map = match crate::dcr::read_object(body, 16) {
        Ok(m) => m,
        Err(e) => return bad(format!("not a valid JSON object: {e}")),
    };
    match map.shift_remove("client_id") {
        Some(Value::String(id)) if id == url => {}
        Some(Value::String(_)) => return bad("client_id: not equal to the document's URL".into()),
        _ => return bad("client_id: required (a string equal to the document's URL)".into()),
    }
    if let Some(m) = SECRET_MEMBERS.iter().find(|m| map.contains_key(**m)) {
        return bad(format!("{m}: a metadata document must not carry a shared secret"));
    }
    if let Some(Value::String(m)) = map.get("token_endpoint_auth_method") {
        if m.starts_with("client_secret_") {
            return bad(format!(
                "token_endpoint_auth_method: {m:?} needs a shared secret, which a document cannot carry"
            ));
        }
    }
    // A document names its own method; the DCR default (client_secret_post) would make it
    // confidential with a secret it cannot hold.
    map.entry("token_endpoint_auth_method").or_insert_with(|| Value::String("none".into()));
    let bytes = serde_json::to_vec(&Value::Object(map))
        .map_err(|_| CimdError::new(ErrorKind::InvalidDocument, "unreadable"))?;
    let registration =
        dcr::check(&bytes, policy).map_err(|e| CimdError::new(ErrorKind::InvalidDocument, e.description))?;
    let redirect_uris: Vec<String> = registration
        .document
        .get("redirect_uris")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if redirect_uris.is_empty() {
        return bad("redirect_uris: required".into());
    }
    let uris: Vec<&str> = redirect_uris.iter().map(String::as_str).collect();
    let known_client = catalogue::by_cimd_url(url)
        .or_else(|| catalogue::identify(registration.client_name.as_deref(), &uris))
        .map(|c| c.id.as_str());
    let fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&registration.body))
    };
    Ok(Document {
        client_id: url.to_string(),
        host: host.to_string(),
        registration,
        redirect_uris,
        known_client,
        fingerprint,
    })
}

/// The authorization request's `redirect_uri` must be listed in the document exactly (simple
/// string comparison, RFC 3986 §6.2.1). A request without one is refused: the document may
/// list several, and the draft requires the comparison.
pub fn check_redirect_uri(doc: &Document, redirect_uri: Option<&str>) -> Result<(), CimdError> {
    match redirect_uri {
        Some(r) if doc.redirect_uris.iter().any(|u| u == r) => Ok(()),
        Some(_) => Err(CimdError::new(
            ErrorKind::RedirectUriNotListed,
            "redirect_uri: not listed in the client's metadata document",
        )),
        None => Err(CimdError::new(ErrorKind::RedirectUriNotListed, "redirect_uri: required with a URL client_id")),
    }
}

/// How long a fetched document is fresh: `Cache-Control: s-maxage` (the gateway is a shared
/// cache), else `max-age`, less `Age`; else `Expires` − `Date` (or − `now`); `no-store`,
/// `no-cache` and `private` ask for no caching. The result is clamped to
/// `[cache_min_seconds, cache_max_seconds]`: a document is always kept at least the minimum,
/// so a client cannot make the gateway fetch on every request.
pub fn cache_ttl(
    cache_control: Option<&str>,
    expires: Option<&str>,
    date: Option<&str>,
    age: Option<&str>,
    now: SystemTime,
    settings: &Settings,
) -> Duration {
    let min = Duration::from_secs(settings.cache_min_seconds);
    let max = Duration::from_secs(settings.cache_max_seconds.max(settings.cache_min_seconds));
    let age = age.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0);
    let mut max_age = None;
    let mut s_maxage = None;
    let mut no_cache = false;
    for d in cache_control.unwrap_or("").split(',') {
        let d = d.trim().to_ascii_lowercase();
        let (name, value) =
            d.split_once('=').map_or((d.as_str(), None), |(n, v)| (n.trim(), Some(v.trim().trim_matches('"'))));
        match name {
            "no-store" | "no-cache" | "private" => no_cache = true,
            "max-age" => max_age = value.and_then(|v| v.parse::<u64>().ok()),
            "s-maxage" => s_maxage = value.and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    let wanted = if no_cache {
        Duration::ZERO
    } else if let Some(secs) = s_maxage.or(max_age) {
        Duration::from_secs(secs.saturating_sub(age))
    } else if let Some(exp) = expires.and_then(|e| httpdate::parse_http_date(e.trim()).ok()) {
        let base = date.and_then(|d| httpdate::parse_http_date(d.trim()).ok()).unwrap_or(now);
        exp.duration_since(base).unwrap_or(Duration::ZERO)
    } else {
        min
    };
    wanted.clamp(min, max)
}

struct Entry {
    doc: Arc<Document>,
    expires: Instant,
    stored: Instant,
}

/// Valid documents by URL, each until its [`cache_ttl`] runs out. Only valid documents go in:
/// a fetch error or an invalid document is judged again on the next request (after the
/// fetcher's per-host limits). Bounded: the oldest entry is evicted when full.
pub struct DocumentCache {
    entries: HashMap<String, Entry>,
    capacity: usize,
}

impl DocumentCache {
    pub fn new(capacity: usize) -> DocumentCache {
        DocumentCache { entries: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The fresh document for `url` at `now`; an expired one is dropped.
    pub fn get(&mut self, url: &str, now: Instant) -> Option<Arc<Document>> {
        match self.entries.get(url) {
            Some(e) if now < e.expires => Some(e.doc.clone()),
            Some(_) => {
                self.entries.remove(url);
                None
            }
            None => None,
        }
    }

    pub fn insert(&mut self, doc: Arc<Document>, ttl: Duration, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&doc.client_id) {
            self.entries.retain(|_, e| now < e.expires);
            if self.entries.len() >= self.capacity {
                if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.stored).map(|(k, _)| k.clone()) {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(doc.client_id.clone(), Entry { doc, expires: now + ttl, stored: now });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The parameters of an authorization request the CIMD rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub state: Option<String>,
    /// A request object (`request` or `request_uri`, RFC 9101) came with the request: its
    /// parameters, not the query's, are the ones the IdP uses.
    pub request_object: bool,
    /// The `request_uri` is a pushed authorization request's (RFC 9126, `urn:ietf:params:oauth:
    /// request_uri:…`): the IdP issued it for a request the gateway judged at the PAR endpoint.
    pub pushed: bool,
}

/// Reads an authorization request's query (form encoding). A parameter given twice is
/// ambiguous (RFC 6749 §3.1): `Err`.
pub fn authorize_params(query: &str) -> Result<AuthorizeParams, &'static str> {
    let mut p = AuthorizeParams::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "request_uri" && bridge::is_par_request_uri(&v) && !p.pushed {
            p.pushed = true;
            continue;
        }
        if k == "request" || k == "request_uri" {
            p.request_object = true;
            continue;
        }
        let slot = match &*k {
            "client_id" => &mut p.client_id,
            "redirect_uri" => &mut p.redirect_uri,
            "response_type" => &mut p.response_type,
            "state" => &mut p.state,
            _ => continue,
        };
        if slot.is_some() {
            return Err("a parameter is repeated");
        }
        *slot = Some(v.into_owned());
    }
    Ok(p)
}

/// The request's `response_type` must be one the document registers (its `response_types`,
/// `code` by default). Judged after the redirect URI is proven, so a refusal goes back to it.
pub fn check_response_type(doc: &Document, response_type: Option<&str>) -> Result<(), CimdError> {
    let Some(rt) = response_type else {
        return Err(CimdError::new(ErrorKind::ResponseTypeNotRegistered, "response_type: required"));
    };
    let mut want: Vec<&str> = rt.split(' ').filter(|s| !s.is_empty()).collect();
    want.sort_unstable();
    let registered = doc.registration.document.get("response_types").and_then(Value::as_array);
    let ok = registered.is_some_and(|a| {
        a.iter().filter_map(Value::as_str).any(|r| {
            let mut have: Vec<&str> = r.split(' ').collect();
            have.sort_unstable();
            have == want
        })
    });
    if ok {
        Ok(())
    } else {
        Err(CimdError::new(
            ErrorKind::ResponseTypeNotRegistered,
            "response_type: not registered in the client's metadata document",
        ))
    }
}

/// The refusal of an authorization request sent back to the client's redirect URI (RFC 6749
/// §4.1.2.1) — only ever called with a URI proven by a valid document.
pub fn error_redirect(redirect_uri: &str, err: &CimdError, state: Option<&str>) -> String {
    let mut out = redirect_uri.to_string();
    out.push(if redirect_uri.contains('?') { '&' } else { '?' });
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("error", err.code());
    q.append_pair("error_description", &err.description);
    if let Some(s) = state {
        q.append_pair("state", s);
    }
    out.push_str(&q.finish());
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod strict_reader_tests {
    use super::*;

    #[test]
    fn a_document_with_a_member_twice_is_refused() {
        let url = "https://app.example.com/client.json";
        let body = format!(
            r#"{{"client_id":"{url}","redirect_uris":["https://app.example.com/cb"],"redirect_uris":["https://evil.example/cb"],"token_endpoint_auth_method":"none"}}"#
        );
        let e = validate_document(url, "app.example.com", body.as_bytes(), &Policy::default()).unwrap_err();
        assert!(e.description.contains("not a valid JSON object"), "{}", e.description);
    }
}
