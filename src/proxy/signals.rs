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

/// The adapter's reading of a request, tested in-process on a Pingora session built from raw
/// bytes (no socket, no spawned binary), as Pingap tests its filters.
/// The id of the key whose RFC 9421 signature on this request verifies (`acl::signature`,
/// Auth0's rules), or `None` (missing or invalid; an invalid one is logged at debug, never
/// with key material). `authority` is the request's host[:port] as the gateway read it.
pub fn signature_key(session: &Session, snap: &Snapshot, authority: &str, tls: bool) -> Option<String> {
    let req = session.req_header();
    let message = crate::acl::signature::Message {
        method: req.method.as_str(),
        scheme: if tls { "https" } else { "http" },
        authority,
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match crate::acl::signature::verify(&snap.acl_env.signature_keys, &message, now) {
        crate::acl::signature::SignatureOutcome::Valid(key) => Some(key),
        crate::acl::signature::SignatureOutcome::Invalid(why) => {
            tracing::debug!("request signature not accepted: {why}");
            None
        }
        crate::acl::signature::SignatureOutcome::Missing => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::target::TargetForm;
    use crate::telemetry::Metrics;

    async fn session(raw: &[u8]) -> Session {
        let io = tokio_test::io::Builder::new().read(raw).build();
        let mut s = Session::new_h1(Box::new(io));
        assert!(s.read_request().await.unwrap(), "request head parsed");
        s
    }

    fn snapshot(dir: &std::path::Path, network: &str) -> Snapshot {
        let path = dir.join("gateway.toml");
        let text = format!("[network]\n{network}\n[admin]\nsettings_file = \"settings.json\"\n");
        let config = crate::config::parse(&text, &path).unwrap();
        Snapshot::from_config(config, String::new()).unwrap()
    }

    #[tokio::test]
    async fn absolute_form_is_one_view_with_the_targets_host() {
        let s = session(b"POST http://IDP.example:8080/oidc/register?x=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        let v = request_view(&s).unwrap();
        assert_eq!(v.form, TargetForm::Absolute);
        assert_eq!(v.authority.as_ref().unwrap().header_value(), "idp.example:8080");
        assert_eq!(v.origin_form(), "/oidc/register?x=1");
        let dir = tempfile::tempdir().unwrap();
        let snap = snapshot(dir.path(), "trusted_proxies = []");
        let e = extract(&s, &snap, &Metrics::new(), v.authority.map(|a| a.host));
        assert_eq!(e.signals.hostname.as_deref(), Some("idp.example"));
        assert!(!e.peer_trusted);
    }

    #[tokio::test]
    async fn header_bytes_are_read_and_duplicates_refused() {
        let s = session(b"GET /authorize HTTP/1.1\r\nHost: a\r\nUser-Agent: Bot caf\xe9\r\n\r\n").await;
        let dir = tempfile::tempdir().unwrap();
        let snap = snapshot(dir.path(), "trusted_proxies = []");
        let e = extract(&s, &snap, &Metrics::new(), Some("a".into()));
        assert_eq!(e.signals.user_agent.as_deref(), Some("Bot caf\u{fffd}"));
        assert_eq!(e.header_error, None);
        let s = session(b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nUser-Agent: y\r\n\r\n").await;
        assert_eq!(extract(&s, &snap, &Metrics::new(), None).header_error, Some("User-Agent"));
    }

    #[tokio::test]
    async fn refused_heads() {
        for (raw, want) in [
            (&b"GET /a%00 HTTP/1.1\r\nHost: a\r\n\r\n"[..], TargetError::ControlCharacter),
            (b"GET / HTTP/1.1\r\n\r\n", TargetError::MissingHost),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", TargetError::AsteriskNotOptions),
        ] {
            let s = session(raw).await;
            assert_eq!(request_view(&s).unwrap_err(), want, "{}", String::from_utf8_lossy(raw));
        }
        let s = session(b"GET / HTTP/1.0\r\n\r\n").await;
        assert_eq!(request_view(&s).unwrap().authority, None, "HTTP/1.0 may omit Host");
    }
}
