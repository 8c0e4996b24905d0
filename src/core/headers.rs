//! Header values read from their bytes, and the client headers the gateway never passes on.
//!
//! Why from bytes: `HeaderValue::to_str` fails on any byte outside visible ASCII, and code
//! that then treats the header as absent fails open — one `é` in `X-Forwarded-For` dropped
//! the whole header (the client became the trusted proxy), one in `User-Agent` made the
//! `user_agents` signal vanish while the IdP still received it. Here a value is always read:
//! lossily as text for signals (the request still carries the value), and strictly, element
//! by element, for addresses.

/// A header value as text: invalid UTF-8 becomes U+FFFD, surrounding whitespace trimmed.
/// `None` only when the header is absent or blank.
pub fn text(value: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(value);
    let t = s.trim_matches(|c: char| c == ' ' || c == '\t');
    if t.is_empty() {
        None
    } else {
        Some(t.to_string())
    }
}

/// Headers that carry a client address, port or TLS fingerprint claimed by a proxy. From an
/// untrusted peer they are whatever the client wrote, so they are removed before forwarding
/// (the configured JA3/JA4 header names are added to this list; `[network]
/// strip_untrusted_headers` replaces it).
pub const DEFAULT_UNTRUSTED_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

/// Headers that describe the client's body bytes; meaningless (or harmful) once the gateway
/// replaced the body with its own re-serialized JSON.
pub const BODY_DESCRIBING_HEADERS: &[&str] =
    &["content-encoding", "content-md5", "digest", "content-digest", "repr-digest", "transfer-encoding", "expect"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_values_are_still_read() {
        assert_eq!(text(b"BadBot/1.0 caf\xe9").as_deref(), Some("BadBot/1.0 caf\u{fffd}"));
        assert_eq!(text(b"  ").as_deref(), None);
        assert_eq!(text(b" x ").as_deref(), Some("x"));
    }
}
