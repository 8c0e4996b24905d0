//! Client-IP resolution through trusted proxies.
//!
//! The client IP is the TCP peer, unless the peer is a trusted proxy: then it is the
//! rightmost `X-Forwarded-For` address that is not itself trusted. Anything left of that
//! address was written by the client and is ignored. An entry that does not parse stops the
//! walk: the hop that forwarded it is taken as the client (fail closed: garbage never lets
//! a request pick its own address).

use std::net::IpAddr;

use ipnet::IpNet;
use prefix_trie::PrefixSet;

use super::canonical_ip;

#[derive(Clone, Default)]
pub struct TrustedProxies {
    v4: PrefixSet<ipnet::Ipv4Net>,
    v6: PrefixSet<ipnet::Ipv6Net>,
    count: usize,
}

impl std::fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedProxies({} networks)", self.count)
    }
}

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> Self {
        let mut t = TrustedProxies::default();
        for n in nets {
            match n.trunc() {
                IpNet::V4(n) => {
                    t.v4.insert(n);
                }
                IpNet::V6(n) => match n.addr().to_ipv4_mapped() {
                    // `::ffff:10.0.0.0/104` means `10.0.0.0/8`.
                    Some(v4) if n.prefix_len() >= 96 => {
                        if let Ok(net) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96) {
                            t.v4.insert(net.trunc());
                        }
                    }
                    _ => {
                        t.v6.insert(n);
                    }
                },
            }
            t.count += 1;
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical_ip(ip) {
            IpAddr::V4(a) => self.v4.get_lpm(&ipnet::Ipv4Net::from(a)).is_some(),
            IpAddr::V6(a) => self.v6.get_lpm(&ipnet::Ipv6Net::from(a)).is_some(),
        }
    }

    /// Resolve the client IP from the TCP peer and the `X-Forwarded-For` values, in the
    /// order the headers appeared.
    pub fn client_ip<'a>(&self, peer: IpAddr, xff: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = xff.flat_map(|h| h.split(',')).collect();
        let mut client = peer;
        for raw in entries.iter().rev() {
            match parse_xff_entry(raw) {
                Some(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        return ip;
                    }
                }
                None => return client,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` element: an IP, optionally with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn parse_xff_entry(raw: &str) -> Option<IpAddr> {
    let s = raw.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end].parse::<IpAddr>().ok().map(canonical_ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical_ip(sa.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&nets)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let t = tp(&["10.0.0.0/8"]);
        assert_eq!(t.client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter()), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_rightmost_untrusted_entry_wins() {
        let t = tp(&["10.0.0.0/8", "127.0.0.1/32"]);
        let got = t.client_ip(ip("127.0.0.1"), ["6.6.6.6, 198.51.100.7, 10.1.2.3"].into_iter());
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn several_headers_are_concatenated_in_order() {
        let t = tp(&["127.0.0.1/32", "10.0.0.0/8"]);
        let got = t.client_ip(ip("127.0.0.1"), ["198.51.100.7", "10.0.0.1"].into_iter());
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let t = tp(&["127.0.0.1/32", "10.0.0.0/8"]);
        let got = t.client_ip(ip("127.0.0.1"), ["1.1.1.1, not-an-ip, 10.0.0.5"].into_iter());
        assert_eq!(got, ip("10.0.0.5"));
    }

    #[test]
    fn all_trusted_gives_leftmost() {
        let t = tp(&["127.0.0.1/32", "10.0.0.0/8"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), ["10.0.0.9, 10.0.0.5"].into_iter()), ip("10.0.0.9"));
        assert_eq!(t.client_ip(ip("127.0.0.1"), std::iter::empty()), ip("127.0.0.1"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let t = tp(&["127.0.0.1/32"]);
        assert_eq!(t.client_ip(ip("::ffff:127.0.0.1"), ["1.2.3.4:80"].into_iter()), ip("1.2.3.4"));
        assert_eq!(t.client_ip(ip("127.0.0.1"), ["[2001:db8::1]:443"].into_iter()), ip("2001:db8::1"));
        assert_eq!(t.client_ip(ip("127.0.0.1"), ["::ffff:192.0.2.1"].into_iter()), ip("192.0.2.1"));
    }

    #[test]
    fn ipv6_trusted_networks() {
        let t = tp(&["::1/128", "fd00::/8"]);
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12::1")));
        assert!(!t.contains(ip("2001:db8::1")));
        let t = tp(&["::ffff:10.0.0.0/104"]);
        assert!(t.contains(ip("10.9.9.9")));
    }
}
