//! One parse of the request target and host (RFC 9112 §3.2, §3.2.2; RFC 3986 §3.3) into
//! the canonical [`RequestView`] every decision reads and the forwarded request is built from.
//!
//! Why this exists: a gateway that classifies one spelling of a request while the IdP routes
//! another is bypassed. Absolute-form targets (`POST http://gw/reg HTTP/1.1`), percent-encoded
//! separators and dot segments, `\`, `;params`: each was a way to be judged as one endpoint and
//! served as another. So the target is parsed once, here; the scope is decided on the result;
//! and the IdP receives an origin-form target rebuilt from the very segments that were judged,
//! re-encoded so that no further decoding by the IdP can change what they mean.
//!
//! The rules (docs/request-handling.md states them for operators):
//! - Forms: origin-form (`/path?query`), absolute-form with `http`/`https` (any case; its
//!   authority is the request's host and overrides `Host`), asterisk-form for `OPTIONS *` only.
//!   Authority-form and every other target are refused (400).
//! - Path segments are split on `/` and `\` as received, `;params` are cut from each raw
//!   segment, each segment is percent-decoded until stable (at most [`MAX_DECODE_ROUNDS`]),
//!   then empty and dot segments (`.`, `..`, also when percent-encoded) are resolved.
//!   A segment that is not UTF-8 after decoding, carries a control character, or still holds
//!   percent-escapes after the last round is refused (400).
//! - A second reading decodes the whole path first and then splits (what some servers do).
//!   The router classifies both readings; when they disagree the request is refused as
//!   ambiguous (400) instead of guessing which reading the IdP uses.
//! - The forwarded target is `/` + the segments, each percent-encoded except RFC 3986
//!   unreserved characters and a few safe sub-delimiters, plus the trailing slash and the
//!   query (bytes outside visible ASCII percent-encoded). A fragment (`#`) is refused.

use std::fmt;

/// Percent-decoding rounds before a still-encoded segment is refused as ambiguous.
pub const MAX_DECODE_ROUNDS: usize = 3;

/// Longest request target accepted (Pingora already bounds the whole head).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://host/path?query`
    Absolute,
    /// `*` (only with `OPTIONS`)
    Asterisk,
}

/// The request's host: the target's authority in absolute-form, else the `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Lower case, no trailing dot; IPv6 literals keep their brackets (`[::1]`).
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    /// The value for the `Host` header sent upstream.
    pub fn header_value(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// The host name for the `hostnames` signal (IPv6 brackets removed? no: kept, as before).
    pub fn name(&self) -> &str {
        &self.host
    }
}

/// Why a request head was refused. Every variant is a 400 `invalid_request`, except
/// [`TargetError::MisdirectedSni`] (421), which the adapter raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Authority-form, a relative target, or an unknown scheme.
    UnsupportedForm,
    /// `*` with a method other than OPTIONS.
    AsteriskNotOptions,
    /// `#` in the target.
    Fragment,
    /// Userinfo (`user@host`) in an absolute-form authority.
    Userinfo,
    /// An authority or `Host` value that is not a host name or IP literal with an optional port.
    InvalidHost,
    /// More than one `Host` header.
    DuplicateHost,
    /// HTTP/1.1 without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// A path segment that decodes to invalid UTF-8.
    InvalidEncoding,
    /// A control character (including NUL, CR, LF) in the decoded path.
    ControlCharacter,
    /// Still percent-encoded after [`MAX_DECODE_ROUNDS`] rounds.
    TooManyEncodings,
    /// The two readings of the path land on different routes.
    Ambiguous,
    TooLong,
    /// A path the gateway refuses outright (an IdP endpoint that creates clients from a format
    /// the gateway cannot validate).
    RefusedPath,
}

impl TargetError {
    pub fn description(self) -> &'static str {
        match self {
            TargetError::UnsupportedForm => "unsupported request target form",
            TargetError::AsteriskNotOptions => "the asterisk-form target is only allowed with OPTIONS",
            TargetError::Fragment => "a request target must not carry a fragment",
            TargetError::Userinfo => "a request target must not carry userinfo",
            TargetError::InvalidHost => "invalid host in request target or Host header",
            TargetError::DuplicateHost => "more than one Host header",
            TargetError::MissingHost => "HTTP/1.1 request without Host header",
            TargetError::InvalidEncoding => "the request path is not valid percent-encoded UTF-8",
            TargetError::ControlCharacter => "the request path contains a control character",
            TargetError::TooManyEncodings => "the request path is percent-encoded too many times",
            TargetError::Ambiguous => "the request path can be read as more than one path",
            TargetError::TooLong => "the request target is too long",
            TargetError::RefusedPath => "this endpoint is not available through the gateway",
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// The canonical request: what the gateway decides on and what it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    pub form: TargetForm,
    /// The request's host (target authority, else `Host`); `None` for HTTP/1.0 without one.
    pub authority: Option<Authority>,
    /// Decoded path segments, case kept, `;params`, empty and dot segments resolved.
    pub segments: Vec<String>,
    /// The same path read decode-first (`%2F` splits); compared by the router.
    pub flat_segments: Vec<String>,
    /// The raw path ended with a separator (kept in the forwarded target).
    pub trailing_slash: bool,
    /// The query as received (without `?`), bytes outside visible ASCII percent-encoded.
    pub query: Option<String>,
}

/// What [`parse`] needs from the request head.
pub struct Head<'a> {
    pub method_is_options: bool,
    /// The request target bytes as received (HTTP/1: the request line's target; HTTP/2: `:path`).
    pub target: &'a [u8],
    /// Every `Host` header value (HTTP/2: the `:authority`, when the adapter has one).
    pub hosts: &'a [&'a [u8]],
    /// HTTP/1.1 or later: a missing host is an error.
    pub host_required: bool,
}

pub fn parse(head: &Head<'_>) -> Result<RequestView, TargetError> {
    let t = head.target;
    if t.len() > MAX_TARGET_BYTES {
        return Err(TargetError::TooLong);
    }
    if t.contains(&b'#') {
        return Err(TargetError::Fragment);
    }
    let host_header = match head.hosts {
        [] => None,
        [one] => Some(parse_authority(one)?),
        _ => return Err(TargetError::DuplicateHost),
    };
    if t == b"*" {
        if !head.method_is_options {
            return Err(TargetError::AsteriskNotOptions);
        }
        if host_header.is_none() && head.host_required {
            return Err(TargetError::MissingHost);
        }
        return Ok(RequestView {
            form: TargetForm::Asterisk,
            authority: host_header,
            segments: Vec::new(),
            flat_segments: Vec::new(),
            trailing_slash: false,
            query: None,
        });
    }
    let (form, authority, rest) = if t.first() == Some(&b'/') {
        (TargetForm::Origin, host_header, t)
    } else if let Some((auth, rest)) = split_absolute(t)? {
        // RFC 9112 §3.2.2: the target's authority replaces Host.
        (TargetForm::Absolute, Some(parse_authority(auth)?), rest)
    } else {
        return Err(TargetError::UnsupportedForm);
    };
    if authority.is_none() && head.host_required {
        return Err(TargetError::MissingHost);
    }
    let (raw_path, raw_query) = match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let segments = split_first(raw_path)?;
    let flat_segments = decode_first(raw_path)?;
    let trailing_slash = !segments.is_empty() && matches!(raw_path.last(), Some(b'/' | b'\\'));
    Ok(RequestView { form, authority, segments, flat_segments, trailing_slash, query: raw_query.map(encode_query) })
}

/// An absolute-form target split into its authority and its path-and-query.
type AuthorityAndRest<'a> = (&'a [u8], &'a [u8]);

/// `scheme://authority[path]` with scheme http or https → (authority, path-and-query).
fn split_absolute(t: &[u8]) -> Result<Option<AuthorityAndRest<'_>>, TargetError> {
    let Some(colon) = t.iter().position(|&b| b == b':') else { return Ok(None) };
    let scheme = &t[..colon];
    if scheme.is_empty()
        || !scheme[0].is_ascii_alphabetic()
        || !scheme.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Ok(None);
    }
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return Err(TargetError::UnsupportedForm);
    }
    let after = &t[colon + 1..];
    let Some(hier) = after.strip_prefix(b"//") else { return Err(TargetError::UnsupportedForm) };
    let end = hier.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(hier.len());
    let (auth, rest) = hier.split_at(end);
    if auth.contains(&b'@') {
        return Err(TargetError::Userinfo);
    }
    if auth.is_empty() {
        return Err(TargetError::InvalidHost);
    }
    // An absolute target without a path means `/` (RFC 9112 §3.2.2).
    Ok(Some((auth, if rest.is_empty() { b"/" } else { rest })))
}

/// `host[:port]` or `[v6][:port]`, from a target authority or a `Host` header.
pub fn parse_authority(raw: &[u8]) -> Result<Authority, TargetError> {
    let s = std::str::from_utf8(raw).map_err(|_| TargetError::InvalidHost)?.trim_matches(|c| c == ' ' || c == '\t');
    if s.is_empty() || s.contains('@') {
        return Err(if s.contains('@') { TargetError::Userinfo } else { TargetError::InvalidHost });
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or(TargetError::InvalidHost)?;
        let lit = &rest[..end];
        lit.parse::<std::net::Ipv6Addr>().map_err(|_| TargetError::InvalidHost)?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(TargetError::InvalidHost),
        };
        (format!("[{}]", lit.to_ascii_lowercase()), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        None => None,
        // `host:` with an empty port is allowed by RFC 3986 and means the default port.
        Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| TargetError::InvalidHost)?)
        }
        Some(_) => return Err(TargetError::InvalidHost),
    };
    let host = if host.starts_with('[') {
        host
    } else {
        let h = host.strip_suffix('.').unwrap_or(&host);
        if h.is_empty()
            || h.len() > 253
            || !h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            || h.split('.').any(|label| label.is_empty() || label.len() > 63)
        {
            return Err(TargetError::InvalidHost);
        }
        h.to_ascii_lowercase()
    };
    Ok(Authority { host, port })
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn has_escape(b: &[u8]) -> bool {
    b.windows(3).any(|w| w[0] == b'%' && is_hex(w[1]) && is_hex(w[2]))
}

/// Percent-decode until no escape is left, at most [`MAX_DECODE_ROUNDS`] rounds; the result
/// must be UTF-8 without control characters.
fn decode_fully(raw: &[u8]) -> Result<String, TargetError> {
    let mut cur: Vec<u8> = raw.to_vec();
    let mut rounds = 0;
    while has_escape(&cur) {
        if rounds == MAX_DECODE_ROUNDS {
            return Err(TargetError::TooManyEncodings);
        }
        cur = percent_encoding::percent_decode(&cur).collect();
        rounds += 1;
    }
    let s = String::from_utf8(cur).map_err(|_| TargetError::InvalidEncoding)?;
    if s.chars().any(|c| c.is_control()) {
        return Err(TargetError::ControlCharacter);
    }
    Ok(s)
}

fn push_segment(segs: &mut Vec<String>, seg: &str) {
    match seg {
        "" | "." => {}
        ".." => {
            segs.pop();
        }
        s => segs.push(s.to_string()),
    }
}

fn cut_params(seg: &[u8]) -> &[u8] {
    match seg.iter().position(|&b| b == b';') {
        Some(i) => &seg[..i],
        None => seg,
    }
}

/// Split on the raw separators, cut `;params`, then decode each segment.
fn split_first(raw_path: &[u8]) -> Result<Vec<String>, TargetError> {
    let mut segs = Vec::new();
    for raw in raw_path.split(|&b| b == b'/' || b == b'\\') {
        let seg = decode_fully(cut_params(raw))?;
        push_segment(&mut segs, &seg);
    }
    Ok(segs)
}

/// Decode the whole path first, then split (so `%2F` and `%5C` separate segments and `%3B`
/// starts parameters): the reading of servers that decode before routing.
fn decode_first(raw_path: &[u8]) -> Result<Vec<String>, TargetError> {
    let decoded = decode_fully(raw_path)?;
    let mut segs = Vec::new();
    for raw in decoded.split(['/', '\\']) {
        let seg = match raw.find(';') {
            Some(i) => &raw[..i],
            None => raw,
        };
        push_segment(&mut segs, seg);
    }
    Ok(segs)
}

/// Characters a forwarded segment keeps as they are: RFC 3986 unreserved plus the
/// sub-delimiters and `:`/`@` that no server treats as a separator or an escape. `;` (path
/// parameters), `%`, `/`, `\`, `?`, `#` and everything non-ASCII are always escaped.
fn keep_in_segment(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Append `seg` percent-encoded for a forwarded path. A segment made only of dots is
/// encoded whole, so it can never act as a dot segment.
pub fn encode_segment(out: &mut String, seg: &str) {
    let all_dots = !seg.is_empty() && seg.bytes().all(|b| b == b'.') && seg.len() <= 2;
    for b in seg.bytes() {
        if keep_in_segment(b) && !(all_dots && b == b'.') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

fn encode_query(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if (0x21..=0x7e).contains(&b) && b != b'#' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

impl RequestView {
    /// The origin-form target to forward: `/` + encoded segments (+ `/`) (+ `?query`).
    pub fn origin_form(&self) -> String {
        if self.form == TargetForm::Asterisk {
            return "*".into();
        }
        self.origin_form_with(&[], &self.segments)
    }

    /// An origin-form target whose first segments are `prefix` (already canonical) followed by
    /// `rest`, with this request's trailing slash and query.
    pub fn origin_form_with(&self, prefix: &[String], rest: &[String]) -> String {
        let mut out = String::with_capacity(64);
        for s in prefix.iter().chain(rest) {
            out.push('/');
            encode_segment(&mut out, s);
        }
        // The root, or a kept trailing slash.
        if out.is_empty() || (self.trailing_slash && !rest.is_empty()) {
            out.push('/');
        }
        if let Some(q) = &self.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// The hosts of the query's URL `client_id`s (Client ID Metadata Documents), in order, for
    /// the ACL's `client_id_hosts`: every `client_id` parameter is read (form-urlencoded, as
    /// OAuth reads a query), so a repeated one cannot hide a host. Empty when there is none.
    /// Computed only when a rule looks at the signal (it allocates).
    pub fn client_id_hosts(&self) -> Vec<String> {
        let Some(q) = self.query.as_deref() else { return Vec::new() };
        // Cheap test first: most queries carry no client_id at all.
        if !q.contains("client_id") {
            return Vec::new();
        }
        url::form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == "client_id")
            .filter_map(|(_, v)| client_id_url_host(&v))
            .collect()
    }
}

/// The host of a `client_id` that is an `http`/`https` URL (as a URL parser reads it: ASCII
/// lower case, IDNA applied, no trailing dot, IPv6 in brackets); `None` for any other
/// client_id. Read as a WHATWG parser reads it (an IdP with CIMD support may use one), so
/// `https:/h/x`, ` https://h/x` or `ht<TAB>tps://h/x` name `h` too rather than hiding it.
pub fn client_id_url_host(client_id: &str) -> Option<String> {
    // Cheap test first: ordinary client_ids have no scheme.
    if !client_id.contains(':') {
        return None;
    }
    let url = url::Url::parse(client_id).ok()?;
    if !matches!(url.scheme(), "https" | "http") {
        return None;
    }
    match url.host()? {
        url::Host::Domain(d) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            (!d.is_empty()).then(|| d.to_ascii_lowercase())
        }
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(format!("[{ip}]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(target: &'a [u8], hosts: &'a [&'a [u8]]) -> Head<'a> {
        Head { method_is_options: false, target, hosts, host_required: true }
    }

    fn view(target: &str) -> RequestView {
        parse(&head(target.as_bytes(), &[b"gw.example"])).unwrap()
    }

    fn err(target: &str) -> TargetError {
        parse(&head(target.as_bytes(), &[b"gw.example"])).unwrap_err()
    }

    #[test]
    fn origin_form_is_decoded_and_rebuilt() {
        let v = view("//oidc/./x/../register;jsessionid=1?a=b");
        assert_eq!(v.segments, ["oidc", "register"]);
        assert_eq!(v.origin_form(), "/oidc/register?a=b");
        assert_eq!(v.authority.unwrap().host, "gw.example");
    }

    #[test]
    fn absolute_form_authority_overrides_host() {
        for t in
            ["http://IDP.Example:8443/reg?x=1", "HTTP://idp.example.:8443/reg?x=1", "https://idp.example:8443/reg?x=1"]
        {
            let v = parse(&head(t.as_bytes(), &[b"other.example"])).unwrap();
            assert_eq!(v.form, TargetForm::Absolute, "{t}");
            assert_eq!(v.authority.as_ref().unwrap().header_value(), "idp.example:8443");
            assert_eq!(v.origin_form(), "/reg?x=1");
        }
        let v = parse(&head(b"http://idp.example", &[])).unwrap();
        assert_eq!(v.origin_form(), "/");
        let v = parse(&head(b"http://idp.example?q", &[])).unwrap();
        assert_eq!(v.origin_form(), "/?q");
    }

    #[test]
    fn refused_forms() {
        assert_eq!(err("idp.example:443"), TargetError::UnsupportedForm);
        assert_eq!(err("ftp://x/reg"), TargetError::UnsupportedForm);
        assert_eq!(err("http:/x/reg"), TargetError::UnsupportedForm);
        assert_eq!(err("reg"), TargetError::UnsupportedForm);
        assert_eq!(err("*"), TargetError::AsteriskNotOptions);
        assert_eq!(err("http://u:p@x/reg"), TargetError::Userinfo);
        assert_eq!(err("/reg#frag"), TargetError::Fragment);
        assert_eq!(err("http:///reg"), TargetError::InvalidHost);
        let opts = Head { method_is_options: true, target: b"*", hosts: &[b"h"], host_required: true };
        assert_eq!(parse(&opts).unwrap().origin_form(), "*");
    }

    #[test]
    fn host_rules() {
        assert_eq!(parse(&head(b"/", &[])).unwrap_err(), TargetError::MissingHost);
        let h10 = Head { method_is_options: false, target: b"/", hosts: &[], host_required: false };
        assert_eq!(parse(&h10).unwrap().authority, None);
        assert_eq!(parse(&head(b"/", &[b"a", b"b"])).unwrap_err(), TargetError::DuplicateHost);
        for bad in [&b"a b"[..], b"caf\xc3\xa9.example", b"x:port", b"[::1", b"a..b", b""] {
            assert!(parse(&head(b"/", &[bad])).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let v = parse(&head(b"/", &[b"[::1]:8080"])).unwrap();
        assert_eq!(v.authority.unwrap().header_value(), "[::1]:8080");
    }

    #[test]
    fn escapes_cannot_smuggle_separators_queries_or_dots() {
        let v = view("/oidc/register/%3Fx%23y");
        assert_eq!(v.segments, ["oidc", "register", "?x#y"]);
        assert_eq!(v.origin_form(), "/oidc/register/%3Fx%23y");
        let v = view("/oidc/register/a%252e%252e");
        assert_eq!(v.segments, ["oidc", "register", "a.."]);
        let v = view("/oidc/register/%252e%252e/x");
        assert_eq!(v.segments, ["oidc", "x"]);
        let v = view("/a/b%2Fc");
        assert_eq!(v.segments, ["a", "b/c"]);
        assert_eq!(v.flat_segments, ["a", "b", "c"]);
        assert_eq!(v.origin_form(), "/a/b%2Fc");
        assert_eq!(view("/a%20b").origin_form(), "/a%20b");
        assert_eq!(view("/caf%C3%A9").origin_form(), "/caf%C3%A9");
        assert_eq!(view("/100%").origin_form(), "/100%25");
    }

    #[test]
    fn undecodable_paths_are_refused() {
        assert_eq!(err("/a%00"), TargetError::ControlCharacter);
        assert_eq!(err("/a%0d%0aX:1"), TargetError::ControlCharacter);
        assert_eq!(err("/a%ff"), TargetError::InvalidEncoding);
        assert_eq!(err("/a%25252541"), TargetError::TooManyEncodings);
    }

    #[test]
    fn forwarded_target_reparses_to_the_same_segments() {
        for t in ["/a/b/", "//A//./b/../c", "/%2e%2e/x", "/", "/x;y=1/z", "/a%2Fb/..%2F", "/%25/%2541"] {
            if let Ok(v) = parse(&head(t.as_bytes(), &[b"h"])) {
                let again = view(&v.origin_form());
                assert_eq!(again.segments, v.segments, "{t}");
                assert_eq!(again.origin_form(), v.origin_form(), "{t}");
            }
        }
    }

    #[test]
    fn client_id_hosts_are_read_from_the_query() {
        let view = |t: &str| {
            parse(&Head { method_is_options: false, target: t.as_bytes(), hosts: &[b"gw"], host_required: true })
                .unwrap()
        };
        let hosts = |t: &str| view(t).client_id_hosts();
        assert_eq!(hosts("/authorize?client_id=https%3A%2F%2FX.Evil.Example.%2Fc.json&x=1"), ["x.evil.example"]);
        assert_eq!(hosts("/authorize?client_id=https://app.example:8443/c.json"), ["app.example"]);
        assert_eq!(hosts("/authorize?client_id=HTTPS://b%C3%BCcher.example/c"), ["xn--bcher-kva.example"]);
        assert_eq!(
            hosts("/authorize?client_id=https://[2001:DB8::1]/c&client_id=https://0x7f.1/c"),
            ["[2001:db8::1]", "127.0.0.1"]
        );
        assert_eq!(hosts("/authorize?client_id=s6BhdRkqt3"), Vec::<String>::new());
        assert_eq!(hosts("/authorize?client_id=urn:x:y&my_client_id=https://a.example/"), Vec::<String>::new());
        assert_eq!(hosts("/authorize"), Vec::<String>::new());
        assert_eq!(client_id_url_host("ftp://a.example/"), None);
        // Spellings a WHATWG URL parser (an IdP's) reads as https URLs do not hide their host.
        for spelled in [
            "https:/Evil.Example/c",
            " https://evil.example/c",
            "ht\ttps://evil.example/c",
            "https:\\\\evil.example\\c",
        ] {
            assert_eq!(client_id_url_host(spelled).as_deref(), Some("evil.example"), "{spelled:?}");
        }
        assert_eq!(hosts("/authorize?client_id=https:/evil.example/c"), ["evil.example"]);
        assert_eq!(client_id_url_host("urn:ietf:x"), None);
    }

    #[test]
    fn query_bytes_are_made_visible() {
        assert_eq!(view("/a?x=\u{e9}").query.as_deref(), Some("x=%C3%A9"));
    }
}
