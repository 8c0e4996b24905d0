//! The request signals the ACL evaluates. Built once per request by the proxy adapter
//! (or by `explain` / `test-rules`), never touched by Pingora types.

use std::net::IpAddr;

/// Everything the ACL may look at for one request. A `None` / empty field means the
/// request does not have that signal: `match` on it fails, `not_match` on it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signals {
    /// Client IP after trusted-proxy resolution; IPv4-mapped IPv6 already folded to IPv4.
    pub client_ip: IpAddr,
    /// The TCP peer; IPv4-mapped IPv6 already folded to IPv4.
    pub connecting_ip: IpAddr,
    /// ISO 3166-1 alpha-2, upper case (`US`).
    pub country: Option<String>,
    /// ISO 3166-2 codes with the country prefix, upper case (`US-WA`), most general first.
    pub subdivisions: Vec<String>,
    /// Autonomous system number of the client IP.
    pub asn: Option<u32>,
    pub user_agent: Option<String>,
    pub ja3: Option<String>,
    pub ja4: Option<String>,
    /// TLS SNI, else the Host header without port; lower case.
    pub hostname: Option<String>,
}

impl Signals {
    /// Signals carrying only addresses; every other signal absent.
    pub fn from_ip(client_ip: IpAddr, connecting_ip: IpAddr) -> Self {
        Signals {
            client_ip: canonical_ip(client_ip),
            connecting_ip: canonical_ip(connecting_ip),
            country: None,
            subdivisions: Vec::new(),
            asn: None,
            user_agent: None,
            ja3: None,
            ja4: None,
            hostname: None,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) counts as IPv4 everywhere in the gateway.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}
