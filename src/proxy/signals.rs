//! Reading the request's signals off a Pingora session.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use pingora::proxy::Session;

use super::tls::ServerName;
use crate::core::headers;
use crate::core::target::{self, RequestView, TargetError};
use crate::signals::{canonical_ip, Signals};
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;

pub struct Extracted {
    pub signals: Signals,
    pub peer_trusted: bool,
    /// The request id a trusted proxy sent, if any.
    pub request_id: Option<String>,
    /// The TLS server name the client sent, lower case.
    pub sni: Option<String>,
    /// A header the gateway needs could not be read unambiguously (→ 400).
    pub header_error: Option<&'static str>,
}

fn peer_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| canonical_ip(a.ip()))
        // A non-inet peer (unix socket) cannot be placed on a network: unspecified matches no CIDR.
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// A header's value as text, read from its bytes (`core::headers::text`).
fn header_text(session: &Session, name: &str) -> Option<String> {
    session.req_header().headers.get(name).and_then(|v| headers::text(v.as_bytes()))
}

pub fn is_tls(session: &Session, tls_listeners: &[SocketAddr]) -> bool {
    if session.digest().and_then(|d| d.ssl_digest.as_ref()).is_some() {
        return true;
    }
    session.server_addr().and_then(|a| a.as_inet()).is_some_and(|a| tls_listeners.contains(a))
}

fn sni(session: &Session) -> Option<String> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|d| d.extension.get::<ServerName>())
        .map(|s| s.0.trim_end_matches('.').to_ascii_lowercase())
}

/// The canonical view of the request head (`core::target::parse`). HTTP/1 gives the target as
/// received (absolute-form included) and its `Host` headers; HTTP/2 gives `:path` and
/// `:authority` (Pingora keeps the latter in the URI), else `Host`.
pub fn request_view(session: &Session) -> Result<RequestView, TargetError> {
    let req = session.req_header();
    let host_values: Vec<&[u8]> = req.headers.get_all(http::header::HOST).iter().map(|v| v.as_bytes()).collect();
    let h2_authority;
    let hosts: &[&[u8]] = match req.uri.authority() {
        Some(a) if session.is_http2() => {
            h2_authority = [a.as_str().as_bytes()];
            &h2_authority
        }
        _ => &host_values,
    };
    let head = target::Head {
        method_is_options: req.method == http::Method::OPTIONS,
        target: req.raw_path(),
        hosts,
        host_required: req.version >= http::Version::HTTP_11,
    };
    target::parse(&head)
}

/// Gather the ACL signals. `host` is the request's host decided by [`request_view`].
pub fn extract(session: &Session, snap: &Snapshot, metrics: &Metrics, host: Option<String>) -> Extracted {
    let cfg = &snap.config;
    let peer = peer_ip(session);
    let peer_trusted = cfg.trusted_proxies.contains(peer);
    let client_ip = if peer_trusted {
        // From the bytes: a value with a non-ASCII byte still has its other hops read.
        let values: Vec<std::borrow::Cow<'_, str>> = session
            .req_header()
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect();
        cfg.trusted_proxies.client_ip(peer, values.iter().map(|v| v.as_ref()))
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
    let mut header_error = None;
    if session.req_header().headers.get_all(http::header::USER_AGENT).iter().nth(1).is_some() {
        // The signal would judge one value while the IdP receives both.
        header_error = Some("User-Agent");
    }
    signals.user_agent = header_text(session, "user-agent");
    if peer_trusted {
        signals.ja3 = cfg.ja3_header.as_deref().and_then(|h| header_text(session, h));
        signals.ja4 = cfg.ja4_header.as_deref().and_then(|h| header_text(session, h));
    }
    let sni = sni(session);
    // The request's host (target authority, else Host) is the one signal and the one host
    // forwarded; an SNI that disagrees is refused or ignored by the adapter.
    signals.hostname = host.or_else(|| sni.clone());
    let request_id = if peer_trusted { header_text(session, &cfg.request_id_header) } else { None };
    Extracted { signals, peer_trusted, request_id, sni, header_error }
}
