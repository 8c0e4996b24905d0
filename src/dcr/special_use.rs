//! Special-use IP addresses (RFC 6890 and the IANA special-purpose address registries): the
//! addresses a server-side fetch must never reach unless an operator allows them. Used by the
//! strict screening of metadata URIs the IdP will fetch (`dcr::screen`) and by the outbound
//! fetcher (src/fetch), so both refuse the same ranges. Imports nothing else from `dcr`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The special-use range `ip` falls in, by name, or `None` for a globally reachable unicast
/// address. IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses are judged
/// by the IPv4 address they carry, so `::ffff:127.0.0.1` is `loopback`; IPv4-compatible
/// (`::a.b.c.d`), 6to4 and Teredo forms are refused whole (deprecated or tunnels to an address
/// the gateway cannot judge).
pub fn special_use_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// [`special_use_range`] unless one of `allow` contains the address (an IPv4-mapped address is
/// looked up as the IPv4 address it carries): the rule the outbound fetcher and the resolution
/// of registration metadata URI hosts (`[dcr] resolve_metadata_uris`) share.
pub fn forbidden_range(ip: IpAddr, allow: &[ipnet::IpNet]) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    special_use_range(ip).filter(|_| !allow.iter().any(|n| n.contains(&ip)))
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "this-network",
        (10, _, _) => "private",
        (100, 64..=127, _) => "shared-address-space",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "ietf-protocol-assignments",
        (192, 0, 2) => "documentation",
        (192, 88, 99) => "6to4-relay-anycast",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (198, 51, 100) => "documentation",
        (203, 0, 113) => "documentation",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:0:0/96 IPv4-mapped: the IPv4 address decides.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    // ::/96 IPv4-compatible (deprecated, RFC 4291 §2.5.5.1) and the rest of ::/8.
    if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 {
        return Some("ipv4-compatible");
    }
    // 64:ff9b::/96 well-known NAT64 prefix (RFC 6052): the embedded IPv4 address decides.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return special_v4(v4);
    }
    Some(match s[0] {
        // 64:ff9b:1::/48 local-use NAT64 (RFC 8215).
        0x64 if s[1] == 0xff9b && s[2] == 1 => "nat64-local-use",
        // 100::/64 discard-only (RFC 6666).
        0x100 if s[1..4] == [0, 0, 0] => "discard-only",
        // 2001::/23 IETF protocol assignments (Teredo 2001::/32, benchmarking, ORCHID, ...).
        0x2001 if s[1] < 0x200 => "ietf-protocol-assignments",
        0x2001 if s[1] == 0xdb8 => "documentation",
        0x2002 => "6to4",
        // 3fff::/20 documentation (RFC 9637).
        0x3fff if s[1] < 0x1000 => "documentation",
        0x5f00 => "srv6-sid",
        0xfc00..=0xfdff => "unique-local",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        _ => return None,
    })
}

/// Special-use domain names (RFC 6761, RFC 8375, ICANN's `.internal`): `localhost` and its
/// subdomains, `.local` (mDNS), `.home.arpa`, `.internal`, `.invalid`, `.onion`, `.alt`
/// (RFC 9476): names that resolve, if at all, only inside a network. (`.test` and `.example`
/// are special-use too, but resolve nowhere and are what documentation and tests use.)
/// `host` is ASCII lower case.
pub fn special_use_name(host: &str) -> Option<&'static str> {
    const NAMES: [&str; 7] = ["localhost", "local", "home.arpa", "internal", "invalid", "onion", "alt"];
    let host = host.strip_suffix('.').unwrap_or(host);
    NAMES.into_iter().find(|n| host == *n || host.strip_suffix(n).is_some_and(|rest| rest.ends_with('.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range() {
        let special = [
            ("0.0.0.0", "this-network"),
            ("0.1.2.3", "this-network"),
            ("10.0.0.1", "private"),
            ("100.64.0.1", "shared-address-space"),
            ("100.127.255.254", "shared-address-space"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "ietf-protocol-assignments"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "6to4-relay-anycast"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "ipv4-compatible"),
            ("::8.8.8.8", "ipv4-compatible"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b:1::1", "nat64-local-use"),
            ("100::1", "discard-only"),
            ("2001::1", "ietf-protocol-assignments"),
            ("2001:2::1", "ietf-protocol-assignments"),
            ("2001:db8::1", "documentation"),
            ("2002:7f00:1::1", "6to4"),
            ("3fff::1", "documentation"),
            ("5f00::1", "srv6-sid"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
        ];
        for (ip, want) in special {
            assert_eq!(special_use_range(ip.parse().unwrap()), Some(want), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:4860::8888",
            "2001:db9::1",
            "3fff:1000::1",
        ] {
            assert_eq!(special_use_range(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn names() {
        for (h, want) in [
            ("localhost", Some("localhost")),
            ("app.localhost", Some("localhost")),
            ("printer.local", Some("local")),
            ("nas.home.arpa", Some("home.arpa")),
            ("db.corp.internal", Some("internal")),
            ("x.onion", Some("onion")),
            ("x.test", None),
            ("example.com", None),
            ("notlocalhost", None),
            ("local.example.com", None),
            ("mylocal", None),
        ] {
            assert_eq!(special_use_name(h), want, "{h}");
        }
    }
}
