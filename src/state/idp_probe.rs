//! At start (and in `check`), ask the IdP where it serves registration: its discovery
//! document's `registration_endpoint`. When the configured `[routes]
//! upstream_registration_path` disagrees, the IdP's real registration path would be proxied as
//! ordinary `authentication` traffic — unvalidated (a `javascript:` redirect and a
//! client-chosen secret went through this way). So a disagreement refuses to start.
//!
//! One short blocking GET of the first origin (plain HTTP, or HTTPS with the `[upstream]` SNI,
//! CA file and verification settings), before any listener exists and again on each reload that
//! changes the upstream or the routes; an IdP that cannot be reached, answers no discovery
//! document, or advertises no `registration_endpoint` is reported and skipped (the gateway must
//! start when the IdP is down).
//!
//! The probe also reports where the IdP's *own* document sends clients
//! ([`off_gateway`]): an IdP configured with its internal address advertises that address;
//! discovery rewriting keeps clients that fetch the document through the gateway on it, but a
//! client that reaches the IdP directly registers unchecked. `check`, the log, `/readyz` and
//! `dcr_gateway_idp_discovery_off_gateway` say so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The IdP advertises the configured path (or one the router classifies as `dcr`).
    Agrees,
    /// The IdP advertises another registration path: refuse.
    Disagrees { advertised: String },
    /// Nothing to compare (unreachable, no document, no member, HTTPS origin): why.
    Skipped(String),
}

const DISCOVERY: [&str; 2] = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"];

/// The path of `registration_endpoint` in a discovery document, if it has one.
pub fn advertised_registration_path(doc: &[u8]) -> Option<String> {
    advertised_registration_url(doc).map(|u| u.path().to_string())
}

/// `registration_endpoint` of a discovery document, parsed.
pub fn advertised_registration_url(doc: &[u8]) -> Option<url::Url> {
    let v: serde_json::Value = serde_json::from_slice(doc).ok()?;
    url::Url::parse(v.get("registration_endpoint")?.as_str()?).ok()
}

/// Whether an advertised registration URL sends clients somewhere other than the gateway: to
/// an upstream origin or one of `[routes] idp_origins`, or — when `[routes] public_base_url` is
/// set — to any other origin than it. `Some(origin)` names where.
pub fn off_gateway(config: &Config, advertised: &url::Url) -> Option<String> {
    let origin = advertised.origin().ascii_serialization();
    if let Some(base) = &config.routes.public_base_url {
        let public = url::Url::parse(base).ok().map(|u| u.origin().ascii_serialization());
        return (public.as_deref() != Some(origin.as_str())).then_some(origin);
    }
    let host = advertised.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let port = advertised.port_or_known_default();
    let upstream = config.upstream.origins.iter().any(|o| {
        o.host.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(host) && Some(o.port) == port
    });
    let listed = config.routes.idp_origins.iter().any(|o| {
        url::Url::parse(o).ok().is_some_and(|u| u.origin().ascii_serialization().eq_ignore_ascii_case(&origin))
    });
    (upstream || listed).then_some(origin)
}

/// Compare an advertised path with the configuration: it must be classified `dcr` (the
/// upstream registration path, or the public one) by the gateway's own router.
pub fn judge(config: &Config, advertised: &str) -> Probe {
    match config.router.classify_target(advertised) {
        Ok(r) if r.scope == crate::scope::Scope::Dcr && r.is_registration => Probe::Agrees,
        _ => Probe::Disagrees { advertised: advertised.to_string() },
    }
}

fn get(config: &Config, addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Option<Vec<u8>> {
    let tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let Some(origin) = config.upstream.origins.first().filter(|o| o.tls) else {
        return exchange(tcp, host, path);
    };
    // The settings the proxy's own upstream connections use (`[upstream] sni`, `ca_file`,
    // `verify_cert`).
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).ok()?;
    if let Some(ca) = &config.upstream.ca_file {
        b.set_ca_file(ca).ok()?;
    }
    if !config.upstream.verify_cert {
        b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    }
    let mut c = b.build().configure().ok()?;
    c.set_verify_hostname(config.upstream.verify_cert);
    let sni = config.upstream.sni.as_deref().unwrap_or(&origin.host);
    let tls = c.connect(sni, tcp).ok()?;
    exchange(tls, host, path)
}

fn exchange(mut s: impl Read + Write, host: &str, path: &str) -> Option<Vec<u8>> {
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").ok()?;
    // Read the head, then Content-Length bytes (or to the end): an IdP may keep the
    // connection open whatever `Connection: close` said.
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut want: Option<usize> = None;
    loop {
        if let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
            if !(head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200")) {
                return None;
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            want = len.map(|l| split + 4 + l);
            if want.is_some_and(|w| out.len() >= w) {
                return Some(out[split + 4..want.unwrap_or(out.len())].to_vec());
            }
        }
        if out.len() > 256 * 1024 {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let end = want.unwrap_or(out.len()).min(out.len());
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    (head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200")).then(|| out[split + 4..end].to_vec())
}

/// Probe the first origin: does the IdP's registration path agree with the configuration?
pub fn probe(config: &Config) -> Probe {
    probe_full(config).probe
}

/// What one probe of the IdP found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    pub probe: Probe,
    /// Where the IdP's own discovery document sends clients when that is not the gateway
    /// ([`off_gateway`]).
    pub off_gateway: Option<String>,
    /// The embedded profile the document looks like (`config::profile::detect`), when the
    /// configured one is `generic`: a suggestion, never applied by itself.
    pub suggested_profile: Option<&'static str>,
}

impl Findings {
    fn skipped(why: String) -> Findings {
        Findings { probe: Probe::Skipped(why), off_gateway: None, suggested_profile: None }
    }
}

/// The IdP's discovery document (the first of [`DISCOVERY`] that answers 200) and its path.
fn discovery_document(config: &Config) -> Result<(&'static str, Vec<u8>), String> {
    let origin = config.upstream.origins.first().ok_or("no origin")?;
    let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(&origin.authority()) else {
        return Err(format!("cannot resolve {}", origin.host));
    };
    let addr = addrs.next().ok_or_else(|| format!("{} resolves to no address", origin.host))?;
    let timeout = config.upstream.connect_timeout.max(Duration::from_millis(200)).min(Duration::from_secs(3));
    let host = config.idp.host_header.clone().unwrap_or_else(|| origin.authority());
    DISCOVERY
        .iter()
        .find_map(|path| get(config, addr, &host, path, timeout).map(|body| (*path, body)))
        .ok_or_else(|| "no discovery document answered".to_string())
}

/// `[upstream] profile = "auto"`: the embedded profile the IdP's discovery document looks like
/// (`config::profile::detect`). An error when the document cannot be read or looks like no
/// profile: the caller refuses to build a snapshot rather than guess (a start or reload then
/// fails; the running snapshot stays).
pub fn detect_profile(config: &Config) -> Result<&'static str, String> {
    let (path, body) = discovery_document(config)?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|_| format!("{path} is not JSON"))?;
    crate::config::profile::detect(&doc)
        .ok_or_else(|| format!("{path} looks like none of the embedded profiles; name the profile instead"))
}

/// [`probe`], with everything else the document says.
pub fn probe_full(config: &Config) -> Findings {
    match discovery_document(config) {
        Err(why) => Findings::skipped(why),
        Ok((path, body)) => {
            let suggested_profile = if config.idp.profile == "generic" && !config.idp.profile_auto {
                serde_json::from_slice(&body).ok().and_then(|doc| crate::config::profile::detect(&doc))
            } else {
                None
            };
            match advertised_registration_url(&body) {
                Some(u) => {
                    Findings { probe: judge(config, u.path()), off_gateway: off_gateway(config, &u), suggested_profile }
                }
                None => Findings {
                    probe: Probe::Skipped(format!("{path} advertises no registration_endpoint")),
                    off_gateway: None,
                    suggested_profile,
                },
            }
        }
    }
}

/// What `profile = "auto"` resolved to in this process: detected when the first snapshot is built,
/// then kept for every reload. A discovery document that changes later, or an IdP that is down
/// while an operator reloads an urgent rule, never changes what is enforced; another IdP needs a
/// restart.
static DETECTED: std::sync::Mutex<Option<&'static str>> = std::sync::Mutex::new(None);

/// `text` (the configuration at `path`) parsed again with `profile = "auto"` resolved; `config`
/// as it is otherwise.
pub fn resolve_auto_profile(text: &str, path: &std::path::Path, config: Config) -> Result<Config, String> {
    if !config.idp.profile_auto {
        return Ok(config);
    }
    let kept = *DETECTED.lock().unwrap_or_else(|p| p.into_inner());
    let name = match kept {
        Some(name) => name,
        None => {
            let name = detect_profile(&config)
                .map_err(|why| format!("{}: upstream.profile = \"auto\": {why}", path.display()))?;
            *DETECTED.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
            tracing::info!(profile = name, "upstream profile detected from the IdP's discovery document");
            name
        }
    };
    crate::config::parse_detected(text, path, Some(name)).map_err(|e| e.to_string())
}

/// The message for an IdP that advertises another registration path than the configured one.
pub fn registration_path_error(cfg: &crate::config::Config, advertised: &str) -> String {
    format!(
        "{}: routes.upstream_registration_path: the IdP's discovery document advertises registration at {advertised:?}, \
         not {:?}: requests to the IdP's path would pass unvalidated; set upstream_registration_path (or [upstream] \
         profile) to the IdP's path",
        cfg.path.display(),
        cfg.routes.upstream_registration_path
    )
}

/// The note for an IdP that looks like one of the embedded profiles while `generic` is set.
pub fn profile_suggestion(name: &str) -> String {
    format!(
        "the IdP's discovery document looks like {name:?}: consider [upstream] profile = \"{name}\" (docs/idps.md); \
         the gateway does not switch profiles by itself"
    )
}

/// The warning for an IdP whose own discovery document advertises registration off the gateway.
pub fn off_gateway_warning(origin: &str) -> String {
    format!(
        "the IdP's own discovery document advertises registration at {origin}, not on the gateway: clients that \
         fetch discovery through the gateway are kept on it (discovery rewriting), but the IdP must not be reachable \
         by clients except through the gateway (docs/idps.md)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(up: &str) -> Config {
        let text = format!("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"{up}\"\n");
        crate::config::parse(&text, std::path::Path::new("/tmp/g.toml")).unwrap()
    }

    #[test]
    fn the_advertised_path_must_be_the_configured_one() {
        let doc = br#"{"registration_endpoint":"http://idp:3000/reg?x=1"}"#;
        assert_eq!(advertised_registration_path(doc).as_deref(), Some("/reg"));
        assert_eq!(judge(&config("/reg"), "/reg"), Probe::Agrees);
        assert_eq!(judge(&config("/reg"), "/REG/"), Probe::Agrees);
        assert_eq!(judge(&config("/oidc/register"), "/reg"), Probe::Disagrees { advertised: "/reg".into() });
        assert_eq!(advertised_registration_path(br#"{"issuer":"x"}"#), None);
    }
}
