//! URI checks: redirect URIs (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §2.1/§4.1) and the
//! https-only metadata URIs. The URI string itself is never changed: only judged.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use unicode_security::MixedScript;
use url::{Host, Url};

use super::catalogue::{preset_hosts, PRESET_PREFIX};
use super::error::is_invisible;
use super::host::matches_any;
use super::policy::Policy;
use super::vocab::SecurityMode;

/// Longest URI accepted anywhere, in characters.
pub(crate) const MAX_URI_CHARS: usize = 2048;

/// Schemes refused by name, whatever the member (checked case-insensitively after trimming
/// and after removing embedded whitespace/control characters, which URL parsers skip).
const DANGEROUS_SCHEMES: [&str; 4] = ["javascript", "data", "file", "vbscript"];

/// Schemes a redirect URI may never use, whatever the client and the configuration: they run
/// script or show content in the browser, address the browser's own pages or storage, or
/// name a network protocol (a code sent there leaves the device; `http` and `https` have
/// their own rules). Compared with the lower-cased scheme; `redirect_scheme_deny` adds to it.
pub(crate) const REFUSED_REDIRECT_SCHEMES: [&str; 38] = [
    // Script and content (also refused before parsing, see DANGEROUS_SCHEMES).
    "javascript",
    "data",
    "file",
    "vbscript",
    // The browser's own pages, storage and handlers.
    "about",
    "blob",
    "filesystem",
    "view-source",
    "chrome",
    "chrome-extension",
    "edge",
    "moz-extension",
    "resource",
    "jar",
    "intent",
    "ms-browser-extension",
    // Network protocols (WHATWG special schemes first).
    "ws",
    "wss",
    "ftp",
    "ftps",
    "sftp",
    "ssh",
    "telnet",
    "gopher",
    "ldap",
    "ldaps",
    "smb",
    "nfs",
    "irc",
    "ircs",
    "rtsp",
    "sip",
    "sips",
    "xmpp",
    "mailto",
    "news",
    "nntp",
    "tel",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriKind {
    Https,
    /// `http` on one of `loopback_hosts`.
    HttpLoopback,
    /// A private-use scheme of a native app, RFC 8252 §7.1.
    PrivateUse,
}

/// What a valid URI told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UriInfo {
    pub kind: UriKind,
    /// ASCII (punycode) lower-case host as a URI writes it (`[::1]` for IPv6); `None` for
    /// private-use URIs.
    pub host: Option<String>,
    pub is_ip: bool,
    pub is_loopback: bool,
}

/// The context a redirect URI is judged in.
pub(crate) struct RedirectCtx<'a> {
    pub policy: &'a Policy,
    /// `application_type` is `native`.
    pub native: bool,
    /// The client is public: its (effective) `token_endpoint_auth_method` is `none`.
    pub public: bool,
    /// The client registers the implicit grant (OIDC DCR §2: https, no loopback).
    pub implicit: bool,
}

/// Checks one redirect URI (also used for `post_logout_redirect_uris`). The reason returned
/// on failure is to be prefixed by the member name.
pub(crate) fn check_redirect(raw: &str, ctx: &RedirectCtx<'_>) -> Result<UriInfo, String> {
    let policy = ctx.policy;
    let mut parsed = parse_common(raw)?;
    // RFC 6749 §3.1.2: no fragment; RFC 9700 §4.1: exact matching, so no wildcard (checked
    // with the host) and, against phishing look-alikes, no userinfo. In both modes.
    if raw.contains('#') {
        return Err("must not contain a fragment".into());
    }
    let info = match &*parsed.scheme {
        "https" => host_info(&mut parsed, UriKind::Https, policy)?,
        "http" => {
            let info = host_info(&mut parsed, UriKind::HttpLoopback, policy)?;
            if !info.is_loopback {
                return Err("scheme \"http\" is only allowed for loopback hosts".into());
            }
            info
        }
        scheme => {
            check_private_use(scheme, raw, ctx)?;
            no_userinfo_or_wildcard(&parsed)?;
            UriInfo { kind: UriKind::PrivateUse, host: None, is_ip: false, is_loopback: false }
        }
    };
    if let Some(host) = &info.host {
        if matches_any(&policy.redirect_host_deny, host) {
            return Err(format!("host {host:?} is denied by policy"));
        }
        // Loopback hosts are governed by `loopback_hosts`, not by the allow-list.
        if !info.is_loopback
            && !policy.redirect_host_allow.is_empty()
            && !allowed_host(&policy.redirect_host_allow, host)
        {
            return Err(format!("host {host:?} is not in the allowed redirect hosts"));
        }
    }
    if ctx.implicit && (info.kind != UriKind::Https || info.is_loopback) {
        return Err("the implicit grant needs https redirect URIs on non-loopback hosts".into());
    }
    Ok(info)
}

/// `host` matches `redirect_host_allow`: a host pattern, or a `known:<id>` preset's https
/// hosts (conf/known-clients.toml).
fn allowed_host(allow: &[String], host: &str) -> bool {
    if !allow.iter().any(|p| p.starts_with(PRESET_PREFIX)) {
        return matches_any(allow, host);
    }
    allow.iter().any(|p| match preset_hosts(p) {
        Some(hosts) => hosts.iter().any(|h| h == host),
        None => matches_any(std::slice::from_ref(p), host),
    })
}

/// The private-use scheme rule (RFC 8252 §7.1), for any scheme other than `http(s)`:
///
/// - never a scheme of [`REFUSED_REDIRECT_SCHEMES`] or `redirect_scheme_deny`, nor a
///   one-letter scheme (a Windows drive letter: `c:/Users/...`);
/// - when `redirect_scheme_allow` is non-empty, only the schemes it lists;
/// - a public client (`token_endpoint_auth_method` `none`) may use any other scheme: RFC
///   8252's reverse-domain form is a SHOULD, and the MCP clients in use register
///   `cursor://...` and `vscode://...` without `application_type`;
/// - a confidential client keeps the RFC 8252 shape: `application_type` `native` and a
///   reverse-domain scheme (`com.example.app`). Any app on a device can claim a private-use
///   scheme, so the code such a URI receives is only as safe as PKCE makes it; a secret
///   bound to that URI adds nothing, and a confidential client that is not a native app has
///   no business with one.
///
/// Schemes are compared in lower case (the url crate lower-cases them; RFC 3986 §3.1 says
/// they are case-insensitive).
fn check_private_use(scheme: &str, raw: &str, ctx: &RedirectCtx<'_>) -> Result<(), String> {
    let policy = ctx.policy;
    let listed = |list: &[String]| list.iter().any(|s| s.eq_ignore_ascii_case(scheme));
    if REFUSED_REDIRECT_SCHEMES.contains(&scheme) || scheme.len() < 2 {
        return Err(format!("scheme {} is not allowed", quoted_scheme(scheme)));
    }
    if listed(&policy.redirect_scheme_deny) {
        return Err(format!("scheme {} is denied by policy", quoted_scheme(scheme)));
    }
    if !policy.redirect_scheme_allow.is_empty() && !listed(&policy.redirect_scheme_allow) {
        return Err(format!("scheme {} is not in the allowed redirect schemes", quoted_scheme(scheme)));
    }
    // Something must follow `scheme:` for the app to route on.
    if raw.len() <= scheme.len() + 1 {
        return Err(format!("private-use URI with scheme {} has nothing after the scheme", quoted_scheme(scheme)));
    }
    if ctx.public {
        return Ok(());
    }
    if !ctx.native {
        return Err(format!(
            "private-use scheme {} needs a public client (token_endpoint_auth_method \"none\") or application_type \"native\"",
            quoted_scheme(scheme)
        ));
    }
    if !scheme.contains('.') || !scheme.split('.').all(|l| !l.is_empty()) {
        return Err(format!(
            "private-use scheme {} of a confidential client must be a reverse domain name (com.example.app)",
            quoted_scheme(scheme)
        ));
    }
    Ok(())
}

/// A scheme as RFC 3986 §3.1 writes it: a letter, then letters, digits, `+`, `-` and `.`.
pub(crate) fn is_rfc3986_scheme(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Checks an https-only metadata URI (`logo_uri`, `jwks_uri`, ...). Strict mode also refuses
/// a fragment; userinfo and wildcard hosts are refused in both modes.
pub(crate) fn check_https(raw: &str, policy: &Policy) -> Result<UriInfo, String> {
    let mut parsed = parse_common(raw)?;
    if parsed.scheme != "https" {
        return Err(format!("scheme {} is not allowed (https is required)", quoted_scheme(&parsed.scheme)));
    }
    if policy.security_mode == SecurityMode::Strict && raw.contains('#') {
        return Err("must not contain a fragment".into());
    }
    host_info(&mut parsed, UriKind::Https, policy)
}

/// What the url crate (or [`parse_simple`], for URIs where it would say the same) read.
struct Parsed<'a> {
    /// The scheme, lower-cased.
    scheme: Cow<'static, str>,
    /// The host the parser uses (taken by [`host_info`]).
    host: Option<Host<String>>,
    /// The authority as written (between `//` and the path), when there is one.
    authority: Option<&'a str>,
    /// Read by [`parse_simple`]: the host as written is already known to be in canonical
    /// form (what [`domain_to_ascii_strict`] would say).
    simple: bool,
}

/// Length, dangerous schemes, characters, absolute-URI parse.
fn parse_common(raw: &str) -> Result<Parsed<'_>, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.len() > MAX_URI_CHARS && raw.chars().count() > MAX_URI_CHARS {
        return Err(format!("longer than {MAX_URI_CHARS} characters"));
    }
    if let Some(scheme) = dangerous_scheme(raw) {
        return Err(format!("scheme {scheme:?} is not allowed"));
    }
    check_chars(raw)?;
    if let Some(parsed) = parse_simple(raw) {
        return Ok(parsed);
    }
    let url = Url::parse(raw).map_err(|_| "not an absolute URI".to_string())?;
    // The raw string starts with the scheme (check_chars refused the leading whitespace and
    // controls a parser would skip), so this is the text after `scheme:`.
    let rest = raw.get(url.scheme().len() + 1..).ok_or_else(|| "not an absolute URI".to_string())?;
    let authority = authority_of(rest);
    if url.is_special() && authority.is_none() {
        return Err("must be an absolute URI of the form scheme://host/...".into());
    }
    Ok(Parsed {
        scheme: Cow::Owned(url.scheme().to_owned()),
        host: url.host().map(|h| h.to_owned()),
        authority,
        simple: false,
    })
}

/// The authority in the text after `scheme:`, when it starts with `//`.
fn authority_of(rest: &str) -> Option<&str> {
    rest.strip_prefix("//").map(|a| a.find(['/', '?', '#']).map_or(a, |end| &a[..end]))
}

/// The common case without the url crate: `http(s)://host[:port]...` (already through
/// [`check_chars`]) whose host is a plain LDH domain name that [`ldh_to_ascii`] accepts (the
/// last label starting with a letter) or a dotted-decimal IPv4 address written canonically,
/// and whose port, if any, is 1 to 5 digits up to 65535. For such a URI `Url::parse`
/// succeeds (paths, queries and fragments never make it fail) with the same scheme and host,
/// so this returns what the slow path would. `None`: take the slow path.
fn parse_simple(raw: &str) -> Option<Parsed<'_>> {
    let (scheme, rest) = raw.split_once(':')?;
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        return None;
    };
    let authority = authority_of(rest)?;
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u32>().ok()? > 65535 {
            return None;
        }
    }
    let host = if let Some(ip) = canonical_ipv4(host) {
        Host::Ipv4(ip)
    } else {
        let last = host.rsplit('.').next()?;
        if !last.as_bytes().first()?.is_ascii_alphabetic() {
            return None;
        }
        Host::Domain(ldh_to_ascii(host)?.into_owned())
    };
    Some(Parsed { scheme: Cow::Borrowed(scheme), host: Some(host), authority: Some(authority), simple: true })
}

/// `a.b.c.d`, four decimal numbers 0-255 without leading zeros.
fn canonical_ipv4(host: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = host.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// `idna::domain_to_ascii_strict` for the plain case, without the UTS 46 machinery: a name
/// of 1 to 253 bytes whose labels are 1 to 63 ASCII letters, digits and hyphens, neither
/// starting nor ending with a hyphen nor having hyphens in the third and fourth positions
/// (so no `xn--` label). UTS 46 maps such a name to its ASCII lower case and accepts it.
/// `None` when the name is not of that form: ask idna.
fn ldh_to_ascii(host: &str) -> Option<Cow<'_, str>> {
    let b = host.as_bytes();
    if b.is_empty() || b.len() > 253 {
        return None;
    }
    let mut upper = false;
    // Start of the current label.
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'A'..=b'Z' => upper = true,
            // Not first in a label, nor in the third and fourth positions together.
            b'-' if i > start && !(i == start + 3 && b[i - 1] == b'-') => {}
            b'.' if i > start && i - start <= 63 && b[i - 1] != b'-' => start = i + 1,
            _ => return None,
        }
    }
    // The last label: non-empty, at most 63 bytes, not ending with a hyphen.
    if start == b.len() || b.len() - start > 63 || b[b.len() - 1] == b'-' {
        return None;
    }
    Some(if upper { Cow::Owned(host.to_ascii_lowercase()) } else { Cow::Borrowed(host) })
}

/// `idna::domain_to_ascii_strict`, with [`ldh_to_ascii`] as the fast path.
pub(crate) fn domain_to_ascii_strict(domain: &str) -> Result<Cow<'_, str>, ()> {
    match ldh_to_ascii(domain) {
        Some(a) => Ok(a),
        None => idna::domain_to_ascii_strict(domain).map(Cow::Owned).map_err(|_| ()),
    }
}

/// A dangerous scheme as a lenient parser would see it: leading/trailing whitespace and
/// controls trimmed, embedded ones removed, compared case-insensitively.
fn dangerous_scheme(raw: &str) -> Option<&'static str> {
    let t = raw.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    let (scheme, _) = t.split_once(':')?;
    let loose = |c: char| c.is_whitespace() || c.is_control();
    if !scheme.contains(loose) {
        return DANGEROUS_SCHEMES.into_iter().find(|d| scheme.eq_ignore_ascii_case(d));
    }
    let s: String = scheme.chars().filter(|c| !loose(*c)).collect();
    DANGEROUS_SCHEMES.into_iter().find(|d| s.eq_ignore_ascii_case(d))
}

/// A scheme to print: at most 32 characters (url already limited it to `[a-z0-9+.-]`).
fn quoted_scheme(scheme: &str) -> String {
    let short: String = scheme.chars().take(32).collect();
    format!("{short:?}")
}

/// RFC 3986 characters (RFC 3987 non-ASCII allowed, minus controls, whitespace and invisible
/// formatting characters) and well-formed percent-encodings. This refuses the spaces, tabs,
/// newlines and backslashes that WHATWG parsers silently drop or reinterpret.
fn check_chars(raw: &str) -> Result<(), String> {
    let bytes = raw.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        if b.is_ascii() {
            at += 1;
            if is_uri_ascii(b) {
                continue;
            }
            if b == b'%' {
                let hex = |j: usize| bytes.get(j).is_some_and(|b| b.is_ascii_hexdigit());
                if hex(at) && hex(at + 1) {
                    continue;
                }
                return Err("contains an invalid percent-encoding".into());
            }
            return Err(
                "contains a character that is not allowed in a URI (whitespace, control, quote, backslash, ...)".into(),
            );
        }
        // `at` is on a char boundary (the previous chars were whole), and not at the end.
        let Some(c) = raw[at..].chars().next() else { break };
        if c.is_control() || c.is_whitespace() || is_invisible(c) {
            return Err("contains a control, whitespace or invisible formatting character".into());
        }
        at += c.len_utf8();
    }
    Ok(())
}

/// RFC 3986 unreserved / gen-delims / sub-delims.
fn is_uri_ascii(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
        | b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

fn no_userinfo_or_wildcard(parsed: &Parsed<'_>) -> Result<(), String> {
    if let Some(auth) = parsed.authority {
        if auth.contains('@') {
            return Err("must not contain userinfo".into());
        }
        if auth.contains('*') {
            return Err("host must not contain a wildcard".into());
        }
    }
    Ok(())
}

/// Host checks for http(s) URIs: present, no userinfo or wildcard, valid IDNA written in
/// canonical form (the host as written must convert to exactly the host the parser uses, so
/// `127.1`, `0x7f.0.0.1` or `ex%61mple.com` are refused), no trailing dot, and in strict
/// mode no label mixing scripts.
fn host_info(parsed: &mut Parsed<'_>, kind: UriKind, policy: &Policy) -> Result<UriInfo, String> {
    no_userinfo_or_wildcard(parsed)?;
    let authority = parsed.authority.unwrap_or("");
    let (host, is_ip) = match parsed.host.take() {
        Some(Host::Ipv6(ip)) => (format!("[{ip}]"), true),
        Some(Host::Ipv4(ip)) => (ip.to_string(), true),
        Some(Host::Domain(d)) => (d, false),
        None => return Err("missing host".into()),
    };
    let raw_host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |end| &authority[..=end])
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if raw_host.is_empty() {
        return Err("missing host".into());
    }
    if raw_host.contains('%') {
        return Err("host must not be percent-encoded".into());
    }
    if raw_host.ends_with('.') {
        return Err("host must not end with a dot".into());
    }
    if !raw_host.starts_with('[') && !parsed.simple {
        let ascii = domain_to_ascii_strict(raw_host)
            .map_err(|_| "host is not a valid (internationalized) domain name".to_string())?;
        if *ascii != *host {
            return Err("host is not written in canonical form".into());
        }
    }
    if policy.security_mode == SecurityMode::Strict && !is_ip && (!raw_host.is_ascii() || host.contains("xn--")) {
        let (unicode, res) = idna::domain_to_unicode(&host);
        if res.is_err() || unicode.split('.').any(|label| !label.is_single_script()) {
            return Err("host mixes scripts (possible homograph)".into());
        }
        if let Some(label) = unicode.split('.').find(|l| is_whole_label_lookalike(l)) {
            return Err(format!(
                "host label {label:?} is confusable with the ASCII label {:?} (possible homograph)",
                confusable_skeleton(label)
            ));
        }
    }
    let is_loopback = policy.loopback_hosts.iter().any(|l| l.eq_ignore_ascii_case(&host));
    Ok(UriInfo { kind, host: Some(host), is_ip, is_loopback })
}

/// The UTS #39 confusable skeleton of `s`, lower-cased (`аррӏе` in Cyrillic → `apple`).
pub(crate) fn confusable_skeleton(s: &str) -> String {
    let lower: String = unicode_security::skeleton(s).collect::<String>().to_lowercase();
    unicode_security::skeleton(&lower).collect()
}

/// A label written outside ASCII whose confusable skeleton is all ASCII: a whole-script
/// look-alike of an ASCII label (an all-Cyrillic `аррӏе` for `apple`), which the mixed-script
/// rule cannot see. Labels with letters that have no ASCII look-alike (`bücher`, `пример`,
/// `例え`) keep a non-ASCII skeleton and pass.
pub(crate) fn is_whole_label_lookalike(label: &str) -> bool {
    !label.is_ascii() && confusable_skeleton(label).is_ascii()
}

/// The "site" of a host, used to keep `client_uri`, `logo_uri`, `policy_uri` and `tos_uri`
/// on the redirect URIs' site in strict mode: the registrable domain of the Public Suffix List
/// (ICANN and private sections, embedded by the `psl` crate: `shop.example.co.uk` →
/// `example.co.uk`, `x.alice.github.io` → `alice.github.io`). A host that is itself a public
/// suffix (`com`, `github.io`) is its own site. Unknown top-level labels follow the list's
/// default rule (`*`): the last label is the suffix.
pub(crate) fn registrable_domain(host: &str) -> &str {
    psl::domain_str(host).unwrap_or(host)
}

/// Same site for the strict metadata-URI rule: IP and loopback hosts must be equal; other
/// hosts must share [`registrable_domain`].
pub(crate) fn same_site(a: &UriInfo, b: &UriInfo) -> bool {
    match (&a.host, &b.host) {
        (Some(x), Some(y)) => {
            if a.is_ip || b.is_ip || a.is_loopback || b.is_loopback {
                x == y
            } else {
                registrable_domain(x) == registrable_domain(y)
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The fast paths say what idna and the url crate say, whenever they answer.
        #[test]
        fn fast_paths_agree_with_idna_and_url(
            host in prop_oneof![
                "[a-zA-Z0-9.-]{0,24}",
                "([a-z0-9-]{0,6}\\.){0,4}[a-zA-Z]{1,4}",
                "([0-9]{1,4}\\.){3,4}[0-9]{1,4}",
                "[a-z]{0,2}--[a-z]{0,3}\\.com",
                "[a-z]{60,66}\\.com",
            ],
            port in prop::option::of("[0-9]{0,6}"),
            https in any::<bool>(),
        ) {
            if let Some(fast) = ldh_to_ascii(&host) {
                prop_assert_eq!(Ok(fast.into_owned()), idna::domain_to_ascii_strict(&host).map_err(|_| ()), "{}", host);
            }
            let raw = format!("{}://{host}{}/cb?x#y", if https { "HTTPS" } else { "http" }, port.map(|p| format!(":{p}")).unwrap_or_default());
            if let Some(p) = parse_simple(&raw) {
                let url = Url::parse(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
                prop_assert_eq!(&*p.scheme, url.scheme());
                prop_assert_eq!(p.host, url.host().map(|h| h.to_owned()));
                prop_assert_eq!(p.authority, authority_of(&raw[url.scheme().len() + 1..]));
            }
        }
    }

    fn redirect(raw: &str, native: bool, policy: &Policy) -> Result<UriInfo, String> {
        check_redirect(raw, &RedirectCtx { policy, native, public: false, implicit: false })
    }

    #[test]
    fn redirect_uri_table() {
        let strict = Policy::default();
        let ok: &[(&str, bool, Option<&str>)] = &[
            ("https://app.example.com/cb", false, Some("app.example.com")),
            ("HTTPS://App.Example.com:8443/cb?x=1", false, Some("app.example.com")),
            ("http://127.0.0.1:51234/callback", false, Some("127.0.0.1")),
            ("http://localhost:3000/cb", false, Some("localhost")),
            ("http://[::1]:8080/cb", false, Some("[::1]")),
            ("https://bücher.example/cb", false, Some("xn--bcher-kva.example")),
            ("https://例え.テスト/cb", false, Some("xn--r8jz45g.xn--zckzah")),
            ("com.example.app:/oauth2redirect", true, None),
            ("com.example.app://callback", true, None),
            ("https://10.1.2.3/cb", false, Some("10.1.2.3")),
        ];
        for (raw, native, host) in ok {
            let info = redirect(raw, *native, &strict).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(info.host.as_deref(), *host, "{raw}");
        }
        let bad: &[(&str, bool, &str)] = &[
            ("javascript:alert(1)", true, "scheme \"javascript\""),
            (" JavaScript:alert(1)", true, "scheme \"javascript\""),
            ("java\tscript:alert(1)", true, "scheme \"javascript\""),
            ("data:text/html,x", true, "scheme \"data\""),
            ("file:///etc/passwd", true, "scheme \"file\""),
            ("VBScript:x", true, "scheme \"vbscript\""),
            ("http://app.example.com/cb", false, "only allowed for loopback"),
            ("http://127.0.0.2/cb", false, "only allowed for loopback"),
            ("http://127.1/cb", false, "canonical form"),
            ("https://ex%61mple.com/cb", false, "percent"),
            ("https://0x7f.0.0.1/cb", false, "canonical"),
            ("https://app.example.com/cb#frag", false, "fragment"),
            ("https://app.example.com/cb#", false, "fragment"),
            ("https://user@app.example.com/cb", false, "userinfo"),
            ("https://good.com@evil.com/cb", false, "userinfo"),
            ("https://*.example.com/cb", false, "wildcard"),
            ("https:app.example.com/cb", false, "scheme://host"),
            ("https:/app.example.com/cb", false, "scheme://host"),
            ("https:///app.example.com/cb", false, "missing host"),
            ("https://app.example.com\\@evil.com/", false, "not allowed in a URI"),
            ("https://app.example.com/c b", false, "not allowed in a URI"),
            ("https://app.example.com/cb\n", false, "not allowed in a URI"),
            ("https://app.example.com./cb", false, "dot"),
            ("https://app_x.example.com/cb", false, "domain name"),
            ("/relative/cb", false, "absolute"),
            ("myapp:/cb", true, "private-use scheme \"myapp\" of a confidential client must be a reverse domain name"),
            (
                "com.example.app:/cb",
                false,
                "needs a public client (token_endpoint_auth_method \"none\") or application_type \"native\"",
            ),
            ("ws://127.0.0.1/cb", true, "scheme \"ws\" is not allowed"),
            ("https://xn--pypal-4ve.com/cb", false, "mixes scripts"),
            ("https://p\u{430}ypal.com/cb", false, "mixes scripts"),
            // All-Cyrillic "аррӏе": one script, so only the skeleton rule sees it.
            ("https://\u{430}\u{440}\u{440}\u{4cf}\u{435}.com/cb", false, "confusable with the ASCII label \"apple\""),
            ("https://xn--80ak6aa92e.com/cb", false, "confusable with the ASCII label"),
            ("https://xn--a.com/cb", false, "not an absolute URI"),
            ("", false, "empty"),
        ];
        for (raw, native, want) in bad {
            match redirect(raw, *native, &strict) {
                Ok(i) => panic!("{raw:?} accepted: {i:?}"),
                Err(e) => assert!(e.contains(want), "{raw:?}: {e:?} does not contain {want:?}"),
            }
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URI_CHARS));
        assert!(redirect(&long, false, &strict).unwrap_err().contains("longer than 2048"));
        // Permissive mode does not check scripts.
        let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
        assert!(redirect("https://p\u{430}ypal.com/cb", false, &permissive).is_ok());
        assert!(redirect("https://app.example.com/cb#x", false, &permissive).is_err());
    }

    #[test]
    fn private_use_schemes_for_public_clients() {
        let public = |raw: &str, policy: &Policy| {
            check_redirect(raw, &RedirectCtx { policy, native: false, public: true, implicit: false })
        };
        let p = Policy::default();
        for ok in [
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "vscode://saoudrizwan.claude-dev/mcp-auth/callback/0a1b",
            "myapp:/cb",
            "com.example.app:/oauth2redirect",
            "x-my+app.v2://cb",
        ] {
            let info = public(ok, &p).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!((info.kind, info.host), (UriKind::PrivateUse, None), "{ok}");
        }
        for scheme in REFUSED_REDIRECT_SCHEMES {
            let raw = format!("{scheme}://app.example.com/cb");
            let e = public(&raw, &p).unwrap_err();
            assert_eq!(e, format!("scheme {scheme:?} is not allowed"), "{raw}");
            // Written in upper case, the parser lower-cases it.
            let raw = format!("{}://app.example.com/cb", scheme.to_ascii_uppercase());
            assert!(public(&raw, &p).is_err(), "{raw}");
        }
        for (bad, want) in [
            ("c:/Windows/x", "scheme \"c\" is not allowed"),
            ("cursor:", "has nothing after the scheme"),
            ("cursor://a@b/cb", "userinfo"),
            ("cursor://*.b/cb", "wildcard"),
            ("cur sor://x", "not allowed in a URI"),
            ("-x://cb", "not an absolute URI"),
            ("cursor://x/cb#f", "fragment"),
        ] {
            let e = public(bad, &p).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let deny = Policy { redirect_scheme_deny: vec!["CURSOR".into()], ..Policy::default() };
        assert!(public("cursor://x/cb", &deny).unwrap_err().contains("denied by policy"));
        let allow = Policy { redirect_scheme_allow: vec!["vscode".into()], ..Policy::default() };
        assert!(public("cursor://x/cb", &allow).unwrap_err().contains("not in the allowed redirect schemes"));
        assert!(public("vscode://x/cb", &allow).is_ok());
        assert!(public("https://app.example.com/cb", &allow).is_ok());
        assert!(
            is_rfc3986_scheme("com.example.app")
                && is_rfc3986_scheme("a+b-c")
                && !is_rfc3986_scheme("1a")
                && !is_rfc3986_scheme("a:")
                && !is_rfc3986_scheme("")
        );
    }

    #[test]
    fn host_lists() {
        let p = Policy {
            redirect_host_allow: vec!["*.example.com".into(), "example.org".into()],
            redirect_host_deny: vec!["evil.example.com".into(), "localhost".into()],
            ..Policy::default()
        };
        assert!(redirect("https://app.example.com/cb", false, &p).is_ok());
        assert!(redirect("https://a.b.example.com/cb", false, &p).is_ok());
        assert!(redirect("https://example.org/cb", false, &p).is_ok());
        assert!(redirect("https://example.com/cb", false, &p).unwrap_err().contains("not in the allowed"));
        assert!(redirect("https://EVIL.example.com/cb", false, &p).unwrap_err().contains("denied"));
        // Loopback is exempt from the allow-list, not from the deny-list.
        assert!(redirect("http://127.0.0.1:9/cb", false, &p).is_ok());
        assert!(redirect("http://localhost:9/cb", false, &p).unwrap_err().contains("denied"));
        let idn = Policy { redirect_host_allow: vec!["bücher.example".into()], ..Policy::default() };
        assert!(redirect("https://BÜCHER.example/cb", false, &idn).is_ok());
        assert!(redirect("https://xn--bcher-kva.example/cb", false, &idn).is_ok());
    }

    #[test]
    fn implicit_needs_https_non_loopback() {
        let p = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
        let ctx = RedirectCtx { policy: &p, native: true, public: true, implicit: true };
        assert!(check_redirect("https://app.example.com/cb", &ctx).is_ok());
        assert!(check_redirect("http://127.0.0.1/cb", &ctx).unwrap_err().contains("implicit"));
        assert!(check_redirect("https://localhost/cb", &ctx).unwrap_err().contains("implicit"));
        assert!(check_redirect("com.example.app:/cb", &ctx).unwrap_err().contains("implicit"));
    }

    #[test]
    fn https_uris() {
        let strict = Policy::default();
        let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
        assert!(check_https("https://example.com/logo.png", &strict).is_ok());
        assert!(check_https("http://example.com/logo.png", &strict).unwrap_err().contains("https is required"));
        assert!(check_https("http://127.0.0.1/logo.png", &permissive).unwrap_err().contains("https is required"));
        assert!(check_https("https://example.com/tos#s1", &strict).unwrap_err().contains("fragment"));
        assert!(check_https("https://example.com/tos#s1", &permissive).is_ok());
        assert!(check_https("https://u:p@example.com/", &permissive).unwrap_err().contains("userinfo"));
        assert!(check_https("javascript:alert(1)", &permissive).unwrap_err().contains("javascript"));
    }

    #[test]
    fn registrable_domains() {
        for (host, want) in [
            ("example.com", "example.com"),
            ("a.b.example.com", "example.com"),
            ("com", "com"),
            ("shop.example.co.uk", "example.co.uk"),
            ("example.co.uk", "example.co.uk"),
            ("a.example.com.au", "example.com.au"),
            ("alice.github.io", "alice.github.io"),
            ("x.alice.github.io", "alice.github.io"),
            ("a.b.c.d.example.org", "example.org"),
            // Suffixes the old hand-written list did not know.
            ("a.b.example.pvt.k12.ma.us", "example.pvt.k12.ma.us"),
            ("x.alice.s3.amazonaws.com", "alice.s3.amazonaws.com"),
            ("app.bob.fly.dev", "bob.fly.dev"),
            ("shop.example.co.jp", "example.co.jp"),
            ("a.example.unknowntld", "example.unknowntld"),
        ] {
            assert_eq!(registrable_domain(host), want, "{host}");
        }
        let info =
            |h: &str, ip: bool| UriInfo { kind: UriKind::Https, host: Some(h.into()), is_ip: ip, is_loopback: false };
        assert!(same_site(&info("www.example.com", false), &info("app.example.com", false)));
        assert!(!same_site(&info("alice.github.io", false), &info("bob.github.io", false)));
        assert!(same_site(&info("10.0.0.1", true), &info("10.0.0.1", true)));
        assert!(!same_site(&info("10.0.0.1", true), &info("10.0.0.2", true)));
    }
}
