//! Host names as the policy writes them: the `redirect_host_allow` / `redirect_host_deny`
//! patterns and the `loopback_hosts` literals. Imports nothing else from `dcr`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `localhost`, `*.localhost` names, 127.0.0.0/8, `[::1]`.
pub(crate) fn is_loopback_host_literal(h: &str) -> bool {
    let lower = h.to_ascii_lowercase();
    if lower == "localhost" {
        return true;
    }
    if let Some(label) = lower.strip_suffix(".localhost") {
        return !label.is_empty() && label.split('.').all(is_ldh_label);
    }
    if let Some(inner) = lower.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback() && format!("[{ip}]") == lower);
    }
    lower.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_ldh_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A parsed `redirect_host_allow` / `redirect_host_deny` entry, in ASCII lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    /// `*.suffix`: the stored value is `.suffix`.
    Subdomains(String),
}

impl HostPattern {
    pub(crate) fn parse(p: &str) -> Option<HostPattern> {
        let (wild, rest) = match p.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        if rest.contains('*') || rest.is_empty() {
            return None;
        }
        if let Some(inner) = rest.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let ip: Ipv6Addr = inner.parse().ok()?;
            return (!wild).then(|| HostPattern::Exact(format!("[{ip}]")));
        }
        if rest.parse::<IpAddr>().is_ok() {
            // A bare IPv6 address is not a host as written in a URI.
            return (!wild && rest.parse::<Ipv4Addr>().is_ok()).then(|| HostPattern::Exact(rest.to_string()));
        }
        let ascii = idna::domain_to_ascii_strict(rest).ok()?;
        if ascii.is_empty() || ascii.ends_with('.') {
            return None;
        }
        Some(if wild { HostPattern::Subdomains(format!(".{ascii}")) } else { HostPattern::Exact(ascii) })
    }

    /// `host` is the ASCII lower-case form of a URI host.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// Does `host` (ASCII lower case) match any pattern of `list`? Invalid patterns match nothing
/// (`Policy::validate` reports them).
pub(crate) fn matches_any(list: &[String], host: &str) -> bool {
    list.iter().any(|p| {
        // Plain ASCII patterns need no IDNA work per request.
        if p.is_ascii() && !p.contains('[') {
            let p = p.as_bytes();
            let h = host.as_bytes();
            if let Some(suffix) = p.strip_prefix(b"*.") {
                if suffix.contains(&b'*') {
                    return false;
                }
                h.len() > suffix.len() + 1
                    && h[h.len() - suffix.len() - 1] == b'.'
                    && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            } else {
                h.eq_ignore_ascii_case(p)
            }
        } else {
            HostPattern::parse(p).is_some_and(|pat| pat.matches(host))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let ok = |p: &str, h: &str| matches_any(&[p.to_string()], h);
        assert!(ok("example.com", "example.com"));
        assert!(ok("EXAMPLE.com", "example.com"));
        assert!(!ok("example.com", "a.example.com"));
        assert!(ok("*.example.com", "a.example.com"));
        assert!(ok("*.example.com", "a.b.example.com"));
        assert!(!ok("*.example.com", "example.com"));
        assert!(!ok("*.example.com", "badexample.com"));
        assert!(ok("bücher.example", "xn--bcher-kva.example"));
        assert!(ok("*.bücher.example", "a.xn--bcher-kva.example"));
        assert!(ok("[::1]", "[::1]"));
        assert!(!ok("*.*", "a.b"));
        for bad in ["*", "*.*", "a*.com", "*.", "", "[::1", "*.[::1]", "::1", "*.127.0.0.1"] {
            assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
        }
        assert!(is_loopback_host_literal("127.0.0.2"));
        assert!(is_loopback_host_literal("app.localhost"));
        assert!(!is_loopback_host_literal("10.0.0.1"));
        assert!(!is_loopback_host_literal("[::2]"));
    }
}
