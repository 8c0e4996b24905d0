//! The outbound fetcher: every URL the gateway fetches on a client's word (Client ID Metadata
//! Documents, the optional DNS screening of registration metadata URIs) goes through
//! [`Fetcher::fetch`], which is safe against server-side request forgery:
//!
//! - `https` only; `http` only to a loopback address and only when
//!   [`FetchConfig::allow_http_loopback`] is set (development);
//! - the host is resolved once through the injected [`Resolver`]; every address it returns is
//!   checked against the special-use ranges of RFC 6890 (`crate::dcr::special_use`: loopback,
//!   private, link-local incl. 169.254.169.254, CGNAT, multicast, IPv4-mapped and NAT64 forms
//!   judged by the IPv4 address they carry, ...) unless [`FetchConfig::allow_cidrs`] lists it,
//!   and one special-use answer refuses the whole fetch;
//! - the socket is opened to the checked address itself (no second resolution: a DNS answer
//!   that changes between check and connect cannot redirect the fetch), TLS verifies the
//!   certificate for the URL's host (SNI and hostname checked by openssl);
//! - no redirects (a 3xx is an error), only `200` with a JSON media type (`application/json` or
//!   `+json`), a body cap ([`FetchConfig::max_bytes`], 5 KB by default) checked against
//!   `Content-Length` and while reading, a connect timeout and a total timeout;
//! - per-host concurrency and rate limits;
//! - one counter per outcome, `dcr_gateway_fetch_total{outcome}` ([`Fetcher::outcomes`]).
//!
//! HTTP/1.1 is hyper's client connection; TLS is openssl (through tokio-openssl), which the
//! gateway already links for Pingora.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use prometheus::{IntCounterVec, Opts};

use crate::dcr::special_use::forbidden_range;

pub mod cimd;
pub mod metadata;

/// The fetcher's limits and allowances.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Largest body accepted, in bytes (default 5120).
    pub max_bytes: usize,
    /// Time allowed to open the TCP connection to one address (default 2 s).
    pub connect_timeout: Duration,
    /// Time allowed for the whole fetch: resolution, connection, TLS, answer and body
    /// (default 5 s).
    pub total_timeout: Duration,
    /// Allow `http` URLs whose every address is loopback (development only; default false).
    pub allow_http_loopback: bool,
    /// Special-use addresses that may be fetched all the same (an internal document server).
    pub allow_cidrs: Vec<IpNet>,
    /// Fetches to one host at once (default 2); more are refused (`busy`).
    pub per_host_concurrency: usize,
    /// Fetches to one host per minute (default 30); more are refused (`rate_limited`).
    pub per_host_per_minute: u32,
    /// PEM certificates trusted besides the system's roots (a private CA; tests).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// `User-Agent` sent.
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_bytes: 5120,
            connect_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
            allow_http_loopback: false,
            allow_cidrs: Vec::new(),
            per_host_concurrency: 2,
            per_host_per_minute: 30,
            extra_ca_pem: None,
            user_agent: concat!("dcr-gateway/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Name resolution, injected so that tests can answer anything (and change their answer, as a
/// rebinding attacker would).
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// The system resolver (`getaddrinfo` through tokio).
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.map(|a| a.ip()).collect())
    }
}

/// Why a fetch failed. [`FetchError::outcome`] is the metric label; `Display` never contains
/// the response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not a fetchable URL: {0}")]
    BadUrl(&'static str),
    #[error("scheme not allowed (https only; http only to loopback when allowed)")]
    Scheme,
    #[error("the host resolves to a special-use address ({0})")]
    ForbiddenAddress(&'static str),
    #[error("the host could not be resolved")]
    Dns,
    #[error("the host has no address")]
    NoAddress,
    #[error("no connection could be opened")]
    Connect,
    #[error("TLS handshake failed (certificate not valid for the host?)")]
    Tls,
    #[error("timed out")]
    Timeout,
    #[error("answered a redirect (not followed)")]
    Redirect,
    #[error("answered status {0} (200 required)")]
    Status(u16),
    #[error("answered a media type that is not JSON")]
    MediaType,
    #[error("answer larger than the size cap")]
    TooLarge,
    #[error("too many fetches to this host per minute")]
    RateLimited,
    #[error("too many fetches to this host at once")]
    Busy,
    #[error("HTTP protocol error")]
    Protocol,
}

impl FetchError {
    /// The `outcome` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            FetchError::BadUrl(_) => "bad_url",
            FetchError::Scheme => "scheme",
            FetchError::ForbiddenAddress(_) => "forbidden_address",
            FetchError::Dns => "dns_error",
            FetchError::NoAddress => "no_address",
            FetchError::Connect => "connect_error",
            FetchError::Tls => "tls_error",
            FetchError::Timeout => "timeout",
            FetchError::Redirect => "redirect",
            FetchError::Status(_) => "status",
            FetchError::MediaType => "media_type",
            FetchError::TooLarge => "too_large",
            FetchError::RateLimited => "rate_limited",
            FetchError::Busy => "busy",
            FetchError::Protocol => "protocol_error",
        }
    }
}

/// Every `outcome` label value: `ok` and each [`FetchError::outcome`].
pub const OUTCOMES: [&str; 16] = [
    "ok",
    "bad_url",
    "scheme",
    "forbidden_address",
    "dns_error",
    "no_address",
    "connect_error",
    "tls_error",
    "timeout",
    "redirect",
    "status",
    "media_type",
    "too_large",
    "rate_limited",
    "busy",
    "protocol_error",
];

/// A successful fetch: a 200 with a JSON body within the cap.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    pub content_type: String,
    /// `Cache-Control`, `Expires`, `Age` and `Date` as sent (for the caller's caching).
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub age: Option<String>,
    pub date: Option<String>,
    /// The address the answer came from.
    pub peer: SocketAddr,
}

#[derive(Default)]
struct HostState {
    in_flight: usize,
    window_start: Option<Instant>,
    in_window: u32,
}

/// The fetcher. One per gateway; cheap to share behind an `Arc`.
pub struct Fetcher {
    cfg: FetchConfig,
    resolver: Arc<dyn Resolver>,
    tls: SslConnector,
    hosts: Mutex<HashMap<String, HostState>>,
    outcomes: IntCounterVec,
    connects: AtomicU64,
}

/// Hosts tracked for the per-host limits before idle ones are forgotten.
const MAX_TRACKED_HOSTS: usize = 4096;

impl Fetcher {
    /// A fetcher with `cfg`, resolving through `resolver`. Fails when `extra_ca_pem` is not PEM.
    pub fn new(cfg: FetchConfig, resolver: Arc<dyn Resolver>) -> Result<Fetcher, String> {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| e.to_string())?;
        b.set_alpn_protos(b"\x08http/1.1").map_err(|e| e.to_string())?;
        if let Some(pem) = &cfg.extra_ca_pem {
            let certs = openssl::x509::X509::stack_from_pem(pem).map_err(|e| format!("extra CA: {e}"))?;
            if certs.is_empty() {
                return Err("extra CA: no certificate in the PEM".into());
            }
            for c in certs {
                b.cert_store_mut().add_cert(c).map_err(|e| format!("extra CA: {e}"))?;
            }
        }
        let outcomes = IntCounterVec::new(
            Opts::new("dcr_gateway_fetch_total", "Outbound fetches (CIMD documents, metadata URIs) by outcome"),
            &["outcome"],
        )
        .map_err(|e| e.to_string())?;
        // Every outcome exists at zero from the first scrape (docs/operations.md).
        for label in OUTCOMES {
            outcomes.with_label_values(&[label]);
        }
        Ok(Fetcher {
            cfg,
            resolver,
            tls: b.build(),
            hosts: Mutex::new(HashMap::new()),
            outcomes,
            connects: AtomicU64::new(0),
        })
    }

    /// `dcr_gateway_fetch_total{outcome}`: `ok` and each [`FetchError::outcome`]. Register it
    /// on the gateway's registry.
    pub fn outcomes(&self) -> &IntCounterVec {
        &self.outcomes
    }

    /// TCP connections attempted so far (tests assert none went where it must not).
    pub fn connect_attempts(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &FetchConfig {
        &self.cfg
    }

    /// Fetches `url` under every rule of the module doc.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let res = self.fetch_inner(url).await;
        let label = match &res {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.outcomes.with_label_values(&[label]).inc();
        res
    }

    /// Resolves `host` as a fetch would and checks every address: what
    /// `[dcr] resolve_metadata_uris` asks of the hosts of registration metadata URIs.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, FetchError> {
        let addrs = self.resolver.resolve(host, port).await.map_err(|_| FetchError::Dns)?;
        check_addresses(&addrs, &self.cfg, false)
    }

    /// Resolves `host` through the fetcher's resolver, unchecked: the addresses for a decision
    /// made elsewhere with the same rule (`dcr::special_use::forbidden_range` and
    /// [`FetchConfig::allow_cidrs`]), as `[dcr] resolve_metadata_uris` does.
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.resolver.resolve(host, port).await
    }

    async fn fetch_inner(&self, raw: &str) -> Result<Fetched, FetchError> {
        let target = Target::parse(raw)?;
        let _slot = self.admit(&target.host)?;
        match tokio::time::timeout(self.cfg.total_timeout, self.fetch_target(&target)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    /// Per-host concurrency and rate: a slot, released on drop.
    fn admit(&self, host: &str) -> Result<Slot<'_>, FetchError> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if hosts.len() >= MAX_TRACKED_HOSTS && !hosts.contains_key(host) {
            hosts.retain(|_, s| s.in_flight > 0 || s.window_start.is_some_and(|w| now.duration_since(w) < MINUTE));
        }
        let st = hosts.entry(host.to_string()).or_default();
        if st.window_start.is_none_or(|w| now.duration_since(w) >= MINUTE) {
            st.window_start = Some(now);
            st.in_window = 0;
        }
        if st.in_flight >= self.cfg.per_host_concurrency {
            return Err(FetchError::Busy);
        }
        if st.in_window >= self.cfg.per_host_per_minute {
            return Err(FetchError::RateLimited);
        }
        st.in_flight += 1;
        st.in_window += 1;
        Ok(Slot { fetcher: self, host: host.to_string() })
    }

    async fn fetch_target(&self, t: &Target) -> Result<Fetched, FetchError> {
        let addrs = match t.literal {
            Some(ip) => vec![ip],
            None => self.resolver.resolve(&t.host, t.port).await.map_err(|_| FetchError::Dns)?,
        };
        let addrs = check_addresses(&addrs, &self.cfg, !t.https)?;
        let mut last = FetchError::Connect;
        for ip in addrs {
            let addr = SocketAddr::new(ip, t.port);
            self.connects.fetch_add(1, Ordering::Relaxed);
            let tcp = match tokio::time::timeout(self.cfg.connect_timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(_)) => {
                    last = FetchError::Connect;
                    continue;
                }
                Err(_) => {
                    last = FetchError::Timeout;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            return if t.https {
                let ssl = self.tls.configure().and_then(|c| c.into_ssl(&t.tls_name)).map_err(|_| FetchError::Tls)?;
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|_| FetchError::Tls)?;
                std::pin::Pin::new(&mut stream).connect().await.map_err(|_| FetchError::Tls)?;
                self.exchange(stream, t, addr).await
            } else {
                self.exchange(tcp, t, addr).await
            };
        }
        Err(last)
    }

    async fn exchange<S>(&self, io: S, t: &Target, peer: SocketAddr) -> Result<Fetched, FetchError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|_| FetchError::Protocol)?;
        let conn = tokio::spawn(conn);
        let _abort = AbortOnDrop(conn.abort_handle());
        let req = http::Request::builder()
            .method(http::Method::GET)
            .uri(&t.path_and_query)
            .header(http::header::HOST, &t.host_header)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, &self.cfg.user_agent)
            .body(Empty::<Bytes>::new())
            .map_err(|_| FetchError::Protocol)?;
        let resp = sender.send_request(req).await.map_err(|_| FetchError::Protocol)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect);
        }
        if status != http::StatusCode::OK {
            return Err(FetchError::Status(status.as_u16()));
        }
        let h = resp.headers();
        let text = |name: http::header::HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_type = text(http::header::CONTENT_TYPE).unwrap_or_default();
        if !is_json_media_type(&content_type) {
            return Err(FetchError::MediaType);
        }
        if let Some(len) = text(http::header::CONTENT_LENGTH) {
            if len.trim().parse::<u64>().map_or(true, |n| n > self.cfg.max_bytes as u64) {
                return Err(FetchError::TooLarge);
            }
        }
        let (cache_control, expires, age, date) = (
            text(http::header::CACHE_CONTROL),
            text(http::header::EXPIRES),
            text(http::header::AGE),
            text(http::header::DATE),
        );
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| FetchError::Protocol)?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > self.cfg.max_bytes {
                    return Err(FetchError::TooLarge);
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(Fetched { body: buf.freeze(), content_type, cache_control, expires, age, date, peer })
    }
}

const MINUTE: Duration = Duration::from_secs(60);

struct Slot<'a> {
    fetcher: &'a Fetcher,
    host: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut hosts = self.fetcher.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = hosts.get_mut(&self.host) {
            st.in_flight = st.in_flight.saturating_sub(1);
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `application/json` or any `+json` type, parameters ignored, case-insensitive.
pub fn is_json_media_type(ct: &str) -> bool {
    let mt = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mt == "application/json" || (mt.starts_with("application/") && mt.ends_with("+json"))
}

/// A URL the fetcher accepts to try.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    /// Lower-case host as the URL writes it (`[::1]` for IPv6), the per-host limit key.
    host: String,
    /// The name TLS verifies (without brackets for IPv6).
    tls_name: String,
    host_header: String,
    port: u16,
    literal: Option<IpAddr>,
    path_and_query: String,
}

impl Target {
    fn parse(raw: &str) -> Result<Target, FetchError> {
        if raw.len() > 2048 {
            return Err(FetchError::BadUrl("longer than 2048 characters"));
        }
        let url = url::Url::parse(raw).map_err(|_| FetchError::BadUrl("not an absolute URL"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(FetchError::Scheme),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::BadUrl("userinfo"));
        }
        // The url crate reads decimal, octal and hexadecimal IPv4 spellings as the address
        // they denote (`2130706433`, `0177.0.0.1`, `0x7f.1` are 127.0.0.1).
        let (host, tls_name, literal) = match url.host() {
            Some(url::Host::Domain(d)) => {
                let d = d.to_ascii_lowercase();
                (d.clone(), d, None)
            }
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (format!("[{ip}]"), ip.to_string(), Some(IpAddr::V6(ip))),
            None => return Err(FetchError::BadUrl("no host")),
        };
        let port = url.port_or_known_default().ok_or(FetchError::BadUrl("no port"))?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut path_and_query = url.path().to_string();
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Ok(Target { https, host, tls_name, host_header, port, literal, path_and_query })
    }
}

/// Every address must be allowed; the addresses to connect to, in order. IPv4-mapped IPv6
/// addresses are connected to as the IPv4 address they carry. `http` additionally needs
/// `allow_http_loopback` and loopback addresses only.
fn check_addresses(addrs: &[IpAddr], cfg: &FetchConfig, http: bool) -> Result<Vec<IpAddr>, FetchError> {
    if addrs.is_empty() {
        return Err(FetchError::NoAddress);
    }
    let mut out = Vec::with_capacity(addrs.len());
    for &ip in addrs {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if http {
            if !(cfg.allow_http_loopback && ip.is_loopback()) {
                return Err(FetchError::Scheme);
            }
        } else if let Some(range) = forbidden_range(ip, &cfg.allow_cidrs) {
            return Err(FetchError::ForbiddenAddress(range));
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://Docs.Example.com/a/b?x=1#frag").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str(), t.literal),
            ("docs.example.com", 443, "/a/b?x=1", None)
        );
        let t = Target::parse("https://[::1]:8443/x").unwrap();
        assert_eq!((t.host.as_str(), t.tls_name.as_str(), t.host_header.as_str()), ("[::1]", "::1", "[::1]:8443"));
        assert_eq!(Target::parse("https://2130706433/").unwrap().literal, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(Target::parse("https://0177.0.0.1/").unwrap().literal, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(Target::parse("https://0x7f.1/").unwrap().literal, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(Target::parse("ftp://x/"), Err(FetchError::Scheme));
        assert_eq!(Target::parse("file:///etc/passwd"), Err(FetchError::Scheme));
        assert_eq!(Target::parse("https://u:p@x/"), Err(FetchError::BadUrl("userinfo")));
        assert_eq!(Target::parse("/relative"), Err(FetchError::BadUrl("not an absolute URL")));
    }

    #[test]
    fn addresses() {
        let cfg = FetchConfig::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(check_addresses(&[ip("8.8.8.8")], &cfg, false), Ok(vec![ip("8.8.8.8")]));
        assert_eq!(check_addresses(&[ip("::ffff:8.8.8.8")], &cfg, false), Ok(vec![ip("8.8.8.8")]));
        assert_eq!(
            check_addresses(&[ip("8.8.8.8"), ip("10.0.0.1")], &cfg, false),
            Err(FetchError::ForbiddenAddress("private"))
        );
        assert_eq!(
            check_addresses(&[ip("::ffff:127.0.0.1")], &cfg, false),
            Err(FetchError::ForbiddenAddress("loopback"))
        );
        assert_eq!(check_addresses(&[], &cfg, false), Err(FetchError::NoAddress));
        assert_eq!(check_addresses(&[ip("127.0.0.1")], &cfg, true), Err(FetchError::Scheme));
        assert_eq!(
            check_addresses(&[ip("8.8.8.8")], &FetchConfig { allow_http_loopback: true, ..cfg.clone() }, true),
            Err(FetchError::Scheme)
        );
        let dev = FetchConfig { allow_http_loopback: true, ..cfg.clone() };
        assert_eq!(check_addresses(&[ip("127.0.0.1")], &dev, true), Ok(vec![ip("127.0.0.1")]));
        let allow = FetchConfig { allow_cidrs: vec!["10.1.0.0/16".parse().unwrap()], ..cfg };
        assert_eq!(check_addresses(&[ip("10.1.2.3")], &allow, false), Ok(vec![ip("10.1.2.3")]));
        assert_eq!(check_addresses(&[ip("10.2.0.1")], &allow, false), Err(FetchError::ForbiddenAddress("private")));
    }

    #[test]
    fn outcome_labels_are_listed() {
        let all = [
            FetchError::BadUrl("x"),
            FetchError::Scheme,
            FetchError::ForbiddenAddress("x"),
            FetchError::Dns,
            FetchError::NoAddress,
            FetchError::Connect,
            FetchError::Tls,
            FetchError::Timeout,
            FetchError::Redirect,
            FetchError::Status(500),
            FetchError::MediaType,
            FetchError::TooLarge,
            FetchError::RateLimited,
            FetchError::Busy,
            FetchError::Protocol,
        ];
        assert_eq!(all.len() + 1, OUTCOMES.len());
        for e in all {
            assert!(OUTCOMES.contains(&e.outcome()), "{e:?}");
        }
    }

    #[test]
    fn media_types() {
        for ok in ["application/json", "Application/JSON; charset=utf-8", "application/ld+json", " application/json "] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in ["", "text/json", "text/html", "application/jsonp", "application/json-seq", "text/plain+json"] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
