//! Reading the request's signals off a Pingora session.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use pingora::proxy::Session;

use super::tls::ServerName;
use crate::signals::{canonical_ip, Signals};
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;

pub struct Extracted {
    pub signals: Signals,
    pub peer_trusted: bool,
    /// The request id a trusted proxy sent, if any.
    pub request_id: Option<String>,
}

fn peer_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| canonical_ip(a.ip()))
        // A non-inet peer (unix socket) cannot be placed on a network: unspecified matches no CIDR.
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

pub fn is_tls(session: &Session, tls_listeners: &[SocketAddr]) -> bool {
    if session.digest().and_then(|d| d.ssl_digest.as_ref()).is_some() {
        return true;
    }
    session
        .server_addr()
        .and_then(|a| a.as_inet())
        .is_some_and(|a| tls_listeners.contains(a))
}

fn sni(session: &Session) -> Option<String> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|d| d.extension.get::<ServerName>())
        .map(|s| s.0.clone())
}

/// `Host` without port, lower case (`[::1]:8080` → `[::1]`).
fn host_without_port(host: &str) -> String {
    let h = host.trim();
    let h = if h.starts_with('[') {
        match h.find(']') {
            Some(i) => &h[..=i],
            None => h,
        }
    } else {
        match h.rfind(':') {
            Some(i) if h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &h[..i],
            _ => h,
        }
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

pub fn extract(session: &Session, snap: &Snapshot, metrics: &Metrics) -> Extracted {
    let cfg = &snap.config;
    let peer = peer_ip(session);
    let peer_trusted = cfg.trusted_proxies.contains(peer);
    let client_ip = if peer_trusted {
        let xff = session
            .req_header()
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        cfg.trusted_proxies.client_ip(peer, xff)
    } else {
        peer
    };
    let mut signals = Signals::from_ip(client_ip, peer);
    if let Some(geo) = &snap.geo {
        let info = geo.lookup(signals.client_ip);
        if info.country.is_none() {
            metrics.geoip_misses.with_label_values(&["country"]).inc();
        }
        signals.country = info.country;
        signals.subdivisions = info.subdivisions;
    }
    if let Some(asn) = &snap.asn {
        signals.asn = asn.lookup(signals.client_ip);
        if signals.asn.is_none() {
            metrics.geoip_misses.with_label_values(&["asn"]).inc();
        }
    }
    signals.user_agent = header_str(session, "user-agent").map(str::to_string);
    if peer_trusted {
        signals.ja3 = cfg.ja3_header.as_deref().and_then(|h| header_str(session, h)).map(str::to_string);
        signals.ja4 = cfg.ja4_header.as_deref().and_then(|h| header_str(session, h)).map(str::to_string);
    }
    signals.hostname = sni(session).or_else(|| {
        header_str(session, "host")
            .map(host_without_port)
            .or_else(|| session.req_header().uri.host().map(|h| h.to_ascii_lowercase()))
    });
    let request_id = if peer_trusted {
        header_str(session, &cfg.request_id_header).map(str::to_string)
    } else {
        None
    };
    Extracted { signals, peer_trusted, request_id }
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(host_without_port("Example.COM:8443"), "example.com");
        assert_eq!(host_without_port("example.com."), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("idp"), "idp");
    }
}
