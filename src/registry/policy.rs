//! The registry's decisions, pure: what identifies a registration (fingerprint, registrant
//! prefix, software key), the state a client is in at a given time, and whether a new
//! registration is capped or a duplicate. No I/O: the store supplies the counts.

use std::net::IpAddr;

use serde_json::Value;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// Registry settings that decide (reloadable with the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Live dynamically registered clients, in all (0 = no cap).
    pub max_clients: u64,
    /// Live clients per software key (`software_id`, else the normalized client name).
    pub max_per_software: u64,
    /// Registrations per registrant prefix within `prefix_window_secs`.
    pub max_per_prefix: u64,
    pub prefix_window_secs: i64,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// De-duplicate identical public registrations from one prefix within this many seconds
    /// (0 = off).
    pub dedupe_window_secs: i64,
    /// A client never used this long after its creation is `unused`.
    pub unused_grace_secs: i64,
    /// A client not used for this long is `idle`.
    pub idle_after_secs: i64,
}

/// The registrant's network: the client IP masked to `/prefix_v4` or `/prefix_v6`.
pub fn prefix(ip: IpAddr, v4: u8, v6: u8) -> String {
    match ip {
        IpAddr::V4(a) => {
            let bits = v4.min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            format!("{}/{bits}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let bits = v6.min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            format!("{}/{bits}", std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// The canonical text (members sorted, compact) written straight into `out`: no copy of the
/// document, one buffer (a registration's fingerprint is on the registry's request path).
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => canonical_members(m, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        // Writing a scalar into a Vec cannot fail.
        other => serde_json::to_writer(&mut *out, other).unwrap_or_default(),
    }
}

fn canonical_members(m: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut members: Vec<(&String, &Value)> = m.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k).unwrap_or_default();
        out.push(b':');
        canonical(v, out);
    }
    out.push(b'}');
}

/// SHA-256 (hex) of the normalized registration document with its members sorted: two
/// registrations with the same metadata in any member order have one fingerprint.
pub fn fingerprint(doc: &serde_json::Map<String, Value>) -> String {
    let mut s = Vec::with_capacity(1024);
    canonical_members(doc, &mut s);
    hex::encode(Sha256::digest(&s))
}

/// A client name folded for counting: NFKC, lower case, runs of whitespace as one space.
pub fn normalized_name(name: &str) -> String {
    let folded: String = name.nfkc().collect::<String>().to_lowercase();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the per-software cap counts: `software_id`, else the normalized client name.
pub fn software_key(software_id: Option<&str>, client_name: Option<&str>) -> String {
    match (software_id.map(str::trim).filter(|s| !s.is_empty()), client_name) {
        (Some(id), _) => format!("id:{id}"),
        (None, Some(n)) if !normalized_name(n).is_empty() => format!("name:{}", normalized_name(n)),
        _ => "unnamed".into(),
    }
}

/// A public client: it authenticates to the token endpoint with nothing.
pub fn is_public(doc: &serde_json::Map<String, Value>) -> bool {
    doc.get("token_endpoint_auth_method").and_then(Value::as_str) == Some("none")
}

/// A client's state at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Used recently, or still within its grace.
    Active,
    /// Never used, and older than `unused_grace`.
    Unused,
    /// Last used more than `idle_after` ago.
    Idle,
    /// Deleted (by the reaper or through the admin API).
    Deleted,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Active => "active",
            ClientState::Unused => "unused",
            ClientState::Idle => "idle",
            ClientState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<ClientState> {
        Some(match s {
            "active" => ClientState::Active,
            "unused" => ClientState::Unused,
            "idle" => ClientState::Idle,
            "deleted" => ClientState::Deleted,
            _ => return None,
        })
    }
}

/// The state of a client created at `created`, last used at `last_used`, deleted at `deleted`.
pub fn state(limits: &Limits, now: i64, created: i64, last_used: Option<i64>, deleted: Option<i64>) -> ClientState {
    if deleted.is_some() {
        return ClientState::Deleted;
    }
    match last_used {
        None if limits.unused_grace_secs > 0 && now - created >= limits.unused_grace_secs => ClientState::Unused,
        Some(t) if limits.idle_after_secs > 0 && now - t >= limits.idle_after_secs => ClientState::Idle,
        _ => ClientState::Active,
    }
}

/// The counts a new registration is judged against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub live_total: u64,
    pub live_software: u64,
    pub prefix_recent: u64,
}

/// Which cap refused a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Total,
    Software,
    Prefix,
}

impl Cap {
    pub fn as_str(self) -> &'static str {
        match self {
            Cap::Total => "total",
            Cap::Software => "software",
            Cap::Prefix => "prefix",
        }
    }
}

/// `Some(cap)` when one more registration would exceed a cap.
pub fn capped(limits: &Limits, c: Counts) -> Option<Cap> {
    if limits.max_clients > 0 && c.live_total >= limits.max_clients {
        return Some(Cap::Total);
    }
    if limits.max_per_software > 0 && c.live_software >= limits.max_per_software {
        return Some(Cap::Software);
    }
    if limits.max_per_prefix > 0 && c.prefix_recent >= limits.max_per_prefix {
        return Some(Cap::Prefix);
    }
    None
}

/// Why a client is reaped (`None`: it stays).
pub fn reap_reason(limits: &Limits, now: i64, created: i64, last_used: Option<i64>) -> Option<&'static str> {
    match state(limits, now, created, last_used, None) {
        ClientState::Unused => Some("unused"),
        ClientState::Idle => Some("idle"),
        _ => None,
    }
}

/// The client_id of an `application/x-www-form-urlencoded` text (a query or a form body),
/// decoded; `None` when absent, repeated (ambiguous), empty or longer than 256 bytes. Borrowed
/// from `form` when it needs no decoding (the common case: no allocation).
pub fn form_client_id(form: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let mut found: Option<&[u8]> = None;
    for pair in form.split(|b| *b == b'&') {
        let Some(v) = pair.strip_prefix(b"client_id=") else { continue };
        if found.is_some() {
            return None;
        }
        found = Some(v);
    }
    let v = found?;
    if v.is_empty() || v.len() > 3 * 256 {
        return None;
    }
    let s = if v.iter().any(|b| *b == b'%' || *b == b'+') {
        let plus: Vec<u8> = v.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
        std::borrow::Cow::Owned(percent_encoding::percent_decode(&plus).decode_utf8().ok()?.into_owned())
    } else {
        std::borrow::Cow::Borrowed(std::str::from_utf8(v).ok()?)
    };
    (!s.is_empty() && s.len() <= 256).then_some(s)
}

/// The client_id of an `Authorization: Basic` value (RFC 6749 §2.3.1: form-encoded before
/// base64). The password is decoded with it and dropped here.
pub fn basic_client_id(authorization: &[u8]) -> Option<String> {
    use base64::Engine;
    if !authorization.get(..6)?.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(authorization[6..].trim_ascii()).ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let id = percent_encoding::percent_decode(&raw[..colon]).decode_utf8().ok()?;
    (!id.is_empty() && id.len() <= 256).then(|| id.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_clients: 3,
            max_per_software: 2,
            max_per_prefix: 5,
            prefix_window_secs: 3600,
            prefix_v4: 24,
            prefix_v6: 48,
            dedupe_window_secs: 3600,
            unused_grace_secs: 100,
            idle_after_secs: 1000,
        }
    }

    #[test]
    fn prefixes_mask_the_host_bits() {
        assert_eq!(prefix("203.0.113.77".parse().unwrap(), 24, 48), "203.0.113.0/24");
        assert_eq!(prefix("2001:db8:1:2::5".parse().unwrap(), 24, 48), "2001:db8:1::/48");
        assert_eq!(prefix("10.1.2.3".parse().unwrap(), 0, 48), "0.0.0.0/0");
        assert_eq!(prefix("10.1.2.3".parse().unwrap(), 40, 48), "10.1.2.3/32");
    }

    #[test]
    fn fingerprint_ignores_member_order_but_not_values() {
        let a: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"client_name":"x","redirect_uris":["https://a/cb"],"g":{"b":1,"a":2}}"#).unwrap();
        let b: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"g":{"a":2,"b":1},"redirect_uris":["https://a/cb"],"client_name":"x"}"#).unwrap();
        let c: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"client_name":"x","redirect_uris":["https://b/cb"],"g":{"b":1,"a":2}}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    /// Fingerprints are stored: their text must never change under a rewrite (this is the
    /// SHA-256 of the sorted compact JSON, computed outside Rust).
    #[test]
    fn fingerprint_is_the_sha256_of_the_sorted_compact_text() {
        let doc: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"redirect_uris":["https://a/cb"],"g":{"b":[1.5,true,null],"a":2},"client_name":"x\u00e9\"\u0001"}"#,
        )
        .unwrap();
        assert_eq!(fingerprint(&doc), "1c97fb8e9f341350dbde8541614eb5e3fc8a917887299419b560f0b3d4319795");
    }

    #[test]
    fn software_key_prefers_software_id_then_folded_name() {
        assert_eq!(software_key(Some("cursor"), Some("Cursor")), "id:cursor");
        assert_eq!(software_key(None, Some("  Claude   Desktop ")), "name:claude desktop");
        assert_eq!(software_key(None, Some("ＣＬＡＵＤＥ desktop")), "name:claude desktop");
        assert_eq!(software_key(Some(" "), None), "unnamed");
    }

    #[test]
    fn states_follow_grace_and_idleness() {
        let l = limits();
        assert_eq!(state(&l, 50, 0, None, None), ClientState::Active);
        assert_eq!(state(&l, 100, 0, None, None), ClientState::Unused);
        assert_eq!(state(&l, 1099, 0, Some(100), None), ClientState::Active);
        assert_eq!(state(&l, 1100, 0, Some(100), None), ClientState::Idle);
        assert_eq!(state(&l, 1100, 0, Some(100), Some(5)), ClientState::Deleted);
        assert_eq!(reap_reason(&l, 100, 0, None), Some("unused"));
        assert_eq!(reap_reason(&l, 1100, 0, Some(100)), Some("idle"));
        assert_eq!(reap_reason(&l, 1099, 0, Some(100)), None);
        let off = Limits { unused_grace_secs: 0, idle_after_secs: 0, ..l };
        assert_eq!(state(&off, i64::MAX / 2, 0, None, None), ClientState::Active);
    }

    #[test]
    fn caps_refuse_the_one_past_the_limit() {
        let l = limits();
        assert_eq!(capped(&l, Counts { live_total: 2, live_software: 1, prefix_recent: 4 }), None);
        assert_eq!(capped(&l, Counts { live_total: 3, ..Default::default() }), Some(Cap::Total));
        assert_eq!(capped(&l, Counts { live_software: 2, ..Default::default() }), Some(Cap::Software));
        assert_eq!(capped(&l, Counts { prefix_recent: 5, ..Default::default() }), Some(Cap::Prefix));
        let none = Limits { max_clients: 0, max_per_software: 0, max_per_prefix: 0, ..l };
        assert_eq!(capped(&none, Counts { live_total: 1 << 40, live_software: 9, prefix_recent: 9 }), None);
    }

    #[test]
    fn client_ids_are_read_from_forms_and_basic() {
        assert_eq!(form_client_id(b"response_type=code&client_id=abc%2Fd+e&x=1").as_deref(), Some("abc/d e"));
        assert_eq!(form_client_id(b"client_id=a&client_id=b"), None);
        assert_eq!(form_client_id(b"xclient_id=a"), None);
        assert_eq!(form_client_id(b"client_id="), None);
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode("my%3Aid:s3cret");
        assert_eq!(basic_client_id(format!("Basic {b}").as_bytes()).as_deref(), Some("my:id"));
        assert_eq!(basic_client_id(format!("basic {b}").as_bytes()).as_deref(), Some("my:id"));
        assert_eq!(basic_client_id(b"Bearer abc"), None);
        assert_eq!(basic_client_id(b"Basic !!!"), None);
    }

    #[test]
    fn public_means_auth_method_none() {
        let p: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"token_endpoint_auth_method":"none"}"#).unwrap();
        let c: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"token_endpoint_auth_method":"client_secret_basic"}"#).unwrap();
        assert!(is_public(&p));
        assert!(!is_public(&c));
        assert!(!is_public(&serde_json::Map::new()));
    }
}
